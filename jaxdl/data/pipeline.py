"""In-memory batching: shuffle by seed, batch, pad and mask the last eval batch.

The fast path for datasets that fit in host memory (MNIST, CIFAR-10): the
whole split is one dict of numpy arrays, each epoch is a permutation drawn
from `(seed, epoch)`, and batches are gathered by fancy indexing. Because the
order depends only on the seed and the epoch, a run resumed at step s of an
epoch sees exactly the batches an uninterrupted run sees from step s on.

Every batch also carries `index` (int32 [B], the example's position in the
split; -1 for padding), from which tasks derive per-example random streams,
and eval batches carry `mask` (bool [B]).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np


class ArrayLoader:
    """Batches a split held in memory.

    Args:
      arrays: feature name -> array with a common leading axis N.
      batch_size: global batch size B (over all hosts and devices).
      shuffle: draw a new order every epoch (training); else keep file order.
      seed: seeds the per-epoch permutations.
      drop_remainder: drop the last partial batch (training); otherwise pad
        it to B with zeros and mark the padding with mask == False.
      process_index, process_count: this host's slice of every global batch
        (multi-host); each host gets B / process_count examples.

    Raises:
      ValueError: empty arrays, mismatched lengths, or a batch size that is
        not positive or does not split over the hosts.
    """

    def __init__(
        self,
        arrays: Mapping[str, np.ndarray],
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        drop_remainder: bool,
        process_index: int = 0,
        process_count: int = 1,
    ):
        lengths = {k: len(v) for k, v in arrays.items()}
        if not lengths or len(set(lengths.values())) != 1:
            raise ValueError(f"arrays must be non-empty with one common length, got {lengths}.")
        if batch_size <= 0 or batch_size % process_count:
            raise ValueError(f"batch_size={batch_size} must be positive and divisible by {process_count} processes.")
        self.arrays = dict(arrays)
        self.size = next(iter(lengths.values()))
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_remainder = drop_remainder
        self.process_index = process_index
        self.process_count = process_count
        if drop_remainder and self.size < batch_size:
            raise ValueError(
                f"The split has {self.size} examples, fewer than one batch of {batch_size}; lower trainer.batch_size."
            )

    @property
    def steps_per_epoch(self) -> int:
        """Batches in one pass over the split."""
        if self.drop_remainder:
            return self.size // self.batch_size
        return -(-self.size // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """int64 [N] indices of the split in the order epoch `epoch` visits them."""
        if not self.shuffle:
            return np.arange(self.size)
        return np.random.default_rng([self.seed, epoch]).permutation(self.size)

    def epoch(self, epoch: int, *, start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
        """Yields this host's part of each batch of `epoch`, from batch `start_step` on.

        Yields:
          dict of [B / process_count, ...] arrays plus `index` (int32) and,
          when batches are padded, `mask` (bool).
        """
        order = self.order(epoch)
        local = self.batch_size // self.process_count
        for step in range(start_step, self.steps_per_epoch):
            idx = order[step * self.batch_size : (step + 1) * self.batch_size]
            idx = idx[self.process_index * local : (self.process_index + 1) * local]
            batch = {k: v[idx] for k, v in self.arrays.items()}
            batch["index"] = idx.astype(np.int32)
            if not self.drop_remainder:
                batch = _pad(batch, local, valid=len(idx))
            yield batch


def _pad(batch: dict[str, np.ndarray], size: int, *, valid: int) -> dict[str, np.ndarray]:
    """Pads every array to `size` rows with zeros (index -1) and adds `mask`."""
    pad = size - valid
    out = {}
    for k, v in batch.items():
        fill = -1 if k == "index" else 0
        out[k] = np.concatenate([v, np.full((pad, *v.shape[1:]), fill, v.dtype)]) if pad else v
    out["mask"] = np.arange(size) < valid
    return out
