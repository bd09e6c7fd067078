"""In-process decoding on job threads (``ThreadMapper``): the same pixels and errors as one
job at a time, order kept, files and datasets safe to read from two threads at once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import rasterio

from core.codec.compress import compress_raster
from core.codec.decompress import decompress_raster
from core.codec.jobs import ThreadMapper, decoding_mapper, serial_map
from core.errors import CorruptContainer
from core.format.container import ContainerReader
from core.format.raster_io import cached_raster
from core.options import CompressParams
from testdata import TEST_DATA

NEON = TEST_DATA / "neon_rgb_uint8_0p1m_utm17n_deepforest_OSBS_029.tif"  # 400 x 400 RGB: 16 tiles of 128 px


@pytest.fixture(scope="module")
def neon_container(tmp_path_factory):
    path = tmp_path_factory.mktemp("tm") / "neon.crsic"
    compress_raster(NEON, path, CompressParams(tile=128, quality=3))
    return path


def _decoded(container, out, mapper):
    decompress_raster(container, out, mapper=mapper)
    with rasterio.open(out) as ds:
        return ds.read()


def test_results_come_in_job_order_with_two_jobs_at_once():
    active, most = [0], [0]
    lock = threading.Lock()

    def job(i):
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        threading.Event().wait(0.01 * (i % 3))  # uneven lengths: later jobs may end first
        with lock:
            active[0] -= 1
        return i * i

    assert list(ThreadMapper(2)(job, range(12))) == [i * i for i in range(12)]
    assert most[0] == 2


def test_thread_decoding_gives_the_serial_pixels(neon_container, tmp_path):
    """Format 3: each row's synthesis interleaved with the next row's entropy decoding."""
    serial = _decoded(neon_container, tmp_path / "serial.tif", serial_map)
    threaded = _decoded(neon_container, tmp_path / "threads.tif", ThreadMapper(2))
    np.testing.assert_array_equal(serial, threaded)


def test_threaded_compression_writes_the_serial_bytes(tmp_path):
    """Two tiles read and coded at once: every job reads its window through its own dataset."""
    a, b = tmp_path / "serial.crsic", tmp_path / "threads.crsic"
    compress_raster(NEON, a, CompressParams(tile=128, quality=3), mapper=serial_map)
    compress_raster(NEON, b, CompressParams(tile=128, quality=3), mapper=ThreadMapper(2))
    assert a.read_bytes() == b.read_bytes()


def test_a_damaged_tile_is_reported_as_serially(neon_container, tmp_path):
    damaged = tmp_path / "damaged.crsic"
    data = bytearray(neon_container.read_bytes())
    with ContainerReader(neon_container) as reader:
        e = reader.entries[9]
    data[e.offset + e.length // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    messages = []
    for mapper in (serial_map, ThreadMapper(2)):
        with pytest.raises(CorruptContainer) as err:
            decompress_raster(damaged, tmp_path / "out.tif", overwrite=True, mapper=mapper)
        messages.append(str(err.value))
        assert not (tmp_path / "out.tif").exists()  # nothing half-written
    assert messages[0] == messages[1] and "tile 9" in messages[0]


def test_a_container_reader_serves_two_threads(neon_container):
    with ContainerReader(neon_container) as reader:
        expected = [reader.read_tile(i) for i in range(len(reader.entries))]
        with ThreadPoolExecutor(2) as pool:
            got = list(pool.map(reader.read_tile, [i % len(expected) for i in range(2000)]))
    assert got == [expected[i % len(expected)] for i in range(2000)]


def test_each_thread_reads_the_source_through_its_own_dataset():
    here = cached_raster(str(NEON))
    assert cached_raster(str(NEON)) is here
    with ThreadPoolExecutor(1) as pool:
        there = pool.submit(cached_raster, str(NEON)).result()
    assert there is not here


def test_decoding_runs_two_jobs_at_once_only_on_two_threads_or_more(monkeypatch):
    import core.codec.jobs as jobs

    monkeypatch.setattr(jobs, "_threads", lambda n: 1)
    assert decoding_mapper() is serial_map
    monkeypatch.setattr(jobs, "_threads", lambda n: 2)
    assert isinstance(decoding_mapper(), ThreadMapper)


def test_a_map_leaves_no_thread_behind_even_when_stopped_early():
    before = threading.active_count()
    results = ThreadMapper(2)(lambda i: i, range(100))
    assert next(results) == 0 and threading.active_count() > before
    results.close()  # the consumer stops (an error, a cancel)
    assert threading.active_count() == before
    assert list(ThreadMapper(2)(lambda i: i, range(10))) == list(range(10))
    assert threading.active_count() == before
