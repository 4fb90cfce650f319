#!/usr/bin/env bash
# Every GPU row the speed issue asks for, in one command sized for a lent GPU machine (the device
# tool: one H100/H200, ~15 minutes a session including start-up). Give the command a limit of
# 580 s (timeout_s): the rows' own limits add up to 540.
#
#   rows:      rnnkit dynamic (implementation auto, which is fused on GPUs, unroll 4 there),
#              PyTorch eager (cuDNN), Flax NNX, rnnkit static, rnnkit dynamic with per_step
#              forced (does auto pick the faster?); in that order, the most wanted first
#   workloads: training b128 and b1024 at T=28, training b128 at T=784 (pixel MNIST),
#              inference b4096 at T=28
#
# Its first run (2026-11-27, benchmarks/RESULTS.md) ran the unroll probe first and the bench
# after it, and was cut short after the bench's first row: rnnkit's bench processes took 36-70 s
# to their first step then. To repeat the probe: benchmarks/unroll_probe.py --help.
#
# The device machines' image has JAX, PyTorch, Flax, equinox, optax, jaxtyping, rich, safetensors,
# matplotlib and pillow. Where one is missing, carry it as wheels in .whl/ (see the device tool's
# README); they are installed from there first. Everything goes to $OUT (default runs/gpu):
# log, and bench-gpu.tgz holding rows/<row>/{bench.json,bench.md,bench.png}. Each figure is in
# the log as it comes, so a row cut short still reports what it measured.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-runs/gpu}"
mkdir -p "$out"
exec > >(tee "$out/log") 2>&1
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
date -u
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import jax, torch, flax; print('jax', jax.__version__, jax.devices(), 'torch', torch.__version__, 'flax', flax.__version__)"
python3 -c "import jax, sys; b = jax.default_backend(); sys.exit(0 if b == 'gpu' else f'no GPU: JAX runs on {b}')" || exit 1
# One bench per row, each under its own limit (ROW_LIMITS, seconds, in row order), so a slow
# row costs only itself: timeout ends the row's whole process group. 9 minutes at most. The first
# run's rnnkit-dynamic row took about 5.5 minutes for its four workloads (each built twice: cold
# and from the compilation cache); 240 s bets on the allocator change (2e78fcd) shortening that.
rows=(rnnkit-dynamic torch-eager flax-nnx rnnkit-static rnnkit-dynamic-per-step)
read -r -a limits <<<"${ROW_LIMITS:-240 60 60 90 90}"
for k in "${!rows[@]}"; do
    row=${rows[$k]}
    echo "== $row (limit ${limits[$k]} s)"
    timeout "${limits[$k]}" python3 -m rnnkit.cli bench --rows "$row" \
        --workloads train:128:28:28,train:1024:28:28,train:128:784:1,infer:4096:28:28 \
        --repeats 5 --min-time 0.5 --out "$out/rows/$row" || echo "== $row: exit status $? (124: over its limit)"
done
date -u
# The device tool returns at most 8 files: the per-row results travel as one archive.
tar czf "$out/bench-gpu.tgz" -C "$out" rows && rm -rf "$out/rows"
