"""The CPU time of the Transformer's matrix products alone: XLA inside one program against PyTorch's eager loop.

    python -m benchmarks.matmul_products jax
    python -m benchmarks.matmul_products torch
    taskset -c 0 python -m benchmarks.matmul_products jax    # one core
    python -m benchmarks.matmul_products jax --form dw       # the backward products: x^T g, then g w^T (dx)

Each shape is a product of `experiment=shakespeare_char_cpu` (batch 12 x block 64 = 768 rows, width 128, MLP
512, vocabulary 65), plus one large product for the machine's peak. `--form`: `xw` the forward product
x [m, k] @ w [k, n]; `dw` the weight gradient's x^T @ g with g [m, n]; `dx` the input gradient's g @ w^T.
XLA: 40 such products (40 different right-hand sides), unrolled in
one jitted program (no dispatch or loop between them), timed as a whole; PyTorch: the same 40 products in a
Python loop, as its eager users run them. Each framework runs in its own process at its defaults (run them one
after the other, on an idle machine). Prints ms per product and GFLOP/s, medians over 30 repeats.
Results: benchmarks/RESULTS.md, "Why each ratio above target is there", Transformer.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

#: (m, k, n) of x [m, k] @ w [k, n].
SHAPES = (
    (768, 128, 384),  # the attention's query/key/value projection
    (768, 128, 128),  # the attention's output projection
    (768, 128, 512),  # MLP up
    (768, 512, 128),  # MLP down
    (768, 128, 65),  # the tied output embedding
    (2048, 2048, 2048),  # large: the machine's sustained rate
)


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time (s) of `fn()` over `repeats` calls after two untimed ones."""
    fn()
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


#: form -> the product of a and b[i]: forward x @ w, weight gradient x^T @ g, input gradient g @ w^T.
FORMS = {"xw": lambda a, b: a @ b, "dw": lambda a, b: a.T @ b, "dx": lambda a, b: a @ b.T}


def operands(form: str, m: int, k: int, n: int, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """float32 (a, b) with `count` right-hand sides b[i] for `FORMS[form]`; every product costs 2 m k n flops."""
    a_shape, b_shape = {"xw": ((m, k), (k, n)), "dw": ((m, k), (m, n)), "dx": ((m, n), (k, n))}[form]
    return rng.normal(size=a_shape).astype(np.float32), rng.normal(size=(count, *b_shape)).astype(np.float32)


def timer(framework: str, form: str, a: np.ndarray, bs: np.ndarray) -> Callable[[], object]:
    """A call that computes every product `FORMS[form](a, bs[i])` once and returns when they are done."""
    product = FORMS[form]
    if framework == "jax":
        import jax

        program = jax.jit(lambda a, bs: [product(a, bs[i]) for i in range(bs.shape[0])])
        a_dev, bs_dev = jax.device_put(a), jax.device_put(bs)
        return lambda: jax.block_until_ready(program(a_dev, bs_dev))
    import torch

    a_t, bs_t = torch.from_numpy(a), torch.from_numpy(bs)

    def loop() -> None:
        for i in range(bs_t.shape[0]):
            product(a_t, bs_t[i])

    return loop


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("framework", choices=("jax", "torch"))
    parser.add_argument("--form", choices=sorted(FORMS), default="xw", help="which product (default xw, the forward)")
    parser.add_argument("--products", type=int, default=40, help="products per timed call (4 for the large one)")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    if args.framework == "jax":
        from jaxdl import backend

        backend.configure()  # jaxdl's XLA CPU settings, as every run gets them
    rng = np.random.default_rng(0)
    for m, k, n in SHAPES:
        count = 4 if m * k * n > 1e9 else args.products
        a, bs = operands(args.form, m, k, n, count, rng)
        seconds = median_seconds(timer(args.framework, args.form, a, bs), args.repeats) / count
        print(f"{args.framework} {args.form} (m, k, n) = ({m}, {k}, {n}): {seconds * 1e3:.3f} ms per product, "
              f"{2 * m * k * n / seconds / 1e9:.0f} GFLOP/s", flush=True)


if __name__ == "__main__":
    main()
