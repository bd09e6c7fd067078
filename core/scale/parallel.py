"""Run tile jobs on Dask: a local cluster of worker processes, or an existing cluster.

``compress_raster``, ``decompress_raster`` and ``decompress_enhanced`` take a
``mapper(fn, jobs)`` that yields the results in job order. ``core.codec.jobs.serial_map``
runs them in this process; ``DaskMapper`` sends each job to a Dask worker:

- bounded work in flight: at most ``max_in_flight`` jobs are submitted and not yet
  consumed (shared by every raster using the mapper, e.g. a batch), so memory stays flat
  on the client and on the workers whatever the raster's size; the job iterator is read
  lazily;
- results in order: futures wait in a FIFO, so the container is written in the same
  order as serially and its bytes are identical;
- one model per worker: ``CodecWorkerPlugin`` (in ``core.scale.dask_plugin``) sets torch's
  thread count and loads the models in use when a worker starts (also a worker restarted
  after a crash), and every job checks that its worker's weights hash is the client's;
- one tile at a time per worker process (the tile coder keeps per-call state), so give
  workers one Dask thread each and the cores to torch;
- a worker that dies mid-job (out of memory, killed) is replaced by the nanny and the
  scheduler reruns its jobs elsewhere; a job that kills workers repeatedly, or a cluster
  left without workers for ``no_worker_timeout``, fails with a one-line ``CodecError``
  and, as always, the output is not written; ``cancel()`` stops every map at once.

Dask is imported only when a cluster is asked for: the in-process default pays nothing.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import deque
from contextlib import contextmanager
from dataclasses import fields, is_dataclass, replace
from itertools import chain
from typing import Callable, Iterable, Iterator

from ..errors import BadInput, CodecError, ModelMismatch
from ..models.runtime import available_cores

PLUGIN_NAME = "code-rsic"
# Dask starts worker processes with MALLOC_TRIM_THRESHOLD_=65536, which fixes glibc's mmap
# threshold too: every large torch buffer is then a fresh mmap and its page faults make
# tile coding about 1.5x slower than in-process (measured). Local workers go without it.
LOCAL_WORKER_CONFIG = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
_TILE_LOCK = threading.Lock()


def local_torch_threads(workers: int, torch_threads: int | None = None) -> int:
    """Torch threads per local worker: as asked, else the cores shared out among the workers."""
    return torch_threads or max(1, available_cores() // max(1, workers))


# ---------------------------------------------------------------- on the workers

def run_tile(fn: Callable, job, expected_weights: dict | None = None):
    """Run one tile job on a worker: one at a time per process, with the client's weights."""
    with _TILE_LOCK:
        if expected_weights:
            _check_weights(job, expected_weights)
        return fn(job)


def _check_weights(job, expected: dict) -> None:
    model, device = getattr(job, "model", None), getattr(job, "device", "cpu")
    want = expected.get((model, device))
    if want is None:
        return
    from ..codec.tile_coder import get_coder

    got = get_coder(model, device).model.sha256
    if got != want:
        raise ModelMismatch(
            f"Dask worker on {_hostname()} has other weights for model '{model}' (sha256 {got[:12]}, the client "
            f"has {want[:12]}): install the same weights on every worker"
        )


def _hostname() -> str:
    import socket

    return socket.gethostname()


def _worker_weights(model: str, device: str) -> str:
    """sha256 of the weights a worker loads for ``model`` (or the error, one line)."""
    from ..codec.tile_coder import get_coder

    try:
        return get_coder(model, device).model.sha256
    except CodecError as exc:
        return f"error: {exc}"


def _worker_torch_threads() -> int:
    """A worker's thread count: its runtimes' (and torch's, which follows it)."""
    from ..models.runtime import _threads

    return _threads(None)


# ---------------------------------------------------------------- on the client

def _absolute_paths(job):
    """The job with its file paths absolute, so a worker in another directory finds them."""
    if not is_dataclass(job):
        return job
    changes = {}
    for f in fields(job):
        value = getattr(job, f.name)
        if f.name in ("src", "container") and isinstance(value, str) and not os.path.isabs(value):
            changes[f.name] = os.path.abspath(value)
        elif f.name == "model" and isinstance(value, str) and not os.path.isabs(value) and os.path.isfile(value):
            changes[f.name] = os.path.abspath(value)
    return replace(job, **changes) if changes else job


def _describe(job) -> str:
    index = getattr(job, "tile_index", None)
    path = getattr(job, "src", None) or getattr(job, "container", None)
    if index is None:
        return "a job"
    return f"tile {index} of {os.path.basename(path)}" if path else f"tile {index}"


class DaskMapper:
    """``mapper(fn, jobs)`` on a Dask client: bounded in flight, results in order.

    One instance may serve several rasters at once (batch mode, from several threads):
    ``max_in_flight`` then bounds all of them together.
    """

    def __init__(self, client, max_in_flight: int | None = None, retries: int = 0,
                 torch_threads: int | None = None, no_worker_timeout: float = 300.0):
        self.client = client
        self.no_worker_timeout = no_worker_timeout  # give up when the cluster has no worker this long
        threads = sum(client.nthreads().values())
        self.max_in_flight = max(2, int(max_in_flight or 2 * threads))
        self.retries = retries
        self.torch_threads = torch_threads
        self.weights: dict[tuple[str, str], str] = {}  # (model, device) -> sha256 the workers must have
        self._slots = threading.BoundedSemaphore(self.max_in_flight)
        self._models_lock = threading.Lock()
        self._outstanding: set = set()  # futures submitted and not yet taken, by every caller
        self._outstanding_lock = threading.Lock()
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        """Stop every map in progress now (e.g. on Ctrl-C in a batch): outstanding jobs are
        cancelled on the cluster, and the maps raise instead of waiting for them."""
        self._cancelled.set()
        with self._outstanding_lock:
            futures = list(self._outstanding)
        try:
            self.client.cancel(futures)
        except Exception:  # noqa: BLE001 - best effort: the client may be closing
            pass

    @property
    def worker_threads(self) -> int:
        return sum(self.client.nthreads().values())

    def expect_model(self, model: str, device: str = "cpu") -> None:
        """Load ``model`` on every worker now (and on workers that start later) and check
        that each has the client's weights; jobs then check it too."""
        from ..models import file_sha256, resolve_weights

        with self._models_lock:
            if (model, device) in self.weights:
                return
            want = file_sha256(resolve_weights(model))
            from .dask_plugin import CodecWorkerPlugin

            plugin = CodecWorkerPlugin(self.torch_threads, [*self.weights, (model, device)])
            self.client.register_plugin(plugin, name=PLUGIN_NAME)
            found = self.client.run(_worker_weights, model, device)
            bad = {w: sha for w, sha in found.items() if sha != want}
            if bad:
                worker, sha = next(iter(bad.items()))
                why = sha[len("error: "):] if sha.startswith("error: ") else (
                    f"its weights differ (sha256 {sha[:12]}, the client has {want[:12]})")
                raise ModelMismatch(f"Dask worker {worker} cannot use model '{model}': {why}")
            self.weights[(model, device)] = want

    def _submit(self, fn, job):
        index = getattr(job, "tile_index", "")
        key = f"{getattr(fn, '__name__', 'job')}-{index}-{uuid.uuid4().hex[:12]}"
        if self._cancelled.is_set():
            raise CodecError("cancelled")
        try:
            future = self.client.submit(run_tile, fn, job, dict(self.weights) or None, key=key, pure=False,
                                        retries=self.retries)
        except OSError as exc:  # CommClosedError and friends
            raise CodecError(f"lost the connection to the Dask scheduler ({exc})") from None
        with self._outstanding_lock:
            self._outstanding.add(future)
        return future

    def _take(self, pending: deque):
        from distributed import KilledWorker
        from distributed.utils import CancelledError

        job, future = pending.popleft()
        try:
            return self._wait(future)
        except KilledWorker:
            raise CodecError(
                f"{_describe(job)}: the Dask workers running it died too often (out of memory or killed)"
            ) from None
        except CancelledError:
            if self._cancelled.is_set():
                raise CodecError("cancelled") from None
            raise CodecError(f"{_describe(job)}: cancelled by the Dask cluster (scheduler restarted or "
                             "connection lost)") from None
        finally:
            with self._outstanding_lock:
                self._outstanding.discard(future)
            future.release()
            self._slots.release()

    def _wait(self, future):
        """The future's result; a cluster left without workers (they died and nothing
        restarts them) fails after ``no_worker_timeout`` instead of waiting for ever."""
        poll = min(5.0, max(0.05, self.no_worker_timeout / 4))
        since = None
        while True:
            try:
                return future.result(timeout=poll)
            except TimeoutError:
                if future.done():  # the job itself raised TimeoutError
                    raise
                if self.client.nthreads():
                    since = None
                    continue
                now = time.monotonic()
                since = since or now
                if now - since >= self.no_worker_timeout:
                    raise CodecError(
                        f"the Dask cluster has had no worker for {self.no_worker_timeout:g} s") from None

    def __call__(self, fn: Callable, jobs: Iterable) -> Iterator:
        jobs = iter(jobs)
        first = next(jobs, None)
        if first is None:
            return
        jobs = chain([first], jobs)
        model = getattr(first, "model", None)
        if isinstance(model, str):
            self.expect_model(_absolute_paths(first).model, getattr(first, "device", "cpu"))
        pending: deque = deque()
        try:
            for job in jobs:
                job = _absolute_paths(job)
                # a slot for this job: wait for our own oldest result rather than block
                # while holding slots (several rasters share the slots in batch mode)
                while not self._slots.acquire(blocking=not pending):
                    yield self._take(pending)
                try:
                    pending.append((job, self._submit(fn, job)))
                except BaseException:
                    self._slots.release()
                    raise
            while pending:
                yield self._take(pending)
        finally:
            if pending:
                futures = [f for _, f in pending]
                with self._outstanding_lock:
                    self._outstanding.difference_update(futures)
                try:
                    self.client.cancel(futures)
                except Exception:  # noqa: BLE001 - best effort while another error propagates
                    pass
                for _ in futures:
                    self._slots.release()
                pending.clear()


@contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None, torch_threads: int | None = None,
                dashboard: bool = False, quiet: bool = False):
    """A Dask client: a new local cluster of ``workers`` processes, or ``scheduler``'s cluster.

    Local workers get one Dask thread each and ``torch_threads`` torch threads (default:
    the cores divided among the workers), and listen on localhost only. Their warnings are
    not printed (a worker slow to exit after importing torch is killed after 4 s, which
    Dask reports as a warning); failures reach the client as errors. On an existing
    cluster torch threads are only changed when ``torch_threads`` is given.
    """
    if workers and scheduler:
        raise BadInput("give --workers or --scheduler, not both")
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError:
        raise BadInput("Dask is not installed: pip install 'code-rsic[dask]' (dask[distributed])") from None
    cluster = None
    if scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise CodecError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
    else:
        if workers is None or workers < 1:
            raise BadInput(f"--workers must be at least 1, got {workers}")
        torch_threads = local_torch_threads(workers, torch_threads)
        env = {name: str(torch_threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
        with dask.config.set(LOCAL_WORKER_CONFIG):
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                   dashboard_address=":0" if dashboard else None,
                                   silence_logs=logging.CRITICAL if quiet else logging.ERROR, env=env)
        client = Client(cluster)
    from .dask_plugin import CodecWorkerPlugin, IgnoreInterrupt

    try:
        client.register_plugin(CodecWorkerPlugin(torch_threads), name=PLUGIN_NAME)
        if cluster is not None:
            client.register_plugin(IgnoreInterrupt(), name=f"{PLUGIN_NAME}-ignore-interrupt")
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


@contextmanager
def mapper_for(workers: int | None = None, scheduler: str | None = None, torch_threads: int | None = None,
               quiet: bool = False, max_in_flight: int | None = None):
    """The mapper the CLI options ask for: a Dask cluster's, with workers or a scheduler;
    else None, in-process (each use case's own: ``core.usecases``)."""
    if not workers and not scheduler:
        yield None
        return
    if not scheduler:
        torch_threads = local_torch_threads(workers, torch_threads)
    with dask_client(workers, scheduler, torch_threads, quiet=quiet) as client:
        yield DaskMapper(client, max_in_flight=max_in_flight, torch_threads=torch_threads)
