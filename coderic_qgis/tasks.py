"""``CodecTask``: one worker job as a QgsTask (progress per tile, cancel, main-thread finish)."""

from __future__ import annotations

from typing import Callable

from qgis.core import QgsTask

from .worker_client import Progress, WorkerCanceled, WorkerCommand, WorkerError, WorkerProcess


class CodecTask(QgsTask):
    """Runs ``job`` in the worker subprocess from QGIS's task manager thread.

    ``run()`` (background thread) only talks to the subprocess; ``on_finished(task)`` is
    called from ``finished()`` on the main thread, where layers and messages may be touched.
    Canceling terminates the worker; the codec writes outputs atomically and the client
    removes its temporaries, so no partial file stays behind.
    """

    def __init__(self, description: str, job: dict, worker: WorkerCommand,
                 on_finished: Callable[["CodecTask"], None] | None = None):
        super().__init__(description, QgsTask.CanCancel)
        self.job = dict(job)
        self.worker = worker
        self.on_finished = on_finished
        self.result: dict | None = None
        self.error: str | None = None
        self.was_canceled = False
        self.stage = ""
        self.decoded_layer = None  # set by the plugin when it adds the result to the project
        self.done = False  # finished() has run (the task manager deletes the C++ task soon after)
        self.ok: bool | None = None  # what QGIS passed to finished()
        self._process: WorkerProcess | None = None

    def _progress(self, p: Progress) -> None:
        self.stage = f"{p.stage} {p.done}/{p.total}"
        self.setProgress(100.0 * p.fraction)

    def run(self) -> bool:  # background thread
        self._process = WorkerProcess(self.worker)
        try:
            self.result = self._process.run(self.job, progress=self._progress, is_canceled=self.isCanceled)
        except WorkerCanceled:
            self.was_canceled = True
            return False
        except WorkerError as exc:
            self.error = str(exc)
            return False
        except Exception as exc:  # noqa: BLE001 - never let an exception escape a task thread
            self.error = f"{type(exc).__name__}: {exc}"
            return False
        return True

    def finished(self, ok: bool) -> None:  # main thread
        self.ok = ok
        if self.result is None and self.error is None and self.isCanceled():
            self.was_canceled = True  # canceled before it started
        try:
            if self.on_finished is not None:
                self.on_finished(self)
        finally:
            self.done = True

    @property
    def succeeded(self) -> bool:
        return self.result is not None and not self.was_canceled and self.error is None
