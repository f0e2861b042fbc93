"""In-memory batching: order by seed, exact coverage, padding and host slices."""

import numpy as np
import pytest

from jaxdl.data.pipeline import ArrayLoader


def arrays(n: int) -> dict[str, np.ndarray]:
    return {"x": np.arange(n, dtype=np.float32)[:, None] * 10, "y": np.arange(n)}


def test_training_order_depends_only_on_seed_and_epoch():
    a = ArrayLoader(arrays(100), 10, shuffle=True, seed=3, drop_remainder=True)
    b = ArrayLoader(arrays(100), 10, shuffle=True, seed=3, drop_remainder=True)
    c = ArrayLoader(arrays(100), 10, shuffle=True, seed=4, drop_remainder=True)
    first = [batch["y"] for batch in a.epoch(0)]
    np.testing.assert_array_equal(np.concatenate(first), np.concatenate([batch["y"] for batch in b.epoch(0)]))
    assert not np.array_equal(np.concatenate(first), np.concatenate([batch["y"] for batch in c.epoch(0)]))
    assert not np.array_equal(np.concatenate(first), np.concatenate([batch["y"] for batch in a.epoch(1)]))
    assert sorted(np.concatenate(first)) == list(range(100))  # a permutation: every example once


def test_starting_mid_epoch_yields_the_remaining_batches():
    loader = ArrayLoader(arrays(100), 10, shuffle=True, seed=0, drop_remainder=True)
    full = [b["y"] for b in loader.epoch(2)]
    tail = [b["y"] for b in loader.epoch(2, start_step=4)]
    assert len(tail) == 6
    for a, b in zip(full[4:], tail, strict=True):
        np.testing.assert_array_equal(a, b)


def test_index_and_features_stay_aligned():
    loader = ArrayLoader(arrays(50), 8, shuffle=True, seed=1, drop_remainder=True)
    for batch in loader.epoch(0):
        np.testing.assert_array_equal(batch["index"], batch["y"])
        np.testing.assert_array_equal(batch["x"][:, 0], batch["y"] * 10)


def test_evaluation_pads_and_masks_so_every_example_counts_once():
    loader = ArrayLoader(arrays(23), 10, shuffle=False, drop_remainder=False)
    batches = list(loader.epoch(0))
    assert loader.steps_per_epoch == len(batches) == 3
    assert all(len(b["y"]) == 10 for b in batches)
    seen = np.concatenate([b["y"][b["mask"]] for b in batches])
    np.testing.assert_array_equal(seen, np.arange(23))
    assert (batches[-1]["index"][~batches[-1]["mask"]] == -1).all()


def test_hosts_split_each_global_batch_without_overlap():
    parts = [
        list(ArrayLoader(arrays(40), 8, shuffle=True, seed=0, drop_remainder=True, process_index=i, process_count=2).epoch(0))
        for i in range(2)
    ]
    whole = list(ArrayLoader(arrays(40), 8, shuffle=True, seed=0, drop_remainder=True).epoch(0))
    for a, b, w in zip(parts[0], parts[1], whole, strict=True):
        np.testing.assert_array_equal(np.concatenate([a["y"], b["y"]]), w["y"])


def test_bad_settings_name_the_fix():
    with pytest.raises(ValueError, match="lower trainer.batch_size"):
        ArrayLoader(arrays(5), 10, shuffle=True, drop_remainder=True)
    with pytest.raises(ValueError, match="one common length"):
        ArrayLoader({"x": np.zeros(3), "y": np.zeros(4)}, 1, shuffle=False, drop_remainder=False)
    with pytest.raises(ValueError, match="divisible by 3 processes"):
        ArrayLoader(arrays(30), 10, shuffle=False, drop_remainder=False, process_count=3)
