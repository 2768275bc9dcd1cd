"""Shared fixtures: a real store per test, the real click CLI, and row counts read back through the
library.

The store tests run on every backend: ``db`` is a fresh SQLite file, and, when ``KD_TEST_PG_URL``
names a PostgreSQL server (``.ci/postgres.sh`` starts one), a fresh PostgreSQL database created
for the test and dropped after it. Tests about SQLite files as such take ``db_path`` and carry
``@pytest.mark.sqlite_only``. Which store tests take the PostgreSQL database: those marked
``on_postgresql`` (every store test of the files about the backends, migrations and ingest; in the
others, the tests of what differs between the two: transactions taken back, locks and concurrent
writers, killed stages, id lists past a statement's parameters); ``KD_TEST_PG_ALL=1`` runs every
store test on both. The rest ran on both for months: the whole matrix took a third of CI's time
for the same outcome as the marked ones.

Every test runs in its own ``tmp_path`` as the working directory, with the kd environment variables
cleared, so a stray ``kd.toml`` or ``kd.db`` (or a developer's ``KD_DB``) is never picked up.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, func, inspect, select, text
from sqlalchemy.engine import make_url

from commands.cli import cli
from kdstore.engine import resolve_url, sqlite_path
from kdstore.schema import Base, KdClass, Sample
from kdstore.store import Store

KD_ENV = ("KD_DB", "KD_CONFIG", "KD_ARTIFACTS", "KD_USER")
PG_URL = os.environ.get("KD_TEST_PG_URL")
PG_ALL = os.environ.get("KD_TEST_PG_ALL", "") not in ("", "0")
BACKENDS = [
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.skipif(not PG_URL, reason="KD_TEST_PG_URL not set (bash .ci/postgres.sh starts a server)")),
]


# The files that train the most, heaviest first (their share of the suite's time, measured under
# `--durations=0`): under pytest-xdist's `--dist loadfile` each file runs on one worker, and a worker
# takes the next file as it runs out, so the long files go first. Last (alphabetical order), the
# longest one ran alone for minutes while the other worker had nothing left.
HEAVY_FIRST = ("test_distributed.py", "test_labels.py", "test_training.py", "test_export.py")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_only: the test is about SQLite files; it runs on the sqlite backend only")
    config.addinivalue_line("markers", "on_postgresql: the store test runs on PostgreSQL too (without it, only where KD_TEST_PG_ALL=1)")
    config.addinivalue_line("markers", "new_database: on PostgreSQL the test's database is one kd never touched, not a copy "
                            "of a store kd created (tests of how a store is born)")
    if hasattr(config.option, "loadscopereorder"):  # (xdist's own order for loadfile: the most tests first)
        config.option.loadscopereorder = False


def _heavy_rank(item: pytest.Item) -> int:
    name = item.path.name
    return HEAVY_FIRST.index(name) if name in HEAVY_FIRST else len(HEAVY_FIRST)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Drop the postgresql instance of tests marked ``sqlite_only``, and of those not marked
    ``on_postgresql`` unless ``KD_TEST_PG_ALL`` is set (rather than listing them as skipped); run the
    ``HEAVY_FIRST`` files first (a stable sort: each file's tests keep their order)."""
    items.sort(key=_heavy_rank)
    keep = []
    for item in items:
        spec = getattr(item, "callspec", None)
        if spec is not None and spec.params.get("db") == "postgresql" and (
            item.get_closest_marker("sqlite_only") or not (PG_ALL or item.get_closest_marker("on_postgresql"))
        ):
            continue
        keep.append(item)
    items[:] = keep


def pytest_report_header(config: pytest.Config) -> str:
    if not PG_URL:
        return "PostgreSQL: none (KD_TEST_PG_URL not set): store tests on SQLite only"
    return ("PostgreSQL: every store test (KD_TEST_PG_ALL)" if PG_ALL else
            "PostgreSQL: the store tests marked on_postgresql (KD_TEST_PG_ALL=1: every store test)")


class PgServer:
    """Creates and drops throw-away databases on the test server (``DROP ... WITH (FORCE)`` ends any
    connection a command left open).

    A test's store database is a copy (``CREATE DATABASE ... TEMPLATE``) of one that kd created once in
    this process, through the same migration chain: walking the chain for each of some 450 tests took
    a minute of CI. ``create()`` alone gives a database kd has never touched."""

    def __init__(self, url: str):
        self.url = make_url(url)
        self.admin = create_engine(self.url, isolation_level="AUTOCOMMIT")
        self.template: str | None = None

    def create(self, *, copy_of_a_store: bool = False) -> str:
        name = f"kd_test_{uuid.uuid4().hex[:12]}"
        source = f' TEMPLATE "{self._template()}"' if copy_of_a_store else ""
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"{source}'))
        return self.url.set(database=name).render_as_string(hide_password=False)

    def _template(self) -> str:
        """The database the test databases are copied from: a store kd created (its engine disposed:
        a template must have no connection while it is copied)."""
        if self.template is None:
            url = self.create()
            Store.open(url).close()
            self.template = make_url(url).database
        return self.template

    def close(self) -> None:
        if self.template is not None:
            with self.admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)'))
        self.admin.dispose()

    def drop(self, url: str) -> None:
        name = make_url(url).database
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def pg_server() -> PgServer:
    if not PG_URL:
        pytest.skip("KD_TEST_PG_URL not set")
    server = PgServer(PG_URL)
    yield server
    server.close()


@pytest.fixture(autouse=True)
def _kd_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in KD_ENV:  # set, then deleted: the undo puts back the environment as it was, so a test (or
        monkeypatch.setenv(name, "")  # a bench it runs) that sets os.environ itself does not leak into later tests
        monkeypatch.delenv(name)
    monkeypatch.setenv("KD_NO_PROGRESS", "1")
    monkeypatch.setenv("KD_USER", "tester")  # who every stage records (the login name differs from machine to machine)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def today(monkeypatch: pytest.MonkeyPatch) -> str:
    """The day ``${time}`` names in this test, as ``YYYYMMDD``: the clock kd reads is held at the day the
    test started, so that a test running over midnight does not see two days (its own ``today``
    read before a command that reads the clock again)."""
    import datetime as dt
    import types

    import kdstore.names

    started = dt.date.today()

    class Held(dt.date):
        @classmethod
        def today(cls) -> dt.date:
            return started

    monkeypatch.setattr(kdstore.names, "dt", types.SimpleNamespace(date=Held))
    return started.strftime("%Y%m%d")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where the test's store lives (not created yet: the first ``kd ingest`` creates it).

    It sits in a sub-folder so that it is never the ``kd.db`` of the working directory.
    """
    folder = tmp_path / "store"
    folder.mkdir(exist_ok=True)
    return folder / "kd.db"


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, db_path: Path) -> str:
    """The test's store as a ``--db`` value: the SQLite file ``db_path``, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield str(db_path)
        return
    server: PgServer = request.getfixturevalue("pg_server")
    url = server.create(copy_of_a_store=request.node.get_closest_marker("new_database") is None)
    yield url
    server.drop(url)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


class Invoke:
    """Call the real ``kd`` CLI: ``invoke(["ingest", "train.tsv"])`` adds ``--db <db_path>``.

    ``ok=True`` (default) asserts exit code 0 and shows the output when it is not; ``ok=False``
    asserts a non-zero exit. ``db=None`` leaves ``--db`` off (for config tests).
    """

    def __init__(self, runner: CliRunner, db: str):
        self.runner = runner
        self.db = db

    def __call__(
        self,
        args: Sequence[str],
        *,
        ok: bool = True,
        input: str | bytes | None = None,
        db: str | Path | None | bool = True,
    ) -> Result:
        argv = [str(a) for a in args]
        if db is True:
            argv += ["--db", self.db]
        elif db not in (None, False):
            argv += ["--db", str(db)]
        result = self.runner.invoke(cli, argv, input=input, catch_exceptions=True)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(
                f"kd {' '.join(argv)} crashed with {result.exception!r}\n{result.output}"
            ) from result.exception
        if ok:
            assert result.exit_code == 0, f"kd {' '.join(argv)} failed:\n{result.output}"
        else:
            assert result.exit_code != 0, f"kd {' '.join(argv)} should have failed:\n{result.output}"
        return result

    def json(self, args: Sequence[str], **kw: Any) -> Any:
        """Run with ``--json`` and parse standard output."""
        result = self(list(args) + ["--json"], **kw)
        return json.loads(result.stdout)


@pytest.fixture
def invoke(runner: CliRunner, db: str) -> Invoke:
    return Invoke(runner, db)


TABLES = sorted(Base.metadata.tables)


def store_exists(db: str | Path) -> bool:
    """Whether a store was created at ``db``: the SQLite file exists, or the database has tables."""
    path = sqlite_path(resolve_url(str(db)))
    if path is not None:
        return path.exists()
    engine = create_engine(resolve_url(str(db)))
    try:
        return bool(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def table_counts(db: str | Path) -> dict[str, int]:
    """Rows in every table of the store at ``db``, read through ``Store.open`` and SQLAlchemy."""
    store = Store.open(str(db), create=False)
    try:
        with store.engine.connect() as conn:
            return {
                name: conn.execute(select(func.count()).select_from(Base.metadata.tables[name])).scalar_one()
                for name in TABLES
            }
    finally:
        store.close()


@pytest.fixture
def counts(db: str) -> Callable[..., dict[str, int]]:
    """``counts()``: row count of each table of the test's store (or of ``counts(other_db)``)."""
    return lambda other=None: table_counts(other or db)


def _sample_rows(db: str | Path) -> list[dict[str, Any]]:
    store = Store.open(str(db), create=False)
    try:
        with store.engine.connect() as conn:
            names = dict(conn.execute(select(KdClass.id, KdClass.name)).all())
            rows = conn.execute(select(Sample.__table__).order_by(Sample.id)).mappings().all()
    finally:
        store.close()
    out = []
    for r in rows:
        row = dict(r)
        row["label"] = None if row["label_id"] is None else names[row["label_id"]]
        out.append(row)
    return out


@pytest.fixture
def read_samples(db: str) -> Callable[..., list[dict[str, Any]]]:
    """``read_samples()``: every ``samples`` row of the store as a dict (plus its ``label`` name)."""
    return lambda other=None: _sample_rows(other or db)


def _class_rows(db: str | Path) -> list[tuple[int, str]]:
    store = Store.open(str(db), create=False)
    try:
        with store.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(select(KdClass.id, KdClass.name).order_by(KdClass.id))]
    finally:
        store.close()


@pytest.fixture
def read_classes(db: str) -> Callable[..., list[tuple[int, str]]]:
    """``read_classes()``: ``[(id, name), ...]`` of the ``classes`` table in id order."""
    return lambda other=None: _class_rows(other or db)


def write(path: Path | str, content: str | bytes) -> Path:
    """Write a file (text as UTF-8) and return its path."""
    path = Path(path)
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


@pytest.fixture
def write_file(tmp_path: Path) -> Callable[[str, str | bytes], Path]:
    """``write_file("train.tsv", "pos\\tgood\\n")``: a file in the test's folder."""
    return lambda name, content: write(tmp_path / name, content)


def _error_line(result: Result) -> str:
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, f"expected a one-line error, got:\n{result.stderr}"
    return lines[0]


@pytest.fixture
def error_line() -> Callable[[Result], str]:
    """``error_line(result)``: the error a failed command printed, asserting it is one line."""
    return _error_line
