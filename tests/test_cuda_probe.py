"""The speed issue's GPU probe (benchmarks/cuda_probe.py) checked without a GPU: its CUDA kernels
compiled for the CPU and run on CPU threads through its XLA handlers, against the fused path
(values and gradients), then under ThreadSanitizer and AddressSanitizer. About two minutes.
Research code, so out of the default run: marked research (`pytest -m research
tests/test_cuda_probe.py`) and slow. The probe runs in a subprocess: nothing here imports it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = Path(__file__).resolve().parents[1] / "benchmarks" / "cuda_probe.py"


@pytest.mark.research
@pytest.mark.slow
@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "c++")) is None, reason="needs a C++ compiler")
def test_persistent_kernels_on_cpu_threads() -> None:
    done = subprocess.run([sys.executable, str(PROBE), "host"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    checked = [line for line in done.stdout.splitlines() if "relative difference" in line]
    assert len(checked) == 14, done.stdout  # seven shapes, LSTM and GRU
    sanitized = [line for line in done.stdout.splitlines() if line.endswith(": ok")]
    assert len(sanitized) == 12, done.stdout  # six shapes under each sanitizer
