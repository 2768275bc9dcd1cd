"""``kd teach`` / ``kd distill`` under torchrun: 2 CPU processes (gloo) against 1, on real SQLite stores.

The 2-process runs are real subprocesses (``python -m torch.distributed.run --standalone
--nproc-per-node 2 -m commands.cli -- ...``); the 1-process runs go through the same CLI in-process.
The tiny BERT has its dropout off, so both runs compute the same thing: every rank draws the same
global batches and ``split_batch`` weights each share's loss so DDP's averaged gradient is the whole
batch's. With ``--batch-size 9`` on 64 train samples, shares are uneven (5/4) and the last global
batch has one sample, so one rank runs a zero-weight step: both are exercised.

Tolerance: measured, the 1- and 2-process logits differ by < 1e-6 (float summation order: gloo's
all-reduce, pad widths of the shares). Dropping the share weights (a plain DDP mean) moved them by
~0.1 on the same data, so ``atol=1e-3`` separates "the same training" from "a different one" with
two orders of magnitude on each side.

A crashed shard is made with a store state, not a hook: a SQLite trigger that refuses the logits row
of one sample that rank 1 owns.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from sqlalchemy import func, select
from synthetic import MARKERS, kd, save_tiny_bert, texts, write_tsv

from kdstore.distributed import Dist
from kdstore.schema import Logit, Prediction
from kdstore.store import Store

REPO = Path(__file__).resolve().parents[1]
TEACH = ["--epochs", "5", "--lr", "5e-3", "--batch-size", "9", "--max-len", "32", "--patience", "9"]
DISTILL = ["--student", "textcnn", "--epochs", "3", "--batch-size", "9", "--embed-dim", "16", "--num-filters", "8",
           "--max-len", "32", "--dropout", "0"]
LATE = ["这个很好用", "那个太差了", "还可以很好", "大家觉得太差", "今天很好", "东西太差"]
ATOL = 1e-3


# the two ways of running kd ------------------------------------------------------------------
def torchrun(*args: str, ok: bool = True, script: Path | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    """``kd ARGS`` as 2 CPU processes under torch's own launcher (``--`` keeps torchrun's argument
    parser off kd's options: ``--run`` would be an ambiguous prefix of its ``--run-path``); ``script``
    runs instead of ``-m commands.cli`` (a wrapper that breaks one rank); ``stdin``: piped in."""
    env = {k: v for k, v in os.environ.items() if k not in ("KD_DB", "KD_CONFIG", "KD_ARTIFACTS")}
    env.update(KD_NO_PROGRESS="1", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           *(["-m", "commands.cli"] if script is None else [str(script)]), "--", *args]
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300, input=stdin)
    assert (done.returncode == 0) == ok, f"torchrun kd {' '.join(args)}: exit {done.returncode}\n{done.stdout}\n{done.stderr[-4000:]}"
    return done


def error_lines(done: subprocess.CompletedProcess) -> list[str]:
    """The one-line errors kd's processes printed (torchrun's own report after them is no such line)."""
    return [line for line in done.stderr.splitlines() if line.startswith("Error: ")]


def copy_store(src: Path, dst_dir: Path) -> Path:
    """A copy of a SQLite store (WAL included, through SQLite's backup); its stages keep pointing at
    the original's model directories, which the tests only read."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    dst = dst_dir / "kd.db"
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    return dst


def add_trigger(db: Path, sample_id: int) -> None:
    """A store in which writing the logits of ``sample_id`` fails (a broken shard)."""
    with sqlite3.connect(db) as conn:
        conn.execute(
            f"CREATE TRIGGER broken_shard BEFORE INSERT ON logits WHEN NEW.sample_id = {int(sample_id)} "
            "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
        )


def drop_trigger(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TRIGGER broken_shard")


@contextmanager
def one_thread():
    """In-process runs use one torch thread, as each torchrun rank does (OMP_NUM_THREADS=1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# reading stores back ---------------------------------------------------------------------------
def stage_of(db: Path, run: str, name: str):
    store = Store.open(str(db), create=False)
    try:
        return next(s for s in store.stages_of(run) if s.name == name)
    finally:
        store.close()


def logits_of(db: Path, stage_id: int) -> tuple[np.ndarray, np.ndarray]:
    store = Store.open(str(db), create=False)
    try:
        return store.read_logits(stage_id)
    finally:
        store.close()


def count(db: Path, table, **where) -> int:
    store = Store.open(str(db), create=False)
    query = select(func.count()).select_from(table)
    for column, value in where.items():
        query = query.where(getattr(table, column) == value)
    try:
        with store.engine.connect() as conn:
            return conn.execute(query).scalar_one()
    finally:
        store.close()


def metrics_of(db: Path, stage_id: int) -> dict[str, float]:
    store = Store.open(str(db), create=False)
    try:
        return {m.name: m.value for m in store.metrics(stage_id) if m.split == "all"}
    finally:
        store.close()


def sample_ids(db: Path) -> np.ndarray:
    store = Store.open(str(db), create=False)
    try:
        return store.samples(include_dropped=True).ids
    finally:
        store.close()


def ingest_late(db: Path, folder: Path) -> np.ndarray:
    """Ingest ``LATE`` into the pool; returns the new samples' ids."""
    before = set(sample_ids(db).tolist())
    late = folder / "late.txt"
    late.write_text("\n".join(LATE) + "\n", encoding="utf-8")
    kd("ingest", str(late), "--split", "unlabeled", "--db", str(db))
    new = np.array(sorted(set(sample_ids(db).tolist()) - before), dtype=np.int64)
    assert len(new) == len(LATE)
    return new


# fixtures ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    rng = random.Random(0)
    d = tmp_path_factory.mktemp("corpus")
    unique: dict[str, str] = {}
    while len(unique) < 64 + 20 + 20:  # distinct texts: ingest would skip duplicates
        label = rng.choice(list(MARKERS))
        unique.setdefault(texts(rng, MARKERS[label], 1)[0], label)
    rows = [(label, text) for text, label in unique.items()]
    files = {split: write_tsv(d / f"{split}.tsv", part) for split, part in (("train", rows[:64]), ("dev", rows[64:84]), ("test", rows[84:]))}
    files["unlabeled"] = d / "pool.txt"
    files["unlabeled"].write_text("\n".join(texts(rng, "很好", 15) + texts(rng, "太差", 15)) + "\n", encoding="utf-8")
    return files


@pytest.fixture(scope="module")
def tiny_model(corpus, tmp_path_factory) -> Path:
    """The tests' 2-layer BERT with dropout off, so 1- and 2-process training are comparable."""
    from transformers import AutoConfig

    all_texts = [line.split("\t")[-1] for p in corpus.values() for line in p.read_text(encoding="utf-8").splitlines()] + LATE
    out = save_tiny_bert(all_texts, tmp_path_factory.mktemp("tiny-bert"))
    config = AutoConfig.from_pretrained(out)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    config.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def taught(corpus, tiny_model, tmp_path_factory) -> dict[str, Path]:
    """Two stores with the same samples: run ``r`` taught by 1 process in ``one``, by 2 in ``two``."""
    stores = {}
    with pytest.MonkeyPatch.context() as mp, one_thread():
        mp.setenv("KD_NO_PROGRESS", "1")
        for name in ("one", "two"):
            db = tmp_path_factory.mktemp(name) / "kd.db"
            for split, path in corpus.items():
                kd("ingest", str(path), "--split", split, "--db", str(db))
            stores[name] = db
        kd("teach", "--run", "r", "--model", str(tiny_model), *TEACH, "--db", str(stores["one"]))
    torchrun("teach", "--run", "r", "--model", str(tiny_model), *TEACH, "--db", str(stores["two"]))
    return stores


# the pure helpers --------------------------------------------------------------------------------
def test_shards_partition_and_share_weights_give_the_whole_batch_mean():
    rng = np.random.default_rng(0)
    for world in (1, 2, 3, 4):
        ranks = [Dist(world=world, rank=r, local_rank=r) for r in range(world)]
        for n in (0, 1, 5, 17):
            owned = np.stack([d.shard(n) for d in ranks])
            assert (owned.sum(0) == 1).all()  # every item has exactly one owner
        for size in range(1, 12):
            batch = rng.permutation(100)[:size]
            losses = rng.random(100)
            shares = [d.split_batch(batch) for d in ranks]
            # what DDP computes: the mean over ranks of each share's weighted mean loss
            ddp = np.mean([w * losses[s].mean() for s, w in shares])
            assert ddp == pytest.approx(losses[batch].mean())
            real = np.concatenate([s for s, w in shares if w > 0])
            assert sorted(real.tolist()) == sorted(batch.tolist())  # each sample trained once
            assert all(len(s) >= 1 for s, _ in shares)  # no rank is left without a step
    assert Dist.from_env({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"}) == Dist(world=4, rank=2, local_rank=0)
    assert Dist.from_env({}) == Dist()
    # the bar rank 0 draws of its shard says so (`logits 557/557` of 1,113 samples read as half left unscored)
    assert Dist(world=2, rank=0).share_label("logits") == "logits (this process's share, 1 of 2)"
    assert Dist().share_label("fold 1 logits") == "fold 1 logits"


def _token_mean_worker(rank: int, init: str, result: str) -> None:
    """One of two gloo ranks: a linear head's cross entropy, a mean over this rank's masked tokens
    (3 on rank 0, 7 on rank 1, as masking draws them), weighted by ``share_weights``; the gradients
    averaged over the ranks as DDP averages them."""
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    torch.manual_seed(0)
    head = torch.nn.Linear(4, 3)
    x, y = torch.randn(10, 4), torch.randint(0, 3, (10,))
    mine = slice(0, 3) if rank == 0 else slice(3, 10)
    (share,) = Dist(world=2, rank=rank, local_rank=rank).share_weights([len(x[mine])])
    (torch.nn.functional.cross_entropy(head(x[mine]), y[mine]) * share).backward()
    torch.distributed.all_reduce(head.weight.grad)  # what DDP does with the ranks' gradients: their mean
    head.weight.grad /= 2
    if rank == 0:
        torch.save(head.weight.grad, result)
    torch.distributed.barrier()
    Dist(world=2, rank=rank, local_rank=rank).close()  # leaves the group as kd does (gloo's threads need a moment)


def test_share_weights_make_two_ranks_token_means_the_whole_batch_mean(tmp_path):
    """``kd pretrain``'s masked-LM loss is a mean over masked tokens, and each rank masks its own
    count: weighted by ``share_weights`` the ranks' DDP gradient is the one-process gradient of the
    mean over all the batch's tokens (a plain DDP mean would weigh rank 0's 3 tokens like 7)."""
    result = tmp_path / "grad.pt"
    torch.multiprocessing.spawn(_token_mean_worker, args=(f"file://{tmp_path / 'init'}", str(result)), nprocs=2)
    torch.manual_seed(0)
    head = torch.nn.Linear(4, 3)
    x, y = torch.randn(10, 4), torch.randint(0, 3, (10,))
    torch.nn.functional.cross_entropy(head(x), y).backward()
    assert torch.allclose(torch.load(result), head.weight.grad, atol=1e-6)
    assert Dist().share_weights([5, 0]) == [1.0, 1.0]  # one process: the loss as it is


def _shown_loss_worker(rank: int, init: str, result: str) -> None:
    """One of two gloo ranks adding its share of two global batches to ``StepLosses`` as ``kd teach``
    and ``kd distill`` do: batch 1 of 9 samples (5 on rank 0, 4 on rank 1), batch 2 of 1 sample (rank
    1 runs a filler at weight 0); rank 0 saves what its progress bar shows after each."""
    from kdstore.torchutil import StepLosses

    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    dist = Dist(world=2, rank=rank, local_rank=rank)
    losses = StepLosses(every=1, dist=dist)
    per_sample = torch.arange(1.0, 10.0) ** 2  # the samples' losses: 33 on rank 0's share, 30 on rank 1's, 31.667 in all
    shown = []
    for batch in (np.arange(9), np.arange(1)):
        idx, weight = dist.split_batch(batch)
        shown.append(losses.add(per_sample[idx].mean(), weight))
    if rank == 0:
        torch.save(shown, result)
    torch.distributed.barrier()
    dist.close()


def test_the_loss_a_progress_bar_shows_under_two_processes_is_the_whole_batch_s(tmp_path):
    """The bar showed rank 0's share's loss: 0.733 under torchrun where one process showed 0.694 for
    the same step (its 5 of 9 samples; a filler sample's when the batch left rank 0 one). It shows the
    batch's mean, as one process does, as ``kd pretrain``'s bar does (and as the stored losses are)."""
    result = tmp_path / "shown.pt"
    torch.multiprocessing.spawn(_shown_loss_worker, args=(f"file://{tmp_path / 'init'}", str(result)), nprocs=2)
    assert torch.load(result) == ["31.667", "1.000"]  # (it showed "33.000": rank 0's share)


def test_commands_that_run_once_are_refused_under_torchrun(tmp_path, monkeypatch):
    """Only pretrain, teach and distill run as ranks: `kd predict --store` under torchrun would have
    every rank write the same stage (the second refused, torchrun failing)."""
    from click.testing import CliRunner

    from commands.cli import cli

    monkeypatch.setenv("WORLD_SIZE", "2")
    result = CliRunner().invoke(cli, ["predict", "--run", "r", "--store", "--db", str(tmp_path / "kd.db")])
    assert result.exit_code == 2 and "`kd predict` runs in one process: run it without torchrun" in result.output
    assert not (tmp_path / "kd.db").exists()
    assert CliRunner().invoke(cli, ["labels", "detect", "--help"]).exit_code == 0  # help still shows
    assert CliRunner().invoke(cli, ["runs", "-h"]).exit_code == 0


def test_more_processes_than_gpus_is_one_line_not_a_cuda_traceback(monkeypatch):
    """``--nproc-per-node 4`` on a 2-GPU machine: ranks 2 and 3 have no GPU of their own; they stop
    with what to do, before touching CUDA or the group (torch.cuda.set_device raised a CUDA error)."""
    from kdstore.errors import KdError

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda _: pytest.fail("set_device of a GPU that is not there"))
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda *a, **k: pytest.fail("joined the group"))
    with pytest.raises(KdError, match=r"LOCAL_RANK 2: this machine has 2 CUDA device\(s\).*--nproc-per-node 2"):
        Dist(world=4, rank=2, local_rank=2).init(torch.device("cuda"))


def test_world_size_without_a_launcher_is_one_line(corpus, tiny_model, tmp_path, monkeypatch):
    """WORLD_SIZE left in the environment by hand (no torchrun: no MASTER_ADDR) is one line naming
    the fix, not torch's rendezvous traceback; no stage is started."""
    from click.testing import CliRunner

    from commands.cli import cli

    db = tmp_path / "kd.db"
    kd("ingest", str(corpus["train"]), "--db", str(db))
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    before = signal.getsignal(signal.SIGTERM)
    try:
        result = CliRunner().invoke(cli, ["teach", "--run", "nolauncher", "--model", str(tiny_model), "--db", str(db)])
    finally:
        signal.signal(signal.SIGTERM, before)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "WORLD_SIZE is 2, but the process group cannot start" in result.output and "MASTER_ADDR" in result.output
    assert "run kd under torchrun, or unset WORLD_SIZE" in result.output
    store = Store.open(str(db), create=False)
    try:
        assert not store.run_exists("nolauncher")
    finally:
        store.close()


def test_an_error_every_rank_meets_is_printed_once(corpus, tmp_path):
    """A wrong option (before the group), a --model that does not exist (in the stage, on every rank):
    rank 0 prints the one line; rank 1 exits non-zero without a word (each printed it)."""
    db = tmp_path / "kd.db"
    kd("ingest", str(corpus["train"]), "--db", str(db))
    done = torchrun("teach", "--run", "x", "--modle", "m", "--db", str(db), ok=False)
    lines = error_lines(done)
    assert len(lines) == 1 and "No such option '--modle'" in lines[0] and done.stderr.count("Usage: kd teach") == 1, done.stderr[-3000:]
    done = torchrun("teach", "--run", "x", "--model", str(tmp_path / "nope"), "--db", str(db), ok=False)
    assert error_lines(done) == [f"Error: cannot load model '{tmp_path / 'nope'}': no such directory"], done.stderr[-3000:]
    stage = stage_of(db, "x", "teach")  # recorded as rank 0 prints it, not as rank 1's alone (rank 1 noted it first)
    assert (stage.status, stage.error) == ("failed", f"cannot load model '{tmp_path / 'nope'}': no such directory")


def with_rank_1_argv(tmp_path: Path, edit: str) -> Path:
    """A wrapper that runs kd with rank 1's own command line edited by ``edit`` (Python on ``argv``):
    an option value only one process sees (another host's config file or environment)."""
    wrapper = tmp_path / "rank1_argv.py"
    wrapper.write_text(f"import os, sys\nargv = sys.argv\nif os.environ.get('RANK') == '1':\n    {edit}\n"
                       "from commands.cli import main\nmain()\n", encoding="utf-8")
    return wrapper


def teach_with_rank_1_argv(corpus, tiny_model, tmp_path, db, run: str, edit: str):
    """``kd teach`` of the train corpus under 2 processes, rank 1's command line changed by ``edit``
    (``with_rank_1_argv``): the finished process and its seconds."""
    kd("ingest", str(corpus["train"]), "--db", str(db))
    wrapper = with_rank_1_argv(tmp_path, edit)
    started = time.monotonic()
    done = torchrun("teach", "--run", run, "--model", str(tiny_model), "--epochs", "1", "--max-len", "32", "--db", str(db),
                    ok=False, script=wrapper)
    return done, time.monotonic() - started


def test_a_setup_error_of_rank_1_alone_is_rank_0s_one_line_promptly(corpus, tiny_model, tmp_path):
    """Rank 1 alone refuses an option value in the group, before the stage: rank 1 left the group and
    rank 0's first collective met only gloo's "Connection closed by peer", which it printed ("its own
    error says why") and recorded as a stage failed with gloo's RuntimeError; rank 1, stopped by the
    launcher, said nothing: the cause was lost. Rank 0 now hears it, prints it as rank 1's, once, and
    no stage is on record (as in one process, a value refused before the stage records none)."""
    db = tmp_path / "kd.db"
    done, elapsed = teach_with_rank_1_argv(corpus, tiny_model, tmp_path, db, "e", "argv[argv.index('--epochs') + 1] = '0'")
    lines = error_lines(done)
    assert len(lines) == 1 and lines[0].startswith("Error: rank 1: ") and "epochs" in lines[0], done.stderr[-3000:]
    # (a rank left waiting is killed by torchrun 30 s after its SIGTERM, which it says: the seconds are only a
    # rough bound, three processes starting torch on a loaded 2-core machine took over 20 of them)
    assert "Unable to shutdown process" not in done.stderr and elapsed < 60, (elapsed, done.stderr[-3000:])
    store = Store.open(str(db), create=False)
    try:
        assert not store.run_exists("e")
    finally:
        store.close()


def test_a_rank_that_fails_before_joining_the_group_does_not_leave_the_other_waiting(corpus, tiny_model, tmp_path):
    """Rank 1 alone refuses its command line (before the group): rank 0, blocked in the group's
    rendezvous, ignored the launcher's SIGTERM (a Python handler runs only between bytecodes) until
    torchrun killed it 30 s later: ~45 s for a typo. Rank 1's error is printed, once. (Rank 1 waits 3 s, not
    STOP_WAIT_S's 10, for a stop that never comes before it prints its error: rank 0 is in the rendezvous by
    then, and CI spends 7 s less waiting.)"""
    edit = "argv.append('--nonsense-option'); import kdstore.distributed; kdstore.distributed.STOP_WAIT_S = 3.0"
    done, elapsed = teach_with_rank_1_argv(corpus, tiny_model, tmp_path, tmp_path / "kd.db", "u", edit)
    lines = error_lines(done)
    assert lines == ["Error: No such option '--nonsense-option'."], done.stderr[-3000:]
    # torchrun's "Unable to shutdown process" is the 30 s kill itself; the seconds are only a rough bound: with
    # rank 1's 10 s wait (STOP_WAIT_S), three processes starting torch on a loaded 2-core machine took 37 s
    assert "Unable to shutdown process" not in done.stderr and elapsed < 60, (elapsed, done.stderr[-3000:])


def test_an_error_every_rank_met_is_recorded_as_such_not_as_the_noting_rank_s(tmp_path, monkeypatch):
    """Rank 1 notes its error on the stage first (``rank 1: ...``); when rank 0 ends the stage with
    the very same error (a --model that does not exist, rows read differently, a Ctrl-C that reached
    every process) the stage records it as rank 0 prints it: "rank 1: cannot load model" said rank 1
    alone had failed. An error of rank 1's own stays its, named so."""
    import threading

    from kdstore import distributed as d
    from kdstore.errors import KdError
    from kdstore.runs import stage_scope

    monkeypatch.setattr(d, "NOTED", threading.Event())
    db = tmp_path / "kd.db"
    store = Store.open(str(db))
    cases = [
        ("same", KdError("cannot load model 'm': no such directory"), KdError("cannot load model 'm': no such directory"),
         "cannot load model 'm': no such directory"),
        ("ctrl-c", KeyboardInterrupt(), KeyboardInterrupt(), "interrupted (KeyboardInterrupt)"),
        ("own", RuntimeError("rank one broke"), KdError(d.SIGTERM_MESSAGE), "rank 1: RuntimeError: rank one broke"),
    ]
    try:
        for run, noted, raised, recorded in cases:
            with pytest.raises(type(raised)):
                with stage_scope(store, run=run, kind="teach", config={}) as stage:
                    d._note_error(store, stage.id, 1, noted)  # what rank 1 does as its stage fails
                    raise raised
            assert d.NOTED.is_set()
            failed = next(s for s in store.stages_of(run) if s.name == "teach")
            assert (failed.status, failed.error) == ("failed", recorded), run
    finally:
        store.close()


def test_a_rank_other_than_0_prints_only_an_error_rank_0_cannot(monkeypatch):
    """``prints_its_error``: another rank's error passed on, one noted on the stage (rank 0 reports
    both) and any once the launcher stops the rank (rank 0 ended first: it failed too, and said why)
    are not printed; an error the rank is left alone with after the wait is."""
    import threading

    from kdstore import distributed as d

    monkeypatch.setattr(d, "STOPPED", threading.Event())
    monkeypatch.setattr(d, "NOTED", threading.Event())
    before = signal.getsignal(signal.SIGTERM)
    assert not d.prints_its_error("rank 0 failed: RuntimeError: disk full", wait_s=5)
    assert not d.prints_its_error("rank 0 could not start stage 'teach' of run 'r' (its error says why)", wait_s=5)
    started = time.monotonic()
    assert d.prints_its_error("its own", wait_s=0.3) and time.monotonic() - started >= 0.3  # waited, then says it
    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()  # the launcher stopping it
    started = time.monotonic()
    assert not d.prints_its_error("No such option '--modle'", wait_s=30) and time.monotonic() - started < 10
    assert d.STOPPED.is_set() and signal.getsignal(signal.SIGTERM) == before  # the handler put back
    assert not d.prints_its_error("anything", wait_s=0)  # stopped once: quiet from then on
    d.STOPPED.clear()
    d.NOTED.set()
    assert not d.prints_its_error("RuntimeError: rank one broke", wait_s=0)


# teach ---------------------------------------------------------------------------------------------
def test_two_processes_teach_the_same_logits_as_one(taught):
    one, two = stage_of(taught["one"], "r", "teach"), stage_of(taught["two"], "r", "teach")
    assert one.status == two.status == "succeeded"
    n = len(sample_ids(taught["one"]))
    assert n == 134
    for db, stage in ((taught["one"], one), (taught["two"], two)):
        assert count(db, Logit, stage_id=stage.id) == n  # every sample, the pool included
        assert count(db, Prediction, stage_id=stage.id) == n
    ids1, logits1 = logits_of(taught["one"], one.id)
    ids2, logits2 = logits_of(taught["two"], two.id)
    assert np.array_equal(ids1, ids2)
    np.testing.assert_allclose(logits2, logits1, atol=ATOL, rtol=0)
    assert np.array_equal(logits1.argmax(1), logits2.argmax(1))
    assert metrics_of(taught["two"], two.id)["processes"] == 2 and "processes" not in metrics_of(taught["one"], one.id)
    # the recorded config says so too (a rerun must know it: it was not in the stage's config)
    assert two.config["environment"]["processes"] == 2 and "processes" not in one.config["environment"]
    assert metrics_of(taught["two"], two.id)["best_epoch"] == metrics_of(taught["one"], one.id)["best_epoch"]
    assert Path(two.artifact_path, "config.json").exists() and len(two.artifact_sha256) == 64
    # the epochs' train losses too: the mean of the batch means (shares of 5 and 4 weighed as such)
    curves = []
    for db, stage in ((taught["one"], one), (taught["two"], two)):
        store = Store.open(str(db), create=False)
        curves.append([m.value for m in store.metrics(stage.id, final=False) if m.split == "train" and m.name == "loss"])
        store.close()
    assert len(curves[0]) == 5 and np.allclose(curves[0], curves[1], atol=1e-5), curves


def test_logits_only_under_two_processes_scores_exactly_the_missing_samples(taught, tmp_path):
    """Only the new samples are scored, as one process's saved teacher scores them. The bars each rank
    drew are recorded too: `kd teach --logits-only` (and the teacher's scoring of `kd distill --augment`
    texts) drew rank 0's bar as plain "logits 375/375" while 750 samples were scored: read as half of them
    left unscored. (The recording wrapper changes nothing else; it shares this test's launch.)"""
    db = copy_store(taught["two"], tmp_path / "store")
    stage = stage_of(db, "r", "teach")
    _, before = logits_of(db, stage.id)
    new = ingest_late(db, tmp_path)
    seen = tmp_path / "bars.txt"
    wrapper = tmp_path / "record_bars.py"
    wrapper.write_text(
        "import os\n"
        "import kdstore.teacher\n"
        "real = kdstore.teacher.progress\n"
        "def recording(*args, **kwargs):\n"
        "    bar = real(*args, **kwargs)\n"
        "    add = bar.add_task\n"
        "    def add_task(description, *a, **k):\n"
        f"        with open({str(seen)!r}, 'a', encoding='utf-8') as f:\n"
        "            f.write(os.environ['RANK'] + ' ' + description + '\\n')\n"
        "        return add(description, *a, **k)\n"
        "    bar.add_task = add_task\n"
        "    return bar\n"
        "kdstore.teacher.progress = recording\n"
        "from commands.cli import main\nmain()\n", encoding="utf-8")
    out = torchrun("teach", "--run", "r", "--logits-only", "--json", "--db", str(db), script=wrapper)
    assert json.loads(out.stdout) == {"run": "r", "stage": "teach", "scored": len(LATE), "warnings": []}  # rank 0 alone prints
    bars = sorted(line for line in seen.read_text(encoding="utf-8").splitlines() if "logits" in line)
    assert bars == ["0 logits (this process's share, 1 of 2)", "1 logits (this process's share, 1 of 2)"], bars
    ids, logits = logits_of(db, stage.id)
    assert np.array_equal(ids, sample_ids(db)) and count(db, Prediction, stage_id=stage.id) == len(ids)
    np.testing.assert_array_equal(logits[~np.isin(ids, new)], before)  # the old rows are untouched
    # the new rows are what the saved teacher says in one process
    from kdstore.teacher import load_classifier, score

    tokenizer, model = load_classifier(stage.artifact_path, stage.config["classes"])
    fresh = score(model, tokenizer, LATE, max_len=32, batch_size=64, device=torch.device("cpu"))
    np.testing.assert_allclose(logits[np.isin(ids, new)], fresh, atol=1e-4, rtol=0)
    again = kd("teach", "--run", "r", "--logits-only", "--json", "--db", str(db))
    assert json.loads(again.output)["scored"] == 0


def test_logits_only_names_the_error_of_a_rank_that_cannot_load_the_teacher(taught, tmp_path):
    """Rank 1 alone fails to load the teacher (before scoring): rank 0 printed only gloo's lost peer
    ("its own error says why"), and rank 1 its error 10 s later: two lines, the first saying nothing.
    Rank 0 now names it, once."""
    db = copy_store(taught["two"], tmp_path / "store")
    ingest_late(db, tmp_path)
    wrapper = tmp_path / "no_teacher_on_rank1.py"
    wrapper.write_text(
        "import os\n"
        "if os.environ.get('RANK') == '1':\n"
        "    import kdstore.teacher\n"
        "    def broken(*args, **kwargs):\n"
        "        raise OSError('rank one cannot read the teacher')\n"
        "    kdstore.teacher.load_classifier = broken\n"
        "from commands.cli import main\nmain()\n", encoding="utf-8")
    done = torchrun("teach", "--run", "r", "--logits-only", "--db", str(db), ok=False, script=wrapper)
    assert error_lines(done) == ["Error: rank 1 failed: OSError: rank one cannot read the teacher"], done.stderr[-3000:]


def test_logits_only_refuses_a_teacher_whose_files_changed_since(taught, tmp_path):
    """A file added to the teacher's folder by hand since it was recorded (kd predict and kd export refuse
    such a model): `kd teach --logits-only` scored the new samples with it without a word, so the stage
    held two models' logits. Refused in one line, nothing scored."""
    import shutil

    db = copy_store(taught["two"], tmp_path / "store")
    new = ingest_late(db, tmp_path)
    store = Store.open(str(db), create=False)
    try:  # (the copy's own RUN/STAGE folder, which it serves: the original's stays as the other tests read it)
        own = store.artifact_root / "r" / "teach"
    finally:
        store.close()
    shutil.copytree(Path(stage_of(taught["two"], "r", "teach").artifact_path).parent, own)
    folder = Path(stage_of(db, "r", "teach").artifact_path)
    assert folder.is_relative_to(own), folder
    (folder / "notes.txt").write_text("tried a smaller head\n", encoding="utf-8")
    done = torchrun("teach", "--run", "r", "--logits-only", "--db", str(db), ok=False)
    lines = error_lines(done)
    assert len(lines) == 1 and "is not the one the run recorded" in lines[0], done.stderr[-3000:]
    assert not set(new.tolist()) & set(logits_of(db, stage_of(db, "r", "teach").id)[0].tolist())


def test_a_crashed_shard_keeps_the_others_and_a_rerun_scores_only_what_is_missing(taught, tmp_path):
    db = copy_store(taught["one"], tmp_path / "store")
    stage = stage_of(db, "r", "teach")
    new = ingest_late(db, tmp_path)
    rank1 = new[Dist(world=2, rank=1).shard(len(new))]
    add_trigger(db, rank1[0])
    failed = torchrun("teach", "--run", "r", "--logits-only", "--db", str(db), ok=False)
    assert "rank 1 failed" in failed.stderr and "disk on fire" in failed.stderr
    ids, _ = logits_of(db, stage.id)
    assert set(new.tolist()) - set(ids.tolist()) == set(rank1.tolist())  # rank 0's shard was kept
    assert count(db, Prediction, stage_id=stage.id) == len(ids)  # logits and predictions together
    drop_trigger(db)
    with one_thread():
        rerun = kd("teach", "--run", "r", "--logits-only", "--json", "--db", str(db))
    assert json.loads(rerun.output)["scored"] == len(rank1)
    assert np.array_equal(logits_of(db, stage.id)[0], sample_ids(db))


def test_a_crashed_rank_fails_the_teach_stage(taught, tiny_model, tmp_path):
    db = copy_store(taught["one"], tmp_path / "store")
    everything = sample_ids(db)
    add_trigger(db, everything[Dist(world=2, rank=1).shard(len(everything))][0])
    args = ["teach", "--run", "crash", "--model", str(tiny_model), "--epochs", "1", "--max-len", "32", "--db", str(db)]
    torchrun(*args, ok=False)
    stage = stage_of(db, "crash", "teach")
    assert stage.status == "failed"
    assert stage.error.startswith("rank 1") and "disk on fire" in stage.error  # the cause: rank 1 noted it first
    assert count(db, Logit, stage_id=stage.id) == 0 and count(db, Prediction, stage_id=stage.id) == 0


def teach_with_one_rank_patched(db: Path, model: Path, run: str, tmp_path: Path, rank: int, patch: str) -> subprocess.CompletedProcess:
    """``kd teach`` under torchrun, with ``patch`` (Python, indented 4 spaces) run in rank ``rank``
    alone before kd starts: a fault that only one process meets."""
    wrapper = tmp_path / f"patched_rank{rank}.py"
    wrapper.write_text(f"import os\nif os.environ.get('RANK') == '{rank}':\n{patch}from commands.cli import main\nmain()\n", encoding="utf-8")
    return torchrun("teach", "--run", run, "--model", str(model), "--epochs", "1", "--max-len", "32", "--db", str(db), ok=False, script=wrapper)


def test_a_rank_that_fails_while_training_leaves_its_error_on_the_stage(taught, tiny_model, tmp_path):
    """Rank 1 fails before any collective could pass its error on; the launcher then stops rank 0
    with SIGTERM. The stage keeps rank 1's cause, not 'terminated (SIGTERM)'."""
    db = copy_store(taught["one"], tmp_path / "store")
    done = teach_with_one_rank_patched(db, tiny_model, "broken", tmp_path, 1, (
        "    import kdstore.teacher\n"
        "    def broken(*args, **kwargs):\n"
        "        raise RuntimeError('rank one broke')\n"
        "    kdstore.teacher._fit = broken\n"))
    stage = stage_of(db, "broken", "teach")
    assert stage.status == "failed" and stage.error == "rank 1: RuntimeError: rank one broke"
    # rank 0 says the cause (it said "terminated (SIGTERM)" or "another rank ... is gone"), once
    assert error_lines(done) == ["Error: rank 1: RuntimeError: rank one broke"], done.stderr[-3000:]


def test_a_rank_killed_with_sigterm_fails_the_stage_in_one_line(taught, tiny_model, tmp_path):
    """`kill` of rank 1 mid-training (not torchrun stopping it after another failed): the stage
    names that kill, not gloo's "Connection closed by peer" that rank 0 met next (a RuntimeError
    that also printed rank 0's traceback); rank 0 says it in one line, rank 1 says nothing."""
    from kdstore.distributed import SIGTERM_MESSAGE

    db = copy_store(taught["one"], tmp_path / "store")
    done = teach_with_one_rank_patched(db, tiny_model, "killed", tmp_path, 1, (
        "    import signal, kdstore.teacher\n"
        "    pad, calls = kdstore.teacher.pad, []\n"
        "    def killed(*args, **kwargs):\n"
        "        calls.append(1)\n"
        "        if len(calls) == 2:\n"
        "            os.kill(os.getpid(), signal.SIGTERM)\n"
        "        return pad(*args, **kwargs)\n"
        "    kdstore.teacher.pad = killed\n"))
    stage = stage_of(db, "killed", "teach")
    assert stage.status == "failed" and stage.error == f"rank 1: {SIGTERM_MESSAGE}", stage.error
    assert "[rank0]: Traceback" not in done.stderr and "[rank1]: Traceback" not in done.stderr, done.stderr[-3000:]
    assert error_lines(done) == [f"Error: rank 1: {SIGTERM_MESSAGE}"], done.stderr[-3000:]  # rank 0 says it, once
    assert count(db, Logit, stage_id=stage.id) == 0  # (rank 0 says another rank is gone, or meets torchrun's SIGTERM first)


def test_a_rank_0_killed_outright_leaves_its_stage_failed_not_running(taught, tiny_model, tmp_path):
    """`kill -9` (or the OOM killer) of rank 0 mid-training: it cannot end its stage, which stayed
    'running (process gone)' until another stage started on the machine. Rank 1, which meets the
    lost peer, marks it failed (its process is gone); the partial outputs go with it."""
    db = copy_store(taught["one"], tmp_path / "store")
    done = teach_with_one_rank_patched(db, tiny_model, "kill9", tmp_path, 0, (
        "    import signal, kdstore.teacher\n"
        "    pad, calls = kdstore.teacher.pad, []\n"
        "    def killed(*args, **kwargs):\n"
        "        calls.append(1)\n"
        "        if len(calls) == 2:\n"
        "            os.kill(os.getpid(), signal.SIGKILL)\n"
        "        return pad(*args, **kwargs)\n"
        "    kdstore.teacher.pad = killed\n"))
    stage = stage_of(db, "kill9", "teach")
    assert stage.status == "failed" and stage.error.startswith("crashed: process ") and stage.error.endswith(" is gone"), stage.error
    assert count(db, Logit, stage_id=stage.id) == 0
    assert len(error_lines(done)) == 1, done.stderr[-3000:]  # rank 1 says it: rank 0 cannot


def test_a_rank_stopped_by_torchrun_after_rank_0_was_killed_outright_says_rank_0_is_gone(taught, tiny_model, tmp_path):
    """Rank 0 killed outright while rank 1 is busy outside a collective (a long forward, waiting on rank 0's
    augmenting): torchrun's SIGTERM reaches rank 1 before any lost peer does. It marks the stage failed
    (crashed: rank 0's process is gone) and prints the one error, which said "terminated (SIGTERM): ...
    another rank failed (then its error says why)", an error no rank printed."""
    db = copy_store(taught["one"], tmp_path / "store")
    wrapper = tmp_path / "rank0_killed.py"
    wrapper.write_text(
        "import os, signal, time\n"
        "import kdstore.teacher\n"
        "pad, calls = kdstore.teacher.pad, []\n"
        "def patched(*args, **kwargs):\n"
        "    calls.append(1)\n"
        "    if len(calls) == 2:\n"
        "        if os.environ.get('RANK') == '0':\n"
        "            os.kill(os.getpid(), signal.SIGKILL)\n"
        "        time.sleep(60)\n"  # rank 1: busy outside any collective when torchrun stops it
        "    return pad(*args, **kwargs)\n"
        "kdstore.teacher.pad = patched\n"
        "from commands.cli import main\nmain()\n", encoding="utf-8")
    done = torchrun("teach", "--run", "gone0", "--model", str(tiny_model), "--epochs", "1", "--max-len", "32", "--db", str(db),
                    ok=False, script=wrapper)
    stage = stage_of(db, "gone0", "teach")
    assert stage.status == "failed" and stage.error.startswith("crashed: process "), stage.error
    lines = error_lines(done)
    assert len(lines) == 1 and "rank 0" in lines[0] and "killed outright" in lines[0], done.stderr[-3000:]
    assert "stage 'teach' of run 'gone0' is recorded failed" in lines[0] and "then its error says why" not in lines[0], lines


def test_a_rank_that_loses_rank_0_marks_its_stage_once_its_process_is_gone(tmp_path, monkeypatch):
    """gloo reports the lost peer as rank 0's sockets close, before its process is gone (not yet a
    zombie): one look found it alive and left the stage 'running'; the rank looks again for a while."""
    import threading

    from kdstore import distributed as d

    db = tmp_path / "kd.db"
    Store.open(str(db)).close()
    child = subprocess.Popen([sys.executable, "-c", (
        "import os, sys, time\n"
        "from kdstore.runs import stage_scope\n"
        "from kdstore.store import Store\n"
        f"store = Store.open({str(db)!r})\n"
        "with stage_scope(store, run='r', kind='teach', config={}) as st:\n"
        "    print(st.id, flush=True)\n"
        "    time.sleep(1.0)\n"
        "    os._exit(0)\n")], stdout=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))})
    try:
        stage_id = int(child.stdout.readline())
        monkeypatch.setattr(d, "MAIN_GONE", threading.Event())
        store = Store.open(str(db), create=False)
        try:
            d._fail_if_main_gone(store, stage_id, lost=True)  # the child still runs: looked at again until it is gone
        finally:
            store.close()
        assert d.MAIN_GONE.is_set()
        stage = stage_of(db, "r", "teach")
        assert stage.status == "failed" and stage.error.startswith("crashed: process "), stage.error
    finally:
        child.kill()
        child.wait()


def test_a_zombie_is_a_process_gone():
    """A rank killed outright stays a zombie until torchrun reaps it: its stage's process is gone."""
    from kdstore.runs import _machine, _start_time, process_alive

    if _machine() is None:
        pytest.skip("no /proc here: kd judges no stage's process")
    import socket

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        tag = f"{child.pid}:{_start_time(child.pid)}:{_machine()}"
        assert process_alive(socket.gethostname(), tag) is True
        os.kill(child.pid, signal.SIGKILL)
        for _ in range(100):  # not reaped (no wait): a zombie
            if Path(f"/proc/{child.pid}/stat").read_text().split(") ")[1][0] == "Z":
                break
            time.sleep(0.02)
        assert process_alive(socket.gethostname(), tag) is False
    finally:
        child.kill()
        child.wait()


def test_peer_loss_is_one_line_and_no_cause_of_its_own():
    """gloo's error in a collective whose other side exited becomes a KdError (one line); other
    errors, and any in one process, pass as they are; a rank's note on the stage leaves it out."""
    from kdstore.distributed import LOST_MESSAGE, _peer_loss_as_error
    from kdstore.errors import KdError

    gloo = RuntimeError("[/gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:6831. This is typically ...")
    with pytest.raises(KdError, match=r"^another rank of the process group is gone \(Connection closed by peer\)"):
        with _peer_loss_as_error(Dist(world=2, rank=0)):
            raise gloo
    for dist, error in ((Dist(world=2, rank=1), RuntimeError("CUDA out of memory")), (Dist(), gloo)):
        with pytest.raises(RuntimeError) as raised:
            with _peer_loss_as_error(dist):
                raise error
        assert raised.value is error
    assert LOST_MESSAGE.startswith("another rank")


def test_a_rank_whose_launcher_is_killed_stops(tmp_path):
    """`kill -9` of torchrun cannot stop its processes: a rank sees its parent go and stops as a
    SIGTERM stops it (raising Terminated, so its stage ends failed), instead of training on."""
    from kdstore.distributed import ORPHAN_MESSAGE

    out = tmp_path / "rank.out"
    rank = (
        "import signal, time\n"
        "from kdstore import distributed as d\n"
        "signal.signal(signal.SIGTERM, d._raise_on_sigterm)\n"
        "d._stop_with_launcher(poll_s=0.05)\n"
        "print('ready', flush=True)\n"
        "try:\n"
        "    time.sleep(60)\n"
        "except BaseException as exc:\n"
        f"    open({str(out)!r}, 'w').write(f'{{type(exc).__name__}}: {{exc}}')\n"
    )
    launcher = (
        "import os, subprocess, sys\n"
        f"rank = subprocess.Popen([sys.executable, '-c', {rank!r}], stdout=subprocess.PIPE)\n"
        "rank.stdout.readline()\n"  # the rank is watching
        "os._exit(0)\n"  # gone without a word to it, as after kill -9
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    subprocess.run([sys.executable, "-c", launcher], env=env, cwd=REPO, timeout=60, check=True)
    for _ in range(200):
        if out.exists() and out.read_text():
            break
        time.sleep(0.05)
    assert out.read_text() == f"Terminated: {ORPHAN_MESSAGE}"


def test_rank_0s_own_failure_is_not_reported_as_the_rank_that_heard_of_it(taught, tiny_model, tmp_path):
    db = copy_store(taught["one"], tmp_path / "store")
    teach_with_one_rank_patched(db, tiny_model, "r0", tmp_path, 0, (
        "    import kdstore.outputs\n"
        "    def broken(*args, **kwargs):\n"
        "        raise RuntimeError('rank zero disk full')\n"
        "    kdstore.outputs.write_scores = broken\n"))
    stage = stage_of(db, "r0", "teach")
    assert stage.status == "failed" and stage.error.startswith("RuntimeError: rank zero disk full"), stage.error


def test_a_rank_0_that_fails_saving_leaves_no_rows_of_the_others(taught, tiny_model, tmp_path):
    """Rank 0 fails alone (saving the model) and clears the stage's outputs: rank 1, which scored
    its shard meanwhile, must not write its rows into the failed stage afterwards."""
    db = copy_store(taught["one"], tmp_path / "store")
    teach_with_one_rank_patched(db, tiny_model, "nosave", tmp_path, 0, (
        "    import kdstore.teacher\n"
        "    def broken(*args, **kwargs):\n"
        "        raise RuntimeError('rank zero cannot save')\n"
        "    kdstore.teacher._save = broken\n"))
    stage = stage_of(db, "nosave", "teach")
    assert stage.status == "failed" and "rank zero cannot save" in stage.error
    with Store.open(str(db), create=False).engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Logit).where(Logit.stage_id == stage.id)).scalar_one() == 0


def test_ranks_that_read_different_rows_stop_before_training(taught, tiny_model, tmp_path):
    """Each rank reads the store itself: a label edit between their reads (here: rank 1 sees one
    label flipped) is refused, not trained on with DDP averaging unlike gradients."""
    db = copy_store(taught["one"], tmp_path / "store")
    teach_with_one_rank_patched(db, tiny_model, "moved", tmp_path, 1, (
        "    import kdstore.teacher\n"
        "    read = kdstore.teacher.training_rows\n"
        "    def edited(*args, **kwargs):\n"
        "        train, dev = read(*args, **kwargs)\n"
        "        train.labels[0] = 1 - train.labels[0]\n"
        "        return train, dev\n"
        "    kdstore.teacher.training_rows = edited\n"))
    stage = stage_of(db, "moved", "teach")
    assert stage.status == "failed" and "the ranks read different training rows: the store changed while they read it" in stage.error
    assert count(db, Logit, stage_id=stage.id) == 0


def test_a_where_that_reads_other_rows_each_time_is_named_not_a_store_change(taught, tiny_model, tmp_path):
    """`--where "random() % 2 = 0"` (a random half of train): under torchrun each process drew its own
    half, and the stage said the store changed while they read it, "run the stage again", which failed
    alike every time. A --where of random() is refused before any stage now (kd labels detect and kd
    report read it again too), once, in one line."""
    db = copy_store(taught["one"], tmp_path / "store")
    done = torchrun("teach", "--run", "half", "--model", str(tiny_model), "--epochs", "1", "--max-len", "32",
                    "--where", "random() % 2 = 0", "--db", str(db), ok=False)
    lines = error_lines(done)
    assert len(lines) == 1 and "--where 'random() % 2 = 0': random() selects other rows at each read" in lines[0], done.stderr[-3000:]
    store = Store.open(str(db), create=False)
    try:
        assert not store.run_exists("half")
    finally:
        store.close()


def test_a_stages_warnings_are_rank_0s_alone(taught, tiny_model, tmp_path):
    """Every rank holds the same (DDP-averaged) weights, so every rank sees them diverge; rank 0 alone
    prints the warning, as it prints the stage's other warnings (each rank printed it). The --overwrite
    warning is rank 0's alone too; it named a student that failed (no figures to stay those of the old
    teacher, nothing to retrain with --overwrite) beside the ones that succeeded. (One launch for both.)"""
    db = copy_store(taught["one"], tmp_path / "store")
    with one_thread():
        kd("teach", "--run", "ow", "--model", str(tiny_model), "--epochs", "1", "--max-len", "32", "--db", str(db))
        for name in ("good", "broke"):
            kd("distill", "--run", "ow", *DISTILL, "--name", name, "--db", str(db))
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE stages SET status = 'failed', error = 'disk on fire' WHERE name = 'broke'")
    wrapper = tmp_path / "diverges.py"
    wrapper.write_text(
        "import kdstore.torchutil\n"
        "calls = []\n"
        "def diverged_from_epoch_2(module):\n"
        "    calls.append(1)\n"
        "    return 'bert.embeddings.word_embeddings.weight' if len(calls) >= 2 else None\n"
        "kdstore.torchutil.nonfinite_weight = diverged_from_epoch_2\n"
        "from commands.cli import main\nmain()\n", encoding="utf-8")
    done = torchrun("teach", "--run", "ow", "--model", str(tiny_model), "--epochs", "3", "--max-len", "32", "--overwrite", "--db", str(db),
                    script=wrapper)
    assert done.stderr.count("warning: training diverged in epoch 2") == 1, done.stderr[-3000:]
    assert done.stderr.count("warning: --overwrite replaces the teacher that ow/good used: its figures stay") == 1, done.stderr[-3000:]
    assert "ow/broke" not in done.stderr
    assert stage_of(db, "ow", "teach").status == "succeeded"


# distill ---------------------------------------------------------------------------------------------
def test_accelerate_launch_runs_two_processes_as_torchrun_does(taught, tmp_path):
    """The README's other launcher, `accelerate launch --multi_gpu --num_processes N -m commands.cli -- ...`:
    it starts torch.distributed.run's processes (gloo here, where there is no GPU), and they distill the
    student one process does. (Its `--cpu` runs one process, whatever --num_processes says.)"""
    pytest.importorskip("accelerate")
    one = copy_store(taught["one"], tmp_path / "one")
    two = copy_store(taught["one"], tmp_path / "two")
    with one_thread():
        kd("distill", "--run", "r", *DISTILL, "--db", str(one))
    env = {k: v for k, v in os.environ.items() if k not in ("KD_DB", "KD_CONFIG", "KD_ARTIFACTS")}
    env.update(KD_NO_PROGRESS="1", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])))
    with socket.socket() as free:  # (a port of its own: accelerate's default, 29500, may be another test's torchrun's)
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
           "-m", "commands.cli", "--", "distill", "--run", "r", *DISTILL, "--json", "--db", str(two)]
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"accelerate launch: exit {done.returncode}\n{done.stdout}\n{done.stderr[-4000:]}"
    report = json.loads(done.stdout)
    assert report["status"] == "succeeded" and report["metrics"]["all"]["processes"] == 2
    s1, s2 = stage_of(one, "r", "distill-textcnn"), stage_of(two, "r", "distill-textcnn")
    (ids1, logits1), (ids2, logits2) = logits_of(one, s1.id), logits_of(two, s2.id)
    assert np.array_equal(ids1, ids2)
    np.testing.assert_allclose(logits2, logits1, atol=ATOL, rtol=0)


# (a plain distill under two processes is the accelerate test's; each launch of two processes costs a
# dozen seconds of this 2-core CI before any training, so the options that take paths of their own
# share one launch where they can)
@pytest.mark.parametrize("extra", [["--temperature-schedule", "cwsm", "--temperature-beta", "0.5", "--eval-every", "4", "--patience", "1"],
                                   ["--folds", "2", "--grad-accum", "3"]],
                         ids=["per-sample-temperature-eval-every", "folds-grad-accum"])
def test_two_processes_distill_the_same_student_as_one(taught, tmp_path, extra):
    """Per-sample temperatures are set against the whole global batch's mean weight, not a rank's share;
    fold students score their held-out shards and the rest on every rank alike; dev scored every N steps
    keeps the same step on both; each rank's share run in pieces (DDP's no_sync but at the last) steps alike."""
    one = copy_store(taught["one"], tmp_path / "one")
    two = copy_store(taught["one"], tmp_path / "two")  # the same teacher logits for both
    with one_thread():
        kd("distill", "--run", "r", *DISTILL, *extra, "--db", str(one))
    out = torchrun("distill", "--run", "r", *DISTILL, *extra, "--json", "--db", str(two))
    report = json.loads(out.stdout)
    assert report["status"] == "succeeded" and report["metrics"]["all"]["processes"] == 2
    assert report["metrics"]["all"]["pool_samples"] == 30
    s1, s2 = stage_of(one, "r", "distill-textcnn"), stage_of(two, "r", "distill-textcnn")
    n = len(sample_ids(two))
    assert count(two, Logit, stage_id=s2.id) == count(one, Logit, stage_id=s1.id) == n
    assert count(two, Prediction, stage_id=s2.id) == n
    (ids1, logits1), (ids2, logits2) = logits_of(one, s1.id), logits_of(two, s2.id)
    assert np.array_equal(ids1, ids2)
    np.testing.assert_allclose(logits2, logits1, atol=ATOL, rtol=0)
    assert Path(s2.artifact_path, *(["fold-1"] if "--folds" in extra else []), "student.pt").exists()
    if "--eval-every" in extra:
        assert metrics_of(two, s2.id)["best_step"] == metrics_of(one, s1.id)["best_step"]


def test_rank_0s_work_alone_neither_fails_the_other_ranks_nor_shares_their_cores(taught, tmp_path):
    """Two things rank 0 does alone while the other ranks wait, in one launch (a launch costs a dozen seconds
    of CI before any training).

    `--augment` texts are made by rank 0 alone (8 ms a train text at --augment-n 20: half an hour for a
    quarter of a million) while the other ranks wait for them: they waited in a collective bound by the
    group's 30-minute timeout, and the stage failed with gloo's "Timed out waiting 1800000ms for recv".
    Here the group's timeout is cut to 4 s and rank 0's augmenting takes 8 s longer.

    Rank 0 times the CPU speed of the model (latency, throughput) once the stage's work is done; the
    other ranks had returned and were exiting (interpreter and torch teardown) meanwhile: on 2 cores
    the stored latency was 2-4x and the throughput half a one-process run's. They wait, idle, for
    rank 0 to end the stage's work before they exit."""
    db = copy_store(taught["one"], tmp_path / "store")
    marks = tmp_path / "marks"
    marks.mkdir()
    wrapper = tmp_path / "rank0_alone.py"
    wrapper.write_text(
        "import atexit, datetime, os, pathlib, time\n"
        "import kdstore.distributed\n"
        "kdstore.distributed.TIMEOUT = datetime.timedelta(seconds=4)\n"
        f"marks = pathlib.Path({str(marks)!r})\n"
        "if os.environ.get('RANK') == '1':\n"
        "    atexit.register(lambda: (marks / 'rank1-exited').touch())\n"
        "else:\n"
        "    import kdstore.distill\n"
        "    made, measure = kdstore.distill.ensure_augmented, kdstore.distill.measure\n"
        "    def slow(*args, **kwargs):\n"
        "        time.sleep(8)\n"
        "        return made(*args, **kwargs)\n"
        "    def timed(*args, **kwargs):\n"
        "        time.sleep(2)  # (rank 1, exiting, has ended by then)\n"
        "        (marks / 'timed-with-rank1-gone').write_text(str((marks / 'rank1-exited').exists()))\n"
        "        return measure(*args, **kwargs)\n"
        "    kdstore.distill.ensure_augmented, kdstore.distill.measure = slow, timed\n"
        "from commands.cli import main\nmain()\n", encoding="utf-8")
    done = torchrun("distill", "--run", "r", *DISTILL, "--epochs", "1", "--augment", "mask", "--augment-n", "1", "--name", "alone",
                    "--db", str(db), script=wrapper)
    stage = stage_of(db, "r", "alone")
    assert (stage.status, stage.error) == ("succeeded", None)
    assert error_lines(done) == [], done.stderr[-3000:]
    assert (marks / "timed-with-rank1-gone").read_text() == "False"
    assert (marks / "rank1-exited").exists()


def test_two_processes_distill_a_transformer_with_intermediate_losses_without_ddp_noise(taught, tmp_path):
    """The intermediate losses train through DDP as in one process. DDP searched every step for unused
    parameters (``find_unused_parameters``) where none can be: each rank printed torch's warning that it
    had found none, and paid an extra walk of the graph a step. The projection of a narrower student is
    unused only when no hidden-state loss reads it (attention KL alone): there the search stays on."""
    common = ["--student", "transformer", "--layers", "1", "--epochs", "2", "--batch-size", "9", "--max-len", "32"]
    one = copy_store(taught["one"], tmp_path / "one")
    two = copy_store(taught["one"], tmp_path / "two")
    same = [*common, "--hidden-mse", "1", "--attention-kl", "1", "--name", "same"]
    with one_thread():
        kd("distill", "--run", "r", *same, "--db", str(one))
    done = torchrun("distill", "--run", "r", *same, "--db", str(two))
    assert "find_unused_parameters" not in done.stderr, done.stderr[-3000:]
    s1, s2 = stage_of(one, "r", "same"), stage_of(two, "r", "same")
    (ids1, logits1), (ids2, logits2) = logits_of(one, s1.id), logits_of(two, s2.id)
    assert np.array_equal(ids1, ids2)
    np.testing.assert_allclose(logits2, logits1, atol=ATOL, rtol=0)
    # a narrower student matched on attentions alone: its projection takes no part in the loss
    torchrun("distill", "--run", "r", *common, "--width", "16", "--no-init-from-teacher", "--attention-kl", "1",
             "--name", "narrow", "--db", str(two))
    assert stage_of(two, "r", "narrow").status == "succeeded"


@pytest.mark.parametrize("objective, extra", [("mlm", ()), ("electra", ("--grad-accum", "3"))], ids=["mlm", "electra-grad-accum"])
def test_two_processes_pretrain(taught, tmp_path, objective, extra):
    db = copy_store(taught["two"], tmp_path)
    out = torchrun("pretrain", "--run", "p", "--objective", objective, "--layers", "2", "--hidden", "32", "--heads", "2",
                   "--steps", "3", "--batch-size", "8", "--min-count", "1", *extra, "--json", "--db", str(db))
    train = json.loads(out.stdout)["metrics"]["train"]
    assert train["processes"] == 2 and train["steps"] == 3
    assert ("rtd_loss" in train) == (objective == "electra")
    assert stage_of(db, "p", "pretrain").status == "succeeded"


def test_pretrain_refuses_ranks_that_read_unlike_corpora(taught, tmp_path):
    """Two hosts, each with its own copy of --corpus: a copy that differs is refused, not averaged."""
    db = copy_store(taught["two"], tmp_path)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("这个很好用\n那个太差了\n", encoding="utf-8")
    wrapper = tmp_path / "other_copy.py"
    wrapper.write_text(
        "import os\n"
        "if os.environ.get('RANK') == '1':\n"
        "    import kdstore.pretrain\n"
        "    kdstore.pretrain.read_corpus = lambda paths, digests=None: ['另一台机器上的语料']\n"
        "from commands.cli import main\nmain()\n", encoding="utf-8")
    torchrun("pretrain", "--run", "pc", "--layers", "1", "--hidden", "32", "--heads", "2", "--steps", "2", "--min-count", "1",
             "--corpus", str(corpus), "--db", str(db), ok=False, script=wrapper)
    stage = stage_of(db, "pc", "pretrain")
    assert stage.status == "failed" and "the ranks hold different --corpus texts or vocabularies" in stage.error


def test_pretrain_refuses_a_corpus_on_standard_input_under_torchrun(taught, tmp_path):
    """`xzcat news.xz | torchrun ... kd -- pretrain --corpus -`: the processes share the pipe, and one
    read it all; the other stopped with "-: no text in the corpus (the file is empty ...)", a misleading
    cause. Refused in one line naming the cause, no stage."""
    db = copy_store(taught["two"], tmp_path)
    done = torchrun("pretrain", "--run", "pin", "--layers", "1", "--hidden", "32", "--heads", "2", "--steps", "2", "--min-count", "1",
                    "--corpus", "-", "--db", str(db), ok=False, stdin="这个很好用\n那个太差了\n" * 50)
    lines = error_lines(done)
    assert len(lines) == 1 and "--corpus -" in lines[0] and "torchrun" in lines[0] and "file" in lines[0], done.stderr[-3000:]
    store = Store.open(str(db), create=False)
    try:
        assert not store.run_exists("pin")
    finally:
        store.close()


def test_a_warning_said_before_the_stage_is_printed_by_rank_0_alone(monkeypatch, capsys):
    """`--layer-map` that nothing uses, --patience with dev trained on...: printed by every torchrun process."""
    from commands.train import _warn

    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank, printed in (("1", ""), ("0", "warning: said once\n")):
        monkeypatch.setenv("RANK", rank)
        _warn("said once")
        assert capsys.readouterr().err == printed


def test_a_ctrl_c_in_a_rank_other_than_0_ends_it_at_once_without_a_word(tmp_path, monkeypatch, capsys):
    """A Ctrl-C reaches every process (the terminal's, and torchrun passes it on): rank 0 says
    "interrupted"; rank 1 waited STOP_WAIT_S for a SIGTERM that never came (torchrun sent SIGINT),
    then printed "Aborted!" under rank 0's error, the command ending 10 s after the Ctrl-C."""
    import threading

    from commands.cli import cli
    from kdstore import distributed as d

    for event in ("STOPPED", "NOTED", "TOLD", "MAIN_GONE"):
        monkeypatch.setattr(d, event, threading.Event())
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("commands.train.open_store", interrupted)
    started = time.monotonic()
    with pytest.raises(SystemExit) as exited:
        cli.main(["teach", "--run", "r", "--model", "m", "--db", str(tmp_path / "kd.db")], prog_name="kd")
    assert exited.value.code == 1 and time.monotonic() - started < d.STOP_WAIT_S / 2
    assert "Aborted!" not in capsys.readouterr().err
