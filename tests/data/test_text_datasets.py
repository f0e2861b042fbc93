"""TFDS builders for tiny Shakespeare and ADFA-LD: synthetic raw files, checks, and the real data."""

import hashlib
import io
import pathlib
import tarfile

import numpy as np
import pytest
import tensorflow_datasets as tfds
import yaml

from jaxdl.data import sequences, sources
from jaxdl.data.adfa_ld import AdfaLd, RawFileError, read_trace
from jaxdl.data.raw_files import RawFile
from jaxdl.data.tiny_shakespeare import VOCABULARY, TinyShakespeareText
from tests.conftest import REPO, _raw_dir


def fingerprint(path: pathlib.Path) -> RawFile:
    data = path.read_bytes()
    return RawFile(path.name, len(data), hashlib.sha256(data).hexdigest())


def prepare(builder_cls, raw_root, tmp_path):
    builder = builder_cls(data_dir=str(tmp_path / "tfds"), file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(raw_root)))
    return builder


@pytest.fixture
def tiny_text(tmp_path):
    folder = tmp_path / "raw" / "tinyshakespeare"
    folder.mkdir(parents=True)
    text = ("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 5).encode()
    (folder / "input.txt").write_bytes(text)

    class TinyText(TinyShakespeareText, skip_registration=True):
        FILE = fingerprint(folder / "input.txt")

    return TinyText, tmp_path / "raw", text


def test_text_is_split_ninety_ten_as_nanogpt(tiny_text, tmp_path):
    builder_cls, raw, text = tiny_text
    builder = prepare(builder_cls, raw, tmp_path)
    train, held = (sources.load_arrays(builder, s) for s in ("train", "validation"))
    cut = int(len(text) * 0.9)
    assert train["text"][0].tobytes() == text[:cut] and held["text"][0].tobytes() == text[cut:]


def test_truncated_text_is_refused(tiny_text, tmp_path):
    builder_cls, raw, text = tiny_text
    (raw / "tinyshakespeare" / "input.txt").write_bytes(text[:-3])
    with pytest.raises(RawFileError, match="truncated"):
        prepare(builder_cls, raw, tmp_path)


def test_the_configured_vocabulary_is_the_files_characters():
    config = yaml.safe_load((REPO / "conf" / "data" / "tiny_shakespeare.yaml").read_text())
    assert config["vocabulary"] == VOCABULARY and len(VOCABULARY) == 65
    assert "vocab_size" not in config  # the vocabulary's length is the one home of the token count
    assert "".join(sorted(VOCABULARY)) == VOCABULARY


TRACES = {
    "Training_Data_Master/UTD-0001.txt": "6 6 63 6 42\n120 6\n",
    "Training_Data_Master/UTD-0002.txt": "3 4 5 ",
    "Validation_Data_Master/UVD-0001.txt": "6 6 63",
    "Validation_Data_Master/UVD-0002.txt": "1 2\n",
    "Validation_Data_Master/UVD-0003.txt": "5 5 5 5",
    "Attack_Data_Master/Adduser_1/UAD-Adduser-1-1.txt": "11 22 33",
    "Attack_Data_Master/Web_Shell_10/UAD-WS2-10-5.txt": "340 1",
}
COUNTS = {"train": 2, "validation": 3, "attack": 2}


def write_archive(path: pathlib.Path, traces=TRACES) -> RawFile:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in sorted(traces.items()):
            data = text.encode()
            info = tarfile.TarInfo(f"ADFA-LD/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return fingerprint(path)


def tiny_adfa(archive: RawFile):
    class TinyAdfa(AdfaLd, skip_registration=True):
        ARCHIVE = archive
        RAW_FILES = (archive,)
        COUNTS = globals()["COUNTS"]

    return TinyAdfa


def test_traces_are_read_from_the_archive_with_labels_and_families(tmp_path):
    raw = tmp_path / "raw" / "adfa-ld"
    raw.mkdir(parents=True)
    builder = prepare(tiny_adfa(write_archive(raw / "ADFA-LD.tar.gz")), raw.parent, tmp_path)
    train, attack = sources.load_arrays(builder, "train"), sources.load_arrays(builder, "attack")
    np.testing.assert_array_equal(train["syscalls"][0], [6, 6, 63, 6, 42, 120, 6])
    assert list(train["length"]) == [7, 3] and list(train["label"]) == [0, 0]
    names = builder.info.features["family"].names
    assert [names[f] for f in attack["family"]] == ["Adduser", "Web_Shell"] and list(attack["label"]) == [1, 1]
    both = sources.load_arrays(builder, "validation+attack")
    assert len(both["syscalls"]) == 5 and both["name"][0] == b"Validation_Data_Master/UVD-0001.txt"


def test_extracted_folders_give_the_same_records(tmp_path):
    root = tmp_path / "raw" / "adfa-ld" / "ADFA-LD"
    for name, text in TRACES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    archive = write_archive(tmp_path / "ADFA-LD.tar.gz")  # elsewhere: only its fingerprint is used
    builder = prepare(tiny_adfa(archive), tmp_path / "raw", tmp_path)
    np.testing.assert_array_equal(sources.load_arrays(builder, "attack")["syscalls"][1], [340, 1])


def test_a_malformed_trace_is_named_with_its_line(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    bad = dict(TRACES)
    bad["Validation_Data_Master/UVD-0002.txt"] = "1 2\n3 x4\n"
    with pytest.raises(RawFileError, match=r"UVD-0002.txt, line 2: 'x4' is not a system-call number"):
        prepare(tiny_adfa(write_archive(raw / "ADFA-LD.tar.gz", bad)), raw, tmp_path)


def test_wrong_counts_and_missing_data_are_explained(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    fewer = {k: v for k, v in TRACES.items() if "UVD-0003" not in k}
    with pytest.raises(RawFileError, match="incomplete or not ADFA-LD"):
        prepare(tiny_adfa(write_archive(raw / "ADFA-LD.tar.gz", fewer)), raw, tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README").write_text("nothing here")
    with pytest.raises(RawFileError, match="UNSW Canberra"):
        prepare(AdfaLd, empty, tmp_path / "other")


def test_read_trace_checks_the_vocabulary(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("1 2 3\n4 341\n")
    with pytest.raises(RawFileError, match=r"t.txt, line 2: system call 341 is outside"):
        read_trace(path, max_call=340)
    np.testing.assert_array_equal(read_trace(path), [1, 2, 3, 4, 341])
    with pytest.raises(RawFileError, match="no such trace file"):
        read_trace(tmp_path / "missing.txt")


@pytest.fixture(scope="module")
def real_data_dir(tmp_path_factory):
    root = _raw_dir("adfa-ld") and _raw_dir("tinyshakespeare")
    if root is None:
        pytest.skip("real ADFA-LD / tiny Shakespeare not available: set JAXDL_MANUAL_DIR to a folder with "
                    "adfa-ld/ADFA-LD.tar.gz and tinyshakespeare/input.txt")
    return tmp_path_factory.mktemp("tfds"), root.parent


def test_real_adfa_ld_has_the_published_counts(real_data_dir):
    data_dir, manual = real_data_dir
    builder = sources.prepare("adfa_ld", data_dir=str(data_dir), manual_dir=str(manual))
    counts = {s: builder.info.splits[s].num_examples for s in ("train", "validation", "attack")}
    assert counts == {"train": 833, "validation": 4372, "attack": 746}
    attack = sources.load_arrays(builder, "attack")
    names = builder.info.features["family"].names
    per_family = dict(zip(*np.unique([names[f] for f in attack["family"]], return_counts=True)))
    assert per_family == {"Adduser": 91, "Hydra_FTP": 162, "Hydra_SSH": 176, "Java_Meterpreter": 124,
                          "Meterpreter": 75, "Web_Shell": 118}
    assert int(sources.load_arrays(builder, "train")["length"].sum()) == 308_077


def test_real_tiny_shakespeare_splits_and_windows(real_data_dir):
    data_dir, manual = real_data_dir
    train, held = sources.load_splits("tiny_shakespeare", ["train", "validation"], data_dir=str(data_dir),
                                      manual_dir=str(manual))
    assert train["text"].shape == (1, 1_003_854) and held["text"].shape == (1, 111_540)
    tr, ev = sequences.text_examples(train, held, seq_len=64, vocabulary=VOCABULARY)
    assert len(tr["tokens"]) == 1_003_790 and len(ev["tokens"]) == 1_743 and ev["token_mask"].sum() == 111_539
