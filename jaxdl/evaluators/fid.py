"""Fréchet distance between image sets on the features of a jaxdl classifier ("FID", jaxdl's version).

Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to
a Local Nash Equilibrium" (arXiv:1706.08500), eq. 6: fit a Gaussian to each
set's features and report

  d^2 = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2}),

the squared 2-Wasserstein distance of the two Gaussians (Dowson & Landau 1982).

Not Inception-FID: the features are the penultimate-layer activations (the
input of the layer named `output`) of a classifier that jaxdl trained on the
same dataset, not of Inception-v3 on ImageNet. The numbers compare generators
with each other within jaxdl only, for the same classifier checkpoint; they are
not comparable with published FIDs. Every score is reported with the
classifier's checkpoint and test accuracy.

Images enter as float [N, H, W, C] in [0, 1] (the classifier's training scale);
features are float64 [N, D] on the host. `classifier` below is a
`jaxdl.runs.Classifier` (a restored classification run).

`FID` is the evaluator a run chooses with `evaluator=fid evaluator.classifier=RUN`:
after training it scores `samples` images of the task's `sample` against
the evaluation split.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.runs import load_classifier
from jaxdl.tasks.classification import apply_model


def gaussian_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and covariance [D, D] (unbiased, N - 1) of `features` [N, D], in float64."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"Need features [N >= 2, D]; got shape {features.shape}.")
    return features.mean(0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Squared Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2).

    Tr (S1 S2)^{1/2} is computed in its symmetric form Tr (S1^{1/2} S2 S1^{1/2})^{1/2}
    with two symmetric eigendecompositions (negative eigenvalues, rounding
    noise of positive semi-definite matrices, are clipped to 0). It equals
    `scipy.linalg.sqrtm(S1 @ S2)`'s trace and stays exact and real when the
    covariances are singular, as they are for features with dead ReLU units.

    Args:
      mu1, mu2: [D] means. sigma1, sigma2: [D, D] symmetric positive semi-definite covariances.

    Returns:
      d^2 >= 0 (up to rounding), in squared feature units.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"Shapes disagree: mu {mu1.shape} {mu2.shape}, sigma {sigma1.shape} {sigma2.shape}.")
    w, v = np.linalg.eigh((sigma1 + sigma1.T) / 2.0)
    root1 = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T  # S1^{1/2}
    inner = root1 @ sigma2 @ root1
    trace_covmean = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2.0), 0.0, None)))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_covmean)


def fid_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """Fréchet distance of Gaussians fitted to two feature sets [N1, D] and [N2, D]."""
    return frechet_distance(*gaussian_statistics(features1), *gaussian_statistics(features2))


def penultimate(model: nn.Module, apply: Any) -> tuple[jax.Array, jax.Array]:
    """Runs `apply()` (a call of `model`) and returns (the input of its submodule `output`, the call's result)."""
    captured = {}

    def interceptor(next_fun, args, kwargs, context):
        if context.module.name == "output" and context.method_name == "__call__":
            captured["features"] = args[0]
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        out = apply()
    if "features" not in captured:
        raise ValueError(f"{type(model).__name__} has no submodule named 'output' whose input could serve as features.")
    return captured["features"], out


@functools.partial(jax.jit, static_argnums=0)
def _features_and_logits(task: Any, params: Any, batch_stats: Any, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    x = task.inputs({task.input_key: images})
    features, (logits, _) = penultimate(task.model, lambda: apply_model(task.model, params, batch_stats, x, train=False))
    return features.reshape(features.shape[0], -1).astype(jnp.float32), logits


def features(classifier: Any, images: np.ndarray, *, batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Penultimate-layer features and logits of `images`.

    Args:
      images: float [N, H, W, C] in [0, 1] (or uint8 0..255, rescaled).

    Returns:
      (features float64 [N, D], logits float32 [N, K]), evaluation mode.
    """
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
    feats, logits = [], []
    state = classifier.state
    for i in range(0, len(images), batch_size):
        f, l = _features_and_logits(classifier.task, state.params, state.batch_stats, jnp.asarray(images[i : i + batch_size], jnp.float32))
        feats.append(np.asarray(f, np.float64))
        logits.append(np.asarray(l))
    return np.concatenate(feats), np.concatenate(logits)


def fid_of_images(classifier: Any, images: np.ndarray, reference: np.ndarray) -> float:
    """FID (jaxdl classifier features) between `images` and `reference`, both float [N, H, W, C] in [0, 1]."""
    return fid_from_features(features(classifier, images)[0], features(classifier, reference)[0])


class FID:
    """Final evaluator: FID of a generative task's samples against the evaluation split.

    Args:
      classifier: folder of a finished classification run on the same dataset
        (its penultimate-layer features are the feature space).
      samples: generated images scored (10,000 against MNIST's 10,000 test images).
      seed: noise seed of the samples (the same seed, the same images).

    Works with any task that has `sample(state, num, *, seed) -> float [num, H, W, C]`
    in [0, 1] (the GAN and the VAE). Returns `eval/fid` (squared feature units)
    and the classifier's test accuracy `eval/fid_classifier_accuracy`.
    """

    def __init__(self, classifier: str, samples: int = 10_000, seed: int = 0):
        if samples < 2:
            raise ValueError(f"evaluator.samples={samples} must be at least 2 (a covariance needs two images).")
        self.classifier = os.fspath(classifier)
        self.samples = samples
        self.seed = seed

    def __call__(self, task: Any, state: Any, eval_arrays: Mapping[str, np.ndarray]) -> dict[str, float]:
        """Scores `task.sample(state, samples, seed=seed)` against `eval_arrays["image"]` (uint8, unprepared).

        Raises:
          ValueError: the task cannot sample images.
        """
        if not hasattr(task, "sample"):
            raise ValueError(f"evaluator=fid needs a task that samples images; {type(task).__name__} does not.")
        classifier = load_classifier(self.classifier)
        reference = np.asarray(eval_arrays["image"], np.float32) / 255.0
        generated = task.sample(state, self.samples, seed=self.seed)
        return {
            "eval/fid": fid_of_images(classifier, generated, reference),
            "eval/fid_classifier_accuracy": classifier.test_accuracy,
        }
