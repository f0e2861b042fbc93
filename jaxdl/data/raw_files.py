"""Raw dataset files: where they come from and whether they are intact.

Raw files come from one of two places:

* offline: a local folder (`manual_dir`, or its subfolder named after the
  dataset, e.g. `<manual_dir>/mnist/`) holding the files;
* online: the dataset's public mirror, when no local copy is present.

Either way every file is checked against its published size and sha256
before anything is prepared from it, and a bad file is named with the fix.
"""

from __future__ import annotations

import hashlib
import os
from typing import NamedTuple

import tensorflow_datasets as tfds
from etils import epath

from jaxdl.errors import DataError


class RawFile(NamedTuple):
    """A raw file a dataset is prepared from, with its published fingerprint."""

    name: str
    size: int  # bytes
    sha256: str


class RawFileError(DataError):
    """A raw dataset file is missing, truncated or not the expected file (a user error, and a ValueError)."""


def sha256sum(path: os.PathLike | str, chunk_bytes: int = 1 << 20) -> str:
    """Returns the hex sha256 of a file, read in `chunk_bytes` chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def verify_raw_file(path: epath.Path, expected: RawFile, *, fix: str) -> None:
    """Checks that `path` exists and has the expected size and sha256.

    Raises:
      RawFileError: naming the file, what was expected, what was found and
        `fix`, the sentence telling the user how to get the right file.
    """
    if not path.exists():
        raise RawFileError(f"Missing raw file {path} (expected {expected.size:,} bytes, sha256 {expected.sha256}). {fix}")
    size = os.path.getsize(path)
    if size != expected.size:
        raise RawFileError(
            f"Raw file {path} has {size:,} bytes, expected {expected.size:,} "
            f"(sha256 {expected.sha256}); it is truncated or a different file. {fix}"
        )
    digest = sha256sum(path)
    if digest != expected.sha256:
        raise RawFileError(f"Raw file {path} has sha256 {digest}, expected {expected.sha256}. {fix}")


def locate_raw_files(
    manual_dir: epath.Path | None,
    subdirs: tuple[str, ...],
    files: tuple[RawFile, ...],
) -> epath.Path | None:
    """Returns the folder under `manual_dir` that holds all `files`, if any.

    Looks in `manual_dir/<subdir>` for each of `subdirs`, then in `manual_dir`.
    Returns None when no such folder holds the first file (so the caller may
    download instead); a folder holding some files but not all is returned,
    so that verification names the missing one.
    """
    if manual_dir is None:
        return None
    manual_dir = epath.Path(manual_dir)
    for folder in [manual_dir / s for s in subdirs] + [manual_dir]:
        if any((folder / f.name).exists() for f in files):
            return folder
    return None


def fetch_raw_files(
    dl_manager: tfds.download.DownloadManager,
    *,
    files: tuple[RawFile, ...],
    url_prefix: str,
    subdirs: tuple[str, ...],
    dataset: str,
) -> dict[str, epath.Path]:
    """Finds raw files locally or downloads them, then verifies each one.

    Returns:
      A mapping from file name to a verified local path.

    Raises:
      RawFileError: a file is missing (offline and not downloadable), truncated
        or has the wrong sha256; the message names the file and the fix.
    """
    fix = (
        f"Put the original {dataset} files ({', '.join(f.name for f in files)}) in a folder and point "
        f"data.manual_dir (or the JAXDL_MANUAL_DIR environment variable) at it or at its parent; "
        f"they are published at {url_prefix}."
    )
    try:
        manual_dir = dl_manager.manual_dir
    except AssertionError:  # TFDS's way of saying the manual folder is missing or empty
        manual_dir = None
    folder = locate_raw_files(manual_dir, subdirs, files)
    if folder is not None:
        paths = {f.name: folder / f.name for f in files}
    else:
        try:
            paths = dl_manager.download({f.name: url_prefix + f.name for f in files})
        except Exception as e:  # network errors come in many types
            raise RawFileError(f"Could not download {dataset} from {url_prefix} ({type(e).__name__}: {e}). {fix}") from e
    for f in files:
        verify_raw_file(epath.Path(paths[f.name]), f, fix=fix)
    return {name: epath.Path(p) for name, p in paths.items()}
