"""scripts.wheelhouse: what a target has is read right; a bundle installs offline beside a GPU-image-like set."""

import json
import os
import subprocess
import sys

import pytest

from scripts import wheelhouse
from tests.conftest import REPO

#: The usual packages of a GPU image (their CPU builds here; PyTorch left out for size): jaxdl needs the rest.
GPU_IMAGE_LIKE = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "scipy", "scikit-learn", "matplotlib",
                  "pillow", "tqdm", "rich")


def test_have_reads_freeze_files_pins_and_bare_names(tmp_path):
    freeze = tmp_path / "freeze.txt"
    freeze.write_text("# comment\n-e git+https://example.org/x.git#egg=x\nJax==0.11.2\nflax==0.12.8\n"
                      "torch @ file:///wheels/torch-2.11.0-cp312-cp312-linux_x86_64.whl\nnvidia_cudnn_cu12==9.1.0.70\n")
    have = wheelhouse.parse_have([str(freeze), "jax==0.11.1", "optax"])
    assert have["jax"] == ("jax", "0.11.1")  # later items win
    assert have["flax"] == ("flax", "0.12.8")
    assert have["torch"] == ("torch", None) and have["optax"] == ("optax", None)
    assert have["nvidia-cudnn-cu12"] == ("nvidia_cudnn_cu12", "9.1.0.70")


def test_a_manylinux_target_accepts_older_manylinux_wheels():
    tags = wheelhouse.platforms("manylinux_2_28_x86_64")
    assert tags[0] == "manylinux_2_28_x86_64"
    assert {"manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"} <= set(tags)
    assert "manylinux_2_31_x86_64" not in tags
    assert wheelhouse.platforms("macosx_11_0_arm64") == ["macosx_11_0_arm64"]


def test_dependencies_come_from_pyproject():
    name, _, requirements = wheelhouse.project_requirements(REPO / "pyproject.toml", ["test"])
    assert name == "jaxdl"
    assert any(r.startswith("hydra-core") for r in requirements) and any(r.startswith("pytest") for r in requirements)


def offline_env() -> dict[str, str]:
    """No index, no find-links, no configuration: only what the command names."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    return env


@pytest.mark.slow
def test_bundle_installs_offline_beside_a_gpu_image_like_set_and_trains(tmp_path, mnist_raw_dir):
    image = tmp_path / "image"
    subprocess.run([sys.executable, "-m", "venv", str(image)], check=True)
    python = str(image / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "--quiet", *GPU_IMAGE_LIKE], check=True, timeout=900)
    freeze = tmp_path / "have.txt"
    freeze.write_text(subprocess.run([python, "-m", "pip", "freeze"], check=True, capture_output=True, text=True).stdout)

    bundle = tmp_path / "wheels"
    built = subprocess.run([sys.executable, "-m", "scripts.wheelhouse", "--have", str(freeze), "--out", str(bundle)],
                           cwd=REPO, capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-3000:]
    print(built.stdout)
    names = {p.name.split("-")[0].lower() for p in bundle.glob("*.whl")}
    assert {"hydra_core", "omegaconf", "tensorflow_datasets", "grain", "tensorboardx", "jaxdl"} <= names
    assert not {"jax", "jaxlib", "flax", "numpy"} & names  # the image's own stay as they are

    installed = subprocess.run([python, "-m", "pip", "install", "--no-index", "--find-links", str(bundle),
                                "-r", str(bundle / "requirements.txt")], env=offline_env(), capture_output=True,
                               text=True, timeout=900)
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-3000:]
    checked = subprocess.run([python, "-m", "pip", "check"], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout
    after = subprocess.run([python, "-m", "pip", "freeze"], check=True, capture_output=True, text=True).stdout
    kept = {line for line in freeze.read_text().splitlines() if line.split("==")[0] in GPU_IMAGE_LIKE}
    assert kept <= set(after.splitlines())  # same versions of the image's packages

    run_dir = tmp_path / "run"
    env = dict(offline_env(), JAXDL_MANUAL_DIR=str(mnist_raw_dir.parent), JAXDL_CACHE_DIR="",
               JAXDL_DATA_DIR=str(tmp_path / "tfds"), PYTHONUNBUFFERED="1")
    env.pop("XLA_FLAGS", None)
    done = subprocess.run([python, "-c", "import jaxdl, experiments.run, scripts.gpu_check"], cwd=REPO, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    done = subprocess.run([python, "-m", "experiments.run", "model=vae", "debug=smoke", "trainer.progress=false",
                           f"hydra.run.dir={run_dir}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["metrics"]["eval/nll"] > 0
