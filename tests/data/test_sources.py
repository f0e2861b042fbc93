"""sources: empty splits, damaged prepared files and raw files missing from manual_dir fail with one clear error."""

import os

import pytest
import tensorflow_datasets as tfds

from jaxdl.data import sources
from jaxdl.errors import DataError, SettingsError, UserError
from tests.data.test_idx_images import tiny_raw  # noqa: F401 (fixture)


@pytest.fixture
def tiny_builder(tiny_raw, tmp_path):  # noqa: F811
    builder_cls, raw, _, _ = tiny_raw
    builder = builder_cls(data_dir=str(tmp_path / "tfds"), file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(raw.parent)))
    return builder


@pytest.mark.parametrize(
    "split, limit, role, message",
    [
        ("train", 0, "train", "data.train_limit=0 selects no examples of tiny_idx's 'train' split; set it to at least 1"),
        ("test", 0, "eval", "data.eval_limit=0 selects no examples"),
        ("test", -3, "eval", "data.eval_limit=-3 selects no examples"),
        ("test[:0]", None, "eval", "data.eval_split='test[:0]' selects no examples of tiny_idx (its splits: train 7, test 3)"),
        ("tset", None, "eval", "data.eval_split='tset' cannot be read from tiny_idx: Unknown split 'tset'"),
        ("test[:0]", None, None, "the split (data.train_split or data.eval_split)='test[:0]' selects no examples"),
    ],
)
def test_a_split_with_no_examples_names_the_setting(tiny_builder, split, limit, role, message):
    with pytest.raises(SettingsError) as info:
        sources.load_arrays(tiny_builder, split, limit=limit, role=role)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


@pytest.mark.parametrize("keep", [lambda size: size - 50, lambda size: 65536, lambda size: 200])
def test_a_truncated_prepared_file_says_to_delete_and_prepare_again(tiny_builder, keep):
    [records] = [p for p in tiny_builder.data_path.iterdir() if p.name.startswith("tiny_idx-train.array_record")]
    size = os.path.getsize(records)
    os.truncate(records, keep(size))
    with pytest.raises(DataError) as info:
        sources.load_arrays(tiny_builder, "train", role="train")
    message = str(info.value)
    assert message.startswith(f"The prepared dataset tiny_idx in {tiny_builder.data_path} is damaged (")
    assert message.endswith("Delete that folder and rerun: it is prepared again from the raw files.")
    assert "\n" not in message


@pytest.mark.parametrize(
    "name, looked_for",
    [
        ("mnist", "none of train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz"),
        ("fashion_mnist", "none of train-images-idx3-ubyte.gz"),
        ("tiny_shakespeare", "none of input.txt in {m}/tinyshakespeare, {m}/tiny_shakespeare, {m}"),
        ("cifar10", "none of cifar-10-binary.tar.gz or cifar-10-binary.tar.xz in {m}/cifar-10, {m}/cifar10, {m}"),
        ("adfa_ld", "ADFA-LD not found in manual_dir={m}"),
    ],
)
def test_a_manual_dir_without_the_raw_files_fails_at_once_without_downloading(tmp_path, monkeypatch, name, looked_for):
    def no_download(self, urls):
        raise AssertionError(f"tried to download {urls}")

    monkeypatch.setattr(tfds.download.DownloadManager, "download", no_download)
    manual = tmp_path / "raw"
    (manual / "unrelated").mkdir(parents=True)  # exists, holds something, but not this dataset
    with pytest.raises(UserError) as info:
        sources.prepare(name, data_dir=str(tmp_path / "tfds"), manual_dir=str(manual))
    message = str(info.value)
    assert looked_for.format(m=manual) in message and "\n" not in message
    assert not list((tmp_path / "tfds").rglob("*.array_record*"))


def test_an_empty_manual_dir_fails_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(tfds.download.DownloadManager, "download", lambda self, urls: pytest.fail("downloaded"))
    (tmp_path / "raw").mkdir()
    with pytest.raises(DataError, match=r"^data.manual_dir=.*/raw lacks mnist's raw files: none of .* Put them there, or unset"):
        sources.prepare("mnist", data_dir=str(tmp_path / "tfds"), manual_dir=str(tmp_path / "raw"))
