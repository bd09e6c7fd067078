"""Building blocks of the decoder-side enhancer: conv stages and attention layers.

Everything here is plain PyTorch, sized for CPU inference: GroupNorm + SiLU residual
convolutions, a global self-attention layer whose position information comes from a
depthwise convolution (so it works on any window size), and windowed self- and
cross-attention for the high-resolution fusion scales.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, ch), ch, eps=1e-6)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int | None = None):
        super().__init__()
        cout = cout or cin
        self.body = nn.Sequential(norm(cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1),
                                  norm(cout), nn.SiLU(), nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        return self.skip(x) + self.body(x)


class Down(nn.Module):
    """Halve the resolution (strided 3x3 convolution)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class Up(nn.Module):
    """Double the resolution (nearest neighbour + 3x3 convolution)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class MultiHeadAttention(nn.Module):
    """Multi-head attention on token sequences (B, L, C); queries and keys/values may differ."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, context=None):
        context = x if context is None else context
        b, lq, c = x.shape
        lk = context.shape[1]
        h = self.heads
        q = self.q(x).view(b, lq, h, c // h).transpose(1, 2)
        k, v = self.kv(context).view(b, lk, 2, h, c // h).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, lq, c))


class TransformerLayer(nn.Module):
    """Pre-norm self-attention + MLP on tokens (B, L, C)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0):
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, heads)
        self.mlp = MLP(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.n1(x))
        return x + self.mlp(self.n2(x))


class ConvPosition(nn.Module):
    """Conditional position encoding: a depthwise 3x3 convolution added to the map."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x):
        return x + self.conv(x)


def to_windows(x: torch.Tensor, win: int) -> torch.Tensor:
    """(B, C, H, W) -> (B * nWin, win*win, C); H and W must be multiples of ``win``."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // win, win, w // win, win).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(-1, win * win, c)


def from_windows(t: torch.Tensor, b: int, h: int, w: int, win: int) -> torch.Tensor:
    c = t.shape[-1]
    x = t.view(b, h // win, w // win, win, win, c).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, c, h, w)


class WindowBlock(nn.Module):
    """Transformer layer applied inside non-overlapping ``win`` x ``win`` windows of a map."""

    def __init__(self, dim: int, heads: int, win: int):
        super().__init__()
        self.win = win
        self.pos = ConvPosition(dim)
        self.layer = TransformerLayer(dim, heads)

    def forward(self, x):
        b, _, h, w = x.shape
        x = self.pos(x)
        return from_windows(self.layer(to_windows(x, self.win)), b, h, w, self.win)


class CrossAttentionModule(nn.Module):
    """MCM: multi-head cross-attention from decoder features (queries) to encoder features.

    Windowed (``win`` x ``win``) so its cost is linear in the pixel count. Returns a
    residual for the decoder features; the output projection starts at zero, so an
    untrained MCM leaves the frozen decoder unchanged.
    """

    def __init__(self, dec_ch: int, enc_ch: int, dim: int, heads: int, win: int):
        super().__init__()
        self.win = win
        self.q_in = nn.Sequential(norm(dec_ch), nn.Conv2d(dec_ch, dim, 1))
        self.kv_in = nn.Sequential(norm(enc_ch), nn.Conv2d(enc_ch, dim, 1))
        self.nq, self.nkv = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, heads)
        self.mlp_norm = nn.LayerNorm(dim)
        self.mlp = MLP(dim, dim * 2)
        self.out = nn.Conv2d(dim, dec_ch, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, dec, enc):
        b, _, h, w = dec.shape
        q = to_windows(self.q_in(dec), self.win)
        kv = to_windows(self.kv_in(enc), self.win)
        t = q + self.attn(self.nq(q), self.nkv(kv))
        t = t + self.mlp(self.mlp_norm(t))
        return self.out(from_windows(t, b, h, w, self.win))
