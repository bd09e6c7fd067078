"""Processing provider "Code-RSIC": compress, decompress and enhance as algorithms.

They run the same worker subprocess as the menu actions (Processing already runs them in
a background thread), so they work in batch mode, the model builder and ``processing.run``.
"""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBand,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingProvider,
)
from qgis.PyQt.QtGui import QIcon

from .dialogs import DEVICES, check_container, check_model
from .layers import SUPPORTED_TYPES, layer_file_path
from .settings import PluginSettings, current_worker
from .worker_client import WorkerCanceled, WorkerError, WorkerProcess

ICON = Path(__file__).resolve().parent / "icons" / "coderic.svg"


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

    def _device_and_model(self, parameters, context) -> tuple[str, str]:
        device = DEVICES[self.parameterAsEnum(parameters, "DEVICE", context)]
        model = (self.parameterAsString(parameters, "MODEL", context) or "").strip()
        return device, model

    def run_job(self, job: dict, feedback) -> dict:
        feedback = feedback or QgsProcessingFeedback()
        for key, value in PluginSettings.load().job_extras().items():
            job.setdefault(key, value)
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
        return ("Compresses an 8- or 16-bit raster to a .crsic container with learned ELIC tiles. "
                "Quality 0 gives the smallest file, 6 the best image (1-6 are the trained levels); or give a target bits per pixel.")

    def initAlgorithm(self, config=None):  # noqa: N802 - QGIS name
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Raster layer"))
        self.addParameter(QgsProcessingParameterBand("BANDS", "Bands (default: the RGB bands, else the first three)",
                                                     None, "INPUT", optional=True, allowMultiple=True))
        self.addParameter(QgsProcessingParameterNumber("QUALITY", "Quality (0 = smallest .. 6 = best)",
                                                       QgsProcessingParameterNumber.Double, 3.0, False, 0.0, 6.0))
        self.addParameter(QgsProcessingParameterNumber("TARGET_BPP", "Target bits per pixel (instead of quality)",
                                                       QgsProcessingParameterNumber.Double, None, True, 0.0))
        self.addParameter(QgsProcessingParameterNumber("TILE", "Tile size (px)",
                                                       QgsProcessingParameterNumber.Integer, 512, False, 64, 8192))
        self.addParameter(QgsProcessingParameterNumber("OVERLAP", "Tile overlap (px)",
                                                       QgsProcessingParameterNumber.Integer, 32, False, 0, 4096))
        self.addParameter(QgsProcessingParameterString("MODEL", "Model name or .safetensors file (default elic-lite)",
                                                       "", optional=True))
        self.addParameter(QgsProcessingParameterEnum("DEVICE", "Device", list(DEVICES), defaultValue=0))
        self.addParameter(QgsProcessingParameterFileDestination("OUTPUT", "Compressed file",
                                                                "Code-RSIC container (*.crsic)"))
        for name, text in (("BYTES", "File size (bytes)"), ("BPP", "Bits per pixel"),
                           ("RATIO", "Compression ratio"), ("QUALITY_USED", "Quality used")):
            self.addOutput(QgsProcessingOutputNumber(name, text))

    def checkParameterValues(self, parameters, context):  # noqa: N802 - QGIS name
        ok, msg = super().checkParameterValues(parameters, context)
        if not ok:
            return ok, msg
        layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
        if layer is not None and layer_file_path(layer) is None:
            return False, f"Layer '{layer.name()}' is not a local raster file: save it as a GeoTIFF first"
        if layer is not None:
            bands = self.parameterAsInts(parameters, "BANDS", context) or []
            if any(layer.dataProvider().dataType(b) not in SUPPORTED_TYPES for b in bands):
                return False, "Code-RSIC codes 8-bit and 16-bit unsigned bands only"
        tile = self.parameterAsInt(parameters, "TILE", context)
        overlap = self.parameterAsInt(parameters, "OVERLAP", context)
        if overlap > tile // 2:
            return False, f"Overlap must be between 0 and half the tile size ({tile // 2} px)"
        target = parameters.get("TARGET_BPP")
        if target not in (None, "") and self.parameterAsDouble(parameters, "TARGET_BPP", context) <= 0:
            return False, "Target bits per pixel must be above 0"
        problems = check_model((self.parameterAsString(parameters, "MODEL", context) or "").strip(),
                               None if target not in (None, "") else
                               self.parameterAsDouble(parameters, "QUALITY", context))
        return (False, problems[0]) if problems else (True, "")

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS name
        layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
        src = layer_file_path(layer) if layer is not None else None
        if not src:
            raise QgsProcessingException("the input is not a local raster file")
        output = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        device, model = self._device_and_model(parameters, context)
        target = parameters.get("TARGET_BPP")
        job = {"action": "compress", "input": src, "output": output,
               "bands": self.parameterAsInts(parameters, "BANDS", context) or None,
               "quality": self.parameterAsDouble(parameters, "QUALITY", context),
               "target_bpp": None if target in (None, "") else self.parameterAsDouble(parameters, "TARGET_BPP", context),
               "tile": self.parameterAsInt(parameters, "TILE", context),
               "overlap": self.parameterAsInt(parameters, "OVERLAP", context),
               "device": device, "overwrite": True}
        if model:
            job["model"] = model
        res = self.run_job(job, feedback)
        feedback.pushInfo(f"{res['bytes']} bytes, {res['bpp']:.4f} bpp, ratio {res['ratio']:.1f}:1")
        return {"OUTPUT": output, "BYTES": res["bytes"], "BPP": res["bpp"], "RATIO": res["ratio"],
                "QUALITY_USED": res.get("quality")}


class _RasterOutputAlgorithm(_WorkerAlgorithm):
    def _add_enhance_params(self, optional_enhance: bool) -> None:
        if optional_enhance:
            self.addParameter(QgsProcessingParameterBoolean("ENHANCE", "Enhance with the codebook prior", False))
        self.addParameter(QgsProcessingParameterNumber(
            "FIDELITY", "Fidelity (0 = most texture, 1 = most faithful; empty: the enhancer's default)",
            QgsProcessingParameterNumber.Double, None, True, 0.0, 1.0))


    def _fidelity(self, parameters, context) -> float | None:
        if parameters.get("FIDELITY") in (None, ""):
            return None
        return self.parameterAsDouble(parameters, "FIDELITY", context)


class DecompressAlgorithm(_RasterOutputAlgorithm):
    def name(self):
        return "decompress"

    def displayName(self):  # noqa: N802 - QGIS name
        return "Decompress .crsic (Code-RSIC)"

    def shortHelpString(self):  # noqa: N802 - QGIS name
        return ("Decodes a Code-RSIC container to a georeferenced GeoTIFF. With an extent, only the tiles that "
                "touch it are read and decoded.")

    def initAlgorithm(self, config=None):  # noqa: N802 - QGIS name
        self.addParameter(QgsProcessingParameterFile("INPUT", "Compressed file", extension="crsic"))
        self.addParameter(QgsProcessingParameterExtent("EXTENT", "Only this extent", optional=True))
        self._add_enhance_params(True)
        self.addParameter(QgsProcessingParameterString("MODEL", "Model (default: the one the file was made with)",
                                                       "", optional=True))
        self.addParameter(QgsProcessingParameterEnum("DEVICE", "Device", list(DEVICES), defaultValue=0))
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", "Decoded raster"))
        self.addOutput(QgsProcessingOutputNumber("TILES", "Tiles decoded"))

    def checkParameterValues(self, parameters, context):  # noqa: N802 - QGIS name
        ok, msg = super().checkParameterValues(parameters, context)
        if not ok:
            return ok, msg
        problems = check_container(self.parameterAsFile(parameters, "INPUT", context))
        problems += check_model((self.parameterAsString(parameters, "MODEL", context) or "").strip())
        return (False, problems[0]) if problems else (True, "")

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS name
        src = self.parameterAsFile(parameters, "INPUT", context)
        output = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        device, model = self._device_and_model(parameters, context)
        job = {"action": "decompress", "input": src, "output": output, "device": device, "overwrite": True,
               "enhance": self.parameterAsBool(parameters, "ENHANCE", context),
               "fidelity": self._fidelity(parameters, context)}
        if model:
            job["model"] = model
        if parameters.get("EXTENT") not in (None, ""):
            rect = self.parameterAsExtent(parameters, "EXTENT", context)
            crs = self.parameterAsExtentCrs(parameters, "EXTENT", context)
            if not rect.isEmpty():
                job["bbox"] = [rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum()]
                if crs.isValid():
                    from .plugin import crs_text

                    job["bbox_crs"] = crs_text(crs)
        res = self.run_job(job, feedback)
        return {"OUTPUT": output, "TILES": res.get("tiles")}


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
        self.addParameter(QgsProcessingParameterString("MODEL", "Enhancer weights: name or .safetensors file (default: the shipped enhancer)", "",
                                                       optional=True))
        self.addParameter(QgsProcessingParameterEnum("DEVICE", "Device", list(DEVICES), defaultValue=0))
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", "Enhanced raster"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS name
        layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
        src = layer_file_path(layer) if layer is not None else None
        if not src:
            raise QgsProcessingException("the input is not a local raster file")
        output = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        device, model = self._device_and_model(parameters, context)
        job = {"action": "enhance", "input": src, "output": output, "device": device, "overwrite": True,
               "fidelity": self._fidelity(parameters, context)}
        if model:
            job["enhancer"] = model
        self.run_job(job, feedback)
        return {"OUTPUT": output}


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
        for alg in (CompressAlgorithm(), DecompressAlgorithm(), EnhanceAlgorithm()):
            self.addAlgorithm(alg)

    def supportedOutputRasterLayerExtensions(self):  # noqa: N802 - QGIS name
        return ["tif"]
