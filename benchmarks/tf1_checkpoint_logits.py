"""TF1's test-set logits against those of the same checkpoint converted into rnnkit.

    TF_USE_LEGACY_KERAS=1 python benchmarks/tf1_seed_program.py --steps 50 --save ckpt/model.ckpt
    rnnkit convert tf1 ckpt/model.ckpt-50 --out runs/from-tf1
    python benchmarks/tf1_checkpoint_logits.py ckpt/model.ckpt-50 runs/from-tf1

Reads the logits TF1 computed for the 10 000 MNIST test images (PREFIX.test_logits.npy,
written by --save), runs the converted run directory on the same images (rows layout, as
`rnnkit eval` does), and prints the largest difference, how many predictions agree, and both
test accuracies. Needs no TensorFlow.
"""

from __future__ import annotations

import argparse

import equinox as eqx
import numpy as np

from rnnkit.data import load_mnist, to_layout
from rnnkit.runs import load_model, read_run_config
from rnnkit.workflows.train_step import make_predict, predict_logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prefix", help="the TF1 checkpoint prefix given to --save (with its -STEP suffix)")
    parser.add_argument("run_dir", help="the run directory rnnkit convert tf1 made from it")
    args = parser.parse_args()

    tf_logits = np.load(f"{args.prefix}.test_logits.npy")
    config = read_run_config(args.run_dir)
    model, _ = load_model(args.run_dir, config)
    splits = load_mnist(config.data_dir)
    x = to_layout(splits.test_images, config.layout)
    labels = splits.test_labels
    params, static = eqx.partition(model, eqx.is_inexact_array)
    rk_logits = predict_logits(make_predict(static), params, x, config.eval_batch_size)

    diff = np.abs(rk_logits - tf_logits)
    print(f"test images: {len(x)}, logits {rk_logits.shape}")
    print(f"largest |rnnkit - TF1| logit difference: {diff.max():.3g} (mean {diff.mean():.3g})")
    same = int(np.sum(rk_logits.argmax(-1) == tf_logits.argmax(-1)))
    print(f"same predicted class: {same} / {len(x)}")
    for name, lg in (("TF1", tf_logits), ("rnnkit", rk_logits)):
        print(f"{name:6s} test accuracy {np.mean(lg.argmax(-1) == labels):.4f}")


if __name__ == "__main__":
    main()
