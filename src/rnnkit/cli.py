"""The `rnnkit` command. It parses, calls one workflow function, and renders the result.

argparse (standard library) rather than a CLI framework: it already gives the behaviour we
want for user mistakes (one line on stderr, exit status 2) and adds no dependency.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from rnnkit._version import __version__


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _console() -> Any:
    """A Rich console; when output is not a terminal (a pipe, a log file, CI) it is 120 columns
    wide instead of Rich's 80, so tables such as eval's confusion matrix are not truncated."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 120)


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


_positive_int = _number_type(int, lambda v: v >= 1, "a positive integer")
_non_negative_int = _number_type(int, lambda v: v >= 0, "a non-negative integer")
_positive_float = _number_type(float, lambda v: v > 0, "a positive number")
_dropout_rate = _number_type(float, lambda v: 0.0 <= v < 1.0, "a fraction in [0, 1)")


DEMO_EPILOG = """examples:
  rnnkit demo                       # the seed's model, batch 128, 28 steps
  rnnkit demo --time-steps 112      # static compile time grows with length; dynamic's does not
  rnnkit demo --batch-size 8 --seed 3
"""


TRAIN_EPILOG = """examples:
  rnnkit train                                   # the seed's program: LSTM(128)+GRU(256), 100 000 samples
  rnnkit train --mode static                     # the same, unrolled like the seed's static_rnn variant
  rnnkit train --epochs 3 --run-dir runs/seed3   # longer, into a named run directory
  rnnkit train --run-dir runs/seed3 --resume     # continue an interrupted run (Ctrl-C saves a checkpoint)
  rnnkit train --cells lstm:64:peepholes:proj=32,gru_reset_after:128 --layout pixels --dropout 0.2
  rnnkit train --data-dir ~/fashion-mnist        # any MNIST-format IDX directory
  rnnkit train --devices all --batch-size 512    # data parallel over every local device
  rnnkit train --run-dir /shared/r1 --coordinator 10.0.0.1:1234 --num-processes 2 --process-id 0   # and 1
"""

EVAL_EPILOG = """examples:
  rnnkit eval runs/seed3
  rnnkit eval runs/seed3 --plot confusion.png
  rnnkit eval runs/seed3 --data-dir ~/mnist-idx
"""

PREDICT_EPILOG = """examples:
  rnnkit predict runs/seed3 digit.png
  rnnkit predict runs/seed3 a.png b.png --steps   # how the prediction forms as the rows are read
"""

DATA_EPILOG = """examples:
  rnnkit data download --data-dir ~/mnist-idx     # then: rnnkit train --data-dir ~/mnist-idx
"""


def _add_train(commands: Any) -> None:
    from rnnkit.workflows.train import TrainConfig

    d = TrainConfig()
    p = commands.add_parser(
        "train",
        help="train a sequence classifier on MNIST (the seed's program)",
        description="Train cells read over MNIST rows (or pixels) with a dense head, the seed's program. "
        "Defaults are the seed's: LSTM(128)+GRU(256), Adam 0.001, batch 128, 100 000 training samples.",
        epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--mode", choices=("static", "dynamic"), default=d.mode, help="static_rnn or dynamic_rnn")
    p.add_argument("--cells", default=d.cells, help=f"layers, kind:units[:options] (default {d.cells})")
    p.add_argument("--data-dir", default=None, help="MNIST-format IDX directory (default: the installed MNIST)")
    p.add_argument("--layout", choices=("rows", "pixels", "permuted-pixels"), default=d.layout)
    p.add_argument("--run-dir", default=None, help="where config, checkpoints and metrics go (default runs/...)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--train-samples", type=_positive_int, default=d.train_samples, help="the seed's 100000")
    length.add_argument("--epochs", type=_positive_int, default=None, help="passes over the training split")
    p.add_argument("--batch-size", type=_positive_int, default=d.batch_size)
    p.add_argument("--learning-rate", type=_positive_float, default=d.learning_rate)
    p.add_argument("--clip-norm", type=_positive_float, default=None, help="clip gradients to this global norm")
    p.add_argument("--dropout", type=_dropout_rate, default=d.dropout, help="fraction of layer outputs dropped")
    p.add_argument("--display-step", type=_positive_int, default=d.display_step)
    p.add_argument("--checkpoint-every", type=_positive_int, default=d.checkpoint_every)
    p.add_argument("--validation-size", type=_non_negative_int, default=d.validation_size)
    p.add_argument("--seed", type=_non_negative_int, default=d.seed)
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its checkpoint")
    _add_distributed_flags(p)


ENV_EPILOG = """examples:
  rnnkit env                      # versions, processes, devices
  rnnkit env --devices all        # the mesh rnnkit train --devices all would use
  XLA_FLAGS=--xla_force_host_platform_device_count=4 rnnkit env --devices 4   # try meshes on a CPU
"""


def _devices_count(text: str) -> int | str:
    if text == "all":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all'; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all'; got {value}")
    return value


def _add_distributed_flags(p: Any) -> None:
    """Devices and processes: the same flags for `train` and `env`."""
    group = p.add_argument_group(
        "devices and processes",
        "data parallel: the batch is split over a 1-D mesh of devices, parameters replicated. Several "
        "processes (machines) join through jax.distributed; srun / mpirun set the three process flags themselves.",
    )
    group.add_argument(
        "--devices",
        type=_devices_count,
        default=None,
        metavar="N|all",
        help="devices to train on (default: 1; all of them with several processes); the batch must divide by N",
    )
    group.add_argument("--coordinator", default=None, metavar="HOST:PORT", help="process 0's address, for all")
    group.add_argument("--num-processes", type=_positive_int, default=None, metavar="N", help="processes in the run")
    group.add_argument("--process-id", type=_non_negative_int, default=None, metavar="I", help="this process, 0..N-1")


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
    _add_train(commands)
    env = commands.add_parser(
        "env",
        help="versions, processes, devices and the device mesh training would use",
        epilog=ENV_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_distributed_flags(env)
    ev = commands.add_parser(
        "eval",
        help="loss, accuracy, per-class accuracy and confusion matrix of a run on the test set",
        epilog=EVAL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ev.add_argument("run_dir", metavar="RUN_DIR")
    ev.add_argument("--data-dir", default=None, help="evaluate on this MNIST-format IDX directory's test split")
    ev.add_argument("--plot", default=None, metavar="PNG", help="also draw the confusion matrix to this PNG")
    pr = commands.add_parser(
        "predict",
        help="classify 28x28 grayscale images with a trained run",
        epilog=PREDICT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pr.add_argument("run_dir", metavar="RUN_DIR")
    pr.add_argument("images", metavar="IMAGE", nargs="+")
    pr.add_argument("--steps", action="store_true", help="show the prediction after each step read")
    data = commands.add_parser(
        "data", help="data sets", epilog=DATA_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="ACTION", parser_class=_Parser)
    download = data_commands.add_parser("download", help="fetch MNIST's IDX files, checking SHA-256")
    download.add_argument("--data-dir", required=True, help="directory to put the four .gz files in")
    download.add_argument(
        "--mirror",
        action="append",
        default=None,
        metavar="URL",
        help="base URL to fetch from instead of the canonical mirrors (repeatable, tried in order)",
    )
    return parser


def _demo(args: argparse.Namespace) -> int:
    from rich.table import Table

    from rnnkit.workflows.demo import DemoConfig, run_demo

    config = DemoConfig(batch_size=args.batch_size, time_steps=args.time_steps, seed=args.seed)
    console = _console()
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


def _join_processes(args: argparse.Namespace) -> None:
    """With several processes asked for, join them (jax.distributed) before any JAX computation.
    If they cannot start together, one line on stderr and exit status 1."""
    from rnnkit.workflows import distributed

    cluster = distributed.Cluster(args.coordinator, args.num_processes, args.process_id)
    cluster.validate()
    if cluster.wanted():
        try:
            distributed.initialize(cluster)
        except distributed.DistributedError as err:
            _lost(err)


def _lost(err: Exception) -> NoReturn:
    """The processes of a run could not start together or lost each other: one line, exit 1,
    without JAX's shutdown (it would wait for the missing process, then abort with a fatal log)."""
    from rnnkit.workflows import distributed

    print(f"rnnkit: error: {err}", file=sys.stderr)
    distributed.abandon(1)


def _train(args: argparse.Namespace) -> int:
    from rnnkit.workflows import distributed
    from rnnkit.workflows.train import SilentReporter, TrainConfig, TrainingInterrupted, train

    _join_processes(args)
    config = TrainConfig(
        mode=args.mode,
        cells=args.cells,
        data_dir=args.data_dir,
        layout=args.layout,
        run_dir=args.run_dir,
        train_samples=args.train_samples,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        clip_norm=args.clip_norm,
        dropout=args.dropout,
        display_step=args.display_step,
        checkpoint_every=args.checkpoint_every,
        validation_size=args.validation_size,
        seed=args.seed,
    )
    writer = distributed.is_writer()  # only process 0 reports; the others train quietly
    try:
        result = train(
            config, resume=args.resume, reporter=_RichReporter() if writer else SilentReporter(), devices=args.devices
        )
    except distributed.PeerLost as lost:
        _lost(lost)
    except TrainingInterrupted as stop:
        print(
            f"rnnkit: interrupted at step {stop.step}; checkpoint saved. Continue with: "
            f"rnnkit train --run-dir {stop.run_dir} --resume",
            file=sys.stderr,
        )
        if distributed.several_processes():  # the others may be gone: skip JAX's shutdown barrier
            distributed.abandon(130)
        return 130
    if not writer:
        return 0
    print(f"Testing Accuracy (first 100 images): {result.test_accuracy_first_100:.4f}")
    print(f"Testing Accuracy (10000 images): {result.test_accuracy:.4f}")
    print(
        f"Wall time {result.wall_s:.1f} s (first step, with compilation, {result.first_step_s:.1f} s), "
        f"{result.samples_per_s:.0f} samples/s; run saved in {result.run_dir}"
    )
    return 0


class _RichReporter:
    """Progress bar with loss / accuracy / throughput, and the seed's lines above it."""

    def __init__(self) -> None:
        self.console = _console()
        self.progress: Any = None
        self.task: Any = None

    def start(self, config: Any, total: int, first_step: int, run_dir: Any, num_params: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.console.print(
            f"rnnkit train: {config.mode} {config.cells} ({num_params:,} parameters), layout {config.layout}, "
            f"batch {config.batch_size}, {total} steps, run dir {run_dir}"
            + (f", resuming at step {first_step}" if first_step else ""),
            soft_wrap=True,
        )
        self.progress = Progress(
            TextColumn("train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f} acc {task.fields[acc]:.3f} {task.fields[speed]:.0f} samples/s"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=total, completed=first_step, loss=0.0, acc=0.0, speed=0.0)

    def step(self, step: int, loss: float, accuracy: float, samples_per_s: float) -> None:
        self.progress.update(self.task, completed=step, loss=loss, acc=accuracy, speed=samples_per_s)

    def line(self, text: str) -> None:
        self.console.print(text, highlight=False, soft_wrap=True)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _env(args: argparse.Namespace) -> int:
    from rnnkit.workflows import distributed

    _join_processes(args)
    env = distributed.describe_environment(args.devices)
    print(f"rnnkit {env.rnnkit_version}, jax {env.jax_version} (jaxlib {env.jaxlib_version})", end="")
    print(f", python {env.python_version}")
    print(f"backend: {env.backend}")
    print(f"process: {env.process_index} of {env.process_count}")
    print(f"local devices ({len(env.local_devices)}): {', '.join(env.local_devices)}")
    print(f"global devices: {len(env.global_devices)}")
    flag = "" if args.devices is None else f" (--devices {args.devices})"
    print(f"training mesh{flag}: {env.mesh}")
    print(f"--batch-size must be a multiple of {env.batch_multiple}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from rich.table import Table

    from rnnkit.workflows.evaluate import evaluate_run

    result = evaluate_run(args.run_dir, args.data_dir, plot=args.plot)
    console = _console()
    console.print(
        f"{result.run_dir} (step {result.step}): loss {result.loss:.4f}, "
        f"accuracy {result.accuracy:.4f} on {result.num_examples} test examples"
    )
    table = Table(title="confusion matrix (rows: true class, columns: predicted)")
    table.add_column("class", justify="right")
    for c in range(result.confusion.shape[1]):
        table.add_column(str(c), justify="right")
    table.add_column("accuracy", justify="right")
    for c, row in enumerate(result.confusion):
        table.add_row(str(c), *(str(v) for v in row), f"{result.per_class_accuracy[c]:.4f}")
    console.print(table)
    if args.plot:
        console.print(f"confusion matrix drawn to {args.plot}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from rnnkit.workflows.evaluate import predict_images

    for p in predict_images(args.run_dir, args.images, steps=args.steps):
        probs = " ".join(f"{c}:{v:.3f}" for c, v in enumerate(p.probabilities))
        print(f"{p.path}: class {p.predicted} (p={p.probabilities[p.predicted]:.4f})  [{probs}]")
        if p.step_probabilities is not None:
            for t, step_probs in enumerate(p.step_probabilities, start=1):
                best = int(step_probs.argmax())
                print(f"  after step {t:3d}: class {best} (p={step_probs[best]:.4f})")
    return 0


def _data(args: argparse.Namespace) -> int:
    from rnnkit.data import MNIST_MIRRORS, download_mnist

    mirrors = args.mirror or MNIST_MIRRORS
    for path in download_mnist(args.data_dir, mirrors=mirrors, log=print):
        print(path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {"demo": _demo, "train": _train, "eval": _eval, "predict": _predict, "data": _data, "env": _env}
    from rnnkit.data import DataError
    from rnnkit.errors import CheckpointError, ConfigError

    try:
        return handlers[args.command](args)
    except (ConfigError, CheckpointError, DataError) as err:
        # The user's mistake or the user's files: one line, exit 2, no traceback.
        message = str(err).replace("\n", " ")
        parser.exit(2, f"{parser.prog}: error: {message}\n")


if __name__ == "__main__":
    sys.exit(main())
