"""TFDS builder for ADFA-LD, the ADFA Linux host-intrusion dataset of system-call traces.

Creech & Hu 2014, "A Semantic Approach to Host-Based Intrusion Detection
Systems Using Contiguous and Discontiguous System Call Patterns" (IEEE Trans.
Computers 63(4)); Creech & Hu 2013 (IEEE WCNC). Collected at UNSW Canberra
(ADFA) on Ubuntu 11.04 (Linux 2.6.38): each trace is the sequence of 32-bit x86
system-call numbers one process made.

Manual download only (the dataset is distributed by UNSW Canberra, without a
published checksum): put `ADFA-LD.tar.gz` (746,712 bytes, sha256 b5a34331...,
a content-exact repack of the public copy) or the extracted folders in
`manual_dir` or `manual_dir/adfa-ld/`. The archive is verified by size and
sha256; extracted folders are verified by their trace counts.

Splits (records sorted by file path):
  train       Training_Data_Master      833 normal traces
  validation  Validation_Data_Master  4,372 normal traces
  attack      Attack_Data_Master        746 attack traces in 6 families x 10 folders

Features: `syscalls` int32 [L] (system-call numbers, 1..340 in this data),
`length` int32 (L), `label` ClassLabel normal/attack, `family` ClassLabel
(normal or one of the six attack families), `name` text (path inside the
dataset, e.g. "Attack_Data_Master/Adduser_1/UAD-Adduser-1-1371.txt").
"""

from __future__ import annotations

import os
import pathlib
import re
import tarfile
from collections.abc import Iterable, Iterator

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from jaxdl.data.raw_files import RawFile, RawFileError, verify_raw_file

ARCHIVE = RawFile("ADFA-LD.tar.gz", 746_712, "b5a343311be70cedc5658ea4195d450e17022a9772acf41a646833ff8fbc23f9")
SUBDIRS = ("adfa-ld", "adfa_ld", "ADFA-LD")
FOLDERS = {"train": "Training_Data_Master", "validation": "Validation_Data_Master", "attack": "Attack_Data_Master"}
COUNTS = {"train": 833, "validation": 4_372, "attack": 746}
FAMILIES = ("normal", "Adduser", "Hydra_FTP", "Hydra_SSH", "Java_Meterpreter", "Meterpreter", "Web_Shell")
MAX_SYSCALL = 340  # largest system-call number in ADFA-LD (prlimit64 on 32-bit x86 Linux 2.6.38)

_FAMILY_FOLDER = re.compile(r"^(?P<family>[A-Za-z_]+?)_\d+$")  # "Hydra_FTP_7" -> "Hydra_FTP"

_CITATION = """@article{creech2014semantic,
  title={A Semantic Approach to Host-Based Intrusion Detection Systems Using Contiguous and Discontiguous System Call Patterns},
  author={Creech, Gideon and Hu, Jiankun}, journal={IEEE Transactions on Computers}, volume={63}, number={4},
  pages={807--819}, year={2014}}
@inproceedings{creech2013generation,
  title={Generation of a new IDS test dataset: Time to retire the KDD collection},
  author={Creech, Gideon and Hu, Jiankun}, booktitle={IEEE Wireless Communications and Networking Conference (WCNC)},
  pages={4487--4492}, year={2013}}"""

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""ADFA-LD must be downloaded by hand from UNSW Canberra (the ADFA IDS datasets page,
https://research.unsw.edu.au/projects/adfa-ids-datasets; cite Creech & Hu 2014, IEEE Trans. Computers 63(4)).
Place either {ARCHIVE.name} ({ARCHIVE.size:,} bytes, sha256 {ARCHIVE.sha256}) or the extracted folders
{', '.join(FOLDERS.values())} in data.manual_dir (or $JAXDL_MANUAL_DIR), or in its subfolder adfa-ld/."""


def parse_trace(text: str, *, source: str, max_call: int | None = None) -> np.ndarray:
    """Parses one trace: whitespace-separated system-call numbers.

    Args:
      text: the file's contents.
      source: file name used in error messages.
      max_call: the largest number accepted (e.g. a model's vocabulary size - 1); None: any.

    Returns:
      int32 [L] system-call numbers, L >= 1.

    Raises:
      RawFileError: a token that is not a non-negative integer or exceeds
        `max_call` (naming the file, line and token), or an empty trace.
    """
    calls: list[int] = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        for token in line.split():
            if not token.isdigit():
                raise RawFileError(f"{source}, line {line_number}: {token!r} is not a system-call number.")
            if max_call is not None and int(token) > max_call:
                raise RawFileError(
                    f"{source}, line {line_number}: system call {token} is outside the model's vocabulary 0..{max_call}."
                )
            calls.append(int(token))
    if not calls:
        raise RawFileError(f"{source}: the trace is empty (expected space-separated system-call numbers).")
    return np.asarray(calls, dtype=np.int32)


def read_trace(path: os.PathLike | str, *, max_call: int | None = None) -> np.ndarray:
    """Reads a trace file; see `parse_trace`.

    Raises:
      RawFileError: missing file, non-ASCII bytes or bad content, naming the file (and line).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise RawFileError(f"{path}: no such trace file.")
    try:
        text = path.read_text(encoding="ascii")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise RawFileError(f"{path}, line {line}: byte {e.object[e.start]:#x} is not ASCII; not a trace file.") from None
    return parse_trace(text, source=str(path), max_call=max_call)


def family_of(name: str) -> str:
    """Attack family of a trace path ("Attack_Data_Master/Hydra_FTP_7/UAD-...txt" -> "Hydra_FTP"), "normal" otherwise."""
    parts = pathlib.PurePosixPath(name).parts
    if FOLDERS["attack"] not in parts:
        return "normal"
    folder = parts[parts.index(FOLDERS["attack"]) + 1]
    match = _FAMILY_FOLDER.match(folder)
    if match is None or match["family"] not in FAMILIES:
        raise RawFileError(f"Attack folder {folder!r} of {name} is not one of the families {FAMILIES[1:]}.")
    return match["family"]


def _relative(name: str) -> str | None:
    """"ADFA-LD/Attack_Data_Master/x/y.txt" -> "Attack_Data_Master/x/y.txt"; None outside the three folders."""
    parts = pathlib.PurePosixPath(name).parts
    for i, part in enumerate(parts):
        if part in FOLDERS.values():
            return str(pathlib.PurePosixPath(*parts[i:])) if name.endswith(".txt") else None
    return None


def _from_archive(path: epath.Path) -> Iterator[tuple[str, str]]:
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:
            rel = _relative(member.name) if member.isfile() else None
            if rel is not None:
                yield rel, tar.extractfile(member).read().decode("ascii", errors="strict")


def _from_folders(root: epath.Path) -> Iterator[tuple[str, str]]:
    for folder in FOLDERS.values():
        for path in sorted(pathlib.Path(root, folder).rglob("*.txt")):
            yield str(path.relative_to(root)), path.read_text(encoding="ascii")


def locate(manual_dir: epath.Path | None, archive: RawFile = ARCHIVE) -> tuple[str, epath.Path]:
    """Finds the archive (named like `archive`) or the extracted folders under `manual_dir`.

    Returns:
      ("archive", path to ADFA-LD.tar.gz) or ("folders", the folder holding the three *_Data_Master folders).

    Raises:
      RawFileError: nothing found; the message holds the download instructions.
    """
    if manual_dir is not None:
        manual_dir = epath.Path(manual_dir)
        for base in [manual_dir / s for s in SUBDIRS] + [manual_dir]:
            if (base / archive.name).exists():
                return "archive", base / archive.name
            for root in (base, base / "ADFA-LD"):
                if all((root / f).is_dir() for f in FOLDERS.values()):
                    return "folders", root
    raise RawFileError(f"ADFA-LD not found in manual_dir={manual_dir}. {MANUAL_DOWNLOAD_INSTRUCTIONS}")


def read_traces(
    kind: str, path: epath.Path, *, counts: dict[str, int] | None = None, archive: RawFile = ARCHIVE
) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Reads every trace, grouped by split and sorted by path.

    Args:
      kind, path: what `locate` returned (an archive is verified first).
      counts: expected traces per split (default: the published ADFA-LD counts).
      archive: the expected archive's size and sha256.

    Raises:
      RawFileError: wrong archive, malformed trace, or split counts that differ from `counts`.
    """
    counts = COUNTS if counts is None else counts
    if kind == "archive":
        verify_raw_file(path, archive, fix=MANUAL_DOWNLOAD_INSTRUCTIONS)
        items: Iterable[tuple[str, str]] = _from_archive(path)
    else:
        items = _from_folders(path)
    splits: dict[str, list[tuple[str, np.ndarray]]] = {s: [] for s in FOLDERS}
    split_of = {folder: split for split, folder in FOLDERS.items()}
    for rel, text in items:
        trace = parse_trace(text, source=f"{path}:{rel}" if kind == "archive" else str(pathlib.Path(path, rel)))
        splits[split_of[pathlib.PurePosixPath(rel).parts[0]]].append((rel, trace))
    found = {s: len(v) for s, v in splits.items()}
    if found != counts:
        raise RawFileError(f"{path} holds {found} traces per split, expected {counts}; it is incomplete or not ADFA-LD.")
    return {s: sorted(v, key=lambda item: item[0]) for s, v in splits.items()}


class AdfaLd(tfds.core.GeneratorBasedBuilder):
    """ADFA-LD system-call traces: train / validation (normal) and attack splits."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Traces read from ADFA-LD.tar.gz or the extracted folders, without TensorFlow."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    ARCHIVE = ARCHIVE
    RAW_FILES = (ARCHIVE,)  # when prepared from the archive; extracted folders are checked by counts
    #: Expected traces per split; tests substitute a tiny synthetic copy (with its ARCHIVE).
    COUNTS = COUNTS

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="ADFA-LD: system-call traces of normal processes and of six attack families (UNSW Canberra).",
            features=tfds.features.FeaturesDict(
                {
                    "syscalls": tfds.features.Tensor(shape=(None,), dtype=np.int32),
                    "length": np.int32,
                    "label": tfds.features.ClassLabel(names=["normal", "attack"]),
                    "family": tfds.features.ClassLabel(names=list(FAMILIES)),
                    "name": tfds.features.Text(),
                }
            ),
            disable_shuffling=True,
            homepage="https://research.unsw.edu.au/projects/adfa-ids-datasets",
            citation=_CITATION,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        try:
            manual_dir = dl_manager.manual_dir
        except AssertionError:  # TFDS's way of saying the manual folder is missing or empty
            manual_dir = None
        splits = read_traces(*locate(manual_dir, self.ARCHIVE), counts=self.COUNTS, archive=self.ARCHIVE)
        return {split: self._generate_examples(traces) for split, traces in splits.items()}

    def _generate_examples(self, traces: list[tuple[str, np.ndarray]]) -> Iterator[tuple[int, dict]]:
        for i, (name, syscalls) in enumerate(traces):
            family = family_of(name)
            yield i, {
                "syscalls": syscalls,
                "length": len(syscalls),
                "label": "normal" if family == "normal" else "attack",
                "family": family,
                "name": name,
            }
