"""Runs inside a real QGIS (``qgis --code scripts/qgis_smoke.py``, started by qgis_smoke.sh).

Loads a raster, clicks Raster > Code-RSIC > "Compress layer with Code-RSIC", fills in the
dialog (screenshot), presses OK, waits for the background task, then screenshots the
main window with the before/after group and the message bar. Then the before/after
tools: the swipe (divider dragged to the middle), the difference layer, the tile quality
layer, and *Set up worker environment* running (a real venv and real pip, against a local
index of stand-ins for the third-party packages: no network, no 6 GB download). Writes a
JSON report and quits. Environment: SMOKE_RASTER, SMOKE_MODEL, SMOKE_OUT (folder for
screenshots/report), SMOKE_SETUP=0 to skip the set-up.
"""

import base64
import hashlib
import json
import os
import re
import time
import traceback
import zipfile
from pathlib import Path

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtWidgets import QApplication
from qgis.utils import iface, plugins

OUT = Path(os.environ["SMOKE_OUT"])
RASTER = os.environ["SMOKE_RASTER"]
MODEL = os.environ.get("SMOKE_MODEL", "")
QUALITY = float(os.environ.get("SMOKE_QUALITY", "1.5"))
DEADLINE = time.monotonic() + float(os.environ.get("SMOKE_TIMEOUT", "900"))
SHOT_WIDTH = 1100  # screenshots are scaled to this width
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
    dlg.tile.setValue(int(os.environ.get("SMOKE_TILE", "128")))
    dlg.overlap.setValue(16)
    report["dialog_bands"] = dlg.selected_bands()
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
    group = QgsProject.instance().layerTreeRoot().findGroup("Code-RSIC before/after")
    group.findLayers()[0].setItemVisibilityChecked(True)  # the decoded layer again
    if decoded_layer().bandCount() >= 4:
        later(show_nir, 500)
    else:
        later(start_swipe, 500)


def show_nir():
    """A 4-band decode shown as colour infrared (NIR, red, green): its NIR band is there."""
    from qgis.core import QgsMultiBandColorRenderer

    layer = decoded_layer()
    report["decoded_bands"] = [layer.bandName(b) for b in range(1, layer.bandCount() + 1)]
    report["rgb_renderer"] = layer.renderer().clone()
    layer.setRenderer(QgsMultiBandColorRenderer(layer.dataProvider(), 4, 1, 2))
    layer.setName(layer.name() + " · NIR, R, G")
    node = QgsProject.instance().layerTreeRoot().findLayer(layer.id())
    node.setExpanded(True)
    iface.layerTreeView().refreshLayerSymbology(layer.id())
    layer.triggerRepaint()
    later(screenshot_nir, 3000)


def screenshot_nir():
    if iface.mapCanvas().isDrawing():
        return later(screenshot_nir, 500)
    shot("nir.png")
    layer = decoded_layer()
    layer.setRenderer(report.pop("rgb_renderer"))
    layer.setName(layer.name().replace(" · NIR, R, G", ""))
    layer.triggerRepaint()
    later(start_swipe, 2000)


# ---------------------------------------------------------------- before/after tools

def shot(name, whole_screen=False):
    """Save a screenshot (the main window, or the whole screen with dialogs), scaled down."""
    if whole_screen:
        image = QApplication.primaryScreen().grabWindow(0).toImage()
    else:
        image = iface.mainWindow().grab().toImage()
    image.scaledToWidth(SHOT_WIDTH, Qt.SmoothTransformation).save(str(OUT / name))
    log(f"screenshot {name}")


def plugin():
    return plugins["coderic_qgis"]


def decoded_layer():
    group = QgsProject.instance().layerTreeRoot().findGroup("Code-RSIC before/after")
    return next(n.layer() for n in group.findLayers() if n.layer().customProperty("coderic/role") == "decoded")


def start_swipe():
    iface.setActiveLayer(decoded_layer())
    plugin().swipe_action.trigger()
    tool = plugin().swipe_tool
    report["swipe_active"] = iface.mapCanvas().mapTool() is tool
    later(drag_swipe, 2500)


def drag_swipe():
    canvas = iface.mapCanvas()
    if canvas.isDrawing():
        return later(drag_swipe, 500)
    item = plugin().swipe_tool.item
    item.wait()
    item.set_divider(int(canvas.width() * 0.5))  # where a user would drag it
    report["swipe_divider"] = item.divider
    later(screenshot_swipe, 1000)


def screenshot_swipe():
    shot("swipe.png")
    plugin().swipe_action.trigger()  # off again
    wait_then(plugin().show_difference(), "difference")


def wait_then(task, name):
    if task is None:
        return finish(False, f"{name}: no task ({plugin().last_message})")
    later(lambda: wait_task(task, name), 500)


def wait_task(task, name):
    if not task.done:
        if time.monotonic() > DEADLINE:
            return finish(False, f"{name} did not finish in time")
        return later(lambda: wait_task(task, name), 300)
    report[name] = {"succeeded": task.succeeded, "error": task.error, "message": plugin().last_message}
    log(f"{name}: {plugin().last_message}")
    if not task.succeeded:
        return finish(False, f"{name}: {task.error}")
    iface.mapCanvas().refreshAllLayers()
    later(lambda: screenshot_result(name), 3000)


def screenshot_result(name):
    if iface.mapCanvas().isDrawing():
        return later(lambda: screenshot_result(name), 500)
    shot(f"{name}.png")
    if name == "difference":
        wait_then(plugin().show_quality(), "quality")
    elif os.environ.get("SMOKE_SETUP", "1") != "0":
        later(start_setup, 500)
    else:
        finish(True)


# ---------------------------------------------------------------- set-up task

def fake_wheel(folder, name, version):
    """A stand-in wheel of a third-party package (one empty module): pip installs it for real."""
    dist, module = name.replace("-", "_"), {"pillow": "PIL"}.get(name.lower(), name.replace("-", "_"))
    info = f"{dist}-{version}.dist-info"
    files = {f"{module}/__init__.py": b"",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
             f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: smoke\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = [f"{p},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},{len(d)}"
              for p, d in files.items()]
    files[f"{info}/RECORD"] = ("\n".join(record + [f"{info}/RECORD,,"]) + "\n").encode()
    with zipfile.ZipFile(folder / f"{dist}-{version}-py3-none-any.whl", "w") as zf:
        for p, d in files.items():
            zf.writestr(p, d)


def start_setup():
    from coderic_qgis.setup_env import find_base_pythons, plan_setup, project_source, requirements

    index = Path(os.environ.get("SMOKE_WORK", "/tmp")) / "index"
    index.mkdir(parents=True, exist_ok=True)
    wheel = project_source()
    for req in requirements(wheel):
        dist = re.split(r"[\s<>=!~;\[(]", req, 1)[0]
        exact, low = re.search(r"==\s*([\w.]+)", req), re.search(r">=\s*([\w.]+)", req)
        fake_wheel(index, dist, exact.group(1) if exact else low.group(1) if low else "1.26.0" if "<2" in req
                   else "1.0")
    pythons, rejected = find_base_pythons()
    report["setup_pythons"] = [p.label for p in pythons]
    if not pythons:
        return finish(False, f"no base Python: {rejected}")
    target = Path(os.environ.get("SMOKE_WORK", "/tmp")) / "worker-env"
    from coderic_qgis.setup_task import SetupDialog

    dialog = SetupDialog(iface.mainWindow(), pythons=(pythons, []))  # what it will download, said first
    dialog.show()
    dialog.setGeometry(400, 250, 640, 300)
    report["setup_estimate"] = dialog.estimate.text()
    later(lambda: shot_setup_dialog(dialog, pythons, target, wheel, index), 1000)


def shot_setup_dialog(dialog, pythons, target, wheel, index):
    from coderic_qgis.setup_env import plan_setup

    shot("setup_dialog.png", whole_screen=True)
    dialog.reject()
    plan = plan_setup(pythons[0], target, wheel, ["--no-index", "--find-links", str(index)])
    plan.test_tile = False  # the index holds stand-ins (empty modules): nothing to code a tile with
    task = plugin().start_setup(plan)
    plugin().setup_log.setGeometry(560, 330, 820, 520)
    report["setup_shot"] = None
    later(lambda: watch_setup(task), 300)


def watch_setup(task):
    if not task.done:
        if time.monotonic() > DEADLINE:
            return finish(False, "the set-up did not finish in time")
        progress = task.progress()
        text = task.log_text()
        installing = re.search(r"^Processing .*code_rsic", text, re.M) and "Test worker" not in text
        if report["setup_shot"] is None and installing:
            plugin().setup_log.refresh()
            report["setup_shot"] = {"progress": progress, "status": task.status}
            later(lambda: shot("setup_running.png", whole_screen=True), 0)
        return later(lambda: watch_setup(task), 200)
    report["setup"] = {"succeeded": task.succeeded, "result": task.result_text()}
    log(f"set-up: {task.result_text()}")
    if report["setup_shot"] is None:
        shot("setup_running.png", whole_screen=True)  # too fast to catch running: the end
    later(lambda: end_setup(task), 800)


def end_setup(task):
    shot("setup_done.png", whole_screen=True)
    finish(task.succeeded, None if task.succeeded else task.result_text())


iface.mainWindow().setGeometry(0, 0, 1400, 900)  # no window manager under Xvfb to maximise it
later(start, 3000)
