"""Stage 2 of the enhancer: the code lookup (CodeFormer-style).

A low-quality encoder E_L (same shape as E_H, initialised from it) reads an
ELIC-decoded (degraded) image; a Transformer over its 8x-downsampled feature map
predicts, for every position, which entry of the frozen codebook the high-quality
image would use. Position information comes from a depthwise convolution, so the
same network runs on any window size.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .enhance_blocks import ConvPosition, TransformerLayer
from .vqgan import Encoder, EnhancerConfig


class CodeLookup(nn.Module):
    def __init__(self, cfg: EnhancerConfig):
        super().__init__()
        c = cfg.channels[-1]
        self.encoder = Encoder(cfg)  # E_L
        self.lq_proj = nn.Conv2d(c, cfg.code_dim, 1)  # E_L latent, compared with the HQ codes (L2)
        self.tf_in = nn.Conv2d(c, cfg.tf_dim, 1)
        self.pos = ConvPosition(cfg.tf_dim)
        self.layers = nn.ModuleList(TransformerLayer(cfg.tf_dim, cfg.tf_heads) for _ in range(cfg.tf_layers))
        self.norm = nn.LayerNorm(cfg.tf_dim)
        self.head = nn.Linear(cfg.tf_dim, cfg.n_codes)

    def forward(self, x):
        """Degraded image -> (E_L features at every scale, logits (B, K, h, w), latent (B, D, h, w))."""
        feats = self.encoder(x)
        z_l = F.normalize(self.lq_proj(feats[-1]), dim=1)
        t = self.pos(self.tf_in(feats[-1]))
        b, c, h, w = t.shape
        t = t.flatten(2).transpose(1, 2)
        for layer in self.layers:
            t = layer(t)
        # the head on channel-first tokens: the K-wide logits come out as a map with no
        # transpose of their own (8x the tokens' size; a third of it went to that copy)
        logits = F.conv1d(self.norm(t).transpose(1, 2), self.head.weight[:, :, None], self.head.bias)
        return feats, logits.reshape(b, -1, h, w), z_l
