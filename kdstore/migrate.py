"""Alembic wiring: the migration chain ships in the ``migrations`` package; no ini file is needed.

That package is found beside ``kdstore`` (where a wheel and an editable install both put it), not
by importing ``migrations``: a top-level name other projects use too (an Alembic or Flask-Migrate
project's own ``migrations`` package in the working directory comes first on ``sys.path`` under
``python -m commands.cli``, in a notebook or a script run from there, and kd would run its
``env.py`` against kd's store).

A new database walks the same chain as an old one. An out-of-date database is refused with the
command that upgrades it, never upgraded behind the user's back.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, func, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from .engine import WRITE_LOCK, display_url, sqlite_path
from .errors import KdError


# A file only kd's chain has: another project's ``migrations`` installed over kd's would lack it.
_FIRST_REVISION = "versions/0001_samples_runs.py"


def script_location() -> Path:
    """kd's own migrations folder: ``migrations/`` beside the ``kdstore`` package."""
    here = Path(__file__).resolve().parent.parent / "migrations"
    if not (here / "env.py").is_file() or not (here / _FIRST_REVISION).is_file():
        raise KdError(f"kd's schema migrations are missing from {here}: reinstall kd")
    return here


def _config(connection=None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location()))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    return ScriptDirectory.from_config(_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The store's revision; more than one (a newer kd's branches, or another application's) joined
    by ", ": no revision this kd knows (Alembic's ``get_current_revision`` raised on them)."""
    with engine.connect() as conn:
        heads = MigrationContext.configure(conn).get_current_heads()
    return ", ".join(sorted(heads)) if heads else None


# Any fixed number: the PostgreSQL advisory lock that serialises concurrent migrations of one store.
_MIGRATION_LOCK = 0x6B64_0001


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Migrate to ``revision`` in one transaction holding the store's migration lock, so two
    processes opening a new store at once create it once (the second finds it at the head).
    Returns the revision it found once it held the lock (``None``: an empty database)."""
    return _migrate(engine, command.upgrade, revision)


def downgrade(engine: Engine, revision: str) -> str | None:
    """Migrate back to ``revision`` (an older kd's schema), as :func:`upgrade` does forward."""
    return _migrate(engine, command.downgrade, revision)


def _migrate(engine: Engine, step, revision: str) -> str | None:
    """``step`` (Alembic's upgrade or downgrade) in one locked transaction. On SQLite, foreign keys
    are off meanwhile: Alembic's batch mode rebuilds a table by copying it and dropping the old
    one, and with them on, that drop would fire every ``ON DELETE CASCADE`` pointing at the table
    (a rebuilt ``stages`` would empty logits, predictions and metrics). The pragma only takes
    effect outside a transaction; the rows are checked against the keys before the commit."""
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            conn.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")
        try:
            with conn.execution_options(**{WRITE_LOCK: True}).begin():
                if conn.dialect.name == "postgresql":
                    conn.execute(select(func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
                before = MigrationContext.configure(conn).get_current_revision()
                broken = _dangling(conn) if sqlite and before is not None else {}  # rows a store already had
                step(_config(conn), revision)
                if sqlite and MigrationContext.configure(conn).get_current_revision() != before:
                    after = _dangling(conn)
                    new = sorted(k for k, n in after.items() if n > broken.get(k, 0))
                    if new:
                        table, parent = new[0]
                        raise KdError(f"migration to {revision} left a row of {table} pointing at no row of {parent}: not applied")
            return before
        finally:
            if sqlite:
                conn.connection.driver_connection.execute("PRAGMA foreign_keys=ON")


def _dangling(conn) -> dict[tuple[str, str], int]:
    """SQLite's ``foreign_key_check`` counted by (table, parent table): rows whose key names no parent
    row (counted, not listed: a rebuilt table renumbers its rowids and its keys)."""
    out: dict[tuple[str, str], int] = {}
    for table, _rowid, parent, _key in conn.exec_driver_sql("PRAGMA foreign_key_check").all():
        out[(table, parent)] = out.get((table, parent), 0) + 1
    return out


def known_revisions() -> set[str]:
    return {s.revision for s in ScriptDirectory.from_config(_config()).walk_revisions()}


# Tables every revision has (0001 made them): a database with a revision in ``alembic_version``
# but without them is another application's (Alembic's version table is everyone's), not a kd store.
KD_TABLES = frozenset({"classes", "samples", "runs", "stages"})


def state(engine: Engine) -> str:
    """``empty``, ``current`` (at the head), ``behind`` (``kd db upgrade`` brings it up), ``newer``
    (a revision this kd does not know: a newer kd made it) or ``foreign`` (tables, no kd revision,
    or another application's Alembic revision without kd's tables)."""
    tables = set(inspect(engine).get_table_names())
    if not tables:
        return "empty"
    current = current_revision(engine)
    if current is None or not KD_TABLES <= tables:
        return "foreign"
    if current == head_revision():
        return "current"
    return "behind" if current in known_revisions() else "newer"


def cannot_migrate(engine: Engine) -> str | None:
    """Why the server's user cannot migrate this store (``None`` where it can, and on SQLite): a
    migration alters the store's tables, which only their owner (or a member of its role) may; a new
    store needs CREATE on the schema. Without it, `kd db upgrade` failed with "permission denied"."""
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as conn:
        user, schema, superuser = conn.exec_driver_sql(
            "SELECT current_user, current_schema(), (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)").one()
        if superuser or schema is None:
            return None
        owner = conn.exec_driver_sql(
            "SELECT tableowner FROM pg_tables WHERE schemaname = current_schema() AND tablename = 'alembic_version'").scalar()
        if owner is None:
            if conn.exec_driver_sql("SELECT has_schema_privilege(current_schema(), 'CREATE')").scalar():
                return None
            return f"the user {user} may not create tables in schema {schema}: run it as a user who may (GRANT CREATE ON SCHEMA {schema} TO {user})"
        if conn.exec_driver_sql("SELECT pg_has_role(current_user, %(owner)s, 'USAGE')", {"owner": owner}).scalar():
            return None
        return f"the user {user} does not own the store's tables ({owner} does), and only their owner may change them: run it as {owner}"


def is_empty(engine: Engine) -> bool:
    return not inspect(engine).get_table_names()


def ensure_current(engine: Engine, *, create: bool = True, read_only: str | None = None) -> None:
    """Create an empty database by migrating it; refuse one whose revision is not the head.
    ``read_only``: why the store was opened read-only (``Store.open``): `kd db upgrade` refuses it too."""
    where = display_url(engine.url)
    tables = set(inspect(engine).get_table_names())
    if not tables:
        if not create:
            # (its --db spelled out: a bare `kd ingest FILE` makes ./kd.db or $KD_DB, not this store)
            raise KdError(f"no kd store at {where} (the database is empty): run `kd ingest FILE --db {db_option(engine.url)}` first")
        upgrade(engine)
        return
    current, head = current_revision(engine), head_revision()
    if current is None:
        raise KdError(f"{where} is not a kd store (no schema revision found)")
    if not KD_TABLES <= tables:
        raise KdError(f"{where} is not a kd store (schema revision {current} is another application's: kd's tables are missing)")
    if current == head:
        return
    if current not in known_revisions():
        raise KdError(
            f"{where} is at schema revision {current}, newer than this kd knows ({head}): upgrade kd"
        )
    if read_only:  # (`kd db upgrade` would refuse it as read-only in its turn)
        raise KdError(f"{where} is at schema revision {current}, kd needs {head}, and {read_only}: make it writable, then run "
                      f"`{upgrade_command(engine.url)}` (or copy the store, with its kd-artifacts folder, to a folder kd can write "
                      "and upgrade the copy)")
    denied = cannot_migrate(engine)
    raise KdError(
        f"{where} is at schema revision {current}, kd needs {head}: run `{upgrade_command(engine.url)}` first"
        + (f" ({denied})" if denied else "")
    )


def upgrade_command(url) -> str:
    """The command that upgrades the store at ``url``, its ``--db`` spelled out: a bare
    ``kd db upgrade`` upgrades (or creates) ``$KD_DB`` or ./kd.db, not a store given by ``--db``
    (a server's password shown as ``***``, as every message shows it), so bare where ``$KD_DB`` is that
    store's URL with a password (spelled out, the command pasted failed to log in with ``***``)."""
    env = os.environ.get("KD_DB")
    if url.password and env and "://" in env:
        try:
            same = make_url(env).render_as_string(hide_password=False) == url.render_as_string(hide_password=False)
        except ArgumentError:
            same = False
        if same:
            return "kd db upgrade"
    return f"kd db upgrade --db {db_option(url)}"


def db_option(url) -> str:
    """``url`` as a command's ``--db`` value, quoted for a shell: a SQLite store's file, a server's URL."""
    if url.get_backend_name() == "sqlite":  # (a sqlite:///file:PATH?uri=true URL's file is PATH: `--db file:PATH` made a new store)
        value = str(sqlite_path(url.render_as_string(hide_password=False)) or url.database)
    else:
        value = display_url(url)
    return shlex.quote(value)


def unkeyed_duplicates(engine: Engine) -> list[dict[str, object]]:
    """The samples whose text is a duplicate of another sample's by this kd's key but which keep an
    older key: what a migration that made texts duplicates of each other (0009: a text with a
    zero-width space and the same text without one) left as two samples, their outputs theirs.
    Each is ``{"sample", "split", "of", "of_split"}``, ``of`` the sample holding the key. Only texts
    a newer rule can key otherwise are hashed (``isprintable`` and no variation selector: the rest)."""
    from .schema import Sample
    from .textkey import VARIATION_SELECTORS, text_hash

    stale = []
    with engine.connect() as conn:
        rows = conn.execute(select(Sample.id, Sample.text, Sample.text_hash, Sample.split).order_by(Sample.id)
                            .execution_options(yield_per=5_000))
        for sample_id, text, key, split in rows:
            if text is not None and (not text.isprintable() or VARIATION_SELECTORS.search(text)):
                new = text_hash(text)
                if new != key:
                    stale.append((sample_id, split, new))
        holders = {}
        wanted = sorted({new for _, _, new in stale})
        for start in range(0, len(wanted), 5_000):
            holders.update((key, (sid, split)) for sid, key, split in conn.execute(
                select(Sample.id, Sample.text_hash, Sample.split).where(Sample.text_hash.in_(wanted[start:start + 5_000]))))
    return [{"sample": sid, "split": split, "of": holders[new][0], "of_split": holders[new][1]}
            for sid, split, new in stale if new in holders]
