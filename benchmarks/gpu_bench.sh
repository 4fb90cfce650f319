#!/usr/bin/env bash
# The GPU measurements the speed issue still needs, in one command sized for a lent GPU machine
# (the device tool: one H100/H200, ~15 minutes a session including start-up). Give the command a
# limit of 450 s (timeout_s): the jobs' own limits add up to 400.
#
# Its fifth version (the fourth, at 69f4031, never ran: no session had a device) measures the
# per-step Pallas kernels (implementation="pallas", src/rnnkit/_pallas.py) against the fused path
# XLA runs now, in about 400 s, each job under its own limit:
#   1. check: pallas's and fused's logits and gradients against the same model on the host CPU
#      (benchmarks/precision_probe.py), so a kernel that computes wrong numbers shows first;
#   2. probe: fused and pallas at the issue's four GPU workloads, one process;
#   3. tiles: other tilings of the pallas kernels (batch rows x hidden units x warps);
#   4. torch: PyTorch's cuDNN rows with its defaults, for the issue's ratios in the same run.
# The device machines' image has JAX, PyTorch, Flax, equinox, optax, jaxtyping, rich, safetensors,
# matplotlib and pillow. Where one is missing, carry it as wheels in .whl/ (see the device tool's
# README); they are installed from there first. Everything goes to $OUT (default runs/gpu): log,
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

job check 60 python3 benchmarks/precision_probe.py --out "$out/jobs/check.json" --precisions highest \
    --implementations fused,pallas --workloads train:128:28:28,train:16:100:1
job probe 200 python3 benchmarks/unroll_probe.py --out "$out/jobs/probe.json" --repeats 3 --min-time 0.3 \
    --workloads "$all" --implementations pallas,fused --unroll 4
job tiles 70 python3 benchmarks/unroll_probe.py --out "$out/jobs/tiles.json" --repeats 3 --min-time 0.3 \
    --workloads train:128:28:28 --implementations pallas --pallas-tiles 16x16x2,16x64x4,32x32x4,16x32x2 --unroll 4
job torch 70 python3 -m rnnkit.cli bench --rows torch-eager --workloads train:128:28:28,train:128:784:1,infer:4096:28:28 \
    --repeats 3 --min-time 0.3 --out "$out/jobs/torch"
date -u
# The device tool returns at most 8 files: the jobs' results travel as one archive.
tar czf "$out/gpu.tgz" -C "$out" jobs && rm -rf "$out/jobs"
