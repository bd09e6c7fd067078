"""Invalid choices are explained in the dialog (and OK stays disabled), never a traceback."""

from __future__ import annotations

import numpy as np
import pytest


def _raster_layer(path, name="layer"):
    from qgis.core import QgsProject, QgsRasterLayer

    layer = QgsRasterLayer(str(path), name, "gdal")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


def _problems(dlg):
    from qgis.PyQt.QtWidgets import QDialogButtonBox

    dlg.refresh()
    return dlg.problems.text(), dlg.buttons.button(QDialogButtonBox.Ok).isEnabled()


@pytest.fixture
def compress_dialog(iface, neon_copy):
    from coderic_qgis.dialogs import CompressDialog

    layer = _raster_layer(neon_copy, "neon")
    dlg = CompressDialog(iface.mainWindow(), layer)
    yield dlg
    dlg.deleteLater()


def test_defaults_are_valid(compress_dialog, neon_copy):
    text, ok = _problems(compress_dialog)
    assert text == "" and ok
    p = compress_dialog.params()
    assert p.input == str(neon_copy)
    assert p.bands == [1, 2, 3]
    assert p.output == str(neon_copy.with_suffix(".crsic"))
    assert p.decoded_output.endswith("neon.decoded.tif")


def test_overlap_larger_than_half_tile(compress_dialog):
    compress_dialog.tile.setValue(128)
    compress_dialog.overlap.setValue(100)
    text, ok = _problems(compress_dialog)
    assert "Overlap must be between 0 and half the tile size (64 px)" in text
    assert not ok


def test_no_bands(compress_dialog):
    compress_dialog.set_bands([])
    text, ok = _problems(compress_dialog)
    assert "Choose at least one band" in text and not ok


def test_existing_output_needs_overwrite(compress_dialog, neon_copy):
    neon_copy.with_suffix(".crsic").write_bytes(b"old")
    compress_dialog.layer_combo.layerChanged.emit(compress_dialog.layer_combo.currentLayer())
    text, ok = _problems(compress_dialog)
    assert "already exists: neon.crsic" in text and "Overwrite" in text and not ok
    compress_dialog.overwrite.setChecked(True)
    assert _problems(compress_dialog) == ("", True)


def test_output_folder_missing_and_same_as_input(compress_dialog, neon_copy, tmp_path):
    compress_dialog.output.setFilePath(str(tmp_path / "missing" / "x.crsic"))
    assert "folder of the compressed file does not exist" in _problems(compress_dialog)[0]
    compress_dialog.output.setFilePath(str(tmp_path / "x.crsic"))
    compress_dialog.decoded_output.setFilePath(str(neon_copy))
    assert "decoded GeoTIFF must differ from the input layer's file" in _problems(compress_dialog)[0]


def test_model_checks(compress_dialog, tmp_path, tiny_weights):
    compress_dialog.model.setEditText(str(tmp_path / "nope.safetensors"))
    assert "Model file not found" in _problems(compress_dialog)[0]
    compress_dialog.model.setEditText(tiny_weights)
    compress_dialog.quality.setValue(3)
    text, ok = _problems(compress_dialog)
    assert "Quality must be between 0 and 2" in text and "(model elic-tiny)" in text and not ok
    compress_dialog.quality.setValue(2)
    assert _problems(compress_dialog) == ("", True)
    # target bpp replaces quality
    compress_dialog.quality.setValue(3)
    compress_dialog.bpp_radio.setChecked(True)
    compress_dialog.target_bpp.setValue(0)
    text, ok = _problems(compress_dialog)
    assert "Target bpp must be positive" in text and "Quality" not in text


def test_float_raster_rejected(iface, tmp_path):
    from osgeo import gdal

    from coderic_qgis.dialogs import CompressDialog

    path = tmp_path / "float.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(path), 64, 64, 1, gdal.GDT_Float32)
    ds.GetRasterBand(1).WriteArray(np.random.default_rng(0).random((64, 64)).astype("float32"))
    ds = None
    dlg = CompressDialog(iface.mainWindow(), _raster_layer(path, "float"))
    text, ok = _problems(dlg)
    assert "8-bit unsigned and 16-bit unsigned bands only" in text and "Float32" in text and not ok


def test_enhance_unavailable_and_worker_problem_are_shown(iface, neon_copy):
    from coderic_qgis.dialogs import CompressDialog

    dlg = CompressDialog(iface.mainWindow(), _raster_layer(neon_copy), enhance_available=False,
                         worker_problem="Worker: no Python with Code-RSIC was found")
    assert dlg.params().enhance == "auto"  # the default: automatic, like the command line
    text, _ = _problems(dlg)
    assert "Enhancement is not available" not in text  # automatic just does not enhance
    dlg.enhance.setCurrentIndex(1)  # Always
    assert dlg.params().enhance is True and dlg.params().to_job()["enhance"] is True
    text, ok = _problems(dlg)
    assert "Enhancement is not available" in text and "no Python with Code-RSIC" in text and not ok
    dlg.enhance.setCurrentIndex(2)  # Off
    assert dlg.params().enhance is False and not dlg.fidelity.isEnabled()


def test_accept_refuses_invalid(compress_dialog):
    compress_dialog.set_bands([])
    compress_dialog.accept()
    assert compress_dialog.result() == 0  # still open, problem listed
    assert "Choose at least one band" in compress_dialog.problems.text()


def test_decompress_dialog_checks_container(iface, tmp_path):
    from coderic_qgis.dialogs import DecompressDialog

    bogus = tmp_path / "bogus.crsic"
    bogus.write_bytes(b"GIF89a not a container")
    dlg = DecompressDialog(iface.mainWindow(), container=str(bogus))
    text, ok = _problems(dlg)
    assert "bogus.crsic is not a Code-RSIC container" in text and not ok
    assert dlg.params().output.endswith("bogus.decoded.tif")
    dlg.container.setFilePath(str(tmp_path / "none.crsic"))
    assert "File not found" in _problems(dlg)[0]


def test_extent_dialog_defaults(iface, tmp_path):
    from qgis.core import QgsRectangle

    from coderic_qgis._contract.options import CONTAINER_MAGIC
    from coderic_qgis.dialogs import DecompressDialog

    c = tmp_path / "a.crsic"
    c.write_bytes(CONTAINER_MAGIC + b"\0" * 64)
    dlg = DecompressDialog(iface.mainWindow(), container=str(c), extent=QgsRectangle(0, 0, 10, 10),
                           extent_crs="EPSG:32617", extent_only=True)
    p = dlg.params()
    assert p.extent_only and p.output.endswith("a.extent-1.tif")
    job = p.to_job()
    assert job["bbox"] == [0, 0, 10, 10] and job["bbox_crs"] == "EPSG:32617"
    assert _problems(dlg) == ("", True)
