"""The peer rows of `rnnkit bench`: the seed's model (see `bench_rows.py`) in PyTorch,
TensorFlow 1 (tf.compat.v1 graph mode), Keras 3 on JAX and Flax NNX.

Every framework is imported inside a row's `build`/`versions`, never here: rnnkit's default
install has none of them, and the harness runs each row in its own process, so process-wide
settings a framework needs (TF1's graph mode, Keras's backend) are made there too.

Each runner also has `weights()` (its trainable parameters as NumPy arrays) and `loss()` (the
loss on its fixed batch at the current parameters, without an update), untimed, for tests and
sanity checks.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from rnnkit.workflows.bench_rows import (
    GRU_UNITS,
    LEARNING_RATE,
    LSTM_UNITS,
    NUM_CLASSES,
    UNROLLED_MAX_STEPS,
    Row,
    Workload,
)

# The rows that unroll the loop over time (tf1-static, torch-tf1gru-compile) stop at
# UNROLLED_MAX_STEPS, like rnnkit-static. Their build time grows with the steps; measured for
# training at batch 128 on a 2-core CPU (TF 2.21, torch 2.13), build plus first step:
#   tf1-static:            10 s at 56 steps, 20 s at 112;
#   torch-tf1gru-compile:  about 100 s at 28 and 56 steps (cold compile cache), 180 s at 112.
# At 784 steps the compile row would need tens of minutes per workload.


# --- PyTorch ----------------------------------------------------------------------------------


def _torch_versions() -> dict[str, str]:
    import torch

    return {"torch": torch.__version__}


def _torch_fp32_skip(w: Workload) -> str | None:
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "TF32 is a GPU format: on CPU this is torch-eager's program"
    return None


def _torch_model(features: int, tf1_gru: bool) -> Any:
    """nn.LSTM(features, 128) then a GRU of 256 units, and a dense head on the last step's output.

    The GRU is nn.GRU (the cuDNN formula, reset applied after the recurrent matmul), or with
    `tf1_gru` TensorFlow 1's GRUCell as a Python loop over time (reset applied before it)."""
    import torch
    from torch import nn

    class TF1GRU(nn.Module):
        """TF1's GRUCell over [batch, time, depth], in TF1's variable layout: gates/kernel
        [depth + units, 2 units] (r then u) with bias init 1, candidate/kernel [depth + units,
        units] with bias init 0; kernels glorot-uniform, TF1's default."""

        def __init__(self, depth: int, units: int):
            super().__init__()
            self.units = units
            self.gates_kernel = nn.Parameter(nn.init.xavier_uniform_(torch.empty(depth + units, 2 * units)))
            self.gates_bias = nn.Parameter(torch.ones(2 * units))
            self.candidate_kernel = nn.Parameter(nn.init.xavier_uniform_(torch.empty(depth + units, units)))
            self.candidate_bias = nn.Parameter(torch.zeros(units))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            """The final state h [batch, units]."""
            h = x.new_zeros(x.shape[0], self.units)
            for t in range(x.shape[1]):
                x_t = x[:, t]
                gates = torch.sigmoid(torch.cat([x_t, h], 1) @ self.gates_kernel + self.gates_bias)
                r, u = gates.chunk(2, 1)
                c = torch.tanh(torch.cat([x_t, r * h], 1) @ self.candidate_kernel + self.candidate_bias)
                h = u * h + (1 - u) * c
            return h

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(features, LSTM_UNITS, batch_first=True)
            self.gru = TF1GRU(LSTM_UNITS, GRU_UNITS) if tf1_gru else nn.GRU(LSTM_UNITS, GRU_UNITS, batch_first=True)
            self.head = nn.Linear(GRU_UNITS, NUM_CLASSES)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seq, _ = self.lstm(x)
            last = self.gru(seq) if tf1_gru else self.gru(seq)[0][:, -1]
            return self.head(last)

    return Model()


class _TorchRunner:
    def __init__(self, w: Workload, seed: int, tf1_gru: bool, compiled: bool = False, tf32: bool | None = None):
        import torch
        import torch.nn.functional as F

        if tf32 is not None:  # else PyTorch's defaults (cuDNN: TF32 allowed; cuBLAS matmuls: not)
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.manual_seed(seed)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = _torch_model(w.features, tf1_gru).to(self.device)
        # torch.compile wraps the module and shares its parameters: the optimizer sees the same tensors.
        self.forward = torch.compile(self.model) if compiled else self.model
        self.compiled, self.first = compiled, True
        x, y = w.batch_arrays(seed)
        self.x = torch.from_numpy(x).to(self.device)
        self.y = torch.from_numpy(y).long().to(self.device)  # cross_entropy's class indices are int64
        self.task = w.task
        self.cross_entropy, self.inference_mode = F.cross_entropy, torch.inference_mode
        if w.task == "train":
            self.optimizer = torch.optim.Adam(self.model.parameters(), lr=LEARNING_RATE)
        # CPU kernels have finished when they return; CUDA ones are only queued.
        self.sync = torch.cuda.synchronize if self.device.type == "cuda" else lambda: None
        if self.device.type == "cuda":  # recorded with the figures: may cuDNN and cuBLAS use TF32?
            self.math_mode = (
                f"cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}, "
                f"cuda.matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}"
            )

    def _step(self) -> None:
        if self.task == "train":
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.cross_entropy(self.forward(self.x), self.y)
            loss.backward()
            self.optimizer.step()
        else:
            with self.inference_mode():
                self.forward(self.x)
        self.sync()

    def step(self) -> None:
        if not (self.compiled and self.first):
            self._step()
            return
        # torch.compile compiles lazily, at the first call; say so when that is what failed.
        try:
            self._step()
        except Exception as err:
            detail = (str(err).strip().splitlines() or [""])[0]
            raise RuntimeError(
                f"torch.compile failed on {self.device.type} (it needs a C++ compiler on CPU, Triton on GPU): "
                f"{type(err).__name__}: {detail}"
            ) from err
        self.first = False

    def weights(self) -> list[np.ndarray]:
        # Copies: .numpy() shares the parameter's memory, which Adam updates in place.
        return [p.detach().cpu().numpy().copy() for p in self.model.parameters()]

    def loss(self) -> float:
        import torch

        with torch.no_grad():
            return float(self.cross_entropy(self.model(self.x), self.y))


def _torch_compile_skip(w: Workload) -> str | None:
    if w.steps > UNROLLED_MAX_STEPS:
        return (
            f"compiled up to {UNROLLED_MAX_STEPS} steps: torch.compile unrolls the loop over time, and compiling "
            f"{w.steps} steps would take tens of minutes (180 s at 112 steps)"
        )
    return None


# --- TensorFlow 1 (tf.compat.v1 graph mode) ---------------------------------------------------


def _import_tf() -> Any:
    # TF 2.16+ serves tf.compat.v1's RNN cells and layers from tf-keras only when this is set
    # before tensorflow is first imported; with Keras 3 they are missing.
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf

    return tf


def _tf1_versions() -> dict[str, str]:
    tf = _import_tf()
    import tf_keras

    return {"tensorflow": tf.__version__, "tf_keras": tf_keras.__version__}


def _tf1_static_skip(w: Workload) -> str | None:
    if w.steps > UNROLLED_MAX_STEPS:
        return (
            f"static_rnn graphs are built up to {UNROLLED_MAX_STEPS} steps: the graph holds both cells (and their "
            f"gradients) once per step, and a {w.steps}-step one would take minutes to build (20 s at 112 steps)"
        )
    return None


class _TF1Runner:
    def __init__(self, w: Workload, seed: int, static: bool):
        tf = _import_tf()
        v1 = tf.compat.v1
        if not hasattr(v1.nn.rnn_cell, "MultiRNNCell"):  # served by tf-keras only; Keras 3 has no v1 cells
            raise RuntimeError(
                "tf.compat.v1's RNN cells need tf-keras: TF_USE_LEGACY_KERAS=1 before tensorflow is first imported"
            )
        v1.disable_eager_execution()
        graph = tf.Graph()
        with graph.as_default():
            v1.set_random_seed(seed)
            x = v1.placeholder(tf.float32, [w.batch, w.steps, w.features])
            y = v1.placeholder(tf.int32, [w.batch])
            cell = v1.nn.rnn_cell.MultiRNNCell([v1.nn.rnn_cell.LSTMCell(LSTM_UNITS), v1.nn.rnn_cell.GRUCell(GRU_UNITS)])
            if static:
                outputs, _ = v1.nn.static_rnn(cell, tf.unstack(x, w.steps, 1), dtype=tf.float32)
                last = outputs[-1]
            else:
                outputs, _ = v1.nn.dynamic_rnn(cell, x, dtype=tf.float32)
                last = outputs[:, -1]
            logits = v1.layers.dense(last, NUM_CLASSES)
            self.loss_op = v1.losses.sparse_softmax_cross_entropy(y, logits)
            # Only a training graph gets the gradients and Adam's update: it is what build time measures.
            self.fetch = v1.train.AdamOptimizer(LEARNING_RATE).minimize(self.loss_op) if w.task == "train" else logits
            self.variables = v1.trainable_variables()
            init = v1.global_variables_initializer()
        self.sess = v1.Session(graph=graph)
        self.sess.run(init)
        x_val, y_val = w.batch_arrays(seed)
        self.feed = {x: x_val, y: y_val}

    def step(self) -> None:
        self.sess.run(self.fetch, self.feed)

    def weights(self) -> list[np.ndarray]:
        return list(self.sess.run(self.variables))

    def loss(self) -> float:
        return float(self.sess.run(self.loss_op, self.feed))


# --- Keras 3 on JAX ---------------------------------------------------------------------------


def _import_keras_jax() -> Any:
    # Keras reads its backend once, when it is first imported.
    os.environ["KERAS_BACKEND"] = "jax"
    # Keras imports tensorflow where it is installed (for its data adapters); this variable would
    # make that tensorflow serve tf.keras from tf-keras, a second Keras beside Keras 3.
    os.environ.pop("TF_USE_LEGACY_KERAS", None)
    import keras

    if keras.backend.backend() != "jax":
        raise RuntimeError(
            f"keras was already imported in this process with the {keras.backend.backend()!r} backend; "
            "keras-jax needs a fresh process (KERAS_BACKEND=jax before the first import of keras)"
        )
    return keras


def _keras_versions() -> dict[str, str]:
    keras = _import_keras_jax()
    import jax

    return {"keras": keras.__version__, "jax": jax.__version__}


class _KerasRunner:
    def __init__(self, w: Workload, seed: int):
        keras = _import_keras_jax()
        keras.utils.set_random_seed(seed)
        self.model = keras.Sequential(
            [
                keras.Input((w.steps, w.features)),
                keras.layers.LSTM(LSTM_UNITS, return_sequences=True),
                keras.layers.GRU(GRU_UNITS),
                keras.layers.Dense(NUM_CLASSES),
            ]
        )
        self.model.compile(
            optimizer=keras.optimizers.Adam(LEARNING_RATE),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        self.x, self.y = w.batch_arrays(seed)
        self.task = w.task

    def step(self) -> None:
        # Both return NumPy values, so they return once the step is computed.
        if self.task == "train":
            self.model.train_on_batch(self.x, self.y)
        else:
            self.model.predict_on_batch(self.x)

    def weights(self) -> list[np.ndarray]:
        return [np.array(v) for v in self.model.get_weights()]

    def loss(self) -> float:
        return float(self.model.test_on_batch(self.x, self.y))


# --- Flax NNX ---------------------------------------------------------------------------------


def _flax_versions() -> dict[str, str]:
    import flax
    import jax

    return {"flax": flax.__version__, "jax": jax.__version__}


class _FlaxRunner:
    def __init__(self, w: Workload, seed: int):
        import jax
        import optax
        from flax import nnx

        class Model(nnx.Module):
            def __init__(self, rngs: nnx.Rngs):
                self.lstm = nnx.RNN(nnx.LSTMCell(w.features, LSTM_UNITS, rngs=rngs))
                self.gru = nnx.RNN(nnx.GRUCell(LSTM_UNITS, GRU_UNITS, rngs=rngs))
                self.head = nnx.Linear(GRU_UNITS, NUM_CLASSES, rngs=rngs)

            def __call__(self, x: jax.Array) -> jax.Array:
                return self.head(self.gru(self.lstm(x))[:, -1])

        def loss_fn(model: Model, x: jax.Array, y: jax.Array) -> jax.Array:
            return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

        @nnx.jit
        def train_step(model: Model, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array) -> jax.Array:
            loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
            optimizer.update(model, grads)
            return loss

        self.model = Model(nnx.Rngs(seed))
        x, y = w.batch_arrays(seed)
        self.x, self.y = jax.device_put(x), jax.device_put(y)
        self.task = w.task
        self.train_step = train_step
        self.predict = nnx.jit(lambda model, x: model(x))
        self.eval_loss = nnx.jit(loss_fn)
        if w.task == "train":
            self.optimizer = nnx.Optimizer(self.model, optax.adam(LEARNING_RATE), wrt=nnx.Param)

    def step(self) -> None:
        import jax

        if self.task == "train":
            jax.block_until_ready(self.train_step(self.model, self.optimizer, self.x, self.y))
        else:
            jax.block_until_ready(self.predict(self.model, self.x))

    def weights(self) -> list[np.ndarray]:
        import jax
        from flax import nnx

        return [np.array(leaf) for leaf in jax.tree.leaves(nnx.state(self.model, nnx.Param))]

    def loss(self) -> float:
        return float(self.eval_loss(self.model, self.x, self.y))


# --- the rows ---------------------------------------------------------------------------------

PEER_ROWS: tuple[Row, ...] = (
    Row(
        name="torch-eager",
        label="PyTorch eager, nn.LSTM + nn.GRU (oneDNN/cuDNN; reset-after GRU)",
        requires=("torch",),
        build=lambda w, seed: _TorchRunner(w, seed, tf1_gru=False),
        versions=_torch_versions,
        note=(
            "nn.GRU is the cuDNN formula (reset applied after the recurrent matmul), not TF1's GRUCell; "
            "on CPU nn.LSTM runs oneDNN's fused kernel and nn.GRU ATen's per-step one, on GPU both cuDNN"
        ),
    ),
    Row(
        name="torch-eager-fp32",
        label="PyTorch eager, nn.LSTM + nn.GRU, TF32 off (cuDNN in full float32)",
        requires=("torch",),
        build=lambda w, seed: _TorchRunner(w, seed, tf1_gru=False, tf32=False),
        versions=_torch_versions,
        skip=_torch_fp32_skip,
        note=(
            "torch-eager with torch.backends.cudnn.allow_tf32 and cuda.matmul.allow_tf32 set to False: cuDNN's "
            "RNNs multiply in full float32, like rnnkit's default precision"
        ),
    ),
    Row(
        name="torch-tf1gru-loop",
        label="PyTorch eager, nn.LSTM + TF1 GRUCell as a Python loop",
        requires=("torch",),
        build=lambda w, seed: _TorchRunner(w, seed, tf1_gru=True),
        versions=_torch_versions,
        note="TF1's GRU formula (reset before the candidate matmul) as one op per gate per step in Python",
    ),
    Row(
        name="torch-tf1gru-compile",
        label="PyTorch torch.compile, nn.LSTM + TF1 GRUCell loop",
        requires=("torch",),
        build=lambda w, seed: _TorchRunner(w, seed, tf1_gru=True, compiled=True),
        versions=_torch_versions,
        skip=_torch_compile_skip,
        note=(
            "torch.compile unrolls the Python loop over time, one GRU cell per step in the graph and its backward, "
            "so compiling (in the first step) grows with the steps; dynamo does not trace nn.LSTM, which runs "
            "eagerly (a graph break), the GRU loop and the head are compiled"
        ),
    ),
    Row(
        name="tf1-dynamic",
        label="TensorFlow 1 dynamic_rnn (tf.compat.v1 graph, LSTMCell + GRUCell)",
        requires=("tensorflow", "tf_keras"),
        build=lambda w, seed: _TF1Runner(w, seed, static=False),
        versions=_tf1_versions,
        note="a Session fed by feed_dict; graph building and variable initialisation count in time to first step",
    ),
    Row(
        name="tf1-static",
        label="TensorFlow 1 static_rnn (tf.compat.v1 graph, LSTMCell + GRUCell)",
        requires=("tensorflow", "tf_keras"),
        build=lambda w, seed: _TF1Runner(w, seed, static=True),
        versions=_tf1_versions,
        skip=_tf1_static_skip,
        note="a Session fed by feed_dict; graph building and variable initialisation count in time to first step",
    ),
    Row(
        name="keras-jax",
        label="Keras 3 on JAX, layers.LSTM + layers.GRU (reset-after GRU)",
        requires=("keras", "jax"),
        build=_KerasRunner,
        versions=_keras_versions,
        note=(
            "layers.GRU's default reset_after=True is the cuDNN formula, not TF1's GRUCell; "
            "train_on_batch / predict_on_batch, jit-compiled at the first step"
        ),
    ),
    Row(
        name="flax-nnx",
        label="Flax NNX, nnx.RNN(LSTMCell) + nnx.RNN(GRUCell) (reset-after GRU)",
        requires=("flax", "optax", "jax"),
        build=_FlaxRunner,
        versions=_flax_versions,
        note="nnx.GRUCell applies the reset after the recurrent matmul (cuDNN's formula); steps under nnx.jit",
    ),
)
