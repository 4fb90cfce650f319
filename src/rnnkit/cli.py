"""The `rnnkit` command. It parses, calls one workflow function, and renders the result.

argparse (standard library) rather than a CLI framework: it already gives the behaviour we
want for user mistakes (one line on stderr, exit status 2) and adds no dependency.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from rnnkit._version import __version__


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer; got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer; got {value}")
    return value


DEMO_EPILOG = """examples:
  rnnkit demo                       # the seed's model, batch 128, 28 steps
  rnnkit demo --time-steps 112      # static compile time grows with length; dynamic's does not
  rnnkit demo --batch-size 8 --seed 3
"""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rnnkit", description="TensorFlow 1's RNN API on JAX.")
    parser.add_argument("--version", action="version", version=f"rnnkit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    demo = commands.add_parser(
        "demo",
        help="run the seed's LSTM(128)+GRU(256) with static_rnn and dynamic_rnn and compare them",
        description="Run the seed's MultiRNNCell([LSTMCell(128), GRUCell(256)]) with static_rnn and "
        "dynamic_rnn on one random batch: output shapes, largest difference, trace and compile times.",
        epilog=DEMO_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--batch-size", type=_positive_int, default=128, help="examples in the batch (default 128)")
    demo.add_argument("--time-steps", type=_positive_int, default=28, help="sequence length (default 28)")
    demo.add_argument("--seed", type=_non_negative_int, default=0, help="seed for weights and inputs (default 0)")
    return parser


def _demo(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from rnnkit.workflows.demo import DemoConfig, run_demo

    config = DemoConfig(batch_size=args.batch_size, time_steps=args.time_steps, seed=args.seed)
    console = Console()
    console.print(
        f"MultiRNNCell([LSTMCell({config.lstm_units}), GRUCell({config.gru_units})]) on "
        f"[{config.batch_size}, {config.time_steps}, {config.input_size}] random inputs"
    )
    result = run_demo(config)
    table = Table(title=f"static_rnn vs dynamic_rnn ({result.backend})")
    for column in ("mode", "outputs shape", "trace s", "lower s", "compile s", "first run s"):
        table.add_column(column, justify="left" if column in ("mode", "outputs shape") else "right")
    for t in result.timings:
        table.add_row(
            t.mode,
            str(list(t.output_shape)),
            f"{t.trace_s:.3f}",
            f"{t.lower_s:.3f}",
            f"{t.compile_s:.3f}",
            f"{t.run_s:.4f}",
        )
    console.print(table)
    console.print(
        f"largest |static - dynamic|: outputs {result.max_abs_diff_outputs:.3g}, "
        f"final state {result.max_abs_diff_state:.3g}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"demo": _demo}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
