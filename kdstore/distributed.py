"""The process group: which rank this process is under ``torchrun`` (or ``accelerate launch``) and
the few collective steps the training stages need.

``Dist`` is read from the variables the launcher sets (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``).
With one process, the default, every helper is a no-op that hands its input back, so a stage
computes exactly what it computes without a launcher.

Conventions the stages follow:

- every rank loads the same data and, from the same seed, draws the same global batches;
  ``--batch-size`` stays the *global* batch size, and ``split_batch`` gives each rank its share
  with a loss weight that makes DDP's averaged gradient the gradient of the whole batch;
- samples to score are sharded (``shard``), each rank writes its own rows, ``gather_rows``
  collects them where all are needed (dev metrics, final figures);
- only rank 0 writes run state, metrics and artifacts (``on_main``, ``shared_stage``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import signal
import sys
import threading
import time
import contextlib
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence, TypeVar

import numpy as np
import torch
from sqlalchemy import update

from .errors import KdError, Terminated
from .runs import NOTED_BY_RANK, StageHandle, mark_crashed, stage_scope
from .schema import Stage
from .store import SampleSet, Store
from .torchutil import pick_device

T = TypeVar("T")

# How long a rank waits in a collective (a barrier while another rank saves, scores or fails)
# before the group gives up with an error; scoring shards are balanced, so waits are short.
TIMEOUT = dt.timedelta(minutes=30)
# How long the other ranks wait for work rank 0 does alone (``broadcast_object(..., patient=True)``: the texts
# `kd distill --augment` makes, 8 ms a train text at --augment-n 20, half an hour for 250,000 of them); a rank
# that is gone is still noticed at once (its connection closes).
PATIENT_TIMEOUT = dt.timedelta(days=7)
PATIENT: dict[str, Any] = {}  # the process group of those waits (gloo, PATIENT_TIMEOUT), made as the group starts


@dataclass(frozen=True)
class Dist:
    """This process's place in the group: ``world`` processes, this one is ``rank``."""

    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "Dist":
        try:
            world, rank = int(env.get("WORLD_SIZE", "1")), int(env.get("RANK", "0"))
            local_rank = int(env.get("LOCAL_RANK", "0"))
        except ValueError as exc:
            raise KdError(f"bad WORLD_SIZE/RANK/LOCAL_RANK in the environment: {exc}") from None
        if world < 1 or not 0 <= rank < world:
            raise KdError(f"RANK {rank} is not within WORLD_SIZE {world}")
        return cls(world=world, rank=rank, local_rank=local_rank)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    # the group's life --------------------------------------------------------------------
    def init(self, device: torch.device) -> None:
        """Join the group (nccl on CUDA, gloo otherwise) when there is more than one process.

        Also: the CUDA device is this rank's ``LOCAL_RANK``; progress bars stay on rank 0; SIGTERM
        (what torchrun sends the survivors when a rank fails) raises, so rank 0's stage ends failed;
        so does the launcher's end (``_stop_with_launcher``).
        """
        if not self.active:
            return
        if device.type == "cuda":
            gpus = torch.cuda.device_count()
            if self.local_rank >= gpus:  # torch.cuda.set_device would fail with a CUDA traceback
                raise KdError(f"LOCAL_RANK {self.local_rank}: this machine has {gpus} CUDA device(s), one per process: "
                              f"start at most {gpus} process(es) per node (--nproc-per-node {gpus}), or use --device cpu")
            torch.cuda.set_device(self.local_rank)
        if not self.is_main:
            os.environ["KD_NO_PROGRESS"] = "1"
        # SIGTERM keeps its default (the process ends) while the group starts: the rendezvous waits in C++,
        # where a Python handler would run only once the other ranks joined; a rank that failed before it
        # joined never does, and the launcher's SIGTERM went unheeded until it killed this one 30 s later.
        # No stage is open yet: there is nothing to record.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        try:
            torch.distributed.init_process_group(
                "nccl" if device.type == "cuda" else "gloo", rank=self.rank, world_size=self.world, timeout=TIMEOUT
            )
        except ValueError as exc:  # env:// without MASTER_ADDR/MASTER_PORT: WORLD_SIZE set, but by no launcher
            raise KdError(f"WORLD_SIZE is {self.world}, but the process group cannot start ({_one_line(exc)}): "
                          "run kd under torchrun, or unset WORLD_SIZE") from None
        PATIENT["group"] = torch.distributed.new_group(backend="gloo", timeout=PATIENT_TIMEOUT)
        signal.signal(signal.SIGTERM, _raise_on_sigterm)
        SET_UP.clear()
        _stop_with_launcher()

    def close(self) -> None:
        """Leave the group. Gloo's worker threads free the buffers of the last collective after it
        returns, and need the GIL for it: a process that went straight on to exit could be aborted
        ("terminate called without an active exception"), so the GIL is given up for a moment."""
        if self.active and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
            PATIENT.clear()
            time.sleep(0.1)

    # collectives -------------------------------------------------------------------------
    def set_up(self, error: BaseException | None = None) -> None:
        """The ranks' first collective, once: each says whether its set-up (the command's checks before
        its stage) failed, and how. A rank that failed passes ``error`` (from ``process_group``) and
        re-raises it itself; the others raise it as that rank's (rank 0 prints ``rank N: ...``, the
        others nothing). Without it, a rank that failed alone left the group, and the others' next
        collective met only gloo's "Connection closed by peer": the cause was lost."""
        if not self.active or SET_UP.is_set():
            return
        SET_UP.set()
        failures = self.all_gather_object(None if error is None else _one_line(error))
        if error is not None:
            if not self.is_main:
                TOLD.set()  # rank 0 heard of it (and prints it, or its own): this rank prints nothing
            return
        for rank, message in enumerate(failures):
            if message is not None:
                raise KdError(f"rank {rank}: {message}" if self.is_main else f"rank {rank} failed: {message}")

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    def broadcast_object(self, obj: T, *, patient: bool = False) -> T:
        """Rank 0's ``obj`` on every rank (the others pass anything, e.g. ``None``); ``patient``: the
        others may wait longer than ``TIMEOUT`` for it (``PATIENT_TIMEOUT``)."""
        if not self.active:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0, group=PATIENT.get("group") if patient else None)
        return box[0]

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def sum_across(self, values: Sequence[float]) -> np.ndarray:
        """Element-wise sum of every rank's ``values`` (equal lengths), on every rank."""
        if not self.active:
            return np.asarray(values, dtype=np.float64)
        t = torch.tensor(list(values), dtype=torch.float64, device=self.collective_device())
        torch.distributed.all_reduce(t)
        return t.cpu().numpy()

    def collective_device(self) -> torch.device:
        """Where a tensor for a collective must live: this rank's GPU under NCCL (it reduces no CPU
        tensor), the CPU under gloo."""
        if self.active and torch.distributed.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def agree_on(self, what: str, *parts: bytes | str) -> None:
        """Refuse to go on unless every rank holds the same ``parts`` (texts read from files each
        rank opens itself, a vocabulary each builds: another host's copy may differ)."""
        if not self.active:
            return
        digest = hashlib.sha256()
        for part in parts:
            digest.update(part.encode("utf-8") if isinstance(part, str) else part)
            digest.update(b"\0")
        if self._differs(digest):
            raise KdError(f"the ranks hold different {what}: each must read the same files (on every host)")

    def _differs(self, digest) -> bool:
        """Whether the ranks' ``digest`` s (hashlib objects) are not all the same."""
        return len(set(self.all_gather_object(digest.hexdigest()))) > 1

    def agree(self, what: str, *sets: "SampleSet") -> None:
        """Refuse to go on unless every rank read the same samples with the same labels (each rank
        reads the store itself: an ingest or a label edit between their reads would have them train
        on different rows, and DDP would hang or average unlike gradients)."""
        if not self.active:
            return
        digest = hashlib.sha256()
        for part in sets:
            digest.update(np.ascontiguousarray(part.ids, dtype=np.int64).tobytes())
            digest.update(np.ascontiguousarray(part.labels, dtype=np.int64).tobytes())
        if self._differs(digest):
            raise KdError(f"the ranks read different {what}: the store changed while they read it (an ingest or a "
                          "label edit during the run?); run the stage again")

    def all_succeed(self, fn: Callable[[], T]) -> T:
        """``fn()`` on every rank, then a check that it succeeded on all of them: a rank whose ``fn``
        raised re-raises its error, the others raise a KdError naming that rank and its error (so rank
        0 records the real cause in the stage, not just that the group broke)."""
        if not self.active:
            return fn()
        try:
            result, error, failure = fn(), None, None
        except Exception as exc:  # noqa: BLE001 - re-raised below, after every rank has heard of it
            result, error, failure = None, exc, _one_line(exc)
        failures = self.all_gather_object(failure)
        if error is not None:
            if not self.is_main:
                TOLD.set()  # rank 0 heard of it, and names it: this rank prints nothing
            raise error
        for rank, message in enumerate(failures):
            if message is not None:
                raise KdError(f"rank {rank} failed: {message}")
        return result

    def mean_of(self, values: list[float]) -> float:
        """The mean of every rank's ``values`` together (e.g. the losses of an epoch)."""
        if not self.active:
            return float(np.mean(values))
        return float(np.mean([v for part in self.all_gather_object(list(values)) for v in part]))

    def batch_mean(self, values: torch.Tensor, *, counted: bool = True) -> torch.Tensor:
        """The mean of ``values`` over every rank's share of one global batch (a float32 scalar on
        ``values``' device); a rank whose share is only filler (``counted=False``) adds nothing."""
        if not self.active:
            return values.float().mean()
        pair = torch.stack([values.float().sum(), values.new_tensor(float(len(values)), dtype=torch.float32)])
        if not counted:
            pair = torch.zeros_like(pair)
        torch.distributed.all_reduce(pair)
        return pair[0] / pair[1].clamp(min=1.0)

    def share_weights(self, counts: list[int]) -> list[float]:
        """For each mean this rank took over ``counts[i]`` items (masked tokens, say), the weight that
        makes DDP's average of the ranks' gradients the gradient of the mean over every rank's items
        together: ``count * world / total`` (0 where no rank had an item), 1 in one process."""
        if not self.active:
            return [1.0] * len(counts)
        return [c * self.world / t if t > 0 else 0.0 for c, t in zip(counts, self.sum_across(counts).tolist())]

    def gather_rows(self, ids: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every rank's ``(id, row)`` pairs together, in id order, on every rank."""
        parts = self.all_gather_object((np.asarray(ids), np.asarray(rows))) if self.active else [(np.asarray(ids), np.asarray(rows))]
        parts = [p for p in parts if len(p[0])] or parts[:1]  # an empty shard may have no row width
        all_ids = np.concatenate([i for i, _ in parts])
        all_rows = np.concatenate([r for _, r in parts])
        order = np.argsort(all_ids, kind="stable")
        return all_ids[order], all_rows[order]

    # who does what -----------------------------------------------------------------------
    def share_label(self, label: str) -> str:
        """A bar's ``label`` for work each process does its shard of (``shard``): under torchrun the bar rank 0
        draws counts its share alone (``logits 557/557`` of 1,113 samples read as half of them left unscored)."""
        return f"{label} (this process's share, 1 of {self.world})" if self.active else label

    def shard(self, n: int) -> np.ndarray:
        """Boolean mask of the ``n`` items this rank owns: every ``world``-th, from ``rank``.

        Strided rather than contiguous, so each rank gets a like mix when the items are ordered by
        source (a labeled file first, a pool of long texts after).
        """
        return np.arange(n) % self.world == self.rank

    def split_batch(self, batch: np.ndarray) -> tuple[np.ndarray, float]:
        """This rank's share of one global batch and the weight of its mean loss.

        DDP averages the ranks' gradients; weighting each share's mean loss by
        ``len(share) * world / len(batch)`` makes that average the gradient of the whole batch's mean
        loss, as in one process. A rank left without a sample (a batch smaller than ``world``)
        runs the batch's first sample at weight 0, so every rank takes every optimizer step.
        """
        if not self.active:
            return batch, 1.0
        share = batch[self.rank :: self.world]
        if len(share) == 0:
            return batch[:1], 0.0
        return share, len(share) * self.world / len(batch)

    def wrap(self, model: torch.nn.Module, *, find_unused: bool = False) -> torch.nn.Module:
        """``model`` under DistributedDataParallel (gradients averaged across ranks), or as it is."""
        if not self.active:
            return model
        on_cuda = next(model.parameters()).is_cuda
        return torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[self.local_rank] if on_cuda else None, find_unused_parameters=find_unused
        )

    def accumulating(self, net: torch.nn.Module, *, last: bool):
        """Around a piece's forward and backward under ``--grad-accum``: DDP's ``no_sync`` for every piece
        but a step's last (its gradients are kept on this rank, averaged across ranks once, at the last);
        nothing to do in one process."""
        if self.active and not last:
            return net.no_sync()
        return contextlib.nullcontext()

    def on_main(self, fn: Callable[..., T]) -> Callable[..., T | None]:
        """``fn`` on rank 0, a no-op returning ``None`` on the other ranks (e.g. ``store.add_metrics``)."""
        if self.is_main:
            return fn
        return lambda *args, **kwargs: None


SINGLE = Dist()


@contextmanager
def process_group(device: str) -> Iterator[Dist]:
    """The launcher's group, joined for the block on ``device`` (``--device``); one process joins nothing."""
    dist = Dist.from_env()
    if dist.active:
        dist.init(pick_device(device))
    try:
        with _peer_loss_as_error(dist):
            yield dist
    except Exception as exc:
        if dist.active and not SET_UP.is_set():  # failed before the first collective: the others hear why
            try:
                dist.set_up(exc)
            except Exception:  # noqa: BLE001 - best effort (the group may be what failed): its own error stands
                pass
        raise
    finally:
        dist.close()


@contextmanager
def shared_stage(dist: Dist, store: Store, *, run: str, kind: str, name: str | None = None, **scope: Any) -> Iterator[StageHandle]:
    """``stage_scope`` on rank 0, which sends the stage's id to the other ranks; they work in the
    same stage without recording anything. A stage rank 0 cannot open stops every rank."""
    name = kind if name is None else name
    with _peer_loss_as_error(dist):
        dist.set_up()  # every rank's checks passed (or rank 0 names the one that failed): no stage before
    if not dist.is_main:
        stage_id = dist.broadcast_object(None)
        if stage_id is None:
            raise KdError(f"{NO_STAGE} {name!r} of run {run!r} (its error says why)")
        try:
            with _peer_loss_as_error(dist):
                yield StageHandle(store=store, id=stage_id, run=run, name=name, kind=kind)
                # idle until rank 0 has done the stage's work: it times the model's CPU speed last, which a rank
                # exiting meanwhile (its interpreter and torch torn down) slowed by half on 2 cores
                dist.broadcast_object(None, patient=True)
        except BaseException as exc:
            _note_error(store, stage_id, dist.rank, exc)
            _fail_if_main_gone(store, stage_id, lost=_lost(exc))
            if MAIN_GONE.is_set():  # this rank marked it, and prints the one error: rank 0's end, not its own SIGTERM
                raise KdError(f"rank 0 is gone, killed outright (kill -9, or the out-of-memory killer: see `dmesg`): "
                              f"stage {name!r} of run {run!r} is recorded failed; run the command again to start it over") from None
            raise
        return
    opened: StageHandle | None = None
    try:
        with stage_scope(store, run=run, kind=kind, name=name, **scope) as stage:
            opened = stage
            dist.broadcast_object(stage.id)
            with _peer_loss_as_error(dist):  # the stage records the one line, not gloo's
                yield stage
                dist.broadcast_object(None, patient=True)  # (the other ranks wait for it, idle: see above)
    except (KdError, Terminated) as exc:
        # stopped by torchrun, or by the group losing a rank, after another rank noted its error on the
        # stage: that error is the one line rank 0 prints (the other ranks print none, see ``prints_its_error``)
        cause = _noted_cause(store, opened.id) if opened is not None and _stopped_by_another(exc) else None
        if cause is None:
            raise
        raise KdError(cause) from None
    finally:
        if opened is None:
            dist.broadcast_object(None)


def _stopped_by_another(exc: BaseException) -> bool:
    """Whether rank 0's error is only what another rank's failure did to it: torchrun's SIGTERM, or a
    collective whose other side is gone."""
    return str(exc).startswith(SIGTERM_MESSAGE) or _lost(exc)  # (stage_scope adds what became of the stage)


def _lost(exc: BaseException) -> bool:
    """Whether ``exc`` is the group's report that another rank is gone (``_peer_loss_as_error``)."""
    return str(exc).startswith(LOST_MESSAGE[:30])


def _noted_cause(store: Store, stage_id: int) -> str | None:
    """The error another rank noted on the (failed) stage ``stage_id`` (``rank N: ...``), if any."""
    try:
        with store.session() as s:
            stage = s.get(Stage, stage_id)
            error = None if stage is None else stage.error
    except Exception:  # noqa: BLE001 - best effort: rank 0's own error stands
        return None
    return error if error and NOTED_BY_RANK.match(error) else None


def _note_error(store: Store, stage_id: int, rank: int, exc: BaseException) -> None:
    """A rank other than 0 failed: its error goes on the stage before the launcher stops rank 0 with
    SIGTERM, so that the stage rank 0 marks failed keeps the cause (best effort: the store may be
    what failed). Another rank's error passed on (``all_succeed``), or the group losing a rank that
    stopped, is no cause: that rank notes its own. A SIGTERM is noted only while the stage has no
    error and still runs: when torchrun stops the survivors, the rank that failed has noted its
    error (rank 0 recorded its stage) before it exited, so a SIGTERM that finds none came from
    outside (a kill of this rank) and is the cause."""
    if isinstance(exc, KdError) and (ECHO.match(str(exc)) or _lost(exc)):
        return  # another rank's error passed on, or the group's report that another rank is gone: not a cause
    if isinstance(exc, KeyboardInterrupt):
        # noted only while the stage has no error yet: a first cause; worded as rank 0 records its own
        # (a Ctrl-C in the terminal reaches every rank: the stage says "interrupted", not that rank 1 was)
        exc = KdError("interrupted (KeyboardInterrupt)")
    try:
        with store.engine.begin() as conn:
            noted = conn.execute(update(Stage).where(Stage.id == stage_id, Stage.status == "running", Stage.error.is_(None))
                                 .values(error=f"rank {rank}: {_one_line(exc)}")).rowcount
        if noted:
            NOTED.set()  # rank 0 reports it: this rank prints nothing (``prints_its_error``)
    except Exception:  # noqa: BLE001 - the rank's own error is what it raises
        pass


def _fail_if_main_gone(store: Store, stage_id: int, *, lost: bool = False) -> None:
    """Rank 0 killed outright (``kill -9``, the OOM killer) cannot end its stage, which stayed
    'running' until another stage started on the machine: a rank that stops after it marks it failed
    (``mark_crashed``: only a stage whose process is certainly gone; best effort, as ``_note_error``).
    When the rank stops because a peer is gone (``lost``), rank 0's process may still be exiting
    (its sockets closed, not yet a zombie): the stage is looked at again for up to ``MAIN_GONE_WAIT_S``.
    A rank that marked it says why itself (``MAIN_GONE``): rank 0 cannot."""
    deadline = time.monotonic() + (MAIN_GONE_WAIT_S if lost else 0.0)
    try:
        while True:
            if mark_crashed(store):
                MAIN_GONE.set()
                return
            if time.monotonic() >= deadline:
                return
            with store.session() as s:
                stage = s.get(Stage, stage_id)
                if stage is None or stage.status != "running":  # rank 0 recorded its end
                    return
            time.sleep(0.1)
    except BaseException:  # noqa: BLE001 - the rank's own error is what it raises (a second SIGTERM: the same)
        pass


MAIN_GONE_WAIT_S = 3.0


SIGTERM_MESSAGE = "terminated (SIGTERM): killed, or stopped by torchrun because another rank failed (then its error says why)"
ORPHAN_MESSAGE = "terminated: the launcher (torchrun) is gone, killed without stopping its processes"
ECHO = re.compile(r"rank \d+ failed: ")  # ``all_succeed``'s report of another rank's error
NO_STAGE = "rank 0 could not start stage"  # (rank 0 prints why)
LOST_MESSAGE = "another rank of the process group is gone"
# what gloo says in a collective whose other side has exited (a rank that failed, or was killed)
PEER_GONE = ("Connection closed by peer", "Connection reset by peer")
ORPHANED = threading.Event()
STOPPED = threading.Event()  # a SIGTERM came: the launcher stopping this rank, as it does once another has ended failed
NOTED = threading.Event()  # this rank's error is on its stage as the cause, which rank 0 prints
TOLD = threading.Event()  # this rank's error (before its stage) was passed to rank 0, which prints it (``Dist.set_up``)
SET_UP = threading.Event()  # ``Dist.set_up`` ran: the ranks passed their first collective
MAIN_GONE = threading.Event()  # this rank found rank 0 killed outright (and marked its stage): rank 0 prints nothing


# How long a rank other than 0 whose command failed waits for the launcher to stop it before it prints
# its error itself: rank 0 ends within moments when it fails alike (the same option, --model or store).
STOP_WAIT_S = 10.0


def prints_its_error(message: str, wait_s: float | None = None) -> bool:
    """Whether a rank other than 0, whose command failed with ``message``, prints it: only rank 0
    prints an error the ranks share, the others exit non-zero without a word.

    Printed at once: the error of the rank that found rank 0 killed outright (``MAIN_GONE``).
    Not printed: an error rank 0 reports (this rank's own, noted on the stage; another rank's passed
    on; rank 0's failure to start the stage), and any error once the launcher stops this rank (SIGTERM):
    torchrun does that when another process has ended failed, which is rank 0 meeting the same error
    (a wrong option, a --model that does not exist) or one that rank 0 printed. The rank waits up to
    ``wait_s`` (``STOP_WAIT_S``) for that stop, so that rank 0 is not stopped by torchrun before it
    could say why; an error of this rank alone (rank 0 carries on, or waits for this rank in a
    collective) is printed once the wait is over."""
    if MAIN_GONE.is_set():
        return True
    if NOTED.is_set() or TOLD.is_set() or STOPPED.is_set() or ECHO.match(message) or message.startswith(NO_STAGE):
        return False
    if threading.current_thread() is not threading.main_thread():  # (signals reach the main thread alone)
        return True

    def stop(_signum: int, _frame: Any) -> None:
        STOPPED.set()
        raise Terminated(SIGTERM_MESSAGE)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        deadline = time.monotonic() + (STOP_WAIT_S if wait_s is None else wait_s)
        while not STOPPED.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
    except (Terminated, KeyboardInterrupt):
        return False
    finally:
        signal.signal(signal.SIGTERM, previous)
    return not STOPPED.is_set()


@contextmanager
def _peer_loss_as_error(dist: Dist) -> Iterator[None]:
    """A collective that fails because another rank's process exited is one line (a KdError): that
    rank's own error is the cause, and gloo's RuntimeError printed a second traceback after it."""
    try:
        yield
    except RuntimeError as exc:
        message = str(exc)
        gone = next((p for p in PEER_GONE if p in message), None)
        if not dist.active or gone is None:
            raise
        raise KdError(f"{LOST_MESSAGE} ({gone}): its own error says why, where it left one; none means it was "
                      "killed outright (kill -9, or the out-of-memory killer: see `dmesg`)") from None


def _stop_with_launcher(poll_s: float = 1.0) -> None:
    """Stop this rank, as a SIGTERM would, once its launcher is gone: torchrun killed with ``kill -9``
    cannot stop its processes, which trained on (and could finish the stage) behind the user's back.
    A daemon thread polls the parent's process id; an orphan's changes (to init or a subreaper)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        ORPHANED.set()
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="kd-launcher-watch", daemon=True).start()


def _raise_on_sigterm(_signum: int, _frame: Any) -> None:
    """SIGTERM as an error, once; none while an error is being handled (rank 0 recording its stage
    as failed), where raising would cut the record short. The launcher kills what lingers."""
    from .runs import HOLD

    STOPPED.set()
    if HOLD["on"]:  # rank 0 is recording how its stage ended: raised once the record is complete
        HOLD["held"] = signal.SIGTERM
        return
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if sys.exc_info()[1] is None:
        raise Terminated(ORPHAN_MESSAGE if ORPHANED.is_set() else SIGTERM_MESSAGE)  # (not an Exception: no library's `except Exception` swallows it)


def _one_line(exc: BaseException) -> str:
    shown = getattr(exc, "format_message", None)  # a click error: its message, as the command line shows it
    first = ((shown() if callable(shown) else str(exc)).strip().splitlines() or [""])[0]
    return first if callable(shown) or isinstance(exc, (KdError, Terminated)) else f"{type(exc).__name__}: {first}"
