"""Turning a ``--db`` value into a SQLAlchemy engine, with SQLite tuned for one writer and many readers."""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from pathlib import Path
from urllib.parse import unquote

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url

from .errors import KdError

DEFAULT_DB = "kd.db"
SQLITE_BUSY_TIMEOUT_MS = 600_000  # a writer queues behind another (a 3M-row ingest takes a minute) as on PostgreSQL


def resolve_url(db: str | None) -> str:
    """``None`` → ``$KD_DB`` or ``kd.db``; a plain path → a SQLite URL; anything with ``://`` as is."""
    if db is not None and not db.strip():  # (`--db "$STORE"` with STORE unset: not ./kd.db, unseen)
        if db and db == os.environ.get("KD_DB"):  # (blank: the option came from the environment)
            raise KdError("KD_DB is blank: set it to the store's file path or a SQLAlchemy URL, or unset it for ./kd.db")
        raise KdError("--db is empty: give the store's file path or a SQLAlchemy URL (or leave --db out for $KD_DB or ./kd.db)")
    value = db or os.environ.get("KD_DB") or DEFAULT_DB
    if "://" in value:
        return value
    if _URL_WITHOUT_SLASHES.match(value):  # (`--db sqlite:kd.db` made a SQLite file named "sqlite:kd.db", unseen)
        raise KdError(f"{value}: looks like a database URL without its '//': kd takes a file path, sqlite:///PATH or "
                      f"postgresql+psycopg://USER@HOST/DB (a file of this name: ./{value})")
    # escaped as a URL: SQLAlchemy reads "%20" in a URL as a space and "?" as the start of its query
    # (a folder "a%20b" was taken for "a b"; "d?x=1/kd.db" made a store "d" in the working directory)
    return URL.create("sqlite", database=str(Path(value).expanduser())).render_as_string(hide_password=False)


_URL_WITHOUT_SLASHES = re.compile(r"(?:sqlite|postgres|postgresql|mysql|mariadb|oracle|mssql)(?:\+\w+)?:", re.IGNORECASE)


def display_url(url: URL) -> str:
    """``url`` as messages show it: a SQLite file's path as it is (not percent-encoded, as
    SQLAlchemy renders the Chinese characters and spaces of a path), a server's without password."""
    if url.get_backend_name() == "sqlite" and url.database:
        query = url.render_as_string().partition("?")[2]  # (a "?" of the path is escaped there)
        return f"sqlite:///{url.database}" + (f"?{query}" if query else "")
    return hide_query_password(url.render_as_string(hide_password=True))


def hide_query_password(shown: str) -> str:
    """``shown`` (a rendered URL) with the value of a ``password`` (or ``sslpassword``) query
    parameter as ``***``: libpq takes ``?password=`` as well as ``USER:PASSWORD@``, and SQLAlchemy
    hides only the latter."""
    return re.sub(r"([?&][^=&#]*password=)[^&#]*", r"\1***", shown, flags=re.IGNORECASE)


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL, ``None`` for in-memory or other backends (and for a URL
    that does not parse: ``make_engine`` says what is wrong with it)."""
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # (a port that is no number: "h:x", "[::1")
        return None
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    if _sqlite_uri(parsed) and parsed.database.startswith("file:"):  # SQLAlchemy's sqlite:///file:PATH?mode=ro&uri=true
        path = parsed.database[len("file:"):]
        if path.startswith("//"):  # file://localhost/PATH, file:///PATH
            path = "/" + path[2:].partition("/")[2]
        path = unquote(re.split(r"[?#]", path, maxsplit=1)[0])  # SQLite's query (a "%3F" SQLAlchemy decoded) or fragment
        return None if not path or path == ":memory:" else Path(path)
    return Path(parsed.database)


# what SQLite's Python driver takes from a sqlite:// URL's query (SQLAlchemy ignores any other key, with a warning)
_DRIVER_OPTIONS = {"timeout", "isolation_level", "detect_types", "check_same_thread", "cached_statements", "uri"}


def _sqlite_uri(parsed: URL) -> bool:
    from sqlalchemy.util import asbool

    try:
        return asbool(parsed.query.get("uri", False))
    except ValueError:
        return False


def check_sqlite_url(url: str) -> None:
    """Refuse a SQLite URL whose query SQLite would not read as written: ``?mode=ro`` without
    ``uri=true`` (SQLAlchemy warned and opened the store read-write), or ``uri=true`` with a path
    not starting ``file:`` (SQLite made a new store named ``kd.db?mode=ro`` beside the one meant)."""
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return
    if parsed.get_backend_name() != "sqlite" or not parsed.database or not parsed.query:
        return
    shown = display_url(parsed)
    query = parsed.render_as_string().partition("?")[2]
    if not _sqlite_uri(parsed):
        unread = sorted(set(parsed.query) - _DRIVER_OPTIONS)
        if unread:
            raise KdError(f"{shown}: SQLite reads {unread[0]!r} only in a URI (here it would be ignored): "
                          f"give sqlite:///file:{parsed.database.removeprefix('file:')}?{query}&uri=true")
    elif not parsed.database.startswith("file:"):
        uri = "&".join(f"{k}={v}" for k, v in sorted(parsed.query.items()) if k not in _DRIVER_OPTIONS)
        if uri:
            raise KdError(f"{shown}: with uri=true SQLite reads the path as a URI only after 'file:' (here it would open "
                          f"a new file named {parsed.database + '?' + uri!r}): give sqlite:///file:{parsed.database}?{query}")


def read_only_uri(path: Path) -> str:
    """A SQLite URI opening ``path`` read-only. Its folder cannot be written, so SQLite cannot make
    the WAL index (``-shm``) a reader of a WAL store needs: without a ``-wal`` file (no writer has the
    store open; the last one folded its changes into the file) the file is the whole store and is
    read as immutable; with one, SQLite reads it through the ``-shm`` file already there."""
    from urllib.parse import quote

    immutable = "" if Path(f"{path}-wal").exists() else "&immutable=1"
    return f"file:{quote(str(path.resolve()))}?mode=ro{immutable}"


WRITE_LOCK = "kd_write_lock"  # execution option: take the writer lock when the transaction begins


def _tune_sqlite(dbapi_connection, _record) -> None:
    # The driver's own implicit transactions are turned off; ``_begin_sqlite`` emits BEGIN itself, so
    # a transaction can start with the write lock held (and DDL in migrations is transactional).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    # WAL for a new store or a kd store only: the mode is written into the file, and another
    # application's database given as --db by mistake was switched to WAL before kd refused it
    tables = {row[0] for row in cursor.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables or _KD_MARK <= tables:
        cursor.execute("PRAGMA journal_mode=WAL")  # a "locked" here, while another process creates the store, Store.open retries
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _rollback_invalidated(dbapi_connection, _record, _exc) -> None:
    """Roll back the transaction of a connection SQLAlchemy discards: it does so when Ctrl-C or a kill
    lands in a statement, and SQLite closes a connection whose statement is still held (by the
    traceback) only once that is freed, keeping its write lock meanwhile: the stage's failure, recorded
    by this process, waited on its own lock (10 minutes, deaf to signals) and left the stage running."""
    try:
        dbapi_connection.rollback()
    except Exception:  # noqa: BLE001 - closed already, or unusable: SQLite rolls back as it closes
        pass


_KD_MARK = frozenset({"alembic_version", "classes", "samples", "runs", "stages"})  # the tables every kd store has


LOCK_POLL_MS = 250  # a writer queued for the lock looks up this often: Ctrl-C and kill reach it meanwhile
LOCK_NOTICE_S = 2.0  # a writer queued this long is told so (``lock_notice``), once
lock_notice = None  # the CLI's: called with one line when a writer has queued LOCK_NOTICE_S (it waited in silence)


def _begin_sqlite(conn) -> None:
    """``BEGIN IMMEDIATE`` for writers that read before they write (ingest, run creation): a second
    such writer waits (up to the busy timeout) instead of failing on a stale snapshot; ``BEGIN`` otherwise.
    It waits in short tries: inside one SQLite call Python runs no signal handler, so Ctrl-C (or a
    stage's SIGTERM) was not seen until the other writer let go, up to 10 minutes later."""
    if not conn.get_execution_options().get(WRITE_LOCK):
        conn.exec_driver_sql("BEGIN")
        return
    import sqlite3
    import time

    raw = conn.connection.driver_connection
    raw.execute(f"PRAGMA busy_timeout={LOCK_POLL_MS}")
    try:
        start = time.monotonic()
        deadline, told = start + SQLITE_BUSY_TIMEOUT_MS / 1000, lock_notice is None
        while time.monotonic() < deadline:
            try:
                raw.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    break  # said as SQLAlchemy says it, below
            if not told and time.monotonic() - start >= LOCK_NOTICE_S:
                told = True
                minutes = SQLITE_BUSY_TIMEOUT_MS / 60_000
                # (a stage's end being recorded holds a Ctrl-C back until it is: "Ctrl-C stops" had a second one wait in silence)
                runs = sys.modules.get("kdstore.runs")
                ending = runs is not None and runs.HOLD["on"]
                lock_notice(f"waiting for another process that writes to the store{', to record how the stage ended' * ending} "
                            f"(up to {minutes:g} minute{'s' * (minutes != 1)}; `kd runs` shows what is running; "
                            + ("a Ctrl-C now waits for the record too)" if ending else "Ctrl-C stops)"))
        conn.exec_driver_sql("BEGIN IMMEDIATE")  # the last try: its error is SQLAlchemy's, as every other statement's
    finally:
        raw.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")


def make_engine(url: str, *, read_only: Path | None = None) -> Engine:
    """The engine for ``url``; a URL SQLAlchemy cannot read, or whose driver is not installed, is a
    one-line ``KdError``. ``read_only``: the SQLite file of ``url``, in a folder this process cannot
    write (see ``read_only_uri``): read through SQLite's read-only mode, a write refused by SQLite."""
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    # JSON written as bulk_insert writes it: characters as they are, not \uXXXX (a --where on meta matches both)
    kwargs: dict = {"json_serializer": functools.partial(json.dumps, ensure_ascii=False)}
    if not url.startswith("sqlite"):
        # a server's connection is tested as it leaves the pool (one round trip) and replaced if the
        # server dropped it: one left idle through hours of training (a server restart, its
        # idle_session_timeout, a firewall's or pgbouncer's idle limit) failed the stage at its end
        kwargs["pool_pre_ping"] = True
    if re.match(r"postgresql(\+psycopg2?)?://", url):  # (libpq's drivers: a libpq connection option)
        # text travels as UTF-8 whatever the database's encoding (a SQL_ASCII one made psycopg return
        # bytes for text, a traceback at connecting): Store.open then refuses a database not in UTF8
        kwargs["connect_args"] = {"client_encoding": "utf8"}
    try:
        host = make_url(url).host or ""
    except (ArgumentError, ValueError):  # (said below, as create_engine refuses it)
        host = ""
    if "@" in host:  # a password's '@' typed as it is: SQLAlchemy read the password's rest as the host (and showed it)
        shown = hide_query_password(re.sub(r"(://[^/:]*:)[^/]*@", r"\1***@", url))
        raise KdError(f"cannot use the database URL {shown}: its password or user name holds an '@', read as part of "
                      "the host: write each '@' in them as %40")
    if read_only is not None:
        import sqlite3

        uri = read_only_uri(read_only)
        kwargs["creator"] = lambda: sqlite3.connect(uri, uri=True, check_same_thread=False)
    try:
        engine = create_engine(url, **kwargs)
    except (ArgumentError, NoSuchModuleError, ImportError, ValueError) as exc:  # (ValueError: a port that is no number)
        try:
            shown = make_url(url).render_as_string(hide_password=True)
        except (ArgumentError, ValueError):  # a URL SQLAlchemy cannot parse is shown without its password all the same
            shown = re.sub(r"(://[^/@:]*:)[^/]*@", r"\1***@", url)
        shown = hide_query_password(shown)
        hint = " (SQLAlchemy spells it postgresql+psycopg://)" if shown.startswith("postgres://") else ""
        raise KdError(f"cannot use the database URL {shown}{hint}: {str(exc).strip().splitlines()[0]}; kd takes a file "
                      "path, sqlite:///PATH or postgresql+psycopg://USER@HOST/DB (the driver: pip install 'psycopg[binary]')") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _tune_sqlite)
        event.listen(engine, "begin", _begin_sqlite)
        event.listen(engine, "invalidate", _rollback_invalidated)
    return engine
