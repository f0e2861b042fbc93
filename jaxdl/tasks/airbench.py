"""airbench94's training recipe as a classification task (Jordan 2024, arXiv:2404.00498).

Follows `legacy/airbench94.py` of github.com/KellerJordan/cifar10-airbench
(94.01% mean test accuracy, n = 1000, canonical CIFAR-10) with the network of
`jaxdl.models.airbench`:

* whitening: before training, the first conv's filters are set from the patch
  covariance of the first `whiten_images` normalised training images and never
  trained; its bias trains for the first `whiten_bias_epochs` epochs only.
* loss: label-smoothed (0.2) cross-entropy *summed* over the global batch (the
  learning rate is calibrated for the sum).
* optimizer: the configured transformation (SGD, Nesterov momentum 0.85 and
  the triangular schedule in `conf/experiment/cifar10_airbench94.yaml`) gets
  PyTorch-style coupled weight decay per group: `weight_decay` for conv and
  head kernels and the whitening bias; BatchNorm biases take a
  `bias_scaler` times larger step and `weight_decay / bias_scaler` (so the decay
  per step is the same). Frozen: the whitening kernel (and BatchNorm scales,
  which the model leaves out). The wrapping assumes the configured
  transformation is linear in its input, as SGD with momentum is.
* lookahead: every 5 steps an exponential moving average of the parameters
  and BatchNorm statistics moves towards the network with weight
  1 - 0.95^5 (step / total_steps)^3 and the network is reset to it; at the last
  step the network becomes the average (`AirbenchState.ema`).
* augmentation, on device: each training image is mirrored once at random for
  the whole run, and every odd epoch all images are mirrored (alternating
  flip); each step every image is translated by up to `translate` pixels
  (reflect padding, then a random crop).
* evaluation: per epoch without test-time augmentation; the final evaluation
  adds `eval/tta_accuracy` with airbench's level-2 TTA (6 views).

Deviations: the lookahead average starts from the initial parameters after
whitening, as in the script; the data order is jaxdl's (shuffled by seed and
epoch, last partial batch dropped, as the script does).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdl.data.augment import normalize, random_crop
from jaxdl.models.airbench import whitening_kernel
from jaxdl.tasks.base import Arrays, Batch, Metrics, Prepared, RunFacts
from jaxdl.tasks.classification import ClassificationTask
from jaxdl.tasks.supervised import apply_model, init_variables, model_inputs
from jaxdl.training.parallel import example_keys, pmean
from jaxdl.training.state import TrainState

LOOKAHEAD_EVERY = 5  # steps between lookahead updates (the script's constant)


class AirbenchState(TrainState):
    """TrainState plus `ema`: {"params", "batch_stats"}, the lookahead average (same tree as the network's)."""

    ema: Any = None


def param_groups(params: Any) -> Any:
    """Labels each parameter of an `Airbench94` tree: "frozen", "whiten_bias", "norm_bias" or "other"."""
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
    labels = {}
    for path in flat:
        if path == ("whiten", "kernel"):
            labels[path] = "frozen"
        elif path == ("whiten", "bias"):
            labels[path] = "whiten_bias"
        elif path[-1] == "bias" and any(part.startswith("norm") for part in path):
            labels[path] = "norm_bias"
        else:
            labels[path] = "other"
    return flax.traverse_util.unflatten_dict(labels)


def lookahead_decay(step: jax.Array, total_steps: int) -> jax.Array:
    """The script's `alpha_schedule`: weight of the old average, 0.95^5 (step / total_steps)^3."""
    return 0.95**5 * (step.astype(jnp.float32) / total_steps) ** 3


class AirbenchContext(NamedTuple):
    """What `AirbenchTask.prepare` fits and the steps read.

    Attributes:
      batch_size: the global training batch (the loss is summed over it).
      steps_per_epoch: optimizer steps per epoch (the alternating flip and the whitening bias count epochs).
      total_steps: optimizer steps of the run (the lookahead schedule ends there).
      whiten_kernel: float32 [k, k, C, 2 k^2 C] whitening filters of the first conv.
    """

    batch_size: int
    steps_per_epoch: int
    total_steps: int
    whiten_kernel: np.ndarray


class AirbenchTask(ClassificationTask):
    """airbench94's recipe: whitening init, grouped SGD, lookahead, alternating flips, TTA.

    Args (besides `ClassificationTask`'s but `augment`, which this recipe replaces; `normalize_mean`/`normalize_std`
    are required):
      weight_decay: PyTorch SGD `weight_decay` of the kernels and the whitening
        bias (airbench: 0.0153 per 1024 examples relative to lr 11.5 per 1024,
        i.e. 0.0153 * 1024 / 11.5).
      bias_scaler: BatchNorm biases' step is this many times larger (their decay
        this many times smaller).
      whiten_bias_epochs: epochs during which the whitening bias trains.
      whiten_images: first N training images used for the whitening filters.
      whiten_eps: added to the patch covariance's eigenvalues.
      flip: alternating flips; translate: maximum shift, pixels (0: none).
      lookahead: use the lookahead average (False: plain SGD).

    The batch size and the run's length come from the run (`RunFacts`, given to `prepare`).
    """

    streams = False  # the whitening filters are fitted on the training images in `prepare`

    def __init__(
        self,
        model: nn.Module,
        *,
        weight_decay: float = 0.0153 * 1024 / 11.5,
        bias_scaler: float = 64.0,
        whiten_bias_epochs: int = 3,
        whiten_images: int = 5000,
        whiten_eps: float = 5e-4,
        flip: bool = True,
        translate: int = 2,
        lookahead: bool = True,
        label_smoothing: float = 0.2,
        tta_level: int = 2,
        num_classes: int = 10,
        input_key: str = "image",
        label_key: str = "label",
        normalize_mean: Sequence[float] | None = (0.4914, 0.4822, 0.4465),
        normalize_std: Sequence[float] | None = (0.2470, 0.2435, 0.2616),
        class_names: Sequence[str] | None = None,
    ):
        super().__init__(
            model, num_classes=num_classes, input_key=input_key, label_key=label_key,
            normalize_mean=normalize_mean, normalize_std=normalize_std, class_names=class_names,
            label_smoothing=label_smoothing, tta_level=tta_level,
        )
        if self.normalize_mean is None:
            raise ValueError("AirbenchTask needs task.normalize_mean and task.normalize_std (per-channel, [0, 1] units).")
        self.weight_decay = weight_decay
        self.bias_scaler = bias_scaler
        self.whiten_bias_epochs = whiten_bias_epochs
        self.whiten_images = whiten_images
        self.whiten_eps = whiten_eps
        self.flip = flip
        self.translate = translate
        self.lookahead = lookahead

    def prepare(self, train: Arrays, eval: Arrays, facts: RunFacts) -> Prepared:  # noqa: A002
        """Counts the steps of an epoch and computes the whitening filters from the first training images.

        Raises:
          ValueError: fewer training examples than one batch.
        """
        n = len(train[self.label_key])
        if n < facts.batch_size:
            raise ValueError(f"{n} training examples are fewer than one batch of {facts.batch_size}.")
        images = np.asarray(train[self.input_key][: self.whiten_images], np.float32) / 255.0
        images = (images - np.asarray(self.normalize_mean, np.float32)) / np.asarray(self.normalize_std, np.float32)
        kernel = whitening_kernel(images, kernel_size=self.model.whiten_kernel_size, eps=self.whiten_eps)
        context = AirbenchContext(facts.batch_size, facts.steps_per_epoch(n), facts.total_steps(n), kernel)
        return Prepared(train, eval, context)

    def make_optimizer(
        self, tx: optax.GradientTransformation, params: Any, context: AirbenchContext
    ) -> optax.GradientTransformation:
        """The configured `tx` per parameter group with coupled weight decay, the bias step scale and freezing."""
        whiten_steps = self.whiten_bias_epochs * context.steps_per_epoch
        groups = {
            "other": optax.chain(optax.add_decayed_weights(self.weight_decay), tx),
            "norm_bias": optax.chain(
                optax.add_decayed_weights(self.weight_decay / self.bias_scaler), tx, optax.scale(self.bias_scaler)
            ),
            "whiten_bias": optax.chain(
                optax.add_decayed_weights(self.weight_decay),
                tx,
                optax.scale_by_schedule(lambda count: (count < whiten_steps).astype(jnp.float32)),
            ),
            "frozen": optax.set_to_zero(),
        }
        return optax.multi_transform(groups, param_groups(params))

    def init_state(
        self, key: jax.Array, tx: optax.GradientTransformation, example_batch: Batch, context: AirbenchContext = None
    ) -> AirbenchState:
        """Initialises the network, sets the whitening filters, and wraps `tx` (see the module docstring).

        Raises:
          ValueError: no context (`prepare` computes the whitening filters), or filters of the wrong shape.
        """
        if context is None:
            raise ValueError("AirbenchTask.init_state needs the context that prepare() returns (the whitening filters).")
        x = model_inputs({self.input_key: jnp.asarray(example_batch[self.input_key][:1])}, self.input_key)
        params, batch_stats = init_variables(self.model, key, x)
        ema = {"params": params, "batch_stats": batch_stats}  # the script's average starts before whitening
        params = flax.core.unfreeze(params)
        kernel = context.whiten_kernel
        if params["whiten"]["kernel"].shape != kernel.shape:
            raise ValueError(f"whitening filters {kernel.shape} do not fit the model's {params['whiten']['kernel'].shape}.")
        params["whiten"]["kernel"] = jnp.asarray(kernel, params["whiten"]["kernel"].dtype)
        return AirbenchState.create(
            apply_fn=self.model.apply, params=params, tx=self.make_optimizer(tx, params, context),
            batch_stats=batch_stats, ema=ema,
        )

    def train_inputs(self, batch: Batch, key: jax.Array, step: jax.Array, steps_per_epoch: int) -> jax.Array:
        """Normalised, augmented training images [B, H, W, C].

        Args:
          key: the run's training key (not folded with the step): draws each
            image's once-per-run flip; `fold_in(key, step)` draws the shifts.
          step: the optimizer step (int32 scalar); odd epochs mirror everything.
          steps_per_epoch: optimizer steps per epoch.
        """
        x = normalize(model_inputs(batch, self.input_key), self.normalize_mean, self.normalize_std)
        if self.translate:
            shift_keys = example_keys(jax.random.fold_in(jax.random.fold_in(key, step), 2), batch["index"])
            x = jax.vmap(lambda k, image: random_crop(k, image, pad=self.translate, mode="reflect"))(shift_keys, x)
        if self.flip:
            flip_keys = example_keys(jax.random.fold_in(key, 3), batch["index"])
            once = jax.vmap(jax.random.bernoulli)(flip_keys)  # [B], fixed for the run
            odd_epoch = (step // steps_per_epoch) % 2 == 1
            x = jnp.where((once != odd_epoch)[:, None, None, None], x[:, :, ::-1], x)
        return x

    def airbench_loss(
        self, params, batch_stats, x: jax.Array, labels: jax.Array, batch_size: int, *, axis_name: str | None = None
    ):
        """Label-smoothed cross-entropy summed over the global batch (mean over this shard x `batch_size`).

        Returns:
          (summed loss, (per-example loss [B] in nats, logits [B, K], updated batch_stats)).
        """
        logits, batch_stats = apply_model(self.model, params, batch_stats, x, train=True, axis_name=axis_name)
        loss = self.train_loss(logits, labels)  # [B]
        return loss.mean() * batch_size, (loss, logits, batch_stats)

    def train_step(
        self,
        state: AirbenchState,
        batch: Batch,
        key: jax.Array,
        *,
        context: AirbenchContext = None,
        axis_name: str | None = None,
    ) -> tuple[AirbenchState, Metrics]:
        """One SGD step on the summed loss, then (every 5th step and at the last) the lookahead update."""
        x = self.train_inputs(batch, key, state.step, context.steps_per_epoch)
        grad_fn = jax.value_and_grad(self.airbench_loss, has_aux=True)
        (_, (loss, logits, batch_stats)), grads = grad_fn(
            state.params, state.batch_stats, x, batch[self.label_key], context.batch_size, axis_name=axis_name
        )
        grads = pmean(grads, axis_name)
        correct = (jnp.argmax(logits, -1) == batch[self.label_key]).astype(jnp.float32)
        metrics = pmean({"loss": loss.mean(), "accuracy": correct.mean()}, axis_name)
        metrics["grad_norm"] = optax.tree.norm(grads)
        state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
        if self.lookahead:
            state = lookahead_update(state, context.total_steps)
        return state, metrics


def lookahead_update(state: AirbenchState, total_steps: int) -> AirbenchState:
    """The script's LookaheadState.update after step `state.step` (already counted) of `total_steps`."""
    step = state.step
    update = step % LOOKAHEAD_EVERY == 0
    decay = lookahead_decay(step, total_steps)
    net = {"params": state.params, "batch_stats": state.batch_stats}
    ema = jax.tree.map(lambda e, p: jnp.where(update, e + (1.0 - decay) * (p - e), e), state.ema, net)
    reset = update | (step >= total_steps)
    net = jax.tree.map(lambda e, p: jnp.where(reset, e, p), ema, net)
    return state.replace(params=net["params"], batch_stats=net["batch_stats"], ema=ema)
