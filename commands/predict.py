"""``kd predict``: labels for new text from stdin or a file, with a run's student or teacher, or with an
exported folder (``--artifact``); ``--store`` predicts the store's own samples and saves them as a stage.

The ``--artifact`` path imports ``kdstore.serving`` only: no store, no torch (for ONNX), no training code.
"""

from __future__ import annotations

import codecs
import json
import shlex
import sys
import time

import click
from click.core import ParameterSource

from kdstore.errors import KdError
from kdstore.jsonl import RepeatedKey, dumps_line, has_surrogate, loads_strict, text_key
from kdstore.names import SPLITS
from kdstore.textkey import unseen  # (light: the --artifact path loads no store)

from .common import FLOAT, KdPath, binary_stdin, check_file_model, file_note, home_path, open_store, overwrite_option, print_json, run_option, store_options

DEVICES = ("auto", "cpu", "cuda")  # kdstore.torchutil.DEVICES, without importing torch here


@click.command()
@click.argument("path", required=False, default="-", metavar="[FILE|-]", callback=home_path)
@run_option
@click.option("--model", "which", default="student", show_default=True, help="student (the latest distill stage that succeeded, fold students only where there is no other; the teacher when there is none), teacher, or a stage name.")
@click.option("--artifact", type=KdPath(file_okay=False), help="Serve from a `kd export` folder instead: no store is opened.")
@click.option("--store/--no-store", "from_store", is_flag=True, help="Predict the store's samples and save them as stage predict-STAGE (predict-STAGE@SPLIT with --split) of the run.")
@click.option("--split", type=click.Choice(SPLITS), help="With --store: only the samples of this split.")
@click.option("--speed", type=FLOAT, help="Early-exit model: exit at the first layer whose uncertainty <= SPEED (default: as trained; 0 = the full teacher model it extends).")
@click.option("--text-field", metavar="NAME", help="Read JSON lines: each line an object whose NAME field is the text (it may hold line breaks and tabs); --json gives its other fields back under \"input\".")
@click.option("--batch-size", type=int, default=256, show_default=True, help="Texts predicted together (a FILE's, and --store's, sorted by length first); lower it for a big model's memory.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@overwrite_option
@store_options
@click.option("--json/--no-json", "as_json", is_flag=True, help="One JSON object a line: line, text, label, confidence, probs (per class), truncated, unknown (no token the model's vocabulary holds; an early-exit model: layer, layers); an empty line: line and error (with --store: run, stage and the stage as kd report --json shows it).")
def predict(path, run, which, artifact, from_store, split, speed, text_field, batch_size, device, overwrite, db, as_json):
    """Predict a label for each line of text (stdin or FILE).

    Reading stdin, each line is answered as soon as it arrives (the model is loaded once; lines that
    arrive together, as from a piped file, are predicted together); a FILE is predicted in
    length-sorted batches. Output: label<TAB>confidence<TAB>text, or JSON lines; one
    line for each line read (an empty line gets empty fields, or an "error" in JSON).

    --artifact DIR serves a folder written by `kd export` (ONNX Runtime or TorchScript) without the
    store. --store predicts the samples already in the store (all, or --split) and records them as a
    stage named predict-STAGE, with metrics for each labeled split.

    \b
    Example:
      echo "质量很好" | kd predict --run r1
      kd predict --run r1 --model teacher --json reviews.txt
      kd predict --run r1 --text-field text --json reviews.jsonl   # JSON lines in, their fields echoed
      kd predict --artifact kd-artifacts/kd.db/r1/export-distill-textcnn-onnx reviews.txt
      kd predict --run r1 --store --split test
      echo "质量很好" | kd predict --run r1 --model distill-early-exit --speed 0.5 --json
    """
    ctx = click.get_current_context()
    typed = lambda p: ctx.get_parameter_source(p) == ParameterSource.COMMANDLINE  # noqa: E731 (a config file's defaults apply where they can)
    given = [p for p in ("run", "which") if typed(p)]
    if artifact and not typed("artifact") and (given or typed("db") or (from_store and typed("from_store"))):
        artifact = None  # a config file's [predict] artifact: a typed --run, --model, --db or --store wins over it
    piped = from_store and path == "-" and _stdin_has_text()  # (texts piped in were ignored without a word)
    if from_store and not typed("from_store") and (typed("artifact") or path != "-" or typed("text_field") or piped):
        from_store = False  # and a typed --artifact, FILE, --text-field (JSON lines to read) or text on stdin, over its store = true
    if batch_size < 1:
        raise click.BadParameter("must be at least 1", param_hint="--batch-size")
    if text_field is not None and not text_field:  # before a model loads (seconds to minutes)
        raise click.BadParameter("name the field that holds the text, e.g. text", param_hint="--text-field")
    if speed is not None and typed("speed") and not 0.0 <= speed <= 1.0:  # (the early-exit model refused it, once loaded)
        raise click.BadParameter(f"must be in [0, 1] (0: every layer; higher exits earlier), got {speed:g}", param_hint="--speed")
    if split and not from_store:
        if typed("split"):
            raise click.UsageError("--split goes with --store")
        split = None
    if overwrite and not from_store:  # (it replaces the stage --store writes: without it, it did nothing, unsaid)
        raise click.UsageError("--overwrite goes with --store (it replaces the predict-STAGE stage --store writes)")
    if speed is not None and artifact and not typed("speed"):
        speed = None
    if from_store:
        if artifact:
            raise click.UsageError("--store predicts with a run's model: leave out --artifact")
        if path != "-" or typed("path"):
            raise click.UsageError("--store predicts the store's samples: leave out FILE")
        if text_field is not None and typed("text_field"):
            raise click.UsageError("--text-field reads FILE or stdin: --store predicts the store's samples")
        if piped:
            raise click.ClickException("--store predicts the store's samples, not the text piped on stdin: leave out --store to predict that")
        _predict_store(run, which, split, batch_size, device, overwrite, db, as_json, speed, speed_if_early_exit=not typed("speed"))
        return
    if artifact and speed is not None:
        raise click.UsageError("--speed is for an early-exit model of a run; an export serves the full model")
    if artifact and given:
        raise click.UsageError("--artifact is the model: leave out --run and --model")
    if artifact and typed("db"):  # (served, the store never opened, without a word; KD_DB stays ignored)
        raise click.UsageError("--artifact serves the export without a store: leave out --db")
    stdin = binary_stdin() if path == "-" else None  # found closed before the model loads
    read = None if path == "-" else _read_file(path, text_field)  # (a FILE missing or bad was found once the model had loaded)
    if artifact:
        from kdstore.serving import Artifact

        try:
            predictor = Artifact.load(artifact, device=device)
        except KdError as exc:
            raise click.ClickException(str(exc)) from None
    else:
        from kdstore.predictor import Predictor

        store = open_store(db)
        check_file_model(store, run, which)
        predictor = Predictor.from_run(store, run, which, device=device, speed=speed, speed_if_early_exit=not typed("speed"))
        _name_the_student(store, run, which, predictor.stage_name)
        from kdstore.report import classes_added

        added = classes_added(list(predictor.class_names), store.class_names())
        if added:  # (kd report said so; predict answered in silence, never the new class)
            click.echo(f"warning: {predictor.stage_name} was {added}, which it never answers", err=True)
        _warn_first_layer_speed(predictor, speed is not None)
    if path == "-":
        from kdstore.progress import silenced

        cuts = _Cuts(predictor.max_len)
        read_lines = 0
        # the lines the column hints look at: lines typed or sent one at a time come one a read, so the first
        # read alone (one line) never showed a label<TAB>text stream as the table it is
        looked, hinted = [], text_field is not None
        try:
            with silenced():  # (each read its own bar: a stream of 50k lines left 27 finished bars on stderr)
                for lines in _arriving(stdin, "<stdin>"):
                    if not hinted:
                        looked += lines[:HINT_ROWS - len(looked)]
                        hinted = _hint_json_lines(looked, "<stdin>") or len(looked) >= HINT_ROWS or _enough_to_hint(looked)
                    read_lines += len(lines)
                    lines, fields, error = _json_texts(lines, text_field, "<stdin>") if text_field else (lines, None, None)
                    _emit(predictor, lines, batch_size, as_json, cuts, fields)  # the lines before a bad one are answered
                    if sys.stdout is not None:  # (started with stdout closed, `>&-`: written nowhere, as a FILE's answers are)
                        sys.stdout.flush()
                    cuts.warn_first()  # at once, while the lines go on arriving
                    if error is not None:
                        raise _text_field_noted(error)
        finally:
            if not isinstance(sys.exc_info()[1], BrokenPipeError):  # (the reader gone, as `| head -n 3`: no word of lines it never read)
                cuts.warn()  # the rest in one line at the end (one a 64 KiB read was one a few hundred lines)
        if not read_lines:  # (as an empty FILE is told: nothing on standard output and status 0 looked predicted)
            click.echo("warning: standard input is empty: nothing to predict", err=True)
    else:
        lines, fields = read
        _emit_file(predictor, lines, batch_size, as_json, fields)


def _stdin_has_text() -> bool:
    """Whether stdin holds input now, read without taking any of it: a file (``< texts.txt``) that is
    not empty, or a pipe with bytes waiting in it (``echo 很好 |``); not a terminal, ``/dev/null``, a
    closed stdin or a pipe nothing was written to (a scheduler's, which may never be written to)."""
    try:
        stream = click.get_binary_stream("stdin")
    except RuntimeError:  # no sys.stdin (started with `<&-`)
        return False
    try:
        if stream.isatty():
            return False
        if stream.seekable():  # a file, or CliRunner's input
            at = stream.tell()
            try:
                return bool(stream.read(1))
            finally:
                stream.seek(at)
        import fcntl
        import struct
        import termios

        waiting = fcntl.ioctl(stream.fileno(), termios.FIONREAD, b"\0\0\0\0")
        return struct.unpack("i", waiting)[0] > 0
    except (OSError, ValueError, ImportError, AttributeError):  # (no FIONREAD: Windows; a stream without a descriptor)
        return False


def _read_file(path: str, text_field: str | None) -> tuple[list[tuple[int, str]], dict[int, dict] | None]:
    """A FILE's numbered lines (each JSON line's text with ``text_field``) and the JSON lines' other
    fields, read and checked whole (a bad line is one error: nothing is predicted)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
        _refuse_utf16(data, path)
        lines = list(_numbered(_lines_of(data), path))
    except OSError as exc:
        why = "a folder, not a text file" if isinstance(exc, IsADirectoryError) else (exc.strerror or str(exc))
        raise click.ClickException(f"{path}: cannot read: {why}") from None
    if not lines:  # (nothing on standard output and status 0: a file not yet written looked predicted)
        click.echo(f"warning: {path} is empty: nothing to predict", err=True)
    if not text_field:
        _hint_json_lines(lines, path)
        return lines, None
    lines, fields, error = _json_texts(lines, text_field, path)
    if error is not None:
        raise _text_field_noted(error)
    return lines, fields


def _text_field_noted(error: click.ClickException) -> click.ClickException:
    """``error`` (a JSON line's) naming a config file's --text-field, as it names a typed one's lines: plain
    lines predicted under a kd.toml's `text-field` were "not JSON" to a user who had typed no --text-field."""
    error.message += file_note(click.get_current_context(), "--text-field")
    return error


def _name_the_student(store, run: str, which: str, chosen: str) -> None:
    """A note on standard error where ``--model student`` chose among several distill stages (the
    latest: a weaker one trained last answered, and nothing said which), and where the student or the
    teacher that answers is the parked one an --overwrite is replacing."""
    from kdstore.runs import FAILED, PARKED, process_state

    base, parked, _ = chosen.rpartition(PARKED)
    if parked and which in ("student", "teacher", "teach"):  # (a killed or running --overwrite: the old model answers, under a name the user never typed)
        click.echo(f"note: --model {which} is {chosen!r}, the one an --overwrite of {base!r} is replacing (not yet succeeded): "
                   "it answers until then", err=True)
        return
    if which != "student":
        return
    students = [s for s in store.stages_of(run) if s.kind == "distill" and s.status == "succeeded"]
    tried = [s for s in store.stages_of(run) if s.kind == "distill" and PARKED not in s.name and FAILED not in s.name]
    if not students and tried:  # (a Ctrl-C'd or failing kd distill: the teacher answered as if it were the student)
        gone = {s.name for s in tried if s.status == "running" and process_state(s) is False}  # (killed: as `kd runs` says it)
        click.echo(f"note: --model student: run {run!r} has no distill stage that succeeded "
                   f"({', '.join(f'{s.name}: {s.status}' + (', process gone' if s.name in gone else '') for s in tried)}): "
                   f"its teacher {chosen!r} answers "
                   f"(`kd report --run {run}` says why)", err=True)
        return
    others = [s.name for s in students if s.name != chosen]
    if others:
        votes = students[-1].name != chosen  # (passed over: fold students, votes for kd labels detect, after it)
        click.echo(f"note: --model student is {chosen!r}, the latest distill stage of run {run!r}"
                   f"{' that is no fold students (kd distill --folds)' if votes else ''} (also: {', '.join(others)}): "
                   "--model NAME picks another", err=True)


def _json_texts(lines: list[tuple[int, str]], field: str, name: str):
    """``(lines, fields, error)``: each JSON-lines line's ``field`` as its text, the object's other
    fields by line number, and the first bad line's one-line error (None: none), the lines before it kept.
    A blank line stays an empty text (answered as one)."""
    out, fields = [], {}
    for n, raw in lines:
        if not raw.strip():
            out.append((n, ""))
            continue
        try:  # (as kd ingest reads JSONL: NaN or Infinity echoed under "input" made the --json line no JSON)
            obj = loads_strict(raw)
        except RepeatedKey as exc:  # json.loads keeps the last value: which text was meant is not known
            return out, fields, click.ClickException(f"{name}: line {n}: field {exc.key!r}: the object names this key twice")
        except json.JSONDecodeError as exc:  # (as kd ingest says it: "Unterminated string starting at" gave no column)
            msg = exc.msg.removesuffix(" at")
            how = ("--text-field reads one JSON object a line, not a JSON array" if raw.lstrip().startswith("[") else
                   "the object goes on past its line: --text-field reads one JSON object a line, as `jq -c` writes them"
                   if raw.lstrip().startswith("{") and exc.pos >= len(raw.rstrip()) else "--text-field reads one JSON object a line")
            return out, fields, click.ClickException(f"{name}: line {n}: not JSON ({msg} at column {exc.colno}): {how}")
        except ValueError as exc:  # NaN, Infinity, 1e400
            return out, fields, click.ClickException(f"{name}: line {n}: {exc}")
        if not isinstance(obj, dict):
            return out, fields, click.ClickException(f"{name}: line {n}: a JSON {type(obj).__name__}, not an object: --text-field reads one JSON object a line")
        if field not in obj:
            has = ", ".join(map(repr, list(obj)[:8])) or "none"
            return out, fields, click.ClickException(f"{name}: line {n}: no field {field!r} (its fields: {has})")
        text = obj.pop(field)
        if not isinstance(text, str):
            return out, fields, click.ClickException(f"{name}: line {n}: field {field!r} is {json.dumps(text, ensure_ascii=False)[:40]}, not text")
        bad = next((k for k, v in ((field, text), *obj.items()) if has_surrogate(k) or has_surrogate(v)), None)
        if bad is not None:  # "\\ud83d" alone: no UTF-8 for it (the tokenizer, and the --json line, failed with a traceback)
            return out, fields, click.ClickException(
                f"{name}: line {n}: field {bad!r}: contains a lone surrogate escape "
                "(\\ud800-\\udfff without its pair, e.g. an emoji cut in half): not valid Unicode")
        out.append((n, text))
        fields[n] = obj
    return out, fields, None


def _hint_json_lines(lines: list[tuple[int, str]], name: str) -> bool:
    """A warning where the first line is a JSON object: each line is predicted as it stands, braces
    and field names included, unless --text-field names the text; where the lines look like a table
    kd ingest reads by columns, :func:`_hint_columns`. Whether it warned."""
    n, first = next(((n, t) for n, t in lines if t.strip()), (1, ""))
    if first.lstrip().startswith("["):  # a JSON array (a .json of records): one text, the whole array, or its brackets
        return _hint_json_array(lines, n, first, name)
    if not first.lstrip().startswith("{"):
        return _hint_columns(lines, name)
    try:
        obj = json.loads(first)
    except (ValueError, RecursionError):  # ([[[...]]] nested past Python's recursion limit)
        return False
    if isinstance(obj, dict):
        pick = text_key(obj, "NAME")  # the longest string, not the first ({"id": "a1", "body": ...} named --text-field id)
        click.echo(f"warning: {name}: line {n} is a JSON object, predicted as it stands: "
                   f"--text-field {pick} reads the text out of JSON lines", err=True)
    return isinstance(obj, dict)


def _hint_json_array(lines: list[tuple[int, str]], n: int, first: str, name: str) -> bool:
    """A warning where line ``n`` starts a JSON array (``[{...}, ...]`` on one line, or a lone ``[`` of a
    pretty-printed one): it was predicted as one text, or its brackets and objects' lines were, silently.
    A text that starts with a bracket and is no JSON (``[好评] 很好``) is left alone."""
    try:
        items = [None] if first.strip() == "[" else json.loads(first)
    except (ValueError, RecursionError):
        return False
    if not isinstance(items, list):
        return False
    obj = next((i for i in items if isinstance(i, dict)), None)
    if obj is None and items != [None]:  # (an array of numbers or strings: no objects to read the texts of)
        return False
    if obj is None:  # pretty-printed: the next line's object, where it holds one whole
        after = next((t for m, t in lines if m > n and t.strip()), "")
        try:
            obj = json.loads(after.strip().rstrip(","))
        except (ValueError, RecursionError):
            obj = None
    pick = text_key(obj, "NAME") if isinstance(obj, dict) else "NAME"
    source = "FILE" if name == "<stdin>" else shlex.quote(name)
    click.echo(f"warning: {name}: line {n} starts a JSON array, predicted as it stands: kd predict reads one text a line; "
               f"`jq -c '.[]' {source} | kd predict --text-field {pick}` reads its objects' texts", err=True)
    return True


HINT_ROWS = 100  # the first lines looked at for columns
HINT_ENOUGH = 3  # the non-empty lines that decide the hints (commas are judged on 3): stdin's lines wait no longer


def _enough_to_hint(lines: list[tuple[int, str]]) -> bool:
    """Whether ``lines`` decide the hints: ``HINT_ENOUGH`` non-empty lines, and as many CSV records where a quoted
    cell holds a line break (3 lines of one were 2 records, short of the 3 the comma check takes, which a FILE got)."""
    rows = [t.rstrip("\r\n") for _, t in lines if t.strip()]
    if len(rows) < HINT_ENOUGH:
        return False
    if '"' not in "".join(rows):
        return True
    import csv

    try:
        records = list(csv.reader(rows))
    except csv.Error:
        return True
    return len(records) - ("".join(rows).count('"') % 2) >= HINT_ENOUGH


def _hint_columns(lines: list[tuple[int, str]], name: str) -> bool:
    """A warning where the lines look like a table kd ingest reads by columns: a header line naming a
    text or label column (predicted as a text), or every line holding the same tabs (label<TAB>text,
    as kd ingest reads a TSV: the label was read with the text, and changed the answer) or, over 3
    lines at least, the same commas (a CSV, its header in words kd does not know)."""
    from kdstore.textfile import HEADER_WORDS, TEXT_NAMES

    rows = [(n, t.rstrip("\r\n")) for n, t in lines if t.strip()][:HINT_ROWS]
    if not rows:
        return False
    n, first = rows[0]
    source = "FILE" if name == "<stdin>" else name
    cells = [c.strip().strip('"').strip().lower() for c in first.split("\t" if "\t" in first else ",")]
    if len(first) <= 200 and any(c in HEADER_WORDS for c in cells):
        text = next((i for i, c in enumerate(cells) if c in TEXT_NAMES), None)
        cut = "" if len(cells) == 1 else f" | cut -f{text + 1}" if "\t" in first and text is not None else None
        how = "give it the text column alone" if cut is None else f"`tail -n +2 {source}{cut} | kd predict` reads the texts alone"
        click.echo(f"warning: {name}: line {n} looks like a header ({first.strip()[:60]!r}), predicted as a text: "
                   f"kd predict reads one text a line, no header or columns ({how})", err=True)
        return True
    tabs = first.count("\t")
    if tabs and len(rows) > 1 and all(t.count("\t") == tabs for _, t in rows):
        # the column of the longest cells is the text (text<TAB>label_id too: cut -f2 kept the ids alone), as
        # kd pretrain's --corpus error says; where none is longest, kd ingest's label<TAB>text, else no default says which
        # one column alone holding other than ASCII is the text, however short (pos<TAB>很好 beside neg<TAB>差)
        widths = [sum(len(t.split("\t")[c]) for _, t in rows) for c in range(tabs + 1)]
        worded = [c for c in range(tabs + 1) if any(not t.split("\t")[c].isascii() for _, t in rows)]
        column = str(worded[0] + 1) if len(worded) == 1 else str(widths.index(max(widths)) + 1) \
            if widths.count(max(widths)) == 1 else "2" if tabs == 1 else "N"
        click.echo(f"warning: {name}: lines {n}-{rows[-1][0]} each hold {tabs + 1} tab-separated columns, each line predicted "
                   f"whole as one text (the other columns read with it): `cut -f{column} {source} | kd predict` predicts the text column alone",
                   err=True)
        return True
    import csv  # a CSV under a header kd does not know (文本,标签), or none: every row alike, 3 rows at least
    texts = [t for _, t in rows]  # (read as CSV: Excel quotes a cell holding a comma or a line break, which raw counts miss)
    try:
        records = list(csv.reader(texts))
    except csv.Error:  # (a bare \r or a NUL inside a line: no CSV as a spreadsheet writes it)
        return False
    if "".join(texts).count('"') % 2:  # the lines looked at end inside a quoted cell: its record is cut
        records = records[:-1]
    fields = len(records[0]) if records else 0
    if fields > 1 and len(records) >= 3 and all(len(r) == fields for r in records):  # (free text seldom keeps one count of ASCII commas)
        how = (f"`cut -d, -fN {source} | kd predict` predicts column N alone (`tail -n +2` first leaves out a header line)"
               if not any(t.startswith('"') or ',"' in t for t in texts) else
               "its quoted cells hold commas or line breaks, which `cut` splits: save the text column alone, one text a line, and predict that file")
        click.echo(f"warning: {name}: lines {n}-{rows[-1][0]} each hold {fields} comma-separated columns, each line predicted whole "
                   f"as one text (a header line too): {how}", err=True)
        return True
    return False


def _numbered(lines, name: str):
    """``(line number, text)`` for each of the byte strings ``lines``, decoded as UTF-8; a line that
    is not valid UTF-8 is a one-line error naming ``name`` and the line."""
    ascii_before = True
    for n, raw in enumerate(lines, start=1):
        yield n, _decoded(n, raw, name, ascii_before)
        ascii_before = ascii_before and raw.isascii()


def _refuse_utf16(data: bytes, name: str) -> None:
    """A one-line error where ``data`` (a FILE, or the first read of stdin) is UTF-16 without its
    byte-order mark: a first line of Chinese alone holds no NUL byte (its line end does), and was
    told "reads as GBK/GB18030" with an iconv that garbles it."""
    if b"\0" in data[:4096] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        from kdstore.textfile import utf16_error, utf16_without_bom

        utf16 = utf16_without_bom(data)
        if utf16:
            raise click.ClickException(utf16_error(name, without_bom=utf16))


def _lines_of(data: bytes) -> list[bytes]:
    """The lines of a file's bytes: ended by ``\\n``, or by a bare ``\\r`` where there is no ``\\n``
    at all (old Mac line ends: kd ingest reads them so too, and one line would be one prediction)."""
    if data == codecs.BOM_UTF8:  # (Notepad's empty file saved as "UTF-8 with BOM": no line, not one empty line)
        return []
    lines = data.split(b"\r" if b"\n" not in data and b"\r" in data else b"\n")
    return lines[:-1] if lines[-1] == b"" else lines


def _decoded(n: int, raw: bytes, name: str, ascii_before: bool = False) -> str:
    """Line ``n`` as text; ``ascii_before``: the lines before it were ASCII alone (a line in GBK is then
    named so, with the iconv that converts the file, as kd ingest names it)."""
    if n == 1 and raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        from kdstore.textfile import utf16_error

        raise click.ClickException(utf16_error(name))
    if n == 1:
        from kdstore.textfile import not_text

        kind = not_text(raw, name)  # (a gzip was "binary data", a PNG "reads as GBK/GB18030: iconv ...")
        if kind:
            raise click.ClickException(f"{name}: {kind}")
    if b"\0" in raw:  # (kd ingest refuses it so too) UTF-16 without its byte-order mark, or no text at all
        from kdstore.textfile import utf16_error, utf16_without_bom

        # the line as cut at its "\n" byte: UTF-16BE's line end whole ("\0\n"), UTF-16LE's first byte
        # ("\n", its "\0" starting the next line)
        # (a NUL of the line itself beside the one added: "a\0b" is no UTF-16 "戀\n")
        utf16 = next(filter(None, (utf16_without_bom(r, least_nuls=2) for r in (raw + b"\n", raw + b"\n\0", raw[1:] + b"\n\0"))), None)
        if utf16:
            raise click.ClickException(utf16_error(name, line=n, without_bom=utf16))
        raise click.ClickException(f"{name}: line {n}: binary data (NUL byte): not a text file")
    try:
        return raw.decode("utf-8-sig")  # a byte-order mark is not text (on a later line: files joined by `cat`)
    except UnicodeDecodeError as exc:  # (its offsets are past a byte-order mark, which utf-8-sig took off)
        how = "convert it to UTF-8 first"
        from kdstore.textfile import _CJK

        if exc.reason == "unexpected end of data" and _CJK.search(exc.object[:exc.start].decode("utf-8", "replace")):
            # (UTF-8 Chinese up to a character the line's end cuts short: no iconv converts that, as kd ingest says too)
            how = "the line ends inside a character: cut short (a file cut by `head -c`, a text cut at a byte limit?): complete or remove it"
        elif ascii_before:  # after UTF-8 Chinese (lines before, or this one's before the byte) iconv would garble it
            from kdstore.textfile import _convert_hint

            hint = _convert_hint(exc.object, exc.start, name)  # (the line, read whole as GB18030)
            how = hint if hint.startswith(("it reads as GBK", "it reads as Big5")) else how
        raise click.ClickException(f"{name}: line {n}: not valid UTF-8 (byte 0x{exc.object[exc.start]:02x}): {how}") from None


def _arriving(stream, name: str, chunk: int = 1 << 16):
    """The complete lines of ``stream`` as they arrive, a list of ``(line number, text)`` at a time:
    every line one read returns (``read1``: what is there, waiting only when nothing is). A line
    typed or sent alone is answered at once; a file piped in comes in 64 KiB reads, predicted in
    batches (one model call a line made ``cat reviews.txt | kd predict`` 5x slower than a FILE)."""
    n, pending, ascii_before = 0, [], True  # pieces of a line not ended yet (joined once its end comes: a long line is no quadratic copy)
    while True:
        data = stream.read1(chunk)
        if not data:
            break
        if not n and not pending:
            _refuse_utf16(data, name)
        if b"\n" not in data:
            pending.append(data)
            continue
        *lines, rest = b"".join([*pending, data]).split(b"\n")
        pending = [rest]
        yield from _batches(lines, n, name, ascii_before)
        n += len(lines)
        ascii_before = ascii_before and all(line.isascii() for line in lines)
    rest = b"".join(pending)
    if not n and b"\r" in rest:  # not one \n in it all: bare \r line ends (old Mac), read as a FILE's are
        lines, rest = _lines_of(rest), b""
        yield from _batches(lines, 0, name, True)
    if rest and not (n == 0 and rest == codecs.BOM_UTF8):  # a last line without its line break (a mark alone is none)
        yield [(n + 1, _decoded(n + 1, rest, name, ascii_before))]


def _batches(lines: list[bytes], n: int, name: str, ascii_before: bool = False):
    """``lines`` (numbered on from line ``n``) decoded, as one list; a bad line ends it with its
    error, after the lines before it (answered, as they would be one at a time). ``ascii_before``:
    the lines before these were ASCII alone."""
    batch = []
    for raw in lines:
        n += 1
        try:
            batch.append((n, _decoded(n, raw, name, ascii_before)))
        except click.ClickException:
            if batch:
                yield batch
            raise
        ascii_before = ascii_before and raw.isascii()
    if batch:
        yield batch


class _Lines:
    """Line numbers a warning names: how many in all, and the first ``KEEP`` of them (a pipe server running for
    weeks kept every one, to name ten)."""

    KEEP = 11  # (the first, named as soon as it is answered, then ten more)

    def __init__(self):
        self.first: list[int] = []
        self.count = 0

    def append(self, line: int) -> None:
        self.count += 1
        if len(self.first) < self.KEEP:
            self.first.append(line)

    def __len__(self) -> int:
        return self.count


class _Cuts:
    """Line numbers of texts longer than the model reads, of texts of which its vocabulary holds no token,
    and of empty lines skipped: one warning for each kind, not one a line (a double-spaced file of 100k
    texts wrote 100k lines to standard error). Reading stdin, the first of each is named as soon as it is
    answered and the rest at the end."""

    def __init__(self, max_len: int):
        self.max_len, self.texts = max_len, 0
        self.json_lines = False  # (--text-field: an empty text is an object's, on a line that is not empty)
        self.lines, self.unknown, self.empty = _Lines(), _Lines(), _Lines()
        self.told = dict.fromkeys(("lines", "unknown", "empty"), 0)

    def _kinds(self):
        """Per kind: its name, its warning of one line, and of ``n`` lines (``more``: after the first, ``shown``: ten)."""
        unknown = "the model's vocabulary holds none of {} tokens (all unknown): {} nothing of {} text{}"
        return (
            ("lines", lambda line: f"line {line}: longer than {self.max_len} tokens, truncated",
             # (of the texts read: a double-spaced file's empty lines are none, and "15 of 30 lines" was half of them)
             lambda n, more, shown: f"{n}{more} of {self.texts} texts longer than {self.max_len} tokens, truncated (lines {shown})"),
            ("unknown", lambda line: f"line {line}: " + unknown.format("its", "its answer says", "its", ""),
             lambda n, more, shown: f"{n}{more} of {self.texts} texts: " + unknown.format("their", "their answers say", "their", "s")
             + f" (lines {shown})"),
            ("empty", lambda line: f"line {line}: empty text, skipped",
             lambda n, more, shown: f"{n}{more} empty {'text' if self.json_lines else 'line'}{'s' * (n > 1)} skipped "
             f"(line{'s' * (n > 1)} {shown})"),
        )

    def warn_first(self) -> None:
        for kind, one, _ in self._kinds():
            found = getattr(self, kind)
            if found.count and not self.told[kind]:
                click.echo(f"warning: {one(found.first[0])}", err=True)
                self.told[kind] = 1

    def warn(self) -> None:
        for kind, one, many in self._kinds():
            found, told = getattr(self, kind), self.told[kind]
            n, rest = found.count - told, found.first[told:]
            if n == 1:  # (one more after the first: "1 more of 30 lines: ... their answers say ... (lines 5)" read as several)
                click.echo(f"warning: {one(rest[0])}", err=True)
            elif n:
                shown = ", ".join(map(str, rest[:10])) + (", ..." if n > 10 else "")
                click.echo(f"warning: {many(n, ' more' if told else '', shown)}", err=True)


def _visible(text: str) -> str:
    """``text``, or "" when it is made only of zero-width, format, control or private-use characters (a tokenizer reads
    nothing of it: an empty text, as ``kd ingest`` judges it, not a prediction of nothing)."""
    return "" if text and unseen(text) else text


def _other_classes(run: str, model_stage, trained: list[str], names: list[str]) -> KdError:
    """The refusal of `kd predict --store` with a model trained on classes ``trained`` where the store has ``names``."""
    from kdstore.advice import reteach_command

    if model_stage.kind == "teach":
        retrain = f"{reteach_command(run, model_stage.config)} retrains it on them"
    else:  # (a student learns the classes of its teacher's logits)
        student = (model_stage.config or {}).get("student") or "STUDENT"
        retrain = (f"once its teacher knows them, `kd distill --run {shlex.quote(run)} --student {shlex.quote(student)} "
                   f"--name {shlex.quote(model_stage.name)} --overwrite` "
                   f"(with the options `kd report --run {shlex.quote(run)}` lists for it) retrains it")
    return KdError(f"stage {model_stage.name!r} was trained on classes {trained}, the store now has "
                   f"{names}: its predictions cannot be stored against the store's labels: {retrain}; "
                   "`kd predict` without --store serves it as it is")


def _emit(predictor, lines: list[tuple[int, str]], batch_size: int, as_json: bool, cuts: _Cuts | None = None,
          fields: dict[int, dict] | None = None) -> None:
    """``predictor``: a ``kdstore.predictor.Predictor`` or a ``kdstore.serving.Artifact``. Texts
    that were cut are tallied in ``cuts``; without it they are warned about here. ``fields``: a
    JSON line's other fields by line number (``--text-field``), given back under ``input``."""
    items = [(n, _visible(raw.rstrip("\r\n").strip())) for n, raw in lines]
    texts = [t for _, t in items if t]
    results = iter(predictor.predict(texts, batch_size=batch_size))
    tally = cuts if cuts is not None else _Cuts(predictor.max_len)
    tally.texts += len(texts)
    tally.json_lines = tally.json_lines or fields is not None
    # under a bar on a terminal, rich's proxy of stdout prints the lines above the bar (given at once: rich renders each
    # write, 1.5 ms a line): click's own stdout took the proxy, which names no encoding, for a misconfigured stream and
    # wrote around it, each line after the bar's text
    above = [] if hasattr(sys.stdout, "rich_proxied_file") else None

    def put(line: str) -> None:
        # color: click cut an ANSI colour code out of a text written to a file or pipe (the echo was another text)
        if above is None:
            click.echo(line, color=True)
        else:
            above.append(line)

    for n, text in items:
        echo = {} if fields is None else {"input": fields.get(n, {})}
        if not text:
            if as_json:
                put(dumps_line({"line": n, "error": "empty text", **echo}))
            else:
                tally.empty.append(n)
                put("\t\t")  # one output line per input line: `paste` lines them up
            continue
        r = next(results)
        if as_json:
            put(dumps_line({"line": n, "text": text, **r, **echo}))
        else:
            if r["truncated"]:
                tally.lines.append(n)
            if r.get("unknown"):  # (a predictor of another kind may not say)
                tally.unknown.append(n)
            put(f"{r['label']}\t{r['confidence']:.4f}\t{text.translate(_LINE_BREAKS)}")
    if above:
        click.echo("\n".join(above), file=sys.stdout, color=True)
    if cuts is None:
        tally.warn()


FILE_PART = 16384  # lines of a FILE predicted and written at a time


def _emit_file(predictor, lines: list[tuple[int, str]], batch_size: int, as_json: bool, fields: dict[int, dict] | None) -> None:
    """A FILE's answers, ``FILE_PART`` lines at a time (each part length-sorted into batches) under
    one progress bar: the answers of a million-line file are not all held at once (their dicts, and
    the token ids of every text: kilobytes a line), and the first ones are written at once."""
    if len(lines) <= FILE_PART:
        _emit(predictor, lines, batch_size, as_json, fields=fields)
        return
    from kdstore.progress import progress, silenced

    cuts = _Cuts(predictor.max_len)
    # stdout written to while the bar is drawn on standard error: a terminal's lines go above the bar
    # (rich's redirect); a file's or pipe's straight to it (redirected, they went to standard error)
    above = bool(sys.stdout is not None and sys.stdout.isatty())
    with progress(redirect_stdout=above) as bars, silenced():  # (each part's own bar silenced: one bar in all)
        task = bars.add_task("predict", total=len(lines), unit="lines")
        for start in range(0, len(lines), FILE_PART):
            part = lines[start : start + FILE_PART]
            _emit(predictor, part, batch_size, as_json, cuts, fields)
            bars.update(task, advance=len(part))
    cuts.warn()


# characters a reader may take for the end of a line (str.splitlines does): one output line per input line
# and a tab, which would add a column to label<TAB>confidence<TAB>text (--json keeps the text as it is)
_LINE_BREAKS = str.maketrans({c: " " for c in "\x00\t\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"})  # (and NUL: csv readers refuse it)


def _warn_first_layer_speed(predictor, chosen: bool) -> None:
    """A --speed, typed or a config file's, at which an early-exit model exits every text at its first layer (max_prob
    uncertainty, or entropy at 1; kd distill warns of its own --speed so; a --speed 0.6 here exited all in silence)."""
    from kdstore.early_exit import first_layer_speed_note

    note = first_layer_speed_note(predictor.speed, predictor.uncertainty, len(predictor.class_names)) if chosen and hasattr(predictor, "uncertainty") else None
    if note:
        click.echo(f"warning: {note}", err=True)


def _parked_refusal(run: str, name: str) -> KdError:
    """``kd predict --store`` of the model an --overwrite is replacing (``NAME~parked-ID``)."""
    return KdError(f"stage {name!r} of run {run!r} is the one an --overwrite is replacing: its predictions are "
                   f"not stored as a stage while it runs; run this again once it has ended (without --store, "
                   f"`--model {name}` serves it meanwhile)")


def _predict_store(run: str, which: str, split: str | None, batch_size: int, device: str, overwrite: bool, db, as_json: bool,
                   speed: float | None = None, *, speed_if_early_exit: bool = False) -> None:
    """Logits, predictions and per-split metrics of the store's samples, as stage ``predict-STAGE``."""
    from kdstore.environment import environment
    from kdstore.outputs import store_outputs
    from kdstore.predictor import Predictor, model_stage as stage_to_serve
    from kdstore.report import run_report
    from kdstore.runs import check_stage_free, stage_scope

    from kdstore.schema import utcnow

    store = open_store(db, writer=True)
    check_file_model(store, run, which)
    # the stage it would write, refused (a rerun without --overwrite) before the model loads, as kd teach's is
    serving = stage_to_serve(store, run, which)
    planned = serving.name
    if "~parked-" in planned:  # (before the model loads: a parked teacher is each of its folds' models)
        if serving.kind == "teach":  # (as kd distill and detect say it: whether the replacement runs, or its process is gone)
            store.find_stage(run, planned.split("~parked-")[0])
        raise _parked_refusal(run, planned)
    stored = f"predict-{planned}" + (f"@{split}" if split else "")
    recorded = (serving.config or {}).get("classes")
    if recorded is not None and list(recorded) != store.class_names():  # (before "pass --overwrite", which then refused this)
        raise _other_classes(run, serving, list(recorded), store.class_names())
    try:
        check_stage_free(store, run=run, kind="predict", name=stored, overwrite=overwrite)
    except KdError as exc:  # (an early-exit model's predictions at another speed: the refusal said not which they were)
        # (a succeeded one's, the refusal that names --overwrite: one marked running elsewhere keeps its own)
        old = next((s for s in store.stages_of(run) if s.name == stored and s.status == "succeeded"), None) \
            if speed is not None and not speed_if_early_exit and not overwrite else None
        was = None if old is None else (old.config or {}).get("speed")
        if was is None or was == speed:
            raise
        raise KdError(f"{exc} (its predictions are at speed {was:g}; they would be replaced by those at --speed {speed:g})") from None
    loading = utcnow()
    predictor = Predictor.from_run(store, run, which, device=device, speed=speed, speed_if_early_exit=speed_if_early_exit)
    _warn_first_layer_speed(predictor, speed is not None)
    names = store.class_names()
    model_stage = store.find_stage(run, predictor.stage_name)
    if list(predictor.class_names) != names:
        raise _other_classes(run, model_stage, list(predictor.class_names), names)
    if "~parked-" in model_stage.name:  # (its predict-STAGE name was refused as "not valid", a name never typed)
        raise _parked_refusal(run, model_stage.name)
    if model_stage.ended_at is not None and model_stage.ended_at > loading:
        # an --overwrite ended while the model loaded: the stage by that name now is the new one, and the model
        # loaded may be the one it replaced (its predictions would be recorded under the new model's sha256)
        raise KdError(f"stage {model_stage.name!r} of run {run!r} was replaced (an --overwrite ended) while its model "
                      "loaded: nothing was stored; run this again")
    samples = store.samples(splits=[split] if split else None, include_dropped=True)
    if len(samples) == 0:
        raise KdError(f"no samples{f' in split {split!r}' if split else ''} in the store")
    name = f"predict-{model_stage.name}" + (f"@{split}" if split else "")  # each split's predictions stand side by side
    config = {
        "model_stage": model_stage.name,
        "model_kind": predictor.kind,
        "model_sha256": model_stage.artifact_sha256,
        "split": split,
        "speed": getattr(predictor, "speed", None),  # an early-exit model's: the one it served at (its default without --speed)
        "max_len": predictor.max_len,
        "batch_size": batch_size,
        "classes": names,
        "environment": environment(device),  # (its samples_per_s is a figure of this machine and device)
    }
    with stage_scope(store, run=run, kind="predict", name=name, config=config, overwrite=overwrite) as stage:
        started = time.monotonic()
        logits = predictor.logits(samples.texts, batch_size=batch_size)
        rate = len(samples) / max(time.monotonic() - started, 1e-9)
        store_outputs(store, stage.id, samples, logits, names)
        layers = getattr(predictor, "last_layers", None)  # an early-exit model: where the texts left it
        exits = {}
        if layers is not None and len(layers):
            from kdstore.exit_speed import exit_shares, share_metrics

            exits = {"mean_exit_layer": float(layers.mean()), **share_metrics(exit_shares(layers, predictor.model.num_layers))}
        store.add_metrics(stage.id, "all", {"samples": len(samples), "samples_per_s": rate, **exits})
    report = next(s for s in run_report(store, run)["stages"] if s["name"] == name)
    if as_json:  # (run and stage up front, as every command that writes a stage prints them)
        print_json({"run": run, "stage": name, **report})
        return
    click.echo(f"run {run}: stage {name} {report['status']}: {len(samples)} samples predicted with {model_stage.name}")
    for part in ("train", "dev", "test"):
        m = report["metrics"].get(part)
        if m:
            click.echo(f"  {part}: accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f} (n={int(m['n'])})")
            continue
        labeled = sum(1 for s, y in zip(samples.splits, samples.labels) if s == part and y >= 0)
        if labeled:  # predicted, and no figures: it said nothing of the split asked for
            click.echo(f"  {part}: no figures: its {labeled} labeled samples are all dropped (`kd samples --split {part} --dropped` shows them)")
    mean_layer = report["metrics"].get("all", {}).get("mean_exit_layer")
    if mean_layer is not None:  # an early-exit model: the figures above are at this speed
        from kdstore.exit_speed import shares_line, stored_shares

        click.echo(f"  speed {config['speed']:g}: mean exit layer {mean_layer:.2f} of {predictor.model.num_layers} over {len(samples)} samples"
                   f" (exits by layer {shares_line(stored_shares(report['metrics']['all']))})")
