"""A teach stage's training state, saved as it trains, so that ``kd teach --resume`` continues a run that
was killed (an out-of-memory kill, a lost machine, Ctrl-C) from its last finished epoch instead of its first;
and a pretrain stage's, in ``RUN/pretrain~resume``, saved every few minutes (``kd pretrain --resume``:
``state.pt`` holds the step, and where the pass over the texts was, instead of an epoch).

The state lives beside the stage's model folder, in ``RUN/teach~resume`` (a name no stage can take), and
outlives the stage's failure, which removes the stage's own folder. It holds:

- ``meta.json``: the stage's config (what ``--resume`` trains with again), the digests that must still
  match (the model's files, the classes, the train and dev rows with their labels), and for each finished
  fit (the one model, or each ``--folds`` model) its metric rows and the random state it ended with;
- ``fit-TAG/``: each finished fit's best model (hard links to the stage's own files where it can);
- ``state.pt``: the fit in progress after its last finished epoch: weights, optimizer, schedule, loss
  scaler, early-stopping record, random states, and its metric rows so far.

Rank 0 writes it (under torchrun every rank reads it back); the stage's success removes it. A state
that cannot be written (a full disk) is warned of once and training goes on without it. (torch is
imported where a state is read or written: ``kd runs`` asks only whether one is there.)
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import pickle
import random
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import KdError

RESUME = "~resume"  # (stage names cannot hold "~": no stage's folder is called so)
META, STATE = "meta.json", "state.pt"
VERSION = 1
# what the key's parts are, in the refusal that names those that changed
CHANGED = {
    "texts": "the store's texts it learns from (those of its --split: an ingest since?)",
    "corpus": "the texts of its --corpus files",
    "model": "the starting model's files",
    "classes": "the store's classes",
    "train": "the train rows or their labels (an ingest, a label edit, a clean)",
    "dev": "the dev rows or their labels",
}
# settings that change no trained weight: left out of the key (--device may differ on the machine that resumes)
# (and --corpus as typed: the texts' digest keys what it read, from any working directory; and --grad-accum,
# the same steps in pieces, to float rounding: what a teacher out of GPU memory resumes with)
NOT_KEYED = ("device", "score_batch_size", "corpus", "grad_accum")


def resume_folder(store, run: str, name: str = "teach") -> Path:
    """Where the training state of stage ``name`` of ``run`` is saved: in the store's ``RUN`` folder, or,
    for a server store's (``kd-artifacts/DB@HOST`` in the working directory), where the run's latest stage
    of ``name`` recorded it (``STATE_RECORD``) when it ran from another working directory."""
    here = store.artifact_root / run / f"{name}{RESUME}"
    if not in_working_directory(store) or (here / META).is_file():
        return here
    recorded = next(((st.config or {}).get(STATE_RECORD) for st in reversed(store.stages_of(run)) if st.kind == name), None)
    return Path(recorded) if recorded and (Path(recorded) / META).is_file() else here


STATE_RECORD = "resume_state"  # the stage config's record of its state's folder (absolute), where in_working_directory


def in_working_directory(store) -> bool:
    """Whether the store's saved states are in the working directory's ``kd-artifacts/DB@HOST`` (a server
    store's, ``KD_ARTIFACTS`` unset): a job in another directory finds them by the stage's record."""
    return store.engine.dialect.name != "sqlite" and store.artifact_root == store.home_root


def rows_digest(ids, labels) -> str:
    """sha256 of rows' ids with their labels, in order."""
    h = hashlib.sha256()
    h.update(np.asarray(ids, dtype=np.int64).tobytes())
    h.update(np.asarray(labels, dtype=np.int64).tobytes())
    return h.hexdigest()


def settings_key(settings: dict[str, Any]) -> dict[str, Any]:
    """The training settings that decide the weights (``NOT_KEYED`` left out)."""
    return {k: v for k, v in settings.items() if k not in NOT_KEYED}


def fit_folder_name(tag: str) -> str:
    """``fit-model`` for the one model, ``fit-fold-K`` for a fold's (its tag ``foldK/``)."""
    return "fit-" + (f"fold-{tag[4:].rstrip('/')}" if tag else "model")


def read_meta(folder: Path) -> dict | None:
    """The saved state's meta.json, or ``None`` when there is none (or one this kd cannot read)."""
    try:
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("version") == VERSION else None


def store_mark(store) -> str:
    """Whose a saved state is: the store's own ``kd-artifacts/STORE`` folder (its file's, absolute, or its server
    database's ``NAME@HOST``), recorded in the state: two stores that share ``KD_ARTIFACTS`` share
    ``RUN/teach~resume`` for runs of the same name. The same from any working directory and --db spelling (a
    relative one, ``kd-artifacts/kd.db``, took a job re-queued elsewhere for another store, and two ``kd.db``
    files of two folders for one)."""
    if store.engine.dialect.name == "sqlite":
        return str(store.home_root.resolve())
    return store.home_root.name  # (its folder is in the working directory: the name is the store's, not the path)


def _foreign(store, meta: dict) -> bool:
    # (in the store's own kd-artifacts/STORE the state is its own, moved there with it or not)
    return store.artifact_root != store.home_root and meta.get("store") not in (None, store_mark(store))


def saved_meta(store, run: str, name: str = "teach") -> dict | None:
    """The meta.json of the saved state of stage ``name`` (teach or pretrain) of ``run``, ``None`` where there
    is none of this store's."""
    meta = read_meta(resume_folder(store, run, name))
    return None if meta is None or _foreign(store, meta) else meta


def other_store(store, run: str, name: str = "teach") -> str | None:
    """The store whose saved state ``RUN/NAME~resume`` holds, where that is another store's (sharing KD_ARTIFACTS)."""
    meta = read_meta(resume_folder(store, run, name))
    return meta["store"] if meta is not None and _foreign(store, meta) else None


def saved_point(store, run: str, name: str = "teach") -> str | None:
    """Where the saved state of stage ``name`` of ``run`` would resume ("after epoch 2 of 3", "fold 2 of 5,
    after epoch 1 of 3", "1 of 5 folds trained"; a pre-training's "after step 400 of 1000", "after step 400,
    12.5 of 60 minutes"), or ``None`` where nothing is saved to resume from."""
    meta = saved_meta(store, run, name)
    if meta is None:
        return None
    current = meta.get("current")
    if current is not None and "step" in current:  # (kd pretrain's: steps, within --steps or --minutes)
        steps, minutes = meta["config"].get("steps") or 0, meta["config"].get("minutes") or 0
        return f"after step {current['step']}" + (f" of {steps}" if steps and not minutes else
                                                  f", {current['seconds'] / 60:.1f} of {minutes:g} minutes" if minutes else "")
    epochs, folds = meta["config"].get("epochs"), meta["config"].get("folds") or 0
    if current is not None and current["tag"] not in meta["done"]:
        epoch = f"after epoch {current['epoch']} of {epochs}"
        return f"fold {int(current['tag'][4:-1]) + 1} of {folds}, {epoch}" if current["tag"] else epoch
    if not meta["done"]:
        return None
    return f"{len(meta['done'])} of {folds} folds trained" if folds else "the model trained, not yet scored"


def recording(add_metrics: Callable[..., Any], rows: list) -> Callable[..., Any]:
    """``add_metrics`` (``Store.add_metrics``'s signature) that also keeps each row in ``rows``, its values as
    plain numbers: the rows a saved state holds, which a resume records again (``recorded_again``)."""
    def add(stage_id, split, values, step=None):
        values = {k: v.item() if hasattr(v, "item") else v for k, v in values.items()}
        rows.append([split, values, step])
        return add_metrics(stage_id, split, values, step=step)

    add.rows = rows  # (what a save keeps)
    return add


def recorded_again(add_metrics: Callable[..., Any], stage_id: int, saved_rows: list) -> list:
    """Record the metric rows of a saved state on the resumed stage; returns them (a new list), for the training
    to go on appending to through ``recording``."""
    rows = [list(row) for row in saved_rows]
    for split, values, step in rows:
        add_metrics(stage_id, split, values, step=step)
    return rows


def resume_model(store, run: str, model: str) -> str:
    """Where a resumed teacher started with ``--model model`` loads it from: the folder its saved state
    recorded (absolute) where ``model`` was a folder's path, perhaps relative to another working
    directory (a re-queued job's); else ``model`` itself (``pretrain:R``, ``teach:R``, a hub name)."""
    saved = (saved_meta(store, run) or {}).get("model_dir")
    if saved and not model.startswith(("pretrain:", "teach:")) and Path(saved).is_dir():
        return saved
    return model


def random_state(rng: np.random.Generator) -> dict:
    """The random states a training draws from (``rng``'s, Python's, torch's, and CUDA's where in use), as JSON."""
    import torch

    state = {"numpy": rng.bit_generator.state, "python": base64.b64encode(pickle.dumps(random.getstate())).decode(),
             "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [base64.b64encode(s.numpy().tobytes()).decode() for s in torch.cuda.get_rng_state_all()]
    return state


def set_random_state(rng: np.random.Generator, state: dict) -> None:
    """Put back the random states ``random_state`` gave (CUDA's where this machine has as many devices)."""
    import torch

    rng.bit_generator.state = state["numpy"]
    random.setstate(pickle.loads(base64.b64decode(state["python"])))
    torch.set_rng_state(torch.frombuffer(bytearray(base64.b64decode(state["torch"])), dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8) for s in state["cuda"]])


class TrainingState:
    """The saved state of one teach (or pretrain: ``name``) stage's training (see the module's docstring).

    ``resume``: continue from what ``resume_folder`` holds (refused where its ``key`` no longer matches);
    otherwise whatever it holds is discarded and a new state begins. ``writes``: this process saves
    (rank 0), the others only read."""

    def __init__(self, store, run: str, *, config: dict, key: dict[str, Any], resume: bool, writes: bool, model_dir: str | None = None,
                 name: str = "teach"):
        self.folder, self.writes = resume_folder(store, run, name), writes
        self.broken: str | None = None  # why saving stopped (a full disk): said once
        key = json.loads(json.dumps(key))  # (as meta.json gives it back: tuples as lists)
        what = "pre-trained model" if name == "pretrain" else "teacher"
        if resume:
            meta = saved_meta(store, run, name)
            if meta is None:
                raise KdError(f"--resume: {self.folder} holds no saved training state of the {what} of run {run!r}")
            # (checked by rank 0, which alone read the model's digest: its refusal stops every rank)
            changed = [CHANGED.get(part, part) for part in key if meta["key"].get(part) != key[part]] if writes else []
            if changed:
                raise KdError(f"--resume: {'; '.join(changed)} changed since the state in {self.folder} was saved, so its weights "
                              f"are not of this training: start over with `kd {name} --run {run} --overwrite ...`")
            # (the pieces it resumed in, which the next resume takes: a teacher out of GPU memory resumed with
            # --grad-accum, stopped again, ran out of memory again in those it was started with)
            self.meta = {**meta, "config": {**meta["config"], **{k: config[k] for k in ("grad_accum",) if k in config}}}
        else:
            # (model_dir: the local folder it starts from, absolute: --resume loads it from any working directory)
            self.meta = {"version": VERSION, "config": config, "key": key, "store": store_mark(store), "done": {}, "current": None,
                         "model_dir": model_dir}
            if writes:
                other = other_store(store, run, name)
                if other is not None:  # (not another store's to discard: its teacher may be resumed there)
                    raise KdError(f"{self.folder} holds the saved training state of a {what} of another store ({other}) that shares "
                                  "KD_ARTIFACTS with this one: use another --run, or let that store resume or delete its run first")
                self._discard()
                self._write(self._write_meta)

    # -- reading back (every rank) ---------------------------------------------------------------

    def done(self, tag: str) -> Path | None:
        """The folder of the fit ``tag`` finished before (its best model), or ``None``."""
        folder = self.folder / fit_folder_name(tag)
        return folder if tag in self.meta["done"] and folder.is_dir() else None

    def replay(self, tag: str) -> tuple[dict | None, list]:
        """``(epoch state, metric rows)`` of fit ``tag`` saved before: the state it goes on from (``None``: it
        starts at its first epoch, or finished before: ``done``) and the rows it recorded so far (all of
        them for a finished fit), for ``recorded_again``."""
        if tag in self.meta["done"]:
            return None, self.meta["done"][tag]["rows"]
        saved = self._epoch_state(tag)
        return saved, [] if saved is None else saved["rows"]

    def restore_random(self, tag: str, rng: np.random.Generator) -> None:
        """Set the random state that fit ``tag`` finished with."""
        set_random_state(rng, self.meta["done"][tag]["random"])

    def _epoch_state(self, tag: str) -> dict | None:
        state = self.load()
        return state if state is not None and state.get("tag") == tag else None

    def load(self) -> dict | None:
        """What state.pt holds (``save``'s ``state``), or ``None``. It, not meta.json's ``current``, says where
        it was saved: a kill between the two writes left meta.json one save behind."""
        import torch

        if not (self.folder / STATE).is_file():
            return None
        return torch.load(self.folder / STATE, map_location="cpu", weights_only=False)

    @staticmethod
    def restore_epoch(state: dict, *, model, optimizer, scheduler, scaler, best, rng: np.random.Generator) -> None:
        """Put a fit back as it was after its saved epoch."""
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:
            scaler.load_state_dict(state["scaler"])
        b = state["best"]
        best.score, best.loss, best.epoch, best._stale = b["score"], b["loss"], b["epoch"], b["stale"]
        best.state = state["model"] if b["current"] else b["state"]
        if best.state is not None:
            best.state = {k: v.clone() for k, v in best.state.items()}
        set_random_state(rng, state["random"])

    # -- saving (rank 0) -------------------------------------------------------------------------

    def save_epoch(self, tag: str, epoch: int, rows: list, *, model, optimizer, scheduler, scaler, best, rng, elapsed: float) -> None:
        """Save fit ``tag`` as it is after ``epoch`` (what a resume continues from)."""
        if not self.writes or self.broken:
            return
        current = best.epoch == epoch and best.state is not None
        state = {
            "tag": tag, "epoch": epoch, "rows": rows, "elapsed": elapsed, "random": random_state(rng),
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "best": {"score": best.score, "loss": best.loss, "epoch": best.epoch, "stale": best._stale, "current": current,
                     "state": None if current else best.state},
        }
        self.save(state, {"tag": tag, "epoch": epoch})

    def save(self, state: dict, current: dict) -> None:
        """Write ``state`` as state.pt, and ``current`` (where it was saved, as ``saved_point`` tells it) in meta.json."""
        if not self.writes or self.broken:
            return

        def save() -> None:
            import torch

            temporary = self.folder / f"{STATE}.partial"
            torch.save(state, temporary)
            os.replace(temporary, self.folder / STATE)
            self.meta["current"] = current
            self._write_meta()

        self._write(save)

    def save_done(self, tag: str, model_dir: Path, rows: list, rng: np.random.Generator) -> None:
        """Fit ``tag`` is finished: keep its best model (saved in ``model_dir``) and its rows."""
        if not self.writes or self.broken:
            return
        def save() -> None:
            target = self.folder / fit_folder_name(tag)
            if target.exists():  # (a copy cut short before it was recorded)
                shutil.rmtree(target)
            shutil.copytree(model_dir, target, copy_function=link_or_copy)
            self.meta["done"][tag] = {"rows": rows, "random": random_state(rng)}
            self._write_meta()
            with contextlib.suppress(FileNotFoundError):
                (self.folder / STATE).unlink()  # (the finished fit's epochs: nothing resumes from them now)

        self._write(save)

    def finish(self) -> None:
        """The stage succeeded: nothing is left to resume."""
        if self.writes:
            self._discard()

    def _discard(self) -> None:
        if self.folder.exists():
            shutil.rmtree(self.folder, ignore_errors=True)

    def _write_meta(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        temporary = self.folder / f"{META}.partial"
        temporary.write_text(json.dumps(self.meta), encoding="utf-8")
        os.replace(temporary, self.folder / META)

    def _write(self, action: Callable[[], None]) -> None:
        """Do ``action`` (the writes of a save); one that fails is warned of, and no save is tried again."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            action()
        except (OSError, RuntimeError) as exc:  # (torch.save on a full disk: RuntimeError)
            self.broken = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            for partial in (f"{STATE}.partial", f"{META}.partial"):  # (a full disk: the space a half-written state took, back)
                with contextlib.suppress(OSError):
                    (self.folder / partial).unlink()
            print(f"warning: cannot save the training state in {self.folder} ({self.broken}): training goes on, but a "
                  "failure from here on cannot be resumed (--resume)", file=sys.stderr)


def link_or_copy(src: str, dst: str) -> None:
    """A hard link where the file system makes one (no second copy of a model's weights), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
