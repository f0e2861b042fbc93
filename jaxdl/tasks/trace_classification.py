"""Supervised trace classification (normal vs attack), evaluated as an anomaly detector.

Unlike the language model of `jaxdl.tasks.language_model`, which learns from
normal traces only, this objective is *supervised*: it trains a many-to-one
sequence classifier (e.g. `RNNLM(num_classes=2)`) on windows of normal traces
and of part of the attack traces (`data.supervised_attack_fraction`), each
window labelled with its trace's class, by softmax cross-entropy (nats per
window, mean over the valid windows of the global batch). A trace's score is
the mean over its windows of P(attack), weighted by the window's calls, and
is evaluated exactly as the language model's scores are: ROC on the
validation-normal traces vs the attacks not used for training, a threshold
calibrated on the held-out normal traces, per-family detection
(`jaxdl.metrics.anomaly`). Knowing attacks in advance, it is not comparable to
the unsupervised detectors on equal terms: it is the supervised reference.

Batches: `tokens` int32 [B, T], `token_mask` bool [B, T], `label` int32 [B]
(0 normal, 1 attack), `index` int32 [B]; eval batches also `mask` bool [B] and
`group` int32 [B]. `eval/loss` is the cross-entropy over held-out normal
windows (early stopping sees no attack).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxdl.data.sequences import HOLDOUT
from jaxdl.tasks.base import Batch, Metrics
from jaxdl.tasks.language_model import LanguageModelTask, TraceTable, cross_entropy_update
from jaxdl.training.parallel import example_keys, psum
from jaxdl.training.state import TrainState


class TraceClassificationTask(LanguageModelTask):
    """Cross-entropy of a window's class; traces scored by their mean P(attack).

    Args: those of `LanguageModelTask` (the text-sampling ones are unused).
    """

    progress_unit = "cross-entropy (nats per window)"

    def required_features(self) -> tuple[str, ...]:
        return ("tokens", "token_mask", "label")

    def init_state(
        self, key: jax.Array, tx: optax.GradientTransformation, example_batch: Batch, context: Any = None
    ) -> TrainState:
        """Initialises parameters for windows shaped like `example_batch["tokens"]`."""
        tokens = jnp.zeros((1, example_batch["tokens"].shape[-1]), jnp.int32)
        variables = self.model.init({"params": key}, tokens, train=False, token_mask=jnp.ones(tokens.shape, bool))
        return TrainState.create(apply_fn=self.model.apply, params=variables["params"], tx=tx)

    def class_logits(self, params, batch: Batch, *, train: bool, keys: jax.Array | None = None) -> jax.Array:
        """[B, 2] logits; in training, dropout draws from keys [B], one stream per example."""
        if not train or not getattr(self.model, "dropout_rate", 0.0):
            return self.model.apply({"params": params}, batch["tokens"], train=False, token_mask=batch["token_mask"])

        def one(key, tokens, mask):
            return self.model.apply({"params": params}, tokens[None], train=True, token_mask=mask[None],
                                    rngs={"dropout": key})[0]

        return jax.vmap(one)(keys, batch["tokens"], batch["token_mask"])

    @staticmethod
    def _window_weights(batch: Batch) -> jax.Array:
        """float32 [B]: 1 for a window with a scored call that is not loader padding."""
        weights = batch["token_mask"].any(axis=1).astype(jnp.float32)
        if "mask" in batch:
            weights = weights * batch["mask"].astype(jnp.float32)
        return weights

    def train_step(
        self, state: TrainState, batch: Batch, key: jax.Array, *, context: Any = None, axis_name: str | None = None
    ) -> tuple[TrainState, Metrics]:
        """One update on the mean window cross-entropy over the global batch (summed gradients, global count)."""
        keys = example_keys(jax.random.fold_in(key, state.step), batch["index"])
        return cross_entropy_update(
            state, lambda params: self.class_logits(params, batch, train=True, keys=keys),
            batch["label"], self._window_weights(batch), axis_name,
        )

    def eval_step(
        self, state: TrainState, batch: Batch, key: jax.Array, *, context: TraceTable | None = None,
        axis_name: str | None = None,
    ) -> Metrics:
        """Cross-entropy sums over held-out normal windows; per-window P(attack) x calls for the trace scores."""
        del key
        logits = self.class_logits(state.params, batch, train=False)
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])  # [B]
        correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
        weights = self._window_weights(batch)
        counted = weights * (batch["group"] == HOLDOUT)
        sums = {"nll_sum": jnp.sum(nll * counted), "correct_sum": jnp.sum(correct * counted), "count": counted.sum()}
        if context is not None:
            num = len(context.window_trace)
            calls = batch["token_mask"].astype(jnp.float32).sum(1) * batch["mask"].astype(jnp.float32)  # [B]
            attack = jax.nn.softmax(logits)[:, 1]
            slot = jnp.where(batch["mask"], batch["index"], num)
            sums["window_nll_sum"] = jnp.zeros(num).at[slot].add(attack * calls, mode="drop")
            sums["window_count"] = jnp.zeros(num).at[slot].add(calls, mode="drop")
        return psum(sums, axis_name)
