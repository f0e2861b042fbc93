"""Which way of computing a 2-D convolution is fastest on this CPU within JAX, and is it correct?

    python -m benchmarks.conv_paths                         # every path, 3 rounds (a few minutes)
    python -m benchmarks.conv_paths --paths default xnn_greedy im2col --rounds 5
    python -m benchmarks.conv_paths --batch 8 --size 8 --rounds 1 --iters 2   # a smoke run (about a minute)

The problem (defaults: a 3x3 convolution, 64 -> 64 channels, batch 64, 32x32;
`--batch --size --cin --cout --kernel --padding` set others, e.g. the Keras
CNN's first layer: `--batch 128 --cin 3 --cout 16 --kernel 2 --padding VALID`):
x [B, H, W, C] NHWC, w [k, k, C, O] HWIO, stride 1, float32; one call
computes the forward y = conv(x, w) [B, H', W', O] and the weight gradient
dw = d<y, dy>/dw [k, k, C, O] for a fixed cotangent dy (what a training step
needs of a layer's own parameters; `--input-grad` adds dx).

Each path is a way to compute that: XLA's convolution as Flax calls it (in
jaxlib 0.10 its CPU backend already hands convolutions and dots to YNNPACK),
under CPU flags of XLA (YNNPACK off or extended, XNNPACK, oneDNN, scheduler,
vector width, fusion emitters), in NCHW,
at another precision setting, as im2col or shifted matrix products, the weight
gradient alone as one matrix product over patches, split over 2 host devices,
and PyTorch channels-last as the reference the ratio is taken against. Every
path runs in a fresh process (XLA flags are read once per process), paths in
turn round after round, so drift hits every path alike. A path's figure is the
median over rounds of its median call. Each path's outputs are compared with
the default path's (`--rtol`, relative to the largest magnitude of each
output): a path that is fast but wrong says FAIL. Timings need an idle
machine; the load average is printed at the start and the end.

The JAX paths run with the huge pages jaxdl gives a run (`jaxdl.backend.restart_with_huge_pages`;
`JAXDL_HUGE_PAGES=0` for glibc's default pages); the PyTorch path gets the environment its user had
(`jaxdl.backend.without_additions`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

from jaxdl import backend  # light: it imports jax only where a function needs it


@dataclasses.dataclass(frozen=True)
class Path:
    """One way to compute the problem: an implementation, XLA flags and a host device count."""

    name: str
    impl: str = "xla"  # see IMPLS
    xla_flags: tuple[str, ...] = ()
    devices: int = 1
    note: str = ""


XNN = "--xla_cpu_use_xnnpack=true"
PATHS = {p.name: p for p in (
    Path("default", note="lax.conv_general_dilated NHWC/HWIO, as flax.linen.Conv calls it"),
    Path("nchw", "xla_nchw", note="the same convolution on NCHW/OIHW arrays"),
    Path("precision_highest", "xla_highest", note="precision=HIGHEST"),
    Path("f32_accumulate", "xla_f32", note="preferred_element_type=float32"),
    Path("xnnpack", xla_flags=(XNN,)),
    Path("xnn_greedy", xla_flags=(XNN, "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY")),
    Path("xnn_greedy_slinky",
         xla_flags=(XNN, "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY_SLINKY")),
    Path("xnn_fusions", xla_flags=(XNN, "--xla_cpu_experimental_xnn_fusion_type=dot,eltwise,reduce")),
    Path("no_ynn_conv", xla_flags=("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",),
         note="XLA's own convolution kernels instead of YNNPACK's"),
    Path("no_ynn", xla_flags=("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution,-individual_dot",),
         note="neither convolutions nor dots in YNNPACK"),
    Path("ynn_fusions", xla_flags=("--xla_cpu_experimental_ynn_fusion_type=+dot,+eltwise,+reduce",),
         note="YNNPACK also for fused dot, elementwise and reduce subgraphs"),
    Path("onednn", xla_flags=("--xla_cpu_use_onednn=true",)),
    Path("onednn_custom_call", xla_flags=("--xla_cpu_use_onednn=true", "--xla_cpu_experimental_onednn_custom_call=true")),
    Path("onednn_fusions", xla_flags=("--xla_cpu_experimental_onednn_fusion_type=dot,eltwise",)),
    Path("concurrency_scheduler", xla_flags=("--xla_cpu_enable_concurrency_optimized_scheduler=true",)),
    Path("vector_width_512", xla_flags=("--xla_cpu_prefer_vector_width=512",)),
    Path("no_fusion_emitters", xla_flags=("--xla_cpu_use_fusion_emitters=false",)),
    Path("im2col", "im2col", note="one matrix product over k*k concatenated shifted slices (jaxdl.models.layers)"),
    Path("im2col_xnn_greedy", "im2col",
         xla_flags=(XNN, "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY")),
    Path("im2col_no_ynn", "im2col", xla_flags=("--xla_cpu_experimental_ynn_fusion_type=-individual_dot",)),
    Path("shifted_matmuls", "shifted", note="k*k matrix products of shifted slices, summed"),
    Path("wgrad_matmul", "wgrad_matmul", note="XLA's forward convolution; dw as one matrix product patches^T dy"),
    Path("two_devices", devices=2, note="the batch split over 2 host devices (shard_map), dw summed"),
    Path("torch_channels_last", "torch", note="PyTorch channels-last (the reference, not a JAX path)"),
)}
DEFAULT_PATHS = tuple(PATHS)


# ---------------------------------------------------------------------------------------------- the worker


def problem(args) -> dict[str, np.ndarray]:
    """x, w, dy of the configured shapes from a fixed seed (float32)."""
    rng = np.random.default_rng(0)
    b, s, c, o, k = args.batch, args.size, args.cin, args.cout, args.kernel
    out = output_size(args)
    return {"x": rng.standard_normal((b, s, s, c), np.float32),
            "w": (rng.standard_normal((k, k, c, o)) / np.sqrt(k * k * c)).astype(np.float32),
            "dy": rng.standard_normal((b, out, out, o), np.float32)}


def output_size(args) -> int:
    """H' = W' of the output: H for "SAME", H - k + 1 for "VALID" (stride 1)."""
    return args.size if args.padding == "SAME" else args.size - args.kernel + 1


def patches(x, k: int, padding: str):
    """The k*k shifted slices of x [B, H, W, C] (stride 1) concatenated on channels: [B, H', W', k*k*C], (i, j, c) order."""
    import jax.numpy as jnp
    from jax import lax

    pads = lax.padtype_to_pads(x.shape[1:3], (k, k), (1, 1), padding)
    xp = jnp.pad(x, ((0, 0), tuple(pads[0]), tuple(pads[1]), (0, 0)))
    h, w = xp.shape[1] - k + 1, xp.shape[2] - k + 1
    return jnp.concatenate([xp[:, i : i + h, j : j + w, :] for i in range(k) for j in range(k)], axis=-1)


def jax_function(path: Path, input_grad: bool, padding: str):
    """(x, w, dy) -> (y, dw[, dx]) for a JAX path, NHWC in and out (NCHW for "xla_nchw", see `layouts`)."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    nhwc = ("NHWC", "HWIO", "NHWC")

    def xla(x, w, **kw):
        return lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=nhwc, **kw)

    def xla_nchw(x, w):
        return lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=("NCHW", "OIHW", "NCHW"))

    def im2col(x, w):
        from jaxdl.models.layers import im2col_conv_general_dilated

        return im2col_conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=nhwc)

    def shifted(x, w):
        k, _, c, _ = w.shape
        p = patches(x, k, padding)
        return sum(jnp.dot(p[..., (i * k + j) * c : (i * k + j + 1) * c], w[i, j]) for i in range(k) for j in range(k))

    @jax.custom_vjp
    def wgrad_matmul(x, w):
        return xla(x, w)

    def wgrad_fwd(x, w):
        return xla(x, w), (x, w)

    def wgrad_bwd(res, dy):
        x, w = res
        k, _, c, o = w.shape
        dw = jnp.einsum("bhwp,bhwo->po", patches(x, k, padding), dy).reshape(k, k, c, o)  # [k*k*C, O] -> HWIO
        return jax.vjp(lambda x_: xla(x_, w), x)[1](dy)[0], dw

    wgrad_matmul.defvjp(wgrad_fwd, wgrad_bwd)
    conv = {
        "xla": xla,
        "xla_highest": lambda x, w: xla(x, w, precision=lax.Precision.HIGHEST),
        "xla_f32": lambda x, w: xla(x, w, preferred_element_type=jnp.float32),
        "xla_nchw": xla_nchw,
        "im2col": im2col,
        "shifted": shifted,
        "wgrad_matmul": wgrad_matmul,
    }[path.impl]

    def step(x, w, dy):
        y, vjp = jax.vjp(conv, x, w)
        dx, dw = vjp(dy)
        return (y, dw, dx) if input_grad else (y, dw)

    if path.devices == 1:
        return jax.jit(step)
    from jax.sharding import Mesh
    from jax.sharding import PartitionSpec as P

    mesh = Mesh(np.asarray(jax.devices()[: path.devices]), ("batch",))

    def per_device(x, w, dy):
        out = step(x, w, dy)
        return (out[0], jax.lax.psum(out[1], "batch"), *out[2:])

    specs = (P("batch"), P(), P("batch")) if input_grad else (P("batch"), P())
    # check_vma=False: no implicit psum of w's cotangent (the explicit one above is the only one), as in parallel.py.
    return jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P("batch"), P(), P("batch")), out_specs=specs,
                                 check_vma=False))


def layouts(path: Path, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The problem's arrays in the path's layout (NCHW / OIHW for "xla_nchw"; NHWC otherwise)."""
    if path.impl != "xla_nchw":
        return arrays
    return {"x": np.ascontiguousarray(arrays["x"].transpose(0, 3, 1, 2)),
            "w": np.ascontiguousarray(arrays["w"].transpose(3, 2, 0, 1)),
            "dy": np.ascontiguousarray(arrays["dy"].transpose(0, 3, 1, 2))}


def back_to_nhwc(path: Path, outputs: list[np.ndarray]) -> list[np.ndarray]:
    if path.impl not in ("xla_nchw", "torch"):
        return outputs
    y, dw, *dx = outputs
    return [y.transpose(0, 2, 3, 1), dw.transpose(2, 3, 1, 0), *(d.transpose(0, 2, 3, 1) for d in dx)]


def torch_function(input_grad: bool, padding: str):
    """PyTorch channels-last (its default threads): the same forward and gradients, NCHW-shaped tensors."""
    import torch

    def step(x, w, dy):
        x = x.requires_grad_(input_grad)
        w = w.requires_grad_(True)
        y = torch.nn.functional.conv2d(x, w, padding=padding.lower())
        grads = torch.autograd.grad(y, [w, x] if input_grad else [w], dy)
        return (y.detach(), *grads)

    def prepare(arrays):
        cl = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)  # noqa: E731
        w = torch.from_numpy(arrays["w"]).permute(3, 2, 0, 1).contiguous(memory_format=torch.channels_last)
        return cl(arrays["x"]), w, cl(arrays["dy"])

    return step, prepare


#: What the compiled program is made of: name -> substring counted in its optimized HLO text.
PROGRAM_PARTS = {"conv": " convolution(", "dot": " dot(", "fusion": " fusion(", "custom-call": " custom-call(",
                 "ynn fusion": '"__ynn_fusion"', "xnn fusion": '"__xnn_fusion"', "onednn": "onednn"}


def program_summary(hlo_text: str) -> str:
    """Counts of the parts in PROGRAM_PARTS in an optimized HLO module (shows whether a flag changed anything)."""
    counts = {name: hlo_text.count(part) for name, part in PROGRAM_PARTS.items()}
    return " ".join(f"{name} {n}" for name, n in counts.items() if n)


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs one path in this (fresh) process: compile, `iters` timed calls; saves its outputs to spec["out"]."""
    args = argparse.Namespace(**spec["args"])
    path = PATHS[spec["path"]]
    arrays = problem(args)
    if path.impl == "torch":
        import torch

        step, prepare = torch_function(args.input_grad, args.padding)
        inputs = prepare(arrays)
        run = lambda: [t.detach().contiguous().numpy() for t in step(*(t.detach() for t in inputs))]  # noqa: E731
        finish = lambda out: out  # noqa: E731
        versions = {"torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    else:
        import jax

        if path.devices > 1:
            jax.config.update("jax_num_cpu_devices", path.devices)
        fn = jax_function(path, args.input_grad, args.padding)
        inputs = [jax.device_put(a) for a in layouts(path, arrays).values()]
        run = lambda: fn(*inputs)  # noqa: E731
        finish = lambda out: [np.asarray(o) for o in jax.block_until_ready(out)]  # noqa: E731
        versions = {"jax": jax.__version__, "devices": len(jax.devices()),
                    "program": program_summary(fn.lower(*inputs).compile().as_text())}
    t0 = time.perf_counter()
    outputs = finish(run())
    first_s = time.perf_counter() - t0
    wall, cpu = [], []
    for _ in range(args.iters):
        t0, c0 = time.perf_counter(), time.process_time()
        finish(run())
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    np.savez(spec["out"], *back_to_nhwc(path, outputs))
    return {"path": path.name, "first_s": first_s, "wall_s": statistics.median(wall), "cpu_s": statistics.median(cpu),
            "xla_flags": os.environ.get("XLA_FLAGS", ""), **versions}


# ---------------------------------------------------------------------------------------------- the parent


def run_path(path: Path, args, out: pathlib.Path) -> dict[str, Any]:
    """One fresh process for `path`; returns its report, or {"error": ...}."""
    # the JAX paths inherit the huge-page tunable `main` started with, as a run has it; PyTorch gets its user's
    env = backend.without_additions(os.environ) if path.impl == "torch" else dict(os.environ)
    if path.xla_flags:
        env["XLA_FLAGS"] = " ".join([env.get("XLA_FLAGS", ""), *path.xla_flags]).strip()
    spec = {"path": path.name, "out": str(out), "args": {k: v for k, v in vars(args).items() if k in WORKER_ARGS}}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.conv_paths", "--worker", json.dumps(spec)],
                          env=env, capture_output=True, text=True, timeout=args.timeout)
    if proc.returncode:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"path": path.name, "error": f"exit {proc.returncode}: {' | '.join(tail)[-400:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


WORKER_ARGS = ("batch", "size", "cin", "cout", "kernel", "padding", "iters", "input_grad")


def compare(reference: list[np.ndarray], outputs: list[np.ndarray]) -> list[float]:
    """Per output: max |a - b| / max |b| (relative to the output's largest magnitude)."""
    return [float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30)) for a, b in zip(outputs, reference)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--paths", nargs="+", default=list(DEFAULT_PATHS), choices=sorted(PATHS))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32, help="H = W")
    parser.add_argument("--cin", type=int, default=64)
    parser.add_argument("--cout", type=int, default=64)
    parser.add_argument("--kernel", type=int, default=3)
    parser.add_argument("--padding", default="SAME", choices=["SAME", "VALID"])
    parser.add_argument("--input-grad", action="store_true", help="also compute dx")
    parser.add_argument("--iters", type=int, default=5, help="timed calls per process")
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per path, in turn")
    parser.add_argument("--rtol", type=float, default=1e-4, help="largest |difference| / largest |value| allowed")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per process")
    parser.add_argument("--json", type=pathlib.Path, default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0

    from benchmarks.machine_load import LoadMonitor

    print(f"huge pages for the JAX paths: {backend.describe()['huge_pages']}", flush=True)
    monitor = LoadMonitor()
    before = monitor.read()
    paths = ["default", *[p for p in args.paths if p != "default"]]  # the reference comes first
    flops = 2 * args.batch * output_size(args) ** 2 * args.cin * args.cout * args.kernel**2 * (3 if args.input_grad else 2)
    print(f"problem: x [{args.batch}, {args.size}, {args.size}, {args.cin}], w [{args.kernel}, {args.kernel}, "
          f"{args.cin}, {args.cout}], forward + weight gradient{' + input gradient' if args.input_grad else ''} "
          f"({flops / 1e9:.2f} GFLOP a call); load average {before['load1']:.2f}", flush=True)
    reports: dict[str, list[dict]] = {p: [] for p in paths}
    errors: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        reference = None
        for r in range(args.rounds):
            for name in (paths if r % 2 == 0 else [paths[0], *reversed(paths[1:])]):
                out = pathlib.Path(tmp) / f"{name}.npz"
                report = run_path(PATHS[name], args, out)
                reports[name].append(report)
                if "error" in report:
                    print(f"  round {r} {name:22s} {report['error']}", flush=True)
                    continue
                with np.load(out) as f:
                    outputs = [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]
                if reference is None:
                    reference = outputs
                errors[name] = compare(reference, outputs)
                print(f"  round {r} {name:22s} {report['wall_s'] * 1e3:9.1f} ms ({report['cpu_s'] * 1e3:9.1f} ms CPU)"
                      f"  first call {report['first_s']:6.2f} s  max rel. error {max(errors[name]):.1e}", flush=True)
    after = monitor.read()
    load = monitor.row(before, after)
    rows = []
    base = statistics.median(r["wall_s"] for r in reports["default"] if "wall_s" in r) if reports["default"] else None
    torch_ms = [r["wall_s"] for r in reports.get("torch_channels_last", []) if "wall_s" in r]
    print("\n| path | XLA flags | call (ms) | CPU (ms) | GFLOP/s | vs default | vs PyTorch channels-last | "
          "max rel. error (y, dw[, dx]) | correct | compiled program |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in paths:
        good = [r for r in reports[name] if "wall_s" in r]
        if not good:
            print(f"| {name} | {' '.join(PATHS[name].xla_flags)} | failed: {reports[name][-1].get('error', '')[:120]} |")
            rows.append({"path": name, "error": reports[name][-1].get("error")})
            continue
        wall = statistics.median(r["wall_s"] for r in good)
        cpu = statistics.median(r["cpu_s"] for r in good)
        err = errors.get(name, [float("nan")])
        ok = all(e <= args.rtol for e in err)
        vs_torch = f"{wall / statistics.median(torch_ms):.2f}" if torch_ms else "-"
        print(f"| {name} | `{' '.join(PATHS[name].xla_flags)}` | {wall * 1e3:,.1f} | {cpu * 1e3:,.1f} | "
              f"{flops / wall / 1e9:.1f} | {wall / base:.2f} | {vs_torch} | {', '.join(f'{e:.1e}' for e in err)} | "
              f"{'ok' if ok else 'FAIL'} | {good[-1].get('program', '-')} |")
        rows.append({"path": name, "xla_flags": list(PATHS[name].xla_flags), "note": PATHS[name].note, "wall_s": wall,
                     "cpu_s": cpu, "windows_s": [r["wall_s"] for r in good], "relative_error": err, "correct": ok,
                     "program": good[-1].get("program")})
    print(f"\nload: 1-min {before['load1']:.2f} -> {after['load1']:.2f}, other processes {load['other_cpu_cores']:.2f} "
          f"cores{' (UNDER LOAD: these timings are not to be trusted)' if load['loaded'] else ''}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args), "rows": rows, "load": load}, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    if "--worker" not in sys.argv:  # a worker keeps the environment its parent chose for its path
        backend.restart_with_huge_pages()  # JAX's temporaries as `python -m experiments.run` has them
    sys.exit(main())
