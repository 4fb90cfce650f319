"""`rnnkit compare`'s verdicts, figures and self-contained HTML report.

Every verdict is computed from the measurements in `compare.json`, so the report says what this
machine showed, including where the seed's claims do not hold.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from rnnkit._atomic import atomic_write_text
from rnnkit.workflows.plots import pyplot, save_png

HOLDS, FAILS, ABOVE, MIXED = "holds", "does not hold", "holds only above length", "mixed"


def _measured(result: dict[str, Any], mode: str) -> dict[int, dict[str, Any]]:
    return {r["length"]: r for r in result["rows"] if r["mode"] == mode and r["status"] == "measured"}


def compare_lengths(result: dict[str, Any], metric: str) -> list[tuple[int, float, float]]:
    """(length, static value, dynamic value) where both modes were measured."""
    static, dynamic = _measured(result, "static"), _measured(result, "dynamic")
    return [
        (n, float(static[n][metric]), float(dynamic[n][metric]))
        for n in sorted(set(static) & set(dynamic))
        if static[n].get(metric) is not None and dynamic[n].get(metric) is not None
    ]


MARGIN = 0.05  # a difference under 5% is not evidence either way


def verdict_larger(points: list[tuple[int, float, float]], margin: float = MARGIN) -> tuple[str, int | None]:
    """Does static's value exceed dynamic's by more than `margin`? "holds" at every length,
    "does not hold" at none, "holds only above length N" when it holds from some length on,
    "mixed" otherwise."""
    if not points:
        return "not measured", None
    holds = [s > d * (1 + margin) for _, s, d in points]
    if all(holds):
        return HOLDS, None
    if not any(holds):
        return FAILS, None
    first = holds.index(True)
    if all(holds[first:]):
        return ABOVE, points[first - 1][0]
    return MIXED, None


def _ratio_text(points: list[tuple[int, float, float]], fmt: Any) -> str:
    return "; ".join(f"T={n}: static {fmt(s)} vs dynamic {fmt(d)} ({s / d:.2f}x)" for n, s, d in points if d)


def _secs(v: float) -> str:
    return f"{v:.2f} s"


def _mib(v: float) -> str:
    return f"{v / 2**20:.1f} MiB"


def _kib(v: float) -> str:
    return f"{v / 1024:.0f} KiB"


def _claim(key: str, seed: str, verdict: tuple[str, int | None], evidence: str, note: str = "") -> dict[str, Any]:
    text, above = verdict
    label = f"{ABOVE} {above}" if text == ABOVE else text
    return {"key": key, "claim": seed, "verdict": label, "evidence": evidence, "note": note}


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _sameness(run: dict[str, Any]) -> str:
    if run.get("status") != "measured":
        return "not run"
    if run["logits_identical_to_exact"]:
        return "logits bit-identical"
    return (
        f"logits within {run['max_abs_logit_diff_vs_exact']:.2g} (not bit-identical: each unrolled length is "
        "a separate XLA program, optimised as a whole, so the last bit of a sum can differ)"
    )


def verdicts(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The seed's claims, each with its verdict and the numbers behind it."""
    claims = []
    build = compare_lengths(result, "build_s")
    skipped = [r for r in result["rows"] if r["status"] == "skipped"]
    skip_note = (
        " Static points not run (over budget): "
        + "; ".join(f"T={r['length']} projected {r['projected_compile_s']:.0f} s" for r in skipped)
        + "."
        if skipped
        else ""
    )
    claims.append(
        _claim(
            "build_time",
            "static_rnn: building the graph takes longer (dynamic_rnn: faster graph creation).",
            verdict_larger(build),
            "Training step, trace + lower + compile: " + _ratio_text(build, _secs) + "." + skip_note,
        )
    )
    rss = compare_lengths(result, "rss_growth_bytes")
    temp = compare_lengths(result, "temp_bytes")
    temp_verdict = verdict_larger(temp)[0]
    claims.append(
        _claim(
            "memory",
            "static_rnn uses more memory (dynamic_rnn: less memory).",
            verdict_larger(rss),
            "Peak RSS growth while compiling the training step: " + _ratio_text(rss, _mib) + ".",
            note="At run time (XLA's temp buffers of the compiled training step) the claim "
            + temp_verdict
            + ": "
            + _ratio_text(temp, _mib)
            + ". Both modes keep every step's activations for the backward pass.",
        )
    )
    export = compare_lengths(result, "export_bytes")
    program = compare_lengths(result, "infer_hlo_bytes")
    claims.append(
        _claim(
            "export_size",
            "static_rnn's exported model is larger.",
            verdict_larger(export),
            "Serialized jax.export artifact (weights included): " + _ratio_text(export, _kib) + ".",
            note="Program alone (inference StableHLO text): " + _ratio_text(program, _kib) + ".",
        )
    )
    lengths = result["export_lengths"]
    static_ok = [r["length"] for r in lengths["static"] if r["accepted"]]
    dynamic_ok = [r["length"] for r in lengths["dynamic"] if r["accepted"]]
    refusal = next((r["error"] for r in lengths["static"] if not r["accepted"]), "")
    longer_refused = all(not r["accepted"] for r in lengths["static"] if r["length"] > lengths["built_for"])
    claims.append(
        _claim(
            "fixed_length",
            "static_rnn cannot take sequences longer than the n_steps it was built for.",
            (HOLDS if longer_refused else FAILS, None),
            f"Static artifact built for T={lengths['built_for']} accepted {static_ok} of {lengths['tried']}; "
            f"dynamic artifact accepted {dynamic_ok}. The static refusal reads: \u201c{refusal}\u201d",
            note="Shorter sequences fit a static program only when padded to its length with sequence_length "
            "masking the padding (TF1's static_rnn and rnnkit's both support that).",
        )
    )
    stream = {(r["mode"], r["bucketed"]): r for r in result["variable_lengths"]["runs"]}
    dyn_exact = stream.get(("dynamic", False), {})
    dyn_bucket = stream.get(("dynamic", True), {})
    st_exact = stream.get(("static", False), {})
    st_bucket = stream.get(("static", True), {})

    def run_text(run: dict[str, Any]) -> str:
        if run.get("status") != "measured":
            return f"skipped ({run.get('reason', 'not run')})"
        return f"{_count(run['compilations'], 'compilation')}, {run['wall_s']:.1f} s"

    distinct = len(set(result["variable_lengths"]["lengths"]))
    claims.append(
        _claim(
            "varying_length",
            "dynamic_rnn takes batches of varying length, e.g. [batch, 10] then [batch, 12] then [batch, 8]; "
            "static_rnn needs the same [batch, max_seq] every time.",
            (HOLDS, None),
            f"Stream of {len(result['variable_lengths']['lengths'])} batches ({distinct} distinct lengths): "
            f"dynamic exact {run_text(dyn_exact)}; dynamic bucketed {run_text(dyn_bucket)}; "
            f"static exact {run_text(st_exact)}; static bucketed {run_text(st_bucket)}.",
            note="Under jax.jit each new input shape is a new program, in both modes: dynamic's compilations are "
            "cheap and flat in length, static's grow with it. Bucketing (padding up to a few sizes, "
            "sequence_length masking) caps the count. Bucketed against exact: "
            f"{_sameness(dyn_bucket)} (dynamic); {_sameness(st_bucket)} (static).",
        )
    )
    states = result["states"]
    claims.append(
        _claim(
            "last_state_only",
            "dynamic_rnn returns only the last state, not the state at every step.",
            (FAILS, None),
            f"rnnkit's dynamic_rnn(..., return_all_states=True) returns every step's state "
            f"(shapes {states['state_shapes']}); the state after step {states['checked_step']} differs from a "
            f"run over the first {states['checked_step']} steps by {states['max_abs_diff_at_step']:.3g}, the last "
            f"from the final state by {states['max_abs_diff_final']:.3g}.",
            note="True of TF1's dynamic_rnn; rnnkit keeps TF1's default and adds the option.",
        )
    )
    speed = compare_lengths(result, "train_steps_per_s")
    claims.append(
        _claim(
            "speed",
            "static_rnn trains faster per step (not the seed's claim, but often assumed).",
            verdict_larger(speed),
            "Training steps/s: " + _ratio_text(speed, lambda v: f"{v:.2f}") + ".",
        )
    )
    return claims


SEED_RUN_STEPS = 781  # the seed trains while step * 128 < 100 000


def recommendation(result: dict[str, Any]) -> str:
    """Which mode for this model on this machine, and why, from the numbers: static where it
    runs faster per step and its longer build is repaid within a run of the seed's length,
    dynamic everywhere else."""
    speed = compare_lengths(result, "train_step_s")
    build = {n: (s, d) for n, s, d in compare_lengths(result, "build_s")}
    unroll = result["unroll"]
    static_pays, dynamic_wins, facts = [], [], []
    for n, s_step, d_step in speed:
        s_build, d_build = build[n]
        if s_step < d_step:
            breakeven = max(0.0, (s_build - d_build) / (d_step - s_step))
            extra = s_build - d_build
            facts.append(
                f"T={n}: static {d_step / s_step:.2f}x faster per step and builds "
                + (
                    f"{extra:.1f} s longer, repaid after {breakeven:.0f} steps"
                    if extra > 0
                    else f"{-extra:.1f} s sooner"
                )
            )
            (static_pays if breakeven < SEED_RUN_STEPS else dynamic_wins).append(n)
        else:
            extra = s_build - d_build
            facts.append(
                f"T={n}: dynamic {s_step / d_step:.2f}x faster per step and builds "
                + (f"{extra:.1f} s sooner" if extra > 0 else f"{-extra:.1f} s later")
            )
            dynamic_wins.append(n)
    skipped = sorted(r["length"] for r in result["rows"] if r["mode"] == "static" and r["status"] == "skipped")
    dyn_bucket = next((r for r in result["variable_lengths"]["runs"] if r["mode"] == "dynamic" and r["bucketed"]), {})
    text = []
    if static_pays:
        text.append(
            f"Fixed-length training at T in {static_pays}: static_rnn, whose faster steps repay its longer build "
            f"within a run of the seed's {SEED_RUN_STEPS} steps."
        )
    others = "Everything else: dynamic_rnn" if static_pays else "Use dynamic_rnn"
    text.append(
        f"{others} (unroll={unroll['fastest']}, the fastest at T={unroll['length']}), one program for "
        "any length that builds in about the same time at every length"
        + (f"; static was not even built at T >= {skipped[0]} (over the compile budget)" if skipped else "")
        + "."
    )
    if dyn_bucket.get("status") == "measured":
        text.append(
            f"Varying lengths: bucket them ({_count(dyn_bucket['compilations'], 'compilation')} for the stream "
            f"instead of {len(set(result['variable_lengths']['lengths']))}, logits unchanged)."
        )
    return " ".join(text) + (" Evidence: " + "; ".join(facts) + "." if facts else "")


# --- figures ---------------------------------------------------------------------------------

PANELS = (
    ("build_s", "training step: trace + compile (s)"),
    ("rss_growth_bytes", "peak RSS growth while compiling (bytes)"),
    ("hlo_ops", "training program: StableHLO ops"),
    ("export_bytes", "exported artifact (bytes)"),
    ("train_steps_per_s", "training steps/s"),
    ("infer_samples_per_s", "inference samples/s"),
)


def plot_costs(result: dict[str, Any], path: Path) -> None:
    """Cost against length, log-log, one line per mode; skipped static points as hollow
    markers at their projected compile time."""
    plt = pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5))
    for ax, (metric, title) in zip(axes.flat, PANELS, strict=True):
        for mode, color in (("static", "tab:red"), ("dynamic", "tab:blue")):
            rows = _measured(result, mode)
            xs = sorted(n for n in rows if rows[n].get(metric))
            ax.plot(xs, [rows[n][metric] for n in xs], "o-", color=color, label=mode)
            if metric == "build_s" and mode == "static":
                skipped = [r for r in result["rows"] if r["mode"] == "static" and r["status"] == "skipped"]
                if skipped:
                    ax.plot(
                        [r["length"] for r in skipped],
                        [r["projected_compile_s"] for r in skipped],
                        "o--",
                        color=color,
                        markerfacecolor="none",
                        label="static, projected (skipped)",
                    )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("sequence length")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"static_rnn vs dynamic_rnn: {result['config']['cells']} on {result['environment']['device']}")
    fig.tight_layout()
    save_png(fig, path)


def plot_unroll(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    data = result["unroll"]["results"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    labels = [str(r["unroll"]) for r in data]
    a.bar(labels, [r["build_s"] for r in data], color="tab:gray")
    a.set_title("trace + compile (s)")
    b.bar(labels, [r["train_samples_per_s"] for r in data], color="tab:blue")
    b.set_title("training samples/s")
    for ax in (a, b):
        ax.set_xlabel("dynamic_rnn unroll")
    fig.suptitle(f"unroll at T={result['unroll']['length']}")
    fig.tight_layout()
    save_png(fig, path)


# --- HTML ------------------------------------------------------------------------------------

ROW_COLUMNS = (
    ("mode", "mode", str),
    ("length", "T", str),
    ("trace_s", "trace s", lambda v: f"{v:.2f}"),
    ("compile_s", "compile s", lambda v: f"{v:.2f}"),
    ("infer_compile_s", "infer compile s", lambda v: f"{v:.2f}"),
    ("rss_growth_bytes", "compile RSS MiB", lambda v: f"{v / 2**20:.0f}"),
    ("temp_bytes", "temp MiB", lambda v: f"{v / 2**20:.1f}"),
    ("hlo_ops", "HLO ops", str),
    ("hlo_bytes", "HLO KiB", lambda v: f"{v / 1024:.0f}"),
    ("export_bytes", "export KiB", lambda v: f"{v / 1024:.0f}"),
    ("train_steps_per_s", "train steps/s", lambda v: f"{v:.2f}"),
    ("infer_samples_per_s", "infer samples/s", lambda v: f"{v:.0f}"),
)


def row_cells(row: dict[str, Any]) -> list[str]:
    """A sweep row as display strings (terminal table and HTML)."""
    if row["status"] == "skipped":
        proj = row.get("projected_compile_s")
        cells = [row["mode"], str(row["length"]), "", f"~{proj:.0f}" if proj else "?"]
        return cells + ["skipped"] + [""] * (len(ROW_COLUMNS) - len(cells) - 1)
    out = []
    for key, _, fmt in ROW_COLUMNS:
        value = row.get(key)
        out.append("n/a" if value is None else fmt(value))
    return out


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.6em}h2{margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .6em}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
.v{font-weight:600;padding:.1em .5em;border-radius:.3em;white-space:nowrap}
.holds{background:#d8f5d8}.fails{background:#f8d7d7}.partial{background:#fff2c2}
.box{background:#eef4fb;border-left:4px solid #3b73b9;padding:.6em 1em}
img{max-width:100%}code{background:#f4f4f4;padding:0 .2em}
.claim{margin:1em 0;padding:.4em 1em;border:1px solid #e3e3e3;border-radius:.4em}
"""


def _verdict_class(verdict: str) -> str:
    if verdict == HOLDS:
        return "holds"
    if verdict == FAILS:
        return "fails"
    return "partial"


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)

    def cell(text: str) -> str:
        numeric = text[:1].isdigit() or text[:1] == "~"
        return f'<td class="num">{html.escape(text)}</td>' if numeric else f"<td>{html.escape(text)}</td>"

    body = "".join("<tr>" + "".join(cell(c) for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(result: dict[str, Any], figures: dict[str, Path], command: str) -> str:
    """The report: every section self-contained (figures inlined as data URIs)."""
    e = html.escape
    env, cfg = result["environment"], result["config"]
    claims = result["claims"]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>rnnkit compare: {e(cfg['cells'])}</title><style>{CSS}</style></head><body>",
        "<h1>static_rnn vs dynamic_rnn, measured</h1>",
        f"<p>Model <code>{e(cfg['cells'])}</code>, {cfg['features']} features per step, {cfg['num_classes']} "
        f"classes; training batch {cfg['batch_size']}, inference batch {cfg['infer_batch_size']}; lengths "
        f"{e(str(cfg['lengths']))}. Device: {e(str(env['device']))} ({e(env['backend'])}, "
        f"{env['cpu_count']} CPUs); JAX {e(env['jax'])}, rnnkit {e(env['rnnkit'])}; {e(env['date'])}.</p>",
        f"<p>Command: <code>{e(command)}</code></p>",
        '<h2 id="recommendation">Recommendation</h2>',
        f'<p class="box">{e(recommendation(result))}</p>',
        '<h2 id="verdicts">The seed\'s claims</h2>',
        _table(["claim", "verdict"], [[c["claim"], c["verdict"]] for c in claims]),
    ]
    for c in claims:
        parts.append(
            f'<div class="claim" id="claim-{e(c["key"])}"><h3>{e(c["claim"])}</h3>'
            f'<p><span class="v {_verdict_class(c["verdict"])}">{e(c["verdict"])}</span></p>'
            f"<p>{e(c['evidence'])}</p>" + (f"<p>{e(c['note'])}</p>" if c["note"] else "") + "</div>"
        )
    parts += [
        '<h2 id="costs">Cost against length</h2>',
        _img(figures["costs"]) if "costs" in figures else "",
        '<h2 id="table">Every measurement</h2>',
        _table([label for _, label, _ in ROW_COLUMNS], [row_cells(r) for r in result["rows"]]),
        "<p>compile: the training step (forward, backward, TF1's Adam) traced, lowered and compiled ahead of time; "
        "compile RSS: growth of the process's peak resident memory while XLA compiled it; temp: XLA's temporary "
        "buffers for one step; HLO: the StableHLO text of the training step; export: the serialized inference "
        "artifact <code>rnnkit export</code> writes, weights included; speeds are medians after a warm-up.</p>",
    ]
    stream = result["variable_lengths"]
    stream_rows = []
    for r in stream["runs"]:
        if r["status"] == "measured":
            stream_rows.append(
                [
                    r["mode"],
                    "bucketed" if r["bucketed"] else "exact",
                    str(r["compilations"]),
                    f"{r['compile_s']:.2f}",
                    f"{r['wall_s']:.2f}",
                    str(r.get("logits_identical_to_exact", "n/a")),
                ]
            )
        else:
            kind = "bucketed" if r["bucketed"] else "exact"
            stream_rows.append([r["mode"], kind, str(r["compilations"]), "", "", r["reason"]])
    parts += [
        '<h2 id="stream">Batches of varying length</h2>',
        f"<p>One training batch per length, in this order: {e(str(stream['lengths']))}; buckets "
        f"{e(str(stream['buckets']))} (each length padded up to the next bucket, the padding masked with "
        "sequence_length).</p>",
        _table(["mode", "lengths", "compilations", "compile s", "wall s", "logits identical to exact"], stream_rows),
    ]
    unroll = result["unroll"]
    parts += [
        '<h2 id="unroll">dynamic_rnn unroll</h2>',
        f"<p>At T={unroll['length']}; fastest: unroll={unroll['fastest']}.</p>",
        _table(
            ["unroll", "trace + compile s", "HLO ops", "training samples/s"],
            [
                [str(r["unroll"]), f"{r['build_s']:.2f}", str(r["hlo_ops"]), f"{r['train_samples_per_s']:.0f}"]
                for r in unroll["results"]
            ],
        ),
        _img(figures["unroll"]) if "unroll" in figures else "",
    ]
    skipped = [r for r in result["rows"] if r["status"] == "skipped"]
    parts.append('<h2 id="skipped">Points over budget</h2>')
    if skipped:
        parts.append(
            f"<p>Budget per static point: {cfg['budget_s']:.0f} s of compilation, {cfg['budget_mb']:.0f} MB of "
            "memory. Projections: a power law through the last two static points measured.</p>"
            + _table(
                ["mode", "T", "projected compile s", "projected RSS MiB"],
                [
                    [
                        r["mode"],
                        str(r["length"]),
                        f"{r['projected_compile_s']:.0f}" if r["projected_compile_s"] else "?",
                        f"{r['projected_rss_growth_bytes'] / 2**20:.0f}" if r["projected_rss_growth_bytes"] else "?",
                    ]
                    for r in skipped
                ],
            )
        )
    else:
        parts.append("<p>None: every point was measured.</p>")
    parts += [
        '<h2 id="method">Method</h2>',
        "<p>One process; both modes share weights (same seed), inputs and programs apart from the driver: "
        "<code>static_rnn</code> unrolls the cells in Python, <code>dynamic_rnn</code> runs them in "
        "<code>lax.scan</code>. Times are wall-clock on a machine that may be shared: compare the modes "
        "within this report, not across machines. Program sizes and op counts are deterministic. "
        f"A claim that static's figure is larger holds at a length when it exceeds dynamic's by more than "
        f"{MARGIN:.0%}; smaller differences count as none.</p>",
        f"<p>Total time for this report: {result['wall_s']:.0f} s. The raw figures are in compare.json.</p>",
        f"<details><summary>compare.json</summary><pre>{e(json.dumps(result, indent=1))}</pre></details>",
        "</body></html>",
    ]
    return "\n".join(parts)


def write_report(result: dict[str, Any], out_dir: Path, command: str) -> dict[str, Path]:
    """compare.json, the PNGs and report.html into `out_dir` (each written atomically)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": out_dir / "compare.json", "costs": out_dir / "cost_vs_length.png"}
    files["unroll"] = out_dir / "unroll.png"
    atomic_write_text(files["json"], json.dumps(result, indent=2) + "\n")
    plot_costs(result, files["costs"])
    plot_unroll(result, files["unroll"])
    files["html"] = out_dir / "report.html"
    atomic_write_text(files["html"], render_html(result, files, command))
    return files
