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
  rnnkit predict --artifact model.rnnx digit.png  # an exported model: no run directory, no model code
"""

EXPORT_EPILOG = """examples:
  rnnkit export runs/seed3 --out model.rnnx                  # the run's mode; writes model.rnnx + model.rnnx.json
  rnnkit export runs/seed3 --mode static --out static.rnnx   # pinned to the training length
  rnnkit export runs/seed3 --mode dynamic --with-state --out model.rnnx   # logits and the final state
"""

COMPARE_EPILOG = """examples:
  rnnkit compare --quick --out compare-quick           # two short lengths, under a minute
  rnnkit compare --out compare                         # the seed's model, lengths 28 ... 896
  rnnkit compare --cells gru:64 --lengths 16,32,64 --budget-s 30 --out compare-gru
Open DIR/report.html in a browser: each of the seed's claims with its evidence and verdict.
"""

BENCH_EPILOG = """examples:
  rnnkit bench --quick --out bench-quick              # training b128 and inference b1024 at T=28, ~2 minutes
  rnnkit bench --out bench                            # every row, batch 128/1024, T=28 and T=784
  rnnkit bench --rows rnnkit-dynamic,torch-eager,tf1-dynamic --workloads train:128:28:28
  rnnkit bench --quick --rounds 3                     # on a noisy machine: each figure the median of 3 rounds
Rows for peers that are not installed are reported as skipped: make peers installs them into .venv.
Writes DIR/bench.json, DIR/bench.md (the table) and DIR/bench.png.
"""

DATA_EPILOG = """examples:
  rnnkit data download --data-dir ~/mnist-idx     # then: rnnkit train --data-dir ~/mnist-idx
"""


def _add_export(commands: Any) -> None:
    p = commands.add_parser(
        "export",
        help="write a trained run as a serialized StableHLO program (jax.export) that runs without rnnkit's code",
        description="Export a run's inference function with jax.export: FILE holds the program and its weights, "
        "FILE.json the input layout, classes, mode and versions. A dynamic export takes any batch and length; "
        "a static one any batch at the length it was built for.",
        epilog=EXPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", required=True, metavar="FILE", help="the artifact to write (e.g. model.rnnx)")
    p.add_argument("--mode", choices=("static", "dynamic"), default=None, help="default: the mode it was trained in")
    p.add_argument("--with-state", action="store_true", help="also return the cells' final state")
    p.add_argument(
        "--platforms",
        default="cpu,cuda",
        type=_name_list,
        help="platforms to lower for, comma-separated (default cpu,cuda)",
    )


def _name_list(text: str) -> tuple[str, ...]:
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names; got {text!r}")
    return names


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers; got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers; got {text!r}")
    return values


def _add_compare(commands: Any) -> None:
    from rnnkit.workflows.compare import CompareConfig

    d = CompareConfig()
    p = commands.add_parser(
        "compare",
        help="measure the seed's static-vs-dynamic claims on this machine: table, JSON, plots, HTML report",
        description="Build, compile, export and run the model with static_rnn and dynamic_rnn over a sweep of "
        "lengths, in one process, and judge each of the seed's claims by the numbers.",
        epilog=COMPARE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default=None, metavar="DIR", help="report directory (default runs/compare-<time>)")
    p.add_argument("--cells", default=d.cells, help=f"layers, kind:units[:options] (default {d.cells})")
    p.add_argument("--lengths", type=_int_list, default=None, help="sequence lengths (default 28,56,...,896)")
    p.add_argument("--quick", action="store_true", help="lengths 6,12, few repeats, a short stream: under a minute")
    p.add_argument("--batch-size", type=_positive_int, default=None, help=f"training batch (default {d.batch_size})")
    p.add_argument("--features", type=_positive_int, default=d.features, help="input depth per step (default 28)")
    p.add_argument("--repeats", type=_positive_int, default=None, help=f"timed calls per figure (default {d.repeats})")
    p.add_argument("--budget-s", type=_positive_float, default=d.budget_s, help="compile-time budget per static point")
    p.add_argument("--budget-mb", type=_positive_float, default=d.budget_mb, help="memory budget per static point")
    p.add_argument("--stream", type=_int_list, default=None, help="lengths of the varying-length stream")
    p.add_argument("--bucket", type=_int_list, default=None, help="bucket sizes the stream's lengths round up to")
    p.add_argument("--unroll", type=_int_list, default=None, help="dynamic_rnn unroll factors (default 1,2,4,8)")
    p.add_argument("--seed", type=_non_negative_int, default=d.seed)


def _workload_list(text: str) -> tuple[Any, ...]:
    from rnnkit.workflows.bench_rows import TASKS, Workload

    workloads = []
    for item in text.split(","):
        parts = item.strip().split(":")
        ok = len(parts) == 4 and parts[0] in TASKS and all(p.isdigit() and int(p) >= 1 for p in parts[1:])
        if not ok:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated task:batch:steps:features with task train or infer, "
                f"e.g. train:128:28:28; got {item!r}"
            )
        workloads.append(Workload(parts[0], int(parts[1]), int(parts[2]), int(parts[3])))
    return tuple(workloads)


def _add_bench(commands: Any) -> None:
    p = commands.add_parser(
        "bench",
        help="training and inference speed of the seed's model: rnnkit against every peer installed",
        description="The seed's LSTM(128) -> GRU(256) -> dense(10), trained (TF1's Adam) and run by rnnkit "
        "(dynamic and static) and by PyTorch, TensorFlow 1, Keras 3 and Flax where installed; each row and "
        "workload in its own process. Time to first step, median samples/s, share of this machine's matmul peak.",
        epilog=BENCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default=None, metavar="DIR", help="results directory (default runs/bench-<time>)")
    p.add_argument("--quick", action="store_true", help="training b128 and inference b1024 at T=28, few repeats")
    p.add_argument("--full", action="store_true", help="add training at batch 1024 over 784 steps (slow on CPU)")
    p.add_argument("--rows", type=_name_list, default=None, help="only these rows (default: all)")
    p.add_argument("--workloads", type=_workload_list, default=None, metavar="TASK:B:T:F,...")
    p.add_argument("--repeats", type=_positive_int, default=None, help="at least this many timed steps (default 5)")
    p.add_argument("--min-time", type=_positive_float, default=None, help="and at least this many seconds (default 2)")
    p.add_argument(
        "--rounds",
        type=_positive_int,
        default=None,
        help="run all rows this many times, alternating their order; report each figure's median round (default 1)",
    )
    p.add_argument("--seed", type=_non_negative_int, default=0)


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
    p.add_argument(
        "--precision",
        default=d.precision,
        help="matmul precision: highest (full float32, TF1's numbers; the default), default (TF32 on NVIDIA "
        "GPUs: faster at large batches) or a jax.lax.DotAlgorithmPreset name such as TF32_TF32_F32_X3",
    )
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
    _add_bench(commands)
    _add_convert(commands)
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
    pr.add_argument("paths", metavar="RUN_DIR IMAGE", nargs="+", help="a run directory, then images")
    pr.add_argument("--steps", action="store_true", help="show the prediction after each step read")
    pr.add_argument(
        "--artifact", default=None, metavar="FILE", help="classify with an exported model instead (no RUN_DIR)"
    )
    _add_export(commands)
    _add_compare(commands)
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
        precision=args.precision,
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
            distributed.abandon(INTERRUPTED)
        return INTERRUPTED
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
    from rnnkit.errors import ConfigError
    from rnnkit.workflows.evaluate import predict_images, predict_with_artifact

    if args.artifact is not None:
        if args.steps:
            raise ConfigError("--steps needs a run directory: an exported model gives only the final logits")
        predictions = predict_with_artifact(args.artifact, args.paths)
    else:
        if len(args.paths) < 2:
            raise ConfigError(f"predict needs RUN_DIR and at least one IMAGE (or --artifact FILE); got {args.paths}")
        predictions = predict_images(args.paths[0], args.paths[1:], steps=args.steps)
    for p in predictions:
        probs = " ".join(f"{c}:{v:.3f}" for c, v in enumerate(p.probabilities))
        print(f"{p.path}: class {p.predicted} (p={p.probabilities[p.predicted]:.4f})  [{probs}]")
        if p.step_probabilities is not None:
            for t, step_probs in enumerate(p.step_probabilities, start=1):
                best = int(step_probs.argmax())
                print(f"  after step {t:3d}: class {best} (p={step_probs[best]:.4f})")
    return 0


def _export(args: argparse.Namespace) -> int:
    from rnnkit.export import export_run

    info = export_run(args.run_dir, args.out, mode=args.mode, with_state=args.with_state, platforms=args.platforms)
    meta = info.metadata
    length = "any length" if meta["time_steps"] is None else f"exactly {meta['time_steps']} steps"
    print(
        f"{info.path}: {meta['mode']} export of {args.run_dir} (step {meta['source']['step']}), {length}, "
        f"{meta['artifact_bytes']} bytes, platforms {','.join(meta['platforms'])}; metadata in {info.sidecar}"
    )
    return 0


def _compare(args: argparse.Namespace) -> int:
    import dataclasses
    from datetime import datetime
    from pathlib import Path

    from rich.table import Table

    from rnnkit.workflows.compare import CompareConfig, power_of_two_buckets, run_compare
    from rnnkit.workflows.compare_report import ROW_COLUMNS, recommendation, row_cells, write_report

    overrides = {
        "lengths": args.lengths,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "stream": args.stream,
        "buckets": args.bucket,
        "unroll": args.unroll,
    }
    given = {k: v for k, v in overrides.items() if v is not None}
    common = {
        "cells": args.cells,
        "features": args.features,
        "budget_s": args.budget_s,
        "budget_mb": args.budget_mb,
        "seed": args.seed,
        **given,
    }
    config = CompareConfig.quick_preset(**common) if args.quick else CompareConfig(**common)
    if args.stream is not None and args.bucket is None:
        config = dataclasses.replace(config, buckets=power_of_two_buckets(config.stream))
    config.validate()
    out = Path(args.out) if args.out else Path("runs") / f"compare-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    console = _console()
    console.print(f"rnnkit compare: {config.cells}, lengths {list(config.lengths)} -> {out}")
    result = run_compare(config, log=lambda line: console.print(line, highlight=False, markup=False))
    table = Table(
        title=f"static_rnn vs dynamic_rnn ({result['environment']['device']})",
        caption="~N: projected compile seconds of a static point over the budget, not run",
    )
    for _, label, _ in ROW_COLUMNS:
        table.add_column(label, justify="left" if label == "mode" else "right")
    for row in result["rows"]:
        table.add_row(*row_cells(row))
    console.print(table)
    for claim in result["claims"]:
        console.print(f"{claim['verdict']}: {claim['claim']}", highlight=False, markup=False)
    console.print(recommendation(result), highlight=False, markup=False)
    command = "rnnkit " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["compare"] else "rnnkit compare"
    files = write_report(result, out, command)
    console.print(f"report: {files['html']}  (figures and compare.json beside it)")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from datetime import datetime
    from pathlib import Path

    from rich.table import Table

    from rnnkit.errors import ConfigError
    from rnnkit.workflows.bench import (
        BenchConfig,
        cell_text,
        default_workloads,
        run_bench,
        with_overrides,
        write_results,
    )

    if args.quick and args.full:
        raise ConfigError("--quick and --full contradict each other: pick one")
    base = BenchConfig.quick_preset() if args.quick else BenchConfig(workloads=default_workloads(args.full))
    config = with_overrides(
        base,
        workloads=args.workloads,
        rows=args.rows,
        repeats=args.repeats,
        min_time_s=args.min_time,
        rounds=args.rounds,
        seed=args.seed,
    )
    config.validate()
    out = Path(args.out) if args.out else Path("runs") / f"bench-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    console = _console()
    result = run_bench(config, log=lambda line: console.print(line, highlight=False, markup=False))
    keys = [w.key for w in config.workloads]
    table = Table(title=f"samples/s, the seed's model ({result['environment']['device']})")
    table.add_column("row")
    for key in keys:
        table.add_column(key, justify="right")
    for row in result["rows"]:
        table.add_row(row["row"], *(cell_text(row["workloads"][key]) for key in keys))
    console.print(table)
    for key, versus in result["ratios"].items():
        if versus:
            said = ", ".join(f"{v:.2f}x {name}" for name, v in versus.items())
            console.print(f"rnnkit-dynamic, {key}: {said}", highlight=False, markup=False)
    command = "rnnkit " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["bench"] else "rnnkit bench"
    files = write_results(result, out, command)
    console.print(f"results: {files['json']}, {files['markdown']}, {files['png']}")
    return 0


def _data(args: argparse.Namespace) -> int:
    from rnnkit.data import MNIST_MIRRORS, download_mnist

    mirrors = args.mirror or MNIST_MIRRORS
    for path in download_mnist(args.data_dir, mirrors=mirrors, log=print):
        print(path)
    return 0


# --- rnnkit convert ------------------------------------------------------------------------------

CONVERT_EPILOG = """examples:
  rnnkit convert tf1 ckpt/model.ckpt-781 --out runs/from-tf1      # the seed's TF1 checkpoint
  rnnkit convert tf1 ckpt/ --cells lstm:128:forget_bias=0,gru:256 --out runs/x   # what names can't show
  rnnkit convert tf1 runs/seed3 --out ckpt/seed3.ckpt              # weights and Adam state, for TF1's Saver
  rnnkit convert torch runs/ra --out ra.pt    # a run trained with --cells lstm:128,gru_reset_after:256
  rnnkit convert torch model.safetensors --modules lstm,gru --out runs/from-torch
  rnnkit convert keras runs/seed3 --out seed3.npz                  # np.savez of get_weights() order
  rnnkit convert flax params.msgpack --out runs/from-flax          # Linen variables or an NNX state
  rnnkit convert flax runs/ra --style linen --out ra.msgpack       # (.safetensors: paths joined by /)
  rnnkit eval runs/from-tf1                                        # then use it like any run
"""


def _image_shape(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 28x28; got {text!r}")
    return int(parts[0]), int(parts[1])


def _add_convert(commands: Any) -> None:
    convert = commands.add_parser(
        "convert",
        help="bring TF1 checkpoints, PyTorch, Keras or Flax weights into a run directory, or take a run's weights out",
        description="Convert weights exactly. Into rnnkit the result is a run directory for rnnkit eval / predict / "
        "train --resume (which fine-tunes with a fresh optimizer); out of rnnkit, a weights file.",
        epilog=CONVERT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sources = convert.add_subparsers(dest="convert_source", required=True, metavar="FORMAT", parser_class=_Parser)

    def common(p: Any, source_help: str) -> None:
        p.add_argument("source", metavar="SOURCE", help=source_help)
        p.add_argument("--out", required=True, help="run directory to create, or weights file to write")
        p.add_argument("--cells", default=None, help="the stack as kind:units[:options], when names can't show it")
        p.add_argument("--layout", choices=("rows", "pixels", "permuted-pixels"), default="rows")
        p.add_argument("--image-shape", type=_image_shape, default=(28, 28), metavar="HxW", help="default 28x28")
        p.add_argument("--mode", choices=("static", "dynamic"), default="dynamic", help="how eval runs it")
        p.add_argument("--allow-unused", action="store_true", help="convert even if some names have no place")
        p.add_argument("--force", action="store_true", help="replace a non-empty --out")

    tf1 = sources.add_parser("tf1", help="a TF1 checkpoint (tf.compat.v1.train.Saver) <-> a run directory")
    common(tf1, "checkpoint prefix (model.ckpt-781), its .index file or its directory; or a run directory")
    tf1.add_argument("--scope", default="rnn", help="variable scope of the RNN (default rnn)")
    tf1.add_argument("--head", default=None, help="scope of the dense head (default: fully_connected or dense)")
    torch = sources.add_parser("torch", help="a PyTorch state_dict (.pt / .safetensors) <-> a run directory")
    common(torch, "a .pt/.safetensors state_dict (into a run directory), or a run directory (out to --out)")
    torch.add_argument("--modules", default=None, help="recurrent module prefixes in forward order, comma-separated")
    torch.add_argument("--head", default=None, help="prefix of the nn.Linear head (default fc)")
    torch.add_argument("--forget-bias", type=float, default=0.0, help="forget bias the LSTM cells add (default 0)")
    keras = sources.add_parser("keras", help="Keras 3 get_weights() lists (.npz) <-> a run directory")
    common(keras, "an .npz of get_weights() (np.savez(path, *weights)), or a run directory")
    keras.add_argument("--forget-bias", type=float, default=0.0, help="forget bias the LSTM cells add (default 0)")
    flax = sources.add_parser(
        "flax", help="Flax Linen / NNX parameter trees (.msgpack, .safetensors) <-> a run directory"
    )
    common(flax, "a .msgpack or .safetensors parameter tree (into a run directory), or a run directory")
    flax.add_argument("--modules", default=None, help="the cells' paths in forward order, comma-separated")
    flax.add_argument("--head", default=None, help="path of the dense head, where it is not the only one")
    flax.add_argument("--forget-bias", type=float, default=0.0, help="forget bias the LSTM cells add (default 0)")
    flax.add_argument("--style", choices=("nnx", "linen"), default="nnx", help="the tree written out (default nnx)")


def _convert(args: argparse.Namespace) -> int:
    from pathlib import Path

    import rnnkit.convert as rc
    from rnnkit.workflows.convert import (
        check_target,
        export_flax_file,
        export_keras_file,
        export_tf1_checkpoint,
        export_torch_file,
    )

    source = Path(args.source)
    run_dir_source = source.is_dir() and (args.convert_source != "tf1" or (source / "config.json").is_file())
    if run_dir_source and args.convert_source in ("torch", "keras", "flax", "tf1"):
        if args.convert_source == "tf1":
            out = export_tf1_checkpoint(source, args.out, force=args.force)
        elif args.convert_source == "flax":
            out = export_flax_file(source, args.out, style=args.style, force=args.force)
        else:
            export = export_torch_file if args.convert_source == "torch" else export_keras_file
            out = export(source, args.out, force=args.force)
        print(f"{source} -> {out}")
        return 0
    check_target(Path(args.out), args.force)  # before reading a source that may be large
    if args.convert_source == "tf1":
        conversion = rc.from_tf1_checkpoint(
            source, cells=args.cells, scope=args.scope, head=args.head, allow_unused=args.allow_unused
        )
    elif args.convert_source == "torch":
        modules = None if args.modules is None else [m.strip() for m in args.modules.split(",")]
        conversion = rc.from_torch_file(
            source,
            cells=args.cells,
            modules=modules,
            head=args.head,
            forget_bias=args.forget_bias,
            allow_unused=args.allow_unused,
        )
    elif args.convert_source == "flax":
        from rnnkit.convert._flax import load_flax_file

        modules = None if args.modules is None else [m.strip() for m in args.modules.split(",")]
        conversion = rc.from_flax_params(
            load_flax_file(source),
            cells=args.cells,
            modules=modules,
            head=args.head,
            forget_bias=args.forget_bias,
            allow_unused=args.allow_unused,
            source=str(source),
        )
    else:
        from rnnkit.workflows.convert import load_keras_file

        conversion = rc.from_keras_weights(
            load_keras_file(source), cells=args.cells, forget_bias=args.forget_bias, source=str(source)
        )
    run_dir = rc.write_run_dir(
        conversion, args.out, layout=args.layout, image_shape=args.image_shape, mode=args.mode, force=args.force
    )
    print(f"{source} -> {run_dir}")
    print(f"  cells {conversion.cells}, reading {conversion.input_size} features, {conversion.num_classes} classes")
    if conversion.adam is not None:
        print(f"  optimizer: TF1's Adam state after {conversion.adam.step} updates (train --resume continues it)")
    else:
        print("  optimizer: fresh (train --resume fine-tunes with a new Adam)")
    if conversion.skipped:
        print(f"  not converted ({len(conversion.skipped)}): {', '.join(conversion.skipped)}")
    print(f"  next: rnnkit eval {run_dir}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {
        "demo": _demo,
        "train": _train,
        "eval": _eval,
        "predict": _predict,
        "export": _export,
        "compare": _compare,
        "bench": _bench,
        "convert": _convert,
        "env": _env,
        "data": _data,
    }
    from rnnkit.data import DataError
    from rnnkit.errors import CheckpointError, ConfigError

    if args.command in ("train", "bench"):
        from rnnkit._host import tune_allocator

        tune_allocator()  # before JAX starts its threads; see rnnkit/_host.py
    if args.command in ("train", "eval", "predict"):
        from rnnkit._host import enable_compile_cache

        enable_compile_cache()  # a static model compiles once, not in every process
    try:
        return handlers[args.command](args)
    except (ConfigError, CheckpointError, DataError) as err:
        # The user's mistake or the user's files: one line, exit 2, no traceback.
        message = str(err).replace("\n", " ")
        parser.exit(2, f"{parser.prog}: error: {message}\n")


INTERRUPTED = 130  # the shell's status for a process stopped by SIGINT


def run() -> NoReturn:
    """The console script: `main()`, then exit with its status. After Ctrl-C (status 130, the
    checkpoint already written, fsynced and renamed) the process leaves at once with
    `os._exit`: interpreter teardown after an interrupted XLA step crashed inside jaxlib's
    runtime about once in fifteen runs (SIGSEGV, no Python frame), turning a clean, resumable
    stop into a crash report."""
    code = main()
    if code == INTERRUPTED:
        import os

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
