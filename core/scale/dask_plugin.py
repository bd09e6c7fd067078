"""The Dask worker plugin of ``core.scale.parallel`` (its own module: importing it imports Dask)."""

from __future__ import annotations

from typing import Iterable

from distributed import WorkerPlugin

from ..errors import CodecError


class CodecWorkerPlugin(WorkerPlugin):
    """Configure a worker for tile jobs when it starts: torch threads, models loaded once.

    ``models`` is a list of (model, device); ``get_coder`` caches each per process, so a
    worker loads a model once however many jobs it runs. Workers that join later, or that
    the nanny restarts after a crash, run ``setup`` too.
    """

    idempotent = False

    def __init__(self, torch_threads: int | None = None, models: Iterable[tuple[str, str]] = ()):
        self.torch_threads = torch_threads
        self.models = list(models)

    def setup(self, worker) -> None:
        if self.torch_threads:
            from ..models.runtime import set_threads

            set_threads(self.torch_threads)
        from ..codec.tile_coder import get_coder

        for model, device in self.models:
            try:
                get_coder(model, device)
            except CodecError as exc:
                raise type(exc)(f"Dask worker {worker.address}: {exc}") from None


class IgnoreInterrupt(WorkerPlugin):
    """Workers of a local cluster ignore Ctrl-C: the terminal sends it to the whole process
    group, and the client, which stops the work and closes the cluster, is the one to act."""

    idempotent = True

    def setup(self, worker) -> None:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
