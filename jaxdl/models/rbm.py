"""Bernoulli-Bernoulli restricted Boltzmann machine: parameters and pure energy/Gibbs helpers.

Smolensky 1986; trained with contrastive divergence (Hinton 2002, "Training
products of experts by minimizing contrastive divergence", Neural Computation
14(8)) or persistent CD (Tieleman 2008, "Training restricted Boltzmann
machines using approximations to the likelihood gradient", ICML). The
training rules live in `jaxdl.tasks.rbm`; annealed importance sampling of the
partition function in `jaxdl.evaluators.ais`.

Model, with binary visible v in {0,1}^V and hidden h in {0,1}^H:
  E(v, h) = -b.v - c.h - v.W.h
  p(v, h) = exp(-E(v, h)) / Z
  F(v)    = -log sum_h exp(-E(v, h)) = -b.v - sum_j softplus(c_j + (v.W)_j)   (free energy, nats)
  p(h_j = 1 | v) = sigmoid(c_j + (v.W)_j),   p(v_i = 1 | h) = sigmoid(b_i + (W.h)_i)

`params` is the Flax parameter dict {"W": [V, H], "b": [V], "c": [H]}; every
helper is a pure function of it, so it can be used inside jitted, mapped steps.

Shapes:
  B batch (or chains), V visible units (H*W*C pixels), H hidden units.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdl.errors import require_positive

Params = Mapping[str, jax.Array]


def hidden_logits(params: Params, v: jax.Array) -> jax.Array:
    """c + v.W: [B, V] -> [B, H], pre-sigmoid of p(h = 1 | v)."""
    return v @ params["W"] + params["c"]


def visible_logits(params: Params, h: jax.Array) -> jax.Array:
    """b + W.h: [B, H] -> [B, V], pre-sigmoid of p(v = 1 | h)."""
    return h @ params["W"].T + params["b"]


def free_energy(params: Params, v: jax.Array) -> jax.Array:
    """F(v) = -b.v - sum_j softplus(c_j + (v.W)_j): [B, V] -> [B] nats; p(v) = exp(-F(v)) / Z."""
    return -v @ params["b"] - jnp.sum(jax.nn.softplus(hidden_logits(params, v)), axis=-1)


def energy(params: Params, v: jax.Array, h: jax.Array) -> jax.Array:
    """E(v, h) = -b.v - c.h - v.W.h: [B, V], [B, H] -> [B] nats."""
    return -v @ params["b"] - h @ params["c"] - jnp.sum((v @ params["W"]) * h, axis=-1)


def bernoulli(keys: jax.Array, logits: jax.Array) -> jax.Array:
    """Binary samples with p = sigmoid(logits), one PRNG stream per row.

    Args:
      keys: typed key array [B] (or a scalar key for the whole array).
      logits: [B, N] float.

    Returns:
      float32 [B, N] in {0, 1}.
    """
    if keys.shape == ():
        u = jax.random.uniform(keys, logits.shape)
    else:
        u = jax.vmap(lambda k: jax.random.uniform(k, logits.shape[1:]))(keys)
    return (u < jax.nn.sigmoid(logits)).astype(jnp.float32)


def _fold(keys: jax.Array, data: int | jax.Array) -> jax.Array:
    if keys.shape == ():
        return jax.random.fold_in(keys, data)
    return jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, data)


def gibbs_chain(params: Params, v: jax.Array, keys: jax.Array, steps: int) -> tuple[jax.Array, jax.Array]:
    """Runs `steps` full Gibbs sweeps v -> h -> v' from binary `v` [B, V].

    Step t of row r draws h with key fold(fold(keys[r], t), 0) and v' with
    fold(fold(keys[r], t), 1), so a chain's path depends only on its own key.

    Returns:
      (v_k [B, V] binary sample after `steps` sweeps, p(h = 1 | v_k) [B, H]).
    """

    def sweep(t, v):
        k = _fold(keys, t)
        h = bernoulli(_fold(k, 0), hidden_logits(params, v))
        return bernoulli(_fold(k, 1), visible_logits(params, h))

    v = jax.lax.fori_loop(0, steps, sweep, v)
    return v, jax.nn.sigmoid(hidden_logits(params, v))


def sufficient_statistics(v: jax.Array, hidden_probs: jax.Array) -> dict[str, jax.Array]:
    """Batch means of -dF/dparams: {"W": mean v h^T [V, H], "b": mean v [V], "c": mean p(h|v) [H]}."""
    n = v.shape[0]
    return {"W": v.T @ hidden_probs / n, "b": v.mean(0), "c": hidden_probs.mean(0)}


def log_partition_exact(params: Params, *, chunk: int = 4096) -> jax.Array:
    """log Z by enumerating every hidden configuration (H <= 24).

    log Z = logsumexp_h [c.h + sum_i softplus(b_i + (W.h)_i)]; the sum runs
    over 2^H hidden vectors, `chunk` at a time.

    Raises:
      ValueError: H > 24 (use `jaxdl.evaluators.ais` instead).
    """
    num_hidden = params["W"].shape[1]
    if num_hidden > 24:
        raise ValueError(f"Exact log Z enumerates 2^H states; H={num_hidden} is too many (at most 24). Use AIS.")
    total = 2**num_hidden
    chunk = min(chunk, total)
    bits = jnp.arange(num_hidden, dtype=jnp.uint32)

    def block(start):
        codes = start + jnp.arange(chunk, dtype=jnp.uint32)
        h = ((codes[:, None] >> bits) & 1).astype(jnp.float32)  # [chunk, H]
        return jax.nn.logsumexp(h @ params["c"] + jnp.sum(jax.nn.softplus(visible_logits(params, h)), -1))

    starts = jnp.arange(0, total, chunk, dtype=jnp.uint32)
    return jax.nn.logsumexp(jax.lax.map(block, starts))


def mean_field_reconstruction(params: Params, v: jax.Array) -> jax.Array:
    """sigmoid(b + W sigmoid(c + v.W)): [B, V] -> [B, V] probabilities."""
    return jax.nn.sigmoid(visible_logits(params, jax.nn.sigmoid(hidden_logits(params, v))))


def pseudo_log_likelihood(params: Params, v: jax.Array, keys: jax.Array) -> jax.Array:
    """Stochastic pseudo-log-likelihood V log sigmoid(F(v~) - F(v)), v~ = v with one random bit flipped.

    Args:
      v: [B, V] binary.
      keys: typed key array [B], the choice of bit per row.

    Returns:
      [B] nats, an unbiased estimate of sum_i log p(v_i | v_-i).
    """
    num_visible = v.shape[-1]
    bit = jax.vmap(lambda k: jax.random.randint(k, (), 0, num_visible))(keys)  # [B]
    flip = jax.nn.one_hot(bit, num_visible, dtype=v.dtype)
    flipped = v + flip - 2.0 * v * flip
    return num_visible * jax.nn.log_sigmoid(free_energy(params, flipped) - free_energy(params, v))


@functools.partial(jax.jit, static_argnums=(1, 2))
def sample_visible_means(params: Params, num_chains: int, steps: int) -> jax.Array:
    """Samples of the model for pictures: p(v = 1 | h) [num_chains, V] after `steps` Gibbs sweeps from
    v ~ Bernoulli(sigmoid(b)), with key 0 (the same draws for the same parameters)."""
    key = jax.random.key(0)
    v0 = bernoulli(jax.random.fold_in(key, 0), jnp.broadcast_to(params["b"], (num_chains, params["b"].shape[0])))
    v, _ = gibbs_chain(params, v0, jax.random.fold_in(key, 1), steps)
    h = bernoulli(jax.random.fold_in(key, 2), hidden_logits(params, v))
    return jax.nn.sigmoid(visible_logits(params, h))


class RBM(nn.Module):
    """Holds the RBM's parameters; calling it gives the hidden-unit probabilities (features).

    Attributes:
      num_hidden: H.
      init_scale: standard deviation of the initial weights (0.01 as in
        Hinton 2010, "A practical guide to training RBMs", UTML TR 2010-003).
      axis_name: unused (no batch norm); the model contract's collective axis.
      param_dtype: storage dtype of the parameters.

    Visible biases start at 0 here; `jaxdl.tasks.rbm` sets them to the
    log-odds of the training pixels' means, as the practical guide suggests.
    """

    num_hidden: int = 500
    init_scale: float = 0.01
    axis_name: str | None = None
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        require_positive("model", num_hidden=self.num_hidden)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False, example_keys: jax.Array | None = None) -> jax.Array:
        """x [B, ...] in [0, 1] (flattened to [B, V]) -> p(h = 1 | x) [B, H] float32.

        `train` and `example_keys` are unused (the RBM's update is not a gradient of this output and draws
        nothing here); kept for the model contract.
        """
        del train, example_keys
        v = x.reshape(x.shape[0], -1).astype(jnp.float32)  # [B, V]
        num_visible = v.shape[-1]
        params = {
            "W": self.param(
                "W", nn.initializers.normal(self.init_scale), (num_visible, self.num_hidden), self.param_dtype
            ),
            "b": self.param("b", nn.initializers.zeros, (num_visible,), self.param_dtype),
            "c": self.param("c", nn.initializers.zeros, (self.num_hidden,), self.param_dtype),
        }
        return jax.nn.sigmoid(hidden_logits(params, v))


def log_partition_base_rate(visible_bias: jax.Array, num_hidden: int) -> jax.Array:
    """log Z of the RBM with W = 0, visible biases `visible_bias` [V] and H hidden units with zero bias:
    sum_i softplus(b_i) + H log 2."""
    return jnp.sum(jax.nn.softplus(visible_bias)) + num_hidden * math.log(2.0)
