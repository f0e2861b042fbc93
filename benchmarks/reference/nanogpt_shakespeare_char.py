"""nanoGPT's shakespeare_char CPU run in PyTorch, scored the way jaxdl scores it.

    python benchmarks/reference/nanogpt_shakespeare_char.py --input PATH/input.txt --seed 1337
    python benchmarks/reference/nanogpt_shakespeare_char.py --input PATH/input.txt --setting gpu --device cuda \
        --dtype bfloat16 --compile --iters 500 --output nanogpt.json      # GPU shapes, a 500-iteration run

A transcription of karpathy/nanoGPT's `model.py` and `train.py` for the
setting of `experiment=shakespeare_char_cpu` (4 layers, 4 heads, width 128,
block 64, batch 12, 2,000 iterations, dropout 0, no biases, tied embeddings,
AdamW lr 1e-3 with nanoGPT's warmup and cosine decay to 1e-4, beta2 0.99,
weight decay 0.1 on parameters with 2+ axes, clipping 1.0). It prints, every
250 iterations, nanoGPT's own estimate (mean loss of 20 random batches, as in
its README) and, at the start and the end, the loss on the whole validation
split (every character scored once, as `eval/loss` of jaxdl's run), in nats
per character; `--no-whole-split` leaves those two out, so that its wall time
is that of nanoGPT's own loop. PyTorch runs with its own thread count unless
`--threads` says otherwise. Reference only: PyTorch is an optional extra, never
needed by jaxdl itself.

`--setting gpu` takes the shapes and length of nanoGPT's GPU config
(`config/train_shakespeare_char.py`: 6 layers, 6 heads, width 384, block 256,
batch 64, 5,000 iterations, learning rate decayed over 5,000, nanoGPT's
200-batch estimate), but not its dropout of 0.2: the project's torch GPT has
none. `--device cuda --dtype bfloat16 --compile` run it as nanoGPT does on a
GPU (autocast to bfloat16, `torch.compile`, TF32 products). `--iters N` makes
it an N-iteration run, the learning rate decayed over N (as `trainer.max_steps=N`
does for jaxdl's run). `--output` writes the losses and
times as JSON: `train_time_s` counts the iterations after the first (which
holds compilation), without the evaluations.
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
from torch.nn import functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # the repository root, for `benchmarks`
from benchmarks.peers import torch_device  # noqa: E402
from benchmarks.peers.torch_gpt import torch_gpt  # noqa: E402  nanoGPT's GPT, the one torch Transformer of the project

VOCAB, BATCH, BLOCK, LAYERS, HEADS, WIDTH, ITERS = 65, 12, 64, 4, 4, 128, 2000
LR, MIN_LR, WARMUP, DECAY_ITERS, WEIGHT_DECAY, BETA2, CLIP = 1e-3, 1e-4, 100, 2000, 0.1, 0.99, 1.0
#: nanoGPT's two shakespeare_char settings: (batch, block, layers, heads, width, iterations = decay length,
#: batches of its loss estimate). "cpu" is the README's CPU command, "gpu" config/train_shakespeare_char.py.
SETTINGS = {"cpu": (BATCH, BLOCK, LAYERS, HEADS, WIDTH, ITERS, 20), "gpu": (64, 256, 6, 6, 384, 5000, 200)}


def per_position_nll(model, idx, targets):
    """Cross-entropy of every position [B, T], nats (the model is `benchmarks.peers.torch_gpt`)."""
    logits = model(idx)
    return F.cross_entropy(logits.view(-1, VOCAB), targets.reshape(-1), reduction="none").view(targets.shape)


def nanogpt_lr(it: int, decay_iters: int = DECAY_ITERS) -> float:
    """nanoGPT's `get_lr`: linear warmup lr * (it + 1) / (warmup + 1), then cosine to MIN_LR."""
    if it < WARMUP:
        return LR * (it + 1) / (WARMUP + 1)
    ratio = (it - WARMUP) / (decay_iters - WARMUP)
    return MIN_LR + 0.5 * (1 + math.cos(math.pi * ratio)) * (LR - MIN_LR)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="tiny Shakespeare's input.txt")
    parser.add_argument("--seed", type=int, default=1337, help="nanoGPT's default seed is 1337")
    parser.add_argument("--no-whole-split", action="store_true",
                        help="skip the two whole-split evaluations: nanoGPT's own loop only (for wall-time comparisons)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's own, as nanoGPT runs)")
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="cpu", help="nanoGPT's CPU or GPU shapes")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="autocast dtype")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (nanoGPT's GPU default)")
    parser.add_argument("--iters", type=int, default=None, help="run length (default: the setting's)")
    parser.add_argument("--output", type=pathlib.Path, help="write losses and times as JSON here")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    batch_size, block, layers, heads, width, iters, estimate_batches = SETTINGS[args.setting]
    iters = args.iters or iters
    device = torch_device.use_device(args.device)  # torch_gpt makes its positions there with torch.arange
    autocast = functools.partial(torch_device.autocast, device, args.dtype)
    sync = functools.partial(torch_device.synchronize, device)

    text = open(args.input).read()
    stoi = {ch: i for i, ch in enumerate(sorted(set(text)))}
    data = np.array([stoi[ch] for ch in text], dtype=np.int64)
    split = int(len(data) * 0.9)
    train_data, val_data = data[:split], data[split:]

    def get_batch(source: np.ndarray):
        ix = torch.randint(len(source) - block, (batch_size,), device="cpu")
        x = torch.stack([torch.from_numpy(source[i : i + block]) for i in ix])
        y = torch.stack([torch.from_numpy(source[i + 1 : i + 1 + block]) for i in ix])
        return x.to(device), y.to(device)

    model = torch_gpt(vocab_size=VOCAB, max_len=block, num_layers=layers, num_heads=heads, embed_dim=width)
    params = list(model.parameters())
    opt = torch.optim.AdamW(
        [{"params": [p for p in params if p.dim() >= 2], "weight_decay": WEIGHT_DECAY},
         {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
        lr=LR, betas=(0.9, BETA2),
    )

    forward = torch.compile(model) if args.compile else model

    @torch.no_grad()
    def estimate(source: np.ndarray, batches: int = estimate_batches) -> float:
        model.eval()
        with autocast():
            losses = [per_position_nll(forward, *get_batch(source)).mean() for _ in range(batches)]
        model.train()
        return float(torch.stack(losses).float().mean())

    @torch.no_grad()
    def whole_split_loss(source: np.ndarray) -> float:
        """Every character of `source` (after the first) predicted once, in windows of BLOCK."""
        model.eval()
        ids = torch.from_numpy(source).to(device)
        total, count = 0.0, 0
        with autocast():
            for start in range(0, len(ids) - 1, block * 256):
                chunk = ids[start : start + block * 256 + 1]
                full = (len(chunk) - 1) // block
                if full:
                    x, y = chunk[: full * block].view(full, block), chunk[1 : full * block + 1].view(full, block)
                    total, count = total + float(per_position_nll(model, x, y).sum()), count + full * block
                rest = len(chunk) - 1 - full * block
                if rest:
                    tail = chunk[full * block :]
                    nll = per_position_nll(model, tail[None, :-1], tail[None, 1:])
                    total, count = total + float(nll.sum()), count + rest
        model.train()
        return total / count

    start = time.perf_counter()
    record = {"setting": args.setting, "device": str(device), "dtype": args.dtype, "compile": args.compile,
              "seed": args.seed, "iters": iters, "train_time_s": 0.0, "evals": []}
    segment = time.perf_counter()
    for it in range(iters + 1):
        for group in opt.param_groups:
            group["lr"] = nanogpt_lr(it, iters)
        if it % 250 == 0 or it == iters:
            sync()
            record["train_time_s"] += time.perf_counter() - segment if it > 1 else 0.0
            whole = whole_split_loss(val_data) if it in (0, iters) and not args.no_whole_split else None
            row = {"step": it, "train": estimate(train_data), "val_estimate": estimate(val_data), "val_whole": whole}
            record["evals"].append(row)
            print(f"step {it}: train {row['train']:.4f} val{estimate_batches} {row['val_estimate']:.4f} "
                  f"val_whole {'-' if whole is None else f'{whole:.4f}'} ({time.perf_counter() - start:.0f} s)",
                  flush=True)
            segment = time.perf_counter()
        if it == iters:
            break
        with autocast():
            loss = per_position_nll(forward, *get_batch(train_data)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
        if it == 0:  # the first iteration holds compilation: timed alone
            sync()
            record["first_iter_s"] = time.perf_counter() - segment
            segment = time.perf_counter()
    record["wall_time_s"] = time.perf_counter() - start
    timed = iters - 1
    record["iters_per_s"] = timed / record["train_time_s"] if timed > 0 and record["train_time_s"] > 0 else None
    record["torch"] = torch.__version__
    record["device_name"] = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"{iters} iterations in {record['wall_time_s']:.1f} s ({record['first_iter_s']:.1f} s the first); "
          f"{record['iters_per_s'] or float('nan'):.2f} iterations/s after it, evaluations excluded", flush=True)
    if args.output:
        tmp = args.output.with_name(args.output.name + ".tmp")
        tmp.write_text(json.dumps(record, indent=2))
        os.replace(tmp, args.output)


if __name__ == "__main__":
    main()
