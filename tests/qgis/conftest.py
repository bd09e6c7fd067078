"""Headless QGIS fixtures for the plugin tests (system Python with python3-qgis).

Run:  QT_QPA_PLATFORM=offscreen /usr/bin/python3 -m pytest tests/qgis

The worker runs in the project's virtualenv (``CODERSIC_PYTHON``, default ``.venv/bin/python``),
never in this process: QGIS must not import torch or the rasterio wheel. Under a Python
without QGIS (the project's own ``pytest`` run) this folder is skipped.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEST_DATA = ROOT / "tests" / "data"
SHARED_FIXTURES = ROOT.parent / "shared" / "data" / "fixtures"
NEON = TEST_DATA / "neon_rgb_uint8_0p1m_utm17n_deepforest_OSBS_029.tif"

if importlib.util.find_spec("qgis") is None:  # e.g. the project's venv: nothing to test here
    collect_ignore_glob = ["test_*.py"]
else:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ["GDAL_PAM_ENABLED"] = "NO"  # no .aux.xml statistics next to the committed fixtures
    # Keep QgsSettings (worker Python, threads) out of the user's real QGIS profile: a
    # QgsApplication without a profile keeps them under $XDG_DATA_HOME/profiles/default.
    _CONFIG_HOME = tempfile.mkdtemp(prefix="coderic-qgis-tests-")
    os.environ["XDG_CONFIG_HOME"] = _CONFIG_HOME
    os.environ["XDG_DATA_HOME"] = _CONFIG_HOME
    if not os.environ.get("CODERSIC_PYTHON") and (ROOT / ".venv" / "bin" / "python").exists():
        os.environ["CODERSIC_PYTHON"] = str(ROOT / ".venv" / "bin" / "python")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))

TINY_WEIGHTS_CODE = """
import sys, torch
from core.models import REGISTRY, build_model, save_weights
torch.manual_seed(0)
spec = REGISTRY["elic-tiny"]
net = build_model(spec).eval()
net.update(force=True)
save_weights(net, spec, sys.argv[1])
"""


TINY_ENHANCER_CODE = """
import sys, torch
from core.models import save_enhancer
from core.models.hpin import Enhancer
from core.models.vqgan import TINY_CONFIG
torch.manual_seed(0)
save_enhancer(Enhancer(TINY_CONFIG).eval(), sys.argv[1])
"""


def worker_python() -> str | None:
    return os.environ.get("CODERSIC_PYTHON")


def worker_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    return env


@pytest.fixture(scope="session")
def qgis_app():
    """One QgsApplication (GUI enabled, offscreen) for the whole session."""
    from qgis.core import QgsApplication

    QgsApplication.setPrefixPath("/usr", True)
    app = QgsApplication([], True)
    app.initQgis()
    from qgis.core import QgsSettings

    QgsSettings().setValue("CodeRSIC/threads", 1)  # the test machine is shared
    yield app
    from qgis.core import QgsProject

    QgsProject.instance().clear()
    app.exitQgis()


@pytest.fixture(scope="session")
def processing(qgis_app):
    """The Processing framework (for ``processing.run``), initialised once."""
    from qgis.core import QgsApplication

    plugins = os.path.join(QgsApplication.pkgDataPath(), "python", "plugins")
    if plugins not in sys.path:
        sys.path.append(plugins)
    from processing.core.Processing import Processing

    Processing.initialize()
    import processing as processing_module

    return processing_module


@pytest.fixture(scope="session")
def worker_ready():
    """Skip tests that need the worker when no Python with the project is available."""
    py = worker_python()
    if not py or not Path(py).exists():
        pytest.skip("no worker Python: set CODERSIC_PYTHON to a Python with the project installed")
    probe = subprocess.run([py, "-c", "import torch, compressai, rasterio"], env=worker_env(),
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"worker Python {py} cannot import torch/compressai/rasterio: {probe.stderr.strip()[-200:]}")
    return py


@pytest.fixture(scope="session")
def tiny_weights(worker_ready, tmp_path_factory) -> str:
    """Seeded random elic-tiny weights, made by the worker Python (QGIS's Python has no torch)."""
    path = tmp_path_factory.mktemp("weights") / "elic-tiny.safetensors"
    subprocess.run([worker_ready, "-c", TINY_WEIGHTS_CODE, str(path)], env=worker_env(), check=True,
                   capture_output=True, timeout=600)
    return str(path)


@pytest.fixture(scope="session")
def tiny_enhancer(worker_ready, tmp_path_factory) -> str:
    """Seeded random tiny enhancer weights (the decoder-side Code-RSIC enhancer)."""
    probe = subprocess.run([worker_ready, "-c", "import core.enhance, core.models.hpin, core.models.vqgan"],
                           env=worker_env(), capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"this checkout has no Code-RSIC enhancer (core.enhance): {probe.stderr.strip()[-200:]}")
    path = tmp_path_factory.mktemp("enhancer") / "enhancer-tiny.safetensors"
    subprocess.run([worker_ready, "-c", TINY_ENHANCER_CODE, str(path)], env=worker_env(), check=True,
                   capture_output=True, timeout=600)
    return str(path)


class FakeIface:
    """The parts of QgisInterface the plugin uses, on real Qt/QGIS widgets."""

    def __init__(self):
        from qgis.core import QgsProject
        from qgis.gui import QgsLayerTreeMapCanvasBridge, QgsMapCanvas, QgsMessageBar
        from qgis.PyQt.QtWidgets import QMainWindow, QVBoxLayout, QWidget

        self.main = QMainWindow()
        self.raster_menu = self.main.menuBar().addMenu("&Raster")
        central = QWidget(self.main)
        layout = QVBoxLayout(central)
        self.bar = QgsMessageBar(central)
        self.canvas = QgsMapCanvas(central)
        layout.addWidget(self.bar)
        layout.addWidget(self.canvas)
        self.main.setCentralWidget(central)
        self.main.resize(800, 600)
        self.bridge = QgsLayerTreeMapCanvasBridge(QgsProject.instance().layerTreeRoot(), self.canvas)
        self._active = None
        self.toolbars = []

    def mainWindow(self):  # noqa: N802
        return self.main

    def rasterMenu(self):  # noqa: N802
        return self.raster_menu

    def _submenu(self, name, create):
        for action in self.raster_menu.actions():
            if action.menu() is not None and action.text() == name:
                return action.menu()
        return self.raster_menu.addMenu(name) if create else None

    def addPluginToRasterMenu(self, name, action):  # noqa: N802
        self._submenu(name, True).addAction(action)

    def removePluginRasterMenu(self, name, action):  # noqa: N802
        menu = self._submenu(name, False)
        if menu is not None:
            menu.removeAction(action)
            if not menu.actions():
                self.raster_menu.removeAction(menu.menuAction())

    def addToolBar(self, name):  # noqa: N802
        bar = self.main.addToolBar(name)
        self.toolbars.append(bar)
        return bar

    def messageBar(self):  # noqa: N802
        return self.bar

    def mapCanvas(self):  # noqa: N802
        return self.canvas

    def activeLayer(self):  # noqa: N802
        return self._active

    def setActiveLayer(self, layer):  # noqa: N802
        self._active = layer
        return True


@pytest.fixture
def iface(qgis_app):
    fake = FakeIface()
    yield fake
    from qgis.core import QgsProject

    QgsProject.instance().removeAllMapLayers()
    QgsProject.instance().layerTreeRoot().removeAllChildren()
    fake.main.close()
    fake.main.deleteLater()


@pytest.fixture
def plugin(iface):
    import coderic_qgis

    p = coderic_qgis.classFactory(iface)
    p.initGui()
    yield p
    p.unload()


@pytest.fixture
def neon_copy(tmp_path) -> Path:
    """The committed NEON RGB fixture (400 x 400, uint8, UTM 17N) copied into a scratch folder."""
    dst = tmp_path / "neon.tif"
    shutil.copyfile(NEON, dst)
    os.chmod(dst, 0o644)
    return dst


def wait_for(task, app, timeout: float = 300.0) -> None:
    """Process events until a QgsTask ended (and its finished() ran on this thread)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        app.processEvents()
        if task.done:
            for _ in range(5):  # let queued main-thread work (message bar) run
                app.processEvents()
                time.sleep(0.01)
            return
        time.sleep(0.02)
    raise AssertionError(f"task {task.description()} did not finish in {timeout} s")
