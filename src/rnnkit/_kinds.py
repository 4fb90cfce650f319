"""Every cell kind rnnkit knows, declared once; every part that names cell kinds reads this table.

A `CellKind` says, for one kind of leaf cell (one that holds weights):

- its spec name in a `--cells` string ("lstm", "gru_reset_after"), the class that runs it and the
  constructor arguments that make it this kind (`reset_after=True`);
- its TF1 scope name (`lstm_cell`, the `name` its variables live under);
- its `--cells` options: the type each takes and the constructor argument it maps to, and how
  to read it back off a cell (converters write a cell out as a spec);
- the loop kind the fast paths run it with (`LoopKind`: the fused recurrence in
  rnnkit/_recurrence.py and the native kernel's FFI targets), and when a cell of this kind can't
  take them (peepholes, clipping, a projection, an activation other than tanh);
- the peers' names for it: the Keras layer and the PyTorch module holding the same weights.

Adding a cell kind means adding one entry here (and its formula: the cell class, and for the
fast paths a loop kind in rnnkit/_recurrence.py and rnn_cpu.cc).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp

from rnnkit._cells import BasicLSTMCell, BasicRNNCell, GRUCell, LSTMCell, RNNCell


def is_tanh(fn: Any) -> bool:
    """Whether an activation is tanh (jnp.tanh or jax.lax.tanh): the only one the fast paths and
    the peers' recurrent layers compute."""
    return fn is jnp.tanh or fn is jax.lax.tanh


@dataclass(frozen=True)
class LoopKind:
    """One recurrence the fast paths run: its name (the fused formulas' and the FFI targets'
    `rnnkit_<name>_fwd`/`_bwd`), the stem of its C symbols (`Rnnkit<symbol>Fwd`), and how many
    columns per unit its forward call saves for the backward one."""

    name: str
    symbol: str
    saved_per_unit: int


LOOP_KINDS = (
    LoopKind("rnn", "Rnn", 1),
    LoopKind("lstm", "Lstm", 4),
    LoopKind("gru", "Gru", 3),
    LoopKind("gru_reset_after", "GruAfter", 4),
)
LOOP_KIND = {k.name: k for k in LOOP_KINDS}


@dataclass(frozen=True)
class Option:
    """One `--cells` option: `name` in the spec, its `type` (`bool` options are flags without a
    value), the constructor argument it sets, the value the cell has without it, whether a
    value must be positive (sizes and clips; a forget bias may be 0 or negative), and another
    option it needs."""

    name: str
    type: type
    arg: str
    default: Any = None
    positive: bool = True
    needs: str | None = None

    def read(self, cell: RNNCell) -> Any:
        """The option's value on `cell`, or None where the spec would leave it out (a flag
        that is off, an absent size or clip). Forget biases are always written."""
        value = getattr(cell, self.arg)
        if self.type is bool:
            return True if value else None
        return None if value is None else self.type(value)


_FORGET_BIAS = Option("forget_bias", float, "forget_bias", 1.0, positive=False)


def _lstm_fast_reason(cell: LSTMCell) -> str | None:
    """An LSTMCell runs the fast paths as a plain LSTM: without peepholes, clipping or projection."""
    extras = (
        ("use_peepholes=True", cell.use_peepholes),
        (f"cell_clip={cell.cell_clip!r}", cell.cell_clip is not None),
        (f"num_proj={cell.num_proj!r}", cell.num_proj is not None),
    )
    taken = [text for text, on in extras if on]
    return f"has {', '.join(taken)}" if taken else None


@dataclass(frozen=True)
class CellKind:
    """One kind of leaf cell; see the module docstring."""

    spec: str
    cell_class: type[RNNCell]
    scope: str
    loop: str
    keras: str
    torch: str
    options: tuple[Option, ...] = ()
    fixed: tuple[tuple[str, Any], ...] = ()  # constructor arguments that make the class this kind
    fast_reason: Callable[[Any], str | None] = field(default=lambda cell: None)  # beyond the loop kind

    def matches(self, cell: Any) -> bool:
        return type(cell) is self.cell_class and all(getattr(cell, arg) == value for arg, value in self.fixed)

    def build(self, units: int, *, input_size: int, key: Any, options: dict[str, Any], **more: Any) -> RNNCell:
        """The cell for a parsed spec: `options` by spec name, `more` passed through (precision)."""
        args = {o.arg: options.get(o.name, o.default) for o in self.options}
        return self.cell_class(units, input_size=input_size, key=key, **dict(self.fixed), **args, **more)

    def options_of(self, cell: RNNCell) -> dict[str, Any]:
        """The spec options that rebuild `cell` (by spec name), those at their absent value left out."""
        values = {o.name: o.read(cell) for o in self.options}
        return {name: value for name, value in values.items() if value is not None}


CELL_KINDS = (
    CellKind(spec="rnn", cell_class=BasicRNNCell, scope="basic_rnn_cell", loop="rnn", keras="SimpleRNN", torch="RNN"),
    CellKind(
        spec="basic_lstm",
        cell_class=BasicLSTMCell,
        scope="basic_lstm_cell",
        loop="lstm",
        keras="LSTM",
        torch="LSTM",
        options=(_FORGET_BIAS,),
    ),
    CellKind(
        spec="lstm",
        cell_class=LSTMCell,
        scope="lstm_cell",
        loop="lstm",
        keras="LSTM",
        torch="LSTM",
        options=(
            Option("peepholes", bool, "use_peepholes", False),
            Option("proj", int, "num_proj"),
            Option("cell_clip", float, "cell_clip"),
            Option("proj_clip", float, "proj_clip", needs="proj"),
            _FORGET_BIAS,
        ),
        fast_reason=_lstm_fast_reason,
    ),
    # TF1's GRUCell, the reset gate before the candidate's matmul
    CellKind(
        spec="gru",
        cell_class=GRUCell,
        scope="gru_cell",
        loop="gru",
        keras="GRU",
        torch="GRU",
        fixed=(("reset_after", False),),
    ),
    # the cuDNN / PyTorch / Keras-default formula, the reset gate after it
    CellKind(
        spec="gru_reset_after",
        cell_class=GRUCell,
        scope="cudnn_compatible_gru_cell",
        loop="gru_reset_after",
        keras="GRU",
        torch="GRU",
        fixed=(("reset_after", True),),
    ),
)
BY_SPEC = {k.spec: k for k in CELL_KINDS}


def kind_of(cell: Any) -> CellKind | None:
    """The kind of a leaf cell, or None for anything else (a wrapper, a stack, another class).
    A class with several kinds (GRUCell) has the one whose fixed arguments it has."""
    return next((k for k in CELL_KINDS if k.matches(cell)), None)


def fast_reason(cell: Any) -> str | None:
    """Why the fast paths (fused, native) can't run this leaf cell, or None when they can."""
    kind = kind_of(cell)
    if kind is None:
        return f"is not one of {', '.join(sorted({k.cell_class.__name__ for k in CELL_KINDS}))}"
    if not is_tanh(cell.activation):
        return f"has activation {getattr(cell.activation, '__name__', repr(cell.activation))}, not tanh"
    return kind.fast_reason(cell)


def loop_kind(cell: Any) -> str | None:
    """The loop kind that runs this leaf cell on the fast paths, or None (see `fast_reason`)."""
    kind = kind_of(cell)
    return None if kind is None or fast_reason(cell) is not None else kind.loop
