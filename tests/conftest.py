"""Shared fixtures: a real SQLite store file per test, the real click CLI, and row counts read back
through the library.

Every test runs in its own ``tmp_path`` as the working directory, with the kd environment variables
cleared, so a stray ``kd.toml`` or ``kd.db`` (or a developer's ``KD_DB``) is never picked up.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, select

from commands.cli import cli
from kdstore.schema import Base, KdClass, Sample
from kdstore.store import Store

KD_ENV = ("KD_DB", "KD_CONFIG", "KD_ARTIFACTS")


@pytest.fixture(autouse=True)
def _kd_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in KD_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KD_NO_PROGRESS", "1")
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where the test's store lives (not created yet: the first ``kd ingest`` creates it).

    It sits in a sub-folder so that it is never the ``kd.db`` of the working directory.
    """
    folder = tmp_path / "store"
    folder.mkdir(exist_ok=True)
    return folder / "kd.db"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


class Invoke:
    """Call the real ``kd`` CLI: ``invoke(["ingest", "train.tsv"])`` adds ``--db <db_path>``.

    ``ok=True`` (default) asserts exit code 0 and shows the output when it is not; ``ok=False``
    asserts a non-zero exit. ``db=None`` leaves ``--db`` off (for config tests).
    """

    def __init__(self, runner: CliRunner, db_path: Path):
        self.runner = runner
        self.db_path = db_path

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
            argv += ["--db", str(self.db_path)]
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
def invoke(runner: CliRunner, db_path: Path) -> Invoke:
    return Invoke(runner, db_path)


TABLES = sorted(Base.metadata.tables)


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
def counts(db_path: Path) -> Callable[..., dict[str, int]]:
    """``counts()``: row count of each table of the test's store (or of ``counts(other_db)``)."""
    return lambda db=None: table_counts(db or db_path)


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
def read_samples(db_path: Path) -> Callable[..., list[dict[str, Any]]]:
    """``read_samples()``: every ``samples`` row of the store as a dict (plus its ``label`` name)."""
    return lambda db=None: _sample_rows(db or db_path)


def _class_rows(db: str | Path) -> list[tuple[int, str]]:
    store = Store.open(str(db), create=False)
    try:
        with store.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(select(KdClass.id, KdClass.name).order_by(KdClass.id))]
    finally:
        store.close()


@pytest.fixture
def read_classes(db_path: Path) -> Callable[..., list[tuple[int, str]]]:
    """``read_classes()``: ``[(id, name), ...]`` of the ``classes`` table in id order."""
    return lambda db=None: _class_rows(db or db_path)


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
