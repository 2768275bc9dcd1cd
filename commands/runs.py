"""``kd runs`` and ``kd report``: what ran, how it went, and its figures."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from click.core import ParameterSource
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from kdstore.advice import reteach_command
from kdstore.deletion import delete_stages
from kdstore.plots import write_plots
from kdstore.report import LEADING_FIGURES, compare, parked_note, run_report, runs_overview, serving_parked
from kdstore.store import moved_store_advice

from .common import CONFIG_ERROR, KdPath, console, counted, json_option, open_store, print_json, resolve_runs, run_option, store_options

_STATUS_STYLE = {"succeeded": "green", "failed": "red", "running": "yellow"}


@click.group(invoke_without_command=True)
@store_options
@json_option
@click.pass_context
def runs(ctx, db, as_json):
    """List runs and their stages; `kd runs delete` deletes a run or some of its stages.

    \b
    Example:
      kd runs --json
      kd runs delete --run 20240101 --stage distill-bigru --dry-run
    """
    if ctx.invoked_subcommand is not None:
        # (`kd runs --db other.db delete --run R` deleted from ./kd.db or $KD_DB: the subcommand never saw them)
        typed = [o for o, name in (("--db", "db"), ("--config", "config_file"), ("--json", "as_json"))
                 if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE]
        if typed:
            raise click.UsageError(f"{typed[0]} goes after the subcommand: kd runs {ctx.invoked_subcommand} {typed[0]} ...")
        return
    if CONFIG_ERROR in ctx.meta:  # (the default config file's mistake, left for kd runs alone: common._apply_config)
        raise ctx.meta.pop(CONFIG_ERROR)
    data = runs_overview(open_store(db))
    if as_json:
        print_json(data)
        return
    if not data:  # (an empty table's borders said nothing)
        click.echo("no runs in the store yet: `kd teach --run R` (or `kd pretrain --run R`) starts one")
        return
    table = Table(title="runs")
    for col in ("run", "stage", "kind", "status", "started", "seconds", "error"):
        table.add_column(col)
    for run in data:
        for i, st in enumerate(run["stages"] or [None]):
            if st is None:
                table.add_row(run["run"], "", "", "", "", "", "")
                continue
            style = _STATUS_STYLE.get(st["status"], "")
            table.add_row(
                run["run"] if i == 0 else "",
                Text(st["name"]),
                st["kind"],
                f"[{style}]{st['status']}[/]" + (" (process gone)" if st.get("process_gone") else "")
                + (f" (resumable: {st['resume']})" if st.get("resume") else ""),
                st["started_at"],
                "" if st["duration_s"] is None else f"{st['duration_s']:.1f}",
                Text(one_line(st["error"] or "", 80)),
            )
    print_wide(console(), table)


@runs.command()
@run_option(default="Required, typed here: a config file's run and the default are not taken.")
@click.option("--stage", "stages", multiple=True, metavar="NAME",
              help="Delete this stage only (repeatable), with its records of replaced and failed attempts; default: the whole run.")
@click.option("--dry-run/--no-dry-run", is_flag=True, help="Say what would be deleted; change nothing.")
@click.option("--yes", is_flag=True, help="Do not ask (needed where no terminal can answer).")
@store_options
@json_option
def delete(run, stages, dry_run, yes, db, as_json):
    """Delete a run, or some of its stages: their logits, predictions, figures, label issues and
    artifact folders. Label edits are never deleted: a stage whose edits stand is refused (`kd labels
    undo` first), one whose edits were undone keeps its record for the audit trail.

    \b
    Example:
      kd runs delete --run 20240101 --dry-run
      kd runs delete --run 20240101 --stage distill-bigru --yes
    """
    if click.get_current_context().get_parameter_source("run") != ParameterSource.COMMANDLINE:
        # (a config file's `run = "exp1"`, or the run named default, deleted by a bare `kd runs delete --yes`)
        raise click.UsageError("name the run to delete with --run (the one a config file or the default names is not taken for it)")
    # (a stage left running by a process that is gone is marked failed first; not by a dry run, which changes nothing:
    # it reverted a killed clean's label edits, in any run; delete_stages judges such a stage as the marking leaves it)
    store = open_store(db, writer=not dry_run)
    what = f"stage{'s' if len(stages) > 1 else ''} {', '.join(stages)} of run {run!r}" if stages else f"run {run!r}"
    if not dry_run and not yes:
        preview = delete_stages(store, run, stages, dry_run=True)  # (refusals before the question)
        if not sys.stdin.isatty():
            raise click.ClickException(f"deleting {what} asks first, and no terminal can answer: pass --yes (or --dry-run)")
        for warning in preview["warnings"]:  # (said before the question, not once the answer has been acted on)
            click.echo(f"warning: {warning}", err=True)
        listed = ", ".join(d["name"] for d in preview["deleted"]) or "nothing"
        listed += "".join(f"; model folder {d['folder']}" for d in preview["deleted"] if d["folder"])  # (files on disk go too)
        listed += "".join(f"; export {folder}" for folder in preview["exports"])  # (a server may load one: it goes too)
        listed += "".join(f"; saved training state {folder}" for folder in preview["resume_states"])  # (kd teach|pretrain --resume's)
        click.confirm(f"delete {what} ({listed})?", abort=True, err=True)
    result = delete_stages(store, run, stages, dry_run=dry_run)
    for warning in result["warnings"]:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        print_json(result)
        return
    verb = "would delete" if dry_run else "deleted"
    for d in result["deleted"]:
        issues = f", {d['issues']} label issues" if d["issues"] else ""
        click.echo(f"{verb} {run}/{d['name']} ({d['kind']}, {d['status']}; {d['logits']} logits, {d['predictions']} predictions{issues})")
    for k in result["kept"]:
        if k.get("confirmations"):  # (a `kd labels set` that changed no label: nothing to undo, still honoured)
            n = k["confirmations"]
            click.echo(f"kept {run}/{k['name']} ({k['kind']}): its {n} label{'s' if n > 1 else ''} confirmed by `kd labels set` "
                       f"(no edit; `kd labels clean` leaves {'them' if n > 1 else 'it'} alone) {'are' if n > 1 else 'is'} on record")
            continue
        if not k["label_edits"] and k.get("rejects"):  # (a review that only rejected: its rejects undone, on record)
            n = k["rejects"]
            click.echo(f"{'would keep' if dry_run else 'kept'} {run}/{k['name']} ({k['kind']}): its {n} review reject{'s' if n > 1 else ''}, "
                       + ("undone (those that stand), would be on record" if dry_run else f"undone, {'are' if n > 1 else 'is'} on record"))
            continue
        edits = "its 1 label edit, undone, is" if k["label_edits"] == 1 else f"its {k['label_edits']} label edits, undone, are"
        click.echo(f"kept {run}/{k['name']} ({k['kind']}): {edits} the audit trail")
    if result["reopened"]:
        n = result["reopened"]
        deciders = len(result["deleted"]) + sum(bool(k.get("rejects")) for k in result["kept"])  # (a review kept, its rejects undone)
        click.echo(f"{n} label issue{'s' if n > 1 else ''} {'it' if deciders == 1 else 'they'} decided "
                   f"{'would be' if dry_run else 'are' if n > 1 else 'is'} open again (a review's rejections included)")
    for folder in [d["folder"] for d in result["deleted"] if d["folder"]]:
        click.echo(f"{verb} model folder {folder}")
    for folder in result["exports"]:
        click.echo(f"{verb} export {folder}")
    for folder in result["resume_states"]:
        click.echo(f"{verb} saved training state {folder} (kd {Path(folder).name.removesuffix('~resume')} --resume's)")  # (teach~resume, pretrain~resume)
    if result["run_deleted"]:
        click.echo(f"{verb} run {run!r}")


def one_line(error: str, limit: int | None = None) -> str:
    """A stage's error on one line (an exception's message may span several), cut to ``limit``
    characters with "..." when longer."""
    error = " ".join(error.split())
    return error if limit is None or len(error) <= limit else error[:limit - 3] + "..."


PROSE = ("error", "note")  # the columns that may wrap (at spaces); every other cell is a name or a figure


LONG_CELL = 24  # characters: a name longer than this goes below a table of a row a figure (``_compared_by_figure``)


def _cell(value):
    return Text(value) if isinstance(value, str) else _fmt(value)


def _compared_by_model(rows: list[dict], cols: list[str]) -> Table:
    """`kd report --compare` as a row per model, a column per figure (the form piped output always has)."""
    table = Table(title="runs compared")
    for c in cols:
        table.add_column(c, justify="left" if c in ("run", "stage", "kind", "model", "note") else "right")
    for r in rows:
        table.add_row(*(_cell(r.get(c)) for c in cols))
    return table


def _timed_on(timed: dict) -> str:
    """How many texts the latency was timed on, where fewer than the 100 it takes: its p99 is about their slowest."""
    n = timed.get("latency_texts")
    return f" on {n} text{'s' * (n != 1)} (p99 of so few: about their slowest)" if n is not None and n < 100 else ""


def _timed_in_batches(timed: dict) -> str:
    """How many distinct texts the throughput was timed over, where fewer than the texts it runs (1,000: repeated to fill them)."""
    n, of = timed.get("throughput_texts"), timed.get("throughput_of")
    return f" over {n} distinct text{'s' * (n != 1)} repeated to {of:,}" if n is not None and of is not None and n < of else ""


def _leaders_lines(rows: list[dict]) -> list[str]:
    """`kd report --compare`'s answer to "which is better": a line a figure naming the model that leads it, with
    its value (ties: each of them), and why test figures are not ranked where the models were tested on unequal
    sets (a line each: one line of them all was wider than a terminal)."""
    lines = []
    for figure, _ in LEADING_FIGURES:
        at = [r for r in rows if figure in r["leads"]]
        if at:
            models = " and ".join(f"{r['run']}/{r['stage']}" for r in at)
            lines.append(f"best {figure}: {models} ({_fmt(at[0][figure])})")
    sizes = sorted({r["test_n"] for r in rows if r["test_n"] is not None})
    if len(sizes) > 1:  # (a model tested on 2,000 samples beside one tested on 1,000 after a clean dropped some)
        lines.append(f"test figures not ranked: measured on {', '.join(map(str, sizes))} test samples (test_n)")
    elif sum(r["test_accuracy"] is not None for r in rows) > 1 and not any(f.startswith("test_") for r in rows for f in r["leads"]):
        # (one test_n: the labels differ, `kd labels set`, import or undo between the models, or the samples)
        lines.append("test figures not ranked: measured against other test labels or samples (edited between them: "
                     "kd labels set, import or undo)")
    return lines


def _compared_by_figure(rows: list[dict], cols: list[str]) -> Table:
    """The same figures as a row per figure, a column per model (``run/stage``): a terminal too narrow
    for a row per model."""
    table = Table(title="runs compared")
    table.add_column("figure")
    for r in rows:
        table.add_column(f"{r['run']}/{r['stage'] or '-'}", justify="right")
    for c in cols:
        if c not in ("run", "stage"):
            table.add_row(c, *(_cell(r.get(c)) for r in rows))
    return table


def print_wide(out, table) -> None:
    """Print ``table``; when the output is not a terminal (piped, or a file), as wide as the table
    needs: rich would otherwise cut names and figures to 80 columns with "…". In a terminal too
    narrow for it, only the error and note columns wrap: a name or a figure is never cut to "…"
    ("153,4…" for 153,474 parameters, "disti…" for two stages alike); the table is as wide as that takes."""
    wide = out.options.update_width(10**6)
    for column in table.columns:
        if str(column.header) not in PROSE:
            # a column that folds (a confusion matrix's, headed by a class name) keeps its figures whole, its
            # header folding over lines: long Chinese class names made a 3-class matrix 108 columns wide
            folds = column.overflow == "fold"
            column.no_wrap = not folds
            column.min_width = max(Measurement.get(out, wide, cell).maximum
                                   for cell in ((*column.cells, "00") if folds else (column.header, *column.cells)))
    need = out.measure(table, options=wide)
    if out.is_terminal:  # (a folding header's whole name is not a width the table needs)
        folding = [c for c in table.columns if c.overflow == "fold" and not c.no_wrap]
        for column in folding:
            column.max_width = column.min_width
        need = out.measure(table, options=wide)
        for column in folding:
            column.max_width = None
    out.width = max(out.width, need.maximum if not out.is_terminal else need.minimum)
    out.print(table)


_HIDDEN = object()
_TEXT_HIDDEN = {"labels_read_at", "labels_stage_ids", "newest_sample_read"}  # bookkeeping the text report leaves to --json


def _config_value(value):
    """A config value as the text report shows it: short lists of plain values joined by commas, a longer
    one's count; ``_HIDDEN`` for what it leaves out (nested structures: ``--json`` has them)."""
    if isinstance(value, dict):
        return _HIDDEN
    if isinstance(value, list):
        if any(isinstance(x, (dict, list)) for x in value):
            return _HIDDEN
        if len(value) > 8:  # (named, not left out in silence: a rerun from this line lost 9 --match or --label values)
            return f"({len(value)} values: kd report --json lists them)"
        return ",".join(map(_plain, value)) if value else "[]"  # (not "labels=," beside the next option: an empty list as JSON writes it)
    return _plain(value)


def _plain(value) -> str:
    """A plain config value as ``--json`` spells it where Python's own would differ: null, true, false, and an
    empty string as "" (not "where=None", nor "student_model=, hidden_mse=0.0")."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    return '""' if value == "" else str(value)


@click.command()
@click.argument("compare_runs", nargs=-1, metavar="[RUN]...", callback=resolve_runs)
@run_option
@click.option("--compare/--no-compare", "comparing", is_flag=True, help="Put the models of the RUNs given as arguments side by side.")
@click.option("--plot", "plot_dir", type=KdPath(file_okay=False), help="Write PNG charts here (needs matplotlib).")
@store_options
@json_option
def report(compare_runs, run, comparing, plot_dir, db, as_json):
    """Show every stage and metric of a run, or compare the models of several runs.

    \b
    Example:
      kd report --run 20240101
      kd report --compare teacher-only distilled distilled-aug   # or: --compare A --compare B
      kd report --run r1 --plot charts/ --json | jq '.stages[] | {name, metrics}'
    """
    def typed(name: str) -> bool:
        return click.get_current_context().get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)

    if comparing and not compare_runs and not typed("comparing"):
        comparing = False  # a config file's [report] compare = true: a default for `kd report A B`, not a mistake in `--run R`
    if compare_runs and not comparing:
        raise click.UsageError("runs as arguments go with --compare: kd report --compare A B (one run: --run A)")
    if comparing and not compare_runs:  # (`--run R --compare`: R's teacher and students side by side is `--compare R`)
        one = f" (one run's models side by side: kd report --compare {run})" if typed("run") else ""
        raise click.UsageError(f"--compare needs the runs to compare: kd report --compare A B{one}")
    if comparing:  # (a config file's run is a default for every command: only a typed --run is a mistake)
        if typed("run"):
            raise click.UsageError("--compare takes its runs as arguments: kd report --compare A B (leave out --run)")
        if plot_dir and typed("plot_dir"):  # (a config file's [report] plot is for kd report --run)
            raise click.UsageError("--plot charts one run: kd report --run A --plot DIR")
    if plot_dir and Path(plot_dir).suffix.lower() in (".png", ".jpg", ".jpeg", ".svg", ".pdf") and not Path(plot_dir).is_dir():
        # (`--plot x.png` made a folder named x.png)
        raise click.BadParameter(f"{str(plot_dir)!r} names an image file: --plot takes a folder, where it writes one PNG a chart "
                                 "(e.g. --plot charts)", param_hint="'--plot'")
    store = open_store(db)
    if comparing:
        rows = compare(store, list(compare_runs))
        if as_json:
            print_json(rows)
            return
        # (status: the note says a stage that did not succeed, and why; a succeeded one's figures say it)
        threads = {r["speed_threads"] for r in rows if r["speed_threads"] is not None}  # (one count: no column, nothing to say)
        # (the fit and test digests are for a script: the lines below the table say what they tell)
        cols = [k for k in dict.fromkeys(k for r in rows for k in r)
                if k not in ("status", "leads", "labels_fit_digest", "test_digest") and (k != "note" or any(r[k] for r in rows))
                and (k != "speed_threads" or len(threads) > 1)] or ["run", "stage"]
        out = console()
        table = _compared_by_model(rows, cols)
        if out.is_terminal and out.measure(table, options=out.options.update_width(10**6)).maximum > out.width:
            # a row a model, 15 figures wide, wrapped every line of an 80-column terminal: a row a figure then
            # (a long name, a teacher's --model directory say, and the notes: lines below it, not a column that wide)
            below = [c for c in cols if c == "note" or any(isinstance(r.get(c), str) and len(r[c]) > LONG_CELL for r in rows)]
            print_wide(out, _compared_by_figure(rows, [c for c in cols if c not in below]))
            for c in below:
                for r in rows:
                    if r.get(c):
                        click.echo(f"{c}: {r['run']}/{r['stage'] or '-'}: {r[c]}")
        else:
            print_wide(out, table)
        for line in _leaders_lines(rows):
            click.echo(line)
        if len(threads) > 1:
            click.echo("note: latency and throughput were timed with different numbers of torch threads (speed_threads): "
                       "compare them between models timed alike (OMP_NUM_THREADS sets the count)")
        return
    data = run_report(store, run)
    if plot_dir:
        data["plots"] = [str(p) for p in write_plots(data, Path(plot_dir))]
    if as_json:
        print_json(data)
        return
    out = console()
    out.print(f"[bold]run {escape(data['run'])}[/]")
    parked = serving_parked(data["stages"])
    for st in data["stages"]:
        style = _STATUS_STYLE.get(st["status"], "")
        dur = "" if st["duration_s"] is None else f", {st['duration_s']:.1f} s"
        gone = " (process gone)" if st.get("process_gone") else ""
        by = f", by {escape(st['run_by'])}" if st.get("run_by") else ""
        out.print(f"\n[bold]{escape(st['name'])}[/] ({st['kind']}) [{style}]{st['status']}[/]{gone}{dur}{by}")
        if st["error"]:
            out.print(f"  error: {one_line(st['error'])}", markup=False)
        if st["name"] in parked:  # (as kd report --compare notes it: "succeeded" alone read as history)
            out.print(f"  parked: {parked_note(st)}", markup=False)
        if st["artifact_found"] is False:  # (its figures stand; predict, export and a student's --init need the folder)
            host = f" ({st['host']})" if st["host"] else ""
            # (as kd predict says it: where this store looks for it, when that is not where it was recorded)
            where = moved_store_advice(store.artifact_root / data["run"] / st["name"], st["artifact_path"])
            where = where and f"; {where}"
            out.print(f"  model folder not found here: {st['artifact_path']}: deleted or moved by hand, or on the disk of "
                      f"the machine that trained it{host}{where}", markup=False)
        shown = {k: v for k, v in ((k, _config_value(v)) for k, v in st["config"].items())
                 if v is not _HIDDEN and k not in _TEXT_HIDDEN}
        if shown:
            out.print("  config: " + ", ".join(f"{k}={v}" for k, v in shown.items()), markup=False)
        added = st["notes"]["classes"]
        if added:  # (its confusion matrices below are of today's labels: a zero row, or the new class's samples as errors)
            out.print(f"  classes: {added}, which this model cannot answer: any of its samples in the confusion matrices "
                      "below is an error (kd teach again to learn it)", markup=False)
        sources = st["sources"]
        if sources["teachers"]:  # (a list of dicts: hidden from the config line above)
            out.print("  teachers: " + ", ".join(sources["teachers"]), markup=False)
        larger = st["notes"]["size"]
        if larger:  # (as kd distill warned and --compare notes)
            out.print(f"  size: {larger}", markup=False)
        if sources["model"]:  # (replaced since: the config line's model_stage names the run's model now)
            out.print(f"  model: {sources['model']}", markup=False)
        if sources["checkpoint"]:  # (gone since: the config line's model= names the run's model now)
            out.print(f"  started from: {sources['checkpoint']}", markup=False)
        if sources["detection"]:  # (a clean's detection: the config line's detect= names the run's one now)
            out.print("  detection: " + ", ".join(sources["detection"]), markup=False)
        if sources["student_votes"]:  # (a list of dicts: hidden from the config line)
            out.print("  student votes: " + ", ".join(sources["student_votes"]), markup=False)
        learned = sources["labels_from"] or []
        if any(x.endswith(("replaced since)", "undone since)")) for x in learned):  # (the config line's labels_stages name the new ones)
            out.print("  labels from: " + ", ".join(learned), markup=False)
        if st["notes"]["labels_changed"]:
            # (a clean, set, import or undo since it ran: kd distill and kd labels detect warn so, the run's own report said nothing)
            out.print(f"  labels: this teacher learned from labels changed since (kd labels clean, set, import or undo): its logits and "
                      f"figures follow the old ones; {reteach_command(data['run'], st['config'], listed='its config line lists')} retrains it on the current labels",
                      markup=False)
        edits = st.get("label_edits")
        rejects = edits and edits["rejects_undone"]  # (a review's rejects, reopened by its undo or an import --overwrite)
        if edits and edits["undone"]:  # its figures below are what it changed then
            some = "all" if edits["undone"] == edits["edits"] else f"{edits['undone']} of them"
            too = f"; its {counted(rejects, 'reject')} undone too" if rejects else ""
            out.print(f"  label edits: {edits['edits']}, {some} undone (kd labels undo, last at {edits['undone_at']}){too}", markup=False)
        elif rejects:  # ("reject 3" below, with no edit to say it was undone)
            out.print(f"  rejects: {rejects}, undone (last at {edits['undone_at']})", markup=False)
        if st["metrics"]:
            order = ("train", "dev", "test", "unlabeled", "all")
            splits = sorted(st["metrics"], key=lambda x: order.index(x) if x in order else len(order))
            names = sorted({n for per in st["metrics"].values() for n in per}, key=lambda n: _metric_order(n, data["classes"]))
            table = Table()
            table.add_column("metric")
            for split in splits:
                table.add_column(split, justify="right")
            for n in names:
                table.add_row(Text(n), *[_fmt(st["metrics"][split].get(n)) for split in splits])
            print_wide(out, table)
            timed = st["metrics"].get("all") or {}
            if timed.get("latency_p50_ms") is not None:  # (figures of this machine: what they were measured with)
                threads = f", {int(timed['speed_threads'])} torch thread{'s' * (timed['speed_threads'] != 1)}" if timed.get("speed_threads") else ""
                # (an early-exit model's depth depends on its threshold: timed at the one it serves at)
                serving = f" at its serving speed {timed['speed']:g}" if timed.get("speed") is not None else ""
                out.print(f"  speed: on the CPU{threads}, measured once after training{serving}: latency one text at a time"
                          f"{_timed_on(timed)}, throughput in batches of 256{_timed_in_batches(timed)} (bench/ times with repeats)", markup=False)
        for split, matrix in (st.get("confusion") or {}).items():
            cm = Table(title=f"{split} confusion (rows: label, columns: predicted)")
            cm.add_column("")
            for name in data["classes"]:
                cm.add_column(Text(name), justify="right", overflow="fold")
            for name, row in zip(data["classes"], matrix):
                cm.add_row(Text(name), *[str(v) for v in row])
            print_wide(out, cm)
    for p in data.get("plots", []):
        out.print(f"wrote {p}", markup=False)
    if plot_dir and not data["plots"]:
        click.echo(f"no charts written to {plot_dir}: run {data['run']} has no confusion matrix, learning curve, early-exit curve or label scores to chart", err=True)


LAYER_FIGURES = ("exit_share", "teacher_layer")  # figures of a layer (``exit_share[K]``), not of a class


def _metric_order(name: str, classes: list[str] = ()) -> tuple:
    """The headline figures first, then the rest by name, a per-class figure (``f1[体育]``) of each
    kind in class id order."""
    first = ("accuracy", "macro_f1", "macro_precision", "macro_recall", "micro_f1", "micro_precision", "micro_recall", "n")
    if name in first:
        return (first.index(name), "", -1, "")
    kind, bracket, rest = name.partition("[")
    cls = rest[:-1] if bracket and rest.endswith("]") else None
    if kind in LAYER_FIGURES and cls is not None and cls.isascii() and cls.isdigit():
        # a layer's figure (``exit_share[10]`` after ``[9]``), never a class's: classes '2', '1' (star ratings)
        # had listed exit_share[2] before exit_share[1]
        return (len(first), kind, int(cls), "")
    if cls in classes:
        return (len(first), kind, list(classes).index(cls), "")
    if cls is not None and cls.isascii() and cls.isdigit():  # a layer's figure (``exit_share[10]`` after ``[9]``)
        return (len(first), kind, int(cls), "")
    figure, at, speed = name.rpartition("@")
    try:  # a figure at each early-exit speed (``accuracy@0.1``) in the order of the speeds: 1e-05 before 0.8
        return (len(first), figure if at else name, float(speed) if at else -1, "")
    except ValueError:
        return (len(first), name, -1, "")


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    if isinstance(value, int) or (float(value).is_integer() and abs(value) >= 10):  # a count (report.metric_value), or a large figure
        return f"{int(value):,}"
    if 0 < abs(value) < 1e-3:  # (a speed of 1e-05 read 0.0000)
        return f"{value:.2g}"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:,.1f}"
