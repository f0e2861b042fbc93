"""Supervised trace classification (normal vs attack), evaluated as an anomaly detector.

Unlike the language model of `jaxdl.tasks.language_model`, which learns from
normal traces only, this objective is *supervised*: it trains a many-to-one
sequence classifier (e.g. `RNNLM(num_classes=2)`) on windows of normal traces
and of part of the attack traces (`data.supervised_attack_fraction`), each
window labelled with its trace's class, by softmax cross-entropy (nats per
window, mean over the valid windows of the global batch). A trace's score is
the mean over its windows of P(attack), weighted by the window's calls, and
is evaluated exactly as the language model's scores are
(`jaxdl.evaluators.traces`): ROC on the validation-normal traces vs the
attacks not used for training, a threshold calibrated on the held-out normal
traces, per-family detection. Knowing attacks in advance, it is not
comparable to the unsupervised detectors on equal terms: it is the
supervised reference.

Batches: `tokens` int32 [B, T], `token_mask` bool [B, T], `label` int32 [B]
(0 normal, 1 attack), `index` int32 [B]; eval batches also `mask` bool [B]
and `group` int32 [B]. `eval/loss` is the cross-entropy over held-out normal
windows (early stopping sees no attack). Randomness: dropout only, one stream
per example (`example_keys`); evaluation is deterministic.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdl.data.sequences import HOLDOUT
from jaxdl.evaluators import traces
from jaxdl.evaluators.traces import TraceEvaluator, TraceTable, window_sums
from jaxdl.tasks.base import Arrays, Batch, Metrics, Prepared, RunFacts, Task
from jaxdl.tasks.cross_entropy import cross_entropy_metrics, cross_entropy_sums, cross_entropy_update
from jaxdl.training.parallel import example_keys, psum
from jaxdl.training.state import TrainState


class TraceClassificationTask(Task):
    """Cross-entropy of a window's class; traces scored by their mean P(attack).

    Args:
      model: a sequence classifier, `model(tokens, *, train, example_keys, token_mask)` -> logits [B, 2].
      score, false_alarm_rate, family_names: the trace anomaly report's
        (`jaxdl.evaluators.traces.TraceEvaluator`).
    """

    progress_unit = "cross-entropy (nats per window)"

    def __init__(
        self,
        model: nn.Module,
        *,
        score: str = "mean",
        false_alarm_rate: float = 0.05,
        family_names: Sequence[str] | None = None,
    ):
        self.traces = TraceEvaluator(score, false_alarm_rate, family_names)
        self.model = model

    def required_features(self) -> tuple[str, ...]:
        return ("tokens", "token_mask", "label")

    def prepare(self, train: Arrays, eval: Arrays, facts: RunFacts) -> Prepared:  # noqa: A002
        """The context is the eval split's `TraceTable`; the names leave the batches."""
        del facts
        return Prepared(*traces.prepare(train, eval))

    def init_state(
        self, key: jax.Array, tx: optax.GradientTransformation, example_batch: Batch, context: Any = None
    ) -> TrainState:
        """Initialises parameters for windows shaped like `example_batch["tokens"]`."""
        tokens = jnp.zeros((1, example_batch["tokens"].shape[-1]), jnp.int32)
        variables = self.model.init({"params": key}, tokens, train=False, token_mask=jnp.ones(tokens.shape, bool))
        return TrainState.create(apply_fn=self.model.apply, params=variables["params"], tx=tx)

    def class_logits(self, params, batch: Batch, *, train: bool, keys: jax.Array | None = None) -> jax.Array:
        """[B, 2] logits; in training, dropout draws from keys [B], one stream per example."""
        return self.model.apply({"params": params}, batch["tokens"], train=train, example_keys=keys,
                                token_mask=batch["token_mask"])

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
        counted = self._window_weights(batch) * (batch["group"] == HOLDOUT)
        sums = cross_entropy_sums(logits, batch["label"], counted)
        if context is not None:
            calls = batch["token_mask"].astype(jnp.float32).sum(1) * batch["mask"].astype(jnp.float32)  # [B]
            attack = jax.nn.softmax(logits)[:, 1]
            sums.update(window_sums(context, batch, attack * calls, calls))
        return psum(sums, axis_name)

    def summarize_eval(self, totals: Mapping[str, np.ndarray], context: TraceTable | None = None) -> dict[str, float]:
        """eval/loss (nats per window) and accuracy over held-out normal windows (with `bpc` and
        `perplexity` of that loss); the anomaly metrics of the trace scores."""
        return {**cross_entropy_metrics(totals), **self.traces.summarize(totals, context)}

    def write_artifacts(
        self, state: TrainState, epoch: int, run_dir: pathlib.Path, prepared: Prepared, totals: Mapping[str, np.ndarray]
    ) -> None:
        """`roc.png`, `scores.csv`, `anomaly.json` of this evaluation."""
        del epoch
        self.traces.write_report(pathlib.Path(run_dir), int(state.step), totals, prepared.context)
