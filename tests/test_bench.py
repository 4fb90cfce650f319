"""`rnnkit bench`'s harness: what it counts, how it runs a row, what it writes. No speed is
asserted here (benchmarks/RESULTS.md holds the measurements); these check the bookkeeping."""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import jax
import pytest

from rnnkit._rnn import auto_implementation
from rnnkit.cli import main
from rnnkit.workflows import bench
from rnnkit.workflows.bench import BenchConfig, flops_per_sample, markdown_table, ratios, run_bench, run_row
from rnnkit.workflows.bench_rows import Workload

from cases import benchmark_script

TINY = Workload("train", 4, 3, 28)


pytestmark = pytest.mark.usefixtures("standard_promotion")  # optax mixes Python floats and int32 counts


def test_flop_count_is_the_seed_models_matmuls() -> None:
    """Counted independently: every matmul of one step as (rows in, columns out), 2 FLOPs per
    multiply-add, the backward pass twice the forward."""
    step_matmuls = [(28 + 128, 4 * 128), (128 + 256, 2 * 256), (128 + 256, 256)]  # LSTM; GRU gates, candidate
    forward = 28 * sum(2 * k * n for k, n in step_matmuls) + 2 * 256 * 10
    assert flops_per_sample(Workload("infer", 128, 28, 28)) == forward
    assert flops_per_sample(Workload("train", 1024, 28, 28)) == 3 * forward
    assert 62e6 < 3 * forward < 64e6  # the "~63 MFLOP per training sample"
    pixels = 784 * (2 * (1 + 128) * 512 + 2 * 384 * 768) + 2 * 256 * 10
    assert flops_per_sample(Workload("infer", 8, 784, 1)) == pixels


def test_unroll_probe_records_every_figure_and_keeps_going_past_a_failure(tmp_path: Path) -> None:
    """benchmarks/unroll_probe.py (the GPU unroll sweep): one figure per
    (implementation, unroll), the implementation auto ran recorded, a failing one kept as an error."""
    probe = benchmark_script("unroll_probe")
    out = tmp_path / "probe.json"
    argv = ["--out", str(out), "--workloads", "infer:4:3:28", "--unroll", "2", "--implementations", "auto,cudnn"]
    assert probe.main([*argv, "--precisions", "highest,default", "--repeats", "1", "--min-time", "0"]) == 0
    figures = json.loads(out.read_text())["figures"]
    assert [(f["implementation_asked"], f["precision"], f["unroll"]) for f in figures] == [
        ("auto", "highest", 2),
        ("auto", "default", 2),
        ("cudnn", "highest", 2),
        ("cudnn", "default", 2),
    ]
    for f in figures[:2]:
        assert f["status"] == "ok", f
        assert f["workload"] == "infer b4 T3 F28"
        assert f["implementation"] == auto_implementation()
        assert f["samples_per_s"] > 0
    for f in figures[2:]:
        assert f["status"] == "error"
        assert "implementation must be one of" in f["error"], f


def test_static_row_skips_long_sequences_with_the_reason() -> None:
    config = BenchConfig(workloads=(Workload("infer", 2, 784, 1),), repeats=1, min_time_s=0.0)
    r = run_row(bench.find_row("rnnkit-static"), config)["workloads"]["infer b2 T784 F1"]
    assert r["status"] == "skipped"
    assert "built up to 56 steps" in r["reason"]


def test_tf32_row_skips_on_cpu_and_its_runner_builds_at_jaxs_default_precision() -> None:
    config = BenchConfig(workloads=(TINY,), repeats=1, min_time_s=0.0)
    r = run_row(bench.find_row("rnnkit-dynamic-tf32"), config)["workloads"][TINY.key]
    assert r["status"] == "skipped"
    assert "on CPU JAX's default precision is full float32" in r["reason"]
    # What the row builds on a GPU, built here: the cells (static fields, kept in the params'
    # tree) and the head at precision None, where the other rows' are "highest".
    tf32 = bench._RnnkitRunner(Workload("infer", 4, 3, 28), 0, "dynamic", "per_step", precision=None)
    assert [c.precision for c in tf32.params.cell.cells] == [None, None]
    assert tf32.params.precision is None


def test_whole_run_in_subprocesses_writes_json_table_and_chart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """rnnkit-dynamic for real, in its own process (the child protocol), and a peer reported as
    not installed."""
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real_find_spec(name))
    monkeypatch.setattr(bench, "matmul_peak", lambda: {"gflops": 100.0, "by": "xla", "size": 8, "rates": {}})
    config = BenchConfig(workloads=(TINY,), rows=("rnnkit-dynamic", "torch-eager"), repeats=2, min_time_s=0.0)
    result = run_bench(config)
    rows = {r["row"]: r for r in result["rows"]}
    ours = rows["rnnkit-dynamic"]["workloads"][TINY.key]
    assert ours["status"] == "ok", ours
    assert ours["implementation"] == auto_implementation()  # what auto ran, kept with the figures
    assert rows["rnnkit-dynamic"]["versions"]["rnnkit"]
    assert ours["steps_timed"] >= 2
    assert ours["step_s_min"] <= ours["step_s"]
    assert ours["samples_per_s"] == pytest.approx(TINY.batch / ours["step_s"])
    assert ours["first_step_s"] > ours["step_s_min"]  # the first step includes the compile
    assert ours["first_step_warm_cache_s"] > 0  # a second build after jax.clear_caches()
    assert ours["fraction_of_peak"] == pytest.approx(ours["samples_per_s"] * flops_per_sample(TINY) / 100e9)
    assert rows["torch-eager"]["workloads"][TINY.key] == {"status": "skipped", "reason": "torch is not installed"}
    assert result["ratios"] == {TINY.key: {}}

    files = bench.write_results(result, tmp_path / "out", "rnnkit bench --test")
    saved = json.loads(files["json"].read_text())
    assert saved["command"] == "rnnkit bench --test"
    assert saved["rows"] == json.loads(json.dumps(result["rows"]))
    table = files["markdown"].read_text()
    assert "| rnnkit-dynamic | " in table
    assert "| torch-eager | skipped |" in table
    assert ("Every row ran with glibc's allocator" in table) is ours["allocator_tuned"]
    assert files["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ratios_are_rnnkit_dynamic_over_each_peer_that_ran() -> None:
    w = Workload("train", 128, 28, 28)
    results = [
        {"row": "rnnkit-dynamic", "workloads": {w.key: {"status": "ok", "samples_per_s": 1500.0}}},
        {"row": "torch-eager", "workloads": {w.key: {"status": "ok", "samples_per_s": 1000.0}}},
        {"row": "tf1-dynamic", "workloads": {w.key: {"status": "error", "reason": "boom"}}},
    ]
    assert ratios(results, (w,)) == {w.key: {"torch-eager": 1.5}}


def test_rounds_alternate_the_row_order_and_report_the_median_round(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three rounds: rows run A B, B A, A B; each figure is its median round, with all three."""
    w = Workload("train", 128, 28, 28)
    monkeypatch.setattr(bench, "matmul_peak", lambda: {"gflops": 100.0, "by": "test", "size": 1})
    calls: list[str] = []
    speeds = {"rnnkit-dynamic": iter([1000.0, 3000.0, 2000.0]), "torch-eager": iter([500.0, None, 700.0])}

    def run_one(row: Any, config: BenchConfig) -> dict[str, Any]:
        calls.append(row.name)
        speed = next(speeds[row.name])
        r = {"status": "error", "reason": "boom"}
        if speed is not None:
            r = {"status": "ok", "samples_per_s": speed, "first_step_s": speed / 1000}
        return {"row": row.name, "label": row.label, "note": "", "workloads": {w.key: r}}

    config = BenchConfig(workloads=(w,), rows=("rnnkit-dynamic", "torch-eager"), rounds=3)
    result = run_bench(config, run_one=run_one)
    assert calls == ["rnnkit-dynamic", "torch-eager", "torch-eager", "rnnkit-dynamic", "rnnkit-dynamic", "torch-eager"]
    ours, theirs = (r["workloads"][w.key] for r in result["rows"])
    assert ours["samples_per_s"] == 2000.0  # the median round, whole: its first step too
    assert ours["first_step_s"] == 2.0
    assert ours["rounds_samples_per_s"] == [1000.0, 3000.0, 2000.0]
    assert theirs["samples_per_s"] == 500.0  # two rounds ran: the lower median
    assert theirs["rounds_samples_per_s"] == [500.0, None, 700.0]
    assert result["ratios"] == {w.key: {"torch-eager": 4.0}}


def test_rows_run_in_the_order_asked_for_each_once(monkeypatch: pytest.MonkeyPatch) -> None:
    w = Workload("train", 128, 28, 28)
    monkeypatch.setattr(bench, "matmul_peak", lambda: {"gflops": 100.0, "by": "test", "size": 1})
    calls: list[str] = []

    def run_one(row: Any, config: BenchConfig) -> dict[str, Any]:
        calls.append(row.name)
        r = {"status": "ok", "samples_per_s": 100.0 * len(calls), "first_step_s": 1.0}
        return {"row": row.name, "label": row.label, "note": "", "workloads": {w.key: r}}

    asked = ("flax-nnx", "torch-eager", "rnnkit-dynamic", "torch-eager")
    result = run_bench(BenchConfig(workloads=(w,), rows=asked), run_one=run_one)
    assert calls == ["flax-nnx", "torch-eager", "rnnkit-dynamic"]  # not all_rows()'s order
    assert [r["row"] for r in result["rows"]] == calls
    assert result["ratios"] == {w.key: {"flax-nnx": 3.0, "torch-eager": 1.5}}


def test_markdown_table_marks_errors_and_skips() -> None:
    w = Workload("train", 128, 28, 28)
    result = {
        "flops_per_sample": {w.key: flops_per_sample(w)},
        "peak": {"gflops": 200.0, "by": "numpy"},
        "rows": [
            {
                "row": "rnnkit-dynamic",
                "workloads": {
                    w.key: {
                        "status": "ok",
                        "samples_per_s": 1234.4,
                        "first_step_s": 2.04,
                        "first_step_warm_cache_s": 0.51,
                        "fraction_of_peak": 0.389,
                    }
                },
            },
            {"row": "tf1-static", "workloads": {w.key: {"status": "error", "reason": "boom"}}},
        ],
    }
    table = markdown_table(result)
    assert "| rnnkit-dynamic | 1,234 | 2.0 | 0.5 |" in table
    assert "| tf1-static | error |  |  |" in table
    assert "rnnkit-dynamic 39%" in table
    assert "glibc's allocator" not in table  # no figure says it ran with it
    result["rows"][0]["workloads"][w.key]["allocator_tuned"] = True
    assert "Every row ran with glibc's allocator keeping freed memory" in markdown_table(result)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "--rows", "rnnkit-dynamic,nope"], "--rows: unknown row 'nope'"),
        (["bench", "--workloads", "train:128:28"], "expected comma-separated task:batch:steps:features"),
        (["bench", "--workloads", "fit:128:28:28"], "expected comma-separated task:batch:steps:features"),
        (["bench", "--quick", "--full"], "--quick and --full contradict each other"),
        (["bench", "--repeats", "0"], "argument --repeats: expected a positive integer; got 0"),
        (["bench", "--rounds", "0"], "argument --rounds: expected a positive integer; got 0"),
    ],
)
def test_bench_mistakes_exit_2_with_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert message in err[0]


@pytest.mark.slow
def test_native_ab_times_two_builds_side_by_side(native_kernel: None, capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/native_ab.py: the other build's FFI targets are its own (the program built
    against them names them), it says whether the two builds compute the same numbers, and one
    line of paired figures comes out per workload."""
    ab = benchmark_script("native_ab")
    from rnnkit import _native

    argv = ["--other", str(_native.SOURCE), "--workloads", "train:8:3:28", "--steps", "4", "--warmup", "1"]
    assert ab.main(argv) == 0
    out = capsys.readouterr().out
    check, timing = out.splitlines()[:2]
    assert check.startswith(f"this: the {_native.isa()} build (")
    if _native.isa() == "avx512":  # the wheel's AVX-512 build computes what -march=native's did, bit for bit
        assert check.endswith("for native; outputs and gradients bit-identical")
    assert timing.startswith("train b8 T3 F28: this ")
    assert "other/this per pair: median" in out
    with jax.numpy_dtype_promotion("standard"), ab._targets_prefixed("other_"):
        runner = bench._RnnkitRunner(TINY, 0, "dynamic", "native")
        text = runner.train_step.lower(runner.params, runner.opt_state, runner.x, runner.y, runner.key).as_text()
    assert "other_rnnkit_gru_fwd" in text
    assert '"rnnkit_gru_fwd' not in text


def test_a_runners_math_mode_is_recorded_with_its_figure() -> None:
    """The torch runners on CUDA say whether cuDNN and cuBLAS were allowed TF32 as they ran;
    measure() keeps it beside the figure (and adds nothing for runners without one)."""

    class Runner:
        math_mode = "cudnn.allow_tf32=False, cuda.matmul.allow_tf32=False"

        def step(self) -> None:
            pass

    class Plain:
        def step(self) -> None:
            pass

    config = BenchConfig(workloads=(TINY,), repeats=1, min_time_s=0.0)
    assert bench.measure(Runner, TINY, config)["math_mode"] == Runner.math_mode
    assert "math_mode" not in bench.measure(Plain, TINY, config)


PEER_CHILD = """
import sys
from rnnkit import _host
from rnnkit.workflows import bench
from rnnkit.workflows.bench_rows import Row

class Runner:
    def step(self):
        pass

def build(w, seed):
    print("tuned when built:", _host._tuned, file=sys.stderr)
    return Runner()

row = Row(name="some-peer", label="a peer", requires=(), build=build, versions=lambda: {"peer": "1"})
bench.find_row = lambda name: row
sys.exit(bench._child(["some-peer", sys.argv[1]]))
"""


@pytest.mark.parametrize("keep", ["", "1"])
def test_every_row_gets_the_allocator_rnnkit_train_sets(keep: str) -> None:
    """A peer's process is set up as rnnkit's are: glibc's allocator tuned before the row is
    built (else rnnkit's figures alone would be spared page faults), and the setting recorded
    with each figure; the user's opt-out holds for peers too."""
    from rnnkit import _host

    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("the allocator setting is glibc's")
    env = {k: v for k, v in os.environ.items() if k not in _host._USER_MALLOC_SETTINGS}
    env.update({"JAX_PLATFORMS": "cpu", _host.OPT_OUT: keep})
    config = bench.config_to_json(BenchConfig(workloads=(TINY,), repeats=1, min_time_s=0.0))
    proc = subprocess.run(
        [sys.executable, "-c", PEER_CHILD, config], capture_output=True, text=True, env=env, check=False, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    measured = json.loads(proc.stdout.strip().splitlines()[-1])["workloads"][TINY.key]
    assert measured["status"] == "ok", measured
    assert measured["allocator_tuned"] is (keep == "")
    assert f"tuned when built: {keep == ''}" in proc.stderr
