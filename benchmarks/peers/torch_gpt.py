"""nanoGPT's GPT (karpathy/nanoGPT `model.py`) as a torch module.

The one torch Transformer of the project: the benchmark peer
(`benchmarks.peers.torch_models`), the reference run
(benchmarks/reference/nanogpt_shakespeare_char.py) and the step-for-step test
(tests/models/test_transformer_nanogpt.py) all build it.
"""

from __future__ import annotations


def torch_gpt(*, vocab_size: int, max_len: int, num_layers: int, num_heads: int, embed_dim: int,
              use_bias: bool = False, mlp_ratio: int = 4):
    """nanoGPT's GPT (karpathy/nanoGPT `model.py`, dropout 0) as a torch module: `model(idx)` -> logits.

    idx int64 [B, T] -> float32 [B, T, V]. Pre-LayerNorm blocks (`h[i]`: `ln_1`,
    `c_attn`, `attn_proj`, `ln_2`, `c_fc`, `mlp_proj`), learned positions, the
    output layer tied to `wte`; weights initialised as nanoGPT does (N(0, 0.02),
    residual projections N(0, 0.02 / sqrt(2 num_layers)), LayerNorm scale 1).
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

