"""The seed's model with dropout, through each of dynamic_rnn's paths, timed in alternation.

    PYTHONPATH=src python benchmarks/dropout_paths.py --dropout 0.2 --rounds 7

`rnnkit train --dropout P` wraps each layer in `DropoutWrapper(output_keep_prob=1 - P)`.
Wrapped layers once ran only on the per-step path; they now take the fused and native ones
(rnnkit/_fused.py, `_layered`). This times one training step (loss, gradients and an Adam
update, jitted; a fresh dropout key each step) and one inference call (dropout off, as `eval`
runs it) for each implementation, with and without dropout, in one process: every round runs
each configuration once for `--steps` steps, in turn, so the machine's drift falls on all of
them alike. It prints each configuration's median step time over the rounds and its ratio
to the per-step path with the same dropout.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dropout", type=float, default=0.2, help="fraction of layer outputs dropped (default 0.2)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--infer-batch-size", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="steps per configuration per round")
    parser.add_argument(
        "--implementations", default="auto,per_step", help="dynamic_rnn implementations, comma-separated"
    )
    args = parser.parse_args(argv)
    if not 0.0 < args.dropout < 1.0:
        parser.error(f"--dropout must be in (0, 1); got {args.dropout}")

    from rnnkit._host import tune_allocator

    tuned = tune_allocator()  # as rnnkit train does, before JAX starts its threads

    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from rnnkit._rnn import auto_implementation
    from rnnkit.models.classifier import build_classifier, parse_cells

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((args.batch_size, 28, 28)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, args.batch_size))
    x_infer = jnp.asarray(rng.standard_normal((args.infer_batch_size, 28, 28)), jnp.float32)
    optimizer = optax.adam(1e-3)

    def model(dropout: float, implementation: str) -> Any:
        return build_classifier(
            parse_cells("lstm:128,gru:256"),
            input_size=28,
            num_classes=10,
            num_steps=28,
            mode="dynamic",
            key=jax.random.key(0),
            dropout=dropout,
            implementation=implementation,
        )

    @eqx.filter_jit
    def train_step(m: Any, opt_state: Any, key: Any) -> Any:
        def loss(m: Any) -> Any:
            logits = m.with_dropout_key(key)(x)
            return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

        grads = eqx.filter_grad(loss)(m)
        updates, opt_state = optimizer.update(eqx.filter(grads, eqx.is_inexact_array), opt_state)
        return eqx.apply_updates(m, updates), opt_state

    @eqx.filter_jit
    def infer(m: Any) -> Any:
        return eqx.nn.inference_mode(m)(x_infer)

    configs = [(d, impl) for d in (args.dropout, 0.0) for impl in args.implementations.split(",")]
    state = {}
    for config in configs:
        m = model(*config)
        opt_state = optimizer.init(eqx.filter(m, eqx.is_inexact_array))
        m, opt_state = train_step(m, opt_state, jax.random.key(0))  # compile
        jax.block_until_ready(infer(m))
        state[config] = (m, opt_state)
    times: dict[tuple[Any, ...], list[float]] = {(*c, w): [] for c in configs for w in ("train", "infer")}
    for r in range(args.rounds):
        for config in configs:
            m, opt_state = state[config]
            start = time.perf_counter()
            for i in range(args.steps):
                m, opt_state = train_step(m, opt_state, jax.random.key(r * args.steps + i))
            jax.block_until_ready(m)
            times[(*config, "train")].append((time.perf_counter() - start) / args.steps)
            state[config] = (m, opt_state)
            start = time.perf_counter()
            for _ in range(args.steps):
                out = infer(m)
            jax.block_until_ready(out)
            times[(*config, "infer")].append((time.perf_counter() - start) / args.steps)

    print(
        f"jax {jax.__version__}, {jax.devices()[0].device_kind}, auto = {auto_implementation()}, "
        f"allocator tuned: {tuned}; {args.rounds} rounds x {args.steps} steps, medians"
    )
    print(
        f"{'workload':<22} {'dropout':>7} {'implementation':<15} {'ms/step':>8} {'samples/s':>10} {'vs per_step':>11}"
    )
    for work, batch in (
        ("train b" + str(args.batch_size), args.batch_size),
        ("infer b" + str(args.infer_batch_size), args.infer_batch_size),
    ):
        kind = work.split()[0]
        for d, impl in configs:
            ms = statistics.median(times[(d, impl, kind)]) * 1e3
            base = times.get((d, "per_step", kind))
            ratio = f"{statistics.median(base) * 1e3 / ms:.2f}x" if base else "-"
            print(f"{work:<22} {d:>7.2f} {impl:<15} {ms:>8.1f} {batch / ms * 1e3:>10.0f} {ratio:>11}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
