"""TensorFlow's tensor bundle ("V2" checkpoints of TF 1.x and 2.x), read and written without TensorFlow.

A checkpoint at the prefix `model.ckpt` is

    model.ckpt.index                     a sorted table (`_sstable`) of protocol-buffer records:
                                         under the empty key a BundleHeaderProto (number of shards,
                                         byte order, format version), then under each tensor's name
                                         a BundleEntryProto (dtype, shape, shard, offset, size, CRC32C)
    model.ckpt.data-00000-of-00002 ...   the shards: raw little-endian tensor bytes at those offsets
    checkpoint                           beside them, a text CheckpointState naming the latest prefix

(tensorflow/core/protobuf/tensor_bundle.proto and core/util/tensor_bundle/tensor_bundle.cc).
Strings are stored as varint64 lengths, a masked CRC32C of those lengths, then the bytes; an entry's
`crc32c` is the masked CRC32C of all of its bytes.

The two record types (and, for object-based checkpoints, the TrackableObjectGraph) are decoded and
encoded here by a small reader and writer of the protobuf wire format for the dozen fields rnnkit
uses, not by the protobuf package: the records are tiny and stable, a protobuf dependency would
need generated code for three TensorFlow .proto files (and pins of the protobuf runtime that
TensorFlow users know too well), and the wire format is five rules. Records are encoded as
TensorFlow's C++ serializer writes them (fields in number order, proto3 defaults left out), so an
index written here is byte for byte the one TensorFlow's Saver writes for the same tensors.

Read: float16/32/64, bfloat16, (u)int8/16/32/64, bool, complex64/128 and strings, any number of
shards, every block and tensor checksum verified. Refused, each with a `CheckpointError` naming
the file, what was expected and what came: a truncated or corrupt index or shard, a checksum
mismatch, an entry past its shard's end or of the wrong size, an unknown dtype, a missing shard, a
big-endian bundle, a newer format version, partitioned (sliced) variables, and V1 checkpoints
(the single-file format TensorFlow wrote before 1.0).
"""

from __future__ import annotations

import math
import os
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import ml_dtypes
import numpy as np

from rnnkit._atomic import atomic_write
from rnnkit.convert._sstable import MAGIC, crc32c, decode_varint, encode_varint, mask_crc, read_table, write_table
from rnnkit.errors import CheckpointError, ConfigError

# TensorFlow's DataType enum (types.proto) for what a checkpoint of numbers can hold; 7 is DT_STRING.
DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"),
    2: np.dtype("<f8"),
    3: np.dtype("<i4"),
    4: np.dtype("u1"),
    5: np.dtype("<i2"),
    6: np.dtype("i1"),
    8: np.dtype("<c8"),
    9: np.dtype("<i8"),
    10: np.dtype("?"),
    14: np.dtype(ml_dtypes.bfloat16),
    17: np.dtype("<u2"),
    18: np.dtype("<c16"),
    19: np.dtype("<f2"),
    22: np.dtype("<u4"),
    23: np.dtype("<u8"),
}
DT_STRING = 7
_DTYPE_NAMES = {1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 7: "string"}
_DTYPE_NAMES |= {8: "complex64", 9: "int64", 10: "bool", 14: "bfloat16", 17: "uint16", 18: "complex128"}
_DTYPE_NAMES |= {19: "float16", 22: "uint32", 23: "uint64"}
_ENUM_OF_DTYPE = {dtype.newbyteorder("<"): enum for enum, dtype in DTYPES.items()}

BUNDLE_VERSION = 1  # kTensorBundleVersion: what this reader is, as a consumer of the format
HEADER_KEY = ""
VARIABLE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"  # an object-based checkpoint's key for a variable's value
OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
_SHARD_SUFFIX = re.compile(r"\.data-\d{5}-of-\d{5}$")


# --- the protobuf wire format, for the fields used here -----------------------------------------


def parse_message(data: bytes | memoryview, where: str) -> dict[int, list[int | bytes]]:
    """A protobuf message's fields by number, each a list of values in order: varints and fixed
    integers as ints, length-delimited fields as bytes. Groups (deprecated) are refused."""
    fields: dict[int, list[int | bytes]] = {}
    pos, end = 0, len(data)
    while pos < end:
        tag, pos = decode_varint(data, pos, end, where)
        number, wire = tag >> 3, tag & 7
        value: int | bytes
        if number == 0:
            raise CheckpointError(f"{where}: a protobuf field numbered 0")
        if wire == 0:
            value, pos = decode_varint(data, pos, end, where)
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if pos + width > end:
                raise CheckpointError(f"{where}: a fixed-width protobuf field runs past the end of its record")
            value = int.from_bytes(data[pos : pos + width], "little")
            pos += width
        elif wire == 2:
            size, pos = decode_varint(data, pos, end, where)
            if pos + size > end:
                raise CheckpointError(f"{where}: a {size}-byte protobuf field runs past the end of its record")
            value = bytes(data[pos : pos + size])
            pos += size
        else:
            raise CheckpointError(f"{where}: protobuf wire type {wire} (field {number}); expected 0, 1, 2 or 5")
        fields.setdefault(number, []).append(value)
    return fields


def _int(fields: dict[int, list[int | bytes]], number: int, where: str, *, signed: bool = True) -> int:
    """The value of a varint field, 0 if absent (the last one where it appears more than once, as
    protobuf reads a singular field)."""
    values = fields.get(number, [0])
    value = values[-1]
    if not isinstance(value, int):
        raise CheckpointError(f"{where}: protobuf field {number} is length-delimited; expected an integer")
    return value - (1 << 64) if signed and value >= 1 << 63 else value


def _repeated_ints(fields: dict[int, list[int | bytes]], number: int, where: str) -> list[int]:
    """A repeated integer field's values, packed (proto3's default) or not."""
    values: list[int] = []
    for item in fields.get(number, []):
        if isinstance(item, int):
            values.append(item)
            continue
        pos = 0
        while pos < len(item):
            value, pos = decode_varint(item, pos, len(item), where)
            values.append(value)
    return values


def _messages(fields: dict[int, list[int | bytes]], number: int, where: str) -> list[bytes]:
    values = fields.get(number, [])
    if not all(isinstance(v, bytes) for v in values):
        raise CheckpointError(f"{where}: protobuf field {number} is an integer; expected a message")
    return values  # type: ignore[return-value]


def _varint_field(number: int, value: int) -> bytes:
    return encode_varint(number << 3) + encode_varint(value & ((1 << 64) - 1)) if value else b""


def _bytes_field(number: int, value: bytes) -> bytes:
    return encode_varint(number << 3 | 2) + encode_varint(len(value)) + value


# --- records ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """A BundleEntryProto: where a tensor's bytes are and what they hold."""

    dtype: int
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int  # masked, as stored

    def encode(self) -> bytes:
        """The record as TensorFlow's serializer writes it (the shape present even when empty)."""
        dims = b"".join(_bytes_field(2, _varint_field(1, n)) for n in self.shape)
        record = _varint_field(1, self.dtype) + _bytes_field(2, dims) + _varint_field(3, self.shard)
        record += _varint_field(4, self.offset) + _varint_field(5, self.size)
        return record + (b"\x35" + struct.pack("<I", self.crc32c) if self.crc32c else b"")

    @staticmethod
    def decode(record: bytes, where: str) -> Entry:
        fields = parse_message(record, where)
        if _messages(fields, 7, where):
            raise CheckpointError(
                f"{where}: a partitioned variable (stored in slices), which rnnkit does not read; expected one "
                "whole tensor per name"
            )
        dims = []
        for shape in _messages(fields, 2, where)[-1:]:
            shape_fields = parse_message(shape, where)
            if _int(shape_fields, 3, where):
                raise CheckpointError(f"{where}: a shape of unknown rank; expected a fully defined shape")
            dims = [_int(parse_message(dim, where), 1, where) for dim in _messages(shape_fields, 2, where)]
        if any(n < 0 for n in dims):
            raise CheckpointError(f"{where}: shape {dims} has an unknown dimension; expected sizes >= 0")
        entry = Entry(
            dtype=_int(fields, 1, where),
            shape=tuple(dims),
            shard=_int(fields, 3, where),
            offset=_int(fields, 4, where),
            size=_int(fields, 5, where),
            crc32c=_int(fields, 6, where, signed=False),
        )
        if entry.shard < 0 or entry.offset < 0 or entry.size < 0:
            raise CheckpointError(
                f"{where}: shard {entry.shard}, offset {entry.offset}, size {entry.size}; expected numbers >= 0"
            )
        return entry


def _encode_header(num_shards: int) -> bytes:
    """A BundleHeaderProto: little-endian, format version 1 (min_consumer 0, left out)."""
    return _varint_field(1, num_shards) + _bytes_field(3, _varint_field(1, BUNDLE_VERSION))


def _decode_header(record: bytes, where: str) -> int:
    """The number of shards of a header record, after checking byte order and version."""
    fields = parse_message(record, where)
    num_shards = _int(fields, 1, where)
    if num_shards < 1:
        raise CheckpointError(f"{where}: its header says {num_shards} shards; expected at least 1")
    if _int(fields, 2, where) != 0:
        raise CheckpointError(f"{where}: a big-endian checkpoint, which rnnkit does not read; expected little-endian")
    for version in _messages(fields, 3, where)[-1:]:
        v = parse_message(version, where)
        min_consumer = _int(v, 2, where)
        bad = _repeated_ints(v, 3, where)  # bad_consumers
        if min_consumer > BUNDLE_VERSION or BUNDLE_VERSION in bad:
            raise CheckpointError(
                f"{where}: checkpoint format version {_int(v, 1, where)} needs a reader of version >= "
                f"{min_consumer} (excluding {bad}); rnnkit reads version {BUNDLE_VERSION}"
            )
    return num_shards


# --- reading ------------------------------------------------------------------------------------


def shard_path(prefix: Path, shard: int, num_shards: int) -> Path:
    """The data file of one shard: `<prefix>.data-00000-of-00001`."""
    return Path(f"{prefix}.data-{shard:05d}-of-{num_shards:05d}")


def read_index(prefix: Path) -> tuple[int, dict[str, Entry]]:
    """(number of shards, {tensor name: entry}) of the bundle at `prefix`."""
    index = Path(f"{prefix}.index")
    where = str(index)
    try:
        data = index.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{where}: no such file (a checkpoint prefix names <prefix>.index)") from None
    records = read_table(data, where)
    if not records or records[0][0] != HEADER_KEY.encode():
        raise CheckpointError(f"{where}: its first key is not the header's (the empty key); not a tensor bundle")
    num_shards = _decode_header(records[0][1], f"{where}: header")
    entries = {}
    for key, record in records[1:]:
        try:
            name = key.decode("utf-8")
        except UnicodeDecodeError:
            raise CheckpointError(f"{where}: a tensor name that is not UTF-8 ({key!r})") from None
        entry = Entry.decode(record, f"{where}: {name}")
        if entry.dtype != DT_STRING and entry.dtype not in DTYPES:
            raise CheckpointError(
                f"{where}: {name} has dtype enum {entry.dtype}, which rnnkit does not read; expected one of "
                + ", ".join(f"{_DTYPE_NAMES[k]} ({k})" for k in sorted(_DTYPE_NAMES))
            )
        if entry.shard >= num_shards:
            raise CheckpointError(f"{where}: {name} is in shard {entry.shard}; the header says {num_shards} shards")
        entries[name] = entry
    return num_shards, entries


def _size_crc(lengths: list[int]) -> int:
    """The CRC32C TensorFlow takes of string lengths: over each as a fixed32 (fixed64 past 4 GiB),
    not over the varints it stores (older versions stored uint32 lengths)."""
    crc = 0
    for n in lengths:
        crc = crc32c(struct.pack("<I", n) if n <= 0xFFFFFFFF else struct.pack("<Q", n), crc)
    return crc


def _strings(buffer: np.ndarray, count: int, where: str) -> tuple[list[bytes], int]:
    """(the elements, the entry's CRC32C) of a string tensor's bytes: varint64 lengths, the masked
    CRC32C of the lengths, the strings."""
    raw = buffer.tobytes()
    lengths, pos = [], 0
    for _ in range(count):
        length, pos = decode_varint(raw, pos, len(raw), where)
        lengths.append(length)
    if pos + 4 + sum(lengths) != len(raw):
        raise CheckpointError(
            f"{where}: string lengths add up to {pos + 4 + sum(lengths)} bytes; the entry says {len(raw)}"
        )
    crc = _size_crc(lengths)
    if raw[pos : pos + 4] != struct.pack("<I", mask_crc(crc)):
        raise CheckpointError(f"{where}: the string lengths fail their checksum; the shard is corrupt")
    crc = crc32c(raw[pos:], crc)
    pos += 4
    out = []
    for length in lengths:
        out.append(raw[pos : pos + length])
        pos += length
    return out, crc


def _read_tensor(file: BinaryIO, entry: Entry, shard_size: int, where: str) -> np.ndarray:
    count = math.prod(entry.shape)  # exact: a crafted shape must not wrap around to fit the size
    if entry.dtype != DT_STRING and entry.size != count * DTYPES[entry.dtype].itemsize:
        dtype = DTYPES[entry.dtype]
        raise CheckpointError(
            f"{where}: {entry.size} bytes for a {_DTYPE_NAMES[entry.dtype]} tensor of shape {list(entry.shape)}; "
            f"expected {count * dtype.itemsize}"
        )
    if entry.offset + entry.size > shard_size:
        raise CheckpointError(
            f"{where}: bytes {entry.offset}..{entry.offset + entry.size} lie past the shard's end ({shard_size} "
            "bytes); the shard is truncated or the index does not belong to it"
        )
    buffer = np.empty(entry.size, np.uint8)
    file.seek(entry.offset)
    if file.readinto(buffer) != entry.size:  # type: ignore[attr-defined]
        raise CheckpointError(
            f"{where}: the shard ended while reading bytes {entry.offset}..{entry.offset + entry.size}"
        )
    strings, crc = _strings(buffer, count, where) if entry.dtype == DT_STRING else ([], crc32c(buffer))
    actual = mask_crc(crc)
    if actual != entry.crc32c:
        raise CheckpointError(
            f"{where}: its bytes fail their checksum (CRC32C {actual:#010x}, the index says {entry.crc32c:#010x}); "
            "the shard is corrupt"
        )
    if entry.dtype == DT_STRING:
        array = np.empty(count, dtype=object)
        array[:] = strings
        return array.reshape(entry.shape)
    return buffer.view(DTYPES[entry.dtype]).reshape(entry.shape)


def read_bundle(prefix: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every tensor of the bundle at `prefix` by name, in name order, each checksum verified.
    Numbers come as NumPy arrays of their stored dtype (bfloat16 as ml_dtypes.bfloat16), strings
    as object arrays of bytes."""
    prefix = Path(prefix)
    num_shards, entries = read_index(prefix)
    tensors: dict[str, np.ndarray] = {}
    for shard in sorted({entry.shard for entry in entries.values()}):  # a shard that holds nothing is not opened
        in_shard = sorted((e.offset, name) for name, e in entries.items() if e.shard == shard)
        path = shard_path(prefix, shard, num_shards)
        try:
            file = open(path, "rb")  # noqa: SIM115  (closed below; the handle is passed on)
        except FileNotFoundError:
            raise CheckpointError(
                f"{path}: no such file; {prefix}.index says the checkpoint has {num_shards} shard(s)"
            ) from None
        with file:
            size = os.fstat(file.fileno()).st_size
            for _, name in in_shard:
                tensors[name] = _read_tensor(file, entries[name], size, f"{path}: {name}")
    return dict(sorted(tensors.items()))


# --- object-based checkpoints (tf.train.Checkpoint) ---------------------------------------------


def variable_names(object_graph: bytes, where: str) -> dict[str, str]:
    """{checkpoint key: the variable's own name} from a TrackableObjectGraph: every node's
    SerializedTensor attributes (name 1, full_name 2, checkpoint_key 3) with a full name."""
    names = {}
    for node in _messages(parse_message(object_graph, where), 1, where):
        for attribute in _messages(parse_message(node, where), 2, where):
            fields = parse_message(attribute, where)
            full_name = b"".join(_messages(fields, 2, where)[-1:]).decode("utf-8", "replace")
            key = b"".join(_messages(fields, 3, where)[-1:]).decode("utf-8", "replace")
            if key and full_name:
                names[key] = full_name
    return names


def by_variable_name(tensors: dict[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
    """An object-based checkpoint's tensors under the names their variables had (TF1's names, for
    variables a TF1-style program created), read from its object graph; a variable value without
    a recorded name keeps its object path less `/.ATTRIBUTES/VARIABLE_VALUE`; other tensors keep
    their keys. A checkpoint without an object graph comes back as it is."""
    graph = tensors.get(OBJECT_GRAPH_KEY)
    if graph is None:
        return tensors
    if graph.shape != () or not isinstance(graph.item(), bytes):
        raise CheckpointError(f"{where}: {OBJECT_GRAPH_KEY} is not a string scalar")
    full_names = variable_names(graph.item(), f"{where}: {OBJECT_GRAPH_KEY}")
    renamed: dict[str, np.ndarray] = {}
    came_from: dict[str, str] = {}
    for key, value in tensors.items():
        name = key
        if key.endswith(VARIABLE_SUFFIX):
            name = full_names.get(key) or key.removesuffix(VARIABLE_SUFFIX)
        if name in renamed:
            raise CheckpointError(f"{where}: {came_from[name]} and {key} are both variable {name}")
        renamed[name], came_from[name] = value, key
    return dict(sorted(renamed.items()))


# --- writing ------------------------------------------------------------------------------------


def _tensor_bytes(name: str, value: np.ndarray) -> tuple[int, bytes, int, list[bytes]]:
    """(dtype enum, bytes stored but checksummed otherwise, their CRC, the rest of the bytes) that
    TensorFlow stores for the tensor: only a string tensor's varint lengths take the first place."""
    if value.dtype.kind in "SO":
        items = [x if isinstance(x, bytes) else None for x in value.reshape(-1).tolist()]
        if any(x is None for x in items):
            raise ConfigError(f"{name}: a string tensor holds something other than bytes")
        sizes = [len(x) for x in items]  # type: ignore[arg-type]
        checksum = struct.pack("<I", mask_crc(_size_crc(sizes)))
        return DT_STRING, b"".join(map(encode_varint, sizes)), _size_crc(sizes), [checksum, *items]  # type: ignore[list-item]
    dtype = value.dtype.newbyteorder("<") if value.dtype.byteorder != "|" else value.dtype
    enum = _ENUM_OF_DTYPE.get(dtype)
    if enum is None:
        raise ConfigError(
            f"{name}: dtype {value.dtype} has no TensorFlow checkpoint type; expected one of "
            + ", ".join(sorted({_DTYPE_NAMES[k] for k in DTYPES}))
        )
    return enum, b"", 0, [np.ascontiguousarray(value, dtype=dtype).tobytes()]


def write_bundle(tensors: Mapping[str, np.ndarray], prefix: str | os.PathLike[str]) -> Path:
    """Save `tensors` (name -> array) as one-shard bundle at `prefix`, laid out as TensorFlow's
    Saver lays it (tensors in name order). The data file is written and renamed into place before
    the index that names it, each under a temporary name first and fsynced: a failure leaves
    what was at `prefix` before, or a new data file beside the old index."""
    prefix = Path(prefix)
    entries = []
    with atomic_write(shard_path(prefix, 0, 1)) as data:
        offset = 0
        for name in sorted(tensors):
            dtype, head, crc, chunks = _tensor_bytes(name, np.asarray(tensors[name]))
            data.write(head)
            size = len(head)
            for chunk in chunks:
                crc, size = crc32c(chunk, crc), size + len(chunk)
                data.write(chunk)
            shape = tuple(int(n) for n in np.shape(tensors[name]))
            entries.append((name.encode(), Entry(dtype, shape, 0, offset, size, mask_crc(crc)).encode()))
            offset += size
    with atomic_write(Path(f"{prefix}.index")) as index:
        index.write(write_table([(HEADER_KEY.encode(), _encode_header(1)), *entries]))
    return prefix


# --- locating a checkpoint ----------------------------------------------------------------------


def _unquote(token: str) -> str:
    """A text-format protobuf string literal's value (C escapes, octal and hex included)."""
    body = token[1:-1].encode("latin-1")  # the file's bytes, read as latin-1
    out, pos = bytearray(), 0
    simple = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("a"): 7, ord("b"): 8, ord("f"): 12, ord("v"): 11}
    while pos < len(body):
        byte = body[pos]
        if byte != 0x5C or pos + 1 == len(body):
            out.append(byte)
            pos += 1
            continue
        nxt = body[pos + 1]
        if 0x30 <= nxt <= 0x37:
            digits = re.match(rb"[0-7]{1,3}", body[pos + 1 :])[0]  # type: ignore[index]
            out.append(int(digits, 8) & 0xFF)
            pos += 1 + len(digits)
        elif nxt in b"xX" and (m := re.match(rb"[0-9a-fA-F]{1,2}", body[pos + 2 :])):
            out.append(int(m[0], 16))
            pos += 2 + len(m[0])
        else:
            out.append(simple.get(nxt, nxt))
            pos += 2
    return out.decode("utf-8", "surrogateescape")


def _quote(text: str) -> str:
    """A string as protobuf's text format prints it: C escapes, bytes above ASCII in octal."""
    out = []
    for byte in text.encode("utf-8", "surrogateescape"):
        char = chr(byte)
        if char in "\"'\\":
            out.append("\\" + char)
        elif char in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[char])
        elif byte < 0x20 or byte >= 0x7F:
            out.append(f"\\{byte:03o}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


_FIELD = re.compile(r"""(\w+)\s*:\s*("(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|[^\s"']+)""")


def read_checkpoint_state(directory: Path) -> tuple[str | None, list[str]]:
    """(model_checkpoint_path, all_model_checkpoint_paths) of `directory/checkpoint`, as written
    (relative paths are relative to the directory); (None, []) without the file."""
    path = directory / "checkpoint"
    try:
        text = path.read_bytes().decode("latin-1")  # one char per byte; _unquote decodes UTF-8
    except FileNotFoundError:
        return None, []
    latest, every = None, []
    for m in _FIELD.finditer(text):
        field, token = m[1], m[2]
        if field in ("model_checkpoint_path", "all_model_checkpoint_paths"):
            if token[0] not in "\"'":
                raise CheckpointError(f"{path}: {field} is {token}; expected a quoted path")
            value = _unquote(token)
            if field == "model_checkpoint_path":
                latest = value
            else:
                every.append(value)
    return latest, every


def latest_prefix(directory: Path) -> Path:
    """The prefix a directory's `checkpoint` file names as the latest (tf.train.latest_checkpoint)."""
    latest, _ = read_checkpoint_state(directory)
    if not latest:
        raise CheckpointError(
            f"{directory}: a directory without a TF1 checkpoint (no 'checkpoint' file naming one, as Saver writes)"
        )
    path = Path(latest)
    return path if path.is_absolute() else directory / path


def write_checkpoint_state(prefix: Path) -> None:
    """Point `prefix`'s directory's `checkpoint` file at it, as tf.compat.v1.train.Saver does
    (relative to the directory, keeping the other checkpoints it lists, without timestamps)."""
    _, every = read_checkpoint_state(prefix.parent)
    paths = [p for p in every if Path(p).name != prefix.name] + [prefix.name]
    lines = [f"model_checkpoint_path: {_quote(prefix.name)}"]
    lines += [f"all_model_checkpoint_paths: {_quote(path)}" for path in paths]
    with atomic_write(prefix.parent / "checkpoint") as state:
        state.write(("\n".join(lines) + "\n").encode("utf-8", "surrogateescape"))


def resolve_prefix(source: str | os.PathLike[str]) -> Path:
    """The checkpoint prefix meant by `source`: a prefix, its `.index` or a `.data-*` shard, or a
    directory (the latest checkpoint its `checkpoint` file names). A V1 checkpoint (one file at
    the prefix, no `.index`) is refused as such."""
    path = Path(source)
    if path.is_dir():
        path = latest_prefix(path)
    elif path.suffix == ".index":
        path = path.with_suffix("")
    elif _SHARD_SUFFIX.search(path.name):
        path = path.with_name(_SHARD_SUFFIX.sub("", path.name))
    if not Path(f"{path}.index").is_file():
        if path.is_file() and _is_table(path):
            raise CheckpointError(
                f"{path}: a V1 checkpoint (TensorFlow's single-file format from before 1.0), which rnnkit does "
                "not read; expected a V2 checkpoint (<prefix>.index and <prefix>.data-*), which Saver has "
                "written by default since TensorFlow 1.0"
            )
        raise CheckpointError(
            f"{source}: not a TF1 checkpoint prefix (expected {path}.index and {path}.data-*, as Saver.save writes)"
        )
    return path


def _is_table(path: Path) -> bool:
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        if size < 48:
            return False
        file.seek(size - 8)
        lo, hi = struct.unpack("<II", file.read(8))
    return (hi << 32) | lo == MAGIC
