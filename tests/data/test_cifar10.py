"""CIFAR-10 binary builder: record layout, accepted archives, the real copy."""

import io
import os
import tarfile

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxdl.data import cifar10, sources
from jaxdl.data.raw_files import RawFile, RawFileError, sha256sum


def write_archive(path, n_train=3, n_test=2, seed=0):
    """A tiny archive in the binary layout; returns (train images, train labels)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (5 * n_train + n_test, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, len(images), dtype=np.uint8)
    planes = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # HWC -> R, G, B planes
    records = np.concatenate([labels[:, None], planes], axis=1)
    members = [*cifar10.TRAIN_MEMBERS, *cifar10.TEST_MEMBERS]
    chunks = [records[i * n_train:(i + 1) * n_train] for i in range(5)] + [records[5 * n_train:]]
    with tarfile.open(path, "w:gz") as tar:
        for name, chunk in zip(members, chunks, strict=True):
            data = chunk.tobytes()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return images, labels


@pytest.fixture
def tiny_archive(tmp_path, monkeypatch):
    folder = tmp_path / "manual" / "cifar-10"
    folder.mkdir(parents=True)
    path = folder / "cifar-10-binary.tar.gz"
    images, labels = write_archive(path)
    known = cifar10.Archive(RawFile(path.name, os.path.getsize(path), sha256sum(path)), canonical=False, note="test")
    monkeypatch.setattr(cifar10, "ARCHIVES", (known,))
    return path, images, labels


def test_records_are_read_in_order_as_hwc_images(tiny_archive, tmp_path):
    path, images, labels = tiny_archive
    builder = cifar10.Cifar10Binary(data_dir=str(tmp_path / "tfds"), file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(path.parent.parent)))
    train, test = sources.load_arrays(builder, "train"), sources.load_arrays(builder, "test")
    np.testing.assert_array_equal(train["image"], images[:15])
    np.testing.assert_array_equal(train["label"], labels[:15])
    np.testing.assert_array_equal(test["image"], images[15:])
    assert builder.info.metadata["archive"]["sha256"] == sha256sum(path)


def test_an_unknown_archive_is_refused_with_the_accepted_ones(tmp_path):
    folder = tmp_path / "manual"
    folder.mkdir()
    write_archive(folder / "cifar-10-binary.tar.gz")
    builder = cifar10.Cifar10Binary(data_dir=str(tmp_path / "tfds"), file_format="array_record")
    with pytest.raises(RawFileError, match="not a known CIFAR-10 binary archive.*c4a38c50"):
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(folder)))
    assert not builder.is_prepared()


@pytest.fixture(scope="session")
def cifar_data_dir(tmp_path_factory):
    root = os.environ.get("JAXDL_MANUAL_DIR")
    if not root or cifar10.find_archive(__import__("etils").epath.Path(root)) is None:
        pytest.skip("real CIFAR-10 not available: set JAXDL_MANUAL_DIR to a folder with cifar-10/cifar-10-binary.tar.*")
    data_dir = tmp_path_factory.mktemp("tfds_cifar")
    sources.prepare("cifar10", data_dir=str(data_dir), manual_dir=root)
    return data_dir


@pytest.mark.slow
def test_real_cifar10_counts_order_and_fidelity_record(cifar_data_dir):
    builder = sources.get_builder("cifar10", data_dir=str(cifar_data_dir))
    train = sources.load_arrays(builder, "train")
    assert train["image"].shape == (50_000, 32, 32, 3)
    np.testing.assert_array_equal(train["label"][:10], [6, 9, 9, 4, 1, 1, 2, 7, 8, 3])  # canonical train order
    np.testing.assert_array_equal(np.bincount(train["label"]), [5000] * 10)
    archive = sources.describe(builder)["metadata"]["archive"]
    assert archive["name"] in {a.file.name for a in cifar10.ARCHIVES}
    assert archive["canonical"] == (archive["name"] == "cifar-10-binary.tar.gz")
