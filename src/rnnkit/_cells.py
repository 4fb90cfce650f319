"""TensorFlow 1's RNN cells as Equinox modules, with TF1's formulas, weight layout and names.

A cell maps one time step of a batch: `output, new_state = cell(inputs, state)` with
`inputs` shaped [batch, input_size]. Weights are stored exactly as TF1 stores them (one
kernel over the concatenation [inputs, h], gates in TF1's order), so a TF1 checkpoint maps
onto a cell one variable to one field; `get_variables` / `set_variables` do the mapping.

TF1 builds a cell lazily on its first call; here sizes are explicit at construction
(`input_size=`), so shapes are known and checked before anything runs.

Matmul precision: every cell multiplies at `precision="highest"` by default, which is what
TF1 did (full float32). On GPUs JAX's own default lets float32 matmuls run in TF32 or
bfloat16 passes, which moved results by ~1e-3 on an H200; pass `precision=None` to a cell to
take JAX's default (and its `jax.default_matmul_precision` setting) for speed instead, or the
name of a `jax.lax.DotAlgorithmPreset` such as "TF32_TF32_F32_X3" (near float32's error from
three TF32 products on tensor cores).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from rnnkit._checks import check_float_dtype, check_inputs, check_precision, check_state, dtype_name

Activation = Callable[[Array], Array]


class LSTMStateTuple(NamedTuple):
    """The state of an LSTM cell, `c` (memory) first and `h` (output) second, like TF1."""

    c: Any
    h: Any


def glorot_uniform(key: PRNGKeyArray, shape: tuple[int, ...], dtype: Any) -> Array:
    """TF1's default initializer (`tf.get_variable` with no initializer): U(-limit, limit),
    limit = sqrt(6 / (fan_in + fan_out)), over the whole matrix. For a vector TF counts
    fan_in = fan_out = its length.

    Drawn as (2u - 1) * limit from u ~ U[0, 1): 2u - 1 is exact, so each value takes one
    rounding whatever the compiler does. (`uniform(minval=-limit, maxval=limit)` computes
    u * 2 limit - limit, which a compiler may fuse into one FMA or not: the values then
    depended on the optimisation level, and neither the program below nor the classifier's
    one-program initialisation (models/classifier.py) could be compiled at a lower one.)"""
    shape, dtype = tuple(shape), jnp.dtype(dtype)
    return draw_at_level0_on_cpu(_glorot_uniform_level0, _glorot_uniform_program, key, key, shape, dtype)


def draw_at_level0_on_cpu(level0: Callable[..., Any], default: Callable[..., Any], key: Any, *args: Any) -> Any:
    """`level0(*args)`: a program drawing initial weights from `key`, compiled at LLVM's lowest
    optimisation level, on CPUs, where that was measured (the values don't depend on the level,
    and the compile takes half the time or less). `default(*args)`, the same program at the
    default level, elsewhere, for a traced key (the draw then runs inside the caller's program)
    and under someone's jit all the same (compile options are for top-level programs only)."""
    if jax.default_backend() == "cpu" and not isinstance(key, jax.core.Tracer):
        try:
            return level0(*args)
        except ValueError:  # under a jit: compile options refused
            pass  # (a mistake of the caller's comes again from the call below)
    return default(*args)


def _glorot_uniform(key: PRNGKeyArray, shape: tuple[int, ...], dtype: Any) -> Array:
    fan_in, fan_out = (shape[0], shape[0]) if len(shape) == 1 else (shape[0], shape[1])
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return (2 * jax.random.uniform(key, shape, dtype) - 1) * limit


# One compiled program per shape and dtype. Drawn op by op, uniform, 2u, - 1 and * limit were
# a compilation each, and building four small cells took 5.8 s on a two-core machine; 3.6 s
# with this, most of it threefry's compilation, which LLVM's lowest optimisation level halves
# on CPUs (the values don't depend on it, see above; models/classifier.py does the same).
_glorot_uniform_program = jax.jit(_glorot_uniform, static_argnums=(1, 2))
_glorot_uniform_level0 = jax.jit(
    _glorot_uniform, static_argnums=(1, 2), compiler_options={"xla_backend_optimization_level": 0}
)


def _filled(shape: tuple[int, ...], value: float, dtype: Any) -> Array:
    """A constant weight (a bias's zeros or ones), copied from the host: `jnp.zeros` outside a
    trace compiles a program per shape."""
    return jnp.asarray(np.full(shape, value, dtype=jnp.dtype(dtype)))


class RNNCell(eqx.Module):
    """What every cell offers, TF1's `RNNCell` protocol.

    Subclasses define `input_size`, `output_size`, `state_size`, `dtype`, `_step` (the
    math, on checked arguments) and `_tf1_leaves` (which field holds which TF1 variable).
    """

    @property
    def input_size(self) -> int:
        raise NotImplementedError

    @property
    def output_size(self) -> int:
        raise NotImplementedError

    @property
    def state_size(self) -> Any:
        raise NotImplementedError

    @property
    def dtype(self) -> Any:
        raise NotImplementedError

    def zero_state(self, batch_size: int, dtype: Any = None) -> Any:
        """All-zero state of structure `state_size`, each leaf [batch_size, size]."""
        # A symbolic dimension (jax.export's shape polymorphism) stands for a size known at call time.
        if not jax.export.is_symbolic_dim(batch_size) and (
            not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 0
        ):
            raise ValueError(f"batch_size must be a non-negative int; got {batch_size!r}")
        if dtype is not None and jnp.dtype(dtype) != jnp.dtype(self.dtype):
            raise TypeError(
                f"dtype must be the cell's dtype {dtype_name(self.dtype)} (or None); got {dtype_name(dtype)}"
            )
        return jax.tree_util.tree_map(lambda n: jnp.zeros((batch_size, n), self.dtype), self.state_size)

    def __call__(self, inputs: Float[Array | np.ndarray, "batch depth"], state: Any) -> tuple[Array, Any]:
        inputs = check_inputs(inputs, name="inputs", cell=self, rank=2, layout="batch, depth")
        state = check_state(state, name="state", cell=self, batch_size=inputs.shape[0])
        return self._step(inputs, state)

    def _step(self, inputs: Array, state: Any) -> tuple[Array, Any]:
        raise NotImplementedError

    def _tf1_leaves(self, scope: str) -> list[tuple[str, Callable[[Any], Array]]]:
        """(TF1 variable path, accessor from this cell to the array) for every weight."""
        raise NotImplementedError

    def _at_step(self, step: Any) -> RNNCell:
        """The cell to use at time step `step` (traced int). Only dropout cares: it draws
        fresh masks per step; every other cell is the same at every step."""
        return self


def check_cell(cell: Any, name: str = "cell") -> RNNCell:
    """`cell` if it is an rnnkit cell, else a TypeError naming the argument and what came."""
    if not isinstance(cell, RNNCell):
        raise TypeError(f"{name} must be an rnnkit RNN cell; got {type(cell).__name__}")
    return cell


class _LeafCell(RNNCell):
    """A cell that owns weights (not a wrapper or a stack). Holds the common static fields."""

    num_units: int = eqx.field(static=True)
    _input_size: int = eqx.field(static=True)
    _dtype: Any = eqx.field(static=True)
    activation: Activation = eqx.field(static=True)
    name: str = eqx.field(static=True)
    precision: Any = eqx.field(static=True)

    @property
    def input_size(self) -> int:
        return self._input_size

    def _init_leaf(
        self, num_units: int, input_size: int, activation: Activation, dtype: Any, precision: Any, name: str
    ) -> None:
        """The part of every leaf cell's constructor that they share: the size, dtype and
        precision checks, then the common static fields."""
        _check_sizes(num_units, input_size)
        self._dtype = check_float_dtype(dtype, name="dtype")
        self.precision = check_precision(precision)
        self.num_units, self._input_size, self.activation, self.name = num_units, input_size, activation, name

    def _matmul(self, a: Array, b: Array) -> Array:
        return jnp.matmul(a, b, precision=self.precision)

    @property
    def dtype(self) -> Any:
        return self._dtype

    # (field name, TF1 variable name below the cell's scope); fields that are None are absent.
    _TF1_NAMES: ClassVar[tuple[tuple[str, str], ...]] = ()

    def _tf1_leaves(self, scope: str) -> list[tuple[str, Callable[[Any], Array]]]:
        return [
            (f"{scope}/{self.name}/{tf_name}", _field_getter(field))
            for field, tf_name in self._TF1_NAMES
            if getattr(self, field) is not None
        ]


def _field_getter(field: str) -> Callable[[Any], Array]:
    return lambda cell: getattr(cell, field)


def _check_sizes(num_units: Any, input_size: Any) -> None:
    for arg, value in (("num_units", num_units), ("input_size", input_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{arg} must be a positive int; got {value!r}")


def _concat(inputs: Array, h: Array) -> Array:
    # [batch, input_size + h_size]: TF1 multiplies one kernel by [x, h], x rows first.
    return jnp.concatenate([inputs, h], axis=1)


class BasicRNNCell(_LeafCell):
    """TF1's `BasicRNNCell`: `output = new_state = act([x, h] @ kernel + bias)`.

    Weights: `kernel` [input_size + num_units, num_units] (glorot-uniform),
    `bias` [num_units] (zeros). TF1 names: `<scope>/basic_rnn_cell/kernel`, `.../bias`.
    """

    kernel: Array
    bias: Array
    _TF1_NAMES = (("kernel", "kernel"), ("bias", "bias"))

    def __init__(
        self,
        num_units: int,
        *,
        input_size: int,
        key: PRNGKeyArray,
        activation: Activation = jnp.tanh,
        dtype: Any = jnp.float32,
        precision: Any = "highest",
        name: str = "basic_rnn_cell",
    ):
        self._init_leaf(num_units, input_size, activation, dtype, precision, name)
        self.kernel = glorot_uniform(key, (input_size + num_units, num_units), self._dtype)
        self.bias = _filled((num_units,), 0.0, self._dtype)

    @property
    def output_size(self) -> int:
        return self.num_units

    @property
    def state_size(self) -> int:
        return self.num_units

    def _step(self, inputs: Array, state: Array) -> tuple[Array, Array]:
        new_h = self.activation(self._matmul(_concat(inputs, state), self.kernel) + self.bias)
        return new_h, new_h


class BasicLSTMCell(_LeafCell):
    """TF1's `BasicLSTMCell` (state as a tuple, the TF1 default).

        i, j, f, o = split([x, h] @ kernel + bias, 4)      # gate order i, j, f, o
        c' = c * sigmoid(f + forget_bias) + sigmoid(i) * act(j)
        h' = act(c') * sigmoid(o)

    Output `h'`, state `LSTMStateTuple(c', h')`. Weights: `kernel`
    [input_size + num_units, 4 * num_units] (glorot-uniform), `bias` [4 * num_units] (zeros).
    `forget_bias` is added at run time and is not stored (set it to 0.0 for weights that
    already fold it in, such as cuDNN's). TF1 names: `<scope>/basic_lstm_cell/kernel`, `.../bias`.
    """

    kernel: Array
    bias: Array
    forget_bias: float = eqx.field(static=True)
    _TF1_NAMES = (("kernel", "kernel"), ("bias", "bias"))

    def __init__(
        self,
        num_units: int,
        *,
        input_size: int,
        key: PRNGKeyArray,
        forget_bias: float = 1.0,
        activation: Activation = jnp.tanh,
        dtype: Any = jnp.float32,
        precision: Any = "highest",
        name: str = "basic_lstm_cell",
    ):
        self._init_leaf(num_units, input_size, activation, dtype, precision, name)
        self.forget_bias = float(forget_bias)
        self.kernel = glorot_uniform(key, (input_size + num_units, 4 * num_units), self._dtype)
        self.bias = _filled((4 * num_units,), 0.0, self._dtype)

    @property
    def output_size(self) -> int:
        return self.num_units

    @property
    def state_size(self) -> LSTMStateTuple:
        return LSTMStateTuple(self.num_units, self.num_units)

    def _step(self, inputs: Array, state: LSTMStateTuple) -> tuple[Array, LSTMStateTuple]:
        c, h = state
        i, j, f, o = jnp.split(self._matmul(_concat(inputs, h), self.kernel) + self.bias, 4, axis=1)
        new_c = c * jax.nn.sigmoid(f + self.forget_bias) + jax.nn.sigmoid(i) * self.activation(j)
        new_h = self.activation(new_c) * jax.nn.sigmoid(o)
        return new_h, LSTMStateTuple(new_c, new_h)


class LSTMCell(_LeafCell):
    """TF1's `LSTMCell`, with optional peepholes, cell clipping and a projection (LSTMP).

        i, j, f, o = split([x, m] @ kernel + bias, 4)      # gate order i, j, f, o
        c' = sigmoid(f + forget_bias [+ w_f_diag * c]) * c + sigmoid(i [+ w_i_diag * c]) * act(j)
        c' = clip(c', -cell_clip, cell_clip)                 # if cell_clip
        m' = sigmoid(o [+ w_o_diag * c']) * act(c')          # the output peephole sees the new, clipped c
        m' = clip(m' @ projection/kernel, -proj_clip, proj_clip)   # if num_proj (clip if proj_clip)

    Output `m'` (size `num_proj or num_units`), state `LSTMStateTuple(c', m')`.
    Weights (TF1 names below `<scope>/lstm_cell/`): `kernel` [input_size + (num_proj or
    num_units), 4 * num_units] and, with peepholes, `w_f_diag`, `w_i_diag`, `w_o_diag`
    [num_units] (all glorot-uniform); `bias` [4 * num_units] (zeros); with `num_proj`,
    `projection/kernel` [num_units, num_proj] (glorot-uniform). `forget_bias` is added at
    run time, not stored.
    """

    kernel: Array
    bias: Array
    w_f_diag: Array | None
    w_i_diag: Array | None
    w_o_diag: Array | None
    proj_kernel: Array | None
    use_peepholes: bool = eqx.field(static=True)
    cell_clip: float | None = eqx.field(static=True)
    num_proj: int | None = eqx.field(static=True)
    proj_clip: float | None = eqx.field(static=True)
    forget_bias: float = eqx.field(static=True)
    _TF1_NAMES = (
        ("kernel", "kernel"),
        ("bias", "bias"),
        ("w_f_diag", "w_f_diag"),
        ("w_i_diag", "w_i_diag"),
        ("w_o_diag", "w_o_diag"),
        ("proj_kernel", "projection/kernel"),
    )

    def __init__(
        self,
        num_units: int,
        *,
        input_size: int,
        key: PRNGKeyArray,
        use_peepholes: bool = False,
        cell_clip: float | None = None,
        num_proj: int | None = None,
        proj_clip: float | None = None,
        forget_bias: float = 1.0,
        activation: Activation = jnp.tanh,
        dtype: Any = jnp.float32,
        precision: Any = "highest",
        name: str = "lstm_cell",
    ):
        self._init_leaf(num_units, input_size, activation, dtype, precision, name)
        if num_proj is not None and (not isinstance(num_proj, int) or isinstance(num_proj, bool) or num_proj < 1):
            raise ValueError(f"num_proj must be a positive int or None; got {num_proj!r}")
        for arg, clip in (("cell_clip", cell_clip), ("proj_clip", proj_clip)):
            if clip is not None and not clip > 0:
                raise ValueError(f"{arg} must be a positive number or None; got {clip!r}")
        if proj_clip is not None and num_proj is None:
            raise ValueError("proj_clip needs num_proj: the clip applies to the projection's output")
        self.use_peepholes, self.num_proj, self.forget_bias = bool(use_peepholes), num_proj, float(forget_bias)
        self.cell_clip = None if cell_clip is None else float(cell_clip)
        self.proj_clip = None if proj_clip is None else float(proj_clip)

        k_kernel, k_f, k_i, k_o, k_proj = jax.random.split(key, 5)
        h_size = num_proj or num_units
        self.kernel = glorot_uniform(k_kernel, (input_size + h_size, 4 * num_units), self._dtype)
        self.bias = _filled((4 * num_units,), 0.0, self._dtype)
        if use_peepholes:
            self.w_f_diag = glorot_uniform(k_f, (num_units,), self._dtype)
            self.w_i_diag = glorot_uniform(k_i, (num_units,), self._dtype)
            self.w_o_diag = glorot_uniform(k_o, (num_units,), self._dtype)
        else:
            self.w_f_diag = self.w_i_diag = self.w_o_diag = None
        self.proj_kernel = None if num_proj is None else glorot_uniform(k_proj, (num_units, num_proj), self._dtype)

    @property
    def output_size(self) -> int:
        return self.num_proj or self.num_units

    @property
    def state_size(self) -> LSTMStateTuple:
        return LSTMStateTuple(self.num_units, self.num_proj or self.num_units)

    def _step(self, inputs: Array, state: LSTMStateTuple) -> tuple[Array, LSTMStateTuple]:
        c_prev, m_prev = state
        i, j, f, o = jnp.split(self._matmul(_concat(inputs, m_prev), self.kernel) + self.bias, 4, axis=1)
        if self.use_peepholes:
            c = jax.nn.sigmoid(f + self.forget_bias + self.w_f_diag * c_prev) * c_prev + jax.nn.sigmoid(
                i + self.w_i_diag * c_prev
            ) * self.activation(j)
        else:
            c = jax.nn.sigmoid(f + self.forget_bias) * c_prev + jax.nn.sigmoid(i) * self.activation(j)
        if self.cell_clip is not None:
            c = jnp.clip(c, -self.cell_clip, self.cell_clip)
        if self.use_peepholes:
            m = jax.nn.sigmoid(o + self.w_o_diag * c) * self.activation(c)
        else:
            m = jax.nn.sigmoid(o) * self.activation(c)
        if self.proj_kernel is not None:
            m = self._matmul(m, self.proj_kernel)
            if self.proj_clip is not None:
                m = jnp.clip(m, -self.proj_clip, self.proj_clip)
        return m, LSTMStateTuple(c, m)


class GRUCell(_LeafCell):
    """TF1's `GRUCell` (reset before the candidate matmul), or with `reset_after=True` the
    cuDNN / PyTorch / Keras-default formula (TF1's `CudnnCompatibleGRUCell`).

    reset_after=False (TF1 `GRUCell`, names below `<scope>/gru_cell/`):
        r, u = split(sigmoid([x, h] @ gates/kernel + gates/bias), 2)     # gate order r, u
        c = act([x, r * h] @ candidate/kernel + candidate/bias)
        h' = u * h + (1 - u) * c
      `gates/kernel` [input_size + num_units, 2 * num_units], `gates/bias` [2 * num_units]
      (initialised to 1.0), `candidate/kernel` [input_size + num_units, num_units],
      `candidate/bias` [num_units] (zeros).

    reset_after=True (TF1 `CudnnCompatibleGRUCell`, names below `<scope>/cudnn_compatible_gru_cell/`):
        r, u as above
        c = act(x @ candidate/input_projection/kernel + candidate/input_projection/bias
                + r * (h @ candidate/hidden_projection/kernel + candidate/hidden_projection/bias))
        h' = (1 - u) * c + u * h
      input projection [input_size, num_units], hidden projection [num_units, num_units],
      both biases [num_units] (zeros). This is the only GRU that matches PyTorch's `nn.GRU`.

    Output = state = `h'`. Kernels are glorot-uniform.
    """

    gates_kernel: Array
    gates_bias: Array
    candidate_kernel: Array | None
    candidate_bias: Array | None
    candidate_input_kernel: Array | None
    candidate_input_bias: Array | None
    candidate_hidden_kernel: Array | None
    candidate_hidden_bias: Array | None
    reset_after: bool = eqx.field(static=True)
    _TF1_NAMES = (
        ("gates_kernel", "gates/kernel"),
        ("gates_bias", "gates/bias"),
        ("candidate_kernel", "candidate/kernel"),
        ("candidate_bias", "candidate/bias"),
        ("candidate_input_kernel", "candidate/input_projection/kernel"),
        ("candidate_input_bias", "candidate/input_projection/bias"),
        ("candidate_hidden_kernel", "candidate/hidden_projection/kernel"),
        ("candidate_hidden_bias", "candidate/hidden_projection/bias"),
    )

    def __init__(
        self,
        num_units: int,
        *,
        input_size: int,
        key: PRNGKeyArray,
        reset_after: bool = False,
        activation: Activation = jnp.tanh,
        dtype: Any = jnp.float32,
        precision: Any = "highest",
        name: str | None = None,
    ):
        self._init_leaf(
            num_units,
            input_size,
            activation,
            dtype,
            precision,
            name or ("cudnn_compatible_gru_cell" if reset_after else "gru_cell"),
        )
        self.reset_after = bool(reset_after)
        k_gates, k_cand, k_hidden = jax.random.split(key, 3)
        dt = self._dtype
        self.gates_kernel = glorot_uniform(k_gates, (input_size + num_units, 2 * num_units), dt)
        self.gates_bias = _filled((2 * num_units,), 1.0, dt)
        if reset_after:
            self.candidate_kernel = self.candidate_bias = None
            self.candidate_input_kernel = glorot_uniform(k_cand, (input_size, num_units), dt)
            self.candidate_input_bias = _filled((num_units,), 0.0, dt)
            self.candidate_hidden_kernel = glorot_uniform(k_hidden, (num_units, num_units), dt)
            self.candidate_hidden_bias = _filled((num_units,), 0.0, dt)
        else:
            self.candidate_kernel = glorot_uniform(k_cand, (input_size + num_units, num_units), dt)
            self.candidate_bias = _filled((num_units,), 0.0, dt)
            self.candidate_input_kernel = self.candidate_input_bias = None
            self.candidate_hidden_kernel = self.candidate_hidden_bias = None

    @property
    def output_size(self) -> int:
        return self.num_units

    @property
    def state_size(self) -> int:
        return self.num_units

    def _step(self, inputs: Array, state: Array) -> tuple[Array, Array]:
        h = state
        gates = jax.nn.sigmoid(self._matmul(_concat(inputs, h), self.gates_kernel) + self.gates_bias)
        r, u = jnp.split(gates, 2, axis=1)
        if self.reset_after:
            hidden = self._matmul(h, self.candidate_hidden_kernel) + self.candidate_hidden_bias
            projected = self._matmul(inputs, self.candidate_input_kernel) + self.candidate_input_bias
            c = self.activation(projected + r * hidden)
            new_h = (1 - u) * c + u * h
        else:
            c = self.activation(self._matmul(_concat(inputs, r * h), self.candidate_kernel) + self.candidate_bias)
            new_h = u * h + (1 - u) * c
        return new_h, new_h
