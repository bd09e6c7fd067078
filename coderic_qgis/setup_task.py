"""*Set up worker environment…*: the dialog, the background task and its live log.

``SetupTask`` runs the steps of ``setup_env.plan_setup`` (venv, torch, the project's wheel)
in QGIS's task manager, with progress, cancel and a log; it ends with *Test worker* and
only then makes the new environment the worker Python. On failure or cancel the partial
environment is removed and the previous setting keeps working.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Callable

from qgis.core import QgsApplication, QgsTask
from qgis.gui import QgsFileWidget
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
)

from .settings import PluginSettings
from .setup_env import (
    MANUAL,
    NEEDED_SPACE,
    BasePython,
    PipProgress,
    SetupError,
    SetupPlan,
    choose_torch,
    explain_failure,
    find_base_pythons,
    no_python_message,
    pip_env,
    plan_setup,
    probe_python,
    project_source,
    venv_python,
)
from .worker_client import WorkerCommand, WorkerError, WorkerProcess, forget_found_workers, test_worker

PERCENT = 100
LOG_LINES = 5000  # kept in memory for the log window
POLL_S = 0.2
PING_TIMEOUT_S = 300


def default_env_folder() -> Path:
    """Under the QGIS profile: <profile>/code-rsic/worker-env."""
    return Path(QgsApplication.qgisSettingsDirPath()) / "code-rsic" / "worker-env"


def worker_summary(python: str, info: dict) -> str:
    if info.get("selftest_text"):
        return info["selftest_text"]
    return (f"Code-RSIC {info.get('version')} in {python} (Python {info.get('python_version')}); enhancement "
            f"{'available' if info.get('enhance') else 'not available'}")


class SetupTask(QgsTask):
    """Builds the environment of ``plan`` in the background; see the module docstring."""

    def __init__(self, plan: SetupPlan, on_finished: Callable[["SetupTask"], None] | None = None):
        super().__init__("Code-RSIC: set up the worker environment", QgsTask.CanCancel)
        self.plan = plan
        self.on_finished = on_finished
        self.log: deque[str] = deque(maxlen=LOG_LINES)
        self.log_lock = threading.Lock()
        self.status = ""
        self.error: str | None = None
        self.was_canceled = False
        self.info: dict | None = None  # the final Test worker's ping
        self.done = False
        self.previous = PluginSettings.load().worker_python  # kept on failure
        self._proc: subprocess.Popen | None = None

    # ------------------------------------------------------------ background thread
    def add_log(self, line: str) -> None:
        with self.log_lock:
            self.log.append(line.rstrip())

    def log_text(self) -> str:
        with self.log_lock:
            return "\n".join(self.log)

    def _run_step(self, step, start: float) -> bool:
        self.status = step.label
        self.add_log(f"$ {' '.join(step.argv)}")
        pip = PipProgress()
        lines: list[str] = []
        out: queue.Queue = queue.Queue()
        try:
            self._proc = proc = subprocess.Popen(step.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                 stdin=subprocess.DEVNULL, text=True, encoding="utf-8",
                                                 errors="replace", env=pip_env(), bufsize=1,
                                                 **_process_group())
        except OSError as exc:
            self.error = f"{step.label} could not start: {exc}"
            return False

        def pump():
            for raw in proc.stdout:
                for part in raw.replace("\r", "\n").splitlines():
                    out.put(part)
            out.put(None)

        threading.Thread(target=pump, daemon=True).start()
        while True:
            if self.isCanceled():
                self._stop()
                self.was_canceled = True
                return False
            try:
                line = out.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if line is None:
                break
            lines.append(line)
            if not line.lstrip().startswith("━"):  # a progress bar redrawn: the status line shows it
                self.add_log(line)
            pip.feed(line)
            if pip.status:
                self.status = f"{step.label}: {pip.status[:100]}"
            self.setProgress(PERCENT * (start + step.weight * pip.fraction))
        code = proc.wait()
        if code != 0:
            self.error = explain_failure(step, lines, code, self.plan)
            self.add_log(f"-> {self.error}")
            return False
        self.setProgress(PERCENT * (start + step.weight))
        return True

    def _stop(self) -> None:
        """Stop the step and its children (venv runs ensurepip, pip runs build helpers)."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        for sig in (signal.SIGTERM, getattr(signal, "SIGKILL", signal.SIGTERM)):
            try:
                if os.name == "nt":
                    proc.terminate()
                else:
                    os.killpg(proc.pid, sig)  # the step runs in its own session: its whole group
            except OSError:
                pass
            try:
                proc.wait(timeout=10)
                break
            except subprocess.TimeoutExpired:
                continue
        time.sleep(POLL_S)  # let the killed children go before their folder is removed

    def _ping(self, python: Path) -> dict:
        """Test worker: ping the environment, then code and decode a small tile in it."""
        cmd = WorkerCommand(str(python), None, "set-up")
        info = WorkerProcess(cmd).run({"action": "ping"}, timeout=PING_TIMEOUT_S)
        if info.get("missing"):
            raise WorkerError(f"the new environment lacks {', '.join(info['missing'])}")
        if self.plan.test_tile:
            info["selftest"], info["selftest_text"] = test_worker(cmd)
        return info

    def run(self) -> bool:  # background thread
        plan = self.plan
        try:
            if plan.swap:
                shutil.rmtree(plan.work, ignore_errors=True)  # a stale attempt
            start = 0.0
            for step in plan.steps:
                if not self._run_step(step, start):
                    if step.fallback is None or self.was_canceled:
                        return False
                    self.add_log(f"-> {step.label} failed; trying the default package index instead")
                    self.error = None
                    if not self._run_step(replace(step, argv=step.fallback, fallback=None,
                                                  label=step.label.split(",")[0] + " from the default index"), start):
                        return False
                start += step.weight
            self.status = "Test worker"
            self.add_log("Test worker: code and decode a small tile in the new environment")
            self.info = self._ping(venv_python(plan.work))
            if plan.swap:
                old = plan.target.with_name(plan.target.name + ".old")
                shutil.rmtree(old, ignore_errors=True)
                plan.target.rename(old)
                plan.work.rename(plan.target)
                try:
                    self.info = self._ping(plan.python)
                except WorkerError:
                    shutil.rmtree(plan.target, ignore_errors=True)
                    old.rename(plan.target)  # the previous environment, as it was
                    raise
                shutil.rmtree(old, ignore_errors=True)
            self.setProgress(PERCENT)
            self.add_log(worker_summary(str(plan.python), self.info))
            return True
        except WorkerError as exc:
            self.error = f"The new environment does not run Code-RSIC: {exc}; {MANUAL}"
        except OSError as exc:
            needed = plan.torch.disk if plan.torch else NEEDED_SPACE
            self.error = (f"The disk is full: free some space in {plan.target.parent} ({needed} needed)"
                          if exc.errno == 28 else f"Setting up failed: {exc}")
        except Exception as exc:  # noqa: BLE001 - never let an exception escape a task thread
            self.error = f"Setting up failed: {type(exc).__name__}: {exc}"
        self.add_log(f"-> {self.error}")
        return False

    # ------------------------------------------------------------ main thread
    def finished(self, ok: bool) -> None:
        if self.isCanceled():
            self.was_canceled = True
        try:
            if ok and self.info is not None and not self.was_canceled:
                st = PluginSettings.load()
                st.worker_python = str(self.plan.python)
                st.save()
                forget_found_workers()
            else:
                shutil.rmtree(self.plan.work, ignore_errors=True)  # the partial environment
        finally:
            self.done = True
        if self.on_finished is not None:
            self.on_finished(self)

    @property
    def succeeded(self) -> bool:
        return self.info is not None and not self.was_canceled and self.error is None

    def result_text(self) -> str:
        if self.succeeded:
            return "Worker environment ready: " + worker_summary(str(self.plan.python), self.info)
        if self.was_canceled:
            return (f"Setting up the worker environment was canceled; the worker Python is unchanged "
                    f"({self.previous or 'automatic'})")
        return f"{self.error} (the worker Python is unchanged: {self.previous or 'automatic'})"


def _process_group() -> dict:
    if os.name == "nt":
        return {"creationflags": getattr(subprocess, "CREATE_NO_WINDOW", 0)}
    return {"start_new_session": True}


# ---------------------------------------------------------------- dialogs

class SetupDialog(QDialog):
    """Which Python, which folder, pip options; OK starts the task."""

    def __init__(self, parent=None, pythons: tuple[list[BasePython], list[str]] | None = None):
        super().__init__(parent)
        self.setWindowTitle("Set up worker environment")
        self.pythons, self.rejected = pythons if pythons is not None else find_base_pythons()
        layout = QVBoxLayout(self)
        self.torch = choose_torch()
        intro = QLabel("Creates a Python environment with PyTorch and Code-RSIC (downloaded from the Python "
                       "package index) and makes it the worker. Your current setting stays until the new "
                       "environment passes Test worker (it codes and decodes a small tile).", self)
        intro.setWordWrap(True)
        layout.addWidget(intro)
        self.estimate = QLabel(f"<b>Download: {self.torch.download}; on disk: {self.torch.disk}</b> "
                               f"({self.torch.what}).", self)
        self.estimate.setObjectName("estimate")
        self.estimate.setWordWrap(True)
        layout.addWidget(self.estimate)
        form = QFormLayout()
        layout.addLayout(form)
        self.python = QComboBox(self)
        self.python.setEditable(True)
        for p in self.pythons:
            self.python.addItem(p.label, p)
        if not self.pythons:
            self.python.lineEdit().setPlaceholderText("path to a python3.10+ executable")
        form.addRow("Base Python", self.python)
        self.folder = QgsFileWidget(self)
        self.folder.setStorageMode(QgsFileWidget.GetDirectory)
        self.folder.setFilePath(str(default_env_folder()))
        form.addRow("Environment folder", self.folder)
        self.pip_options = QLineEdit(self)
        self.pip_options.setPlaceholderText("optional, e.g. --proxy http://proxy:3128 or --index-url URL")
        form.addRow("pip options", self.pip_options)
        self.problem = QLabel(self)
        self.problem.setWordWrap(True)
        self.problem.setStyleSheet("color: #b00020;")
        layout.addWidget(self.problem)
        self.buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel, self)
        self.buttons.button(QDialogButtonBox.Ok).setText("Set up")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        self.plan: SetupPlan | None = None
        self.problem.setText("" if self.pythons else no_python_message(self.rejected))

    def base_python(self) -> BasePython:
        data = self.python.currentData()
        if isinstance(data, BasePython) and self.python.currentText() == data.label:
            return data
        text = self.python.currentText().strip()
        if not text:
            raise SetupError(no_python_message(self.rejected))
        version, problem = probe_python((text,))
        if problem:
            raise SetupError(f"{text} {problem}")
        return BasePython((text,), version, "chosen")

    def make_plan(self) -> SetupPlan:
        return plan_setup(self.base_python(), self.folder.filePath().strip() or default_env_folder(),
                          project_source(), self.pip_options.text().split(), torch=self.torch)

    def accept(self) -> None:
        try:
            self.plan = self.make_plan()
        except SetupError as exc:
            self.problem.setText(str(exc))
            return
        super().accept()


class SetupLogDialog(QDialog):
    """Follows a running SetupTask: status, progress, pip's log, Cancel; the result at the end."""

    def __init__(self, task: SetupTask, parent=None):
        super().__init__(parent)
        self.task = task
        self.setWindowTitle("Code-RSIC worker set-up")
        self.setModal(False)
        self.resize(720, 420)
        layout = QVBoxLayout(self)
        self.status = QLabel(self)
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        self.bar = QProgressBar(self)
        self.bar.setRange(0, PERCENT)
        layout.addWidget(self.bar)
        self.log = QPlainTextEdit(self)
        self.log.setReadOnly(True)
        self.log.setLineWrapMode(QPlainTextEdit.NoWrap)
        layout.addWidget(self.log, 1)
        row = QHBoxLayout()
        row.addStretch(1)
        self.cancel = QPushButton("Cancel", self)
        self.cancel.clicked.connect(task.cancel)
        self.close_button = QPushButton("Close", self)
        self.close_button.clicked.connect(self.close)
        row.addWidget(self.cancel)
        row.addWidget(self.close_button)
        layout.addLayout(row)
        self._shown = ""
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.refresh)
        self.timer.start(int(POLL_S * 1000))
        self.refresh()

    def refresh(self) -> None:
        task = self.task
        text = task.log_text()
        if text != self._shown:
            self._shown = text
            self.log.setPlainText(text)
            self.log.verticalScrollBar().setValue(self.log.verticalScrollBar().maximum())
        if task.done:
            self.timer.stop()
            self.status.setText(task.result_text())
            self.status.setStyleSheet("" if task.succeeded else "color: #b00020;")
            self.bar.setValue(PERCENT if task.succeeded else self.bar.value())
            self.cancel.setEnabled(False)
        else:
            self.status.setText(task.status or task.description())
            self.bar.setValue(int(task.progress()))


def wait_until_done(task: SetupTask, timeout: float) -> bool:
    """Process events until the task finished (tests and scripts)."""
    end = time.monotonic() + timeout
    app = QgsApplication.instance()
    while time.monotonic() < end and not task.done:
        app.processEvents()
        time.sleep(0.05)
    return task.done

