"""MetricWriter writes TensorBoard event files without importing PyTorch, even where PyTorch is installed."""

import subprocess
import sys


def test_tensorboard_writer_does_not_import_torch(tmp_path):
    code = (
        "import pathlib, sys\n"
        "from jaxdl.metrics.writers import MetricWriter\n"
        f"w = MetricWriter(pathlib.Path({str(tmp_path)!r}), tensorboard=True)\n"
        "w.write(3, {'train/loss': 1.5})\n"
        "w.close()\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert '"train/loss": 1.5' in (tmp_path / "metrics.jsonl").read_text()
