"""Dialogs: compress a layer, decompress a container (whole or map extent), settings.

Each dialog turns its widgets into a parameter object (``jobs.CompressParams`` /
``jobs.DecompressParams``: core.options' dataclasses plus the plugin's files) and checks
it with a plain ``validate_*`` function built on core's checks; the problems are listed in
the dialog itself (red text) and the OK button stays disabled until they are fixed, so a
bad choice never reaches the worker as a traceback. The widgets' defaults are those
parameter objects' defaults, their limits core.options' constants.
"""

from __future__ import annotations


from qgis.core import QgsMapLayerProxyModel, QgsRasterLayer, QgsRectangle
from qgis.gui import QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ._contract import options
from .jobs import (
    DEFAULT_ENHANCE_INDEX,
    ENHANCE_CHOICES,
    CompressParams,
    DecompressParams,
    check_container,
    check_output,
    compress_problems,
    decompress_problems,
    default_decoded_path,
    enhancement,
    model_quality_levels,
)
from .layers import SUPPORTED_TYPES, band_names, default_bands, dtype_text, layer_file_path, layer_source, source_stem
from .settings import MAX_THREADS, PluginSettings

MODEL_NAMES = (options.DEFAULT_MODEL,)  # the registry models the model box offers
FIDELITY_STEP = 0.1  # one step below the fidelity range means "the enhancer's default"
CONTAINER_FILTER = f"Code-RSIC container (*{options.CONTAINER_SUFFIX})"
GEOTIFF_FILTER = "GeoTIFF (*.tif *.tiff)"


# ---------------------------------------------------------------- compress

def validate_compress(p: CompressParams, layer: QgsRasterLayer | None) -> list[str]:
    """Problems with the choices, as sentences for the dialog (empty: OK)."""
    errors: list[str] = []
    if layer is None:
        return ["Choose a raster layer"]
    if not p.input:
        return [layer_source(layer)[1] or f"Layer '{layer.name()}' is not a raster GDAL can read"]
    if not p.bands:
        too_many = options.too_many_bands_problem(f"Layer '{layer.name()}'", layer.bandCount())
        errors.append(f"{too_many.split(':')[0]}, more than the {options.MAX_DEFAULT_BANDS} coded by default: "
                      "tick the bands to code" if too_many else "Choose at least one band")
    else:
        bad = [b for b in p.bands if not 1 <= b <= layer.bandCount()]
        if bad:
            errors.append(f"Band {bad[0]} does not exist: the layer has bands 1..{layer.bandCount()}")
        else:
            types = {layer.dataProvider().dataType(b) for b in p.bands}
            unsupported = [t for t in types if t not in SUPPORTED_TYPES]
            if unsupported:
                errors.append(f"Code-RSIC codes {dtype_text()} bands only; the chosen bands are "
                              f"{', '.join(sorted(str(getattr(t, 'name', t)) for t in unsupported))}")
            elif len(types) > 1:
                errors.append("The chosen bands mix data types "
                              f"({', '.join(sorted(SUPPORTED_TYPES[t] for t in types))}): choose bands of one type")
    errors += compress_problems(p)
    errors += check_output(p.output, "compressed file", p.overwrite, {"input layer's file": p.input})
    if p.output and not p.output.lower().endswith(options.CONTAINER_SUFFIX):
        errors.append(f"The compressed file should end with {options.CONTAINER_SUFFIX}")
    if p.decode:
        errors += check_output(p.decoded_output, "decoded GeoTIFF", p.overwrite,
                               {"input layer's file": p.input, "compressed file": p.output})
    return errors


def _model_row(parent: QWidget) -> tuple[QWidget, QComboBox]:
    box = QWidget(parent)
    row = QHBoxLayout(box)
    row.setContentsMargins(0, 0, 0, 0)
    combo = QComboBox(box)
    combo.setEditable(True)
    combo.addItems(MODEL_NAMES)
    combo.setToolTip(f"A model name (default {options.DEFAULT_MODEL_CHOICE}) or a .safetensors weights file")
    browse = QPushButton("…", box)
    browse.setMaximumWidth(32)

    def pick():
        from qgis.PyQt.QtWidgets import QFileDialog

        path, _ = QFileDialog.getOpenFileName(box, "Model weights", "", "Weights (*.safetensors)")
        if path:
            combo.setEditText(path)

    browse.clicked.connect(pick)
    row.addWidget(combo, 1)
    row.addWidget(browse)
    return box, combo


def _enhance_box(parent: QWidget) -> QComboBox:
    """Whether to enhance the decoded image with the codebook prior; defaults to core's
    choice (automatic: "auto", the worker applies decompress's rule)."""
    box = QComboBox(parent)
    for label, value in ENHANCE_CHOICES:
        box.addItem(label, value)
    box.setCurrentIndex(DEFAULT_ENHANCE_INDEX)
    box.setToolTip("Decoder-side Code-RSIC enhancement: restores texture at low rates, costs no bits. "
                   "Automatic enhances the qualities the shipped enhancer is made for (like the command line); "
                   "turn it off for measurements on pixel values")
    return box


def _enhance_value(box: QComboBox) -> bool | str:
    return ENHANCE_CHOICES[max(0, box.currentIndex())][1]


def _fidelity_box(parent: QWidget) -> QDoubleSpinBox:
    """Fidelity over core's FIDELITY_RANGE; one step below it means "the enhancer's default"."""
    lo, hi = options.FIDELITY_RANGE
    box = QDoubleSpinBox(parent)
    box.setRange(lo - FIDELITY_STEP, hi)
    box.setSingleStep(FIDELITY_STEP)
    box.setDecimals(2)
    box.setSpecialValueText("enhancer default")
    box.setValue(box.minimum())
    box.setToolTip(f"{lo:g} = most texture from the codebook prior, {hi:g} = most faithful to the decoded image")
    return box


def _fidelity_value(box: QDoubleSpinBox) -> float | None:
    return None if box.value() < options.FIDELITY_RANGE[0] else box.value()


def _file_widget(parent: QWidget, mode, file_filter: str | None = None) -> QgsFileWidget:
    """A path picker: ``mode`` is a ``QgsFileWidget`` storage mode (SaveFile, GetFile, GetDirectory)."""
    widget = QgsFileWidget(parent)
    widget.setStorageMode(mode)
    if file_filter:
        widget.setFilter(file_filter)
    return widget


def _add_enhancement_rows(dialog: QWidget, form) -> None:
    """The "Enhancement" and "Fidelity" rows of a dialog that decodes (``dialog.enhance``, ``dialog.fidelity``)."""
    dialog.enhance = _enhance_box(dialog)
    dialog.fidelity = _fidelity_box(dialog)
    form.addRow("Enhancement", dialog.enhance)
    form.addRow("Fidelity", dialog.fidelity)


def _model_text(combo: QComboBox) -> str | None:
    """The model box's choice; None for the default (the registry's, or the container's)."""
    text = combo.currentText().strip()
    return None if text in ("", options.DEFAULT_MODEL) else text


def _device_box(parent: QWidget, device: str) -> QComboBox:
    box = QComboBox(parent)
    box.addItems(options.DEVICES)
    box.setCurrentText(device if device in options.DEVICES else options.DEFAULT_DEVICE)
    return box


def _add_run_rows(dialog: QWidget, form, device: str) -> None:
    """The "Device" and "Overwrite existing files" rows of a dialog that writes files."""
    dialog.device = _device_box(dialog, device)
    form.addRow("Device", dialog.device)
    dialog.overwrite = QCheckBox("Overwrite existing files", dialog)
    form.addRow(dialog.overwrite)


class _ValidatingDialog(QDialog):
    """A dialog with a red problem list above OK/Cancel; OK works only without problems."""

    def _finish_layout(self, layout: QVBoxLayout) -> None:
        self.problems = QLabel(self)
        self.problems.setObjectName("problems")
        self.problems.setWordWrap(True)
        self.problems.setStyleSheet("color: #b00020;")
        self.problems.setTextFormat(Qt.PlainText)
        layout.addWidget(self.problems)
        self.buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel, self)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)

    def errors(self) -> list[str]:
        raise NotImplementedError

    def refresh(self, *_args) -> list[str]:
        errors = self.errors()
        self.problems.setText("\n".join(f"• {e}" for e in errors))
        self.problems.setVisible(bool(errors))
        self.buttons.button(QDialogButtonBox.Ok).setEnabled(not errors)
        return errors

    def accept(self) -> None:
        if not self.refresh():
            super().accept()


class CompressDialog(_ValidatingDialog):
    def __init__(self, parent=None, layer: QgsRasterLayer | None = None, worker_problem: str | None = None,
                 enhance_available: bool | None = None):
        super().__init__(parent)
        self.setWindowTitle("Compress layer with Code-RSIC")
        self.worker_problem = worker_problem
        self.enhance_available = enhance_available
        self._outputs_touched = False
        st = PluginSettings.load()
        layout = QVBoxLayout(self)
        form = QFormLayout()
        layout.addLayout(form)

        self.layer_combo = QgsMapLayerComboBox(self)
        self.layer_combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        form.addRow("Raster layer", self.layer_combo)

        self.band_list = QListWidget(self)
        self.band_list.setMaximumHeight(110)
        form.addRow("Bands", self.band_list)

        rate = QGroupBox("Rate", self)
        rate_form = QFormLayout(rate)
        self.quality_radio = QRadioButton("Quality", rate)
        self.bpp_radio = QRadioButton("Target bits per pixel", rate)
        group = QButtonGroup(self)
        group.addButton(self.quality_radio)
        group.addButton(self.bpp_radio)
        self.quality_radio.setChecked(True)
        defaults = CompressParams()
        self.quality = QDoubleSpinBox(rate)
        self.quality.setRange(options.MIN_QUALITY, options.DEFAULT_MODEL_LEVELS)
        self.quality.setSingleStep(0.5)
        self.quality.setValue(defaults.quality)
        levels = options.DEFAULT_MODEL_LEVELS
        self.quality.setToolTip(f"{options.MIN_QUALITY:g} = smallest file ... {levels} = best quality with "
                                f"{options.DEFAULT_MODEL} (fractions allowed; 1-{levels} are the trained levels)")
        self.target_bpp = QDoubleSpinBox(rate)
        self.target_bpp.setRange(0, options.MAX_TARGET_BPP)
        self.target_bpp.setDecimals(3)
        self.target_bpp.setSingleStep(0.05)
        self.target_bpp.setValue(options.DEFAULT_TARGET_BPP)
        self.preset = QComboBox(rate)
        self.preset.setObjectName("preset")
        for name, q in options.QUALITY_PRESETS:
            self.preset.addItem(f"{name[0].upper()}{name[1:]} (quality {q:g})", q)
        self.preset.addItem("Custom", None)
        self.preset.setToolTip("Keeps features: MS-SSIM about 0.95 on aerial imagery (results/default_quality.json); "
                               "smallest: the lowest trained rate, for previews and transmission")
        self.preset.currentIndexChanged.connect(self._preset_chosen)
        self.quality.valueChanged.connect(self._quality_edited)
        rate_form.addRow("Preset", self.preset)
        rate_form.addRow(self.quality_radio, self.quality)
        rate_form.addRow(self.bpp_radio, self.target_bpp)
        form.addRow(rate)

        self.tile = QSpinBox(self)
        self.tile.setRange(options.MIN_TILE, options.MAX_TILE)
        self.tile.setSingleStep(options.TILE_MULTIPLE)
        self.tile.setValue(defaults.tile)
        self.overlap = QSpinBox(self)
        self.overlap.setRange(0, options.MAX_OVERLAP)
        self.overlap.setSingleStep(8)
        self.overlap.setValue(defaults.overlap)
        form.addRow("Tile size (px)", self.tile)
        form.addRow("Tile overlap (px)", self.overlap)

        self.output = _file_widget(self, QgsFileWidget.SaveFile, CONTAINER_FILTER)
        form.addRow("Compressed file", self.output)

        self.decode = QCheckBox("Decode it again and add a before/after comparison", self)
        self.decode.setChecked(defaults.decode)
        form.addRow(self.decode)
        self.decoded_output = _file_widget(self, QgsFileWidget.SaveFile, GEOTIFF_FILTER)
        form.addRow("Decoded GeoTIFF", self.decoded_output)

        _add_enhancement_rows(self, form)

        self.model_box, self.model = _model_row(self)
        form.addRow("Model", self.model_box)
        _add_run_rows(self, form, st.device)
        self._finish_layout(layout)

        self.layer_combo.layerChanged.connect(self._layer_changed)
        self.model.currentTextChanged.connect(self._model_changed)  # before refresh: the quality range
        for signal in (self.band_list.itemChanged, self.quality_radio.toggled, self.quality.valueChanged,
                       self.target_bpp.valueChanged, self.tile.valueChanged, self.overlap.valueChanged,
                       self.decode.toggled, self.enhance.currentIndexChanged, self.fidelity.valueChanged,
                       self.model.currentTextChanged, self.device.currentTextChanged, self.overwrite.toggled):
            signal.connect(self.refresh)
        self.output.fileChanged.connect(self._output_edited)
        self.decoded_output.fileChanged.connect(self._output_edited)
        self.decode.toggled.connect(self._sync_enabled)
        self.enhance.currentIndexChanged.connect(self._sync_enabled)
        self.quality_radio.toggled.connect(self._sync_enabled)
        if layer is not None:
            self.layer_combo.setLayer(layer)
        self._layer_changed(self.layer_combo.currentLayer())
        self._sync_enabled()

    # -- widgets -> params
    def _layer_changed(self, layer) -> None:
        self.band_list.blockSignals(True)
        self.band_list.clear()
        if isinstance(layer, QgsRasterLayer):
            chosen = set(default_bands(layer))
            for b, name in enumerate(band_names(layer), start=1):
                item = QListWidgetItem(name, self.band_list)
                item.setData(Qt.UserRole, b)
                item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
                item.setCheckState(Qt.Checked if b in chosen else Qt.Unchecked)
            path = layer_file_path(layer)
            if path and not self._outputs_touched:
                stem = source_stem(path)
                self._set_output(self.output, f"{stem}{options.CONTAINER_SUFFIX}")
                self._set_output(self.decoded_output, f"{stem}{options.DECODED_SUFFIX}")
        self.band_list.blockSignals(False)
        self.refresh()

    def _set_output(self, widget: QgsFileWidget, path: str) -> None:
        widget.blockSignals(True)
        widget.setFilePath(path)
        widget.blockSignals(False)

    def _output_edited(self, *_args) -> None:
        self._outputs_touched = True
        self.refresh()

    def _preset_chosen(self, index: int) -> None:
        q = self.preset.itemData(index)
        if q is not None:
            self.quality_radio.setChecked(True)
            self.quality.setValue(q)

    def _quality_edited(self, value: float) -> None:
        """The preset follows the quality: the one it names, else Custom."""
        match = next((i for i in range(self.preset.count()) if self.preset.itemData(i) == value),
                     self.preset.count() - 1)
        self.preset.blockSignals(True)
        self.preset.setCurrentIndex(match)
        self.preset.blockSignals(False)

    def _model_changed(self, text: str) -> None:
        """A weights file with more rate levels than the default model widens the quality range
        (never narrows it: a quality above a smaller model's levels is reported, not clipped)."""
        _, levels = model_quality_levels(text.strip())
        self.quality.setMaximum(max(options.DEFAULT_MODEL_LEVELS, levels or 0))

    def _sync_enabled(self, *_args) -> None:
        self.quality.setEnabled(self.quality_radio.isChecked())
        self.target_bpp.setEnabled(not self.quality_radio.isChecked())
        self.decoded_output.setEnabled(self.decode.isChecked())
        self.enhance.setEnabled(self.decode.isChecked())
        self.fidelity.setEnabled(self.decode.isChecked() and _enhance_value(self.enhance) is not False)

    def selected_bands(self) -> list[int]:
        return [self.band_list.item(i).data(Qt.UserRole) for i in range(self.band_list.count())
                if self.band_list.item(i).checkState() == Qt.Checked]

    def set_bands(self, bands: list[int]) -> None:
        for i in range(self.band_list.count()):
            item = self.band_list.item(i)
            item.setCheckState(Qt.Checked if item.data(Qt.UserRole) in bands else Qt.Unchecked)

    def params(self) -> CompressParams:
        layer = self.layer_combo.currentLayer()
        return CompressParams(
            layer_id=layer.id() if layer else "",
            input=(layer_file_path(layer) or "") if layer else "",
            bands=self.selected_bands(),
            quality=self.quality.value(),
            target_bpp=self.target_bpp.value() if self.bpp_radio.isChecked() else None,
            tile=self.tile.value(),
            overlap=self.overlap.value(),
            enhance=_enhance_value(self.enhance),
            enhancement=enhancement(_enhance_value(self.enhance), _fidelity_value(self.fidelity)),
            output=self.output.filePath().strip(),
            decode=self.decode.isChecked(),
            decoded_output=self.decoded_output.filePath().strip(),
            model=_model_text(self.model),
            device=self.device.currentText(),
            overwrite=self.overwrite.isChecked(),
        )

    def errors(self) -> list[str]:
        p = self.params()
        errors = validate_compress(p, self.layer_combo.currentLayer())
        if p.decode and p.enhance is True and self.enhance_available is False:
            errors.append("Enhancement is not available in the worker's Code-RSIC version: "
                          "set Enhancement to Automatic or Off")
        if self.worker_problem:
            errors.append(self.worker_problem)
        return errors


# ---------------------------------------------------------------- decompress

def validate_decompress(p: DecompressParams) -> list[str]:
    errors = check_container(p.container)
    if p.extent_only and (p.extent is None or p.extent.isEmpty()):
        errors.append("The map extent is empty")
    if p.aoi is not None and not p.aoi.strip():
        errors.append("Select the polygons of the area to decode first")
    errors += decompress_problems(p)
    errors += check_output(p.output, "decoded GeoTIFF", p.overwrite, {"container": p.container})
    return errors


class DecompressDialog(_ValidatingDialog):
    def __init__(self, parent=None, container: str = "", model: str = "", extent: QgsRectangle | None = None,
                 extent_crs: str = "",
                 extent_only: bool = False, worker_problem: str | None = None,
                 enhance_available: bool | None = None, aoi: str | None = None, aoi_label: str = ""):
        super().__init__(parent)
        self.setWindowTitle("Decode selected area" if aoi is not None else "Decode current map extent"
                            if extent_only else f"Decompress {options.CONTAINER_SUFFIX} file")
        self.aoi, self.aoi_label = aoi, aoi_label
        self.extent, self.extent_crs = extent, extent_crs
        self.worker_problem = worker_problem
        self.enhance_available = enhance_available
        self._output_touched = False
        st = PluginSettings.load()
        layout = QVBoxLayout(self)
        form = QFormLayout()
        layout.addLayout(form)
        self.container = _file_widget(self, QgsFileWidget.GetFile, CONTAINER_FILTER)
        form.addRow("Compressed file", self.container)
        self.whole = QRadioButton("Whole raster", self)
        self.in_extent = QRadioButton("Only the current map extent (decodes just the tiles in view)", self)
        group = QButtonGroup(self)
        group.addButton(self.whole)
        group.addButton(self.in_extent)
        self.in_area = QRadioButton(f"Only the selected area ({aoi_label or 'no polygons selected'}: decodes just "
                                    "the tiles under it, nodata outside)", self)
        group.addButton(self.in_area)
        (self.in_area if aoi is not None else self.in_extent if extent_only else self.whole).setChecked(True)
        self.in_extent.setEnabled(extent is not None)
        self.in_area.setEnabled(aoi is not None)
        form.addRow(self.whole)
        form.addRow(self.in_extent)
        form.addRow(self.in_area)
        self.output = _file_widget(self, QgsFileWidget.SaveFile, GEOTIFF_FILTER)
        form.addRow("Decoded GeoTIFF", self.output)
        _add_enhancement_rows(self, form)
        self.model_box, self.model = _model_row(self)
        self.model.setToolTip(f"Leave at {options.DEFAULT_MODEL} to use the model the file was made with, "
                              "or give a weights file")
        if model:
            self.model.setEditText(model)
        form.addRow("Model", self.model_box)
        _add_run_rows(self, form, st.device)
        self._finish_layout(layout)

        self.container.fileChanged.connect(self._container_changed)
        self.output.fileChanged.connect(self._output_edited)
        for signal in (self.whole.toggled, self.enhance.currentIndexChanged, self.fidelity.valueChanged,
                       self.model.currentTextChanged, self.device.currentTextChanged, self.overwrite.toggled):
            signal.connect(self.refresh)
        for radio in (self.whole, self.in_area):
            radio.toggled.connect(lambda *_: self._container_changed(self.container.filePath()))
        self.enhance.currentIndexChanged.connect(
            lambda *_: self.fidelity.setEnabled(_enhance_value(self.enhance) is not False))
        if container:
            self.container.setFilePath(container)
        self._container_changed(self.container.filePath())

    def _container_changed(self, path: str) -> None:
        if path and not self._output_touched:
            self.output.blockSignals(True)
            self.output.setFilePath(default_decoded_path(path, self.in_extent.isChecked(), self.in_area.isChecked()))
            self.output.blockSignals(False)
        self.refresh()

    def _output_edited(self, *_args) -> None:
        self._output_touched = True
        self.refresh()

    def params(self) -> DecompressParams:
        return DecompressParams(
            container=self.container.filePath().strip(),
            output=self.output.filePath().strip(),
            extent_only=self.in_extent.isChecked(),
            aoi=self.aoi if self.in_area.isChecked() else None,
            aoi_label=self.aoi_label if self.in_area.isChecked() else "",
            extent=self.extent,
            extent_crs=self.extent_crs,
            model=_model_text(self.model),
            device=self.device.currentText(),
            enhance=_enhance_value(self.enhance),
            enhancement=enhancement(_enhance_value(self.enhance), _fidelity_value(self.fidelity)),
            overwrite=self.overwrite.isChecked(),
        )

    def errors(self) -> list[str]:
        p = self.params()
        errors = validate_decompress(p)
        if p.enhance is True and self.enhance_available is False:
            errors.append("Enhancement is not available in the worker's Code-RSIC version: "
                          "set Enhancement to Automatic or Off")
        if self.worker_problem:
            errors.append(self.worker_problem)
        return errors


# ---------------------------------------------------------------- settings

class SettingsDialog(QDialog):
    """Where the worker Python is, and how it runs."""

    def __init__(self, parent=None, on_setup=None):
        super().__init__(parent)
        self.setWindowTitle("Code-RSIC settings")
        self.on_setup = on_setup
        st = PluginSettings.load()
        layout = QVBoxLayout(self)
        form = QFormLayout()
        layout.addLayout(form)
        self.python = _file_widget(self, QgsFileWidget.GetFile)
        self.python.setFilePath(st.worker_python)
        self.python.lineEdit().setPlaceholderText("automatic ($CODERSIC_PYTHON, the checkout's .venv, python3)")
        form.addRow("Worker Python", self.python)
        self.source = _file_widget(self, QgsFileWidget.GetDirectory)
        self.source.setFilePath(st.source_dir)
        self.source.lineEdit().setPlaceholderText("optional: a Code-RSIC source folder (if not pip-installed)")
        form.addRow("Code-RSIC source folder", self.source)
        self.enhancer = _file_widget(self, QgsFileWidget.GetFile, "Enhancer weights (*.safetensors)")
        self.enhancer.setFilePath(st.enhancer)
        self.enhancer.lineEdit().setPlaceholderText("optional: enhancer weights (default: the shipped enhancer)")
        form.addRow("Enhancer weights", self.enhancer)
        self.threads = QSpinBox(self)
        self.threads.setRange(0, MAX_THREADS)
        self.threads.setSpecialValueText("all cores")
        self.threads.setValue(st.threads)
        form.addRow("Worker CPU threads", self.threads)
        self.device = _device_box(self, st.device)
        form.addRow("Default device", self.device)
        setup = QPushButton("Set up worker environment…", self)
        setup.setToolTip("Create a Python environment with PyTorch and Code-RSIC and make it the worker "
                         "(the current setting stays until the new one works)")
        setup.clicked.connect(self._setup)
        setup.setEnabled(on_setup is not None)
        layout.addWidget(setup)
        test = QPushButton("Test worker", self)
        self.status = QLabel(self)
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        test.clicked.connect(self.test_worker)
        layout.addWidget(test)
        layout.addWidget(self.status)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel, self)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def _setup(self) -> None:
        """Close these settings unsaved (the set-up writes the worker Python when it succeeds)."""
        self.reject()
        self.on_setup()

    def settings(self) -> PluginSettings:
        return PluginSettings(self.python.filePath().strip(), self.source.filePath().strip(),
                              self.threads.value(), self.device.currentText(), self.enhancer.filePath().strip())

    def test_worker(self) -> str:
        """Ping the worker, then code and decode one small tile with it (device and time shown)."""
        from qgis.PyQt.QtWidgets import QApplication

        from .worker_client import find_worker, forget_found_workers, test_worker

        st = self.settings()
        forget_found_workers()
        self.status.setText("Testing: coding and decoding a small tile…")
        QApplication.processEvents()
        try:
            cmd = find_worker(st.worker_python, st.source_dir)
            _, text = test_worker(cmd, st.device, st.threads)
        except Exception as exc:  # noqa: BLE001 - shown to the user
            text = f"Not working: {exc}"
        self.status.setText(text)
        return text

    def accept(self) -> None:
        self.settings().save()
        from .worker_client import forget_found_workers

        forget_found_workers()
        super().accept()
