"""The model contract: what every jaxdl model takes and offers, written once.

Tasks, evaluators and `jaxdl.sampling` rely on this and on nothing else: they
never inspect a model's signature or probe it for attributes.

Every model (`Model`) is a `flax.linen.Module` whose dataclass fields are its
hyperparameters (`jaxdl.settings` reads them), with

* `__call__(*inputs, train: bool, example_keys=None, **extras)`: the inputs
  positionally (images [B, H, W, C], tokens [B, T], noise and images for the
  GAN), then keywords. `train` turns on batch statistics and dropout;
  evaluation is deterministic. `example_keys` is a typed key array [B], one
  PRNG stream per example (`jaxdl.training.parallel.example_keys`), and the
  only randomness a model draws inside `__call__`: dropout masks and the
  VAE's latent samples. Models that draw nothing accept and ignore it. A
  model may take further keyword inputs (the recurrent classifier's
  `token_mask`), which its task documents.
* an `axis_name` field, default None: the mapped axis over which batch norm
  averages its statistics. A task clones the model with the step's axis in
  a mapped training step (`model.clone(axis_name=axis_name)`), so the
  statistics are those of the global batch; models without batch norm
  ignore it. It is a run-time field, never a setting.
* `dtype` (compute) and `param_dtype` (storage) fields where the model has
  floating-point layers.

Dropout (the one convention): every dropout layer is
`jaxdl.models.layers.Dropout`, which draws example b's mask from
`fold_in(example_keys[b], site)`, one site number per layer. The mask of an
example therefore depends on the example's dataset index, the step and the
layer only, never on how the batch is split over devices, and no model draws
from flax's "dropout" rng collection. The MLP and the CNN number their sites
by layer; the Transformer and the recurrent nets leave the number to the
layer, which takes it from its module path (`layers.site_id`), the number
flax's `make_rng` gave the same layer's first draw.

Classifiers (`Classifier`) end in a submodule named `output` whose input is
the penultimate feature vector: `jaxdl.evaluators.fid` reads its features
there (the MLP and the CNN; `Airbench94` names its last layer `head`, after
the ported script, and cannot serve FID).

Token models (`TokenModel`) map tokens int [B, T] to next-token logits
float32 [B, T, V]; they state their context length and whether they can
decode with a cache, which `jaxdl.sampling` uses.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax


class Model(Protocol):
    """Every jaxdl model (see the module docstring)."""

    axis_name: str | None

    def __call__(self, *inputs: Any, train: bool, example_keys: jax.Array | None = None, **extras: Any) -> Any:
        ...

    def clone(self, **updates: Any) -> Model:
        ...


class Classifier(Model, Protocol):
    """A model whose last layer is a submodule named `output` (inputs [B, ...] -> logits [B, K])."""


class TokenModel(Model, Protocol):
    """A causal model of token ids: tokens int [B, T] -> next-token logits float32 [B, T, V]."""

    @property
    def context_length(self) -> int | None:
        """The longest window the model reads, tokens (None: no limit)."""
        ...

    def cached(self) -> TokenModel | None:
        """A copy that decodes incrementally with a cache (fed a prompt, then one token per call;
        `jaxdl.sampling`), or None when the model has no cache."""
        ...
