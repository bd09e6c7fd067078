"""Runs inside a real QGIS (``qgis --code scripts/qgis_smoke.py``, started by qgis_smoke.sh).

Loads a raster, clicks Raster > Code-RSIC > "Compress layer with Code-RSIC", fills in the
dialog (screenshot), presses OK, waits for the background task, then screenshots the
main window with the before/after group and the message bar, writes a JSON report and
quits. Environment: SMOKE_RASTER, SMOKE_MODEL, SMOKE_OUT (folder for screenshots/report).
"""

import json
import os
import time
import traceback
from pathlib import Path

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QApplication
from qgis.utils import iface, plugins

OUT = Path(os.environ["SMOKE_OUT"])
RASTER = os.environ["SMOKE_RASTER"]
MODEL = os.environ.get("SMOKE_MODEL", "")
QUALITY = float(os.environ.get("SMOKE_QUALITY", "1.5"))
DEADLINE = time.monotonic() + float(os.environ.get("SMOKE_TIMEOUT", "420"))
report = {"ok": False, "steps": []}


def log(step):
    report["steps"].append(step)
    print(f"[smoke] {step}", flush=True)


def finish(ok, error=None):
    report["ok"] = ok
    if error:
        report["error"] = error
    (OUT / "report.json").write_text(json.dumps(report, indent=2))
    QgsProject.instance().setDirty(False)
    QTimer.singleShot(500, QgsApplication.instance().quit)


def guarded(fn):
    def run():
        try:
            fn()
        except Exception:  # noqa: BLE001 - a smoke test reports everything
            finish(False, traceback.format_exc())

    return run


def later(fn, ms=500):
    QTimer.singleShot(ms, guarded(fn))


def start():
    report["plugin_loaded"] = "coderic_qgis" in plugins
    if not report["plugin_loaded"]:
        return finish(False, "plugin coderic_qgis is not loaded (enabled plugins: %s)" % sorted(plugins))
    layer = QgsRasterLayer(RASTER, Path(RASTER).stem, "gdal")
    if not layer.isValid():
        return finish(False, f"cannot load {RASTER}")
    QgsProject.instance().addMapLayer(layer)
    iface.setActiveLayer(layer)
    iface.mapCanvas().setExtent(layer.extent())
    iface.mapCanvas().refresh()
    log(f"loaded {layer.name()} ({layer.width()} x {layer.height()}, {layer.bandCount()} bands)")
    menu_actions = {}
    for action in iface.rasterMenu().actions():
        if action.menu() is not None and "Code-RSIC" in action.text():
            menu_actions = {a.text(): a for a in action.menu().actions()}
    report["menu"] = sorted(menu_actions)
    log(f"Raster > Code-RSIC menu: {report['menu']}")
    compress = menu_actions["Compress layer with Code-RSIC"]
    later(fill_dialog, 1500)  # runs once the modal dialog is up
    compress.trigger()  # blocks in the dialog's exec_() until fill_dialog presses OK


def fill_dialog():
    from coderic_qgis.dialogs import CompressDialog

    dlg = QApplication.activeModalWidget()
    if not isinstance(dlg, CompressDialog):
        if time.monotonic() > DEADLINE:
            return finish(False, "the compress dialog never appeared")
        return later(fill_dialog, 500)
    if MODEL:
        dlg.model.setEditText(MODEL)
    dlg.quality.setValue(QUALITY)
    dlg.tile.setValue(128)
    dlg.overlap.setValue(16)
    dlg.overwrite.setChecked(True)
    problems = dlg.refresh()
    report["dialog_problems"] = problems
    dlg.grab().save(str(OUT / "dialog.png"))
    log(f"dialog filled, problems: {problems}")
    if problems:
        dlg.reject()
        return finish(False, f"dialog refused: {problems}")
    dlg.accept()
    later(wait_for_task, 500)


def wait_for_task():
    plugin = plugins["coderic_qgis"]
    task = plugin.last_task
    if task is None or not task.done:
        if time.monotonic() > DEADLINE:
            return finish(False, "the task did not finish in time")
        if task is not None and task.progress() > 0 and "progress_seen" not in report:
            report["progress_seen"] = task.progress()
            iface.mainWindow().grab().save(str(OUT / "running.png"))
        return later(wait_for_task, 300)
    report["task"] = {"succeeded": task.succeeded, "error": task.error, "result": task.result}
    report["message"] = plugin.last_message
    log(f"task finished: {plugin.last_message}")
    if not task.succeeded:
        return finish(False, task.error)
    group = QgsProject.instance().layerTreeRoot().findGroup("Code-RSIC before/after")
    report["group_layers"] = [n.layer().name() for n in group.findLayers()] if group else None
    iface.mapCanvas().refreshAllLayers()
    later(screenshot, 3000)


def screenshot():
    canvas = iface.mapCanvas()
    if canvas.isDrawing():
        return later(screenshot, 500)
    iface.mainWindow().grab().save(str(OUT / "qgis_after.png"))
    canvas.saveAsImage(str(OUT / "canvas_decoded.png"))
    # flip to the original (the group is mutually exclusive) for a before/after pair
    group = QgsProject.instance().layerTreeRoot().findGroup("Code-RSIC before/after")
    group.findLayers()[-1].setItemVisibilityChecked(True)
    canvas.refresh()
    later(screenshot_before, 2000)


def screenshot_before():
    canvas = iface.mapCanvas()
    if canvas.isDrawing():
        return later(screenshot_before, 500)
    canvas.saveAsImage(str(OUT / "canvas_original.png"))
    log("screenshots saved")
    finish(True)


iface.mainWindow().setGeometry(0, 0, 1400, 900)  # no window manager under Xvfb to maximise it
later(start, 3000)
