"""jaxdl's Hydra sweeper for Optuna searches: `hydra/sweeper=jaxdl_search` (see experiments/search.py)."""
