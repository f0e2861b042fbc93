"""Recurrent language models over token ids: Elman RNN, GRU or LSTM.

Elman 1990 ("Finding structure in time"); Cho et al. 2014 (GRU,
arXiv:1406.1078); Hochreiter & Schmidhuber 1997 (LSTM, here Flax's
`OptimizedLSTMCell`, forget-gate bias 0). As a system-call language model
this is the model of Kim et al. 2016, "LSTM-based system-call language
modeling and robust ensemble method for designing host-based intrusion
detection systems" (arXiv:1611.01726): embedding, stacked recurrent layers,
softmax over the next call. Dropout acts between layers (on the embedding and
on each layer's output, never on the recurrent connections; Zaremba et al.
2014, arXiv:1409.2329), one stream per example (`example_keys`, the model
contract of `jaxdl.models.contract`).

Every window starts from a zero state. With `num_classes` set the model is a
many-to-one classifier instead: the top layer's state at the last valid
position of each sequence goes through a Dense layer to class logits.

Shapes:
  B batch, T time steps, V vocab_size, E embed_dim, D hidden_dim, C num_classes.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdl.errors import require_positive
from jaxdl.models.layers import Dropout

Dtype = Any

CELLS = {"rnn": nn.SimpleCell, "gru": nn.GRUCell, "lstm": nn.OptimizedLSTMCell}


class RNNLM(nn.Module):
    """Stacked recurrent network over token ids.

    Attributes:
      vocab_size: V.
      cell: "rnn" (Elman, tanh), "gru" or "lstm".
      num_layers: stacked recurrent layers.
      hidden_dim: D, units per layer.
      embed_dim: E, width of the token embedding.
      dropout_rate: on the embedding and between layers (training only).
      num_classes: None for next-token logits; C for a many-to-one classifier.
      axis_name: unused (no batch norm); the model contract's collective axis.
      dtype: compute dtype; param_dtype: storage dtype.
    """

    vocab_size: int = 341
    cell: str = "lstm"
    num_layers: int = 1
    hidden_dim: int = 200
    embed_dim: int = 64
    dropout_rate: float = 0.0
    num_classes: int | None = None
    axis_name: str | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    #: Every window starts from a zero state: no context limit.
    context_length = None

    def cached(self) -> None:
        """None: no incremental cache (generation recomputes the window; `jaxdl.sampling`)."""
        return None

    def __post_init__(self):
        require_positive(
            "model", vocab_size=self.vocab_size, num_layers=self.num_layers, hidden_dim=self.hidden_dim,
            embed_dim=self.embed_dim,
        )
        super().__post_init__()

    @nn.compact
    def __call__(
        self, tokens: jax.Array, *, train: bool, example_keys: jax.Array | None = None,
        token_mask: jax.Array | None = None,
    ) -> jax.Array:
        """Logits of the next token at every position, or of the class of each sequence.

        Args:
          tokens: int [B, T] token ids in [0, V).
          train: apply dropout; eval is deterministic.
          example_keys: typed key array [B], each example's dropout stream
            (needed only when training with dropout_rate > 0).
          token_mask: bool [B, T], True on valid positions; only the
            classifier uses it (its state is read at the last valid position,
            assumed to be a prefix); None means all valid.

        Returns:
          float32 [B, T, V] next-token logits, or [B, C] class logits when
          `num_classes` is set.

        Raises:
          ValueError: unknown cell name.
        """
        if self.cell not in CELLS:
            raise ValueError(f"Unknown recurrent cell {self.cell!r}; choose one of {sorted(CELLS)}.")
        dense = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = nn.Embed(self.vocab_size, self.embed_dim, name="embed", **dense)(tokens)  # [B, T, E]
        x = Dropout(self.dropout_rate)(x, example_keys, deterministic=not train)
        lengths = None
        if self.num_classes is not None:
            mask = jnp.ones(tokens.shape, bool) if token_mask is None else token_mask.astype(bool)
            lengths = jnp.maximum(mask.sum(axis=1), 1).astype(jnp.int32)  # [B]
        carry = None
        for i in range(self.num_layers):
            cell = CELLS[self.cell](self.hidden_dim, name=f"cell_{i}", **dense)
            carry, x = nn.RNN(cell, return_carry=True, name=f"rnn_{i}")(x, seq_lengths=lengths)  # x: [B, T, D]
            x = Dropout(self.dropout_rate)(x, example_keys, deterministic=not train)
        if self.num_classes is not None:
            h = carry[1] if self.cell == "lstm" else carry  # LSTM carry is (c, h)
            h = Dropout(self.dropout_rate)(h, example_keys, deterministic=not train)
            return nn.Dense(self.num_classes, name="classifier", **dense)(h).astype(jnp.float32)  # [B, C]
        return nn.Dense(self.vocab_size, name="logits", **dense)(x).astype(jnp.float32)  # [B, T, V]
