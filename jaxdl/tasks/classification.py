"""Classification objective: softmax cross-entropy, accuracy, per-class accuracy.

Works with any model of the model contract (`jaxdl.models.contract`) that
maps inputs [B, ...] to logits [B, K]; images or vectors. Batch norm and
dropout are handled as the contract has them:

* batch norm: the model's `batch_stats` collection lives in
  `TrainState.batch_stats`; training updates the running averages
  (`mutable=["batch_stats"]`) and evaluation uses them. In a mapped training
  step the model is cloned with the step's `axis_name`, so its batch
  statistics are those of the global batch; the updated running averages are
  `pmean`ed so the device copies agree.
* dropout: the model receives one PRNG stream per example (`example_keys`),
  so a step draws the same masks on 1 or N devices.

Units: `loss` is the cross-entropy in nats per example (mean over the global
batch), `accuracy` a fraction in [0, 1]. With `label_smoothing` the training
loss is the cross-entropy against smoothed targets (Szegedy et al. 2016,
arXiv:1512.00567); evaluation always reports the plain cross-entropy.

Test-time augmentation (`tta_level`; `jaxdl.evaluators.tta`): per-epoch
evaluation stays un-augmented; the final evaluation adds `eval/tta_accuracy`.

Data: batches hold the input under `input_key` (uint8 images in 0..255 are
scaled to [0, 1]; float arrays are used as they are), integer labels in
0..K-1 under `label_key`, `index` int32 [B] and, for evaluation, `mask` bool [B].
"""

from __future__ import annotations

import functools
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdl.data.augment import Augmentation, normalize
from jaxdl.data.augment import augment as augment_images
from jaxdl.evaluators import tta
from jaxdl.tasks.base import Batch, Metrics, Prepared, Task
from jaxdl.tasks.supervised import apply_model, init_variables, model_inputs
from jaxdl.training import diagnostics
from jaxdl.training.parallel import example_keys, pmean, psum
from jaxdl.training.state import TrainState


class ClassificationTask(Task):
    """Trains a classifier by minimising softmax cross-entropy.

    Args:
      model: module mapping [B, ...] inputs to [B, K] logits.
      num_classes: K.
      input_key: batch key of the input ("image" or "features").
      label_key: batch key of the integer labels.
      augment: training-time image augmentation (`jaxdl.data.augment.Augmentation`:
        crop_pad, crop_mode, flip, cutout_size; a mapping of those is accepted
        too), drawn on device from one stream per example and step. None: none.
      normalize_mean, normalize_std: per-channel statistics, in [0, 1] pixel
        units, subtracted and divided after augmentation (train and eval).
      class_names: names for the confusion-matrix picture (default: 0..K-1).
      label_smoothing: training targets (1 - a) * one_hot + a / K (0: none).
      tta_level: test-time augmentation of the final evaluation (0 none,
        1 mirror, 2 mirror and translate; `jaxdl.evaluators.tta`).
    """

    default_metric = "eval/accuracy"
    default_mode = "max"
    progress_metric = "loss"
    progress_unit = "cross-entropy (nats per example)"

    def __init__(
        self,
        model: nn.Module,
        *,
        num_classes: int = 10,
        input_key: str = "image",
        label_key: str = "label",
        augment: Augmentation = Augmentation(),
        normalize_mean: Sequence[float] | None = None,
        normalize_std: Sequence[float] | None = None,
        class_names: Sequence[str] | None = None,
        label_smoothing: float = 0.0,
        tta_level: int = 0,
    ):
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"task.label_smoothing={label_smoothing} must be in [0, 1).")
        tta.check_level(tta_level)
        if num_classes < 2:
            raise ValueError(f"task.num_classes={num_classes} must be at least 2.")
        if (normalize_mean is None) != (normalize_std is None):
            raise ValueError("Set both task.normalize_mean and task.normalize_std, or neither.")
        self.model = model
        self.num_classes = num_classes
        self.input_key = input_key
        self.label_key = label_key
        if isinstance(augment, Mapping):
            augment = Augmentation(**augment)
        self.augment = (augment or Augmentation()).enabled()  # keyword arguments of the enabled transforms
        self.normalize_mean = None if normalize_mean is None else tuple(normalize_mean)
        self.normalize_std = None if normalize_std is None else tuple(normalize_std)
        self.class_names = tuple(class_names) if class_names else tuple(str(k) for k in range(num_classes))
        self.label_smoothing = label_smoothing
        self.tta_level = tta_level

    def inputs(self, batch: Batch, key: jax.Array | None = None) -> jax.Array:
        """Float model inputs of a batch: scaled, augmented (when `key` is given, i.e. training), normalised."""
        x = model_inputs(batch, self.input_key)
        if key is not None and self.augment:
            x = augment_images(example_keys(key, batch["index"]), x, **self.augment)
        if self.normalize_mean is not None:
            x = normalize(x, self.normalize_mean, self.normalize_std)
        return x

    def required_features(self) -> tuple[str, ...]:
        return (self.input_key, self.label_key)

    def init_state(
        self, key: jax.Array, tx: optax.GradientTransformation, example_batch: Batch, context: Any = None
    ) -> TrainState:
        """Initialises parameters (and batch statistics) for inputs shaped like `example_batch`."""
        x = model_inputs({self.input_key: jnp.asarray(example_batch[self.input_key][:1])}, self.input_key)
        params, batch_stats = init_variables(self.model, key, x)
        logits, _ = apply_model(self.model, params, batch_stats, x, train=False)
        if logits.shape[-1] != self.num_classes:
            raise ValueError(
                f"The model gives {logits.shape[-1]} outputs but task.num_classes={self.num_classes}; "
                f"set model.num_outputs={self.num_classes}."
            )
        return TrainState.create(apply_fn=self.model.apply, params=params, tx=tx, batch_stats=batch_stats)

    def loss_fn(self, params, batch_stats, batch: Batch, key: jax.Array, *, axis_name: str | None = None):
        """Mean cross-entropy over the batch in training mode.

        Returns:
          (loss, (per-example loss [B], logits [B, K], updated batch_stats)).
        """
        x = self.inputs(batch, jax.random.fold_in(key, 2))
        keys = example_keys(jax.random.fold_in(key, 0), batch["index"])
        logits, batch_stats = apply_model(
            self.model, params, batch_stats, x, train=True, keys=keys, axis_name=axis_name
        )
        loss = self.train_loss(logits, batch[self.label_key])  # [B]
        return loss.mean(), (loss, logits, batch_stats)

    def train_loss(self, logits: jax.Array, labels: jax.Array) -> jax.Array:
        """Per-example training cross-entropy [B] (nats) of logits [B, K], label-smoothed when set."""
        if not self.label_smoothing:
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        targets = optax.smooth_labels(jax.nn.one_hot(labels, self.num_classes), self.label_smoothing)
        return optax.softmax_cross_entropy(logits, targets)

    def train_step(
        self, state: TrainState, batch: Batch, key: jax.Array, *, context: Any = None, axis_name: str | None = None
    ) -> tuple[TrainState, Metrics]:
        """One update on the mean cross-entropy of the global batch.

        Random streams (folded from `key` and the step): per-example dropout and augmentation.
        """
        step_key = jax.random.fold_in(key, state.step)
        grad_fn = jax.value_and_grad(self.loss_fn, has_aux=True)
        (_, (loss, logits, batch_stats)), grads = grad_fn(
            state.params, state.batch_stats, batch, step_key, axis_name=axis_name
        )
        grads = pmean(grads, axis_name)
        correct = (jnp.argmax(logits, -1) == batch[self.label_key]).astype(jnp.float32)
        metrics = pmean({"loss": loss.mean(), "accuracy": correct.mean()}, axis_name)
        metrics["grad_norm"] = optax.tree.norm(grads)
        return state.apply_gradients(grads=grads, batch_stats=batch_stats), metrics

    def diagnostics(
        self, state: TrainState, batch: Batch, key: jax.Array, *, context: Any = None, axis_name: str | None = None
    ) -> Metrics:
        """Per-layer gradient norms and dead-unit fractions on this step's batch, before its update.

        The gradients are the ones `train_step` applies (same random streams);
        the activations come from a second training-mode forward pass with the
        "intermediates" collection mutable (filled by models that `sow` their
        activations, e.g. `MLP`). Returns flat "diag/..." float32 scalars (see
        `jaxdl.training.diagnostics`); nothing in `state` changes.
        """
        step_key = jax.random.fold_in(key, state.step)
        grads, _ = jax.grad(self.loss_fn, has_aux=True)(
            state.params, state.batch_stats, batch, step_key, axis_name=axis_name
        )
        grads = pmean(grads, axis_name)
        model = self.model if axis_name is None else self.model.clone(axis_name=axis_name)
        variables = {"params": state.params}
        if state.batch_stats is not None:
            variables["batch_stats"] = state.batch_stats
        keys = example_keys(jax.random.fold_in(step_key, 0), batch["index"])
        x = self.inputs(batch, jax.random.fold_in(step_key, 2))
        _, collections = model.apply(
            variables, x, train=True, example_keys=keys, mutable=["intermediates", "batch_stats"]
        )
        return diagnostics.summarize(grads, collections.get("intermediates"), axis_name=axis_name)

    def logits(self, state: TrainState, x: jax.Array) -> jax.Array:
        """Evaluation-mode logits [B, K] of float inputs `x` [B, ...] (deterministic)."""
        out, _ = apply_model(self.model, state.params, state.batch_stats, x, train=False)
        return out

    def tta_eval_step(
        self, state: TrainState, batch: Batch, key: jax.Array, *, context: Any = None, axis_name: str | None = None
    ) -> Metrics:
        """`correct_sum` and `count` of the `tta_level` test-time-augmented predictions (sums over valid examples)."""
        del key
        logits = tta.tta_logits(functools.partial(self.logits, state), self.inputs(batch), self.tta_level)
        return tta.correct_sums(logits, batch[self.label_key], batch["mask"], axis_name)

    def eval_step(
        self, state: TrainState, batch: Batch, key: jax.Array, *, context: Any = None, axis_name: str | None = None
    ) -> Metrics:
        """Sums over valid examples: cross-entropy, correct predictions and the confusion matrix [K, K]
        (rows true class, columns predicted). Deterministic; `key` is unused."""
        del key
        logits = self.logits(state, self.inputs(batch))
        labels = batch[self.label_key]
        mask = batch["mask"].astype(jnp.float32)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        predicted = jnp.argmax(logits, -1)
        onehot_true = jax.nn.one_hot(labels, self.num_classes) * mask[:, None]  # [B, K]
        onehot_pred = jax.nn.one_hot(predicted, self.num_classes)
        sums = {
            "loss_sum": jnp.sum(loss * mask),
            "accuracy_sum": jnp.sum((predicted == labels) * mask),
            "count": mask.sum(),
            "confusion": onehot_true.T @ onehot_pred,  # [K, K]
        }
        return psum(sums, axis_name)

    def summarize_eval(self, totals: Mapping[str, np.ndarray], context: Any = None) -> dict[str, float]:
        """`loss` (nats per example), `accuracy` and `error` (fractions)."""
        metrics = super().summarize_eval(totals, context)
        metrics["error"] = 1.0 - metrics["accuracy"]
        return metrics

    def final_evaluation(self, evaluate, state: TrainState, prepared: Prepared) -> dict[str, float]:
        """Per-class accuracy (recall) of the final state: `eval/class_K_accuracy` and the worst class's."""
        confusion = np.asarray(evaluate(self.eval_step)["confusion"], np.float64)
        per_class = np.diag(confusion) / np.maximum(confusion.sum(1), 1.0)
        metrics = {f"eval/class_{k}_accuracy": float(a) for k, a in enumerate(per_class)}
        metrics["eval/worst_class_accuracy"] = float(per_class.min())
        if self.tta_level:
            metrics["eval/tta_accuracy"] = tta.accuracy(evaluate(self.tta_eval_step))
        return metrics

    def write_artifacts(
        self, state: TrainState, epoch: int, run_dir: pathlib.Path, prepared: Prepared, totals: Mapping[str, np.ndarray]
    ) -> None:
        """Writes `confusion_matrix.png`: the confusion matrix of the evaluation just made (its summed `confusion`)."""
        from jaxdl.viz.confusion import plot_confusion

        if "confusion" in totals:
            confusion = np.rint(np.asarray(totals["confusion"])).astype(np.int64)
            plot_confusion(confusion, self.class_names, run_dir / "confusion_matrix.png", title=f"confusion after epoch {epoch}")
