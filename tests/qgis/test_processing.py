"""The Processing provider's algorithms run through the worker (as in batch mode / models)."""

from __future__ import annotations

import os

import pytest


class _Feedback:
    """A QgsProcessingFeedback that keeps the error lines the algorithm reported."""

    def __new__(cls):
        from qgis.core import QgsProcessingFeedback

        class Feedback(QgsProcessingFeedback):
            def __init__(self):
                super().__init__()
                self.errors, self.progress_seen = [], []
                self.progressChanged.connect(self.progress_seen.append)

            def reportError(self, error, fatalError=False):  # noqa: N802
                self.errors.append(error)
                super().reportError(error, fatalError)

        return Feedback()


def test_compress_and_decompress_extent(processing, plugin, neon_copy, tmp_path, tiny_weights):
    from qgis.core import QgsRasterLayer

    fb = _Feedback()
    out = tmp_path / "p.crsic"
    res = processing.run("coderic:compress", {"INPUT": str(neon_copy), "QUALITY": 1.0, "TILE": 128, "OVERLAP": 0,
                                              "MODEL": tiny_weights, "DEVICE": 0, "OUTPUT": str(out)}, feedback=fb)
    assert res["OUTPUT"] == str(out) and out.exists()
    assert res["BYTES"] == out.stat().st_size and res["BPP"] > 0 and res["RATIO"] > 1
    assert fb.progress_seen and max(fb.progress_seen) == pytest.approx(100)

    layer = QgsRasterLayer(str(neon_copy), "neon", "gdal")
    e = layer.extent()
    extent = f"{e.xMinimum()},{e.xMinimum() + 10},{e.yMaximum() - 10},{e.yMaximum()} [EPSG:32617]"
    res = processing.run("coderic:decompress", {"INPUT": str(out), "EXTENT": extent, "MODEL": tiny_weights,
                                                "OUTPUT": str(tmp_path / "part.tif")})
    part = QgsRasterLayer(res["OUTPUT"], "part", "gdal")
    assert part.isValid() and part.width() == 100 and part.height() == 100  # 10 m at 0.1 m
    assert part.crs().authid() == "EPSG:32617"
    assert res["TILES"] == 1


def test_temporary_outputs(processing, plugin, neon_copy, tiny_weights):
    res = processing.run("coderic:compress", {"INPUT": str(neon_copy), "QUALITY": 1.0, "TILE": 256, "OVERLAP": 0,
                                              "MODEL": tiny_weights, "OUTPUT": "TEMPORARY_OUTPUT"})
    assert res["OUTPUT"].endswith(".crsic") and os.path.exists(res["OUTPUT"])
    res = processing.run("coderic:decompress", {"INPUT": res["OUTPUT"], "MODEL": tiny_weights,
                                                "OUTPUT": "TEMPORARY_OUTPUT"})
    assert res["OUTPUT"].endswith(".tif") and os.path.exists(res["OUTPUT"])


def test_parameter_checks(processing, plugin, neon_copy):
    from qgis.core import QgsApplication, QgsProcessingContext

    alg = QgsApplication.processingRegistry().createAlgorithmById("coderic:compress")
    ok, msg = alg.checkParameterValues({"INPUT": str(neon_copy), "TILE": 128, "OVERLAP": 100, "OUTPUT": "x.crsic"},
                                       QgsProcessingContext())
    assert not ok and "half the tile size" in msg
    bogus = neon_copy.with_suffix(".crsic")
    bogus.write_bytes(neon_copy.read_bytes()[:1000])
    alg = QgsApplication.processingRegistry().createAlgorithmById("coderic:decompress")
    ok, msg = alg.checkParameterValues({"INPUT": str(bogus), "OUTPUT": "x.tif"}, QgsProcessingContext())
    assert not ok and "not a Code-RSIC container" in msg


def test_enhance(processing, plugin, neon_copy, tmp_path, tiny_enhancer):
    from qgis.core import QgsRasterLayer

    res = processing.run("coderic:enhance", {"INPUT": str(neon_copy), "FIDELITY": 0.5, "MODEL": tiny_enhancer,
                                             "OUTPUT": str(tmp_path / "enh.tif")})
    enh = QgsRasterLayer(res["OUTPUT"], "enh", "gdal")
    src = QgsRasterLayer(str(neon_copy), "src", "gdal")
    assert enh.isValid() and enh.extent() == src.extent() and enh.crs() == src.crs()
    assert enh.bandCount() == 3


def test_enhance_error_is_reported_clearly(processing, plugin, neon_copy, tmp_path, worker_ready):
    from qgis.core import QgsProcessingException

    fb = _Feedback()
    with pytest.raises(QgsProcessingException) as info:
        processing.run("coderic:enhance", {"INPUT": str(neon_copy), "MODEL": str(tmp_path / "missing.safetensors"),
                                           "OUTPUT": str(tmp_path / "enh.tif")}, feedback=fb)
    text = " ".join(fb.errors + [str(info.value)])
    assert "enhancement is unavailable" in text and "missing.safetensors" in text and "Traceback" not in text
    assert not (tmp_path / "enh.tif").exists()
