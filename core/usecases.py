"""The use cases, each written once, for every front end.

What the command line, the QGIS worker (and through it the plugin's dialogs and
Processing) and batch do with a raster or a container:

    compress      raster -> container
    decompress    container -> GeoTIFF: plain or enhanced, all of it, a window, a bbox (in
                  any CRS) or an area of interest
    roundtrip     compress, decode, PSNR against the source, optionally a quality map
    info          a container's header (and its tile map)
    tile_map      a container's tile footprints with bytes and bpp
    quality_map   the same with each tile's PSNR (and metrics passed in, e.g. LPIPS)
    diff          per-pixel difference raster of two rasters
    enhance       any decoded raster through the enhancer
    psnr          PSNR of a decoded raster against its source

A front end builds the parameters (``core.options``), calls one of these and presents the
result; none orchestrates on its own. Progress is one callback for every use case,
``progress(stage, done, total)``, with the stages "compress", "decode", "enhance", "psnr",
"quality", "diff". Heavy modules are imported when a use case runs, so a front end starts
fast.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Callable, Mapping

from .errors import BadInput, WeightsUnavailable
from .options import CONTAINER_SUFFIX, CompressParams, DecompressParams, EnhanceParams

Progress = Callable[[str, int, int], None]  # (stage, done, total)


def _stage(progress: Progress | None, stage: str):
    """``progress(done, total)`` of one stage, as the library's functions take it."""
    return (lambda done, total: progress(stage, done, total)) if progress else None


def _serial_map():
    from .codec.jobs import serial_map

    return serial_map


def _decoding_mapper():
    from .codec.jobs import decoding_mapper

    return decoding_mapper()


def auto_enhance_quality(model: str | None = None, enhancer: str | None = None) -> float | None:
    """The highest quality of the registered ``model`` (default: the default model) that
    ``decompress`` enhances unless told otherwise (None: every quality)."""
    from .models.registry import ENHANCERS, REGISTRY
    from .options import DEFAULT_ENHANCER, DEFAULT_MODEL

    return ENHANCERS[enhancer or DEFAULT_ENHANCER].max_default_quality(REGISTRY[model or DEFAULT_MODEL].lambdas)


# ---------------------------------------------------------------- codec

def compress(src: str | Path, dst: str | Path, params: CompressParams, *, progress: Progress | None = None,
             mapper=None) -> dict:
    """Compress ``src`` into the container ``dst``."""
    from .codec.compress import compress_raster

    result = compress_raster(src, dst, params.validate(), progress=_stage(progress, "compress"),
                             mapper=mapper or _serial_map())
    return dict(result, input=str(src))  # compress_raster measured input_bytes (archives and VRT sources too)


def bbox_in_raster_crs(container: str | Path, bbox, bbox_crs: str | None):
    """A bbox given in another CRS (e.g. a QGIS map canvas) -> the raster's CRS."""
    if not bbox_crs:
        return bbox
    from rasterio.crs import CRS
    from rasterio.errors import CRSError
    from rasterio.warp import transform_bounds

    from .format.container import ContainerReader

    with ContainerReader(container) as reader:
        raster_crs = reader.header.crs
    if not raster_crs:
        raise BadInput(f"{container} has no CRS, so a map extent cannot be placed on it: give a pixel window")
    try:
        src, dst = CRS.from_user_input(bbox_crs), CRS.from_user_input(raster_crs)
    except CRSError as exc:
        raise BadInput(f"unknown CRS for the extent: {exc}") from None
    if src == dst:
        return tuple(bbox)
    return tuple(transform_bounds(src, dst, *bbox, densify_pts=21))


def require_enhancer(enhancer: str | None) -> None:
    """Fail (one line) when enhancement is asked for and cannot run."""
    from .enhance import enhancement_status

    reason = enhancement_status(enhancer)
    if reason is not None:
        raise WeightsUnavailable(f"enhancement is unavailable: {reason}; turn enhancement off or install the weights")


def decompress(src: str | Path, dst: str | Path, params: DecompressParams, *, bbox_crs: str | None = None,
               progress: Progress | None = None, mapper=None) -> dict:
    """Decode the container ``src`` (or the window, bbox or area of interest ``params`` name)
    to the GeoTIFF ``dst``, enhanced when ``params.enhance`` is True, or "auto" at the
    qualities the enhancer serves. Enhancement asked for (True) that cannot run is an
    error; "auto" falls back to plain decoding and says why in ``"enhancement"``."""
    from .codec.decompress import container_info
    from .enhance import decompress_enhanced

    params = params.validate()
    if params.bbox and bbox_crs:
        params = replace(params, bbox=bbox_in_raster_crs(src, params.bbox, bbox_crs))
    if params.enhance is True:
        require_enhancer(params.enhancement.enhancer)  # before the long part
    result = decompress_enhanced(src, dst, params, progress=progress, mapper=mapper or _decoding_mapper())
    if progress and not result["enhanced"]:
        progress("enhance", 1, 1)  # the stage is over: nothing to enhance
    info = container_info(src)
    result.update(input=str(src), container_bytes=info["file_bytes"], raw_bytes=info["raw_bytes"], bpp=info["bpp"],
                  ratio=info["ratio"],
                  bands=info["bands"], source_name=info.get("source_name"))
    return result


def psnr(source: str | Path, decoded: str | Path, bands: list[int] | None = None) -> dict:
    """PSNR of ``decoded`` against the bands ``bands`` of ``source`` (``core.compare.psnr``)."""
    from .compare.quality import raster_psnr

    return {"psnr": raster_psnr(source, decoded, bands=bands)}


def roundtrip(src: str | Path, params: CompressParams, *, container: str | Path | None = None,
              decoded: str | Path | None = None, decode: DecompressParams | None = None,
              quality_map: str | Path | None = None, metrics: Mapping | None = None,
              progress: Progress | None = None, mapper=None) -> dict:
    """Compress ``src``, decode it again and measure the PSNR against ``src`` (and, with
    ``quality_map``, each tile's PSNR and ``metrics``). ``container`` / ``decoded``: where
    to keep them (default: temporary files); ``decode``: how to decode (default: plainly,
    the whole raster, with the compression's model, device and ``overwrite``)."""
    from .format.output import check_output

    decode = decode or DecompressParams(enhance=False)
    decode = replace(decode, model=params.model, device=params.device, window=None, bbox=None, aoi=None,
                     overwrite=params.overwrite)
    for out in filter(None, (decoded, quality_map)):
        check_output(out, params.overwrite)  # before the long part
    if quality_map:
        from .format.vector import vector_format

        vector_format(quality_map)
    with tempfile.TemporaryDirectory() as tmp:
        kept_container = container is not None
        container = container or Path(tmp) / (Path(src).stem + CONTAINER_SUFFIX)
        decoded_path = decoded or Path(tmp) / "decoded.tif"
        c = compress(src, container, params, progress=progress, mapper=mapper)
        d = decompress(container, decoded_path, decode, progress=progress, mapper=mapper)
        if progress:
            progress("psnr", 0, 1)
        measured = psnr(src, decoded_path, d["bands"])["psnr"]
        if progress:
            progress("psnr", 1, 1)
        q = None
        if quality_map:
            q = _quality_map(container, src, decoded_path, quality_map, metrics or {}, params.overwrite, progress)
    result = dict(c, psnr=measured, bands=d["bands"], decode=d, encode_seconds=c["seconds"],
                  decode_seconds=d["seconds"], decoded=str(decoded) if decoded else None,
                  output=str(container) if kept_container else None)
    if q is not None:
        result["quality_map"] = q
    return result


# ---------------------------------------------------------------- containers and comparisons

def info(container: str | Path, *, tiles: str | Path | None = None, overwrite: bool = False) -> dict:
    """A container's header with its size, bpp and ratio; with ``tiles``, its tile map too."""
    from .codec.decompress import container_info

    result = container_info(container)
    if tiles:
        result["tile_map"] = tile_map(container, tiles, overwrite=overwrite)
    return result


def tile_map(container: str | Path, output: str | Path, *, overwrite: bool = False) -> dict:
    """The container's tile footprints with bytes and bpp (.geojson / .gpkg)."""
    from .codec.tile_map import write_tile_map

    return write_tile_map(container, output, overwrite)


def _quality_map(container, source, decoded, output, metrics, overwrite, progress) -> dict:
    from .codec.tile_map import write_quality_map

    return write_quality_map(container, source, decoded, output, metrics, overwrite, _stage(progress, "quality"))


def quality_map(container: str | Path, source: str | Path, decoded: str | Path, output: str | Path, *,
                metrics: Mapping | None = None, overwrite: bool = False, progress: Progress | None = None) -> dict:
    """The tile map with each tile's PSNR of ``decoded`` against ``source`` (and ``metrics``)."""
    return _quality_map(container, source, decoded, output, metrics or {}, overwrite, progress)


def diff(first: str | Path, second: str | Path, output: str | Path, *, bands: list[int] | None = None,
         overwrite: bool = False, progress: Progress | None = None) -> dict:
    """Per-pixel |first - second| (mean over the bands) as a float32 GeoTIFF."""
    from .compare.difference import difference_raster

    return difference_raster(first, second, output, bands, overwrite, _stage(progress, "diff"))


def enhance(src: str | Path, dst: str | Path, params: EnhanceParams, *, overwrite: bool = False, cog: bool = False,
            progress: Progress | None = None) -> dict:
    """Any decoded raster (e.g. a JPEG-compressed GeoTIFF) through the enhancer."""
    from .enhance import enhance_raster

    params = params.validate()
    require_enhancer(params.enhancer)
    result = enhance_raster(src, dst, params, overwrite=overwrite, cog=cog, progress=_stage(progress, "enhance"))
    result.setdefault("output", str(dst))
    return result
