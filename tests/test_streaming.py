"""Streaming input gives the batches of the in-memory path, and a resumed streaming run continues exactly."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxdl import experiment
from jaxdl.data import sources
from jaxdl.data.pipeline import ArrayLoader
from jaxdl.data.streaming import StreamingLoader
from jaxdl.metrics.writers import read_metrics
from jaxdl.training import parallel

TRAIN, TEST = 83, 21  # not multiples of the batch sizes, so epochs drop and eval pads


class TinyRecords(tfds.core.GeneratorBasedBuilder):
    """83 + 21 random 6x6 grey images with labels 0..9, written as array_record without TensorFlow."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self) -> tfds.core.DatasetInfo:
        features = tfds.features.FeaturesDict(
            {
                "image": tfds.features.Tensor(shape=(6, 6, 1), dtype=np.uint8),
                "label": tfds.features.Tensor(shape=(), dtype=np.int64),
            }
        )
        return tfds.core.DatasetInfo(builder=self, features=features, disable_shuffling=True)

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples(TRAIN, 0), "test": self._generate_examples(TEST, 1)}

    def _generate_examples(self, n, seed):
        rng = np.random.default_rng(seed)
        images = rng.integers(0, 256, (n, 6, 6, 1), dtype=np.uint8)
        labels = images.reshape(n, -1).mean(1) // 26  # learnable: the label is the mean brightness decile
        for i in range(n):
            yield i, {"image": images[i], "label": np.int64(min(labels[i], 9))}


@pytest.fixture(scope="module")
def builder(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    b = TinyRecords(data_dir=str(data_dir), file_format="array_record")
    b.download_and_prepare()
    return b


def batches(loader, epoch, start_step=0):
    return list(loader.epoch(epoch, start_step=start_step))


def assert_same_batches(expected, actual):
    assert len(expected) == len(actual) > 0
    for e, a in zip(expected, actual, strict=True):
        assert sorted(e) == sorted(a)
        for k in e:
            assert e[k].dtype == a[k].dtype and e[k].shape == a[k].shape, k
            np.testing.assert_array_equal(e[k], a[k], err_msg=k)


@pytest.mark.parametrize(
    "settings",
    [
        dict(batch_size=8, shuffle=True, seed=0, drop_remainder=True),
        dict(batch_size=8, shuffle=True, seed=5, drop_remainder=True, limit=50),
        dict(batch_size=8, shuffle=True, seed=1, drop_remainder=True, process_index=1, process_count=2),
        dict(batch_size=16, shuffle=False, drop_remainder=False),  # eval: last batch padded and masked
    ],
    ids=["train", "limit", "second_host", "eval_padded"],
)
def test_streaming_gives_the_in_memory_batches(builder, settings):
    settings = dict(settings)
    limit = settings.pop("limit", None)
    memory = ArrayLoader(sources.load_arrays(builder, "train", limit=limit), **settings)
    stream = StreamingLoader(builder.as_data_source(split="train"), limit=limit, **settings)
    assert stream.steps_per_epoch == memory.steps_per_epoch and stream.size == memory.size
    for epoch in (0, 1):
        assert_same_batches(batches(memory, epoch), batches(stream, epoch))
    if not settings["shuffle"]:
        assert not batches(stream, 0)[-1]["mask"].all()


def test_epochs_differ_and_depend_on_the_seed(builder):
    def first_index(seed, epoch):
        loader = StreamingLoader(builder.as_data_source(split="train"), 8, shuffle=True, seed=seed, drop_remainder=True)
        return batches(loader, epoch)[0]["index"]

    assert not np.array_equal(first_index(0, 0), first_index(0, 1))
    assert not np.array_equal(first_index(0, 0), first_index(1, 0))
    np.testing.assert_array_equal(first_index(3, 2), first_index(3, 2))


def test_a_stream_started_mid_epoch_is_the_rest_of_that_epoch(builder):
    loader = StreamingLoader(builder.as_data_source(split="train"), 8, shuffle=True, seed=2, drop_remainder=True)
    whole = batches(loader, 3)
    assert_same_batches(whole[4:], batches(loader, 3, start_step=4))
    assert batches(loader, 3, start_step=loader.steps_per_epoch) == []


def test_worker_processes_give_the_same_batches(builder):
    settings = dict(batch_size=8, shuffle=True, seed=4, drop_remainder=True)
    threaded = StreamingLoader(builder.as_data_source(split="train"), **settings)
    workers = StreamingLoader(builder.as_data_source(split="train"), num_workers=2, prefetch_batches=1, **settings)
    assert_same_batches(batches(threaded, 1), batches(workers, 1))


def test_bad_worker_settings_fail_with_the_key_to_fix(builder):
    with pytest.raises(ValueError, match="data.num_workers"):
        StreamingLoader(builder.as_data_source(split="train"), 8, shuffle=True, drop_remainder=True, num_workers=-1)


def test_prefetch_to_device_keeps_order_and_values():
    devices = parallel.select_devices(2)
    batches = [{"x": np.full((2, 3), i, np.float32)} for i in range(5)]
    ahead = list(parallel.prefetch_to_device(iter(batches), 2, devices))
    assert [float(b["x"][1, 2]) for b in ahead] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert isinstance(ahead[0]["x"], jax.Array) and len(ahead[0]["x"].sharding.device_set) == 2
    assert list(parallel.prefetch_to_device(iter(batches), 0, devices)) == batches  # off: the host batches as they are
    bound = list(parallel.DataParallel(devices).prefetch(iter(batches), 2))  # the loop's way in
    assert [float(b["x"][1, 2]) for b in bound] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert bound[0]["x"].sharding == ahead[0]["x"].sharding


def run(tmp_path, name, *, streaming, allow_changed=(), **trainer):
    settings = dict(
        allow_changed=allow_changed,
        seed=3,
        model={"name": "mlp", "hidden_dims": [16], "num_outputs": 10},
        task={"name": "classification"},
        data={
            "name": "tiny_records",
            "data_dir": str(tmp_path / "tfds"),
            "streaming": streaming,
        },
        optimizer={"name": "adam", "learning_rate": 1e-2},
        trainer={"epochs": 3, "batch_size": 8, "eval_batch_size": 16, "num_devices": 2, "log_every_steps": 1,
                 "progress": False, "artifacts": False, "tensorboard": False, **trainer},
        run_dir=tmp_path / name,
    )
    return experiment.run(**settings)


def train_losses(run_dir) -> dict[int, float]:
    """step -> logged training loss (the first step of each process is compile time and not logged)."""
    return {r["step"]: r["train/loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "train/loss" in r}


@pytest.fixture
def tiny_registered(monkeypatch):
    monkeypatch.setitem(sources.BUILDERS, "tiny_records", TinyRecords)


def test_a_streamed_run_trains_exactly_like_an_in_memory_run(tmp_path, tiny_registered):
    memory = run(tmp_path, "memory", streaming=False)
    stream = run(tmp_path, "stream", streaming=True, prefetch_to_device=2)
    assert stream["steps"] == memory["steps"] == 3 * (TRAIN // 8)
    assert stream["metrics"] == memory["metrics"]
    assert train_losses(tmp_path / "stream") == train_losses(tmp_path / "memory")
    assert stream["dataset"]["train_examples"] == TRAIN
    json.dumps(stream, default=str)


def test_a_resumed_streamed_run_continues_where_it_stopped(tmp_path, tiny_registered):
    straight = run(tmp_path, "straight", streaming=True)
    run(tmp_path, "resumed", streaming=True, max_steps=13)  # stops mid-epoch 1 (10 steps per epoch)
    # same folder, the full length on purpose: restores step 13, reads on from there
    resumed = run(tmp_path, "resumed", streaming=True, allow_changed=["trainer.max_steps"])
    assert resumed["resumed_from"] == 13
    assert resumed["metrics"] == straight["metrics"]
    straight_losses, resumed_losses = train_losses(tmp_path / "straight"), train_losses(tmp_path / "resumed")
    assert set(range(15, 31)) <= set(resumed_losses)
    assert {s: resumed_losses[s] for s in range(15, 31)} == {s: straight_losses[s] for s in range(15, 31)}


def test_streaming_refuses_tasks_that_need_the_whole_split_in_memory(tmp_path, tiny_registered):
    with pytest.raises(ValueError, match="data.streaming=false"):
        experiment.run(
            seed=0,
            model={"name": "autoencoder", "code_dim": 2, "hidden_dims": [8], "image_shape": [6, 6, 1]},
            task={"name": "autoencoder", "knn_neighbors": 0},
            data={"name": "tiny_records", "data_dir": str(tmp_path / "tfds"), "streaming": True},
            optimizer={"name": "adam", "learning_rate": 1e-3},
            trainer={"epochs": 1, "batch_size": 8, "progress": False, "tensorboard": False},
            run_dir=tmp_path / "ae",
        )
