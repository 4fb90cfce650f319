"""The `rnnkit` command, called in-process: output, exit codes, one-line errors."""

from __future__ import annotations

import functools
import http.server
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from rnnkit.cli import main
from rnnkit.workflows.demo import DemoConfig, run_demo


def test_demo_prints_shapes_difference_and_timings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--batch-size", "3", "--time-steps", "4", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "MultiRNNCell([LSTMCell(128), GRUCell(256)]) on [3, 4, 28]" in out
    assert re.search(r"static\s+│\s+\[3, 4, 256\]", out)
    assert re.search(r"dynamic\s+│\s+\[3, 4, 256\]", out)
    for column in ("trace s", "compile s"):
        assert column in out
    match = re.search(r"largest \|static - dynamic\|: outputs (\S+), final state (\S+)", out)
    assert match is not None
    assert float(match.group(1)) < 1e-5
    assert float(match.group(2)) < 1e-5


def test_run_demo_result_agrees() -> None:
    result = run_demo(DemoConfig(batch_size=2, time_steps=3))
    assert [t.mode for t in result.timings] == ["static", "dynamic"]
    assert all(t.output_shape == (2, 3, 256) for t in result.timings)
    assert all(t.trace_s > 0 and t.compile_s > 0 for t in result.timings)
    assert result.max_abs_diff_outputs < 1e-5


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--batch-size", "0"], "argument --batch-size: expected a positive integer; got 0"),
        (["demo", "--time-steps", "many"], "argument --time-steps: expected a positive integer; got 'many'"),
        (["demo", "--seed", "-1"], "argument --seed: expected a non-negative integer; got -1"),
        (["demo", "--nope"], "unrecognized arguments: --nope"),
        (["train", "--dropout", "1"], "argument --dropout: expected a fraction in [0, 1); got 1.0"),
        (["train", "--learning-rate", "-1"], "argument --learning-rate: expected a finite positive number; got -1.0"),
        (["train", "--learning-rate", "inf"], "argument --learning-rate: expected a finite positive number; got inf"),
        (["train", "--learning-rate", "nan"], "argument --learning-rate: expected a finite positive number; got nan"),
        (["train", "--cells", "lstm:\u00b2"], "--cells: cannot read 'lstm:\u00b2'"),
        (["train", "--cells", "lstm:8:forget_bias=nan"], "--cells: option forget_bias=nan of lstm:8 must be finite"),
        (["train", "--epochs", "2", "--train-samples", "9"], "not allowed with argument --epochs"),
        (["train", "--mode", "eager"], "argument --mode: invalid choice: 'eager'"),
        (["train", "--precision", "fast"], "--precision must be highest, high, default or the name of a"),
        (["frobnicate"], "argument COMMAND: invalid choice: 'frobnicate'"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_user_mistakes_exit_2_with_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert message in lines[0]
    assert "Traceback" not in captured.err


def test_console_script_entry_point() -> None:
    """`python -m rnnkit.cli` behaves as the installed `rnnkit` script: version and exit status."""
    ok = subprocess.run([sys.executable, "-m", "rnnkit.cli", "--version"], capture_output=True, text=True, check=False)
    assert ok.returncode == 0
    assert re.fullmatch(r"rnnkit \d+\.\d+\.\d+\n", ok.stdout)
    bad = subprocess.run(
        [sys.executable, "-m", "rnnkit.cli", "demo", "--batch-size", "x"], capture_output=True, text=True, check=False
    )
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1


def test_data_download_refuses_files_whose_sha256_is_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local server stands in for a mirror serving something that is not MNIST: the command
    must fail with one line, exit 2, and leave no file behind."""
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    www = tmp_path / "www"
    www.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        (www / name).write_bytes(b"not mnist")
    handler = functools.partial(QuietHandler, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        with pytest.raises(SystemExit) as exit_info:
            main(["data", "download", "--data-dir", str(tmp_path / "mnist"), "--mirror", url])
    finally:
        server.shutdown()
        server.server_close()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "train-images-idx3-ubyte.gz" in err
    assert "sha256" in err.lower()
    assert not (tmp_path / "mnist").exists()  # not even the directory it made for them


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass
