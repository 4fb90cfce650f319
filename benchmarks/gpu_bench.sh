#!/usr/bin/env bash
# The GPU measurements the speed issue still needs, in one command sized for a lent GPU machine
# (the device tool: one H100/H200, ~15 minutes a session including start-up). Give the command a
# limit of 330 s (timeout_s): the jobs' own limits add up to 285.
#
# Its second run (2026-11-27, benchmarks/RESULTS.md "GPU, second run") settled fused against
# fused_stack, TF32 against full float32 on both sides, command buffers and the first step's
# compile. This third version measures what that run left open, in about 300 s:
#   1. probe-x3: JAX's multi-pass tensor-core algorithms, TF32_TF32_F32_X3 and BF16_BF16_F32_X6,
#      which give near-float32 products: at T=28 batch 128, T=784 and inference at batch 4096,
#      the two targets the full-float32 fused path misses;
#   2. precision: how far each precision moves the seed model's logits and gradients from the
#      CPU's full-float32 figures (benchmarks/precision_probe.py), the floor being "highest";
#   3. compile-*: the first training step of a new process (21-23 s at "highest", 10 s at
#      "default") with XLA's GEMM autotuning off and with Triton GEMMs off: is autotuning what
#      the cold compile spends, and what does the step lose without it?
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
short=train:128:28:28,train:128:784:1,infer:4096:28:28
b128=train:128:28:28

flags="${XLA_FLAGS:-}"
probe probe-x3 100 "$flags" --workloads "$short" --unroll 4 --precisions TF32_TF32_F32_X3,BF16_BF16_F32_X6
job precision 80 python3 benchmarks/precision_probe.py --out "$out/jobs/precision.json" \
    --precisions highest,TF32_TF32_F32_X3,BF16_BF16_F32_X6,default
probe compile-default 35 "$flags" --workloads "$b128" --unroll 4
probe compile-autotune0 35 "${flags:+$flags }--xla_gpu_autotune_level=0" --workloads "$b128" --unroll 4
probe compile-notriton 35 "${flags:+$flags }--xla_gpu_enable_triton_gemm=false" --workloads "$b128" --unroll 4
date -u
# The device tool returns at most 8 files: the jobs' results travel as one archive.
tar czf "$out/gpu.tgz" -C "$out" jobs && rm -rf "$out/jobs"
