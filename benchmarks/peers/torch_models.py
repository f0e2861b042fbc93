"""The reference models in PyTorch, eager and `torch.compile`: one training step each, as `scripts.benchmark` times it.

Each builder mirrors one jaxdl model from the same composed settings (widths,
kernel sizes, dropout, batch norm) and the same training step: forward, the
task's loss, backward, the optimizer's update (Adam/AdamW/SGD with the run's
learning rate and gradient clipping). Learning-rate schedules are left out (a
scalar per step). Inputs are the first training batch of the jaxdl run (uint8
images scaled to [0, 1], as jaxdl scales them inside its step).

PyTorch runs as its users run it: its own thread counts and OpenMP wait
policy (nothing here sets them), and the convolutional networks (the Keras
CNN, the VGG-style CNN, airbench94) in channels-last memory format, model and
input batch, as PyTorch's performance tuning guide advises for CPU
convolutions. The DCGAN stays NCHW (transposed convolutions; not among the
networks the guide's advice was checked on here).

Shapes: B batch, H W C image, T time, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from benchmarks.peers.common import NotAvailable, images
from benchmarks.peers.torch_airbench94 import torch_airbench94
from benchmarks.peers.torch_gpt import torch_gpt


def optimizer_for(params, optimizer: Mapping[str, Any]):
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


def channels_last(nhwc):
    """A torch tensor [B, H, W, C] as PyTorch's [B, C, H, W] in channels-last memory format (no copy: NHWC is that layout)."""
    import torch

    return nhwc.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


def mlp(s, batch):
    """jaxdl's MLP classifier: dense, ReLU, dropout per hidden layer; cross-entropy."""
    import torch
    from torch import nn

    m = s["model"]
    layers, width = [], int(np.prod(batch["image"].shape[1:]))
    for h in m["hidden_dims"]:
        layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(m["dropout_rate"])]
        width = h
    net = nn.Sequential(nn.Flatten(), *layers, nn.Linear(width, m["num_outputs"]))
    x, y = torch.from_numpy(images(batch)), torch.from_numpy(np.asarray(batch["label"]).astype(np.int64))
    return net, lambda net: nn.functional.cross_entropy(net(x), y)


def cnn(s, batch):
    """jaxdl's CNN (the Keras example's and the VGG-style one): conv [BN] ReLU blocks, max-pooling, dense head."""
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
    x = channels_last(torch.from_numpy(images(batch)))  # [B, C, H, W], stored NHWC
    flat = head(x[:1]).shape[1]
    dense = []
    for width in m["dense_dims"]:
        dense += [nn.Linear(flat, width), nn.ReLU(), nn.Dropout(m.get("dropout_rate") or 0.0)]
        flat = width
    net = nn.Sequential(head, *dense, nn.Linear(flat, m["num_outputs"])).to(memory_format=torch.channels_last)
    y = torch.from_numpy(np.asarray(batch["label"]).astype(np.int64))
    return net, lambda net: nn.functional.cross_entropy(net(x), y)


def airbench94(s, batch):
    """airbench94's network as the script builds it (`torch_airbench94`), label smoothing 0.2, summed loss."""
    import torch
    from torch import nn

    m = s["model"]
    if m["whiten_kernel_size"] != 2 or m["num_outputs"] != 10:
        raise NotAvailable("the PyTorch airbench94 is the script's: 2x2 whitening, 10 classes")
    net = torch_airbench94(widths=tuple(m["widths"]), scaling_factor=m["scaling_factor"])
    net = net.to(memory_format=torch.channels_last)
    x = channels_last(torch.from_numpy(images(batch)))
    y = torch.from_numpy(np.asarray(batch["label"]).astype(np.int64))
    return net, lambda net: nn.functional.cross_entropy(net(x), y, label_smoothing=0.2, reduction="sum")


def lstm(s, batch):
    """jaxdl's LSTM language model: embedding, stacked LSTM, per-position logits; masked mean cross-entropy."""
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


def transformer(s, batch):
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


def vae(s, batch):
    """Burda et al.'s MLP VAE: dynamic binarisation, Bernoulli decoder, analytic KL; mean negative ELBO."""
    import torch
    from torch import nn

    m = s["model"]
    if m.get("architecture", "mlp") != "mlp":
        raise NotAvailable("only the MLP VAE has a PyTorch peer")
    x = torch.from_numpy(images(batch)).flatten(1)
    dims = list(m["hidden_dims"])

    def tanh_mlp(widths):
        layers = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), nn.Tanh()]
        return nn.Sequential(*layers)

    class VAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = tanh_mlp([x.shape[1], *dims])
            self.mu, self.logvar = nn.Linear(dims[-1], m["latent_dim"]), nn.Linear(dims[-1], m["latent_dim"])
            self.dec = tanh_mlp([m["latent_dim"], *reversed(dims)])
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


def gan_runner(s, batch, *, compiled: bool) -> Callable[[int], None]:
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


#: arch -> builder(settings, batch) -> (net, loss_fn(net)); the DCGAN has its own two-player runner.
BUILDERS = {"mlp": mlp, "cnn": cnn, "airbench94": airbench94, "lstm": lstm, "transformer": transformer, "vae": vae,
            "gan": None}


def runner(arch, settings, batch, *, compiled: bool) -> Callable[[int], None]:
    """`run(k)`: k training steps of `arch` (eager, or its loss under `torch.compile`)."""
    import torch

    torch.manual_seed(0)
    if arch == "gan":
        return gan_runner(settings, batch, compiled=compiled)
    net, loss_fn = BUILDERS[arch](settings, batch)
    net.train()
    opt = optimizer_for(net.parameters(), settings["optimizer"])
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

