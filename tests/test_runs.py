"""Runs and stages: the ``--run`` rule, a stage's life in ``stage_scope``, stored logits and metrics,
and ``kd runs`` / ``kd report`` through the CLI."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from sqlalchemy import select, update

from conftest import Invoke, table_counts
from kdstore import vectors
from kdstore.errors import KdError, Terminated
from kdstore.names import resolve_run_id
from kdstore.runs import stage_scope
from kdstore.schema import Metric, Run, Sample, Stage
from kdstore.store import Store

TODAY = dt.date(2024, 3, 7)


# resolve_run_id ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", "   "])
def test_run_id_default(value):
    assert resolve_run_id(value, today=TODAY) == "default"


@pytest.mark.parametrize("value", ["${time}", "time", "$time", " time "])
def test_run_id_time_is_today(value):
    assert resolve_run_id(value, today=TODAY) == "20240307"


def test_run_id_time_without_today_uses_the_clock():
    before = dt.date.today().strftime("%Y%m%d")
    assert resolve_run_id("${time}") in (before, dt.date.today().strftime("%Y%m%d"))  # (midnight between)


def test_the_package_exports_what_it_lists():
    """``kdstore.__all__`` names the library's entry points, loaded on first use: ``from kdstore import
    resolve_run_id`` raised ImportError (looked up in ``kdstore.runs`` once it had moved to ``kdstore.names``)."""
    import kdstore

    for name in kdstore.__all__:
        assert getattr(kdstore, name) is not None
    from kdstore import resolve_run_id as exported

    assert exported("${time}", today=TODAY) == "20240307"


@pytest.mark.parametrize("value", ["r1", "A-b_9", "x" * 64, "20240101"])
def test_run_id_valid_literal(value):
    assert resolve_run_id(value, today=TODAY) == value


@pytest.mark.parametrize("value", ["a b", "x/y", "x" * 65, "ü", "../up", "a.b", "${date}"])
def test_run_id_invalid(value):
    with pytest.raises(KdError, match="is not valid"):
        resolve_run_id(value, today=TODAY)


def test_time_names_today_wherever_a_run_is_named(invoke, write_file, error_line, today):
    """Not only --run: --teacher-run, report --compare's runs, RUN:STAGE of --student-votes and
    --model pretrain:RUN take ${time} as today too."""
    write_file("train.tsv", "pos\tgood\nneg\tbad\npos\tfine\n")
    invoke(["ingest", "train.tsv"])
    invoke(["labels", "set", "--run", "${time}", "1=neg"])  # run `today` exists, with no teacher
    assert "no charts written to charts: run " + today in invoke(["report", "--run", "${time}", "--plot", "charts"]).stderr
    # a file's name for the folder (`--plot x.png`) made a folder named x.png
    assert ("Error: Invalid value for '--plot': 'chart.png' names an image file: --plot takes a folder, "
            "where it writes one PNG a chart (e.g. --plot charts)") in invoke(["report", "--run", "${time}", "--plot", "chart.png"], ok=False).stderr
    assert not pathlib.Path("chart.png").exists()
    assert error_line(invoke(["distill", "--run", "x", "--teacher-run", "${time}"], ok=False)).startswith(
        f"Error: run '{today}' has no succeeded 'teach' stage")
    assert f"run '{today}' has no succeeded 'teach' stage" in error_line(
        invoke(["labels", "detect", "--run", "x", "--teacher-run", "${time}"], ok=False))
    assert "--model pretrain:: name the run after 'pretrain:'" in error_line(  # not the run named default
        invoke(["teach", "--run", "x", "--model", "pretrain:"], ok=False))
    assert f"run '{today}' has no succeeded 'pretrain' stage" in error_line(
        invoke(["teach", "--run", "x", "--model", "pretrain:${time}"], ok=False))
    assert [r["run"] for r in invoke.json(["report", "--compare", "${time}"])] in ([], [today])
    # --run or --plot with --compare were ignored without a word: the runs compared were not the ones asked
    assert "leave out --run" in invoke(["report", "--compare", "${time}", "--run", "x"], ok=False).stderr
    # `--run x --compare` alone: the one run's models side by side is `--compare x`, said so
    assert "Error: --compare needs the runs to compare: kd report --compare A B (one run's models side by side: kd report --compare x)" \
        in invoke(["report", "--run", "x", "--compare"], ok=False).stderr
    assert "--plot charts one run" in invoke(["report", "--compare", "${time}", "--plot", "charts"], ok=False).stderr
    # a kd.toml's `[report] plot = "charts"` (charts for every kd report --run) is no typed --plot
    config = write_file("kd.toml", '[report]\nplot = "charts"\n')
    assert [r["run"] for r in invoke.json(["report", "--compare", "${time}", "--config", str(config)])] in ([], [today])


def test_cli_rejects_invalid_run_id(invoke, write_file):
    write_file("train.tsv", "pos\tgood\n")
    invoke(["ingest", "train.tsv"])
    result = invoke(["report", "--run", "x/y"], ok=False)
    assert result.exit_code == 2
    assert "is not valid" in result.stderr


def test_an_empty_run_id_is_refused_not_taken_for_the_default_run(invoke, write_file, counts):
    """`--run "$RUN"` with RUN unset was the run named default: `kd labels set --run ""` edited it,
    `--overwrite` would have replaced its stages; an empty --db or --name is refused already."""
    write_file("train.tsv", "pos\tgood\nneg\tbad\n")
    invoke(["ingest", "train.tsv"])
    for args in (["labels", "set", "--run", "", "1=neg"], ["labels", "set", "--run", "  ", "1=neg"],
                 ["labels", "detect", "--run", "x", "--teacher-run", ""], ["report", "--compare", "x", ""]):
        result = invoke(args, ok=False)
        assert result.exit_code == 2 and "run id is empty" in result.stderr
    assert counts()["runs"] == 0 and counts()["label_edits"] == 0
    config = write_file("empty-run.toml", 'run = ""\n')
    assert "run = '': run id is empty" in invoke(["labels", "set", "1=neg", "--config", str(config)], ok=False).stderr
    assert counts()["runs"] == 0
    invoke(["labels", "set", "1=neg"])  # no --run at all: the run named default
    assert [r["run"] for r in invoke.json(["runs"])] == ["default"]


def test_a_run_id_or_stage_name_starting_with_a_dash_is_refused_as_an_option_taken_for_it(invoke, write_file, counts, error_line):
    """`--run $RUN --json` with RUN unset took `--json` for the run: `kd labels set` edited a run named
    `--json` and printed text where the script read JSON; `--name $NAME --json` named the stage so.
    A run or stage name may not start with '-' (no option of kd is a name), and nothing is written."""
    write_file("train.tsv", "pos\tgood\nneg\tbad\n")
    invoke(["ingest", "train.tsv"])
    for value in ("--json", "-x", "--overwrite"):
        with pytest.raises(KdError, match="starts with '-'"):
            resolve_run_id(value, today=TODAY)
    result = invoke(["labels", "set", "--run", "--json", "1=neg"], ok=False)
    assert result.exit_code == 2
    assert "run id '--json' starts with '-': the next option taken as its value (`--run $RUN`" in result.stderr
    assert "'${time}'" in result.stderr and result.stdout == ""
    line = error_line(invoke(["labels", "set", "--run", "r1", "--name", "--json", "1=neg"], ok=False))
    assert line.startswith("Error: stage name '--json' starts with '-'") and "`--name $NAME`" in line
    assert invoke(["report", "--run=-x"], ok=False).stderr.rstrip().endswith("name it with a letter, digit or '_' first "
                                                                      "(today's date: '${time}', in single quotes)")
    assert counts()["runs"] == 0 and counts()["label_edits"] == 0 and counts()["stages"] == 0
    # `--run "${time}"` in double quotes reaches kd empty: the message says how to write it
    assert "'${time}' in single quotes" in invoke(["report", "--run", ""], ok=False).stderr
    invoke(["labels", "set", "--run", "r-1_", "--name", "fix-2", "1=neg"])  # a '-' elsewhere is fine
    assert [(r["run"], [st["name"] for st in r["stages"]]) for r in invoke.json(["runs"])] == [("r-1_", ["fix-2"])]


def test_a_config_files_run_id_is_checked_and_named_with_its_file(invoke, write_file, error_line, today):
    """A bad run id in kd.toml said "Invalid value for '--run'", as if typed: the file is named, as
    for any other bad value there; '${time}' there is today, as on the command line."""
    write_file("train.tsv", "pos\tgood\n")
    invoke(["ingest", "train.tsv"])
    config = write_file("kd.toml", 'run = "a b"\n')
    line = error_line(invoke(["report", "--config", str(config)], ok=False))
    assert line.startswith(f"Error: {config}: run = 'a b': run id 'a b' is not valid")
    config = write_file("kd.toml", '[distill]\nteacher-run = ["ok", "中文"]\n')
    assert "teacher-run = ['ok', '中文']: run id '中文' is not valid" in error_line(
        invoke(["distill", "--config", str(config)], ok=False))
    config = write_file("kd.toml", 'run = "${time}"\n')
    assert f"no run '{today}'" in error_line(invoke(["report", "--config", str(config)], ok=False))


# stage_scope ---------------------------------------------------------------------------------


@pytest.fixture
def store(db, invoke, write_file):
    """A store with four labeled train samples (ids 1..4), classes pos=0, neg=1."""
    write_file("train.tsv", "pos\ta\nneg\tb\npos\tc\nneg\td\n")
    invoke(["ingest", "train.tsv"])
    s = Store.open(db, create=False)
    yield s
    s.close()


def _stage(store: Store, run: str, name: str) -> Stage:
    with store.session() as s:
        return s.scalars(
            select(Stage).join(Run, Run.id == Stage.run_id).where(Run.uniqid == run, Stage.name == name)
        ).one()


def _logits(n: int, k: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, k)).astype(np.float32)


def test_stage_success_is_marked_succeeded(store):
    ids = store.samples().ids
    with stage_scope(store, run="r1", kind="teach", config={"lr": 0.1, "model": "m"}) as st:
        assert st.name == "teach" and st.run == "r1" and st.kind == "teach"
        assert _stage(store, "r1", "teach").status == "running"
        store.write_logits(st.id, ids, _logits(len(ids)))
    stage = _stage(store, "r1", "teach")
    assert stage.status == "succeeded"
    assert stage.error is None
    assert stage.ended_at is not None and stage.ended_at >= stage.started_at
    assert stage.config == {"lr": 0.1, "model": "m"}
    assert stage.host
    assert len(store.read_logits(stage.id)[0]) == 4


def test_report_says_a_model_folder_not_found_here(store, invoke):
    """A model folder deleted by hand (or on the disk of the machine that trained it, a store on a
    server) left the stage reported as any other: predict and export then failed on it, unexplained."""
    with stage_scope(store, run="r1", kind="teach", config={}) as st:
        (st.artifact_dir / "w.bin").write_bytes(b"x")
        st.record_artifact(st.artifact_dir)
    folder = _stage(store, "r1", "teach").artifact_path
    assert invoke.json(["runs"])[0]["stages"][0]["artifact_found"] is True
    assert "not found here" not in invoke(["report", "--run", "r1"]).stdout
    shutil.rmtree(folder)
    [stage] = invoke.json(["report", "--run", "r1"])["stages"]
    assert stage["artifact_found"] is False and stage["status"] == "succeeded"  # (its figures stand)
    assert f"model folder not found here: {folder}: deleted or moved by hand" in invoke(["report", "--run", "r1"]).stdout


@pytest.mark.on_postgresql
def test_stage_exception_marks_failed_and_removes_partial_outputs(store):
    ids = store.samples().ids
    with pytest.raises(RuntimeError, match="boom"):
        with stage_scope(store, run="r1", kind="teach", config={}) as st:
            store.write_logits(st.id, ids[:2], _logits(2))
            store.write_predictions(st.id, ids[:2], [0, 1], [0.9, 0.8])
            assert len(store.read_logits(st.id)[0]) == 2
            raise RuntimeError("boom")
    stage = _stage(store, "r1", "teach")
    assert stage.status == "failed"
    assert "RuntimeError: boom" in stage.error
    assert stage.ended_at is not None
    got_ids, matrix = store.read_logits(stage.id)
    assert len(got_ids) == 0 and matrix.shape[0] == 0
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM predictions").scalar() == 0


def test_stage_kderror_message_is_kept_verbatim(store):
    with pytest.raises(KdError):
        with stage_scope(store, run="r1", kind="distill", config={}):
            raise KdError("teacher logits missing")
    assert _stage(store, "r1", "distill").error == "teacher logits missing"


def test_keyboard_interrupt_marks_failed_interrupted(store):
    ids = store.samples().ids
    with pytest.raises(KeyboardInterrupt):
        with stage_scope(store, run="r1", kind="distill", config={}) as st:
            store.write_logits(st.id, ids, _logits(len(ids)))
            raise KeyboardInterrupt
    stage = _stage(store, "r1", "distill")
    assert stage.status == "failed"
    assert "interrupted" in stage.error
    assert len(store.read_logits(stage.id)[0]) == 0



def test_a_stage_that_failed_after_its_figures_reports_none_of_them(store, invoke):
    """A Ctrl-C while a teacher was timed (after its dev and test figures were stored) left a failed
    stage whose logits were gone and whose `kd report` still showed its test accuracy as if it stood."""
    ids = store.samples().ids
    with pytest.raises(KeyboardInterrupt):
        with stage_scope(store, run="r1", kind="teach", config={}) as st:
            store.add_metrics(st.id, "dev", {"accuracy": 0.5}, step=1)
            store.add_metrics(st.id, "all", {"train_samples": 4})
            store.write_logits(st.id, ids, _logits(len(ids)))
            store.add_metrics(st.id, "train", {"accuracy": 1.0, "n": 4})
            store.add_metrics(st.id, "test", {"accuracy": 0.75, "macro_f1": 0.7})
            # and the measures of its model, which goes with it (`--compare` showed a failed teacher's latency)
            store.add_metrics(st.id, "all", {"latency_p50_ms": 3.5, "throughput_samples_per_s": 900.0, "parameters": 1234,
                                             "size_mb": 2.5, "score_samples_per_s": 800.0})
            raise KeyboardInterrupt
    teach = invoke.json(["report", "--run", "r1"])["stages"][0]
    assert teach["status"] == "failed" and teach["metrics"] == {"all": {"train_samples": 4}}  # what it read, no figure of it
    assert teach["history"] == [{"step": 1, "split": "dev", "name": "accuracy", "value": 0.5}]  # its learning curve stays
    assert "0.7500" not in invoke(["report", "--run", "r1"]).stdout


def test_a_stage_whose_process_is_gone_reports_none_of_its_figures_before_it_is_marked_failed(store, invoke):
    """A teacher killed with -9 after its test figures and latency were stored: until the next stage
    marks it failed (and clears them), `kd report` (a reader) showed them under "running (process
    gone)" as if they stood, though they were about to go."""
    from kdstore.runs import _machine, _start_time

    if _machine() is None:
        pytest.skip("no /proc boot id or pid namespace here: kd judges no stage's process")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _left_running(store, "teach", f"{dead.pid}:{_start_time(os.getpid())}:{_machine()}")
    st = _stage(store, "r1", "teach")
    store.add_metrics(st.id, "dev", {"accuracy": 0.5}, step=1)
    store.add_metrics(st.id, "all", {"train_samples": 4})
    store.add_metrics(st.id, "test", {"accuracy": 0.75, "macro_f1": 0.7})
    store.add_metrics(st.id, "all", {"latency_p50_ms": 3.5, "parameters": 1234})
    teach = invoke.json(["report", "--run", "r1"])["stages"][0]
    assert teach["status"] == "running" and teach["process_gone"] is True
    assert teach["metrics"] == {"all": {"train_samples": 4}}  # as once marked failed: what it read, no figure of it
    assert teach["history"] == [{"step": 1, "split": "dev", "name": "accuracy", "value": 0.5}]
    text = invoke(["report", "--run", "r1"]).stdout
    assert "running (process gone)" in text and "0.7500" not in text and "3.5000" not in text
    invoke(["labels", "set", "--run", "r2", "1=neg"])  # a stage starts: it marks the teacher failed
    assert invoke.json(["report", "--run", "r1"])["stages"][0]["metrics"] == teach["metrics"]

@pytest.mark.on_postgresql
def test_sigterm_marks_the_stage_failed(db, tmp_path):
    """``kill`` of a single kd process (no torchrun) ends its stage failed, outputs removed."""
    script = tmp_path / "stage.py"
    script.write_text(
        "import sys, time\n"
        "from kdstore.runs import stage_scope\n"
        "from kdstore.store import Store\n"
        "store = Store.open(sys.argv[1])\n"
        "ids = store.samples().ids\n"
        "with stage_scope(store, run='r1', kind='teach', config={}) as st:\n"
        "    store.write_logits(st.id, ids, __import__('numpy').zeros((len(ids), 2), 'float32'))\n"
        "    try:\n"
        "        raise ValueError('handled')\n"
        "    except ValueError:\n"  # a kill while the stage's code handles an error of its own still ends it
        "        print('open', flush=True)\n"
        "        time.sleep(120)\n",
        encoding="utf-8",
    )
    from synthetic import terminate_when_ready

    returncode, err = terminate_when_ready(script, db, ready="open")
    assert returncode != 0 and "terminated (SIGTERM)" in err
    store = Store.open(db, create=False)
    stage = store.find_stage("r1", "teach", succeeded=False)
    assert (stage.status, stage.error) == ("failed", "terminated (SIGTERM)")
    assert len(store.read_logits(stage.id)[0]) == 0
    store.close()


@pytest.mark.on_postgresql
def test_a_ctrl_c_as_a_write_transaction_reads_ends_the_stage_failed_at_once(store, monkeypatch):
    """Ctrl-C (or a kill) landing as a statement of a write transaction returned (`kd labels clean`
    reading its samples): SQLAlchemy invalidates the connection, and SQLite left it open, write lock
    and all, while the traceback held the statement. The stage's failure then waited for that lock,
    its own, for 10 minutes, deaf to a second Ctrl-C or a kill, and the stage stayed running."""
    from sqlalchemy import text

    from kdstore import engine

    monkeypatch.setattr(engine, "SQLITE_BUSY_TIMEOUT_MS", 2000)  # (unfixed: the failure's record fails in 2 s, not 10 min)
    do_execute = store.engine.dialect.do_execute

    def interrupted(cursor, statement, parameters, context=None):
        do_execute(cursor, statement, parameters, context)
        if "kd_ctrl_c" in statement:  # the signal's KeyboardInterrupt, raised as the statement returns
            raise KeyboardInterrupt

    monkeypatch.setattr(store.engine.dialect, "do_execute", interrupted)
    with pytest.raises(KeyboardInterrupt):
        with stage_scope(store, run="r1", kind="teach", config={}):
            with store.write_session("samples") as s:
                s.execute(text("SELECT id AS kd_ctrl_c FROM samples"))  # (rows left to read: its statement stays open)
    stage = store.find_stage("r1", "teach", succeeded=False)
    assert (stage.status, stage.error) == ("failed", "interrupted (KeyboardInterrupt)")


def test_a_kill_inside_a_library_that_catches_exception_still_ends_the_stage(store):
    """A SIGTERM that lands inside a library's ``except Exception`` (jieba swallows errors while it
    loads its dictionary, where ``kd pretrain`` spends its first seconds) is not swallowed: the
    stage ends failed instead of training on and succeeding after the kill."""
    saved = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # as a process starts
    try:
        # the one line says what became of the stage, as a Ctrl-C's does (it said only "terminated (SIGTERM)")
        with pytest.raises(Terminated, match=r"^terminated \(SIGTERM\): stage 'distill' of run 'r1' is recorded failed; "
                                             r"run the command again to start it over$"):
            with stage_scope(store, run="r1", kind="distill", config={}) as st:
                store.write_logits(st.id, [1, 2], _logits(2))
                try:
                    os.kill(os.getpid(), signal.SIGTERM)
                except Exception:  # noqa: BLE001 - what a library does
                    pass
    finally:
        signal.signal(signal.SIGTERM, saved)
    stage = _stage(store, "r1", "distill")
    assert (stage.status, stage.error) == ("failed", "terminated (SIGTERM)")
    assert len(store.read_logits(stage.id)[0]) == 0


def test_a_failed_stage_leaves_no_folder_and_a_rerun_starts_from_an_empty_one(store):
    """A failure's partial artifacts (here: three folds of five) go with it, so the next attempt's
    recorded artifact (and its sha256) holds only what that attempt wrote."""
    with pytest.raises(KeyboardInterrupt):
        with stage_scope(store, run="r1", kind="teach", config={}) as st:
            for k in range(3):
                (st.artifact_dir / f"fold-{k}").mkdir()
            folder = st.artifact_dir
            raise KeyboardInterrupt
    assert not folder.exists() and not folder.parent.exists()  # nor the run's folder, which held nothing else
    with stage_scope(store, run="r1", kind="teach", config={}) as st:
        (st.artifact_dir / "fold-0").mkdir()
        (st.artifact_dir / "fold-0" / "w.bin").write_bytes(b"x")
        st.record_artifact(st.artifact_dir)
    assert [p.name for p in folder.iterdir()] == ["fold-0"]


def test_a_kill_or_a_second_ctrl_c_while_the_end_is_recorded_waits_for_the_record():
    """SIGTERM and SIGHUP raise while a stage runs; while its end is recorded they, and a second
    Ctrl-C, are held and raised after (a guard restores the handlers it replaced)."""
    from kdstore.runs import SignalGuard

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM)}
    for sig in (signal.SIGHUP, signal.SIGTERM):  # as a terminal starts a process (nohup would ignore SIGHUP)
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    guard = SignalGuard()
    try:
        with pytest.raises(Terminated, match=r"terminated \(SIGHUP\)"):
            os.kill(os.getpid(), signal.SIGHUP)
        guard.hold()
        os.kill(os.getpid(), signal.SIGINT)  # held: no KeyboardInterrupt here
        with pytest.raises(KeyboardInterrupt):
            guard.close()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert signal.getsignal(signal.SIGHUP) is signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        guard.close()
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def test_under_torchrun_a_kill_while_the_end_is_recorded_waits_too():
    """torchrun's ranks have their own SIGTERM handler (kd's guard leaves it alone): it defers to
    the guard's hold as well, so rank 0 completes the record of its stage first."""
    from kdstore.distributed import _raise_on_sigterm
    from kdstore.runs import SignalGuard

    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        guard = SignalGuard()
        guard.hold()
        os.kill(os.getpid(), signal.SIGTERM)  # held
        with pytest.raises(KdError, match=r"terminated \(SIGTERM\) after the stage was recorded"):
            guard.close()
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def test_a_ctrl_c_while_a_success_is_recorded_says_the_stage_succeeded(db, invoke, write_file, tmp_path):
    """A Ctrl-C that came while kd recorded a stage's success (held, then raised) ended the real CLI
    in click's bare "Aborted!" (exit 1), read as if nothing had been done: the clean's label edit
    stood. Its one-line error says the stage succeeded and its results stand."""
    write_file("train.tsv", "neg\t太差\npos\t很好\n")
    invoke(["ingest", "train.tsv"])
    script = tmp_path / "ctrl_c.py"
    script.write_text(
        "import os, signal, sys\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)  # (as in a terminal)\n"
        "import kdstore.runs as runs\n"
        "recorded = runs._drop_replaced  # called once the success is recorded, signals held\n"
        "def ctrl_c(*args, **kwargs):\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    return recorded(*args, **kwargs)\n"
        "runs._drop_replaced = ctrl_c\n"
        "from commands.cli import main\n"
        "sys.argv = ['kd', *sys.argv[1:]]\n"
        "main()\n", encoding="utf-8")
    env = {**os.environ, "KD_DB": db, "KD_NO_PROGRESS": "1", "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    proc = subprocess.run([sys.executable, str(script), "labels", "set", "--run", "r1", "1=pos"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "Aborted!" not in proc.stderr
    assert proc.stderr.strip() == ("Error: interrupted (KeyboardInterrupt) after stage 'edit-1' of run 'r1' succeeded: "
                                   "its results stand (`kd report --run r1` shows them)")
    history = json.loads(invoke(["labels", "history", "1", "--json"]).stdout)
    assert history["current"] == "pos" and history["edits"][0]["stage"] == "edit-1"  # the edit stands, as the error says


def test_stdout_that_cannot_be_written_after_a_success_says_the_stage_succeeded(db, invoke, write_file, tmp_path):
    """`kd labels set ... --json > out.json` on a full disk (or a teach's hour of work so written): the stage was
    recorded succeeded, its edit stood, and the command ended in a bare "Error: No space left on device" naming
    neither the output nor the stage, read by a script as nothing done (a rerun of a teach: "pass --overwrite")."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    write_file("train.tsv", "neg\t太差\nneg\t很差\npos\t很好\n")
    invoke(["ingest", "train.tsv"])
    env = {**os.environ, "KD_DB": db, "KD_NO_PROGRESS": "1", "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    with open("/dev/full", "wb") as full:
        proc = subprocess.run([sys.executable, "-m", "commands.cli", "labels", "set", "--run", "r1", "1=pos", "--json"],
                              env=env, stdout=full, stderr=subprocess.PIPE, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("Error: standard output: No space left on device (stage 'edit-1' of run 'r1' succeeded: "
                                   "its results stand (`kd report --run r1` shows them))")
    history = json.loads(invoke(["labels", "history", "1", "--json"]).stdout)
    assert history["current"] == "pos"  # the edit stands, as the error says


def _old_teacher(store) -> int:
    """Run r1's teach stage, succeeded with a model file reading "old": the stage a replacement parks (its id)."""
    with stage_scope(store, run="r1", kind="teach", config={}) as st:
        (st.artifact_dir / "model.txt").write_text("old", encoding="utf-8")
        st.record_artifact(st.artifact_dir / "model.txt")
    return st.id


@pytest.mark.on_postgresql
def test_a_replacement_killed_with_9_gives_the_old_stage_back_when_the_next_stage_starts(store, db, tmp_path, invoke):
    """``kill -9`` (or an OOM kill) of a ``--overwrite`` leaves the old stage parked: the next
    stage that starts finds the process gone and does what the failed process could not: the
    replacement's outputs and folder go, and the old stage gets its name and its folder back."""
    from kdstore.runs import _machine

    if _machine() is None:
        pytest.skip("no /proc boot id or pid namespace here: kd judges no stage's process")
    old_id = _old_teacher(store)
    from synthetic import kill_9_inside_stage

    line = kill_9_inside_stage(db, tmp_path, run="r1", inside=(
        "    ids = store.samples().ids\n"
        "    store.write_logits(st.id, ids, numpy.zeros((len(ids), 2), 'float32'))\n"
        "    (st.artifact_dir / 'model.txt').write_text('partial', encoding='utf-8')\n"))
    assert _stage(store, "r1", "teach~parked-" + str(old_id)).status == "succeeded"  # as the kill left it
    with pytest.raises(KdError, match=f"'teach~parked-{old_id}' is the one an --overwrite is replacing: it gets its name back"):
        store.find_stage("r1", "teach")  # a reader meanwhile (kd predict) is told what it sees and what ends it
    # and what serves meanwhile: the parked stage by its name, its model as it was
    parked = store.find_stage("r1", f"teach~parked-{old_id}")
    assert pathlib.Path(parked.artifact_path).read_text(encoding="utf-8") == "old"
    with pytest.raises(KdError, match=f"until then, `--model teach~parked-{old_id}` \\(kd predict, kd export\\) serves it"):
        store.find_stage("r1", "teach")
    from kdstore.runs import wait_for_marking

    # a torchrun rank other than 0 waits (reading only) for rank 0 to mark it before its own lookups
    assert wait_for_marking(store, timeout=0.3, poll=0.1) is False
    assert _stage(store, "r1", "teach~parked-" + str(old_id)).status == "succeeded"  # it wrote nothing
    invoke(["labels", "set", "--run", "r2", "1=neg"])  # any stage that starts
    assert wait_for_marking(store, timeout=0.3, poll=0.1) is True
    back = store.find_stage("r1", "teach")
    assert back.id == old_id and (store.artifact_root / "r1" / "teach" / "model.txt").read_text(encoding="utf-8") == "old"
    crashed = _stage(store, "r1", f"teach~failed-{line}")
    assert crashed.status == "failed" and crashed.error.startswith("crashed: process")
    assert len(store.read_logits(crashed.id)[0]) == 0


def test_a_parked_stage_that_is_no_model_is_not_offered_to_kd_predict(store):
    """`kd labels clean` while `kd labels detect --overwrite` ran was told "until then, `--model
    detect~parked-ID` (kd predict, kd export) serves it": neither serves a detection (nor a pretrain's MLM)."""
    for kind in ("detect", "pretrain"):
        with stage_scope(store, run="r1", kind=kind, config={}):
            pass
        with pytest.raises(RuntimeError, match="the replacement fails"):
            with stage_scope(store, run="r1", kind=kind, config={}, overwrite=True):
                with pytest.raises(KdError, match=f"'{kind}~parked-\\d+' is the one an --overwrite is replacing") as refused:
                    store.find_stage("r1", kind)
                assert "serves it" not in str(refused.value) and "kd predict" not in str(refused.value), refused.value
                raise RuntimeError("the replacement fails")
        assert store.find_stage("r1", kind).name == kind


def test_a_ctrl_c_just_after_the_stage_is_recorded_ends_it_failed(store, invoke, monkeypatch):
    """Ctrl-C right after the stage's row was committed, before stage_scope's own try, left it
    `running` (kd labels set / clean printed "Aborted!"), and an --overwrite's old stage parked,
    until a later stage found the process gone."""
    import kdstore.runs as runs

    old_id = _old_teacher(store)

    def ctrl_c():
        raise KeyboardInterrupt

    monkeypatch.setattr(runs, "SignalGuard", ctrl_c)  # the first thing after the stage's row is committed
    with pytest.raises(KeyboardInterrupt):
        with stage_scope(store, run="r1", kind="teach", config={}, overwrite=True):
            pytest.fail("the body must not run")
    back = _stage(store, "r1", "teach")
    assert back.id == old_id and back.status == "succeeded"
    assert (store.artifact_root / "r1" / "teach" / "model.txt").read_text(encoding="utf-8") == "old"
    failed = [s for s in store.stages_of("r1") if s.id != old_id]
    assert [(s.status, s.error) for s in failed] == [("failed", "interrupted (KeyboardInterrupt)")]
    result = invoke(["labels", "set", "--run", "r2", "1=neg"], ok=False)
    assert result.exit_code == 1 and store.counts()["train"] == {"pos": 2, "neg": 2}
    assert [(s.name, s.status) for s in store.stages_of("r2")] == [("edit-1", "failed")]


def test_a_ctrl_c_inside_a_stage_says_the_stage_is_recorded_failed(store, invoke, monkeypatch):
    """Ctrl-C while a stage ran (a teacher's epochs, a clean's edits) ended the command in click's bare
    "Aborted!": nothing said what became of the stage. Its one-line error says it is recorded failed
    (a rerun starts it over, no --overwrite needed); exit 1, still a KeyboardInterrupt to a script."""
    import kdstore.labels as lab

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(lab, "apply", ctrl_c)
    result = invoke(["labels", "set", "--run", "r1", "1=neg"], ok=False)
    assert result.exit_code == 1 and "Aborted!" not in result.output
    assert result.stderr.strip() == ("Error: interrupted (KeyboardInterrupt): stage 'edit-1' of run 'r1' is recorded failed; "
                                     "run the command again to start it over"), result.stderr
    assert [(s.name, s.status, s.error) for s in store.stages_of("r1")] == [("edit-1", "failed", "interrupted (KeyboardInterrupt)")]
    monkeypatch.undo()
    invoke(["labels", "set", "--run", "r1", "--name", "edit-1", "1=neg"])  # (the failed stage's name is taken again)
    assert store.counts()["train"] == {"pos": 1, "neg": 3}
    with pytest.raises(KeyboardInterrupt):  # (a script calling the library still stops on it)
        with stage_scope(store, run="r2", kind="teach", config={}):
            raise KeyboardInterrupt


def test_succeeded_stage_is_not_replaced_without_overwrite(store):
    ids = store.samples().ids
    with stage_scope(store, run="r1", kind="teach", config={"v": 1}) as st:
        store.write_logits(st.id, ids, _logits(len(ids), seed=1))
    first = _stage(store, "r1", "teach")

    with pytest.raises(KdError, match="--overwrite"):
        with stage_scope(store, run="r1", kind="teach", config={"v": 2}):
            pytest.fail("the body must not run")
    same = _stage(store, "r1", "teach")
    assert (same.id, same.status, same.config) == (first.id, "succeeded", {"v": 1})
    assert len(store.read_logits(first.id)[0]) == 4
    with stage_scope(store, run="r1", kind="distill", name="distill-textcnn", config={}):
        pass
    with pytest.raises(KdError, match="pass --overwrite to replace it, --name to keep both, or another --run with --teacher-run r1$"):  # (distill takes --name)
        with stage_scope(store, run="r1", kind="distill", name="distill-textcnn", config={}):
            pytest.fail("the body must not run")
    # a detection, a clean and kd predict --store read their own run's teacher, detection or model:
    # "or use another --run" sent a user to a run holding none of them
    for kind, name, advice in (("detect", "detect", "pass --overwrite to replace it$"),
                               ("clean", "clean", "pass --overwrite to replace it, or --name to keep both$"),
                               ("predict", "predict-teach", "pass --overwrite to replace it$")):
        with stage_scope(store, run="r1", kind=kind, name=name, config={}):
            pass
        with pytest.raises(KdError, match=advice):
            with stage_scope(store, run="r1", kind=kind, name=name, config={}):
                pytest.fail("the body must not run")

    # another run is independent
    with stage_scope(store, run="r2", kind="teach", config={}):
        pass
    assert _stage(store, "r2", "teach").status == "succeeded"


def test_a_refusal_names_the_stages_start_in_utc(store, invoke):
    """The stored start is UTC: "succeeded on 2024-03-07 23:00" read as local time was a day off from
    a run named by ${time} (the local date) in Beijing; the message says UTC, as `kd runs` does."""
    with stage_scope(store, run="r1", kind="teach", config={}):
        pass
    started = dt.datetime.fromisoformat(invoke.json(["runs"])[0]["stages"][0]["started_at"])
    with pytest.raises(KdError) as info:
        with stage_scope(store, run="r1", kind="teach", config={}):
            pytest.fail("the body must not run")
    assert f"succeeded on {started:%Y-%m-%d %H:%M} UTC: pass --overwrite" in str(info.value)


def test_overwrite_replaces_stage_and_its_outputs(store):
    ids = store.samples().ids
    old_matrix = _logits(len(ids), seed=1)
    with stage_scope(store, run="r1", kind="teach", config={"v": 1}) as st:
        store.write_logits(st.id, ids, old_matrix)
        store.add_metrics(st.id, "dev", {"acc": 0.5})
    old_id = st.id

    new_matrix = _logits(2, seed=2)
    with stage_scope(store, run="r1", kind="teach", config={"v": 2}, overwrite=True) as st:
        # nothing of the old stage is visible, even if SQLite reuses its id
        assert len(store.read_logits(st.id)[0]) == 0
        store.write_logits(st.id, ids[:2], new_matrix)
    stage = _stage(store, "r1", "teach")
    assert stage.status == "succeeded" and stage.config == {"v": 2}
    got_ids, got = store.read_logits(stage.id)
    assert got_ids.tolist() == ids[:2].tolist()
    np.testing.assert_array_equal(got, new_matrix)
    with store.session() as s:
        stages = s.scalars(select(Stage)).all()
        metrics = s.scalars(select(Metric)).all()
    assert len(stages) == 1
    assert metrics == []
    if stage.id != old_id:
        assert len(store.read_logits(old_id)[0]) == 0


@pytest.mark.on_postgresql
def test_a_replacements_end_and_a_label_edit_at_once_do_not_deadlock(store, monkeypatch):
    """A replacement's end deletes the stage it replaced while `kd labels set` starts: on PostgreSQL
    the edit held label_edits waiting for label_issues, the end held label_issues and needed
    label_edits (the deleted stage's edits lose it): "deadlock detected", the old stage kept."""
    import threading
    import time

    from kdstore import labels as lab

    with stage_scope(store, run="r1", kind="detect", config={}, name="x"):
        pass
    real, edits = lab.reopen, []

    def edit_meanwhile(*a, **k):  # the end holds its locks: a label edit starts now
        edit = threading.Thread(target=lambda: edits.append(
            lab.apply(store, None, [lab.Decision(1, None, "drop", None)], reason="meanwhile")))
        edit.start()
        time.sleep(1)
        edits.append(edit)
        return real(*a, **k)

    monkeypatch.setattr(lab, "reopen", edit_meanwhile)
    with stage_scope(store, run="r1", kind="detect", config={"v": 2}, name="x", overwrite=True):
        pass
    edits[0].join(30)
    assert edits[1]["drop"] == 1
    with store.session() as s:
        assert [(st.name, st.config) for st in s.scalars(select(Stage))] == [("x", {"v": 2})]


@pytest.mark.on_postgresql
@pytest.mark.parametrize("fails", [False, True])
def test_a_stage_deleted_meanwhile_ends_with_one_line_not_a_traceback(store, fails):
    """Another machine's `--overwrite` of a stage it saw as "marked running by a process kd cannot
    check" deleted it while it ran: its end says so in one line (a failure keeps its own error)
    instead of an AttributeError on the missing row."""
    from sqlalchemy import delete

    with pytest.raises(KdError, match="boom" if fails else "replaced meanwhile by another process"):
        with stage_scope(store, run="r1", kind="teach", config={}) as st:
            with store.engine.begin() as conn:
                conn.execute(delete(Stage).where(Stage.id == st.id))
            if fails:
                raise KdError("boom")


def test_a_failed_overwrite_keeps_the_stage_it_was_to_replace(store, capsys):
    """--overwrite replaces a stage only once the replacement succeeds: a failed one gives the name,
    outputs and artifacts back to the old stage and keeps its own record; a later success clears both."""
    ids = store.samples().ids
    old_matrix = _logits(len(ids), seed=1)
    with stage_scope(store, run="r1", kind="teach", config={"v": 1}) as st:
        store.write_logits(st.id, ids, old_matrix)
        store.add_metrics(st.id, "dev", {"acc": 0.5})
        (st.artifact_dir / "model.bin").write_bytes(b"old")
        st.record_artifact(st.artifact_dir / "model.bin")
    old_id = st.id
    folder = store.artifact_root / "r1" / "teach"

    with pytest.raises(KdError, match="bad input"):
        with stage_scope(store, run="r1", kind="teach", config={"v": 2}, overwrite=True) as st:
            assert not (folder / "model.bin").exists()  # the replacement starts from an empty folder
            store.write_logits(st.id, ids[:2], _logits(2, seed=2))
            (st.artifact_dir / "model.bin").write_bytes(b"half")
            raise KdError("bad input")
    failed_id = st.id
    # said: the command warned, before it trained, of what its --overwrite would replace
    assert "note: nothing was replaced: stage 'teach' of run 'r1' stays as it was" in capsys.readouterr().err
    back = _stage(store, "r1", "teach")
    assert (back.id, back.status, back.config) == (old_id, "succeeded", {"v": 1})
    assert back.artifact_path == str((folder / "model.bin").resolve()) and (folder / "model.bin").read_bytes() == b"old"
    np.testing.assert_array_equal(store.read_logits(old_id)[1], old_matrix)
    assert [(m.name, m.value) for m in store.metrics(old_id) if m.split == "dev"] == [("acc", 0.5)]
    attempt = _stage(store, "r1", f"teach~failed-{failed_id}")
    assert attempt.status == "failed" and attempt.error == "bad input" and attempt.artifact_path is None
    assert len(store.read_logits(failed_id)[0]) == 0
    assert sorted(p.name for p in folder.parent.iterdir()) == ["teach"]

    with pytest.raises(KdError, match="bad input"):  # (a failure that replaced nothing says nothing of it)
        with stage_scope(store, run="r1", kind="distill", config={}, name="student"):
            raise KdError("bad input")
    assert "nothing was replaced" not in capsys.readouterr().err
    with stage_scope(store, run="r1", kind="teach", config={"v": 3}, overwrite=True) as st:
        store.write_logits(st.id, ids[:2], _logits(2, seed=3))
    assert sorted((s.name, s.status) for s in store.stages_of("r1")) == [("student", "failed"), ("teach", "succeeded")]
    assert _stage(store, "r1", "teach").config == {"v": 3} and len(store.read_logits(old_id)[0]) == 0
    assert not folder.exists() or not any(folder.iterdir())


@pytest.mark.parametrize("name", ["exp/v1", ".", "..", ".hidden", "a~b", "x" * 65, "tab\tname", "", "votes\n", "predict-x@dev\n"])
def test_stage_names_are_folder_names(store, name):
    """A stage name names its artifact folder too: no separators, no dot first, at most 64 characters."""
    from kdstore.names import check_stage_name

    with pytest.raises(KdError, match="stage name .* is not valid"):
        check_stage_name(name)
    if name:
        with pytest.raises(KdError, match="stage name .* is not valid"):
            with stage_scope(store, run="r1", kind="distill", name=name, config={}):
                pytest.fail("the body must not run")
        assert not store.run_exists("r1")
    for fine in ("distill-textcnn", "v1.2_b", "textcnn-+pool", "x" * 64, "predict-" + "x" * 64, "predict-" + "x" * 64 + "@unlabeled"):
        check_stage_name(fine)
    for bad in ("x@dev", "predict-x@nosplit", "predict-x@dev@dev"):  # '@SPLIT' ends kd's predict names only
        with pytest.raises(KdError, match="is not valid"):
            check_stage_name(bad)


def _dropped(store: Store, sample_id: int) -> bool:
    with store.session() as s:
        return s.get(Sample, sample_id).dropped


def test_a_failed_clean_takes_its_edits_back(store):
    """A clean stage that changed labels and then failed (its metrics or its end not recorded: an error,
    Ctrl-C) reverts its edits as it fails: a failed stage changed no label. Its reverted edits stay on
    record under its name (``NAME~failed-ID``) when an --overwrite replaces it, which nothing refuses."""
    from kdstore import labels as lab

    with stage_scope(store, run="r1", kind="clean", name="review", config={}):
        pass
    with pytest.raises(RuntimeError, match="after the edits"):
        with stage_scope(store, run="r1", kind="clean", name="review", config={}, overwrite=True) as st:
            lab.apply(store, st.id, [lab.Decision(sample_id=1, issue_id=None, action="drop", new_label=None)], reason="test")
            assert _dropped(store, 1)
            raise RuntimeError("after the edits")
    failed = f"review~failed-{st.id}"
    assert _stage(store, "r1", failed).status == "failed" and _stage(store, "r1", "review").status == "succeeded"
    assert not _dropped(store, 1)
    assert [(e["stage"], e["reverted_at"] is not None) for e in lab.history(store, 1)["edits"]] == [(failed, True)]
    with pytest.raises(KdError, match="nothing left to undo"):
        lab.undo(store, "r1", failed)
    with stage_scope(store, run="r1", kind="clean", name="review", config={}, overwrite=True):
        pass
    assert sorted(s.name for s in store.stages_of("r1")) == ["review", failed]
    assert [e["stage"] for e in lab.history(store, 1)["edits"]] == [failed]


def test_undo_refuses_a_clean_still_running(store):
    """`kd labels undo` of a clean still running (another process) reverted its edits so far, and the
    clean then ended succeeded with its counts: refused until it has ended."""
    from kdstore import labels as lab

    with stage_scope(store, run="r1", kind="clean", name="review", config={}) as st:
        lab.apply(store, st.id, [lab.Decision(sample_id=1, issue_id=None, action="drop", new_label=None)], reason="test")
        with pytest.raises(KdError, match="clean stage 'review' of run 'r1' is still running .*undo it once it has ended"):
            lab.undo(store, "r1", "review")
        assert _dropped(store, 1)
    assert lab.undo(store, "r1", "review")["reverted"] == 1 and not _dropped(store, 1)


def test_a_failed_clean_whose_samples_were_edited_again_keeps_its_edits_and_says_so(store):
    """A failed clean's edits that a later edit touched (another process, between the two) are not
    reverted (that would undo the later one too): the stage's error says so, naming the undos to run,
    an --overwrite asks for their undo first and never deletes the stage; once the later edit is
    undone, its undo works. Its other edits, which nothing touched since, are reverted as it fails."""
    from kdstore import labels as lab

    with pytest.raises(RuntimeError, match="after the edits"):
        with stage_scope(store, run="r1", kind="clean", name="review", config={}) as st:
            lab.apply(store, st.id, [lab.Decision(sample_id=i, issue_id=None, action="drop", new_label=None) for i in (1, 2)],
                      reason="test")
            with stage_scope(store, run="r1", kind="clean", name="by-hand", config={}) as other:
                lab.apply(store, other.id, lab.parse_edits(store, ["1=neg"]), reason="test")
            raise RuntimeError("after the edits")
    stage = _stage(store, "r1", "review")
    assert stage.status == "failed" and stage.error.endswith(
        "; its 1 label edit of sample 1 stands (later edits or decisions touched them: stage r1/by-hand): "
        "`kd labels undo --run r1 --stage by-hand`, then `kd labels undo --run r1 --stage review`")
    with store.session() as s:
        assert s.get(Sample, 1).label_id == store.class_names().index("neg") and not s.get(Sample, 1).dropped
    assert not _dropped(store, 2)  # (nothing touched it since: reverted, as the README says)
    with pytest.raises(KdError, match="`kd labels undo --run r1 --stage review` first"):
        with stage_scope(store, run="r1", kind="clean", name="review", config={}, overwrite=True):
            pytest.fail("the body must not run")
    assert lab.undo(store, "r1", "by-hand")["reverted"] == 1
    assert lab.undo(store, "r1", "review")["reverted"] == 1
    assert not _dropped(store, 1)
    with stage_scope(store, run="r1", kind="clean", name="review", config={}):
        pass
    # its undone edits stay on record under its name (it was deleted: history said "a deleted stage")
    failed = f"review~failed-{st.id}"
    assert sorted(s.name for s in store.stages_of("r1")) == ["by-hand", "review", failed]
    assert sorted(e["stage"] for e in lab.history(store, 1)["edits"]) == ["by-hand", failed]


def test_a_failed_overwrite_whose_edits_stand_names_itself_not_the_stage_given_back(store):
    """A failed --overwrite gives its name back to the stage it was replacing and becomes
    ``NAME~failed-ID``: its error, naming the undo for its edits that stand, said `--stage NAME`,
    the old stage's undo (it reopened the old review's decisions and left the failed one's edit)."""
    from kdstore import labels as lab

    with stage_scope(store, run="r1", kind="clean", name="review", config={}):
        pass
    with pytest.raises(RuntimeError, match="after the edits"):
        with stage_scope(store, run="r1", kind="clean", name="review", config={}, overwrite=True) as st:
            lab.apply(store, st.id, [lab.Decision(sample_id=1, issue_id=None, action="drop", new_label=None)], reason="test")
            with stage_scope(store, run="r1", kind="clean", name="by-hand", config={}) as other:
                lab.apply(store, other.id, lab.parse_edits(store, ["1=neg"]), reason="test")
            raise RuntimeError("after the edits")
    failed = f"review~failed-{st.id}"
    assert _stage(store, "r1", "review").status == "succeeded"
    error = _stage(store, "r1", failed).error
    assert error.endswith(f"`kd labels undo --run r1 --stage by-hand`, then `kd labels undo --run r1 --stage {failed}`"), error
    assert lab.undo(store, "r1", "by-hand")["reverted"] == 1
    assert lab.undo(store, "r1", failed)["reverted"] == 1 and not _dropped(store, 1)


def test_an_interrupt_as_an_overwrite_starts_leaves_the_old_stage_with_its_folder(store, monkeypatch):
    """Ctrl-C (or an error) after the old stage's folder was moved aside (parked) but before that was
    committed: the folder goes back too, so the old stage still finds its model (it was 'missing')."""
    from pathlib import Path

    import kdstore.runs as runs

    with stage_scope(store, run="r1", kind="teach", config={}) as st:
        (st.artifact_dir / "model.bin").write_bytes(b"old")
        st.record_artifact(st.artifact_dir / "model.bin")

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(runs, "this_process", interrupted)  # called as the new stage's row is made, after the park
    with pytest.raises(KeyboardInterrupt):
        with stage_scope(store, run="r1", kind="teach", config={}, overwrite=True):
            pytest.fail("the body must not run")
    monkeypatch.undo()
    back = _stage(store, "r1", "teach")
    assert back.status == "succeeded" and Path(back.artifact_path).read_bytes() == b"old"
    assert sorted(p.name for p in (store.artifact_root / "r1").iterdir()) == ["teach"]


def test_a_failure_cut_short_before_it_gave_the_old_stage_back_is_finished_by_the_next_stage(store, monkeypatch):
    """``kill -9`` (or Ctrl-C in the next command's crash check) after a replacement was marked failed
    but before the old stage got its name back: the old stage stayed parked for good, the failed
    one's folder blocked every rerun. The next stage that starts finishes the give-back, once."""
    from pathlib import Path

    import kdstore.runs as runs

    with stage_scope(store, run="r1", kind="teach", config={}) as st:
        (st.artifact_dir / "model.bin").write_bytes(b"old")
        st.record_artifact(st.artifact_dir / "model.bin")
    old_id = st.id
    give_back = runs._give_back

    def cut_short(*args, **kwargs):
        raise KeyboardInterrupt  # (a kill: an error there is told as a warning, the stage's own error raised)

    monkeypatch.setattr(runs, "_give_back", cut_short)
    with pytest.raises(KeyboardInterrupt):
        with stage_scope(store, run="r1", kind="teach", config={}, overwrite=True) as st:
            (st.artifact_dir / "model.bin").write_bytes(b"half")
            raise ValueError("boom")
    monkeypatch.setattr(runs, "_give_back", give_back)
    failed_id = st.id
    assert _stage(store, "r1", "teach").status == "failed"  # as the cut left it: the old stage parked
    with stage_scope(store, run="r2", kind="teach", config={}):  # any stage that starts
        pass
    back = store.find_stage("r1", "teach")
    assert back.id == old_id and Path(back.artifact_path).read_bytes() == b"old"
    assert _stage(store, "r1", f"teach~failed-{failed_id}").status == "failed"
    assert sorted(p.name for p in (store.artifact_root / "r1").iterdir()) == ["teach"]
    runs._give_back(store, run="r1", name="teach", failed_id=failed_id)  # again (another process finishing it): nothing moves
    assert Path(store.find_stage("r1", "teach").artifact_path).read_bytes() == b"old"


def test_a_success_cut_short_before_it_dropped_the_old_stage_is_finished_by_the_next_stage(store, db, tmp_path):
    """``kill -9`` after an ``--overwrite`` was recorded succeeded but before the stage it replaced was
    deleted: the old stage stayed ``NAME~parked-ID`` for good (in `kd runs` and `kd report`), its model
    folder kept beside the new one. The next stage that starts on the machine deletes it, as the
    killed process would have."""
    from kdstore.runs import _machine

    if _machine() is None:
        pytest.skip("no /proc boot id or pid namespace here: kd judges no stage's process")
    old_id = _old_teacher(store)
    script = tmp_path / "cut.py"
    script.write_text(
        "import os, signal, sys\n"
        "import kdstore.runs as runs\n"
        "from kdstore.store import Store\n"
        "runs._drop_replaced = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)  # killed right after the success\n"
        "store = Store.open(sys.argv[1])\n"
        "with runs.stage_scope(store, run='r1', kind='teach', config={}, overwrite=True) as st:\n"
        "    (st.artifact_dir / 'model.txt').write_text('new', encoding='utf-8')\n"
        "    st.record_artifact(st.artifact_dir / 'model.txt')\n",
        encoding="utf-8",
    )
    proc = subprocess.run([sys.executable, str(script), db], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert _stage(store, "r1", f"teach~parked-{old_id}").status == "succeeded"  # as the kill left it
    with stage_scope(store, run="r2", kind="teach", config={}):  # any stage that starts
        pass
    assert [(s.name, s.status) for s in store.stages_of("r1")] == [("teach", "succeeded")]
    new = store.find_stage("r1", "teach")
    assert new.id != old_id and pathlib.Path(new.artifact_path).read_text(encoding="utf-8") == "new"
    assert sorted(p.name for p in (store.artifact_root / "r1").iterdir()) == ["teach"]


def test_an_artifact_folder_that_cannot_be_made_fails_the_stage_in_one_line(db, invoke, write_file, tmp_path, monkeypatch):
    """KD_ARTIFACTS read-only, or a file: making the stage's folder raised an OSError, recorded as the
    stage's error with the place in pathlib it came from, and the check meant to say "cannot write the
    stage's model there (KD_ARTIFACTS sets the folder)" never ran."""
    write_file("train.tsv", "pos\ta\nneg\tb\n")
    invoke(["ingest", "train.tsv"])
    blocker = write_file("not-a-folder", "x")
    monkeypatch.setenv("KD_ARTIFACTS", str(blocker))
    store = Store.open(db, create=False)
    try:
        with pytest.raises(KdError, match=r"not-a-folder/r1/teach: cannot write the stage's model there: .*\(KD_ARTIFACTS sets the folder\)$"):
            with stage_scope(store, run="r1", kind="teach", config={}):
                pytest.fail("the body must not run")
        stage = _stage(store, "r1", "teach")
        assert stage.status == "failed" and " at " not in stage.error and "KD_ARTIFACTS sets the folder" in stage.error
    finally:
        store.close()


def test_failed_stage_may_be_rerun_without_overwrite(store):
    with pytest.raises(ValueError):
        with stage_scope(store, run="r1", kind="teach", config={}):
            raise ValueError("first try")
    assert _stage(store, "r1", "teach").status == "failed"
    with stage_scope(store, run="r1", kind="teach", config={"try": 2}):
        pass
    stage = _stage(store, "r1", "teach")
    assert stage.status == "succeeded" and stage.error is None and stage.config == {"try": 2}


def test_running_stage_is_not_replaced_without_overwrite(store):
    """A stage whose process still runs is not replaced, --overwrite or not."""
    with pytest.raises(KdError, match="is running \\(process .* wait for it, or stop it"):
        with stage_scope(store, run="r1", kind="teach", config={}):
            with stage_scope(store, run="r1", kind="teach", config={}):
                pytest.fail("the inner body must not run")
    # the outer stage saw the inner error and is failed; a re-run needs no --overwrite
    assert _stage(store, "r1", "teach").status == "failed"
    with stage_scope(store, run="r1", kind="teach", config={}):
        pass
    assert _stage(store, "r1", "teach").status == "succeeded"


def test_named_stages_of_one_kind_coexist(store):
    with stage_scope(store, run="r1", kind="teach", name="teach-a", config={}):
        pass
    with stage_scope(store, run="r1", kind="teach", name="teach-b", config={}):
        pass
    assert [s.name for s in store.stages_of("r1")] == ["teach-a", "teach-b"]
    assert store.find_stage("r1", "teach").name == "teach-b"
    assert store.find_stage("r1", "teach-a").name == "teach-a"


def test_a_stage_name_belongs_to_one_kind(store):
    """``--name X --overwrite`` replaces a stage of its own kind only (a clean stage named after a
    student never deletes the student), and a kind's own name is kept for that kind (``find_stage``
    looks a name up before a kind)."""
    with stage_scope(store, run="r1", kind="distill", name="student", config={"epochs": 3}):
        pass
    for overwrite in (False, True):
        with pytest.raises(KdError, match="stage 'student' of run 'r1' is a distill stage, not a clean stage: choose another --name"):
            with stage_scope(store, run="r1", kind="clean", name="student", config={}, overwrite=overwrite):
                pass
    with pytest.raises(KdError, match="the stage name 'teach' is kept for teach stages"):
        with stage_scope(store, run="r1", kind="clean", name="teach", config={}):
            pass
    [stage] = store.stages_of("r1")
    assert (stage.name, stage.kind, stage.status, stage.config) == ("student", "distill", "succeeded", {"epochs": 3})


def test_a_predict_name_is_kept_for_predict_stages(store, invoke, error_line, counts):
    """`kd predict --store` names its stages predict-STAGE[@SPLIT]: a clean or a student so named took
    that name (with an '@' no name a user gives may hold), and `kd predict --store` was then refused,
    told to choose a --name it does not have."""
    for name in ("predict-teach@dev", "predict-x"):
        line = error_line(invoke(["labels", "set", "--run", "r1", "--name", name, "1=neg"], ok=False))
        assert line == (f"Error: the stage name {name!r}: names starting with 'predict-' are kept for `kd predict --store` "
                        "stages (predict-STAGE): choose another --name")
    assert counts()["runs"] == 0 and counts()["label_edits"] == 0
    with pytest.raises(KdError, match="kept for `kd predict --store` stages"):
        with stage_scope(store, run="r1", kind="distill", name="predict-teach", config={}):
            pytest.fail("the body must not run")
    with stage_scope(store, run="r1", kind="predict", name="predict-teach@dev", config={}):
        pass
    assert [(s.name, s.kind) for s in store.stages_of("r1")] == [("predict-teach@dev", "predict")]


def test_an_export_name_is_kept_for_kd_exports_folders(store, invoke, error_line, counts):
    """`kd export --model teach` writes RUN/export-teach-onnx beside the stages' folders: a student so
    named had that folder, and the export was refused as inside a stage's folder (or the student as
    finding files no stage made)."""
    line = error_line(invoke(["labels", "set", "--run", "r1", "--name", "export-teach-onnx", "1=neg"], ok=False))
    assert line == ("Error: the stage name 'export-teach-onnx': names starting with 'export-' are kept for the folders "
                    "`kd export` writes beside the stages' (RUN/export-STAGE-FORMAT): choose another --name")
    assert counts()["runs"] == 0 and counts()["label_edits"] == 0
    with pytest.raises(KdError, match="kept for the folders `kd export` writes"):
        with stage_scope(store, run="r1", kind="distill", name="export-teach-onnx", config={}):
            pytest.fail("the body must not run")


@pytest.mark.on_postgresql
def test_runs_or_stages_differing_only_in_case_are_refused(store, invoke, error_line, counts):
    """On a case-insensitive file system (macOS, Windows) runs Demo and demo, or stages Votes and
    votes of one run, share one folder: the second stage wrote its model into the first's."""
    invoke(["labels", "set", "--run", "Demo", "--name", "Fix", "1=neg"])
    before = counts()
    line = error_line(invoke(["labels", "set", "--run", "demo", "2=neg"], ok=False))
    assert line == ("Error: run 'demo': the store has run 'Demo', the same name but for case, and both would use one model "
                    "folder on a case-insensitive file system (macOS, Windows): name it 'Demo' or another name")
    line = error_line(invoke(["labels", "set", "--run", "Demo", "--name", "fix", "2=neg"], ok=False))
    assert line.startswith("Error: stage 'fix': run 'Demo' has stage 'Fix', the same name but for case")
    assert counts() == before
    with pytest.raises(KdError, match="run 'DEMO': the store has run 'Demo'"):
        with stage_scope(store, run="DEMO", kind="distill", config={}):
            pytest.fail("the body must not run")
    with stage_scope(store, run="Demo", kind="clean", name="FIX", config={}, numbered=True) as st:
        assert st.name == "FIX-1"
    invoke(["labels", "set", "--run", "Demo", "--name", "EDIT-1", "2=neg"])
    assert invoke.json(["labels", "set", "--run", "Demo", "3=neg", "--json"])["stage"] == "edit-2"  # (not edit-1: EDIT-1's folder)
    assert not store.run_exists("demo") and not store.run_exists("DEMO")
    # a run looked up by a name that differs only in case is named with the one the store has
    line = error_line(invoke(["report", "--run", "demo"], ok=False))
    assert line.endswith("no run 'demo' in " + store.url + " (it has 'Demo': run names are case-sensitive): `kd runs` lists the runs"), line
    assert "case-sensitive" not in error_line(invoke(["report", "--run", "nope"], ok=False))


def test_case_twins_are_refused_on_a_turkish_postgresql_database(pg_server, runner, write_file):
    """The database's lower() compared the names: one of a Turkish locale lowers `I` to `ı`, and runs
    Issues and issues (stages FIX and fix) were both made, one folder on macOS and Windows."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    name = f"kd_tr_{os.getpid()}"
    try:
        with pg_server.admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE \"{name}\" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'tr-TR' LOCALE 'C.UTF-8'"))
    except DBAPIError as exc:  # (a server built without ICU)
        pytest.skip(f"no ICU tr-TR database here: {exc}")
    url = pg_server.url.set(database=name).render_as_string(hide_password=False)
    try:
        invoke = Invoke(runner, url)
        write_file("train.tsv", "pos\ta\nneg\tb\npos\tc\nneg\td\n")
        invoke(["ingest", "train.tsv"])
        invoke(["labels", "set", "--run", "Issues", "--name", "FIX", "1=neg"])
        assert "run 'issues': the store has run 'Issues'" in invoke(["labels", "set", "--run", "issues", "2=neg"], ok=False).output
        assert "stage 'fix': run 'Issues' has stage 'FIX'" in invoke(["labels", "set", "--run", "Issues", "--name", "fix", "2=neg"],
                                                                      ok=False).output
        assert table_counts(url)["stages"] == 1
    finally:
        pg_server.drop(url)


def test_kd_own_names_are_kept_in_any_case(store, invoke, error_line, counts):
    """A clean named `Teach` (or `Predict-teach`, `Export-teach-onnx`) shares its folder with the
    teacher's (kd predict's stage's, kd export's) on macOS and Windows: it was taken, and `kd teach`,
    which has no --name, was refused as differing from it only in case, told to name itself `Teach`."""
    for name, kept in (("Teach", "is kept for teach stages"), ("PRETRAIN", "is kept for pretrain stages"),
                       ("Predict-teach", "names starting with 'predict-' are kept"),
                       ("Export-teach-onnx", "names starting with 'export-' are kept")):
        line = error_line(invoke(["labels", "set", "--run", "r1", "--name", name, "1=neg"], ok=False))
        assert line.startswith(f"Error: the stage name {name!r}") and kept in line
    assert counts()["runs"] == 0 and counts()["label_edits"] == 0
    with stage_scope(store, run="r1", kind="teach", config={}):
        pass
    assert [s.name for s in store.stages_of("r1")] == ["teach"]


def test_unknown_stage_kind_is_refused(store):
    with pytest.raises(ValueError, match="unknown stage kind"):
        with stage_scope(store, run="r1", kind="bake", config={}):
            pass
    assert store.runs() == []


# logits and vectors --------------------------------------------------------------------------


@pytest.mark.on_postgresql
def test_write_read_logits_round_trip_is_exact(store):
    ids = store.samples().ids
    matrix = _logits(len(ids), k=5, seed=3)
    matrix[0, 0] = np.float32(1e-38)
    matrix[1, 1] = np.float32(-3.4e38)
    with stage_scope(store, run="r1", kind="teach", config={}) as st:
        # written out of id order, read back in id order
        order = np.array([2, 0, 3, 1])
        assert store.write_logits(st.id, ids[order], matrix[order]) == 4
    got_ids, got = store.read_logits(st.id)
    assert got_ids.tolist() == ids.tolist()
    assert got.dtype == np.float32 and got.shape == (4, 5)
    np.testing.assert_array_equal(got, matrix)
    assert got.tobytes() == matrix.tobytes()


def test_write_logits_length_mismatch(store):
    with stage_scope(store, run="r1", kind="teach", config={}) as st:
        with pytest.raises(ValueError, match="3 sample ids but 2 logit rows"):
            store.write_logits(st.id, [1, 2, 3], _logits(2))


def test_encode_decode_rows():
    m = np.arange(12, dtype=np.float64).reshape(3, 4) / 3
    blobs = vectors.encode_rows(m)
    assert len(blobs) == 3 and all(len(b) == 16 for b in blobs)
    assert blobs[1] == np.array(m[1], dtype="<f4").tobytes()
    back = vectors.decode_rows(blobs, 4)
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, m.astype(np.float32))
    # a non-contiguous (transposed) view is encoded by rows as seen
    t = np.arange(6, dtype=np.float32).reshape(2, 3).T
    np.testing.assert_array_equal(vectors.decode_rows(vectors.encode_rows(t), 2), t)
    assert vectors.encode(np.array([1.0, 2.0])) == np.array([1, 2], dtype="<f4").tobytes()


def test_decode_rows_edge_cases():
    assert vectors.decode_rows([], 3).shape == (0, 3)
    with pytest.raises(ValueError, match="2-D"):
        vectors.encode_rows(np.zeros(3))
    blobs = vectors.encode_rows(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="not all 4"):
        vectors.decode_rows(blobs, 4)
    with pytest.raises(ValueError):
        vectors.decode_rows([blobs[0], blobs[1][:-4]], 3)


def test_decode_rows_returns_a_writable_copy():
    back = vectors.decode_rows(vectors.encode_rows(np.ones((2, 2))), 2)
    back[0, 0] = 5.0  # np.frombuffer alone would give a read-only array
    assert back[0, 0] == 5.0


# kd runs / kd report -------------------------------------------------------------------------


def teach_id(store: Store) -> int:
    return store.find_stage("r1", "teach").id



@pytest.mark.on_postgresql
def test_runs_and_report_json(store, invoke):
    with stage_scope(store, run="r1", kind="teach", config={"lr": 0.01, "epochs": 2}) as st:
        store.add_metrics(st.id, "dev", {"loss": 0.9, "acc": 0.6}, step=1)
        store.add_metrics(st.id, "dev", {"loss": 0.5, "acc": 0.8}, step=2)
        store.add_metrics(st.id, "dev", {"acc": 0.8, "macro_f1": 0.75})
        store.add_metrics(st.id, "test", {"acc": 0.7})
    with pytest.raises(RuntimeError):
        with stage_scope(store, run="r1", kind="distill", config={}):
            raise RuntimeError("out of memory")
    with stage_scope(store, run="r2", kind="teach", config={}):
        pass

    runs = invoke.json(["runs"])
    assert [r["run"] for r in runs] == ["r1", "r2"]
    r1 = runs[0]["stages"]
    assert [(s["name"], s["kind"], s["status"]) for s in r1] == [
        ("teach", "teach", "succeeded"),
        ("distill", "distill", "failed"),
    ]
    assert "RuntimeError: out of memory" in r1[1]["error"]
    assert r1[0]["duration_s"] is not None and r1[0]["duration_s"] >= 0
    # stored times are UTC, and the JSON says so (a reader in another zone is not off by hours)
    started = dt.datetime.fromisoformat(r1[0]["started_at"])
    assert started.utcoffset() == dt.timedelta(0) and r1[0]["ended_at"].endswith("+00:00")
    assert abs(dt.datetime.now(dt.timezone.utc) - started) < dt.timedelta(hours=1)

    report = invoke.json(["report", "--run", "r1"])
    assert report["run"] == "r1"
    teach, distill = report["stages"]
    assert teach["config"] == {"lr": 0.01, "epochs": 2}
    assert teach["metrics"] == {"dev": {"acc": 0.8, "macro_f1": 0.75}, "test": {"acc": 0.7}}
    assert teach["history"] == [
        {"step": 1, "split": "dev", "name": "loss", "value": 0.9},
        {"step": 1, "split": "dev", "name": "acc", "value": 0.6},
        {"step": 2, "split": "dev", "name": "loss", "value": 0.5},
        {"step": 2, "split": "dev", "name": "acc", "value": 0.8},
    ]
    assert distill["status"] == "failed" and distill["metrics"] == {} and distill["history"] == []

    # the library agrees: final figures only by default
    assert sorted((m.split, m.name) for m in store.metrics(teach_id(store))) == [
        ("dev", "acc"), ("dev", "macro_f1"), ("test", "acc"),
    ]

    text = invoke(["report", "--run", "r1"]).stdout
    assert "teach" in text and "macro_f1" in text and "out of memory" in text
    assert "r1" in invoke(["runs"]).stdout


def test_report_json_gives_when_a_stage_read_its_labels_in_utc_as_every_other_time(store, invoke):
    """``labels_read_at`` (a teach, distill or detect stage's config) came out as stored, naive
    (``2024-03-07T09:15:02.123456``): a script took it for local time, hours off beside its started_at."""
    from kdstore import labels as lab

    _, state = lab.read_labeled(store, lambda: None)
    with stage_scope(store, run="r1", kind="detect", config={"methods": ["cleanlab"], **state}):
        pass
    stored = dt.datetime.fromisoformat(state["labels_read_at"])
    config = invoke.json(["report", "--run", "r1"])["stages"][0]["config"]
    read_at = dt.datetime.fromisoformat(config["labels_read_at"])
    assert read_at.utcoffset() == dt.timedelta(0) and read_at == stored.replace(tzinfo=dt.timezone.utc)  # to the microsecond
    assert {k: v for k, v in config.items() if k != "labels_read_at"} == {k: v for k, v in {"methods": ["cleanlab"], **state}.items()
                                                                          if k != "labels_read_at"}
    assert _stage(store, "r1", "detect").config["labels_read_at"] == state["labels_read_at"]  # the record itself unchanged


def test_report_json_stages_have_the_same_keys_whatever_their_kind(store, invoke):
    """A script iterating ``.stages`` reads every key on every stage: confusion, issue_scores and
    label_edits were there for some kinds only (a KeyError on the others), now null where they do not apply."""
    with stage_scope(store, run="r1", kind="teach", config={}) as st:
        store.add_metrics(st.id, "dev", {"accuracy": 0.5, "n": 2})
    with stage_scope(store, run="r1", kind="detect", config={}):
        pass
    with stage_scope(store, run="r1", kind="clean", config={}):
        pass
    with pytest.raises(RuntimeError):
        with stage_scope(store, run="r1", kind="distill", config={}):
            raise RuntimeError("out of memory")
    stages = {st["name"]: st for st in invoke.json(["report", "--run", "r1"])["stages"]}
    assert len({tuple(st) for st in stages.values()}) == 1, {n: sorted(st) for n, st in stages.items()}
    assert stages["teach"]["confusion"]["dev"] is not None and stages["distill"]["confusion"] is None
    assert stages["detect"]["issue_scores"] == [] and stages["teach"]["issue_scores"] is None
    assert all(st["label_edits"] is None for st in stages.values())  # (no stage edited a label)
    text = invoke(["report", "--run", "r1"]).stdout  # the text report reads the nulls too
    assert "dev confusion" in text and "out of memory" in text


def test_report_text_config_line_spells_nulls_and_flags_as_json_does(store, invoke):
    """The config line showed Python's reprs (``where=None``, ``kd_pretrained=False``, ``wwm=True``) where
    ``--json`` says null, false and true, and an empty string as nothing (``student_model=, hidden_mse=0.0``)."""
    config = {"where": None, "kd_pretrained": False, "wwm": True, "student_model": "", "lr": 0.002,
              "teacher_weights": [1.0, None], "splits": ["train"]}
    with stage_scope(store, run="r1", kind="teach", config=config):
        pass
    assert invoke.json(["report", "--run", "r1"])["stages"][0]["config"] == config
    line = next(ln for ln in invoke(["report", "--run", "r1"]).stdout.splitlines() if ln.startswith("  config: "))
    assert line == ('  config: where=null, kd_pretrained=false, wwm=true, student_model="", lr=0.002, '
                    "teacher_weights=1.0,null, splits=train")


def test_report_text_config_line_names_a_long_list_it_leaves_to_json(store, invoke):
    """A list of more than 8 values (a TinyBERT student's 9 --match, a teacher's --label of 9 classes) was left
    out of the config line without a word: a student rerun from the text report trained with no --match at all."""
    matches = [f"hidden_mse:{i}:{i}:1" for i in range(9)]
    with stage_scope(store, run="r1", kind="distill", config={"lr": 0.001, "matches": matches, "seed": 3}):
        pass
    line = next(ln for ln in invoke(["report", "--run", "r1"]).stdout.splitlines() if ln.startswith("  config: "))
    assert line == "  config: lr=0.001, matches=(9 values: kd report --json lists them), seed=3"


def test_report_text_names_the_teacher_stages_a_student_learned_from(store, invoke):
    """The --json has them in the config (``teacher_stages``); the text named none of them."""
    from commands.train import _teacher_stages

    for run in ("r1", "r2"):
        with stage_scope(store, run=run, kind="teach", config={}):
            pass
    with stage_scope(store, run="r1", kind="distill", name="distill-bigru",
                     config={"teacher_stages": _teacher_stages(store, ("r1", "r2"))}):
        pass
    replaced = store.find_stage("r2", "teach").id
    with stage_scope(store, run="r2", kind="teach", config={}, overwrite=True):  # kd teach --overwrite
        pass
    text = invoke(["report", "--run", "r1"]).stdout
    line = next(ln for ln in text.splitlines() if ln.startswith("  teachers: "))
    assert line.startswith("  teachers: r1/teach, r2/teach (stage %d of " % replaced) and line.endswith("replaced since)")
    # the --json names them as the text does (its config's teacher_stages alone could not tell the replaced one)
    stages = {st["name"]: st for st in json.loads(invoke(["report", "--run", "r1", "--json"]).stdout)["stages"]}
    sources = stages["distill-bigru"]["sources"]
    assert sources["teachers"][0] == "r1/teach" and "  teachers: " + ", ".join(sources["teachers"]) == line
    assert sources["teachers"][1].endswith("replaced since)") and sources["model"] is None
    assert stages["teach"]["sources"] == dict.fromkeys(("teachers", "model", "checkpoint", "detection", "student_votes", "labels_from"))


def test_report_says_deleted_not_replaced_for_a_teacher_or_model_kd_runs_delete_took(store, invoke):
    """`kd runs delete` of a teacher (or a predicted model) left reports saying "replaced since" ("these figures
    are of the model it replaced"): nothing replaced it, the run has none now."""
    from commands.train import _teacher_stages

    with stage_scope(store, run="r1", kind="teach", config={}):
        pass
    with stage_scope(store, run="r1", kind="distill", name="distill-bigru", config={"teacher_stages": _teacher_stages(store, ("r1",))}) as st:
        (st.artifact_dir / "model").mkdir(parents=True)
        (st.artifact_dir / "model" / "weights.bin").write_bytes(b"x")
        digest = st.record_artifact(st.artifact_dir / "model")
    with stage_scope(store, run="r1", kind="predict", name="predict-distill-bigru",
                     config={"model_stage": "distill-bigru", "model_sha256": digest}):
        pass
    teach = store.find_stage("r1", "teach").id
    invoke(["runs", "delete", "--run", "r1", "--stage", "teach", "--yes"])
    stages = {st["name"]: st for st in invoke.json(["report", "--run", "r1"])["stages"]}
    assert stages["distill-bigru"]["sources"]["teachers"][0] == f"r1/teach (stage {teach} of " + \
        stages["distill-bigru"]["config"]["teacher_stages"][0]["started_at"] + ", deleted since)"
    assert stages["predict-distill-bigru"]["sources"]["model"] is None  # (still the model it predicted with)
    invoke(["runs", "delete", "--run", "r1", "--stage", "distill-bigru", "--yes"])
    sources = invoke.json(["report", "--run", "r1"])["stages"][0]["sources"]
    assert sources["model"] == f"distill-bigru (deleted since: these figures are of a model no longer in the store, sha256 {digest[:12]})"
    assert "replaced" not in invoke(["report", "--run", "r1"]).stdout


def test_delete_of_a_stage_names_the_figures_kd_predict_store_measured_of_its_model(store, invoke):
    """`kd runs delete --stage teach` left its `predict-teach@test` (figures `kd predict --store` measured
    of that model) without a word, though `kd teach --overwrite` names it and kd report then calls its
    model "deleted since". A predict stage of another model, or of a model replaced since, is not named."""
    with stage_scope(store, run="r", kind="teach", config={}) as st:
        (st.artifact_dir / "model").mkdir(parents=True, exist_ok=True)
        (st.artifact_dir / "model" / "weights.bin").write_bytes(b"x")
        digest = st.record_artifact(st.artifact_dir / "model")
    for name, config in (("predict-teach@test", {"model_stage": "teach", "model_sha256": digest}),
                         ("predict-teach@dev", {"model_stage": "teach", "model_sha256": "0" * 64}),
                         ("predict-distill@test", {"model_stage": "distill", "model_sha256": digest})):
        with stage_scope(store, run="r", kind="predict", name=name, config=config):
            pass
    dry = invoke(["runs", "delete", "--run", "r", "--stage", "teach", "--dry-run"]).stderr
    said = [line for line in dry.splitlines() if "predict-" in line]
    assert said == ["warning: r/predict-teach@test measured the model of r/teach, which this would delete: its report "
                    "would call that model 'deleted since'"], dry
    assert "r/predict-teach@test measured the model of r/teach, deleted now" in invoke(["runs", "delete", "--run", "r", "--stage", "teach", "--yes"]).stderr


def test_report_names_a_teachers_starting_model_and_a_detections_votes_gone_since(store, invoke):
    """A teacher fine-tuned from `--model pretrain:r1` kept reporting "model=pretrain:r1" after that pre-training
    was replaced (`--overwrite`) or deleted, and a detection's `--student-votes` stages were named nowhere in
    the text: both are in ``sources`` (and the text) once gone."""
    from kdstore.schema import iso_utc

    def pretrain(content: bytes, **kw) -> str:
        with stage_scope(store, run="r1", kind="pretrain", config={}, **kw) as st:
            (st.artifact_dir / "model").mkdir(parents=True, exist_ok=True)
            (st.artifact_dir / "model" / "weights.bin").write_bytes(content)
            return st.record_artifact(st.artifact_dir / "model")

    digest = pretrain(b"x")
    with stage_scope(store, run="r2", kind="teach", config={"model": "pretrain:r1", "model_sha256": digest}):
        pass
    with stage_scope(store, run="r2", kind="distill", name="distill-bigru", config={}):
        pass
    votes = store.find_stage("r2", "distill-bigru")
    with stage_scope(store, run="r2", kind="detect", config={"student_vote_stages": [
            {"run": "r2", "stage": "distill-bigru", "stage_id": votes.id, "started_at": iso_utc(votes.started_at)}]}):
        pass

    def sources() -> dict:
        return {st["name"]: st["sources"] for st in invoke.json(["report", "--run", "r2"])["stages"]}

    now = sources()
    assert now["teach"]["checkpoint"] is None and now["detect"]["student_votes"] == ["r2/distill-bigru"]
    assert "  student votes: r2/distill-bigru" in invoke(["report", "--run", "r2"]).stdout
    # kd runs delete says so first (it named only the students of a deleted teacher)
    dry = invoke(["runs", "delete", "--run", "r1", "--dry-run"]).stderr
    assert "warning: r2/teach started from the model of r1/pretrain, which this would delete: its report would call that model 'deleted since'" in dry
    pretrain(b"y", overwrite=True)  # kd pretrain --overwrite: another model under the same name
    assert sources()["teach"]["checkpoint"] == f"pretrain:r1 (replaced since: it started from the model that one replaced, sha256 {digest[:12]})"
    assert "r2/teach" not in invoke(["runs", "delete", "--run", "r1", "--yes"]).stderr  # (not the model it started from)
    votes_gone = invoke(["runs", "delete", "--run", "r2", "--stage", "distill-bigru", "--yes"]).stderr
    assert "warning: r2/detect took votes from r2/distill-bigru, deleted now: its report will call those votes 'deleted since'" in votes_gone
    gone = sources()
    assert gone["teach"]["checkpoint"] == f"pretrain:r1 (deleted since: it started from a model no longer in the store, sha256 {digest[:12]})"
    assert gone["detect"]["student_votes"] == [f"r2/distill-bigru (stage {votes.id} of {iso_utc(votes.started_at)}, deleted since)"]
    text = invoke(["report", "--run", "r2"]).stdout
    assert "  started from: pretrain:r1 (deleted since" in text and "  student votes: r2/distill-bigru (stage" in text


def test_a_failed_stages_error_shows_on_one_line(store, invoke):
    with pytest.raises(RuntimeError):
        with stage_scope(store, run="r1", kind="distill", config={}):
            raise RuntimeError("CUDA out of memory.\nTried to allocate 2.00 GiB\n  (GPU 0; 10 GiB total capacity)")
    text = invoke(["report", "--run", "r1"]).stdout
    assert "  error: RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 10 GiB total capacity) at " in text
    rows = [ln for ln in invoke(["runs"]).stdout.splitlines() if "│" in ln]
    assert len(rows) == 1 and "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0;" in rows[0] and "..." in rows[0]


def test_compare_notes_a_teacher_that_trained_on_dev(store, invoke):
    """`kd teach --split train --split dev` learns from the dev rows: --compare put its dev accuracy
    (of rows it trained on) beside a student's held-out one without a word."""
    with stage_scope(store, run="r1", kind="teach", config={"splits": ["train", "dev"]}) as st:
        store.add_metrics(st.id, "dev", {"accuracy": 1.0, "n": 2})
        store.add_metrics(st.id, "test", {"accuracy": 0.7, "n": 2})
    with stage_scope(store, run="r1", kind="distill", name="distill-textcnn", config={}) as st:
        store.add_metrics(st.id, "dev", {"accuracy": 0.8, "n": 2})
    with stage_scope(store, run="r2", kind="teach", config={"splits": ["train"]}) as st:
        store.add_metrics(st.id, "dev", {"accuracy": 0.9, "macro_f1": 0.6, "n": 2})
    rows = {(r["run"], r["stage"]): r for r in invoke.json(["report", "--compare", "r1", "r2"])}
    assert rows[("r2", "teach")]["dev_macro_f1"] == 0.6  # (what picks the epochs, and an imbalanced task's figure)
    assert rows[("r1", "teach")]["dev_accuracy"] == 1.0 and "trained on dev" in rows[("r1", "teach")]["note"]
    assert rows[("r1", "distill-textcnn")]["note"] is None and rows[("r2", "teach")]["note"] is None
    assert "trained on dev" in invoke(["report", "--compare", "r1", "r2"]).stdout


def test_compare_notes_an_early_exit_on_a_teacher_that_trained_on_dev(store, invoke):
    """`kd distill --student early-exit` reads dev through the teacher's own layers and head (speed 0 is
    the teacher): on a teacher of `--split train --split dev` its dev figures are of rows the model learned
    from too, and --compare gave them beside the teacher's, noted, without a word; a --folds teacher's
    first fold model, which it lends, learned most dev rows as well."""
    from commands.train import _teacher_stages

    for run, splits, folds in (("r1", ["train", "dev"], 0), ("r2", ["train"], 0), ("r3", ["train", "dev"], 2)):
        with stage_scope(store, run=run, kind="teach", config={"splits": splits, "folds": folds}) as st:
            store.add_metrics(st.id, "dev", {"accuracy": 1.0, "n": 2})
            store.add_metrics(st.id, "all", {"dev_samples": 0})
        with stage_scope(store, run=run, kind="distill", name="distill-early-exit",
                         config={"student": "early-exit", "teacher_stages": _teacher_stages(store, (run,))}) as st:
            store.add_metrics(st.id, "dev", {"accuracy": 1.0, "n": 2})
    rows = {(r["run"], r["stage"]): r for r in invoke.json(["report", "--compare", "r1", "r2", "r3"])}
    assert "trained on dev" in rows[("r1", "distill-early-exit")]["note"]
    assert "trained on dev" in rows[("r3", "distill-early-exit")]["note"]
    assert rows[("r2", "distill-early-exit")]["note"] is None


def test_compare_notes_a_student_whose_teacher_was_replaced_or_deleted_since(store, invoke):
    """`kd teach --overwrite` (or `kd runs delete --stage teach`) after a distill: `kd report --run` says the
    student's teacher was "replaced since", but --compare set the student beside the new teacher, one it never
    learned from, without a word (a student "beating" its teacher was another teacher's)."""
    from commands.train import _teacher_stages

    for run in ("r1", "r2"):
        with stage_scope(store, run=run, kind="teach", config={}) as st:
            store.add_metrics(st.id, "test", {"accuracy": 0.7, "n": 2})
        with stage_scope(store, run=run, kind="distill", name="distill-textcnn",
                         config={"teacher_stages": _teacher_stages(store, (run,))}) as st:
            store.add_metrics(st.id, "test", {"accuracy": 0.8, "n": 2})
    old = store.find_stage("r1", "teach").id
    with stage_scope(store, run="r1", kind="teach", config={}, overwrite=True) as st:  # kd teach --overwrite
        store.add_metrics(st.id, "test", {"accuracy": 0.9, "n": 2})
    listed = invoke.json(["report", "--compare", "r1", "r2"])
    # the new teacher heads its run's rows, as the first did (it came after its students)
    assert [(r["run"], r["stage"]) for r in listed] == [("r1", "teach"), ("r1", "distill-textcnn"), ("r2", "teach"), ("r2", "distill-textcnn")]
    rows = {(r["run"], r["stage"]): r for r in listed}
    note = rows[("r1", "distill-textcnn")]["note"]
    assert note.startswith(f"learned from r1/teach (stage {old} of ") and note.endswith(", replaced since)"), note
    assert rows[("r1", "teach")]["note"] is None and rows[("r2", "distill-textcnn")]["note"] is None
    assert "replaced since" in invoke(["report", "--compare", "r1", "r2"]).stdout
    invoke(["runs", "delete", "--run", "r2", "--stage", "teach", "--yes"])
    note = {r["stage"]: r["note"] for r in invoke.json(["report", "--compare", "r2"])}["distill-textcnn"]
    assert note.startswith("learned from r2/teach (stage ") and note.endswith(", deleted since)"), note


def test_a_replaced_teacher_is_not_called_deleted_while_its_replacement_is_replaced_again(store, invoke):
    """A student's teacher replaced by `kd teach --overwrite`, then another --overwrite running (or killed with
    -9): the run's teacher waits as teach~parked-ID, yet the student's report called its teacher "deleted since"
    (the run has none), as if `kd runs delete` had taken it."""
    from commands.train import _teacher_stages

    with stage_scope(store, run="r1", kind="teach", config={}):
        pass
    with stage_scope(store, run="r1", kind="distill", name="distill-textcnn", config={"teacher_stages": _teacher_stages(store, ("r1",))}):
        pass
    with stage_scope(store, run="r1", kind="teach", config={}, overwrite=True):
        pass
    with stage_scope(store, run="r1", kind="teach", config={}, overwrite=True):  # running: the last one parked
        student = next(st for st in invoke.json(["report", "--run", "r1"])["stages"] if st["name"] == "distill-textcnn")
        assert student["sources"]["teachers"][0].endswith(", replaced since)"), student["sources"]
        note = {r["stage"]: r["note"] for r in invoke.json(["report", "--compare", "r1"])}["distill-textcnn"]
        assert note.endswith(", replaced since)"), note


def test_compare_notes_a_student_whose_teacher_learned_from_other_labels(store, invoke):
    """The wrong-label loop: teach r1 on the noisy labels, clean, distill r1 (its teacher not retrained),
    teach and distill r2. --compare gave r1's student the cleaned labels' digest, r2's own, without a word:
    its soft targets follow the labels before the clean (kd distill warned so as it ran), so r1 and r2
    read as one label set, and the gap between their students went unexplained."""
    from commands.train import _teacher_stages

    for run, teacher_digest in (("r1", "e3b0c44298fc1c14"), ("r2", "807c49de2c232a8e")):
        with stage_scope(store, run=run, kind="teach", config={"labels_digest": teacher_digest}) as st:
            store.add_metrics(st.id, "test", {"accuracy": 0.7, "n": 2})
        with stage_scope(store, run=run, kind="distill", name="distill-textcnn",
                         config={"labels_digest": "807c49de2c232a8e", "teacher_stages": _teacher_stages(store, (run,))}) as st:
            store.add_metrics(st.id, "test", {"accuracy": 0.8, "n": 2})
    rows = {(r["run"], r["stage"]): r for r in invoke.json(["report", "--compare", "r1", "r2"])}
    assert rows[("r1", "distill-textcnn")]["note"] == "its teacher r1/teach learned from other labels (labels_digest e3b0c44298fc1c14)"
    assert rows[("r2", "distill-textcnn")]["note"] is None and rows[("r1", "teach")]["note"] is None
    assert "learned from other labels" in invoke(["report", "--compare", "r1", "r2"]).stdout


def test_compare_gives_the_digest_of_the_labels_a_model_learned_from_beside_that_of_every_label(store, invoke):
    """A test label fixed between two teachers (`kd labels set` on a test sample): --compare gave only
    ``labels_digest``, of every label, so two models that learned from the same train and dev labels read as
    trained on other labels. ``labels_fit_digest`` (train and dev alone) is beside it."""
    for run, digest, fit in (("r1", "1111111111111111", "aaaaaaaaaaaaaaaa"), ("r2", "2222222222222222", "aaaaaaaaaaaaaaaa")):
        with stage_scope(store, run=run, kind="teach", config={"labels_digest": digest, "labels_fit_digest": fit}) as st:
            store.add_metrics(st.id, "test", {"accuracy": 0.7, "n": 2})
    rows = invoke.json(["report", "--compare", "r1", "r2"])
    assert [(r["labels_digest"], r["labels_fit_digest"]) for r in rows] == [
        ("1111111111111111", "aaaaaaaaaaaaaaaa"), ("2222222222222222", "aaaaaaaaaaaaaaaa")]


def test_compare_notes_a_student_larger_than_its_teacher(store, invoke):
    """A TextCNN of 128-wide embeddings over a tiny teacher's vocabulary: 0.70 M parameters against the teacher's
    0.42 M, and more FLOPs a text, sat beside it in --compare without a word, though a student is meant to be
    smaller and faster than the model it replaces."""
    from commands.train import _teacher_stages

    with stage_scope(store, run="r1", kind="teach", config={}) as st:
        store.add_metrics(st.id, "all", {"parameters": 420_000, "flops_per_sample": 2_000_000})
    for name, params, flops in (("distill-textcnn", 700_000, 11_000_000), ("distill-bigru", 300_000, 3_000_000),
                                ("distill-transformer", 100_000, 1_000_000)):
        with stage_scope(store, run="r1", kind="distill", name=name,
                         config={"student": name[8:], "teacher_stages": _teacher_stages(store, ("r1",))}) as st:
            store.add_metrics(st.id, "all", {"parameters": params, "flops_per_sample": flops})
    notes = {r["stage"]: r["note"] for r in invoke.json(["report", "--compare", "r1"])}
    assert notes == {
        "teach": None, "distill-transformer": None,
        "distill-textcnn": "larger than its teacher r1/teach: 700,000 parameters against 420,000, "
                           "11,000,000 FLOPs a text against 2,000,000",
        "distill-bigru": "larger than its teacher r1/teach: 3,000,000 FLOPs a text against 2,000,000",
    }, notes
    assert "larger than its teacher" in invoke(["report", "--compare", "r1"]).stdout
    said = [l.strip() for l in invoke(["report", "--run", "r1"]).stdout.splitlines() if l.strip().startswith("size:")]
    assert said == ["size: " + notes["distill-textcnn"], "size: " + notes["distill-bigru"]]  # (one run's report too)
    # and its --json, for a script (it had none of the notes the text prints beside the figures)
    stages = {st["name"]: st["notes"] for st in invoke.json(["report", "--run", "r1"])["stages"]}
    assert {name: n["size"] for name, n in stages.items()} == notes, stages
    assert all(n["classes"] is None and n["labels_changed"] is False for n in stages.values()), stages


def test_compare_reads_the_store_labels_once_a_report_not_once_a_run(store, monkeypatch):
    """`kd report --compare` read each run's report, notes and all: every succeeded teacher's labels_changed
    note read the store's labels (``labels_state``, every changed sample), once a run compared, for a note
    --compare never shows; `kd report --run` reads them once."""
    import kdstore.report
    from kdstore.report import compare, run_report

    for run in ("r1", "r2", "r3"):
        with stage_scope(store, run=run, kind="teach", config={"labels_digest": "0" * 16}) as st:
            store.add_metrics(st.id, "all", {"parameters": 1000})
    real, reads = kdstore.report.labels_state, []
    monkeypatch.setattr(kdstore.report, "labels_state", lambda s: reads.append(1) or real(s))
    assert [r["run"] for r in compare(store, ["r1", "r2", "r3"])] == ["r1", "r2", "r3"]
    assert reads == [], len(reads)
    assert run_report(store, "r1")["stages"][0]["notes"]["labels_changed"] is True and reads == [1]


def test_compare_lists_the_parked_model_an_overwrite_is_replacing(store, invoke):
    """`kd distill --overwrite` running (or killed with -9): the old student waits as NAME~parked-ID and is
    the model kd predict and kd export serve, but --compare left it out as history and showed only its
    replacement, running or dead, with no figures: the run's usable model was nowhere in the table."""
    with stage_scope(store, run="r1", kind="teach", config={}) as st:
        store.add_metrics(st.id, "test", {"accuracy": 0.7, "n": 2})
    with stage_scope(store, run="r1", kind="distill", name="distill-textcnn", config={"student": "textcnn"}) as st:
        store.add_metrics(st.id, "test", {"accuracy": 0.8, "n": 2})
    old = st.id
    with stage_scope(store, run="r1", kind="distill", name="distill-textcnn", config={"student": "textcnn"}, overwrite=True) as st:
        rows = {r["stage"]: r for r in invoke.json(["report", "--compare", "r1"])}
        parked = rows.get(f"distill-textcnn~parked-{old}")
        assert parked is not None, list(rows)
        assert parked["status"] == "succeeded" and parked["test_accuracy"] == 0.8 and parked["model"] == "textcnn"
        assert f"until then, `--model distill-textcnn~parked-{old}` (kd predict, kd export) serves it" in parked["note"]
        assert rows["distill-textcnn"]["status"] == "running" and rows["distill-textcnn"]["test_accuracy"] is None
        assert f"distill-textcnn~parked-{old}" in invoke(["report", "--compare", "r1"]).stdout
        # kd report --run says it too ("succeeded" alone read as history)
        assert (f"  parked: the one an --overwrite is replacing: it gets its name back if the replacement fails; until then, "
                f"`--model distill-textcnn~parked-{old}` (kd predict, kd export) serves it") in invoke(["report", "--run", "r1"]).stdout
        store.add_metrics(st.id, "test", {"accuracy": 0.9, "n": 2})
    # replaced: the old one is history again, out of the table
    assert [(r["stage"], r["test_accuracy"]) for r in invoke.json(["report", "--compare", "r1"])] == [("teach", 0.7), ("distill-textcnn", 0.9)]
    assert "parked:" not in invoke(["report", "--run", "r1"]).stdout


def test_the_speed_line_says_how_few_texts_the_latency_and_throughput_were_timed_on(tmp_path, store, invoke):
    """A store of 20 test texts: the latency p99 of 20 is about their slowest, and the throughput of 20 texts repeated
    to 1,000; `kd report` said neither (the README's 100 and 1,000 texts read as what was measured)."""
    from kdstore.speed import measure

    figures = measure(lambda texts, batch_size: np.zeros((len(texts), 2)), [f"text {i}" for i in range(20)] + [" "])
    assert (figures["latency_texts"], figures["throughput_texts"]) == (20, 20)
    with stage_scope(store, run="r1", kind="teach", config={}) as st:
        store.add_metrics(st.id, "all", figures)
    with stage_scope(store, run="r2", kind="teach", config={}) as st:  # (as many as it takes: nothing to say)
        store.add_metrics(st.id, "all", measure(lambda texts, batch_size: np.zeros((len(texts), 2)), [f"t{i}" for i in range(1200)]))
    out = " ".join(invoke(["report", "--run", "r1"]).stdout.split())
    assert ("latency one text at a time on 20 texts (p99 of so few: about their slowest), throughput in batches of 256 over 20 "
            "distinct texts repeated to 1,000 (bench/ times with repeats)") in out, out
    out = " ".join(invoke(["report", "--run", "r2"]).stdout.split())
    assert "latency one text at a time, throughput in batches of 256 (bench/" in out, out
    assert invoke.json(["report", "--run", "r1"])["stages"][0]["metrics"]["all"]["latency_texts"] == 20  # (a count: an int)


def test_a_failed_stage_keeps_no_count_of_the_texts_its_cleared_speed_was_timed_on(store, invoke):
    """A stage that failed after its model was timed (a Ctrl-C, or out of memory at the logits) has its latency and
    throughput cleared with its model; the counts of texts they were timed on stayed, and its report listed
    latency_texts, throughput_texts and throughput_of of a speed it no longer has."""
    from kdstore.speed import measure

    with pytest.raises(RuntimeError, match="out of memory"):
        with stage_scope(store, run="r1", kind="teach", config={}) as st:
            store.add_metrics(st.id, "all", measure(lambda texts, batch_size: np.zeros((len(texts), 2)), [f"t{i}" for i in range(20)]))
            raise RuntimeError("out of memory")
    timed = invoke.json(["report", "--run", "r1"])["stages"][0]["metrics"].get("all") or {}
    assert "latency_p50_ms" not in timed
    assert not {"latency_texts", "throughput_texts", "throughput_of"} & set(timed), timed


def test_report_run_says_parked_after_a_teacher_whose_speed_it_shows(store, invoke):
    """Every trained teacher has its speed measured: the report's speed line reused the name that held the parked
    stages, so after it (the teacher comes first) no parked student got its `parked:` line."""
    with stage_scope(store, run="r1", kind="teach", config={}) as st:
        store.add_metrics(st.id, "all", {"latency_p50_ms": 3.0, "speed_threads": 1})
    with stage_scope(store, run="r1", kind="distill", name="distill-textcnn", config={"student": "textcnn"}) as st:
        store.add_metrics(st.id, "all", {"latency_p50_ms": 1.0, "speed_threads": 1})
    old = st.id
    with stage_scope(store, run="r1", kind="distill", name="distill-textcnn", config={"student": "textcnn"}, overwrite=True):
        out = invoke(["report", "--run", "r1"]).stdout
        assert "  speed: on the CPU, 1 torch thread" in out
        assert f"  parked: the one an --overwrite is replacing: it gets its name back if the replacement fails; until then, " \
               f"`--model distill-textcnn~parked-{old}` (kd predict, kd export) serves it" in out, out


def test_report_of_missing_run(store, invoke, error_line):
    result = invoke(["report", "--run", "nope"], ok=False)
    assert "no run 'nope'" in error_line(result)


def test_a_stage_name_shortened_or_mistyped_is_refused_with_the_one_meant(store, invoke, error_line):
    """`kd export --model early-exit` of a stage named distill-early-exit said "no succeeded 'early-exit' stage"
    and listed the stages, leaving the user to spot the one meant."""
    with stage_scope(store, run="r", kind="distill", name="distill-early-exit", config={}):
        pass
    with stage_scope(store, run="r", kind="detect", name="detect", config={}):  # (no model: neither listed nor guessed)
        pass
    line = error_line(invoke(["predict", "--run", "r", "--model", "early-exit"], ok=False, input="好\n"))
    assert line.endswith("has no succeeded 'early-exit' stage (models: distill-early-exit (succeeded)): did you mean 'distill-early-exit'?"), line
    line = error_line(invoke(["predict", "--run", "r", "--model", "bigru"], ok=False, input="好\n"))  # (nothing near: no guess)
    assert line.endswith("has no succeeded 'bigru' stage (models: distill-early-exit (succeeded))"), line
    line = error_line(invoke(["export", "--run", "r", "--model", "detec"], ok=False))  # (near the detection's name, no model)
    assert line.endswith("has no succeeded 'detec' stage (models: distill-early-exit (succeeded))"), line


def test_a_student_kind_given_as_model_is_refused_with_its_default_stage(store, invoke, error_line):
    """`kd predict --model textcnn` in a run holding distill-textcnn and a rerun of it named rerun-textcnn
    guessed 'rerun-textcnn' (closer by difflib's ratio), not the stage kd distill names after the kind."""
    for name in ("distill-textcnn", "rerun-textcnn"):
        with stage_scope(store, run="r", kind="distill", name=name, config={"student": "textcnn"}):
            pass
    line = error_line(invoke(["predict", "--run", "r", "--model", "textcnn"], ok=False, input="好\n"))
    assert line.endswith("did you mean 'distill-textcnn'?"), line


def test_report_default_run(store, invoke):
    with stage_scope(store, run="default", kind="teach", config={}):
        pass
    assert invoke.json(["report"])["run"] == "default"


@pytest.mark.on_postgresql
def test_report_figures_agree_with_the_stored_predictions(db, invoke, write_file):
    """Accuracy, macro-F1, support and the confusion matrix `kd report` prints, recomputed by hand
    from the predictions in the store, over the labels as the stage read them: three classes, one
    absent from test (left out of its macro average), a dev sample dropped and one relabelled before
    the stage (the drop left out, the new label counted), an edit after it (changing neither)."""
    from kdstore.outputs import store_outputs
    from kdstore.schema import Prediction
    from synthetic import edit_labels

    write_file("train.tsv", "体育\ta\n财经\tb\n科技\tc\n")
    write_file("dev.tsv", "体育\td1\n体育\td2\n财经\td3\n财经\td4\n科技\td5\n科技\td6\n体育\td7\n")
    write_file("test.tsv", "体育\tt1\n体育\tt2\n财经\tt3\n财经\tt4\n财经\tt5\n")  # no 科技 in test
    for name, split in (("train.tsv", "train"), ("dev.tsv", "dev"), ("test.tsv", "test")):
        invoke(["ingest", name, "--split", split])
    store = Store.open(db, create=False)
    try:
        names = store.class_names()
        edit_labels(db, "other", "before", {4: "drop", 10: "科技"})  # d1 dropped, d7 体育 -> 科技
        with stage_scope(store, run="r1", kind="distill", name="student", config={}) as st:
            samples = store.samples(include_dropped=True)
            rng = np.random.default_rng(3)
            logits = rng.normal(size=(len(samples), len(names))).astype(np.float32)
            store_outputs(store, st.id, samples, logits, names)
        edit_labels(db, "other", "after", {5: "财经", 13: "drop"})  # made after the stage: changes nothing
        with store.engine.connect() as conn:
            predicted = dict(conn.execute(select(Prediction.sample_id, Prediction.label_id).where(Prediction.stage_id == st.id)).all())
            split_of = dict(conn.execute(select(Sample.id, Sample.split)).all())
    finally:
        store.close()
    label = {sid: names.index(y) for sid, y in zip(range(1, 16), "体育 财经 科技 体育 体育 财经 财经 科技 科技 体育 体育 体育 财经 财经 财经".split())}
    label[10] = names.index("科技")  # the edits made before the stage; d1 (4) dropped
    report = invoke.json(["report", "--run", "r1"])
    stage = next(s for s in report["stages"] if s["name"] == "student")
    rows = invoke.json(["report", "--compare", "r1"])
    text = invoke(["report", "--run", "r1"]).stdout
    for split in ("dev", "test"):
        ids = [i for i in sorted(label) if split_of[i] == split and i != 4]
        y, p = np.array([label[i] for i in ids]), np.array([predicted[i] for i in ids])
        cm = np.zeros((3, 3), dtype=int)
        np.add.at(cm, (y, p), 1)
        f1 = []
        for c in range(3):
            tp, fp, fn = cm[c, c], cm[:, c].sum() - cm[c, c], cm[c, :].sum() - cm[c, c]
            if tp + fp + fn:  # a class with no label and no prediction is left out of the macro average
                f1.append(2 * tp / (2 * tp + fp + fn))
        m = stage["metrics"][split]
        assert m["n"] == len(ids) and m["accuracy"] == pytest.approx((y == p).mean())
        assert m["macro_f1"] == pytest.approx(np.mean(f1))
        assert [m[f"support[{c}]"] for c in names] == cm.sum(axis=1).tolist()
        assert stage["confusion"][split] == cm.tolist()
        assert f"{m['accuracy']:.4f}" in next(ln for ln in text.splitlines() if ln.startswith("│ accuracy "))
    assert rows[0]["stage"] == "student" and rows[0]["test_accuracy"] == stage["metrics"]["test"]["accuracy"]
    assert rows[0]["test_macro_f1"] == stage["metrics"]["test"]["macro_f1"] and rows[0]["test_n"] == 5


def test_runs_on_empty_store(store, invoke):
    assert invoke.json(["runs"]) == []
    assert invoke(["runs"]).stdout.startswith("no runs in the store yet")  # (was an empty table)


@pytest.mark.sqlite_only
def test_two_stores_in_one_folder_keep_their_stage_files_apart(tmp_path, monkeypatch):
    """Runs and stages of the same names in two SQLite stores side by side: each store's files go
    under its own name (before, the second store's teacher replaced the first one's)."""
    monkeypatch.delenv("KD_ARTIFACTS", raising=False)
    folders = []
    for name in ("noisy.db", "clean.db"):
        store = Store.open(str(tmp_path / name))
        with stage_scope(store, run="r1", kind="teach", config={}) as stage:
            (stage.artifact_dir / "model.txt").write_text(name, encoding="utf-8")
            folders.append(stage.artifact_dir)
        store.close()
    assert folders == [tmp_path / "kd-artifacts" / "noisy.db" / "r1" / "teach", tmp_path / "kd-artifacts" / "clean.db" / "r1" / "teach"]
    assert [(f / "model.txt").read_text(encoding="utf-8") for f in folders] == ["noisy.db", "clean.db"]


def _store_with_models(db, kinds: tuple[str, ...]) -> None:
    """A SQLite store at ``db`` whose run r1 has one succeeded stage of each kind, each with an
    (empty) model folder recorded under the store's kd-artifacts."""
    store = Store.open(str(db))
    for kind in kinds:
        with stage_scope(store, run="r1", kind=kind, config={}) as stage:
            (stage.artifact_dir / "model").mkdir()
            stage.record_artifact(stage.artifact_dir / "model")
    store.close()


@pytest.mark.sqlite_only
def test_a_store_moved_with_its_model_folder_finds_its_models(tmp_path):
    """Stage paths are recorded absolute: a store moved with its kd-artifacts folder (into a folder
    with spaces and Chinese characters) found no model, and `kd predict` said only that it was missing."""
    from kdstore.predictor import Predictor

    old, new = tmp_path / "数据 集", tmp_path / "新 家"
    old.mkdir()
    _store_with_models(old / "k d.db", ("teach", "distill"))
    old.rename(new)
    store = Store.open(str(new / "k d.db"), create=False)
    try:
        assert store.find_stage("r1", "teach").artifact_path == str((new / "kd-artifacts" / "k d.db" / "r1" / "teach" / "model").resolve())
        assert [s.artifact_path for _, stages in store.runs() for s in stages] == [s.artifact_path for s in store.stages_of("r1")]
        (new / "kd-artifacts").rename(new / "elsewhere")  # moved without its models: the error says where they go
        with pytest.raises(KdError, match=r"missing from .*数据 集.*finds its models in .*新 家/kd-artifacts/k d.db/r1/distill"):
            Predictor.from_run(store, "r1", "distill", device="cpu")
    finally:
        store.close()


@pytest.mark.sqlite_only
def test_report_of_a_store_moved_without_its_models_says_where_they_go(tmp_path, invoke, monkeypatch):
    """`kd report` on a store moved without its kd-artifacts folder said only "model folder not found
    here: OLD: deleted or moved by hand", where `kd predict` said where kd looks for it: move it there."""
    monkeypatch.delenv("KD_ARTIFACTS", raising=False)
    old, new = tmp_path / "数据 集", tmp_path / "新 家"
    old.mkdir()
    _store_with_models(old / "k d.db", ("teach",))
    new.mkdir()
    (old / "k d.db").rename(new / "k d.db")  # the store alone: its models stay behind, then go
    shutil.rmtree(old / "kd-artifacts")
    out = invoke(["report", "--run", "r1"], db=new / "k d.db").stdout
    assert "model folder not found here" in out
    assert f"finds its models in {new / 'kd-artifacts' / 'k d.db' / 'r1' / 'teach'} (kd-artifacts/STORE" in out, out
    assert out.count("move them there") == 1


@pytest.mark.sqlite_only
def test_a_model_recorded_as_its_stage_folder_and_deleted_is_not_told_to_move_there(tmp_path):
    """A `--folds` teacher or fold students record the RUN/STAGE folder itself: deleted by hand, the
    error said "missing from F: a store moved or renamed finds its models in F: move them there", F twice."""
    from kdstore.predictor import Predictor

    store = Store.open(str(tmp_path / "kd.db"))
    try:
        with stage_scope(store, run="r1", kind="distill", config={}) as stage:
            stage.record_artifact(stage.artifact_dir)
        folder = pathlib.Path(store.find_stage("r1", "distill").artifact_path)
        shutil.rmtree(folder)
        with pytest.raises(KdError, match="missing from") as exc:
            Predictor.from_run(store, "r1", "distill", device="cpu")
        assert "move them there" not in str(exc.value), str(exc.value)
    finally:
        store.close()


@pytest.mark.sqlite_only
def test_a_copied_project_folder_reads_its_own_models_not_the_originals(tmp_path, monkeypatch):
    """A project folder (store and kd-artifacts) copied while the original stays: the copy's stages
    pointed at the original's models (recorded absolute, still there), so after the original
    retrained a stage the copy served the new model under its own stage's logits and metrics."""
    import shutil

    monkeypatch.delenv("KD_ARTIFACTS", raising=False)
    old, new = tmp_path / "实验 1", tmp_path / "实验 2"
    old.mkdir()
    store = Store.open(str(old / "k.db"))
    with stage_scope(store, run="r1", kind="teach", config={}) as stage:
        (stage.artifact_dir / "model").mkdir()
        (stage.artifact_dir / "model" / "w.txt").write_text("v1", encoding="utf-8")
        stage.record_artifact(stage.artifact_dir / "model")
    store.close()
    shutil.copytree(old, new)
    (old / "kd-artifacts" / "k.db" / "r1" / "teach" / "model" / "w.txt").write_text("v2", encoding="utf-8")  # retrained there
    store = Store.open(str(new / "k.db"), create=False)
    try:
        path = store.find_stage("r1", "teach").artifact_path
        assert path == str((new / "kd-artifacts" / "k.db" / "r1" / "teach" / "model").resolve())
        assert (tmp_path / path / "w.txt").read_text(encoding="utf-8") == "v1"
        assert [s.artifact_path for _, stages in store.runs() for s in stages] == [path]
    finally:
        store.close()


def _teach_version(store, version: str, *, overwrite: bool = True, fail: bool = False) -> None:
    """Run r1's teach stage recording a model folder whose w.txt reads ``version`` (an ``--overwrite`` by
    default); with ``fail``, the stage fails once the model is written (a replacement that fails)."""
    try:
        with stage_scope(store, run="r1", kind="teach", config={}, overwrite=overwrite) as stage:
            (stage.artifact_dir / "model").mkdir()
            (stage.artifact_dir / "model" / "w.txt").write_text(version, encoding="utf-8")
            stage.record_artifact(stage.artifact_dir / "model")
            if fail:
                raise RuntimeError("boom")
    except RuntimeError:
        assert fail


@pytest.mark.sqlite_only
def test_a_project_folder_moved_or_copied_finds_its_own_models_whatever_kd_artifacts_names(tmp_path, monkeypatch):
    """A project folder (store and kd-artifacts) moved, or copied, while KD_ARTIFACTS names another folder
    (set for other projects): kd looked for the models there only, so the moved store found none (and said
    to move them into KD_ARTIFACTS), the copy served the original's, `kd runs delete` left the store's own
    model folder behind without a word, and `--overwrite` left the replaced model there."""
    from kdstore.deletion import delete_stages

    monkeypatch.delenv("KD_ARTIFACTS", raising=False)
    old, copy, new = tmp_path / "实验 1", tmp_path / "实验 2", tmp_path / "实验 3"
    old.mkdir()
    store = Store.open(str(old / "k.db"))
    _teach_version(store, "v1", overwrite=False)
    store.close()
    shutil.copytree(old, copy)
    (old / "kd-artifacts" / "k.db" / "r1" / "teach" / "model" / "w.txt").write_text("v2", encoding="utf-8")  # retrained there
    monkeypatch.setenv("KD_ARTIFACTS", str(tmp_path / "x"))

    def served(folder):
        store = Store.open(str(folder / "k.db"), create=False)
        try:
            path = pathlib.Path(store.find_stage("r1", "teach").artifact_path)
            assert [s.artifact_path for _, stages in store.runs() for s in stages if s.name == "teach"] == [str(path)]
            return path, (path / "w.txt").read_text(encoding="utf-8")
        finally:
            store.close()

    own = copy / "kd-artifacts" / "k.db" / "r1" / "teach"
    assert served(copy) == ((own / "model").resolve(), "v1")
    old.rename(new)
    assert served(new) == ((new / "kd-artifacts" / "k.db" / "r1" / "teach" / "model").resolve(), "v2")

    def retrain(version, fail=False):
        store = Store.open(str(new / "k.db"), create=False)
        try:
            _teach_version(store, version, fail=fail)
        finally:
            store.close()

    retrain("v3", fail=True)  # the replaced model back where it lay
    assert served(new)[1] == "v2"
    assert sorted(p.name for p in (new / "kd-artifacts" / "k.db" / "r1").iterdir()) == ["teach"]
    retrain("v3")
    assert served(new)[1] == "v3" and not (new / "kd-artifacts" / "k.db" / "r1").exists()  # the replaced model went
    monkeypatch.setenv("KD_ARTIFACTS", str(tmp_path / "y"))  # (one per store: x holds the moved store's model now)
    store = Store.open(str(copy / "k.db"), create=False)
    try:
        report = delete_stages(store, "r1")
    finally:
        store.close()
    assert not own.exists() and not report["warnings"], report


@pytest.mark.sqlite_only
@pytest.mark.parametrize("first, then", [(None, "other"), ("other", None), ("one", "other")])
def test_a_stage_retrained_under_another_kd_artifacts_serves_the_new_model(tmp_path, monkeypatch, first, then):
    """`--overwrite` with KD_ARTIFACTS set (or unset, or changed) since the stage was trained: the new
    model went to the new folder, the old one stayed in the folder kd looks in first, and with the
    variable back as it was `kd predict` served the replaced model under the new stage's record."""
    def train(version, artifacts):
        if artifacts:
            monkeypatch.setenv("KD_ARTIFACTS", str(tmp_path / artifacts))
        else:
            monkeypatch.delenv("KD_ARTIFACTS", raising=False)
        store = Store.open(str(tmp_path / "k.db"))
        try:
            _teach_version(store, version)
        finally:
            store.close()

    def served(artifacts):
        if artifacts:
            monkeypatch.setenv("KD_ARTIFACTS", str(tmp_path / artifacts))
        else:
            monkeypatch.delenv("KD_ARTIFACTS", raising=False)
        store = Store.open(str(tmp_path / "k.db"), create=False)
        try:
            return (pathlib.Path(store.find_stage("r1", "teach").artifact_path) / "w.txt").read_text(encoding="utf-8")
        finally:
            store.close()

    train("v1", first)
    train("v2", then)
    assert [served(a) for a in (first, then)] == ["v2", "v2"]
    if first is None:  # the replaced model in the store's own folder went with its record, as one replaced in place does
        assert not (tmp_path / "kd-artifacts" / "k.db" / "r1" / "teach").exists()


@pytest.mark.sqlite_only
def test_a_stage_retrained_back_under_kd_artifacts_replaces_its_own_model_not_a_leftover(tmp_path, monkeypatch):
    """Trained without KD_ARTIFACTS, with it, without it, then with it again: the model the second left
    in the KD_ARTIFACTS folder (kept: a folder it names may be another store's too) was parked and deleted
    as if it were the stage's, and the stage's own model stayed in kd-artifacts/STORE, served under the new
    stage's name once the KD_ARTIFACTS folder was gone. Now that leftover is refused, the stage's own model
    is the one replaced (and given back by a replacement that fails)."""
    own = tmp_path / "kd-artifacts" / "k.db" / "r1" / "teach"

    def use(artifacts):
        if artifacts:
            monkeypatch.setenv("KD_ARTIFACTS", str(tmp_path / artifacts))
        else:
            monkeypatch.delenv("KD_ARTIFACTS", raising=False)
        return Store.open(str(tmp_path / "k.db"))

    def train(version, artifacts, fail=False):
        store = use(artifacts)
        try:
            _teach_version(store, version, fail=fail)
        finally:
            store.close()

    def served(artifacts=None):
        store = use(artifacts)
        try:
            return (pathlib.Path(store.find_stage("r1", "teach").artifact_path) / "w.txt").read_text(encoding="utf-8")
        finally:
            store.close()

    train("v1", None)
    train("v2", "x")
    train("v3", None)  # v2 stays in x/r1/teach
    with pytest.raises(KdError, match="already holds files"):
        train("v4", "x")
    assert (served(), served("x"), (own / "model" / "w.txt").read_text(encoding="utf-8")) == ("v3", "v3", "v3")
    shutil.rmtree(tmp_path / "x" / "r1" / "teach")
    train("v4", "x", fail=True)  # the stage's own model back, in its own folder
    assert (served(), served("x"), (own / "model" / "w.txt").read_text(encoding="utf-8")) == ("v3", "v3", "v3")
    assert sorted(p.name for p in own.parent.iterdir()) == ["teach"]
    train("v4", "x")
    assert (served(), served("x")) == ("v4", "v4")
    assert not own.exists()  # the replaced model left the store's own folder
    shutil.rmtree(tmp_path / "x")
    with pytest.raises(FileNotFoundError):  # missing, not the replaced model served under the new stage's name
        served()



@pytest.mark.sqlite_only
def test_deleting_a_stage_whose_model_lies_under_another_kd_artifacts_says_it_is_kept(tmp_path, monkeypatch):
    """A model trained with KD_ARTIFACTS=x, its run deleted with the variable unset: the folder stays (another
    store may record it), and nothing said so."""
    from kdstore.deletion import delete_stages

    monkeypatch.setenv("KD_ARTIFACTS", str(tmp_path / "x"))
    store = Store.open(str(tmp_path / "k.db"))
    with stage_scope(store, run="r1", kind="teach", config={}) as stage:
        (stage.artifact_dir / "model").mkdir()
        stage.record_artifact(stage.artifact_dir / "model")
    store.close()
    monkeypatch.delenv("KD_ARTIFACTS")
    store = Store.open(str(tmp_path / "k.db"))
    try:
        kept = tmp_path / "x" / "r1" / "teach"
        for dry_run in (True, False):
            report = delete_stages(store, "r1", dry_run=dry_run)
            assert [w for w in report["warnings"] if w.startswith(f"{kept} is kept: the model folder of a stage")], report
        assert kept.is_dir() and not store.run_exists("r1")
    finally:
        store.close()
    monkeypatch.setenv("KD_ARTIFACTS", str(tmp_path / "x"))  # deleted where it lies: removed, nothing to say
    store = Store.open(str(tmp_path / "k.db"))
    try:
        with stage_scope(store, run="r2", kind="teach", config={}) as stage:
            (stage.artifact_dir / "model").mkdir()
            stage.record_artifact(stage.artifact_dir / "model")
        report = delete_stages(store, "r2")
        assert not [w for w in report["warnings"] if "is kept" in w] and not (tmp_path / "x" / "r2" / "teach").exists()
    finally:
        store.close()


@pytest.mark.sqlite_only
def test_deleting_a_stage_of_a_store_made_before_each_store_had_its_folder_says_why_its_model_is_kept(tmp_path, monkeypatch):
    """A store made by a kd before the kd-artifacts/STORE layout (upgraded since) recorded its models in
    kd-artifacts/RUN/STAGE beside it, which the stores beside it shared: `kd runs delete` keeps that folder,
    and said it was "made with KD_ARTIFACTS set otherwise", a variable its user never set."""
    from kdstore.deletion import delete_stages

    monkeypatch.delenv("KD_ARTIFACTS", raising=False)
    store = Store.open(str(tmp_path / "k.db"))
    try:
        with stage_scope(store, run="r1", kind="teach", config={}) as stage:
            pass
        legacy = tmp_path / "kd-artifacts" / "r1" / "teach"  # (where that kd put it)
        (legacy / "model").mkdir(parents=True)
        with store.session() as s:
            s.execute(update(Stage).where(Stage.id == stage.id).values(artifact_path=str(legacy / "model")))
            s.commit()
        for dry_run in (True, False):
            report = delete_stages(store, "r1", dry_run=dry_run)
            kept = [w for w in report["warnings"] if w.startswith(f"{legacy} is kept: the model folder of a stage")]
            assert kept and "from before each store had its own kd-artifacts/STORE folder" in kept[0], report
        assert legacy.is_dir() and not store.run_exists("r1")
    finally:
        store.close()


@pytest.mark.sqlite_only
def test_a_moved_store_without_its_models_says_where_they_go_for_teach_and_distill(tmp_path, monkeypatch):
    """`kd teach --model teach:RUN` (or pretrain:RUN) and a distill reading the teacher said only
    "no such directory" / "is missing" of a store moved without its kd-artifacts folder; `kd predict`
    said where to move them. A stage failing on that left an empty kd-artifacts/STORE, in which
    `mv OLD NEW` (as the error says) nested the models where kd does not look."""
    from kdstore.teacher import model_dirs, resolve_model

    monkeypatch.delenv("KD_ARTIFACTS", raising=False)
    old, new = tmp_path / "数据 集", tmp_path / "新 家"
    old.mkdir()
    _store_with_models(old / "k d.db", ("pretrain", "teach"))
    new.mkdir()
    (old / "k d.db").rename(new / "k d.db")  # the store alone: its models stay in 数据 集
    (old / "kd-artifacts").rename(tmp_path / "aside")
    store = Store.open(str(new / "k d.db"), create=False)
    hint = r"missing from .*数据 集.*finds its models in .*新 家/kd-artifacts/k d.db/r1/{} \(kd-artifacts/STORE"
    try:
        for kind in ("pretrain", "teach"):
            with pytest.raises(KdError, match=hint.format(kind)):
                resolve_model(store, f"{kind}:r1")
        with pytest.raises(KdError, match=hint.format("teach")):
            model_dirs(store.find_stage("r1", "teach"))
        with pytest.raises(KdError, match="missing from"):  # a stage failing on it: kd-artifacts/STORE was made for it
            with stage_scope(store, run="r2", kind="teach", config={}):
                resolve_model(store, "teach:r1")
    finally:
        store.close()
    assert not (new / "kd-artifacts").exists()  # (not left empty by the failed stage)
    (tmp_path / "aside" / "k d.db").rename(tmp_path / "aside" / "moved")
    (tmp_path / "aside").rename(new / "kd-artifacts")
    (new / "kd-artifacts" / "moved").rename(new / "kd-artifacts" / "k d.db")
    store = Store.open(str(new / "k d.db"), create=False)
    try:
        assert resolve_model(store, "teach:r1") == str((new / "kd-artifacts" / "k d.db" / "r1" / "teach" / "model").resolve())
        with stage_scope(store, run="r3", kind="teach", config={}) as stage:
            (stage.artifact_dir / "model").mkdir()
            stage.record_artifact(stage.artifact_dir / "model")
        os.rmdir(store.find_stage("r3", "teach").artifact_path)  # deleted by hand where kd looks: no "moved or renamed" advice
        with pytest.raises(KdError, match=r"missing from .*新 家.*r3/teach/model$"):
            resolve_model(store, "teach:r3")
    finally:
        store.close()


@pytest.mark.sqlite_only
def test_a_store_in_a_read_only_folder_is_read_and_writers_refused_in_one_line(store, db_path, invoke, write_file, error_line, monkeypatch):
    """SQLite cannot make a WAL store's -shm file in a read-only folder (a shared or mounted data
    folder): `kd runs` and `kd report` failed with "unable to open database file"."""
    with stage_scope(store, run="r1", kind="teach", config={}):
        pass
    store.close()
    folder = db_path.parent
    access = os.access  # (root writes anywhere: the folder is read-only to kd as to any other user)
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if str(p) == str(folder) and mode == os.W_OK else access(p, mode, *a, **k))
    write_file("more.tsv", "pos\tmore\n")
    folder.chmod(0o555)
    try:
        assert [r["run"] for r in invoke.json(["runs"])] == ["r1"]
        assert invoke.json(["report", "--run", "r1"])["stages"][0]["status"] == "succeeded"
        said = (f"Error: {db_path}: this command writes to the store, and its folder {folder} is read-only: nothing was changed; "
                "make it writable, or copy the store with its kd-artifacts folder to a folder kd can write")
        assert error_line(invoke(["ingest", "more.tsv"], ok=False)) == said  # (SQLite's "attempt to write a readonly database")
        assert error_line(invoke(["labels", "set", "--run", "r2", "1=neg"], ok=False)) == said  # (a stage's writer too)
        assert "is read-only" in error_line(invoke(["ingest", "more.tsv"], ok=False, db=folder / "new.db"))
    finally:
        folder.chmod(0o755)
    assert len(invoke.json(["samples"])) == 4 and not (folder / "new.db").exists()


def test_a_quoted_tilde_in_plot_is_the_home_folder_and_a_file_in_the_way_is_one_line(invoke, write_file, tmp_path, monkeypatch, error_line):
    """`kd report --plot '~/charts'` (quoted: no shell expands it) made a folder called ~ in the working
    directory; a --plot under a file said a bare "Not a directory". A run with nothing to chart leaves
    no empty folder behind (nor its parents kd made)."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    write_file("train.tsv", "pos\tgood\nneg\tbad\npos\tfine\n")
    invoke(["ingest", "train.tsv"])
    invoke(["labels", "set", "--run", "r", "1=neg"])
    assert f"no charts written to {home / 'charts'}: run r" in invoke(["report", "--run", "r", "--plot", "~/charts"]).stderr
    assert not (home / "charts").exists() and not (tmp_path / "~").exists()
    assert "no charts written" in invoke(["report", "--run", "r", "--plot", "a/b/charts"]).stderr
    assert not (tmp_path / "a").exists()
    (tmp_path / "kept").mkdir()
    invoke(["report", "--run", "r", "--plot", "kept"])
    assert (tmp_path / "kept").is_dir()  # (a folder that was there stays)
    write_file("afile", "x")
    assert error_line(invoke(["report", "--run", "r", "--plot", "afile/charts"], ok=False)) == (
        "Error: cannot write the charts to afile/charts: afile is a file, not a folder")


@pytest.mark.sqlite_only
def test_kd_artifacts_starting_with_a_tilde_is_the_home_folder(tmp_path, monkeypatch):
    """As --db and KD_DB: KD_ARTIFACTS="~/模型 目录" (quoted for its space, so no shell expands it)
    made a folder named "~" in the working directory."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KD_ARTIFACTS", "~/模型 目录")
    store = Store.open(str(tmp_path / "k.db"))
    try:
        with stage_scope(store, run="r1", kind="teach", config={}) as stage:
            assert stage.artifact_dir == tmp_path / "home" / "模型 目录" / "r1" / "teach"
    finally:
        store.close()
    assert not (tmp_path / "~").exists()


@pytest.mark.sqlite_only
def test_a_blank_kd_artifacts_is_refused(invoke, write_file, tmp_path, monkeypatch, error_line, counts):
    """As a blank KD_DB: KD_ARTIFACTS=" " (a variable set to a space) put every model in a folder named " "
    in the working directory; an empty one is unset."""
    write_file("train.tsv", "pos\tgood\n")
    invoke(["ingest", "train.tsv"])
    monkeypatch.setenv("KD_ARTIFACTS", " ")
    assert error_line(invoke(["labels", "set", "1=pos"], ok=False)).startswith("Error: KD_ARTIFACTS is blank")
    monkeypatch.setenv("KD_ARTIFACTS", "")
    assert counts()["runs"] == 0 and not (tmp_path / " ").exists()
    invoke(["labels", "set", "1=pos"])


def _left_running(store, name: str, process: str) -> None:
    """A stage row as a kd process leaves it while it runs (or when killed with -9)."""
    import socket

    with store.write_session("runs", "stages") as s:
        run = s.scalars(select(Run).where(Run.uniqid == "r1")).first() or Run(uniqid="r1")
        s.add(run)
        s.flush()
        s.add(Stage(run_id=run.id, kind="teach", name=name, config={}, status="running", host=socket.gethostname(), process=process))


@pytest.mark.on_postgresql
def test_a_running_stage_is_never_replaced_and_a_killed_ones_is_marked_failed(store, invoke, error_line):
    """--overwrite of a stage whose process still runs would delete it under that process: refused.
    A stage whose process is gone (kill -9) shows so in `kd runs` (a reader writes nothing) and is
    marked failed when the next stage starts; one this process cannot judge (another container
    with this host name) is left as it is."""
    from kdstore.runs import _machine, _start_time, process_state

    if _machine() is None:
        pytest.skip("no /proc boot id or pid namespace here: kd judges no stage's process")
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    here = _machine()
    try:
        _left_running(store, "teach", f"{alive.pid}:{_start_time(alive.pid) or '?'}:{here}")
        line = error_line(invoke(["teach", "--run", "r1", "--model", "/nowhere", "--overwrite"], ok=False))
        assert f"stage 'teach' of run 'r1' is running (process {alive.pid} on" in line and "wait for it, or stop it" in line
        _left_running(store, "other", f"{dead.pid}:{_start_time(os.getpid())}:{here}")  # the pid is gone (or reused by another start)
        _left_running(store, "boxed", f"{os.getpid()}:1:{here.split('/')[0]}/1")  # another pid namespace, same boot
        _left_running(store, "cloned", f"{alive.pid}:{_start_time(alive.pid)}:deadbeef/{here.split('/')[1]}")  # another boot: a reboot, or a cloned machine
        stages = {st["name"]: st for st in invoke.json(["runs"])[0]["stages"]}
        assert stages["other"]["status"] == "running" and stages["other"]["process_gone"] is True
        notes = {r["stage"]: r["note"] for r in invoke.json(["report", "--compare", "r1"])}
        assert notes["other"] == "running (process gone)" and notes["teach"] == "running"  # not one to wait for
        assert not any(stages[n]["process_gone"] for n in ("teach", "boxed", "cloned"))
        invoke(["labels", "set", "--run", "r1", "1=neg"])  # a stage starts: it marks what is gone
        stages = {st.name: st for st in store.stages_of("r1")}
        assert (stages["other"].status, stages["other"].error) == ("failed", f"crashed: process {dead.pid} is gone")
        assert stages["teach"].status == stages["boxed"].status == stages["cloned"].status == "running"
        assert process_state(stages["boxed"]) is process_state(stages["cloned"]) is None
    finally:
        alive.kill()
        alive.wait()


def test_a_command_needing_a_teacher_still_training_says_to_wait_not_to_train_one(store, invoke, error_line):
    """`kd distill` (or `kd labels detect`) on a run whose `kd teach` still runs said "`kd teach --run r1
    --model MODEL` makes one": that command is refused while the teacher runs. It says to wait for it;
    one whose process is gone (kill -9) is still one to train again."""
    from kdstore.runs import _machine, _start_time

    if _machine() is None:
        pytest.skip("no /proc boot id or pid namespace here: kd judges no stage's process")
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _left_running(store, "teach", f"{alive.pid}:{_start_time(alive.pid) or '?'}:{_machine()}")
        for args in (["distill", "--run", "r1", "--student", "textcnn"], ["labels", "detect", "--run", "r1"]):
            line = error_line(invoke(args, ok=False))
            assert "run 'r1' has no succeeded 'teach' stage (stages: teach (running)" in line, line
            assert "kd teach --run r1" not in line and "'teach' is running: wait for it to end" in line, line
    finally:
        alive.kill()
        alive.wait()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with store.write_session("stages") as s:
        s.execute(update(Stage).where(Stage.name == "teach").values(process=f"{dead.pid}:{_start_time(os.getpid())}:{_machine()}"))
    line = invoke(["labels", "detect", "--run", "r1"], ok=False).stderr.splitlines()[-1]  # marked failed as it starts: train one
    assert "wait for it" not in line and "kd teach --run r1" in line, line


def test_a_command_needing_a_teacher_being_replaced_says_to_wait_for_the_replacement(store, invoke, error_line):
    """`kd distill` (or `kd labels detect`, `kd predict --store`) while `kd teach --overwrite` ran was told only that
    `--model teach~parked-ID` (kd predict, kd export) serves the old teacher meanwhile: no way on for a distill, and
    `kd predict --store --model teach~parked-ID` is refused in its turn. It says to wait for the replacement."""
    from kdstore.runs import _machine, _start_time

    if _machine() is None:
        pytest.skip("no /proc boot id or pid namespace here: kd judges no stage's process")
    old_id = _old_teacher(store)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with pytest.raises(RuntimeError, match="the replacement fails"):
            with stage_scope(store, run="r1", kind="teach", config={}, overwrite=True) as st:
                with store.write_session("stages") as s:  # another process's replacement, still running
                    s.execute(update(Stage).where(Stage.id == st.id).values(process=f"{alive.pid}:{_start_time(alive.pid) or '?'}:{_machine()}"))
                for args in (["distill", "--run", "r1", "--student", "textcnn"], ["labels", "detect", "--run", "r1"],
                             ["predict", "--run", "r1", "--model", "teacher", "--store"]):
                    line = error_line(invoke(args, ok=False))
                    assert f"'teach~parked-{old_id}' is the one an --overwrite is replacing" in line, line
                    assert line.endswith("the replacement 'teach' is running: wait for it to end (`kd runs` shows it), "
                                         "then run this again"), line
                raise RuntimeError("the replacement fails")
    finally:
        alive.kill()
        alive.wait()


def test_a_stage_found_gone_days_later_is_given_no_duration(store, invoke):
    """A stage killed with -9 is marked failed when the next stage starts, maybe days later: `kd runs`
    and `kd report` gave it that wait as its seconds (259,200 s for a run that died in its first minute)."""
    from kdstore.runs import _machine, _start_time

    if _machine() is None:
        pytest.skip("no /proc boot id or pid namespace here: kd judges no stage's process")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _left_running(store, "teach", f"{dead.pid}:{_start_time(os.getpid())}:{_machine()}")
    with store.write_session("stages") as s:  # it started three days ago
        s.scalars(select(Stage).where(Stage.name == "teach")).one().started_at -= dt.timedelta(days=3)
    invoke(["labels", "set", "--run", "r1", "1=neg"])  # a stage starts: it marks the gone one failed
    teach = invoke.json(["runs"])[0]["stages"][0]
    assert (teach["status"], teach["error"]) == ("failed", f"crashed: process {dead.pid} is gone")
    assert teach["ended_at"] is not None and teach["duration_s"] is None
    row = next(ln for ln in invoke(["runs"]).stdout.splitlines() if "│ teach" in ln)
    assert "259" not in row and "failed" in row
    text = invoke(["report", "--run", "r1"]).stdout
    assert "teach (teach) failed\n" in text
    assert [st["duration_s"] for st in invoke.json(["report", "--run", "r1"])["stages"]][0] is None


def test_a_stage_records_who_ran_it_from_kd_user_else_the_login_name(monkeypatch):
    import getpass

    from kdstore.runs import current_user

    assert current_user() == "tester"  # (conftest's KD_USER)
    monkeypatch.setenv("KD_USER", "  ")  # blank: not a name
    monkeypatch.setenv("LOGNAME", "ann")  # (getpass reads LOGNAME first)
    assert current_user() == getpass.getuser() == "ann"
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(getpass, "getuser", lambda: (_ for _ in ()).throw(OSError("no user")))  # a uid with no name
    assert current_user() is None


def test_a_kd_user_of_odd_bytes_or_lines_is_named_or_made_one_line(store, invoke, error_line, monkeypatch):
    """KD_USER exported in a GBK terminal (王 as bytes that are no UTF-8) failed every stage with "not valid
    UTF-8 (a file name or argument ...)", naming no KD_USER; one holding a line break split the
    history line it is shown in."""
    from kdstore.runs import current_user

    monkeypatch.setenv("KD_USER", "王审核\n二组\tB")
    assert current_user() == "王审核 二组 B"
    monkeypatch.setenv("KD_USER", "王".encode("gbk").decode("utf-8", "surrogateescape"))
    with pytest.raises(KdError, match="KD_USER is not valid UTF-8"):
        current_user()
    line = error_line(invoke(["labels", "set", "--run", "u", "1=neg"], ok=False))
    assert "KD_USER is not valid UTF-8" in line and not store.run_exists("u")


def test_a_command_missing_a_killed_stage_names_it_gone_not_running(store, invoke, error_line):
    """`kd predict` after a teacher was killed with -9 said the run's stages were "teach (running)", as
    if it were worth waiting for, where `kd runs` said "running (process gone)"."""
    from kdstore.runs import _machine, _start_time

    if _machine() is None:
        pytest.skip("no /proc boot id or pid namespace here: kd judges no stage's process")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _left_running(store, "teach", f"{dead.pid}:{_start_time(os.getpid())}:{_machine()}")
    line = error_line(invoke(["predict", "--run", "r1"], input="a\n", ok=False))
    assert "run 'r1' has no succeeded 'teach' stage (stages: teach (running, process gone))" in line


@pytest.mark.on_postgresql
def test_id_lists_longer_than_a_statement_takes_are_read_in_chunks(store):
    """PostgreSQL takes at most 65,535 parameters a statement: 70,000 ids must still work."""
    from kdstore import labels as lab

    assert store.samples(ids=range(70_000, 0, -1)).ids.tolist() == [1, 2, 3, 4]
    assert store.samples(ids=list(range(-9_998, 0)) + [4, 3, 2, 1], limit=3).ids.tolist() == [1, 2, 3]  # over every chunk
    with pytest.raises(KdError, match="no sample 5 in the store"):  # all 69,999 read, the first missing named
        lab.parse_edits(store, [f"{i}=pos" for i in range(1, 70_000)])


@pytest.mark.on_postgresql
def test_labels_set_at_once_take_their_own_edit_numbers(store, db):
    """Two or three `kd labels set` without --name on one run at once (a team editing by hand):
    each takes the next free edit-N as its stage starts, under the writer lock; none is refused for
    a name another took meanwhile ("edit-1 ... is running", "succeeded: pass --overwrite")."""
    env = {**os.environ, "KD_DB": db, "KD_NO_PROGRESS": "1", "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    procs = [subprocess.Popen([sys.executable, "-m", "commands.cli", "labels", "set", "--run", "r1", f"{i}=neg", "--json"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (1, 2, 3)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err
    assert sorted(json.loads(out)["stage"] for out, _ in outs) == ["edit-1", "edit-2", "edit-3"]
    assert sorted((s.name, s.status) for s in store.stages_of("r1")) == [(f"edit-{n}", "succeeded") for n in (1, 2, 3)]


@pytest.mark.on_postgresql
def test_a_numbered_stage_takes_the_next_free_number_as_it_starts(store):
    with stage_scope(store, run="r1", kind="clean", name="edit", numbered=True, config={}) as first:
        with stage_scope(store, run="r1", kind="clean", name="edit", numbered=True, config={}) as second:
            assert (first.name, second.name) == ("edit-1", "edit-2")
    assert _stage(store, "r1", "edit-2").status == "succeeded"


def test_labels_set_with_a_taken_name_says_what_to_do(store, db, invoke):
    """``kd labels set --name X`` where X is taken told to "pass --overwrite", which set does not have."""
    invoke(["labels", "set", "--run", "r1", "1=neg", "--name", "fix"])
    result = invoke(["labels", "set", "--run", "r1", "2=neg", "--name", "fix"], ok=False)
    assert "run 'r1' has a stage 'fix': choose another --name, or leave it out (edit-N)" in result.stderr
    assert "--overwrite" not in result.stderr


def test_labels_set_may_rerun_a_failed_name(store, invoke):
    """A ``kd labels set --name fix`` that failed (Ctrl-C, a lock timeout) is rerun under its name, as
    any failed stage is: the check for a taken name refused it ("choose another --name")."""
    with pytest.raises(RuntimeError):
        with stage_scope(store, run="r1", kind="clean", name="fix", config={}):
            raise RuntimeError("interrupted")
    invoke(["labels", "set", "--run", "r1", "1=neg", "--name", "fix"])
    assert [(s.name, s.status) for s in store.stages_of("r1")] == [("fix", "succeeded")]


def test_a_label_edit_while_a_stage_runs_changes_neither_its_figures_nor_its_confusion(store, db, invoke, write_file):
    """A stage's figures and the confusion matrix kd report shows for it are over the labels as they
    were when it started: an edit made meanwhile (another process's `kd labels set`) once entered the
    figures half-way (dropped flags read at the end, labels earlier), so support and matrix disagreed."""
    from kdstore.outputs import store_outputs
    from synthetic import edit_labels

    write_file("dev.tsv", "pos\te\nneg\tf\npos\tg\nneg\th\n")
    invoke(["ingest", "dev.tsv", "--split", "dev"])  # ids 5..8
    with stage_scope(store, run="r1", kind="predict", name="predict-x", config={}) as st:
        samples = store.samples(include_dropped=True)  # read as a stage reads them, before the edit
        edit_labels(db, "other", "edit-1", {5: "neg", 7: "drop"})
        logits = np.tile(np.array([[1.0, 0.0]], dtype=np.float32), (len(samples), 1))  # every sample: pos
        store_outputs(store, st.id, samples, logits, store.class_names())
    stage = next(s for s in invoke.json(["report", "--run", "r1"])["stages"] if s["name"] == "predict-x")
    m = stage["metrics"]["dev"]
    assert (m["n"], m["support[pos]"], m["support[neg]"], m["accuracy"]) == (4, 2, 2, 0.5)  # as it started
    assert stage["confusion"]["dev"] == [[2, 0], [2, 0]]
    assert type(m["n"]) is int and type(m["support[pos]"]) is int and type(m["accuracy"]) is float  # counts as counts


def test_the_console_is_160_wide_piped_and_writes_nowhere_without_stdout(monkeypatch):
    """Tables piped or written to a file are 160 columns wide (COLUMNS still rules); a kd started
    with no stdout at all (`kd runs >&-`) prints nowhere, as rich does, rather than crashing with
    an AttributeError traceback on the width check."""
    import io
    import sys

    from commands.common import PIPED_WIDTH, console

    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert console().width == PIPED_WIDTH == 160
    monkeypatch.setenv("COLUMNS", "100")
    assert console().width == 100
    monkeypatch.setattr(sys, "stdout", None)
    console().print("a table nobody reads")


def test_a_narrow_terminal_cuts_no_name_or_figure_and_wraps_the_error():
    """At 60 columns (or `kd report --compare` at 120) rich cut every column to "…": "153,4…" for
    153,474 parameters, "disti…" for two stages alike. Names and figures stay whole; the error wraps."""
    import io

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from commands.runs import print_wide

    table = Table()
    for col in ("run", "stage", "parameters", "status", "error"):
        table.add_column(col)
    table.add_row("20240101", Text("distill-early-exit"), "153,474", "[red]failed[/] (process gone)", "run 'r3' has no succeeded 'teach' stage at all")
    table.add_row("", Text("distill-textcnn"), "1,834", "[green]succeeded[/]", "")
    out = Console(file=io.StringIO(), width=60, force_terminal=True, color_system=None)
    print_wide(out, table)
    text = out.file.getvalue()
    assert "…" not in text and all(x in text for x in ("distill-early-exit", "distill-textcnn", "153,474", "failed (process gone)", "20240101"))
    assert "succeeded 'teach'" not in text  # the error wraps at its spaces, as wide as its longest word
    wide = Console(file=io.StringIO(), width=200, force_terminal=True, color_system=None)
    print_wide(wide, table)
    assert "run 'r3' has no succeeded 'teach' stage at all" in wide.file.getvalue()  # room enough: one line


def test_a_confusion_matrix_of_long_chinese_class_names_fits_an_80_column_terminal(db, invoke, write_file, monkeypatch):
    """Three classes of 15 Chinese characters made each confusion matrix 108 columns wide: an 80-column
    terminal wrapped every line, its borders in pieces. The column headers fold; names beside the rows
    and the counts stay whole."""
    from rich.cells import cell_len

    from kdstore.outputs import store_outputs

    long_pos, long_neg = "非常长的中文类别名称正面评价类", "非常长的中文类别名称负面评价类"
    write_file("dev.tsv", f"{long_pos}\t甲\n{long_neg}\t乙\n中性\t丙\n{long_neg}\t丁\n")
    invoke(["ingest", "dev.tsv", "--split", "dev"])
    store = Store.open(db, create=False)
    try:
        with stage_scope(store, run="r1", kind="predict", name="predict-x", config={}) as st:
            samples = store.samples()
            logits = np.tile(np.array([[0.0, 1.0, 0.0]], dtype=np.float32), (len(samples), 1))  # every sample: long_neg
            store_outputs(store, st.id, samples, logits, store.class_names())
    finally:
        store.close()
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # (rich's own switch: a terminal, as a user's)
    text = re.sub(r"\x1b\[[0-9;]*m", "", invoke(["report", "--run", "r1"]).stdout)
    matrix = text[text.index("dev confusion"):].splitlines()
    assert max(cell_len(line) for line in matrix) <= 80, "\n".join(matrix)  # (a Chinese character: 2 columns)
    rows = [line for line in matrix if line.startswith("│")]
    assert [[c.strip() for c in row.split("│")[1:-1]] for row in rows] == [
        [long_pos, "0", "1", "0"], [long_neg, "0", "2", "0"], ["中性", "0", "1", "0"]]
    assert "…" not in text


@pytest.mark.sqlite_only  # SQLite's busy timeout
def test_a_writer_waiting_past_the_busy_timeout_is_told_what_to_do(invoke, write_file, db, error_line, monkeypatch):
    """Past SQLite's wait for another writer, "database is locked" alone said nothing of the cause."""
    import sqlite3

    import kdstore.engine as engine

    write_file("t.tsv", "pos\t好\nneg\t差\n")
    invoke(["ingest", "t.tsv"])
    monkeypatch.setattr(engine, "SQLITE_BUSY_TIMEOUT_MS", 200)
    other = sqlite3.connect(db, isolation_level=None)  # another process's long write, holding the writer lock
    other.execute("BEGIN IMMEDIATE")
    try:
        line = error_line(invoke(["labels", "set", "--run", "r", "1=neg"], ok=False))
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert "database is locked: another kd process has been writing to it for over 10 minutes" in line
    assert "`kd runs` shows what is running" in line


@pytest.mark.sqlite_only  # SQLite's queue for the writer lock
def test_a_writer_queued_behind_another_says_it_waits(invoke, write_file, db, monkeypatch):
    """A writer behind another process's long write (a teacher scoring a pool) waited up to 10 minutes
    with nothing on screen; it says so once, then goes on when the lock is free."""
    import sqlite3
    import threading

    import kdstore.engine as engine

    write_file("t.tsv", "pos\t好\nneg\t差\n")
    invoke(["ingest", "t.tsv"])
    monkeypatch.setattr(engine, "LOCK_NOTICE_S", 0.5)
    other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    release = threading.Timer(2.0, lambda: other.execute("ROLLBACK"))
    release.start()
    try:
        result = invoke(["labels", "set", "--run", "r", "1=neg"])
    finally:
        release.join()
        other.close()
    assert result.stderr.count("note: waiting for another process that writes to the store (up to 10 minutes; "
                               "`kd runs` shows what is running; Ctrl-C stops)") == 1
    assert "note: waiting" not in invoke(["labels", "set", "--run", "r", "2=pos"]).stderr  # no one else writing: nothing said


@pytest.mark.sqlite_only  # SQLite's queue for the writer lock
def test_a_stage_ending_queued_behind_another_writer_does_not_say_ctrl_c_stops_it(store, db, monkeypatch):
    """A stage interrupted (Ctrl-C) while another process held the writer lock queued to record its failure,
    saying again "Ctrl-C stops": a second Ctrl-C then was held back until the record was made, up to 10 minutes."""
    import sqlite3
    import threading

    import kdstore.engine as engine

    monkeypatch.setattr(engine, "LOCK_NOTICE_S", 0.5)
    said: list[str] = []
    monkeypatch.setattr(engine, "lock_notice", said.append)
    other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    release = threading.Timer(1.5, lambda: other.execute("ROLLBACK"))
    try:
        with pytest.raises(KdError, match="out of memory"):
            with stage_scope(store, run="r1", kind="teach", config={}):
                other.execute("BEGIN IMMEDIATE")  # another process's long write, as the stage fails
                release.start()
                raise KdError("out of memory")
    finally:
        release.join()
        other.close()
    assert said == ["waiting for another process that writes to the store, to record how the stage ended (up to 10 minutes; "
                    "`kd runs` shows what is running; a Ctrl-C now waits for the record too)"]
    assert _stage(store, "r1", "teach").status == "failed"


def test_report_cells_show_a_perfect_rate_as_a_rate_and_a_count_as_a_count():
    """An accuracy of exactly 1 (or 0) printed as "1" (or "0") beside "0.9500": a count, not a rate."""
    from commands.runs import _fmt

    assert [_fmt(v) for v in (1.0, 0.0, 0.95, 3, 153474, 13000.0, 12.25, None)] == [
        "1.0000", "0.0000", "0.9500", "3", "153,474", "13,000", "12.2", ""]
    assert [_fmt(v) for v in (1e-05, 0.0005, 0.001)] == ["1e-05", "0.0005", "0.0010"]  # a speed of 1e-05 read 0.0000


def test_a_failing_cleanup_does_not_hide_the_stages_own_error(store, monkeypatch, capsys):
    """The partial folder of a failed stage that cannot be removed (made read-only meanwhile): the
    user was told of the removal, not of what failed the stage; now the stage's error is raised and
    recorded, the cleanup's told as a warning."""
    import kdstore.runs as runs

    def refused(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    with pytest.raises(RuntimeError, match="the real failure"):
        with stage_scope(store, run="r1", kind="teach", config={}) as st:
            (st.artifact_dir / "model.bin").write_bytes(b"partial")
            monkeypatch.setattr(runs.shutil, "rmtree", refused)
            raise RuntimeError("the real failure")
    stage = _stage(store, "r1", "teach")
    assert stage.status == "failed" and stage.error.startswith("RuntimeError: the real failure")
    err = capsys.readouterr().err
    assert "warning: stage 'teach' failed, and so did its cleanup: PermissionError" in err
    assert "the next stage started in run 'r1' records it failed)" in err  # (where the store could not record it)


def test_a_stage_failed_by_the_database_records_the_drivers_line_only():
    """A stage failed by the database recorded SQLAlchemy's whole message: the statement, its
    parameters (texts of the store) and a help link, which `kd runs` showed cut off."""
    import sqlite3

    from sqlalchemy.exc import OperationalError

    from kdstore.runs import _describe

    exc = OperationalError("INSERT INTO logits (sample_id, values) VALUES (?, ?)", [(1, b"x" * 50)], sqlite3.OperationalError("disk I/O error"))
    assert "[SQL:" in str(exc)
    assert _describe(exc) == "database error: disk I/O error"


# kd runs delete ----------------------------------------------------------------------------------


def test_runs_delete_names_no_failed_stage_as_learning_from_what_it_deletes(store, invoke):
    """A failed student of the teacher deleted was named as one whose report would call that teacher
    'deleted since': it has no figures, and its report says nothing of the kind."""
    from commands.train import _teacher_stages

    with stage_scope(store, run="r1", kind="teach", config={}):
        pass
    for name, fails in (("good", False), ("bad", True)):
        try:
            with stage_scope(store, run="r2", kind="distill", name=name, config={"teacher_stages": _teacher_stages(store, ("r1",))}):
                if fails:
                    raise RuntimeError("boom")
        except RuntimeError:
            pass
    said = invoke(["runs", "delete", "--run", "r1", "--dry-run"]).stderr
    assert "warning: r2/good learned from r1/teach, which this would delete" in said and "r2/bad" not in said


@pytest.mark.sqlite_only
def test_runs_delete_of_a_copied_store_names_no_model_folder_it_never_had(store, db_path, invoke):
    """A store file copied beside the original (its models left in the original's kd-artifacts folder):
    `kd runs delete` said "deleted model folder .../kd-artifacts/COPY/r1/teach", a folder that never was."""
    with stage_scope(store, run="r1", kind="teach", config={}) as st:
        (st.artifact_dir / "model").mkdir(parents=True)
        (st.artifact_dir / "model" / "weights.bin").write_bytes(b"x")
        st.record_artifact(st.artifact_dir / "model")
        original = st.artifact_dir
    store.close()
    copy = db_path.parent / "copy.db"
    import sqlite3

    with sqlite3.connect(db_path) as src, sqlite3.connect(copy) as dst:  # (its WAL's pages too)
        src.backup(dst)
    out = invoke(["runs", "delete", "--run", "r1", "--yes"], db=copy)
    assert "model folder" not in out.stdout and original.is_dir(), out.stdout
    assert Store.open(str(db_path)).find_stage("r1", "teach").status == "succeeded"  # (the original keeps it)


@pytest.mark.on_postgresql
def test_runs_delete_removes_stages_with_their_outputs_and_folders_and_nothing_else(store, invoke, counts, error_line):
    """A run's teacher logits (500,000 rows a pool) stayed in the store for good: no command deleted a run."""
    from commands.train import _teacher_stages

    ids = store.samples().ids
    with stage_scope(store, run="r1", kind="teach", config={}) as st:
        store.write_logits(st.id, ids, _logits(len(ids)))
        store.add_metrics(st.id, "dev", {"accuracy": 0.5})
        (st.artifact_dir / "model").mkdir(parents=True)
        (st.artifact_dir / "model" / "weights.bin").write_bytes(b"x")
        st.record_artifact(st.artifact_dir / "model")
        folder = st.artifact_dir
    with stage_scope(store, run="r1", kind="distill", name="distill-bigru", config={"teacher_stages": _teacher_stages(store, ("r1",))}):
        pass
    with stage_scope(store, run="r2", kind="teach", config={}) as other:
        store.write_logits(other.id, ids, _logits(len(ids)))
    before = counts()
    dry = invoke.json(["runs", "delete", "--run", "r1", "--stage", "teach", "--dry-run"])
    assert dry["deleted"] == [{"name": "teach", "kind": "teach", "status": "succeeded", "logits": 4, "predictions": 0, "issues": 0,
                               "folder": str(folder)}]  # (the model folder it removes: a dry run named only exports)
    assert dry["dry_run"] and not dry["run_deleted"] and counts() == before and folder.is_dir()
    dry_text = invoke(["runs", "delete", "--run", "r1", "--stage", "teach", "--dry-run"])  # (said "deleted now")
    assert f"would delete model folder {folder}\n" in dry_text.stdout
    assert "warning: r1/distill-bigru learned from r1/teach, which this would delete: its report would" in dry_text.stderr
    # no terminal to answer the question: refused, nothing deleted
    assert error_line(invoke(["runs", "delete", "--run", "r1", "--stage", "teach"], ok=False)).endswith("pass --yes (or --dry-run)")
    assert "has no stage 'tech' (its stages: distill-bigru, teach)" in error_line(
        invoke(["runs", "delete", "--run", "r1", "--stage", "tech", "--yes"], ok=False))
    assert counts() == before
    done = invoke(["runs", "delete", "--run", "r1", "--stage", "teach", "--yes", "--json"])
    assert "warning: r1/distill-bigru learned from r1/teach, deleted now" in done.stderr
    assert [s.name for s in store.stages_of("r1")] == ["distill-bigru"] and not folder.exists()
    after = counts()
    assert (after["logits"], after["metrics"]) == (before["logits"] - 4, before["metrics"] - 2)  # (accuracy, size_mb)
    report = invoke.json(["report", "--run", "r1"])["stages"]  # the student's teacher: gone since, not replaced (said so)
    assert re.fullmatch(r"r1/teach \(stage \d+ of \S+, deleted since\)", report[0]["sources"]["teachers"][0])
    assert "deleted now: its report will call that teacher 'deleted since'" in done.stderr
    text = invoke(["runs", "delete", "--run", "r1", "--yes"]).stdout
    assert text.splitlines() == ["deleted r1/distill-bigru (distill, succeeded; 0 logits, 0 predictions)", "deleted run 'r1'"]
    assert [r["run"] for r in invoke.json(["runs"])] == ["r2"] and counts()["logits"] == 4  # r2's, untouched
    assert folder.parent.parent == store.artifact_root and store.artifact_root.is_dir()  # (r2's folder is there)
    assert error_line(invoke(["runs", "delete", "--run", "r1", "--yes"], ok=False)).startswith("Error: no run 'r1'")
    # a run no one typed (the default, or a config file's) is never the one deleted
    assert "name the run to delete with --run" in invoke(["runs", "delete", "--yes"], ok=False).stderr
    assert [r["run"] for r in invoke.json(["runs"])] == ["r2"]
    # the last run deleted: the kd-artifacts/STORE folder kd made for the store goes too, and kd-artifacts when empty
    (store.artifact_root / "r2").mkdir(exist_ok=True)
    invoke(["runs", "delete", "--run", "r2", "--yes"])
    assert not store.artifact_root.exists() and not store.artifact_root.parent.exists()


def test_runs_delete_dry_run_changes_nothing_not_even_a_killed_stage_and_says_what_the_real_one_does(store, db, tmp_path, invoke):
    """`kd runs delete --dry-run` ("change nothing") opened the store as a stage does, marking every
    stage a killed process left running failed: a killed clean's label edits (in any run) were reverted
    by a dry run. It changes nothing now, and judges such a stage as the real deletion will find it."""
    from synthetic import kill_9_inside_stage

    from kdstore.runs import _machine

    if _machine() is None:
        pytest.skip("no /proc boot id or pid namespace here: kd judges no stage's process")
    with stage_scope(store, run="r1", kind="teach", config={}):
        pass
    killed = int(kill_9_inside_stage(db, tmp_path, run="r", kind="clean", inside=(
        "    from kdstore import labels as lab\n"
        "    lab.apply(store, st.id, lab.parse_edits(store, ['1=drop']), reason='test')\n")))

    def state():
        with store.session() as s:
            return s.get(Stage, killed).status, s.get(Sample, 1).dropped

    assert state() == ("running", True)  # as the kill left it
    invoke.json(["runs", "delete", "--run", "r1", "--dry-run"])
    assert state() == ("running", True)
    dry = invoke.json(["runs", "delete", "--run", "r", "--dry-run"])
    assert state() == ("running", True)
    assert (dry["deleted"], dry["kept"], dry["run_deleted"]) == ([], [{"name": "clean", "kind": "clean", "label_edits": 1, "confirmations": 0, "rejects": 0}], False)
    done = invoke.json(["runs", "delete", "--run", "r", "--yes"])  # the real one marks it failed (its edit reverted) first
    assert (done["deleted"], done["kept"], done["run_deleted"]) == (dry["deleted"], dry["kept"], dry["run_deleted"])
    assert state() == ("failed", False)


def test_runs_delete_asks_after_saying_what_goes_with_the_stages(store, db):
    """At a terminal, `kd runs delete` asked "delete run 'r1' (teach)?" and said only once it was done
    that a student of another run had learned from that teacher, and that the model's export at kd
    export's default place (one a server may load) went too: the question now comes after them."""
    import pty

    from commands.train import _teacher_stages
    from kdstore.serving import FORMAT_VERSION, MANIFEST

    with stage_scope(store, run="r1", kind="teach", config={}) as st:
        (st.artifact_dir / "model").mkdir(parents=True)
        (st.artifact_dir / "model" / "weights.bin").write_bytes(b"x")
        sha = st.record_artifact(st.artifact_dir / "model")
        export = st.artifact_dir.parent / "export-teach-onnx"
    with stage_scope(store, run="r2", kind="distill", name="distill-bigru", config={"teacher_stages": _teacher_stages(store, ("r1",))}):
        pass
    export.mkdir()
    (export / MANIFEST).write_text(json.dumps({"format_version": FORMAT_VERSION, "run": "r1", "files": {},
                                               "stage": {"name": "teach", "artifact_sha256": sha}}), encoding="utf-8")

    def answered(answer: bytes) -> tuple[str, int]:
        main, terminal = pty.openpty()
        proc = subprocess.Popen([sys.executable, "-c", "from commands.cli import main; main()", "runs", "delete", "--run", "r1", "--db", db],
                                stdin=terminal, stdout=terminal, stderr=terminal)
        os.close(terminal)
        shown = b""
        try:
            while b"[y/N]" not in shown:
                chunk = os.read(main, 4096)
                assert chunk, shown
                shown += chunk
            os.write(main, answer)
            proc.wait(timeout=60)
            with contextlib.suppress(OSError):  # (the rest, once it has answered; EIO at the end on Linux)
                while chunk := os.read(main, 4096):
                    shown += chunk
        finally:
            proc.kill()
            os.close(main)
        return " ".join(shown.decode().split()), proc.returncode  # (the terminal's line breaks)

    asked, code = answered(b"n\n")
    assert "warning: r2/distill-bigru learned from r1/teach, which this would delete" in asked
    # the model folder that goes with it named too (a folder on disk, which no question mentioned)
    assert f"delete run 'r1' (teach; model folder {st.artifact_dir}; export {export})? [y/N]" in asked, asked
    assert code != 0 and export.is_dir() and [s.name for s in store.stages_of("r1")] == ["teach"]
    asked, code = answered(b"y\n")  # (said before the question as what would happen, and once done as what did)
    assert code == 0 and "learned from r1/teach, deleted now" in asked and f"deleted model folder {st.artifact_dir}" in asked, asked
    assert not store.run_exists("r1")


@pytest.mark.on_postgresql
def test_a_report_read_while_its_run_is_deleted_is_the_run_before_or_no_run(store, monkeypatch):
    """`kd report --run R` while `kd runs delete --run R` ran in another process: the stages read, then the
    deletion committed, then their figures read: a stage `succeeded` with no figures and its model
    `not found` beside a stage with all of its, as if the stage had stored nothing. It reads again now,
    and says the run is gone."""
    import kdstore.report as report_module
    from kdstore.deletion import delete_stages

    for name in ("teach", "distill-textcnn"):
        with stage_scope(store, run="r1", kind="teach" if name == "teach" else "distill", name=name, config={}) as st:
            store.add_metrics(st.id, "dev", {"accuracy": 0.9})
    summary, calls = report_module.stage_summary, []

    def deleted_meanwhile(stage):  # the other process's deletion commits between the stage list and the figures
        calls.append(stage.name)
        if len(calls) == 2:
            other = Store.open(store.url, create=False)
            try:
                delete_stages(other, "r1")
            finally:
                other.close()
        return summary(stage)

    monkeypatch.setattr(report_module, "stage_summary", deleted_meanwhile)
    with pytest.raises(KdError, match="no run 'r1'"):
        report_module.run_report(store, "r1")


@pytest.mark.on_postgresql
def test_runs_delete_never_deletes_label_edits_nor_a_running_stage(store, invoke, counts, error_line):
    invoke(["labels", "set", "--run", "r1", "1=neg"])
    with stage_scope(store, run="r1", kind="teach", config={}):
        before = counts()
        running = error_line(invoke(["runs", "delete", "--run", "r1", "--stage", "teach", "--yes"], ok=False))
        assert running.startswith("Error: stage 'teach' of run 'r1' is running (process ")
    line = error_line(invoke(["runs", "delete", "--run", "r1", "--yes"], ok=False))
    assert line == "Error: stage 'edit-1' of run 'r1' has 1 label edit that is not undone: run `kd labels undo --run r1 --stage edit-1` first"
    assert counts() == before
    invoke(["labels", "undo", "--run", "r1", "--stage", "edit-1"])
    out = invoke.json(["runs", "delete", "--run", "r1", "--yes"])
    assert [d["name"] for d in out["deleted"]] == ["teach"] and not out["run_deleted"]
    assert out["kept"] == [{"name": "edit-1", "kind": "clean", "label_edits": 1, "confirmations": 0, "rejects": 0}]
    history = invoke.json(["labels", "history", "1"])  # the audit trail still names the stage that made the edit
    assert history["edits"][0]["stage"] == "edit-1" and history["edits"][0]["reverted_at"]
    assert [s.name for s in store.stages_of("r1")] == ["edit-1"] and counts()["label_edits"] == before["label_edits"]


def test_runs_delete_names_every_stage_whose_edits_stand(store, invoke, counts, error_line):
    """A run with two clean stages whose edits stood was refused naming the first alone ("run `kd labels undo
    ... --stage edit-1` first"): that undo done, the next try was refused for the other one."""
    invoke(["labels", "set", "--run", "r1", "1=neg"])
    invoke(["labels", "set", "--run", "r1", "2=pos"])
    before = counts()
    line = error_line(invoke(["runs", "delete", "--run", "r1", "--yes"], ok=False))
    assert line == ("Error: stages 'edit-1' (1 label edit that is not undone), 'edit-2' (1 label edit that is not undone) "
                    "of run 'r1' have edits that stand: run `kd labels undo --run r1 --stage edit-2` and "
                    "`kd labels undo --run r1 --stage edit-1` first")
    assert counts() == before
    invoke(["labels", "undo", "--run", "r1", "--stage", "edit-2"])
    invoke(["labels", "undo", "--run", "r1", "--stage", "edit-1"])
    assert [k["name"] for k in invoke.json(["runs", "delete", "--run", "r1", "--yes"])["kept"]] == ["edit-1", "edit-2"]


def test_runs_delete_leaves_a_failed_stages_folder_to_the_model_there_now(db, invoke, write_file, tmp_path, monkeypatch):
    """A failed stage's files went when it failed: its folder, under a KD_ARTIFACTS two stores share,
    held the other store's model of the same run and stage names, which the deletion took with it."""
    monkeypatch.setenv("KD_ARTIFACTS", str(tmp_path / "shared"))
    write_file("train.tsv", "pos\ta\nneg\tb\n")
    other = tmp_path / "other.db"
    for target in (db, other):
        invoke(["ingest", "train.tsv"], db=target)
    mine = Store.open(db, create=False)
    with pytest.raises(KdError):
        with stage_scope(mine, run="r1", kind="teach", config={}) as st:
            (st.artifact_dir / "model").mkdir(parents=True)
            raise KdError("out of memory")
    mine.close()
    theirs = Store.open(str(other), create=False)
    with stage_scope(theirs, run="r1", kind="teach", config={}) as st:
        model = st.artifact_dir / "model"
        model.mkdir(parents=True)
        (model / "weights.bin").write_bytes(b"x")
        st.record_artifact(model)
    theirs.close()
    out = invoke.json(["runs", "delete", "--run", "r1", "--yes"])
    assert out["deleted"][0]["status"] == "failed" and out["run_deleted"]
    assert (model / "weights.bin").read_bytes() == b"x"
    assert invoke.json(["runs"], db=other)[0]["stages"][0]["artifact_path"] == str(model.resolve())


def test_runs_delete_refuses_a_model_a_running_teacher_fine_tunes(store, invoke, counts, error_line):
    """`kd teach --model pretrain:r1 --folds 5` loads that model again for each fold: deleting it meanwhile
    failed the teacher at its next fold."""
    with stage_scope(store, run="r1", kind="pretrain", config={}) as st:
        (st.artifact_dir / "model").mkdir(parents=True)
        st.record_artifact(st.artifact_dir / "model")
        model = st.artifact_dir / "model"
    before = counts()
    for config in ({"model": "pretrain:r1"}, {"model": str(model), "model_path": str(model)}):
        with stage_scope(store, run="r2", kind="teach", config=config, overwrite=True):
            line = error_line(invoke(["runs", "delete", "--run", "r1", "--yes"], ok=False))
            assert line == ("Error: stage 'teach' of run 'r2' is running on the model of stage 'pretrain' of run 'r1', "
                            "which this deletes: wait for it, then delete")
            assert model.is_dir()
    assert counts()["stages"] == before["stages"] + 1
    # a teacher marked running on another machine (a shared store) is taken as running: the error says how to clear it
    with stage_scope(store, run="r2", kind="teach", config={"model": "pretrain:r1"}, overwrite=True) as st:
        with store.engine.begin() as conn:
            conn.execute(update(Stage).where(Stage.id == st.id).values(host="gpu-box-7", process="4242:1:m"))
        line = error_line(invoke(["runs", "delete", "--run", "r1", "--yes"], ok=False))
        assert line == ("Error: stage 'teach' of run 'r2' is running on the model of stage 'pretrain' of run 'r1', which "
                        "this deletes: wait for it, then delete (marked running by process 4242 on gpu-box-7, which kd cannot check from here: if it "
                        "has ended, `kd runs delete --run r2 --stage teach` first)")
    invoke(["runs", "delete", "--run", "r1", "--yes"])  # its teacher done: the model may go
    assert not model.exists()


def test_runs_delete_of_a_teacher_a_running_student_reads_names_that_teacher(store, invoke, error_line):
    """A run's delete refused while another run's student read its teacher's logits, saying "the logits of a stage
    being deleted", where the --overwrite's refusal names the stage."""
    with stage_scope(store, run="r1", kind="teach", config={}) as st:
        teacher = st.id
    with stage_scope(store, run="r2", kind="distill", config={"teacher_stages": [{"run": "r1", "stage_id": teacher}]}):
        line = error_line(invoke(["runs", "delete", "--run", "r1", "--yes"], ok=False))
        assert line == ("Error: stage 'distill' of run 'r2' is running on the logits of stage 'teach' of run 'r1', "
                        "which this deletes: wait for it, then delete")


def test_runs_delete_refuses_a_model_a_running_predict_store_scores(store, invoke, counts, error_line):
    """`kd runs delete --stage s1` while `kd predict --store --model s1` scored the store deleted s1 and its folder:
    the predict, its model loaded, went on and recorded figures of a model deleted under it (or, still loading it,
    failed)."""
    with stage_scope(store, run="r1", kind="distill", name="s1", config={}) as st:
        (st.artifact_dir / "student").mkdir(parents=True)
        st.record_artifact(st.artifact_dir / "student")
        model = st.artifact_dir / "student"
    digest = _stage(store, "r1", "s1").artifact_sha256
    before = counts()
    with stage_scope(store, run="r1", kind="predict", name="predict-s1", config={"model_stage": "s1", "model_sha256": digest}):
        line = error_line(invoke(["runs", "delete", "--run", "r1", "--stage", "s1", "--yes"], ok=False))
        assert line == ("Error: stage 'predict-s1' of run 'r1' is running on the model of stage 's1' of run 'r1', "
                        "which this deletes: wait for it, then delete")
        assert model.is_dir()
    assert counts()["stages"] == before["stages"] + 1
    invoke(["runs", "delete", "--run", "r1", "--stage", "s1", "--yes"])  # its predictions stored: the model may go
    assert not model.exists()


def test_overwrite_refuses_a_model_a_running_teacher_fine_tunes(store, invoke, counts, error_line):
    """`kd pretrain --overwrite` moved the model away at once, which `kd teach --model pretrain:r1 --folds 5`
    loads again for each fold: its next fold failed ('no such directory'), or trained on the new model."""
    with stage_scope(store, run="r1", kind="pretrain", config={}) as st:
        (st.artifact_dir / "model").mkdir(parents=True)
        (st.artifact_dir / "model" / "weights.bin").write_bytes(b"x")
        st.record_artifact(st.artifact_dir / "model")
        model = st.artifact_dir / "model"
    before = counts()
    digest = _stage(store, "r1", "pretrain").artifact_sha256
    with stage_scope(store, run="r2", kind="teach", config={"model": "pretrain:r1", "model_path": str(model), "model_sha256": digest}):
        result = invoke(["pretrain", "--run", "r1", "--overwrite", "--layers", "1", "--hidden", "32",
                         "--max-len", "16", "--steps", "1", "--min-count", "1"], ok=False)
        assert error_line(result) == ("Error: stage 'teach' of run 'r2' is running on the model of stage 'pretrain' of run 'r1': "
                                      "wait for it, then replace it (or use another --run)")
        # refused before the warning that the replacement leaves r2/teach's figures to the old model: nothing is replaced
        assert "--overwrite replaces" not in result.stderr
        assert (model / "weights.bin").read_bytes() == b"x" and _stage(store, "r1", "pretrain").status == "succeeded"
    assert counts()["stages"] == before["stages"] + 1  # the teacher's alone


def test_logits_only_scores_for_a_teacher_deleted_or_being_replaced_meanwhile_are_one_line(store, invoke, counts):
    """`kd teach --logits-only` is no stage: `kd runs delete` (or an --overwrite's end) took its teacher as it
    scored, and its next chunk failed as "database error: FOREIGN KEY constraint failed"; while an
    --overwrite ran, its scores went to the parked teacher, deleted with it."""
    from kdstore.outputs import write_scores

    ids = store.samples().ids
    with stage_scope(store, run="r1", kind="teach", config={}) as old:
        pass
    with stage_scope(store, run="r1", kind="teach", config={}, overwrite=True):
        with pytest.raises(KdError, match=r"^the run's teacher is being replaced \(`kd teach --overwrite` is running\): "
                                          "its scores were not stored; score with the new one once it has ended$"):
            write_scores(store, old.id, ids[:2], _logits(2), missing_only=True)
    before = counts()
    assert before["logits"] == 0
    invoke(["runs", "delete", "--run", "r1", "--yes"])
    with pytest.raises(KdError, match=r"^the run's teacher was deleted meanwhile \(`kd runs delete`, or the end of a "
                                      r"`kd teach --overwrite` that replaced it\): its scores were not stored$"):
        write_scores(store, old.id, ids[2:], _logits(2), missing_only=True)
    assert counts()["logits"] == 0


def test_runs_delete_says_how_many_issues_a_deleted_review_decided_are_open_again(store, invoke):
    """Deleting a review reopens the issues it decided (its rejections go with it), as its undo does: said, not silent."""
    from sqlalchemy import update

    from kdstore.schema import LabelIssue
    from kdstore.store import bulk_insert

    with stage_scope(store, run="r1", kind="detect", config={}) as detection:
        with store.writer() as conn:
            bulk_insert(conn, LabelIssue.__table__, ("stage_id", "sample_id", "given_label_id", "suggested_label_id", "score", "methods", "status"),
                        [(detection.id, 1, 0, 1, 0.9, "cleanlab", "open"), (detection.id, 2, 1, 0, 0.8, "cleanlab", "open")])
    with stage_scope(store, run="r2", kind="clean", name="review", config={}) as review:
        with store.writer() as conn:  # a sheet rejected the first issue
            conn.execute(update(LabelIssue).where(LabelIssue.sample_id == 1).values(status="rejected", decided_stage_id=review.id))
    assert invoke.json(["runs", "delete", "--run", "r2", "--dry-run"])["reopened"] == 1
    text = invoke(["runs", "delete", "--run", "r2", "--yes"]).stdout
    assert "1 label issue it decided is open again (a review's rejections included)" in text
    with store.session() as s:
        assert sorted(s.execute(select(LabelIssue.sample_id, LabelIssue.status, LabelIssue.decided_stage_id)).all()) == [
            (1, "open", None), (2, "open", None)]
    assert "would delete r1/detect (detect, succeeded; 0 logits, 0 predictions, 2 label issues)" in invoke(
        ["runs", "delete", "--run", "r1", "--dry-run"]).stdout


def test_runs_delete_takes_a_stage_another_machine_marked_running_as_ended_and_says_so(store, invoke):
    """Only a process kd sees alive refuses (as for --overwrite): a stage marked running on a machine
    gone since (a container, a reboot) could never have been deleted."""
    from sqlalchemy import update

    with stage_scope(store, run="r1", kind="teach", config={}) as st:
        pass
    with store.writer() as conn:
        conn.execute(update(Stage).where(Stage.id == st.id).values(status="running", host="gpu-box-7", process="4242:1:?"))
    out = invoke(["runs", "delete", "--run", "r1", "--yes"])
    assert ("warning: stage 'teach' was marked running by process 4242 on gpu-box-7, which kd cannot check from here "
            "(another machine or container, or before a reboot): taken as ended") in out.stderr
    assert invoke.json(["runs"]) == []


@pytest.mark.on_postgresql
def test_a_stage_left_running_by_a_kd_before_0007_is_named_so(store, invoke):
    """A stage a kd from before store revision 0007 left `running` has no process on record: it was said to
    be "marked running by a process kd cannot check from here (another machine or container, or before a
    reboot)", and `kd runs delete` named "process ?", on the very machine that ran it."""
    import socket

    from sqlalchemy import update

    with stage_scope(store, run="r1", kind="teach", config={}) as st:
        pass
    with store.writer() as conn:
        conn.execute(update(Stage).where(Stage.id == st.id).values(status="running", host=socket.gethostname(), process=None))
    with pytest.raises(KdError, match=r"^stage 'teach' of run 'r1' is marked running by a kd from before store revision 0007 on .*, "
                                      r"which kd cannot check from here \(such a kd recorded no process: if none runs it now, it has "
                                      r"ended\), on .* UTC: pass --overwrite"):
        with stage_scope(store, run="r1", kind="teach", config={}):
            pass
    out = invoke(["runs", "delete", "--run", "r1", "--yes"])
    assert (f"warning: stage 'teach' was marked running by a kd from before store revision 0007 on {socket.gethostname()}, "
            "which kd cannot check from here (such a kd recorded no process: if none runs it now, it has ended): taken as ended") in out.stderr


def test_teacher_of_a_run_whose_students_learned_from_other_runs_names_those_runs(store, invoke, error_line):
    """`kd predict --run S --model teacher` (and `kd export`) where S's students learned from the teachers
    of runs A and B (`kd distill --run S --teacher-run A --teacher-run B`) said only that
    `kd teach --run S --model MODEL` makes one: training a new teacher, where the one wanted is A's. A run
    deleted since is not named."""
    for run in ("A", "B"):
        with stage_scope(store, run=run, kind="teach", config={}):
            pass
    with stage_scope(store, run="S", kind="distill", name="distill-textcnn", config={"teacher_runs": ["gone", "A", "B"]}):
        pass
    for args in (["predict", "--run", "S", "--model", "teacher"], ["export", "--run", "S", "--model", "teacher"],
                 # the teacher's stage name, as `kd runs` lists it, said no more than `kd teach --run S`
                 ["predict", "--run", "S", "--model", "teach"], ["export", "--run", "S", "--model", "teach"]):
        line = error_line(invoke(args, input="a\n", ok=False))
        assert "run 'S' has no succeeded 'teach' stage" in line and line.endswith(
            "; its students learned from the teachers of runs A, B (`--run A --model teacher`)"), line


def test_distill_in_a_run_whose_students_learned_from_another_runs_teacher_names_that_run(store, invoke, error_line):
    """`kd distill --run S --student bigru` (--teacher-run left out) where S's students learned from run A's
    teacher said only that `kd teach --run S --model MODEL` makes one: training a new teacher, where the one
    wanted is A's. A run named by a student but deleted since is not offered."""
    with stage_scope(store, run="A", kind="teach", config={}):
        pass
    with stage_scope(store, run="S", kind="distill", name="distill-textcnn", config={"teacher_runs": ["A", "gone"]}):
        pass
    line = error_line(invoke(["distill", "--run", "S", "--student", "bigru", "--epochs", "1"], ok=False))
    assert "run 'S' has no succeeded 'teach' stage" in line and line.endswith(
        "; its students learned from the teacher of run A (`--teacher-run A`)"), line


def test_compare_says_which_model_leads_each_figure(store, invoke):
    """`kd report --compare` set 15 figures side by side and left the user to find the best: it names the model
    that leads each (ties: both), in its table's last line and in each JSON row's ``leads``; test figures of
    models tested on unequal sets are not ranked, and it says why."""
    def model(run, kind, name, test, speed):
        with stage_scope(store, run=run, kind=kind, name=name, config={"student": "textcnn"} if kind == "distill" else {}) as st:
            store.add_metrics(st.id, "test", test)
            store.add_metrics(st.id, "all", speed)

    model("r1", "teach", "teach", {"accuracy": 0.8, "macro_f1": 0.7, "n": 10},
          {"latency_p50_ms": 9.0, "parameters": 1000, "speed_threads": 1})
    model("r1", "distill", "distill-textcnn", {"accuracy": 0.8, "macro_f1": 0.75, "n": 10},
          {"latency_p50_ms": 1.5, "parameters": 100, "speed_threads": 1})
    rows = invoke.json(["report", "--compare", "r1"])
    assert {r["stage"]: r["leads"] for r in rows} == {"teach": ["test_accuracy"],
                                                     "distill-textcnn": ["test_macro_f1", "test_accuracy", "latency_p50_ms", "parameters"]}
    out = invoke(["report", "--compare", "r1"]).stdout
    assert out.splitlines()[-4:] == ["best test_macro_f1: r1/distill-textcnn (0.7500)", "best test_accuracy: r1/teach and r1/distill-textcnn (0.8000)",
                                     "best latency_p50_ms: r1/distill-textcnn (1.5000)", "best parameters: r1/distill-textcnn (100)"], out
    assert "leads" not in out  # (lines, not a column)
    # a model tested on fewer samples (a clean dropped some): its test figures race no one
    model("r2", "distill", "distill-textcnn", {"accuracy": 0.9, "macro_f1": 0.9, "n": 8},
          {"latency_p50_ms": 2.0, "parameters": 100, "speed_threads": 1})
    rows = invoke.json(["report", "--compare", "r1", "r2"])
    assert {(r["run"], r["stage"]): r["leads"] for r in rows} == {
        ("r1", "teach"): [], ("r1", "distill-textcnn"): ["latency_p50_ms", "parameters"], ("r2", "distill-textcnn"): ["parameters"]}
    out = " ".join(invoke(["report", "--compare", "r1", "r2"]).stdout.split())
    assert "test figures not ranked: measured on 8, 10 test samples (test_n)" in out, out


def test_compare_does_not_rank_test_figures_measured_against_other_test_labels(db, invoke, write_file):
    """Two students answering every test text alike, one scored before `kd labels set` corrected two test labels and
    one after: the same test_n, and the second "led" test accuracy 1.0 to 0.5, a race of label sets, not of models.
    Models scored against the same test labels are still ranked."""
    from kdstore.outputs import store_outputs
    from synthetic import edit_labels

    write_file("train.tsv", "pos\ta\nneg\tb\n")
    write_file("test.tsv", "pos\tt1\npos\tt2\nneg\tt3\nneg\tt4\n")  # ids 3..6
    invoke(["ingest", "train.tsv"])
    invoke(["ingest", "test.tsv", "--split", "test"])
    store = Store.open(db, create=False)
    try:
        names = store.class_names()

        def student(run):  # answers pos to every text
            with stage_scope(store, run=run, kind="distill", name="distill-textcnn", config={"student": "textcnn"}) as st:
                samples = store.samples(include_dropped=True)
                logits = np.tile(np.eye(len(names), dtype=np.float32)[names.index("pos")], (len(samples), 1))
                store_outputs(store, st.id, samples, logits, names)

        student("r1")
        edit_labels(db, "fix", "edit-1", {5: "pos", 6: "pos"})  # t3, t4 were wrong
        student("r2")
        student("r3")
    finally:
        store.close()
    rows = invoke.json(["report", "--compare", "r1", "r2"])
    assert [(r["test_n"], r["test_accuracy"]) for r in rows] == [(4, 0.5), (4, 1.0)]
    assert not any(f.startswith("test_") for r in rows for f in r["leads"]), rows
    assert rows[0]["test_digest"] != rows[1]["test_digest"] and None not in (rows[0]["test_digest"], rows[1]["test_digest"])  # (--json says why)
    out = " ".join(invoke(["report", "--compare", "r1", "r2"]).stdout.split())
    assert "best test_" not in out and "test figures not ranked: measured against other test labels" in out, out
    # scored against the same labels: ranked (a tie)
    rows = invoke.json(["report", "--compare", "r2", "r3"])
    assert all({"test_macro_f1", "test_accuracy"} <= set(r["leads"]) for r in rows), rows
    assert rows[0]["test_digest"] == rows[1]["test_digest"]
    assert "test_digest" not in invoke(["report", "--compare", "r2", "r3"]).stdout  # (for a script: --json)


def test_runs_delete_keeps_a_labels_set_that_only_confirmed_labels(store, invoke, write_file):
    """`kd labels set --run r1 1=pos` of a pos sample records no edit, only its pair (a person's confirmation, which
    `kd labels history` lists and `kd labels clean` honours), and has nothing to undo: `kd runs delete --run r1`
    deleted its stage and run, the confirmation gone from the history and from what clean leaves alone."""
    invoke(["labels", "set", "--run", "r1", "1=pos"])
    assert len(invoke.json(["labels", "history", "1"])["confirmed"]) == 1
    out = invoke.json(["runs", "delete", "--run", "r1", "--yes"])
    assert out["kept"] == [{"name": "edit-1", "kind": "clean", "label_edits": 0, "confirmations": 1, "rejects": 0}] and not out["run_deleted"]
    assert [s.name for s in store.stages_of("r1")] == ["edit-1"]
    confirmed = invoke.json(["labels", "history", "1"])["confirmed"]
    assert [(c["run"], c["stage"], c["set"]) for c in confirmed] == [("r1", "edit-1", "pos")]
    line = invoke(["runs", "delete", "--run", "r1", "--yes"]).output.strip()
    assert line == "kept r1/edit-1 (clean): its 1 label confirmed by `kd labels set` (no edit; `kd labels clean` leaves it alone) is on record"


def test_runs_delete_does_not_say_it_deleted_a_folder_it_could_not_remove(store, invoke, monkeypatch):
    """A model folder kd cannot remove (a read-only KD_ARTIFACTS disk) was warned of, then listed as
    `deleted model folder X` (and as `folder` in --json) all the same."""
    import errno

    import kdstore.deletion

    with stage_scope(store, run="r1", kind="teach", config={}) as st:
        (st.artifact_dir / "w.bin").write_bytes(b"x")
        st.record_artifact(st.artifact_dir)
    folder = pathlib.Path(_stage(store, "r1", "teach").artifact_path)

    def read_only(path, *a, **kw):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(kdstore.deletion.shutil, "rmtree", read_only)
    result = invoke(["runs", "delete", "--run", "r1", "--yes"])
    assert folder.is_dir()
    assert f"deleted model folder {folder}" not in result.stdout
    assert f"could not remove {folder}: Read-only file system" in result.stderr
    assert "delete it yourself" in result.stderr  # (the fix: a stage trained there again is refused until it goes)


def test_a_stage_failing_on_a_full_disk_frees_its_partial_files_and_is_recorded_failed(store, monkeypatch):
    """A student whose save filled the disk left its half-written model there; recording the failure then
    failed too ("database or disk is full", the partial file taking the space), so the stage stayed
    `running` and the half-written file stayed. Its partial files go first, then the failure is recorded."""
    import sqlite3

    import kdstore.runs

    real_finish = kdstore.runs._finish
    partial: list[pathlib.Path] = []

    def finish(store_, stage_id, status, error):  # (the store's disk, full while the partial file is on it)
        if status == "failed" and partial and partial[0].exists():
            raise sqlite3.OperationalError("database or disk is full")
        return real_finish(store_, stage_id, status, error)

    monkeypatch.setattr(kdstore.runs, "_finish", finish)
    with pytest.raises(OSError, match="No space left"):
        with stage_scope(store, run="r1", kind="distill", config={}) as st:
            partial.append(st.artifact_dir / "student.pt")
            partial[0].write_bytes(b"half")
            raise OSError(28, "No space left on device")
    assert not partial[0].exists()
    stage = _stage(store, "r1", "distill")
    assert stage.status == "failed" and "No space left" in stage.error
