"""Bytes to text as kd reads a file it is given (kd ingest, kd pretrain --corpus, kd predict): UTF-8
only; the UTF-16 and GBK files a spreadsheet or Notepad saves are named in the one-line error, with how
to convert them; old Mac line ends read as line ends. Light on purpose (no store, no SQLAlchemy):
`kd predict --artifact` reads its input with it."""

from __future__ import annotations

import collections
import csv
import io
import json
import re
import shlex
from pathlib import Path

from .errors import KdError

TEXT_NAMES = ("text", "sentence", "content", "query", "review")  # a table's text column, by its header
HEADER_WORDS = {"label", *TEXT_NAMES}


def utf16_without_bom(data: bytes, *, least_nuls: int = 1) -> str | None:
    """``"UTF-16LE"`` or ``"UTF-16BE"`` when bytes holding NULs read as text in that encoding (a
    spreadsheet's "Unicode text" export with its byte-order mark cut off), else None: the start
    decodes, holds no NUL character, is printable text, tabs and line ends only, and has a tab or a
    line end (nearly any bytes decode to printable CJK characters; a tab or line end needs its NUL
    just where that encoding puts it). ``least_nuls``: NULs where that encoding puts an ASCII character's
    (a one-line file of Chinese has one, its line end's; 2 for a line given a line end of its own)."""
    head = data[:4096]
    head = head[: len(head) // 2 * 2]
    nuls = [i for i, b in enumerate(head) if b == 0]
    for codec, high in (("utf-16-le", 1), ("utf-16-be", 0)):  # (where an ASCII character's NUL byte is)
        # (too few NULs where ASCII's are: not this encoding; NULs on the other side too are the low bytes of
        # characters such as 一, U+4E00: the decoding below, no NUL character and printable, tells binary data apart)
        # (one, its line end's, where no character's low byte is NUL too: with one, binary data as likely)
        at_high = sum(i % 2 == high for i in nuls)
        if at_high < least_nuls or at_high < 2 and len(nuls) > at_high:
            continue
        try:
            text = head.decode(codec)
        except UnicodeDecodeError:
            continue
        if ("\n" in text or "\t" in text) and "\0" not in text and all(c.isprintable() or c in "\t\r\n" for c in text[:-1]):
            return codec.upper().replace("UTF-16-", "UTF-16")
    return None


# (start, what a file starting so is, the command that decompresses it): read as text, a gzip was "binary
# data (NUL byte)" with no word of decompressing it, and a PNG "reads as GBK/GB18030: iconv ..."
_SIGNATURES = (
    (b"\x1f\x8b", "a gzip-compressed file", "gunzip"),
    (b"BZh", "a bzip2-compressed file", "bunzip2"),  # (and "1AY&SY" after its block size digit: see not_text)
    (b"\xfd7zXZ\x00", "an xz-compressed file", "unxz"),
    (b"\x28\xb5\x2f\xfd", "a zstd-compressed file", "unzstd"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive", None),
    (b"PK\x03\x04", "an Excel workbook (or other zip file)", None),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an Excel 97-2003 workbook (or other OLE file)", None),
    (b"\x89PNG\r", "a PNG image", None),
    (b"\xff\xd8\xff", "a JPEG image", None),
    (b"%PDF-", "a PDF document", None),
    (b"SQLite format 3\x00", "a SQLite database (a kd store?)", None),
)


def not_text(data: bytes, name: str) -> str | None:
    """What ``data`` (a file's start; its first line will do) is, by its signature, and what to do, for
    a one-line error after ``name:`` (``<stdin>`` for standard input); None for anything else."""
    for start, what, tool in _SIGNATURES:
        if not data.startswith(start) or (start == b"BZh" and not re.match(rb"BZh[1-9]1AY&SY", data)):
            continue
        if tool:
            suffix = {"gunzip": ".gz", "bunzip2": ".bz2", "unxz": ".xz", "unzstd": ".zst"}[tool]
            how = ("pipe it through " + tool if name == "<stdin>" else f"{tool} -k {shlex.quote(name)}"
                   if Path(name).suffix.lower() == suffix else  # (gunzip leaves a name without its suffix alone)
                   f"{tool} < {shlex.quote(name)} > {shlex.quote(str(Path(name).with_name('unpacked-' + Path(name).name)))}")
            return f"{what}, not text: decompress it first ({how})"
        if start == b"PK\x03\x04":
            return f"{what}, not text: save the sheet as CSV UTF-8 or tab-delimited text, or unzip it first"
        if start == b"7z\xbc\xaf\x27\x1c":
            return f"{what}, not text: extract it first"
        return f"{what}, not a text file"
    return None


def decode(data: bytes, name: str, fmt: str) -> str:
    """UTF-8 text of a file (a BOM is dropped); a binary or mis-encoded file is refused."""
    kind = not_text(data, name)
    if kind:
        raise KdError(f"{name}: {kind}")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise KdError(utf16_error(name))
    nul = data.find(b"\0")
    if nul >= 0:
        utf16 = utf16_without_bom(data)
        if utf16:  # (its NULs are the high bytes of ASCII characters: not where a line starts in UTF-8 terms)
            raise KdError(utf16_error(name, without_bom=utf16, what="file"))
        line = data.count(_line_end(data), 0, nul) + 1
        raise KdError(
            f"{name}: line {line}:{_field_at(data, nul, fmt)} binary data (NUL byte): not a text file"
        )
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        # a BOM starting a later line (files joined by `cat`) is no text either: it would make "pos"
        # and "\ufeffpos" two classes that print alike
        return _LINE_BOM.sub("", data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        line = data.count(_line_end(data), 0, exc.start) + 1
        raise KdError(
            f"{name}: line {line}:{_field_at(data, exc.start, fmt)} not valid UTF-8 "
            f"(byte 0x{data[exc.start]:02x}); {_convert_hint(data, exc.start, name)}"
        ) from None


_CJK = re.compile(r"[\u3400-\u9fff]")


def _convert_hint(data: bytes, pos: int, name: str) -> str:
    """How to convert a file that is not UTF-8: named GB18030 (GBK's superset: what Excel and Notepad
    on Chinese Windows save) when the whole file reads so, the failing line holds Chinese characters,
    the lines before it are ASCII and its own bytes before ``pos`` hold no UTF-8 Chinese (UTF-8 Chinese
    reads as GB18030 too, garbled: iconv would have garbled the UTF-8 lines of a file joined from two
    encodings without a word). A few GBK bytes before the failing one may read as UTF-8 too ("太",
    0xcc 0xab, as U+032B): on the failing line only Chinese is the sign of UTF-8 text."""
    cut = _utf8_but_here(data, pos)
    if cut:  # (a UTF-8 file cut by `head -c`, or a text cut at a byte limit: no iconv converts it)
        return cut
    end = _line_end(data)
    start, stop = data.rfind(end, 0, pos) + 1, data.find(end, pos)
    if not data[:start].isascii() or _CJK.search(data[start:pos].decode("utf-8", "replace")):
        return "convert the file to UTF-8 first (the text before it is UTF-8: a file joined from two encodings?)"
    line = data[start:stop if stop >= 0 else len(data)]
    try:
        data.decode("gb18030")
        chinese = bool(_CJK.search(line.decode("gb18030")))
    except UnicodeDecodeError:
        chinese = False
    # (Big5's common characters read as kana and private-use ones in GBK: a line of them is Chinese in Big5 alone)
    if looks_big5(data) and _CJK.search(line.decode("cp950")):
        return ("it reads as Big5 (Traditional Chinese, as Excel and Notepad save in Taiwan and Hong Kong): convert it to UTF-8 "
                f"first, e.g. {_iconv('CP950', name)} (as GBK it reads as garbled characters)")
    if not chinese:
        return "convert the file to UTF-8 first"
    return f"it reads as GBK/GB18030 (as Excel and Notepad save on Chinese Windows): convert it to UTF-8 first, e.g. {_iconv('GB18030', name)}"


def _utf8_but_here(data: bytes, pos: int) -> str | None:
    """The hint for a UTF-8 file of Chinese whose only bytes that are not UTF-8 are the sequence at ``pos``
    (the first): it ends inside a character, or one character is cut in half; None otherwise (another
    encoding's text is not UTF-8 at many places)."""
    try:
        data[pos:].decode("utf-8")
        return None
    except UnicodeDecodeError as exc:
        rest = data[pos + exc.end:]
    try:
        text = data[:pos].decode("utf-8") + rest.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not _CJK.search(text):  # (a Latin-1 é in ASCII text, a Big5 "很好" whose tail reads as UTF-8: no sign of UTF-8 Chinese)
        return None
    if not rest:
        return "the file ends inside a character: cut short (as `head -c` cuts a file)? remove or complete its last line"
    return "the rest of the file is UTF-8: a character cut in half or a stray byte on this line (a text cut at a byte limit?): fix or remove it"


def utf16_error(name: str, *, line: int = 1, without_bom: str | None = None, what: str = "input") -> str:
    """The one-line error of UTF-16 text (``without_bom``: ``UTF-16LE`` or ``UTF-16BE``, its byte-order mark
    cut off) in ``name``, with the iconv that converts it (as a GBK file's names one)."""
    if without_bom:
        return (f"{name}: line {line}: the {what} looks {without_bom} encoded, without a byte-order mark: convert it to "
                f"UTF-8 first, e.g. {_iconv(without_bom, name)}")
    what = "input" if name == "<stdin>" else "file"
    return f"{name}: line {line}: the {what} is UTF-16 encoded: convert it to UTF-8 first, e.g. {_iconv('UTF-16', name)}"


def _iconv(encoding: str, name: str) -> str:
    if name == "<stdin>":
        return f"pipe it through iconv -f {encoding} -t UTF-8"
    return f"iconv -f {encoding} -t UTF-8 {shlex.quote(name)} > {shlex.quote(str(Path(name).with_name('utf8-' + Path(name).name)))}"


# Big5's commonest characters, the fewest strokes (一 人 大 不 中 好 的...), have lead bytes 0xA4-0xA9: in GBK
# those are the rows of kana, Greek, Cyrillic, pinyin and box drawing, next to absent from Chinese text (0 of
# 175,601 characters of the reviews, 0 of 197,795 of People's Daily); in Big5 text about 40 % of the characters
BIG5_COMMON_LEADS = range(0xA4, 0xAA)
BIG5_SHARE = 0.1
BIG5_SAMPLE = 1 << 20  # bytes whose pairs are counted: a share, which a large file's first MiB tells (a byte loop in Python)


def looks_big5(data: bytes) -> bool:
    """Whether a file that reads as GB18030 is Big5 (CP950) instead: both read each other's bytes, but a
    Big5 file read as GBK is full of kana, box-drawing and private-use characters, and Big5's common lead bytes
    and the pairs GBK reads as private-use characters say so."""
    try:
        data.decode("cp950")
    except UnicodeDecodeError:
        return False
    data = data[:BIG5_SAMPLE]
    i = pairs = common = 0
    while i < len(data) - 1:
        if data[i] < 0x80:
            i += 1
            continue
        pairs += 1
        common += data[i] in BIG5_COMMON_LEADS or _private_in_gbk(data[i:i + 2])
        i += 2
    return pairs > 0 and common / pairs >= BIG5_SHARE


def _private_in_gbk(pair: bytes) -> bool:
    """Whether a Big5 byte pair reads as a private-use character in GB18030 (GBK's user-defined rows, which
    no GBK text holds): "很" (0xab 0xdc), "物" and the like, that a short Big5 line may hold without any of
    Big5's commonest lead bytes ("服務很差")."""
    try:
        return 0xE000 <= ord(pair.decode("gb18030")) <= 0xF8FF
    except (UnicodeDecodeError, TypeError):
        return False


_LINE_BOM = re.compile(r"(?:^|(?<=\r))\ufeff", re.MULTILINE)  # (after a bare \r too: old Mac line ends)


def _line_end(data):
    """What ends the lines of ``data`` (bytes or text, the same type back): ``\n``, or a bare ``\r``
    when there is no ``\n`` (old Mac line ends; the csv module reads them so too)."""
    nl, cr = ("\n", "\r") if isinstance(data, str) else (b"\n", b"\r")
    return cr if nl not in data and cr in data else nl


# a JSON key and the string value after it, open to the end of the text: the value a byte cut there is in
_JSON_VALUE_OPEN = re.compile(r'"((?:[^"\\]|\\.)*)"\s*:\s*"(?:[^"\\]|\\.)*\Z')


def _field_at(data: bytes, pos: int, fmt: str) -> str:
    """`` field N:`` for the delimited field holding byte ``pos``, `` field 'KEY':`` for a JSON line's string
    value holding it (it named the line alone: a line of an export holds several strings)."""
    if fmt == "jsonl":
        head = data[data.rfind(_line_end(data), 0, pos) + 1:pos].decode("utf-8", "replace")
        key = _JSON_VALUE_OPEN.search(head)  # (none where it is in a key, or outside a string)
        if key is None:
            return ""
        try:
            return f" field {json.loads(chr(34) + key.group(1) + chr(34))!r}:"
        except ValueError:
            return f" field {key.group(1)!r}:"
    if fmt not in ("tsv", "csv"):
        return ""
    if fmt == "tsv":
        line_start = data.rfind(_line_end(data), 0, pos) + 1
        tabs = data.count(b"\t", line_start, pos)
        return f" field {tabs}:"
    # (a comma inside a CSV field in quotes, "Thinkpad, 不错", separates no fields: counted, the text's bad
    # byte was named in the label's field; and a line break in one ends no row: counted from that line's
    # start, a bad byte on a cell's second line was named in field 0, or past a comma in a field the rows
    # do not have). The csv module reads the rows up to it, a character in its place: the last row's last field.
    read = data[:pos].decode("utf-8", "replace").removeprefix("\ufeff") + "?"
    last = collections.deque(csv.reader(io.StringIO(read, newline="")), maxlen=1)[0]
    return f" field {len(last) - 1}:"
