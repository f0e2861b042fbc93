"""Generate text from a trained character-level language model.

    python -m scripts.sample --run RUN_DIR --prompt "ROMEO:" --max-new-tokens 500 \
        --temperature 0.8 --top-k 200 --seed 0

Restores the run's latest checkpoint (or `--step`) into the model and task the
run built (`jaxdl.runs.restore`, from `RUN_DIR/manifest.json`) and prints
`--num-samples` continuations of the prompt (`jaxdl.sampling`). The same seed
gives the same text. Sampling uses the Transformer's key/value cache;
`--no-cache` recomputes the context at every step instead (nanoGPT's
`sample.py`), and `--benchmark` times both:

    python -m scripts.sample --run RUN_DIR --benchmark --temperature 0 --max-new-tokens 500

generates the same tokens with the cache and by recomputation, each first once
to compile and then `--repeats` times (the fastest counts), and prints both
rates in generated tokens per second (batch x new tokens / wall seconds, host
included), their ratio, and how many leading tokens the two outputs share.
With `--temperature 0` (greedy) they are identical while prompt + output fit
in the model's context (max_len); past it the cache restarts from the last
max_len / 2 tokens while recomputation slides a full window, so the texts may
part there.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time

import jax
import numpy as np

from jaxdl import sampling
from jaxdl.data.text import decode_text, encode_text
from jaxdl.runs import load_settings, restore


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a finished run's folder")
    parser.add_argument("--prompt", default="\n", help="text to continue (characters of the run's vocabulary)")
    parser.add_argument("--max-new-tokens", type=int, default=500)
    parser.add_argument("--temperature", type=float, default=0.8, help="0: greedy")
    parser.add_argument("--top-k", type=int, default=200, help="sample among the k most likely characters (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-samples", type=int, default=1)
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    parser.add_argument("--no-cache", action="store_true", help="recompute the context at every step")
    parser.add_argument("--benchmark", action="store_true", help="time cached against recomputed generation")
    parser.add_argument("--repeats", type=int, default=3, help="--benchmark: timed runs per path (the fastest counts)")
    args = parser.parse_args(argv)

    settings = load_settings(args.run)
    seq_len = settings["data"].get("seq_len") or settings["model"].get("max_len")
    restored = restore(args.run, {"tokens": np.zeros((1, seq_len), np.int32)}, step=args.step)
    task, params = restored.task, restored.state.params
    if task.vocabulary is None:
        print(f"{args.run} is not a text model (its task has no vocabulary).", file=sys.stderr)
        return 2
    try:
        prompt = encode_text(args.prompt, task.vocabulary)
    except ValueError as e:
        print(f"--prompt: {e}", file=sys.stderr)
        return 2
    prompt = np.repeat(prompt[None], args.num_samples, axis=0)
    draw = dict(key=jax.random.key(args.seed), temperature=args.temperature, top_k=args.top_k or None)
    if args.benchmark:
        return benchmark(task.model, params, prompt, args.max_new_tokens, draw, repeats=args.repeats,
                         step=restored.step)
    out = sampling.generate(task.model, params, prompt, args.max_new_tokens, use_cache=not args.no_cache, **draw)
    for i, row in enumerate(out):
        if args.num_samples > 1:
            print(f"---------- sample {i}")
        print(decode_text(row, task.vocabulary))
    return 0


def benchmark(model, params, prompt: np.ndarray, max_new_tokens: int, draw: dict, *, repeats: int, step: int) -> int:
    """Prints generated tokens/s with the key/value cache and with recomputation, their ratio and agreement."""
    rates, outputs = {}, {}
    for name, use_cache in (("cached", True), ("recomputed", False)):
        generate = functools.partial(sampling.generate, model, params, prompt, max_new_tokens, use_cache=use_cache)
        outputs[name] = generate(**draw)  # compiles
        best = float("inf")
        for _ in range(max(repeats, 1)):
            start = time.perf_counter()
            out = generate(**draw)
            best = min(best, time.perf_counter() - start)
            np.testing.assert_array_equal(out, outputs[name])  # deterministic from the seed
        rates[name] = max_new_tokens * len(prompt) / best
        print(f"{name}: {max_new_tokens} tokens x {len(prompt)} in {best:.3f} s = {rates[name]:.1f} tokens/s "
              f"(best of {max(repeats, 1)}, step {step})")
    new_cached, new_recomputed = outputs["cached"][:, prompt.shape[1]:], outputs["recomputed"][:, prompt.shape[1]:]
    differs = (new_cached != new_recomputed).any(axis=0)
    shared = int(np.argmax(differs)) if differs.any() else max_new_tokens
    context = model.context_length
    print(f"cached / recomputed: {rates['cached'] / rates['recomputed']:.2f}x; the first {shared} of {max_new_tokens} "
          f"generated tokens are identical (context max_len={context}, prompt {prompt.shape[1]} tokens)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
