"""RBM objective: contrastive divergence (CD-k) and persistent CD, AIS log-likelihood.

The update is the CD gradient, not the gradient of a loss (Hinton 2002,
"Training products of experts by minimizing contrastive divergence"):

  dNLL/dtheta ~= <-dF/dtheta>_model - <-dF/dtheta>_data,
  e.g. dNLL/dW ~= mean_chains v_k p(h|v_k)^T - mean_data v_0 p(h|v_0)^T,

where F is the free energy and v_k the state of a Gibbs chain after k sweeps:
started at the data for CD-k, or continued from the previous step's chains
for persistent CD (Tieleman 2008, "Training restricted Boltzmann machines
using approximations to the likelihood gradient"). Hidden statistics use
p(h|v) (Rao-Blackwellised). An L2 `weight_cost` on W is added (Hinton 2010,
"A practical guide to training RBMs", section 10). The optimizer (SGD with
momentum, say) is applied to this gradient as to any other.

Persistent chains live in `RBMState.chains` [C, V] (replicated like the
parameters). Chain c is advanced with its own stream fold(key, c) by the
device that owns slice c // (C / N), and the slices are all-gathered, so the
chains, and hence the parameters, are the same on 1 and on N devices.

Metrics, in nats or per image (the eval split is binarized once, the training
split afresh at every use as in Salakhutdinov & Murray 2008): `recon_error`
(squared error of the mean-field reconstruction, summed over pixels), `pll`
(the pseudo-log-likelihood's one-bit estimate; its stream is fixed by the
loop's eval key; both in `jaxdl.models.rbm`), and `free_energy`,
`free_energy_train`, `free_energy_gap`: mean F of held-out images, of
`free_energy_train_examples` training images (appended to the eval split,
flagged `held_out = False`, and excluded from every other metric) and their
difference; a growing gap signals overfitting (practical guide, section 6).
Final evaluation: `test_log_prob` by AIS (`jaxdl.evaluators.ais`) and linear
probes on hidden units and pixels (`jaxdl.evaluators.linear_probe`).

Data: batches hold `image` uint8 [B, H, W, C] in 0..255, `label` (optional),
`index` int32 [B] and, for evaluation, `mask` bool [B] (and `held_out`).
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdl.evaluators import linear_probe
from jaxdl.evaluators.ais import AIS, base_rate_bias
from jaxdl.data.binarize import binarize, binarize_once
from jaxdl.models.rbm import (
    RBM,
    Params,
    bernoulli,
    free_energy,
    gibbs_chain,
    hidden_logits,
    mean_field_reconstruction,
    pseudo_log_likelihood,
    sample_visible_means,
    sufficient_statistics,
)
from jaxdl.tasks.base import Arrays, Batch, Metrics, Prepared, RunFacts, Task
from jaxdl.training.parallel import example_keys, pmean, psum
from jaxdl.training.state import TrainState
from jaxdl.viz.images import save_image_grid


class RBMState(TrainState):
    """TrainState plus `chains`: float32 [C, V] binary persistent chains (None for CD-k)."""

    chains: Any = None


def cd_gradient(params: Params, v_data: jax.Array, v_model: jax.Array, *, weight_cost: float = 0.0) -> Params:
    """The CD estimate of d(-log-likelihood)/d(params), averaged over the rows.

    Args:
      params: {"W": [V, H], "b": [V], "c": [H]}.
      v_data: [B, V] binary training vectors.
      v_model: [C, V] binary states of the negative-phase chains.
      weight_cost: L2 coefficient added to the W gradient (weight_cost * W).

    Returns:
      Gradient pytree shaped like `params` (descend it to raise the likelihood).
    """
    positive = sufficient_statistics(v_data, jax.nn.sigmoid(hidden_logits(params, v_data)))
    negative = sufficient_statistics(v_model, jax.nn.sigmoid(hidden_logits(params, v_model)))
    grads = jax.tree.map(lambda neg, pos: neg - pos, negative, positive)
    grads["W"] = grads["W"] + weight_cost * params["W"]
    return grads


class RBMContext(NamedTuple):
    """What `RBMTask.prepare` fits: `base_bias` float32 [V], the log-odds of the training pixel means
    (initial visible biases and the AIS base-rate model)."""

    base_bias: np.ndarray


class RBMTask(Task):
    """Trains an `RBM` with CD-k or persistent CD; evaluates PLL, free-energy gap and AIS log-likelihood.

    Args:
      model: the RBM.
      cd_steps: k, Gibbs sweeps of the negative phase per update.
      persistent: persistent CD (chains carried across updates) instead of CD-k.
      num_chains: C, persistent chains (divisible by the device count).
      weight_cost: L2 coefficient on W added to its gradient.
      binarize_train: draw binary training pixels every step; when False the
        intensities in [0, 1] are used as v directly (not binary data).
      eval_binarize_seed: seed of the one-off binarization of the eval split.
      free_energy_train_examples: training images appended to the eval split
        for the free-energy gap (0: no gap).
      ais_runs, ais_betas: M runs and K intermediate distributions of the final
        AIS estimate (ais_betas=0 skips it); ais_seed: its PRNG seed.
      feature_classifier: fit logistic regression on hidden probabilities (and on
        pixels) in the final evaluation; feature_classifier_train_examples
        limits its training set (None: all).
      num_sample_chains, sample_gibbs_steps: chains and Gibbs sweeps of the
        sample picture; num_filters: hidden units shown in the filter picture.
    """

    default_metric = "eval/pll"
    default_mode = "max"
    progress_metric = "recon_error"
    progress_unit = "squared reconstruction error (sum over pixels)"
    streams = False  # prepare() fits the visible biases on the whole training split

    def __init__(
        self,
        model: RBM,
        *,
        cd_steps: int = 1,
        persistent: bool = False,
        num_chains: int = 100,
        weight_cost: float = 2e-4,
        binarize_train: bool = True,
        eval_binarize_seed: int = 0,
        free_energy_train_examples: int = 1000,
        ais_runs: int = 100,
        ais_betas: int = 14500,
        ais_seed: int = 0,
        feature_classifier: bool = True,
        feature_classifier_train_examples: int | None = None,
        num_sample_chains: int = 64,
        sample_gibbs_steps: int = 1000,
        num_filters: int = 100,
    ):
        if cd_steps < 1:
            raise ValueError(f"task.cd_steps={cd_steps} must be at least 1.")
        if persistent and num_chains < 1:
            raise ValueError(f"Persistent CD needs task.num_chains >= 1 (got {num_chains}).")
        self.model = model
        self.cd_steps = cd_steps
        self.persistent = persistent
        self.num_chains = num_chains
        self.weight_cost = weight_cost
        self.binarize_train = binarize_train
        self.eval_binarize_seed = eval_binarize_seed
        self.free_energy_train_examples = free_energy_train_examples
        self.ais = AIS(runs=ais_runs, betas=ais_betas, seed=ais_seed) if ais_betas else None
        self.feature_classifier = feature_classifier
        self.feature_classifier_train_examples = feature_classifier_train_examples
        self.num_sample_chains = num_sample_chains
        self.sample_gibbs_steps = sample_gibbs_steps
        self.num_filters = num_filters

    def required_features(self) -> tuple[str, ...]:
        return ("image",)

    def prepare(self, train: Arrays, eval: Arrays, facts: RunFacts) -> Prepared:  # noqa: A002
        """Binarizes the eval images once, appends `free_energy_train_examples` training images flagged
        `held_out = False` (for the free-energy gap), and fits the initial visible biases (the log-odds of
        the training pixel means, also the AIS base rate).

        Raises:
          KeyError: the two splits have different features.
        """
        del facts
        pixel_means = train["image"].reshape(len(train["image"]), -1).astype(np.float64).mean(0) / 255.0
        context = RBMContext(base_rate_bias(pixel_means, len(train["image"])))
        held = {**eval, "image": binarize_once(eval["image"], self.eval_binarize_seed)}
        held["held_out"] = np.ones(len(held["image"]), bool)
        n = min(self.free_energy_train_examples, len(train["image"]))
        if n == 0:
            return Prepared(train, held, context)
        extra = {k: train[k][:n] for k in held if k in train}
        extra["image"] = binarize_once(extra["image"], self.eval_binarize_seed + 1)
        extra["held_out"] = np.zeros(n, bool)
        if set(extra) != set(held):
            raise KeyError(f"Train and eval splits have different features: {sorted(extra)} vs {sorted(held)}.")
        return Prepared(train, {k: np.concatenate([held[k], extra[k]]) for k in held}, context)

    def init_state(
        self, key: jax.Array, tx: optax.GradientTransformation, example_batch: Batch, context: RBMContext | None = None
    ) -> RBMState:
        """Initialises W ~ N(0, init_scale^2), c = 0 and b = the context's base-rate biases (0 without a
        context); PCD chains start from that base-rate distribution."""
        x = jnp.zeros((1, int(np.prod(example_batch["image"].shape[1:]))), jnp.float32)
        params = dict(self.model.init({"params": jax.random.fold_in(key, 0)}, x)["params"])
        if context is not None:
            params["b"] = jnp.asarray(context.base_bias)
        chains = None
        if self.persistent:
            logits = jnp.broadcast_to(params["b"], (self.num_chains, x.shape[1]))
            chains = bernoulli(jax.random.fold_in(key, 1), logits)
        return RBMState.create(apply_fn=self.model.apply, params=params, tx=tx, chains=chains)

    def _negative_phase(self, state: RBMState, v0: jax.Array, index: jax.Array, key: jax.Array, axis_name):
        """Returns (v_k [B or C / N, V], new chains or None)."""
        if not self.persistent:
            vk, _ = gibbs_chain(state.params, v0, example_keys(key, index), self.cd_steps)
            return vk, None
        devices = 1 if axis_name is None else jax.lax.axis_size(axis_name)
        if self.num_chains % devices:
            raise ValueError(f"task.num_chains={self.num_chains} must be divisible by the {devices} devices.")
        per_device = self.num_chains // devices
        first = 0 if axis_name is None else jax.lax.axis_index(axis_name) * per_device
        local = jax.lax.dynamic_slice_in_dim(state.chains, first, per_device)
        chain_ids = first + jnp.arange(per_device, dtype=jnp.int32)
        vk, _ = gibbs_chain(state.params, local, example_keys(key, chain_ids), self.cd_steps)
        chains = vk if axis_name is None else jax.lax.all_gather(vk, axis_name, tiled=True)
        return vk, chains

    def _data(self, batch: Batch, key: jax.Array) -> jax.Array:
        if self.binarize_train:
            v = binarize(example_keys(key, batch["index"]), batch["image"])
            return v.reshape(v.shape[0], -1)  # [B, V]
        return batch["image"].reshape(batch["image"].shape[0], -1).astype(jnp.float32) / 255.0

    def train_step(
        self, state: RBMState, batch: Batch, key: jax.Array, *, context: Any = None, axis_name: str | None = None
    ) -> tuple[RBMState, Metrics]:
        """One update along the CD-k (or PCD-k) gradient of the global batch.

        Random streams (folded from `key` and the step): `binarize` per
        example, `gibbs` per example (CD) or per chain (PCD).
        """
        step_key = jax.random.fold_in(key, state.step)
        v0 = self._data(batch, jax.random.fold_in(step_key, 0))  # [B, V]
        vk, chains = self._negative_phase(state, v0, batch["index"], jax.random.fold_in(step_key, 1), axis_name)
        grads = pmean(cd_gradient(state.params, v0, vk, weight_cost=self.weight_cost), axis_name)
        recon = jnp.square(v0 - mean_field_reconstruction(state.params, v0)).sum(-1)
        metrics = pmean({"recon_error": recon.mean(), "free_energy": free_energy(state.params, v0).mean()}, axis_name)
        metrics["grad_norm"] = optax.tree.norm(grads)
        new_state = state.apply_gradients(grads=grads)
        if self.persistent:
            new_state = new_state.replace(chains=chains)
        return new_state, metrics

    def eval_step(
        self, state: RBMState, batch: Batch, key: jax.Array, *, context: Any = None, axis_name: str | None = None
    ) -> Metrics:
        """Sums of reconstruction error, PLL and free energy over held-out rows, and of the free energy
        over the appended training rows (deterministic given `key`)."""
        v = batch["image"].reshape(batch["image"].shape[0], -1).astype(jnp.float32) / 255.0
        mask = batch["mask"].astype(jnp.float32)
        held = batch["held_out"].astype(jnp.float32) if "held_out" in batch else jnp.ones_like(mask)
        held_mask, train_mask = mask * held, mask * (1.0 - held)
        recon = jnp.square(v - mean_field_reconstruction(state.params, v)).sum(-1)
        pll = pseudo_log_likelihood(state.params, v, example_keys(key, batch["index"]))
        energy = free_energy(state.params, v)
        sums = {
            "count": held_mask.sum(),
            "recon_error_sum": jnp.sum(recon * held_mask),
            "pll_sum": jnp.sum(pll * held_mask),
            "free_energy_sum": jnp.sum(energy * held_mask),
            "train_count": train_mask.sum(),
            "free_energy_train_sum": jnp.sum(energy * train_mask),
        }
        return psum(sums, axis_name)

    def summarize_eval(self, totals: Mapping[str, np.ndarray], context: Any = None) -> dict[str, float]:
        """Held-out means of recon_error, pll (nats) and free_energy; the training rows' mean free energy
        and the gap."""
        count = float(totals["count"])
        metrics = {k: float(totals[f"{k}_sum"]) / count for k in ("recon_error", "pll", "free_energy")}
        train_count = float(totals["train_count"])
        if train_count:
            metrics["free_energy_train"] = float(totals["free_energy_train_sum"]) / train_count
            metrics["free_energy_gap"] = metrics["free_energy"] - metrics["free_energy_train"]
        return metrics

    def final_evaluation(self, evaluate, state: RBMState, prepared: Prepared) -> dict[str, float]:
        """`eval/test_log_prob` by AIS (nats, with `_low`/`_high` from the log Z interval) and the linear
        probes' accuracies on the hidden-unit probabilities and on the pixels."""
        metrics = {} if self.ais is None else self.ais(evaluate, state, prepared.context.base_bias)
        if self.feature_classifier and "label" in prepared.train:
            train = {k: v[: self.feature_classifier_train_examples] for k, v in prepared.train.items()}
            test = {k: v[prepared.eval["held_out"]] for k, v in prepared.eval.items()}
            v_train = binarize_once(train["image"], self.eval_binarize_seed + 2).reshape(len(train["image"]), -1) / 255
            v_test = test["image"].reshape(len(test["image"]), -1) / 255
            features = {
                "feature": tuple(linear_probe.in_chunks(_hidden_probs, state.params, v) for v in (v_train, v_test)),
                "pixel": (v_train.astype(np.float32), v_test.astype(np.float32)),
            }
            metrics.update(linear_probe.accuracies(features, train["label"], test["label"]))
        return metrics

    def write_artifacts(
        self, state: RBMState, epoch: int, run_dir: pathlib.Path, prepared: Prepared, totals: Mapping[str, np.ndarray]
    ) -> None:
        """Writes `samples/epoch_NNN.png` (p(v|h) after `sample_gibbs_steps` sweeps of chains started from
        the base rate, the same draws every epoch) and `filters/epoch_NNN.png` (the first hidden units'
        weights, each scaled to [0, 1])."""
        shape = prepared.eval["image"].shape[1:]
        samples = sample_visible_means(state.params, self.num_sample_chains, self.sample_gibbs_steps)
        save_image_grid(run_dir / "samples" / f"epoch_{epoch:03d}.png", np.asarray(samples).reshape(-1, *shape))
        w = np.asarray(state.params["W"][:, : self.num_filters]).T  # [F, V]
        lo, hi = w.min(1, keepdims=True), w.max(1, keepdims=True)
        filters = (w - lo) / np.maximum(hi - lo, 1e-12)
        save_image_grid(run_dir / "filters" / f"epoch_{epoch:03d}.png", filters.reshape(-1, *shape))


#: p(h = 1 | v) [N, H] of binary v [N, V], the features of the linear probe.
_hidden_probs = jax.jit(lambda params, v: jax.nn.sigmoid(hidden_logits(params, v)))
