"""Data-parallel training against the single-device path: 4 devices against 1, 2 processes
against 1, and a process killed mid-run.

Several devices need XLA_FLAGS before JAX starts, several processes need jax.distributed, so
those runs are `rnnkit` subprocesses; the reference is the plain single-device run, which
does not go through the mesh code at all.

Tolerance: with the batch split over devices, each step's gradient mean over the batch is
summed in another order (per-device partial sums, then XLA's all-reduce), so in float32 the
gradients differ by a few units in the last place; Adam carries that forward. Over these
runs the losses and weights differ by at most ~2e-7. We allow 1e-5 absolute: 50x that, and
far below what a real mistake gives (a device missing or repeating rows of the batch, a
gradient averaged over one shard only, a wrong dropout key: differences of 1e-3 to 1e-1 from
the first steps on).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest

from rnnkit.cli import main
from rnnkit.workflows import checkpoint as ckpt
from rnnkit.workflows.distributed import check_batch_size

ATOL = 1e-5  # see the module docstring
SRC = Path(__file__).resolve().parents[1] / "src"
# Enough steps that a process can be killed mid-run; two processes take ~0.1 s a step here.
STEPS, BATCH = 40, 16


def train_argv(data_dir: Path, run_dir: Path, cells: str = "gru:8", steps: int = STEPS, **flags: Any) -> list[str]:
    argv = ["train", "--cells", cells, "--data-dir", str(data_dir), "--run-dir", str(run_dir)]
    argv += ["--batch-size", str(BATCH), "--train-samples", str(steps * BATCH + 1), "--learning-rate", "0.01"]
    argv += ["--display-step", "1", "--checkpoint-every", "5", "--validation-size", "40", "--dropout", "0.2"]
    for name, value in flags.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    return argv


def subprocess_env(xla_flags: str = "") -> dict[str, str]:
    """This checkout's rnnkit on the CPU; no cluster variables that would make JAX auto-join one."""
    env = {k: v for k, v in os.environ.items() if k not in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p)
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = xla_flags
    return env


def rnnkit_process(argv: list[str], **popen: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "rnnkit.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
        **popen,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_flags(port: int, process_id: int) -> list[str]:
    return ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(process_id)]


def losses(run_dir: Path) -> np.ndarray:
    return np.array([r["loss"] for r in ckpt.read_metrics(run_dir) if "loss" in r])


def assert_same_run(run: Path, reference: Path, steps: int) -> None:
    """Same loss at every step, same validation and test figures, same weights and Adam state."""
    np.testing.assert_allclose(losses(run), losses(reference), rtol=0, atol=ATOL)
    assert len(losses(run)) == steps
    for key in ("val_loss", "test_loss"):
        a = [r[key] for r in ckpt.read_metrics(run) if key in r]
        b = [r[key] for r in ckpt.read_metrics(reference) if key in r]
        np.testing.assert_allclose(a, b, rtol=0, atol=ATOL, err_msg=key)
    for key in ("val_accuracy", "test_accuracy"):
        a = [r[key] for r in ckpt.read_metrics(run) if key in r]
        b = [r[key] for r in ckpt.read_metrics(reference) if key in r]
        assert a == b, key
    model, opt, step = ckpt.load_checkpoint(run)
    ref_model, ref_opt, ref_step = ckpt.load_checkpoint(reference)
    assert step == ref_step == steps
    for name in ref_model:
        np.testing.assert_allclose(model[name], ref_model[name], rtol=0, atol=ATOL, err_msg=name)
    for name in ref_opt:
        np.testing.assert_allclose(opt[name], ref_opt[name], rtol=0, atol=ATOL, err_msg=name)


@pytest.fixture(scope="module")
def reference(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The single-process, single-device run the two-process runs must reproduce."""
    run = tmp_path_factory.mktemp("reference") / "run"
    with jax.numpy_dtype_promotion("standard"):  # optax mixes int32 counts with Python floats
        assert main(train_argv(data_dir, run)) == 0
    return run


def test_four_devices_match_one_device(data_dir: Path, tmp_path: Path) -> None:
    """20 steps of the seed's two-layer stack (smaller), with dropout, on 4 CPU devices and on 1,
    in one process started with 4 host devices; plus the errors for counts that do not fit."""
    script = (
        "import json, sys\n"
        "from rnnkit.cli import main\n"
        "for argv in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        code = main(argv)\n"
        "    except SystemExit as exit_:\n"
        "        code = exit_.code\n"
        "    print('exit', code, flush=True)\n"
    )
    train = train_argv(data_dir, tmp_path / "one", cells="lstm:8,gru:12", steps=20)
    runs = [
        train,
        [*train_argv(data_dir, tmp_path / "four", cells="lstm:8,gru:12", steps=20), "--devices", "4"],
        [*train_argv(data_dir, tmp_path / "bad"), "--devices", "4", "--batch-size", "18"],
        [*train_argv(data_dir, tmp_path / "bad"), "--devices", "8"],
        ["env", "--devices", "all"],
    ]
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(runs)],
        capture_output=True,
        text=True,
        env=subprocess_env("--xla_force_host_platform_device_count=4"),
        timeout=300,
        check=False,
    )
    assert re.findall(r"^exit (\d+)$", done.stdout, re.MULTILINE) == ["0", "0", "2", "2", "0"], done.stderr
    assert "data parallel: mesh ('batch': 4) over 1 process, global batch 16, 4 per device" in done.stdout
    assert_same_run(tmp_path / "four", tmp_path / "one", steps=20)

    errors = [line for line in done.stderr.splitlines() if line.startswith("rnnkit: error:")]
    assert errors == [
        "rnnkit: error: --batch-size 18 must divide by 4 devices; nearest valid: 16 or 20",
        "rnnkit: error: --devices 8: only 4 cpu devices exist; use --devices 4 (or all)",
    ]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "bad").exists()  # refused before anything was written
    assert "training mesh (--devices all): mesh ('batch': 4) over 1 process: cpu:0, cpu:1, cpu:2, cpu:3" in done.stdout
    assert "--batch-size must be a multiple of 4" in done.stdout


@pytest.mark.slow  # ~25 s; the default run's killed-process test also ends in a 2-process run checked against 1
def test_two_processes_match_one_process(data_dir: Path, tmp_path: Path, reference: Path) -> None:
    """Two processes on 127.0.0.1, one CPU device each: the mesh spans both, each process
    reads half of every batch, process 0 alone writes the run directory."""
    port, run = free_port(), tmp_path / "run"
    procs = [rnnkit_process([*train_argv(data_dir, run), *process_flags(port, i)]) for i in (1, 0)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    (out1, _), (out0, _) = outputs
    assert "data parallel: mesh ('batch': 2) over 2 processes, global batch 16, 8 per device" in out0
    assert "Testing Accuracy (60 images)" in out0  # the test split's size
    assert "Iter " not in out1  # process 1 trains quietly
    assert "Testing Accuracy" not in out1
    assert_same_run(run, reference, steps=STEPS)
    assert sorted(p.name for p in run.iterdir()) == sorted(
        [ckpt.CONFIG, ckpt.MODEL, ckpt.OPTIMIZER, ckpt.METRICS, ckpt.CURVES, ".lock"]
    )  # no temporary files left behind by a second writer; process 0's lock


def logged_steps(run: Path) -> int:
    try:
        return len([r for r in ckpt.read_metrics(run) if "loss" in r])
    except json.JSONDecodeError:  # a line being appended right now
        return 0


# Killing process 0 (which hosts JAX's coordination service) makes JAX itself end the survivor
# at once, with its own fatal log rather than rnnkit's line: slow-only, the message is JAX's.
@pytest.mark.parametrize("killed", [1, pytest.param(0, marks=pytest.mark.slow)])
def test_killed_process_stops_the_other_and_the_run_resumes(
    data_dir: Path, tmp_path: Path, reference: Path, killed: int
) -> None:
    """SIGKILL one of two processes mid-run: the survivor exits non-zero at once with one line
    naming the lost process and the intact checkpoint; two processes then resume the run to
    the reference's end."""
    port, run = free_port(), tmp_path / "run"
    procs = {i: rnnkit_process([*train_argv(data_dir, run), *process_flags(port, i)]) for i in (1, 0)}
    survivor = procs[1 - killed]
    try:
        deadline = time.monotonic() + 180
        while logged_steps(run) < 8:
            assert all(p.poll() is None for p in procs.values()), [p.communicate() for p in procs.values()]
            assert time.monotonic() < deadline, "training never got going"
            time.sleep(0.05)
        procs[killed].send_signal(signal.SIGSTOP)  # the other blocks in the next step's all-reduce
        procs[killed].kill()
        killed_at = time.monotonic()
        _, err = survivor.communicate(timeout=90)
        elapsed = time.monotonic() - killed_at
    finally:
        for p in procs.values():
            if p.returncode is None:
                p.kill()
                p.communicate()
    assert survivor.returncode != 0, err
    assert elapsed < 60, f"the survivor took {elapsed:.0f} s to stop"
    assert "Traceback" not in err
    _, _, saved = ckpt.load_checkpoint(run)  # a consistent, resumable pair
    assert 5 <= saved < STEPS
    if killed == 1:  # the survivor hosts the coordination service: rnnkit's own message, exit 1
        assert survivor.returncode == 1
        last = err.strip().splitlines()[-1]
        pattern = rf"rnnkit: error: process 0 of 2 lost contact with process 1 at step (\d+) \(.+\); the last checkpoint \(step {saved}\) in {re.escape(str(run))} is intact; once every process is back, continue with --run-dir .+ --resume"
        assert re.fullmatch(pattern, last), last
        assert saved <= int(re.fullmatch(pattern, last).group(1)) < STEPS

    port = free_port()
    resumed = [rnnkit_process(["train", "--run-dir", str(run), "--resume", *process_flags(port, i)]) for i in (1, 0)]
    outputs = [p.communicate(timeout=300) for p in resumed]
    for p, (_, err) in zip(resumed, outputs, strict=True):
        assert p.returncode == 0, err
    assert f"resuming at step {saved}" in outputs[1][0]
    assert_same_run(run, reference, steps=STEPS)


def test_a_slurm_launch_is_detected_from_its_environment() -> None:
    """What srun sets for two tasks on one node: rnnkit joins them with no process flags."""
    for port in range(65535 - 2**12 + 1, 65536):  # JAX derives the port from the job id, in this range
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                break
            except OSError:
                continue
    job_id = port - (65535 - 2**12 + 1) + 2**12 * 7
    procs = []
    for i in (1, 0):
        env = subprocess_env()
        env.update(SLURM_JOB_ID=str(job_id), SLURM_STEP_NODELIST="127.0.0.1", SLURM_NTASKS="2")
        env.update(SLURM_PROCID=str(i), SLURM_LOCALID=str(i))
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "rnnkit.cli", "env"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
        )
    (out1, err1), (out0, err0) = (p.communicate(timeout=120) for p in procs)
    assert [p.returncode for p in procs] == [0, 0], err0 + err1
    assert "process: 0 of 2" in out0
    assert "process: 1 of 2" in out1
    assert "training mesh: mesh ('batch': 2) over 2 processes" in out0


def test_device_and_process_mistakes_are_one_line_errors(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def error(argv: list[str]) -> str:
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        _, err = capsys.readouterr()
        assert exit_.value.code == 2
        assert len(err.strip().splitlines()) == 1, err
        return err.strip()

    run = tmp_path / "run"
    assert error([*train_argv(data_dir, run), "--devices", "4"]) == (
        "rnnkit: error: --devices 4: only 1 cpu device exists; use --devices 1 (or all)"
    )
    assert not run.exists()
    assert "--devices: expected a positive integer or 'all'; got 0" in error(["train", "--devices", "0"])
    assert "--devices: expected a positive integer or 'all'; got 'many'" in error(["env", "--devices", "many"])
    assert error(["train", "--num-processes", "2"]) == (
        "rnnkit: error: several processes need --coordinator HOST:PORT (process 0's), --num-processes and "
        "--process-id, unless a cluster launcher such as srun sets them; missing --coordinator, --process-id"
    )
    assert error(["train", *process_flags(1234, 2)]) == (
        "rnnkit: error: --process-id must be below --num-processes 2 (0 .. 1); got 2"
    )
    assert error(["env", "--coordinator", "no-port", "--num-processes", "2", "--process-id", "0"]) == (
        "rnnkit: error: --coordinator must be HOST:PORT (e.g. 10.0.0.1:1234); got 'no-port'"
    )


def test_batch_size_suggestions() -> None:
    with pytest.raises(ValueError, match=r"^--batch-size 130 must divide by 4 devices; nearest valid: 128 or 132$"):
        check_batch_size(130, 4)
    with pytest.raises(ValueError, match=r"^--batch-size 3 must divide by 4 devices; nearest valid: 4$"):
        check_batch_size(3, 4)
    check_batch_size(128, 4)


def test_env_shows_processes_devices_and_mesh(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    assert f"jax {jax.__version__}" in out
    assert "backend: cpu" in out
    assert "process: 0 of 1" in out
    assert "local devices (1): cpu:0" in out
    assert "training mesh: none: one device, cpu:0 (the single-device path)" in out
