"""Datasets by name: prepare with TFDS, read back into host memory.

Every dataset is a TFDS builder written in `array_record` format and read with
`as_data_source()`, so neither preparing nor reading needs TensorFlow.
Where the files live:

* `data_dir`: where prepared datasets are written and read; default
  `$JAXDL_DATA_DIR`, else TFDS's default (`$TFDS_DATA_DIR` or
  `~/tensorflow_datasets`).
* `manual_dir`: a folder of raw files for offline preparation (each dataset
  looks in its own subfolder, e.g. `mnist/`, then in the folder itself);
  default `$JAXDL_MANUAL_DIR`. When absent the builder downloads.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Sequence

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from jaxdl.data.adfa_ld import AdfaLd
from jaxdl.data.cifar10 import ARCHIVES, Cifar10Binary, find_archive
from jaxdl.data.idx_images import FashionMnistIdx, MnistIdx
from jaxdl.data.raw_files import locate_raw_files
from jaxdl.data.mnist_repeated import MnistBig
from jaxdl.data.tabular import Diabetes
from jaxdl.data.tiny_shakespeare import TinyShakespeareText
from jaxdl.errors import DataError, SettingsError

BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    "mnist": MnistIdx,
    "fashion_mnist": FashionMnistIdx,
    "cifar10": Cifar10Binary,
    "tiny_shakespeare": TinyShakespeareText,
    "adfa_ld": AdfaLd,
    "diabetes": Diabetes,
    "mnist_big": MnistBig,  # MNIST at 56x56, 12 shifted copies: 2.26 GB, larger than memory (data.streaming=true)
}


@dataclasses.dataclass(frozen=True)
class DataSettings:
    """Where a dataset lives and which part of it a run reads (the `data` settings every dataset has).

    A dataset cut into windows (`jaxdl.data.sequences.EXAMPLES`) adds the
    keyword settings of its window maker (e.g. `seq_len`).

    Attributes:
      name: a key of `BUILDERS`.
      data_dir: prepared TFDS datasets (None: $JAXDL_DATA_DIR, else TFDS's default).
      manual_dir: raw files for offline preparation (None: $JAXDL_MANUAL_DIR, else download).
      train_split, eval_split: TFDS split names (slicing such as "train[:10%]" works).
      train_limit, eval_limit: read only the first N records or windows (None: all).
      streaming: read training batches from the prepared files on demand
        instead of into memory (same batches; `jaxdl.data.streaming`).
      num_workers: streaming reader processes (0: one background thread).
      prefetch_batches: streaming: batches each reader keeps ready.
    """

    name: str
    data_dir: str | None = None
    manual_dir: str | None = None
    train_split: str = "train"
    eval_split: str = "test"
    train_limit: int | None = None
    eval_limit: int | None = None
    streaming: bool = False
    num_workers: int = 0
    prefetch_batches: int = 2


def default_data_dir() -> str | None:
    """`$JAXDL_DATA_DIR` if set, else None (TFDS's own default)."""
    return os.environ.get("JAXDL_DATA_DIR") or None


def default_manual_dir() -> str | None:
    """`$JAXDL_MANUAL_DIR` if set, else None (download)."""
    return os.environ.get("JAXDL_MANUAL_DIR") or None


def get_builder(name: str, *, data_dir: str | None = None) -> tfds.core.DatasetBuilder:
    """Returns the (unprepared) TFDS builder of dataset `name`.

    Raises:
      ValueError: unknown name; the message lists the known ones.
    """
    try:
        cls = BUILDERS[name]
    except KeyError:
        raise ValueError(f"Unknown dataset {name!r}; choose one of {sorted(BUILDERS)}.") from None
    return cls(data_dir=data_dir or default_data_dir(), file_format="array_record")


def prepare(name: str, *, data_dir: str | None = None, manual_dir: str | None = None) -> tfds.core.DatasetBuilder:
    """Prepares dataset `name` if it is not yet in `data_dir`, and returns its builder.

    With a `manual_dir` (or `$JAXDL_MANUAL_DIR`) nothing is downloaded: raw
    files missing from it fail at once, naming them.

    Raises:
      jaxdl.data.raw_files.RawFileError (a DataError, a ValueError): raw
        files are missing or do not match their published checksums; nothing is written.
      jaxdl.errors.SettingsError: `manual_dir` is not a folder.
    """
    builder = get_builder(name, data_dir=data_dir)
    manual_dir = manual_dir or default_manual_dir()
    if manual_dir is not None and not os.path.isdir(manual_dir):
        raise SettingsError(f"data.manual_dir={manual_dir!r} is not a folder; fix the path or unset it to download.")
    if manual_dir is not None and not (pathlib.Path(builder.data_path) / "dataset_info.json").exists():
        missing = missing_raw_files(builder, manual_dir)
        if missing:
            raise DataError(
                f"data.manual_dir={manual_dir} lacks {name}'s raw files: {missing}. Put them there, or unset "
                "data.manual_dir (and JAXDL_MANUAL_DIR) to download them."
            )
    config = tfds.download.DownloadConfig(manual_dir=manual_dir)
    builder.download_and_prepare(download_config=config)
    return builder


def missing_raw_files(builder: tfds.core.DatasetBuilder, manual_dir: os.PathLike | str) -> str | None:
    """Which of `builder`'s raw files `manual_dir` lacks, and where they were looked for; None when found.

    Looks where the builder itself looks (its subfolders, then `manual_dir`).
    A folder holding some of the files counts as found: the builder's own
    check then names the missing one. Datasets without raw files (diabetes)
    and ADFA-LD (whose builder never downloads) return None.
    """
    manual = epath.Path(manual_dir)
    if isinstance(builder, Cifar10Binary):
        if find_archive(manual) is not None:
            return None
        names = " or ".join(a.file.name for a in ARCHIVES)
        folders = [manual / "cifar-10", manual / "cifar10", manual]
    elif hasattr(builder, "SUBDIRS") and getattr(builder, "RAW_FILES", ()):
        if locate_raw_files(manual, builder.SUBDIRS, builder.RAW_FILES) is not None:
            return None
        names = ", ".join(f.name for f in builder.RAW_FILES)
        folders = [manual / s for s in builder.SUBDIRS] + [manual]
    else:
        return None
    return f"none of {names} in {', '.join(str(f) for f in folders)}"


def load_arrays(
    builder: tfds.core.DatasetBuilder, split: str, *, limit: int | None = None, role: str | None = None
) -> dict[str, np.ndarray]:
    """Reads a prepared split into host memory as stacked numpy arrays.

    Args:
      builder: a prepared builder.
      split: e.g. "train", "test" (TFDS slicing such as "train[:10%]" works).
      limit: keep only the first `limit` records (for quick runs and tests).
      role: "train" or "eval": which settings (`data.<role>_split`,
        `data.<role>_limit`) the errors name; None names both.

    Returns:
      One array per feature, leading axis N >= 1 (e.g. image uint8 [N, 28, 28, 1],
      label int64 [N]); a variable-length feature (a text, a trace) becomes an
      object array [N] of 1-D arrays.

    Raises:
      jaxdl.errors.SettingsError: `split` is unknown or selects no example,
        or `limit` < 1 (the message names the setting).
      jaxdl.errors.DataError: the prepared files are damaged (truncated,
        garbled); the message names the folder to delete so it is prepared again.
    """
    split_setting = f"data.{role}_split" if role else "the split (data.train_split or data.eval_split)"
    limit_setting = f"data.{role}_limit" if role else "the limit (data.train_limit or data.eval_limit)"
    if limit is not None and limit < 1:
        raise SettingsError(
            f"{limit_setting}={limit} selects no examples of {builder.name}'s {split!r} split; "
            "set it to at least 1, or to null for the whole split."
        )
    try:
        available = builder.info.splits[split].num_examples
    except (KeyError, ValueError) as e:
        raise SettingsError(f"{split_setting}={split!r} cannot be read from {builder.name}: {e}") from None
    if not available:
        sizes = ", ".join(f"{name} {info.num_examples}" for name, info in builder.info.splits.items())
        raise SettingsError(
            f"{split_setting}={split!r} selects no examples of {builder.name} (its splits: {sizes}); "
            "choose a split that holds examples."
        )
    try:
        source = builder.as_data_source(split=split)
        n = len(source) if limit is None else min(limit, len(source))
    except (OSError, RuntimeError, ValueError) as e:
        raise _damaged(builder, e) from e
    cached = _read_array_cache(builder, split, n)
    if cached is not None:
        return cached
    try:
        records = source.__getitems__(list(range(n)))  # one batched read: ~30x faster than per record
    except (OSError, RuntimeError, ValueError) as e:
        raise _damaged(builder, e) from e
    if len(records) != n or any(value is None for r in records for value in r.values()):
        raise _damaged(builder, ValueError(f"{split!r} read back {len(records)} records, some of them empty"))
    arrays = {key: _stack([r[key] for r in records]) for key in records[0]}
    _write_array_cache(builder, split, n, arrays)
    return arrays


def _damaged(builder: tfds.core.DatasetBuilder, error: BaseException) -> DataError:
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    return DataError(
        f"The prepared dataset {builder.name} in {builder.data_path} is damaged ({reason}). Delete that folder and "
        "rerun: it is prepared again from the raw files."
    )


#: Splits up to this size (bytes) are kept as .npz beside the prepared records (0 turns the cache off).
ARRAY_CACHE_MAX_BYTES = 1 << 30


def _array_cache_path(builder: tfds.core.DatasetBuilder, split: str, n: int) -> pathlib.Path | None:
    """`<data_dir>/jaxdl_arrays/<split>-<n>-<stamp>.npz`; the stamp changes whenever the dataset is prepared again."""
    try:
        info = pathlib.Path(builder.data_dir) / "dataset_info.json"
        stamp = info.stat().st_mtime_ns
    except OSError:
        return None
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in split)
    return info.parent / "jaxdl_arrays" / f"{name}-{n}-{stamp}.npz"


def _read_array_cache(builder: tfds.core.DatasetBuilder, split: str, n: int) -> dict[str, np.ndarray] | None:
    """The arrays a previous `load_arrays` stored for (split, n), or None.

    Reading a split's records costs about 2 s for MNIST's 60,000; the .npz
    about 0.05 s, half the set-up of `python -m experiments.run model=vae`.
    """
    path = _array_cache_path(builder, split, n) if ARRAY_CACHE_MAX_BYTES else None
    if path is None or not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            return {key: stored[key] for key in stored.files}
    except (OSError, ValueError):  # unreadable or half-written by a crashed writer: read the records again
        return None


def _write_array_cache(builder: tfds.core.DatasetBuilder, split: str, n: int, arrays: dict[str, np.ndarray]) -> None:
    """Stores `arrays` for `_read_array_cache` (atomically); skips ragged (object) features, large splits and read-only folders."""
    path = _array_cache_path(builder, split, n) if ARRAY_CACHE_MAX_BYTES else None
    if path is None or any(a.dtype == object for a in arrays.values()):
        return
    if sum(a.nbytes for a in arrays.values()) > ARRAY_CACHE_MAX_BYTES:
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    try:
        path.parent.mkdir(exist_ok=True)
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)


def _stack(values: list) -> np.ndarray:
    """np.stack, or an object array [N] when the values' shapes differ (ragged features)."""
    if len({np.shape(v) for v in values}) <= 1:
        return np.stack(values)
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = v
    return out


def describe(builder: tfds.core.DatasetBuilder) -> dict[str, object]:
    """Name, version, location and raw-file fingerprints of a prepared dataset (for manifests)."""
    raw_files = getattr(builder, "RAW_FILES", ())
    return {
        "name": builder.name,
        "version": str(builder.version),
        "data_dir": str(builder.data_dir),
        "raw_files": [{"name": f.name, "size": f.size, "sha256": f.sha256} for f in raw_files],
        "metadata": dict(builder.info.metadata or {}),  # e.g. which CIFAR-10 archive, and whether it is canonical
    }


def load_splits(
    name: str,
    splits: Sequence[str],
    *,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    limits: Sequence[int | None] | None = None,
) -> list[dict[str, np.ndarray]]:
    """Prepares `name` if needed and loads each of `splits` into memory."""
    builder = prepare(name, data_dir=data_dir, manual_dir=manual_dir)
    limits = limits or [None] * len(splits)
    return [load_arrays(builder, split, limit=limit) for split, limit in zip(splits, limits, strict=True)]
