"""The sizes of an enhancer's three stages (``EnhancerConfig``), without torch.

A weights file records them in its metadata; ``files.LoadedEnhancer`` reads them (and the
input multiple they imply) without building a network, and ``vqgan``, ``code_lookup`` and
``hpin`` build the networks from them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class EnhancerConfig:
    channels: tuple[int, ...] = (32, 64, 96, 128)  # feature widths at scales 1, 1/2, 1/4, 1/8
    n_codes: int = 1024  # codebook entries
    code_dim: int = 32  # codebook vector size
    tf_dim: int = 128  # code-lookup Transformer width
    tf_layers: int = 4
    tf_heads: int = 4
    fuse_levels: tuple[int, ...] = (1, 2, 3)  # HPIN fusion at scales 1/2, 1/4, 1/8 (index into channels)
    fuse_heads: int = 4
    window: int = 8  # attention window of the HPIN modules (feature pixels)
    input_skip: bool = False  # HPIN gate that mixes the degraded input back in (``train_hpin --input-skip``)

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.channels) - 1)

    @property
    def pad_multiple(self) -> int:
        """Input sizes must be multiples of this (8x downsampling and 8-pixel windows)."""
        return self.downsample * self.window

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "EnhancerConfig":
        d = dict(d)
        for k in ("channels", "fuse_levels"):
            d[k] = tuple(d[k])
        return cls(**d)
