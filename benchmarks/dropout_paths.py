"""The seed's model with dropout, through each of dynamic_rnn's paths, timed in alternation.

    PYTHONPATH=src python benchmarks/dropout_paths.py --dropout 0.2 --rounds 7

`rnnkit train --dropout P` wraps each layer in `DropoutWrapper(output_keep_prob=1 - P)`.
Wrapped layers once ran only on the per-step path; they now take the fused and native ones
(rnnkit/_fused.py, `_layered`). This times one training step (loss, gradients and an Adam
update, jitted; a fresh dropout key each step) and one inference call (dropout off, as `eval`
runs it) for each implementation, with and without dropout, in one process: every round runs
each configuration once for `--steps` steps, in turn, so the machine's drift falls on all of
them alike. It prints each configuration's median step time over the rounds and how many
times faster the first implementation listed (`auto`) ran than it, with the same dropout.

With `--torch` (PyTorch installed) PyTorch eager joins the rounds as a peer: nn.LSTM and nn.GRU
with `F.dropout` on the LSTM's output sequence and on the GRU's last output (what the head
reads), Adam, PyTorch's default threads. Its GRU is the reset-after formula (rnnkit's is
TF1's reset-before), as in `rnnkit bench`'s torch-eager row.
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
    parser.add_argument("--torch", action="store_true", help="time PyTorch eager in the same rounds")
    args = parser.parse_args(argv)
    if not 0.0 < args.dropout < 1.0:
        parser.error(f"--dropout must be in (0, 1); got {args.dropout}")
    if args.torch:
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            parser.error("--torch needs PyTorch, which is not installed here (`make peers` installs it)")

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
    torch_peers = _torch_peers(args, np.asarray(x), np.asarray(y), np.asarray(x_infer)) if args.torch else {}
    configs += list(torch_peers)
    times: dict[tuple[Any, ...], list[float]] = {(*c, w): [] for c in configs for w in ("train", "infer")}
    for r in range(args.rounds):
        for config in configs:
            if config in torch_peers:
                train, infer_torch = torch_peers[config]
                for kind, fn in (("train", train), ("infer", infer_torch)):
                    start = time.perf_counter()
                    for _ in range(args.steps):
                        fn()
                    times[(*config, kind)].append((time.perf_counter() - start) / args.steps)
                continue
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
    faster = configs[0][1] + " faster"
    print(f"{'workload':<22} {'dropout':>7} {'implementation':<15} {'ms/step':>8} {'samples/s':>10} {faster:>15}")
    for work, batch in (
        ("train b" + str(args.batch_size), args.batch_size),
        ("infer b" + str(args.infer_batch_size), args.infer_batch_size),
    ):
        kind = work.split()[0]
        for d, impl in configs:
            ms = statistics.median(times[(d, impl, kind)]) * 1e3
            first = statistics.median(times[(d, configs[0][1], kind)]) * 1e3
            ratio = f"{ms / first:.2f}x"
            print(f"{work:<22} {d:>7.2f} {impl:<15} {ms:>8.1f} {batch / ms * 1e3:>10.0f} {ratio:>15}")
    return 0


def _torch_peers(args: Any, x: Any, y: Any, x_infer: Any) -> dict[tuple[float, str], tuple[Any, Any]]:
    """PyTorch eager's training step and inference call, with and without dropout."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Model(nn.Module):
        def __init__(self, p: float) -> None:
            super().__init__()
            self.p = p
            self.lstm = nn.LSTM(28, 128, batch_first=True)
            self.gru = nn.GRU(128, 256, batch_first=True)
            self.head = nn.Linear(256, 10)

        def forward(self, v: torch.Tensor) -> torch.Tensor:
            seq = F.dropout(self.lstm(v)[0], self.p, self.training)
            return self.head(F.dropout(self.gru(seq)[0][:, -1], self.p, self.training))

    tx, ty, tx_infer = (torch.from_numpy(np.array(a)) for a in (x, y, x_infer))  # writable copies
    ty = ty.long()
    peers = {}
    for p in (args.dropout, 0.0):
        torch.manual_seed(0)
        model = Model(p)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

        def train(model: Any = model, optimizer: Any = optimizer) -> None:
            model.train()
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(tx), ty).backward()
            optimizer.step()

        def infer(model: Any = model) -> None:
            model.eval()
            with torch.inference_mode():
                model(tx_infer)

        train(), infer()  # warm-up
        peers[(p, f"torch {torch.__version__.split('+')[0]}")] = (train, infer)
    return peers


if __name__ == "__main__":
    sys.exit(main())
