"""The reference models in PyTorch (eager and torch.compile) and Keras 3 (JAX backend), for `scripts.benchmark`.

`torch_gpt` and `torch_airbench94` are also the networks of the full reference
runs in benchmarks/reference and of the step-for-step PyTorch tests.

Peers: MLP, CNN (the Keras CNN and the VGG-style one), airbench94's network,
LSTM and Transformer language models, MLP VAE and DCGAN in PyTorch; all but
airbench94 in Keras (no Keras airbench94 exists to mirror; its frozen whitening
layer, scaled BN-bias learning rates and lookahead would be a port of our own).

Each builder mirrors one jaxdl model from the same composed settings (widths,
kernel sizes, dropout, batch norm) and the same training step: forward, the
task's loss, backward, the optimizer's update (Adam/AdamW/SGD with the run's
learning rate and gradient clipping). Learning-rate schedules are left out
(a scalar per step). Inputs are the first training batch of the jaxdl run
(uint8 images scaled to [0, 1] inside the step, as jaxdl does).

torch and keras are benchmark-only: `pip install -e .[bench]`.

Differences that remain, and why:
  * PyTorch convolutions run NCHW (PyTorch's default layout); Keras and jaxdl NHWC.
  * jaxdl draws dropout and VAE noise from one PRNG stream per example
    (`example_keys`, so a step is the same on 1 or N devices); the peers draw
    one tensor per batch.
  * Keras steps go through `Model.train_on_batch`, which returns the loss to
    the host each step; PyTorch on CPU is synchronous anyway. The Keras DCGAN
    has no `fit` form (two players): its step is the stateless JAX loop that
    Keras documents for custom training, jitted as one program.
  * The DCGAN's transposed convolutions are each framework's own op
    (ConvTranspose2d, Conv2DTranspose); jaxdl computes the same map as one
    3x3 convolution and a depth-to-space (`jaxdl.models.gan.ConvTranspose2x`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np


class NotAvailable(RuntimeError):
    """A peer that cannot run here (package missing, or no such architecture in that framework)."""


def make(peer: str, arch: str, settings: Mapping[str, Any], batch: Mapping[str, np.ndarray]) -> Callable[[int], None]:
    """`run(k)`: k training steps of `arch` in `peer` ("torch", "compile" or "keras") on `batch`."""
    if peer in ("torch", "compile"):
        try:
            import torch  # noqa: F401
        except ImportError as error:
            raise NotAvailable("torch is not installed: pip install -e .[bench]") from error
        if arch not in TORCH:
            raise NotAvailable(f"no PyTorch {arch}")
        return _torch_runner(arch, settings, batch, compiled=peer == "compile")
    if peer == "keras":
        os.environ.setdefault("KERAS_BACKEND", "jax")
        try:
            import keras
        except ImportError as error:
            raise NotAvailable("keras is not installed: pip install -e .[bench]") from error
        if keras.backend.backend() != "jax":
            raise NotAvailable(f"keras runs on {keras.backend.backend()}, not jax (set KERAS_BACKEND=jax)")
        if arch not in KERAS:
            raise NotAvailable(f"no natural Keras {arch}")
        return KERAS[arch](settings, batch)
    raise ValueError(f"Unknown peer {peer!r}.")


def _images(batch) -> np.ndarray:
    x = np.asarray(batch["image"])
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)


# ---------------------------------------------------------------------------------------------- PyTorch


def _torch_optimizer(params, optimizer: Mapping[str, Any]):
    import torch

    name, lr = optimizer["name"], optimizer["learning_rate"]
    betas = (optimizer.get("b1", 0.9), optimizer.get("b2", 0.999))
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, eps=optimizer.get("eps", 1e-8))
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=optimizer.get("weight_decay", 0.0))
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=optimizer.get("momentum") or 0.0,
                               nesterov=bool(optimizer.get("nesterov")), weight_decay=optimizer.get("weight_decay") or 0.0)
    raise NotAvailable(f"no PyTorch optimizer for {name}")


def _torch_mlp(s, batch):
    import torch
    from torch import nn

    m = s["model"]
    layers, width = [], int(np.prod(batch["image"].shape[1:]))
    for h in m["hidden_dims"]:
        layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(m["dropout_rate"])]
        width = h
    net = nn.Sequential(nn.Flatten(), *layers, nn.Linear(width, m["num_outputs"]))
    x, y = torch.from_numpy(_images(batch)), torch.from_numpy(np.asarray(batch["label"]).astype(np.int64))
    return net, lambda net: nn.functional.cross_entropy(net(x), y)


def _torch_cnn(s, batch):
    import torch
    from torch import nn

    m = s["model"]
    pad = 0 if m["padding"] == "VALID" else "same"
    layers, c = [], batch["image"].shape[-1]
    for width in m["channels"]:
        for _ in range(m["convs_per_block"]):
            layers.append(nn.Conv2d(c, width, m["kernel_size"], padding=pad, bias=not m["batch_norm"]))
            if m["batch_norm"]:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.ReLU())
            c = width
        layers.append(nn.MaxPool2d(m["pool_size"]))
        if m.get("conv_dropout_rate"):
            layers.append(nn.Dropout(m["conv_dropout_rate"]))
    layers.append(nn.Flatten())
    head = nn.Sequential(*layers)
    x = torch.from_numpy(_images(batch)).permute(0, 3, 1, 2).contiguous()  # NCHW
    flat = head(x[:1]).shape[1]
    dense = []
    for width in m["dense_dims"]:
        dense += [nn.Linear(flat, width), nn.ReLU(), nn.Dropout(m.get("dropout_rate") or 0.0)]
        flat = width
    net = nn.Sequential(head, *dense, nn.Linear(flat, m["num_outputs"]))
    y = torch.from_numpy(np.asarray(batch["label"]).astype(np.int64))
    return net, lambda net: nn.functional.cross_entropy(net(x), y)


def _torch_airbench94(s, batch):
    """airbench94's network as the script builds it (`torch_airbench94`), label smoothing 0.2, summed loss."""
    import torch
    from torch import nn

    m = s["model"]
    if m["whiten_kernel_size"] != 2 or m["num_outputs"] != 10:
        raise NotAvailable("the PyTorch airbench94 is the script's: 2x2 whitening, 10 classes")
    net = torch_airbench94(widths=tuple(m["widths"]), scaling_factor=m["scaling_factor"])
    x = torch.from_numpy(_images(batch)).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(np.asarray(batch["label"]).astype(np.int64))
    return net, lambda net: nn.functional.cross_entropy(net(x), y, label_smoothing=0.2, reduction="sum")


def torch_airbench94(*, widths=(64, 256, 256), batchnorm_momentum: float = 0.6, scaling_factor: float = 1 / 9):
    """airbench94's network: `make_net` of legacy/airbench94.py (KellerJordan/cifar10-airbench, K. Jordan 2024).

    float32 images NCHW [B, 3, 32, 32] -> logits [B, 10]. A frozen 2x2 whitening
    convolution (24 filters, bias trained) and GELU, three conv groups (conv,
    max-pool, BN, GELU, conv, BN, GELU; BN scale frozen at 1, eps 1e-12,
    running-statistics momentum 1 - `batchnorm_momentum`, convolutions
    identity-initialised on their first `in` filters), a 3x3 max-pool, a linear
    head without bias, scaled by `scaling_factor`. Modules keep the script's
    names (`net[2 + i].conv1`, `.norm1`, ...), which its optimizer groups use.
    The one torch airbench94 network of the project: the step-for-step test and
    the full reference run in benchmarks/reference build it; float32 on the CPU
    where the script runs float16 on CUDA.
    """
    import torch
    from torch import nn

    class BatchNorm(nn.BatchNorm2d):
        def __init__(self, num_features):
            super().__init__(num_features, eps=1e-12, momentum=1 - batchnorm_momentum)
            self.weight.requires_grad = False

    class Conv(nn.Conv2d):
        def __init__(self, channels_in, channels_out, kernel_size=3, padding="same", bias=False):
            super().__init__(channels_in, channels_out, kernel_size=kernel_size, padding=padding, bias=bias)

        def reset_parameters(self):
            super().reset_parameters()
            if self.bias is not None:
                self.bias.data.zero_()
            torch.nn.init.dirac_(self.weight.data[: self.weight.size(1)])

    class ConvGroup(nn.Module):
        def __init__(self, channels_in, channels_out):
            super().__init__()
            self.conv1, self.pool = Conv(channels_in, channels_out), nn.MaxPool2d(2)
            self.norm1, self.conv2 = BatchNorm(channels_out), Conv(channels_out, channels_out)
            self.norm2, self.activ = BatchNorm(channels_out), nn.GELU()

        def forward(self, x):
            x = self.activ(self.norm1(self.pool(self.conv1(x))))
            return self.activ(self.norm2(self.conv2(x)))

    class Mul(nn.Module):
        def forward(self, x):
            return x * scaling_factor

    whiten_width = 2 * 3 * 2**2
    net = nn.Sequential(
        Conv(3, whiten_width, 2, padding=0, bias=True), nn.GELU(),
        ConvGroup(whiten_width, widths[0]), ConvGroup(widths[0], widths[1]), ConvGroup(widths[1], widths[2]),
        nn.MaxPool2d(3), nn.Flatten(), nn.Linear(widths[2], 10, bias=False), Mul(),
    )
    net[0].weight.requires_grad = False
    return net


def torch_airbench94_whitening(images, eps: float = 5e-4):
    """The script's `init_whitening_conv` filters from normalized images float32 [N, 3, H, W]: [24, 3, 2, 2].

    Eigenvectors of the 2x2-patch covariance scaled by 1 / sqrt(eigenvalue + eps),
    largest eigenvalue first, followed by their negatives.
    """
    import torch

    c = images.shape[1]
    patches = images.unfold(2, 2, 1).unfold(3, 2, 1).transpose(1, 3).reshape(-1, c, 2, 2).float()
    flat = patches.view(len(patches), -1)
    eigenvalues, eigenvectors = torch.linalg.eigh(flat.T @ flat / len(flat), UPLO="U")
    eigenvalues, eigenvectors = eigenvalues.flip(0).view(-1, 1, 1, 1), eigenvectors.T.reshape(c * 4, c, 2, 2).flip(0)
    scaled = eigenvectors / torch.sqrt(eigenvalues + eps)
    return torch.cat((scaled, -scaled))


def torch_airbench94_optimizer(net, *, batch_size: int, total_steps: int, lr: float = 11.5, momentum: float = 0.85,
                               weight_decay: float = 0.0153, bias_scaler: float = 64.0):
    """The script's Nesterov SGD parameter groups and triangular LambdaLR: (optimizer, scheduler).

    `lr` and `weight_decay` are per 1024 examples, decoupled as the script
    writes them; BN biases (parameters named "norm") get `bias_scaler` times the
    learning rate and the same weight decay. The rate rises 0.2 -> 1 over
    int(0.23 total_steps) steps, then falls linearly to 0.07.
    """
    import torch

    kilostep_scale = 1024 * (1 + 1 / (1 - momentum))
    lr = lr / kilostep_scale
    wd = weight_decay * batch_size / kilostep_scale
    lr_biases = lr * bias_scaler
    norm_biases = [p for k, p in net.named_parameters() if "norm" in k and p.requires_grad]
    other_params = [p for k, p in net.named_parameters() if "norm" not in k and p.requires_grad]
    optimizer = torch.optim.SGD(
        [dict(params=norm_biases, lr=lr_biases, weight_decay=wd / lr_biases),
         dict(params=other_params, lr=lr, weight_decay=wd / lr)],
        momentum=momentum, nesterov=True,
    )
    warmup_steps = int(total_steps * 0.23)

    def get_lr(step):
        if step < warmup_steps:
            frac = step / warmup_steps
            return 0.2 * (1 - frac) + 1.0 * frac
        frac = (step - warmup_steps) / (total_steps - warmup_steps)
        return 1.0 * (1 - frac) + 0.07 * frac

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, get_lr)


def _torch_lstm(s, batch):
    import torch
    from torch import nn

    m = s["model"]

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(m["vocab_size"], m["embed_dim"])
            self.rnn = nn.LSTM(m["embed_dim"], m["hidden_dim"], num_layers=m["num_layers"], batch_first=True)
            self.logits = nn.Linear(m["hidden_dim"], m["vocab_size"])

        def forward(self, tokens):
            return self.logits(self.rnn(self.embed(tokens))[0])

    tokens = torch.from_numpy(np.asarray(batch["tokens"]).astype(np.int64))
    targets = torch.from_numpy(np.asarray(batch["targets"]).astype(np.int64))
    weights = torch.from_numpy(np.asarray(batch["token_mask"]).astype(np.float32))

    def loss(net):
        nll = nn.functional.cross_entropy(net(tokens).flatten(0, 1), targets.flatten(), reduction="none")
        return (nll * weights.flatten()).sum() / weights.sum().clamp(min=1)

    return LM(), loss


def torch_gpt(*, vocab_size: int, max_len: int, num_layers: int, num_heads: int, embed_dim: int,
              use_bias: bool = False, mlp_ratio: int = 4):
    """nanoGPT's GPT (karpathy/nanoGPT `model.py`, dropout 0) as a torch module: `model(idx)` -> logits.

    idx int64 [B, T] -> float32 [B, T, V]. Pre-LayerNorm blocks (`h[i]`: `ln_1`,
    `c_attn`, `attn_proj`, `ln_2`, `c_fc`, `mlp_proj`), learned positions, the
    output layer tied to `wte`; weights initialised as nanoGPT does (N(0, 0.02),
    residual projections N(0, 0.02 / sqrt(2 num_layers)), LayerNorm scale 1).
    The one torch Transformer of the project: benchmark peer, the reference run
    in benchmarks/reference and the step-for-step test all build it.
    """
    import math

    import torch
    from torch import nn
    from torch.nn import functional as F

    d = embed_dim

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.ln_2 = nn.LayerNorm(d, bias=use_bias), nn.LayerNorm(d, bias=use_bias)
            self.c_attn, self.attn_proj = nn.Linear(d, 3 * d, bias=use_bias), nn.Linear(d, d, bias=use_bias)
            self.c_fc, self.mlp_proj = nn.Linear(d, mlp_ratio * d, bias=use_bias), nn.Linear(mlp_ratio * d, d, bias=use_bias)

        def forward(self, x):
            b, t, _ = x.shape
            q, k, v = (z.view(b, t, num_heads, d // num_heads).transpose(1, 2) for z in self.c_attn(self.ln_1(x)).split(d, dim=2))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, d)
            x = x + self.attn_proj(y)
            return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(vocab_size, d), nn.Embedding(max_len, d)
            self.h = nn.ModuleList(Block() for _ in range(num_layers))
            self.ln_f = nn.LayerNorm(d, bias=use_bias)
            for name, p in self.named_parameters():
                if p.dim() >= 2:  # Linear and Embedding weights; the residual projections scaled as in GPT-2
                    std = 0.02 / math.sqrt(2 * num_layers) if name.endswith("proj.weight") else 0.02
                    torch.nn.init.normal_(p, 0.0, std)
                elif name.endswith("bias"):
                    torch.nn.init.zeros_(p)

        def forward(self, idx):
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
            for block in self.h:
                x = block(x)
            return self.ln_f(x) @ self.wte.weight.T  # lm_head tied to wte

    return GPT()


def _torch_transformer(s, batch):
    """nanoGPT's GPT (pre-LayerNorm, no biases, tied embeddings), as jaxdl's Transformer."""
    import torch
    from torch import nn

    m = s["model"]
    net = torch_gpt(vocab_size=m["vocab_size"], max_len=m["max_len"], num_layers=m["num_layers"],
                    num_heads=m["num_heads"], embed_dim=m["embed_dim"], use_bias=m["use_bias"],
                    mlp_ratio=m["mlp_ratio"])
    tokens = torch.from_numpy(np.asarray(batch["tokens"]).astype(np.int64))
    targets = torch.from_numpy(np.asarray(batch["targets"]).astype(np.int64))
    return net, lambda net: nn.functional.cross_entropy(net(tokens).flatten(0, 1), targets.flatten())


def _torch_vae(s, batch):
    """Burda et al.'s MLP VAE: dynamic binarisation, Bernoulli decoder, analytic KL; mean negative ELBO."""
    import torch
    from torch import nn

    m = s["model"]
    if m.get("architecture", "mlp") != "mlp":
        raise NotAvailable("only the MLP VAE has a PyTorch peer")
    x = torch.from_numpy(_images(batch)).flatten(1)
    dims = list(m["hidden_dims"])

    def mlp(widths):
        layers = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), nn.Tanh()]
        return nn.Sequential(*layers)

    class VAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = mlp([x.shape[1], *dims])
            self.mu, self.logvar = nn.Linear(dims[-1], m["latent_dim"]), nn.Linear(dims[-1], m["latent_dim"])
            self.dec = mlp([m["latent_dim"], *reversed(dims)])
            self.out = nn.Linear(dims[0], x.shape[1])

        def forward(self, x):
            target = torch.bernoulli(x)
            h = self.enc(target)
            mu, logvar = self.mu(h), self.logvar(h)
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
            logits = self.out(self.dec(z))
            recon = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(1)
            kl = 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(1)
            return (recon + kl).mean()

    return VAE(), lambda net: net(x)


def _torch_gan_runner(s, batch, *, compiled: bool) -> Callable[[int], None]:
    """jaxdl's DCGAN (two stages, 4x4 kernels, batch norm, LeakyReLU 0.2) and one step of the non-saturating
    GAN: a discriminator update on real and generated images, then a generator update; Adam for each."""
    import torch
    from torch import nn

    m = s["model"]
    if s["task"].get("loss", "non_saturating") != "non_saturating" or s["task"].get("n_critic", 1) != 1:
        raise NotAvailable("only the non-saturating loss with n_critic=1 has a PyTorch peer")
    if m.get("discriminator_norm", "batch") != "batch":
        raise NotAvailable("only discriminator_norm=batch has a PyTorch peer")
    height, width, channels = m["image_shape"]
    c0, c1 = m["channels"]
    slope = m.get("leaky_slope", 0.2)
    g = nn.Sequential(
        nn.Linear(m["latent_dim"], height // 4 * width // 4 * c0, bias=False), nn.Unflatten(1, (c0, height // 4, width // 4)),
        nn.BatchNorm2d(c0), nn.ReLU(),
        nn.ConvTranspose2d(c0, c1, 4, 2, 1, bias=False), nn.BatchNorm2d(c1), nn.ReLU(),
        nn.ConvTranspose2d(c1, channels, 4, 2, 1), nn.Tanh(),
    )
    d = nn.Sequential(
        nn.Conv2d(channels, c1, 4, 2, 1), nn.LeakyReLU(slope),
        nn.Conv2d(c1, c0, 4, 2, 1, bias=False), nn.BatchNorm2d(c0), nn.LeakyReLU(slope),
        nn.Flatten(), nn.Linear(height // 4 * width // 4 * c0, 1),
    )
    opt = s["optimizer"]
    betas = (opt.get("b1", 0.5), opt.get("b2", 0.999))
    g_opt = torch.optim.Adam(g.parameters(), lr=opt["learning_rate"], betas=betas)
    d_opt = torch.optim.Adam(d.parameters(), lr=opt["learning_rate"] * s["task"].get("d_learning_rate_multiplier", 1.0),
                             betas=betas)
    real = torch.from_numpy(np.asarray(batch["image"], np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2).contiguous()
    bce = nn.functional.binary_cross_entropy_with_logits
    ones, zeros = torch.ones(len(real), 1), torch.zeros(len(real), 1)

    def d_loss_fn(z):
        fake = g(z).detach()
        return bce(d(real), ones) + bce(d(fake), zeros)

    def g_loss_fn(z):
        return bce(d(g(z)), ones)

    if compiled:
        d_loss_fn, g_loss_fn = torch.compile(d_loss_fn), torch.compile(g_loss_fn)

    def run(k: int) -> None:
        for _ in range(k):
            d_opt.zero_grad(set_to_none=True)
            d_loss_fn(torch.randn(len(real), m["latent_dim"])).backward()
            d_opt.step()
            g_opt.zero_grad(set_to_none=True)
            g_loss_fn(torch.randn(len(real), m["latent_dim"])).backward()
            g_opt.step()

    return run


TORCH = {"mlp": _torch_mlp, "cnn": _torch_cnn, "airbench94": _torch_airbench94, "lstm": _torch_lstm,
         "transformer": _torch_transformer, "vae": _torch_vae, "gan": None}


def _torch_runner(arch, settings, batch, *, compiled: bool) -> Callable[[int], None]:
    import torch

    torch.manual_seed(0)
    if arch == "gan":
        return _torch_gan_runner(settings, batch, compiled=compiled)
    net, loss_fn = TORCH[arch](settings, batch)
    net.train()
    opt = _torch_optimizer(net.parameters(), settings["optimizer"])
    clip = settings["optimizer"].get("grad_clip_norm")
    forward = torch.compile(loss_fn) if compiled else loss_fn

    def run(k: int) -> None:
        for _ in range(k):
            opt.zero_grad(set_to_none=True)
            loss = forward(net)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
            opt.step()

    return run


# ---------------------------------------------------------------------------------------------- Keras 3 (JAX)


def _keras_optimizer(optimizer):
    import keras

    name, lr, clip = optimizer["name"], optimizer["learning_rate"], optimizer.get("grad_clip_norm")
    kw = {"global_clipnorm": clip} if clip else {}
    if name == "adam":
        return keras.optimizers.Adam(lr, beta_1=optimizer.get("b1", 0.9), beta_2=optimizer.get("b2", 0.999), **kw)
    if name == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=optimizer.get("weight_decay", 0.0),
                                      beta_1=optimizer.get("b1", 0.9), beta_2=optimizer.get("b2", 0.999), **kw)
    if name == "sgd":
        return keras.optimizers.SGD(lr, momentum=optimizer.get("momentum") or 0.0, nesterov=bool(optimizer.get("nesterov")), **kw)
    raise NotAvailable(f"no Keras optimizer for {name}")


def _keras_fit(model, settings, x, y, loss) -> Callable[[int], None]:
    import jax.numpy as jnp

    model.compile(optimizer=_keras_optimizer(settings["optimizer"]), loss=loss, jit_compile=True)
    x, y = jnp.asarray(x), jnp.asarray(y)

    def run(k: int) -> None:
        for _ in range(k):
            model.train_on_batch(x, y)

    return run


def _keras_mlp(s, batch):
    import keras

    m = s["model"]
    layers = [keras.Input(batch["image"].shape[1:]), keras.layers.Flatten()]
    for h in m["hidden_dims"]:
        layers += [keras.layers.Dense(h, activation="relu"), keras.layers.Dropout(m["dropout_rate"])]
    model = keras.Sequential([*layers, keras.layers.Dense(m["num_outputs"])])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return _keras_fit(model, s, _images(batch), np.asarray(batch["label"]).astype(np.int32), loss)


def _keras_cnn(s, batch):
    import keras

    m = s["model"]
    layers = [keras.Input(batch["image"].shape[1:])]
    for width in m["channels"]:
        for _ in range(m["convs_per_block"]):
            layers.append(keras.layers.Conv2D(width, m["kernel_size"], padding=m["padding"].lower(), use_bias=not m["batch_norm"]))
            if m["batch_norm"]:
                layers.append(keras.layers.BatchNormalization())
            layers.append(keras.layers.ReLU())
        layers.append(keras.layers.MaxPooling2D(m["pool_size"]))
        if m.get("conv_dropout_rate"):
            layers.append(keras.layers.Dropout(m["conv_dropout_rate"]))
    layers.append(keras.layers.Flatten())
    for width in m["dense_dims"]:
        layers += [keras.layers.Dense(width, activation="relu"), keras.layers.Dropout(m.get("dropout_rate") or 0.0)]
    model = keras.Sequential([*layers, keras.layers.Dense(m["num_outputs"])])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return _keras_fit(model, s, _images(batch), np.asarray(batch["label"]).astype(np.int32), loss)


def _keras_lstm(s, batch):
    import keras

    m = s["model"]
    layers = [keras.Input(batch["tokens"].shape[1:], dtype="int32"), keras.layers.Embedding(m["vocab_size"], m["embed_dim"])]
    layers += [keras.layers.LSTM(m["hidden_dim"], return_sequences=True) for _ in range(m["num_layers"])]
    model = keras.Sequential([*layers, keras.layers.Dense(m["vocab_size"])])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return _keras_fit(model, s, np.asarray(batch["tokens"]).astype(np.int32), np.asarray(batch["targets"]).astype(np.int32), loss)


def _keras_vae(s, batch):
    """The MLP VAE as a functional model whose output is each example's negative ELBO (the loss is its mean)."""
    import keras
    from keras import ops

    m = s["model"]
    if m.get("architecture", "mlp") != "mlp":
        raise NotAvailable("only the MLP VAE has a Keras peer")
    x = _images(batch).reshape(len(batch["image"]), -1)

    class NegativeELBO(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.seed = keras.random.SeedGenerator(0)
            self.enc = [keras.layers.Dense(h, activation="tanh") for h in m["hidden_dims"]]
            self.mu, self.logvar = keras.layers.Dense(m["latent_dim"]), keras.layers.Dense(m["latent_dim"])
            self.dec = [keras.layers.Dense(h, activation="tanh") for h in reversed(m["hidden_dims"])]
            self.out = keras.layers.Dense(x.shape[1])

        def call(self, pixels):
            target = ops.cast(keras.random.uniform(ops.shape(pixels), seed=self.seed) < pixels, "float32")
            h = target
            for layer in self.enc:
                h = layer(h)
            mu, logvar = self.mu(h), self.logvar(h)
            z = mu + ops.exp(0.5 * logvar) * keras.random.normal(ops.shape(mu), seed=self.seed)
            for layer in self.dec:
                z = layer(z)
            logits = self.out(z)
            recon = ops.sum(ops.softplus(logits) - target * logits, axis=1)
            kl = 0.5 * ops.sum(ops.square(mu) + ops.exp(logvar) - 1.0 - logvar, axis=1)
            return recon + kl

    inputs = keras.Input((x.shape[1],))
    model = keras.Model(inputs, NegativeELBO()(inputs))
    return _keras_fit(model, s, x, np.zeros(len(x), np.float32), lambda y_true, y_pred: ops.mean(y_pred))


def _keras_transformer(s, batch):
    """nanoGPT's GPT in Keras layers (pre-LayerNorm, no biases, tied embeddings, `ops.dot_product_attention`)."""
    import keras
    from keras import ops

    m = s["model"]
    d, heads, bias = m["embed_dim"], m["num_heads"], m["use_bias"]
    tokens = np.asarray(batch["tokens"]).astype(np.int32)

    class Block(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.ln_1 = keras.layers.LayerNormalization(epsilon=1e-5, center=bias)
            self.ln_2 = keras.layers.LayerNormalization(epsilon=1e-5, center=bias)
            self.qkv, self.out = keras.layers.Dense(3 * d, use_bias=bias), keras.layers.Dense(d, use_bias=bias)
            self.fc = keras.layers.Dense(m["mlp_ratio"] * d, use_bias=bias)
            self.proj = keras.layers.Dense(d, use_bias=bias)

        def call(self, x):
            b, t = ops.shape(x)[0], ops.shape(x)[1]
            q, k, v = ops.split(self.qkv(self.ln_1(x)), 3, axis=-1)
            q, k, v = (ops.reshape(z, (b, t, heads, d // heads)) for z in (q, k, v))
            y = ops.reshape(ops.dot_product_attention(q, k, v, is_causal=True), (b, t, d))
            x = x + self.out(y)
            return x + self.proj(ops.gelu(self.fc(self.ln_2(x)), approximate=False))

    class GPT(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.wte = keras.layers.Embedding(m["vocab_size"], d)
            self.wpe = keras.layers.Embedding(m["max_len"], d)
            self.blocks = [Block() for _ in range(m["num_layers"])]
            self.ln_f = keras.layers.LayerNormalization(epsilon=1e-5, center=bias)

        def call(self, ids):
            x = self.wte(ids) + self.wpe(ops.arange(ops.shape(ids)[1]))
            for block in self.blocks:
                x = block(x)
            return ops.matmul(self.ln_f(x), ops.transpose(self.wte.embeddings))

    inputs = keras.Input(tokens.shape[1:], dtype="int32")
    model = keras.Model(inputs, GPT()(inputs))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return _keras_fit(model, s, tokens, np.asarray(batch["targets"]).astype(np.int32), loss)


def _keras_gan(s, batch):
    """jaxdl's DCGAN in Keras layers (Conv2DTranspose generator, batch norm, LeakyReLU 0.2) and one
    non-saturating step, D then G, each with its own Adam, written as Keras documents a custom JAX step:
    `stateless_call` inside `jax.value_and_grad`, `optimizer.stateless_apply`, one `jax.jit` program."""
    import jax
    import keras
    from keras import layers

    m, t = s["model"], s["task"]
    if t.get("loss", "non_saturating") != "non_saturating" or t.get("n_critic", 1) != 1:
        raise NotAvailable("only the non-saturating loss with n_critic=1 has a Keras peer")
    if m.get("discriminator_norm", "batch") != "batch":
        raise NotAvailable("only discriminator_norm=batch has a Keras peer")
    height, width, channels = m["image_shape"]
    c0, c1 = m["channels"]
    slope, momentum = m.get("leaky_slope", 0.2), m.get("batch_norm_momentum", 0.9)
    g = keras.Sequential([
        keras.Input((m["latent_dim"],)),
        layers.Dense(height // 4 * width // 4 * c0, use_bias=False), layers.Reshape((height // 4, width // 4, c0)),
        layers.BatchNormalization(momentum=momentum), layers.ReLU(),
        layers.Conv2DTranspose(c1, 4, 2, padding="same", use_bias=False), layers.BatchNormalization(momentum=momentum),
        layers.ReLU(),
        layers.Conv2DTranspose(channels, 4, 2, padding="same", activation="tanh"),
    ])
    d = keras.Sequential([
        keras.Input((height, width, channels)),
        layers.Conv2D(c1, 4, 2, padding="same"), layers.LeakyReLU(slope),
        layers.Conv2D(c0, 4, 2, padding="same", use_bias=False), layers.BatchNormalization(momentum=momentum),
        layers.LeakyReLU(slope), layers.Flatten(), layers.Dense(1),
    ])
    opt = s["optimizer"]
    g_opt = keras.optimizers.Adam(opt["learning_rate"], beta_1=opt.get("b1", 0.5), beta_2=opt.get("b2", 0.999))
    d_opt = keras.optimizers.Adam(opt["learning_rate"] * t.get("d_learning_rate_multiplier", 1.0),
                                  beta_1=opt.get("b1", 0.5), beta_2=opt.get("b2", 0.999))
    g_opt.build(g.trainable_variables)
    d_opt.build(d.trainable_variables)
    real = jax.numpy.asarray(np.asarray(batch["image"], np.float32) / 127.5 - 1.0)
    latent = m["latent_dim"]

    def d_loss(d_tv, d_ntv, fake):
        real_logits, d_ntv = d.stateless_call(d_tv, d_ntv, real, training=True)
        fake_logits, d_ntv = d.stateless_call(d_tv, d_ntv, fake, training=True)
        return jax.numpy.mean(jax.nn.softplus(-real_logits) + jax.nn.softplus(fake_logits)), d_ntv

    def g_loss(g_tv, g_ntv, d_tv, d_ntv, z):
        fake, g_ntv = g.stateless_call(g_tv, g_ntv, z, training=True)
        logits, _ = d.stateless_call(d_tv, d_ntv, fake, training=True)
        return jax.numpy.mean(jax.nn.softplus(-logits)), g_ntv

    @functools.partial(jax.jit, donate_argnums=0)
    def step(state, key):
        g_tv, g_ntv, g_ov, d_tv, d_ntv, d_ov = state
        k_d, k_g = jax.random.split(key)
        fake, _ = g.stateless_call(g_tv, g_ntv, jax.random.normal(k_d, (len(real), latent)), training=True)
        (_, d_ntv), grads = jax.value_and_grad(d_loss, has_aux=True)(d_tv, d_ntv, jax.lax.stop_gradient(fake))
        d_tv, d_ov = d_opt.stateless_apply(d_ov, grads, d_tv)
        z = jax.random.normal(k_g, (len(real), latent))
        (_, g_ntv), grads = jax.value_and_grad(g_loss, has_aux=True)(g_tv, g_ntv, d_tv, d_ntv, z)
        g_tv, g_ov = g_opt.stateless_apply(g_ov, grads, g_tv)
        return g_tv, g_ntv, g_ov, d_tv, d_ntv, d_ov

    values = lambda variables: [v.value for v in variables]
    state = [(values(g.trainable_variables), values(g.non_trainable_variables), values(g_opt.variables),
              values(d.trainable_variables), values(d.non_trainable_variables), values(d_opt.variables))]
    keys = iter(jax.random.split(jax.random.key(0), 1_000_000))

    def run(k: int) -> None:
        for _ in range(k):
            state[0] = step(state[0], next(keys))
        jax.block_until_ready(state[0])

    return run


KERAS = {"mlp": _keras_mlp, "cnn": _keras_cnn, "lstm": _keras_lstm, "vae": _keras_vae,
         "transformer": _keras_transformer, "gan": _keras_gan}


# ---------------------------------------------------------------------------------------------- worker process


def serve(conn, peers, arch, settings, batch) -> None:
    """Runs PyTorch peers in their own process (see `RemotePeers`); answers ("run", column, k) with seconds."""
    import time

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads libgomp; see RemotePeers
    try:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
    except ImportError:
        pass
    runners, skipped = {}, {}
    for peer in peers:
        try:
            runners[peer] = make(peer, arch, settings, batch)
        except NotAvailable as why:
            skipped[peer] = str(why)
    conn.send({"ready": list(runners), "skipped": skipped})
    while True:
        message = conn.recv()
        if message[0] == "stop":
            return
        _, peer, k = message
        t0 = time.perf_counter()
        try:
            runners[peer](k)
        except Exception as error:  # reported to the parent, which drops this column; the others go on
            conn.send(("error", f"{type(error).__name__}: {error}"))
            continue
        conn.send(time.perf_counter() - t0)


class RemotePeers:
    """PyTorch peers in a child process, so that PyTorch's OpenMP threads and XLA's threads never share a process.

    The child blocks on its pipe between windows, so only one framework runs
    at a time, and it sets OMP_WAIT_POLICY=PASSIVE: with OpenMP's default
    spin-waiting, on a 2-core machine that other processes also use, a
    PyTorch eager LSTM step (batch 64 x 100) took 3.3 to 4.5 s instead of
    0.18 s, because a spinning thread waits at every barrier for a thread
    that the OS has preempted.
    """

    def __init__(self, peers, arch, settings, batch):
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=serve, args=(child, list(peers), arch, dict(settings), dict(batch)), daemon=True)
        self.process.start()
        hello = self.conn.recv()
        self.ready, self.skipped = hello["ready"], hello["skipped"]

    def runner(self, peer) -> Callable[[int], None]:
        def run(k: int) -> None:
            self.conn.send(("run", peer, k))
            reply = self.conn.recv()
            if isinstance(reply, tuple):
                raise RuntimeError(f"{peer} failed in the child process: {reply[1]}")

        return run

    def close(self) -> None:
        self.conn.send(("stop",))
        self.process.join(timeout=30)
