"""scripts.benchmark's accelerator pieces: --dtype, --mfu (FLOPs from XLA's cost analysis), peaks by device kind."""

import json

import pytest

from scripts import benchmark


@pytest.mark.parametrize(("kind", "name", "bf16"), [
    ("NVIDIA H100 80GB HBM3", "H100 SXM", 989.4e12), ("NVIDIA H100 PCIe", "H100 PCIe", 756.5e12),
    ("NVIDIA H200", "H200 SXM", 989.4e12), ("NVIDIA A100-SXM4-80GB", "A100", 312e12),
    ("NVIDIA GH200 480GB", "GH200", 989.4e12),
])
def test_peaks_by_device_kind(kind, name, bf16):
    described, flops = benchmark.peak_flops(kind, "bfloat16")
    assert described.startswith(name) and flops == bf16
    assert benchmark.peak_flops(kind, "float32")[1] == pytest.approx(bf16 / 2, rel=1e-3)  # TF32: half the bf16 rate
    assert benchmark.peak_flops("cpu", "float32") is None


def test_mfu_is_flops_over_time_over_peak():
    row = {"case": "transformer_gpu", "batch": 64, "flops_per_step": 4.947e12,
           "results": {"jaxdl": {"step_s": 0.01}, "torch": {"step_s": 0.02}}}
    lines = benchmark.mfu_table([row], "NVIDIA H100 80GB HBM3", "bfloat16")
    assert "H100 SXM dense bf16 989.4 TFLOP/s" in lines[0]
    assert lines[-1] == "| transformer_gpu | 64 | 4,947.00 | 50.0 % | 25.0 % | - |"


def test_bfloat16_run_reports_the_flops_of_its_step(mnist_data_dir, tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = benchmark.main(["--models", "mlp", "--tiny", "--repeats", "1", "--window", "0.01", "--no-write", "--peers",
                           "--dtype", "bfloat16", "--mfu", "--override", f"data.data_dir={mnist_data_dir}",
                           "--json", str(out)])
    assert code == 0
    record = json.loads(out.read_text())
    assert record["dtype"] == "bfloat16" and "cpu" in record["accelerator"]
    # model.hidden_dims=[32,32] on 28x28 images, batch 16: the forward's products 2 * 16 * (784*32 + 32*32 + 32*10)
    # FLOPs; the backward repeats them for the weight gradients and adds the input gradients of the upper two
    # layers (the images need none). XLA also counts the elementwise and optimizer work, which for an MLP this
    # small stays below the products: the count lies between the products and twice them.
    forward = 2 * 16 * (784 * 32 + 32 * 32 + 32 * 10)
    products = 2 * forward + 2 * 16 * (32 * 32 + 32 * 10)
    assert products <= record["rows"][0]["flops_per_step"] <= 2 * products
    assert "| mlp | 16 |" in capsys.readouterr().out
