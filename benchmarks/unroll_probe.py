"""How fast rnnkit's dynamic_rnn trains and predicts for each `unroll` factor, on whatever JAX
runs on (written for the GPU rows of the speed issue: on GPUs `implementation="auto"` is the
fused path, whose loops are `lax.scan`s that `unroll` widens).

    PYTHONPATH=src python benchmarks/unroll_probe.py --out probe.json \\
        --workloads train:128:28:28,train:128:784:1,infer:4096:28:28 --unroll 1,4,8 \\
        --implementations auto,per_step --precisions highest,default

`--precisions` are the model's matmul precisions ("highest", rnnkit's default and TF1's numbers;
"default", JAX's, TF32 on NVIDIA GPUs). XLA flags to compare go in XLA_FLAGS, one process each.
Each (workload, implementation, precision, unroll) is built and timed in this process with the same
runner and timing rule as `rnnkit bench` (its rnnkit-dynamic row, with `unroll` passed to the
model). Prints one line per figure and writes every figure to --out as JSON, rewritten
(atomically) after each one, so a run cut short keeps what it measured. The experimental Pallas
kernels (rnnkit.experimental.pallas) are not one of dynamic_rnn's implementations;
benchmarks/pallas_probe.py times them.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    import jax

    from rnnkit.cli import _workload_list
    from rnnkit.workflows.bench import BenchConfig, _RnnkitRunner, measure
    from rnnkit.workflows.checkpoint import atomic_write_text

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--workloads", default="train:128:28:28,train:128:784:1,infer:4096:28:28")
    p.add_argument("--unroll", default="1,4,8")
    p.add_argument("--implementations", default="auto")
    p.add_argument("--precisions", default="highest")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--min-time", type=float, default=0.5)
    args = p.parse_args(argv)
    workloads = _workload_list(args.workloads)
    unrolls = [int(u) for u in args.unroll.split(",")]
    implementations = args.implementations.split(",")
    precisions = args.precisions.split(",")
    config = BenchConfig(workloads=workloads, repeats=args.repeats, min_time_s=args.min_time)

    data = {
        "command": " ".join(sys.argv),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0].device_kind),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "figures": [],
    }
    for w, impl, prec, u in itertools.product(workloads, implementations, precisions, unrolls):
        t0 = time.perf_counter()
        try:
            r = measure(functools.partial(_RnnkitRunner, w, 0, "dynamic", impl, unroll=u, precision=prec), w, config)
        except Exception as e:  # a figure that fails is recorded, the rest still run
            r = {"status": "error", "error": f"{type(e).__name__}: {e}"[:500]}
        r.update(workload=w.key, implementation_asked=impl, precision=prec, unroll=u, wall_s=time.perf_counter() - t0)
        data["figures"].append(r)
        atomic_write_text(Path(args.out), json.dumps(data, indent=1))
        rate = f"{r['samples_per_s']:10.0f} samples/s" if r["status"] == "ok" else r["error"]
        print(f"{w.key:24s} {impl:18s} {prec:8s} unroll={u:<3d} {rate}  ({r['wall_s']:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
