"""The migration chain: a new store walks 0001 → head, its schema equals the ORM models, and an
out-of-date or foreign database is refused with a message that says what to do."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from kdstore import migrate
from kdstore.engine import make_engine, resolve_url
from kdstore.errors import KdError
from kdstore.schema import Base
from kdstore.store import Store

from conftest import store_exists

pytestmark = [pytest.mark.new_database, pytest.mark.on_postgresql]  # (every database here starts as kd never touched it)


def test_chain_is_linear_from_0001_to_head():
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrate._config())
    chain = [s.revision for s in reversed(list(script.walk_revisions()))]
    assert chain == ["0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008", "0009", "0010", "0011"]
    assert migrate.head_revision() == "0011"


def test_new_store_is_migrated_to_head_and_matches_models(db):
    assert not store_exists(db)
    store = Store.open(db)
    try:
        assert store_exists(db)
        assert migrate.current_revision(store.engine) == migrate.head_revision() == "0011"
        tables = set(inspect(store.engine).get_table_names())
        assert tables == set(Base.metadata.tables) | {"alembic_version"}
        with store.engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(ctx, Base.metadata)
        assert diff == []
    finally:
        store.close()


@pytest.mark.sqlite_only
def test_engine_turns_on_foreign_keys_and_wal(db_path):
    """SQLite foreign keys are on (ON DELETE CASCADE relies on it) and the journal is WAL."""
    store = Store.open(str(db_path))
    try:
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        store.close()


def _engine_at(db, revision):
    engine = make_engine(resolve_url(str(db)))
    migrate.upgrade(engine, revision)
    return engine


def test_store_at_0001_is_refused_then_upgraded_by_cli(db, invoke, counts):
    engine = _engine_at(db, "0001")
    assert migrate.current_revision(engine) == "0001"
    assert "logits" not in inspect(engine).get_table_names()
    engine.dispose()

    with pytest.raises(KdError) as info:
        Store.open(db)
    message = str(info.value)
    assert f"`kd db upgrade --db {db}`" in message  # (the test's paths and URLs need no shell quoting)
    assert "0001" in message and "0011" in message

    # the CLI refuses it too, as a one-line error, and does not upgrade it behind the user's back
    result = invoke(["samples"], ok=False)
    assert "kd db upgrade" in result.stderr
    state = invoke.json(["db", "current"])
    assert state["current"] == "0001" and state["head"] == "0011"
    assert state["up_to_date"] is False
    assert invoke(["db", "current", "--check", "--json"], ok=False).exit_code == 1

    result = invoke(["db", "upgrade"])
    assert "0001 -> 0011" in result.stdout

    store = Store.open(db, create=False)
    try:
        assert migrate.current_revision(store.engine) == "0011"
        with store.engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(ctx, Base.metadata) == []
    finally:
        store.close()
    assert set(counts()) == set(Base.metadata.tables)
    assert all(n == 0 for n in counts().values())


@pytest.mark.sqlite_only
def test_refusal_names_the_command_that_upgrades_that_store(tmp_path, invoke, error_line):
    """A store given by --db is refused with an upgrade command that names it: a bare `kd db upgrade`
    made a new ./kd.db and left the old store as it was. The command, run as a shell reads it, works."""

    folder = tmp_path / "旧 store"
    folder.mkdir()
    old = folder / "it's old.db"
    _engine_at(old, "0005").dispose()
    line = error_line(invoke(["samples"], db=old, ok=False))
    command = line.split("run `")[1].split("`")[0]
    assert shlex.split(command) == ["kd", "db", "upgrade", "--db", str(old)]
    assert command in invoke(["db", "current"], db=old).stdout
    assert "0005 -> 0011" in invoke(shlex.split(command)[1:], db=None).stdout
    assert not (tmp_path / "kd.db").exists()
    invoke(["samples"], db=old)



@pytest.mark.sqlite_only
def test_a_store_given_as_a_sqlite_uri_is_that_file_and_its_upgrade_command_names_it(tmp_path, invoke, error_line):
    """sqlite:///file:PATH?uri=true (SQLAlchemy's URI form) was "no kd store at file:PATH", and an old
    store's refusal said `kd db upgrade --db file:PATH`: a path, where that command made a new store."""
    import shlex

    old = tmp_path / "old.db"
    _engine_at(old, "0005").dispose()
    url = f"sqlite:///file:{old}?uri=true"
    line = error_line(invoke(["samples"], db=url, ok=False))
    command = line.split("run `")[1].split("`")[0]
    assert shlex.split(command) == ["kd", "db", "upgrade", "--db", str(old)]
    assert invoke.json(["db", "current"], db=url)["state"] == "behind"
    assert "0005 -> 0011" in invoke(shlex.split(command)[1:], db=None).stdout
    assert not (tmp_path / "file:old.db").exists() and not (Path.cwd() / "file:old.db").exists()
    invoke(["samples"], db=url)


@pytest.mark.sqlite_only
def test_a_read_only_store_file_is_not_upgraded_and_left_without_read_only_wal_files(db_path, invoke, error_line, monkeypatch):
    """A store file kd cannot write (chmod a-w): every command, `kd db current` included, left its
    -wal and -shm files beside it, read-only as the file is, and `kd db upgrade` said "attempt to
    write a readonly database"; once the file was writable again, those files kept `kd db upgrade`
    (and every writer) refusing it with the same words. It is read read-only, as a store in a
    read-only folder is, and `kd db upgrade` says why it cannot upgrade it, changing nothing."""
    import os

    _engine_at(db_path, "0005").dispose()
    access = os.access  # (root writes anywhere: the file is read-only to kd as to any other user)
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if str(p) == str(db_path) and mode == os.W_OK else access(p, mode, *a, **k))
    db_path.chmod(0o444)
    try:
        assert invoke.json(["db", "current"])["current"] == "0005"
        assert "run `kd db upgrade --db" in error_line(invoke(["runs"], ok=False))
        assert error_line(invoke(["db", "upgrade"], ok=False)) == (
            f"Error: cannot upgrade sqlite:///{db_path} from revision 0005 to 0011: the file is read-only; nothing was changed")
        assert not Path(f"{db_path}-wal").exists() and not Path(f"{db_path}-shm").exists()
    finally:
        db_path.chmod(0o644)
    monkeypatch.setattr(os, "access", access)
    assert "0005 -> 0011" in invoke(["db", "upgrade"]).stdout
    invoke(["runs"])


@pytest.mark.sqlite_only  # the paths are the test's own
def test_an_old_store_in_a_read_only_folder_is_refused_with_what_lets_it_be_upgraded(db_path, invoke, error_line, monkeypatch):
    """An older kd's store on a read-only share: every command said "run `kd db upgrade --db ...` first",
    and that command then refused it as read-only. The refusal says why it cannot be upgraded there
    and what can be done, changing nothing."""
    import os

    _engine_at(db_path, "0005").dispose()
    folder = db_path.parent
    access = os.access  # (root writes anywhere: the folder is read-only to kd as to any other user)
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if str(p) == str(folder) and mode == os.W_OK else access(p, mode, *a, **k))
    line = error_line(invoke(["runs"], ok=False))
    assert line == (f"Error: sqlite:///{db_path} is at schema revision 0005, kd needs 0011, and its folder {folder} is read-only: "
                    f"make it writable, then run `kd db upgrade --db {db_path}` (or copy the store, with its kd-artifacts folder, "
                    "to a folder kd can write and upgrade the copy)")
    assert invoke.json(["db", "current"])["current"] == "0005"
    monkeypatch.setattr(os, "access", access)
    assert "0005 -> 0011" in invoke(["db", "upgrade"]).stdout


@pytest.mark.sqlite_only  # the paths are the test's own
def test_db_current_of_an_old_read_only_store_does_not_advise_an_upgrade_that_is_refused(db_path, invoke, monkeypatch):
    """`kd db current` of an older kd's store in a folder kd cannot write said "run `kd db upgrade --db ...`",
    which then refused it as read-only; every other command's refusal says why and what to do first."""
    import os

    _engine_at(db_path, "0005").dispose()
    folder = db_path.parent
    access = os.access  # (root writes anywhere: the folder is read-only to kd as to any other user)
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if str(p) == str(folder) and mode == os.W_OK else access(p, mode, *a, **k))
    said = invoke(["db", "current"]).stdout
    assert said == (f"sqlite:///{db_path}: revision 0005 (head 0011, its folder {folder} is read-only: make it writable, "
                    f"then run `kd db upgrade --db {db_path}`)\n")
    monkeypatch.setattr(os, "access", access)
    assert invoke(["db", "current"]).stdout.endswith(f"(head 0011, run `kd db upgrade --db {db_path}`)\n")


@pytest.mark.sqlite_only  # the URL is the test's own
def test_db_commands_name_a_store_they_cannot_open(tmp_path, invoke, error_line):
    """`kd db current|upgrade` say which store they could not open, as every other command does
    ("database error: Connection refused" named none), a server's password hidden."""
    url = "postgresql+psycopg://u:s3cret@127.0.0.1:1/kd"  # (port 1: refused at once)
    for command in (["db", "current"], ["db", "upgrade"]):
        line = error_line(invoke(command, db=url, ok=False))
        assert line.startswith("Error: cannot open the store at postgresql+psycopg://u:***@127.0.0.1:1/kd: ") and "s3cret" not in line
    (tmp_path / "a.txt").write_text("x")
    line = error_line(invoke(["db", "upgrade"], db=tmp_path / "a.txt" / "kd.db", ok=False))
    assert line == f"Error: cannot create {tmp_path}/a.txt/kd.db: {tmp_path}/a.txt is a file, not a folder"  # (SQLite's "unable to open")


@pytest.mark.sqlite_only  # the paths are the test's own
def test_a_db_that_is_no_regular_file_is_refused(tmp_path, invoke, error_line):
    """A device or a named pipe given as --db: `kd db current --db /dev/null` called it an empty
    database and named `kd db upgrade --db /dev/null`, which then failed with "disk I/O error";
    a named pipe no process writes to hung every command, `kd db current` included, for ever."""
    import os

    for command in (["db", "current"], ["db", "upgrade"], ["runs"]):
        assert error_line(invoke(command, db="/dev/null", ok=False)) == (
            "Error: /dev/null: not a regular file (not a kd store): give a file path for --db")
    pipe = tmp_path / "pipe.db"
    os.mkfifo(pipe)
    for command in (["db", "current"], ["db", "upgrade"], ["runs"]):
        assert error_line(invoke(command, db=pipe, ok=False)) == (
            f"Error: {pipe}: not a regular file (not a kd store): give a file path for --db")


def test_upgrade_keeps_rows_written_at_0001(db, invoke, read_samples):
    engine = _engine_at(db, "0001")
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO classes (id, name) VALUES (0, 'pos')")
        conn.exec_driver_sql(
            "INSERT INTO samples (text, text_hash, split, label_id, orig_label_id, dropped, source, line)"
            " VALUES ('good', 'h1', 'train', 0, 0, FALSE, 'old.tsv', 1)"
        )
    engine.dispose()
    invoke(["db", "upgrade"])
    rows = read_samples()
    assert [(r["text"], r["label"], r["source"]) for r in rows] == [("good", "pos", "old.tsv")]


def test_upgrade_to_0006_lists_the_augmented_samples_each_recipe_stored(db, invoke):
    engine = _engine_at(db, "0005")
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO classes (id, name) VALUES (0, 'pos')")
        conn.exec_driver_sql(
            "INSERT INTO samples (id, text, text_hash, split, label_id, orig_label_id, dropped, source, line, parent_id) VALUES "
            "(1, 'good', 'h1', 'train', 0, 0, FALSE, 'a.tsv', 1, NULL), "
            "(2, 'go[UNK]', 'h2', 'unlabeled', NULL, NULL, FALSE, 'augment:mask+pos+ngram:n1:s42:p0.1/0.1/0.25', NULL, 1), "
            "(3, 'pool text', 'h3', 'unlabeled', NULL, NULL, FALSE, 'pool.txt', 1, NULL), "
            "(4, 'go', 'h4', 'unlabeled', NULL, NULL, FALSE, 'augment:ngram:n4:s7:p0.3/0.1/0.5:unk=<unk>', NULL, 1)"
        )
    engine.dispose()
    invoke(["db", "upgrade"])
    store = Store.open(db, create=False)
    try:  # under the names kd gives these recipes now (the probabilities of unused methods are "-")
        from kdstore.augmented import Recipe

        full = Recipe(methods=("mask", "pos", "ngram"), n=1, seed=42).source
        ngram = Recipe(methods=("ngram",), n=4, seed=7, p_mask=0.3, p_ngram=0.5, unk="<unk>").source
        assert (full, ngram) == ("augment:mask+pos+ngram:n1:s42:p0.1/0.1/0.25", "augment:ngram:n4:s7:p-/-/0.5")
        assert store.samples(augmented=full).ids.tolist() == [2] and store.samples(augmented=ngram).ids.tolist() == [4]
        with store.engine.connect() as conn:
            assert sorted(conn.execute(text("SELECT source, sample_id FROM augmented_texts")).all()) == [(full, 2), (ngram, 4)]
    finally:
        store.close()


def test_upgrade_to_0011_names_a_recipe_that_does_not_mask_without_the_unknown_token(db, invoke):
    """A pos/ngram recipe run with a RoBERTa teacher was named by its `<unk>`, which only mask writes: run
    again with a BERT teacher it made and scored its texts twice. 0011 renames it; a text listed under both
    names is listed once; a masking recipe keeps its token."""
    engine = _engine_at(db, "0010")
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO classes (id, name) VALUES (0, 'pos')")
        conn.exec_driver_sql(
            "INSERT INTO samples (id, text, text_hash, split, label_id, orig_label_id, dropped, source, line, parent_id) VALUES "
            "(1, 'good', 'h1', 'train', 0, 0, FALSE, 'a.tsv', 1, NULL), "
            "(2, 'go', 'h2', 'unlabeled', NULL, NULL, FALSE, 'augment:pos+ngram:n4:s42:p-/0.1/0.25:unk=<unk>', NULL, 1), "
            "(3, 'od', 'h3', 'unlabeled', NULL, NULL, FALSE, 'augment:pos+ngram:n4:s42:p-/0.1/0.25', NULL, 1), "
            "(4, 'g<unk>', 'h4', 'unlabeled', NULL, NULL, FALSE, 'augment:mask:n4:s42:p0.1/-/-:unk=<unk>', NULL, 1)")
        conn.exec_driver_sql(
            "INSERT INTO augmented_texts (source, sample_id) VALUES "
            "('augment:pos+ngram:n4:s42:p-/0.1/0.25:unk=<unk>', 2), ('augment:pos+ngram:n4:s42:p-/0.1/0.25:unk=<unk>', 3), "
            "('augment:pos+ngram:n4:s42:p-/0.1/0.25', 3), ('augment:mask:n4:s42:p0.1/-/-:unk=<unk>', 4)")
    engine.dispose()
    invoke(["db", "upgrade"])
    store = Store.open(db, create=False)
    try:
        from kdstore.augmented import Recipe

        plain = Recipe(methods=("pos", "ngram"), unk="<unk>").source
        masking = Recipe(methods=("mask",), unk="<unk>").source
        assert (plain, masking) == ("augment:pos+ngram:n4:s42:p-/0.1/0.25", "augment:mask:n4:s42:p0.1/-/-:unk=<unk>")
        assert store.samples(augmented=plain).ids.tolist() == [2, 3] and store.samples(augmented=masking).ids.tolist() == [4]
        with store.engine.connect() as conn:
            assert sorted(conn.execute(text("SELECT source, sample_id FROM augmented_texts")).all()) == [
                (masking, 4), (plain, 2), (plain, 3)]
            assert conn.execute(text("SELECT source FROM samples ORDER BY id")).scalars().all() == ["a.tsv", plain, plain, masking]
    finally:
        store.close()


def test_downgrade_and_upgrade_keep_the_rows_of_rebuilt_tables(db, invoke, write_file):
    """Going back past 0007 rebuilds ``stages`` on SQLite (Alembic's batch mode copies the table and
    drops the old one): with foreign keys on, that drop cascaded to logits, predictions and metrics.
    kd migrates with them off, then checks the keys, on every backend."""
    import numpy as np

    from kdstore.runs import stage_scope

    write_file("train.tsv", "pos\tgood\nneg\tbad\n")
    invoke(["ingest", "train.tsv"])
    store = Store.open(db, create=False)
    try:
        with stage_scope(store, run="r", kind="teach", config={}) as stage:
            store.write_logits(stage.id, store.samples().ids, np.zeros((2, 2), np.float32))
            store.add_metrics(stage.id, "dev", {"accuracy": 0.5})
        def counts():  # read as they are, whatever the revision (Store.open refuses an old one)
            with store.engine.connect() as conn:
                return {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
                        for t in ("samples", "stages", "logits", "metrics")}

        before = counts()
        assert before == {"samples": 2, "stages": 1, "logits": 2, "metrics": 1}
        migrate.downgrade(store.engine, "0006")
        assert migrate.current_revision(store.engine) == "0006"
        assert counts() == before  # the logits, metrics and stages are all still there
        migrate.upgrade(store.engine)
        assert counts() == before and migrate.current_revision(store.engine) == migrate.head_revision()
        with store.engine.connect() as conn:
            if conn.dialect.name == "sqlite":  # the pooled connection has its foreign keys back on
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        store.close()


def test_db_current_json_reports_current_and_head(db, invoke):
    invoke(["db", "upgrade"])  # creates the store
    state = invoke.json(["db", "current"])
    assert state == {
        "db": resolve_url(db),
        "current": "0011",
        "head": "0011",
        "up_to_date": True,
        "state": "current",
    }
    text = invoke(["db", "current"]).stdout
    assert "revision 0011" in text and "up to date" in text
    assert invoke(["db", "current", "--check"]).exit_code == 0


def test_db_current_check_says_why_it_fails_on_standard_error(db, invoke, error_line):
    """`kd db current --check --json` (and `--check` with its output sent to /dev/null) exited 1 with no
    Error line: a deploy check's log said nothing of why. Its JSON stays the whole of standard output."""
    _engine_at(db, "0005").dispose()
    checked = invoke(["db", "current", "--check", "--json"], ok=False)
    assert checked.exit_code == 1 and json.loads(checked.stdout)["state"] == "behind"
    line = error_line(checked)
    assert "revision 0005" in line and "0011" in line and "kd db upgrade --db" in line
    assert "kd db upgrade --db" in error_line(invoke(["db", "current", "--check"], ok=False))
    invoke(["db", "upgrade"])
    assert invoke(["db", "current", "--check", "--json"]).stderr == ""


def test_db_upgrade_on_new_path_creates_store(db, invoke):
    result = invoke(["db", "upgrade"])
    assert "empty -> 0011" in result.stdout
    assert store_exists(db)
    # running it again is harmless
    assert "already at revision 0011, nothing to do" in invoke(["db", "upgrade"]).stdout
    again = invoke.json(["db", "upgrade"])
    assert (again["before"], again["after"]) == ("0011", "0011") and again["db"]


def test_db_current_on_missing_store_fails_cleanly(db, invoke, error_line):
    result = invoke(["db", "current"], ok=False)
    line = error_line(result)
    assert db.split("://")[-1].split("@")[-1] in line and "no kd store" in line
    assert not store_exists(db)


@pytest.mark.sqlite_only  # the paths are the test's own
def test_a_missing_store_given_by_db_is_refused_with_the_command_that_makes_that_store(tmp_path, invoke, error_line, monkeypatch):
    """A --db (or KD_DB) naming no file, a path mistyped or a store moved away: the refusal said "run
    `kd ingest` first, or pass --db", to a user who had passed --db, and a bare `kd ingest` makes
    ./kd.db (or $KD_DB), not this store. It names the store's own --db, as an empty database's does."""
    missing = tmp_path / "其他 folder" / "kd.db"
    missing.parent.mkdir()
    want = (f"Error: no kd store at {missing} (no such file): check the path, or run "
            f"`kd ingest FILE --db {shlex.quote(str(missing))}` first to make one there")
    for command in (["runs"], ["db", "current"], ["report", "--run", "r1"]):
        assert error_line(invoke(command, db=missing, ok=False)) == want
    monkeypatch.setenv("KD_DB", str(missing))
    assert error_line(invoke(["runs"], db=None, ok=False)) == want
    monkeypatch.delenv("KD_DB")
    assert error_line(invoke(["runs"], db=None, ok=False)) == "Error: no kd store at kd.db: run `kd ingest` first, or pass --db"
    assert not missing.exists() and not (tmp_path / "kd.db").exists()


@pytest.mark.sqlite_only  # the paths are the test's own
def test_a_store_in_a_missing_folder_is_not_refused_with_a_command_that_fails(tmp_path, invoke, error_line):
    """A --db whose folder does not exist (a mistyped folder, a relative path run from elsewhere): the
    refusal advised `kd ingest FILE --db PATH` to make one there, which then failed with "cannot create
    PATH: folder ... does not exist". It says the folder is missing, and creates nothing."""
    missing = tmp_path / "no such folder" / "kd.db"
    want = (f"Error: no kd store at {missing} (folder {missing.parent} does not exist): check the path, or make the "
            f"folder, then run `kd ingest FILE --db {shlex.quote(str(missing))}` to make one there")
    for command in (["runs"], ["db", "current"], ["db", "current", "--check", "--json"]):
        assert error_line(invoke(command, db=missing, ok=False)) == want
    assert not missing.parent.exists()


def test_db_current_on_an_empty_database_names_the_command_that_creates_that_store(db, invoke, error_line):
    """An empty database given by --db (a PostgreSQL database just made by createdb, an empty file):
    `kd db current` advised a bare `kd db upgrade`, which makes ./kd.db (or $KD_DB), not this store."""
    import shlex

    if "://" not in db:
        Path(db).touch()
    line = error_line(invoke(["db", "current"], ok=False))
    # (the ingest it names makes this store: a bare `kd ingest FILE` made ./kd.db, or $KD_DB)
    assert shlex.split(line.split("run `")[1].split("`")[0])[:4] == ["kd", "ingest", "FILE", "--db"]
    command = line.split("or `")[1].split("`")[0]
    assert shlex.split(command)[:4] == ["kd", "db", "upgrade", "--db"] and shlex.split(command)[4] in (db, resolve_url(db))
    assert "empty -> 0011" in invoke(shlex.split(command)[1:], db=None).stdout
    assert not Path("kd.db").exists() and invoke.json(["db", "current"])["state"] == "current"

@pytest.mark.sqlite_only  # the file is the test's own
def test_an_empty_file_given_as_db_is_left_empty_by_the_commands_that_refuse_it(db_path, invoke, error_line):
    """An empty file given as --db (a TSV not yet written, a placeholder): `kd samples`, `kd runs`,
    `kd db current` said "no kd store ... (the database is empty)" and left it a 4096-byte SQLite
    database in WAL mode, connecting having written a header into it. They change nothing; a command
    that creates a store (`kd db upgrade`, `kd ingest`) still makes one there."""
    db_path.touch()
    for args in (["samples"], ["runs"], ["report"], ["db", "current"], ["db", "current", "--json"]):
        said = error_line(invoke(args, ok=False))
        assert "(the database is empty)" in said
        if args[0] != "db":  # the store to ingest into named: a bare `kd ingest FILE` made ./kd.db, not this one
            assert said.endswith(f"run `kd ingest FILE --db {shlex.quote(str(db_path))}` first"), said
        assert db_path.stat().st_size == 0, args
        assert not Path(f"{db_path}-wal").exists() and not Path(f"{db_path}-shm").exists()
    assert "empty -> 0011" in invoke(["db", "upgrade"]).stdout
    assert invoke.json(["db", "current"])["state"] == "current"


def _foreign_database(db):
    """Make ``db`` someone else's database: one table of theirs, one row."""
    engine = make_engine(resolve_url(db))
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)"))
        conn.execute(text("INSERT INTO customers (id, name) VALUES (1, 'ann')"))
    return engine


def test_non_kd_database_is_refused(db, invoke, error_line, write_file):
    engine = _foreign_database(db)
    with pytest.raises(KdError, match="not a kd store"):
        Store.open(db)
    result = invoke(["samples"], ok=False)
    assert "not a kd store" in error_line(result)
    write_file("train.tsv", "pos\tgood\n")
    result = invoke(["ingest", "train.tsv"], ok=False)
    assert "not a kd store" in error_line(result)

    # nothing was created in the foreign database
    assert set(inspect(engine).get_table_names()) == {"customers"}
    engine.dispose()


def test_another_applications_alembic_database_at_kds_head_number_is_not_up_to_date(db, invoke):
    """Another application's Alembic database whose revision happens to read like kd's head
    (``0011``) was reported ``"up_to_date": true`` beside ``"state": "foreign"``."""
    engine = _foreign_database(db)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)"))
        conn.execute(text("INSERT INTO alembic_version VALUES (:v)"), {"v": migrate.head_revision()})
    engine.dispose()
    state = invoke.json(["db", "current"])
    assert state["state"] == "foreign" and state["up_to_date"] is False
    assert invoke(["db", "current", "--check", "--json"], ok=False).exit_code == 1


@pytest.mark.sqlite_only
def test_a_non_kd_sqlite_file_is_refused_without_switching_its_journal(db_path, invoke, error_line, write_file):
    """Every connection set WAL mode, which SQLite writes into the file: another application's
    database given as --db by mistake was switched to WAL (with -wal and -shm files beside it,
    which a reader without write access to its folder cannot open) by the command that refused it."""
    import sqlite3

    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO customers VALUES (1, 'ann')")
    conn.commit()
    conn.close()
    write_file("train.tsv", "pos\tgood\n")
    for args in (["runs"], ["samples"], ["db", "upgrade"], ["ingest", "train.tsv"]):
        assert "not a kd store" in error_line(invoke(args, ok=False))
    assert invoke.json(["db", "current"])["state"] == "foreign"
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert conn.execute("SELECT name FROM customers").fetchall() == [("ann",)]
    conn.close()
    assert not Path(f"{db_path}-wal").exists()


def test_newer_revision_than_kd_knows_is_refused(db, invoke, error_line):
    engine = _engine_at(db, "head")
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0099'")
    engine.dispose()
    with pytest.raises(KdError, match="newer than this kd knows"):
        Store.open(db)
    # `kd db upgrade` cannot downgrade it (one line, not Alembic's traceback), and `current` says so
    assert "newer than this kd knows (0011): upgrade kd" in error_line(invoke(["db", "upgrade"], ok=False))
    assert invoke.json(["db", "current"])["state"] == "newer"
    assert "newer than this kd: upgrade kd" in invoke(["db", "current"]).stdout
    checked = invoke(["db", "current", "--check"], ok=False)
    assert checked.exit_code == 1 and "newer than this kd" in checked.stdout


def test_a_store_with_more_than_one_revision_is_refused_in_one_line(db, invoke, error_line, write_file):
    """Two rows in ``alembic_version`` (a newer kd's branches): Alembic's ``get_current_revision``
    raised "more than one head present", a traceback from every command, `kd db current` included."""
    engine = _engine_at(db, "head")
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO alembic_version (version_num) VALUES ('0011a')")
    engine.dispose()
    with pytest.raises(KdError, match="newer than this kd knows"):
        Store.open(db)
    write_file("train.tsv", "pos\tgood\n")
    for args in (["samples"], ["ingest", "train.tsv"], ["db", "upgrade"]):
        assert "at schema revision 0011, 0011a, newer than this kd knows (0011): upgrade kd" in error_line(invoke(args, ok=False))
    assert invoke.json(["db", "current"])["state"] == "newer"
    assert "newer than this kd: upgrade kd" in invoke(["db", "current", "--check"], ok=False).stdout


@pytest.mark.sqlite_only
def test_db_upgrade_reports_the_revision_it_found_under_the_lock(db_path, invoke):
    """Two `kd db upgrade` at once: the second read the revision (0001), waited for the first's lock,
    found the store upgraded and changed nothing, yet said `0001 -> 0011` as well."""
    import threading
    import time

    from alembic import command

    from kdstore.engine import WRITE_LOCK

    engine = _engine_at(db_path, "0001")
    done: dict = {}

    def second():
        try:
            done["result"] = invoke.json(["db", "upgrade"])
        except BaseException as exc:  # (said by the main thread)
            done["error"] = exc

    with engine.connect() as conn:
        with conn.execution_options(**{WRITE_LOCK: True}).begin():  # the first process, holding the store's lock
            worker = threading.Thread(target=second)
            worker.start()
            time.sleep(2)  # the second reads 0001, then queues for the lock
            command.upgrade(migrate._config(conn), "head")
        worker.join(120)
    engine.dispose()
    assert "error" not in done, done.get("error")
    assert (done["result"]["before"], done["result"]["after"]) == ("0011", "0011")


def test_db_upgrade_refuses_non_kd_database(db, invoke):
    engine = _foreign_database(db)
    result = invoke(["db", "upgrade"], ok=False)
    assert "not a kd store" in result.stderr
    assert set(inspect(engine).get_table_names()) == {"customers"}
    engine.dispose()


@pytest.mark.parametrize("revision", ["ae1027a6acf", "0001"])
def test_another_applications_alembic_database_is_not_a_kd_store(db, invoke, error_line, write_file, revision):
    """Alembic's version table is every Alembic application's: one whose revision kd does not know is
    not "a newer kd's store", and one whose revision happens to be a kd revision is not migrated."""
    engine = _foreign_database(db)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)"))
        conn.execute(text(f"INSERT INTO alembic_version (version_num) VALUES ('{revision}')"))
    with pytest.raises(KdError, match="not a kd store"):
        Store.open(db)
    assert invoke.json(["db", "current"])["state"] == "foreign"
    line = error_line(invoke(["db", "upgrade"], ok=False))
    assert "not a kd store" in line and "upgrade kd" not in line
    write_file("train.tsv", "pos\tgood\n")
    assert "not a kd store" in error_line(invoke(["ingest", "train.tsv"], ok=False))
    assert set(inspect(engine).get_table_names()) == {"customers", "alembic_version"}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == revision
    engine.dispose()


def test_upgrade_to_0009_keys_texts_without_their_zero_width_characters(db, invoke, read_samples):
    """A text with a zero-width space (copied from a web page) was no duplicate of the same text without
    one: a test copy of a train text went unseen. Stored keys are made anew; two samples that become
    duplicates stay two (their outputs are theirs), the one whose key did not change keeping it."""
    from kdstore.textkey import text_hash

    engine = _engine_at(db, "0008")
    old = {"好评": "h-plain", "好\u200b评": "h-zw", "差\u200b评": "h-zw2", "差\ufeff评\u200d": "h-zw3", "一般": "h-other",
           "\u2764\ufe0f": "h-heart"}
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO classes (id, name) VALUES (0, 'pos')")
        for i, (body, key) in enumerate(old.items(), start=1):  # (keys as 0008 made them, for the texts that keep theirs)
            key = text_hash(body) if body in ("好评", "一般") else key
            conn.execute(text("INSERT INTO samples (id, text, text_hash, split, label_id, orig_label_id, dropped, source, line) "
                              "VALUES (:i, :t, :k, :s, 0, 0, FALSE, 'a.tsv', :i)"),
                         {"i": i, "t": body, "k": key, "s": "test" if body == "好\u200b评" else "train"})
    engine.dispose()
    result = invoke(["db", "upgrade"])
    # the duplicates the upgrade made are said: each stays a sample (a test copy of a train text among them)
    assert ("warning: 2 stored samples are now a duplicate of another (the texts differ only in characters no model reads, "
            "such as a zero-width space), each kept as it was: 2 (test) of 1 (train), 4 (train) of 3 (train); "
            "1 across splits (a test text also in train counts a text trained on)") in result.output
    assert json.loads(invoke(["db", "upgrade", "--json"]).stdout)["duplicates"] == []  # (at the head: nothing migrated, nothing said)
    keys = {r["text"]: r["text_hash"] for r in read_samples()}
    assert keys["好评"] == text_hash("好评") == text_hash("好\u200b评")  # kept by the sample whose key it was
    assert keys["好\u200b评"] == "h-zw"  # a duplicate of it now, still its own sample
    assert keys["差\u200b评"] == text_hash("差评") and keys["差\ufeff评\u200d"] == "h-zw3"  # the first stored takes the key
    assert keys["一般"] == text_hash("一般") and keys["\u2764\ufe0f"] == text_hash("\u2764")  # (a selector, printable)
    # a new ingest of the text with a zero-width space is the stored sample, not a new one
    result = invoke(["ingest", "-", "--no-header", "--text-col", "0", "--split", "unlabeled"], input="差评\n好\u200b评\n")
    assert len(read_samples()) == 6, result.output


def test_upgrade_json_still_warns_of_the_duplicates_it_made(db, invoke):
    """README: with --json, warnings go to standard error as `warning: ...` lines; `kd db upgrade --json`
    listed the duplicates an upgrade to 0009 made under `duplicates` but left the warning out."""
    from kdstore.textkey import text_hash

    engine = _engine_at(db, "0008")
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO classes (id, name) VALUES (0, 'pos')")
        for i, (body, key) in enumerate([("好评", text_hash("好评")), ("好\u200b评", "h-zw")], start=1):
            conn.execute(text("INSERT INTO samples (id, text, text_hash, split, label_id, orig_label_id, dropped, source, line) "
                              "VALUES (:i, :t, :k, 'train', 0, 0, FALSE, 'a.tsv', :i)"), {"i": i, "t": body, "k": key})
    engine.dispose()
    result = invoke(["db", "upgrade", "--json"])
    assert json.loads(result.stdout)["duplicates"] == [{"sample": 2, "split": "train", "of": 1, "of_split": "train"}]
    assert result.stderr.startswith("warning: 1 stored sample is now a duplicate of another") and "2 (train) of 1 (train)" in result.stderr


def test_an_interrupted_upgrade_says_the_store_is_left_as_it_was(db, invoke, error_line, monkeypatch):
    """Ctrl-C (or a kill) during `kd db upgrade` printed click's bare "Aborted!": nothing said whether the
    store was half-upgraded. It says the revision the store is still at, and the command that upgrades it."""
    from alembic import command

    real = command.upgrade

    def stopped(config, revision, **kw):  # 0006 and 0007 run in the one transaction, then Ctrl-C
        real(config, "0007", **kw)
        raise KeyboardInterrupt

    engine = _engine_at(db, "0005")
    engine.dispose()
    monkeypatch.setattr(migrate.command, "upgrade", stopped)
    line = error_line(invoke(["db", "upgrade"], ok=False))
    assert line.startswith("Error: interrupted: the store ") and "is still at revision 0005, nothing was changed" in line, line
    assert line.endswith("`" + migrate.upgrade_command(make_url(resolve_url(str(db)))) + "` upgrades it"), line
    engine = make_engine(resolve_url(str(db)))
    try:
        assert migrate.current_revision(engine) == "0005"
    finally:
        engine.dispose()
    monkeypatch.setattr(migrate.command, "upgrade", real)
    assert "0005 -> 0011" in invoke(["db", "upgrade"]).stdout


def test_an_upgrade_whose_step_fails_says_the_store_is_left_as_it_was(db, invoke, error_line, read_samples):
    """A migration step that fails (here 0009's rekeying, stopped by a trigger; a full disk does the same)
    rolls the whole upgrade back: the error said only "database error in STORE: boom", leaving the user
    to guess whether the store was now half-upgraded. It names the upgrade and the revision the store is still at."""
    engine = _engine_at(db, "0005")
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO classes (id, name) VALUES (0, 'pos')")
        conn.execute(text("INSERT INTO samples (id, text, text_hash, split, label_id, orig_label_id, dropped, source, line) "
                          "VALUES (1, :t, 'h-zw', 'train', 0, 0, FALSE, 'a.tsv', 1)"), {"t": "好\u200b评"})
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("CREATE TRIGGER boom BEFORE UPDATE OF text_hash ON samples BEGIN SELECT RAISE(ABORT, 'boom'); END")
        else:
            conn.exec_driver_sql("CREATE FUNCTION boom() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'boom'; END $$ LANGUAGE plpgsql")
            conn.exec_driver_sql("CREATE TRIGGER boom BEFORE UPDATE OF text_hash ON samples FOR EACH ROW EXECUTE FUNCTION boom()")
    engine.dispose()
    for args in (["db", "upgrade"], ["db", "upgrade", "--json"]):
        result = invoke(args, ok=False)
        line = error_line(result)
        assert "upgrading" in line and "from 0005 to 0011 failed" in line and "boom" in line, line
        assert "still at revision 0005" in line and "nothing was changed" in line, line
        assert result.stdout == ""
    engine = make_engine(resolve_url(str(db)))
    try:  # every step rolled back: 0006's table and 0007's column are not there
        assert migrate.current_revision(engine) == "0005"
        assert "augmented_texts" not in inspect(engine).get_table_names()
        assert "process" not in {c["name"] for c in inspect(engine).get_columns("stages")}
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER boom" if conn.dialect.name == "sqlite" else "DROP TRIGGER boom ON samples")
    finally:
        engine.dispose()
    assert "0005 -> 0011" in invoke(["db", "upgrade"]).stdout
    assert [r["text"] for r in read_samples()] == ["好\u200b评"]


def test_undoing_a_hand_edit_keeps_an_issue_an_old_clean_decided(db, invoke):
    """A store from before 0005 has applied issues with no deciding stage on record. Undoing a later
    `kd labels set` of the same sample reopened such an issue (its relabel by the old clean still
    standing): `kd labels set` never decides an issue, so only the issues its stage decided reopen."""
    engine = _engine_at(db, "0004")
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO classes (id, name) VALUES (0, 'pos'), (1, 'neg')")
        conn.exec_driver_sql(
            "INSERT INTO samples (text, text_hash, split, label_id, orig_label_id, dropped, source, line)"
            " VALUES ('很好', 'h1', 'train', 1, 0, FALSE, 'old.tsv', 1), ('很差', 'h2', 'train', 1, 1, FALSE, 'old.tsv', 2)")
        conn.exec_driver_sql("INSERT INTO runs (uniqid, created_at) VALUES ('r', '2026-01-01 00:00:00')")
        conn.exec_driver_sql(
            "INSERT INTO stages (run_id, kind, name, config, status, started_at, ended_at) VALUES"
            " (1, 'detect', 'detect', '{}', 'succeeded', '2026-01-01 00:00:00', '2026-01-01 00:00:01'),"
            " (1, 'clean', 'clean', '{\"action\": \"relabel\"}', 'succeeded', '2026-01-01 00:00:02', '2026-01-01 00:00:03')")
        conn.exec_driver_sql(
            "INSERT INTO label_issues (stage_id, sample_id, given_label_id, suggested_label_id, score, methods, status)"
            " VALUES (1, 1, 0, 1, 0.9, 'cl', 'applied')")
        conn.exec_driver_sql(
            "INSERT INTO label_edits (sample_id, stage_id, action, old_label_id, new_label_id, reason, created_at, old_dropped, new_dropped)"
            " VALUES (1, 2, 'relabel', 0, 1, 'clean', '2026-01-01 00:00:02', FALSE, FALSE)")
    engine.dispose()
    invoke(["db", "upgrade"])
    invoke(["labels", "set", "--run", "r", "1=drop"])
    assert invoke.json(["labels", "undo", "--run", "r", "--stage", "edit-1"])["reopened"] == 0
    issues = invoke.json(["labels", "show", "--run", "r", "--status", "applied"])
    assert [i["sample_id"] for i in (issues["issues"] if isinstance(issues, dict) else issues)] == [1]
    # the old clean's own undo still reopens it
    assert invoke.json(["labels", "undo", "--run", "r", "--stage", "clean"])["reopened"] == 1


def test_the_upgrade_command_of_the_store_kd_db_names_is_bare_where_a_password_is_hidden(monkeypatch):
    """A server store out of date named by $KD_DB: its upgrade command spelled the URL out with the password
    as ***, which pasted failed to log in, where a bare `kd db upgrade` upgrades $KD_DB's store."""
    url = make_url("postgresql+psycopg://kd:s3cret@db.example/kd")
    spelled = migrate.upgrade_command(url)
    assert spelled.startswith("kd db upgrade --db ") and "***" in spelled and "s3cret" not in spelled
    monkeypatch.setenv("KD_DB", "postgresql+psycopg://kd:s3cret@db.example/kd")
    assert migrate.upgrade_command(url) == "kd db upgrade"
    monkeypatch.setenv("KD_DB", "postgresql+psycopg://kd:s3cret@db.example/other")  # (another store: spelled out)
    assert migrate.upgrade_command(url) == spelled


def test_an_old_store_whose_user_may_not_alter_its_tables_names_who_may_upgrade_it(db, invoke, error_line, write_file):
    """A team member's role may read and write the store's rows but not alter its tables (their owner
    made it): `kd db current` and the refusal advised `kd db upgrade`, which then failed with only
    "permission denied for schema public". Each names the owner who may run it; nothing changes."""
    if not str(db).startswith("postgresql"):
        pytest.skip("PostgreSQL roles")
    url = make_url(db)
    role = f"kd_rw_{url.database}"[:60]
    engine = _engine_at(db, "0005")
    owner = engine.url.username
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE ROLE "{role}" LOGIN')
        conn.exec_driver_sql(f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{role}"')
    as_role = url.set(username=role).render_as_string(hide_password=False)
    try:
        advice = invoke(["db", "current"], db=as_role).stdout
        assert f"({owner} does)" in advice and f"run it as {owner}" in advice
        assert f"run it as {owner}" in error_line(invoke(["samples"], db=as_role, ok=False))
        line = error_line(invoke(["db", "upgrade"], db=as_role, ok=False))
        assert f"does not own the store's tables ({owner} does)" in line and "nothing was changed" in line
        assert migrate.current_revision(engine) == "0005"
        # an empty database (another schema) where the user may not create tables: the first ingest names the GRANT
        with engine.begin() as conn:
            conn.exec_driver_sql('CREATE SCHEMA "empty_one"')
            conn.exec_driver_sql(f'GRANT USAGE ON SCHEMA "empty_one" TO "{role}"')
        in_empty = url.set(username=role, query={"options": "-csearch_path=empty_one"}).render_as_string(hide_password=False)
        write_file("t.tsv", "pos\tgood\n")
        line = error_line(invoke(["ingest", "t.tsv"], db=in_empty, ok=False))
        assert f"GRANT CREATE ON SCHEMA empty_one TO {role}" in line, line
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP OWNED BY "{role}"')
            conn.exec_driver_sql(f'DROP ROLE "{role}"')
        engine.dispose()
