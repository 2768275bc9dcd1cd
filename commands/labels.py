"""``kd labels``: find likely wrong labels, review them, clean them, and undo a clean."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from kdstore import labels as lab
from kdstore import noise
from kdstore.advice import reteach_command
from kdstore.environment import environment
from kdstore.errors import KdError
from kdstore.folds import fold_count
from kdstore.ingest import MADE_BY_AUGMENT
from kdstore.jsonl import has_surrogate
from kdstore.names import resolve_run_id
from kdstore.progress import working
from kdstore.runs import check_stage_free, sha256_path, stage_scope
from kdstore.schema import iso_utc

from .common import CELL_BREAKS, FLOAT, SHOWN_CONTROLS, SQL_INT_MAX, KdPath, counted, json_option, open_store, overwrite_option, print_json, print_rows, resolve_runs, run_option, store_options


@click.group()
def labels():
    """Wrong labels: detect, show, export/import a review sheet, clean, set by hand, undo, history.

    \b
    Example:
      kd teach --run r1 --model pretrain:r1 --folds 5
      kd labels detect --run r1
      kd labels show --run r1 --top 20
      kd labels clean --run r1 --action relabel --min-score 0.8 --dry-run
    """


@labels.command()
@run_option
@click.option("--teacher-run", multiple=True, callback=resolve_runs, help="Run whose (out-of-fold) teacher to use; default: --run.")
@click.option("--method", "methods", default=",".join(noise.DEFAULT_METHODS), show_default=True, help=f"Comma-separated, from: {', '.join(noise.METHODS)} (ensemble: most --student-votes/--tfidf-member models disagree with the label; alias: votes).")
@click.option("--combine", type=click.Choice(noise.COMBINES), default=noise.DEFAULT_COMBINE, show_default=True, help="How the methods' flags are combined.")
@click.option("--filter-by", type=click.Choice(noise.FILTERS), default="prune_by_noise_rate", show_default=True, help="cleanlab find_label_issues filter_by; cleanlab sees the probabilities temperature-scaled to the given labels (one scalar, class ranking unchanged), so its flags can differ from cleanlab run on the raw ones (see --no-calibrate).")
@click.option("--frac-noise", type=FLOAT, default=1.0, show_default=True, help="Scale the estimated number of wrong labels by this, in (0, 1] (cleanlab frac_noise; with --combine other than ranked, only with the cleanlab method and --filter-by prune_by_noise_rate, prune_by_class or both, and not --combine union with the disagree method).")
@click.option("--quality-method", type=click.Choice(noise.QUALITY_METHODS), default="self_confidence", show_default=True, help="cleanlab's per-sample label quality (rank.get_label_quality_scores) on the teacher's (with --student-votes/--tfidf-member: the ensemble's) probabilities: every issue's score, whichever method flagged it, is 1 - quality (the ranking, clean --min-score).")
@click.option("--student-votes", multiple=True, help="Distill stage(s) whose out-of-fold probabilities join the ensemble: STAGE of --run, or RUN:STAGE (kd distill --folds K; others are refused as in-sample unless --allow-in-sample).")
@click.option("--tfidf-member/--no-tfidf-member", is_flag=True, help="Add out-of-fold TF-IDF + logistic-regression probabilities to the ensemble.")
@click.option("--allow-in-sample/--no-allow-in-sample", is_flag=True, help="Accept a teacher that saw the samples it scores (not recommended).")
@click.option("--calibrate/--no-calibrate", default=True, show_default=True,
              help="Temperature-scale the probabilities to the given labels before cleanlab and the scores; "
                   "--no-calibrate: cleanlab on the raw ones, exactly as cleanlab.filter.find_label_issues (its flags as they "
                   "are with --method cleanlab --combine union: the default ranked list keeps at most the estimated number of wrong labels).")
@overwrite_option
@store_options
@json_option
def detect(run, teacher_run, methods, combine, filter_by, frac_noise, quality_method, student_votes, tfidf_member, allow_in_sample, calibrate, overwrite, db, as_json):
    """Flag train samples whose label the out-of-fold teacher disputes (cleanlab + disagreement).

    \b
    Example:
      kd labels detect --run r1 --method cleanlab,disagree --json
    """
    if len(teacher_run) > 1:  # (click kept the last one typed, in silence: kd distill averages several, a detection reads one)
        raise KdError(f"--teacher-run given {len(teacher_run)} times: a detection reads one teacher's out-of-fold "
                      "probabilities; give one (--student-votes adds other models' votes)")
    cfg = lab.DetectConfig(
        teacher_run=teacher_run[0] if teacher_run else None, methods=tuple(m.strip() for m in methods.split(",") if m.strip()),
        combine=combine, filter_by=filter_by, frac_noise=frac_noise, quality_method=quality_method,
        student_votes=tuple(_vote_run_resolved(v) for v in student_votes), tfidf_member=tfidf_member, allow_in_sample=allow_in_sample,
        calibrate=calibrate,
    )
    cfg.validate()  # a wrong option before the store is opened
    store = open_store(db, writer=True)
    # bad input is refused before anything is written; the labels judged and the stages read are recorded
    inputs, labels_read = lab.read_labeled(store, lambda: lab.detect_inputs(store, run, cfg))
    config = {**lab.config_dict(cfg), **inputs.used, **labels_read, "environment": environment()}
    with stage_scope(store, run=run, kind="detect", config=config, overwrite=overwrite) as stage:
        # (110,000 train labels: some 7 s of cleanlab and scoring with nothing on screen; the TF-IDF member's folds more)
        with working(f"detecting wrong labels (run {run})", unit="labels", disable=len(inputs.train) < DETECT_BAR_FROM) as done:
            n = lab.detect(store, stage, cfg, inputs)
            done(len(inputs.train))
    figures = {m.name: m.value for m in store.metrics(stage.id) if m.split == "train"}
    estimated, judged = int(figures.get("estimated_issues", n)), int(figures.get("train_samples") or 0)
    warned = _warn(lab.detect_warnings(store, run) + lab.single_sample_warnings(store, cfg, inputs) + lab.filter_by_warnings(cfg) + lab.quality_method_warnings(cfg, inputs)
                   + lab.in_sample_warnings(store, run, cfg, inputs)
                   + _teacher_of_other_labels(store, config))
    if as_json:
        print_json({"run": run, "stage": stage.name, "flagged": n, "estimated_issues": estimated, "warnings": warned,
                    "top": lab.issues(store, run, top=10)})
    else:
        shown = f"; `kd labels show --run {run}` lists {'it' if n == 1 else 'them'}" if n else ""  # (nothing to list)
        # (the default ranked cut flags the estimate: said where --combine or --frac-noise made the count another)
        guess = f" (cleanlab estimates {estimated:,} of the {judged:,} train labels wrong, {estimated / judged:.0%})" \
            if estimated != n and judged else ""
        click.echo(f"run {run}: {counted(n, 'likely wrong label')} flagged{guess}{shown}")


DETECT_BAR_FROM = 20_000  # train labels: fewer are judged in a second or two, with no bar


def _teacher_of_other_labels(store, config: dict) -> list[str]:
    """A warning where the teacher learned from labels changed since (a clean, set, import or undo after
    its kd teach, the loop's next round detected before teaching again): its folds judge the labels as
    they were, so the detection mostly finds the last round's leftovers (kd distill says it of a student's teacher)."""
    return [f"the teacher of run {run} learned from labels changed since (kd labels clean, set, import or undo): its "
            f"out-of-fold probabilities follow the old ones; {reteach_command(run, store.find_stage(run, 'teach').config)} "
            "retrains it on the current labels, then detect again" for run in lab.stale_teacher_runs(config)[:1]] + [
        # (--student-votes students learned the old labels too, and the old teacher's logits: said once the teacher is taught again)
        f"distill stage {st['stage']!r} of run {st['run']!r} (--student-votes) learned from labels changed since (kd labels clean, set, "
        f"import or undo): its out-of-fold votes follow the old ones; `kd distill --run {shlex.quote(st['run'])}"
        f"{f' --folds {k}' if (k := fold_count(store.find_stage(st['run'], st['stage']).config)) else ''} --name {st['stage']} --overwrite` "
        f"(with the other options `kd report --run {shlex.quote(st['run'])}` lists for it), after its teacher, redistills it on the current labels"
        for st in config.get("student_vote_stages") or [] if lab.learned_other_labels(st, config)]


def _vote_run_resolved(value: str) -> str:
    """``RUN:STAGE`` of --student-votes with RUN as --run takes it (``${time}`` is today), as the stage
    records it: recorded as typed, the detection's config (and the `kd labels detect` its warnings
    suggest) named whichever day it was read on. A RUN that is empty or no run id is left to the
    detection's own one-line error."""
    run, colon, stage = value.partition(":")
    if not colon or not run.strip():
        return value
    try:
        return f"{resolve_run_id(run)}:{stage}"
    except KdError:
        return value


@labels.command()
@run_option
@click.option("--top", "--limit", "top", type=click.IntRange(min=0), default=20, show_default=True,
              help="At most this many, highest scores first (0: all; --limit is the same option, as in `kd samples`).")
@click.option("--status", type=click.Choice(["open", "applied", "rejected", "flagged"]),
              help="Only issues in this state (default: all): open = undecided, applied = decided by a clean or a sheet (relabeled or dropped, or a clean's relabel to the label it had), "
                   "rejected = label kept by a decision (a sheet's reject, or its class as it stood), flagged = marked by `clean --action flag`.")
@store_options
@json_option
def show(run, top, status, db, as_json):
    """List a run's flagged samples, most likely wrong first.

    \b
    Example:
      kd labels show --run r1 --top 50 --json
    """
    store = open_store(db)
    # one row past --top tells whether the table is the whole list (detect says "N flagged; show lists
    # them", and a silent cut at 20 read as the whole list)
    items = lab.issues(store, run, top=min(top + 1, SQL_INT_MAX) if top else None, status=status)
    more = bool(top) and len(items) > top
    items = items[:top or None]
    highest = "the highest score" if top == 1 else f"the {top} highest scores"  # ("the 1 highest scores")
    _warn(lab.stale_warnings(store, run))  # (on standard error: --json here is the list of issues)
    if not items:  # (an empty table or [] said nothing: a detection that flagged none, or none in that state)
        held = lab.issue_statuses(store, run)
        click.echo(f"note: the detection of run {run} " + (
            f"holds no {status} issue (its issues: {', '.join(f'{k} {n:,}' for k, n in held.items())})" if held
            else "flagged no label"), err=True)
    if as_json:
        print_json(items)
        if more:  # (on standard error, as kd samples --json says it: `> issues.json` kept 20 of them without a word)
            click.echo(f"warning: listed {highest} only (--top 0 for all)", err=True)
        return
    print_rows(["sample", "score", "given", "suggested", "methods", "status", "text"],  # (methods wrap at ", ": cut at 80 columns)
               [[str(i["sample_id"]), _score(i["score"]), i["given"], i["suggested"], i["methods"].replace(",", ", "),
                 i["status"] + (" (dropped)" if i["dropped"] else ""), i["text"]]
                for i in items], title=f"label issues of run {run}")
    if more:  # (how many: "... more issues" left the user to guess whether --top 0 listed 30 or 30,000)
        total = lab.issue_count(store, run, status=status)
        click.echo(f"... {total - top:,} more issue{'' if total - top == 1 else 's'}: {highest} of {total:,} shown (--top 0 shows all)")


@labels.command()
@run_option
@click.argument("path", type=KdPath(dir_okay=False))
@click.option("--overwrite", is_flag=True, help="Replace PATH if it exists (by default a sheet that may hold someone's decisions is kept).")
@store_options
@json_option
def export(run, path, overwrite, db, as_json):
    """Write the open and flagged issues as a review sheet (CSV, or JSONL by extension).

    Fill the decision column with accept, reject, drop or a class name (label:NAME for a class
    named like a decision), then `kd labels import`.

    \b
    Example:
      kd labels export --run r1 review.csv
    """
    store = open_store(db)
    n = lab.export_sheet(store, run, path, overwrite=overwrite)
    # (a sheet of no issue: nothing for a reviewer, which import then refuses)
    empty = [] if n else [f"run {run!r} has no undecided issue: the sheet lists none (`kd labels show --run {run}` lists its issues)"]
    warned = _warn(empty + lab.stale_warnings(store, run) + lab.kept_by_review_warnings(store, run))
    if as_json:
        print_json({"run": run, "path": str(path), "issues": n, "warnings": warned})
        return
    # (the next step said: the column to fill in, and the command that applies it)
    then = (": fill in its decision column (accept, reject, drop or a class), then "
            f"`kd labels import {shlex.quote(str(path))}`") if n else ""
    click.echo(f"{path}: {counted(n, 'issue')} to review{then}")


@labels.command(name="import")
@run_option(default="Default: the run the sheet names (its run column), else a config file's run, else default.")
@click.argument("path", type=KdPath(dir_okay=False))  # (a missing sheet: read_sheet's one line, exit 1, as a missing input file elsewhere)
@click.option("--name", "stage_name", help="Name of the clean stage it records [default: review, then review-2, review-3, ...].")
@overwrite_option
@store_options
@json_option
def import_(run, path, stage_name, overwrite, db, as_json):
    """Apply an edited review sheet: exactly the rows with a decision, as one undoable clean stage.

    The run is the one the sheet names (its run column); --run, when given, must match it.

    \b
    Example:
      kd labels import review.csv
    """
    from click.core import ParameterSource

    store = open_store(db, writer=True)
    # typed, --run must match the sheet; a config file's run (a default for every command) does not bind it
    given = click.get_current_context().get_parameter_source("run") in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    numbered = stage_name is None and not overwrite  # a second sheet of a run: review-2 (--overwrite replaces review)
    stage_name = "review" if stage_name is None else stage_name
    sheet = lab.read_sheet(store, path, run if given else None, replacing=stage_name if overwrite else None,  # every row checked first
                           default_run=run)  # (a config file's run: a sheet naming none is of it)
    run = sheet.run
    before = store.counts().get("train", {})
    where = Path(path).resolve()  # (as typed, `review.csv` named no file once the working folder changed)
    detection = store.find_stage(run, "detect")  # (the one its issues are of, recorded as a clean records it)
    config = {"sheet": str(where), "sheet_sha256": sha256_path(where), "rows": len(sheet.decisions),  # which sheet, as it was read
              "detect_stages": [{"run": run, "stage_id": detection.id, "started_at": iso_utc(detection.started_at)}]}
    with stage_scope(store, run=run, kind="clean", name=stage_name, config=config,
                     overwrite=overwrite, numbered=numbered, bare_first=True) as stage:
        counts = lab.apply(store, stage.id, sheet.decisions, reason=f"review sheet {where}")
        store.add_metrics(stage.id, "train", counts)
    _print_counts(run, stage.name, counts, as_json, warnings=_warn(_emptied(store, before, run, stage.name)))


@labels.command()
@run_option
@click.option("--action", type=click.Choice(lab.ACTIONS), default="relabel", show_default=True)
@click.option("--min-score", type=FLOAT, default=0.0, show_default=True, help="Only issues scoring at least this.")
@click.option("--dry-run/--no-dry-run", is_flag=True, help="Print what would change; change nothing.")
@click.option("--top", type=click.IntRange(min=0), default=50, show_default=True,
              help="With --dry-run: table rows shown, highest scores first (0: all); the counts and --json cover every issue. "
                   "A clean decides every issue scoring at least --min-score: without --dry-run, --top is refused.")
@click.option("--name", "stage_name", default="clean", show_default=True)
@overwrite_option
@store_options
@json_option
def clean(run, action, min_score, dry_run, top, stage_name, overwrite, db, as_json):
    """Relabel, drop (exclude, never delete) or flag the run's detected issues, with an audit trail.

    \b
    Example:
      kd labels clean --run r1 --dry-run --top 100
      kd labels clean --run r1 --action relabel --min-score 0.7
      kd labels undo --run r1
    """
    from click.core import ParameterSource

    if not 0.0 <= min_score <= 1.0:
        raise click.BadParameter(f"{min_score:g} is not a score: scores are in [0, 1]", param_hint="--min-score")
    # typed without --dry-run, --top read as "clean the N highest" and every issue was decided (a config
    # file's top, a default for the dry runs, is no such request)
    top_typed = click.get_current_context().get_parameter_source("top") in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    store = open_store(db, writer=not dry_run)
    plan, items = lab.clean_plan(store, run, action=action, min_score=min_score)
    if top and top_typed and not dry_run:  # (refused before the stage: nothing written)
        cut = f"; the {_ordinal(top)} highest score is {_score(items[top - 1]['score'])}" if top < len(items) else ""
        raise click.BadParameter(
            f"{top} trims the table of a --dry-run; clean itself decides every undecided issue scoring at least "
            f"--min-score ({counted(len(items), 'issue')} here): raise --min-score to decide fewer{cut}", param_hint="--top")
    # (a relabel flags an issue whose suggestion is its given label: a flag, no label changed)
    changes = sum(i["effect"] == "change" and i["action"] != "flag" for i in items)
    # (a plan whose every issue is left alone, edited since detection or kept by a review, or a flag of flagged
    # ones, changes nothing: recorded, it was a stage of no edit that the next clean was refused as replacing)
    decides = any(i["effect"] == "change" for i in items)
    # flagging changes no label; printed once the clean is done (a refusal is its one line)
    warnings = lab.detect_warnings(store, run, changes=changes, done=not dry_run) if action != "flag" else []
    replacing = overwrite and any(st.name == stage_name for st in store.stages_of(run))
    if dry_run:
        check_stage_free(store, run=run, kind="clean", name=stage_name, overwrite=overwrite)  # a refusal, as the real run's
        warned = _warn(warnings) + _warn(_emptied_by(store, items))
        # (no issue to decide: why, as the real clean says it; an empty table and "0 changes" named no highest score)
        nothing = None if items else _nothing_to_clean(store, run, min_score, items, action)
        if as_json:  # (the stage it would write: none where the clean decides nothing, as the real one records none)
            # (the counts the clean's --json gives: a script checking the preview read no key)
            print_json({"run": run, "stage": stage_name if decides or replacing else None, "dry_run": True, "action": action, "min_score": min_score,
                        **_planned_counts(items), "changes": items, **({"nothing_to_clean": nothing} if nothing else {}), "warnings": warned})
        elif nothing:
            click.echo(f"run {run}: {nothing}; a clean would decide nothing (dry run: nothing written)")
        else:
            print_rows(["sample", "score", "action", "label now", "new", "effect", "text"],
                       [[str(i["sample_id"]), _score(i["score"]), i["action"], (i["current"] or "") + (" (dropped)" if i["dropped"] else ""),
                         i["new"] or "", "flag" if i["action"] == "flag" and i["effect"] == "change" else EFFECTS[i["effect"]], i["text"]]
                        for i in items[:top or None]],
                       title=f"kd labels clean --action {action} would decide (dry run: nothing written)")
            if top and len(items) > top:
                click.echo(f"... {len(items) - top} more rows (--top 0 shows all, --json lists all)")
            n = {e: sum(i["effect"] == e for i in items) for e in EFFECTS}
            kept = (f", {n['rejected']} left alone (a review kept the label)" if n["rejected"] else "") + \
                (f", {n['set']} left alone (set by hand)" if n["set"] else "")
            flags = sum(i["action"] == "flag" and i["effect"] == "change" for i in items)  # (a relabel's too: its suggestion is the label)
            changed = (f"{n['change']} flagged (no label changed)" if action == "flag" else
                       f"{changes} changes" + (f", {flags} flagged (its suggestion is the label it has)" if flags else ""))
            click.echo(f"{changed}, {n['unchanged']} unchanged, {n['edited']} left alone (edited since "
                       f"detection){kept}; dry run: nothing written")
        return
    if not decides and not replacing:  # (an --overwrite redoes the clean it replaces: its stage is recorded)
        # a clean deciding nothing (--min-score above every score) recorded a stage of no edits, and the next clean,
        # a lower --min-score, was refused as replacing it
        check_stage_free(store, run=run, kind="clean", name=stage_name, overwrite=overwrite)  # (a rerun is refused first, as ever)
        _print_nothing_to_clean(store, run, min_score, as_json, items, action)
        return
    detection = store.find_stage(run, "detect")  # (its id and start: one replaced later by `detect --overwrite` is told from it)
    config = {"action": action, "min_score": min_score, "detect": detection.name,
              "detect_stages": [{"run": run, "stage_id": detection.id, "started_at": iso_utc(detection.started_at)}]}
    before = store.counts().get("train", {})
    with stage_scope(store, run=run, kind="clean", name=stage_name, config=config, overwrite=overwrite) as stage:
        counts = lab.apply(store, stage.id, plan, reason=f"kd labels clean --action {action} --min-score {min_score}", skip_edited=True)
        store.add_metrics(stage.id, "train", counts)
    warned = _warn(warnings) + _warn(_emptied(store, before, run, stage.name))
    _print_counts(run, stage_name, counts, as_json, warnings=warned)


def _planned_counts(items: list[dict]) -> dict[str, int]:
    """The counts a clean's --json gives (``lab.apply``'s), of a plan's preview ``items``: a dry run's, or one deciding
    nothing (a clean's own rejects come from review sheets alone: none)."""
    effects = {e: sum(i["effect"] == e for i in items) for e in EFFECTS}
    return {**{a: sum(i["effect"] == "change" and i["action"] == a for i in items) for a in ("relabel", "drop", "flag")},
            "reject": 0, "unchanged": effects["unchanged"], "skipped_edited": effects["edited"], "skipped_rejected": effects["rejected"],
            "skipped_set": effects["set"]}


def _print_nothing_to_clean(store, run: str, min_score: float, as_json: bool, items: list[dict] = (), action: str = "relabel") -> None:
    """What a clean with no issue to decide says, recording no stage."""
    why = _nothing_to_clean(store, run, min_score, items, action)
    if as_json:
        # (the counts a clean's --json carries: a script reading skipped_edited found no key)
        print_json({"run": run, "stage": None, **_planned_counts(items), "nothing_to_clean": why, "warnings": []})
    else:
        click.echo(f"run {run}: {why}; nothing cleaned, no stage recorded")


def _nothing_to_clean(store, run: str, min_score: float, items: list[dict], action: str) -> str:
    """Why a clean decides nothing: the highest score it left undecided, or why it leaves alone every
    issue it would decide (``items``, the plan's preview)."""
    n = {e: sum(i["effect"] == e for i in items) for e in ("edited", "rejected", "set", "unchanged")}
    if items:
        why = ", ".join(f"{n[e]} {said}" for e, said in (("edited", "edited since detection"), ("rejected", "kept by a review"),
                                                          ("set", "set by hand"), ("unchanged", "flagged already")) if n[e])
        why = (f"the {counted(len(items), 'undecided issue')} scoring at least --min-score {min_score:g} would change nothing "
               f"({why}; `kd labels clean --run {run} --action {action} --min-score {min_score:g} --dry-run` lists "
               f"{'them' if len(items) > 1 else 'it'})")
    elif undecided := lab.issues(store, run, top=1, status=lab.UNDECIDED):
        why = f"no undecided issue scores at least --min-score {min_score:g} (the highest: {_score(undecided[0]['score'])})"
    elif lab.issues(store, run, top=1):
        why = f"every issue of its detection is decided (kd labels show --run {run} lists them)"
    else:
        why = "its detection flagged no label"
    return why


def _storable(value: str) -> str:
    """A ``--reason`` every backend stores: PostgreSQL refuses a NUL in text (a config file's "\\u0000";
    SQLite kept it), and neither takes bytes of another encoding in an argument (lone surrogates)."""
    if "\x00" in value:
        raise click.BadParameter("contains a NUL character")
    if has_surrogate(value):
        raise click.BadParameter("is not valid UTF-8 (typed in another encoding, such as GBK?)")
    return value


def _score(score: float) -> str:
    """An issue's score (6 decimals, ``lab.issues``) shown with 3, cut rather than rounded: the figure
    shown, typed as ``--min-score``, keeps its row (0.849931 read 0.850, and --min-score 0.85 left it out)."""
    return f"{round(score * 1_000_000) // 1000 / 1000:.3f}"


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


EFFECTS = {"change": "change", "unchanged": "unchanged", "edited": "left alone (edited since detection)",
           "rejected": "left alone (a review kept this label)", "set": "left alone (set by hand)"}


@labels.command(name="set")
@run_option
@click.argument("edits", nargs=-1, required=True, metavar="SAMPLE_ID=LABEL|drop...")
@click.option("--reason", default="set by hand", show_default=True, callback=lambda _c, _p, v: _storable(v), help="Recorded with every edit.")
@click.option("--name", "stage_name", help="Name of the clean stage it records (default: edit-N, the next free N).")
@store_options
@json_option
def set_(run, edits, reason, stage_name, db, as_json):
    """Relabel or drop samples by hand (any split): one undoable clean stage, every change recorded.
    A class named drop is written label:drop (and the decision decision:drop).

    
    Example:
      kd labels set --run r1 1042=neg 2210=drop --reason "checked by hand"
      kd labels undo --run r1 --stage edit-1
    """
    store = open_store(db, writer=True)
    decisions = lab.parse_edits(store, edits)  # every pair checked before anything changes
    if stage_name is not None and store.run_exists(run) and any(st.name == stage_name and st.status == "succeeded"
                                                                for st in store.stages_of(run)):
        # (kd labels set has no --overwrite: a hand edit is undone with kd labels undo, not replaced;
        # a failed one's name is taken again, as by every other stage)
        raise click.ClickException(f"run {run!r} has a stage {stage_name!r}: choose another --name, or leave it out (edit-N)")
    before = store.counts().get("train", {})
    with stage_scope(store, run=run, kind="clean", name="edit" if stage_name is None else stage_name, numbered=stage_name is None,
                     config={"edits": list(edits), "reason": reason}) as stage:  # edit-N: N chosen as the stage starts
        counts = lab.apply(store, stage.id, decisions, reason=reason)
        store.add_metrics(stage.id, "all", counts)
    _print_counts(run, stage.name, counts, as_json, warnings=_warn(_emptied(store, before, run, stage.name)),
                  undo=lab.undoable(store, stage.id),  # (a set that changed nothing: its undo said "nothing left to undo")
                  words={"unchanged": "unchanged (confirmed, as `kd labels history` lists: clean leaves it alone)"})


@labels.command()
@run_option
@click.option("--stage", "stage_name", help="Clean stage to undo (default: the latest with edits).")
@store_options
@json_option
def undo(run, stage_name, db, as_json):
    """Revert exactly one clean stage's label edits.

    \b
    Example:
      kd labels undo --run r1
    """
    store = open_store(db)
    done = lab.undo(store, run, stage_name)
    warned = []
    if done["trained_on_it"]:  # (their records keep the labels they learned from: labels_digest)
        trained = done["trained_on_it"]
        # (its run named: "`kd report --run RUN`" was a placeholder to fill in)
        reports = " or ".join(f"`kd report --run {shlex.quote(r)}`" for r in list(dict.fromkeys(t.split("/", 1)[0] for t in trained))[:3])
        # (one still training read them as it started: an --overwrite now is refused as replacing a running stage)
        running = [t for t in trained if any(st.name == t.split("/", 1)[1] and st.status == "running" for st in store.stages_of(t.split("/", 1)[0]))]
        later = f" ({', '.join(running)} still running: once {'they end' if len(running) > 1 else 'it ends'})" if running else ""
        warned = _warn([f"{', '.join(trained[:5])}{f' and {len(trained) - 5} more' if len(trained) > 5 else ''} trained on the labels this undo "
                        f"reverted: re-run {'them' if len(trained) > 1 else 'it'} to learn from the labels as they are now "
                        f"({'each ' if len(trained) > 1 else ''}with --overwrite and the options {reports} lists for it){later}"])
    if done["detected_on_it"]:  # (a later clean of their issues would say "left alone (edited since detection)")
        warned += _warn([lab.rejudge_warning(store, done["detected_on_it"])])
    if done["set_since"]:  # (a set that found the label as this stage left it recorded no edit to stop the undo)
        confirmed = done["set_since"]
        ids = ", ".join(str(c["sample_id"]) for c in confirmed[:20]) + (f" and {len(confirmed) - 20} more" if len(confirmed) > 20 else "")
        by = ", ".join(sorted({c["stage"] for c in confirmed}))
        pairs = " ".join(f"{c['sample_id']}={c['set']}" for c in confirmed[:20]) + (" ..." if len(confirmed) > 20 else "")
        warned += _warn([f"sample{'s' if len(confirmed) > 1 else ''} {ids} {'were' if len(confirmed) > 1 else 'was'} set by hand "
                         f"after stage {done['stage']!r} ({by}) to the label this undo reverted (that set changed nothing, so "
                         f"it recorded no edit): `kd labels set --run {run} {pairs}` sets {'them' if len(confirmed) > 1 else 'it'} again"])
    if as_json:
        print_json({"run": run, **done, "warnings": warned})
    else:
        edits = done["reverted"] - done["flags"]  # (a flag changed no label: "reverted 3 label edits" said it had)
        undone = [f"reverted {counted(edits, 'label edit')}" if edits or not done["flags"] else "",
                  f"removed {counted(done['flags'], 'flag')}" if done["flags"] else ""]
        click.echo(f"run {run}, stage {done['stage']}: {', '.join(u for u in undone if u)}, reopened {counted(done['reopened'], 'issue')}")


@labels.command()
@click.argument("sample_id", type=int)
@store_options
@json_option
def history(sample_id, db, as_json):
    """Show a sample's original label, current label, every edit, a review's rejects and the labels
    `kd labels set` confirmed (the one it had: no edit).

    \b
    Example:
      kd labels history 42
    """
    h = lab.history(open_store(db), sample_id)
    if as_json:
        print_json(h)
        return
    def shown(label):  # an unlabeled sample (of the pool) may be dropped: not "original None"
        return "(unlabeled)" if label is None else label

    click.echo(f"sample {sample_id}: original {shown(h['original'])}, now {shown(h['current'])}{' (dropped)' if h['dropped'] else ''}")
    def plain(line: str) -> str:  # (a text's line break or \r broke the listing, its ESC ran in the terminal: as kd samples shows them)
        return line.translate(CELL_BREAKS).translate(SHOWN_CONTROLS)

    click.echo(f"  {plain(h['text'])}")
    lines = []  # (time, stage id, line): the edits and a review's rejects (no edit of their own) in the order they were made
    for e in h["edits"]:
        undone = f", reverted {e['reverted_at']}" if e["reverted_at"] else ""
        where = f"{e['run']}/{e['stage']}" if e["stage"] else "kd ingest" if e["action"] == "take" else "(a deleted stage)"
        if e["action"] == "take":  # (a pool text an annotated file labeled: `kd ingest --take-pool`)
            made = MADE_BY_AUGMENT in (e["reason"] or "")  # (a text --augment made, no pool text: its reason says whose)
            change = f"taken {'' if made else 'from the pool '}into train, labeled {e['new']}"
        elif e["action"] == "drop":
            change = "drop" if e["old"] is None else f"drop (label {e['old']} kept)"
        elif e["action"] == "flag":
            change = "flag"
        else:
            change = f"{e['action']} {e['old']} -> {e['new']}" + (", no longer dropped" if e["old_dropped"] and not e["new_dropped"] else "")
        lines.append((e["at"], e["stage_id"] or 0, f"  {e['at']} {where}{_by(e)}: {change} ({e['reason']}){undone}"))
    for r in h["rejected"]:
        where = f"{r['run']}/{r['stage']}" if r["stage"] else "(a deleted stage)"
        why = f"; {r['reason']}" if r["reason"] else ""
        undone = f", reverted {r['reverted_at']}" if r.get("reverted_at") else ""
        # (an accept, or the class, of a suggestion the sample already had: on record as a reject, which keeps it)
        kept = f"accept, label {r['kept']} already set" if r.get("accepted") else f"reject, label {r['kept']} kept"
        lines.append((r["at"] or "", r["stage_id"] or 0, f"  {r['at'] or '(time unknown)'} {where}{_by(r)}: {kept} "
                                     f"({r['run']}/{r['detection']} suggested {r['suggested']}, issue {r['issue_id']}{why}){undone}"))
    for c in h["confirmed"]:  # (a `kd labels set` of the label or dropped flag it had: no edit, yet clean leaves it alone)
        lines.append((c["at"] or "", c["stage_id"], f"  {c['at'] or '(time unknown)'} {c['run']}/{c['stage']}{_by(c)}: set {c['set']}, "
                                                      f"as it was (confirmed: no edit; {c['reason']})"
                                                      + (f", reverted {c['reverted_at']}" if c.get("reverted_at") else "")))
    for _, _, line in sorted(lines, key=lambda t: t[:2]):  # (times are to the second: two stages within one, in the order they ran)
        click.echo(plain(line))


def _by(item: dict) -> str:
    """" by NAME" where the stage that made a history line recorded who ran it (none before store revision 0010)."""
    return f" by {item['by']}" if item.get("by") else ""


def _warn(messages: list[str]) -> list[str]:
    """Each message on standard error as ``warning: ...`` (stdout stays the result); returned for --json."""
    for m in messages:
        click.echo(f"warning: {m}", err=True)
    return messages


def _emptied(store, before: dict[str, int], run: str, stage: str) -> list[str]:
    """The warning for classes that had train samples ``before`` a clean, set or import and have none now."""
    return _emptied_warning(before, store.counts().get("train", {}), would=False,
                            advice=f"`kd labels undo --run {run} --stage {stage}` puts them back")


def _emptied_by(store, items: list[dict]) -> list[str]:
    """A dry run's ``_emptied``: the classes whose train samples its changes would all take."""
    before = store.counts().get("train", {})
    after = dict(before)
    for i in items:  # (a change is of a sample not dropped, its label the detection's: a train sample)
        if i["effect"] == "change" and i["action"] in ("relabel", "drop"):
            after[i["current"]] = after.get(i["current"], 0) - 1
            if i["action"] == "relabel":
                after[i["new"]] = after.get(i["new"], 0) + 1
    return _emptied_warning(before, after, would=True, advice="raise --min-score, or review the issues with `kd labels export`")


def _emptied_warning(before: dict[str, int], after: dict[str, int], *, would: bool, advice: str) -> list[str]:
    """The classes with train samples ``before`` and none ``after``, as one warning (or none)."""
    emptied = [name for name, n in before.items() if n and name != "(none)" and after.get(name, 0) <= 0]
    if not emptied:  # (a rare class of a moderation task, all of it flagged against the majority, or dropped by hand)
        return []
    one = len(emptied) == 1  # ("class '军事', '财经', '汽车' has ... learn it" of a weak teacher's clean)
    have = "would have" if would else "has" if one else "have"
    return [f"{'class' if one else 'classes'} {', '.join(map(repr, emptied))} {have} no train sample left: "
            f"a teacher or student would never learn {'it' if one else 'them'}; {advice}"]


_COUNT_WORDS = {"relabel": "relabeled", "drop": "dropped", "flag": "flagged", "reject": "rejected (label kept)",
                "skipped_edited": "skipped (edited since detection)", "skipped_rejected": "skipped (kept by an earlier review)",
                "skipped_set": "skipped (set by hand)"}


def _print_counts(run: str, stage: str, counts: dict, as_json: bool, *, warnings: list[str] = (), undo: bool = True,
                  words: dict[str, str] | None = None) -> None:
    if as_json:  # (as detect's and undo's: every labels command that writes carries run, stage and warnings)
        print_json({"run": run, "stage": stage, **counts, "warnings": list(warnings)})
    else:
        # (a sheet never flags: no "0 flagged"; --json has every count, by its key: "relabel 71" read as sample 71)
        said = [f"{v} {(words or {}).get(k) or _COUNT_WORDS.get(k, k)}" for k, v in counts.items() if v]
        click.echo(f"run {run}, stage {stage}: " + (", ".join(said) or "no label changed"))
        # (an undo reopens the issues a stage decided too: a review of rejects, a flagging clean)
        if undo and any(counts.get(k) for k in ("relabel", "drop", "flag", "reject", "unchanged")):
            click.echo(f"  undo: kd labels undo --run {run} --stage {stage}")
