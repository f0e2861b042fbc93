"""Next-token language modelling, for text and for system-call traces.

The objective is the cross-entropy of the next token, in nats per token,
averaged over the valid positions of the global batch (a position counts when
`token_mask` is True and, in evaluation, its example is not padding). Any
`jaxdl.models.contract.TokenModel` fits: the Transformer
(`jaxdl.models.transformer`) and the recurrent nets (`jaxdl.models.rnn`).

Two uses:

* Text (tiny Shakespeare, characters as tokens): `eval/loss` in nats per
  character and `eval/bpc` in bits per character; samples of generated text
  (`jaxdl.sampling`) are written at each evaluation (`samples/step_NNNNNN.txt`).
* System-call traces (ADFA-LD): trained on normal traces only, a trace's
  anomaly score is its mean negative log-likelihood per call in nats (Kim et
  al. 2016, arXiv:1611.01726), or the variant "max_window": the largest mean
  NLL of any of its evaluation windows. The eval split holds held-out normal
  traces (group HOLDOUT: they alone give `eval/loss`, which drives early
  stopping and checkpoint ranking, and calibrate the alarm threshold) and
  the test traces (normal and attack); every evaluation reports ROC AUC and
  the rest of the anomaly report (`jaxdl.evaluators.traces`), and rewrites
  `roc.png`, `scores.csv` and `anomaly.json`.

Batches: `tokens`, `targets` int32 [B, T], `token_mask` bool [B, T], `index`
int32 [B] (example index, -1 for padding), eval batches also `mask` bool [B]
and, for traces, `group` int32 [B]. Randomness: dropout only, one stream per
example folded from the step and its index (`example_keys`), so that 1 and N
devices draw the same masks; evaluation is deterministic.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdl import sampling
from jaxdl.data.sequences import HOLDOUT
from jaxdl.data.text import decode_text, encode_text
from jaxdl.evaluators import traces
from jaxdl.evaluators.traces import TraceEvaluator, TraceTable, window_sums
from jaxdl.models.contract import TokenModel
from jaxdl.tasks.base import Arrays, Batch, Metrics, Prepared, RunFacts, Task
from jaxdl.tasks.cross_entropy import cross_entropy_metrics, cross_entropy_sums, cross_entropy_update
from jaxdl.training import diagnostics
from jaxdl.training.parallel import example_keys, pmean, psum
from jaxdl.training.state import TrainState


class LanguageModelTask(Task):
    """Trains a causal model by next-token cross-entropy; samples text; scores traces.

    Args:
      model: a token model, tokens [B, T] -> logits [B, T, V].
      vocabulary: text datasets: the token table (one character per id), used
        to write samples; None for non-text tokens (no samples).
      sample_prompt: text that starts every sample.
      sample_tokens: characters generated per sample (0: no samples).
      sample_temperature, sample_top_k: sampling settings (temperature 0 is greedy).
      sample_seed: seeds the samples (the same draws at every evaluation).
      score, false_alarm_rate, family_names: the trace anomaly report's
        (`jaxdl.evaluators.traces.TraceEvaluator`).
    """

    progress_unit = "cross-entropy (nats per token)"

    def __init__(
        self,
        model: TokenModel,
        *,
        vocabulary: str | None = None,
        sample_prompt: str = "\n",
        sample_tokens: int = 300,
        sample_temperature: float = 0.8,
        sample_top_k: int | None = 200,
        sample_seed: int = 0,
        score: str = "mean",
        false_alarm_rate: float = 0.05,
        family_names: Sequence[str] | None = None,
    ):
        self.traces = TraceEvaluator(score, false_alarm_rate, family_names)
        self.model = model
        self.vocabulary = vocabulary
        self.sample_prompt = sample_prompt
        self.sample_tokens = sample_tokens
        self.sample_temperature = sample_temperature
        self.sample_top_k = sample_top_k
        self.sample_seed = sample_seed

    def required_features(self) -> tuple[str, ...]:
        return ("tokens", "targets", "token_mask")

    def prepare(self, train: Arrays, eval: Arrays, facts: RunFacts) -> Prepared:  # noqa: A002
        """On trace data, the context is the eval split's `TraceTable` (which trace and group each window
        belongs to); the names leave the batches. Text needs no context."""
        del facts
        return Prepared(*traces.prepare(train, eval))

    def init_state(
        self, key: jax.Array, tx: optax.GradientTransformation, example_batch: Batch, context: Any = None
    ) -> TrainState:
        """Initialises parameters from `key` for windows shaped like `example_batch["tokens"]`."""
        tokens = jnp.zeros((1, example_batch["tokens"].shape[-1]), jnp.int32)
        variables = self.model.init({"params": key}, tokens, train=False)
        return TrainState.create(apply_fn=self.model.apply, params=variables["params"], tx=tx)

    def logits(self, params, tokens: jax.Array, *, train: bool, keys: jax.Array | None = None) -> jax.Array:
        """Model logits [B, T, V] float32; in training, dropout draws from keys [B], one stream per example."""
        return self.model.apply({"params": params}, tokens, train=train, example_keys=keys)

    @staticmethod
    def _weights(batch: Batch) -> jax.Array:
        """float32 [B, T]: 1 where a position counts (token_mask, and not a padded example)."""
        weights = batch["token_mask"].astype(jnp.float32)
        if "mask" in batch:
            weights = weights * batch["mask"].astype(jnp.float32)[:, None]
        return weights

    def train_step(
        self, state: TrainState, batch: Batch, key: jax.Array, *, context: Any = None, axis_name: str | None = None
    ) -> tuple[TrainState, Metrics]:
        """One update on the mean next-token cross-entropy over the global batch's valid positions
        (`jaxdl.tasks.cross_entropy.cross_entropy_update`)."""
        keys = example_keys(jax.random.fold_in(key, state.step), batch["index"])
        return cross_entropy_update(
            state, lambda params: self.logits(params, batch["tokens"], train=True, keys=keys),
            batch["targets"], self._weights(batch), axis_name,
        )

    #: Distances from the last position (in tokens) whose gradient norms `diagnostics` logs.
    diagnostic_distances: tuple[int, ...] = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500)

    def diagnostics(
        self, state: TrainState, batch: Batch, key: jax.Array, *, context: Any = None, axis_name: str | None = None
    ) -> Metrics:
        """Gradient diagnostics of this step's batch before its update; evaluation-mode forward (no dropout).

        Returns flat float32 scalars (see `jaxdl.training.diagnostics`):
          diag/grad_norm/<module>: norm of each module's gradient of the mean
            next-token NLL over the batch's valid positions (the training loss).
          diag/time_grad_norm/d<k>: norm of the gradient of the last
            position's mean NLL with respect to the token embedding k positions
            earlier, averaged over the examples (and devices); vanishing
            gradients make it fall geometrically with k (Pascanu et al. 2013).

        Raises:
          ValueError: the model gives no next-token logits [B, T, V] (a classifier).
        """
        del key
        weights = self._weights(batch)
        count = jnp.maximum(psum(weights.sum(), axis_name), 1.0)

        def loss_fn(params):
            logits = self.logits(params, batch["tokens"], train=False)
            if logits.ndim != 3:
                raise ValueError(f"LanguageModelTask.diagnostics needs next-token logits [B, T, V]; the model gives "
                                 f"{logits.shape}.")
            return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"]) * weights) / count

        grads = psum(jax.grad(loss_fn)(state.params), axis_name)
        last = weights[:, -1]  # [B]
        last_count = jnp.maximum(psum(last.sum(), axis_name), 1.0)

        def last_loss(delta):
            with diagnostics.perturb_embedding(delta):
                logits = self.model.apply({"params": state.params}, batch["tokens"], train=False)  # [B, T, V]
            nll = optax.softmax_cross_entropy_with_integer_labels(logits[:, -1], batch["targets"][:, -1])  # [B]
            return jnp.sum(nll * last) / last_count

        shape = diagnostics.embedding_shape(state.params, batch["tokens"].shape)
        time_norms = pmean(diagnostics.time_step_grad_norms(last_loss, shape), axis_name)  # [T]
        return diagnostics.summarize(grads, time_norms=time_norms, distances=self.diagnostic_distances)

    def eval_step(
        self, state: TrainState, batch: Batch, key: jax.Array, *, context: TraceTable | None = None,
        axis_name: str | None = None,
    ) -> Metrics:
        """Sums over the batch's valid positions: `nll_sum` (nats), `correct_sum` and `count`.

        On a trace split only held-out normal windows enter these sums, and
        `window_nll_sum`, `window_count` [W] hold every window's totals (for
        the anomaly scores). Deterministic: `key` is unused.
        """
        del key
        logits = self.logits(state.params, batch["tokens"], train=False)
        weights = self._weights(batch)
        counted = weights if "group" not in batch else weights * (batch["group"] == HOLDOUT)[:, None]
        sums = cross_entropy_sums(logits, batch["targets"], counted)
        if context is not None:
            nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])  # [B, T]
            sums.update(window_sums(context, batch, jnp.sum(nll * weights, 1), weights.sum(1)))
        return psum(sums, axis_name)

    def summarize_eval(self, totals: Mapping[str, np.ndarray], context: TraceTable | None = None) -> dict[str, float]:
        """eval/loss (nats per token), bpc (bits per token), perplexity, accuracy; anomaly metrics on trace data.

        Raises:
          ValueError: no position was counted (e.g. no held-out normal trace in a truncated eval split).
        """
        return {**cross_entropy_metrics(totals), **self.traces.summarize(totals, context)}

    def write_artifacts(
        self, state: TrainState, epoch: int, run_dir: pathlib.Path, prepared: Prepared, totals: Mapping[str, np.ndarray]
    ) -> None:
        """Text: `samples/step_NNNNNN.txt`. Traces: `roc.png`, `scores.csv`, `anomaly.json` of this evaluation."""
        del epoch
        step = int(state.step)
        if self.vocabulary is not None and self.sample_tokens > 0:
            prompt = encode_text(self.sample_prompt, self.vocabulary)[None]
            out = sampling.generate(self.model, state.params, prompt, self.sample_tokens,
                                    key=jax.random.key(self.sample_seed), temperature=self.sample_temperature,
                                    top_k=self.sample_top_k)
            path = pathlib.Path(run_dir) / "samples" / f"step_{step:06d}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(decode_text(out[0], self.vocabulary))
        self.traces.write_report(pathlib.Path(run_dir), step, totals, prepared.context)
