"""`rnnkit demo`: the seed's model run once with static_rnn and once with dynamic_rnn."""

from __future__ import annotations

import argparse
from typing import Any

from rnnkit.cli._parser import Command, add_command, console, non_negative_int, positive_int

EPILOG = """examples:
  rnnkit demo                       # the seed's model, batch 128, 28 steps
  rnnkit demo --time-steps 112      # static compile time grows with length; dynamic's does not
  rnnkit demo --batch-size 8 --seed 3
"""


def add_parser(commands: Any) -> None:
    p = add_command(
        commands,
        "demo",
        help="run the seed's LSTM(128)+GRU(256) with static_rnn and dynamic_rnn and compare them",
        description="Run the seed's MultiRNNCell([LSTMCell(128), GRUCell(256)]) with static_rnn and "
        "dynamic_rnn on one random batch: output shapes, largest difference, trace and compile times.",
        epilog=EPILOG,
    )
    p.add_argument("--batch-size", type=positive_int, default=128, help="examples in the batch (default 128)")
    p.add_argument("--time-steps", type=positive_int, default=28, help="sequence length (default 28)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed for weights and inputs (default 0)")


def handle(args: argparse.Namespace) -> int:
    from rich.table import Table

    from rnnkit.workflows.demo import DemoConfig, run_demo

    config = DemoConfig(batch_size=args.batch_size, time_steps=args.time_steps, seed=args.seed)
    out = console()
    out.print(
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
    out.print(table)
    out.print(
        f"largest |static - dynamic|: outputs {result.max_abs_diff_outputs:.3g}, "
        f"final state {result.max_abs_diff_state:.3g}"
    )
    return 0


COMMAND = Command("demo", add_parser, handle)
