"""How fast rnnkit reads a TF1 checkpoint, against TensorFlow's own reader, side by side.

    TF_USE_LEGACY_KERAS=1 python benchmarks/tf1_checkpoint_read.py --out benchmarks/results/tf1-checkpoint-read

Builds the seed's graph (MultiRNNCell([LSTMCell(128), GRUCell(256)]) over 28 features, a
fully_connected head of 10, AdamOptimizer), trains it one step on random data so Adam's slots
exist, and saves it with tf.compat.v1.train.Saver: 27 tensors, 4.5 MB. Then, in interleaved
rounds (the order alternating, so drift on a busy machine falls on both), times reading every
tensor into NumPy arrays:

    rnnkit      rnnkit.convert.read_tf1_checkpoint(prefix)  (its own reader; every CRC32C checked)
    tensorflow  r = tf.train.load_checkpoint(prefix); r.get_tensor(name) for every name  (also checks them)

and prints (and with --out writes result.json and result.md) each reader's median time, its
quartiles and range, and the median of the per-round ratios. Both read from the page cache after
one read each to warm it. Needs tensorflow and tf-keras; both readers must return the same bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

import rnnkit
import rnnkit.convert as rc

v1 = tf.compat.v1


def save_seed_checkpoint(directory: Path) -> str:
    """The seed program's graph after one Adam step, saved by TF1's Saver; returns the prefix."""
    rng = np.random.default_rng(0)
    g = tf.Graph()
    with g.as_default(), v1.Session(graph=g) as sess:
        v1.set_random_seed(0)
        x = v1.placeholder(tf.float32, [None, 28, 28])
        y = v1.placeholder(tf.int32, [None])
        cell = v1.nn.rnn_cell.MultiRNNCell([v1.nn.rnn_cell.LSTMCell(128), v1.nn.rnn_cell.GRUCell(256)])
        outputs, _ = v1.nn.dynamic_rnn(cell, x, dtype=tf.float32)
        with v1.variable_scope("fully_connected"):
            weights = v1.get_variable("weights", [256, 10])
            biases = v1.get_variable("biases", [10], initializer=v1.zeros_initializer())
        logits = tf.matmul(outputs[:, -1], weights) + biases
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
        train_op = v1.train.AdamOptimizer(0.001).minimize(loss, global_step=v1.train.get_or_create_global_step())
        sess.run(v1.global_variables_initializer())
        feed = {x: rng.standard_normal((128, 28, 28)).astype(np.float32), y: rng.integers(0, 10, 128)}
        sess.run(train_op, feed)
        return v1.train.Saver().save(sess, str(directory / "model.ckpt"), global_step=1, write_meta_graph=False)


def read_rnnkit(prefix: str) -> dict[str, np.ndarray]:
    return rc.read_tf1_checkpoint(prefix)


def read_tensorflow(prefix: str) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def summary(times: list[float]) -> dict[str, float]:
    q = statistics.quantiles(times, n=4)
    ms = [t * 1e3 for t in (statistics.median(times), q[0], q[2], min(times), max(times))]
    return dict(zip(("median_ms", "q1_ms", "q3_ms", "min_ms", "max_ms"), ms, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=200, help="timed rounds, each reading once with both")
    parser.add_argument("--out", type=Path, help="a directory for result.json and result.md")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        prefix = save_seed_checkpoint(Path(tmp))
        size = sum(p.stat().st_size for p in Path(tmp).iterdir() if p.name.startswith("model.ckpt-1"))
        readers = {"rnnkit": read_rnnkit, "tensorflow": read_tensorflow}
        first = {name: read(prefix) for name, read in readers.items()}  # warms the page cache
        assert sorted(first["rnnkit"]) == sorted(first["tensorflow"])
        for name, value in first["rnnkit"].items():
            assert value.dtype == first["tensorflow"][name].dtype, name
            assert value.tobytes() == first["tensorflow"][name].tobytes(), name
        times: dict[str, list[float]] = {name: [] for name in readers}
        for round_ in range(args.rounds):
            order = list(readers) if round_ % 2 == 0 else list(reversed(readers))
            for name in order:
                start = time.perf_counter()
                readers[name](prefix)
                times[name].append(time.perf_counter() - start)
    ratios = [t / r for r, t in zip(times["rnnkit"], times["tensorflow"], strict=True)]
    result = {
        "checkpoint": f"the seed's graph after one Adam step, Saver: {len(first['rnnkit'])} tensors, {size} bytes",
        "rounds": args.rounds,
        "rnnkit": summary(times["rnnkit"]),
        "tensorflow": summary(times["tensorflow"]),
        "tensorflow_over_rnnkit_per_round": {
            "median": statistics.median(ratios),
            "q1": statistics.quantiles(ratios, n=4)[0],
            "q3": statistics.quantiles(ratios, n=4)[2],
        },
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "rnnkit": rnnkit.__version__,
            "numpy": np.__version__,
            "load_average_1min_after": round(os.getloadavg()[0], 2),  # other work on the machine meanwhile
        },
    }
    lines = [
        f"# Reading a TF1 checkpoint: rnnkit against tf.train.load_checkpoint ({result['checkpoint']})",
        "",
        f"{args.rounds} interleaved rounds; times to read every tensor into NumPy, in ms.",
        "",
        "| reader | median | quartiles | range |",
        "| --- | --- | --- | --- |",
    ]
    for name in readers:
        s = result[name]
        quartiles, extremes = f"{s['q1_ms']:.2f}-{s['q3_ms']:.2f}", f"{s['min_ms']:.2f}-{s['max_ms']:.2f}"
        lines.append(f"| {name} | {s['median_ms']:.2f} | {quartiles} | {extremes} |")
    r = result["tensorflow_over_rnnkit_per_round"]
    lines += [
        "",
        f"TensorFlow's time over rnnkit's, per round: median {r['median']:.2f} "
        f"(quartiles {r['q1']:.2f}-{r['q3']:.2f}).",
    ]
    lines += ["", "Machine: " + ", ".join(f"{k} {v}" for k, v in result["machine"].items())]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / "result.md").write_text(text)


if __name__ == "__main__":
    main()
