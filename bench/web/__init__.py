"""The browser benches (loader, generation) and their helpers; README.md says how each runs."""
