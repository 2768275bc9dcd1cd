"""Wrong labels end to end: an out-of-fold tiny teacher on synthetic data with seeded flips, then
detect, show, clean, undo, export/import and history through the real CLI, on a copy of the taught
store in a real SQLite file and in a PostgreSQL database."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import random
import shlex
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import BACKENDS
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.engine import make_url
from synthetic import edit_labels, flip, kd, labeled_rows, quick_speed_figures, save_tiny_bert, write_tsv

from kdstore import labels as lab
from kdstore import vectors
from kdstore.errors import KdError
from kdstore.schema import Base, KdClass, LabelEdit, LabelIssue, Logit, Sample, Stage
from kdstore.store import Store

TEACH = ["--epochs", "8", "--patience", "8", "--lr", "2e-3", "--batch-size", "8", "--max-len", "32"]


@pytest.fixture(scope="module", autouse=True)
def brief_speed_figures():
    """No test here reads a stage's speed figures: they are timed on 2 texts and a batch of 16
    (``synthetic.quick_speed_figures``)."""
    with pytest.MonkeyPatch.context() as mp:
        quick_speed_figures(mp, single=2, batch=16)
        yield


@pytest.fixture(scope="module")
def noisy(tmp_path_factory, brief_speed_figures) -> dict:
    rng = random.Random(7)
    d = tmp_path_factory.mktemp("noisy")
    clean_rows = labeled_rows(rng, 150)
    rows, flipped = flip(clean_rows, rng, 0.12)
    files = {
        "train": write_tsv(d / "train.tsv", rows),
        "dev": write_tsv(d / "dev.tsv", labeled_rows(rng, 30)),
    }
    model = save_tiny_bert([t for _, t in clean_rows] + [l.split("\t")[1] for l in files["dev"].read_text(encoding="utf-8").splitlines()], d / "tiny")
    db = d / "template.db"
    kd("ingest", str(files["train"]), "--db", str(db))
    kd("ingest", str(files["dev"]), "--split", "dev", "--db", str(db))
    kd("teach", "--run", "r", "--model", str(model), "--folds", "3", *TEACH, "--db", str(db))
    store = Store.open(str(db))  # every write in the file itself: each test copies its bytes
    with store.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    return {"db": db, "flipped_lines": {i + 1 for i in flipped}, "model": model, "rows": rows}


@pytest.fixture(scope="module")
def pg_template(request, noisy) -> str:
    """The taught store's rows copied once into a PostgreSQL database (no connection left open on
    it) that each test's database is created from: the name of that template database."""
    server = request.getfixturevalue("pg_server")
    url = server.create()
    _copy_rows(str(noisy["db"]), url)
    yield make_url(url).database
    server.drop(url)


@pytest.fixture(params=BACKENDS)
def db(request, noisy, tmp_path) -> str:
    """A private copy of the taught store: the SQLite file copied (checkpointed once after the
    teacher ran), or a new PostgreSQL database made by the server from ``pg_template``, a copy of
    every row of it (ids and id sequences included)."""
    if request.param == "sqlite":
        copy = tmp_path / "kd.db"
        shutil.copyfile(noisy["db"], copy)
        yield str(copy)
        return
    server = request.getfixturevalue("pg_server")
    template = request.getfixturevalue("pg_template")
    name = f"kd_test_{uuid.uuid4().hex[:12]}"
    with server.admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    url = server.url.set(database=name).render_as_string(hide_password=False)
    yield url
    server.drop(url)


def _copy_rows(src: str, dst: str) -> None:
    """Every row of the store at ``src`` into the new store at ``dst``, ids kept (and PostgreSQL's id
    sequences moved past them)."""
    source, target = Store.open(src), Store.open(dst)
    with source.engine.connect() as read, target.engine.begin() as write:
        for table in Base.metadata.sorted_tables:
            rows = [dict(r) for r in read.execute(select(table).order_by(*table.primary_key.columns)).mappings()]
            if rows:
                write.execute(table.insert(), rows)
            if "id" in table.c:
                write.execute(text(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), (SELECT max(id) FROM {table.name}))"))
    source.close()
    target.close()


def _open(db: str) -> Store:
    """The store at ``db`` (it exists), to read or to edit as another process would: opened without
    the schema-revision check (Alembic's script directory read anew, tens of milliseconds) that each
    kd command run here makes on it anyway."""
    return Store.open(db, check=False)


def _read(db: str, query) -> list:
    store = _open(db)
    try:
        with store.engine.connect() as conn:
            return conn.execute(query).all()
    finally:
        store.close()


def _labels(db: str) -> dict[int, int | None]:
    return dict(_read(db, select(Sample.id, Sample.label_id)))


def _state(db: str) -> dict[int, tuple]:
    """Every sample's (label, dropped, original label)."""
    return {i: tuple(rest) for i, *rest in _read(db, select(Sample.id, Sample.label_id, Sample.dropped, Sample.orig_label_id))}


def _count(db: str, model) -> int:
    return _read(db, select(func.count()).select_from(model))[0][0]


def _issues(db: str, run: str = "r") -> list[dict]:
    store = _open(db)
    try:
        return lab.issues(store, run)
    finally:
        store.close()


def _sheet(path: Path, rows: list[dict]) -> Path:
    """A review sheet: CSV with the columns of the first row, or JSONL by extension."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        return path
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=rows[0].keys())
        w.writeheader()
        w.writerows(rows)
    return path


def _add_class_mid(db: str, tmp_path: Path) -> None:
    """A third class, ``mid``, that the teacher never saw (one dev sample)."""
    kd("ingest", str(write_tsv(tmp_path / "mid.tsv", [("mid", "不好也不差的一个东西")])), "--split", "dev", "--db", db)


@pytest.mark.on_postgresql
def test_detect_finds_most_injected_flips(db, noisy):
    out = json.loads(kd("labels", "detect", "--run", "r", "--db", db, "--json").stdout)
    store = _open(db)
    with store.engine.connect() as conn:
        line_of = dict(conn.execute(select(Sample.id, Sample.line)).all())
    flagged = {line_of[i["sample_id"]] for i in lab.issues(store, "r")}
    truth = noisy["flipped_lines"]
    assert out["flagged"] == len(flagged) > 0
    assert out["estimated_issues"] >= out["flagged"]  # (the ranked cut: cleanlab's estimate, of the flagged candidates)
    hits = len(flagged & truth)
    assert hits / len(truth) >= 0.7, (hits, len(truth), len(flagged))  # recall
    assert hits / len(flagged) >= 0.6, (hits, len(truth), len(flagged))  # precision
    top = out["top"][0]
    assert 0 <= top["score"] <= 1 and top["suggested"] != top["given"]
    shown = json.loads(kd("labels", "show", "--run", "r", "--top", "5", "--db", db, "--json").stdout)
    assert [s["score"] for s in shown] == sorted((s["score"] for s in shown), reverse=True)
    # --limit, as `kd samples` spells it, is the same option
    assert json.loads(kd("labels", "show", "--run", "r", "--limit", "5", "--db", db, "--json").stdout) == shown
    # --no-calibrate: cleanlab's own flags on the teacher's out-of-fold probabilities, exactly
    from cleanlab.filter import find_label_issues

    said = kd("labels", "detect", "--run", "r", "--method", "cleanlab", "--combine", "union", "--no-calibrate", "--overwrite", "--db", db).stdout
    inputs = lab.detect_inputs(store, "r", lab.DetectConfig())
    expected = set(inputs.train.ids[find_label_issues(inputs.train.labels, inputs.probs, filter_by="prune_by_noise_rate")].tolist())
    assert {i["sample_id"] for i in lab.issues(_open(db), "r")} == expected
    # cleanlab's estimate of the wrong labels, which union's flags are not: said beside them, and recorded
    from kdstore.noise import estimate_issue_count

    estimate, n = estimate_issue_count(inputs.train.labels, inputs.probs), len(inputs.train.ids)
    figures = {m.name: m.value for m in _open(db).metrics(_open(db).find_stage("r", "detect").id) if m.split == "train"}
    assert figures["estimated_issues"] == estimate
    assert (f"(cleanlab estimates {estimate} of the {n} train labels wrong, {estimate / n:.0%})" in said) == (estimate != len(expected)), said
    config = _open(db).find_stage("r", "detect").config
    assert config["calibrate"] is False
    import cleanlab  # (a rerun of these flags needs the cleanlab that made them: recorded with the stage)

    assert config["environment"]["cleanlab"] == cleanlab.__version__ and config["environment"]["kd"], config["environment"]


def test_detect_and_clean_warn_when_the_teacher_cannot_be_trusted(db):
    out = json.loads(kd("labels", "detect", "--run", "r", "--db", db, "--json").stdout)
    assert out["warnings"] == []  # the trained teacher on 12 % flips: nothing amiss
    store = _open(db)
    figures = {m.name: m.value for m in store.metrics(store.find_stage("r", "detect").id)}
    store.close()
    assert 0.8 <= figures["oof_accuracy"] <= 1.0 and 0.3 <= figures["majority_rate"] <= 0.7
    # every binary label turned over after the teacher ran: its folds now disagree with most labels
    store = _open(db)
    with store.engine.begin() as conn:
        conn.execute(update(Sample).where(Sample.split == "train").values(label_id=1 - Sample.label_id))
    store.close()
    result = kd("labels", "detect", "--run", "r", "--overwrite", "--db", db, "--json")
    out = json.loads(result.stdout)  # the warnings go to stderr: stdout stays the JSON
    assert len(out["warnings"]) == 3 and "stronger teacher" in out["warnings"][0]
    assert "flagged, more than 30%" in out["warnings"][1]
    assert "the teacher of run r learned from labels changed since" in out["warnings"][2]  # (as they were: turned over since)
    assert result.stderr.count("warning: ") == 3
    dry = kd("labels", "clean", "--run", "r", "--dry-run", "--db", db)
    assert "stronger teacher" in dry.stderr and "nothing written" in dry.stdout
    assert "would change, more than 30%" in dry.stderr and "flagged, more than" not in dry.stderr  # (its changes, not the flags)
    flagging = kd("labels", "clean", "--run", "r", "--action", "flag", "--dry-run", "--db", db).stdout  # (it said "N changes")
    assert re.search(r"^\d+ flagged \(no label changed\), \d+ unchanged", flagging, re.M) and " change " not in flagging, flagging
    flag = kd("labels", "clean", "--run", "r", "--action", "flag", "--db", db)
    assert flag.stderr == ""  # flagging changes no label: nothing to warn about
    flagged = json.loads(kd("labels", "show", "--run", "r", "--top", "0", "--status", "flagged", "--db", db, "--json").stdout)
    unflagged = kd("labels", "undo", "--run", "r", "--db", db).stdout  # (it said "reverted N label edits": no label had changed)
    assert unflagged == f"run r, stage clean: removed {len(flagged)} flags, reopened {len(flagged)} issues\n"
    kd("labels", "clean", "--run", "r", "--action", "flag", "--name", "flag", "--db", db)
    done = kd("labels", "clean", "--run", "r", "--name", "relabel", "--db", db)  # printed once the clean is done: it said "would change"
    assert re.search(r"\d+ of \d+ train labels \([0-9.]+%\) changed, more than 30%", done.stderr) and "would change" not in done.stderr, done.stderr


def test_a_fold_whose_model_learned_nothing_is_named_though_the_teacher_as_a_whole_looks_fair(db):
    """One fold of a --folds 3 teacher whose model answers the same for every text (a training that stalled)
    gives a third of the train labels a guess: the detection flags them by the dozen while the overall
    agreement stays above the bar a weak teacher fails. Its warning names that fold, its figures, and the
    reteach with another seed; each fold's agreement is stored with the detection."""
    store = _open(db)
    teacher = store.find_stage("r", "teach")
    fold1 = [i for i, k in store.read_folds(teacher.id).items() if k == 1]
    stalled = vectors.encode(np.array([0.3, -0.3], dtype=np.float32))  # (a flat guess, class 0 for every text)
    with store.engine.begin() as conn:
        conn.execute(update(Logit).where(Logit.stage_id == teacher.id, Logit.sample_id.in_(fold1)).values(vector=stalled))
    store.close()
    result = kd("labels", "detect", "--run", "r", "--db", db, "--json")
    out = json.loads(result.stdout)
    store = _open(db)
    figures = {m.name: m.value for m in store.metrics(store.find_stage("r", "detect").id) if m.split == "train"}
    store.close()
    assert figures["fold1/train_samples"] == len(fold1) and figures["fold1/oof_accuracy"] <= figures["fold1/majority_rate"] + 0.05
    assert figures["fold0/oof_accuracy"] >= 0.8 and figures["oof_accuracy"] >= 0.6  # (the whole looks fair)
    [weak] = [w for w in out["warnings"] if w.startswith("fold 1's model")]
    assert re.match(rf"fold 1's model agrees with [0-9.]+% of its {len(fold1)} train labels out of fold, (no|less|hardly) more than "
                    r"always answering their most frequent class \([0-9.]+%\), while the other folds agree with [0-9.]+%(-[0-9.]+%)?: "
                    "that fold learned next to nothing", weak), weak
    assert weak.endswith(" --folds 3 --seed 43 --overwrite` (with the other options `kd report --run r` lists for it)"), weak
    assert not any(w.startswith(("fold 0", "fold 2")) for w in out["warnings"]) and f"warning: {weak}" in result.stderr


def test_weak_folds_are_named_beside_the_warnings_of_a_weak_teacher(db):
    """Two folds of three whose models learned the labels backwards flag two thirds of them: the warnings
    of a weak teacher (too many flags, out-of-fold agreement under the majority's) hid the fold warnings,
    which name the cause and the reteach with another seed."""
    store = _open(db)
    teacher = store.find_stage("r", "teach")
    wrong = [i for i, k in store.read_folds(teacher.id).items() if k in (1, 2)]
    labels = dict(_read(db, select(Sample.id, Sample.label_id).where(Sample.id.in_(wrong))))
    against = {label: vectors.encode(np.array([3.0, -3.0] if label else [-3.0, 3.0], dtype=np.float32)) for label in (0, 1)}
    with store.engine.begin() as conn:
        for label in (0, 1):
            ids = [i for i in wrong if labels[i] == label]
            conn.execute(update(Logit).where(Logit.stage_id == teacher.id, Logit.sample_id.in_(ids)).values(vector=against[label]))
    store.close()
    warnings = json.loads(kd("labels", "detect", "--run", "r", "--db", db, "--json").stdout)["warnings"]
    assert any(re.search(r"train labels \([0-9.]+%\) flagged, more than 30%", w) for w in warnings), warnings
    assert [w.split("'")[0] for w in warnings if w.startswith("fold ")] == ["fold 1", "fold 2"], warnings


def test_normalized_margin_on_two_classes_is_said_to_score_as_the_default(db):
    """cleanlab's normalized margin of a label of two classes is its probability: --quality-method
    normalized_margin flagged and scored exactly what the default did, without a word."""
    default = json.loads(kd("labels", "detect", "--run", "r", "--db", db, "--json").stdout)
    margin = kd("labels", "detect", "--run", "r", "--quality-method", "normalized_margin", "--overwrite", "--db", db, "--json")
    said = json.loads(margin.stdout)
    assert [(i["sample_id"], round(i["score"], 6)) for i in said["top"]] == [(i["sample_id"], round(i["score"], 6)) for i in default["top"]]
    assert said["flagged"] == default["flagged"]
    [warned] = [w for w in said["warnings"] if w.startswith("--quality-method")]
    assert warned.startswith("--quality-method normalized_margin scores labels of two classes as self_confidence (the default) does")
    entropy = kd("labels", "detect", "--run", "r", "--quality-method", "confidence_weighted_entropy", "--overwrite", "--db", db, "--json")
    assert not any(w.startswith("--quality-method") for w in json.loads(entropy.stdout)["warnings"])


def test_every_labels_command_that_writes_says_run_stage_and_warnings_in_json(db, tmp_path):
    """detect carried no ``stage``, a dry run no ``stage``, set and import no ``warnings``: a script
    reading them alike (as undo's and clean's) got a KeyError."""
    def out(*args):
        return json.loads(kd("labels", *args, "--run", "r", "--db", db, "--json").stdout)

    want = {"run", "stage", "warnings"}
    detected = out("detect")
    assert want <= set(detected) and detected["stage"] == "detect"
    dry = out("clean", "--dry-run", "--name", "c1")
    assert want <= set(dry) and dry["stage"] == "c1" and dry["dry_run"] is True
    sheet = tmp_path / "review.csv"
    kd("labels", "export", "--run", "r", str(sheet), "--db", db)
    rows = list(csv.DictReader(io.StringIO(sheet.read_text(encoding="utf-8-sig"))))
    imported = json.loads(kd("labels", "import", str(_sheet(sheet, [dict(rows[0], decision="reject")])), "--db", db, "--json").stdout)
    assert imported == {"run": "r", "stage": "review", "relabel": 0, "drop": 0, "flag": 0, "reject": 1, "unchanged": 0, "warnings": []}
    sample = int(_open(db).samples(splits=["dev"]).ids[0])
    edited = out("set", f"{sample}=drop")
    assert want <= set(edited) and (edited["stage"], edited["drop"], edited["warnings"]) == ("edit-1", 1, [])
    assert want <= set(out("clean", "--min-score", "0.99"))
    assert want <= set(out("undo", "--stage", "edit-1"))


def test_detect_refuses_in_sample_probabilities_and_missing_teacher(db, noisy):
    kd("teach", "--run", "plain", "--model", str(noisy["model"]), "--epochs", "1", "--max-len", "32", "--db", db)
    refused = kd("labels", "detect", "--run", "plain", "--db", db, ok=False)
    assert "out-of-sample" in refused.output and "--folds" in refused.output
    # the command it names is one kd teach takes: "`kd teach --run plain --folds 5 ...`" left out --model
    # (required) and --overwrite (the run has a teacher), each refused in turn
    assert f"`kd teach --run plain --model {shlex.quote(str(noisy['model']))} --folds 5 --overwrite`" in refused.output, refused.output
    assert _count(db, LabelIssue) == 0
    allowed = kd("labels", "detect", "--run", "plain", "--allow-in-sample", "--db", db)
    # accepted, but said (it was not a word): a teacher that learned the labels leans toward them, wrong ones included
    n = _read(db, select(func.count()).select_from(Sample).where(Sample.split == "train"))[0][0]
    assert (f"warning: --allow-in-sample: all {n} train samples were scored by a teacher that learned their labels" in allowed.stderr
            and f"`kd teach --run plain --model {shlex.quote(str(noisy['model']))} --folds 5 --overwrite`" in allowed.stderr), allowed.stderr
    nothing = kd("labels", "detect", "--run", "nowhere", "--db", db, ok=False)
    assert "no run 'nowhere'" in nothing.output  # refused before a run or stage is recorded


def test_a_set_that_changes_nothing_names_no_undo(tmp_path, error_line):
    """`kd labels set 1=drop` of a sample already dropped printed "undo: kd labels undo --run r --stage edit-2",
    which then said "nothing left to undo". The stage stays (it records the label confirmed), its undo line goes."""
    db = str(tmp_path / "kd.db")
    kd("ingest", str(write_tsv(tmp_path / "train.tsv", [("pos", "很好"), ("neg", "太差"), ("pos", "不错")])), "--db", db)
    assert "undo: kd labels undo --run r --stage edit-1" in kd("labels", "set", "--run", "r", "1=drop", "--db", db).stdout
    again = kd("labels", "set", "--run", "r", "1=drop", "--db", db).stdout
    assert again == "run r, stage edit-2: 1 unchanged (confirmed, as `kd labels history` lists: clean leaves it alone)\n", again
    assert "nothing left to undo" in error_line(kd("labels", "undo", "--run", "r", "--stage", "edit-2", "--db", db, ok=False))


def test_detect_without_a_teacher_names_the_out_of_fold_teach_command(tmp_path, error_line):
    """`kd labels detect` on a store with no teacher said "no run 'r' ...: `kd runs` lists the runs"
    (kd runs listed nothing), and on a run without one "`kd teach --run h --model MODEL` makes one":
    a teacher without --folds, which the detection then refused as in-sample. Both name the
    `kd teach ... --folds` that makes the teacher a detection needs, and write nothing."""
    db = str(tmp_path / "bare.db")
    kd("ingest", str(write_tsv(tmp_path / "train.tsv", labeled_rows(random.Random(1), 20))), "--db", db)
    line = error_line(kd("labels", "detect", "--run", "r", "--db", db, ok=False))
    assert line.startswith("Error: no run 'r' in ") and "`kd teach --run r --model MODEL --folds 5`" in line, line
    kd("labels", "set", "--run", "h", "1=drop", "--db", db)
    line = error_line(kd("labels", "detect", "--run", "h", "--db", db, ok=False))
    assert "run 'h' has no succeeded 'teach' stage" in line, line
    assert line.endswith(": `kd teach --run h --model MODEL --folds 5` makes the out-of-fold teacher a detection needs"), line
    assert not _open(db).run_exists("r") and _count(db, LabelIssue) == 0
    # a run with its own pre-trained model (no model hub): the command names it, as kd predict's and kd distill's do
    kd("pretrain", "--run", "h", "--steps", "1", "--layers", "1", "--hidden", "8", "--max-len", "16", "--no-wwm", "--db", db)
    line = error_line(kd("labels", "detect", "--run", "h", "--db", db, ok=False))
    assert line.endswith(": `kd teach --run h --model pretrain:h --folds 5` makes the out-of-fold teacher a detection needs"), line


def test_a_second_detection_after_a_clean_is_told_at_once_that_overwrite_would_be_refused_too(db, error_line):
    """The loop's second round, `kd labels detect --run r` after a clean whose edits stand, said "pass --overwrite to
    replace it", and `--overwrite` was then refused as the clean's edits stand: the first refusal names the way out
    (undo the clean, or detect in another run) and nothing is written."""
    kd("labels", "detect", "--run", "r", "--db", db)
    kd("labels", "clean", "--run", "r", "--db", db)
    issues = _count(db, LabelIssue)
    line = error_line(kd("labels", "detect", "--run", "r", "--db", db, ok=False))
    assert "pass --overwrite" not in line, line
    assert "were decided by stage 'clean'" in line and "`kd labels undo --run r --stage clean` first" in line, line
    assert line.endswith("or detect again in another run (`kd labels detect --run NEW --teacher-run r`)"), line
    assert _count(db, LabelIssue) == issues


def test_a_run_without_a_teacher_is_told_of_teacher_run_and_its_hints_name_the_teacher_it_read(db, error_line):
    """`kd labels detect --run b` where only run r has a teacher names --teacher-run and r (it is not
    taken silently, and nothing is written); a detection of b that read r's teacher names r again
    when its --overwrite is refused (it named `--teacher-run b`, a run with no teacher), and so does the
    refusal of in-sample votes of a student b distilled from r (it named `kd distill --run b`, which fails)."""
    line = error_line(kd("labels", "detect", "--run", "b", "--db", db, ok=False))
    assert "no run 'b'" in line and "pass --teacher-run RUN (runs with a teacher: r)" in line, line
    assert not _open(db).run_exists("b")
    kd("labels", "detect", "--run", "b", "--teacher-run", "r", "--db", db)
    assert error_line(kd("labels", "detect", "--run", "b", "--overwrite", "--db", db, ok=False)).endswith(
        "`kd labels detect --run b --teacher-run r --overwrite` judges again as it did")
    kd("labels", "clean", "--run", "b", "--db", db)
    line = error_line(kd("labels", "detect", "--run", "b", "--overwrite", "--db", db, ok=False))
    # the teacher its detection read is named with the command that judges again as it did (not "--teacher-run RUN")
    assert "run 'b' has no succeeded 'teach' stage" in line and line.endswith(
        "its detection 'detect' read the teacher of run 'r': `kd labels detect --run NEW --teacher-run r` judges again as it did"), line
    line = error_line(kd("labels", "detect", "--run", "b", "--teacher-run", "r", "--overwrite", "--db", db, ok=False))
    assert line.endswith("or detect again in another run (`kd labels detect --run NEW --teacher-run r`)"), line
    # a student of b distilled from r's teacher: the out-of-fold students it asks for are distilled from r too
    kd("distill", "--run", "b", "--teacher-run", "r", "--name", "s", "--epochs", "1", "--embed-dim", "8", "--num-filters", "4",
       "--max-len", "32", "--db", db)
    line = error_line(kd("labels", "detect", "--run", "c", "--teacher-run", "r", "--student-votes", "b:s", "--method",
                         "cleanlab,ensemble", "--db", db, ok=False))
    assert "(`kd distill --run b --teacher-run r --folds 5 --name s-oof`)" in line, line


def test_detect_refuses_several_teacher_runs(db, error_line):
    """`kd labels detect --teacher-run r --teacher-run b` (as `kd distill` takes several teachers) judged with
    b's teacher alone, the last typed, in silence (a config file's array of them was refused): it reads one
    teacher's out-of-fold probabilities, so several are refused before anything is written."""
    line = error_line(kd("labels", "detect", "--run", "c", "--teacher-run", "r", "--teacher-run", "r", "--db", db, ok=False))
    assert "--teacher-run" in line and "one teacher" in line, line
    assert not _open(db).run_exists("c") and _count(db, LabelIssue) == 0


def test_in_sample_votes_name_the_students_teacher_average(db, noisy, error_line):
    """The out-of-fold students the refusal of in-sample votes asks for are distilled from the teachers the
    student learned from, with their weights: a student of `--teacher-average logits` was told to distill
    from their mixture of probabilities (the default), another target than its own."""
    kd("teach", "--run", "r2", "--model", str(noisy["model"]), "--epochs", "1", "--max-len", "32", "--db", db)
    kd("distill", "--run", "r", "--teacher-run", "r", "--teacher-run", "r2", "--teacher-average", "logits", "--name", "s",
       "--epochs", "1", "--embed-dim", "8", "--num-filters", "4", "--max-len", "32", "--db", db)
    line = error_line(kd("labels", "detect", "--run", "c", "--teacher-run", "r", "--student-votes", "r:s", "--method",
                         "cleanlab,ensemble", "--db", db, ok=False))
    assert "(`kd distill --run r --teacher-run r --teacher-run r2 --teacher-average logits --folds 5 --name s-oof`)" in line, line


def test_in_sample_votes_name_the_students_kind(db, error_line):
    """The out-of-fold students asked for are of the refused student's kind: a BiLSTM's in-sample votes
    were answered with `kd distill --run r --folds 5 --name s-oof`, which distils TextCNNs (the default)."""
    kd("distill", "--run", "r", "--student", "bilstm", "--name", "s", "--epochs", "1", "--embed-dim", "8", "--hidden", "4",
       "--max-len", "32", "--db", db)
    line = error_line(kd("labels", "detect", "--run", "c", "--teacher-run", "r", "--student-votes", "r:s", "--method",
                         "cleanlab,ensemble", "--db", db, ok=False))
    assert "(`kd distill --run r --student bilstm --folds 5 --name s-oof`)" in line, line


def test_in_sample_votes_of_an_early_exit_ask_for_out_of_fold_textcnns_not_an_early_exit_named_oof(db, error_line):
    """An early exit (the teacher's own layers and head, which learned the train labels) refused as in-sample was
    answered with `kd distill --run r --folds 5 --name ee-oof`: TextCNNs (the default; an early exit has no
    --folds) under a name that reads as out-of-fold early exits."""
    kd("distill", "--run", "r", "--student", "early-exit", "--name", "ee", "--epochs", "1", "--db", db)
    line = error_line(kd("labels", "detect", "--run", "r", "--student-votes", "ee", "--method", "cleanlab,ensemble",
                         "--db", db, ok=False))
    assert ("distill stage 'ee' of run 'r' is an early exit on its teacher's layers and head, which learned the train labels "
            "(an early exit has no --folds): its votes are in-sample. Distill out-of-fold students of another kind "
            "(`kd distill --run r --student textcnn --folds 5 --name votes`)") in line, line


def test_in_sample_votes_of_a_where_student_count_and_keep_its_rows(db, error_line):
    """A student of the rows its --where selects was said to have learned the labels of every train sample
    (150 of a 50-row student), and the out-of-fold students advised left its --where out: students of other rows."""
    where = "id % 3 = 0"
    learned = len(Store.open(db).samples(splits=["train"], labeled=True, where=where))
    kd("distill", "--run", "r", "--name", "s", "--where", where, "--epochs", "1", "--embed-dim", "8", "--num-filters", "4",
       "--max-len", "32", "--db", db)
    line = error_line(kd("labels", "detect", "--run", "r", "--student-votes", "s", "--method", "cleanlab,ensemble",
                         "--db", db, ok=False))
    assert f"learned the labels of {learned} of the 150 train samples" in line, line
    assert "(`kd distill --run r --where 'id % 3 = 0' --folds 5 --name s-oof`)" in line, line


def test_in_sample_votes_let_in_by_allow_in_sample_are_warned_of(db):
    """--allow-in-sample let a student that learned the train labels vote without a word (a teacher so let in
    is warned of): its votes lean toward the labels, wrong ones included, and the ensemble flags fewer."""
    kd("distill", "--run", "r", "--name", "s", "--epochs", "1", "--embed-dim", "8", "--num-filters", "4", "--max-len", "32", "--db", db)
    out = kd("labels", "detect", "--run", "r", "--student-votes", "s", "--method", "cleanlab,disagree,ensemble",
             "--allow-in-sample", "--db", db, "--json")
    warnings = json.loads(out.stdout)["warnings"]
    assert any(w.startswith("--allow-in-sample: distill stage 's' of run 'r' learned the labels of the 150 train samples: its votes lean")
               and "--folds 5 --name s-oof" in w for w in warnings), warnings
    assert "warning: --allow-in-sample: distill stage 's'" in out.stderr


def test_a_train_sample_ingested_after_a_folds_teacher_is_scored_not_refused_as_in_sample(db, tmp_path):
    """It has no logits yet: the fix is --logits-only (not --allow-in-sample); scored, it is out of
    sample (none of the K fold models saw it) and detect takes it."""
    kd("ingest", str(write_tsv(tmp_path / "late.tsv", [("pos", "后来才来的一条很好"), ("neg", "后来才来的一条太差")])), "--db", db)
    line = kd("labels", "detect", "--run", "r", "--overwrite", "--db", db, ok=False).output
    assert "2 train samples have no teacher logits: run `kd teach --run r --logits-only`" in line and "in-sample" not in line
    kd("teach", "--run", "r", "--logits-only", "--db", db)
    kd("labels", "detect", "--run", "r", "--overwrite", "--db", db)
    store = _open(db)
    figures = {m.name: m.value for m in store.metrics(store.find_stage("r", "detect").id)}
    assert figures["in_sample"] == 0 and figures["train_samples"] == len(store.samples(splits=["train"], labeled=True))


def test_detect_knows_which_rows_a_filtered_teacher_learned_from(db, noisy, tmp_path):
    model, short = str(noisy["model"]), ["--epochs", "1", "--max-len", "32"]
    n_train = len(noisy["rows"])
    # trained on dev alone: every train row's probabilities are out-of-sample
    kd("teach", "--run", "devonly", "--model", model, "--split", "dev", *short, "--db", db)
    kd("labels", "detect", "--run", "devonly", "--db", db)
    store = _open(db)
    figures = {m.name: m.value for m in store.metrics(store.find_stage("devonly", "detect").id)}
    store.close()
    assert figures["in_sample"] == 0 and figures["train_samples"] == n_train
    # trained on half the train rows: that half is in-sample, and only that half is counted
    kd("teach", "--run", "half", "--model", model, "--where", "id % 2 = 0", *short, "--db", db)
    half = kd("labels", "detect", "--run", "half", "--db", db, ok=False)
    even = sum(1 for i in _labels(db) if i % 2 == 0 and i <= n_train)
    assert f"{even} train samples have in-sample teacher probabilities" in half.output
    # a teacher of some classes only is refused by detect and by distill
    _add_class_mid(db, tmp_path)
    kd("teach", "--run", "two", "--model", model, "--label", "pos", "--label", "neg", *short, "--db", db)
    for command in (["labels", "detect", "--allow-in-sample"], ["distill", "--epochs", "1"]):
        refused = kd(*command, "--run", "two", "--db", db, ok=False)
        assert "learned only classes pos, neg (kd teach --label), not mid" in refused.output



def test_a_folds_teacher_started_from_a_teacher_that_learned_the_labels_is_in_sample(db, noisy, error_line):
    """`kd teach --folds K --model teach:R` (or a fold model's folder) starts every fold from a model
    that learned the labels the folds are to be blind to: its "out-of-fold" logits echoed them (a
    teacher of 95 % train accuracy on 12 % flipped labels gave its folds 95 % too, and detect flagged 5
    of 21 flips), yet detect took them as out-of-fold. Warned of when taught, refused by detect as
    in-sample (counting the rows the start learned) unless --allow-in-sample."""
    model, short = str(noisy["model"]), ["--epochs", "1", "--max-len", "32"]
    n_train = len(noisy["rows"])
    kd("teach", "--run", "base", "--model", model, *short, "--db", db)
    taught = kd("teach", "--run", "leak", "--model", "teach:base", "--folds", "2", *short, "--db", db)
    assert "--folds 2 from --model teach:base: the teacher of run 'base' learned" in taught.stderr, taught.stderr
    line = error_line(kd("labels", "detect", "--run", "leak", "--db", db, ok=False))
    assert line.startswith(f"Error: {n_train} train samples have in-sample teacher probabilities: the teacher of run 'leak' "
                           "started from the teacher of run 'base', which learned their labels"), line
    assert _count(db, LabelIssue) == 0
    kd("labels", "detect", "--run", "leak", "--allow-in-sample", "--db", db)
    store = _open(db)
    figures = {m.name: m.value for m in store.metrics(store.find_stage("leak", "detect").id)}
    fold_of = store.read_folds(store.find_stage("r", "teach").id)
    fold0 = Path(store.find_stage("r", "teach").artifact_path) / "fold-0"
    store.close()
    assert figures["in_sample"] == n_train
    # run r's fold 0 learned the rows of its other folds: those are in-sample, fold 0's rows are not
    kd("teach", "--run", "leak0", "--model", str(fold0), "--folds", "2", *short, "--db", db)
    line = error_line(kd("labels", "detect", "--run", "leak0", "--db", db, ok=False))
    assert line.startswith(f"Error: {sum(f != 0 for f in fold_of.values())} train samples have in-sample"), line
@pytest.mark.on_postgresql
def test_clean_then_undo_restores_every_label_exactly(db):
    before = _labels(db)
    kd("labels", "detect", "--run", "r", "--db", db)
    dry = kd("labels", "clean", "--run", "r", "--dry-run", "--db", db).stdout
    assert "would decide" in dry and "nothing written" in dry
    dry = json.loads(kd("labels", "clean", "--run", "r", "--dry-run", "--db", db, "--json").stdout)
    assert (dry["run"], dry["dry_run"], dry["action"], dry["min_score"]) == ("r", True, "relabel", 0.0)  # (a script's check of what it previewed)
    preview = dry["changes"]
    planned = {i["sample_id"]: i for i in _issues(db)}
    assert len(preview) == len(planned) and all(
        (c["action"], c["current"], c["new"], c["score"], c["text"]) == ("relabel", planned[c["sample_id"]]["given"],
         planned[c["sample_id"]]["suggested"], planned[c["sample_id"]]["score"], planned[c["sample_id"]]["text"])
        for c in preview
    )  # what a reviewer needs to judge each change
    assert len(preview) > 1
    one = kd("labels", "clean", "--run", "r", "--dry-run", "--top", "1", "--db", db, "--json").stdout
    assert json.loads(one)["changes"] == preview  # --top trims the table, never the plan
    one = kd("labels", "clean", "--run", "r", "--dry-run", "--top", "1", "--db", db).stdout
    assert f"... {len(preview) - 1} more rows (--top 0 shows all" in one
    assert _labels(db) == before and _count(db, LabelEdit) == 0  # a dry run writes nothing
    counts = json.loads(kd("labels", "clean", "--run", "r", "--db", db, "--json").stdout)
    assert counts["relabel"] > 0
    after = _labels(db)
    changed = {i for i in before if before[i] != after[i]}
    assert len(changed) == counts["relabel"] == _count(db, LabelEdit)
    again = kd("labels", "clean", "--run", "r", "--db", db, ok=False)
    assert "--overwrite" in again.output
    some = next(iter(changed))
    hist = json.loads(kd("labels", "history", str(some), "--db", db, "--json").stdout)
    assert hist["edits"][0]["action"] == "relabel" and hist["original"] != hist["current"]
    clean = lambda: next(s for s in json.loads(kd("report", "--run", "r", "--db", db, "--json").stdout)["stages"] if s["kind"] == "clean")  # noqa: E731
    assert clean()["label_edits"] == {"edits": counts["relabel"], "undone": 0, "undone_at": None, "rejects_undone": 0}
    undone = json.loads(kd("labels", "undo", "--run", "r", "--db", db, "--json").stdout)
    assert undone["reverted"] == counts["relabel"]
    assert _labels(db) == before
    # the report said "relabel N" of the clean stage with no sign of the undo
    assert clean()["label_edits"]["undone"] == counts["relabel"] and clean()["label_edits"]["undone_at"]
    assert f"  label edits: {counts['relabel']}, all undone (kd labels undo, last at " in kd("report", "--run", "r", "--db", db).stdout
    hist = json.loads(kd("labels", "history", str(some), "--db", db, "--json").stdout)
    assert hist["edits"][0]["reverted_at"] and hist["current"] == hist["original"]
    assert "nothing left to undo" in kd("labels", "undo", "--run", "r", "--db", db, ok=False).output
    named = kd("labels", "undo", "--run", "r", "--stage", clean()["name"], "--db", db, ok=False).output
    assert f"the clean stage {clean()['name']!r} of run 'r' has nothing left to undo" in named, named
    line = kd("labels", "undo", "--run", "nope", "--db", db, ok=False).output
    assert "Error: no run 'nope' in " in line and line.rstrip().endswith(": `kd runs` lists the runs"), line
    assert "give its name (review.csv" in kd("labels", "export", "--run", "r", "-", "--db", db, ok=False).output
    # a clean replaced after its undo keeps its name in the audit trail (its row was deleted: "a deleted stage")
    first = _open(db).find_stage("r", "clean").id
    replaced = kd("labels", "clean", "--run", "r", "--overwrite", "--db", db).stdout
    assert "undo: kd labels undo --run r --stage clean" in replaced  # the way back, where it is needed
    hist = json.loads(kd("labels", "history", str(some), "--db", db, "--json").stdout)
    assert sorted((e["stage"], bool(e["reverted_at"])) for e in hist["edits"]) == [("clean", False), (f"clean~replaced-{first}", True)]
    assert "(a deleted stage)" not in kd("labels", "history", str(some), "--db", db).output


def test_drop_excludes_samples_from_later_training(db, noisy):
    kd("labels", "detect", "--run", "r", "--db", db)
    counts = json.loads(kd("labels", "clean", "--run", "r", "--action", "drop", "--db", db, "--json").stdout)
    # the table says which were dropped, as --json does (it said "applied" alike for a relabel)
    table = kd("labels", "show", "--run", "r", "--top", "0", "--db", db).stdout
    assert table.count("(dropped)") == counts["drop"] > 0, table  # (at 80 columns, under "applied" in its cell)
    store = _open(db)
    assert len(store.samples(splits=["train"])) == 150 - counts["drop"]
    assert len(store.samples(splits=["train"], include_dropped=True)) == 150  # never deleted
    distilled = kd("distill", "--run", "r", "--epochs", "1", "--embed-dim", "8", "--num-filters", "4", "--max-len", "32", "--db", db, "--json")
    out = json.loads(distilled.stdout)
    assert out["metrics"]["all"]["train_samples"] == 150 - counts["drop"]
    # its teacher learned from the labels before the clean: said (its soft targets follow them), with a
    # command that runs (a bare `kd teach --run r --overwrite` is refused: --model is required)
    said = ("warning: the teacher of run r learned from labels changed since (kd labels clean, set, import or undo): its soft "
            f"targets follow the old ones; `kd teach --run r --model {noisy['model']} --folds 3 --overwrite` (with the other "
            "options `kd report --run r` lists for it) retrains it on the current labels")
    assert said in distilled.stderr and said[len("warning: "):] in out["warnings"]
    assert out["config"]["labels_from"] == "r/clean" and out["config"]["labels_stages"] == ["r/clean"]
    # the digest names the label set: a later clean that undoes nothing of the first changes it,
    # and undoing everything gives back the original labels' digest
    original = hashlib.sha256().hexdigest()[:16]
    dropped = out["config"]["labels_digest"]
    assert dropped != original
    undone = kd("labels", "undo", "--run", "r", "--db", db, "--json")
    assert ("warning: r/distill-textcnn trained on the labels this undo reverted: re-run it to learn from the labels as they are now "
            "(with --overwrite and the options `kd report --run r` lists for it)") in undone.stderr  # (one stage: it said "them", "each")
    assert json.loads(undone.stdout)["warnings"] == [undone.stderr.strip()[len("warning: "):]]
    assert lab.labels_state(_open(db)) == {"labels_from": "original", "labels_stages": [], "labels_stage_ids": [],
                                                "labels_digest": original, "labels_fit_digest": original}
    # the report says the student learned from edits undone since; a clean replaced after its undo
    # gives its name to the new one: the report says the student's was replaced
    assert "labels from: r/clean (undone since)" in kd("report", "--run", "r", "--db", db).stdout
    kd("labels", "clean", "--run", "r", "--action", "drop", "--overwrite", "--db", db)
    first = out["config"]["labels_stage_ids"][0]
    assert f"labels from: r/clean (stage {first}, replaced since)" in kd("report", "--run", "r", "--db", db).stdout
    student = next(st for st in json.loads(kd("report", "--run", "r", "--db", db, "--json").stdout)["stages"]
                   if st["name"] == "distill-textcnn")
    assert student["sources"]["labels_from"] == [f"r/clean (stage {first}, replaced since)"]


def test_report_says_a_teacher_learned_from_labels_changed_since(db, noisy, tmp_path):
    """A clean (or `kd labels set`) after `kd teach`: kd distill and detect warn that the teacher learned
    from the old labels, but `kd report --run` of the teacher's own run said nothing of it."""
    assert "labels changed since" not in kd("report", "--run", "r", "--db", db).stdout
    train = _open(db).samples(splits=["train"])
    other = _open(db).class_names()[1 - int(train.labels[0])]
    kd("labels", "set", "--run", "r2", f"{int(train.ids[0])}={other}", "--db", db)
    said = ("  labels: this teacher learned from labels changed since (kd labels clean, set, import or undo): its logits and "
            f"figures follow the old ones; `kd teach --run r --model {noisy['model']} --folds 3 --overwrite` (with the other "
            "options its config line lists for it) retrains it on the current labels")  # (it named `kd report --run r`, the command run)
    assert said in kd("report", "--run", "r", "--db", db).stdout

    def changed() -> dict:  # (--json, for a script: it had no word of it)
        stages = json.loads(kd("report", "--run", "r", "--db", db, "--json").stdout)["stages"]
        return {st["name"]: st["notes"]["labels_changed"] for st in stages}

    assert changed()["teach"] is True
    kd("labels", "undo", "--run", "r2", "--db", db)  # the labels it learned from again: nothing to say
    assert "labels changed since" not in kd("report", "--run", "r", "--db", db).stdout
    assert not any(changed().values())
    # a test label's edit changes no model (it learns from train and is chosen on dev): "retrain it" had the
    # teacher retrained to the same weights, and detect and distill said so too
    names = _open(db).class_names()
    kd("ingest", str(write_tsv(tmp_path / "test.tsv", [(names[0], "一个测试评论"), (names[1], "另一个测试评论")])), "--split", "test", "--db", db)
    test = _open(db).samples(splits=["test"], labeled=True)
    kd("labels", "set", "--run", "r2", f"{int(test.ids[0])}={names[1 - int(test.labels[0])]}", "--db", db)
    assert "labels changed since" not in kd("report", "--run", "r", "--db", db).stdout
    undone = json.loads(kd("labels", "undo", "--run", "r2", "--db", db, "--json").stdout)  # nor "re-run r/teach" when undone
    assert (undone["reverted"], undone["trained_on_it"], undone["warnings"]) == (1, [], [])
    kd("labels", "set", "--run", "r2", f"{int(test.ids[0])}={names[1 - int(test.labels[0])]}", "--db", db)
    detected = kd("labels", "detect", "--run", "r", "--db", db, "--json")
    assert not any("labels changed since" in w for w in json.loads(detected.stdout)["warnings"]), detected.stdout
    distilled = kd("distill", "--run", "r", "--epochs", "1", "--embed-dim", "8", "--num-filters", "4", "--max-len", "32", "--db", db, "--json")
    assert not any("labels changed since" in w for w in json.loads(distilled.stdout)["warnings"]), distilled.stdout


def test_clean_needs_detect_and_a_failed_clean_leaves_no_edits(db):
    assert "no succeeded 'detect' stage" in kd("labels", "clean", "--run", "r", "--db", db, ok=False).output
    kd("labels", "detect", "--run", "r", "--db", db)
    store = _open(db)
    before = _labels(db)
    plan = lab.plan_clean(store, "r", action="relabel", min_score=0.0)
    broken = plan + [lab.Decision(sample_id=10**9, issue_id=None, action="relabel", new_label=0)]
    with pytest.raises(KdError, match=f"no sample {10**9} in the store"):
        lab.apply(store, None, broken, reason="test")  # fails on the last decision
    assert _labels(db) == before and _count(db, LabelEdit) == 0
    assert {i["status"] for i in _issues(db)} == {"open"}


def _metrics_write_fails(monkeypatch) -> None:
    """The next metrics write (a stage's figures, after its labels or issues were committed) fails."""
    def broken(self, *args, **kwargs):
        raise KdError("the metrics write failed")

    monkeypatch.setattr(Store, "add_metrics", broken)


@pytest.mark.on_postgresql
def test_a_clean_or_detect_that_fails_after_its_writes_takes_them_back(db, monkeypatch, error_line):
    """A clean whose edits were committed, then failed (its metrics not written: a lost connection, a
    full disk, Ctrl-C) reverts them and reopens its issues as it fails; a detection that failed after
    writing its issues removes them. A failed stage changes nothing, and the next one runs as if it had
    not been."""
    with monkeypatch.context() as m:
        _metrics_write_fails(m)
        kd("labels", "detect", "--run", "r", "--db", db, ok=False)
    assert _count(db, LabelIssue) == 0 and _read(db, select(Stage.status).where(Stage.kind == "detect")) == [("failed",)]
    kd("labels", "detect", "--run", "r", "--db", db)
    before, issues = _state(db), _issues(db)
    with monkeypatch.context() as m:
        _metrics_write_fails(m)
        failed = kd("labels", "clean", "--run", "r", "--db", db, ok=False)
    assert error_line(failed) == "Error: the metrics write failed"
    assert _state(db) == before and _issues(db) == issues and {i["status"] for i in issues} == {"open"}
    edits = _read(db, select(LabelEdit.reverted_at))
    assert edits and all(r.reverted_at is not None for r in edits)  # on record, reverted
    kd("labels", "clean", "--run", "r", "--db", db)  # the name is free, no undo asked for
    assert _state(db) != before


@pytest.mark.on_postgresql
def test_a_clean_killed_with_9_after_its_edits_is_taken_back_by_the_next_stage(db, tmp_path):
    """`kill -9` of a clean between its edits' commit and its end: the next stage started on the
    machine marks it failed and reverts its edits first."""
    from synthetic import kill_9_inside_stage

    from kdstore.runs import _machine

    if _machine() is None:
        pytest.skip("no /proc boot id or pid namespace here: kd judges no stage's process")
    before = _state(db)
    line = kill_9_inside_stage(db, tmp_path, run="r", kind="clean", inside=(
        "    from kdstore import labels as lab\n"
        "    lab.apply(store, st.id, lab.parse_edits(store, ['1=drop', '2=drop']), reason='test')\n"))
    assert _state(db) != before  # as the kill left it
    next_stage = kd("labels", "set", "--run", "r", "3=drop", "--db", db)
    after = _state(db)
    assert {i: after[i] for i in (1, 2)} == {i: before[i] for i in (1, 2)} and after[3][1]
    store = _open(db)
    try:
        stage = next(s for s in store.stages_of("r") if s.id == int(line))
        assert stage.status == "failed" and stage.error.startswith("crashed: process")
    finally:
        store.close()
    # and says so (the edits went in silence: a `kd samples --tsv` taken before had them)
    process = stage.error.split()[2]
    assert (f"note: stage r/{stage.name} was left running by process {process}, which is gone: recorded failed, its label "
            "edits reverted and its issues reopened") in next_stage.stderr


def test_clean_leaves_a_persons_edits_alone_and_its_dry_run_says_so(db):
    """A sample relabeled or dropped by hand since detection is not overridden by an automatic clean
    (it would bring a dropped sample back into training); the dry run shows what the clean will do,
    edited and unchanged rows included."""
    kd("labels", "detect", "--run", "r", "--db", db)
    flagged = _issues(db)
    dropped, relabeled = flagged[0]["sample_id"], flagged[1]["sample_id"]
    names = _open(db).class_names()
    other = next(n for n in names if n != flagged[1]["given"])
    kd("labels", "set", "--run", "hand", f"{dropped}=drop", f"{relabeled}={other}", "--db", db)
    preview = {c["sample_id"]: c for c in json.loads(kd("labels", "clean", "--run", "r", "--dry-run", "--db", db, "--json").stdout)["changes"]}
    assert preview[dropped]["effect"] == preview[relabeled]["effect"] == "edited" and preview[dropped]["dropped"]
    counts = json.loads(kd("labels", "clean", "--run", "r", "--db", db, "--json").stdout)
    assert counts["skipped_edited"] == 2 and counts["relabel"] + counts["flag"] == sum(c["effect"] == "change" for c in preview.values())
    assert counts["unchanged"] == sum(c["effect"] == "unchanged" for c in preview.values())
    history = json.loads(kd("labels", "history", str(dropped), "--db", db, "--json").stdout)["edits"]
    assert [e["stage"] for e in history] == ["edit-1"]  # the hand edit stands alone
    left = {i["sample_id"]: i["status"] for i in _issues(db)}
    assert left[dropped] == left[relabeled] == "open"  # for a person to decide (a sheet, kd labels set)


def test_a_clean_of_a_new_detection_leaves_alone_a_label_a_review_kept(db, tmp_path):
    """A reviewer rejected an issue (the label is right); a detection in a new run flagged the sample
    again, and its clean relabeled what the person had kept. Left alone now, until the review is undone."""
    kd("labels", "detect", "--run", "r", "--db", db)
    sheet = tmp_path / "review.csv"
    kd("labels", "export", "--run", "r", str(sheet), "--db", db)
    rows = list(csv.DictReader(io.StringIO(sheet.read_text(encoding="utf-8-sig"))))
    kept = int(rows[0]["sample_id"])
    kd("labels", "import", str(_sheet(sheet, [dict(rows[0], decision="reject")])), "--db", db)
    before = _labels(db)
    kd("labels", "detect", "--run", "b", "--teacher-run", "r", "--db", db)  # the same flags, another run
    dry = kd("labels", "clean", "--run", "b", "--dry-run", "--db", db)
    assert "1 left alone (a review kept the label); dry run" in dry.stdout
    preview = {c["sample_id"]: c for c in json.loads(kd("labels", "clean", "--run", "b", "--dry-run", "--db", db, "--json").stdout)["changes"]}
    assert preview[kept]["effect"] == "rejected" and {c["effect"] for k, c in preview.items() if k != kept} == {"change"}
    counts = json.loads(kd("labels", "clean", "--run", "b", "--db", db, "--json").stdout)
    assert counts["skipped_rejected"] == 1 and counts["relabel"] == len(preview) - 1
    assert _labels(db)[kept] == before[kept]
    assert {i["sample_id"]: i["status"] for i in _issues(db, "b")}[kept] == "open"  # for a person to decide again
    report = json.loads(kd("report", "--run", "b", "--db", db, "--json").stdout)
    assert next(st for st in report["stages"] if st["kind"] == "clean")["metrics"]["train"]["skipped_rejected"] == 1


def test_a_sheet_of_a_new_detection_names_the_samples_a_review_kept(db, tmp_path):
    """A reviewer rejected an issue; a detection in a new run flagged the sample again, and its sheet
    listed the row like any other, with no word of the earlier decision that its clean honours: the next
    reviewer judged it afresh, and an accept overturned the first one unseen. The export names them."""
    kd("labels", "detect", "--run", "r", "--db", db)
    a, b = _issues(db)[:2]
    kd("labels", "import", str(_sheet(tmp_path / "review.csv", [{"sample_id": a["sample_id"], "decision": "reject"}])), "--run", "r", "--db", db)
    kd("labels", "detect", "--run", "b", "--teacher-run", "r", "--db", db)  # the same flags, another run
    out = kd("labels", "export", "--run", "b", str(tmp_path / "b.csv"), "--db", db)
    assert f"warning: sample {a['sample_id']} had its label kept by an earlier review (a reject, `kd labels history " in out.stderr, out.stderr
    assert str(b["sample_id"]) not in out.stderr.split("earlier review")[0]
    said = json.loads(kd("labels", "export", "--run", "b", str(tmp_path / "b.csv"), "--overwrite", "--db", db, "--json").stdout)
    assert len(said["warnings"]) == 1 and f"sample {a['sample_id']} had its label kept" in said["warnings"][0]
    kd("labels", "undo", "--run", "r", "--db", db)  # the review undone: nothing kept any more
    assert "earlier review" not in kd("labels", "export", "--run", "b", str(tmp_path / "b.csv"), "--overwrite", "--db", db).stderr


def test_a_sheet_that_keeps_a_label_by_naming_its_class_is_a_reject_on_record(db, tmp_path):
    """A reviewer kept a label by writing its class (the one the sheet's current cell shows; the
    advice a reject of a changed label gives) rather than reject: the import said "unchanged 1", the
    sample's history showed no decision at all, and a detection in a new run flagging it again had its
    clean relabel what the person had kept, where a reject was left alone."""
    kd("labels", "detect", "--run", "r", "--db", db)
    sheet = tmp_path / "review.csv"
    kd("labels", "export", "--run", "r", str(sheet), "--db", db)
    rows = list(csv.DictReader(io.StringIO(sheet.read_text(encoding="utf-8-sig"))))
    kept = int(rows[0]["sample_id"])
    counts = json.loads(kd("labels", "import", str(_sheet(sheet, [dict(rows[0], decision=rows[0]["current"])])), "--db", db, "--json").stdout)
    assert (counts["reject"], counts["relabel"], counts["unchanged"]) == (1, 0, 0)
    assert {i["sample_id"]: i["status"] for i in _issues(db)}[kept] == "rejected"
    history = json.loads(kd("labels", "history", str(kept), "--db", db, "--json").stdout)
    assert history["edits"] == [] and [r["kept"] for r in history["rejected"]] == [rows[0]["current"]]
    before = _labels(db)
    kd("labels", "detect", "--run", "b", "--teacher-run", "r", "--db", db)  # the same flags, another run
    counts = json.loads(kd("labels", "clean", "--run", "b", "--db", db, "--json").stdout)
    assert counts["skipped_rejected"] == 1
    assert _labels(db)[kept] == before[kept]
    kd("labels", "undo", "--run", "b", "--db", db)
    kd("labels", "undo", "--run", "r", "--db", db)  # the keep reopened, as a reject's undo reopens it
    assert {i["sample_id"]: i["status"] for i in _issues(db)}[kept] == "open"


def test_an_accept_of_a_suggestion_the_sample_already_has_is_not_told_as_a_reject(db, tmp_path):
    """Relabeled by hand to the suggestion before the review, a row the reviewer accepted keeps that label
    (on record as a reject, so a new detection's clean leaves it alone); `kd labels history` said
    "reject, label neg kept (r/detect suggested neg, ...)": the reviewer's accept read as a refusal of itself."""
    kd("labels", "detect", "--run", "r", "--db", db)
    a = _issues(db)[0]
    kd("labels", "set", "--run", "h", f"{a['sample_id']}={a['suggested']}", "--db", db)
    sheet = tmp_path / "review.csv"
    kd("labels", "export", "--run", "r", str(sheet), "--db", db)
    rows = list(csv.DictReader(io.StringIO(sheet.read_text(encoding="utf-8-sig"))))
    row = next(r for r in rows if int(r["sample_id"]) == a["sample_id"])
    assert row["current"] == row["suggested"] == a["suggested"]
    kd("labels", "import", str(_sheet(sheet, [dict(row, decision="accept")])), "--db", db)
    history = json.loads(kd("labels", "history", str(a["sample_id"]), "--db", db, "--json").stdout)
    assert [(r["kept"], r["suggested"], r["accepted"]) for r in history["rejected"]] == [(a["suggested"], a["suggested"], True)]
    shown = kd("labels", "history", str(a["sample_id"]), "--db", db).stdout
    assert f" r/review by tester: accept, label {a['suggested']} already set (r/detect suggested {a['suggested']}, issue " in shown, shown
    assert "reject" not in shown, shown


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_reviewers_comment_column_is_kept_with_each_decision(db, tmp_path, suffix):
    """A sheet's `comment` (or note, 备注) column, where a reviewer says why: it was ignored, the audit
    trail holding only "review sheet PATH". Now each edit's reason, and a reject's, carries it."""
    kd("labels", "detect", "--run", "r", "--db", db)
    a, b, c = _issues(db)[:3]
    rows = [{"sample_id": a["sample_id"], "decision": "accept", "Comment": "明显是差评\n看第二句"},
            {"sample_id": b["sample_id"], "decision": "reject", "Comment": "原标签没错"},
            {"sample_id": c["sample_id"], "decision": "drop", "Comment": ""}]
    sheet = _sheet(tmp_path / f"review{suffix}", rows)
    kd("labels", "import", "--run", "r", str(sheet), "--db", db)
    where = f"review sheet {sheet.resolve()}"
    said = {i["sample_id"]: json.loads(kd("labels", "history", str(i["sample_id"]), "--db", db, "--json").stdout) for i in (a, b, c)}
    assert [e["reason"] for e in said[a["sample_id"]]["edits"]] == [f"{where}: 明显是差评 看第二句"]  # (one line)
    assert [r["reason"] for r in said[b["sample_id"]]["rejected"]] == [f"{where}: 原标签没错"]
    assert [e["reason"] for e in said[c["sample_id"]]["edits"]] == [where]  # no comment: the sheet alone
    shown = kd("labels", "history", str(b["sample_id"]), "--db", db).stdout
    assert f"; {where}: 原标签没错)" in shown


def test_the_audit_trail_says_who_made_each_decision(db, tmp_path, monkeypatch):
    """A label's history said when and why, not who: each stage records who ran it (KD_USER, else the
    login name), and kd labels history, kd runs --json and kd report name them."""
    kd("labels", "detect", "--run", "r", "--db", db)
    a, b = _issues(db)[:2]
    monkeypatch.setenv("KD_USER", "王审核")
    sheet = _sheet(tmp_path / "review.csv", [{"sample_id": a["sample_id"], "decision": "accept"}, {"sample_id": b["sample_id"], "decision": "reject"}])
    kd("labels", "import", "--run", "r", str(sheet), "--db", db)
    monkeypatch.setenv("KD_USER", "bob")
    kd("labels", "set", "--run", "h", f"{a['sample_id']}={a['given']}", "--db", db)
    said = json.loads(kd("labels", "history", str(a["sample_id"]), "--db", db, "--json").stdout)
    assert [(e["stage"], e["by"]) for e in said["edits"]] == [("review", "王审核"), ("edit-1", "bob")]
    assert [r["by"] for r in json.loads(kd("labels", "history", str(b["sample_id"]), "--db", db, "--json").stdout)["rejected"]] == ["王审核"]
    assert " r/review by 王审核: relabel " in kd("labels", "history", str(a["sample_id"]), "--db", db).stdout
    stages = {st["name"]: st for run in json.loads(kd("runs", "--db", db, "--json").stdout) for st in run["stages"]}
    assert stages["review"]["run_by"] == "王审核" and stages["edit-1"]["run_by"] == "bob"
    assert "review (clean) succeeded" in kd("report", "--run", "r", "--db", db).stdout
    assert ", by 王审核\n" in kd("report", "--run", "r", "--db", db).stdout


def test_a_review_that_rejected_an_issue_of_a_relabeled_sample_kept_the_label_it_had_then(db, tmp_path):
    """Another run's clean relabeled the sample before the reviewer rejected its issue: the review kept
    that label, not the one the issue judged: set back to that one by hand, the sample was left alone as a
    label a review kept. It is left alone as one set by hand (the latest a person said), not as kept."""
    kd("labels", "detect", "--run", "r", "--db", db)
    kd("labels", "detect", "--run", "b", "--teacher-run", "r", "--db", db)
    first = _issues(db)[0]
    kd("labels", "clean", "--run", "b", "--db", db)  # first's label now the suggested one
    kd("labels", "import", str(_sheet(tmp_path / "review.csv", [{"sample_id": first["sample_id"], "decision": "reject"}])), "--run", "r", "--db", db)
    kd("labels", "set", "--run", "h", f"{first['sample_id']}={first['given']}", "--db", db)  # the label the review did not keep
    kd("labels", "detect", "--run", "c", "--teacher-run", "r", "--db", db)
    assert {i["sample_id"] for i in _issues(db, "c")} >= {first["sample_id"]}
    preview = {c["sample_id"]: c for c in json.loads(kd("labels", "clean", "--run", "c", "--dry-run", "--db", db, "--json").stdout)["changes"]}
    assert preview[first["sample_id"]]["effect"] == "set"
    counts = json.loads(kd("labels", "clean", "--run", "c", "--db", db, "--json").stdout)
    assert (counts["skipped_rejected"], counts["skipped_set"]) == (0, 1)
    store = _open(db)
    names = store.class_names()
    assert names[_labels(db)[first["sample_id"]]] == first["given"]
    with store.session() as s:  # the review kept the suggested label, not the given one
        assert lab.kept_in_review(s, {first["sample_id"]: names.index(first["given"])}) == set()
        assert lab.kept_in_review(s, {first["sample_id"]: names.index(first["suggested"])}) == {first["sample_id"]}
    store.close()

def test_a_relabel_clean_flags_an_issue_whose_suggestion_is_its_label(db, tmp_path):
    """An issue suggested its own given label (a low-confidence flag, an ensemble still siding with
    the label): relabel "applied" it unchanged, and it left every later review sheet unjudged."""
    from sqlalchemy import update

    kd("labels", "detect", "--run", "r", "--db", db)
    first, *rest = _issues(db)
    store = _open(db)
    with store.engine.begin() as conn:
        conn.execute(update(LabelIssue).where(LabelIssue.id == first["issue_id"]).values(suggested_label_id=LabelIssue.given_label_id))
    store.close()
    before = _labels(db)
    preview = {c["sample_id"]: c for c in json.loads(kd("labels", "clean", "--run", "r", "--dry-run", "--db", db, "--json").stdout)["changes"]}
    assert (preview[first["sample_id"]]["action"], preview[first["sample_id"]]["effect"]) == ("flag", "change")
    plain = kd("labels", "clean", "--run", "r", "--dry-run", "--top", "0", "--db", db).stdout  # (it said "N changes", the flag among them)
    assert re.search(rf"^{len(rest)} changes, 1 flagged \(its suggestion is the label it has\), 0 unchanged", plain, re.M), plain
    row = next(line for line in plain.splitlines() if re.match(rf"\W*{first['sample_id']}\W", line))
    assert " flag " in row and " change " not in row, row
    counts = json.loads(kd("labels", "clean", "--run", "r", "--db", db, "--json").stdout)
    assert counts["flag"] == 1 and counts["relabel"] == len(rest)
    after = _labels(db)
    assert after[first["sample_id"]] == before[first["sample_id"]]
    status = {i["issue_id"]: i["status"] for i in _issues(db)}
    assert status[first["issue_id"]] == "flagged" and {status[i["issue_id"]] for i in rest} == {"applied"}
    kd("labels", "export", "--run", "r", str(tmp_path / "left.csv"), "--db", db)  # still there for a person
    assert [int(r["issue_id"]) for r in csv.DictReader((tmp_path / "left.csv").open(encoding="utf-8-sig"))] == [first["issue_id"]]


def test_flagged_issues_stay_decidable_and_undo_respects_later_decisions(db, tmp_path):
    """--action flag marks issues for a person and changes no label: a later relabel still decides
    them. Another run's clean leaves the samples that clean relabeled alone, and an undo is refused
    while a later stage judged those samples as they stand (a reviewer's rejection), not only when
    it edited them."""
    kd("labels", "detect", "--run", "r", "--db", db)
    kd("labels", "detect", "--run", "b", "--teacher-run", "r", "--db", db)  # the same flags, another run
    kd("labels", "clean", "--run", "r", "--action", "flag", "--name", "fl", "--db", db)
    assert {i["status"] for i in json.loads(kd("labels", "show", "--run", "r", "--top", "0", "--db", db, "--json").stdout)} == {"flagged"}
    relabeled = json.loads(kd("labels", "clean", "--run", "r", "--name", "cl", "--db", db, "--json").stdout)
    assert relabeled["relabel"] > 0
    again = kd("labels", "clean", "--run", "r", "--name", "cl", "--db", db, ok=False).output
    assert "name this one with --name" in again  # --overwrite would need an undo first
    other = json.loads(kd("labels", "clean", "--run", "b", "--db", db, "--json").stdout)
    assert other["skipped_edited"] == relabeled["relabel"] and other["relabel"] == 0
    sheet = tmp_path / "b.csv"
    kd("labels", "export", "--run", "b", str(sheet), "--db", db)
    rows = list(csv.DictReader(sheet.open(encoding="utf-8-sig")))
    rows[0]["decision"] = "reject"  # a reviewer finds r's new label right
    _sheet(tmp_path / "decided.csv", rows)
    kd("labels", "import", str(tmp_path / "decided.csv"), "--db", db)
    refused = kd("labels", "undo", "--run", "r", "--stage", "cl", "--db", db, ok=False).output
    assert "later edits or decisions touched samples" in refused and "b/review" in refused
    undone = kd("labels", "undo", "--run", "b", "--stage", "review", "--db", db).output
    assert "stage review: reverted 0 label edits, reopened 1 issue\n" in undone  # (it said "1 issues")
    assert json.loads(kd("labels", "undo", "--run", "r", "--stage", "cl", "--db", db, "--json").stdout)["reverted"] == relabeled["relabel"]


def test_flags_change_no_label_and_an_undo_gives_them_back(db):
    """Flagging twice adds nothing (the first flag stands); a relabel that re-decided flagged issues,
    undone, leaves them flagged again, not open; a flag is never a later edit an undo must wait for."""
    kd("labels", "detect", "--run", "r", "--db", db)
    first = json.loads(kd("labels", "clean", "--run", "r", "--action", "flag", "--name", "fl", "--db", db, "--json").stdout)
    edits = _count(db, LabelEdit)
    twice = json.loads(kd("labels", "clean", "--run", "r", "--action", "flag", "--name", "fl2", "--db", db, "--json").stdout)
    assert twice["flag"] == 0 and twice["unchanged"] == first["flag"] and _count(db, LabelEdit) == edits
    kd("labels", "clean", "--run", "r", "--name", "cl", "--db", db)
    kd("labels", "undo", "--run", "r", "--stage", "cl", "--db", db)
    assert {i["status"] for i in _issues(db)} == {"flagged"}  # as the flag stage left them
    kd("labels", "detect", "--run", "b", "--teacher-run", "r", "--db", db)
    kd("labels", "clean", "--run", "r", "--name", "cl2", "--db", db)
    kd("labels", "clean", "--run", "b", "--action", "flag", "--db", db)  # another run's flags: no conflict
    kd("labels", "undo", "--run", "r", "--stage", "cl2", "--db", db)
    kd("labels", "undo", "--run", "r", "--stage", "fl", "--db", db)
    assert {i["status"] for i in _issues(db)} == {"open"}


def test_a_flag_clean_that_stands_is_refused_for_its_flags_not_label_edits(db, error_line):
    """A flag clean's --overwrite, its kd runs delete and its detection's --overwrite were refused for
    "N label edits that are not undone" (or "whose N label edits stand"): a flag changes no label."""
    kd("labels", "detect", "--run", "r", "--db", db)
    flagged = json.loads(kd("labels", "clean", "--run", "r", "--action", "flag", "--db", db, "--json").stdout)["flag"]
    assert flagged > 1
    stands = f"stage 'clean' of run 'r' has {flagged} flags that are not undone: run `kd labels undo --run r --stage clean` first"
    assert error_line(kd("labels", "clean", "--run", "r", "--action", "flag", "--overwrite", "--db", db, ok=False)) == f"Error: {stands}"
    assert error_line(kd("runs", "delete", "--run", "r", "--stage", "clean", "--yes", "--db", db, ok=False)) == f"Error: {stands}"
    detect = error_line(kd("labels", "detect", "--run", "r", "--overwrite", "--db", db, ok=False))
    assert f"decided by stage 'clean', whose {flagged} flags stand: run `kd labels undo --run r --stage clean` first" in detect
    assert "label edit" not in detect


def test_a_clean_over_a_standing_flag_clean_names_its_flags(db, error_line):
    """A second `kd labels clean` over a flag clean was told "its N edits stand": a flag changes no label,
    as the refusals of its --overwrite and its kd runs delete say."""
    kd("labels", "detect", "--run", "r", "--db", db)
    flagged = json.loads(kd("labels", "clean", "--run", "r", "--action", "flag", "--db", db, "--json").stdout)["flag"]
    line = error_line(kd("labels", "clean", "--run", "r", "--db", db, ok=False))
    assert f"name this one with --name (its {flagged} flags stand; --overwrite would need " in line


def test_a_score_shown_typed_as_min_score_keeps_its_row(db):
    """The tables show scores with 3 decimals: 0.8499 read 0.850, and `clean --min-score 0.85`, the
    figure the user read, left that issue out. A score shown is cut, never rounded up."""
    kd("labels", "detect", "--run", "r", "--db", db)
    first = _issues(db)[0]
    store = _open(db)
    with store.engine.begin() as conn:
        conn.execute(update(LabelIssue).where(LabelIssue.id == first["issue_id"]).values(score=0.8499))
    store.close()
    shown = kd("labels", "show", "--run", "r", "--top", "0", "--db", db).stdout
    dry = kd("labels", "clean", "--run", "r", "--dry-run", "--min-score", "0.849", "--db", db).stdout
    assert "0.849" in shown and "0.850" not in shown and "0.849" in dry and "0.850" not in dry
    planned = json.loads(kd("labels", "clean", "--run", "r", "--dry-run", "--min-score", "0.849", "--db", db, "--json").stdout)
    assert first["sample_id"] in {c["sample_id"] for c in planned["changes"]}


def test_show_at_80_columns_keeps_every_method_name(db, monkeypatch):
    """In an 80-column terminal the methods column read "cleanlab,dis…": one word to rich, cut, not wrapped."""
    kd("labels", "detect", "--run", "r", "--db", db)
    both = [i for i in _issues(db) if "," in i["methods"]]
    assert both, _issues(db)
    monkeypatch.setenv("COLUMNS", "80")
    shown = kd("labels", "show", "--run", "r", "--top", "0", "--db", db).stdout
    assert max(len(line) for line in shown.splitlines()) <= 80
    assert "…" not in "".join(line.split("│")[5] for line in shown.splitlines() if line.count("│") > 6)
    for name in both[0]["methods"].split(","):
        assert name in shown


def test_show_and_dry_run_at_80_columns_keep_long_class_names_whole(db, monkeypatch):
    """A 10-topic news task's class '体育赛事与运动员新闻报道' read "体育赛事与…" in the given column of
    `kd labels show` in an 80-column terminal: cut, so two classes of one prefix read alike."""
    kd("labels", "detect", "--run", "r", "--db", db)
    long = {"pos": "体育赛事与运动员新闻报道", "neg": "体育赛事与运动员新闻报导"}
    store = _open(db)
    with store.engine.begin() as conn:
        for old, new in long.items():
            conn.execute(update(KdClass).where(KdClass.name == old).values(name=new))
    store.close()
    from rich.cells import cell_len

    monkeypatch.setenv("COLUMNS", "80")
    for args in (["labels", "show"], ["labels", "clean", "--dry-run"]):
        shown = kd(*args, "--run", "r", "--top", "3", "--db", db).stdout
        rows = [line.split("│") for line in shown.splitlines() if line.count("│") > 6]
        assert max(cell_len(line) for line in shown.splitlines() if line[:1] in "┏┃┡│└") <= 80, shown
        for column in (3, 4) if args[1] == "show" else (4, 5):  # given, suggested / label now, new
            cells = "".join(row[column].strip() for row in rows)
            assert "…" not in cells and ("新闻报道" in cells or "新闻报导" in cells), shown


def test_show_top_and_the_sheets_current_label(db, tmp_path):
    kd("labels", "detect", "--run", "r", "--db", db)
    first = _issues(db)[0]
    kd("labels", "set", "--run", "hand", f"{first['sample_id']}=drop", "--db", db)
    sheet = tmp_path / "s.csv"
    kd("labels", "export", "--run", "r", str(sheet), "--db", db)
    rows = {int(r["sample_id"]): r for r in csv.DictReader(sheet.open(encoding="utf-8-sig"))}
    assert rows[first["sample_id"]]["current"] == f"{first['given']} (dropped)"  # what the reviewer decides about now
    listed = {r["id"]: r["dropped"] for r in json.loads(kd("samples", "--dropped", "--limit", "0", "--db", db, "--json").stdout)}
    assert listed[first["sample_id"]] is True and sum(listed.values()) == 1  # --dropped says which are
    never = kd("labels", "show", "--run", "hand", "--db", db, ok=False).output  # a run never detected: what makes a detection
    assert "run 'hand' has no succeeded 'detect' stage (stages: edit-1 (succeeded)): `kd labels detect --run hand` makes one" in never, never
    refused = kd("samples", "--split", "train", "--tsv", "--dropped", "--db", db, ok=False)  # (its lines would not say which)
    assert refused.exit_code == 2 and "leave --dropped out, or list them with --json" in refused.output
    assert "--min-score" in kd("labels", "clean", "--run", "r", "--min-score", "1.5", "--db", db, ok=False).output
    everything = json.loads(kd("labels", "show", "--run", "r", "--top", "0", "--db", db, "--json").stdout)
    assert len(everything) == len(_issues(db)) and len(json.loads(kd("labels", "show", "--run", "r", "--top", "2", "--db", db, "--json").stdout)) == 2
    assert "--top" in kd("labels", "show", "--run", "r", "--top", "-1", "--db", db, ok=False).output


@pytest.mark.on_postgresql
def test_two_cleans_at_once_never_decide_an_issue_twice(db):
    """Each clean plans from the open issues, then applies under the writer lock: the one that comes
    second finds its issues decided meanwhile and changes nothing."""
    from kdstore.runs import stage_scope

    kd("labels", "detect", "--run", "r", "--db", db)
    store = _open(db)
    plan = lab.plan_clean(store, "r", action="drop", min_score=0.0)  # read before the other clean ran
    kd("labels", "clean", "--run", "r", "--name", "ca", "--db", db)
    state, edits = _state(db), _count(db, LabelEdit)
    with pytest.raises(KdError, match="was applied meanwhile by stage 'ca': no label was changed"):
        with stage_scope(store, run="r", kind="clean", name="cb", config={}) as stage:
            lab.apply(store, stage.id, plan, reason="test")
    assert _state(db) == state and _count(db, LabelEdit) == edits
    assert store.find_stage("r", "cb", succeeded=False).status == "failed"


def test_a_clean_planned_before_a_detect_overwrite_parked_its_detection_changes_nothing(tmp_path, error_line):
    """A clean that read its issues just before `kd labels detect --overwrite` parked the detection
    applied them while the new one ran: its edits stood with their issues deleted when the new
    detection succeeded (what --overwrite refuses, checked before those edits existed)."""
    from kdstore.runs import stage_scope

    db = _hand_made_detection(tmp_path / "kd.db", ["甲很好", "乙很好", "丙很好"])
    store = _open(db)
    try:
        plan = lab.plan_clean(store, "r", action="relabel", min_score=0.0)  # read before the detection was parked
        with stage_scope(store, run="r", kind="detect", config={}, overwrite=True):  # the new detection runs
            with pytest.raises(KdError, match="the detection of run 'r' is being replaced"):
                with stage_scope(store, run="r", kind="clean", config={}) as stage:
                    lab.apply(store, stage.id, plan, reason="test", skip_edited=True)
    finally:
        store.close()
    assert _count(db, LabelEdit) == 0 and set(_labels(db).values()) == {0}


@pytest.mark.on_postgresql
def test_export_edit_import_applies_exactly_the_edited_rows(db, tmp_path):
    kd("labels", "detect", "--run", "r", "--db", db)
    sheet = tmp_path / "review.csv"
    kd("labels", "export", "--run", "r", str(sheet), "--db", db)
    rows = list(csv.DictReader(sheet.open(encoding="utf-8")))
    assert len(rows) >= 4 and all(r["decision"] == "" for r in rows)
    before = _labels(db)
    names = _open(db).class_names()
    decisions = {0: "accept", 1: "reject", 2: "drop", 3: rows[3]["given"]}
    for i, d in decisions.items():
        rows[i]["decision"] = d
    _sheet(sheet, rows)
    counts = json.loads(kd("labels", "import", "--run", "r", str(sheet), "--db", db, "--json").stdout)
    # (the class it has, written: kept, a reject on record)
    assert (counts["relabel"], counts["reject"], counts["drop"], counts["unchanged"]) == (1, 2, 1, 0)
    after = _labels(db)
    accepted = int(rows[0]["sample_id"])
    assert after[accepted] == names.index(rows[0]["suggested"])
    assert {i for i in before if before[i] != after[i]} == {accepted}
    store = _open(db)
    assert len(store.samples(ids=[int(rows[2]["sample_id"])])) == 0  # dropped
    assert _count(db, LabelEdit) == 2
    statuses = {i["sample_id"]: i["status"] for i in lab.issues(store, "r")}
    assert statuses[int(rows[1]["sample_id"])] == "rejected" and statuses[accepted] == "applied"
    stage = next(s for s in store.stages_of("r") if s.kind == "clean")  # which sheet, wherever it was typed from
    assert stage.config["sheet"] == str(sheet.resolve()) and stage.config["sheet_sha256"] == hashlib.sha256(sheet.read_bytes()).hexdigest()


@pytest.mark.on_postgresql
def test_import_refuses_bad_sheets_without_changes(db, tmp_path, error_line):
    kd("labels", "detect", "--run", "r", "--db", db)
    before, issues = _labels(db), _issues(db)
    (i1, s1), (i2, s2) = [(i["issue_id"], i["sample_id"]) for i in issues[:2]]
    other = next(c for c in _open(db).class_names() if c != issues[1]["suggested"])  # (a reviewer's retyped suggestion)
    unflagged = next(int(i) for i in _open(db).samples(splits=["train"]).ids if int(i) not in {x["sample_id"] for x in issues})
    dev = int(_open(db).samples(splits=["dev"]).ids[0])
    bad = [  # (sheet, content, run, what the error names)
        ("bad-id.csv", f"sample_id,decision\n{s1},neg\n999999,drop\n", "r", ("line 3", "field 'sample_id'", "no sample 999999")),
        ("unflagged.csv", f"sample_id,decision\n{s1},neg\n{unflagged},drop\n", "r", ("line 3", "field 'sample_id'", f"sample {unflagged} has no issue detected in run 'r'")),
        ("dev.csv", f"sample_id,decision\n{dev},pos\n", "r", ("line 2", "field 'sample_id'", f"sample {dev} has no issue")),
        ("twice.csv", f"sample_id,decision\n{s1},drop\n{s1},reject\n", "r", ("line 3", "field 'sample_id'", f"sample {s1} is decided twice (first on line 2)")),
        ("text.csv", f"sample_id,text,decision\n{s1},另一个商店的文字,drop\n", "r", ("line 2", "field 'text'", f"not the text of sample {s1}", "an empty text cell skips this check")),
        ("empty-id.csv", "sample_id,decision\n,drop\n", "r", ("line 2", "field 'sample_id'", "empty")),
        ("float-id.jsonl", '{"sample_id": 1.5, "decision": "drop"}\n', "r", ("line 1", "field 'sample_id'", "not an id")),
        ("bad-label.jsonl", f'{{"sample_id": {s1}, "decision": "maybe"}}\n', "r", ("line 1", "field 'decision'", "'maybe' is not accept, reject, drop or a class")),
        ("text-issue.csv", f"issue_id,sample_id,decision\nabc,{s1},drop\n", "r", ("line 2", "field 'issue_id'", "not an id")),
        ("other-issue.csv", f"issue_id,sample_id,decision\n{i1},{s1},drop\n{i2},{s1},drop\n", "r", ("line 3", "field 'issue_id'", f"not an issue of sample {s1}")),
        ("other-run.csv", f"issue_id,sample_id,decision\n{i1},{s1},drop\n", "other", ("no run 'other'",)),
        ("bad-run.csv", f"run,issue_id,sample_id,decision\nbad run!,{i1},{s1},drop\n", None, ("no run 'bad run!'",)),
        ("not-object.jsonl", f'{{"sample_id": {s1}, "decision": "drop"}}\n[{s1}, "drop"]\n', "r", ("line 2", "not a JSON object")),
        ("unclosed.csv", f'sample_id,decision,text\n{s1},drop,"a quote never closed\n', "r", ("line 2", "not valid CSV", "unexpected end of data")),
        ("retyped.csv", f"sample_id,suggested,decision\n{s1},,drop\n{s2},{other},\n", "r",
         ("line 3", "field 'suggested'", f"{other!r}, where kd suggested {issues[1]['suggested']!r}", "the decision is empty")),
    ]
    for name, content, run, expected in bad:
        sheet = tmp_path / name
        sheet.write_text(content, encoding="utf-8")
        line = error_line(kd("labels", "import", *(["--run", run] if run else []), str(sheet), "--db", db, ok=False))
        assert str(sheet) in line and all(e in line for e in expected), (name, line)
    assert _labels(db) == before and _count(db, LabelEdit) == 0
    assert {i["status"] for i in _issues(db)} == {"open"}
    store = _open(db)
    assert [s.kind for s in store.stages_of("r")] == ["teach", "detect"] and not store.run_exists("other")
    assert not store.run_exists("bad run!")


def test_a_sheet_of_a_replaced_detection_says_so(db, tmp_path, error_line):
    """A sheet exported before `kd labels detect --overwrite` carries the old detection's issue ids, which went
    with it: its import said only "N is not an issue of sample S", as if the reviewer had mistyped the id. It
    names the replaced detection and the fresh export that lists the issues to decide."""
    kd("labels", "detect", "--run", "r", "--db", db)
    first = _issues(db)[0]
    sheet = _sheet(tmp_path / "review.csv", [{"run": "r", "issue_id": first["issue_id"], "sample_id": first["sample_id"], "decision": "reject"}])
    kd("labels", "detect", "--run", "r", "--overwrite", "--db", db)
    assert first["sample_id"] in {i["sample_id"] for i in _issues(db)}  # (flagged again, under a new issue id)
    line = error_line(kd("labels", "import", str(sheet), "--db", db, ok=False))
    assert f"field 'issue_id': issue {first['issue_id']} is of a detection of run 'r' replaced or deleted since" in line, line
    assert "`kd labels export --run r`" in line, line


def test_a_sheet_imported_again_names_the_import_that_replaces_its_stage(db, tmp_path, error_line):
    """A review sheet edited further and imported again was refused as stale with `kd labels undo` or an
    emptied decision for remedy; the import in place of its own stage, which the user wants, was not said.
    The import it names runs, and the stage then holds the sheet's new decisions."""
    kd("labels", "detect", "--run", "r", "--db", db)
    first, second = _issues(db)[:2]
    rows = [{"run": "r", "issue_id": first["issue_id"], "sample_id": first["sample_id"], "decision": "reject"},
            {"run": "r", "issue_id": second["issue_id"], "sample_id": second["sample_id"], "decision": "reject"}]
    sheet = _sheet(tmp_path / "review.csv", rows)
    kd("labels", "import", str(sheet), "--db", db)
    _sheet(sheet, [rows[0], {**rows[1], "decision": "accept"}])  # (the reviewer changed their mind on one row)
    line = error_line(kd("labels", "import", str(sheet), "--db", db, ok=False))
    assert line.endswith(f"`kd labels undo --run r --stage review` reopens it, `kd labels import --run r {shlex.quote(str(sheet))} "
                         "--overwrite` replaces that stage with this sheet's decisions, or leave the row's decision empty"), line
    again = kd("labels", "import", "--run", "r", str(sheet), "--overwrite", "--db", db, "--json")
    assert json.loads(again.stdout)["stage"] == "review"
    assert {i["sample_id"]: i["status"] for i in _issues(db)}[second["sample_id"]] == "applied"
    kd("labels", "undo", "--run", "r", "--db", db)
    kd("labels", "import", "--run", "r", str(sheet), "--name", "second-look", "--db", db)  # (a stage of another --name: named)
    assert "`kd labels import --run r " + shlex.quote(str(sheet)) + " --name second-look --overwrite`" in error_line(
        kd("labels", "import", str(sheet), "--db", db, ok=False))


def test_a_sheet_imported_again_over_standing_edits_names_the_undo_before_the_overwrite(db, tmp_path, error_line):
    """A review sheet that relabeled or dropped rows, filled in further and imported again, was refused as
    stale with "`kd labels import ... --overwrite` replaces that stage", and that import was then refused in
    turn (the stage's edits stand: undo first). The refusal names the undo first, and the two commands it
    names, run in order, import the sheet in place of its stage."""
    kd("labels", "detect", "--run", "r", "--db", db)
    first, second, third = _issues(db)[:3]
    rows = [{"run": "r", "issue_id": first["issue_id"], "sample_id": first["sample_id"], "decision": "drop"},
            {"run": "r", "issue_id": second["issue_id"], "sample_id": second["sample_id"], "decision": "reject"},
            {"run": "r", "issue_id": third["issue_id"], "sample_id": third["sample_id"], "decision": ""}]
    sheet = _sheet(tmp_path / "review.csv", rows)
    kd("labels", "import", str(sheet), "--db", db)
    _sheet(sheet, [*rows[:2], {**rows[2], "decision": "reject"}])  # (the reviewer went on down the sheet)
    line = error_line(kd("labels", "import", str(sheet), "--db", db, ok=False))
    assert line.endswith(f"`kd labels undo --run r --stage review` reopens it, then `kd labels import --run r {shlex.quote(str(sheet))} "
                         "--overwrite` replaces that stage with this sheet's decisions, or leave the row's decision empty"), line
    kd("labels", "undo", "--run", "r", "--stage", "review", "--db", db)
    again = kd("labels", "import", "--run", "r", str(sheet), "--overwrite", "--db", db, "--json")
    assert json.loads(again.stdout)["stage"] == "review"
    assert [{i["sample_id"]: i["status"] for i in _issues(db)}[r["sample_id"]] for r in rows] == ["applied", "rejected", "rejected"]


def test_a_stale_sheet_is_refused_and_overwrite_keeps_to_its_kind(db, tmp_path, error_line):
    """A sheet's decided issues cannot be decided again (a second import would move their undo to
    the wrong stage); ``--name X --overwrite`` replaces a clean stage only, never the teacher; and a
    detection whose issues a clean decided is not replaced while that clean's edits stand."""
    kd("labels", "detect", "--run", "r", "--db", db)
    first, second = _issues(db)[:2]
    sheet = _sheet(tmp_path / "review.csv", [
        {"run": "r", "issue_id": first["issue_id"], "sample_id": first["sample_id"], "decision": "reject"},
        {"run": "r", "issue_id": second["issue_id"], "sample_id": second["sample_id"], "decision": "drop"}])
    kd("labels", "import", str(sheet), "--db", db)
    state, edits = _state(db), _count(db, LabelEdit)
    line = error_line(kd("labels", "import", str(sheet), "--name", "review2", "--db", db, ok=False))
    assert "line 2" in line and f"issue {first['issue_id']} (sample {first['sample_id']}) was already rejected by stage 'review'" in line
    assert ("`kd labels undo --run r --stage review` reopens it, then `kd labels import --run r " + shlex.quote(str(sheet)) + " --overwrite` "
            "replaces that stage with this sheet's decisions, or leave the row's decision empty") in line  # (its drop stands: the undo first)
    for name in ("teach", "detect"):
        line = error_line(kd("labels", "clean", "--run", "r", "--name", name, "--overwrite", "--db", db, ok=False))
        assert f"the stage name {name!r} is kept for {name} stages: choose another --name" in line
    line = error_line(kd("labels", "clean", "--run", "r", "--name", "distill", "--db", db, ok=False))
    assert "the stage name 'distill' is kept for distill stages" in line
    line = error_line(kd("labels", "detect", "--run", "r", "--overwrite", "--db", db, ok=False))
    assert "were decided by stage 'review', whose 1 label edit stands" in line and "kd labels undo --run r --stage review" in line
    assert _state(db) == state and _count(db, LabelEdit) == edits
    store = _open(db)
    assert [(s.name, s.kind) for s in store.stages_of("r")] == [("teach", "teach"), ("detect", "detect"), ("review", "clean")]
    assert store.read_folds(store.find_stage("r", "teach").id)  # the teacher and its folds stand
    store.close()
    kd("labels", "undo", "--run", "r", "--db", db)
    kd("labels", "detect", "--run", "r", "--overwrite", "--db", db)  # nothing of the old detection stands
    kd("labels", "undo", "--run", "r", "--db", db, ok=False)  # nothing left to undo


def test_a_decided_row_emptied_as_the_stale_sheet_error_says_is_not_refused_for_its_retyped_suggestion(db, tmp_path, error_line):
    """The reviewer retyped a row's suggested class and accepted it; imported, then the same sheet again with
    more rows decided: "already decided ... or leave the row's decision empty". Emptied, the row was refused
    as a retyped suggestion whose decision is empty ("write accept"), which the first error refuses: no way out."""
    kd("labels", "detect", "--run", "r", "--db", db)
    first, second = _issues(db)[:2]
    other = next(c for c in _open(db).class_names() if c != first["suggested"])
    row = {"run": "r", "issue_id": first["issue_id"], "sample_id": first["sample_id"], "suggested": other, "decision": "accept"}
    kd("labels", "import", str(_sheet(tmp_path / "review.csv", [row])), "--db", db)
    more = {"run": "r", "issue_id": second["issue_id"], "sample_id": second["sample_id"], "suggested": second["suggested"], "decision": "drop"}
    line = error_line(kd("labels", "import", str(_sheet(tmp_path / "review.csv", [row, more])), "--db", db, ok=False))
    assert "or leave the row's decision empty" in line
    out = json.loads(kd("labels", "import", str(_sheet(tmp_path / "review.csv", [{**row, "decision": ""}, more])), "--db", db, "--json").stdout)
    assert (out["stage"], out["drop"]) == ("review-2", 1)


def test_a_second_sheet_without_a_name_is_its_own_stage(db, tmp_path):
    """The reviewer's second batch: `kd labels import` without --name records review, then
    review-2 (it failed with "choose another --name"); undo takes the last one first."""
    kd("labels", "detect", "--run", "r", "--db", db)
    first, second = _issues(db)[:2]
    said = kd("labels", "import", str(_sheet(tmp_path / "a.csv", [
        {"run": "r", "issue_id": first["issue_id"], "sample_id": first["sample_id"], "decision": "drop"}])), "--db", db).output
    assert "run r, stage review: 1 dropped\n" in said and "flag" not in said  # the counts that are not 0
    out = json.loads(kd("labels", "import", str(_sheet(tmp_path / "b.csv", [
        {"run": "r", "issue_id": second["issue_id"], "sample_id": second["sample_id"], "decision": "drop"}])), "--db", db, "--json").stdout)
    assert (out["stage"], out["drop"]) == ("review-2", 1)
    store = _open(db)
    assert [s.name for s in store.stages_of("r") if s.kind == "clean"] == ["review", "review-2"]
    store.close()
    # a new detection waits for both undone: both named at once, the last one first (each retry named the next)
    line = kd("labels", "detect", "--run", "r", "--overwrite", "--db", db, ok=False).stderr
    assert "were decided by stage 'review-2', whose 1 label edit stands: run `kd labels undo --run r --stage review-2` first " \
           "(then stage 'review' likewise), or detect again" in line, line
    assert json.loads(kd("labels", "undo", "--run", "r", "--db", db, "--json").stdout)["stage"] == "review-2"
    third = _issues(db)[2]
    unnamed = kd("labels", "import", str(_sheet(tmp_path / "c.csv", [{"sample_id": third["sample_id"], "decision": "drop"}])),
                 "--db", db, ok=False)  # its run column deleted: taken for the run "default", which has no detection
    assert "no run 'default'" in unnamed.stderr and "(the sheet names no run, so it was taken for 'default': pass --run)" in unnamed.stderr


def test_a_review_replaced_by_overwrite_leaves_the_issues_it_no_longer_decides_open(db, tmp_path):
    kd("labels", "detect", "--run", "r", "--db", db)
    three = _issues(db)[:3]
    rows = [{"run": "r", "issue_id": i["issue_id"], "sample_id": i["sample_id"], "decision": "reject"} for i in three]
    kd("labels", "import", str(_sheet(tmp_path / "a.csv", rows)), "--db", db)
    assert [i["status"] for i in _issues(db)[:3]] == ["rejected"] * 3
    # the replacement decides the first issue again (it was decided by the stage it replaces) and no other
    kd("labels", "import", str(_sheet(tmp_path / "b.csv", [dict(rows[0], decision="drop")])), "--overwrite", "--db", db)
    after = {i["issue_id"]: i["status"] for i in _issues(db)}
    assert [after[i["issue_id"]] for i in three] == ["applied", "open", "open"]
    exported = tmp_path / "again.csv"
    kd("labels", "export", "--run", "r", str(exported), "--db", db)
    assert {int(r["issue_id"]) for r in csv.DictReader(exported.open(encoding="utf-8-sig"))} >= {three[1]["issue_id"], three[2]["issue_id"]}
    assert json.loads(kd("labels", "undo", "--run", "r", "--db", db, "--json").stdout) == {"run": "r", "stage": "review", "reverted": 1, "flags": 0, "reopened": 1, "trained_on_it": [], "detected_on_it": [], "set_since": [], "warnings": []}
    assert {i["status"] for i in _issues(db)} == {"open"}


@pytest.mark.on_postgresql
def test_a_failed_overwrite_of_a_review_gives_the_old_one_back_with_its_decisions(db, tmp_path, monkeypatch):
    """`kd labels import --overwrite` that decides the old review's issues again and then fails (its
    metrics write, Ctrl-C, kill -9): its own edits go, and the issues the old review decided are the
    old review's again, as decided (they were left open: the review given back had lost its rejections)."""
    kd("labels", "detect", "--run", "r", "--db", db)
    three = _issues(db)[:3]
    rows = [{"run": "r", "issue_id": i["issue_id"], "sample_id": i["sample_id"], "decision": "reject"} for i in three]
    kd("labels", "import", str(_sheet(tmp_path / "a.csv", rows)), "--db", db)
    before, issues = _state(db), _issues(db)
    again = [dict(rows[0], decision="drop"), rows[1]]
    with monkeypatch.context() as m:
        _metrics_write_fails(m)
        kd("labels", "import", str(_sheet(tmp_path / "b.csv", again)), "--overwrite", "--db", db, ok=False)
    assert _state(db) == before and _issues(db) == issues and [i["status"] for i in issues[:3]] == ["rejected"] * 3
    review = _read(db, select(Stage.id, Stage.status).where(Stage.name == "review"))
    assert [r.status for r in review] == ["succeeded"]
    assert {r.decided_stage_id for r in _read(db, select(LabelIssue.decided_stage_id).where(
        LabelIssue.id.in_([i["issue_id"] for i in three])))} == {review[0].id}
    kd("labels", "import", str(_sheet(tmp_path / "c.csv", again)), "--overwrite", "--db", db)  # and it may be replaced
    assert [i["status"] for i in _issues(db)[:3]] == ["applied", "rejected", "open"]


def test_jsonl_export_edit_import_round_trip_with_another_class(db, tmp_path):
    kd("labels", "detect", "--run", "r", "--db", db)
    _add_class_mid(db, tmp_path)
    names = _open(db).class_names()
    assert names[-1] == "mid"
    sheet = tmp_path / "review.jsonl"
    store = _open(db)
    with store.engine.begin() as conn:  # a text with a Unicode line separator (ingest keeps it): still one line of the sheet
        conn.execute(update(Sample).where(Sample.id == _issues(db)[0]["sample_id"]).values(text=Sample.text + "\u2028第二行\x85"))
    store.close()
    kd("labels", "export", "--run", "r", str(sheet), "--db", db)
    rows = [json.loads(line) for line in sheet.read_text(encoding="utf-8").splitlines()]
    assert len(rows) >= 4 and all(r["decision"] == "" and isinstance(r["issue_id"], int) for r in rows)
    assert rows[0]["text"].endswith("\u2028第二行\x85")
    for r, decision in zip(rows, ("mid", "accept", "reject", "drop")):
        r["decision"] = decision
    before = _state(db)
    counts = json.loads(kd("labels", "import", "--run", "r", str(_sheet(sheet, rows)), "--db", db, "--json").stdout)
    assert (counts["relabel"], counts["reject"], counts["drop"], counts["unchanged"]) == (2, 1, 1, 0)
    after = _state(db)
    ids = [r["sample_id"] for r in rows[:4]]
    assert after[ids[0]][0] == names.index("mid") != before[ids[0]][0]  # neither given nor suggested
    assert after[ids[1]][0] == names.index(rows[1]["suggested"]) != before[ids[1]][0]
    assert after[ids[2]] == before[ids[2]] and after[ids[3]][1] is True
    assert {i for i in before if before[i] != after[i]} == {ids[0], ids[1], ids[3]}
    statuses = {i["sample_id"]: i["status"] for i in _issues(db)}
    assert [statuses[i] for i in ids] == ["applied", "applied", "rejected", "applied"]
    assert json.loads(kd("labels", "undo", "--run", "r", "--db", db, "--json").stdout)["reverted"] == 3
    assert _state(db) == before


@pytest.mark.parametrize("suffix", [".ndjson", ".json"])
def test_a_sheet_named_as_kd_ingest_reads_json_lines_is_json_lines(db, tmp_path, suffix):
    """``review.ndjson`` (as ``kd ingest`` reads the name: JSON lines) is written and read as JSON lines,
    not as a CSV under a JSON name."""
    kd("labels", "detect", "--run", "r", "--db", db)
    sheet = tmp_path / f"review{suffix}"
    kd("labels", "export", "--run", "r", str(sheet), "--db", db)
    rows = [json.loads(line) for line in sheet.read_text(encoding="utf-8").splitlines()]
    assert rows and all(r["decision"] == "" and isinstance(r["issue_id"], int) for r in rows)
    rows[0]["decision"] = "reject"
    sheet.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    counts = json.loads(kd("labels", "import", str(sheet), "--db", db, "--json").stdout)
    assert counts["reject"] == 1 and {i["issue_id"]: i["status"] for i in _issues(db)}[rows[0]["issue_id"]] == "rejected"


def test_detect_refuses_a_single_train_class_and_a_changed_class_set(db, tmp_path, error_line, noisy):
    ones = _read(db, select(Sample.id).where(Sample.split == "train", Sample.label_id == 1))
    edit_labels(db, "r", "review", {i: "drop" for (i,) in ones})
    line = error_line(kd("labels", "detect", "--run", "r", "--db", db, ok=False))
    assert "single class" in line and _count(db, LabelIssue) == 0
    kd("labels", "undo", "--run", "r", "--db", db)
    _add_class_mid(db, tmp_path)
    before = _state(db)
    line = error_line(kd("labels", "detect", "--run", "r", "--db", db, ok=False))
    assert "the classes changed since the teacher of run 'r' ran" in line, line
    # the command it names is one kd teach takes: "`kd teach --run r --overwrite`" left out --model (required)
    # and --folds (a detection needs the out-of-fold teacher it had)
    assert f"`kd teach --run r --model {shlex.quote(str(noisy['model']))} --folds 3 --overwrite`" in line, line
    assert _count(db, LabelIssue) == 0 and _state(db) == before


@pytest.mark.on_postgresql
def test_drop_and_flag_cleans_undo_exactly(db):
    kd("labels", "detect", "--run", "r", "--db", db)
    before, flagged = _state(db), {i["sample_id"] for i in _issues(db)}
    counts = json.loads(kd("labels", "clean", "--run", "r", "--action", "drop", "--db", db, "--json").stdout)
    after = _state(db)
    assert counts["drop"] == len(flagged) == _count(db, LabelEdit)
    assert {i for i in before if before[i] != after[i]} == flagged and all(after[i][1] for i in flagged)
    store = _open(db)
    with store.engine.begin() as conn:  # as an edit recorded before kd kept the dropped flag (migration 0004)
        conn.execute(update(LabelEdit).where(LabelEdit.sample_id == min(flagged)).values(old_dropped=None, new_dropped=None))
    kd("labels", "undo", "--run", "r", "--db", db)
    assert _state(db) == before and {i["status"] for i in _issues(db)} == {"open"}
    counts = json.loads(kd("labels", "clean", "--run", "r", "--action", "flag", "--name", "flag", "--db", db, "--json").stdout)
    assert counts["flag"] == len(flagged) and _state(db) == before
    assert {i["status"] for i in _issues(db)} == {"flagged"}
    assert json.loads(kd("labels", "undo", "--run", "r", "--stage", "flag", "--db", db, "--json").stdout)["reverted"] == len(flagged)
    assert _state(db) == before and {i["status"] for i in _issues(db)} == {"open"}


def test_undo_restores_the_dropped_flag_exactly(db, tmp_path):
    a, b, c = _open(db).samples(splits=["train"]).ids[:3].tolist()
    names = _open(db).class_names()
    start = _state(db)
    other = names[1 - start[b][0]]
    edit_labels(db, "r", "first", {b: "drop", c: "drop"})
    first = _state(db)
    assert first[b][1] and first[c][1]
    edit_labels(db, "r", "second", {a: "drop", b: other, c: "drop"})
    second = _state(db)
    assert second[a][1] and second[b] == (names.index(other), False, start[b][2]) and second[c][1]
    history = json.loads(kd("labels", "history", str(b), "--db", db, "--json").stdout)["edits"]
    assert [(e["run"], e["stage"], e["action"], e["old_dropped"], e["new_dropped"]) for e in history] == [
        ("r", "first", "drop", False, True), ("r", "second", "relabel", True, False)]
    assert ", no longer dropped" in kd("labels", "history", str(b), "--db", db).stdout
    kd("labels", "undo", "--run", "r", "--stage", "second", "--db", db)
    assert _state(db) == first  # b dropped again with its old label; c, dropped before, still dropped
    kd("labels", "undo", "--run", "r", "--stage", "first", "--db", db)
    assert _state(db) == start  # samples.orig_label_id included: never touched


def test_overwrite_refuses_a_stage_whose_edits_stand(db, tmp_path, error_line):
    kd("labels", "detect", "--run", "r", "--db", db)
    before = _state(db)
    kd("labels", "clean", "--run", "r", "--db", db)
    cleaned, edits = _state(db), _count(db, LabelEdit)
    stage = _open(db).find_stage("r", "clean")
    line = error_line(kd("labels", "clean", "--run", "r", "--overwrite", "--db", db, ok=False))
    assert f"{edits} label edits that are not undone" in line and "`kd labels undo --run r --stage clean` first" in line
    assert _state(db) == cleaned and _count(db, LabelEdit) == edits and _open(db).find_stage("r", "clean").id == stage.id
    kd("labels", "undo", "--run", "r", "--db", db)
    assert _state(db) == before
    first = _issues(db)[0]
    sheet = _sheet(tmp_path / "review.csv", [{"sample_id": first["sample_id"], "decision": "drop"}])
    kd("labels", "import", "--run", "r", str(sheet), "--db", db)
    line = error_line(kd("labels", "import", "--run", "r", str(sheet), "--overwrite", "--db", db, ok=False))
    assert "--stage review` first" in line
    kd("labels", "undo", "--run", "r", "--stage", "review", "--db", db)
    kd("labels", "import", "--run", "r", str(sheet), "--overwrite", "--db", db)  # undone: may be replaced
    kd("labels", "undo", "--run", "r", "--stage", "review", "--db", db)
    assert _state(db) == before
    kd("labels", "clean", "--run", "r", "--overwrite", "--db", db)
    assert _state(db) == cleaned and lab.labels_version(_open(db)) == "r/clean"
    kd("labels", "undo", "--run", "r", "--db", db)
    assert _state(db) == before


def test_undo_refuses_when_a_later_edit_lost_its_stage(db, tmp_path):
    """A later edit whose stage is gone (a store an older kd's --overwrite orphaned) still blocks."""
    kd("labels", "detect", "--run", "r", "--db", db)
    kd("labels", "clean", "--run", "r", "--db", db)
    touched = _issues(db)[0]["sample_id"]
    edit_labels(db, "later", "review", {touched: "drop"})
    store = _open(db)
    with store.engine.begin() as conn:
        conn.execute(delete(Stage).where(Stage.id == store.find_stage("later", "review").id))
    assert _read(db, select(LabelEdit.stage_id).where(LabelEdit.sample_id == touched, LabelEdit.action == "drop")) == [(None,)]
    cleaned = _state(db)
    refused = kd("labels", "undo", "--run", "r", "--db", db, ok=False)
    assert f"touched samples {touched}" in refused.output and _state(db) == cleaned


@pytest.mark.on_postgresql
def test_undo_refuses_when_a_later_edit_touched_the_same_samples(db, tmp_path):
    kd("labels", "detect", "--run", "r", "--db", db)
    kd("labels", "clean", "--run", "r", "--db", db)
    touched = _open(db).samples(ids=[i["sample_id"] for i in lab.issues(_open(db), "r")]).ids[0]
    edit_labels(db, "later", "review", {int(touched): "drop"})
    refused = kd("labels", "undo", "--run", "r", "--db", db, ok=False)
    assert f"touched samples {touched}" in refused.output and "(stage later/review)" in refused.output
    kd("labels", "undo", "--run", "later", "--db", db)
    kd("labels", "undo", "--run", "r", "--db", db)


def test_tfidf_member_shows_a_bar_over_its_folds(monkeypatch, capsys):
    """`kd labels detect --tfidf-member` fits five TF-IDF models over every train text: about a minute
    for 20,000 short texts on 2 cores, minutes for 200,000, with nothing on standard error meanwhile."""
    import random

    from kdstore.tfidf import oof_probs

    monkeypatch.delenv("KD_NO_PROGRESS")
    rng = random.Random(0)
    texts = ["".join(rng.choice("好很差的了书酒店服务") for _ in range(4)) + str(i) for i in range(5000)]
    labels = np.array([i % 2 for i in range(5000)])
    probs = oof_probs(texts, labels, num_classes=2, folds=2, seed=11)
    assert probs.shape == (5000, 2)
    captured = capsys.readouterr()
    assert "tf-idf folds" in captured.err and "2/2" in captured.err and captured.out == ""


def test_tfidf_member_oof_probabilities_and_detect(db):
    from kdstore.tfidf import oof_probs

    store = _open(db)
    train = store.samples(splits=["train"], labeled=True)
    probs = oof_probs(train.texts, train.labels, num_classes=2, folds=3)
    assert probs.shape == (len(train), 2) and abs(probs.sum(1) - 1).max() < 1e-9
    assert ((probs.argmax(1) == train.labels).mean()) > 0.6  # the marker words are learnable
    from kdstore import tfidf  # the same texts and labels again (another detector): from the cache, equal
    again = oof_probs(train.texts, train.labels, num_classes=2, folds=3)
    assert np.array_equal(again, probs) and len(tfidf._CACHE) >= 1
    flipped = train.labels.copy()
    flipped[0] = 1 - flipped[0]
    assert not np.array_equal(oof_probs(train.texts, flipped, num_classes=2, folds=3), probs)  # other labels: fitted anew
    out = json.loads(kd("labels", "detect", "--run", "r", "--tfidf-member", "--method", "cleanlab,disagree,ensemble", "--db", db, "--json").stdout)
    assert out["flagged"] > 0
    methods = {m for i in _issues(db) for m in i["methods"].split(",")}
    assert "ensemble" in methods and methods <= {"cleanlab", "disagree", "ensemble"}


def test_student_votes_refuse_a_student_without_logits_for_every_train_sample(db, tmp_path, error_line):
    kd("distill", "--run", "r", "--epochs", "1", "--embed-dim", "8", "--num-filters", "4", "--max-len", "32", "--db", db)
    kd("ingest", str(write_tsv(tmp_path / "late.tsv", [("pos", "后来才来的一条很好")])), "--db", db)
    kd("teach", "--run", "r", "--logits-only", "--db", db)
    refused = kd("labels", "detect", "--run", "r", "--student-votes", "distill-textcnn", "--allow-in-sample", "--db", db, ok=False)
    line = error_line(refused)
    assert "1 train samples have no logits from distill stage 'distill-textcnn' of run 'r'" in line
    assert _count(db, LabelIssue) == 0


def test_a_filter_by_that_changes_no_flag_beside_the_disagree_method_is_warned_of(db):
    """--filter-by prune_by_class (the per-class filter a user of imbalanced classes reaches for) with the
    default --combine ranked and --method cleanlab,disagree flagged exactly what the default did: every
    label cleanlab's prune filters flag is a disagreement too, so only the methods column changed, in silence."""
    kd("labels", "detect", "--run", "r", "--db", db)
    default = {i["sample_id"] for i in _issues(db)}
    for combine, filter_by in (("ranked", "prune_by_class"), ("union", "confident_learning")):
        out = kd("labels", "detect", "--run", "r", "--filter-by", filter_by, "--combine", combine, "--overwrite",
                 "--db", db, "--json")
        said = [w for w in json.loads(out.stdout)["warnings"] if w.startswith("--filter-by")]
        assert said == [f"--filter-by {filter_by} changes no flag with --combine {combine} and the disagree method: every "
                        "label cleanlab flags with it is a disagreement too (only the methods column changes); "
                        "--combine intersection or majority, or --method cleanlab, applies it"], combine
        assert f"warning: {said[0]}" in out.stderr
        if combine == "ranked":
            assert {i["sample_id"] for i in _issues(db)} == default
    # where it does change the flags: no such warning
    for args in (["--combine", "intersection"], ["--method", "cleanlab"]):
        out = kd("labels", "detect", "--run", "r", "--filter-by", "both", *args, "--overwrite", "--db", db, "--json")
        assert not any(w.startswith("--filter-by") for w in json.loads(out.stdout)["warnings"]), args


def test_a_refused_detect_writes_nothing_and_keeps_the_last_detection(db, noisy, tmp_path, error_line):
    kd("labels", "detect", "--run", "r", "--db", db)
    found = _issues(db)
    store = _open(db)
    stages = [(s.id, s.name, s.status) for s in store.stages_of("r")]
    refused = kd("labels", "detect", "--run", "nowhere", "--db", db, ok=False)
    assert "no run 'nowhere'" in error_line(refused) and not store.run_exists("nowhere")
    bogus = kd("labels", "detect", "--run", "r", "--filter-by", "bogus", "--overwrite", "--db", db, ok=False)
    assert "--filter-by" in bogus.output
    lonely = kd("labels", "detect", "--run", "r", "--method", "ensemble", "--overwrite", "--db", db, ok=False)
    assert "--student-votes STAGE or --tfidf-member" in error_line(lonely)
    _add_class_mid(db, tmp_path)
    changed = kd("labels", "detect", "--run", "r", "--overwrite", "--db", db, ok=False)
    assert "the classes changed" in error_line(changed)
    # kd teach --logits-only's refusal names the kd teach that runs (it said `kd teach --run r --overwrite`, refused for want of --model)
    line = error_line(kd("teach", "--run", "r", "--logits-only", "--db", db, ok=False))
    assert line.endswith(f"the classes changed since the teacher of run 'r' ran: re-run `kd teach --run r --model "
                         f"{shlex.quote(str(noisy['model']))} --folds 3 --overwrite` (with the other options `kd report --run r` lists for it)"), line
    assert [(s.id, s.name, s.status) for s in store.stages_of("r")] == stages  # no failed stage either
    assert _issues(db) == found  # the detection it was to replace stands


def test_detect_after_a_teach_overwrite_killed_with_9_takes_the_teacher_given_back(db, tmp_path):
    """`kill -9` of `kd teach --overwrite` leaves the old teacher parked until the next stage starts:
    `kd labels detect` (a stage) looked the teacher up before it got there, so it refused the run,
    again and again, saying the next stage would end what it was itself."""
    from synthetic import kill_9_inside_stage

    from kdstore.runs import _machine

    if _machine() is None:
        pytest.skip("no /proc boot id or pid namespace here: kd judges no stage's process")
    line = kill_9_inside_stage(db, tmp_path, run="r")
    kd("labels", "detect", "--run", "r", "--db", db)
    store = _open(db)
    try:
        stages = {s.name: s for s in store.stages_of("r")}
        assert stages["teach"].status == "succeeded" and stages["detect"].status == "succeeded"
        assert stages[f"teach~failed-{line}"].error.startswith("crashed: process")
    finally:
        store.close()


def test_a_sheet_names_its_run_and_import_follows_it(db, tmp_path, error_line, monkeypatch):
    kd("labels", "detect", "--run", "r", "--db", db)
    sheet = tmp_path / "review.csv"
    exported = json.loads(kd("labels", "export", "--run", "r", str(sheet), "--db", db, "--json").stdout)
    assert exported == {"run": "r", "path": str(sheet), "issues": len(_issues(db)), "warnings": []}
    assert sheet.read_bytes().startswith(b"\xef\xbb\xbf")  # a byte-order mark: spreadsheets read it as UTF-8
    rows = list(csv.DictReader(sheet.open(encoding="utf-8-sig")))
    assert {r["run"] for r in rows} == {"r"} and list(rows[0])[:2] == ["run", "issue_id"]
    rows[0]["decision"] = "reject"
    with sheet.open("w", encoding="utf-8-sig", newline="") as fh:  # as a spreadsheet saves "CSV UTF-8"
        w = csv.DictWriter(fh, fieldnames=rows[0].keys())
        w.writeheader()
        w.writerows(rows)
    line = error_line(kd("labels", "import", "--run", "other", str(sheet), "--db", db, ok=False))
    assert str(sheet) in line and "line 2" in line and "field 'run'" in line and "not --run 'other'" in line
    config = tmp_path / "kd.toml"  # a config file's run (the README's `run = "exp1"`) is a default, not a --run to match
    config.write_text('run = "exp1"\n', encoding="utf-8")
    monkeypatch.setenv("KD_CONFIG", str(config))
    counts = json.loads(kd("labels", "import", str(sheet), "--db", db, "--json").stdout)  # no --run: the sheet's
    monkeypatch.delenv("KD_CONFIG")
    assert counts["run"] == "r" and counts["reject"] == 1
    assert {i["issue_id"]: i["status"] for i in _issues(db)}[int(rows[0]["issue_id"])] == "rejected"
    mixed = _sheet(tmp_path / "mixed.csv", [dict(rows[1], run="r", decision="drop"), dict(rows[2], run="s", decision="drop")])
    line = error_line(kd("labels", "import", str(mixed), "--db", db, ok=False))
    assert "line 3" in line and "one run per sheet" in line
    kd("labels", "export", "--run", "r", str(tmp_path / "no" / "such" / "dir.csv"), "--db", db)  # its folder made, as kd export's
    assert (tmp_path / "no" / "such" / "dir.csv").read_bytes().startswith(b"\xef\xbb\xbf")


def test_a_sheet_that_names_no_run_is_of_the_config_files_run_not_default(db, tmp_path, error_line, monkeypatch):
    """A hand-made sheet of `sample_id,decision` names no run: a config file's `run = "r"` (which `kd labels
    show` and `export` took) is its run, as for every other command; import took it for 'default' and was refused."""
    kd("labels", "detect", "--run", "r", "--db", db)
    first = _issues(db)[0]
    sheet = tmp_path / "hand.csv"
    sheet.write_text(f"sample_id,decision\r\n{first['sample_id']},drop\r\n", encoding="utf-8")
    config = tmp_path / "settings.toml"  # (not ./kd.toml: the working folder here, read with no KD_CONFIG)
    config.write_text('run = "r"\n', encoding="utf-8")
    monkeypatch.setenv("KD_CONFIG", str(config))
    counts = json.loads(kd("labels", "import", str(sheet), "--db", db, "--json").stdout)
    assert counts["run"] == "r" and counts["drop"] == 1
    monkeypatch.delenv("KD_CONFIG")
    assert {i["issue_id"]: i["status"] for i in _issues(db)}[first["issue_id"]] == "applied"
    kd("labels", "undo", "--run", "r", "--db", db)
    line = error_line(kd("labels", "import", str(sheet), "--db", db, ok=False))  # no config, no --run: 'default', said so
    assert "taken for 'default': pass --run" in line


def test_undo_reopens_exactly_the_issues_its_stage_decided(db, tmp_path):
    kd("labels", "detect", "--run", "r", "--db", db)
    kd("labels", "detect", "--run", "r2", "--teacher-run", "r", "--db", db)
    assert {i["sample_id"] for i in _issues(db, "r2")} == {i["sample_id"] for i in _issues(db, "r")}
    kd("labels", "clean", "--run", "r", "--db", db)
    kd("labels", "clean", "--run", "r2", "--action", "flag", "--db", db)
    undone = json.loads(kd("labels", "undo", "--run", "r2", "--db", db, "--json").stdout)
    assert undone["reopened"] == len(_issues(db, "r2"))
    assert {i["status"] for i in _issues(db, "r2")} == {"open"}
    assert {i["status"] for i in _issues(db, "r")} == {"applied"}  # another run's decisions stand
    # a review that only rejects changes no label, yet its undo reopens what it rejected
    first = _issues(db, "r2")[0]
    sheet = _sheet(tmp_path / "reject.csv", [{"run": "r2", "issue_id": first["issue_id"], "sample_id": first["sample_id"], "decision": "reject"}])
    kd("labels", "import", str(sheet), "--name", "rejects", "--db", db)
    assert _issues(db, "r2")[0]["status"] == "rejected"
    assert json.loads(kd("labels", "undo", "--run", "r2", "--db", db, "--json").stdout) == {"run": "r2", "stage": "rejects", "reverted": 0, "flags": 0, "reopened": 1, "trained_on_it": [], "detected_on_it": [], "set_since": [], "warnings": []}
    assert {i["status"] for i in _issues(db, "r2")} == {"open"}
    kd("labels", "undo", "--run", "r", "--db", db)
    assert {i["status"] for i in _issues(db, "r")} == {"open"}


def test_the_report_says_a_reviews_rejects_were_undone_too(db, tmp_path):
    """An undone review's report said "label edits: 1, all undone" beside "reject 2", which read as two
    rejects still standing (a later clean leaving those labels alone); a review of rejects only said
    nothing at all, nor did one whose rejects an `import --overwrite` undid. Each now says so."""
    kd("labels", "detect", "--run", "r", "--db", db)
    a, b, c = _issues(db)[:3]
    rows = [{"sample_id": a["sample_id"], "decision": "accept"}, {"sample_id": b["sample_id"], "decision": "reject"},
            {"sample_id": c["sample_id"], "decision": "reject"}]
    kd("labels", "import", "--run", "r", str(_sheet(tmp_path / "review.csv", rows)), "--db", db)
    stage = lambda name: next(s for s in json.loads(kd("report", "--run", "r", "--db", db, "--json").stdout)["stages"] if s["name"] == name)  # noqa: E731
    assert stage("review")["label_edits"] == {"edits": 1, "undone": 0, "undone_at": None, "rejects_undone": 0}
    kd("labels", "undo", "--run", "r", "--db", db)
    edits = stage("review")["label_edits"]
    assert (edits["edits"], edits["undone"], edits["rejects_undone"]) == (1, 1, 2) and edits["undone_at"]
    shown = kd("report", "--run", "r", "--db", db).stdout
    assert "  label edits: 1, all undone (kd labels undo, last at " in shown and "; its 2 rejects undone too\n" in shown, shown
    # rejects only, replaced by an import --overwrite: no label edit, its rejects undone all the same
    kd("labels", "import", "--run", "r", str(_sheet(tmp_path / "rejects.csv", rows[1:])), "--name", "rv", "--db", db)
    first = _open(db).find_stage("r", "rv").id
    kd("labels", "import", "--run", "r", str(_sheet(tmp_path / "one.csv", rows[1:2])), "--name", "rv", "--overwrite", "--db", db)
    edits = stage(f"rv~replaced-{first}")["label_edits"]
    assert (edits["edits"], edits["undone"], edits["rejects_undone"]) == (0, 0, 2) and edits["undone_at"]
    assert stage("rv")["label_edits"] is None  # (its reject stands: nothing undone to say)
    shown = kd("report", "--run", "r", "--db", db).stdout
    assert "  rejects: 2, undone (last at " in shown, shown
def test_out_of_fold_students_join_the_ensemble_and_in_sample_ones_are_refused(db, error_line):
    from kdstore.predictor import load_student, student_logits

    from kdstore.distill import _row_folds, load_teachers, training_set

    small = ["--epochs", "1", "--embed-dim", "8", "--num-filters", "4", "--max-len", "32", "--db", db]
    out = json.loads(kd("distill", "--run", "r", "--folds", "3", "--name", "votes", "--augment", "mask", "--augment-n", "1",
                        *small, "--json").stdout)
    assert out["status"] == "succeeded" and out["metrics"]["all"]["folds"] == 3 and out["metrics"]["all"]["augmented_samples"] > 0
    store = _open(db)
    stage = store.find_stage("r", "votes")
    folds, train = store.read_folds(stage.id), store.samples(splits=["train"], labeled=True)
    assert set(folds) == set(train.ids.tolist()) and sorted(set(folds.values())) == [0, 1, 2]
    # an augmented text trains only the students its parent's fold does not hold out
    data, parts = training_set(store, load_teachers(store, ["r"], store.class_names()), use_pool=True,
                               augmented=_recipe_source(store))
    n = parts["labeled"]
    rows = _row_folds(store, data, n, np.array([folds[int(i)] for i in data.ids[:n]]))
    parents = store.parents()
    augmented = [k for k in range(n, len(data)) if int(data.ids[k]) in parents]
    assert augmented and all(rows[k] == folds[parents[int(data.ids[k])]] for k in augmented)
    ids, logits = store.read_logits(stage.id)
    assert len(ids) == len(store.samples(include_dropped=True))  # every sample: the others get the folds' average
    row = {int(i): k for k, i in enumerate(ids)}
    held = [int(i) for i in train.ids if folds[int(i)] == 1]
    model, tokenizer, _ = load_student(Path(stage.artifact_path) / "fold-1", "cpu")
    again = student_logits(model, tokenizer, store.samples(ids=held).texts, max_len=32, device=torch.device("cpu"))
    np.testing.assert_allclose(logits[[row[i] for i in held]], again, atol=1e-5)  # fold 1's train rows: scored by the student blind to them
    found = json.loads(kd("labels", "detect", "--run", "r", "--student-votes", "votes", "--method", "cleanlab,disagree,ensemble",
                          "--db", db, "--json").stdout)
    assert found["flagged"] > 0 and "ensemble" in {m for i in _issues(db) for m in i["methods"].split(",")}
    other = json.loads(kd("labels", "detect", "--run", "r2", "--teacher-run", "r", "--student-votes", "r:votes", "--method", "ensemble",
                          "--db", db, "--json").stdout)  # another run's students, by RUN:STAGE
    assert other["flagged"] > 0 and {i["methods"] for i in _issues(db, "r2")} == {"ensemble"}
    bare = error_line(kd("labels", "detect", "--run", "r3", "--teacher-run", "r", "--student-votes", "votes", "--db", db, ok=False))
    assert bare == ("Error: --student-votes 'votes': a stage of --run 'r3', which is not in the store yet: "
                    "name another run's stage as RUN:STAGE")  # (it said "no run 'r3'")
    plain = json.loads(kd("distill", "--run", "r", "--name", "plain", *small, "--json").stdout)["metrics"]["all"]
    # what kd predict serves, as the size and latency are: the three students, not one
    assert [out["metrics"]["all"][k] for k in ("parameters", "flops_per_sample")] == [3 * plain["parameters"], 3 * plain["flops_per_sample"]]
    refused = error_line(kd("labels", "detect", "--run", "r", "--student-votes", "plain", "--overwrite", "--db", db, ok=False))
    assert "learned the labels of the 150 train samples" in refused and "--folds 5" in refused
    assert json.loads(kd("predict", "--run", "r", "--model", "votes", "--json", "--db", db, input="这个很好\n").stdout)["label"] in ("pos", "neg")
    assert "fold students" in error_line(kd("export", "--run", "r", "--model", "votes", "--db", db, ok=False))


def test_a_teacher_replaced_by_one_without_folds_is_not_pointed_to_as_one_detect_takes(db, noisy):
    """After `kd teach --overwrite` without --folds the warning on the old detection named `kd labels
    detect --overwrite`, which refuses the new, in-sample teacher: it names a --folds teacher first. A
    detection that allowed in-sample probabilities is redone with --allow-in-sample."""
    kd("labels", "detect", "--run", "r", "--db", db)
    again = ["teach", "--run", "r", "--model", str(noisy["model"]), "--epochs", "1", "--max-len", "32", "--overwrite", "--db", db]
    kd(*again)
    said = " ".join(kd("labels", "clean", "--run", "r", "--dry-run", "--db", db).stderr.split())
    assert ("its issues are the old teacher's; the new one learned the train labels it would judge (no --folds), so a detection "
            f"refuses it: `kd teach --run r --model {noisy['model']} --folds 5 --overwrite` (with the other options `kd report --run r` "
            "lists for it), then `kd labels detect --run r --overwrite`") in said
    assert "in-sample teacher probabilities" in kd("labels", "detect", "--run", "r", "--overwrite", "--db", db, ok=False).output
    kd("labels", "detect", "--run", "r", "--allow-in-sample", "--overwrite", "--db", db)
    kd(*again, "--seed", "1")
    said = " ".join(kd("labels", "clean", "--run", "r", "--dry-run", "--db", db).stderr.split())
    assert "its issues are the old teacher's; `kd labels detect --run r --allow-in-sample --overwrite` judges with the new one" in said


def test_a_teach_overwrite_names_the_new_run_detect_for_a_detection_a_standing_clean_decided(db, noisy):
    """Round two of the loop (detect, clean, `kd teach --overwrite`): the warning told to rerun the
    detection with --overwrite, which is refused while the clean's edits stand; it names the detection
    in a new run that `kd labels detect --overwrite`'s error names."""
    kd("labels", "detect", "--run", "r", "--db", db)
    kd("labels", "clean", "--run", "r", "--db", db)
    again = kd("teach", "--run", "r", "--model", str(noisy["model"]), "--folds", "2", "--epochs", "1", "--max-len", "32",
               "--overwrite", "--db", db, "--json")
    said = [w for w in json.loads(again.stdout)["warnings"] if "--overwrite replaces the teacher" in w]
    assert said == ["--overwrite replaces the teacher that r/detect used: its figures stay those of the old one (kd report will "
                    "say \"replaced since\"); r/detect's issues were decided by a clean whose edits stand: "
                    "`kd labels detect --run NEW --teacher-run r` detects again once the new teacher is done"], said
    assert "kd labels detect --run NEW --teacher-run r" in kd("labels", "detect", "--run", "r", "--overwrite", "--db", db, ok=False).output


def test_detect_with_a_teacher_of_labels_changed_since_says_so(db, noisy):
    """A second round's detection by a teacher not taught again after the first clean judges the
    labels with folds that learned the old ones (it mostly finds the first round's leftovers): said,
    with the `kd teach` that retrains it, as kd distill says of such a teacher."""
    kd("labels", "detect", "--run", "r", "--db", db)
    kd("labels", "clean", "--run", "r", "--db", db)
    out = json.loads(kd("labels", "detect", "--run", "r2", "--teacher-run", "r", "--db", db, "--json").stdout)
    said = ("the teacher of run r learned from labels changed since (kd labels clean, set, import or undo): its out-of-fold "
            f"probabilities follow the old ones; `kd teach --run r --model {noisy['model']} --folds 3 --overwrite` (with the other "
            "options `kd report --run r` lists for it) retrains it on the current labels, then detect again")
    assert said in out["warnings"], out["warnings"]
    fresh = json.loads(kd("labels", "detect", "--run", "r3", "--teacher-run", "r", "--db", db, "--json").stdout)  # (nothing changed since r2)
    assert said in fresh["warnings"]
    kd("labels", "undo", "--run", "r", "--db", db)
    back = json.loads(kd("labels", "detect", "--run", "r4", "--teacher-run", "r", "--db", db, "--json").stdout)
    assert not any("learned from labels changed since" in w for w in back["warnings"])  # (the labels it learned, back again)


def test_detect_with_student_votes_of_labels_changed_since_says_so(db):
    """--student-votes students distilled before a clean learned the old labels (and the old teacher's
    logits): their votes follow them, as a stale teacher's do, yet only the teacher was said to be stale
    (once it was taught again, nothing was said at all)."""
    kd("distill", "--run", "r", "--folds", "2", "--name", "votes", "--epochs", "1", "--embed-dim", "8", "--num-filters", "4",
       "--max-len", "32", "--db", db)
    kd("labels", "detect", "--run", "r", "--db", db)
    kd("labels", "clean", "--run", "r", "--db", db)
    out = json.loads(kd("labels", "detect", "--run", "r2", "--teacher-run", "r", "--student-votes", "r:votes", "--db", db,
                        "--json").stdout)
    said = [w for w in out["warnings"] if w.startswith("distill stage 'votes' of run 'r' (--student-votes) learned from labels changed since")]
    assert len(said) == 1, out["warnings"]
    assert "`kd distill --run r --folds 2 --name votes --overwrite`" in said[0], said[0]


def test_detect_records_the_stages_it_read_and_refuses_votes_of_fewer_classes(db, noisy, tmp_path, error_line):
    """A detect stage records which teach and distill stages it read (ids: one replaced later by
    --overwrite is told apart) and which labels it judged, as distill does; a student distilled
    before a class was added has fewer outputs than the store has classes: one line and no stage
    (it was an IndexError traceback and a failed detect stage)."""
    kd("distill", "--run", "r", "--folds", "2", "--name", "votes", "--epochs", "1", "--embed-dim", "8", "--num-filters", "4",
       "--max-len", "32", "--db", db)
    kd("labels", "detect", "--run", "r2", "--teacher-run", "r", "--student-votes", "r:votes", "--method", "cleanlab,ensemble", "--db", db)
    store = _open(db)
    config = store.find_stage("r2", "detect").config
    teacher, votes = store.find_stage("r", "teach"), store.find_stage("r", "votes")
    assert [(t["run"], t["stage_id"]) for t in config["teacher_stages"]] == [("r", teacher.id)]
    assert [(v["run"], v["stage"], v["stage_id"]) for v in config["student_vote_stages"]] == [("r", "votes", votes.id)]
    assert config["labels_from"] == "original" and config["labels_digest"] == lab.labels_state(store)["labels_digest"]
    assert not any("was replaced" in w for w in lab.detect_warnings(store, "r2"))
    kd("teach", "--run", "r", "--model", str(noisy["model"]), "--folds", "2", "--epochs", "1", "--max-len", "32", "--overwrite", "--db", db)
    dry = kd("labels", "clean", "--run", "r2", "--dry-run", "--db", db)  # the issues are the old teacher's: said so
    assert ("the teacher of run 'r' was replaced after this detection ran (kd teach --overwrite): its issues are the old "
            "teacher's; `kd labels detect --run r2 --teacher-run r --student-votes r:votes --method cleanlab,ensemble --overwrite` judges with the new one") in " ".join(dry.stderr.split())
    assert "(--student-votes) was replaced" not in dry.stderr
    shown = kd("labels", "show", "--run", "r2", "--json", "--db", db)  # listing or exporting the old issues says it too
    assert "the teacher of run 'r' was replaced after this detection ran" in shown.stderr and json.loads(shown.stdout)
    sheet = json.loads(kd("labels", "export", "--run", "r2", str(tmp_path / "stale.csv"), "--json", "--db", db).stdout)
    assert any("was replaced after this detection ran" in w for w in sheet["warnings"])
    kd("distill", "--run", "r", "--folds", "2", "--name", "votes", "--epochs", "1", "--embed-dim", "8", "--num-filters", "4",
       "--max-len", "32", "--overwrite", "--db", db)  # the votes it counted are gone: said so too
    dry = kd("labels", "clean", "--run", "r2", "--dry-run", "--db", db)
    assert ("distill stage 'votes' of run 'r' (--student-votes) was replaced after this detection ran (kd distill --overwrite): "
            "its issues count the old student's votes; `kd labels detect --run r2 --teacher-run r --student-votes r:votes --method cleanlab,ensemble --overwrite` "
            "judges with the new one") in " ".join(dry.stderr.split())
    _add_class_mid(db, tmp_path)  # a third class, two train samples relabeled to it, and a teacher of all three
    two = [i for (i,) in _read(db, select(Sample.id).where(Sample.split == "train").order_by(Sample.id).limit(2))]
    edit_labels(db, "t3", "review", {i: "mid" for i in two})
    kd("teach", "--run", "t3", "--model", str(noisy["model"]), "--folds", "2", "--epochs", "1", "--max-len", "32", "--db", db)
    stages = [(s.id, s.name, s.status) for s in store.stages_of("t3")]
    line = error_line(kd("labels", "detect", "--run", "t3", "--student-votes", "r:votes", "--method", "cleanlab,ensemble",
                         "--db", db, ok=False))
    assert "distill stage 'votes' of run 'r' learned 2 classes, the store now has 3" in line, line
    assert [(s.id, s.name, s.status) for s in store.stages_of("t3")] == stages  # no failed detect stage


def test_student_votes_of_today_are_recorded_as_the_run_they_named(db, error_line, today):
    """`--student-votes '${time}:votes'` (a config file's `student-votes = "${time}:votes"`) was recorded as
    written: the detection's config named whichever day it is read on, and the `kd labels detect` its
    warnings suggest had an unquoted ${time}, which a shell replaces with nothing."""
    kd("distill", "--run", today, "--teacher-run", "r", "--folds", "2", "--name", "votes", "--epochs", "1", "--embed-dim", "8",
       "--num-filters", "4", "--max-len", "32", "--db", db)
    kd("labels", "detect", "--run", "r2", "--teacher-run", "r", "--student-votes", "${time}:votes", "--method", "cleanlab,ensemble",
       "--db", db)
    assert _open(db).find_stage("r2", "detect").config["student_votes"] == [f"{today}:votes"]
    # RUN:STAGE naming no run, from a config file: the option and the file are named ("no run 'nosuch'" named neither)
    Path("kd.toml").write_text('[labels.detect]\nstudent-votes = "nosuch:votes"\nmethod = "cleanlab,ensemble"\n', encoding="utf-8")
    line = error_line(kd("labels", "detect", "--run", "r", "--db", db, ok=False))
    assert line.startswith("Error: --student-votes 'nosuch:votes': no run 'nosuch' in ") and line.endswith(
        '(kd.toml: [labels.detect] student-votes = "nosuch:votes")'), line


def _recipe_source(store: Store) -> str:
    """The source of the store's augmented samples (one recipe in these tests)."""
    with store.engine.connect() as conn:
        return conn.execute(select(Sample.source).where(Sample.parent_id.is_not(None)).limit(1)).scalar_one()


def test_reopen_reads_the_flags_of_many_samples_in_chunks(tmp_path, monkeypatch):
    """Undoing a clean that decided 33k issues failed with "too many SQL variables" (SQLite's
    default limit is 32,766; PostgreSQL takes 65,535): the standing flags of their samples were read
    with one IN list. Read in chunks, each sample still goes back to its run's latest standing flag."""
    import sqlite3

    from sqlalchemy import event

    from kdstore.schema import KdClass, Run

    store = Store.open(str(tmp_path / "kd.db"))
    with store.session() as s, s.begin():
        s.add_all([KdClass(id=0, name="pos"), KdClass(id=1, name="neg"), Run(id=1, uniqid="r")])
        s.flush()
        s.add_all([Stage(id=i, run_id=1, kind=k, name=n, status="succeeded") for i, k, n in
                   ((1, "detect", "detect"), (2, "clean", "fl"), (3, "clean", "fl2"), (4, "clean", "cl"))])
        s.flush()
        s.add_all([Sample(id=i, text=f"t{i}", text_hash=f"h{i}", split="train", label_id=0, orig_label_id=0, source="x") for i in range(1, 7)])
        s.flush()
        s.add_all([LabelIssue(id=i, stage_id=1, sample_id=i, given_label_id=0, suggested_label_id=1, score=0.9,
                              methods="cleanlab", status="applied", decided_stage_id=4) for i in range(1, 7)])
        s.flush()
        s.add_all([LabelEdit(sample_id=i, stage_id=by, action="flag", old_label_id=0, new_label_id=0)
                   for i, by in ((1, 2), (3, 2), (3, 3), (6, 3))])
    store.engine.dispose()
    event.listen(store.engine, "connect", lambda conn, _: conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 5))
    monkeypatch.setattr(lab, "ID_CHUNK", 2)
    with store.session() as s, s.begin():
        assert lab.reopen(s, LabelIssue.decided_stage_id == 4, undoing=4) == 6
    with store.session() as s:
        got = {i.sample_id: (i.status, i.decided_stage_id) for i in s.scalars(select(LabelIssue))}
    store.close()
    assert got == {1: ("flagged", 2), 2: ("open", None), 3: ("flagged", 3), 4: ("open", None), 5: ("open", None), 6: ("flagged", 3)}


def test_an_empty_stage_name_is_refused_not_recorded_as_another(db, tmp_path):
    """``--name ''`` used to record the stage as ``clean`` (``set``: not ``edit-N`` either) while the
    output said stage ``""``; a later ``kd labels clean`` then found "its" name taken."""
    kd("labels", "detect", "--run", "r", "--db", db)
    first = _issues(db)[0]
    sheet = _sheet(tmp_path / "s.csv", [{"run": "r", "issue_id": first["issue_id"], "sample_id": first["sample_id"], "decision": "drop"}])
    state, edits = _state(db), _count(db, LabelEdit)
    for args in (["clean", "--run", "r"], ["set", "--run", "r", f"{first['sample_id']}=drop"], ["import", str(sheet)]):
        result = kd("labels", *args, "--name", "", "--db", db, ok=False)
        assert result.stderr.splitlines()[-1] == "Error: stage name '' is not valid: use 1-64 ASCII letters, digits, '-', '_', '+' or '.' (not first)"
    assert _state(db) == state and _count(db, LabelEdit) == edits
    assert [s.name for s in _open(db).stages_of("r")] == ["teach", "detect"]


@pytest.mark.on_postgresql
def test_a_count_beyond_what_sql_holds_means_all(db):
    """``--top``/``--limit`` 99999999999999999999 was an OverflowError traceback (SQLite's INTEGER)."""
    kd("labels", "detect", "--run", "r", "--db", db)
    huge = "99999999999999999999"
    everything = json.loads(kd("labels", "show", "--run", "r", "--top", "0", "--db", db, "--json").stdout)
    assert json.loads(kd("labels", "show", "--run", "r", "--top", huge, "--db", db, "--json").stdout) == everything
    assert len(json.loads(kd("samples", "--limit", huge, "--db", db, "--json").stdout)) == _count(db, Sample)


def test_a_sheet_as_spreadsheets_save_it_imports_or_is_refused_in_one_line(db, tmp_path, error_line):
    """Excel on Chinese Windows saves CSV as GBK (was "cannot read: 'utf-8' codec can't decode byte
    0xb5 in position 83", no line); a workbook saved under .xlsx; a second ``decision`` column (csv
    read the last, empty one: every decision dropped unseen, an empty stage recorded); a sheet whose
    decisions were never saved (an empty ``review`` stage took the name the real import needed). Each
    is one line naming the file, line and field, and changes nothing; CRLF, quotes around every
    field, trailing empty columns, an added column and "Accept " / "DROP" import as they are."""
    kd("labels", "detect", "--run", "r", "--db", db)
    sheet = tmp_path / "review.csv"
    kd("labels", "export", "--run", "r", str(sheet), "--db", db)
    rows = list(csv.DictReader(sheet.open(encoding="utf-8-sig")))
    rows[0]["decision"], rows[1]["decision"] = "Accept ", "DROP"
    rows[1]["text"] = "'" + rows[1]["text"]  # as kd writes a text a spreadsheet would take for a formula
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=[*rows[0], "note", ""], quoting=csv.QUOTE_ALL)  # \r\n line ends
    w.writeheader()
    w.writerows([r | {"note": "看过", "": ""} for r in rows])
    text = buf.getvalue()
    assert "\r\n" in text
    state = _state(db)
    bad = {
        "gbk.csv": (text.encode("gbk"), ("line 2", "field 'text'", "not UTF-8", 'Save As "CSV UTF-8"')),
        "utf16.csv": (text.encode("utf-16"), ("line 1", "UTF-16")),
        "book.csv": (b"PK\x03\x04" + bytes(20), ("line 1", "an Excel workbook")),
        "twice.csv": (text.replace('"decision"', '"decision","decision"', 1).encode("utf-8-sig"), ("line 1", "field 'decision'", "appears twice")),
        "unsaved.csv": (sheet.read_bytes(), ("field 'decision'", "empty on every row", "nothing to import")),
    }
    for name, (content, expected) in bad.items():
        (tmp_path / name).write_bytes(content)
        line = error_line(kd("labels", "import", str(tmp_path / name), "--db", db, ok=False))
        assert str(tmp_path / name) in line and all(e in line for e in expected), (name, line)
    assert _state(db) == state and _count(db, LabelEdit) == 0
    assert [s.kind for s in _open(db).stages_of("r")] == ["teach", "detect"]
    line = error_line(kd("labels", "export", "--run", "r", str(tmp_path / "review.xlsx"), "--db", db, ok=False))
    assert "not a workbook" in line and not (tmp_path / "review.xlsx").exists()
    filled = tmp_path / "filled.csv"
    filled.write_text("run,sample_id,decision\nr,1,drop\n", encoding="utf-8")  # a reviewer's work
    line = error_line(kd("labels", "export", "--run", "r", str(filled), "--db", db, ok=False))
    assert "filled.csv exists (a sheet someone may be filling in): pass --overwrite" in line
    assert filled.read_text(encoding="utf-8") == "run,sample_id,decision\nr,1,drop\n"
    kd("labels", "export", "--run", "r", str(filled), "--overwrite", "--db", db)
    assert filled.read_text(encoding="utf-8-sig").startswith("run,")
    assert "name it review.csv or review.jsonl" in error_line(kd("labels", "export", "--run", "r", str(tmp_path / "review.tsv"), "--db", db, ok=False))
    (tmp_path / "excel.csv").write_bytes(text.encode("utf-8-sig"))
    counts = json.loads(kd("labels", "import", str(tmp_path / "excel.csv"), "--db", db, "--json").stdout)
    assert (counts["stage"], counts["relabel"] + counts["unchanged"], counts["drop"]) == ("review", 1, 1)


def test_a_label_cell_retyped_in_an_undecided_row_is_refused_and_a_stale_one_is_not(db, tmp_path, error_line):
    """A reviewer relabels in the spreadsheet by overwriting the row's ``current`` (the label now) or
    ``given`` cell and leaves ``decision`` empty: the row was skipped without a word ("drop 1" for the
    other row), the relabel never made, as a retyped ``suggested`` cell was. A ``current`` cell that is
    stale (the sample relabeled since the export) is the export's, not a reviewer's: still read."""
    kd("labels", "detect", "--run", "r", "--db", db)
    sheet = tmp_path / "review.csv"
    kd("labels", "export", "--run", "r", str(sheet), "--db", db)
    rows = list(csv.DictReader(sheet.open(encoding="utf-8-sig")))
    names = _open(db).class_names()

    def other(name):
        return next(n for n in names if n != name)

    state = _state(db)
    for column in ("current", "given"):
        edited = [dict(r) for r in rows]
        edited[0]["decision"], edited[1][column] = "drop", other(rows[1][column])
        path = _sheet(tmp_path / f"{column}.csv", edited)
        line = error_line(kd("labels", "import", str(path), "--db", db, ok=False))
        assert all(e in line for e in (str(path), "line 3", f"field '{column}'", f"{other(rows[1][column])!r}",
                                       "the decision is empty, so the row would be skipped")), line
    assert _state(db) == state and _count(db, LabelEdit) == 0
    kd("labels", "set", "--run", "r", f"{rows[1]['sample_id']}={other(rows[1]['current'])}", "--db", db)  # after the export
    rows[0]["decision"] = "drop"
    out = json.loads(kd("labels", "import", str(_sheet(tmp_path / "stale.csv", rows)), "--db", db, "--json").stdout)
    assert (out["stage"], out["drop"]) == ("review", 1)


def test_a_json_sheet_saved_as_an_array_or_pretty_printed_says_kd_reads_json_lines(db, tmp_path, error_line):
    """The JSONL sheet edited in a tool and saved as `json.dump(rows, indent=2)`, pandas'
    `to_json(orient="records")` or `jq .`: "line 1: not valid JSON (Expecting value)" named no cause."""
    kd("labels", "detect", "--run", "r", "--db", db)
    sheet = tmp_path / "review.json"
    kd("labels", "export", "--run", "r", str(sheet), "--db", db)
    rows = [json.loads(line) for line in sheet.read_text(encoding="utf-8").splitlines()]
    rows[0]["decision"] = "drop"
    state = _state(db)
    for name, content, expected in (
        ("indented.json", json.dumps(rows, ensure_ascii=False, indent=2), "not a JSON array"),
        ("records.json", json.dumps(rows, ensure_ascii=False), "not a JSON array"),
        ("jq.json", "".join(json.dumps(r, ensure_ascii=False, indent=2) + "\n" for r in rows), "the object goes on past its line"),
    ):
        (tmp_path / name).write_text(content, encoding="utf-8")
        line = error_line(kd("labels", "import", str(tmp_path / name), "--db", db, ok=False))
        assert all(e in line for e in (str(tmp_path / name), "line 1", "kd reads JSON Lines", expected)), (name, line)
    assert _state(db) == state and _count(db, LabelEdit) == 0


def test_dropping_a_dropped_sample_records_no_edit(db):
    """``kd labels set 5=drop`` twice recorded a second drop edit (counted ``drop 1``) that changed
    nothing, yet blocked undoing the first stage on its own."""
    sample = int(_open(db).samples(splits=["train"]).ids[0])
    kd("labels", "set", "--run", "r", f"{sample}=drop", "--db", db)
    again = json.loads(kd("labels", "set", "--run", "r", f"{sample}=drop", "--db", db, "--json").stdout)
    assert (again["drop"], again["unchanged"]) == (0, 1) and _count(db, LabelEdit) == 1
    kd("labels", "undo", "--run", "r", "--stage", "edit-1", "--db", db)
    assert not _state(db)[sample][1]


def test_texts_a_spreadsheet_would_run_as_formulas_are_quoted():
    from kdstore.labels import _no_formula

    assert [_no_formula(t) for t in ("=HYPERLINK(\"x\")", "+86 好", "-5折", "@me", "好=1", "")] == [
        "'=HYPERLINK(\"x\")", "'+86 好", "'-5折", "'@me", "好=1", ""]


def test_a_stage_records_the_labels_it_read_not_those_of_its_start(db, noisy, monkeypatch):
    """A label edit that another process commits after `kd distill` or `kd teach` started but before
    it read its training rows: the stage learned from the edited labels, and its config says so
    (labels_digest, labels_from), not the labels of its start."""
    import kdstore.distill as distill_mod
    import kdstore.teacher as teacher_mod

    store = _open(db)
    for mod, attr, sample, args in (
        (distill_mod, "training_set", 1, ("distill", "--run", "r", "--name", "late-read", "--epochs", "1", "--embed-dim", "8",
                                          "--num-filters", "4", "--max-len", "32")),
        (teacher_mod, "training_rows", 2, ("teach", "--run", "t", "--model", str(noisy["model"]), "--epochs", "1", "--max-len", "32")),
    ):
        read, edited = getattr(mod, attr), []

        def late_edit(*a, read=read, sample=sample, edited=edited, **k):
            if not edited:  # once: another process's `kd labels set`, between the stage's start and its read
                edited.append(sample)
                edit_labels(db, "late", f"drop-{sample}", {sample: "drop"})
            return read(*a, **k)

        monkeypatch.setattr(mod, attr, late_edit)
        before = lab.labels_state(store)
        out = json.loads(kd(*args, "--db", db, "--json").stdout)
        now = lab.labels_state(store)
        assert edited and now != before
        assert {k: out["config"][k] for k in now} == now and now["labels_from"] == f"late/drop-{sample}"
        assert out["metrics"]["all"]["train_samples"] == 150 - sample
        # its figures judge against those labels too: the sample dropped before the read is not counted
        assert out["metrics"]["train"]["n"] == 150 - sample and "labels_read_at" in out["config"]


@pytest.mark.on_postgresql
def test_a_label_edit_made_while_a_stage_trains_is_said_as_it_ends(db, noisy, monkeypatch):
    """A `kd labels clean` (or set, import, undo) in another process after `kd distill` or `kd teach` read its labels:
    the stage learned from, and judged its figures against, the labels of before the edit, and it ended saying
    nothing of it (a student's `kd report` says nothing either): its figures read as those of the labels now."""
    import kdstore.distill as distill_mod
    import kdstore.teacher as teacher_mod

    for mod, sample, name, args in (
        (distill_mod, 1, "during", ("distill", "--run", "r", "--name", "during", "--epochs", "1", "--embed-dim", "8",
                                    "--num-filters", "4", "--max-len", "32")),
        (teacher_mod, 2, "teach", ("teach", "--run", "t", "--model", str(noisy["model"]), "--epochs", "1", "--max-len", "32")),
    ):
        recorded, edited = mod.record_labels_state, []

        def edit_after_read(*a, recorded=recorded, sample=sample, edited=edited, **k):
            recorded(*a, **k)
            if not edited:  # once: another process's `kd labels set`, after the stage read its labels
                edited.append(sample)
                edit_labels(db, "meanwhile", f"drop-{sample}", {sample: "drop"})

        monkeypatch.setattr(mod, "record_labels_state", edit_after_read)
        result = kd(*args, "--db", db, "--json")
        assert edited
        said = (f"warning: the labels changed while stage {name!r} ran (kd labels clean, set, import or undo meanwhile): "
                "it learned from the labels as it read them, and its figures judge against those")
        assert said in result.stderr, result.stderr
        assert any(w.startswith(said[len("warning: "):]) for w in json.loads(result.stdout)["warnings"])
    # a stage that read the labels as they are now: nothing to say
    assert "labels changed while" not in kd("distill", "--run", "r", "--name", "after", "--epochs", "1", "--embed-dim", "8",
                                            "--num-filters", "4", "--max-len", "32", "--db", db).stderr


def test_jsonl_sheet_number_decision_is_the_class_of_that_name(db, tmp_path):
    """A JSONL decision written as the number 0 is the class "0", not an empty cell skipped unseen."""
    kd("labels", "detect", "--run", "r", "--db", db)
    # (a class named by a number in a store of named ones is pinned by a class file: alone, "0" reads as the id of a class)
    (tmp_path / "classes.txt").write_text("".join(f"{n}\n" for n in [*_open(db).class_names(), "0"]), encoding="utf-8")
    kd("ingest", str(write_tsv(tmp_path / "zero.tsv", [("0", "一个名字是数字零的类别")])), "--split", "dev",
       "--classes", str(tmp_path / "classes.txt"), "--db", db)
    names = _open(db).class_names()
    sheet = tmp_path / "review.jsonl"
    kd("labels", "export", "--run", "r", str(sheet), "--db", db)
    rows = [json.loads(line) for line in sheet.read_text(encoding="utf-8").splitlines()]
    rows[0]["decision"] = 0
    counts = json.loads(kd("labels", "import", "--run", "r", str(_sheet(sheet, rows)), "--db", db, "--json").stdout)
    assert counts["relabel"] == 1
    assert _state(db)[rows[0]["sample_id"]][0] == names.index("0")


def test_detect_runs_over_the_train_classes_when_a_class_is_in_dev_only(noisy, tmp_path):
    """A pinned class with dev samples only (a new news topic) has no noise rate to estimate: the
    detection leaves it out instead of refusing, and suggests only classes the train labels have."""
    db = str(tmp_path / "dev-only.db")
    classes = tmp_path / "class_id.txt"
    classes.write_text("0\tmid\n1\tpos\n2\tneg\n", encoding="utf-8")
    kd("ingest", str(write_tsv(tmp_path / "train.tsv", noisy["rows"][:60])), "--classes", str(classes), "--db", db)
    kd("ingest", str(write_tsv(tmp_path / "dev.tsv", [("mid", "不好也不差的一个东西"), ("pos", "这个很好"), ("neg", "那个太差")])),
       "--split", "dev", "--db", db)
    kd("teach", "--run", "r", "--model", str(noisy["model"]), "--folds", "2", "--epochs", "1", "--max-len", "32", "--db", db)
    out = json.loads(kd("labels", "detect", "--run", "r", "--tfidf-member", "--method", "cleanlab,disagree,ensemble",
                        "--db", db, "--json").stdout)
    issues = _issues(db)
    assert out["flagged"] == len(issues)
    assert {i["suggested"] for i in issues} <= {"pos", "neg"} and {i["given"] for i in issues} <= {"pos", "neg"}


def test_detect_refuses_a_pinned_class_whose_train_samples_came_after_the_teacher(noisy, tmp_path, error_line):
    """A class pinned by --classes has no train sample when the teacher runs; its train samples come
    later and are scored by --logits-only. The teacher never learned it, so detection would flag every
    one of them: refused before anything is written, as for a changed class set."""
    db = str(tmp_path / "later.db")
    classes = tmp_path / "class_id.txt"
    classes.write_text("0\tmid\n1\tpos\n2\tneg\n", encoding="utf-8")
    kd("ingest", str(write_tsv(tmp_path / "train.tsv", noisy["rows"][:40])), "--classes", str(classes), "--db", db)
    kd("teach", "--run", "r", "--model", str(noisy["model"]), "--folds", "2", "--epochs", "1", "--max-len", "32", "--db", db)
    kd("ingest", str(write_tsv(tmp_path / "mid.tsv", [("mid", "不好也不差的一个东西"), ("mid", "一般般的那个东西")])), "--db", db)
    kd("teach", "--run", "r", "--logits-only", "--db", db)
    line = error_line(kd("labels", "detect", "--run", "r", "--db", db, ok=False))
    assert "learned no sample of class 'mid'" in line and "kd teach" in line
    assert _count(db, LabelIssue) == 0 and [s.kind for s in _open(db).stages_of("r")] == ["teach"]


def test_only_classes_renormalizes_over_the_kept_columns():
    p = np.array([[0.5, 0.25, 0.25], [1.0, 0.0, 0.0]])
    assert np.allclose(lab.only_classes(p, np.array([1, 2])), [[0.5, 0.5], [0.5, 0.5]])
    assert lab.only_classes(p, np.array([0, 1, 2])) is p


def _hand_made_detection(path: Path, texts: list[str]) -> str:
    """A store whose run ``r`` has a detection flagging every one of ``texts`` (train, labeled pos,
    suggested neg): the sheet round trips without training a teacher."""
    from kdstore.schema import KdClass, Run
    from kdstore.textkey import text_hash

    store = Store.open(str(path))
    with store.session() as s, s.begin():
        s.add_all([KdClass(id=0, name="pos"), KdClass(id=1, name="neg"), Run(id=1, uniqid="r")])
        s.flush()
        s.add(Stage(id=1, run_id=1, kind="detect", name="detect", status="succeeded"))
        s.add_all([Sample(id=i, text=t, text_hash=text_hash(t), split="train", label_id=0, orig_label_id=0, source="x")
                   for i, t in enumerate(texts, start=1)])
        s.flush()
        s.add_all([LabelIssue(id=i, stage_id=1, sample_id=i, given_label_id=0, suggested_label_id=1, score=0.9,
                              methods="cleanlab", status="open") for i in range(1, len(texts) + 1)])
    store.close()
    return str(path)


def test_history_says_when_a_confirming_set_was_undone(tmp_path):
    """`kd labels set 1=pos 2=neg` confirmed 1 (the label it had: no edit) and relabeled 2; `kd labels undo`
    reverted the set, so a clean no longer leaves 1 alone, yet `kd labels history 1` still listed the
    confirmation as standing, with no word of the undo (its edits and a review's rejects say "reverted")."""
    db = _hand_made_detection(tmp_path / "kd.db", ["好", "坏"])
    kd("labels", "set", "--run", "hand", "1=pos", "2=neg", "--db", db)
    kd("labels", "undo", "--run", "hand", "--db", db)
    preview = {c["sample_id"]: c["effect"] for c in json.loads(kd("labels", "clean", "--run", "r", "--dry-run", "--json", "--db", db).stdout)["changes"]}
    assert preview[1] == "change"  # (no longer honoured)
    confirmed = json.loads(kd("labels", "history", "1", "--db", db, "--json").stdout)["confirmed"]
    assert [c["set"] for c in confirmed] == ["pos"] and confirmed[0]["reverted_at"], confirmed
    said = kd("labels", "history", "1", "--db", db).stdout
    assert re.search(r"hand/edit-1( by \S+)?: set pos, as it was \(confirmed: no edit; set by hand\), reverted \S+", said), said


def test_a_json_lines_sheet_with_a_lone_surrogate_is_refused_before_any_stage(tmp_path, error_line):
    """A JSON Lines sheet whose comment (or text) holds "\\ud800" without its pair parses, passed every check,
    and failed as the edits were written: a failed `review` stage left behind, and an error naming "a file name
    or argument in another encoding". Refused as the sheet is read, naming its line and field."""
    db = _hand_made_detection(tmp_path / "kd.db", ["好", "坏"])
    sheet = tmp_path / "review.jsonl"
    sheet.write_text('{"run": "r", "sample_id": 1, "decision": "drop", "comment": "bad \\ud800 half"}\n', encoding="utf-8")
    line = error_line(kd("labels", "import", str(sheet), "--db", db, ok=False))
    assert f"{sheet}: line 1: field 'comment': contains a lone surrogate escape" in line, line
    assert [st.name for st in _open(db).stages_of("r")] == ["detect"] and _count(db, LabelEdit) == 0


def test_labels_set_on_a_store_of_no_class_says_it_has_none(tmp_path):
    """A store holding only a pool: `kd labels set 1=neg` said "'neg' is not drop or a class ()"."""
    pool = tmp_path / "pool.txt"
    pool.write_text("很好\n很差\n", encoding="utf-8")
    db = str(tmp_path / "kd.db")
    kd("ingest", str(pool), "--split", "unlabeled", "--db", db)
    out = kd("labels", "set", "1=neg", "--db", db, ok=False).output
    assert "'neg' is not drop or a class (the store has none: no labeled sample was ingested)" in out, out


def test_a_clean_leaves_alone_a_label_set_by_hand_even_the_one_it_had(tmp_path):
    """A person confirmed a flagged sample's label with `kd labels set 1=pos` (the label it had: no edit
    recorded) and another relabeled sample 2 by hand before the detection flagged it; the clean relabeled
    both, overriding what a person had set. Left alone now (``skipped_set``); an undone set keeps nothing."""
    db = _hand_made_detection(tmp_path / "kd.db", ["好", "坏", "行", "差"])
    kd("labels", "set", "--run", "hand", "1=pos", "--db", db)  # a confirmation: the label it has (full width below)
    kd("labels", "set", "--run", "hand", "２＝neg", "--db", db)
    kd("labels", "set", "--run", "hand", "2=pos", "--db", db)  # set back by hand: the label the detection saw
    kd("labels", "set", "--run", "hand", "3=neg", "--db", db)
    kd("labels", "undo", "--run", "hand", "--db", db)  # 3's set undone: its label no longer one a person set
    dry = kd("labels", "clean", "--run", "r", "--dry-run", "--db", db).stdout
    assert "2 changes, 0 unchanged, 0 left alone (edited since detection), 2 left alone (set by hand); dry run" in dry, dry
    preview = {c["sample_id"]: c["effect"] for c in json.loads(kd("labels", "clean", "--run", "r", "--dry-run", "--json", "--db", db).stdout)["changes"]}
    assert preview == {1: "set", 2: "set", 3: "change", 4: "change"}
    said = kd("labels", "history", "1", "--db", db).stdout  # the confirmation on record, though it made no edit
    assert re.search(r"hand/edit-1( by \S+)?: set pos, as it was \(confirmed: no edit; set by hand\)", said), said
    assert [c["set"] for c in json.loads(kd("labels", "history", "2", "--db", db, "--json").stdout)["confirmed"]] == []  # (its edits listed)
    sheet = kd("labels", "export", "--run", "r", str(tmp_path / "review.csv"), "--db", db)  # (the reviewer is told)
    assert ("warning: samples 1, 2 had their labels set by hand (`kd labels set`, `kd labels history 1` shows it): "
            "`kd labels clean --run r` leaves them alone, a decision in this sheet overrides it") in sheet.stderr, sheet.stderr
    counts = json.loads(kd("labels", "clean", "--run", "r", "--json", "--db", db).stdout)
    assert (counts["skipped_set"], counts["relabel"]) == (2, 2)
    assert _labels(db) == {1: 0, 2: 0, 3: 1, 4: 1}  # (pos 0, neg 1)
    assert {i["sample_id"]: i["status"] for i in _issues(db)} == {1: "open", 2: "open", 3: "applied", 4: "applied"}


def test_a_sheet_whose_long_text_excel_cut_says_so(tmp_path, error_line):
    """A review of 40,000 characters: Excel keeps 32,767 in a cell and saved the sheet with it cut, which the
    import refused as "a sheet of another store, or a text a spreadsheet reformatted as a number or a date?"."""
    long = "这款手机电池不耐用" * 4445  # (40,005 characters)
    db = _hand_made_detection(tmp_path / "kd.db", [long, "好"])
    sheet = tmp_path / "review.csv"
    kd("labels", "export", "--run", "r", str(sheet), "--db", db)
    rows = list(csv.DictReader(io.StringIO(sheet.read_text(encoding="utf-8-sig"))))
    assert rows[0]["text"] == long  # (kd writes it whole)
    cut = _sheet(tmp_path / "saved.csv", [dict(rows[0], text=long[:32_767], decision="reject")])
    assert error_line(kd("labels", "import", str(cut), "--db", db, ok=False)) == (
        f"Error: {cut}: line 2: field 'text': not the text of sample 1 in this store (the first 32,767 of its 40,005 "
        "characters: Excel keeps no more in a cell, and saved it cut; leave the text cell empty)")


def test_a_clean_deciding_nothing_records_no_stage(tmp_path):
    """`clean --min-score` above every score recorded a stage of no edits named clean, and the clean
    that followed at a lower --min-score was refused as replacing it (--overwrite or --name)."""
    db = _hand_made_detection(tmp_path / "kd.db", ["好", "坏"])
    high = kd("labels", "clean", "--run", "r", "--min-score", "0.95", "--db", db).stdout
    assert high == "run r: no undecided issue scores at least --min-score 0.95 (the highest: 0.900); nothing cleaned, no stage recorded\n"
    said = json.loads(kd("labels", "clean", "--run", "r", "--min-score", "0.95", "--json", "--db", db).stdout)
    assert said["stage"] is None and "0.95" in said["nothing_to_clean"]
    # its dry run says the same, not an empty table and "0 changes" without the highest score left undecided
    dry = kd("labels", "clean", "--run", "r", "--min-score", "0.95", "--dry-run", "--db", db).stdout
    assert dry == "run r: no undecided issue scores at least --min-score 0.95 (the highest: 0.900); a clean would decide nothing (dry run: nothing written)\n"
    said = json.loads(kd("labels", "clean", "--run", "r", "--min-score", "0.95", "--dry-run", "--json", "--db", db).stdout)
    assert said["stage"] is None and said["changes"] == [] and "0.95" in said["nothing_to_clean"]
    store = Store.open(db)
    assert [st.kind for st in store.stages_of("r")] == ["detect"]
    store.close()
    kd("labels", "clean", "--run", "r", "--min-score", "0.95", "--name", "new", "--overwrite", "--db", db)  # (no stage named new to replace)
    store = Store.open(db)
    assert [st.kind for st in store.stages_of("r")] == ["detect"]
    store.close()
    assert "2 relabeled" in kd("labels", "clean", "--run", "r", "--min-score", "0.5", "--db", db).stdout  # (not refused)
    again = kd("labels", "clean", "--run", "r", "--name", "c2", "--db", db).stdout
    assert "every issue of its detection is decided" in again and "no stage recorded" in again


def test_a_dry_run_of_a_clean_deciding_nothing_names_no_stage_in_json(tmp_path):
    """`clean --dry-run --json` gives the stage the clean would write: where the clean itself records
    none (nothing scores --min-score), it said "stage": "clean" all the same, and a script read that a
    stage would be written."""
    db = _hand_made_detection(tmp_path / "kd.db", ["好", "坏"])
    dry = json.loads(kd("labels", "clean", "--run", "r", "--min-score", "0.95", "--dry-run", "--json", "--db", db).stdout)
    real = json.loads(kd("labels", "clean", "--run", "r", "--min-score", "0.95", "--json", "--db", db).stdout)
    assert dry["stage"] is None and real["stage"] is None and dry["changes"] == []
    some = json.loads(kd("labels", "clean", "--run", "r", "--min-score", "0.5", "--dry-run", "--json", "--db", db).stdout)
    assert some["stage"] == "clean" and len(some["changes"]) == 2


def test_a_dry_run_of_a_clean_gives_in_json_the_counts_the_clean_gives(tmp_path):
    """`clean --dry-run --json` carried the list of changes but none of the counts its table's last line
    and the clean's --json give (relabel, skipped_edited, ...): a script checking the preview before the
    clean read no key."""
    db = _hand_made_detection(tmp_path / "kd.db", ["好", "坏", "行"])
    kd("labels", "set", "--run", "hand", "1=neg", "--db", db)  # edited since detection: left alone
    dry = json.loads(kd("labels", "clean", "--run", "r", "--dry-run", "--json", "--db", db).stdout)
    real = json.loads(kd("labels", "clean", "--run", "r", "--json", "--db", db).stdout)
    counts = ("relabel", "drop", "flag", "reject", "unchanged", "skipped_edited", "skipped_rejected")
    assert (real["relabel"], real["skipped_edited"]) == (2, 1)
    assert {k: dry.get(k) for k in counts} == {k: real[k] for k in counts}


def test_a_clean_that_leaves_every_issue_alone_records_no_stage(tmp_path):
    """Every issue at --min-score edited by hand since detection (or, for a flag, flagged already): the clean
    changed nothing yet recorded a stage (`skipped_edited 2`; `unchanged 2`, with an undo that had nothing
    to undo), and the next clean of that name was refused as replacing it."""
    db = _hand_made_detection(tmp_path / "kd.db", ["好", "坏"])
    kd("labels", "set", "--run", "hand", "1=neg", "2=drop", "--db", db)
    for action in ("relabel", "drop", "flag", "flag"):  # (the second flag: both flagged already by the first)
        dry = json.loads(kd("labels", "clean", "--run", "r", "--action", action, "--dry-run", "--json", "--db", db).stdout)
        if action == "flag" and dry["stage"] is not None:
            kd("labels", "clean", "--run", "r", "--action", "flag", "--name", "f", "--db", db)
            continue
        assert dry["stage"] is None and {c["effect"] for c in dry["changes"]} <= {"edited", "unchanged"}
        out = kd("labels", "clean", "--run", "r", "--action", action, "--db", db).stdout
        assert "nothing cleaned, no stage recorded" in out and "--dry-run" in out, out
        said = json.loads(kd("labels", "clean", "--run", "r", "--action", action, "--json", "--db", db).stdout)
        assert said["stage"] is None and said["skipped_edited"] + said["unchanged"] == 2 and said["relabel"] == said["flag"] == 0
    store = Store.open(db)
    assert sorted(st.name for st in store.stages_of("r")) == ["detect", "f"]
    store.close()
    kd("labels", "undo", "--run", "hand", "--db", db)
    assert "2 relabeled" in kd("labels", "clean", "--run", "r", "--db", db).stdout  # (not refused as replacing a clean)

def test_every_stage_that_decided_issues_names_its_undo(tmp_path):
    """A review of rejects only (or a flagging clean) decided issues an undo reopens, but printed no
    `undo:` line: only relabels and drops did."""
    db = _hand_made_detection(tmp_path / "kd.db", ["好", "坏"])
    rejected = kd("labels", "import", str(_sheet(tmp_path / "r.csv", [{"sample_id": 1, "decision": "reject"}])), "--run", "r", "--db", db).stdout
    assert "1 rejected (label kept)" in rejected and "  undo: kd labels undo --run r --stage review" in rejected
    flagged = kd("labels", "clean", "--run", "r", "--action", "flag", "--db", db).stdout
    assert "1 flagged" in flagged and "  undo: kd labels undo --run r --stage clean" in flagged
    assert "reopened 1" in kd("labels", "undo", "--run", "r", "--stage", "clean", "--db", db).stdout
    kd("labels", "clean", "--run", "r", "--name", "c2", "--db", db)
    kd("labels", "undo", "--run", "r", "--stage", "c2", "--db", db)
    again = kd("labels", "clean", "--run", "r", "--name", "c2", "--dry-run", "--db", db, ok=False).output
    assert re.search(r"stage 'c2' of run 'r' succeeded on [0-9: -]+ UTC: kd labels undo reverted its edits since: pass --overwrite", again), again


def _hand_made_teacher(path: Path, labels: list[str]) -> str:
    """A store of train samples labeled ``labels`` (classes in order of appearance) whose run ``r``
    has an out-of-fold teacher (random logits, 2 folds): detect runs in a second, no training."""
    from kdstore.schema import KdClass, Run
    from kdstore.textkey import text_hash

    names = list(dict.fromkeys(labels))
    rng = random.Random(0)
    store = Store.open(str(path))
    with store.session() as s, s.begin():
        s.add_all([KdClass(id=i, name=n) for i, n in enumerate(names)] + [Run(id=1, uniqid="r")])
        s.flush()
        s.add(Stage(id=1, run_id=1, kind="teach", name="teach", status="succeeded", config={"classes": names, "folds": 2}))
        for i, label in enumerate(labels, start=1):
            t = f"{label}的样本{''.join(rng.choice('今天我们的这个东西') for _ in range(8))}{i}"
            s.add(Sample(id=i, text=t, text_hash=text_hash(t), split="train", label_id=names.index(label),
                         orig_label_id=names.index(label), source="x"))
    ids = list(range(1, len(labels) + 1))
    store.write_logits(1, ids, np.random.default_rng(0).normal(size=(len(ids), len(names))).astype(np.float32))
    store.write_folds(1, ids, [i % 2 for i in ids])
    store.close()
    return str(path)


def test_folds_students_copied_from_the_teacher_are_refused_as_in_sample_votes(tmp_path, error_line):
    """A `kd distill --student transformer --folds K` copying the teacher (its default at the teacher's width)
    starts each fold from layers and a head that learned the labels it is to be blind to: distill warns its
    votes are not out-of-fold, and detect took them in silence as out-of-fold ones."""
    db = _hand_made_teacher(tmp_path / "kd.db", ["pos", "neg"] * 10)
    store = Store.open(db)
    ids = list(range(1, 21))
    for sid, init in ((2, True), (3, False)):
        with store.session() as s, s.begin():
            s.add(Stage(id=sid, run_id=1, kind="distill", name=f"votes{sid}", status="succeeded",
                        config={"student": "transformer", "folds": 2, "init_from_teacher": init, "classes": ["pos", "neg"]}))
        store.write_logits(sid, ids, np.random.default_rng(sid).normal(size=(20, 2)).astype(np.float32))
        store.write_folds(sid, ids, [i % 2 for i in ids])
    store.close()
    line = error_line(kd("labels", "detect", "--run", "r", "--student-votes", "votes2", "--method", "cleanlab,ensemble", "--db", db, ok=False))
    assert "distill stage 'votes2' of run 'r'" in line and "in-sample" in line and "--no-init-from-teacher" in line, line
    assert "--student transformer" in line and "--folds 2" in line, line
    assert _count(db, LabelIssue) == 0
    kd("labels", "detect", "--run", "r", "--student-votes", "votes3", "--method", "cleanlab,ensemble", "--db", db)  # blind folds
    kd("labels", "detect", "--run", "r", "--student-votes", "votes2", "--method", "cleanlab,ensemble", "--allow-in-sample",
       "--overwrite", "--db", db)


def test_tfidf_oof_probs_refuses_labels_that_are_not_integer_class_ids():
    """Labels as floats (``[0.0, 1.0, ...]``, as pandas reads a column with a gap) passed the range check
    and the folds, then failed inside the fold loop with numpy's "IndexError: arrays used as indices must
    be of integer (or boolean) type", after fitting a TF-IDF model."""
    from kdstore.tfidf import oof_probs

    texts = ["好的很好", "很好的好", "好好的很", "差的太差", "太差的差", "差差的太"]
    with pytest.raises(ValueError, match=r"^labels must be integer class ids 0\.\.1, got dtype float64$"):
        oof_probs(texts, np.array([0.0, 0.0, 0.0, 1.0, 1.0, 1.0]), num_classes=2, folds=3)
    with pytest.raises(ValueError, match=r"^labels must be integer class ids 0\.\.1, got dtype bool$"):
        oof_probs(texts, np.array([False] * 3 + [True] * 3), num_classes=2, folds=3)
    assert oof_probs(texts, np.array([0, 0, 0, 1, 1, 1], dtype=np.int32), num_classes=2, folds=3).shape == (6, 2)


def test_tfidf_member_takes_fewer_folds_for_a_small_class_and_refuses_a_single_sample(tmp_path, error_line):
    """The TF-IDF member always cut 5 folds: a train class of 3 samples (enough for `kd teach --folds
    3`) failed detect with "--folds 5: every class needs at least 5 train samples, and id 2 (3) has
    fewer: use fewer folds", an option detect does not have, naming no class, as a failed stage."""
    from kdstore.tfidf import oof_probs

    db = _hand_made_teacher(tmp_path / "kd.db", ["pos", "neg"] * 10 + ["mid"] * 3)
    out = json.loads(kd("labels", "detect", "--run", "r", "--tfidf-member", "--method", "cleanlab,disagree,ensemble",
                        "--db", db, "--json").stdout)
    assert out["flagged"] == len(_issues(db))
    assert lab.tfidf_folds(np.array([0, 1] * 10 + [2] * 3)) == 3 and lab.tfidf_folds(np.array([0, 1] * 10)) == 5
    probs = oof_probs(["好的很好"] * 3 + ["差的太差"] * 3, np.array([0, 0, 0, 1, 1, 1]), num_classes=2, folds=3)
    assert np.allclose(probs.sum(axis=1), 1.0)
    # no n-gram in two texts of a fold: sklearn's "After pruning, no terms remain" was a traceback mid-stage
    tiny = oof_probs(["好", "坏", "甲", "乙"], np.array([0, 1, 0, 1]), num_classes=2, folds=2)
    assert tiny.shape == (4, 2) and np.allclose(tiny.sum(axis=1), 1.0)

    lonely = _hand_made_teacher(tmp_path / "lonely.db", ["pos", "neg"] * 10 + ["mid"])
    result = kd("labels", "detect", "--run", "r", "--tfidf-member", "--db", lonely, ok=False)
    assert error_line(result) == ("Error: --tfidf-member: class 'mid' has 1 train sample: out-of-fold TF-IDF probabilities "
                                  "need at least 2 of every class (leave --tfidf-member out)")
    assert [s.name for s in _open(lonely).stages_of("r")] == ["teach"]


def test_show_says_when_top_cut_the_list(tmp_path):
    """detect said "24 likely wrong labels flagged; `kd labels show` lists them" and show printed 20
    rows with nothing to say the list went on (clean --dry-run and kd samples say so)."""
    db = _hand_made_detection(tmp_path / "kd.db", ["体育新闻", "财经新闻", "科技新闻"])
    cut = kd("labels", "show", "--run", "r", "--top", "2", "--db", db).stdout
    assert cut.count("新闻") == 2 and "... 1 more issue: the 2 highest scores of 3 shown (--top 0 shows all)" in cut
    for top in ("3", "0"):
        whole = kd("labels", "show", "--run", "r", "--top", top, "--db", db).stdout
        assert whole.count("新闻") == 3 and "more issues" not in whole
    listed = kd("labels", "show", "--run", "r", "--top", "2", "--json", "--db", db)
    assert len(json.loads(listed.stdout)) == 2  # standard output stays the JSON; the cut is said on standard error
    assert listed.stderr == "warning: listed the 2 highest scores only (--top 0 for all)\n"  # (`> issues.json` kept 2 of 3 unsaid)
    for top in ("3", "0"):
        assert kd("labels", "show", "--run", "r", "--top", top, "--json", "--db", db).stderr == ""
    assert kd("labels", "show", "--run", "r", "--top", "1", "--json", "--db", db).stderr == (
        "warning: listed the highest score only (--top 0 for all)\n")  # (it said "the 1 highest scores")
    assert "... 2 more issues: the highest score of 3 shown" in kd("labels", "show", "--run", "r", "--top", "1", "--db", db).stdout


def test_undo_of_an_unknown_stage_names_it_and_history_of_an_unlabeled_sample_says_so(tmp_path, error_line):
    """``undo --stage nope`` on a run with clean stages said the run "has no clean stage to undo";
    the history of a dropped pool text read "original None, now None" and "drop (label None kept)"."""
    db = _hand_made_detection(tmp_path / "kd.db", ["好的", "差的"])
    store = _open(db)
    with store.session() as s, s.begin():
        s.add(Sample(id=3, text="池里的文本", text_hash="h3", split="unlabeled", source="x"))
    store.close()
    kd("labels", "set", "--run", "r", "3=drop", "--db", db)
    assert error_line(kd("labels", "undo", "--run", "r", "--stage", "nope", "--db", db, ok=False)) == (
        "Error: run 'r' has no clean stage 'nope' (its clean stages: edit-1)")
    assert error_line(kd("labels", "undo", "--run", "r", "--stage", "detect", "--db", db, ok=False)) == (
        "Error: run 'r' has no clean stage 'detect' (its clean stages: edit-1)")
    out = kd("labels", "history", "3", "--db", db).stdout.splitlines()
    assert out[0] == "sample 3: original (unlabeled), now (unlabeled) (dropped)"
    assert out[2].endswith("r/edit-1 by tester: drop (set by hand)") and "None" not in "".join(out)


def test_labels_set_of_an_unlabeled_sample_names_the_drop_it_takes(tmp_path, error_line):
    """`kd labels set 3=pos` of a pool text said "kd labels set edits labeled samples", while `3=drop` of it
    is what set takes (README: an unlabeled one can be dropped, not labeled): the error names the drop,
    and nothing is written."""
    db = _hand_made_detection(tmp_path / "kd.db", ["好的", "差的"])
    store = _open(db)
    with store.session() as s, s.begin():
        s.add(Sample(id=3, text="池里的文本", text_hash="h3", split="unlabeled", source="x"))
    store.close()
    line = error_line(kd("labels", "set", "--run", "r", "3=pos", "--db", db, ok=False))
    assert line == ("Error: sample 3 is unlabeled: kd labels set can drop it (3=drop), not label it "
                    "(a pool text, or one `kd distill --augment` made, takes a label as it moves into train: `kd ingest FILE "
                    "--take-pool` of a labeled copy of it)")  # (an augmented text "takes none" was so before --take-pool took them)
    store = _open(db)
    try:
        with store.session() as s:
            assert s.scalar(select(func.count()).select_from(LabelEdit)) == 0
            assert s.scalar(select(func.count()).select_from(Stage).where(Stage.kind == "clean")) == 0
    finally:
        store.close()
    kd("labels", "set", "--run", "r", "3=drop", "--db", db)


def test_labels_set_takes_ids_and_equals_typed_in_full_width(tmp_path):
    """`kd labels set ３=neg` or `3＝neg`, as a Chinese input method types them, was refused as "give
    SAMPLE_ID=LABEL": the id and the sign are read as their ASCII forms."""
    db = _hand_made_detection(tmp_path / "kd.db", ["好的", "差的"])
    kd("labels", "set", "--run", "r", "１＝neg", "２=drop", "--db", db)
    store = _open(db)
    try:
        with store.session() as s:
            edits = sorted((e.sample_id, e.action) for e in s.scalars(select(LabelEdit)))
    finally:
        store.close()
    assert edits == [(1, "relabel"), (2, "drop")], edits


def test_a_sheet_path_with_a_quoted_tilde_or_a_missing_folder_is_written_and_a_file_in_the_way_is_named(tmp_path, error_line, monkeypatch):
    """`kd labels export --run r sheets/review.csv` said a bare "No such file or directory" where kd
    export and kd report --plot make their folders; a quoted `~/review.csv` wrote nowhere (no folder
    called ~), `sheets/` wrote a file called sheets, and '' said ". exists" of the working folder."""
    db = _hand_made_detection(tmp_path / "kd.db", ["好的", "差的"])
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    out = json.loads(kd("labels", "export", "--run", "r", "~/review.csv", "--db", db, "--json").stdout)
    assert out["path"] == str(home / "review.csv") and out["issues"] == 2 and not (tmp_path / "~").exists()
    rows = list(csv.DictReader((home / "review.csv").open(encoding="utf-8-sig")))
    assert [r["text"] for r in rows] == ["好的", "差的"]
    kd("labels", "export", "--run", "r", str(tmp_path / "sheets" / "week1" / "review.jsonl"), "--db", db)
    assert len((tmp_path / "sheets" / "week1" / "review.jsonl").read_text(encoding="utf-8").splitlines()) == 2
    rows[0]["decision"] = "accept"
    _sheet(home / "review.csv", rows)
    assert kd("labels", "import", "~/review.csv", "--db", db, "--json").exit_code == 0  # read from the home folder too
    assert {i["issue_id"]: i["status"] for i in _issues(db)} == {int(rows[0]["issue_id"]): "applied", int(rows[1]["issue_id"]): "open"}
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    for path in ("afile/review.csv", "afile/deeper/review.csv"):
        assert error_line(kd("labels", "export", "--run", "r", path, "--db", db, ok=False)) == (
            f"Error: cannot write the review sheet {path}: afile is a file, not a folder")
    assert error_line(kd("labels", "export", "--run", "r", "sheets2/", "--db", db, ok=False)) == (
        "Error: sheets2/ is a folder: give the sheet's file name (sheets2/review.csv, or review.jsonl)")
    assert not (tmp_path / "sheets2").exists()
    assert error_line(kd("labels", "export", "--run", "r", "", "--db", db, ok=False)) == "Error: PATH is empty: give a file name"
    usage = kd("labels", "export", "--run", "r", "sheets", "--db", db, ok=False)  # a folder: a usage error, no traceback
    assert usage.exit_code == 2 and "'sheets' is a directory" in usage.stderr


def test_a_sheet_cut_short_by_a_full_disk_or_a_file_size_limit_is_not_left_half_written(tmp_path, error_line, monkeypatch):
    """A write that failed part way (a full disk, `ulimit -f`: File too large) left the cut sheet,
    which the same command run again then refused as "exists (a sheet someone may be filling in)"."""
    import errno

    db = _hand_made_detection(tmp_path / "kd.db", ["好的", "差的"])
    sheet = tmp_path / "review.csv"
    real = Path.open

    class Cut(io.TextIOWrapper):
        def write(self, data):  # the first few characters reach the disk, then the limit is hit
            super().write(data[:5])
            self.flush()
            raise OSError(errno.EFBIG, "File too large")

    def cut(self, mode="r", *a, **k):
        handle = real(self, mode, *a, **k)
        if self != sheet or "w" not in mode:
            return handle
        return Cut(handle.detach(), encoding=handle.encoding, newline="")

    monkeypatch.setattr(Path, "open", cut)
    assert error_line(kd("labels", "export", "--run", "r", str(sheet), "--db", db, ok=False)) == (
        f"Error: {sheet}: cannot write the review sheet: File too large")
    assert not sheet.exists()
    monkeypatch.setattr(Path, "open", real)
    kd("labels", "export", "--run", "r", str(sheet), "--db", db)
    assert [r["text"] for r in csv.DictReader(sheet.open(encoding="utf-8-sig"))] == ["好的", "差的"]


def test_a_class_named_like_a_decision_is_written_label_colon_and_the_bare_word_is_refused(tmp_path):
    """Moderation data has classes such as reject and drop: a sheet's `reject` meant for the class
    kept the label instead, and `kd labels set 42=drop` could not relabel to the class drop."""
    from kdstore.labels import read_decision

    names = ["pass", "reject", "Drop"]
    assert read_decision("pass", names, SHEET) == ("relabel", 0)
    assert read_decision("label:reject", names, SHEET) == ("relabel", 1)
    assert read_decision("Decision:Reject", names, SHEET) == ("reject", None)
    assert read_decision("ACCEPT", names, SHEET) == ("accept", None)
    assert read_decision("ＡＣＣＥＰＴ", names, SHEET) == ("accept", None)  # (a Chinese input method's full width)
    assert read_decision("label：reject", names, SHEET) == ("relabel", 1)  # (its colon too)
    assert read_decision("decision：ＲＥＪＥＣＴ", names, SHEET) == ("reject", None)
    assert read_decision("ｌａｂｅｌ:Drop", names, SHEET) == ("relabel", 2)
    assert read_decision("Label:reject", names, SHEET) == ("relabel", 1)  # (any case, as decision: is: it was "not ... or a class")
    assert read_decision("label: reject", names, SHEET) == ("relabel", 1)  # (a space after the colon, as decision: takes it: "no class ' reject'")
    assert read_decision("label：\u3000Drop", names, SHEET) == ("relabel", 2)
    for value, message in (("reject", "'reject' is a decision and also the class 'reject': write label:reject for the class, decision:reject"),
                           ("drop", "also the class 'Drop': write label:Drop"),
                           ("label:nope", "'label:nope': no class 'nope'"),
                           ("decision:keep", "'decision:keep': 'keep' is not a decision (accept, reject, drop)"),
                           ("maybe", "'maybe' is not accept, reject, drop or a class (pass, reject, Drop)"),
                           # (a class's id typed for its name: the Baidu tool's label files hold ids)
                           ("2", "'2' is not accept, reject, drop or a class (pass, reject, Drop); '2' is the id of class 'Drop': "
                                 "classes are named by their names, not ids")):
        with pytest.raises(KdError, match=re.escape(message)):
            read_decision(value, names, SHEET)
    # through kd labels set, on a store with such classes
    db = str(tmp_path / "kd.db")
    kd("ingest", str(write_tsv(tmp_path / "t.tsv", [("pass", "正常的广告文案"), ("drop", "违规的广告文案")])), "--db", db)
    line = kd("labels", "set", "--run", "m", "1=drop", "--db", db, ok=False).output
    assert "'1=drop': 'drop' is a decision and also the class 'drop'" in line
    kd("labels", "set", "--run", "m", "1=label:drop", "2=decision:drop", "--db", db)
    state = _state(db)
    names = _open(db).class_names()
    assert (state[1][0], state[1][1]) == (names.index("drop"), False) and state[2][1] is True


def test_a_decision_that_differs_from_a_class_only_in_width_case_or_spacing_names_the_class(tmp_path):
    """A class typed with a Chinese input method's full width (`ｎｅｇ`), in another case (`Neg`), with a
    space (`体育 新闻`) or as pandas writes a number (`1.0`) was refused as "'ｎｅｇ' is not accept, reject,
    drop or a class (pos, neg)": the two look the same, and the error did not say which differs."""
    from kdstore.labels import read_decision

    for value, names, twin in (("ｎｅｇ", ["pos", "neg"], "neg"), ("Neg", ["pos", "neg"], "neg"),
                               ("体育 新闻", ["体育新闻", "财经"], "体育新闻"), ("1.0", ["1", "2", "3"], "1")):
        with pytest.raises(KdError, match=re.escape(f"; {value!r} differs from the class {twin!r} only in character width or case, "
                                                    f"in white space, in a middle dot, in a variation selector or in how its number is written: write it as {twin!r}")):
            read_decision(value, names, SHEET)
    db = str(tmp_path / "kd.db")
    kd("ingest", str(write_tsv(tmp_path / "t.tsv", [("pos", "质量很好"), ("neg", "太差了")])), "--db", db)
    line = kd("labels", "set", "--run", "m", "1=ｎｅｇ", "--db", db, ok=False).output
    assert "'ｎｅｇ' differs from the class 'neg' only in character width or case" in line


SHEET = ("accept", "reject", "drop")


def test_a_sheet_with_line_breaks_in_a_row_another_delimiter_or_a_repeated_key_is_read_as_written(tmp_path, error_line):
    """A reviewer's note with a line break (Alt+Enter in Excel) made errors name the row's last line
    ("line 3" for a row on lines 2-3, "first on line 7" for a row on lines 5-7); a sheet Excel saved
    with semicolons (a comma-decimal locale), a tab-delimited one or one whose header says
    `Decision` was refused as "missing column(s) decision, sample_id"; a JSONL line naming
    `decision` twice kept the last, empty one: the decision was dropped unseen."""
    db = _hand_made_detection(tmp_path / "kd.db", ["好的", "差的", "一般"])
    state = _state(db)
    sheet = tmp_path / "note.csv"
    sheet.write_text('run,sample_id,decision,note\r\nr,1,maybe,"看过了\r\n第二行, 逗号"\r\nr,2,,\r\n', encoding="utf-8-sig")
    assert "note.csv: line 2: field 'decision': 'maybe' is not" in error_line(kd("labels", "import", str(sheet), "--db", db, ok=False))
    sheet.write_text('run,sample_id,decision,note\nr,2,drop,\nr,1,drop,"a\nb\nc"\n\nr,1,reject,\n', encoding="utf-8")
    assert "note.csv: line 7: field 'sample_id': sample 1 is decided twice (first on line 3)" in error_line(
        kd("labels", "import", str(sheet), "--db", db, ok=False))
    repeated = tmp_path / "twice.jsonl"
    repeated.write_text('{"run": "r", "sample_id": 2, "decision": "reject"}\n{"run": "r", "sample_id": 1, "decision": "drop", "decision": ""}\n',
                        encoding="utf-8")
    assert "twice.jsonl: line 2: field 'decision': the object names this key twice" in error_line(
        kd("labels", "import", str(repeated), "--db", db, ok=False))
    assert _state(db) == state and _count(db, LabelEdit) == 0
    semicolons = tmp_path / "europe.csv"
    semicolons.write_text("Run;Issue_ID;Sample_ID;Text;Score;Decision \r\nr;1;1;好的;0,9;Drop\r\nr;2;2;差的;0,8;\r\n", encoding="utf-8-sig")
    assert json.loads(kd("labels", "import", str(semicolons), "--db", db, "--json").stdout)["drop"] == 1
    tabs = tmp_path / "tabs.txt"
    tabs.write_text("sample_id\ttext\tdecision\n3\t一般\tneg\n2\t差的\t\n", encoding="utf-8")
    assert json.loads(kd("labels", "import", "--run", "r", str(tabs), "--db", db, "--json").stdout)["relabel"] == 1
    after = _state(db)
    assert after[1][1] is True and after[3][0] == 1 and after[2] == state[2]
    cased = tmp_path / "cased.jsonl"  # JSONL keys in other case were ignored: that line's decision skipped unseen
    cased.write_text('{"Run": "r", "Sample_ID": 2, "Decision": "drop", "decision": ""}\n', encoding="utf-8")
    assert "cased.jsonl: line 1: field 'decision': the object names the sheet's 'decision' twice" in error_line(
        kd("labels", "import", str(cased), "--db", db, ok=False))
    cased.write_text('{"Run": "r", "Sample_ID": 2, "Decision": "drop"}\n', encoding="utf-8")
    assert json.loads(kd("labels", "import", str(cased), "--db", db, "--json").stdout)["drop"] == 1
    assert _state(db)[2][1] is True


def test_a_row_whose_cells_left_their_columns_or_a_run_of_no_detection_is_one_line_naming_it(tmp_path, error_line):
    """A decision typed one column off (past the header, or under a header cell Excel left empty)
    and a row with a cell left out (``r,1,drop``: sample_id 'drop', no decision) were read as rows
    without a decision and skipped unseen while the sheet's other rows applied; a sheet naming a run
    the store lacks (a sheet of another store) said "no run" without its line or field; a header
    with a second byte-order mark (a sheet read as plain UTF-8 and saved again) lost its run column,
    and blank lines before a semicolon header hid the delimiter."""
    db = _hand_made_detection(tmp_path / "kd.db", ["好的", "差的", "一般"])
    state = _state(db)
    bad = {
        "off.csv": ("run,issue_id,sample_id,decision\r\nr,1,1,,Drop \r\nr,2,2,reject\r\n",
                    "off.csv: line 2: field 'decision': empty, while column 5 ('Drop') is under no header"),
        "unnamed.csv": ("run,issue_id,sample_id,decision,\r\nr,2,2,reject,\r\nr,1,1,,neg\r\n",
                        "unnamed.csv: line 3: field 'decision': empty, while column 5 ('neg') is under no header"),
        "short.csv": ("run,issue_id,sample_id,decision\r\nr,1,drop\r\nr,2,2,reject\r\n",
                      "short.csv: line 2: field 'sample_id': not an id (a whole number): 'drop', and the row has no decision"),
        "other.csv": ("run,sample_id,decision\r\n,3,\r\nr2,1,drop\r\n", "other.csv: line 3: field 'run': no run 'r2' in"),
    }
    for name, (content, expected) in bad.items():
        (tmp_path / name).write_text(content, encoding="utf-8")
        assert expected in error_line(kd("labels", "import", str(tmp_path / name), "--db", db, ok=False)), name
    assert _state(db) == state and _count(db, LabelEdit) == 0
    assert [s.kind for s in _open(db).stages_of("r")] == ["detect"]
    # a note under no header beside a decision, and an undecided row without its empty last cell, are read as written
    noted = tmp_path / "noted.csv"
    noted.write_text("run,issue_id,sample_id,decision\r\nr,1,1,drop,看过\r\nr,2,2,,不确定\r\nr,3,3\r\n", encoding="utf-8")
    assert json.loads(kd("labels", "import", str(noted), "--db", db, "--json").stdout)["drop"] == 1
    assert _state(db)[2] == state[2] and _state(db)[3] == state[3] and _state(db)[1][1] is True
    twice_bom = tmp_path / "bom.csv"
    twice_bom.write_bytes("\ufeffrun,sample_id,decision\r\nr,2,neg\r\n".encode("utf-8-sig"))
    assert json.loads(kd("labels", "import", str(twice_bom), "--db", db, "--json").stdout)["relabel"] == 1
    blank_first = tmp_path / "blank.csv"
    blank_first.write_text("\r\n\r\nrun;sample_id;decision\r\nr;3;reject\r\n", encoding="utf-8")
    assert json.loads(kd("labels", "import", str(blank_first), "--db", db, "--json").stdout)["reject"] == 1
    assert [i["status"] for i in _issues(db)] == ["applied", "applied", "rejected"]



def test_a_sheet_saved_by_pandas_with_its_index_column_is_read_in_a_store_of_numbered_classes(tmp_path, error_line):
    """``DataFrame.to_csv`` writes its index first, under an empty header cell: in a store whose
    classes are named 0 and 1 (most Chinese sentiment sets) the index 0 or 1 of an undecided row was
    taken for a decision typed one column off, and the whole sheet refused. A first column without a
    header whose cells are distinct whole numbers is an index; a decision typed one column off is still refused."""
    from kdstore.schema import KdClass

    db = _hand_made_detection(tmp_path / "kd.db", ["好的", "差的", "一般"])
    store = _open(db)
    with store.session() as s, s.begin():  # (pos, neg renamed as a 0/1-labeled set names them)
        s.execute(update(KdClass).where(KdClass.id == 0).values(name="1"))
        s.execute(update(KdClass).where(KdClass.id == 1).values(name="0"))
    store.close()
    sheet = tmp_path / "review.csv"
    kd("labels", "export", "--run", "r", str(sheet), "--db", db)
    rows = list(csv.DictReader(sheet.open(encoding="utf-8-sig")))
    rows[2]["decision"] = "accept"
    edited = tmp_path / "edited.csv"
    with edited.open("w", encoding="utf-8", newline="") as fh:  # as pandas writes it: df.to_csv(path)
        w = csv.writer(fh)
        w.writerow(["", *rows[0]])
        w.writerows([i, *r.values()] for i, r in enumerate(rows))
    state = _state(db)
    out = json.loads(kd("labels", "import", str(edited), "--db", db, "--json").stdout)
    assert (out["relabel"], out["reject"], out["drop"]) == (1, 0, 0)
    assert {k: v for k, v in _state(db).items() if v != state[k]} == {3: (1, False, 0)}
    # a decision under an empty first header cell, beside another row's, is still one typed one column off
    off = tmp_path / "off.csv"
    off.write_text(",run,sample_id,decision\r\n0,r,1,\r\n0,r,2,\r\n", encoding="utf-8")
    assert "off.csv: line 2: field 'decision': empty, while column 1 ('0') is under no header" in error_line(
        kd("labels", "import", str(off), "--db", db, ok=False))


def test_a_reject_of_a_label_changed_since_the_sheet_was_exported_is_refused(tmp_path, error_line):
    """A reviewer rejected the suggestion `neg` to keep the `pos` the sheet showed; the sample had been
    set to `neg` by hand since the export, and the import kept `neg` ("reject, label neg kept (r/detect
    suggested neg)"): the label the reviewer called wrong. A reject whose `current` cell is not the
    label now is refused; a class written out, or a fresh sheet, decides it."""
    db = _hand_made_detection(tmp_path / "kd.db", ["好的", "差的", "一般"])
    sheet = tmp_path / "review.csv"
    kd("labels", "export", "--run", "r", str(sheet), "--db", db)
    rows = list(csv.DictReader(io.StringIO(sheet.read_text(encoding="utf-8-sig"))))
    assert [r["current"] for r in rows] == ["pos"] * 3
    kd("labels", "set", "--run", "h", "1=neg", "2=drop", "--db", db)
    state, edits = _state(db), _count(db, LabelEdit)
    for first in ("reject", "Decision:Reject"):
        _sheet(sheet, [dict(rows[0], decision=first), dict(rows[1], decision="accept")])
        assert "review.csv: line 2: field 'current': sample 1 is 'neg' now, not 'pos' (its label changed since the sheet was exported)" in error_line(
            kd("labels", "import", str(sheet), "--db", db, ok=False))
    _sheet(sheet, [dict(rows[1], decision="reject")])
    assert "line 2: field 'current': sample 2 is 'pos (dropped)' now, not 'pos'" in error_line(kd("labels", "import", str(sheet), "--db", db, ok=False))
    assert _state(db) == state and _count(db, LabelEdit) == edits and {i["status"] for i in _issues(db)} == {"open"}
    # the other decisions name their label; a fresh sheet's reject keeps the label it shows
    _sheet(sheet, [dict(rows[0], decision="pos"), dict(rows[1], decision="drop"), dict(rows[2], decision="reject")])
    counts = json.loads(kd("labels", "import", str(sheet), "--db", db, "--json").stdout)
    assert (counts["relabel"], counts["unchanged"], counts["reject"]) == (1, 1, 1) and _state(db)[1][0] == 0
    kd("labels", "undo", "--run", "r", "--db", db)
    fresh = tmp_path / "fresh.csv"
    kd("labels", "export", "--run", "r", str(fresh), "--db", db)
    rows = list(csv.DictReader(io.StringIO(fresh.read_text(encoding="utf-8-sig"))))
    assert [r["current"] for r in rows] == ["neg", "pos (dropped)", "pos"]
    counts = json.loads(kd("labels", "import", str(_sheet(fresh, [dict(r, decision="reject") for r in rows])), "--db", db, "--json").stdout)
    assert counts["reject"] == 3 and _state(db) == state
    assert "reject, label neg kept" in kd("labels", "history", "1", "--db", db).stdout


def test_a_sheet_in_big5_is_named_big5_not_gbk(tmp_path, error_line):
    """Excel in Taiwan or Hong Kong saves "CSV" as Big5 (CP950): the sheet was guessed "GBK/GB18030, as Excel
    saves CSV on Chinese Windows?", as kd ingest no longer names such a file."""
    db = _hand_made_detection(tmp_path / "kd.db", ["很好", "很差", "普通"])
    sheet = tmp_path / "review.csv"
    sheet.write_bytes("run,sample_id,text,decision\r\nr,1,很好,drop\r\n".encode("cp950"))
    line = error_line(kd("labels", "import", str(sheet), "--db", db, ok=False))
    assert "review.csv: line 2: field 'text': not UTF-8 (byte 0xab: Big5, as Excel saves CSV in Taiwan and Hong Kong?)" in line
    assert "GBK" not in line and _count(db, LabelEdit) == 0
    sheet.write_bytes("run,sample_id,text,decision\r\nr,1,很好,drop\r\n".encode("gbk"))  # (GBK is still named GBK)
    assert "(byte 0xba: GBK/GB18030, as Excel saves CSV on Chinese Windows?)" in error_line(kd("labels", "import", str(sheet), "--db", db, ok=False))


def test_a_sheet_in_gbk_after_a_utf8_byte_order_mark_and_an_id_excel_reformatted_are_named_as_they_are(tmp_path, error_line):
    """A GBK sheet that kept the UTF-8 byte-order mark named the field 3 bytes before the bad one
    ("field 'sample_id': ... byte 0x38", the text's the real one); an undecided row whose id Excel wrote
    as 1.09E+02 said "its cells are not under their columns (4 fields, the header 4: a cell left out?)"."""
    db = _hand_made_detection(tmp_path / "kd.db", ["好的", "差的", "一般"])
    sheet = tmp_path / "review.csv"
    sheet.write_bytes(b"\xef\xbb\xbf" + "run,sample_id,text,decision\r\nr,13,好的,drop\r\n".encode("gbk"))
    assert "review.csv: line 2: field 'text': not UTF-8 (byte 0xba:" in error_line(kd("labels", "import", str(sheet), "--db", db, ok=False))
    sheet.write_text("run,sample_id,text,decision\r\nr,1,好的,drop\r\nr,1.09E+02,差的,\r\n", encoding="utf-8-sig")
    line = error_line(kd("labels", "import", str(sheet), "--db", db, ok=False))
    assert "line 3: field 'sample_id': not an id (a whole number): '1.09E+02', and the row has no decision: a spreadsheet wrote the id as a number" in line
    assert "a cell left out" not in line and _count(db, LabelEdit) == 0

def test_a_clean_that_empties_a_class_of_its_train_samples_says_so(tmp_path):
    """Dropping every flagged sample can take a rare class's last train sample (a moderation task's
    few positives, all flagged against the majority): the next teach would never learn the class."""
    db = _hand_made_detection(tmp_path / "kd.db", ["好的", "差的", "一般"])
    out = kd("labels", "clean", "--run", "r", "--action", "drop", "--db", db, "--json")
    assert "warning: class 'pos' has no train sample left" in out.output and "kd labels undo --run r --stage" in out.output
    assert any("class 'pos' has no train sample left" in w for w in json.loads(out.stdout)["warnings"])
    kd("labels", "undo", "--run", "r", "--db", db)
    again = kd("labels", "clean", "--run", "r", "--action", "relabel", "--min-score", "0.95", "--db", db, "--overwrite")
    assert "no train sample left" not in again.output  # (nothing changed)
    # several classes emptied at once (a weak teacher's clean) read "class 'a', 'b' has ... learn it"
    kd("labels", "set", "--run", "r", "3=neg", "--db", db)
    both = kd("labels", "set", "--run", "r", "1=drop", "2=drop", "3=drop", "--db", db)
    assert "warning: classes 'pos', 'neg' have no train sample left: a teacher or student would never learn them" in both.output


def test_a_dry_run_clean_that_would_empty_a_class_says_so(tmp_path):
    """The clean itself warned that it took a rare class's last train sample, its --dry-run (the
    preview a person judges first) said nothing: ``"warnings": []`` for the same changes."""
    db = _hand_made_detection(tmp_path / "kd.db", ["好的", "差的", "一般"])
    dry = kd("labels", "clean", "--run", "r", "--action", "drop", "--dry-run", "--db", db, "--json")
    assert "warning: class 'pos' would have no train sample left" in dry.stderr and "kd labels undo" not in dry.stderr
    assert any("'pos' would have no train sample left" in w for w in json.loads(dry.stdout)["warnings"])
    assert _count(db, LabelEdit) == 0
    assert "no train sample left" not in kd("labels", "clean", "--run", "r", "--dry-run", "--min-score", "0.95", "--db", db).output


def _rare_class_never_answered(tmp_path, class_weight: str | None = None) -> str:
    """A store of ads whose out-of-fold teacher answers 'ok' for every 'contact' (6 % of train);
    ``class_weight``: recorded as the teacher's ``--class-weight``."""
    db = _hand_made_teacher(tmp_path / "kd.db", ["ok"] * 60 + ["exaggerated"] * 34 + ["contact"] * 6)
    store = Store.open(db)
    labels = store.samples(splits=["train"]).labels
    logits = np.full((len(labels), 3), -4.0, dtype=np.float32)
    logits[np.arange(len(labels)), np.where(labels == 2, 0, labels)] = 4.0  # 'contact' answered 'ok'
    with store.engine.begin() as conn:
        conn.execute(Logit.__table__.delete())
        if class_weight:
            conn.execute(Stage.__table__.update().where(Stage.__table__.c.id == 1).values(
                config={"classes": ["ok", "exaggerated", "contact"], "folds": 2, "class_weight": class_weight}))
    store.write_logits(1, store.samples(splits=["train"]).ids, logits)
    store.close()
    return db


def test_labels_show_that_lists_nothing_says_why(tmp_path):
    """`kd labels show --status flagged` of a detection with no flagged issue printed an empty table (or []) and
    no word: read as "nothing wrong", where the issues were all open."""
    db = _rare_class_never_answered(tmp_path)
    kd("labels", "detect", "--run", "r", "--db", db)
    for extra in ([], ["--json"]):
        empty = kd("labels", "show", "--run", "r", "--status", "flagged", *extra, "--db", db)
        assert "note: the detection of run r holds no flagged issue (its issues: open 6)" in empty.stderr, empty.stderr
    assert json.loads(kd("labels", "show", "--run", "r", "--status", "flagged", "--json", "--db", db).stdout) == []
    assert "note:" not in kd("labels", "show", "--run", "r", "--db", db).stderr
    store = Store.open(db)  # a teacher that answers every label: nothing flagged
    train = store.samples(splits=["train"])
    right = np.full((len(train), 3), -4.0, dtype=np.float32)
    right[np.arange(len(train)), train.labels] = 4.0
    with store.engine.begin() as conn:
        conn.execute(Logit.__table__.delete())
    store.write_logits(1, train.ids, right)
    store.close()
    kd("labels", "detect", "--run", "r", "--overwrite", "--db", db)
    assert "note: the detection of run r flagged no label" in kd("labels", "show", "--run", "r", "--db", db).stderr


def test_a_big_detection_shows_its_progress(tmp_path, monkeypatch):
    """110,000 train labels were some 7 s of cleanlab and scoring with nothing on screen (500,000, some 20 s):
    a big detection shows a bar with its count and rate; a small one none."""
    db = _rare_class_never_answered(tmp_path)
    monkeypatch.delenv("KD_NO_PROGRESS", raising=False)
    small = kd("labels", "detect", "--run", "r", "--db", db)
    assert "detecting wrong labels" not in small.stderr
    monkeypatch.setattr("commands.labels.DETECT_BAR_FROM", 50)
    big = kd("labels", "detect", "--run", "r", "--overwrite", "--db", db)
    bars = [line for line in big.stderr.splitlines() if line.startswith("detecting wrong labels (run r)")]
    assert bars and all(" 100/100 " in line and " labels/s " in line for line in bars), big.stderr


def test_a_rare_class_the_teacher_never_answers_is_warned_of(tmp_path):
    """Ads: a violation class of 6 % that the teacher never answers out of fold. Every one of its labels was
    flagged and `kd labels clean` would relabel them all, while the overall figures (agreement 94 % against a
    60 % majority, 6 % flagged) said nothing was amiss. Detect, and the clean's dry run, name the class."""
    db = _rare_class_never_answered(tmp_path)
    out = kd("labels", "detect", "--run", "r", "--db", db, "--json")
    said = "6 of the 6 train labels of class 'contact' (100%) flagged: the teacher seldom answers that class out of fold"
    assert f"warning: {said}" in out.stderr and out.stderr.count("warning: ") == 1
    assert any(w.startswith(said) for w in json.loads(out.stdout)["warnings"])
    figures = {m.name: m.value for m in _open(db).metrics(_open(db).find_stage("r", "detect").id)}
    assert (figures["train_samples[contact]"], figures["flagged_of[contact]"], figures["flagged_of[ok]"]) == (6, 6, 0)
    assert said in kd("labels", "clean", "--run", "r", "--dry-run", "--db", db).stderr
    assert "`kd teach --class-weight balanced`" in out.stderr  # (this teacher weighed its classes alike)


def test_a_rare_class_warning_advises_no_class_weight_the_teacher_already_had(tmp_path):
    """The teacher was trained with `--class-weight balanced` and still never answers the rare class:
    the warning told the user to train it with `kd teach --class-weight balanced`, what it already was."""
    db = _rare_class_never_answered(tmp_path, class_weight="balanced")
    out = kd("labels", "detect", "--run", "r", "--db", db, "--json")
    assert "6 of the 6 train labels of class 'contact' (100%) flagged" in out.stderr
    assert "--class-weight balanced" not in out.stderr and "--class-weight" not in out.stdout
    assert "--class-weight balanced" not in kd("labels", "clean", "--run", "r", "--dry-run", "--db", db).stderr


def test_a_rare_class_the_students_never_answer_names_them_not_the_teacher(tmp_path):
    """With --student-votes, a class the teacher answers every time out of fold but the fold students never do
    was flagged through the ensemble's average, and the warning blamed the teacher ("the teacher seldom answers
    that class") and advised retraining it: it names the members that miss the class, with each one's share."""
    db = _hand_made_teacher(tmp_path / "kd.db", ["ok"] * 60 + ["exaggerated"] * 34 + ["contact"] * 6)
    store = Store.open(db)
    train = store.samples(splits=["train"])
    right = np.full((len(train), 3), -4.0, dtype=np.float32)
    right[np.arange(len(train)), train.labels] = 4.0  # the teacher: every label answered
    with store.engine.begin() as conn:
        conn.execute(Logit.__table__.delete())
    store.write_logits(1, train.ids, right)
    for sid in (2, 3):  # two out-of-fold TextCNNs that answer 'ok' for every 'contact'
        with store.session() as s, s.begin():
            s.add(Stage(id=sid, run_id=1, kind="distill", name=f"cnn{sid}", status="succeeded",
                        config={"student": "textcnn", "folds": 2, "classes": ["ok", "exaggerated", "contact"],
                                **({"class_weight": "balanced"} if sid == 3 else {})}))
        wrong = right.copy()
        wrong[train.labels == 2] = [4.0, -4.0, -4.0]
        store.write_logits(sid, train.ids, wrong)
        store.write_folds(sid, train.ids, [i % 2 for i in train.ids])
    store.close()
    out = kd("labels", "detect", "--run", "r", "--student-votes", "cnn2", "--student-votes", "cnn3", "--combine", "union", "--db", db, "--json")
    (said,) = [w for w in json.loads(out.stdout)["warnings"] if "train labels of class 'contact'" in w]
    assert said.startswith("6 of the 6 train labels of class 'contact' (100%) flagged: student 'cnn2' of run 'r' and student 'cnn3' "
                           "of run 'r' seldom answer that class out of fold (each member's share of them answered 'contact': "
                           "the teacher 100%, student 'cnn2' of run 'r' 0%, student 'cnn3' of run 'r' 0%)"), said
    assert "the teacher seldom" not in out.stderr and "kd teach" not in said
    # the remedy of the student that weighed its classes alike, not of the one already balanced
    assert said.endswith("or distill stronger students (`kd distill --run r --student textcnn --folds 2 --name cnn2 "
                         "--class-weight balanced --overwrite` with the other options `kd report --run r` lists for it) first"), said
    assert said in kd("labels", "clean", "--run", "r", "--dry-run", "--db", db).stderr  # (read back from the stored figures)
    figures = {m.name: m.value for m in _open(db).metrics(_open(db).find_stage("r", "detect").id)}
    assert (figures["member0/answered[contact]"], figures["member1/answered[contact]"], figures["member2/answered[ok]"]) == (1.0, 0.0, 1.0)
    kd("runs", "delete", "--run", "r", "--stage", "cnn2", "--yes", "--db", db)  # gone since: no command made up of defaults for it
    (again,) = [w for w in json.loads(kd("labels", "clean", "--run", "r", "--dry-run", "--json", "--db", db).stdout)["warnings"]
                if "train labels of class 'contact'" in w]
    assert again.endswith("rather than clean them, or distill stronger students first"), again


def test_undoing_a_flag_restores_no_label_and_waits_for_no_later_edit(db):
    """A flag changes no label: its undo puts back neither a label nor the dropped flag it recorded
    (a drop undone since stayed undone; the sample was dropped again), and a later relabel or drop
    of a flagged sample does not block it (it named another run's clean to undo first)."""
    kd("labels", "detect", "--run", "r", "--db", db)
    kd("labels", "detect", "--run", "b", "--teacher-run", "r", "--db", db)  # the same flags, another run
    before = _state(db)
    kd("labels", "clean", "--run", "r", "--action", "drop", "--name", "dr", "--db", db)
    kd("labels", "clean", "--run", "b", "--action", "flag", "--name", "fl", "--db", db)  # flags dropped samples
    kd("labels", "undo", "--run", "r", "--stage", "dr", "--db", db)
    assert _state(db) == before
    kd("labels", "undo", "--run", "b", "--stage", "fl", "--db", db)
    assert _state(db) == before  # not dropped again
    kd("labels", "clean", "--run", "b", "--action", "flag", "--name", "fl2", "--db", db)
    kd("labels", "clean", "--run", "r", "--name", "cl", "--db", db)  # relabels the samples b flagged
    relabeled = _state(db)
    assert relabeled != before
    kd("labels", "undo", "--run", "b", "--stage", "fl2", "--db", db)
    assert _state(db) == relabeled and {i["status"] for i in _issues(db, "b")} == {"open"}
    kd("labels", "undo", "--run", "r", "--stage", "cl", "--db", db)
    assert _state(db) == before


def test_a_refused_clean_prints_its_one_line_and_no_warning(db):
    """The detection's warnings come with a clean that ran (or a dry run), not before a refusal: a
    refused clean printed them, then its error."""
    store = _open(db)
    with store.engine.begin() as conn:  # every binary label turned over: the teacher disagrees with most of them
        conn.execute(update(Sample).where(Sample.split == "train").values(label_id=1 - Sample.label_id))
    store.close()
    kd("labels", "detect", "--run", "r", "--db", db)
    done = kd("labels", "clean", "--run", "r", "--db", db)
    assert "stronger teacher" in done.stderr
    before = _state(db)
    refused = kd("labels", "clean", "--run", "r", "--db", db, ok=False)
    assert refused.stderr.startswith("Error: stage 'clean' of run 'r'") and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert _state(db) == before


def test_a_sheet_or_a_hand_edit_that_empties_a_class_says_so_as_clean_does(tmp_path):
    """``kd labels clean`` warned when it took a class's last train sample; a review sheet or
    ``kd labels set`` that did the same said nothing (their --json warnings were always [])."""
    db = _hand_made_detection(tmp_path / "kd.db", ["好的", "差的"])
    sheet = tmp_path / "review.csv"
    sheet.write_text("run,sample_id,decision\nr,1,drop\nr,2,neg\n", encoding="utf-8")
    out = kd("labels", "import", str(sheet), "--db", db, "--json")
    assert "warning: class 'pos' has no train sample left" in out.output and "kd labels undo --run r --stage review" in out.output
    assert any("'pos' has no train sample left" in w for w in json.loads(out.stdout)["warnings"])
    kd("labels", "undo", "--run", "r", "--db", db)
    edited = kd("labels", "set", "--run", "r", "1=neg", "--db", db, "--json")
    assert json.loads(edited.stdout)["warnings"] == []  # sample 2 is still pos
    emptied = kd("labels", "set", "--run", "r", "2=drop", "--db", db, "--json")
    assert "kd labels undo --run r --stage edit-2" in json.loads(emptied.stdout)["warnings"][0]


def test_a_class_of_one_train_sample_is_named_in_a_warning_not_cleanlabs_raw_one(tmp_path):
    """A class left with one train sample (the other dropped by hand) made cleanlab print its own
    `UserWarning: May not flag all label issues in class: 2` on standard error: a Python warning with
    cleanlab's file and line, naming a column of the detection, not the class, and missing from
    --json's warnings."""
    import warnings

    db = _hand_made_teacher(tmp_path / "kd.db", ["pos", "neg"] * 10 + ["mid"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = kd("labels", "detect", "--run", "r", "--db", db, "--json")
    assert not [w for w in caught if "May not flag all label issues" in str(w.message)]
    said = [w for w in json.loads(out.stdout)["warnings"] if "single train sample" in w]
    assert said == ["class 'mid' has a single train sample: confident learning (cleanlab) needs two of a class to judge "
                    "a label, so only the other methods can flag it"]
    assert f"warning: {said[0]}" in out.stderr and "UserWarning" not in out.stderr
    # two such classes: "class 'mid', 'low' has a single train sample ... flag them" read as one class
    two = _hand_made_teacher(tmp_path / "two.db", ["pos", "neg"] * 10 + ["mid", "low"])
    said = [w for w in json.loads(kd("labels", "detect", "--run", "r", "--db", two, "--json").stdout)["warnings"] if "single train" in w]
    assert said == ["classes 'mid', 'low' have a single train sample each: confident learning (cleanlab) needs two of a class "
                    "to judge a label, so only the other methods can flag them"]
    # a filter that does not prune per class, or no cleanlab method: nothing to say
    for args in (["--filter-by", "confident_learning"], ["--method", "disagree"]):
        again = kd("labels", "detect", "--run", "r", "--db", db, "--json", "--overwrite", *args)
        assert not any("single train sample" in w for w in json.loads(again.stdout)["warnings"])
    # cleanlab alone: "only the other methods can flag it" named methods the detection did not run
    alone = kd("labels", "detect", "--run", "r", "--db", db, "--json", "--overwrite", "--method", "cleanlab")
    said = [w for w in json.loads(alone.stdout)["warnings"] if "single train sample" in w]
    assert said == ["class 'mid' has a single train sample: confident learning (cleanlab) needs two of a class to judge "
                    "a label, and --method cleanlab runs no other method: this detection cannot flag it (--method cleanlab,disagree can)"]


def _teacher_logits(db: str, logits: np.ndarray) -> None:
    """The hand-made teacher's (``_hand_made_teacher``) logits replaced by ``logits``, one row per sample in id order."""
    from kdstore.schema import Logit

    store = _open(db)
    with store.engine.begin() as conn:
        conn.execute(delete(Logit))
    store.write_logits(1, list(range(1, len(logits) + 1)), np.asarray(logits, dtype=np.float32))
    store.close()


def test_the_teachers_agreement_is_judged_over_the_classes_the_detection_judges(tmp_path):
    """Every train sample of class 'mid' dropped: the detection runs over pos and neg, where the teacher
    sides with 18 of the 20 labels. Its agreement was counted over every class, its preference for
    'mid' (which no issue can suggest) as disagreement: "agree with 0.0% of the given labels ... most
    flags are its own errors; train a stronger teacher", of a teacher right on 90 % of them."""
    db = _hand_made_teacher(tmp_path / "kd.db", ["pos", "neg"] * 10 + ["mid"] * 2)
    logits = np.zeros((22, 3))
    logits[:, 2] = 5.0  # 'mid' first everywhere
    logits[np.arange(20), np.arange(20) % 2] = 2.0  # then the given label ...
    logits[[0, 2], :2] = [[0.0, 2.0], [0.0, 2.0]]  # ... but for two pos labels the teacher finds neg
    _teacher_logits(db, logits)
    kd("labels", "set", "--run", "r", "21=drop", "22=drop", "--db", db)
    out = json.loads(kd("labels", "detect", "--run", "r", "--db", db, "--json").stdout)
    assert not [w for w in out["warnings"] if "stronger teacher" in w], out["warnings"]
    store = _open(db)
    figures = {m.name: m.value for m in store.metrics(store.find_stage("r", "detect").id)}
    store.close()
    assert figures["oof_accuracy"] == pytest.approx(0.9)
    assert {i["sample_id"] for i in _issues(db)} <= {1, 3} and {i["suggested"] for i in _issues(db)} <= {"neg"}


def test_non_finite_teacher_logits_are_refused_before_a_stage_naming_the_samples(tmp_path, error_line):
    """A teacher whose logits hold a NaN or an inf (fp16 autocast overflowing) started a detect stage, printed
    numpy's RuntimeWarning and failed it with "pred_probs has non-finite values (NaN or inf) in 2 row(s),
    first row 3": a row of the detection, not a sample, and a failed stage on record."""
    db = _hand_made_teacher(tmp_path / "kd.db", ["pos", "neg"] * 10)
    logits = np.random.default_rng(0).normal(size=(20, 2))
    logits[3], logits[5, 0] = np.nan, np.inf
    _teacher_logits(db, logits)
    result = kd("labels", "detect", "--run", "r", "--db", db, ok=False)
    assert error_line(result) == ("Error: 2 train samples (4, 6) have NaN or infinite logits from the teacher of run 'r' "
                                  "(a training that diverged?): re-run `kd teach --run r ... --overwrite`")
    assert "RuntimeWarning" not in result.output
    assert [s.name for s in _open(db).stages_of("r")] == ["teach"]


def test_a_dry_run_clean_is_refused_as_the_real_one_would_be(tmp_path, error_line):
    """`clean --dry-run` listed its changes under `"stage": "clean"` while a succeeded clean of that
    name stood, and the real run was then refused: the dry run says what the real run would."""
    db = _hand_made_detection(tmp_path / "kd.db", ["好的", "差的", "一般"])
    kd("labels", "clean", "--run", "r", "--action", "flag", "--db", db)
    before = _state(db)
    real = error_line(kd("labels", "clean", "--run", "r", "--db", db, ok=False))
    dry = kd("labels", "clean", "--run", "r", "--dry-run", "--db", db, "--json", ok=False)
    assert error_line(dry) == real and dry.stdout == "" and "stage 'clean' of run 'r' succeeded" in real
    overwrite = kd("labels", "clean", "--run", "r", "--dry-run", "--overwrite", "--db", db, ok=False)  # its flags stand
    assert "has 3 flags that are not undone" in error_line(overwrite)  # (a flag changes no label: no label edits)
    assert "kept for teach stages" in error_line(kd("labels", "clean", "--run", "r", "--dry-run", "--name", "teach", "--db", db, ok=False))
    other = json.loads(kd("labels", "clean", "--run", "r", "--dry-run", "--name", "c2", "--db", db, "--json").stdout)
    assert other["stage"] == "c2" and len(other["changes"]) == 3
    kd("labels", "undo", "--run", "r", "--db", db)
    assert json.loads(kd("labels", "clean", "--run", "r", "--dry-run", "--overwrite", "--db", db, "--json").stdout)["dry_run"]
    assert _state(db) == before


def test_a_dry_run_judges_a_clean_left_running_by_a_gone_process_as_the_real_run_does(tmp_path, error_line):
    """A clean stage whose process is gone: the real run marks it failed (its edits reverted: a failed
    stage changes no label) and takes its name; the dry run judges it alike (it refused, saying its
    edits stand)."""
    import socket

    from kdstore.runs import _machine

    db = _hand_made_teacher(tmp_path / "kd.db", ["pos", "neg"] * 10)
    kd("labels", "detect", "--run", "r", "--db", db)
    kd("labels", "clean", "--run", "r", "--min-score", "0.505", "--db", db)  # some edits that stand
    store = _open(db)
    with store.engine.begin() as conn:  # as a clean killed outright leaves it: running, by a process that is gone
        conn.execute(update(Stage).where(Stage.name == "clean").values(
            status="running", host=socket.gethostname(), process=f"999999999:1:{_machine()}"))
    store.close()
    edited = _state(db)
    dry = kd("labels", "clean", "--run", "r", "--dry-run", "--overwrite", "--db", db)
    assert "dry run: nothing written" in dry.stdout and _state(db) == edited
    kd("labels", "clean", "--run", "r", "--overwrite", "--db", db)  # its edits reverted, then the clean made again
    assert _read(db, select(Stage.status).where(Stage.name == "clean")) == [("succeeded",)]


def test_a_detection_whose_overwrite_is_refused_is_not_the_one_advised(tmp_path):
    """The advice after an undo (and after a teacher or votes replaced) named `kd labels detect --run r
    --overwrite`, which is refused while a clean's edits of the detection's issues stand: it names a
    detection in a new run then."""
    db = _hand_made_teacher(tmp_path / "kd.db", ["pos", "neg"] * 10)
    kd("labels", "set", "--run", "r", "6=pos", "--db", db)
    kd("labels", "detect", "--run", "r", "--db", db)
    decided = {i["sample_id"] for i in _issues(db) if i["score"] >= 0.505}
    assert decided and 6 not in decided  # (the clean below leaves the hand edit's sample alone: the undo is allowed)
    kd("labels", "clean", "--run", "r", "--min-score", "0.505", "--db", db)
    said = json.loads(kd("labels", "undo", "--run", "r", "--stage", "edit-1", "--db", db, "--json").stdout)["warnings"]
    assert len(said) == 1 and "`kd labels detect --run NEW --teacher-run r` judges the labels as they are now" in said[0]
    assert "refused" not in kd("labels", "detect", "--run", "NEW", "--teacher-run", "r", "--db", db).output
    store = _open(db)
    try:  # with nothing of its issues decided, the run's own detection is redone
        assert lab.redetect_command("NEW", store.find_stage("NEW", "detect"), store) == "kd labels detect --run NEW --teacher-run r --overwrite"
    finally:
        store.close()


def test_student_votes_of_an_empty_run_are_refused_not_taken_from_the_default_run(tmp_path, error_line):
    """`--student-votes "$RUN:votes"` with RUN unset looked for the run named default ("no run 'default'"),
    or read its votes, as an empty --run did."""
    db = _hand_made_teacher(tmp_path / "kd.db", ["pos", "neg"] * 10)
    for given in (":votes", " :votes"):
        line = error_line(kd("labels", "detect", "--run", "r", "--student-votes", given, "--db", db, ok=False))
        assert f"--student-votes {given!r}: the run before ':' is empty" in line and "default" not in line
    assert [st.kind for st in _open(db).stages_of("r")] == ["teach"]  # refused before a stage


def test_undo_warns_of_the_detections_that_judged_the_labels_it_reverts(tmp_path):
    """An undo warned of the teachers and students trained on the labels it reverted, not of a
    detection that judged them: its issues of the samples put back then read "left alone (edited
    since detection)" in the next clean, unexplained."""
    db = _hand_made_teacher(tmp_path / "kd.db", ["pos", "neg"] * 10)
    kd("labels", "detect", "--run", "r", "--db", db)  # before the edit: not warned of
    kd("labels", "set", "--run", "r", "1=neg", "--db", db)
    kd("labels", "detect", "--run", "b", "--teacher-run", "r", "--db", db)
    out = kd("labels", "undo", "--run", "r", "--db", db, "--json")
    done = json.loads(out.stdout)
    assert done["detected_on_it"] == ["b/detect"] and done["trained_on_it"] == []
    [said] = done["warnings"]
    assert said.startswith("b/detect judged the labels this undo reverted") and "`kd labels detect --run b --teacher-run r --overwrite`" in said
    assert f"warning: {said}" in out.stderr


def test_undo_warns_of_a_stage_still_training_on_the_labels_it_reverts(tmp_path):
    """A distill started after a clean (its labels read, recorded on the stage) and still running when
    that clean was undone: the undo named the finished stages trained on those labels, not the running
    one, which then ended without a word about them."""
    import socket

    from kdstore.runs import this_process

    db = _hand_made_teacher(tmp_path / "kd.db", ["pos", "neg"] * 10)
    kd("labels", "set", "--run", "r", "1=neg", "--db", db)
    store = _open(db)
    edit = store.find_stage("r", "edit-1")
    with store.write_session("stages") as s:  # as a kd distill leaves it while it trains, its labels read
        s.add(Stage(run_id=edit.run_id, kind="distill", name="distill-textcnn", status="running", host=socket.gethostname(),
                    process=this_process(), config={"labels_stage_ids": [edit.id]}))
    store.close()
    done = json.loads(kd("labels", "undo", "--run", "r", "--db", db, "--json").stdout)
    assert done["trained_on_it"] == ["r/distill-textcnn"]
    assert done["warnings"][0].startswith("r/distill-textcnn trained on the labels this undo reverted")
    # (its --overwrite is refused while it runs: the advice says when)
    assert done["warnings"][0].endswith(" (r/distill-textcnn still running: once it ends)"), done["warnings"][0]


def _flagged_rejected_then_detected_again(tmp_path: Path) -> str:
    """A store whose run ``r`` flagged its first detection's issues (``fl``), had a reviewer reject
    them all (so ``fl``'s flags stand and the detection may be replaced), then detected again. (The
    rejections now stop that `--overwrite` too: here they are decisions of a store made before kd
    recorded the deciding stage, which it could not tell from a detection's own.)"""
    db = _hand_made_teacher(tmp_path / "kd.db", ["pos", "neg"] * 10)
    kd("labels", "detect", "--run", "r", "--db", db)
    kd("labels", "clean", "--run", "r", "--action", "flag", "--name", "fl", "--db", db)
    sheet = tmp_path / "s.csv"
    kd("labels", "export", "--run", "r", str(sheet), "--db", db)
    rows = list(csv.DictReader(sheet.open(encoding="utf-8-sig")))
    for r in rows:
        r["decision"] = "reject"
    kd("labels", "import", str(_sheet(tmp_path / "decided.csv", rows)), "--db", db)
    store = _open(db)
    with store.engine.begin() as conn:
        conn.execute(update(LabelIssue).where(LabelIssue.status == "rejected").values(decided_stage_id=None))
    store.close()
    kd("labels", "detect", "--run", "r", "--overwrite", "--db", db)
    return db


def test_undoing_a_clean_leaves_the_new_detections_issues_open_not_flagged_by_the_old_ones_flags(tmp_path):
    """`reopen` matched standing flags by sample and run: undoing a relabel of the new detection's
    issues marked them `flagged` by `fl`, a flag stage of the detection it replaced."""
    db = _flagged_rejected_then_detected_again(tmp_path)
    assert {i["status"] for i in _issues(db)} == {"open"}
    kd("labels", "clean", "--run", "r", "--name", "cl", "--db", db)
    kd("labels", "undo", "--run", "r", "--stage", "cl", "--db", db)
    assert {i["status"] for i in _issues(db)} == {"open"}
    # a flag of this detection still comes back after a relabel of its issues is undone
    kd("labels", "clean", "--run", "r", "--action", "flag", "--name", "fl2", "--db", db)
    kd("labels", "clean", "--run", "r", "--name", "cl2", "--db", db)
    kd("labels", "undo", "--run", "r", "--stage", "cl2", "--db", db)
    assert {i["status"] for i in _issues(db)} == {"flagged"}


def test_a_clean_records_the_detection_it_decided_and_the_report_names_a_replaced_one(tmp_path):
    """A clean's config named its detection by name only (`detect=detect`): after `detect --overwrite`
    it pointed at the new detection. It records the stage's id and start, as a student its teacher's."""
    from kdstore.schema import iso_utc

    db = _flagged_rejected_then_detected_again(tmp_path)
    kd("labels", "clean", "--run", "r", "--name", "cl", "--db", db)
    store = _open(db)
    try:
        stages = {st.name: st for st in store.stages_of("r")}
    finally:
        store.close()
    detection = stages["detect"]
    assert stages["cl"].config["detect_stages"] == [{"run": "r", "stage_id": detection.id, "started_at": iso_utc(detection.started_at)}]
    report = kd("report", "--run", "r", "--db", db).stdout
    fl = report[report.index("fl (clean)"):report.index("review (clean)")]
    assert re.search(r"detection: r/detect \(stage \d+ of \S+, replaced since\)", fl), fl
    assert "detection: r/detect\n" in report[report.index("cl (clean)"):]
    review = report[report.index("review (clean)"):report.index("cl (clean)")]  # a sheet's stage records its detection too
    assert re.search(r"detection: r/detect \(stage \d+ of \S+, replaced since\)", review), review


def test_a_detection_that_flags_nothing_points_to_no_list(tmp_path):
    """`kd labels detect` that flagged 0 samples still said "`kd labels show --run r` lists them"."""
    from kdstore.schema import Logit

    db = _hand_made_teacher(tmp_path / "kd.db", ["pos", "neg"] * 10)
    store = _open(db)
    labels = np.array([label for _, label in sorted(_labels(db).items())])
    with store.engine.begin() as conn:  # a teacher sure of every given label
        conn.execute(delete(Logit))
    store.write_logits(1, list(range(1, 21)), np.eye(2, dtype=np.float32)[labels] * 6)
    store.close()
    out = kd("labels", "detect", "--run", "r", "--db", db)
    assert out.stdout == "run r: 0 likely wrong labels flagged\n"


def test_a_redetect_judges_as_the_detection_did():
    """The advised `kd labels detect ... --overwrite` kept only --teacher-run, --student-votes and
    --allow-in-sample: a detection made with --method, --filter-by or --tfidf-member was advised one
    that judges differently."""
    opts = lab._detect_options({"methods": ["cleanlab"], "combine": "union", "filter_by": "both", "frac_noise": 0.5,
                                "quality_method": "normalized_margin", "tfidf_member": True, "calibrate": False})
    assert opts == (" --method cleanlab --combine union --filter-by both --frac-noise 0.5 --quality-method normalized_margin"
                    " --tfidf-member --no-calibrate")
    assert lab._detect_options(lab.config_dict(lab.DetectConfig())) == ""  # the defaults: nothing to repeat
    assert lab._detect_options({}) == ""  # a store older than these keys


NEWS = {"财经": "股票", "体育": "足球", "科技": "芯片", "娱乐": "明星"}  # topic: the word that decides it


def _oof_news_store(tmp_path: Path, *, per_class: int = 40, flip: float = 0.12, seed: int = 11) -> tuple[str, dict[int, str], set[int]]:
    """A store of four named news topics pinned in an order that is neither the file's nor the names'
    (id 0 娱乐, 1 科技, 2 体育, 3 财经), 12 % of the train labels moved to another topic, and a run ``r``
    whose 3-fold teacher is out-of-fold TF-IDF + logistic regression (a real model of the texts,
    recorded as the teach stage: no BERT to train). Returns the store, each sample's true topic and
    the ids of the samples whose label was moved."""
    from kdstore.folds import stratified_folds
    from kdstore.runs import stage_scope
    from kdstore.tfidf import oof_probs
    from synthetic import texts

    rng = random.Random(seed)
    rows = [(topic, t) for topic, word in NEWS.items() for t in texts(rng, word, per_class)]
    rng.shuffle(rows)
    given = [rng.choice([o for o in NEWS if o != topic]) if rng.random() < flip else topic for topic, _ in rows]
    (tmp_path / "class_id.txt").write_text("0\t娱乐\n1\t科技\n2\t体育\n3\t财经\n", encoding="utf-8")
    db = str(tmp_path / "news.db")
    kd("ingest", str(write_tsv(tmp_path / "train.tsv", list(zip(given, (t for _, t in rows))))), "--classes",
       str(tmp_path / "class_id.txt"), "--db", db)
    store = _open(db)
    try:
        names = store.class_names()
        assert names == ["娱乐", "科技", "体育", "财经"]
        train = store.samples(splits=["train"], labeled=True)
        probs = oof_probs(train.texts, train.labels, num_classes=len(names), folds=3)
        with stage_scope(store, run="r", kind="teach", config={"classes": names, "folds": 3}) as stage:
            store.write_logits(stage.id, train.ids, np.log(np.clip(probs, 1e-9, 1.0)).astype(np.float32))
            store.write_folds(stage.id, train.ids, stratified_folds(train.labels, 3, seed=0))
        truth = {int(i): next(topic for topic, word in NEWS.items() if word in t) for i, t in zip(train.ids, train.texts)}
        moved = {int(i) for i, label in zip(train.ids, train.labels) if names[label] != truth[int(i)]}
    finally:
        store.close()
    return db, truth, moved


def test_multiclass_named_topics_detect_review_clean_undo_end_to_end(tmp_path):
    """Four named topics, class ids in neither the file's nor the names' order: detection finds most
    moved labels and suggests each one's true topic by name; every --combine and --filter-by keeps
    scores in [0, 1] and suggestions among the topics; a sheet (accept, reject, drop, a topic), a
    clean and two undos leave exactly the labels ingested."""
    db, truth, moved = _oof_news_store(tmp_path)
    assert 10 <= len(moved) <= 30
    original = _state(db)
    out = json.loads(kd("labels", "detect", "--run", "r", "--db", db, "--json").stdout)
    issues = _issues(db)
    flagged = {i["sample_id"] for i in issues}
    assert out["flagged"] == len(issues) and out["warnings"] == []
    hits = flagged & moved
    assert len(hits) / len(moved) >= 0.9 and len(hits) / len(flagged) >= 0.8, (len(hits), len(moved), len(flagged))
    for i in issues:
        assert 0.0 <= i["score"] <= 1.0 and i["suggested"] != i["given"] and i["given"] == i["current"]
        if i["sample_id"] in moved:
            assert i["suggested"] == truth[i["sample_id"]], i  # the name of the true topic, not another id's
    assert [i["score"] for i in issues] == sorted((i["score"] for i in issues), reverse=True)
    for combine in ("union", "intersection", "majority"):
        for filter_by in ("prune_by_class", "confident_learning", "low_self_confidence"):
            other = json.loads(kd("labels", "detect", "--run", "r", "--combine", combine, "--filter-by", filter_by,
                                  "--overwrite", "--db", db, "--json").stdout)
            found = _issues(db)
            assert other["flagged"] == len(found) > 0, (combine, filter_by)
            assert all(0.0 <= i["score"] <= 1.0 and i["suggested"] in NEWS and i["suggested"] != i["given"] for i in found)
            assert sum(i["sample_id"] in moved for i in found) >= 0.8 * len(moved), (combine, filter_by)
    kd("labels", "detect", "--run", "r", "--overwrite", "--db", db)
    issues = _issues(db)
    assert {i["sample_id"] for i in issues} == flagged

    sheet = tmp_path / "review.csv"
    kd("labels", "export", "--run", "r", str(sheet), "--db", db)
    rows = list(csv.DictReader(sheet.open(encoding="utf-8-sig")))
    assert [int(r["sample_id"]) for r in rows] == [i["sample_id"] for i in issues]
    hit_rows = [r for r in rows if int(r["sample_id"]) in moved][:4]
    decided = dict(zip(("accept", "reject", "drop", "topic"), hit_rows))
    for word, r in decided.items():
        r["decision"] = truth[int(r["sample_id"])] if word == "topic" else word
    _sheet(tmp_path / "edited.csv", rows)
    counts = json.loads(kd("labels", "import", str(tmp_path / "edited.csv"), "--db", db, "--json").stdout)
    assert (counts["relabel"], counts["reject"], counts["drop"]) == (2, 1, 1)
    names = _open(db).class_names()
    state = _state(db)
    for word in ("accept", "topic"):
        sample = int(decided[word]["sample_id"])
        assert names[state[sample][0]] == truth[sample] and not state[sample][1]
    assert state[int(decided["reject"]["sample_id"])] == original[int(decided["reject"]["sample_id"])]
    assert state[int(decided["drop"]["sample_id"])][1]

    cleaned = json.loads(kd("labels", "clean", "--run", "r", "--db", db, "--json").stdout)
    assert cleaned["relabel"] == len(issues) - 4 and cleaned["warnings"] == []
    state = _state(db)
    fixed = {s for s in moved if not state[s][1] and names[state[s][0]] == truth[s]}
    assert fixed == hits - {int(decided[w]["sample_id"]) for w in ("reject", "drop")}  # every other hit: its true topic
    accepted = int(decided["accept"]["sample_id"])
    assert [e["action"] for e in json.loads(kd("labels", "history", str(accepted), "--db", db, "--json").stdout)["edits"]] == ["relabel"]

    assert json.loads(kd("labels", "undo", "--run", "r", "--db", db, "--json").stdout)["stage"] == "clean"
    assert json.loads(kd("labels", "undo", "--run", "r", "--db", db, "--json").stdout)["stage"] == "review"
    assert _state(db) == original
    assert {i["status"] for i in _issues(db)} == {"open"}
    history = json.loads(kd("labels", "history", str(accepted), "--db", db, "--json").stdout)
    assert history["current"] == history["original"] and all(e["reverted_at"] for e in history["edits"])


def test_a_student_given_twice_to_student_votes_is_refused_not_counted_twice(tmp_path, error_line):
    """`--student-votes votes --student-votes r:votes` (or one name twice) made one student two members
    of the ensemble, its vote counted double, without a word (`--method cleanlab,cleanlab` is refused);
    an empty stage (`--student-votes "$STAGE"` with STAGE unset) said "run 'r' has no succeeded '' stage"."""
    from kdstore.folds import stratified_folds
    from kdstore.runs import stage_scope
    from kdstore.tfidf import oof_probs

    db, _, _ = _oof_news_store(tmp_path)
    store = _open(db)
    train = store.samples(splits=["train"], labeled=True)
    with stage_scope(store, run="r", kind="distill", name="votes", config={}) as stage:  # an out-of-fold student
        probs = oof_probs(train.texts, train.labels, num_classes=4, folds=3, seed=1)
        store.write_logits(stage.id, train.ids, np.log(np.clip(probs, 1e-9, 1.0)).astype(np.float32))
        store.write_folds(stage.id, train.ids, stratified_folds(train.labels, 3, seed=1))
    store.close()
    vote = ["labels", "detect", "--run", "r", "--method", "cleanlab,disagree,ensemble", "--db", db]
    once = json.loads(kd(*vote, "--student-votes", "votes", "--json").stdout)
    assert once["flagged"] == len(_issues(db)) > 0
    for first, second in (("votes", "votes"), ("votes", "r:votes"), ("r:votes", "votes")):
        line = error_line(kd(*vote, "--student-votes", first, "--student-votes", second, "--overwrite", ok=False))
        assert line == (f"Error: --student-votes {second!r}: distill stage 'votes' of run 'r' is already a member "
                        f"(--student-votes {first!r}): give each student once")
    for empty in ("", "r:", " "):
        line = error_line(kd(*vote, "--student-votes", empty, "--overwrite", ok=False))
        assert line == f"Error: --student-votes {empty!r}: the stage is empty: name a distill stage (STAGE of --run, or RUN:STAGE)"
    assert [st.name for st in _open(db).stages_of("r")] == ["teach", "votes", "detect"]  # refused before a stage
    assert len(_issues(db)) == once["flagged"]


def test_frac_noise_under_union_beside_disagree_is_refused_before_a_stage(tmp_path, error_line):
    """`kd labels detect --combine union --frac-noise 0.3` (default methods) flagged as many labels
    as without it: every label cleanlab flags is a disagreement, and the union keeps them all."""
    db, _, _ = _oof_news_store(tmp_path)
    full = json.loads(kd("labels", "detect", "--run", "r", "--combine", "union", "--db", db, "--json").stdout)["flagged"]
    line = error_line(kd("labels", "detect", "--run", "r", "--combine", "union", "--frac-noise", "0.3", "--overwrite", "--db", db, ok=False))
    assert line.startswith("Error: --frac-noise 0.3 has no effect with --combine 'union' and the disagree method")  # (the options as typed)
    assert len(_issues(db)) == full and [st.name for st in _open(db).stages_of("r")] == ["teach", "detect"]
    scaled = json.loads(kd("labels", "detect", "--run", "r", "--combine", "union", "--method", "cleanlab", "--frac-noise", "0.3",
                           "--overwrite", "--db", db, "--json").stdout)["flagged"]
    assert 0 < scaled < full
    assert json.loads(kd("labels", "detect", "--run", "r", "--frac-noise", "0.3", "--overwrite", "--db", db, "--json").stdout)["flagged"] < full


def test_clean_refuses_top_without_dry_run_and_writes_nothing(db, tmp_path):
    """`--top N` reads as "clean the N highest": without --dry-run it was ignored and every issue was
    relabeled. Typed, it is refused before anything is written (a config file's top, a default for
    the dry runs, is not)."""
    kd("labels", "detect", "--run", "r", "--db", db)
    flagged = _issues(db)
    assert len(flagged) > 3
    before = _state(db)
    refused = kd("labels", "clean", "--run", "r", "--top", "2", "--db", db, "--json", ok=False)
    assert "Invalid value for --top: 2 trims the table of a --dry-run" in refused.output
    assert f"({len(flagged)} issues here): raise --min-score to decide fewer; the 2nd highest score is " in refused.output
    assert _state(db) == before and _count(db, LabelEdit) == 0
    assert not [s for s in _open(db).stages_of("r") if s.kind == "clean"]  # no stage, not even a failed one
    assert {i["status"] for i in _issues(db)} == {"open"}
    # --top 0 (all) is what a clean does; a config file's top applies to the dry runs
    (tmp_path / "kd.toml").write_text("[labels.clean]\ntop = 2\n", encoding="utf-8")
    shown = kd("labels", "clean", "--run", "r", "--dry-run", "--db", db).stdout
    assert f"... {len(flagged) - 2} more rows" in shown
    counts = json.loads(kd("labels", "clean", "--run", "r", "--db", db, "--json").stdout)
    assert counts["relabel"] + counts["flag"] + counts["unchanged"] == len(flagged)
    kd("labels", "undo", "--run", "r", "--db", db)
    kd("labels", "clean", "--run", "r", "--top", "0", "--overwrite", "--db", db)
    assert _count(db, LabelEdit) == 2 * (counts["relabel"] + counts["flag"])


def test_undo_says_when_it_reverts_a_label_a_later_set_confirmed_by_hand(db):
    """A `kd labels set` that found a sample as a clean left it changed nothing and recorded no edit,
    so nothing stopped an undo of the clean from reverting what a person had checked: the undo says
    so (``set_since``, a warning with the set that puts it back); a set whose own edit was undone
    is not named."""
    kd("labels", "detect", "--run", "r", "--db", db)
    top = _issues(db)[:3]
    kd("labels", "clean", "--run", "r", "--min-score", str(min(i["score"] for i in top)), "--db", db)
    edited = _state(db)
    confirmed, other = top[0], top[1]
    assert edited[confirmed["sample_id"]][0] != edited[confirmed["sample_id"]][2]  # relabeled by the clean
    out = json.loads(kd("labels", "set", "--run", "r", f"{confirmed['sample_id']}={confirmed['suggested']}",
                        f"{other['sample_id']}=drop", "--reason", "checked", "--db", db, "--json").stdout)
    assert (out["stage"], out["unchanged"], out["drop"]) == ("edit-1", 1, 1)
    stage_of = dict(_read(db, select(Stage.name, Stage.id)))
    assert [r for r in _read(db, select(LabelEdit.sample_id).where(LabelEdit.stage_id == stage_of["edit-1"]))] == [(other["sample_id"],)]
    assert "later edits or decisions touched samples" in kd("labels", "undo", "--run", "r", "--stage", "clean", "--db", db, ok=False).output
    kd("labels", "undo", "--run", "r", "--stage", "edit-1", "--db", db)
    result = kd("labels", "undo", "--run", "r", "--stage", "clean", "--db", db, "--json")
    done = json.loads(result.stdout)
    assert done["set_since"] == [{"sample_id": confirmed["sample_id"], "stage": "r/edit-1", "set": confirmed["suggested"]}]
    said = (f"sample {confirmed['sample_id']} was set by hand after stage 'clean' (r/edit-1) to the label this undo reverted "
            f"(that set changed nothing, so it recorded no edit): `kd labels set --run r {confirmed['sample_id']}={confirmed['suggested']}` "
            "sets it again")
    assert done["warnings"] == [said] and f"warning: {said}" in result.stderr
    assert {i: s[:2] for i, s in _state(db).items()} == {i: (s[2], False) for i, s in _state(db).items()}  # the undo itself is exact
    assert _read(db, select(func.count()).select_from(LabelEdit).where(LabelEdit.reverted_at.is_(None))) == [(0,)]
    kd("labels", "set", "--run", "r", f"{confirmed['sample_id']}={confirmed['suggested']}", "--db", db)  # the command it names
    assert _state(db)[confirmed["sample_id"]][0] == edited[confirmed["sample_id"]][0]


def test_undo_names_each_confirming_set_once_and_only_the_ones_it_reverts(db):
    """Two `kd labels set X=drop` that found X dropped (no edit recorded) were both named: "samples X, X
    were set by hand", with `kd labels set --run r X=drop X=drop`, a command refused (sample given
    twice); and an undo of an earlier stage named them again though they no longer held before it
    (an earlier undo had reverted what they confirmed, and said so): "set ... to the label this undo
    reverted", of a label it did not revert."""
    kd("labels", "detect", "--run", "r", "--db", db)
    x = _issues(db)[0]
    sid = x["sample_id"]
    kd("labels", "clean", "--run", "r", "--min-score", str(x["score"]), "--db", db)
    kd("labels", "set", "--run", "r", f"{sid}=drop", "--db", db)  # edit-1: drops it
    kd("labels", "set", "--run", "r", f"{sid}=drop", "--reason", "checked", "--db", db)  # edit-2: unchanged
    kd("labels", "set", "--run", "r", f"{sid}=drop", "--reason", "checked again", "--db", db)  # edit-3: unchanged
    done = json.loads(kd("labels", "undo", "--run", "r", "--stage", "edit-1", "--db", db, "--json").stdout)
    assert done["set_since"] == [{"sample_id": sid, "stage": "r/edit-3", "set": "drop"}]
    assert done["warnings"] == [f"sample {sid} was set by hand after stage 'edit-1' (r/edit-3) to the label this undo reverted "
                                f"(that set changed nothing, so it recorded no edit): `kd labels set --run r {sid}=drop` sets it again"]
    done = json.loads(kd("labels", "undo", "--run", "r", "--stage", "clean", "--db", db, "--json").stdout)
    assert (done["reverted"], done["set_since"], done["warnings"]) == (1, [], [])
    kd("labels", "set", "--run", "r", f"{sid}=drop", "--db", db)  # the command the first undo named
    assert _state(db)[sid][1]  # dropped again


def test_detect_overwrite_is_refused_while_a_review_that_only_rejected_stands(tmp_path, error_line):
    """A sheet that only rejected issues (a person judged the labels right) changes no label, so
    `kd labels detect --overwrite` replaced its detection: the rejections went unseen (`undo` then had
    nothing left to undo) and a clean of the new detection relabeled the samples the person kept."""
    db, _, _ = _oof_news_store(tmp_path)
    kd("labels", "detect", "--run", "r", "--db", db)
    three = _issues(db)[:3]
    sheet = _sheet(tmp_path / "review.csv", [{"run": "r", "issue_id": i["issue_id"], "sample_id": i["sample_id"], "decision": "reject"}
                                             for i in three])
    kd("labels", "import", str(sheet), "--db", db)
    before, issues = _state(db), _issues(db)
    line = error_line(kd("labels", "detect", "--run", "r", "--tfidf-member", "--overwrite", "--db", db, ok=False))
    assert line == ("Error: the issues of stage 'detect' of run 'r' were decided by stage 'review' (3 rejected or kept as "
                    "labeled, no label changed), which a new detection would forget: run `kd labels undo --run r --stage review` "
                    "first, or detect again in another run (`kd labels detect --run NEW --teacher-run r`)")
    assert _issues(db) == issues and [i["status"] for i in issues[:3]] == ["rejected"] * 3 and _state(db) == before
    assert [st.name for st in _open(db).stages_of("r")] == ["teach", "detect", "review"]
    kd("labels", "undo", "--run", "r", "--stage", "review", "--db", db)  # the remedy it names
    kd("labels", "detect", "--run", "r", "--overwrite", "--db", db)
    assert {i["status"] for i in _issues(db)} == {"open"}


def test_label_edits_spanning_many_chunks_round_trip_exactly_under_a_bar(tmp_path, monkeypatch):
    """clean, set and undo wrote one ORM row at a time (some 1,000 edits a second, no bar): they write
    set-based, ``EDIT_CHUNK`` decisions a statement. Over several chunks, each clean and set puts exactly
    its labels, and its undo exactly the state before it (labels, dropped flags, issues), with a bar."""
    db = _hand_made_detection(tmp_path / "kd.db", [f"第{i}条评论" for i in range(1, 301)])
    monkeypatch.setattr(lab, "EDIT_CHUNK", 64)
    monkeypatch.setattr(lab, "BAR_FROM", 100)
    monkeypatch.delenv("KD_NO_PROGRESS")
    kd("labels", "set", "--run", "h", *(f"{i}=drop" for i in range(1, 301, 7)), "--db", db)  # edited since detection: left alone
    start = _state(db)
    issues = lambda: {i["sample_id"]: i["status"] for i in _issues(db)}  # noqa: E731
    for action, name, effect in (("relabel", "c1", (1, False)), ("drop", "c2", (0, True)), ("flag", "c3", (0, False))):
        done = kd("labels", "clean", "--run", "r", "--action", action, "--name", name, "--json", "--db", db)
        counts = json.loads(done.stdout)
        assert (counts[action], counts["skipped_edited"]) == ((257, 43) if action != "flag" else (300, 0))
        if action != "flag":  # (a flag changes no label)
            assert "label edits" in done.stderr and "300/300" in done.stderr
        after = _state(db)
        assert {i: s for i, s in after.items() if start[i][1]} == {i: s for i, s in start.items() if start[i][1]}  # the set's drops stand
        assert {i: (s[0], s[1]) for i, s in after.items() if not start[i][1]} == {i: effect for i in start if not start[i][1]}
        assert len(_read(db, select(LabelEdit.id).where(LabelEdit.reverted_at.is_(None)))) == 43 + counts[action]  # (undone ones stay on record)
        undone = kd("labels", "undo", "--run", "r", "--stage", name, "--json", "--db", db)
        assert json.loads(undone.stdout)["reverted"] == counts[action]
        assert "label edits undone" in undone.stderr and f"{counts[action]}/{counts[action]}" in undone.stderr
        assert _state(db) == start and set(issues().values()) == {"open"}
    kd("labels", "set", "--run", "h", *(f"{i}=neg" for i in range(1, 301)), "--db", db)
    assert {s[0] for s in _state(db).values()} == {1} and not any(s[1] for s in _state(db).values())
    kd("labels", "undo", "--run", "h", "--stage", "edit-2", "--db", db)
    assert _state(db) == start
    reverted = _read(db, select(LabelEdit.reverted_at).where(LabelEdit.stage_id.is_not(None)))
    assert sum(r is None for (r,) in reverted) == 43  # only the first set's drops stand


def test_history_shows_a_reviews_reject_of_a_suggested_label(tmp_path):
    """A review sheet's reject changes no label, so it made no edit: `kd labels history` showed nothing
    of it, though the store records the decision (the issue, rejected by the review stage)."""
    db = _hand_made_detection(tmp_path / "kd.db", ["好的", "差的"])
    sheet = _sheet(tmp_path / "review.csv", [{"run": "r", "sample_id": 1, "decision": "reject"}, {"run": "r", "sample_id": 2, "decision": "accept"}])
    kd("labels", "import", str(sheet), "--db", db)
    out = kd("labels", "history", "1", "--db", db).stdout.splitlines()
    assert out[0] == "sample 1: original pos, now pos" and len(out) == 3
    assert out[2].endswith(f" r/review by tester: reject, label pos kept (r/detect suggested neg, issue 1; review sheet {sheet.resolve()})")
    got = json.loads(kd("labels", "history", "1", "--json", "--db", db).stdout)
    assert got["edits"] == [] and [(r["stage"], r["detection"], r["suggested"], r["kept"], r["issue_id"]) for r in got["rejected"]] == [
        ("review", "detect", "neg", "pos", 1)]
    assert json.loads(kd("labels", "history", "2", "--json", "--db", db).stdout)["rejected"] == []  # (accepted: its edit says so)
    assert got["rejected"][0]["reverted_at"] is None
    kd("labels", "undo", "--run", "r", "--db", db)  # the reject is undone: the issue is open again, the reject on record
    undone = json.loads(kd("labels", "history", "1", "--json", "--db", db).stdout)["rejected"]
    assert [(r["stage"], r["kept"], r["by"]) for r in undone] == [("review", "pos", "tester")] and undone[0]["reverted_at"]
    assert {i["sample_id"]: i["status"] for i in _issues(db)}[1] == "open"
    assert kd("labels", "history", "1", "--db", db).stdout.splitlines()[2].endswith(f"), reverted {undone[0]['reverted_at']}")
    # reviewed again and rejected again: the undone reject and the standing one, in the order made
    kd("labels", "import", str(_sheet(tmp_path / "again.csv", [{"run": "r", "sample_id": 1, "decision": "reject"}])), "--db", db)
    again = json.loads(kd("labels", "history", "1", "--json", "--db", db).stdout)["rejected"]
    assert [(r["stage"], r["reverted_at"] is None) for r in again] == [("review", False), ("review-2", True)]


def test_history_keeps_a_text_on_its_line_and_sends_no_control_character(tmp_path):
    """`kd labels history` printed the sample's text (and an edit's --reason) as stored: a line break split
    it off its indented line, a bare \\r made the terminal write over it, and an ESC of an ANSI code scraped
    with it ran in the terminal (click strips only colour codes, and only when not writing to one), where
    `kd labels show` and `kd samples` show them as symbols. --json keeps them as they are."""
    from click.testing import CliRunner

    from commands.cli import cli

    db = _hand_made_detection(tmp_path / "kd.db", ["第一行\n第二行\r好\x1b]0;title\x07评\x1b[31m红"])
    kd("labels", "set", "--run", "r", "1=neg", "--reason", "复核\x1b[2J\n第二行", "--db", db)
    out = CliRunner().invoke(cli, ["labels", "history", "1", "--db", db], color=True).stdout  # (as on a terminal)
    assert "\x1b" not in out and "\r" not in out and "\x07" not in out, repr(out)
    lines = out.splitlines()
    assert lines[1] == "  第一行 第二行 好␛]0;title␇评␛[31m红" and len(lines) == 3, lines
    assert lines[2].endswith(": relabel pos -> neg (复核␛[2J 第二行)"), lines
    got = json.loads(kd("labels", "history", "1", "--json", "--db", db).stdout)
    assert got["text"] == "第一行\n第二行\r好\x1b]0;title\x07评\x1b[31m红" and got["edits"][0]["reason"] == "复核\x1b[2J\n第二行"


def test_an_undone_reject_stays_in_the_history_once_its_review_is_replaced(tmp_path):
    """A review of rejects only, undone, then replaced by `kd labels import --overwrite`: the replaced
    stage, having made no label edit, was deleted with its record of the undone reject, which
    `kd labels history` showed before the overwrite and not after."""
    db = _hand_made_detection(tmp_path / "kd.db", ["好的", "差的"])
    kd("labels", "import", str(_sheet(tmp_path / "a.csv", [{"run": "r", "sample_id": 1, "decision": "reject"}])), "--db", db)
    kd("labels", "undo", "--run", "r", "--db", db)
    kd("labels", "import", str(_sheet(tmp_path / "b.csv", [{"run": "r", "sample_id": 2, "decision": "drop"}])), "--overwrite", "--db", db)
    undone = json.loads(kd("labels", "history", "1", "--json", "--db", db).stdout)["rejected"]
    assert [(r["stage"].split("~")[0], r["kept"], bool(r["reverted_at"])) for r in undone] == [("review", "pos", True)]
    assert "~replaced-" in undone[0]["stage"]


def test_a_standing_reject_replaced_by_import_overwrite_stays_in_the_history_as_undone(tmp_path):
    """A review of rejects (nothing to undo first: no edit stands) replaced by `kd labels import
    --overwrite`: the replacement reopened the issue it did not decide again, and re-decided the one it
    did, and the person's reject, with its comment, was gone from `kd labels history` without a trace."""
    db = _hand_made_detection(tmp_path / "kd.db", ["好的", "差的", "一般"])
    kd("labels", "import", str(_sheet(tmp_path / "a.csv", [{"run": "r", "sample_id": 1, "decision": "reject", "备注": "没错"},
                                                            {"run": "r", "sample_id": 2, "decision": "reject"}])), "--db", db)
    kd("labels", "import", str(_sheet(tmp_path / "b.csv", [{"run": "r", "sample_id": 2, "decision": "drop"},
                                                            {"run": "r", "sample_id": 3, "decision": "drop"}])), "--overwrite", "--db", db)
    assert {i["sample_id"]: i["status"] for i in _issues(db)} == {1: "open", 2: "applied", 3: "applied"}
    one = json.loads(kd("labels", "history", "1", "--json", "--db", db).stdout)["rejected"]
    assert [(r["stage"].split("~")[0], r["kept"], r["reason"].endswith(": 没错"), bool(r["reverted_at"])) for r in one] == [
        ("review", "pos", True, True)]
    two = json.loads(kd("labels", "history", "2", "--json", "--db", db).stdout)
    assert [(r["stage"].split("~")[0], bool(r["reverted_at"])) for r in two["rejected"]] == [("review", True)]
    assert [(e["stage"], e["action"]) for e in two["edits"]] == [("review", "drop")]
    # both made within one second (a script's two imports; times are kept to the second): in the order made
    store = _open(db)
    with store.session() as s, s.begin():
        at = s.scalars(select(LabelEdit.created_at).where(LabelEdit.sample_id == 2)).one()
        s.execute(update(Stage).where(Stage.id == two["rejected"][0]["stage_id"]).values(ended_at=at))
    store.close()
    shown = kd("labels", "history", "2", "--db", db).stdout.splitlines()[2:]
    assert [line.split(": ", 1)[1].split(" ")[0].rstrip(",") for line in shown] == ["reject", "drop"], shown


def test_runs_delete_of_a_review_of_rejects_keeps_them_in_the_history_as_undone(tmp_path):
    """`kd runs delete --stage review` of a review that only rejected (no edit stands, nothing to undo first): its
    issue was open again, as after its undo, but the person's reject, with its comment, was gone from `kd labels
    history`, where an undo or an --overwrite keeps it, marked reverted."""
    db = _hand_made_detection(tmp_path / "kd.db", ["好的", "差的"])
    kd("labels", "import", str(_sheet(tmp_path / "a.csv", [{"run": "r", "sample_id": 1, "decision": "reject", "备注": "没错"}])), "--db", db)
    out = json.loads(kd("runs", "delete", "--run", "r", "--stage", "review", "--yes", "--json", "--db", db).stdout)
    assert [(k["name"], k["rejects"]) for k in out["kept"]] == [("review", 1)] and out["reopened"] == 1 and out["deleted"] == []
    assert {i["sample_id"]: i["status"] for i in _issues(db)}[1] == "open"
    one = json.loads(kd("labels", "history", "1", "--json", "--db", db).stdout)["rejected"]
    assert [(r["stage"], r["kept"], r["reason"].endswith(": 没错"), bool(r["reverted_at"])) for r in one] == [("review", "pos", True, True)]
    said = kd("runs", "delete", "--run", "r", "--stage", "review", "--yes", "--db", db).stdout
    assert "kept r/review (clean): its 1 review reject, undone, is on record" in said, said
    said = kd("runs", "delete", "--run", "r", "--stage", "review", "--dry-run", "--db", db).stdout
    assert "would keep r/review (clean): its 1 review reject, undone (those that stand), would be on record" in said, said


def test_an_undone_reject_stays_in_the_history_once_its_detection_is_replaced(tmp_path):
    """A review undone, then `kd labels detect --overwrite` (allowed once nothing of the review stands):
    the old detection's issues went, and with them the undone reject in `kd labels history`, while the
    undone relabel of the same review stayed listed."""
    db = _hand_made_teacher(tmp_path / "kd.db", ["pos", "neg"] * 15)
    kd("labels", "detect", "--run", "r", "--db", db)
    a, b = _issues(db)[:2]
    other = next(c for c in ("pos", "neg") if c != b["given"])
    kd("labels", "import", str(_sheet(tmp_path / "a.csv", [{"run": "r", "sample_id": a["sample_id"], "decision": "reject", "comment": "fine"},
                                                            {"run": "r", "sample_id": b["sample_id"], "decision": other}])), "--db", db)
    kd("labels", "undo", "--run", "r", "--db", db)
    before = json.loads(kd("labels", "history", str(a["sample_id"]), "--json", "--db", db).stdout)["rejected"]
    kd("labels", "detect", "--run", "r", "--overwrite", "--db", db)
    after = json.loads(kd("labels", "history", str(a["sample_id"]), "--json", "--db", db).stdout)["rejected"]
    assert after == before and len(after) == 1 and after[0]["reverted_at"] and after[0]["reason"].endswith(": fine")
    assert [bool(e["reverted_at"]) for e in json.loads(kd("labels", "history", str(b["sample_id"]), "--json", "--db", db).stdout)["edits"]] == [True]
    shown = kd("labels", "history", str(a["sample_id"]), "--db", db).stdout
    assert f"r/review by tester: reject, label {a['given']} kept (r/detect suggested {a['suggested']}, issue {a['issue_id']}; " in shown


def test_an_export_says_what_to_do_with_the_sheet(tmp_path):
    """`kd labels export` said "review.csv: 2 issues to review" and no more: the column to fill in and the
    command that applies it were in the README and --help alone."""
    db = _hand_made_detection(tmp_path / "kd.db", ["好的", "差的"])
    sheet = tmp_path / "my sheets" / "review.csv"
    out = kd("labels", "export", "--run", "r", str(sheet), "--db", db).stdout
    assert out == (f"{sheet}: 2 issues to review: fill in its decision column (accept, reject, drop or a class), "
                   f"then `kd labels import '{sheet}'`\n")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_an_export_of_no_undecided_issue_says_so_and_its_import_names_why_it_is_refused(tmp_path, error_line, suffix):
    """A run whose issues were all decided exported a sheet of its header alone, said "0 issues to review",
    and its import was refused as "empty on every row ... (was the sheet saved?)"."""
    db = _hand_made_detection(tmp_path / "kd.db", ["好的", "差的"])
    kd("labels", "clean", "--run", "r", "--min-score", "0", "--db", db)
    sheet = tmp_path / f"review{suffix}"
    out = kd("labels", "export", "--run", "r", str(sheet), "--db", db)
    assert "warning: run 'r' has no undecided issue: the sheet lists none" in out.stderr
    line = error_line(kd("labels", "import", str(sheet), "--run", "r", "--db", db, ok=False))
    assert line == f"Error: {sheet}: no row of decisions: nothing to import (`kd labels export` of a run with no undecided issue?)"


def test_undo_refusal_says_when_more_samples_were_touched_than_it_names(tmp_path, error_line):
    """An undo refused for later edits named the first 20 samples and stopped, as if those were all:
    with 2,000 samples set by hand since, it read "touched samples 1, ..., 20"."""
    db = _hand_made_detection(tmp_path / "kd.db", [f"第{i}条评论" for i in range(1, 31)])
    kd("labels", "clean", "--run", "r", "--db", db)
    kd("labels", "set", "--run", "h", *(f"{i}=pos" for i in range(1, 26)), "--db", db)
    line = error_line(kd("labels", "undo", "--run", "r", "--db", db, ok=False))
    assert line == (f"Error: later edits or decisions touched samples {', '.join(map(str, range(1, 21)))} and 5 more after stage "
                    "'clean': undo those first (stage h/edit-1)")


def test_import_of_a_compressed_sheet_or_an_image_is_not_called_gbk(tmp_path, error_line):
    """A gzip of the sheet (or a screenshot given by mistake) was "line 1: not UTF-8 (byte 0x8b:
    GBK/GB18030, as Excel saves CSV on Chinese Windows?)": it is neither text nor GBK."""
    import gzip

    db = _hand_made_detection(tmp_path / "kd.db", ["甲很好", "乙很好"])
    sheet = tmp_path / "review.csv.gz"
    sheet.write_bytes(gzip.compress(b"sample_id,decision\n1,drop\n"))
    line = error_line(kd("labels", "import", "--run", "r", str(sheet), "--db", db, ok=False))
    assert line == f"Error: {sheet}: a gzip-compressed file, not text: decompress it first (gunzip -k {sheet})"
    shot = tmp_path / "review.png"
    shot.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    assert error_line(kd("labels", "import", "--run", "r", str(shot), "--db", db, ok=False)) == f"Error: {shot}: a PNG image, not a text file"
    assert _count(db, LabelEdit) == 0 and {i["status"] for i in _issues(db)} == {"open"}


def test_import_of_a_sheet_whose_chinese_was_saved_as_question_marks_says_so(tmp_path, error_line):
    """Excel on a non-Chinese Windows saves a plain CSV with each Chinese character as '?': the refusal
    blamed another store or a number format, not the save."""
    db = _hand_made_detection(tmp_path / "kd.db", ["甲很好 ok", "乙很好"])
    sheet = tmp_path / "review.csv"
    sheet.write_text("sample_id,text,decision\n1,??? ok,drop\n", encoding="utf-8")
    line = error_line(kd("labels", "import", "--run", "r", str(sheet), "--db", db, ok=False))
    assert line == (f"Error: {sheet}: line 2: field 'text': not the text of sample 1 in this store (its characters were saved "
                    "as '?': a program that could not write them, as Excel on a non-Chinese Windows saves plain CSV; save it "
                    "as UTF-8 (Excel: Save As \"CSV UTF-8\"), or leave the text cell empty)")
    sheet.write_text("sample_id,text,decision\n2,另一个,drop\n", encoding="utf-8")  # (not question marks: the other causes)
    assert "a sheet of another store" in error_line(kd("labels", "import", "--run", "r", str(sheet), "--db", db, ok=False))


@pytest.mark.on_postgresql
def test_the_rejects_an_overwrite_takes_over_are_read_in_blocks_of_ids(db):
    """`kd labels clean --overwrite` of a review that rejected tens of thousands of issues, decided
    again by the new one: their ids went to one IN list, past PostgreSQL's 65,535 parameters."""
    kd("labels", "detect", "--run", "r", "--db", db)
    store = _open(db)
    try:
        with store.session() as s, s.begin():
            issue = s.scalars(select(LabelIssue).order_by(LabelIssue.id)).first()
            stage = s.scalars(select(Stage).where(Stage.kind == "detect")).one()
            many = [issue.id, *range(10**9, 10**9 + 70_000)]  # (ids of no issue: read, none found)
            lab._record_undone_rejects(s, stage.id, also=many)
            assert list(stage.config["undone_issues"]) == [str(issue.id)]
            assert stage.config["undone_issues"][str(issue.id)]["sample_id"] == issue.sample_id
    finally:
        store.close()


def test_an_in_sample_teacher_is_sent_to_a_folds_count_its_smallest_train_class_allows(tmp_path, error_line):
    """A news-topic store whose rarest train class has 3 samples: detect with a teacher of no folds said to run
    `kd teach ... --folds 5 --overwrite` (its refusal and its --allow-in-sample warning), which kd teach then refused:
    "--folds 5: every class needs at least 5 train samples, and 'mid' (3) has fewer". It names --folds 3."""
    db = _hand_made_teacher(tmp_path / "kd.db", ["pos", "neg"] * 10 + ["mid"] * 3)
    store = Store.open(db)
    with store.session() as s, s.begin():
        s.get(Stage, 1).config = {"classes": ["pos", "neg", "mid"], "model": "/m"}
        s.execute(text("DELETE FROM sample_folds"))
    store.close()
    line = error_line(kd("labels", "detect", "--run", "r", "--db", db, ok=False))
    assert "in-sample teacher probabilities" in line and "`kd teach --run r --model /m --folds 3 --overwrite`" in line, line
    allowed = kd("labels", "detect", "--run", "r", "--allow-in-sample", "--db", db)
    assert "`kd teach --run r --model /m --folds 3 --overwrite`" in allowed.stderr, allowed.stderr
    assert "--folds 5" not in allowed.stderr


def test_a_weak_teacher_warning_names_the_tfidf_member_only_where_detect_takes_it(tmp_path):
    """A weak teacher's warning said "train a stronger teacher (or detect with --tfidf-member)" on a store with a
    train class of one sample (a rare news topic), where `kd labels detect --tfidf-member` is refused ("class 'mid'
    has 1 train sample ... leave --tfidf-member out"): the advice is left out there, kept where it runs."""
    lonely = _hand_made_teacher(tmp_path / "lonely.db", ["pos", "neg"] * 10 + ["mid"])
    said = kd("labels", "detect", "--run", "r", "--db", lonely).stderr
    assert "stronger teacher before cleaning" in said and "--tfidf-member" not in said, said
    kd("labels", "detect", "--run", "r", "--tfidf-member", "--overwrite", "--db", lonely, ok=False)
    pairs = _hand_made_teacher(tmp_path / "pairs.db", ["pos", "neg"] * 10 + ["mid"] * 2)
    said = kd("labels", "detect", "--run", "r", "--db", pairs).stderr
    assert "stronger teacher (or detect with --tfidf-member) before cleaning" in said, said


def test_import_of_a_missing_sheet_is_an_error_as_a_missing_input_file_is_elsewhere(tmp_path, error_line):
    """`kd labels import missing.csv` exited 2 with click's usage wording ("Invalid value for 'PATH': File ...
    does not exist"), where a missing input file of kd ingest, kd predict or --classes is one error line, exit 1."""
    db = _hand_made_detection(tmp_path / "kd.db", ["甲很好", "乙很好"])
    sheet = tmp_path / "review.csv"
    result = kd("labels", "import", "--run", "r", str(sheet), "--db", db, ok=False)
    assert result.exit_code == 1
    assert error_line(result) == f"Error: {sheet}: cannot read: No such file or directory"
    assert _count(db, LabelEdit) == 0 and {i["status"] for i in _issues(db)} == {"open"}


def test_detect_counts_pool_texts_taken_after_the_teacher_as_out_of_sample(db, noisy, tmp_path):
    """A teacher without folds trained before `kd ingest --take-pool` scored the taken texts as pool texts: it never
    learned their labels. kd labels detect counted them among its in-sample rows ("74 train samples have in-sample
    teacher probabilities" of a teacher that learned 60), and recorded them so (in_sample) under --allow-in-sample."""
    from synthetic import MARKERS, texts

    pool = texts(random.Random(11), MARKERS["pos"], 6)
    (tmp_path / "pool.txt").write_text("\n".join(pool) + "\n", encoding="utf-8")
    kd("ingest", str(tmp_path / "pool.txt"), "--split", "unlabeled", "--db", db)
    kd("teach", "--run", "plain", "--model", str(noisy["model"]), "--epochs", "1", "--max-len", "32", "--db", db)
    n_train = len(noisy["rows"])
    write_tsv(tmp_path / "annotated.tsv", [("pos", t) for t in pool[:4]])
    kd("ingest", str(tmp_path / "annotated.tsv"), "--take-pool", "--db", db)
    refused = kd("labels", "detect", "--run", "plain", "--db", db, ok=False)
    assert f"{n_train} train samples have in-sample teacher probabilities" in refused.output, refused.output
    kd("labels", "detect", "--run", "plain", "--allow-in-sample", "--db", db)
    store = _open(db)
    figures = {m.name: m.value for m in store.metrics(store.find_stage("plain", "detect").id)}
    store.close()
    assert (figures["in_sample"], figures["train_samples"]) == (n_train, n_train + 4)
    # and so are train samples ingested after it read its rows, which a later --logits-only scored (annot10)
    late = texts(random.Random(12), MARKERS["pos"], 3)
    write_tsv(tmp_path / "late.tsv", [("pos", t) for t in late])
    kd("ingest", str(tmp_path / "late.tsv"), "--db", db)
    kd("teach", "--run", "plain", "--logits-only", "--db", db)
    refused = kd("labels", "detect", "--run", "plain", "--overwrite", "--db", db, ok=False)
    assert f"{n_train} train samples have in-sample teacher probabilities" in refused.output, refused.output


def test_in_sample_votes_do_not_count_pool_texts_taken_since_as_labels_the_student_learned(db, tmp_path, error_line):
    """A student distilled without --folds learned the pool texts from its teacher alone; taken into train since
    (`kd ingest --take-pool`), their labels are none it learned: the refusal said it learned "the 153 train samples"."""
    pool = ["这个东西今天很好用", "那里大家觉得太差", "时候已经可以很好"]
    kd("ingest", str(write_tsv(tmp_path / "pool.txt", [("x", t) for t in pool])), "--split", "unlabeled", "--text-col", "1", "--db", db)
    kd("teach", "--run", "r", "--logits-only", "--db", db)
    kd("distill", "--run", "r", "--name", "s", "--epochs", "1", "--embed-dim", "8", "--num-filters", "4", "--max-len", "32", "--db", db)
    kd("ingest", str(write_tsv(tmp_path / "annotated.tsv", [("pos", pool[0]), ("neg", pool[1]), ("pos", pool[2])])), "--take-pool", "--db", db)
    line = error_line(kd("labels", "detect", "--run", "r", "--student-votes", "s", "--method", "cleanlab,ensemble", "--db", db, ok=False))
    assert "learned the labels of 150 of the 153 train samples" in line, line
