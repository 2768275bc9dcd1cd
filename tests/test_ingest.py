"""Ingest: ``parse`` on its own, then ``kd ingest`` through the real CLI into a real SQLite store.

Every bad input must stop with a one-line error naming the file, the line and the field, and leave
every table of the store exactly as it was (all or nothing).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kdstore.engine import sqlite_path
from kdstore.errors import KdError
from kdstore.ingest import (
    IngestOptions,
    Record,
    detect_format,
    format_class_file,
    parse,
    read_class_file,
)
from kdstore.textkey import normalize, text_hash
from conftest import store_exists

# every store test on both backends; where a store is born (a first ingest that fails leaves none), on a database
# kd never touched (new_database): the others start from a copy of a store kd created, sparing each its own walk of
# the migration chain (test_migrations walks it)
pytestmark = [pytest.mark.on_postgresql]

# parse (pure) --------------------------------------------------------------------------------


def test_parse_headerless_tsv_label_then_text_keeps_line_numbers():
    data = "pos\tgood phone\r\n\n  \nneg\t bad battery \nmid\tso so\n".encode()
    records = parse(data, "train.tsv", IngestOptions())
    assert records == [
        Record(text="good phone", label="pos", line=1),
        Record(text="bad battery", label="neg", line=4),
        Record(text="so so", label="mid", line=5),
    ]


def test_parse_drops_utf8_bom_and_detects_header():
    data = "\ufefflabel\ttext\nneg\t差评\npos\t好评\n".encode()
    records = parse(data, "d.tsv", IngestOptions())
    assert [(r.label, r.text, r.line) for r in records] == [("neg", "差评", 2), ("pos", "好评", 3)]


def test_parse_csv_by_column_name_extra_columns_into_meta_and_multiline_field():
    data = (
        'id,review,sentiment,lang\n'
        '1,"Nice, really nice",pos,en\n'
        '2,"two\nlines",neg,fr\n'
        '3,plain,pos,de\n'
    ).encode()
    opts = IngestOptions(text_col="review", label_col="sentiment")
    records = parse(data, "r.csv", opts)
    assert records == [
        Record(text="Nice, really nice", label="pos", line=2, meta={"id": "1", "lang": "en"}),
        Record(text="two\nlines", label="neg", line=3, meta={"id": "2", "lang": "fr"}),
        Record(text="plain", label="pos", line=5, meta={"id": "3", "lang": "de"}),
    ]


def test_parse_headerless_columns_by_index():
    data = b"x1\tgood\tpos\nx2\tbad\tneg\n"
    records = parse(data, "t.tsv", IngestOptions(text_col="1", label_col="2"))
    assert records == [
        Record(text="good", label="pos", line=1, meta={"0": "x1"}),
        Record(text="bad", label="neg", line=2, meta={"0": "x2"}),
    ]
    # a superscript two is a digit to str.isdigit, not to int(): a ValueError traceback, not one line
    with pytest.raises(KdError, match="field '²'"):
        parse(data, "t.tsv", IngestOptions(text_col="²", label_col="2"))


def test_parse_jsonl_label_as_string_and_other_keys_as_meta():
    data = b'{"text": "a", "label": 1, "user": 7}\n\n{"text": " b ", "label": "x"}\n'
    records = parse(data, "d.jsonl", IngestOptions())
    assert records == [
        Record(text="a", label="1", line=1, meta={"user": 7}),
        Record(text="b", label="x", line=3, meta=None),
    ]


def test_parse_label_column_alone_leaves_the_text_in_the_other_column():
    """text<TAB>label read with --label-col 1 (it stopped: "the text column is also the label column")."""
    records = parse("好的\tpos\n坏的\tneg\n".encode(), "t.tsv", IngestOptions(label_col="1"))
    assert [(r.text, r.label, r.meta) for r in records] == [("好的", "pos", None), ("坏的", "neg", None)]
    # with a header, a text-named column that --label-col takes is not the text column
    [r] = parse(b"content,review\nA,good\n", "t.csv", IngestOptions(label_col="content"))
    assert (r.text, r.label) == ("good", "A")


def test_parse_column_names_in_any_case_when_one_column_matches():
    [r] = parse(b"Review,Stars\ngood,5\n", "t.csv", IngestOptions(text_col="review", label_col="STARS"))
    assert (r.text, r.label) == ("good", "5")
    with pytest.raises(KdError, match="field 'text': no such column"):  # two that differ in case only: no guess
        parse(b"Text,TEXT,label\n1,2,3\n", "t.csv", IngestOptions(text_col="text"))


def test_parse_old_mac_line_ends_are_lines():
    """A file whose lines end in a bare \\r (as the csv module reads them): one row a line, not one
    text holding every line."""
    records = parse(b"pos\tgood\rneg\tbad\rpos\tnice\r", "mac.tsv", IngestOptions())
    assert [(r.label, r.text, r.line) for r in records] == [("pos", "good", 1), ("neg", "bad", 2), ("pos", "nice", 3)]
    pool = parse(b"one\rtwo\r", "pool.txt", IngestOptions(split="unlabeled"))
    assert [r.text for r in pool] == ["one", "two"]
    data = b'{"text": "a", "label": "pos"}\r{"text": "b", "label": "neg"}\r'
    assert [r.text for r in parse(data, "mac.jsonl", IngestOptions())] == ["a", "b"]
    # a \\r inside a line of a \\n file stays in its text
    [r] = parse(b"pos\tgood\rone\n", "t.tsv", IngestOptions())
    assert r.text == "good\rone"


def test_parse_json_lines_joined_by_a_bare_carriage_return_name_the_mixed_line_ends():
    """A JSON Lines file of \\n line ends where one line ends in a bare \\r (files joined, an old
    editor) was refused as "Extra data" alone; a TSV's ragged row names the \\r."""
    data = b'{"text": "a", "label": "pos"}\r\n{"text": "b", "label": "neg"}\r{"text": "c", "label": "neg"}\n'
    with pytest.raises(KdError, match=r"^m\.jsonl: line 2: not valid JSON \(Extra data at column 31\); a bare carriage return "
                                      r"\(\\r\) joins two lines: mixed line ends\? make them all \\n \(e\.g\. `mac2unix`\)$"):
        parse(data, "m.jsonl", IngestOptions())
    with pytest.raises(KdError, match=r"line 1: not valid JSON \(Extra data at column 10\)$"):  # (no \r: no such hint)
        parse(b'{"a": 1} {"b": 2}\n', "m.jsonl", IngestOptions())


def test_a_ragged_row_of_more_fields_asks_for_a_separator_in_its_text():
    """A hand-made label,text CSV whose text holds a comma: "expected 2 fields, found 4 (ragged row)", with no
    word of the likely cause; a row short of fields has none to ask about."""
    with pytest.raises(KdError, match=r"^h.csv: line 3: expected 2 fields, found 4 \(ragged row: a comma outside quotes in its text\?\)$"):
        parse("label,text\npos,很好\nneg,屏幕一般,电池差,不推荐\n".encode(), "h.csv", IngestOptions())
    with pytest.raises(KdError, match=r"^h.csv: line 3: expected 2 fields, found 1 \(ragged row\)$"):
        parse("label,text\npos,很好\n不推荐\n".encode(), "h.csv", IngestOptions())


def test_a_windows_line_break_in_a_quoted_cell_is_no_bare_carriage_return():
    """A CSV (or a spreadsheet's TSV) of \\r\\n line ends whose quoted cell holds a \\r\\n line break: a
    ragged row after it was blamed on a "bare carriage return" in that cell, with `mac2unix` to run."""
    for name, data in (("w.csv", b'text,label\r\n"a\r\nb",pos\r\ngood,neg,x\r\n'),
                       ("w.tsv", b'label\ttext\r\npos\t"a\r\nb"\r\nneg\tgood\tx\r\n')):
        with pytest.raises(KdError, match=r"line 4: expected 2 fields, found 3 \(ragged row: a (comma outside quotes|tab) in its text\?\)$"):
            parse(data, name, IngestOptions())
    with pytest.raises(KdError, match=r"line 2 holds a bare carriage return"):  # (a bare one still is)
        parse(b'text,label\n"a\rb",pos\ngood,neg,x\n', "b.csv", IngestOptions())


def test_a_file_not_utf8_is_named_gbk_only_where_it_reads_as_chinese_in_gbk():
    """Excel and Notepad on Chinese Windows save GBK: the error names it and the iconv command; a
    Latin-1 file (or one GB18030 cannot read) is told to convert, with no encoding guessed."""
    with pytest.raises(KdError, match=r"^<stdin>: line 1: field 1: not valid UTF-8 \(byte 0xd6\); it reads as GBK/GB18030 .* "
                                      r"pipe it through iconv -f GB18030 -t UTF-8$"):
        parse("pos\t中文很好\n".encode("gbk"), "<stdin>", IngestOptions())
    for data in ("pos\tcafé au lait\n".encode("latin-1"), b"pos\t\xff\xff\n"):
        with pytest.raises(KdError, match=r"not valid UTF-8 \(byte 0x..\); convert the file to UTF-8 first$"):
            parse(data, "l.tsv", IngestOptions())
    # UTF-8 lines, then a GBK one (files joined): the whole reads as GB18030 too, garbled; iconv would garble the UTF-8 lines
    joined = "pos\t质量很好\n".encode() + "neg\t质量太差\n".encode("gbk")
    with pytest.raises(KdError, match=r"line 2: field 1: not valid UTF-8 .*; convert the file to UTF-8 first \(the text before it is UTF-8: "
                                      r"a file joined from two encodings\?\)$"):
        parse(joined, "j.tsv", IngestOptions())


def test_a_big5_file_is_named_big5_not_gbk():
    """Big5 (Traditional Chinese, Taiwan and Hong Kong) reads as GB18030 too, garbled: it was named GBK with
    an iconv that turned it into kana and box-drawing characters, which kd then ingested. Its common
    characters' lead bytes tell it apart; Traditional Chinese saved as GBK is still GBK."""
    text = "label\ttext\npos\t這個產品非常好用，物超所值\nneg\t服務態度不好，下次不會再來了\n"
    with pytest.raises(KdError, match=r"^t\.tsv: line 2: field 1: not valid UTF-8 \(byte 0xb3\); it reads as Big5 .* "
                                      r"iconv -f CP950 -t UTF-8 t\.tsv > utf8-t\.tsv \(as GBK it reads as garbled characters\)$"):
        parse(text.encode("cp950"), "t.tsv", IngestOptions())
    with pytest.raises(KdError, match=r"it reads as GBK/GB18030 .* iconv -f GB18030 -t UTF-8 t\.tsv"):
        parse(text.encode("gbk"), "t.tsv", IngestOptions())
    with pytest.raises(KdError, match=r"it reads as Big5 .* pipe it through iconv -f CP950 -t UTF-8 \("):
        parse("pos\t我們今天去了一個大公園\n".encode("big5"), "<stdin>", IngestOptions())
    converted = subprocess.run(["iconv", "-f", "CP950", "-t", "UTF-8"], input=text.encode("cp950"), capture_output=True)
    if converted.returncode == 0:  # (the command said converts it back)
        assert converted.stdout.decode() == text


def test_a_big5_line_of_common_characters_is_named_big5():
    """Big5's commonest characters read as kana and private-use characters in GBK, so a short first line
    of them ("好", "不好吃") held no Chinese read as GBK: the file was told only "convert the file to UTF-8
    first", though it reads as Chinese in Big5."""
    for text in ("pos\t好\nneg\t不好\n", "neg\t不好吃\npos\t這個房間很乾淨，服務也很好\n", "很好\n"):
        with pytest.raises(KdError, match=r"it reads as Big5 .* iconv -f CP950 -t UTF-8"):
            parse(text.encode("big5"), "t.tsv", IngestOptions())


def test_a_short_big5_line_of_characters_private_use_in_gbk_is_named_big5():
    """"服務很差" or "很棒" in Big5 holds none of its commonest lead bytes, but "很" (0xab 0xdc) reads as a
    private-use character in GBK, which no GBK text holds: such a line (a review piped to kd predict) was
    named GBK, and the iconv given turned it into "狝叭畉" with an invisible character, read as a text."""
    for text in ("服務很差\n", "pos\t環境很棒\n", "物流很快\n", "難吃\n"):
        with pytest.raises(KdError, match=r"it reads as Big5 .* iconv -f CP950 -t UTF-8"):
            parse(text.encode("cp950"), "t.tsv", IngestOptions(split="unlabeled"))
    for text in ("pos\t服务很差\n", "pos\t環境很棒\n"):  # (GBK, Simplified or Traditional, is still GBK)
        with pytest.raises(KdError, match=r"it reads as GBK/GB18030 .* iconv -f GB18030 -t UTF-8"):
            parse(text.encode("gbk"), "t.tsv", IngestOptions())


def test_a_gbk_line_whose_first_bytes_read_as_utf8_is_named_gbk_not_joined():
    """GBK's "太" (0xcc 0xab) is valid UTF-8 (U+032B): a GBK line starting with it was told "the text
    before it is UTF-8: a file joined from two encodings?", not the iconv that converts it."""
    for data, line in (("label\ttext\npos\t太好了，质量不错\n".encode("gbk"), 2), ("pos\t太好了\n".encode("gbk"), 1)):
        with pytest.raises(KdError, match=rf"^g\.tsv: line {line}: field 1: not valid UTF-8 \(byte 0xba\); it reads as GBK/GB18030 .*"
                                          r"iconv -f GB18030 -t UTF-8 g\.tsv > utf8-g\.tsv$"):
            parse(data, "g.tsv", IngestOptions())
    # UTF-8 Chinese before the failing byte on its own line is still a sign of two encodings joined
    with pytest.raises(KdError, match=r"line 1: field 1: not valid UTF-8 .*a file joined from two encodings\?\)$"):
        parse("pos\t质量".encode() + "太差\n".encode("gbk"), "j.tsv", IngestOptions())


def test_a_utf8_file_cut_inside_a_character_is_not_told_to_convert():
    """A UTF-8 file cut short inside a character (`head -c` to make a sample, a size limit) or with one
    character cut in half (a text cut at a byte limit by an export) was told "convert the file to UTF-8
    first (... a file joined from two encodings?)": it is UTF-8, and no iconv converts it."""
    lines = "pos\t质量很好，物流也快\nneg\t房间太小了，隔音很差\n".encode()
    with pytest.raises(KdError, match=r"^c\.tsv: line 2: field 1: not valid UTF-8 \(byte 0xe5\); the file ends inside a character: "
                                      r"cut short \(as `head -c` cuts a file\)\? remove or complete its last line$"):
        parse(lines[:-5], "c.tsv", IngestOptions())
    cut = "pos\t质量很好，物流".encode()[:-1] + b"\n" + lines
    with pytest.raises(KdError, match=r"^c\.tsv: line 1: field 1: not valid UTF-8 \(byte 0xe6\); the rest of the file is UTF-8: a character "
                                      r"cut in half or a stray byte on this line \(a text cut at a byte limit\?\): fix or remove it$"):
        parse(cut, "c.tsv", IngestOptions())


def test_a_bad_byte_in_a_quoted_csv_field_holding_a_comma_names_that_field():
    """Excel quotes a CSV text holding a comma ("Thinkpad, 不错"): its comma separates no fields, but
    the error counted it and named the label column (field 1) for a bad byte in the text (field 0)."""
    data = 'text,label\n"Thinkpad, 不错",pos\n'.encode("gbk")
    with pytest.raises(KdError, match=r"^g\.csv: line 2: field 0: not valid UTF-8 \(byte 0xb2\); it reads as GBK"):
        parse(data, "g.csv", IngestOptions())
    with pytest.raises(KdError, match=r"^g\.csv: line 2: field 1: not valid UTF-8"):
        parse(b'text,label\n"a, ""b"", c",' + "中性\n".encode("gbk"), "g.csv", IngestOptions())


def test_a_bad_byte_in_a_json_line_names_its_key():
    """An encoding error names the line and the field: in JSON Lines it named the line alone, though a line
    of an export holds several strings (the text, a title, a shop) and the README promises the field."""
    data = '{"id": 1, "text": "很好", "label": "pos"}\n{"id": 2, "shop": "jd", "text": "质量'.encode() + "很差".encode("gbk") + b'", "label": "neg"}\n'
    with pytest.raises(KdError, match=r"^g\.jsonl: line 2: field 'text': not valid UTF-8 \(byte 0xba\)"):
        parse(data, "g.jsonl", IngestOptions())
    with pytest.raises(KdError, match=r"^g\.jsonl: line 1: field 'a\"b': not valid UTF-8 \(byte 0xe9\)"):  # (a key with a quote in it)
        parse(b'{"x": "y\\": \\"z", "a\\"b": "caf\xe9"}\n', "g.jsonl", IngestOptions(split="unlabeled", text_col="x"))
    with pytest.raises(KdError, match=r"^g\.jsonl: line 1: not valid UTF-8 \(byte 0xe9\)"):  # (in a key: no field to name)
        parse(b'{"text": "y", "caf\xe9": 1}\n', "g.jsonl", IngestOptions(split="unlabeled"))


def test_a_bad_byte_on_a_later_line_of_a_quoted_csv_field_names_that_field():
    """A CSV text in quotes holding a line break (Excel's Alt+Enter in a cell): a bad byte on its second
    line was counted from that line's start, as if a row began there: field 0 (the label) for the text of
    a label,text file, or, past a comma, field 2 of a file of two columns."""
    data = b'label,text\npos,"Great laptop\nbattery, screen, ' + "电池很好".encode("gbk") + b'"\n'
    with pytest.raises(KdError, match=r"^g\.csv: line 3: field 1: not valid UTF-8 \(byte 0xb5\); it reads as GBK"):
        parse(data, "g.csv", IngestOptions())
    with pytest.raises(KdError, match=r"^u\.csv: line 3: field 1: not valid UTF-8 \(byte 0xe9\)"):
        parse('label,text\nneg,"很好\n差'.encode() + b'caf\xe9"\n', "u.csv", IngestOptions())
    with pytest.raises(KdError, match=r"^u\.csv: line 4: field 0: not valid UTF-8 \(byte 0xe9\)"):  # (a row after it)
        parse('label,text\nneg,"很好\n差"\nca'.encode() + b'f\xe9,pos\n', "u.csv", IngestOptions())


def test_old_mac_line_ends_errors_name_the_line_and_a_line_bom_goes():
    """In a bare-\r file a bad byte's line and field were counted by \n (all "line 1"), and the BOM
    of a file joined after it (`cat`) stayed on its label: a class "\ufeffneg" beside "neg"."""
    with pytest.raises(KdError, match=r"^mac.tsv: line 3: field 1: not valid UTF-8 \(byte 0xba\)"):
        parse(b"pos\tgood\rneg\tbad\rpos\t\xba\xc3\r", "mac.tsv", IngestOptions())
    with pytest.raises(KdError, match=r"^mac.tsv: line 2: field 1: binary data"):
        parse(b"pos\tgood\rneg\tb\x00ad\r", "mac.tsv", IngestOptions())
    records = parse(b"pos\tgood\r\xef\xbb\xbfneg\tbad\r", "mac.tsv", IngestOptions())
    assert [r.label for r in records] == ["pos", "neg"]


def test_parse_unlabeled_one_and_two_columns():
    one = parse("first text\nsecond text\n".encode(), "pool.txt", IngestOptions(split="unlabeled"))
    assert [(r.text, r.label) for r in one] == [("first text", None), ("second text", None)]
    two = parse(b"pos\tfirst\nneg\tsecond\n", "pool.tsv", IngestOptions(split="unlabeled"))
    assert [(r.text, r.label) for r in two] == [("first", None), ("second", None)]


def test_parse_headerless_wide_file_needs_its_columns_named():
    """A header kd does not know (id,body,category,source) was read as a sample and the id column as
    the labels (a class per row); more than two columns without --text-col/--label-col are refused."""
    data = "id,body,category,source\nr0,第一条,体育 新闻,a\nr1,第二条,财经,b\n".encode()
    with pytest.raises(KdError, match=r"^w\.csv: line 1: field 'text': 4 columns and no header kd knows .*--text-col and --label-col"):
        parse(data, "w.csv", IngestOptions())
    with pytest.raises(KdError, match=r"^w\.csv: line 1: field 'text': 4 columns .*the text column with --text-col \("):
        parse(data, "w.csv", IngestOptions(split="unlabeled"))
    with pytest.raises(KdError, match="4 columns"):  # a label column without its text column is no answer either
        parse(data, "w.csv", IngestOptions(label_col="2", header=False))
    with pytest.raises(KdError, match=r"^w\.csv: line 1: field 'label': 4 columns .*name the label column with --label-col \("):
        parse(data, "w.csv", IngestOptions(text_col="1", header=False))  # (the text named: the label is what is missing)
    records = parse(data, "w.csv", IngestOptions(text_col="body", label_col="category"))
    assert [(r.text, r.label) for r in records] == [("第一条", "体育 新闻"), ("第二条", "财经")]
    # the refusal says how to name a header's columns: indexes read its line 1 as a sample ("body" labeled "category")
    with pytest.raises(KdError, match=r"\(header names if line 1 names the columns: 0-based indexes read it as a sample\)$"):
        parse(data, "w.csv", IngestOptions())
    with pytest.raises(KdError, match=r"--text-col and --label-col \(0-based indexes\)$"):  # (--no-header: no header to name)
        parse(data, "w.csv", IngestOptions(header=False))
    [r] = parse(b"x1\tgood\tpos\n", "t.tsv", IngestOptions(split="unlabeled", text_col="1"))
    assert (r.text, r.label) == ("good", None)


def test_parse_headerless_file_with_trailing_blank_columns_reads_as_two_columns():
    """Excel's trailing "," (or a tab) after label,text is no third column: the file read before the
    3-column refusal, and still does (the blank columns kept out of the metadata: each sample's was {"2": ""})."""
    for data, name in ((b"pos,good,\nneg,bad,\n", "t.csv"), (b"pos\tgood\t\t\nneg\tbad\t\t\n", "t.tsv")):
        records = parse(data, name, IngestOptions())
        assert [(r.text, r.label, r.meta) for r in records] == [("good", "pos", None), ("bad", "neg", None)]
    assert [r.meta for r in parse(b"pos,good,,7\nneg,bad,,\n", "t.csv", IngestOptions(text_col="1", label_col="0"))] == [
        {"3": "7"}, {"3": ""}]  # (a column with a value somewhere is kept, its blanks too)
    with pytest.raises(KdError, match="3 columns"):  # one filled cell past the second is a third column
        parse(b"pos,good,\nneg,bad,x\n", "t.csv", IngestOptions())


def test_parse_headerless_one_column_with_trailing_blank_columns_reads_as_texts():
    """A pool of one text column as Excel saves it (`质量很好,,`) was read as label,text with the blank column as
    the texts: refused as "columns look swapped ... 1 different texts in column 1", and told to pass
    `--label-col 1`, a blank column. The blank columns do not count: one column, texts only."""
    data = "\ufeff质量很好,,\r\n\"太差了,不买\",,\r\n还行吧,,\r\n".encode()
    for name in ("pool.csv", "pool.tsv"):
        raw = data if name.endswith(".csv") else data.replace(b",,", b"\t\t").replace('"太差了,不买"'.encode(), "太差了，不买".encode())
        records = parse(raw, name, IngestOptions(split="unlabeled"))
        assert [(r.text, r.label, r.meta) for r in records] == [
            ("质量很好", None, None), ("太差了,不买" if name.endswith(".csv") else "太差了，不买", None, None), ("还行吧", None, None)]
    with pytest.raises(KdError, match="split 'train' needs a label column"):  # a labeled split: no label to read
        parse(data, "train.csv", IngestOptions())


def test_parse_leaves_pandas_row_numbers_out_of_the_metadata():
    """`df.to_csv("x.csv")` writes the frame's row numbers first, under an empty header: each sample's
    metadata was {"": "0"}, {"": "1"}, ... An unnamed column of other values is kept."""
    records = parse(b",label,text,who\n0,pos,good,ann\n1,neg,bad,bo\n", "x.csv", IngestOptions())
    assert [(r.text, r.label, r.meta) for r in records] == [("good", "pos", {"who": "ann"}), ("bad", "neg", {"who": "bo"})]
    assert [r.meta for r in parse(b",label,text\n7,pos,good\n3,neg,bad\n", "x.csv", IngestOptions())] == [{"": "7"}, {"": "3"}]


def test_parse_unlabeled_keeps_no_label_in_the_metadata():
    """README: --split unlabeled drops any label column, as JSONL drops the label key."""
    for data, name in ((b"pos\tfirst\n", "pool.tsv"), (b"label,text,who\npos,first,ann\n", "pool.csv")):
        [r] = parse(data, name, IngestOptions(split="unlabeled"))
        assert (r.text, r.label) == ("first", None)
        assert "pos" not in (r.meta or {}).values()
    [r] = parse(b"label,text,who\npos,first,ann\n", "pool.csv", IngestOptions(split="unlabeled"))
    assert r.meta == {"who": "ann"}
    [r] = parse(b"text,who\nfirst,ann\n", "pool.csv", IngestOptions(split="unlabeled"))  # no label column: fine
    assert r.meta == {"who": "ann"}


def test_parse_the_label_column_named_as_the_text_column_is_refused_for_the_pool_too():
    """--label-col naming the text column is refused for a TSV or CSV pool; for JSON lines it was
    taken, and the pool kept each line's "label" in its metadata."""
    opts = IngestOptions(split="unlabeled", text_col="text", label_col="text")
    with pytest.raises(KdError, match=r"^p\.csv: line 1: field 'text': the text column is also the label column$"):
        parse(b"text,label\nfirst,pos\n", "p.csv", opts)
    with pytest.raises(KdError, match=r"^p\.jsonl: field 'text': the text key is also the label key$"):
        parse(b'{"text": "first", "label": "pos"}\n', "p.jsonl", opts)


def test_parse_headerless_wide_unlabeled_file_drops_no_unnamed_column():
    """A headerless scrape (user id, text, time) into the pool: with more than two columns no default
    says which is a label, so none is dropped unseen (column 0 was, as if it were the label)."""
    [r] = parse(b"u123\tgood\t2024-01-01\n", "w.tsv", IngestOptions(split="unlabeled", text_col="1"))
    assert (r.text, r.label, r.meta) == ("good", None, {"0": "u123", "2": "2024-01-01"})
    [r] = parse(b"u123\tgood\tpos\n", "w.tsv", IngestOptions(split="unlabeled", text_col="1", label_col="2"))
    assert (r.text, r.meta) == ("good", {"0": "u123"})


def test_parse_json_lines_read_as_tsv_by_default_are_refused():
    """`cat scrape.jsonl | kd ingest - --split unlabeled` stored each line's JSON as a pool text."""
    data = '{"text": "好评", "meta": {"shop": "A"}}\n{"text": "差评"}\n'.encode()
    for name, before, line in (("<stdin>", b"", 1), ("pool.log", b"\n", 2)):
        with pytest.raises(KdError, match=rf"^{re.escape(name)}: line {line}: .*JSON Lines, give --format jsonl"):
            parse(before + data, name, IngestOptions(split="unlabeled"))
    assert [r.text for r in parse(data, "<stdin>", IngestOptions(split="unlabeled", format="tsv"))][0].startswith('{"text"')
    assert [(r.text, r.meta) for r in parse(data, "pool.ndjson", IngestOptions(split="unlabeled"))] == [
        ("好评", {"meta": {"shop": "A"}}), ("差评", None)]
    assert parse(b"{braces} in a text\n", "<stdin>", IngestOptions(split="unlabeled"))[0].text == "{braces} in a text"


def test_parse_json_lines_in_a_csv_file_are_refused():
    """A JSON Lines export saved as .csv was read as CSV: each line's '{"text": "..."' became a class
    and its '"label": "..."}' the text, with exit 0."""
    data = '{"text": "好评, 很好", "label": "pos"}\n{"text": "差评", "label": "neg"}\n'.encode()
    with pytest.raises(KdError, match=r"^export\.csv: line 1: .*JSON Lines, give --format jsonl \(or --format csv to read it as CSV\)"):
        parse(data, "export.csv", IngestOptions())
    assert [(r.text, r.label) for r in parse(data, "export.csv", IngestOptions(format="jsonl"))] == [("好评, 很好", "pos"), ("差评", "neg")]


def test_parse_a_spreadsheets_quoted_tsv_fields_are_read_unquoted():
    """Excel's "Text (Tab delimited)" writes a text holding a quote or a line break in quotes, its
    quotes doubled: read line by line, 他说"好" kept them (each doubled) and a line break in a
    text stopped the ingest as a ragged row. A TSV without such a field keeps its quotes as before."""
    data = 'label\ttext\r\npos\t"他说""好"""\r\nneg\t"多行\r\n文本"\r\npos\t"太好了"\r\n'.encode()
    assert [(r.label, r.text, r.line) for r in parse(data, "excel.tsv", IngestOptions())] == [
        ("pos", '他说"好"', 2), ("neg", "多行\r\n文本", 3), ("pos", "太好了", 5)]
    data = 'neg\t"多行\n文本"\npos\t普通\n'.encode()  # (a line break alone: the rows read line by line are ragged)
    assert [(r.label, r.text) for r in parse(data, "excel.tsv", IngestOptions())] == [("neg", "多行\n文本"), ("pos", "普通")]
    plain = '"太好了"\n他说"好"\n"开头\n结尾"\n'.encode()  # (a pool: no ragged row)
    assert [r.text for r in parse(plain, "p.tsv", IngestOptions(split="unlabeled"))] == ['"太好了"', '他说"好"', '"开头', '结尾"']


def test_parse_a_spreadsheets_one_column_tsv_with_a_line_break_in_a_cell_is_read_unquoted():
    """Excel on Windows ends its rows in \\r\\n and a line break inside a cell in \\n: a one-column sheet
    (a pool of reviews) saved as tab-delimited text has no ragged row to tell, and each such text was
    ingested as two, a stray quote in each. A pool of mixed line ends and no quoted break stays as read."""
    data = 'text\r\n"第一行\n第二行"\r\n普通\r\n'.encode()
    assert [(r.text, r.line) for r in parse(data, "pool.txt", IngestOptions(split="unlabeled"))] == [
        ("第一行\n第二行", 2), ("普通", 4)]
    mixed = '"太好了"\r\n开头\n结尾"\r\n'.encode()
    assert [r.text for r in parse(mixed, "p.tsv", IngestOptions(split="unlabeled"))] == ['"太好了"', "开头", '结尾"']


def test_parse_a_spreadsheets_quoted_tsv_fields_with_old_mac_line_ends_are_read_unquoted():
    """Excel for Mac (2011) saves "Tab delimited Text" with bare \\r line ends: a field's doubled quotes
    were looked for before a \\n only, so 他说"好" was stored in its quotes, each doubled."""
    data = 'label\ttext\rpos\t"他说""好"""\rneg\t差\r'.encode()
    assert [(r.label, r.text, r.line) for r in parse(data, "mac.tsv", IngestOptions())] == [("pos", '他说"好"', 2), ("neg", "差", 3)]
    data = 'text\tlabel\r"好""的"\tpos\r差\tneg\r'.encode()  # (the quoted field starts its line)
    assert [(r.label, r.text, r.line) for r in parse(data, "mac.tsv", IngestOptions())] == [("pos", '好"的', 2), ("neg", "差", 3)]


def test_parse_a_tsv_with_every_field_quoted_is_read_unquoted():
    """pandas' ``to_csv(sep="\t", quoting=csv.QUOTE_ALL)`` (or QUOTE_NONNUMERIC, or R's write.table)
    quotes every field: read line by line, the header '"text"' was ingested as a sample and every
    label became a class in quotes, '"pos"'. A text in plain quotes under a plain label keeps them."""
    data = '"text"\t"label"\n"质量很好"\t"pos"\n"太差了"\t"neg"\n'.encode()
    assert [(r.label, r.text, r.line) for r in parse(data, "q.tsv", IngestOptions())] == [("pos", "质量很好", 2), ("neg", "太差了", 3)]
    data = '"text"\t"label"\n"质量很好"\t1\n"太差了"\t0\n'.encode()  # (numbers unquoted: QUOTE_NONNUMERIC)
    assert [(r.label, r.text) for r in parse(data, "q.tsv", IngestOptions())] == [("1", "质量很好"), ("0", "太差了")]
    data = 'pos\t"太好了"\nneg\t"太差了"\n'.encode()
    assert [(r.label, r.text) for r in parse(data, "p.tsv", IngestOptions())] == [("pos", '"太好了"'), ("neg", '"太差了"')]


def test_parse_a_tsv_with_every_field_quoted_that_does_not_parse_so_is_refused():
    """R's write.table(df, sep="\t", row.names = FALSE) quotes every field and, by default
    (qmethod = "escape"), writes a quote in a text as \\": that row did not parse as quoted fields, so
    the whole file was read line by line: its header '"text"' became a sample and every text in
    quotes a class ('"很好"'), without a word. It is refused, naming the line."""
    data = '"text"\t"label"\n"很好"\t"pos"\n"他说\\"好\\""\t"neg"\n"一般"\t"neg"\n'.encode()
    with pytest.raises(KdError, match=r'^r\.tsv: line 3: every field of the first row is in quotes, but this row does not parse so .*'
                                      r'qmethod = "double"'):
        parse(data, "r.tsv", IngestOptions())


def test_parse_a_header_of_semicolon_or_tab_separated_columns_is_refused():
    """A CSV saved by Excel where the comma is the decimal mark separates its columns by ';': its
    header `text;label` and every row became one pool text (a labeled split: "no label column");
    a .csv of tab-separated columns, likewise."""
    data = "text;label\r\n好的;pos\r\n坏的;neg\r\n".encode()
    for name, fmt in (("semi.csv", "csv"), ("<stdin>", "tsv")):
        with pytest.raises(KdError, match=rf"^{re.escape(name)}: line 1: field 0: 'text;label' looks like the header of "
                                          rf"semicolon-separated columns .* \(or --format {fmt} to read each line as text\)$"):
            parse(data, name, IngestOptions(split="unlabeled"))
        # (a labeled split's lines read whole have no label: that way out is a pool's alone)
        with pytest.raises(KdError, match=r"semicolon-separated columns \(as Excel .* save it so$"):
            parse(data, name, IngestOptions(split="train"))
    for split, tail in (("train", r"give --format csv$"), ("unlabeled", r"give --format csv \(or --format tsv to read each line as text\)$")):
        with pytest.raises(KdError, match=r"looks like a CSV header: the file looks like CSV, " + tail):
            parse("text,label\n好的,pos\n".encode(), "<stdin>", IngestOptions(split=split))
    with pytest.raises(KdError, match=r"^tab\.csv: line 1: field 0: .* tab-separated columns: give --format tsv"):
        parse(b"text\tlabel\ngood\tpos\n", "tab.csv", IngestOptions())
    assert [r.text for r in parse(data, "semi.csv", IngestOptions(split="unlabeled", format="csv"))][0] == "text;label"
    assert [r.text for r in parse("你好;世界\n".encode(), "semi.csv", IngestOptions(split="unlabeled"))] == ["你好;世界"]


def test_parse_excels_separator_line_is_named():
    """A CSV written for Excel may start with `sep=,` (the line Excel reads as its separator): kd took it for
    the first row, the header after it for a sample, and advised `--text-col sep= --label-col ''` (which
    it refuses) or "no such column (columns: sep=, )"."""
    rows = "".join(f"{t},{l}\r\n" for t, l in (("好的", "pos"), ("坏的", "neg")) * 8)
    for sep, fmt in ((",", None), (";", None), ("\t", "tsv")):
        data = f"sep={sep}\r\ntext,label\r\n{rows}".encode()
        for cols in ({}, {"text_col": "text", "label_col": "label"}):
            with pytest.raises(KdError, match=rf"^x\.csv: line 1: field 0: {re.escape(repr('sep=' + sep))} is the separator line Excel reads, "
                                              r"no header or sample: remove it \(`tail -n \+2`\)$"):
                parse(data, "x.csv", IngestOptions(format=fmt, **cols))


def test_parse_a_named_column_of_a_header_in_another_separator_names_the_format():
    """A header kd does not know (`文本,标签`), its columns named: a CSV piped in (read as TSV) said
    "no such column (columns: 文本,标签)", the column it named plainly there; so did a TSV given
    `--format csv` and a CSV saved with ';'. The error now says how the file is to be read."""
    cases = (("<stdin>", None, ",", r"the file looks like CSV, give --format csv"),
             ("t.csv", "csv", "\t", r"the file looks like TSV, give --format tsv"),
             ("semi.csv", None, ";", r"semicolon-separated columns .* save it so"))
    for name, fmt, sep, hint in cases:
        data = f"文本{sep}标签\n好的{sep}合规\n坏的{sep}违禁词\n".encode()
        with pytest.raises(KdError, match=rf"^{re.escape(name)}: line 1: field '文本': .*{hint}"):
            parse(data, name, IngestOptions(format=fmt, text_col="文本", label_col="标签"))
    with pytest.raises(KdError, match=r"^h\.csv: line 1: field '类别': no such column \(columns: 文本, 标签\)$"):
        parse("文本,标签\n好的,合规\n".encode(), "h.csv", IngestOptions(text_col="文本", label_col="类别"))


def test_parse_blank_unnamed_columns_are_no_repeated_header_name():
    """A spreadsheet's CSV with trailing empty columns (``label,text,,``) has two unnamed columns:
    blank everywhere, they lose nothing and the file is read as before; with a value, refused."""
    rows = parse(b"label,text,,,note\npos,good,,,\nneg,bad,,,\n", "excel.csv", IngestOptions())
    assert [(r.label, r.text, r.meta) for r in rows] == [("pos", "good", {"note": ""}), ("neg", "bad", {"note": ""})]
    with pytest.raises(KdError, match="field '': the header names this column twice"):
        parse(b"label,text,,\npos,good,,x\n", "excel.csv", IngestOptions())


def test_parse_a_bom_starting_a_later_line_is_dropped():
    """Files joined by `cat`, each saved with a BOM: one class 'pos', not 'pos' and '\\ufeffpos'."""
    data = b"\xef\xbb\xbfpos\tgood\n" + b"\xef\xbb\xbfpos\tfine\r\n\xef\xbb\xbfneg\tbad\n"
    assert [(r.label, r.text) for r in parse(data, "t.tsv", IngestOptions())] == [
        ("pos", "good"), ("pos", "fine"), ("neg", "bad")]
    data = b'{"text": "a", "label": "pos"}\n\xef\xbb\xbf{"text": "b", "label": "pos"}\n'
    assert [r.text for r in parse(data, "t.jsonl", IngestOptions())] == ["a", "b"]


def test_parse_pinned_classes_rejects_unknown_label():
    opts = IngestOptions(classes=("neg", "pos"))
    assert len(parse(b"pos\ta\nneg\tb\n", "t.tsv", opts)) == 2
    with pytest.raises(KdError, match=r"t\.tsv: line 2: field 'label': unknown label 'meh'"):
        parse(b"pos\ta\nmeh\tb\n", "t.tsv", opts)


def test_parse_a_label_that_is_a_pinned_class_id_says_labels_are_names():
    """Data whose labels are class ids (`"类别": 2`, as CLUE-style files keep them) beside a class_id.txt
    of `id<TAB>name` lines: "unknown label '2' (pinned classes: 合规, 夸大宣传, 违禁词)" read as though
    the id file were not read. The error says labels are names and which class the id is, and (it was a dead
    end for the Baidu tool's id-labeled files) the two ways in: the names written into the file, or the ids
    pinned as the class names."""
    opts = IngestOptions(classes=("合规", "夸大宣传", "违禁词"), format="jsonl", text_col="内容", label_col="类别")
    with pytest.raises(KdError, match=r"^t\.jsonl: line 1: field '类别': unknown label '2' \(pinned classes: 合规, 夸大宣传, 违禁词\): "
                                      r"labels are class names, not ids \('2' is the id of '违禁词'\): write the class names "
                                      r"into the file, or give --classes a file of the ids \(0, 1, ... one a line\) to make them the names$"):
        parse('{"内容": "最好的", "类别": 2}\n'.encode(), "t.jsonl", opts)
    with pytest.raises(KdError, match=r"unknown label '7' \(pinned classes: 合规, 夸大宣传, 违禁词\)$"):
        parse('{"内容": "最好的", "类别": 7}\n'.encode(), "t.jsonl", opts)


@pytest.mark.parametrize("data", [b"", b"\n \n", b"\xef\xbb\xbf"])
def test_parse_empty_file_is_refused(data):
    with pytest.raises(KdError, match="e.tsv: no rows to ingest"):
        parse(data, "e.tsv", IngestOptions())


def test_detect_format():
    assert detect_format("a.CSV", None) == "csv"
    assert detect_format("a.jsonl", None) == "jsonl"
    assert detect_format("a.txt", None) == "tsv"
    assert detect_format("<stdin>", None) == "tsv"
    assert detect_format("a.tsv", "csv") == "csv"
    with pytest.raises(KdError, match="unknown format 'xml'"):
        detect_format("a.tsv", "xml")


def test_read_class_file_forms(tmp_path):
    (tmp_path / "a.txt").write_text("0\tneg\n1\tpos\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("neg\t0\npos\t1\n", encoding="utf-8")
    (tmp_path / "c.txt").write_text("neg\n\npos\n", encoding="utf-8")
    for name in ("a.txt", "b.txt", "c.txt"):
        assert read_class_file(tmp_path / name) == ("neg", "pos")
    (tmp_path / "gap.txt").write_text("0\tneg\n2\tpos\n", encoding="utf-8")
    with pytest.raises(KdError, match="0..K-1"):
        read_class_file(tmp_path / "gap.txt")
    (tmp_path / "dup.txt").write_text("neg\nneg\n", encoding="utf-8")
    with pytest.raises(KdError, match="distinct"):
        read_class_file(tmp_path / "dup.txt")
    assert format_class_file(["neg", "pos"]) == "0\tneg\n1\tpos\n"
    (tmp_path / "round.txt").write_text(format_class_file(["b", "a", "c"]), encoding="utf-8")
    assert read_class_file(tmp_path / "round.txt") == ("b", "a", "c")
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbf0\tpos\r\n1\tneg\r\n")  # as a spreadsheet or Notepad saves it
    assert read_class_file(tmp_path / "bom.txt") == ("pos", "neg")
    (tmp_path / "twice.txt").write_text("0\ta\n\n0\tb\n1\tc\n", encoding="utf-8")  # was ('b', 'c'): 'a' lost
    with pytest.raises(KdError, match=r"twice\.txt: line 3: class id 0 is given twice \('a' and 'b'\)"):
        read_class_file(tmp_path / "twice.txt")


def test_read_class_file_in_gbk_or_utf16_names_the_line_and_the_conversion(tmp_path):
    """A class file saved by Notepad on Chinese Windows (GBK, or UTF-16 as "Unicode") gave Python's
    "'utf-8' codec can't decode byte 0xd5 in position 2": no line, no way forward, unlike a data file."""
    (tmp_path / "gbk.txt").write_bytes("0\t正面\n1\t负面\n".encode("gbk"))
    with pytest.raises(KdError, match=r"gbk\.txt: line 1: not valid UTF-8 \(byte 0xd5\); it reads as GBK/GB18030.*iconv -f GB18030"):
        read_class_file(tmp_path / "gbk.txt")
    (tmp_path / "utf16.txt").write_bytes("0\t正面\n".encode("utf-16"))
    with pytest.raises(KdError, match=r"utf16\.txt: line 1: the file is UTF-16 encoded: convert it to UTF-8 first, e\.g\. "
                                      r"iconv -f UTF-16 -t UTF-8 .*utf16\.txt > .*utf8-utf16\.txt$"):
        read_class_file(tmp_path / "utf16.txt")


def test_read_class_file_of_ids_and_names_without_a_tab_is_refused(tmp_path):
    """`kd classes` copied from a terminal turns its tabs into spaces: '0 neg' and '1 pos' were pinned,
    for good, as two classes of those names (an unlabeled ingest stored them without a word)."""
    for name, text in (("spaces.txt", "\n0 neg\n1  pos\n"), ("commas.txt", "0,neg\n1,pos\n"), ("colons.txt", "0: neg\n1: pos\n")):
        (tmp_path / name).write_text(text, encoding="utf-8")
        with pytest.raises(KdError, match=rf"{name}: line \d: '0[ ,:]+neg' looks like an id and a name with no tab between them"):
            read_class_file(tmp_path / name)
    for name, text in (("name-first.txt", "neg,0\npos,1\n"), ("name-colon.txt", "负面: 0\n正面: 1\n")):  # (pinned as 'neg,0', 'pos,1')
        (tmp_path / name).write_text(text, encoding="utf-8")
        with pytest.raises(KdError, match=rf"{name}: line 1: '[^']+' looks like an id and a name with no tab between them"):
            read_class_file(tmp_path / name)
    (tmp_path / "stars.txt").write_text("1 star\n2 stars\n3 stars\n", encoding="utf-8")  # names, not ids from 0
    assert read_class_file(tmp_path / "stars.txt") == ("1 star", "2 stars", "3 stars")
    (tmp_path / "levels.txt").write_text("level 0\nlevel 1\n", encoding="utf-8")  # names ending in a number
    assert read_class_file(tmp_path / "levels.txt") == ("level 0", "level 1")


def test_normalize_and_text_hash():
    assert normalize("  ＨＥＬＬＯ\u3000 World！ ") == "hello world!"
    assert text_hash("Hello World!") == text_hash("ＨＥＬＬＯ\u3000\u00a0world！")
    assert text_hash("hello world") != text_hash("hello  worlds")
    assert len(text_hash("x")) == 32
    # (copied from web pages: a zero-width space, joiner, soft hyphen or BOM; no model reads them)
    assert text_hash("好\u200b评\u00ad") == text_hash("\ufeff好评") == text_hash("好评\u200d") == text_hash("好评")
    assert text_hash("好 评") != text_hash("好评") and normalize("a\tb\u200b") == "a b"
    assert text_hash("\u2764\ufe0f好评") == text_hash("\u2764好评")  # (an emoji's variation selector: the same heart)


# kd ingest through the CLI -------------------------------------------------------------------


def test_headerless_tsv_round_trip(invoke, write_file, read_samples, read_classes, counts):
    write_file("train.tsv", "pos\tgood phone\nneg\tbad battery\n\nmid\tso so\npos\tgreat screen\n")
    report = invoke.json(["ingest", "train.tsv"])
    assert report["read"] == 4 and report["added"] == 4 and report["duplicates"] == 0
    assert report["split"] == "train" and report["source"] == "train.tsv"
    assert report["new_classes"] == ["pos", "neg", "mid"]
    assert report["added_per_class"] == {"pos": 2, "neg": 1, "mid": 1}
    assert report["store"] == {"train": {"pos": 2, "neg": 1, "mid": 1}}

    assert read_classes() == [(0, "pos"), (1, "neg"), (2, "mid")]
    rows = read_samples()
    assert [(r["text"], r["label"], r["split"], r["source"], r["line"]) for r in rows] == [
        ("good phone", "pos", "train", "train.tsv", 1),
        ("bad battery", "neg", "train", "train.tsv", 2),
        ("so so", "mid", "train", "train.tsv", 4),
        ("great screen", "pos", "train", "train.tsv", 5),
    ]
    assert all(r["orig_label_id"] == r["label_id"] for r in rows)
    assert all(r["dropped"] is False and r["meta"] is None for r in rows)
    assert all(r["text_hash"] == text_hash(r["text"]) for r in rows)

    # a second file keeps the class ids and adds new ones after them
    write_file("dev.tsv", "neg\tnot good\nnew\tbrand new class\n")
    report = invoke.json(["ingest", "dev.tsv", "--split", "dev"])
    assert report["new_classes"] == ["new"]
    assert read_classes() == [(0, "pos"), (1, "neg"), (2, "mid"), (3, "new")]
    assert [r["split"] for r in read_samples()][-2:] == ["dev", "dev"]
    assert counts()["samples"] == 6


def test_plain_output_summarizes(invoke, write_file):
    write_file("train.tsv", "pos\tgood\nneg\tbad\n")
    out = invoke(["ingest", "train.tsv"]).stdout
    assert "read 2, added 2" in out and "0 duplicates" in out


def test_csv_with_header_by_column_name(invoke, write_file, read_samples, read_classes):
    write_file(
        "reviews.csv",
        'id,review,sentiment,lang\n1,"Nice, really nice",pos,en\n2,Awful,neg,en\n',
    )
    report = invoke.json(
        ["ingest", "reviews.csv", "--text-col", "review", "--label-col", "sentiment"]
    )
    assert report["added"] == 2
    rows = read_samples()
    assert [(r["text"], r["label"], r["line"], r["meta"]) for r in rows] == [
        ("Nice, really nice", "pos", 2, {"id": "1", "lang": "en"}),
        ("Awful", "neg", 3, {"id": "2", "lang": "en"}),
    ]
    assert read_classes() == [(0, "pos"), (1, "neg")]


def test_csv_default_text_and_label_columns(invoke, write_file, read_samples):
    write_file("d.csv", "label,text,who\nneg,meh,ann\n")
    invoke(["ingest", "d.csv"])
    [row] = read_samples()
    assert (row["text"], row["label"], row["meta"]) == ("meh", "neg", {"who": "ann"})


def test_jsonl(invoke, write_file, read_samples):
    write_file(
        "d.jsonl",
        '{"text": "first", "label": "pos", "user": 7}\n{"text": "second", "label": "neg"}\n',
    )
    report = invoke.json(["ingest", "d.jsonl", "--split", "test"])
    assert report["added"] == 2
    rows = read_samples()
    assert [(r["text"], r["label"], r["split"], r["line"], r["meta"]) for r in rows] == [
        ("first", "pos", "test", 1, {"user": 7}),
        ("second", "neg", "test", 2, None),
    ]


@pytest.mark.new_database
def test_jsonl_without_the_default_keys_names_the_keys_it_has_and_the_option(invoke, write_file, read_samples, error_line):
    """A pool of {"doc_id": .., "body": ..} lines said only "field 'text': missing" (the CSV path names
    the columns and --label-col): the user was not told how to name the key."""
    write_file("pool.jsonl", '{"doc_id": 1, "body": "新闻正文"}\n')
    result = invoke(["ingest", "pool.jsonl", "--split", "unlabeled"], ok=False)
    assert error_line(result) == "Error: pool.jsonl: line 1: field 'text': missing (keys: 'doc_id', 'body'); name it with --text-col"
    write_file("news.jsonl", '{"body": "新闻正文", "category": "体育"}\n')
    result = invoke(["ingest", "news.jsonl", "--text-col", "body"], ok=False)
    assert error_line(result) == (
        "Error: news.jsonl: line 1: field 'label': missing label (keys: 'body', 'category'); name it with --label-col; "
        "or --split unlabeled for texts without labels")
    assert not store_exists(invoke.db)
    # a key kd was told names the keys the line has (not the option it was given); one present but empty: the plain message
    assert error_line(invoke(["ingest", "pool.jsonl", "--text-col", "text"], ok=False)) == (
        "Error: pool.jsonl: line 1: field 'text': missing (keys: 'doc_id', 'body')")
    write_file("nested.jsonl", '{"data": {"text": "正文"}, "label": "体育"}\n')  # a path into an object is no key kd reads
    assert error_line(invoke(["ingest", "nested.jsonl", "--text-col", "data.text"], ok=False)) == (
        "Error: nested.jsonl: line 1: field 'data.text': missing (keys: 'data', 'label'): kd reads top-level keys only, "
        "not a path into the object 'data' (flatten the lines first, e.g. with jq)")
    write_file("empty.jsonl", '{"text": "正文", "label": ""}\n')
    assert error_line(invoke(["ingest", "empty.jsonl"], ok=False)) == "Error: empty.jsonl: line 1: field 'label': missing label"
    invoke(["ingest", "news.jsonl", "--text-col", "body", "--label-col", "category"])
    assert [(r["text"], r["label"]) for r in read_samples()] == [("新闻正文", "体育")]


@pytest.mark.new_database
def test_jsonl_with_a_null_text_says_null_not_missing(invoke, write_file, error_line):
    """A pool exported by pandas (`to_json(orient="records", lines=True)`) writes an empty text as null: the
    error said the key was "missing" from a line that holds it (kd predict says "is null, not text")."""
    write_file("pool.jsonl", '{"id": 1, "content": "很好"}\n{"id": 2, "content": null}\n')
    assert error_line(invoke(["ingest", "pool.jsonl", "--split", "unlabeled", "--text-col", "content"], ok=False)) == (
        "Error: pool.jsonl: line 2: field 'content': null, not text")
    assert not store_exists(invoke.db)


@pytest.mark.new_database
def test_jsonl_with_a_mistyped_key_option_names_the_keys_it_has(invoke, write_file, error_line):
    """`--label-col lable` (or `--text-col txt`) on a JSONL said only "field 'lable': missing label; or --split
    unlabeled ...", where a CSV with that header lists its columns: the user was not shown the keys to pick from."""
    write_file("ads.jsonl", '{"text": "全网最低价", "label": "夸大宣传"}\n{"text": "本店支持退换", "label": "合规"}\n')
    assert error_line(invoke(["ingest", "ads.jsonl", "--label-col", "lable"], ok=False)) == (
        "Error: ads.jsonl: line 1: field 'lable': missing label (keys: 'text', 'label'); "
        "or --split unlabeled for texts without labels")
    assert error_line(invoke(["ingest", "ads.jsonl", "--text-col", "txt"], ok=False)) == (
        "Error: ads.jsonl: line 1: field 'txt': missing (keys: 'text', 'label')")
    assert error_line(invoke(["ingest", "ads.jsonl", "--text-col", "txt", "--split", "unlabeled"], ok=False)) == (
        "Error: ads.jsonl: line 1: field 'txt': missing (keys: 'text', 'label')")
    assert not store_exists(invoke.db)


@pytest.mark.new_database
def test_a_pool_ingested_without_split_unlabeled_is_told_so(invoke, write_file, error_line):
    """A new user's unlabeled pool, ingested without --split (train): the error said only to name a
    label column with --label-col, which a file of texts does not have."""
    write_file("pool.jsonl", '{"id": 0, "text": "全网最好的洗发水"}\n{"id": 1, "text": "本店支持七天无理由退货"}\n')
    write_file("pool.csv", "text\n全网最好的洗发水\n本店支持七天无理由退货\n")
    write_file("pool.txt", "全网最好的洗发水\n本店支持七天无理由退货\n")
    for path in ("pool.jsonl", "pool.csv", "pool.txt"):
        line = error_line(invoke(["ingest", path], ok=False))
        assert line.startswith(f"Error: {path}: line 1: field 'label': ") and line.endswith(
            "; or --split unlabeled for texts without labels"), line
    assert not store_exists(invoke.db)
    # a label missing on a later line is that row's error, not a pool's
    write_file("late.jsonl", '{"text": "a", "label": "pos"}\n{"text": "b"}\n')
    assert "or --split unlabeled for texts without labels" not in error_line(invoke(["ingest", "late.jsonl"], ok=False))


@pytest.mark.new_database
def test_a_jsonl_of_labeled_and_unlabeled_rows_is_told_to_ingest_the_unlabeled_apart(invoke, write_file, error_line):
    """An ad-compliance export whose unlabeled rows have no "label" key (or a null one) said, at the
    first of them, "(keys: 'text', 'meta'); name it with --label-col": the label key, named on every
    line before it, was not the problem, and the error did not say what was."""
    hint = ("missing label (the lines before it have one: a file of labeled and unlabeled rows? "
            "ingest its unlabeled rows apart, with --split unlabeled)")
    write_file("ads.jsonl", '{"text": "全网最低价", "label": "exaggeration", "meta": {"source": "jd"}}\n'
                            '{"text": "国家级产品", "meta": {"source": "jd"}}\n')
    assert error_line(invoke(["ingest", "ads.jsonl"], ok=False)) == f"Error: ads.jsonl: line 2: field 'label': {hint}"
    write_file("nulls.jsonl", '{"text": "全网最低价", "label": "exaggeration"}\n{"text": "国家级产品", "label": null}\n')
    assert error_line(invoke(["ingest", "nulls.jsonl"], ok=False)) == f"Error: nulls.jsonl: line 2: field 'label': {hint}"
    assert not store_exists(invoke.db)


def test_the_counts_after_an_ingest_say_that_dropped_samples_are_left_out(invoke, write_file):
    """A file ingested again after a clean dropped one of its rows: "read 3, added 0, skipped 3 duplicates" over a
    table whose train held 2, with no word of the third."""
    write_file("train.tsv", "pos\tgood one\nneg\tbad one\npos\tfine one\n")
    first = invoke(["ingest", "train.tsv"]).stdout
    assert "dropped" not in first
    invoke(["labels", "set", "--run", "r", "1=drop"])
    again = invoke(["ingest", "train.tsv"]).stdout
    assert "skipped 3 duplicates" in again and "│ train │   1 │   1 │     2 │" in again, again
    assert "1 dropped sample left out (`kd samples --dropped --where dropped` lists it)" in again, again


def test_the_command_the_counts_name_for_dropped_samples_lists_them(invoke, write_file):
    """The table under an ingest said "`kd samples --dropped` lists them", which listed the first 20 samples with
    the dropped ones among them: a sample dropped past the 20th was in none of its rows."""
    write_file("train.tsv", "".join(f"{'pos' if i % 2 else 'neg'}\t第{i}条评论\n" for i in range(30)))
    invoke(["ingest", "train.tsv"])
    invoke(["labels", "set", "--run", "r", "28=drop"])
    again = invoke(["ingest", "train.tsv"]).stdout
    named = re.search(r"`kd (samples[^`]*)` lists it", again)
    assert named, again
    assert [r["id"] for r in invoke.json([*named.group(1).split(), "--json"])] == [28]


def test_samples_that_only_dropped_samples_match_say_so(invoke, write_file):
    """`kd samples --where dropped` (a column --where lists) or `--where "id = 1"` for a sample dropped
    by hand printed an empty table, no word why: dropped samples are left out without --dropped, so
    "none dropped" read as the answer."""
    write_file("train.tsv", "pos\tgood one\nneg\tbad one\n")
    invoke(["ingest", "train.tsv"])
    invoke(["labels", "set", "--run", "r", "1=drop"])
    for where in ("dropped", "id = 1"):
        empty = invoke(["samples", "--where", where])
        # (not "`kd samples --dropped` lists it": that lists the first 20 samples, whatever --where chose)
        assert empty.stderr == "note: no sample matches but 1 dropped sample, left out (add --dropped to list it)\n", empty.stderr
        assert [r["id"] for r in invoke.json(["samples", "--where", where, "--dropped"])] == [1]
    assert invoke(["samples", "--where", "id = 5"]).stderr == ""  # none at all: nothing to say


def test_samples_that_list_nothing_say_why(invoke, write_file):
    """`kd samples --split test` before any test file was ingested, or `--split dev --label neg` where dev holds
    none, printed an empty table (or []) and no word: read as an answer about the data, not about the store."""
    write_file("classes.txt", "pos\nneg\nmid\n")
    write_file("train.tsv", "pos\tgood one\nneg\tbad one\n")
    write_file("dev.tsv", "pos\tfine\n")
    invoke(["ingest", "train.tsv", "--classes", "classes.txt"])
    invoke(["ingest", "dev.tsv", "--split", "dev"])
    empty = invoke(["samples", "--split", "test", "--json"])
    assert json.loads(empty.stdout) == [] and empty.stderr == (
        "note: the store holds no test samples: `kd ingest FILE --split test` adds them\n")
    assert invoke(["samples", "--split", "augmented"]).stderr == (
        "note: the store holds no augmented texts: `kd distill --augment` makes them\n")
    assert invoke(["samples", "--split", "dev", "--label", "neg"]).stderr == "note: no dev sample is labeled 'neg' (dev samples: pos 1)\n"
    assert invoke(["samples", "--label", "mid"]).stderr == "note: no sample is labeled 'mid' (labeled samples: pos 2, neg 1)\n"
    assert invoke(["samples", "--split", "dev", "--where", "id > 99"]).stderr == ""  # a --where that matches none: the answer
    invoke(["labels", "set", "--run", "r", "3=drop"])  # dev's only sample, a pos
    assert invoke(["samples", "--split", "dev", "--label", "neg", "--dropped"]).stderr == (
        "note: no dev sample is labeled 'neg' (dev samples: 1 dropped sample)\n")


def test_samples_note_on_a_dropped_split_names_a_way_that_lists_them(invoke, write_file):
    """A split of dropped samples alone: `--label neg` of a dev set whose one sample (a pos) is dropped was told
    "add --dropped to list it", which listed nothing again; `--tsv` was told the same, and --tsv refuses --dropped."""
    write_file("train.tsv", "pos\tgood one\nneg\tbad one\n")
    write_file("dev.tsv", "pos\tfine\n")
    invoke(["ingest", "train.tsv"])
    invoke(["ingest", "dev.tsv", "--split", "dev"])
    invoke(["labels", "set", "--run", "r", "3=drop"])  # dev's only sample, a pos
    assert invoke(["samples", "--split", "dev", "--label", "neg"]).stderr == (
        "note: no dev sample is labeled 'neg' (dev samples: 1 dropped sample)\n")
    for asked in (["--split", "dev", "--tsv"], ["--split", "dev", "--label", "pos", "--tsv"]):
        assert invoke(["samples", *asked]).stderr == (
            "note: the store's dev samples are all dropped: 1 sample, left out (`kd samples --split dev --dropped --json` lists it)\n"), asked
    assert invoke(["samples", "--split", "dev", "--label", "neg", "--tsv"]).stderr == (
        "note: no dev sample is labeled 'neg' (dev samples: 1 dropped sample)\n")


def test_stdin(invoke, read_samples):
    report = invoke.json(["ingest", "-"], input="pos\tfrom stdin\nneg\talso stdin\n")
    assert report["added"] == 2 and report["source"] == "stdin"
    invoke(["ingest", "-", "--format", "jsonl", "--source", "pipe"], input='{"text": "j", "label": "pos"}\n')
    rows = read_samples()
    assert [(r["text"], r["label"], r["source"], r["line"]) for r in rows] == [
        ("from stdin", "pos", "stdin", 1),
        ("also stdin", "neg", "stdin", 2),
        ("j", "pos", "pipe", 1),
    ]


def test_stdin_error_names_stdin(invoke, write_file, counts, error_line):
    write_file("train.tsv", "pos\tgood\n")
    invoke(["ingest", "train.tsv"])
    before = counts()
    result = invoke(["ingest", "-"], input="pos\tok\nneg\t\n", ok=False)
    line = error_line(result)
    assert "<stdin>" in line and "line 2" in line and "empty text" in line
    assert counts() == before


def test_csv_on_stdin_without_format_is_refused_not_read_as_one_column(invoke, counts, read_samples, error_line):
    """stdin is TSV by default: a piped CSV pool kept its header `text,label` as a text, and each
    row's label glued to its text; a labeled one said only that a label column was missing."""
    invoke(["ingest", "-"], input="pos\tgood\n")
    before = (counts(), read_samples())
    for split in ("unlabeled", "train"):
        line = error_line(invoke(["ingest", "-", "--split", split], input='text,label\n"好, 很好",pos\n', ok=False))
        assert line.startswith("Error: <stdin>: line 1: field 0:") and "--format csv" in line, line
        assert (counts(), read_samples()) == before
    invoke(["ingest", "-", "--format", "csv", "--split", "unlabeled"], input='text,label\n"好, 很好",pos\n')
    assert [r["text"] for r in read_samples()][1:] == ["好, 很好"]
    invoke(["ingest", "-", "--split", "unlabeled"], input="你好,世界\n")  # a text with a comma: as before
    assert [r["text"] for r in read_samples()][2:] == ["你好,世界"]


def test_unlabeled_one_column(invoke, write_file, read_samples, read_classes):
    write_file("pool.txt", "第一条文本\nsecond text\n")
    report = invoke.json(["ingest", "pool.txt", "--split", "unlabeled"])
    assert report["added"] == 2 and report["new_classes"] == []
    rows = read_samples()
    assert [(r["text"], r["label_id"], r["orig_label_id"], r["split"]) for r in rows] == [
        ("第一条文本", None, None, "unlabeled"),
        ("second text", None, None, "unlabeled"),
    ]
    assert read_classes() == []
    assert report["store"] == {"unlabeled": {"(none)": 2}}


def test_a_bare_carriage_return_inside_a_line_of_a_newline_file_stays_in_its_text(invoke, write_file, read_samples):
    """A stray \\r inside a line of a \\n file stays in that line's text, as a file read line by line
    keeps it and as kd predict reads the line: a pool (or CSV, or TSV) that the csv module read (a field
    with doubled quotes, a .csv) was cut at it, one text silently made two and the lines after it misnumbered."""
    write_file("pool.txt", '"他说""好"""\n第二条\r文本中间\n第三条\n'.encode())
    invoke(["ingest", "pool.txt", "--split", "unlabeled"])
    assert [(r["text"], r["line"]) for r in read_samples()] == [('他说"好"', 1), ("第二条\r文本中间", 2), ("第三条", 3)]
    records = parse("text\n第一条\n第二条\r文本\n第三条\n".encode(), "p.csv", IngestOptions(split="unlabeled"))
    assert [(r.text, r.line) for r in records] == [("第一条", 2), ("第二条\r文本", 3), ("第三条", 4)]
    records = parse("text,label\n第一条,pos\n第二条\r文本,neg\n\"三\r\n行\",pos\n".encode(), "t.csv", IngestOptions())
    assert [(r.text, r.label, r.line) for r in records] == [("第一条", "pos", 2), ("第二条\r文本", "neg", 3), ("三\r\n行", "pos", 4)]
    records = parse('pos\t"他说""好"""\nneg\t第二条\r文本\n'.encode(), "t.tsv", IngestOptions())
    assert [(r.text, r.label, r.line) for r in records] == [('他说"好"', "pos", 1), ("第二条\r文本", "neg", 2)]
    # (a file of \r\n line ends, or of bare \r ones, reads as before)
    records = parse('text,label\r\n"多\r\n行",pos\r\n好,neg\r\n'.encode(), "w.csv", IngestOptions())
    assert [(r.text, r.line) for r in records] == [("多\r\n行", 2), ("好", 4)]
    assert [r.text for r in parse(b"text,label\ra,pos\rb,neg\r", "mac.csv", IngestOptions())] == ["a", "b"]


@pytest.mark.new_database
def test_old_mac_line_ends_with_one_newline_added_are_refused_not_one_text(invoke, write_file, db):
    """A pool of old Mac line ends (bare \\r) with a \\n added at its end (`echo >>`, files joined) is a
    \\n file: each bare \\r stayed in its line, and 50 reviews were ingested as one text ("read 1"), with
    no ragged row to tell, since a pool has one column."""
    texts = [f"第{i}条评论，质量很好" for i in range(50)]
    write_file("mac.txt", ("\r".join(texts) + "\n").encode())
    result = invoke(["ingest", "mac.txt", "--split", "unlabeled"], ok=False)
    assert "Error: mac.txt: line 1: 49 bare carriage returns (\\r) against 1 line end in \\n" in result.stderr
    assert "mac2unix" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not store_exists(db)
    write_file("mac.csv", ("text\r" + "\r".join(texts) + "\n").encode())
    invoke(["ingest", "mac.csv", "--split", "unlabeled"], ok=False)
    # (a few stray \r inside the lines of a \n file still stay in their texts)
    write_file("pool.txt", "第一条\r中间\n第二条\n第三条\r中间\n".encode())
    invoke(["ingest", "pool.txt", "--split", "unlabeled"])


def test_texts_holding_more_bare_carriage_returns_than_rows_are_no_old_mac_lines(invoke, write_file, read_samples):
    """Reviews whose paragraphs a bare \\r breaks, in a CSV's quoted cells or in the text column of a
    label<TAB>text file, were refused as old Mac line ends once the \\r outnumbered the rows ("8 bare carriage
    returns against 4 line ends"), though each row reads unambiguously (and was read before the refusal)."""
    write_file("cr.csv", 'text,label\n"本本不错，\r散热好，\r到货快，\r很满意",pos\n"房间，\r气味大",neg\n"很好，\r很好",pos\n'.encode())
    invoke(["ingest", "cr.csv"])
    write_file("cr.tsv", "pos\t样子不错，\r配置强，\r很轻\nneg\t通风不好，\r气味大\n".encode())
    invoke(["ingest", "cr.tsv"])
    assert [r["text"] for r in read_samples()] == ["本本不错，\r散热好，\r到货快，\r很满意", "房间，\r气味大", "很好，\r很好",
                                                   "样子不错，\r配置强，\r很轻", "通风不好，\r气味大"]
    # (old Mac rows of two columns, a \n added at the end, are still refused)
    write_file("mac.tsv", "pos\t很好\rneg\t很差\rpos\t不错\n".encode())
    invoke(["ingest", "mac.tsv"], ok=False)


def test_old_mac_rows_with_a_line_break_in_a_quoted_cell_are_read(invoke, write_file, read_samples, db):
    """Excel for Mac (2011) ends its CSV and TSV rows in a bare \\r and writes a cell's Alt+Enter line break as a
    \\n in quotes: the CSV was refused as "3 bare carriage returns (\\r) against 0 line end in \\n: old Mac line
    ends mixed with \\n ones", the TSV cut at the cell's \\n (its header read as 'label', 'textpos', '"第一行')."""
    write_file("mac.csv", 'text,label\r"第一行\n第二行",pos\r很差,neg\r'.encode())
    invoke(["ingest", "mac.csv"])
    write_file("mac.tsv", 'label\ttext\rpos\t"第三行\n第四行"\rneg\t他说"好"\r'.encode())
    invoke(["ingest", "mac.tsv"])
    assert [(r["text"], r["label"], r["line"]) for r in read_samples()] == [
        ("第一行\n第二行", "pos", 2), ("很差", "neg", 4), ("第三行\n第四行", "pos", 2), ('他说"好"', "neg", 4)]


def test_a_large_old_mac_labeled_file_is_refused_at_once():
    """A 40,000-row label<TAB>text file of old Mac line ends with a \\n added: each bare \\r looked back to the
    line's start and on to its end for a tab, past every other \\r, to the file's one \\n: 11 s here, and
    a 300k-row file some 20 minutes before the refusal (the check ran on every TSV holding a bare \\r)."""
    rows = "".join(f"{'pos' if i % 2 else 'neg'}\t第{i}条评论，{'质量很好，物流也快，' * 10}\r" for i in range(40_000)) + "pos\t加上的一行\n"
    started = time.monotonic()
    with pytest.raises(KdError, match=r"^mac\.tsv: line 1: 40000 bare carriage returns"):
        parse(rows.encode(), "mac.tsv", IngestOptions())
    assert time.monotonic() - started < 5


def test_unlabeled_two_columns_drops_label(invoke, write_file, read_samples, read_classes):
    write_file("pool.tsv", "pos\tfirst text\nneg\tsecond text\n")
    invoke(["ingest", "pool.tsv", "--split", "unlabeled"])
    rows = read_samples()
    assert [(r["text"], r["label_id"]) for r in rows] == [("first text", None), ("second text", None)]
    assert read_classes() == []


def test_tables_show_names_and_texts_as_they_are(invoke, write_file):
    """Rich's markup escape doubles a trailing backslash (meant for a tag after it): a class
    ``neg\\`` was shown as ``neg\\\\`` in every table, and ``[b]`` in a text is not markup."""
    write_file("odd.tsv", "neg\\\t[b]bold?\\\npos\tfine\n")
    invoke(["ingest", "odd.tsv"])
    out = invoke(["samples"]).stdout
    assert "neg\\ " in out and "neg\\\\" not in out
    assert "[b]bold?\\ " in out and "bold?\\\\" not in out
    counts = invoke(["ingest", "odd.tsv"]).stdout  # the store's counts table: a column per class
    assert "neg\\ " in counts and "neg\\\\" not in counts


def test_exact_duplicates_are_skipped_and_counted(invoke, write_file, read_samples):
    write_file(
        "train.tsv",
        "pos\tHello World!\n"
        "pos\tＨＥＬＬＯ　ＷＯＲＬＤ！\n"  # full-width letters, ideographic space, full-width '!'
        "pos\t  hello    world!  \n"  # case, runs of spaces, padding
        "neg\t质量很好！\n"
        "neg\t质量很好!\n",
    )
    report = invoke.json(["ingest", "train.tsv"])
    assert (report["read"], report["added"], report["duplicates"]) == (5, 2, 3)
    assert report["conflicts"] == []
    assert [r["text"] for r in read_samples()] == ["Hello World!", "质量很好！"]

    # ingesting the same file again adds nothing and changes nothing
    before = read_samples()
    report = invoke.json(["ingest", "train.tsv"])
    assert (report["added"], report["duplicates"]) == (0, 5)
    assert read_samples() == before

    # a duplicate in another split is still a duplicate (the first occurrence wins), and the report
    # says where it is kept: a dev or test set shrunk by texts already in train is not shrunk unseen
    write_file("dev.tsv", "pos\thello world!\npos\tnew dev text\npos\tnew dev text\n")
    report = invoke.json(["ingest", "dev.tsv", "--split", "dev"])
    assert (report["added"], report["duplicates"], report["duplicates_in"]) == (1, 2, {"train": 1, "dev": 1})
    write_file("dev2.tsv", "pos\tHELLO WORLD!\n")
    assert "1 in train" in invoke(["ingest", "dev2.tsv", "--split", "dev"]).stdout


def test_duplicates_are_looked_up_by_hash_not_by_reading_every_stored_row(invoke, write_file, db, monkeypatch):
    """A 2-row ingest into a big store read every stored row into a dict (1.3 s and 240 MB at 700k
    samples); the stored texts are looked up by hash, in chunks, with the same report."""
    import kdstore.ingest as ingest_mod
    from sqlalchemy import event
    from kdstore.store import Store

    write_file("train.tsv", "".join(f"pos\ttext {i}\n" for i in range(7)))
    invoke(["ingest", "train.tsv"])
    monkeypatch.setattr(ingest_mod, "ID_CHUNK", 2)  # the lookup spans several IN lists
    more = write_file("more.tsv", "pos\tTEXT 1\nneg\ttext 5\npos\tnew\npos\tnew\npos\ttext 6\n")
    store = Store.open(db)
    fetched = []
    event.listen(store.engine, "after_cursor_execute",
                 lambda conn, cursor, stmt, *a: fetched.append(stmt) if "FROM samples" in stmt else None)
    report = ingest_mod.add_records(store, ingest_mod.parse(more.read_bytes(), "more.tsv", IngestOptions()),
                                    "more.tsv", IngestOptions())
    store.close()
    assert (report.added, report.duplicates, report.duplicates_in) == (1, 3, {"train": 3})
    assert [(c["line"], c["kept_from"]) for c in report.conflicts] == [(2, "train.tsv:6")]
    assert fetched and all("text_hash IN" in stmt for stmt in fetched)


def test_samples_json_is_written_in_pieces_and_reads_back_whole(invoke, write_file, monkeypatch):
    """`kd samples --limit 0 --json` built the whole document as one string first: 1.7 GB of memory
    for 700k samples (0.7 GB written in pieces), then its items and their copy for encoding (560 MB
    for 300k). Items looked up and written a block at a time make the same document."""
    import json

    import click

    import commands.common as common
    import commands.data as data

    write_file("train.tsv", "".join(f"{'pos' if i % 2 else 'neg'}\t评论 {i} \"引号\"\\n\n" for i in range(30)))
    invoke(["ingest", "train.tsv"])
    writes = []
    echo = click.echo
    monkeypatch.setattr(common, "JSON_ITEMS", 4)
    monkeypatch.setattr(data, "ITEM_BLOCK", 7)
    monkeypatch.setattr(click, "echo", lambda message=None, **kw: (writes.append(message), echo(message, **kw))[1])
    out = invoke(["samples", "--limit", "0", "--json"]).stdout
    items = json.loads(out)
    assert [i["text"] for i in items] == [f'评论 {i} "引号"\\n' for i in range(30)]
    assert [i["line"] for i in items] == list(range(1, 31))  # (each block's origins, not only the first's)
    assert out == json.dumps(items, ensure_ascii=False, indent=2) + "\n"
    assert len(writes) > 7
    assert invoke(["samples", "--limit", "0", "--json", "--where", "id < 0"]).stdout == "[]\n"


def test_conflict_is_listed_and_first_label_kept(invoke, write_file, read_samples, read_classes):
    write_file("train.tsv", "pos\tnice phone\nneg\tNICE  PHONE\nneg\tbad\n")
    report = invoke.json(["ingest", "train.tsv"])
    assert report["added"] == 2 and report["duplicates"] == 0
    assert report["conflicts"] == [
        {
            "line": 2,
            "text": "NICE  PHONE",
            "label": "neg",
            "kept_label": "pos",
            "kept_from": "train.tsv:1",
        }
    ]
    # and against the store, from another file
    write_file("more.tsv", "mid\tnice phone\n")
    report = invoke.json(["ingest", "more.tsv"])
    assert report["added"] == 0
    assert [(c["line"], c["label"], c["kept_label"], c["kept_from"]) for c in report["conflicts"]] == [
        (1, "mid", "pos", "train.tsv:1")
    ]
    assert [(r["text"], r["label"]) for r in read_samples()] == [("nice phone", "pos"), ("bad", "neg")]
    # a label seen only in a conflicting row does not become a class
    assert read_classes() == [(0, "pos"), (1, "neg")]


def test_take_pool_moves_annotated_pool_texts_into_train(invoke, write_file, read_samples, error_line):
    """An annotation round labels texts drawn from the pool: their labeled file was only conflicts ("which stays
    unlabeled"), and no way led on but a new store. --take-pool moves each into train with the file's label, as had
    the file come first; augmented and dropped pool texts, and any split but train, stay as they were."""
    write_file("train.tsv", "pos\t好吃\nneg\t难吃\n")
    invoke(["ingest", "train.tsv"])
    write_file("pool.txt", "还行\n一般\n太咸了\n凑合\n")
    invoke(["ingest", "pool.txt", "--split", "unlabeled"])
    invoke(["labels", "set", "--run", "r", "6=drop"])  # 凑合, dropped from the pool
    write_file("annotated.tsv", "pos\t还行\nneg\t太咸了\nneg\t凑合\npos\t很香\nmid\t一般\n")
    said = invoke(["ingest", "annotated.tsv"]).stdout
    # (not "moves them": the dropped one it leaves, and says why)
    assert ("4 conflicts with texts of the unlabeled pool, which stay unlabeled: --take-pool moves 3 of them into train with this "
            "file's labels (1 dropped: `kd labels undo` the drop first)") in " ".join(said.split()), said
    before = read_samples()
    refused = error_line(invoke(["ingest", "annotated.tsv", "--take-pool", "--split", "dev"], ok=False))
    assert refused == ("Error: --take-pool moves pool texts into train only (--split dev: students distilled on the pool learned "
                       "those texts from the teacher, and dev figures would count them)")
    assert read_samples() == before
    refused = error_line(invoke(["ingest", "annotated.tsv", "--take-pool", "--split", "unlabeled"], ok=False))
    assert refused == ("Error: --take-pool moves pool texts into train only (--split unlabeled: a pool text stays one; "
                       "the annotated file of pool texts is ingested with --split train --take-pool)")  # (not "unlabeled figures")
    assert read_samples() == before
    report = invoke.json(["ingest", "annotated.tsv", "--take-pool"])
    assert (report["added"], report["taken_from_pool"], report["duplicates"]) == (3, 3, 1)  # 很香 (new) was added before
    assert [(c["line"], c["kept_from"]) for c in report["conflicts"]] == [(3, "pool.txt:4")]  # the dropped one
    rows = {r["text"]: r for r in read_samples()}
    assert [(rows[t]["id"], rows[t]["split"], rows[t]["label"], rows[t]["source"], rows[t]["line"]) for t in ("还行", "一般", "太咸了")] == [
        (3, "train", "pos", "annotated.tsv", 1), (4, "train", "mid", "annotated.tsv", 5), (5, "train", "neg", "annotated.tsv", 2)]
    assert (rows["凑合"]["split"], rows["凑合"]["label"]) == ("unlabeled", None)
    assert invoke.json(["samples", "--split", "train", "--label", "mid"])[0]["id"] == 4  # a class the take added
    # on record: the sample's history says when, from which line and by whom it was taken
    from kdstore.runs import current_user

    said = invoke(["labels", "history", "3"]).stdout
    assert said.startswith("sample 3: original pos, now pos\n") and f"kd ingest by {current_user()}: taken from the pool into train, " \
        "labeled pos (kd ingest --take-pool: annotated.tsv:1)" in said, said
    # (who took it in "by", as a stage's edit has it: it was null, the name in the reason alone)
    assert [(e["action"], e["new"], e["stage"], e["by"], e["reason"]) for e in invoke.json(["labels", "history", "3", "--json"])["edits"]] == [
        ("take", "pos", None, current_user(), "kd ingest --take-pool: annotated.tsv:1")]
    # taken as ingested: the label it came with is its original one, and a second take is duplicates only
    again = invoke.json(["ingest", "annotated.tsv", "--take-pool"])
    assert (again["added"], again["taken_from_pool"], again["duplicates"]) == (0, 0, 4)


def test_take_pool_moves_a_text_augment_made_that_an_annotator_labeled(invoke, write_file, read_samples, db):
    """A short labeled text of a later annotation round (好吃) that `kd distill --augment` had made first, an n-gram of
    a train text: a conflict "which stays unlabeled: ingest labeled files before distilling", advice no ongoing
    annotation could follow. --take-pool takes it into train as it takes a pool text: no parent, no recipe's text."""
    from sqlalchemy import func, insert, select

    from kdstore.ingest import Record, add_records
    from kdstore.schema import AugmentedText
    from kdstore.store import Store

    write_file("t.tsv", "pos\t好吃，下次还来\nneg\t难吃\n")
    invoke(["ingest", "t.tsv"])
    store = Store.open(db)
    add_records(store, [Record(text="好吃", label=None, line=None, meta={"method": "ngram", "parent_label": "pos"}, parent_id=1)],
                "augment:ngram:n1", IngestOptions(split="unlabeled", source="augment:ngram:n1"))
    with store.engine.begin() as conn:  # (as ensure_augmented records a recipe's texts)
        conn.execute(insert(AugmentedText), [{"source": "augment:ngram:n1", "sample_id": 3}])
    write_file("round2.tsv", "pos\t好吃\nneg\t太咸\n")
    said = " ".join(invoke(["ingest", "round2.tsv"]).stdout.split())
    assert "1 conflict with a text `kd distill --augment` made, which stays unlabeled (--take-pool moves them into train " \
           "with this file's labels)" in said, said
    report = invoke.json(["ingest", "round2.tsv", "--take-pool"])
    assert (report["taken_from_pool"], report["conflicts"]) == (1, [])
    row = {r["id"]: r for r in read_samples()}[3]
    assert (row["split"], row["label"], row["parent_id"], row["source"], row["line"], row["meta"]) == ("train", "pos", None, "round2.tsv", 1, None)
    with store.engine.connect() as conn:  # (no recipe's text: a train sample)
        assert conn.execute(select(func.count()).select_from(AugmentedText)).scalar() == 0
    store.close()
    assert [e["action"] for e in invoke.json(["labels", "history", "3", "--json"])["edits"]] == ["take"]


def test_the_history_of_a_taken_text_augment_made_does_not_say_it_came_from_the_pool(invoke, write_file, db):
    """`kd labels history` of a text `kd distill --augment` made (an n-gram of sample 1) that --take-pool took into train
    said "taken from the pool into train": it was no pool text (a stage before the take had it as an augmented text,
    of its parent), and nothing said so once its parent and metadata were gone."""
    from sqlalchemy import insert

    from kdstore.ingest import Record, add_records
    from kdstore.schema import AugmentedText
    from kdstore.store import Store

    write_file("t.tsv", "pos\t好吃，下次还来\nneg\t难吃\n")
    invoke(["ingest", "t.tsv"])
    store = Store.open(db)
    add_records(store, [Record(text="好吃", label=None, line=None, meta={"method": "ngram", "parent_label": "pos"}, parent_id=1)],
                "augment:ngram:n1", IngestOptions(split="unlabeled", source="augment:ngram:n1"))
    with store.engine.begin() as conn:
        conn.execute(insert(AugmentedText), [{"source": "augment:ngram:n1", "sample_id": 3}])
    store.close()
    write_file("round2.tsv", "pos\t好吃\n")
    invoke(["ingest", "round2.tsv", "--take-pool"])
    said = invoke(["labels", "history", "3"]).stdout
    assert "from the pool" not in said and "taken into train, labeled pos" in said, said
    assert "a text `kd distill --augment` made of sample 1" in said, said
    edit = invoke.json(["labels", "history", "3", "--json"])["edits"][0]
    assert edit["action"] == "take" and edit["reason"].startswith("kd ingest --take-pool: round2.tsv:1"), edit


def test_a_take_keeps_the_pool_texts_metadata_beside_the_files(invoke, write_file, read_samples):
    """A pool ingested from JSONL with its own ids: a take gave the sample the annotated file's metadata alone (none
    for a TSV), and `--where "meta->>'pid' = ..."` found the taken texts no more. The pool's fields stay, the
    file's over them where both name one."""
    write_file("train.tsv", "pos\t很好\nneg\t很差\n")
    invoke(["ingest", "train.tsv"])
    write_file("pool.jsonl", '{"text": "还行", "pid": 7, "channel": "app"}\n{"text": "太咸了", "pid": 8, "channel": "web"}\n')
    invoke(["ingest", "pool.jsonl", "--split", "unlabeled"])
    write_file("round1.jsonl", '{"text": "还行", "label": "pos", "channel": "recheck", "annotator": "li"}\n')
    write_file("round2.tsv", "neg\t太咸了\n")
    assert invoke.json(["ingest", "round1.jsonl", "--take-pool"])["taken_from_pool"] == 1
    assert invoke.json(["ingest", "round2.tsv", "--take-pool"])["taken_from_pool"] == 1
    meta = {r["text"]: r["meta"] for r in read_samples()}
    assert meta["还行"] == {"pid": 7, "channel": "recheck", "annotator": "li"}
    assert meta["太咸了"] == {"pid": 8, "channel": "web"}
    assert [r["text"] for r in invoke.json(["samples", "--split", "train", "--where", "CAST(meta->>'pid' AS INTEGER) = 8"])] == ["太咸了"]


def test_labels_as_of_a_time_before_a_take_count_the_taken_sample_as_pool(tmp_path):
    """A stage's figures judge the labels as they were when it read them (``labels_as_of``): a pool text taken
    into train later, its original label the take's, counted as a train label then, and a teacher's train
    confusion (which keeps the first ``n`` of its judged rows by id) dropped a real train sample for it."""
    import datetime as dt

    from kdstore.ingest import IngestOptions, ingest
    from kdstore.outputs import labels_as_of
    from kdstore.schema import utcnow
    from kdstore.store import Store

    store = Store.open(str(tmp_path / "kd.db"))
    ingest(store, "还行\n".encode(), "pool.txt", IngestOptions(split="unlabeled"))
    ingest(store, "pos\t好吃\nneg\t难吃\n".encode(), "train.tsv", IngestOptions())
    before = utcnow()
    time.sleep(0.01)
    ingest(store, "neg\t还行\n".encode(), "annotated.tsv", IngestOptions(take_pool=True))
    assert labels_as_of(store, before, "train") == ({2: 0, 3: 1}, set())
    assert labels_as_of(store, utcnow() + dt.timedelta(seconds=1), "train") == ({1: 1, 2: 0, 3: 1}, set())
    store.close()


def test_a_take_while_a_stage_reads_its_rows_is_read_again_not_counted_as_a_pool_text(tmp_path):
    """A take adds no clean stage's edit, so the labels a stage read compared equal before and after a take that
    committed while it read: it kept the time from before its read (``labels_read_at``), so a teacher that learned
    the taken sample's label counted it as the pool text it was (``taken_since``): out-of-sample to a detection."""
    from kdstore import labels as lab
    from kdstore.ingest import ingest
    from kdstore.outputs import taken_since
    from kdstore.store import Store

    store = Store.open(str(tmp_path / "kd.db"))
    ingest(store, "还行\n".encode(), "pool.txt", IngestOptions(split="unlabeled"))
    ingest(store, "pos\t好吃\nneg\t难吃\n".encode(), "train.tsv", IngestOptions())
    took = []

    def read():  # (another process's take committing while the stage reads its rows)
        if not took:
            took.append(ingest(store, "neg\t还行\n".encode(), "annotated.tsv", IngestOptions(take_pool=True)).taken)
        return {int(i) for i in store.samples(splits=["train"], labeled=True).ids}

    rows, state = lab.read_labeled(store, read)
    assert took == [1] and rows == {1, 2, 3}
    assert not taken_since(store, dt.datetime.fromisoformat(state["labels_read_at"])) & rows  # (it learned them all)
    store.close()


def test_a_labeled_row_whose_text_is_stored_unlabeled_is_a_conflict(invoke, write_file, read_samples):
    """Counting it as a duplicate would drop its label without a word (a test row equal to a pool
    text, or to an augmented text, would shrink the test set unseen)."""
    write_file("pool.txt", "好吃\n还行\n")
    invoke(["ingest", "pool.txt", "--split", "unlabeled"])
    write_file("test.tsv", "pos\t好吃\nneg\t难吃\n")
    report = invoke.json(["ingest", "test.tsv", "--split", "test"])
    assert (report["added"], report["duplicates"]) == (1, 0)
    assert [(c["line"], c["label"], c["kept_label"], c["kept_from"]) for c in report["conflicts"]] == [(1, "pos", None, "pool.txt:1")]
    said = invoke(["ingest", "test.tsv", "--split", "test"]).stdout
    assert "has no label: 好吃" in said
    # and what that means, and the way to have those labels learned from (it said "1 conflict" and no more)
    assert ("1 conflict with a text of the unlabeled pool, which stays unlabeled (--take-pool takes pool texts into train only: "
            "students distilled on the pool learned them)") in " ".join(said.split()), said
    # the other way round stays a duplicate: a pool text that is already a labeled sample
    write_file("more.txt", "难吃\n")
    again = invoke.json(["ingest", "more.txt", "--split", "unlabeled"])
    assert (again["added"], again["duplicates"], again["conflicts"]) == (0, 1, [])
    assert [(r["text"], r["split"], r["label"]) for r in read_samples()] == [
        ("好吃", "unlabeled", None), ("还行", "unlabeled", None), ("难吃", "test", "neg")]


def test_columns_by_index_still_detect_a_header_row(invoke, write_file, read_samples, read_classes):
    write_file("h.tsv", "label\ttext\npos\t很好\nneg\t很差\n")
    report = invoke.json(["ingest", "h.tsv", "--text-col", "1", "--label-col", "0"])
    assert report["added"] == 2 and report["new_classes"] == ["pos", "neg"]
    assert [r["text"] for r in read_samples()] == ["很好", "很差"]


def test_a_csv_text_longer_than_the_csv_module_default_is_read(invoke, write_file, read_samples):
    write_file("long.csv", "label,text\npos," + "好" * 200_000 + "\n")
    assert invoke.json(["ingest", "long.csv"])["added"] == 1
    assert len(read_samples()[0]["text"]) == 200_000


def test_square_brackets_in_texts_and_labels_print_as_they_are(invoke, write_file, db):
    """rich would read ``[bold]`` as markup (and ``[/x]`` as a broken tag: a traceback after the
    rows were committed); every table prints them verbatim."""
    write_file("mk.tsv", "[bold]pos\t选项[a]和[b]都差[/b]很\n[/x]\t很差[/x]\n")
    out = invoke(["ingest", "mk.tsv"]).stdout
    assert "[bold]pos" in out and "[/x]" in out
    listed = invoke(["samples"]).stdout
    assert "选项[a]和[b]都差[/b]很" in listed and "很差[/x]" in listed
    invoke(["teach", "--run", "mk", "--model", "/nonexistent/[/x]"], ok=False)  # a failed stage whose error has brackets
    assert "failed" in invoke(["runs"]).stdout  # not rich's MarkupError


def test_conflict_plain_output(invoke, write_file):
    write_file("train.tsv", "pos\tnice\nneg\tnice\n")
    out = invoke(["ingest", "train.tsv"]).stdout
    assert "skipped 0 duplicates, 1 conflict\n" in out
    assert "conflict line 2" in out and "train.tsv:1" in out


def test_conflict_plain_output_keeps_a_text_on_its_line_and_sends_no_control_character(invoke, write_file):
    """A JSONL text holding a line break split its conflict's line in two, and an ESC (of an ANSI
    colour code scraped with the text) was sent to the terminal, which ran it."""
    row = '"text": "好\\n坏\\u001b[31m红"'
    write_file("c.jsonl", f'{{{row}, "label": "pos"}}\n{{{row}, "label": "neg"}}\n')
    out = invoke(["ingest", "c.jsonl"]).stdout
    assert "\x1b" not in out
    assert "  conflict line 2: label 'neg' but c.jsonl:1 has 'pos': 好 坏\u241b[31m红\n" in out


def test_a_big_ingest_shows_its_progress(invoke, write_file, monkeypatch, counts):
    """200,000 lines took some 10 s (a pool of millions, minutes) with nothing on screen: a big ingest
    shows a bar for hashing, checking and writing; a small one none."""
    import kdstore.ingest as ki

    monkeypatch.delenv("KD_NO_PROGRESS", raising=False)
    write_file("train.tsv", "".join(f"{'pos' if i % 2 else 'neg'}\ttext number {i}\n" for i in range(7)))
    small = invoke(["ingest", "train.tsv"])
    assert "writing samples" not in small.stderr and "reading" not in small.stderr
    monkeypatch.setattr(ki, "BAR_FROM", 5)
    monkeypatch.setattr("commands.data.READ_BAR_FROM", 10)  # (parsing 500k lines: some 9 s before the first bar)
    monkeypatch.setattr(ki, "CHUNK", 3)  # (the hashing and checking tasks advance by each CHUNK)
    write_file("more.tsv", "".join(f"{'pos' if i % 2 else 'neg'}\tmore text {i}\n" for i in range(7)))
    big = invoke(["ingest", "more.tsv"])
    bars = [line for line in big.stderr.splitlines() if "7/7" in line]
    for task in ("hashing texts", "checking against the store", "writing samples"):
        assert sum(line.startswith(task) for line in bars) == 1, big.stderr
    assert all(" rows/s " in line for line in bars), big.stderr  # (rich's own unit, "it/s", named nothing)
    assert sum(line.startswith("reading more.tsv") and " 7/7 " in line for line in big.stderr.splitlines()) == 1, big.stderr
    assert "added 7 to train" in big.stdout


def test_a_big_take_pool_counts_its_takes_on_the_writing_bar(invoke, write_file, monkeypatch):
    """`kd ingest annot.tsv --take-pool` of 300,000 pool texts spent 20 s updating them under a
    "writing samples 0/0" bar with no rate or ETA: the bar counted only the new rows."""
    import kdstore.ingest as ki

    monkeypatch.delenv("KD_NO_PROGRESS", raising=False)
    monkeypatch.setattr(ki, "BAR_FROM", 5)
    monkeypatch.setattr(ki, "CHUNK", 3)
    write_file("pool.txt", "".join(f"pool text {i}\n" for i in range(7)))
    invoke(["ingest", "pool.txt", "--split", "unlabeled"])
    write_file("annot.tsv", "".join(f"{'pos' if i % 2 else 'neg'}\tpool text {i}\n" for i in range(7)))
    taken = invoke(["ingest", "annot.tsv", "--take-pool"])
    assert "7 taken from the unlabeled pool" in taken.stdout
    writing = [line for line in taken.stderr.splitlines() if line.startswith("writing samples")]
    assert writing and all(" 7/7 " in line and " rows/s " in line for line in writing), taken.stderr


def test_a_store_of_many_classes_is_counted_a_row_per_class(invoke, write_file, monkeypatch):
    """40 classes (IFLYTEK has 119) were 40 columns squeezed into the screen: every class name and the
    split shown as '…', some counts not at all."""
    monkeypatch.delenv("COLUMNS", raising=False)  # (written to a pipe: 160 columns)
    write_file("train.tsv", "".join(f"category_{i}\t第{i}条文本\n" for i in range(40)))
    write_file("pool.txt", "没有标签的文本\n")
    invoke(["ingest", "train.tsv"])
    out = invoke(["ingest", "pool.txt", "--split", "unlabeled"]).stdout
    cells = [[c.strip() for c in line.strip("│").split("│")] for line in out.splitlines() if line.startswith("│")]
    assert cells == [*([f"category_{i}", "1", "0"] for i in range(40)), ["(none)", "0", "1"], ["total", "40", "1"]]
    assert any([c.strip() for c in line.strip("┃").split("┃")] == ["class", "train", "unlabeled"] for line in out.splitlines())
    assert max(len(line) for line in out.splitlines()) <= 160


def test_header_typed_for_json_lines_is_refused_not_ignored(invoke, write_file, counts):
    """`--no-header` (or `--header`) with a JSONL file was ignored without a word."""
    write_file("a.jsonl", '{"text": "好", "label": "pos"}\n')
    for args in (["ingest", "a.jsonl", "--no-header"], ["ingest", "-", "--format", "jsonl", "--header"]):
        out = invoke(args, input='{"text": "好", "label": "pos"}\n', ok=False)
        assert "--header/--no-header: for TSV and CSV files; JSON lines have no header row" in out.output
    assert invoke.json(["ingest", "a.jsonl"])["added"] == 1


def test_pinned_classes_from_class_file(invoke, write_file, read_classes, read_samples, counts, error_line):
    write_file("class_id.txt", "0\tneg\n1\tpos\n2\tmid\n")
    write_file("train.tsv", "pos\tgood\nneg\tbad\n")
    report = invoke.json(["ingest", "train.tsv", "--classes", "class_id.txt"])
    assert report["new_classes"] == ["neg", "pos", "mid"]  # made by the class file: new all the same
    # the ids are the file's, not the order of first appearance; unused 'mid' exists too
    assert read_classes() == [(0, "neg"), (1, "pos"), (2, "mid")]
    assert [(r["text"], r["label_id"]) for r in read_samples()] == [("good", 1), ("bad", 0)]
    write_file("dev.tsv", "neg\tso bad\n")
    header = next(l for l in invoke(["ingest", "dev.tsv", "--split", "dev"]).stdout.splitlines() if "split" in l)
    assert [c.strip() for c in header.strip("┃ ").split("┃")] == ["split", "neg", "pos", "mid", "total"]  # id order, 'mid' too

    before = counts()
    write_file("more.tsv", "pos\tfine\nmeh\tunknown one\n")
    result = invoke(["ingest", "more.tsv", "--classes", "class_id.txt"], ok=False)
    line = error_line(result)
    assert "more.tsv" in line and "line 2" in line and "'label'" in line and "'meh'" in line
    assert counts() == before


def test_ids_as_labels_into_a_store_of_named_classes_are_refused(invoke, write_file, read_classes, counts, error_line):
    """A store pinned by `--classes class_id.txt` (0 体育, 1 财经), then a dev file of label ids (ERNIE's
    `label_id<TAB>text`) ingested without `--classes`: '1' and '0' became new classes 2 and 3, every dev
    sample in a class no model learned, and the store kept them for good."""
    write_file("class_id.txt", "0\t体育\n1\t财经\n")
    write_file("train.tsv", "体育\t球赛\n财经\t股市\n")
    invoke(["ingest", "train.tsv", "--classes", "class_id.txt"])
    before = (counts(), read_classes())
    write_file("dev.txt", "1\t基金\n0\t足球\n")
    line = error_line(invoke(["ingest", "dev.txt", "--split", "dev"], ok=False))
    assert line == ("Error: dev.txt: line 1: field 'label': unknown label '1' (the store's classes: 体育, 财经): "
                    "labels are class names, not ids ('1' is the id of '财经'); --classes FILE naming it adds a class of that name")
    assert (counts(), read_classes()) == before
    # a number that is no class id is a name, as before
    write_file("more.tsv", "7\t期货\n")
    assert invoke.json(["ingest", "more.tsv"])["new_classes"] == ["7"]


def test_class_file_with_a_header_line_says_so(tmp_path):
    """A class_id.txt under an `id<TAB>name` header said "expected id<TAB>name ..., found 2 tab-separated
    fields": two fields are what it expects; neither is an id."""
    (tmp_path / "hdr.txt").write_text("id\tname\n0\t体育\n1\t财经\n", encoding="utf-8")
    with pytest.raises(KdError, match=r"^.*hdr\.txt: line 1: expected id<TAB>name \(or one name a line\), found 'id\\tname', "
                                      r"neither field a class id \(a header\? leave it out\)$"):
        read_class_file(tmp_path / "hdr.txt")
    # one name a line under a header: 'label' was class 0, every real class's id one off, without a word (review ingest34)
    (tmp_path / "names.txt").write_text("标签\n体育\n财经\n", encoding="utf-8")
    with pytest.raises(KdError, match=r"names\.txt: line 1: '标签' looks like a header: a class file holds one class name a line "
                                      r"\(or id<TAB>name lines\), no header: leave it out$"):
        read_class_file(tmp_path / "names.txt")
    assert read_class_file(tmp_path / "names.txt", stored=("标签", "体育", "财经")) == ("标签", "体育", "财经")  # (a class the store holds)


def test_class_file_disagreeing_with_store_is_refused(invoke, write_file, read_classes, counts, error_line):
    write_file("train.tsv", "pos\tgood\nneg\tbad\n")
    invoke(["ingest", "train.tsv"])  # pos=0, neg=1
    before = counts()
    write_file("class_id.txt", "0\tneg\n1\tpos\n")
    write_file("dev.tsv", "pos\tfine\n")
    result = invoke(["ingest", "dev.tsv", "--split", "dev", "--classes", "class_id.txt"], ok=False)
    # (the class file named: the data file's name, dev.tsv, pointed at a file that holds no ids)
    assert error_line(result).startswith("Error: class_id.txt: class 'neg' has id 1 in the store but 0 in the class file")
    assert "`kd classes --export FILE` writes the store's own class file" in error_line(result)  # the way out
    assert counts() == before
    assert read_classes() == [(0, "pos"), (1, "neg")]


# bad inputs: one-line error with file, line and field; the store is unchanged ---------------

GOOD = "pos\talready here one\nneg\talready here two\n"

BAD_INPUTS = [
    pytest.param(
        "gbk.tsv",
        "pos\tfine text\n".encode() + b"neg\t" + "质量很好".encode("gbk") + b"\n",
        [],
        ["line 2", "field 1", "not valid UTF-8", "reads as GBK/GB18030", "iconv -f GB18030 -t UTF-8 gbk.tsv > utf8-gbk.tsv"],
        id="wrong-encoding-gbk",
    ),
    pytest.param(
        "cols.csv",
        b"text,category\nfine text,pos\nother,neg\n",
        ["--label-col", "sentiment"],
        ["line 1", "field 'sentiment'", "no such column"],
        id="missing-named-column",
    ),
    pytest.param(
        "nolabel.csv",
        b"text,category\nfine text,pos\n",
        [],
        ["line 1", "field 'label'", "name it with --label-col"],
        id="header-without-label-column",
    ),
    pytest.param(
        "one.tsv",
        b"just a text\nanother text\n",
        [],
        ["line 1", "field 'label'", "missing"],
        id="headerless-one-column-for-train",
    ),
    pytest.param(
        "empty_text.tsv",
        b"pos\tfine text\nmid\tnew class text\nneg\t   \n",
        [],
        ["line 3", "field '1'", "empty text"],
        id="empty-text",
    ),
    pytest.param(  # only a zero-width space and a BOM: the tokenizer reads no token of it
        "invisible_text.tsv",
        "pos\tfine text\nneg\t\u200b \ufeff\n".encode(),
        [],
        ["line 2", "field '1'", "no visible character"],
        id="invisible-text",
    ),
    pytest.param(  # a spreadsheet's "Unicode text" with its byte-order mark cut off: not "binary data"
        "utf16_no_bom.tsv",
        "pos\t很好\nneg\t太差\n".encode("utf-16-le"),
        [],
        ["line 1", "looks UTF-16LE encoded, without a byte-order mark: convert it to UTF-8 first",
         "e.g. iconv -f UTF-16LE -t UTF-8 "],
        id="utf-16le-without-bom",
    ),
    pytest.param(
        "utf16be_no_bom.tsv",
        "pos\tgood\n".encode("utf-16-be"),
        [],
        ["line 1", "looks UTF-16BE encoded"],
        id="utf-16be-without-bom",
    ),
    pytest.param(  # 一 (U+4E00) has a NUL byte of its own, on the other side of ASCII's: still UTF-16, not "binary data"
        "utf16_no_bom_yi.tsv",
        "pos\t第一次买\nneg\t不好\n".encode("utf-16-le"),
        [],
        ["line 1", "looks UTF-16LE encoded, without a byte-order mark: convert it to UTF-8 first"],
        id="utf-16le-without-bom-nul-in-chinese",
    ),
    pytest.param(  # one line of Chinese alone: one NUL byte, its line end's (it was "reads as GBK/GB18030")
        "utf16_one_line.txt",
        "质量很好\n".encode("utf-16-le"),
        [],
        ["line 1", "looks UTF-16LE encoded, without a byte-order mark: convert it to UTF-8 first"],
        id="utf-16le-without-bom-one-line",
    ),
    pytest.param(
        "utf16be_no_bom_yi.tsv",
        "pos\t第一次买\nneg\t不好\n".encode("utf-16-be"),
        [],
        ["line 1", "looks UTF-16BE encoded"],
        id="utf-16be-without-bom-nul-in-chinese",
    ),
    pytest.param(  # a bare \r among \n line ends joins two rows: the error says where it is
        "mixed_line_ends.tsv",
        b"pos\tgood\nneg\tbad\rpos\tfine\n",
        [],
        ["line 2", "ragged row", "line 2 holds a bare carriage return", "mixed line ends"],
        id="bare-cr-among-newlines",
    ),
    pytest.param(  # R's write.table(df, sep="\t"): quoted, with row names the header has no name for
        "r_write_table.tsv",
        '"label"\t"text"\n"1"\t"pos"\t"很好"\n"2"\t"neg"\t"太差"\n'.encode(),
        [],
        ["line 2", "expected 2 fields, found 3 (ragged row)", "row names, as R's write.table writes them",
         "row.names = FALSE"],
        id="r-row-names",
    ),
    pytest.param(  # R's write.table(df, sep="\t", row.names = FALSE): a quote in a text written \" (qmethod "escape")
        "r_escaped_quote.tsv",
        '"text"\t"label"\n"很好"\t"pos"\n"他说\\"好\\""\t"neg"\n'.encode(),
        [],
        ["line 3", "every field of the first row is in quotes", 'qmethod = "double"'],
        id="r-escaped-quote",
    ),
    pytest.param(  # one column: "1 field", not "1 fields"
        "one_column.tsv",
        "很好\n太差\tneg\n".encode(),
        ["--split", "unlabeled"],
        ["line 2", "expected 1 field, found 2 (ragged row: a tab in its text?)"],
        id="one-column-ragged",
    ),
    pytest.param(  # only control characters (a stray \x01, DEL): BERT's tokenizer drops them too
        "control_text.tsv",
        "pos\tfine text\nneg\t\x01\x7f\x1b\n".encode(),
        [],
        ["line 2", "field '1'", "no visible character"],
        id="control-characters-only",
    ),
    pytest.param(
        "invisible_text.jsonl",
        '{"text": "fine text", "label": "pos"}\n{"text": "\u200d", "label": "neg"}\n'.encode(),
        [],
        ["line 2", "field 'text'", "no visible character"],
        id="invisible-text-jsonl",
    ),
    pytest.param(  # the zero-width joiner and emoji variation selector an emoji cut out leaves behind
        "selector_text.tsv",
        "pos\tfine text\nneg\t\u200d\ufe0f\npos\t\ufe0e\n".encode(),
        [],
        ["line 2", "field '1'", "no visible character"],
        id="variation-selectors-only",
    ),
    pytest.param(  # what is left of a text a conversion could not decode (errors="replace"): BERT drops U+FFFD
        "replaced_text.tsv",
        "pos\tfine text\nneg\t\ufffd\ufffd \ufffd\npos\t好\ufffd\n".encode(),
        [],
        ["line 2", "field '1'", "no visible character", "U+FFFD"],
        id="replacement-characters-only",
    ),
    pytest.param(  # private-use characters (an old phone's emoji, an icon font's glyphs): BERT's normalizer drops them
        "private_use_text.tsv",
        "pos\tfine text\nneg\t\ue415\ue056 \U000f0001\npos\t好\ue415\n".encode(),
        [],
        ["line 2", "field '1'", "no visible character", "private-use"],
        id="private-use-characters-only",
    ),
    pytest.param(
        "empty_label.csv",
        b"label,text\npos,fine text\n  ,no label here\n",
        [],
        ["line 3", "field 'label'", "empty label"],
        id="empty-label",
    ),
    pytest.param(
        "unknown.tsv",
        b"pos\tfine text\nneg\tother text\nmeh\tunknown label\n",
        ["--classes", "class_id.txt"],
        ["line 3", "field 'label'", "unknown label 'meh'"],
        id="unknown-label-under-classes",
    ),
    pytest.param(  # the error names the file's own column, not a 'label' it does not have
        "stars.csv",
        b"text,stars\nfine text,pos\nother text,meh\n",
        ["--classes", "class_id.txt", "--label-col", "stars"],
        ["line 3", "field 'stars'", "unknown label 'meh'"],
        id="unknown-label-in-a-named-column",
    ),
    pytest.param(
        "ragged.tsv",
        b"pos\tfine text\nmid\tnew class text\nneg\tthree\tfields\npos\tafter the bad row\n",
        [],
        ["line 3", "expected 2 fields, found 3", "ragged"],
        id="ragged-row-in-the-middle",
    ),
    pytest.param(
        "binary.tsv",
        b"pos\tfine text\nneg\tbad\x00bytes\n",
        [],
        ["line 2", "NUL"],
        id="binary-nul",
    ),
    pytest.param(
        "bad.jsonl",
        b'{"text": "fine text", "label": "pos"}\n{"text": "broken", "label": \n',
        [],
        ["line 2", "not valid JSON", "column"],
        id="invalid-json-line",
    ),
    pytest.param(  # jq without -c: the JSON error alone ("Expecting property name") did not say why
        "pretty.json",
        b'{\n  "text": "fine text",\n  "label": "pos"\n}\n',
        [],
        ["line 1", "not valid JSON", "the object goes on past its line", "jq -c"],
        id="pretty-printed-json-objects",
    ),
    pytest.param(  # (was "Unterminated string starting at at column 15")
        "cut.jsonl",
        b'{"text": "fine text", "label": "pos"}\n{"text": "cut sho',
        [],
        ["line 2", "not valid JSON (Unterminated string starting at column 10)"],
        id="json-line-cut-short",
    ),
    pytest.param(  # cut between its keys: no line follows it, so it is no pretty-printed object going on there
        "cut_between_keys.jsonl",
        b'{"text": "fine text", "label": "pos"}\n{"text": "cut", \n\n',
        [],
        ["line 2", "not valid JSON", "the file ends inside this object: cut short?"],
        id="json-line-cut-between-keys",
    ),
    pytest.param(
        "boollabel.jsonl",
        b'{"text": "fine text", "label": 1}\n{"text": "other", "label": true}\n',
        [],
        ["line 2", "field 'label'", "expected a string or an integer", "true"],
        id="jsonl-label-not-string-or-integer",
    ),
    pytest.param(
        "floatlabel.jsonl",
        b'{"text": "fine text", "label": "pos"}\n{"text": "other", "label": 1.0}\n',
        [],
        ["line 2", "field 'label'", "expected a string or an integer", "1.0"],
        id="jsonl-label-float",
    ),
    pytest.param(
        "nul.jsonl",
        b'{"text": "fine text", "label": "pos"}\n{"text": "escaped \\u0000 nul", "label": "neg"}\n',
        [],
        ["line 2", "field 'text'", "NUL character"],
        id="jsonl-escaped-nul",
    ),
    pytest.param(
        "nulkey.jsonl",
        b'{"text": "fine text", "label": "pos"}\n{"text": "other", "label": "neg", "k\\u0000": 1}\n',
        [],
        ["line 2", "NUL character"],
        id="jsonl-nul-in-a-metadata-key",
    ),
    pytest.param(
        "source.tsv",
        b"pos\tfine text\nneg\tother\n",
        ["--source", "s" * 501],
        ["the source name is longer than 500 characters"],
        id="source-longer-than-its-column",
    ),
    pytest.param(
        "source.tsv",
        b"pos\tfine text\nneg\tother\n",
        ["--source", ""],  # (`--source "$SHOP"` with SHOP unset: the file name was recorded, unseen)
        ["the source name is empty"],
        id="source-empty",
    ),
    pytest.param(
        "source.tsv",
        b"pos\tfine text\nneg\tother\n",
        ["--source", "  "],
        ["the source name is empty"],
        id="source-blank",
    ),
    pytest.param(  # (`--text-col "$COL"` with COL unset: the "text" key was read, unseen, not the one meant)
        "keys.jsonl",
        b'{"text": "fine text", "content": "other", "label": "pos"}\n',
        ["--text-col", ""],
        ["--text-col is empty"],
        id="jsonl-text-col-empty",
    ),
    pytest.param(  # (the first row was taken for a header: "no such column (columns: pos, fine text)")
        "cols.tsv",
        b"pos\tfine text\nneg\tother\n",
        ["--label-col", ""],
        ["--label-col is empty"],
        id="label-col-empty",
    ),
    pytest.param(
        "source.tsv",
        b"pos\tfine text\nneg\tother\n",
        ["--source", "shop\nb"],
        ["the source name 'shop\\nb' contains a tab, line break or other control character"],
        id="source-with-a-line-break",
    ),
    pytest.param(
        "intent.tsv",
        "query\t查询余额\ntransfer\t给我妈转账\n".encode(),
        [],  # a headerless file whose first label is a header word ('query'): the way out is --no-header
        ["line 1", "field 'label'", "name it with --label-col (or --no-header if line 1 is a sample, not a header)"],
        id="first-label-a-header-word",
    ),
    pytest.param(
        "huge.jsonl",
        b'{"text": "fine text", "label": "pos"}\n{"text": "other", "label": "neg", "score": 1e400}\n',
        [],
        ["line 2: field 'score': the number 1e400 is out of range"],
        id="jsonl-infinite-number",
    ),
    pytest.param(
        "longlabel.tsv",
        b"pos\tfine text\n" + b"x" * 201 + b"\tother\n",
        [],
        ["line 2", "field 'label'", "longer than 200 characters"],
        id="label-longer-than-the-class-column",
    ),
    pytest.param(
        "quote.csv",
        b'label,text\npos,fine text\nneg,"never closed\n',
        [],
        ["line 3", "not valid CSV", "unexpected end of data"],
        id="csv-unclosed-quote",
    ),
    pytest.param(
        "surrogate.jsonl",  # an emoji cut in half (text truncated at UTF-16 units): no UTF-8 for it
        b'{"text": "fine text", "label": "pos"}\n{"text": "cut \\ud83d", "label": "neg"}\n',
        [],
        ["line 2", "field 'text'", "lone surrogate"],
        id="jsonl-lone-surrogate",
    ),
    pytest.param(
        "surrogatemeta.jsonl",
        b'{"text": "fine text", "label": "pos"}\n{"text": "other", "label": "neg", "m": ["\\udc00"]}\n',
        [],
        ["line 2", "field 'm'", "lone surrogate"],
        id="jsonl-lone-surrogate-in-metadata",
    ),
    pytest.param(
        "nokey.jsonl",
        b'{"text": "fine text", "label": "pos"}\n{"body": "no text key", "label": "neg"}\n',
        [],
        ["line 2", "field 'text'", "missing"],
        id="jsonl-missing-text-key",
    ),
    pytest.param(
        "tablabel.jsonl",  # class_id.txt holds one class a line: it could not hold this one
        b'{"text": "fine text", "label": "pos"}\n{"text": "other", "label": "ne\\tg"}\n',
        [],
        ["line 2", "field 'label'", "control character"],
        id="label-with-a-tab",
    ),
    pytest.param(
        "zwsp.tsv",  # 'pos\u200b' was a class of its own, printed as 'pos'
        "pos\tfine text\npos\u200b\tother\n".encode(),
        [],
        ["line 2", "field 'label'", "invisible character (U+200B)"],
        id="label-with-a-zero-width-space",
    ),
    pytest.param(
        "wide.tsv",  # a full-width 'ｐｏｓ' (an input method's) was a class apart from the store's 'pos'
        "ｐｏｓ\tnew text\n".encode(),
        [],
        ["line 1", "field 'label'", "'ｐｏｓ'", "class 'pos'", "width or case"],
        id="label-full-width-twin-of-a-stored-class",
    ),
    pytest.param(
        "case.tsv",  # two new classes of one file that differ only in case
        b"Mixed\tnew text\nmixed\tother text\n",
        [],
        ["line 2", "field 'label'", "'mixed'", "class 'Mixed'"],
        id="labels-differing-only-in-case",
    ),
    pytest.param(
        "spacing.jsonl",  # a class name with a space typed with two was a class apart
        '{"text": "fine text", "label": "体育 新闻"}\n{"text": "other text", "label": "体育  新闻"}\n'.encode(),
        [],
        ["line 2", "field 'label'", "'体育  新闻'", "class '体育 新闻'", "white space"],
        id="labels-differing-only-in-spacing",
    ),
    pytest.param(
        "gap.jsonl",  # '夸大 宣传' beside '夸大宣传' (a space typed between two characters) was a class apart
        '{"text": "fine text", "label": "夸大宣传"}\n{"text": "other text", "label": "夸大 宣传"}\n'.encode(),
        [],
        ["line 2", "field 'label'", "'夸大 宣传'", "class '夸大宣传'", "white space"],
        id="labels-differing-only-by-a-space",
    ),
    pytest.param(
        "twice.csv",
        b"label,text,x,x\npos,fine text,1,2\n",
        [],
        ["line 1", "field 'x'", "names this column twice"],
        id="header-names-a-column-twice",
    ),
    pytest.param(
        "same.tsv",
        b"pos\tfine text\n",
        ["--text-col", "1", "--label-col", "1"],
        ["line 1", "field '1'", "also the label column"],
        id="text-column-is-label-column",
    ),
    pytest.param(
        "array.json",
        b'[{"text": "fine text", "label": "pos"}]\n',
        [],
        ["line 1", "JSON Lines"],
        id="json-array-file",
    ),
    pytest.param(  # json.loads keeps the last one: the first text would be lost unseen
        "twice.jsonl",
        b'{"text": "fine text", "label": "pos"}\n{"text": "first", "label": "neg", "text": "second"}\n',
        [],
        ["line 2", "field 'text'", "names this key twice"],
        id="jsonl-key-given-twice",
    ),
    pytest.param(  # `cat a.tsv b.tsv`, each with its header: the second was a sample of a new class 'label'
        "joined.tsv",
        b"label\ttext\npos\tfine text\nlabel\ttext\nneg\tother text\n",
        [],
        ["line 3", "field 'text'", "header row again"],
        id="header-repeated-in-the-body",
    ),
    pytest.param(  # blank lines before the header: its errors named line 1
        "blank_first.csv",
        b"\n\nid,body,category\n1,fine text,pos\n",
        ["--text-col", "body", "--label-col", "cat"],
        ["line 3", "field 'cat'", "no such column"],
        id="header-after-blank-lines-named-by-its-line",
    ),
]


@pytest.mark.parametrize("name, content, args, expected", BAD_INPUTS)
def test_bad_input_fails_with_one_line_and_changes_nothing(
    name, content, args, expected, invoke, write_file, counts, read_samples, read_classes, error_line
):
    write_file("class_id.txt", "0\tpos\n1\tneg\n")
    write_file("good.tsv", GOOD)
    invoke(["ingest", "good.tsv"] + (["--classes", "class_id.txt"] if "--classes" in args else []))
    before = (counts(), read_samples(), read_classes())
    assert before[0]["samples"] == 2

    write_file(name, content)
    result = invoke(["ingest", name] + args, ok=False)
    assert result.exit_code == 1
    line = error_line(result)
    assert name in line
    for part in expected:
        assert part in line, f"{part!r} not in {line!r}"
    assert "Traceback" not in result.output
    assert (counts(), read_samples(), read_classes()) == before


def test_a_whole_number_spelled_another_way_is_no_class_apart(invoke, write_file, counts, read_classes, error_line):
    """Labels 1/0 (JSONL integers) then a pandas CSV (an integer column with a NaN is written 1.0/0.0)
    or a spreadsheet's 01: classes '1.0' and '0.0' were added beside '1' and '0', unseen."""
    write_file("a.jsonl", '{"text": "好", "label": 1}\n{"text": "坏", "label": 0}\n')
    invoke(["ingest", "a.jsonl"])
    before = (counts(), read_classes())
    for name, content, label in (("pd.csv", ",text,label\n0,很好,1.0\n1,很坏,0.0\n", "1.0"), ("x.csv", "label,text\n01,又好\n", "01")):
        write_file(name, content)
        line = error_line(invoke(["ingest", name], ok=False))
        assert f"{name}: line 2: field 'label': label {label!r} differs from the class '1'" in line and "number" in line
        assert (counts(), read_classes()) == before
    write_file("ok.tsv", "1\t还行\n1.5\t一般\n")  # the same spelling, or another number: as before
    assert invoke.json(["ingest", "ok.tsv"])["new_classes"] == ["1.5"]


def test_labels_apart_only_in_their_middle_dot_are_one_class(invoke, write_file, counts, read_classes, error_line):
    """'文化·艺术' (U+00B7) then '文化・艺术' (U+30FB, a Japanese-layout input method's): two classes that
    print alike were made without a word."""
    write_file("a.tsv", "文化·艺术\t画展开幕\n体育\t比赛结束\n")
    invoke(["ingest", "a.tsv"])
    before = (counts(), read_classes())
    for dot in ("\u30fb", "\uff65", "\u2027", "\u2022"):
        write_file("b.tsv", f"体育\t又一场比赛\n文化{dot}艺术\t音乐会\n")
        line = error_line(invoke(["ingest", "b.tsv"], ok=False))
        assert f"b.tsv: line 2: field 'label': label '文化{dot}艺术' differs from the class '文化·艺术' only in" in line and "middle dot" in line, line
        assert (counts(), read_classes()) == before
    write_file("c.tsv", "文化·艺术\t音乐会\n文化艺术\t书展\n")  # no dot at all is another spelling: a class apart, as before
    assert invoke.json(["ingest", "c.tsv"])["new_classes"] == ["文化艺术"]


def test_emoji_labels_apart_only_in_a_variation_selector_are_one_class(invoke, write_file, counts, read_classes, error_line):
    """Emoji labels (an emoji-prediction task) '❤' then '❤️' (U+FE0F, what a phone's keyboard types after
    it): two classes that print alike were made without a word, where texts treat the two as one ('❤️' is '❤')."""
    write_file("a.tsv", "❤\t很好\n👎\t太差\n")
    invoke(["ingest", "a.tsv"])
    before = (counts(), read_classes())
    write_file("b.tsv", "👎\t又差了\n❤\ufe0f\t喜欢\n")
    line = error_line(invoke(["ingest", "b.tsv"], ok=False))
    assert "b.tsv: line 2: field 'label': label '❤\ufe0f' differs from the class '❤' only in" in line and "variation selector" in line, line
    assert (counts(), read_classes()) == before
    write_file("c.tsv", "👍\ufe0f\t好\n👍\t赞\n")  # within one file too
    assert "c.tsv: line 2: field 'label': label '👍' differs from the class '👍\ufe0f'" in error_line(invoke(["ingest", "c.tsv"], ok=False))
    assert (counts(), read_classes()) == before


def test_a_store_holding_both_spellings_of_an_emoji_class_takes_its_labels_again(invoke, write_file, db, counts, read_classes):
    """A store an older kd made, holding '❤' and '❤️' as two classes (labels apart only in a variation selector were
    classes apart then): a file labeled with both, its classes as they are stored, was refused ("differs from the
    class '❤'"), so the store could take no more of its own labels; only a new spelling is a look-alike."""
    from sqlalchemy import insert

    from kdstore.schema import KdClass
    from kdstore.store import Store

    write_file("a.tsv", "❤\t很好\n👎\t太差\n")
    invoke(["ingest", "a.tsv"])
    store = Store.open(db, create=False)
    with store.engine.begin() as conn:  # (as an older kd stored it)
        conn.execute(insert(KdClass), [{"id": 2, "name": "❤\ufe0f"}])
    store.close()
    write_file("b.tsv", "❤\t真好\n❤\ufe0f\t爱了\n")
    assert invoke.json(["ingest", "b.tsv"])["added"] == 2
    assert read_classes() == [(0, "❤"), (1, "👎"), (2, "❤\ufe0f")]
    write_file("c.tsv", "❤\t好看\n❤\ufe0e\t美\n")  # (a third spelling: a look-alike still)
    assert "label '❤\ufe0e' differs from the class '❤'" in invoke(["ingest", "c.tsv"], ok=False).stderr
    # and its own class file (`kd classes --export`), pinned to the next file, was refused as "one class, give it once"
    invoke(["classes", "--export", "cls.txt"])
    write_file("d.tsv", "❤\ufe0f\t喜欢\n")
    assert invoke.json(["ingest", "d.tsv", "--classes", "cls.txt"])["added"] == 1


@pytest.mark.new_database
def test_look_alike_labels_of_a_first_ingest_leave_no_store_behind(invoke, write_file, db, error_line):
    """'pos' then 'Pos' in the file of a first ingest: refused only once the store was made, an empty one stayed."""
    write_file("first.tsv", "pos\tfine text\nneg\tother text\nPos\tthird text\n")
    line = error_line(invoke(["ingest", "first.tsv"], ok=False))
    assert "first.tsv: line 3: field 'label': label 'Pos' differs from the class 'pos'" in line
    assert not store_exists(db)


def test_a_class_file_pinning_look_alike_classes_is_refused(invoke, write_file, db, counts, read_classes, error_line):
    """A class file naming 'pos' and 'POS' (or '1' and '01', or 'pos' with a zero-width space) made two
    classes that print alike, which no labels could have made."""
    write_file("good.tsv", GOOD)
    invoke(["ingest", "good.tsv"])
    before = (counts(), read_classes())
    for content, expected in (("pos\nneg\nPOS\n", "line 3: class 'POS' differs from the class 'pos'"),
                              ("0\tpos\n1\tneg\n2\t1\n3\t01\n", "line 4: class '01' differs from the class '1'"),
                              ("pos\nneg\nmid\u200b\n", "line 3: class 'mid\\u200b' contains an invisible character (U+200B)")):
        write_file("class_id.txt", content)
        line = error_line(invoke(["ingest", "good.tsv", "--classes", "class_id.txt"], ok=False))
        assert line.startswith("Error: class_id.txt: ") and expected in line, line
        assert (counts(), read_classes()) == before


def test_all_or_nothing_good_rows_before_a_bad_row_are_not_kept(invoke, write_file, read_samples):
    """The good rows in front of the bad one parse fine; none of them may reach the store."""
    write_file("good.tsv", GOOD)
    invoke(["ingest", "good.tsv"])
    rows = "".join(f"pos\tgood row {i}\n" for i in range(50)) + "neg\tx\ty\n"
    write_file("big.tsv", rows + "pos\tafter\n")
    invoke(["ingest", "big.tsv"], ok=False)
    assert [r["text"] for r in read_samples()] == ["already here one", "already here two"]


def test_a_ctrl_c_in_the_middle_of_an_ingest_says_nothing_was_stored(invoke, write_file, read_samples, monkeypatch, error_line):
    """Ctrl-C while the rows were written (the transaction rolled back) or read printed click's bare
    "Aborted!": whether part of the file had reached the store went unsaid."""
    import kdstore.ingest as ingest_mod

    write_file("good.tsv", GOOD)
    invoke(["ingest", "good.tsv"])
    real = ingest_mod.bulk_insert

    def interrupted(conn, table, columns, rows, **kwargs):
        real(conn, table, columns, list(rows)[:1], **kwargs)  # (one row written, then the Ctrl-C)
        raise KeyboardInterrupt

    write_file("more.tsv", "".join(f"pos\tmore row {i}\n" for i in range(20)))
    monkeypatch.setattr(ingest_mod, "bulk_insert", interrupted)
    line = error_line(invoke(["ingest", "more.tsv"], ok=False))
    assert line == "Error: interrupted: nothing of more.tsv was stored (an ingest is one transaction); run it again", line
    assert [r["text"] for r in read_samples()] == ["already here one", "already here two"]
    monkeypatch.setattr(ingest_mod, "bulk_insert", real)

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("commands.data.parse", stopped)
    line = error_line(invoke(["ingest", "more.tsv"], ok=False))
    assert line == "Error: interrupted: nothing of more.tsv was stored (it was being read); run it again", line
    assert len(read_samples()) == 2


def test_a_ctrl_c_just_after_a_take_only_ingest_committed_says_what_was_stored(invoke, write_file, monkeypatch, error_line):
    """A take adds no sample id: a Ctrl-C landing after an ingest that only took pool texts had committed said
    "nothing of annotated.tsv was stored" (the check read the highest sample id alone)."""
    import commands.data as data

    write_file("pool.txt", "还行\n一般\n")
    invoke(["ingest", "pool.txt", "--split", "unlabeled"])
    write_file("annotated.tsv", "pos\t还行\nneg\t一般\n")
    real = data.add_records

    def committed_then_stopped(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(data, "add_records", committed_then_stopped)
    line = error_line(invoke(["ingest", "annotated.tsv", "--take-pool"], ok=False))
    assert line == "Error: interrupted: after annotated.tsv was stored (0 samples added, 2 taken from the pool)", line


def test_a_kill_in_the_middle_of_an_ingest_says_nothing_was_stored(invoke, write_file, read_samples, monkeypatch, error_line):
    """`kill` (SIGTERM) of an ingest ended it with exit status 143 and not a word, where Ctrl-C says that
    nothing of the file was stored: a kill raises as Ctrl-C does, and says so in one line."""
    import os
    import signal

    import kdstore.ingest as ingest_mod

    write_file("good.tsv", GOOD)
    invoke(["ingest", "good.tsv"])
    real = ingest_mod.bulk_insert

    def killed(conn, table, columns, rows, **kwargs):
        real(conn, table, columns, list(rows)[:1], **kwargs)  # (one row written, then the kill)
        os.kill(os.getpid(), signal.SIGTERM)

    write_file("more.tsv", "".join(f"pos\tmore row {i}\n" for i in range(20)))
    monkeypatch.setattr(ingest_mod, "bulk_insert", killed)
    line = error_line(invoke(["ingest", "more.tsv"], ok=False))
    assert line == "Error: terminated (SIGTERM): nothing of more.tsv was stored (an ingest is one transaction); run it again", line
    assert [r["text"] for r in read_samples()] == ["already here one", "already here two"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # (the handler of the ingest put back)


def test_ingest_into_a_folder_that_is_a_file_says_so(tmp_path, invoke, write_file, error_line):
    """--db notes.txt/kd.db, notes.txt a file: SQLite's "unable to open database file" was all it said."""
    write_file("train.tsv", GOOD)
    (tmp_path / "notes.txt").write_text("x", encoding="utf-8")
    target = tmp_path / "notes.txt" / "kd.db"
    line = error_line(invoke(["ingest", "train.tsv"], db=target, ok=False))
    assert line == f"Error: cannot create {target}: {target.parent} is a file, not a folder"
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "x"


def test_ingest_into_missing_folder_fails_cleanly(tmp_path, invoke, write_file, error_line):
    write_file("train.tsv", GOOD)
    target = tmp_path / "nowhere" / "kd.db"
    result = invoke(["ingest", "train.tsv"], db=target, ok=False)
    line = error_line(result)
    assert "does not exist" in line and str(target.parent) in line
    assert not target.parent.exists()


@pytest.mark.sqlite_only  # the URL is the test's own
@pytest.mark.parametrize("url, message", [
    ("postgres://u@h/db", "cannot use the database URL postgres://u@h/db (SQLAlchemy spells it postgresql+psycopg://)"),
    ("mysql://x@h/kd", "cannot use the database URL mysql://x@h/kd: No module named"),  # no driver installed
    ("://x", "cannot use the database URL ://x: Could not parse"),
    # a port that is no number: SQLAlchemy's ValueError was a traceback (the password shown as everywhere)
    ("postgresql+psycopg://u:s3cret@h:notaport/x", "cannot use the database URL postgresql+psycopg://u:***@h:notaport/x: "),
    ("postgresql+psycopg://u:s3cret@[::1/x", "cannot use the database URL postgresql+psycopg://u:***@[::1/x: "),
])
def test_a_database_url_kd_cannot_use_is_one_line(invoke, url, message, error_line):
    assert message in error_line(invoke(["runs"], db=url, ok=False))
    assert message in error_line(invoke(["db", "current"], db=url, ok=False))


@pytest.mark.sqlite_only  # the URLs are the test's own
def test_a_database_url_without_its_slashes_is_refused_not_made_a_file_so_named(invoke, write_file, tmp_path, monkeypatch, error_line):
    """`--db sqlite:kd.db` (or KD_DB so) made a SQLite store in a file named "sqlite:kd.db", unseen."""
    write_file("train.tsv", "pos\tgood\n")
    monkeypatch.chdir(tmp_path)
    for url in ("sqlite:kd.db", "sqlite:/kd.db", "postgresql+psycopg:me@h/kd"):
        line = error_line(invoke(["ingest", "train.tsv"], db=url, ok=False))
        assert line.startswith(f"Error: {url}: looks like a database URL without its '//'"), line
    assert not [p for p in tmp_path.iterdir() if ":" in p.name]
    assert invoke.json(["ingest", "train.tsv"], db="./sqlite:kd.db")["added"] == 1  # a file so named, said so


@pytest.mark.sqlite_only
def test_an_empty_db_option_is_refused_not_taken_for_kd_db(invoke, write_file, tmp_path, monkeypatch, error_line):
    """`--db "$STORE"` with STORE unset wrote to ./kd.db (or $KD_DB) unseen."""
    monkeypatch.chdir(tmp_path)
    write_file("train.tsv", GOOD)
    line = error_line(invoke(["ingest", "train.tsv"], db="", ok=False))
    assert "--db is empty" in line
    assert not (tmp_path / "kd.db").exists()
    monkeypatch.setenv("KD_DB", "  ")  # a blank KD_DB is named as such, not as an --db nobody typed
    assert "Error: KD_DB is blank" in error_line(invoke(["ingest", "train.tsv"], db=None, ok=False))
    assert not (tmp_path / "kd.db").exists()


@pytest.mark.new_database
def test_missing_input_file_fails_cleanly(invoke, db, error_line):
    result = invoke(["ingest", "absent.tsv"], ok=False)
    line = error_line(result)
    assert "absent.tsv" in line and "cannot read" in line
    assert not store_exists(db)


@pytest.mark.new_database
def test_failed_first_ingest_leaves_no_store_behind(invoke, write_file, db):
    write_file("bad.tsv", b"pos\tok\nneg\t\n")
    invoke(["ingest", "bad.tsv"], ok=False)
    assert not store_exists(db)
    write_file("good.tsv", GOOD)  # a --source no store can hold: refused before the store is made
    invoke(["ingest", "good.tsv", "--source", "s" * 501], ok=False)
    assert not store_exists(db)
    # so a later read still says there is no store, instead of silently showing an empty one
    invoke(["samples"], ok=False)


@pytest.mark.parametrize(
    "name, content",
    [
        pytest.param("sst.tsv", "sentence\tlabel\nhello there\t1\n", id="sentence-label"),  # SST-2
        pytest.param("cap.csv", "Label,Text\n1,hello there\n", id="capitalized"),
    ],
)
def test_detected_header_gives_default_columns(name, content, invoke, write_file, read_samples):
    write_file(name, content)
    invoke(["ingest", name])
    assert [(r["text"], r["label"]) for r in read_samples()] == [("hello there", "1")]


def test_writing_into_a_missing_folder_makes_it_and_a_file_in_the_way_is_one_line(invoke, write_file, tmp_path, error_line):
    """`kd classes --export no/such/class_id.txt` said a bare "No such file or directory" where kd
    export and kd report --plot make their folders."""
    write_file("train.tsv", GOOD)
    invoke(["ingest", "train.tsv"])
    target = tmp_path / "no" / "such" / "class_id.txt"
    said = invoke(["classes", "--export", str(target)])
    assert target.read_text(encoding="utf-8").split() == ["0", "pos", "1", "neg"]
    assert f"wrote 2 classes to {target} (`kd ingest --classes {target}` pins them" in said.stderr  # (the list alone was printed)
    write_file("afile", "x")
    assert error_line(invoke(["classes", "--export", "afile/class_id.txt"], ok=False)) == (
        "Error: cannot write the class file afile/class_id.txt: afile is a file, not a folder")
    empty = invoke(["classes", "--export", ""], ok=False)  # printed the classes and wrote nothing
    assert empty.output == "Error: --export is empty: give a file name, or omit --export\n"
    # a name ending in / is a folder: it wrote a file called "out" (Path drops the slash), as a sheet's did
    folder = invoke(["classes", "--export", "out/"], ok=False)
    assert "out/ is a folder: give the file's name (out/class_id.txt)" in folder.output and not (tmp_path / "out").exists()


def test_classes_export_onto_another_file_is_refused_without_overwrite(invoke, write_file, tmp_path, error_line):
    """`kd classes --export train.tsv` (the tab key's slip) replaced the training data with the class list;
    the same class file is written again as before, and --overwrite replaces another one."""
    write_file("train.tsv", GOOD)
    invoke(["ingest", "train.tsv"])
    assert error_line(invoke(["classes", "--export", "train.tsv"], ok=False)) == (
        "Error: train.tsv exists and holds something other than these classes: --overwrite replaces it")
    assert (tmp_path / "train.tsv").read_text(encoding="utf-8") == GOOD
    invoke(["classes", "--export", "class_id.txt"])
    invoke(["classes", "--export", "class_id.txt"])  # the same classes: no --overwrite needed
    write_file("saved.txt", "\ufeffpos\r\nneg\r\n")  # (saved on Windows: a BOM, \r\n, names alone) the same classes too
    invoke(["classes", "--export", "saved.txt"])
    invoke(["classes", "--export", "train.tsv", "--overwrite"])
    assert (tmp_path / "train.tsv").read_text(encoding="utf-8") == (tmp_path / "class_id.txt").read_text(encoding="utf-8")


def test_classes_of_a_store_without_any_says_so(invoke, write_file):
    """`kd classes` on a store of unlabeled samples alone printed nothing and exited 0 (`kd classes >
    class_id.txt` an empty file, no word), where `--export` says the store has no classes yet."""
    write_file("pool.tsv", "text\n只有文本\n另一条\n")
    invoke(["ingest", "pool.tsv", "--split", "unlabeled"])
    listed = invoke(["classes"])
    assert listed.stdout == "" and listed.stderr == (
        "note: the store has no classes yet: ingest labeled samples (or `kd ingest --classes FILE`) first\n"), listed.stderr
    assert invoke.json(["classes"]) == []


def test_a_quoted_tilde_on_the_command_line_is_the_home_folder(invoke, write_file, tmp_path, monkeypatch, read_samples):
    """`kd ingest '~/train.tsv'` or `--classes '~/c.txt'` (quoted, so no shell expands it) said "No such
    file", and `kd classes --export '~/c.txt'` failed, as a config file's "~/..." did not."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    (home / "train.tsv").write_text(GOOD, encoding="utf-8")
    (home / "c.txt").write_text("pos\nneg\n", encoding="utf-8")
    invoke(["ingest", "~/train.tsv", "--classes", "~/c.txt"])
    assert {r["source"] for r in read_samples()} == {"train.tsv"}
    invoke(["classes", "--export", "~/out/class_id.txt"])
    assert (home / "out" / "class_id.txt").read_text(encoding="utf-8").split() == ["0", "pos", "1", "neg"]
    assert not (tmp_path / "~").exists()


def test_a_pool_text_that_is_its_column_name_round_trips_through_samples_tsv(invoke, write_file, tmp_path):
    """A pool text that is a column word (a query log's "text") was ingested from a headerless file, but
    ``kd samples --split unlabeled --limit 0 --tsv``, which writes a ``text`` header, made a file
    ``kd ingest`` refused ("the header row again"): one column equal to its header is a text, while
    a whole row of several equal to the header stays refused."""
    write_file("pool.txt", "好吃\ntext\n一般\n")
    invoke(["ingest", "pool.txt", "--split", "unlabeled"])
    out = invoke(["samples", "--split", "unlabeled", "--limit", "0", "--tsv"]).stdout
    assert out == "text\n好吃\ntext\n一般\n"
    (tmp_path / "out.tsv").write_text(out, encoding="utf-8")
    back = invoke.json(["ingest", str(tmp_path / "out.tsv"), "--split", "unlabeled"], db=tmp_path / "other.db")
    assert back["added"] == 3


def test_samples_tsv_round_trips_through_ingest(invoke, write_file, tmp_path):
    """``kd samples --split train --limit 0 --tsv`` writes what ``kd ingest`` reads back: current
    labels, dropped samples left out, a text's tab or line break as a space."""
    write_file("t.jsonl", '{"text": "好吃", "label": "pos"}\n{"text": "太\\t难\\n吃", "label": "neg"}\n{"text": "一般", "label": "pos"}\n')
    invoke(["ingest", "t.jsonl"])
    ids = [r["id"] for r in invoke.json(["samples"])]
    invoke(["labels", "set", "--run", "fix", f"{ids[2]}=neg", f"{ids[0]}=drop"])
    result = invoke(["samples", "--split", "train", "--limit", "0", "--tsv"])
    assert result.stdout == "label\ttext\nneg\t太 难 吃\nneg\t一般\n"
    assert "1 text had tabs or line breaks" in result.stderr
    (tmp_path / "out.tsv").write_text(result.stdout, encoding="utf-8")
    other = tmp_path / "other.db"
    back = invoke.json(["ingest", str(tmp_path / "out.tsv")], db=other)
    assert (back["added"], back["added_per_class"]) == (2, {"neg": 2})
    assert "--tsv needs --split" in invoke(["samples", "--tsv"], ok=False).stderr
    # under its header, a class or a first text that is a column word is data, not a header
    write_file("q.tsv", "query\ttext\nlabel\treview\n")
    invoke(["ingest", "q.tsv", "--no-header"], db=tmp_path / "q.db")
    (tmp_path / "q.out.tsv").write_text(invoke(["samples", "--split", "train", "--limit", "0", "--tsv"], db=tmp_path / "q.db").stdout, encoding="utf-8")
    again = invoke.json(["ingest", str(tmp_path / "q.out.tsv")], db=tmp_path / "q2.db")
    assert again["added_per_class"] == {"query": 1, "label": 1}


def test_samples_tsv_round_trips_texts_in_quotes(invoke, write_file, tmp_path):
    """A stored text that looks like a spreadsheet's quoted field (a quote, 他说, two quotes, 好, three
    quotes: from JSON lines)
    made ``kd ingest`` read the whole ``--tsv`` file as a spreadsheet's: every text in plain quotes
    ('"好"') came back without them, unseen. A text that starts with a quote is written in quotes, its
    quotes doubled, so the texts read back are the ones stored (labeled and pool alike)."""
    texts = ['"好"', '"他说""好"""', 'a"b', '""""']
    pool = ['"池"', '"他说""池"""', '"双十一"买的']
    write_file("t.jsonl", "".join(json.dumps({"text": t, "label": "pos"}, ensure_ascii=False) + "\n" for t in texts))
    write_file("p.jsonl", "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in pool))
    invoke(["ingest", "t.jsonl"])
    invoke(["ingest", "p.jsonl", "--split", "unlabeled"])
    for split, want in (("train", texts), ("unlabeled", pool)):
        (tmp_path / f"{split}.out.tsv").write_text(invoke(["samples", "--split", split, "--limit", "0", "--tsv"]).stdout, encoding="utf-8")
        invoke(["ingest", str(tmp_path / f"{split}.out.tsv"), "--split", split], db=tmp_path / "back.db")
        assert [r["text"] for r in invoke.json(["samples", "--split", split, "--limit", "0"], db=tmp_path / "back.db")] == want


def test_samples_tsv_leaves_out_augmented_texts_and_says_when_it_is_cut(invoke, write_file, db, monkeypatch):
    """The pool written by ``--split unlabeled --tsv`` holds the ingested texts, not the ones
    ``kd distill --augment`` stored beside them ([UNK]-masked copies of train texts); and a
    ``--limit`` that leaves samples out says so (``> train.tsv`` without ``--limit 0`` kept 20)."""
    from kdstore.ingest import Record, add_records
    from kdstore.store import Store

    write_file("t.tsv", "pos\t好吃\nneg\t难吃\n")
    invoke(["ingest", "t.tsv"])
    write_file("pool.txt", "一般\n还行\n")
    invoke(["ingest", "pool.txt", "--split", "unlabeled"])
    store = Store.open(db)
    add_records(store, [Record(text="[UNK]吃", label=None, line=None, parent_id=1)], "aug", IngestOptions(split="unlabeled", source="aug"))
    store.close()
    listed = invoke.json(["samples", "--split", "unlabeled"])
    assert [r["parent_id"] for r in listed] == [None, None, 1]  # the augmented text says where it came from
    assert "unlabeled (augmented from 1)" in invoke(["samples", "--split", "unlabeled"]).stdout
    only = invoke.json(["samples", "--split", "augmented"])  # the row kd ingest's table counts as augmented
    assert [(r["text"], r["parent_id"]) for r in only] == [("[UNK]吃", 1)]
    assert "--split augmented --json" in invoke(["samples", "--split", "augmented", "--tsv"], ok=False).output
    monkeypatch.setattr("commands.common.TABLE_ROWS", 2)  # more rows than a table holds: plain columns
    assert invoke(["samples", "--limit", "0"]).stdout.splitlines()[-2:] == ["4\tunlabeled\t\t还行", "5\tunlabeled (augmented from 1)\t\t[UNK]吃"]
    pool = invoke(["samples", "--split", "unlabeled", "--limit", "0", "--tsv"])
    assert pool.stdout == "text\n一般\n还行\n" and pool.stderr == ""
    cut = invoke(["samples", "--split", "train", "--limit", "1", "--tsv"])
    assert cut.stdout == "label\ttext\npos\t好吃\n" and "wrote the first 1 sample only (--limit 0 for all)" in cut.stderr
    whole = invoke(["samples", "--split", "train", "--limit", "2", "--tsv"])
    assert whole.stdout == "label\ttext\npos\t好吃\nneg\t难吃\n" and whole.stderr == ""
    # its parent dropped, kd distill leaves it out: said (listed as before, its count was not the distill summary's)
    invoke(["labels", "set", "--run", "r", "1=drop"])
    assert "unlabeled (augmented from 1, which is dropped)" in invoke(["samples", "--split", "augmented"]).stdout
    assert [r["parent_dropped"] for r in invoke.json(["samples", "--split", "unlabeled"])] == [False, False, True]


def test_samples_label_with_a_split_of_no_labels_says_so(invoke, write_file, db):
    """`kd samples --split augmented --label neg` (the texts made from negative reviews, one would
    think) listed an empty table and said nothing: those texts have no label, their parent's is in
    their meta. Refused with the --where that reads it; `--split unlabeled --label` alike."""
    from kdstore.ingest import Record, add_records
    from kdstore.store import Store

    write_file("t.tsv", "pos\t好吃\nneg\t难吃\n")
    invoke(["ingest", "t.tsv"])
    store = Store.open(db)
    add_records(store, [Record(text="[UNK]吃", label=None, line=None, parent_id=2, meta={"parent_label": "neg"})], "aug",
                IngestOptions(split="unlabeled", source="aug"))
    store.close()
    for split in ("augmented", "unlabeled"):
        out = invoke(["samples", "--split", split, "--label", "neg"], ok=False)
        assert out.exit_code == 2 and "have no label" in out.output and "Traceback" not in out.output, out.output
    assert "--where \"meta->>'parent_label' = 'neg'\"" in out.output
    listed = invoke.json(["samples", "--split", "augmented", "--where", "meta->>'parent_label' = 'neg'"])
    assert [r["text"] for r in listed] == ["[UNK]吃"]  # what the error says to type
    assert [r["text"] for r in invoke.json(["samples", "--label", "neg"])] == ["难吃"]  # without --split, as before


def test_samples_json_says_when_the_limit_left_samples_out(invoke, write_file):
    """`kd samples --split train --json > train.json` kept the default 20 samples without a word
    (--tsv warns): standard output stays one JSON document, the warning goes to standard error."""
    write_file("t.tsv", "".join(f"pos\t好吃{i}\n" for i in range(25)))
    invoke(["ingest", "t.tsv"])
    cut = invoke(["samples", "--split", "train", "--json"])
    assert len(json.loads(cut.stdout)) == 20 and "listed the first 20 samples only (--limit 0 for all)" in cut.stderr
    for limit in ("0", "25"):
        whole = invoke(["samples", "--split", "train", "--json", "--limit", limit])
        assert len(json.loads(whole.stdout)) == 25 and whole.stderr == ""


def test_samples_table_says_when_the_limit_left_samples_out(invoke, write_file, monkeypatch):
    """The table showed the first 20 samples of 25 without a word (--json and --tsv said so): a
    store looked smaller than it was. The note goes to standard error, the listing stays as it was."""
    write_file("t.tsv", "".join(f"pos\t好吃{i}\n" for i in range(25)))
    invoke(["ingest", "t.tsv"])
    cut = invoke(["samples"])
    assert "好吃19" in cut.stdout and "好吃20" not in cut.stdout
    assert cut.stderr == "warning: listed the first 20 samples only (--limit 0 for all)\n"
    for limit in ("0", "25"):
        whole = invoke(["samples", "--limit", limit])
        assert "好吃24" in whole.stdout and whole.stderr == ""
    monkeypatch.setattr("commands.common.TABLE_ROWS", 2)  # plain columns: the note stays out of them
    cut = invoke(["samples", "--limit", "3"])
    assert cut.stdout.splitlines() == ["id\tsplit\tlabel\ttext", "1\ttrain\tpos\t好吃0", "2\ttrain\tpos\t好吃1", "3\ttrain\tpos\t好吃2"]
    assert "listed the first 3 samples only" in cut.stderr


def test_samples_json_says_where_each_sample_came_from(invoke, write_file):
    """Ingest keeps each row's source, line and other columns (a row's own id, a shop) as the
    sample's metadata, and `--where "source = '...'"` selects on them, yet no command showed them:
    `kd samples --json` gives them, so a sample maps back to its row."""
    write_file("m.csv", "id,text,label,shop\n7,好吃,pos,A\n8,难吃,neg,B\n")
    invoke(["ingest", "m.csv"])
    invoke(["ingest", "-", "--split", "dev", "--source", "shop-c"], input="pos\t一般\n")
    rows = invoke.json(["samples"])
    assert [(r["text"], r["source"], r["line"], r["meta"]) for r in rows] == [
        ("好吃", "m.csv", 2, {"id": "7", "shop": "A"}), ("难吃", "m.csv", 3, {"id": "8", "shop": "B"}), ("一般", "shop-c", 1, None)]


def test_sample_tables_show_control_characters_instead_of_sending_them(invoke, write_file, monkeypatch, tmp_path):
    """A text holding an ANSI colour code (ESC [31m, scraped with it) went to the terminal as it was:
    the rest of the table turned red and its borders no longer lined up. The table shows it as
    ``␛``; --json and --tsv keep the text as it is (--tsv to a file or pipe lost the code: click
    cut it out, and the text read back was another one)."""
    write_file("t.jsonl", '{"text": "带\\u001b[31m红色\\u001b[0m字", "label": "pos"}\n{"text": "a\\u009bb\\u007fc", "label": "neg"}\n')
    invoke(["ingest", "t.jsonl"])
    table = invoke(["samples"]).stdout
    assert "\x1b" not in table and "\x9b" not in table and "\x7f" not in table
    assert "带␛[31m红色␛[0m字" in table and "a\\x9bb␡c" in table
    assert [r["text"] for r in invoke.json(["samples"])] == ["带\x1b[31m红色\x1b[0m字", "a\x9bb\x7fc"]
    tsv = invoke(["samples", "--split", "train", "--tsv"]).stdout
    assert tsv.splitlines()[1] == "pos\t带\x1b[31m红色\x1b[0m字"
    (tmp_path / "back.tsv").write_text(tsv, encoding="utf-8")
    invoke(["ingest", str(tmp_path / "back.tsv")], db=tmp_path / "back.db")
    assert [r["text"] for r in invoke.json(["samples"], db=tmp_path / "back.db")] == ["带\x1b[31m红色\x1b[0m字", "a\x9bb\x7fc"]
    monkeypatch.setattr("commands.common.TABLE_ROWS", 1)  # plain columns too
    assert invoke(["samples"]).stdout.splitlines()[1:] == ["1\ttrain\tpos\t带␛[31m红色␛[0m字", "2\ttrain\tneg\ta\\x9bb␡c"]


@pytest.mark.sqlite_only  # the URL is the test's own
@pytest.mark.parametrize("url", ["sqlite://", ":memory:", "sqlite:///:memory:", "sqlite:///file::memory:?uri=true"])
def test_an_in_memory_store_is_refused(invoke, write_file, url, error_line):
    """Every command would write into a database that is gone when kd exits: "added 2" and nothing kept."""
    write_file("train.tsv", GOOD)
    line = error_line(invoke(["ingest", "train.tsv"], db=url, ok=False))
    assert "in-memory SQLite database" in line and "give a file path" in line


@pytest.mark.sqlite_only  # the URLs are the test's own
def test_a_sqlite_uri_url_opens_its_file_and_uri_parameters_sqlite_would_not_read_are_refused(
        invoke, write_file, db_path, tmp_path, counts, error_line):
    """SQLAlchemy's sqlite:///file:PATH?mode=ro&uri=true was "no kd store at file:PATH"; ?mode=ro without
    uri=true was ignored (with a warning) and the store written; with uri=true but no file: a new store
    named 'kd.db?mode=ro' was made and filled beside the one meant."""
    write_file("train.tsv", GOOD)
    invoke(["ingest", "train.tsv"])
    before = counts()
    rows = invoke.json(["samples"], db=f"sqlite:///file:{db_path}?mode=ro&uri=true")
    assert [r["text"] for r in rows] == ["already here one", "already here two"]
    write_file("more.tsv", "pos\tnew text\n")
    line = error_line(invoke(["ingest", "more.tsv"], db=f"sqlite:///{db_path}?mode=ro", ok=False))
    assert line == f"Error: sqlite:///{db_path}?mode=ro: SQLite reads 'mode' only in a URI (here it would be ignored): " \
                   f"give sqlite:///file:{db_path}?mode=ro&uri=true"
    # its 'file:' already typed, uri=true left out: the URL to give was sqlite:///file:file:PATH
    line = error_line(invoke(["ingest", "more.tsv"], db=f"sqlite:///file:{db_path}?mode=ro", ok=False))
    assert line.endswith(f"give sqlite:///file:{db_path}?mode=ro&uri=true")
    line = error_line(invoke(["ingest", "more.tsv"], db=f"sqlite:///{db_path}?mode=ro&uri=true", ok=False))
    assert f"here it would open a new file named '{db_path}?mode=ro'" in line
    assert sorted(p.name for p in db_path.parent.iterdir() if "?" in p.name) == []
    # a write through the read-only URI: SQLite's "attempt to write a readonly database" named no cause
    line = error_line(invoke(["ingest", "more.tsv"], db=f"sqlite:///file:{db_path}?mode=ro&uri=true", ok=False))
    assert line.endswith("attempt to write a readonly database: this command writes, and the store was opened read-only "
                         "(a read-only file or folder, or mode=ro in a sqlite:///file:...?uri=true URL); nothing was changed")
    assert counts() == before
    assert invoke.json(["ingest", "more.tsv"], db=f"sqlite:///{db_path}?timeout=30")["added"] == 1  # (a driver option)


@pytest.mark.sqlite_only  # the URLs are the test's own
def test_a_sqlite_uri_path_ends_at_its_query_as_sqlite_reads_it(invoke, write_file, tmp_path, error_line):
    """In sqlite:///file:PATH?uri=true SQLAlchemy decodes a "%3F" of PATH, and SQLite reads the "?" as
    the start of the URI's query: the store opened is the file before it. kd took the whole PATH for the
    file (its folder for the models, its existence for "no kd store"), and an empty store "q" was made."""
    write_file("train.tsv", GOOD)
    (tmp_path / "q?x=1").mkdir()
    invoke(["ingest", "train.tsv"], db=tmp_path / "q?x=1" / "kd.db")
    url = f"sqlite:///file:{tmp_path}/q%3Fx=1/kd.db?uri=true"
    assert sqlite_path(url) == tmp_path / "q"
    line = error_line(invoke(["samples"], db=url, ok=False))
    assert line == (f"Error: no kd store at {tmp_path / 'q'} (no such file): check the path, or run "
                    f"`kd ingest FILE --db {tmp_path / 'q'}` first to make one there")
    assert not (tmp_path / "q").exists()


@pytest.mark.sqlite_only  # the paths are the test's own
def test_a_db_that_is_a_folder_or_no_sqlite_file_is_named(invoke, write_file, tmp_path, error_line):
    """SQLite says "file is not a database" without saying which: kd names the --db it was given,
    and leaves the file as it was."""
    write_file("train.tsv", GOOD)
    line = error_line(invoke(["samples"], db=tmp_path / "train.tsv", ok=False))
    assert line == f"Error: {tmp_path / 'train.tsv'}: not a SQLite database (not a kd store): give another --db"
    assert (tmp_path / "train.tsv").read_text(encoding="utf-8") == GOOD
    (tmp_path / "one.tsv").write_bytes(b"\n")  # (SQLite took a file of one byte for an empty database, and overwrote it)
    line = error_line(invoke(["ingest", "train.tsv"], db=tmp_path / "one.tsv", ok=False))
    assert line == f"Error: {tmp_path / 'one.tsv'}: not a SQLite database (not a kd store): give another --db"
    assert (tmp_path / "one.tsv").read_bytes() == b"\n"
    (tmp_path / "dir.db").mkdir()
    assert "dir.db: is a folder, not a store" in error_line(invoke(["ingest", "train.tsv"], db=tmp_path / "dir.db", ok=False))
    (tmp_path / "empty.db").touch()  # an empty file is a new SQLite database: kd makes its store there
    assert invoke.json(["ingest", "train.tsv"], db=tmp_path / "empty.db")["added"] == 2


@pytest.mark.new_database
def test_a_compressed_file_an_image_or_a_workbook_is_named_as_what_it_is(invoke, tmp_path, error_line):
    """A gzip of a TSV was "line 1: field 0: binary data (NUL byte): not a text file", with no word of
    decompressing it; kd pretrain --corpus and --classes read it so too."""
    import gzip

    from kdstore.pretrain import read_corpus

    (tmp_path / "train.tsv.gz").write_bytes(gzip.compress(GOOD.encode()))
    line = error_line(invoke(["ingest", str(tmp_path / "train.tsv.gz")], ok=False))
    assert line == f"Error: {tmp_path / 'train.tsv.gz'}: a gzip-compressed file, not text: decompress it first (gunzip -k {tmp_path / 'train.tsv.gz'})"
    assert not store_exists(invoke.db)
    line = error_line(invoke(["ingest", "-"], input=gzip.compress(GOOD.encode()), ok=False))
    assert line == "Error: <stdin>: a gzip-compressed file, not text: decompress it first (pipe it through gunzip)"
    with pytest.raises(KdError, match=r"^gz.tsv: a gzip-compressed file, not text: decompress it first \(gunzip < gz.tsv > unpacked-gz.tsv\)$"):
        parse(gzip.compress(GOOD.encode()), "gz.tsv", IngestOptions())
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))
    with pytest.raises(KdError, match=r"^shot.tsv: a PNG image, not a text file$"):
        parse(png, "shot.tsv", IngestOptions())
    with pytest.raises(KdError, match=r"^book.csv: an Excel workbook \(or other zip file\), not text: "):
        parse(b"PK\x03\x04\x14\x00\x06\x00" + bytes(100), "book.csv", IngestOptions())
    (tmp_path / "news.txt.xz").write_bytes(b"\xfd7zXZ\x00\x00\x04" + bytes(40))
    with pytest.raises(KdError, match=r"news.txt.xz: an xz-compressed file, not text: decompress it first \(unxz -k "):
        read_corpus((str(tmp_path / "news.txt.xz"),))
    assert parse(b"BZh is a text\tpos\n", "t.tsv", IngestOptions(text_col="0", label_col="1"))[0].text == "BZh is a text"


def test_class_file_of_binary_data_and_export_to_dash_are_refused(invoke, write_file, tmp_path, error_line):
    write_file("train.tsv", GOOD)
    (tmp_path / "classes.bin").write_bytes(b"pos\n\x01\x02neg\n")
    line = error_line(invoke(["ingest", "train.tsv", "--classes", str(tmp_path / "classes.bin")], ok=False))
    assert "classes.bin: line 2: a control character" in line
    invoke(["ingest", "train.tsv"])
    assert "kd classes > class_id.txt" in invoke(["classes", "--export", "-"], ok=False).stderr
    assert not (tmp_path / "-").exists()


@pytest.mark.parametrize("args", [["ingest", "-"], ["predict", "--run", "r1"]])
def test_closed_stdin_is_one_line(tmp_path, args):
    """``kd ingest - <&-`` (a cron job, a daemon): no stdin at all, not a traceback."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "KD_DB": str(tmp_path / "kd.db"), "KD_NO_PROGRESS": "1", "PYTHONPATH": str(root)}
    result = subprocess.run([sys.executable, "-m", "commands.cli", *args], stdin=subprocess.DEVNULL, close_fds=True,
                            preexec_fn=lambda: os.close(0), env=env, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == "Error: stdin is closed: give a FILE, or pipe the text in"
    assert not (tmp_path / "kd.db").exists()


def test_a_database_error_while_bulk_writing_is_sqlalchemys_on_every_backend(invoke, write_file, db):
    """PostgreSQL's bulk rows go by COPY on the driver's own cursor: its errors (a constraint, a
    trigger, a full disk) must come out as SQLAlchemy's, as SQLite's executemany does: the CLI makes
    one line of those (it printed psycopg's traceback)."""
    from sqlalchemy.exc import IntegrityError

    from kdstore.schema import Logit
    from kdstore.store import Store, bulk_insert

    invoke(["ingest", write_file("a.tsv", "pos\t很好\n")])
    store = Store.open(db, create=False)
    try:
        with pytest.raises(IntegrityError), store.engine.begin() as conn:  # no stage 999
            bulk_insert(conn, Logit.__table__, ("stage_id", "sample_id", "vector"), [(999, 1, b"\0\0\0\0")])
    finally:
        store.close()


def test_a_source_name_with_a_nul_character_is_refused_on_every_backend(invoke, write_file, counts, error_line):
    """Only a config file can give one ("\\u0000"): SQLite stored it, PostgreSQL crashed on it."""
    invoke(["ingest", write_file("a.tsv", "pos\t很好\n")])
    before = counts()
    write_file("kd.toml", '[ingest]\nsource = "a\\u0000b"\n')
    result = invoke(["ingest", write_file("b.tsv", "neg\t太差\n")], ok=False)
    assert "the source name contains a NUL character" in error_line(result)
    assert counts() == before


def test_a_database_error_names_the_store(tmp_path):
    """A driver error (here a trigger; in life a full disk) is one line that says which store."""
    import sqlite3

    from synthetic import kd, write_tsv

    db = tmp_path / "full.db"
    kd("ingest", str(write_tsv(tmp_path / "a.tsv", [("pos", "好")])), "--db", str(db))
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TRIGGER full BEFORE INSERT ON samples BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END")
    result = kd("ingest", str(write_tsv(tmp_path / "b.tsv", [("neg", "差")])), "--db", str(db), ok=False)
    assert result.output.strip() == f"Error: database error in {db}: database or disk is full"


@pytest.mark.sqlite_only
def test_opening_a_store_again_keeps_this_processs_locks_on_it(tmp_path):
    """Python's open()/close() of the store file (the "is it SQLite?" check) dropped every POSIX lock
    this process held on it: another process could then write under a transaction still open here."""
    import sqlite3

    from kdstore.store import _check_sqlite_file

    db = tmp_path / "kd.db"
    held = sqlite3.connect(db, isolation_level=None)
    held.execute("CREATE TABLE t (x)")
    held.execute("BEGIN EXCLUSIVE")
    _check_sqlite_file(db)
    probe = "import sqlite3, sys\ntry:\n    sqlite3.connect(sys.argv[1], timeout=0).execute('INSERT INTO t VALUES (1)')\n" \
            "except sqlite3.OperationalError as e:\n    print(e)\n"
    out = subprocess.run([sys.executable, "-c", probe, str(db)], capture_output=True, text=True, check=True).stdout
    held.rollback()
    held.close()
    assert "database is locked" in out
    (tmp_path / "text.db").write_text("label\ttext\n", encoding="utf-8")
    with pytest.raises(KdError, match="not a SQLite database"):
        _check_sqlite_file(tmp_path / "text.db")


def test_classes_export_of_a_store_without_classes_is_refused(invoke, write_file, error_line, tmp_path):
    """It wrote an empty class_id.txt, which `kd ingest --classes` then refused."""
    write_file("pool.txt", "一段没有标签的文字\n")
    invoke(["ingest", "pool.txt", "--split", "unlabeled"])
    line = error_line(invoke(["classes", "--export", str(tmp_path / "class_id.txt")], ok=False))
    assert "no classes yet" in line and not (tmp_path / "class_id.txt").exists()


def test_classes_export_cut_short_leaves_no_half_file_and_names_it(invoke, write_file, error_line, tmp_path, monkeypatch):
    """A full disk said only "Error: No space left on device"; a write cut part way (`ulimit -f`)
    left a class_id.txt missing classes, which `kd ingest --classes` then read as the whole list."""
    import errno
    import io

    write_file("train.tsv", "pos\t好吃\nneg\t难吃\n")
    invoke(["ingest", "train.tsv"])
    if Path("/dev/full").exists():
        assert error_line(invoke(["classes", "--export", "/dev/full"], ok=False)) == (
            "Error: /dev/full: cannot write the class file: No space left on device")
    target, real = tmp_path / "class_id.txt", Path.open

    class Cut(io.TextIOWrapper):
        def write(self, data):  # the first class reaches the disk, then the limit is hit
            super().write(data[:4])
            self.flush()
            raise OSError(errno.EFBIG, "File too large")

    def cut(self, mode="r", *a, **k):
        handle = real(self, mode, *a, **k)
        return Cut(handle.detach(), encoding="utf-8", newline="") if self == target and "w" in mode else handle

    monkeypatch.setattr(Path, "open", cut)
    assert error_line(invoke(["classes", "--export", str(target)], ok=False)) == (
        f"Error: {target}: cannot write the class file: File too large")
    assert not target.exists()


def test_reingesting_a_file_after_a_label_edit_is_no_conflict_with_its_own_line(invoke, write_file, read_samples):
    """A sample `kd labels` relabeled was listed, when its own file was ingested again, as a conflict
    that said the file's line "has" the new label: a row with the label the sample was ingested with
    is a duplicate, and the correction stands. Another label still is a conflict."""
    write_file("train.tsv", "pos\t好吃\nneg\t难吃\n")
    invoke(["ingest", "train.tsv"])
    invoke(["labels", "set", "--run", "r", "1=neg"])
    report = invoke.json(["ingest", "train.tsv"])
    assert (report["added"], report["duplicates"], report["conflicts"]) == (0, 2, [])
    assert "conflict" not in invoke(["ingest", "train.tsv"]).stdout.replace("0 conflicts", "")
    write_file("other.tsv", "mid\t好吃\n")
    report = invoke.json(["ingest", "other.tsv"])
    assert [(c["label"], c["kept_label"], c["kept_from"]) for c in report["conflicts"]] == [("mid", "neg", "train.tsv:1")]
    assert [(r["text"], r["label"]) for r in read_samples()] == [("好吃", "neg"), ("难吃", "neg")]


def test_a_class_file_line_of_three_fields_or_an_empty_class_file_is_refused(invoke, write_file, counts, read_classes,
                                                                            error_line):
    """'0<TAB>pos<TAB>x' was pinned as one class named with tabs (ingest --split unlabeled stored it,
    and `kd classes` then wrote no class file); an empty file said "unknown label 'pos' (pinned classes: )"."""
    write_file("pool.txt", "好吃\n难吃\n")
    write_file("train.tsv", "pos\t好吃\n")
    write_file("three.txt", "0\tpos\tx\n1\tneg\n")
    write_file("two_names.txt", "pos\tneg\n")
    write_file("empty.txt", "\n\n")
    for name, args in (("three.txt", ["pool.txt", "--split", "unlabeled"]), ("two_names.txt", ["pool.txt", "--split", "unlabeled"])):
        line = error_line(invoke(["ingest", *args, "--classes", name], ok=False))
        assert line.startswith(f"Error: {name}: line 1: expected id<TAB>name (or one name a line)"), line
    assert error_line(invoke(["ingest", "train.tsv", "--classes", "empty.txt"], ok=False)) == (
        "Error: empty.txt: no class names: give id<TAB>name lines, or one name a line")
    # an id without its name ('1<TAB>') was pinned as a class named '1'; a line of a lone tab is a blank line
    write_file("no_name.txt", "0\tpos\n1\t\n\t\n")
    assert error_line(invoke(["ingest", "pool.txt", "--split", "unlabeled", "--classes", "no_name.txt"], ok=False)) == (
        "Error: no_name.txt: line 2: an empty field beside a tab: expected id<TAB>name (or one name a line)")
    invoke(["ingest", "train.tsv"])
    before = counts()
    assert "no class names" in error_line(invoke(["ingest", "train.tsv", "--classes", "empty.txt"], ok=False))
    assert counts() == before and read_classes() == [(0, "pos")]


def test_a_class_file_naming_a_class_twice_or_skipping_an_id_names_the_line(invoke, write_file, error_line):
    """A class file of 40 lines with one class given twice, or an id left out, said only "class ids must be
    0..K-1 with distinct names": no line, no class, where every other class-file error names its line."""
    write_file("train.tsv", "pos\t好吃\n")
    write_file("twice.txt", "pos\nneg\nmid\nneg\n")
    write_file("twice_ids.txt", "0\tpos\n1\tneg\n2\tpos\n")
    write_file("gap.txt", "0\tpos\n\n5\tneg\n1\tmid\n")
    assert error_line(invoke(["ingest", "train.tsv", "--classes", "twice.txt"], ok=False)) == (
        "Error: twice.txt: line 4: class 'neg' is given twice (first on line 2): class names must be distinct")
    assert error_line(invoke(["ingest", "train.tsv", "--classes", "twice_ids.txt"], ok=False)) == (
        "Error: twice_ids.txt: line 3: class 'pos' is given twice (first on line 1): class names must be distinct")
    assert error_line(invoke(["ingest", "train.tsv", "--classes", "gap.txt"], ok=False)) == (
        "Error: gap.txt: line 3: class id 5, where class ids must be 0..K-1 (0..2 for 3 classes): no class has id 2")


@pytest.mark.new_database
def test_a_text_then_label_file_read_by_the_default_columns_is_refused_not_turned_into_a_class_per_text(
    invoke, write_file, db, counts, read_samples, read_classes, error_line
):
    """A headerless text,label CSV (or one under a header kd does not know: 内容,类别) was read as
    label,text: every news text became a class, the four class names the texts, and 116 of 120 rows
    conflicts, with exit 0. Many more different labels than texts is refused; the columns named read it."""
    topics = {"体育": "比赛", "财经": "股票", "科技": "芯片", "娱乐": "电影"}
    rows = [(f"第{i}条{marker}新闻", label) for i in range(5) for label, marker in topics.items()]
    body = "".join(f"{text},{label}\n" for text, label in rows)
    write_file("news.csv", body)
    write_file("cn.csv", "内容,类别\n" + body)
    for name in ("news.csv", "cn.csv"):
        line = error_line(invoke(["ingest", name], ok=False))
        assert line.startswith(f"Error: {name}: line 1: field 'label': column 0 read as the labels holds ") and "--text-col 0 --label-col 1" in line
        assert not store_exists(db)
    # the fix the error gave for cn.csv, the indexes, ingested its header as a sample of a new class '类别':
    # a line 1 whose "class" is on no other line is named as the header, by the names that read it
    header = error_line(invoke(["ingest", "cn.csv"], ok=False))
    assert "give --text-col '内容' --label-col '类别' (line 1 looks like a header" in header
    assert "holds 20 different values for 4 different texts" in header, header  # (the rows': not 21 for 5, the header counted)
    assert "give --text-col 0 --label-col 1 (or, if line 1 names" in error_line(invoke(["ingest", "news.csv"], ok=False))
    invoke(["ingest", "news.csv", "--text-col", "0", "--label-col", "1"])
    assert [name for _, name in read_classes()] == list(topics)
    before = counts()
    line = error_line(invoke(["ingest", "cn.csv", "--split", "unlabeled"], ok=False))  # (the pool would be the class names)
    assert "columns look swapped" in line and counts() == before
    invoke(["ingest", "cn.csv", "--text-col", "内容", "--label-col", "类别", "--split", "dev"])
    assert sorted({(r["text"], r["label"]) for r in read_samples()}) == sorted(set(rows))


@pytest.mark.new_database
def test_a_headerless_text_then_id_pool_is_refused_not_stored_as_its_ids(invoke, write_file, db, read_samples, error_line):
    """A headerless pool of reviews and their ids (text<TAB>id) was read as label, text: with
    --split unlabeled the reviews were dropped as the labels and the pool was 40 numbers, exit 0 (as
    many different ids as texts, so the swapped-columns check let it by). A text column of numbers
    only under a label column of many different values is refused; the indexes read it."""
    reviews = [f"第{i}条评论：房间干净，服务周到" for i in range(40)]
    write_file("pool.tsv", "".join(f"{text}\t{100000 + i}\n" for i, text in enumerate(reviews)))
    line = error_line(invoke(["ingest", "pool.tsv", "--split", "unlabeled"], ok=False))
    assert line.startswith("Error: pool.tsv: line 1: field 'label': column 0 read as the labels holds 40 different values") \
        and "in column 1, whole numbers (ids?): the columns look swapped" in line \
        and line.endswith("give --text-col 0 --label-col 1 (or, if line 1 names the columns, their names)"), line
    assert not store_exists(db)
    write_file("named.tsv", "评论\t编号\n" + "".join(f"{text}\t{100000 + i}\n" for i, text in enumerate(reviews)))
    line = error_line(invoke(["ingest", "named.tsv", "--split", "unlabeled"], ok=False))
    assert "whole numbers (ids?)" in line and "give --text-col '评论' --label-col '编号' (line 1 looks like a header" in line, line
    invoke(["ingest", "pool.tsv", "--split", "unlabeled", "--text-col", "0", "--label-col", "1"])
    assert sorted(r["text"] for r in read_samples()) == sorted(reviews)
    # a pool under a label column of star ratings (numbers as labels, not as texts) still reads by the default columns
    write_file("rated.tsv", "".join(f"{i % 5 + 1}\t第{i}条评分评论\n" for i in range(40)))
    invoke(["ingest", "rated.tsv", "--split", "unlabeled"])


@pytest.mark.new_database
def test_a_pool_of_json_lines_refuses_a_label_key_no_line_holds(invoke, write_file, db, read_samples, error_line):
    """`--split unlabeled --label-col lable` on JSON lines holding "label" stored the pool with each
    line's label kept in its metadata, exit 0: the mistyped key was left out of nothing (a TSV's
    header refuses the column). A --label-col no line holds is refused, naming the keys there are."""
    write_file("pool.jsonl", '{"text": "很好", "label": "1"}\n{"text": "不好", "label": "0"}\n')
    line = error_line(invoke(["ingest", "pool.jsonl", "--split", "unlabeled", "--label-col", "lable"], ok=False))
    assert line == "Error: pool.jsonl: line 1: field 'lable': no line holds this key (keys: 'text', 'label')", line
    assert not store_exists(db)
    invoke(["ingest", "pool.jsonl", "--split", "unlabeled", "--label-col", "label"])
    assert [(r["text"], r["label"], r["meta"]) for r in read_samples()] == [("很好", None, None), ("不好", None, None)]
    write_file("some.jsonl", '{"text": "一般"}\n{"text": "还行", "stars": 3}\n')  # (held by one line: read)
    invoke(["ingest", "some.jsonl", "--split", "unlabeled", "--label-col", "stars"])
    assert {r["text"]: r["meta"] for r in read_samples()}["还行"] is None


def test_parse_a_few_conflicting_rows_are_no_swapped_columns():
    """The refusal of swapped columns needs many labels: a small file with one text labeled twice reads."""
    records = parse("pos\t好\nneg\t好\n".encode(), "c.tsv", IngestOptions())
    assert [(r.label, r.text) for r in records] == [("pos", "好"), ("neg", "好")]
    labels = "".join(f"c{i}\tt{i}\n" for i in range(12))  # many classes of one text each: labels as many as texts
    assert len(parse(labels.encode(), "m.tsv", IngestOptions())) == 12


def test_samples_where_selects_by_sql_as_teach_does(invoke, write_file, error_line):
    """`kd samples` had no --where: the samples kd teach --where "source = 'shop.tsv'" trains on could
    not be listed."""
    write_file("shop.tsv", "pos\t好评一\nneg\t差评一\n")
    write_file("web.tsv", "pos\t好评二\n")
    invoke(["ingest", "shop.tsv"])
    invoke(["ingest", "web.tsv"])
    shop = invoke.json(["samples", "--where", "source = 'shop.tsv' -- a comment", "--label", "pos"])
    assert [(r["text"], r["label"], r["source"]) for r in shop] == [("好评一", "pos", "shop.tsv")]
    assert [r["text"] for r in invoke.json(["samples", "--where", "source = 'shop.tsv' OR source = 'web.tsv'", "--label", "neg"])] == ["差评一"]
    assert "Error: --where 'source = 1)': its parentheses do not pair up" in error_line(invoke(["samples", "--where", "source = 1)"], ok=False))
    assert "Invalid value for --where: is empty" in invoke(["samples", "--where", "  "], ok=False).output
    # a condition cut short: the ")" its error names is kd's, after it (SQLite: near ")"; PostgreSQL: at or near ")")
    assert error_line(invoke(["samples", "--where", "source ="], ok=False)).endswith(
        'near ")": syntax error (at the end of the condition: it stops short, an operator or keyword with nothing after it)'
        if "postgresql" not in invoke.db else
        'near ")" (at the end of the condition: it stops short, an operator or keyword with nothing after it)')


def test_a_where_that_fails_on_the_rows_it_reads_is_named_as_typed(invoke, write_file, error_line):
    """A condition that parses but fails on a row (PostgreSQL's cast of a text to int, SQLite's
    json_extract of a text that is no JSON) passed kd samples' check, which reads no row, and its
    error named the condition as kd joined it: "--where \"(text::int = 1\\n) AND label_id = 0\"",
    where kd teach names it as typed."""
    write_file("t.tsv", "pos\t很好\nneg\t太差\n")
    invoke(["ingest", "t.tsv"])
    where = "text::int = 1" if "postgresql" in invoke.db else "json_extract(text, '$.a') = 1"
    for extra in ([], ["--label", "pos"], ["--split", "train", "--tsv"]):
        line = error_line(invoke(["samples", "--where", where, *extra], ok=False))
        assert line.startswith(f"Error: --where {where!r} failed: "), line


def test_a_where_on_an_unknown_column_lists_the_columns_and_points_at_label(invoke, write_file, error_line, db, read_samples):
    """``--where "label = '3'"`` said only "no such column: label": the column is label_id, a class id,
    and ``label_id = 3`` selects the class whose id is 3, not the class named '3' (that is --label 3)."""
    write_file("t.tsv", "1\t很好\n3\t太差\n")
    invoke(["ingest", "t.tsv"])
    before = read_samples()
    for where, column in (("label = '3'", "label"), ("samples.label = '3'", "label"), ("Label = '3'", "label")):
        line = error_line(invoke(["samples", "--where", where], ok=False))
        assert line.startswith(f"Error: --where {where!r} failed: "), line
        assert column in line.lower()
        assert ("(the columns a --where may use: id, text, text_hash, split, label_id, orig_label_id, dropped, source, line, "
                "parent_id, meta; label_id is a class id, not its name (kd classes lists both): --label NAME selects a class by name)") in line
    assert [r["text"] for r in invoke.json(["samples", "--label", "3"])] == ["太差"]  # by name, as the error says
    if "postgresql" not in invoke.db:  # a placeholder: SQLite counted kd's own bindings ("uses 3, and there are 2 supplied")
        for where in ("text = ?", "text = :x"):
            assert error_line(invoke(["samples", "--where", where], ok=False)).endswith(
                "(a ? or :name is a placeholder, with no value to fill it: write the value itself, 'quoted')")
    assert read_samples() == before


def test_a_where_on_a_meta_key_as_a_column_says_how_to_read_it(invoke, write_file, error_line):
    """A JSONL file's other keys go into the JSON column meta: `--where "meta.source = 'jd'"` said
    "no such column: meta.source" and listed meta among the columns, with no word of how to read a key
    of it (neither the README nor any --help does), so a filter on the file's own fields was a guess."""
    write_file("ads.jsonl", '{"text": "全网最低价", "label": "exaggeration", "shop": "jd", "meta": {"date": "2024-05"}}\n'
                            '{"text": "国家级产品", "label": "forbidden", "shop": "pdd", "meta": {"date": "2024-07"}}\n')
    invoke(["ingest", "ads.jsonl"])
    for where, expr in (("meta.shop = 'jd'", "meta->>'shop'"), ("samples.meta.shop = 'jd'", "meta->>'shop'"),
                        ('meta.meta."date" < \'2024-06\'', "meta->'meta'->>'date'")):
        line = error_line(invoke(["samples", "--where", where], ok=False))
        assert line.startswith(f"Error: --where {where!r} failed: "), line
        assert line.endswith(f"(meta is a JSON column of each sample's other fields: {expr} reads one)"), line
        fixed = where.replace("samples.", "").replace('meta.meta."date"', expr).replace("meta.shop", expr)
        assert [r["text"] for r in invoke.json(["samples", "--where", fixed])] == ["全网最低价"]  # as the error says
    # the file's own "source" key is in meta too: a --where on the column source selects none, and says why
    write_file("src.jsonl", '{"text": "第一名的品质", "label": "exaggeration", "source": "jd"}\n')
    invoke(["ingest", "src.jsonl"])
    empty = invoke(["samples", "--where", "source = 'jd'"])
    assert empty.stderr == ("note: no sample matches --where \"source = 'jd'\"; the samples' sources are 'ads.jsonl' (2), "
                            "'src.jsonl' (1) (the file each came from, or its --source; a file's own columns are in meta: "
                            "meta->>'source' reads one)\n"), empty.stderr
    assert [r["text"] for r in invoke.json(["samples", "--where", "meta->>'source' = 'jd'"])] == ["第一名的品质"]
    # a class's id for its name: said which class it is (a Baidu-tool user's label files hold ids)
    assert error_line(invoke(["samples", "--label", "1"], ok=False)).endswith(
        "no class '1' (classes: exaggeration, forbidden); '1' is the id of class 'forbidden': classes are named by their names, not ids")
    # a class typed in full width (a Chinese input method's) is told apart from the class it looks like
    assert error_line(invoke(["samples", "--label", "ｆｏｒｂｉｄｄｅｎ"], ok=False)).endswith(
        "no class 'ｆｏｒｂｉｄｄｅｎ' (classes: exaggeration, forbidden); 'ｆｏｒｂｉｄｄｅｎ' differs from the class 'forbidden' only in "
        "character width or case, in white space, in a middle dot, in a variation selector or in how its number is written: write it as 'forbidden'")


def test_samples_label_in_a_store_of_no_classes_says_so(invoke, write_file, error_line):
    """`kd samples --label pos` on a store of unlabeled text only said "no class 'pos' (classes: )"."""
    write_file("pool.txt", "还没有标注的评论\n另一条评论\n")
    invoke(["ingest", "pool.txt", "--split", "unlabeled"])
    assert error_line(invoke(["samples", "--label", "pos"], ok=False)) == (
        "Error: no class 'pos': the store has no classes yet: kd ingest a labeled file first")


def test_a_where_typed_with_full_width_punctuation_says_so(invoke, write_file, error_line):
    """A Chinese input method types ‘’ “” （） ＝ ；: the error said "no such column: ‘" or 'near "）"',
    naming no cause, where the fix is the ASCII quote, parenthesis or operator."""
    write_file("t.tsv", "pos\t很好\nneg\t太差\n")
    invoke(["ingest", "t.tsv"])
    for where, mark in (("text LIKE ‘%很好%’", "‘"), ("text LIKE '%很好%’", "’"), ("text LIKE “%很好%”", "“"),
                        ("（split = 'train'）", "（"), ("split ＝ 'train'", "＝"), ("text LIKE '%很好%'；", "；")):
        line = error_line(invoke(["samples", "--where", where], ok=False))
        assert line.startswith(f"Error: --where {where!r} failed: "), line
        assert line.endswith(f"({mark} is a full-width or curly mark, which SQL reads as part of a name: type the ASCII one, ' \" ( ) = ; ,)"), line
    # inside a string it is text, as written: no hint where the condition fails for another reason
    assert "full-width" not in error_line(invoke(["samples", "--where", "text = '（好）' AND nope = 1"], ok=False))
    assert [r["text"] for r in invoke.json(["samples", "--where", "text <> '（好）’'"])] == ["很好", "太差"]


def test_a_where_on_label_id_where_classes_are_named_by_numbers_warns(invoke, write_file):
    """Classes named 1, 3, 2 (star ratings) have ids 0, 1, 2: ``--where "label_id = 3"`` listed nothing and
    ``label_id = 1`` the class named '3', without a word."""
    write_file("t.tsv", "1\t很好\n3\t太差\n2\t一般\n")
    invoke(["ingest", "t.tsv"])
    result = invoke(["samples", "--where", "label_id = 1", "--json"])
    assert [r["label"] for r in json.loads(result.stdout)] == ["3"]  # (the id, as SQL says; the warning says which class)
    assert result.stderr.strip().splitlines() == [
        "warning: --where compares label_id, a class id, not its name: class '1' has id 0, '3' id 1, '2' id 2 (kd classes); "
        "--label NAME selects a class by name"]
    assert "warning" not in invoke(["samples", "--where", "text LIKE '%好%'"]).stderr
    write_file("n.tsv", "pos\t好的\nneg\t差的\n")
    invoke(["ingest", "n.tsv"], db="named.db")  # classes named by words: label_id cannot be taken for a name
    assert "warning" not in invoke(["samples", "--where", "label_id = 1"], db="named.db").stderr
    # a class's name where its id goes: SQLite selected nothing, without a word (PostgreSQL refuses the string)
    quoted = invoke(["samples", "--where", "label_id = 'neg'"], db="named.db")
    assert quoted.stderr.strip().splitlines() == [
        "warning: --where compares label_id, a class id, with the string 'neg': class 'neg' has id 1 (kd classes); "
        "--label NAME selects a class by name"]


def test_a_where_postgresql_refuses_for_its_types_names_the_fix_on_every_backend(invoke, write_file, db, error_line):
    """PostgreSQL refuses ``label_id = 'neg'`` (a class's name for its id) and ``dropped = 0`` (a boolean
    compared with a number) with its bare type error ('invalid input syntax for type integer: "neg"',
    'operator does not exist: boolean = integer'), where on SQLite the first warns with the class's id
    and --label, and the second runs: the error names the fix too."""
    write_file("n.tsv", "pos\t好的\nneg\t差的\n")
    invoke(["ingest", "n.tsv"])
    quoted = invoke(["samples", "--where", "label_id = 'neg'"], ok=not db.startswith("postgresql"))
    assert "with the string 'neg': class 'neg' has id 1 (kd classes); --label NAME selects a class by name" in quoted.stderr
    teach = invoke(["teach", "--run", "r1", "--model", "nowhere", "--where", "label_id = 'neg'"], ok=False)
    assert "class 'neg' has id 1 (kd classes); --label NAME selects a class by name" in teach.stderr
    if db.startswith("postgresql"):
        assert error_line(quoted).startswith("Error: --where \"label_id = 'neg'\" failed: invalid input syntax for type integer")
        line = error_line(invoke(["samples", "--where", "dropped = 0"], ok=False))
        assert line.endswith("(dropped is true or false: dropped, or NOT dropped, runs on both stores)"), line
    else:
        assert [r["text"] for r in invoke.json(["samples", "--where", "dropped = 0"])] == ["好的", "差的"]


@pytest.mark.new_database
def test_an_unknown_header_label_column_first_is_refused_not_ingested_as_a_class(invoke, write_file, db, read_classes, error_line):
    """A spreadsheet's 类别,内容 (label column first, a header kd does not know) was read as a headerless
    label,text file: its header became a sample of a class '类别' with id 0, for good, with exit 0."""
    body = "".join(f"体育,比赛{i}\r\n财经,股市{i}\r\n" for i in range(5))
    write_file("cn.csv", "\ufeff类别,内容\r\n" + body)
    line = error_line(invoke(["ingest", "cn.csv"], ok=False))
    assert line.startswith("Error: cn.csv: line 1: field 'label': '类别' is a label on this line only") and \
        "give --text-col '内容' --label-col '类别' to read it as one (or --no-header if it is a sample)" in line
    assert not store_exists(db)
    invoke(["ingest", "cn.csv", "--text-col", "内容", "--label-col", "类别"])  # the fix the error gives
    assert [name for _, name in read_classes()] == ["体育", "财经"]
    write_file("rare.csv", "稀有,一个少见的类别\r\n" + body)  # a sample after all: --no-header reads it
    invoke(["ingest", "rare.csv", "--no-header", "--split", "dev"])
    assert [name for _, name in read_classes()] == ["体育", "财经", "稀有"]


@pytest.mark.new_database
def test_an_unknown_header_read_by_column_indexes_is_refused_not_ingested_as_a_class(invoke, write_file, db, read_classes, error_line):
    """An export `id,body,sentiment` (a header kd does not know) ingested with --text-col 1 --label-col 2, as
    --help says to give a headerless file's columns: the header became a sample of a class 'sentiment', id 0
    for good, with exit 0 and a warning calling it "a typo?"."""
    body = "".join(f"{2 * i + 1},比赛{i},正面\r\n{2 * i + 2},股市{i},负面\r\n" for i in range(6))
    write_file("export.csv", "\ufeffid,body,sentiment\r\n" + body)
    line = error_line(invoke(["ingest", "export.csv", "--text-col", "1", "--label-col", "2"], ok=False))
    assert line.startswith("Error: export.csv: line 1: field 'label': 'sentiment' is a label on this line only") and \
        "give --text-col body --label-col sentiment to read it as one (or --no-header if it is a sample)" in line
    assert not store_exists(db)
    invoke(["ingest", "export.csv", "--text-col", "body", "--label-col", "sentiment"])  # the fix the error gives
    assert [name for _, name in read_classes()] == ["正面", "负面"]
    write_file("rare.csv", "0,一个少见的类别,稀有\r\n" + body)  # a sample after all: --no-header reads it
    invoke(["ingest", "rare.csv", "--text-col", "1", "--label-col", "2", "--no-header", "--split", "dev"])
    assert [name for _, name in read_classes()] == ["正面", "负面", "稀有"]


def test_a_new_class_of_one_or_two_rows_beside_many_labeled_ones_is_warned_of_as_a_typo(invoke, write_file, read_classes, tmp_path):
    """'违规' on one line of an ad file labeled '违禁' elsewhere became a class of its own in silence
    (class ids only grow: every later model had an output for it)."""
    rows = [("合规" if i % 3 else "违禁", f"第{i}条广告文案内容") for i in range(60)]
    rows[57] = ("违规", "全网最低价第一品牌")
    write_file("ads.tsv", "".join(f"{label}\t{text}\n" for label, text in rows))
    result = invoke(["ingest", "ads.tsv", "--json"])
    warning = ("ads.tsv: line 58: label '违规' is a new class of 1 sample beside 59 labeled ones: a typo of '违禁'? "
               "`kd samples --label '违规'` lists it and `kd labels set` relabels (the class stays in the store, empty); "
               "--classes FILE refuses labels not in it")
    assert json.loads(result.stdout)["warnings"] == [warning] and result.stderr == f"warning: {warning}\n"
    assert read_classes() == [(0, "违禁"), (1, "合规"), (2, "违规")]  # (ingested as written: a warning, not a refusal)
    # a top-up of a new class with rows enough, a small first file, and a class file's labels: no warning
    write_file("more.tsv", "".join(f"夸大\t第{i}条夸大宣传文案\n" for i in range(3)))
    assert invoke(["ingest", "more.tsv"]).stderr == ""
    write_file("small.tsv", "好\t很好\n差\t很差\n中\t一般\n")
    assert invoke(["ingest", "small.tsv"], db=str(tmp_path / "small.db")).stderr == ""  # (a store of its own)
    write_file("classes.txt", "违禁\n合规\n违规\n夸大\n新类\n")
    write_file("pinned.tsv", "新类\t一条新类别的文案\n")
    assert invoke(["ingest", "pinned.tsv", "--classes", "classes.txt"]).stderr == ""


@pytest.mark.new_database
def test_a_first_row_with_a_field_more_than_every_row_after_it_is_named_as_the_ragged_one(invoke, write_file, db, error_line):
    """A headerless label<TAB>text file whose line 1 holds a tab in its text was refused as "3 columns and no
    header kd knows: name the text and label columns", and with them named as "line 2: expected 3 fields,
    found 2 (ragged row)": line 2 was fine, line 1 was the ragged row. A one-text-a-line pool likewise."""
    body = "".join(f"{'pos' if i % 2 else 'neg'}\t第{i}条评论\n" for i in range(2, 8))
    write_file("tab.tsv", "pos\t很好\t非常满意\n" + body)
    for args in ([], ["--text-col", "1", "--label-col", "0"]):
        line = error_line(invoke(["ingest", "tab.tsv", *args], ok=False))
        assert line.startswith("Error: tab.tsv: line 1: 3 fields, where every row after it has 2 (ragged row"), line
    write_file("pool.txt", "标题\t正文\n" + "".join(f"第{i}条新闻\n" for i in range(5)))
    line = error_line(invoke(["ingest", "pool.txt", "--split", "unlabeled"], ok=False))
    assert line.startswith("Error: pool.txt: line 1: 2 fields, where every row after it has 1 (ragged row"), line
    assert not store_exists(db)


def test_classes_named_by_ids_that_get_other_ids_are_warned_of(invoke, write_file, read_classes, tmp_path):
    """The Baidu tool's text<TAB>label_id file (its first row labeled 1) made class '1' id 0 and class '0'
    id 1 in silence: `kd classes --export class_id.txt` then wrote `0<TAB>1`, and an export's logits put
    class '1' first, where that tool's scripts read a column as its id. A warning names the ids and the
    --classes file that pins them; star ratings 1..5, which no order makes ids 0..4, and a pinned set say nothing."""
    write_file("train.tsv", "质量很好\t1\n太差了\t0\n还行吧\t1\n")
    result = invoke(["ingest", "train.tsv", "--text-col", "0", "--label-col", "1", "--json"])
    assert read_classes() == [(0, "1"), (1, "0")]
    warnings = json.loads(result.stdout)["warnings"]
    assert len(warnings) == 1 and result.stderr == f"warning: {warnings[0]}\n", result.stderr
    assert warnings[0].startswith("train.tsv: classes named by numbers got other ids (in the order first read): "
                                  "'1' has id 0, '0' id 1"), warnings[0]
    assert "--classes" in warnings[0] and "\n" not in warnings[0]
    # (of more numbers than it names, it counts the rest: ", ..." said nothing of how many)
    write_file("seven.tsv", "".join(f"{k}\t第{k}类的文本\n" for k in range(6, -1, -1)))
    seven = invoke(["ingest", "seven.tsv"], db=str(tmp_path / "seven.db")).stderr
    assert "'6' has id 0, '5' id 1, '4' id 2, '3' id 3, '2' id 4 and 2 more: kd names them right" in seven, seven
    write_file("stars.tsv", "5\t很好\n1\t很差\n3\t一般\n")
    assert invoke(["ingest", "stars.tsv"], db=str(tmp_path / "stars.db")).stderr == ""
    write_file("ids.txt", "0\n1\n")
    assert invoke(["ingest", "train.tsv", "--text-col", "0", "--label-col", "1", "--classes", "ids.txt"],
                  db=str(tmp_path / "pinned.db")).stderr == ""


def test_a_rare_new_class_warning_names_the_lines_of_the_samples_it_added(invoke, write_file):
    """The warning named the first lines holding the new label, a conflict among them (a text already
    stored with another label, not added): line 1 of a file whose one new sample was on line 8."""
    write_file("ads.tsv", "".join(f"{'合规' if i % 3 else '违禁'}\t第{i}条广告文案内容\n" for i in range(60)))
    invoke(["ingest", "ads.tsv"])
    write_file("more.tsv", "违规\t第0条广告文案内容\n" + "".join(f"合规\t又一条文案{i}\n" for i in range(6)) + "违规\t全网最低价第一品牌\n")
    warnings = invoke.json(["ingest", "more.tsv"])["warnings"]
    assert len(warnings) == 1 and warnings[0].startswith("more.tsv: line 8: label '违规' is a new class of 1 sample"), warnings


def test_classes_named_like_a_missing_value_are_warned_of(invoke, write_file, read_classes, tmp_path):
    """A DataFrame whose unlabeled rows were saved with `astype(str)` wrote 'nan' (Python: 'None') as their
    label: kd ingest made classes 'nan' and 'None' in silence, and every model then learned them as classes."""
    write_file("train.tsv", "pos\t质量很好\nnan\t还没看\nneg\t太差了\nNone\t不知道\nnan\t再说吧\n")
    result = invoke(["ingest", "train.tsv", "--json"])
    assert [name for _, name in read_classes()] == ["pos", "nan", "neg", "None"]  # (stored as written: a warning, not a refusal)
    warnings = json.loads(result.stdout)["warnings"]
    assert warnings == ["train.tsv: classes 'nan', 'None' (3 samples) read like a missing label written as text (Python's None, "
                        "pandas' NaN): stored as a class the models learn; if those samples have no label, `kd labels set ID=drop` "
                        "leaves each out (`kd samples --label nan` lists them): their texts are stored now, so an ingest of them "
                        "with --split unlabeled skips them as duplicates (a store without them takes them so)"]
    assert result.stderr == f"warning: {warnings[0]}\n"
    # (what the warning said to do, "ingest them with --split unlabeled instead", added none of them to this store)
    write_file("pool.txt", "还没看\n不知道\n再说吧\n")
    assert json.loads(invoke(["ingest", "pool.txt", "--split", "unlabeled", "--json"]).stdout)["added"] == 0
    write_file("more.tsv", "nan\t又一条\npos\t很好用\n")  # (the class exists now: said once, when it was made)
    assert json.loads(invoke(["ingest", "more.tsv", "--json"]).stdout)["warnings"] == []
    # kd's own word for no label, quoted for the shell; a set of classes named by --classes is the user's own
    write_file("other.tsv", "(none)\t没有标签\npos\t很好\n")
    said = invoke(["ingest", "other.tsv"], db=str(tmp_path / "other.db")).stderr
    assert "class '(none)' (1 sample) reads like a missing label" in said and "`kd samples --label '(none)'` lists them" in said, said
    write_file("classes.txt", "pos\nNone\n")
    write_file("pinned.tsv", "None\t没有\npos\t很好\n")
    assert invoke(["ingest", "pinned.tsv", "--classes", "classes.txt"], db=str(tmp_path / "pinned.db")).stderr == ""


def test_a_conflict_line_shows_texts_and_sources_as_stored_not_as_emoji(invoke, write_file):
    """rich read ``:name:`` as an emoji code though the line was printed without markup: the conflict with a
    ``--augment mask`` text named its source ``augment😷n1:...`` (every mask recipe's), a review's ``:thumbs_up:`` read 👍."""
    write_file("train.tsv", "pos\t好评:thumbs_up:真不错\n")
    invoke(["ingest", "train.tsv"])
    write_file("again.tsv", "neg\t好评:thumbs_up:真不错\n")
    said = invoke(["ingest", "again.tsv"]).stdout
    assert "conflict line 1: label 'neg' but train.tsv:1 has 'pos': 好评:thumbs_up:真不错" in said, said
    write_file("pool.txt", "一般\n")
    invoke(["ingest", "pool.txt", "--split", "unlabeled", "--source", "augment:mask:n1:s42"])
    write_file("annotated.tsv", "pos\t一般\n")
    said = invoke(["ingest", "annotated.tsv"]).stdout
    assert "but augment:mask:n1:s42:1 has no label" in said, said
