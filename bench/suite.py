"""Every benchmark table in one run: ``python -m bench all [--quick|--smoke] [--device cpu|cuda|auto] ...``.

Each table is its own script in bench/, run as a subprocess with this interpreter (``sys.executable``),
exactly as its command line is printed, and writing its raw figures with ``--json``; every script drives
kd through its CLI or library, the code users run. The suite then

- collects those figures into ``OUT/results.json``, with the machine, the commit, the exact command and
  the wall time of each table and of the whole run, and every target of BENCHMARK.md with its verdict;
- renders one Markdown document from that file, each table through its own script's
  ``markdown_from_json`` (so a table reads the same as when its script prints it), each under its
  machine, commit and command, and a summary of the targets: met, not met, or not judged (and why).

Sizes (``--medium``, ``--quick`` and ``--smoke`` keep every table's rows and columns, on less data and smaller
models; ``--smoke`` alone drops the students other than TextCNN):

- full (default): the protocol; 3 seeds for quality; writes docs/BENCHMARKS.md (when every table runs;
  a subset writes OUT/BENCHMARKS.md unless --doc says otherwise). Meant for a GPU machine.
- ``--medium``: CPU-sized, every student, more data and longer training than --quick; targets shown, not judged.
  About an hour on 2 busy cores (the BiGRU/BiLSTM students dominate).
- ``--quick``: the smallest data and models with every table's shape and every student; 5.0 minutes on 2 idle
  cores (commit e829582). A pipeline check: its figures say nothing about quality.
- ``--smoke``: --quick with the TextCNN student only (B1/B2 and B4); a little faster.

    python -m bench all --device cuda                   # the protocol, writes docs/BENCHMARKS.md
    python -m bench all --quick --device cpu            # bench/out/quick/{results.json,BENCHMARKS.md}
    python -m bench B4 --quick                          # one table (same as: all --only B4)
    python -m bench all --only B1,B2,B5 --keep          # re-run three tables, keep the others' figures
    python -m bench render --out bench/out/quick        # re-render the document from results.json
    python -m bench B1,B2,B3 --seeds 2 --add-seeds      # a seed more for the kept quality tables
    python -m bench merge s1.json s2.json -o B1B2.json  # one script's --json files, a seed each, as one

A full-size run rarely fits in one sitting (a lent GPU has minutes, not hours). ``--add-seeds`` runs the
quality tables (B1/B2, B3) for the given seeds only and merges them with the seeds OUT/results.json
already holds for the same command; every figure is then over all of them, and the document names
each seed's commit and command.
"""

from __future__ import annotations

import argparse
import datetime as dt
import errno
import json
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TABLES = ("B1", "B2", "B3", "B4", "B5")
PROFILES = ("full", "medium", "quick", "smoke")
DEFAULT_SEEDS = {"full": "1,2,3", "medium": "1", "quick": "1", "smoke": "1"}

# The jobs, in the order they run: key -> (tables it covers, script, section title)
JOBS = {
    "B1B2": (("B1", "B2"), "bench/distill.py", "B1/B2: teacher and distillation quality"),
    "B3": (("B3",), "bench/labels.py", "B3: wrong-label detection and cleaning"),
    "B4": (("B4",), "bench/speed.py", "B4: speed"),
    "B5": (("B5",), "bench/scale.py", "B5: scale, the pool through kd"),
    "B5-store": (("B5",), "bench/ingest.py", "B5: scale, the store alone"),
}

# Per profile, the options each script gets besides --device/--seeds/--json (see plan()).
PROFILE_ARGS: dict[str, dict[str, list[str]]] = {
    "full": {
        "B1B2": [],
        "B3": ["--student-votes-folds", "5"],  # out-of-fold students in the ensemble: measured after the judged rows
        # a teacher trained for real, so that early exit can be judged; every timing stays on the CPU
        "B4": ["--train-rows", "14363", "--dev-rows", "1000", "--test-rows", "2000", "--pretrain-steps", "2000",
               "--teach-epochs", "3", "--student-epochs", "10", "--ee-epochs", "3", "--ee-texts", "2000"],
        "B5": [],
        "B5-store": ["--repeat", "5"],
    },
    "medium": {
        "B1B2": ["--quick", "--train-rows", "2000", "--minutes", "1", "--teacher-epochs", "2", "--student-epochs", "1",
                 "--augment-n", "1"],
        "B3": ["--quick", "--train-rows", "2000", "--minutes", "1", "--teacher-epochs", "2", "--student-votes-folds", "5"],
        "B4": ["--train-rows", "500", "--dev-rows", "200", "--test-rows", "300", "--pretrain-steps", "10",
               "--batch-texts", "500", "--single-texts", "100", "--ee-texts", "100", "--ee-dev-texts", "300", "--repeats", "3"],
        "B5": ["--quick", "--rows", "10000"],
        "B5-store": ["--rows", "50000", "--repeat", "3"],
    },
    "quick": {
        "B1B2": ["--quick", "--train-rows", "1200", "--minutes", "0.2", "--teacher-epochs", "1", "--student-epochs", "1",
                 "--augment-n", "1"],
        "B3": ["--quick", "--train-rows", "1200", "--minutes", "0.2", "--teacher-epochs", "1", "--student-votes-folds", "2"],
        "B4": ["--layers", "2", "--hidden", "128", "--transformer-layers", "1", "--train-rows", "200", "--dev-rows", "100",
               "--test-rows", "100", "--pretrain-steps", "5", "--batch-texts", "200", "--single-texts", "30",
               "--ee-texts", "30", "--ee-dev-texts", "50", "--repeats", "2"],
        "B5": ["--quick", "--rows", "3000", "--repeat", "1"],
        "B5-store": ["--rows", "10000", "--repeat", "2"],
    },
    "smoke": {
        "B1B2": ["--quick", "--train-rows", "1200", "--minutes", "0.2", "--teacher-epochs", "1", "--student-epochs", "1",
                 "--augment-n", "1", "--students", "textcnn"],
        "B3": ["--quick", "--train-rows", "1200", "--minutes", "0.2", "--teacher-epochs", "1", "--student-votes-folds", "2"],
        "B4": ["--layers", "2", "--hidden", "128", "--transformer-layers", "1", "--train-rows", "200", "--dev-rows", "100",
               "--test-rows", "100", "--pretrain-steps", "5", "--batch-texts", "200", "--single-texts", "30",
               "--ee-texts", "30", "--ee-dev-texts", "50", "--repeats", "2", "--students", "textcnn"],
        "B5": ["--quick", "--rows", "3000", "--repeat", "1"],
        "B5-store": ["--rows", "10000", "--repeat", "2"],
    },
}


# planning -------------------------------------------------------------------------------------------------
def parse_only(text: str | None) -> list[str]:
    """``"B1,b4"`` -> ``["B1", "B4"]`` (protocol order, no repeats); empty or ``all`` -> every table."""
    if text is None or not text.strip() or text.strip().lower() == "all":
        return list(TABLES)
    wanted = set()
    for part in text.split(","):
        name = part.strip().upper()
        if not name:
            continue
        if name not in TABLES:
            raise ValueError(f"unknown table {part.strip()!r}: choose from {', '.join(TABLES)} (or all)")
        wanted.add(name)
    if not wanted:
        raise ValueError("no table named")
    return [t for t in TABLES if t in wanted]


def plan(tables: list[str], profile: str, device: str, seeds: str, out: Path) -> list[dict]:
    """The jobs to run for ``tables``: each with its script, its argv (without the interpreter) and its JSON path."""
    jobs = []
    for key, (covers, script, title) in JOBS.items():
        chosen = [t for t in covers if t in tables]
        if not chosen:
            continue
        json_path = _rel(out / "tables" / f"{key}.json")
        argv = [script, *PROFILE_ARGS[profile][key]]
        if key == "B1B2":
            argv += ["--device", device, "--seeds", seeds, "--settings", ",".join(chosen)]
        elif key == "B3":
            argv += ["--device", device, "--seeds", seeds]
        elif key == "B5":
            argv += ["--device", device]
        elif key == "B4":
            argv += ["--train-device", device, "--time-device", "cpu" if device == "cpu" else "auto", "--plot", str(_rel(out / "speed-early-exit.png"))]
        argv += ["--json", str(json_path)]
        jobs.append({"key": key, "tables": chosen, "script": script, "title": title, "argv": argv, "json": str(json_path)})
    return jobs


def _rel(path: Path) -> Path:
    """``path`` relative to the repository root when it lies under it (the scripts run from there)."""
    path = Path(path)
    return path.relative_to(ROOT) if path.is_absolute() and path.is_relative_to(ROOT) else path


def display_command(argv: list[str]) -> str:
    """The command as a user types it from the repository root (``python`` for this interpreter)."""
    parts = []
    for a in argv:
        p = Path(a)
        if p.is_absolute() and p.is_relative_to(ROOT):
            a = str(p.relative_to(ROOT))
        parts.append(a)
    return "python " + shlex.join(parts)


def default_paths(profile: str, out: str | None, doc: str | None) -> tuple[Path, Path]:
    """Output folder and document. Only a full run writes docs/BENCHMARKS.md unless ``--doc`` says so."""
    out_dir = Path(out) if out else ROOT / "bench" / "out" / profile
    if doc:
        doc_path = Path(doc)
    elif profile == "full":
        doc_path = ROOT / "docs" / "BENCHMARKS.md"
    else:
        doc_path = out_dir / "BENCHMARKS.md"
    return out_dir, doc_path


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# targets --------------------------------------------------------------------------------------------------
def verdict(ok: bool, not_judged: str | None) -> str:
    return f"not judged ({not_judged})" if not_judged else ("met" if ok else "not met")


def _pct(x: float) -> str:
    return f"{x:.2%}"


def _mean_range(values: list[float]) -> str:
    m = statistics.fmean(values)
    return _pct(m) if len(values) == 1 else f"{_pct(m)} ({_pct(min(values))}–{_pct(max(values))})"


def _shown(value: float, fmt: str, target: float, **kw) -> str:
    from bench.common import shown

    return shown(value, fmt, target, **kw)


def _meets(value: float, target: float, **kw) -> bool:
    from bench.common import meets

    return meets(value, target, **kw)


def quality_reason(data: dict, not_judged: str | None) -> str | None:
    """The profile's reason, else fewer than 3 seeds in a quality table's figures (merged ones count)."""
    from bench.common import too_few_seeds

    return not_judged or too_few_seeds(list(data.get("seeds") or []))


def targets_b1b2(data: dict, not_judged: str | None) -> list[dict]:
    from bench.distill import DEFAULT_STUDENT, TARGET_GAP_B1, gap_closed
    from bench.teacher import TARGET_ACCURACY

    not_judged = quality_reason(data, not_judged)
    out = []
    rows = data["rows"]
    if "B1" in rows:
        t = rows["B1"]
        acc = statistics.fmean(t["teacher"])
        out.append({"table": "B1", "figure": "teacher, test accuracy", "target": f"≥ {TARGET_ACCURACY['B1']:.0%}",
                    "measured": _mean_range(t["teacher"]), "verdict": verdict(_meets(acc, TARGET_ACCURACY["B1"]), not_judged)})
        name = f"{DEFAULT_STUDENT} distilled"
        if name in t:
            gap = gap_closed(t, DEFAULT_STUDENT, "distilled")
            measured = (_shown(gap, ".0%", TARGET_GAP_B1) if gap is not None else "undefined (teacher ≤ alone)") + (
                f" (distilled {_pct(statistics.fmean(t[name]))}, alone {_pct(statistics.fmean(t[f'{DEFAULT_STUDENT} alone']))}, "
                f"teacher {_pct(acc)})")
            out.append({"table": "B1", "figure": "TextCNN distilled (labels only): gap closed", "target": f"≥ {TARGET_GAP_B1:.0%}",
                        "measured": measured, "verdict": verdict(gap is not None and _meets(gap, TARGET_GAP_B1), not_judged)})
    if "B2" in rows:
        t = rows["B2"]
        name = f"{DEFAULT_STUDENT} +pool"
        if name in t:
            mine, teacher = statistics.fmean(t[name]), statistics.fmean(t["teacher"])
            alone_name = f"{DEFAULT_STUDENT} alone"
            alone = statistics.fmean(t[alone_name]) if alone_name in t else -1.0
            versus = f", alone {_mean_range(t[alone_name])}" if alone_name in t else ""
            out.append({"table": "B2", "figure": "TextCNN distilled with the pool vs the teacher (and the student alone)",
                        "target": "≥ teacher and ≥ alone",
                        "measured": f"{_mean_range(t[name])} vs teacher {_mean_range(t['teacher'])}{versus}",
                        "verdict": verdict(_meets(mine, teacher) and _meets(mine, alone),
                                           not_judged or (None if alone_name in t else "no student-alone row to compare with"))})
    return out


def targets_b3(data: dict, not_judged: str | None) -> list[dict]:
    from bench.labels import TARGET_F1, TARGET_GAIN

    not_judged = quality_reason(data, not_judged)
    out = []
    for r in data["results"]:
        m = r["detectors"]["combined (default)"]
        peer = r["detectors"].get("peer: cleanlab over TF-IDF+LR")
        t = TARGET_F1[r["rate"]]
        out.append({"table": "B3", "figure": f"default detector F1 at {r['rate']:.0%} noise", "target": f"≥ {t}",
                    "measured": _shown(m["f1"], ".3f", t) + (f" (peer cleanlab over TF-IDF+LR: {peer['f1']:.3f})" if peer else ""),
                    "verdict": verdict(_meets(m["f1"], t), not_judged)})
        if r["rate"] == 0.20:
            gain = r["student_cleaned"] - r["student_noisy"]
            out.append({"table": "B3", "figure": "TextCNN after `kd labels clean` at 20 % noise", "target": f"≥ +{TARGET_GAIN * 100:g} pt",
                        "measured": f"{_shown(gain * 100, '+.2f', TARGET_GAIN * 100)} pt ({_pct(r['student_noisy'])} → {_pct(r['student_cleaned'])})",
                        "verdict": verdict(_meets(gain, TARGET_GAIN), not_judged)})
    return out


def targets_b4(data: dict, not_judged: str | None) -> list[dict]:
    from bench.speed import (
        DEFAULT_STUDENT, EE_TARGET_LOSS_PT, EE_TARGET_SPEEDUP, TARGET_P99_MS, TARGET_RATIO, early_exit_judgement, early_exit_not_judged,
    )

    t = data["timing"]
    d = t.get(f"{DEFAULT_STUDENT}/onnx")
    out = []
    if d is not None:
        r_onnx = d["samples_per_s"] / t["teacher/onnx"]["samples_per_s"]
        r_eager = d["samples_per_s"] / t["teacher/eager"]["samples_per_s"]
        out += [
            {"table": "B4", "figure": "TextCNN (ONNX) vs teacher (ONNX), CPU batch throughput", "target": f"≥ {TARGET_RATIO:g}×",
             "measured": f"{_shown(r_onnx, ',.1f', TARGET_RATIO)}×", "verdict": verdict(_meets(r_onnx, TARGET_RATIO), not_judged)},
            {"table": "B4", "figure": "TextCNN (ONNX) vs teacher (PyTorch eager), CPU batch throughput", "target": f"≥ {TARGET_RATIO:g}×",
             "measured": f"{_shown(r_eager, ',.1f', TARGET_RATIO)}×", "verdict": verdict(_meets(r_eager, TARGET_RATIO), not_judged)},
            {"table": "B4", "figure": "TextCNN (ONNX), one-sample p99 latency on the CPU", "target": f"≤ {TARGET_P99_MS:g} ms",
             "measured": f"{_shown(d['p99_ms'], '.2f', TARGET_P99_MS, at_most=True)} ms", "verdict": verdict(_meets(d["p99_ms"], TARGET_P99_MS, at_most=True), not_judged)},
        ]
    ee = data.get("early_exit")
    if ee:
        judged = early_exit_judgement(ee)
        reason = "; ".join(filter(None, [not_judged, early_exit_not_judged(data.get("config", {}), judged)])) or None
        out.append({"table": "B4", "figure": "early exit (FastBERT), one text at a time", "target": f"≥ {EE_TARGET_SPEEDUP:g}× at ≤ {EE_TARGET_LOSS_PT} pt",
                    "measured": judged["measured"], "verdict": verdict(judged["met"], reason)})
    return out


def targets_b5(data: dict, not_judged: str | None) -> list[dict]:
    from bench.scale import targets

    return [{"table": "B5", **{k: v for k, v in t.items() if k != "step"}} for t in targets(data, not_judged)]


def targets_b5_store(data: dict, not_judged: str | None) -> list[dict]:
    from bench.ingest import MIN_REPEATS, STEP_TITLES, TARGET_ROWS

    out = []
    for step, x in data["summary"].items():
        if not isinstance(x, dict) or "target" not in x:
            continue
        from bench.ingest import TARGETS as STORE_TARGETS

        field, limit = STORE_TARGETS[step]
        value = (f"{_shown(x['seconds_median'], '.2f', limit, at_most=True)} s" if field == "seconds"
                 else f"{_shown(x['rows_per_s_median'], ',.0f', limit)} rows/s")
        reason = not_judged or (None if x.get("target_met") is not None else f"{x['rows']:,} rows, the target is for {TARGET_ROWS:,}"
                                if x["rows"] != TARGET_ROWS else f"{len(data.get('runs') or [])} repeats, the protocol's medians are over {MIN_REPEATS}")
        out.append({"table": "B5", "figure": f"store alone: {STEP_TITLES[step]} ({data['backend']})", "target": x["target"],
                    "measured": value, "verdict": verdict(bool(x.get("target_met")), reason)})
    return out


TARGETS = {"B1B2": targets_b1b2, "B3": targets_b3, "B4": targets_b4, "B5": targets_b5, "B5-store": targets_b5_store}


def not_judged_reason(profile: str) -> str | None:
    return None if profile == "full" else f"{profile} scale"


def collect_targets(results: dict) -> list[dict]:
    """Every target of the jobs in ``results``, with its verdict; a failed job's are 'not measured'."""
    reason = not_judged_reason(results["suite"]["profile"])
    out = []
    for key, job in results["jobs"].items():
        if job.get("data") is None:
            out.append({"table": "/".join(job["tables"]), "figure": f"every target of {job['script']}", "target": "—", "measured": "—",
                        "verdict": "not measured (interrupted)" if job.get("interrupted") else f"not measured (the script failed, exit {job.get('returncode')})"})
            continue
        try:
            out += TARGETS[key](job["data"], reason)
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            out.append({"table": "/".join(job["tables"]), "figure": f"targets of {job['script']}", "target": "—", "measured": "—",
                        "verdict": f"not measured (cannot read its figures: {type(exc).__name__}: {exc})"})
    order = {t: i for i, t in enumerate(TABLES)}
    return sorted(out, key=lambda t: order.get(t["table"].split("/")[0], 99))


# rendering ------------------------------------------------------------------------------------------------
def _bold(v: str) -> str:
    return f"**{v}**" if v in ("met", "not met") else v


def _fmt_seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def render_targets(targets: list[dict]) -> str:
    lines = ["| table | figure | target | measured | verdict |", "| --- | --- | --- | --- | --- |"]
    for t in targets:
        lines.append(f"| {t['table']} | {t['figure']} | {t['target']} | {t['measured']} | {_bold(t['verdict'])} |")
    return "\n".join(lines)


def render_job(key: str, job: dict, results: dict) -> str:
    """One job's section: its command, wall time and machine/commit line, then its script's own tables."""
    suite = results["suite"]
    reason = not_judged_reason(suite["profile"])
    from bench.common import command_words

    commands = command_words(job.get("commands") or job["command"])  # (--add-seeds: each run's)
    lines = [f"- **Script:** `{job['script']}`; **command{'s' if job.get('commands') else ''}:** {commands}; wall time {_fmt_seconds(job['wall_seconds'])}"]
    data = job.get("data")
    if data is None:
        lines += [f"- **{'interrupted' if job.get('interrupted') else 'failed'}** (exit {job.get('returncode')}); the last lines of its output (`{job.get('log', '?')}`):", "",
                  "```", job.get("error", "").rstrip(), "```"]
        return "\n".join(lines)
    commit = data.get("machine", {}).get("commit")
    if data.get("parts"):
        lines.append("- **Seeds merged** (`--add-seeds`): " + "; ".join(
            f"seed {', '.join(map(str, p['seeds']))} at `{p['commit']}`" + (" (with uncommitted changes)" if p.get("dirty") else "")
            + (f" on {p['machine']}" if p.get("machine") else "")
            for p in data["parts"]))
    elif commit and commit != suite["machine"]["commit"]:
        lines.append(f"- **Commit:** `{commit}` (not the run's `{suite['machine']['commit']}`: kept from an earlier run with --keep)")
    lines.append("")
    if key == "B1B2":
        from bench.distill import markdown_from_json, teacher_markdown_from_json

        reason = quality_reason(data, reason)
        lines += ["**Teacher**", "", teacher_markdown_from_json(data, reason), "", "**Distillation**", "", markdown_from_json(data, reason)]
    elif key == "B3":
        from bench.labels import markdown_from_json

        lines.append(markdown_from_json(data, quality_reason(data, reason)))
    elif key == "B4":
        from bench.speed import markdown_from_json

        lines.append(markdown_from_json(data, reason))
    elif key == "B5":
        from bench.scale import markdown_from_json

        lines.append(markdown_from_json(data, reason))
    elif key == "B5-store":
        from bench.ingest import markdown

        lines.append(markdown(data))  # judges by its own row count (500,000 rows or not judged)
    return "\n".join(lines)


def render(results: dict) -> str:
    """The whole document from ``results`` (what results.json holds)."""
    suite = results["suite"]
    m = suite["machine"]
    profile = suite["profile"]
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU"
    scale = {
        "full": "This is the protocol-sized run: its targets are judged.",
        "medium": "This is the **medium** run: a CPU-sized version that keeps every table's shape on less data and smaller, "
                  "briefly trained models. Its figures say little about quality, and no target is judged.",
        "quick": "This is the **quick** run: the smallest data and models with every table's shape and every student, minutes "
                 "on a CPU. It checks the pipeline; its figures say nothing about quality, and no target is judged.",
        "smoke": "This is a **smoke** run: the smallest version of every table, a pipeline check only. No target is judged.",
    }[profile]
    lines = [
        "# Benchmarks",
        "",
        "Every figure on this page, down to the earlier figures kept at its end (if any), comes from one run of "
        "`python -m bench` (bench/suite.py), which runs each table's "
        "script in bench/ as a subprocess and renders this page from the raw figures in `results.json`. "
        "The protocol, with its tasks, data and targets, is `../shared/BENCHMARK.md`. " + scale,
        "",
        f"- **Run:** `{suite['command']}` ({profile}; device {suite['device']}; quality seeds {suite.get('seeds_all') or suite['seeds']}"
        f"{'' if not suite.get('seeds_added_to') or not _added(suite) else f', this run adding ' + _added(suite) + ' to the kept ' + suite['seeds_added_to']}"
        f"{'' if not suite.get('seeds_not_added') else '; seed(s) ' + suite['seeds_not_added'] + ' NOT added: their run failed or was stopped'}); "
        f"{suite['started']} to {suite['finished']}, {_fmt_seconds(suite['wall_seconds'])} in all.",
        f"- **Commit:** `{m['commit']}`" + (" (with uncommitted changes in kdstore/, migrations/, commands/ or bench/)" if m.get("kdstore_dirty") else ""),
        f"- **Machine:** {m['cpu']}, {m['cores_usable']} cores ({m['cores']} online), {m['memory']} RAM{gpu}; {m['os']}; "
        f"Python {m['python']}, torch {m.get('torch')}, NumPy {m['numpy']}, SQLAlchemy {m['sqlalchemy']}, SQLite {m['sqlite']}.",
        "- Quality figures: mean over the seeds with the min–max; timings: median over the repeats with the min–max.",
        "",
        "## Targets",
        "",
        render_targets(results.get("targets") or collect_targets(results)),
        "",
        "| table | script | command | wall time | exit |",
        "| --- | --- | --- | ---: | ---: |",
    ]
    for key, job in results["jobs"].items():
        lines.append(f"| {'/'.join(job['tables'])} | `{job['script']}` | `{job['command']}` | {_fmt_seconds(job['wall_seconds'])} | {job.get('returncode')} |")
    for key, job in results["jobs"].items():
        lines += ["", f"## {JOBS[key][2]}", "", render_job(key, job, results)]
    return "\n".join(lines) + "\n"


# running --------------------------------------------------------------------------------------------------
def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def run_job(job: dict, out: Path) -> dict:
    log = out / "logs" / f"{job['key']}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    json_path = ROOT / job["json"]  # relative paths are the repository root's, as for the script
    json_path.parent.mkdir(parents=True, exist_ok=True)
    if json_path.exists():
        json_path.unlink()  # never report a stale table
    command = display_command(job["argv"])
    print(f"[bench] {job['key']}: {command}", file=sys.stderr, flush=True)
    env = {**os.environ, "KD_NO_PROGRESS": "1"}
    t0 = time.monotonic()
    interrupted = False
    with open(log, "w", encoding="utf-8") as fh:
        fh.write(f"$ {command}\n")
        fh.flush()
        proc = subprocess.Popen([sys.executable, *job["argv"]], cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=env)
        # a time limit's or kill's SIGTERM (`timeout 20m python -m bench ...`) is taken as Ctrl-C (it ended the
        # suite at once: no results.json, no page, no word of the table it was in)
        termed = []

        def on_term(signum, frame):
            termed.append(signum)
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, on_term)
        try:
            proc.wait()
        except KeyboardInterrupt:  # Ctrl-C reaches the script too: it stops itself (its figures so far, its
            interrupted = True  # temporary stores removed); it was killed 0.25 s later, and the suite left a traceback
            if termed and proc.poll() is None:  # (a time limit signals the suite alone: the script is told as well)
                proc.terminate()
            try:
                proc.wait(timeout=STOP_GRACE_S)
            except (KeyboardInterrupt, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
        finally:
            signal.signal(signal.SIGTERM, previous)
    wall = time.monotonic() - t0
    rec = {
        "key": job["key"], "tables": job["tables"], "script": job["script"], "command": command,
        "argv": [sys.executable, *job["argv"]], "returncode": proc.returncode, "wall_seconds": wall,
        "json": os.path.relpath(json_path, out), "log": os.path.relpath(log, out), "data": None,
    }
    if interrupted:
        rec["interrupted"] = True
        rec["error"] = _tail(log)
    elif proc.returncode == 0 and json_path.exists():
        rec["data"] = json.loads(json_path.read_text(encoding="utf-8"))
    else:
        rec["error"] = _tail(log)
        if proc.returncode == 0:
            rec["returncode"] = -1
            rec["error"] += f"\n(the script exited 0 but wrote no {json_path})"
    state = ("done" if rec["data"] is not None else f"INTERRUPTED (see {log})" if interrupted
             else f"FAILED (exit {rec['returncode']}, see {log})")
    print(f"[bench] {job['key']}: {state} in {_fmt_seconds(wall)}", file=sys.stderr, flush=True)
    return rec


STOP_GRACE_S = 30  # how long an interrupted script gets to stop itself before it is killed
MERGERS = {"B1B2": ("bench.distill", "merge_seeds"), "B3": ("bench.labels", "merge_seeds")}


def _without_seeds(argv: list[str]) -> list[str]:
    """A job's argv without its ``--seeds`` and ``--json`` values: what two runs to merge must share."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--seeds", "--json"):
            skip = True
        else:
            out.append(arg)
    return out


def merge_job(old: dict, rec: dict, json_path: Path) -> dict:
    """``rec`` (a job just run) with the seeds of ``old`` (the same job, kept) added to its figures."""
    import importlib

    module, name = MERGERS[rec["key"]]
    if _without_seeds(old["argv"][1:]) != _without_seeds(rec["argv"][1:]):
        raise ValueError(f"{rec['key']}: the kept run's command differs beyond --seeds:\n  {old['command']}\n  {rec['command']}")
    merged = getattr(importlib.import_module(module), name)(old["data"], rec["data"])
    json_path.write_text(json.dumps(merged, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return {**rec, "data": merged, "wall_seconds": old["wall_seconds"] + rec["wall_seconds"],
            "commands": old.get("commands", [old["command"]]) + [rec["command"]]}


def merge_files(paths: list[Path]) -> dict:
    """The ``--json`` files of one script's runs with different seeds (e.g. lent GPU sittings, a seed
    each) as one result: B1/B2 (bench/distill.py) or B3 (bench/labels.py), told apart by their keys.
    A file still marked ``partial`` (its run was stopped) is refused."""
    import importlib

    datas = []
    for path in paths:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:  # (a traceback; a cut-off file's error named no file)
            raise ValueError(f"{path}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise ValueError(f"{path}: not a JSON file: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: not the JSON of bench/distill.py (B1B2) or bench/labels.py (B3): only their seeds merge")
        if data.get("partial"):
            raise ValueError(f"{path}: a partial result (its run was stopped before the end): re-run that seed")
        datas.append(data)
    kinds = {"B1B2" if "rows" in d else "B3" if "per_seed" in d else "?" for d in datas}
    for path, data in zip(paths, datas):  # (two teacher.json files were refused as "not a mix")
        if "rows" not in data and "per_seed" not in data:
            raise ValueError(f"{path}: not the JSON of bench/distill.py (B1B2) or bench/labels.py (B3): only their seeds merge")
    if len(kinds) != 1:
        raise ValueError("merge takes the JSON of bench/distill.py runs or of bench/labels.py runs, not a mix")
    module, name = MERGERS[kinds.pop()]
    merge = getattr(importlib.import_module(module), name)
    merged = datas[0]
    for i, (path, other) in enumerate(zip(paths[1:], datas[1:]), 1):
        try:
            merged = merge(merged, other)
        except (KeyError, TypeError, AttributeError) as exc:  # (a hand edit, a file of another shape: a traceback)
            raise ValueError(f"{path}: cannot be merged with {', '.join(map(str, paths[:i]))}: one of them is not a --json "
                             f"result as its script writes it ({type(exc).__name__}: {exc})") from None
    return merged


def merge_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench merge", description="Merge the --json files of one table's runs with different seeds.")
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("-o", "--output", type=Path, help="write the merged JSON here (default: standard output)")
    p.add_argument("--markdown", type=Path, help="also write the merged table here, judged as its script judges it (3 seeds and more)")
    args = p.parse_args(argv)
    try:
        merged = merge_files(args.files)
    except ValueError as exc:
        print(f"python -m bench merge: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(merged, indent=2, ensure_ascii=False) + "\n"
    outputs = {}
    if args.output:
        outputs[args.output] = text
    if args.markdown:
        import importlib

        module = MERGERS["B1B2" if "rows" in merged else "B3"][0]
        try:
            table = importlib.import_module(module).markdown_from_json(merged, merged_not_judged(merged))
            outputs[args.markdown] = table.rstrip("\n") + "\n"  # (a text file ends in one: `cat` of two ran them together)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:  # (a file of another shape: a traceback)
            print(f"python -m bench merge: {', '.join(map(str, args.files))}: cannot render their table "
                  f"({type(exc).__name__}: {exc})", file=sys.stderr)
            return 2
    written = []  # each beside its place first: an -o or --markdown that cannot be written leaves neither
    try:
        for path, content in outputs.items():
            if path.is_dir():  # (written beside it as PATH.tmp, then a traceback replacing the folder)
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(content, encoding="utf-8")
            written.append((tmp, path))
    except OSError as exc:
        for tmp, _ in written:
            tmp.unlink(missing_ok=True)
        print(f"python -m bench merge: {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    for tmp, path in written:
        tmp.replace(path)
    if not args.output:
        sys.stdout.write(text)
    return 0


def merged_not_judged(data: dict) -> str | None:
    """Why a merged table's targets are not judged, as its script says it of one run: an option that
    shrinks the table (recorded in each run's JSON, the same in every merged one), or fewer than 3 seeds.
    (The merged table was judged over 2 seeds, or over --quick runs.)"""
    from bench.common import too_few_seeds

    changed = ["--quick"] if data.get("quick") else []
    if data.get("train_rows") is not None:
        changed.append("--train-rows")
    if "rows" in data:  # bench/distill.py's other shrinking options
        from bench.distill import AUG, STUDENT_FULL

        if not data.get("quick") and data.get("student_args", STUDENT_FULL) != STUDENT_FULL:
            changed.append("--student-epochs")
        if data.get("augment_n", 4) != int(AUG[AUG.index("--augment-n") + 1]):
            changed.append("--augment-n")
    reasons = [f"not the protocol: {' '.join(changed)}"] if changed else []
    reasons.append(too_few_seeds(list(data.get("seeds") or [])))
    return "; ".join(filter(None, reasons)) or None


def _now() -> str:
    return dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


EARLIER = "<!-- figures from before this python -m bench run, kept below it -->"


def _added(suite: dict) -> str:
    """The seeds an ``--add-seeds`` run did add (its ``seeds`` less ``seeds_not_added``)."""
    lost = set((suite.get("seeds_not_added") or "").split(","))
    return ",".join(s for s in suite["seeds"].split(",") if s not in lost)


def settle_added_seeds(suite: dict, jobs: dict) -> None:
    """``--add-seeds``: the seeds the re-run quality tables hold now, and this run's seeds that a failed
    or stopped run did not add (the page said "quality seeds 1,2, this run adding 2" over seed 1 alone)."""
    if not suite.get("seeds_added_to"):
        return
    ran = [j for k, j in jobs.items() if k in MERGERS and set(j.get("tables", ())) & set(suite.get("tables", ()))]
    held = [{int(s) for s in (j.get("data") or {}).get("seeds") or []} for j in ran]
    if not ran:
        return
    suite["seeds_all"] = ",".join(map(str, sorted(set().union(*held))))
    missing = [s for s in suite["seeds"].split(",") if any(int(s) not in h for h in held)]
    if missing:
        suite["seeds_not_added"] = ",".join(missing)
    else:
        suite.pop("seeds_not_added", None)


def write_outputs(results: dict, out: Path, doc: Path) -> None:
    settle_added_seeds(results["suite"], results["jobs"])
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "results.json.tmp"  # replaced whole: a run stopped while writing it left a cut-off file
    tmp.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(out / "results.json")
    doc.parent.mkdir(parents=True, exist_ok=True)
    old = doc.read_text(encoding="utf-8") if doc.exists() else ""
    doc.write_text(render(results) + kept_figures(old), encoding="utf-8")


def kept_figures(old: str) -> str:
    """What a suite run keeps of the page it replaces: the earlier figures a person wrote (with their
    machine, commit and history) go below the new ones, a level down; a page the suite rendered is
    replaced (its figures are in its results.json), the figures it kept still kept."""
    if EARLIER in old:
        return "\n" + EARLIER + old.split(EARLIER, 1)[1]
    if not old.strip() or old.startswith(render_intro()):
        return ""
    lines = old.splitlines()
    if lines and lines[0].startswith("# "):
        lines[0] = "## Earlier figures (from before this run)"
    else:
        lines.insert(0, "## Earlier figures (from before this run)")
    demoted = [lines[0]] + [("#" + line) if line.startswith("##") else line for line in lines[1:]]
    return "\n" + EARLIER + "\n\n" + "\n".join(demoted) + "\n"


def render_intro() -> str:
    """How every page :func:`render` writes begins."""
    return "# Benchmarks\n\nEvery figure on this page, down to the earlier figures kept at its end"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", nargs="?", default="all",
                   help="all (default), render (re-render the document from OUT/results.json), or tables, e.g. B4 or B1,B5")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--medium", action="store_true", help="CPU-sized, every table's shape, more data (about an hour on 2 cores); targets not judged")
    size.add_argument("--quick", action="store_true", help="smallest with every table's shape and every student (minutes on 2 cores); targets not judged")
    size.add_argument("--smoke", action="store_true", help="--quick with the TextCNN student only; targets not judged")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="training and scoring device (B4 times on the CPU, and also on the GPU when there is one)")
    p.add_argument("--seeds", help="quality seeds, comma-separated (default: 1,2,3; --medium/--quick/--smoke: 1)")
    p.add_argument("--only", help="tables to run, e.g. B1,B4 (default: all five)")
    p.add_argument("--out", help="folder for results.json, each table's JSON and log (default: bench/out/full|medium|quick|smoke)")
    p.add_argument("--doc", help="the Markdown document (default: docs/BENCHMARKS.md for a full run, else OUT/BENCHMARKS.md)")
    p.add_argument("--keep", action="store_true", help="keep the tables of OUT/results.json that this run does not re-run")
    p.add_argument("--add-seeds", action="store_true",
                   help="B1/B2/B3: merge these --seeds with the seeds OUT/results.json holds for the same command (implies --keep)")
    p.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    return p


def _read_results(path: Path) -> dict:
    """``OUT/results.json``, or a one-line ``ValueError`` naming it (a run stopped while writing it, or
    a hand edit, left a file that `render`, `--keep` and `--add-seeds` met with a traceback)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path}: not a JSON file ({exc}): re-run the suite, or give another --out") from None
    if not isinstance(data, dict) or not isinstance(data.get("suite"), dict) or not isinstance(data.get("jobs"), dict):
        raise ValueError(f"{path}: not a results.json of python -m bench (no 'suite' and 'jobs'): give another --out")
    return data


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["merge"]:
        return merge_main(argv[1:])
    args = build_parser().parse_args(argv)
    profile = "medium" if args.medium else "quick" if args.quick else "smoke" if args.smoke else "full"
    out, doc = default_paths(profile, args.out, args.doc)
    out, doc = out.resolve(), doc.resolve()  # the scripts run from the repository root
    # (a traceback: at once for --out, after the first table for --doc, the other tables never run)
    bad = (f"--out {out}: not a folder" if out.exists() and not out.is_dir() else
           f"--doc {doc}: a folder; give the Markdown file to write" if doc.is_dir() else None)
    if bad:
        print(f"python -m bench: {bad}", file=sys.stderr)
        return 2

    if args.what == "render":
        src = out / "results.json"
        if not src.exists():
            print(f"no {src}: run the suite first", file=sys.stderr)
            return 2
        try:
            results = _read_results(src)
        except ValueError as exc:
            print(f"python -m bench: {exc}", file=sys.stderr)
            return 2
        covered = {t for job in results["jobs"].values() for t in job.get("tables", ())}
        if not args.doc and (results["suite"]["profile"] != "full" or covered != set(TABLES)):
            doc = out / "BENCHMARKS.md"  # (as the run itself: some tables only never replace the published page)
        results["targets"] = collect_targets(results)
        write_outputs(results, out, doc)
        print(f"[bench] wrote {doc}", file=sys.stderr)
        return 0

    try:
        only = parse_only(args.only) if args.what == "all" else parse_only(args.what)
        if args.what != "all" and args.only:
            only = [t for t in only if t in parse_only(args.only)]
            if not only:
                raise ValueError(f"{args.what} and --only {args.only} have no table in common")
    except ValueError as exc:
        print(f"python -m bench: {exc}", file=sys.stderr)
        return 2
    kept: dict = {}
    kept_seeds = None
    if (args.keep or args.add_seeds) and (out / "results.json").exists():
        try:
            old = _read_results(out / "results.json")
        except ValueError as exc:
            print(f"python -m bench: {exc}", file=sys.stderr)
            return 2
        if old["suite"]["profile"] != profile:  # (it was ignored, and this run's results.json replaced its figures)
            print(f"python -m bench: --{'add-seeds' if args.add_seeds else 'keep'}: {out / 'results.json'} holds a "
                  f"{old['suite']['profile']} run, not a {profile} one: give the same size option, or another --out", file=sys.stderr)
            return 2
        kept = old["jobs"]
        kept_seeds = old["suite"].get("seeds_all") or old["suite"].get("seeds")  # (the seeds the kept tables hold)
    rerun = {key for key, (covers, _, _) in JOBS.items() if set(covers) & set(only)}  # the kept jobs this run replaces
    for key in sorted(rerun & set(kept)):
        dropped = [t for t in kept[key].get("tables", ()) if t not in only]
        if dropped and kept[key].get("data") is not None:  # one script run covers them: its new figures replace all of it
            print(f"python -m bench: --keep: {', '.join(dropped)} and {', '.join(t for t in JOBS[key][0] if t in only)} are one run of "
                  f"{JOBS[key][1]}; re-running {', '.join(t for t in JOBS[key][0] if t in only)} alone would lose the kept "
                  f"{', '.join(dropped)} figures: name {', '.join(JOBS[key][0])} together", file=sys.stderr)
            return 2
    covered = set(only) | {t for key, job in kept.items() if key not in rerun for t in job.get("tables", ())}
    if not args.doc and profile == "full" and covered != set(TABLES):  # (kept: the others' figures join)
        # some tables only: the published page (all five, with its notes) is not replaced by a part of it
        doc = (out / "BENCHMARKS.md").resolve()
    seeds = args.seeds or DEFAULT_SEEDS[profile]
    try:
        numbers = [int(s) for s in seeds.split(",")]
    except ValueError:
        print(f"python -m bench: --seeds wants comma-separated integers, not {seeds!r}", file=sys.stderr)
        return 2
    if len(set(numbers)) != len(numbers):
        print(f"python -m bench: --seeds {seeds}: a seed given twice would count twice towards the 3 seeds", file=sys.stderr)
        return 2
    if any(not 0 <= n < 2**32 for n in numbers):  # (every quality table failed at its first kd pretrain)
        print(f"python -m bench: --seeds {seeds}: a seed is from 0 to {2**32 - 1} (kd's --seed)", file=sys.stderr)
        return 2
    device = resolve_device(args.device)
    jobs = plan(only, profile, device, seeds, out)
    if args.add_seeds and any(j["key"] not in MERGERS for j in jobs):
        print("python -m bench: --add-seeds is for the quality tables (B1, B2, B3); run B4/B5 on their own", file=sys.stderr)
        return 2
    for job in jobs if args.add_seeds else []:  # what merge_job would refuse after the run: refused before it
        before = kept.get(job["key"]) or {}
        if before.get("data") is None:
            continue
        both = sorted(set(numbers) & {int(s) for s in before["data"].get("seeds") or []})
        why = (f"seed(s) {', '.join(map(str, both))} already in OUT/results.json: give only new --seeds" if both else
               None if _without_seeds(before["argv"][1:]) == _without_seeds(job["argv"]) else
               f"the kept run's command differs beyond --seeds:\n  {before['command']}\n  {display_command(job['argv'])}")
        if why:
            print(f"python -m bench: --add-seeds: {job['key']}: {why}", file=sys.stderr)
            return 2
    if args.dry_run:
        for job in jobs:
            print(display_command(job["argv"]))
        print(f"# the document: {doc}")
        return 0
    from bench.common import machine_info

    train = Path(os.environ.get("KD_SHARED") or ROOT.parent / "shared") / "data" / "reviews" / "train.tsv"
    if not train.exists():
        print(f"benchmark data not found: no {train} ({'fix KD_SHARED' if os.environ.get('KD_SHARED') else 'set KD_SHARED'})", file=sys.stderr)
        return 2
    if device == "cuda":  # (every table failed at its first kd command, and the run replaced the figures there)
        import torch

        if not torch.cuda.is_available():
            print("python -m bench: --device cuda: no CUDA device is available here (use --device cpu or auto)", file=sys.stderr)
            return 2
    started, t0 = _now(), time.monotonic()
    suite = {
        "command": "python -m bench " + shlex.join(argv),
        "profile": profile, "device": device, "device_requested": args.device, "seeds": seeds, "tables": only,
        # --add-seeds: the page said only this run's seeds ("quality seeds 2,3") over tables of seeds 1, 2 and 3
        **({"seeds_added_to": kept_seeds, "seeds_all": ",".join(sorted({*kept_seeds.split(","), *seeds.split(",")}, key=int))}
           if args.add_seeds and kept_seeds else {}),
        "started": started, "machine": machine_info(), "out": str(out), "doc": str(doc),
    }
    not_merged: list[str] = []
    jobs_done: dict = {k: v for k, v in kept.items() if k not in {j["key"] for j in jobs}}
    for job in jobs:
        rec = run_job(job, out)
        stopped = rec.get("interrupted")  # (--add-seeds keeps the kept seeds then: still stop)
        before = kept.get(job["key"]) if args.add_seeds else None
        if before is not None and before.get("data") is not None:
            why = None
            if rec["data"] is None:  # adding seeds never loses the ones kept
                why = f"this run failed (exit {rec['returncode']}, see {rec['log']})"
            else:
                try:
                    rec = merge_job(before, rec, ROOT / job["json"])
                except ValueError as exc:
                    why = str(exc)
            if why is not None:  # keep the kept seeds; this run's figures stay in its log only
                print(f"[bench] {job['key']}: NOT merged, the kept figures stay: {why}", file=sys.stderr)
                not_merged.append(job["key"])
                (ROOT / job["json"]).parent.mkdir(parents=True, exist_ok=True)
                (ROOT / job["json"]).write_text(json.dumps(before["data"], indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
                rec = before
        jobs_done[job["key"]] = rec
        if stopped:  # Ctrl-C: the tables done so far, this one marked, and the rest not run
            for rest in jobs[jobs.index(job):]:  # (--keep: a table not measured again keeps its kept figures)
                if (kept.get(rest["key"]) or {}).get("data") is not None:
                    jobs_done[rest["key"]] = kept[rest["key"]]
            suite.update(finished=f"{_now()}, interrupted during {job['key']}", wall_seconds=time.monotonic() - t0)
            results = {"suite": suite, "jobs": {k: jobs_done[k] for k in JOBS if k in jobs_done}}
            results["targets"] = collect_targets(results)
            write_outputs(results, out, doc)
            left = [j["key"] for j in jobs[jobs.index(job) + 1:]]
            print(f"[bench] interrupted during {job['key']}: wrote {out / 'results.json'} and {doc} with the tables done"
                  + (f"; not run: {', '.join(left)}" if left else ""), file=sys.stderr)
            return 130
        # the document after every table: a long run shows its progress, and a crash loses nothing
        # ("running" alone read so forever once the suite was killed: the process it names tells a reader)
        unfinished = (f"(not finished: written after {job['key']} by process {os.getpid()} on {socket.gethostname()}; "
                      "if that process is gone, the suite stopped there)")
        partial = {"suite": {**suite, "finished": unfinished, "wall_seconds": time.monotonic() - t0},
                   "jobs": {k: jobs_done[k] for k in JOBS if k in jobs_done}}
        partial["targets"] = collect_targets(partial)
        write_outputs(partial, out, doc)
    suite.update(finished=_now(), wall_seconds=time.monotonic() - t0)
    results = {"suite": suite, "jobs": {k: jobs_done[k] for k in JOBS if k in jobs_done}}
    results["targets"] = collect_targets(results)
    write_outputs(results, out, doc)
    failed = [k for k, j in results["jobs"].items() if j.get("data") is None] + not_merged
    print(f"[bench] wrote {out / 'results.json'} and {doc} in {_fmt_seconds(suite['wall_seconds'])}"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
