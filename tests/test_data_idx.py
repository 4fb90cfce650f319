"""read_idx / write_idx against IDX bytes built by hand with `struct`, and every corruption we refuse."""

from __future__ import annotations

import gzip
import os
import re
import struct

import numpy as np
import pytest

from rnnkit.data import DataError, read_idx, write_idx

# type code, struct format letter, NumPy dtype: the IDX table, written out independently of rnnkit.
IDX_TYPES = [
    (0x08, "B", np.uint8),
    (0x09, "b", np.int8),
    (0x0B, "h", np.int16),
    (0x0C, "i", np.int32),
    (0x0D, "f", np.float32),
    (0x0E, "d", np.float64),
]


def idx_bytes(code: int, fmt: str, shape: tuple[int, ...], values: list) -> bytes:
    """An IDX file built from the format's definition: magic, big-endian uint32 sizes, big-endian data."""
    return (
        bytes([0, 0, code, len(shape)])
        + struct.pack(f">{len(shape)}I", *shape)
        + struct.pack(f">{len(values)}{fmt}", *values)
    )


def sample_values(fmt: str, n: int) -> list:
    """Values that exercise sign, every byte of multi-byte types, and non-integral floats."""
    rng = np.random.default_rng(0)
    if fmt == "B":
        return [int(v) for v in rng.integers(0, 256, n)]
    if fmt == "b":
        return [int(v) for v in rng.integers(-128, 128, n)]
    if fmt == "h":
        return [int(v) for v in rng.integers(-(2**15), 2**15, n)]
    if fmt == "i":
        return [int(v) for v in rng.integers(-(2**31), 2**31, n)]
    # floats: exactly representable in float32, so struct's float32 packing loses nothing
    return [float(np.float32(v)) for v in rng.normal(size=n) * 1000]


def images_file(n: int = 3, h: int = 4, w: int = 5) -> bytes:
    """A valid uint8 idx3 file of n images of h x w (60 data bytes by default)."""
    values = [(i * 7) % 256 for i in range(n * h * w)]
    return idx_bytes(0x08, "B", (n, h, w), values)


@pytest.mark.parametrize(("code", "fmt", "dtype"), IDX_TYPES, ids=[t[2].__name__ for t in IDX_TYPES])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_matches_hand_built_file(tmp_path, code, fmt, dtype, suffix):
    shape = (3, 2, 4)
    values = sample_values(fmt, 24)
    raw = idx_bytes(code, fmt, shape, values)
    path = tmp_path / f"x.idx{suffix}"
    path.write_bytes(gzip.compress(raw) if suffix else raw)

    arr = read_idx(path)

    assert arr.dtype == np.dtype(dtype)
    assert arr.dtype.isnative
    assert arr.shape == shape
    assert arr.ravel().tolist() == values


@pytest.mark.parametrize(("code", "fmt", "dtype"), IDX_TYPES, ids=[t[2].__name__ for t in IDX_TYPES])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_write_produces_hand_built_bytes_and_round_trips(tmp_path, code, fmt, dtype, suffix):
    shape = (2, 3, 4)
    values = sample_values(fmt, 24)
    arr = np.array(values, dtype=dtype).reshape(shape)
    path = tmp_path / f"x.idx{suffix}"

    write_idx(path, arr)

    written = path.read_bytes()
    assert (gzip.decompress(written) if suffix else written) == idx_bytes(code, fmt, shape, values)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back, arr)


def test_write_accepts_big_endian_and_non_contiguous_input(tmp_path):
    arr = np.arange(24, dtype=">i4").reshape(4, 6)[:, ::2]
    write_idx(tmp_path / "x", arr)
    assert (tmp_path / "x").read_bytes() == idx_bytes(0x0C, "i", (4, 3), arr.ravel().tolist())


def test_rank1_labels_round_trip(tmp_path):
    labels = np.array([5, 0, 4, 1, 9], dtype=np.uint8)
    write_idx(tmp_path / "labels.gz", labels)
    assert gzip.decompress((tmp_path / "labels.gz").read_bytes()) == bytes([0, 0, 8, 1, 0, 0, 0, 5, 5, 0, 4, 1, 9])
    np.testing.assert_array_equal(read_idx(tmp_path / "labels.gz"), labels)


def test_gz_output_is_reproducible(tmp_path):
    """No timestamp or name in the gzip header: the same array gives the same bytes, so hashes are stable."""
    arr = np.arange(100, dtype=np.uint8)
    write_idx(tmp_path / "a.gz", arr)
    write_idx(tmp_path / "b.gz", arr)
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()


def test_returned_array_is_writable(tmp_path):
    (tmp_path / "x").write_bytes(idx_bytes(0x08, "B", (3,), [1, 2, 3]))
    arr = read_idx(tmp_path / "x")
    arr[0] = 7
    assert arr.tolist() == [7, 2, 3]


# --- corruption ------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_truncated_mid_image(tmp_path, suffix):
    raw = images_file()  # 3 images of 4x5 -> 60 data bytes after a 16-byte header
    path = tmp_path / f"train-images-idx3-ubyte{suffix}"
    cut = raw[: 16 + 30]
    path.write_bytes(gzip.compress(cut) if suffix else cut)
    expected = (
        f"{path}: truncated: header declares 3 images of 4x5 uint8 (60 bytes) "
        "but the file holds 30 bytes of data after the 16-byte header"
    )
    with pytest.raises(DataError, match=re.escape(expected)):
        read_idx(path)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_trailing_bytes(tmp_path, suffix):
    raw = images_file() + b"\x00\x01\x02"
    path = tmp_path / f"train-images-idx3-ubyte{suffix}"
    path.write_bytes(gzip.compress(raw) if suffix else raw)
    expected = (
        f"{path}: 3 unexpected trailing bytes: header declares 3 images of 4x5 uint8 (60 bytes) "
        "but the file holds 63 bytes of data after the 16-byte header"
    )
    with pytest.raises(DataError, match=re.escape(expected)):
        read_idx(path)


def test_two_files_concatenated_are_refused(tmp_path):
    labels = idx_bytes(0x08, "B", (4,), [1, 2, 3, 4])
    path = tmp_path / "labels"
    path.write_bytes(labels + labels)
    with pytest.raises(DataError, match=re.escape(f"{path}: 12 unexpected trailing bytes")):
        read_idx(path)


def test_wrong_magic(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes(b"\x01\x00\x08\x01" + struct.pack(">I", 2) + b"\x01\x02")
    with pytest.raises(
        DataError,
        match=re.escape(f"{path}: not an IDX file: the magic number must start with bytes 0x00 0x00, found 0x01 0x00"),
    ):
        read_idx(path)


def test_gzip_file_without_gz_name_gets_a_hint(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes(gzip.compress(idx_bytes(0x08, "B", (2,), [1, 2])))
    with pytest.raises(
        DataError, match=re.escape("found 0x1F 0x8B (the file looks gzip-compressed: give it a name ending in .gz)")
    ):
        read_idx(path)


def test_gz_name_on_plain_file(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(idx_bytes(0x08, "B", (2,), [1, 2]))
    with pytest.raises(DataError, match=re.escape(f"{path}: not a valid gzip file although its name ends in .gz")):
        read_idx(path)


def test_truncated_gzip_stream(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(images_file())[:-12])  # cut the trailer and some data
    with pytest.raises(DataError, match=re.escape(f"{path}: truncated gzip stream")):
        read_idx(path)


@pytest.mark.parametrize("code", [0x00, 0x07, 0x0A, 0x0F, 0xFF])
def test_bad_dtype_code(tmp_path, code):
    path = tmp_path / "x.idx"
    path.write_bytes(bytes([0, 0, code, 1]) + struct.pack(">I", 1) + b"\x00")
    expected = (
        f"{path}: unknown IDX data type code 0x{code:02X} (third byte); expected one of 0x08 (uint8), 0x09 (int8), "
        "0x0B (int16), 0x0C (int32), 0x0D (float32), 0x0E (float64)"
    )
    with pytest.raises(DataError, match=re.escape(expected)):
        read_idx(path)


def test_zero_dimensions(tmp_path):
    path = tmp_path / "x.idx"
    path.write_bytes(b"\x00\x00\x08\x00")
    with pytest.raises(
        DataError, match=re.escape(f"{path}: the IDX header declares 0 dimensions; expected at least 1")
    ):
        read_idx(path)


def test_truncated_header(tmp_path):
    path = tmp_path / "x.idx"
    path.write_bytes(b"\x00\x00\x08\x03" + struct.pack(">I", 60000) + b"\x00\x00")
    expected = f"{path}: truncated: the header declares 3 dimensions (12 bytes of sizes after the magic number) but the file holds only 6 bytes after it"
    with pytest.raises(DataError, match=re.escape(expected)):
        read_idx(path)


@pytest.mark.parametrize("content", [b"", b"\x00\x00"])
def test_shorter_than_magic(tmp_path, content):
    path = tmp_path / "x.idx"
    path.write_bytes(content)
    with pytest.raises(
        DataError,
        match=re.escape(
            f"{path}: truncated: an IDX file starts with a 4-byte magic number but the file holds {len(content)} bytes"
        ),
    ):
        read_idx(path)


def test_huge_declared_size_is_refused_without_allocating(tmp_path):
    """A corrupt header declaring ~2**96 bytes must be reported, not attempted."""
    path = tmp_path / "x.idx"
    path.write_bytes(b"\x00\x00\x0e\x03" + struct.pack(">3I", 2**32 - 1, 2**32 - 1, 2**32 - 1) + b"\x00" * 8)
    with pytest.raises(
        DataError,
        match=re.escape(f"{path}: truncated: header declares 4294967295 images of 4294967295x4294967295 float64"),
    ):
        read_idx(path)


def test_missing_file(tmp_path):
    path = tmp_path / "nope-idx1-ubyte.gz"
    with pytest.raises(DataError, match=re.escape(f"{path}: no such file")):
        read_idx(path)


# --- writing -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float16, np.int64, np.uint16, np.bool_, np.complex64])
def test_write_refuses_dtypes_idx_cannot_hold(tmp_path, dtype):
    path = tmp_path / "x.idx"
    with pytest.raises(
        DataError,
        match=re.escape(
            f"write_idx({path}): array dtype {np.dtype(dtype)} cannot be stored in IDX; expected one of 0x08 (uint8)"
        ),
    ):
        write_idx(path, np.zeros(3, dtype=dtype))
    assert not path.exists()


def test_write_refuses_scalar(tmp_path):
    with pytest.raises(DataError, match=re.escape("IDX holds arrays of 1 to 255 dimensions; got 0")):
        write_idx(tmp_path / "x", np.uint8(3))


def test_write_into_missing_directory(tmp_path):
    path = tmp_path / "missing" / "x.idx"
    with pytest.raises(DataError, match=re.escape(f"write_idx({path}): the directory {path.parent} does not exist")):
        write_idx(path, np.zeros(3, np.uint8))


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_failed_write_leaves_existing_file_and_no_temp(tmp_path, monkeypatch, suffix):
    path = tmp_path / f"saved.idx{suffix}"
    write_idx(path, np.array([1, 2, 3], np.uint8))
    before = path.read_bytes()

    def failing_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space left"):
        write_idx(path, np.arange(50, dtype=np.uint8))

    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
