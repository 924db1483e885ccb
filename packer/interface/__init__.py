"""One module per CLI verb; each takes plain arguments and returns a result the CLI prints."""
