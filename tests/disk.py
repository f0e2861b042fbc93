"""Storage faults for tests: a folder that cannot be written, a disk that is full.

Permissions do not stop root, and tests often run as root in containers, so:

* `read_only(folder)`: `chmod 0o555` for an ordinary user; as root, a
  read-only bind mount of the folder onto itself (contents kept).
* `small_disk(folder, kib)`: a tmpfs of that size mounted on the folder (root).
* `failing_makedirs(monkeypatch, errno_, suffix)`: a patched `os.makedirs` that
  fails for folders ending in `suffix`; works everywhere and in-process.

The mount-based helpers skip the test when mounting is not allowed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pathlib
import subprocess
from collections.abc import Iterator

import pytest


def _run(*args: str) -> bool:
    try:
        return subprocess.run(list(args), capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _unmount(folder: pathlib.Path) -> None:
    if not _run("umount", str(folder)):
        _run("umount", "-l", str(folder))


@contextlib.contextmanager
def read_only(folder: os.PathLike | str) -> Iterator[None]:
    """Makes `folder` (which must exist) unwritable for this process while the block runs."""
    folder = pathlib.Path(folder)
    if os.geteuid() != 0:
        mode = folder.stat().st_mode
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(mode)
        return
    if not _run("mount", "--bind", str(folder), str(folder)):
        pytest.skip("running as root and bind mounts are not allowed: cannot make a folder read-only")
    try:
        if not _run("mount", "-o", "remount,bind,ro", str(folder)):
            pytest.skip("running as root and read-only remounts are not allowed")
        yield
    finally:
        _unmount(folder)


@contextlib.contextmanager
def small_disk(folder: os.PathLike | str, kib: int) -> Iterator[pathlib.Path]:
    """Mounts a `kib` KiB tmpfs on `folder` (created) while the block runs; yields the folder."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not _run("mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(folder)):
        pytest.skip("mounting a small tmpfs needs root and mount permission")
    try:
        yield folder
    finally:
        _unmount(folder)


def fill(folder: os.PathLike | str) -> None:
    """Writes zeros into `folder/fill` until its disk is full."""
    with open(os.path.join(folder, "fill"), "wb", buffering=0) as f:  # unbuffered: nothing left to flush at close
        for chunk in (65536, 4096, 512, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise


def failing_makedirs(monkeypatch: pytest.MonkeyPatch, errno_: int, suffix: str) -> None:
    """Makes `os.makedirs` raise OSError(errno_) for paths ending in `suffix` (e.g. ".orbax-checkpoint-tmp")."""
    real = os.makedirs

    def makedirs(name, *args, **kwargs):
        if os.fspath(name).rstrip("/").endswith(suffix):
            raise OSError(errno_, os.strerror(errno_), os.fspath(name))
        return real(name, *args, **kwargs)

    monkeypatch.setattr(os, "makedirs", makedirs)
