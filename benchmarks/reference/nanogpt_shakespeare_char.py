"""nanoGPT's shakespeare_char CPU run in PyTorch, scored the way jaxdl scores it.

    python benchmarks/reference/nanogpt_shakespeare_char.py --input PATH/input.txt --seed 1337

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
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sys
import time

import numpy as np
import torch
from torch.nn import functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # the repository root, for `benchmarks`
from benchmarks.peers.torch_gpt import torch_gpt  # noqa: E402  nanoGPT's GPT, the one torch Transformer of the project

VOCAB, BATCH, BLOCK, LAYERS, HEADS, WIDTH, ITERS = 65, 12, 64, 4, 4, 128, 2000
LR, MIN_LR, WARMUP, DECAY_ITERS, WEIGHT_DECAY, BETA2, CLIP = 1e-3, 1e-4, 100, 2000, 0.1, 0.99, 1.0


def per_position_nll(model, idx, targets):
    """Cross-entropy of every position [B, T], nats (the model is `benchmarks.peers.torch_gpt`)."""
    logits = model(idx)
    return F.cross_entropy(logits.view(-1, VOCAB), targets.reshape(-1), reduction="none").view(targets.shape)


def nanogpt_lr(it: int) -> float:
    """nanoGPT's `get_lr`: linear warmup lr * (it + 1) / (warmup + 1), then cosine to MIN_LR."""
    if it < WARMUP:
        return LR * (it + 1) / (WARMUP + 1)
    ratio = (it - WARMUP) / (DECAY_ITERS - WARMUP)
    return MIN_LR + 0.5 * (1 + math.cos(math.pi * ratio)) * (LR - MIN_LR)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="tiny Shakespeare's input.txt")
    parser.add_argument("--seed", type=int, default=1337, help="nanoGPT's default seed is 1337")
    parser.add_argument("--no-whole-split", action="store_true",
                        help="skip the two whole-split evaluations: nanoGPT's own loop only (for wall-time comparisons)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's own, as nanoGPT runs)")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)

    text = open(args.input).read()
    stoi = {ch: i for i, ch in enumerate(sorted(set(text)))}
    data = np.array([stoi[ch] for ch in text], dtype=np.int64)
    split = int(len(data) * 0.9)
    train_data, val_data = data[:split], data[split:]

    def get_batch(source: np.ndarray):
        ix = torch.randint(len(source) - BLOCK, (BATCH,))
        x = torch.stack([torch.from_numpy(source[i : i + BLOCK]) for i in ix])
        y = torch.stack([torch.from_numpy(source[i + 1 : i + 1 + BLOCK]) for i in ix])
        return x, y

    model = torch_gpt(vocab_size=VOCAB, max_len=BLOCK, num_layers=LAYERS, num_heads=HEADS, embed_dim=WIDTH)
    params = list(model.parameters())
    opt = torch.optim.AdamW(
        [{"params": [p for p in params if p.dim() >= 2], "weight_decay": WEIGHT_DECAY},
         {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
        lr=LR, betas=(0.9, BETA2),
    )

    @torch.no_grad()
    def estimate(source: np.ndarray, batches: int = 20) -> float:
        model.eval()
        loss = float(torch.stack([per_position_nll(model, *get_batch(source)).mean() for _ in range(batches)]).mean())
        model.train()
        return loss

    @torch.no_grad()
    def whole_split_loss(source: np.ndarray) -> float:
        """Every character of `source` (after the first) predicted once, in windows of BLOCK."""
        model.eval()
        ids = torch.from_numpy(source)
        total, count = 0.0, 0
        for start in range(0, len(ids) - 1, BLOCK * 256):
            chunk = ids[start : start + BLOCK * 256 + 1]
            full = (len(chunk) - 1) // BLOCK
            if full:
                x, y = chunk[: full * BLOCK].view(full, BLOCK), chunk[1 : full * BLOCK + 1].view(full, BLOCK)
                total, count = total + float(per_position_nll(model, x, y).sum()), count + full * BLOCK
            rest = len(chunk) - 1 - full * BLOCK
            if rest:
                tail = chunk[full * BLOCK :]
                total, count = total + float(per_position_nll(model, tail[None, :-1], tail[None, 1:]).sum()), count + rest
        model.train()
        return total / count

    start = time.perf_counter()
    for it in range(ITERS + 1):
        for group in opt.param_groups:
            group["lr"] = nanogpt_lr(it)
        if it % 250 == 0:
            whole = f"{whole_split_loss(val_data):.4f}" if it in (0, ITERS) and not args.no_whole_split else "-"
            print(f"step {it}: train {estimate(train_data):.4f} val20 {estimate(val_data):.4f} "
                  f"val_whole {whole} ({time.perf_counter() - start:.0f} s)", flush=True)
        if it == ITERS:
            break
        loss = per_position_nll(model, *get_batch(train_data)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()


if __name__ == "__main__":
    main()
