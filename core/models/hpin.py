"""Stage 3 and the complete enhancer: HPIN, the hierarchical prior integration network.

``Enhancer`` holds every part used at decode time:

- the code lookup (E_L + Transformer, stage 2) that turns a degraded image into indices
  of the codebook;
- the frozen codebook and high-quality decoder D_H (stage 1);
- HPIN fusion modules (stage 3): at several decoder scales, a windowed Transformer
  block refines E_L's features and a multi-head cross-attention module (MCM) lets the
  decoder features (queries) attend to them (keys/values). The result is added to the
  decoder features scaled by the fidelity weight ``w``: ``w = 0`` decodes the looked-up
  codes alone (most texture from the prior), ``w = 1`` follows the decoded image most
  closely (what stage 3 is trained for).
- optionally (``cfg.input_skip``) a fidelity path around the codebook decoder: a small
  conv net predicts a per-pixel gate ``m`` in [0, 1] from the degraded input ``x`` and
  the decoder output ``d``, and the result is ``d + w * m * (x - d)``. Where the frozen
  decoder cannot reproduce what the input already shows, the gate keeps the input, so
  the enhancer is not capped by the codebook decoder's fidelity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .code_lookup import CodeLookup
from .enhance_blocks import CrossAttentionModule, WindowBlock
from .vqgan import Decoder, EnhancerConfig, VectorQuantizer


class FusionModule(nn.Module):
    """One HPIN scale: Transformer block on E_L features + MCM into the decoder."""

    def __init__(self, ch: int, heads: int, win: int):
        super().__init__()
        self.refine = WindowBlock(ch, heads, win)
        self.mcm = CrossAttentionModule(ch, ch, ch, heads, win)

    def forward(self, dec, enc):
        return self.mcm(dec, self.refine(enc))


class InputSkip(nn.Module):
    """Per-pixel gate (B, 1, H, W) in [0, 1] from the degraded input and the decoder output.

    The last convolution starts at zero, so an untrained gate is 0.5 everywhere.
    """

    def __init__(self, ch: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(6, ch, 3, padding=1), nn.SiLU(),
                                 nn.Conv2d(ch, ch, 3, padding=1), nn.SiLU(),
                                 nn.Conv2d(ch, 1, 3, padding=1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x, dec):
        return torch.sigmoid(self.net(torch.cat([x, dec], 1)))


class Enhancer(nn.Module):
    def __init__(self, cfg: EnhancerConfig):
        super().__init__()
        self.cfg = cfg
        self.lookup = CodeLookup(cfg)
        self.quantizer = VectorQuantizer(cfg.n_codes, cfg.code_dim)
        self.decoder = Decoder(cfg)
        self.fusion = nn.ModuleDict(
            {str(lv): FusionModule(cfg.channels[lv], cfg.fuse_heads, cfg.window) for lv in cfg.fuse_levels})
        self.skip = InputSkip(cfg.channels[0]) if cfg.input_skip else None

    # ---- parts per training stage
    def prior_modules(self) -> list[nn.Module]:
        """Codebook and D_H: frozen after stage 1."""
        return [self.quantizer, self.decoder]

    def load_prior(self, vqgan_state: dict) -> None:
        """Codebook + D_H from a stage-1 VQGAN; E_L starts as a copy of E_H."""
        sub = lambda prefix: {k[len(prefix):]: v for k, v in vqgan_state.items() if k.startswith(prefix)}  # noqa: E731
        self.quantizer.load_state_dict(sub("quantizer."))
        self.decoder.load_state_dict(sub("decoder."))
        self.lookup.encoder.load_state_dict(sub("encoder."))

    # ---- inference
    def forward(self, x, w=1.0, bf16: bool = False):
        """Degraded image (B, 3, H, W) in [0, 1], H and W multiples of ``cfg.pad_multiple``.

        Returns (enhanced image, code logits, E_L latent), float32. ``w``: float or (B,) tensor.
        ``bf16``: compute in bfloat16 on the CPU (where it is native: about 1.5x faster). A code
        whose logits nearly tie may then flip (about 1 % of them); LPIPS, PSNR and FID on the
        val crops are unchanged (results/eval_enhancer_*_bf16.json).
        """
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            feats, logits, z_l = self.lookup(x)
            zq = self.quantizer.lookup(logits.float().argmax(1))
            if not torch.is_tensor(w):
                w = torch.tensor(float(w), device=x.device)
            w = w.to(x.device, x.dtype).reshape(-1, 1, 1, 1)
            use_fusion = bool((w > 0).any())

            def fuse(level, f):
                key = str(level)
                if use_fusion and key in self.fusion:
                    return f + w * self.fusion[key](f, feats[level])
                return f

            out = self.decoder(zq, fuse=fuse)
            if self.skip is not None and use_fusion:
                out = out + w * self.skip(x, out) * (x - out)
        return out.float(), logits.float(), z_l.float()

    @torch.no_grad()
    def enhance(self, x, w: float = 0.5, bf16: bool = False) -> torch.Tensor:
        """Any-size image (B, 3, H, W) in [0, 1] -> enhanced, same size, clamped to [0, 1]."""
        m = self.cfg.pad_multiple
        h, wd = x.shape[-2:]
        ph, pw = (-h) % m, (-wd) % m
        xp = F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x
        out = self(xp, w, bf16=bf16 and x.device.type == "cpu")[0]
        return out[..., :h, :wd].clamp(0, 1)
