"""The container header: a typed, validated record, read from and written to JSON here only.

Version 1 containers store it as UTF-8 JSON with sorted keys; ``to_json`` gives exactly
the bytes earlier versions wrote, so a file's bytes do not change with this code.
Unknown keys (from a newer writer of the same format version) are kept in ``extra``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields, replace

from ..errors import CorruptContainer
from ..options import tiling_problem


@dataclass(frozen=True)
class ModelRef:
    """The weights a container was coded with: registry name and the file's sha256."""

    name: str
    sha256: str


@dataclass(frozen=True)
class Header:
    width: int
    height: int
    dtype: str
    bands: tuple[int, ...]  # 1-based source bands that were coded
    ranges: tuple[tuple[float, float], ...]  # per coded band: value range mapped to [0, 1]
    transform: tuple[float, ...]  # affine a, b, c, d, e, f
    tile: int
    overlap: int
    tile_rows: int
    tile_cols: int
    model: ModelRef
    quality: float = 0.0  # user quality (0 .. levels)
    level: float = -1.0  # 0-based rate level (quality - 1)
    crs: str | None = None  # WKT
    nodata: float | None = None
    has_mask: bool = False
    source_name: str = ""
    source_band_count: int = 0
    band_descriptions: tuple[str | None, ...] = ()
    colorinterp: tuple[str, ...] = ()
    software: str = ""
    # integer entropy scheme of a format-2 container (e.g. "int-f8-a24-w16"); None: format 1
    entropy: str | None = None
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def n_tiles(self) -> int:
        return self.tile_rows * self.tile_cols

    @property
    def format_version(self) -> int:
        return 1 if self.entropy is None else 2

    @property
    def portable(self) -> bool:
        """True when the symbols' probability tables are computed exactly (bit-exact anywhere)."""
        return self.entropy is not None

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def with_rate(self, quality: float, level: float) -> "Header":
        return replace(self, quality=quality, level=level)

    # ------------------------------------------------------------ JSON

    def to_dict(self) -> dict:
        d = dict(self.extra)
        for f in fields(self):
            if f.name == "extra" or (f.name == "entropy" and self.entropy is None):
                continue  # a format-1 header is written exactly as version 1 wrote it
            value = getattr(self, f.name)
            if f.name == "model":
                value = {"name": value.name, "sha256": value.sha256}
            elif f.name == "ranges":
                value = [list(r) for r in value]
            elif isinstance(value, tuple):
                value = list(value)
            d[f.name] = value
        return d

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, where: str = "container") -> "Header":
        try:
            d = json.loads(data)
        except ValueError:
            raise CorruptContainer(f"{where}: container header is not valid JSON") from None
        if not isinstance(d, dict):
            raise CorruptContainer(f"{where}: container header is not a JSON object")
        return cls.from_dict(d, where)

    @classmethod
    def from_dict(cls, d: dict, where: str = "container") -> "Header":
        """Check types and consistency; a bad header is a ``CorruptContainer``."""
        known = {f.name for f in fields(cls)} - {"extra"}
        try:
            model = d["model"]
            h = cls(
                width=_int(d["width"]), height=_int(d["height"]), dtype=str(d["dtype"]),
                bands=tuple(_int(b) for b in d["bands"]),
                ranges=tuple((float(lo), float(hi)) for lo, hi in d["ranges"]),
                transform=tuple(float(v) for v in d["transform"]),
                tile=_int(d["tile"]), overlap=_int(d["overlap"]),
                tile_rows=_int(d["tile_rows"]), tile_cols=_int(d["tile_cols"]),
                model=ModelRef(str(model["name"]), str(model["sha256"])),
                quality=float(d["quality"]), level=float(d["level"]),
                crs=None if d.get("crs") is None else str(d["crs"]),
                nodata=None if d.get("nodata") is None else float(d["nodata"]),
                has_mask=bool(d.get("has_mask", False)),
                source_name=str(d.get("source_name", "")),
                source_band_count=_int(d.get("source_band_count", 0)),
                band_descriptions=tuple(d.get("band_descriptions") or ()),
                colorinterp=tuple(str(c) for c in d.get("colorinterp") or ()),
                software=str(d.get("software", "")),
                entropy=None if d.get("entropy") is None else str(d["entropy"]),
                extra={k: v for k, v in d.items() if k not in known},
            )
        except KeyError as exc:
            raise CorruptContainer(f"{where}: container header lacks {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise CorruptContainer(f"{where}: container header has a bad value ({exc})") from None
        problem = h._problem()
        if problem:
            raise CorruptContainer(f"{where}: container header is inconsistent ({problem})")
        return h

    def _problem(self) -> str | None:
        if self.width < 1 or self.height < 1:
            return f"size {self.width} x {self.height}"
        if not self.bands or len(self.ranges) != len(self.bands):
            return f"{len(self.bands)} bands, {len(self.ranges)} value ranges"
        if len(self.transform) != 6:
            return "the transform needs 6 numbers"
        if not all(math.isfinite(v) for v in (self.quality, self.level)):
            return "rate is not a number"
        return tiling_problem(self.tile, self.overlap)


def _int(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ValueError(f"{value!r} is not an integer")
    return int(value)
