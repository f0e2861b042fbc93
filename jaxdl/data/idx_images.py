"""TFDS builders for MNIST and Fashion-MNIST that need no TensorFlow.

TFDS's stock `mnist` and `fashion_mnist` builders prepare through `tf.io.gfile`
and `tf.image`, so they need TensorFlow. These builders read the four original
gzip-compressed idx files (LeCun et al. 1998, "Gradient-based learning applied
to document recognition"; Xiao et al. 2017, arXiv:1708.07747) with `gzip` and
numpy and write `array_record` files that `tfds.data_source` reads back.

Raw files come from a local folder or the public mirror TFDS uses, and are
checked against their published size and sha256 before a single record is
written (`jaxdl.data.raw_files`); TFDS writes into a temporary folder and
renames it only when preparation succeeds, so a failed preparation leaves
nothing behind that a later run could read.

Features: `image` uint8 [28, 28, 1] in 0..255, `label` int64 in 0..9; records
keep the order of the original files.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator, Mapping

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from jaxdl.data.raw_files import RawFile, RawFileError, fetch_raw_files


def read_idx(path: epath.Path) -> np.ndarray:
    """Reads a gzip-compressed idx file (LeCun's format) into a uint8 array.

    Returns:
      uint8 array: [N] for idx1 (labels), [N, rows, cols] for idx3 (images).

    Raises:
      RawFileError: the header does not describe a uint8 idx1/idx3 array of
        the file's length.
    """
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08 or ndim not in (1, 3):  # 0x08: unsigned byte elements
        raise RawFileError(f"{path} is not a uint8 idx1/idx3 file (magic {magic:#x}).")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(shape)):
        raise RawFileError(f"{path}: header says shape {shape} but holds {len(data) - offset} bytes.")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


class _IdxImageBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared body of the idx-format image builders; subclasses set the files."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Prepared from the original idx files without TensorFlow."}
    URL_PREFIX: str
    FILES: Mapping[str, tuple[RawFile, RawFile]]  # split -> (images, labels)
    SUBDIRS: tuple[str, ...]
    CLASS_NAMES: tuple[str, ...]
    HOMEPAGE: str
    DESCRIPTION: str
    CITATION: str

    @property
    def RAW_FILES(self) -> tuple[RawFile, ...]:  # noqa: N802 (constant-like, as TFDS's own)
        """Every raw file the dataset is prepared from, with its verified fingerprint."""
        return tuple(f for pair in self.FILES.values() for f in pair)

    @property
    def MANUAL_DOWNLOAD_INSTRUCTIONS(self) -> str:  # noqa: N802 (TFDS's name)
        names = ", ".join(f.name for pair in self.FILES.values() for f in pair)
        return f"Optional: place {names} in manual_dir (or manual_dir/{self.SUBDIRS[0]}) to prepare offline."

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(names=list(self.CLASS_NAMES)),
                }
            ),
            supervised_keys=("image", "label"),
            disable_shuffling=True,  # records keep the order of the raw files
            homepage=self.HOMEPAGE,
            citation=self.CITATION,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        paths = fetch_raw_files(
            dl_manager, files=self.RAW_FILES, url_prefix=self.URL_PREFIX, subdirs=self.SUBDIRS, dataset=self.name
        )
        return {
            split: self._generate_examples(paths[images.name], paths[labels.name])
            for split, (images, labels) in self.FILES.items()
        }

    def _generate_examples(self, images_path: epath.Path, labels_path: epath.Path) -> Iterator[tuple[int, dict]]:
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise RawFileError(
                f"{images_path} ({images.shape}) and {labels_path} ({labels.shape}) are not a matching "
                "idx3 image / idx1 label pair."
            )
        for i in range(len(labels)):
            yield i, {"image": images[i, :, :, None], "label": int(labels[i])}


_MNIST_CITATION = """@article{lecun1998gradient,
  title={Gradient-based learning applied to document recognition},
  author={LeCun, Yann and Bottou, L{\\'e}on and Bengio, Yoshua and Haffner, Patrick},
  journal={Proceedings of the IEEE}, volume={86}, number={11}, pages={2278--2324}, year={1998}}"""

_FASHION_CITATION = """@article{xiao2017fashion,
  title={Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning Algorithms},
  author={Xiao, Han and Rasul, Kashif and Vollgraf, Roland},
  journal={arXiv preprint arXiv:1708.07747}, year={2017}}"""


class MnistIdx(_IdxImageBuilder):
    """MNIST handwritten digits: 60,000 train and 10,000 test 28x28 grey images."""

    URL_PREFIX = "https://storage.googleapis.com/cvdf-datasets/mnist/"
    FILES = {
        "train": (
            RawFile(
                "train-images-idx3-ubyte.gz",
                9_912_422,
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            ),
            RawFile(
                "train-labels-idx1-ubyte.gz", 28_881, "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"
            ),
        ),
        "test": (
            RawFile(
                "t10k-images-idx3-ubyte.gz",
                1_648_877,
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            ),
            RawFile(
                "t10k-labels-idx1-ubyte.gz", 4_542, "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"
            ),
        ),
    }
    SUBDIRS = ("mnist",)
    CLASS_NAMES = tuple(str(d) for d in range(10))
    HOMEPAGE = "http://yann.lecun.com/exdb/mnist/"
    DESCRIPTION = "The MNIST database of handwritten digits, prepared from the original idx files."
    CITATION = _MNIST_CITATION


class FashionMnistIdx(_IdxImageBuilder):
    """Fashion-MNIST: 60,000 train and 10,000 test 28x28 grey images of clothing."""

    URL_PREFIX = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
    FILES = {
        "train": (
            RawFile(
                "train-images-idx3-ubyte.gz",
                26_421_880,
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            ),
            RawFile(
                "train-labels-idx1-ubyte.gz", 29_515, "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"
            ),
        ),
        "test": (
            RawFile(
                "t10k-images-idx3-ubyte.gz",
                4_422_102,
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            ),
            RawFile(
                "t10k-labels-idx1-ubyte.gz", 5_148, "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"
            ),
        ),
    }
    SUBDIRS = ("fashion-mnist", "fashion_mnist")
    CLASS_NAMES = (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    )
    HOMEPAGE = "https://github.com/zalandoresearch/fashion-mnist"
    DESCRIPTION = "Fashion-MNIST article images, prepared from the original idx files."
    CITATION = _FASHION_CITATION
