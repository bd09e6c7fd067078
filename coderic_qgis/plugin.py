"""The plugin object: Raster menu "Code-RSIC", toolbar button, tasks and their results."""

from __future__ import annotations

from pathlib import Path

from qgis.core import Qgis, QgsApplication, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

from ._contract import options
from .compare import (
    Pair,
    add_difference_layer,
    add_quality_layer,
    find_pair,
    selected_area,
    selection_layer,
    unique_path,
)
from .dialogs import CompressDialog, DecompressDialog, SettingsDialog
from .jobs import CompressParams, DecompressParams, add_extras, diff_job, quality_map_job
from .layers import (
    PROP_BANDS,
    PROP_CONTAINER,
    PROP_MODEL,
    add_decoded_layer,
    crs_text,
    find_layer_by_container,
    find_layer_by_file_name,
    short_name,
    summary_text,
)
from .settings import PluginSettings, current_worker
from .tasks import CodecTask
from .worker_client import WorkerCanceled, WorkerCommand, WorkerError, WorkerProcess

MENU = "&Code-RSIC"
ICON = Path(__file__).resolve().parent / "icons" / "coderic.svg"
SWIPE_ICON = ICON.with_name("swipe.svg")  # a divider between two halves: not the compress icon
TITLE = "Code-RSIC"


class CodeRsicPlugin:
    def __init__(self, iface):
        self.iface = iface
        self.actions: list[QAction] = []
        self.toolbar = None
        self.provider = None
        self.tasks: set = set()  # CodecTask and SetupTask
        self.swipe_tool = None
        self.setup_log = None  # the set-up's log window
        self._pings: dict[WorkerCommand, dict] = {}
        self.last_message: tuple[str, str] | None = None  # (level, text), handy for tests and logs
        self.last_task: CodecTask | None = None

    # ------------------------------------------------------------ QGIS plugin interface
    def initProcessing(self):  # noqa: N802 - QGIS name
        from .processing_provider import CodeRsicProvider

        if self.provider is None:
            self.provider = CodeRsicProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):  # noqa: N802 - QGIS name
        icon = QIcon(str(ICON))
        parent = self.iface.mainWindow()
        self.toolbar = self.iface.addToolBar(TITLE)
        self.toolbar.setObjectName("CodeRsicToolbar")
        self.compress_action = self._add_action(icon, "Compress layer with Code-RSIC", self.show_compress_dialog,
                                                "Compress the selected raster layer and compare before/after",
                                                toolbar=True)
        self.decompress_action = self._add_action(icon, f"Decompress {options.CONTAINER_SUFFIX} file", self.show_decompress_dialog,
                                                  "Decode a Code-RSIC container to a GeoTIFF")
        self.extent_action = self._add_action(icon, "Decode current map extent", self.show_extent_dialog,
                                              "Decode only the tiles of a container that lie in the map view")
        self.area_action = self._add_action(icon, "Decode selected area", self.show_area_dialog,
                                            "Decode only the tiles under the selected polygons of a polygon layer")
        self.swipe_action = self._add_action(QIcon(str(SWIPE_ICON)), "Swipe before/after", self.toggle_swipe,
                                             "Drag a divider across the map: decoded on the left, original on the "
                                             "right", toolbar=True)
        self.swipe_action.setCheckable(True)
        self.diff_action = self._add_action(icon, "Difference layer (before/after)", self.show_difference,
                                            "Per-pixel |original - decoded| as a raster with a colour ramp")
        self.quality_action = self._add_action(icon, "Tile quality layer (before/after)", self.show_quality,
                                               "One polygon per coded tile with bytes, bpp and PSNR, graduated")
        self.setup_action = self._add_action(QIcon(), "Set up worker environment…", self.show_setup,
                                             "Create a Python environment with PyTorch and Code-RSIC for the worker")
        self.settings_action = self._add_action(QIcon(), "Settings…", self.show_settings,
                                                "Worker Python and threads")
        for action in self.actions:
            action.setParent(parent)
        self.initProcessing()

    def _add_action(self, icon, text, slot, tip, toolbar=False) -> QAction:
        action = QAction(icon, text, self.iface.mainWindow())
        action.setObjectName("coderic_" + "".join(c for c in text.lower() if c.isalnum())[:24])
        action.setStatusTip(tip)
        action.setToolTip(tip)
        action.triggered.connect(slot)
        self.iface.addPluginToRasterMenu(MENU, action)
        if toolbar:
            self.toolbar.addAction(action)
        self.actions.append(action)
        return action

    def unload(self):
        canvas = self.iface.mapCanvas()
        if self.swipe_tool is not None and canvas.mapTool() is self.swipe_tool:
            canvas.unsetMapTool(self.swipe_tool)
        self.swipe_tool = None
        for task in list(self.tasks):
            task.on_finished = None
            task.cancel()
        for action in self.actions:
            self.iface.removePluginRasterMenu(MENU, action)
        self.actions.clear()
        if self.toolbar is not None:
            self.toolbar.deleteLater()
            self.toolbar = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None

    # ------------------------------------------------------------ worker
    def worker_status(self) -> tuple[WorkerCommand | None, dict | None, str | None]:
        """(worker, its ping, problem sentence or None); pings are cached per worker."""
        try:
            cmd = current_worker()
        except WorkerError as exc:
            return None, None, f"Worker: {exc}"
        if cmd not in self._pings:
            try:
                info = WorkerProcess(cmd).run({"action": "ping"}, timeout=60)
            except (WorkerError, WorkerCanceled) as exc:
                return cmd, None, f"The worker Python {cmd.python} does not work: {exc}"
            if info.get("missing"):
                return cmd, info, (f"The worker Python {cmd.python} lacks {', '.join(info['missing'])}: install "
                                   "Code-RSIC into it (see docs/qgis.md) or choose another in Settings")
            self._pings[cmd] = info
        return cmd, self._pings[cmd], None

    def _job(self, params) -> dict:
        st = PluginSettings.load()
        return add_extras(params.to_job(st.threads), st.job_extras())

    def _message(self, level: str, text: str) -> None:
        self.last_message = (level, text)
        levels = {"success": Qgis.Success, "info": Qgis.Info, "warning": Qgis.Warning, "critical": Qgis.Critical}
        duration = 0 if level in ("success", "critical") else 8
        bar = self.iface.messageBar()
        # Pushed from the event loop, so it lands above QGIS's own "Task complete" notice.
        QTimer.singleShot(0, lambda: bar.pushMessage(TITLE, text, levels[level], duration))

    def _show_group(self, group, layer=None) -> None:
        """Expand the before/after group (and ``layer``'s legend) in the Layers panel (the view
        keeps its own state)."""
        if group is None:
            return
        nodes = [group] + ([group.findLayer(layer.id())] if layer is not None else [])
        view = getattr(self.iface, "layerTreeView", lambda: None)()
        for node in filter(None, nodes):
            node.setExpanded(True)
            if view is not None:
                try:
                    view.setExpanded(view.node2index(node), True)
                except (AttributeError, TypeError):
                    pass

    def _worker_or_message(self, worker: WorkerCommand | None) -> WorkerCommand | None:
        if worker is not None:
            return worker
        try:
            return current_worker()
        except WorkerError as exc:
            self._message("critical", str(exc))
            return None

    def _submit(self, task: CodecTask) -> CodecTask:
        self.last_task = task
        self.tasks.add(task)
        QgsApplication.taskManager().addTask(task)
        return task

    # ------------------------------------------------------------ compress
    def show_compress_dialog(self, checked=False):
        layer = self.iface.activeLayer()
        _, info, problem = self.worker_status()
        dlg = CompressDialog(self.iface.mainWindow(), layer if isinstance(layer, QgsRasterLayer) else None,
                             worker_problem=problem, enhance_available=None if info is None else info.get("enhance"))
        params = dlg.params() if dlg.exec_() else None
        dlg.deleteLater()
        if params is not None:
            self.start_compress(params)

    def start_compress(self, params: CompressParams, worker: WorkerCommand | None = None) -> CodecTask | None:
        worker = self._worker_or_message(worker)
        if worker is None:
            return None
        layer = QgsProject.instance().mapLayer(params.layer_id)
        name = layer.name() if layer else Path(params.input).stem
        job = self._job(params)
        task = CodecTask(f"Code-RSIC: compress {name}", job, worker,
                         on_finished=lambda t: self._compress_done(t, params, name))
        return self._submit(task)

    def _compress_done(self, task: CodecTask, params: CompressParams, name: str) -> None:
        self.tasks.discard(task)
        if task.was_canceled:
            self._message("info", f"Compressing {name} was canceled; no files were written")
            return
        if not task.succeeded:
            self._message("critical", f"Compressing {name} failed: {task.error}")
            return
        res = task.result
        if params.decode:
            original = QgsProject.instance().mapLayer(params.layer_id)
            enhanced = ", enhanced" if (res.get("decode") or {}).get("enhanced") else ""
            model = f"{res['model']} " if res.get("model", options.DEFAULT_MODEL) != options.DEFAULT_MODEL else ""
            label = short_name(name) + f" · {model}q{res.get('quality', 0):g}, {res.get('bpp', 0):.2f} bpp{enhanced}"
            try:
                layer, group = add_decoded_layer(res["decoded"], label, original=original, bands=res.get("bands"),
                                                 container=params.output)
            except RuntimeError as exc:
                self._message("critical", str(exc))
                return
            if params.model and params.model != options.DEFAULT_MODEL:
                layer.setCustomProperty(PROP_MODEL, params.model)
            self._show_group(group)
            task.decoded_layer = layer
        self._message("success", summary_text(res, f"{name} -> {Path(params.output).name}"))

    # ------------------------------------------------------------ decompress
    def _container_of_active_layer(self) -> tuple[str, str]:
        """(container, model) remembered on the active layer or on a decoded layer in its group."""
        layer = self.iface.activeLayer()
        if layer is None:
            return "", ""
        candidates = [layer]
        node = QgsProject.instance().layerTreeRoot().findLayer(layer.id())
        group = node.parent() if node is not None else None
        candidates += [c.layer() for c in (group.findLayers() if group is not None else []) if c.layer() is not None]
        for candidate in candidates:
            if candidate.customProperty(PROP_CONTAINER):
                return str(candidate.customProperty(PROP_CONTAINER)), str(candidate.customProperty(PROP_MODEL) or "")
        return "", ""

    def _canvas_extent(self):
        canvas = self.iface.mapCanvas()
        return canvas.extent(), crs_text(canvas.mapSettings().destinationCrs())

    def show_decompress_dialog(self, checked=False, extent_only=False):
        extent, crs = self._canvas_extent()
        _, info, problem = self.worker_status()
        container, model = self._container_of_active_layer()
        dlg = DecompressDialog(self.iface.mainWindow(), container=container, model=model, extent=extent, extent_crs=crs, extent_only=extent_only, worker_problem=problem,
                               enhance_available=None if info is None else info.get("enhance"))
        params = dlg.params() if dlg.exec_() else None
        dlg.deleteLater()
        if params is not None:
            self.start_decompress(params)

    def show_extent_dialog(self, checked=False):
        self.show_decompress_dialog(extent_only=True)

    def start_decompress(self, params: DecompressParams, worker: WorkerCommand | None = None) -> CodecTask | None:
        worker = self._worker_or_message(worker)
        if worker is None:
            return None
        what = "map extent of " if params.extent_only else ""
        stem = Path(params.container).stem
        task = CodecTask(f"Code-RSIC: decode {what}{stem}", self._job(params), worker,
                         on_finished=lambda t: self._decompress_done(t, params))
        return self._submit(task)

    def _decompress_done(self, task: CodecTask, params: DecompressParams) -> None:
        self.tasks.discard(task)
        stem = Path(params.container).stem
        if task.was_canceled:
            self._message("info", f"Decoding {stem} was canceled; no files were written")
            return
        if not task.succeeded:
            self._message("critical", f"Decoding {stem} failed: {task.error}")
            return
        res = task.result
        part = "map extent " if params.extent_only else "area " if params.aoi is not None else ""
        label = f"{short_name(stem)} · decoded{' ' + part.strip() if part else ''}"
        original = find_layer_by_file_name(res.get("source_name") or "")
        sibling = find_layer_by_container(params.container)
        try:
            if original is not None:
                layer, group = add_decoded_layer(res["output"], label, original=original, bands=res.get("bands"),
                                                 container=params.container)
            elif sibling is not None:
                layer, group = add_decoded_layer(res["output"], label, original=sibling, style_from=sibling,
                                                 container=params.container)
            else:
                layer, group = add_decoded_layer(res["output"], label, container=params.container)
        except RuntimeError as exc:
            self._message("critical", str(exc))
            return
        if params.model:
            layer.setCustomProperty(PROP_MODEL, params.model)
        self._show_group(group)
        task.decoded_layer = layer
        tiles = f"{res.get('tiles')} tile(s), " if params.extent_only or params.aoi is not None else ""
        self._message("success", tiles + summary_text(res, f"{Path(params.container).name} -> {Path(res['output']).name}"))

    def show_area_dialog(self, checked=False):
        """Decode the tiles under the selected polygons (the active polygon layer's, else any layer's)."""
        layer = selection_layer(self.iface.activeLayer())
        if layer is None:
            self._message("warning", "Select one or more polygons in a polygon layer first (the area to decode)")
            return
        aoi, n = selected_area(layer)
        container, model = self._container_of_active_layer()
        pair = find_pair(self.iface.activeLayer()) if not container else None
        if pair is not None:
            container, model = pair.container, str(pair.decoded.customProperty(PROP_MODEL) or "")
        _, info, problem = self.worker_status()
        dlg = DecompressDialog(self.iface.mainWindow(), container=container, model=model, worker_problem=problem,
                               enhance_available=None if info is None else info.get("enhance"), aoi=aoi,
                               aoi_label=f"{n} polygon(s) of {layer.name()}")
        params = dlg.params() if dlg.exec_() else None
        dlg.deleteLater()
        if params is not None:
            self.start_decompress(params)

    # ------------------------------------------------------------ before/after comparisons
    def _pair(self, what: str, need_original: bool = True) -> Pair | None:
        pair = find_pair(self.iface.activeLayer())
        if pair is None:
            self._message("warning", f"{what} needs a decoded layer: compress a layer or decode a container first, "
                                     "then select it (or its group)")
            return None
        if need_original and (pair.original_path is None or pair.decoded_path is None):
            self._message("warning", f"{what} needs the original and the decoded layer side by side (local files) "
                                     "in the Code-RSIC before/after group")
            return None
        return pair

    def toggle_swipe(self, checked=False):
        canvas = self.iface.mapCanvas()
        if not checked:
            if canvas.mapTool() is self.swipe_tool:
                canvas.unsetMapTool(self.swipe_tool)
            return
        pair = self._pair("Swipe", need_original=False)
        if pair is None:
            self.swipe_action.setChecked(False)
            return
        from .swipe import SwipeTool

        self.swipe_tool = SwipeTool(canvas, pair.decoded, pair.original)
        self.swipe_tool.setAction(self.swipe_action)  # unticked when another map tool takes over
        canvas.setMapTool(self.swipe_tool)

    def _comparison_task(self, description: str, job: dict, on_done, worker=None) -> CodecTask | None:
        worker = self._worker_or_message(worker)
        if worker is None:
            return None
        st = PluginSettings.load()
        task = CodecTask(description, add_extras(job, st.job_extras()), worker, on_finished=on_done)
        return self._submit(task)

    def show_difference(self, checked=False, worker: WorkerCommand | None = None) -> CodecTask | None:
        pair = self._pair("The difference layer")
        if pair is None:
            return None
        bands = [int(b) for b in str(pair.decoded.customProperty(PROP_BANDS) or "").split(",") if b]
        out = unique_path(Path(pair.decoded_path).with_suffix(""), ".diff.tif")
        job = diff_job(pair.original_path, pair.decoded_path, out, bands or None)
        return self._comparison_task(f"Code-RSIC: difference of {pair.decoded.name()}", job,
                                     lambda t: self._difference_done(t, pair), worker)

    def _difference_done(self, task: CodecTask, pair: Pair) -> None:
        self.tasks.discard(task)
        if not self._comparison_ok(task, "The difference layer"):
            return
        try:
            task.decoded_layer = add_difference_layer(task.result["output"], pair, task.result)
        except RuntimeError as exc:
            self._message("critical", str(exc))
            return
        self._show_group(pair.group, task.decoded_layer)
        mean, top = task.result.get("mean_abs_diff"), task.result.get("max_abs_diff")
        stats = "no valid pixels" if mean is None else f"mean |difference| {mean:.2f}, max {top:.1f}"
        self._message("success", f"Difference layer {Path(task.result['output']).name}: {stats}")

    def show_quality(self, checked=False, worker: WorkerCommand | None = None) -> CodecTask | None:
        pair = self._pair("The tile quality layer")
        if pair is None:
            return None
        if not Path(pair.container).is_file():
            self._message("warning", f"The container of {pair.decoded.name()} is gone: {pair.container}")
            return None
        out = unique_path(Path(pair.decoded_path).with_suffix(""), ".quality.gpkg")
        job = quality_map_job(pair.container, pair.original_path, pair.decoded_path, out)
        return self._comparison_task(f"Code-RSIC: tile quality of {pair.decoded.name()}", job,
                                     lambda t: self._quality_done(t, pair), worker)

    def _quality_done(self, task: CodecTask, pair: Pair) -> None:
        self.tasks.discard(task)
        if not self._comparison_ok(task, "The tile quality layer"):
            return
        res = task.result
        try:
            task.decoded_layer = add_quality_layer(res["output"], pair)
        except RuntimeError as exc:
            self._message("critical", str(exc))
            return
        self._show_group(pair.group, task.decoded_layer)
        lpips = "" if "lpips" in res.get("metrics", []) else " (no LPIPS: its weights are not set up)"
        lo, hi, tiles = res.get("psnr_min"), res.get("psnr_max"), res.get("tiles")
        psnr = ("no PSNR" if lo is None else f"PSNR {lo:.1f} dB" if f"{lo:.1f}" == f"{hi:.1f}"
                else f"PSNR {lo:.1f} to {hi:.1f} dB")
        self._message("success", f"Tile quality of {tiles} tile{'' if tiles == 1 else 's'}: {psnr}{lpips}")

    def _comparison_ok(self, task: CodecTask, what: str) -> bool:
        if task.was_canceled:
            self._message("info", f"{what} was canceled; no files were written")
            return False
        if not task.succeeded:
            self._message("critical", f"{what} failed: {task.error}")
            return False
        return True

    # ------------------------------------------------------------ settings
    def show_settings(self, checked=False):
        dlg = SettingsDialog(self.iface.mainWindow(), on_setup=self.show_setup)
        if dlg.exec_():
            self._pings.clear()
        dlg.deleteLater()

    def show_setup(self, checked=False):
        from .setup_task import SetupDialog

        dlg = SetupDialog(self.iface.mainWindow())
        plan = dlg.plan if dlg.exec_() else None
        dlg.deleteLater()
        if plan is not None:
            self.start_setup(plan)

    def start_setup(self, plan):
        """Run a set-up plan as a background task, its log in a window; ends with Test worker."""
        from .setup_task import SetupLogDialog, SetupTask

        task = SetupTask(plan, on_finished=self._setup_done)
        self.last_task = task
        self.tasks.add(task)
        self.setup_log = SetupLogDialog(task, self.iface.mainWindow())
        self.setup_log.show()
        QgsApplication.taskManager().addTask(task)
        return task

    def _setup_done(self, task) -> None:
        self.tasks.discard(task)
        self._pings.clear()
        if self.setup_log is not None and self.setup_log.task is task:
            self.setup_log.refresh()  # the result, at once
        level = "success" if task.succeeded else "info" if task.was_canceled else "critical"
        self._message(level, task.result_text())
