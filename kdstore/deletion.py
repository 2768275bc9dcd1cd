"""Deleting a run, or some of its stages (``kd runs delete``): their logits, predictions, figures,
fold assignments, label issues and artifact folders (their exports at ``kd export``'s default place
included) go; label edits never do.

A stage is refused (and nothing deleted) while it runs, while label edits it made stand (``kd labels
undo`` first: the labels would stay changed with no stage to undo them), and, for a detection, while a
clean stage left out of the deletion decided its issues (its edits, or its reviewer's rejections, are
on record there). A stage whose edits were all undone keeps its record, as the audit trail names it
(``kd labels history``); everything else of it goes. A run is deleted once none of its stages is left.
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from .errors import KdError
from .names import model_source
from .resume import resume_folder, saved_meta
from .runs import _any_edits, _crashed, _edits_not_undone, _live_edits, process_state, remove_empty_store_folder, running_by, stage_folder, unchecked_why
from .schema import LabelEdit, LabelIssue, Logit, Prediction, Run, Stage
from .serving import export_dirs, exports_of
from .store import Store, recorded_folder


def delete_stages(store: Store, run: str, names: tuple[str, ...] = (), *, dry_run: bool = False) -> dict[str, Any]:
    """Delete ``run``'s stages named ``names`` (with their ``NAME~...`` records of replaced and failed
    attempts), or all of them; ``dry_run``: say what would go, change nothing. Returns ``{"run",
    "deleted": [{name, kind, status, logits, predictions, issues, folder}], "kept": [{name, kind, label_edits}],
    "run_deleted", "reopened" (issues left whose decision goes), "dry_run", "warnings", "exports" (the deleted
    stages' export folders at ``kd export``'s default place, removed with them)}``."""
    with store.write_session("runs", "stages", "label_edits", "label_issues") as s:
        run_row = s.scalars(select(Run).where(Run.uniqid == run)).first()
        if run_row is None:
            raise store.no_run(run)
        stages = s.scalars(select(Stage).where(Stage.run_id == run_row.id).order_by(Stage.id)).all()
        chosen = _chosen(stages, run, names)
        ids = {st.id for st in chosen}
        # a dry run opens the store without marking the stages a killed process left running (that changes the store):
        # each is judged as the real deletion will find it, failed, a clean's edits reverted where they revert cleanly
        crashed = {st.id for st in chosen if dry_run and _crashed(st)}
        standing: list[tuple[Stage, str]] = []
        unsure = [_refuse(s, st, run, ids, standing, crashed=st.id in crashed) for st in chosen]
        if len(standing) > 1:  # every one named at once, not one per try (undone latest first: an undo refuses under a later edit)
            undos = " and ".join(f"`kd labels undo --run {run} --stage {st.name}`" for st, _ in reversed(standing))
            raise KdError(f"stages {', '.join(f'{st.name!r} ({why})' for st, why in standing)} of run {run!r} have "
                          f"edits that stand: run {undos} first")
        if standing:
            st, why = standing[0]
            raise KdError(f"stage {st.name!r} of run {run!r} has {why}: run `kd labels undo --run {run} --stage {st.name}` first")
        _refuse_readers(s, ids, run, chosen)
        # (a `kd labels set` that only confirmed labels records no edit and has nothing to undo: its pairs, which
        # `kd labels history` lists and `kd labels clean` honours, are on record in its config alone)
        # and a review's rejects (no edit either): on record as undone, as its undo or an --overwrite keeps them
        rejects = {st.id: _rejects(s, st) for st in chosen if st.kind == "clean"}
        kept = [st for st in chosen if _any_edits(s, st) or _confirmations(st) or rejects.get(st.id)]
        gone = [st for st in chosen if st not in kept]
        undecided = [st.id for st in gone] + [st.id for st in kept if rejects.get(st.id)]  # (the stages whose decisions go)
        # only a stage that recorded its model owns its folder: a failed stage's files went when it failed, so
        # what lies there now is another's (a store sharing KD_ARTIFACTS, as _refuse_foreign_files says)
        homes = {st.id: stage_folder(store, run, st) for st in chosen if st.artifact_path}
        counts = {table: dict(s.execute(select(table.stage_id, func.count()).where(table.stage_id.in_(ids or {-1}))
                                        .group_by(table.stage_id)).all()) for table in (Logit, Prediction, LabelIssue)}
        report = {
            "run": run,
            "deleted": [{"name": st.name, "kind": st.kind, "status": "failed" if st.id in crashed else st.status,
                         # (a crashed stage's partial logits and predictions go as it is marked failed)
                         "logits": 0 if st.id in crashed else counts[Logit].get(st.id, 0),
                         "predictions": 0 if st.id in crashed else counts[Prediction].get(st.id, 0), "issues": counts[LabelIssue].get(st.id, 0),
                         # (its model's folder, removed with it: a dry run listed the exports that go, not the models)
                         # (where it is: a copied store's own folder, its models left by the original's, is none)
                         "folder": str(homes[st.id]) if st.id in homes and homes[st.id].is_dir() else None} for st in gone],
            "kept": [{"name": st.name, "kind": st.kind, "label_edits": _edit_count(s, st),
                      "confirmations": 0 if _any_edits(s, st) else _confirmations(st), "rejects": len(rejects.get(st.id, ()))} for st in kept],
            "run_deleted": len(gone) == len(stages),
            # the issues of detections left that a deleted review decided (a sheet's rejections among them): open again
            "reopened": s.scalar(select(func.count()).select_from(LabelIssue).where(
                LabelIssue.decided_stage_id.in_(undecided or [-1]), LabelIssue.stage_id.not_in(ids or {-1}))),
            "dry_run": dry_run,
            "warnings": [u for u in unsure if u] + _learned_from(s, gone, run, dry_run),
        }
        folders = list(homes.values())
        # a failed teacher's saved training state (`kd teach --resume`), of no use once its stage is gone (not
        # another store's, sharing KD_ARTIFACTS)
        states = [resume_folder(store, run, kind) for kind in ("pretrain", "teach")
                  if any(st.kind == kind for st in gone) and saved_meta(store, run, kind) is not None]
        report["resume_states"] = [str(f) for f in states]
        folders += states
        # a model recorded in a folder KD_ARTIFACTS named when it was trained, and named otherwise (or not at all) now:
        # not this deletion's to remove (another store may record it), and said, not kept in silence
        left = [f for f in (recorded_folder(run, st) for st in gone if st.artifact_path)
                if f is not None and f.resolve() not in {x.resolve() for x in folders} and store.owns(f) is None and f.is_dir()]
        # (kd-artifacts/RUN/STAGE: the folder a kd from before each store had its own made, shared by the stores beside it)
        report["warnings"] += [f"{f} is kept: the model folder of a stage {'this would delete' if dry_run else 'deleted now'}, "
                               + ("made by a kd from before each store had its own kd-artifacts/STORE folder, or "
                                  if f.parent.parent.name == "kd-artifacts" else "")
                               + "made with KD_ARTIFACTS set otherwise (another store may read it): delete it yourself once "
                               "nothing serves it" for f in left]
        # and its exports where kd export put them without --out, beside its model (an --out elsewhere is the user's)
        exports, mixed, earlier = [], [], []
        for st in gone:
            run_folder = stage_folder(store, run, st).parent if st.artifact_path else store.artifact_root / run
            own, other = exports_of(run_folder, run, st.name, st.artifact_sha256) if st.artifact_path else ([], [])
            exports += own
            mixed += other
            # at its default place, an export of the model an --overwrite replaced (or another program's folder): kept, and said
            earlier += [f for f in export_dirs(run_folder, st.name) if f.is_dir() and not f.is_symlink()]
        # (not one that another stage deleted owns: a parked stage's export is at the place its name's stage looks too)
        # (compared resolved: a stage with no model folder looks under the store's artifact root as --db spelled it)
        listed, unlisted = {f.resolve() for f in exports + mixed}, []  # (not ``kept``: the stages kept, below, are)
        for f in earlier:
            if f.resolve() not in listed:
                listed.add(f.resolve())
                unlisted.append(f)
        earlier = unlisted
        report["exports"] = [str(f) for f in exports]
        report["warnings"] += [f"{f} is an export of a stage {'this would delete' if dry_run else 'deleted now'}, kept: "
                               "it holds files kd export did not write" for f in mixed]
        report["warnings"] += [f"{f} is kept: it is at the export place of a stage {'this would delete' if dry_run else 'deleted now'}, "
                               "but not an export of its model (one of the model an --overwrite replaced, or another "
                               "program's files): delete it yourself once nothing serves it" for f in earlier]
        if dry_run:  # (nothing written: the transaction ends empty)
            return report
        from .labels import _record_undone_rejects, reopen  # (labels builds on runs, as this module does)

        for st in kept:  # (its standing rejects, undone now: in its config with what each issue was, its detection may go)
            if rejects.get(st.id):
                _record_undone_rejects(s, st.id)
        # the issues a deleted review decided are open again (their decisions went with it), not left decided by no stage
        reopen(s, LabelIssue.decided_stage_id.in_(undecided or [-1]))
        for st in kept:  # (a clean stage's folder holds no model)
            st.artifact_path, st.artifact_sha256 = None, None
        for st in gone:
            s.delete(st)  # its logits, predictions, metrics, folds and issues with it (ON DELETE CASCADE)
        if report["run_deleted"]:
            s.flush()  # (the stages first: the run's own ON DELETE CASCADE would take them before the ORM's deletes)
            s.delete(run_row)
    for st in gone:  # the empty folder of a stage that recorded no model (made as it began): nobody's files
        if not st.artifact_path:
            with contextlib.suppress(OSError):
                (store.artifact_root / run / st.name).rmdir()
    report["warnings"] += _remove_folders(folders + exports, store.artifact_root / run)
    for d in report["deleted"]:  # (one that could not be removed is the warning's, not listed as deleted)
        if d["folder"] and Path(d["folder"]).exists():
            d["folder"] = None
    report["exports"] = [f for f in report["exports"] if not Path(f).exists()]
    report["resume_states"] = [f for f in report["resume_states"] if not Path(f).exists()]
    for folder in {f.parent for f in folders} - {store.artifact_root / run}:  # (a server store's, from another folder)
        _remove_folders([], folder)
    if report["run_deleted"]:  # (the last run's: its folders were all kd-artifacts/STORE held)
        remove_empty_store_folder(store)
    return report


def _chosen(stages: list[Stage], run: str, names: tuple[str, ...]) -> list[Stage]:
    if not names:
        return list(stages)
    by_name = {st.name: st for st in stages}
    missing = [n for n in dict.fromkeys(names) if n not in by_name]
    if missing:
        have = ", ".join(sorted(n for n in by_name if "~" not in n)) or "none"
        raise KdError(f"run {run!r} has no stage {missing[0]!r} (its stages: {have})")
    wanted = set(names)  # a stage's records of replaced and failed attempts (NAME~...) go with it
    return [st for st in stages if st.name in wanted or st.name.split("~", 1)[0] in wanted]


def _refuse(s, st: Stage, run: str, ids: set[int], standing: list[tuple[Stage, str]], *,
            crashed: bool = False) -> str | None:
    """Why ``st`` may not be deleted (raised; its label edits that stand: added to ``standing``); a warning for a
    stage marked running by a process kd cannot check from here, deleted as --overwrite replaces one (only a
    certain live process refuses).
    ``crashed``: left running by a process that is gone, not yet marked failed (a dry run): judged as
    ``mark_crashed`` leaves it, a clean's edits reverted where they revert cleanly."""
    alive = process_state(st) if st.status == "running" else False
    where = running_by(st)
    if alive:
        raise KdError(f"stage {st.name!r} of run {run!r} is running ({where}): wait for it, or stop it, then delete")
    if crashed and st.kind == "clean":
        from .labels import reverts_cleanly  # (labels builds on runs, as this module does)

        live = 0 if reverts_cleanly(s, st) else _live_edits(s, st)
    else:
        live = _live_edits(s, st)
    if live:  # (refused by the caller, naming every such stage at once)
        standing.append((st, _edits_not_undone(live, _live_edits(s, st, flags=True))))
    unsure = (f"stage {st.name!r} was marked running by {where}, which kd cannot check from here {unchecked_why(st)}: "
              "taken as ended") if alive is None else None
    if st.kind != "detect":
        return unsure
    deciders = s.scalars(select(Stage).where(Stage.id.in_(
        select(LabelIssue.decided_stage_id).where(LabelIssue.stage_id == st.id, LabelIssue.decided_stage_id.is_not(None))
    ), Stage.id.not_in(ids)).order_by(Stage.id)).all()
    for clean in deciders:  # a review left out of the deletion: its decisions are on record in these issues
        owner = s.get(Run, clean.run_id).uniqid
        raise KdError(f"the issues of stage {st.name!r} of run {run!r} were decided by stage {clean.name!r} of run "
                      f"{owner!r}: delete both (--stage {st.name} --stage {clean.name}), after `kd labels undo "
                      f"--run {owner} --stage {clean.name}` where its edits stand")
    return unsure


def _refuse_readers(s, ids: set[int], run: str, chosen: list[Stage], *, replacing: bool = False) -> None:
    """A stage running now that learns from one being deleted (a student reading a teacher's logits, a
    teacher fine-tuning its model: ``kd teach --model pretrain:RUN --folds K`` loads it again for each fold);
    ``replacing``: by ``--overwrite``, which moves its folder away at once (the next fold found no model)."""
    models = {f"{st.kind}:{run}" for st in chosen if st.kind in ("pretrain", "teach") and st.status == "succeeded"}
    folders = [Path(st.artifact_path).resolve() for st in chosen if st.artifact_path]
    # (`kd predict --store`'s model: deleted as it scored, its figures were recorded of a model gone; an --overwrite
    # leaves them to the model it replaced, said in its warning)
    measured = set() if replacing else {(st.run_id, st.name, st.artifact_sha256) for st in chosen if st.artifact_sha256}
    for st in s.scalars(select(Stage).where(Stage.status == "running", Stage.id.not_in(ids or {-1}))):
        config = st.config or {}
        used = {int(t["stage_id"]) for t in config.get("teacher_stages") or [] if t.get("stage_id") is not None}
        path = Path(config["model_path"]).resolve() if config.get("model_path") else None
        model = config.get("model") in models or any(path == f or f in path.parents for f in folders if path) or (
            st.kind == "predict" and (st.run_id, config.get("model_stage"), config.get("model_sha256")) in measured)
        alive = process_state(st) if used & ids or model else False
        if alive is not False:
            owner = s.get(Run, st.run_id).uniqid
            what = "logits" if used & ids else "model"
            # (one kd cannot check from here is taken as running: it may be, on another machine of a shared store)
            unsure = ("" if alive else f" (marked running by {running_by(st)}, which kd "
                      "cannot check from here: if it has ended, `kd runs delete --run "
                      f"{shlex.quote(owner)} --stage {st.name}` first)")
            if replacing:
                raise KdError(f"stage {st.name!r} of run {owner!r} is running on the {what} of stage {chosen[0].name!r} of "
                              f"run {run!r}: wait for it, then replace it (or use another --run){unsure}")
            # (the one it reads named, as the --overwrite's refusal names it: a run's delete takes every stage)
            read = [c for c in chosen if c.id in used or f"{c.kind}:{run}" == config.get("model") or (st.kind == "predict" and c.name == config.get(
                "model_stage")) or (path and c.artifact_path and (path == Path(c.artifact_path).resolve() or Path(c.artifact_path).resolve() in path.parents))]
            raise KdError(f"stage {st.name!r} of run {owner!r} is running on the {what} of stage {(read or chosen)[0].name!r} of run {run!r}, "
                          f"which this deletes: wait for it, then delete{unsure}")


def _learned_from(s, gone: list[Stage], run: str, dry_run: bool = False) -> list[str]:
    """The stages left that learned from a deleted stage: a teacher (``teacher_stages``), the model a
    teacher started from (``--model pretrain:RUN`` or ``teach:RUN``, by its sha256), a detection's
    ``--student-votes``, and the figures ``kd predict --store`` measured of its model (``model_stage``,
    by its sha256); their reports will say it went (``dry_run``: would go)."""
    names = {st.id: st.name for st in gone}
    models = {(st.kind, st.artifact_sha256): st.name for st in gone if st.kind in ("pretrain", "teach") and st.artifact_sha256}
    measured_models: dict[int, set] = {}
    for st in gone:
        if st.artifact_sha256:
            measured_models.setdefault(st.run_id, set()).add((st.name, st.artifact_sha256))
    tail = ("which this would delete: its report would" if dry_run else "deleted now: its report will") + " call {} 'deleted since'"
    out = []
    # (not a failed stage: it has no figures for its report to call anything of)
    for st in s.scalars(select(Stage).where(Stage.id.not_in(set(names) or {-1}), Stage.status != "failed").order_by(Stage.id)):
        config = st.config or {}
        source = model_source(config)
        used = [(f"learned from {run}/{names[t['stage_id']]}", "that teacher")
                for t in config.get("teacher_stages") or [] if t.get("stage_id") in names]
        if st.kind == "teach" and source and source[1] == run and (source[0], config.get("model_sha256")) in models:
            used.append((f"started from the model of {run}/{models[source[0], config['model_sha256']]}", "that model"))
        used += [(f"took votes from {run}/{names[t['stage_id']]}", "those votes")
                 for t in config.get("student_vote_stages") or [] if t.get("stage_id") in names]
        measured = (config.get("model_stage"), config.get("model_sha256"))  # (`kd predict --store`'s figures of a model)
        if st.kind == "predict" and measured in measured_models.get(st.run_id, ()):
            used.append((f"measured the model of {run}/{measured[0]}", "that model"))
        if used:
            owner = s.get(Run, st.run_id).uniqid
            what, it = used[0]
            out.append(f"{owner}/{st.name} {what}, " + tail.format(it))
    return out


def _confirmations(st: Stage) -> int:
    """The ``kd labels set`` pairs of a succeeded clean stage (its config's ``edits``): counted for a stage
    with no label edit, where each confirmed the label a sample had (``labels.set_by_hand``)."""
    pairs = (st.config or {}).get("edits") if st.kind == "clean" and st.status == "succeeded" else None
    if not isinstance(pairs, list):
        return 0
    from .labels import split_pair  # (labels builds on runs, as this module does)

    return sum(split_pair(str(p)) is not None for p in pairs)


def _rejects(s, st: Stage) -> set[str]:
    """The issue ids a review (a clean stage) rejected: standing, and undone before (``undone_rejects``)."""
    standing = s.scalars(select(LabelIssue.id).where(LabelIssue.decided_stage_id == st.id, LabelIssue.status == "rejected"))
    return {str(i) for i in standing} | set(((st.config or {}).get("undone_rejects") or {}))


def _edit_count(s, st: Stage) -> int:
    return s.scalar(select(func.count()).select_from(LabelEdit).where(LabelEdit.stage_id == st.id))


def _remove_folders(folders: list[Path], run_folder: Path) -> list[str]:
    """Remove the stages' artifact folders (after the commit: a failure leaves files, never rows
    without their files); what could not be removed is said, not raised."""
    out = []
    for folder in folders:
        try:
            if folder.is_dir():
                shutil.rmtree(folder)
            elif folder.exists():
                folder.unlink()
        except OSError as exc:
            out.append(f"could not remove {folder}: {exc.strerror or exc}: delete it yourself once it can be written "
                       "(a stage trained there again is refused while it holds files)")
    try:
        run_folder.rmdir()  # (only when empty: files kd did not put there stay)
    except OSError:
        pass
    return out
