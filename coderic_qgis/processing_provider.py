"""Processing provider "Code-RSIC": compress, decompress and enhance as algorithms.

They run the same worker subprocess as the menu actions (Processing already runs them in
a background thread), so they work in batch mode, the model builder and ``processing.run``.
Their defaults and limits are core.options' (the dialogs use the same), their checks are
core's, and their jobs are built like the dialogs' (``jobs.CompressParams`` ...).
"""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBand,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
    QgsProcessingProvider,
)
from qgis.PyQt.QtGui import QIcon

from ._contract import errors, options
from .jobs import (
    PROCESSING_ENHANCE,
    CompressParams,
    DecompressParams,
    add_extras,
    check_container,
    compress_problems,
    decompress_problems,
    diff_job,
    enhance_job,
    enhancement,
    quality_map_job,
    sentence,
)
from .compare import features_geojson
from .layers import SUPPORTED_TYPES, crs_text, dtype_text, layer_file_path, layer_source, summary_text
from .settings import PluginSettings, current_worker
from .worker_client import WorkerCanceled, WorkerError, WorkerProcess

ICON = Path(__file__).resolve().parent / "icons" / "coderic.svg"
DEVICE_INDEX = options.DEVICES.index(options.DEFAULT_DEVICE)


def _device_param() -> QgsProcessingParameterEnum:
    return QgsProcessingParameterEnum("DEVICE", "Device", list(options.DEVICES), defaultValue=DEVICE_INDEX)


class _WorkerAlgorithm(QgsProcessingAlgorithm):
    """Shared plumbing: run one job in the worker, with progress and cancel from ``feedback``."""

    def createInstance(self):  # noqa: N802 - QGIS name
        return type(self)()

    def icon(self):
        return QIcon(str(ICON))

    def group(self):
        return "Codec"

    def groupId(self):  # noqa: N802 - QGIS name
        return "codec"

    def _device_and_model(self, parameters, context) -> tuple[str, str | None]:
        device = options.DEVICES[self.parameterAsEnum(parameters, "DEVICE", context)]
        model = (self.parameterAsString(parameters, "MODEL", context) or "").strip()
        return device, model or None

    def run_job(self, job: dict, feedback) -> dict:
        feedback = feedback or QgsProcessingFeedback()
        add_extras(job, PluginSettings.load().job_extras())
        try:
            worker = current_worker()
        except WorkerError as exc:
            raise QgsProcessingException(str(exc)) from None
        feedback.pushInfo(f"Code-RSIC worker: {worker.python} ({worker.found_by})")
        seen = set()

        def progress(p):
            if p.stage not in seen:
                seen.add(p.stage)
                feedback.pushInfo(f"{p.stage}: {p.total} step(s)")
            feedback.setProgress(100.0 * p.fraction)

        try:
            return WorkerProcess(worker).run(job, progress=progress, is_canceled=feedback.isCanceled)
        except WorkerCanceled:
            raise QgsProcessingException("canceled; no files were written") from None
        except WorkerError as exc:
            raise QgsProcessingException(str(exc)) from None


class CompressAlgorithm(_WorkerAlgorithm):
    def name(self):
        return "compress"

    def displayName(self):  # noqa: N802 - QGIS name
        return "Compress raster (Code-RSIC)"

    def shortHelpString(self):  # noqa: N802 - QGIS name
        levels = options.DEFAULT_MODEL_LEVELS
        return (f"Compresses a {dtype_text()} raster to a {options.CONTAINER_SUFFIX} container with learned ELIC "
                f"tiles. Quality {options.MIN_QUALITY:g} gives the smallest file, {levels} the best image with "
                f"{options.DEFAULT_MODEL} (1-{levels} are its trained levels; a weights file has its own); or give "
                "a target bits per pixel.")

    def initAlgorithm(self, config=None):  # noqa: N802 - QGIS name
        defaults = CompressParams()
        number = QgsProcessingParameterNumber
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Raster layer"))
        self.addParameter(QgsProcessingParameterBand(
            "BANDS", f"Bands (default: every band, up to {options.MAX_DEFAULT_BANDS})", None, "INPUT",
            optional=True, allowMultiple=True))
        # No maximum: it depends on the model (checked in checkParameterValues).
        self.addParameter(number("QUALITY", f"Quality ({options.MIN_QUALITY:g} = smallest .. "
                                            f"{options.DEFAULT_MODEL_LEVELS} = best with {options.DEFAULT_MODEL})",
                                 number.Double, defaults.quality, False, options.MIN_QUALITY))
        self.addParameter(number("TARGET_BPP", "Target bits per pixel (instead of quality)",
                                 number.Double, defaults.target_bpp, True, 0, options.MAX_TARGET_BPP))
        self.addParameter(number("TILE", "Tile size (px)", number.Integer, defaults.tile, False,
                                 options.MIN_TILE, options.MAX_TILE))
        self.addParameter(number("OVERLAP", "Tile overlap (px)", number.Integer, defaults.overlap, False,
                                 0, options.MAX_OVERLAP))
        self.addParameter(QgsProcessingParameterString(
            "MODEL", f"Model name or .safetensors file (default {options.DEFAULT_MODEL_CHOICE})", "",
            optional=True))
        self.addParameter(_device_param())
        self.addParameter(QgsProcessingParameterFileDestination(
            "OUTPUT", "Compressed file", f"Code-RSIC container (*{options.CONTAINER_SUFFIX})"))
        for name, text in (("BYTES", "File size (bytes)"), ("BPP", "Bits per pixel"),
                           ("RATIO", "Compression ratio (against the raw data)"), ("QUALITY_USED", "Quality used")):
            self.addOutput(QgsProcessingOutputNumber(name, text))

    def _params(self, parameters, context, layer=None) -> CompressParams:
        device, model = self._device_and_model(parameters, context)
        target = parameters.get("TARGET_BPP")
        return CompressParams(
            input=(layer_file_path(layer) or "") if layer is not None else "",
            bands=self.parameterAsInts(parameters, "BANDS", context) or None,
            quality=self.parameterAsDouble(parameters, "QUALITY", context),
            target_bpp=None if target in (None, "") else self.parameterAsDouble(parameters, "TARGET_BPP", context),
            tile=self.parameterAsInt(parameters, "TILE", context),
            overlap=self.parameterAsInt(parameters, "OVERLAP", context),
            model=model, device=device, overwrite=True, decode=False)

    def checkParameterValues(self, parameters, context):  # noqa: N802 - QGIS name
        ok, msg = super().checkParameterValues(parameters, context)
        if not ok:
            return ok, msg
        layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
        if layer is not None and layer_file_path(layer) is None:
            return False, layer_source(layer)[1]
        if layer is not None:
            bands = self.parameterAsInts(parameters, "BANDS", context) or []
            if any(layer.dataProvider().dataType(b) not in SUPPORTED_TYPES for b in bands):
                return False, f"Code-RSIC codes {dtype_text()} bands only"
        problems = compress_problems(self._params(parameters, context))
        return (False, problems[0]) if problems else (True, "")

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS name
        layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
        params = self._params(parameters, context, layer)
        if not params.input:
            raise QgsProcessingException("the input is not a local raster file")
        params.output = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        res = self.run_job(params.to_job(), feedback)
        feedback.pushInfo(summary_text(res, params.output))
        return {"OUTPUT": params.output, "BYTES": res["bytes"], "BPP": res["bpp"], "RATIO": res["ratio"],
                "QUALITY_USED": res.get("quality")}


class _RasterOutputAlgorithm(_WorkerAlgorithm):
    def _add_enhance_params(self, with_choice: bool) -> None:
        if with_choice:
            self.addParameter(QgsProcessingParameterBoolean("ENHANCE", "Enhance with the codebook prior",
                                                            PROCESSING_ENHANCE))
        lo, hi = options.FIDELITY_RANGE
        self.addParameter(QgsProcessingParameterNumber(
            "FIDELITY", f"Fidelity ({lo:g} = most texture, {hi:g} = most faithful; empty: the enhancer's default)",
            QgsProcessingParameterNumber.Double, None, True, lo, hi))

    def _enhance(self, parameters, context) -> bool:
        return self.parameterAsBool(parameters, "ENHANCE", context)

    def _fidelity(self, parameters, context) -> float | None:
        if parameters.get("FIDELITY") in (None, ""):
            return None
        return self.parameterAsDouble(parameters, "FIDELITY", context)


class DecompressAlgorithm(_RasterOutputAlgorithm):
    def name(self):
        return "decompress"

    def displayName(self):  # noqa: N802 - QGIS name
        return f"Decompress {options.CONTAINER_SUFFIX} (Code-RSIC)"

    def shortHelpString(self):  # noqa: N802 - QGIS name
        return ("Decodes a Code-RSIC container to a georeferenced GeoTIFF. With an extent, only the tiles that "
                "touch it are read and decoded. Enhance is off unless ticked, so a script or model gets the "
                "same pixels whatever the file's quality.")

    def initAlgorithm(self, config=None):  # noqa: N802 - QGIS name
        self.addParameter(QgsProcessingParameterFile("INPUT", "Compressed file",
                                                     extension=options.CONTAINER_SUFFIX.lstrip(".")))
        self.addParameter(QgsProcessingParameterExtent("EXTENT", "Only this extent", optional=True))
        self._add_enhance_params(True)
        self.addParameter(QgsProcessingParameterString("MODEL", "Model (default: the one the file was made with)",
                                                       "", optional=True))
        self.addParameter(_device_param())
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", "Decoded raster"))
        self.addOutput(QgsProcessingOutputNumber("TILES", "Tiles decoded"))

    def checkParameterValues(self, parameters, context):  # noqa: N802 - QGIS name
        ok, msg = super().checkParameterValues(parameters, context)
        if not ok:
            return ok, msg
        params = self._params(parameters, context)
        problems = check_container(params.container) + decompress_problems(params)
        return (False, problems[0]) if problems else (True, "")

    def _params(self, parameters, context) -> DecompressParams:
        device, model = self._device_and_model(parameters, context)
        enhance = self._enhance(parameters, context)
        params = DecompressParams(container=self.parameterAsFile(parameters, "INPUT", context),
                                  model=model, device=device, overwrite=True, enhance=enhance,
                                  enhancement=enhancement(enhance, self._fidelity(parameters, context)))
        if parameters.get("EXTENT") not in (None, ""):
            rect = self.parameterAsExtent(parameters, "EXTENT", context)
            if not rect.isEmpty():
                params.extent_only, params.extent = True, rect
                params.extent_crs = crs_text(self.parameterAsExtentCrs(parameters, "EXTENT", context))
        return params

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS name
        params = self._params(parameters, context)
        params.output = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        res = self.run_job(params.to_job(), feedback)
        return {"OUTPUT": params.output, "TILES": res.get("tiles")}


class EnhanceAlgorithm(_RasterOutputAlgorithm):
    def name(self):
        return "enhance"

    def displayName(self):  # noqa: N802 - QGIS name
        return "Enhance decoded raster (Code-RSIC)"

    def shortHelpString(self):  # noqa: N802 - QGIS name
        return ("Restores texture in a raster decoded by any codec (Code-RSIC, JPEG, WebP...) with the "
                "codebook prior; keeps its georeferencing. Costs no bits.")

    def initAlgorithm(self, config=None):  # noqa: N802 - QGIS name
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Decoded raster"))
        self._add_enhance_params(False)
        self.addParameter(QgsProcessingParameterString(
            "MODEL", f"Enhancer weights: name or .safetensors file (default {options.DEFAULT_ENHANCER})", "",
            optional=True))
        self.addParameter(_device_param())
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", "Enhanced raster"))

    def _params(self, parameters, context) -> options.EnhanceParams:
        device, model = self._device_and_model(parameters, context)
        return options.EnhanceParams(fidelity=self._fidelity(parameters, context), enhancer=model, device=device)

    def checkParameterValues(self, parameters, context):  # noqa: N802 - QGIS name
        ok, msg = super().checkParameterValues(parameters, context)
        if not ok:
            return ok, msg
        try:
            self._params(parameters, context).validate()
        except errors.CodecError as exc:
            return False, sentence(str(exc))
        return True, ""

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS name
        layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
        src = layer_file_path(layer) if layer is not None else None
        if not src:
            raise QgsProcessingException("the input is not a local raster file")
        output = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        self.run_job(enhance_job(src, output, self._params(parameters, context), overwrite=True), feedback)
        return {"OUTPUT": output}


class DecodeAreaAlgorithm(DecompressAlgorithm):
    def name(self):
        return "decompress_area"

    def displayName(self):  # noqa: N802 - QGIS name
        return f"Decode area of interest from {options.CONTAINER_SUFFIX} (Code-RSIC)"

    def shortHelpString(self):  # noqa: N802 - QGIS name
        return ("Decodes only the tiles of a Code-RSIC container that intersect the polygons of a layer (tick "
                "'Selected features only' for a selection), in any CRS. Pixels outside the polygons are nodata "
                "(or masked); inside they equal a full decode. Georeferencing is kept.")

    def initAlgorithm(self, config=None):  # noqa: N802 - QGIS name
        self.addParameter(QgsProcessingParameterFile("INPUT", "Compressed file",
                                                     extension=options.CONTAINER_SUFFIX.lstrip(".")))
        self.addParameter(QgsProcessingParameterFeatureSource("AREA", "Area of interest (polygons)",
                                                              [QgsProcessing.TypeVectorPolygon]))
        self._add_enhance_params(True)
        self.addParameter(QgsProcessingParameterString("MODEL", "Model (default: the one the file was made with)",
                                                       "", optional=True))
        self.addParameter(_device_param())
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", "Decoded area"))
        self.addOutput(QgsProcessingOutputNumber("TILES", "Tiles decoded"))

    def _params(self, parameters, context) -> DecompressParams:
        params = super()._params(parameters, context)
        source = self.parameterAsSource(parameters, "AREA", context)
        if source is not None:
            params.aoi = features_geojson(source.getFeatures(), source.sourceCrs())
        return params

    def checkParameterValues(self, parameters, context):  # noqa: N802 - QGIS name
        ok, msg = super().checkParameterValues(parameters, context)
        if ok and '"geometry"' not in (self._params(parameters, context).aoi or ""):
            return False, "The area of interest has no polygons"
        return ok, msg


class DifferenceAlgorithm(_WorkerAlgorithm):
    def name(self):
        return "difference"

    def displayName(self):  # noqa: N802 - QGIS name
        return "Difference raster (Code-RSIC before/after)"

    def group(self):
        return "Before/after"

    def groupId(self):  # noqa: N802 - QGIS name
        return "beforeafter"

    def shortHelpString(self):  # noqa: N802 - QGIS name
        return ("Per-pixel absolute difference of two rasters on the same pixel grid (the decoded one may be a "
                "window of the original), averaged over the compared bands, as a georeferenced float32 GeoTIFF "
                "(nodata where either raster has none). Computed window by window.")

    def initAlgorithm(self, config=None):  # noqa: N802 - QGIS name
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Original raster"))
        self.addParameter(QgsProcessingParameterRasterLayer("OTHER", "Decoded raster"))
        self.addParameter(QgsProcessingParameterBand("BANDS", "Bands of the original the decoded raster holds "
                                                     "(default: all, or the RGB / first three)", None, "INPUT",
                                                     optional=True, allowMultiple=True))
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", "Difference"))
        self.addOutput(QgsProcessingOutputNumber("MEAN_ABS_DIFF", "Mean absolute difference"))
        self.addOutput(QgsProcessingOutputNumber("MAX_ABS_DIFF", "Largest absolute difference"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS name
        paths = [layer_file_path(self.parameterAsRasterLayer(parameters, key, context)) for key in ("INPUT", "OTHER")]
        if not all(paths):
            raise QgsProcessingException("both rasters must be local raster files")
        output = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        bands = self.parameterAsInts(parameters, "BANDS", context) or None
        res = self.run_job(diff_job(paths[0], paths[1], output, bands, overwrite=True), feedback)
        return {"OUTPUT": output, "MEAN_ABS_DIFF": res.get("mean_abs_diff"), "MAX_ABS_DIFF": res.get("max_abs_diff")}


class QualityMapAlgorithm(DifferenceAlgorithm):
    def name(self):
        return "quality_map"

    def displayName(self):  # noqa: N802 - QGIS name
        return "Tile quality map (Code-RSIC before/after)"

    def shortHelpString(self):  # noqa: N802 - QGIS name
        return ("One polygon per coded tile of a container (its footprint in the raster's CRS) with its bytes, "
                "bits per pixel and the PSNR of the decoded raster against the original over the footprint, and "
                "LPIPS where the worker's metric weights are set up. GeoPackage or GeoJSON.")

    def initAlgorithm(self, config=None):  # noqa: N802 - QGIS name
        self.addParameter(QgsProcessingParameterFile("CONTAINER", "Compressed file",
                                                     extension=options.CONTAINER_SUFFIX.lstrip(".")))
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Original raster (the one compressed)"))
        self.addParameter(QgsProcessingParameterRasterLayer("OTHER", "Decoded raster (all of it or a window)"))
        self.addParameter(QgsProcessingParameterVectorDestination("OUTPUT", "Tile quality",
                                                                  QgsProcessing.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputNumber("PSNR_MIN", "Lowest tile PSNR (dB)"))
        self.addOutput(QgsProcessingOutputNumber("PSNR_MAX", "Highest tile PSNR (dB)"))

    def checkParameterValues(self, parameters, context):  # noqa: N802 - QGIS name
        ok, msg = super().checkParameterValues(parameters, context)
        if not ok:
            return ok, msg
        problems = check_container(self.parameterAsFile(parameters, "CONTAINER", context))
        return (False, problems[0]) if problems else (True, "")

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS name
        paths = [layer_file_path(self.parameterAsRasterLayer(parameters, key, context)) for key in ("INPUT", "OTHER")]
        if not all(paths):
            raise QgsProcessingException("both rasters must be local raster files")
        output = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        container = self.parameterAsFile(parameters, "CONTAINER", context)
        res = self.run_job(quality_map_job(container, paths[0], paths[1], output, overwrite=True), feedback)
        for name, why in (res.get("missing") or {}).items():
            feedback.pushInfo(f"no {name}: {why}")
        return {"OUTPUT": output, "PSNR_MIN": res.get("psnr_min"), "PSNR_MAX": res.get("psnr_max")}


class CodeRsicProvider(QgsProcessingProvider):
    def id(self):
        return "coderic"

    def name(self):
        return "Code-RSIC"

    def longName(self):  # noqa: N802 - QGIS name
        return "Code-RSIC learned raster compression"

    def icon(self):
        return QIcon(str(ICON))

    def loadAlgorithms(self):  # noqa: N802 - QGIS name
        for alg in (CompressAlgorithm(), DecompressAlgorithm(), EnhanceAlgorithm(), DecodeAreaAlgorithm(),
                    DifferenceAlgorithm(), QualityMapAlgorithm()):
            self.addAlgorithm(alg)

    def supportedOutputRasterLayerExtensions(self):  # noqa: N802 - QGIS name
        return ["tif"]

    def supportedOutputVectorLayerExtensions(self):  # noqa: N802 - QGIS name
        return ["gpkg", "geojson"]

    def defaultVectorFileExtension(self, hasGeometry=True):  # noqa: N802 - QGIS name
        return "gpkg"
