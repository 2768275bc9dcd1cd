"""B3: wrong-label detection and cleaning against injected flips, through kd's own commands.

    python bench/labels.py --quick                 # CPU-sized teacher
    python bench/labels.py --device cuda           # protocol-sized teacher

For each noise level of BENCHMARK.md B3 (uniform 10 % with default_rng(1), 20 % with default_rng(2);
a flipped binary label becomes the other class, N = 14,363 in file order):
  1. the noisy train file, dev and test are ingested into a fresh store (`kd ingest`);
  2. `kd teach --folds 5` from a `kd pretrain` model (pre-trained once, on the train texts + People's
     Daily, in a separate store) gives out-of-fold probabilities;
  3. `kd labels detect` with each method alone (the ensemble's votes: the TF-IDF member) and the default
     combination (and with the TF-IDF member);
     flagged samples are compared with the injected flips: precision, recall, F1;
  4. the default student (TextCNN) is distilled on the noisy labels, then `kd labels clean` (relabel)
     runs and the same student is distilled again on the cleaned labels: test accuracy of both.
The peer baseline (cleanlab find_label_issues, default filter_by, over 5-fold plain TF-IDF(char
1-3gram)+LR, the protocol's model) is measured in the same run.
``--student-votes-folds K`` adds two rows: out-of-fold TextCNN students (`kd distill --folds K`) voting
in the ensemble, alone (with the TF-IDF member) and with the default combination.
``--seeds 1,2,3`` repeats steps 2–4 (pre-training included) with each training seed, the injected flips
staying the protocol's; figures are the mean over the seeds, with the min–max.
``--train-rows N`` keeps the first N rows of train.tsv (the flips are the first N draws of the same
generator, so they match the full run's on those rows): a smaller check of the same table, not the
protocol (targets shown, not judged). ``--teacher-epochs`` (the folds' epochs) and the other teacher
recipe options are the user's call and keep a run judged; fewer than 3 seeds does not.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import Partial, add_recipe_options, command_words, commit_words, meets, merged_source, shown, add_work_option, apply_recipe, machine_info, off_protocol, progress_line, recipe_words, report_stop, shared_dir, store_artifacts_beside_stores, work_dir  # noqa: E402
from bench.teacher import FULL, QUICK, check_seeds, kd, write_lines  # noqa: E402

LEVELS = ((0.10, 1), (0.20, 2))  # (noise rate, seed of its flips)
PEER = "peer: cleanlab over TF-IDF+LR"
TARGET_F1 = {0.10: 0.65, 0.20: 0.74}
TARGET_GAIN = 0.01  # at 20 % noise: cleaning lifts the default student by >= 1 pt
DETECTORS = {
    "cleanlab alone": ["--method", "cleanlab", "--combine", "union"],
    "disagree alone": ["--method", "disagree", "--combine", "union"],
    "combined (default)": [],
    "ensemble alone (TF-IDF member)": ["--method", "ensemble", "--tfidf-member", "--combine", "union"],
    "combined + TF-IDF member": ["--tfidf-member"],
}
STUDENT = {True: ["--epochs", "4", "--embed-dim", "64", "--num-filters", "64"], False: ["--epochs", "10"]}
VOTES = "oof:votes"  # with --student-votes-folds: `kd distill --run oof --folds K --name votes`
STUDENT_DETECTORS = {
    "ensemble alone (TF-IDF + out-of-fold TextCNN)": ["--method", "ensemble", "--tfidf-member", "--student-votes", VOTES, "--combine", "union"],
    "combined + TF-IDF + out-of-fold TextCNN": ["--tfidf-member", "--student-votes", VOTES],
}


def inject(lines: list[str], rate: float, seed: int) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    flip = rng.random(len(lines)) < rate
    other = {"pos": "neg", "neg": "pos"}
    out = []
    for line, f in zip(lines, flip):
        label, text = line.split("\t", 1)
        out.append(f"{other[label] if f else label}\t{text}")
    return out, flip


def peer_baseline(texts: list[str], noisy: np.ndarray, flip: np.ndarray) -> dict:
    """The protocol's peer exactly: cleanlab's ``find_label_issues`` (default ``filter_by``) over
    5-fold cross-validated plain TF-IDF(char 1-3gram) + LogisticRegression probabilities (the model
    ``bench/noise_research.py`` reproduces the published 0.553 with; kd's own ``--tfidf-member``
    uses sublinear tf and ``min_df=2``, a stronger member, and is not the peer)."""
    from cleanlab.filter import find_label_issues

    from bench.noise_research import models, oof

    probs = oof(models()["lr"], texts, noisy, jobs=min(5, os.cpu_count() or 1))  # the 5 folds side by side where there are cores
    return prf(find_label_issues(noisy, probs), flip)


def prf(flagged: np.ndarray, flip: np.ndarray) -> dict:
    tp = int((flagged & flip).sum())
    p = tp / max(int(flagged.sum()), 1)
    r = tp / max(int(flip.sum()), 1)
    return {"flagged": int(flagged.sum()), "precision": p, "recall": r, "f1": 2 * p * r / max(p + r, 1e-12)}


def flagged_lines(db: Path, run: str) -> set[int]:
    from sqlalchemy import select

    from kdstore import labels as lab
    from kdstore.schema import Sample
    from kdstore.store import Store

    store = Store.open(str(db))
    with store.engine.connect() as conn:
        line_of = dict(conn.execute(select(Sample.id, Sample.line).where(Sample.split == "train")).all())
    return {line_of[i["sample_id"]] for i in lab.issues(store, run)}


def run_level(work: Path, data: Path, model_dir: str, rate: float, seed: int, cfg: dict, args, train_seed: int = 42,
              save=None) -> dict:
    """One noise level (flips drawn with ``seed``), trained with ``train_seed``; ``save(result)``
    after every figure, with what the level has so far (a run cut off mid-level keeps them)."""
    lines = (data / "train.tsv").read_text(encoding="utf-8").splitlines()[: getattr(args, "train_rows", None)]
    noisy_lines, flip = inject(lines, rate, seed)
    db = work / f"noise{int(rate * 100)}.db"
    seed_opt = ("--seed", str(train_seed))
    kd("ingest", str(write_lines(work / f"train-noise{int(rate * 100)}.tsv", noisy_lines)), "--db", str(db))
    kd("ingest", str(data / "dev.tsv"), "--split", "dev", "--db", str(db))
    kd("ingest", str(data / "test.tsv"), "--split", "test", "--db", str(db))
    kd("teach", "--run", "oof", "--model", model_dir, "--folds", "5", "--epochs", str(cfg["epochs"]), "--lr", str(cfg["lr"]),
       "--layer-decay", str(cfg.get("layer_decay", 1.0)),
       "--batch-size", str(cfg["batch_size"]), "--device", args.device, *seed_opt, "--db", str(db))
    result = {"rate": rate, "flips": int(flip.sum()), "detectors": {}}
    texts = [l.split("\t", 1)[1] for l in noisy_lines]
    noisy = np.array([0 if l.startswith("pos\t") else 1 for l in noisy_lines])
    found: dict[str, dict] = {}

    folds = getattr(args, "student_votes_folds", 0)
    detectors = {**DETECTORS, **(STUDENT_DETECTORS if folds else {})}

    def detect(name: str) -> None:
        flags = detectors[name]
        run = "det-" + name.split()[0] + ("-tfidf" if "TF-IDF" in name else "") + ("-students" if "TextCNN" in name else "")
        out = json.loads(kd("labels", "detect", "--run", run, "--teacher-run", "oof", *flags, "--db", str(db), "--json", log_warnings=False))
        for warning in out["warnings"]:  # (logged here once, with the detector it came from)
            progress_line(f"noise {rate:.0%} seed {train_seed} {name}: warning: {warning}")
        mask = np.zeros(len(lines), dtype=bool)
        mask[[line - 1 for line in flagged_lines(db, run)]] = True
        found[name] = prf(mask, flip)
        progress_line(f"noise {rate:.0%} seed {train_seed} {name}: F1 {found[name]['f1']:.3f}")
        saved()

    def saved() -> None:
        if save is not None:
            save({**result, "detectors": dict(found)})

    # the judged figures first (the default detector, then the students), the rest after
    detect("combined (default)")
    student = STUDENT[args.quick]
    noisy_out = json.loads(kd("distill", "--run", "oof", "--name", "noisy", *student, "--device", args.device, *seed_opt, "--db", str(db), "--json"))
    cleaned = json.loads(kd("labels", "clean", "--run", "det-combined", "--db", str(db), "--json"))
    clean_out = json.loads(kd("distill", "--run", "oof", "--name", "cleaned", *student, "--device", args.device, *seed_opt, "--db", str(db), "--json"))
    result["student_noisy"] = noisy_out["metrics"]["test"]["accuracy"]
    result["student_cleaned"] = clean_out["metrics"]["test"]["accuracy"]
    progress_line(f"noise {rate:.0%} seed {train_seed} student: noisy {result['student_noisy']:.4f}, cleaned {result['student_cleaned']:.4f}")
    saved()
    if cleaned.get("relabel", 0) + cleaned.get("drop", 0):  # the other detectors see the noisy labels again
        kd("labels", "undo", "--run", "det-combined", "--db", str(db))
    if folds:  # K students, each blind to one fold's labels: votes for the ensemble
        kd("distill", "--run", "oof", "--name", "votes", "--folds", str(folds), *student, "--device", args.device,
           *seed_opt, "--db", str(db))
    for name in detectors:
        if name not in found:
            detect(name)
    found[PEER] = peer_baseline(texts, noisy, flip)
    progress_line(f"noise {rate:.0%} seed {train_seed} {PEER}: F1 {found[PEER]['f1']:.3f}")
    saved()
    result["detectors"] = {name: found[name] for name in (PEER, *detectors)}  # reading order
    return result


def merge_seeds(a: dict, b: dict) -> dict:
    """Two ``--json`` results of the same command with different ``--seeds`` as one: the per-seed
    figures together, aggregated again (the flips are the protocol's whatever the seed)."""
    from bench.common import check_mergeable, seed_parts

    check_mergeable(a, b, ("config", "device", "quick", "train_rows", "levels", "student_votes_folds"), "B3")  # same rows to put together
    per_seed = {**a["per_seed"], **b["per_seed"]}
    seeds = a["seeds"] + b["seeds"]
    return {**a, "seeds": seeds, "per_seed": per_seed, "results": aggregate([per_seed[str(s)] for s in seeds]),
            "parts": seed_parts(a) + seed_parts(b)}


def aggregate(per_seed: list[list[dict]]) -> list[dict]:
    """One result per noise level from each seed's results (same levels, same order): every figure
    is the mean over the seeds, and ``spread`` holds the min and max of the judged ones (each
    detector's F1, the students' accuracies and the cleaning gain). One seed comes back unchanged
    apart from ``seeds`` and ``spread``."""
    if not per_seed or any(len(r) != len(per_seed[0]) for r in per_seed):
        raise ValueError("every seed needs a result for each noise level")
    out = []
    for level in zip(*per_seed):
        if len({r["rate"] for r in level}) != 1:
            raise ValueError("the seeds' results are not in the same level order")
        first = level[0]
        detectors, spread = {}, {}
        for name in first["detectors"]:
            runs = [r["detectors"][name] for r in level]
            detectors[name] = {k: float(np.mean([m[k] for m in runs])) for k in runs[0]}
            spread[name] = [min(m["f1"] for m in runs), max(m["f1"] for m in runs)]
        noisy = [r["student_noisy"] for r in level]
        cleaned = [r["student_cleaned"] for r in level]
        gains = [c - n for n, c in zip(noisy, cleaned)]
        spread.update(student_noisy=[min(noisy), max(noisy)], student_cleaned=[min(cleaned), max(cleaned)],
                      gain=[min(gains), max(gains)])
        out.append({"rate": first["rate"], "flips": first["flips"], "detectors": detectors,
                    "student_noisy": float(np.mean(noisy)), "student_cleaned": float(np.mean(cleaned)),
                    "seeds": len(level), "spread": spread})
    return out


def _span(r: dict, key: str, fmt: str) -> str:
    """`` (min–max)`` over the seeds when there is more than one."""
    lo_hi = r.get("spread", {}).get(key)
    if not lo_hi or r.get("seeds", 1) < 2:
        return ""
    return f" ({format(lo_hi[0], fmt)}–{format(lo_hi[1], fmt)})"


def markdown(results: list[dict], cfg: dict, info: dict, command: str, not_judged: str | None = None,
             seeds: list[int] | None = None) -> str:
    """The tables; with ``not_judged`` (a reason) the targets are shown but not judged; ``seeds``: the
    training seeds they are of (named where there is one: "one seed" said not which)."""
    lines = ["| noise | detector | flagged | precision | recall | F1 | target |", "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for r in results:
        for name, m in r["detectors"].items():
            target = ""
            if name == "combined (default)":
                t = TARGET_F1[r["rate"]]
                target = f"≥ {t}: not judged ({not_judged})" if not_judged else f"≥ {t}: **{'met' if meets(m['f1'], t) else 'not met'}**"
            flagged = f"{m['flagged']:.0f}" if isinstance(m["flagged"], float) else str(m["flagged"])
            lines.append(f"| {r['rate']:.0%} ({r['flips']} flips) | {name} | {flagged} | {m['precision']:.3f} | {m['recall']:.3f} | {shown(m['f1'], '.3f', TARGET_F1[r['rate']]) if name == 'combined (default)' else format(m['f1'], '.3f')}{_span(r, name, '.3f')} | {target} |")
    lines += ["", "| noise | TextCNN on noisy labels | after `kd labels clean` | gain | target (20 %) |", "| --- | ---: | ---: | ---: | --- |"]
    for r in results:
        gain = r["student_cleaned"] - r["student_noisy"]
        target = ""
        if r["rate"] == 0.20:
            target = f"≥ +1 pt: not judged ({not_judged})" if not_judged else f"≥ +1 pt: **{'met' if meets(gain, TARGET_GAIN) else 'not met'}**"
        gain_span = ""
        if r.get("seeds", 1) > 1:
            lo, hi = r["spread"]["gain"]
            gain_span = f" ({lo * 100:+.2f}–{hi * 100:+.2f})"
        lines.append(f"| {r['rate']:.0%} | {r['student_noisy']:.2%}{_span(r, 'student_noisy', '.2%')} | "
                     f"{r['student_cleaned']:.2%}{_span(r, 'student_cleaned', '.2%')} | {shown(gain * 100, '+.2f', TARGET_GAIN * 100) if r['rate'] == 0.20 else format(gain * 100, '+.2f')} pt{gain_span} | {target} |")
    gpu = f", GPU {info['gpu']}" if "gpu" in info else ""
    lines += [
        "",
        f"- teacher: {cfg['layers']} x {cfg['hidden']}, {recipe_words(cfg)}, 5 folds x {cfg['epochs']} epochs; "
        + (f"mean over {results[0]['seeds']} training seeds (min–max in brackets)" if results and results[0].get("seeds", 1) > 1 else "one seed" + (f" ({seeds[0]})" if seeds and len(seeds) == 1 else "")),
        f"- machine: {info['cpu']}, {info['cores_usable']} cores, {info['memory']}{gpu}; commit {commit_words(info)}",
        f"- command: {command_words(command)}",
    ]
    return "\n".join(lines)


def markdown_from_json(data: dict, not_judged: str | None = None) -> str:
    """The tables from what ``--json`` wrote (the suite renders them this way)."""
    return markdown(data["results"], data["config"], *merged_source(data), not_judged, data.get("seeds"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--levels", default="0.1,0.2", help="noise levels, measured in this order (e.g. 0.2,0.1: the 20 %% targets first)")
    add_recipe_options(parser)
    add_work_option(parser)
    parser.add_argument("--train-rows", type=int, help="only the first N rows of train.tsv (default: all; a smaller check)")
    parser.add_argument("--seeds", default="1", help="comma-separated training seeds (protocol: 3); the flips stay fixed")
    parser.add_argument("--student-votes-folds", type=int, default=0, metavar="K",
                        help="also distil K out-of-fold TextCNN students (kd distill --folds K) and detect with their votes (2 more rows)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    check_seeds(parser, args.seeds)  # (a seed twice ran twice; -1 failed at the first kd pretrain)
    try:
        seeds = [int(x) for x in args.seeds.split(",")]
        order = [float(x) for x in args.levels.split(",")]
    except ValueError:
        parser.error(f"--seeds wants comma-separated integers and --levels numbers, not {args.seeds!r} / {args.levels!r}")
    if args.train_rows is not None and args.train_rows < 1:  # (a negative one sliced rows off the end, in silence)
        parser.error(f"--train-rows {args.train_rows}: must be at least 1")
    levels = [(rate, seed) for wanted in order for rate, seed in LEVELS if rate == wanted]
    if len(levels) != len(order):
        parser.error(f"--levels: choose among {', '.join(str(r) for r, _ in LEVELS)}")
    data = shared_dir() / "data" / "reviews"
    if not (data / "train.tsv").exists():
        print("benchmark data not found (set KD_SHARED)", file=sys.stderr)
        return 2
    os.environ.setdefault("KD_NO_PROGRESS", "1")
    cfg = apply_recipe(QUICK if args.quick else FULL, args)
    info = machine_info()
    command = "python bench/labels.py " + " ".join(argv if argv is not None else sys.argv[1:])
    fields = {"config": cfg, "seeds": seeds, "machine": info, "command": command, "device": args.device,
              "quick": args.quick, "train_rows": args.train_rows, "levels": [rate for rate, _ in levels],
              "student_votes_folds": getattr(args, "student_votes_folds", 0)}
    partial = Partial(args.json, fields)
    per_seed: list[list[dict]] = []
    try:
        with work_dir(getattr(args, "work", None), "kd-bench-labels-") as tmp:
            texts = [l.split("\t", 1)[1] for l in (data / "train.tsv").read_text(encoding="utf-8").splitlines()[: args.train_rows]]
            for train_seed in seeds:
                work = Path(tmp) / f"seed{train_seed}"
                work.mkdir()
                store_artifacts_beside_stores()
                pre_db = work / "pretrain.db"
                kd("ingest", str(write_lines(work / "texts.txt", texts)), "--split", "unlabeled", "--db", str(pre_db))
                out = json.loads(kd("pretrain", "--run", "p", "--layers", str(cfg["layers"]), "--hidden", str(cfg["hidden"]),
                                    "--minutes", str(cfg["minutes"]), "--batch-size", str(cfg.get("pretrain_batch_size", 64)),
                                    "--lr", str(cfg.get("pretrain_lr", 5e-4)), "--objective", cfg.get("objective", "mlm"), "--corpus", str(data / "corpus-peoples-daily-1998.txt"),
                                    "--seed", str(train_seed), "--device", args.device, "--db", str(pre_db), "--json"))
                progress_line(f"seed {train_seed} pre-training: {'generator ' if cfg.get('objective') == 'electra' else ''}MLM loss {out['metrics']['train']['mlm_loss']:.3f}")
                # logged, so in the partial JSON too: a time limit during the long kd teach --folds keeps it
                partial.save(pretraining={**partial.data.get("pretraining", {}), str(train_seed): {"mlm_loss": out["metrics"]["train"]["mlm_loss"]}})
                per_seed.append([])
                for rate, seed in levels:
                    level_so_far = lambda r: partial.save(in_progress=r)  # noqa: E731 (each figure as it comes)
                    per_seed[-1].append(run_level(work, data, out["artifact_path"], rate, seed, cfg, args, train_seed, save=level_so_far))
                    partial.save(per_seed=dict(zip(map(str, seeds), per_seed)), in_progress=None)
    except (KeyboardInterrupt, RuntimeError) as exc:  # a time limit's SIGINT reaches here as either
        line = report_stop(exc)
        partial.save(stopped=line)  # (a kd pretrain that failed saved nothing before: no JSON at all)
        done = [levels_done for levels_done in per_seed if levels_done]
        n = min((len(x) for x in done), default=0)
        if n:
            print(markdown(aggregate([x[:n] for x in done]), cfg, info, command, "stopped before the end", seeds[:len(done)]))
        # the markdown says why (a level cut off mid-way has its figures so far in the JSON's in_progress)
        print(f"- {line}" if n else f"B3 stopped before a whole noise level: {line}")
        return 1
    results = aggregate(per_seed)
    print(markdown(results, cfg, info, command, off_protocol(args, ("train_rows",)), seeds))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**fields, "results": results, "per_seed": dict(zip(map(str, seeds), per_seed))}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
