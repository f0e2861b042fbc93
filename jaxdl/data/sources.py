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

import os
from collections.abc import Sequence

import numpy as np
import tensorflow_datasets as tfds

from jaxdl.data.adfa_ld import AdfaLd
from jaxdl.data.cifar10 import Cifar10Binary
from jaxdl.data.idx_images import FashionMnistIdx, MnistIdx
from jaxdl.data.tabular import Diabetes
from jaxdl.data.tiny_shakespeare import TinyShakespeareText

BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    "mnist": MnistIdx,
    "fashion_mnist": FashionMnistIdx,
    "cifar10": Cifar10Binary,
    "tiny_shakespeare": TinyShakespeareText,
    "adfa_ld": AdfaLd,
    "diabetes": Diabetes,
}


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

    Raises:
      jaxdl.data.idx_images.RawFileError (a ValueError): raw files are missing
        or do not match their published checksums; nothing is written.
    """
    builder = get_builder(name, data_dir=data_dir)
    manual_dir = manual_dir or default_manual_dir()
    if manual_dir is not None and not os.path.isdir(manual_dir):
        raise FileNotFoundError(f"data.manual_dir={manual_dir!r} is not a folder; fix the path or unset it to download.")
    config = tfds.download.DownloadConfig(manual_dir=manual_dir)
    builder.download_and_prepare(download_config=config)
    return builder


def load_arrays(builder: tfds.core.DatasetBuilder, split: str, *, limit: int | None = None) -> dict[str, np.ndarray]:
    """Reads a prepared split into host memory as stacked numpy arrays.

    Args:
      builder: a prepared builder.
      split: e.g. "train", "test" (TFDS slicing such as "train[:10%]" works).
      limit: keep only the first `limit` records (for quick runs and tests).

    Returns:
      One array per feature, leading axis N (e.g. image uint8 [N, 28, 28, 1],
      label int64 [N]); a variable-length feature (a text, a trace) becomes an
      object array [N] of 1-D arrays.
    """
    source = builder.as_data_source(split=split)
    n = len(source) if limit is None else min(limit, len(source))
    records = source.__getitems__(list(range(n)))  # one batched read: ~30x faster than per record
    return {key: _stack([r[key] for r in records]) for key in records[0]}


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
