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
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import machine_info, shared_dir  # noqa: E402
from bench.teacher import FULL, QUICK, kd, prepare, run_seed  # noqa: E402

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


def tfidf_peer(store_db: Path) -> float:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from kdstore.store import Store

    store = Store.open(str(store_db))
    train, test = store.samples(splits=["train"], labeled=True), store.samples(splits=["test"], labeled=True)
    vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=2)
    clf = LogisticRegression(max_iter=2000, C=4.0).fit(vec.fit_transform(train.texts), train.labels)
    return float((clf.predict(vec.transform(test.texts)) == test.labels).mean())


def run(args) -> dict:
    cfg = dict(QUICK if args.quick else FULL)
    if args.minutes is not None:
        cfg["minutes"] = args.minutes
    student_args = STUDENT_QUICK if args.quick else STUDENT_FULL
    data = shared_dir() / "data" / "reviews"
    seeds = [int(s) for s in args.seeds.split(",")]
    settings = args.settings.split(",")
    rows: dict = {}
    with tempfile.TemporaryDirectory(prefix="kd-bench-distill-") as tmp:
        os.environ["KD_ARTIFACTS"] = str(Path(tmp) / "artifacts")
        stores = prepare(Path(tmp), data)
        for seed in seeds:
            teacher = run_seed(stores, data / "corpus-peoples-daily-1998.txt", cfg, seed, args.device, settings=settings)
            for setting in settings:
                db = str(stores[setting])
                table = rows.setdefault(setting, {})
                table.setdefault("teacher", []).append(teacher[setting]["test_accuracy"])
                if seed == seeds[0]:
                    table["TF-IDF+LR"] = [tfidf_peer(stores[setting])]
                for student in args.students.split(","):
                    for variant, flags in VARIANTS.items():
                        if setting == "B1" and variant not in B1_VARIANTS:
                            continue
                        out = json.loads(kd(
                            "distill", "--run", f"seed{seed}", "--student", student, *flags, *student_args,
                            "--seed", str(seed), "--device", args.device, "--name", f"{student}-{variant}",
                            "--db", db, "--json",
                        ))
                        table.setdefault(f"{student} {variant}", []).append(out["metrics"]["test"]["accuracy"])
    return {"config": cfg, "student_args": student_args, "seeds": seeds, "rows": rows}


def markdown(result: dict, info: dict, command: str) -> str:
    lines = []
    for setting, table in result["rows"].items():
        teacher = statistics.fmean(table["teacher"])
        lines += [f"**{setting}**", "", "| model | test accuracy (mean, min-max) | gap closed |", "| --- | ---: | ---: |"]
        for name, values in table.items():
            mean = statistics.fmean(values)
            student, _, variant = name.partition(" ")
            gap = ""
            alone = table.get(f"{student} alone")
            if variant and variant != "alone" and alone:
                base = statistics.fmean(alone)
                gap = f"{(mean - base) / (teacher - base):.0%}" if teacher > base else "n/a (teacher ≤ alone)"
            lines.append(f"| {name} | {mean:.2%} ({min(values):.2%}–{max(values):.2%}) | {gap} |")
        lines.append("")
    cfg = result["config"]
    gpu = f", GPU {info['gpu']}" if "gpu" in info else ""
    lines += [
        f"- teacher: {cfg['layers']} x {cfg['hidden']}, {cfg['minutes']} min MLM, {cfg['epochs']} fine-tuning epochs; "
        f"students: `{' '.join(result['student_args'])}`; seeds {result['seeds']}",
        f"- machine: {info['cpu']}, {info['cores_usable']} cores, {info['memory']}{gpu}; commit `{info['commit']}`",
        f"- command: `{command}`",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--seeds", default="1")
    parser.add_argument("--settings", default="B1,B2")
    parser.add_argument("--students", default="textcnn,bigru,bilstm,transformer")
    parser.add_argument("--minutes", type=float, help="override the teacher's pre-training budget")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not (shared_dir() / "data" / "reviews" / "train.tsv").exists():
        print("benchmark data not found (set KD_SHARED)", file=sys.stderr)
        return 2
    os.environ.setdefault("KD_NO_PROGRESS", "1")
    result = run(args)
    info = machine_info()
    command = "python bench/distill.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(markdown(result, info, command))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**result, "machine": info}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
