"""Do persistent kernels beat XLA's fused loop on a GPU? A probe for the speed issue's GPU rows
(benchmarks/RESULTS.md, "GPU, fourth run": per-step kernels lost to a ~20 us launch floor per
step, so the next attempt is one launch per layer with the time loop inside).

    python benchmarks/cuda_probe.py            # on a CUDA GPU: check, then time (2-3 minutes)
    python benchmarks/cuda_probe.py emulate    # anywhere: the kernels' index arithmetic in NumPy
    python benchmarks/cuda_probe.py host       # anywhere with a C++ compiler: the kernels on CPU threads

`cuda_probe/persistent.cu` holds a TF1 LSTMCell layer's and a TF1 GRUCell layer's forward and
backward passes over the whole sequence, one launch each: every CTA owns U hidden units (and
their slice of the loop weights, in shared memory) and the CTAs meet at a grid-wide barrier
each step (the GRU: twice, its candidate needing every unit's r h). `cuda_probe/ffi.cc`
compiles them with NVRTC on first use and launches them cooperatively on XLA's stream (it
builds with the host C++ compiler alone; no CUDA toolkit is needed). `persistent_lstm()` and
`persistent_gru()` wrap each pair in a custom VJP: the inputs' projection x W_x + b, the loop
weights' gradients and the permutations into and out of the kernels' layouts stay in XLA.

On a GPU, for each case (the seed's LSTM(128) and GRU(256) at T=28 and T=784, batch 128, and at
batch 1024): `_fused._recurrence` (float32 products, unroll 4) and the kernels at several
tilings (U units per CTA; R rows staged at a time, fewer where shared memory runs out), each
checked against fused (values, and gradients in all four inputs), then timed: microseconds per
forward pass and per gradient, mean of 30 calls after one warm-up. With OUT set, the results
also go to OUT/cuda_probe.json.

`emulate` runs the four kernels' loops, written with their own index arithmetic, in NumPy behind
the same custom VJPs (jax.pure_callback in place of the FFI calls), against fused on the CPU: a
check of the layouts, the indexing and the VJPs' plumbing (not of CUDA) that needs no GPU.

`host` (about 2 minutes) compiles persistent.cu itself for the CPU (cuda_probe/host.h: one OS
thread per CUDA thread, every CTA at once; __syncthreads a pthread barrier; the grid barrier
persistent.cu's own, on the same counter) and runs it through ffi.cc's handlers registered for
XLA's CPU, against fused, then cuda_probe/host_check.cc under ThreadSanitizer and
AddressSanitizer. It checks the kernels' code, their barriers' placement and their
shared-memory plans; not the GPU's weaker memory ordering, and not speed.
"""

from __future__ import annotations

import ctypes
import functools
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
SOURCE = (HERE / "persistent.cu").read_text()
LSTM_FWD_TARGET, LSTM_BWD_TARGET = "rnnkit_probe_lstm_fwd", "rnnkit_probe_lstm_bwd"
GRU_FWD_TARGET, GRU_BWD_TARGET = "rnnkit_probe_gru_fwd", "rnnkit_probe_gru_bwd"
FORGET_BIAS = 1.0


# --- layouts: the kernel's CTA-major buffers, from and to rnnkit's ---------------------------


def lstm_to_kernel(xp: Any, wh: Any, h0: Any, c0: Any, units: int, xnp: Any = jnp) -> tuple[Any, ...]:
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


def lstm_from_kernel(hs: Any, c_out: Any, xnp: Any = jnp) -> tuple[Any, Any]:
    """hs [T, nCTA, U, B], c_out [nCTA, U, B] -> outputs [T, B, H], final c [B, H]."""
    steps, ctas, units, batch = hs.shape
    outs = xnp.transpose(hs.reshape(steps, ctas * units, batch), (0, 2, 1))
    return outs, c_out.reshape(ctas * units, batch).T


# --- the kernel's loops in NumPy (emulate) ----------------------------------------------------


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def emulate_lstm_fwd(zx: np.ndarray, wh: np.ndarray, h0: np.ndarray, c0: np.ndarray, rows: int, save: bool) -> tuple:
    """lstm_fwd's loops over flat buffers, each CTA in turn (the barrier: a step's CTAs all
    finish before the next step starts), with the kernel's index expressions: hs, c_out, and
    (save) gates and cs, else empty arrays."""
    steps, ctas, _, units, batch = zx.shape
    n = ctas * units
    zx, wh, h0, c0 = (np.asarray(a, np.float32).reshape(-1) for a in (zx, wh, h0, c0))
    hs = np.zeros(steps * batch * n, np.float32)
    gates = np.zeros(steps * 4 * n * batch if save else 0, np.float32)
    cs = np.zeros(steps * n * batch if save else 0, np.float32)
    c_out = np.zeros(ctas * units * batch, np.float32)
    pitch = (rows + 3) // 4 * 4  # staged rows by column: element (col, b) at col * pitch + b
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
                h_s = np.zeros(n * pitch, np.float32)
                e = np.arange(n * count)
                col, b = e // count, e % count
                h_s[col * pitch + b] = h_prev[col * batch + r0 + b]
                p = np.arange(units * count)
                u, b = p // count, p % count
                hrow = h_s[np.arange(n)[None, :] * pitch + b[:, None]]  # [pairs, H]: hcol[q * pitch]
                acc = np.einsum("pq,pqg->pg", hrow, w_s[k].reshape(n, units, 4)[:, u, :].transpose(1, 0, 2))
                at = u * batch + r0 + b
                ai, aj, af, ao = (acc[:, g] + z_t[g * units * batch + at] for g in range(4))
                si, tj, sf, so = _sigmoid(ai), np.tanh(aj), _sigmoid(af + FORGET_BIAS), _sigmoid(ao)
                c = c_s[k][at] * sf + si * tj
                c_s[k][at] = c
                new[k * units * batch + at] = np.tanh(c) * so
                if save:
                    g_t = (t * ctas + k) * 4 * units * batch
                    for g, v in enumerate((si, tj, sf, so)):
                        gates[g_t + g * units * batch + at] = v
                    cs[t * batch * n + k * units * batch + at] = c
        hs[t * batch * n : (t + 1) * batch * n] = new
    for k in range(ctas):
        c_out[k * units * batch : (k + 1) * units * batch] = c_s[k]
    shape = (steps, ctas, units, batch)
    saved = (gates.reshape(steps, ctas, 4, units, batch), cs.reshape(shape)) if save else (gates, cs)
    return hs.reshape(shape), c_out.reshape(shape[1:]), *saved


def emulate_lstm_bwd(
    dh_out: np.ndarray, dc_T: np.ndarray, gates: np.ndarray, cs: np.ndarray, c0: np.ndarray, wh: np.ndarray, rows: int
) -> tuple:
    """lstm_bwd's loops, as emulate_lstm_fwd: dz, dh0, dc0."""
    steps, ctas, _, units, batch = gates.shape
    n = ctas * units
    width, ub = 4 * n, units * batch
    pitch = (rows + 3) // 4 * 4
    dh_out, dc_T, gates, cs, c0, wh = (np.asarray(a, np.float32).reshape(-1) for a in (dh_out, dc_T, gates, cs, c0, wh))
    dz = np.zeros(steps * width * batch, np.float32)
    w_s = [wh[k * units * width : (k + 1) * units * width].reshape(units, width) for k in range(ctas)]
    dh_s = [np.zeros(ub, np.float32) for _ in range(ctas)]
    dc_s = [dc_T[k * ub : (k + 1) * ub].copy() for k in range(ctas)]
    p = np.arange(ub)
    for t in reversed(range(steps)):
        for k in range(ctas):  # each CTA's units, elementwise
            mine = k * ub
            g_t = gates[(t * ctas + k) * 4 * ub :]
            si, tj, sf, so = (g_t[g * ub + p] for g in range(4))
            c = cs[t * batch * n + mine + p]
            c_prev = c0[mine + p] if t == 0 else cs[(t - 1) * batch * n + mine + p]
            dh = dh_out[t * batch * n + mine + p] + dh_s[k][p]
            tc = np.tanh(c)
            dc = dc_s[k][p] + dh * so * (1 - tc * tc)
            out = t * width * batch + k * 4 * ub + p
            dz[out] = dc * tj * si * (1 - si)
            dz[out + ub] = dc * si * (1 - tj * tj)
            dz[out + 2 * ub] = dc * c_prev * sf * (1 - sf)
            dz[out + 3 * ub] = dh * tc * so * (1 - so)
            dc_s[k][p] = dc * sf
        for k in range(ctas):  # after the barrier: dh_{t-1} for each CTA's units
            for r0 in range(0, batch, rows):
                count = min(rows, batch - r0)
                z_s = np.zeros(width * pitch, np.float32)
                e = np.arange(width * count)
                col, b = e // count, e % count
                z_s[col * pitch + b] = dz[t * width * batch + col * batch + r0 + b]
                q = np.arange(units * count)
                u, b = q // count, q % count
                acc = np.einsum("pq,pq->p", z_s[np.arange(width)[None, :] * pitch + b[:, None]], w_s[k][u])
                dh_s[k][u * batch + r0 + b] = acc
    state = (ctas, units, batch)
    return (
        dz.reshape(steps, ctas, 4, units, batch),
        np.concatenate(dh_s).reshape(state),
        np.concatenate(dc_s).reshape(state),
    )


def emulate_gru_fwd(zx: np.ndarray, wg: np.ndarray, wc: np.ndarray, h0: np.ndarray, rows: int, save: bool) -> tuple:
    """gru_fwd's loops, as emulate_lstm_fwd: hs, rh, and (save) r, u, c, else an empty array."""
    steps, ctas, _, units, batch = zx.shape
    n, ub, pitch = ctas * units, units * batch, (rows + 3) // 4 * 4
    zx, wg, wc, h0 = (np.asarray(a, np.float32).reshape(-1) for a in (zx, wg, wc, h0))
    hs, rh = np.zeros(steps * batch * n, np.float32), np.zeros(steps * batch * n, np.float32)
    saved = np.zeros(steps * 3 * n * batch if save else 0, np.float32)
    e = np.arange(n * units)
    q, uu = e // units, e % units
    wg_s = [
        np.stack([wg[(q * ctas + k) * 2 * units + uu], wg[(q * ctas + k) * 2 * units + uu + units]], 1)
        for k in range(ctas)
    ]
    wc_s = [wc[(q * ctas + k) * units + uu] for k in range(ctas)]
    u_s = [np.zeros(ub, np.float32) for _ in range(ctas)]

    def staged(src: np.ndarray, r0: int, count: int) -> np.ndarray:
        h_s = np.zeros(n * pitch, np.float32)
        e = np.arange(n * count)
        col, b = e // count, e % count
        h_s[col * pitch + b] = src[col * batch + r0 + b]
        return h_s

    for t in range(steps):
        h_prev = h0 if t == 0 else hs[(t - 1) * batch * n : t * batch * n]
        rh_t = rh[t * batch * n : (t + 1) * batch * n]  # a view: written in place
        for k in range(ctas):  # phase 1
            z_t, mine = zx[(t * ctas + k) * 3 * ub :], k * ub
            for r0 in range(0, batch, rows):
                count = min(rows, batch - r0)
                h_s = staged(h_prev, r0, count)
                p = np.arange(units * count)
                u, b = p // count, p % count
                hrow = h_s[np.arange(n)[None, :] * pitch + b[:, None]]
                acc = np.einsum("pq,pqg->pg", hrow, wg_s[k].reshape(n, units, 2)[:, u, :].transpose(1, 0, 2))
                at = u * batch + r0 + b
                r, ug = _sigmoid(acc[:, 0] + z_t[at]), _sigmoid(acc[:, 1] + z_t[ub + at])
                u_s[k][at] = ug
                rh_t[mine + at] = r * h_s[(k * units + u) * pitch + b]
                if save:
                    s_t = (t * ctas + k) * 3 * ub
                    saved[s_t + at], saved[s_t + ub + at] = r, ug
        new = np.zeros(batch * n, np.float32)
        for k in range(ctas):  # phase 2, after the barrier
            z_t, mine = zx[(t * ctas + k) * 3 * ub :], k * ub
            for r0 in range(0, batch, rows):
                count = min(rows, batch - r0)
                r_s = staged(rh_t, r0, count)
                p = np.arange(units * count)
                u, b = p // count, p % count
                rrow = r_s[np.arange(n)[None, :] * pitch + b[:, None]]
                acc = np.einsum("pq,pq->p", rrow, wc_s[k].reshape(n, units)[:, u].T)
                at = u * batch + r0 + b
                c = np.tanh(acc + z_t[2 * ub + at])
                ug = u_s[k][at]
                new[mine + at] = ug * h_prev[mine + at] + (1 - ug) * c
                if save:
                    saved[(t * ctas + k) * 3 * ub + 2 * ub + at] = c
        hs[t * batch * n : (t + 1) * batch * n] = new
    shape = (steps, ctas, units, batch)
    return hs.reshape(shape), rh.reshape(shape), saved.reshape(steps, ctas, 3, units, batch) if save else saved


def emulate_gru_bwd(
    dh_out: np.ndarray, saved: np.ndarray, hs: np.ndarray, h0: np.ndarray, wg: np.ndarray, wc: np.ndarray, rows: int
) -> tuple:
    """gru_bwd's loops, as emulate_lstm_fwd: dz, dh0."""
    steps, ctas, _, units, batch = saved.shape
    n, ub = ctas * units, units * batch
    pitch = (rows + 3) // 4 * 4
    dh_out, saved, hs, h0, wg, wc = (np.asarray(a, np.float32).reshape(-1) for a in (dh_out, saved, hs, h0, wg, wc))
    dz = np.zeros(steps * 3 * n * batch, np.float32)
    wg_s = [wg[k * units * 2 * n : (k + 1) * units * 2 * n].reshape(units, 2 * n) for k in range(ctas)]
    wc_s = [wc[k * units * n : (k + 1) * units * n].reshape(units, n) for k in range(ctas)]
    carry = [np.zeros(ub, np.float32) for _ in range(ctas)]
    dh_s = [np.zeros(ub, np.float32) for _ in range(ctas)]
    drh_s = [np.zeros(ub, np.float32) for _ in range(ctas)]
    p = np.arange(ub)
    for t in reversed(range(steps)):
        h_prev = h0 if t == 0 else hs[(t - 1) * batch * n : t * batch * n]
        dz_t = t * 3 * n * batch
        for k in range(ctas):  # phase 0
            s_t, mine = (t * ctas + k) * 3 * ub, k * ub
            ug, c = saved[s_t + ub + p], saved[s_t + 2 * ub + p]
            dh = dh_out[t * batch * n + mine + p] + carry[k][p]
            dh_s[k][p] = dh
            dz[dz_t + k * 3 * ub + 2 * ub + p] = dh * (1 - ug) * (1 - c * c)
        for k in range(ctas):  # phase 1, after the first barrier
            s_t, mine = (t * ctas + k) * 3 * ub, k * ub
            for r0 in range(0, batch, rows):
                count = min(rows, batch - r0)
                z_s = np.zeros(2 * n * pitch, np.float32)
                e = np.arange(n * count)
                col, b = e // count, e % count
                j, u = col // units, col % units
                z_s[col * pitch + b] = dz[dz_t + (j * 3 + 2) * ub + u * batch + r0 + b]
                q = np.arange(units * count)
                u, b = q // count, q % count
                acc = np.einsum("pq,pq->p", z_s[np.arange(n)[None, :] * pitch + b[:, None]], wc_s[k][u])
                at = u * batch + r0 + b
                drh_s[k][at] = acc
                r, ug, c = saved[s_t + at], saved[s_t + ub + at], saved[s_t + 2 * ub + at]
                h = h_prev[mine + at]
                dz[dz_t + k * 3 * ub + at] = acc * h * r * (1 - r)
                dz[dz_t + k * 3 * ub + ub + at] = dh_s[k][at] * (h - c) * ug * (1 - ug)
        for k in range(ctas):  # phase 2, after the second barrier
            s_t = (t * ctas + k) * 3 * ub
            for r0 in range(0, batch, rows):
                count = min(rows, batch - r0)
                z_s = np.zeros(2 * n * pitch, np.float32)
                e = np.arange(2 * n * count)
                col, b = e // count, e % count
                j, gu = col // (2 * units), col % (2 * units)
                z_s[col * pitch + b] = dz[dz_t + j * 3 * ub + gu * batch + r0 + b]
                q = np.arange(units * count)
                u, b = q // count, q % count
                acc = np.einsum("pq,pq->p", z_s[np.arange(2 * n)[None, :] * pitch + b[:, None]], wg_s[k][u])
                at = u * batch + r0 + b
                carry[k][at] = dh_s[k][at] * saved[s_t + ub + at] + drh_s[k][at] * saved[s_t + at] + acc
    return dz.reshape(steps, ctas, 3, units, batch), np.concatenate(carry).reshape(ctas, units, batch)


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


def register(host: bool = False) -> None:
    """Build cuda_probe/ffi.cc with the host compiler and register its handlers: for CUDA, or
    (host) for XLA's CPU, with the kernels compiled in and run on CPU threads (cuda_probe/host.h)."""
    if not host:
        nvrtc = _nvrtc()
        if nvrtc:
            os.environ.setdefault("RNNKIT_NVRTC", nvrtc)
    library = Path(tempfile.mkdtemp(prefix="rnnkit-cuda-probe-")) / "libprobe.so"
    flags = ["-O2", "-shared", "-fPIC", "-std=c++17", "-isystem", jax.ffi.include_dir()]
    if host:
        flags += ["-DRNNKIT_PROBE_HOST", "-pthread", "-Wno-unknown-pragmas"]
    subprocess.run([_cxx(), *flags, str(HERE / "ffi.cc"), "-o", str(library), "-ldl"], check=True)
    lib = ctypes.cdll.LoadLibrary(str(library))
    platform = "cpu" if host else "CUDA"
    jax.ffi.register_ffi_target(LSTM_FWD_TARGET, jax.ffi.pycapsule(lib.RnnkitProbeLstmFwd), platform=platform)
    jax.ffi.register_ffi_target(LSTM_BWD_TARGET, jax.ffi.pycapsule(lib.RnnkitProbeLstmBwd), platform=platform)
    jax.ffi.register_ffi_target(GRU_FWD_TARGET, jax.ffi.pycapsule(lib.RnnkitProbeGruFwd), platform=platform)
    jax.ffi.register_ffi_target(GRU_BWD_TARGET, jax.ffi.pycapsule(lib.RnnkitProbeGruBwd), platform=platform)
    if not host:
        print("nvrtc:", os.environ.get("RNNKIT_NVRTC"), flush=True)


def _cxx() -> str:
    return os.environ.get("CXX", "c++")


def _call(
    emulated: bool,
    target: str,
    emulation: Any,
    types: tuple,
    args: tuple,
    rows: int,
    attrs: dict[str, Any] | None = None,
    emulate: dict[str, Any] | None = None,
) -> tuple:
    """One kernel on kernel-layout arrays, giving `types`: the CUDA kernel through XLA FFI (with
    `attrs` besides the source and rows; its barrier scratch dropped), or its NumPy emulation
    (with `emulate`) through jax.pure_callback."""
    if emulated:
        return jax.pure_callback(functools.partial(emulation, rows=rows, **(emulate or {})), types, *args)
    barrier = jax.ShapeDtypeStruct((1,), jnp.uint32)
    call = jax.ffi.ffi_call(target, (*types, barrier))
    return call(*args, source=SOURCE, rows=np.int64(rows), **(attrs or {}))[:-1]


def _f32(*shape: int) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, jnp.float32)


def persistent_lstm(units: int, rows: int, emulated: bool = False) -> Any:
    """run(xp [T, B, 4H], wh [H, 4H], h0, c0 [B, H]) -> (outputs [T, B, H], final c [B, H]),
    like _fused._recurrence's LSTM, differentiable in all four through the backward kernel."""

    def call_fwd(zx: Any, wh: Any, h0: Any, c0: Any, save: bool) -> tuple:
        steps, ctas, _, _, batch = zx.shape
        state = _f32(steps, ctas, units, batch)
        types = (state, _f32(*c0.shape), _f32(*zx.shape) if save else _f32(0), state if save else _f32(0))
        bias = {"forget_bias": np.float32(FORGET_BIAS)}
        args = (zx, wh, h0, c0)
        return _call(emulated, LSTM_FWD_TARGET, emulate_lstm_fwd, types, args, rows, bias, {"save": save})

    def call_bwd(dh: Any, dc: Any, gates: Any, cs: Any, c0: Any, wh: Any) -> tuple:
        types = (_f32(*gates.shape), _f32(*c0.shape), _f32(*c0.shape))
        return _call(emulated, LSTM_BWD_TARGET, emulate_lstm_bwd, types, (dh, dc, gates, cs, c0, wh), rows)

    @jax.custom_vjp
    def run(xp: jax.Array, wh: jax.Array, h0: jax.Array, c0: jax.Array) -> tuple[Any, Any]:
        hs, c_out, _, _ = call_fwd(*lstm_to_kernel(xp, wh, h0, c0, units), False)
        return lstm_from_kernel(hs, c_out)

    def run_fwd(xp: jax.Array, wh: jax.Array, h0: jax.Array, c0: jax.Array) -> tuple[Any, Any]:
        zx, whp, h0p, c0p = lstm_to_kernel(xp, wh, h0, c0, units)
        hs, c_out, gates, cs = call_fwd(zx, whp, h0p, c0p, True)
        return lstm_from_kernel(hs, c_out), (hs, gates, cs, whp, h0p, c0p)

    def run_bwd(res: tuple, cot: tuple) -> tuple:
        hs, gates, cs, whp, h0p, c0p = res
        d_outs, d_c = cot
        steps, ctas, _, _, batch = gates.shape
        n = ctas * units
        dh = jnp.transpose(d_outs.reshape(steps, batch, ctas, units), (0, 2, 3, 1))
        dc = jnp.transpose(d_c.reshape(batch, ctas, units), (1, 2, 0))
        dz, dh0, dc0 = call_bwd(dh, dc, gates, cs, c0p, whp)
        d_xp = jnp.transpose(dz, (0, 4, 2, 1, 3)).reshape(steps, batch, 4 * n)
        h_prev = jnp.concatenate([h0p[None], hs[:-1]]).reshape(steps, n, batch)  # units k*U + u
        d_whp = jnp.einsum("tib,tjb->ij", h_prev, dz.reshape(steps, 4 * n, batch), precision="highest")
        d_wh = jnp.transpose(d_whp.reshape(n, ctas, 4, units), (0, 2, 1, 3)).reshape(n, 4 * n)
        return d_xp, d_wh, dh0.reshape(n, batch).T, dc0.reshape(n, batch).T

    run.defvjp(run_fwd, run_bwd)
    return run


def gru_to_kernel(xp: Any, wg: Any, wc: Any, h0: Any, units: int, xnp: Any = jnp) -> tuple[Any, ...]:
    """xp [T, B, 3H] (r, u, candidate), w_gates [H, 2H], w_cand [H, H], h0 [B, H] -> zx
    [T, nCTA, 3, U, B], wg [H, nCTA, 2, U], wc [H, nCTA, U] (W_c's columns are already in unit
    order), h0 [nCTA, U, B]."""
    steps, batch, width = xp.shape
    n = width // 3
    ctas = n // units
    zx = xnp.transpose(xp.reshape(steps, batch, 3, ctas, units), (0, 3, 2, 4, 1))
    wgp = xnp.transpose(wg.reshape(n, 2, ctas, units), (0, 2, 1, 3))
    return zx, wgp, wc.reshape(n, ctas, units), xnp.transpose(h0.reshape(batch, ctas, units), (1, 2, 0))


def persistent_gru(units: int, rows: int, emulated: bool = False) -> Any:
    """run(xp [T, B, 3H], w_gates [H, 2H], w_cand [H, H], h0 [B, H]) -> (outputs [T, B, H],
    final h [B, H]), like _fused._recurrence's GRU, differentiable in all four."""

    def call_fwd(zx: Any, wg: Any, wc: Any, h0: Any, save: bool) -> tuple:
        steps, ctas, _, _, batch = zx.shape
        state = _f32(steps, ctas, units, batch)
        types = (state, state, _f32(*zx.shape) if save else _f32(0))
        return _call(emulated, GRU_FWD_TARGET, emulate_gru_fwd, types, (zx, wg, wc, h0), rows, emulate={"save": save})

    def call_bwd(dh: Any, saved: Any, hs: Any, h0: Any, wg: Any, wc: Any) -> tuple:
        types = (_f32(*saved.shape), _f32(*h0.shape))
        return _call(emulated, GRU_BWD_TARGET, emulate_gru_bwd, types, (dh, saved, hs, h0, wg, wc), rows)

    def outputs(hs: jax.Array) -> tuple[Any, Any]:
        steps, ctas, units_, batch = hs.shape
        outs = jnp.transpose(hs.reshape(steps, ctas * units_, batch), (0, 2, 1))
        return outs, outs[-1]

    @jax.custom_vjp
    def run(xp: jax.Array, wg: jax.Array, wc: jax.Array, h0: jax.Array) -> tuple[Any, Any]:
        hs, _, _ = call_fwd(*gru_to_kernel(xp, wg, wc, h0, units), False)
        return outputs(hs)

    def run_fwd(xp: jax.Array, wg: jax.Array, wc: jax.Array, h0: jax.Array) -> tuple[Any, Any]:
        zx, wgp, wcp, h0p = gru_to_kernel(xp, wg, wc, h0, units)
        hs, rh, saved = call_fwd(zx, wgp, wcp, h0p, True)
        return outputs(hs), (hs, rh, saved, wgp, wcp, h0p)

    def run_bwd(res: tuple, cot: tuple) -> tuple:
        hs, rh, saved, wgp, wcp, h0p = res
        d_outs, d_last = cot
        steps, ctas, _, _, batch = saved.shape
        n = ctas * units
        d_outs = d_outs.at[-1].add(d_last)  # the final h is the last output
        dh = jnp.transpose(d_outs.reshape(steps, batch, ctas, units), (0, 2, 3, 1))
        dz, dh0 = call_bwd(dh, saved, hs, h0p, wgp, wcp)
        d_xp = jnp.transpose(dz, (0, 4, 2, 1, 3)).reshape(steps, batch, 3 * n)
        h_prev = jnp.concatenate([h0p[None], hs[:-1]]).reshape(steps, n, batch)
        d_gates = dz[:, :, :2].reshape(steps, 2 * n, batch)  # columns (CTA, gate, unit)
        d_wgp = jnp.einsum("tib,tjb->ij", h_prev, d_gates, precision="highest")
        d_wg = jnp.transpose(d_wgp.reshape(n, ctas, 2, units), (0, 2, 1, 3)).reshape(n, 2 * n)
        d_cand = dz[:, :, 2].reshape(steps, n, batch)
        d_wc = jnp.einsum("tib,tjb->ij", rh.reshape(steps, n, batch), d_cand, precision="highest")
        return d_xp, d_wg, d_wc, dh0.reshape(n, batch).T

    run.defvjp(run_fwd, run_bwd)
    return run


def _inputs(kind: str, steps: int, batch: int, n: int, seed: int = 0) -> tuple[Any, ...]:
    """Random inputs of persistent_lstm() (lstm: xp, wh, h0, c0) or persistent_gru() (gru: xp,
    w_gates, w_cand, h0)."""
    rng = np.random.default_rng(seed)

    def draw(*shape: int, scale: float) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    if kind == "lstm":
        return (
            draw(steps, batch, 4 * n, scale=0.5),
            draw(n, 4 * n, scale=n**-0.5),
            draw(batch, n, scale=0.1),
            draw(batch, n, scale=0.1),
        )
    return (
        draw(steps, batch, 3 * n, scale=0.5),
        draw(n, 2 * n, scale=n**-0.5),
        draw(n, n, scale=n**-0.5),
        draw(batch, n, scale=0.1),
    )


def _fused_ref(kind: str) -> Any:
    """_fused._recurrence (float32 products, unroll 4) with the persistent kernels' signature."""
    run = _fused._recurrence(kind, "highest", FORGET_BIAS, 4, False)

    def lstm(xp: jax.Array, wh: jax.Array, h0: jax.Array, c0: jax.Array) -> tuple[Any, Any]:
        outs, (c, _) = run((wh,), xp, (c0, h0), None)
        return outs, c

    def gru(xp: jax.Array, wg: jax.Array, wc: jax.Array, h0: jax.Array) -> tuple[Any, Any]:
        outs, (h,) = run((wg, wc), xp, (h0,), None)
        return outs, h

    return lstm if kind == "lstm" else gru


def _kernels(kind: str, units: int, rows: int, emulated: bool = False) -> Any:
    return (persistent_lstm if kind == "lstm" else persistent_gru)(units, rows, emulated)


def _programs(run: Any, args: tuple) -> tuple[Any, Any]:
    """The forward program and the gradient program (of a loss reading every output and the
    final state, c or h, through fixed random weights) in all four inputs."""
    rng = np.random.default_rng(1)
    steps, batch = args[0].shape[:2]
    n = args[1].shape[0]
    w_outs = jnp.asarray(rng.standard_normal((steps, batch, n)), jnp.float32)
    w_last = jnp.asarray(rng.standard_normal((batch, n)), jnp.float32)

    def loss(*a: jax.Array) -> jax.Array:
        outs, last = run(*a)
        return jnp.sum(outs * w_outs) + jnp.sum(last * w_last)

    return jax.jit(run), jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))


def _max_diff(got: Any, want: Any) -> float:
    """The largest absolute difference, relative to the largest magnitude, over every leaf."""
    return max(
        float(jnp.max(jnp.abs(g - w)) / jnp.maximum(jnp.max(jnp.abs(w)), 1e-30))
        for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True)
    )


def _mean_us(fn: Any, *args: Any, n: int = 30) -> float:
    jax.block_until_ready(fn(*args))
    t = time.perf_counter()
    for _ in range(n):
        r = fn(*args)
    jax.block_until_ready(r)
    return (time.perf_counter() - t) / n * 1e6


# (steps, batch, units H, units per CTA U, rows staged R): row chunks that end short of B, B
# and R that are not multiples of 4 (the staging's scalar loads), and that are (its 16-byte
# loads; the last two with R >= 32, rounded to whole warps of rows by ffi.cc).
SMALL_CASES = [(5, 6, 8, 2, 4), (3, 5, 12, 3, 5), (4, 7, 8, 1, 16), (3, 12, 12, 3, 8), (2, 40, 8, 4, 64)]


def check(emulated: bool, cases: list = SMALL_CASES) -> None:
    """The kernels (emulated: their NumPy transliteration) behind their custom VJPs, against
    fused on the CPU: values and the gradients in all four inputs."""
    for kind in ("lstm", "gru"):
        for steps, batch, n, units, rows in cases:
            args = tuple(jnp.asarray(a) for a in _inputs(kind, steps, batch, n, seed=steps))
            want_fwd, want_grad = _programs(_fused_ref(kind), args)
            got_fwd, got_grad = _programs(_kernels(kind, units, rows, emulated=emulated), args)
            fwd_err = _max_diff(got_fwd(*args), want_fwd(*args))
            grad_err = _max_diff(got_grad(*args), want_grad(*args))
            print(
                f"{kind} T={steps} B={batch} H={n} U={units} R={rows}: relative difference {fwd_err:.1e}, "
                f"gradients {grad_err:.1e}",
                flush=True,
            )
            assert fwd_err < 1e-5, fwd_err
            assert grad_err < 1e-5, grad_err


# Seed-sized layers for a few steps (the shared-memory plans at their real sizes), run with 64
# CUDA threads per CTA to keep the host's thread count down.
SEED_SIZED_CASES = [(3, 128, 128, 4, 64), (2, 128, 256, 4, 128)]


def host() -> None:
    """The CUDA kernels' own code on CPU threads (cuda_probe/host.h). First through the XLA
    handlers, registered for the CPU, against fused: values and gradients. Then without
    Python or XLA (cuda_probe/host_check.cc) under ThreadSanitizer, which reports a race
    between CUDA threads (a __syncthreads or grid barrier missing), and AddressSanitizer with
    UBSan, which report a read or write outside a buffer or the planned shared memory."""
    register(host=True)
    check(emulated=False)
    os.environ["RNNKIT_PROBE_HOST_THREADS"] = "64"
    try:
        check(emulated=False, cases=SEED_SIZED_CASES)
    finally:
        del os.environ["RNNKIT_PROBE_HOST_THREADS"]
    sanitizers = {
        "thread": {"TSAN_OPTIONS": "halt_on_error=1 exitcode=66"},
        "address,undefined": {"ASAN_OPTIONS": "detect_leaks=0", "UBSAN_OPTIONS": "halt_on_error=1"},
    }
    with tempfile.TemporaryDirectory(prefix="rnnkit-cuda-probe-") as tmp:
        for sanitizer, env in sanitizers.items():
            binary = os.path.join(tmp, "host_check")
            flags = ["-std=c++17", "-O1", "-g", "-pthread", f"-fsanitize={sanitizer}", "-Wno-unknown-pragmas"]
            if sanitizer != "thread":
                flags.append("-fno-sanitize-recover=undefined")
            subprocess.run([_cxx(), *flags, str(HERE / "host_check.cc"), "-o", binary], check=True)
            print(f"host_check.cc under -fsanitize={sanitizer}:", flush=True)
            subprocess.run([binary], check=True, env={**os.environ, **env})


def gpu() -> None:
    register()
    results = []
    cases = [("lstm", 28, 128, 128), ("gru", 28, 128, 256), ("lstm", 784, 128, 128), ("gru", 784, 128, 256)]
    cases += [("lstm", 28, 1024, 128), ("gru", 28, 1024, 256)]
    for kind, steps, batch, n in cases:
        args = tuple(jnp.asarray(a) for a in _inputs(kind, steps, batch, n))
        fused_fwd, fused_grad = _programs(_fused_ref(kind), args)
        want_fwd, want_grad = fused_fwd(*args), fused_grad(*args)
        row: dict[str, Any] = {"kind": kind, "T": steps, "B": batch, "H": n}
        row["fused4"] = {"fwd_us": _mean_us(fused_fwd, *args), "grad_us": _mean_us(fused_grad, *args)}
        print(
            f"{kind} T={steps} B={batch} H={n}: fused (unroll 4) {row['fused4']['fwd_us']:.0f} us forward, "
            f"{row['fused4']['grad_us']:.0f} us gradient",
            flush=True,
        )
        for units in (1, 2, 4):
            for rows in (64, 128):
                name = f"U{units}_R{rows}"
                if n // units > 132 or n % units:
                    continue
                try:
                    fwd, grad = _programs(_kernels(kind, units, rows), args)
                    errors = (_max_diff(fwd(*args), want_fwd), _max_diff(grad(*args), want_grad))
                    times = (_mean_us(fwd, *args), _mean_us(grad, *args))
                except Exception as e:  # a probe: report the tiling that failed and go on
                    row[name] = {"error": str(e).splitlines()[0][:300]}
                    print(f"  {name}: {row[name]['error']}", flush=True)
                    continue
                row[name] = {
                    "fwd_us": times[0],
                    "grad_us": times[1],
                    "fwd_rel_diff": errors[0],
                    "grad_rel_diff": errors[1],
                }
                print(
                    f"  {name}: {times[0]:.0f} us forward ({times[0] / steps:.2f} per step), {times[1]:.0f} us "
                    f"gradient; relative differences {errors[0]:.1e}, {errors[1]:.1e}",
                    flush=True,
                )
        results.append(row)
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "cuda_probe.json"), "w") as fh:
            json.dump({"device": str(jax.devices()[0]), "jax": jax.__version__, "results": results}, fh, indent=1)


if __name__ == "__main__":
    if sys.argv[1:] == ["emulate"]:
        check(emulated=True)
    elif sys.argv[1:] == ["host"]:
        host()
    else:
        gpu()
