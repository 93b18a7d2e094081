"""The trio I/O layers: thin loops that feed the pure machines and carry out what they ask."""
