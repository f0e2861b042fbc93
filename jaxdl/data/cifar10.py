"""TFDS builder for CIFAR-10 from its binary archive, without TensorFlow.

Krizhevsky 2009, "Learning Multiple Layers of Features from Tiny Images".
Reads `cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin` (each record: one
label byte, then the 32x32 R, G and B planes) straight from the archive with
`tarfile` and writes `array_record` files.

The archive comes from `manual_dir` (or its `cifar-10/` subfolder) or, when
none is there, is downloaded from the authors' page. Only archives whose sha256
is known are accepted (`ARCHIVES`): the canonical `cifar-10-binary.tar.gz`, and
a `.tar.xz` repack decoded from quality-75 JPEG files whose pixels are *not*
canonical (labels and train order are). Which archive a dataset was prepared
from, with its sha256 and fidelity, is stored in the dataset's metadata and in
every run's manifest, so results on the lossy copy are never mistaken for
canonical ones. Both archives prepare into the same dataset name: keep them
in different `data_dir`s if you need both.

Features: `image` uint8 [32, 32, 3] in 0..255, `label` int64 in 0..9; records
keep the order of the archive.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from jaxdl.data.raw_files import RawFile, RawFileError, sha256sum

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
RECORD_BYTES = 1 + 32 * 32 * 3
TRAIN_MEMBERS = tuple(f"cifar-10-batches-bin/data_batch_{i}.bin" for i in range(1, 6))
TEST_MEMBERS = ("cifar-10-batches-bin/test_batch.bin",)
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"


class Archive(NamedTuple):
    """A CIFAR-10 binary archive this builder accepts."""

    file: RawFile
    canonical: bool  # pixels equal the published release
    note: str


ARCHIVES = (
    Archive(
        RawFile("cifar-10-binary.tar.gz", 170_052_171, "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"),
        canonical=True,
        note="canonical release",
    ),
    Archive(
        RawFile("cifar-10-binary.tar.xz", 142_489_532, "8cbe2a8c2ee38a19e36cab0906b030108e73ce38cdf8a57f00ff74199dd5106d"),
        canonical=False,
        note="decoded from quality-75 4:2:0 JPEG copies: labels and train order exact, pixels lossy, "
        "test order class round-robin",
    ),
)


def find_archive(manual_dir: epath.Path | None) -> tuple[epath.Path, Archive] | None:
    """The first known archive present in `manual_dir/cifar-10`, `manual_dir/cifar10` or `manual_dir`.

    Raises:
      RawFileError: a file with a known name has the wrong size or sha256.
    """
    if manual_dir is None:
        return None
    for folder in (manual_dir / "cifar-10", manual_dir / "cifar10", manual_dir):
        for archive in ARCHIVES:
            path = folder / archive.file.name
            if path.exists():
                known = ", ".join(f"{a.file.name} ({a.file.size:,} bytes, sha256 {a.file.sha256})" for a in ARCHIVES)
                size = os.path.getsize(path)
                digest = sha256sum(path) if size == archive.file.size else None
                if digest != archive.file.sha256:
                    raise RawFileError(
                        f"{path} is not a known CIFAR-10 binary archive (size {size:,} bytes"
                        f"{', sha256 ' + digest if digest else ''}). Accepted: {known}. Replace it with one of them."
                    )
                return path, archive
    return None


def read_records(path: epath.Path, splits: dict[str, tuple[str, ...]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Reads the `.bin` members of each split from a CIFAR-10 archive, in one pass.

    Args:
      path: a .tar.gz or .tar.xz archive.
      splits: split name -> member names, in order.

    Returns:
      split -> (images uint8 [N, 32, 32, 3], labels uint8 [N]) in archive order.

    Raises:
      RawFileError: a member is missing or is not a whole number of records.
    """
    wanted = {name for members in splits.values() for name in members}
    data: dict[str, bytes] = {}
    with tarfile.open(path, "r:*") as tar:  # a compressed archive is read once, front to back
        for member in tar:
            if member.name in wanted:
                data[member.name] = tar.extractfile(member).read()
    out = {}
    for split, members in splits.items():
        images, labels = [], []
        for name in members:
            if name not in data:
                raise RawFileError(f"{path} has no member {name}; is it the *binary* CIFAR-10 archive?")
            if len(data[name]) % RECORD_BYTES:
                raise RawFileError(f"{path}:{name} holds {len(data[name])} bytes, not a multiple of {RECORD_BYTES}.")
            records = np.frombuffer(data[name], np.uint8).reshape(-1, RECORD_BYTES)
            labels.append(records[:, 0])
            images.append(records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # R, G, B planes -> HWC
        out[split] = (np.concatenate(images), np.concatenate(labels))
    return out


class Cifar10Binary(tfds.core.GeneratorBasedBuilder):
    """CIFAR-10: 50,000 train and 10,000 test 32x32 colour images in 10 classes."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Prepared from the binary archive without TensorFlow."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Optional: place cifar-10-binary.tar.gz (canonical) or the known cifar-10-binary.tar.xz repack in "
        "manual_dir (or manual_dir/cifar-10) to prepare offline."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="CIFAR-10 prepared from the binary archive; metadata names the archive used.",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(32, 32, 3), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(names=list(CLASS_NAMES)),
                }
            ),
            supervised_keys=("image", "label"),
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(),
            homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
            citation="@techreport{krizhevsky2009learning, title={Learning Multiple Layers of Features from Tiny "
            "Images}, author={Krizhevsky, Alex}, institution={University of Toronto}, year={2009}}",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        try:
            manual_dir = dl_manager.manual_dir
        except AssertionError:  # TFDS's way of saying the manual folder is missing or empty
            manual_dir = None
        found = find_archive(manual_dir)
        if found is None:
            canonical = ARCHIVES[0]
            try:
                path = epath.Path(dl_manager.download(URL))
            except Exception as e:  # network errors come in many types
                raise RawFileError(
                    f"Could not download CIFAR-10 from {URL} ({type(e).__name__}: {e}). Put "
                    f"{canonical.file.name} in a folder and point data.manual_dir (or JAXDL_MANUAL_DIR) at it."
                ) from e
            if sha256sum(path) != canonical.file.sha256:
                raise RawFileError(f"Downloaded {path} does not have sha256 {canonical.file.sha256}; download again.")
            found = (path, canonical)
        path, archive = found
        self.info.metadata["archive"] = {
            "name": archive.file.name,
            "size": archive.file.size,
            "sha256": archive.file.sha256,
            "canonical": archive.canonical,
            "note": archive.note,
        }
        arrays = read_records(path, {"train": TRAIN_MEMBERS, "test": TEST_MEMBERS})
        return {split: self._generate_examples(*arrays[split]) for split in arrays}

    def _generate_examples(self, images: np.ndarray, labels: np.ndarray) -> Iterator[tuple[int, dict]]:
        for i in range(len(labels)):
            yield i, {"image": images[i], "label": int(labels[i])}
