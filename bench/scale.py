"""B5 scale: a 500,000-text unlabeled pool through kd, step by step, with the peak memory of each step.

    python bench/scale.py --device cuda --json bench/out/scale.json    # the protocol: 500,000 texts, 6 x 384 teacher
    python bench/scale.py --quick --device cpu                         # CPU-sized: 20,000 texts, 2 x 128 teacher

The pool is bench/ingest.py's (``build_pool``, seed 0): People's Daily 1998 sentences and train.tsv
review texts drawn with replacement, each lightly perturbed, all distinct under kd's normalization.

Set-up, once and not timed (in its own process): a base store holding the first ``--teach-rows`` rows of
train.tsv (labeled), dev.tsv and test.tsv, all through ``kd ingest``; a teacher of ``--layers`` x
``--hidden`` from ``kd pretrain --steps N`` and ``kd teach --epochs 1``. Its quality does not matter here,
only its size: every figure below is a rate or a size.

Then, per repeat, on a fresh copy of the base store, each step in a fresh Python process (the way a user
runs one command after the other), every kd command run in-process through its click CLI:

1. ``ingest``: ``kd ingest pool.txt --split unlabeled``;
2. ``teach``: ``kd teach --run scale --logits-only``: the existing teacher scores the pool and the store
   takes the logits (reading the samples, loading the model, tokenizing, scoring, writing: all of it);
3. ``score``: the same teacher through the library alone (``kdstore.teacher.load_classifier`` and
   ``kdstore.teacher.score`` over the pool texts, after a warm-up batch), and ``kdstore.batching.encode``
   (tokenization alone) over the same texts: where the time of step 2 goes;
4. ``write``: ``Store.write_logits`` of the teacher's logits (read back with ``Store.read_logits``, not
   timed) into a new stage: the store's share of step 2;
5. ``distill``: ``kd distill --run scale --student textcnn --epochs 1 --unlabeled``: the default student
   at kd's default size, one epoch over the labeled rows and the pool (``train_seconds``, which the stage
   records, is that epoch and its dev evaluation; the command's wall clock also scores every sample with
   the student and measures its speed).

Timings are wall clock of the call (imports done before); a figure is the median over the repeats with
the min-max. Peak RSS per step is the whole process's, reset at the step's start (VmHWM through
``/proc/self/clear_refs``, as bench/ingest.py does); on CUDA also ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import machine_info, meets, shown, shared_dir, spread  # noqa: E402
from bench.ingest import _peak_mib, _reset_peak, _rss_mib, build_pool  # noqa: E402

RUN = "scale"
STEPS = ("ingest", "teach", "score", "write", "distill")
STEP_TITLES = {
    "ingest": "`kd ingest pool.txt --split unlabeled`",
    "teach": "`kd teach --logits-only` (teacher logits, end to end)",
    "score": "teacher scoring alone (`kdstore.teacher.score`)",
    "tokenize": "tokenization alone (`kdstore.batching.encode`)",
    "write": "write logits (`Store.write_logits`)",
    "distill": "`kd distill --epochs 1 --unlabeled` (TextCNN)",
}
FULL = {"rows": 500_000, "repeat": 5, "layers": 6, "hidden": 384, "pretrain_steps": 20, "teach_rows": 2000}
QUICK = {"rows": 20_000, "repeat": 2, "layers": 2, "hidden": 128, "pretrain_steps": 5, "teach_rows": 1000}
# BENCHMARK.md, B5 (reference and targets)
TARGET_ROWS = 500_000
MIN_REPEATS = 5  # BENCHMARK.md: timings are medians of at least 5 runs
TARGET_INGEST_S = 20.0
TARGET_WRITE_ROWS_PER_S = 200_000.0
TARGET_TOKENIZE_S = 3.0
TARGET_SCORE = {(6, 384): 100_000.0, (12, 768): 40_000.0}  # samples/s on a GPU (an H100 in the reference)


# the steps (each runs in its own process) -----------------------------------------------------------
def kd(*args: str) -> str:
    from bench.teacher import kd as run_kd

    return run_kd(*args)


def _gpu_reset(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _gpu_peak(device: str) -> float | None:
    if device != "cuda":
        return None
    import torch

    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / (1 << 20)


def _measure(device: str, fn) -> dict:
    """Run ``fn`` (returns a dict of figures) timed, with the step's peak RSS (and GPU memory)."""
    _gpu_reset(device)  # first: its CUDA context (hundreds of MiB of RSS) is not the step's memory
    reset = _reset_peak()
    start = _rss_mib()
    t0 = time.perf_counter()
    figures = fn() or {}
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "peak_rss_mib": _peak_mib(), "start_rss_mib": start, "peak_reset": reset,
            "gpu_peak_mib": _gpu_peak(device), **figures}


def child_setup(cfg: dict) -> dict:
    work, db, device = Path(cfg["work"]), cfg["db"], cfg["device"]
    data = shared_dir() / "data" / "reviews"
    train = (data / "train.tsv").read_text(encoding="utf-8").splitlines()[: cfg["teach_rows"]]
    (work / "train-subset.tsv").write_text("".join(l + "\n" for l in train), encoding="utf-8")
    t0 = time.perf_counter()
    kd("ingest", str(work / "train-subset.tsv"), "--db", db)
    kd("ingest", str(data / "dev.tsv"), "--split", "dev", "--db", db)
    kd("ingest", str(data / "test.tsv"), "--split", "test", "--db", db)
    out = json.loads(kd("pretrain", "--run", RUN, "--layers", str(cfg["layers"]), "--hidden", str(cfg["hidden"]),
                        "--steps", str(cfg["pretrain_steps"]), "--batch-size", "32", "--seed", "1",
                        "--device", device, "--db", db, "--json"))
    rep = json.loads(kd("teach", "--run", RUN, "--model", out["artifact_path"], "--epochs", "1", "--batch-size", "32",
                        "--seed", "1", "--device", device, "--db", db, "--json"))
    from kdstore.store import Store

    Store.open(db, create=False).close()  # the last connection checkpoints the WAL into the file
    return {"seconds": time.perf_counter() - t0, "teacher_parameters": rep["metrics"]["all"].get("parameters"),
            "teacher_test_accuracy": rep["metrics"].get("test", {}).get("accuracy"),
            "teacher_dir": rep["artifact_path"]}


def child_ingest(cfg: dict) -> dict:
    import commands.cli  # noqa: F401  (imports outside the timing)
    import kdstore.ingest  # noqa: F401

    def go():
        out = json.loads(kd("ingest", cfg["pool"], "--split", "unlabeled", "--db", cfg["db"], "--json"))
        return {"rows": out.get("added"), "report": out}

    return _measure("cpu", go)  # ingest never touches the GPU: no torch import or CUDA context in its memory


def child_teach(cfg: dict) -> dict:
    import commands.cli  # noqa: F401
    import kdstore.teacher  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    def go():
        out = json.loads(kd("teach", "--run", RUN, "--logits-only", "--device", cfg["device"], "--db", cfg["db"], "--json"))
        return {"rows": out["scored"]}

    return _measure(cfg["device"], go)


def child_score(cfg: dict) -> dict:
    import numpy as np

    from kdstore.batching import encode
    from kdstore.store import Store
    from kdstore.teacher import load_classifier, model_dirs, score
    from kdstore.torchutil import pick_device

    device = pick_device(cfg["device"])
    store = Store.open(cfg["db"], create=False)
    stage = store.find_stage(RUN, "teach")
    texts = store.samples(splits=["unlabeled"]).texts
    tokenizer, model = load_classifier(model_dirs(stage)[0], store.class_names())
    model.to(device)
    max_len = int(stage.config.get("max_len", 128))
    bs = cfg["score_batch_size"]
    score(model, tokenizer, texts[: 2 * bs], max_len=max_len, batch_size=bs, device=device)  # warm-up
    holder: dict = {}

    def tok():
        holder["ids"] = encode(tokenizer, texts, max_len=max_len)

    tokenize = _measure(cfg["device"], tok)
    lengths = np.array([len(x) for x in holder.pop("ids")])
    tokenize.update({"rows": len(texts), "mean_tokens": float(lengths.mean()),
                     "truncated_pct": float(100 * (lengths >= max_len).mean())})
    scored = _measure(cfg["device"], lambda: {
        "rows": len(score(model, tokenizer, texts, max_len=max_len, batch_size=bs, device=device))})
    scored.update({"batch_size": bs, "max_len": max_len, "tokenize": tokenize})
    store.close()
    return scored


def child_write(cfg: dict) -> dict:
    from kdstore.runs import stage_scope
    from kdstore.store import Store

    store = Store.open(cfg["db"], create=False)
    ids, logits = store.read_logits(store.find_stage(RUN, "teach").id)
    with stage_scope(store, run="bench-write", kind="teach", config={}) as stage:
        out = _measure("cpu", lambda: {"rows": store.write_logits(stage.id, ids, logits)})
    store.close()
    return out


def child_distill(cfg: dict) -> dict:
    import commands.cli  # noqa: F401
    import kdstore.distill  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    holder: dict = {}

    def go():
        holder["out"] = json.loads(kd("distill", "--run", RUN, "--student", "textcnn", "--epochs", "1", "--unlabeled",
                                      "--seed", "1", "--device", cfg["device"], "--db", cfg["db"], "--json"))
        return {}

    res = _measure(cfg["device"], go)
    m = holder["out"]["metrics"]["all"]
    res.update({
        "rows": int(m.get("train_samples", 0)) + int(m.get("pool_samples", 0)),
        "train_samples": m.get("train_samples"), "pool_samples": m.get("pool_samples"),
        "train_seconds": m.get("train_seconds"), "parameters": m.get("parameters"),
    })
    return res


CHILDREN = {"setup": child_setup, "ingest": child_ingest, "teach": child_teach, "score": child_score,
            "write": child_write, "distill": child_distill}


def _child(step: str, cfg: dict, env: dict) -> dict:
    path = Path(cfg["work"]) / f"cfg-{step}.json"
    path.write_text(json.dumps(cfg))
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", step, str(path)],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit(f"scale: the {step} step failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _copy_store(src: str, dst: str) -> None:
    """A consistent copy of a SQLite store (the backup API: WAL content included)."""
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    b.close()
    a.close()


# reporting ----------------------------------------------------------------------------------------------
def summarize(runs: list[dict]) -> dict:
    out = {}
    parts = {s: [r[s] for r in runs] for s in STEPS}
    parts["tokenize"] = [r["score"]["tokenize"] for r in runs]
    for step, xs in parts.items():
        rows = xs[0]["rows"]
        secs = [x["seconds"] for x in xs]
        s = {"rows": rows, "seconds": spread(secs), "rows_per_s": spread([rows / t for t in secs]),
             "peak_rss_mib_max": max(x["peak_rss_mib"] for x in xs),
             "start_rss_mib_median": statistics.median(x["start_rss_mib"] for x in xs)}
        gpu = [x["gpu_peak_mib"] for x in xs if x.get("gpu_peak_mib") is not None]
        if gpu:
            s["gpu_peak_mib_max"] = max(gpu)
        if step == "distill":
            epoch = [x["train_seconds"] for x in xs]
            s["train_seconds"] = spread(epoch)
            s["epoch_rows_per_s"] = spread([rows / t for t in epoch])
            s["pool_samples"], s["train_samples"] = xs[0]["pool_samples"], xs[0]["train_samples"]
        if step == "tokenize":
            s["mean_tokens"] = xs[0]["mean_tokens"]
            s["truncated_pct"] = xs[0]["truncated_pct"]
        out[step] = s
    return out


def _verdict(ok: bool, reason: str | None) -> str:
    return f"not judged ({reason})" if reason else ("met" if ok else "not met")


def targets(result: dict, not_judged: str | None = None) -> list[dict]:
    """The B5 targets this run can speak to: figure, target, measured, verdict (met / not met / not judged (why))."""
    s, cfg = result["summary"], result["config"]
    scale = not_judged or (None if cfg["rows"] == TARGET_ROWS else f"{cfg['rows']:,} rows, the target is for {TARGET_ROWS:,}")
    if scale is None and cfg.get("repeat", MIN_REPEATS) < MIN_REPEATS:  # BENCHMARK.md: timings are medians of at least 5 runs
        scale = f"{cfg['repeat']} repeat{'s' if cfg['repeat'] != 1 else ''}, the protocol's medians are over {MIN_REPEATS}"
    out = []
    ing = s["ingest"]["seconds"]["median"]
    out.append({"figure": "ingest of the pool (`kd ingest`)", "target": f"≤ {TARGET_INGEST_S:g} s",
                "measured": f"{shown(ing, '.2f', TARGET_INGEST_S, at_most=True)} s", "verdict": _verdict(meets(ing, TARGET_INGEST_S, at_most=True), scale), "step": "ingest"})
    w = s["write"]["rows_per_s"]["median"]
    out.append({"figure": "write of the logit rows (`Store.write_logits`)", "target": f"≥ {TARGET_WRITE_ROWS_PER_S:,.0f} rows/s",
                "measured": f"{shown(w, ',.0f', TARGET_WRITE_ROWS_PER_S)} rows/s", "verdict": _verdict(meets(w, TARGET_WRITE_ROWS_PER_S), scale), "step": "write"})
    tk = s["tokenize"]["seconds"]["median"]
    out.append({"figure": "tokenization of the pool", "target": f"≤ {TARGET_TOKENIZE_S:g} s",
                "measured": f"{shown(tk, '.2f', TARGET_TOKENIZE_S, at_most=True)} s", "verdict": _verdict(meets(tk, TARGET_TOKENIZE_S, at_most=True), scale), "step": "tokenize"})
    size = (cfg["layers"], cfg["hidden"])
    limit = TARGET_SCORE.get(size, TARGET_SCORE[(6, 384)])
    reason = scale
    if reason is None and result.get("device") != "cuda":
        reason = "CPU run; the target is for a GPU"
    if reason is None and size not in TARGET_SCORE:
        reason = f"teacher {size[0]} x {size[1]}; the targets are for 6 x 384 and 12 x 768"
    t = s["teach"]["rows_per_s"]["median"]
    out.append({"figure": f"teacher logits, {size[0]} x {size[1]} (`kd teach --logits-only`)", "target": f"≥ {limit:,.0f} samples/s",
                "measured": f"{shown(t, ',.0f', limit)} samples/s (library `score` alone: {s['score']['rows_per_s']['median']:,.0f})",
                "verdict": _verdict(meets(t, limit), reason), "step": "teach"})
    return out


def _fmt_verdict(v: str) -> str:
    return f"**{v}**" if v in ("met", "not met") else v


def markdown(result: dict, not_judged: str | None = None) -> str:
    s, m, cfg = result["summary"], result["machine"], result["config"]
    marks = {t["step"]: f"{t['target']}: {_fmt_verdict(t['verdict'])}" for t in targets(result, not_judged)}
    gpu = " / GPU peak" if any("gpu_peak_mib_max" in s[k] for k in s) else ""
    lines = [
        f"{cfg['rows']:,} unlabeled texts, {cfg['repeat']} repeat{'s' if cfg['repeat'] != 1 else ''} (each on a fresh copy of the base "
        f"store, every step in a fresh process); device {result['device']}; median with the min–max over the repeats.",
        "",
        f"| step | rows | seconds (median; min–max) | rows/s (median) | peak RSS (at start){gpu} | target |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for step in ("ingest", "teach", "score", "tokenize", "write", "distill"):
        x = s[step]
        mem = f"{x['peak_rss_mib_max']:.0f} MiB ({x['start_rss_mib_median']:.0f})"
        if "gpu_peak_mib_max" in x:
            mem += f" / {x['gpu_peak_mib_max']:.0f} MiB"
        lines.append(
            f"| {STEP_TITLES[step]} | {x['rows']:,} | {x['seconds']['median']:.2f} ({x['seconds']['min']:.2f}–{x['seconds']['max']:.2f}) | "
            f"{x['rows_per_s']['median']:,.0f} | {mem} | {marks.get(step, '')} |"
        )
        if step == "distill":
            e = x["train_seconds"]
            lines.append(
                f"| … of which the epoch (`train_seconds`) | {x['rows']:,} | {e['median']:.2f} ({e['min']:.2f}–{e['max']:.2f}) | "
                f"{x['epoch_rows_per_s']['median']:,.0f} | | |"
            )
    setup, pool, tok = result["setup"], result["pool"], s["tokenize"]
    gpu_name = f", GPU {m['gpu']}" if "gpu" in m else ""
    lines += [
        "",
        f"- teacher: {cfg['layers']} x {cfg['hidden']} ({int(setup.get('teacher_parameters') or 0):,} parameters), `kd pretrain --steps "
        f"{cfg['pretrain_steps']}` and `kd teach --epochs 1` on the first {cfg['teach_rows']:,} rows of train.tsv (set-up, "
        f"{setup['seconds']:.0f} s, not timed; its accuracy does not matter here); scoring batch size {cfg['score_batch_size']} "
        f"(`kd teach --logits-only` uses kd's own).",
        f"- pool: {pool['origin']}; mean {pool['mean_chars']:.1f} characters, {tok['mean_tokens']:.1f} tokens "
        f"({tok['truncated_pct']:.1f} % cut at {result['runs'][0]['score']['max_len']}); built in {pool['build_seconds']:.1f} s (not timed).",
        f"- distillation: the labeled {int(s['distill']['train_samples']):,} train rows and the {int(s['distill']['pool_samples']):,}-text pool, "
        "TextCNN at kd's default size, one epoch; the command's wall clock also scores every sample with the student and times it.",
        "- peak RSS: the whole process during the step (VmHWM reset through /proc/self/clear_refs), its RSS at the step's start "
        "in brackets" + ("; GPU: `torch.cuda.max_memory_allocated` during the step." if gpu else "."),
        f"- machine: {m['cpu']}, {m['cores_usable']} cores, {m['memory']} RAM{gpu_name}; torch {m.get('torch')}, SQLite {m['sqlite']}, "
        f"Python {m['python']}.",
        f"- commit: `{m['commit']}`" + (" (with uncommitted changes in kdstore/, migrations/, commands/ or bench/)" if m.get("kdstore_dirty") else ""),
        f"- command: `{result['command']}`",
    ]
    return "\n".join(lines)


def markdown_from_json(data: dict, not_judged: str | None = None) -> str:
    return markdown(data, not_judged)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="CPU-sized: 20,000 texts, a 2 x 128 teacher, 2 repeats")
    ap.add_argument("--rows", type=int, help="pool size (default 500,000; --quick 20,000)")
    ap.add_argument("--repeat", type=int, help="repeats, each on a fresh store copy (default 5, the protocol's least; --quick 2)")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--layers", type=int, help="teacher layers (default 6; --quick 2)")
    ap.add_argument("--hidden", type=int, help="teacher hidden size (default 384; --quick 128)")
    ap.add_argument("--pretrain-steps", type=int, help="MLM steps of the teacher (speed does not depend on them)")
    ap.add_argument("--teach-rows", type=int, help="labeled train rows (default 2,000; --quick 1,000)")
    ap.add_argument("--score-batch-size", type=int, default=256, help="batch size of the library scoring step")
    ap.add_argument("--dir", type=Path, help="parent of the temporary folder (default: the system temp)")
    ap.add_argument("--json", type=Path, metavar="PATH", help="also write the raw figures here")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        step, path = args.child
        print(json.dumps(CHILDREN[step](json.loads(Path(path).read_text()))))
        return 0
    if not (shared_dir() / "data" / "reviews" / "train.tsv").exists():
        print("benchmark data not found (set KD_SHARED)", file=sys.stderr)
        return 2
    cfg = dict(QUICK if args.quick else FULL)
    for key in cfg:
        if getattr(args, key, None) is not None:
            cfg[key] = getattr(args, key)
    if cfg["rows"] < 1 or cfg["repeat"] < 1:
        ap.error("--rows and --repeat must be at least 1")
    cfg["score_batch_size"] = args.score_batch_size
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    command = "python bench/scale.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    env = {**os.environ, "KD_NO_PROGRESS": "1"}
    env.pop("KD_DB", None)
    env.pop("KD_CONFIG", None)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kd-bench-scale-", dir=args.dir) as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        texts, origin = build_pool(cfg["rows"])
        pool_path = tmp / "pool.txt"
        pool_path.write_bytes(("\n".join(texts) + "\n").encode("utf-8"))
        pool = {"origin": origin, "rows": len(texts), "mean_chars": sum(map(len, texts)) / len(texts),
                "bytes": pool_path.stat().st_size, "build_seconds": time.perf_counter() - t0}
        del texts
        base = tmp / "base"
        base.mkdir()
        common = {**cfg, "device": device, "pool": str(pool_path)}
        print(f"scale: set-up (teacher {cfg['layers']} x {cfg['hidden']})", file=sys.stderr, flush=True)
        setup = _child("setup", {**common, "work": str(base), "db": str(base / "kd.db")},
                       {**env, "KD_ARTIFACTS": str(base / "kd-artifacts")})
        runs = []
        for i in range(cfg["repeat"]):
            work = tmp / f"run{i}"
            work.mkdir()
            db = str(work / "kd.db")
            _copy_store(str(base / "kd.db"), db)
            step_cfg = {**common, "work": str(work), "db": db}
            step_env = {**env, "KD_ARTIFACTS": str(work / "kd-artifacts")}
            run = {}
            for step in STEPS:
                run[step] = _child(step, step_cfg, step_env)
            runs.append(run)
            print(f"scale: repeat {i + 1}/{cfg['repeat']}: " + ", ".join(f"{s} {run[s]['seconds']:.2f} s" for s in STEPS),
                  file=sys.stderr, flush=True)
            for f in sorted(work.rglob("*"), reverse=True):  # free the disk before the next repeat
                f.unlink() if f.is_file() or f.is_symlink() else f.rmdir()
    result = {
        "benchmark": "B5 scale: the unlabeled pool through kd",
        "config": cfg,
        "device": device,
        "command": command,
        "machine": machine_info(),
        "pool": pool,
        "setup": setup,
        "runs": runs,
        "summary": summarize(runs),
        "wall_seconds": time.monotonic() - started,
    }
    result["targets"] = targets(result)
    print(markdown(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
