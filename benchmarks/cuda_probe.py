"""Does a persistent kernel beat XLA's fused loop on a GPU? A probe for the speed issue's GPU
rows (benchmarks/RESULTS.md, "GPU, fourth run": per-step kernels lost to a ~20 us launch floor
per step, so the next attempt is one launch per layer with the time loop inside).

    python benchmarks/cuda_probe.py            # on a CUDA GPU: check, then time (about a minute)
    python benchmarks/cuda_probe.py emulate    # anywhere: the kernel's index arithmetic in NumPy

`cuda_probe/lstm_persistent.cu` is one TF1 LSTMCell layer's forward pass over the whole
sequence, every CTA owning U hidden units and the CTAs meeting at a grid-wide barrier each
step; `cuda_probe/ffi.cc` compiles it with NVRTC on first use and launches it cooperatively on
XLA's stream (built here with the host C++ compiler; no CUDA toolkit needed). Forward only:
whether one step can cost a few microseconds decides whether the backward kernel is worth
writing.

On a GPU: for each case (the seed's LSTM(128) at T=28 and T=784, batch 128; batch 1024; an
LSTM as wide as the seed's GRU, 256 units), the outputs and final cell state against
`_fused._recurrence` (the same formulas in XLA, float32 products), then microseconds per
forward pass (mean of 30 calls after one warm-up) of fused at unroll 4 and of the kernel at
several (U units per CTA, R rows staged at a time), the permutations into and out of the
kernel's layouts included. With OUT set, the results also go to OUT/cuda_probe.json.

`emulate` runs the kernel's loops, written with its own index arithmetic over the same
permuted buffers, in NumPy, against `_fused._recurrence` on the CPU: a check of the layouts and
indexing (not of CUDA) that needs no GPU.
"""

from __future__ import annotations

import ctypes
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnnkit import _fused

HERE = Path(__file__).with_name("cuda_probe")
SOURCE = (HERE / "lstm_persistent.cu").read_text()
TARGET = "rnnkit_probe_lstm_fwd"
FORGET_BIAS = 1.0


# --- layouts: the kernel's CTA-major buffers, from and to rnnkit's ---------------------------


def to_kernel(xp: Any, wh: Any, h0: Any, c0: Any, units: int, xnp: Any = jnp) -> tuple[Any, ...]:
    """xp [T, B, 4H] (x W_x + b), wh [H, 4H], h0 and c0 [B, H] -> zx [T, nCTA, 4, U, B],
    wh [H, nCTA, 4, U], h0 and c0 [nCTA, U, B] (unit k*U + u is CTA k's u-th)."""
    steps, batch, width = xp.shape
    n = width // 4
    ctas = n // units
    zx = xnp.transpose(xp.reshape(steps, batch, 4, ctas, units), (0, 3, 2, 4, 1))
    whp = xnp.transpose(wh.reshape(n, 4, ctas, units), (0, 2, 1, 3))

    def state(s: Any) -> Any:
        return xnp.transpose(s.reshape(batch, ctas, units), (1, 2, 0))

    return zx, whp, state(h0), state(c0)


def from_kernel(hs: Any, c_out: Any, xnp: Any = jnp) -> tuple[Any, Any]:
    """hs [T, nCTA, U, B], c_out [nCTA, U, B] -> outputs [T, B, H], final c [B, H]."""
    steps, ctas, units, batch = hs.shape
    outs = xnp.transpose(hs.reshape(steps, ctas * units, batch), (0, 2, 1))
    return outs, c_out.reshape(ctas * units, batch).T


# --- the kernel's loops in NumPy (emulate) ----------------------------------------------------


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def emulate_kernel(zx: np.ndarray, wh: np.ndarray, h0: np.ndarray, c0: np.ndarray, rows: int) -> tuple[Any, Any]:
    """lstm_fwd's loops over flat buffers, each CTA in turn (the barrier: a step's CTAs all
    finish before the next step starts), with the kernel's index expressions."""
    steps, ctas, _, units, batch = zx.shape
    n = ctas * units
    zx, wh, h0, c0 = (a.reshape(-1) for a in (zx, wh, h0, c0))
    hs = np.zeros(steps * batch * n, np.float32)
    c_out = np.zeros(ctas * units * batch, np.float32)
    hp = n + 1
    c_s = [c0[k * units * batch : (k + 1) * units * batch].copy() for k in range(ctas)]
    w_s = []
    for k in range(ctas):  # [H][U] of (i, j, f, o)
        e = np.arange(n * units)
        q, u = e // units, e % units
        src = (q * ctas + k) * 4 * units + u
        w_s.append(np.stack([wh[src], wh[src + units], wh[src + 2 * units], wh[src + 3 * units]], axis=1))
    for t in range(steps):
        h_prev = h0 if t == 0 else hs[(t - 1) * batch * n : t * batch * n]
        new = np.zeros(batch * n, np.float32)
        for k in range(ctas):
            z_t = zx[(t * ctas + k) * 4 * units * batch :]
            for r0 in range(0, batch, rows):
                count = min(rows, batch - r0)
                h_s = np.zeros(rows * hp, np.float32)
                e = np.arange(ctas * units * count)
                col, b = e // count, e % count
                h_s[b * hp + col] = h_prev[col * batch + r0 + b]
                p = np.arange(units * count)
                u, b = p // count, p % count
                hrow = h_s.reshape(rows, hp)[b, :n]  # [pairs, H]
                acc = np.einsum("pq,pqg->pg", hrow, w_s[k].reshape(n, units, 4)[:, u, :].transpose(1, 0, 2))
                at = u * batch + r0 + b
                ai, aj, af, ao = (acc[:, g] + z_t[g * units * batch + at] for g in range(4))
                c = c_s[k][at] * _sigmoid(af + FORGET_BIAS) + _sigmoid(ai) * np.tanh(aj)
                c_s[k][at] = c
                new[k * units * batch + at] = np.tanh(c) * _sigmoid(ao)
        hs[t * batch * n : (t + 1) * batch * n] = new
    for k in range(ctas):
        c_out[k * units * batch : (k + 1) * units * batch] = c_s[k]
    return hs.reshape(steps, ctas, units, batch), c_out.reshape(ctas, units, batch)


# --- the real kernel --------------------------------------------------------------------------


def _nvrtc() -> str | None:
    """libnvrtc: the nvidia-cuda-nvrtc wheel's (JAX's and PyTorch's CUDA wheels bring it, built
    for the CUDA they run on), else the CUDA toolkit's."""
    wheels = [os.path.join(p, "nvidia", "cu*", "lib", "libnvrtc.so.*") for p in sys.path]
    toolkit = os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "lib64", "libnvrtc.so.*")
    for pattern in [*wheels, toolkit]:
        found = sorted(f for f in glob.glob(pattern) if "builtins" not in f and ".alt." not in f)
        if found:
            return found[-1]
    return None


def register() -> None:
    """Build cuda_probe/ffi.cc with the host compiler and register its handler for CUDA."""
    nvrtc = _nvrtc()
    if nvrtc:
        os.environ.setdefault("RNNKIT_NVRTC", nvrtc)
    library = Path(tempfile.mkdtemp(prefix="rnnkit-cuda-probe-")) / "libprobe.so"
    cxx = os.environ.get("CXX", "c++")
    subprocess.run(
        [
            cxx,
            "-O2",
            "-shared",
            "-fPIC",
            "-std=c++17",
            f"-I{jax.ffi.include_dir()}",
            str(HERE / "ffi.cc"),
            "-o",
            str(library),
            "-ldl",
        ],
        check=True,
    )
    lib = ctypes.cdll.LoadLibrary(str(library))
    jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(lib.RnnkitProbeLstmFwd), platform="CUDA")
    print("nvrtc:", os.environ.get("RNNKIT_NVRTC"), flush=True)


def persistent(xp: jax.Array, wh: jax.Array, h0: jax.Array, c0: jax.Array, units: int, rows: int) -> tuple[Any, Any]:
    """The kernel: outputs [T, B, H] and the final c [B, H], like _fused._recurrence's."""
    zx, whp, h0p, c0p = to_kernel(xp, wh, h0, c0, units)
    steps, ctas, _, _, batch = zx.shape
    out_types = (
        jax.ShapeDtypeStruct((steps, ctas, units, batch), jnp.float32),
        jax.ShapeDtypeStruct((ctas, units, batch), jnp.float32),
        jax.ShapeDtypeStruct((1,), jnp.uint32),
    )
    hs, c_out, _ = jax.ffi.ffi_call(TARGET, out_types)(
        zx, whp, h0p, c0p, source=SOURCE, rows=np.int64(rows), forget_bias=np.float32(FORGET_BIAS)
    )
    return from_kernel(hs, c_out)


def _inputs(steps: int, batch: int, n: int, seed: int = 0) -> tuple[Any, ...]:
    rng = np.random.default_rng(seed)
    xp = rng.standard_normal((steps, batch, 4 * n)).astype(np.float32) * 0.5
    wh = rng.standard_normal((n, 4 * n)).astype(np.float32) / np.sqrt(n)
    h0 = rng.standard_normal((batch, n)).astype(np.float32) * 0.1
    c0 = rng.standard_normal((batch, n)).astype(np.float32) * 0.1
    return xp, wh, h0, c0


def _fused_fwd() -> Any:
    run = _fused._recurrence("lstm", "highest", FORGET_BIAS, 4, False)

    def fwd(xp: jax.Array, wh: jax.Array, h0: jax.Array, c0: jax.Array) -> tuple[Any, Any]:
        outs, (c, _) = run((wh,), xp, (c0, h0), None)
        return outs, c

    return jax.jit(fwd)


def _mean_us(fn: Any, *args: Any, n: int = 30) -> float:
    jax.block_until_ready(fn(*args))
    t = time.perf_counter()
    for _ in range(n):
        r = fn(*args)
    jax.block_until_ready(r)
    return (time.perf_counter() - t) / n * 1e6


def emulate() -> None:
    """The NumPy transliteration against fused on the CPU, on small shapes with partial row chunks."""
    for steps, batch, n, units, rows in [(5, 6, 8, 2, 4), (3, 5, 12, 3, 5), (4, 7, 8, 1, 16)]:
        xp, wh, h0, c0 = _inputs(steps, batch, n, seed=steps)
        want_outs, want_c = _fused_fwd()(xp, wh, h0, c0)
        zx, whp, h0p, c0p = to_kernel(xp, wh, h0, c0, units, xnp=np)
        outs, c = from_kernel(*emulate_kernel(zx, whp, h0p, c0p, rows), xnp=np)
        err = max(float(np.max(np.abs(outs - want_outs))), float(np.max(np.abs(c - want_c))))
        print(f"T={steps} B={batch} H={n} U={units} R={rows}: max abs difference {err:.2e}")
        assert err < 1e-5, err


def gpu() -> None:
    register()
    results = []
    cases = [(28, 128, 128), (784, 128, 128), (28, 1024, 128), (28, 128, 256)]
    for steps, batch, n in cases:
        args = tuple(jnp.asarray(a) for a in _inputs(steps, batch, n))
        fused = _fused_fwd()
        want = fused(*args)
        row: dict[str, Any] = {"T": steps, "B": batch, "H": n, "fused4_us": _mean_us(fused, *args)}
        print(f"T={steps} B={batch} H={n}: fused unroll 4 {row['fused4_us']:.0f} us", flush=True)
        for units in (1, 2, 4):
            for rows in (64, 128, 256):
                name = f"U{units}_R{rows}"
                if n // units > 132 or n % units:
                    continue
                try:
                    f = jax.jit(lambda *a, u=units, r=rows: persistent(*a, u, r))
                    got = f(*args)
                    err = max(float(jnp.max(jnp.abs(g - w))) for g, w in zip(got, want, strict=True))
                    us = _mean_us(f, *args)
                except Exception as e:  # a probe: report the tiling that failed and go on
                    row[name] = {"error": str(e).splitlines()[0][:300]}
                    print(f"  {name}: {row[name]['error']}", flush=True)
                    continue
                row[name] = {"us": us, "max_abs_diff": err, "us_per_step": us / steps}
                print(f"  {name}: {us:.0f} us ({us / steps:.2f} per step), max abs diff {err:.1e}", flush=True)
        results.append(row)
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "cuda_probe.json"), "w") as fh:
            json.dump({"device": str(jax.devices()[0]), "jax": jax.__version__, "results": results}, fh, indent=1)


if __name__ == "__main__":
    if sys.argv[1:] == ["emulate"]:
        emulate()
    else:
        gpu()
