"""scripts.benchmark runs end to end on tiny sizes and records load and threads; the attempted variants it times
compute what jaxdl computes."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.models.cnn import CNN
from jaxdl.models.rnn import RNNLM
from scripts import bench_variants
from tests.conftest import assert_close


@pytest.mark.parametrize(("num_layers", "num_classes"),
                         [(1, None), (2, 3), pytest.param(2, None, marks=pytest.mark.slow),
                          pytest.param(1, 3, marks=pytest.mark.slow)])
def test_hoisted_lstm_has_rnnlms_parameters_outputs_and_gradients(num_layers, num_classes):
    sizes = dict(vocab_size=23, hidden_dim=16, embed_dim=8, num_layers=num_layers, num_classes=num_classes,
                 dropout_rate=0.25)
    new, ref = bench_variants.HoistedRNNLM(**sizes), RNNLM(**sizes)
    tokens = jax.random.randint(jax.random.key(0), (5, 11), 0, 23)
    token_mask = jnp.arange(11)[None, :] < jnp.array([11, 3, 7, 1, 10])[:, None]  # valid prefixes
    params = new.init(jax.random.key(1), tokens, train=False)["params"]
    ref_params = ref.init(jax.random.key(1), tokens, train=False)["params"]
    assert jax.tree.structure(params) == jax.tree.structure(ref_params)
    assert_close(params, ref_params, rtol=0, atol=0)  # identical initial values

    example_keys = jax.random.split(jax.random.key(2), 5)  # the model contract's per-example dropout streams

    def loss(module, p):
        out = module.apply({"params": p}, tokens, train=True, example_keys=example_keys, token_mask=token_mask)
        return jnp.sum(jnp.sin(out)), out

    (_, out_new), g_new = jax.jit(jax.value_and_grad(lambda p: loss(new, p), has_aux=True))(params)
    (_, out_ref), g_ref = jax.jit(jax.value_and_grad(lambda p: loss(ref, p), has_aux=True))(params)
    assert_close(out_new, out_ref, rtol=1e-5, atol=1e-6)
    assert_close(g_new, g_ref, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("kernel_size", "padding"), [(2, "VALID")])  # SAME 3x3: tests/models/test_cnn.py
def test_im2col_convolution_gives_the_cnns_outputs_and_gradients(kernel_size, padding):
    model = CNN(channels=(4, 6), kernel_size=kernel_size, padding=padding, dense_dims=(8,))
    x = jax.random.normal(jax.random.key(0), (3, 12, 12, 3))
    params = model.init(jax.random.key(1), x, train=False)

    def loss(p):
        return jnp.sum(jnp.sin(model.apply(p, x, train=False)))

    ref = jax.jit(jax.value_and_grad(loss))(params)
    with bench_variants.im2col_conv():  # traced inside: a new function, so jit's cache cannot return `ref`'s program
        new = jax.jit(jax.value_and_grad(loss))(params)
    assert_close(new, ref, rtol=1e-5, atol=1e-6)
    strided = nn.Conv(5, (3, 3), strides=2, padding="SAME")
    p = strided.init(jax.random.key(2), x)
    with bench_variants.im2col_conv():
        y = jax.jit(lambda p, x: strided.apply(p, x))(p, x)
    assert_close(y, jax.jit(lambda p, x: strided.apply(p, x))(p, x), rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # the whole benchmark command, peers included
def test_benchmark_runs_one_tiny_model_beside_its_peers(mnist_data_dir, tmp_path, capsys):
    from scripts import benchmark

    peers = [p for p, module in (("torch", "torch"), ("keras", "keras")) if _importable(module)]
    out = tmp_path / "bench.json"
    code = benchmark.main(["--models", "mlp", "--tiny", "--repeats", "1", "--window", "0.01", "--no-write",
                           "--peers", *peers, "--override", f"data.data_dir={mnist_data_dir}", "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| mlp (`model=mlp`) | 16 |" in printed
    import json

    record = json.loads(out.read_text())
    row = record["rows"][0]
    results = row["results"]
    assert {"jaxdl", *(benchmark.PEER_COLUMNS[p] for p in peers)} <= set(results)
    assert all(r["step_s"] > 0 and r["compile_s"] > 0 for r in results.values())
    assert {"before", "after", "other_cpu_cores", "loaded"} <= set(row["load"])
    assert all("cpu_count" in r["threads"] for r in results.values())
    if "torch" in peers:
        assert results["torch"]["threads"]["torch_threads"] >= 1
    if "keras" in peers:
        assert results["keras-jax"]["threads"]["keras_backend"] == "jax"


def test_a_row_is_under_load_when_other_processes_keep_the_cores_busy(monkeypatch):
    from benchmarks import machine_load

    monitor = machine_load.LoadMonitor(cores=2)
    monkeypatch.setattr(machine_load.os, "getloadavg", lambda: (0.2, 0.2, 0.2))
    idle = monitor.read()
    monkeypatch.setattr(machine_load.os, "getloadavg", lambda: (3.5, 2.0, 1.0))
    busy = monitor.read()
    assert not idle["loaded"] and busy["loaded"]  # 3.5 less at most 2 busy cores of ours is over 0.5 x 2 cores
    assert not monitor.row(idle, idle)["loaded"] and monitor.row(idle, busy)["loaded"]


def test_a_window_starts_after_an_untimed_step_for_every_column():
    """A step right after another framework's window (here 50 ms slower) is not timed, for any column."""
    import time

    from scripts import benchmark

    last, calls = [None], []

    def runner(name):
        def run(k):
            calls.append((name, k))
            time.sleep(0.05 if last[0] != name else 0.0)  # the first step after a switch
            time.sleep(0.002 * k)
            last[0] = name

        return run

    out = benchmark.measure({"a": runner("a"), "b": runner("b")}, repeats=3, window_s=0.01)
    for column in ("a", "b"):
        assert out[column]["step_s"] < 0.006, out[column]  # 2 ms steps; the 50 ms switch would add >= 10 ms a step
    windows = calls[4:]  # after the compile and calibration steps of both
    assert windows == [("a", 1), ("a", out["a"]["k"]), ("b", 1), ("b", out["b"]["k"])] * 3


def test_require_idle_refuses_to_start_under_load(monkeypatch, capsys):
    from benchmarks import machine_load
    from scripts import benchmark

    monkeypatch.setattr(machine_load.os, "getloadavg", lambda: (64.0, 64.0, 64.0))
    assert benchmark.main(["--models", "mlp", "--require-idle", "--no-write"]) == 3
    assert "under load" in capsys.readouterr().out


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


@pytest.mark.slow  # builds the VAE run and the bare loop
def test_vae_overhead_bare_loop_computes_what_jaxdl_computes(mnist_data_dir):
    from benchmarks import vae_overhead
    from jaxdl.data import sources
    from scripts.benchmark import compose

    settings = compose((*vae_overhead.OVERRIDES, "trainer.epochs=1", f"data.data_dir={mnist_data_dir}",
                        "data.train_limit=1000"))
    builder = sources.prepare("mnist", data_dir=str(mnist_data_dir))
    images = sources.load_arrays(builder, "train", limit=1000)["image"]
    assert vae_overhead.same_maths(settings, images, steps=4) == 0.0  # same parameters, keys and order: same numbers


def test_conv_paths_compares_each_path_with_the_default(capsys):
    from benchmarks import conv_paths

    assert conv_paths.main(["--paths", "default", "im2col", "wgrad_matmul", "--batch", "2", "--size", "5", "--cin", "3",
                            "--cout", "4", "--rounds", "1", "--iters", "1"]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert len(table) == 4 and all(line.split(" | ")[8] == "ok" for line in table[1:])  # header, 3 paths


def test_conv_paths_gives_pytorch_its_users_environment_and_the_jax_paths_jaxdls(monkeypatch, tmp_path):
    import subprocess

    from benchmarks import conv_paths
    from jaxdl import backend

    monkeypatch.setenv("GLIBC_TUNABLES", f"glibc.pthread.rseq=0:{backend.HUGE_PAGES_TUNABLE}")
    monkeypatch.setenv(backend.ADDED_TUNABLES_VARIABLE, backend.HUGE_PAGES_TUNABLE)  # as after the restart
    seen = {}

    def fake_run(command, env, **kwargs):
        seen[json.loads(command[-1])["path"]] = env
        return subprocess.CompletedProcess(command, 0, stdout='{"path": "x"}\n', stderr="")

    monkeypatch.setattr(conv_paths.subprocess, "run", fake_run)
    args = conv_paths.argparse.Namespace(timeout=1, batch=1, size=1, cin=1, cout=1, kernel=1, padding="SAME", iters=1,
                                         input_grad=False)
    for name in ("default", "no_ynn_conv", "torch_channels_last"):
        conv_paths.run_path(conv_paths.PATHS[name], args, tmp_path / f"{name}.npz")
    assert seen["torch_channels_last"]["GLIBC_TUNABLES"] == "glibc.pthread.rseq=0"  # the user's own tunable only
    assert backend.ADDED_TUNABLES_VARIABLE not in seen["torch_channels_last"]
    for name in ("default", "no_ynn_conv"):
        assert backend.HUGE_PAGES_TUNABLE in seen[name]["GLIBC_TUNABLES"].split(":")


def test_window_pause_times_each_step_without_the_pause_before_it():
    from benchmarks import window_pause

    calls = []
    steps = window_pause.timed_steps(lambda k: calls.append(k), 3, pause_s=0.05)
    assert calls == [1, 1, 1] and len(steps) == 3
    assert all(0 <= ms < 40 and faults >= 0 for ms, faults in steps)  # the 50 ms asleep are not in a step



@pytest.mark.parametrize(("form", "shape"), [("xw", (6, 4)), ("dw", (3, 4)), ("dx", (6, 3))])
def test_matmul_products_times_the_named_product(form, shape):
    from benchmarks import matmul_products

    a, bs = matmul_products.operands(form, 6, 3, 4, 2, np.random.default_rng(0))  # (m, k, n) = (6, 3, 4)
    b = bs[1]
    expected = {"xw": lambda: a @ b, "dw": lambda: a.T @ b, "dx": lambda: a @ b.T}[form]()  # x w, x^T g, g w^T
    assert expected.shape == shape
    products = matmul_products.timer("jax", form, a, bs)()
    assert len(products) == 2
    assert_close(products[1], expected, rtol=1e-5, atol=1e-5)
