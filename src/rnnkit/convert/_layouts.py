"""One recurrent layer's weights between rnnkit's (TF1's) layout and PyTorch's or Keras 3's.

Pure NumPy on one layer at a time; no framework is imported. A layer's rnnkit weights come as
the dict of TF1 names below the cell's own scope (`kernel`, `bias`, `gates/kernel`, ...); the
peers' as their own names (`weight_ih`, ...) or Keras's `get_weights()` list.

Layouts (H units, D input depth, P projection size; reference §2.9):

    rnnkit / TF1 LSTM   kernel [D+H, 4H] (x rows, then h rows), bias [4H], gates i, j, f, o,
                        forget_bias added at run time (not stored)
    PyTorch nn.LSTM     weight_ih [4H, D], weight_hh [4H, H], bias_ih + bias_hh, gates i, f, g, o;
                        with proj_size: weight_hh [4H, P], weight_hr [P, H]
    Keras 3 LSTM        kernel [D, 4H], recurrent_kernel [H, 4H], bias [4H], gates i, f, c, o
    rnnkit GRU          gates/kernel [D+H, 2H] (r, u), candidate kernels and biases
    PyTorch nn.GRU      weight_ih [3H, D], weight_hh [3H, H] (r, z, n), reset after the matmul
    Keras 3 GRU         kernel [D, 3H], recurrent_kernel [H, 3H] (z, r, h); bias [3H]
                        (reset_after=False) or [2, 3H] (input and recurrent, reset_after=True)

Exactness. Every map below only moves, transposes and concatenates arrays, except where a
peer stores a sum that rnnkit stores as one number:
- PyTorch's two biases fold into one: `bias = bias_ih + (bias_hh - forget_bias)`. The other way
  the whole bias goes to `bias_ih` and `bias_hh` holds only the forget bias (0 elsewhere), so
  rnnkit -> PyTorch -> rnnkit gives back every bit.
- Keras's single LSTM bias holds rnnkit's bias plus the forget bias in the f slice, so a
  rnnkit cell with forget_bias=F comes back bit for bit only as forget_bias=F with the same
  F; (b + F) - F is b only to rounding when F != 0, which is why the Keras LSTM import
  defaults to forget_bias=0.0 (the folded bias kept as it is).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rnnkit.errors import ConfigError

# Block k of the target takes block ORDER[k] of the source. TF1 i, j, f, o <-> PyTorch / Keras
# i, f, g, o: swap the middle two (the permutation is its own inverse).
_LSTM_SWAP = (0, 2, 1, 3)
_FORGET_BLOCK = 1  # f's block in PyTorch's and Keras's order (i, f, g, o)


def _blocks(a: np.ndarray, n: int, axis: int) -> list[np.ndarray]:
    return np.split(a, n, axis=axis)


def _reorder(a: np.ndarray, order: Sequence[int], axis: int) -> np.ndarray:
    blocks = _blocks(a, len(order), axis)
    return np.concatenate([blocks[k] for k in order], axis=axis)


def _forget_onehot(units: int, forget_bias: float, dtype: np.dtype) -> np.ndarray:
    """[4H] zeros with forget_bias in the f block (PyTorch / Keras gate order)."""
    out = np.zeros(4 * units, dtype)
    out[_FORGET_BLOCK * units : (_FORGET_BLOCK + 1) * units] = forget_bias
    return out


def _c(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a)


def _split_rows(kernel: np.ndarray, input_size: int) -> tuple[np.ndarray, np.ndarray]:
    # TF1 kernels multiply [x, h]: the first input_size rows act on x, the rest on h.
    return kernel[:input_size], kernel[input_size:]


# --- PyTorch ----------------------------------------------------------------------------------


def lstm_to_torch(w: dict[str, np.ndarray], input_size: int, forget_bias: float) -> dict[str, np.ndarray]:
    """TF1 LSTM (kernel, bias[, projection/kernel]) -> nn.LSTM layer (weight_ih, weight_hh,
    bias_ih, bias_hh[, weight_hr])."""
    wx, wh = _split_rows(w["kernel"], input_size)
    units = w["bias"].shape[0] // 4
    out = {
        "weight_ih": _c(_reorder(wx, _LSTM_SWAP, axis=1).T),
        "weight_hh": _c(_reorder(wh, _LSTM_SWAP, axis=1).T),
        "bias_ih": _reorder(w["bias"], _LSTM_SWAP, axis=0),
        "bias_hh": _forget_onehot(units, forget_bias, w["bias"].dtype),
    }
    if "projection/kernel" in w:
        out["weight_hr"] = _c(w["projection/kernel"].T)
    return out


def lstm_from_torch(p: dict[str, np.ndarray], forget_bias: float) -> dict[str, np.ndarray]:
    """nn.LSTM layer -> TF1 LSTM weights for a cell that adds `forget_bias` at run time."""
    weight_ih, weight_hh = p["weight_ih"], p["weight_hh"]
    units = weight_ih.shape[0] // 4
    dtype = weight_ih.dtype
    bias_ih = p.get("bias_ih", np.zeros(4 * units, dtype))
    bias_hh = p.get("bias_hh", np.zeros(4 * units, dtype))
    # bias_hh - forget_bias first: for weights that came from rnnkit that difference is exactly 0.
    folded = bias_ih + (bias_hh - _forget_onehot(units, forget_bias, dtype))
    out = {
        "kernel": _c(np.concatenate([weight_ih.T, weight_hh.T], axis=0)),
        "bias": folded,
    }
    out["kernel"] = _c(_reorder(out["kernel"], _LSTM_SWAP, axis=1))
    out["bias"] = _reorder(out["bias"], _LSTM_SWAP, axis=0)
    if "weight_hr" in p:
        out["projection/kernel"] = _c(p["weight_hr"].T)
    return out


def gru_to_torch(w: dict[str, np.ndarray], input_size: int) -> dict[str, np.ndarray]:
    """rnnkit GRU(reset_after=True) -> nn.GRU layer. Rows r, z, n."""
    gx, gh = _split_rows(w["gates/kernel"], input_size)
    units = w["candidate/input_projection/bias"].shape[0]
    return {
        "weight_ih": _c(np.concatenate([gx.T, w["candidate/input_projection/kernel"].T], axis=0)),
        "weight_hh": _c(np.concatenate([gh.T, w["candidate/hidden_projection/kernel"].T], axis=0)),
        "bias_ih": np.concatenate([w["gates/bias"], w["candidate/input_projection/bias"]]),
        "bias_hh": np.concatenate([np.zeros(2 * units, w["gates/bias"].dtype), w["candidate/hidden_projection/bias"]]),
    }


def gru_from_torch(p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """nn.GRU layer -> rnnkit GRU(reset_after=True) weights (the r and z biases fold into one)."""
    weight_ih, weight_hh = p["weight_ih"], p["weight_hh"]
    units = weight_ih.shape[0] // 3
    zeros = np.zeros(3 * units, weight_ih.dtype)
    bias_ih, bias_hh = p.get("bias_ih", zeros), p.get("bias_hh", zeros)
    two = 2 * units
    return {
        "gates/kernel": _c(np.concatenate([weight_ih[:two].T, weight_hh[:two].T], axis=0)),
        "gates/bias": bias_ih[:two] + bias_hh[:two],
        "candidate/input_projection/kernel": _c(weight_ih[two:].T),
        "candidate/input_projection/bias": _c(bias_ih[two:]),
        "candidate/hidden_projection/kernel": _c(weight_hh[two:].T),
        "candidate/hidden_projection/bias": _c(bias_hh[two:]),
    }


def rnn_to_torch(w: dict[str, np.ndarray], input_size: int) -> dict[str, np.ndarray]:
    """BasicRNNCell -> nn.RNN layer (tanh)."""
    wx, wh = _split_rows(w["kernel"], input_size)
    return {
        "weight_ih": _c(wx.T),
        "weight_hh": _c(wh.T),
        "bias_ih": w["bias"],
        "bias_hh": np.zeros_like(w["bias"]),
    }


def rnn_from_torch(p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    weight_ih, weight_hh = p["weight_ih"], p["weight_hh"]
    zeros = np.zeros(weight_ih.shape[0], weight_ih.dtype)
    return {
        "kernel": _c(np.concatenate([weight_ih.T, weight_hh.T], axis=0)),
        "bias": p.get("bias_ih", zeros) + p.get("bias_hh", zeros),
    }


# --- Keras 3 ----------------------------------------------------------------------------------


def lstm_to_keras(w: dict[str, np.ndarray], input_size: int, forget_bias: float) -> list[np.ndarray]:
    """TF1 LSTM -> keras.layers.LSTM weights [kernel, recurrent_kernel, bias] (gates i, f, c, o)."""
    wx, wh = _split_rows(w["kernel"], input_size)
    units = w["bias"].shape[0] // 4
    bias = _reorder(w["bias"], _LSTM_SWAP, axis=0) + _forget_onehot(units, forget_bias, w["bias"].dtype)
    return [_c(_reorder(wx, _LSTM_SWAP, axis=1)), _c(_reorder(wh, _LSTM_SWAP, axis=1)), bias]


def lstm_from_keras(weights: Sequence[np.ndarray], forget_bias: float) -> dict[str, np.ndarray]:
    kernel, recurrent = weights[0], weights[1]
    units = recurrent.shape[0]
    bias = weights[2] if len(weights) > 2 else np.zeros(4 * units, kernel.dtype)
    return {
        "kernel": _c(_reorder(np.concatenate([kernel, recurrent], axis=0), _LSTM_SWAP, axis=1)),
        "bias": _reorder(bias - _forget_onehot(units, forget_bias, kernel.dtype), _LSTM_SWAP, axis=0),
    }


def _ru_to_zr(a: np.ndarray) -> np.ndarray:
    r, u = _blocks(a, 2, axis=-1)
    return np.concatenate([u, r], axis=-1)


def _zr_to_ru(a: np.ndarray) -> np.ndarray:
    z, r = _blocks(a, 2, axis=-1)
    return np.concatenate([r, z], axis=-1)


def gru_to_keras(w: dict[str, np.ndarray], input_size: int, reset_after: bool) -> list[np.ndarray]:
    """rnnkit GRU -> keras.layers.GRU weights (gates z, r, h): TF1's GRUCell for
    reset_after=False, the reset-after cell for reset_after=True (bias [2, 3H])."""
    gx, gh = _split_rows(w["gates/kernel"], input_size)
    if not reset_after:
        cx, ch = _split_rows(w["candidate/kernel"], input_size)
        return [
            _c(np.concatenate([_ru_to_zr(gx), cx], axis=1)),
            _c(np.concatenate([_ru_to_zr(gh), ch], axis=1)),
            np.concatenate([_ru_to_zr(w["gates/bias"]), w["candidate/bias"]]),
        ]
    gates_bias = w["gates/bias"]
    input_bias = np.concatenate([_ru_to_zr(gates_bias), w["candidate/input_projection/bias"]])
    recurrent_bias = np.concatenate([np.zeros_like(gates_bias), w["candidate/hidden_projection/bias"]])
    return [
        _c(np.concatenate([_ru_to_zr(gx), w["candidate/input_projection/kernel"]], axis=1)),
        _c(np.concatenate([_ru_to_zr(gh), w["candidate/hidden_projection/kernel"]], axis=1)),
        np.stack([input_bias, recurrent_bias]),
    ]


def gru_from_keras(weights: Sequence[np.ndarray], reset_after: bool) -> dict[str, np.ndarray]:
    kernel, recurrent = weights[0], weights[1]
    units = recurrent.shape[0]
    two = 2 * units
    no_bias = np.zeros((2, 3 * units) if reset_after else (3 * units,), kernel.dtype)
    bias = weights[2] if len(weights) > 2 else no_bias
    if not reset_after:
        return {
            "gates/kernel": _c(np.concatenate([_zr_to_ru(kernel[:, :two]), _zr_to_ru(recurrent[:, :two])], axis=0)),
            "gates/bias": _zr_to_ru(bias[:two]),
            "candidate/kernel": _c(np.concatenate([kernel[:, two:], recurrent[:, two:]], axis=0)),
            "candidate/bias": _c(bias[two:]),
        }
    input_bias, recurrent_bias = bias[0], bias[1]
    return {
        "gates/kernel": _c(np.concatenate([_zr_to_ru(kernel[:, :two]), _zr_to_ru(recurrent[:, :two])], axis=0)),
        "gates/bias": _zr_to_ru(input_bias[:two] + recurrent_bias[:two]),
        "candidate/input_projection/kernel": _c(kernel[:, two:]),
        "candidate/input_projection/bias": _c(input_bias[two:]),
        "candidate/hidden_projection/kernel": _c(recurrent[:, two:]),
        "candidate/hidden_projection/bias": _c(recurrent_bias[two:]),
    }


def rnn_to_keras(w: dict[str, np.ndarray], input_size: int) -> list[np.ndarray]:
    """BasicRNNCell -> keras.layers.SimpleRNN weights [kernel, recurrent_kernel, bias]."""
    wx, wh = _split_rows(w["kernel"], input_size)
    return [_c(wx), _c(wh), w["bias"]]


def rnn_from_keras(weights: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    kernel, recurrent = weights[0], weights[1]
    bias = weights[2] if len(weights) > 2 else np.zeros(recurrent.shape[0], kernel.dtype)
    return {"kernel": _c(np.concatenate([kernel, recurrent], axis=0)), "bias": bias}


def check_same_dtype(arrays: dict[str, np.ndarray], where: str) -> np.dtype:
    dtypes = {np.dtype(a.dtype) for a in arrays.values()}
    if len(dtypes) != 1:
        raise ConfigError(f"{where}: weights must share one dtype; got {sorted(str(d) for d in dtypes)}")
    (dtype,) = dtypes
    if dtype.kind != "f":
        raise ConfigError(f"{where}: weights must be floating point; got {dtype}")
    return dtype
