#!/usr/bin/env bash
# The GPU measurements the speed issue still needs, in one command sized for a lent GPU machine
# (the device tool: one H100/H200, ~15 minutes a session including start-up). Give the command a
# limit of 450 s (timeout_s): the jobs' own limits add up to 400.
#
# Its second and third runs (2026-11-27, benchmarks/RESULTS.md "GPU, second and third runs")
# settled fused against fused_stack, TF32 and the near-float32 tensor-core algorithms, command
# buffers, and what the cold first step spends (XLA's GEMM autotuning). This fourth version, in
# about 400 s (each job under its own limit):
#   1. headline: rnnkit-dynamic, PyTorch with its defaults and PyTorch in full float32 in one
#      bench run, so the issue's ratios come from one run (they came from separate processes);
#   2. infer-impl: fused against per_step for inference at batch 4096, interleaved in one
#      process (per_step and static came 5-10% ahead of fused in both earlier runs, but each from
#      its own process): should auto run per_step where nothing is differentiated?
#   3. autotune-cache-*: two new processes sharing XLA's per-fusion autotuning cache: does the
#      second skip the 15 s of autotuning a different program of the same shapes would redo?
#      If so, rnnkit could keep that cache beside its compilation cache.
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
b128=train:128:28:28

flags="${XLA_FLAGS:-}"
bench rnnkit-dynamic,torch-eager,torch-eager-fp32 270 "$all"
probe infer-impl 60 "$flags" --workloads infer:4096:28:28 --unroll 4 --implementations auto,per_step,auto,per_step
cache=$(mktemp -d)
tuned="${flags:+$flags }--xla_gpu_per_fusion_autotune_cache_dir=$cache"
probe autotune-cache-1 35 "$tuned" --workloads "$b128" --unroll 4
probe autotune-cache-2 35 "$tuned" --workloads "$b128" --unroll 4
date -u
# The device tool returns at most 8 files: the jobs' results travel as one archive.
tar czf "$out/gpu.tgz" -C "$out" jobs && rm -rf "$out/jobs"
