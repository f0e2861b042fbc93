"""Autoencoder objective: reconstruction of clean images from (optionally) corrupted ones.

Plain autoencoder (Hinton & Salakhutdinov 2006, Science 313) when
`noise == "none"`; denoising autoencoder (Vincent et al. 2008, ICML) with
additive Gaussian noise (clipped to [0, 1]) or masking noise (each pixel set
to 0 with probability `noise_level`). The target is always the clean image.

Losses, per image and averaged over the batch: "bce" is the Bernoulli
cross-entropy between the clean intensities in [0, 1] and the reconstruction
logits, summed over pixels (nats per image; its minimum is the targets' own
entropy, not 0); "mse" is the squared error of sigmoid(logits), summed over
pixels. Evaluation also reports `mse` (per pixel, intensities in [0, 1]) and
`psnr` = 10 log10(1 / mse_i) in dB, averaged over images, for the
reconstruction and, with noise, for the noisy input (`psnr_noisy`).

The final evaluation compares the codes with PCA at the same width
(`jaxdl.evaluators.codes`): k-NN accuracy in code space, PCA's reconstruction
error and, with `anomaly_class` set (the training split then keeps only the
other classes), the ROC of the reconstruction error as an anomaly score.

Randomness: training noise comes from per-example streams folded from the
step; evaluation noise from `eval_noise_seed` and the example index, so every
evaluation and the pictures corrupt the same test images the same way.

Data: batches hold `image` uint8 [B, H, W, C] in 0..255, `label` (optional;
needed for k-NN, the scatter plot and anomaly detection), `index` int32 [B]
and, for evaluation, `mask` bool [B].
"""

from __future__ import annotations

import functools
import pathlib
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdl.evaluators.codes import Codes
from jaxdl.models.autoencoder import Autoencoder
from jaxdl.tasks.base import Arrays, Batch, Metrics, Prepared, RunFacts, Task
from jaxdl.training.parallel import example_keys, pmean, psum
from jaxdl.training.state import TrainState
from jaxdl.viz.images import save_image_grid

NOISES = ("none", "gaussian", "masking")
LOSSES = ("bce", "mse")


def corrupt(keys: jax.Array, x: jax.Array, noise: str, level: float) -> jax.Array:
    """Corrupts images with one PRNG stream per example.

    Args:
      keys: typed key array [B].
      x: [B, H, W, C] float intensities in [0, 1].
      noise: "none"; "gaussian" (x + level * N(0, 1), clipped to [0, 1]);
        "masking" (each pixel set to 0 with probability `level`).
      level: standard deviation (intensity units) or masking probability.

    Returns:
      float32 [B, H, W, C] in [0, 1].

    Raises:
      ValueError: unknown noise.
    """
    if noise == "none":
        return x
    if noise == "gaussian":
        eps = jax.vmap(lambda k: jax.random.normal(k, x.shape[1:], x.dtype))(keys)
        return jnp.clip(x + level * eps, 0.0, 1.0)
    if noise == "masking":
        keep = jax.vmap(lambda k: jax.random.bernoulli(k, 1.0 - level, x.shape[1:]))(keys)
        return jnp.where(keep, x, 0.0)
    raise ValueError(f"Unknown noise {noise!r}; choose one of {NOISES}.")


def per_image_mse(a: jax.Array, b: jax.Array) -> jax.Array:
    """Mean squared difference per image: [B, ...] x2 -> [B]."""
    return jnp.square(a - b).reshape(a.shape[0], -1).mean(-1)


def psnr(mse: jax.Array) -> jax.Array:
    """Peak signal-to-noise ratio in dB for intensities in [0, 1]: 10 log10(1 / mse), mse floored at 1e-10."""
    return -10.0 * jnp.log10(jnp.maximum(mse, 1e-10))


class AutoencoderTask(Task):
    """Trains an `Autoencoder` to reconstruct clean images; evaluates against PCA.

    Args:
      model: the autoencoder.
      loss: "bce" or "mse" (see the module docstring).
      noise: "none", "gaussian" or "masking".
      noise_level: Gaussian standard deviation (intensity units, images in [0, 1])
        or masking probability.
      eval_noise_seed: seed of the evaluation corruption.
      knn_neighbors, knn_train_examples: the comparison with PCA's (`jaxdl.evaluators.codes.Codes`).
      anomaly_class: label treated as anomalous: removed from the training
        split, scored on the test split (None: no anomaly detection).
      num_images: test images shown in the reconstruction picture.
    """

    default_metric = "eval/loss"
    default_mode = "min"
    progress_metric = "loss"
    streams = False  # prepare() drops a class and fits PCA on the whole training split

    def __init__(
        self,
        model: Autoencoder,
        *,
        loss: str = "bce",
        noise: str = "none",
        noise_level: float = 0.0,
        eval_noise_seed: int = 0,
        knn_neighbors: int = 5,
        knn_train_examples: int | None = None,
        anomaly_class: int | None = None,
        num_images: int = 16,
    ):
        if loss not in LOSSES:
            raise ValueError(f"Unknown task.loss {loss!r}; choose one of {LOSSES}.")
        if noise not in NOISES:
            raise ValueError(f"Unknown task.noise {noise!r}; choose one of {NOISES}.")
        if noise == "masking" and not 0.0 <= noise_level < 1.0:
            raise ValueError(f"task.noise_level={noise_level} is a masking probability and must lie in [0, 1).")
        if noise != "none" and noise_level <= 0.0:
            raise ValueError(
                f"task.noise={noise!r} needs task.noise_level > 0 (got {noise_level}); or set task.noise=none."
            )
        self.model = model
        self.loss = loss
        self.noise = noise
        self.noise_level = noise_level
        self.eval_noise_seed = eval_noise_seed
        self.anomaly_class = anomaly_class
        self.codes = Codes(model.code_dim, knn_neighbors=knn_neighbors, knn_train_examples=knn_train_examples,
                           anomaly_class=anomaly_class)
        self.num_images = num_images
        self.progress_unit = (
            "reconstruction cross-entropy (nats per image)" if loss == "bce" else "squared error (sum over pixels)"
        )

    def required_features(self) -> tuple[str, ...]:
        return ("image",)

    def prepare(self, train: Arrays, eval: Arrays, facts: RunFacts) -> Prepared:  # noqa: A002
        """Drops `anomaly_class` from the training split (normal data only); fits the PCA baseline when it is used.

        Raises:
          KeyError: anomaly detection asked for and the split has no `label`.
          ValueError: no training example is left.
        """
        del facts
        if self.anomaly_class is not None:
            if "label" not in train:
                raise KeyError("task.anomaly_class needs a dataset with a `label` feature.")
            keep = train["label"] != self.anomaly_class
            if not keep.any():
                raise ValueError(f"task.anomaly_class={self.anomaly_class} leaves no training example.")
            train = {k: v[keep] for k, v in train.items()}
        return Prepared(train, eval, self.codes.fit(train, eval))

    def init_state(
        self, key: jax.Array, tx: optax.GradientTransformation, example_batch: Batch, context: Any = None
    ) -> TrainState:
        """Initialises parameters for images shaped like `example_batch["image"]`."""
        x = jnp.zeros((1, *example_batch["image"].shape[-3:]), jnp.float32)
        variables = self.model.init({"params": key}, x, train=False)
        return TrainState.create(apply_fn=self.model.apply, params=variables["params"], tx=tx)

    def _per_image_loss(self, logits: jax.Array, x: jax.Array) -> jax.Array:
        if self.loss == "bce":
            loss = optax.sigmoid_binary_cross_entropy(logits, x)
        else:
            loss = jnp.square(jax.nn.sigmoid(logits) - x)
        return loss.reshape(x.shape[0], -1).sum(-1)  # [B]

    def loss_fn(self, params, x_in: jax.Array, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Mean per-image reconstruction loss of clean `x` [B, H, W, C] from `x_in` (corrupted or not).

        Returns:
          (loss, aux) with per-example `loss` and `mse` (per pixel) [B] and the reconstruction
          probabilities `recon` [B, H, W, C].
        """
        out = self.model.apply({"params": params}, x_in, train=True)
        loss = self._per_image_loss(out.recon_logits, x)
        recon = jax.nn.sigmoid(out.recon_logits)
        return loss.mean(), {"loss": loss, "mse": per_image_mse(recon, x), "recon": recon}

    def train_step(
        self, state: TrainState, batch: Batch, key: jax.Array, *, context: Any = None, axis_name: str | None = None
    ) -> tuple[TrainState, Metrics]:
        """One update on the mean reconstruction loss of the global batch (per-example noise streams)."""
        x = batch["image"].astype(jnp.float32) / 255.0
        keys = example_keys(jax.random.fold_in(key, state.step), batch["index"])
        x_in = corrupt(keys, x, self.noise, self.noise_level)
        (_, aux), grads = jax.value_and_grad(self.loss_fn, has_aux=True)(state.params, x_in, x)
        grads = pmean(grads, axis_name)
        metrics = pmean({"loss": aux["loss"].mean(), "mse": aux["mse"].mean()}, axis_name)
        metrics["grad_norm"] = optax.tree.norm(grads)
        return state.apply_gradients(grads=grads), metrics

    def eval_inputs(self, batch: Batch) -> tuple[jax.Array, jax.Array]:
        """(clean, corrupted) float images of an eval batch; the corruption is fixed by `eval_noise_seed`."""
        x = batch["image"].astype(jnp.float32) / 255.0
        keys = example_keys(jax.random.key(self.eval_noise_seed), batch["index"])
        return x, corrupt(keys, x, self.noise, self.noise_level)

    def eval_step(
        self, state: TrainState, batch: Batch, key: jax.Array, *, context: Any = None, axis_name: str | None = None
    ) -> Metrics:
        """Sums over valid examples of the loss, per-pixel MSE and PSNR (and the noisy input's PSNR)."""
        del key
        x, x_in = self.eval_inputs(batch)
        _, aux = self.loss_fn(state.params, x_in, x)
        mask = batch["mask"].astype(jnp.float32)
        sums = {
            "loss_sum": jnp.sum(aux["loss"] * mask),
            "mse_sum": jnp.sum(aux["mse"] * mask),
            "psnr_sum": jnp.sum(psnr(aux["mse"]) * mask),
            "count": mask.sum(),
        }
        if self.noise != "none":
            sums["psnr_noisy_sum"] = jnp.sum(psnr(per_image_mse(x_in, x)) * mask)
        return psum(sums, axis_name)

    def final_evaluation(self, evaluate, state: TrainState, prepared: Prepared) -> dict[str, float]:
        """The codes against PCA (`jaxdl.evaluators.codes.Codes.metrics`)."""
        del evaluate
        return self.codes.metrics(self.model, state.params, prepared.train, prepared.eval, prepared.context)

    def write_artifacts(
        self, state: TrainState, epoch: int, run_dir: pathlib.Path, prepared: Prepared, totals: Mapping[str, np.ndarray]
    ) -> None:
        """Writes `reconstructions/epoch_NNN.png` (rows: clean, noisy if any, reconstructed); for a
        2-D code with labels, `codes/epoch_NNN.png` (test codes beside PCA's 2-D projection); with
        `anomaly_class`, `roc/epoch_NNN.png` (ROC of the autoencoder's and PCA's reconstruction error)."""
        eval_arrays = prepared.eval
        n = min(self.num_images, len(eval_arrays["image"]))
        batch = {"image": jnp.asarray(eval_arrays["image"][:n]), "index": jnp.arange(n, dtype=jnp.int32)}
        x, x_in = self.eval_inputs(batch)
        recon = _reconstruct(self.model, state.params, x_in)
        rows = [x, x_in, recon] if self.noise != "none" else [x, recon]
        save_image_grid(run_dir / "reconstructions" / f"epoch_{epoch:03d}.png", np.concatenate(rows), columns=n)
        self.codes.write(self.model, state.params, eval_arrays, prepared.context, run_dir, epoch)


@functools.partial(jax.jit, static_argnums=0)
def _reconstruct(model: Autoencoder, params, x: jax.Array) -> jax.Array:
    return jax.nn.sigmoid(model.apply({"params": params}, x, train=False).recon_logits)
