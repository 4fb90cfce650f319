"""The `rnnkit` command. It parses, calls one workflow function, and renders the result.

One module per command (`train`, `evaluate` for eval and predict, `export`, `compare`,
`convert`, `bench`, `data`, `demo`, `env`), each with its subparser, its handler and its
rendering; what they share (parser class, argument types, error path) is in `_parser`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import NoReturn

from rnnkit._version import __version__
from rnnkit.cli import bench, compare, convert, data, demo, env, evaluate, export, train
from rnnkit.cli._parser import INTERRUPTED, Parser, handle_user_errors
from rnnkit.cli.bench import workload_list as _workload_list  # noqa: F401  benchmarks/*.py import it from here

__all__ = ["INTERRUPTED", "build_parser", "main", "run"]

# In the order `rnnkit --help` lists them.
COMMANDS = (
    demo.COMMAND,
    train.COMMAND,
    bench.COMMAND,
    convert.COMMAND,
    env.COMMAND,
    evaluate.EVAL,
    evaluate.PREDICT,
    export.COMMAND,
    compare.COMMAND,
    data.COMMAND,
)


def build_parser() -> Parser:
    """The parser of every command; a user's mistake is one line on stderr and exit status 2."""
    parser = Parser(prog="rnnkit", description="TensorFlow 1's RNN API on JAX.")
    parser.add_argument("--version", action="version", version=f"rnnkit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `rnnkit` with `argv` (default: the process's arguments) and return its exit status.
    A user's mistake leaves with SystemExit(2) after one line on stderr."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handle = next(command.handle for command in COMMANDS if command.name == args.command)
    return handle_user_errors(parser, lambda: handle(args))


def run() -> NoReturn:
    """The console script: `main()`, then exit with its status. After Ctrl-C (status 130, the
    checkpoint already written, fsynced and renamed) the process leaves at once with
    `os._exit`: interpreter teardown after an interrupted XLA step crashed inside jaxlib's
    runtime about once in fifteen runs (SIGSEGV, no Python frame), turning a clean, resumable
    stop into a crash report."""
    code = main()
    if code in (INTERRUPTED, 128 + 15):  # Ctrl-C or SIGTERM
        import os

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
