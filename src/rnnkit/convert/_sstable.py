"""LevelDB's sorted-table format, as TensorFlow's `.index` files use it (tsl/lib/io/table).

A table is a run of blocks, then a 48-byte footer:

    data block 0 .. data block n-1 | metaindex block | index block | footer
    block   = entries | restart offsets (fixed32 each) | number of restarts (fixed32)
    entry   = shared key bytes (varint32) | unshared key bytes (varint32) | value length (varint32)
              | the key's unshared suffix | value
    trailer = after each block: compression type (1 byte: 0 none, 1 Snappy)
              | masked CRC32C of the block and the type byte (fixed32)
    footer  = metaindex handle | index handle (varint64 offset, varint64 size each), zero-padded
              to 40 bytes | magic 0xdb4775248b80fb57 (fixed64)

Every restart offset points at an entry that stores its key whole (0 shared bytes); the index
block has one entry per data block whose key is >= that block's last key and < the next block's
first key, and whose value is the block's handle. Keys are sorted bytewise and unique.

`read_table` checks all of this (every block's checksum included) and refuses anything else
with a `CheckpointError` naming the file; `write_table` writes what TensorFlow's TableBuilder
writes for a bundle (no compression, 16 entries between restarts, 256 KiB blocks, the shortest
separators as index keys), so an index written here is the same bytes as TensorFlow's for the
same entries. TensorFlow writes checkpoint indexes uncompressed (its BundleWriter asks for no
compression, and the index that a sharded save merges came uncompressed from TF 2.21 even for 300
near-identical entries; tests/test_convert_tf1.py checks both), so a Snappy-compressed block is
refused as such rather than decoded.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

import google_crc32c
import numpy as np

from rnnkit.errors import CheckpointError

MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48  # two block handles padded to 2 * 20 bytes, then the 8-byte magic
BLOCK_TRAILER_SIZE = 5
BLOCK_SIZE = 256 * 1024  # TensorFlow's table::Options defaults, which its BundleWriter keeps
RESTART_INTERVAL = 16
_NO_COMPRESSION, _SNAPPY = 0, 1
_MASK_DELTA = 0xA282EAD8


def mask_crc(crc: int) -> int:
    """LevelDB's masked CRC (a CRC stored beside the data it covers is rotated and offset, so
    the CRC of data that holds CRCs stays informative)."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def crc32c(data: bytes | memoryview, crc: int = 0) -> int:
    """CRC32C of `data` (extending `crc`), from google-crc32c's C implementation."""
    if isinstance(data, memoryview):  # it takes read-only buffers such as arrays, but not memoryviews
        data = np.frombuffer(data, np.uint8)  # a view, no copy
    return google_crc32c.extend(crc, data)


def encode_varint(value: int) -> bytes:
    """An unsigned integer as a little-endian base-128 varint."""
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(data: bytes | memoryview, pos: int, limit: int, where: str, bits: int = 64) -> tuple[int, int]:
    """(value, next position) of the varint at `pos`, which must end before `limit` and fit `bits`."""
    result = shift = 0
    while True:
        if pos >= limit:
            raise CheckpointError(f"{where}: a varint runs past the end of its record")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
        if shift >= bits:
            raise CheckpointError(f"{where}: a varint longer than {bits} bits")
    if result >> bits:
        raise CheckpointError(f"{where}: a varint longer than {bits} bits")
    return result, pos


# --- reading ------------------------------------------------------------------------------------


def _block(data: bytes, offset: int, size: int, where: str) -> memoryview:
    """The contents of the block at (`offset`, `size`), its trailer checked."""
    if offset + size + BLOCK_TRAILER_SIZE > len(data) - FOOTER_SIZE:
        raise CheckpointError(
            f"{where}: a block at bytes {offset}..{offset + size} (plus its 5-byte trailer) runs past the "
            f"table's {len(data) - FOOTER_SIZE} bytes of blocks; the file is truncated or corrupt"
        )
    view = memoryview(data)
    kind = data[offset + size]
    (stored,) = struct.unpack_from("<I", data, offset + size + 1)
    actual = mask_crc(crc32c(view[offset : offset + size + 1]))
    if stored != actual:
        raise CheckpointError(
            f"{where}: the block at byte {offset} fails its checksum (CRC32C {actual:#010x}, trailer says "
            f"{stored:#010x}); the file is corrupt"
        )
    if kind == _SNAPPY:
        raise CheckpointError(
            f"{where}: the block at byte {offset} is Snappy-compressed, which rnnkit does not read (TensorFlow "
            "writes checkpoint indexes uncompressed; this file was written by something else)"
        )
    if kind != _NO_COMPRESSION:
        raise CheckpointError(f"{where}: the block at byte {offset} has compression type {kind}; expected 0 (none)")
    return view[offset : offset + size]


def _block_entries(block: memoryview, where: str) -> list[tuple[bytes, bytes]]:
    """A block's (key, value) pairs, its restart points and key order checked."""
    if len(block) < 4:
        raise CheckpointError(f"{where}: a block of {len(block)} bytes, too short for its restart count")
    (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 - 4 * num_restarts
    if num_restarts < 1 or end < 0:
        raise CheckpointError(f"{where}: a block of {len(block)} bytes claims {num_restarts} restart points")
    restarts = struct.unpack_from(f"<{num_restarts}I", block, end)
    entries: list[tuple[bytes, bytes]] = []
    whole_keys: set[int] = set()  # offsets of entries that store their key whole
    key = b""
    pos = 0
    while pos < end:
        start = pos
        shared, pos = decode_varint(block, pos, end, where, 32)
        unshared, pos = decode_varint(block, pos, end, where, 32)
        value_size, pos = decode_varint(block, pos, end, where, 32)
        if shared > len(key) or (not entries and shared):
            raise CheckpointError(f"{where}: an entry shares {shared} bytes of a {len(key)}-byte previous key")
        if pos + unshared + value_size > end:
            raise CheckpointError(f"{where}: an entry at byte {start} of its block runs past the block's entries")
        new_key = key[:shared] + bytes(block[pos : pos + unshared])
        pos += unshared
        if entries and new_key <= key:
            raise CheckpointError(f"{where}: keys out of order ({new_key!r} after {key!r})")
        if shared == 0:
            whole_keys.add(start)
        key = new_key
        entries.append((key, bytes(block[pos : pos + value_size])))
        pos += value_size
    allowed = whole_keys or {0}  # an empty block (TensorFlow's metaindex) has the one restart point 0
    if restarts[0] != 0 or any(r not in allowed for r in restarts):
        raise CheckpointError(f"{where}: a restart point {list(restarts)} is not the start of a whole-key entry")
    return entries


def _handle(value: bytes | memoryview, pos: int, where: str) -> tuple[int, int, int]:
    """(offset, size, next position) of the block handle at `pos`."""
    offset, pos = decode_varint(value, pos, len(value), where)
    size, pos = decode_varint(value, pos, len(value), where)
    return offset, size, pos


def read_table(data: bytes, where: str) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of the table `data` in key order; `where` names the file in errors."""
    if len(data) < FOOTER_SIZE:
        raise CheckpointError(
            f"{where}: {len(data)} bytes, shorter than a table's {FOOTER_SIZE}-byte footer; the file is truncated"
        )
    footer = data[-FOOTER_SIZE:]
    lo, hi = struct.unpack_from("<II", footer, FOOTER_SIZE - 8)
    if (hi << 32) | lo != MAGIC:
        raise CheckpointError(
            f"{where}: no table magic number at its end (expected {MAGIC:#x}, found {(hi << 32) | lo:#x}); "
            "not a TensorFlow checkpoint index, or truncated"
        )
    _, _, pos = _handle(footer, 0, where)  # the metaindex: TensorFlow stores nothing there
    index_offset, index_size, _ = _handle(footer, pos, where)
    entries: list[tuple[bytes, bytes]] = []
    previous_bound = b""
    for k, (bound, value) in enumerate(_block_entries(_block(data, index_offset, index_size, where), where)):
        offset, size, end = _handle(value, 0, where)
        if end != len(value):
            raise CheckpointError(f"{where}: index entry {k} holds {len(value) - end} bytes after its block handle")
        block = _block_entries(_block(data, offset, size, where), where)
        if not block or (entries and block[0][0] <= previous_bound) or block[-1][0] > bound:
            raise CheckpointError(f"{where}: data block {k} does not hold the keys its index entry bounds")
        entries += block
        previous_bound = bound
    return entries


# --- writing ------------------------------------------------------------------------------------


class _BlockBuilder:
    def __init__(self) -> None:
        self.buffer = bytearray()
        self.restarts = [0]
        self.counter = 0
        self.last_key = b""

    def add(self, key: bytes, value: bytes) -> None:
        shared = 0
        if self.counter < RESTART_INTERVAL:
            limit = min(len(key), len(self.last_key))
            while shared < limit and key[shared] == self.last_key[shared]:
                shared += 1
        else:
            self.restarts.append(len(self.buffer))
            self.counter = 0
        self.buffer += encode_varint(shared) + encode_varint(len(key) - shared) + encode_varint(len(value))
        self.buffer += key[shared:] + value
        self.last_key = key
        self.counter += 1

    def size_estimate(self) -> int:
        return len(self.buffer) + 4 * len(self.restarts) + 4

    def finish(self) -> bytes:
        return bytes(self.buffer) + struct.pack(f"<{len(self.restarts) + 1}I", *self.restarts, len(self.restarts))


def _shortest_separator(start: bytes, limit: bytes) -> bytes:
    """The shortest key >= start and < limit, as LevelDB's bytewise comparator finds it."""
    common = 0
    while common < min(len(start), len(limit)) and start[common] == limit[common]:
        common += 1
    if common < min(len(start), len(limit)) and start[common] < 0xFF and start[common] + 1 < limit[common]:
        return start[:common] + bytes([start[common] + 1])
    return start


def _short_successor(key: bytes) -> bytes:
    """A short key >= `key` (its first byte below 0xff, incremented)."""
    for i, byte in enumerate(key):
        if byte != 0xFF:
            return key[:i] + bytes([byte + 1])
    return key


def write_table(entries: Iterable[tuple[bytes, bytes]]) -> bytes:
    """A table of `entries` (keys strictly increasing), laid out as TensorFlow's TableBuilder lays it."""
    out = bytearray()

    def write_block(contents: bytes) -> bytes:
        handle = encode_varint(len(out)) + encode_varint(len(contents))
        trailer = bytes([_NO_COMPRESSION])
        out.extend(contents + trailer + struct.pack("<I", mask_crc(crc32c(contents + trailer))))
        return handle

    data_block, index_block = _BlockBuilder(), _BlockBuilder()
    last_key: bytes | None = None
    pending: bytes | None = None  # the handle of a written data block whose index entry waits for the next key
    for key, value in entries:
        if last_key is not None and key <= last_key:
            raise ValueError(f"table keys must increase: {key!r} after {last_key!r}")
        if pending is not None:
            index_block.add(_shortest_separator(last_key or b"", key), pending)
            pending = None
        data_block.add(key, value)
        last_key = key
        if data_block.size_estimate() >= BLOCK_SIZE:
            pending, data_block = write_block(data_block.finish()), _BlockBuilder()
    if data_block.buffer:
        pending = write_block(data_block.finish())
    metaindex = write_block(_BlockBuilder().finish())
    if pending is not None:
        index_block.add(_short_successor(last_key or b""), pending)
    index = write_block(index_block.finish())
    footer = (metaindex + index).ljust(FOOTER_SIZE - 8, b"\0") + struct.pack("<II", MAGIC & 0xFFFFFFFF, MAGIC >> 32)
    return bytes(out + footer)
