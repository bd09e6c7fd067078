"""Damaged and hostile containers: every one ends in a one-line CodecError or a correct decode.

A fixed-seed sample of what benchmarks/fuzz_containers.py runs at length: random byte
damage (the checksums catch it), damage behind recomputed checksums (header JSON, header
fields, tile masks, tile stream framing, entropy-coded bytes, tile order), and the
hand-made hostile headers of issue 12. Small rasters (128 x 96, four tiles of 64) and the
seeded elic-tiny keep it well under a minute.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import rasterio

from fuzzing import HARMLESS_HEADERS, HOSTILE_HEADERS, Parts, damage_bytes, damage_reframed, make_source, run_case
from core.codec.compress import compress_raster
from core.codec.decompress import decompress_raster
from core.errors import CodecError, CorruptContainer, WeightsUnavailable
from core.format.payload import pack_payload, unpack_payload
from core.options import CompressParams

SEED = 12
RANDOM_CASES = 240  # per run, spread over the three containers
PIXELS_MUST_MATCH = {"bytes", "stream-framing", "stream-bytes"}  # a decode of these is the original's


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # many small decodes


@pytest.fixture(scope="module")
def originals(tmp_path_factory, tiny_weights):
    """Three containers (formats 3 and 2 with a nodata mask, format 1 without) and their decoded pixels."""
    folder = tmp_path_factory.mktemp("fuzz-originals")
    made = {}
    for name, fmt, masked in (("f3-masked", 3, True), ("f2-masked", 2, True), ("f1", 1, False)):
        src = folder / f"{name}.tif"
        make_source(src, masked=masked)
        path = folder / f"{name}.crsic"
        compress_raster(src, path, CompressParams(model=tiny_weights, quality=1.5, tile=64, overlap=0, format=fmt))
        decompress_raster(path, folder / f"{name}.dec.tif", model=tiny_weights)
        with rasterio.open(folder / f"{name}.dec.tif") as ds:
            made[name] = (path.read_bytes(), ds.read())
    return made


@pytest.fixture
def cases(tmp_path):
    (tmp_path / "out").mkdir()
    return tmp_path / "case.crsic", tmp_path / "out" / "case.tif"


def test_reframing_reproduces_a_container(originals):
    for data, _ in originals.values():
        assert Parts.parse(data).build() == data


def test_random_damage_is_refused_or_decodes_correctly(originals, cases, tiny_weights):
    case, out = cases
    rng = np.random.default_rng(SEED)
    names = sorted(originals)
    counts, failures = {}, []
    for i in range(RANDOM_CASES):
        name = names[i % len(names)]
        data, reference = originals[name]
        if i % 3 == 0:
            what, damaged = "bytes", damage_bytes(data, rng)
        else:
            what, parts = damage_reframed(Parts.parse(data), rng)
            damaged = parts.build()
        case.write_bytes(damaged)
        try:
            outcome, detail = run_case(case, out, tiny_weights,
                                       reference=reference if what in PIXELS_MUST_MATCH else None)
        except Exception as exc:  # noqa: BLE001 - a traceback is what this test looks for
            outcome, detail = "other", f"{type(exc).__name__}: {exc}"
        counts[outcome] = counts.get(outcome, 0) + 1
        if outcome == "other":
            failures.append(f"case {i} ({name}, {what}): {detail}")
    assert not failures, f"{len(failures)} of {RANDOM_CASES} cases: " + "; ".join(failures[:5])
    assert counts.get("clean", 0) > RANDOM_CASES // 2  # damage is mostly refused...
    assert counts.get("decoded", 0) > 0  # ...and some (cosmetic header fields) decodes


@pytest.mark.parametrize("container", ["f3-masked", "f2-masked", "f1"])
def test_hostile_headers_give_one_line_errors(originals, cases, tiny_weights, container):
    case, out = cases
    data, _ = originals[container]
    parts = Parts.parse(data)
    failures = []
    for name, change in HOSTILE_HEADERS.items():
        case.write_bytes(parts.with_header(change(parts.header_dict())).build())
        try:
            outcome, detail = run_case(case, out, tiny_weights)
        except Exception as exc:  # noqa: BLE001
            outcome, detail = "other", f"{type(exc).__name__}: {exc}"
        if outcome != "clean":
            failures.append(f"{name}: {outcome} {detail}")
    assert not failures, "; ".join(failures)


def test_hostile_header_messages_name_the_problem(originals, cases, tiny_weights):
    case, _ = cases
    parts = Parts.parse(originals["f2-masked"][0])
    expected = {"width-string": "field 'width' is not an integer", "ranges-null": "field 'ranges' is not a list",
                "model-null": "field 'model' is not an object", "header-list": "header is not a JSON object",
                "dtype-evil": "field 'dtype' is 'evil'", "transform-2": "field 'transform' has 2 items",
                "bands-empty": "field 'bands' has 0 items", "width-billion": "field 'width' is 1000000000",
                "level-nan": "field 'level' is not a finite number", "level-1e9": "outside 0..64",
                "level-beyond-model": "quality must be between 0 and 2", "header-not-utf8": "not valid JSON",
                "crs-garbage": "crs is not a WKT"}
    for name, text in expected.items():
        case.write_bytes(parts.with_header(HOSTILE_HEADERS[name](parts.header_dict())).build())
        with pytest.raises(CorruptContainer, match=text):
            decompress_raster(case, case.with_suffix(".tif"), model=tiny_weights)


def test_container_model_is_only_ever_a_registry_name(originals, cases, tiny_weights, monkeypatch):
    """A model named by the file is looked up in the registry, never opened as a path; a path
    is opened only when the user passes one."""
    import core.models.files as weights

    opened = []
    resolve = weights.resolve_weights
    monkeypatch.setattr(weights, "resolve_weights", lambda model: opened.append(model) or resolve(model))
    case, out = cases
    parts = Parts.parse(originals["f2-masked"][0])
    header = parts.header_dict()
    for name in ("/etc/passwd", "../weights/x.safetensors", tiny_weights):
        case.write_bytes(parts.with_header(dict(header, model=dict(header["model"], name=name))).build())
        with pytest.raises(WeightsUnavailable, match="not in the registry.*pass its weights file with --model"):
            decompress_raster(case, out)
    assert opened == [] and not out.exists()
    decompress_raster(case, out, model=tiny_weights)  # the user's --model: a path, opened
    assert out.exists()


def test_harmless_header_changes_decode_to_the_same_pixels(originals, cases, tiny_weights):
    case, out = cases
    for container, (data, reference) in originals.items():
        parts = Parts.parse(data)
        for name, change in HARMLESS_HEADERS.items():
            case.write_bytes(parts.with_header(change(parts.header_dict())).build())
            outcome, detail = run_case(case, out, tiny_weights, reference=reference)
            assert outcome == "decoded", f"{container} {name}: {detail}"


def test_tile_payload_parsers_refuse_garbage():
    rng = np.random.default_rng(SEED)
    valid = np.zeros((64, 48), bool)
    valid[10:20, 5:9] = True
    invalid, stream = unpack_payload(pack_payload(valid, b"stream"), 64, 48)
    assert np.array_equal(invalid, valid) and stream == b"stream"
    bomb = zlib.compress(bytes(50_000_000), 9)  # 50 MB of zeros in ~50 KB: inflated no further than a tile
    for payload in [b"", b"\x01", b"\xff\xff\xff\xff", b"\x05\x00\x00\x00abcde",
                    len(bomb).to_bytes(4, "little") + bomb,
                    (8).to_bytes(4, "little") + zlib.compress(b"") + b"s",
                    *(rng.bytes(int(rng.integers(0, 40))) for _ in range(50))]:
        try:
            unpack_payload(payload, 64, 48)
        except CorruptContainer as exc:
            assert "\n" not in str(exc)


def test_tile_stream_parser_refuses_garbage(tiny_weights):
    from core.codec.tile_coder import get_coder

    coder = get_coder(tiny_weights)
    rng = np.random.default_rng(SEED)
    tile = rng.random((3, 64, 64), dtype=np.float32)
    stream, crc = coder.encode_tile(tile, 0.5)
    assert coder.decode_tile(stream, 0.5, crc, shape=(3, 64, 64)).shape == (3, 64, 64)
    bad = [b"", stream[:5], stream[:6], b"\xff\xff" + stream[2:], stream[:2] + b"\xff\xff" + stream[4:],
           stream[:2] + b"\x00\x00" + stream[4:], stream + b"x", stream[:-1], stream[:6] + b"\x00" + stream[7:],
           stream[:6] + b"\xff" + stream[7:]]
    for data in bad:
        with pytest.raises(CodecError):
            coder.decode_tile(data, 0.5, crc, shape=(3, 64, 64))
    with pytest.raises(CorruptContainer, match="where the container has"):
        coder.decode_tile(stream, 0.5, crc, shape=(3, 128, 64))
