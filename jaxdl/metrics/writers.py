"""Metric writers: one JSON object per line, and TensorBoard event files.

TensorBoard files are written with tensorboardX, which needs no TensorFlow.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
from collections.abc import Iterator, Mapping


class MetricWriter:
    """Appends `{"step": s, name: value, ...}` records to `metrics.jsonl` and TensorBoard.

    The JSONL file is opened in append mode and flushed after each record, so
    a killed run keeps everything it logged and a resumed run adds to it.

    Args:
      run_dir: the run's output folder.
      tensorboard: also write event files under `run_dir/tensorboard`.
    """

    def __init__(self, run_dir: os.PathLike | str, *, tensorboard: bool = True):
        self.path = pathlib.Path(run_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self._tb = None
        if tensorboard:
            self._tb = _summary_writer_class()(str(pathlib.Path(run_dir) / "tensorboard"))

    def write(self, step: int, metrics: Mapping[str, float | int | str]) -> None:
        """Writes one record; numeric values also go to TensorBoard as scalars."""
        record = {"step": int(step), **metrics}
        self._file.write(json.dumps(record, allow_nan=True) + "\n")
        self._file.flush()
        if self._tb is not None:
            for name, value in metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(name, value, int(step))
            self._tb.flush()

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def _summary_writer_class():
    """tensorboardX's SummaryWriter, imported without PyTorch.

    tensorboardX imports torch whenever it is installed, only to accept torch
    tensors, which jaxdl never logs; where torch is installed (e.g. beside the
    benchmark peers) that import took about 180 MB and 4-5 s of a run's start.
    It is kept out while tensorboardX loads, unless torch is already imported.
    """
    if "tensorboardX" in sys.modules or "torch" in sys.modules:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    sys.modules["torch"] = None  # `import torch` raises ImportError, which tensorboardX handles
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["torch"]
    return SummaryWriter


def read_metrics(path: os.PathLike | str) -> Iterator[dict]:
    """Yields the records of a metrics.jsonl file, skipping a torn last line."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue
