"""The dialogs and the Processing algorithms offer core.options' defaults and limits (one contract).

The same is checked without QGIS, from the sources, in tests/test_plugin_contract.py.
"""

from __future__ import annotations

import pytest

from conftest import ROOT


@pytest.fixture(scope="module")
def options():
    """core/options.py itself, loaded as the plugin loads it (by path, not as ``core``)."""
    from coderic_qgis._contract import options

    assert options.__file__ == str(ROOT / "core" / "options.py")
    return options


def _param(alg_id, name):
    from qgis.core import QgsApplication

    alg = QgsApplication.processingRegistry().algorithmById(alg_id)  # the provider's: it stays alive
    assert alg is not None, alg_id
    return alg.parameterDefinition(name)


def test_processing_compress_defaults_and_limits(plugin, options):
    core = options.CompressParams()
    tile, overlap = _param("coderic:compress", "TILE"), _param("coderic:compress", "OVERLAP")
    assert tile.defaultValue() == core.tile == options.DEFAULT_TILE
    assert (tile.minimum(), tile.maximum()) == (options.MIN_TILE, options.MAX_TILE)
    assert overlap.defaultValue() == core.overlap and overlap.maximum() == options.MAX_OVERLAP
    quality = _param("coderic:compress", "QUALITY")
    assert quality.defaultValue() == core.quality and quality.minimum() == options.MIN_QUALITY
    target = _param("coderic:compress", "TARGET_BPP")
    assert target.defaultValue() is None and target.maximum() == options.MAX_TARGET_BPP
    device = _param("coderic:compress", "DEVICE")
    assert device.options() == list(options.DEVICES)
    assert options.DEVICES[device.defaultValue()] == core.device


def test_processing_decompress_and_enhance_defaults(plugin, options):
    from coderic_qgis.jobs import PROCESSING_ENHANCE

    # Off unless ticked (scripts get the same pixels whatever the quality), one of core's choices.
    assert _param("coderic:decompress", "ENHANCE").defaultValue() is PROCESSING_ENHANCE is False
    assert PROCESSING_ENHANCE in options.ENHANCE_CHOICES
    for alg in ("coderic:decompress", "coderic:enhance"):
        fidelity = _param(alg, "FIDELITY")
        assert fidelity.defaultValue() is None
        assert (fidelity.minimum(), fidelity.maximum()) == options.FIDELITY_RANGE
        assert options.DEVICES[_param(alg, "DEVICE").defaultValue()] == options.DEFAULT_DEVICE


def test_processing_checks_are_cores(plugin, neon_copy, options):
    from qgis.core import QgsApplication, QgsProcessingContext

    alg = QgsApplication.processingRegistry().createAlgorithmById("coderic:compress")
    ok, msg = alg.checkParameterValues({"INPUT": str(neon_copy), "QUALITY": options.DEFAULT_MODEL_LEVELS + 1,
                                        "OUTPUT": "x.crsic"}, QgsProcessingContext())
    assert not ok and msg.lower().startswith(options.quality_problem(options.DEFAULT_MODEL_LEVELS + 1,
                                                                     options.DEFAULT_MODEL_LEVELS))
    ok, msg = alg.checkParameterValues({"INPUT": str(neon_copy), "TARGET_BPP": 0, "OUTPUT": "x.crsic"},
                                       QgsProcessingContext())
    assert not ok and msg.lower() == options.target_bpp_problem(0.0)


def test_compress_dialog_defaults(iface, neon_copy, options):
    from qgis.core import QgsProject, QgsRasterLayer

    from coderic_qgis.dialogs import CompressDialog

    layer = QgsRasterLayer(str(neon_copy), "neon", "gdal")
    QgsProject.instance().addMapLayer(layer)
    dlg = CompressDialog(iface.mainWindow(), layer)
    try:
        core = options.CompressParams()
        p = dlg.params()
        for name in ("model", "quality", "target_bpp", "tile", "overlap", "device", "overwrite", "format"):
            assert getattr(p, name) == getattr(core, name), name
        assert p.enhance == options.DecompressParams().enhance
        assert p.enhancement == options.EnhanceParams()
        assert (dlg.tile.minimum(), dlg.tile.maximum()) == (options.MIN_TILE, options.MAX_TILE)
        assert dlg.overlap.maximum() == options.MAX_OVERLAP
        assert (dlg.quality.minimum(), dlg.quality.maximum()) == (options.MIN_QUALITY, options.DEFAULT_MODEL_LEVELS)
        assert dlg.target_bpp.value() == pytest.approx(options.DEFAULT_TARGET_BPP)
        assert dlg.target_bpp.maximum() == options.MAX_TARGET_BPP
        assert dlg.fidelity.maximum() == options.FIDELITY_RANGE[1]
        assert [dlg.device.itemText(i) for i in range(dlg.device.count())] == list(options.DEVICES)
        job = p.to_job()
        expected = dict(vars(core), bands=p.bands)  # the bands the layer shows
        assert {k: job[k] for k in expected} == expected  # every CompressParams field, by its name
    finally:
        dlg.deleteLater()


def test_decompress_dialog_defaults(iface, options):
    from coderic_qgis.dialogs import DecompressDialog

    dlg = DecompressDialog(iface.mainWindow())
    try:
        p = dlg.params()
        core = options.DecompressParams()
        assert (p.model, p.device, p.enhance, p.enhancement) == (core.model, core.device, core.enhance,
                                                                 core.enhancement)
        job = p.to_job()
        for name in ("model", "device", "window", "bbox", "overwrite", "cog", "enhance"):
            assert job[name] == getattr(core, name), name
        assert job["fidelity"] == core.enhancement.fidelity and job["enhancer"] == core.enhancement.enhancer
    finally:
        dlg.deleteLater()


def test_a_weights_file_with_more_levels_widens_the_quality_range(iface, neon_copy, options, monkeypatch):
    from qgis.core import QgsProject, QgsRasterLayer

    from coderic_qgis import jobs
    from coderic_qgis.dialogs import CompressDialog

    monkeypatch.setattr(jobs, "model_levels", lambda path: ("elic-v2", options.DEFAULT_MODEL_LEVELS + 5))
    layer = QgsRasterLayer(str(neon_copy), "neon", "gdal")
    QgsProject.instance().addMapLayer(layer)
    dlg = CompressDialog(iface.mainWindow(), layer)
    try:
        dlg.model.setEditText("/some/elic-v2.safetensors")
        assert dlg.quality.maximum() == options.DEFAULT_MODEL_LEVELS + 5
    finally:
        dlg.deleteLater()
