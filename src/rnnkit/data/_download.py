"""Fetching the four MNIST IDX files, verified by SHA-256, without ever leaving a bad file behind.

Each file is streamed from the first mirror that answers into a temporary file in the target
directory while its SHA-256 is computed; only when the hash matches is it fsynced and renamed to
its final name. A file already present with the right hash is not fetched again. A wrong hash,
an HTTP error or a timeout moves on to the next mirror; when every mirror fails, DataError names
the file, the expected hash and what each mirror gave, and the directory is as it was (any file
the user already had under that name included).

The original host (yann.lecun.com) has often refused downloads, so the mirrors are the ones
PyTorch (ossci-datasets) and TensorFlow (cvdf-datasets) use. The hashes are those of the
official .gz files.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from rnnkit._atomic import commit, open_exclusive, temp_path_for
from rnnkit.data._errors import DataError

MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

MNIST_FILES: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}

_CHUNK = 1 << 16


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _url(mirror: str, name: str) -> str:
    return mirror + name if mirror.endswith("/") else f"{mirror}/{name}"


def _fetch(url: str, dest: Path, expected: str, timeout: float) -> str | None:
    """Download `url` to `dest` if its SHA-256 is `expected`; else return why not (dest untouched).

    `timeout` bounds the connection and every read (urllib's socket timeout), so a mirror that
    stops answering costs at most `timeout` seconds per blocking call before the next is tried.
    """
    tmp = temp_path_for(dest)
    try:
        h = hashlib.sha256()
        size = 0
        with urllib.request.urlopen(url, timeout=timeout) as response, open_exclusive(tmp) as out:
            while chunk := response.read(_CHUNK):
                h.update(chunk)
                out.write(chunk)
                size += len(chunk)
            digest = h.hexdigest()
            if digest != expected:
                return f"{url}: received sha256 {digest} ({size} bytes)"
            out.flush()
            os.fsync(out.fileno())
        commit(tmp, dest)
        return None
    except urllib.error.HTTPError as err:
        err.close()
        return f"{url}: HTTP {err.code} {err.reason}"
    except urllib.error.URLError as err:  # urllib wraps errors while connecting
        if isinstance(err.reason, TimeoutError):
            return f"{url}: no answer within the {timeout} s timeout"
        return f"{url}: {err.reason}"
    except TimeoutError:
        return f"{url}: no answer within the {timeout} s timeout"
    except OSError as err:  # connection reset, disk errors, ...
        return f"{url}: {err}"
    except ValueError as err:  # urllib's refusal of a malformed URL
        return f"{url}: {err}"
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def download_mnist(
    data_dir: str | os.PathLike[str],
    *,
    mirrors: Sequence[str] = MNIST_MIRRORS,
    files: Mapping[str, str] = MNIST_FILES,
    timeout: float = 30.0,
    log: Callable[[str], None] | None = None,
) -> list[Path]:
    """Fetch `files` (name -> SHA-256 hex) into `data_dir`, trying `mirrors` in order; return their paths.

    `log`, if given, receives one line per file (skipped, downloaded, or a mirror that failed).
    """
    if isinstance(mirrors, str) or not mirrors:
        raise DataError(f"mirrors must be a non-empty sequence of base URLs; got {mirrors!r}")
    if not timeout > 0:
        raise DataError(f"timeout must be a positive number of seconds; got {timeout!r}")
    for mirror in mirrors:
        if urllib.parse.urlparse(mirror).scheme not in ("http", "https", "file", "ftp"):
            raise DataError(f"--mirror must be a URL such as https://host/path/; got {mirror!r}")
    say = log or (lambda _msg: None)
    data_dir = Path(data_dir).expanduser()
    created = not data_dir.exists()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot create the data directory {data_dir}: {err.strerror or err}") from err
    try:
        return _download_all(data_dir, mirrors, files, timeout, say)
    except BaseException:
        if created:  # a directory this call made and left empty goes again
            with contextlib.suppress(OSError):
                data_dir.rmdir()
        raise


def _download_all(
    data_dir: Path, mirrors: Sequence[str], files: Mapping[str, str], timeout: float, say: Callable[[str], None]
) -> list[Path]:
    paths = []
    for name, expected in files.items():
        expected = expected.lower()
        dest = data_dir / name
        paths.append(dest)
        if dest.is_file() and _sha256_file(dest) == expected:
            say(f"{name}: already present (sha256 ok)")
            continue
        failures = []
        for mirror in mirrors:
            url = _url(mirror, name)
            why = _fetch(url, dest, expected, timeout)
            if why is None:
                say(f"{name}: downloaded from {url} (sha256 ok)")
                break
            failures.append(why)
            say(f"{name}: {why}")
        else:
            raise DataError(
                f"{dest}: no mirror gave the expected file (sha256 {expected}); "
                + "; ".join(failures)
                + "; nothing was written"
            )
    return paths
