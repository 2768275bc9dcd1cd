"""B5 store benchmark: ingest an unlabeled pool, write one logit row per sample, read them back.

    python bench/ingest.py                       # 500,000 rows, 5 repeats (the protocol's least)
    python bench/ingest.py --rows 50000 --repeat 5 --json bench/out/ingest.json
    python bench/ingest.py --postgres postgresql+psycopg://postgres@127.0.0.1:54329/postgres

Each repeat uses a fresh store: a SQLite file in a temporary folder, or with ``--postgres URL`` a new
database created on that server (and dropped after), and two fresh Python processes, as a user
runs ``kd ingest`` and then a command that writes logits:

1. ingest: read the pool file and ``kdstore.ingest.ingest(..., IngestOptions(split="unlabeled"))``,
   the same code ``kd ingest pool.txt --split unlabeled`` runs (parse, hash, de-duplicate, insert);
2. write logits: ``Store.write_logits`` of an ``(N, 2)`` float32 matrix inside
   ``stage_scope(store, run="bench", kind="teach", config={})``;
3. read logits: ``Store.read_logits`` of that stage (checked equal to what was written).

The pool is built once, deterministically (seed 0): sentences of
``../shared/data/reviews/corpus-peoples-daily-1998.txt`` and review texts of ``train.tsv`` drawn
with replacement, each lightly perturbed (a character dropped or doubled, or a counter token
appended) and made unique under the store's text normalization, so every row is added. Without
``../shared`` the pool is random CJK strings instead (the report says which).

Timings are wall clock (``time.perf_counter``) of the library calls only; building the pool, opening
the store, creating the schema and fetching the sample ids are not timed. Closing the store after
ingest checkpoints the WAL into the file (the file sizes are taken then).

Peak RSS is per step: the whole process (interpreter, NumPy and SQLAlchemy included), reset before
the step through ``/proc/self/clear_refs`` and read back as ``VmHWM``; the RSS when the step started
is shown beside it. ``getrusage(RUSAGE_SELF).ru_maxrss`` is recorded too (``maxrss_mib`` in the
JSON) and is the fallback without /proc, but it cannot be reset and, in a child process, also
counts the parent's memory at the fork before ``exec``, so it overstates a step's peak.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # ``python bench/ingest.py`` from a checkout that is not installed
    sys.path.insert(0, str(ROOT))

from bench.common import machine_info, meets, shared_dir, shown  # noqa: E402

SEED = 0
STEPS = ("ingest", "write_logits", "read_logits")
STEP_TITLES = {
    "ingest": "ingest (unlabeled)",
    "write_logits": "write logits (2 × f32)",
    "read_logits": "read logits",
}
# BENCHMARK.md, B5: ingest 500k rows in at most 20 s; write logit rows at 200k rows/s or more
TARGET_ROWS = 500_000
MIN_REPEATS = 5  # BENCHMARK.md: timings are medians of at least 5 runs
TARGETS = {"ingest": ("seconds", 20.0), "write_logits": ("rows_per_s", 200_000.0)}


# the pool ------------------------------------------------------------------------------------
def _lines(path: Path) -> list[str]:
    return [l.strip() for l in path.read_text(encoding="utf-8").split("\n") if l.strip()]


def load_sources() -> tuple[list[str], list[str]] | None:
    data = shared_dir() / "data" / "reviews"
    corpus, train = data / "corpus-peoples-daily-1998.txt", data / "train.tsv"
    if not (corpus.is_file() and train.is_file()):
        return None
    sentences = [l.replace("\t", " ") for l in _lines(corpus)]
    reviews = [l.split("\t", 1)[1].replace("\t", " ") for l in _lines(train) if "\t" in l]
    return sentences, reviews


def build_pool(n: int, seed: int = SEED) -> tuple[list[str], str]:
    """``n`` texts, unique under ``kdstore.textkey.normalize``, and a description of where they came from."""
    import numpy as np

    from kdstore.textkey import normalize

    rng = np.random.default_rng(seed)
    sources = load_sources()
    if sources is not None:
        sentences, reviews = sources
        from_corpus = rng.random(n) < 0.5
        pick = np.where(
            from_corpus,
            rng.integers(0, len(sentences), n),
            rng.integers(0, len(reviews), n),
        )
        bases = [sentences[j] if c else reviews[j] for c, j in zip(from_corpus.tolist(), pick.tolist())]
        origin = (
            f"sampled with replacement (seed {seed}): {int(from_corpus.sum())} sentences of "
            f"corpus-peoples-daily-1998.txt ({len(sentences)} lines), {n - int(from_corpus.sum())} "
            f"texts of train.tsv ({len(reviews)} rows), each perturbed"
        )
    else:
        lengths = rng.integers(8, 80, n)
        codes = rng.integers(0x4E00, 0x9FA6, int(lengths.sum()))
        chars = "".join(map(chr, codes.tolist()))
        ends = np.cumsum(lengths).tolist()
        bases = [chars[a:b] for a, b in zip([0] + ends[:-1], ends)]
        origin = f"synthetic random CJK strings, 8-79 characters (seed {seed}); ../shared not found"
    ops = rng.integers(0, 3, n).tolist()
    where = rng.random(n).tolist()
    seen: set[str] = set()
    texts = []
    for i, (base, op, u) in enumerate(zip(bases, ops, where)):
        k = int(u * len(base))
        if op == 0 and len(base) > 1:  # drop a character
            t = base[:k] + base[k + 1 :]
        elif op == 1:  # double a character
            t = base[: k + 1] + base[k:]
        else:  # append a counter token
            t = f"{base} #{i:x}"
        t = t.strip()
        key = normalize(t)
        extra = 0
        while not key or key in seen:
            extra += 1
            t = f"{base} #{i:x}.{extra}"
            key = normalize(t)
        seen.add(key)
        texts.append(t)
    return texts, origin


# one repeat (runs in its own process) --------------------------------------------------------
def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _status_mib(field: str) -> float | None:
    """A ``Vm...`` figure of /proc/self/status in MiB (Linux), else None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _rss_mib() -> float | None:
    """Current RSS, to show what a step's peak started from."""
    return _status_mib("VmRSS")


def _maxrss_mib() -> float:
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / (1 << 20) if sys.platform == "darwin" else kib / 1024


def _peak_mib() -> float:
    """Peak RSS since the last ``_reset_peak``: the kernel's VmHWM, which clear_refs resets.

    ``getrusage``'s ``ru_maxrss`` is the larger of that and the peak recorded when any thread of
    the process exited, which no reset clears, so it is the fallback where /proc is missing.
    """
    hwm = _status_mib("VmHWM")
    return hwm if hwm is not None else _maxrss_mib()


def _sizes(db: str) -> dict[str, int]:
    if "://" in db:  # PostgreSQL: the database's size on disk as the server reports it
        from sqlalchemy import create_engine, text

        engine = create_engine(db)
        with engine.connect() as conn:
            size = conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one()
        engine.dispose()
        return {"db": int(size), "wal": 0}
    out = {}
    for suffix in ("", "-wal"):
        p = Path(f"{db}{suffix}")
        out["db" if not suffix else "wal"] = p.stat().st_size if p.exists() else 0
    return out


def run_ingest(pool: Path, db: str, rows: int) -> dict:
    """Step 1, in its own process, as ``kd ingest pool.txt --split unlabeled`` runs it."""
    from kdstore.ingest import IngestOptions, ingest
    from kdstore.store import Store

    store = Store.open(db)  # creates the schema (not timed)
    out: dict = {"peak_reset": _reset_peak()}
    start = _rss_mib()
    t0 = time.perf_counter()
    data = pool.read_bytes()
    report = ingest(store, data, pool.name, IngestOptions(split="unlabeled", source=pool.name))
    t1 = time.perf_counter()
    if report.added != rows:
        raise SystemExit(f"ingest added {report.added} of {rows} rows (duplicates: {report.duplicates})")
    out["ingest"] = {"seconds": t1 - t0, "rows": report.added, "peak_rss_mib": _peak_mib(), "start_rss_mib": start,
                   "maxrss_mib": _maxrss_mib()}
    store.close()  # the last connection checkpoints the WAL into the file and removes it
    out["size_after_ingest"] = _sizes(db)
    return out


def run_logits(db: str, rows: int) -> dict:
    """Steps 2 and 3, in a second process, as a later command (``kd teach``) would run them."""
    import numpy as np
    from sqlalchemy import select

    from kdstore.runs import stage_scope
    from kdstore.schema import Sample
    from kdstore.store import Store

    store = Store.open(db, create=False)
    with store.engine.connect() as conn:
        ids = conn.execute(select(Sample.id).order_by(Sample.id)).scalars().all()
    if len(ids) != rows:
        raise SystemExit(f"the store holds {len(ids)} samples, not {rows}")
    matrix = np.random.default_rng(SEED).standard_normal((len(ids), 2)).astype(np.float32)
    out: dict = {"peak_reset": _reset_peak()}
    start = _rss_mib()
    with stage_scope(store, run="bench", kind="teach", config={}) as stage:
        t0 = time.perf_counter()
        written = store.write_logits(stage.id, ids, matrix)
        t1 = time.perf_counter()
    out["write_logits"] = {"seconds": t1 - t0, "rows": written, "peak_rss_mib": _peak_mib(), "start_rss_mib": start,
                   "maxrss_mib": _maxrss_mib()}

    _reset_peak()
    start = _rss_mib()
    t0 = time.perf_counter()
    got_ids, got = store.read_logits(stage.id)
    t1 = time.perf_counter()
    out["read_logits"] = {"seconds": t1 - t0, "rows": len(got_ids), "peak_rss_mib": _peak_mib(), "start_rss_mib": start,
                   "maxrss_mib": _maxrss_mib()}
    if not (np.array_equal(got_ids, np.asarray(ids)) and np.array_equal(got, matrix)):
        raise SystemExit("read_logits did not return what write_logits wrote")

    store.close()
    out["size_after_close"] = _sizes(db)
    return out


def _admin(url: str):
    from sqlalchemy import create_engine

    return create_engine(url, isolation_level="AUTOCOMMIT")


def _new_pg_database(url: str, i: int) -> str:
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    name = f"kd_bench_{os.getpid()}_{i}"
    engine = _admin(url)
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def _drop_pg_database(url: str, db: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    engine = _admin(url)
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(db).database}" WITH (FORCE)'))
    engine.dispose()


def _pg_version(url: str) -> str:
    from sqlalchemy import text

    engine = _admin(url)
    with engine.connect() as conn:
        version = conn.execute(text("SHOW server_version")).scalar_one()
    engine.dispose()
    return f"PostgreSQL {version}"


def _child(step: str, args: list[str], rows: int) -> dict:
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--rows", str(rows), "--child", step, *args],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"{step} step failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# reporting -----------------------------------------------------------------------------------
def _median_or_none(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(runs: list[dict]) -> dict:
    out = {}
    for step in STEPS:
        secs = [r[step]["seconds"] for r in runs]
        rows = runs[0][step]["rows"]
        peaks = [r[step]["peak_rss_mib"] for r in runs]
        med = statistics.median(secs)
        out[step] = {
            "rows": rows,
            "seconds_median": med,
            "seconds_min": min(secs),
            "seconds_max": max(secs),
            "rows_per_s_median": rows / med,
            "rows_per_s_min": rows / max(secs),
            "rows_per_s_max": rows / min(secs),
            "peak_rss_mib_max": max(peaks),
            "peak_rss_mib_median": statistics.median(peaks),
            "start_rss_mib_median": _median_or_none([r[step].get("start_rss_mib") for r in runs]),
        }
    for key in ("size_after_ingest", "size_after_close"):
        out[key] = {k: statistics.median(r[key][k] for r in runs) for k in runs[0][key]}
    for step, (field, limit) in TARGETS.items():
        value = out[step]["seconds_median" if field == "seconds" else "rows_per_s_median"]
        out[step]["target"] = f"≤ {limit:g} s" if field == "seconds" else f"≥ {limit:,.0f} rows/s"
        met = meets(value, limit, at_most=field == "seconds")
        out[step]["target_met"] = met if out[step]["rows"] == TARGET_ROWS and len(runs) >= MIN_REPEATS else None
    return out


def _mib(n: float) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def _start(x: dict) -> str:
    return "" if x.get("start_rss_mib_median") is None else f" ({x['start_rss_mib_median']:.0f})"


def markdown(result: dict) -> str:
    s, m, a = result["summary"], result["machine"], result["args"]
    lines = [
        f"{a['rows']:,} rows, {a['repeat']} repeat{'s' if a['repeat'] != 1 else ''} (each a fresh {result['backend']} store; ingest in one fresh process, "
        "logit writes and reads in a second); "
        "median, with min–max over the repeats.",
        "",
        "| step | rows | seconds (median) | seconds (min–max) | rows/s (median) | peak RSS (max; at start) | target |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for step in STEPS:
        x = s[step]
        target = ""
        if "target" in x and a["rows"] != TARGET_ROWS:
            target = f"{x['target']} at {TARGET_ROWS:,} rows: not judged here"
        elif "target" in x and x.get("target_met") is None:
            target = f"{x['target']}: not judged ({a['repeat']} repeats, the protocol's medians are over {MIN_REPEATS})"
        elif "target" in x:
            target = f"{x['target']}: **{'met' if x['target_met'] else 'not met'}**"
        field, limit = TARGETS.get(step, (None, None))  # a figure beside its verdict is never rounded across its target
        seconds = shown(x["seconds_median"], ".2f", limit, at_most=True) if field == "seconds" else f"{x['seconds_median']:.2f}"
        rate = shown(x["rows_per_s_median"], ",.0f", limit) if field == "rows_per_s" else f"{x['rows_per_s_median']:,.0f}"
        lines.append(
            f"| {STEP_TITLES[step]} | {x['rows']:,} | {seconds} | "
            f"{x['seconds_min']:.2f}–{x['seconds_max']:.2f} | {rate} | "
            f"{x['peak_rss_mib_max']:.0f} MiB{_start(x)} | {target} |"
        )
    ing, fin = s["size_after_ingest"], s["size_after_close"]
    size_line = (
        f"- SQLite file: {_mib(ing['db'])} after ingest, {_mib(fin['db'])} with the logits "
        "(each measured after closing the store, which checkpoints the WAL into the file)."
        if result["backend"] == "SQLite" else
        f"- PostgreSQL database (`pg_database_size`): {_mib(ing['db'])} after ingest, {_mib(fin['db'])} with the logits; "
        f"server {result.get('server', '?')} on loopback, same machine (its CPU time is not in the peak RSS figures)."
    )
    lines += [
        "",
        size_line,
        f"- pool: {result['pool']['origin']}; mean {result['pool']['mean_chars']:.1f} characters, "
        f"{_mib(result['pool']['bytes'])} as a text file; built in {result['pool']['build_seconds']:.1f} s (not timed).",
        f"- peak RSS: {'during the step (VmHWM, reset through /proc/self/clear_refs)' if result['peak_reset'] else 'process peak so far (getrusage; no reset available)'}, "
        "of the whole process (interpreter, NumPy, SQLAlchemy included), with its RSS when the step "
        "started in brackets; the logit steps start holding the sample ids and the matrix, and the "
        "read starts with what the write left allocated.",
        f"- machine: {m['cpu']}, {m['cores']} cores ({m['cores_usable']} usable), {m['memory']} RAM, {m['os']}; "
        f"Python {m['python']}, SQLAlchemy {m['sqlalchemy']}, SQLite {m['sqlite']}, NumPy {m['numpy']}.",
        f"- commit: `{m['commit']}`" + (" (with uncommitted changes in kdstore/, migrations/, commands/ or bench/)" if m["kdstore_dirty"] else ""),
        f"- command: `{result['command']}`",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Benchmark ingest and logit writes/reads of the kd store (B5).")
    ap.add_argument("--rows", type=int, default=500_000, help="pool size (default: 500000)")
    ap.add_argument("--repeat", type=int, default=MIN_REPEATS, help=f"fresh-database repeats (default: {MIN_REPEATS}, the protocol's least; fewer: not judged)")
    ap.add_argument("--json", type=Path, metavar="PATH", help="also write the full results here")
    ap.add_argument("--dir", type=Path, help="parent of the temporary folder (default: the system temp)")
    ap.add_argument("--postgres", metavar="URL", help="benchmark PostgreSQL: a server URL whose user may CREATE DATABASE")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        step, *paths = args.child
        if step == "ingest":
            print(json.dumps(run_ingest(Path(paths[0]), paths[1], args.rows)))
        else:
            print(json.dumps(run_logits(paths[0], args.rows)))
        return 0
    if args.rows < 1 or args.repeat < 1:
        ap.error("--rows and --repeat must be at least 1")

    command = "python bench/ingest.py" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:])
    )
    machine = machine_info()
    with tempfile.TemporaryDirectory(prefix="kd-bench-", dir=args.dir) as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        texts, origin = build_pool(args.rows)
        pool_path = tmp / "pool.txt"
        pool_path.write_bytes(("\n".join(texts) + "\n").encode("utf-8"))
        pool = {
            "origin": origin,
            "rows": len(texts),
            "mean_chars": sum(map(len, texts)) / len(texts),
            "bytes": pool_path.stat().st_size,
            "build_seconds": time.perf_counter() - t0,
        }
        del texts
        runs = []
        for i in range(args.repeat):
            work = tmp / f"run{i}"
            work.mkdir()
            db = _new_pg_database(args.postgres, i) if args.postgres else str(work / "kd.db")
            run = _child("ingest", [str(pool_path), db], args.rows)
            logits = _child("logits", [db], args.rows)
            if args.postgres:
                _drop_pg_database(args.postgres, db)
            run["peak_reset"] = run["peak_reset"] and logits.pop("peak_reset")
            run.update(logits)
            runs.append(run)
            print(
                f"repeat {i + 1}/{args.repeat}: "
                + ", ".join(f"{s} {run[s]['seconds']:.2f} s" for s in STEPS),
                file=sys.stderr,
            )
            shutil.rmtree(work)  # the store and its kd-artifacts folder (unlink() stopped at the folder)
    result = {
        "benchmark": "B5 store: ingest and logit writes",
        "args": {"rows": args.rows, "repeat": args.repeat, "seed": SEED},
        "command": command,
        "machine": machine,
        "pool": pool,
        "backend": "PostgreSQL" if args.postgres else "SQLite",
        **({"server": _pg_version(args.postgres)} if args.postgres else {}),
        "peak_reset": all(r["peak_reset"] for r in runs),
        "runs": runs,
        "summary": summarize(runs),
    }
    sys.stderr.flush()
    print(markdown(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
