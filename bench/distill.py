"""B1/B2 distillation table: teacher, students alone, distilled, with the unlabeled pool, with augmentation.

    python bench/distill.py --quick --settings B2 --students textcnn     # CPU-sized, minutes
    python bench/distill.py --device cuda --seeds 1,2,3                    # the protocol

Per seed, the teacher is built exactly as in bench/teacher.py (kd pretrain on train texts + People's
Daily, then kd teach in each setting's store). Then, through `kd distill` on the same store:
  alone        --alpha 0 --no-unlabeled           (hard labels only: the student trained alone)
  distilled    --no-unlabeled                     (labels + teacher logits on the labeled rows)
  +aug         --no-unlabeled --augment mask,pos,ngram
  +pool        --unlabeled                        (B2 only: the 13,363 unlabeled texts)
  +pool+aug    --unlabeled --augment mask,pos,ngram   (B2 only)
A TF-IDF (char 1-3-gram) + logistic regression peer is trained on the same labeled rows.
"Gap closed" = (variant - alone) / (teacher - alone). Test accuracy is read back from the store.
Targets (BENCHMARK.md): B1 teacher >= 88 %; B1 TextCNN distilled closes >= 75 % of the gap; B2 TextCNN
distilled with the pool >= the teacher (and never below the student alone). ``--train-rows``, ``--student-epochs`` and
``--augment-n`` shrink the run for a smaller check of the same table (not the protocol: its targets are
shown, not judged); ``--layers``, ``--hidden``, ``--minutes``, ``--teacher-epochs``, ``--teacher-lr`` and the
other recipe options change the teacher, which the B1 target leaves to the user, so the run stays judged.
Fewer than 3 ``--seeds`` is not judged either: the targets are means over 3.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import Partial, add_recipe_options, command_words, commit_words, meets, merged_source, shown, add_work_option, apply_recipe, machine_info, progress_line, recipe_words, report_stop, shared_dir, store_artifacts_beside_stores, work_dir  # noqa: E402
from bench.teacher import FULL, QUICK, TARGET_ACCURACY, check_seeds, check_train_rows, kd, prepare, pretrain_seed, run_seed  # noqa: E402

AUG = ["--augment", "mask,pos,ngram", "--augment-n", "4"]
VARIANTS = {
    "alone": ["--alpha", "0", "--no-unlabeled"],
    "distilled": ["--no-unlabeled"],
    "+aug": ["--no-unlabeled", *AUG],
    "+pool": ["--unlabeled"],
    "+pool+aug": ["--unlabeled", *AUG],
}
B1_VARIANTS = ("alone", "distilled", "+aug")
STUDENT_QUICK = ["--epochs", "4", "--embed-dim", "64", "--num-filters", "64", "--hidden", "64", "--layers", "2"]
STUDENT_FULL = ["--epochs", "10"]
DEFAULT_STUDENT = "textcnn"
TARGET_GAP_B1 = 0.75  # B1: TextCNN distilled (labels only) closes >= 75 % of the teacher-alone gap
# B2: TextCNN distilled with the unlabeled pool >= the teacher


def for_student(student_args: list[str], student: str) -> list[str]:
    """``student_args`` without the size options ``student`` does not use (kd distill warns of each:
    one set of sizes for every student filled the log with the same warnings, seed after seed)."""
    from commands.train import FOR_KINDS

    shaped = {name for names in FOR_KINDS.values() for name in names}
    out, i = [], 0
    while i < len(student_args):
        option = student_args[i]
        valued = i + 1 < len(student_args) and not student_args[i + 1].startswith("--")
        name = option[2:].replace("-", "_")
        if option.startswith("--") and name in shaped and name not in FOR_KINDS[student]:
            i += 2 if valued else 1
            continue
        out.append(option)
        i += 1
    return out


def with_epochs(student_args: list[str], epochs: int | None) -> list[str]:
    """``student_args`` with ``--epochs`` set to ``epochs`` (unchanged when None)."""
    if epochs is None:
        return list(student_args)
    out = list(student_args)
    if "--epochs" in out:
        out[out.index("--epochs") + 1] = str(epochs)
    else:
        out += ["--epochs", str(epochs)]
    return out


def tfidf_peer(store_db: Path) -> tuple[float, float]:
    """The peer's test (accuracy, macro-F1)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics import f1_score
    from sklearn.linear_model import LogisticRegression

    from kdstore.store import Store

    store = Store.open(str(store_db))
    train, test = store.samples(splits=["train"], labeled=True), store.samples(splits=["test"], labeled=True)
    vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=2)
    clf = LogisticRegression(max_iter=2000, C=4.0).fit(vec.fit_transform(train.texts), train.labels)
    predicted = clf.predict(vec.transform(test.texts))
    return float((predicted == test.labels).mean()), float(f1_score(test.labels, predicted, average="macro"))


ORDER = ("alone", "distilled", "+pool", "+aug", "+pool+aug")  # the judged rows first: a time limit cuts the rest


def run(args, partial=None) -> dict:
    """The table, measured in the order that gets the judged figures out first under a time limit:
    per seed, pre-training, each setting's teacher, then variant by variant (alone, distilled,
    +pool, then the augmented rows) across the settings; the TF-IDF peers last. ``partial``
    (``bench.common.Partial``) gets the result after every figure."""
    cfg = apply_recipe(QUICK if args.quick else FULL, args)
    student_args = with_epochs(STUDENT_QUICK if args.quick else STUDENT_FULL, getattr(args, "student_epochs", None))
    data = shared_dir() / "data" / "reviews"
    seeds = [int(s) for s in args.seeds.split(",")]
    settings = args.settings.split(",")
    students = args.students.split(",")
    rows: dict = {setting: {} for setting in settings}
    f1: dict = {setting: {} for setting in settings}  # test macro-F1, row by row as rows (the protocol asks for both)
    teachers: list[dict] = []
    result = {
        "config": cfg, "student_args": student_args, "seeds": seeds, "rows": rows, "f1": f1, "teacher": teachers,
        "device": args.device, "settings": settings, "students": students,
        "quick": bool(args.quick), "train_rows": getattr(args, "train_rows", None),
        "augment_n": getattr(args, "augment_n", None) or int(AUG[AUG.index("--augment-n") + 1]),
    }
    save = (lambda: partial.save(**result)) if partial is not None else (lambda: None)
    with work_dir(getattr(args, "work", None), "kd-bench-distill-") as tmp:
        store_artifacts_beside_stores()
        stores = prepare(Path(tmp), data, getattr(args, "train_rows", None))
        corpus = data / "corpus-peoples-daily-1998.txt"
        for seed in seeds:
            pre = pretrain_seed(stores, corpus, cfg, seed, args.device)
            teacher = {k: v for k, v in pre.items() if k != "model_dir"}
            teachers.append(teacher)
            save()  # the pre-training figures, logged already: a time limit during the teachers keeps them
            for setting in settings:
                teacher[setting] = run_seed(stores, corpus, cfg, seed, args.device, settings=[setting], pretrained=pre)[setting]
                rows[setting].setdefault("teacher", []).append(teacher[setting]["test_accuracy"])
                f1[setting].setdefault("teacher", []).append(teacher[setting]["test_macro_f1"])
                save()
            for variant in ORDER:
                flags = list(VARIANTS[variant])
                if getattr(args, "augment_n", None) is not None and "--augment-n" in flags:
                    flags[flags.index("--augment-n") + 1] = str(args.augment_n)
                for setting in settings:
                    if setting == "B1" and variant not in B1_VARIANTS:
                        continue
                    for student in students:
                        out = json.loads(kd(
                            "distill", "--run", f"seed{seed}", "--student", student, *flags, *for_student(student_args, student),
                            "--seed", str(seed), "--device", args.device, "--name", f"{student}-{variant}",
                            "--db", str(stores[setting]), "--json",
                        ))
                        accuracy = out["metrics"]["test"]["accuracy"]
                        rows[setting].setdefault(f"{student} {variant}", []).append(accuracy)
                        f1[setting].setdefault(f"{student} {variant}", []).append(out["metrics"]["test"]["macro_f1"])
                        progress_line(f"seed {seed} {setting} {student} {variant}: test accuracy {accuracy:.4f}")
                        save()
        for setting in settings:
            accuracy, macro_f1 = tfidf_peer(stores[setting])
            rows[setting][PEER], f1[setting][PEER] = [accuracy], [macro_f1]
            progress_line(f"{setting} {PEER}: test accuracy {rows[setting][PEER][0]:.4f}")
            save()
    result["rows"] = {setting: canonical(table) for setting, table in rows.items()}
    result["f1"] = {setting: canonical(table) for setting, table in f1.items()}
    return result


def canonical(table: dict) -> dict:
    """The rows in reading order: teacher, the peer, then each student's variants."""
    first = [name for name in ("teacher", PEER) if name in table]
    rest = sorted((n for n in table if n not in first), key=lambda n: (n.split(" ")[0], list(VARIANTS).index(n.split(" ", 1)[1])))
    return {name: table[name] for name in first + rest}


PEER = "TF-IDF+LR"  # deterministic: measured once per run, not per seed
SAME_FOR_MERGE = ("config", "student_args", "device", "settings", "students", "quick", "train_rows", "augment_n")


def merge_seeds(a: dict, b: dict) -> dict:
    """Two ``--json`` results of the same command with different ``--seeds`` as one result over all of
    their seeds (a full-size run that does not fit in one sitting is run a seed at a time)."""
    from bench.common import check_mergeable, seed_parts

    check_mergeable(a, b, SAME_FOR_MERGE, "B1/B2")
    rows = {}
    for setting, table in a["rows"].items():
        other = b["rows"].get(setting, {})
        if set(other) != set(table):
            raise ValueError(f"cannot merge B1/B2 runs: the {setting} rows differ")
        rows[setting] = {name: values if name == PEER else values + other[name] for name, values in table.items()}
    f1 = {}  # (a result from before macro-F1 was recorded has none: the merge has none then)
    if "f1" in a and "f1" in b:
        f1 = {setting: {name: values if name == PEER else values + b["f1"].get(setting, {}).get(name, [])
                        for name, values in table.items()} for setting, table in a["f1"].items()}
    return {**a, "seeds": a["seeds"] + b["seeds"], "rows": rows, "f1": f1, "teacher": a["teacher"] + b["teacher"],
            "parts": seed_parts(a) + seed_parts(b)}


def gap_closed(table: dict, student: str, variant: str) -> float | None:
    """(variant - alone) / (teacher - alone) on the mean test accuracies; None when undefined."""
    if f"{student} {variant}" not in table or f"{student} alone" not in table:
        return None
    teacher, base = statistics.fmean(table["teacher"]), statistics.fmean(table[f"{student} alone"])
    if teacher <= base:
        return None
    return (statistics.fmean(table[f"{student} {variant}"]) - base) / (teacher - base)


def target_cell(setting: str, name: str, table: dict, not_judged: str | None = None) -> str:
    """The B1/B2 target next to its figure: 'TARGET: met|not met', or not judged with the reason."""
    mean = statistics.fmean(table[name])
    teacher = statistics.fmean(table["teacher"])
    if name == "teacher" and TARGET_ACCURACY.get(setting) is not None:
        target, met = f"≥ {TARGET_ACCURACY[setting]:.0%}", meets(mean, TARGET_ACCURACY[setting])
    elif setting == "B1" and name == f"{DEFAULT_STUDENT} distilled":
        gap = gap_closed(table, DEFAULT_STUDENT, "distilled")
        target, met = f"gap closed ≥ {TARGET_GAP_B1:.0%}", gap is not None and meets(gap, TARGET_GAP_B1)
        if gap is None and not not_judged:
            return f"{target}: **not met** (teacher ≤ alone)"
    elif setting == "B2" and name == f"{DEFAULT_STUDENT} +pool":
        # "matches or beats its teacher ... never below the student trained alone"
        alone = statistics.fmean(table[f"{DEFAULT_STUDENT} alone"]) if f"{DEFAULT_STUDENT} alone" in table else None
        target, met = "≥ teacher and ≥ alone", meets(mean, teacher) and alone is not None and meets(mean, alone)
        not_judged = not_judged or (None if alone is not None else "no student-alone row to compare with")
    else:
        return ""
    if not_judged:
        return f"{target}: not judged ({not_judged})"
    return f"{target}: **{'met' if met else 'not met'}**"


def markdown(result: dict, info: dict, command: str, not_judged: str | None = None) -> str:
    lines = []
    for setting, table in result["rows"].items():
        teacher = statistics.fmean(table["teacher"])
        f1 = (result.get("f1") or {}).get(setting, {})
        lines += [f"**{setting}**", "", "| model | test accuracy (mean, min-max) | test macro-F1 (mean, min-max) | gap closed | target |",
                  "| --- | ---: | ---: | ---: | --- |"]
        for name, values in table.items():
            mean = statistics.fmean(values)
            student, _, variant = name.partition(" ")
            gap = ""
            alone = table.get(f"{student} alone")
            if variant and variant != "alone" and alone:
                base = statistics.fmean(alone)
                gap = shown((mean - base) / (teacher - base), ".0%", TARGET_GAP_B1) if teacher > base else "n/a (teacher ≤ alone)"
            target = target_cell(setting, name, table, not_judged)
            macro = f"{statistics.fmean(f1[name]):.4f} ({min(f1[name]):.4f}–{max(f1[name]):.4f})" if f1.get(name) else "—"
            lines.append(f"| {name} | {mean:.2%} ({min(values):.2%}–{max(values):.2%}) | {macro} | {gap} | {target} |")
        lines.append("")
    cfg = result["config"]
    gpu = f", GPU {info['gpu']}" if "gpu" in info else ""
    lines += [
        f"- teacher: {cfg['layers']} x {cfg['hidden']}, {recipe_words(cfg)}, {cfg['epochs']} fine-tuning epochs at lr {cfg['lr']}; "
        f"students: `{' '.join(result['student_args'])}`; augmentation `mask,pos,ngram` x {result.get('augment_n', 4)}; seeds {result['seeds']}",
        f"- machine: {info['cpu']}, {info['cores_usable']} cores, {info['memory']}{gpu}; commit {commit_words(info)}",
        f"- command: {command_words(command)}",
    ]
    return "\n".join(lines)


def markdown_from_json(data: dict, not_judged: str | None = None) -> str:
    """The distillation table from what ``--json`` wrote (the suite renders it this way)."""
    return markdown(data, *merged_source(data), not_judged)


def teacher_markdown_from_json(data: dict, not_judged: str | None = None) -> str:
    """bench/teacher.py's table for the teachers this run trained (per seed, in each setting)."""
    from types import SimpleNamespace

    from bench.teacher import markdown as teacher_markdown, summarize

    args = SimpleNamespace(device=data.get("device", "?"), seeds=",".join(map(str, data["seeds"])))
    return teacher_markdown(summarize(data["teacher"]), data["config"], args, *merged_source(data), not_judged)


def check_args(parser, args) -> None:
    """Refuse a typo before any pre-training: --settings B3, --students textcnnn, --seeds 1,a or
    --train-rows 500 each failed minutes in, after the stores and a seed's teacher (or at once, in a traceback)."""
    from kdstore.students import KINDS

    check_seeds(parser, args.seeds)
    check_train_rows(parser, args.train_rows)
    for option, given, allowed in (("--settings", args.settings, ("B1", "B2")), ("--students", args.students, KINDS)):
        names = given.split(",")
        wrong = [n for n in names if n not in allowed]
        if wrong or len(set(names)) != len(names):
            parser.error(f"{option} {given}: choose among {','.join(allowed)}, each once")


def not_judged(result: dict) -> str | None:
    """Why a run's targets are not judged, by the values it ran with, as ``python -m bench merge`` says it of
    its seeds (``--augment-n 4`` or ``--student-epochs 10`` typed are the protocol's own; the teacher's
    recipe is free): ``--quick``, ``--train-rows``, other student epochs or variants, fewer than 3 seeds."""
    from bench.suite import merged_not_judged

    return merged_not_judged(result)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--seeds", default="1")
    parser.add_argument("--settings", default="B1,B2")
    parser.add_argument("--students", default="textcnn,bigru,bilstm,transformer")
    add_recipe_options(parser)
    add_work_option(parser)
    parser.add_argument("--student-epochs", type=int, help="override the students' epochs")
    parser.add_argument("--augment-n", type=int, help="augmented variants per text for the +aug rows (default 4)")
    parser.add_argument("--train-rows", type=int, help="only the first N rows of train.tsv (default: all; a smaller check)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    check_args(parser, args)
    if not (shared_dir() / "data" / "reviews" / "train.tsv").exists():
        print("benchmark data not found (set KD_SHARED)", file=sys.stderr)
        return 2
    os.environ.setdefault("KD_NO_PROGRESS", "1")
    info = machine_info()
    command = "python bench/distill.py " + " ".join(argv if argv is not None else sys.argv[1:])
    partial = Partial(args.json, {"machine": info, "command": command})
    try:
        result = run(args, partial)
    except (KeyboardInterrupt, RuntimeError) as exc:  # a time limit's SIGINT reaches here as either
        line = report_stop(exc)
        partial.save(stopped=line)  # (a kd pretrain that failed saved nothing before: no JSON at all)
        got = partial.data
        tables = {setting: canonical(t) for setting, t in got.get("rows", {}).items() if t.get("teacher")}
        if tables:
            print(markdown({**got, "rows": tables}, info, command, "stopped before the end"))
        print(f"- {line}" if tables else f"B1/B2 stopped before any table: {line}")  # the markdown says why
        return 1
    print(markdown(result, info, command, not_judged(result)))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**result, "machine": info, "command": command}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
