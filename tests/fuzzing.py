"""Damaged and hostile containers, for tests/test_fuzz.py and benchmarks/fuzz_containers.py.

``Parts`` splits a container into what its checksums protect (version, header JSON, tile
payloads, symbols CRCs); ``Parts.build`` frames them again with every checksum, index and
footer recomputed, so a damaged header or tile gets past the framing and reaches the code
behind it (what a crafted file, or a disk that rewrote a sector with its checksum, does).
``random_case`` draws one damaged container; ``HOSTILE_HEADERS`` are the hand-made cases.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field, replace

import numpy as np

MAGIC = b"CRSIC\x00\r\n"
END_MAGIC = b"CRSICEND"
INDEX_ENTRY = struct.Struct("<QIII")
FOOTER = struct.Struct("<QII8s")
RECORD = struct.Struct("<4sIIII")  # format 3: in front of each payload


@dataclass
class Parts:
    version: int
    header: bytes  # the JSON
    payloads: list[bytes]
    symbols_crcs: list[int]
    trailing: bytes = b""  # bytes between the last payload and the index (none in a written file)
    extra: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, data: bytes) -> "Parts":
        assert data[:8] == MAGIC
        version, n = struct.unpack_from("<HI", data, 8)
        header = data[14 : 14 + n]
        index_offset, count, _, _ = FOOTER.unpack_from(data, len(data) - FOOTER.size)
        entries = [INDEX_ENTRY.unpack_from(data, index_offset + i * INDEX_ENTRY.size) for i in range(count)]
        payloads = [data[off : off + length] for off, length, _, _ in entries]
        return cls(version, header, payloads, [e[3] for e in entries])

    def build(self) -> bytes:
        """The container these parts make, every checksum correct."""
        out = bytearray(MAGIC + struct.pack("<HI", self.version, len(self.header)) + self.header)
        out += struct.pack("<I", zlib.crc32(self.header))
        index = b""
        for i, (payload, symbols_crc) in enumerate(zip(self.payloads, self.symbols_crcs)):
            if self.version >= 3:
                out += RECORD.pack(b"TILE", i, len(payload), zlib.crc32(payload), symbols_crc & 0xFFFFFFFF)
            index += INDEX_ENTRY.pack(len(out), len(payload), zlib.crc32(payload), symbols_crc & 0xFFFFFFFF)
            out += payload
        out += self.trailing
        index_offset = len(out)
        out += index + FOOTER.pack(index_offset, len(self.payloads), zlib.crc32(index), END_MAGIC)
        return bytes(out)

    def header_dict(self) -> dict:
        return json.loads(self.header)

    def with_header(self, value) -> "Parts":
        """``value``: a JSON-able object, or the header's raw bytes."""
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()
        return replace(self, header=raw)


# ---------------------------------------------------------------- byte-level damage


def damage_bytes(data: bytes, rng: np.random.Generator, protect: int = 0) -> bytes:
    """One random damage of ``data`` (bytes before ``protect`` are kept): bit flips, a
    rewritten run, a cut, an insertion, a deletion, a duplicated or zeroed run."""
    b = bytearray(data)
    n = len(b)
    if n == 0:
        return rng.bytes(int(rng.integers(1, 17)))
    lo = min(protect, n - 1)
    kind = int(rng.integers(0, 8))
    at = int(rng.integers(lo, n)) if n > lo else lo
    run = int(rng.integers(1, 17))
    if kind == 0:  # a few bit flips
        for _ in range(int(rng.integers(1, 5))):
            i = int(rng.integers(lo, n))
            b[i] ^= 1 << int(rng.integers(0, 8))
    elif kind == 1:  # random bytes over a run
        b[at : at + run] = rng.bytes(len(b[at : at + run]))
    elif kind == 2:  # cut
        del b[at:]
    elif kind == 3:  # insert
        b[at:at] = rng.bytes(run)
    elif kind == 4:  # delete a run
        del b[at : at + run]
    elif kind == 5:  # duplicate a run
        b[at:at] = b[at : at + run]
    elif kind == 6:  # zero a run
        b[at : at + run] = bytes(len(b[at : at + run]))
    else:  # an interesting value (0, 1, max) in a 1-, 2- or 4-byte field
        width = int(rng.choice([1, 2, 4]))
        value = int(rng.choice([0, 1, 0xFF, 0x7F, 0x80])) if width == 1 else int(rng.choice([0, 1, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF])) & ((1 << (8 * width)) - 1)
        b[at : at + width] = value.to_bytes(width, "little")[: len(b[at : at + width])]
    return bytes(b)


# ---------------------------------------------------------------- damage with the checksums recomputed


def _json_damage(header: dict, rng: np.random.Generator) -> dict | bytes:
    """Change one field of the header (a value of another type, a boundary, a null...)."""
    d = json.loads(json.dumps(header))
    key = str(rng.choice(sorted(d)))
    values = [None, "x", "", -1, 0, 1, 2, 3, 63, 64, 65, 1e9, -1e9, 2**31, 2**64, 1.5, 1e308, True, [], {}, [1, 2],
              [1, 2, 3, 4, 5, 6], "EPSG:4326", "../../etc/passwd", "\n", {"name": "elic-tiny"}]
    choice = int(rng.integers(0, 4))
    if choice == 0:
        d[key] = values[int(rng.integers(0, len(values)))]
    elif choice == 1 and isinstance(d[key], (int, float)) and not isinstance(d[key], bool):
        d[key] = d[key] + float(rng.choice([-1, 1, 0.5, -0.5, 1e6, -1e6]))
    elif choice == 2 and isinstance(d[key], list) and d[key]:
        i = int(rng.integers(0, len(d[key])))
        d[key][i] = values[int(rng.integers(0, len(values)))]
    else:
        d.pop(key)
    return d


def damage_reframed(parts: Parts, rng: np.random.Generator) -> tuple[str, Parts]:
    """One damage behind the checksums -> (what was damaged, the parts to build)."""
    kind = int(rng.integers(0, 6))
    if kind == 0:  # header bytes (JSON syntax, UTF-8)
        return "header-bytes", parts.with_header(damage_bytes(parts.header, rng))
    if kind == 1:  # one header field
        try:
            header = parts.header_dict()
        except ValueError:  # damaged before: damage its bytes again
            return "header-bytes", parts.with_header(damage_bytes(parts.header, rng))
        if not isinstance(header, dict):
            return "header-field", parts.with_header({"header": header})
        return "header-field", parts.with_header(_json_damage(header, rng))
    payloads = list(parts.payloads)
    crcs = list(parts.symbols_crcs)
    if not payloads:
        return "header-bytes", parts.with_header(damage_bytes(parts.header, rng))
    i = int(rng.integers(0, len(payloads)))
    if kind == 2:  # the payload's mask length / mask
        p = bytearray(payloads[i])
        if rng.random() < 0.5:
            mask = zlib.compress(rng.bytes(int(rng.integers(0, 2000))), 9)
        else:
            mask = damage_bytes(zlib.compress(bytes(int(rng.integers(0, 4000))), 9), rng)
        payloads[i] = struct.pack("<I", len(mask)) + mask + bytes(p[4:])
        return "mask", replace(parts, payloads=payloads)
    if kind == 3:  # the tile stream's framing (shape, stream counts, lengths)
        p = payloads[i]
        head = 4 + struct.unpack_from("<I", p, 0)[0] if len(p) >= 4 else 0
        stream = p[head:]
        cut = 16 if rng.random() < 0.5 else len(stream)
        payloads[i] = p[:head] + damage_bytes(stream[:cut], rng) + stream[cut:]
        return "stream-framing", replace(parts, payloads=payloads)
    if kind == 4:  # the entropy-coded bytes themselves
        payloads[i] = damage_bytes(payloads[i], rng, protect=4 + 6 + 5)
        return "stream-bytes", replace(parts, payloads=payloads)
    # tiles swapped, dropped, duplicated, or a symbols CRC changed
    sub = int(rng.integers(0, 4))
    if sub == 0 and len(payloads) > 1:
        j = int(rng.integers(0, len(payloads)))
        payloads[i], payloads[j] = payloads[j], payloads[i]
    elif sub == 1:
        del payloads[i], crcs[i]
    elif sub == 2:
        payloads.append(payloads[i])
        crcs.append(crcs[i])
    else:
        crcs[i] ^= 1 << int(rng.integers(0, 32))
    return "tiles", replace(parts, payloads=payloads, symbols_crcs=crcs)


def random_case(original: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    """Half plain byte damage (the checksums catch it), half damage behind recomputed checksums."""
    if rng.random() < 0.5:
        return "bytes", damage_bytes(original, rng)
    what, parts = damage_reframed(Parts.parse(original), rng)
    return what, parts.build()


# ---------------------------------------------------------------- hand-made hostile headers


def _set(**changes):
    def apply(d: dict):
        d = json.loads(json.dumps(d))
        d.update(changes)
        return d

    return apply


def _nested(depth: int):
    return lambda d: ("[" * depth + "]" * depth).encode()


# name: header dict -> new header (a JSON-able value, or raw bytes)
HOSTILE_HEADERS = {
    "width-string": _set(width="x"),
    "width-billion": _set(width=1_000_000_000),
    "width-float": _set(width=128.5),
    "width-zero": _set(width=0),
    "width-grid-mismatch": _set(width=1000),
    "height-negative": _set(height=-96),
    "ranges-null": _set(ranges=None),
    "ranges-reversed": _set(ranges=[[255.0, 0.0]] * 3),
    "ranges-huge": _set(ranges=[[0.0, 1e300]] * 3),
    "ranges-short": _set(ranges=[[0.0, 255.0]]),
    "ranges-strings": _set(ranges=[["a", "b"]] * 3),
    "model-null": _set(model=None),
    "model-path": _set(model={"name": "/etc/passwd", "sha256": "0" * 64}),
    "model-relative-path": _set(model={"name": "../weights/x.safetensors", "sha256": "0" * 64}),
    "model-newline": _set(model={"name": "elic\nerror: fake", "sha256": "0" * 64}),
    "model-bad-sha": _set(model={"name": "elic-tiny", "sha256": "zz"}),
    "model-not-a-name": _set(model={"name": 5, "sha256": "0" * 64}),
    "header-list": lambda d: [d],
    "header-null": lambda d: None,
    "header-number": lambda d: 42,
    "header-not-utf8": lambda d: b'{"width": "\xff\xfe"}',
    "header-not-json": lambda d: b"{width: 128",
    "header-deep": _nested(100_000),
    "header-huge-int": lambda d: json.dumps(d).replace(f'"width": {d["width"]}', '"width": ' + "9" * 5000).encode(),
    "header-huge-float": lambda d: json.dumps(d).replace(f'"width": {d["width"]}', '"width": 1e999').encode(),
    "dtype-evil": _set(dtype="evil"),
    "dtype-float": _set(dtype="float32"),
    "transform-2": _set(transform=[1.0, 2.0]),
    "transform-degenerate": _set(transform=[0.0, 0.0, 0.0, 0.0, 0.0, 0.0]),
    "transform-inf": lambda d: dict(d, transform=[float("inf")] + d["transform"][1:]),
    "bands-empty": _set(bands=[]),
    "bands-zero": _set(bands=[0, 1, 2]),
    "bands-repeated": _set(bands=[1, 1, 2]),
    "bands-many": _set(bands=list(range(1, 301)), ranges=[[0.0, 255.0]] * 300),
    "bands-beyond-source": _set(source_band_count=2),
    "level-nan": _set(level=float("nan")),
    "level-1e9": _set(level=1e9, quality=1e9 + 1),
    "level-beyond-model": _set(level=4.0, quality=5.0),
    "quality-mismatch": _set(quality=2.0),
    "tile-small": _set(tile=32),
    "tile-huge": _set(tile=1 << 20),
    "overlap-over-half": _set(overlap=40),
    "tile-rows-zero": _set(tile_rows=0),
    "tile-cols-mismatch": lambda d: dict(d, tile_cols=d["tile_cols"] + 1),
    "crs-garbage": _set(crs="not a crs"),
    "crs-proj-init": _set(crs="+init=/etc/passwd:x"),
    "crs-number": _set(crs=4326),
    "nodata-string": _set(nodata="none"),
    "nodata-out-of-range": _set(nodata=1e300),
    "nodata-nan": _set(nodata=float("nan")),
    "has-mask-string": _set(has_mask="yes"),
    "descriptions-too-many": _set(band_descriptions=["a"] * 5),
    "descriptions-surrogate": lambda d: json.dumps(dict(d, band_descriptions=["x", None, None])).replace(
        '"x"', '"\\ud800"').encode(),
    "colorinterp-numbers": _set(colorinterp=[1, 2, 3]),
    "entropy-other-scheme": _set(entropy="int-f9-a24-w16"),
    "entropy-number": _set(entropy=7),
    "source-band-count-negative": _set(source_band_count=-3),
    "software-list": _set(software=["a"]),
    # format 3's context fields
    "latent-margin-string": _set(latent_margin="2"),
    "latent-margin-huge": _set(latent_margin=1 << 20),
    "latent-margin-wider-than-a-tile": _set(latent_margin=5),  # the test containers' tiles are 64 px
    "analysis-margin-alone": lambda d: dict({k: v for k, v in d.items() if k != "latent_margin"},
                                            analysis_margin=32),
    "latent-margin-with-overlap": _set(latent_margin=2, overlap=16),
}

# hostile but harmless: these must decode, to the same pixels
HARMLESS_HEADERS = {
    "unknown-key": _set(future_field={"nested": [1, 2, 3]}),
    "null-optionals": _set(source_name=None, software=None, band_descriptions=None, colorinterp=None),
    "colorinterp-unknown": lambda d: dict(d, colorinterp=["ultraviolet"] * len(d["bands"])),
    "source-name-strange": _set(source_name="../../x\n\t.tif"),
}


# ---------------------------------------------------------------- running a case


def make_source(path, masked: bool = False, dtype: str = "uint8", bands: int = 3) -> None:
    """The small test raster (128 x 96, UTM 17N): smooth patterns, a nodata corner if ``masked``."""
    import rasterio
    from rasterio.transform import from_origin

    yy, xx = np.mgrid[0:96, 0:128]
    planes = [(xx * 2 + yy) % 256, (yy * 3 + 10) % 256, ((xx // 8) ^ (yy // 8)) * 16 % 256 + 1]
    data = np.stack([planes[i % 3] for i in range(bands)]).astype(dtype)
    if dtype == "uint16":
        data = data * 37 + 100
    nodata = None
    if masked:
        nodata = 0
        data = np.where(data == 0, 1, data)
        data[:, 70:, 100:] = 0
    profile = dict(driver="GTiff", width=128, height=96, count=bands, dtype=dtype, crs="EPSG:32617",
                   transform=from_origin(400000.0, 3300000.0, 0.5, 0.5), nodata=nodata)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def run_case(case, out, weights: str | None, window=None, reference: np.ndarray | None = None) -> tuple[str, str]:
    """Decode ``case`` to ``out`` (in-process, the library's decode) -> (outcome, detail).

    Outcomes: "clean" (a one-line ``CodecError`` and no file left behind), "decoded" (a
    readable raster of the header's size; equal to ``reference`` when given), "other"
    (anything else: a traceback, a multi-line message, a left-over file, wrong pixels).
    """
    import rasterio

    from core.codec.decompress import container_info, decompress_raster
    from core.errors import CodecError

    folder = out.parent
    before = sorted(p.name for p in folder.iterdir())
    try:
        container_info(case)
        decompress_raster(case, out, model=weights, window=window, overwrite=True)
    except CodecError as exc:
        left = sorted(p.name for p in folder.iterdir())
        if left != before:
            return "other", f"{type(exc).__name__} left files behind: {sorted(set(left) - set(before))}"
        message = str(exc)
        if not message or "\n" in message or "\r" in message:
            return "other", f"{type(exc).__name__} with a message that is not one line: {message!r}"
        return "clean", f"{type(exc).__name__}: {message}"
    with rasterio.open(out) as ds:
        values = ds.read()
    out.unlink()
    if reference is not None and (values.shape != reference.shape or not np.array_equal(values, reference)):
        return "other", "decoded to other pixels than the original container"
    return "decoded", f"{values.shape}"
