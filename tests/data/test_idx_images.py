"""TFDS builders for idx-format images: offline preparation, checks, real MNIST."""

import gzip
import hashlib
import os
import pathlib
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxdl.data import sources
from jaxdl.data.idx_images import MnistIdx, _IdxImageBuilder, read_idx
from jaxdl.data.raw_files import RawFile, RawFileError
from jaxdl.errors import SettingsError


def write_idx(path: pathlib.Path, array: np.ndarray) -> RawFile:
    magic = (0x08 << 8) | array.ndim
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())
    data = path.read_bytes()
    return RawFile(path.name, len(data), hashlib.sha256(data).hexdigest())


@pytest.fixture
def tiny_raw(tmp_path):
    """Synthetic idx files (7 train, 3 test) and a builder class that expects them."""
    raw = tmp_path / "raw" / "tiny"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = {s: rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) for s, n in (("train", 7), ("test", 3))}
    labels = {s: rng.integers(0, 10, len(images[s]), dtype=np.uint8) for s in images}
    files = {
        s: (write_idx(raw / f"{s}-images-idx3-ubyte.gz", images[s]), write_idx(raw / f"{s}-labels-idx1-ubyte.gz", labels[s]))
        for s in images
    }

    class TinyIdx(_IdxImageBuilder, skip_registration=True):
        URL_PREFIX = "https://example.invalid/tiny/"
        FILES = files
        SUBDIRS = ("tiny",)
        CLASS_NAMES = tuple(str(d) for d in range(10))
        HOMEPAGE = ""
        DESCRIPTION = "test data"
        CITATION = ""

    return TinyIdx, raw, images, labels


def test_prepares_offline_and_reads_back_without_tensorflow(tiny_raw, tmp_path):
    builder_cls, raw, images, labels = tiny_raw
    builder = builder_cls(data_dir=str(tmp_path / "tfds"), file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(raw.parent)))
    for split in ("train", "test"):
        arrays = sources.load_arrays(builder, split)
        np.testing.assert_array_equal(arrays["image"][..., 0], images[split])
        np.testing.assert_array_equal(arrays["label"], labels[split])
        assert arrays["image"].dtype == np.uint8 and arrays["image"].shape[1:] == (28, 28, 1)


def test_corrupt_raw_file_is_named_and_nothing_is_left_to_read(tiny_raw, tmp_path):
    builder_cls, raw, _, _ = tiny_raw
    target = raw / "train-images-idx3-ubyte.gz"
    expected = builder_cls.FILES["train"][0]
    target.write_bytes(target.read_bytes()[:-5])  # truncated
    data_dir = tmp_path / "tfds"
    builder = builder_cls(data_dir=str(data_dir), file_format="array_record")
    with pytest.raises(RawFileError) as info:
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(raw.parent)))
    message = str(info.value)
    assert str(target) in message and expected.sha256 in message and "manual_dir" in message
    assert "truncated" in message
    assert not builder_cls(data_dir=str(data_dir), file_format="array_record").is_prepared()
    assert not list(data_dir.rglob("*.array_record*"))


def test_wrong_content_of_the_right_size_fails_on_sha256(tiny_raw, tmp_path):
    builder_cls, raw, _, _ = tiny_raw
    target = raw / "test-labels-idx1-ubyte.gz"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    builder = builder_cls(data_dir=str(tmp_path / "tfds"), file_format="array_record")
    with pytest.raises(RawFileError, match="sha256"):
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(raw.parent)))


def test_missing_raw_file_is_named(tiny_raw, tmp_path):
    builder_cls, raw, _, _ = tiny_raw
    os.remove(raw / "test-images-idx3-ubyte.gz")
    builder = builder_cls(data_dir=str(tmp_path / "tfds"), file_format="array_record")
    with pytest.raises(RawFileError, match="Missing raw file .*test-images-idx3-ubyte.gz"):
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(raw.parent)))


def test_read_idx_rejects_a_non_idx_file(tmp_path):
    path = tmp_path / "bad.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"\x00\x00\x0d\x03" + b"\x00" * 16)
    with pytest.raises(RawFileError, match="not a uint8 idx1/idx3"):
        read_idx(path)


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(ValueError, match="choose one of"):
        sources.get_builder("imagenet_42")


def test_manual_dir_that_is_not_a_folder_is_reported(tmp_path):
    with pytest.raises(SettingsError, match="data.manual_dir"):
        sources.prepare("mnist", data_dir=str(tmp_path), manual_dir=str(tmp_path / "nope"))


def test_real_mnist_has_the_published_counts(mnist_data_dir):
    builder = sources.get_builder("mnist", data_dir=str(mnist_data_dir))
    assert builder.info.splits["train"].num_examples == 60_000
    assert builder.info.splits["test"].num_examples == 10_000
    test = sources.load_arrays(builder, "test")
    np.testing.assert_array_equal(
        np.bincount(test["label"], minlength=10), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    )
    assert test["image"].max() == 255 and test["image"].min() == 0


def test_truncated_real_mnist_file_gives_one_clear_error(mnist_raw_dir, tmp_path):
    manual = tmp_path / "manual" / "mnist"
    manual.mkdir(parents=True)
    for f in mnist_raw_dir.glob("*.gz"):
        shutil.copy(f, manual / f.name)
    (manual / "t10k-labels-idx1-ubyte.gz").write_bytes((mnist_raw_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()[:100])
    with pytest.raises(RawFileError, match="t10k-labels-idx1-ubyte.gz has 100 bytes, expected 4,542"):
        sources.prepare("mnist", data_dir=str(tmp_path / "tfds"), manual_dir=str(manual.parent))
    assert not MnistIdx(data_dir=str(tmp_path / "tfds"), file_format="array_record").is_prepared()


def test_without_local_files_the_builder_downloads_and_verifies(tiny_raw, tmp_path, monkeypatch):
    builder_cls, raw, images, _ = tiny_raw
    requested = {}

    def fake_download(self, urls):  # stands in for the network: serves the raw folder
        requested.update(urls)
        return {name: raw / name for name in urls}

    monkeypatch.setattr(tfds.download.DownloadManager, "download", fake_download)
    empty = tmp_path / "empty"
    empty.mkdir()
    builder = builder_cls(data_dir=str(tmp_path / "tfds"), file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(empty)))
    assert requested["train-images-idx3-ubyte.gz"] == "https://example.invalid/tiny/train-images-idx3-ubyte.gz"
    np.testing.assert_array_equal(sources.load_arrays(builder, "train")["image"][..., 0], images["train"])


def test_offline_without_local_files_says_where_to_put_them(tiny_raw, tmp_path, monkeypatch):
    builder_cls, _, _, _ = tiny_raw

    def no_network(self, urls):
        raise ConnectionError("network is unreachable")

    monkeypatch.setattr(tfds.download.DownloadManager, "download", no_network)
    builder = builder_cls(data_dir=str(tmp_path / "tfds"), file_format="array_record")
    with pytest.raises(RawFileError, match=r"Could not download .*JAXDL_MANUAL_DIR"):
        builder.download_and_prepare()
