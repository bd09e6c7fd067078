"""The container header: a typed, validated record, read from and written to JSON here only.

A container is untrusted input: ``from_dict`` checks every field against ``SCHEMA`` (type,
finite numbers, ranges bounded by ``core.options``' limits) and the fields against each
other (``Header.problem``: ranges per band, a parsable CRS, a usable transform, the tile
count of the grid...). Every failure is one ``CorruptContainer`` line naming the field.

Version 1 containers store it as UTF-8 JSON with sorted keys; ``to_json`` gives exactly
the bytes earlier versions wrote, so a file's bytes do not change with this code.
Unknown keys (from a newer writer of the same format version) are kept in ``extra``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields, replace

from ..errors import CorruptContainer
from ..options import (
    DTYPE_RANGES,
    MAX_BANDS,
    MAX_LATENT_MARGIN,
    MAX_OVERLAP,
    MAX_QUALITY,
    MAX_RASTER_SIDE,
    MAX_SOURCE_BANDS,
    MAX_TILE,
    MIN_QUALITY,
    MIN_TILE,
    SUPPORTED_DTYPES,
    band_count_problem,
    bands_problem,
    raster_size_problem,
    latent_tiling_problem,
    tiling_problem,
)
from .tiling import TileGrid


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
    # integer entropy scheme of a format-2/3 container (e.g. "int-f8-a24-w16"); None: format 1
    entropy: str | None = None
    # format 3: latent samples of its neighbours each tile is synthesised with (None: formats 1, 2)
    latent_margin: int | None = None
    # format 3: pixels of its neighbours the encoder's analysis saw (informational)
    analysis_margin: int | None = None
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def n_tiles(self) -> int:
        return self.tile_rows * self.tile_cols

    @property
    def format_version(self) -> int:
        if self.entropy is None:
            return 1
        return 2 if self.latent_margin is None else 3

    @property
    def latent_tiles(self) -> bool:
        """Format 3: tiles synthesised with their neighbours' latents, never blended."""
        return self.latent_margin is not None

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
            if f.name == "extra" or (f.name in _OPTIONAL and getattr(self, f.name) is None):
                continue  # a format-1 (2) header is written exactly as version 1 (2) wrote it
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
        except (ValueError, RecursionError):  # bad JSON, bad UTF-8, numbers too long, nesting too deep
            raise CorruptContainer(f"{where}: container header is not valid JSON") from None
        if not isinstance(d, dict):
            raise CorruptContainer(f"{where}: container header is not a JSON object")
        return cls.from_dict(d, where)

    @classmethod
    def from_dict(cls, d: dict, where: str = "container") -> "Header":
        """Check every field against ``SCHEMA`` and the fields against each other; a bad
        header is a ``CorruptContainer`` naming the field and what is wrong with it."""
        if not isinstance(d, dict):
            raise CorruptContainer(f"{where}: container header is not a JSON object")
        values = {}
        for name, (default, parse) in SCHEMA.items():
            if name not in d:
                if default is _REQUIRED:
                    raise CorruptContainer(f"{where}: container header lacks '{name}'")
                values[name] = default
                continue
            try:
                values[name] = parse(d[name])
            except _Bad as exc:
                raise CorruptContainer(f"{where}: container header field '{name}' {exc}") from None
        h = cls(**values, extra={k: v for k, v in d.items() if k not in SCHEMA})
        problem = h.problem()
        if problem:
            raise CorruptContainer(f"{where}: container header is inconsistent: {problem}")
        return h

    def problem(self) -> str | None:
        """What is wrong between the fields (each field's own range is the schema's), or None.
        The writer checks it too, so no container is written that a reader would refuse."""
        n = len(self.bands)
        first = (raster_size_problem(self.width, self.height) or band_count_problem(n)
                 or bands_problem(list(self.bands)) or tiling_problem(self.tile, self.overlap))
        if first:
            return first
        if len(self.ranges) != n:
            return f"{len(self.ranges)} value ranges for {n} bands"
        lo_dtype, hi_dtype = DTYPE_RANGES[self.dtype]
        for lo, hi in self.ranges:
            if not lo_dtype <= lo <= hi <= hi_dtype:
                return f"value range {lo:g}..{hi:g} is not within {self.dtype}'s {lo_dtype}..{hi_dtype}"
        if 0 < self.source_band_count < max(self.bands):
            return f"band {max(self.bands)} of a {self.source_band_count}-band source"
        if len(self.band_descriptions) not in (0, n):
            return f"{len(self.band_descriptions)} band descriptions for {n} bands"
        if len(self.colorinterp) not in (0, n):
            return f"{len(self.colorinterp)} colour interpretations for {n} bands"
        a, b, _, d, e, _ = self.transform
        if not (math.isfinite(a * e - b * d) and a * e - b * d != 0):
            return "the transform is degenerate (not invertible)"
        if self.nodata is not None and not lo_dtype <= self.nodata <= hi_dtype:
            return f"nodata {self.nodata:g} is not a {self.dtype} value"
        if self.analysis_margin is not None and self.latent_margin is None:
            return "an analysis margin without a latent margin (format 3 has both)"
        if self.latent_tiles:
            if self.entropy is None:
                return "a latent margin without an integer entropy scheme (format 3 has both)"
            problem = latent_tiling_problem(self.tile, self.overlap)
            if problem:
                return problem
            if self.latent_margin > self.tile // 16:
                return f"latent margin {self.latent_margin} is wider than a tile's {self.tile // 16} latent samples"
        if abs(self.quality - 1.0 - self.level) > 1e-6:
            return f"quality {self.quality:g} does not match rate level {self.level:g}"
        grid = TileGrid(self.width, self.height, self.tile, self.overlap)
        if (self.tile_rows, self.tile_cols) != (grid.n_rows, grid.n_cols):
            return (f"{self.tile_rows} x {self.tile_cols} tiles, but {self.width} x {self.height} px in tiles of "
                    f"{self.tile} with overlap {self.overlap} make {grid.n_rows} x {grid.n_cols}")
        return _crs_problem(self.crs)


# ---------------------------------------------------------------- the schema


class _Bad(ValueError):
    """One field's value is wrong (the message completes "field 'name' ...")."""


_REQUIRED = object()
_OPTIONAL = ("entropy", "latent_margin", "analysis_margin")  # left out of the JSON when None
MAX_TEXT = 1 << 16  # characters of a text field (a CRS WKT is a few KB)
MAX_NAME = 256  # characters of a name (model, scheme, colour interpretation)


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _integer(lo: int, hi: int):
    def parse(v) -> int:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _Bad(f"is not an integer: {_show(v)}")
        if isinstance(v, float) and not (math.isfinite(v) and v.is_integer()):
            raise _Bad(f"is not an integer: {_show(v)}")
        if not lo <= v <= hi:
            raise _Bad(f"is {_show(v)}, outside {lo}..{hi}")
        return int(v)

    return parse


def _number(lo: float = -math.inf, hi: float = math.inf):
    def parse(v) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _Bad(f"is not a number: {_show(v)}")
        try:
            f = float(v)
        except OverflowError:
            raise _Bad(f"is not a finite number: {_show(v)}") from None
        if not math.isfinite(f):
            raise _Bad(f"is not a finite number: {_show(v)}")
        if not lo <= f <= hi:
            raise _Bad(f"is {f:g}, outside {lo:g}..{hi:g}")
        return f

    return parse


def _text(max_len: int = MAX_TEXT, printable: bool = False, empty: bool = True):
    def parse(v) -> str:
        if not isinstance(v, str):
            raise _Bad(f"is not a string: {_show(v)}")
        if len(v) > max_len:
            raise _Bad(f"is longer than {max_len} characters")
        if not empty and not v:
            raise _Bad("is empty")
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            raise _Bad(f"is not valid text: {_show(v)}") from None
        if printable and not v.isprintable():
            raise _Bad(f"has control characters: {_show(v)}")
        return v

    return parse


def _choice(options: tuple):
    def parse(v):
        if not isinstance(v, str) or v not in options:
            raise _Bad(f"is {_show(v)}, not one of {', '.join(options)}")
        return v

    return parse


def _flag(v) -> bool:
    if not isinstance(v, bool):
        raise _Bad(f"is not true or false: {_show(v)}")
    return v


def _nullable(parse, default=None):
    """``null`` stands for ``default``."""
    return lambda v: default if v is None else parse(v)


def _list(item, min_len: int = 0, max_len: int = MAX_BANDS):
    def parse(v) -> tuple:
        if not isinstance(v, list):
            raise _Bad(f"is not a list: {_show(v)}")
        if not min_len <= len(v) <= max_len:
            size = f"{min_len}" if min_len == max_len else f"{min_len} to {max_len}"
            raise _Bad(f"has {len(v)} items, not {size}")
        out = []
        for i, x in enumerate(v):
            try:
                out.append(item(x))
            except _Bad as exc:
                raise _Bad(f"item {i} {exc}") from None
        return tuple(out)

    return parse


_HEX = frozenset("0123456789abcdef")


def _model(v) -> ModelRef:
    if not isinstance(v, dict):
        raise _Bad(f"is not an object: {_show(v)}")
    for key in ("name", "sha256"):
        if key not in v:
            raise _Bad(f"lacks '{key}'")
    try:
        name = _text(MAX_NAME, printable=True, empty=False)(v["name"])
    except _Bad as exc:
        raise _Bad(f"name {exc}") from None
    sha = v["sha256"]
    if not isinstance(sha, str) or len(sha) != 64 or not set(sha) <= _HEX:
        raise _Bad(f"sha256 is not 64 hex digits: {_show(sha)}")
    return ModelRef(name, sha)


def _crs_problem(crs: str | None) -> str | None:
    """A CRS must be WKT that GDAL parses (what the writer stores; never a PROJ string or a file)."""
    if crs is None:
        return None
    import rasterio
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        with rasterio.Env():  # GDAL's messages go to the (quiet) logger, not to stderr
            CRS.from_wkt(crs)
    except CRSError:
        return f"crs is not a WKT this software can read: {_show(crs)}"
    return None


_coordinate = _number()
_range = _list(_number(), 2, 2)

# field: (default or _REQUIRED, parser); ``null`` is an error for a required field
SCHEMA: dict[str, tuple] = {
    "width": (_REQUIRED, _integer(1, MAX_RASTER_SIDE)),
    "height": (_REQUIRED, _integer(1, MAX_RASTER_SIDE)),
    "dtype": (_REQUIRED, _choice(SUPPORTED_DTYPES)),
    "bands": (_REQUIRED, _list(_integer(1, MAX_SOURCE_BANDS), 1, MAX_BANDS)),
    "ranges": (_REQUIRED, _list(_range, 1, MAX_BANDS)),
    "transform": (_REQUIRED, _list(_coordinate, 6, 6)),
    "tile": (_REQUIRED, _integer(MIN_TILE, MAX_TILE)),
    "overlap": (_REQUIRED, _integer(0, MAX_OVERLAP)),
    "tile_rows": (_REQUIRED, _integer(1, MAX_RASTER_SIDE)),
    "tile_cols": (_REQUIRED, _integer(1, MAX_RASTER_SIDE)),
    "model": (_REQUIRED, _model),
    "quality": (_REQUIRED, _number(MIN_QUALITY, MAX_QUALITY)),
    "level": (_REQUIRED, _number(MIN_QUALITY - 1.0, MAX_QUALITY - 1.0)),
    "crs": (None, _nullable(_text(MAX_TEXT, empty=False))),
    "nodata": (None, _nullable(_number())),
    "has_mask": (False, _flag),
    "source_name": ("", _nullable(_text(), "")),
    "source_band_count": (0, _integer(0, MAX_SOURCE_BANDS)),
    "band_descriptions": ((), _nullable(_list(_nullable(_text())), ())),
    "colorinterp": ((), _nullable(_list(_text(MAX_NAME)), ())),
    "software": ("", _nullable(_text(MAX_NAME), "")),
    "entropy": (None, _nullable(_text(MAX_NAME, printable=True, empty=False))),
    "latent_margin": (None, _nullable(_integer(0, MAX_LATENT_MARGIN))),
    "analysis_margin": (None, _nullable(_integer(0, MAX_TILE))),
}
