"""An independent NumPy (float64) implementation of TF1's cells and drivers, written from the
formulas in TF1's `rnn_cell_impl.py` / `rnn.py` (and the project's reference notes), not from
rnnkit's code. Weights come in as the dict of TF1 variable names below one cell's scope.

Deliberately plain: per-gate matmuls over the split kernel rows instead of one matmul over a
concatenation, an explicit Python loop over time and over the batch for masking.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _x_rows(kernel: np.ndarray, input_size: int) -> tuple[np.ndarray, np.ndarray]:
    """TF1 kernels multiply [x, h]: the first input_size rows act on x, the rest on h."""
    return kernel[:input_size], kernel[input_size:]


def basic_rnn_step(w: dict, x: np.ndarray, h: np.ndarray, act: Callable = np.tanh) -> tuple[Any, Any]:
    wx, wh = _x_rows(w["kernel"], x.shape[1])
    new_h = act(x @ wx + h @ wh + w["bias"])
    return new_h, new_h


def lstm_step(
    w: dict,
    x: np.ndarray,
    state: tuple[np.ndarray, np.ndarray],
    *,
    forget_bias: float = 1.0,
    cell_clip: float | None = None,
    proj_clip: float | None = None,
    act: Callable = np.tanh,
) -> tuple[Any, Any]:
    """LSTMCell and BasicLSTMCell (which is LSTMCell without the options). Gates i, j, f, o."""
    c, m = state
    units = c.shape[1]
    wx, wh = _x_rows(w["kernel"], x.shape[1])
    z = x @ wx + m @ wh + w["bias"]
    i, j, f, o = (z[:, k * units : (k + 1) * units] for k in range(4))
    peep = "w_f_diag" in w
    f_in = f + forget_bias + (w["w_f_diag"] * c if peep else 0.0)
    i_in = i + (w["w_i_diag"] * c if peep else 0.0)
    new_c = sigmoid(f_in) * c + sigmoid(i_in) * act(j)
    if cell_clip is not None:
        new_c = np.clip(new_c, -cell_clip, cell_clip)
    o_in = o + (w["w_o_diag"] * new_c if peep else 0.0)
    new_m = sigmoid(o_in) * act(new_c)
    if "projection/kernel" in w:
        new_m = new_m @ w["projection/kernel"]
        if proj_clip is not None:
            new_m = np.clip(new_m, -proj_clip, proj_clip)
    return new_m, (new_c, new_m)


def gru_step(w: dict, x: np.ndarray, h: np.ndarray, act: Callable = np.tanh) -> tuple[Any, Any]:
    """TF1 GRUCell (reset before the candidate matmul); gates r, u; h' = u h + (1 - u) c."""
    units = h.shape[1]
    gx, gh = _x_rows(w["gates/kernel"], x.shape[1])
    gates = sigmoid(x @ gx + h @ gh + w["gates/bias"])
    r, u = gates[:, :units], gates[:, units:]
    cx, ch = _x_rows(w["candidate/kernel"], x.shape[1])
    cand = act(x @ cx + (r * h) @ ch + w["candidate/bias"])
    new_h = u * h + (1.0 - u) * cand
    return new_h, new_h


def gru_reset_after_step(w: dict, x: np.ndarray, h: np.ndarray, act: Callable = np.tanh) -> tuple[Any, Any]:
    """cuDNN / PyTorch GRU in TF1's CudnnCompatibleGRUCell naming: the reset gate scales the
    hidden projection after its matmul (and bias)."""
    units = h.shape[1]
    gx, gh = _x_rows(w["gates/kernel"], x.shape[1])
    gates = sigmoid(x @ gx + h @ gh + w["gates/bias"])
    r, u = gates[:, :units], gates[:, units:]
    x_part = x @ w["candidate/input_projection/kernel"] + w["candidate/input_projection/bias"]
    h_part = h @ w["candidate/hidden_projection/kernel"] + w["candidate/hidden_projection/bias"]
    cand = act(x_part + r * h_part)
    new_h = (1.0 - u) * cand + u * h
    return new_h, new_h


def run_sequence(
    step: Callable[[np.ndarray, Any], tuple[np.ndarray, Any]],
    inputs: np.ndarray,
    state: Any,
    sequence_length: np.ndarray | None = None,
) -> tuple[np.ndarray, Any]:
    """TF1's masking, one example at a time: for t >= length[b] the output is zero and the
    state is not updated. `state` is a tuple of [batch, n] arrays (or one array)."""
    batch, time, _ = inputs.shape
    lengths = np.full(batch, time) if sequence_length is None else np.asarray(sequence_length)
    outputs = []
    single = isinstance(state, np.ndarray)
    states = [state] if single else list(state)
    for t in range(time):
        out, new = step(inputs[:, t], states[0] if single else tuple(states))
        new = [new] if single else list(new)
        out = out.copy()
        for b in range(batch):
            if t >= lengths[b]:
                out[b] = 0.0
                for k in range(len(new)):
                    new[k] = new[k].copy()
                    new[k][b] = states[k][b]
        states = new
        outputs.append(out)
    return np.stack(outputs, axis=1), (states[0] if single else tuple(states))
