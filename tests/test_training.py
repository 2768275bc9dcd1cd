"""End to end on CPU: pretrain, teach, distill and predict through the real CLI on a real SQLite file.

The data is synthetic and separable (a marker word decides the label) so a 2-layer BERT learns it in a
few steps; the model is built and saved by the test, then loaded by kd with ``from_pretrained``.
"""

from __future__ import annotations

import json
import math
import random
import re
import shlex
import shutil
import sqlite3
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch
from sqlalchemy import func, select
from synthetic import corpus_files, edit_labels, kd, quick_speed_figures, seeded, terminate_when_ready, tiny_bert_for, tiny_roberta_for, write_tsv

from kdstore.errors import KdError
from kdstore.metrics import classification_metrics
from kdstore.schema import AugmentedText, Logit, Prediction, Sample, Stage
from kdstore.report import run_report
from kdstore.store import Store

@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    return corpus_files(tmp_path_factory.mktemp("corpus"), 0, pool_per_class=15)


@pytest.fixture(scope="module")
def tiny_model(corpus, tmp_path_factory) -> Path:
    """A 2-layer BERT with a character vocabulary, saved as a Hugging Face directory."""
    return tiny_bert_for(corpus, tmp_path_factory.mktemp("tiny-bert"))


@contextmanager
def _module_env(folder: Path):
    """What conftest's ``_kd_env`` gives each test, for a module fixture (set up before it): the kd
    environment variables cleared, ``folder`` the working directory."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ("KD_DB", "KD_CONFIG", "KD_ARTIFACTS"):
            mp.delenv(name, raising=False)
        mp.setenv("KD_NO_PROGRESS", "1")
        mp.chdir(folder)
        yield


def _copy_store(template: Path, db: Path) -> Path:
    """The SQLite store ``template`` copied to ``db`` (sqlite3's backup API) with its models
    (``kd-artifacts`` beside it), the stages' recorded folders moved to the copy's: as if the
    commands that made the template had run on ``db``."""
    src, dst = sqlite3.connect(template), sqlite3.connect(db)
    try:
        src.backup(dst)
        old, new = str(template.parent / "kd-artifacts" / template.name), str(db.parent / "kd-artifacts" / db.name)
        with dst:
            dst.execute("UPDATE stages SET artifact_path = ? || substr(artifact_path, ?) WHERE substr(artifact_path, 1, ?) = ?",
                        (new, len(old) + 1, len(old), old))
    finally:
        src.close()
        dst.close()
    if (template.parent / "kd-artifacts").exists():
        shutil.copytree(template.parent / "kd-artifacts" / template.name, db.parent / "kd-artifacts" / db.name)
    return db


@pytest.fixture(scope="module")
def _ingested(corpus, tmp_path_factory) -> Path:
    """The corpus ingested once (four `kd ingest` runs); each test gets a copy (``sample_store``)."""
    folder = tmp_path_factory.mktemp("ingested")
    db = folder / "kd.db"
    with _module_env(folder):
        for split, path in corpus.items():
            kd("ingest", str(path), "--split", split, "--db", str(db))
    return db


@pytest.fixture
def sample_store(tmp_path, _ingested) -> Path:
    """A store of the corpus (train, dev, test and an unlabeled pool) at ``tmp_path / "kd.db"``."""
    return _copy_store(_ingested, tmp_path / "kd.db")


@pytest.fixture(scope="module")
def _taught(_ingested, tiny_model, tmp_path_factory) -> tuple[Path, dict]:
    """The corpus store with run 'r''s teacher (10 epochs), taught once, and the teach's ``--json``
    report: each test gets a copy of the store (``taught_store``)."""
    folder = tmp_path_factory.mktemp("taught")
    db = _copy_store(_ingested, folder / "kd.db")
    with _module_env(folder):
        out = kd("teach", "--run", "r", "--model", str(tiny_model), "--epochs", "10", "--patience", "10", "--lr", "2e-3",
                 "--batch-size", "8", "--max-len", "32", "--db", str(db), "--json")
    return db, json.loads(out.stdout)


@pytest.fixture
def taught_store(sample_store, _taught) -> Path:
    """``sample_store`` with run 'r''s teacher: a copy of ``_taught``'s store (and models) in its place."""
    sample_store.unlink()
    return _copy_store(_taught[0], sample_store)


FULL_SPEED_FIGURES = {"test_report_has_every_figure_compares_runs_and_plots"}


@pytest.fixture(autouse=True)
def _quick_speed_figures(request, monkeypatch) -> None:
    """Speed figures timed on 5 texts alone and 20 in batches (``synthetic.quick_speed_figures``), but
    in the test of the report's speed figures (and in the module fixtures' teachers, taught before
    this applies)."""
    if request.function.__name__ not in FULL_SPEED_FIGURES:
        quick_speed_figures(monkeypatch)


def _count(db: Path, model, **where) -> int:
    store = Store.open(str(db), create=False)
    q = select(func.count()).select_from(model)
    for k, v in where.items():
        q = q.where(getattr(model, k) == v)
    with store.engine.connect() as conn:
        return conn.execute(q).scalar_one()


def _stage(db: Path, run: str, name: str):
    store = Store.open(str(db), create=False)
    return next(s for s in store.stages_of(run) if s.name == name)


def _warnings(result) -> list[str]:
    """A --json output's warnings but the one that a model no better than the majority class gets (the
    tiny models here seldom beat it in an epoch; its own test is below)."""
    return [w for w in json.loads(result.stdout)["warnings"] if not w.startswith("dev accuracy ")]


def test_teach_end_to_end_stores_logits_for_every_sample(taught_store, _taught, tiny_model):
    """The teacher of every ``taught_store`` (``kd teach --epochs 10 --json`` on the corpus, run once
    for the module in ``_taught``): its report and what it stored, then --overwrite."""
    sample_store, db = taught_store, str(taught_store)
    report = _taught[1]
    assert report["status"] == "succeeded" and report["run"] == "r"
    stage = _stage(sample_store, "r", "teach")
    n_samples = _count(sample_store, Sample)
    assert n_samples == 130
    assert _count(sample_store, Logit, stage_id=stage.id) == n_samples  # unlabeled pool included
    assert _count(sample_store, Prediction, stage_id=stage.id) == n_samples
    assert stage.config["classes"] == ["pos", "neg"] or stage.config["classes"] == ["neg", "pos"]
    assert len(stage.artifact_sha256) == 64 and Path(stage.artifact_path, "config.json").exists()
    # a separable task: the tiny teacher must have learned it
    assert report["metrics"]["test"]["accuracy"] >= 0.8
    assert {h["split"] for h in report["history"]} >= {"train", "dev"}
    ids, logits = Store.open(db).read_logits(stage.id)
    assert logits.shape == (n_samples, 2) and np.isfinite(logits).all()
    # refusing to overwrite a succeeded stage, then --overwrite replaces it
    again = kd("teach", "--run", "r", "--model", str(tiny_model), "--epochs", "1", "--max-len", "32", "--db", db, ok=False)
    assert "--overwrite" in again.output
    kd("teach", "--run", "r", "--model", str(tiny_model), "--epochs", "1", "--max-len", "32", "--db", db, "--overwrite")
    assert _count(sample_store, Stage) == 1
    assert _count(sample_store, Logit) == n_samples


def test_logits_only_scores_samples_ingested_later(taught_store, tmp_path):
    sample_store, db = taught_store, str(taught_store)
    late = tmp_path / "late.txt"
    late.write_text("这个很好用\n那个太差了\n", encoding="utf-8")
    kd("ingest", str(late), "--split", "unlabeled", "--db", db)
    write_tsv(tmp_path / "dev2.tsv", [("pos", "后来的验证样本很好"), ("neg", "后来的验证样本太差")])
    kd("ingest", str(tmp_path / "dev2.tsv"), "--split", "dev", "--db", db)
    # the training options would be ignored: refused, nothing scored
    refused = kd("teach", "--run", "r", "--logits-only", "--epochs", "5", "--max-len", "16", "--db", db, ok=False)
    assert "--epochs, --max-len: --logits-only scores with the run's teacher as it was trained" in refused.output
    refused = kd("teach", "--run", "r", "--logits-only", "--label", "pos", "--split", "dev", "--db", db, ok=False)
    assert "Error: --split, --label: --logits-only" in refused.output  # the options' names (it said --splits, --labels)
    # and the reason is choosing's, not training's (it said "as it was trained (at its --max-len)")
    assert "scores every sample the run's teacher has no logits for, not a chosen few" in refused.output
    refused = kd("teach", "--run", "r", "--logits-only", "--overwrite", "--db", db, ok=False)
    assert "replacing none: leave --logits-only out to train it again" in refused.output
    out = kd("teach", "--run", "r", "--logits-only", "--batch-size", "3", "--db", db, "--json")
    assert json.loads(out.stdout)["scored"] == 4
    stage = _stage(sample_store, "r", "teach")
    assert _count(sample_store, Logit, stage_id=stage.id) == _count(sample_store, Sample)
    # the teacher's figures stand as measured when it ran, and the output says what they leave out
    assert "warning: the teacher's stored figures leave out the labeled samples it scored now (2 dev)" in out.stderr
    assert "--store --split dev` measures it" in out.stderr
    write_tsv(tmp_path / "test2.tsv", [("pos", "后来的测试样本很好")])
    kd("ingest", str(tmp_path / "test2.tsv"), "--split", "test", "--db", db)
    out = kd("teach", "--run", "r", "--logits-only", "--db", db)
    assert "(1 test)" in out.stderr and "--store --split test` measures it" in out.stderr  # (it named dev, which had none)
    # late train samples alone: measuring the teacher on train (the texts it learned from) was suggested
    write_tsv(tmp_path / "train2.tsv", [("neg", "后来的训练样本太差")])
    kd("ingest", str(tmp_path / "train2.tsv"), "--db", db)
    out = kd("teach", "--run", "r", "--logits-only", "--db", db)
    assert "--split train" not in out.stderr and "warning: 1 train sample came after the teacher was trained: it scored it now " \
        "but never learned from it; `kd teach --run r --model " in out.stderr and " --overwrite` (with the other options " \
        "`kd report --run r` lists for it) retrains it on that one" in out.stderr  # (not "on them"; --model: refused without it)
    store = Store.open(db)
    assert [m.value for m in store.metrics(stage.id) if m.split == "dev" and m.name == "n"] == [20]
    report = json.loads(kd("report", "--run", "r", "--db", db, "--json").stdout)  # its matrix counts what its figures did
    teach = next(st for st in report["stages"] if st["name"] == "teach")
    assert np.array(teach["confusion"]["dev"]).sum() == 20


def test_logits_only_late_train_sample_advises_a_kd_teach_that_runs_when_pasted(taught_store, tmp_path):
    """The late train sample's warning advised `kd teach --run r --overwrite`, which kd teach refuses for want
    of --model: the command named is the teacher's own (``reteach_command``), and pasted (with the other options
    kd report lists) it retrains the teacher."""
    db = str(taught_store)
    kd("ingest", str(write_tsv(tmp_path / "train2.tsv", [("neg", "后来的训练样本太差")])), "--db", db)
    out = kd("teach", "--run", "r", "--logits-only", "--db", db)
    line = next(l for l in out.stderr.splitlines() if "came after the teacher was trained" in l)
    command = shlex.split(line.split("`")[1])
    assert command[:2] == ["kd", "teach"] and "--model" in command, line
    kd(*command[1:], "--epochs", "1", "--max-len", "32", "--db", db)  # (the other options kd report lists)


def test_logits_only_of_late_train_and_dev_samples_says_the_teacher_never_learned_the_train_ones(taught_store, tmp_path):
    """Late train samples beside late dev ones: only the figures' warning came, and the one saying that the
    teacher never learned the train samples it scored (the one a late train sample alone gets) was left out."""
    db = str(taught_store)
    kd("ingest", str(write_tsv(tmp_path / "train2.tsv", [("neg", "后来的训练样本太差")])), "--db", db)
    kd("ingest", str(write_tsv(tmp_path / "dev2.tsv", [("pos", "后来的验证样本很好")])), "--split", "dev", "--db", db)
    out = kd("teach", "--run", "r", "--logits-only", "--db", db, "--json")
    warnings = _warnings(out)
    assert any(w.startswith("the teacher's stored figures leave out the labeled samples it scored now (1 train, 1 dev)") for w in warnings)
    assert any(w.startswith("1 train sample came after the teacher was trained: it scored it now but never learned from it") for w in warnings)


def test_logits_only_counts_every_sample_it_scored_beside_late_train_ones(taught_store, tmp_path):
    """The late train samples' warning reused the count of samples scored: a train text and two pool texts
    scored were reported as "scored": 1 (and "scored 1 samples")."""
    db = str(taught_store)
    kd("ingest", str(write_tsv(tmp_path / "train2.tsv", [("neg", "后来的训练样本太差")])), "--db", db)
    (tmp_path / "late.txt").write_text("这个很好用\n那个太差了\n", encoding="utf-8")
    kd("ingest", str(tmp_path / "late.txt"), "--split", "unlabeled", "--db", db)
    out = kd("teach", "--run", "r", "--logits-only", "--db", db, "--json")
    assert json.loads(out.stdout)["scored"] == 3


def test_logits_only_says_one_sample_scored_in_the_singular(taught_store, tmp_path):
    """One pool text ingested after the teacher: the summary said "scored 1 samples"."""
    db = str(taught_store)
    (tmp_path / "late.txt").write_text("这个很好用\n", encoding="utf-8")
    kd("ingest", str(tmp_path / "late.txt"), "--split", "unlabeled", "--db", db)
    assert "run r: scored 1 sample that had no teacher logits" in kd("teach", "--run", "r", "--logits-only", "--db", db).stdout
    assert "run r: scored 0 samples that had no teacher logits" in kd("teach", "--run", "r", "--logits-only", "--db", db).stdout


def test_logits_only_says_a_rerun_learns_only_the_late_train_samples_its_where_selects(sample_store, tiny_model, tmp_path):
    """A teacher of `--where "source = 'train.tsv'"`: a late train file of another source was said to be
    "never learned from" with `kd teach --overwrite` (its options, its --where) to retrain "it on them",
    which would leave them out again."""
    db = str(sample_store)
    kd("teach", "--run", "w", "--model", str(tiny_model), "--epochs", "1", "--max-len", "32", "--where", "source = 'train.tsv'", "--db", db)
    kd("ingest", str(write_tsv(tmp_path / "shop.tsv", [("neg", "后来的训练样本太差"), ("pos", "后来的训练样本很好")])), "--db", db)
    out = kd("teach", "--run", "w", "--logits-only", "--db", db)
    assert "run w: scored 2 samples" in out.stdout and "came after the teacher was trained" not in out.stderr
    late = tmp_path / "late" / "train.tsv"  # a file of the source its --where selects: a rerun learns from it
    late.parent.mkdir()
    kd("ingest", str(write_tsv(late, [("neg", "再后来的训练样本太差")])), "--db", db)
    out = kd("teach", "--run", "w", "--logits-only", "--db", db)
    assert "warning: 1 train sample came after the teacher was trained: it scored it now but never learned from it" in out.stderr


def test_logits_only_says_a_teacher_of_dev_never_learned_the_late_dev_samples(sample_store, tiny_model, tmp_path):
    """A teacher of `--split train --split dev`: a late dev sample is one of its training rows, yet it was
    scored without the warning a late train sample gets (a rerun with its options learns from it)."""
    db = str(sample_store)
    kd("teach", "--run", "d", "--model", str(tiny_model), "--epochs", "1", "--max-len", "32", "--split", "train", "--split", "dev", "--db", db)
    kd("ingest", str(write_tsv(tmp_path / "dev2.tsv", [("pos", "后来的验证样本很好")])), "--split", "dev", "--db", db)
    out = kd("teach", "--run", "d", "--logits-only", "--db", db)
    assert "warning: 1 dev sample came after the teacher was trained: it scored it now but never learned from it" in out.stderr


def test_logits_only_refuses_a_batch_size_below_one(taught_store, tmp_path):
    """A negative --batch-size scored nothing and stored zero logits for the new samples."""
    sample_store, db = taught_store, str(taught_store)
    (tmp_path / "late.txt").write_text("这个很好用\n", encoding="utf-8")
    kd("ingest", str(tmp_path / "late.txt"), "--split", "unlabeled", "--db", db)
    stage = _stage(sample_store, "r", "teach")
    for bad in ("-3", "0"):
        result = kd("teach", "--run", "r", "--logits-only", "--batch-size", bad, "--db", db, ok=False)
        assert "Invalid value for --batch-size: must be at least 1" in result.output
        assert _count(sample_store, Logit, stage_id=stage.id) == _count(sample_store, Sample) - 1  # still unscored


def test_a_where_that_cannot_run_is_refused_before_any_stage(sample_store, tiny_model):
    result = kd("teach", "--run", "w", "--model", str(tiny_model), "--where", "nope = 1", "--db", str(sample_store), ok=False)
    assert result.output.startswith("Error: --where 'nope = 1' failed:") and len(result.output.strip().splitlines()) == 1
    assert not Store.open(str(sample_store)).run_exists("w")  # no failed stage, no new run on record


def test_a_where_on_label_id_where_classes_are_named_by_numbers_warns(tmp_path, tiny_model):
    """Star ratings 1/3 have class ids 0/1: ``--where "label_id = 1"`` trained on the class named '3'
    without a word (and "label = '3'" said only "no such column: label")."""
    db = str(tmp_path / "kd.db")
    kd("ingest", str(write_tsv(tmp_path / "stars.tsv", [("1", "很好很好"), ("3", "太差太差"), ("1", "今天很好"), ("3", "今天太差")])), "--db", db)
    result = kd("teach", "--run", "s", "--model", str(tiny_model), "--max-len", "32", "--where", "label_id = 1", "--db", db, ok=False)
    assert result.output.splitlines()[0] == ("warning: --where compares label_id, a class id, not its name: class '1' has id 0, "
                                             "'3' id 1 (kd classes); --label NAME selects a class by name")
    assert "single class ('3')" in result.output  # (it ran as written: the stage refuses one class)
    result = kd("teach", "--run", "t", "--model", str(tiny_model), "--where", "label = '3'", "--db", db, ok=False)
    assert result.output.strip().splitlines() == [
        "Error: --where \"label = '3'\" failed: no such column: label (the columns a --where may use: id, text, text_hash, split, label_id, "
        "orig_label_id, dropped, source, line, parent_id, meta; label_id is a class id, not its name (kd classes lists both): "
        "--label NAME selects a class by name)"]
    assert not Store.open(db).run_exists("t")


def test_an_empty_where_is_refused_before_any_stage(sample_store, tiny_model):
    """``--where "$FILTER"`` with FILTER unset trained on every labeled row, recorded as where ''
    (and one of blanks was an SQL syntax error, 'near ")"', of a parenthesis the user never typed)."""
    db = str(sample_store)
    for where in ("", "  "):
        result = kd("teach", "--run", "w", "--model", str(tiny_model), "--max-len", "32", "--where", where, "--db", db, ok=False)
        assert result.output.strip().splitlines() == [
            "Error: --where is empty: give an SQL condition on the samples, or leave --where out to train on every labeled row"]
        assert not Store.open(db).run_exists("w")


def test_a_detection_refuses_a_teacher_whose_where_left_a_train_class_out(sample_store, tiny_model):
    """A --folds teacher whose --where selected no 'mid' row never learned that class, but its train
    figures count every labeled row: detect took it for learned and flagged every 'mid' label."""
    from kdstore.schema import LabelIssue

    db = str(sample_store)
    kd("ingest", str(write_tsv(sample_store.parent / "mid.tsv", [("mid", f"不好不坏{c}一般般吧") for c in "甲乙丙丁"])), "--db", db)
    kd("teach", "--run", "w", "--model", str(tiny_model), "--epochs", "1", "--max-len", "32", "--folds", "2",
       "--where", "text NOT LIKE '%一般般%'", "--db", db)
    store = Store.open(db)
    assert store.find_stage("w", "teach").config["learned_classes"] == ["pos", "neg"]  # (not 'mid', which its figures count)
    message = ("Error: the teacher of run 'w' learned no sample of class 'mid', which the train labels now hold: its probabilities "
               "would flag every such label; re-run `kd teach` first (its --where \"text NOT LIKE '%一般般%'\" selected no train sample of it)")
    assert kd("labels", "detect", "--run", "w", "--db", db, ok=False).output.strip().splitlines() == [message]
    with store.write_session("stages") as s:  # a teacher from before kd recorded its classes: its --where is read again
        stage = s.get(Stage, store.find_stage("w", "teach").id)
        stage.config = {k: v for k, v in stage.config.items() if k != "learned_classes"}
    assert kd("labels", "detect", "--run", "w", "--db", db, ok=False).output.strip().splitlines() == [message]
    assert _count(sample_store, LabelIssue) == 0 and [s.kind for s in store.stages_of("w")] == ["teach"]
    kd("teach", "--run", "all", "--model", str(tiny_model), "--epochs", "1", "--max-len", "32", "--folds", "2", "--db", db)
    kd("labels", "detect", "--run", "all", "--db", db)  # a teacher of every class still detects


def test_a_where_of_random_rows_is_refused_before_any_stage(sample_store, tiny_model):
    """`--where "random() < 0.5"` trained on one draw of rows, and kd labels detect and kd report, reading
    the teacher's --where again, took another draw for the rows it learned from."""
    db = str(sample_store)
    for where in ("random() < 0.5", "abs(RANDOM ()) % 2 = 0 AND split = 'train'", "hex(randomblob(1)) < '80'"):
        result = kd("teach", "--run", "w", "--model", str(tiny_model), "--epochs", "1", "--where", where, "--db", db, ok=False)
        assert result.output.startswith(f"Error: --where {where!r}: random() selects other rows at each read")
        assert len(result.output.strip().splitlines()) == 1 and not Store.open(db).run_exists("w")
    assert kd("samples", "--where", "random() < 2", "--db", db, "--json").stdout.startswith("[")  # (browsing: a draw is fine)
    assert kd("teach", "--run", "w", "--model", str(tiny_model), "--epochs", "1", "--max-len", "32", "--where", "text <> 'random()'", "--db", db).stdout


def test_a_where_that_closes_kds_parenthesis_is_refused_before_any_stage(sample_store, tiny_model):
    """``a) OR (b`` closed the parenthesis around --where: the split, labeled and dropped filters no
    longer held, and the teacher trained on the test rows (or crashed on the unlabeled ones)."""
    db = str(sample_store)
    for where in ("split = 'train') OR (split = 'test'", "1) OR (1", "1 /* comment",
                  "1 /* /* */ ( */ ) OR (1 = 1 /* /* */ ) */", "text <> $$($$) OR (1 = 1 OR text <> $$)$$"):  # (PostgreSQL's nesting and quoting)
        result = kd("teach", "--run", "w", "--model", str(tiny_model), "--epochs", "1", "--max-len", "32", "--where", where,
                    "--db", db, ok=False)
        assert result.output.startswith(f"Error: --where {where!r}: its parentheses do not pair up"), result.output
        assert len(result.output.strip().splitlines()) == 1
        assert not Store.open(db).run_exists("w")
    store = Store.open(db)  # parentheses inside quotes, names and comments, and balanced ones, are the user's own
    for where in ("(split = 'train') OR (split = 'test')", "source <> 'a)b'", "\"source\" <> ')' -- )", "source <> 'x' /* ) */"):
        rows = store.samples(splits=["train"], labeled=True, where=where)
        assert set(rows.splits) == {"train"} and len(rows) == 60, where


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "/no/such/model-dir"], "cannot load model '/no/such/model-dir': no such directory"),
        (["--model", str(Path(__file__).parent)], "cannot load model"),  # a folder without config.json
        (["--where", "source = 'nothing'"], "no labeled samples for the teacher (split train, --where \"source = 'nothing'\"): loosen the filters; "
                                            "the labeled samples' sources are 'train.tsv' ("),  # what it can select
        (["--label", "pos"], "the train samples that --where/--label select have a single class ('pos')"),  # (not the store's train samples)
        (["--label", "pos", "--folds", "40"], "have a single class ('pos')"),  # (not "too few for --folds 40", then this once lowered)
        (["--where", "label_id = 0"], "the train samples that --where/--label select have a single class ("),
    ],
)
def test_teach_bad_input_is_recorded_as_failed(sample_store, tiny_model, args, message):
    db = str(sample_store)
    args = ["--model", str(tiny_model), "--max-len", "32", *args] if args[0] != "--model" else args  # (the tiny model has 64 positions)
    result = kd("teach", "--run", "bad", *args, "--db", db, ok=False)
    assert message in result.output
    stage = _stage(sample_store, "bad", "teach")
    assert stage.status == "failed" and message in stage.error
    assert _count(sample_store, Logit) == 0


@pytest.mark.parametrize("raised, said", [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB of which "
                            "1.06 GiB is free. Of the allocated memory ... If reserved but unallocated memory is large try setting "
                            "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation."),
     "Error: out of memory on the GPU (CUDA): it tried to allocate 2.00 GiB more: lower --batch-size or --max-len "
     "(--grad-accum N keeps the batch each update learns from)"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to "
                  "allocate 42949672960 bytes. Error code 12 (Cannot allocate memory)"),
     "Error: out of memory on the CPU: it tried to allocate 40.0 GiB more: lower --batch-size or --max-len "
     "(--grad-accum N keeps the batch each update learns from)"),
])
def test_running_out_of_memory_in_training_is_one_line_naming_the_options_that_lower_it(sample_store, tiny_model, monkeypatch, raised, said):
    """A batch too big for the GPU (or the CPU) in a stage: PyTorch's OutOfMemoryError came as a traceback of
    40 frames ending in a paragraph on allocator settings; the stage was recorded failed, as it still is."""
    import kdstore.teacher

    def out_of_memory(*args, **kwargs):
        raise raised

    monkeypatch.setattr(kdstore.teacher, "_fit", out_of_memory)
    result = kd("teach", "--run", "big", "--model", str(tiny_model), "--max-len", "32", "--db", str(sample_store), ok=False)
    assert result.exit_code == 1 and result.output.strip().splitlines() == [said], result.output
    stage = _stage(sample_store, "big", "teach")
    assert stage.status == "failed" and str(raised).split(".")[0] in stage.error


def test_a_lowered_batch_size_lowers_the_rows_the_logits_are_scored_at(sample_store, tiny_model, monkeypatch):
    """Long articles: --batch-size 4 fitted a long --max-len in training, then the dev and every sample's
    logits were scored 256 rows a batch and ran out of memory, and the one-line error said "lower
    --batch-size", which changed nothing there."""
    import kdstore.teacher

    seen = []
    real = kdstore.teacher.score

    def score(*args, batch_size, **kwargs):
        if kwargs.get("bar", True):  # (not the speed figures: 1,000 texts timed in batches of 256, as every model's)
            seen.append(batch_size)
        return real(*args, batch_size=batch_size, **kwargs)

    monkeypatch.setattr(kdstore.teacher, "score", score)
    kd("teach", "--run", "long", "--model", str(tiny_model), "--max-len", "32", "--epochs", "1", "--batch-size", "4",
       "--db", str(sample_store))
    assert seen and max(seen) == 32, seen  # (8 batches' rows; 256 from --batch-size 32 up, as before)


def test_a_label_of_no_class_is_refused_before_any_stage(sample_store, tiny_model):
    """`kd teach --label nope` left a run holding a failed stage; a --where that cannot run is refused
    before one, and so is this now."""
    result = kd("teach", "--run", "bad", "--model", str(tiny_model), "--max-len", "32", "--label", "pos", "--label", "nope",
                "--db", str(sample_store), ok=False)
    assert result.output.startswith("Error: --label 'nope' is not a class of the store (classes: ") and len(result.output.splitlines()) == 1
    assert not Store.open(str(sample_store)).run_exists("bad")


def test_a_max_len_past_the_models_positions_is_refused_before_any_stage(sample_store, tiny_model):
    """Refused once the model was loaded inside the stage, it left a failed stage (and with
    --model pretrain:R a warning about untrained positions first, then the refusal)."""
    result = kd("teach", "--run", "long", "--model", str(tiny_model), "--max-len", "100", "--db", str(sample_store), ok=False)
    assert result.output.strip().splitlines() == [f"Error: --max-len 100 is longer than model {str(tiny_model)!r} can read (64 positions): "
                                                   "use --max-len 64 or less"]
    assert not Store.open(str(sample_store)).run_exists("long")


def test_teach_an_unknown_hub_name_is_one_line_and_a_failed_stage(sample_store):
    """A name that is no local folder goes to the Hugging Face hub; unknown there (here: offline, as
    this machine is), it is one error line and a failed stage. A fresh process, so that the hub
    library reads HF_HUB_OFFLINE at import."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "KD_NO_PROGRESS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", "from commands.cli import main; main()", "teach", "--run", "hub", "--model", "no-such-org/no-such-model",
         "--db", str(sample_store)], capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot load model 'no-such-org/no-such-model'"), result.stderr
    stage = _stage(sample_store, "hub", "teach")
    assert stage.status == "failed" and "no-such-org/no-such-model" in stage.error


def test_a_model_name_that_is_no_folder_in_offline_mode_says_there_is_no_such_folder(sample_store, tmp_path):
    """With the hub switched off (TRANSFORMERS_OFFLINE=1 or HF_HUB_OFFLINE=1), a mistyped folder was answered
    "We couldn't connect to 'https://huggingface.co' ... Check your internet connection or see how to run
    the library in offline mode": no connection was tried, offline mode was on, and no word said that
    there is no such folder. A fresh process: the hub library reads the variable at import."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "TRANSFORMERS_OFFLINE": "1", "KD_NO_PROGRESS": "1"}
    env.pop("HF_HUB_OFFLINE", None)
    result = subprocess.run(
        [sys.executable, "-c", "from commands.cli import main; main()", "teach", "--run", "off", "--model", "models/chinese-robertaa",
         "--db", str(sample_store)], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Error: cannot load model 'models/chinese-robertaa': no such local directory, and no downloaded copy "
        "(TRANSFORMERS_OFFLINE is set: the Hugging Face hub is not asked)"], result.stderr


def test_a_model_needing_its_own_code_is_refused_in_one_line_without_asking(sample_store, tiny_model, tmp_path):
    """A folder whose config.json names a model type transformers does not know, with code of its own
    (``auto_map``, trust_remote_code): transformers asked "Do you wish to run the custom code? [y/N]"
    (twice, waiting 15 s each in a terminal) and ran the folder's Python file on a "y"; kd runs no
    model's own code, and says so in one line."""
    custom = tmp_path / "custom"
    shutil.copytree(tiny_model, custom)
    config = json.loads((custom / "config.json").read_text(encoding="utf-8"))
    config.update(model_type="chinese-custom", auto_map={"AutoConfig": "configuration_custom.CustomConfig",
                                                          "AutoModelForSequenceClassification": "modeling_custom.CustomModel"})
    (custom / "config.json").write_text(json.dumps(config), encoding="utf-8")
    ran = tmp_path / "ran"
    (custom / "configuration_custom.py").write_text(f"open({str(ran)!r}, 'w').close()\n", encoding="utf-8")
    result = kd("teach", "--run", "custom", "--model", str(custom), "--max-len", "32", "--db", str(sample_store), input="y\ny\n", ok=False)
    assert not ran.exists()
    assert "[y/N]" not in result.output
    assert result.output.strip().splitlines() == [
        f"Error: cannot load model {str(custom)!r}: it needs its own code (config.json's auto_map, model type 'chinese-custom'), "
        "which kd does not run: start from a model of a type transformers knows"]


def test_teach_split_and_label_filters_choose_the_training_rows(sample_store, tiny_model):
    db = str(sample_store)
    store = Store.open(db)
    n_train, n_dev = len(store.samples(splits=["train"], labeled=True)), len(store.samples(splits=["dev"], labeled=True))
    out = kd("teach", "--run", "sd", "--model", str(tiny_model), "--split", "train", "--split", "dev", "--label", "pos",
             "--label", "neg", "--split", "dev", "--label", "pos", "--epochs", "2", "--patience", "1", "--max-len", "32", "--db", db, "--json")
    assert "warning: --patience: not used when dev is trained on" in out.stderr  # (it was ignored without a word)
    report = json.loads(out.stdout)
    assert report["metrics"]["all"]["train_samples"] == n_train + n_dev
    assert report["metrics"]["all"]["dev_samples"] == 0
    assert "dev" not in {h["split"] for h in report["history"]}  # dev trained, so nothing judged the epochs
    stage = _stage(sample_store, "sd", "teach")
    assert stage.config["splits"] == ["train", "dev"] and stage.config["labels"] == ["pos", "neg"]  # (typed twice: once)
    assert stage.config["where"] is None
    assert "splits=train,dev" in kd("report", "--run", "sd", "--db", db).stdout  # the text report shows them
    out = kd("teach", "--run", "w", "--model", str(tiny_model), "--where", "id % 2 = 0", "--epochs", "1", "--max-len", "32", "--db", db, "--json")
    even = [i for i in store.samples(splits=["train"], labeled=True).ids if i % 2 == 0]
    assert json.loads(out.stdout)["metrics"]["all"]["train_samples"] == len(even)
    config_line = next(line for line in kd("report", "--run", "w", "--db", db).stdout.splitlines() if line.startswith("  config: "))
    assert "=," not in config_line and ", labels=[]," in config_line  # an empty list is [], not "labels=, score_batch_size=..."
    # an OR stays inside the filter: it cannot reach test or unlabeled rows (nor past a trailing comment)
    train = store.samples(splits=["train"], labeled=True)
    assert store.samples(splits=["train"], labeled=True, where="1 = 1 OR 1 = 1 -- all").ids.tolist() == train.ids.tolist()
    for split in ("unlabeled", "test"):
        bad = kd("teach", "--run", "u", "--model", str(tiny_model), "--split", split, "--db", db, ok=False)
        assert "Invalid value for '--split'" in bad.output


def test_patience_does_not_stop_a_training_in_its_warmup(sample_store, tiny_model, monkeypatch):
    """`kd teach --epochs 25` warms its rate up over 2.5 epochs: with dev scores that fell at first, the
    default --patience 2 stopped it after epoch 3, its rate never at --lr for a whole epoch. A score of an
    epoch still in the warmup counts no more toward --patience; a student's --warmup alike. (The dev
    macro-F1 is made to fall at every epoch: the training itself is real.)"""
    import kdstore.distill
    import kdstore.teacher

    def falling(labels, predicted, **kwargs):
        falling.calls += 1
        return {**classification_metrics(labels, predicted, **kwargs), "macro_f1": 1.0 / falling.calls}

    db = str(sample_store)
    for module in (kdstore.teacher, kdstore.distill):
        falling.calls = 0
        monkeypatch.setattr(module, "classification_metrics", falling)
        if module is kdstore.teacher:
            out = kd("teach", "--run", "w", "--model", str(tiny_model), "--epochs", "10", "--warmup", "0.35", "--patience", "2",
                     "--max-len", "32", "--db", db, "--json")
        else:
            out = kd("distill", "--run", "w", "--epochs", "10", "--warmup", "0.35", "--patience", "2", "--embed-dim", "8",
                     "--num-filters", "4", "--max-len", "32", "--db", db, "--json")
        report = json.loads(out.stdout)
        trained = [h["step"] for h in report["history"] if h["split"] == "train" and h["name"] == "loss"]
        # epochs 1-3 warm up (3.5 of 10 epochs): not counted; 4 and 5 are, and stop it
        assert report["metrics"]["all"]["best_epoch"] == 1 and max(trained) == 5, (module.__name__, report["metrics"]["all"], trained)
        monkeypatch.undo()


def test_patience_without_labeled_dev_samples_is_warned_of(tmp_path, corpus, tiny_model):
    """--patience was ignored without a word on a store without dev samples (or without dev samples
    of the --label classes): nothing judges the epochs, the last one is kept."""
    db = str(tmp_path / "kd.db")
    kd("ingest", str(corpus["train"]), "--db", db)
    out = kd("teach", "--run", "p", "--model", str(tiny_model), "--epochs", "2", "--patience", "1", "--max-len", "32", "--db", db, "--json")
    message = "--patience: not used, the store has no labeled dev samples to judge the epochs: the last epoch is kept"
    assert f"warning: {message}" in out.stderr
    report = json.loads(out.stdout)
    assert any(w.startswith(message) for w in report["warnings"]) and report["metrics"]["all"]["best_epoch"] == 2
    out = kd("distill", "--run", "p", "--epochs", "1", "--eval-every", "2", "--embed-dim", "8", "--num-filters", "4", "--db", db, "--json")
    assert ("warning: --eval-every: the store has no labeled dev samples to score: only the train loss is recorded every 2 steps, "
            "and the last step is kept") in out.stderr
    kept = json.loads(out.stdout)["metrics"]["all"]
    assert kept["best_step"] == kept["steps_per_epoch"]  # (one epoch: its last step)
    write_tsv(tmp_path / "dev.tsv", [("pos", "验证的样本很好")])
    kd("ingest", str(tmp_path / "dev.tsv"), "--split", "dev", "--db", db)
    out = kd("teach", "--run", "q", "--model", str(tiny_model), "--epochs", "1", "--patience", "1", "--max-len", "32", "--db", db)
    assert "--patience" not in out.stderr  # a dev sample judges the epochs
    kd("ingest", str(write_tsv(tmp_path / "t3.tsv", [("mid", "一般一般的东西"), ("mid", "还是一般"), ("pos", "真的很好的")])), "--db", db)
    out = kd("teach", "--run", "r", "--model", str(tiny_model), "--label", "neg", "--label", "mid", "--epochs", "1",
             "--patience", "1", "--max-len", "32", "--db", db)
    assert "warning: --patience: not used, the store has no labeled dev samples of neg/mid to judge" in out.stderr
    out = kd("teach", "--run", "s", "--model", str(tiny_model), "--epochs", "1", "--max-len", "32", "--db", db)
    assert "--patience" not in out.stderr  # not given: nothing to warn of


def test_alpha_0_with_a_hard_weight_says_the_pool_taught_nothing(taught_store):
    """With --hard-weight, alpha weighs the pool's soft loss too: `--alpha 0 --hard-weight 1` on a store
    with a pool (used by default) trained on it at weight 0 without a word."""
    db = str(taught_store)
    common = ["--epochs", "1", "--embed-dim", "8", "--num-filters", "4", "--max-len", "32", "--db", db]
    out = kd("distill", "--run", "r", "--alpha", "0", "--hard-weight", "1", *common, "--json")
    message = ("--alpha 0 with --hard-weight weighs the teacher's loss 0 for every sample: the 30 unlabeled texts taught "
               "the student nothing")
    assert f"warning: {message}" in out.stderr and any(w.startswith(message) for w in json.loads(out.stdout)["warnings"])
    for name, weights in (("grown", ["--alpha", "0", "--alpha-end", "1", "--hard-weight", "1"]), ("tied", ["--alpha", "0"]),
                          ("alone", ["--alpha", "0", "--hard-weight", "1", "--no-unlabeled"])):
        assert "taught the student nothing" not in kd("distill", "--run", "r", *weights, "--name", name, *common).stderr
    # the summary's line of texts cut to --max-len named them as that warning did ("30 unlabeled: 100% cut")
    cut = kd("distill", "--run", "r", "--alpha", "0", "--hard-weight", "1", "--name", "cut", *common[:-4], "--max-len", "4", "--db", db)
    assert "\n  texts it learned from: 100% cut to --max-len 4 tokens" in cut.stdout and "unlabeled: 100%" not in cut.stdout


def test_weights_that_leave_nothing_to_learn_are_refused_before_a_stage(taught_store):
    """`--alpha 0 --hard-weight 0` (no schedule, no intermediate loss) weighs every loss 0: the student
    kept its random weights and the stage was recorded as a success."""
    db = str(taught_store)
    for args in (["--alpha", "0", "--hard-weight", "0"], ["--alpha", "0", "--alpha-end", "0", "--hard-weight", "0", "--hard-weight-end", "0"]):
        bad = kd("distill", "--run", "fresh", "--teacher-run", "r", "--epochs", "1", *args, "--db", db, ok=False)
        assert "weigh every loss 0: the student would learn nothing" in bad.output, (args, bad.output)
        assert len(bad.output.strip().splitlines()) == 1 and not Store.open(db).run_exists("fresh"), (args, bad.output)
    # a weight scheduled up from 0, or intermediate losses alone (TinyBERT's first stage), teach something
    common = ["--epochs", "1", "--max-len", "32", "--db", db]
    kd("distill", "--run", "r", "--alpha", "0", "--alpha-end", "1", "--hard-weight", "0", "--embed-dim", "8", "--num-filters", "4", *common)
    kd("distill", "--run", "r", "--student", "transformer", "--layers", "1", "--alpha", "0", "--hard-weight", "0", "--hidden-mse", "1", *common)


def test_distill_lr_schedule_and_warmup_are_trained_with_and_recorded(taught_store):
    """A student trained at a constant rate only (TextBrewer and kd teach warm up and decay): --lr-schedule
    linear and --warmup F change the steps taken and are recorded; the default (constant, no warmup) trains
    as before; out-of-range values and the early-exit branches (their own rate) are refused."""
    db = str(taught_store)
    common = ["--run", "r", "--epochs", "2", "--embed-dim", "8", "--num-filters", "4", "--max-len", "32", "--db", db]
    kd("distill", *common, "--name", "flat")
    kd("distill", *common, "--name", "flat0", "--lr-schedule", "constant", "--warmup", "0")
    kd("distill", *common, "--name", "sched", "--lr-schedule", "linear", "--warmup", "0.25")
    stages = {s.name: s for s in Store.open(db).stages_of("r")}
    assert stages["flat"].artifact_sha256 == stages["flat0"].artifact_sha256  # the defaults: the steps as they were
    assert stages["sched"].artifact_sha256 != stages["flat"].artifact_sha256
    assert (stages["sched"].config["lr_schedule"], stages["sched"].config["warmup"]) == ("linear", 0.25)
    assert (stages["flat"].config["lr_schedule"], stages["flat"].config["warmup"]) == ("constant", 0.0)
    for args, said in ((["--warmup", "1"], "--warmup must be in [0, 1)"), (["--lr-schedule", "cosine"], "'cosine' is not one of"),
                       (["--student", "early-exit", "--lr-schedule", "linear"], "--lr-schedule: for students, not --student early-exit")):
        bad = kd("distill", *common, "--name", "bad", *args, ok=False)
        assert said in bad.output, (args, bad.output)
    assert "bad" not in {s.name for s in Store.open(db).stages_of("r")}


def test_distill_eval_every_scores_dev_every_n_steps_and_keeps_the_best_step(taught_store):
    """TextBrewer scores dev every N steps: a pool much larger than the labels makes an epoch too long a unit
    for early stopping. --eval-every N records the train loss and dev figures at every Nth step (and the last),
    keeps the best-scoring step (best_step; best_epoch the epoch it fell in), counts patience in those scores,
    and is recorded; scoring at each epoch's last step trains exactly as the per-epoch default."""
    db = str(taught_store)
    common = ["--run", "r", "--epochs", "2", "--batch-size", "16", "--embed-dim", "8", "--num-filters", "4", "--max-len", "32", "--db", db]
    kd("distill", *common, "--name", "epochs")
    store = Store.open(db)
    by_epoch = next(s for s in run_report(store, "r")["stages"] if s["name"] == "epochs")
    rows = by_epoch["metrics"]["all"]["train_samples"] + by_epoch["metrics"]["all"]["pool_samples"]
    per_epoch = -(-rows // 16)
    assert per_epoch > 3
    kd("distill", *common, "--name", "steps", "--eval-every", "3", "--patience", "2")
    kd("distill", *common, "--name", "at-ends", "--eval-every", str(per_epoch))
    report = {s["name"]: s for s in run_report(Store.open(db), "r")["stages"]}
    steps = report["steps"]
    dev = {h["step"]: h["value"] for h in steps["history"] if h["split"] == "dev" and h["name"] == "macro_f1"}
    loss = {h["step"]: h["value"] for h in steps["history"] if h["split"] == "dev" and h["name"] == "loss"}
    train = [h["step"] for h in steps["history"] if h["split"] == "train" and h["name"] == "loss"]
    scored = [s for s in range(1, 2 * per_epoch + 1) if s % 3 == 0 or s == 2 * per_epoch]
    assert sorted(dev) == train == scored[:len(train)] and len(train) >= 3  # patience 2: at least 3 scores
    if len(train) < len(scored):  # stopped early: the last 2 scores no better than the best before them
        assert max(dev[s] for s in train[-2:]) <= max(dev[s] for s in train[:-2])
    final = steps["metrics"]["all"]
    best = max(dev, key=lambda s: (dev[s], -loss[s]))  # macro-F1, a tie broken by the lower dev loss
    assert (final["best_step"], final["steps_per_epoch"]) == (best, per_epoch)
    assert final["best_epoch"] == -(-best // per_epoch)
    assert steps["config"]["eval_every"] == 3 and report["epochs"]["config"]["eval_every"] == 0
    assert "best_step" not in report["epochs"]["metrics"]["all"]
    # dev scored at each epoch's last step: the per-epoch training, step for step
    assert [h["step"] for h in report["at-ends"]["history"] if h["split"] == "dev" and h["name"] == "macro_f1"] == [per_epoch, 2 * per_epoch]
    assert [h["step"] for h in report["epochs"]["history"] if h["split"] == "dev" and h["name"] == "macro_f1"] == [1, 2]
    stages = {s.name: s for s in Store.open(db).stages_of("r")}
    assert stages["at-ends"].artifact_sha256 == stages["epochs"].artifact_sha256
    assert report["at-ends"]["metrics"]["all"]["best_epoch"] == report["epochs"]["metrics"]["all"]["best_epoch"]
    charts = Path(db).parent / "charts"
    kd("report", "--run", "r", "--plot", str(charts), "--db", db)
    assert (charts / "r-steps-learning-curve.png").stat().st_size > 0  # (drawn against steps, the kept one marked)
    # fold students: each its own rows, so its own steps an epoch and step kept
    kd("distill", *common, "--name", "folded", "--eval-every", "2", "--folds", "2")
    folded = next(s for s in run_report(Store.open(db), "r")["stages"] if s["name"] == "folded")["metrics"]["all"]
    for k in (0, 1):
        per = folded[f"fold{k}/steps_per_epoch"]
        assert per < per_epoch and folded[f"fold{k}/best_epoch"] == -(-folded[f"fold{k}/best_step"] // per)
    assert "steps_per_epoch" not in folded
    once = kd("distill", *common, "--name", "once", "--eval-every", "1000")  # longer than the training: one score, nothing compared
    assert f"warning: --eval-every 1000: the training took {2 * per_epoch} steps, so dev was scored once, at the last" in once.stderr
    assert "--eval-every" not in kd("distill", *common, "--name", "twice", "--eval-every", str(2 * per_epoch - 1)).stderr
    bad = kd("distill", *common, "--name", "bad", "--eval-every", "-1", ok=False)
    assert "--eval-every must be a number of training steps" in bad.output
    bad = kd("distill", *common, "--name", "bad", "--student", "early-exit", "--eval-every", "5", ok=False)
    assert "--eval-every: for students, not --student early-exit" in bad.output
    assert "bad" not in {s.name for s in Store.open(db).stages_of("r")}


def test_distill_match_gives_intermediate_losses_their_own_layers_and_weights(taught_store, tmp_path):
    """TextBrewer's intermediate_matches: each loss on its own pair of layers at its own weight. --match
    trains a transformer student so (a narrower one through projections of its own), is recorded as
    spelled, and a layer either model lacks, a bad spelling or a student of another kind is refused
    before a stage, in one line; a config file's `match` list is taken as the typed ones."""
    db = str(taught_store)
    common = ["--run", "r", "--student", "transformer", "--layers", "1", "--epochs", "1", "--max-len", "32", "--db", db]
    kd("distill", *common, "--width", "16", "--match", "hidden_mse:emb:emb", "--match", "attention_kl:0:1:0.5", "--name", "m")
    stage = next(s for s in Store.open(db).stages_of("r") if s.name == "m")
    assert stage.status == "succeeded" and stage.config["matches"] == ["hidden_mse:emb:emb:1", "attention_kl:0:1:0.5"]
    figures = {m.name for m in Store.open(db).metrics(stage.id) if m.split == "all"}
    assert not any(f.startswith("teacher_layer[") for f in figures)  # (nothing copied, nothing matched on the map)
    for args, said in ((["--match", "attention_kl:3:0"], "--match attention_kl:3:0:1: the student has no layer 3: its layers are 0 to 0"),
                       (["--match", "hidden_mse:0:5"], "--match hidden_mse:0:5:1: the teacher has no layer 5: its layers are 0 to 1"),
                       (["--match", "hidden_mse-0-1"], "--match 'hidden_mse-0-1': give KIND:STUDENT_LAYER:TEACHER_LAYER[:WEIGHT]"),
                       (["--match", "hidden_mse:0:1", "--match", "hidden_mse:0:1:2"], "the same loss on the same layers twice"),
                       (["--student", "textcnn", "--match", "hidden_mse:0:1"], "intermediate losses (--match) need --student transformer")):
        bad = kd("distill", *common, "--name", "bad", *args, ok=False)
        errors = [line for line in bad.output.strip().splitlines() if not line.startswith("warning: --layers: not used")]
        assert said in bad.output and len(errors) == 1, (args, bad.output)
    assert "bad" not in {s.name for s in Store.open(db).stages_of("r")}
    config = tmp_path / "kd.toml"
    config.write_text('[distill]\nstudent = "transformer"\nmatch = ["hidden_cos:0:1:2", "nst:0:0"]\n', encoding="utf-8")
    kd("distill", "--run", "r", "--layers", "1", "--epochs", "1", "--max-len", "32", "--config", str(config), "--name", "filed", "--db", db)
    filed = next(s for s in Store.open(db).stages_of("r") if s.name == "filed")
    assert filed.config["matches"] == ["hidden_cos:0:1:2", "nst:0:0:1"]
    config.write_text('[distill]\nstudent = "transformer"\nmatch = "hidden_cos:0:9"\n', encoding="utf-8")
    bad = kd("distill", "--run", "r", "--layers", "1", "--epochs", "1", "--config", str(config), "--name", "bad", "--db", db, ok=False)
    assert f"the teacher has no layer 9: its layers are 0 to 1 (or emb) ({config}: [distill] match = " in bad.output, bad.output


def test_distill_match_weight_is_capped_as_every_loss_weight(taught_store):
    """README: "a loss weight, this or an intermediate loss's, is at most 10^6". A --match weight was not:
    `hidden_mse:0:1:1e30` trained (and 1e39, float32's inf, failed the stage with "training diverged ...
    lower --lr"). Refused before a stage, in one line naming the match, as --hidden-mse 1e30 is."""
    db = str(taught_store)
    common = ["--run", "r", "--student", "transformer", "--layers", "1", "--epochs", "1", "--max-len", "32", "--db", db]
    for weight in ("1e30", "1e39"):
        bad = kd("distill", *common, "--match", f"hidden_mse:0:1:{weight}", "--name", "heavy", ok=False)
        errors = [line for line in bad.output.strip().splitlines() if not line.startswith("warning:")]
        assert len(errors) == 1 and "--match hidden_mse:0:1:" in errors[0] and "must be at most 1e+06" in errors[0], bad.output
    assert "heavy" not in {s.name for s in Store.open(db).stages_of("r")}


def test_grad_accum_takes_the_same_steps_in_pieces(taught_store, tiny_model, tmp_path):
    """--grad-accum K runs each batch as K pieces whose gradients add up before the step (a teacher too large for
    the GPU's memory at its batch size): without dropout, the teacher and the student it trains are those of
    one piece a batch, to float rounding; it is recorded; K of 0 or above the batch size, and a per-sample
    temperature schedule (set against the whole batch) beside it, are refused before a stage."""
    from transformers import AutoConfig

    db = str(taught_store)
    still = tmp_path / "still-bert"  # (dropout draws its masks per forward pass: pieces would draw others)
    shutil.copytree(tiny_model, still)
    config = AutoConfig.from_pretrained(still)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    config.save_pretrained(still)
    teach = ["--model", str(still), "--epochs", "2", "--lr", "2e-3", "--batch-size", "8", "--max-len", "32", "--db", db]
    kd("teach", "--run", "whole", *teach)
    kd("teach", "--run", "pieces", *teach, "--grad-accum", "3")
    store = Store.open(db)
    whole, pieces = store.find_stage("whole", "teach"), store.find_stage("pieces", "teach")
    assert (whole.config["grad_accum"], pieces.config["grad_accum"]) == (1, 3)
    np.testing.assert_allclose(store.read_logits(pieces.id)[1], store.read_logits(whole.id)[1], rtol=0, atol=2e-5)
    distill = ["--run", "r", "--epochs", "2", "--batch-size", "16", "--embed-dim", "8", "--num-filters", "4", "--dropout", "0",
               "--max-len", "32", "--db", db]
    kd("distill", *distill, "--name", "whole")
    kd("distill", *distill, "--name", "pieces", "--grad-accum", "5")
    students = {s.name: s for s in Store.open(db).stages_of("r")}
    assert students["pieces"].config["grad_accum"] == 5
    np.testing.assert_allclose(store.read_logits(students["pieces"].id)[1], store.read_logits(students["whole"].id)[1], rtol=0, atol=2e-5)
    for command, args, said in (("teach", ["--run", "x", *teach, "--grad-accum", "0"], "--grad-accum must be between 1 (off) and --batch-size 8"),
                                ("teach", ["--run", "x", *teach, "--grad-accum", "9"], "got 9"),
                                ("distill", [*distill, "--name", "bad", "--grad-accum", "2", "--temperature-schedule", "flsw"],
                                 "--grad-accum with --temperature-schedule flsw: its temperatures are set against the whole batch's mean"),
                                ("distill", [*distill, "--name", "bad", "--student", "early-exit", "--grad-accum", "2"],
                                 "--grad-accum: for students, not --student early-exit")):
        bad = kd(command, *args, ok=False)
        assert said in bad.output, (args, bad.output)
    assert not Store.open(db).run_exists("x") and "bad" not in {s.name for s in Store.open(db).stages_of("r")}
    # a teacher whose batch did not fit scores in batches near its pieces (256 rows ran out of memory at the logits)
    from kdstore.teacher import TeachConfig, scoring_batch

    assert (TeachConfig(model="m").scoring_batch(), TeachConfig(model="m", batch_size=32, grad_accum=4).scoring_batch()) == (256, 32)
    assert TeachConfig(model="m", batch_size=32, grad_accum=4).scoring_batch(world=4) == 8  # (each process trained on pieces of 2)
    assert (scoring_batch(8, 8), scoring_batch(512, 2), scoring_batch(9, 2)) == (4, 256, 20)


def test_a_transformer_student_starts_from_a_pretrained_checkpoint(taught_store, tiny_model, tmp_path):
    """TextBrewer's students start from small pre-trained models (RBT3, UER's 4-layer Chinese BERT): kd's
    could start only from teacher layers or at random. --student-model starts from a checkpoint of the
    teacher's vocabulary, its own depth and width, recorded as such; its weights are the start (a
    near-zero learning rate keeps them); another vocabulary, a shape typed beside it or another kind of
    student is refused before a stage."""
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    from kdstore.predictor import load_student

    db = str(taught_store)
    small = tmp_path / "small-bert"
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    seeded(BertForMaskedLM, config, seed=3).save_pretrained(small)
    tokenizer.save_pretrained(small)
    common = ["--run", "r", "--student", "transformer", "--epochs", "1", "--max-len", "32", "--db", db]
    out = kd("distill", *common, "--student-model", str(small), "--lr", "1e-12", "--name", "from-small")
    stage = next(s for s in Store.open(db).stages_of("r") if s.name == "from-small")
    assert stage.status == "succeeded", out.output
    assert (stage.config["student_model"], stage.config["layers"], stage.config["width"], stage.config["init_from_teacher"]) == (
        str(small), 1, 16, False)
    # which checkpoint, as `kd teach` records its own: a folder by its absolute path and contents
    from kdstore.runs import sha256_path

    assert (stage.config["student_model_path"], stage.config["student_model_sha256"]) == (str(small.resolve()), sha256_path(small))
    student, _, meta = load_student(Path(stage.artifact_path), "cpu")
    start = BertForMaskedLM.from_pretrained(small).bert
    assert meta["student"]["bert"]["hidden_size"] == 16 and meta["student"]["bert"]["num_hidden_layers"] == 1
    torch.testing.assert_close(student.net.bert.embeddings.word_embeddings.weight, start.embeddings.word_embeddings.weight, atol=1e-6, rtol=0)
    torch.testing.assert_close(student.net.bert.encoder.layer[0].output.dense.weight, start.encoder.layer[0].output.dense.weight, atol=1e-6, rtol=0)
    # matched to the teacher's layers (narrower: projected), every fold from the checkpoint
    kd("distill", *common, "--student-model", str(small), "--hidden-mse", "1", "--attention-kl", "1", "--value-relation", "1",
       "--folds", "2", "--name", "matched")
    matched = next(s for s in Store.open(db).stages_of("r") if s.name == "matched")
    figures = {m.name: m.value for m in Store.open(db).metrics(matched.id) if m.split == "all"}
    assert matched.status == "succeeded" and figures["teacher_layer[0]"] == 1 and matched.config["relation_heads"] == 2
    # another vocabulary: refused before a stage is recorded, naming the option
    other = tmp_path / "other-bert"
    from kdstore.vocab import build_vocab, make_tokenizer

    tokens = build_vocab(["完全不同的字"])
    seeded(BertForMaskedLM, BertConfig(vocab_size=len(tokens), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=32, max_position_embeddings=64)).save_pretrained(other)
    make_tokenizer(tokens).save_pretrained(other)
    for args, said in ((["--student-model", str(other)], f"--student-model {other}: its vocabulary ({len(tokens)} tokens) is not the teacher's"),
                       (["--student-model", str(small), "--layers", "2"], f"--layers: --student-model {small} has its own layers and width"),
                       (["--student-model", str(small), "--init-from-teacher"], "--student-model and --init-from-teacher each give"),
                       (["--student-model", str(tmp_path / "nowhere")], "--student-model"),
                       (["--student-model", str(small), "--student", "textcnn"], "not --student textcnn")):
        bad = kd("distill", *common, "--name", "bad", *args, ok=False)
        errors = [line for line in bad.output.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and said in errors[0], (args, bad.output)
    assert "bad" not in {s.name for s in Store.open(db).stages_of("r")}


def test_a_student_model_is_checked_before_a_stage_and_its_own_depth_takes_a_layer_map(taught_store, tiny_model, tmp_path):
    """--student-model beside what `kd teach --model` refuses in one line (a missing folder, a file, a
    folder without config.json, a kd student, a checkpoint fine-tuned for other classes): transformers'
    own words ("Repo id must use alphanumeric chars", "Should have a `model_type` key") or a failed stage
    were all it said. --max-len past the checkpoint's positions named the teacher's; a --layer-map of
    the checkpoint's depth was refused against the default --layers 4; a config file's student-model
    refused every typed `--student textcnn` (a typed --student resets the file's options of another student)."""
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, BertForSequenceClassification

    db = str(taught_store)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))

    def checkpoint(name, cls=BertForMaskedLM, **extra):
        config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=32, **{"max_position_embeddings": 64, **extra})
        seeded(cls, config, seed=3).save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
        return tmp_path / name

    small = checkpoint("small")
    tuned = checkpoint("tuned", BertForSequenceClassification, num_labels=3, id2label={0: "a", 1: "b", 2: "c"},
                       label2id={"a": 0, "b": 1, "c": 2})
    short = checkpoint("short", max_position_embeddings=16)
    (tmp_path / "empty").mkdir()
    (tmp_path / "a-file").write_text("x", encoding="utf-8")
    common = ["--run", "r", "--student", "transformer", "--epochs", "1", "--max-len", "32", "--db", db]
    kd("distill", "--run", "r", "--student", "textcnn", "--epochs", "1", "--name", "cnn", "--db", db)
    cnn = Path(_stage(Path(db), "r", "cnn").artifact_path)
    for args, said in ((["--student-model", str(tmp_path / "nowhere")], f"--student-model {tmp_path / 'nowhere'}: no such directory"),
                       (["--student-model", str(tmp_path / "a-file")], "it is a file; give the folder that holds config.json"),
                       (["--student-model", str(tmp_path / "empty")], "no config.json in that folder"),
                       (["--student-model", str(cnn)], "is a kd student (kd distill), not a Hugging Face model"),
                       (["--student-model", str(tuned)], f"--student-model {tuned}: it was fine-tuned for classes ['a', 'b', 'c']"),
                       (["--student-model", str(short)], f"--max-len 32 exceeds --student-model {short}'s 16 positions"),
                       (["--student-model", str(small), "--layer-map", "0,1"],
                        f"--layer-map names 2 teacher layers for a student of 1 (--student-model {small}'s layers)")):
        bad = kd("distill", *common, "--name", "bad", *args, ok=False)
        errors = [line for line in bad.output.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and said in errors[0], (args, bad.output)
        assert "Traceback" not in bad.output
    assert "bad" not in {s.name for s in Store.open(db).stages_of("r")}
    kd("distill", *common, "--student-model", str(small), "--layer-map", "0", "--hidden-mse", "1", "--name", "mapped")
    figures = {m.name: m.value for m in Store.open(db).metrics(_stage(Path(db), "r", "mapped").id) if m.split == "all"}
    assert figures["teacher_layer[0]"] == 0
    unused = kd("distill", *common, "--student-model", str(small), "--layer-map", "0", "--name", "unmapped")  # (it was "(--width or --no-init-from-teacher)")
    assert "warning: --layer-map: not used: the student copies no teacher layer (it starts from --student-model) and matches none" in unused.stderr
    (tmp_path / "kd.toml").write_text(f'[distill]\nstudent = "transformer"\nstudent-model = "{small}"\n', encoding="utf-8")
    kd("distill", "--run", "r", "--student", "textcnn", "--epochs", "1", "--name", "typed", "--db", db, "--config", str(tmp_path / "kd.toml"))
    assert _stage(Path(db), "r", "typed").config["student_model"] == ""


def test_class_weight_and_probability_shift_where_their_loss_weighs_0_are_warned_of(taught_store):
    """`--class-weight balanced` weighs the hard loss, `--probability-shift` the labeled rows' soft
    targets: with `--alpha 1` (hard weight 1 - alpha = 0) or `--alpha 0` they changed nothing, in silence."""
    db = str(taught_store)
    common = ["--epochs", "1", "--embed-dim", "8", "--num-filters", "4", "--max-len", "32", "--db", db]
    out = kd("distill", "--run", "r", "--alpha", "1", "--class-weight", "balanced", "--name", "a", *common)
    assert "warning: --class-weight balanced: not used: the hard (gold label) loss weighs 0 throughout" in out.stderr
    out = kd("distill", "--run", "r", "--alpha", "0", "--probability-shift", "--name", "b", *common)
    assert "warning: --probability-shift: not used: the labeled samples' soft loss weighs 0 throughout" in out.stderr
    for name, args in (("c", ["--alpha", "1", "--alpha-end", "0.5", "--class-weight", "balanced"]),
                       ("d", ["--alpha", "1", "--hard-weight", "1", "--class-weight", "balanced"]),
                       ("e", ["--alpha", "0", "--alpha-end", "0.5", "--probability-shift"])):
        assert "not used" not in kd("distill", "--run", "r", *args, "--name", name, *common).stderr, args
    # the baseline (--alpha 0 --no-unlabeled, no --augment) learns no soft loss: a temperature or soft loss typed changes nothing
    out = kd("distill", "--run", "r", "--alpha", "0", "--no-unlabeled", "--temperature", "4", "--soft-loss", "soft_ce", "--name", "f", *common)
    assert ("warning: --temperature, --soft-loss: not used: no soft loss is learned (--alpha 0 with --no-unlabeled and no --augment: "
            "the labels alone)") in out.stderr
    out = kd("distill", "--run", "r", "--alpha", "0", "--temperature", "4", "--name", "g", *common)  # (the pool's soft loss)
    assert "not used" not in out.stderr



def test_probability_shift_under_a_temperature_schedule_without_a_pool_is_warned_of(taught_store):
    """--alpha 0 (tied) weighs the labeled samples' soft loss 0: under flsw/cwsm the shifted targets were let off
    the warning because they move the batch's mean weight, so the pool's temperatures; with no pool nor
    augmented text (--no-unlabeled) there are none to move, and the shift changed nothing, in silence."""
    db = str(taught_store)
    common = ["--epochs", "1", "--embed-dim", "8", "--num-filters", "4", "--max-len", "32", "--db", db]
    said = "warning: --probability-shift: not used: the labeled samples' soft loss weighs 0 throughout"
    out = kd("distill", "--run", "r", "--alpha", "0", "--no-unlabeled", "--probability-shift", "--temperature-schedule", "flsw",
             "--name", "a", *common)
    assert said in out.stderr, out.stderr
    out = kd("distill", "--run", "r", "--alpha", "0", "--probability-shift", "--temperature-schedule", "flsw", "--name", "b", *common)
    assert said not in out.stderr, out.stderr  # (the pool's temperatures move with the shifted targets)

def test_alpha_0_with_hard_weight_names_the_soft_options_unused_and_an_intermediate_loss_teaches_the_pool(taught_store):
    """With --hard-weight, alpha weighs every sample's soft loss: --alpha 0 --hard-weight 1 learns no soft loss,
    pool or not, yet a typed --temperature was taken in silence (the warning asked for --no-unlabeled too). And
    the pool's texts do learn a transformer student's intermediate losses (--hidden-mse reads every row):
    the summary's warning said they 'taught the student nothing'."""
    db = str(taught_store)
    common = ["--epochs", "1", "--max-len", "32", "--db", db]
    cnn = ["--embed-dim", "8", "--num-filters", "4"]
    out = kd("distill", "--run", "r", "--alpha", "0", "--hard-weight", "1", "--temperature", "4", "--name", "a", *cnn, *common)
    assert ("warning: --temperature: not used: no soft loss is learned (--alpha 0 with --hard-weight: alpha weighs every "
            "sample's soft loss, the pool's too)") in out.stderr
    assert "unlabeled texts taught the student nothing" in out.stderr  # (the pool's soft loss weighs 0: true here)
    out = kd("distill", "--run", "r", "--alpha", "0", "--alpha-end", "0.5", "--hard-weight", "1", "--temperature", "4", "--name", "b",
             *cnn, *common)
    assert "not used" not in out.stderr and "taught the student nothing" not in out.stderr
    out = kd("distill", "--run", "r", "--student", "transformer", "--layers", "1", "--alpha", "0", "--hard-weight", "1",
             "--hidden-mse", "1", "--name", "c", *common)
    assert "taught the student nothing" not in out.stderr


def test_a_where_with_a_colon_in_a_literal_is_run_as_written(tmp_path):
    """SQLAlchemy took ":x" in a --where literal (a text with " :", PostgreSQL's '[[:digit:]]') for a
    bind parameter and refused valid SQL ("A value is required for bind parameter")."""
    db = str(tmp_path / "kd.db")
    kd("ingest", str(write_tsv(tmp_path / "t.tsv", [("pos", "价格 :便宜"), ("neg", "太差了")])), "--db", db)
    store = Store.open(db)
    assert store.samples(where="text LIKE '% :便宜'").texts == ["价格 :便宜"]
    assert store.samples(where="text NOT LIKE '% :x%' AND text LIKE '%:%'").texts == ["价格 :便宜"]
    assert len(store.samples(where="id = 1 OR ':' = ':'")) == 2


def test_teach_layer_decay_scales_each_layers_learning_rate(sample_store, tiny_model):
    from kdstore.teacher import TeachConfig, _param_groups, load_classifier

    _, model = load_classifier(str(tiny_model), ["pos", "neg"])
    layers = model.config.num_hidden_layers
    lr_of = {id(p): g["lr"] for g in _param_groups(model, TeachConfig(model="m", lr=1e-3, layer_decay=0.5)) for p in g["params"]}
    named = dict(model.named_parameters())
    assert len(lr_of) == len(named)  # every parameter in exactly one group
    assert lr_of[id(named["classifier.weight"])] == pytest.approx(1e-3)
    assert lr_of[id(named[f"bert.encoder.layer.{layers - 1}.output.dense.weight"])] == pytest.approx(1e-3 * 0.5)
    assert lr_of[id(named["bert.embeddings.word_embeddings.weight"])] == pytest.approx(1e-3 * 0.5 ** (layers + 1))
    db = str(sample_store)
    out = kd("teach", "--run", "ld", "--model", str(tiny_model), "--layer-decay", "0.8", "--epochs", "1", "--max-len", "32", "--db", db, "--json")
    assert json.loads(out.stdout)["config"]["layer_decay"] == 0.8
    bad = kd("teach", "--run", "ld2", "--model", str(tiny_model), "--layer-decay", "1.5", "--db", db, ok=False)
    assert "--layer-decay must be in (0, 1], got 1.5" in bad.output


def test_layer_decay_refuses_an_encoder_decoder_model_in_one_line():
    """T5 numbers blocks, BART's encoder and decoder layers share numbers and both keep their token
    embeddings in ``shared`` (which would get the head's rate): no depth order, so no silent decay."""
    from transformers import BartConfig, BartForSequenceClassification

    from kdstore.errors import KdError
    from kdstore.teacher import TeachConfig, _param_groups

    model = BartForSequenceClassification(BartConfig(
        vocab_size=40, d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=32, num_labels=2))
    with pytest.raises(KdError, match="'bart' is an encoder-decoder model"):
        _param_groups(model, TeachConfig(model="m", layer_decay=0.8))
    assert {g["lr"] for g in _param_groups(model, TeachConfig(model="m", lr=1e-3))} == {1e-3}  # without decay it trains


def test_layer_decay_of_an_encoder_decoder_folder_is_refused_before_any_stage(sample_store, tiny_model, tmp_path):
    """`kd teach --model ./bart --layer-decay 0.8`: refused only once the stage had loaded the model, it left a
    new run holding a failed stage; its config.json says it is an encoder-decoder, as a --max-len too long is read there."""
    from transformers import BartConfig, BartForSequenceClassification

    bart = tmp_path / "bart"
    shutil.copytree(tiny_model, bart)
    for weights in bart.glob("*.safetensors"):
        weights.unlink()
    vocab_size = json.loads((bart / "config.json").read_text(encoding="utf-8"))["vocab_size"]
    BartForSequenceClassification(BartConfig(
        vocab_size=vocab_size, d_model=16, encoder_layers=2,
        decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        max_position_embeddings=64, pad_token_id=0, num_labels=2)).save_pretrained(bart)
    result = kd("teach", "--run", "ed", "--model", str(bart), "--layer-decay", "0.8", "--epochs", "1", "--max-len", "32",
                "--db", str(sample_store), ok=False)
    assert result.output.strip().splitlines() == [
        "Error: --layer-decay: 'bart' is an encoder-decoder model, whose layers it cannot order; leave --layer-decay out"]
    assert not Store.open(str(sample_store)).run_exists("ed")  # no failed stage, no new run on record


def test_normalization_weights_of_any_name_have_no_weight_decay():
    """GPT-2's ``ln_1``/``ln_f`` and Llama's RMSNorm weights are not named LayerNorm: they were decayed."""
    from transformers import GPT2Config, GPT2ForSequenceClassification, LlamaConfig, LlamaForSequenceClassification

    from kdstore.teacher import TeachConfig, _param_groups

    for model in (GPT2ForSequenceClassification(GPT2Config(vocab_size=40, n_embd=16, n_layer=2, n_head=2, n_positions=32)),
                  LlamaForSequenceClassification(LlamaConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                                             intermediate_size=32, max_position_embeddings=32))):
        decay_of = {id(p): g["weight_decay"] for g in _param_groups(model, TeachConfig(model="m", weight_decay=0.01)) for p in g["params"]}
        named = dict(model.named_parameters())
        norms = [n for n in named if "ln_" in n or "norm" in n]
        assert norms and all(decay_of[id(named[n])] == 0.0 for n in norms)
        assert decay_of[id(named["score.weight"])] == 0.01


def test_a_decoder_only_teacher_without_a_pad_id_classifies_padded_batches(tmp_path, corpus):
    """GPT-2 and Llama configurations name no pad id, and their classifier, which reads each row's
    last token that is not padding, refused any batch of more than one text: kd gives it the
    tokenizer's, and a padded row scores as it does alone."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from kdstore.teacher import load_classifier
    from kdstore.vocab import build_vocab, make_tokenizer

    tokens = build_vocab([line.split("\t")[-1] for line in corpus["train"].read_text(encoding="utf-8").splitlines()])
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokens), n_embd=16, n_layer=2, n_head=2, n_positions=32)).save_pretrained(tmp_path / "gpt2")
    make_tokenizer(tokens).save_pretrained(tmp_path / "gpt2")
    tok, model = load_classifier(str(tmp_path / "gpt2"), ["pos", "neg"])
    model.eval()
    assert model.config.pad_token_id == tok.pad_token_id is not None
    short, long = tok(["很好"])["input_ids"][0], tok(["今天太差了"])["input_ids"][0]
    batch = torch.tensor([short + [tok.pad_token_id] * (len(long) - len(short)), long])
    mask = (batch != tok.pad_token_id).long()
    with torch.no_grad():
        both = model(input_ids=batch, attention_mask=mask).logits
        alone = model(input_ids=torch.tensor([short])).logits
    assert both[0].tolist() == pytest.approx(alone[0].tolist(), abs=1e-5)


def test_a_decoder_only_teacher_pads_with_the_pad_id_its_config_names(tmp_path, corpus):
    """A config.json naming a pad id other than the tokenizer's (Llama's 0, a tokenizer padding with
    its end token): the classifier took the padding for text and read a short text's last token off
    the padding, so its logits in a batch differed from its logits alone."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from kdstore.teacher import load_classifier, score
    from kdstore.vocab import build_vocab, make_tokenizer

    tokens = build_vocab([line.split("\t")[-1] for line in corpus["train"].read_text(encoding="utf-8").splitlines()])
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokens), n_embd=16, n_layer=2, n_head=2, n_positions=32, pad_token_id=7)).save_pretrained(tmp_path / "gpt2")
    make_tokenizer(tokens).save_pretrained(tmp_path / "gpt2")
    tok, model = load_classifier(str(tmp_path / "gpt2"), ["pos", "neg"])
    assert tok.pad_token_id == model.config.pad_token_id == 7
    texts, cpu = ["很好", "今天太差了很好今天"], torch.device("cpu")
    both = score(model, tok, texts, max_len=32, batch_size=8, device=cpu, bar=False)
    alone = np.stack([score(model, tok, [t], max_len=32, batch_size=8, device=cpu, bar=False)[0] for t in texts])
    assert both == pytest.approx(alone, abs=1e-5)


def test_a_half_precision_checkpoint_trains_in_float32(tmp_path, tiny_model):
    """transformers 5 loads a checkpoint in its own dtype; a float16 one (as many are published)
    would have AdamW update half-precision weights: kd loads every network it trains or matches in float32."""
    import shutil

    from transformers import AutoModelForMaskedLM

    from kdstore.teacher import load_classifier

    half = tmp_path / "half"
    shutil.copytree(tiny_model, half)
    AutoModelForMaskedLM.from_pretrained(tiny_model).half().save_pretrained(half)
    assert AutoModelForMaskedLM.from_pretrained(half).dtype == torch.float16  # what kd must not keep
    _, model = load_classifier(str(half), ["pos", "neg"])
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_an_artifact_folder_kd_cannot_write_fails_the_stage_before_training(sample_store, tiny_model, tmp_path, monkeypatch):
    """Found when the stage starts, not when the trained model is saved (hours later on a real run)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")
    monkeypatch.setenv("KD_ARTIFACTS", str(blocker / "arts"))
    result = kd("teach", "--run", "ro", "--model", str(tiny_model), "--epochs", "1", "--max-len", "32", "--db", str(sample_store), ok=False)
    assert result.output.startswith(f"Error: {blocker}") and len(result.output.strip().splitlines()) == 1
    stage = _stage(sample_store, "ro", "teach")
    assert stage.status == "failed" and not Store.open(str(sample_store)).metrics(stage.id, final=False)  # no epoch ran


def test_a_stage_folder_holding_another_stores_files_is_refused_and_kept(sample_store, tiny_model, tmp_path, monkeypatch):
    """Two stores sharing KD_ARTIFACTS (or a store deleted and made again): a new stage of the same
    run and name neither writes into the other's model folder nor, failing, deletes it."""
    monkeypatch.setenv("KD_ARTIFACTS", str(tmp_path / "shared"))
    folder = tmp_path / "shared" / "r" / "teach" / "model"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}", encoding="utf-8")  # another store's teacher
    for bad in ([], ["--label", "pos"]):  # (the second would fail in the stage: a single class)
        result = kd("teach", "--run", "r", "--model", str(tiny_model), "--epochs", "1", "--max-len", "32", *bad, "--db", str(sample_store), ok=False)
        assert result.output.startswith(f"Error: {folder.parent} already holds files no stage of this store made")
        assert len(result.output.strip().splitlines()) == 1
        assert (folder / "config.json").read_text(encoding="utf-8") == "{}"
        assert not Store.open(str(sample_store)).stages_of("r")  # nothing recorded


def test_base_models_of_other_heads_and_tokenizers_without_padding_load_as_classifiers(tmp_path, tiny_model):
    """A base model whose config says regression (or multi-label) still trains one class a text
    with cross entropy; a tokenizer without a pad token pads with its unknown token."""
    import shutil

    from transformers import AutoConfig, AutoTokenizer

    from kdstore.teacher import load_classifier

    odd = tmp_path / "odd"
    shutil.copytree(tiny_model, odd)
    config = AutoConfig.from_pretrained(odd)
    config.problem_type, config.num_labels = "regression", 1
    config.save_pretrained(odd)
    tokenizer = AutoTokenizer.from_pretrained(odd)
    tokenizer.pad_token = None
    tokenizer.save_pretrained(odd)
    assert AutoTokenizer.from_pretrained(odd).pad_token_id is None
    tok, model = load_classifier(str(odd), ["pos", "neg"])
    # no pad token: it pads with the one its config.json names as the model's padding (else its unknown token)
    assert tok.pad_token == "[PAD]" and tok.pad_token_id == model.config.pad_token_id == 0
    assert model.config.problem_type == "single_label_classification"
    out = model(input_ids=torch.tensor([[2, 5, 3], [2, 6, 3]]), labels=torch.tensor([0, 1]))
    assert out.loss.ndim == 0 and out.logits.shape == (2, 2)


def test_a_multi_label_checkpoint_is_taught_single_label_and_says_so(sample_store, tiny_model, tmp_path):
    """A bring-your-own BertConfig checkpoint saying problem_type multi_label_classification was
    fine-tuned as kd's single-label classifier without a word that its config was overridden."""
    import shutil

    from transformers import AutoConfig

    multi = tmp_path / "multi"
    shutil.copytree(tiny_model, multi)
    config = AutoConfig.from_pretrained(multi)
    config.problem_type = "multi_label_classification"
    config.save_pretrained(multi)
    result = kd("teach", "--run", "m", "--model", str(multi), "--epochs", "1", "--max-len", "16", "--db", str(sample_store), "--json")
    warning = (f"--model {multi}: its config.json says problem_type 'multi_label_classification'; kd trains it as "
               "single-label classification (one class a text, cross-entropy), and saves it so")
    assert _warnings(result) == [warning] and f"warning: {warning}" in result.stderr
    saved = json.loads((Path(_stage(sample_store, "m", "teach").artifact_path) / "config.json").read_text(encoding="utf-8"))
    assert saved["problem_type"] == "single_label_classification"
    again = kd("teach", "--run", "m2", "--model", "teach:m", "--epochs", "1", "--max-len", "16", "--db", str(sample_store), "--json")
    assert _warnings(again) == []  # kd's own teacher is single-label


def test_teach_on_a_split_without_labeled_samples_names_the_ingest_that_adds_them(tmp_path, tiny_model):
    db = str(tmp_path / "nodev.db")
    write_tsv(tmp_path / "train.tsv", [("pos", "很好很好"), ("neg", "太差太差")])
    kd("ingest", str(tmp_path / "train.tsv"), "--db", db)
    result = kd("teach", "--model", str(tiny_model), "--max-len", "32", "--split", "dev", "--db", db, ok=False)
    assert "no labeled samples for the teacher (split dev): ingest some with `kd ingest FILE --split dev`" in result.output  # (FILE alone: train)


def test_teach_refuses_a_single_class(tmp_path, tiny_model):
    db = str(tmp_path / "one.db")
    write_tsv(tmp_path / "one.tsv", [("pos", "很好很好"), ("pos", "非常很好")])
    kd("ingest", str(tmp_path / "one.tsv"), "--db", db)
    result = kd("teach", "--model", str(tiny_model), "--max-len", "32", "--db", db, ok=False)
    assert "single class" in result.output
    assert Store.open(db).stages_of("default")[0].status == "failed"


def _trained_positions(stage) -> int | None:
    from transformers import AutoConfig

    from kdstore.pretrain import trained_positions

    return trained_positions(AutoConfig.from_pretrained(Path(stage.artifact_path)))


def test_a_jieba_cache_warning_is_in_pretrains_json_warnings(sample_store, tmp_path):
    """jieba's "could not write its dictionary cache" (whole-word masking) was said on standard error
    only: a script reading --json's warnings did not see it. A fresh process, as jieba loads its
    dictionary once per process."""
    import os
    import subprocess
    import sys

    (tmp_path / "jieba.cache").mkdir()  # jieba's rename of its copy onto it fails, as onto another user's file
    env = {**os.environ, "TMPDIR": str(tmp_path), "KD_NO_PROGRESS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", "from commands.cli import main; main()", "pretrain", "--run", "pj", "--layers", "1", "--hidden", "32",
         "--heads", "2", "--steps", "1", "--batch-size", "8", "--min-count", "1", "--db", str(sample_store), "--json"],
        capture_output=True, text=True, env=env, timeout=300, check=True)
    [said] = [w for w in json.loads(result.stdout)["warnings"] if "jieba" in w]
    assert said.startswith(f"jieba could not write its dictionary cache {tmp_path / 'jieba.cache'} (") and "TMPDIR" in said
    assert result.stderr.count("jieba could not write") == 1  # (said once on standard error, as before)


def test_pretrain_counts_the_unk_tokens_and_warns_when_many(sample_store):
    """A --min-count that left many characters out of the vocabulary said nothing: their tokens are [UNK],
    which the model learns nothing of (nor the teacher fine-tuned from it)."""
    from transformers import AutoTokenizer

    db = str(sample_store)
    rare_chars = "".join(chr(0x9F00 + i) for i in range(60))  # (each once: the synthetic texts' few characters all recur)
    (sample_store.parent / "rare.txt").write_text("".join(rare_chars[i:i + 12] + "\n" for i in range(0, 60, 12)), encoding="utf-8")
    kd("ingest", str(sample_store.parent / "rare.txt"), "--split", "unlabeled", "--db", db)
    common = ("--layers", "1", "--hidden", "32", "--heads", "2", "--steps", "1", "--batch-size", "16")
    rare = kd("pretrain", "--run", "rare", *common, "--min-count", "4", "--db", db)
    stage = _stage(sample_store, "rare", "pretrain")
    tokenizer = AutoTokenizer.from_pretrained(stage.artifact_path)
    ids = [i for t in Store.open(db).samples(include_dropped=True).texts for i in tokenizer(t, add_special_tokens=False)["input_ids"]]
    share = ids.count(tokenizer.unk_token_id) / len(ids)  # (every store text, as kd pretrain reads them by default)
    figures = {m.name: m.value for m in Store.open(db).metrics(stage.id)}
    assert share > 0.02 and figures["unk_share"] == pytest.approx(share)
    assert f"warning: {share:.1%} of the text tokens are [UNK], characters seen fewer than --min-count 4 times" in rare.stderr
    # the summary gives the steps and the loss recorded, beside the frequency bar (kd report alone said them)
    assert (f"  1 step, masked-LM loss {figures['mlm_loss']:.3f} (by each character's frequency: {figures['frequency_loss']:.3f})\n"
            in rare.stdout), rare.stdout
    kd("pretrain", "--run", "all", *common, "--min-count", "1", "--db", db)
    assert {m.name: m.value for m in Store.open(db).metrics(_stage(sample_store, "all", "pretrain").id)}["unk_share"] == 0.0


def test_teach_reads_as_many_tokens_as_the_run_its_model_comes_from(sample_store):
    """A model pre-trained on 40 tokens was fine-tuned at the default 128 (positions 41-128 untrained, said in a
    warning), one pre-trained on 256 on the first 128 of each text: the default --max-len is the source run's."""
    db = str(sample_store)
    kd("pretrain", "--run", "q", "--layers", "1", "--hidden", "32", "--heads", "2", "--steps", "2", "--max-len", "40",
       "--batch-size", "16", "--min-count", "1", "--db", db)
    taught = kd("teach", "--run", "q", "--model", "pretrain:q", "--epochs", "1", "--db", db)
    assert _stage(sample_store, "q", "teach").config["max_len"] == 40 and "start untrained" not in taught.stderr
    kd("teach", "--run", "q2", "--model", "teach:q", "--epochs", "1", "--db", db)  # fine-tuned further: the teacher's
    assert _stage(sample_store, "q2", "teach").config["max_len"] == 40
    kd("teach", "--run", "q3", "--model", "pretrain:q", "--epochs", "1", "--max-len", "32", "--db", db)  # typed: as typed
    assert _stage(sample_store, "q3", "teach").config["max_len"] == 32


def test_pretrain_produces_a_model_teach_loads(sample_store):
    db = str(sample_store)
    kd("pretrain", "--run", "p", "--layers", "1", "--hidden", "32", "--heads", "2", "--steps", "3",
       "--batch-size", "16", "--min-count", "1", "--db", db)
    stage = _stage(sample_store, "p", "pretrain")
    assert stage.status == "succeeded" and (Path(stage.artifact_path, "vocab.txt").exists() or Path(stage.artifact_path, "tokenizer.json").exists())
    assert (stage.config["heads"], stage.config["intermediate"]) == (2, 128)  # the sizes built (--intermediate: 4 x hidden), not 0
    # kd predict on the run before its teacher: the teacher to make is of its own pre-trained model, not a MODEL to find
    early = kd("predict", "--run", "p", "--db", db, input="好\n", ok=False)
    assert "`kd teach --run p --model pretrain:p` makes one" in early.output
    taught = kd("teach", "--run", "p", "--model", "pretrain:p", "--epochs", "1", "--max-len", "32", "--db", db)
    assert _stage(sample_store, "p", "teach").status == "succeeded" and "pre-trained on" not in taught.stderr
    for kind in ("pretrain", "teach"):  # what a rerun needs beside the options: kd's version, the libraries', the device
        env = _stage(sample_store, "p", kind).config["environment"]
        assert env["kd"] and env["torch"] == torch.__version__ and env["transformers"] and env["device"] == "cpu", env
        assert env["cleanlab"] == metadata.version("cleanlab") and env["jieba"] == metadata.version("jieba"), env
    # positions past the pre-training's --max-len (128) were never trained: said, and trained on regardless
    longer = kd("teach", "--run", "p2", "--model", "pretrain:p", "--epochs", "1", "--max-len", "160", "--db", db)
    assert "warning: --max-len 160 is longer than the 128 tokens run 'p' was pre-trained on: positions 129-160 start untrained" in longer.stderr
    assert _stage(sample_store, "p2", "teach").status == "succeeded"
    # a transformer student copied from that teacher takes its position vectors: said too (not without the copy)
    student = kd("distill", "--run", "p", "--student", "transformer", "--layers", "1", "--epochs", "1", "--max-len", "160",
                 "--no-unlabeled", "--db", db)
    assert ("warning: --max-len 160 is longer than the 128 tokens the teacher was trained on: the student copies its position vectors, "
            "and positions 129-160 start untrained") in student.stderr
    blank = kd("distill", "--run", "p", "--student", "transformer", "--layers", "1", "--epochs", "1", "--max-len", "160",
               "--no-init-from-teacher", "--no-unlabeled", "--name", "blank", "--db", db)
    assert "start untrained" not in blank.stderr and _stage(sample_store, "p", "blank").status == "succeeded"
    # the folder itself says so in its config.json (given by path, not pretrain:p)
    by_path = kd("teach", "--run", "p3", "--model", stage.artifact_path, "--epochs", "1", "--max-len", "160", "--db", db)
    assert f"warning: --max-len 160 is longer than the 128 tokens model {stage.artifact_path!r} was trained on: positions 129-160 start untrained" in by_path.stderr
    # p2's texts are short: fine-tuning at --max-len 160 trained no position past 128 (its config.json said 160)
    assert _trained_positions(_stage(sample_store, "p2", "teach")) == 128
    # a teacher fine-tuned on texts reaching 160 tokens says 160: fine-tuning it further at 160 is no warning
    write_tsv(sample_store.parent / "long.tsv", [("pos", "很好" * 100)])
    kd("ingest", str(sample_store.parent / "long.tsv"), "--db", db)
    kd("teach", "--run", "p5", "--model", "pretrain:p", "--epochs", "1", "--max-len", "160", "--db", db)
    assert _trained_positions(_stage(sample_store, "p5", "teach")) == 160
    further = kd("teach", "--run", "p4", "--model", "teach:p5", "--epochs", "1", "--max-len", "160", "--db", db)
    assert "start untrained" not in further.stderr and _stage(sample_store, "p4", "teach").status == "succeeded"
    from transformers import AutoConfig, AutoTokenizer  # plain transformers truncates to the model's positions

    assert AutoTokenizer.from_pretrained(stage.artifact_path).model_max_length == AutoConfig.from_pretrained(stage.artifact_path).max_position_embeddings
    # its config.json edited by hand: pretrain:p is no longer the model the run recorded (fine-tuned without a word)
    config = Path(stage.artifact_path, "config.json")
    kept = config.read_text(encoding="utf-8")
    config.write_text(kept.replace('"hidden_dropout_prob": 0.1', '"hidden_dropout_prob": 0.3'), encoding="utf-8")
    assert config.read_text(encoding="utf-8") != kept
    edited = kd("teach", "--run", "p6", "--model", "pretrain:p", "--epochs", "1", "--max-len", "32", "--db", db, ok=False)
    assert "Error: the model of stage 'pretrain' in" in edited.output and "is not the one the run recorded" in edited.output
    assert not Store.open(db).run_exists("p6")


def test_teach_defaults_lr_by_model_kd_pretrained_or_not(sample_store, tiny_model, tmp_path):
    """Without --lr, a kd-pretrained model (pretrain:RUN, its folder, or a teacher fine-tuned from it:
    config.json's kd_trained_positions) trains at 3e-4, as the quick start and the majority-class warning
    say it wants; at 5e-5, a BERT's default, the quick start's teacher was far weaker. Any other model
    gets 5e-5; a typed or config-file --lr wins. The stage config records the lr and which default applied."""
    db = str(sample_store)
    kd("pretrain", "--run", "p", "--layers", "1", "--hidden", "32", "--heads", "2", "--steps", "1",
       "--batch-size", "16", "--min-count", "1", "--db", db)
    folder = _stage(sample_store, "p", "pretrain").artifact_path
    teach = ("--epochs", "1", "--max-len", "16", "--db", db)

    def used(run: str, *args: str) -> tuple[float, str | None]:
        out = json.loads(kd("teach", "--run", run, *args, *teach, "--json").stdout)
        assert out["config"]["lr"] == _stage(sample_store, run, "teach").config["lr"]
        return out["config"]["lr"], out["config"]["lr_default"]

    assert used("a", "--model", "pretrain:p") == (3e-4, "kd-pretrained model")
    assert used("b", "--model", folder) == (3e-4, "kd-pretrained model")  # (its config.json says so)
    assert used("c", "--model", "teach:a") == (3e-4, "kd-pretrained model")  # a teacher fine-tuned from one
    assert used("d", "--model", str(tiny_model)) == (5e-5, "other model")  # a hub-style BERT folder
    assert used("e", "--model", "pretrain:p", "--lr", "1e-4") == (1e-4, None)  # typed: it wins
    assert used("f", "--model", str(tiny_model), "--lr", "3e-4") == (3e-4, None)
    (tmp_path / "kd.toml").write_text("[teach]\nlr = 2e-5\n")  # a config file's: it wins too
    assert used("g", "--model", "pretrain:p", "--config", str(tmp_path / "kd.toml")) == (2e-5, None)
    report = kd("report", "--run", "a", "--db", db).stdout
    assert "lr=0.0003" in report and "lr_default=kd-pretrained model" in report
    helped = kd("teach", "--help").stdout
    assert "3e-4 for a kd-pretrained model" in " ".join(helped.split())


def test_teach_from_an_older_kds_teacher_of_a_pretrain_run_takes_the_kd_pretrained_lr(sample_store):
    """A teacher an older kd fine-tuned from `pretrain:RUN` has no kd_trained_positions in its config.json
    and no kd_pretrained in its stage config, only its `model`: `--model teach:THAT` trained at a BERT's
    5e-5, at which the quick start's teacher learned next to nothing, not at the 3e-4 its own stage says."""
    from sqlalchemy import update

    from kdstore.runs import sha256_path

    db = str(sample_store)
    kd("pretrain", "--run", "p", "--layers", "1", "--hidden", "32", "--heads", "2", "--steps", "1",
       "--batch-size", "16", "--min-count", "1", "--db", db)
    kd("teach", "--run", "a", "--model", "pretrain:p", "--epochs", "1", "--max-len", "16", "--db", db)
    old = _stage(sample_store, "a", "teach")  # made as an older kd made it: neither record of a kd-pretrained model
    config = Path(old.artifact_path, "config.json")
    written = json.loads(config.read_text(encoding="utf-8"))
    written.pop("kd_trained_positions")
    config.write_text(json.dumps(written), encoding="utf-8")
    recorded = {k: v for k, v in old.config.items() if k not in ("kd_pretrained", "lr_default")}
    store = Store.open(db, create=False)
    with store.engine.begin() as conn:
        conn.execute(update(Stage).where(Stage.id == old.id).values(config=recorded, artifact_sha256=sha256_path(Path(old.artifact_path))))
    out = json.loads(kd("teach", "--run", "b", "--model", "teach:a", "--epochs", "1", "--db", db, "--json").stdout)
    assert (out["config"]["lr"], out["config"]["lr_default"], out["config"]["kd_pretrained"]) == (3e-4, "kd-pretrained model", True)


def test_a_teacher_from_pretrain_time_records_the_run_it_started_from(sample_store):
    """`--model 'pretrain:${time}'` (a config file's `model = "pretrain:${time}"` beside `run = "${time}"`) was
    recorded as typed: a rerun another day named another run, and kd runs delete and kd report, which
    cannot know which day it meant, never said that the teacher's checkpoint was deleted or replaced."""
    import datetime as dt

    db, today = str(sample_store), dt.date.today().strftime("%Y%m%d")
    kd("pretrain", "--run", "${time}", "--layers", "1", "--hidden", "32", "--heads", "2", "--steps", "1",
       "--batch-size", "16", "--min-count", "1", "--db", db)
    kd("teach", "--run", "t", "--model", "pretrain:${time}", "--epochs", "1", "--max-len", "16", "--db", db)
    assert _stage(sample_store, "t", "teach").config["model"] == f"pretrain:{today}"
    dry = kd("runs", "delete", "--run", today, "--dry-run", "--db", db).stderr
    assert f"warning: t/teach started from the model of {today}/pretrain, which this would delete" in dry


def test_a_full_disk_while_the_model_is_saved_is_one_line_and_a_failed_stage(sample_store, tmp_path, monkeypatch):
    """safetensors' (and torch's) own write errors were a traceback; now one line naming the folder,
    the stage failed and its half-written folder gone, and the same command works once there is room."""
    from safetensors import SafetensorError
    from transformers import PreTrainedModel

    monkeypatch.setenv("KD_ARTIFACTS", str(tmp_path / "arts"))
    real = PreTrainedModel.save_pretrained

    def full(self, out, *a, **k):
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "model.safetensors").write_bytes(b"half")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    args = ("pretrain", "--run", "p", "--layers", "1", "--hidden", "32", "--heads", "2", "--steps", "2",
            "--batch-size", "16", "--min-count", "1", "--db", str(sample_store))
    monkeypatch.setattr(PreTrainedModel, "save_pretrained", full)
    result = kd(*args, ok=False)
    folder = tmp_path / "arts" / "p" / "pretrain"
    assert result.output == f"Error: {folder / 'model'}: cannot save the model: No space left on device\n"
    stage = _stage(sample_store, "p", "pretrain")
    assert stage.status == "failed" and "No space left on device" in stage.error and not folder.exists()
    monkeypatch.setattr(PreTrainedModel, "save_pretrained", real)
    kd(*args)
    assert _stage(sample_store, "p", "pretrain").status == "succeeded"


def test_saving_model_names_the_os_reason_under_torchs_own_error(tmp_path):
    """``torch.save`` reports a full disk as ``RuntimeError: [enforce fail ...] unexpected pos``: the
    OS error under it, when there is one, is what the line says."""
    from kdstore.errors import KdError
    from kdstore.torchutil import saving_model

    with pytest.raises(KdError, match=r": cannot save the model: No space left on device$"):
        with saving_model(tmp_path):
            try:
                raise OSError(28, "No space left on device")
            except OSError as exc:
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 21056 vs 21008") from exc
    with pytest.raises(KdError, match=r"cannot save the model: unexpected pos 1 vs 2$"):
        with saving_model(tmp_path):
            raise RuntimeError("unexpected pos 1 vs 2\nmore")
    with pytest.raises(RuntimeError, match="a bug"):  # not a failed write: kept as it is, traceback and all
        with saving_model(tmp_path):
            raise RuntimeError("a bug in the model's state dict")


def test_saving_model_names_any_os_error_safetensors_reports(tmp_path):
    """safetensors words every failed write as ``I/O error: REASON (os error N)``: a file-size limit
    (``ulimit -f``: File too large), a quota or a read-only file system was its traceback, only a full
    disk one line."""
    from safetensors import SafetensorError

    from kdstore.errors import KdError
    from kdstore.torchutil import saving_model

    with pytest.raises(KdError, match=r": cannot save the model: File too large$"):
        with saving_model(tmp_path):
            raise SafetensorError("Error while serializing: I/O error: File too large (os error 27)")


def test_a_saved_models_files_are_readable_as_the_umask_allows(tmp_path):
    """safetensors writes model.safetensors readable by its owner alone (0600), whatever the umask:
    a teammate on a shared store and artifact folder could read config.json beside it but not the
    weights (`kd predict`: Permission denied). The files saved take the mode the umask gives a new file."""
    import os
    import stat

    from safetensors.torch import save_file

    from kdstore.torchutil import saving_model

    old = os.umask(0o022)
    try:
        with saving_model(tmp_path / "m"):
            (tmp_path / "m" / "sub").mkdir(parents=True)
            save_file({"w": torch.zeros(2)}, str(tmp_path / "m" / "model.safetensors"))
            (tmp_path / "m" / "sub" / "x.bin").write_bytes(b"x")
            os.chmod(tmp_path / "m" / "sub" / "x.bin", 0o600)
            (tmp_path / "m" / "config.json").write_text("{}")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "m").rglob("*") if p.is_file()}
    assert modes == {"model.safetensors": 0o644, "x.bin": 0o644, "config.json": 0o644}, modes


def test_pretrain_with_steps_reruns_to_the_same_weights_and_records_its_corpus(sample_store, tmp_path, monkeypatch):
    """Two `kd pretrain --steps N` runs with one --seed give the same weights, another seed others;
    a --corpus named relative to the working directory is recorded as the file it was (absolute
    path and sha256), so that the record reruns from anywhere."""
    import hashlib

    from safetensors.torch import load_file

    monkeypatch.chdir(tmp_path)
    Path("news.txt").write_text("龘靐齉爩\n鱻麤龘靐\n", encoding="utf-8")
    args = ("pretrain", "--layers", "1", "--hidden", "32", "--heads", "2", "--steps", "3", "--batch-size", "16",
            "--min-count", "1", "--corpus", "news.txt", "--device", "cpu", "--db", str(sample_store), "--json")
    outs = [json.loads(kd(*args, "--run", run, *seed).stdout) for run, seed in (("a", ()), ("b", ()), ("c", ("--seed", "7")))]
    weights = [load_file(str(Path(o["artifact_path"], "model.safetensors"))) for o in outs]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])
    cfg = outs[0]["config"]
    assert cfg["corpus"] == [str((tmp_path / "news.txt").resolve())]
    assert cfg["corpus_sha256"] == [hashlib.sha256((tmp_path / "news.txt").read_bytes()).hexdigest()]
    # a pipe (`--corpus <(xzcat news.txt.xz)`) was recorded as "/proc/PID/fd/pipe:[N]" with no sha256: the bytes read
    import os

    read_end, write_end = os.pipe()
    os.write(write_end, "龘靐齉爩\n鱻麤龘靐\n".encode())
    os.close(write_end)
    try:
        piped = json.loads(kd(*args[:-6], f"/dev/fd/{read_end}", *args[-5:], "--run", "d").stdout)["config"]
    finally:
        os.close(read_end)
    assert (piped["corpus"], piped["corpus_sha256"]) == ([f"/dev/fd/{read_end}"], cfg["corpus_sha256"]), piped


def test_grad_accum_takes_the_same_steps_in_pieces_with_intermediate_losses(taught_store, tiny_model, tmp_path):
    """The intermediate losses are means over a piece's real tokens (hidden states, attention KL, MiniLM's relations),
    its pairs of real tokens (attention MSE, NST) or its rows (PKD, FSP): --grad-accum weighed each piece's mean by
    its share of the rows, so a piece of long texts counted as one of short ones and the steps were not the whole
    batch's. Each is weighed by its piece's share of its own count now: the same student, to float rounding."""
    from transformers import AutoConfig

    db = str(taught_store)
    still = tmp_path / "still-bert"
    shutil.copytree(tiny_model, still)
    config = AutoConfig.from_pretrained(still)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    config.save_pretrained(still)
    kd("teach", "--run", "still", "--model", str(still), "--epochs", "1", "--batch-size", "8", "--max-len", "32", "--db", db)
    distill = ["--run", "still", "--student", "transformer", "--layers", "2", "--epochs", "2", "--batch-size", "16", "--lr", "1e-3", "--max-len", "32",
               "--hidden-mse", "1", "--attention-mse", "1", "--pkd", "1", "--fsp", "1", "--nst", "1", "--qk-relation", "1", "--db", db]
    kd("distill", *distill, "--name", "whole")
    kd("distill", *distill, "--name", "pieces", "--grad-accum", "4")
    store = Store.open(db)
    students = {s.name: s for s in store.stages_of("still")}
    # (weighed by rows, they differed by 2e-5 here: the texts of a batch are sorted by length, so its pieces' token counts differ)
    np.testing.assert_allclose(store.read_logits(students["pieces"].id)[1], store.read_logits(students["whole"].id)[1], rtol=0, atol=1e-6)


@pytest.mark.parametrize("objective", ["mlm", "electra"])
def test_pretrain_grad_accum_takes_the_same_steps_in_pieces(sample_store, monkeypatch, objective):
    """`kd pretrain --grad-accum K`: the batch masked whole, then run as K pieces whose masked-token means are
    weighed by their share of the batch's masked (and scored) tokens: without dropout, the weights of one
    piece a batch, to float rounding (ELECTRA's generator samples its replacements anew: it runs, not equal)."""
    import transformers
    from safetensors.torch import load_file

    made = transformers.BertConfig.__init__

    def still(self, *args, **kwargs):  # (dropout draws its masks per forward pass: pieces would draw others)
        made(self, *args, **{**kwargs, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0})

    monkeypatch.setattr(transformers.BertConfig, "__init__", still)
    args = ("pretrain", "--layers", "1", "--hidden", "32", "--heads", "2", "--steps", "3", "--batch-size", "16", "--objective", objective,
            "--min-count", "1", "--device", "cpu", "--db", str(sample_store), "--json")
    outs = [json.loads(kd(*args, "--run", run, *extra).stdout) for run, extra in (("whole", ()), ("pieces", ("--grad-accum", "3")))]
    assert [o["config"]["grad_accum"] for o in outs] == [1, 3]
    whole, pieces = (load_file(str(Path(o["artifact_path"], "model.safetensors"))) for o in outs)
    for k in whole if objective == "mlm" else ():  # (ELECTRA's generator samples each piece's replacements anew)
        torch.testing.assert_close(pieces[k], whole[k], rtol=0, atol=1e-5)
    bad = kd(*args, "--run", "bad", "--grad-accum", "17", ok=False)
    assert "--grad-accum must be between 1 (off) and --batch-size 16" in bad.output


def test_a_pretrain_corpus_with_no_text_or_of_json_lines_is_refused_before_a_run_is_recorded(sample_store, tmp_path):
    """A --corpus that cannot be read as texts (empty, binary, JSON lines whose keys and braces would
    be learned as text) is refused in one line naming the file, and the store is left as it was: no
    run, no failed stage (a missing file was refused so already; its content was checked only inside
    the stage, which stayed on record as failed under a new run)."""
    from kdstore.schema import Run, Stage

    files = {"empty.txt": b"\n\n", "binary.txt": b"\x00\x01\xff\xfe",
             "pool.jsonl": '{"text": "今天的新闻"}\n{"text": "明天的新闻"}\n'.encode()}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        out = kd("pretrain", "--run", "p", "--layers", "1", "--hidden", "32", "--heads", "2", "--steps", "1",
                 "--corpus", str(tmp_path / name), "--device", "cpu", "--db", str(sample_store), ok=False)
        assert out.exit_code == 1 and out.output.count("Error:") == 1 and name in out.output, out.output
        assert _count(sample_store, Run) == 0 and _count(sample_store, Stage) == 0, out.output
    assert "JSON" in out.output and "line 1" in out.output


def test_pretrain_sizes_past_the_machines_memory_are_one_line_before_a_stage_or_run(sample_store):
    """--hidden 100000 failed the stage with PyTorch's allocation traceback (40 GB a matrix), as a
    student's sizes once did: refused in one line, from the configuration, before a run or stage."""
    from kdstore.schema import Run, Stage

    for args in (["--hidden", "100000", "--heads", "1"], ["--layers", "100000000", "--hidden", "64"],
                 ["--objective", "electra", "--hidden", "100000", "--heads", "1"]):
        out = kd("pretrain", "--run", "p", "--steps", "1", *args, "--device", "cpu", "--db", str(sample_store), ok=False)
        assert out.exit_code == 1 and "Traceback" not in out.output, (args, out.output)
        assert len(out.output.strip().splitlines()) == 1 and "lower --layers, --hidden" in out.output, (args, out.output)
        assert _count(sample_store, Run) == 0 and _count(sample_store, Stage) == 0, (args, out.output)


def test_a_pretrain_rerun_is_refused_before_its_corpus_is_read(sample_store, tmp_path, monkeypatch):
    """A second `kd pretrain` into a run whose pre-training succeeded read its whole --corpus first (a
    pipe's gigabytes, `xzcat news.xz | kd pretrain --corpus -`, consumed for nothing) and was refused after."""
    import commands.train

    args = ("pretrain", "--run", "p", "--layers", "1", "--hidden", "32", "--heads", "2", "--steps", "1", "--device", "cpu",
            "--db", str(sample_store))
    kd(*args)
    read = []
    monkeypatch.setattr(commands.train, "read_corpus", lambda *a, **k: read.append(a) or ["新闻"])
    line = kd(*args, "--corpus", "-", input="今天的新闻\n", ok=False).output
    assert line.startswith("Error: stage 'pretrain' of run 'p' succeeded on ") and "pass --overwrite" in line, line
    assert read == []


def test_a_json_lines_corpus_is_refused_naming_its_text_key(tmp_path):
    """The refusal's hint said `jq -r .text FILE` whatever the file's keys: for JSON lines whose text
    is under `内容` (the user's own key, as kd ingest --text-col reads it) it printed nothing but null
    lines. It names the key holding the text (jq's quoted form for a key that is no identifier)."""
    from kdstore.pretrain import read_corpus

    cases = {"a.jsonl": ('{"id": "a1", "内容": "今天的新闻很长", "类别": "合规"}\n', """jq -r '."内容"' """),
             "b.jsonl": ('{"label": "pos", "text": "好"}\n', "jq -r .text "),
             "c.jsonl": ('{"n": 1, "body_text": "今天的新闻"}\n', "jq -r .body_text ")}
    for name, (data, hint) in cases.items():
        (tmp_path / name).write_text(data, encoding="utf-8")
        with pytest.raises(KdError, match=re.escape(f"({hint}{tmp_path / name})")):
            read_corpus((str(tmp_path / name),))


def test_a_tab_separated_corpus_is_refused_before_a_run_is_recorded(sample_store, tmp_path):
    """A labeled TSV given as --corpus (label<TAB>text, test.tsv say) was read line by line, its labels
    learned as text beside the texts they judge: the test labels that `--split` keeps out came in through
    --corpus. Every line holding the same tabs is a table (kd predict warns so): refused in one line
    naming the file, the line and the way to the text column, before a run is recorded; a corpus with a
    tab in some lines only is text."""
    from kdstore.pretrain import read_corpus
    from kdstore.schema import Run, Stage

    table = tmp_path / "test.tsv"
    table.write_text("\npos\t质量很好，物流也快\nneg\t太差了\n", encoding="utf-8")
    out = kd("pretrain", "--run", "p", "--layers", "1", "--hidden", "32", "--heads", "2", "--steps", "1",
             "--corpus", str(table), "--device", "cpu", "--db", str(sample_store), ok=False)
    line = out.output.strip()
    assert out.exit_code == 1 and "\n" not in line and line.startswith(f"Error: {table}: line 2: "), out.output
    assert "2 tab-separated columns" in line and f"cut -f2 {table}" in line, line
    assert _count(sample_store, Run) == 0 and _count(sample_store, Stage) == 0
    mixed = tmp_path / "news.txt"
    mixed.write_text("标题\t正文一\n第二段没有制表符\n", encoding="utf-8")
    assert read_corpus((str(mixed),)) == ["标题\t正文一", "第二段没有制表符"]


def test_a_tab_separated_corpus_s_hint_cuts_its_text_column_not_its_labels(tmp_path):
    """A table of text<TAB>label (a common export) was told `cut -f2`, which keeps the labels alone: a
    corpus of 'pos' and 'neg'. The hint names the column of the longest cells, the texts; a table of
    several columns, where it said `cut -fN`, names it too."""
    from kdstore.pretrain import read_corpus

    cases = {"text-first.tsv": ("质量很好，物流也快\tpos\n太差了，再也不买\tneg\n", "2 tab-separated columns", "cut -f1 "),
             "three.tsv": ("1\tpos\t质量很好，物流也快\n2\tneg\t太差了，再也不买\n", "3 tab-separated columns", "cut -f3 "),
             "label-first.tsv": ("pos\t质量很好，物流也快\nneg\t太差了，再也不买\n", "2 tab-separated columns", "cut -f2 ")}
    for name, (content, columns, hint) in cases.items():
        (tmp_path / name).write_text(content, encoding="utf-8")
        with pytest.raises(KdError) as caught:
            read_corpus((str(tmp_path / name),))
        assert columns in str(caught.value) and f"({hint}{tmp_path / name})" in str(caught.value), (name, str(caught.value))


def test_pretrain_steps_1_trains_at_the_lr_given(sample_store):
    """The warm-up gave the first step a learning rate of 0: `--steps 1` saved the random
    initialisation whatever --lr (the same weights at 5e-4 and at 1e-2), and of --steps 5 a fifth was lost."""
    from safetensors.torch import load_file

    outs = [json.loads(kd("pretrain", "--run", f"lr{i}", "--layers", "1", "--hidden", "32", "--heads", "2", "--steps", "1",
                          "--batch-size", "16", "--min-count", "1", "--lr", lr, "--device", "cpu", "--db", str(sample_store),
                          "--json").stdout) for i, lr in enumerate(("5e-4", "1e-2"))]
    a, b = (load_file(str(Path(o["artifact_path"], "model.safetensors"))) for o in outs)
    assert not torch.equal(a["bert.embeddings.word_embeddings.weight"], b["bert.embeddings.word_embeddings.weight"])


def _bar_losses(monkeypatch) -> list[str]:
    """The loss figures kd pretrain's bar is updated with, in order (a list filled as it trains)."""
    import kdstore.pretrain

    real, shown = kdstore.pretrain.progress, []

    def recording(**options):
        bar = real(**options)
        update = bar.update

        def update_recorded(task, **fields):
            if "loss" in fields:
                shown.append(fields["loss"])
            return update(task, **fields)
        bar.update = update_recorded
        return bar

    monkeypatch.setattr(kdstore.pretrain, "progress", recording)
    return shown


def test_pretrains_bar_shows_a_loss_before_its_50th_step(sample_store, monkeypatch):
    """The bar's loss was read every 50 steps: a model of a few seconds a step on a CPU trained for
    minutes under "loss -". Now read at steps 1, 5, 10, 20, 30 and 40 too."""
    import re

    shown = _bar_losses(monkeypatch)
    kd("pretrain", "--run", "bar", "--layers", "1", "--hidden", "32", "--heads", "2", "--steps", "12",
       "--batch-size", "16", "--min-count", "1", "--device", "cpu", "--db", str(sample_store))
    assert len(shown) == 12 + 1 and all(re.fullmatch(r"\d+\.\d{3}", loss) for loss in shown), shown  # a figure from step 1 on (and the one recorded, at the end)
    assert shown[0] != shown[4] != shown[9] and shown[5:9] == [shown[4]] * 4, shown  # read anew at steps 5 and 10


def test_pretrains_bar_ends_on_the_loss_it_records(sample_store, monkeypatch):
    """The bar kept the loss read at its last 50th step (or step 5): `--steps 60` ended on "loss 7.522"
    over a recorded mlm_loss of 7.40, `--minutes` 34 steps stale. It ends on the figure recorded."""
    shown = _bar_losses(monkeypatch)
    out = json.loads(kd("pretrain", "--run", "end", "--layers", "1", "--hidden", "32", "--heads", "2", "--steps", "7",
                        "--batch-size", "16", "--min-count", "1", "--device", "cpu", "--db", str(sample_store), "--json").stdout)
    assert shown[-1] == f"{out['metrics']['train']['mlm_loss']:.3f}", (shown, out["metrics"]["train"])


def test_a_pretrain_step_the_fp16_scaler_skipped_is_no_step_of_steps(sample_store, monkeypatch):
    """On a GPU without bf16 the grad scaler skips a step whose gradients overflowed: it counted
    towards --steps (and the warm-up) all the same, as teach's schedule did."""
    import kdstore.pretrain

    real, calls = kdstore.pretrain.scaled_update, []

    def first_skipped(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs) and len(calls) > 1

    monkeypatch.setattr(kdstore.pretrain, "scaled_update", first_skipped)
    out = json.loads(kd("pretrain", "--run", "sk", "--layers", "1", "--hidden", "32", "--heads", "2", "--steps", "3", "--batch-size", "16",
                        "--min-count", "1", "--device", "cpu", "--db", str(sample_store), "--json").stdout)
    assert len(calls) == 4 and out["metrics"]["train"]["steps"] == 3


def test_pretrain_leaves_out_augmented_texts(sample_store):
    """The texts kd distill --augment stored (with [UNK] in them) are no text to pre-train on."""
    from kdstore.augmented import Recipe, ensure_augmented

    store = Store.open(str(sample_store))
    before = len(store.samples(include_dropped=True))
    _, added = ensure_augmented(store, Recipe(methods=("mask",), n=2, p_mask=0.5))
    assert added > 0
    out = json.loads(kd("pretrain", "--run", "pa", "--layers", "1", "--hidden", "32", "--heads", "2", "--steps", "1",
                        "--min-count", "1", "--db", str(sample_store), "--json").stdout)
    assert out["metrics"]["train"]["texts"] == before
    from transformers import AutoTokenizer

    vocab = AutoTokenizer.from_pretrained(out["artifact_path"]).get_vocab()
    assert "[" not in vocab and "##U" not in vocab  # [UNK] written into texts is not spelled out as characters


def test_pretrain_reads_extra_corpora_and_refuses_unreadable_ones(sample_store, tmp_path):
    from transformers import AutoTokenizer

    db = str(sample_store)
    corpus = tmp_path / "news.txt"
    corpus.write_text("龘靐齉爩\n\n  \n鱻麤龘靐\n", encoding="utf-8-sig")  # characters no stored text has; blank lines skipped
    out = json.loads(kd("pretrain", "--run", "c", "--layers", "1", "--hidden", "32", "--heads", "2", "--steps", "2", "--batch-size", "16",
                        "--min-count", "1", "--corpus", str(corpus), "--db", db, "--json").stdout)
    assert out["metrics"]["train"]["texts"] == 130 + 2 and out["config"]["corpus"] == [str(corpus)]
    vocab = AutoTokenizer.from_pretrained(out["artifact_path"]).get_vocab()
    assert all(c in vocab for c in "龘靐齉爩鱻麤") and "\ufeff" not in vocab  # (a byte-order mark is no text)
    (tmp_path / "gbk.txt").write_bytes("第一行\n新闻\n".encode("utf-8") + "报道\n".encode("gbk"))
    for bad, expected in ((tmp_path / "missing.txt", "cannot read corpus: No such file"),
                          (tmp_path / "gbk.txt", "line 3: not valid UTF-8 (byte 0xb1); convert the file to UTF-8 first")):
        line = kd("pretrain", "--run", "c2", "--steps", "1", "--corpus", str(bad), "--db", db, ok=False).output.strip()
        assert line.startswith(f"Error: {bad}: ") and expected in line and "\n" not in line
    # a missing file, and one in another encoding, is refused before a stage (or a run) is made
    assert Store.open(db).stages_of("c2") == [] and not Store.open(db).run_exists("c2")


def test_a_corpus_line_is_one_text_and_a_corpus_without_text_is_refused(tmp_path):
    """Lines end at \\n as in `kd ingest` (str.splitlines also broke at U+2028, U+0085 and form feeds,
    cutting one text in two); a file of blank lines only was silently no corpus at all."""
    from kdstore.errors import KdError
    from kdstore.pretrain import read_corpus

    news = tmp_path / "news.txt"
    news.write_text("第一段\u2028第二段\x85第三\x0c段\r\n\n  下一行 \n", encoding="utf-8")
    mac = tmp_path / "mac.txt"
    mac.write_bytes("甲\r乙\r".encode("utf-8"))
    assert read_corpus((str(news), str(mac))) == ["第一段\u2028第二段\x85第三\x0c段", "下一行", "甲", "乙"]
    for blank in (tmp_path / "blank.txt", tmp_path / "empty.txt"):
        blank.write_text("\n  \r\n\n" if blank.name == "blank.txt" else "", encoding="utf-8")
        with pytest.raises(KdError, match=f"^{blank}: no text in the corpus"):
            read_corpus((str(news), str(blank)))
    db = str(tmp_path / "kd.db")
    write_tsv(tmp_path / "t.tsv", [("pos", "很好很好"), ("neg", "很差很差")])
    kd("ingest", str(tmp_path / "t.tsv"), "--db", db)
    line = kd("pretrain", "--run", "b", "--layers", "1", "--hidden", "32", "--steps", "1", "--corpus", str(tmp_path / "blank.txt"),
              "--db", db, ok=False).output
    assert line.startswith(f"Error: {tmp_path / 'blank.txt'}: no text in the corpus") and len(line.strip().splitlines()) == 1
    assert Store.open(db).stages_of("b") == []  # (refused before a stage is made)


def test_corpus_lines_of_zero_width_characters_only_are_no_texts(tmp_path):
    """A line of zero-width spaces or a stray byte-order mark (what `kd ingest` refuses as an empty
    text) was kept as a corpus text: counted in `texts`, nothing to learn, and a corpus of nothing
    else was not refused."""
    from kdstore.errors import KdError
    from kdstore.pretrain import read_corpus

    news = tmp_path / "news.txt"
    news.write_text("第一段\n\u200b\u200b\n\ufeff\n 好\u200b \n", encoding="utf-8")
    assert read_corpus((str(news),)) == ["第一段", "好\u200b"]
    invisible = tmp_path / "invisible.txt"
    invisible.write_text("\u200b\n\u200d\ufeff\n", encoding="utf-8")
    with pytest.raises(KdError, match=f"^{invisible}: no text in the corpus"):
        read_corpus((str(invisible),))
    db = str(tmp_path / "kd.db")
    write_tsv(tmp_path / "t.tsv", [("pos", "很好很好"), ("neg", "很差很差")])
    kd("ingest", str(tmp_path / "t.tsv"), "--db", db)
    out = json.loads(kd("pretrain", "--run", "z", "--layers", "1", "--hidden", "32", "--steps", "1", "--max-len", "16",
                        "--corpus", str(news), "--db", db, "--json").stdout)
    assert out["metrics"]["train"]["texts"] == 2 + 2


def test_device_cuda_without_a_gpu_is_one_line_not_a_traceback(tmp_path, monkeypatch):
    """The stage's environment asked torch for the name of a GPU there was none of: an AssertionError
    traceback (torch's CPU build) before --device cuda's own one-line error; now refused before a
    stage (and its run) is recorded, as every training command does."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    db = str(tmp_path / "kd.db")
    write_tsv(tmp_path / "t.tsv", [("pos", "很好很好"), ("neg", "很差很差")])
    kd("ingest", str(tmp_path / "t.tsv"), "--db", db)
    result = kd("pretrain", "--run", "g", "--layers", "1", "--hidden", "32", "--steps", "1", "--device", "cuda", "--db", db, ok=False)
    assert result.output == "Error: --device cuda: no CUDA device is available here (use --device cpu or auto)\n"
    assert not Store.open(db).run_exists("g")


def test_teach_and_early_exit_on_cuda_without_a_gpu_are_refused_before_a_stage(taught_store, tiny_model, monkeypatch):
    """--device cuda on a machine without one failed a stage it had recorded first (a new run's too)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    db = str(taught_store)
    for args in (["teach", "--run", "g", "--model", str(tiny_model), "--max-len", "32"],
                 ["distill", "--run", "r", "--student", "early-exit", "--epochs", "1"],
                 ["distill", "--run", "r", "--student", "textcnn", "--epochs", "1"]):
        result = kd(*args, "--device", "cuda", "--db", db, ok=False)
        assert result.output == "Error: --device cuda: no CUDA device is available here (use --device cpu or auto)\n"
    store = Store.open(db)
    assert not store.run_exists("g") and [s.name for s in store.stages_of("r")] == ["teach"]


def test_pretrain_split_leaves_the_test_texts_out(tmp_path):
    """Pre-training read every split, test included, and nothing said so or let a user leave test
    out: a teacher fine-tuned from it was judged on texts its encoder had learned (transductive)."""
    from transformers import AutoTokenizer

    db = str(tmp_path / "kd.db")
    write_tsv(tmp_path / "t.tsv", [("pos", "很好很好"), ("neg", "很差很差")])
    write_tsv(tmp_path / "test.tsv", [("pos", "龘龘好")])
    kd("ingest", str(tmp_path / "t.tsv"), "--db", db)
    kd("ingest", str(tmp_path / "test.tsv"), "--split", "test", "--db", db)
    args = ("pretrain", "--layers", "1", "--hidden", "32", "--steps", "1", "--min-count", "1", "--max-len", "16", "--db", db, "--json")
    every = json.loads(kd(*args, "--run", "a").stdout)
    assert every["metrics"]["train"]["texts"] == 3 and every["config"]["splits"] == ["train", "dev", "test", "unlabeled"]
    assert "龘" in AutoTokenizer.from_pretrained(every["artifact_path"]).get_vocab()  # (the default, as documented)
    held = json.loads(kd(*args, "--run", "b", "--split", "unlabeled", "--split", "train").stdout)
    assert held["metrics"]["train"]["texts"] == 2 and held["config"]["splits"] == ["train", "unlabeled"]
    assert "龘" not in AutoTokenizer.from_pretrained(held["artifact_path"]).get_vocab()
    line = kd(*args[:-1], "--run", "c", "--split", "dev", ok=False).output
    assert line == "Error: the store has no texts of split dev to pre-train on: ingest some text first (or leave --split out)\n"
    assert not Store.open(db).run_exists("c")  # (refused before a stage: it was a failed one, and a run, on record)
    line = kd(*args[:-1], "--run", "c", "--split", "test", "--long-texts", "cut", ok=False).output  # one text: the stage's refusal
    assert line == "Error: the store has fewer than 2 texts of split test to pre-train on: ingest some text first\n"
    assert not Store.open(db).run_exists("c")  # (refused before a stage too: it was a failed one on record)


def test_pretrain_of_too_few_texts_counts_the_corpus_in_its_error(tmp_path):
    """An empty split and a --corpus of one line said "the store has fewer than 2 texts of split dev
    to pre-train on: ingest some text first", as if the corpus had not been read."""
    db = str(tmp_path / "kd.db")
    write_tsv(tmp_path / "t.tsv", [("pos", "很好很好"), ("neg", "很差很差")])
    kd("ingest", str(tmp_path / "t.tsv"), "--db", db)
    (tmp_path / "news.txt").write_text("今天的新闻\n", encoding="utf-8")
    line = kd("pretrain", "--run", "c", "--layers", "1", "--hidden", "32", "--steps", "1", "--max-len", "16", "--split", "dev",
              "--corpus", str(tmp_path / "news.txt"), "--db", db, ok=False).output
    assert line == ("Error: fewer than 2 texts to pre-train on: 0 of split dev in the store and 1 in --corpus: "
                    "ingest some text first, or give --corpus more lines\n")
    assert not Store.open(db).run_exists("c")


def test_pretrain_of_a_split_without_texts_says_it_read_the_corpus_alone(tmp_path):
    """--split unlabeled before the pool was ingested (or a split named by mistake) with a --corpus pre-trained on
    the corpus alone without a word: the store's own texts, and their characters, never reached the model."""
    db = str(tmp_path / "kd.db")
    write_tsv(tmp_path / "t.tsv", [("pos", "很好很好"), ("neg", "很差很差")])
    kd("ingest", str(tmp_path / "t.tsv"), "--db", db)
    (tmp_path / "news.txt").write_text("今天的新闻\n明天的新闻\n", encoding="utf-8")
    out = kd("pretrain", "--run", "c", "--layers", "1", "--hidden", "32", "--steps", "1", "--max-len", "16", "--min-count", "1",
             "--split", "unlabeled", "--corpus", str(tmp_path / "news.txt"), "--db", db, "--json")
    said = ("the store has no texts of split unlabeled: the model is pre-trained on --corpus alone, its vocabulary the "
            "corpus's characters (leave --split out, or ingest the split first)")
    assert f"warning: {said}\n" in out.stderr and said in json.loads(out.stdout)["warnings"]
    assert _stage(Path(db), "c", "pretrain").status == "succeeded"
    both = kd("pretrain", "--run", "d", "--layers", "1", "--hidden", "32", "--steps", "1", "--max-len", "16", "--min-count", "1",
              "--split", "unlabeled", "--split", "train", "--corpus", str(tmp_path / "news.txt"), "--db", db)
    assert "--corpus alone" not in both.stderr  # (train's texts read)


def test_pretrain_counts_the_texts_cut_to_max_len_and_warns_when_most_are(tmp_path):
    """A corpus of long lines (articles, one a line) was silently cut to --max-len tokens each: most of
    it never reached the model, and nothing said so (kd teach counts and warns)."""
    db = str(tmp_path / "kd.db")
    write_tsv(tmp_path / "t.tsv", [("pos", "很好很好"), ("neg", "很差很差")])
    kd("ingest", str(tmp_path / "t.tsv"), "--db", db)
    (tmp_path / "articles.txt").write_text("很好很差" * 10 + "\n" + "很差很好" * 10 + "\n", encoding="utf-8")
    out = kd("pretrain", "--run", "p", "--layers", "1", "--hidden", "32", "--steps", "1", "--max-len", "8", "--min-count", "1",
             "--corpus", str(tmp_path / "articles.txt"), "--long-texts", "cut", "--db", db)
    assert _stage(Path(db), "p", "pretrain").status == "succeeded"
    train = {m.name: m.value for m in Store.open(db).metrics(_stage(Path(db), "p", "pretrain").id) if m.split == "train"}
    assert train["truncated"] == 2 and train["texts"] == 4 and train["split_texts"] == 0
    assert "warning: 50% of the texts are longer than --max-len 8 tokens and were cut to fit (the model never saw their ends)" in out.stderr
    assert "(or --long-texts split, which reads each long text as pieces)" in out.stderr
    assert "texts cut to --max-len 8 tokens: 50%" in out.stdout
    # by default (--long-texts split) each 40-character line is read as 7 pieces of at most 6 characters: nothing cut
    out = kd("pretrain", "--run", "q", "--layers", "1", "--hidden", "32", "--steps", "1", "--max-len", "8", "--min-count", "1",
             "--corpus", str(tmp_path / "articles.txt"), "--db", db)
    stage = _stage(Path(db), "q", "pretrain")
    train = {m.name: m.value for m in Store.open(db).metrics(stage.id) if m.split == "train"}
    assert (train["truncated"], train["split_texts"], train["texts"]) == (0, 2, 2 + 2 * 7) and stage.config["long_texts"] == "split"
    assert "were cut to fit" not in out.stderr
    # a count, as texts and truncated are, for a script reading --json (it read 2.0)
    shown = json.loads(kd("report", "--run", "q", "--json", "--db", db).stdout)["stages"][0]["metrics"]["train"]
    assert shown["split_texts"] == 2 and isinstance(shown["split_texts"], int)


def test_a_few_texts_cut_to_max_len_are_not_shown_as_0_percent(tmp_path):
    """One text of 302 cut to --max-len was summed up as "texts cut to --max-len 8 tokens: 0%" (0.33%
    rounded): a line saying texts were cut, and that none were."""
    db = str(tmp_path / "kd.db")
    write_tsv(tmp_path / "t.tsv", [("pos", "很好很好"), ("neg", "很差很差")])
    kd("ingest", str(tmp_path / "t.tsv"), "--db", db)
    short = ["很好" if i % 2 else "很差" for i in range(299)]
    (tmp_path / "lines.txt").write_text("\n".join(short + ["很好很差" * 10]) + "\n", encoding="utf-8")
    out = kd("pretrain", "--run", "p", "--layers", "1", "--hidden", "32", "--steps", "1", "--max-len", "8", "--min-count", "1",
             "--corpus", str(tmp_path / "lines.txt"), "--long-texts", "cut", "--db", db)
    train = {m.name: m.value for m in Store.open(db).metrics(_stage(Path(db), "p", "pretrain").id) if m.split == "train"}
    assert (train["truncated"], train["texts"]) == (1, 302)
    assert "texts cut to --max-len 8 tokens: <1%" in out.stdout and ": 0%" not in out.stdout
    from commands.train import _cut_shown  # (the warning of most texts cut too: 99.6% was "100% ... were cut")

    assert [_cut_shown(c) for c in (0.0, 0.003, 0.5, 0.996, 1.0)] == ["0%", "<1%", "50%", ">99%", "100%"]


def _random_characters_store(tmp_path) -> str:
    """A store of 2,000 pool texts of 6 characters drawn at random from 20: no context to learn, so a masked
    LM can do no better than the frequency bar (log 20)."""
    import random

    rng = random.Random(0)
    chars = "甲乙丙丁戊己庚辛壬癸子丑寅卯辰巳午未申酉"
    (tmp_path / "t.txt").write_text("".join("".join(rng.choice(chars) for _ in range(6)) + "\n" for _ in range(2000)), encoding="utf-8")
    db = str(tmp_path / "kd.db")
    kd("ingest", str(tmp_path / "t.txt"), "--split", "unlabeled", "--db", db)
    return db


def test_a_pretrain_no_better_than_character_frequencies_fails_or_warns(tmp_path, monkeypatch):
    """A lent H200's pre-training collapsed (loss 6.65 against 6.56 for predicting characters by their
    frequency) and was saved as a success: its teacher answered one class (52.6 %). A run of 200,000
    texts that learned nothing is now a failed stage saying so; a young one is warned of. (The bar of
    texts seen is lowered to 3,000 here: 200 steps of 1,024 texts took half a minute of CI.)"""
    monkeypatch.setattr("kdstore.context_free.NO_CONTEXT_TEXTS", 3_000)
    db = _random_characters_store(tmp_path)
    tiny = ("--layers", "1", "--hidden", "32", "--heads", "2", "--batch-size", "8", "--min-count", "1", "--no-wwm", "--db", db)
    young = json.loads(kd("pretrain", "--run", "young", "--steps", "3", *tiny, "--json").stdout)
    train = young["metrics"]["train"]
    assert train["frequency_loss"] == pytest.approx(math.log(20), abs=0.01) and train["mlm_loss"] > train["frequency_loss"]
    assert young["warnings"] == [f"after 3 steps the masked-LM loss {train['mlm_loss']:.2f} is no better than predicting each "
                                 f"character by its frequency ({train['frequency_loss']:.2f}): the model has learned no context yet, "
                                 "and a teacher fine-tuned from it may answer one class; give it more --minutes or --steps"]
    # at a rate above the default, more steps may not help: said (it said only "more --minutes or --steps")
    hot = json.loads(kd("pretrain", "--run", "hot", "--steps", "3", "--lr", "0.5", *tiny, "--json").stdout)["warnings"]
    assert hot[-1].endswith("give it more --minutes or --steps, or a lower --lr than 0.5 (the default is 0.0005)"), hot
    out = kd("pretrain", "--run", "stuck", "--steps", "3", "--lr", "1e-7", *tiny, "--batch-size", "1024", ok=False)
    assert out.output.count("\n") == 1 and "after 3 steps (3,024 texts) the masked-LM loss is 3." in out.output
    assert "no better than predicting each character by its frequency (2.99): the model learned no context" in out.output
    assert "check --lr (now 1e-07): too high a rate collapses a model to this, too low leaves it where it started" in out.output
    stage = _stage(Path(db), "stuck", "pretrain")
    assert stage.status == "failed" and "learned no context" in stage.error and not stage.artifact_path


def test_electras_frequency_check_names_the_generator_it_measures(tmp_path, monkeypatch):
    """With --objective electra the loss held against the frequency bar is the generator's masked-LM loss
    (the discriminator saved has none): the failure and the warning called it "the masked-LM loss", as if
    the model saved were a masked LM and had been measured. (The bar of texts seen is lowered as above.)"""
    monkeypatch.setattr("kdstore.context_free.NO_CONTEXT_TEXTS", 3_000)
    db = _random_characters_store(tmp_path)
    tiny = ("--objective", "electra", "--layers", "1", "--hidden", "32", "--heads", "2", "--min-count", "1", "--no-wwm", "--db", db)
    young = json.loads(kd("pretrain", "--run", "young", "--steps", "3", "--batch-size", "8", *tiny, "--json").stdout)
    train = young["metrics"]["train"]
    assert train["mlm_loss"] > train["frequency_loss"]
    assert young["warnings"] == [f"after 3 steps the generator's masked-LM loss (ELECTRA) {train['mlm_loss']:.2f} is no better than "
                                 f"predicting each character by its frequency ({train['frequency_loss']:.2f}): the model has learned "
                                 "no context yet, and a teacher fine-tuned from it may answer one class; give it more --minutes or --steps"]
    out = kd("pretrain", "--run", "stuck", "--steps", "3", "--lr", "1e-7", "--batch-size", "1024", *tiny, ok=False)
    assert out.output.count("\n") == 1 and "after 3 steps (3,024 texts)" in out.output
    assert " texts) the generator's masked-LM loss (ELECTRA) is 3." in out.output and "learned no context" in out.output
    assert _stage(Path(db), "stuck", "pretrain").status == "failed"


def test_a_corpus_named_twice_is_read_once(tmp_path, monkeypatch):
    """--corpus news.txt --corpus ./news.txt read the file twice: its texts counted and learned twice over."""
    monkeypatch.chdir(tmp_path)
    db = str(tmp_path / "kd.db")
    write_tsv(tmp_path / "t.tsv", [("pos", "很好很好"), ("neg", "很差很差")])
    kd("ingest", str(tmp_path / "t.tsv"), "--db", db)
    (tmp_path / "news.txt").write_text("很好很差\n很差很好\n", encoding="utf-8")
    out = json.loads(kd("pretrain", "--run", "p", "--layers", "1", "--hidden", "32", "--steps", "1", "--max-len", "16",
                        "--corpus", "news.txt", "--corpus", str(tmp_path / "news.txt"), "--corpus", "./news.txt", "--db", db, "--json").stdout)
    assert out["metrics"]["train"]["texts"] == 2 + 2 and out["config"]["corpus"] == [str((tmp_path / "news.txt").resolve())]


def test_a_corpus_of_dash_is_read_from_standard_input(tmp_path):
    """`xzcat news.xz | kd pretrain --corpus -` was "-: cannot read corpus: No such file or directory", where
    `kd ingest -` and `kd predict -` read standard input. Recorded as `-`, with the sha256 of the bytes read."""
    import hashlib

    db = str(tmp_path / "kd.db")
    write_tsv(tmp_path / "t.tsv", [("pos", "很好很好"), ("neg", "很差很差")])
    kd("ingest", str(tmp_path / "t.tsv"), "--db", db)
    news = "很好很差\n很差很好\n还不错吧\n"
    out = json.loads(kd("pretrain", "--run", "p", "--layers", "1", "--hidden", "32", "--steps", "1", "--max-len", "16",
                        "--corpus", "-", "--db", db, "--json", input=news).stdout)
    assert out["metrics"]["train"]["texts"] == 2 + 3
    assert out["config"]["corpus"] == ["-"] and out["config"]["corpus_sha256"] == [hashlib.sha256(news.encode()).hexdigest()]


def test_a_corpus_on_standard_input_in_another_encoding_is_told_to_pipe_it_through_a_converter(tmp_path):
    """`iconv ... | kd pretrain --corpus -` of GBK, UTF-16 or xz bytes was told to run
    `iconv -f GB18030 -t UTF-8 - > utf8--` (a file named `utf8--`) or `unxz < - > unpacked--`: standard
    input is piped through the converter, as `kd ingest -` says; no stage is recorded."""
    import lzma

    db = str(tmp_path / "kd.db")
    write_tsv(tmp_path / "t.tsv", [("pos", "很好很好"), ("neg", "很差很差")])
    kd("ingest", str(tmp_path / "t.tsv"), "--db", db)
    news = "今天的新闻很好\n明天的天气不错\n"
    for data, tool in ((news.encode("gb18030"), "pipe it through iconv -f GB18030 -t UTF-8"),
                       (news.encode("utf-16"), "pipe it through iconv -f UTF-16 -t UTF-8"),
                       (lzma.compress(news.encode()), "pipe it through")):
        line = kd("pretrain", "--run", "p", "--layers", "1", "--hidden", "32", "--steps", "1", "--corpus", "-",
                  "--db", db, input=data, ok=False).output
        assert line.startswith("Error: ") and tool in line and "--" not in line.split("pipe it through")[-1], line
        assert len(line.strip().splitlines()) == 1, line
    assert not Store.open(db).run_exists("p")


def test_pretrain_refuses_a_min_count_no_character_reaches_though_latin_letters_and_digits_are_kept(tmp_path):
    """The letters and digits kept below --min-count (to spell words) hid that no character reached it:
    a vocabulary of them alone was trained on, every Chinese character an [UNK], and nothing said so."""
    db = str(tmp_path / "kd.db")
    write_tsv(tmp_path / "t.tsv", [("pos", "很好 iPhone 15"), ("neg", "很差 a1"), ("pos", "不错 b2")])
    kd("ingest", str(tmp_path / "t.tsv"), "--db", db)
    args = ("pretrain", "--layers", "1", "--hidden", "32", "--heads", "2", "--steps", "1", "--max-len", "16", "--db", db)
    line = kd(*args, "--run", "p", "--min-count", "50", ok=False).output
    assert line == "Error: --min-count 50: no character occurs that many times in the 3 texts: lower it\n"
    stage = _stage(Path(db), "p", "pretrain")
    assert stage.status == "failed" and not stage.artifact_path
    kd(*args, "--run", "q", "--min-count", "2")  # 很 occurs twice: the rare letters and digits still come along
    assert _stage(Path(db), "q", "pretrain").status == "succeeded"


@pytest.mark.parametrize("texts", [
    ["abcdefghij1234567890" * 8 + str(i) for i in range(4)],  # words of over 100 characters: WordPiece's [UNK]
    ["аааб", "ааав", "аааг"],  # each word holds a letter seen once (а, seen 9 times, reaches --min-count)
])
def test_a_pretrain_whose_every_token_is_unk_fails_saying_so(tmp_path, texts):
    """Texts whose every word the vocabulary turned into [UNK] gave a NaN frequency bar and a masked-LM
    loss of 0 (only special tokens, none to mask): the stage succeeded, its model trained on nothing."""
    db = str(tmp_path / "kd.db")
    write_tsv(tmp_path / "t.tsv", [("pos", t) for t in texts])
    kd("ingest", str(tmp_path / "t.tsv"), "--db", db)
    # (cut, not split: the pieces of a 161-character word split at --max-len are words of 126 and 35 characters)
    out = kd("pretrain", "--run", "u", "--layers", "1", "--hidden", "32", "--heads", "2", "--steps", "2", "--long-texts", "cut",
             "--db", db, ok=False)
    assert out.output == (f"Error: every word of the {len(texts)} texts is [UNK]: none is in the vocabulary built from them (a word "
                          "of over 100 characters without a space, or one holding a character seen fewer than --min-count 2 "
                          "times, is one [UNK]), so there is nothing to pre-train on\n")
    stage = _stage(Path(db), "u", "pretrain")
    assert stage.status == "failed" and "[UNK]" in stage.error and not stage.artifact_path
    assert not (tmp_path / "kd-artifacts" / "kd.db" / "u" / "pretrain" / "model").exists()


@pytest.mark.parametrize("args, message", [
    (["--generator-layers", "2"], "--generator-layers sizes ELECTRA's generator: add --objective electra"),
    # (a generator deeper than the one-layer discriminator was trained and thrown away, and nothing said so)
    (["--objective", "electra", "--generator-layers", "2"], "--generator-layers 2 is more than --layers 1: ELECTRA's generator is the smaller"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--lr", "-1"], "--lr must be positive, got -1"),
    (["--hidden", "0"], "--hidden must be at least 1, got 0"),
    (["--max-len", "4"], "--max-len must be at least 8, got 4"),
    (["--heads", "-2"], "--heads must be at least 0 (0: auto), got -2"),  # (no --intermediate option: the message named none)
    (["--min-count", "100000"], "--min-count 100000: no character occurs that many times"),
    (["--minutes", "1e-9"], "ran out before the first training step"),  # with --steps 2: the clock ends it first
    (["--steps", "-1"], "--steps cannot be negative, got -1"),  # (not "give a training budget")
    (["--max-len", "99999999"], "--max-len 99999999 is past 16384 tokens"),  # (the kernel's OOM killer ended kd, the stage left running)
    # heads no one typed (hidden // 64) were named as if given: the message says where 3 came from, and the fix
    (["--hidden", "200"], "--hidden 200 is not divisible by 3 heads (the default, --hidden / 64): pass --heads, a divisor of 200"),
])
def test_pretrain_bad_values_are_one_line(sample_store, args, message):
    result = kd("pretrain", "--run", "bad", "--layers", "1", "--hidden", "32", "--steps", "2", *args, "--db", str(sample_store), ok=False)
    assert result.output.startswith("Error: ") and message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("command", [["pretrain", "--steps", "2"], ["teach", "--model", "./m"], ["distill"],
                                     ["distill", "--student", "early-exit"]])
def test_a_learning_rate_above_1_is_refused_before_any_stage(sample_store, command):
    """``--lr 1e38`` was torch's "value cannot be converted to type float without overflow" traceback in
    Adam's first step, the stage failed with it; any --lr above 1 learns nothing."""
    result = kd(*command, "--run", "big", "--lr", "1e38", "--db", str(sample_store), ok=False)
    assert result.output == ("Error: --lr 1e+38 is above 1: Adam moves each weight by about the learning rate a step "
                             "(fine-tuning a pre-trained model wants 1e-5 to 1e-4, a small or new model up to 1e-3)\n")
    assert not Store.open(str(sample_store)).run_exists("big")


@pytest.mark.parametrize("command", ["pretrain", "teach", "distill"])
@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_a_seed_numpy_cannot_take_is_refused_before_any_stage(tmp_path, command, seed):
    """numpy seeds with 0 .. 2**32 - 1: any other --seed was a ValueError traceback and a failed stage."""
    db = tmp_path / "kd.db"
    result = kd(command, "--run", "s", "--seed", seed, *(["--model", "m"] if command == "teach" else []), "--db", str(db), ok=False)
    assert result.exit_code == 2 and "--seed" in result.output and "0<=x<=4294967295" in result.output
    assert not db.exists()


def test_pretrain_electra_saves_the_discriminator_teach_starts_from(sample_store):
    from transformers import BertModel

    db = str(sample_store)
    out = kd("pretrain", "--run", "e", "--objective", "electra", "--layers", "2", "--hidden", "32", "--heads", "2",
             "--steps", "3", "--batch-size", "16", "--min-count", "1", "--db", db, "--json")
    report = json.loads(out.stdout)
    # the generator's depth as built (a third of --layers, at least 1), not the 0 (auto) asked
    assert report["config"]["objective"] == "electra" and report["config"]["generator_layers"] == 1
    train = report["metrics"]["train"]
    assert train["steps"] == 3 and train["rtd_loss"] > 0 and train["mlm_loss"] > 0
    saved = BertModel.from_pretrained(report["artifact_path"])  # the discriminator alone, no generator
    assert saved.config.num_hidden_layers == 2
    kd("teach", "--run", "e", "--model", "pretrain:e", "--epochs", "1", "--lr", "1e-12", "--max-len", "32", "--db", db)
    teach = _stage(sample_store, "e", "teach")
    assert teach.status == "succeeded"
    tuned = BertModel.from_pretrained(teach.artifact_path)  # the teacher started from the discriminator
    a, b = saved.encoder.layer[1].output.dense.weight, tuned.encoder.layer[1].output.dense.weight
    assert torch.allclose(a, b, atol=1e-6)
    bad = kd("pretrain", "--run", "x", "--objective", "bert", "--steps", "1", "--db", db, ok=False)
    assert "Invalid value for '--objective'" in bad.output


@pytest.mark.parametrize("student", ["textcnn", "bigru", "bilstm"])
def test_distill_each_student_stores_predictions_and_metrics(taught_store, student):
    db = str(taught_store)
    out = kd("distill", "--run", "r", "--student", student, "--epochs", "2", "--batch-size", "16",
             "--embed-dim", "16", "--num-filters", "8", "--hidden", "16", "--max-len", "32", "--db", db, "--json")
    report = json.loads(out.stdout)  # standard error names the sizes this student does not use
    assert report["status"] == "succeeded" and report["name"] == f"distill-{student}"
    teacher = _stage(taught_store, "r", "teach")  # the teacher it learned from, recorded (a later --overwrite is told apart)
    assert [(t["run"], t["stage_id"]) for t in report["config"]["teacher_stages"]] == [("r", teacher.id)]
    assert report["metrics"]["all"]["pool_samples"] == 30  # the unlabeled pool was used
    assert report["config"]["unlabeled"] is True  # as used (it recorded null: "when there is a pool")
    assert set(report["metrics"]) >= {"train", "dev", "test", "all"}
    stage = _stage(taught_store, "r", f"distill-{student}")
    assert _count(taught_store, Prediction, stage_id=stage.id) == _count(taught_store, Sample)
    # FLOPs per sample: each timed (test) text's, averaged; it was the FLOPs of a text of the mean
    # length, rounded (12 tokens for a mean of 11.95)
    from kdstore.batching import encode
    from kdstore.predictor import load_student
    from kdstore.students import StudentConfig, flops_per_sample

    _, tokenizer, meta = load_student(Path(stage.artifact_path), "cpu")
    lengths = [len(x) for x in encode(tokenizer, Store.open(db).samples(splits=["test"]).texts, max_len=32, special_tokens=False)]
    assert np.mean(lengths) != round(np.mean(lengths))  # (the figures would agree for a whole mean)
    scfg = StudentConfig.from_dict(meta["student"])
    assert report["metrics"]["all"]["flops_per_sample"] == round(np.mean([flops_per_sample(scfg, n) for n in lengths]))
    # kd report --compare names each model: a student's kind (a stage named with --name said only "distill"), a teacher's --model
    compared = {r["stage"]: r["model"] for r in json.loads(kd("report", "--compare", "r", "--db", db, "--json").stdout)}
    assert compared == {"teach": teacher.config["model"], f"distill-{student}": student}


@pytest.fixture(scope="module")
def _taught_without_pool(corpus, tiny_model, tmp_path_factory) -> Path:
    """A store of the train and dev rows alone (no unlabeled pool) and run 'r''s 1-epoch teacher,
    made once; ``taught_without_pool`` gives each test a copy."""
    folder = tmp_path_factory.mktemp("without-pool")
    db = folder / "kd.db"
    with _module_env(folder):
        for split in ("train", "dev"):
            kd("ingest", str(corpus[split]), "--split", split, "--db", str(db))
        kd("teach", "--run", "r", "--model", str(tiny_model), "--epochs", "1", "--batch-size", "8", "--max-len", "32", "--db", str(db))
    return db


@pytest.fixture
def taught_without_pool(tmp_path, _taught_without_pool) -> Path:
    return _copy_store(_taught_without_pool, tmp_path / "kd.db")


def test_unlabeled_asked_of_a_store_without_a_pool_is_warned_of(taught_without_pool):
    """--unlabeled on a store with no unlabeled split trained on the labeled samples without a word."""
    db = str(taught_without_pool)
    out = kd("distill", "--run", "r", "--unlabeled", "--epochs", "1", "--embed-dim", "8", "--num-filters", "4", "--db", db, "--json")
    report = json.loads(out.stdout)
    assert report["status"] == "succeeded" and report["metrics"]["all"]["pool_samples"] == 0
    # said once, after training (_finish), in words that hold with --augment too: not twice, once before it as well
    assert [w for w in report["warnings"] if "unlabeled" in w] == [
        "--unlabeled, but the store has no unlabeled pool: the student learned from the labeled samples alone "
        "(`kd ingest FILE --split unlabeled` adds one)"]
    assert out.stderr.count("warning: --unlabeled") == 1
    quiet = kd("distill", "--run", "r", "--epochs", "1", "--embed-dim", "8", "--num-filters", "4", "--name", "q", "--db", db, "--json")
    assert "--unlabeled" not in quiet.stderr  # the default asks for a pool only where there is one
    assert json.loads(quiet.stdout)["config"]["unlabeled"] is False  # recorded as used


def test_distill_without_pool_and_with_mse(taught_store):
    out = kd("distill", "--run", "r", "--no-unlabeled", "--soft-loss", "mse", "--epochs", "1",
             "--embed-dim", "16", "--num-filters", "8", "--max-len", "32", "--db", str(taught_store), "--json")
    assert json.loads(out.stdout)["metrics"]["all"]["pool_samples"] == 0


def test_distill_where_learns_from_the_train_and_pool_rows_it_selects(taught_store):
    """`kd teach --where` chose the teacher's rows, but a student learned from every train and pool
    row: one source's student (or a share, by id) could not be distilled."""
    db, store = str(taught_store), Store.open(str(taught_store))
    where = "id % 3 = 0"
    train = store.samples(splits=["train"], labeled=True, where=where)
    pool = store.samples(splits=["unlabeled"], where=where)
    assert 0 < len(train) < len(store.samples(splits=["train"], labeled=True)) and 0 < len(pool)
    common = ["--run", "r", "--epochs", "1", "--embed-dim", "8", "--num-filters", "4", "--max-len", "32", "--db", db]
    out = kd("distill", *common, "--where", where, "--name", "third", "--json")
    result = json.loads(out.stdout)
    assert result["config"]["where"] == where and result["status"] == "succeeded"
    assert (result["metrics"]["all"]["train_samples"], result["metrics"]["all"]["pool_samples"]) == (len(train), len(pool))
    # every sample is still scored, and all of dev judged the epochs (its figures are over every dev row)
    stage = _stage(taught_store, "r", "third")
    assert _count(taught_store, Prediction, stage_id=stage.id) == _count(taught_store, Sample)
    assert result["metrics"]["dev"]["n"] == len(store.samples(splits=["dev"], labeled=True))
    said = kd("distill", *common, "--where", where, "--name", "said", "--no-unlabeled").stdout
    notes = {r["stage"]: r["note"] for r in json.loads(kd("report", "--compare", "r", "--db", db, "--json").stdout)}
    assert notes["said"] == f"learned from the rows --where {where!r} selects" and notes["teach"] is None  # (beside the others)
    assert f"  learned from {len(train):,} labeled texts that --where selects\n" in said
    # --augment: the recipe's texts of every train row are stored (and reused), those of the chosen rows learned from
    made = json.loads(kd("distill", *common, "--where", where, "--name", "aug", "--no-unlabeled", "--augment", "mask",
                         "--augment-n", "2", "--p-mask", "0.5", "--json").stdout)["metrics"]["all"]
    parents = Store.open(db).parents()
    assert made["augmented_added"] == len(parents) and {p % 3 for p in parents.values()} == {0, 1, 2}
    assert 0 < made["augmented_samples"] == sum(p % 3 == 0 for p in parents.values())
    # a condition the pool fails: the store's pool is there, --where chose none of it (unlabeled by default: as none is used)
    none = json.loads(kd("distill", *common, "--where", "split = 'train'", "--name", "labeled-only", "--json").stdout)
    assert none["metrics"]["all"]["pool_samples"] == 0 and none["config"]["unlabeled"] is False
    assert not any("--unlabeled" in w for w in none["warnings"])
    typed = kd("distill", *common, "--where", "split = 'train'", "--unlabeled", "--name", "typed")
    assert "warning: --unlabeled, but --where \"split = 'train'\" selects no unlabeled sample" in typed.stderr
    # refused before any stage: SQL that cannot run, no train row, an empty one, random() rows
    stages = len(store.stages_of("r"))
    for bad, message in (("nope = 1", "Error: --where 'nope = 1' failed:"),
                         ("source = 'nothing'", "Error: no labeled train samples match --where \"source = 'nothing'\": loosen it; "
                                                "the labeled samples' sources are 'train.tsv' (60)"),
                         (" ", "Error: --where is empty: give an SQL condition on the samples, or leave --where out to learn "
                               "from every train and pool row"),
                         ("random() < 0.5", "Error: --where 'random() < 0.5': random() selects other rows at each read, and a rerun")):
        for student in ("textcnn", "early-exit"):
            if student == "early-exit":  # (which learns from the pool alone too)
                message = message.replace("no labeled train samples", "no train or pool samples")
            refused = kd("distill", "--run", "r", "--student", student, "--where", bad, "--db", db, ok=False)
            assert refused.output.startswith(message) and len(refused.output.strip().splitlines()) == 1, refused.output
    assert len(store.stages_of("r")) == stages


def test_distill_folds_of_a_where_with_too_few_rows_of_a_class_is_refused_before_a_stage(taught_store):
    """--folds 3 with a --where selecting 2 rows of a class passed the check of every train row, then
    failed the stage it had opened (a failed stage on record, a new run with it)."""
    store = Store.open(str(taught_store))
    names, train = store.class_names(), store.samples(splits=["train"], labeled=True)
    pos = [int(i) for i, label in zip(train.ids, train.labels) if names[label] == "pos"][:2]
    where = f"label_id = {names.index('neg')} OR id IN ({pos[0]}, {pos[1]})"
    refused = kd("distill", "--run", "fresh", "--teacher-run", "r", "--folds", "3", "--where", where, "--epochs", "1",
                 "--db", str(taught_store), ok=False)
    assert refused.output == ("Error: --folds 3: every class needs at least 3 train samples, and 'pos' (2) has fewer: "
                              "use --folds 2\n"), refused.output  # (not "2 or fewer": --folds 1 is refused)
    assert not Store.open(str(taught_store)).run_exists("fresh")


def test_distill_where_on_label_id_advises_no_label_option_it_lacks(taught_store):
    """kd distill --where "label_id = 'pos'" (or a column it lacks) said "--label NAME selects a class by name":
    kd distill has no --label (kd samples and kd teach do), so the advice was an option it refuses."""
    db = str(taught_store)
    names = Store.open(db).class_names()
    common = ["distill", "--run", "r", "--epochs", "1", "--embed-dim", "8", "--num-filters", "4", "--max-len", "32", "--db", db]
    quoted = kd(*common, "--where", "label_id = 'pos'", "--name", "q", ok=False)
    assert quoted.stderr.splitlines()[0] == (f"warning: --where compares label_id, a class id, with the string 'pos': class 'pos' "
                                             f"has id {names.index('pos')} (kd classes)")
    missing = kd(*common, "--where", "label = 'pos'", "--name", "m", ok=False)
    assert missing.output.strip().endswith("label_id is a class id, not its name (kd classes lists both))"), missing.output
    assert "--label" not in quoted.output + missing.output

def test_early_exit_where_learns_from_the_rows_it_selects(taught_store):
    db, store = str(taught_store), Store.open(str(taught_store))
    where = "id % 2 = 0"
    out = kd("distill", "--run", "r", "--student", "early-exit", "--epochs", "1", "--where", where, "--db", db, "--json")
    result = json.loads(out.stdout)
    assert result["config"]["where"] == where
    assert result["metrics"]["all"]["train_samples"] == len(store.samples(splits=["train"], labeled=True, where=where))
    assert result["metrics"]["all"]["pool_samples"] == len(store.samples(splits=["unlabeled"], where=where))
    # FastBERT's self-distillation needs no label: the unlabeled texts alone will do (it was refused: "no labeled
    # train samples match --where")
    pool = "split = 'unlabeled'"
    out = kd("distill", "--run", "r", "--student", "early-exit", "--epochs", "1", "--where", pool, "--name", "pool-only", "--db", db, "--json")
    assert "never learned" not in out.stderr, out.stderr  # (it learns the teacher's answers, of every class: no train row needed)
    figures = json.loads(out.stdout)["metrics"]["all"]
    assert (figures["train_samples"], figures["pool_samples"]) == (0, len(store.samples(splits=["unlabeled"], where=pool)))
    assert _stage(taught_store, "r", "pool-only").status == "succeeded"
    stages = len(Store.open(db).stages_of("r"))
    refused = kd("distill", "--run", "r", "--student", "early-exit", "--epochs", "1", "--where", pool, "--no-unlabeled", "--name", "none",
                 "--db", db, ok=False)
    assert len(Store.open(db).stages_of("r")) == stages  # refused before a stage is recorded (review sessrev7)
    assert f"Error: no labeled train samples match --where \"{pool}\", and --no-unlabeled leaves out the 30 pool texts it selects" \
        in refused.output, refused.output


def test_distill_bad_input(taught_store, sample_store):
    db = str(taught_store)
    no_teacher = kd("distill", "--run", "elsewhere", "--db", db, ok=False)  # a typo: nothing written, no new run
    assert "no run 'elsewhere'" in no_teacher.output and "to take a teacher from" in no_teacher.output
    assert not Store.open(db).run_exists("elsewhere")
    kd("labels", "set", "--run", "bare", f"{Store.open(db).samples().ids[0]}=pos", "--db", db)  # a run without a teacher
    bare = kd("distill", "--run", "bare", "--db", db, ok=False)
    assert "run 'bare' has no succeeded 'teach' stage (stages: edit-1 (succeeded))" in bare.output  # not itself, "running"
    assert [st.name for st in Store.open(db).stages_of("bare")] == ["edit-1"]  # refused before a stage (one failed, on record)
    wide = kd("distill", "--run", "r", "--kernel-sizes", "2,40", "--max-len", "32", "--db", db, ok=False)
    assert "wider than --max-len" in wide.output
    assert "distill-textcnn" not in {s.name for s in Store.open(db).stages_of("r")}  # refused before a stage
    for student, option in (("textcnn", ["--kernel-sizes", "0,3"]), ("transformer", ["--layers", "0"])):
        bad = kd("distill", "--run", "r", "--student", student, *option, "--max-len", "32", "--db", db, ok=False)
        assert f"{option[0]} must be positive" in bad.output, bad.output


def test_a_diverged_training_fails_the_stage_instead_of_storing_nan(taught_store, monkeypatch):
    """A learning rate that blows the weights up to nan/inf fails the stage in the epoch it happened
    (it went on and stored nan logits for every sample: argmax of nan is class 0)."""
    import kdstore.schedules

    monkeypatch.setattr(kdstore.schedules, "MAX_LR", math.inf)  # (--lr above 1 is refused before training)
    db = str(taught_store)
    out = kd("distill", "--run", "r", "--lr", "1e30", "--epochs", "2", "--embed-dim", "16", "--num-filters", "8",
             "--max-len", "32", "--db", db, ok=False)
    assert "training diverged in epoch 1: weight" in out.output and "lower --lr" in out.output, out.output
    stage = _stage(taught_store, "r", "distill-textcnn")
    assert stage.status == "failed" and "diverged" in stage.error
    assert _count(taught_store, Prediction, stage_id=stage.id) == 0


def test_a_late_divergence_is_in_the_json_warnings(sample_store, tiny_model, monkeypatch):
    """Printed as it happened, the late divergence was missing from --json's warnings."""
    import kdstore.torchutil

    calls = []
    monkeypatch.setattr(kdstore.torchutil, "nonfinite_weight", lambda module: calls.append(1) or ("w" if len(calls) >= 2 else None))
    out = kd("teach", "--run", "dv", "--model", str(tiny_model), "--epochs", "3", "--max-len", "32", "--db", str(sample_store), "--json")
    assert _warnings(out) == ["training diverged in epoch 2: stopped, keeping the best epoch before it"]
    assert "warning: training diverged in epoch 2: weight w" in out.stderr


def test_distill_negative_width_or_relation_heads_is_one_line_before_the_store(tmp_path):
    db = str(tmp_path / "never.db")
    for args in (["--width", "-32"], ["--relation-heads", "-1", "--value-relation", "1"]):
        bad = kd("distill", "--run", "r", "--student", "transformer", *args, "--db", db, ok=False)
        assert "--width and --relation-heads must be positive (0: the default)" in bad.output, bad.output
        assert len(bad.output.strip().splitlines()) == 1 and not (tmp_path / "never.db").exists()


def test_bad_student_sizes_and_init_embeddings_for_a_transformer_are_refused_before_the_store(tmp_path):
    """Pure option checks: refused in one line before a store is opened (they failed a stage, of a new
    run when --run named one, after the teacher had been loaded)."""
    db = str(tmp_path / "never.db")
    for args, message in (
        (["--embed-dim", "0"], "--embed-dim must be positive (a student size), got 0"),  # the option at fault, not all five
        (["--dropout", "1"], "--dropout must be in [0, 1), got 1.0"),
        (["--student", "bigru", "--hidden", "-4"], "--hidden must be positive (a student size), got -4"),
        (["--kernel-sizes", "3,0"], "--kernel-sizes must be positive widths, got 3,0"),
        (["--student", "transformer", "--init-embeddings", "teacher"], "--init-embeddings teacher is for textcnn/bigru/bilstm"),
        # no room for [CLS] and [SEP]: the tokenizer cut nothing, and a long text crashed the student
        (["--student", "transformer", "--max-len", "1"], "--student transformer needs --max-len of at least 2"),
    ):
        bad = kd("distill", "--run", "new", "--teacher-run", "r", *args, "--db", db, ok=False)
        assert message in bad.output and len(bad.output.strip().splitlines()) == 1, (args, bad.output)
        assert not (tmp_path / "never.db").exists()


def test_a_teacher_whose_vocabulary_lacks_the_stores_characters_is_warned_of(sample_store, tmp_path):
    """An English model on Chinese reviews reads nearly every character as [UNK]: kd teach trained on and
    "succeeded", the only sign a later "learned next to nothing". Said before it trains, with the share."""
    from synthetic import save_tiny_bert

    english = save_tiny_bert(["the quick brown fox jumps over the lazy dog"], tmp_path / "english-bert")
    out = kd("teach", "--run", "en", "--model", str(english), "--epochs", "1", "--max-len", "32", "--db", str(sample_store))
    [said] = [w for w in out.stderr.splitlines() if "unknown token" in w]
    assert said.startswith(f"warning: --model {english}: its tokenizer reads 100% of the train texts' tokens as its unknown token [UNK]"), said


def test_a_kd_pretrained_teacher_of_many_unk_tokens_is_told_of_min_count_not_of_another_language(tmp_path):
    """A `kd pretrain` model reads the store's own characters seen fewer than --min-count times as [UNK]:
    kd teach --model pretrain:R said "a model of another language?" and to "`kd pretrain` one on the
    store's text", which it was. It names --min-count (the run's) instead."""
    db = str(tmp_path / "kd.db")
    rare = [chr(0x9F00 + i) for i in range(20)]  # (each once: below --min-count 2)
    write_tsv(tmp_path / "t.tsv", [("pos" if i % 2 else "neg", ("很好很好" if i % 2 else "很差很差") + c) for i, c in enumerate(rare)])
    kd("ingest", str(tmp_path / "t.tsv"), "--db", db)
    kd("pretrain", "--run", "p", "--layers", "1", "--hidden", "32", "--heads", "2", "--steps", "1", "--max-len", "16", "--db", db)
    out = kd("teach", "--run", "p", "--model", "pretrain:p", "--epochs", "1", "--db", db)
    [said] = [w for w in out.stderr.splitlines() if "unknown token" in w]
    assert said.startswith("warning: --model pretrain:p: its tokenizer reads 20% of the train texts' tokens as its unknown token [UNK]"), said
    assert "another language" not in said and "--min-count 2" in said, said


def test_a_kd_pretrained_teacher_of_a_pretraining_without_the_train_texts_is_told_to_read_them(tmp_path):
    """A `kd pretrain --split unlabeled --corpus news.txt` (train's texts left out) reads the reviews' own characters as
    [UNK]: kd teach said to lower --min-count or add --corpus, neither of which adds them; --split train does."""
    db = str(tmp_path / "kd.db")
    write_tsv(tmp_path / "t.tsv", [("pos" if i % 2 else "neg", "很好很好" if i % 2 else "很差很差") for i in range(2)]
              + [("pos" if i % 2 else "neg", ("很好" if i % 2 else "很差") + chr(0x9F00 + i) * 3) for i in range(20)])
    kd("ingest", str(tmp_path / "t.tsv"), "--db", db)
    (tmp_path / "news.txt").write_text("很好的新闻\n很差的新闻\n", encoding="utf-8")
    kd("pretrain", "--run", "p", "--layers", "1", "--hidden", "32", "--heads", "2", "--steps", "1", "--max-len", "16",
       "--split", "unlabeled", "--corpus", str(tmp_path / "news.txt"), "--db", db)
    out = kd("teach", "--run", "p", "--model", "pretrain:p", "--epochs", "1", "--db", db)
    [said] = [w for w in out.stderr.splitlines() if "unknown token" in w]
    assert "run 'p' pre-trained on split unlabeled and --corpus, not on the train texts" in said, said
    assert said.endswith("pre-train with --split train too (or leave --split out)"), said


def test_epochs_past_any_training_are_refused_in_one_line(taught_store, tiny_model):
    """--epochs of many digits (a key held down) trained on, and the progress bar's ETA overflowed a
    float: a traceback, the stage failed with "OverflowError ... at rich/progress.py". Refused first."""
    db = str(taught_store)
    huge = "9" * 400
    for args in (["teach", "--model", str(tiny_model), "--overwrite"], ["distill"], ["distill", "--student", "early-exit"]):
        for epochs, shown in ((huge, "a number of 400 digits"), ("100001", "100001")):
            refused = kd(*args, "--run", "r", "--epochs", epochs, "--db", db, ok=False)
            assert refused.output.strip() == f"Error: --epochs must be at most 100,000, got {shown}", (args, refused.output)
    assert {s.name for s in Store.open(db).stages_of("r")} == {"teach"}
    refused = kd("pretrain", "--run", "p", "--steps", huge, "--db", db, ok=False)  # (a step's share of --steps overflowed)
    assert refused.output.strip() == "Error: --steps must be at most 1,000,000,000, got a number of 400 digits", refused.output
    assert not Store.open(db).run_exists("p")


def test_a_kernel_width_given_twice_is_refused(tmp_path):
    """--kernel-sizes 3,3 (a typo for 2,3,4) built two banks of one width without a word."""
    db = str(tmp_path / "never.db")
    bad = kd("distill", "--run", "new", "--teacher-run", "r", "--kernel-sizes", "3,3", "--db", db, ok=False)
    assert "'3,3': a width given twice: give distinct widths like 2,3,4" in bad.output and not (tmp_path / "never.db").exists()
    # a student that has no kernels (--student bigru) is warned that the option is not used: its value is not judged,
    # as the README says (warned, then refused for a width given twice)
    other = kd("distill", "--run", "new", "--teacher-run", "r", "--student", "bigru", "--kernel-sizes", "3,3", "--db", db, ok=False)
    assert "warning: --kernel-sizes: not used by --student bigru" in other.output and "given twice" not in other.output, other.output


@pytest.mark.parametrize("args", [["--temperature", "1e30"], ["--temperature", "1e-30"], ["--temperature", "2", "--temperature-end", "1000"],
                                  ["--student", "early-exit", "--temperature", "1e9"]])
def test_a_temperature_past_what_float32_computes_is_refused(tmp_path, args):
    """--temperature 1e30 failed as "training diverged: lower --lr" and 1e-30 trained on a soft loss that
    underflowed to 0 without a word (float32 KL x T^2 is garbage past about 1e4)."""
    db = str(tmp_path / "never.db")
    bad = kd("distill", "--run", "r", *args, "--db", db, ok=False)
    assert "must be between 0.1 and 100, got" in bad.output and len(bad.output.strip().splitlines()) == 1, bad.output
    assert not (tmp_path / "never.db").exists()


def test_alpha_past_1_is_a_loss_weight_of_its_own_beside_hard_weight(taught_store):
    """TextBrewer's kd_loss_weight may pass 1 beside its hard_label_weight: `--alpha 2 --hard-weight 1` was
    refused as "--alpha must be in [0, 1]", so its setup had no translation. Untied, alpha is a loss weight
    (at most 10^6); tied (no --hard-weight), 1 - alpha weighs the hard loss and [0, 1] stands, its refusal
    saying where alpha may pass 1."""
    db = str(taught_store)
    tied = kd("distill", "--run", "r", "--alpha", "2", "--db", db, ok=False).output
    assert "--alpha must be in [0, 1], got 2.0 (past 1 with --hard-weight, the hard loss's own weight" in tied, tied
    out = json.loads(kd("distill", "--run", "r", "--name", "heavy", "--alpha", "2", "--alpha-end", "3", "--hard-weight", "1",
                        "--epochs", "1", "--db", db, "--json").stdout)
    assert out["status"] == "succeeded"
    config = Store.open(db).find_stage("r", "heavy").config
    assert (config["alpha"], config["alpha_end"], config["hard_weight"]) == (2.0, 3.0, 1.0)
    bad = kd("distill", "--run", "r", "--alpha", "-1", "--hard-weight", "1", "--db", db, ok=False).output
    assert "--alpha must be non-negative, got -1.0" in bad, bad


def test_scheduled_weights_and_temperature_are_stored_at_each_epoch(taught_store):
    """--alpha-end, --hard-weight-end and --temperature-end moved the weights in training, but only their
    start and end were on record: a TextBrewer user could not see the schedule after the run. Each epoch's
    train figures hold the values its last step used (kd report --json's history)."""
    db = str(taught_store)
    kd("distill", "--run", "r", "--name", "moving", "--alpha", "0", "--alpha-end", "1", "--hard-weight", "1", "--hard-weight-end", "0",
       "--temperature", "4", "--temperature-end", "2", "--epochs", "3", "--db", db)
    stage = next(s for s in json.loads(kd("report", "--run", "r", "--db", db, "--json").stdout)["stages"] if s["name"] == "moving")
    seen = {}
    for h in stage["history"]:
        if h["split"] == "train" and h["name"] in ("alpha", "hard_weight", "temperature"):
            seen.setdefault(h["name"], []).append((h["step"], h["value"]))
    alpha, hard, temperature = (sorted(seen[k]) for k in ("alpha", "hard_weight", "temperature"))
    assert [e for e, _ in alpha] == [1, 2, 3] and alpha[-1][1] == 1.0 and hard[-1][1] == 0.0 and temperature[-1][1] == 2.0
    assert 0 < alpha[0][1] < alpha[1][1] < 1 and all(a + h == pytest.approx(1.0) for (_, a), (_, h) in zip(alpha, hard))
    assert 4 > temperature[0][1] > temperature[1][1] > 2
    plain = next(s for s in json.loads(kd("report", "--run", "r", "--db", db, "--json").stdout)["stages"] if s["kind"] == "teach")
    assert not any(h["name"] in ("alpha", "temperature") for h in plain["history"])


def test_temperature_gamma_with_cwsm_is_refused_not_ignored(tmp_path):
    """--temperature-gamma is flsw's exponent: cwsm never reads it, so a value given with cwsm was
    silently without effect (--temperature-beta without a schedule was already refused)."""
    db = str(tmp_path / "never.db")
    bad = kd("distill", "--run", "r", "--temperature-schedule", "cwsm", "--temperature-gamma", "3", "--db", db, ok=False)
    assert "--temperature-gamma is flsw's exponent" in bad.output and len(bad.output.strip().splitlines()) == 1, bad.output
    assert not (tmp_path / "never.db").exists()
    from kdstore.distill import DistillConfig
    DistillConfig(temperature_schedule="flsw", temperature_gamma=3.0).validate()
    DistillConfig(temperature_schedule="cwsm", temperature_beta=0.5).validate()
    # beta 0: every sample's temperature the base one, a constant temperature trained without a word
    bad = kd("distill", "--run", "r", "--temperature-schedule", "flsw", "--temperature-beta", "0", "--db", db, ok=False)
    assert ("--temperature-beta 0 gives every sample the base --temperature: --temperature-schedule flsw would change nothing"
            in bad.output and len(bad.output.strip().splitlines()) == 1), bad.output
    assert not (tmp_path / "never.db").exists()


def test_a_temperature_gamma_past_what_float32_computes_is_refused(tmp_path):
    """--temperature-schedule flsw --temperature-gamma 200: (1 - cosine) reaches 2, and 2**200 is inf in
    float32; inf - inf made the per-sample temperatures NaN and the stage failed as "training diverged:
    lower --lr", naming the wrong option."""
    from kdstore.distill import DistillConfig
    from kdstore.losses import MAX_TEMPERATURE_GAMMA, sample_temperatures

    db = str(tmp_path / "never.db")
    bad = kd("distill", "--run", "r", "--temperature-schedule", "flsw", "--temperature-gamma", "200", "--db", db, ok=False)
    assert "--temperature-gamma must be at most 100, got 200" in bad.output and len(bad.output.strip().splitlines()) == 1, bad.output
    assert not (tmp_path / "never.db").exists()
    # at the bound, a student opposite its teacher (1 - cosine = 2) still gets finite temperatures
    student, teacher = torch.tensor([[2.0, 0.0], [0.0, 2.0]]), torch.tensor([[3.0, 0.0], [3.0, 0.0]])
    temps = sample_temperatures(student, teacher, base=2.0, kind="flsw", beta=1.0, gamma=MAX_TEMPERATURE_GAMMA)
    assert not torch.isnan(temps).any(), temps
    DistillConfig(temperature_schedule="flsw", temperature_gamma=MAX_TEMPERATURE_GAMMA).validate()


def test_a_negative_intermediate_loss_weight_names_its_option_and_value(tmp_path):
    """"intermediate loss weights must be non-negative" named none of the nine options: neither the one
    typed wrong nor, for a config file's `fsp = -2`, the file and its key."""
    db = str(tmp_path / "never.db")
    bad = kd("distill", "--run", "r", "--student", "transformer", "--hidden-mse", "1", "--pkd", "-0.5", "--db", db, ok=False)
    assert "--pkd must be non-negative (a loss weight), got -0.5" in bad.output and len(bad.output.strip().splitlines()) == 1, bad.output
    (tmp_path / "kd.toml").write_text('[distill]\nstudent = "transformer"\nfsp = -2\n', encoding="utf-8")
    bad = kd("distill", "--run", "r", "--db", db, ok=False)
    assert "--fsp must be non-negative (a loss weight), got -2 (kd.toml: [distill] fsp = -2)" in bad.output, bad.output
    # and one float32 cannot hold (1e40 diverged, the error saying "lower --lr"): refused before a stage, as --temperature 1e30 is
    for option in ("--pkd", "--hard-weight"):
        bad = kd("distill", "--run", "r", "--student", "transformer", option, "1e40", "--db", db, ok=False)
        assert f"{option} must be at most 1e+06 (a loss weight; 1 to 500 is usual), got 1e+40" in bad.output, bad.output
    assert not (tmp_path / "never.db").exists()


@pytest.mark.parametrize("file, typed, key", [
    ('soft-loss = "mse"', ["--temperature", "4"], 'soft-loss = "mse"'),
    ('temperature-schedule = "cwsm"', ["--temperature-gamma", "3"], 'temperature-schedule = "cwsm"'),
    ('student = "transformer"', ["--init-embeddings", "teacher"], 'student = "transformer"'),
    ('student = "bilstm"', ["--layer-map", "0,1"], 'student = "bilstm"'),
])
def test_a_typed_option_refused_for_a_config_files_choice_names_the_file(tmp_path, file, typed, key):
    """`kd distill --temperature 4` with a kd.toml's `soft-loss = "mse"` was refused with "--soft-loss
    mse reads raw logits", naming no file: the user had typed no --soft-loss (so for a file's cwsm
    schedule and --temperature-gamma, its transformer student and --init-embeddings teacher, its other
    student and --layer-map)."""
    db = str(tmp_path / "never.db")
    (tmp_path / "kd.toml").write_text(f"[distill]\n{file}\n", encoding="utf-8")
    bad = kd("distill", "--run", "r", *typed, "--db", db, ok=False)
    assert f"(kd.toml: [distill] {key})" in bad.output and len(bad.output.strip().splitlines()) == 1, bad.output
    assert not (tmp_path / "never.db").exists()


def test_temperature_options_typed_at_their_defaults_are_refused_where_unused(tmp_path):
    """--temperature 2 with --soft-loss mse, --temperature-beta 1 without a schedule and --temperature-gamma 2
    with cwsm were silently ignored: only values other than the default were refused."""
    db = str(tmp_path / "never.db")
    for args, message in (
        (["--soft-loss", "mse", "--temperature", "2"], "--soft-loss mse reads raw logits"),
        (["--temperature-beta", "1"], "add --temperature-schedule flsw or cwsm"),
        (["--temperature-gamma", "2"], "add --temperature-schedule flsw or cwsm"),
        (["--temperature-schedule", "cwsm", "--temperature-gamma", "2"], "--temperature-gamma is flsw's exponent"),
    ):
        bad = kd("distill", "--run", "r", *args, "--db", db, ok=False)
        assert message in bad.output and len(bad.output.strip().splitlines()) == 1, (args, bad.output)
        assert not (tmp_path / "never.db").exists()


def test_distill_patience_without_labeled_dev_samples_is_warned_of(tmp_path, corpus, tiny_model):
    """--patience was ignored without a word by kd distill on a store without dev samples (kd teach says so)."""
    db = str(tmp_path / "kd.db")
    kd("ingest", str(corpus["train"]), "--db", db)
    kd("teach", "--run", "r", "--model", str(tiny_model), "--epochs", "1", "--max-len", "32", "--db", db)
    common = ["--epochs", "2", "--embed-dim", "8", "--num-filters", "4", "--db", db]
    out = kd("distill", "--run", "r", "--patience", "1", *common, "--json")
    message = "--patience: not used, the store has no labeled dev samples to judge the epochs: the last epoch is kept"
    assert f"warning: {message}" in out.stderr
    report = json.loads(out.stdout)
    assert any(w.startswith(message) for w in report["warnings"]) and report["metrics"]["all"]["best_epoch"] == 2
    assert "--patience" not in kd("distill", "--run", "r", "--name", "quiet", *common).stderr  # not given: nothing to say
    kd("ingest", str(write_tsv(tmp_path / "dev.tsv", [("pos", "验证的样本很好")])), "--split", "dev", "--db", db)
    assert "--patience" not in kd("distill", "--run", "r", "--patience", "1", "--name", "judged", *common).stderr


def test_a_dev_set_of_one_class_is_warned_of(taught_store, tiny_model):
    """The epoch kept is the one of the highest dev macro-F1: on a dev set of one class, a class answered
    there that it does not hold counts as an F1 of 0, so an epoch answering that class to every text wins
    (a better one with a single slip scores about half); kd distill and kd teach said nothing of it."""
    db = str(taught_store)
    common = ["--epochs", "1", "--embed-dim", "8", "--num-filters", "4", "--max-len", "32", "--db", db, "--json"]
    message = "the labeled dev samples are all of class 'pos'"
    assert "labeled dev samples are all" not in kd("distill", "--run", "r", "--name", "both", *common).stderr
    store = Store.open(db)
    dev = store.samples(splits=["dev"], labeled=True)
    neg = store.class_names().index("neg")
    kd("labels", "set", "--run", "edits", *(f"{i}=drop" for i, y in zip(dev.ids, dev.labels) if y == neg), "--db", db)
    out = kd("distill", "--run", "r", "--name", "one", *common)
    assert f"warning: {message}" in out.stderr
    assert any(w.startswith(message) for w in json.loads(out.stdout)["warnings"])
    teach = ["teach", "--model", str(tiny_model), "--epochs", "1", "--max-len", "32", "--db", db]
    assert f"warning: {message}" in kd(*teach, "--run", "t").stderr
    assert "labeled dev samples are all" not in kd(*teach, "--run", "t2", "--split", "train", "--split", "dev").stderr  # (dev trained on: it judges nothing)



def test_a_class_dev_does_not_hold_is_warned_of(taught_store, tiny_model, tmp_path):
    """A rare class whose few samples all went to train: dev macro-F1, which picks the epoch kept, cannot
    judge it, and nothing said so. Nor is it left out: an epoch that answers it on dev counts it at an F1
    of 0 (the warning said "judged without it", while one such answer cost a 3-class dev a quarter of its figure)."""
    db = str(taught_store)
    kd("ingest", str(write_tsv(tmp_path / "rare.tsv", [("极限词", f"全网第一的好东西{i}") for i in range(3)])), "--db", db)
    out = kd("teach", "--model", str(tiny_model), "--epochs", "1", "--max-len", "32", "--run", "t", "--db", db)
    assert ("warning: no labeled dev sample of class '极限词': dev macro-F1, which picks the epoch kept, cannot judge it "
            "(an epoch that answers it to a dev text counts it at an F1 of 0)") in out.stderr
    assert "judged without" not in out.stderr
    figures = classification_metrics(np.array([0, 1, 1]), np.array([0, 1, 2]), num_classes=3)  # (what the warning says)
    assert figures["macro_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert "no labeled dev sample" not in kd("teach", "--model", str(tiny_model), "--epochs", "1", "--max-len", "32", "--run", "t2",
                                              "--label", "pos", "--label", "neg", "--db", db).stderr  # (a class it does not learn)
    assert "no labeled dev sample" not in kd("teach", "--model", str(tiny_model), "--epochs", "1", "--max-len", "32", "--run", "t4",
                                              "--where", "source != 'rare.tsv'", "--db", db).stderr  # (--where leaves it out)
    typo = kd("teach", "--model", str(tiny_model), "--max-len", "32", "--run", "t3", "--label", "pos", "--label", "ng", "--db", db, ok=False)
    assert "--label 'ng' is not a class" in typo.stderr and "warning" not in typo.stderr  # (the refusal alone, no dev warning first)


def test_a_transformer_student_deeper_than_its_teacher_is_warned_of(taught_store):
    """--layers defaults to 4: of a 2-layer teacher (the quick start's pre-training has 2) the student
    copied each teacher layer twice and cost more than the teacher it was to replace, in silence."""
    db = str(taught_store)
    common = ("distill", "--run", "r", "--student", "transformer", "--epochs", "1", "--max-len", "32", "--db", db, "--json")
    deep = kd(*common, "--name", "deep")
    said = [w for w in _warnings(deep) if "deeper than its teacher" in w]
    assert said == ["--student transformer of 4 layers (--layers) is deeper than its teacher of 2: teacher layers 0,0,1,1 "
                    "repeat in it (a student is meant to be smaller: give --layers 2 or fewer)"], said
    assert f"warning: {said[0]}" in deep.stderr
    assert "deeper than its teacher" not in kd(*common, "--layers", "2", "--name", "same").stderr
    # (the first 12 layers named: --layers 100000 printed a line of 100,000 indices)
    assert ("teacher layers 0,0,0,0,0,0,0,1,1,1,1,1,... (14 in all) repeat in it" in
            " ".join(_warnings(kd(*common, "--layers", "14", "--name", "deep14")))), "14 layers"
    narrow = [w for w in _warnings(kd(*common, "--width", "16", "--name", "narrow")) if "deeper than its teacher" in w]
    assert narrow == ["--student transformer of 4 layers (--layers) is deeper than its teacher of 2 "
                      "(a student is meant to be smaller: give --layers 2 or fewer)"], narrow  # (nothing copied or matched)


def test_a_student_larger_than_its_teacher_is_warned_of(taught_store):
    """A TextCNN of the default sizes over a small teacher's vocabulary (128 floats a token) came out with more
    parameters and more FLOPs a text than the teacher it was to replace, and kd distill said nothing."""
    db = str(taught_store)
    common = ("distill", "--run", "r", "--epochs", "1", "--max-len", "32", "--db", db, "--json")
    big = kd(*common, "--name", "big")
    teacher = _stage(taught_store, "r", "teach")
    theirs = {m.name: m.value for m in Store.open(db).metrics(teacher.id) if m.split == "all"}
    mine = json.loads(big.stdout)["metrics"]["all"]
    said = [w for w in _warnings(big) if "larger than its teacher" in w]
    assert said == [f"the textcnn student is larger than its teacher r/teach: {mine['parameters']:,.0f} parameters against "
                    f"{theirs['parameters']:,.0f}, {mine['flops_per_sample']:,.0f} FLOPs a text against {theirs['flops_per_sample']:,.0f} "
                    "(a student is meant to be smaller and faster: lower --embed-dim, --num-filters)"], said
    assert f"warning: {said[0]}" in big.stderr
    small = kd(*common, "--embed-dim", "16", "--num-filters", "8", "--name", "small")
    assert "larger than its teacher" not in small.stderr


def test_init_embeddings_typed_for_a_transformer_student_is_warned_of_as_unused(taught_store):
    """`--init-embeddings random` for a transformer student was taken in silence, while the student started from the
    teacher's token embeddings (copied with its layers): the option did nothing."""
    db = str(taught_store)
    out = kd("distill", "--run", "r", "--student", "transformer", "--layers", "1", "--init-embeddings", "random",
             "--epochs", "1", "--max-len", "32", "--db", db, "--json")
    assert json.loads(out.stdout)["status"] == "succeeded"
    assert ("warning: --init-embeddings: not used by --student transformer (its token embeddings come with its layers: "
            "the teacher's, random with --no-init-from-teacher, or --student-model's)") in out.stderr, out.stderr


def test_folds_of_a_student_copied_from_the_teacher_are_warned_of(taught_store):
    """--folds students are votes blind to their held-out labels; a transformer student copied from the
    teacher (its default at the teacher's width) starts from layers and a head that learned those labels."""
    db = str(taught_store)
    common = ("distill", "--run", "r", "--student", "transformer", "--layers", "1", "--folds", "2", "--epochs", "1",
              "--max-len", "32", "--db", db, "--json")
    message = "--folds 2 with a student copied from the teacher"
    copied = kd(*common, "--name", "copied")
    assert f"warning: {message}" in copied.stderr
    assert any(w.startswith(message) for w in json.loads(copied.stdout)["warnings"])
    assert message not in kd(*common, "--no-init-from-teacher", "--name", "blind").stderr
    rnn = ("distill", "--run", "r", "--student", "bigru", "--folds", "2", "--epochs", "1", "--max-len", "32", "--db", db, "--json")
    message = "--folds 2 with --init-embeddings teacher"
    seeded = kd(*rnn, "--init-embeddings", "teacher", "--name", "seeded")
    assert f"warning: {message}" in seeded.stderr
    assert any(w.startswith(message) for w in json.loads(seeded.stdout)["warnings"])
    assert message not in kd(*rnn, "--name", "random").stderr


def test_distill_folds_bars_name_each_fold_as_teach_s_do(taught_store, monkeypatch):
    """`kd distill --folds 2` drew its bars as "distill textcnn fold0/" (the metrics' key prefix, slash
    and all), where `kd teach --folds` draws "teach fold0"."""
    import kdstore.distill

    real, labels = kdstore.distill.progress, []

    def recording(**options):
        bar = real(**options)
        add = bar.add_task

        def add_task(description, *args, **kwargs):
            labels.append(description)
            return add(description, *args, **kwargs)
        bar.add_task = add_task
        return bar

    monkeypatch.setattr(kdstore.distill, "progress", recording)
    kd("distill", "--run", "r", "--student", "textcnn", "--folds", "2", "--epochs", "1", "--embed-dim", "8",
       "--num-filters", "4", "--max-len", "32", "--no-unlabeled", "--db", str(taught_store))
    assert labels == ["distill textcnn fold0", "distill textcnn fold1"], labels


def test_distill_refuses_a_teacher_without_logits_or_of_another_class_set(taught_store, tmp_path):
    db = str(taught_store)
    store = Store.open(db)
    teacher = _stage(taught_store, "r", "teach")
    with store.engine.begin() as conn:  # a teacher whose logits were lost
        saved = conn.execute(select(Logit.__table__)).all()
        conn.execute(Logit.__table__.delete())
    lost = kd("distill", "--run", "r", "--epochs", "1", "--max-len", "32", "--db", db, ok=False)
    assert "teacher of run 'r' has no logits" in lost.output
    with store.engine.begin() as conn:
        conn.execute(Logit.__table__.insert(), [row._asdict() for row in saved])
    model = Path(teacher.artifact_path)  # a teacher's folder deleted by hand: one line, not a hub-name error
    model.rename(tmp_path / "moved")
    gone = kd("distill", "--run", "r", "--name", "g", "--epochs", "1", "--max-len", "32", "--db", db, ok=False)
    assert f"Error: the model of stage 'teach' is missing from {model}" in gone.output
    # an early-exit student, which loads the teacher's folder: missing, not "not the one the run recorded: its files'
    # sha256 is e3b0c44298fc (changed by hand since?)", the sha256 of no file at all
    exits = kd("distill", "--run", "r", "--name", "ee", "--student", "early-exit", "--epochs", "1", "--max-len", "32", "--db", db, ok=False)
    assert f"Error: the model of stage 'teach' is missing from {model}" in exits.output
    (tmp_path / "moved").rename(model)
    write_tsv(tmp_path / "mid.tsv", [("mid", "不好不坏，一般般吧")])  # a third class after the teacher ran
    kd("ingest", str(tmp_path / "mid.tsv"), "--db", db)
    other = kd("distill", "--run", "r", "--epochs", "1", "--max-len", "32", "--overwrite", "--db", db, ok=False)
    assert "was trained on classes" in other.output and "retrain it with `kd teach --run r --model " in other.output
    # kd report said nothing of it, its confusion matrices grown by a class the teacher cannot answer
    shown = kd("report", "--run", "r", "--db", db).stdout
    assert "  classes: trained on pos, neg; the store has since added mid, which this model cannot answer" in shown
    # refused before a stage is recorded (they left a failed distill-textcnn stage)
    assert [s.name for s in store.stages_of("r")] == ["teach", "g", "ee"] and teacher.status == "succeeded"


def test_report_says_a_student_distilled_before_a_class_was_added_cannot_answer_it(taught_store, tmp_path):
    """kd report said so of the teacher, not of the student distilled from it: a distill stage records no
    classes of its own (kd distill refuses a teacher of other classes than the store's), so the note never
    came for it, its confusion matrices grown by the new class as the teacher's."""
    db = str(taught_store)
    kd("distill", "--run", "r", "--epochs", "1", "--embed-dim", "16", "--num-filters", "8", "--max-len", "32", "--db", db)
    write_tsv(tmp_path / "mid.tsv", [("mid", "不好不坏，一般般吧")])
    kd("ingest", str(tmp_path / "mid.tsv"), "--db", db)
    shown = kd("report", "--run", "r", "--db", db).stdout
    student = shown[shown.index("distill-textcnn (distill)"):]
    assert "  classes: trained on pos, neg; the store has since added mid, which this model cannot answer" in student
    notes = {st["name"]: st["notes"]["classes"] for st in json.loads(kd("report", "--run", "r", "--db", db, "--json").stdout)["stages"]}
    assert notes == {"teach": "trained on pos, neg; the store has since added mid", "distill-textcnn": "trained on pos, neg; the store has since added mid"}, notes


def test_report_compare_says_a_model_trained_before_a_class_was_added(taught_store, tmp_path):
    """`kd report --run` said so of such a model, `kd report --compare` set it beside a model of the new
    class set (its macro-F1 over other classes) without a word."""
    db = str(taught_store)
    kd("distill", "--run", "r", "--epochs", "1", "--embed-dim", "16", "--num-filters", "8", "--max-len", "32", "--db", db)
    write_tsv(tmp_path / "mid.tsv", [("mid", "不好不坏，一般般吧")])
    kd("ingest", str(tmp_path / "mid.tsv"), "--db", db)
    rows = json.loads(kd("report", "--compare", "r", "--db", db, "--json").stdout)
    assert [(r["stage"], r["note"]) for r in rows] == [
        ("teach", "trained on pos, neg; the store has since added mid"),
        ("distill-textcnn", "trained on pos, neg; the store has since added mid")]
    assert "trained on pos, neg; the store has since added mid" in kd("report", "--compare", "r", "--db", db).stdout


def test_report_still_says_so_of_a_student_once_its_teacher_is_retrained_on_the_new_class(taught_store, tmp_path, tiny_model):
    """A student's classes were read off its teacher's record: once the teacher was retrained on the new
    class (`kd teach --overwrite`, what kd distill asks for), that record was gone and the student, still
    of the old classes, was compared with no note (and `kd report --run` said nothing of it)."""
    db = str(taught_store)
    kd("distill", "--run", "r", "--epochs", "1", "--embed-dim", "16", "--num-filters", "8", "--max-len", "32", "--db", db)
    write_tsv(tmp_path / "mid.tsv", [("mid", "不好不坏，一般般吧"), ("mid", "还行吧，中规中矩")])
    kd("ingest", str(tmp_path / "mid.tsv"), "--db", db)
    kd("teach", "--run", "r", "--model", str(tiny_model), "--epochs", "1", "--batch-size", "8", "--max-len", "32",
       "--overwrite", "--db", db)
    rows = json.loads(kd("report", "--compare", "r", "--db", db, "--json").stdout)
    notes = {r["stage"]: r["note"] for r in rows}
    assert notes["teach"] is None and notes["distill-textcnn"].startswith("trained on pos, neg; the store has since added mid; ")
    assert notes["distill-textcnn"].endswith(", replaced since)")  # (and its teacher was another than the one beside it)
    shown = kd("report", "--run", "r", "--db", db).stdout
    assert "  classes: trained on pos, neg; the store has since added mid, which this model cannot answer" in shown


def test_a_teacher_of_another_run_that_lacks_logits_or_classes_is_refused_before_a_stage(taught_store, tmp_path):
    """`kd distill --run B --teacher-run A` with train samples ingested after A's teacher ran names
    `kd teach --run A --logits-only` and records nothing: no run B holding a failed stage; once scored
    it distills, and records A's teach stage. (The early-exit student learns from the teacher network,
    not its stored logits: tests/test_early_exit.py trains it on such samples.)"""
    db = str(taught_store)
    store = Store.open(db)
    kd("ingest", str(write_tsv(tmp_path / "late.tsv", [("pos", "后来补充的一条很好评论")])), "--db", db)
    for student in (["--student", "textcnn", "--embed-dim", "16", "--num-filters", "8"],):
        late = kd("distill", "--run", "B", "--teacher-run", "r", *student, "--epochs", "1", "--db", db, ok=False)
        assert late.output.strip() == ("Error: 1 train sample has no teacher logits (ingested after the teacher ran?): "
                                       "run `kd teach --run r --logits-only` first"), late.output
        assert not store.run_exists("B")
    kd("teach", "--run", "r", "--logits-only", "--db", db)
    out = json.loads(kd("distill", "--run", "B", "--teacher-run", "r", "--epochs", "1", "--embed-dim", "16", "--num-filters", "8",
                        "--db", db, "--json").stdout)
    assert [(t["run"], t["stage_id"]) for t in out["config"]["teacher_stages"]] == [("r", _stage(taught_store, "r", "teach").id)]
    kd("ingest", str(write_tsv(tmp_path / "mid.tsv", [("mid", "不好不坏，一般般吧")])), "--split", "dev", "--db", db)
    other = kd("distill", "--run", "B", "--teacher-run", "r", "--name", "after-mid", "--epochs", "1", "--db", db, ok=False)
    assert "teacher of run 'r' was trained on classes" in other.output and len(other.output.strip().splitlines()) == 1
    assert [s.name for s in store.stages_of("B")] == ["distill-textcnn"]


def test_distilling_from_a_teacher_that_learned_next_to_nothing_is_warned_of(taught_store, tmp_path):
    """A teacher no better on dev than always answering one class (`kd teach` warned of it, once, minutes
    earlier) was distilled from without a word: its soft targets, near-uniform guesses, were the student's
    only teacher on the unlabeled pool. kd distill says so before it trains; a fair teacher is not named."""
    from sqlalchemy import update

    from kdstore.schema import Metric

    db = str(taught_store)
    args = ("distill", "--student", "textcnn", "--epochs", "1", "--embed-dim", "8", "--num-filters", "4", "--max-len", "32", "--db", db)
    assert "learned next to nothing" not in kd(*args, "--run", "r", "--name", "fair").stderr
    store = Store.open(db)
    stage = _stage(taught_store, "r", "teach")
    dev = {m.name: m.value for m in store.metrics(stage.id) if m.split == "dev"}
    share = max(v for k, v in dev.items() if k.startswith("support[")) / dev["n"]
    k = sum(1 for key, v in dev.items() if key.startswith("support[") and v)
    with store.session() as s, s.begin():  # (its dev accuracy and macro-F1, as a teacher that always answers one class has them)
        for name, value in (("accuracy", share), ("macro_f1", 2 * share / (1 + share) / k)):
            s.execute(update(Metric).where(Metric.stage_id == stage.id, Metric.split == "dev", Metric.name == name,
                                           Metric.step.is_(None)).values(value=value))
    store.close()
    out = kd(*args, "--run", "r", "--name", "weak", "--json")
    said = [w for w in json.loads(out.stdout)["warnings"] if "learned next to nothing" in w]
    assert len(said) == 1 and said[0].startswith(f"the teacher of run 'r' has learned next to nothing (dev accuracy {share:.1%}, no more than "
                                                  "always answering "), said
    assert "`kd report --run r`" in said[0] and f"warning: {said[0]}" in out.stderr


def test_distilling_from_a_balanced_teacher_whose_macro_f1_beats_chance_is_not_warned_of(taught_store):
    """A --class-weight balanced teacher below the majority's accuracy but well above chance in macro-F1: kd teach
    no longer says it learned next to nothing (``_majority_note``), and kd distill said so of it, by accuracy alone."""
    from sqlalchemy import update

    from kdstore.schema import Metric

    db = str(taught_store)
    store = Store.open(db)
    stage = _stage(taught_store, "r", "teach")
    dev = {m.name: m.value for m in store.metrics(stage.id) if m.split == "dev"}
    share = max(v for k, v in dev.items() if k.startswith("support[")) / dev["n"]
    with store.session() as s, s.begin():  # (accuracy just below the majority's, macro-F1 far above chance)
        for name, value in (("accuracy", share - 0.01), ("macro_f1", 0.9)):
            s.execute(update(Metric).where(Metric.stage_id == stage.id, Metric.split == "dev", Metric.name == name,
                                           Metric.step.is_(None)).values(value=value))
    store.close()
    out = kd("distill", "--run", "r", "--student", "textcnn", "--epochs", "1", "--embed-dim", "8", "--num-filters", "4",
             "--max-len", "32", "--name", "balanced", "--db", db, "--json")
    assert not [w for w in json.loads(out.stdout)["warnings"] if w.startswith("the teacher of run 'r'")], out.stderr


def test_a_student_learning_from_the_labels_alone_is_not_told_to_check_its_teacher(taught_store):
    """The baseline distillation is judged against, `--alpha 0 --no-unlabeled` (README: the same student without the
    teacher), was warned that the teacher's soft targets are near-uniform guesses to train better first, and, no better
    than the majority class, told to check the teacher first: it learned no soft target of it."""
    from sqlalchemy import update

    from commands.train import _majority_note as note
    from kdstore.schema import Metric

    db = str(taught_store)
    store = Store.open(db)
    stage = _stage(taught_store, "r", "teach")
    dev = {m.name: m.value for m in store.metrics(stage.id) if m.split == "dev"}
    share = max(v for k, v in dev.items() if k.startswith("support[")) / dev["n"]
    k = sum(1 for key, v in dev.items() if key.startswith("support[") and v)
    with store.session() as s, s.begin():  # (a teacher that learned nothing: always one class)
        for name, value in (("accuracy", share), ("macro_f1", 2 * share / (1 + share) / k)):
            s.execute(update(Metric).where(Metric.stage_id == stage.id, Metric.split == "dev", Metric.name == name,
                                           Metric.step.is_(None)).values(value=value))
    store.close()
    args = ("distill", "--run", "r", "--student", "textcnn", "--epochs", "1", "--embed-dim", "8", "--num-filters", "4",
            "--max-len", "32", "--db", db, "--json")
    out = kd(*args, "--alpha", "0", "--no-unlabeled", "--name", "baseline")
    assert not [w for w in json.loads(out.stdout)["warnings"] if "teacher" in w], out.stderr
    out = kd(*args, "--alpha", "0", "--hard-weight", "1", "--name", "hard")  # (the pool's soft loss weighed 0 too)
    assert not [w for w in json.loads(out.stdout)["warnings"] if w.startswith("the teacher of run 'r'")], out.stderr
    # a student of the pool's soft targets (alpha 0 alone) still is
    out = kd(*args, "--alpha", "0", "--name", "pooled")
    assert [w for w in json.loads(out.stdout)["warnings"] if w.startswith("the teacher of run 'r' has learned next to nothing")]
    weak = {"accuracy": 0.528, "support[pos]": 472, "support[neg]": 528}
    alone = {"alpha": 0.0, "alpha_end": None, "hard_weight": None, "unlabeled": False, "augment": [], "lr": 1e-3}
    said = note("r1", {"kind": "distill", "metrics": {"dev": weak}, "config": alone})
    assert "check the teacher" not in said and "--epochs" in said and "--lr" in said and "\n" not in said
    for taught in ({"unlabeled": True}, {"alpha_end": 0.5}, {"hidden_mse": 1.0}, {"matches": ["hidden_mse:0:1:1"]}):
        assert "check the teacher first" in note("r1", {"kind": "distill", "metrics": {"dev": weak}, "config": {**alone, **taught}})


def test_a_teacher_of_another_class_set_among_several_is_refused_naming_a_kd_teach_that_runs(taught_store, tiny_model, tmp_path):
    """`kd distill --teacher-run f --teacher-run r` after a class was added said "re-run `kd teach`": a bare
    `kd teach` is refused (--model is required, and --overwrite where the run has a teacher), and a --folds
    teacher retrained without its --folds is no longer the teacher it was. It names the command that
    retrains that run's teacher; two such teachers are named together (one at a time, the second was
    refused only once the first had been retrained), and one left stale is named alone."""
    db = str(taught_store)
    store = Store.open(db)
    kd("teach", "--run", "f", "--model", str(tiny_model), "--folds", "2", "--epochs", "1", "--max-len", "32", "--db", db)
    kd("ingest", str(write_tsv(tmp_path / "mid.tsv", [("mid", "不好不坏，一般般吧"), ("mid", "还行吧，中规中矩")])), "--split", "dev", "--db", db)
    distill = ("distill", "--run", "s", "--teacher-run", "f", "--teacher-run", "r", "--epochs", "1", "--embed-dim", "8",
               "--num-filters", "4", "--max-len", "32", "--db", db)
    line = kd(*distill, ok=False).output.strip()
    command = f"kd teach --run f --model {tiny_model} --folds 2 --overwrite"
    assert line.startswith("Error: teachers of runs 'f', 'r' were trained on other classes than the store's ['pos', 'neg', 'mid'] "
                           "(f: ['pos', 'neg']; r: ['pos', 'neg']): retrain them with `kd teach --run f"), line
    assert f"`{command}`" in line and f"`kd teach --run r --model {tiny_model} --overwrite`" in line and len(line.splitlines()) == 1, line
    assert not store.run_exists("s")
    kd(*command.split()[1:], "--epochs", "1", "--max-len", "32", "--db", db)  # the command it names runs
    line = kd(*distill, ok=False).output.strip()
    assert "teacher of run 'r' was trained on classes" in line and f"`kd teach --run r --model {tiny_model} --overwrite`" in line, line
    assert not store.run_exists("s")


def test_predict_stdin_file_and_json(taught_store, tmp_path, monkeypatch):
    db = str(taught_store)
    kd("distill", "--run", "r", "--epochs", "2", "--embed-dim", "16", "--num-filters", "8", "--max-len", "32", "--db", db)
    out = kd("predict", "--run", "r", "--db", db, input="这个很好\n\n那个太差\n")
    lines = out.stdout.splitlines()
    assert len(lines) == 3 and lines[1] == "\t\t" and all(lines[i].split("\t")[0] in ("pos", "neg") for i in (0, 2))
    assert "line 2: empty text" in out.stderr and "note: --model student" not in out.stderr  # one distill stage: no choice
    broken = kd("predict", "--run", "r", "--db", db, input="这个\r很好\n那个\u2028太差\n").stdout
    assert len(broken.splitlines()) == 2 and broken.splitlines()[0].endswith("\t这个 很好")  # no extra line for a reader
    f = tmp_path / "in.txt"
    f.write_text("\ufeff这个很好\n那个太差\n", encoding="utf-8")  # a byte-order mark is not part of line 1's text
    rows = [json.loads(l) for l in kd("predict", str(f), "--run", "r", "--model", "teacher", "--json", "--db", db).stdout.splitlines()]
    assert [r["line"] for r in rows] == [1, 2] and rows[0]["text"] == "这个很好"
    assert all(abs(sum(r["probs"].values()) - 1) < 1e-5 and r["label"] in r["probs"] for r in rows)
    # JSON lines: the text out of --text-field (line breaks and tabs in it kept), the other fields given back
    jl = tmp_path / "in.jsonl"
    jl.write_text('{"id": 7, "text": "这个很好\\n真的\\t好"}\n\n{"text": "那个太差", "gold": "neg"}\n', encoding="utf-8")
    rows = [json.loads(l) for l in kd("predict", str(jl), "--text-field", "text", "--run", "r", "--json", "--db", db).stdout.splitlines()]
    assert [r["line"] for r in rows] == [1, 2, 3] and rows[0]["text"] == "这个很好\n真的\t好" and rows[0]["input"] == {"id": 7}
    assert rows[1]["error"] == "empty text" and rows[2]["input"] == {"gold": "neg"} and rows[2]["label"] in ("pos", "neg")
    monkeypatch.setattr("commands.predict.FILE_PART", 1)  # a FILE a line at a time: the same answers, fields given back
    parts = [json.loads(l) for l in kd("predict", str(jl), "--text-field", "text", "--run", "r", "--json", "--db", db).stdout.splitlines()]
    assert [(r["line"], r.get("label"), r["input"]) for r in parts] == [(r["line"], r.get("label"), r["input"]) for r in rows]
    monkeypatch.undo()
    plain = kd("predict", str(jl), "--text-field", "text", "--run", "r", "--db", db).stdout.splitlines()
    assert len(plain) == 3 and plain[0].endswith("\t这个很好 真的 好")  # one output line per input line, three columns
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "很好"}\n{"body": "差"}\n', encoding="utf-8")
    refused = kd("predict", str(bad), "--text-field", "text", "--run", "r", "--db", db, ok=False)
    assert f"{bad}: line 2: no field 'text' (its fields: 'body')" in refused.output and refused.stdout.count("\t") == 0
    numeric = kd("predict", "--text-field", "text", "--run", "r", "--db", db, input='{"text": 5}\n', ok=False)
    assert "<stdin>: line 1: field 'text' is 5, not text" in numeric.output
    # as kd ingest reads JSONL: a NaN given back under "input" made the --json line no JSON, a key named
    # twice predicted the last text silently
    for line, said in (('{"id": NaN, "text": "很好"}', "<stdin>: line 1: field 'id': NaN is not a JSON number"),
                       ('{"id": 1e999, "text": "很好"}', "<stdin>: line 1: field 'id': the number 1e999 is out of range"),
                       ('{"text": "很好", "text": "太差"}', "<stdin>: line 1: field 'text': the object names this key twice")):
        odd = kd("predict", "--text-field", "text", "--run", "r", "--json", "--db", db, input=line + "\n", ok=False)
        assert odd.stdout == "" and odd.stderr.strip() == f"Error: {said}", odd.output
    # a typed --text-field reads stdin, as a typed FILE does, over a config file's [predict] store = true
    (tmp_path / "stored.toml").write_text("[predict]\nstore = true\n", encoding="utf-8")
    streamed = kd("predict", "--config", str(tmp_path / "stored.toml"), "--text-field", "text", "--run", "r", "--json", "--db", db,
                  input='{"id": 3, "text": "很好"}\n')
    assert json.loads(streamed.stdout)["input"] == {"id": 3}
    folder = kd("predict", str(tmp_path), "--run", "r", "--db", db, ok=False)
    assert f"{tmp_path}: cannot read: a folder, not a text file" in folder.output and "Errno" not in folder.output
    hinted = kd("predict", str(jl), "--run", "r", "--db", db)  # without --text-field: predicted as it stands, and said so
    assert "line 1 is a JSON object, predicted as it stands: --text-field text reads" in hinted.stderr
    # the hint names the text, not the first string field: {"nid": "体育", "body": ...} said --text-field nid,
    # which predicts each line's id
    named = tmp_path / "news.jsonl"
    named.write_text('{"nid": "a1", "body": "今天的东西很好", "n": 3}\n', encoding="utf-8")
    assert "predicted as it stands: --text-field body reads" in kd("predict", str(named), "--run", "r", "--db", db).stderr
    # a line sent alone is answered before the next is sent (a co-process feeding kd one text at a time)
    import os
    import select
    import subprocess
    import sys

    env = {**os.environ, "KD_DB": db, "KD_NO_PROGRESS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "commands.cli", "predict", "--run", "r"], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        for text in ("这个很好", "那个太差"):
            proc.stdin.write(f"{text}\n".encode())
            proc.stdin.flush()
            assert select.select([proc.stdout], [], [], 120)[0], "no answer while kd waits for more input"
            assert proc.stdout.readline().decode().rstrip("\n").endswith(f"\t{text}")
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)


def test_predict_names_truncated_lines_in_one_warning(capsys):
    """A file whose every other review is long gave one stderr line per long review; now one in all."""
    from commands.predict import _emit

    class Cutting:
        max_len = 4

        def predict(self, texts, batch_size):
            return [{"label": "pos", "confidence": 0.9, "truncated": len(t) > 4} for t in texts]

    _emit(Cutting(), [(n, "很长很长很长" if n % 2 else "短") for n in range(1, 31)], 8, False)
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 30
    assert err.splitlines() == ["warning: 15 of 30 texts longer than 4 tokens, truncated (lines 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, ...)"]
    _emit(Cutting(), [(7, "很长很长很长"), (8, "短")], 8, False)  # one alone reads as before
    assert capsys.readouterr().err == "warning: line 7: longer than 4 tokens, truncated\n"


def test_predict_says_which_texts_the_vocabulary_holds_nothing_of(taught_store):
    """An emoji-only review (no token of a Chinese BERT vocabulary: all [UNK]) was answered as confidently
    as any other, in silence: its answer is the model's for [UNK], whatever the text. --json says so per
    line (``unknown``), the plain output in one warning."""
    db = str(taught_store)
    out = kd("predict", "--run", "r", "--model", "teacher", "--db", db, input="这个很好\n😀😀😀\n那个太差\n")
    assert len(out.stdout.splitlines()) == 3
    assert out.stderr.splitlines() == ["warning: line 2: the model's vocabulary holds none of its tokens (all unknown): "
                                       "its answer says nothing of its text"]
    rows = [json.loads(l) for l in kd("predict", "--run", "r", "--model", "teacher", "--json", "--db", db,
                                      input="这个很好\n😀😀😀\n👍 👍\n").stdout.splitlines()]
    assert [r["unknown"] for r in rows] == [False, True, True]
    # a line of combining marks alone: the tokenizer drops it whole, and [CLS] [SEP] was answered in silence,
    # "unknown": false (zero-width spaces alone are an empty line)
    rows = [json.loads(l) for l in kd("predict", "--run", "r", "--model", "teacher", "--json", "--db", db,
                                      input="这个很好\n\u0301\n\u0300\u0301\n").stdout.splitlines()]
    assert [r.get("unknown") for r in rows] == [False, True, True], rows


def test_a_model_that_reads_no_text_token_does_not_call_known_texts_unknown(taught_store):
    """A row of no text token was made "unknown" for a line the tokenizer drops whole; a model whose --max-len
    leaves room for its special tokens alone (a transformer student or early exit of --max-len 2) cuts every
    text to [CLS] [SEP], and every answer said that the vocabulary holds none of its tokens, "这个很好" too."""
    from dataclasses import replace

    from kdstore.predictor import Predictor

    predictor = replace(Predictor.from_run(Store.open(str(taught_store)), "r", "teacher", device="cpu"), max_len=2)
    rows = predictor.predict(["这个很好", "\u0301"])
    assert [(r["truncated"], r["unknown"]) for r in rows] == [(True, False), (False, True)], rows


def test_predict_names_texts_of_unknown_tokens_in_one_warning(capsys):
    from commands.predict import _emit

    class Unknowing:
        max_len = 8

        def predict(self, texts, batch_size):
            return [{"label": "pos", "confidence": 0.9, "truncated": False, "unknown": t.startswith("😀")} for t in texts]

    _emit(Unknowing(), [(n, "😀😀" if n % 3 == 0 else "好") for n in range(1, 10)], 8, False)
    assert capsys.readouterr().err == ("warning: 3 of 9 texts: the model's vocabulary holds none of their tokens (all unknown): "
                                       "their answers say nothing of their texts (lines 3, 6, 9)\n")
    # one more after the first (stdin names the first at once): said as one line, not as "1 more of 9 lines: their answers"
    from commands.predict import _Cuts

    cuts = _Cuts(8)
    _emit(Unknowing(), [(1, "😀"), (2, "好")], 8, False, cuts)
    cuts.warn_first()
    _emit(Unknowing(), [(3, "好"), (4, "😀😀")], 8, False, cuts)
    cuts.warn()
    assert capsys.readouterr().err.splitlines() == [
        "warning: line 1: the model's vocabulary holds none of its tokens (all unknown): its answer says nothing of its text",
        "warning: line 4: the model's vocabulary holds none of its tokens (all unknown): its answer says nothing of its text"]


def test_predict_file_is_answered_part_by_part_with_one_warning_for_cut_lines(monkeypatch, capsys):
    """A FILE's answers were all built before the first was written (about 5 KB a line held: a
    million-line file took gigabytes); now FILE_PART lines at a time, the output unchanged."""
    import commands.predict as predict_cmd

    calls = []

    class Counting:
        max_len = 4

        def predict(self, texts, batch_size):
            calls.append(len(texts))
            return [{"label": "pos" if "好" in t else "neg", "confidence": 0.9, "truncated": len(t) > 4} for t in texts]

    lines = [(n, "" if n == 5 else ("好很长很长很长" if n % 7 == 0 else f"差{n}")) for n in range(1, 24)]
    predict_cmd._emit_file(Counting(), lines, 8, False, None)
    whole, whole_err = capsys.readouterr()
    assert calls == [22]
    monkeypatch.setattr(predict_cmd, "FILE_PART", 5)
    calls.clear()
    predict_cmd._emit_file(Counting(), lines, 8, False, None)
    out, err = capsys.readouterr()
    assert calls == [4, 5, 5, 5, 3]  # line 5 is empty: never given to the model
    assert out == whole and len(out.splitlines()) == 23
    assert err == whole_err and "warning: 3 of 22 texts longer than 4 tokens, truncated (lines 7, 14, 21)" in err


def test_predict_plain_output_keeps_a_texts_ansi_codes(capsys):
    """click.echo cut ANSI colour codes out of a line written to a file or pipe: the text column was
    not the text read (a scraped review with a colour code in it)."""
    from commands.predict import _emit

    class Fixed:
        max_len = 16

        def predict(self, texts, batch_size):
            return [{"label": "pos", "confidence": 0.5, "truncated": False} for _ in texts]

    _emit(Fixed(), [(1, "\x1b[31m红色\x1b[0m很好")], 8, False)
    assert capsys.readouterr().out == "pos\t0.5000\t\x1b[31m红色\x1b[0m很好\n"


@pytest.mark.parametrize("as_json", [False, True], ids=["plain", "json"])
def test_predict_lines_written_under_a_bar_on_a_terminal_go_through_richs_proxy(monkeypatch, as_json):
    """A FILE of more than FILE_PART lines predicted to a terminal: rich's bar puts a proxy of stdout in
    place, to print each line above the bar; click.echo took the proxy (which names no encoding) for a
    misconfigured stream and wrote to the file under it, so each line was written after the bar's text
    ("predict ━━━ 0/40000 - 0:00:01 eta -:--:--neg	0.5360	...")."""
    import io
    import sys

    from rich.console import Console
    from rich.file_proxy import FileProxy

    from commands.predict import _emit

    class Fixed:
        max_len = 16

        def predict(self, texts, batch_size):
            return [{"label": "pos", "confidence": 0.5, "truncated": False} for _ in texts]

    screen = io.StringIO()
    under = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")  # the terminal's stdout, with a buffer as a real one has
    monkeypatch.setattr(sys, "stdout", FileProxy(Console(file=screen, force_terminal=True, width=200), under))
    _emit(Fixed(), [(1, "很好"), (2, "")], 8, as_json)
    sys.stdout.flush()
    under.flush()
    assert under.buffer.getvalue() == b""  # nothing written around the bar
    assert "很好" in screen.getvalue()


@pytest.mark.parametrize("text, empty", [
    ("好\u200b的", "\u200b\u200d \ufeff"),  # zero-width/format characters (a BOM, U+200B, a joiner)
    ("好\ue415评", "\ue415\ue056 \U000f0001"),  # private-use ones (an old phone's emoji such as U+E415, an icon font's glyphs)
], ids=["zero-width", "private-use"])
def test_predict_answers_a_line_of_characters_the_model_drops_as_an_empty_text(capsys, text, empty):
    """A line of only characters BERT's normalizer drops (format and control characters, private-use
    ones) was given to the model, which read [CLS] [SEP], and answered with a label: it is an empty
    text, as ingest judges it (ingest stored a private-use one as a sample of its class)."""
    from commands.predict import _emit
    from kdstore.vocab import build_vocab, make_tokenizer

    assert make_tokenizer(build_vocab(["好评"])).tokenize(empty) == []  # what the model reads
    seen = []

    class Recording:
        max_len = 16

        def predict(self, texts, batch_size):
            seen.extend(texts)
            return [{"label": "pos", "confidence": 0.9, "truncated": False} for _ in texts]

    _emit(Recording(), [(1, text), (2, empty), (3, "差")], 8, True)
    lines = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
    assert seen == [text, "差"] and lines[1] == {"line": 2, "error": "empty text"}


def _answering(monkeypatch, label: str) -> None:
    """``kd predict --model teacher`` served by a model that answers ``label`` to every text: what the
    warnings about its input say is what these tests read, not the answers."""
    from kdstore.predictor import Predictor

    class Fixed:
        stage_name, max_len = "teach", 32

        def __init__(self, class_names):
            self.class_names = class_names  # (the store's: a model of every class)

        def predict(self, texts, batch_size):
            return [{"label": label, "confidence": 0.5, "truncated": False} for _ in texts]

    monkeypatch.setattr(Predictor, "from_run", classmethod(lambda cls, store, *a, **k: Fixed(store.class_names())))


def test_predict_warns_of_a_tsv_or_a_header_it_would_read_as_text(tmp_path, monkeypatch):
    """`kd predict test.tsv` (label<TAB>text, as kd ingest reads it) predicted each line whole, its gold
    label read with the text and changing the answer, and a header line was answered as a review: said
    nothing. Now a warning names the columns (or the header) and how to give the texts alone."""
    _answering(monkeypatch, "pos")
    db = str(tmp_path / "kd.db")
    kd("ingest", str(write_tsv(tmp_path / "train.tsv", [("pos", "很好"), ("neg", "太差")])), "--db", db)
    args = ["predict", "--run", "r", "--model", "teacher", "--db", db]
    tsv = kd(*args, str(write_tsv(tmp_path / "test.tsv", [("pos", "真的很好"), ("neg", "真的太差")])))
    assert len(tsv.stdout.splitlines()) == 2  # still predicted, one line each
    assert tsv.stderr == (f"warning: {tmp_path / 'test.tsv'}: lines 1-2 each hold 2 tab-separated columns, each line predicted whole "
                          f"as one text (the other columns read with it): `cut -f2 {tmp_path / 'test.tsv'} | kd predict` predicts "
                          "the text column alone\n")
    piped = kd(*args, input="label\ttext\npos\t很好\n").stderr
    assert piped.startswith("warning: <stdin>: line 1 looks like a header ('label\\ttext'), predicted as a text") and \
        "(`tail -n +2 FILE | cut -f2 | kd predict` reads the texts alone)" in piped
    (tmp_path / "reviews.csv").write_text("review,stars\n很好,5\n", encoding="utf-8")
    assert "line 1 looks like a header ('review,stars')" in kd(*args, str(tmp_path / "reviews.csv")).stderr
    # a CSV under a Chinese header (no word kd knows): every line's commas alike
    csv = kd(*args, input="文本,标签\n质量很好,合规\n最好的产品,夸大宣传\n").stderr
    assert csv == ("warning: <stdin>: lines 1-3 each hold 2 comma-separated columns, each line predicted whole as one text "
                   "(a header line too): `cut -d, -fN FILE | kd predict` predicts column N alone (`tail -n +2` first leaves out a header line)\n")
    assert kd(*args, input="很好,真的\n太差,不买\n").stderr == ""  # two lines: no table yet
    assert kd(*args, input="很好,真的\n太差\n还行,吧\n").stderr == ""  # unlike counts: texts
    # texts, one of them with a tab in it, or a single line with one: no warning
    assert kd(*args, input="很好\t真的\n太差\n\n").stderr == "warning: line 3: empty text, skipped\n"
    assert kd(*args, input="很好\t真的\n").stderr == ""
    # a double-spaced file: its empty lines in one warning, not one a line
    spaced = tmp_path / "spaced.txt"
    spaced.write_text("很好\n\n太差\n\n\n还行\n", encoding="utf-8")
    out = kd(*args, str(spaced))
    assert out.stderr == "warning: 3 empty lines skipped (lines 2, 4, 5)\n" and len(out.stdout.splitlines()) == 6
    assert kd(*args, input="很好\n\n\n太差\n").stderr == "warning: line 2: empty text, skipped\nwarning: line 3: empty text, skipped\n"


def test_json_lines_of_an_empty_text_are_not_called_empty_lines(tmp_path, monkeypatch):
    """`kd predict FILE --text-field content` of objects whose text is "" said "2 empty lines skipped (lines 2, 3)":
    lines 2 and 3 hold objects ({"id": 2, "content": ""}), and the user looked for blank lines that are not there."""
    _answering(monkeypatch, "pos")
    db = str(tmp_path / "kd.db")
    kd("ingest", str(write_tsv(tmp_path / "train.tsv", [("pos", "很好"), ("neg", "太差")])), "--db", db)
    jsonl = tmp_path / "ads.jsonl"
    jsonl.write_text('{"id": 1, "content": "很好"}\n{"id": 2, "content": ""}\n{"id": 3, "content": " "}\n', encoding="utf-8")
    out = kd("predict", str(jsonl), "--run", "r", "--model", "teacher", "--text-field", "content", "--db", db)
    assert out.stderr == "warning: 2 empty texts skipped (lines 2, 3)\n" and len(out.stdout.splitlines()) == 3
    # plain lines keep their wording: an empty line is one
    assert kd("predict", "--run", "r", "--model", "teacher", "--db", db, input="很好\n\n\n").stderr == \
        "warning: line 2: empty text, skipped\nwarning: line 3: empty text, skipped\n"


def test_stdin_csv_lines_sent_one_at_a_time_are_warned_of_as_a_file_s_are(tmp_path, monkeypatch):
    """A CSV whose quoted cell holds a line break (Excel's), sent one line a read: the hints stopped at 3 non-empty
    lines, 2 records of it, fewer than the 3 rows the comma check takes, and the table a FILE of the same lines is
    warned of was predicted line by line in silence."""
    import commands.predict

    class OneLineARead:
        def __init__(self, data: bytes):
            self.lines = data.splitlines(keepends=True)

        def read1(self, _n):
            return self.lines.pop(0) if self.lines else b""

    _answering(monkeypatch, "pos")
    db = str(tmp_path / "kd.db")
    kd("ingest", str(write_tsv(tmp_path / "train.tsv", [("pos", "很好"), ("neg", "太差")])), "--db", db)
    text = '"质量很好,\n真的",合规\n最好的产品,夸大宣传\n还行,合规\n'
    (tmp_path / "sheet.csv").write_text(text, encoding="utf-8")
    args = ["predict", "--run", "r", "--model", "teacher", "--db", db]
    warned = kd(*args, str(tmp_path / "sheet.csv")).stderr
    assert "each hold 2 comma-separated columns" in warned, warned
    monkeypatch.setattr(commands.predict, "binary_stdin", lambda: OneLineARead(text.encode()))
    piped = kd(*args, "-").stderr
    assert "<stdin>: lines 1-4 each hold 2 comma-separated columns" in piped, piped


def test_predict_s_hint_cuts_a_text_first_tsv_s_text_column_not_its_labels(tmp_path, monkeypatch):
    """`kd predict test.tsv` of the Baidu tool's text<TAB>label_id lines was told `cut -f2 FILE | kd predict`,
    which predicts the ids alone ('1', '0'). The hint names the column of the longest cells, as kd pretrain's
    --corpus error does; label<TAB>text still gets `cut -f2`."""
    _answering(monkeypatch, "pos")
    db = str(tmp_path / "kd.db")
    kd("ingest", str(write_tsv(tmp_path / "train.tsv", [("pos", "很好"), ("neg", "太差")])), "--db", db)
    args = ["predict", "--run", "r", "--model", "teacher", "--db", db]
    text_first = kd(*args, input="质量很好，物流也快\t1\n太差了，再也不买\t0\n").stderr
    assert "`cut -f1 FILE | kd predict` predicts the text column alone" in text_first, text_first
    label_first = kd(*args, input="1\t质量很好，物流也快\n0\t太差了，再也不买\n").stderr
    assert "`cut -f2 FILE | kd predict` predicts the text column alone" in label_first, label_first
    three = kd(*args, input="a1\t1\t质量很好，物流也快\na2\t0\t太差了，再也不买\n").stderr
    assert "`cut -f3 FILE | kd predict`" in three, three
    # English labels longer than short Chinese texts: the column of Chinese is the text, not the longest one
    short = kd(*args, input="pos\t很好\nneg\t差\n").stderr
    assert "`cut -f2 FILE | kd predict` predicts the text column alone" in short, short
    english = kd(*args, input="pos\tvery good indeed\nneg\tbad\n").stderr  # (no column of other than ASCII: the longest)
    assert "`cut -f2 FILE | kd predict` predicts the text column alone" in english, english


def test_predict_warns_of_an_excel_csv_whose_quoted_cells_hold_commas_or_line_breaks(tmp_path, monkeypatch):
    """`kd predict test.csv` of a CSV as Excel saves it (BOM, CRLF, `编号,文本,标签` and two trailing empty
    columns, a text holding an ASCII comma or a line break in quotes) predicted the header, the ids and the
    gold labels as texts and said nothing: the check counted raw commas, which a quoted cell's change. Now
    the rows are read as CSV, and the advice does not give a `cut` that would split the quoted cells."""
    _answering(monkeypatch, "合规")
    db = str(tmp_path / "kd.db")
    kd("ingest", str(write_tsv(tmp_path / "train.tsv", [("合规", "很好"), ("违规", "最好的")])), "--db", db)
    sheet = tmp_path / "test.csv"
    sheet.write_bytes("\ufeff编号,文本,标签,,\r\nAD1,\"质量很好,物流也快\",合规,,\r\nAD2,\"全网最低价。\n假一赔十\",违规,,\r\n"
                      "AD3,还行,合规,,\r\n".encode("utf-8"))
    out = kd("predict", "--run", "r", "--model", "teacher", "--db", db, str(sheet))
    assert len(out.stdout.splitlines()) == 5  # still predicted, one line each
    assert out.stderr == (f"warning: {sheet}: lines 1-5 each hold 5 comma-separated columns, each line predicted whole as one text "
                          "(a header line too): its quoted cells hold commas or line breaks, which `cut` splits: save the text "
                          "column alone, one text a line, and predict that file\n")


def test_stdin_names_the_first_cut_line_at_once_and_the_rest_at_the_end(capsys):
    """Reading stdin, each 64 KiB read (a few hundred lines) gave its own warning: a piped file of
    long reviews filled stderr. Now the first cut line is named as it is answered, the rest once."""
    from commands.predict import _Cuts, _emit

    class Cutting:
        max_len = 4

        def predict(self, texts, batch_size):
            return [{"label": "pos", "confidence": 0.9, "truncated": len(t) > 4} for t in texts]

    cuts = _Cuts(4)
    for first in (1, 11, 21):  # three reads of ten lines, every other one long
        _emit(Cutting(), [(n, "很长很长很长" if n % 2 else "短") for n in range(first, first + 10)], 8, False, cuts)
        cuts.warn_first()
    assert capsys.readouterr().err == "warning: line 1: longer than 4 tokens, truncated\n"
    cuts.warn()
    assert capsys.readouterr().err == "warning: 14 more of 30 texts longer than 4 tokens, truncated (lines 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, ...)\n"
    alone = _Cuts(4)
    _emit(Cutting(), [(1, "短"), (2, "很长很长很长")], 8, False, alone)
    alone.warn_first()
    alone.warn()
    assert capsys.readouterr().err == "warning: line 2: longer than 4 tokens, truncated\n"
    # a pipe server answering for weeks kept every such line's number (to name ten): the first ones and a count now
    served = _Cuts(4)
    for first in range(1, 5001, 1000):
        _emit(Cutting(), [(n, "很长很长很长" if n % 3 else "") for n in range(first, first + 1000)], 64, False, served)
        served.warn_first()
    assert len(served.lines.first) == len(served.empty.first) == 11
    capsys.readouterr()
    served.warn()
    assert capsys.readouterr().err == (
        "warning: 3333 more of 3334 texts longer than 4 tokens, truncated (lines 2, 4, 5, 7, 8, 10, 11, 13, 14, 16, ...)\n"
        "warning: 1665 more empty lines skipped (lines 6, 9, 12, 15, 18, 21, 24, 27, 30, 33, ...)\n")


def test_stdin_lines_are_taken_as_they_arrive():
    """What one read returns is predicted together; a line is never cut, numbers run on, a last
    line needs no line break, and a byte-order mark is no text."""
    from commands.predict import _arriving

    class Chunks:
        def __init__(self, *parts):
            self.parts = list(parts)

        def read1(self, _n):
            return self.parts.pop(0) if self.parts else b""

    got = list(_arriving(Chunks("\ufeffa\nb".encode(), b"c\n\n", "好".encode()[:2], "好".encode()[2:] + b"\nd"), "<stdin>"))
    assert got == [[(1, "a")], [(2, "bc"), (3, "")], [(4, "好")], [(5, "d")]]


def test_predict_input_with_bare_cr_line_ends_nul_bytes_or_utf16_is_read_as_ingest_reads_it():
    """Old Mac line ends (no \\n at all) are lines, in a FILE and on stdin, as kd ingest reads them (the
    whole file was one text, one prediction); a NUL byte or a UTF-16 file is a one-line error naming
    the line (UTF-16 text without its byte-order mark was predicted as text full of NULs)."""
    import click

    from commands.predict import _arriving, _lines_of, _numbered

    class Chunks:
        def __init__(self, *parts):
            self.parts = list(parts)

        def read1(self, _n):
            return self.parts.pop(0) if self.parts else b""

    assert list(_numbered(_lines_of("很好\r太差\r\r好".encode()), "f")) == [(1, "很好"), (2, "太差"), (3, ""), (4, "好")]
    assert list(_numbered(_lines_of("很好\r\n太\r差\n".encode()), "f")) == [(1, "很好\r"), (2, "太\r差")]  # \\r\\n as before
    assert list(_numbered(_lines_of(b""), "f")) == []
    assert list(_numbered(_lines_of("\ufeff好\n\ufeff差\n".encode()), "f")) == [(1, "好"), (2, "差")]  # (two files `cat` joined)
    got = list(_arriving(Chunks("很好\r太".encode(), "差\r".encode()), "<stdin>"))
    assert [pair for batch in got for pair in batch] == [(1, "很好"), (2, "太差")]
    with pytest.raises(click.ClickException, match=r"^f: line 2: binary data \(NUL byte\): not a text file$"):
        list(_numbered(_lines_of(b"ok\na\x00b\n"), "f"))
    with pytest.raises(click.ClickException, match=r"^<stdin>: line 1: the input is UTF-16 encoded: convert it to UTF-8 first, e.g. pipe it through iconv -f UTF-16 -t UTF-8$"):
        list(_arriving(Chunks("很好\n".encode("utf-16")), "<stdin>"))
    with pytest.raises(click.ClickException, match=r"^<stdin>: line 1: the input looks UTF-16LE encoded, without a byte-order mark"):
        list(_arriving(Chunks("ok\n".encode("utf-16-le")), "<stdin>"))
    with pytest.raises(click.ClickException, match=r"^<stdin>: line 1: binary data \(NUL byte\)"):
        list(_arriving(Chunks(b"o\x00k\x00\x00\n"), "<stdin>"))  # (NULs at both parities: no UTF-16)


def test_a_folds_teachers_summary_gives_its_out_of_fold_train_figures(sample_store, tiny_model):
    """`kd teach --folds 4` on an ad task printed only dev 0.97 and test 0.93: the figures of the folds' averaged
    probabilities, while the fold models each scored 0.53 to 0.93 on dev and their out-of-fold train accuracy, what
    `kd labels detect` reads, was 0.67 (72 flags, most of them the folds' errors), said nowhere but kd report."""
    db = str(sample_store)
    out = kd("teach", "--run", "oof", "--model", str(tiny_model), "--folds", "2", "--epochs", "1", "--max-len", "32", "--db", db)
    train = {m.name: m.value for m in Store.open(db).metrics(_stage(sample_store, "oof", "teach").id) if m.split == "train"}
    assert (f"  train (out of fold, as kd labels detect reads it): accuracy {train['accuracy']:.4f}, "
            f"macro-F1 {train['macro_f1']:.4f} (n={int(train['n'])})") in out.stdout.splitlines()
    assert out.stdout.index("train (out of fold") < out.stdout.index("  dev: ")
    plain = kd("teach", "--run", "plain", "--model", str(tiny_model), "--epochs", "1", "--max-len", "32", "--db", db)
    assert "train (" not in plain.stdout  # (in-sample figures of the rows it learned: not worth a line)
    dev = kd("teach", "--run", "dev", "--model", str(tiny_model), "--split", "dev", "--folds", "2", "--epochs", "1", "--max-len", "32", "--db", db)
    assert "train (out of fold" not in dev.stdout  # (its train rows no fold learned: held out, not out of fold)
    # each fold's own out-of-fold figures, as kd labels detect computes them (a fold that learned nothing is warned of)
    store = Store.open(db)
    stage = _stage(sample_store, "oof", "teach")
    ids, logits = store.read_logits(stage.id)
    rows = store.samples(splits=["train"], labeled=True)
    folds, at = store.read_folds(stage.id), {int(i): r for r, i in enumerate(ids)}
    for k in (0, 1):
        held = np.array([folds[int(i)] == k for i in rows.ids])
        agree = logits[[at[int(i)] for i in rows.ids[held]]].argmax(axis=1) == rows.labels[held]
        assert train[f"fold{k}/oof_accuracy"] == pytest.approx(agree.mean()) and train[f"fold{k}/train_samples"] == held.sum()
        assert train[f"fold{k}/majority_rate"] == pytest.approx(np.bincount(rows.labels[held]).max() / held.sum())


def test_a_teacher_fold_that_learned_nothing_is_warned_of_by_kd_teach():
    """A --folds 3 teacher scored dev 100% (the folds' average) while fold 0 agreed with 53% of its train labels
    out of fold, a coin: kd teach said nothing, only kd labels detect and clean did, after the fact."""
    from commands.train import _weak_fold_notes

    figures = {"fold0/oof_accuracy": 0.53, "fold1/oof_accuracy": 0.95, "fold2/oof_accuracy": 0.93,
               **{f"fold{k}/majority_rate": 0.52 for k in range(3)}, **{f"fold{k}/train_samples": 100 for k in range(3)}}
    stage = {"metrics": {"train": figures}, "config": {"model": "bert-base-chinese", "folds": 3, "seed": 42}}
    (said,) = _weak_fold_notes("r", stage)
    assert said.startswith("fold 0's model agrees with 53.0% of its 100 train labels out of fold"), said
    assert "its out-of-fold logits, by which kd labels detect judges those labels, are guesses; re-run it with another seed, " \
        "`kd teach --run r --model bert-base-chinese --folds 3 --seed 43 --overwrite`" in said, said
    assert _weak_fold_notes("r", {"metrics": {"train": {**figures, "fold0/oof_accuracy": 0.9}}, "config": {}}) == []


def test_folds_give_out_of_fold_logits_for_train_samples(sample_store, tiny_model):
    from kdstore.outputs import average_probs_as_logits
    from kdstore.schema import SampleFold
    from kdstore.teacher import load_classifier, model_dirs, score

    db = str(sample_store)
    kd("teach", "--run", "oof", "--model", str(tiny_model), "--folds", "3", "--epochs", "1", "--lr", "2e-3",
       "--batch-size", "8", "--max-len", "32", "--db", db)
    store = Store.open(db)
    stage = _stage(sample_store, "oof", "teach")
    folds = store.read_folds(stage.id)
    train = store.samples(splits=["train"], labeled=True)
    assert sorted(folds) == sorted(train.ids.tolist())  # every train sample has a fold
    assert sorted(set(folds.values())) == [0, 1, 2]
    per_fold = np.bincount(list(folds.values()))
    assert per_fold.max() - per_fold.min() <= 1  # stratified, balanced
    ids, logits = store.read_logits(stage.id)
    stored = dict(zip(ids.tolist(), logits))
    assert len(stored) == _count(sample_store, Sample)  # every sample has logits
    dirs = model_dirs(stage)
    assert len(dirs) == 3
    whole = kd("teach", "--run", "from-oof", "--model", "teach:oof", "--db", db, ok=False)  # three models, not one
    assert "is 3 fold models (--folds): start from one of them" in whole.output
    others = store.samples(splits=["dev", "test", "unlabeled"])
    assert len(others) > 0
    other_parts = []
    for k, directory in enumerate(dirs):
        tokenizer, model = load_classifier(directory, stage.config["classes"])
        held = [i for i, f in folds.items() if f == k]
        texts = store.samples(ids=held).texts
        fresh = score(model, tokenizer, texts, max_len=32, batch_size=64, device=torch.device("cpu"))
        # each train sample was scored by the one teacher whose training folds excluded it
        np.testing.assert_allclose(np.stack([stored[i] for i in sorted(held)]), fresh, atol=1e-4)
        other_parts.append(score(model, tokenizer, others.texts, max_len=32, batch_size=64, device=torch.device("cpu")))
    # every other sample holds the 3 teachers' averaged probabilities (as logits)
    expected = average_probs_as_logits(other_parts)
    np.testing.assert_allclose(np.stack([stored[int(i)] for i in others.ids]), expected, atol=1e-4)
    # a teacher of the run predicts with the 3-model ensemble
    out = kd("predict", "--run", "oof", "--model", "teacher", "--db", db, input="这个很好\n")
    assert out.stdout.split("\t")[0] in ("pos", "neg")
    assert _count(sample_store, SampleFold) == len(train)
    # its figures describe that ensemble: the parameters of the 3 models (as size_mb counts their files)
    figures = {m.name: m.value for m in store.metrics(stage.id) if m.split == "all"}
    assert figures["parameters"] == 3 * sum(p.numel() for p in model.parameters())


def test_folds_bad_values(sample_store, tiny_model):
    db = str(sample_store)
    one = kd("teach", "--run", "f1", "--model", str(tiny_model), "--folds", "1", "--db", db, ok=False)
    assert "--folds must be" in one.output
    many = kd("teach", "--run", "f2", "--model", str(tiny_model), "--folds", "40", "--max-len", "32", "--db", db, ok=False)
    assert "every class needs at least 40 train samples, and 'pos' (30), 'neg' (30) have fewer" in many.output  # by name, with counts
    assert not Store.open(db).run_exists("f2")  # refused before a stage (and its run) is recorded: it failed inside one
    # the rows --where selects are the ones folded
    few = kd("teach", "--run", "f4", "--model", str(tiny_model), "--folds", "25", "--where", "id <= 30", "--max-len", "32", "--db", db, ok=False)
    assert "every class needs at least 25 train samples" in few.output and not Store.open(db).run_exists("f4")


def test_folds_refused_for_a_small_class_give_advice_that_can_be_followed(sample_store, tiny_model, tmp_path):
    """A class of 1 train sample (a rare news topic) with --folds 2 said "use fewer folds", which
    --folds (at least 2) cannot do; a class of 3 with --folds 5 did not say how many would do."""
    db = str(sample_store)
    kd("ingest", str(write_tsv(tmp_path / "rare.tsv", [("mid", "很好太差"), ("mid", "还好一般"), ("mid", "比较一般")])), "--db", db)
    three = kd("teach", "--run", "f3", "--model", str(tiny_model), "--folds", "5", "--max-len", "32", "--db", db, ok=False)
    assert "--folds 5: every class needs at least 5 train samples, and 'mid' (3) has fewer: use --folds 3 or fewer" in three.output
    mids = [s["id"] for s in json.loads(kd("samples", "--label", "mid", "--json", "--db", db).stdout)]
    kd("labels", "set", "--run", "f3", f"{mids[0]}=drop", f"{mids[1]}=drop", "--db", db)
    one = kd("teach", "--run", "f1", "--model", str(tiny_model), "--folds", "2", "--max-len", "32", "--db", db, ok=False)
    assert "'mid' (1) has fewer: no number of folds splits a class of 1 sample: add train samples of it, or relabel or drop it" in one.output
    assert "use fewer folds" not in one.output


def test_teach_refuses_mismatched_tokenizer_and_foreign_head(sample_store, tiny_model, tmp_path):
    from transformers import BertConfig, BertForSequenceClassification, BertForMaskedLM

    from kdstore.vocab import build_vocab, make_tokenizer

    db = str(sample_store)
    # a tokenizer with more tokens than the model's embedding table
    small = tmp_path / "small-vocab-model"
    BertForMaskedLM(BertConfig(vocab_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=1,
                               intermediate_size=16, max_position_embeddings=40)).save_pretrained(small)
    make_tokenizer(build_vocab(["这是一个很长的词表测试句子"])).save_pretrained(small)
    mismatch = kd("teach", "--run", "tok", "--model", str(small), "--max-len", "32", "--db", db, ok=False)
    assert "do not belong together" in mismatch.output
    # a classifier fine-tuned for other classes
    foreign = tmp_path / "foreign-head"
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(tiny_model)
    cfg.id2label, cfg.label2id = {0: "spam", 1: "ham"}, {"spam": 0, "ham": 1}
    BertForSequenceClassification(cfg).save_pretrained(foreign)
    make_tokenizer(build_vocab(["很好"])).save_pretrained(foreign)
    head = kd("teach", "--run", "head", "--model", str(foreign), "--max-len", "32", "--db", db, ok=False)
    assert "fine-tuned for classes ['spam', 'ham']" in head.output
    assert _stage(sample_store, "tok", "teach").status == "failed"
    assert head.output.count("\n") == 1 and not Store.open(db).run_exists("head")  # refused before a stage: it failed inside one
    assert _count(sample_store, Logit) == 0


def test_teach_refuses_a_vocab_txt_naming_a_token_twice(sample_store, tiny_model, tmp_path):
    """A vocab.txt that names a token twice has one token fewer than lines, its last line's id past
    a table sized to the tokenizer's length: len(tokenizer) == vocab_size passed, and torch's
    "IndexError: index out of range in self" traceback came mid-training."""
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    tokens = [t for t, _ in sorted(AutoTokenizer.from_pretrained(tiny_model).get_vocab().items(), key=lambda kv: kv[1])]
    lines = tokens[:5] + ["很"] + tokens[5:]  # 很 twice: its second line's id wins, the last line's id is len(lines) - 1
    folder = tmp_path / "dup-vocab"
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    bert = lambda n: BertForMaskedLM(BertConfig(vocab_size=n, hidden_size=16, num_hidden_layers=1, num_attention_heads=1,
                                                intermediate_size=16, max_position_embeddings=40))
    bert(len(lines)).save_pretrained(folder)  # (config.json first: AutoTokenizer reads the model type from it)
    n = len(AutoTokenizer.from_pretrained(folder))
    assert n == len(lines) - 1
    bert(n).save_pretrained(folder)  # a table as large as the tokenizer says it is
    db = str(sample_store)
    result = kd("teach", "--run", "dup", "--model", str(folder), "--epochs", "1", "--max-len", "32", "--db", db, ok=False)
    assert result.output.strip().splitlines() == [
        f"Error: tokenizer of {str(folder)!r} gives token ids up to {n} but the model's embedding table has {n} rows "
        f"(ids 0-{n - 1}); its {n} tokens leave 1 id unused (a vocab.txt that names a token twice?): they do not belong together"]
    assert _stage(sample_store, "dup", "teach").status == "failed"
    assert _count(sample_store, Logit) == 0


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_a_checkpoint_of_the_stores_classes_in_another_order_keeps_its_head_reordered(tmp_path, kind):
    """A user's classifier fine-tuned for ['pos', 'neg'] was refused by a store of ['neg', 'pos']
    ("start from the base model"): its fine-tuning thrown away. Now the head's rows follow the store."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from kdstore.teacher import load_classifier

    texts = {"train": write_tsv(tmp_path / "t.tsv", [("pos", "很好"), ("neg", "很差")])}
    base = (tiny_bert_for if kind == "bert" else tiny_roberta_for)(texts, tmp_path / "base")
    theirs = AutoModelForSequenceClassification.from_pretrained(base, num_labels=2, id2label={0: "pos", 1: "neg"},
                                                                label2id={"pos": 0, "neg": 1}).eval()
    theirs.save_pretrained(tmp_path / "theirs")
    AutoTokenizer.from_pretrained(base).save_pretrained(tmp_path / "theirs")
    tokenizer, ours = load_classifier(str(tmp_path / "theirs"), ["neg", "pos"])
    batch = tokenizer(["很好", "很差很差"], return_tensors="pt", padding=True)
    with torch.no_grad():
        want, got = theirs(**batch).logits, ours.eval()(**batch).logits
    assert torch.allclose(got, want[:, [1, 0]], atol=1e-6)
    assert ours.config.id2label == {0: "neg", 1: "pos"}
    with pytest.raises(KdError, match=r"fine-tuned for classes \['pos', 'neg'\], the store has \['neg', 'pos', 'mid'\]"):
        load_classifier(str(tmp_path / "theirs"), ["neg", "pos", "mid"])  # another class set: still refused


def test_a_checkpoint_whose_config_names_its_classes_with_numbers_loads(tmp_path):
    """A config.json with {"0": 2, "1": 1} (numbers, not strings) for a store of classes '1' and '2':
    the reorder's lookup of the store's names among the checkpoint's raised a ValueError traceback."""
    import json

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from kdstore.teacher import load_classifier

    texts = {"train": write_tsv(tmp_path / "t.tsv", [("1", "很好"), ("2", "很差")])}
    base = tiny_bert_for(texts, tmp_path / "base")
    theirs = AutoModelForSequenceClassification.from_pretrained(base, num_labels=2).eval()
    theirs.save_pretrained(tmp_path / "theirs")
    AutoTokenizer.from_pretrained(base).save_pretrained(tmp_path / "theirs")
    cfg = json.loads((tmp_path / "theirs" / "config.json").read_text())
    cfg["id2label"], cfg["label2id"] = {"0": 2, "1": 1}, {"2": 0, "1": 1}
    (tmp_path / "theirs" / "config.json").write_text(json.dumps(cfg))
    for names, rows in ((["2", "1"], [0, 1]), (["1", "2"], [1, 0])):
        tokenizer, ours = load_classifier(str(tmp_path / "theirs"), names)
        batch = tokenizer(["很好", "很差很差"], return_tensors="pt", padding=True)
        with torch.no_grad():
            want, got = theirs(**batch).logits, ours.eval()(**batch).logits
        assert torch.allclose(got, want[:, rows], atol=1e-6)


def test_a_head_as_wide_as_its_classes_reorders_its_output_layer():
    """RoBERTa's head is ``dense`` (hidden -> hidden) then ``out_proj`` (hidden -> classes): with as
    many classes as the hidden width both matched and the reorder was refused; the output layer is the last."""
    from transformers import RobertaConfig, RobertaForSequenceClassification

    from kdstore.teacher import _reorder_head

    torch.manual_seed(0)
    model = RobertaForSequenceClassification(RobertaConfig(vocab_size=40, hidden_size=4, num_hidden_layers=1, num_attention_heads=2,
                                                           intermediate_size=8, max_position_embeddings=20, num_labels=4)).eval()
    ids = torch.tensor([[0, 5, 6, 7, 2]])
    with torch.no_grad():
        want = model(input_ids=ids).logits[:, [3, 1, 0, 2]]
        _reorder_head(model, [3, 1, 0, 2], "m")
        assert torch.allclose(model(input_ids=ids).logits, want, atol=1e-6)


def test_distill_schedules_teacher_embeddings_and_weights(taught_store, tiny_model):
    db = str(taught_store)
    common = ["--epochs", "1", "--num-filters", "8", "--max-len", "32", "--db", db]
    wrong_dim = kd("distill", "--run", "r", "--init-embeddings", "teacher", "--embed-dim", "16", *common, ok=False)
    assert "the teacher's token embeddings are 32 wide" in wrong_dim.output and "give 32" in wrong_dim.output
    assert "distill-textcnn" not in [s.name for s in Store.open(db).stages_of("r")]  # refused before a stage (it failed inside one)
    out = kd("distill", "--run", "r", "--init-embeddings", "teacher", "--alpha", "0.9",  # --embed-dim: the teacher's width
             "--alpha-end", "0.1", "--temperature", "4", "--temperature-end", "1", "--overwrite", *common, "--json")
    report = json.loads(out.stdout)
    assert report["status"] == "succeeded"
    assert report["config"]["alpha_end"] == 0.1 and report["config"]["init_embeddings"] == "teacher"
    assert report["config"]["embed_dim"] == 32
    assert report["metrics"]["all"]["flops_per_sample"] > 0
    for schedule in ("flsw", "cwsm"):
        out = kd("distill", "--run", "r", "--temperature", "3", "--temperature-schedule", schedule, "--temperature-beta", "0.5",
                 "--name", f"t-{schedule}", *common, "--json")
        assert json.loads(out.stdout)["config"]["temperature_schedule"] == schedule
    untied = kd("distill", "--run", "r", "--alpha", "1", "--hard-weight", "1", "--hard-weight-end", "0", "--name", "untied",
                *common, "--json")
    assert json.loads(untied.stdout)["config"]["hard_weight"] == 1 and json.loads(untied.stdout)["config"]["hard_weight_end"] == 0
    # the weights reach the loss: no soft weight and a hard weight of 1 is the tied --alpha 0's loss, twice that weight twice it
    # (no soft weight and no hard weight, nothing to learn from, is refused:
    # test_weights_that_leave_nothing_to_learn_are_refused_before_a_stage)
    def train_loss(*weights, name):
        report = json.loads(kd("distill", "--run", "r", *weights, "--no-unlabeled", "--name", name, *common, "--json").stdout)
        return [h["value"] for h in report["history"] if h["split"] == "train" and h["name"] == "loss"][0]

    hard = train_loss("--alpha", "0", "--hard-weight", "1", name="hard")
    assert hard > 0 and hard == pytest.approx(train_loss("--alpha", "0", name="tied"), rel=1e-6)
    assert train_loss("--alpha", "0", "--hard-weight", "2", name="hard2") != pytest.approx(hard, rel=1e-3)
    lone_end = kd("distill", "--run", "r", "--hard-weight-end", "0", "--name", "lone", *common, ok=False)
    assert "--hard-weight-end schedules --hard-weight" in lone_end.output
    shifted = kd("distill", "--run", "r", "--probability-shift", "--name", "shifted", *common, "--json")
    assert json.loads(shifted.stdout)["config"]["probability_shift"] is True
    mse = kd("distill", "--run", "r", "--soft-loss", "mse", "--temperature-schedule", "flsw", "--name", "t-mse", *common, ok=False)
    assert "needs a softened loss" in mse.output
    idle = kd("distill", "--run", "r", "--temperature-beta", "2", "--name", "t-idle", *common, ok=False)
    assert "add --temperature-schedule flsw or cwsm" in idle.output
    # two teachers (the same run twice), weighted; a weight count that does not match is refused
    kd("distill", "--run", "r", "--teacher-run", "r", "--teacher-run", "r", "--teacher-weight", "3",
       "--teacher-weight", "1", "--name", "two-teachers", *common)
    bad = kd("distill", "--run", "r", "--teacher-run", "r", "--teacher-weight", "1", "--teacher-weight", "2",
             "--name", "bad-weights", *common, ok=False)
    assert "--teacher-weight values for 1 teacher run" in bad.output
    zero = kd("distill", "--run", "r", "--teacher-run", "r", "--teacher-run", "r", "--teacher-weight", "1",
              "--teacher-weight", "0", "--name", "zero-weight", *common, ok=False)
    assert "must be positive" in zero.output and "leave that --teacher-run out" in zero.output
    # weights whose sum overflows a float: the teachers weigh alike (it was a failed stage and a ZeroDivisionError traceback)
    huge = kd("distill", "--run", "r", "--teacher-run", "r", "--teacher-run", "r", "--teacher-weight", "1e308",
              "--teacher-weight", "1e308", "--name", "huge-weights", *common, "--json")
    assert json.loads(huge.stdout)["status"] == "succeeded"


def test_distill_two_teachers_learns_their_probabilities_averaged_in_weight_order(taught_store, tiny_model, monkeypatch):
    """README: several teachers' "probabilities averaged with those weights" (the first weight for the
    first --teacher-run); their logits were averaged, so the surer teacher outvoted the other."""
    import kdstore.distill
    from kdstore.probs import softmax

    db = str(taught_store)
    kd("teach", "--run", "r2", "--model", str(tiny_model), "--epochs", "1", "--lr", "2e-3", "--seed", "7",
       "--batch-size", "8", "--max-len", "32", "--db", db)
    targets = []
    fit = kdstore.distill._fit

    def recording(add_metrics, stage, cfg, built, tokenizer, names, data, dev, teachers, *args, **kwargs):
        targets.append((data.ids.copy(), teachers.rows(data.ids)))
        return fit(add_metrics, stage, cfg, built, tokenizer, names, data, dev, teachers, *args, **kwargs)

    monkeypatch.setattr(kdstore.distill, "_fit", recording)
    kd("distill", "--run", "r", "--teacher-run", "r", "--teacher-run", "r2", "--teacher-weight", "1", "--teacher-weight", "3",
       "--epochs", "1", "--embed-dim", "8", "--num-filters", "4", "--max-len", "32", "--name", "mixed", "--db", db)
    store = Store.open(db)
    (ids, got), = targets
    probs = []
    for run in ("r", "r2"):
        t_ids, t_logits = store.read_logits(store.find_stage(run, "teach").id)
        row = {int(i): k for k, i in enumerate(t_ids)}
        probs.append(softmax(t_logits[[row[int(i)] for i in ids]]))
    np.testing.assert_allclose(softmax(got), 0.25 * probs[0] + 0.75 * probs[1], rtol=0, atol=2e-6)  # (tiny teachers: logits near 0)
    # --teacher-average logits: their logits so weighted, recorded; one teacher: said to be of no use; early exit: refused
    targets.clear()
    kd("distill", "--run", "r", "--teacher-run", "r", "--teacher-run", "r2", "--teacher-weight", "1", "--teacher-weight", "3",
       "--teacher-average", "logits", "--epochs", "1", "--embed-dim", "8", "--num-filters", "4", "--max-len", "32", "--name", "by-logits", "--db", db)
    (ids, got), = targets
    logits = []
    for run in ("r", "r2"):
        t_ids, t_logits = store.read_logits(store.find_stage(run, "teach").id)
        row = {int(i): k for k, i in enumerate(t_ids)}
        logits.append(t_logits[[row[int(i)] for i in ids]])
    np.testing.assert_allclose(got, 0.25 * logits[0] + 0.75 * logits[1], rtol=1e-5, atol=1e-6)
    assert next(s for s in Store.open(db).stages_of("r") if s.name == "by-logits").config["teacher_average"] == "logits"
    one = kd("distill", "--run", "r", "--teacher-average", "logits", "--epochs", "1", "--embed-dim", "8", "--num-filters", "4",
             "--max-len", "32", "--name", "one", "--db", db)
    assert "warning: --teacher-average: not used: it averages several --teacher-run, and this student has one teacher" in one.output
    recorded = next(s for s in Store.open(db).stages_of("r") if s.name == "one").config  # (as used: kd report showed logits)
    assert (recorded["teacher_average"], recorded["teacher_weights"]) == ("probs", [])
    doubled = kd("distill", "--run", "zz", "--teacher-run", "r", "--teacher-run", "r2", "--teacher-run", "r", "--epochs", "1",
                 "--embed-dim", "8", "--num-filters", "4", "--max-len", "32", "--db", db)  # (r weighed 2/3, unsaid)
    assert "warning: --teacher-run r named more than once: counted as often in the average of the teachers" in doubled.stderr
    same = kd("distill", "--run", "zz", "--teacher-run", "r", "--teacher-run", "r", "--epochs", "1", "--name", "same",
              "--embed-dim", "8", "--num-filters", "4", "--max-len", "32", "--db", db)  # (a typo for r2: one teacher, in silence)
    assert "warning: --teacher-run r named 2 times: this student has one teacher, that of run 'r'" in same.stderr, same.stderr
    bad = kd("distill", "--run", "r", "--student", "early-exit", "--teacher-average", "logits", "--name", "ee", "--db", db, ok=False)
    assert "--teacher-average: for students, not --student early-exit" in bad.output


def test_a_config_files_teacher_weights_do_not_weigh_typed_teacher_runs(taught_store, tmp_path):
    """A file's `teacher-weight = [3, 1]` weighs its own `teacher-run = [...]`: typed other --teacher-run
    took them in their order (`--teacher-run b --teacher-run a` gave b the weight 3, in silence), and a
    typed single one was refused over weights nobody typed. They go back to equal weights, with a warning."""
    db = str(taught_store)
    (tmp_path / "kd.toml").write_text('[distill]\nteacher-run = ["x", "y"]\nteacher-weight = [3, 1]\n', encoding="utf-8")
    out = kd("distill", "--run", "r", "--teacher-run", "r", "--epochs", "1", "--embed-dim", "8", "--num-filters", "4",
             "--max-len", "32", "--name", "typed", "--db", db, "--json")
    report = json.loads(out.stdout)
    assert report["config"]["teacher_runs"] == ["r"] and report["config"]["teacher_weights"] == []
    assert any("the config file's 3, 1 weigh its teacher runs x, y, not the typed r: not used" in w for w in report["warnings"])


def test_mask_augmentation_with_teachers_of_unlike_unknown_tokens_is_refused(taught_store, tiny_model, tmp_path):
    """--augment mask wrote the first teacher's [UNK] into texts a second teacher, whose tokenizer's
    unknown token is <unk>, scored as the five characters [, U, N, K, ]. Refused before a stage is recorded."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    other = tmp_path / "unk-bert"
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.add_special_tokens({"unk_token": "<unk>"})
    model = AutoModelForMaskedLM.from_pretrained(tiny_model)
    model.resize_token_embeddings(len(tokenizer))
    model.save_pretrained(other)
    tokenizer.save_pretrained(other)
    db = str(taught_store)
    kd("teach", "--run", "u", "--model", str(other), "--epochs", "1", "--max-len", "32", "--db", db)
    refused = kd("distill", "--run", "r", "--teacher-run", "r", "--teacher-run", "u", "--augment", "mask", "--epochs", "1",
                 "--embed-dim", "8", "--num-filters", "4", "--max-len", "32", "--name", "masked", "--db", db, ok=False)
    assert ("--augment mask writes '[UNK]', the unknown token of the teacher of run 'r', where the tokenizer of run 'u' has '<unk>'"
            in refused.output), refused.output
    assert _count(taught_store, AugmentedText) == 0  # nothing written
    # refused before a stage is recorded (it was a failed stage, and a new run holding one for a --run of its own)
    assert "masked" not in {s.name for s in Store.open(db).stages_of("r")}
    fresh = kd("distill", "--run", "fresh", "--teacher-run", "r", "--teacher-run", "u", "--augment", "mask", "--db", db, ok=False)
    assert "--augment mask writes '[UNK]'" in fresh.output and not Store.open(db).run_exists("fresh"), fresh.output


def test_distill_with_augmentation_stores_and_reuses_augmented_samples(taught_store, tmp_path):
    db = str(taught_store)
    common = ["--run", "r", "--augment", "mask,pos,ngram", "--augment-n", "2", "--no-unlabeled", "--epochs", "1",
              "--embed-dim", "16", "--num-filters", "8", "--max-len", "32", "--db", db, "--json"]
    samples_before = _count(taught_store, Sample)
    first = json.loads(kd("distill", *common).stdout)["metrics"]["all"]
    assert first["augmented_added"] > 0 and first["augmented_samples"] == first["augmented_added"]
    assert first["pool_samples"] == 0
    store = Store.open(db)
    with store.session() as s:
        augmented = list(s.scalars(select(Sample).where(Sample.parent_id.is_not(None))))
        parents = {p.id: p for p in s.scalars(select(Sample).where(Sample.split == "train"))}
    names = store.class_names()
    assert len(augmented) == first["augmented_added"]
    for a in augmented:
        parent = parents[a.parent_id]
        assert a.split == "unlabeled" and a.label_id is None and a.text.strip()
        assert a.meta["parent_label"] == names[parent.label_id]  # the parent's label is kept
        assert a.source.startswith("augment:mask+pos+ngram:n2")
    teacher = _stage(taught_store, "r", "teach")
    ids, _ = store.read_logits(teacher.id)
    assert {a.id for a in augmented} <= set(ids.tolist())  # scored by the teacher
    again = json.loads(kd("distill", *common, "--name", "again").stdout)["metrics"]["all"]
    assert again["augmented_added"] == 0 and again["augmented_samples"] == first["augmented_samples"]
    # the plain summary says what the student learned from (said by --json and kd report alone before)
    said = kd("distill", *common[:-1], "--name", "said").stdout
    assert f"  learned from {first['train_samples']:,} labeled, {first['augmented_samples']:,} augmented texts\n" in said
    # a labeled file ingested after --augment whose text is one it made: a conflict, and the ingest says why
    write_tsv(tmp_path / "test-late.tsv", [("pos", augmented[0].text)])
    out = kd("ingest", str(tmp_path / "test-late.tsv"), "--split", "test", "--db", db).stdout
    assert ("  1 conflict with a text `kd distill --augment` made, which stays unlabeled (students distilled with --augment "
            "learned it from the teacher, and test figures would count it: --take-pool takes such texts into train only)\n") in out
    # a train sample ingested later is augmented (and scored) by the next run of the same recipe; and a text --augment
    # made that an annotator labeled since, taken into train (--take-pool): a train sample, no recipe's text
    write_tsv(tmp_path / "late.tsv", [("pos", "后来补充的一条评论，质量不错，物流也很快"), ("neg", augmented[1].text)])
    assert json.loads(kd("ingest", str(tmp_path / "late.tsv"), "--take-pool", "--json", "--db", db).stdout)["taken_from_pool"] == 1
    # --augment scores its own texts only: a train sample the teacher never saw is for --logits-only to score
    unseen = kd("distill", *common, "--name", "later", ok=False)
    assert "1 train sample has no teacher logits" in unseen.output
    assert _count(taught_store, Sample) == first["augmented_samples"] + samples_before + 1  # refused before --augment wrote
    kd("teach", "--run", "r", "--logits-only", "--db", db)
    later = json.loads(kd("distill", *common, "--name", "later", "--overwrite").stdout)["metrics"]["all"]
    assert later["augmented_added"] > 0
    assert later["augmented_samples"] == first["augmented_samples"] - 1 + later["augmented_added"]  # (the one taken is no more)
    assert later["train_samples"] == first["train_samples"] + 2
    with store.session() as s:
        late_id = s.scalar(select(Sample.id).where(Sample.source.like("%late.tsv"), Sample.line == 1))
        children = s.scalars(select(Sample.parent_id).where(Sample.id > late_id)).all()
    assert late_id in set(children) <= {late_id, augmented[1].id} and len(children) == later["augmented_added"]
    bad = kd("distill", "--run", "r", "--augment", "synonym", "--db", db, ok=False)
    assert "unknown augmentation method" in bad.output
    # the cost of a forward pass is over the texts latency is timed on, not the (shorter) augmented ones
    plain = json.loads(kd("distill", *[a for a in common if a not in ("--augment", "mask,pos,ngram", "--augment-n", "2")],
                          "--name", "plain").stdout)["metrics"]["all"]
    assert (plain["flops_per_sample"], plain["mean_tokens"]) == (first["flops_per_sample"], first["mean_tokens"])
    # a recipe that can make nothing (every word masked: no text but unknown tokens) says so, not a silent 0
    none = kd("distill", *["mask" if a == "mask,pos,ngram" else a for a in common if a != "--json"], "--p-mask", "1", "--name", "nothing")
    assert "warning: --augment made no text the student could learn from" in none.output
    assert "warning: --augment made no text" not in kd("distill", *common, "--name", "again", "--overwrite").output


def test_augmentation_recipes_share_their_texts_and_a_dropped_parent_takes_its_own(taught_store):
    """A text is stored once, so a recipe whose texts an earlier recipe stored (``--augment-n 2``
    after ``--augment-n 1``) still trains on all of them; a probability of a method the recipe does
    not use names the same recipe; the texts of a train sample that ``kd labels clean`` dropped are
    left out with it."""
    db = str(taught_store)
    common = ["--run", "r", "--no-unlabeled", "--augment", "ngram", "--epochs", "1", "--embed-dim", "16",
              "--num-filters", "8", "--max-len", "32", "--db", db, "--json"]
    figures = lambda *args: json.loads(kd("distill", *common, *args).stdout)["metrics"]["all"]  # noqa: E731
    one = figures("--augment-n", "1", "--name", "n1")
    assert one["augmented_added"] == one["augmented_samples"] > 0
    same = figures("--augment-n", "1", "--p-mask", "0.3", "--name", "n1-again")  # --p-mask changes no ngram text
    assert (same["augmented_added"], same["augmented_samples"]) == (0, one["augmented_samples"])
    two = figures("--augment-n", "2", "--name", "n2")
    assert two["augmented_samples"] > two["augmented_added"]  # texts the first recipe stored count too
    store = Store.open(db)
    n1 = store.samples(augmented="augment:ngram:n1:s42:p-/-/0.25")
    n2 = store.samples(augmented="augment:ngram:n2:s42:p-/-/0.25")
    assert len(n1) == one["augmented_samples"] and len(n2) == two["augmented_samples"]
    parents = store.parents()
    parent = parents[int(n1.ids[0])]
    children = sum(1 for i in n1.ids if parents.get(int(i)) == parent)
    edit_labels(db, "r", "review", {parent: "drop"})
    after = figures("--augment-n", "1", "--name", "n1-dropped")
    assert after["augmented_added"] == 0 and after["augmented_samples"] == one["augmented_samples"] - children
    # dropped while a new recipe first ran, then restored (undo): that recipe's next run augments it
    three = figures("--augment-n", "3", "--name", "n3")
    made_by = lambda: {store.parents().get(int(i)) for i in store.samples(augmented="augment:ngram:n3:s42:p-/-/0.25").ids}  # noqa: E731
    assert three["augmented_samples"] > 0 and parent not in made_by()
    kd("labels", "undo", "--run", "r", "--stage", "review", "--db", db)
    back = figures("--augment-n", "3", "--name", "n3-back")
    assert parent in made_by() and back["augmented_samples"] > three["augmented_samples"]


def test_distill_options_are_checked_before_anything_is_written(taught_store, tmp_path):
    db = str(taught_store)
    samples = _count(taught_store, Sample)
    wide = kd("distill", "--run", "r", "--augment", "ngram", "--augment-n", "1", "--kernel-sizes", "2,40", "--max-len", "32",
              "--name", "k2", "--db", db, ok=False)
    assert "wider than --max-len" in wide.output and _count(taught_store, Sample) == samples  # no augmented text stored
    assert "k2" not in {s.name for s in Store.open(db).stages_of("r")}  # refused before a stage
    for args, message in (
        (["--init-embeddings", "teacher", "--embed-dim", "16"], "the teacher's token embeddings are 32 wide"),
        (["--student", "transformer", "--init-embeddings", "teacher"], "--init-embeddings teacher is for textcnn/bigru/bilstm"),
        (["--student", "transformer", "--layers", "1", "--value-relation", "1", "--relation-heads", "5"], "--relation-heads 5 does not divide"),
    ):
        bad = kd("distill", "--run", "r", "--augment", "ngram", "--augment-n", "1", *args, "--max-len", "32", "--name", "k2", "--overwrite", "--db", db, ok=False)
        assert message in bad.output and _count(taught_store, Sample) == samples, (args, bad.output)
    for args, message in (
        (["--max-len", "0"], "--max-len must be at least 1, got 0"),
        (["--soft-loss", "mse", "--temperature", "7"], "--soft-loss mse reads raw logits"),
        (["--student", "transformer", "--layers", "1", "--width", "16", "--init-from-teacher", "--max-len", "32"], "--init-from-teacher copies teacher layers of width 32"),
        (["--student", "early-exit", "--max-len", "100"], "is longer than model"),
    ):
        bad = kd("distill", "--run", "r", "--epochs", "1", *args, "--name", "bad", "--overwrite", "--db", db, ok=False)
        assert message in bad.output and "Traceback" not in bad.output, (args, bad.output)
    # options a student or recipe does not use are named; pool texts without teacher logits too
    (tmp_path / "late.txt").write_text("后来才加进来的一条没有标签的评论\n", encoding="utf-8")
    kd("ingest", str(tmp_path / "late.txt"), "--split", "unlabeled", "--db", db)
    out = kd("distill", "--run", "r", "--student", "bigru", "--kernel-sizes", "2,3", "--p-mask", "0.2", "--relation-heads", "2",
             "--no-init-from-teacher", "--epochs", "1", "--embed-dim", "16", "--hidden", "16", "--max-len", "32", "--name", "warned", "--db", db)
    # (an on/off flag named as typed: it was "--init-from-teacher")
    assert "warning: --no-init-from-teacher, --kernel-sizes, --relation-heads: not used by --student bigru" in out.stderr
    assert "warning: --p-mask: not used by --augment (none)" in out.stderr
    assert "warning: 1 unlabeled text has no teacher logits and is left out: run `kd teach --run r --logits-only` first" in out.stderr


def test_a_student_shape_that_cannot_run_is_refused_before_a_stage_or_run(taught_store):
    """Each of these was checked inside the stage: a failed stage (and a new run holding it) was left
    on record for a refusal the teacher's configuration and the options already decided."""
    db = str(taught_store)
    for args, message in (
        (["--kernel-sizes", "2,40"], "kernel width 40 is wider than --max-len 32"),  # the teacher's --max-len
        (["--student", "transformer", "--layers", "1", "--max-len", "100"], "--max-len 100 exceeds the teacher's 64 positions, which a transformer student takes with its configuration: use --max-len 64 or less"),
        (["--student", "transformer", "--layers", "1", "--width", "129"], "--width 129 is not divisible by its 2 attention heads"),
        (["--student", "transformer", "--layers", "1", "--width", "16", "--init-from-teacher", "--hidden-mse", "1"],
         "--init-from-teacher copies teacher layers of width 32: the student is 16 wide"),
        (["--student", "transformer", "--layers", "1", "--width", "12", "--value-relation", "1", "--relation-heads", "8"],
         "--relation-heads 8 does not divide the student's width 12"),
        (["--folds", "31"], "--folds 31: every class needs at least 31 train samples"),
        (["--student", "early-exit", "--max-len", "100", "--max-loss", "0.5"], "--max-len 100 is longer than model"),
    ):
        bad = kd("distill", "--run", "fresh", "--teacher-run", "r", "--epochs", "1", *args, "--db", db, ok=False)
        assert message in bad.output and len(bad.output.strip().splitlines()) == 1, (args, bad.output)
        assert not Store.open(db).run_exists("fresh"), args


def test_a_student_shape_refused_among_several_teachers_names_the_first_teacher_run(taught_store, corpus, tiny_model, tmp_path):
    """`kd distill --teacher-run w --teacher-run r` (w 16 wide, 40 positions, its own vocabulary; r 32 wide, 64) was
    refused as "teacher layers of width 16", "the teacher's 40 positions", "the teacher's token embeddings are 16
    wide" or "its vocabulary is not the teacher's": of two teachers, which? r fits each. The error names the first
    --teacher-run, whose tokenizer, table and layers the student takes (as a --layer-map refusal already did)."""
    from transformers import BertConfig, BertForMaskedLM

    from kdstore.vocab import build_vocab, make_tokenizer

    db = str(taught_store)
    texts = [line.split("\t")[-1] for p in corpus.values() for line in p.read_text(encoding="utf-8").splitlines()]
    tokens = build_vocab(texts)[:-3]  # (another vocabulary than r's)
    narrow = tmp_path / "narrow"
    seeded(BertForMaskedLM, BertConfig(vocab_size=len(tokens), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=32, max_position_embeddings=40)).save_pretrained(narrow)
    make_tokenizer(tokens).save_pretrained(narrow)
    kd("teach", "--run", "w", "--model", str(narrow), "--epochs", "1", "--max-len", "32", "--db", db)
    for args, message in (
        (["--student", "transformer", "--layers", "1", "--width", "32", "--init-from-teacher"], "copies teacher layers of width 16"),
        (["--student", "transformer", "--layers", "1", "--max-len", "50"], "--max-len 50 exceeds the teacher's 40 positions"),
        (["--student", "bigru", "--init-embeddings", "teacher", "--embed-dim", "32"], "the teacher's token embeddings are 16 wide"),
        (["--student", "transformer", "--student-model", str(tiny_model)], "is not the teacher's"),
    ):
        bad = kd("distill", "--run", "fresh", "--teacher-run", "w", "--teacher-run", "r", "--epochs", "1", *args, "--db", db, ok=False)
        line = bad.output.strip().splitlines()[-1]
        assert message in line and "(the teacher of run 'w', the first --teacher-run" in line, (args, bad.output)
        assert not Store.open(db).run_exists("fresh"), args
        alone = kd("distill", "--run", "fresh", "--teacher-run", "w", "--epochs", "1", *args, "--db", db, ok=False)
        assert message in alone.output and "first --teacher-run" not in alone.output, (args, alone.output)


def test_student_sizes_past_the_machines_memory_are_one_line_before_a_stage_or_run(taught_store):
    """Sizes whose weights cannot be allocated failed the stage with PyTorch's traceback (an
    allocation failure, or an integer overflow for a size past 64 bits); a very deep transformer
    built layers for hours first. Refused in one line, from the configuration, before a stage."""
    db = str(taught_store)
    for args, option in (
        (["--embed-dim", "100000000000"], "lower --embed-dim, --num-filters"),
        (["--num-filters", "99999999999999999999"], "lower --embed-dim, --num-filters"),
        (["--student", "bilstm", "--hidden", "10000000000"], "lower --embed-dim, --hidden"),
        (["--student", "transformer", "--layers", "100000000"], "lower --layers, --width"),
    ):
        bad = kd("distill", "--run", "fresh", "--teacher-run", "r", "--epochs", "1", *args, "--db", db, ok=False)
        assert "student of these sizes has" in bad.output and option in bad.output, (args, bad.output)
        assert "Traceback" not in bad.output and len(bad.output.strip().splitlines()) == 1, (args, bad.output)
        assert not Store.open(db).run_exists("fresh"), args


def test_a_layer_map_chooses_the_teacher_layers_a_transformer_student_copies_and_matches(taught_store):
    """TextBrewer's intermediate matches name their layers; kd only spaced them evenly."""
    import torch
    from safetensors.torch import load_file

    db = str(taught_store)
    common = ("distill", "--run", "r", "--student", "transformer", "--epochs", "1", "--max-len", "32", "--db", db)
    out = json.loads(kd(*common, "--layers", "2", "--layer-map", "1,0", "--hidden-mse", "1", "--json").stdout)
    assert out["config"]["layer_map"] == [1, 0]
    assert (out["metrics"]["all"]["teacher_layer[0]"], out["metrics"]["all"]["teacher_layer[1]"]) == (1, 0)
    one = json.loads(kd(*common, "--layers", "1", "--layer-map", "0", "--epochs", "1", "--lr", "1e-12", "--name", "first", "--json").stdout)
    teacher = load_file(str(next(Path(_stage(taught_store, "r", "teach").artifact_path).glob("**/model.safetensors"))))
    from kdstore.predictor import STUDENT_WEIGHTS

    student = torch.load(Path(one["artifact_path"]) / STUDENT_WEIGHTS, map_location="cpu")
    copied = [k for k in student if ".encoder.layer.0." in k]
    assert copied and all(torch.allclose(student[k], teacher[k.removeprefix("net.")], atol=1e-6) for k in copied)  # layer 0, not the last
    assert not torch.allclose(student[copied[0]], teacher[copied[0].removeprefix("net.").replace(".layer.0.", ".layer.1.")])
    for args, said in ((("--layers", "2", "--layer-map", "1"), "--layer-map names 1 teacher layers for a student of 2 (--layers)"),
                       (("--layers", "1", "--layer-map", "5"), "--layer-map: teacher layer 5 does not exist: the teacher's layers are 0 to 1"),
                       (("--layers", "1", "--layer-map", "x"), "give teacher layers like 3,7,11"),
                       # FSP's teacher stretch runs from the previous mapped layer: a map that does not increase had none
                       (("--layers", "2", "--layer-map", "1,0", "--fsp", "1"), "--fsp matches each student layer with the teacher layers since"),
                       (("--layers", "3", "--fsp", "1"), "a 3-layer student of a 2-layer teacher maps 0,1,1")):
        assert said in kd(*common, *args, "--name", "bad", ok=False).output
    assert "--layer-map maps a transformer student's layers" in kd("distill", "--run", "r", "--layer-map", "0", "--db", db, ok=False).output
    assert "bad" not in {s.name for s in Store.open(db).stages_of("r")}  # refused before a stage


def test_distill_refuses_an_empty_layer_map_typed(tmp_path):
    """`--layer-map "$MAP"` with MAP unset was taken in silence as the default, evenly spaced map (a
    student copying and matching other layers than the ones meant), where an empty --augment or --match is refused."""
    db = tmp_path / "kd.db"
    for typed in ("", " , "):
        out = kd("distill", "--run", "r", "--student", "transformer", "--layers", "2", "--layer-map", typed, "--db", str(db), ok=False)
        assert f"Invalid value for --layer-map: {typed!r}: give teacher layers like 3,7,11" in out.output, out.output
        assert "Traceback" not in out.output
    assert not db.exists()


def test_distill_records_what_it_ran_with_each_folds_kept_epoch_and_whether_layers_were_copied(taught_store):
    """A --folds student recorded no kept epoch at all (`kd teach --folds` records each fold's), and a
    transformer student's config said init_from_teacher null whether it copied the teacher's layers or
    not (teacher_layer[i] is on record for matched layers too)."""
    db = str(taught_store)
    out = json.loads(kd("distill", "--run", "r", "--folds", "2", "--epochs", "4", "--patience", "1", "--embed-dim", "8",
                        "--num-filters", "4", "--max-len", "32", "--name", "votes", "--db", db, "--json").stdout)
    figures = out["metrics"]["all"]
    for k in range(2):
        f1 = {h["step"]: h["value"] for h in out["history"] if h["split"] == "dev" and h["name"] == f"fold{k}/macro_f1"}
        kept = min(e for e, v in f1.items() if v == max(f1.values()))  # early stopping keeps the first best epoch
        assert figures[f"fold{k}/best_epoch"] == kept, (k, f1)
    common = ("distill", "--run", "r", "--student", "transformer", "--layers", "1", "--epochs", "1", "--max-len", "32", "--db", db, "--json")
    for name, args, copied in (("same", (), True), ("narrow", ("--width", "16", "--hidden-mse", "1"), False),
                               ("fresh", ("--no-init-from-teacher",), False)):
        config = json.loads(kd(*common, *args, "--name", name).stdout)["config"]
        assert config["init_from_teacher"] is copied, name
        assert _stage(taught_store, "r", name).config["init_from_teacher"] is copied


def test_a_transformer_students_config_records_the_width_and_relation_heads_it_ran_with(taught_store):
    """A transformer student of the teacher's width recorded width 0, and one with MiniLM's relation
    losses relation_heads 0 ("the default"), whatever the teacher: the stage's config did not say
    how wide the student was, nor over how many heads its relations were taken."""
    db = str(taught_store)
    common = ("distill", "--run", "r", "--student", "transformer", "--layers", "1", "--epochs", "1", "--max-len", "32", "--db", db, "--json")
    for name, args, width, heads in (("same", ("--value-relation", "1"), 32, 2),  # the tiny teacher: 32 wide, 2 heads
                                     ("narrow", ("--width", "16", "--qk-relation", "1"), 16, 1),  # 16 // 64 -> 1 head
                                     ("plain", (), 32, 0)):  # no relation loss: no relation heads to speak of
        config = json.loads(kd(*common, *args, "--name", name).stdout)["config"]
        assert (config["width"], config["relation_heads"]) == (width, heads), name
        assert _stage(taught_store, "r", name).config["width"] == width


def test_a_layer_map_that_nothing_uses_is_warned_of(taught_store):
    """A student that copies no teacher layer (narrower, or --no-init-from-teacher) and has no
    intermediate loss uses no --layer-map: it was taken in silence, and recorded as if it had."""
    db = str(taught_store)
    common = ("distill", "--run", "r", "--student", "transformer", "--layers", "1", "--layer-map", "0", "--epochs", "1",
              "--max-len", "32", "--db", db, "--json")
    for n, args in enumerate((("--width", "16"), ("--no-init-from-teacher",))):
        out = kd(*common, *args, "--name", f"unused{n}")
        said = _warnings(out)
        assert len(said) == 1 and said[0].startswith("--layer-map: not used") and f"warning: {said[0]}" in out.stderr, args
    for n, args in enumerate(((), ("--width", "16", "--hidden-mse", "1"))):  # copied, or matched: no warning
        assert "--layer-map" not in kd(*common, *args, "--name", f"used{n}").stderr, args
    # a --match names its own layers: the map is unused, but the student does match the teacher (not "matches none")
    said = _warnings(kd(*common, "--width", "16", "--match", "hidden_mse:0:1", "--name", "matched"))
    assert len(said) == 1 and said[0].startswith("--layer-map: not used") and "matches none (" not in said[0], said
    assert "--match names its own layers" in said[0], said


def test_a_layer_map_that_only_minilm_relations_would_read_is_warned_of_and_not_recorded(taught_store):
    """MiniLM's --value-relation and --qk-relation read the last layers, whatever the map: a narrower
    student (nothing copied) with no other intermediate loss took --layer-map 0 in silence and recorded
    teacher_layer[0] = 0, a layer no loss matched (the relations read the teacher's last, 1)."""
    db = str(taught_store)
    for n, relation in enumerate(("--value-relation", "--qk-relation")):
        out = kd("distill", "--run", "r", "--student", "transformer", "--layers", "1", "--width", "16", "--layer-map", "0",
                 relation, "1", "--epochs", "1", "--max-len", "32", "--name", f"rel{n}", "--db", db, "--json")
        said = [w for w in _warnings(out) if w.startswith("--layer-map")]
        assert len(said) == 1 and said[0].startswith("--layer-map: not used") and "last layer" in said[0], said
        report = json.loads(out.stdout)
        assert report["status"] == "succeeded"
        assert not any(k.startswith("teacher_layer[") for k in report["metrics"]["all"]), report["metrics"]["all"]


def test_a_teacher_weight_of_a_single_teacher_is_warned_of(taught_store):
    """--teacher-weight weighs several teachers against each other: given for one teacher (or one run
    named twice) it changed nothing and was taken in silence."""
    common = ("distill", "--run", "r", "--student", "textcnn", "--epochs", "1", "--embed-dim", "8", "--num-filters", "4",
              "--db", str(taught_store), "--json")
    for n, args in enumerate((("--teacher-weight", "3"), ("--teacher-run", "r", "--teacher-run", "r", "--teacher-weight", "1", "--teacher-weight", "3"))):
        out = kd(*common, *args, "--name", f"weighed{n}")
        said = [w for w in json.loads(out.stdout)["warnings"] if w.startswith("--teacher-weight")]
        assert len(said) == 1 and "one teacher" in said[0] and f"warning: {said[0]}" in out.stderr, args


def test_a_teacher_weight_count_refused_is_not_also_warned_unused(taught_store):
    """Two --teacher-weight for one teacher: warned "not used" on the line above the error that refuses
    the command for them (told both that the weights were ignored and that they stopped it)."""
    out = kd("distill", "--run", "r", "--teacher-run", "r", "--teacher-weight", "1", "--teacher-weight", "2",
             "--epochs", "1", "--db", str(taught_store), ok=False)
    assert "2 --teacher-weight values for 1 teacher run(s)" in out.output, out.output
    assert "not used" not in out.output, out.output


def test_a_teacher_weight_count_refused_names_a_config_files_teacher_runs(taught_store, tmp_path):
    """Two typed --teacher-weight where the config file's `teacher-run` names three runs and none is typed:
    "2 --teacher-weight values for 3 teacher run(s)" named neither the runs nor the file they came from."""
    (tmp_path / "kd.toml").write_text('[distill]\nteacher-run = ["r", "r", "r"]\n', encoding="utf-8")
    out = kd("distill", "--run", "r", "--teacher-weight", "1", "--teacher-weight", "2", "--epochs", "1",
             "--db", str(taught_store), ok=False)
    line = [ln for ln in out.output.splitlines() if ln.startswith("Error:")][-1]
    assert "2 --teacher-weight values for 3 teacher run(s) (--teacher-run r, r, r)" in line, out.output
    assert line.endswith('(kd.toml: [distill] teacher-run = ["r", "r", "r"])'), line


def test_several_teachers_of_changed_labels_each_get_the_command_that_retrains_them(taught_store, tiny_model):
    """Teachers of runs r and r2 (a --folds one) both learned from labels changed since: the warning
    gave `kd teach --run r ... --overwrite` alone, "retrains it", as if r were the one stale teacher."""
    db = str(taught_store)
    kd("teach", "--run", "r2", "--model", str(tiny_model), "--epochs", "1", "--lr", "2e-3", "--folds", "2",
       "--batch-size", "8", "--max-len", "32", "--db", db)
    edit_labels(db, "r", "review", {1: "neg", 2: "pos"})
    out = kd("distill", "--run", "r", "--teacher-run", "r", "--teacher-run", "r2", "--epochs", "1", "--embed-dim", "8",
             "--num-filters", "4", "--name", "stale", "--db", db, "--json")
    said = [w for w in json.loads(out.stdout)["warnings"] if "learned from labels changed since" in w]
    assert len(said) == 1 and f"warning: {said[0]}" in out.stderr, said
    assert said[0].startswith("the teachers of runs r, r2 learned from labels changed since"), said[0]
    assert f"`kd teach --run r --model {tiny_model} --overwrite`" in said[0], said[0]
    assert f"`kd teach --run r2 --model {tiny_model} --folds 2 --overwrite`" in said[0], said[0]
    assert said[0].endswith("retrain them on the current labels"), said[0]


def test_dropping_pool_or_augmented_texts_leaves_the_teacher_current(taught_store):
    """A pool text or a text --augment made has no label: dropping it (`kd labels set ID=drop`, as the
    README allows) changed the labels digest, and every later distill warned that the teacher "learned
    from labels changed since", with a command that retrains it on the very labels it learned."""
    db = str(taught_store)
    common = ("distill", "--run", "r", "--epochs", "1", "--embed-dim", "8", "--num-filters", "4", "--db", db, "--json")
    kd(*common, "--augment", "mask,ngram", "--augment-n", "1", "--name", "first")
    store = Store.open(db, create=False)
    pool = store.samples(splits=["unlabeled"], where="parent_id IS NULL").ids
    made = store.samples(splits=["unlabeled"], where="parent_id IS NOT NULL").ids
    teacher = store.find_stage("r", "teach").config["labels_digest"]
    store.close()
    assert len(pool) and len(made)
    kd("labels", "set", "--run", "r", f"{int(pool[0])}=drop", f"{int(made[0])}=drop", "--db", db)
    out = kd(*common, "--augment", "mask,ngram", "--augment-n", "1", "--name", "second")
    assert not any("learned from labels changed since" in w for w in json.loads(out.stdout)["warnings"]), out.stderr
    assert json.loads(out.stdout)["config"]["labels_digest"] == teacher


def test_a_distill_name_taken_names_the_teacher_runs_it_learned_from(taught_store):
    """A student of run s learning from run r's teacher, its name taken: the advice was "another --run
    with --teacher-run s", a run with no teacher (that command fails); it names the teachers given."""
    common = ("distill", "--run", "s", "--teacher-run", "r", "--epochs", "1", "--embed-dim", "8",
              "--num-filters", "4", "--db", str(taught_store))
    kd(*common)
    again = kd(*common, ok=False).output.strip().splitlines()[-1]
    assert again.endswith("or another --run with --teacher-run r"), again


def test_transformer_student_with_intermediate_losses(taught_store):
    db = str(taught_store)
    out = kd("distill", "--run", "r", "--student", "transformer", "--layers", "1", "--hidden-mse", "1",
             "--attention-kl", "1", "--value-relation", "1", "--qk-relation", "1", "--epochs", "2", "--batch-size", "16",
             "--max-len", "32", "--db", db, "--json")
    report = json.loads(out.stdout)
    assert report["status"] == "succeeded" and report["config"]["lr"] == 1e-4
    assert report["metrics"]["all"]["teacher_layer[0]"] == 1  # 1 student layer <- the teacher's last of 2
    narrow = kd("distill", "--run", "r", "--student", "transformer", "--layers", "1", "--width", "16",
                "--hidden-mse", "1", "--hidden-cos", "1", "--pkd", "1", "--attention-mse", "1", "--fsp", "1", "--nst", "1",
                "--epochs", "1", "--max-len", "32", "--name", "narrow",
                "--dropout", "0", "--db", db, "--json")
    assert "warning: --dropout: not used by --student transformer" in narrow.stderr  # it keeps its teacher's
    narrow = json.loads(narrow.stdout)
    assert narrow["status"] == "succeeded"  # a learned projection 16 -> 32
    assert narrow["metrics"]["all"]["teacher_layer[0]"] == 1  # nothing copied, yet the layer its losses matched is on record
    assert narrow["config"]["hidden_cos"] == 1 and narrow["config"]["pkd"] == 1
    assert (narrow["config"]["attention_mse"], narrow["config"]["fsp"], narrow["config"]["nst"]) == (1, 1, 1)
    # the attention matched is a distribution: no attention dropout in a student with an attention loss
    student = json.loads((Path(narrow["artifact_path"]) / "student.json").read_text(encoding="utf-8"))["student"]
    assert student["bert"]["attention_probs_dropout_prob"] == 0.0
    assert student["bert"]["hidden_dropout_prob"] > 0.0  # (the rest of its dropout is its teacher's)
    relations = kd("distill", "--run", "r", "--student", "transformer", "--layers", "1", "--width", "16",
                   "--qk-relation", "1", "--value-relation", "1", "--relation-heads", "2", "--epochs", "1",
                   "--max-len", "32", "--name", "relations", "--db", db, "--json")
    assert json.loads(relations.stdout)["status"] == "succeeded"  # 2 relation heads over widths 16 and 32
    odd = kd("distill", "--run", "r", "--student", "transformer", "--layers", "1", "--qk-relation", "1",
             "--relation-heads", "3", "--epochs", "1", "--max-len", "32", "--name", "odd", "--db", db, ok=False)
    assert "--relation-heads 3 does not divide" in odd.output
    preds = kd("predict", "--run", "r", "--model", "narrow", "--json", "--db", db, input="这个很好\n")
    assert json.loads(preds.stdout)["label"] in ("pos", "neg")
    wrong = kd("distill", "--run", "r", "--student", "textcnn", "--hidden-mse", "1", "--db", db, ok=False)
    assert "Error: intermediate losses (--hidden-mse) need --student transformer" in wrong.output  # (the one given, not all ten)


@pytest.mark.parametrize("kind", ["distilbert", "t5"])
def test_a_transformer_student_of_a_teacher_not_laid_out_like_bert_is_one_line(kind):
    """DistilBERT (``dim``/``hidden_dim``) and T5 (an encoder-decoder) stopped with a traceback
    (``AttributeError: ... has no attribute 'intermediate_size'``) instead of the refusal ALBERT gets."""
    from transformers import CONFIG_MAPPING

    from kdstore.errors import KdError
    from kdstore.students import student_bert_config

    with pytest.raises(KdError, match=f"this teacher's {kind!r} is laid out otherwise: choose --student textcnn"):
        student_bert_config(CONFIG_MAPPING[kind](), layers=1, hidden=None, num_classes=2)


@pytest.mark.parametrize("kind", ["modernbert", "qwen2"])
def test_a_transformer_student_of_a_teacher_with_per_layer_types_is_one_line(kind):
    """ModernBERT and Qwen2 list a type per layer (``layer_types``): cut to fewer layers, their
    configuration failed its own validation, a traceback (StrictDataclassClassValidationError)
    instead of the refusal other teachers not laid out like BERT get."""
    from transformers import CONFIG_MAPPING

    from kdstore.errors import KdError
    from kdstore.students import check_bert_layout

    teacher = CONFIG_MAPPING[kind](vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    with pytest.raises(KdError, match=f"this teacher's {kind!r} is laid out otherwise: choose --student textcnn"):
        check_bert_layout(teacher)


def _tiny_non_bert(kind: str, corpus, tmp_path) -> Path:
    """A tiny ALBERT (embedding_size < hidden) or DistilBERT of the corpus's characters, saved under tmp_path/kind."""
    from transformers import AlbertConfig, AlbertForMaskedLM, DistilBertConfig, DistilBertForMaskedLM

    from kdstore.vocab import build_vocab, make_tokenizer

    texts = [line.split("\t")[-1] for p in corpus.values() for line in p.read_text(encoding="utf-8").splitlines()]
    tokenizer = make_tokenizer(build_vocab(texts))
    if kind == "albert":
        net = AlbertForMaskedLM(AlbertConfig(vocab_size=len(tokenizer), embedding_size=16, hidden_size=32, num_hidden_layers=2,
                                             num_attention_heads=2, intermediate_size=64, max_position_embeddings=64))
    else:
        net = DistilBertForMaskedLM(DistilBertConfig(vocab_size=len(tokenizer), dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                                                     max_position_embeddings=64))
    net.save_pretrained(tmp_path / kind)
    tokenizer.save_pretrained(tmp_path / kind)
    return tmp_path / kind


@pytest.mark.parametrize("kind", ["albert", "distilbert"])
def test_a_teacher_not_laid_out_like_bert_is_refused_by_early_exit_and_transformer_before_a_stage(sample_store, corpus, tmp_path, kind):
    """An ALBERT (embedding_size < hidden) or DistilBERT teacher teaches and a TextCNN learns from it,
    while --student early-exit and --student transformer are refused in one line before any stage
    is recorded (they left a failed distill stage behind)."""
    db = str(sample_store)
    kd("teach", "--run", "a", "--model", str(_tiny_non_bert(kind, corpus, tmp_path)), "--epochs", "1", "--max-len", "32", "--db", db)
    for student in ("early-exit", "transformer"):
        out = kd("distill", "--run", "a", "--student", student, "--epochs", "1", "--db", db, ok=False)
        assert f"this one is {kind!r}" in out.output if student == "early-exit" else f"this teacher's {kind!r} is laid out otherwise" in out.output
        assert "choose --student textcnn, bigru or bilstm" in out.output  # (early exit named no way on)
        # (and a transformer the way it does work beside such a teacher, which the refusal did not name)
        assert ("--student-model NAME_OR_DIR" in out.output) == (student == "transformer"), out.output
        assert "Traceback" not in out.output
    runs = json.loads(kd("runs", "--db", db, "--json").stdout)
    assert [s["name"] for r in runs for s in r["stages"]] == ["teach"]
    cnn = json.loads(kd("distill", "--run", "a", "--epochs", "1", "--embed-dim", "8", "--num-filters", "4", "--db", db, "--json").stdout)
    assert cnn["status"] == "succeeded"


@pytest.mark.parametrize("kind", ["albert", "distilbert"])
def test_a_student_model_learns_from_a_teacher_not_laid_out_like_bert_by_its_logits(sample_store, corpus, tiny_model, tmp_path, kind):
    """--student-model (a pre-trained BERT of the teacher's vocabulary) reads no layer of the teacher: an
    ALBERT or DistilBERT teacher (a Chinese DeBERTa's or ALBERT's fine-tuned model, an RBT3 student) was
    refused with "a transformer student copies a BERT-layout encoder ... choose --student textcnn", of a
    student that copies nothing. It learns from the teacher's logits; its intermediate losses are refused."""
    db = str(sample_store)
    kd("teach", "--run", "a", "--model", str(_tiny_non_bert(kind, corpus, tmp_path)), "--epochs", "1", "--max-len", "32", "--db", db)
    common = ["distill", "--run", "a", "--student", "transformer", "--student-model", str(tiny_model), "--epochs", "1", "--db", db]
    out = json.loads(kd(*common, "--json").stdout)
    assert out["status"] == "succeeded"
    assert json.loads(kd("predict", "--run", "a", "--model", "distill-transformer", "--json", "--db", db, input="这个很好\n").stdout)["label"] in ("pos", "neg")
    matched = kd(*common, "--hidden-mse", "1", "--name", "matched", ok=False)
    assert matched.output.strip().splitlines()[-1:] == [  # (after the warning of a teacher of 1 epoch)
        f"Error: --hidden-mse reads the teacher's layers, which a transformer student matches in a BERT-layout encoder (BERT, RoBERTa, "
        f"XLM-R, ERNIE, ELECTRA); this teacher's {kind!r} is laid out otherwise: leave the intermediate losses out "
        f"(--student-model {tiny_model} learns from its logits alone)"]


def test_a_roberta_teacher_and_its_transformer_student(sample_store, corpus, tmp_path):
    """Not only BERT: a RoBERTa teacher is fine-tuned, and a transformer student of its own type is
    built from it, initialised from its layers and matched to its internals, then served."""
    model = tiny_roberta_for(corpus, tmp_path / "roberta")
    db = str(sample_store)
    too_long = kd("teach", "--run", "rb", "--model", str(model), "--max-len", "65", "--db", db, ok=False)
    assert "can read (64 positions)" in too_long.output  # 66 position embeddings, numbered after the pad id
    taught = json.loads(kd("teach", "--run", "rb", "--model", str(model), "--epochs", "10", "--patience", "10", "--lr", "2e-3", "--batch-size", "8",
                           "--max-len", "32", "--db", db, "--json").stdout)
    assert taught["status"] == "succeeded" and taught["metrics"]["test"]["accuracy"] >= 0.8
    out = json.loads(kd("distill", "--run", "rb", "--student", "transformer", "--layers", "1", "--hidden-mse", "1", "--attention-kl", "1",
                        "--value-relation", "1", "--qk-relation", "1", "--epochs", "1", "--batch-size", "16", "--max-len", "32",
                        "--db", db, "--json").stdout)
    assert out["status"] == "succeeded" and out["metrics"]["all"]["teacher_layer[0]"] == 1
    stage = _stage(sample_store, "rb", "distill-transformer")
    meta = json.loads(Path(stage.artifact_path, "student.json").read_text(encoding="utf-8"))
    assert meta["student"]["bert"]["model_type"] == "roberta"
    preds = kd("predict", "--run", "rb", "--model", "distill-transformer", "--json", "--db", db, input="这个很好\n")
    assert json.loads(preds.stdout)["label"] in ("pos", "neg")
    exported = Path(kd("export", "--run", "rb", "--model", "distill-transformer", "--format", "onnx", "--db", db).stdout.strip())
    manifest = json.loads((exported / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["verification"]["max_abs_logit_diff"] < 1e-4  # kd export checks ONNX against PyTorch
    fast = json.loads(kd("distill", "--run", "rb", "--student", "early-exit", "--epochs", "1", "--db", db, "--json").stdout)
    assert fast["status"] == "succeeded" and "speedup@0.5" in fast["metrics"]["test"]
    full = json.loads(kd("predict", "--run", "rb", "--model", "distill-early-exit", "--speed", "0", "--json", "--db", db, input="这个很好\n").stdout)
    taught_answer = json.loads(kd("predict", "--run", "rb", "--model", "teacher", "--json", "--db", db, input="这个很好\n").stdout)
    assert full["layer"] == 2 and full["probs"] == pytest.approx(taught_answer["probs"], abs=1e-5)  # speed 0 is the teacher


def test_a_deberta_of_relative_positions_alone_is_not_refused_a_max_len_past_its_max_position_embeddings(sample_store, tiny_model, tmp_path):
    """DeBERTa-v3's layout (Erlangshen-DeBERTa-v2 and the like: position_biased_input false) has no
    position table: max_position_embeddings sizes nothing it reads, and it reads texts longer than it.
    kd teach refused --max-len past it ("can read (16 positions)"); a DeBERTa-v2 with a table still is."""
    from transformers import AutoTokenizer, DebertaV2Config, DebertaV2ForMaskedLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    db = str(sample_store)
    for name, biased in (("deberta-v3", False), ("deberta-v2", True)):
        config = DebertaV2Config(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                 max_position_embeddings=16, position_biased_input=biased, relative_attention=True, position_buckets=8,
                                 pos_att_type=["p2c", "c2p"], norm_rel_ebd="layer_norm", pad_token_id=tokenizer.pad_token_id, type_vocab_size=0)
        seeded(DebertaV2ForMaskedLM, config).save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    refused = kd("teach", "--run", "v2", "--model", str(tmp_path / "deberta-v2"), "--max-len", "32", "--db", db, ok=False)
    assert "can read (16 positions): use --max-len 16 or less" in refused.output
    taught = json.loads(kd("teach", "--run", "v3", "--model", str(tmp_path / "deberta-v3"), "--epochs", "1", "--max-len", "32",
                           "--db", db, "--json").stdout)
    assert taught["status"] == "succeeded"
    answer = json.loads(kd("predict", "--run", "v3", "--model", "teacher", "--json", "--db", db, input="这个很好" * 6 + "\n").stdout)
    assert answer["label"] in ("pos", "neg")  # (26 tokens, past its 16 max_position_embeddings)


def test_compare_says_when_speed_figures_were_timed_with_other_thread_counts(taught_store):
    """`kd report --compare` set latency and throughput side by side with no word that one model was timed with
    1 torch thread and another with 2 (a teacher taught in one shell, a student distilled in another): its
    rows carry speed_threads, and the table shows them, with a note, where they differ."""
    import torch

    db = str(taught_store)
    kd("distill", "--run", "r", "--epochs", "1", "--embed-dim", "16", "--num-filters", "8", "--max-len", "32", "--db", db)
    plain = kd("report", "--compare", "r", "--db", db).stdout
    rows = json.loads(kd("report", "--compare", "r", "--db", db, "--json").stdout)
    threads = {r["stage"]: r["speed_threads"] for r in rows}
    assert set(threads.values()) == {torch.get_num_threads()}, threads
    assert "speed_threads" not in plain and "thread" not in plain  # all alike: nothing to say
    before = torch.get_num_threads()
    torch.set_num_threads(before + 1)
    try:
        kd("distill", "--run", "r", "--name", "more-threads", "--epochs", "1", "--embed-dim", "16", "--num-filters", "8",
           "--max-len", "32", "--db", db)
    finally:
        torch.set_num_threads(before)
    rows = json.loads(kd("report", "--compare", "r", "--db", db, "--json").stdout)
    assert {r["stage"]: r["speed_threads"] for r in rows}["more-threads"] == before + 1
    table = kd("report", "--compare", "r", "--db", db).stdout
    assert "speed_threads" in table
    assert "note: latency and throughput were timed with different numbers of torch threads (speed_threads)" in " ".join(table.split())


def test_report_has_every_figure_compares_runs_and_plots(taught_store, tmp_path):
    db = str(taught_store)
    kd("distill", "--run", "r", "--epochs", "1", "--embed-dim", "16", "--num-filters", "8", "--max-len", "32", "--db", db)
    data = json.loads(kd("report", "--run", "r", "--plot", str(tmp_path / "charts"), "--db", db, "--json").stdout)
    student = next(s for s in data["stages"] if s["name"] == "distill-textcnn")
    test = student["metrics"]["test"]
    for name in ("accuracy", "macro_precision", "macro_recall", "macro_f1", "micro_f1", "precision[pos]", "recall[neg]", "f1[pos]", "support[neg]"):
        assert name in test, name
    for name in ("parameters", "size_mb", "latency_p50_ms", "latency_p99_ms", "throughput_samples_per_s", "flops_per_sample"):
        assert student["metrics"]["all"][name] > 0, name
    matrix = np.array(student["confusion"]["test"])
    assert matrix.shape == (2, 2) and matrix.sum() == test["n"]
    assert np.trace(matrix) / matrix.sum() == pytest.approx(test["accuracy"])
    assert data["plots"] and all(Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in data["plots"])
    text = kd("report", "--run", "r", "--db", db).stdout
    assert "test confusion" in text and "latency_p99_ms" in text
    # the speed figures say what they were measured with (a report read beside another machine's)
    threads = int(student["metrics"]["all"]["speed_threads"])
    assert threads >= 1 and f"  speed: on the CPU, {threads} torch thread" in text and "batches of 256" in text
    rows = json.loads(kd("report", "--compare", "r", "--compare", "r", "--db", db, "--json").stdout)
    assert {r["stage"] for r in rows} >= {"teach", "distill-textcnn"}
    assert all(r["test_accuracy"] is not None for r in rows)
    flops = {r["stage"]: r["flops_per_sample"] for r in rows}  # the teacher's beside the student's
    assert flops["distill-textcnn"] == student["metrics"]["all"]["flops_per_sample"] and flops["teach"] > 0
    table = kd("report", "--compare", "r", "--db", db).stdout  # piped: every figure whole, none cut with "…"
    assert "…" not in table and all(f"{r['test_accuracy']:.4f}" in table for r in rows if r["test_accuracy"] < 1)


def test_unused_sizes_pass_and_a_damaged_student_json_is_one_line(taught_store):
    """A size the student does not use (--layers 0 for a TextCNN, --num-filters 0 for a BiGRU) is warned
    of as unused, not refused as well; a student.json damaged or edited by hand (a field of another
    type, an unknown or missing one, weights that do not fit it) is one line naming the file and field
    (it was a TypeError traceback, or torch's list of every mismatched weight)."""
    db = str(taught_store)
    out = kd("distill", "--run", "r", "--layers", "0", "--embed-dim", "8", "--num-filters", "4", "--epochs", "1",
             "--max-len", "32", "--db", db, "--json")
    assert json.loads(out.stdout)["status"] == "succeeded" and "--layers: not used by --student textcnn" in out.stderr
    out = kd("distill", "--run", "r", "--student", "bigru", "--num-filters", "0", "--embed-dim", "8", "--hidden", "4",
             "--epochs", "1", "--max-len", "32", "--db", db, "--json")
    assert json.loads(out.stdout)["status"] == "succeeded"
    folder = Path(_stage(taught_store, "r", "distill-textcnn").artifact_path)
    assert kd("predict", "--run", "r", "--model", "distill-textcnn", "--db", db, input="很好\n").stdout.startswith(("pos", "neg"))
    meta_file = folder / "student.json"
    good = json.loads(meta_file.read_text(encoding="utf-8"))
    for change, message in (
        (lambda m: m["student"].update(num_filters="4"), "student.json: field 'num_filters' is '4'"),
        (lambda m: m["student"].update(pooling="max"), "student.json: unknown field 'pooling'"),
        (lambda m: m["student"].pop("kind"), "student.json: field 'kind' is missing"),
        (lambda m: m.update(max_len="32"), "student.json: field 'max_len' is '32'"),
        (lambda m: m.update(classes=["pos"]), "student.json: field 'classes' names 1 classes for a student of 2"),
        (lambda m: m["student"].update(pad_id=99999), "student.json: field 'pad_id' is 99999: not an id of its"),  # (AssertionError)
        (lambda m: m["student"].update(num_filters=5),
         "student.pt does not fit student.json: weight convs.0.weight is (4, 8, 2) in the file, (5, 8, 2) by the configuration"),
    ):
        meta = json.loads(json.dumps(good))
        change(meta)
        meta_file.write_text(json.dumps(meta), encoding="utf-8")
        bad = kd("predict", "--run", "r", "--model", "distill-textcnn", "--db", db, input="很好\n", ok=False)
        lines = bad.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"Error: cannot load the student in {folder}: ") and message in lines[0], bad.output
    meta_file.write_text("[]", encoding="utf-8")
    assert "student.json: a list, not an object" in kd("predict", "--run", "r", "--model", "distill-textcnn", "--db", db,
                                                       input="很好\n", ok=False).output
    # cut short (a copy or a write that stopped): JSON's "line 2 column 1" named no file, read beside kd predict's input lines
    meta_file.write_text(json.dumps(good, indent=2)[:40], encoding="utf-8")
    bad = kd("predict", "--run", "r", "--model", "distill-textcnn", "--db", db, input="很好\n", ok=False).output
    assert f"cannot load the student in {folder}: student.json is not valid JSON (" in bad, bad


def test_a_student_of_a_vocabulary_naming_a_token_twice_reads_every_id(sample_store, corpus, tmp_path):
    """A vocab.txt that names a character twice (a merged vocabulary) gives ids up to its line count
    less one, one past len(tokenizer): the student's table of len(tokenizer) rows failed the stage
    with torch's "IndexError: index out of range in self" traceback, where the teacher trained."""
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast
    from synthetic import seeded

    from kdstore.vocab import build_vocab

    texts = [line.split("\t")[-1] for p in corpus.values() for line in p.read_text(encoding="utf-8").splitlines()]
    tokens = build_vocab(texts)
    lines = tokens[:6] + [tokens[5]] + tokens[6:]  # a character named twice: its id is the later line's
    model = tmp_path / "dup-vocab"
    model.mkdir()
    (model / "vocab.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(str(model / "vocab.txt"))
    assert max(tokenizer.get_vocab().values()) == len(tokenizer)  # (the case: an id past len(tokenizer) - 1)
    config = BertConfig(vocab_size=len(lines), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    seeded(BertForMaskedLM, config).save_pretrained(model)
    tokenizer.save_pretrained(model)
    db = str(sample_store)
    kd("teach", "--run", "d", "--model", str(model), "--epochs", "1", "--batch-size", "8", "--max-len", "32", "--db", db)
    for student in ("textcnn", "bilstm"):
        out = kd("distill", "--run", "d", "--student", student, "--epochs", "1", "--embed-dim", "8", "--num-filters", "4",
                 "--hidden", "4", "--max-len", "32", "--db", db, "--json")
        report = json.loads(out.stdout)
        assert report["status"] == "succeeded", report
        assert report["metrics"]["all"]["parameters"] >= len(lines) * 8  # a row for every id
        said = kd("predict", "--run", "d", "--model", f"distill-{student}", "--db", db, input=f"{tokens[5]}很好\n")
        assert said.stdout.startswith(("pos", "neg"))


def test_a_damaged_transformer_student_json_is_one_line(taught_store):
    """A transformer student's student.json edited by hand: a field of its BERT configuration of
    another type was transformers' validation traceback, and a max_len past its positions loaded,
    then failed on the first long text with a RuntimeError traceback from its embeddings."""
    db = str(taught_store)
    out = kd("distill", "--run", "r", "--student", "transformer", "--layers", "1", "--epochs", "1", "--max-len", "32",
             "--db", db, "--json")
    folder = Path(json.loads(out.stdout)["artifact_path"])
    meta_file = folder / "student.json"
    good = json.loads(meta_file.read_text(encoding="utf-8"))
    for change, message in (
        (lambda m: m["student"]["bert"].update(hidden_size="32"), "student.json: field 'bert': Validation error for field 'hidden_size'"),
        (lambda m: m.update(max_len=200), "student.json: field 'max_len' is 200: the transformer student reads 64 positions"),
    ):
        meta = json.loads(json.dumps(good))
        change(meta)
        meta_file.write_text(json.dumps(meta), encoding="utf-8")
        bad = kd("predict", "--run", "r", "--model", "distill-transformer", "--db", db, input="很好" * 60 + "\n", ok=False)
        lines = bad.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"Error: cannot load the student in {folder}: ") and message in lines[0], bad.output


def test_a_damaged_student_weights_file_is_a_one_line_error(tmp_path):
    """A ``student.pt`` that is no ``torch.save`` file (a Git LFS pointer, a damaged copy) is a
    KdError naming the directory, not torch's unpickling traceback; a truncated one likewise."""
    from kdstore.vocab import build_vocab, make_tokenizer
    from kdstore.distill import save_student
    from kdstore.errors import KdError
    from kdstore.predictor import STUDENT_WEIGHTS, load_student
    from kdstore.students import StudentConfig, build_student

    tokenizer = make_tokenizer(build_vocab(["很好太差"]))
    scfg = StudentConfig(kind="textcnn", vocab_size=len(tokenizer), num_classes=2, embed_dim=4, kernel_sizes=(2,), num_filters=3)
    save_student(tmp_path / "s", build_student(scfg), scfg, tokenizer, max_len=8, class_names=["neg", "pos"])
    assert load_student(tmp_path / "s", "cpu")[2]["classes"] == ["neg", "pos"]
    weights = tmp_path / "s" / STUDENT_WEIGHTS
    good = weights.read_bytes()
    weights.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n", encoding="utf-8")
    with pytest.raises(KdError, match=rf"cannot load the student in .*: {STUDENT_WEIGHTS} is not a PyTorch weights file$"):
        load_student(tmp_path / "s", "cpu")
    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(KdError, match="cannot load the student in"):
        load_student(tmp_path / "s", "cpu")
    # empty, or random bytes that stop torch's unpickler on an IndexError or a KeyError (tracebacks, or "'133'")
    for damaged in (b"", *(bytes(random.Random(seed).getrandbits(8) for _ in range(4000)) for seed in (7, 44))):
        weights.write_bytes(damaged)
        with pytest.raises(KdError, match=rf"cannot load the student in .*: {STUDENT_WEIGHTS} is not a PyTorch weights file$"):
            load_student(tmp_path / "s", "cpu")


def test_a_student_folder_without_its_tokenizer_is_a_one_line_error(tmp_path):
    """A student folder whose tokenizer file is gone (removed by `kd runs delete` or an --overwrite
    while `kd predict` loaded it, or left out of a copy) loaded a tokenizer of the special tokens alone
    (transformers 5): every text read as [UNK], one answer for all, without a word."""
    from kdstore.vocab import build_vocab, make_tokenizer
    from kdstore.distill import save_student
    from kdstore.errors import KdError
    from kdstore.predictor import load_student
    from kdstore.students import StudentConfig, build_student

    tokenizer = make_tokenizer(build_vocab(["很好太差"]))
    scfg = StudentConfig(kind="textcnn", vocab_size=len(tokenizer), num_classes=2, embed_dim=4, kernel_sizes=(2,), num_filters=3)
    save_student(tmp_path / "s", build_student(scfg), scfg, tokenizer, max_len=8, class_names=["neg", "pos"])
    assert len(load_student(tmp_path / "s", "cpu")[1]) == len(tokenizer)
    for name in ("tokenizer.json", "vocab.txt"):
        (tmp_path / "s" / name).unlink(missing_ok=True)
    with pytest.raises(KdError, match=r"cannot load the student in .*: its tokenizer is missing \(the vocabulary is the 5 special tokens alone\)$"):
        load_student(tmp_path / "s", "cpu")


def test_damaged_teacher_weights_are_a_one_line_error(taught_store, tiny_model, tmp_path):
    """A cut ``model.safetensors`` (a copy that stopped half-way, a full disk) raised safetensors'
    own error, which is no OSError: a traceback from kd teach, predict, export and distill."""
    import shutil

    sample_store, db = taught_store, str(taught_store)
    cut = tmp_path / "cut-model"
    shutil.copytree(tiny_model, cut)
    weights = cut / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:300])
    result = kd("teach", "--run", "c", "--model", str(cut), "--epochs", "1", "--max-len", "32", "--db", db, ok=False)
    assert result.stderr.splitlines()[-1].startswith(f"Error: cannot load '{cut}' as a sequence classifier: Error while deserializing header")
    assert _stage(sample_store, "c", "teach").status == "failed"

    served = Path(_stage(sample_store, "r", "teach").artifact_path) / "model.safetensors"  # (the store's copy of the teacher)
    served.write_bytes(served.read_bytes()[:300])
    result = kd("predict", "--run", "r", "--model", "teacher", "--db", db, input="很好\n", ok=False)
    assert "as a sequence classifier: Error while deserializing header" in result.stderr.splitlines()[-1]
    result = kd("distill", "--run", "r", "--init-embeddings", "teacher", "--epochs", "1", "--db", db, ok=False)
    assert result.stderr.splitlines()[-1].startswith("Error: cannot load the teacher of stage 'teach' in ")
    assert _stage(sample_store, "r", "distill-textcnn").status == "failed"


@pytest.mark.parametrize("cut", ["half", "empty", "noise0", "noise7", "noise44", "noise199", "lfs"])
def test_a_damaged_pytorch_model_bin_is_named_as_such(tiny_model, tmp_path, cut):
    """A cut ``pytorch_model.bin`` (an older checkpoint format many Chinese models ship in) said
    "[Errno 22] Invalid argument"; an empty one or one of other bytes was a traceback (EOFError, an
    UnpicklingError about weights_only). Random bytes stop torch's unpickler wherever they first make
    no sense: these seeds' bytes raise an UnpicklingError, an IndexError, a KeyError and a
    UnicodeDecodeError (one in nine of os.urandom's was a traceback, and the test flaky)."""
    import shutil

    from safetensors.torch import load_file

    from kdstore.teacher import load_classifier

    folder = tmp_path / "bin-model"
    shutil.copytree(tiny_model, folder)
    weights = folder / "pytorch_model.bin"
    torch.save(load_file(str(folder / "model.safetensors")), weights)
    (folder / "model.safetensors").unlink()
    load_classifier(str(folder), ["neg", "pos"])  # whole, it loads
    data = weights.read_bytes()
    noise = {f"noise{seed}": bytes(random.Random(seed).getrandbits(8) for _ in range(4000)) for seed in (0, 7, 44, 199)}
    weights.write_bytes({"half": data[: len(data) // 2], "empty": b"", **noise,
                         "lfs": b"version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 9\n"}[cut])
    with pytest.raises(KdError) as caught:
        load_classifier(str(folder), ["neg", "pos"])
    said = str(caught.value)
    assert "\n" not in said and "pytorch_model.bin" in said
    assert ("Git LFS pointer" in said) if cut == "lfs" else ("not a readable torch checkpoint: cut short" in said)


def test_a_teachers_flops_per_sample_are_what_torch_counts_over_the_timed_texts(_taught, tiny_model):
    """The teacher had parameters and speed figures but no FLOPs, so `kd report --compare` set a student's
    FLOPs beside nothing: a BERT-layout teacher's are stored as a student's are (the mean over the texts
    timed, each run alone at its own length), and equal torch.utils.flop_counter's count."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from kdstore.speed import speed_texts

    db, report = _taught
    stored = report["metrics"]["all"]["flops_per_sample"]
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    # (eager attention: the counter sees no FLOPs in torch's CPU scaled_dot_product_attention)
    model = AutoModelForSequenceClassification.from_pretrained(report["artifact_path"], attn_implementation="eager").eval()
    counted = []
    for text in speed_texts(Store.open(str(db)).samples(include_dropped=True)):
        enc = tokenizer(text, truncation=True, max_length=32, return_tensors="pt")
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(**enc)
        counted.append(counter.get_total_flops())
    assert stored == int(np.mean(counted)) or stored == pytest.approx(np.mean(counted), rel=1e-6)
    assert stored > 0


def test_class_weight_balanced_weighs_the_rare_class_in_teach_and_distill(taught_store, tiny_model):
    """--class-weight balanced (a few violations among many ads): the teacher's loss and a student's hard
    loss weigh each row by n / (C x n_class) of the rows it trains on, recorded as class_weight[NAME];
    the weighted teacher learns otherwise than the plain one from the same start. The early-exit
    branches, which copy the teacher, refuse it."""
    db = str(taught_store)
    store = Store.open(db)
    train = store.samples(splits=["train"], labeled=True)
    names = store.class_names()
    # the train rows of class 0, and a third of the others: an imbalanced set
    where = "label_id = 0 OR id % 3 = 0"
    kept = [int(y) for i, y in zip(train.ids, train.labels) if y == 0 or i % 3 == 0]
    counts = {c: kept.count(c) for c in set(kept)}
    assert counts[0] > 2 * counts[1]
    expected = {f"class_weight[{names[c]}]": len(kept) / (2 * n) for c, n in counts.items()}
    common = ["--model", str(tiny_model), "--epochs", "1", "--max-len", "32", "--where", where, "--db", db, "--json"]
    weighted = json.loads(kd("teach", "--run", "cw", "--class-weight", "balanced", *common).stdout)
    assert weighted["config"]["class_weight"] == "balanced"
    assert {k: v for k, v in weighted["metrics"]["all"].items() if k.startswith("class_weight[")} == pytest.approx(expected)
    plain = json.loads(kd("teach", "--run", "plain", *common).stdout)
    assert not any(k.startswith("class_weight[") for k in plain["metrics"]["all"])
    (_, a), (_, b) = (store.read_logits(_stage(taught_store, r, "teach").id) for r in ("cw", "plain"))
    assert not np.allclose(a, b, atol=1e-5)  # the same start, seed and batches: the weights alone made them differ

    student = json.loads(kd("distill", "--run", "r", "--class-weight", "balanced", "--epochs", "1", "--embed-dim", "16",
                            "--num-filters", "8", "--max-len", "32", "--db", db, "--json").stdout)
    all_train = [int(y) for y in train.labels]
    for c, name in enumerate(names):  # the labeled train rows the student learns from (all of them here)
        assert student["metrics"]["all"][f"class_weight[{name}]"] == pytest.approx(len(all_train) / (2 * all_train.count(c)))
    refused = kd("distill", "--run", "r", "--student", "early-exit", "--class-weight", "balanced", "--db", db, ok=False)
    assert "--class-weight: for students, not --student early-exit" in refused.output


def test_a_class_the_model_never_gets_right_on_dev_is_named_with_what_to_try():
    """5 imbalanced ad classes: a teacher that never answered its 4 % class said only "macro-F1 0.50"."""
    from commands.train import _missed_note as note

    dev = {"accuracy": 0.9, "support[合规]": 70, "support[极限词]": 4, "recall[合规]": 1.0, "recall[极限词]": 0.0}
    train = {"support[合规]": 350, "support[极限词]": 20}
    said = note({"kind": "teach", "metrics": {"dev": dev, "train": train}, "config": {"class_weight": "none"}})
    assert said == ("on dev the model got no sample of class '极限词' (0 of 4) right: it has not learned it; try "
                    "--class-weight balanced (a rare class then counts as much as a common one), or more --epochs")
    balanced = note({"kind": "distill", "metrics": {"dev": dev, "train": train}, "config": {"class_weight": "balanced"}})
    assert balanced.endswith("try more --epochs, or more train samples of it")
    # a class as common as the others (even news topics): class weights would change nothing
    even = note({"kind": "teach", "metrics": {"dev": dev, "train": {**train, "support[极限词]": 300}}, "config": {}})
    assert even.endswith("try more --epochs, or more train samples of it")
    # one with no train sample is _unlearned's warning; an early-exit model, a pre-training, a good model: silent
    assert note({"kind": "teach", "metrics": {"dev": dev, "train": {**train, "support[极限词]": 0}}, "config": {}}) is None
    assert note({"kind": "distill", "metrics": {"dev": dev}, "config": {"student": "early-exit"}}) is None
    assert note({"kind": "teach", "metrics": {"dev": {**dev, "recall[极限词]": 0.25}}, "config": {}}) is None
    # a class --label left out of the training (the split's figures count it): never learned, not to be weighed
    assert note({"kind": "teach", "metrics": {"dev": dev, "train": train}, "config": {"labels": ["合规", "医疗"]}}) is None
    # too few dev samples to judge (2): the train samples it got none of right say it (it said nothing)
    few = {**dev, "support[极限词]": 2}
    missed_train = {**train, "recall[合规]": 0.97, "recall[极限词]": 0.0}
    said = note({"kind": "teach", "metrics": {"dev": few, "train": missed_train}, "config": {"folds": 5}})
    assert said == ("the model got no train sample of class '极限词' (0 of 20) right (out of fold): it has not learned it; try "
                    "--class-weight balanced (a rare class then counts as much as a common one), or more --epochs")
    both = {**missed_train, "support[医疗]": 15, "recall[医疗]": 0.0}
    said = note({"kind": "distill", "metrics": {"dev": dev, "train": both}, "config": {}})
    assert said.startswith("on dev the model got no sample of class '极限词' (0 of 4) right, nor train sample of class "
                           "'医疗' (0 of 15) right: it has not learned them; try --class-weight balanced")
    assert note({"kind": "teach", "metrics": {"dev": few, "train": train}, "config": {}}) is None  # (train recalls unknown)


def test_a_model_no_better_than_the_majority_class_is_named_with_what_to_try():
    from commands.train import _majority_note as note

    dev = {"accuracy": 0.528, "support[pos]": 472, "support[neg]": 528}
    said = note("r1", {"kind": "teach", "metrics": {"dev": dev}})
    assert said.startswith("dev accuracy 52.8% is no more than always answering 'neg' (52.8%)")
    assert "--epochs" in said and "--lr" in said and "\n" not in said
    assert "`kd report --run r1`" in note("r1", {"kind": "distill", "metrics": {"dev": dev}})
    # a teacher already at --lr 3e-4 or more is not told to go faster (the quick start's 3e-4 was its own --lr)
    said = note("r1", {"kind": "teach", "metrics": {"dev": dev}, "config": {"model": "pretrain:r1", "lr": 1e-3}})
    assert "faster" not in said and "wants about 3e-4" not in said
    assert "--lr 0.001 is already as fast as a small model wants" in said and "`kd pretrain --minutes`" in said
    # a hub model is not told what a small `kd pretrain` model wants
    said = note("r1", {"kind": "teach", "metrics": {"dev": dev}, "config": {"model": "bert-base-chinese", "lr": 5e-5}})
    assert "kd pretrain" not in said and "try another --lr (now 5e-05)" in said
    # nor is a hub or directory model at a fast --lr told that a small model wants that (a BERT at 1e-3 is
    # more likely too fast: "train longer" alone misled)
    said = note("r1", {"kind": "teach", "metrics": {"dev": dev}, "config": {"model": "bert-base-chinese", "lr": 1e-3}})
    assert "small model" not in said and "try another --lr (now 0.001)" in said
    assert "wants about 3e-4" in note("r1", {"kind": "teach", "metrics": {"dev": dev}, "config": {"model": "pretrain:r1", "lr": 5e-5}})
    # a kd-pretrained model given by its folder (or a teacher fine-tuned from one) took the small model's lr default
    # and is a small model too: not told to try another --lr as a hub BERT is
    said = note("r1", {"kind": "teach", "metrics": {"dev": dev},
                       "config": {"model": "/m/pretrain/model", "lr": 3e-4, "lr_default": "kd-pretrained model"}})
    assert "try another --lr" not in said and "already as fast as a small model wants" in said
    # the teacher's run, not the student's
    assert "check the teacher first (`kd report --run w`)" in note("r3", {"kind": "distill", "metrics": {"dev": dev}, "config": {"teacher_runs": ["w"]}})
    # a kd pretrain folder at a typed --lr 3e-4 (the quick start's) is a small model too: not told to try another --lr
    said = note("r1", {"kind": "teach", "metrics": {"dev": dev}, "config": {"model": "/m/pretrain", "lr": 3e-4, "kd_pretrained": True}})
    assert "try another --lr" not in said and "already as fast as a small model wants" in said
    # a teacher given twice (--teacher-run w --teacher-run w: its logits weigh double) is named once
    assert "check the teacher first (`kd report --run w`, `kd report --run v`)" in note(
        "r3", {"kind": "distill", "metrics": {"dev": dev}, "config": {"teacher_runs": ["w", "v", "w"]}})
    assert note("r1", {"kind": "teach", "metrics": {"dev": {**dev, "accuracy": 0.9}}}) is None  # learned: silent
    assert note("r1", {"kind": "pretrain", "metrics": {"train": {"mlm_loss": 6.0}}}) is None  # no dev figures: silent


def test_a_student_that_learned_nothing_from_a_teacher_that_learned_is_not_told_to_check_the_teacher(tmp_path):
    """A student at the majority class's share beside a teacher at 88% on dev was told "check the teacher first":
    the teacher is fine, and the student is what to train longer or at another rate (review defaults32)."""
    from commands.train import _majority_note
    from kdstore.runs import stage_scope
    from kdstore.store import Store

    store = Store.open(str(tmp_path / "kd.db"))
    figures = {"accuracy": 0.88, "macro_f1": 0.88, "support[pos]": 50, "support[neg]": 50}
    with stage_scope(store, run="t", kind="teach", config={}) as st:
        store.add_metrics(st.id, "dev", figures)
    with stage_scope(store, run="w", kind="teach", config={}) as st:  # (one that learned nothing)
        store.add_metrics(st.id, "dev", {**figures, "accuracy": 0.5, "macro_f1": 0.33})
    student = {"kind": "distill", "metrics": {"dev": {**figures, "accuracy": 0.5, "macro_f1": 0.33}}, "config": {"teacher_runs": ["t"], "lr": 1e-3}}
    said = _majority_note("s", student, store)
    assert "its teacher learned (run t: dev accuracy 88.0%): train the student longer (--epochs) or try another --lr (now 0.001)" in said, said
    assert "check the teacher first (`kd report --run w`)" in _majority_note("s", {**student, "config": {"teacher_runs": ["w"]}}, store)
    assert "check the teacher first" in _majority_note("s", {**student, "config": {"teacher_runs": ["t", "w"]}}, store)
    store.close()


def test_a_student_beside_a_teacher_that_learned_dev_is_not_told_its_teacher_learned(tmp_path):
    """A teacher trained on dev too (--split train --split dev, no dev row left to judge it) scores its own
    training rows on dev: 100% there is no sign it learned, and the student that learned nothing beside it was
    told "its teacher learned (run t: dev accuracy 100.0%): train the student longer"; its teacher is to check."""
    from commands.train import _majority_note
    from kdstore.runs import stage_scope
    from kdstore.store import Store

    store = Store.open(str(tmp_path / "kd.db"))
    figures = {"accuracy": 1.0, "macro_f1": 1.0, "support[pos]": 50, "support[neg]": 50}
    with stage_scope(store, run="t", kind="teach", config={"splits": ["train", "dev"]}) as st:
        store.add_metrics(st.id, "dev", figures)
    student = {"kind": "distill", "metrics": {"dev": {**figures, "accuracy": 0.5, "macro_f1": 0.33}}, "config": {"teacher_runs": ["t"], "lr": 1e-3}}
    said = _majority_note("s", student, store)
    assert "its teacher learned" not in said and "check the teacher first (`kd report --run t`)" in said, said
    store.close()


def test_a_majority_class_teacher_of_imbalanced_classes_is_told_of_class_weights():
    """An 85/12/3 % ad-compliance teacher that answered '合规' to every text was told "train longer (--epochs)
    or try another --lr" only: the rare-class warning, which names --class-weight balanced, gives way to this
    one, so a first-time user never heard of the option made for this case."""
    from commands.train import _majority_note as note

    dev = {"accuracy": 0.9, "support[合规]": 54, "support[违规]": 5, "support[待定]": 1}
    train = {"support[合规]": 252, "support[违规]": 39, "support[待定]": 9}
    config = {"model": "/m/tiny", "lr": 1e-3, "class_weight": "none"}
    said = note("r1", {"kind": "teach", "metrics": {"dev": dev, "train": train}, "config": config})
    assert said.endswith("try another --lr (now 0.001), or --class-weight balanced (a rare class then counts as much as a common one)")
    # already weighed, or classes as common as each other: not told
    assert "--class-weight" not in note("r1", {"kind": "teach", "metrics": {"dev": dev, "train": train},
                                               "config": {**config, "class_weight": "balanced"}})
    even = {"support[合规]": 100, "support[违规]": 100, "support[待定]": 100}
    assert "--class-weight" not in note("r1", {"kind": "teach", "metrics": {"dev": dev, "train": even}, "config": config})


def test_a_label_teacher_is_judged_on_the_dev_samples_of_the_classes_it_learned():
    """`kd teach --label pos --label neg` on a store whose dev holds 30 'mid' texts beside 10 pos and 10 neg:
    a teacher right on every pos and neg dev text (test 100 %) was told "dev accuracy 40.0% is less than always
    answering 'mid' (60.0%): the model has learned next to nothing", of a class it was told not to learn."""
    from commands.train import _majority_note as note

    dev = {"accuracy": 0.4, "support[pos]": 10, "support[neg]": 10, "support[mid]": 30,
           "recall[pos]": 1.0, "recall[neg]": 1.0, "recall[mid]": 0.0}
    config = {"model": "/m/tiny", "lr": 1e-3, "labels": ["pos", "neg"], "learned_classes": ["pos", "neg"]}
    assert note("r1", {"kind": "teach", "metrics": {"dev": dev}, "config": config}) is None
    # one that answers 'neg' to every pos and neg text is still told, of the dev samples of its classes
    weak = {**dev, "accuracy": 0.2, "recall[pos]": 0.0}
    said = note("r1", {"kind": "teach", "metrics": {"dev": weak}, "config": config})
    assert said.startswith("dev accuracy 50.0% on the dev samples of the classes it learned (pos, neg) is no more than always answering"), said
    # a student (or a teacher) of a store whose 'mid' train samples were all relabeled away: the same
    train = {"support[pos]": 60, "support[neg]": 30, "support[mid]": 0}
    assert note("r1", {"kind": "distill", "metrics": {"dev": dev, "train": train}, "config": {"teacher_runs": ["r1"]}}) is None
    assert note("r1", {"kind": "teach", "metrics": {"dev": dev, "train": train}, "config": {"model": "/m/tiny", "lr": 1e-3}}) is None
    assert "learned next to nothing" in note("r1", {"kind": "distill", "metrics": {"dev": dev}, "config": {}})  # (no train figures: as before)


def test_a_teacher_of_a_class_with_no_dev_sample_is_not_said_to_be_judged_on_some_classes():
    """A store whose 'mid' samples are all in test (none in train or dev): the dev accuracy, 58.3 % of 120 pos
    and neg texts, was said to be "58.3% on the dev samples of the classes it learned (pos, neg)", as if the
    plain dev figure above it left some out; no dev sample was left out."""
    from commands.train import _majority_note as note

    dev = {"accuracy": 0.5, "support[pos]": 50, "support[neg]": 50, "support[mid]": 0,
           "recall[pos]": 0.0, "recall[neg]": 1.0, "recall[mid]": 0.0}
    config = {"model": "/m/tiny", "lr": 1e-3, "learned_classes": ["pos", "neg"]}
    said = note("r1", {"kind": "teach", "metrics": {"dev": dev}, "config": config})
    assert said.startswith("dev accuracy 50.0% is no more than always answering"), said


def test_a_majority_class_teacher_is_in_its_json_warnings(sample_store, tiny_model):
    """A lent H200's teacher answered one class (52.6 %): kd teach said so on its text output only, and
    bench/, which reads --json, logged nothing. A script now finds it in the warnings too."""
    db = str(sample_store)
    out = kd("teach", "--run", "w", "--model", str(tiny_model), "--epochs", "1", "--lr", "1e-9", "--max-len", "16", "--db", db, "--json")
    [weak] = [w for w in json.loads(out.stdout)["warnings"] if w.startswith("dev accuracy ")]
    assert "the model has learned next to nothing" in weak and out.stderr.count(weak) == 1


def test_unlabeled_without_a_pool_says_the_student_learned_from_labels_alone(taught_without_pool, corpus, tiny_model):
    db = str(taught_without_pool)
    common = ["distill", "--run", "r", "--epochs", "1", "--embed-dim", "16", "--num-filters", "8", "--db", db]
    out = kd(*common, "--unlabeled")
    assert "warning: --unlabeled, but the store has no unlabeled pool" in out.stderr
    assert _stage(Path(db), "r", "distill-textcnn").config["max_len"] == 32  # no --max-len: the teacher's
    assert "no unlabeled pool" not in kd(*common, "--name", "quiet", "--overwrite").stderr  # not asked for: nothing to say
    # with --augment it learned from the augmented texts too: not "from the labeled samples alone"
    augmented = kd(*common, "--unlabeled", "--augment", "ngram", "--augment-n", "1", "--name", "aug").stderr
    assert "learned from the labeled samples and the augmented texts" in augmented and "alone" not in augmented, augmented
    # a pool ingested after the teacher ran has no logits: one warning naming the fix, not "no unlabeled pool"
    kd("ingest", str(corpus["unlabeled"]), "--split", "unlabeled", "--db", db)
    unscored = kd(*common, "--unlabeled", "--name", "unscored").stderr
    assert "30 unlabeled texts have no teacher logits and are left out: run `kd teach --run r --logits-only` first" in unscored
    assert "no unlabeled pool" not in unscored, unscored
    # --json carries the run and the same warnings (stdout stays one JSON object; stderr says them too)
    said = kd(*common, "--unlabeled", "--name", "said", "--json")
    report = json.loads(said.stdout)

    def own(result) -> list[str]:  # (this fixture's teacher, 50% on a balanced dev, is warned of too: as learning nothing)
        return [w for w in _warnings(result) if not w.startswith("the teacher of run 'r' has learned next to nothing")]

    assert len(own(said)) + 1 == len(_warnings(said))
    assert report["run"] == "r" and report["stage"] == report["name"] == "said" and len(own(said)) == 1
    assert own(said)[0].startswith("30 unlabeled texts have no teacher logits") and own(said)[0] in said.stderr
    assert _warnings(kd("teach", "--run", "t2", "--model", str(tiny_model), "--epochs", "1", "--max-len", "32", "--db", db, "--json")) == []
    # a warning said before the stage runs (an option the student does not use) is listed too
    early = kd(*common, "--no-unlabeled", "--name", "early", "--hidden", "8", "--json")
    assert own(early) == ["--hidden: not used by --student textcnn"]
    assert "warning: --hidden: not used by --student textcnn" in early.stderr
    # and --logits-only carries run, stage and its warnings as every teach --json does
    scored = json.loads(kd("teach", "--run", "r", "--logits-only", "--db", db, "--json").stdout)
    assert scored == {"run": "r", "stage": "teach", "scored": 30, "warnings": []}


def test_pool_texts_without_teacher_logits_are_named_before_the_student_trains(taught_without_pool, corpus, monkeypatch):
    """A pool ingested after the teacher ran (155,000 texts) was named as left out only once the stage had
    ended: minutes of training on a 2-core CPU (hours on a real pool) without it, before `kd teach
    --logits-only` was named; a distillation stopped meanwhile said nothing of it. Said before the
    student trains now, once."""
    db = str(taught_without_pool)
    kd("ingest", str(corpus["unlabeled"]), "--split", "unlabeled", "--db", db)

    def stopped(*args, **kwargs):
        raise KdError("stopped while training")

    common = ["distill", "--run", "r", "--epochs", "1", "--embed-dim", "16", "--num-filters", "8", "--db", db]
    with monkeypatch.context() as m:
        m.setattr("kdstore.distill._fit", stopped)
        out = kd(*common, ok=False)
    assert "stopped while training" in out.stderr
    said = "warning: 30 unlabeled texts have no teacher logits and are left out: run `kd teach --run r --logits-only` first"
    assert said in out.stderr
    assert kd(*common, "--name", "whole").stderr.count(said) == 1  # (not again at its end)
    assert "no teacher logits" not in kd(*common, "--name", "none", "--no-unlabeled").stderr  # no pool asked for
    assert "no teacher logits" not in kd(*common, "--name", "some", "--where", "id < 0 OR split = 'train'").stderr  # none selected


def test_texts_cut_at_all_the_positions_a_model_has_are_not_told_a_larger_max_len_may_help(tmp_path, corpus, tiny_model):
    """News articles cut at --max-len 64 of a 64-position teacher were told "a larger --max-len may help",
    which the teacher (and a transformer student copying its positions) refuses."""
    db = str(tmp_path / "kd.db")
    for split in ("train", "dev"):
        rows = [line.split("\t") for line in corpus[split].read_text(encoding="utf-8").splitlines()]
        kd("ingest", str(write_tsv(tmp_path / f"long-{split}.tsv", [(label, text * 20) for label, text in rows])), "--split", split, "--db", db)
    full = kd("teach", "--run", "full", "--model", str(tiny_model), "--epochs", "1", "--max-len", "64", "--db", db)
    assert ("warning: 100% of the train texts are longer than --max-len 64 tokens and were cut to fit (the teacher never saw their ends): "
            "its model reads no more than 64 tokens (its position table): a model with more positions may help, at a cost in speed") in full.stderr
    assert "a larger --max-len" not in full.stderr
    student = kd("distill", "--run", "full", "--student", "transformer", "--layers", "1", "--epochs", "1", "--no-unlabeled", "--db", db)
    assert ("(the student never saw their ends): its model reads no more than 64 tokens (its position table): "
            "a model with more positions may help") in student.stderr
    assert "a larger --max-len" not in student.stderr
    # where more positions are there to read (or a student of none), a larger --max-len is the advice
    short = kd("teach", "--run", "short", "--model", str(tiny_model), "--epochs", "1", "--max-len", "32", "--db", db)
    assert "(the teacher never saw their ends): a larger --max-len may help, at a cost in speed" in short.stderr
    cnn = kd("distill", "--run", "full", "--student", "textcnn", "--epochs", "1", "--no-unlabeled", "--db", db)
    assert "(the student never saw their ends): a larger --max-len may help, at a cost in speed" in cnn.stderr


def test_gpt2_texts_cut_at_all_its_positions_are_not_told_a_larger_max_len_may_help(tmp_path, corpus):
    """A GPT-2's config.json names its positions n_positions, not max_position_embeddings: its texts cut at
    --max-len 64 of a 64-position GPT-2 were told "a larger --max-len may help", which kd teach then refuses."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from kdstore.vocab import build_vocab, make_tokenizer

    db = str(tmp_path / "kd.db")
    for split in ("train", "dev"):
        rows = [line.split("\t") for line in corpus[split].read_text(encoding="utf-8").splitlines()]
        kd("ingest", str(write_tsv(tmp_path / f"long-{split}.tsv", [(label, text * 20) for label, text in rows])), "--split", split, "--db", db)
    tokens = build_vocab([line.split("\t")[-1] for line in corpus["train"].read_text(encoding="utf-8").splitlines()])
    seeded(GPT2LMHeadModel, GPT2Config(vocab_size=len(tokens), n_embd=16, n_layer=2, n_head=2, n_positions=64)).save_pretrained(tmp_path / "gpt2")
    make_tokenizer(tokens).save_pretrained(tmp_path / "gpt2")
    full = kd("teach", "--run", "g", "--model", str(tmp_path / "gpt2"), "--epochs", "1", "--max-len", "64", "--db", db)
    assert "(the teacher never saw their ends): its model reads no more than 64 tokens (its position table)" in full.stderr
    assert "a larger --max-len" not in full.stderr


def test_teach_counts_the_train_texts_cut_to_max_len_and_warns_when_most_are(sample_store, tiny_model):
    db = str(sample_store)
    short = kd("teach", "--run", "cut", "--model", str(tiny_model), "--epochs", "1", "--max-len", "6", "--folds", "2", "--db", db)
    store = Store.open(db)
    cut = {m.name: m.value for m in store.metrics(_stage(sample_store, "cut", "teach").id) if m.split == "train" and "truncated" in m.name}
    assert set(cut) == {"fold0/truncated", "fold1/truncated"} and sum(cut.values()) == 60  # each text trains one of the 2 fold models
    assert "warning: 100% of the train texts are longer than --max-len 6 tokens and were cut" in short.stderr
    assert "train texts cut to --max-len 6 tokens: 100%" in short.stdout
    assert "no train samples of class" not in short.stderr
    kd("ingest", str(write_tsv(sample_store.parent / "mid.tsv", [("mid", "不好不坏，一般般吧")])), "--split", "dev", "--db", db)
    roomy = kd("teach", "--run", "roomy", "--model", str(tiny_model), "--epochs", "1", "--max-len", "64", "--db", db)
    assert "were cut" not in roomy.stderr and "cut to --max-len" not in roomy.stdout
    assert "warning: no train samples of class 'mid': the model never learned it, and its dev and test samples count as errors" in roomy.stderr  # a dev-only class
    # a class of no sample at all beside it is not said to have dev and test samples that count as errors
    classes = sample_store.parent / "classes.txt"
    classes.write_text("".join(f"{n}\n" for n in store.class_names()) + "gone\n", encoding="utf-8")
    kd("ingest", str(write_tsv(sample_store.parent / "mid2.tsv", [("mid", "还行吧")])), "--split", "dev", "--classes", str(classes), "--db", db)
    both = kd("teach", "--run", "both", "--model", str(tiny_model), "--epochs", "1", "--max-len", "64", "--db", db)
    assert ("warning: no train samples of class 'mid', 'gone': the model never learned them, and the dev and test samples of "
            "'mid' count as errors ('gone' has none)") in both.stderr
    assert [m.value for m in store.metrics(_stage(sample_store, "roomy", "teach").id) if m.name == "truncated"] == [0]


def test_a_dev_only_teacher_names_the_split_it_learned_from_for_a_class_it_never_learned():
    """A teacher of --split dev whose dev rows hold no 'mid' (the store's train rows do) was warned of "no train
    samples of class 'mid'" and that "its dev and test samples count as errors": it has train samples, and no dev one."""
    from commands.train import _unlearned

    def figures(support):
        return {f"support[{k}]": float(v) for k, v in support.items()}

    stage = {"kind": "teach", "config": {"splits": ["dev"]},
             "metrics": {"train": figures({"pos": 20, "neg": 20, "mid": 20}), "dev": figures({"pos": 6, "neg": 6, "mid": 0}),
                         "test": figures({"pos": 5, "neg": 5, "mid": 5})}}
    assert _unlearned(stage) == ["no dev samples of class 'mid': the model never learned it, and its test samples count as errors"]


def test_the_summary_says_which_epoch_was_kept_and_when_patience_stopped_the_training(taught_store):
    """Stopped early by --patience, a training's bar was left part-filled and its summary said nothing of it,
    nor which epoch (or --eval-every step) was kept."""
    from commands.train import _kept_line

    def stage(best, trained, *, epochs=5, every=0, dev=True, **more):
        losses = [{"step": s, "split": "train", "name": "loss", "value": 0.1} for s in range(1, trained + 1)]
        learned = {"best_step" if every else "best_epoch": best, **({"steps_per_epoch": 4} if every else {}), **more}
        return {"kind": "distill", "config": {"epochs": epochs, "patience": 2, "eval_every": every}, "history": losses,
                "metrics": {"all": learned, **({"dev": {"accuracy": 0.9}} if dev else {})}}

    assert _kept_line(stage(2, 4)) == "kept epoch 2 (the best dev macro-F1): --patience 2 stopped the training after 4 of its 5 epochs"
    assert _kept_line(stage(3, 5)) == "kept epoch 3 of 5 (the best dev macro-F1)"
    assert _kept_line(stage(5, 5)) is None  # the last: nothing to say
    assert _kept_line(stage(2, 5, dev=False)) is None  # (no dev: nothing judged)
    assert _kept_line(stage(2, 3, diverged_epoch=3)) == "kept epoch 2 of 3 (the best dev macro-F1)"  # (a divergence is warned of)
    assert _kept_line(stage(6, 12, every=3)) == "kept step 6 (the best dev macro-F1): --patience 2 stopped the training after 12 of its 20 steps"
    # an early-exit student keeps the epoch of the best dev accuracy (at its --speed), not macro-F1
    early = {**stage(2, 4), "config": {"epochs": 5, "patience": 2, "student": "early-exit"}}
    assert _kept_line(early) == "kept epoch 2 (the best dev accuracy): --patience 2 stopped the training after 4 of its 5 epochs"
    assert _kept_line({**stage(3, 5), "config": {"epochs": 5, "patience": 2, "student": "early-exit"}}) == "kept epoch 3 of 5 (the best dev accuracy)"
    # --folds: each fold's own (the summary said none)
    def folds(kept, trained, epochs=5):
        losses = [{"step": e, "split": "train", "name": f"fold{k}/loss", "value": 0.1} for k, t in enumerate(trained) for e in range(1, t + 1)]
        return {"kind": "teach", "config": {"epochs": epochs, "patience": 2}, "history": losses,
                "metrics": {"all": {f"fold{k}/best_epoch": b for k, b in enumerate(kept)}, "dev": {"accuracy": 0.9}}}

    assert _kept_line(folds([5, 5], [5, 5])) is None
    assert _kept_line(folds([3, 5], [5, 5])) == "each fold kept the epoch of its best dev macro-F1 (epochs trained): fold 0 3 of 5, fold 1 5 of 5"
    assert _kept_line(folds([2, 4], [4, 5])) == ("each fold kept the epoch of its best dev macro-F1 (epochs trained): fold 0 2 of 4, "
                                                 "fold 1 4 of 5; --patience 2 stopped fold 0 before 5 epochs")
    # and the summary of a real training says what its figures say
    db = str(taught_store)
    out = kd("distill", "--run", "r", "--epochs", "4", "--patience", "1", "--embed-dim", "16", "--num-filters", "8", "--max-len", "32", "--db", db)
    report = json.loads(kd("report", "--run", "r", "--db", db, "--json").stdout)
    said = _kept_line(next(s for s in report["stages"] if s["name"] == "distill-textcnn"))
    assert (said is None and "  kept " not in out.stdout) or f"  {said}\n" in out.stdout


def test_the_summary_says_when_patience_stopped_folds_scored_every_n_steps():
    """`kd distill --folds 2 --eval-every 2 --patience 1 --epochs 3`: fold 0 stopped after 4 of its 24 steps, and the
    summary said "fold 0 2 of 4, fold 1 6 of 8" and nothing of --patience (each fold's steps an epoch are under its
    own key, so no step was planned), where the same folds judged by the epoch are said to be stopped."""
    from commands.train import _kept_line

    trained = {0: 4, 1: 8}
    history = [{"step": s, "split": "train", "name": f"fold{k}/loss", "value": 0.1} for k, t in trained.items() for s in range(2, t + 1, 2)]
    learned = {"fold0/best_step": 2, "fold0/steps_per_epoch": 8, "fold1/best_step": 6, "fold1/steps_per_epoch": 8}
    stage = {"kind": "distill", "config": {"epochs": 3, "patience": 1, "eval_every": 2}, "history": history,
             "metrics": {"all": learned, "dev": {"accuracy": 0.9}}}
    assert _kept_line(stage) == ("each fold kept the step of its best dev macro-F1 (steps trained): fold 0 2 of 4, fold 1 6 of 8; "
                                 "--patience 1 stopped folds 0, 1 before 24 steps")
    # folds that trained every step planned, their last kept: nothing to say
    done = {"fold0/best_step": 24, "fold0/steps_per_epoch": 8}
    last = [{"step": s, "split": "train", "name": "fold0/loss", "value": 0.1} for s in range(2, 25, 2)]
    assert _kept_line({**stage, "history": last, "metrics": {"all": done, "dev": {"accuracy": 0.9}}}) is None


def test_the_summary_says_when_a_tie_of_dev_macro_f1_chose_the_epoch_kept():
    """Epochs tied on dev macro-F1 (a small model answering the commonest class at every epoch) keep the one of the
    lower dev loss: the summary said "kept epoch 2 of 3 (the best dev macro-F1)" of three epochs at the same 0.3103."""
    from commands.train import _kept_line

    def stage(best, f1, loss, *, tag=""):
        history = [{"step": e, "split": "train", "name": f"{tag}loss", "value": 0.7} for e in range(1, len(f1) + 1)]
        history += [{"step": e, "split": "dev", "name": f"{tag}{name}", "value": v}
                    for name, values in (("macro_f1", f1), ("loss", loss)) for e, v in enumerate(values, 1)]
        return {"kind": "teach", "config": {"epochs": len(f1), "patience": 5}, "history": history,
                "metrics": {"all": {f"{tag}best_epoch": best}, "dev": {"accuracy": 0.45}}}

    assert _kept_line(stage(2, [0.31, 0.31, 0.31], [0.698, 0.696, 0.697])) == \
        "kept epoch 2 of 3 (the lowest dev loss of the epochs tied on dev macro-F1)"
    assert _kept_line(stage(1, [0.31, 0.31], [0.695, 0.695])) == \
        "kept epoch 1 of 2 (the first of the epochs tied on dev macro-F1 and dev loss)"
    assert _kept_line(stage(2, [0.31, 0.62, 0.60], [0.70, 0.65, 0.60])) == "kept epoch 2 of 3 (the best dev macro-F1)"  # no tie
    folds = stage(2, [0.31, 0.31, 0.31], [0.698, 0.696, 0.697], tag="fold0/")
    assert _kept_line(folds) == ("each fold kept the epoch of its best dev macro-F1, a tie going to the lower dev loss "
                                 "(epochs trained): fold 0 2 of 3")


def test_distill_counts_the_texts_cut_to_max_len_and_warns_when_most_are(sample_store, tiny_model):
    """A news-topic user's long texts were cut to a student's --max-len without a word (kd teach counts its own)."""
    from transformers import AutoTokenizer

    db = str(sample_store)
    kd("teach", "--run", "t", "--model", str(tiny_model), "--epochs", "1", "--max-len", "32", "--db", db)
    store = Store.open(db)
    texts = store.samples(splits=["train"], labeled=True).texts
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    longer = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) > 6 for t in texts)  # (a TextCNN reads no [CLS]/[SEP])
    assert 0 < longer < len(texts)
    short = kd("distill", "--run", "t", "--epochs", "1", "--max-len", "6", "--no-unlabeled", "--name", "short", "--db", db)
    figures = {m.name: m.value for m in store.metrics(_stage(sample_store, "t", "short").id) if m.split == "train" and m.step is None}
    assert figures["truncated"] == longer and figures["texts"] == len(texts)
    share = longer / len(texts)
    assert f"texts it learned from: {share:.0%} cut to --max-len 6 tokens" in short.stdout
    assert share >= 0.5 and f"warning: {share:.0%} of the texts it learned from are longer than --max-len 6 tokens and were cut to fit (the student never saw their ends)" in short.stderr
    # each fold's own rows counted: every train text trains all folds but the one it is held out of
    folds = kd("distill", "--run", "t", "--epochs", "1", "--max-len", "6", "--no-unlabeled", "--folds", "2", "--name", "folds", "--db", db)
    figures = {m.name: m.value for m in store.metrics(_stage(sample_store, "t", "folds").id) if m.split == "train" and m.step is None}
    assert figures["fold0/truncated"] + figures["fold1/truncated"] == longer and figures["fold0/texts"] + figures["fold1/texts"] == len(texts)
    assert f"texts it learned from: {share:.0%} cut" in folds.stdout
    roomy = kd("distill", "--run", "t", "--epochs", "1", "--no-unlabeled", "--name", "roomy", "--db", db)  # the teacher's 32
    assert "cut to --max-len" not in roomy.stdout and "were cut" not in roomy.stderr
    assert [m.value for m in store.metrics(_stage(sample_store, "t", "roomy").id) if m.name == "truncated"] == [0]


def test_a_teacher_of_a_single_optimizer_step_trains(sample_store, tiny_model):
    """`--epochs 1` on fewer train texts than `--batch-size` is one step, which the warm-up took at a
    learning rate of 0: the saved model was the checkpoint as it was, and the stage succeeded."""
    from safetensors.torch import load_file

    kd("teach", "--run", "one", "--model", str(tiny_model), "--epochs", "1", "--batch-size", "64", "--max-len", "32", "--db", str(sample_store))
    start = load_file(tiny_model / "model.safetensors")
    saved = load_file(Path(_stage(sample_store, "one", "teach").artifact_path) / "model.safetensors")
    body = [k for k in saved if k in start and k.startswith("bert.encoder.")]
    assert body and any(not torch.equal(saved[k], start[k]) for k in body)


def test_a_class_a_teacher_learned_from_dev_is_no_unlearned_class(sample_store, tiny_model):
    """`kd teach --split train --split dev` learns a class that only dev holds: no warning that the
    model never learned it (the train split's support alone said so)."""
    db = str(sample_store)
    kd("ingest", str(write_tsv(sample_store.parent / "mid.tsv", [("mid", "不好不坏，一般般吧")])), "--split", "dev", "--db", db)
    out = kd("teach", "--run", "both", "--model", str(tiny_model), "--split", "train", "--split", "dev", "--epochs", "1",
             "--max-len", "4", "--db", db)
    assert "no train samples of class" not in out.stderr
    # its texts cut to --max-len are of both splits: not "train texts"
    assert "\n  train/dev texts it learned from cut to --max-len 4 tokens: " in out.stdout
    assert "warning: 100% of the train/dev texts it learned from are longer than --max-len 4" in out.stderr
    # its dev figure is of rows it learned from: the summary says so, and the test figure is held out
    dev_line = next(l for l in out.stdout.splitlines() if l.strip().startswith("dev:"))
    assert dev_line.endswith("(trained on: not held out)")
    assert all("not held out" not in l for l in out.stdout.splitlines() if l.strip().startswith("test:"))


def test_a_folds_teacher_trained_on_dev_has_out_of_fold_dev_figures(sample_store, tiny_model):
    """`kd teach --split train --split dev --folds 2`: each dev row is scored by the fold model that did
    not learn from it, so its dev figures are held out; the summary and `kd report --compare` called
    them "not held out"."""
    db = str(sample_store)
    out = kd("teach", "--run", "kf", "--model", str(tiny_model), "--split", "train", "--split", "dev", "--folds", "2",
             "--epochs", "1", "--max-len", "32", "--db", db)
    assert "  dev: accuracy" in out.stdout and "not held out" not in out.stdout
    assert "trained on dev" not in kd("report", "--compare", "kf", "--db", db).stdout


def test_split_dev_with_a_where_that_selects_no_dev_row_keeps_dev_as_the_judge(sample_store, tiny_model):
    """`kd teach --split train --split dev --where "source = 'shop.tsv'"` with shop.tsv's rows all in train
    trained on no dev row, yet kept the last epoch with no judge, and the summary and `kd report --compare`
    called its dev figures, of rows it never saw, "not held out". --patience is used (it was said not to be)."""
    db = str(sample_store)
    n_dev = len(Store.open(db).samples(splits=["dev"], labeled=True))
    out = kd("teach", "--run", "wd", "--model", str(tiny_model), "--split", "train", "--split", "dev", "--where", "split = 'train'",
             "--epochs", "2", "--patience", "2", "--max-len", "32", "--db", db, "--json")
    assert "--patience" not in out.stderr
    report = json.loads(out.stdout)
    assert report["metrics"]["all"]["dev_samples"] == n_dev > 0
    assert "dev" in {h["split"] for h in report["history"]}  # dev judged the epochs
    text = kd("report", "--compare", "wd", "--db", db).stdout
    assert "trained on dev" not in text
    out = kd("teach", "--run", "wd", "--overwrite", "--model", str(tiny_model), "--split", "train", "--split", "dev", "--where",
             "split = 'train'", "--epochs", "1", "--max-len", "32", "--db", db)
    assert "not held out" not in out.stdout and "  dev: accuracy" in out.stdout


def test_split_dev_with_a_where_that_selects_no_dev_row_counts_train_texts_cut(sample_store, tiny_model):
    """`--split train --split dev --where "split = 'train'"` learned from no dev text, yet its summary and warning
    said "train/dev texts it learned from" were cut."""
    out = kd("teach", "--run", "wd", "--model", str(tiny_model), "--split", "train", "--split", "dev", "--where", "split = 'train'",
             "--epochs", "1", "--max-len", "4", "--db", str(sample_store))
    assert "\n  train texts cut to --max-len 4 tokens: " in out.stdout and "train/dev" not in out.stdout
    assert "of the train texts are longer than --max-len 4" in out.stderr and "train/dev" not in out.stderr


def test_split_dev_whose_where_selects_dev_rows_of_other_labels_only_keeps_dev_as_the_judge(sample_store, tiny_model):
    """`--split dev` with a --where selecting dev rows of a class --label leaves out: none of them trains, dev judges
    the epochs; `--patience` was warned of as "not used when dev is trained on", though it was."""
    db = str(sample_store)
    kd("ingest", str(write_tsv(sample_store.parent / "mid.tsv", [("mid", "不好不坏"), ("mid", "一般般吧")])), "--split", "dev", "--db", db)
    result = kd("teach", "--run", "mix", "--model", str(tiny_model), "--split", "train", "--split", "dev", "--label", "pos", "--label", "neg",
                "--where", "split = 'train' OR text = '不好不坏'", "--patience", "1", "--epochs", "1", "--max-len", "32", "--db", db)
    assert "--patience: not used" not in result.stderr
    store = Store.open(db)
    assert {m.name: m.value for m in store.metrics(_stage(sample_store, "mix", "teach").id) if m.split == "all"}["dev_samples"] == 20


def test_dev_rows_of_a_class_with_no_train_sample_left_do_not_judge_the_epochs(sample_store, tiny_model):
    """Every 'mid' train sample dropped (`kd labels set 7=drop ...`), its dev samples kept: they judged the
    teacher's epochs, a class it could never answer. Their loss grows as it learns pos and neg, so the tie-break on
    dev loss kept epoch 1 and --patience stopped it (dev macro-F1 flat at 0.11 over 4 epochs, where --label
    pos --label neg, whose dev rows are limited so, learned to 1.0). Judged as --label judges: on its classes' rows."""
    db = str(sample_store)
    kd("ingest", str(write_tsv(sample_store.parent / "mid.tsv", [("mid", "不好不坏"), ("mid", "一般般吧"), ("mid", "还行一般")])), "--db", db)
    kd("ingest", str(write_tsv(sample_store.parent / "mid-dev.tsv", [("mid", f"一般般的{i}") for i in range(7)])), "--split", "dev", "--db", db)
    mids = [s["id"] for s in json.loads(kd("samples", "--split", "train", "--label", "mid", "--json", "--db", db).stdout)]
    kd("labels", "set", "--run", "e", *[f"{i}=drop" for i in mids], "--db", db)
    out = json.loads(kd("teach", "--run", "t", "--model", str(tiny_model), "--epochs", "1", "--max-len", "32", "--db", db, "--json").stdout)
    assert out["metrics"]["all"]["dev_samples"] == 20  # pos and neg's, not mid's 7
    assert out["metrics"]["dev"]["n"] == 27  # (its stored dev figures still count every labeled row, mid's as errors)
    # a student the same: each epoch's dev accuracy is of the 20 pos and neg rows (k/20), not of 27
    out = json.loads(kd("distill", "--run", "t", "--epochs", "2", "--embed-dim", "8", "--num-filters", "4", "--db", db, "--json").stdout)
    judged = [h["value"] for h in out["history"] if h["split"] == "dev" and h["name"] == "accuracy"]
    assert judged and all(abs(a * 20 - round(a * 20)) < 1e-6 for a in judged), judged
    assert out["metrics"]["dev"]["n"] == 27


def test_a_class_the_teachers_where_or_label_leaves_out_is_an_unlearned_class(sample_store, tiny_model):
    """The train split holds a 'mid' sample, but --where (or --label) leaves it out of what the
    teacher learned from: the warning names it, as for a class with no train sample at all."""
    db = str(sample_store)
    kd("ingest", str(write_tsv(sample_store.parent / "mid.tsv", [("mid", "不好不坏，一般般吧")])), "--db", db)
    short = ["--model", str(tiny_model), "--epochs", "1", "--max-len", "32", "--db", db]
    where = kd("teach", "--run", "w", "--where", "text NOT LIKE '%一般般%'", *short)
    assert "warning: no train samples that --where/--label select of class 'mid': the model never learned it (it has no dev or test samples either)" in where.stderr
    label = kd("teach", "--run", "l", "--label", "pos", "--label", "neg", *short)
    assert "warning: no train samples that --where/--label select of class 'mid': the model never learned it" in label.stderr
    assert "no train samples of class" not in kd("teach", "--run", "all", *short).stderr


def test_a_class_the_students_where_leaves_out_is_named_as_its_where_s(taught_store):
    """A student whose --where selected one class's train rows was warned of "no train samples of class
    'neg'", where the store holds some: its --where left them out, as a teacher's warning says."""
    db, names = str(taught_store), Store.open(str(taught_store)).class_names()
    out = kd("distill", "--run", "r", "--where", f"label_id = {names.index('pos')}", "--no-unlabeled", "--epochs", "1",
             "--embed-dim", "8", "--num-filters", "4", "--max-len", "32", "--db", db)
    assert "warning: no train samples that --where selects of class 'neg': the model never learned it" in out.stderr, out.stderr


def _with_bert_vocab_txt(folder: Path, tiny_model, config_class, model_class, **sizes) -> Path:
    """A tiny masked-LM of ``config_class`` saved in ``folder`` with the tiny BERT's vocab.txt and no
    tokenizer files of its own (a Chinese ALBERT ships so)."""
    from transformers import AutoTokenizer

    vocab = AutoTokenizer.from_pretrained(tiny_model).get_vocab()
    config = config_class(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=64, **sizes)
    model_class(config).save_pretrained(folder)
    (folder / "vocab.txt").write_text("".join(t + "\n" for t in sorted(vocab, key=vocab.get)), encoding="utf-8")
    return folder


def test_a_chinese_albert_with_a_bert_vocab_txt_is_told_which_tokenizer_class_to_name(sample_store, tiny_model, tmp_path):
    """Chinese ALBERTs (albert_chinese_tiny and the like) ship BERT's vocab.txt, no spiece.model: for
    model type albert transformers reads it with no vocabulary, and kd said "save the tokenizer it was
    trained with in its folder" of a folder that holds it. Named as BertTokenizer, it loads."""
    from transformers import AlbertConfig, AlbertForMaskedLM

    from kdstore.teacher import load_classifier

    albert = _with_bert_vocab_txt(tmp_path / "albert_chinese_tiny", tiny_model, AlbertConfig, AlbertForMaskedLM,
                                  embedding_size=16, max_position_embeddings=64)
    result = kd("teach", "--run", "al", "--model", str(albert), "--max-len", "32", "--db", str(sample_store), ok=False)
    assert result.output.strip().splitlines() == [
        f"Error: model {str(albert)!r} has no tokenizer (its vocabulary is the 5 special tokens alone): "
        "its vocab.txt is not read for model type 'albert' (a Chinese ALBERT's is a BERT vocabulary): "
        'say {"tokenizer_class": "BertTokenizer"} in its tokenizer_config.json']
    (albert / "tokenizer_config.json").write_text('{"tokenizer_class": "BertTokenizer"}', encoding="utf-8")
    tokenizer, model = load_classifier(str(albert), ["pos", "neg"])
    assert tokenizer.convert_ids_to_tokens(tokenizer("很好")["input_ids"]) == ["[CLS]", "很", "好", "[SEP]"]
    assert model.config.model_type == "albert"


def test_a_bert_whose_tokenizer_json_holds_the_special_tokens_alone_is_told_to_remove_it(sample_store, tiny_model, tmp_path):
    """transformers 5's `BertTokenizerFast(vocab_file="vocab.txt").save_pretrained(folder)` writes a
    tokenizer.json of the five special tokens beside the full vocab.txt, and a tokenizer_config.json
    that already names BertTokenizer: kd told the user to say {"tokenizer_class": "BertTokenizer"},
    which the folder says. The tokenizer.json is what transformers reads: without it, vocab.txt is."""
    from kdstore.teacher import load_classifier

    bert = tmp_path / "my_bert"
    shutil.copytree(tiny_model, bert)
    tokenizer_json = json.loads((bert / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = tokenizer_json["model"]["vocab"]
    (bert / "vocab.txt").write_text("".join(t + "\n" for t in sorted(vocab, key=vocab.get)), encoding="utf-8")
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer_json["model"]["vocab"] = {t: i for i, t in enumerate(specials)}
    tokenizer_json["added_tokens"] = [a for a in tokenizer_json["added_tokens"] if a["content"] in specials]
    for a in tokenizer_json["added_tokens"]:
        a["id"] = specials.index(a["content"])
    (bert / "tokenizer.json").write_text(json.dumps(tokenizer_json, ensure_ascii=False), encoding="utf-8")
    config = json.loads((bert / "tokenizer_config.json").read_text(encoding="utf-8"))
    (bert / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": "BertTokenizer"}), encoding="utf-8")
    result = kd("teach", "--run", "tj", "--model", str(bert), "--max-len", "32", "--db", str(sample_store), ok=False)
    assert result.output.strip().splitlines() == [
        f"Error: model {str(bert)!r} has no tokenizer (its vocabulary is the 5 special tokens alone): "
        f"its tokenizer.json holds the special tokens alone, beside a vocab.txt of {len(vocab)} tokens: "
        "remove tokenizer.json, and vocab.txt is read"]
    (bert / "tokenizer.json").unlink()
    tokenizer, model = load_classifier(str(bert), ["pos", "neg"])
    assert len(tokenizer.get_vocab()) == len(vocab)


def test_a_roberta_with_a_bert_vocab_txt_is_told_the_tokenizer_class_without_a_word_of_albert(sample_store, tiny_model, tmp_path):
    """A RoBERTa-type folder holding a BERT vocab.txt (no vocab.json, no merges.txt) got the ALBERT
    hint word for word: "(a Chinese ALBERT's is a BERT vocabulary)", of a model that is no ALBERT.
    The advice itself stands: named as BertTokenizer, it loads."""
    from transformers import RobertaConfig, RobertaForMaskedLM

    roberta = _with_bert_vocab_txt(tmp_path / "roberta_bert_vocab", tiny_model, RobertaConfig, RobertaForMaskedLM,
                                   max_position_embeddings=66, type_vocab_size=1)
    result = kd("teach", "--run", "ro", "--model", str(roberta), "--max-len", "32", "--db", str(sample_store), ok=False)
    assert result.output.strip().splitlines() == [
        f"Error: model {str(roberta)!r} has no tokenizer (its vocabulary is the 5 special tokens alone): "
        "its vocab.txt is not read for model type 'roberta': "
        'say {"tokenizer_class": "BertTokenizer"} in its tokenizer_config.json']


def test_a_sentencepiece_tokenizer_without_the_sentencepiece_package_says_so_in_one_line(sample_store, tiny_model, tmp_path):
    """An XLM-R folder whose tokenizer is its sentencepiece.bpe.model alone (no tokenizer.json, as a slow
    tokenizer saved it), on a machine without the sentencepiece package: transformers fell back to
    reading it as a tiktoken file, and kd printed its five-line SentencePiece warning, then "`tiktoken` is
    required ... pip install tiktoken", which reads no such model either. A fresh process: the warning
    goes to the stderr transformers' logging handler was made with."""
    import importlib.util
    import os
    import subprocess
    import sys

    from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM

    if importlib.util.find_spec("sentencepiece") is not None:
        pytest.skip("the sentencepiece package is installed here")
    folder = tmp_path / "xlmr_spm"
    XLMRobertaForMaskedLM(XLMRobertaConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                           intermediate_size=64, max_position_embeddings=66, type_vocab_size=1)).save_pretrained(folder)
    (folder / "tokenizer_config.json").write_text('{"tokenizer_class": "XLMRobertaTokenizer"}', encoding="utf-8")
    (folder / "sentencepiece.bpe.model").write_bytes(bytes(range(256)) * 4)
    env = {**os.environ, "KD_NO_PROGRESS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", "from commands.cli import main; main()", "teach", "--run", "spm", "--model", str(folder),
         "--max-len", "32", "--db", str(sample_store)], capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: cannot load model {str(folder)!r}: its tokenizer is the SentencePiece model sentencepiece.bpe.model, "
        "which needs the sentencepiece package (pip install sentencepiece)"], result.stderr


def test_a_deberta_v2_with_a_bert_vocab_txt_is_refused_not_taught_on_unk_alone(sample_store, tiny_model, tmp_path):
    """A Chinese DeBERTa-v2 folder holding a BERT vocab.txt (Erlangshen's layout, without its
    tokenizer_config.json): transformers 5 makes a DebertaV2Tokenizer of the special tokens alone, one
    of them counted twice (7 "tokens", 5 special ids), so the special-tokens-only check passed and kd
    taught a teacher on "[CLS] [UNK] [SEP]" for every text, without a word."""
    from transformers import DebertaV2Config, DebertaV2ForMaskedLM

    deberta = _with_bert_vocab_txt(tmp_path / "deberta_bert_vocab", tiny_model, DebertaV2Config, DebertaV2ForMaskedLM,
                                   max_position_embeddings=64)
    result = kd("teach", "--run", "de", "--model", str(deberta), "--max-len", "32", "--db", str(sample_store), ok=False)
    assert result.output.strip().splitlines() == [
        f"Error: model {str(deberta)!r} has no tokenizer (its vocabulary is the 5 special tokens alone): "
        "its vocab.txt is not read for model type 'deberta-v2': "
        'say {"tokenizer_class": "BertTokenizer"} in its tokenizer_config.json']


def test_a_checkpoint_without_a_tokenizer_or_with_weights_unlike_its_config_is_refused_before_training(sample_store, tiny_model, tmp_path):
    """transformers 5 makes an empty tokenizer (special tokens only) for a folder with none: every
    character read as [UNK], a teacher of nothing. ignore_mismatched_sizes (meant for the head)
    silently drew at random an embedding table whose config.json vocab_size was edited."""
    import shutil

    from transformers import AutoConfig, AutoModelForMaskedLM

    from kdstore.errors import KdError
    from kdstore.teacher import load_classifier

    bare = tmp_path / "no-tokenizer"
    AutoModelForMaskedLM.from_pretrained(tiny_model).save_pretrained(bare)
    with pytest.raises(KdError, match="has no tokenizer"):
        load_classifier(str(bare), ["pos", "neg"])
    def refused(run: str, name: str, field: str) -> tuple[Path, object, list[str]]:
        """A copy of the tiny model whose config.json has one more of ``field``: taught, refused in one
        line, its stage failed with no logits written."""
        edited = tmp_path / name
        shutil.copytree(tiny_model, edited)
        config = AutoConfig.from_pretrained(edited)
        setattr(config, field, getattr(config, field) + (10 if field == "vocab_size" else 1))
        config.save_pretrained(edited)
        result = kd("teach", "--run", run, "--model", str(edited), "--epochs", "1", "--max-len", "32", "--db", str(sample_store), ok=False)
        assert _stage(sample_store, run, "teach").status == "failed" and _count(sample_store, Logit) == 0
        return edited, config, result.stderr.strip().splitlines()

    edited, config, lines = refused("v", "edited-vocab", "vocab_size")
    assert lines == [
        f"Error: model '{edited}': weight bert.embeddings.word_embeddings.weight is ({config.vocab_size - 10}, 32) "
        f"in the checkpoint but ({config.vocab_size}, 32) by its config.json: they do not belong together"]
    # a config.json naming more layers than were saved: those were drawn at random
    deeper, _, lines = refused("d", "edited-layers", "num_hidden_layers")
    assert lines == [
        f"Error: model '{deeper}': weight bert.encoder.layer.2.attention.output.LayerNorm.bias (and 15 more) is not in the "
        "checkpoint, though its config.json has it: they do not belong together"]
    student = tmp_path / "student"
    student.mkdir()
    (student / "student.json").write_text("{}", encoding="utf-8")
    with pytest.raises(KdError, match="is a kd student"):
        load_classifier(str(student), ["pos", "neg"])


def test_a_folder_without_config_json_or_with_an_unreadable_json_file_is_named(tiny_model, tmp_path):
    """transformers said "Should have a `model_type` key in its config.json" of a folder with no
    config.json (a kd stage's folder, whose model is in model/ or student/), and "Expecting value:
    line 1 column 1 (char 0)" of a tokenizer.json that is a Git LFS pointer, naming no file."""
    import shutil

    from kdstore.teacher import load_classifier

    (tmp_path / "empty").mkdir()
    with pytest.raises(KdError, match=r"'.*empty': no config.json in that folder: give the folder that holds config.json and the weights$"):
        load_classifier(str(tmp_path / "empty"), ["pos", "neg"])
    shutil.copytree(tiny_model, tmp_path / "teach" / "model")
    with pytest.raises(KdError, match=r"no config.json in that folder: give the folder that holds config.json and the weights, such as '.*teach/model'"):
        load_classifier(str(tmp_path / "teach"), ["pos", "neg"])
    (tmp_path / "distill" / "student").mkdir(parents=True)
    (tmp_path / "distill" / "student" / "student.json").write_text("{}", encoding="utf-8")
    with pytest.raises(KdError, match=r"'.*distill/student' in it is a kd student"):
        load_classifier(str(tmp_path / "distill"), ["pos", "neg"])
    pointer = tmp_path / "pointer"
    shutil.copytree(tiny_model, pointer)
    (pointer / "tokenizer.json").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 4418\n", encoding="utf-8")
    with pytest.raises(KdError, match=r"tokenizer.json is a Git LFS pointer, not the file itself"):
        load_classifier(str(pointer), ["pos", "neg"])
    (pointer / "tokenizer.json").write_text('{"version":', encoding="utf-8")
    with pytest.raises(KdError, match=r"'.*pointer': tokenizer.json is not valid JSON \(Expecting value"):
        load_classifier(str(pointer), ["pos", "neg"])


def test_a_hub_name_with_the_hub_out_of_reach_is_one_line_without_retries(monkeypatch):
    """No network: the hub client retried each file for about 25 s before kd could say anything."""
    import time

    from kdstore import teacher
    from kdstore.errors import KdError

    monkeypatch.setattr(teacher, "hub_unreachable", lambda: "huggingface.co: Name or service not known")
    started = time.monotonic()
    with pytest.raises(KdError) as err:
        teacher.load_classifier("no-such-org/no-such-model", ["pos", "neg"])
    assert time.monotonic() - started < 5
    assert str(err.value) == ("cannot load model 'no-such-org/no-such-model': no such local directory, no downloaded copy, "
                              "and the Hugging Face hub cannot be reached (huggingface.co: Name or service not known)")


def test_a_model_folder_given_with_a_quoted_tilde_or_through_a_symlink_loads(tiny_model, tmp_path, monkeypatch):
    """``--model '~/m'`` (or a config file's ``model = "~/m"``, which no shell expands) was passed on
    as is, and transformers took it for a malformed hub name."""
    from kdstore.teacher import load_classifier, started_from

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m").symlink_to(tiny_model, target_is_directory=True)
    tokenizer, model = load_classifier("~/models/m", ["pos", "neg"])
    assert model.config.num_labels == 2 and len(tokenizer) > 2
    assert started_from("~/models/m", model.config)["model_path"] == str(Path(tiny_model).resolve())
    with pytest.raises(KdError, match="no such directory"):
        load_classifier("~/models/none", ["pos", "neg"])
    with pytest.raises(KdError, match="config.json'.*it is a file; give the folder"):  # not "hub cannot be reached"
        load_classifier(str(Path(tiny_model) / "config.json"), ["pos", "neg"])


def test_the_reteach_advised_names_a_model_folder_by_its_absolute_path(sample_store, tiny_model, monkeypatch):
    """A teacher of `--model ../m` was advised retrained with `kd teach ... --model ../m`: from another
    folder, another model or none."""
    from kdstore.advice import reteach_command

    monkeypatch.chdir(Path(tiny_model).parent)
    kd("teach", "--run", "rel", "--model", f"../{Path(tiny_model).parent.name}/{Path(tiny_model).name}", "--epochs", "1",
       "--max-len", "32", "--db", str(sample_store))
    config = _stage(sample_store, "rel", "teach").config
    assert config["model"].startswith("../")  # (recorded as typed, for kd report)
    assert reteach_command("rel", config, folds=5).startswith(f"`kd teach --run rel --model {Path(tiny_model).resolve()} --folds 5 --overwrite`")
    for kept in ({"model": "pretrain:p", "model_path": "/x/p", "model_sha256": "ab"}, {"model": "bert-base-chinese", "model_path": "bert-base-chinese"}):
        assert reteach_command("r", kept).startswith(f"`kd teach --run r --model {kept['model']} --overwrite`")


def test_teach_records_the_checkpoint_it_started_from(sample_store, tiny_model):
    """A teacher fine-tuned from teach:RUN (which --overwrite may replace) or a folder (which may be
    edited) says which checkpoint it started from: its absolute path and sha256."""
    from kdstore.runs import sha256_path

    db = str(sample_store)
    kd("teach", "--run", "a", "--model", str(tiny_model), "--epochs", "1", "--max-len", "32", "--db", db)
    first = _stage(sample_store, "a", "teach")
    assert first.config["model_path"] == str(Path(tiny_model).resolve()) and first.config["model_sha256"] == sha256_path(tiny_model)
    kd("teach", "--run", "b", "--model", "teach:a", "--epochs", "1", "--max-len", "32", "--db", db)
    second = _stage(sample_store, "b", "teach")
    assert second.config["model"] == "teach:a"
    assert (second.config["model_path"], second.config["model_sha256"]) == (first.artifact_path, first.artifact_sha256)
    # its own teacher, which --overwrite replaces: refused before the stage (it failed with "no succeeded 'teach' stage")
    refused = kd("teach", "--run", "b", "--model", "teach:b", "--overwrite", "--epochs", "1", "--db", db, ok=False)
    assert "--model teach:b is the teacher this --overwrite replaces" in refused.stderr
    assert [s.name for s in Store.open(db).stages_of("b")] == ["teach"]
    # and the same folder given as a path (it failed with "no such directory": moved aside by then)
    refused = kd("teach", "--run", "b", "--model", second.artifact_path, "--overwrite", "--epochs", "1", "--db", db, ok=False)
    assert f"--model {second.artifact_path} is the teacher this --overwrite replaces" in refused.stderr
    assert _stage(sample_store, "b", "teach").artifact_sha256 == second.artifact_sha256


def test_the_hub_behind_a_proxy_is_left_to_the_hub_client(monkeypatch):
    """A network that reaches the hub only through a proxy must not be judged offline by a direct connection."""
    from kdstore.teacher import hub_unreachable

    monkeypatch.setenv("HF_ENDPOINT", "https://nowhere.invalid")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert hub_unreachable(timeout=0.5) is None


def test_weighted_common_logits_averages_the_samples_every_teacher_scored():
    from kdstore.distill import weighted_common_logits

    a_ids, a = np.array([5, 1, 3, 9]), np.array([[5.0, 0], [1, 0], [3, 0], [9, 0]], dtype=np.float32)
    b_ids, b = np.array([3, 7, 5, 2]), np.array([[0, 3.0], [0, 7], [0, 5], [0, 2]], dtype=np.float32)
    ids, avg = weighted_common_logits([(a_ids, a), (b_ids, b)], (1.0, 3.0))
    assert ids.tolist() == [3, 5]  # both scored them, ascending, whatever order each teacher's rows came in
    assert avg.dtype == np.float32
    # their probabilities averaged with the weights (README), as log-probabilities: not their logits
    from kdstore.probs import softmax

    want = 0.25 * softmax(np.array([[3.0, 0], [5, 0]])) + 0.75 * softmax(np.array([[0, 3.0], [0, 5]]))
    np.testing.assert_allclose(softmax(avg), want, rtol=1e-5)
    np.testing.assert_allclose(np.exp(avg).sum(1), 1.0, rtol=1e-5)
    # a sure teacher (logits 40 apart) does not outvote an unsure one of three times its weight
    ids, avg = weighted_common_logits([(np.array([1]), np.array([[40.0, 0]])), (np.array([1]), np.array([[0, 1.0]]))], (1.0, 3.0))
    np.testing.assert_allclose(softmax(avg), 0.25 * np.array([[1.0, 0]]) + 0.75 * softmax(np.array([[0, 1.0]])), rtol=1e-5)
    assert softmax(avg).argmax() == 1  # averaged logits (10, 0.75) made it class 0 at 99.99 %
    ids, avg = weighted_common_logits([(a_ids, a), (b_ids, b)], (1.0, 0.0))  # a weight of 0: that teacher has no say
    np.testing.assert_allclose(softmax(avg), softmax(np.array([[3.0, 0], [5, 0]])), rtol=1e-5)
    # weights whose sum overflows a float (1e308 twice) are equal weights, not 0/0 (a ZeroDivisionError traceback)
    ids, huge = weighted_common_logits([(a_ids, a), (b_ids, b)], (1e308, 1e308))
    ids, even = weighted_common_logits([(a_ids, a), (b_ids, b)], (1.0, 1.0))
    assert np.isfinite(huge).all()
    np.testing.assert_allclose(huge, even, rtol=1e-6)
    ids, avg = weighted_common_logits([(a_ids, a)])  # one teacher: its own logits, sorted by id
    assert ids.tolist() == [1, 3, 5, 9] and avg[:, 0].tolist() == [1, 3, 5, 9]
    ids, avg = weighted_common_logits([(a_ids, a), (np.array([4]), np.zeros((1, 2), np.float32))])
    assert ids.tolist() == [] and avg.shape == (0, 2)
    # --teacher-average logits (TextBrewer's): the weighted mean of the logits, so the sure teacher outvotes
    ids, avg = weighted_common_logits([(np.array([1]), np.array([[40.0, 0]])), (np.array([1]), np.array([[0, 1.0]]))], (1.0, 3.0),
                                      average="logits")
    np.testing.assert_allclose(avg, [[10.0, 0.75]], rtol=1e-6)
    # a teacher's rows shifted by a constant each (a --folds teacher's log-probabilities): the same softmax
    ids, avg = weighted_common_logits([(a_ids, a), (b_ids, b)], (1.0, 3.0), average="logits")
    ids, shifted = weighted_common_logits([(a_ids, a - a.max(1, keepdims=True) + 7), (b_ids, b)], (1.0, 3.0), average="logits")
    np.testing.assert_allclose(softmax(shifted), softmax(avg), rtol=1e-5)
    np.testing.assert_allclose(avg, 0.25 * np.array([[3.0, 0], [5, 0]]) + 0.75 * np.array([[0, 3.0], [0, 5]]), rtol=1e-6)


@pytest.mark.parametrize("objective", ["mlm", "electra"])
def test_pretrain_exempts_biases_and_layernorm_weights_from_weight_decay(sample_store, monkeypatch, objective):
    """As BERT's and ELECTRA's own pre-training (and Hugging Face's run_mlm, and kd teach) do: AdamW
    decayed every LayerNorm weight and bias of the encoder towards 0 as well."""
    groups = []
    init = torch.optim.AdamW.__init__

    def recording(self, params, *args, **kwargs):
        params = list(params)
        groups.append(params)
        return init(self, params, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "__init__", recording)
    kd("pretrain", "--run", "wd", "--layers", "1", "--hidden", "32", "--heads", "2", "--steps", "2", "--batch-size", "16",
       "--min-count", "1", "--objective", objective, "--device", "cpu", "--db", str(sample_store))
    (params,) = groups
    assert all(isinstance(g, dict) for g in params), "one group for every weight: the norms and biases decayed too"
    from kdstore.pretrain import PretrainConfig

    weights = [(p, g["weight_decay"]) for g in params for p in g["params"]]
    assert len({id(p) for p, _ in weights}) == len(weights)  # each weight in one group
    # in a BERT encoder (and ELECTRA's generator) the 1-D weights are exactly the biases and the
    # LayerNorm weights; every matrix (dense layers, embeddings) is decayed
    assert {wd for p, wd in weights if p.dim() == 1} == {0.0}
    assert {wd for p, wd in weights if p.dim() > 1} == {PretrainConfig.weight_decay}


def test_student_scoring_of_a_large_set_shows_a_bar(monkeypatch, capsys):
    """kd distill (every sample of the store, after training) and kd predict --store scored a
    200,000-text store with a student for over half a minute with nothing on screen: the teacher's
    scoring had a bar, the student's none."""
    from types import SimpleNamespace

    import kdstore.progress as kp
    from kdstore.predictor import student_logits
    from kdstore.students import StudentConfig, build_student

    monkeypatch.delenv("KD_NO_PROGRESS", raising=False)
    monkeypatch.setattr(kp, "LOG_EVERY_S", 0.0)  # a bar on a non-terminal logs a line as it goes
    model = build_student(StudentConfig(kind="textcnn", vocab_size=20, num_classes=2, embed_dim=8, num_filters=4))
    ids = [[1 + i % 10] * (3 + i % 5) for i in range(50)]
    score = lambda **kw: student_logits(model, SimpleNamespace(pad_token_id=0), [""] * len(ids), max_len=8,  # noqa: E731
                                        device=torch.device("cpu"), batch_size=8, ids=ids, **kw)
    assert score(label="logits").shape == (50, 2)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("logits")]
    assert lines and "50/50" in lines[-1]
    score(label="logits", bar=False)  # the latency and throughput timing runs: no bar
    assert capsys.readouterr().err == ""
    with kp.silenced():  # kd predict reading stdin: a bar for each read filled stderr
        assert score(label="logits").shape == (50, 2)
    assert capsys.readouterr().err == "" and not kp.no_progress()


@pytest.mark.parametrize("kind", ["textcnn", "bigru", "bilstm", "transformer"])
def test_student_logits_of_no_texts_have_a_column_a_class(kind):
    """A torchrun process whose share of a small fold is empty scored no texts: a (0, 0) array, which
    did not join the other processes' (n, classes) parts. No rows, a column for each class."""
    from types import SimpleNamespace

    from kdstore.predictor import student_logits
    from kdstore.students import StudentConfig, build_student, student_bert_config

    bert = None
    if kind == "transformer":
        from transformers import BertConfig

        teacher = BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=2, num_attention_heads=2, intermediate_size=16)
        bert = student_bert_config(teacher, layers=1, hidden=None, num_classes=3)
    model = build_student(StudentConfig(kind=kind, vocab_size=20, num_classes=3, embed_dim=8, hidden=4, num_filters=4, bert=bert))
    got = student_logits(model, SimpleNamespace(pad_token_id=0), [], max_len=8, device=torch.device("cpu"), ids=[])
    assert got.shape == (0, 3) and got.dtype == np.float32


def test_logits_only_reads_the_missing_samples_only(taught_store, tmp_path, monkeypatch):
    """Scoring two texts ingested into a 200,000-text store read every text of the store (about 100 MB
    held for two rows): --logits-only reads the samples it scores, by id (and so does its count of the
    labeled ones its figures leave out, which read every labeled text)."""
    sample_store, db = taught_store, str(taught_store)
    late = tmp_path / "late.txt"
    late.write_text("这个很好用\n那个太差了\n", encoding="utf-8")
    kd("ingest", str(late), "--split", "unlabeled", "--db", db)
    kd("ingest", str(write_tsv(tmp_path / "dev3.tsv", [("pos", "后来的验证很好")])), "--split", "dev", "--db", db)
    read = []
    samples = Store.samples

    def recorded(self, **kw):
        found = samples(self, **kw)
        read.append(len(found))
        return found

    monkeypatch.setattr(Store, "samples", recorded)
    out = kd("teach", "--run", "r", "--logits-only", "--db", db, "--json")
    assert json.loads(out.stdout)["scored"] == 3
    assert read and max(read) == 3  # no read of the whole store, nor of its labeled samples
    assert "leave out the labeled samples it scored now (1 dev)" in out.stderr
    stage = _stage(sample_store, "r", "teach")
    assert _count(sample_store, Logit, stage_id=stage.id) == _count(sample_store, Sample)


def test_logits_only_bar_moves_with_each_batch_not_each_commit(taught_store, tmp_path, monkeypatch):
    """--logits-only's bar moved only as each block of 4,096 samples was committed: with a BERT on a CPU
    (30 texts/s) it stood at 0 with no rate or ETA for over two minutes, a --folds teacher's K times longer,
    and a log showed no line until then. It moves with each batch scored, as the teacher's own scoring does."""
    import kdstore.progress as kp

    db = str(taught_store)
    late = tmp_path / "late.txt"
    late.write_text("".join(f"后来的文本{i}\n" for i in range(6)), encoding="utf-8")
    kd("ingest", str(late), "--split", "unlabeled", "--db", db)
    monkeypatch.delenv("KD_NO_PROGRESS", raising=False)
    monkeypatch.setattr(kp, "LOG_EVERY_S", 0.0)  # a bar on a non-terminal logs a line as it goes
    err = kd("teach", "--run", "r", "--logits-only", "--batch-size", "2", "--db", db).stderr
    counts = re.findall(r"^logits\b.*? (\d)/6 ", err, re.M)
    assert "2" in counts and "4" in counts, err  # a line per batch of 2, before the block's commit
    assert counts[-1] == "6"


def _logits_only_stopping_after_two(db: str, tmp_path, then: str) -> Path:
    """6 unlabeled texts ingested into ``db``, and a script running `kd teach --run r --logits-only` that
    stores the logits of 2 of them, runs the line ``then`` (``done``: how many it stored), and hangs."""
    late = tmp_path / "late.txt"
    late.write_text("".join(f"后来的文本{i}\n" for i in range(6)), encoding="utf-8")
    kd("ingest", str(late), "--split", "unlabeled", "--db", db)
    script = tmp_path / "stopping.py"
    script.write_text(
        "import os, signal, sys, time\n"
        "import kdstore.teacher as t\n"
        "scored = t._score_in_chunks\n"
        "def stopping(store, stage_id, models, tokenizer, samples, **kw):\n"
        "    done = scored(store, stage_id, models, tokenizer, samples.subset(samples.ids < samples.ids.min() + 2), **kw)\n"
        f"    {then}\n"
        "    time.sleep(120)\n"
        "t._score_in_chunks = stopping\n"
        "from commands.cli import cli\n"
        "cli(['teach', '--run', 'r', '--logits-only', '--db', sys.argv[1]], prog_name='kd')\n",
        encoding="utf-8",
    )
    return script


def test_logits_only_killed_says_so_and_what_it_kept(taught_store, tmp_path):
    """`kill` of `kd teach --logits-only` ended it with status 143 and not a word: no stage is on
    record to mark failed (its blocks commit as they go), so the shell's "Terminated" was all a log
    showed. It ends with a one-line error that says the blocks stored are kept and how to go on."""
    db = str(taught_store)
    script = _logits_only_stopping_after_two(db, tmp_path, "print('scored', done, flush=True)")
    returncode, err = terminate_when_ready(script, db, ready="scored 2")
    assert returncode == 1, (returncode, err)
    assert err.strip().splitlines()[-1] == ("Error: terminated (SIGTERM): the samples scored before it are kept; "
                                            "`kd teach --run r --logits-only` scores the rest"), err
    out = kd("teach", "--run", "r", "--logits-only", "--db", db, "--json")
    assert json.loads(out.stdout)["scored"] == 4  # the 2 stored stood


def test_logits_only_interrupted_says_what_it_kept(taught_store, tmp_path):
    """Ctrl-C of `kd teach --logits-only` said only click's "Aborted!", where a kill says that the blocks
    stored are kept and how to go on: a Ctrl-C says so too."""
    import subprocess
    import sys

    db = str(taught_store)
    script = _logits_only_stopping_after_two(db, tmp_path, "os.kill(os.getpid(), signal.SIGINT)")
    done = subprocess.run([sys.executable, str(script), db], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert done.stderr.strip().splitlines()[-1] == ("Error: interrupted (KeyboardInterrupt): the samples scored before it are kept; "
                                                    "`kd teach --run r --logits-only` scores the rest"), done.stderr
    out = kd("teach", "--run", "r", "--logits-only", "--db", db, "--json")
    assert json.loads(out.stdout)["scored"] == 4  # the 2 stored stood


def test_an_encoder_keeps_its_tokenizers_pad_token_beside_a_stale_config_pad_id(tmp_path, corpus):
    """A BERT whose config.json names another pad id than its tokenizer's (a default nobody set, a
    RoBERTa config beside a BERT vocabulary) masks its padding whatever the id: the tokenizer's own
    [PAD] stands. Taking the config's id made a real character the pad token: a special token
    (decoded away) and the students' padding embedding, never learned."""
    from transformers import BertConfig, BertForMaskedLM

    from kdstore.teacher import load_classifier, score
    from kdstore.vocab import build_vocab, make_tokenizer

    tokens = build_vocab([line.split("\t")[-1] for line in corpus["train"].read_text(encoding="utf-8").splitlines()])
    char = next(t for t in tokens if len(t) == 1 and "\u4e00" <= t <= "\u9fff")
    BertForMaskedLM(BertConfig(vocab_size=len(tokens), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                               max_position_embeddings=64, pad_token_id=tokens.index(char))).save_pretrained(tmp_path / "bert")
    make_tokenizer(tokens).save_pretrained(tmp_path / "bert")
    tok, model = load_classifier(str(tmp_path / "bert"), ["pos", "neg"])
    assert tok.pad_token == "[PAD]" and tok.pad_token_id == 0 and char not in tok.all_special_tokens
    texts, cpu = [char + "很好", "今天太差了很好今天" + char], torch.device("cpu")
    both = score(model, tok, texts, max_len=32, batch_size=8, device=cpu, bar=False)
    alone = np.stack([score(model, tok, [t], max_len=32, batch_size=8, device=cpu, bar=False)[0] for t in texts])
    assert both == pytest.approx(alone, abs=1e-5)  # (an encoder's padding is masked: its id does not matter)


def test_a_model_without_a_position_limit_takes_any_max_len(tmp_path):
    """XLNet has no position table (its config says -1): every --max-len was refused, now before the stage too."""
    from transformers import XLNetConfig

    from commands.train import _check_positions
    from kdstore.teacher import TeachConfig, check_max_len

    XLNetConfig(vocab_size=100, d_model=32, n_layer=2, n_head=2, d_inner=64).save_pretrained(tmp_path / "xlnet")
    check_max_len(XLNetConfig(), 512, "xlnet")
    _check_positions(Store.open(str(tmp_path / "kd.db")), TeachConfig(model=str(tmp_path / "xlnet"), max_len=512))


@pytest.mark.parametrize("kind", ["data2vec-text", "mpnet", "xlm-roberta-xl", "roberta-prelayernorm"])
def test_a_max_len_past_the_positions_of_a_roberta_like_model_is_refused_before_a_stage(sample_store, tmp_path, kind):
    """These number their positions after the pad id, as RoBERTa does, but only RoBERTa's names took
    off the two: --max-len 24 of a 24-position model passed, and a 23-token text was a traceback
    ("index 24 is out of bounds", IndexError) mid-training."""
    from transformers import AutoConfig

    AutoConfig.for_model(kind, vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                         max_position_embeddings=24).save_pretrained(tmp_path / kind)
    db = str(sample_store)
    result = kd("teach", "--run", "long", "--model", str(tmp_path / kind), "--max-len", "24", "--db", db, ok=False)
    assert result.output.strip().splitlines() == [
        f"Error: --max-len 24 is longer than model {str(tmp_path / kind)!r} can read (22 positions): use --max-len 22 or less"]
    assert not Store.open(db).run_exists("long")


def test_a_pretrain_whose_every_fp16_step_is_skipped_fails_instead_of_running_forever(sample_store, monkeypatch):
    """A loss that is itself inf (an fp16 overflow of the forward pass) has the scaler skip every
    step: once a skipped step no longer counted towards --steps, --steps 2 never came."""
    import kdstore.pretrain

    real, calls = kdstore.pretrain.scaled_update, []
    monkeypatch.setattr(kdstore.pretrain, "MAX_SKIPPED_STEPS", 5, raising=False)
    monkeypatch.setattr(kdstore.pretrain, "scaled_update", lambda *a, **k: calls.append(1) or (real(*a, **k) and False))
    out = kd("pretrain", "--run", "sk", "--layers", "1", "--hidden", "32", "--heads", "2", "--steps", "2", "--batch-size", "16",
             "--min-count", "1", "--device", "cpu", "--db", str(sample_store), ok=False)
    assert len(calls) == 5 and "the fp16 grad scaler skipped the last 5 steps" in out.output


def test_predict_names_the_student_it_chose_among_several(taught_store):
    """--model student serves the run's latest distill stage: with several, a weaker one trained last
    answered and nothing said which."""
    db = str(taught_store)
    small = ("--epochs", "1", "--embed-dim", "16", "--num-filters", "8", "--max-len", "32", "--db", db)
    kd("distill", "--run", "r", "--name", "first", *small)
    kd("distill", "--run", "r", "--name", "second", *small)
    out = kd("predict", "--run", "r", "--db", db, input="这个很好\n")
    assert "note: --model student is 'second', the latest distill stage of run 'r' (also: first): --model NAME picks another" in out.stderr
    assert len(out.stdout.splitlines()) == 1
    assert "note:" not in kd("predict", "--run", "r", "--model", "first", "--db", db, input="这个很好\n").stderr


def test_predict_says_the_teacher_answers_where_the_runs_student_failed(taught_store):
    """`kd distill` stopped by Ctrl-C, then `kd predict --run R`: --model student fell back to the teacher
    and answered without a word, as if the student had been trained."""
    from kdstore.runs import stage_scope

    db = str(taught_store)
    with pytest.raises(KeyboardInterrupt):
        with stage_scope(Store.open(db), run="r", kind="distill", name="distill-textcnn", config={}):
            raise KeyboardInterrupt
    out = kd("predict", "--run", "r", "--db", db, input="这个很好\n")
    assert ("note: --model student: run 'r' has no distill stage that succeeded (distill-textcnn: failed): its teacher "
            "'teach' answers (`kd report --run r` says why)") in out.stderr, out.stderr
    assert len(out.stdout.splitlines()) == 1
    assert "note:" not in kd("predict", "--run", "r", "--model", "teacher", "--db", db, input="这个很好\n").stderr


def test_predict_note_names_a_killed_student_gone_not_running(taught_store, tmp_path):
    """`kd distill` killed with -9, then `kd predict --run R`: the note said the student was "running", as if
    worth waiting for, where `kd runs` (and kd predict's own error for --model NAME) say "running (process gone)"."""
    from kdstore.runs import _machine
    from synthetic import kill_9_inside_stage

    if _machine() is None:
        pytest.skip("no /proc boot id or pid namespace here: kd judges no stage's process")
    db = str(taught_store)
    kill_9_inside_stage(db, tmp_path, run="r", kind="distill", name="distill-textcnn")
    out = kd("predict", "--run", "r", "--db", db, input="这个很好\n")
    assert ("note: --model student: run 'r' has no distill stage that succeeded (distill-textcnn: running, process gone): "
            "its teacher 'teach' answers") in out.stderr, out.stderr
    assert len(out.stdout.splitlines()) == 1



def test_predict_and_export_refuse_a_model_whose_files_changed_by_hand(taught_store, tmp_path):
    """A stage's model file edited, replaced or added to by hand was served under the stage's name
    (its figures in kd report another model's): its files' sha256 is checked against the recorded one."""
    db = str(taught_store)
    small = ("--epochs", "1", "--embed-dim", "16", "--num-filters", "8", "--max-len", "32", "--db", db)
    kd("distill", "--run", "r", "--name", "cnn", *small)
    folder = Path(_stage(taught_store, "r", "cnn").artifact_path)
    weights = max((f for f in folder.rglob("*") if f.is_file()), key=lambda f: f.stat().st_size)
    kept = weights.read_bytes()
    half = len(kept) // 2
    weights.write_bytes(kept[:half] + bytes([kept[half] ^ 1]) + kept[half + 1:])  # one bit of it changed
    for args in (("predict", "--run", "r", "--model", "cnn"), ("export", "--run", "r", "--model", "cnn", "--out", str(tmp_path / "x"))):
        refused = kd(*args, "--db", db, input="这个很好\n", ok=False)
        assert "Error: the model of stage 'cnn' in" in refused.output and "is not the one the run recorded" in refused.output
        assert len(refused.output.strip().splitlines()) == 1 and not (tmp_path / "x").exists()
    weights.write_bytes(kept)
    teacher = Path(_stage(taught_store, "r", "teach").artifact_path)
    (teacher / "notes.txt").write_text("my notes")  # a file added to the teacher's folder
    assert "is not the one the run recorded" in kd("predict", "--run", "r", "--model", "teacher", "--db", db, input="好\n", ok=False).output
    # a student learning the teacher's layers loads that folder too: its logits were of the recorded model
    layers = kd("distill", "--run", "r", "--name", "tf", "--student", "transformer", "--layers", "1", "--hidden-mse", "1",
                "--epochs", "1", "--max-len", "32", "--no-unlabeled", "--db", db, ok=False)
    assert "Error: the model of stage 'teach' in" in layers.output and "is not the one the run recorded" in layers.output
    (teacher / "notes.txt").unlink()
    (teacher / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")  # what macOS Finder leaves in a folder it showed: no part of the model
    assert len(kd("predict", "--run", "r", "--model", "teacher", "--db", db, input="好\n").stdout.splitlines()) == 1
    assert len(kd("predict", "--run", "r", "--model", "cnn", "--db", db, input="这个很好\n").stdout.splitlines()) == 1


def test_predict_store_refuses_a_model_replaced_while_it_loaded(taught_store, tiny_model, monkeypatch):
    """A `kd teach --overwrite` that ended while `kd predict --store` loaded the teacher: the stage looked up
    afterwards was the new one, whose sha256 was recorded over the old model's predictions (and the
    report's "replaced since" could never say so). Refused, nothing stored; run again, it stores."""
    from kdstore.predictor import Predictor

    db = str(taught_store)
    load = Predictor.from_run.__func__

    def loading_while_replaced(cls, *args, **kwargs):
        loaded = load(cls, *args, **kwargs)
        monkeypatch.setattr(Predictor, "from_run", classmethod(load))  # (the teach below loads no predictor; once is enough)
        kd("teach", "--run", "r", "--model", str(tiny_model), "--epochs", "1", "--max-len", "32", "--overwrite", "--seed", "7", "--db", db)
        return loaded

    monkeypatch.setattr(Predictor, "from_run", classmethod(loading_while_replaced))
    refused = kd("predict", "--run", "r", "--model", "teacher", "--store", "--split", "dev", "--db", db, ok=False)
    assert "stage 'teach' of run 'r' was replaced (an --overwrite ended) while its model loaded: nothing was stored" in refused.output
    assert not [st for st in Store.open(db).stages_of("r") if st.kind == "predict"]
    kd("predict", "--run", "r", "--model", "teacher", "--store", "--split", "dev", "--db", db)
    assert "replaced since" not in kd("report", "--run", "r", "--db", db).stdout


def test_a_rerun_without_overwrite_is_refused_before_warnings_of_the_store(taught_store, tiny_model, monkeypatch):
    """`kd teach` / `kd distill` run again without --overwrite printed the store's warnings (the classes dev
    lacks, a weak teacher) and only then the refusal, as if the run had begun. The refusal comes first, alone."""
    import commands.train as train

    db = str(taught_store)
    kd("distill", "--run", "r", "--epochs", "1", "--embed-dim", "16", "--num-filters", "8", "--max-len", "32", "--db", db)

    def no_warnings(*args, **kwargs):
        raise AssertionError("the store was judged before the refusal")

    monkeypatch.setattr(train, "_warn_one_class_dev", no_warnings)
    monkeypatch.setattr(train, "_warn_weak_teachers", no_warnings)
    for args in (["teach", "--model", str(tiny_model), "--epochs", "1", "--max-len", "32"],
                 ["distill", "--epochs", "1", "--embed-dim", "16", "--num-filters", "8", "--max-len", "32"]):
        refused = kd(*args, "--run", "r", "--db", db, ok=False)
        assert "--overwrite" in refused.output and "judged before" not in refused.output, refused.output
        assert refused.output.startswith("Error: ") and len(refused.output.strip().splitlines()) == 1, refused.output


def test_predict_store_refuses_an_existing_stage_before_it_loads_the_model(taught_store, monkeypatch):
    """A second `kd predict --store` without --overwrite loaded the model (a large teacher: minutes on a
    CPU) and only then was refused for the stage it already had. Refused first, as kd teach and kd distill are."""
    from kdstore.predictor import Predictor

    db = str(taught_store)
    kd("predict", "--run", "r", "--model", "teacher", "--store", "--split", "dev", "--db", db)

    def no_load(cls, *args, **kwargs):
        raise AssertionError("the model was loaded before the refusal")

    monkeypatch.setattr(Predictor, "from_run", classmethod(no_load))
    for which in ("teacher", "teach"):
        refused = kd("predict", "--run", "r", "--model", which, "--store", "--split", "dev", "--db", db, ok=False)
        assert "predict-teach@dev" in refused.output and "--overwrite" in refused.output, refused.output
        assert "loaded before" not in refused.output
    assert [s.name for s in Store.open(db).stages_of("r") if s.kind == "predict"] == ["predict-teach@dev"]


def test_predict_store_while_an_overwrite_replaces_the_student_is_refused_in_plain_words(taught_store):
    """`kd predict --store` while `kd distill --overwrite` ran: --model student is the parked student, and
    the stage it named, predict-distill-textcnn~parked-ID, was refused as "not valid: use 1-64 ASCII
    letters ..." (a name the user never typed). Told the student is being replaced; nothing stored."""
    from kdstore.runs import stage_scope

    db = str(taught_store)
    kd("distill", "--run", "r", "--epochs", "1", "--embed-dim", "16", "--num-filters", "8", "--max-len", "32", "--db", db)
    store = Store.open(db)
    with pytest.raises(RuntimeError, match="the replacement fails"):
        with stage_scope(store, run="r", kind="distill", name="distill-textcnn", config={}, overwrite=True):
            [parked] = [s.name for s in store.stages_of("r") if "~parked-" in s.name]
            for which in ("student", parked):
                out = kd("predict", "--run", "r", "--model", which, "--store", "--db", db, ok=False)
                assert out.output.startswith(f"Error: stage {parked!r} of run 'r' is the one an --overwrite is replacing: "), out.output
                assert "not valid" not in out.output and len(out.output.splitlines()) == 1, out.output
            assert not [s for s in store.stages_of("r") if s.kind == "predict"]
            # without --store it serves the parked student, and says so (it did without a word, to a user who took the
            # answers for the new student's, as while a killed --overwrite waits)
            out = kd("predict", "--run", "r", "--db", db, input="这个很好\n")
            assert len(out.stdout.splitlines()) == 1
            assert f"note: --model student is {parked!r}, the one an --overwrite of 'distill-textcnn' is replacing" in out.stderr, out.stderr
            raise RuntimeError("the replacement fails")
    assert "note:" not in kd("predict", "--run", "r", "--db", db, input="这个很好\n").stderr  # its name back: nothing to say
    kd("predict", "--run", "r", "--store", "--db", db)  # the student back under its name: stored
    assert [s.name for s in store.stages_of("r") if s.kind == "predict"] == ["predict-distill-textcnn"]


def test_predict_while_an_overwrite_replaces_the_teacher_serves_the_parked_teacher_and_says_so(taught_store):
    """`kd predict --model teacher` (or a run with no student) while `kd teach --overwrite` ran was refused
    ("until then, `--model teach~parked-ID` serves it"), where the README says the old model answers, as a
    parked student does: a nightly script predicting then stopped. It answers, and says whose answers they are."""
    from kdstore.runs import stage_scope

    db = str(taught_store)
    store = Store.open(db)
    with pytest.raises(RuntimeError, match="the replacement fails"):
        with stage_scope(store, run="r", kind="teach", name="teach", config={}, overwrite=True):
            [parked] = [s.name for s in store.stages_of("r") if "~parked-" in s.name]
            for which in ("teacher", "teach", "student"):  # (student: the run has none, its teacher answers)
                out = kd("predict", "--run", "r", "--model", which, "--db", db, input="这个很好\n")
                assert len(out.stdout.splitlines()) == 1, out.output
                assert f"note: --model {which} is {parked!r}, the one an --overwrite of 'teach' is replacing" in out.stderr, out.stderr
            raise RuntimeError("the replacement fails")
    assert "note:" not in kd("predict", "--run", "r", "--model", "teacher", "--db", db, input="这个很好\n").stderr


def test_predict_store_while_an_overwrite_replaces_the_teacher_is_refused_before_it_loads(taught_store, tmp_path, monkeypatch):
    """`kd predict --store --model teacher` while `kd teach --overwrite` ran was refused at once (no teacher);
    served the parked teacher since, it loaded the whole teacher (each fold's model) before refusing it as parked.
    And a config file's `model = "teach"` was refused as a stage the run lacks, where a typed --model teach answered."""
    from kdstore.predictor import Predictor
    from kdstore.runs import stage_scope

    db = str(taught_store)
    store = Store.open(db)
    loads, real = [], Predictor.from_run.__func__
    monkeypatch.setattr(Predictor, "from_run", classmethod(lambda cls, *a, **k: loads.append(a[1:]) or real(cls, *a, **k)))
    (tmp_path / "kd.toml").write_text('[predict]\nmodel = "teach"\n', encoding="utf-8")
    with pytest.raises(RuntimeError, match="the replacement fails"):
        with stage_scope(store, run="r", kind="teach", name="teach", config={}, overwrite=True):
            [parked] = [s.name for s in store.stages_of("r") if "~parked-" in s.name]
            for which in ("teacher", "teach"):  # (said as kd distill says it: the replacement is running, wait for it)
                out = kd("predict", "--run", "r", "--model", which, "--store", "--db", db, ok=False)
                assert f"{parked!r} is the one an --overwrite is replacing" in out.output and len(out.output.splitlines()) == 1, out.output
            assert loads == [], loads
            out = kd("predict", "--run", "r", "--config", str(tmp_path / "kd.toml"), "--db", db, input="这个很好\n")
            assert f"note: --model teach is {parked!r}" in out.stderr, out.output
            raise RuntimeError("the replacement fails")


def test_logits_only_whose_teacher_an_overwrite_parks_as_it_loads_says_so(taught_store, tmp_path, monkeypatch):
    """`kd teach --overwrite` starting while `kd teach --logits-only` loaded the teacher moves its folder away:
    the load failed as "cannot load model '.../r/teach/model': no such directory" (or, the new folder begun,
    "Repo id must be in the form ..."), as if the teacher were damaged. Told it is being replaced."""
    import contextlib

    import kdstore.teacher
    from kdstore.runs import stage_scope

    db = str(taught_store)
    (tmp_path / "more.txt").write_text("这是一条新的评论\n", encoding="utf-8")
    kd("ingest", str(tmp_path / "more.txt"), "--split", "unlabeled", "--db", db)
    real, replacing = kdstore.teacher.load_classifier, contextlib.ExitStack()

    def parked_as_it_loads(directory, names):
        replacing.enter_context(stage_scope(Store.open(db), run="r", kind="teach", name="teach", config={}, overwrite=True))
        return real(directory, names)

    monkeypatch.setattr(kdstore.teacher, "load_classifier", parked_as_it_loads)
    with pytest.raises(RuntimeError, match="the replacement fails"):
        with replacing:
            out = kd("teach", "--run", "r", "--logits-only", "--db", db, ok=False)
            assert out.output == ("Error: the run's teacher is being replaced (`kd teach --overwrite` is running): its scores "
                                  "were not stored; score with the new one once it has ended\n"), out.output
            raise RuntimeError("the replacement fails")
    monkeypatch.setattr(kdstore.teacher, "load_classifier", real)
    assert "scored 1 sample that" in kd("teach", "--run", "r", "--logits-only", "--db", db).stdout  # the teacher back: scored


def test_report_says_when_a_predict_stages_teacher_was_replaced_since(taught_store, tiny_model):
    """`kd predict --model teacher --store` stored figures of the teacher; after `kd teach --overwrite`
    the report showed them under model_stage=teach alone, as if they measured the teacher there now."""
    sample_store, db = taught_store, str(taught_store)
    teach = ("teach", "--run", "r", "--model", str(tiny_model), "--epochs", "1", "--max-len", "32", "--db", db)
    kd("predict", "--run", "r", "--model", "teacher", "--store", "--split", "dev", "--db", db)
    assert "replaced since" not in kd("report", "--run", "r", "--db", db).stdout  # still the teacher it measured
    env = _stage(sample_store, "r", "predict-teach@dev").config["environment"]  # (its samples_per_s is this machine's)
    assert env["torch"] == torch.__version__ and env["device"] == "cpu", env
    kd("distill", "--run", "o", "--teacher-run", "r", "--epochs", "1", "--embed-dim", "8", "--num-filters", "4", "--max-len", "32", "--db", db)
    # said as it starts (kd runs delete names them; an --overwrite left them to kd report)
    replaced = kd(*teach, "--overwrite", "--seed", "7")
    assert ("warning: --overwrite replaces the teacher that r/predict-teach@dev, o/distill-textcnn used: their figures stay those "
            "of the old one") in replaced.stderr
    assert "--overwrite replaces the teacher" not in kd(*teach, "--run", "s").stderr  # (no --overwrite: nothing replaced)
    lines = kd("report", "--run", "r", "--db", db).stdout.splitlines()
    at = lines.index(next(line for line in lines if line.startswith("predict-teach@dev")))
    assert any(line.startswith("  model: teach (replaced since: these figures are of the model it replaced") for line in lines[at:at + 4]), lines
    kd("predict", "--run", "r", "--model", "teacher", "--store", "--split", "dev", "--overwrite", "--db", db)
    assert "replaced since" not in kd("report", "--run", "r", "--db", db).stdout  # measured anew
    # a student's too: `kd distill --overwrite` named no figure `kd predict --store` measured of the one it replaces
    kd("predict", "--run", "o", "--model", "distill-textcnn", "--store", "--split", "dev", "--db", db)
    student = ("distill", "--run", "o", "--teacher-run", "r", "--epochs", "1", "--embed-dim", "8", "--num-filters", "4", "--max-len", "32", "--db", db)
    again = kd(*student, "--overwrite", "--seed", "7")
    assert ("warning: --overwrite replaces the student that o/predict-distill-textcnn@dev used: its figures stay those of the "
            "old one (kd report will say \"replaced since\"); rerun it with --overwrite once the new student is done") in again.stderr
    assert "--overwrite replaces" not in kd(*student, "--overwrite").stderr  # (its figures are of a student replaced before)


def test_an_overwrite_names_the_teachers_that_started_from_the_model_it_replaces(sample_store, tiny_model):
    """`kd teach --overwrite` named the students and predict stages of the teacher it replaced, not a
    teacher fine-tuned from it (`--model teach:RUN`), whose report then said "replaced since"; and
    `kd pretrain --overwrite` named no teacher of its model at all."""
    db = str(sample_store)
    kd("pretrain", "--run", "p", "--layers", "1", "--hidden", "32", "--heads", "2", "--steps", "2",
       "--batch-size", "16", "--min-count", "1", "--db", db)
    kd("teach", "--run", "q", "--model", "pretrain:p", "--epochs", "1", "--max-len", "32", "--db", db)
    kd("teach", "--run", "s", "--model", "teach:q", "--epochs", "1", "--max-len", "32", "--db", db)
    again = kd("pretrain", "--run", "p", "--layers", "1", "--hidden", "32", "--heads", "2", "--steps", "2",
               "--batch-size", "16", "--min-count", "1", "--overwrite", "--db", db)
    assert ("warning: --overwrite replaces the pre-trained model that q/teach used: its figures stay those of the old one "
            "(kd report will say \"replaced since\"); rerun it with --overwrite once the new pre-trained model is done") in again.stderr
    replaced = kd("teach", "--run", "q", "--model", "pretrain:p", "--epochs", "1", "--max-len", "32", "--seed", "7", "--overwrite", "--db", db)
    assert "warning: --overwrite replaces the teacher that s/teach used: its figures stay those of the old one" in replaced.stderr
    # s started from a teacher q holds no more (another --seed: another sha256): no learner of the new one
    assert "--overwrite replaces" not in kd("teach", "--run", "q", "--model", "pretrain:p", "--epochs", "1", "--max-len", "32",
                                            "--overwrite", "--db", db).stderr


def test_a_bar_inside_a_training_bar_is_shown_as_a_row_of_it(tiny_model, tmp_path, monkeypatch):
    """Each epoch's dev scoring (minutes for a large dev split on a CPU) ran inside the training bar, and
    a bar opened inside another drew nothing: the training bar stood still with no sign of the work.
    The inner bar is a row of the outer one while it runs (its lines logged on a non-terminal)."""
    import random

    import kdstore.progress as kp
    from synthetic import labeled_rows

    monkeypatch.chdir(tmp_path)
    rng = random.Random(3)
    db = str(tmp_path / "kd.db")
    kd("ingest", str(write_tsv(tmp_path / "train.tsv", labeled_rows(rng, 8))), "--split", "train", "--db", db)
    kd("ingest", str(write_tsv(tmp_path / "dev.tsv", labeled_rows(rng, 300))), "--split", "dev", "--db", db)
    monkeypatch.delenv("KD_NO_PROGRESS", raising=False)
    monkeypatch.setattr(kp, "LOG_EVERY_S", 0.0)  # a bar on a non-terminal logs a line as it goes
    err = kd("teach", "--run", "r", "--model", str(tiny_model), "--epochs", "1", "--max-len", "32", "--db", db).stderr
    dev = [line for line in err.splitlines() if line.startswith("dev ")]
    assert dev and dev[0].split()[1] == "256/300", err  # the dev scoring's row, logged as it went (a batch of 256 scored)
    assert any(line.startswith("teach ") for line in err.splitlines())
    assert kp._LIVE == []


def test_class_weight_balanced_over_a_class_of_a_few_samples_is_warned_of():
    """`--class-weight balanced` with a class of 2 train samples among 1,000 weighed each of them 250 times an average
    row, without a word: the model learns them by heart while their weight swings its steps."""
    from commands.train import _overweighted_note as note

    train = {"support[ok]": 998, "support[rare]": 2}
    stage = {"kind": "teach", "config": {"class_weight": "balanced"}, "metrics": {"train": train, "all": {
        "f0/class_weight[ok]": 0.5, "f0/class_weight[rare]": 250.0, "f1/class_weight[ok]": 0.5, "f1/class_weight[rare]": 125.0}}}
    assert note(stage) == ("--class-weight balanced weighs each sample of class 'rare' (2 samples, weight 250) far above an "
                           "average one (weight 1): so few samples at that weight are learned by heart and swing the training; "
                           "more samples of it, or no --class-weight, may serve better")
    assert note({**stage, "config": {"class_weight": "none"}}) is None  # (unweighted: nothing to say)
    # a rare class of enough samples (40 of 1,000 ads): its weight is what balanced is for
    common = {"kind": "distill", "config": {"class_weight": "balanced"},
              "metrics": {"train": {"support[ok]": 960, "support[ad]": 40}, "all": {"class_weight[ok]": 0.52, "class_weight[ad]": 12.5}}}
    assert note(common) is None


def test_class_weight_balanced_warning_reads_a_class_named_with_a_slash():
    """A class named `体育/新闻` (its weight recorded as class_weight[体育/新闻], a fold's as fold0/class_weight[体育/新闻])
    was cut at its slash and never warned of, at weight 50."""
    from commands.train import _overweighted_note as note

    for tag in ("", "fold0/"):
        stage = {"kind": "teach", "config": {"class_weight": "balanced"},
                 "metrics": {"train": {"support[ok]": 198, "support[体育/新闻]": 2},
                             "all": {f"{tag}class_weight[ok]": 0.5, f"{tag}class_weight[体育/新闻]": 50.0}}}
        assert "class '体育/新闻' (2 samples, weight 50)" in (note(stage) or ""), (tag, note(stage))


def test_class_weight_balanced_warning_counts_the_rows_where_selects(taught_store, tiny_model):
    """--where kept 1 sample of a class (weight 15 times an average row's): the warning read the split's
    count of that class, dozens, and said nothing."""
    db = str(taught_store)
    store = Store.open(db)
    train = store.samples(splits=["train"], labeled=True)
    names = store.class_names()
    one = next(int(i) for i, y in zip(train.ids, train.labels) if y == 1)
    where = f"label_id = 0 OR id = {one}"
    out = kd("teach", "--run", "few", "--model", str(tiny_model), "--epochs", "1", "--max-len", "32", "--class-weight", "balanced",
             "--where", where, "--db", db)
    assert f"--class-weight balanced weighs each sample of class {names[1]!r} (1 sample, weight" in out.stderr, out.stderr


def test_a_balanced_teacher_whose_macro_f1_beats_the_majority_is_not_said_to_have_learned_nothing():
    """`kd teach --class-weight balanced` on 3 imbalanced classes (dev 67 neg, 47 pos, 12 mid): dev accuracy 50.8 %
    below always answering 'neg' (53.2 %), as a model that answers the rare classes trades accuracy for, but dev macro-F1
    0.44 against the 0.23 of always answering 'neg'; it was told "the model has learned next to nothing"."""
    from commands.train import _majority_note as note

    dev = {"accuracy": 0.508, "macro_f1": 0.4436, "support[neg]": 67, "support[pos]": 47, "support[mid]": 12,
           "recall[neg]": 0.55, "recall[pos]": 0.5, "recall[mid]": 0.33}
    config = {"model": "/m/tiny", "lr": 1e-3, "class_weight": "balanced"}
    assert note("r1", {"kind": "teach", "metrics": {"dev": dev}, "config": config}) is None
    # one whose macro-F1 is the majority's (0.23: every text 'neg') is still told
    weak = {**dev, "accuracy": 0.532, "macro_f1": 0.2314, "recall[neg]": 1.0, "recall[pos]": 0.0, "recall[mid]": 0.0}
    assert "learned next to nothing" in note("r1", {"kind": "teach", "metrics": {"dev": weak}, "config": config})
    # a balanced binary model at 52 %: a macro-F1 of 0.52 is well above always answering one class (0.33), not above
    # chance (0.50): still told
    coin = {"accuracy": 0.52, "macro_f1": 0.52, "support[neg]": 50, "support[pos]": 50, "recall[neg]": 0.52, "recall[pos]": 0.52}
    assert "learned next to nothing" in note("r1", {"kind": "teach", "metrics": {"dev": coin}, "config": config})


def test_teach_says_which_samples_an_ingest_during_its_training_left_unscored(sample_store, tiny_model, monkeypatch):
    """A sample ingested (by another process) while `kd teach` trained gets no teacher logits: the teach
    said only 'succeeded', and the next `kd distill` was refused with '2 train samples have no teacher logits'."""
    import kdstore.teacher
    from kdstore.ingest import IngestOptions, ingest

    db = str(sample_store)
    real = kdstore.teacher._fit

    def ingest_while_training(*args, **kwargs):
        ingest(Store.open(db), "pos\t训练时加进来的很好\nneg\t训练时加进来的太差\n".encode(), "late.tsv", IngestOptions(split="train"))
        return real(*args, **kwargs)

    monkeypatch.setattr(kdstore.teacher, "_fit", ingest_while_training)
    out = kd("teach", "--run", "r", "--model", str(tiny_model), "--epochs", "1", "--max-len", "32", "--db", db)
    assert ("warning: 2 samples ingested while stage 'teach' ran have no logits of its teacher: "
            "`kd teach --run r --logits-only` scores them") in out.stderr, out.stderr
    monkeypatch.setattr(kdstore.teacher, "_fit", real)
    out = kd("teach", "--run", "r2", "--model", str(tiny_model), "--epochs", "1", "--max-len", "32", "--db", db)
    assert "have no logits of its teacher" not in out.stderr  # (every sample scored: no such warning)


def test_a_narrower_electra_student_has_embeddings_no_wider_than_itself(sample_store, tiny_model, tmp_path):
    """An ELECTRA teacher whose embeddings are as wide as its layers (ELECTRA-base: 768 and 768) gave a
    --width student the teacher's embedding_size: a token table 768 wide projected down to 312, nothing
    copied into it (another width copies no layer), and a student twice a BERT teacher's of the same
    options (21.6 M parameters against 11.5 M). Its embeddings are at most its own width."""
    from transformers import AutoTokenizer, ElectraConfig, ElectraForPreTraining

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    config = ElectraConfig(vocab_size=len(tokenizer), embedding_size=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=64)
    seeded(ElectraForPreTraining, config).save_pretrained(tmp_path / "electra")
    tokenizer.save_pretrained(tmp_path / "electra")
    db = str(sample_store)
    kd("teach", "--run", "el", "--model", str(tmp_path / "electra"), "--epochs", "1", "--max-len", "32", "--db", db)
    kd("distill", "--run", "el", "--student", "transformer", "--layers", "1", "--width", "16", "--hidden-mse", "1", "--epochs", "1", "--db", db)
    stage = _stage(sample_store, "el", "distill-transformer")
    meta = json.loads(Path(stage.artifact_path, "student.json").read_text(encoding="utf-8"))
    assert meta["student"]["bert"]["hidden_size"] == 16 and meta["student"]["bert"]["embedding_size"] == 16
    from kdstore.predictor import load_student

    student, _, _ = load_student(Path(stage.artifact_path), "cpu")
    assert not any("embeddings_project" in name for name, _ in student.named_parameters())


def test_stdin_lines_sent_one_at_a_time_are_warned_of_as_columns_as_a_pipe_is(taught_store, tmp_path):
    """`kd predict` on stdin answers each line as it arrives; the warning that label<TAB>text lines are predicted
    whole (the label read with the text) looked at the first read alone: a stream sent one line at a time
    (`tail -f reviews.tsv | kd predict`) was one line a read, never two alike, and got wrong answers in silence."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "KD_DB": str(taught_store), "KD_NO_PROGRESS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "commands.cli", "predict", "--run", "r", "--model", "teacher"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    answers = []
    for line in ("pos\t这个很好", "neg\t那个太差", "pos\t很好很好"):
        proc.stdin.write(f"{line}\n".encode())
        proc.stdin.flush()
        answers.append(proc.stdout.readline().decode())  # answered before the next line is sent
    proc.stdin.close()
    assert proc.wait(timeout=120) == 0
    assert all(a.split("\t")[0] in ("pos", "neg") for a in answers)
    assert proc.stderr.read().decode() == (
        "warning: <stdin>: lines 1-2 each hold 2 tab-separated columns, each line predicted whole as one text (the other "
        "columns read with it): `cut -f2 FILE | kd predict` predicts the text column alone\n")
