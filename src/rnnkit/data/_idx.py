"""Our own reader and writer for the IDX format, the format MNIST (and Fashion-MNIST, KMNIST, ...) ship in.

Layout of an IDX file (all integers big-endian):

    bytes 0-1   zero
    byte  2     data type: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64
    byte  3     number of dimensions, d
    4 * d       the size of each dimension, uint32
    rest        the data, C order, big-endian for multi-byte types

The reader is strict on purpose: a download cut short or two files concatenated by mistake must
be reported, not turned into a silently short (or padded) training set. So the magic, the type
code, the header length and the exact data length are all checked, and both a truncated file and
extra bytes after the declared data are refused. Files ending in `.gz` are read through gzip,
which is how the MNIST files are distributed.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from rnnkit._atomic import atomic_write
from rnnkit.data._errors import DataError

# type code -> big-endian dtype as stored in the file.
_CODE_TO_DTYPE: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
# (kind, itemsize) -> type code, for the writer; byte order does not matter, the writer converts.
_KIND_SIZE_TO_CODE: dict[tuple[str, int], int] = {(dt.kind, dt.itemsize): code for code, dt in _CODE_TO_DTYPE.items()}
_VALID_CODES = ", ".join(f"0x{code:02X} ({dt.newbyteorder('=').name})" for code, dt in _CODE_TO_DTYPE.items())

_CHUNK = 1 << 22  # read in 4 MiB pieces, so a corrupt header declaring terabytes never allocates them


def _describe(dims: tuple[int, ...], dtype: np.dtype) -> str:
    """Human wording of what a header declares, e.g. '60000 images of 28x28 uint8'."""
    name = dtype.newbyteorder("=").name
    if len(dims) == 1:
        return f"{dims[0]} {name} values"
    if len(dims) == 3:
        return f"{dims[0]} images of {dims[1]}x{dims[2]} {name}"
    return f"{dims[0]} entries of {'x'.join(map(str, dims[1:]))} {name}"


def _read_up_to(f: BinaryIO, n: int) -> bytearray:
    """Read at most `n` bytes, fewer only at end of file; never allocates more than was actually read."""
    buf = bytearray()
    while len(buf) < n:
        chunk = f.read(min(_CHUNK, n - len(buf)))
        if not chunk:
            break
        buf += chunk
    return buf


def _count_rest(f: BinaryIO) -> int:
    total = 0
    while chunk := f.read(_CHUNK):
        total += len(chunk)
    return total


def _open(path: Path) -> BinaryIO:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (gzip-compressed when the name ends in `.gz`) into a native-byte-order array.

    Raises DataError, naming the file, for anything that is not exactly one well-formed IDX array.
    """
    path = Path(path)
    try:
        with _open(path) as f:
            return _parse(f, path)
    except FileNotFoundError as err:
        raise DataError(f"{path}: no such file") from err
    except EOFError as err:  # gzip stream cut short
        raise DataError(f"{path}: truncated gzip stream: the compressed file ends early ({err})") from err
    except (gzip.BadGzipFile, zlib.error) as err:
        raise DataError(f"{path}: not a valid gzip file although its name ends in .gz ({err})") from err
    except OSError as err:
        raise DataError(f"{path}: cannot read the file: {err.strerror or err}") from err


def _parse(f: BinaryIO, path: Path) -> np.ndarray:
    magic = _read_up_to(f, 4)
    if len(magic) < 4:
        raise DataError(
            f"{path}: truncated: an IDX file starts with a 4-byte magic number but the file holds {len(magic)} bytes"
        )
    if magic[0] != 0 or magic[1] != 0:
        hint = ""
        if magic[:2] == b"\x1f\x8b":
            hint = " (the file looks gzip-compressed: give it a name ending in .gz)"
        raise DataError(
            f"{path}: not an IDX file: the magic number must start with bytes 0x00 0x00, "
            f"found 0x{magic[0]:02X} 0x{magic[1]:02X}{hint}"
        )
    code, ndim = magic[2], magic[3]
    if code not in _CODE_TO_DTYPE:
        raise DataError(f"{path}: unknown IDX data type code 0x{code:02X} (third byte); expected one of {_VALID_CODES}")
    if ndim == 0:
        raise DataError(f"{path}: the IDX header declares 0 dimensions; expected at least 1")
    raw_dims = _read_up_to(f, 4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise DataError(
            f"{path}: truncated: the header declares {ndim} dimensions ({4 * ndim} bytes of sizes after the magic "
            f"number) but the file holds only {len(raw_dims)} bytes after it"
        )
    dims = tuple(int(d) for d in np.frombuffer(bytes(raw_dims), dtype=">u4"))
    dtype = _CODE_TO_DTYPE[code]
    expected = dtype.itemsize
    for d in dims:
        expected *= d
    header = 4 + 4 * ndim
    data = _read_up_to(f, expected)
    if len(data) < expected:
        raise DataError(
            f"{path}: truncated: header declares {_describe(dims, dtype)} ({expected} bytes) "
            f"but the file holds {len(data)} bytes of data after the {header}-byte header"
        )
    extra = _count_rest(f)
    if extra:
        raise DataError(
            f"{path}: {extra} unexpected trailing bytes: header declares {_describe(dims, dtype)} ({expected} bytes) "
            f"but the file holds {expected + extra} bytes of data after the {header}-byte header"
        )
    # A bytearray-backed array is writable; astype to native order copies only for multi-byte types.
    arr = np.frombuffer(data, dtype=dtype).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=False)


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write `array` as one IDX file, gzip-compressed when the name ends in `.gz`; atomic.

    The array's dtype must be one IDX can hold (uint8, int8, int16, int32, float32, float64):
    nothing is cast, so what `read_idx` returns is exactly what was written. Compressed output
    carries no timestamp or file name, so the same array always gives the same bytes (and hash).
    """
    path = Path(path)
    array = np.asarray(array)
    code = _KIND_SIZE_TO_CODE.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        raise DataError(
            f"write_idx({path}): array dtype {array.dtype} cannot be stored in IDX; expected one of {_VALID_CODES}"
        )
    if not 1 <= array.ndim <= 255:
        raise DataError(f"write_idx({path}): IDX holds arrays of 1 to 255 dimensions; got {array.ndim}")
    if any(d >= 2**32 for d in array.shape):
        raise DataError(f"write_idx({path}): each IDX dimension must be below 2**32; got shape {array.shape}")
    if not path.parent.is_dir():
        raise DataError(f"write_idx({path}): the directory {path.parent} does not exist")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    data = np.ascontiguousarray(array, dtype=_CODE_TO_DTYPE[code]).tobytes()
    with atomic_write(path) as f:
        if path.name.endswith(".gz"):
            with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0) as gz:
                gz.write(header)
                gz.write(data)
        else:
            f.write(header)
            f.write(data)
