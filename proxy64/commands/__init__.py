"""One module per subcommand: builds its argparse parser and runs it."""
