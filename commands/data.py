"""``kd ingest``, ``kd samples`` and ``kd classes``: getting text into the store and looking at it."""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable
from pathlib import Path

import click
from rich.cells import cell_len
from rich.table import Table
from rich.text import Text

from kdstore.errors import InterruptedAfterRecord, KdError, Terminated, make_folder, write_whole
from kdstore.ingest import (FORMATS, IngestOptions, add_records, detect_format, format_class_file, label_key, lookalike_of, parse, rare_new_classes,
                            misnumbered_classes, missing_value_classes, read_class_file)
from kdstore.names import SPLITS
from kdstore.progress import working
from kdstore.runs import SignalGuard
from kdstore.store import class_id_hint, label_id_note
from kdstore.wording import first_few

from .common import CELL_BREAKS, SHOWN_CONTROLS, SQL_INT_MAX, TABLE_ROWS, KdPath, binary_stdin, console, counted, file_note, home_path, json_option, open_store, print_json, print_json_items, print_rows, store_options


READ_BAR_FROM = 16 * 2**20  # bytes: a smaller file is parsed in a few seconds, with no bar


@click.command()
@click.argument("path", metavar="PATH|-", callback=home_path)
@click.option("--split", type=click.Choice(SPLITS), default="train", show_default=True)
@click.option("--format", "fmt", type=click.Choice(FORMATS), help="Default: from the extension (.csv; .jsonl, .ndjson or .json; else tsv); stdin: tsv. "
              "Read as tsv by default, a file whose first line is a JSON object or a CSV header is refused: say --format.")
@click.option("--text-col", help="Text column: 0-based index (headerless), name (with a header) or JSONL key (default: text).")
@click.option("--label-col", help="Label column, likewise. For --split unlabeled: the column left out (the pool keeps no label).")
@click.option("--header/--no-header", default=None, help="Whether the first row names the columns (default: detect).")
@click.option("--classes", "classes_file", type=KdPath(dir_okay=False), help="class_id.txt pinning the label set.")
@click.option("--source", help="Source name recorded on each sample (default: the file name).")
@click.option("--take-pool/--no-take-pool", is_flag=True,
              help="Labeled texts already in the unlabeled pool (an annotation round's) move into train with this file's labels, "
                   "as had the file come before the pool (without it: listed as conflicts, the pool unchanged). Train only.")
@store_options
@json_option
def ingest(path, split, fmt, text_col, label_col, header, classes_file, source, take_pool, db, as_json):
    """Load labeled or unlabeled text into the store, all or nothing.

    \b
    Example:
      kd ingest train.tsv                      # headerless label<TAB>text
      kd ingest pool.txt --split unlabeled     # one text a line
      cat more.jsonl | kd ingest - --format jsonl --split dev
      kd ingest annotated.tsv --take-pool      # labels for texts of the pool: they move into train

    Duplicates (same normalized text) are skipped and counted; the same text with another label is
    listed as a conflict. Any bad row stops the ingest with file, line and field, and nothing changes.
    """
    typed = click.get_current_context().get_parameter_source("header") == click.core.ParameterSource.COMMANDLINE
    if typed and header is not None and (fmt or ("tsv" if path == "-" else detect_format(path, None))) == "jsonl":
        # (it was ignored without a word; a config file's header, for its TSV and CSV files, is no such request)
        raise click.UsageError("--header/--no-header: for TSV and CSV files; JSON lines have no header row (--text-col and --label-col name the keys)")
    data = binary_stdin().read() if path == "-" else _read(path)
    name = "<stdin>" if path == "-" else path
    try:  # (a store made before a look-alike was refused may hold two: a file of its own labels is taken)
        peek = open_store(db)
    except KdError:  # (none yet: the file's labels alone are compared, before one is made)
        stored: tuple[str, ...] = ()
    else:
        stored = tuple(peek.class_names())
        peek.close()
    opts = IngestOptions(
        split=split,
        format=fmt,
        text_col=text_col,
        label_col=label_col,
        header=header,
        classes=read_class_file(Path(classes_file), stored) if classes_file else None,
        classes_file=classes_file,
        source=source if source is not None else ("stdin" if path == "-" else Path(path).name),
        take_pool=take_pool,
        stored=stored,
    )
    guard = SignalGuard()  # a kill (SIGTERM, SIGHUP) raises as Ctrl-C does: one line saying what was stored (it said nothing)
    try:
        # (500k pool lines: some 9 s of parsing before the hashing bar, a pool of millions minutes with nothing shown)
        with working(f"reading {name}", unit="rows", disable=len(data) < READ_BAR_FROM) as done:
            try:
                records = parse(data, name, opts)  # before the store is touched: a bad file creates nothing
            except (KeyboardInterrupt, Terminated) as exc:
                raise _stopped(exc, f"nothing of {name} was stored (it was being read); run it again") from None
            except KdError as exc:  # (its line named the data file only: a config file's format or columns, never typed, went unsaid)
                raise click.ClickException(str(exc) + _reading_options_note(str(exc))) from None
            done(len(records))
        store = open_store(db, create=True)
        before, takes = store.last_sample_id(), store.last_take_id() if take_pool else 0
        try:
            report = add_records(store, records, name, opts)
        except (KeyboardInterrupt, Terminated) as exc:  # (click said only "Aborted!": whether any of the file was stored went unsaid)
            after, took = store.last_sample_id(), store.takes_after(takes) if take_pool else 0  # (a take adds no sample id)
            raise _stopped(exc, f"nothing of {name} was stored (an ingest is one transaction); run it again"
                           if after == before and not took else f"after {name} was stored ({after - before:,} samples added"
                           + (f", {took:,} taken from the pool" if took else "") + ")") from None
    finally:
        guard.close()
    counts = store.counts()
    labeled = sum(n for per in counts.values() for c, n in per.items() if c != "(none)")
    warnings = [*rare_new_classes(name, report, store.class_names(), labeled),
                *misnumbered_classes(name, report, store.class_names()), *missing_value_classes(name, report)] if opts.classes is None else []
    for w in warnings:
        click.echo(f"warning: {w}", err=True)
    if as_json:
        print_json({**report.as_dict(), "store": counts, "warnings": warnings})
        return
    out = console()
    out.print(Text.assemble(
        f"{name}: read {report.read}, added {report.added} to ", (split, "bold"),
        f" ({report.taken} taken from the unlabeled pool)" if report.taken else "", f", skipped {counted(report.duplicates, 'duplicate')}, {counted(len(report.conflicts), 'conflict')}",
    ))
    elsewhere = {k: n for k, n in report.duplicates_in.items() if k != split}
    if elsewhere:  # e.g. test texts already in train: not added to test, so the test set is smaller
        out.print("  duplicates already in another split (kept there): "
                  + ", ".join(f"{n} in {k}" for k, n in sorted(elsewhere.items())))
    for c in report.conflicts[:20]:
        kept = "no label" if c["kept_label"] is None else repr(c["kept_label"])
        # (a JSONL text's line break split the conflict's line, its ESC of an ANSI code ran in the terminal)
        text = c["text"][:60].translate(CELL_BREAKS).translate(SHOWN_CONTROLS)
        out.print(
            f"  conflict line {c['line']}: label {c['label']!r} but {c['kept_from']} has {kept}: {text}",
            markup=False,
        )
    if len(report.conflicts) > 20:
        out.print(f"  ... {len(report.conflicts) - 20} more (use --json for all)")
    made = sum(1 for c in report.conflicts if c["kept_label"] is None and str(c["kept_from"]).startswith("augment:"))
    if made:  # (a short labeled text, 不错, is often an n-gram or masked variant that --augment stored first)
        how = (f"students distilled with --augment learned {'it' if made == 1 else 'them'} from the teacher, and {split} figures would "
               "count it: --take-pool takes such texts into train only" if split != "train" else
               "dropped ones stay" if take_pool else "--take-pool moves them into train with this file's labels")
        out.print(f"  {counted(made, 'conflict')} with {'a text' if made == 1 else 'texts'} `kd distill --augment` made, which "
                  f"{'stays' if made == 1 else 'stay'} unlabeled ({how})", markup=False)
    pool = sum(1 for c in report.conflicts if c["kept_label"] is None) - made
    gone = report.pool_dropped  # (dropped pool texts: --take-pool leaves them, "moves them" was said of them too)
    if pool:  # (labels of pool texts, from an annotation round: the user was left with "N conflicts" and no way on)
        out.print(f"  {counted(pool, 'conflict')} with {'a text' if pool == 1 else 'texts'} of the unlabeled pool, which "
                  f"{'stays' if pool == 1 else 'stay'} unlabeled"
                  + (" (--take-pool takes pool texts into train only: students distilled on the pool learned them)" if split != "train" else
                     " (dropped: `kd labels undo` the drop first)" if take_pool or gone == pool else
                     f": --take-pool moves {f'{pool - gone} of them' if gone else 'them'} into train with this file's labels"
                     + (f" ({gone} dropped: `kd labels undo` the drop first)" if gone else "")), markup=False)
    out.print(counts_table(counts, store.class_names(), out.width, dropped=store.dropped_count()))


def _stopped(exc: BaseException, said: str) -> BaseException:
    """Ctrl-C's or a kill's one line: ``"interrupted: SAID"`` or ``"terminated (SIGTERM): SAID"``."""
    return InterruptedAfterRecord(f"interrupted: {said}") if isinstance(exc, KeyboardInterrupt) else Terminated(f"{exc}: {said}")


def _reading_options_note(message: str) -> str:
    """`` (kd.toml: [ingest] format = "jsonl")``: the options a config file gave that decide how a file is
    read (its --split and --source where the error is about them), for an error of reading its rows."""
    options = ["--format", "--text-col", "--label-col", "--header"] if ": line " in message or "column" in message else []
    options += [o for o, said in (("--split", "split "), ("--source", "source name")) if said in message]
    return file_note(click.get_current_context(), " ".join(options))


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise click.ClickException(f"{path}: cannot read: {exc.strerror or exc}") from None


def counts_table(counts: dict[str, dict[str, int]], names: list[str], width: int | None = None, *, dropped: int = 0) -> Table:
    """The store's samples per split and class, the classes in id order (``names``: a class pinned by
    --classes shows before its first sample), the unlabeled ones last: a column per class, or, when
    those columns do not fit in ``width`` (40 classes on a 160-column screen showed each as "…" and
    no count at all), a row per class and a column per split. ``dropped``: the samples left out, said
    under the table (450 read, 450 duplicates, and train showed 449 with no word why)."""
    unlabeled = ["(none)"] if any("(none)" in per for per in counts.values()) else []
    labels = [*names, *unlabeled]
    rows = [[split, *[str(per.get(l, 0)) for l in labels], str(sum(per.values()))] for split, per in counts.items()]
    columns = list(zip(["split", *labels, "total"], *rows))
    if width is not None and 1 + sum(3 + max(cell_len(c) for c in col) for col in columns) > width:
        tall = Table(title="samples in the store")  # (a row per class: a few columns, however many classes)
        tall.add_column("class")
        for split in counts:
            tall.add_column(split, justify="right")
        for lab in labels:
            tall.add_row(Text(lab), *[str(per.get(lab, 0)) for per in counts.values()])
        tall.add_row("total", *[str(sum(per.values())) for per in counts.values()])
        tall.caption = _dropped_caption(dropped)
        return tall
    table = Table(title="samples in the store")
    table.add_column("split")
    for lab in labels:
        table.add_column(Text(lab), justify="right")
    table.add_column("total", justify="right")
    for row in rows:  # train, dev, test, unlabeled, then augmented (kd distill --augment's texts)
        table.add_row(*row)
    table.caption = _dropped_caption(dropped)
    return table


def _no_match(counts: dict[str, dict[str, int]], split: str | None, label: str | None, condition: str | None, *,
              left: int = 0, dropped: bool = False, matched: bool = False, tsv: bool = False) -> str | None:
    """Why ``kd samples`` lists nothing, from the store's counts (of samples not dropped; ``left``: the dropped
    samples of a split that holds no other; ``dropped``: --dropped was given; ``matched``: some of them match what
    was asked, so listing the dropped ones lists them; ``tsv``: --tsv, which takes no --dropped): the split holds no
    sample, or none of the class asked for (with what it does hold); None where a --where matched none, which needs no word."""
    if left and not dropped and matched:  # (not "add --dropped" where that lists nothing again, nor to --tsv, which refuses it)
        them = "it" if left == 1 else "them"
        how = f"`kd samples --split {split} --dropped --json` lists {them}" if tsv else f"add --dropped to list {them}"
        return f"the store's {split} samples are all dropped: {counted(left, 'sample')}, left out ({how})"
    if left and (label is None or condition is not None):
        return None
    if left:
        return f"no {split} sample is labeled {label!r} ({split} samples: {counted(left, 'dropped sample')})"
    if split is not None and split not in counts:
        if split == "augmented":
            return "the store holds no augmented texts: `kd distill --augment` makes them"
        return f"the store holds no {split} samples: `kd ingest FILE --split {split}` adds them"
    if label is None or condition is not None:
        return None  # (a --where that matches none: the empty answer is the answer)
    held: dict[str, int] = {}
    for name, per in counts.items():
        if split is None and name not in ("unlabeled", "augmented") or name == split:
            for lab, n in per.items():
                held[lab] = held.get(lab, 0) + n
    where = f"{split} samples" if split else "labeled samples"
    return (f"no {split + ' ' if split else ''}sample is labeled {label!r} ({where}: "
            + (first_few(f"{lab} {n:,}" for lab, n in held.items()) if held else "none") + ")")


def _dropped_caption(dropped: int) -> str | None:
    return (f"{counted(dropped, 'dropped sample')} left out (`kd samples --dropped --where dropped` lists {'it' if dropped == 1 else 'them'})"
            if dropped else None)


@click.command()
@click.option("--split", type=click.Choice((*SPLITS, "augmented")),
              help="Only this split's samples (augmented: only the texts kd distill --augment made, counted apart by kd ingest's table).")
@click.option("--label", help="Only samples with this (current) label.")
@click.option("--where", "condition", help="Only samples this SQL condition on samples selects, as kd teach's --where: \"source = 'shop.tsv'\".")
@click.option("--limit", type=click.IntRange(min=0), default=20, show_default=True,
              help=f"At most this many (0: all; over {TABLE_ROWS:,} are printed as tab-separated columns, not a table).")
@click.option("--dropped/--no-dropped", is_flag=True, help="Include samples dropped by `kd labels clean`.")
@click.option("--tsv/--no-tsv", "as_tsv", is_flag=True,
              help="Print label<TAB>text lines under that header (text only for unlabeled samples), the form `kd ingest` reads: "
                   "e.g. the cleaned train set for another tool. Tabs and line breaks inside a text become spaces; "
                   "the texts kd distill --augment made are left out.")
@store_options
@json_option
def samples(split, label, condition, limit, dropped, as_tsv, db, as_json):
    """Show samples from the store.

    \b
    Example:
      kd samples --split train --label neg --limit 5
      kd samples --where "source = 'shop.tsv'" --json
      kd samples --split train --limit 0 --tsv > train.cleaned.tsv   # current labels, dropped samples left out
    """
    if as_tsv and as_json:
        from click.core import ParameterSource

        source = click.get_current_context().get_parameter_source
        if source("as_json") != ParameterSource.COMMANDLINE:
            as_json = False  # a config file's json = true (for every command): a typed --tsv wins over it
        elif source("as_tsv") != ParameterSource.COMMANDLINE:
            as_tsv = False  # and a typed --json over its [samples] tsv = true
        else:
            raise click.UsageError("--tsv or --json, not both")
    if as_tsv and not split:
        raise click.UsageError("--tsv needs --split: its lines do not say which split they are from")
    if as_tsv and dropped:  # (its lines cannot say which samples were dropped: `kd ingest` took them all as kept)
        raise click.UsageError("--tsv writes samples as kd ingest reads them, with no column to say which were dropped: "
                               "leave --dropped out, or list them with --json (its 'dropped' field)")
    if as_tsv and split == "augmented":
        raise click.UsageError("--tsv leaves out the texts kd distill --augment made: `kd samples --split augmented --json` lists them")
    if label is not None and split in ("unlabeled", "augmented"):  # (it listed nothing, and said nothing)
        quoted = label.replace("'", "''")
        raise click.BadParameter(f"{split} samples have no label; an augmented text's parent label is in its meta: "
                                 f"--where \"meta->>'parent_label' = '{quoted}'\"", param_hint="--label")
    store = open_store(db)
    names = store.class_names()
    where = None
    if condition is not None:
        if not condition.strip():  # (`--where "$Q"` with Q unset: every sample, unseen)
            raise click.BadParameter("is empty: give a SQL condition on samples, e.g. \"source = 'shop.tsv'\", or leave --where out",
                                     param_hint="--where")
        store.samples(where=condition, limit=0)  # a condition that cannot run is named as typed, not as kd joined it below
        note = label_id_note(condition, names)
        if note:
            click.echo(f"warning: {note}", err=True)
        where = f"({condition}\n)"  # (the newline: a trailing -- comment cannot eat what kd adds after it)
    if label is not None:
        if not names:
            raise click.ClickException(f"no class {label!r}: the store has no classes yet: kd ingest a labeled file first")
        if label not in names:
            twins = [n for n in names if label_key(n) == label_key(label)]  # ('ｐｏｓ', typed in full width)
            raise click.ClickException(f"no class {label!r} (classes: {', '.join(names)}){class_id_hint(label, names)}"
                                       + (f"; {label!r}{lookalike_of(twins[0])}" if len(twins) == 1 else ""))
        where = f"label_id = {names.index(label)}" if where is None else f"{where} AND label_id = {names.index(label)}"
    if as_tsv:  # the texts kd distill --augment made ([UNK]-masked, cut) are no data to hand on
        where = "parent_id IS NULL" if where is None else f"{where} AND parent_id IS NULL"
    asked_split = split
    if split == "augmented":  # (they live in the unlabeled split, each with the sample it came from)
        split, where = None, "parent_id IS NOT NULL" if where is None else f"{where} AND parent_id IS NOT NULL"
    # one more than --limit: each form tells when it left samples out (a table of 20 said nothing of the rest)
    try:
        rows = store.samples(
            splits=[split] if split else None, where=where, include_dropped=dropped, limit=min(limit + 1, SQL_INT_MAX) if limit else None
        )
    except KdError as exc:  # a condition that fails on the rows it reads (a cast, a JSON path), which the check read none of
        if condition is None:
            raise
        raise KdError(str(exc).replace(f"--where {where!r}", f"--where {condition!r}", 1)) from exc
    gone = 0
    if not len(rows) and not dropped and not as_tsv and (condition is not None or label is not None or split) and store.dropped_count():
        # (`--where dropped`, or the id of a sample dropped by hand: an empty table, read as "none"; a store of no
        # dropped sample, the common case, is not read again)
        gone = len(store.samples(splits=[split] if split else None, where=where, include_dropped=True))
        if gone:
            click.echo(f"note: no sample matches but {counted(gone, 'dropped sample')}, left out "
                       f"(add --dropped to list {'it' if gone == 1 else 'them'})", err=True)
    said = bool(gone)
    if not len(rows) and not gone and condition is not None and "source" in condition.lower():
        # (a file's own "source" column or key is in meta: `--where "source = 'jd'"` listed an empty table, no word why)
        held = store.sources(splits=[split] if split else SPLITS, labeled=False)
        if held:
            said = True
            listed = first_few(f"{src!r} ({n})" for src, n in held.items())
            click.echo(f"note: no sample matches --where {condition!r}; the samples' sources are {listed} (the file each came "
                       "from, or its --source; a file's own columns are in meta: meta->>'source' reads one)", err=True)
    why = None
    if not len(rows) and not said:
        counts, left = store.counts(), 0
        if asked_split is not None and asked_split not in counts and store.dropped_count():
            left = len(store.samples(splits=[split] if split else None, include_dropped=True,
                                     where="parent_id IS NOT NULL" if asked_split == "augmented" else None))
        matched = bool(left) and bool(len(store.samples(splits=[split] if split else None, where=where, include_dropped=True, limit=1)))
        why = _no_match(counts, asked_split, label, condition, left=left, dropped=dropped, matched=matched, tsv=as_tsv)
    if why:  # (an empty table or [] said nothing: a split never ingested, a class it lacks)
        click.echo(f"note: {why}", err=True)
    more = bool(limit) and len(rows) > limit
    shown = min(len(rows), limit) if limit else len(rows)
    if as_json:  # `kd samples --split train --json > train.json` kept 20 samples without a word
        print_json_items(_sample_items(store, rows, shown, names, dropped=dropped, with_origins=True))
        if more:
            click.echo(f"warning: listed the first {counted(limit, 'sample')} only (--limit 0 for all)", err=True)
        return
    items = _sample_items(store, rows, shown, names, dropped=dropped, with_origins=False, with_parents=not as_tsv)
    if as_tsv:
        _print_tsv(items, labeled=split != "unlabeled")
        if more:  # `> train.tsv` without --limit 0 would keep 20 lines unseen
            click.echo(f"warning: wrote the first {counted(limit, 'sample')} only (--limit 0 for all)", err=True)
        return
    cells = [(str(it["id"]), it["split"] + ("" if it["parent_id"] is None else
                                           f" (augmented from {it['parent_id']}{', which is dropped' * it['parent_dropped']})"),
              (it["label"] or "") + (" (dropped)" if it["dropped"] else ""), it["text"]) for it in items]
    print_rows(["id", "split", "label", "text"], cells)
    if more:  # (on standard error: past 1,000 rows the listing is columns a script reads)
        click.echo(f"warning: listed the first {counted(limit, 'sample')} only (--limit 0 for all)", err=True)


def _sample_items(store, rows, shown: int, names: list[str], *, dropped: bool, with_origins: bool, with_parents: bool = True):
    """The first ``shown`` of ``rows`` as listing items, looked up a block at a time: which are dropped
    (with --dropped), the sample each augmented text came from, and (``with_origins``) the file, line
    and kept columns of each."""
    for start in range(0, shown, ITEM_BLOCK):
        ids = rows.ids[start:min(start + ITEM_BLOCK, shown)]
        kept = set(store.samples(ids=ids).ids.tolist()) if dropped else None  # (--dropped: say which are)
        parents = store.parents(ids) if with_parents else {}  # a text kd distill --augment made: the sample it came from
        # (whose texts kd distill leaves out once it is dropped: listed unmarked, their count was not the distill summary's)
        gone = set(parents.values()) - set(store.samples(ids=sorted(set(parents.values()))).ids.tolist()) if parents else set()
        origins = store.origins(ids) if with_origins else {}  # where each came from, and the columns ingest kept (a row's own id)
        for k, i in enumerate(ids.tolist(), start):
            y = int(rows.labels[k])
            yield {"id": i, "split": rows.splits[k], "label": names[y] if y >= 0 else None, "text": rows.texts[k],
                   "dropped": kept is not None and i not in kept, "parent_id": parents.get(i),
                   "parent_dropped": parents.get(i) in gone, **origins.get(i, {})}


ITEM_BLOCK = 10_000  # samples looked up (dropped, parent, origin) at a time


def _print_tsv(items: Iterable[dict], *, labeled: bool) -> None:
    """A ``label<TAB>text`` header and lines (``text`` alone for the unlabeled pool), in blocks. The
    header makes ``kd ingest`` read the columns by name: without it a first text or label that is a
    column word (``query``, ``text``) would be taken for a header and lost. A text that starts with a
    quote is written in quotes (``_tsv_cell``); a tab or line break as a space (with a warning), every
    other character of a text as it is: the texts ``kd ingest`` reads back are the ones stored."""
    changed, block = 0, ["label\ttext" if labeled else "text"]
    for it in items:
        text = it["text"].translate(CELL_BREAKS)
        changed += text != it["text"]
        text = _tsv_cell(text)
        block.append(text if it["label"] is None else f"{_tsv_cell(it['label'])}\t{text}")
        if len(block) >= 10_000:
            click.echo("\n".join(block), color=True)  # (color: click cut an ANSI code out of a text written to a file or pipe)
            block.clear()
    if block:
        click.echo("\n".join(block), color=True)
    if changed:
        click.echo(f"warning: {counted(changed, 'text')} had tabs or line breaks, written as spaces", err=True)


def _tsv_cell(value: str) -> str:
    """``value`` in quotes, its quotes doubled, where it starts with a quote (as a spreadsheet writes
    it): a stored text that looks like such a field (a quote, 他说, two quotes, 好, three quotes) made
    ``kd ingest`` read the whole file as a spreadsheet's, and every text in plain quotes ('"好"') came
    back without them. Any other value as it is."""
    return '"' + value.replace('"', '""') + '"' if value.startswith('"') else value


def _classes_in(path) -> tuple[str, ...] | None:
    """The classes a class file ``path`` pins (in any form ``kd ingest --classes`` reads: names alone, a BOM,
    \r\n), or None where it is no class file."""
    from kdstore.ingest import read_class_file

    try:
        return read_class_file(Path(path))
    except (KdError, OSError, UnicodeDecodeError):
        return None


@click.command()
@click.option("--export", "export_path", type=KdPath(dir_okay=False), help="Write class_id.txt here.")
@click.option("--overwrite", is_flag=True, help="Replace an --export file that holds something else (the same classes are written again without it).")
@store_options
@json_option
def classes(export_path, overwrite, db, as_json):
    """List the classes with their stable ids; export them as class_id.txt.

    \b
    Example:
      kd classes --export class_id.txt
    """
    if export_path == "":
        raise click.BadParameter("give the file to write, e.g. class_id.txt", param_hint="--export")
    if export_path == "-":  # (not a file called "-")
        raise click.UsageError("kd classes prints class_id.txt itself: `kd classes > class_id.txt`, or --export FILE")
    if export_path is not None and export_path.endswith(("/", os.sep)):  # (Path() drops the slash: "out/" wrote a file called out)
        raise click.BadParameter(f"{export_path} is a folder: give the file's name ({export_path}class_id.txt)", param_hint="--export")
    names = open_store(db).class_names()
    if export_path is not None and not names:  # (an empty file, which `kd ingest --classes` then refused)
        raise click.ClickException("the store has no classes yet: ingest labeled samples (or `kd ingest --classes FILE`) first")
    if export_path is not None and not overwrite and Path(export_path).is_file() and _classes_in(export_path) != tuple(names):
        # (`--export train.tsv`, a slip of the tab key, replaced the training data with the class list)
        raise click.ClickException(f"{export_path} exists and holds something other than these classes: --overwrite replaces it")
    if export_path is not None:
        make_folder(Path(export_path).parent, f"the class file {export_path}")
        write_whole(export_path, format_class_file(names), "the class file")
    if as_json:
        print_json([{"id": i, "name": n} for i, n in enumerate(names)])
    else:
        click.echo(format_class_file(names), nl=False)
        if not names:  # (it printed nothing, exit 0: `kd classes > class_id.txt` an empty file, no word why)
            click.echo("note: the store has no classes yet: ingest labeled samples (or `kd ingest --classes FILE`) first", err=True)
        elif export_path is not None:  # (the list alone: nothing said the file was written)
            click.echo(f"wrote {len(names)} classes to {export_path} (`kd ingest --classes {shlex.quote(export_path)}` pins them, ids and all, "
                       "in another store)", err=True)
