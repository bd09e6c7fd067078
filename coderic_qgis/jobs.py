"""What the plugin asks the worker to do, with the codec's own defaults, limits and checks.

The dialogs and the Processing algorithms describe a job with ``CompressParams`` /
``DecompressParams`` below: subclasses of the contract's dataclasses
(``core.options``, loaded through ``coderic_qgis._contract``) that add what the plugin does
around the codec (which layer, which files, decode again or not). So every default is
core's, the checks are core's ``*_problem`` functions, and a worker job is built from
the contract's field names: a parameter added to ``core.options`` reaches the worker
without being named here.

Neither QGIS nor torch is imported here (the tests read it without QGIS).
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field, fields
from pathlib import Path

from ._contract import errors, options

DECODE_DEFAULTS = options.DecompressParams()
_AUTO = next(c for c in options.ENHANCE_CHOICES if isinstance(c, str))  # core's rule decides

# The dialogs' enhancement choice (label, value), preset to core's default.
ENHANCE_CHOICES = (
    ("Automatic: at the low qualities the enhancer serves", _AUTO),
    ("Always", True),
    ("Off (plain decoding)", False),
)
ENHANCE_VALUES = tuple(value for _, value in ENHANCE_CHOICES)
DEFAULT_ENHANCE_INDEX = ENHANCE_VALUES.index(DECODE_DEFAULTS.enhance)
# The Processing decompress algorithm's explicit yes/no, off unless asked: scripts and
# models get the same pixels whatever the file's quality (a deliberate difference from the
# dialogs and the CLI, whose "auto" depends on it; see docs/qgis.md).
PROCESSING_ENHANCE = False

# A worker job is one flat JSON object. The EnhanceParams fields it carries by their own
# names; the enhancer's window and overlap (no plugin choice) keep the worker's defaults,
# and in a decoding job the DecompressParams fields (device) come first.
ENHANCE_JOB_FIELDS = ("fidelity", "enhancer", "device")


def sentence(problem: str) -> str:
    """A contract check's message as a sentence for a dialog."""
    return problem[:1].upper() + problem[1:]


def contract_fields(cls, params) -> dict:
    """``params``' values of the fields of the contract dataclass ``cls``, by name."""
    return {f.name: getattr(params, f.name) for f in fields(cls)}


def decode_fields(params: options.DecompressParams) -> dict:
    """A decoding's job fields: DecompressParams' own, then its enhancement's."""
    job = {name: value for name, value in contract_fields(options.DecompressParams, params).items()
           if not isinstance(value, options.EnhanceParams)}
    for name in ENHANCE_JOB_FIELDS:
        job.setdefault(name, getattr(params.enhancement, name))
    return job


def enhancement(enhance: bool | str, fidelity: float | None = None, enhancer: str | None = None
                ) -> options.EnhanceParams:
    """The enhancer's settings for an enhancement choice (no fidelity when it is off: the
    fidelity widget keeps its value while disabled)."""
    return options.EnhanceParams(fidelity=None if enhance is False else fidelity, enhancer=enhancer or None)


def enhance_job(input: str, output: str, params: options.EnhanceParams, overwrite: bool = False) -> dict:
    return {"action": "enhance", "input": input, "output": output, "overwrite": overwrite,
            **{name: getattr(params, name) for name in ENHANCE_JOB_FIELDS}}


def add_extras(job: dict, extras: dict) -> dict:
    """Fill the job's unset fields from the plugin settings (threads, enhancer weights)."""
    for key, value in extras.items():
        if job.get(key) is None:
            job[key] = value
    return job


def _sentences(*problems: str | None) -> list[str]:
    return [sentence(p) for p in problems if p]


def _contract_problem(params, already: list[str]) -> list[str]:
    """What the contract's own ``validate()`` says, when no listed check said it already
    (so a check added to core.options shows up in the dialogs too)."""
    try:
        params.validate()
    except errors.CodecError as exc:
        text = sentence(str(exc))
        return [] if text in already else [text]
    return []


# ---------------------------------------------------------------- models and files

def model_levels(model: str) -> tuple[str, int] | None:
    """(name, rate levels) from a Code-RSIC .safetensors file's metadata, read without torch."""
    try:
        with open(model, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > 10_000_000:  # not a safetensors header
                return None
            meta = json.loads(f.read(n)).get("__metadata__", {})
        spec = json.loads(meta["crsic_model_spec"])
        return spec["name"], len(spec["lambdas"])
    except (OSError, ValueError, KeyError, struct.error, TypeError):
        return None


def looks_like_path(model: str) -> bool:
    return model.endswith(".safetensors") or os.sep in model or "/" in model


def model_quality_levels(model: str | None) -> tuple[str, int | None]:
    """(model name, its rate levels or None when not known here) of a model choice."""
    if not model or model == options.DEFAULT_MODEL:
        return options.DEFAULT_MODEL, options.DEFAULT_MODEL_LEVELS
    if looks_like_path(model):
        info = model_levels(model)
        if info is not None:
            return info
    return model, None


def check_model(model: str | None, quality: float | None = None) -> list[str]:
    """A model choice (a registry name or a weights file) and, given, the quality for it."""
    if model and looks_like_path(model):
        if not os.path.isfile(model):
            return [f"Model file not found: {model}"]
        if model_levels(model) is None:
            return [f"{Path(model).name} is not a Code-RSIC weights file"]
    name, levels = model_quality_levels(model)
    if quality is None or levels is None:
        return []
    problem = options.quality_problem(quality, levels)
    return [f"{sentence(problem)} (model {name})"] if problem else []


def check_output(path: str, what: str, overwrite: bool, others: dict[str, str]) -> list[str]:
    if not path:
        return [f"Choose a {what}"]
    p = Path(path)
    if not p.parent.is_dir():
        return [f"The folder of the {what} does not exist: {p.parent}"]
    if not os.access(p.parent, os.W_OK):
        return [f"The folder of the {what} is not writable: {p.parent}"]
    for other_what, other in others.items():
        if other and os.path.abspath(other) == os.path.abspath(path):
            return [f"The {what} must differ from the {other_what}"]
    if p.exists() and not overwrite:
        return [f"The {what} already exists: {p.name} (tick 'Overwrite existing files' to replace it)"]
    return []


def check_container(path: str) -> list[str]:
    if not path:
        return [f"Choose a {options.CONTAINER_SUFFIX} file to decode"]
    if not os.path.isfile(path):
        return [f"File not found: {path}"]
    try:
        with open(path, "rb") as f:
            head = f.read(len(options.CONTAINER_MAGIC))
    except OSError as exc:
        return [f"Cannot read {path}: {exc.strerror}"]
    if head != options.CONTAINER_MAGIC:
        return [f"{Path(path).name} is not a Code-RSIC container"]
    return []


def default_decoded_path(container: str, extent_only: bool, area: bool = False) -> str:
    base = Path(container).with_suffix("")
    if not extent_only and not area:
        return f"{base}{options.DECODED_SUFFIX}"
    kind, n = ("area" if area else "extent"), 1
    while Path(f"{base}.{kind}-{n}.tif").exists():
        n += 1
    return f"{base}.{kind}-{n}.tif"


# ---------------------------------------------------------------- before/after comparisons

def diff_job(original: str, decoded: str, output: str, bands: list[int] | None = None,
             overwrite: bool = False) -> dict:
    """Per-pixel |original - decoded| (mean over the bands) as a GeoTIFF; ``bands``: the
    original's bands the decoded raster holds, in order."""
    return {"action": "diff", "input": original, "other": decoded, "output": output, "bands": bands,
            "overwrite": overwrite}


def quality_map_job(container: str, source: str, decoded: str, output: str, overwrite: bool = False) -> dict:
    """Per-tile footprints with bytes, bpp, PSNR (and LPIPS where set up) as GeoPackage / GeoJSON."""
    return {"action": "quality_map", "input": container, "source": source, "decoded": decoded, "output": output,
            "overwrite": overwrite}


# ---------------------------------------------------------------- compress

@dataclass
class CompressParams(options.CompressParams):
    """Compress a layer's file: the codec's parameters (``core.options.CompressParams``:
    model, quality or target_bpp, bands, tile, overlap, device, overwrite...) plus the
    plugin's files and whether to decode the result again for a before/after comparison."""

    layer_id: str = ""
    input: str = ""
    output: str = ""
    decode: bool = True
    decoded_output: str = ""
    enhance: bool | str = DECODE_DEFAULTS.enhance  # of the decoded comparison
    enhancement: options.EnhanceParams = field(default_factory=options.EnhanceParams)

    def codec_params(self) -> options.CompressParams:
        return options.CompressParams(**contract_fields(options.CompressParams, self))

    def decoding(self) -> options.DecompressParams:
        """How the comparison is decoded (the compress job's model, device and overwrite)."""
        return options.DecompressParams(model=self.model, device=self.device, overwrite=self.overwrite,
                                        enhance=self.enhance, enhancement=self.enhancement)

    def to_job(self, threads: int = 0) -> dict:
        job = {"action": "compress", "input": self.input, "output": self.output, "threads": threads,
               **contract_fields(options.CompressParams, self)}
        if self.decode:
            job["decode_to"] = self.decoded_output
            for name, value in decode_fields(self.decoding()).items():
                job.setdefault(name, value)
        return job


def compress_problems(p: CompressParams) -> list[str]:
    """The codec parameters' problems as sentences (the layer and files are checked by the caller)."""
    found = _sentences(options.tiling_problem(p.tile, p.overlap), options.bands_problem(p.bands),
                           options.target_bpp_problem(p.target_bpp), options.device_problem(p.device))
    found += check_model(p.model, None if p.target_bpp is not None else p.quality)
    if p.decode and p.enhance is not False:
        found += _sentences(options.fidelity_problem(p.enhancement.fidelity))
    return found + _contract_problem(p.codec_params(), found)


# ---------------------------------------------------------------- decompress

@dataclass
class DecompressParams(options.DecompressParams):
    """Decode a container: the codec's parameters (``core.options.DecompressParams``: model,
    device, enhance and enhancement...) plus the files and, for "decode current map
    extent", the extent in its own CRS (the worker places it on the raster)."""

    container: str = ""
    output: str = ""
    extent_only: bool = False
    extent: object = None  # a QgsRectangle (xMinimum() ... yMaximum()) in extent_crs
    extent_crs: str = ""  # authid or WKT of the extent's CRS
    aoi_label: str = ""  # what the area of interest (``aoi``, GeoJSON text) is, for messages

    def codec_params(self) -> options.DecompressParams:
        return options.DecompressParams(**contract_fields(options.DecompressParams, self))

    def to_job(self, threads: int = 0) -> dict:
        job = {"action": "decompress", "input": self.container, "output": self.output, "threads": threads,
               **decode_fields(self)}
        if self.extent_only and self.extent is not None:
            e = self.extent
            job["bbox"] = [e.xMinimum(), e.yMinimum(), e.xMaximum(), e.yMaximum()]
            if self.extent_crs:
                job["bbox_crs"] = self.extent_crs
        return job


def decompress_problems(p: DecompressParams) -> list[str]:
    found = check_model(p.model)
    found += _sentences(options.device_problem(p.device))
    if p.enhance is not False:
        found += _sentences(options.fidelity_problem(p.enhancement.fidelity))
    return found + _contract_problem(p.codec_params(), found)
