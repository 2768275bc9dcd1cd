"""``kd teach --resume``: a teacher killed mid-training goes on from its last finished epoch (or fold)
and ends with the very model, logits and figures of a run that was never stopped (CPU, one thread)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select
from synthetic import corpus_files, edit_labels, kd, quick_speed_figures, tiny_bert_for

import kdstore.teacher
from kdstore.schema import Metric
from kdstore.store import Store

TEACH = ("--lr", "2e-3", "--batch-size", "8", "--max-len", "32")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    return corpus_files(tmp_path_factory.mktemp("corpus"), 0, pool_per_class=5)


@pytest.fixture(scope="module")
def tiny_model(corpus, tmp_path_factory) -> Path:
    return tiny_bert_for(corpus, tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(autouse=True)
def _quick_speed(monkeypatch) -> None:
    quick_speed_figures(monkeypatch)


def _store(folder: Path, corpus: dict[str, Path]) -> str:
    db = str(folder / "kd.db")
    for split, path in corpus.items():
        kd("ingest", str(path), "--split", split, "--db", db)
    return db


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


def _ctrl_c_at(monkeypatch, module, name: str, call: int) -> None:
    """A Ctrl-C at the ``call``-th call of ``module.name``."""
    real, calls = getattr(module, name), []

    def counted(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)


def _interrupted_at(monkeypatch, call: int) -> None:
    """A Ctrl-C as the ``call``-th epoch of the whole stage (every fold's counted) draws its batches."""
    _ctrl_c_at(monkeypatch, kdstore.teacher, "bucketed_batches", call)


def _step_rows(store: Store, stage_id: int) -> list:
    """A stage's per-step (per-epoch) figures, sorted, to 6 decimals."""
    with store.session() as s:
        return sorted((m.split, m.name, m.step, round(m.value, 6)) for m in s.scalars(select(Metric).where(Metric.stage_id == stage_id))
                      if m.step is not None)


def _outcome(db: str, run: str) -> tuple[np.ndarray, np.ndarray, list, dict]:
    """The teacher's logits (by sample id), its per-epoch figures, and its folds."""
    store = Store.open(db)
    try:
        stage = store.find_stage(run, "teach")
        ids, logits = store.read_logits(stage.id)
        return ids, logits, _step_rows(store, stage.id), store.read_folds(stage.id)
    finally:
        store.close()


def _pretraining_interrupted_at(monkeypatch, step: int) -> None:
    """A Ctrl-C as the pre-training masks the batch of its ``step``-th step."""
    import kdstore.pretrain

    _ctrl_c_at(monkeypatch, kdstore.pretrain, "mask_tokens", step)


def _saved_epoch(db: str) -> int:
    """The epoch the saved state's meta.json names (0: none yet); written after state.pt."""
    try:
        current = json.loads((_state(db) / "meta.json").read_text(encoding="utf-8"))["current"]
    except (OSError, ValueError):  # (not there yet, or being replaced)
        return 0
    return current["epoch"] if current else 0


def _killed_after_a_save(db: str, model: Path, folder: Path, *more: str) -> None:
    """A 60-epoch teacher of run r (with ``more`` options) in a child process, killed with SIGKILL (as an
    out-of-memory killer would) once an epoch is saved."""
    env = {**os.environ, "KD_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", "from commands.cli import main; main()", "teach", "--run", "r", "--model", str(model),
                             "--epochs", "60", "--patience", "60", *more, *TEACH, "--db", db], env=env, cwd=folder,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not _saved_epoch(db):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()


def _state(db: str, run: str = "r") -> Path:
    return Path(db).parent / "kd-artifacts" / Path(db).name / run / "teach~resume"


@pytest.mark.parametrize("folds, stop_at, point", [
    (0, 3, "after epoch 2 of 3"),
    (2, 4, "fold 2 of 2, after epoch 1 of 2"),
])
def test_resume_ends_as_a_run_never_stopped(tmp_path, corpus, tiny_model, monkeypatch, folds, stop_at, point):
    epochs = "3" if not folds else "2"
    args = ("teach", "--model", str(tiny_model), "--epochs", epochs, "--patience", "3", "--folds", str(folds), *TEACH)
    whole = _store(_folder(tmp_path / "whole"), corpus)
    kd(*args, "--run", "r", "--db", whole)
    assert not _state(whole).exists()  # (a stage that succeeded leaves nothing to resume)

    db = _store(_folder(tmp_path / "cut"), corpus)
    with monkeypatch.context() as mp:
        _interrupted_at(mp, stop_at)
        stopped = kd(*args, "--run", "r", "--db", db, ok=False)
    assert "`kd teach --run r --resume` continues it" in stopped.output and point in stopped.output, stopped.output
    assert (_state(db) / "meta.json").is_file()
    # a new teacher would throw the saved epochs away: refused, saying how to go on or start over
    again = kd(*args, "--run", "r", "--db", db, ok=False)
    assert "--resume" in again.output and "--overwrite" in again.output and point in again.output, again.output
    # --resume takes the options the teacher was started with; another value is refused
    other = kd("teach", "--run", "r", "--resume", "--epochs", "5", "--db", db, ok=False)
    assert "--epochs" in other.output and "started with" in other.output

    out = json.loads(kd("teach", "--run", "r", "--resume", "--db", db, "--json").stdout)
    assert out["status"] == "succeeded"
    assert not _state(db).exists()
    ids, logits, rows, fold_of = _outcome(db, "r")
    ids0, logits0, rows0, fold_of0 = _outcome(whole, "r")
    np.testing.assert_array_equal(ids, ids0)
    np.testing.assert_allclose(logits, logits0, atol=1e-5)
    assert rows == rows0 and len(rows) >= 2 * int(epochs) * max(folds, 1)  # every epoch's train loss and dev figures
    assert fold_of == fold_of0
    store = Store.open(db)
    try:
        stage = store.find_stage("r", "teach")
        assert stage.config["resumed_from"] == point and stage.config["epochs"] == int(epochs)
    finally:
        store.close()


def test_resume_is_refused_where_the_rows_changed_and_overwrite_starts_over(tmp_path, corpus, tiny_model, monkeypatch):
    db = _store(tmp_path, corpus)
    args = ("teach", "--run", "r", "--model", str(tiny_model), "--epochs", "3", *TEACH, "--db", db)
    nothing = kd("teach", "--run", "r", "--resume", "--db", db, ok=False)
    assert "no saved training state" in nothing.output
    with monkeypatch.context() as mp:
        _interrupted_at(mp, 2)
        kd(*args, ok=False)
    saved = sorted(p.name for p in _state(db).iterdir())
    assert saved == ["fit-model"] or "state.pt" in saved
    store = Store.open(db)
    try:
        first_train = int(store.samples(splits=["train"]).ids[0])
    finally:
        store.close()
    edit_labels(db, "r", "fix", {first_train: "drop"})
    changed = kd("teach", "--run", "r", "--resume", "--db", db, ok=False)
    assert "the train rows or their labels" in changed.output and "--overwrite" in changed.output, changed.output
    assert (_state(db) / "state.pt").is_file()  # (kept: a refusal changes nothing)
    over = kd(*args, "--overwrite")
    assert "discarding the saved training state" in over.stderr and "after epoch 1 of 3" in over.stderr
    assert not _state(db).exists()


def test_a_state_that_cannot_be_saved_is_warned_of_and_the_teacher_trains(tmp_path, corpus, tiny_model):
    db = _store(tmp_path, corpus)
    _state(db).parent.mkdir(parents=True)
    _state(db).write_text("in the way", encoding="utf-8")  # (a file where the folder goes)
    out = kd("teach", "--run", "r", "--model", str(tiny_model), "--epochs", "2", *TEACH, "--db", db)
    assert "cannot save the training state" in out.stderr
    assert _state(db).read_text(encoding="utf-8") == "in the way"


def test_runs_delete_removes_a_failed_teachers_saved_state(tmp_path, corpus, tiny_model, monkeypatch):
    db = _store(tmp_path, corpus)
    with monkeypatch.context() as mp:
        _interrupted_at(mp, 2)
        kd("teach", "--run", "r", "--model", str(tiny_model), "--epochs", "3", *TEACH, "--db", db, ok=False)
    assert _state(db).is_dir()
    listed = json.loads(kd("runs", "--json", "--db", db).stdout)[0]["stages"][0]
    assert listed["status"] == "failed" and listed["resumable"] == "after epoch 1 of 3"
    assert "(resumable: kd teach --run r --resume)" in kd("runs", "--db", db).stdout
    deleted = kd("runs", "delete", "--run", "r", "--yes", "--db", db)
    assert f"deleted saved training state {_state(db)}" in deleted.stdout
    assert not _state(db).exists()


def test_a_teacher_killed_outright_resumes(tmp_path, corpus, tiny_model):
    """kill -9 (an out-of-memory kill) after an epoch was saved: the next command marks the stage
    failed, and --resume trains the epochs left."""
    db = _store(tmp_path, corpus)
    _killed_after_a_save(db, tiny_model, tmp_path)
    assert 1 <= _saved_epoch(db) < 60
    out = json.loads(kd("teach", "--run", "r", "--resume", "--db", db, "--json").stdout)
    assert out["status"] == "succeeded"
    store = Store.open(db)
    try:
        stage = store.find_stage("r", "teach")
        with store.session() as s:
            epochs = sorted({m.step for m in s.scalars(select(Metric).where(Metric.stage_id == stage.id, Metric.split == "train",
                                                                               Metric.name == "loss"))})
        assert epochs == list(range(1, 61))  # the killed run's epochs recorded again, then the rest
    finally:
        store.close()


def test_a_teacher_resumed_twice_records_each_figure_once(tmp_path, corpus, tiny_model, monkeypatch):
    """Killed, resumed, killed again and resumed: the stage holds the figures of a run never stopped, each
    once (a resume recorded again the fit's texts cut to --max-len and its class weights, which the saved
    state's rows had already replayed: twice after one resume, three times after two)."""
    args = ("teach", "--model", str(tiny_model), "--epochs", "4", "--class-weight", "balanced", *TEACH)
    whole = _store(_folder(tmp_path / "whole"), corpus)
    kd(*args, "--run", "r", "--db", whole)
    db = _store(_folder(tmp_path / "cut"), corpus)
    with monkeypatch.context() as mp:
        _interrupted_at(mp, 2)
        kd(*args, "--run", "r", "--db", db, ok=False)
    with monkeypatch.context() as mp:
        _interrupted_at(mp, 2)  # (the resumed run's second epoch, the stage's third)
        again = kd("teach", "--run", "r", "--resume", "--db", db, ok=False)
    assert "after epoch 2 of 4" in again.output, again.output
    kd("teach", "--run", "r", "--resume", "--db", db)

    def figures(path: str) -> list:
        store = Store.open(path)
        try:
            stage = store.find_stage("r", "teach")
            with store.session() as s:  # (names and steps: the seconds and speeds differ from run to run)
                return sorted((m.split, m.name, -1 if m.step is None else m.step)
                              for m in s.scalars(select(Metric).where(Metric.stage_id == stage.id)))
        finally:
            store.close()

    assert figures(db) == figures(whole)
    _, logits, rows, _ = _outcome(db, "r")
    _, logits0, rows0, _ = _outcome(whole, "r")
    np.testing.assert_allclose(logits, logits0, atol=1e-5)
    assert rows == rows0


def test_a_failed_replacement_resumes_in_the_place_of_the_teacher_that_stands(tmp_path, corpus, tiny_model, monkeypatch):
    db = _store(tmp_path, corpus)
    args = ("teach", "--run", "r", "--model", str(tiny_model), "--epochs", "3", *TEACH, "--db", db)
    kd(*args)
    with monkeypatch.context() as mp:
        _interrupted_at(mp, 2)
        failed = kd(*args, "--overwrite", ok=False)
    assert "`kd teach --run r --resume --overwrite` continues it" in failed.output, failed.output
    assert "(resumable: kd teach --run r --resume --overwrite)" in kd("runs", "--db", db).stdout
    listed = [st for st in json.loads(kd("runs", "--json", "--db", db).stdout)[0]["stages"] if st["resumable"]]
    assert [st["resume"] for st in listed] == ["kd teach --run r --resume --overwrite"]  # (the command, for a script)
    plain = kd("teach", "--run", "r", "--resume", "--db", db, ok=False)
    assert "`kd teach --run r --resume --overwrite` continues that one" in plain.output, plain.output
    again = kd(*args, ok=False)  # (a plain teach: "pass --overwrite" would discard the saved state)
    assert "`kd teach --run r --resume --overwrite` continues it; pass --overwrite to start over" in again.output, again.output
    kd("teach", "--run", "r", "--resume", "--overwrite", "--db", db)
    assert not _state(db).exists()
    assert [(st["name"], st["status"]) for st in json.loads(kd("runs", "--json", "--db", db).stdout)[0]["stages"]] == [("teach", "succeeded")]


def test_resume_goes_on_from_the_epoch_state_pt_holds_where_meta_json_is_behind(tmp_path, corpus, tiny_model, monkeypatch):
    """A kill between writing state.pt and meta.json leaves meta.json an epoch behind: the resume takes the
    epoch state.pt holds, as a run never stopped would have gone on."""
    args = ("teach", "--model", str(tiny_model), "--epochs", "3", *TEACH)
    whole = _store(_folder(tmp_path / "whole"), corpus)
    kd(*args, "--run", "r", "--db", whole)
    db = _store(_folder(tmp_path / "cut"), corpus)
    with monkeypatch.context() as mp:
        _interrupted_at(mp, 3)
        kd(*args, "--run", "r", "--db", db, ok=False)
    meta = json.loads((_state(db) / "meta.json").read_text(encoding="utf-8"))
    meta["current"]["epoch"] = 1  # (as if killed before meta.json said epoch 2)
    (_state(db) / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    kd("teach", "--run", "r", "--resume", "--db", db)
    np.testing.assert_allclose(_outcome(db, "r")[1], _outcome(whole, "r")[1], atol=1e-5)
    assert _outcome(db, "r")[2] == _outcome(whole, "r")[2]


def test_stores_sharing_kd_artifacts_keep_their_own_saved_states(tmp_path, corpus, tiny_model, monkeypatch):
    monkeypatch.setenv("KD_ARTIFACTS", str(tmp_path / "shared"))
    a, b = _store(_folder(tmp_path / "a"), corpus), _store(_folder(tmp_path / "b"), corpus)
    args = ("teach", "--run", "r", "--model", str(tiny_model), "--epochs", "3", *TEACH)
    with monkeypatch.context() as mp:
        _interrupted_at(mp, 2)
        kd(*args, "--db", a, ok=False)
    state = tmp_path / "shared" / "r" / "teach~resume"
    assert (state / "state.pt").is_file()
    # store b's teacher of a run of the same name neither resumes nor discards store a's state
    assert "no saved training state" in kd("teach", "--run", "r", "--resume", "--db", b, ok=False).output
    other = kd(*args, "--db", b, ok=False)
    assert "another store" in other.output and "KD_ARTIFACTS" in other.output, other.output
    kd("runs", "delete", "--run", "r", "--yes", "--db", b)
    assert (state / "state.pt").is_file()
    kd("teach", "--run", "r", "--resume", "--db", a)
    assert not state.exists()


def test_a_relative_model_folder_resumes_from_another_working_directory(tmp_path, corpus, tiny_model, monkeypatch):
    """A teacher started with --model ./bert (relative) is resumed by a job whose working directory is
    another: --resume loads the folder it started from, not the typed path read from the new directory."""
    db = _store(_folder(tmp_path / "store"), corpus)
    jobs = _folder(tmp_path / "jobs")
    (jobs / "bert").symlink_to(tiny_model)
    monkeypatch.chdir(jobs)
    args = ("teach", "--run", "r", "--model", "bert", "--epochs", "3", "--class-weight", "balanced", *TEACH, "--db", db)
    with monkeypatch.context() as mp:
        _interrupted_at(mp, 3)
        kd(*args, ok=False)
    monkeypatch.chdir(tmp_path)
    out = json.loads(kd("teach", "--run", "r", "--resume", "--db", db, "--json").stdout)
    assert out["status"] == "succeeded"
    store = Store.open(db)
    try:
        stage = store.find_stage("r", "teach")
        assert stage.config["model"] == "bert" and stage.config["resumed_from"] == "after epoch 2 of 3"
        with store.session() as s:  # the figures recorded once each: none of the fit's stepless rows twice
            names = [(m.split, m.name) for m in s.scalars(select(Metric).where(Metric.stage_id == stage.id, Metric.step.is_(None)))]
        assert len(names) == len(set(names)), sorted(names)
    finally:
        store.close()


def _pretrained(db: str, run: str = "r") -> dict:
    """The pre-trained model's weights, and its stage's per-step figures."""
    from safetensors.torch import load_file

    store = Store.open(db)
    try:
        stage = store.find_stage(run, "pretrain")
        return {"weights": load_file(str(Path(stage.artifact_path) / "model.safetensors")), "rows": _step_rows(store, stage.id),
                "config": stage.config}
    finally:
        store.close()


@pytest.mark.parametrize("objective", ["mlm", "electra"])
def test_pretrain_resume_ends_as_a_run_never_stopped(tmp_path, corpus, monkeypatch, objective):
    """Saved at every 50-step figure (SAVE_EVERY_S 0), stopped at step 130 of 200, resumed: the very model
    and figures of a run never stopped (--steps: not clock-bound)."""
    import kdstore.pretrain

    monkeypatch.setattr(kdstore.pretrain, "SAVE_EVERY_S", 0.0)
    args = ("pretrain", "--run", "r", "--layers", "1", "--hidden", "32", "--heads", "2", "--steps", "200", "--max-len", "32",
            "--batch-size", "8", "--objective", objective, *(["--no-wwm"] if objective == "mlm" else []))
    whole = _store(_folder(tmp_path / "whole"), corpus)
    kd(*args, "--db", whole)
    db = _store(_folder(tmp_path / "cut"), corpus)
    with monkeypatch.context() as mp:
        _pretraining_interrupted_at(mp, 130)
        stopped = kd(*args, "--db", db, ok=False)
    assert "`kd pretrain --run r --resume` continues it" in stopped.output and "after step 100 of 200" in stopped.output, stopped.output
    state = Path(db).parent / "kd-artifacts" / Path(db).name / "r" / "pretrain~resume"
    assert (state / "state.pt").is_file()
    assert "(resumable: kd pretrain --run r --resume)" in kd("runs", "--db", db).stdout
    assert "--resume" in kd(*args, "--db", db, ok=False).output  # (a plain rerun would discard it)
    assert "--steps" in kd("pretrain", "--run", "r", "--resume", "--steps", "300", "--db", db, ok=False).output
    kd("pretrain", "--run", "r", "--resume", "--db", db)
    assert not state.exists()
    got, want = _pretrained(db), _pretrained(whole)
    assert got["rows"] == want["rows"] and len(want["rows"]) >= 4
    assert got["weights"].keys() == want["weights"].keys()
    for name, tensor in want["weights"].items():
        np.testing.assert_allclose(got["weights"][name].numpy(), tensor.numpy(), atol=1e-5, err_msg=name)
    assert got["config"]["resumed_from"] == "after step 100 of 200"
    kd("teach", "--run", "r", "--model", "pretrain:r", "--epochs", "1", *TEACH, "--db", db)  # (what it is for)


def test_pretrain_resume_refuses_a_corpus_read_from_standard_input(tmp_path, corpus, monkeypatch):
    import kdstore.pretrain

    monkeypatch.setattr(kdstore.pretrain, "SAVE_EVERY_S", 0.0)
    db = _store(tmp_path, corpus)
    with monkeypatch.context() as mp:
        _pretraining_interrupted_at(mp, 60)
        kd("pretrain", "--run", "r", "--layers", "1", "--hidden", "32", "--heads", "2", "--steps", "100", "--max-len", "32", "--no-wwm",
           "--corpus", "-", "--db", db, input="外面的新闻文本一行\n另一行新闻文本\n" * 20, ok=False)
    refused = kd("pretrain", "--run", "r", "--resume", "--db", db, ok=False)
    assert "--corpus -" in refused.output and "standard input" in refused.output and "--overwrite" in refused.output, refused.output


def test_pretrain_resume_from_a_save_at_the_end_of_a_pass(tmp_path, corpus, monkeypatch):
    """A store smaller than --batch-size: one batch a pass, so every save lands at the end of a pass
    (position == the pass's batches). The resumed run skipped every batch of every pass from then on, for
    ever (a CPU at 100%, no step taken); it goes on to the very model of a run never stopped."""
    import kdstore.pretrain

    monkeypatch.setattr(kdstore.pretrain, "SAVE_EVERY_S", 0.0)
    args = ("pretrain", "--run", "r", "--layers", "1", "--hidden", "32", "--heads", "2", "--steps", "150", "--max-len", "32",
            "--batch-size", "256", "--no-wwm")
    whole = _store(_folder(tmp_path / "whole"), corpus)
    kd(*args, "--db", whole)
    db = _store(_folder(tmp_path / "cut"), corpus)
    real_batches, passes = kdstore.pretrain.bucketed_batches, []

    def batches(*a, **k):
        passes.append(1)
        assert len(passes) < 1000, "the resumed run draws pass after pass and trains on none"
        return real_batches(*a, **k)

    with monkeypatch.context() as mp:
        _pretraining_interrupted_at(mp, 70)
        assert "after step 50 of 150" in kd(*args, "--db", db, ok=False).output
    with monkeypatch.context() as mp:
        mp.setattr(kdstore.pretrain, "bucketed_batches", batches)
        kd("pretrain", "--run", "r", "--resume", "--db", db)
    got, want = _pretrained(db), _pretrained(whole)
    assert got["rows"] == want["rows"] and len(want["rows"]) == 3
    for name, tensor in want["weights"].items():
        np.testing.assert_allclose(got["weights"][name].numpy(), tensor.numpy(), atol=1e-5, err_msg=name)


def test_a_pretraining_that_learned_nothing_is_not_offered_a_resume(tmp_path, corpus, monkeypatch):
    """A pre-training failed for a loss no better than the frequencies' (or collapsed, or diverged) was told
    "`kd pretrain --run r --resume` continues it", beside "check --lr": a resume, which takes no --lr, ran
    to the very same failure (and, saved at the end of a pass, never ended). The state goes with the failure."""
    import kdstore.pretrain

    monkeypatch.setattr(kdstore.pretrain, "SAVE_EVERY_S", 0.0)
    db = _store(tmp_path, corpus)
    with monkeypatch.context() as mp:
        mp.setattr(kdstore.pretrain, "learned_nothing", lambda *a, **k: True)
        failed = kd("pretrain", "--run", "r", "--layers", "1", "--hidden", "32", "--heads", "2", "--steps", "60", "--max-len", "32",
                    "--batch-size", "8", "--no-wwm", "--db", db, ok=False)
    assert "no better than predicting each character by its frequency" in failed.output and "--resume" not in failed.output, failed.output
    assert not (Path(db).parent / "kd-artifacts" / Path(db).name / "r" / "pretrain~resume").exists()
    assert "resumable" not in kd("runs", "--db", db).stdout
    kd("pretrain", "--run", "r", "--layers", "1", "--hidden", "32", "--heads", "2", "--steps", "2", "--max-len", "32", "--db", db)


def test_a_teacher_that_diverged_with_no_epoch_to_keep_is_not_offered_a_resume(tmp_path, corpus, tiny_model, monkeypatch):
    """Trained on dev too (no epoch judged), diverged in epoch 2: the stage fails, and a --resume, at the same
    --lr, would only diverge again: its saved state goes, and the error offers none."""
    import kdstore.torchutil

    db = _store(tmp_path, corpus)
    calls = []
    monkeypatch.setattr(kdstore.torchutil, "nonfinite_weight", lambda module: calls.append(1) or ("w" if len(calls) >= 2 else None))
    out = kd("teach", "--run", "r", "--model", str(tiny_model), "--epochs", "3", "--split", "train", "--split", "dev", *TEACH,
             "--db", db, ok=False)
    assert "training diverged in epoch 2" in out.output and "--resume" not in out.output, out.output
    assert not _state(db).exists()
    assert "resumable" not in kd("runs", "--db", db).stdout


def test_runs_delete_of_a_failed_pretraining_names_its_state_as_kd_pretrain_resume_s(tmp_path, corpus, monkeypatch):
    """`kd runs delete --stage pretrain` removes RUN/pretrain~resume and says so: it said "(kd teach --resume's)"."""
    import kdstore.pretrain

    monkeypatch.setattr(kdstore.pretrain, "SAVE_EVERY_S", 0.0)
    db = _store(tmp_path, corpus)
    with monkeypatch.context() as mp:
        _pretraining_interrupted_at(mp, 60)
        kd("pretrain", "--run", "r", "--layers", "1", "--hidden", "32", "--heads", "2", "--steps", "100", "--max-len", "32", "--no-wwm",
           "--db", db, ok=False)
    state = Path(db).parent / "kd-artifacts" / Path(db).name / "r" / "pretrain~resume"
    assert (state / "state.pt").is_file()
    deleted = kd("runs", "delete", "--run", "r", "--stage", "pretrain", "--yes", "--db", db)
    assert f"deleted saved training state {state} (kd pretrain --resume's)" in deleted.stdout, deleted.stdout
    assert not state.exists()


def test_pretrain_resume_names_what_changed_the_store_or_a_corpus_file(tmp_path, corpus, monkeypatch):
    import kdstore.pretrain

    monkeypatch.setattr(kdstore.pretrain, "SAVE_EVERY_S", 0.0)
    db = _store(tmp_path, corpus)
    news = tmp_path / "news.txt"
    news.write_text("外面的新闻文本一行\n另一行新闻文本\n" * 20, encoding="utf-8")
    with monkeypatch.context() as mp:
        _pretraining_interrupted_at(mp, 60)
        kd("pretrain", "--run", "r", "--layers", "1", "--hidden", "32", "--heads", "2", "--steps", "100", "--max-len", "32", "--no-wwm",
           "--corpus", str(news), "--db", db, ok=False)
    news.write_text("外面的新闻文本一行\n" * 40, encoding="utf-8")
    refused = kd("pretrain", "--run", "r", "--resume", "--db", db, ok=False)
    assert "the texts of its --corpus files changed since" in refused.output and "store's texts" not in refused.output, refused.output


def test_a_server_stores_teacher_resumes_from_another_working_directory(tmp_path, corpus, tiny_model, monkeypatch, pg_server):
    """A PostgreSQL store keeps its models in the working directory's kd-artifacts/DB@HOST: a teacher killed
    in one directory is resumed by a job in another (kd runs marks it there too), not told it saved nothing."""
    url = pg_server.create()
    try:
        for split, path in corpus.items():
            kd("ingest", str(path), "--split", split, "--db", url)
        first, second = _folder(tmp_path / "first"), _folder(tmp_path / "second")
        monkeypatch.chdir(first)
        with monkeypatch.context() as mp:
            _interrupted_at(mp, 3)
            kd("teach", "--run", "r", "--model", str(tiny_model), "--epochs", "3", *TEACH, "--db", url, ok=False)
        state = next(first.glob("kd-artifacts/*/r/teach~resume"))
        monkeypatch.chdir(second)
        assert "resumable: kd teach --run r --resume" in kd("runs", "--db", url).output
        out = json.loads(kd("teach", "--run", "r", "--resume", "--db", url, "--json").stdout)
        assert out["status"] == "succeeded"
        assert not state.exists()  # (the success removes the state it resumed from)
    finally:
        pg_server.drop(url)



def test_a_teacher_whose_success_was_not_recorded_resumes(tmp_path, corpus, tiny_model, monkeypatch):
    """The state goes once the stage's success is on record, not before: a store lost as it records it
    (then the stage marked failed, its process gone) leaves the teacher resumable."""
    import sqlalchemy.exc

    import kdstore.runs
    from kdstore.runs import _fail

    db = _store(tmp_path, corpus)
    real = kdstore.runs._finish

    def lost(store, stage_id, status, error):
        if status == "succeeded":
            raise sqlalchemy.exc.OperationalError("UPDATE stages", {}, Exception("server closed the connection"))
        return real(store, stage_id, status, error)

    with monkeypatch.context() as mp:
        mp.setattr(kdstore.runs, "_finish", lost)
        kd("teach", "--run", "r", "--model", str(tiny_model), "--epochs", "2", "--folds", "2", *TEACH, "--db", db, ok=False)
    store = Store.open(db)
    try:
        _fail(store, store.find_stage("r", "teach", succeeded=False).id, run="r", name="teach", error="process gone")
    finally:
        store.close()
    assert _state(db).is_dir()
    assert json.loads(kd("teach", "--run", "r", "--resume", "--db", db, "--json").stdout)["status"] == "succeeded"
    assert not _state(db).exists()


def test_a_kd_artifacts_state_resumes_from_another_working_directory(tmp_path, corpus, tiny_model, monkeypatch):
    """With KD_ARTIFACTS set, a teacher killed in a job that named its store relatively (--db kd.db) is resumed by a
    job in another working directory (the store's absolute path): the state is the store's own, not another's."""
    monkeypatch.setenv("KD_ARTIFACTS", str(tmp_path / "shared"))
    db = _store(_folder(tmp_path / "store"), corpus)
    monkeypatch.chdir(tmp_path / "store")
    with monkeypatch.context() as mp:
        _interrupted_at(mp, 3)
        kd("teach", "--run", "r", "--model", str(tiny_model), "--epochs", "3", *TEACH, "--db", "kd.db", ok=False)
    monkeypatch.chdir(_folder(tmp_path / "job"))
    assert json.loads(kd("runs", "--db", db, "--json").stdout)[0]["stages"][0]["resumable"] == "after epoch 2 of 3"
    out = json.loads(kd("teach", "--run", "r", "--resume", "--db", db, "--json").stdout)
    assert out["status"] == "succeeded"
    assert not (tmp_path / "shared" / "r" / "teach~resume").exists()


def test_a_teacher_out_of_gpu_memory_names_its_saved_state(tmp_path, corpus, tiny_model, monkeypatch):
    """A teacher that ran out of GPU memory after an epoch was saved (a RuntimeError, not a KdError): its one-line
    error is the out-of-memory advice, and beside it the saved state and the command that continues it."""
    db = _store(_folder(tmp_path / "s"), corpus)
    real, calls = kdstore.teacher.bucketed_batches, []

    def batches(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(kdstore.teacher, "bucketed_batches", batches)
    out = kd("teach", "--run", "r", "--model", str(tiny_model), "--epochs", "3", *TEACH, "--db", db, ok=False).output
    assert "out of memory on the GPU" in out, out
    assert "`kd teach --run r --resume` continues it" in out and "after epoch 2 of 3" in out, out


def test_a_teacher_out_of_memory_resumes_in_pieces_that_fit(tmp_path, corpus, tiny_model, monkeypatch):
    """--grad-accum (the same steps in pieces: less memory) may differ on --resume, as --device may; the
    stage records the one it finished with."""
    db = _store(tmp_path, corpus)
    with monkeypatch.context() as mp:
        _interrupted_at(mp, 2)
        kd("teach", "--run", "r", "--model", str(tiny_model), "--epochs", "3", *TEACH, "--db", db, ok=False)
    out = json.loads(kd("teach", "--run", "r", "--resume", "--grad-accum", "4", "--device", "cpu", "--db", db, "--json").stdout)
    assert out["status"] == "succeeded"
    store = Store.open(db)
    try:
        config = store.find_stage("r", "teach").config
        assert (config["grad_accum"], config["device"], config["batch_size"]) == (4, "cpu", 8)
    finally:
        store.close()


def test_a_ctrl_c_held_while_the_success_is_recorded_leaves_no_state_to_resume(tmp_path, corpus, tiny_model, monkeypatch):
    """A Ctrl-C held while the teacher's success was recorded (raised once it stands): its error says the stage
    succeeded, and named beside it a `--resume` that "continues it from its saved state", which the success kept."""
    import signal

    import kdstore.runs

    db = _store(tmp_path, corpus)
    recorded = kdstore.runs._drop_replaced  # (called once the success is recorded, signals held)

    def ctrl_c(*args, **kwargs):
        kdstore.runs.HOLD["held"] = signal.SIGINT
        return recorded(*args, **kwargs)

    with monkeypatch.context() as mp:
        mp.setattr(kdstore.runs, "_drop_replaced", ctrl_c)
        out = kd("teach", "--run", "r", "--model", str(tiny_model), "--epochs", "2", *TEACH, "--db", db, ok=False).output
    assert "succeeded: its results stand" in out and "--resume" not in out, out
    assert not _state(db).exists()
    assert "resumable" not in kd("runs", "--db", db).stdout


def test_a_teacher_resumed_in_pieces_and_stopped_again_resumes_in_those_pieces(tmp_path, corpus, tiny_model, monkeypatch):
    """A teacher out of GPU memory resumed with --grad-accum 4, then stopped again: the next plain --resume went
    back to the pieces it was started with (meta.json kept the first config), out of memory once more."""
    db = _store(tmp_path, corpus)
    with monkeypatch.context() as mp:
        _interrupted_at(mp, 2)
        kd("teach", "--run", "r", "--model", str(tiny_model), "--epochs", "3", *TEACH, "--db", db, ok=False)
    with monkeypatch.context() as mp:
        _interrupted_at(mp, 2)
        kd("teach", "--run", "r", "--resume", "--grad-accum", "4", "--db", db, ok=False)
    out = json.loads(kd("teach", "--run", "r", "--resume", "--db", db, "--json").stdout)
    assert out["status"] == "succeeded"
    store = Store.open(db)
    try:
        assert store.find_stage("r", "teach").config["grad_accum"] == 4
    finally:
        store.close()


def test_a_replacement_killed_outright_is_offered_resume_overwrite(tmp_path, corpus, tiny_model):
    """kill -9 of a teacher's --overwrite after an epoch was saved: before any command marks it failed
    (still named `teach`, the one that stands parked), `kd runs` names the resume that is not refused."""
    db = _store(tmp_path, corpus)
    kd("teach", "--run", "r", "--model", str(tiny_model), "--epochs", "2", *TEACH, "--db", db)
    _killed_after_a_save(db, tiny_model, tmp_path, "--overwrite")
    listing = kd("runs", "--db", db).stdout
    assert "(resumable: kd teach --run r --resume --overwrite)" in listing, listing
    kd("teach", "--run", "r", "--resume", "--overwrite", "--db", db)


def test_resume_is_taken_on_the_command_line_only(tmp_path, corpus):
    """In a config file `resume = true` would make every later `kd teach` a resume: refused, naming the file."""
    db = _store(tmp_path, corpus)
    (tmp_path / "kd.toml").write_text("[teach]\nresume = true\n", encoding="utf-8")
    refused = kd("teach", "--run", "r", "--model", "m", "--db", db, ok=False)
    assert "kd.toml" in refused.output and "'resume'" in refused.output and "command line only" in refused.output, refused.output
