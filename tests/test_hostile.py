"""Hostile input rasters, a full disk, and hostile containers through the CLI (issue 12):
always one ``error:`` line, never a traceback, never a partial output."""

from __future__ import annotations

import errno
import json
import os
import re
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from fuzzing import HOSTILE_HEADERS, Parts, make_source
from testdata import ROOT
from core.codec.compress import compress_raster
from core.codec.decompress import decompress_raster
from core.errors import BadInput, CodecError, OutputFailed
from core.format.container import ContainerReader
from core.options import CompressParams, EnhanceParams


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def files(folder):
    return sorted(p.name for p in folder.iterdir())


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text and "\r" not in text, repr(text)
    return text


# ---------------------------------------------------------------- hostile GeoTIFFs


def _write(path, data, **kw):
    profile = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                   dtype=str(data.dtype), transform=from_origin(500000, 4000000, 1, 1), crs="EPSG:32633")
    profile.update(kw)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def _patch_tags(src, dst, tags: dict[int, int]) -> None:
    """Copy a classic little-endian TIFF with some SHORT/LONG tags of its first IFD rewritten."""
    b = bytearray(src.read_bytes())
    assert b[:4] == b"II*\x00"
    (ifd,) = struct.unpack_from("<I", b, 4)
    (n,) = struct.unpack_from("<H", b, ifd)
    for i in range(n):
        at = ifd + 2 + 12 * i
        tag, kind, _ = struct.unpack_from("<HHI", b, at)
        if tag in tags:
            struct.pack_into("<H" if kind == 3 else "<I", b, at + 8, tags[tag])
    dst.write_bytes(bytes(b))


@pytest.fixture(scope="module")
def hostile_rasters(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile-rasters")
    rgb = (np.arange(3 * 96 * 128) % 251).astype("uint8").reshape(3, 96, 128)
    _write(d / "plain.tif", rgb)
    _patch_tags(d / "plain.tif", d / "zero-width.tif", {256: 0})
    _patch_tags(d / "plain.tif", d / "zero-height.tif", {257: 0})
    _patch_tags(d / "plain.tif", d / "declared-beyond-file.tif", {256: 60000, 257: 60000})
    _write(d / "tiled.tif", rgb, tiled=True, blockxsize=32, blockysize=32, compress="deflate")
    data = (d / "tiled.tif").read_bytes()
    (d / "truncated.tif").write_bytes(data[: len(data) // 2])
    _write(d / "tiled16.tif", rgb.astype("uint16") * 100, tiled=True, blockxsize=32, blockysize=32, compress="deflate")
    data = (d / "tiled16.tif").read_bytes()
    (d / "truncated-uint16.tif").write_bytes(data[: len(data) * 2 // 3])
    _write(d / "float32.tif", rgb.astype("float32"))
    _write(d / "complex64.tif", rgb.astype("complex64"))
    with rasterio.open(d / "palette.tif", "w", driver="GTiff", width=128, height=96, count=1, dtype="uint8",
                       photometric="palette", transform=from_origin(500000, 4000000, 1, 1), crs="EPSG:32633") as dst:
        dst.write(rgb[:1])
        dst.write_colormap(1, {i: (i, 255 - i, 0, 255) for i in range(256)})
    _write(d / "many-bands.tif", np.repeat(rgb[:1], 300, axis=0))
    return d


HOSTILE_RASTERS = {
    "zero-width": "not a raster GDAL can read",
    "zero-height": "not a raster GDAL can read",
    "declared-beyond-file": "cannot read its pixels",
    "truncated": "cannot read its pixels",
    "truncated-uint16": "cannot read its pixels",
    "float32": "unsupported data type float32",
    "complex64": "unsupported data type complex64",
    "palette": "palette (colour table) band",
}


@pytest.mark.parametrize("name", sorted(HOSTILE_RASTERS))
def test_hostile_rasters_give_one_line_errors(hostile_rasters, tmp_path, tiny_weights, name):
    with pytest.raises(CodecError, match=re.escape(HOSTILE_RASTERS[name])) as err:
        compress_raster(hostile_rasters / f"{name}.tif", tmp_path / "out.crsic",
                        CompressParams(model=tiny_weights, quality=1, tile=64, overlap=0))
    one_line(err.value)
    assert files(tmp_path) == []


def test_hundreds_of_bands(hostile_rasters, tmp_path, tiny_weights):
    src = hostile_rasters / "many-bands.tif"
    out = tmp_path / "out.crsic"
    # the default (every band) is refused above MAX_DEFAULT_BANDS with one line asking for a choice
    with pytest.raises(BadInput, match="300 bands.*--bands") as err:
        compress_raster(src, out, CompressParams(model=tiny_weights, quality=1, tile=64, overlap=0))
    one_line(err.value)
    compress_raster(src, out, CompressParams(model=tiny_weights, quality=1, tile=64, overlap=0, bands=[1, 2, 3]))
    with ContainerReader(out) as r:
        assert r.header.bands == (1, 2, 3) and r.header.source_band_count == 300
    with pytest.raises(BadInput, match="at most 256"):
        compress_raster(src, tmp_path / "all.crsic", CompressParams(model=tiny_weights, quality=1, tile=64,
                                                                  bands=list(range(1, 258))))
    assert files(tmp_path) == ["out.crsic"]


@pytest.mark.parametrize("name", ["palette", "truncated", "float32", "zero-width"])
def test_hostile_rasters_refused_by_enhance(hostile_rasters, tmp_path, identity_enhancer, name):
    from core.enhance import enhance_raster

    with pytest.raises(CodecError) as err:
        enhance_raster(hostile_rasters / f"{name}.tif", tmp_path / "out.tif", EnhanceParams(window=64, overlap=16))
    one_line(err.value)
    assert files(tmp_path) == []


# ---------------------------------------------------------------- a full disk


class _FullDisk:
    """A file object whose writes fail with ENOSPC once ``room`` bytes were written."""

    def __init__(self, f, room: int):
        self.f, self.room = f, room

    def write(self, data):
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)


@pytest.fixture(scope="module")
def small_container(tmp_path_factory, tiny_weights):
    d = tmp_path_factory.mktemp("small")
    make_source(d / "src.tif", masked=True)
    compress_raster(d / "src.tif", d / "src.crsic", CompressParams(model=tiny_weights, quality=1, tile=64, overlap=0))
    return d / "src.tif", d / "src.crsic"


@pytest.mark.parametrize("room", [0, 300, 1500])
def test_full_disk_while_compressing(small_container, tmp_path, tiny_weights, monkeypatch, room):
    import core.format.container as container

    monkeypatch.setattr(container, "open", lambda path, mode: _FullDisk(open(path, mode), room), raising=False)
    out = tmp_path / "out.crsic"
    with pytest.raises(OutputFailed, match="No space left on device") as err:
        compress_raster(small_container[0], out, CompressParams(model=tiny_weights, quality=1, tile=64, overlap=0))
    assert str(out) in one_line(err.value)
    assert files(tmp_path) == []


def _gdal_full_disk(monkeypatch, after: int = 0):
    """GDAL failing to write: rasterio's "Write failed" chained to GDAL's own message."""
    from rasterio.errors import RasterioIOError
    from rasterio.io import DatasetWriter

    calls = {"n": 0}
    write = DatasetWriter.write

    def failing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > after:
            try:
                raise OSError(errno.ENOSPC, "TIFFAppendToStrip: No space left on device")
            except OSError as cause:
                raise RasterioIOError("Write failed. See previous exception for details.") from cause
        return write(self, *args, **kwargs)

    monkeypatch.setattr(DatasetWriter, "write", failing)


@pytest.mark.parametrize("cog", [False, True])
def test_full_disk_while_decompressing(small_container, tmp_path, tiny_weights, monkeypatch, cog):
    _gdal_full_disk(monkeypatch, after=1)
    out = tmp_path / "out.tif"
    with pytest.raises(OutputFailed, match="No space left on device") as err:
        decompress_raster(small_container[1], out, model=tiny_weights, cog=cog)
    assert str(out) in one_line(err.value)
    assert files(tmp_path) == []


def test_full_disk_while_enhancing(small_container, tmp_path, monkeypatch, identity_enhancer):
    from core.enhance import enhance_raster

    _gdal_full_disk(monkeypatch)
    with pytest.raises(OutputFailed, match="No space left on device") as err:
        enhance_raster(small_container[0], tmp_path / "out.tif", EnhanceParams(window=64, overlap=16))
    one_line(err.value)
    assert files(tmp_path) == []


def test_full_disk_while_decoding_enhanced(small_container, tmp_path, tiny_weights, monkeypatch,
                                           identity_enhancer):
    from core.enhance import decompress_enhanced
    from core.options import DecompressParams

    _gdal_full_disk(monkeypatch)
    with pytest.raises(OutputFailed, match="No space left on device"):
        decompress_enhanced(small_container[1], tmp_path / "out.tif",
                            DecompressParams(model=tiny_weights, enhance=True,
                                             enhancement=EnhanceParams(window=64, overlap=16)))
    assert files(tmp_path) == []


def test_failed_rename_and_temporary_file(small_container, tmp_path, tiny_weights, monkeypatch):
    import core.format.output as output

    def refuse(*args):
        raise OSError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(output.os, "replace", refuse)
    with pytest.raises(OutputFailed, match="Permission denied"):
        decompress_raster(small_container[1], tmp_path / "out.tif", model=tiny_weights)
    assert files(tmp_path) == []
    monkeypatch.undo()
    monkeypatch.setattr(output.tempfile, "mkstemp", lambda **kw: refuse())
    with pytest.raises(OutputFailed, match="Permission denied"):
        decompress_raster(small_container[1], tmp_path / "out.tif", model=tiny_weights)
    assert files(tmp_path) == []


def test_real_file_size_limit(small_container, tmp_path, tiny_weights):
    """A real write failure, not a mock: the child process may write no file over 1 KB
    (RLIMIT_FSIZE; the kernel's EFBIG is what a full disk's ENOSPC is to GDAL and Python)."""
    src, container = small_container
    script = textwrap.dedent(f"""
        import json, resource, signal, sys
        from pathlib import Path
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        from core.codec.compress import compress_raster
        from core.codec.decompress import decompress_raster
        from core.options import CompressParams
        out, res = Path({str(tmp_path)!r}), {{}}
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))
        for name, run in [("decompress", lambda: decompress_raster({str(container)!r}, out / "d.tif",
                                                                   model={tiny_weights!r})),
                          ("compress", lambda: compress_raster({str(src)!r}, out / "c.crsic", CompressParams(
                              model={tiny_weights!r}, quality=2, tile=64, overlap=0)))]:
            try:
                run()
                res[name] = "written"
            except Exception as exc:
                res[name] = type(exc).__name__ + ": " + str(exc)
        print(json.dumps(res))
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["decompress"].startswith("OutputFailed: could not write"), res
    assert "\n" not in res["decompress"]
    assert res["compress"] == "written" or res["compress"].startswith("OutputFailed: could not write"), res
    assert files(tmp_path) == ([] if res["compress"] != "written" else ["c.crsic"])


@pytest.mark.parametrize("cog", [False, True])
def test_cli_on_a_full_disk_says_one_line(small_container, tmp_path, tiny_weights, cog):
    """Through the CLI, with a real write limit: exit 1 and a single ``error:`` line on
    stderr (libtiff's own complaints are held back), and no file left behind."""
    import resource
    import signal

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))

    out = tmp_path / "out"
    out.mkdir()
    cmd = [sys.executable, "-m", "core.tile_codec", "decompress", str(small_container[1]), "-o", str(out / "d.tif"),
           "--model", str(tiny_weights), "--no-enhance", "--quiet"] + (["--cog"] if cog else [])
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, preexec_fn=limit)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: could not write"), proc.stderr
    assert ".partial" not in lines[0], "the message names our temporary file"
    assert list(out.iterdir()) == []


# ---------------------------------------------------------------- hostile containers through the CLI


def test_cli_refuses_hostile_containers(small_container, tmp_path, tiny_weights):
    """``python -m core.tile_codec decompress`` on hostile files: exit 1, one ``error:`` line, no traceback."""
    parts = Parts.parse(small_container[1].read_bytes())
    header = parts.header_dict()
    mask_bomb = __import__("zlib").compress(bytes(10_000_000), 9)
    cases = {
        "header-list": (parts.with_header(HOSTILE_HEADERS["header-list"](header)), False),
        "width-billion": (parts.with_header(HOSTILE_HEADERS["width-billion"](header)), True),
        "model-path": (parts.with_header(HOSTILE_HEADERS["model-path"](header)), False),
        "level-nan": (parts.with_header(HOSTILE_HEADERS["level-nan"](header)), True),
        "mask-bomb": (Parts(parts.version, parts.header, [struct.pack("<I", len(mask_bomb)) + mask_bomb + p[4:]
                                                          for p in parts.payloads], parts.symbols_crcs), True),
        "stream-cut": (Parts(parts.version, parts.header, [p[:-7] for p in parts.payloads], parts.symbols_crcs),
                       True),
    }
    procs = {}
    for name, (case, with_model) in cases.items():
        path = tmp_path / f"{name}.crsic"
        path.write_bytes(case.build())
        argv = [sys.executable, "-m", "core.tile_codec", "decompress", str(path), "-o", str(tmp_path / f"{name}.tif")]
        if with_model:
            argv += ["--model", tiny_weights]
        procs[name] = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        lines = [line for line in err.splitlines() if line.strip()]
        assert proc.returncode == 1, f"{name}: exit {proc.returncode}: {err[-1500:]}"
        assert "Traceback" not in err, f"{name}: {err[-1500:]}"
        assert len(lines) == 1 and lines[0].startswith("error: "), f"{name}: {err!r}"
    assert sorted(files(tmp_path)) == sorted(f"{name}.crsic" for name in cases)
