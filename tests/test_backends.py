"""The store on every backend: concurrent processes sharing one store, each backend's bulk-write
path, and the whole pipeline (teach, labels, distill, predict, report) end to end.

Runs on SQLite always and on PostgreSQL when ``KD_TEST_PG_URL`` is set (see ``conftest.db``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select
from conftest import store_exists
from synthetic import corpus_files, labeled_rows, tiny_bert_for, write_tsv

from kdstore.schema import LabelEdit, Logit, Prediction, Sample, SampleFold
from kdstore.store import Store

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.on_postgresql  # (the file about the backends: every store test runs on both)


def _kd_process(db: str, *args: str) -> subprocess.Popen:
    """The real ``kd`` in its own process (``python -m commands.cli``), output captured."""
    env = {**os.environ, "KD_DB": db, "KD_NO_PROGRESS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "commands.cli", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_ctrl_c_reaches_it,
    )


def _ctrl_c_reaches_it() -> None:
    """In the child before it runs: SIGINT at its default, as in a terminal. A test suite started in the
    background (`bash .ci/run &`) passes SIGINT on ignored, and Python, and kd after it, keep ignoring it."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _count(db: str, model, *conditions) -> int:
    store = Store.open(db, create=False)
    try:
        with store.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(model).where(*conditions)).scalar_one()
    finally:
        store.close()


# several processes, one store -----------------------------------------------------------------


def test_concurrent_ingests_and_a_reader_share_one_store(db, tmp_path):
    """Two ingests of overlapping files and a reader start at once on a new store: the store is
    created once, both ingests succeed (the writer lock queues them), every distinct text is stored
    exactly once, and the duplicates are counted on whichever ingest came second."""
    rng = random.Random(7)
    shared = labeled_rows(rng, 400)
    a_rows, b_rows = shared + labeled_rows(rng, 1500), shared + labeled_rows(rng, 1500)
    write_tsv(tmp_path / "a.tsv", a_rows)
    write_tsv(tmp_path / "b.tsv", b_rows)
    distinct = {t for _, t in a_rows} | {t for _, t in b_rows}

    procs = [
        _kd_process(db, "ingest", str(tmp_path / "a.tsv"), "--json"),
        _kd_process(db, "ingest", str(tmp_path / "b.tsv"), "--json"),
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    reports = [json.loads(out) for out, _ in outs]
    reader = _kd_process(db, "samples", "--json", "--limit", "5")
    more = _kd_process(db, "ingest", str(tmp_path / "a.tsv"), "--json")  # all duplicates now
    r_out, r_err = reader.communicate(timeout=120)
    m_out, m_err = more.communicate(timeout=120)
    assert reader.returncode == 0, r_err
    assert more.returncode == 0, m_err

    assert sum(r["added"] for r in reports) == len(distinct) == _count(db, Sample)
    assert sum(r["duplicates"] for r in reports) == len(a_rows) + len(b_rows) - len(distinct)
    again = json.loads(m_out)
    assert again["added"] == 0 and again["duplicates"] == len(a_rows)
    assert len(json.loads(r_out)) == 5


@pytest.mark.sqlite_only  # (PostgreSQL's LOCK TABLE wait is cut short by Ctrl-C as it is)
def test_ctrl_c_reaches_a_writer_queued_for_the_lock(db, invoke, write_file):
    """A writer waiting for SQLite's writer lock (behind a long ingest) sat inside one SQLite call for
    up to the 10-minute busy timeout, where Python runs no signal handler: Ctrl-C did nothing until
    the other writer let go. It waits in short tries now, and stops at once, having written nothing."""
    import signal
    import sqlite3
    import time

    write_file("train.tsv", "pos\t很好\nneg\t太差\n")
    invoke(["ingest", "train.tsv"])
    write_file("more.tsv", "pos\t真好\n")
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    try:
        proc = _kd_process(db, "ingest", "more.tsv")
        time.sleep(4)  # started and queued
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        start = time.monotonic()
        proc.communicate(timeout=30)
        waited = time.monotonic() - start
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert proc.returncode != 0 and waited < 3
    assert _count(db, Sample) == 2


@pytest.mark.sqlite_only
def test_ctrl_c_reaches_a_stage_writing_its_outputs_behind_another_writer(db, invoke, write_file):
    """The same for a transaction that only writes (a stage's logits, metrics, folds): its plain
    BEGIN took the lock at its first INSERT, inside one SQLite call, deaf to Ctrl-C for 10 minutes."""
    import signal
    import sqlite3
    import time

    write_file("train.tsv", "pos\t很好\nneg\t太差\n")
    invoke(["ingest", "train.tsv"])
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    script = ("import sys\nfrom kdstore.store import Store\nstore = Store.open(sys.argv[1], create=False)\n"
              "print('ready', flush=True)\nstore.write_folds(1, [1], [0])\n")
    try:
        proc = subprocess.Popen([sys.executable, "-c", script, db], env={**os.environ, "PYTHONPATH": str(ROOT)},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_ctrl_c_reaches_it)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(2)  # queued
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        start = time.monotonic()
        try:
            proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        waited = time.monotonic() - start
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert proc.returncode != 0 and waited < 3


# bulk writes ----------------------------------------------------------------------------------


def test_bulk_logit_write_round_trips_on_each_backend(db, invoke, write_file):
    """``write_logits`` takes the backend's fast path (COPY on PostgreSQL) and reads back bit-exact."""
    write_file("pool.txt", "".join(f"样本{i}\n" for i in range(3000)))
    invoke(["ingest", "pool.txt", "--split", "unlabeled"])
    write_file("train.tsv", "好\t训练一\n差\t训练二\n")
    invoke(["ingest", "train.tsv", "--split", "train"])
    store = Store.open(db, create=False)
    try:
        from kdstore.runs import stage_scope

        ids = store.samples().ids
        matrix = np.random.default_rng(0).standard_normal((len(ids), 7)).astype(np.float32)
        with stage_scope(store, run="w", kind="teach", config={}) as stage:
            assert store.write_logits(stage.id, ids, matrix) == len(ids)
        got_ids, got = store.read_logits(stage.id)
        train_ids, train = store.read_logits(stage.id, splits=["train"])  # the rows a detection reads, not the pool's
        train_wanted = store.samples(splits=["train"]).ids
    finally:
        store.close()
    assert np.array_equal(got_ids, ids)
    assert np.array_equal(got, matrix)
    assert np.array_equal(train_ids, train_wanted) and len(train_ids) == 2
    assert np.array_equal(train, matrix[np.isin(ids, train_wanted)])


def test_figures_store_alike_on_each_backend(db, invoke, write_file):
    """Per-class figures of a class name as long as ingest takes (200 characters) fit the metrics
    table (PostgreSQL enforces its width); a figure that is no finite number is left out on both
    backends (SQLite refused NaN, PostgreSQL kept it); counts come in pipeline order on both."""
    long = "好" * 200
    write_file("train.tsv", f"{long}\t这个东西质量很好用起来方便\nneg\t那个太差了完全不值得买\n")
    write_file("dev.tsv", "neg\tfine\n")
    invoke(["ingest", "train.tsv"])
    invoke(["ingest", "dev.tsv", "--split", "dev"])
    store = Store.open(db, create=False)
    try:
        from kdstore.runs import stage_scope

        with stage_scope(store, run="m", kind="teach", config={}) as stage:
            store.add_metrics(stage.id, "dev", {f"precision[{long}]": 0.5, "loss": float("nan"), "rate": float("inf")})
            store.add_metrics(stage.id, "dev", {"loss": float("nan")})  # nothing left to store
        assert [(m.name, m.value) for m in store.metrics(stage.id)] == [(f"precision[{long}]", 0.5)]
        counts = store.counts()
        assert list(counts) == ["train", "dev"] and list(counts["train"]) == [long, "neg"]
        from kdstore.augmented import Recipe, ensure_augmented

        ensure_augmented(store, Recipe(methods=("mask",), n=1, p_mask=0.5))  # kd distill --augment's texts: apart
        assert list(store.counts()) == ["train", "dev", "augmented"]
    finally:
        store.close()


def test_ids_and_numbers_no_backend_can_take_are_one_line_errors(db, invoke, write_file, error_line):
    """A sample id beyond PostgreSQL's integer names no sample (not "integer out of range"); a
    non-finite option value is refused before a stage's config (JSON: no NaN on PostgreSQL) is written."""
    write_file("train.tsv", "pos\tgood\nneg\tbad\n")
    invoke(["ingest", "train.tsv"])
    assert error_line(invoke(["labels", "history", "99999999999"], ok=False)) == "Error: no sample 99999999999 in the store"
    assert error_line(invoke(["labels", "set", "--run", "r", "99999999999=neg"], ok=False)) == "Error: no sample 99999999999 in the store"
    for option, value in (("--min-score", "inf"), ("--min-score", "nan")):
        result = invoke(["labels", "clean", "--run", "r", option, value], ok=False)
        assert f"'{value}' is not a finite number" in result.output
    assert invoke.json(["runs"]) == []  # nothing recorded
    from commands.common import FLOAT

    assert str(FLOAT.convert("-0", None, None)) == "0.0" and FLOAT.convert("-0.5", None, None) == -0.5


@pytest.mark.sqlite_only  # the paths are the test's own
@pytest.mark.parametrize("folder", ["数据 集", "a%20b", "d?x=1", "100%"])
def test_a_store_path_is_the_file_it_names(invoke, write_file, tmp_path, error_line, folder):
    """A --db path is a file path, not URL text: "a%20b" was read as the folder "a b" (another
    store), "d?x=1/kd.db" made a store "d" in the working directory; and messages showed a Chinese
    path percent-encoded ("sqlite:///%E6%95%B0...")."""
    write_file("train.tsv", "pos\tgood\nneg\tbad\n")
    (tmp_path / folder).mkdir()
    db = tmp_path / folder / "k d.db"
    assert invoke.json(["ingest", "train.tsv"], db=db)["added"] == 2
    assert db.is_file() and not (tmp_path / "d").exists() and not (tmp_path / "a b").exists()
    assert error_line(invoke(["report", "--run", "nope"], db=db, ok=False)) == (
        f"Error: no run 'nope' in sqlite:///{db}: it has no runs yet: `kd teach --run R` (or `kd pretrain --run R`) starts one")


def test_storing_a_large_stores_scores_shows_a_bar_but_not_inside_another(db, invoke, write_file, monkeypatch, capsys):
    """400,000 samples' logits and predictions took 3-8 s to write with nothing on screen after the scoring
    bar ended: a write of many rows shows its own bar, counting both tables' rows; inside another bar (kd
    teach --logits-only stores each scored chunk under its scoring bar) it draws none over it."""
    import kdstore.outputs as ko
    import kdstore.progress as kp
    from kdstore.runs import stage_scope

    write_file("train.tsv", "pos\t一\nneg\t二\npos\t三\nneg\t四\n")
    invoke(["ingest", "train.tsv"])
    monkeypatch.delenv("KD_NO_PROGRESS", raising=False)
    monkeypatch.setattr(ko, "SCORES_BAR_ROWS", 2)
    store = Store.open(db, create=False)
    try:
        ids = store.samples().ids
        logits = np.arange(8, dtype=np.float32).reshape(4, 2)
        with stage_scope(store, run="s", kind="teach", config={}) as stage:
            capsys.readouterr()
            ko.write_scores(store, stage.id, ids[:1], logits[:1])  # under the threshold: no bar
            assert "storing scores" not in capsys.readouterr().err
            ko.write_scores(store, stage.id, ids[1:], logits[1:])
            lines = [l for l in capsys.readouterr().err.splitlines() if l.startswith("storing scores")]
            assert len(lines) == 1 and "6/6" in lines[0], lines
        with stage_scope(store, run="t", kind="teach", config={}) as stage:
            with kp.progress() as outer:
                outer.advance(outer.add_task("logits", total=4, unit="samples"), 4)
                ko.write_scores(store, stage.id, ids, logits)
            err = capsys.readouterr().err
            assert "storing scores" not in err and "logits" in err
            assert kp._LIVE == []  # every bar counted out again
            with kp.progress():  # and a bar after them draws
                pass
            assert not kp.progress().disable
        assert np.array_equal(store.read_logits(stage.id)[1], logits)
    finally:
        store.close()


def test_scores_of_what_another_process_scored_meanwhile_are_left_out(db, invoke, write_file):
    """Two processes filling in a teacher's missing logits (two distills with --augment, or one and
    `kd teach --logits-only`) both list the same samples: the second writes only what the first did
    not, instead of failing on the (stage, sample) key."""
    from kdstore.outputs import write_scores
    from kdstore.runs import stage_scope

    write_file("train.tsv", "pos\t一\nneg\t二\npos\t三\nneg\t四\n")
    invoke(["ingest", "train.tsv"])
    store = Store.open(db, create=False)
    try:
        ids = store.samples().ids
        logits = np.arange(8, dtype=np.float32).reshape(4, 2)
        with stage_scope(store, run="s", kind="teach", config={}) as stage:
            assert write_scores(store, stage.id, ids[:2], logits[:2]) == 2  # the other process, first
            assert write_scores(store, stage.id, ids, logits, missing_only=True) == 2
            assert write_scores(store, stage.id, ids, logits, missing_only=True) == 0
            with pytest.raises(Exception, match="(?i)unique|duplicate key"):  # without it, the key refuses a second row
                write_scores(store, stage.id, ids[:1], logits[:1])
        got_ids, got = store.read_logits(stage.id)
        assert got_ids.tolist() == ids.tolist() and np.array_equal(got, logits)
    finally:
        store.close()


def test_a_stage_reading_labels_while_an_edit_waits_for_the_lock_judges_against_what_it_read(db, invoke, write_file):
    """A label edit (`kd labels set`, a clean) queued behind another writer (an ingest) while a stage
    reads its labels: the stage's figures judge against the labels as of its labels_read_at, which
    must be the labels it read (the edit was dated before the read but committed after it)."""
    import threading
    import time

    from kdstore import labels as lab
    from kdstore.outputs import labels_as_of

    write_file("dev.tsv", "pos\t很好很好\nneg\t太差太差\n")
    invoke(["ingest", "dev.tsv", "--split", "dev"])
    store = Store.open(db, create=False)
    try:
        sid, neg = int(store.samples().ids[0]), store.class_names().index("neg")  # the first sample is pos
        got: dict = {}
        with store.write_transaction("samples", "label_edits", "label_issues"):  # another writer holds the lock
            edit = threading.Thread(target=lab.apply, args=(store, None, [lab.Decision(sid, None, "relabel", neg)]),
                                    kwargs={"reason": "late"})
            edit.start()
            time.sleep(0.3)  # the edit waits for the lock
            stage = threading.Thread(target=lambda: got.update(
                zip(("rows", "state"), lab.read_labeled(store, lambda: store.samples(splits=["dev"])))))
            stage.start()
            time.sleep(0.3)
        edit.join(30)
        stage.join(30)
        assert _count(db, LabelEdit) == 1
        rows, state = got["rows"], got["state"]
        read = int(rows.labels[rows.ids.tolist().index(sid)])
        judged, _ = labels_as_of(store, dt.datetime.fromisoformat(state["labels_read_at"]))
        assert judged[sid] == read
    finally:
        store.close()


def test_an_overwrite_redeciding_a_review_and_another_overwrite_starting_meanwhile_both_succeed(db, invoke, write_file):
    """`kd labels import --overwrite` re-deciding issues the review it replaces had decided writes its
    stage's config in the label edits' transaction. It took the stages lock last, after the label
    tables, while an --overwrite starting (or any stage ending) takes stages first: on PostgreSQL, with
    both queued behind a third writer, one of them failed with "deadlock detected". Both succeed now."""
    import threading

    from sqlalchemy import text

    from kdstore import labels as lab
    from kdstore.runs import stage_scope
    from kdstore.schema import LabelIssue, Run, Stage

    write_file("train.tsv", "".join(f"{'pos' if i % 2 else 'neg'}\t第{i}个样本的文本\n" for i in range(6)))
    invoke(["ingest", "train.tsv"])
    store = Store.open(db, create=False)
    try:
        samples = store.samples()
        with store.session() as s, s.begin():  # a detection of run r flagging four samples (no teacher to train)
            run = Run(uniqid="r")
            s.add(run)
            s.flush()
            detect = Stage(run_id=run.id, kind="detect", name="detect", status="succeeded")
            s.add(detect)
            s.flush()
            s.add_all([LabelIssue(stage_id=detect.id, sample_id=int(i), given_label_id=int(label), suggested_label_id=1 - int(label),
                                  score=0.9, methods="cleanlab", status="open") for i, label in zip(samples.ids[:4], samples.labels[:4])])
        issues = lab.issues(store, "r")
        rows = [f"r,{i['issue_id']},{i['sample_id']},reject\n" for i in issues]
        write_file("a.csv", "run,issue_id,sample_id,decision\n" + rows[0] + rows[1])
        invoke(["labels", "import", "a.csv"])  # the review that rejects two issues
        write_file("c.csv", "run,issue_id,sample_id,decision\n" + rows[3])

        def waiting() -> int:  # lock requests not granted (PostgreSQL; SQLite's writers poll for theirs)
            if store.engine.dialect.name != "postgresql":
                return 2
            with store.engine.connect() as conn:
                return conn.execute(text("SELECT count(*) FROM pg_locks WHERE NOT granted")).scalar_one()

        def until(n: int) -> None:
            deadline = time.monotonic() + 60
            while waiting() < n and time.monotonic() < deadline:
                time.sleep(0.05)

        failed: list[BaseException] = []
        # `kd labels import b.csv --overwrite`, as its command runs it: the stage that replaces the review
        with stage_scope(store, run="r", kind="clean", name="review", config={}, overwrite=True) as stage:
            redo = [lab.Decision(issues[0]["sample_id"], issues[0]["issue_id"], "drop", None)]  # the review had rejected it

            def apply() -> None:
                try:
                    lab.apply(store, stage.id, redo, reason="review sheet b.csv")
                except BaseException as exc:
                    failed.append(exc)

            with store.write_transaction("label_edits"):  # a third writer (`kd labels set`, an undo) holds the label lock
                edit = threading.Thread(target=apply)
                edit.start()
                until(1)  # the edit queued for the label tables
                other = _kd_process(db, "labels", "import", "c.csv", "--name", "second", "--overwrite")
                until(2)  # and another process's --overwrite for its own
                time.sleep(0.3)
            edit.join(60)
            out, err = other.communicate(timeout=120)
        assert not failed, failed
        assert other.returncode == 0, err
        stages = {st.name: st.status for st in store.stages_of("r")}
        kept = [name for name in stages if name.startswith("review~replaced-")]  # (its rejects, undone by the replacement, in the history)
        assert {name: stages[name] for name in stages if name not in kept} == {"detect": "succeeded", "review": "succeeded", "second": "succeeded"}
        assert len(kept) == 1, stages
        status = {i["issue_id"]: i["status"] for i in lab.issues(store, "r")}
        assert [status[i["issue_id"]] for i in issues] == ["applied", "open", "open", "rejected"]
    finally:
        store.close()


# the pipeline ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    return corpus_files(tmp_path_factory.mktemp("corpus"), 3, pool_per_class=10)


@pytest.fixture(scope="module")
def tiny_model(corpus, tmp_path_factory) -> Path:
    return tiny_bert_for(corpus, tmp_path_factory.mktemp("tiny-bert"))


def test_pipeline_end_to_end_on_each_backend(db, invoke, corpus, tiny_model):
    """teach (out-of-fold) → labels detect → clean → undo → distill with augmentation → predict
    --store → report, every row checked through the library."""
    for split, path in corpus.items():
        invoke(["ingest", str(path), "--split", split])
    n = _count(db, Sample)
    small = ["--max-len", "32", "--batch-size", "8"]

    invoke(["teach", "--run", "r", "--model", str(tiny_model), "--epochs", "1", "--folds", "2", *small])
    stage = next(s for s in Store.open(db, create=False).stages_of("r") if s.name == "teach")
    assert stage.status == "succeeded"
    assert _count(db, Logit, Logit.stage_id == stage.id) == n
    assert _count(db, SampleFold, SampleFold.stage_id == stage.id) == 60

    found = invoke.json(["labels", "detect", "--run", "r"])
    assert found["run"] == "r" and found["flagged"] >= 0
    invoke(["labels", "clean", "--run", "r", "--action", "relabel", "--min-score", "0"])
    edits = _count(db, LabelEdit)
    invoke(["labels", "undo", "--run", "r"])
    if edits:
        assert _count(db, LabelEdit, LabelEdit.reverted_at.is_not(None)) == edits

    out = invoke.json(["distill", "--run", "r", "--student", "textcnn", "--epochs", "1", "--embed-dim", "16",
                       "--num-filters", "8", "--augment", "mask,mask, mask", "--augment-n", "1", *small])
    assert out["status"] == "succeeded"
    assert out["config"]["augment"] == ["mask"]  # (a method typed twice: once, as it ran)
    invoke(["predict", "--run", "r", "--store", "--split", "test"])
    report = invoke.json(["report", "--run", "r"])
    assert [s["name"] for s in report["stages"]] == ["teach", "detect", "clean", "distill-textcnn", "predict-distill-textcnn@test"]
    assert all(s["status"] == "succeeded" for s in report["stages"])
    predicted = next(s for s in Store.open(db, create=False).stages_of("r") if s.name == "predict-distill-textcnn@test")
    assert _count(db, Prediction, Prediction.stage_id == predicted.id) == 20
    distill = report["stages"][3]
    assert 0.0 <= distill["metrics"]["test"]["accuracy"] <= 1.0


def test_samples_ingested_while_a_stage_trains_are_neither_scored_nor_counted_as_rows_it_learned_from(
        db, invoke, corpus, tiny_model, monkeypatch):
    """Another process's `kd ingest` while `kd teach` loads its model, or while `kd distill` trains: the
    stage scored the new train rows and counted them in its train figures (n 62, train_samples 60),
    rows it never learned from. It scores the samples it listed with its training rows."""
    from kdstore import distill as dst
    from kdstore import teacher as tch
    from kdstore.ingest import IngestOptions, ingest

    for split in ("train", "dev"):
        invoke(["ingest", str(corpus[split]), "--split", split])

    def ingesting(real, rows: str):
        def meanwhile(*args, **kwargs):  # another process's ingest, committed as the stage goes on (a second call finds the rows there)
            store = Store.open(db, create=False)
            try:
                ingest(store, rows.encode(), "late.tsv", IngestOptions())
            finally:
                store.close()
            return real(*args, **kwargs)
        return meanwhile

    small = ["--max-len", "32", "--batch-size", "8", "--epochs", "1"]
    with monkeypatch.context() as m:
        m.setattr(tch, "load_classifier", ingesting(tch.load_classifier, "pos\t很好今天我们\nneg\t太差今天我们\n"))
        invoke(["teach", "--run", "r", "--model", str(tiny_model), *small])
    teach_id = Store.open(db, create=False).find_stage("r", "teach").id
    assert _count(db, Logit, Logit.stage_id == teach_id) == 60 + 20  # its train rows and dev, not the late ones
    invoke(["teach", "--run", "r", "--logits-only"])  # which it scores now, as documented
    with monkeypatch.context() as m:
        m.setattr(dst, "_fit", ingesting(dst._fit, "pos\t很好那里时候\nneg\t太差那里时候\n"))
        invoke(["distill", "--run", "r", "--student", "textcnn", "--embed-dim", "16", "--num-filters", "8", *small])
    stages = {s["name"]: s for s in invoke.json(["report", "--run", "r"])["stages"]}
    assert _count(db, Sample, Sample.split == "train") == 64
    for name, learned in (("teach", 60), ("distill-textcnn", 62)):
        metrics = stages[name]["metrics"]
        assert metrics["all"]["train_samples"] == learned and metrics["train"]["n"] == learned, name
    student_id = Store.open(db, create=False).find_stage("r", "distill-textcnn").id
    assert _count(db, Logit, Logit.stage_id == student_id) == 62 + 20


def test_a_store_outlives_the_server_dropping_its_idle_connections(db, invoke, write_file, request):
    """A connection left idle in the pool while a stage trains (hours, on a real corpus) and dropped by
    the server meanwhile (a restart, its idle_session_timeout, a firewall's idle limit) failed the
    stage at its end with "database error: terminating connection due to administrator command" (or
    "... idle-session timeout"): kd now tests a server connection as it leaves the pool and replaces
    a dropped one."""
    if not db.startswith("postgresql"):
        pytest.skip("a server's connections only")
    from sqlalchemy import text

    write_file("train.tsv", "pos\t很好\nneg\t太差\n")
    invoke(["ingest", "train.tsv"])
    admin = request.getfixturevalue("pg_server").admin
    store = Store.open(db, create=False)
    try:
        from kdstore.runs import stage_scope

        with stage_scope(store, run="r", kind="teach", config={}) as stage:
            ids = store.samples().ids  # the pool now holds idle connections, as while a model trains
            with admin.connect() as conn:
                gone = conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"),
                                    {"name": store.engine.url.database}).scalars().all()
                assert gone and all(gone)
                deadline = time.monotonic() + 30
                while conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = :name"),
                                   {"name": store.engine.url.database}).scalar_one():
                    assert time.monotonic() < deadline, "the store's connections were not terminated"
                    time.sleep(0.05)  # (terminating is asynchronous)
            store.write_logits(stage.id, ids, np.zeros((len(ids), 2), dtype=np.float32))
        assert store.class_names() == ["pos", "neg"]
    finally:
        store.close()
    assert [s["status"] for r in invoke.json(["runs"]) for s in r["stages"]] == ["succeeded"]
    assert _count(db, Logit) == 2


def test_a_where_runs_as_written_on_each_backend(db, invoke, write_file):
    """``--where`` SQL is the user's, in the store's dialect: a colon in a literal was read as a
    bind parameter (and PostgreSQL's ``[[:digit:]]`` classes and ``::`` casts with it)."""
    write_file("t.tsv", "好\t质量很好:x 123\n差\t太差了\n好\t还行 7\n")
    invoke(["ingest", "t.tsv"])
    store = Store.open(db, create=False)
    try:
        texts = lambda where: store.samples(where=where).texts  # noqa: E731
        assert texts("text LIKE '%:x%'") == ["质量很好:x 123"]
        if store.engine.dialect.name == "postgresql":
            assert texts("text ~ '[[:digit:]]'") == ["质量很好:x 123", "还行 7"]
            assert texts("length(text)::int > 3") == ["质量很好:x 123", "还行 7"]
    finally:
        store.close()
    # one that fails on some rows only (PostgreSQL's cast of a text that is no number; SQLite casts it to 0): refused
    # before a stage, as one that fails on every row is (a LIMIT 0 check ran it on none: the teach stage failed)
    fails = "CAST(substr(text, 1, 1) AS INTEGER) > 0" if store.engine.dialect.name == "postgresql" else "no_such_column > 0"
    for args in (["teach", "--run", "w", "--model", "./none", "--where", fails], ["samples", "--where", fails]):
        assert f"--where {fails!r} failed" in invoke(args, ok=False).output
    assert not Store.open(db, create=False).run_exists("w")


def test_issue_scores_come_in_issue_order_on_each_backend(db, invoke, write_file):
    """kd report --json lists a detection's issue scores in issue order on both backends: PostgreSQL
    gave them in the order of its table's rows, where an issue a clean or review decided (an UPDATE
    writes the row anew) comes after the others; here the rows are written out of id order."""
    write_file("train.tsv", "pos\t甲很好\npos\t乙很好\npos\t丙很好\n")
    invoke(["ingest", "train.tsv"])
    store = Store.open(db, create=False)
    try:
        from kdstore.runs import stage_scope
        from kdstore.schema import LabelIssue

        with stage_scope(store, run="r", kind="detect", config={}) as stage:
            ids = [int(i) for i in store.samples(splits=["train"]).ids]
            for issue_id, sample_id, score in ((3, ids[2], 0.7), (1, ids[0], 0.9), (2, ids[1], 0.8)):
                with store.session() as s, s.begin():
                    s.add(LabelIssue(id=issue_id, stage_id=stage.id, sample_id=sample_id, given_label_id=0,
                                     suggested_label_id=0, score=score, methods="cleanlab", status="open"))
    finally:
        store.close()
    stages = invoke.json(["report", "--run", "r"])["stages"]
    assert stages[0]["issue_scores"] == [0.9, 0.8, 0.7]


def test_an_adopted_pool_text_stores_its_metadata_as_an_ingested_row_does(db, invoke, write_file):
    """A pool text that `kd distill --augment` made first is taken over by an UPDATE: its metadata
    came out as JSON 'null' (not SQL NULL) for a plain text line and as \\uXXXX escapes for Chinese
    values, where an ingested row has NULL and the characters as they are (a --where on meta missed it)."""
    import kdstore.augmented as augmented
    from sqlalchemy import text

    write_file("train.tsv", "pos\t质量很好，物流也快\nneg\t包装破损，很失望\n")
    invoke(["ingest", "train.tsv"])
    store = Store.open(db, create=False)
    try:
        recipe = augmented.Recipe(methods=("ngram",), n=2, p_ngram=1.0)
        augmented.ensure_augmented(store, recipe)
        made = store.samples(augmented=recipe.source).texts
    finally:
        store.close()
    write_file("pool.txt", f"{made[0]}\n新的池文本\n")
    write_file("pool.jsonl", json.dumps({"text": made[1], "shop": "甲店"}, ensure_ascii=False) + "\n")
    invoke(["ingest", "pool.txt", "--split", "unlabeled"])
    invoke(["ingest", "pool.jsonl", "--split", "unlabeled"])
    store = Store.open(db, create=False)
    try:
        with store.engine.connect() as conn:
            rows = dict(conn.execute(text("SELECT text, CAST(meta AS TEXT) FROM samples WHERE split = 'unlabeled' AND parent_id IS NULL")).all())
    finally:
        store.close()
    assert rows[made[0]] is None and rows["新的池文本"] is None
    assert "甲店" in rows[made[1]]


@pytest.mark.sqlite_only  # the URLs are the test's own (no server answers on port 1)
def test_a_server_url_error_names_the_store_without_any_password(invoke, error_line):
    """libpq takes a password as ``?password=`` too: SQLAlchemy hides only ``USER:PASSWORD@``, so
    the error printed it; and a connection option libpq refuses (``?foo=1``) was a bare
    "database error" that named no store."""
    refused = error_line(invoke(["runs"], db="postgresql+psycopg://kd@127.0.0.1:1/kd?password=s3cret", ok=False))
    assert "s3cret" not in refused and refused.startswith(
        "Error: cannot open the store at postgresql+psycopg://kd@127.0.0.1:1/kd?password=***: ")
    for args in (["runs"], ["db", "current"]):
        option = error_line(invoke(args, db="postgresql+psycopg://kd:pw@127.0.0.1:1/kd?foo=bar&password=s3cret", ok=False))
        assert option == ('Error: cannot open the store at postgresql+psycopg://kd:***@127.0.0.1:1/kd?foo=bar&password=***: '
                          'invalid connection option "foo"')


@pytest.mark.sqlite_only  # the URLs are the test's own (no server answers on port 1)
def test_a_server_url_whose_password_holds_an_at_sign_is_refused_without_showing_it(invoke, error_line):
    """A password typed with its '@' as it is (not %40): SQLAlchemy ends the password at the first
    '@' and reads the rest as the host, so the error showed the password's tail as a host kd could
    not resolve ("failed to resolve host 'ssQ@127.0.0.1'")."""
    for args in (["runs"], ["db", "current"], ["samples"]):
        refused = error_line(invoke(args, db="postgresql+psycopg://kd:Zp@ssQ@127.0.0.1:1/kd", ok=False))
        assert "ssQ" not in refused and "Zp" not in refused
        assert refused.startswith("Error: cannot use the database URL postgresql+psycopg://kd:***@127.0.0.1:1/kd: ")
        assert "%40" in refused


@pytest.mark.parametrize("encoding", ["SQL_ASCII", "EUC_CN", "LATIN1"])
def test_a_server_database_not_in_utf8_is_refused_in_one_line(pg_server, runner, write_file, error_line, encoding):
    """A database made in another encoding (SQL_ASCII: what initdb gives under the C locale; EUC_CN,
    GB2312: a Chinese server's legacy one) crashed kd with tracebacks: SQL_ASCII at connecting (the
    driver gave bytes for text), the others in the middle of an ingest at the first character the
    encoding lacks (an emoji, a character outside GB2312). kd stores any Unicode text: such a database
    is refused as it is opened, in one line naming its encoding and how to make a UTF8 one, and left empty."""
    from sqlalchemy import create_engine, inspect, text

    from commands.cli import cli

    name = f"kd_test_{encoding.lower()}_{os.getpid()}"
    with pg_server.admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" ENCODING \'{encoding}\' LC_COLLATE \'C\' LC_CTYPE \'C\' TEMPLATE template0'))
    url = pg_server.url.set(database=name).render_as_string(hide_password=False)
    try:
        write_file("train.tsv", "pos\t很好😀\nneg\t太差\n")
        for args in (["ingest", "train.tsv"], ["runs"], ["db", "current"], ["db", "upgrade"]):
            result = runner.invoke(cli, [*args, "--db", url])
            assert result.exit_code == 1 and result.exception is None or isinstance(result.exception, SystemExit), result.exception
            assert error_line(result) == (f"Error: cannot open the store at {url}: the database's encoding is {encoding}; kd "
                                          "stores any Unicode text, so it needs a UTF8 database (createdb -E UTF8 -T template0 NAME)")
        engine = create_engine(url, connect_args={"client_encoding": "utf8"})
        try:
            assert inspect(engine).get_table_names() == []
        finally:
            engine.dispose()
    finally:
        pg_server.drop(url)


@pytest.mark.new_database
def test_an_ingest_of_names_no_backend_can_store_is_refused_before_anything_is_written(db, invoke, write_file, error_line):
    """A file named in another encoding (GBK bytes: lone surrogates in Python) crashed the ingest with
    a traceback on both backends; a --classes name longer than classes.name holds was stored on
    SQLite and refused by PostgreSQL as "value too long". Both are one line naming the file now,
    with no store made."""
    write_file("train.tsv", "pos\t很好\nneg\t太差\n")
    gbk = os.fsdecode(b"\xd6\xd0\xce\xc4.tsv")  # "中文.tsv" saved by a GBK system
    write_file(gbk, "pos\t真好\n")
    assert error_line(invoke(["ingest", gbk], ok=False)) == (
        f"Error: {gbk.encode('utf-8', 'backslashreplace').decode()}: the source name is not valid UTF-8 "
        "(a file name in another encoding, such as GBK): give a --source in UTF-8")
    write_file("classes.txt", "pos\n" + "长" * 201 + "\n")
    assert error_line(invoke(["ingest", "train.tsv", "--classes", "classes.txt"], ok=False)) == (
        "Error: classes.txt: line 2: class name longer than 200 characters")
    assert not store_exists(db)
    invoke(["ingest", gbk, "--source", "中文.tsv", "--json"])  # (the table names the file: a terminal in strict UTF-8 cannot show it)
    assert _count(db, Sample, Sample.source == "中文.tsv") == 1


def test_options_no_backend_can_store_are_refused_before_anything_is_written(db, invoke, write_file, error_line, tmp_path):
    """A --reason with a NUL (a config file's "\\u0000") was stored on SQLite and failed the stage on
    PostgreSQL ("database error"); one with bytes of another encoding, or a --model path with them,
    crashed with a traceback on both. Each is refused in one line now, nothing recorded."""
    write_file("train.tsv", "pos\t很好\nneg\t太差\n")
    invoke(["ingest", "train.tsv"])
    bad = os.fsdecode(b"x\xff")
    assert "Invalid value for '--reason': is not valid UTF-8" in invoke(["labels", "set", "--run", "r", "1=neg", "--reason", bad], ok=False).output
    write_file("kd.toml", 'reason = "a\\u0000b"\n')
    assert "Error: kd.toml: reason = 'a\\x00b': contains a NUL character" in invoke(["labels", "set", "--run", "r", "1=neg"], ok=False).output
    (tmp_path / "kd.toml").unlink()
    model = str(tmp_path / bad)
    assert error_line(invoke(["teach", "--run", "r", "--model", model], ok=False)) == (
        f"Error: {model!r}: not valid UTF-8 (a file name or argument in another encoding, such as GBK): "
        "the store takes UTF-8 text only; rename it, or give it in UTF-8")
    assert invoke.json(["runs"]) == [] and _count(db, LabelEdit) == 0


def test_server_stores_of_one_name_and_host_on_two_ports_keep_their_models_apart(monkeypatch, tmp_path):
    """Two PostgreSQL servers on one host (5432 and 5433), each with a database `kd`, shared
    kd-artifacts/kd@host: the second store's first stage was refused for the first one's files, in a
    message that blamed KD_ARTIFACTS. The default port keeps the folder name it always had."""
    from sqlalchemy.engine import make_url

    from kdstore.store import _artifact_root

    monkeypatch.delenv("KD_ARTIFACTS", raising=False)
    monkeypatch.chdir(tmp_path)
    roots = [_artifact_root(None, make_url(u)).name for u in (
        "postgresql+psycopg://u@db.lan/kd", "postgresql+psycopg://u@db.lan:5432/kd", "postgresql+psycopg://u@db.lan:5433/kd")]
    assert roots == ["kd@db.lan", "kd@db.lan", "kd@db.lan-5433"]


def test_server_stores_whose_names_differ_in_characters_outside_ascii_keep_their_models_apart(monkeypatch, tmp_path):
    """Every character outside A-Z, a-z, 0-9, `_`, `.`, `-` became `_`: the databases 评论 and 商品 of one
    server (and `a b` beside `a_b`) shared kd-artifacts/__@host; a host or port given in the URL's
    query (`?host=/run/postgresql&port=5433`) was `local`, a URL with no database `db`."""
    from sqlalchemy.engine import make_url

    from kdstore.store import _artifact_root

    monkeypatch.delenv("KD_ARTIFACTS", raising=False)
    monkeypatch.chdir(tmp_path)
    urls = ("postgresql+psycopg://u@db.lan/评论", "postgresql+psycopg://u@db.lan/商品", "postgresql+psycopg://u@db.lan/a b",
            "postgresql+psycopg://u@db.lan/a_b", "postgresql+psycopg:///kd?host=/run/pg&port=5433",
            "postgresql+psycopg:///kd?host=/run/pg", "postgresql+psycopg://alice@db.lan", "postgresql+psycopg://bob@db.lan")
    roots = [_artifact_root(None, make_url(u)).name for u in urls]
    assert roots == ["评论@db.lan", "商品@db.lan", "a%20b@db.lan", "a_b@db.lan", "kd@%2Frun%2Fpg-5433", "kd@%2Frun%2Fpg",
                     "alice@db.lan", "bob@db.lan"]


def _ingest_and_teach_r(runner, corpus, tiny_model, db: str) -> None:
    """Ingest the train file into the store at ``db`` and teach its run ``r``, through the CLI."""
    from commands.cli import cli

    assert runner.invoke(cli, ["ingest", str(corpus["train"]), "--db", db]).exit_code == 0
    result = runner.invoke(cli, ["teach", "--run", "r", "--model", str(tiny_model), "--epochs", "1", "--max-len", "32", "--db", db, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["status"] == "succeeded"


def test_two_server_databases_named_in_chinese_each_train_a_run_of_one_name(pg_server, runner, corpus, tiny_model, tmp_path):
    """Through the CLI: the second store's `kd teach --run r` was refused, its stage folder holding the
    first store's model (both were kd-artifacts/__@HOST-PORT/r/teach)."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    urls = []
    try:
        for name in (f"kd_评论_{os.getpid()}", f"kd_商品_{os.getpid()}"):
            with pg_server.admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            urls.append(pg_server.url.set(database=name).render_as_string(hide_password=False))
        for url in urls:
            _ingest_and_teach_r(runner, corpus, tiny_model, url)
        folders = sorted(p.name.partition("@")[0] for p in (tmp_path / "kd-artifacts").iterdir())
        assert folders == sorted(make_url(u).database for u in urls)
    finally:
        for url in urls:
            pg_server.drop(url)


def test_two_schemas_of_one_server_database_each_train_a_run_of_one_name(pg_server, runner, corpus, tiny_model, tmp_path):
    """Two stores in two schemas of one database (`?options=-csearch_path%3Ds1`) shared
    kd-artifacts/NAME@HOST: the second one's `kd teach --run r` was refused for the first one's model.
    A store in a schema other than `public` keeps its models in NAME@HOST~SCHEMA."""
    from sqlalchemy import create_engine, text

    name = f"kd_schemas_{os.getpid()}"
    with pg_server.admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = pg_server.url.set(database=name)
    try:
        engine = create_engine(url)
        with engine.begin() as conn:
            for schema in ("s1", "项目2"):
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        engine.dispose()
        urls = [url.render_as_string(hide_password=False)] + [
            url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False) for schema in ("s1", "项目2")]
        for db in urls:
            _ingest_and_teach_r(runner, corpus, tiny_model, db)
        folders = sorted(p.name.partition("@")[2].partition("~")[2] for p in (tmp_path / "kd-artifacts").iterdir())
        assert folders == ["", "s1", "项目2"]  # (public: the folder it always had)
    finally:
        pg_server.drop(url.render_as_string(hide_password=False))


def _taught_in_a_folder(db, invoke, corpus, tiny_model, tmp_path, monkeypatch):
    """A server store's run ``r`` taught from folder ``trained`` (the working directory left there):
    its artifact root there, the folder ``elsewhere`` and the teach command. Skipped on SQLite, whose
    models lie beside its file."""
    if not db.startswith("postgresql"):
        pytest.skip("a server store's models lie in the working directory")
    trained, elsewhere = tmp_path / "trained", tmp_path / "elsewhere"
    trained.mkdir(), elsewhere.mkdir()
    monkeypatch.chdir(trained)
    invoke(["ingest", str(corpus["train"])])
    teach = ["teach", "--run", "r", "--model", str(tiny_model), "--epochs", "1", "--max-len", "32"]
    invoke(teach)
    (root,) = (trained / "kd-artifacts").iterdir()
    assert (root / "r" / "teach" / "model").is_dir()
    return root, elsewhere, teach


def test_a_server_store_run_deleted_from_another_folder_takes_its_model_folder(db, invoke, corpus, tiny_model, tmp_path, monkeypatch):
    """A server store keeps its models under the working directory (kd-artifacts/NAME@HOST/RUN/STAGE):
    `kd runs delete` run from another folder deleted the rows, said "deleted r/teach" and left the
    model (a BERT's gigabytes) behind, under no stage; `kd predict` from there found it all the same."""
    root, elsewhere, _ = _taught_in_a_folder(db, invoke, corpus, tiny_model, tmp_path, monkeypatch)
    monkeypatch.chdir(elsewhere)
    out = invoke.json(["runs", "delete", "--run", "r", "--yes"])
    assert out["run_deleted"] and [d["name"] for d in out["deleted"]] == ["teach"]
    assert not (root / "r").exists()
    assert not (elsewhere / "kd-artifacts").exists()


def test_a_server_store_stage_overwritten_from_another_folder_replaces_its_model_folder(db, invoke, corpus, tiny_model, tmp_path, monkeypatch):
    """A server store keeps its models under the working directory (kd-artifacts/NAME@HOST/RUN/STAGE):
    `kd teach --overwrite` run from another folder parked and deleted nothing of the old stage's, its
    model left behind in the first folder under no stage; a replacement that failed, there or (killed)
    in the first folder, gives the old stage its name back with its model where it lay."""
    from synthetic import kill_9_inside_stage

    from kdstore.runs import stage_scope

    root, elsewhere, teach = _taught_in_a_folder(db, invoke, corpus, tiny_model, tmp_path, monkeypatch)
    kill_9_inside_stage(db, tmp_path, run="r", inside="    (st.artifact_dir / 'part.bin').write_bytes(b'half')\n")
    assert (root / "r" / "teach" / "part.bin").exists()
    monkeypatch.chdir(elsewhere)
    store = Store.open(db)  # its stage below ends the killed one first (mark_crashed), from this folder
    try:
        with pytest.raises(ValueError, match="boom"):
            with stage_scope(store, run="r", kind="teach", config={}, overwrite=True):
                assert not (root / "r" / "teach").exists()  # parked where it lies
                raise ValueError("boom")
        back = store.find_stage("r", "teach")
        assert back.artifact_path == str((root / "r" / "teach" / "model").resolve())
        assert sorted(p.name for p in (root / "r").iterdir()) == ["teach"]
        assert not (root / "r" / "teach" / "part.bin").exists()  # the killed stage's
    finally:
        store.close()
    invoke(teach + ["--overwrite"])
    assert not (root / "r").exists()
    assert (elsewhere / "kd-artifacts" / root.name / "r" / "teach" / "model").is_dir()
    (run,) = invoke.json(["runs"])
    assert [(st["name"], st["artifact_path"]) for st in run["stages"]] == [
        ("teach", str((elsewhere / "kd-artifacts" / root.name / "r" / "teach" / "model").resolve()))]


def test_a_server_store_url_naming_a_schema_that_does_not_exist_is_refused_in_one_line(pg_server, runner, write_file, error_line):
    """A URL whose search_path names no schema of the database (`?options=-csearch_path%3Dteam_2` for
    `team2`, a typo) was called "no kd store (the database is empty): run `kd ingest`", and that
    ingest then failed with PostgreSQL's "no schema has been selected to create in". Every command
    now says the schema does not exist, in one line, and creates nothing."""
    from sqlalchemy import create_engine, inspect, text
    from sqlalchemy.engine import make_url

    from commands.cli import cli
    from kdstore.store import display_url

    url = make_url(pg_server.create())
    try:
        bad = url.update_query_dict({"options": "-csearch_path=team_2"}).render_as_string(hide_password=False)
        write_file("train.tsv", "pos\t很好\nneg\t太差\n")
        for args in (["ingest", "train.tsv"], ["runs"], ["db", "current"], ["db", "upgrade"], ["samples"]):
            result = runner.invoke(cli, [*args, "--db", bad])
            assert result.exit_code == 1 and (result.exception is None or isinstance(result.exception, SystemExit)), result.exception
            assert error_line(result) == (f"Error: cannot open the store at {display_url(make_url(bad))}: no schema of its "
                                          "search_path (team_2) exists in the database: create it (CREATE SCHEMA NAME) "
                                          "or name one that exists (?options=-csearch_path%3DNAME)")
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                assert conn.execute(text("SELECT count(*) FROM pg_namespace WHERE nspname = 'team_2'")).scalar_one() == 0
            assert inspect(engine).get_table_names() == []
        finally:
            engine.dispose()
    finally:
        pg_server.drop(url.render_as_string(hide_password=False))
