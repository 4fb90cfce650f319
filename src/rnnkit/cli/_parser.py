"""What every `rnnkit` command shares: the parser class, argument types, the Rich console, the
device and process flags, and the error path that turns a user's mistake into one line on
stderr and exit status 2.

argparse (standard library) rather than a CLI framework: it already gives the behaviour we
want for user mistakes (one line on stderr, exit status 2) and adds no dependency.
"""

from __future__ import annotations

import argparse
import errno
import math
import sys
from collections.abc import Callable
from typing import Any, NamedTuple, NoReturn

INTERRUPTED = 130  # the shell's status for a process stopped by SIGINT


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


class Command(NamedTuple):
    """One `rnnkit` command: `add_parser(commands)` adds its subparser to the `commands` of
    `add_subparsers`, and `handle(args)` runs it and returns the exit status."""

    name: str
    add_parser: Callable[[Any], None]
    handle: Callable[[argparse.Namespace], int]


def add_command(commands: Any, name: str, **kwargs: Any) -> Any:
    """A command's subparser, whose epilog of examples keeps its line breaks."""
    return commands.add_parser(name, formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)


def handle_user_errors(parser: argparse.ArgumentParser, handle: Callable[[], int]) -> int:
    """`handle()` inside the one error boundary of every command. Anticipated failures are one
    line on stderr, no traceback: the user's mistakes and the user's files (ConfigError,
    CheckpointError, DataError) and the file system's refusals (a read-only or full disk, a
    missing or unwritable directory: OSError) exit with status 2, an interrupt (Ctrl-C outside
    training, which saves its own checkpoint) with 130. Anything else is a bug and keeps its
    traceback."""
    from rnnkit.data import DataError
    from rnnkit.errors import CheckpointError, ConfigError

    try:
        return handle()
    except (ConfigError, CheckpointError, DataError) as err:
        message = str(err).replace("\n", " ")
        parser.exit(2, f"{parser.prog}: error: {message}\n")
    except OSError as err:
        parser.exit(2, f"{parser.prog}: error: {os_error_line(err)}\n")
    except KeyboardInterrupt:
        parser.exit(INTERRUPTED, f"{parser.prog}: interrupted; nothing was left half-written\n")
    except Exception as err:
        if not out_of_memory(err):
            raise  # a bug: its traceback is what to report
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        parser.exit(2, f"{parser.prog}: error: out of memory ({first}); try smaller --cells or --batch-size\n")


def out_of_memory(err: BaseException) -> bool:
    """Whether `err` is an allocation failure: Python's MemoryError or XLA's RESOURCE_EXHAUSTED."""
    return isinstance(err, MemoryError) or str(err).lstrip().startswith("RESOURCE_EXHAUSTED")


def os_error_line(err: OSError) -> str:
    """An OSError as one line: the file, what the system said, and a hint for the common causes."""
    what = err.strerror or str(err) or type(err).__name__
    where = f"{err.filename}: " if err.filename is not None else ""
    hints = {
        errno.ENOSPC: " (the disk is full; the previous files were left as they were)",
        errno.EROFS: " (a read-only file system; choose another directory)",
        errno.EACCES: " (no permission; choose another directory)",
        errno.EPERM: " (not permitted; choose another directory)",
    }
    return f"{where}{what}{hints.get(err.errno or 0, '')}".replace("\n", " ")


def console() -> Any:
    """A Rich console; when output is not a terminal (a pipe, a log file, CI) it is 120 columns
    wide instead of Rich's 80, so tables such as eval's confusion matrix are not truncated."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 120)


def plain_log(out: Any) -> Callable[[str], None]:
    """A workflow's `log`: each line printed to the console as it is, without Rich markup."""
    return lambda line: out.print(line, highlight=False, markup=False)


def default_out_dir(command: str) -> Any:
    """runs/<command>-<local time>, where a command writes when --out is not given."""
    from datetime import datetime
    from pathlib import Path

    return Path("runs") / f"{command}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def command_line(command: str) -> str:
    """The command line as typed, recorded beside a command's results."""
    return "rnnkit " + " ".join(sys.argv[1:]) if sys.argv[1:2] == [command] else f"rnnkit {command}"


# --- argument types --------------------------------------------------------------------------


def _number_type(convert: Any, accept: Any, expected: str) -> Any:
    """An argparse `type=` that converts with `convert` and refuses values `accept` rejects,
    saying what was expected and what came."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}; got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}; got {value}")
        return value

    return parse


positive_int = _number_type(int, lambda v: v >= 1, "a positive integer")
non_negative_int = _number_type(int, lambda v: v >= 0, "a non-negative integer")
positive_float = _number_type(float, lambda v: 0 < v < math.inf, "a finite positive number")
dropout_rate = _number_type(float, lambda v: 0.0 <= v < 1.0, "a fraction in [0, 1)")


def name_list(text: str) -> tuple[str, ...]:
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names; got {text!r}")
    return names


def int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers; got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers; got {text!r}")
    return values


def devices_count(text: str) -> int | str:
    if text == "all":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all'; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all'; got {value}")
    return value


# --- devices and processes (train and env) ---------------------------------------------------


def add_distributed_flags(p: Any) -> None:
    """Devices and processes: the same flags for `train` and `env`."""
    group = p.add_argument_group(
        "devices and processes",
        "data parallel: the batch is split over a 1-D mesh of devices, parameters replicated. Several "
        "processes (machines) join through jax.distributed; srun / mpirun set the three process flags themselves.",
    )
    group.add_argument(
        "--devices",
        type=devices_count,
        default=None,
        metavar="N|all",
        help="devices to train on (default: 1; all of them with several processes); the batch must divide by N",
    )
    group.add_argument("--coordinator", default=None, metavar="HOST:PORT", help="process 0's address, for all")
    group.add_argument("--num-processes", type=positive_int, default=None, metavar="N", help="processes in the run")
    group.add_argument("--process-id", type=non_negative_int, default=None, metavar="I", help="this process, 0..N-1")


def join_processes(args: argparse.Namespace) -> None:
    """With several processes asked for, join them (jax.distributed) before any JAX computation.
    If they cannot start together, one line on stderr and exit status 1."""
    from rnnkit.workflows import distributed

    cluster = distributed.Cluster(args.coordinator, args.num_processes, args.process_id)
    cluster.validate()
    if cluster.wanted():
        try:
            distributed.initialize(cluster)
        except distributed.DistributedError as err:
            lost(err)


def lost(err: Exception) -> NoReturn:
    """The processes of a run could not start together or lost each other: one line, exit 1,
    without JAX's shutdown (it would wait for the missing process, then abort with a fatal log)."""
    from rnnkit.workflows import distributed

    print(f"rnnkit: error: {err}", file=sys.stderr)
    distributed.abandon(1)
