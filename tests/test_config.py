"""``kd.toml``: defaults for command-line options, from ./kd.toml, ``--config`` or ``$KD_CONFIG``."""

from __future__ import annotations

import json

import pytest

from kdstore import config as kdconfig
from kdstore.errors import KdError

TRAIN = "pos\tgood one\nneg\tbad one\npos\tgood two\n"


@pytest.fixture
def other_db(tmp_path, invoke, write_file):
    """``other.db`` in the working directory, holding three samples."""
    write_file("train.tsv", TRAIN)
    invoke(["ingest", "train.tsv"], db=tmp_path / "other.db")
    return tmp_path / "other.db"


def test_kd_toml_in_cwd_gives_defaults(other_db, invoke, write_file, tmp_path):
    write_file("kd.toml", 'db = "other.db"\n\n[samples]\nlimit = 1\n')
    rows = invoke.json(["samples"], db=None)
    assert rows == [{"id": 1, "split": "train", "label": "pos", "text": "good one", "dropped": False, "parent_id": None,
                     "parent_dropped": False, "source": "train.tsv", "line": 1, "meta": None}]
    # nothing was created where the default kd.db would be
    assert not (tmp_path / "kd.db").exists()


def test_command_line_wins_over_config(other_db, invoke, write_file, tmp_path):
    write_file("kd.toml", 'db = "other.db"\n\n[samples]\nlimit = 1\n')
    assert len(invoke.json(["samples", "--limit", "3"], db=None)) == 3
    # --db on the command line beats the config's db
    write_file("mine.tsv", "neg\tonly here\n")
    invoke(["ingest", "mine.tsv"], db=tmp_path / "mine.db")
    rows = invoke.json(["samples"], db=tmp_path / "mine.db")
    assert [r["text"] for r in rows] == ["only here"]


def test_config_table_applies_to_its_command_only(other_db, invoke, write_file):
    write_file("kd.toml", 'db = "other.db"\n\n[ingest]\nsplit = "dev"\n\n[samples]\nlimit = 2\n')
    write_file("dev.tsv", "neg\tfrom dev\n")
    report = invoke.json(["ingest", "dev.tsv"], db=None)
    assert report["split"] == "dev"
    rows = invoke.json(["samples", "--split", "dev"], db=None)
    assert [r["text"] for r in rows] == ["from dev"]
    # keys may be written with '-' as on the command line
    write_file("kd.toml", 'db = "other.db"\n\n[ingest]\nlabel-col = "0"\ntext-col = "1"\n')
    write_file("more.tsv", "neg\tby index\n")
    invoke(["ingest", "more.tsv"], db=None)
    assert "by index" in [r["text"] for r in invoke.json(["samples", "--limit", "10"], db=None)]


def test_explicit_config_file(other_db, invoke, write_file):
    write_file("settings.toml", 'db = "other.db"\n\n[samples]\nlimit = 2\n')
    rows = invoke.json(["samples", "--config", "settings.toml"], db=None)
    assert len(rows) == 2
    # --config beats ./kd.toml
    write_file("kd.toml", 'db = "other.db"\n\n[samples]\nlimit = 1\n')
    assert len(invoke.json(["samples", "--config", "settings.toml"], db=None)) == 2


def test_a_config_path_that_is_a_folder_says_it_is_the_config_file(other_db, invoke, write_file, tmp_path, monkeypatch, error_line):
    """``--config conf`` (a folder, say of several TOML files) was "Error: conf: Is a directory": no word
    that the config file was the path at fault."""
    (tmp_path / "conf").mkdir()
    expected = "Error: conf: cannot read the config file: Is a directory"
    assert error_line(invoke(["samples", "--config", "conf"], db=None, ok=False)) == expected
    monkeypatch.setenv("KD_CONFIG", "conf")
    assert error_line(invoke(["samples"], db=None, ok=False)) == expected


def test_kd_config_env(other_db, invoke, write_file, monkeypatch, tmp_path):
    write_file("env.toml", 'db = "other.db"\n\n[samples]\nlimit = 2\n')
    monkeypatch.setenv("KD_CONFIG", str(tmp_path / "env.toml"))
    assert len(invoke.json(["samples"], db=None)) == 2


def test_nested_command_table(other_db, invoke, write_file):
    write_file("kd.toml", '[db.current]\ndb = "other.db"\n')
    state = invoke.json(["db", "current"], db=None)
    assert state["db"].endswith("other.db") and state["up_to_date"] is True


def test_unknown_key_in_command_table_is_an_error(other_db, invoke, write_file):
    write_file("kd.toml", 'db = "other.db"\n\n[samples]\nlimt = 1\n')
    result = invoke(["samples"], db=None, ok=False)
    assert "'limt'" in result.stderr
    assert "is not an option of `kd samples`" in result.stderr


def test_config_mistakes_name_the_file_and_the_key(other_db, invoke, write_file, error_line):
    """A wrong type, a table named after no command (``[distil]``) or a typo inside a group's
    table are one-line errors naming the file, not a click message about an option nobody typed."""
    for content, expected in (
        ('db = "other.db"\n[samples]\nlimit = "many"\n', "kd.toml: [samples] limit = 'many': 'many' is not a valid integer"),
        ('db = "other.db"\n[distil]\nalpha = 0.7\n', "kd.toml: [distil] is not a kd command"),
        ('db = "other.db"\n[samples]\nlimit = 1.5\n', "kd.toml: [samples] limit = 1.5: not a whole number"),
        ('db = "other.db"\n[labels.shwo]\ntop = 3\n', "kd.toml: [labels.shwo] is not a kd command"),
        ('db = "other.db"\n[samples]\nlimt = 1\n', "kd.toml: [samples] 'limt' is not an option of `kd samples`"),
        ('db = "other.db"\n[labels]\nmetod = "disagree"\n', "kd.toml: [labels] 'metod' is not an option of any command of `kd labels`"),
        ('db = "other.db"\nstudnet = "textcnn"\n', "kd.toml: top level 'studnet' is not an option of any command of kd"),
        # a command's arguments are no options: `path` made `kd predict` read that file instead of stdin
        ('db = "other.db"\npath = "reviews.txt"\n', "kd.toml: top level 'path' is not an option of any command of kd"),
        ('db = "other.db"\n[samples]\npath = "x"\n', "kd.toml: [samples] 'path' is not an option of `kd samples`"),
    ):
        write_file("kd.toml", content)
        assert expected in error_line(invoke(["samples"] if "labels" not in content else ["labels", "show"], db=None, ok=False)), content


def test_config_values_of_the_wrong_kind_are_one_line(other_db, invoke, write_file, error_line):
    """A TOML number, boolean or array where the option takes none: `header = 1` and `dropped = [true]`
    were tracebacks from click, `classes = 3` one from kd, `text-col = true` the column "True"."""
    for table, key, expected in (
        ("ingest", "header = 1", "kd.toml: header = 1: expected true or false"),
        ("samples", "dropped = [true]", "kd.toml: dropped = [True]: expected a single value, not an array"),
        ("samples", "limit = [1]", "kd.toml: limit = [1]: expected a single value, not an array"),
        ("ingest", "classes = 3", "kd.toml: classes = 3: expected a path (a string)"),
        ("ingest", "text-col = true", "kd.toml: text-col = true: true/false is no value of --text-col"),
        ("ingest", "text-col = 1.5", "kd.toml: text-col = 1.5: expected a string"),
        # a TOML date or time (unquoted) where a number goes: int() and float() raised a TypeError
        ("samples", "limit = 1979-05-27", "kd.toml: limit = 1979-05-27: a TOML date or time is no value of --limit"),
        ("samples", "limit = 07:32:00", "kd.toml: limit = 07:32:00: a TOML date or time is no value of --limit"),
    ):
        write_file("kd.toml", f'db = "other.db"\n[{table}]\n{key}\n')
        result = invoke([table] + (["train.tsv"] if table == "ingest" else []), db=None, ok=False)
        assert "Traceback" not in result.output and expected.replace("kd.toml: ", f"kd.toml: [{table}] ") in error_line(result), key
    # what these options do take still works: a whole number for a column, a boolean for a flag
    write_file("kd.toml", 'db = "other.db"\n[ingest]\nheader = false\ntext-col = 1\nlabel-col = 0\n')
    write_file("more.tsv", "neg\tread by index\n")
    assert invoke.json(["ingest", "more.tsv"], db=None)["added"] == 1


def test_group_tables_and_single_values_for_repeatable_options(other_db, invoke, write_file):
    """Plain keys of a group's table apply to its commands; a repeatable option takes one value."""
    write_file("kd.toml", 'db = "other.db"\n[labels]\nrun = "nosuch"\n')
    assert "no run 'nosuch'" in invoke(["labels", "show"], db=None, ok=False).stderr
    write_file("kd.toml", 'db = "other.db"\n[teach]\nsplit = "dev"\nmodel = "/nowhere"\n')
    result = invoke(["teach", "--run", "c"], db=None, ok=False)
    assert "no labeled samples for the teacher (split dev)" in result.output  # the one value became the list ["dev"]


def test_a_toml_array_gives_a_comma_separated_option(other_db, invoke, write_file, error_line):
    """``augment = ["mask", "pos"]`` means ``--augment mask,pos`` (it was read as the one string
    "['mask', 'pos']", which no method is called)."""
    write_file("kd.toml", 'db = "other.db"\n[distill]\naugment = ["mask", "nope"]\nkernel_sizes = [2, 3]\n')
    line = error_line(invoke(["distill", "--run", "c"], db=None, ok=False))
    assert "unknown augmentation method(s) nope:" in line and "'nope']" not in line
    write_file("kd.toml", 'db = "other.db"\n[distill]\naugment = [1.5]\n')
    assert "kd.toml: [distill] augment = [1.5]: expected a string" in error_line(invoke(["distill", "--run", "c"], db=None, ok=False))


def test_a_files_whole_number_too_large_for_a_float_option_is_refused_in_one_line(other_db, invoke, write_file, error_line):
    """TOML's whole numbers have no bound: `alpha = 1000...0` (310 digits) crashed in float() with an
    OverflowError traceback (typed, the same digits are a string that float() takes as inf, refused)."""
    big = "1" + "0" * 309
    write_file("kd.toml", f'db = "other.db"\n[distill]\nalpha = {big}\n')
    assert error_line(invoke(["distill", "--run", "c"], db=None, ok=False)) == (
        f"Error: kd.toml: [distill] alpha = {big}: {big} is not a finite number")


def test_top_level_key_of_another_command_is_ignored(other_db, invoke, write_file):
    """A key some other command takes (``student`` of ``kd distill``) leaves ``kd samples`` alone."""
    write_file("kd.toml", 'db = "other.db"\nstudent = "textcnn"\n[labels]\nmethod = "disagree"\n')
    assert len(invoke.json(["samples"], db=None)) == 3


def test_invalid_toml_is_a_clear_error(invoke, write_file):
    write_file("kd.toml", "db = \n[samples\n")
    result = invoke(["samples"], db=None, ok=False)
    assert "kd.toml" in result.stderr and "not valid TOML" in result.stderr
    assert "Traceback" not in result.output


def test_missing_explicit_config_is_a_clear_error(invoke):
    result = invoke(["samples", "--config", "absent.toml"], db=None, ok=False)
    assert "absent.toml" in result.stderr and "not found" in result.stderr


def test_defaults_for_unit():
    cfg = {"db": "x.db", "seed": 3, "labels": {"detect": {"top-k": 5}}, "teach": {"epochs": 2}}
    assert kdconfig.defaults_for(cfg, ["labels", "detect"], {"db", "top_k"}) == {
        "db": "x.db",
        "top_k": 5,
    }
    assert kdconfig.defaults_for(cfg, ["teach"], {"epochs", "seed"}) == {"seed": 3, "epochs": 2}
    with pytest.raises(KdError, match="'epochs' is not an option of `kd teach`"):
        kdconfig.defaults_for(cfg, ["teach"], {"seed"})


def test_config_path_precedence(tmp_path, monkeypatch):
    assert kdconfig.config_path(None) is None
    (tmp_path / "kd.toml").write_text("", encoding="utf-8")
    assert kdconfig.config_path(None).name == "kd.toml"
    monkeypatch.setenv("KD_CONFIG", "env.toml")
    assert str(kdconfig.config_path(None)) == "env.toml"
    assert str(kdconfig.config_path("cli.toml")) == "cli.toml"
    # a quoted ~ (a systemd or Docker ENV line, --config "~/kd.toml") is the home folder, as for KD_DB
    monkeypatch.setenv("HOME", str(tmp_path))
    assert kdconfig.config_path("~/cli.toml") == tmp_path / "cli.toml"
    monkeypatch.setenv("KD_CONFIG", "~/env.toml")
    assert kdconfig.config_path(None) == tmp_path / "env.toml"


def test_config_key_for_renamed_option(other_db, invoke, write_file):
    write_file("kd.toml", 'db = "other.db"\n\n[ingest]\nformat = "jsonl"\n')
    write_file("data.txt", '{"text": "jsonl in a .txt file", "label": "pos"}\n')
    report = invoke.json(["ingest", "data.txt"], db=None)
    assert report["added"] == 1


@pytest.mark.on_postgresql
def test_an_ingest_error_names_the_config_files_reading_options(other_db, invoke, write_file, error_line):
    """`[ingest] format = "jsonl"` (or a text-col, label-col, header) in kd.toml, then a TSV ingested: the
    error named the data file's line ("not valid JSON", "field 'body': no such column") and nothing of
    the config file that made kd read it so, where a typed --format is in the user's own command."""
    write_file("plain.tsv", "pos\tgood one\n")
    for key, shown in (('format = "jsonl"', '[ingest] format = "jsonl"'),
                       ('text-col = "body"', '[ingest] text-col = "body"'),
                       ('label-col = "2"', '[ingest] label-col = "2"')):
        write_file("kd.toml", f'db = "other.db"\n[ingest]\n{key}\n')
        line = error_line(invoke(["ingest", "plain.tsv"], db=None, ok=False))
        assert line.startswith("Error: plain.tsv: line 1: ") and line.endswith(f"(kd.toml: {shown})"), line
    write_file("kd.toml", 'db = "other.db"\n[ingest]\nsource = " "\n')  # (an empty one, as `--source "$SHOP"` unset)
    line = error_line(invoke(["ingest", "plain.tsv"], db=None, ok=False))
    assert line.endswith('(kd.toml: [ingest] source = " ")'), line
    # typed, the option is the user's own: no file named
    write_file("kd.toml", 'db = "other.db"\n')
    line = error_line(invoke(["ingest", "plain.tsv", "--format", "jsonl"], db=None, ok=False))
    assert "kd.toml" not in line, line


def test_config_run_goes_through_the_run_rule(other_db, invoke, write_file):
    from kdstore.runs import stage_scope
    from kdstore.store import Store

    store = Store.open(str(other_db), create=False)
    with stage_scope(store, run="r7", kind="teach", config={}):
        pass
    store.close()
    write_file("kd.toml", 'db = "other.db"\nrun = " r7 "\n')
    assert invoke.json(["report"], db=None)["run"] == "r7"
    write_file("kd.toml", 'db = "other.db"\nrun = "a b"\n')
    result = invoke(["report"], db=None, ok=False)
    assert "is not valid" in result.stderr


def test_a_table_inside_a_commands_table_is_an_error(other_db, invoke, write_file, error_line):
    """``[samples.opts]`` or ``limit = {n = 1}``: a table where a command has only plain keys was
    skipped without a word (the limit of 1 silently not applied)."""
    for content, expected in (
        ('db = "other.db"\n[samples.opts]\nlimit = 1\n', "kd.toml: [samples.opts] is not a kd command (`kd samples` has no subcommands)"),
        ('db = "other.db"\n[samples]\nlimit = {n = 1}\n', "kd.toml: [samples] limit = {'n': 1}: a table is no value of --limit"),
        ('[db.current.x]\ndb = "other.db"\n', "kd.toml: [db.current.x] is not a kd command (`kd db current` has no subcommands)"),
    ):
        write_file("kd.toml", content)
        command = ["db", "current"] if content.startswith("[db") else ["samples"]
        assert expected in error_line(invoke(command, db=None, ok=False)), content
    with pytest.raises(KdError, match=r"\[teach.fold\] is not a kd command"):
        kdconfig.defaults_for({"teach": {"fold": {"epochs": 1}}}, ["teach"], {"epochs"})


def test_a_table_as_an_options_value_at_the_top_or_in_a_group_names_the_option(other_db, invoke, write_file, error_line):
    """``limit = {n = 1}`` or ``teacher-weight = [{w = 1.0}]`` at the top level (or in ``[labels]``) was
    "[limit] is not a kd command" / "[[teacher-weight]] is not a kd command": the user wrote an option's
    value, as the same key in a command's own table is told ("a table is no value of --limit")."""
    for content, command, expected in (
        ('db = "other.db"\nlimit = {n = 1}\n', ["samples"],
         "Error: kd.toml: limit = {'n': 1}: a table is no value of --limit"),
        ('db = "other.db"\n[labels]\ntop = {n = 1}\n', ["labels", "show"],
         "Error: kd.toml: [labels] top = {'n': 1}: a table is no value of --top"),
        ('db = "other.db"\nteacher-weight = [{w = 1.0}]\n', ["samples"],
         "Error: kd.toml: teacher-weight = [{'w': 1.0}]: expected a value or an array of values, not an array or table inside one"),
    ):
        write_file("kd.toml", content)
        assert error_line(invoke(command, db=None, ok=False)) == expected, content
    # a table named after no command, nor any option, is still no kd command
    write_file("kd.toml", 'db = "other.db"\n[distil]\nalpha = 0.5\n')
    assert error_line(invoke(["samples"], db=None, ok=False)).startswith("Error: kd.toml: [distil] is not a kd command")


def test_a_misspelt_commands_table_is_named_as_a_table_not_an_options_value(other_db, invoke, write_file, error_line):
    """``[label.detect]`` (``labels`` without its s) was "label = {'detect': {...}}: a table is no value
    of --label": a value the user never wrote, of an option they never meant; ``[label]`` holding
    ``[labels]``'s keys was told so too. A table of an option's name still is its value (``limit = {n = 1}``)."""
    for content, expected in (
        ('db = "other.db"\n[label.detect]\nmethod = "disagree"\n',
         "Error: kd.toml: [label] is not a kd command (tables are named after commands: "),
        ('db = "other.db"\n[label]\nrun = "r1"\n',
         "Error: kd.toml: [label] is not a kd command (tables are named after commands: "),
    ):
        write_file("kd.toml", content)
        line = error_line(invoke(["labels", "show"], db=None, ok=False))
        assert line.startswith(expected) and line.endswith("(did you mean 'labels'?)"), (content, line)
    write_file("kd.toml", 'db = "other.db"\nlabel = {n = 1}\n')
    assert error_line(invoke(["samples"], db=None, ok=False)) == "Error: kd.toml: label = {'n': 1}: a table is no value of --label"


def test_a_subcommands_table_at_the_top_level_names_its_place(other_db, invoke, write_file, error_line):
    """``[detect]`` or ``[clean]`` (for ``kd labels detect``/``clean``) listed the top-level commands and
    said nothing of where the table goes."""
    for content in ('db = "other.db"\n[detect]\nmethod = "disagree"\n', 'db = "other.db"\n[clean]\nmin-score = 0.5\n'):
        write_file("kd.toml", content)
        name = content.split("[")[1].split("]")[0]
        for args in (["labels", "show"], ["samples"]):
            line = error_line(invoke(args, db=None, ok=False))
            assert line.startswith(f"Error: kd.toml: [{name}] is not a kd command"), line
            assert line.endswith(f"(`kd labels {name}` is a command of `kd labels`: its options go under [labels.{name}])"), line


def test_a_key_of_another_command_in_a_groups_table_names_that_command(other_db, invoke, write_file, error_line):
    """``epochs = 3`` in ``[labels]`` (no command of ``kd labels`` trains) said only that it was not an
    option of ``kd labels``, not whose it is, as a command's own table says."""
    write_file("kd.toml", 'db = "other.db"\n[labels]\nepochs = 3\n')
    assert error_line(invoke(["labels", "show"], db=None, ok=False)) == (
        "Error: kd.toml: [labels] 'epochs' is not an option of any command of `kd labels` "
        "(an option of `kd distill`, `kd teach`: put it under [distill] or [teach])")


def test_one_option_under_two_spellings_is_an_error(other_db, invoke, write_file, error_line):
    """``max-len`` and ``max_len`` (or ``format`` and its parameter name ``fmt``) in one table: TOML
    takes both as keys, and one of them was dropped without a word."""
    write_file("kd.toml", 'db = "other.db"\n[ingest]\nformat = "tsv"\nfmt = "jsonl"\n')
    assert "kd.toml: [ingest] 'format' and 'fmt' are the same option: keep one" in error_line(
        invoke(["ingest", "train.tsv"], db=None, ok=False))
    with pytest.raises(KdError, match="top level 'max-len' and 'max_len' are the same option"):
        kdconfig.defaults_for({"max-len": 3, "max_len": 4}, ["teach"], {"max_len"})
    # the same key at the top and in the command's table is no clash: the table wins
    assert kdconfig.defaults_for({"max-len": 3, "teach": {"max_len": 4}}, ["teach"], {"max_len"}) == {"max_len": 4}


def test_two_top_level_options_of_other_commands_that_one_command_takes_as_one(other_db, invoke, write_file, error_line):
    """``limit`` (kd samples') and ``top`` (kd labels clean's dry runs) at the top level are two options
    elsewhere and one in ``kd labels show`` (``--top``/``--limit``): it was refused, typed ``--top`` or not,
    as one option written twice, with no way to keep both keys; there its own name, ``top``, is taken."""
    write_file("kd.toml", 'db = "other.db"\nrun = "nope"\nlimit = 100\ntop = 10\n')
    assert error_line(invoke(["labels", "show"], db=None, ok=False)).startswith("Error: no run 'nope'")
    assert len(invoke.json(["samples"], db=None)) == 3
    options = {"top": "top", "limit": "top"}
    for table in ({"limit": 100, "top": 10}, {"top": 10, "limit": 100}):
        assert kdconfig.defaults_for(table, ["labels", "show"], options) == {"top": 10}
        assert kdconfig.defaults_for({"labels": table}, ["labels", "show"], options) == {"top": 10}
        # in the command's own table both are its one option: still refused
        with pytest.raises(KdError, match="are the same option"):
            kdconfig.defaults_for({"labels": {"show": table}}, ["labels", "show"], options)


def test_config_file_encoding(other_db, invoke, write_file, error_line):
    """A kd.toml saved with a BOM (Notepad) is read, as ingest reads such files; one that is not
    UTF-8 is a one-line error naming the file and line (it was a UnicodeDecodeError traceback)."""
    write_file("kd.toml", b'\xef\xbb\xbfdb = "other.db"\n[samples]\nlimit = 1\n')
    assert len(invoke.json(["samples"], db=None)) == 1
    write_file("kd.toml", 'db = "other.db"\n[samples]\nlabel = "好"\n'.encode("gbk"))
    result = invoke(["samples"], db=None, ok=False)
    assert "Traceback" not in result.output
    assert "kd.toml: line 3: not valid UTF-8 (byte 0xba); save the file as UTF-8" in error_line(result)


def test_a_toml_array_for_a_single_valued_option_is_an_error(other_db, invoke, write_file, error_line, tmp_path):
    """Only the comma-separated options (augment, kernel-sizes, method) join a TOML array: ``db = ["a.db",
    "b.db"]`` made `kd ingest` create a store named "a.db,b.db", ``text-col`` a column "text,body"."""
    write_file("kd.toml", 'db = ["a.db", "b.db"]\n')
    line = error_line(invoke(["ingest", "train.tsv"], db=None, ok=False))
    assert "kd.toml: db = ['a.db', 'b.db']: expected a single value, not an array" in line
    assert not list(tmp_path.glob("a.db*"))
    # a top-level array meant for the commands whose option takes several: the tables to put it under
    write_file("kd.toml", 'db = "other.db"\nsplit = ["train", "dev"]\n')
    line = error_line(invoke(["predict", "--store"], db=None, ok=False))
    assert line.endswith("kd.toml: split = ['train', 'dev']: expected a single value, not an array (a top-level key is every "
                         "command's: put it under [pretrain] or [teach], which take several)"), line
    write_file("kd.toml", 'db = "other.db"\n[ingest]\ntext-col = ["text", "body"]\n')
    assert "expected a single value, not an array" in error_line(invoke(["ingest", "train.tsv"], db=None, ok=False))
    write_file("kd.toml", 'db = "other.db"\n[labels.detect]\nmethod = ["disagree", "nope"]\n')
    line = error_line(invoke(["labels", "detect"], db=None, ok=False))  # joined: kd's own check, the joined value named
    assert line.startswith("Error: unknown --method 'nope'") and line.endswith('(kd.toml: [labels.detect] method = ["disagree", "nope"])'), line


def test_an_unknown_key_suggests_the_close_option(other_db, invoke, write_file, error_line):
    for content, expected in (
        ('db = "other.db"\n[samples]\nlimt = 1\n', "[samples] 'limt' is not an option of `kd samples` (did you mean 'limit'?)"),
        ('db = "other.db"\nstudnet = "textcnn"\n', "top level 'studnet' is not an option of any command of kd (did you mean 'student'?)"),
        ('db = "other.db"\n[samples]\nzzzz = 1\n', "[samples] 'zzzz' is not an option of `kd samples`"),
    ):
        write_file("kd.toml", content)
        line = error_line(invoke(["samples"], db=None, ok=False))
        assert line.endswith(expected), line
    with pytest.raises(KdError, match=r"'max_lne' is not an option of `kd teach` \(did you mean 'max-len'\?\)"):
        kdconfig.defaults_for({"teach": {"max_lne": 3}}, ["teach"], {"max_len", "epochs"})


def test_config_augment_is_for_students_not_early_exit(other_db, invoke, write_file):
    """``[distill] augment`` (or teacher-weight) in a config file is left out for ``--student early-exit``,
    as its alpha or kernel-sizes are; it refused the command over an option nobody typed."""
    write_file("kd.toml", 'db = "other.db"\n[distill]\naugment = ["mask", "pos"]\nteacher-weight = 1.0\n')
    result = invoke(["distill", "--student", "early-exit", "--run", "nosuch"], db=None, ok=False)
    assert "no run 'nosuch'" in result.stderr and "--augment" not in result.stderr
    result = invoke(["distill", "--student", "early-exit", "--run", "nosuch", "--augment", "mask"], db=None, ok=False)
    assert "no --augment" in result.stderr  # typed, it is still refused


def test_config_teacher_weights_are_not_moved_onto_other_typed_teacher_runs(other_db, invoke, write_file):
    """``teacher-weight = [3, 1]`` beside ``teacher-run = ["a", "b"]`` weighs a and b: a typed
    ``--teacher-run b --teacher-run a`` took 3 for b, in silence. Without runs of its own, a file's
    weights are the typed runs' (in their order); with the file's runs typed again, they stand."""
    write_file("kd.toml", 'db = "other.db"\n[distill]\nteacher-run = ["a", "b"]\nteacher-weight = [3, 1]\n')
    swapped = invoke(["distill", "--teacher-run", "b", "--teacher-run", "a"], db=None, ok=False)
    assert ("warning: --teacher-weight: the config file's 3, 1 weigh its teacher runs a, b, not the typed b, a: not used"
            in swapped.stderr) and "no run 'b'" in swapped.stderr
    for typed in (["--teacher-run", "a", "--teacher-run", "b"], []):
        assert "--teacher-weight" not in invoke(["distill", *typed], db=None, ok=False).stderr
    write_file("kd.toml", 'db = "other.db"\n[distill]\nteacher-weight = [3, 1]\n')
    assert "--teacher-weight" not in invoke(["distill", "--teacher-run", "b", "--teacher-run", "a"], db=None, ok=False).stderr


def test_a_typed_run_wins_over_a_config_artifact(other_db, invoke, write_file):
    """``[predict] artifact`` is a default: a typed --run (or --store) predicts with the run's model, and a
    typed --artifact (or FILE) wins over ``store = true``, instead of refusing the pair."""
    write_file("kd.toml", 'db = "other.db"\n[predict]\nartifact = "serve/r1"\n')
    assert "no run 'nosuch'" in invoke(["predict", "--run", "nosuch"], db=None, ok=False, input="好\n").stderr
    assert "no run 'nosuch'" in invoke(["predict", "--run", "nosuch", "--store"], db=None, ok=False).stderr
    assert "serve/r1" in invoke(["predict"], db=None, ok=False, input="好\n").stderr  # untyped, the file's artifact
    # a typed --db too: the file's artifact served, the typed store never opened
    assert "no run 'default'" in invoke(["predict"], db=other_db, ok=False, input="好\n").stderr
    write_file("kd.toml", 'db = "other.db"\n[predict]\nstore = true\nrun = "nosuch"\n')
    assert "no exported model at nowhere" in invoke(["predict", "--artifact", "nowhere"], db=None, ok=False, input="好\n").stderr
    write_file("in.txt", "好\n")
    assert "no run 'nosuch'" in invoke(["predict", "in.txt"], db=None, ok=False).stderr


def test_a_files_model_for_teach_is_named_when_predict_or_export_cannot_find_it(other_db, invoke, write_file, error_line):
    """One file for every step: a top-level `model = "pretrain:r1"` (kd teach's) reaches kd predict and kd
    export's --model too, and their error named a stage 'pretrain:r1' of the run, not the option or the file."""
    invoke(["labels", "set", "--run", "r1", "1=neg"], db=other_db)  # run r1 exists, with no model
    write_file("kd.toml", 'db = "other.db"\nrun = "r1"\nmodel = "pretrain:r1"\n')
    said = ("Error: --model pretrain:r1: run 'r1' has no succeeded 'pretrain:r1' stage (models: none) "
            '(kd.toml: model = "pretrain:r1")')
    assert error_line(invoke(["predict"], db=None, ok=False, input="好\n")) == said
    assert error_line(invoke(["predict", "--store"], db=None, ok=False)) == said
    assert error_line(invoke(["export"], db=None, ok=False)) == said
    # typed, it is the option the user just gave: only the file's run, which the error names, is the file's
    assert error_line(invoke(["predict", "--model", "pretrain:r1"], db=None, ok=False, input="好\n")) == (
        "Error: run 'r1' has no succeeded 'pretrain:r1' stage (models: none) (kd.toml: run = \"r1\")")


def test_a_config_path_with_a_tilde_is_the_home_folder(other_db, invoke, write_file, tmp_path, monkeypatch):
    """No shell expands ``~`` in a TOML file: ``export = "~/class_id.txt"`` is the home folder's, as a
    quoted ``--db`` or ``KD_CONFIG`` is (it was a folder named ``~`` in the working directory)."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    write_file("kd.toml", 'db = "other.db"\n[classes]\nexport = "~/class_id.txt"\n')
    invoke(["classes"], db=None)
    assert (home / "class_id.txt").read_text(encoding="utf-8").split() == ["0", "pos", "1", "neg"]
    assert not (tmp_path / "~").exists()


def test_overwrite_is_taken_on_the_command_line_only(other_db, invoke, write_file, error_line):
    """`overwrite = true` in a file replaced every stage, export and sheet of every later command
    without a word: the file is refused, naming where the key is; typed, --overwrite works as ever."""
    for content, scope in (('db = "other.db"\noverwrite = true\n', "top level 'overwrite'"),
                           ('db = "other.db"\n[labels.export]\noverwrite = true\n', "[labels.export] 'overwrite'")):
        write_file("kd.toml", content)
        assert error_line(invoke(["samples"], db=None, ok=False)) == (f"Error: kd.toml: {scope}: --overwrite replaces what a stage, an export or a sheet holds, "
                                       "so kd takes it on the command line only (in a file it would apply to every run)")


def test_a_typed_option_wins_over_a_file_option_it_excludes(other_db, invoke, write_file):
    """A top-level `json = true` made a typed `kd samples --tsv` fail ("--tsv or --json, not both"),
    and `[report] compare = true` every `kd report --run R` ("--compare needs the runs")."""
    write_file("kd.toml", 'db = "other.db"\njson = true\n[samples]\nsplit = "train"\n')
    assert invoke(["samples", "--tsv"], db=None).output.splitlines()[:2] == ["label\ttext", "pos\tgood one"]
    write_file("kd.toml", 'db = "other.db"\n[samples]\ntsv = true\nsplit = "train"\n')
    assert len(json.loads(invoke(["samples", "--json"], db=None).output)) == 3
    write_file("kd.toml", 'db = "other.db"\n[report]\ncompare = true\n')
    out = invoke(["report", "--run", "none-yet"], db=None, ok=False)
    assert "--compare" not in out.output, out.output


def test_a_files_on_off_option_is_switched_off_on_the_command_line(other_db, invoke, write_file):
    """`json = true` or `[samples] dropped = true` in a file could not be undone for one command: the
    flags had no --no- form (`[labels.clean] dry-run = true` as a safe default left no way to clean)."""
    write_file("kd.toml", 'db = "other.db"\njson = true\n[samples]\nsplit = "train"\n')
    assert invoke(["samples", "--no-json"], db=None).output.startswith("┏")  # the table, not JSON
    assert invoke(["classes", "--no-json"], db=None).output.splitlines()[0] == "0\tpos"
    assert json.loads(invoke(["classes"], db=None).output)[0] == {"id": 0, "name": "pos"}
    for flag in ("--no-dry-run", "--no-logits-only", "--no-probability-shift", "--no-tfidf-member", "--no-tsv", "--no-int8"):
        command = {"--no-dry-run": ["labels", "clean"], "--no-logits-only": ["teach"], "--no-probability-shift": ["distill"],
                   "--no-tfidf-member": ["labels", "detect"], "--no-tsv": ["samples"], "--no-int8": ["export"]}[flag]
        assert flag in invoke([*command, "--help"], db=None).output
    # (`[export] int8 = true` refused every typed `kd export --format torchscript`, and `--no-int8` was no option):
    # every on/off option a file may hold has its --no- form
    import click

    from commands.cli import cli

    def flags(command, path):
        if isinstance(command, click.Group):
            ctx = click.Context(command)
            for name in command.list_commands(ctx):
                yield from flags(command.get_command(ctx, name), [*path, name])
        for p in command.params if path else ():  # (kd's own --version is no option a file gives)
            if isinstance(p, click.Option) and p.is_flag and p.name not in kdconfig.COMMAND_LINE_ONLY:
                yield " ".join(path), p.opts, p.secondary_opts

    assert [f for f in flags(cli, []) if not f[2]] == []


def test_an_empty_config_option_or_blank_kd_config_is_refused(other_db, invoke, write_file, monkeypatch, error_line):
    """`--config "$CFG"` with CFG unset read ./kd.toml (or no file at all) without a word, as an empty
    --db once made ./kd.db: refused, as a blank KD_CONFIG is; an empty KD_CONFIG is unset, as KD_DB."""
    write_file("kd.toml", 'db = "other.db"\n[samples]\nlimit = 1\n')
    assert error_line(invoke(["samples", "--config", ""], db=None, ok=False)) == (
        "Error: --config is empty: give the TOML file (or leave --config out for $KD_CONFIG or ./kd.toml)")
    monkeypatch.setenv("KD_CONFIG", "  ")
    assert "KD_CONFIG is blank" in error_line(invoke(["samples"], db=None, ok=False))
    monkeypatch.setenv("KD_CONFIG", "")
    assert len(invoke.json(["samples"], db=None)) == 1  # ./kd.toml


def test_a_files_values_are_checked_as_typed_ones_and_named_with_the_file(other_db, invoke, write_file, error_line, counts):
    """A NUL in a file's --reason was click's usage message about '--reason' (nobody typed it), a
    bad stage name and a blank db one-line errors naming no file: each names the file and the key,
    and nothing is written."""
    before = counts(str(other_db))
    for content, command, expected in (
        ('db = "other.db"\n[labels.set]\nreason = "a\\u0000b"\n', ["labels", "set", "1=neg"],
         "Error: kd.toml: [labels.set] reason = 'a\\x00b': contains a NUL character"),
        ('db = "other.db"\n[labels.set]\nname = "a b"\n', ["labels", "set", "1=neg"],
         "Error: kd.toml: [labels.set] name = 'a b': stage name 'a b' is not valid"),
        ('db = "other.db"\n[distill]\nname = ""\n', ["distill"], "Error: kd.toml: [distill] name = '': stage name '' is not valid"),
        ('db = " "\n', ["samples"], "Error: kd.toml: db = ' ': empty: give the store's file path or a SQLAlchemy URL"),
    ):
        write_file("kd.toml", content)
        assert error_line(invoke(command, db=None, ok=False)).startswith(expected), content
    assert counts(str(other_db)) == before
    write_file("kd.toml", 'db = "other.db"\n[labels.set]\nreason = "checked"\nname = "by-hand"\n')
    assert invoke.json(["labels", "set", "1=neg", "--json"], db=None)["stage"] == "by-hand"


@pytest.mark.on_postgresql
def test_a_config_files_server_url_keeps_its_password_out_of_errors(invoke, write_file, error_line):
    """A wrong-typed db in a config file was quoted as written, password and all."""
    for content in ('db = ["postgresql+psycopg://kd:s3cret@db.example/kd"]\n',
                    'db = ["postgresql+psycopg://kd@db.example/kd?password=s3cret"]\n'):
        write_file("kd.toml", content)
        line = error_line(invoke(["samples"], db=None, ok=False))
        assert line.startswith("Error: kd.toml: db = ") and "s3cret" not in line and "***" in line, line


def test_a_typed_budget_of_pretrain_replaces_the_files_other_one(other_db, invoke, write_file):
    """A file's `minutes` with a typed `--steps N` (the budget that reruns exactly) stopped pre-training
    by the clock after a few steps; each typed budget now replaces the file's other one."""
    write_file("kd.toml", 'db = "other.db"\n[pretrain]\nminutes = 0.0001\nlayers = 1\nhidden = 32\nheads = 2\n'
                          'max-len = 16\nbatch-size = 2\nmin-count = 1\nwwm = false\n')
    out = invoke.json(["pretrain", "--run", "p", "--steps", "3", "--json"], db=None)
    assert (out["config"]["steps"], out["config"]["minutes"], out["metrics"]["train"]["steps"]) == (3, 0.0, 3)
    write_file("kd.toml", 'db = "other.db"\n[pretrain]\nsteps = 100000\nlayers = 1\nhidden = 32\nheads = 2\n'
                          'max-len = 16\nbatch-size = 2\nmin-count = 1\nwwm = false\n')
    out = invoke.json(["pretrain", "--run", "q", "--minutes", "0.001", "--json"], db=None)
    assert (out["config"]["steps"], out["config"]["minutes"]) == (0, 0.001)
    # a typed --steps 0 is no budget ("the minutes, then"): the file's minutes stay (it was refused: no budget)
    write_file("kd.toml", 'db = "other.db"\n[pretrain]\nminutes = 0.01\nlayers = 1\nhidden = 32\nheads = 2\n'
                          'max-len = 16\nbatch-size = 2\nmin-count = 1\nwwm = false\n')
    out = invoke.json(["pretrain", "--run", "z", "--steps", "0", "--json"], db=None)
    assert (out["config"]["steps"], out["config"]["minutes"]) == (0, 0.01)


def test_an_array_or_table_inside_an_array_is_a_one_line_error(other_db, invoke, write_file, error_line, counts):
    """``teacher-weight = [[1.0]]`` crashed in float() with a TypeError traceback, and ``label = [["pos"]]``
    trained on the class "['pos']": an array or table inside a repeatable option's array is refused,
    naming the file and the key, before anything is written."""
    before = counts(str(other_db))
    for table, key, command in (
        ("distill", 'teacher-weight = [[1.0]]', ["distill", "--run", "c"]),
        ("distill", 'teacher-weight = [{w = 1.0}]', ["distill", "--run", "c"]),
        ("teach", 'label = [["pos"]]', ["teach", "--run", "c", "--model", "/nowhere"]),
        ("labels.detect", 'student-votes = [{stage = "votes"}]', ["labels", "detect", "--run", "c"]),
        ("pretrain", 'split = [["train"]]', ["pretrain", "--run", "c", "--steps", "1"]),
    ):
        write_file("kd.toml", f'db = "other.db"\n[{table}]\n{key}\n')
        result = invoke(command, db=None, ok=False)
        line = error_line(result)
        assert "Traceback" not in result.output
        assert line.startswith(f"Error: kd.toml: [{table}] {key.split(' = ')[0]} = "), line
        assert line.endswith("expected a value or an array of values, not an array or table inside one"), line
    assert counts(str(other_db)) == before
    # a flat array, or a single value, is still each option's
    write_file("kd.toml", 'db = "other.db"\n[teach]\nlabel = ["nosuch"]\nmodel = "/nowhere"\n')
    assert "--label 'nosuch' is not a class of the store" in error_line(invoke(["teach", "--run", "c"], db=None, ok=False))


def _taught_store(tmp_path, invoke) -> str:
    """A SQLite store of a small corpus's train rows with run ``r``'s tiny teacher."""
    from synthetic import corpus_files, tiny_bert_for

    (tmp_path / "corpus").mkdir()
    files = corpus_files(tmp_path / "corpus", 0, pool_per_class=2)
    model = tiny_bert_for(files, tmp_path / "tiny-bert")
    db = str(tmp_path / "t.db")
    invoke(["ingest", str(files["train"])], db=db)
    invoke(["teach", "--run", "r", "--model", str(model), "--epochs", "1", "--batch-size", "16", "--max-len", "16"], db=db)
    return db


@pytest.mark.sqlite_only
def test_a_typed_soft_loss_or_schedule_wins_over_the_files_temperatures(tmp_path, write_file, invoke):
    """A file's ``temperature = 4`` (or temperature-end) refused every `kd distill --soft-loss mse`, and its
    ``temperature-beta``/``-gamma`` every typed ``--temperature-schedule constant`` (or cwsm's gamma), with
    no way out on the command line: typed, those options are refused even at their defaults. The typed
    choice now wins, the file's unfit values go back to their defaults, and the stage records what ran."""
    db = _taught_store(tmp_path, invoke)
    write_file("kd.toml", '[distill]\ntemperature = 4\ntemperature-end = 1\ntemperature-schedule = "flsw"\n'
                          'temperature-beta = 0.5\ntemperature-gamma = 3\nepochs = 1\nembed-dim = 8\nnum-filters = 4\n')
    fields = ("soft_loss", "temperature", "temperature_end", "temperature_schedule", "temperature_beta", "temperature_gamma")

    def ran(*typed: str) -> tuple:
        config = invoke.json(["distill", "--run", "r", *typed], db=db)["config"]
        return tuple(config[f] for f in fields)

    assert ran("--soft-loss", "mse", "--name", "mse") == ("mse", 2.0, None, "constant", 1.0, 2.0)
    assert ran("--temperature-schedule", "constant", "--name", "constant") == ("kl", 4.0, 1.0, "constant", 1.0, 2.0)
    assert ran("--temperature-schedule", "cwsm", "--name", "cwsm") == ("kl", 4.0, 1.0, "cwsm", 0.5, 2.0)
    assert ran("--name", "file") == ("kl", 4.0, 1.0, "flsw", 0.5, 3.0)  # untyped, the file's as written
    # typed, an unfit temperature is still refused; and so is a file at odds with itself
    result = invoke(["distill", "--run", "r", "--soft-loss", "mse", "--temperature", "3", "--name", "x"], db=db, ok=False)
    assert "--soft-loss mse reads raw logits" in result.stderr
    write_file("kd.toml", '[distill]\nsoft-loss = "mse"\ntemperature = 4\n')
    assert "--soft-loss mse reads raw logits" in invoke(["distill", "--run", "r", "--name", "x"], db=db, ok=False).stderr


@pytest.mark.sqlite_only
def test_a_typed_student_wins_over_the_files_options_it_leaves_no_use_for(tmp_path, write_file, invoke, error_line):
    """A file written for a transformer student (its layer-map and intermediate losses) refused every typed
    `kd distill --student textcnn` ("--layer-map ...: add --student transformer, or leave it out"), its
    `init-embeddings = "teacher"` every typed `--student transformer`, and its embed-dim every typed
    `--init-embeddings teacher` ("leave --embed-dim out"), with no way out on the command line. The typed
    choice now wins, the file's unfit values go back to their defaults, and the stage records what ran."""
    db = _taught_store(tmp_path, invoke)
    write_file("kd.toml", '[distill]\nstudent = "transformer"\nlayers = 1\nlayer-map = [1]\nhidden-mse = 1.0\n'
                          'attention-kl = 0.5\nepochs = 1\nembed-dim = 8\nnum-filters = 4\n')
    config = invoke.json(["distill", "--run", "r", "--student", "textcnn", "--init-embeddings", "teacher", "--name", "cnn"], db=db)["config"]
    assert (config["student"], config["layer_map"], config["hidden_mse"], config["attention_kl"], config["embed_dim"]) == ("textcnn", [], 0.0, 0.0, 32)
    write_file("kd.toml", '[distill]\ninit-embeddings = "teacher"\nepochs = 1\nlayers = 1\n')
    config = invoke.json(["distill", "--run", "r", "--student", "transformer", "--name", "tf"], db=db)["config"]
    assert (config["student"], config["init_embeddings"]) == ("transformer", "random")
    # typed, an unfit option is still refused; and so is a file at odds with itself, naming the file
    result = invoke(["distill", "--run", "r", "--student", "textcnn", "--hidden-mse", "1", "--name", "x"], db=db, ok=False)
    assert "need --student transformer" in result.stderr
    write_file("kd.toml", '[distill]\nstudent = "textcnn"\nhidden-mse = 1.0\n')
    assert error_line(invoke(["distill", "--run", "r", "--name", "x"], db=db, ok=False)).endswith(
        'need --student transformer (kd.toml: [distill] student = "textcnn"; [distill] hidden-mse = 1.0)')


def test_a_typed_objective_wins_over_the_files_generator_size(other_db, invoke, write_file):
    """A file's ELECTRA `generator-layers` refused every typed `kd pretrain --objective mlm` ("add
    --objective electra, or leave it out"): the typed objective wins, the generator size goes back to 0."""
    write_file("kd.toml", 'db = "other.db"\n[pretrain]\nobjective = "electra"\ngenerator-layers = 1\nsteps = 1\nlayers = 1\n'
                          'hidden = 32\nheads = 2\nmax-len = 16\nbatch-size = 2\nmin-count = 1\nwwm = false\n')
    config = invoke.json(["pretrain", "--run", "p", "--objective", "mlm"], db=None)["config"]
    assert (config["objective"], config["generator_layers"]) == ("mlm", 0)


def test_an_error_about_a_files_value_names_the_file_and_the_key(other_db, invoke, write_file, error_line, counts):
    """`[teach] epochs = 0` was "--epochs, --batch-size must be >= 1 ..." and `[labels.clean] min-score = 2`
    "Invalid value for --min-score": options never typed, in a file the error did not name. The file and
    its key (and value) follow such an error; a typed value's error is as before; nothing is written."""
    before = counts(str(other_db))
    write_file("kd.toml", 'db = "other.db"\n[teach]\nepochs = 0\nmodel = "/nowhere"\n[labels.clean]\nmin-score = 2\n')
    assert error_line(invoke(["teach", "--run", "c"], db=None, ok=False)) == (
        "Error: --epochs must be at least 1, got 0 (kd.toml: [teach] epochs = 0)")
    assert error_line(invoke(["teach", "--run", "c", "--epochs", "-1"], db=None, ok=False)) == (
        "Error: --epochs must be at least 1, got -1")
    assert invoke(["labels", "clean", "--run", "c"], db=None, ok=False).stderr.splitlines()[-1] == (
        "Error: Invalid value for --min-score: 2 is not a score: scores are in [0, 1] (kd.toml: [labels.clean] min-score = 2)")
    assert counts(str(other_db)) == before


def test_heads_from_a_file_that_do_not_divide_a_typed_hidden_name_the_file(other_db, invoke, write_file, error_line, counts):
    """`kd pretrain --hidden 100` under a kd.toml's `[pretrain] heads = 3` was "--hidden 100 is not divisible
    by 3 heads": heads never typed, from a file the error did not name. The heads given are named as an
    option, so the file's value is named with it; the default heads say so, as before."""
    before = counts(str(other_db))
    write_file("kd.toml", 'db = "other.db"\n[pretrain]\nsteps = 2\nlayers = 1\nheads = 3\n')
    assert error_line(invoke(["pretrain", "--run", "c", "--hidden", "100"], db=None, ok=False)) == (
        "Error: --hidden 100 is not divisible by --heads 3 (kd.toml: [pretrain] heads = 3)")
    assert error_line(invoke(["pretrain", "--run", "c", "--hidden", "100", "--heads", "3"], db=None, ok=False)) == (
        "Error: --hidden 100 is not divisible by --heads 3")
    assert error_line(invoke(["pretrain", "--run", "c", "--hidden", "200", "--heads", "0"], db=None, ok=False)) == (
        "Error: --hidden 200 is not divisible by 3 heads (the default, --hidden / 64): pass --heads, a divisor of 200")
    assert counts(str(other_db)) == before  # refused before a run or stage is recorded
    write_file("kd.toml", 'db = "other.db"\n[pretrain]\nsteps = 2\nlayers = 1\nhidden = 32\nmin-count = 100000\n')
    assert error_line(invoke(["pretrain", "--run", "c"], db=None, ok=False)).endswith(  # (the stage's own refusal, likewise)
        ": no character occurs that many times in the 3 texts: lower it (kd.toml: [pretrain] min-count = 100000)")


def test_a_typed_values_error_names_no_file_value_that_is_fine(other_db, invoke, write_file, error_line):
    """`kd teach --epochs 0` under the README's kd.toml (`[teach] max-len = 256`) was "--epochs, --batch-size
    must be >= 1, --max-len >= 2 and --lr > 0 (kd.toml: [teach] max-len = 256)": the file's fine max-len
    blamed for a typed epochs. Each check names its own option, so the file is named only when at fault."""
    write_file("kd.toml", 'db = "other.db"\n[teach]\nmodel = "/nowhere"\nmax-len = 256\n'
                          '[distill]\nbatch-size = 64\npatience = 3\n[pretrain]\nminutes = 10\nlayers = 2\n')
    assert error_line(invoke(["teach", "--run", "c", "--epochs", "0"], db=None, ok=False)) == (
        "Error: --epochs must be at least 1, got 0")
    assert error_line(invoke(["distill", "--run", "c", "--epochs", "0"], db=None, ok=False)) == (
        "Error: --epochs must be at least 1, got 0")
    assert error_line(invoke(["distill", "--run", "c", "--max-len", "0"], db=None, ok=False)) == (
        "Error: --max-len must be at least 1, got 0")
    assert error_line(invoke(["pretrain", "--run", "c", "--steps", "-1"], db=None, ok=False)) == (
        "Error: --steps cannot be negative, got -1")
    assert error_line(invoke(["pretrain", "--run", "c", "--max-len", "4"], db=None, ok=False)) == (
        "Error: --max-len must be at least 8, got 4")
    write_file("kd.toml", 'db = "other.db"\n[teach]\nmodel = "/nowhere"\npatience = 3\n')
    assert error_line(invoke(["teach", "--run", "c", "--warmup", "1"], db=None, ok=False)) == (
        "Error: --warmup must be in [0, 1), got 1.0")  # (was "--warmup ... and --patience at least 1 ... (kd.toml: [teach] patience = 3)")
    write_file("kd.toml", 'db = "other.db"\n[teach]\nmodel = "/nowhere"\npatience = 0\n')
    assert error_line(invoke(["teach", "--run", "c"], db=None, ok=False)) == (
        "Error: --patience must be at least 1, got 0 (kd.toml: [teach] patience = 0)")


def test_a_runs_table_applies_to_kd_runs_and_kd_runs_delete(other_db, invoke, write_file, error_line):
    """`kd runs` took a subcommand (`delete`): a `[runs.delete]` table was "not a kd command (`kd runs` has
    no subcommands)" and a `[runs]` key of delete's (`dry-run`) "not an option of `kd runs`", for both."""
    invoke(["labels", "set", "--run", "r1", "1=neg"], db=other_db)
    invoke(["labels", "undo", "--run", "r1"], db=other_db)
    write_file("kd.toml", 'db = "other.db"\n[runs]\njson = true\n[runs.delete]\ndry-run = true\n')
    assert [r["run"] for r in json.loads(invoke(["runs"], db=None).output)] == ["r1"]
    assert json.loads(invoke(["runs", "delete", "--run", "r1"], db=None).output)["dry_run"] is True
    assert json.loads(invoke(["runs", "delete", "--run", "r1", "--no-dry-run", "--yes"], db=None).output)["dry_run"] is False
    write_file("kd.toml", 'db = "other.db"\n[runs]\ndry-run = true\nstage = "edit-1"\n')
    assert json.loads(invoke(["runs", "delete", "--run", "r1", "--json"], db=None).output)["kept"][0]["name"] == "edit-1"
    assert "edit-1" in invoke(["runs"], db=None).output.split("┏", 1)[1]  # the table
    write_file("kd.toml", 'db = "other.db"\n[runs]\nstagee = "x"\n')
    for args in (["runs"], ["runs", "delete", "--run", "r1", "--dry-run"]):
        assert error_line(invoke(args, db=None, ok=False)) == (
            "Error: kd.toml: [runs] 'stagee' is not an option of any command of `kd runs` (did you mean 'stage'?)")
    write_file("kd.toml", 'db = "other.db"\n[runs.delet]\nrun = "r1"\n')
    assert error_line(invoke(["runs"], db=None, ok=False)) == (
        "Error: kd.toml: [runs.delet] is not a kd command (tables are named after commands: delete) (did you mean 'delete'?)")


def test_kd_runs_delete_reads_the_config_file_it_is_given_not_kd_toml(other_db, invoke, write_file, error_line):
    """`kd runs delete --config cfg.toml` failed on ./kd.toml (not TOML, or a value kd runs refuses): the
    `kd runs` group read the default file for its own options before the subcommand named another one."""
    invoke(["labels", "set", "--run", "r1", "1=neg"], db=other_db)
    invoke(["labels", "undo", "--run", "r1"], db=other_db)
    write_file("cfg.toml", 'db = "other.db"\n')
    for broken in ("not toml\n", '[runs]\njson = "maybe"\n'):
        write_file("kd.toml", broken)
        out = invoke(["runs", "delete", "--config", "cfg.toml", "--run", "r1", "--dry-run", "--json"], db=None)
        assert json.loads(out.output)["dry_run"] is True
        for args in (["runs"], ["runs", "delete", "--run", "r1", "--dry-run"]):  # (./kd.toml's mistake, where it is read)
            assert error_line(invoke(args, db=None, ok=False)).startswith("Error: kd.toml: ")


def test_yes_is_taken_on_the_command_line_only(other_db, invoke, write_file, error_line, counts):
    """`[runs.delete] yes = true` (or a top-level one) deleted every run a later `kd runs delete` named,
    without asking: like overwrite, the file is refused."""
    invoke(["labels", "set", "--run", "r1", "1=neg"], db=other_db)
    invoke(["labels", "undo", "--run", "r1"], db=other_db)
    before = counts(str(other_db))
    for content, scope in (('db = "other.db"\nyes = true\n', "top level 'yes'"),
                           ('db = "other.db"\n[runs.delete]\nyes = true\n', "[runs.delete] 'yes'")):
        write_file("kd.toml", content)
        assert error_line(invoke(["runs", "delete", "--run", "r1"], db=None, ok=False)) == (
            f"Error: kd.toml: {scope}: --yes deletes without asking, so kd takes it on the command line only "
            "(in a file it would apply to every run)")
    assert counts(str(other_db)) == before


def test_kd_runs_options_typed_before_delete_are_refused_not_ignored(other_db, invoke, write_file, tmp_path):
    """`kd runs --db other.db delete --run R` read ./kd.db (or $KD_DB): the group's --db, --config and
    --json never reached the subcommand. They are refused, naming where they go."""
    write_file("cfg.toml", 'db = "other.db"\n')
    for args in (["runs", "--db", str(other_db), "delete", "--run", "r1", "--dry-run"],
                 ["runs", "--config", "cfg.toml", "delete", "--run", "r1", "--dry-run"],
                 ["runs", "--json", "delete", "--run", "r1", "--dry-run"]):
        result = invoke(args, db=None, ok=False)
        assert result.exit_code == 2 and f"Error: {args[1]} goes after the subcommand: kd runs delete {args[1]} ..." in result.stderr
    assert not (tmp_path / "kd.db").exists()
    assert json.loads(invoke(["runs", "--config", "cfg.toml", "--json"], db=None).output) == []


def test_a_table_or_key_in_the_wrong_place_names_where_it_belongs(other_db, invoke, write_file, error_line):
    """`[distil]` (or `[Teach]`) listed every command but named none, and `[teach] student = ...`, a key of
    another command, was "not an option of `kd teach`" as if no command took it: the close table, and the
    command that takes the key, are named."""
    for content, expected in (
        ('db = "other.db"\n[distil]\nalpha = 0.7\n', "(did you mean 'distill'?)"),
        ('db = "other.db"\n[Samples]\nlimit = 1\n', "(did you mean 'samples'?)"),
        ('db = "other.db"\n[samples]\nstudent = "bilstm"\n',
         "[samples] 'student' is not an option of `kd samples` (an option of `kd distill`: put it under [distill])"),
        ('db = "other.db"\n[samples]\nmethod = "disagree"\n',
         "(an option of `kd labels detect`: put it under [labels.detect])"),
    ):
        write_file("kd.toml", content)
        line = error_line(invoke(["samples"], db=None, ok=False))
        assert line.startswith("Error: kd.toml: ") and line.endswith(expected), line


def test_an_error_naming_a_files_value_names_the_file(other_db, invoke, write_file, error_line):
    """A file's `run = "nosuch"` was "no run 'nosuch' in ..." and its `label` "no class ..." with no word of
    the file the value came from (the error names the value, not the option); a value is shown as the file
    has it (`split = 1`, not the list `[1]` it becomes; `epochs = 3.0` is no "not a whole number")."""
    write_file("kd.toml", 'db = "other.db"\nrun = "nosuch"\n[samples]\nlabel = "maybe"\n')
    assert error_line(invoke(["report"], db=None, ok=False)).endswith("(kd.toml: run = \"nosuch\")")
    assert error_line(invoke(["samples"], db=None, ok=False)) == (
        "Error: no class 'maybe' (classes: pos, neg) (kd.toml: [samples] label = \"maybe\")")
    # typed: no file named; a store of no runs names the command that starts one (`kd runs` would list none)
    assert error_line(invoke(["report", "--run", "nosuch"], db=None, ok=False)).endswith("it has no runs yet: `kd teach --run R` (or `kd pretrain --run R`) starts one")
    write_file("kd.toml", 'db = "other.db"\n[teach]\nsplit = 1\n')
    assert error_line(invoke(["teach", "--run", "c"], db=None, ok=False)).startswith("Error: kd.toml: [teach] split = 1: ")
    write_file("kd.toml", 'db = "other.db"\n[samples]\nlimit = 3.0\n')
    assert error_line(invoke(["samples"], db=None, ok=False)) == (
        "Error: kd.toml: [samples] limit = 3.0: --limit takes a whole number, written without a decimal point or exponent (3, not 3.0 or 3e0)")
    write_file("kd.toml", 'db = "other.db"\n[samples]\nlimit = 1e3\n')  # (TOML's float: it said "not 1000.0", never written)
    assert error_line(invoke(["samples"], db=None, ok=False)).endswith("(1000, not 1000.0 or 1e3)")
    write_file("kd.toml", 'db = "other.db"\n[samples]\nlimit = 1\n'.encode("utf-16"))  # (Windows PowerShell's `>`)
    assert error_line(invoke(["samples"], db=None, ok=False)) == (
        "Error: kd.toml: saved as UTF-16 (its byte order mark); save the file as UTF-8")


def test_an_error_naming_a_files_path_unquoted_names_the_file(other_db, invoke, write_file, error_line):
    """A file's path the error names as a path, not quoted ("nonexist.txt: cannot read corpus: ...", "no
    exported model at nodir" for `artifact = "./nodir"`) named no file, section or key: the user who typed
    neither --corpus nor --artifact was left to guess where the path came from."""
    write_file("kd.toml", 'db = "other.db"\n[pretrain]\ncorpus = "nonexist.txt"\nsteps = 1\n')
    assert error_line(invoke(["pretrain", "--run", "c"], db=None, ok=False)) == (
        'Error: nonexist.txt: cannot read corpus: No such file or directory (kd.toml: [pretrain] corpus = "nonexist.txt")')
    write_file("kd.toml", '[predict]\nartifact = "./nodir"\n')
    assert error_line(invoke(["predict"], db=None, ok=False, input="好\n")).endswith('(kd.toml: [predict] artifact = "./nodir")')
    assert error_line(invoke(["predict", "--artifact", "./nodir"], db=None, ok=False, input="好\n")).endswith("(make one with `kd export`)")  # typed: no file


def test_an_error_about_a_files_db_names_the_file(invoke, write_file, error_line, monkeypatch):
    """A file's `db = "nothere.db"` (a typo, or a store moved) was "no kd store at nothere.db ... run `kd ingest
    FILE --db nothere.db`" with no word of the file: a user who typed no --db and set no KD_DB was left to guess
    where the path came from. A server URL's password stays hidden in the note as in the message."""
    monkeypatch.delenv("KD_DB", raising=False)
    write_file("kd.toml", 'db = "nothere.db"\n')
    assert error_line(invoke(["runs"], db=None, ok=False)).endswith('(kd.toml: db = "nothere.db")')
    write_file("kd.toml", '[ingest]\ndb = "nofolder/x.db"\n')
    write_file("train.tsv", TRAIN)
    assert error_line(invoke(["ingest", "train.tsv"], db=None, ok=False)).endswith('(kd.toml: [ingest] db = "nofolder/x.db")')
    assert "kd.toml" not in error_line(invoke(["runs", "--db", "nothere.db"], db=None, ok=False))  # typed: no file
    write_file("kd.toml", 'db = "postgresql+psycopg://kd:s3cret@127.0.0.1:1/kd"\n')  # (a port nothing listens on)
    line = error_line(invoke(["runs"], db=None, ok=False))
    assert "s3cret" not in line and line.endswith('(kd.toml: db = "postgresql+psycopg://kd:***@127.0.0.1:1/kd")'), line


def test_an_array_of_tables_or_a_key_named_after_a_command_is_refused_naming_the_table(other_db, invoke, write_file, error_line):
    """`[[export]]` (TOML's array of tables, double brackets) was passed over in silence by `kd export`: its
    `run` and `format` were not used, the command ran on the defaults; `[[teach]]` and `[[labels.detect]]`
    were "not an option ... (did you mean 'teacher-run'?)", and so was a plain `teach = 3`."""
    for content, args, expected in (
        ('db = "other.db"\n[[export]]\nrun = "r1"\n', ["export"],
         "Error: kd.toml: [[export]] is an array of tables (double brackets): write [export]"),
        ('db = "other.db"\n[[teach]]\nepochs = 1\n', ["samples"],
         "Error: kd.toml: [[teach]] is an array of tables (double brackets): write [teach]"),
        ('db = "other.db"\n[[labels.detect]]\nmethod = "disagree"\n', ["labels", "show"],
         "Error: kd.toml: [[labels.detect]] is an array of tables (double brackets): write [labels.detect]"),
        ('db = "other.db"\n[[distil]]\nalpha = 0.5\n', ["samples"],
         "Error: kd.toml: [[distil]] is not a kd command (tables are named after commands: "),
        ('db = "other.db"\nteach = 3\n', ["samples"],
         "Error: kd.toml: top level 'teach' is not an option of any command of kd (`kd teach` is a command: its options go under [teach])"),
    ):
        write_file("kd.toml", content)
        line = error_line(invoke(args, db=None, ok=False))
        assert line.startswith(expected), (content, line)
    # a key that is both an option and a command's name (`kd classes --export`) is still an option
    write_file("kd.toml", 'db = "other.db"\n[classes]\nexport = "ids.txt"\n')
    invoke(["classes"], db=None)
    assert (other_db.parent / "ids.txt").is_file()


def test_an_error_about_a_files_augment_or_model_names_the_file(other_db, invoke, write_file, error_line, counts):
    """A file's `augment = "mask,synonym"` and `model = "pretrain:nosuch"` were refused naming neither an option
    nor the file ("unknown augmentation method(s) synonym", "no run 'nosuch' in ..."): a user who typed neither
    was left to guess where they came from. Typed, they name no file."""
    before = counts(str(other_db))
    write_file("kd.toml", 'db = "other.db"\n[distill]\naugment = "mask,synonym"\n')
    assert error_line(invoke(["distill", "--run", "c"], db=None, ok=False)) == (
        'Error: --augment: unknown augmentation method(s) synonym: choose from mask, pos, ngram '
        '(kd.toml: [distill] augment = "mask,synonym")')
    assert error_line(invoke(["distill", "--run", "c", "--augment", "synonym"], db=None, ok=False)) == (
        "Error: --augment: unknown augmentation method(s) synonym: choose from mask, pos, ngram")
    write_file("kd.toml", 'db = "other.db"\n[teach]\nmodel = "pretrain:nosuch"\n')
    line = error_line(invoke(["teach", "--run", "c"], db=None, ok=False))
    assert line.startswith("Error: --model pretrain:nosuch: no run 'nosuch' in ") and line.endswith(
        '(kd.toml: [teach] model = "pretrain:nosuch")'), line
    assert counts(str(other_db)) == before


def test_a_files_logits_only_is_named_when_it_refuses_typed_training_options(other_db, invoke, write_file):
    """`[teach] logits-only = true` refused a typed `--model M --epochs 1` with "--model, --epochs: --logits-only
    scores with the run's teacher ...", naming no file: the user never typed --logits-only."""
    write_file("kd.toml", 'db = "other.db"\n[teach]\nlogits-only = true\n')
    assert invoke(["teach", "--run", "c", "--model", "m", "--epochs", "1"], db=None, ok=False).stderr.splitlines()[-1] == (
        "Error: --model, --epochs: --logits-only scores with the run's teacher as it was trained (at its --max-len) "
        "(kd.toml: [teach] logits-only = true)")
    assert invoke(["teach", "--run", "c", "--logits-only", "--epochs", "1"], db=None, ok=False).stderr.splitlines()[-1] == (
        "Error: --epochs: --logits-only scores with the run's teacher as it was trained (at its --max-len)")


def test_a_typed_student_option_refused_by_the_files_student_names_the_file(other_db, invoke, write_file):
    """`[distill] student = "early-exit"` refused a typed `--grad-accum 2` (or `--eval-every`, `--match`) with
    "--grad-accum: for students, not --student early-exit", and a file's `student = "bilstm"` a typed `--speed`
    with "not bilstm": a user who typed no --student was left to guess where it came from."""
    write_file("kd.toml", 'db = "other.db"\n[distill]\nstudent = "early-exit"\n')
    assert invoke(["distill", "--run", "c", "--grad-accum", "2"], db=None, ok=False).stderr.splitlines()[-1] == (
        "Error: --grad-accum: for students, not --student early-exit (it trains exit branches on the teacher's own layers, each learning the final layer's answers at one --temperature: no student's model, loss or schedule) "
        '(kd.toml: [distill] student = "early-exit")')
    write_file("kd.toml", 'db = "other.db"\n[distill]\nstudent = "bilstm"\n')
    assert invoke(["distill", "--run", "c", "--speed", "0.3"], db=None, ok=False).stderr.splitlines()[-1] == (
        'Error: --speed: for --student early-exit, not bilstm (kd.toml: [distill] student = "bilstm")')
    # typed, the student is no file's
    assert invoke(["distill", "--run", "c", "--student", "textcnn", "--speed", "0.3"], db=None, ok=False).stderr.splitlines()[-1] == (
        "Error: --speed: for --student early-exit, not textcnn")


def test_a_refused_option_is_named_as_typed_not_by_its_parameter(other_db, invoke):
    """`kd distill --student early-exit --match hidden_mse:0:1` was refused naming `--matches`, an option
    kd has not (the parameter behind `--match`)."""
    said = invoke(["distill", "--run", "c", "--student", "early-exit", "--match", "hidden_mse:0:1"], db=other_db, ok=False)
    assert said.stderr.splitlines()[-1] == (
        "Error: --match: for students, not --student early-exit (it trains exit branches on the teacher's own layers, each learning the final layer's answers at one --temperature: no student's model, loss or schedule)")
