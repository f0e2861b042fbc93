"""Annealed importance sampling (AIS) of an RBM's log partition function, and the AIS evaluator.

Neal 2001, "Annealed importance sampling" (Statistics and Computing 11), as
applied to RBMs by Salakhutdinov & Murray 2008, "On the quantitative analysis
of deep belief networks" (ICML), section 3:

* The start distribution p_0 is a "base-rate" RBM with W = 0 whose visible
  biases b_A are the log-odds of the training data's pixel means, and the
  target RBM's H hidden units; its partition function is exact:
  log Z_0 = sum_i softplus(b_A,i) + H log 2, and p_0 can be sampled exactly.
* Intermediate distributions interpolate the energies,
  p*_beta(v) = exp((1 - beta) b_A.v + beta b.v) prod_j (1 + exp(beta (c_j + (v.W)_j))),
  for 0 = beta_0 < beta_1 < ... < beta_K = 1 (p*_1 = exp(-F(v)) of the target RBM).
* Each of M independent runs draws v_1 ~ p_0 and, for k = 1..K, adds
  log p*_k(v_k) - log p*_{k-1}(v_k) to its log weight, then moves v by one
  Gibbs sweep that leaves p_k invariant. Then
  Z_K / Z_0 ~= mean_m w_m, an unbiased estimate of Z (so log Z is, by
  Jensen's inequality, underestimated on average and the test log-probability
  log p(v) = -F(v) - log Z overestimated, as the paper notes).

The paper's schedule (14,500 betas: steps of 1e-3 on [0, 0.5], 1e-4 on
[0.5, 0.9] and 1e-5 on [0.9, 1]) and M = 100 runs are the defaults of `AIS`,
the final evaluator `jaxdl.tasks.rbm` composes (test log-probability
log p(v) = -F(v) - log Z of the held-out images); `annealing_schedule(n)`
keeps the same shape for any n.

Shapes: M runs, V visible, H hidden units. Every log quantity is in nats.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.models.rbm import Params, bernoulli, free_energy, hidden_logits, log_partition_base_rate
from jaxdl.training.parallel import psum

# Salakhutdinov & Murray 2008: fractions of the betas spent in [0, 0.5), [0.5, 0.9), [0.9, 1].
_SEGMENTS = ((0.0, 0.5, 500), (0.5, 0.9, 4000), (0.9, 1.0, 10000))


class AISResult(NamedTuple):
    """What `ais_log_partition` returns (all in nats).

    Attributes:
      log_z: the estimate log(Z_0 mean_m w_m).
      log_z_low, log_z_high: log(Z_0 (mean w -/+ 3 standard errors)), the
        paper's "+-3 sigma" interval (log_z_low is -inf when the interval
        reaches 0).
      log_weights: [M] the runs' log importance weights log w_m.
    """

    log_z: jax.Array
    log_z_low: jax.Array
    log_z_high: jax.Array
    log_weights: jax.Array


def annealing_schedule(num_betas: int = 14500) -> np.ndarray:
    """float32 [num_betas + 1] betas from 0 to 1 with Salakhutdinov & Murray's spacing.

    The three segments get 500/14500, 4000/14500 and 10000/14500 of the steps,
    each spaced uniformly; `num_betas=14500` reproduces the paper's schedule.

    Raises:
      ValueError: num_betas < 3.
    """
    if num_betas < 3:
        raise ValueError(f"num_betas={num_betas} must be at least 3 (one step per segment).")
    total = sum(n for *_, n in _SEGMENTS)
    counts = [max(1, round(num_betas * n / total)) for *_, n in _SEGMENTS]
    counts[-1] = num_betas - sum(counts[:-1])
    parts = [np.linspace(lo, hi, n, endpoint=False) for (lo, hi, _), n in zip(_SEGMENTS, counts, strict=True)]
    return np.concatenate([*parts, [1.0]]).astype(np.float32)


def base_rate_bias(pixel_means: np.ndarray, num_examples: int) -> np.ndarray:
    """Visible biases b_A [V] of the base-rate model: log-odds of the smoothed means (n p + 1) / (n + 2)."""
    p = (np.asarray(pixel_means, np.float64) * num_examples + 1.0) / (num_examples + 2.0)
    return np.log(p / (1.0 - p)).astype(np.float32)


def ais_log_partition(
    key: jax.Array, params: Params, base_bias: jax.Array, betas: jax.Array, *, num_runs: int = 100
) -> AISResult:
    """Estimates log Z of the RBM `params` by AIS from the base-rate model (see the module docstring).

    Args:
      key: typed PRNG key; step k uses fold_in(key, k).
      params: the RBM {"W": [V, H], "b": [V], "c": [H]}.
      base_bias: b_A [V], visible biases of the base-rate model.
      betas: [K + 1] increasing inverse temperatures with betas[0] = 0 and betas[-1] = 1.
      num_runs: M, independent annealing runs.

    Returns:
      AISResult with the estimate, its +-3 standard-error interval and the log weights.
    """
    base_bias = jnp.asarray(base_bias, jnp.float32)
    betas = jnp.asarray(betas, jnp.float32)
    num_hidden = params["W"].shape[1]
    v0 = bernoulli(jax.random.fold_in(key, 0), jnp.broadcast_to(base_bias, (num_runs, base_bias.shape[0])))

    def anneal(carry, k):
        v, log_w = carry
        beta_prev, beta = betas[k - 1], betas[k]
        pre = hidden_logits(params, v)  # [M, H]
        visible_gap = v @ (params["b"] - base_bias)  # [M]
        log_w = log_w + (beta - beta_prev) * visible_gap
        log_w = log_w + jnp.sum(jax.nn.softplus(beta * pre) - jax.nn.softplus(beta_prev * pre), axis=-1)
        step_key = jax.random.fold_in(key, k)
        h = bernoulli(jax.random.fold_in(step_key, 0), beta * pre)
        v_logits = (1.0 - beta) * base_bias + beta * (h @ params["W"].T + params["b"])
        v = bernoulli(jax.random.fold_in(step_key, 1), v_logits)
        return (v, log_w), None

    (_, log_w), _ = jax.lax.scan(anneal, (v0, jnp.zeros(num_runs)), jnp.arange(1, betas.shape[0]))
    log_z0 = log_partition_base_rate(base_bias, num_hidden)
    top = jnp.max(log_w)
    w = jnp.exp(log_w - top)
    mean, se = w.mean(), w.std() / math.sqrt(num_runs)
    shift = log_z0 + top
    return AISResult(
        log_z=shift + jnp.log(mean),
        log_z_low=shift + jnp.log(jnp.maximum(mean - 3.0 * se, 0.0)),
        log_z_high=shift + jnp.log(mean + 3.0 * se),
        log_weights=log_w,
    )


def neg_free_energy_sums(state, batch, key: jax.Array, *, context=None, axis_name: str | None = None) -> dict:
    """Eval step: the sum of -F(v) over the held-out rows of a batch (for log p(v) = -F(v) - log Z) and their
    count. Batches hold binary `image` uint8 0/255 [B, H, W, C], `mask` bool [B] and optionally `held_out`."""
    del key, context
    v = batch["image"].reshape(batch["image"].shape[0], -1).astype(jnp.float32) / 255.0
    mask = batch["mask"].astype(jnp.float32)
    if "held_out" in batch:
        mask = mask * batch["held_out"].astype(jnp.float32)
    sums = {"count": mask.sum(), "neg_free_energy_sum": -jnp.sum(free_energy(state.params, v) * mask)}
    return psum(sums, axis_name)


class AIS:
    """Final evaluator of an RBM: the test log-probability with log Z from AIS.

    Args:
      runs: M, annealing runs.
      betas: K, intermediate distributions (`annealing_schedule`).
      seed: the PRNG seed of the runs.
    """

    def __init__(self, runs: int = 100, betas: int = 14500, seed: int = 0):
        self.runs = runs
        self.betas = betas
        self.seed = seed

    def log_partition(self, params: Params, base: np.ndarray | None = None) -> dict[str, float]:
        """AIS estimate of log Z (nats), its +-3 standard-error interval and the runs' effective number,
        from the base-rate biases `base` [V] (the training pixels' log-odds; None: zeros)."""
        if base is None:
            base = np.zeros(params["W"].shape[0], np.float32)
        schedule = jnp.asarray(annealing_schedule(self.betas))
        result = _ais(jax.random.key(self.seed), params, jnp.asarray(base), schedule, self.runs)
        log_w = np.asarray(result.log_weights, np.float64)
        weights = np.exp(log_w - log_w.max())
        out = {
            "ais_log_z": float(result.log_z),
            "ais_log_z_high": float(result.log_z_high),
            "ais_effective_runs": float(weights.sum() ** 2 / np.square(weights).sum()),
            # mean - 3 s.e. <= 0: the interval has no lower end (few effective runs); then no "_low" is reported
            "ais_interval_open": float(not np.isfinite(float(result.log_z_low))),
        }
        if not out["ais_interval_open"]:
            out["ais_log_z_low"] = float(result.log_z_low)
        return out

    def __call__(self, evaluate: Callable[..., Mapping[str, np.ndarray]], state, base: np.ndarray) -> dict[str, float]:
        """`eval/test_log_prob` (mean log p(v) of the held-out rows, nats) with `_low`/`_high` from the log Z
        interval, and the `eval/ais_*` quantities. When the interval is open below (`eval/ais_interval_open`
        1.0), `eval/ais_log_z_low` and `eval/test_log_prob_high` are left out rather than reported as infinite.

        Args:
          evaluate: runs an eval step over the evaluation split and sums its outputs (the loop's).
          state: the RBM's state (`state.params`).
          base: the base-rate biases [V].
        """
        totals = evaluate(neg_free_energy_sums)
        mean_neg_f = float(totals["neg_free_energy_sum"]) / float(totals["count"])
        z = self.log_partition(state.params, base)
        metrics = {f"eval/{k}": v for k, v in z.items()}
        metrics["eval/test_log_prob"] = mean_neg_f - z["ais_log_z"]
        metrics["eval/test_log_prob_low"] = mean_neg_f - z["ais_log_z_high"]
        if "ais_log_z_low" in z:
            metrics["eval/test_log_prob_high"] = mean_neg_f - z["ais_log_z_low"]
        return metrics


@functools.partial(jax.jit, static_argnums=4)
def _ais(key, params, base, betas, runs):
    return ais_log_partition(key, params, base, betas, num_runs=runs)
