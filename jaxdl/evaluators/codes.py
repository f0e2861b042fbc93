"""An autoencoder's codes against PCA at the same width: k-NN accuracy, reconstruction, anomaly ROC, scatter.

Hinton & Salakhutdinov 2006 (Science 313) compare an autoencoder's
low-dimensional codes with PCA's; this evaluator does so on the evaluation
split, with scikit-learn:

* dimensionality reduction: k-nearest-neighbour accuracy in the Z-dimensional
  code space (`eval/knn_accuracy`) beside PCA with Z components fitted on the
  same training images (`eval/pca_knn_accuracy`), and PCA's reconstruction
  error (`eval/pca_mse`, per pixel, intensities in [0, 1]);
* anomaly detection (`anomaly_class` set; the task trains on the other
  classes only): each test image is scored by its reconstruction error, and
  `eval/anomaly_auc` is the ROC AUC of that score for "is of `anomaly_class`",
  `eval/anomaly_detection_at_5pct` the share of anomalies flagged at 5% false
  alarms, beside PCA's reconstruction error at the same Z (`eval/pca_anomaly_*`);
  computed by `jaxdl.metrics.anomaly`, as for the ADFA-LD detectors.

Pictures: `codes/epoch_NNN.png` (2-D test codes beside PCA's projection,
coloured by label) and `roc/epoch_NNN.png` (both reconstruction errors' ROC).

Images: uint8 [N, H, W, C] in 0..255; codes float32 [N, Z].
"""

from __future__ import annotations

import functools
import pathlib
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.metrics import anomaly
from jaxdl.models.autoencoder import Autoencoder
from jaxdl.viz.scatter import save_scatter_panels

Arrays = Mapping[str, np.ndarray]


class CodesContext(NamedTuple):
    """What `Codes.fit` fits: PCA on the (normal) training images at the code's width, or None when no
    comparison needs it (the fitted scikit-learn object is not changed afterwards)."""

    pca: Any


def flat_pixels(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, C] -> float32 [N, D] in [0, 1]."""
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


class Codes:
    """Compares an `Autoencoder`'s codes with PCA (see the module docstring).

    Args:
      code_dim: Z, the autoencoder's code width (PCA's components).
      knn_neighbors: k of the k-NN classifier in code space (0 skips k-NN and PCA).
      knn_train_examples: training examples the k-NN and PCA are fitted on (None: all).
      anomaly_class: label scored as anomalous (None: no anomaly detection).
    """

    def __init__(
        self, code_dim: int, *, knn_neighbors: int = 5, knn_train_examples: int | None = None,
        anomaly_class: int | None = None,
    ):
        self.code_dim = code_dim
        self.knn_neighbors = knn_neighbors
        self.knn_train_examples = knn_train_examples
        self.anomaly_class = anomaly_class

    def fit(self, train: Arrays, eval: Arrays) -> CodesContext:  # noqa: A002 (the split's role)
        """Fits PCA on the first `knn_train_examples` training images when any comparison or the scatter uses it."""
        if not (self.knn_neighbors or self.anomaly_class is not None or (self.code_dim == 2 and "label" in eval)):
            return CodesContext(None)
        from sklearn.decomposition import PCA

        x = flat_pixels(train["image"][: self.knn_train_examples])
        return CodesContext(PCA(n_components=self.code_dim, svd_solver="randomized", random_state=0).fit(x))

    def metrics(
        self, model: Autoencoder, params, train: Arrays, eval: Arrays, context: CodesContext  # noqa: A002
    ) -> dict[str, float]:
        """`eval/pca_mse`, the k-NN accuracies and the anomaly metrics (see the module docstring)."""
        from sklearn.neighbors import KNeighborsClassifier

        metrics: dict[str, float] = {}
        if self.knn_neighbors or self.anomaly_class is not None:
            flat = flat_pixels(eval["image"])
            pca_eval = context.pca.transform(flat)
            metrics["eval/pca_mse"] = float(np.square(context.pca.inverse_transform(pca_eval) - flat).mean())
        if self.knn_neighbors and "label" in train and "label" in eval:
            codes_eval, _ = encode_decode_all(model, params, eval["image"], decode=False)
            train = {k: v[: self.knn_train_examples] for k, v in train.items()}
            codes_train, _ = encode_decode_all(model, params, train["image"], decode=False)
            pca_train = context.pca.transform(flat_pixels(train["image"]))
            spaces = {"knn": (codes_train, codes_eval), "pca_knn": (pca_train, pca_eval)}
            for name, (fit_on, score_on) in spaces.items():
                knn = KNeighborsClassifier(n_neighbors=self.knn_neighbors).fit(fit_on, train["label"])
                metrics[f"eval/{name}_accuracy"] = float(knn.score(score_on, eval["label"]))
        if self.anomaly_class is not None:
            for name, (scores, labels) in self.anomaly_scores(model, params, eval, context).items():
                prefix = "eval/" if name == "autoencoder" else f"eval/{name}_"
                fpr, tpr, _ = anomaly.roc_curve(scores, labels)
                metrics[f"{prefix}anomaly_auc"] = anomaly.roc_auc(scores, labels)
                metrics[f"{prefix}anomaly_detection_at_5pct"] = anomaly.detection_at_false_alarm(fpr, tpr, 0.05)
        return metrics

    def anomaly_scores(
        self, model: Autoencoder, params, eval: Arrays, context: CodesContext  # noqa: A002
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per test image reconstruction MSE [N] of the autoencoder and of PCA, with the anomaly labels [N]."""
        images = eval["image"]
        _, recon = encode_decode_all(model, params, images)
        flat = flat_pixels(images)
        pca = context.pca
        labels = eval["label"] == self.anomaly_class
        return {
            "autoencoder": (np.square(recon.reshape(len(images), -1) - flat).mean(-1), labels),
            "pca": (np.square(pca.inverse_transform(pca.transform(flat)) - flat).mean(-1), labels),
        }

    def write(
        self, model: Autoencoder, params, eval: Arrays, context: CodesContext,  # noqa: A002
        run_dir: pathlib.Path, epoch: int,
    ) -> None:
        """For a 2-D code with labels, `codes/epoch_NNN.png`; with `anomaly_class`, `roc/epoch_NNN.png`."""
        if self.code_dim == 2 and "label" in eval and context.pca is not None:
            codes, _ = encode_decode_all(model, params, eval["image"], decode=False)
            projection = context.pca.transform(flat_pixels(eval["image"]))
            save_scatter_panels(
                run_dir / "codes" / f"epoch_{epoch:03d}.png",
                [(f"autoencoder codes (Z=2), epoch {epoch}", codes), ("PCA, first 2 components", projection)],
                eval["label"],
            )
        if self.anomaly_class is not None:
            curves = {}
            for name, (scores, labels) in self.anomaly_scores(model, params, eval, context).items():
                fpr, tpr, _ = anomaly.roc_curve(scores, labels)
                curves[f"{name} (AUC {anomaly.roc_auc(scores, labels):.3f})"] = (fpr, tpr)
            anomaly.plot_roc(run_dir / "roc" / f"epoch_{epoch:03d}.png", curves,
                             title=f"reconstruction error: class {self.anomaly_class} vs the rest")


@functools.partial(jax.jit, static_argnums=(0, 3))
def _encode_decode(model: Autoencoder, params, images: jax.Array, decode: bool) -> tuple[jax.Array, jax.Array | None]:
    x = images.astype(jnp.float32) / 255.0
    if not decode:
        return model.apply({"params": params}, x, method=Autoencoder.encode), None
    out = model.apply({"params": params}, x, train=False)
    return out.code, jax.nn.sigmoid(out.recon_logits)


def encode_decode_all(
    model: Autoencoder, params, images: np.ndarray, *, decode: bool = True, chunk: int = 1000
) -> tuple[np.ndarray, np.ndarray | None]:
    """Codes [N, Z] and (with `decode`) reconstructions [N, H, W, C] in [0, 1] of uint8 images,
    on one device, `chunk` images at a time."""
    codes, recons = [], []
    for start in range(0, len(images), chunk):
        part = images[start : start + chunk]
        if len(part) < chunk and len(images) > chunk:  # pad the last chunk: one compiled shape
            part = np.concatenate([part, np.zeros((chunk - len(part), *part.shape[1:]), part.dtype)])
        code, recon = jax.device_get(_encode_decode(model, params, jnp.asarray(part), decode))
        codes.append(code)
        recons.append(recon)
    n = len(images)
    return np.concatenate(codes)[:n], (np.concatenate(recons)[:n] if decode else None)
