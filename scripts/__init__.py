"""Command-line fronts over the harness in `tests/harness/`: run them as `python -m scripts.X`."""
