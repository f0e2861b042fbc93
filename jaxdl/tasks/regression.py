"""Regression objective: mean squared error on standardized targets; RMSE and R² in original units.

Standardization (zero mean, unit variance per feature and per target) is
fitted on the training split only, in `prepare`, and applied to
both splits; the model is trained on standardized targets and every reported
error is converted back to the target's original units. The final evaluation
fits an ordinary least-squares linear regression (scikit-learn) on the same
training split, so the network is always reported beside a linear baseline.

Metrics: `loss` is the mean squared error in standardized units (training);
`rmse` and `mae` are in the target's units; `r2` is the coefficient of
determination 1 - SSE / SST over the evaluation split (SST about the
evaluation split's own mean, as scikit-learn's `r2_score`).

Data: batches hold float features [B, F] under `input_key`, float targets [B]
or [B, T] under `target_key`, `index` int32 [B] and, for evaluation, `mask`
bool [B]. The model is any `model(x, *, train)` giving [B, T] predictions
(batch norm and per-example dropout are handled as the model contract has
them, `jaxdl.tasks.supervised`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdl.tasks.base import Arrays, Batch, Metrics, Prepared, RunFacts, Task
from jaxdl.tasks.supervised import apply_model, init_variables
from jaxdl.training.parallel import example_keys, pmean, psum
from jaxdl.training.state import TrainState


def _as_matrix(y: np.ndarray) -> np.ndarray:
    return y.reshape(len(y), -1)


class Standardization(NamedTuple):
    """Per-feature and per-target mean and standard deviation of the training split (x_* None: features as given)."""

    x_mean: np.ndarray | None
    x_std: np.ndarray | None
    y_mean: np.ndarray
    y_std: np.ndarray


class RegressionContext(NamedTuple):
    """What `RegressionTask.prepare` fits: the standardization, and both splits in original units
    ((features float64 [N, F], targets float64 [N, T])) for the least-squares baseline."""

    stats: Standardization
    raw_train: tuple[np.ndarray, np.ndarray]
    raw_eval: tuple[np.ndarray, np.ndarray]


class RegressionTask(Task):
    """Trains a regressor by minimising mean squared error.

    Args:
      model: module mapping [B, F] features to [B, T] predictions.
      input_key, target_key: batch keys of the features and the targets.
      standardize: fit mean/std of features and targets on the training split
        and standardize both splits with them.
      linear_baseline: fit and report ordinary least squares in the final evaluation.
    """

    default_metric = "eval/rmse"
    default_mode = "min"
    progress_metric = "loss"
    progress_unit = "mean squared error (standardized targets)"
    streams = False  # prepare() fits the standardization on the whole training split

    def __init__(
        self,
        model: nn.Module,
        *,
        input_key: str = "features",
        target_key: str = "target",
        standardize: bool = True,
        linear_baseline: bool = True,
    ):
        self.model = model
        self.input_key = input_key
        self.target_key = target_key
        self.standardize = standardize
        self.linear_baseline = linear_baseline

    def required_features(self) -> tuple[str, ...]:
        return (self.input_key, self.target_key)

    def prepare(self, train: Arrays, eval: Arrays, facts: RunFacts) -> Prepared:  # noqa: A002
        """Fits the standardization on the training split and applies it to both splits."""
        del facts
        x = np.asarray(train[self.input_key], np.float64)
        y = _as_matrix(np.asarray(train[self.target_key], np.float64))
        if self.standardize:
            stats = Standardization(
                x.mean(0), np.where(x.std(0) > 0, x.std(0), 1.0),  # a constant feature stays 0 after centring
                y.mean(0), np.where(y.std(0) > 0, y.std(0), 1.0),
            )
        else:
            stats = Standardization(None, None, np.zeros(1), np.ones(1))
        raw_eval = (np.asarray(eval[self.input_key], np.float64), _as_matrix(np.asarray(eval[self.target_key], np.float64)))
        context = RegressionContext(stats, (x, y), raw_eval)
        return Prepared(self._transform(train, stats), self._transform(eval, stats), context)

    def _transform(self, arrays: Mapping[str, np.ndarray], stats: Standardization) -> dict[str, np.ndarray]:
        x = np.asarray(arrays[self.input_key], np.float64)
        y = np.asarray(arrays[self.target_key], np.float64)
        if stats.x_mean is not None:
            x = (x - stats.x_mean) / stats.x_std
            y = ((_as_matrix(y) - stats.y_mean) / stats.y_std).reshape(y.shape)
        return {**arrays, self.input_key: x.astype(np.float32), self.target_key: y.astype(np.float32)}

    def _targets(self, batch: Batch) -> jax.Array:
        y = batch[self.target_key].astype(jnp.float32)
        return y.reshape(y.shape[0], -1)  # [B, T]

    def init_state(
        self, key: jax.Array, tx: optax.GradientTransformation, example_batch: Batch, context: Any = None
    ) -> TrainState:
        """Initialises parameters for features shaped like `example_batch`.

        Raises:
          ValueError: the model's output width differs from the target width T.
        """
        x = jnp.asarray(example_batch[self.input_key][:1], jnp.float32)
        params, batch_stats = init_variables(self.model, key, x)
        out, _ = apply_model(self.model, params, batch_stats, x, train=False)
        width = self._targets({self.target_key: jnp.asarray(example_batch[self.target_key][:1])}).shape[-1]
        if out.shape[-1] != width:
            raise ValueError(
                f"The model gives {out.shape[-1]} outputs for {width} target(s); set model.num_outputs={width}."
            )
        return TrainState.create(apply_fn=self.model.apply, params=params, tx=tx, batch_stats=batch_stats)

    def loss_fn(self, params, batch_stats, batch: Batch, key: jax.Array, *, axis_name: str | None = None):
        """Mean squared error in standardized units; returns (loss, (per-example error [B], batch_stats))."""
        x = batch[self.input_key].astype(jnp.float32)
        keys = example_keys(jax.random.fold_in(key, 0), batch["index"])
        pred, batch_stats = apply_model(self.model, params, batch_stats, x, train=True, keys=keys, axis_name=axis_name)
        sq = jnp.square(pred - self._targets(batch)).mean(-1)  # [B]
        return sq.mean(), (sq, batch_stats)

    def train_step(
        self, state: TrainState, batch: Batch, key: jax.Array, *, context: Any = None, axis_name: str | None = None
    ) -> tuple[TrainState, Metrics]:
        """One update on the mean squared error of the global batch (per-example dropout streams)."""
        step_key = jax.random.fold_in(key, state.step)
        (loss, (_, batch_stats)), grads = jax.value_and_grad(self.loss_fn, has_aux=True)(
            state.params, state.batch_stats, batch, step_key, axis_name=axis_name
        )
        grads = pmean(grads, axis_name)
        metrics = pmean({"loss": loss}, axis_name)
        metrics["grad_norm"] = optax.tree.norm(grads)
        return state.apply_gradients(grads=grads, batch_stats=batch_stats), metrics

    def predict(self, state: TrainState, x: jax.Array, stats: Standardization) -> jax.Array:
        """Predictions [B, T] in the target's original units for standardized features `x` [B, F]."""
        pred, _ = apply_model(self.model, state.params, state.batch_stats, x.astype(jnp.float32), train=False)
        return pred * jnp.asarray(stats.y_std, jnp.float32) + jnp.asarray(stats.y_mean, jnp.float32)

    def eval_step(
        self, state: TrainState, batch: Batch, key: jax.Array, *, context: RegressionContext, axis_name: str | None = None
    ) -> Metrics:
        """Sums over valid examples, in original units: squared and absolute errors, and the target's
        first two moments (about the training mean, which keeps float32 sums accurate). Deterministic."""
        del key
        scale = jnp.asarray(context.stats.y_std, jnp.float32)
        x = batch[self.input_key].astype(jnp.float32)
        pred, _ = apply_model(self.model, state.params, state.batch_stats, x, train=False)
        target = self._targets(batch)  # standardized
        err = (pred - target) * scale  # [B, T], original units
        centred = target * scale  # target minus the training mean, original units
        mask = batch["mask"].astype(jnp.float32)[:, None]
        sums = {
            "sse": jnp.sum(jnp.square(err) * mask, 0),  # [T]
            "sae": jnp.sum(jnp.abs(err) * mask, 0),
            "y": jnp.sum(centred * mask, 0),
            "y_sq": jnp.sum(jnp.square(centred) * mask, 0),
            "count": mask.sum(),
        }
        return psum(sums, axis_name)

    def summarize_eval(self, totals: Mapping[str, np.ndarray], context: Any = None) -> dict[str, float]:
        """`rmse` and `mae` (target units, averaged over targets), `r2` (summed SSE over summed SST)."""
        n = float(totals["count"])
        sse = np.asarray(totals["sse"], np.float64)
        sst = np.asarray(totals["y_sq"], np.float64) - np.square(np.asarray(totals["y"], np.float64)) / n
        return {
            "rmse": math.sqrt(float(sse.sum()) / (n * sse.size)),
            "mae": float(np.asarray(totals["sae"]).sum()) / (n * sse.size),
            "r2": 1.0 - float(sse.sum()) / float(sst.sum()),
            "mse": float(sse.sum()) / (n * sse.size),
        }

    def final_evaluation(self, evaluate, state: TrainState, prepared: Prepared) -> dict[str, float]:
        """Ordinary least squares on the same training split: `eval/linear_rmse`, `eval/linear_r2`, and
        `eval/mean_rmse` (predicting the training mean)."""
        del evaluate, state
        if not self.linear_baseline:
            return {}
        from sklearn.linear_model import LinearRegression
        from sklearn.metrics import mean_squared_error, r2_score

        (x_train, y_train), (x_eval, y_eval) = prepared.context.raw_train, prepared.context.raw_eval
        pred = LinearRegression().fit(x_train, y_train).predict(x_eval)
        mean_pred = np.broadcast_to(y_train.mean(0), y_eval.shape)
        return {
            "eval/linear_rmse": math.sqrt(mean_squared_error(y_eval, pred)),
            "eval/linear_r2": float(r2_score(y_eval, pred, multioutput="variance_weighted")),
            "eval/mean_rmse": math.sqrt(mean_squared_error(y_eval, mean_pred)),
        }
