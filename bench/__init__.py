"""proxy64's benchmark harness (run `python bench/run.py --help`); not part of the package."""
