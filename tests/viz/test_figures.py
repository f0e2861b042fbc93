"""Pictures: every plot writes a whole PNG through `save_figure`, and a failed write keeps the older file."""

import numpy as np
import pytest
from PIL import Image

from jaxdl.metrics.anomaly import plot_roc
from jaxdl.viz.confusion import plot_confusion
from jaxdl.viz.curves import plot_curves
from jaxdl.viz.figures import pyplot, save_figure
from jaxdl.viz.scatter import save_scatter_panels


def _is_png(path) -> bool:
    with Image.open(path) as image:
        image.verify()
        return image.format == "PNG"


def test_every_plot_writes_a_png_and_leaves_no_temporary_file(tmp_path):
    rng = np.random.default_rng(0)
    records = [{"step": s, "train/loss": 1.0 / (s + 1), "eval/loss": 1.2 / (s + 1)} for s in range(5)]
    plot_curves(records, tmp_path / "curves.png", metrics=["train/loss", "eval/loss"])
    plot_confusion(np.array([[5, 1], [2, 7]]), ["a", "b"], tmp_path / "confusion.png")
    save_scatter_panels(tmp_path / "nested" / "scatter.png", [("codes", rng.normal(size=(20, 2)))],
                        rng.integers(0, 3, 20))
    fpr = np.linspace(0.0, 1.0, 11)
    plot_roc(tmp_path / "roc.png", {"model": (fpr, np.sqrt(fpr))}, marks={"threshold": (0.05, 0.3)})
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert written == ["confusion.png", "curves.png", "nested/scatter.png", "roc.png"]
    assert all(_is_png(tmp_path / name) for name in written)
    assert pyplot().get_fignums() == []  # every figure closed


def test_a_failed_write_keeps_the_older_picture(tmp_path):
    plt = pyplot()
    path = tmp_path / "picture.png"
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    save_figure(fig, path)
    before = path.read_bytes()

    def half_a_file(target):
        with open(target, "wb") as f:
            f.write(b"\x89PNG half a file")
        raise OSError("disk full")

    fig, ax = plt.subplots()
    fig.savefig = half_a_file
    with pytest.raises(OSError, match="disk full"):
        save_figure(fig, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["picture.png"]  # the partial file is gone
    assert pyplot().get_fignums() == []
