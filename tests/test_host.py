"""rnnkit/_host.py: the allocator setting and the compilation cache rnnkit's CLI turns on, each
in a fresh subprocess (they change process-wide state), and each leaving the user's choice alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import json, resource, sys
from rnnkit import _host
tuned = _host.tune_allocator()
if sys.argv[1:] == ["--no-work"]:
    print(json.dumps({"tuned": tuned}))
    sys.exit()
import jax, jax.numpy as jnp
f = jax.jit(lambda a: jnp.tanh(a @ a).sum())
a = jnp.ones((3000, 3000), jnp.float32)  # 36 MB per temporary: above glibc's mmap threshold
f(a).block_until_ready()  # one call to warm up (a second changed nothing; each untuned call takes seconds)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
f(a).block_until_ready()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"tuned": tuned, "faults_per_call": faults}))
"""


def _run(code: str, env: dict[str, str], *args: str) -> dict:
    """Run `code` in a fresh Python with `env` over ours, minus the settings conftest makes for
    the test processes; its last stdout line is JSON."""
    ours = ("RNNKIT_KEEP_ALLOCATOR", "RNNKIT_NO_COMPILE_CACHE", "JAX_COMPILATION_CACHE_DIR", "GLIBC_TUNABLES")
    clean = {k: v for k, v in os.environ.items() if k not in ours}
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _probe(env: dict[str, str], *args: str) -> dict:
    return _run(PROBE, env, *args)


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's mallopt: Linux only")
def test_tuned_allocator_stops_page_faulting_xla_temporaries() -> None:
    plain = _probe({"RNNKIT_KEEP_ALLOCATOR": "1"})
    tuned = _probe({})
    assert plain["tuned"] is False
    assert tuned["tuned"] is True
    # Untuned, each call maps its large temporaries afresh and faults them in (thousands of pages).
    assert plain["faults_per_call"] > 1000
    assert tuned["faults_per_call"] < plain["faults_per_call"] / 20


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's mallopt: Linux only")
def test_allocator_is_left_alone_when_the_user_tuned_malloc() -> None:
    assert _probe({"MALLOC_ARENA_MAX": "4"}, "--no-work")["tuned"] is False
    assert _probe({"RNNKIT_KEEP_ALLOCATOR": "1"}, "--no-work")["tuned"] is False
    assert _probe({}, "--no-work")["tuned"] is True


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's mallopt: Linux only")
def test_allocator_is_left_alone_where_jax_will_run_on_a_gpu() -> None:
    assert _probe({"JAX_PLATFORMS": "cuda"}, "--no-work")["tuned"] is False
    assert _probe({"JAX_PLATFORMS": "cuda,cpu"}, "--no-work")["tuned"] is False
    assert _probe({"JAX_PLATFORMS": "cpu"}, "--no-work")["tuned"] is True


@pytest.mark.parametrize(
    ("platforms", "device_file", "plugin", "expected"),
    [
        ("", True, True, True),  # a CUDA plugin and NVIDIA's driver: JAX picks the GPU
        ("", True, False, False),  # a GPU but CPU-only JAX
        ("", False, True, False),  # the plugin without a GPU
        ("cpu", True, True, False),  # the user's choice wins either way
        ("cpu,cuda", True, True, False),
        ("cuda", False, False, True),
    ],
)
def test_gpu_expected_reads_jax_platforms_then_the_machine(
    monkeypatch: pytest.MonkeyPatch, platforms: str, device_file: bool, plugin: bool, expected: bool
) -> None:
    from rnnkit import _host

    monkeypatch.delenv("JAX_PLATFORM_NAME", raising=False)
    monkeypatch.setenv("JAX_PLATFORMS", platforms)
    monkeypatch.setattr(_host.os.path, "exists", lambda path: device_file and path in _host._GPU_DEVICE_FILES)
    monkeypatch.setattr(_host, "_gpu_plugin_installed", lambda: plugin)
    assert _host.gpu_expected() is expected


CACHE_PROBE = """
import json, sys
from rnnkit import _host
path = _host.enable_compile_cache(sys.argv[1] if len(sys.argv) > 1 else None)
import jax
print(json.dumps({"returned": path, "config": jax.config.jax_compilation_cache_dir}))
"""


def _cache_probe(env: dict[str, str], *args: str) -> dict:
    return _run(CACHE_PROBE, env, *args)


def test_compile_cache_goes_under_xdg_cache_home(tmp_path: Path) -> None:
    got = _cache_probe({"XDG_CACHE_HOME": str(tmp_path)})
    want = str(tmp_path / "rnnkit" / "xla")
    assert got == {"returned": want, "config": want}
    assert (tmp_path / "rnnkit" / "xla").is_dir()


def test_compile_cache_respects_the_users_choice_and_the_opt_out(tmp_path: Path) -> None:
    theirs = str(tmp_path / "theirs")
    got = _cache_probe({"XDG_CACHE_HOME": str(tmp_path), "JAX_COMPILATION_CACHE_DIR": theirs})
    assert got == {"returned": None, "config": theirs}
    got = _cache_probe({"XDG_CACHE_HOME": str(tmp_path), "RNNKIT_NO_COMPILE_CACHE": "1"})
    assert got == {"returned": None, "config": None}
    assert not (tmp_path / "rnnkit").exists()
