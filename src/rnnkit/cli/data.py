"""`rnnkit data`: fetch data sets."""

from __future__ import annotations

import argparse
from typing import Any

from rnnkit.cli._parser import Command, Parser, add_command

EPILOG = """examples:
  rnnkit data download --data-dir ~/mnist-idx     # then: rnnkit train --data-dir ~/mnist-idx
"""


def add_parser(commands: Any) -> None:
    p = add_command(commands, "data", help="data sets", epilog=EPILOG)
    actions = p.add_subparsers(dest="data_command", required=True, metavar="ACTION", parser_class=Parser)
    download = actions.add_parser("download", help="fetch MNIST's IDX files, checking SHA-256")
    download.add_argument("--data-dir", required=True, help="directory to put the four .gz files in")
    download.add_argument(
        "--mirror",
        action="append",
        default=None,
        metavar="URL",
        help="base URL to fetch from instead of the canonical mirrors (repeatable, tried in order)",
    )


def handle(args: argparse.Namespace) -> int:
    from rnnkit.data import MNIST_MIRRORS, download_mnist

    mirrors = args.mirror or MNIST_MIRRORS
    for path in download_mnist(args.data_dir, mirrors=mirrors, log=print):
        print(path)
    return 0


COMMAND = Command("data", add_parser, handle)
