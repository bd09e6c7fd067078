"""The ``.crsic`` container: a self-describing file of independently decodable tiles.

Layout (little endian)::

    magic      8 bytes  b"CRSIC\\x00\\r\\n"
    version    u16                                      1: float entropy parameters, 2: integer (bit-exact),
                                                        3: integer, latent tiles (no overlap)
    header     u32 length, UTF-8 JSON, u32 CRC32      georeferencing, bands, tiling, model
    tiles      payloads, one after the other; in format 3 each preceded by its record
               b"TILE", u32 tile index, u32 length, u32 payload CRC32, u32 latent-symbols CRC32
    index      per tile: u64 offset, u32 length, u32 payload CRC32, u32 latent-symbols CRC32
    footer     u64 index offset, u32 tile count, u32 index CRC32, b"CRSICEND"

The footer makes truncation detectable and the index gives random access: one window
of the raster is decoded by reading only the tiles that touch it. Format 3's tile records
repeat each tile's index entry in front of it, so a file cut short (a killed job) can be
resumed from its last complete tile (``ContainerWriter.resume``), and a reader checks the
record against the index.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadInput, CorruptContainer
from ..options import CONTAINER_MAGIC, FORMAT_VERSIONS, MAX_HEADER_BYTES
from .header import Header
from .tiling import padded
from .output import reason, write_failed

MAGIC = CONTAINER_MAGIC
END_MAGIC = b"CRSICEND"
FORMAT_VERSION = max(FORMAT_VERSIONS)  # the newest version this software reads and writes
_INDEX_ENTRY = struct.Struct("<QIII")
_FOOTER = struct.Struct("<QII8s")
_RECORD = struct.Struct("<4sIIII")
_RECORD_TAG = b"TILE"


def _record(version: int, index: int, payload: bytes, symbols_crc: int) -> bytes:
    """Format 3's record in front of a tile's payload (nothing in formats 1 and 2)."""
    if version < 3:
        return b""
    return _RECORD.pack(_RECORD_TAG, index, len(payload), zlib.crc32(payload), symbols_crc)


@dataclass(frozen=True)
class TileEntry:
    offset: int
    length: int
    crc: int
    symbols_crc: int


def _header_block(header: Header) -> bytes:
    """Magic, format version, header length, JSON header and its CRC32: the file's start."""
    head = header.to_json()
    return MAGIC + struct.pack("<HI", header.format_version, len(head)) + head + struct.pack("<I", zlib.crc32(head))


def framing_bytes(header: Header, n_tiles: int) -> int:
    """Bytes a container spends besides tile payloads (header, index, footer)."""
    return len(_header_block(header)) + n_tiles * _INDEX_ENTRY.size + _FOOTER.size


class ContainerWriter:
    """Writes header, then tiles (any order), then index and footer on ``close()``.

    A write the file system refuses (disk full...) is an ``OutputFailed``; the caller
    removes the partial file (``atomic_output``)."""

    def __init__(self, path: str | Path, header: Header, n_tiles: int, name: str | Path | None = None):
        self.path = name or path  # ``name``: the output's final name, for messages
        self.f = None
        try:
            self.f = open(path, "wb")
            self.f.write(_header_block(header))
        except OSError as exc:
            self.abort()
            raise write_failed(self.path, exc) from None
        self.version = header.format_version
        self.entries: list[TileEntry | None] = [None] * n_tiles

    @classmethod
    def resume(cls, path: str | Path, header: Header, n_tiles: int, name: str | Path | None = None
               ) -> "ContainerWriter":
        """Reopen the partial format-3 file a killed job left: its header must be the one this
        job writes (same input, model, rate, tiling); its complete tiles are kept, anything after
        the last of them is cut off. ``done`` says how many tiles (0, 1, ... in order) it has."""
        self = cls.__new__(cls)
        self.path, self.version = name or path, header.format_version
        self.entries = [None] * n_tiles
        block = _header_block(header)
        try:
            self.f = open(path, "r+b")
        except OSError as exc:
            raise BadInput(f"cannot resume {self.path}: {reason(exc)}") from None
        try:
            start = self.f.read(len(block))
            if len(start) < len(block) and block.startswith(start):  # killed while writing the header
                self.f.seek(0)
                self.f.truncate()
                self.f.write(block)
            elif start != block:
                raise BadInput(f"cannot resume {self.path}: its partial file was made by another command (other "
                               "input, model, quality or tiling); run without --resume to start again")
            offset = len(block)
            for index in range(n_tiles):
                record = self.f.read(_RECORD.size)
                if len(record) < _RECORD.size:
                    break
                tag, i, length, crc, symbols_crc = _RECORD.unpack(record)
                if tag != _RECORD_TAG or i != index or length > max_payload(header):
                    break
                payload = self.f.read(length)
                if len(payload) != length or zlib.crc32(payload) != crc:
                    break
                self.entries[index] = TileEntry(offset + _RECORD.size, length, crc, symbols_crc)
                offset += _RECORD.size + length
            self.f.seek(offset)
            self.f.truncate()
        except OSError as exc:
            self.abort()
            raise write_failed(self.path, exc) from None
        except BaseException:
            self.abort()
            raise
        return self

    @property
    def done(self) -> int:
        """Tiles written so far, in order from the first (what a resumed job skips)."""
        return next((i for i, e in enumerate(self.entries) if e is None), len(self.entries))

    def add_tile(self, index: int, payload: bytes, symbols_crc: int) -> None:
        try:
            record = _record(self.version, index, payload, symbols_crc)
            offset = self.f.tell() + len(record)
            self.f.write(record + payload)
            if record:
                self.f.flush()  # a killed job leaves every tile it finished (format 3 resumes)
        except OSError as exc:
            raise write_failed(self.path, exc) from None
        self.entries[index] = TileEntry(offset, len(payload), zlib.crc32(payload), symbols_crc)

    def close(self) -> int:
        missing = [i for i, e in enumerate(self.entries) if e is None]
        if missing:
            raise RuntimeError(f"tiles never written: {missing[:10]}")
        try:
            index_offset = self.f.tell()
            index = b"".join(_INDEX_ENTRY.pack(e.offset, e.length, e.crc, e.symbols_crc) for e in self.entries)
            self.f.write(index)
            self.f.write(_FOOTER.pack(index_offset, len(self.entries), zlib.crc32(index), END_MAGIC))
            self.f.flush()
            os.fsync(self.f.fileno())
            size = self.f.tell()
            self.f.close()
        except OSError as exc:
            raise write_failed(self.path, exc) from None
        return size

    def abort(self) -> None:
        if self.f is not None:
            try:
                self.f.close()  # flushing what is buffered may fail too: the file is removed anyway
            except OSError:
                pass


def max_payload(header: Header) -> int:
    """An upper bound of one tile's payload: 32 bits per band and pixel (more than raw
    uint16), a full mask and the stream framing. Nothing a reader is asked to read is larger."""
    side = padded(header.tile)
    return side * side * (4 * len(header.bands) + 1) + 4096 * len(header.bands)


class ContainerReader:
    """Validates a container's framing on open; reads single tiles on demand (from any
    thread: a tile's seek and read go together)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        if not self.path.exists():
            raise BadInput(f"no such file: {self.path}")
        try:
            self.f = open(self.path, "rb")
        except OSError as exc:
            raise BadInput(f"cannot read {self.path}: {reason(exc)}") from None
        try:
            self._read_framing()
        except OSError as exc:  # an I/O error under the file (a folder, a failing disk...)
            self.f.close()
            raise CorruptContainer(f"{self.path}: cannot be read ({reason(exc)})") from None
        except BaseException:
            self.f.close()
            raise

    def _fail(self, why: str):
        raise CorruptContainer(f"{self.path}: {why}")

    def _read_framing(self) -> None:
        f = self.f
        start = f.read(len(MAGIC) + 6)
        if len(start) < len(MAGIC) + 6 or start[: len(MAGIC)] != MAGIC:
            self._fail("not a Code-RSIC container (bad magic)")
        version, head_len = struct.unpack("<HI", start[len(MAGIC) :])
        if version > FORMAT_VERSION:
            self._fail(f"container format version {version} is newer than this software ({FORMAT_VERSION}); upgrade")
        if version not in FORMAT_VERSIONS:
            self._fail(f"container format version {version} does not exist")
        size = os.fstat(f.fileno()).st_size
        if head_len > MAX_HEADER_BYTES:
            self._fail(f"container header claims {head_len} bytes (at most {MAX_HEADER_BYTES})")
        if len(start) + head_len + 4 > size:
            self._fail("container is truncated (header incomplete)")
        head = f.read(head_len)
        crc = f.read(4)
        if len(head) < head_len or len(crc) < 4:
            self._fail("container is truncated (header incomplete)")
        if struct.unpack("<I", crc)[0] != zlib.crc32(head):
            self._fail("container header is corrupt (checksum mismatch)")
        self.header = Header.from_json(head, str(self.path))
        if self.header.format_version != version:
            self._fail(f"container format version {version} does not match its header (version "
                       f"{self.header.format_version})")
        self.data_start = f.tell()
        if size < self.data_start + _FOOTER.size:
            self._fail("container is truncated (no tile index)")
        f.seek(size - _FOOTER.size)
        index_offset, n_tiles, index_crc, end = _FOOTER.unpack(f.read(_FOOTER.size))
        if (end != END_MAGIC or index_offset < self.data_start
                or index_offset + n_tiles * _INDEX_ENTRY.size != size - _FOOTER.size):
            self._fail("container is truncated or damaged (no valid tile index at the end)")
        f.seek(index_offset)
        index = f.read(n_tiles * _INDEX_ENTRY.size)
        if zlib.crc32(index) != index_crc:
            self._fail("container tile index is corrupt (checksum mismatch)")
        self.entries = [TileEntry(*_INDEX_ENTRY.unpack_from(index, i * _INDEX_ENTRY.size)) for i in range(n_tiles)]
        if n_tiles != self.header.n_tiles:
            self._fail(f"the header describes {self.header.n_tiles} tiles, the index has {n_tiles}")
        largest = max_payload(self.header)
        self.record = _RECORD.size if version >= 3 else 0
        for i, e in enumerate(self.entries):
            if e.offset < self.data_start + self.record or e.offset + e.length > index_offset:
                self._fail(f"tile {i} lies outside the data section")
            if e.length > largest:
                self._fail(f"tile {i} claims {e.length} bytes, more than a {self.header.tile} px tile can take")

    def read_tile(self, index: int) -> bytes:
        e = self.entries[index]
        try:
            with self._lock:
                self.f.seek(e.offset - self.record)
                data = self.f.read(self.record + e.length)
        except OSError as exc:
            self._fail(f"tile {index} cannot be read ({reason(exc)})")
        record, data = data[: self.record], data[self.record :]
        if len(data) != e.length or zlib.crc32(data) != e.crc:
            self._fail(f"tile {index} is corrupt (checksum mismatch)")
        if record and record != _RECORD.pack(_RECORD_TAG, index, e.length, e.crc, e.symbols_crc):
            self._fail(f"tile {index} is corrupt (its record does not match the tile index)")
        return data

    @property
    def payload_bytes(self) -> int:
        return sum(e.length for e in self.entries)

    def close(self) -> None:
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
