"""Scale-out on Dask: a real LocalCluster of 2 worker processes, the tiny seeded model,
small tiles. Serial and Dask containers must be byte-identical, decoded pixels equal,
a batch must survive a bad raster, and a killed worker must not leave partial output."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from testdata import ROOT, TEST_DATA, shared_fixture

distributed = pytest.importorskip("distributed")
import dask  # noqa: E402

from core.codec.compress import compress_raster  # noqa: E402
from core.codec.decompress import decompress_raster  # noqa: E402
from core.codec.jobs import encode_job  # noqa: E402
from core.errors import CodecError  # noqa: E402
from core.options import CompressParams  # noqa: E402
from core.scale.parallel import DaskMapper, _worker_torch_threads, dask_client  # noqa: E402
from core.tile_codec import main  # noqa: E402

NEON = TEST_DATA / "neon_rgb_uint8_0p1m_utm17n_deepforest_OSBS_029.tif"  # 400 x 400 RGB
LANDSAT6 = TEST_DATA / "landsat7_6band_uint8_utm25s_rstars_L7_ETMs.tif"  # 349 x 352, 6 bands
TILING = {"tile": 128, "overlap": 0}


@pytest.fixture(scope="module")
def client():
    """2 worker processes, 1 Dask thread and 1 torch thread each; a task whose workers die
    twice is given up (allowed-failures 1) so the kill tests stay short."""
    with ExitStack() as stack:
        with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
            c = stack.enter_context(dask_client(workers=2, torch_threads=1, quiet=True))
        yield c


@pytest.fixture
def one_thread():
    """In-process torch on one thread, like each worker: oneDNN's float sums depend on the
    thread count (decoded pixels can differ by 1 where a value rounds at .5), and on this
    shared 2-core machine one thread is also much faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _opts(model: str, **kw) -> CompressParams:
    return CompressParams(model=model, quality=kw.pop("quality", 1.5), **{**TILING, **kw})


def _read(path) -> tuple[np.ndarray, np.ndarray]:
    with rasterio.open(path) as ds:
        return ds.read(), ds.dataset_mask()


def _no_partials(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".partial" in p.name or p.name.endswith(".plain.tif")]


# ---------------------------------------------------------------- the mapper

def test_workers_are_configured(client):
    assert len(client.nthreads()) == 2 and set(client.nthreads().values()) == {1}
    assert set(client.run(_worker_torch_threads).values()) == {1}


def test_mapper_keeps_order_and_bounds_work_in_flight(client):
    def slow_square(i):  # nested: cloudpickle sends it by value
        import random
        import time

        time.sleep(random.random() * 0.05)
        return i * i

    pulled = 0

    def jobs():
        nonlocal pulled
        for i in range(24):
            pulled += 1
            yield i

    mapper = DaskMapper(client, max_in_flight=3)
    results = []
    for r in mapper(slow_square, jobs()):
        results.append(r)
        assert pulled - len(results) <= 3  # jobs are read lazily, never more than 3 ahead
    assert results == [i * i for i in range(24)]
    assert mapper._slots._value == 3  # every slot given back


def test_mapper_stopped_early_cancels_and_frees_slots(client):
    mapper = DaskMapper(client, max_in_flight=4)
    it = mapper(abs, iter(range(-100, 0)))
    assert [next(it) for _ in range(3)] == [100, 99, 98]
    it.close()
    assert mapper._slots._value == 4


def test_cancel_stops_a_map_without_waiting_for_its_jobs(client):
    import threading
    import time

    def slow(i):
        import time

        time.sleep(4)
        return i

    mapper = DaskMapper(client, max_in_flight=2)
    outcome = {}

    def consume():
        try:
            list(mapper(slow, iter(range(10))))
        except CodecError as exc:
            outcome["error"] = str(exc)

    t = threading.Thread(target=consume)
    t.start()
    time.sleep(0.5)
    t0 = time.perf_counter()
    mapper.cancel()  # what batch mode does on Ctrl-C
    t.join(timeout=30)
    assert not t.is_alive() and outcome["error"] == "cancelled"
    assert time.perf_counter() - t0 < 3  # the 4 s jobs were not waited for
    assert mapper._slots._value == 2 and not mapper._outstanding
    client.run(lambda: None)  # workers still answer


def test_a_cluster_without_workers_fails_instead_of_hanging():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster, Client(cluster) as c:
        mapper = DaskMapper(c, no_worker_timeout=0.5)
        with pytest.raises(CodecError, match="has had no worker for 0.5 s"):
            list(mapper(abs, iter(range(-3, 0))))
        assert mapper._slots._value == mapper.max_in_flight


def test_in_process_default_does_not_import_dask():
    code = ("import sys; from core.scale.parallel import mapper_for\n"
            "with mapper_for(workers=None, scheduler=None) as m: assert m is None  # the use cases' own\n"
            "import core.scale.batch, core.tile_codec; print('distributed' in sys.modules, 'dask' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


# ---------------------------------------------------------------- same bytes, same pixels

def _cases():
    yield pytest.param(NEON, None, None, id="neon-rgb-uint8-all-threads")
    yield pytest.param(LANDSAT6, [1, 2, 3, 4, 5, 6], 1, id="landsat-6band")
    yield pytest.param("spacenet_ms4_uint16_utm31n_solaris_ms1_cast.tif", None, 1, id="spacenet-ms4-uint16")


@pytest.mark.parametrize("src,bands,threads", _cases())
def test_serial_and_dask_containers_are_byte_identical(client, tiny_weights, tmp_path, src, bands, threads):
    """In-process with torch's default threads (all cores) or one, against 1-thread workers."""
    if isinstance(src, str):
        src = shared_fixture(src)
    if threads:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
    opts = _opts(tiny_weights, bands=bands)
    try:
        compress_raster(src, tmp_path / "serial.crsic", opts)
    finally:
        if threads:
            torch.set_num_threads(before)
    res = compress_raster(src, tmp_path / "dask.crsic", opts, mapper=DaskMapper(client))
    assert res["tiles"] > 4
    assert (tmp_path / "serial.crsic").read_bytes() == (tmp_path / "dask.crsic").read_bytes()


def test_dask_decode_gives_the_serial_pixels(client, tiny_weights, tmp_path, one_thread):
    container = tmp_path / "neon.crsic"
    compress_raster(NEON, container, _opts(tiny_weights))
    mapper = DaskMapper(client)
    for name, kw in (("full", {}), ("window", {"window": (100, 90, 150, 170)})):
        decompress_raster(container, tmp_path / f"serial-{name}.tif", model=tiny_weights, **kw)
        decompress_raster(container, tmp_path / f"dask-{name}.tif", model=tiny_weights, mapper=mapper, **kw)
        (a, ma), (b, mb) = _read(tmp_path / f"serial-{name}.tif"), _read(tmp_path / f"dask-{name}.tif")
        assert a.shape == b.shape and np.array_equal(a, b) and np.array_equal(ma, mb)


def test_workers_see_a_container_replaced_at_the_same_path(client, tiny_weights, tmp_path, one_thread):
    """Workers keep containers open between jobs: a new file at the same path must be read anew."""
    container = tmp_path / "scene.crsic"
    mapper = DaskMapper(client)
    compress_raster(NEON, container, _opts(tiny_weights, quality=1.0))
    decompress_raster(container, tmp_path / "old.tif", model=tiny_weights, mapper=mapper)
    compress_raster(NEON, container, _opts(tiny_weights, quality=2.0, overwrite=True))
    decompress_raster(container, tmp_path / "new.tif", model=tiny_weights, mapper=mapper)
    decompress_raster(container, tmp_path / "new-serial.tif", model=tiny_weights)
    old, new, ref = (_read(tmp_path / n)[0].astype(int) for n in ("old.tif", "new.tif", "new-serial.tif"))
    assert not np.array_equal(old, new)
    assert np.array_equal(new, ref)


def test_cli_workers_options(client, tiny_weights, tmp_path, one_thread):
    """compress / decompress --scheduler ADDRESS on the running cluster, same bytes as in-process."""
    common = ["--model", tiny_weights, "--quiet"]
    enc = ["--quality", "1.5", "--tile", "128", "--overlap", "0"]
    assert main(["compress", str(NEON), "-o", str(tmp_path / "local.crsic"), *enc, *common]) == 0
    assert main(["compress", str(NEON), "-o", str(tmp_path / "cluster.crsic"), *enc, *common,
                 "--scheduler", client.scheduler.address]) == 0
    assert (tmp_path / "local.crsic").read_bytes() == (tmp_path / "cluster.crsic").read_bytes()
    assert main(["decompress", str(tmp_path / "cluster.crsic"), "-o", str(tmp_path / "out.tif"), "--no-enhance",
                 *common, "--scheduler", client.scheduler.address]) == 0
    assert _read(tmp_path / "out.tif")[0].shape == (3, 400, 400)
    assert main(["compress", str(NEON), "-o", str(tmp_path / "x.crsic"), "--workers", "2", "--scheduler",
                 "tcp://127.0.0.1:1", *common]) == 1


def test_worker_with_other_weights_is_refused(client, tiny_weights, tmp_path):
    mapper = DaskMapper(client)
    mapper.weights[(tiny_weights, "cpu")] = "0" * 64  # as if the client had other weights
    with pytest.raises(CodecError, match="other weights"):
        compress_raster(NEON, tmp_path / "x.crsic", _opts(tiny_weights), mapper=mapper)
    assert not (tmp_path / "x.crsic").exists() and not _no_partials(tmp_path)


# ---------------------------------------------------------------- batch

def test_expand_inputs(tmp_path):
    from core.scale.batch import expand_inputs

    (tmp_path / "a").mkdir()
    for name in ("a/1.tif", "a/2.TIFF", "a/notes.md", "a/3.crsic", "b.tif"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "list.txt").write_text("# scenes\nb.tif\n\na/1.tif\nmissing.tif\n")
    got = expand_inputs([str(tmp_path / "a"), str(tmp_path / "list.txt"), str(tmp_path / "*.tif")], "compress")
    assert [p.relative_to(tmp_path).as_posix() for p in got] == ["a/1.tif", "a/2.TIFF", "b.tif", "missing.tif"]
    assert [p.name for p in expand_inputs([f"@{tmp_path / 'list.txt'}"], "compress")] == ["b.tif", "1.tif",
                                                                                           "missing.tif"]
    assert [p.name for p in expand_inputs([str(tmp_path / "a")], "decompress")] == ["3.crsic"]
    with pytest.raises(CodecError, match="no file matches"):
        expand_inputs([str(tmp_path / "*.jp2")], "compress")


def test_batch_reports_a_bad_raster_and_does_the_others(client, tiny_weights, tmp_path, capsys, one_thread):
    scenes, out = tmp_path / "scenes", tmp_path / "out"
    scenes.mkdir()
    shutil.copy(NEON, scenes / "neon.tif")
    shutil.copy(LANDSAT6, scenes / "landsat.tif")
    (scenes / "broken.tif").write_text("not a raster")
    addr = ["--scheduler", client.scheduler.address, "--model", tiny_weights, "--json", "--quiet"]
    rc = main(["batch", "compress", str(scenes), "-o", str(out), "--quality", "1.5", "--tile", "128",
               "--overlap", "0", *addr])
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 1
    assert (res["rasters"], res["done"], res["failed"]) == (3, 2, 1)
    status = {Path(i["input"]).name: i for i in res["items"]}
    assert status["broken.tif"]["status"] == "failed" and "not a raster" in status["broken.tif"]["error"]
    assert sorted(p.name for p in out.iterdir()) == ["landsat.crsic", "neon.crsic"]
    # the batch's containers are the single-raster ones
    compress_raster(scenes / "neon.tif", tmp_path / "neon.crsic", _opts(tiny_weights))
    assert (out / "neon.crsic").read_bytes() == (tmp_path / "neon.crsic").read_bytes()

    # decode them all, and a second run skips what exists
    rc = main(["batch", "decompress", str(out), "--no-enhance", *addr])
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and (res["done"], res["failed"]) == (2, 0)
    assert _read(out / "landsat.decoded.tif")[0].shape == (6, 352, 349)  # default: every band
    rc = main(["batch", "decompress", str(out), "--no-enhance", "--skip-existing", *addr])
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and res["skipped"] == 2
    assert not _no_partials(out) and not _no_partials(scenes)


def test_batch_in_process_with_summary(tiny_weights, tmp_path, capsys, one_thread):
    (tmp_path / "list.txt").write_text(f"{NEON}\n{tmp_path / 'missing.tif'}\n")
    rc = main(["batch", "compress", f"@{tmp_path / 'list.txt'}", "-o", str(tmp_path / "out"), "--model",
               tiny_weights, "--quality", "1", "--tile", "256", "--overlap", "0", "--quiet"])
    text = capsys.readouterr().out
    assert rc == 1
    assert "FAILED" in text and "missing.tif" in text and "1 of 2 rasters done, 1 failed" in text
    assert (tmp_path / "out" / "neon_rgb_uint8_0p1m_utm17n_deepforest_OSBS_029.crsic").exists()


# ---------------------------------------------------------------- workers dying

def test_worker_killed_mid_job_the_job_still_finishes(client, tiny_weights, tmp_path, one_thread):
    client.wait_for_workers(2, timeout=180)
    marker = str(tmp_path / "killed-once")

    def kill_once(job):  # the worker process dies the first time it meets tile 5
        if job.tile_index == 5 and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
        return encode_job(job)

    mapper = DaskMapper(client)
    opts = _opts(tiny_weights)
    compress_raster(NEON, tmp_path / "dask.crsic", opts, mapper=lambda fn, jobs: mapper(kill_once, jobs))
    assert os.path.exists(marker)
    compress_raster(NEON, tmp_path / "serial.crsic", opts)
    assert (tmp_path / "dask.crsic").read_bytes() == (tmp_path / "serial.crsic").read_bytes()


def test_job_that_keeps_killing_workers_fails_cleanly(client, tiny_weights, tmp_path):
    client.wait_for_workers(2, timeout=180)

    def kill_always(job):
        if job.tile_index == 3:
            os._exit(1)
        return encode_job(job)

    mapper = DaskMapper(client)
    dst = tmp_path / "never.crsic"
    # tile 3, or a tile queued behind it on the same dying workers, is given up
    with pytest.raises(CodecError, match=r"tile \d+ of neon.*died too often"):
        compress_raster(NEON, dst, _opts(tiny_weights), mapper=lambda fn, jobs: mapper(kill_always, jobs))
    assert not dst.exists() and not _no_partials(tmp_path)
    assert mapper._slots._value == mapper.max_in_flight
