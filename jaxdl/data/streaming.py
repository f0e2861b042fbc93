"""Streaming batches from a TFDS array_record split, for data larger than host memory.

The in-memory `ArrayLoader` holds a whole split as numpy arrays; this loader
holds only the split's *indices* and reads each batch's records from the
array_record files when it is needed, through grain: batched index reads
(`source.__getitems__`, one call per batch), optional worker processes
(`mp_prefetch`) and a bounded prefetch buffer. Host memory is then bounded by
the buffers (about `(num_workers + 1) * prefetch_batches` batches) plus 4 + 8
bytes per example for the index and the epoch's permutation, whatever the
size of the records on disk.

Same batches as in memory: the order is not re-implemented here. The loader
wraps an `ArrayLoader` over the index array `arange(N)` and reads the records
of exactly the indices it yields, so for the same `(seed, epoch)` both paths
give the same examples in the same batches, with the same `index`, host
slicing, padding and `mask`. Resuming needs no iterator state either: the
position in the stream is a pure function of the optimizer step (epoch =
step // steps_per_epoch, offset = step % steps_per_epoch), which every
checkpoint already holds, and `epoch(e, start_step=offset)` starts there.

Shapes: each batch is a dict of [B / process_count, ...] arrays, as
`ArrayLoader.epoch` yields (e.g. image uint8 [b, 28, 28, 1], label int64
[b], index int32 [b], and mask bool [b] when padded).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import grain
import numpy as np

from jaxdl.data.pipeline import ArrayLoader


class ReadBatch(grain.transforms.Map):
    """Reads the records of one batch of indices: {"index", ["mask"]} -> the full batch.

    Padding rows (index -1) are filled with zeros, as `ArrayLoader` pads them.
    Picklable, so grain can run it in worker processes.

    Args:
      source: random-access source of feature dicts (`tfds.data_source`, or any
        sequence with `__getitems__` or `__getitem__`).
      keys: features to keep (None: all).
    """

    def __init__(self, source: Sequence[dict[str, Any]], keys: Sequence[str] | None = None):
        self.source = source
        self.keys = None if keys is None else tuple(keys)

    def read(self, indices: np.ndarray) -> list[dict[str, Any]]:
        """Records of `indices` (int [n], all valid), in that order: one batched read when the source has one."""
        indices = [int(i) for i in indices]
        if hasattr(self.source, "__getitems__"):
            return list(self.source.__getitems__(indices))
        return [self.source[i] for i in indices]

    def map(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        index = batch["index"]
        valid = index >= 0
        records = self.read(index[valid])
        keys = self.keys if self.keys is not None else tuple(records[0])
        out = {}
        for key in keys:
            values = np.stack([np.asarray(r[key]) for r in records])  # [valid, ...]
            if not valid.all():
                values = np.concatenate([values, np.zeros((len(index) - len(values), *values.shape[1:]), values.dtype)])
            out[key] = values
        out.update(batch)
        return out


class StreamingLoader:
    """Batches a split read from its array_record files on demand (same order as `ArrayLoader`).

    Args:
      source: random-access source of the split, e.g.
        `builder.as_data_source(split="train")` (records are dicts of arrays of
        one fixed shape per feature).
      batch_size, shuffle, seed, drop_remainder, process_index, process_count:
        as for `ArrayLoader`.
      limit: use only the first `limit` records (None: all).
      num_workers: grain worker processes reading batches (0: one background
        thread in this process). Workers are started with "spawn", so the
        program's entry point needs an `if __name__ == "__main__":` guard.
      prefetch_batches: batches each reader keeps ready ahead of the step.
      keys: features to read (None: all).

    Raises:
      ValueError: as `ArrayLoader`, or a negative worker or prefetch count.
    """

    def __init__(
        self,
        source: Sequence[dict[str, Any]],
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        drop_remainder: bool,
        process_index: int = 0,
        process_count: int = 1,
        limit: int | None = None,
        num_workers: int = 0,
        prefetch_batches: int = 2,
        keys: Sequence[str] | None = None,
    ):
        if num_workers < 0 or prefetch_batches < 1:
            raise ValueError(
                f"data.num_workers={num_workers} must be >= 0 and data.prefetch_batches={prefetch_batches} >= 1."
            )
        size = len(source) if limit is None else min(limit, len(source))
        self.source = source
        self.sampler = ArrayLoader(
            {"index": np.arange(size, dtype=np.int32)},
            batch_size,
            shuffle=shuffle,
            seed=seed,
            drop_remainder=drop_remainder,
            process_index=process_index,
            process_count=process_count,
        )
        self.reader = ReadBatch(source, keys)
        self.num_workers = num_workers
        self.prefetch_batches = prefetch_batches

    size = property(lambda self: self.sampler.size)
    batch_size = property(lambda self: self.sampler.batch_size)
    steps_per_epoch = property(lambda self: self.sampler.steps_per_epoch)

    def order(self, epoch: int) -> np.ndarray:
        """int64 [N] indices in the order epoch `epoch` visits them (the same as `ArrayLoader.order`)."""
        return self.sampler.order(epoch)

    def example(self, n: int = 1) -> dict[str, np.ndarray]:
        """The first `n` records as arrays [n, ...] without `index` (shapes and dtypes for initialising a model)."""
        batch = self.reader.map({"index": np.arange(n, dtype=np.int32)})
        return {k: v for k, v in batch.items() if k != "index"}

    def dataset(self, epoch: int, *, start_step: int = 0) -> grain.IterDataset:
        """The grain pipeline of `epoch` from batch `start_step` on: index batches -> read -> prefetch."""
        index_batches = list(self.sampler.epoch(epoch, start_step=start_step))  # [steps] of {"index", ["mask"]}
        ds = grain.MapDataset.source(index_batches).map(self.reader).to_iter_dataset()
        if self.num_workers == 0:
            return grain.experimental.ThreadPrefetchIterDataset(ds, prefetch_buffer_size=self.prefetch_batches)
        _absl_flags_parsed()
        options = grain.MultiprocessingOptions(
            num_workers=self.num_workers, per_worker_buffer_size=self.prefetch_batches
        )
        return ds.mp_prefetch(options)

    def epoch(self, epoch: int, *, start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
        """Yields this host's part of each batch of `epoch`, from batch `start_step` on (as `ArrayLoader.epoch`)."""
        if start_step >= self.steps_per_epoch:
            return
        iterator = iter(self.dataset(epoch, start_step=start_step))
        try:
            yield from iterator
        finally:
            close = getattr(iterator, "close", None)  # stops worker processes of an abandoned epoch
            if close is not None:
                close()


def _absl_flags_parsed() -> None:
    """grain's workers read absl flags: mark them parsed under an entry point that never parses them (Hydra)."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
