#!/usr/bin/env bash
# The GPU measurements the speed issue still needs, in one command sized for one H100 or H200
# held for about 15 minutes including start-up. Give the command a limit of 450 s: the jobs'
# own limits add up to 400.
#
# Its sixth version asks whether a persistent kernel (one launch per layer, the time loop
# inside; benchmarks/cuda_probe.py) gets a step under XLA's fused loop, in about 400 s, each job
# under its own limit:
#   1. cuda: the probe's LSTM and GRU kernels (forward, and backward behind a custom VJP),
#      checked against fused, then timed against it (forward pass and gradient) at T=28 and
#      T=784 (batch 128) and at batch 1024, at several tilings;
#   2. probe: fused (what auto runs) at the issue's four GPU workloads, for this run's baseline;
#   3. torch: PyTorch's cuDNN rows with its defaults, for the issue's ratios in the same run.
# The fifth version (git show 20035df:benchmarks/gpu_bench.sh) measured the per-step Pallas
# kernels: RESULTS.md, "GPU, fourth run".
# It expects JAX, PyTorch, Flax, equinox, optax, jaxtyping, rich, safetensors, matplotlib and
# pillow on the GPU machine. Where one is missing, put it as wheels in .whl/; they are installed
# from there first. Everything goes to $OUT (default runs/gpu): log,
# and gpu.tgz holding each job's JSON and tables. Each figure is in the log as it comes, so a job
# cut short still reports what it measured.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-runs/gpu}"
mkdir -p "$out/jobs"
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

# job NAME LIMIT_S COMMAND...: one job under its own limit, so a slow one costs only itself
# (timeout ends the job's whole process group).
job() {
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit $limit s) $(date -u +%T)"
    timeout "$limit" "$@" || echo "== $name: exit status $? (124: over its limit)"
}
all=train:128:28:28,train:128:784:1,infer:4096:28:28,train:1024:28:28

job cuda 180 env OUT="$out/jobs" python3 benchmarks/cuda_probe.py
job probe 150 python3 benchmarks/unroll_probe.py --out "$out/jobs/probe.json" --repeats 3 --min-time 0.3 \
    --workloads "$all" --implementations fused --unroll 4
job torch 70 python3 -m rnnkit.cli bench --rows torch-eager --workloads train:128:28:28,train:128:784:1,infer:4096:28:28 \
    --repeats 3 --min-time 0.3 --out "$out/jobs/torch"
date -u
# The jobs' results travel as one archive: one file to copy off the machine.
tar czf "$out/gpu.tgz" -C "$out" jobs && rm -rf "$out/jobs"
