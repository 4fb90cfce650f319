"""rnnkit compare on tiny models: the JSON schema, program size against length (deterministic,
so no timing is asserted), the budget's projections, exact bucketing, the HTML report."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest

from rnnkit.cli import main
from rnnkit.workflows.compare import (
    MEASURED_KEYS,
    CompareConfig,
    Programs,
    _batch,
    build_model,
    program_stats,
    project,
    run_compare,
    run_stream,
    sweep,
)
from rnnkit.workflows.compare_report import FAILS, HOLDS, verdict_larger, write_report

TINY = CompareConfig(
    cells="lstm:4,gru:5",
    lengths=(2, 4),
    features=3,
    num_classes=3,
    batch_size=4,
    infer_batch_size=4,
    repeats=1,
    max_speed_s=0.05,
    stream=(3, 2, 3, 2),
    buckets=(4,),
    unroll=(1,),
    export_tries=(2, 9),  # tests/test_export.py feeds 8 ... 1000 steps to a dynamic artifact
    export_platforms=("cpu",),
)


pytestmark = pytest.mark.usefixtures("standard_promotion")  # optax mixes Python floats and int32 counts


@pytest.fixture(scope="module")
def cached_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], list[str], list[str]]:
    """run_compare(TINY) with JAX's persistent compilation cache pointed at an empty folder,
    storing everything: what the run wrote there, and what a program compiled after it did."""
    from jax.experimental.compilation_cache import compilation_cache

    cache = tmp_path_factory.mktemp("xla-cache")
    saved = jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs
    compilation_cache.set_cache_dir(str(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    compilation_cache.reset_cache()
    try:
        with jax.numpy_dtype_promotion("standard"):
            result = run_compare(TINY)
        during = sorted(p.name for p in cache.iterdir())
        jax.jit(lambda a: a * 3.25 + 0.5)(np.ones(7, np.float32)).block_until_ready()
        after = sorted(p.name for p in cache.iterdir())
    finally:
        compilation_cache.set_cache_dir(saved[0])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", saved[1])
        compilation_cache.reset_cache()
    return result, during, after


@pytest.fixture(scope="module")
def result(cached_run: tuple[dict[str, Any], list[str], list[str]]) -> dict[str, Any]:
    return cached_run[0]


def test_compile_times_are_measured_with_the_persistent_cache_off(
    cached_run: tuple[dict[str, Any], list[str], list[str]],
) -> None:
    """A cache the user set (JAX_COMPILATION_CACHE_DIR) would make a second run time loading
    programs from disk as their builds: compare turns it off, and on again when it is done."""
    _, during, after = cached_run
    assert during == []
    assert len(after) == 1


def training_program(mode: str, length: int) -> tuple[int, int]:
    programs = Programs(build_model(TINY, mode, length))
    params, opt_state = programs.fresh_state()
    x, y = _batch(TINY, 2, length, 0)
    return program_stats(programs.train_step.trace(params, opt_state, x, y, None).lower().as_text())


def test_static_program_grows_with_length_while_dynamic_stays_flat() -> None:
    static = {n: training_program("static", n) for n in (2, 4, 8, 16)}
    dynamic = {n: training_program("dynamic", n) for n in (2, 8, 16)}
    ops = [static[n][1] for n in (2, 4, 8, 16)]
    steps = [b - a for a, b in itertools.pairwise(ops)]  # ops added per doubling
    # static: a copy of the cells (forward and backward) per step, so ops grow linearly with length
    assert steps[0] > 0, ops
    assert steps[1:] == [2 * steps[0], 4 * steps[0]], ops
    assert static[16][0] > 3 * static[2][0]
    # dynamic: one loop body whatever the length; the text differs only in the digits of shapes
    assert len({dynamic[n][1] for n in dynamic}) == 1, dynamic
    sizes = [dynamic[n][0] for n in dynamic]
    assert max(sizes) - min(sizes) <= 0.01 * min(sizes), sizes


def test_json_schema(result: dict[str, Any], tmp_path: Path) -> None:
    assert set(result) >= {"config", "environment", "rows", "variable_lengths", "unroll", "claims", "wall_s"}
    assert [(r["mode"], r["length"]) for r in result["rows"]] == [
        ("dynamic", 2),
        ("dynamic", 4),
        ("static", 2),
        ("static", 4),
    ]
    numbers = (
        "trace_s",
        "compile_s",
        "infer_trace_s",
        "infer_compile_s",
        "hlo_bytes",
        "hlo_ops",
        "export_bytes",
        "temp_bytes",
        "train_steps_per_s",
        "infer_samples_per_s",
    )
    for row in result["rows"]:
        assert row["status"] == "measured"
        assert set(MEASURED_KEYS) <= set(row)
        for key in numbers:
            assert isinstance(row[key], (int, float)), (key, row[key])
            assert row[key] > 0, (key, row[key])
        assert row["train_samples_per_s"] == pytest.approx(row["train_steps_per_s"] * TINY.batch_size)
    for key in ("rnnkit", "jax", "backend", "device"):
        assert result["environment"][key]
    # every figure survives the trip through compare.json
    files = write_report(result, tmp_path, "rnnkit compare (test)")
    assert json.loads(files["json"].read_text()) == json.loads(json.dumps(result))


def test_bucketed_and_exact_streams_give_identical_logits(result: dict[str, Any]) -> None:
    runs = {(r["mode"], r["bucketed"]): r for r in result["variable_lengths"]["runs"]}
    for mode in ("static", "dynamic"):
        exact, bucketed = runs[mode, False], runs[mode, True]
        assert exact["compilations"] == 2
        assert exact["shapes"] == [3, 2, 3, 2]
        assert bucketed["compilations"] == 1
        assert bucketed["shapes"] == [4, 4, 4, 4]
    # dynamic: one loop body for every length, so padding + sequence_length is bit-for-bit inert
    dynamic = runs["dynamic", True]
    assert dynamic["logits_identical_to_exact"] is True
    assert dynamic["max_abs_logit_diff_vs_exact"] == 0.0
    assert dynamic["losses"] == runs["dynamic", False]["losses"]
    # static: each length is its own unrolled program that XLA optimises as a whole; the last
    # bit may differ (1.9e-9 seen here), nothing more
    static = runs["static", True]
    assert static["max_abs_logit_diff_vs_exact"] <= 1e-6
    assert static["losses"] == pytest.approx(runs["static", False]["losses"], rel=1e-6)


def test_export_lengths_and_states(result: dict[str, Any]) -> None:
    lengths = result["export_lengths"]
    assert lengths["built_for"] == 2
    static = {r["length"]: r for r in lengths["static"]}
    assert [n for n, r in static.items() if r["accepted"]] == [2]
    assert static[2]["equals_in_process"] is True
    assert "built for sequences of exactly 2 steps (static_rnn unrolled 2 times); got 9 steps" in static[9]["error"]
    assert all(r["accepted"] and r["equals_in_process"] for r in lengths["dynamic"])
    assert [r["length"] for r in lengths["dynamic"]] == [2, 9]
    assert result["states"]["max_abs_diff_at_step"] < 1e-6
    assert result["states"]["max_abs_diff_final"] == 0.0


def test_verdicts_cover_every_claim(result: dict[str, Any]) -> None:
    keys = [c["key"] for c in result["claims"]]
    assert keys == ["build_time", "memory", "export_size", "fixed_length", "varying_length", "last_state_only", "speed"]
    claims = {c["key"]: c for c in result["claims"]}
    assert claims["fixed_length"]["verdict"] == HOLDS
    assert claims["last_state_only"]["verdict"] == FAILS
    # the export-size verdict follows the measured sizes, whatever they are
    sizes = {(r["mode"], r["length"]): r["export_bytes"] for r in result["rows"]}
    larger = all(sizes["static", n] > 1.05 * sizes["dynamic", n] for n in TINY.lengths)
    assert (claims["export_size"]["verdict"] == HOLDS) == larger


def test_verdict_rules() -> None:
    assert verdict_larger([(1, 2.0, 1.0), (2, 3.0, 1.0)]) == (HOLDS, None)
    assert verdict_larger([(1, 1.0, 2.0), (2, 1.0, 3.0)]) == (FAILS, None)
    assert verdict_larger([(28, 1.0, 2.0), (56, 3.0, 2.0), (112, 9.0, 2.0)]) == ("holds only above length", 28)
    assert verdict_larger([(1, 2.0, 1.0), (2, 1.0, 2.0), (3, 2.0, 1.0)])[0] == "mixed"
    # a few percent is noise, not evidence: the export of a short static program is as big as the weights
    assert verdict_larger([(8, 1490.0, 1484.0), (16, 1500.0, 1484.0)]) == (FAILS, None)
    assert verdict_larger([(8, 1490.0, 1484.0), (112, 2100.0, 1484.0)]) == ("holds only above length", 8)


def test_projection_power_law() -> None:
    assert project([(10, 1.0), (20, 4.0)], 40) == pytest.approx(16.0)  # cost ~ length^2
    assert project([(10, 3.0)], 30) == pytest.approx(9.0)  # one point: proportional
    assert project([(10, 4.0), (20, 5.0)], 40) == pytest.approx(10.0)  # never below linear growth
    assert project([], 40) is None


def test_budget_skips_static_points_and_reports_their_projection() -> None:
    config = CompareConfig(**{**TINY.__dict__, "lengths": (2, 4, 8), "budget_s": 1e-6, "modes": ("static",)})
    rows = sweep(config, log=lambda _: None)
    assert [(r["mode"], r["status"]) for r in rows] == [
        ("static", "measured"),
        ("static", "skipped"),
        ("static", "skipped"),
    ]
    first = rows[0]["compile_s"]
    assert rows[1]["projected_compile_s"] == pytest.approx(first * 2)  # from one point: proportional
    assert rows[2]["projected_compile_s"] == pytest.approx(first * 4)
    assert "over the budget" in rows[1]["reason"]
    assert set(MEASURED_KEYS) <= set(rows[1])  # one schema: measured keys present, null
    assert rows[1]["compile_s"] is None
    # the varying-length stream's static runs are projected from the same points, and skipped
    static_exact = run_stream(config, "static", False, lambda n: project([(2, first)], n))
    assert static_exact["status"] == "skipped"
    assert static_exact["compilations"] == 2
    assert static_exact["projected_compile_s"] == pytest.approx(first * (3 + 2) / 2)


class Sections(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.images: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.append(str(a["id"]))
        if tag == "img":
            self.images.append(str(a.get("src")))
        for key in ("src", "href"):
            if a.get(key) and not str(a[key]).startswith(("data:", "#")):
                self.external.append(str(a[key]))


def test_report_renders_every_section(result: dict[str, Any], tmp_path: Path) -> None:
    files = write_report(result, tmp_path, "rnnkit compare --quick")
    page = files["html"].read_text()
    parser = Sections()
    parser.feed(page)
    for section in ("recommendation", "verdicts", "costs", "table", "stream", "unroll", "skipped", "method"):
        assert section in parser.ids, section
    assert [f"claim-{c['key']}" for c in result["claims"]] == [i for i in parser.ids if i.startswith("claim-")]
    assert len(parser.images) == 2
    assert all(src.startswith("data:image/png;base64,") for src in parser.images)
    assert parser.external == []  # self-contained: opens offline
    for claim in result["claims"]:
        assert claim["verdict"] in page
    for png in (files["costs"], files["unroll"]):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (Debian: apt install chromium)")
def test_report_screenshot_in_headless_chromium(result: dict[str, Any], tmp_path: Path) -> None:
    files = write_report(result, tmp_path, "rnnkit compare --quick")
    shot = tmp_path / "shot.png"
    subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
         "--window-size=1200,3000", files["html"].as_uri()],
        check=True, timeout=120, capture_output=True,
    )  # fmt: skip
    from PIL import Image

    with Image.open(shot) as image:
        pixels = image.convert("L")
        assert pixels.size == (1200, 3000)
        histogram = pixels.histogram()
        assert sum(histogram[:128]) > 1000, "the page rendered (almost) nothing dark: no text"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--lengths", "8,4"], "--lengths must be increasing and distinct"),
        (["--lengths", "0,4"], "argument --lengths: expected comma-separated positive integers"),
        (["--stream", "10,40", "--bucket", "16"], "--bucket sizes must reach the longest --stream length 40"),
        (["--cells", "lstm:0"], "lstm:0"),
        (["--budget-s", "-1"], "argument --budget-s"),
    ],
)
def test_cli_mistakes_exit_2_with_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["compare", *argv])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert message in err[0], err
