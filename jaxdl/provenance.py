"""What a run needs to be reproduced: code version, packages, devices, data.

`manifest(...)` gathers it; `jaxdl.experiment.run` writes it to
`manifest.json` (and any uncommitted source changes to `git.diff`) in the run
folder before the first step.
"""

from __future__ import annotations

import importlib.metadata
import os
import pathlib
import platform
import subprocess
import sys
from typing import Any

import jax

PACKAGES = (
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "orbax-checkpoint",
    "tensorflow-datasets",
    "numpy",
    "hydra-core",
)
SOURCE_DIR = pathlib.Path(__file__).resolve().parents[1]


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each package (None when absent)."""
    versions = {}
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def environment() -> dict[str, Any]:
    """Python, platform, package versions, devices and XLA flags of this process."""
    devices = jax.devices()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "device_kind": devices[0].device_kind,
        "platform_name": devices[0].platform,
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
        "process_count": jax.process_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def _git(*args: str, cwd: pathlib.Path) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout


def git_state(source_dir: pathlib.Path = SOURCE_DIR) -> dict[str, Any]:
    """Commit, dirtiness, uncommitted diff and untracked files of the source tree.

    Returns {"commit": None, ...} when the code does not run from a git checkout.
    """
    commit = _git("rev-parse", "HEAD", cwd=source_dir)
    if commit is None:
        return {"commit": None, "dirty": None, "diff": "", "untracked": []}
    diff = _git("diff", "HEAD", "--", ".", cwd=source_dir) or ""
    untracked = (_git("ls-files", "--others", "--exclude-standard", cwd=source_dir) or "").split()
    return {"commit": commit.strip(), "dirty": bool(diff or untracked), "diff": diff, "untracked": untracked}


def manifest(
    *, settings: dict[str, Any], dataset: dict[str, Any], built: dict[str, Any] | None = None
) -> tuple[dict[str, Any], str]:
    """The run's manifest and its uncommitted diff (empty when the tree is clean).

    Args:
      settings: the resolved settings the run was given (its identity).
      dataset: name, version, raw-file fingerprints of the data.
      built: what was built from them: the model and task settings with the
        data's facts filled in, the compute dtype, the batch size and steps per
        epoch (enough to rebuild the run without its data; `jaxdl.runs`).
    """
    git = git_state()
    record = {
        "command": sys.argv,
        "settings": settings,
        "built": built or {},
        "git": {k: v for k, v in git.items() if k != "diff"},
        "environment": environment(),
        "dataset": dataset,
    }
    return record, git["diff"]
