"""The codec's contract: every default and limit, and the job parameters with their checks.

The CLI, batch, the worker, the QGIS dialogs and the Processing algorithms all take
their defaults and checks from here, so they cannot drift apart. This module imports
only the standard library (and ``core.errors``): the QGIS plugin loads it inside QGIS,
where torch and rasterio must not be imported, and its build copies it into the zip.

Limits that depend on the model (how many quality levels it has) are checked where the
model is known, with ``quality_problem(quality, levels)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .errors import BadInput

# ---------------------------------------------------------------- models and devices

DEFAULT_MODEL = "elic-lite-s"
DEFAULT_MODEL_LEVELS = 6  # trained rate levels of DEFAULT_MODEL (a test checks the registry agrees)
# What a compression suggests when --target-bpp is above the chosen model's top quality: the
# shipped model trained for the highest rates (a test checks it reaches above DEFAULT_MODEL).
HIGH_RATE_MODEL = "elic-v3"
# what compressing with no model chosen uses (CompressParams.model None), for help texts
DEFAULT_MODEL_CHOICE = f"{DEFAULT_MODEL}, or {HIGH_RATE_MODEL} for a target bpp above what {DEFAULT_MODEL} reaches"
DEFAULT_ENHANCER = "enhancer-fast"
DEVICES = ("cpu", "cuda")
DEFAULT_DEVICE = "cpu"

# ---------------------------------------------------------------- tiling

# 768 px codes about 15 % faster than 512 px on CPU (fewer calls, smaller margins) at a row of
# tiles that still fits in ~1.3 GB (benchmarks/codec_throughput.py).
DEFAULT_TILE = 768
MIN_TILE = 64
MAX_TILE = 8192  # the largest a front end offers
TILE_MULTIPLE = 64  # ELIC codes tiles padded to a multiple of this
# Format 3 tiles do not overlap (the decoder's latent margin replaces the overlap); formats 1
# and 2 synthesise each tile alone and blend LEGACY_OVERLAP px (the CLI's default for them).
DEFAULT_OVERLAP = 0
LEGACY_OVERLAP = 32
MAX_OVERLAP = MAX_TILE // 2
# Format 3 context, measured with benchmarks/receptive_field.py (results/receptive_field.json):
# the decoder synthesises a tile from its latents plus LATENT_MARGIN latent samples (16 px
# each) of its neighbours; the encoder's analysis sees ANALYSIS_MARGIN px of its neighbours.
LATENT_MARGIN = 2  # 81-84 dB against one whole-raster synthesis (1: 51 dB, 3: 114 dB)
MAX_LATENT_MARGIN = MAX_TILE // TILE_MULTIPLE  # what a container may ask for (a tile's latent side / 4)
ANALYSIS_MARGIN = 32  # < 0.01 % of symbols differ from a whole-raster analysis (16 px: 0.05-0.4 %)
RATE_SAMPLE_TILES = 4  # --target-bpp: tiles the rate search codes at each trial level

# ---------------------------------------------------------------- rate

MIN_QUALITY = 0.0  # one level below the lowest trained one (gains extrapolated)
# The default keeps features: the lowest quality whose MS-SSIM reaches 0.95 on the NAIP and
# NEON fixtures and a val mosaic, or the top level where the model cannot reach it. elic-lite-s
# (like elic-lite) reaches 0.950 on NAIP and 0.93 on NEON only at its top level, 6
# (benchmarks/default_quality.py -> results/default_quality.json; a test holds the two equal).
DEFAULT_QUALITY = 6.0
# Named rates the front ends offer (name, quality); "smallest" is the lowest trained level.
QUALITY_PRESETS = (("keeps features (default)", DEFAULT_QUALITY), ("smallest", 1.0))
DEFAULT_TARGET_BPP = 0.3  # what a front end proposes when the user switches to a target bitrate
MAX_TARGET_BPP = 24.0

# ---------------------------------------------------------------- bands

SUPPORTED_DTYPES = ("uint8", "uint16")
DTYPE_RANGES = {"uint8": (0, 255), "uint16": (0, 65535)}  # values each supported dtype holds
BANDS_PER_GROUP = 3  # ELIC and the enhancer see three bands at a time
# Every band is coded unless the user chooses (an alpha band is kept as the mask instead).
# Above this many, choosing is required: each group of three costs a full codec pass, and a
# hyperspectral cube is rarely meant to be coded whole by accident. 16 covers Sentinel-2 (13)
# and WorldView-3 (8 + 8).
MAX_DEFAULT_BANDS = 16


def too_many_bands_problem(name: str, count: int) -> str | None:
    """The one line a front end shows when the default (every band) is refused."""
    if count > MAX_DEFAULT_BANDS:
        return (f"{name} has {count} bands: every band is coded by default only up to {MAX_DEFAULT_BANDS}; "
                "choose the bands to code with --bands, e.g. --bands 1,2,3")
    return None


def band_groups(n_bands: int) -> list[list[int]]:
    """Indices of the bands coded together: [[0,1,2],[3,3,3]] for 4 bands (a short last
    group repeats its last band)."""
    groups = []
    for start in range(0, n_bands, BANDS_PER_GROUP):
        g = list(range(start, min(start + BANDS_PER_GROUP, n_bands)))
        groups.append(g + [g[-1]] * (BANDS_PER_GROUP - len(g)))
    return groups


# ---------------------------------------------------------------- enhancement

FIDELITY_RANGE = (0.0, 1.0)  # 0: most texture from the codebook prior, 1: closest to the decoded pixels
# the default fidelity of an enhancer file that is neither registered nor carries an int8 network
UNREGISTERED_FIDELITY = 0.5
# ``decompress`` left to its default enhances containers coded for a lambda (the rate level's
# trade-off, MSE on 0..255, the same scale for every model) up to this one: the shipped
# enhancers' training range, elic-lite's quality 4, which is quality 5 of elic-v2 and elic-v3
# (their lambdas start one level lower). ``--enhance`` forces it, ``--no-enhance`` skips it.
AUTO_ENHANCE_MAX_LAMBDA = 0.002
ENHANCE_CHOICES = ("auto", True, False)
DEFAULT_ENHANCE_WINDOW = 256
# 16 rather than 32: 13 % fewer windows on large rasters, LPIPS and seams unchanged (measured:
# 0.2663 vs 0.2664 on Dubai crops at ~0.1 bpp; no excess gradient in the blend bands)
DEFAULT_ENHANCE_OVERLAP = 16

# ---------------------------------------------------------------- files

# Container format versions: 1 = float entropy parameters (decodes only where the
# encoder's float kernels are reproduced), 2 = integer entropy parameters (bit-exact on
# any IEEE-754 machine), overlapping tiles each synthesised alone and blended, 3 = integer
# entropy parameters per tile, tiles without overlap, each synthesised with a margin of its
# neighbours' latents (no pixel coded twice, no seam). New files are version 3.
FORMAT_VERSIONS = (1, 2, 3)
DEFAULT_FORMAT = 3
CONTAINER_SUFFIX = ".crsic"
CONTAINER_MAGIC = b"CRSIC\x00\r\n"  # the first bytes of every container
DECODED_SUFFIX = ".decoded.tif"
ENHANCED_SUFFIX = ".enhanced.tif"

# ---------------------------------------------------------------- sizes shown to people

# One convention everywhere (CLI, batch, worker, plugin, ``info``): decimal units, 1 kB =
# 1000 bytes, as file managers show them. The ratio is always against the raw data (the
# coded bands' pixels, uncompressed), which does not depend on how the input was stored;
# the input file's own size is shown beside it, labelled.
SIZE_UNITS = ("B", "kB", "MB", "GB", "TB")


def format_bytes(n: float) -> str:
    """512 B, 8.5 kB, 593.6 kB, 2.77 MB, 1.20 GB (powers of 1000)."""
    n = float(n)
    for unit in SIZE_UNITS:
        if abs(n) < 1000 or unit == SIZE_UNITS[-1]:
            if unit == "B":
                return f"{int(n)} B"
            return f"{n:.1f} {unit}" if unit == "kB" else f"{n:.2f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def raw_bytes(width: int, height: int, bands: int, dtype: str) -> int:
    """Size of the coded bands' pixels, uncompressed."""
    return width * height * bands * (2 if dtype == "uint16" else 1)


def sizes_text(raw: int, container: int, input_file: int | None = None, input_label: str = "input file") -> str:
    """The one line every front end shows: raw data, input file, container and the ratio."""
    parts = [f"raw data {format_bytes(raw)}"]
    if input_file is not None:
        parts.append(f"{input_label} {format_bytes(input_file)}")
    parts.append(f"container {format_bytes(container)}")
    return ", ".join(parts) + f"; ratio {raw / max(container, 1):.1f}:1 against the raw data"


# ---------------------------------------------------------------- limits on what a file may ask for

# A container (or a source raster) is untrusted input: these bound what it can make the
# codec allocate or loop over, and are checked before anything is allocated.
MAX_RASTER_SIDE = 1 << 20  # pixels per side of a coded raster (1,048,576)
MAX_BANDS = 256  # bands coded in one container, and bands the enhancer takes
MAX_SOURCE_BANDS = 65535  # bands a source raster may have (GeoTIFF's limit)
MAX_QUALITY = 64.0  # no model has more rate levels; the loaded model's range is checked when decoding
MAX_HEADER_BYTES = 1 << 24  # a container header (JSON) is refused beyond this, before it is read

# ---------------------------------------------------------------- runtime

# Which runtime runs the float transforms (``core.models.runtime``); the entropy path is
# integer whatever the runtime. ``auto``: the first installed of RUNTIME_PREFERENCE, ordered
# by measured speed on a 2-core AVX2 CPU (``results/transform_runtimes.json``).
RUNTIME_ENV = "CODERSIC_RUNTIME"
RUNTIME_CHOICES = ("auto", "torch", "openvino", "onnxruntime")
RUNTIME_PREFERENCE = ("openvino", "onnxruntime", "torch")
# Float precision of the transforms on OpenVINO. ``auto``: bf16 where the CPU computes it
# natively (AVX512-BF16 or AMX; OpenVINO says "BF16"), else f32; ``f32``: always f32.
# bf16 analysis gives the same latents whatever the thread count, so a machine's containers
# stay byte-identical; symbols never depend on it (the entropy path is integer). Speed and
# rate-distortion cost: results/transform_precision.json (benchmarks/transform_precision.py).
PRECISION_ENV = "CODERSIC_PRECISION"
PRECISION_CHOICES = ("auto", "f32")
# oneDNN's (and so torch's and OpenVINO's) cap on the instructions its kernels may use. A cap
# below AVX512-BF16 (``AVX2``, ``AVX512_CORE``, ...) makes ``auto`` compute in f32: the CPU may
# say it has bf16, but the capped kernels cannot run it.
ISA_CAP_ENV = "ONEDNN_MAX_CPU_ISA"
BF16_ISA_MARKS = ("BF16", "FP16", "AMX", "AVX10", "ALL", "DEFAULT")

# ---------------------------------------------------------------- memory

# Decoding and enhancing wider than this run in vertical panels (``format.tiling.panels``):
# peak memory is then bounded by one panel's row of tiles, whatever the raster's width.
# 16384 keeps the decode under 1.3 GB and costs rasters up to that width nothing; a wider
# format-3 decode entropy-decodes the tile column either side of each cut twice
# (``results/wide_raster_memory.json``).
PANEL_WIDTH = 16384
# GDAL's block cache (MB): its default, 5 % of RAM, would let reading and writing large
# rasters grow the process by gigabytes; a user's own GDAL_CACHEMAX is kept.
GDAL_CACHE_MB = 256

# ---------------------------------------------------------------- checks (one line each)


def tiling_problem(tile: int, overlap: int) -> str | None:
    if tile < MIN_TILE:
        return f"tile size must be at least {MIN_TILE} pixels, got {tile}"
    if tile > MAX_TILE:
        return f"tile size must be at most {MAX_TILE} pixels, got {tile}"
    if not 0 <= overlap <= tile // 2:
        return f"overlap must be between 0 and half the tile size ({tile // 2} px), got {overlap}"
    return None


def latent_tiling_problem(tile: int, overlap: int) -> str | None:
    """Format 3's grid: latents of neighbouring tiles must line up."""
    if overlap:
        return f"format 3 tiles do not overlap (the decoder reads its neighbours' latents instead), got overlap {overlap}"
    if tile % TILE_MULTIPLE:
        return f"format 3 tiles must be a multiple of {TILE_MULTIPLE} pixels, got {tile}"
    return None


def raster_size_problem(width: int, height: int) -> str | None:
    if not (1 <= width <= MAX_RASTER_SIDE and 1 <= height <= MAX_RASTER_SIDE):
        return f"raster size {width} x {height} is outside 1..{MAX_RASTER_SIDE} pixels per side"
    return None


def band_count_problem(count: int) -> str | None:
    if not 1 <= count <= MAX_BANDS:
        return f"{count} bands: the codec takes 1 to {MAX_BANDS} bands at a time"
    return None


def quality_problem(quality: float, levels: int) -> str | None:
    """Quality runs from MIN_QUALITY to the model's number of trained levels."""
    if math.isnan(quality) or not MIN_QUALITY <= quality <= levels:
        return f"quality must be between {MIN_QUALITY:g} and {levels}, got {quality}"
    return None


def target_bpp_problem(target_bpp: float | None) -> str | None:
    if target_bpp is not None and not target_bpp > 0:
        return f"target bpp must be positive, got {target_bpp}"
    return None


def fidelity_problem(fidelity: float | None) -> str | None:
    lo, hi = FIDELITY_RANGE
    if fidelity is not None and not lo <= fidelity <= hi:
        return f"fidelity must be between {lo:g} and {hi:g}, got {fidelity}"
    return None


def bands_problem(bands: list[int] | None) -> str | None:
    if bands and len(set(bands)) != len(bands):
        return f"bands listed twice: {list(bands)}"
    if bands and any(b < 1 for b in bands):
        return f"bands are numbered from 1, got {list(bands)}"
    if bands and len(bands) > MAX_BANDS:
        return f"{len(bands)} bands listed: the codec takes at most {MAX_BANDS}"
    return None


def device_problem(device: str) -> str | None:
    if str(device).split(":")[0] not in DEVICES:
        return f"device must be one of {', '.join(DEVICES)}, got '{device}'"
    return None


def format_problem(version: int) -> str | None:
    if version not in FORMAT_VERSIONS:
        return f"container format must be one of {', '.join(map(str, FORMAT_VERSIONS))}, got {version!r}"
    return None


def _raise_first(*problems: str | None) -> None:
    for problem in problems:
        if problem:
            raise BadInput(problem)


# ---------------------------------------------------------------- job parameters


@dataclass
class CompressParams:
    """What ``compress_raster`` needs besides the paths."""

    # a registry name or weights file; None: DEFAULT_MODEL, or HIGH_RATE_MODEL when target_bpp is
    # above what DEFAULT_MODEL codes the raster at (compress_raster says so in its rate note)
    model: str | None = None
    quality: float = DEFAULT_QUALITY
    target_bpp: float | None = None  # instead of quality: searched on sample tiles
    bands: list[int] | None = None  # 1-based; None: every band (alpha kept as the mask), up to MAX_DEFAULT_BANDS
    tile: int = DEFAULT_TILE
    overlap: int = DEFAULT_OVERLAP
    device: str = DEFAULT_DEVICE
    overwrite: bool = False
    format: int = DEFAULT_FORMAT  # container format version (see FORMAT_VERSIONS)
    # continue the partial file a killed run of the same command left (format 3)
    resume: bool = False

    def validate(self) -> "CompressParams":
        """Model-independent checks; the quality's upper end is checked with the model."""
        _raise_first(tiling_problem(self.tile, self.overlap), target_bpp_problem(self.target_bpp),
                     bands_problem(self.bands), device_problem(self.device), format_problem(self.format))
        if self.format == 3:
            problem = latent_tiling_problem(self.tile, self.overlap)
            _raise_first(problem and problem + (": give --overlap 0, or --format 2 for overlapping tiles"
                                                if self.overlap else ""))
        elif self.resume:
            raise BadInput("--resume continues format-3 files only")
        return self


@dataclass
class EnhanceParams:
    """The decoder-side enhancer's settings (``enhance_raster`` and enhanced decoding)."""

    fidelity: float | None = None  # None: the enhancer's own default
    enhancer: str | None = None  # registry name or .safetensors file; None: DEFAULT_ENHANCER
    window: int = DEFAULT_ENHANCE_WINDOW
    overlap: int = DEFAULT_ENHANCE_OVERLAP
    device: str = DEFAULT_DEVICE

    def validate(self) -> "EnhanceParams":
        _raise_first(fidelity_problem(self.fidelity), tiling_problem(self.window, self.overlap),
                     device_problem(self.device))
        return self


@dataclass
class DecompressParams:
    """What ``decompress`` needs besides the paths: the region, the output, enhancement."""

    model: str | None = None  # None: the container's model
    device: str = DEFAULT_DEVICE
    window: tuple[int, int, int, int] | None = None  # col_off, row_off, width, height
    bbox: tuple[float, float, float, float] | None = None  # left, bottom, right, top in the raster's CRS
    # area of interest: a GeoJSON or WKT file (or the text itself); only the tiles that
    # intersect it are decoded, pixels outside it are written as nodata (or masked)
    aoi: str | None = None
    aoi_crs: str | None = None  # its CRS when the file names none (GeoJSON: EPSG:4326, WKT: the raster's)
    overwrite: bool = False
    cog: bool = False
    enhance: bool | str = "auto"  # True, False or "auto" (up to AUTO_ENHANCE_MAX_LAMBDA)
    enhancement: EnhanceParams = field(default_factory=EnhanceParams)

    def validate(self) -> "DecompressParams":
        if self.window is not None and self.bbox is not None:
            raise BadInput("give --window or --bbox, not both")
        if self.aoi is not None and (self.window is not None or self.bbox is not None):
            raise BadInput("give --aoi or a --window / --bbox, not both")
        if self.aoi is not None and not str(self.aoi).strip():
            raise BadInput("the area of interest is empty")
        if self.enhance not in ENHANCE_CHOICES:
            raise BadInput(f"enhance must be one of {ENHANCE_CHOICES}, got {self.enhance!r}")
        if self.enhance is False and self.enhancement.fidelity is not None:
            raise BadInput("give --no-enhance or --fidelity, not both")
        if self.bbox is not None:
            left, bottom, right, top = self.bbox
            if left >= right or bottom >= top:
                raise BadInput("bbox must be LEFT BOTTOM RIGHT TOP with left < right and bottom < top")
        self.enhancement.device = self.device
        _raise_first(device_problem(self.device))
        self.enhancement.validate()
        return self
