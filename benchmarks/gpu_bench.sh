#!/usr/bin/env bash
# Every GPU row the speed issue asks for, in one command sized for a lent GPU machine (the device
# tool: one H100/H200, ~15 minutes a session including start-up). On an H200 this should take
# under 4 minutes; it has not been run yet (no GPU session since it was written).
#
#   rows:      rnnkit dynamic (implementation auto, which is fused on GPUs), rnnkit dynamic with
#              per_step forced (does auto pick the faster?), rnnkit static, PyTorch eager (cuDNN),
#              Flax NNX
#   workloads: training b128 and b1024 at T=28, training b128 at T=784 (pixel MNIST),
#              inference b4096 at T=28
#
# The machine has JAX, PyTorch, equinox and optax but no network: rnnkit's other requirements
# (jaxtyping, rich, safetensors, matplotlib, pillow, flatbuffers) come as wheels in .whl/, made
# here with `pip download -d .whl jaxtyping rich safetensors matplotlib pillow flatbuffers` and
# carried along. Results go to $OUT/bench-gpu (bench.json, bench.md, bench.png).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d .whl ]; then
    python -m pip install --quiet --no-index --find-links .whl jaxtyping rich safetensors matplotlib pillow flatbuffers
fi
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
python -c "import jax, sys; b = jax.default_backend(); sys.exit(0 if b == 'gpu' else f'no GPU: JAX runs on {b}')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python -m rnnkit.cli bench \
    --rows rnnkit-dynamic,rnnkit-dynamic-per-step,rnnkit-static,torch-eager,flax-nnx \
    --workloads train:128:28:28,train:1024:28:28,train:128:784:1,infer:4096:28:28 \
    --repeats 10 --min-time 1 --out "${OUT:-runs}/bench-gpu"
