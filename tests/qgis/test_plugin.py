"""The plugin loads in QGIS: menu, toolbar, Processing provider; the zip builds."""

from __future__ import annotations

import configparser
import re
import zipfile

import pytest

from conftest import ROOT


def _submenu(iface, title):
    for action in iface.rasterMenu().actions():
        if action.menu() is not None and action.text() == title:
            return action.menu()
    return None


def test_actions_registered_in_raster_menu_and_toolbar(plugin, iface):
    menu = _submenu(iface, "&Code-RSIC")
    assert menu is not None, "Raster > Code-RSIC submenu missing"
    texts = [a.text() for a in menu.actions()]
    for wanted in ("Compress layer with Code-RSIC", "Decompress .crsic file", "Decode current map extent"):
        assert wanted in texts
    assert any("Settings" in t for t in texts)
    toolbar_texts = [a.text() for bar in iface.toolbars for a in bar.actions()]
    assert "Compress layer with Code-RSIC" in toolbar_texts
    assert not plugin.compress_action.icon().isNull()


def test_processing_provider_registered(plugin):
    from qgis.core import QgsApplication

    registry = QgsApplication.processingRegistry()
    assert registry.providerById("coderic") is not None
    for alg in ("coderic:compress", "coderic:decompress", "coderic:enhance"):
        assert registry.algorithmById(alg) is not None, alg


def test_unload_removes_everything(iface, qgis_app):
    import coderic_qgis
    from qgis.core import QgsApplication

    p = coderic_qgis.classFactory(iface)
    p.initGui()
    p.unload()
    assert _submenu(iface, "&Code-RSIC") is None
    assert QgsApplication.processingRegistry().providerById("coderic") is None


def test_build_zip(tmp_path):
    from coderic_qgis.build import main

    out = tmp_path / "coderic_qgis.zip"
    assert main(["-o", str(out)]) == 0
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        meta = zf.read("coderic_qgis/metadata.txt").decode()
    assert "coderic_qgis/__init__.py" in names and "coderic_qgis/plugin.py" in names
    assert "coderic_qgis/icons/coderic.svg" in names
    assert all(n.startswith("coderic_qgis/") and "__pycache__" not in n for n in names)
    assert meta == (ROOT / "metadata.txt").read_text()
    cp = configparser.ConfigParser()
    cp.read_string(meta)
    assert cp["general"]["name"] == "Code-RSIC"
    assert cp["general"]["qgisMinimumVersion"] == "3.22"
    # The same sources give the same bytes.
    again = tmp_path / "again.zip"
    main(["-o", str(again)])
    assert again.read_bytes() == out.read_bytes()


def test_worker_discovery_order(monkeypatch, tmp_path):
    from coderic_qgis import worker_client as wc

    fake = tmp_path / "py"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    wc.forget_found_workers()
    # 1. the setting wins over the environment variable
    monkeypatch.setenv("CODERSIC_PYTHON", "/nonexistent/python")
    cmd = wc.find_worker(str(fake), "")
    assert cmd.python == str(fake) and cmd.found_by == "plugin setting"
    # 2. the environment variable, and a clear message when it points nowhere
    with pytest.raises(wc.WorkerError, match="CODERSIC_PYTHON.*does not exist"):
        wc.find_worker("", "")
    monkeypatch.setenv("CODERSIC_PYTHON", str(fake))
    assert wc.find_worker("", "").found_by == "$CODERSIC_PYTHON"
    # 3. the source checkout's .venv (this plugin lives in the project's checkout)
    monkeypatch.delenv("CODERSIC_PYTHON")
    assert wc.source_checkout() == ROOT
    tried = []
    cmd = wc.find_worker("", "", probe=lambda c: tried.append(c) or c.python.endswith(".venv/bin/python"))
    if (ROOT / ".venv" / "bin" / "python").exists():
        assert cmd.python == str(ROOT / ".venv" / "bin" / "python") and cmd.pythonpath == str(ROOT)
    # 4. nothing usable: a one-line hint, not a traceback
    wc.forget_found_workers()
    with pytest.raises(wc.WorkerError, match="no Python with Code-RSIC was found.*Settings"):
        wc.find_worker("", "", probe=lambda c: None)
    wc.forget_found_workers()


def test_worker_environment_is_scrubbed(monkeypatch):
    from coderic_qgis.worker_client import WorkerCommand

    monkeypatch.setenv("PYTHONHOME", "/usr/share/qgis/python")
    monkeypatch.setenv("GDAL_DATA", "/usr/share/gdal")
    env = WorkerCommand("/x/python", "/src").env()
    assert "PYTHONHOME" not in env and "GDAL_DATA" not in env
    assert env["PYTHONPATH"] == "/src" and env["PYTHONUNBUFFERED"] == "1"


def test_qgis_process_never_imports_torch_or_rasterio(plugin):
    import sys

    assert "torch" not in sys.modules
    assert "rasterio" not in sys.modules


def test_settings_dialog_tests_and_saves_worker(iface, worker_ready, tmp_path):
    from qgis.core import QgsSettings

    from coderic_qgis.dialogs import SettingsDialog
    from coderic_qgis.settings import PluginSettings

    dlg = SettingsDialog(iface.mainWindow())
    dlg.python.setFilePath(worker_ready)
    dlg.threads.setValue(1)
    text = dlg.test_worker()  # ping, then a real tile coded and decoded by the shipped model
    assert text.startswith("Code-RSIC ") and "coded and decoded a test tile on cpu in" in text, text
    assert re.search(r"in \d+\.\d s \(PSNR \d+\.\d dB\)", text), text
    dlg.python.setFilePath(str(tmp_path / "nope" / "python"))
    assert "Not working" in dlg.test_worker() and "does not exist" in dlg.status.text()
    dlg.python.setFilePath(worker_ready)
    dlg.accept()
    try:
        st = PluginSettings.load()
        assert st.worker_python == worker_ready and st.threads == 1
    finally:
        QgsSettings().remove("CodeRSIC/worker_python")
