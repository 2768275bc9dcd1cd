"""B1/B2 teacher figures: a kd-pretrained teacher's test accuracy and macro-F1, and its logit rate.

    python bench/teacher.py --quick                       # CPU-sized: 2 layers x 128, 3 min MLM
    python bench/teacher.py --device cuda --seeds 1,2,3   # protocol size (6 x 384)

Everything goes through kd's own CLI (in-process), the same code a user runs:
  1. a pre-training store holding the train texts only (no dev/test text is ever seen by MLM), plus
     the People's Daily corpus via ``--corpus``: ``kd pretrain``;
  2. per setting, a fresh store: B1 = all 14,363 train rows labeled; B2 = the first 1,000 labeled and
     the other 13,363 ingested as unlabeled text (labels dropped); dev and test as given;
  3. ``kd teach --model DIR`` on that store; its dev-selected epoch is scored on test.
Figures are read back from the store (``kd report --json``). Quality: mean and min-max over seeds.
``--train-rows N`` uses the first N rows of train.tsv instead of all 14,363 (B2: the first 1,000
labeled, the rest of the N as the pool): a smaller check of the same table, not the protocol.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import Partial, add_recipe_options, command_words, commit_words, meets, add_work_option, apply_recipe, machine_info, off_protocol, progress_line, recipe_words, report_stop, shared_dir, store_artifacts_beside_stores, work_dir  # noqa: E402

# pretrain_batch_size / pretrain_lr: kd pretrain's defaults
QUICK = {"layers": 2, "hidden": 128, "minutes": 3.0, "epochs": 3, "lr": 3e-4, "batch_size": 32, "pretrain_batch_size": 64, "pretrain_lr": 5e-4}
FULL = {"layers": 6, "hidden": 384, "minutes": 4.0, "epochs": 4, "lr": 1e-4, "batch_size": 64, "pretrain_batch_size": 64, "pretrain_lr": 5e-4}
B2_LABELED = 1000
TARGET_ACCURACY = {"B1": 0.88, "B2": None}  # BENCHMARK.md: B1 teacher >= 88 %


def kd(*args: str, log_warnings: bool = True) -> str:
    """Run one kd command in-process and return its standard output (raises on failure). Its
    warnings go to the benchmark's log unless ``log_warnings`` is false (a caller that logs the
    ``--json`` output's own, with more context)."""
    from click.testing import CliRunner

    from commands.cli import cli

    try:  # click < 8.2 (pyproject allows 8.1) mixes standard error into stdout unless told: a warning
        runner, apart = CliRunner(mix_stderr=False), True  # on stderr then broke every json.loads(kd(..., "--json"))
    except TypeError:  # click >= 8.2: stdout alone always; output has both
        runner, apart = CliRunner(), False
    result = runner.invoke(cli, list(args), catch_exceptions=False)
    if result.exit_code != 0:
        said = result.stdout + result.stderr if apart else result.output
        raise RuntimeError(f"kd {' '.join(args)} failed:\n{said}")
    for line in result.stderr.splitlines() if log_warnings else ():  # kd's warnings belong in the benchmark's log too
        if line.startswith("warning: "):
            progress_line(f"kd {args[0] if args else ''}: {line}")
    return result.stdout


def check_seeds(parser, seeds: str) -> None:
    """``--seeds`` as comma-separated distinct integers, else a usage error before anything runs."""
    try:
        numbers = [int(s) for s in seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds wants comma-separated integers, not {seeds!r}")
    if len(set(numbers)) != len(numbers):
        parser.error(f"--seeds {seeds}: a seed given twice would count twice in the means")
    if any(not 0 <= n < 2**32 for n in numbers):  # (kd's --seed: refused at the first kd pretrain, in a traceback)
        parser.error(f"--seeds {seeds}: a seed is from 0 to {2**32 - 1} (kd's --seed)")


def check_train_rows(parser, rows: int | None) -> None:
    if rows is not None and rows <= B2_LABELED:
        parser.error(f"--train-rows {rows}: must be above {B2_LABELED} (B2 labels the first {B2_LABELED} rows)")


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(l + "\n" for l in lines), encoding="utf-8")
    return path


def prepare(work: Path, data: Path, train_rows: int | None = None) -> dict[str, Path]:
    """The pre-training store and one store per setting, ingested through `kd ingest`.

    ``train_rows``: only the first that many rows of train.tsv (default: all of them)."""
    train = (data / "train.tsv").read_text(encoding="utf-8").splitlines()
    if train_rows is not None:
        if train_rows <= B2_LABELED:
            raise ValueError(f"train_rows must be above {B2_LABELED} (B2 labels the first {B2_LABELED} rows)")
        train = train[:train_rows]
    texts_only = [l.split("\t", 1)[1] for l in train]
    stores = {"pretrain": work / "pretrain.db", "B1": work / "b1.db", "B2": work / "b2.db"}
    kd("ingest", str(write_lines(work / "train-texts.txt", texts_only)), "--split", "unlabeled", "--db", str(stores["pretrain"]))
    b1_train = data / "train.tsv" if train_rows is None else write_lines(work / "train-rows.tsv", train)
    kd("ingest", str(b1_train), "--db", str(stores["B1"]))
    kd("ingest", str(write_lines(work / "train-1k.tsv", train[:B2_LABELED])), "--db", str(stores["B2"]))
    kd("ingest", str(write_lines(work / "pool.txt", texts_only[B2_LABELED:])), "--split", "unlabeled", "--db", str(stores["B2"]))
    for setting in ("B1", "B2"):
        kd("ingest", str(data / "dev.tsv"), "--split", "dev", "--db", str(stores[setting]))
        kd("ingest", str(data / "test.tsv"), "--split", "test", "--db", str(stores[setting]))
    return stores


def pretrain_seed(stores: dict[str, Path], corpus: Path, cfg: dict, seed: int, device: str) -> dict:
    """``kd pretrain`` of one seed's teacher: ``{seed, pretrain_seconds, mlm_loss, mlm_steps, model_dir}``."""
    t0 = time.monotonic()
    recipe = ["--batch-size", str(cfg.get("pretrain_batch_size", 64)), "--lr", str(cfg.get("pretrain_lr", 5e-4)),
              "--objective", cfg.get("objective", "mlm")]
    out = json.loads(kd(
        "pretrain", "--run", f"seed{seed}", "--layers", str(cfg["layers"]), "--hidden", str(cfg["hidden"]),
        "--minutes", str(cfg["minutes"]), *recipe, "--corpus", str(corpus), "--seed", str(seed), "--device", device,
        "--db", str(stores["pretrain"]), "--json",
    ))
    train = out["metrics"]["train"]
    result = {"seed": seed, "pretrain_seconds": time.monotonic() - t0, "mlm_loss": train["mlm_loss"],
              "mlm_steps": train.get("steps"), "model_dir": out["artifact_path"]}
    progress_line(f"seed {seed} pre-training: {int(result['mlm_steps'] or 0)} steps in {result['pretrain_seconds']:.0f} s, {'generator ' if cfg.get('objective') == 'electra' else ''}MLM loss {result['mlm_loss']:.3f}")
    return result


def run_seed(stores: dict[str, Path], corpus: Path, cfg: dict, seed: int, device: str, settings=("B1", "B2"),
             pretrained: dict | None = None, save=None) -> dict:
    """Pre-train (unless ``pretrained`` is ``pretrain_seed``'s result) and fine-tune the seed's
    teacher in each setting, logging each figure as it exists; ``save(result)`` after each figure,
    with what the seed has so far (a run cut off by a time limit keeps them)."""
    run = f"seed{seed}"
    result = dict(pretrained or pretrain_seed(stores, corpus, cfg, seed, device))
    model_dir = result.pop("model_dir")
    saved = save or (lambda _result: None)
    saved(result)
    for setting in settings:
        t0 = time.monotonic()
        rep = json.loads(kd(
            "teach", "--run", run, "--model", model_dir, "--epochs", str(cfg["epochs"]), "--lr", str(cfg["lr"]),
            "--layer-decay", str(cfg.get("layer_decay", 1.0)),
            "--batch-size", str(cfg["batch_size"]), "--seed", str(seed), "--device", device,
            "--db", str(stores[setting]), "--json",
        ))
        m = rep["metrics"]
        result[setting] = {
            "test_accuracy": m["test"]["accuracy"],
            "test_macro_f1": m["test"]["macro_f1"],
            "dev_accuracy": m["dev"]["accuracy"],
            "logit_samples_per_s": m["all"]["score_samples_per_s"],
            "teach_seconds": time.monotonic() - t0,
        }
        r = result[setting]
        progress_line(f"seed {seed} {setting} teacher: test accuracy {r['test_accuracy']:.4f}, dev {r['dev_accuracy']:.4f}, {r['teach_seconds']:.0f} s")
        saved(result)
    return result


def summarize(results: list[dict]) -> dict:
    out = {}
    for setting in [s for s in ("B1", "B2") if s in results[0]]:
        out[setting] = {}
        for key in ("test_accuracy", "test_macro_f1", "logit_samples_per_s", "teach_seconds"):
            values = [r[setting][key] for r in results]
            # quality figures as the mean over the seeds, timings as the median (the protocol's rule)
            centre = ("mean", statistics.fmean(values)) if key.startswith("test_") else ("median", statistics.median(values))
            out[setting][key] = {centre[0]: centre[1], "min": min(values), "max": max(values)}
    return out


def _median(figure: dict) -> float:
    return figure["median"] if "median" in figure else figure["mean"]  # (results written before the median: the mean)


def markdown(summary: dict, cfg: dict, args, info: dict, command: str, not_judged: str | None = None) -> str:
    """The table; with ``not_judged`` (a reason) the targets are shown but not judged."""
    target = TARGET_ACCURACY
    lines = [
        f"Teacher: {cfg['layers']} layers x {cfg['hidden']}, {recipe_words(cfg)} pre-training "
        f"(train texts + People's Daily), then {cfg['epochs']} epochs fine-tuning at lr {cfg['lr']}; "
        f"device {args.device}; seeds {args.seeds}.",
        "",
        "| setting | test accuracy (mean, min-max) | test macro-F1 (mean, min-max) | logits samples/s (median) | fine-tune + scoring s (median) | target |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for setting, s in summary.items():
        acc = s["test_accuracy"]
        t = target[setting]
        if t is None:
            verdict = "—"
        elif not_judged:
            verdict = f"≥ {t:.0%}: not judged ({not_judged})"
        else:
            verdict = f"≥ {t:.0%}: **{'met' if meets(acc['mean'], t) else 'not met'}**"
        lines.append(
            f"| {setting} | {acc['mean']:.2%} ({acc['min']:.2%}–{acc['max']:.2%}) | {s['test_macro_f1']['mean']:.4f} ({s['test_macro_f1']['min']:.4f}–{s['test_macro_f1']['max']:.4f}) | "
            f"{_median(s['logit_samples_per_s']):,.0f} | {_median(s['teach_seconds']):.0f} | {verdict} |"
        )
    gpu = f", GPU {info['gpu']}" if "gpu" in info else ""
    lines += [
        "",
        f"- machine: {info['cpu']}, {info['cores_usable']} cores, {info['memory']}{gpu}; torch {info.get('torch')}",
        f"- commit: {commit_words(info)}",
        f"- command: {command_words(command)}",
    ]
    return "\n".join(lines)


def markdown_from_json(data: dict, not_judged: str | None = None) -> str:
    """The table from what ``--json`` wrote (the suite renders it this way)."""
    from types import SimpleNamespace

    args = SimpleNamespace(device=data.get("device", "?"), seeds=data.get("seeds", "?"))
    return markdown(data["summary"], data["config"], args, data["machine"], data.get("command", "?"), not_judged)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CPU-sized teacher (minutes, not hours)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--seeds", default="1", help="comma-separated seeds (protocol: 3)")
    add_recipe_options(parser)
    add_work_option(parser)
    parser.add_argument("--train-rows", type=int, help="only the first N rows of train.tsv (default: all; a smaller check)")
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    args = parser.parse_args(argv)
    check_seeds(parser, args.seeds)
    check_train_rows(parser, args.train_rows)
    cfg = apply_recipe(QUICK if args.quick else FULL, args)
    data = shared_dir() / "data" / "reviews"
    if not (data / "train.tsv").exists():
        print(f"benchmark data not found under {data} (set KD_SHARED)", file=sys.stderr)
        return 2
    import os

    os.environ.setdefault("KD_NO_PROGRESS", "1")
    seeds = [int(s) for s in args.seeds.split(",")]
    command = "python bench/teacher.py " + " ".join(argv if argv is not None else sys.argv[1:])
    info = machine_info()
    partial = Partial(args.json, {"config": cfg, "runs": [], "machine": info, "command": command, "device": args.device,
                                  "seeds": args.seeds, "quick": args.quick, "train_rows": args.train_rows})
    results: list[dict] = []
    stopped = None
    try:
        with work_dir(getattr(args, "work", None), "kd-bench-teacher-") as tmp:
            store_artifacts_beside_stores()
            stores = prepare(Path(tmp), data, args.train_rows)
            for s in seeds:
                so_far = lambda r: partial.save(runs=[*results, r])  # noqa: E731 (each figure as it comes)
                results.append(run_seed(stores, data / "corpus-peoples-daily-1998.txt", cfg, s, args.device, save=so_far))
                partial.save(runs=results)
    except (KeyboardInterrupt, RuntimeError) as exc:  # a time limit's SIGINT reaches here as either
        stopped = report_stop(exc)
        partial.save(stopped=stopped)  # (a kd pretrain that failed saved nothing before: no JSON at all)
    complete = [r for r in results if all(k in r for k in ("B1", "B2"))]
    if complete:
        summary = summarize(complete)
        not_judged = "stopped before the end" if stopped else off_protocol(args, ("train_rows",))
        print(markdown(summary, cfg, args, info, command, not_judged))
        partial.save(summary=summary)  # (the runs as last saved: a seed cut off keeps its figures so far)
    if stopped:
        print(f"- {stopped}" if complete else f"Teacher table stopped before any figure: {stopped}")  # the markdown says why
    if args.json and stopped is None:
        args.json.write_text(json.dumps({**partial.data, "runs": results}, indent=2))  # complete: no "partial"
    return 0 if stopped is None else 1


if __name__ == "__main__":
    sys.exit(main())
