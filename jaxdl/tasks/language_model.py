"""Next-token language modelling, text generation, and sequence anomaly scores.

The objective is the cross-entropy of the next token, in nats per token,
averaged over the valid positions of the global batch (a position counts when
`token_mask` is True and, in evaluation, its example is not padding). Any
causal model mapping `tokens` int [B, T] to logits [B, T, V] fits: the
Transformer (`jaxdl.models.transformer`) and the recurrent nets
(`jaxdl.models.rnn`).

Two uses:

* Text (tiny Shakespeare, characters as tokens): `eval/loss` in nats per
  character and `eval/bpc` in bits per character; samples of generated text
  are written at each evaluation (`samples/step_NNNNNN.txt`). `generate`
  samples with a key/value cache (Transformer, `decode=True`) or by
  recomputing the window (any model).
* System-call traces (ADFA-LD): trained on normal traces only, a trace's
  anomaly score is its mean negative log-likelihood per call in nats (Kim et
  al. 2016, arXiv:1611.01726), or the variant "max_window": the largest mean
  NLL of any of its evaluation windows. The eval split (see
  `jaxdl.data.sequences.trace_examples`) holds held-out normal traces (group
  HOLDOUT: they alone give `eval/loss`, which drives early stopping and
  checkpoint ranking, and calibrate the alarm threshold) and the test traces
  (normal and attack), on which every evaluation reports ROC AUC and the
  rest of `jaxdl.metrics.anomaly.evaluate`; `roc.png`, `scores.csv` and
  `anomaly.json` (threshold, step) are rewritten at each evaluation.

Batches: `tokens`, `targets` int32 [B, T], `token_mask` bool [B, T], `index`
int32 [B] (example index, -1 for padding), eval batches also `mask` bool [B]
and, for traces, `group` int32 [B]. Randomness: dropout only, one stream per
example folded from the step and its index (`example_keys`), so that 1 and N
devices draw the same masks; evaluation is deterministic.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdl.data.sequences import ATTACK, HOLDOUT, TEST_NORMAL, decode_text, encode_text, trace_windows
from jaxdl.metrics import anomaly
from jaxdl.tasks.base import Arrays, Batch, Metrics, Prepared, RunFacts, Task
from jaxdl.training import diagnostics
from jaxdl.training.parallel import example_keys, pmean, psum
from jaxdl.training.state import TrainState

SCORES = ("mean", "max_window")


class TraceTable(NamedTuple):
    """Host-side description of an anomaly-evaluation split of windows.

    Attributes:
      window_trace: int [W] trace of each window.
      group: int [K] HOLDOUT, TEST_NORMAL or ATTACK per trace.
      family: int [K] attack family id per trace (0 = normal).
      names: [K] trace names ("" when unknown).
    """

    window_trace: np.ndarray
    group: np.ndarray
    family: np.ndarray
    names: np.ndarray

    @classmethod
    def from_windows(cls, arrays: Mapping[str, np.ndarray], names: np.ndarray | None) -> TraceTable:
        trace = np.asarray(arrays["trace"])
        first = np.unique(trace, return_index=True)[1]  # first window of each trace
        if not np.array_equal(np.unique(trace), np.arange(len(first))):
            raise ValueError("Eval windows must number their traces 0..K-1 (a limit may not cut a trace id out).")
        family = np.asarray(arrays["family"])[first] if "family" in arrays else np.zeros(len(first), int)
        names = np.asarray(names)[first] if names is not None else np.full(len(first), "", object)
        return cls(trace, np.asarray(arrays["group"])[first], family, names)


def trace_scores(window_nll_sum: np.ndarray, window_count: np.ndarray, window_trace: np.ndarray) -> dict[str, np.ndarray]:
    """Per-trace anomaly scores from per-window NLL sums.

    Args:
      window_nll_sum: [W] summed NLL (nats) of each window's scored calls.
      window_count: [W] scored calls per window.
      window_trace: int [W] trace of each window, 0..K-1.

    Returns:
      "mean": [K] NLL per call over the whole trace; "max_window": [K] the
      largest per-call NLL of any window of the trace.
    """
    num = int(window_trace.max()) + 1
    total = np.bincount(window_trace, weights=window_nll_sum, minlength=num)
    count = np.bincount(window_trace, weights=window_count, minlength=num)
    per_window = np.where(window_count > 0, window_nll_sum / np.maximum(window_count, 1), -np.inf)
    worst = np.full(num, -np.inf)
    np.maximum.at(worst, window_trace, per_window)
    return {"mean": total / np.maximum(count, 1), "max_window": worst}


def sample_logits(key: jax.Array, logits: jax.Array, temperature: float, top_k: int | None) -> jax.Array:
    """Draws token ids from logits [B, V]: argmax when temperature == 0, else softmax(logits / temperature)
    restricted to the `top_k` largest (None: all)."""
    if temperature == 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]  # [B, 1]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)



def cross_entropy_update(
    state: TrainState, logits_fn, labels: jax.Array, weights: jax.Array, axis_name: str | None
) -> tuple[TrainState, Metrics]:
    """One update on the weighted mean cross-entropy over the global batch.

    Each device divides its summed loss by the global weight total and the
    gradients are summed over `axis_name`, so the update is that of the
    global mean however the batch is split.

    Args:
      logits_fn: params -> float logits [..., K].
      labels: int [...] class (or next-token) ids.
      weights: float [...] per-position weights (0 leaves a position out).

    Returns:
      the updated state and float32 metrics: "loss" (nats), "accuracy", "grad_norm".
    """
    count = jnp.maximum(psum(weights.sum(), axis_name), 1.0)

    def loss_fn(params):
        logits = logits_fn(params)
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, labels)  # [...] nats
        return jnp.sum(nll * weights) / count, logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grads = psum(grads, axis_name)
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    metrics = {
        "loss": psum(loss, axis_name),
        "accuracy": psum(jnp.sum(correct * weights), axis_name) / count,
        "grad_norm": optax.tree.norm(grads),
    }
    return state.apply_gradients(grads=grads), metrics

class LanguageModelTask(Task):
    """Trains a causal model by next-token cross-entropy; samples text; scores traces.

    Args:
      model: a module with `__call__(tokens, *, train)` -> logits [B, T, V].
      vocabulary: text datasets: the token table (one character per id), used
        to write samples; None for non-text tokens (no samples).
      sample_prompt: text that starts every sample.
      sample_tokens: characters generated per sample (0: no samples).
      sample_temperature, sample_top_k: sampling settings (temperature 0 is greedy).
      sample_seed: seeds the samples (the same draws at every evaluation).
      score: the anomaly score whose threshold and per-family rates are
        reported: "mean" (NLL per call of the whole trace) or "max_window".
      false_alarm_rate: target false-alarm rate of the threshold calibrated on
        held-out normal traces.
      family_names: attack family id -> name, for the per-family metrics.
    """

    default_metric = "eval/loss"
    default_mode = "min"
    progress_metric = "loss"
    progress_unit = "cross-entropy (nats per token)"

    def __init__(
        self,
        model: nn.Module,
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
        if score not in SCORES:
            raise ValueError(f"task.score={score!r}; choose one of {SCORES}.")
        if not 0.0 <= false_alarm_rate < 1.0:
            raise ValueError(f"task.false_alarm_rate={false_alarm_rate} must be in [0, 1).")
        self.model = model
        self.vocabulary = vocabulary
        self.sample_prompt = sample_prompt
        self.sample_tokens = sample_tokens
        self.sample_temperature = sample_temperature
        self.sample_top_k = sample_top_k
        self.sample_seed = sample_seed
        self.score = score
        self.false_alarm_rate = false_alarm_rate
        self.family_names = tuple(family_names) if family_names is not None else None

    def required_features(self) -> tuple[str, ...]:
        return ("tokens", "targets", "token_mask")

    def init_state(
        self, key: jax.Array, tx: optax.GradientTransformation, example_batch: Batch, context: Any = None
    ) -> TrainState:
        """Initialises parameters from `key` for windows shaped like `example_batch["tokens"]`."""
        tokens = jnp.zeros((1, example_batch["tokens"].shape[-1]), jnp.int32)
        variables = self.model.init({"params": key}, tokens, train=False)
        return TrainState.create(apply_fn=self.model.apply, params=variables["params"], tx=tx)

    def logits(self, params, tokens: jax.Array, *, train: bool, keys: jax.Array | None = None) -> jax.Array:
        """Model logits [B, T, V] float32; in training, dropout draws from keys [B], one stream per example."""
        if not train or not getattr(self.model, "dropout_rate", 0.0):
            return self.model.apply({"params": params}, tokens, train=False)

        def one(key, row):
            return self.model.apply({"params": params}, row[None], train=True, rngs={"dropout": key})[0]

        return jax.vmap(one)(keys, tokens)

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
        """One update on the mean next-token cross-entropy over the global batch's valid positions.

        Each device divides its summed loss by the global count of valid
        positions and the gradients are summed, so the update is that of the
        global mean however the batch is split.
        """
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
        """
        del key
        if getattr(self.model, "num_classes", None) is not None:
            raise ValueError("LanguageModelTask.diagnostics needs next-token logits [B, T, V]; this model classifies.")
        weights = self._weights(batch)
        count = jnp.maximum(psum(weights.sum(), axis_name), 1.0)

        def loss_fn(params):
            logits = self.logits(params, batch["tokens"], train=False)
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
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])  # [B, T]
        correct = (jnp.argmax(logits, -1) == batch["targets"]).astype(jnp.float32)
        weights = self._weights(batch)
        counted = weights if "group" not in batch else weights * (batch["group"] == HOLDOUT)[:, None]
        sums = {"nll_sum": jnp.sum(nll * counted), "correct_sum": jnp.sum(correct * counted), "count": counted.sum()}
        if context is not None:
            num = len(context.window_trace)
            slot = jnp.where(batch["mask"], batch["index"], num)  # padding falls outside and is dropped
            sums["window_nll_sum"] = jnp.zeros(num).at[slot].add(jnp.sum(nll * weights, 1), mode="drop")
            sums["window_count"] = jnp.zeros(num).at[slot].add(weights.sum(1), mode="drop")
        return psum(sums, axis_name)

    def prepare(self, train: Arrays, eval: Arrays, facts: RunFacts) -> Prepared:  # noqa: A002
        """On trace data, the context is the eval split's `TraceTable` (which trace and group each window
        belongs to); the names leave the batches. Text needs no context."""
        del facts
        if "trace" not in eval or "group" not in eval:
            return Prepared(train, eval)
        eval = dict(eval)
        names = eval.pop("name", None)
        return Prepared(train, eval, TraceTable.from_windows(eval, names))

    def summarize_eval(self, totals: Mapping[str, np.ndarray], context: TraceTable | None = None) -> dict[str, float]:
        """eval/loss (nats per token), bpc (bits per token), perplexity, accuracy; anomaly metrics on trace data.

        Raises:
          ValueError: no position was counted (e.g. no held-out normal trace in a truncated eval split).
        """
        count = float(totals["count"])
        if count == 0:
            raise ValueError("The eval split has no counted positions (no held-out normal windows?); raise data.eval_limit.")
        loss = float(totals["nll_sum"]) / count
        out = {"loss": loss, "bpc": loss / math.log(2.0), "perplexity": math.exp(min(loss, 700.0)),
               "accuracy": float(totals["correct_sum"]) / count}
        if context is not None and "window_nll_sum" in totals:
            out.update(self.anomaly_metrics(totals, context)[0])
        return out

    def anomaly_metrics(self, totals: Mapping[str, np.ndarray], table: TraceTable) -> tuple[dict[str, float], dict]:
        """Trace scores and `jaxdl.metrics.anomaly.evaluate` on the test traces.

        Returns:
          (metrics, report): report holds "scores" (per-trace arrays by score name) and
          "reports" (`AnomalyReport` by score name, None when a class is missing).
        """
        window_nll_sum, window_count = np.asarray(totals["window_nll_sum"]), np.asarray(totals["window_count"])
        scores = trace_scores(window_nll_sum, window_count, table.window_trace)
        holdout, test = table.group == HOLDOUT, table.group != HOLDOUT
        labels = (table.group == ATTACK).astype(int)
        if not holdout.any() or len(np.unique(labels[test])) < 2:
            return {}, {"scores": scores, "reports": None}  # a truncated split (debug runs) may lack a class
        reports = {
            name: anomaly.evaluate(
                s[test], labels[test], holdout_scores=s[holdout], false_alarm_rate=self.false_alarm_rate,
                families=table.family[test], family_names=self.family_names,
            )
            for name, s in scores.items()
        }
        out = dict(reports[self.score].metrics)
        other = "max_window" if self.score == "mean" else "mean"
        out[f"auc_{other}"] = reports[other].metrics["auc"]
        return out, {"scores": scores, "reports": reports}

    def write_artifacts(
        self, state: TrainState, epoch: int, run_dir: pathlib.Path, prepared: Prepared, totals: Mapping[str, np.ndarray]
    ) -> None:
        """Text: `samples/step_NNNNNN.txt`. Traces: `roc.png`, `scores.csv`, `anomaly.json` of this evaluation."""
        del epoch
        step = int(state.step)
        if self.vocabulary is not None and self.sample_tokens > 0:
            prompt = encode_text(self.sample_prompt, self.vocabulary)[None]
            out = self.generate(state.params, prompt, self.sample_tokens, key=jax.random.key(self.sample_seed),
                                temperature=self.sample_temperature, top_k=self.sample_top_k)
            path = pathlib.Path(run_dir) / "samples" / f"step_{step:06d}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(decode_text(out[0], self.vocabulary))
        if prepared.context is not None and "window_nll_sum" in totals:
            _, report = self.anomaly_metrics(totals, prepared.context)
            self._write_anomaly_files(pathlib.Path(run_dir), step, prepared.context, report)

    def _write_anomaly_files(self, run_dir: pathlib.Path, step: int, table: TraceTable, report: dict) -> None:
        scores, reports = report["scores"], report["reports"]
        threshold = reports[self.score].threshold if reports else None
        with open(run_dir / "scores.csv.tmp", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["name", "group", "family", "score_mean", "score_max_window", "flagged"])
            groups = {HOLDOUT: "holdout_normal", TEST_NORMAL: "test_normal", ATTACK: "attack"}
            for k in range(len(table.group)):
                family = self.family_names[table.family[k]] if self.family_names else int(table.family[k])
                flagged = "" if threshold is None else int(scores[self.score][k] > threshold)
                writer.writerow([table.names[k], groups[int(table.group[k])], family,
                                 f"{scores['mean'][k]:.6f}", f"{scores['max_window'][k]:.6f}", flagged])
        (run_dir / "scores.csv.tmp").replace(run_dir / "scores.csv")
        if not reports:
            return
        anomaly.plot_roc(
            run_dir / "roc.png",
            {f"{name} NLL (AUC {r.metrics['auc']:.3f})": (r.fpr, r.tpr) for name, r in reports.items()},
            title=f"ADFA-LD test traces, step {step}",
            marks={f"threshold ({self.score}, {self.false_alarm_rate:.0%} held-out FA)": (
                reports[self.score].metrics["false_alarm_at_threshold"],
                reports[self.score].metrics["detection_at_threshold"])},
        )
        summary = {"step": step, "score": self.score, "threshold": threshold, "false_alarm_rate": self.false_alarm_rate,
                   "metrics": reports[self.score].metrics}
        (run_dir / "anomaly.json.tmp").write_text(json.dumps(summary, indent=2) + "\n")
        (run_dir / "anomaly.json.tmp").replace(run_dir / "anomaly.json")

    def score_traces(
        self, params, traces: Sequence[np.ndarray], *, seq_len: int, context: int, batch_size: int = 64
    ) -> dict[str, np.ndarray]:
        """Anomaly scores of traces (host-side, one device).

        Args:
          params: model parameters.
          traces: K traces of system-call numbers, each int [L].
          seq_len, context: the evaluation windows of the run (data.seq_len, data.eval_context).
          batch_size: windows per forward pass.

        Returns:
          "mean" and "max_window" float64 [K] (nats per call), as in evaluation.
        """
        windows = trace_windows(traces, seq_len, context)
        count = len(windows["tokens"])
        pad = -count % batch_size
        sums, counts = [], []
        for start in range(0, count + pad, batch_size):
            chunk = {k: windows[k][start : start + batch_size] for k in ("tokens", "targets", "token_mask")}
            valid = len(chunk["tokens"])
            if valid < batch_size:  # one compiled shape: pad the last chunk
                chunk = {k: np.concatenate([v, np.zeros((batch_size - valid, *v.shape[1:]), v.dtype)]) for k, v in chunk.items()}
            s, c = _window_nll(self.model, params, chunk)
            sums.append(np.asarray(s)[:valid])
            counts.append(np.asarray(c)[:valid])
        return trace_scores(np.concatenate(sums), np.concatenate(counts), windows["trace"])

    def generate(
        self,
        params,
        prompt: np.ndarray,
        max_new_tokens: int,
        *,
        key: jax.Array,
        temperature: float = 1.0,
        top_k: int | None = None,
        use_cache: bool | None = None,
    ) -> np.ndarray:
        """Continues `prompt` autoregressively.

        With the cache (default for models with a `decode` field), the prompt is
        fed once and then one token per step; when the cache is full the last
        max_len // 2 tokens are fed again as a fresh context. Without it, every
        step recomputes the model on the last max_len tokens (nanoGPT's
        `generate`). Both agree token for token while prompt + output fit in
        max_len; beyond it their contexts differ (the cached one then sees
        between max_len / 2 and max_len tokens). Token t of the output is drawn
        with `fold_in(key, t)` in both.

        Args:
          params: model parameters.
          prompt: int [B, P] token ids, P >= 1.
          max_new_tokens: tokens to add.
          key: typed PRNG key.
          temperature: 0 for greedy decoding.
          top_k: sample among the k most likely tokens (None: all).
          use_cache: force the cached (True) or recomputing (False) path.

        Returns:
          int32 [B, P + max_new_tokens] numpy array, prompt first.
        """
        prompt = np.asarray(prompt, np.int32)
        if prompt.ndim != 2 or prompt.shape[1] < 1:
            raise ValueError(f"prompt must be int [B, P] with P >= 1, got shape {prompt.shape}.")
        if use_cache is None:
            use_cache = hasattr(self.model, "decode")
        sampling = (float(temperature), None if top_k is None else int(top_k))
        if use_cache:
            return _generate_cached(self.model, params, prompt, max_new_tokens, key, sampling)
        return _generate_recompute(self.model, params, prompt, max_new_tokens, key, sampling)


@functools.partial(jax.jit, static_argnums=0)
def _window_nll(model: nn.Module, params, chunk: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
    """Per-window summed NLL [B] and scored positions [B]."""
    logits = model.apply({"params": params}, chunk["tokens"], train=False)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, chunk["targets"])
    weights = chunk["token_mask"].astype(jnp.float32)
    return jnp.sum(nll * weights, 1), weights.sum(1)


def _max_len(model: nn.Module) -> int:
    max_len = getattr(model, "max_len", None)
    if max_len is None:
        raise ValueError(f"{type(model).__name__} has no max_len; generation needs a context length.")
    return max_len


def _generate_recompute(model, params, prompt: np.ndarray, max_new: int, key: jax.Array, sampling) -> np.ndarray:
    """Every step: the model on the last max_len tokens (a fixed [B, max_len] buffer), logits of the newest."""
    max_len = getattr(model, "max_len", None) or prompt.shape[1] + max_new
    batch, length = prompt.shape
    context = prompt[:, -max_len:]
    buffer = np.zeros((batch, max_len), np.int32)
    buffer[:, : context.shape[1]] = context
    tokens = _recompute_loop(model, sampling, max_new, params, jnp.asarray(buffer), context.shape[1], length, key)
    return np.concatenate([prompt, np.asarray(tokens).T], axis=1)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _recompute_loop(model, sampling: tuple, steps: int, params, buffer, filled, offset, key):
    sample = functools.partial(sample_logits, temperature=sampling[0], top_k=sampling[1])

    def step(carry, t):
        buffer, filled = carry
        logits = model.apply({"params": params}, buffer, train=False)  # [B, S, V]
        last = jax.lax.dynamic_index_in_dim(logits, filled - 1, axis=1, keepdims=False)  # [B, V]
        token = sample(jax.random.fold_in(key, offset + t), last)  # [B]
        full = filled == buffer.shape[1]
        shifted = jnp.where(full, jnp.roll(buffer, -1, axis=1), buffer)
        position = jnp.where(full, buffer.shape[1] - 1, filled)
        buffer = jax.lax.dynamic_update_slice(shifted, token[:, None], (0, position))
        return (buffer, jnp.minimum(filled + 1, buffer.shape[1])), token

    _, tokens = jax.lax.scan(step, (buffer, jnp.asarray(filled, jnp.int32)), jnp.arange(steps))
    return tokens  # [steps, B]


def _generate_cached(model, params, prompt: np.ndarray, max_new: int, key: jax.Array, sampling) -> np.ndarray:
    """Feeds a context into a fresh cache, then one token per step; restarts from the last max_len // 2 tokens when full."""
    max_len = _max_len(model)
    decoder = model.clone(decode=True)
    batch = prompt.shape[0]
    sequence = prompt
    remaining, first = max_new, True
    while remaining > 0:
        context = sequence[:, -(max_len if first else max(max_len // 2, 1)) :]
        steps = min(remaining, max_len - context.shape[1] + 1)  # the last sampled token need not be fed
        new = _cached_segment(decoder, sampling, batch, context.shape[1], steps, params, jnp.asarray(context),
                              sequence.shape[1], key)
        sequence = np.concatenate([sequence, np.asarray(new).T], axis=1)
        remaining -= steps
        first = False
    return sequence


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _cached_segment(decoder, sampling: tuple, batch: int, context_len: int, steps: int, params, context, offset, key):
    """Prefill `context` [B, C], then sample `steps` tokens; token j uses fold_in(key, offset + j)."""
    del context_len  # static: one compiled program per context length
    sample = functools.partial(sample_logits, temperature=sampling[0], top_k=sampling[1])
    max_len = decoder.max_len
    shapes = jax.eval_shape(lambda: decoder.init(jax.random.key(0), jnp.zeros((batch, max_len), jnp.int32), train=False))
    cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes["cache"])
    logits, updated = decoder.apply({"params": params, "cache": cache}, context, train=False, mutable=["cache"])
    first = sample(jax.random.fold_in(key, offset), logits[:, -1])

    def step(carry, j):
        cache, token = carry
        logits, updated = decoder.apply({"params": params, "cache": cache}, token[:, None], train=False,
                                        mutable=["cache"])
        nxt = sample(jax.random.fold_in(key, offset + j), logits[:, -1])
        return (updated["cache"], nxt), nxt

    _, rest = jax.lax.scan(step, (updated["cache"], first), jnp.arange(1, steps))
    return jnp.concatenate([first[None], rest], axis=0)  # [steps, B]
