"""jaxdl: deep-learning experiments in JAX/Flax as pure functions driven by a small loop.

`jaxdl.experiment.run(...)` builds and trains a run from plain settings;
`python -m experiments.run` does the same from Hydra configs.
"""

__version__ = "0.1.0"
