"""Hydra entry points: compose `conf/`, then hand plain settings to `jaxdl`."""
