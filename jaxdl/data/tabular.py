"""TFDS builder for a small real tabular regression dataset that needs no download.

Diabetes (Efron, Hastie, Johnstone & Tibshirani 2004, "Least angle
regression", Annals of Statistics 32(2)): 442 patients, 10 baseline variables
(age, sex, body-mass index, mean blood pressure and six blood serum
measurements s1..s6) in their original units, and a quantitative measure of
disease progression one year after baseline (the target, 25..346). The raw
table ships inside scikit-learn (`sklearn/datasets/data/diabetes_*.csv.gz`),
so preparing it needs neither internet nor TensorFlow; its content is checked
against a sha256 of the decoded values before anything is written.

The dataset has no official split. This builder fixes one: a permutation of
the 442 rows drawn from `numpy.random.default_rng(0)`, the first 88 (20%) for
`test` and the other 354 for `train`, each kept in the original row order.
Features are written unstandardized; a task fits any standardization on the
training split only (see `jaxdl.tasks.regression`).

Features: `features` float32 [10], `target` float32 scalar.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from jaxdl.data.raw_files import RawFileError

FEATURE_NAMES = ("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6")
# sha256 of the decoded float64 table: X [442, 10] then y [442], little-endian.
CONTENT_SHA256 = "e9c1f7559552854a24dc45b41c446ce5f79f96e5da081bcce24b57492720b3f7"
SPLIT_SEED = 0
TEST_EXAMPLES = 88

_CITATION = """@article{efron2004least,
  title={Least angle regression}, author={Efron, Bradley and Hastie, Trevor and Johnstone, Iain and Tibshirani, Robert},
  journal={The Annals of Statistics}, volume={32}, number={2}, pages={407--499}, year={2004}}"""


def load_diabetes_table() -> tuple[np.ndarray, np.ndarray]:
    """Reads the raw table bundled with scikit-learn and checks its content.

    Returns:
      (X float64 [442, 10] in original units, y float64 [442]).

    Raises:
      RawFileError: scikit-learn is missing or its copy of the table differs.
    """
    try:
        from sklearn.datasets import load_diabetes
    except ImportError as e:
        raise RawFileError("The diabetes dataset is read from scikit-learn: pip install scikit-learn.") from e
    x, y = load_diabetes(return_X_y=True, scaled=False)
    digest = hashlib.sha256(np.ascontiguousarray(x, "<f8").tobytes() + np.ascontiguousarray(y, "<f8").tobytes())
    if x.shape != (442, 10) or digest.hexdigest() != CONTENT_SHA256:
        raise RawFileError(
            f"scikit-learn's diabetes table has shape {x.shape} and content sha256 {digest.hexdigest()}, "
            f"expected (442, 10) and {CONTENT_SHA256}; reinstall scikit-learn at the version in requirements.lock."
        )
    return x, y


def split_indices() -> dict[str, np.ndarray]:
    """Row indices of each split (sorted), from the fixed permutation."""
    order = np.random.default_rng(SPLIT_SEED).permutation(442)
    return {"train": np.sort(order[TEST_EXAMPLES:]), "test": np.sort(order[:TEST_EXAMPLES])}


class Diabetes(tfds.core.GeneratorBasedBuilder):
    """Diabetes progression regression: 354 train / 88 test patients, 10 features."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "From scikit-learn's bundled copy; fixed 354/88 split from seed 0."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Diabetes progression (Efron et al. 2004), original units; features "
            + ", ".join(FEATURE_NAMES),
            features=tfds.features.FeaturesDict(
                {
                    "features": tfds.features.Tensor(shape=(len(FEATURE_NAMES),), dtype=np.float32),
                    "target": tfds.features.Tensor(shape=(), dtype=np.float32),
                }
            ),
            supervised_keys=("features", "target"),
            disable_shuffling=True,
            homepage="https://www4.stat.ncsu.edu/~boos/var.select/diabetes.html",
            citation=_CITATION,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager
        x, y = load_diabetes_table()
        return {split: self._generate_examples(x[rows], y[rows], rows) for split, rows in split_indices().items()}

    def _generate_examples(self, x: np.ndarray, y: np.ndarray, rows: np.ndarray) -> Iterator[tuple[int, dict]]:
        for features, target, row in zip(x, y, rows, strict=True):
            yield int(row), {"features": features.astype(np.float32), "target": np.float32(target)}
