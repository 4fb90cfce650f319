"""PyTorch's and Keras 3's recurrent layers in plain NumPy (float64), written from their
documented equations, not from rnnkit's code; weights in each framework's own layout.

PyTorch (torch.nn.LSTM / GRU / RNN docs), rows of weight_ih / weight_hh in gate order:
    LSTM i, f, g, o:  gates = x W_ih^T + b_ih + h W_hh^T + b_hh
                      c' = σ(f) c + σ(i) tanh(g);  h' = σ(o) tanh(c');  h' = h' W_hr^T (proj_size)
    GRU r, z, n:      r = σ(x W_ir^T + b_ir + h W_hr^T + b_hr),  z likewise
                      n = tanh(x W_in^T + b_in + r (h W_hn^T + b_hn));  h' = (1 - z) n + z h
    RNN:              h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh)
Keras 3 (keras.layers.LSTM / GRU / SimpleRNN), columns of kernel / recurrent_kernel:
    LSTM i, f, c, o:  z = x K + h R + b;  c' = σ(f) c + σ(i) tanh(c̃);  h' = σ(o) tanh(c')
    GRU z, r, h:      reset_after=False: h̃ = tanh(x K_h + (r h) R_h + b_h)
                      reset_after=True:  h̃ = tanh(x K_h + b0_h + r (h R_h + b1_h)), bias [2, 3H]
                      h' = z h + (1 - z) h̃
    SimpleRNN:        h' = tanh(x K + h R + b)
Flax (flax.linen / flax.nnx LSTMCell, GRUCell, SimpleCell docs), kernels [in, out]:
    LSTM i, f, g, o:  i = σ(x W_ii + h W_hi + b_hi), f, g (tanh), o likewise
                      c' = f c + i g;  h' = o tanh(c')          (no forget bias added)
    GRU r, z, n:      r = σ(x W_ir + b_ir + h W_hr),  z likewise
                      n = tanh(x W_in + b_in + r (h W_hn + b_hn));  h' = (1 - z) n + z h
    SimpleCell:       h' = tanh(x W_i + b_i + h W_h)
Each layer function takes x [batch, time, depth] and returns (outputs, final state).
"""

from __future__ import annotations

import numpy as np


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _f64(p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, np.float64) for k, v in p.items()}


def torch_lstm(p: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """One nn.LSTM layer; state (h, c) as PyTorch returns it."""
    p = _f64(p)
    units = p["weight_ih"].shape[0] // 4
    out_size = p["weight_hr"].shape[0] if "weight_hr" in p else units
    batch = x.shape[0]
    h, c = np.zeros((batch, out_size)), np.zeros((batch, units))
    b = p.get("bias_ih", 0.0) + p.get("bias_hh", 0.0)
    outputs = []
    for t in range(x.shape[1]):
        gates = x[:, t] @ p["weight_ih"].T + h @ p["weight_hh"].T + b
        i, f, g, o = (gates[:, k * units : (k + 1) * units] for k in range(4))
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        if "weight_hr" in p:
            h = h @ p["weight_hr"].T
        outputs.append(h)
    return np.stack(outputs, axis=1), (h, c)


def torch_gru(p: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = _f64(p)
    units = p["weight_hh"].shape[1]
    zeros = np.zeros(3 * units)
    b_ih, b_hh = p.get("bias_ih", zeros), p.get("bias_hh", zeros)
    h = np.zeros((x.shape[0], units))
    outputs = []
    for t in range(x.shape[1]):
        gi = x[:, t] @ p["weight_ih"].T + b_ih
        gh = h @ p["weight_hh"].T + b_hh
        r = sigmoid(gi[:, :units] + gh[:, :units])
        z = sigmoid(gi[:, units : 2 * units] + gh[:, units : 2 * units])
        n = np.tanh(gi[:, 2 * units :] + r * gh[:, 2 * units :])
        h = (1.0 - z) * n + z * h
        outputs.append(h)
    return np.stack(outputs, axis=1), h


def torch_rnn(p: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = _f64(p)
    units = p["weight_hh"].shape[0]
    b = p.get("bias_ih", 0.0) + p.get("bias_hh", 0.0)
    h = np.zeros((x.shape[0], units))
    outputs = []
    for t in range(x.shape[1]):
        h = np.tanh(x[:, t] @ p["weight_ih"].T + h @ p["weight_hh"].T + b)
        outputs.append(h)
    return np.stack(outputs, axis=1), h


def keras_lstm(w: list[np.ndarray], x: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """One keras LSTM layer; state [h, c] as Keras returns it."""
    kernel, recurrent = (np.asarray(a, np.float64) for a in w[:2])
    bias = np.asarray(w[2], np.float64) if len(w) > 2 else 0.0
    units = recurrent.shape[0]
    h, c = np.zeros((x.shape[0], units)), np.zeros((x.shape[0], units))
    outputs = []
    for t in range(x.shape[1]):
        z = x[:, t] @ kernel + h @ recurrent + bias
        i, f, cc, o = (z[:, k * units : (k + 1) * units] for k in range(4))
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(cc)
        h = sigmoid(o) * np.tanh(c)
        outputs.append(h)
    return np.stack(outputs, axis=1), (h, c)


def keras_gru(w: list[np.ndarray], x: np.ndarray, reset_after: bool) -> tuple[np.ndarray, np.ndarray]:
    kernel, recurrent = (np.asarray(a, np.float64) for a in w[:2])
    units = recurrent.shape[0]
    default = np.zeros((2, 3 * units)) if reset_after else np.zeros(3 * units)
    bias = np.asarray(w[2], np.float64) if len(w) > 2 else default
    b_in, b_rec = (bias[0], bias[1]) if reset_after else (bias, np.zeros(3 * units))
    h = np.zeros((x.shape[0], units))
    outputs = []
    for t in range(x.shape[1]):
        xk = x[:, t] @ kernel + b_in
        hr = h @ recurrent + b_rec
        z = sigmoid(xk[:, :units] + hr[:, :units])
        r = sigmoid(xk[:, units : 2 * units] + hr[:, units : 2 * units])
        if reset_after:
            hh = np.tanh(xk[:, 2 * units :] + r * hr[:, 2 * units :])
        else:
            hh = np.tanh(xk[:, 2 * units :] + (r * h) @ recurrent[:, 2 * units :])
        h = z * h + (1.0 - z) * hh
        outputs.append(h)
    return np.stack(outputs, axis=1), h


def keras_simple_rnn(w: list[np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    kernel, recurrent = (np.asarray(a, np.float64) for a in w[:2])
    bias = np.asarray(w[2], np.float64) if len(w) > 2 else 0.0
    h = np.zeros((x.shape[0], recurrent.shape[0]))
    outputs = []
    for t in range(x.shape[1]):
        h = np.tanh(x[:, t] @ kernel + h @ recurrent + bias)
        outputs.append(h)
    return np.stack(outputs, axis=1), h


def _flax_dense(node: dict, name: str) -> tuple[np.ndarray, np.ndarray | float]:
    d = node[name]
    return np.asarray(d["kernel"], np.float64), np.asarray(d["bias"], np.float64) if "bias" in d else 0.0


def flax_cell(cell: dict, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One Flax cell over the sequence, from its parameter tree (Linen's or NNX's names; NNX's
    fused dense_i / dense_h split into the gates they hold); returns (outputs, final h)."""
    keys = set(cell)
    if keys == {"dense_i", "dense_h"}:
        wi, bi = _flax_dense(cell, "dense_i")
        wh, bh = _flax_dense(cell, "dense_h")
        units = wh.shape[0]
        n = wh.shape[1] // units
        wis, whs = np.split(wi, n, axis=1), np.split(wh, n, axis=1)
        bis = np.split(bi, n) if n > 1 and np.ndim(bi) else [bi] * n
        bhs = np.split(bh, n) if n > 1 and np.ndim(bh) else [bh] * n
        names = {4: ("i", "f", "g", "o"), 3: ("r", "z", "n"), 1: ("",)}[n]
        ins = {f"i{g}": {"kernel": w, "bias": b} for g, w, b in zip(names, wis, bis, strict=True)}
        hids = {f"h{g}": {"kernel": w, "bias": b} for g, w, b in zip(names, whs, bhs, strict=True)}
        cell = {**ins, **hids}
        keys = set(cell)
    units = next(iter(cell.values()))["kernel"].shape[1]
    h, c = np.zeros((x.shape[0], units)), np.zeros((x.shape[0], units))
    outputs = []
    for t in range(x.shape[1]):
        xt = x[:, t]

        def pre(gate: str, xt: np.ndarray = xt, h: np.ndarray = h) -> np.ndarray:
            wi, bi = _flax_dense(cell, "i" + gate if "i" + gate in cell else "if_")
            wh, bh = _flax_dense(cell, "h" + gate)
            return xt @ wi + bi + h @ wh + bh

        if "ii" in keys:  # LSTM
            i, f, g, o = sigmoid(pre("i")), sigmoid(pre("f")), np.tanh(pre("g")), sigmoid(pre("o"))
            c = f * c + i * g
            h = o * np.tanh(c)
        elif "ir" in keys:  # GRU
            r, z = sigmoid(pre("r")), sigmoid(pre("z"))
            win, bin_ = _flax_dense(cell, "in")
            whn, bhn = _flax_dense(cell, "hn")
            n = np.tanh(xt @ win + bin_ + r * (h @ whn + bhn))
            h = (1.0 - z) * n + z * h
        else:  # SimpleCell
            h = np.tanh(pre(""))
        outputs.append(h)
    return np.stack(outputs, axis=1), h
