"""PyTorch on a chosen device, as the reference scripts and the GPU peers run it: default device, TF32, autocast, sync."""

from __future__ import annotations

import contextlib

import torch


def use_device(name: str) -> torch.device:
    """Makes device `name` ("cpu", "cuda") the default for new tensors and returns it.

    Off the CPU, float32 matrix products use TF32 (`set_float32_matmul_precision("high")`), as XLA's default
    precision does on these GPUs. On the CPU nothing changes.
    """
    device = torch.device(name)
    if device.type != "cpu":
        torch.set_default_device(device)
        torch.set_float32_matmul_precision("high")
    return device


def autocast(device: torch.device | str, dtype: str) -> contextlib.AbstractContextManager:
    """A context that autocasts to bfloat16 on `device` when `dtype` is "bfloat16"; for "float32" it does nothing."""
    if dtype == "bfloat16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def synchronize(device: torch.device | str) -> None:
    """Waits for the work queued on a CUDA `device` (timings end here); nothing on the CPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
