"""How far each matmul precision moves the seed model's logits and gradients, on whatever JAX
runs on (written for GPUs, where "highest" is full float32, "default" is TF32, and JAX's named
algorithms such as TF32_TF32_F32_X3 or BF16_BF16_F32_X6 multiply on tensor cores in several
passes, for near-float32 results).

    PYTHONPATH=src python benchmarks/precision_probe.py --out precision.json \\
        --precisions highest,TF32_TF32_F32_X3,BF16_BF16_F32_X6,default --implementations auto,fused

The reference is the same model at "highest" on the host CPU (full float32, XLA's CPU
backend), same weights and batch. Each precision's figures are relative errors against it:
max |logits - ref| / max |ref|, and over every weight's gradient max |g - ref| / max |ref|.
"highest" on the accelerator shows the floor (two float32 computations summing in different
orders). `--implementations` checks dynamic_rnn's ways of running the loop the same way
(each against the same reference). Workloads: the seed's (batch 128, 28 steps of 28) and pixel MNIST (batch 32, 784
steps of 1), where rounding has 28 times as many steps to grow.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any


def _errors(got: Any, ref: Any) -> float:
    import numpy as np

    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    return float(np.max(np.abs(got - ref)) / max(np.max(np.abs(ref)), 1e-30))


def main(argv: list[str] | None = None) -> int:
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import optax

    from rnnkit.cli import _workload_list
    from rnnkit.models.classifier import build_classifier, parse_cells
    from rnnkit.workflows.bench_rows import GRU_UNITS, LSTM_UNITS, NUM_CLASSES, Workload
    from rnnkit.workflows.checkpoint import atomic_write_text

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--precisions", default="highest,TF32_TF32_F32_X3,BF16_BF16_F32_X6,default")
    p.add_argument("--implementations", default="auto")
    p.add_argument("--workloads", default="train:128:28:28,train:32:784:1")
    args = p.parse_args(argv)
    cpu = jax.devices("cpu")[0]
    data: dict[str, Any] = {"command": " ".join(sys.argv), "jax": jax.__version__, "backend": jax.default_backend()}
    data["device"], data["figures"] = str(jax.devices()[0].device_kind), []

    def loss_and_grads(model: Any, x: Any, y: Any) -> Any:
        def loss(m: Any) -> Any:
            logits = m(x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits

        (value, logits), grads = eqx.filter_value_and_grad(loss, has_aux=True)(model)
        return value, logits, jax.tree.leaves(eqx.filter(grads, eqx.is_array))

    run = eqx.filter_jit(loss_and_grads)
    for w in _workload_list(args.workloads):
        x, y = w.batch_arrays(0)

        def build(precision: Any, implementation: str = "auto", w: Workload = w) -> Any:
            return build_classifier(
                parse_cells(f"lstm:{LSTM_UNITS},gru:{GRU_UNITS}"),
                input_size=w.features,
                num_classes=NUM_CLASSES,
                num_steps=w.steps,
                mode="dynamic",
                key=jax.random.key(0),
                precision=precision,
                implementation=implementation,
            )

        ref_model = jax.device_put(build("highest"), cpu)
        ref_loss, ref_logits, ref_grads = run(ref_model, jax.device_put(x, cpu), jax.device_put(jnp.asarray(y), cpu))
        for impl, precision in itertools.product(args.implementations.split(","), args.precisions.split(",")):
            try:
                loss, logits, grads = run(build(precision, impl), jnp.asarray(x), jnp.asarray(y))
                figure = {
                    "status": "ok",
                    "logits": _errors(logits, ref_logits),
                    "grads": max(_errors(g, r) for g, r in zip(grads, ref_grads, strict=True)),
                    "loss": abs(float(loss) - float(ref_loss)) / abs(float(ref_loss)),
                }
                line = f"logits {figure['logits']:.2e}  grads {figure['grads']:.2e}  loss {figure['loss']:.2e}"
            except Exception as e:  # a precision the backend refuses is recorded; the rest still run
                figure = {"status": "error", "error": f"{type(e).__name__}: {e}"[:500]}
                line = figure["error"]
            figure.update(workload=w.key, precision=precision, implementation=impl)
            data["figures"].append(figure)
            atomic_write_text(Path(args.out), json.dumps(data, indent=1))
            print(f"{w.key:22s} {impl:8s} {precision:18s} {line}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
