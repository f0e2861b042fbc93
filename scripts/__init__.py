"""Things a person runs that are not training runs: `python -m scripts.NAME`."""
