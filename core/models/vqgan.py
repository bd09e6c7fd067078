"""Stage 1 of the enhancer: a VQGAN-style autoencoder that learns the codebook prior.

The high-quality encoder E_H maps an image to an 8x-downsampled feature map; each
feature vector is replaced by its nearest entry of a discrete codebook C (cosine
similarity of l2-normalised, low-dimensional codes, which keeps most entries in use in
short trainings); the decoder D_H turns the code map back into an image. Trained on
high-quality remote-sensing images only, C and D_H hold "what ground looks like".

``EnhancerConfig`` (``enhancer_config``) describes every size of the three stages (this module,
the code lookup and HPIN), so a weights file can rebuild its networks from its metadata.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .enhance_blocks import Down, ResBlock, Up, norm
from .enhancer_config import EnhancerConfig


TINY_CONFIG = EnhancerConfig(channels=(8, 16, 16, 32), n_codes=64, code_dim=8, tf_dim=32, tf_layers=1,
                             tf_heads=2, fuse_heads=2, window=4)


class Encoder(nn.Module):
    """Image in [0, 1] -> features at every scale; the last (1/8) is the latent."""

    def __init__(self, cfg: EnhancerConfig):
        super().__init__()
        ch = cfg.channels
        self.conv_in = nn.Conv2d(3, ch[0], 3, padding=1)
        self.stages = nn.ModuleList()
        for i in range(1, len(ch)):
            blocks = [Down(ch[i - 1], ch[i]), ResBlock(ch[i])]
            if i == len(ch) - 1:
                blocks.append(ResBlock(ch[i]))
            self.stages.append(nn.Sequential(*blocks))
        self.out = nn.Sequential(norm(ch[-1]), nn.SiLU())

    def forward(self, x) -> list[torch.Tensor]:
        f = self.conv_in(x * 2 - 1)
        feats = [f]
        for stage in self.stages:
            f = stage(f)
            feats.append(f)
        feats[-1] = self.out(feats[-1])
        return feats


class VectorQuantizer(nn.Module):
    """Nearest codebook entry by cosine similarity, straight-through gradients.

    ``forward`` returns (quantised codes, indices, codebook+commitment loss). Unused
    entries can be re-seeded from encoder outputs during stage-1 training
    (``restart_dead``); outside stage 1 the codebook is frozen.
    """

    def __init__(self, n_codes: int, dim: int, beta: float = 0.25):
        super().__init__()
        self.n_codes, self.dim, self.beta = n_codes, dim, beta
        self.embedding = nn.Parameter(torch.randn(n_codes, dim))
        self.register_buffer("usage", torch.zeros(n_codes), persistent=False)

    def codebook(self) -> torch.Tensor:
        return F.normalize(self.embedding, dim=1)

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) latent -> (B, h, w) nearest entries."""
        zn = F.normalize(z, dim=1)
        sim = torch.einsum("bdhw,kd->bkhw", zn, self.codebook())
        return sim.argmax(1)

    def lookup(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, h, w) indices -> (B, D, h, w) code vectors."""
        return self.codebook()[idx].permute(0, 3, 1, 2)

    def lookup_soft(self, probs: torch.Tensor) -> torch.Tensor:
        """(B, K, h, w) probabilities -> expected code vectors (B, D, h, w)."""
        return torch.einsum("bkhw,kd->bdhw", probs, self.codebook())

    def forward(self, z):
        zn = F.normalize(z, dim=1)
        idx = self.indices(zn)
        zq = self.lookup(idx)
        loss = F.mse_loss(zq, zn.detach()) + self.beta * F.mse_loss(zn, zq.detach())
        if self.training:
            with torch.no_grad():
                self.usage += torch.bincount(idx.flatten(), minlength=self.n_codes).to(self.usage)
        return zn + (zq - zn).detach(), idx, loss

    @torch.no_grad()
    def restart_dead(self, z: torch.Tensor, generator: torch.Generator | None = None) -> int:
        """Re-seed entries unused since the last call with random latent vectors of ``z``."""
        dead = (self.usage == 0).nonzero().flatten()
        if len(dead):
            flat = F.normalize(z.detach(), dim=1).permute(0, 2, 3, 1).reshape(-1, self.dim)
            pick = torch.randint(0, flat.shape[0], (len(dead),), generator=generator)
            noise = 0.01 * torch.randn(len(dead), self.dim, generator=generator)
            self.embedding.data[dead] = flat[pick.to(flat.device)] + noise.to(flat.device)
        self.usage.zero_()
        return len(dead)


class Decoder(nn.Module):
    """Code map -> image. ``fuse`` hooks (scale index -> callable) let HPIN inject features."""

    def __init__(self, cfg: EnhancerConfig):
        super().__init__()
        ch = cfg.channels
        self.post_quant = nn.Conv2d(cfg.code_dim, ch[-1], 1)
        self.mid = nn.Sequential(nn.Conv2d(ch[-1], ch[-1], 3, padding=1), ResBlock(ch[-1]), ResBlock(ch[-1]))
        self.stages = nn.ModuleList()
        for i in range(len(ch) - 1, 0, -1):
            self.stages.append(nn.Sequential(Up(ch[i], ch[i - 1]), ResBlock(ch[i - 1])))
        self.out = nn.Sequential(norm(ch[0]), nn.SiLU(), nn.Conv2d(ch[0], 3, 3, padding=1))
        self.n_scales = len(ch)

    def forward(self, zq, fuse=None):
        f = self.mid(self.post_quant(zq))
        level = self.n_scales - 1
        if fuse is not None:
            f = fuse(level, f)
        for stage in self.stages:
            f = stage(f)
            level -= 1
            if fuse is not None:
                f = fuse(level, f)
        return (self.out(f) + 1) / 2


class VQGAN(nn.Module):
    """E_H + codebook + D_H."""

    def __init__(self, cfg: EnhancerConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.quant_proj = nn.Conv2d(cfg.channels[-1], cfg.code_dim, 1)
        self.quantizer = VectorQuantizer(cfg.n_codes, cfg.code_dim)
        self.decoder = Decoder(cfg)

    def encode(self, x):
        """Image -> (quantised codes, indices, vq loss, pre-quantisation latent)."""
        z = self.quant_proj(self.encoder(x)[-1])
        zq, idx, loss = self.quantizer(z)
        return zq, idx, loss, z

    def forward(self, x):
        zq, idx, loss, _ = self.encode(x)
        return self.decoder(zq), idx, loss


class PatchDiscriminator(nn.Module):
    """Small PatchGAN discriminator for the optional hinge GAN loss."""

    def __init__(self, ch: int = 32, layers: int = 3):
        super().__init__()
        mods = [nn.Conv2d(3, ch, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = ch
        for _ in range(1, layers):
            mods += [nn.Conv2d(c, c * 2, 4, 2, 1), nn.GroupNorm(8, c * 2), nn.LeakyReLU(0.2)]
            c *= 2
        mods += [nn.Conv2d(c, 1, 3, 1, 1)]
        self.net = nn.Sequential(*mods)

    def forward(self, x):
        return self.net(x * 2 - 1)
