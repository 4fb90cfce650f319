"""download_mnist against a local HTTP server on 127.0.0.1: never the internet."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import re
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from rnnkit.data import MNIST_FILES, MNIST_MIRRORS, DataError, download_mnist, load_idx_dir, read_idx, write_idx

NAMES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # keep test output clean
        pass


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """urllib honours *_proxy variables; a proxy must not see (or break) requests to our local server."""
    for var in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.upper(), raising=False)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A local server with mirror folders: good/ (the fixtures), empty/ (404 for all), bad/ (corrupted copies).

    Module-scoped: the served files are never changed, so one server serves every test.
    Returns (base URL, {name: fixture bytes}, {name: sha256}, {name: array}).
    """
    root = tmp_path_factory.mktemp("www")  # outside tmp_path, which the tests list as the data directory
    for sub in ("good", "empty", "bad"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, 6, dtype=np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (2, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, 2, dtype=np.uint8),
    }
    blobs, hashes = {}, {}
    for name, arr in arrays.items():
        write_idx(root / "good" / name, arr)
        blobs[name] = (root / "good" / name).read_bytes()
        hashes[name] = hashlib.sha256(blobs[name]).hexdigest()
        corrupted = bytearray(blobs[name])
        corrupted[len(corrupted) // 2] ^= 0xFF
        (root / "bad" / name).write_bytes(bytes(corrupted))

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", blobs, hashes, arrays
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_success(tmp_path, site):
    base, blobs, hashes, arrays = site
    data_dir = tmp_path / "data" / "mnist"  # created on the way
    lines = []
    paths = download_mnist(data_dir, mirrors=[f"{base}/good/"], files=hashes, timeout=5, log=lines.append)
    assert paths == [data_dir / name for name in NAMES]
    assert listing(data_dir) == sorted(NAMES)  # no temporary files left
    for name in NAMES:
        assert (data_dir / name).read_bytes() == blobs[name]
        np.testing.assert_array_equal(read_idx(data_dir / name), arrays[name])
    assert lines == [f"{name}: downloaded from {base}/good/{name} (sha256 ok)" for name in NAMES]
    splits = load_idx_dir(data_dir)
    np.testing.assert_array_equal(splits.test_images, arrays["t10k-images-idx3-ubyte.gz"])


def test_mirror_without_trailing_slash(tmp_path, site):
    base, blobs, hashes, _ = site
    download_mnist(tmp_path, mirrors=[f"{base}/good"], files=hashes, timeout=5)
    assert all((tmp_path / name).read_bytes() == blobs[name] for name in NAMES)


def test_present_files_with_right_hash_are_skipped(tmp_path, site):
    base, blobs, hashes, _ = site
    for name in NAMES:
        (tmp_path / name).write_bytes(blobs[name])
    before = {name: (tmp_path / name).stat().st_ino for name in NAMES}
    lines = []
    # Every mirror would fail: success proves nothing was fetched.
    paths = download_mnist(tmp_path, mirrors=[f"{base}/empty/"], files=hashes, timeout=5, log=lines.append)
    assert paths == [tmp_path / name for name in NAMES]
    assert {name: (tmp_path / name).stat().st_ino for name in NAMES} == before
    assert lines == [f"{name}: already present (sha256 ok)" for name in NAMES]


def test_first_mirror_404_then_second(tmp_path, site):
    base, blobs, hashes, _ = site
    lines = []
    download_mnist(tmp_path, mirrors=[f"{base}/empty/", f"{base}/good/"], files=hashes, timeout=5, log=lines.append)
    assert all((tmp_path / name).read_bytes() == blobs[name] for name in NAMES)
    name = NAMES[0]
    assert lines[:2] == [
        f"{name}: {base}/empty/{name}: HTTP 404 File not found",
        f"{name}: downloaded from {base}/good/{name} (sha256 ok)",
    ]
    assert listing(tmp_path) == sorted(NAMES)


def test_wrong_hash_on_first_mirror_then_second(tmp_path, site):
    base, blobs, hashes, _ = site
    download_mnist(tmp_path, mirrors=[f"{base}/bad/", f"{base}/good/"], files=hashes, timeout=5)
    assert all((tmp_path / name).read_bytes() == blobs[name] for name in NAMES)
    assert listing(tmp_path) == sorted(NAMES)


def test_corrupted_everywhere_raises_and_leaves_nothing(tmp_path, site):
    base, blobs, hashes, _ = site
    name = NAMES[1]
    bad = bytearray(blobs[name])
    bad[len(bad) // 2] ^= 0xFF
    received = hashlib.sha256(bytes(bad)).hexdigest()
    with pytest.raises(DataError) as info:
        download_mnist(tmp_path, mirrors=[f"{base}/bad/", f"{base}/empty/"], files={name: hashes[name]}, timeout=5)
    assert str(info.value) == (
        f"{tmp_path / name}: no mirror gave the expected file (sha256 {hashes[name]}); "
        f"{base}/bad/{name}: received sha256 {received} ({len(bad)} bytes); "
        f"{base}/empty/{name}: HTTP 404 File not found; nothing was written"
    )
    assert listing(tmp_path) == []


def test_existing_file_is_not_replaced_by_bad_download(tmp_path, site):
    base, _, hashes, _ = site
    name = NAMES[0]
    (tmp_path / name).write_bytes(b"the user's own copy")
    with pytest.raises(
        DataError, match=re.escape(f"{tmp_path / name}: no mirror gave the expected file (sha256 {hashes[name]})")
    ):
        download_mnist(tmp_path, mirrors=[f"{base}/bad/"], files={name: hashes[name]}, timeout=5)
    assert (tmp_path / name).read_bytes() == b"the user's own copy"
    assert listing(tmp_path) == [name]


def test_stale_file_is_replaced_by_good_download(tmp_path, site):
    base, blobs, hashes, _ = site
    name = NAMES[3]
    (tmp_path / name).write_bytes(gzip.compress(b"an older, different file"))
    download_mnist(tmp_path, mirrors=[f"{base}/good/"], files={name: hashes[name]}, timeout=5)
    assert (tmp_path / name).read_bytes() == blobs[name]
    assert listing(tmp_path) == [name]


def test_hanging_mirror_times_out_then_next(tmp_path, site):
    base, blobs, hashes, _ = site
    name = NAMES[3]
    with socket.socket() as silent:  # accepts connections (kernel backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        hang = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        lines = []
        download_mnist(
            tmp_path, mirrors=[hang, f"{base}/good/"], files={name: hashes[name]}, timeout=0.3, log=lines.append
        )
    assert (tmp_path / name).read_bytes() == blobs[name]
    assert lines[0] == f"{name}: {hang}{name}: no answer within the 0.3 s timeout"


def test_refused_connection_then_next(tmp_path, site):
    base, blobs, hashes, _ = site
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    name = NAMES[2]
    download_mnist(
        tmp_path, mirrors=[f"http://127.0.0.1:{closed_port}/", f"{base}/good/"], files={name: hashes[name]}, timeout=5
    )
    assert (tmp_path / name).read_bytes() == blobs[name]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mirrors": []}, "mirrors must be a non-empty sequence"),
        ({"mirrors": "http://x/"}, "mirrors must be a non-empty sequence"),
        ({"timeout": 0}, "timeout must be a positive number of seconds; got 0"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(DataError, match=re.escape(message)):
        download_mnist(tmp_path, **kwargs)


def test_official_file_table():
    """The four canonical names, with the SHA-256 of the official .gz files, and the two mirrors."""
    assert list(MNIST_FILES) == NAMES
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in MNIST_FILES.values())
    assert (
        MNIST_FILES["t10k-labels-idx1-ubyte.gz"] == "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"
    )
    assert MNIST_MIRRORS == (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    )
