"""Wrong labels end to end: an out-of-fold tiny teacher on synthetic data with seeded flips, then
detect, show, clean, undo, export/import and history through the real CLI on a real SQLite file."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
from sqlalchemy import func, select
from synthetic import flip, kd, labeled_rows, save_tiny_bert, write_tsv

from kdstore import labels as lab
from kdstore.schema import LabelEdit, LabelIssue, Sample
from kdstore.store import Store

TEACH = ["--epochs", "8", "--patience", "8", "--lr", "2e-3", "--batch-size", "8", "--max-len", "32"]


@pytest.fixture(scope="module")
def noisy(tmp_path_factory) -> dict:
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
    return {"db": db, "flipped_lines": {i + 1 for i in flipped}, "model": model, "rows": rows}


@pytest.fixture
def db(noisy, tmp_path) -> str:
    """A private copy of the taught store (SQLite file copied after a checkpoint)."""
    store = Store.open(str(noisy["db"]))
    with store.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    copy = tmp_path / "kd.db"
    copy.write_bytes(Path(noisy["db"]).read_bytes())
    return str(copy)


def _labels(db: str) -> dict[int, int | None]:
    with Store.open(db).engine.connect() as conn:
        return dict(conn.execute(select(Sample.id, Sample.label_id)).all())


def _count(db: str, model) -> int:
    with Store.open(db).engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(model)).scalar_one()


def test_detect_finds_most_injected_flips(db, noisy):
    out = json.loads(kd("labels", "detect", "--run", "r", "--db", db, "--json").stdout)
    store = Store.open(db)
    with store.engine.connect() as conn:
        line_of = dict(conn.execute(select(Sample.id, Sample.line)).all())
    flagged = {line_of[i["sample_id"]] for i in lab.issues(store, "r")}
    truth = noisy["flipped_lines"]
    assert out["flagged"] == len(flagged) > 0
    hits = len(flagged & truth)
    assert hits / len(truth) >= 0.7, (hits, len(truth), len(flagged))  # recall
    assert hits / len(flagged) >= 0.6, (hits, len(truth), len(flagged))  # precision
    top = out["top"][0]
    assert 0 <= top["score"] <= 1 and top["suggested"] != top["given"]
    shown = json.loads(kd("labels", "show", "--run", "r", "--top", "5", "--db", db, "--json").stdout)
    assert [s["score"] for s in shown] == sorted((s["score"] for s in shown), reverse=True)


def test_detect_refuses_in_sample_probabilities_and_missing_teacher(db, noisy):
    kd("teach", "--run", "plain", "--model", str(noisy["model"]), *TEACH[:2], "--max-len", "32", "--db", db)
    refused = kd("labels", "detect", "--run", "plain", "--db", db, ok=False)
    assert "out-of-sample" in refused.output and "--folds" in refused.output
    assert _count(db, LabelIssue) == 0
    kd("labels", "detect", "--run", "plain", "--allow-in-sample", "--db", db)
    nothing = kd("labels", "detect", "--run", "nowhere", "--db", db, ok=False)
    assert "no succeeded 'teach' stage" in nothing.output


def test_clean_then_undo_restores_every_label_exactly(db):
    before = _labels(db)
    kd("labels", "detect", "--run", "r", "--db", db)
    dry = kd("labels", "clean", "--run", "r", "--dry-run", "--db", db).stdout
    assert "would relabel sample" in dry and "nothing written" in dry
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
    undone = json.loads(kd("labels", "undo", "--run", "r", "--db", db, "--json").stdout)
    assert undone["reverted"] == counts["relabel"]
    assert _labels(db) == before
    hist = json.loads(kd("labels", "history", str(some), "--db", db, "--json").stdout)
    assert hist["edits"][0]["reverted_at"] and hist["current"] == hist["original"]
    assert "nothing left to undo" in kd("labels", "undo", "--run", "r", "--db", db, ok=False).output


def test_drop_excludes_samples_from_later_training(db):
    kd("labels", "detect", "--run", "r", "--db", db)
    counts = json.loads(kd("labels", "clean", "--run", "r", "--action", "drop", "--db", db, "--json").stdout)
    store = Store.open(db)
    assert len(store.samples(splits=["train"])) == 150 - counts["drop"]
    assert len(store.samples(splits=["train"], include_dropped=True)) == 150  # never deleted
    out = json.loads(kd("distill", "--run", "r", "--epochs", "1", "--embed-dim", "8", "--num-filters", "4",
                        "--max-len", "32", "--db", db, "--json").stdout)
    assert out["metrics"]["all"]["train_samples"] == 150 - counts["drop"]
    assert out["config"]["labels_from"] == "r/clean"


def test_clean_needs_detect_and_a_failed_clean_leaves_no_edits(db):
    assert "no succeeded 'detect' stage" in kd("labels", "clean", "--run", "r", "--db", db, ok=False).output
    kd("labels", "detect", "--run", "r", "--db", db)
    store = Store.open(db)
    before = _labels(db)
    plan = lab.plan_clean(store, "r", action="relabel", min_score=0.0)
    broken = plan + [lab.Decision(sample_id=10**9, issue_id=None, action="relabel", new_label=0)]
    with pytest.raises(AttributeError):
        lab.apply(store, None, broken, reason="test")  # fails on the last decision
    assert _labels(db) == before and _count(db, LabelEdit) == 0


def test_export_edit_import_applies_exactly_the_edited_rows(db, tmp_path):
    kd("labels", "detect", "--run", "r", "--db", db)
    sheet = tmp_path / "review.csv"
    kd("labels", "export", "--run", "r", str(sheet), "--db", db)
    rows = list(csv.DictReader(sheet.open(encoding="utf-8")))
    assert len(rows) >= 4 and all(r["decision"] == "" for r in rows)
    before = _labels(db)
    names = Store.open(db).class_names()
    decisions = {0: "accept", 1: "reject", 2: "drop", 3: rows[3]["given"]}
    for i, d in decisions.items():
        rows[i]["decision"] = d
    with sheet.open("w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=rows[0].keys())
        w.writeheader()
        w.writerows(rows)
    counts = json.loads(kd("labels", "import", "--run", "r", str(sheet), "--db", db, "--json").stdout)
    assert (counts["relabel"], counts["reject"], counts["drop"], counts["unchanged"]) == (1, 1, 1, 1)
    after = _labels(db)
    accepted = int(rows[0]["sample_id"])
    assert after[accepted] == names.index(rows[0]["suggested"])
    assert {i for i in before if before[i] != after[i]} == {accepted}
    store = Store.open(db)
    assert len(store.samples(ids=[int(rows[2]["sample_id"])])) == 0  # dropped
    assert _count(db, LabelEdit) == 2
    statuses = {i["sample_id"]: i["status"] for i in lab.issues(store, "r")}
    assert statuses[int(rows[1]["sample_id"])] == "rejected" and statuses[accepted] == "applied"


def test_import_refuses_bad_sheets_without_changes(db, tmp_path):
    kd("labels", "detect", "--run", "r", "--db", db)
    before = _labels(db)
    bad_id = tmp_path / "bad-id.csv"
    bad_id.write_text("sample_id,decision\n1,neg\n999999,drop\n", encoding="utf-8")
    out = kd("labels", "import", "--run", "r", str(bad_id), "--db", db, ok=False).output
    assert "line 3" in out and "no sample 999999" in out
    bad_label = tmp_path / "bad-label.jsonl"
    bad_label.write_text('{"sample_id": 1, "decision": "maybe"}\n', encoding="utf-8")
    out = kd("labels", "import", "--run", "r", str(bad_label), "--db", db, ok=False).output
    assert "'maybe' is not accept, reject, drop or a class" in out
    assert _labels(db) == before and _count(db, LabelEdit) == 0


def test_undo_refuses_when_a_later_edit_touched_the_same_samples(db, tmp_path):
    kd("labels", "detect", "--run", "r", "--db", db)
    kd("labels", "clean", "--run", "r", "--db", db)
    touched = Store.open(db).samples(ids=[i["sample_id"] for i in lab.issues(Store.open(db), "r")]).ids[0]
    sheet = tmp_path / "later.csv"
    sheet.write_text(f"sample_id,decision\n{touched},drop\n", encoding="utf-8")
    kd("labels", "import", "--run", "later", str(sheet), "--db", db)
    refused = kd("labels", "undo", "--run", "r", "--db", db, ok=False)
    assert f"touched samples {touched}" in refused.output
    kd("labels", "undo", "--run", "later", "--db", db)
    kd("labels", "undo", "--run", "r", "--db", db)


def test_tfidf_member_oof_probabilities_and_detect(db):
    from kdstore.tfidf import oof_probs

    store = Store.open(db)
    train = store.samples(splits=["train"], labeled=True)
    probs = oof_probs(train.texts, train.labels, num_classes=2, folds=3)
    assert probs.shape == (len(train), 2) and abs(probs.sum(1) - 1).max() < 1e-9
    assert ((probs.argmax(1) == train.labels).mean()) > 0.6  # the marker words are learnable
    out = json.loads(kd("labels", "detect", "--run", "r", "--tfidf-member", "--db", db, "--json").stdout)
    assert out["flagged"] > 0
