"""airbench94's training run in PyTorch on the CPU, on the same CIFAR-10 archive jaxdl trains on.

    python benchmarks/reference/airbench94_cifar10.py --archive PATH/cifar-10-binary.tar.xz --seed 0
    python benchmarks/reference/airbench94_cifar10.py --archive PATH/cifar-10-binary.tar.xz --device cuda --dtype bfloat16

A transcription of `main` of legacy/airbench94.py (github.com/KellerJordan/cifar10-airbench,
K. Jordan 2024, "94% on CIFAR-10 in 3.29 seconds on a single GPU", arXiv:2404.00498) for one run:
its data loader (normalisation, one random flip of every image before the first epoch and a
flip of the whole set every other epoch, reflect padding by 2 and random 32x32 crops, a fresh
permutation per epoch, the last partial batch dropped), the whitening initialisation from the
first 5,000 training images, the whitening bias trained for 3 epochs, Nesterov SGD with the
script's parameter groups and triangular schedule, label smoothing 0.2 on the summed loss,
lookahead every 5 steps, 9.9 epochs of batch 1024 (476 steps), test accuracy without TTA after
every epoch and with TTA level 2 (mirror + 1-pixel translations, 6 views) at the end.

What differs from the script, and why: float32 on the CPU (the script runs float16 on CUDA;
like it, network and batches are channels-last, which on this CPU is also 20-30 % faster than
PyTorch's default NCHW);
images are read from the binary archive (`cifar-10-batches-bin/*.bin` in a `.tar.gz` or
`.tar.xz`, through jaxdl's own reader, `jaxdl.data.cifar10.read_records`) instead of
torchvision's download; one run instead of 25. The network,
whitening filters and optimizer are `benchmarks.peers.torch_airbench94`'s, which tests/test_airbench_torch.py
checks step for step against jaxdl's port.

Printed, as the script prints them: per epoch the last batch's loss and accuracy, the test
accuracy (fraction) and the running time; `total_time_seconds` counts what the script times
(whitening initialisation, training steps, the final TTA evaluation), not the per-epoch
evaluations. `--output` writes the same as JSON. Reference only: PyTorch is an optional
extra (`pip install -e .[bench]`), never needed by jaxdl itself.

On a GPU (`--device cuda`) the images live on the device, every time is read
after a device synchronisation, float32 products use TF32, and `--dtype
bfloat16` runs the network under autocast (the script casts it to float16).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import pathlib
import sys
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # the repository root, for `jaxdl` and `benchmarks`
from benchmarks.peers import torch_device  # noqa: E402
from benchmarks.peers.torch_airbench94 import (  # noqa: E402
    torch_airbench94,
    torch_airbench94_optimizer,
    torch_airbench94_whitening,
)
from jaxdl.data.cifar10 import TEST_MEMBERS, TRAIN_MEMBERS, read_records  # noqa: E402
from jaxdl.data.raw_files import sha256sum  # noqa: E402

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
HYP = dict(train_epochs=9.9, batch_size=1024, label_smoothing=0.2, whiten_bias_epochs=3, translate=2, tta_level=2)


def batch_flip_lr(images: torch.Tensor) -> torch.Tensor:
    mask = (torch.rand(len(images)) < 0.5).view(-1, 1, 1, 1)
    return torch.where(mask, images.flip(-1), images)


def batch_crop(images: torch.Tensor, crop_size: int) -> torch.Tensor:
    """A random crop of every image, shifts uniform in [-r, r] (the script's loop for r <= 2)."""
    r = (images.size(-1) - crop_size) // 2
    shifts = torch.randint(-r, r + 1, size=(len(images), 2))
    out = torch.empty((len(images), 3, crop_size, crop_size), dtype=images.dtype)
    for sy in range(-r, r + 1):
        for sx in range(-r, r + 1):
            mask = (shifts[:, 0] == sy) & (shifts[:, 1] == sx)
            out[mask] = images[mask, :, r + sy : r + sy + crop_size, r + sx : r + sx + crop_size]
    return out


def normalize(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 3, H, W] -> float32 [N, 3, H, W], per-channel standardised, channels-last in memory."""
    mean, std = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    return ((images_uint8.float() / 255 - mean) / std).contiguous(memory_format=torch.channels_last)


class TrainLoader:
    """The script's `CifarLoader(train=True, aug={"flip": True, "translate": 2})`."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int):
        self.images, self.labels, self.batch_size, self.epoch = images, labels, batch_size, 0
        self.padded = None

    def __len__(self) -> int:
        return len(self.images) // self.batch_size

    def __iter__(self):
        if self.epoch == 0:
            flipped = batch_flip_lr(normalize(self.images))
            pad = HYP["translate"]
            self.padded = F.pad(flipped, (pad,) * 4, "reflect")
        images = batch_crop(self.padded, self.images.shape[-1])
        if self.epoch % 2 == 1:
            images = images.flip(-1)
        self.epoch += 1
        indices = torch.randperm(len(images))
        for i in range(len(self)):
            idxs = indices[i * self.batch_size : (i + 1) * self.batch_size]
            yield images[idxs].contiguous(memory_format=torch.channels_last), self.labels[idxs]


class Lookahead:
    """The script's `LookaheadState`: float entries of the state dict pulled towards their average."""

    def __init__(self, net: nn.Module):
        self.net_ema = {k: v.clone() for k, v in net.state_dict().items()}

    def update(self, net: nn.Module, decay: float) -> None:
        for ema, param in zip(self.net_ema.values(), net.state_dict().values()):
            if param.dtype in (torch.half, torch.float):
                ema.lerp_(param, 1 - decay)
                param.copy_(ema)


@torch.no_grad()
def evaluate(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, tta_level: int) -> float:
    """Test accuracy (fraction) over batches of 2,000; tta_level 0 none, 1 mirror, 2 mirror + translate."""

    def mirror(x):
        return 0.5 * net(x) + 0.5 * net(x.flip(-1))

    def mirror_translate(x):
        padded = F.pad(x, (1,) * 4, "reflect")
        translated = torch.stack([mirror(padded[:, :, 0:32, 0:32]), mirror(padded[:, :, 2:34, 2:34])]).mean(0)
        return 0.5 * mirror(x) + 0.5 * translated

    infer = [net, mirror, mirror_translate][tta_level]
    net.eval()
    logits = torch.cat([infer(x.contiguous(memory_format=torch.channels_last)) for x in normalize(images).split(2000)])
    return (logits.argmax(1) == labels).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archive", required=True, type=pathlib.Path,
                        help="cifar-10-binary.tar.gz or .tar.xz")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's own, as the script runs)")
    parser.add_argument("--train-epochs", type=float, default=HYP["train_epochs"], help="9.9 in the script")
    parser.add_argument("--output", type=pathlib.Path, help="write the results as JSON here")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="autocast dtype")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch_device.use_device(args.device)  # the loader and the network make their tensors there
    autocast = functools.partial(torch_device.autocast, device, args.dtype)
    sync = functools.partial(torch_device.synchronize, device)

    wall_start = time.perf_counter()

    data = read_records(args.archive, {"train": TRAIN_MEMBERS, "test": TEST_MEMBERS})  # uint8 [N, 32, 32, 3], [N]
    (train_images, train_labels), (test_images, test_labels) = (
        (torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).to(device),
         torch.from_numpy(labels.astype(np.int64)).to(device))
        for images, labels in (data["train"], data["test"])
    )
    loader = TrainLoader(train_images, train_labels, HYP["batch_size"])
    total_steps = math.ceil(len(loader) * args.train_epochs)
    net = torch_airbench94().to(memory_format=torch.channels_last)
    optimizer, scheduler = torch_airbench94_optimizer(net, batch_size=HYP["batch_size"], total_steps=total_steps)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=HYP["label_smoothing"], reduction="none")
    alpha_schedule = 0.95**5 * (torch.arange(total_steps + 1) / total_steps) ** 3
    lookahead = Lookahead(net)

    sync()
    start = time.perf_counter()
    with torch.no_grad():
        net[0].weight.copy_(torch_airbench94_whitening(normalize(train_images[:5000])))
    sync()
    total_time_seconds = time.perf_counter() - start

    print("| epoch | train_loss | train_acc | val_acc | tta_val_acc | total_time_seconds |", flush=True)
    epochs, step = [], 0
    for epoch in range(math.ceil(args.train_epochs)):
        net[0].bias.requires_grad = epoch < HYP["whiten_bias_epochs"]
        start = time.perf_counter()
        net.train()
        for inputs, labels in loader:
            with autocast():
                outputs = net(inputs)
                loss = loss_fn(outputs, labels).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            if step % 5 == 0:
                lookahead.update(net, decay=alpha_schedule[step].item())
            if step >= total_steps:
                lookahead.update(net, decay=1.0)
                break
        sync()
        total_time_seconds += time.perf_counter() - start
        with autocast():
            val_acc = evaluate(net, test_images, test_labels, tta_level=0)
        row = dict(epoch=epoch, steps=step, train_loss=loss.item() / HYP["batch_size"],
                   train_acc=(outputs.detach().argmax(1) == labels).float().mean().item(),
                   val_acc=val_acc, total_time_seconds=total_time_seconds)
        epochs.append(row)
        print(f"| {epoch:5d} | {row['train_loss']:10.4f} | {row['train_acc']:9.4f} | {row['val_acc']:7.4f} |"
              f"{'':13s}| {total_time_seconds:18.1f} |", flush=True)

    start = time.perf_counter()
    with autocast():
        tta_val_acc = evaluate(net, test_images, test_labels, tta_level=HYP["tta_level"])
    sync()
    total_time_seconds += time.perf_counter() - start
    wall_time_s = time.perf_counter() - wall_start
    print(f"|  eval |            |           | {epochs[-1]['val_acc']:7.4f} | {tta_val_acc:11.4f} | "
          f"{total_time_seconds:18.1f} |", flush=True)
    print(f"steps {step}, wall time {wall_time_s:.1f} s (with data reading and per-epoch evaluations)", flush=True)
    if args.output:
        archive_sha256 = sha256sum(args.archive)
        result = dict(seed=args.seed, threads=torch.get_num_threads(), steps=step, val_acc=epochs[-1]["val_acc"],
                      tta_val_acc=tta_val_acc, total_time_seconds=total_time_seconds, wall_time_s=wall_time_s,
                      epochs=epochs, archive=str(args.archive), archive_sha256=archive_sha256,
                      torch=torch.__version__, device=str(device), dtype=args.dtype,
                      device_name=torch.cuda.get_device_name() if device.type == "cuda" else "cpu")
        tmp = args.output.with_name(args.output.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=2))
        os.replace(tmp, args.output)


if __name__ == "__main__":
    main()
