#!/usr/bin/env bash
# The GPU measurements the speed issue still needs, in one command sized for a lent GPU machine
# (the device tool: one H100/H200, ~15 minutes a session including start-up). Give the command a
# limit of 590 s (timeout_s): the jobs' own limits add up to 550.
#
# Its first run (2026-11-27, benchmarks/RESULTS.md "GPU") measured rnnkit's fused path at unroll
# 1-16, PyTorch (cuDNN) and Flax, and left these open, which this second version measures, the
# most wanted first:
#   1. probe-default: rnnkit at unroll 4 (the default), fused (a loop per layer, what auto runs)
#      against fused_stack (one loop for the whole stack); then probe-tf32: precision "default"
#      (TF32) instead of "highest" (TF1's numbers): does either close the gap to the targets?
#   2. torch-eager and torch-eager-fp32: cuDNN as PyTorch runs it by default, and with TF32 off;
#      the two show whether the issue's cuDNN figures were TF32 ones.
#   3. probe-cmdbuf: rnnkit with XLA's command buffers (CUDA graphs) taking the while loops too:
#      the fused step is launch-bound (about 15 us per scan iteration at T=28 batch 128).
#   4. rnnkit-dynamic (time to first step in a new process, after the allocator change 2e78fcd)
#      and rnnkit-static (never run on a GPU), training at T=28 batch 128 and inference.
#
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
probe() {  # probe NAME LIMIT_S XLA_FLAGS PROBE_ARGS...
    local name=$1 limit=$2 flags=$3
    shift 3
    job "$name" "$limit" env XLA_FLAGS="$flags" \
        python3 benchmarks/unroll_probe.py --out "$out/jobs/$name.json" --repeats 5 --min-time 0.5 "$@"
}
bench() {  # bench ROW LIMIT_S WORKLOADS
    job "$1" "$2" python3 -m rnnkit.cli bench --rows "$1" --workloads "$3" --repeats 5 --min-time 0.5 \
        --out "$out/jobs/$1"
}
all=train:128:28:28,train:1024:28:28,train:128:784:1,infer:4096:28:28
short=train:128:28:28,infer:4096:28:28

flags="${XLA_FLAGS:-}"
probe probe-default 140 "$flags" --workloads "$all" --unroll 4 --implementations auto,fused_stack
probe probe-tf32 80 "$flags" --workloads "$all" --unroll 4 --precisions default
bench torch-eager 60 "$all"
bench torch-eager-fp32 60 "$all"
# XLA's command buffers record runs of kernels as CUDA graphs; WHILE and CONDITIONAL let them
# take whole loops (no host round trip per iteration). An XLA that does not know a type refuses
# the flag at start-up: the job then fails at once, and the log says why.
cmdbuf=--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,WHILE,CONDITIONAL
probe probe-cmdbuf 90 "${flags:+$flags }$cmdbuf" --workloads "$short,train:128:784:1" --unroll 1,4
bench rnnkit-dynamic 45 train:128:28:28
bench rnnkit-static 75 "$short"
date -u
# The device tool returns at most 8 files: the jobs' results travel as one archive.
tar czf "$out/gpu.tgz" -C "$out" jobs && rm -rf "$out/jobs"
