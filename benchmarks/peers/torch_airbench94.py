"""airbench94's network, whitening initialisation and optimizer in PyTorch, as legacy/airbench94.py builds them.

github.com/KellerJordan/cifar10-airbench (K. Jordan 2024, arXiv:2404.00498).
The one torch airbench94 of the project: the benchmark peer
(`benchmarks.peers.torch_models`), the full reference run
(benchmarks/reference/airbench94_cifar10.py) and the step-for-step test
(tests/test_airbench_torch.py) all build it. float32 on the CPU where the
script runs float16 on CUDA.
"""

from __future__ import annotations


def torch_airbench94(*, widths=(64, 256, 256), batchnorm_momentum: float = 0.6, scaling_factor: float = 1 / 9):
    """airbench94's network: `make_net` of legacy/airbench94.py (KellerJordan/cifar10-airbench, K. Jordan 2024).

    float32 images NCHW [B, 3, 32, 32] -> logits [B, 10]. A frozen 2x2 whitening
    convolution (24 filters, bias trained) and GELU, three conv groups (conv,
    max-pool, BN, GELU, conv, BN, GELU; BN scale frozen at 1, eps 1e-12,
    running-statistics momentum 1 - `batchnorm_momentum`, convolutions
    identity-initialised on their first `in` filters), a 3x3 max-pool, a linear
    head without bias, scaled by `scaling_factor`. Modules keep the script's
    names (`net[2 + i].conv1`, `.norm1`, ...), which its optimizer groups use.
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

