"""The Flax airbench94 against the PyTorch original: same weights, same logits, same SGD steps.

The PyTorch network, whitening initialisation, optimizer parameter groups and
learning-rate schedule are those of legacy/airbench94.py
(github.com/KellerJordan/cifar10-airbench, K. Jordan 2024) as
`benchmarks.peers.torch_airbench94` writes them (float32 on the CPU; the script uses float16
on CUDA); the label-smoothed summed loss is the script's.
Needs torch (`pip install -e .[bench]`); skipped without it.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed: pip install -e '.[bench]' to compare with PyTorch")
nn = torch.nn

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxdl.models.airbench import Airbench94  # noqa: E402
from jaxdl.tasks.airbench import AirbenchTask  # noqa: E402
from jaxdl.tasks.base import RunFacts  # noqa: E402
from jaxdl.training import optim  # noqa: E402
from benchmarks.peers.torch_airbench94 import (  # noqa: E402
    torch_airbench94,
    torch_airbench94_optimizer,
    torch_airbench94_whitening,
)
from tests.conftest import assert_close  # noqa: E402

pytestmark = pytest.mark.torch

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
HYP = dict(batch_size=64, lr=11.5, momentum=0.85, weight_decay=0.0153, bias_scaler=64.0, label_smoothing=0.2)
TOTAL_STEPS, WARMUP_STEPS = 476, 109


def to_torch_kernel(kernel):
    return torch.from_numpy(np.asarray(kernel).transpose(3, 2, 0, 1).copy())  # [kh, kw, in, out] -> [out, in, kh, kw]


def copy_into_torch(net, params):
    """Loads the Flax parameters into the PyTorch network (BatchNorm weights stay 1)."""
    with torch.no_grad():
        net[0].weight.copy_(to_torch_kernel(params["whiten"]["kernel"]))
        net[0].bias.copy_(torch.from_numpy(np.array(params["whiten"]["bias"])))
        for i in range(3):
            group, block = net[2 + i], params[f"block{i + 1}"]
            group.conv1.weight.copy_(to_torch_kernel(block["conv1"]["kernel"]))
            group.conv2.weight.copy_(to_torch_kernel(block["conv2"]["kernel"]))
            group.norm1.bias.copy_(torch.from_numpy(np.array(block["norm1"]["bias"])))
            group.norm2.bias.copy_(torch.from_numpy(np.array(block["norm2"]["bias"])))
        net[7].weight.copy_(torch.from_numpy(np.asarray(params["head"]["kernel"]).T.copy()))


def flax_from_torch(net):
    """The PyTorch network's trainable tensors in the Flax layout (same tree as `params`)."""

    def kernel(w):
        return w.detach().numpy().transpose(2, 3, 1, 0)

    out = {"whiten": {"kernel": kernel(net[0].weight), "bias": net[0].bias.detach().numpy()}}
    for i in range(3):
        group = net[2 + i]
        out[f"block{i + 1}"] = {
            "conv1": {"kernel": kernel(group.conv1.weight)},
            "conv2": {"kernel": kernel(group.conv2.weight)},
            "norm1": {"bias": group.norm1.bias.detach().numpy()},
            "norm2": {"bias": group.norm2.bias.detach().numpy()},
        }
    out["head"] = {"kernel": net[7].weight.detach().numpy().T}
    return out


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3 * HYP["batch_size"], 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, len(images))
    task = AirbenchTask(
        Airbench94(), normalize_mean=MEAN, normalize_std=STD, flip=False, translate=0, whiten_images=len(images),
        weight_decay=HYP["weight_decay"] * HYP["batch_size"] / HYP["lr"],  # the script's wd / lr at this batch size
    )
    split = {"image": images, "label": labels}
    context = task.prepare(split, split, RunFacts(batch_size=HYP["batch_size"], epochs=1, max_steps=TOTAL_STEPS)).context
    assert context.total_steps == TOTAL_STEPS and context.steps_per_epoch == 3
    schedule = optim.make_schedule(
        "triangular", HYP["lr"] / (1024 * (1 + 1 / (1 - HYP["momentum"]))), total_steps=TOTAL_STEPS,
        steps_per_epoch=context.steps_per_epoch, warmup_steps=WARMUP_STEPS, start_factor=0.2, end_factor=0.07,
    )
    tx = optim.make_optimizer("sgd", schedule, momentum=HYP["momentum"], nesterov=True)
    state = task.init_state(jax.random.key(0), tx, {"image": images[:1]}, context)
    torch.manual_seed(0)
    net = torch_airbench94()
    copy_into_torch(net, state.params)
    normalized = (images.astype(np.float32) / 255.0 - np.float32(MEAN)) / np.float32(STD)  # [N, H, W, C]
    torch_images = torch.from_numpy(normalized.transpose(0, 3, 1, 2).copy())
    return task, context, state, net, images, labels, normalized, torch_images


def test_whitening_filters_span_the_same_whitening_as_the_script(setup):
    _, context, _, _, _, _, _, torch_images = setup
    reference = torch_airbench94_whitening(torch_images).numpy()  # [24, C, kh, kw]
    ours = context.whiten_kernel.transpose(3, 2, 0, 1)
    assert ours.shape == reference.shape
    # eigenvectors are defined up to sign (and rotation within equal eigenvalues): compare F^T F
    f_ours, f_ref = ours.reshape(24, -1), reference.reshape(24, -1)
    assert_close(f_ours.T @ f_ours, f_ref.T @ f_ref, rtol=1e-4, atol=1e-4)
    assert_close(np.linalg.norm(f_ours, axis=1), np.linalg.norm(f_ref, axis=1), rtol=1e-4, atol=1e-5)


def test_forward_pass_matches_pytorch(setup):
    task, _, state, net, _, _, normalized, torch_images = setup
    x = normalized[:64]
    net.train()
    expected_train = net(torch_images[:64]).detach().numpy()
    logits_train, stats = task.model.apply(
        {"params": state.params, "batch_stats": state.batch_stats}, jnp.asarray(x), train=True, mutable=["batch_stats"]
    )
    assert_close(logits_train, expected_train, rtol=1e-4, atol=1e-5)
    assert_close(stats["batch_stats"]["block2"]["norm1"]["mean"], net[3].norm1.running_mean.numpy(), rtol=1e-4, atol=1e-6)
    net.eval()
    for module in net.modules():  # evaluate with the initial running statistics, as the Flax state holds them
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
    expected_eval = net(torch_images[:64]).detach().numpy()
    logits_eval = task.model.apply({"params": state.params, "batch_stats": state.batch_stats}, jnp.asarray(x), train=False)
    assert_close(logits_eval, expected_eval, rtol=1e-4, atol=1e-5)
    assert not np.allclose(logits_eval, logits_train, atol=1e-3)


def test_two_sgd_steps_match_pytorch(setup):
    task, context, state, _, images, labels, _, torch_images = setup
    torch.manual_seed(0)
    net = torch_airbench94()
    copy_into_torch(net, state.params)
    optimizer, scheduler = torch_airbench94_optimizer(net, batch_size=HYP["batch_size"], total_steps=TOTAL_STEPS)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=HYP["label_smoothing"], reduction="none")
    net.train()
    step = jax.jit(functools.partial(task.train_step, context=context))
    b = HYP["batch_size"]
    for i in range(2):
        rows = slice(i * b, (i + 1) * b)
        loss = loss_fn(net(torch_images[rows]), torch.from_numpy(labels[rows])).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        batch = {"image": images[rows], "label": labels[rows], "index": np.arange(i * b, (i + 1) * b, dtype=np.int32)}
        state, metrics = step(state, batch, jax.random.key(1))
        np.testing.assert_allclose(float(metrics["loss"]) * b, loss.item(), rtol=1e-5)
    initial = setup[2].params
    assert not np.allclose(state.params["block1"]["norm1"]["bias"], initial["block1"]["norm1"]["bias"])
    assert not np.allclose(state.params["head"]["kernel"], initial["head"]["kernel"])
    assert_close(state.params, flax_from_torch(net), rtol=1e-4, atol=2e-6)


def test_benchmark_peer_trains_the_scripts_network():
    from benchmarks import peers
    from benchmarks.peers import torch_models

    rng = np.random.default_rng(0)
    batch = {"image": rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8), "label": rng.integers(0, 10, 8)}
    model = {"whiten_kernel_size": 2, "num_outputs": 10, "widths": [8, 16, 16], "scaling_factor": 1 / 9}
    settings = {"model": model, "optimizer": {"name": "sgd", "learning_rate": 0.01, "momentum": 0.9, "nesterov": True}}
    net, loss = torch_models.airbench94(settings, batch)
    assert not net[0].weight.requires_grad and net[2].norm1.bias.requires_grad and not net[2].norm1.weight.requires_grad
    first = loss(net).item()
    peers.make("torch", "airbench94", settings, batch)(2)  # forward, summed loss, backward, SGD step
    assert np.isfinite(first) and first > 0
    with pytest.raises(peers.NotAvailable, match="2x2 whitening"):
        torch_models.airbench94({**settings, "model": {**model, "whiten_kernel_size": 3}}, batch)
