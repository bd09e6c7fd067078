"""*Set up worker environment…*: a real venv, real pip, a local package index (no network).

The index holds stand-ins for the third-party packages (one empty module each, at a
version the project's requirements accept) and the project's real wheel, so the whole
path runs: venv, pip install torch..., pip install the wheel, Test worker, the setting.
"""

from __future__ import annotations

import base64
import hashlib
import re
import sys
import zipfile
from pathlib import Path

import pytest

MODULES = {"pillow": "PIL"}  # distribution -> the module it installs, where they differ


def fake_wheel(folder: Path, name: str, version: str) -> Path:
    """A minimal valid wheel of ``name`` with one empty module."""
    dist = name.replace("-", "_")
    module = MODULES.get(name.lower(), dist)
    info = f"{dist}-{version}.dist-info"
    files = {f"{module}/__init__.py": b"",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
             f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    files[f"{info}/RECORD"] = ("\n".join(record + [f"{info}/RECORD,,"]) + "\n").encode()
    out = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(out, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return out


def _version_for(spec: str) -> str:
    exact = re.search(r"==\s*([\w.]+)", spec)
    low = re.search(r">=\s*([\w.]+)", spec)
    return exact.group(1) if exact else (low.group(1) if low else ("1.26.0" if "<2" in spec else "1.0"))


@pytest.fixture(scope="module")
def local_index(tmp_path_factory):
    """(folder with the project's wheel and stand-ins for its requirements, the project's wheel)."""
    from coderic_qgis import build
    from coderic_qgis.setup_env import requirements

    index = tmp_path_factory.mktemp("index")
    name, data = build.project_wheel(sys.executable)
    wheel = index / Path(name).name
    wheel.write_bytes(data)
    for req in requirements(wheel):
        dist = re.split(r"[\s<>=!~;\[(]", req, 1)[0]
        fake_wheel(index, dist, _version_for(req))
    return index, wheel


@pytest.fixture(autouse=True)
def keep_worker_setting(qgis_app):
    """The set-up writes the worker Python: the other tests get theirs back."""
    from qgis.core import QgsSettings

    before = QgsSettings().value("CodeRSIC/worker_python", "")
    yield
    QgsSettings().setValue("CodeRSIC/worker_python", before)


@pytest.fixture(autouse=True)
def isolated_pip(monkeypatch):
    """pip sees only the test's index: no pip configuration of this machine (indexes, find-links)."""
    import os

    for key in [k for k in os.environ if k.startswith("PIP_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)


@pytest.fixture(scope="module")
def base_python():
    from coderic_qgis.setup_env import find_base_pythons

    found, rejected = find_base_pythons()
    if not found:
        pytest.skip(f"no Python that can make venvs here: {rejected}")
    return found[0]


def _run(plugin, qgis_app, plan, timeout=600):
    from coderic_qgis.setup_task import wait_until_done

    task = plugin.start_setup(plan)
    assert wait_until_done(task, timeout), "the set-up task did not finish"
    for _ in range(5):
        qgis_app.processEvents()
    return task


def test_setup_builds_a_working_environment_and_swaps_it_in(plugin, qgis_app, tmp_path, local_index, base_python,
                                                          monkeypatch):
    from qgis.core import QgsSettings

    from coderic_qgis.settings import PluginSettings
    from coderic_qgis.setup_env import plan_setup, venv_python

    index, wheel = local_index
    monkeypatch.delenv("CODERSIC_PYTHON", raising=False)
    QgsSettings().setValue("CodeRSIC/worker_python", "/old/python")
    target = tmp_path / "env"
    plan = plan_setup(base_python, target, wheel, ["--no-index", "--find-links", str(index)])
    plan.test_tile = False  # the index holds stand-ins: no torch to code a tile with (see the next test)
    assert [s.name for s in plan.steps] == ["venv", "torch", "project"] and not plan.swap
    assert any(a.startswith("torch") for a in plan.steps[1].argv)
    task = _run(plugin, qgis_app, plan)
    assert task.succeeded, task.error + "\n" + task.log_text()[-2000:]
    log = task.log_text()
    assert "Successfully installed" in log and "code-rsic" in log.lower() and "Test worker" in log
    assert task.info["version"] and task.info["missing"] == []
    assert str(target) in task.info["core"]  # the installed wheel, not the checkout
    assert PluginSettings.load().worker_python == str(venv_python(target))
    assert plugin.last_message[0] == "success" and "Worker environment ready" in plugin.last_message[1]
    assert plugin.setup_log.log.toPlainText() and "ready" in plugin.setup_log.status.text()
    assert plugin.setup_log.bar.value() == 100 and not plugin.setup_log.cancel.isEnabled()

    # again into the same folder: built next to it, swapped in at the end
    plan = plan_setup(base_python, target, wheel, ["--no-index", "--find-links", str(index)])
    plan.test_tile = False
    assert plan.swap and plan.work.name == "env.partial"
    task = _run(plugin, qgis_app, plan)
    assert task.succeeded, task.error
    assert not plan.work.exists() and not (tmp_path / "env.old").exists()
    assert (target / "pyvenv.cfg").is_file() and str(target) in task.info["core"]


def test_setup_failure_keeps_the_previous_setting(plugin, qgis_app, tmp_path, local_index, base_python):
    from qgis.core import QgsSettings

    from coderic_qgis.settings import PluginSettings
    from coderic_qgis.setup_env import plan_setup

    _, wheel = local_index
    empty = tmp_path / "empty-index"
    empty.mkdir()
    QgsSettings().setValue("CodeRSIC/worker_python", "/previous/python")
    plan = plan_setup(base_python, tmp_path / "env", wheel, ["--no-index", "--find-links", str(empty)])
    task = _run(plugin, qgis_app, plan)
    assert not task.succeeded and "found no torch" in task.error, task.error
    assert PluginSettings.load().worker_python == "/previous/python"
    assert not (tmp_path / "env").exists()  # the partial environment is gone
    assert plugin.last_message[0] == "critical" and "unchanged: /previous/python" in plugin.last_message[1]

    # canceled while pip runs: nothing left, setting unchanged
    plan = plan_setup(base_python, tmp_path / "env2", wheel, ["--no-index", "--find-links", str(empty)])
    plan.steps.insert(1, type(plan.steps[0])("wait", "Waiting", [sys.executable, "-c", "import time; time.sleep(60)"],
                                             0.1))
    from coderic_qgis.setup_task import wait_until_done

    task = plugin.start_setup(plan)
    wait_until_done(task, 5)  # the venv step runs
    task.cancel()
    assert wait_until_done(task, 120)
    assert task.was_canceled and not (tmp_path / "env2").exists()
    assert PluginSettings.load().worker_python == "/previous/python"
    assert "canceled" in task.result_text()


def test_pip_failures_become_one_clear_sentence(tmp_path):
    from coderic_qgis.setup_env import BasePython, SetupPlan, Step, explain_failure

    plan = SetupPlan(BasePython(("python3",), (3, 11), "test"), tmp_path / "env", tmp_path / "env", tmp_path / "w.whl")
    step = Step("torch", "Installing PyTorch", [], 0.6)
    disk = ["Collecting torch",
            "ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device"]
    assert explain_failure(step, disk, 1, plan).startswith("The disk is full")
    net = ["WARNING: Retrying (Retry(total=4)) after connection broken by 'NewConnectionError(...: Failed to "
           "establish a new connection: [Errno -3] Temporary failure in name resolution')'",
           "ERROR: Could not find a version that satisfies the requirement torch>=2.1 (from versions: none)"]
    assert "could not reach the package index" in explain_failure(step, net, 1, plan)
    assert "found no torch>=2.1 for Python 3.11" in explain_failure(step, net[1:], 1, plan)
    assert "apt install python3-venv" in explain_failure(Step("venv", "Creating", [], 0.05),
                                                         ["Error: ensurepip is not available"], 1, plan)


def test_no_suitable_python_is_explained(qgis_app, tmp_path, monkeypatch):
    from coderic_qgis import setup_env
    from coderic_qgis.setup_task import SetupDialog

    old = tmp_path / "python3"
    old.write_text("#!/bin/sh\necho 3.8\n")
    old.chmod(0o755)
    monkeypatch.setattr(setup_env, "candidate_pythons", lambda: [((str(old),), "python3 on PATH")])
    found, rejected = setup_env.find_base_pythons()
    assert not found and "Python 3.8" in rejected[0]
    dlg = SetupDialog(None, (found, rejected))
    assert "No Python 3.10 or newer" in dlg.problem.text() and "Python 3.8" in dlg.problem.text()
    dlg.accept()
    assert dlg.plan is None and "No Python 3.10" in dlg.problem.text()
    dlg.deleteLater()


def test_settings_dialog_opens_the_setup(plugin, iface):
    from qgis.PyQt.QtWidgets import QPushButton

    from coderic_qgis.dialogs import SettingsDialog

    called = []
    dlg = SettingsDialog(iface.mainWindow(), on_setup=lambda: called.append(True))
    button = next(b for b in dlg.findChildren(QPushButton) if b.text().startswith("Set up worker environment"))
    button.click()
    assert called == [True] and dlg.result() == 0  # closed unsaved: the set-up writes the setting
    assert "Set up worker environment…" in [a.text() for a in plugin.actions]
    dlg.deleteLater()


def test_a_broken_install_fails_test_worker(plugin, qgis_app, tmp_path, local_index, base_python, monkeypatch):
    """Stand-in packages install fine and answer a ping, but cannot code a tile: Test worker
    codes one, so the set-up fails with the worker's reason and the previous setting stays."""
    from qgis.core import QgsSettings

    from coderic_qgis.settings import PluginSettings
    from coderic_qgis.setup_env import plan_setup

    index, wheel = local_index
    monkeypatch.delenv("CODERSIC_PYTHON", raising=False)
    QgsSettings().setValue("CodeRSIC/worker_python", "/previous/python")
    plan = plan_setup(base_python, tmp_path / "env", wheel, ["--no-index", "--find-links", str(index)])
    assert plan.test_tile
    task = _run(plugin, qgis_app, plan)
    assert not task.succeeded, task.log_text()[-2000:]
    assert "does not run Code-RSIC" in task.error and "\n" not in task.error, task.error
    assert "code and decode a small tile" in task.log_text()
    assert PluginSettings.load().worker_python == "/previous/python"
    assert not (tmp_path / "env").exists()


def test_torch_step_falls_back_to_the_default_index(plugin, qgis_app, tmp_path, base_python):
    """The CPU index unreachable: the torch step's fallback (the default index) runs and the
    set-up goes on; a step without a fallback still stops it."""
    from coderic_qgis.setup_env import SetupPlan, Step
    from coderic_qgis.setup_task import wait_until_done

    py = sys.executable
    plan = SetupPlan(base_python, tmp_path / "env", tmp_path / "env", tmp_path / "w.whl", test_tile=False)
    marker = tmp_path / "fallback-ran"
    plan.steps = [Step("torch", "Installing PyTorch, CPU-only build (about 0.4 GB to download)",
                       [py, "-c", "print('Could not fetch URL https://download.pytorch.org/whl/cpu'); raise SystemExit(1)"],
                       0.5, fallback=[py, "-c", f"open({str(marker)!r}, 'w').write('ok')"]),
                  Step("stop", "Next step", [py, "-c", "raise SystemExit(3)"], 0.5)]
    task = plugin.start_setup(plan)
    assert wait_until_done(task, 120)
    log = task.log_text()
    assert marker.read_text() == "ok" and "trying the default package index instead" in log, log
    assert "Next step failed (exit status 3)" in task.error, task.error  # the next step ran, and stops it
