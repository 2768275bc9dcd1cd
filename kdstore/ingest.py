"""Loading labeled and unlabeled text (TSV, CSV, JSONL) into the store, all or nothing.

``parse`` is pure: bytes in, records out, and any problem raises ``KdError`` naming the file, the
line and the field. ``ingest`` then de-duplicates against the store and inserts everything in one
transaction, so a bad row anywhere leaves the store exactly as it was.
"""

from __future__ import annotations

import bisect
import csv
import difflib
import functools
import io
import json
import re
import shlex
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from sqlalchemy import bindparam, delete, insert, null, select, update

from .errors import KdError
from .jsonl import RepeatedKey, has_surrogate, loads_strict
from .names import SPLITS
from .schema import AugmentedText, KdClass, LabelEdit, Sample, utcnow
from .progress import progress
from .runs import current_user
from .store import CHUNK, ID_CHUNK, Store, bulk_insert, chunks, class_ids_shown, class_of_id, numbered_classes
from .textfile import HEADER_WORDS, TEXT_NAMES, _line_end, decode
from .textkey import VARIATION_SELECTORS, text_hash, unseen

FORMATS = ("tsv", "csv", "jsonl")
MAX_LABEL = 200  # classes.name holds this many characters (PostgreSQL refuses more)
MAX_SOURCE = 500  # samples.source, likewise
_EXTENSIONS = {".tsv": "tsv", ".txt": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
_SAMPLE_COLUMNS = ("text", "text_hash", "split", "label_id", "orig_label_id", "dropped", "source", "line", "meta", "parent_id")


@dataclass(frozen=True)
class IngestOptions:
    split: str = "train"
    format: str | None = None  # None: from the file extension (stdin: tsv)
    text_col: str | None = None  # a 0-based index for headerless files, a name otherwise
    label_col: str | None = None
    header: bool | None = None  # None: detect
    classes: tuple[str, ...] | None = None  # pinned class set (from class_id.txt)
    classes_file: str | None = None  # the file ``classes`` came from, named where it disagrees with the store
    source: str | None = None  # recorded on every sample; default: the file name
    take_pool: bool = False  # a labeled train row whose text is a pool text moves that sample into train (else: a conflict)
    stored: tuple[str, ...] = ()  # the store's classes, where it has some: two of them no look-alikes (an older kd's '❤', '❤️')


@dataclass(frozen=True)
class Record:
    text: str
    label: str | None
    line: int | None
    meta: dict[str, Any] | None = None
    parent_id: int | None = None  # the sample an augmented text was made from


@dataclass
class IngestReport:
    source: str
    split: str
    read: int = 0
    added: int = 0
    duplicates: int = 0
    duplicates_in: dict[str, int] = field(default_factory=dict)  # split (or "augmented") holding the kept copy
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    new_classes: list[str] = field(default_factory=list)
    added_per_class: dict[str, int] = field(default_factory=dict)
    # the first lines each class's added samples came from (not a conflict's or a duplicate's), for the rare-class warning
    added_lines: dict[str, list[int]] = field(default_factory=dict)
    taken: int = 0  # pool samples moved into train with the file's labels (--take-pool), counted in added
    pool_dropped: int = 0  # conflicts with a dropped pool text (which --take-pool leaves): the summary tells them apart

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "split": self.split,
            "read": self.read,
            "added": self.added,
            "duplicates": self.duplicates,
            "duplicates_in": self.duplicates_in,
            "conflicts": self.conflicts,
            "new_classes": self.new_classes,
            "added_per_class": self.added_per_class,
            "taken_from_pool": self.taken,
        }


RARE_NEW_CLASS = 2  # rows: a class an ingest adds with this few, beside RARE_BESIDE labeled samples or more, is likely a typo
RARE_BESIDE = 50


def rare_new_classes(name: str, report: IngestReport, classes: Sequence[str], labeled: int) -> list[str]:
    """A warning for each class the ingest added with at most ``RARE_NEW_CLASS`` samples while the store
    (``classes``, ``labeled`` samples, after it) holds ``RARE_BESIDE`` or more: '违规' on one line of an
    ad file labeled '违禁' elsewhere became a class of its own in silence, and class ids only grow."""
    out = []
    for label in report.new_classes:
        n = report.added_per_class.get(label, 0)
        if not 0 < n <= RARE_NEW_CLASS or labeled - n < RARE_BESIDE:  # (0: a class --classes pinned, chosen, not typed)
            continue
        lines = [str(line) for line in report.added_lines.get(label, [])]
        where = f"line{'s' if len(lines) > 1 else ''} {', '.join(lines)}: " if lines else ""
        close = difflib.get_close_matches(label, [c for c in classes if c != label], n=1, cutoff=0.5)
        out.append(f"{name}: {where}label {label!r} is a new class of {n} sample{'s' if n > 1 else ''} beside {labeled - n:,} labeled "
                   f"ones: a typo{f' of {close[0]!r}' if close else ''}? `kd samples --label {shlex.quote(label)}` lists "
                   f"{'them' if n > 1 else 'it'} and `kd labels set` relabels (the class stays in the store, empty); "
                   "--classes FILE refuses labels not in it")
    return out


def misnumbered_classes(name: str, report: IngestReport, classes: Sequence[str]) -> list[str]:
    """A warning where the ingest added classes named by whole numbers that could be their own ids (the
    Baidu tool's labels, 0..K-1) and one got another id, in the order first read: class '1' id 0, '0' id 1
    (``classes``: the store's names in id order, after it)."""
    numbered = numbered_classes(classes)
    if not any(n in report.new_classes for _, n in numbered) or not all(0 <= int(n) < len(classes) for _, n in numbered):
        return []  # (star ratings 1..5: no order makes them ids 0..4)
    if all(int(n) == i for i, n in numbered):
        return []
    return [f"{name}: classes named by numbers got other ids (in the order first read): {class_ids_shown(numbered)}: kd names them right, "
            "but its ids (`kd classes --export`, an export's logits) are not the numbers; to pin them, ingest into a new store "
            "with --classes FILE naming them in id order (0, 1, ... one a line)"]


# a missing value written out as text: Python's str(None), pandas' NaN and <NA>, SQL's NULL, kd's own "(none)"
MISSING_WORDS = frozenset(("none", "null", "nan", "<na>", "n/a", "nil", "undefined", "(none)"))


def missing_value_classes(name: str, report: IngestReport) -> list[str]:
    """A warning where the ingest added classes named like a missing value written as text (a DataFrame's
    empty labels saved with ``astype(str)``: 'nan'), their rows stored labeled with a class of that name."""
    missing = [c for c in report.new_classes if c.strip().lower() in MISSING_WORDS]
    if not missing:
        return []
    rows = sum(report.added_per_class.get(c, 0) for c in missing)
    return [f"{name}: {'class' if len(missing) == 1 else 'classes'} {', '.join(map(repr, missing))} "
            f"({rows:,} sample{'s' * (rows != 1)}) {'reads' if len(missing) == 1 else 'read'} like a missing label written as text "
            "(Python's None, pandas' NaN): stored as a class the models learn; if those samples have no label, `kd labels set ID=drop` "
            f"leaves each out (`kd samples --label {shlex.quote(missing[0])}` lists them): their texts are stored now, so an ingest of them "
            "with --split unlabeled skips them as duplicates (a store without them takes them so)"]


# parsing (pure) ------------------------------------------------------------------------------
def detect_format(name: str, explicit: str | None) -> str:
    if explicit:
        if explicit not in FORMATS:
            raise KdError(f"unknown format {explicit!r}: choose from {', '.join(FORMATS)}")
        return explicit
    return _EXTENSIONS.get(Path(name).suffix.lower(), "tsv")


_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")


def parse(data: bytes, name: str, opts: IngestOptions) -> list[Record]:
    if opts.split not in SPLITS:
        raise KdError(f"unknown split {opts.split!r}: choose from {', '.join(SPLITS)}")
    _source(name, opts)
    for what, spec in (("text", opts.text_col), ("label", opts.label_col)):
        if spec == "":  # (`--text-col "$COL"` with COL unset: JSONL read the default key unseen, a TSV took its first row for a header)
            raise KdError(f"{name}: --{what}-col is empty: give the column (a 0-based index or a name) or JSON key, or leave it out for the default")
    fmt = detect_format(name, opts.format)
    if fmt == "csv":
        allow_long_csv_fields()  # (decode's error names a CSV's field as the csv module reads it: a text may be long)
    content = decode(data, name, fmt)
    want_label = opts.split != "unlabeled"
    if fmt != "jsonl" and opts.format is None:  # (a .csv of JSON lines: each object's "text":... became a class)
        _refuse_json_lines(content, name, fmt)
    if fmt == "jsonl":
        records, label_name = _parse_jsonl(content, name, opts, want_label), opts.label_col or "label"
    else:
        records, label_name = _parse_delimited(content, name, fmt, opts, want_label)
    if not records:
        raise KdError(f"{name}: no rows to ingest")
    for r in records:
        if r.label is not None and len(r.label) > MAX_LABEL:
            raise KdError(f"{name}: line {r.line}: field {label_name!r}: longer than {MAX_LABEL} characters")
        if r.label is not None and _CONTROL.search(r.label):  # class_id.txt (one class a line) could not hold it
            raise KdError(f"{name}: line {r.line}: field {label_name!r}: contains a tab, line break or other control character: {r.label!r}")
        hidden = _invisible(r.label) if r.label else None
        if hidden is not None:  # 'pos\u200b' would be a class of its own that prints as 'pos'
            raise KdError(f"{name}: line {r.line}: field {label_name!r}: contains an invisible character (U+{ord(hidden):04X}): "
                          f"{r.label!r} would be a class apart from one that looks the same")
    if opts.classes is not None and want_label:
        pinned = set(opts.classes)
        for r in records:
            if r.label not in pinned:
                # labels that are the ids of an id<TAB>name class file: the file was read, the labels are no names
                as_id = int(r.label) if r.label.isascii() and r.label.isdigit() else None
                hint = (f": labels are class names, not ids ({r.label!r} is the id of {opts.classes[as_id]!r}): write the class "
                        "names into the file, or give --classes a file of the ids (0, 1, ... one a line) to make them the names"
                        if as_id is not None and as_id < len(opts.classes) else "")
                raise KdError(
                    f"{name}: line {r.line}: field {label_name!r}: unknown label {r.label!r} "
                    f"(pinned classes: {', '.join(opts.classes)}){hint}"
                )
    # look-alike labels within the file, before any store is made (add_records checks them against the
    # store's classes too, but a first ingest refused there left an empty store behind)
    first: dict[str, int | None] = {}  # each label, at its first line
    for r in records:
        if r.label is not None:
            first.setdefault(r.label, r.line)
    keys: dict[str, str] = {}
    for label, line in first.items():
        twin = keys.setdefault(label_key(label), label)
        if twin != label and not {twin, label} <= set(opts.stored):
            raise KdError(_lookalike(name, line, label_name, label, twin))
    return records


def _lookalike(name: str, line: int | None, field_name: str, label: str, twin: str) -> str:
    return f"{name}: line {line}: field {field_name!r}: label {label!r}{lookalike_of(twin)} (it would be a class apart)"


def lookalike_of(twin: str) -> str:
    """What a label that ``label_key`` makes ``twin`` differs from it by, and how to write it."""
    return (f" differs from the class {twin!r} only in character width or case, in white space, in a middle dot, in a variation "
            f"selector or in how its number is written: write it as {twin!r}")


def _refuse_json_lines(content: str, name: str, fmt: str = "tsv") -> None:
    """A file read as TSV or CSV by default (stdin, its extension) whose first line is a JSON
    object is JSON Lines: read as TSV, an unlabeled pool would keep each line's JSON as its text."""
    end, start, line = _line_end(content), 0, 1
    while start < len(content):  # the first non-blank line (not a list of every line: a pool may be 500,000)
        stop = content.find(end, start)
        raw = content[start:stop if stop >= 0 else len(content)].strip()
        if raw:
            try:
                is_object = raw.startswith("{") and isinstance(json.loads(raw), dict)
            except ValueError:
                is_object = False
            if is_object:
                raise KdError(f"{name}: line {line}: a JSON object: the file looks like JSON Lines, give --format jsonl "
                              f"(or --format {fmt} to read " + ("each line as text)" if fmt == "tsv" else "it as CSV)"))
            return
        if stop < 0:
            return
        start, line = stop + len(end), line + 1


_CSV_FIELD_LIMIT = 2**31 - 1  # the csv module's default (131,072 characters) is shorter than some texts


def allow_long_csv_fields() -> None:
    """Let the csv module read fields of any length (its limit is process-wide)."""
    if csv.field_size_limit() < _CSV_FIELD_LIMIT:
        csv.field_size_limit(_CSV_FIELD_LIMIT)


def _mac_rows_with_cell_breaks(content: str, fmt: str) -> bool:
    """Whether ``content`` is a file of bare ``\r`` row ends (Excel for Mac 2011's "CSV (Macintosh)" or "Tab
    delimited Text") whose every ``\n`` is a line break inside a quoted cell (Alt+Enter): a ``\r`` file, not a
    ``\n`` one (its rows were refused as old Mac line ends mixed with ``\n`` ones, or cut at each cell's break)."""
    if "\n" not in content or '"' not in content or not _BARE_CR.search(content):
        return False
    return "\n" not in (_CSV_QUOTED if fmt == "csv" else _TSV_QUOTED).sub("", content)


def _rows(content: str, fmt: str, name: str) -> list[tuple[int, list[str]]]:
    """(line number, fields) of every non-blank row."""
    mac = _mac_rows_with_cell_breaks(content, fmt)
    if not mac:
        _refuse_mostly_bare_cr(content, name, fmt)
    if fmt == "tsv":
        out = []
        # (split on "\n" alone, a file of old Mac line ends was one row, its lines run together into one text)
        for i, raw in enumerate(content.split("\r" if mac else _line_end(content)), start=1):
            raw = raw.rstrip("\r")
            if raw.strip():
                out.append((i, raw.split("\t")))
        # (every field of the first row in quotes: pandas' QUOTE_ALL or QUOTE_NONNUMERIC, R's write.table; read
        # line by line, the header '"text"' was a sample and each label a class in quotes)
        all_quoted = bool(out) and len(out[0][1]) >= 2 and all(len(f) >= 2 and f[0] == f[-1] == '"' for f in out[0][1])
        # (rows ended in \r\n and a line in \n alone: Excel's line break inside a cell, which a one-column sheet shows in no ragged row)
        # (``mac``: every \n is in a quoted cell of a \r file, a line break only a spreadsheet's quotes hold)
        ragged = mac or len({len(f) for _, f in out}) > 1 or ("\r\n" in content and _BARE_LF.search(content) is not None)
        quoted = _spreadsheet_tsv_rows(content, ragged=ragged, all_quoted=all_quoted, name=name, mac=mac) if '"' in content else None
        return out if quoted is None else quoted
    allow_long_csv_fields()
    content, kept = (content, False) if mac else _keep_bare_cr(content)
    reader = csv.reader(io.StringIO(content, newline=""), strict=True)  # an unclosed quote is an error, not a text that swallows the rows after it
    out, line = [], 1
    try:
        for fields in reader:
            fields = [f.replace("\0", "\r") for f in fields] if kept else fields
            if any(f.strip() for f in fields):
                out.append((line, fields))
            line = reader.line_num + 1
    except csv.Error as exc:
        raise KdError(f"{name}: line {line}: not valid CSV ({exc})") from None
    return out


# a field in quotes holding a doubled quote, as a spreadsheet writes a text with quotes in it: '"他说""好"""'
# (lines ended by \n, \r\n or a bare \r: Excel for Mac's "Tab delimited Text")
_DOUBLED_QUOTES = re.compile(r'(?:^|(?<=\r)|\t)"(?:[^"\t\r\n]|"")*""(?:[^"\t\r\n]|"")*"(?=[\t\r]|$)', re.MULTILINE)


def _keep_bare_cr(content: str) -> tuple[str, bool]:
    """``content`` for the csv module, which ends a row at a bare ``\\r`` too: in a file whose lines end
    in ``\\n``, a bare ``\\r`` inside a line (mixed line ends) stays in it, as read line by line and as kd
    predict reads it (cut there, one text became two, unseen, and the lines after it were misnumbered).
    It is held as a NUL, which no decoded file holds, and True says to give the fields theirs back."""
    if "\n" not in content or not _BARE_CR.search(content):
        return content, False
    return _BARE_CR.sub("\0", content), True


_BARE_CR = re.compile(r"\r(?!\n)")
_BARE_LF = re.compile(r"(?<!\r)\n")
_LINE_BREAK = re.compile(r"[\r\n]")
_CSV_QUOTED = re.compile(r'(?:^|(?<=[,\r\n]))"(?:[^"]|"")*"(?=[,\r\n]|$)')  # a quoted field, as the csv module reads one
_TSV_QUOTED = re.compile(r'(?:^|(?<=[\t\r\n]))"(?:[^"]|"")*"(?=[\t\r\n]|$)')  # (a spreadsheet's TSV: a tab between fields)


def _refuse_mostly_bare_cr(content: str, name: str, fmt: str) -> None:
    """Refuse a ``\\n`` file most of whose line ends are bare ``\\r`` (old Mac ones, a ``\\n`` added at the
    end or files joined): each bare ``\\r`` stays in its line, so a pool's lines ran together into one text
    unseen (a one-column file has no ragged row to tell). A few stray ones inside lines stay in their texts."""
    if "\n" not in content or not _BARE_CR.search(content):  # (a CSV's quoted cells went through a regex for nothing)
        return
    # (not a text's own: a CSV's quoted cell holds its line breaks, and in a TSV of columns a row's \r ends a
    # text beside a tab and begins one that has one: `pos<TAB>好\rneg<TAB>差`, not `pos<TAB>第一段\r第二段`)
    seen = _CSV_QUOTED.sub(lambda m: " " * len(m.group()), content) if fmt == "csv" else content
    ends = [m.start() for m in _BARE_CR.finditer(seen)]
    if fmt == "tsv" and ends and "\t" in seen:
        # each \r's line, from the line break before it to the one after (a search for them ran past every bare \r
        # of an old Mac file to its one \n: minutes for a 300k-row one)
        breaks = [m.start() for m in _LINE_BREAK.finditer(seen)]
        around = [(breaks[k - 1] + 1 if k else 0, breaks[k + 1] if k + 1 < len(breaks) else len(seen))
                  for k in map(functools.partial(bisect.bisect_left, breaks), ends)]
        ends = [i for i, (start, end) in zip(ends, around) if "\t" in seen[start:i] and "\t" in seen[i + 1:end]]
    cr, lf = len(ends), seen.count("\n")
    if cr > lf:
        line = content.count("\n", 0, ends[0]) + 1
        raise KdError(f"{name}: line {line}: {cr} bare carriage returns (\\r) against {lf} line end{'s' if lf > 1 else ''} in \\n: "
                      "old Mac line ends mixed with \\n ones (a line added, files joined)? make them all \\n (e.g. `mac2unix`)")


def _spreadsheet_tsv_rows(content: str, *, ragged: bool, all_quoted: bool = False, name: str = "",
                          mac: bool = False) -> list[tuple[int, list[str]]] | None:
    """(line number, fields) of every non-blank row of a TSV as Excel or LibreOffice save it ("Text
    (Tab delimited)"): a field holding a quote, a tab or a line break is written in quotes, its quotes
    doubled. None for any other TSV, read line by line as before: one that does not parse so, or has
    no quoted field holding a doubled quote, nor (``ragged``: read line by line, its rows differ in
    length) one holding a tab or line break, nor (``all_quoted``) one whose first row has every field in
    quotes (a text in plain quotes, '"太好了"', keeps them). Read line
    by line, the quotes stayed in the text (each doubled) and a field's line break cut its row in two
    (a "ragged row" error). A file whose first row has every field in quotes but that does not parse
    so is refused (``name``: the file's, as the error names it): read line by line, its header was a
    sample and each text in quotes a class (R's write.table writes a text's quote as \\" by default)."""
    allow_long_csv_fields()
    quoted = all_quoted or _DOUBLED_QUOTES.search(content) is not None
    content, kept = (content, False) if mac else _keep_bare_cr(content)  # (``mac``: its bare \r end its rows)
    reader = csv.reader(io.StringIO(content, newline=""), dialect="excel-tab", strict=True)
    out, line = [], 1
    try:
        for fields in reader:
            fields = [f.replace("\0", "\r") for f in fields] if kept else fields
            quoted = quoted or (ragged and any(c in f for f in fields for c in "\t\r\n"))
            if any(f.strip() for f in fields):
                out.append((line, fields))
            line = reader.line_num + 1
    except csv.Error as exc:
        if all_quoted:
            escaped = ' (a quote escaped as \\", as R\'s write.table writes it by default? write.table(..., qmethod = "double") ' \
                      'doubles it)' if '\\"' in content else ""
            why = str(exc).replace("\t", "\\t")  # (the csv module's "'\t' expected after '\"'" holds a tab)
            raise KdError(f"{name}: line {line}: every field of the first row is in quotes, but this row does not parse so "
                          f"({why}){escaped}") from None
        return None
    return out if quoted else None


def _column(spec: str | None, header: list[str] | None, what: str, name: str, line: int = 1) -> int | None:
    if spec is None:
        return None
    if header is None:
        if not (spec.isascii() and spec.isdigit()):
            raise KdError(f"{name}: line {line}: field {spec!r}: the file has no header, give --{what}-col as a 0-based index")
        return int(spec)
    if spec in header:
        return header.index(spec)
    folded = [i for i, c in enumerate(header) if c.casefold() == spec.casefold()]
    if len(folded) == 1:  # `--text-col Review` for a header's `review` (the header words match in any case too)
        return folded[0]
    if spec.isascii() and spec.isdigit() and int(spec) < len(header):
        return int(spec)
    # a header kd does not know (`文本,标签`) read in another format: one column, the one named inside it
    hint = next((how for sep, how in ((",", "the file looks like CSV, give --format csv"),
                                      ("\t", "the file looks like TSV, give --format tsv"),
                                      (";", "the header of semicolon-separated columns (as Excel saves CSV where a comma is the "
                                            "decimal mark): kd reads tab- or comma-separated ones, save it so"))
                 if len(header) == 1 and spec in (c.strip().strip('"').strip() for c in header[0].split(sep))), "")
    raise KdError(f"{name}: line {line}: field {spec!r}: no such column (columns: {', '.join(header)})" + (f": {hint}" if hint else ""))


def _parse_delimited(
    content: str, name: str, fmt: str, opts: IngestOptions, want_label: bool
) -> tuple[list[Record], str]:
    """The records, and what errors call the label column (its name in the header)."""
    rows = _rows(content, fmt, name)
    if not rows:
        raise KdError(f"{name}: no rows to ingest")
    excel_sep = ("," if fmt == "csv" else "\t").join(rows[0][1])
    if re.fullmatch(r"sep=.", excel_sep, re.DOTALL):  # (its header was then read as a sample; the hints named 'sep=' a column)
        raise KdError(f"{name}: line {rows[0][0]}: field 0: {excel_sep!r} is the separator line Excel reads, no header or sample: "
                      f"remove it (`tail -n +2`)")
    first = [c.strip() for c in rows[0][1]]
    if fmt == "tsv" and opts.format is None and len(first) == 1 and "," in first[0] and any(
        c.strip().strip('"').strip().lower() in HEADER_WORDS for c in first[0].split(",")
    ):
        # a CSV read as TSV by default (stdin, .txt): its header `text,label` became a pool text, each row one
        raise KdError(f"{name}: line {rows[0][0]}: field 0: {first[0][:60]!r} looks like a CSV header: the file looks like CSV, "
                      f"give --format csv" + ("" if want_label else " (or --format tsv to read each line as text)"))
    for sep, looks in ((";", "semicolon-separated columns (as Excel saves CSV where a comma is the decimal mark): kd reads "
                             "tab- or comma-separated ones, save it so"),
                       ("\t", "tab-separated columns: give --format tsv")):
        if opts.format is None and len(first) == 1 and sep in first[0] and any(
            c.strip().strip('"').strip().lower() in HEADER_WORDS for c in first[0].split(sep)
        ):
            # its header `text;label` was a pool text, each row's label glued to its text (a labeled
            # split: "no label column"); a .csv of tab-separated columns, likewise
            # (reading each line as one text is a pool's way: a labeled split's lines have no label then)
            raise KdError(f"{name}: line {rows[0][0]}: field 0: {first[0][:60]!r} looks like the header of {looks}"
                          + ("" if want_label else f" (or --format {fmt} to read each line as text)"))
    has_header, guessed = opts.header, ""
    if has_header is None:
        named = [s for s in (opts.text_col, opts.label_col) if s is not None]
        # a column named by a word needs a header; columns given by index say nothing either way
        has_header = any(not (s.isascii() and s.isdigit()) for s in named)
        if not has_header and any(c.lower() in HEADER_WORDS for c in first):
            has_header = True  # (a headerless file's first label may be such a word: an intent 'query')
            guessed = f" (or --no-header if line {rows[0][0]} is a sample, not a header)"
    header = first if has_header else None
    if header is not None:
        twice = sorted({c for c in header if header.count(c) > 1})
        if "" in twice and not any(  # unnamed columns left blank (Excel's trailing ",,"): nothing to lose
            fields[i].strip() for _, fields in rows[1:] for i, c in enumerate(header) if c == "" and i < len(fields)
        ):
            twice.remove("")
        if twice:  # the metadata would keep one of them unseen
            raise KdError(f"{name}: line {rows[0][0]}: field {twice[0]!r}: the header names this column twice")
    body = rows[1:] if has_header else rows
    width = len(rows[0][1])
    rest = {len(f) for _, f in rows[1:]}
    if header is None and len(rows) > 2 and len(rest) == 1 and width not in rest:
        # (line 1's text holding a tab: "3 columns and no header kd knows", then, those named, line 2 "ragged")
        why = f": {'a tab' if fmt == 'tsv' else 'a comma outside quotes'} in its text?" if width > min(rest) else ""
        raise KdError(f"{name}: line {rows[0][0]}: {_fields(width)}, where every row after it has {min(rest)} (ragged row{why})"
                      f"{_bare_cr(rows)}")

    text_i = _column(opts.text_col, header, "text", name, rows[0][0])  # (the first row: blank lines may come before it)
    label_i = _column(opts.label_col, header, "label", name, rows[0][0])
    # (columns past the second blank in every row, Excel's trailing "," or tab, are no third column)
    wide = width > 2 and any(f.strip() for _, fields in rows for f in fields[2:])
    # (one column and blank ones, a one-column sheet's trailing ",,": one column, texts only)
    used = 1 if width > 1 and not any(f.strip() for _, fields in rows for f in fields[1:]) else width
    if header is None and wide and (text_i is None or (label_i is None and want_label)):
        # only one or two columns have a default: with more, a header kd does not know (id,body,category)
        # would be read as a sample, and the id column as the labels
        which = ("the label column with --label-col" if text_i is not None else
                 "the text and label columns with --text-col and --label-col" if want_label else "the text column with --text-col")
        field_name = "label" if text_i is not None else "text"
        raise KdError(f"{name}: line {rows[0][0]}: field {field_name!r}: {width} columns and no header kd knows ({', '.join(sorted(HEADER_WORDS))}): "
                      f"name {which} " + ("(0-based indexes)" if opts.header is False else
                                          f"(header names if line {rows[0][0]} names the columns: 0-based indexes read it as a sample)")
                      + _bare_cr(rows))
    lowered = [c.lower() for c in header] if header is not None else []
    if text_i is None:  # (not the column --label-col names: `--label-col 1` reads text<TAB>label)
        if header is not None:
            found = [lowered.index(n) for n in TEXT_NAMES if n in lowered and lowered.index(n) != label_i]
            if not found:
                raise KdError(f"{name}: line {rows[0][0]}: field 'text': no text column (columns: {', '.join(header)}); name it with --text-col{guessed}")
            text_i = found[0]
        else:
            text_i = 1 if used >= 2 and label_i != 1 else 0
    if label_i is None:  # (for --split unlabeled: the column to leave out, found as for a labeled split)
        if header is not None:
            if "label" in lowered:
                label_i = lowered.index("label")
            elif want_label:
                raise KdError(f"{name}: line {rows[0][0]}: field 'label': no label column for split '{opts.split}' (columns: {', '.join(header)}); "
                              f"name it with --label-col{guessed}" + _POOL_HINT)
        elif used >= 2 and (want_label or not wide):  # (more columns: no default says which is a label)
            label_i = 0 if text_i != 0 else 1
        elif want_label:
            raise KdError(f"{name}: line {rows[0][0]}: field 'label': missing: split '{opts.split}' needs a label column" + _POOL_HINT)
    same = label_i is not None and label_i == text_i
    if header is None and label_i is not None and not same:
        if opts.text_col is None and opts.label_col is None:
            _refuse_swapped_columns(body, text_i, label_i, width, name, rows[0][0])
        if opts.header is None:  # (columns given by index too: `id,body,sentiment` read by --text-col 1 --label-col 2)
            _refuse_unknown_header(body, text_i, label_i, width, name, rows[0][0])
    # the unlabeled pool carries no label, not even in the metadata
    extra = [i for i in range(width) if i not in (text_i, label_i)]
    # (not an unnamed column blank in every row, Excel's trailing ",,": each sample's metadata was {"": ""} or {"2": ""})
    extra = [i for i in extra if (header is not None and header[i]) or any(i < len(f) and f[i].strip() for _, f in body)]
    if header is not None and 0 in extra and not header[0].strip() and [f[0].strip() if f else "" for _, f in body] == [str(k) for k in range(len(body))]:
        extra.remove(0)  # pandas' row numbers (df.to_csv), under an empty header: each sample's metadata was {"": "0"}
    if not want_label:
        label_i = None
    for i, what in ((text_i, "text"), (label_i, "label")):
        if i is not None and i >= width:
            raise KdError(f"{name}: line {rows[0][0]}: field {i}: missing {what} column (rows have {_fields(width)})")

    names = header or [str(i) for i in range(width)]
    if same:
        raise KdError(f"{name}: line {rows[0][0]}: field {names[text_i]!r}: the text column is also the label column")
    text_name = names[text_i]
    label_name = names[label_i] if label_i is not None else "label"
    records = []
    for line, fields in body:
        if len(fields) != width:
            names_hint = _row_names(body, width) if header is not None else ""
            # (a hand-made label,text CSV whose text holds a comma: the row "ragged" with no word of why)
            why = f": {'a tab' if fmt == 'tsv' else 'a comma outside quotes'} in its text?" if len(fields) > width and not names_hint else ""
            raise KdError(f"{name}: line {line}: expected {_fields(width)}, found {len(fields)} (ragged row{why}){_bare_cr(rows)}{names_hint}")
        if header is not None and width > 1 and [f.strip() for f in fields] == header:
            # (files joined with `cat`, each with its header): it was a sample, its label a class 'label'.
            # One column equal to its header is a text (a pool's "text", which `kd samples --tsv` writes under it)
            raise KdError(f"{name}: line {line}: field {text_name!r}: the header row again (files joined with `cat`?): "
                          f"remove it (`tail -n +2` drops a file's header)")
        text = fields[text_i].strip()
        if not text:
            raise KdError(f"{name}: line {line}: field '{text_name}': empty text")
        if unseen(text):
            raise KdError(f"{name}: line {line}: field '{text_name}': {_UNSEEN}")
        label = None
        if label_i is not None:
            label = fields[label_i].strip()
            if not label:
                raise KdError(f"{name}: line {line}: field '{label_name}': empty label")
        meta = {names[i]: fields[i] for i in extra} or None
        records.append(Record(text=text, label=label, line=line, meta=meta))
    return records, label_name if header is not None else "label"


MIN_SWAPPED_LABELS = 10  # fewer distinct labels than this never look like texts


def _refuse_swapped_columns(body, text_i: int, label_i: int, width: int, name: str, first_line: int) -> None:
    """Refuse a headerless two-column file read by the default columns (label, then text) whose
    "labels" look like texts: more than twice as many different labels as different texts (a
    text,label CSV: every text became a class, each class name a text and most rows conflicts)."""
    rows = [fields for _, fields in body if len(fields) == width]
    labels = {fields[label_i].strip() for fields in rows}
    texts = {fields[text_i].strip() for fields in rows}
    # (or "texts" that are all whole numbers, but for a header's, under many different "labels": a text<TAB>id
    # pool, whose reviews --split unlabeled dropped as the labels, the pool left holding the ids)
    number = re.compile(r"[0-9]+").fullmatch
    ids = len(rows) > 1 and all(number(fields[text_i].strip()) for fields in rows[1:]) and not all(number(label) for label in labels)
    if len(labels) >= MIN_SWAPPED_LABELS and (len(labels) > 2 * len(texts) or ids):
        first = [f.strip() for f in body[0][1]] if body and len(body[0][1]) == width else []
        if first and first[label_i] != first[text_i] and sum(fields[text_i].strip() == first[text_i] for fields in rows) == 1 \
                and not number(first[text_i]):
            # its "class" on line 1 is on no other line: a header kd does not know (内容,类别), which the
            # indexes would ingest as a sample of a class of its own; the names read it as the header
            fix = f"give --text-col {shlex.quote(first[label_i])} --label-col {shlex.quote(first[text_i])} (line {first_line} " \
                  f"looks like a header naming the columns; --text-col {label_i} --label-col {text_i} would read it as a sample)"
            # (counted without it: "60 different values" of a header and 59 rows)
            labels = {fields[label_i].strip() for fields in rows[1:]}
            texts = {fields[text_i].strip() for fields in rows[1:]}
        else:
            fix = f"give --text-col {label_i} --label-col {text_i} (or, if line {first_line} names the columns, their names)"
        raise KdError(
            f"{name}: line {first_line}: field 'label': column {label_i} read as the labels holds {len(labels)} different values "
            f"for {len(texts)} different texts in column {text_i}{', whole numbers (ids?)' if ids else ''}: the columns look swapped (two columns are read as "
            f"label, then text); {fix}"
        )


MIN_HEADER_ROWS = 10  # rows under a first line whose label is on no other line, before it is taken for a header


def _refuse_unknown_header(body, text_i: int, label_i: int, width: int, name: str, first_line: int) -> None:
    """Refuse a headerless file read by the default columns whose first line's label is on no other
    line while every other label is on several: a header kd does not know, label column first
    (类别,内容 or category,body), which would be ingested as a sample of a class of its own (id 0, for good)."""
    rows = [[f.strip() for f in fields] for _, fields in body if len(fields) == width]
    if len(rows) <= MIN_HEADER_ROWS or len(body[0][1]) != width:
        return
    first, times = rows[0], {}
    for fields in rows:
        times[fields[label_i]] = times.get(fields[label_i], 0) + 1
    if times[first[label_i]] == 1 and min(n for label, n in times.items() if label != first[label_i]) > 1 and \
            sum(fields[text_i] == first[text_i] for fields in rows) == 1:
        raise KdError(
            f"{name}: line {first_line}: field 'label': {first[label_i]!r} is a label on this line only, every other label is on "
            f"several lines: line {first_line} looks like a header naming the columns; give --text-col {shlex.quote(first[text_i])} "
            f"--label-col {shlex.quote(first[label_i])} to read it as one (or --no-header if it is a sample)"
        )


def _fields(n: int) -> str:
    return f"{n} field{'s' * (n != 1)}"


def _row_names(body, width: int) -> str:
    """A hint for a header one field short of every row: the rows start with row names, as R's
    ``write.table`` writes them by default (the header names the columns after them)."""
    if body and all(len(fields) == width + 1 for _, fields in body[:100]):
        return ("; every row has one field more than the header: row names, as R's write.table writes them? "
                "(write.table(..., row.names = FALSE) leaves them out)")
    return ""


def _bare_cr(rows) -> str:
    """A hint for a column count gone wrong in a file whose lines end in ``\n`` but one holds a bare
    ``\r`` (line ends mixed by an old editor): it stays in its line, joining two rows into one."""
    line = next((n for n, fields in rows if any(_BARE_CR.search(f) for f in fields)), None)  # (not a quoted cell's \r\n)
    return "" if line is None else (f"; line {line} holds a bare carriage return (\\r) that joins two rows: "
                                    "mixed line ends? make them all \\n (e.g. `mac2unix`)")


# (a labeled split's file with no label at all: an unlabeled pool ingested without --split unlabeled)
_POOL_HINT = "; or --split unlabeled for texts without labels"
# (a JSONL line with no label after labeled ones: an export of labeled and unlabeled rows together)
_MIXED_HINT = (" (the lines before it have one: a file of labeled and unlabeled rows? "
               "ingest its unlabeled rows apart, with --split unlabeled)")


def _key_hint(obj: dict, key: str, named: str | None, option: str) -> str:
    """Where a line lacks a default key kd was not told: the keys it has and the option that names
    another (a bare "missing" left a pool of {"body": ...} lines with no way forward)."""
    if key in obj:
        return ""
    keys = ", ".join(repr(k) for k in list(obj)[:10]) + (", ..." if len(obj) > 10 else "")
    if named is not None:  # (a path into a nested object, --text-col data.text: "missing" alone did not say why)
        head = key.split(".")[0]
        if "." in key and isinstance(obj.get(head), dict):
            return (f" (keys: {keys}): kd reads top-level keys only, not a path into the object {head!r} (flatten the lines "
                    f"first, e.g. with jq)")
        return f" (keys: {keys})" if obj else ""  # (a mistyped --label-col lable: the keys to pick from, as a CSV's columns)
    return f" (keys: {keys}); name it with {option}" if obj else f"; name it with {option}"


def _parse_jsonl(content: str, name: str, opts: IngestOptions, want_label: bool) -> list[Record]:
    text_key = opts.text_col or "text"
    label_key = opts.label_col or "label"
    if text_key == label_key:  # (for the pool too, as a TSV's: the line's "label" went into its metadata)
        raise KdError(f"{name}: field {text_key!r}: the text key is also the label key")
    records = []
    first, held = None, False  # (the first object and whether any line holds the label key: a pool's mistyped --label-col)
    lines = content.split(_line_end(content))
    for line, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            obj = loads_strict(raw)
        except json.JSONDecodeError as exc:
            hint = " (kd reads JSON Lines: one object a line, not a JSON array)" if raw.lstrip().startswith("[") else ""
            if not hint and raw.lstrip().startswith("{") and exc.pos >= len(raw.rstrip()):
                # (pretty-printed objects, as jq prints them without -c: "Expecting property name ..." for a lone "{";
                # on the last line, no object goes on: a file cut short, as an export that stopped writes it)
                hint = (" (the object goes on past its line: kd reads JSON Lines, one object a line, as `jq -c` writes them)"
                        if any(rest.strip() for rest in lines[line:]) else " (the file ends inside this object: cut short?)")
            if not hint and exc.msg == "Extra data" and "\r" in raw[:exc.pos]:  # (no string holds a bare \r: it is between them)
                hint = "; a bare carriage return (\\r) joins two lines: mixed line ends? make them all \\n (e.g. `mac2unix`)"
            msg = exc.msg.removesuffix(" at")  # ("Unterminated string starting at" at column 15)
            raise KdError(f"{name}: line {line}: not valid JSON ({msg} at column {exc.colno}){hint}") from None
        except RepeatedKey as exc:  # json.loads keeps the last value: the first would be lost unseen
            raise KdError(f"{name}: line {line}: field {exc.key!r}: the object names this key twice") from None
        except ValueError as exc:  # NaN, Infinity, 1e400: no JSON column of a database stores them
            raise KdError(f"{name}: line {line}: {exc}") from None
        if not isinstance(obj, dict):
            hint = " (kd reads JSON Lines: one object a line, not a JSON array)" if isinstance(obj, list) else ""
            raise KdError(f"{name}: line {line}: expected a JSON object, found {type(obj).__name__}{hint}")
        value = obj.get(text_key)
        if value is None and text_key in obj:  # (pandas writes an empty text as null: the key is there)
            raise KdError(f"{name}: line {line}: field '{text_key}': null, not text")
        if value is None:
            raise KdError(f"{name}: line {line}: field '{text_key}': missing{_key_hint(obj, text_key, opts.text_col, '--text-col')}")
        if not isinstance(value, str):
            raise KdError(f"{name}: line {line}: field '{text_key}': expected a string")
        text = value.strip()
        if not text:
            raise KdError(f"{name}: line {line}: field '{text_key}': empty text")
        if unseen(text):
            raise KdError(f"{name}: line {line}: field '{text_key}': {_UNSEEN}")
        label = None
        if want_label:
            raw_label = obj.get(label_key)
            if raw_label is None or (isinstance(raw_label, str) and not raw_label.strip()):
                pool = _POOL_HINT if not records and label_key not in obj else ""  # (the first line: a file of texts, no labels)
                # (lines before it held the key: naming it with --label-col was no way forward for a mixed export)
                hint = _MIXED_HINT if records else _key_hint(obj, label_key, opts.label_col, '--label-col')
                raise KdError(f"{name}: line {line}: field '{label_key}': missing label{hint}{pool}")
            if isinstance(raw_label, bool) or not isinstance(raw_label, (str, int)):
                raise KdError(
                    f"{name}: line {line}: field '{label_key}': expected a string or an integer, "
                    f"found {json.dumps(raw_label)[:40]}"
                )
            label = str(raw_label).strip()
        meta = {k: v for k, v in obj.items() if k not in (text_key, label_key)} or None
        for key, value in ((text_key, text), (label_key, label), *(meta or {}).items()):
            if _has_nul(key) or _has_nul(value):  # no NUL anywhere: PostgreSQL's text columns refuse it
                raise KdError(f"{name}: line {line}: field {key!r}: contains a NUL character (\\u0000)")
            if has_surrogate(key) or has_surrogate(value):  # "\\ud83d" alone: no UTF-8 for it
                raise KdError(
                    f"{name}: line {line}: field {key!r}: contains a lone surrogate escape "
                    f"(\\ud800-\\udfff without its pair, e.g. an emoji cut in half): not valid Unicode"
                )
        records.append(Record(text=text, label=label, line=line, meta=meta))
        first, held = first or (line, obj), held or label_key in obj
    if not want_label and opts.label_col is not None and first and not held:  # (its key was kept in every line's metadata)
        raise KdError(f"{name}: line {first[0]}: field {label_key!r}: no line holds this key{_key_hint(first[1], label_key, opts.label_col, '--label-col')}")
    return records


def label_key(label: str) -> str:
    """What two labels that a reader would take for one class share: Unicode compatibility forms
    (full-width letters and digits) folded, case ignored, white space left out ('体育  新闻' beside
    '体育 新闻', and '夸大 宣传' beside '夸大宣传': Chinese words have no space between them), and a whole
    number in any of its spellings as one ('1.0', as pandas writes an integer column holding a NaN, or
    '01', as a spreadsheet keeps it, beside '1'), and the middle dots input methods type between the parts of
    a name as one ('文化·艺术' beside '文化・艺术': U+00B7 and U+30FB look the same), and variation selectors
    left out ('❤️' beside '❤', as a text's key takes them: a phone's keyboard types U+FE0F after an emoji)."""
    key = "".join(unicodedata.normalize("NFKC", VARIATION_SELECTORS.sub("", label)).casefold().translate(_MIDDLE_DOTS).split())
    number = _WHOLE_NUMBER.fullmatch(key)
    return str(int(number.group(1))) if number else key


_MIDDLE_DOTS = str.maketrans(dict.fromkeys("\u30fb\u2027\u2022\u2219\u22c5", "\u00b7"))  # (NFKC made U+FF65 U+30FB, U+0387 U+00B7)
_WHOLE_NUMBER = re.compile(r"([+-]?[0-9]+)(?:\.0*)?")  # ASCII digits (NFKC made full-width ones so); not other scripts'


_UNSEEN = ("no visible character, only zero-width, format, control or private-use characters or U+FFFD, the mark of a character an "
           "earlier conversion could not decode (a tokenizer reads it as an empty text)")




@functools.lru_cache(maxsize=4096)
def _invisible(label: str) -> str | None:
    """The first format character (zero-width space, joiner, BOM...) of a label, if any (once a label)."""
    return next((c for c in label if unicodedata.category(c) == "Cf"), None)


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


_CLASS_HEADERS = frozenset({"label", "labels", "class", "classes", "class_name", "name", "category", "标签", "类别", "类名", "分类"})


def read_class_file(path: Path, stored: Sequence[str] = ()) -> tuple[str, ...]:
    """Class names in id order from ``class_id.txt``: ``id<TAB>name`` lines, or one name a line."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KdError(f"{path}: cannot read class file: {exc.strerror or exc}") from None
    # (a GBK or UTF-16 class file, as Notepad saves it: the line and how to convert it, as for a data file)
    raw = decode(data, str(path), "classes").splitlines()
    lines = [l.strip() for l in raw]
    for number, (line, whole) in enumerate(zip(lines, raw), start=1):
        if _CONTROL.search(line.replace("\t", " ")):  # a binary file, or names no label can have
            raise KdError(f"{path}: line {number}: a control character (binary data?): not a class file")
        if line and "\t" in whole.strip(" \r\n") and "\t" not in line:  # ('0<TAB>' was pinned as a class named '0')
            raise KdError(f"{path}: line {number}: an empty field beside a tab: expected id<TAB>name (or one name a line)")
    given = [(number, line) for number, line in enumerate(lines, start=1) if line]
    spaced = [_SPACED_ID.fullmatch(line) for _, line in given]
    named_first = [_SPACED_NAME.fullmatch(line) for _, line in given]  # ('neg,0': pinned as a class named so)
    if len(given) > 1 and "\t" not in "".join(lines) and (all(m and m.group(1) == str(n) for n, m in enumerate(spaced))
                                                          or all(m and m.group(2) == str(n) for n, m in enumerate(named_first))):
        # (`kd classes` copied from a terminal, its tabs now spaces: each class was pinned, for good, as '0 neg')
        raise KdError(f"{path}: line {given[0][0]}: {given[0][1]!r} looks like an id and a name with no tab between them: "
                      f"write id<TAB>name lines (or one name a line)")
    if (len(given) > 1 and "\t" not in "".join(lines) and given[0][1].casefold() in _CLASS_HEADERS
            and given[0][1] not in stored):  # ('label' over one name a line: a class 'label' of id 0, every id one off)
        raise KdError(f"{path}: line {given[0][0]}: {given[0][1]!r} looks like a header: a class file holds one class name a line "
                      "(or id<TAB>name lines), no header: leave it out")
    names: dict[int, str] = {}
    keys: dict[str, str] = {}  # label_key -> the name that has it
    line_of: dict[int, int] = {}  # id -> the line that gives it
    for n, (number, line) in enumerate(((i, l) for i, l in enumerate(lines, start=1) if l), start=0):
        parts = line.split("\t")
        if len(parts) == 2 and parts[0].strip().isascii() and parts[0].strip().isdigit():
            i, name = int(parts[0]), parts[1].strip()
        elif len(parts) == 2 and parts[1].strip().isascii() and parts[1].strip().isdigit():
            i, name = int(parts[1]), parts[0].strip()
        elif len(parts) == 2:  # ('id<TAB>name' over the lines: "found 2 tab-separated fields" said what it expects)
            raise KdError(f"{path}: line {number}: expected id<TAB>name (or one name a line), found {line!r}, "
                          f"neither field a class id (a header? leave it out)")
        elif "\t" in line:  # ('0\tpos\tx' was pinned as a class named with tabs: no label matches it, its export is no class file)
            raise KdError(f"{path}: line {number}: expected id<TAB>name (or one name a line), found {len(parts)} tab-separated fields")
        else:
            i, name = n, line
        if len(name) > MAX_LABEL:  # (PostgreSQL refused it as "value too long" after the file was read; SQLite stored it)
            raise KdError(f"{path}: line {number}: class name longer than {MAX_LABEL} characters")
        if i in names:  # a second line for an id would drop the first line's class unseen
            raise KdError(f"{path}: line {number}: class id {i} is given twice ({names[i]!r} and {name!r})")
        hidden = _invisible(name)
        if hidden is not None:  # (as a label: refused) 'pos\u200b' would be a class apart from 'pos' that prints alike
            raise KdError(f"{path}: line {number}: class {name!r} contains an invisible character (U+{ord(hidden):04X})")
        twin = keys.setdefault(label_key(name), name)
        if twin == name and name in names.values():  # ("class ids must be 0..K-1 with distinct names" named no line)
            first = line_of[next(k for k, v in names.items() if v == name)]
            raise KdError(f"{path}: line {number}: class {name!r} is given twice (first on line {first}): class names must be distinct")
        # ('pos' and 'POS' pinned side by side: two classes ingest refuses to make from labels; not two the store holds,
        # made before such a pair was refused, ❤ and ❤️, whose own `kd classes --export` file this is)
        if twin != name and not {twin, name} <= set(stored):
            raise KdError(f"{path}: line {number}: class {name!r} differs from the class {twin!r} only in character width or case, "
                          f"in white space, in a middle dot, in a variation selector or in how its number is written: one class, give it once")
        names[i] = name
        line_of[i] = number
    if not names:  # (every label was then refused as not among the "pinned classes: " none)
        raise KdError(f"{path}: no class names: give id<TAB>name lines, or one name a line")
    if sorted(names) != list(range(len(names))):  # (the line of the first id past K-1, and an id none has)
        k = len(names)
        number, i = min((line_of[i], i) for i in names if i >= k)
        missing = min(set(range(k)) - set(names))
        raise KdError(f"{path}: line {number}: class id {i}, where class ids must be 0..K-1 (0..{k - 1} for {k} classes): "
                      f"no class has id {missing}")
    return tuple(names[i] for i in range(len(names)))


_SPACED_ID = re.compile(r"([0-9]+)(?: +|\s*[,;:=]\s*)\S.*")  # '0 neg', '0,neg', '0: neg'
_SPACED_NAME = re.compile(r"(\S.*?)\s*[,;:=]\s*([0-9]+)")  # 'neg,0', 'neg: 0' (not 'level 0', a name)


def format_class_file(names: Sequence[str]) -> str:
    return "".join(f"{i}\t{n}\n" for i, n in enumerate(names))


# writing to the store ------------------------------------------------------------------------
def ingest(store: Store, data: bytes, name: str, opts: IngestOptions) -> IngestReport:
    """Parse ``data`` and add its new samples to the store in one transaction."""
    return add_records(store, parse(data, name, opts), name, opts)


def _source(name: str, opts: IngestOptions) -> str:
    """The source recorded on each sample, checked (by ``parse`` too: a bad one creates no store)."""
    source = name if opts.source is None else opts.source
    if not source.strip():  # (`--source "$SHOP"` with SHOP unset recorded the file name, unseen: no --where found the shop)
        raise KdError(f"{name}: the source name is empty: give --source NAME, or leave it out for the file name")
    if len(source) > MAX_SOURCE:
        raise KdError(f"{name}: the source name is longer than {MAX_SOURCE} characters: give a shorter --source")
    if "\x00" in source:  # (only a config file's "\u0000" can say it) PostgreSQL cannot store it, SQLite would
        raise KdError(f"{name}: the source name contains a NUL character: give another --source")
    if _CONTROL.search(source):  # (a line break split the conflicts' lines; no --where "source = '...'" typed it)
        raise KdError(f"{name}: the source name {source!r} contains a tab, line break or other control character: give another --source")
    if has_surrogate(source):  # bytes of another encoding (a GBK file name) in a name: no store takes them
        raise KdError(f"{name}: the source name is not valid UTF-8 (a file name in another encoding, such as GBK): "
                      "give a --source in UTF-8")
    return source


def add_records(store: Store, records: list[Record], name: str, opts: IngestOptions) -> IngestReport:
    """Add parsed records to the store in one transaction: duplicates skipped, conflicts listed."""
    with progress(disable=len(records) < BAR_FROM) as bar:  # (200k lines: some 10 s, a big pool minutes)
        return _add_records(store, records, name, opts, bar)


BAR_FROM = 50_000  # records: fewer are added in a few seconds, with no bar


def _counted(items, bar, description: str, total: int):
    """``items``, advancing a task of ``bar`` by each ``CHUNK`` of them."""
    task = bar.add_task(description, total=total, unit="rows")
    n = 0
    for n, item in enumerate(items, 1):
        yield item
        if n % CHUNK == 0:
            bar.advance(task, CHUNK)
    bar.update(task, completed=n)


def _add_records(store: Store, records: list[Record], name: str, opts: IngestOptions, bar) -> IngestReport:
    source = _source(name, opts)
    if opts.take_pool and opts.split == "unlabeled":
        raise KdError("--take-pool moves pool texts into train only (--split unlabeled: a pool text stays one; "
                      "the annotated file of pool texts is ingested with --split train --take-pool)")
    if opts.take_pool and opts.split != "train":  # (a student distilled on the pool learned the text: its dev or test figures would count it)
        raise KdError(f"--take-pool moves pool texts into train only (--split {opts.split}: students distilled on the pool learned "
                      f"those texts from the teacher, and {opts.split} figures would count them)")
    report = IngestReport(source=source, split=opts.split, read=len(records))
    # (before the writer lock: seconds for a big pool)
    hashes = [text_hash(r.text) for r in _counted(records, bar, "hashing texts", len(records))]
    with store.write_transaction("classes", "samples", *(("label_edits", "augmented_texts") if opts.take_pool else ())) as conn:
        classes = dict(conn.execute(select(KdClass.name, KdClass.id)).all())
        if opts.classes is not None:  # the class file's classes the store did not have are new too
            report.new_classes.extend(_pin_classes(conn, classes, opts.classes, opts.classes_file or name))
        pinned_new = len(report.new_classes)
        # the stored samples with these texts only, looked up by the unique text_hash index (not the
        # whole table: a 20-row ingest into a 700k-sample store read every row into memory)
        # (hash -> current label, where from, split, the label it was ingested with: `kd labels` may have changed it since)
        seen: dict[str, tuple[int | None, str, str, int | None]] = {}
        query = select(Sample.text_hash, Sample.label_id, Sample.source, Sample.line, Sample.split, Sample.parent_id,
                       Sample.orig_label_id, Sample.dropped, Sample.id, *((Sample.meta,) if opts.take_pool else ()))
        kept_pool: dict[str, int] = {}  # the unlabeled texts --take-pool may take (their ids): the pool's and --augment's, not dropped
        pool_meta: dict[str, dict] = {}  # (and the pool's metadata, which a take keeps beside the file's: a pool's own id)
        made: dict[int, int] = {}  # (those --augment made, to their parents: a take makes them samples of their own, no recipe's text)
        dropped_pool: set[str] = set()  # (and those it may not, dropped)
        for part in chunks(sorted(set(hashes)), ID_CHUNK):
            for h, label_id, src, line, split, parent, orig, dropped, sample_id, *meta in conn.execute(query.where(Sample.text_hash.in_(part))):
                seen[h] = (label_id, f"{src}:{line}" if line else src, "augmented" if parent is not None else split, orig)
                if split == "unlabeled" and parent is None:
                    if dropped:
                        dropped_pool.add(h)
                    else:
                        kept_pool[h] = sample_id
                        if meta and isinstance(meta[0], dict):
                            pool_meta[h] = meta[0]
                elif split == "unlabeled" and not dropped:  # (an n-gram or a masked copy a person labeled since: 好吃, [UNK]好吃)
                    kept_pool[h] = sample_id
                    made[sample_id] = parent
        names_by_id = {i: n for n, i in classes.items()}
        lookalikes = {label_key(n): n for n in classes}
        # a stored class set of names only (no number among them) takes no label that is one of their ids:
        # a file of label ids (`label_id<TAB>text`) ingested without --classes made each id a class of its own
        named = [names_by_id[i] for i in sorted(names_by_id)]  # (as they stood: the classes this file adds are no ids)
        rows = []
        adopted: list[dict[str, Any]] = []
        taken: list[dict[str, Any]] = []
        for r, h in _counted(zip(records, hashes), bar, "checking against the store", len(records)):
            prior = seen.get(h)
            take = opts.take_pool and prior is not None and r.label is not None and h in kept_pool
            if prior is not None and not take:
                prior_label, where, prior_split, prior_orig = prior
                if prior_split == "augmented" and prior_label is None and r.label is None and r.parent_id is None:
                    # a pool text that kd distill --augment made first becomes the pool's, as it would
                    # had the pool come first (it stays among its recipes' texts): skipped, it was no
                    # pool text for distill, pretrain or --tsv, and a dropped parent took it along
                    adopted.append({"h": h, "new_source": source, "new_line": r.line, "new_meta": r.meta})
                    seen[h] = (None, f"{source}:{r.line}" if r.line else source, opts.split, None)
                    continue
                prior_name = None if prior_label is None else names_by_id[prior_label]
                orig_name = None if prior_orig is None else names_by_id[prior_orig]
                # a labeled row whose text is stored without a label (the pool, an augmented text)
                # would lose its label unseen if counted as a duplicate: it is a conflict too. A row
                # with the label the sample was ingested with (the same file again, after `kd labels`
                # corrected it) is a duplicate: it was listed as a conflict with its own line
                if r.label is not None and r.label not in (prior_name, orig_name):
                    report.pool_dropped += prior_label is None and h in dropped_pool
                    report.conflicts.append(
                        {
                            "line": r.line,
                            "text": r.text,
                            "label": r.label,
                            "kept_label": prior_name,
                            "kept_from": where,
                        }
                    )
                else:
                    report.duplicates += 1
                    # a test text already in train is not added to test: the user is told where it is
                    report.duplicates_in[prior_split] = report.duplicates_in.get(prior_split, 0) + 1
                continue
            label_id = None
            if r.label is not None:
                label_id = classes.get(r.label)
                if label_id is None:
                    twin = lookalikes.setdefault(label_key(r.label), r.label)
                    if twin != r.label:  # 'ｐｏｓ' (typed with a full-width input method) beside 'pos'
                        raise KdError(_lookalike(name, r.line, opts.label_col or "label", r.label, twin))
                    if (of := class_of_id(r.label, named)) is not None:
                        raise KdError(
                            f"{name}: line {r.line}: field {opts.label_col or 'label'!r}: unknown label {r.label!r} "
                            f"(the store's classes: {', '.join(named)}): labels are class names, not ids "
                            f"({r.label!r} is the id of {of!r}); --classes FILE naming it adds a class of that name")
                    label_id = len(classes)
                    classes[r.label] = label_id
                    names_by_id[label_id] = r.label
                    report.new_classes.append(r.label)
            seen[h] = (label_id, f"{source}:{r.line}" if r.line else source,
                       "augmented" if r.parent_id is not None else opts.split, label_id)
            if take:  # the pool's sample becomes this row, as had this file come before the pool (its copy then a duplicate)
                # (the pool's metadata kept, the file's over it where both name a field: a pool's own id found it no more)
                meta = {**pool_meta[h], **(r.meta or {})} if h in pool_meta else r.meta
                taken.append({"h": h, "new_split": opts.split, "new_label": label_id, "new_source": source, "new_line": r.line,
                              "new_meta": meta, "sample_id": kept_pool.pop(h)})
            else:
                rows.append((r.text, h, opts.split, label_id, label_id, False, source, r.line, r.meta, r.parent_id))
            if r.label is not None:
                report.added_per_class[r.label] = report.added_per_class.get(r.label, 0) + 1
                added = report.added_lines.setdefault(r.label, [])
                if r.line is not None and len(added) < RARE_NEW_CLASS:
                    added.append(r.line)
        if report.new_classes[pinned_new:]:
            conn.execute(
                insert(KdClass), [{"id": classes[n], "name": n} for n in report.new_classes[pinned_new:]]
            )
        # (a take or an adoption is an update of a stored sample: 300,000 taken were 20 s under a "0/0" bar)
        writing = bar.add_task("writing samples", total=len(rows) + len(adopted) + len(taken), unit="rows")
        advance = functools.partial(bar.advance, writing)
        bulk_insert(conn, Sample.__table__, _SAMPLE_COLUMNS, rows, on_chunk=advance)
        _update_by_hash(conn, adopted, {"parent_id": None}, advance)
        _update_by_hash(conn, taken, {"split": bindparam("new_split"), "label_id": bindparam("new_label"),
                                      "orig_label_id": bindparam("new_label"), "parent_id": None}, advance)
        gone = sorted(made.keys() & {t["sample_id"] for t in taken})  # (a recipe's text no more: its students read it as a train sample)
        for part in chunks(gone, ID_CHUNK):
            conn.execute(delete(AugmentedText.__table__).where(AugmentedText.sample_id.in_(part)))
        if taken:  # on record, each as a "take" edit of no stage: `kd labels history` shows it, and a figure judged as of
            # an earlier time (``outputs.labels_as_of``) counts the sample as the pool text it was then
            now = utcnow()  # (Core inserts, not bulk_insert's driver-level one: the DateTime column is SQLAlchemy's to write)
            by = current_user()  # (an edit of no stage has no stage's run_by: who took it is in its reason)
            for part in chunks(taken, CHUNK):
                conn.execute(insert(LabelEdit.__table__), [
                    {"sample_id": t["sample_id"], "action": "take", "old_label_id": None, "new_label_id": t["new_label"], "old_dropped": False,
                     "new_dropped": False, "reason": f"kd ingest --take-pool: {source}" + (f":{t['new_line']}" if t["new_line"] else "")
                     # (no pool text: `kd labels history` says what it was, its parent and metadata gone now)
                     + (f", {MADE_BY_AUGMENT} of sample {made[t['sample_id']]}" if t["sample_id"] in made else "")
                     + (f", by {by}" if by else ""), "created_at": now} for t in part])
        report.taken = len(taken)
        report.added = len(rows) + len(adopted) + len(taken)
    return report


MADE_BY_AUGMENT = "a text `kd distill --augment` made"  # (a take's reason, of a text no pool held)


def _update_by_hash(conn, items: list[dict[str, Any]], values: dict[str, Any], advance: Callable[[int], None]) -> None:
    """Give the stored samples of ``items`` (each by its text hash ``h``) ``values`` and the source, line and
    metadata of the row that now stands for them (``new_source``, ``new_line``, ``new_meta``), ``CHUNK`` at a time."""
    for with_meta in (True, False):  # (no metadata: SQL NULL, as an ingested row has, not JSON 'null')
        for part in chunks([a for a in items if (a["new_meta"] is not None) == with_meta], CHUNK):
            conn.execute(
                update(Sample.__table__).where(Sample.text_hash == bindparam("h"))
                .values(**values, source=bindparam("new_source"), line=bindparam("new_line"),
                        meta=bindparam("new_meta") if with_meta else null()),
                part,
            )
            advance(len(part))


_CLASS_FILE_FIX = " (ids are fixed once stored: `kd classes --export FILE` writes the store's own class file to start from)"


def _pin_classes(conn, classes: dict[str, int], pinned: tuple[str, ...], name: str) -> list[str]:
    """Make the store's class table agree with a pinned class file (``name``: the file's, as errors name
    it), adding its classes in order; returns the names it added."""
    for i, n in enumerate(pinned):
        have = classes.get(n)
        if have is not None and have != i:
            raise KdError(
                f"{name}: class {n!r} has id {have} in the store but {i} in the class file{_CLASS_FILE_FIX}"
            )
        if have is None and i in classes.values():
            raise KdError(f"{name}: class id {i} is already taken in the store by another class{_CLASS_FILE_FIX}")
    new = [{"id": i, "name": n} for i, n in enumerate(pinned) if n not in classes]
    if new:
        conn.execute(insert(KdClass), new)
        classes.update({r["name"]: r["id"] for r in new})
    return [r["name"] for r in new]
