"""The kd store: one database holding samples, classes, runs, stages and everything stages produce.

``Store`` does the work; the CLI in ``commands/`` is a thin layer over it. Bulk paths (samples,
logits, predictions) take each backend's fast path (``bulk_insert``) inside one transaction.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import shlex
import time
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence
from urllib.parse import quote

import numpy as np
from sqlalchemy import JSON, Connection, Engine, Table, delete, func, insert, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from . import vectors
from .engine import WRITE_LOCK, check_sqlite_url, display_url, make_engine, read_only_uri, resolve_url, sqlite_path
from .errors import KdError
from .migrate import cannot_migrate, db_option, ensure_current
from .names import SPLITS
from .schema import AugmentedText, KdClass, LabelEdit, Logit, Metric, Prediction, Run, Sample, SampleFold, Stage
from .wording import first_few

# figures under "all" that measure a stage's model (kept only while its folder is): speed.measure's,
# the teacher's scoring rate, record_artifact's size, the counted parameters and FLOPs
MODEL_MEASURES = ("size_mb", "latency_p50_ms", "latency_p99_ms", "throughput_samples_per_s", "score_samples_per_s",
                  "parameters", "branch_parameters", "flops_per_sample", "latency_texts", "throughput_texts", "throughput_of", "speed_threads")

CHUNK = 20_000
ID_CHUNK = 10_000  # values per IN list: PostgreSQL takes at most 65,535 parameters a statement
MAX_ID = 2**31 - 1  # row ids are PostgreSQL ``integer``s: a larger number names no row (and may not be sent)


@dataclass(frozen=True)
class SampleSet:
    """Samples as parallel arrays; ``labels`` holds class ids, -1 where a sample has no label."""

    ids: np.ndarray
    texts: list[str]
    labels: np.ndarray
    splits: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, mask: np.ndarray) -> "SampleSet":
        idx = np.flatnonzero(mask)
        return SampleSet(
            ids=self.ids[idx],
            texts=[self.texts[i] for i in idx],
            labels=self.labels[idx],
            splits=[self.splits[i] for i in idx],
        )

    def of_split(self, *splits: str) -> "SampleSet":
        wanted = set(splits)
        return self.subset(np.array([s in wanted for s in self.splits], dtype=bool))


def chunks(rows: Sequence, size: int = CHUNK) -> Iterator[Sequence]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def bulk_insert(conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[tuple], *,
                on_chunk: Callable[[int], None] | None = None) -> None:
    """Insert tuples of ``columns`` inside the caller's transaction, by each backend's fast path.

    SQLite: chunked driver-level ``executemany`` (SQLAlchemy's per-row parameter processing costs
    more than the insert itself there). PostgreSQL through psycopg 3: one ``COPY ... FROM STDIN``
    stream. JSON columns are encoded here for both. Any other backend: chunked Core inserts.
    ``on_chunk(n)``: called as each ``CHUNK`` of rows (or the last, smaller part) is written (a progress bar).
    """
    json_at = [i for i, c in enumerate(columns) if isinstance(table.c[c].type, JSON)]
    done = on_chunk or (lambda n: None)
    if conn.dialect.name == "sqlite":
        if json_at:
            rows = [_encode_json(r, json_at) for r in rows]
        sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        for part in chunks(rows):
            conn.exec_driver_sql(sql, part)
            done(len(part))
        return
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":
        _copy_rows(conn, table, columns, [_encode_json(r, json_at) for r in rows] if json_at else rows, done)
        return
    for part in chunks(rows):
        conn.execute(insert(table), [dict(zip(columns, r)) for r in part])
        done(len(part))


def _copy_rows(conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[tuple],
               done: Callable[[int], None] = lambda n: None) -> None:
    """PostgreSQL ``COPY FROM STDIN`` on the connection's own transaction (psycopg 3 adapts each value).

    The driver's errors (a constraint, a trigger, a full disk, a value PostgreSQL cannot hold) come
    out as SQLAlchemy's ``DBAPIError`` s, as every other statement's do: the raw cursor bypasses
    SQLAlchemy, and the CLI makes one line of those only."""
    sql = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
    driver_error = conn.dialect.loaded_dbapi.Error
    cursor = conn.connection.driver_connection.cursor()
    try:
        with cursor.copy(sql) as copy:
            for part in chunks(rows):
                for row in part:
                    copy.write_row(row)
                done(len(part))
    except driver_error as exc:
        raise DBAPIError.instance(sql, None, exc, driver_error, dialect=conn.dialect) from exc
    finally:
        cursor.close()


class Store:
    def __init__(self, engine: Engine, artifact_root: Path, read_only: str | None = None, home_root: Path | None = None):
        self.engine = engine
        self.artifact_root = artifact_root
        self.home_root = home_root or artifact_root  # kd-artifacts/STORE, whatever KD_ARTIFACTS says (see owns)
        self.read_only = read_only  # why a SQLite store is opened read-only (its file, or its folder, is): None when it is not

    @classmethod
    def open(cls, db: str | None = None, *, create: bool = True, check: bool = True) -> "Store":
        """Open (and, when new, create) the store at ``db``: a path, a SQLAlchemy URL, or ``$KD_DB``."""
        url = resolve_url(db)
        path = sqlite_path(url)
        if os.environ.get("KD_ARTIFACTS", "") and not os.environ["KD_ARTIFACTS"].strip():  # (as KD_DB: models went to a folder " ")
            raise KdError("KD_ARTIFACTS is blank: set it to the folder of models, or unset it for kd-artifacts/STORE beside the store")
        if _in_memory(url):
            raise KdError(f"{display_url(make_url(url))}: an in-memory SQLite database, lost with all kd writes to it when kd exits: "
                          "give a file path or sqlite:///PATH")
        check_sqlite_url(url)
        if path is not None:
            if not path.exists() and not create:
                if db is None and not os.environ.get("KD_DB"):  # ./kd.db, the default
                    raise KdError(f"no kd store at {path}: run `kd ingest` first, or pass --db")
                # (a store given by --db, a config file or KD_DB: a bare `kd ingest` makes ./kd.db or $KD_DB, not this one)
                if not path.parent.exists():  # (`kd ingest --db PATH` would be refused: kd creates the store, not its folder)
                    raise KdError(f"no kd store at {path} (folder {path.parent} does not exist): check the path, or make the "
                                  f"folder, then run `kd ingest FILE --db {db_option(make_url(url))}` to make one there")
                raise KdError(f"no kd store at {path} (no such file): check the path, or run "
                              f"`kd ingest FILE --db {db_option(make_url(url))}` first to make one there")
            if path.parent and not path.parent.exists():
                raise KdError(f"cannot create {path}: folder {path.parent} does not exist")
            if path.parent.exists() and not path.parent.is_dir():  # (SQLite: "unable to open database file")
                raise KdError(f"cannot create {path}: {path.parent} is a file, not a folder")
            if not path.exists() and not os.access(path.parent, os.W_OK):  # (SQLite: "unable to open database file")
                raise KdError(f"cannot create {path}: folder {path.parent} is read-only")
        # a store in a folder kd cannot write (a read-only share or mount) is read read-only: SQLite
        # could not make its WAL files there, and readers (`kd runs`, `kd report`) failed to open it.
        # So is a store file kd cannot write (chmod a-w, a copy from a read-only medium): SQLite made
        # its -wal and -shm files beside it, read-only as the file is, and left them there; once the
        # file was writable again, those kept every writer (`kd db upgrade` included) refused
        read_only = None
        if path is not None and path.exists():
            if not os.access(path.parent, os.W_OK):
                read_only = f"its folder {path.parent} is read-only"
            elif not os.access(path, os.W_OK):
                read_only = "the file is read-only"
        if path is not None:
            _check_sqlite_file(path, read_only=read_only is not None)
        # an empty file (a TSV not yet written, given as --db) is read read-only by a command that
        # creates no store: connecting wrote a WAL database's header into the file it then refused
        empty = path is not None and not create and path.is_file() and path.stat().st_size == 0
        engine = make_engine(url, read_only=path if read_only or empty else None)
        for attempt in range(OPEN_TRIES):
            try:
                _check_server(engine)
                if check:
                    ensure_current(engine, create=create, read_only=read_only)
                else:  # (`kd db`): a server it cannot reach, or a file SQLite cannot open, is named as every command names it
                    engine.connect().close()
                break
            except DBAPIError as exc:  # no server, no database, bad password, a connection option libpq refuses (?foo=1)
                if path is not None and "locked" in str(exc) and attempt < OPEN_TRIES - 1:
                    time.sleep(0.1 * (attempt + 1))  # another process is creating the same new store: SQLite said
                    continue  # "locked" at once (a lock it does not wait for), so wait here
                why = _first_line(exc)
                if path is None and "permission denied" in why:  # (an empty database whose user may not create tables: the GRANT it needs)
                    try:
                        denied = cannot_migrate(engine)
                    except DBAPIError:
                        denied = None
                    why += f" ({denied})" if denied else ""
                engine.dispose()
                raise KdError(f"cannot open the store at {display_url(engine.url)}: {why}") from None
        schema = _server_schema(engine)
        return cls(engine, _artifact_root(path, engine.url, schema), read_only, _home_root(path, engine.url, schema))

    @property
    def url(self) -> str:
        return display_url(self.engine.url)

    @contextmanager
    def write_transaction(self, *tables: str) -> Iterator[Connection]:
        """A Core transaction for a writer that reads before it writes (e.g. ingest checks which
        texts exist, then inserts): it holds the store's writer lock on ``tables`` from its first
        statement, so concurrent writers queue instead of failing on each other's rows. Readers are
        never blocked. SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: ``LOCK TABLE`` in SHARE ROW
        EXCLUSIVE mode (conflicts with itself and with writes, not with reads)."""
        with self.writer() as conn:
            _lock_tables(conn, tables)
            yield conn

    @contextmanager
    def write_session(self, *tables: str) -> Iterator[Session]:
        """``write_transaction`` for ORM code: a session whose transaction holds the writer lock."""
        with self.session() as s, s.begin():
            _lock_tables(s.connection(execution_options=self._lock_option()), tables)
            yield s

    def _lock_option(self) -> dict:
        return {WRITE_LOCK: True} if self.engine.dialect.name == "sqlite" else {}

    def writer(self):
        """``engine.begin()`` for a transaction that only writes (logits, metrics): on SQLite it queues
        for the writer lock at ``BEGIN`` in short tries (``_begin_sqlite``), where Ctrl-C reaches it; a
        plain ``BEGIN`` waited inside its first INSERT, deaf to signals, for up to the busy timeout."""
        return self.engine.execution_options(**self._lock_option()).begin()

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    # classes ---------------------------------------------------------------------------------
    def class_names(self) -> list[str]:
        """Class names in id order; a model's output index ``i`` is class ``class_names()[i]``."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(KdClass.id, KdClass.name).order_by(KdClass.id)).all()
        names = [name for _id, name in rows]
        if [i for i, _ in rows] != list(range(len(rows))):
            raise KdError("class ids in the store are not 0..K-1; the store is damaged")
        return names

    # samples ---------------------------------------------------------------------------------
    def samples(
        self,
        *,
        splits: Iterable[str] | None = None,
        labeled: bool | None = None,
        where: str | None = None,
        source: str | None = None,
        augmented: str | None = None,
        include_dropped: bool = False,
        ids: Sequence[int] | None = None,
        limit: int | None = None,
        by_name: bool = True,
    ) -> SampleSet:
        """Samples in id order, filtered by split, labeled-ness, a SQL ``where`` fragment on ``samples``
        (the user's ``--where``), the exact ``source`` they came from and the augmentation recipe
        that made them (``augmented``: a recipe's source, see ``augmented_texts``). ``by_name``: whether a bad
        ``where``'s error may advise --label NAME (kd samples and kd teach have it; kd distill does not)."""
        query = select(Sample.id, Sample.text, Sample.label_id, Sample.split).order_by(Sample.id)
        if splits is not None:
            splits = list(splits)
            bad = [s for s in splits if s not in SPLITS]
            if bad:
                raise KdError(f"unknown split {bad[0]!r}: choose from {', '.join(SPLITS)}")
            query = query.where(Sample.split.in_(splits))
        if labeled is True:
            query = query.where(Sample.label_id.is_not(None))
        elif labeled is False:
            query = query.where(Sample.label_id.is_(None))
        if not include_dropped:
            query = query.where(Sample.dropped.is_(False))
        if where:  # in parentheses: "a OR b" must not escape the split, label and dropped filters
            if not _parenthesized(where):  # nor "a) OR (b": it closed kd's parenthesis and trained on test rows
                raise KdError(f"--where {where!r}: its parentheses do not pair up (a condition on the samples, "
                              "every parenthesis it opens closed in it)")
            # (the newline: a trailing -- comment cannot eat the parenthesis); every colon escaped: SQLAlchemy
            # took ":x" of a literal ('% :x%', PostgreSQL's '[[:digit:]]') for a bind parameter and refused the SQL
            query = query.where(text(f"({where}\n)".replace(":", "\\:")))
        if source is not None:
            query = query.where(Sample.source == source)
        if augmented is not None:
            query = query.where(Sample.id.in_(select(AugmentedText.sample_id).where(AugmentedText.source == augmented)))
        # ids in chunks: PostgreSQL takes at most 65,535 parameters a statement (rows stay in id order)
        parts = [query if limit is None else query.limit(limit)] if ids is None else [
            query.where(Sample.id.in_(chunk)) for chunk in chunks(sorted({int(i) for i in ids}), ID_CHUNK)]
        try:
            with self.engine.connect() as conn:
                if limit == 0 and where:  # a check of the --where: its condition run on every row (a LIMIT 0 runs it on none,
                    # and PostgreSQL's `text::int > 3` fails on some rows only: the stage it was checked for failed)
                    conn.execute(select(func.count()).select_from(query.subquery())).scalar_one()
                rows = [r for part in parts for r in conn.execute(part).all()][:limit]
        except Exception as exc:  # a bad --where fragment is the usual cause
            if where:
                said = _first_line(exc)
                if re.search(r'near "\)"', said) and not where.rstrip().endswith(")"):
                    # (the parenthesis is kd's, closing the condition: `--where 'x ='` said only 'near ")"')
                    said += " (at the end of the condition: it stops short, an operator or keyword with nothing after it)"
                wide = re.search(f"[{FULL_WIDTH}]", re.sub(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"", "", where))  # (outside its strings)
                # (meta.source: "no such column: meta.source" listed meta as a column, not how to read a key of its JSON)
                keys = re.search(r'(?<![\w."])(?:samples\.)?meta((?:\.(?:\w+|"[^"]+"))+)', re.sub(r"'(?:[^']|'')*'", "", where))
                if wide:  # an input method's ‘ or （: "no such column: ‘" and 'near "）"' named no cause
                    said += f" ({wide.group(0)} is a full-width or curly mark, which SQL reads as part of a name: type the ASCII one, ' \" ( ) = ; ,)"
                elif keys:
                    path = [k.strip('"') for k in re.findall(r'\.(\w+|"[^"]+")', keys.group(1))]
                    expr = "meta" + "".join(f"->'{k}'" for k in path[:-1]) + f"->>'{path[-1]}'"  # (SQLite 3.38+ and PostgreSQL)
                    said += f" (meta is a JSON column of each sample's other fields: {expr} reads one)"
                elif "invalid input syntax for type integer" in said and (note := label_id_note(where, self.class_names(), by_name=by_name)):
                    # (PostgreSQL, of label_id = 'neg': SQLite ran it, selecting nothing, and warned with the class's id)
                    said += f" ({note})"
                elif re.search(r"operator does not exist: boolean [<>=!]+ integer", said):  # (PostgreSQL, of dropped = 0)
                    said += " (dropped is true or false: dropped, or NOT dropped, runs on both stores)"
                elif "bindings supplied" in said:  # (SQLite, of a ? or :x: the count it gave was of kd's own parameters)
                    said += " (a ? or :name is a placeholder, with no value to fill it: write the value itself, 'quoted')"
                elif re.search(r'no such column: |column \S+ does not exist', said):  # (SQLite's words; PostgreSQL's)
                    # "no such column: label" said neither what there is nor that label_id = 3 is the class of id 3
                    said += (f" (the columns a --where may use: {', '.join(c.name for c in Sample.__table__.columns)}; label_id is a "
                             "class id, not its name (kd classes lists both)" + (": --label NAME selects a class by name)" if by_name else ")"))
                raise KdError(f"--where {where!r} failed: {said}") from exc
            raise
        return SampleSet(
            ids=np.array([r[0] for r in rows], dtype=np.int64),
            texts=[r[1] for r in rows],
            labels=np.array([-1 if r[2] is None else r[2] for r in rows], dtype=np.int64),
            splits=[r[3] for r in rows],
        )

    def last_sample_id(self) -> int:
        """The highest sample id (0 for none): whether an ingest stored rows, read from the primary key's index."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.max(Sample.id))).scalar() or 0)

    def last_take_id(self) -> int:
        """The id of the newest ``kd ingest --take-pool`` edit (0 for none): whether one took pool texts, which adds no
        sample id, since an earlier read (another process's ``kd labels set`` meanwhile is no take)."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.max(LabelEdit.id)).where(LabelEdit.action == "take")).scalar() or 0)

    def takes_after(self, edit_id: int) -> int:
        """How many ``kd ingest --take-pool`` edits are newer than ``edit_id`` (a ``last_take_id``)."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(LabelEdit).where(LabelEdit.action == "take", LabelEdit.id > edit_id)).scalar())

    def counts(self) -> dict[str, dict[str, int]]:
        """``{split: {class name or '(none)': count}}`` over samples that are not dropped, splits in
        pipeline order (train, dev, test, unlabeled) and classes in id order on every backend; the
        texts ``kd distill --augment`` made are counted apart, as ``augmented``."""
        names = self.class_names()
        made = Sample.parent_id.is_not(None)
        query = (
            select(Sample.split, Sample.label_id, made, func.count())
            .where(Sample.dropped.is_(False))
            .group_by(Sample.split, Sample.label_id, made)
        )
        with self.engine.connect() as conn:
            rows = [("augmented" if aug else split, label_id, n) for split, label_id, aug, n in conn.execute(query)]
        order = {s: i for i, s in enumerate((*SPLITS, "augmented"))}
        rows.sort(key=lambda r: (order.get(r[0], len(order)), r[0], -1 if r[1] is None else r[1]))
        out: dict[str, dict[str, int]] = {}
        for split, label_id, n in rows:
            label = "(none)" if label_id is None else names[label_id]
            out.setdefault(split, {})[label] = n
        return out

    def dropped_count(self) -> int:
        """How many samples are dropped (``kd labels clean``/``set`` drops): ``counts`` leaves them out."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(Sample).where(Sample.dropped.is_(True))).scalar_one())

    def sources(self, *, splits: Iterable[str], labeled: bool = True) -> dict[str, int]:
        """``{source: count}`` of the samples of ``splits`` that are not dropped (the labeled ones by
        default), most samples first: what ``--where "source = '...'"`` can select."""
        query = select(Sample.source, func.count()).where(Sample.split.in_(list(splits)), Sample.dropped.is_(False))
        if labeled:
            query = query.where(Sample.label_id.is_not(None))
        with self.engine.connect() as conn:
            rows = conn.execute(query.group_by(Sample.source)).all()
        return dict(sorted(((src, n) for src, n in rows), key=lambda r: (-r[1], r[0])))

    # stage outputs ---------------------------------------------------------------------------
    def write_logits(self, stage_id: int, sample_ids: Sequence[int], matrix: np.ndarray) -> int:
        """Store one float32 vector per sample for a stage, in one transaction; returns rows written."""
        if len(sample_ids) != len(matrix):
            raise ValueError(f"{len(sample_ids)} sample ids but {len(matrix)} logit rows")
        blobs = vectors.encode_rows(np.asarray(matrix))
        rows = list(zip(repeat(int(stage_id)), np.asarray(sample_ids).tolist(), blobs))
        with self.writer() as conn:
            bulk_insert(conn, Logit.__table__, ("stage_id", "sample_id", "vector"), rows)
        return len(rows)

    def read_logits(self, stage_id: int, *, splits: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(sample_ids, matrix)`` of a stage's logits, in sample id order (of the samples of
        ``splits`` only, when given: a detection reads its train rows, not a 500k pool's)."""
        query = select(Logit.sample_id, Logit.vector).where(Logit.stage_id == stage_id).order_by(Logit.sample_id)
        if splits is not None:
            query = query.join(Sample, Sample.id == Logit.sample_id).where(Sample.split.in_(list(splits)))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        if not rows:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        width = len(rows[0][1]) // vectors.DTYPE.itemsize
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        return ids, vectors.decode_rows([r[1] for r in rows], width)

    def write_predictions(
        self,
        stage_id: int,
        sample_ids: Sequence[int],
        label_ids: Sequence[int],
        confidences: Sequence[float],
    ) -> int:
        rows = list(
            zip(
                repeat(int(stage_id)),
                np.asarray(sample_ids).tolist(),
                np.asarray(label_ids).tolist(),
                np.asarray(confidences, dtype=float).tolist(),
            )
        )
        with self.writer() as conn:
            bulk_insert(conn, Prediction.__table__, ("stage_id", "sample_id", "label_id", "confidence"), rows)
        return len(rows)

    def add_metrics(
        self, stage_id: int, split: str, values: dict[str, float], *, step: int | None = None
    ) -> None:
        """Store a stage's figures. One that is not a finite number (the mean loss of no step) is
        left out, on every backend alike: SQLite would refuse NaN, PostgreSQL keep it, and JSON has
        no spelling for it."""
        rows = [
            {"stage_id": stage_id, "split": split, "name": k, "value": float(v), "step": step}
            for k, v in values.items() if math.isfinite(float(v))
        ]
        if not rows:
            return
        with self.writer() as conn:
            conn.execute(insert(Metric), rows)

    def metrics(self, stage_id: int, *, final: bool = True) -> list[Metric]:
        query = select(Metric).where(Metric.stage_id == stage_id).order_by(Metric.id)
        if final:
            query = query.where(Metric.step.is_(None))
        with self.session() as s:
            return list(s.scalars(query))

    def parents(self, ids: Sequence[int] | None = None) -> dict[int, int]:
        """``{sample_id: parent_id}`` of every sample made from another (augmented texts), or of
        those among ``ids``."""
        query = select(Sample.id, Sample.parent_id).where(Sample.parent_id.is_not(None))
        parts = [query] if ids is None else [query.where(Sample.id.in_(chunk)) for chunk in chunks(sorted({int(i) for i in ids}), ID_CHUNK)]
        with self.engine.connect() as conn:
            return {int(i): int(p) for part in parts for i, p in conn.execute(part)}

    def origins(self, ids: Sequence[int]) -> dict[int, dict]:
        """``{sample_id: {"source", "line", "meta"}}`` of the samples among ``ids``: the file (or
        ``--source``) each came from, its line there, and the columns ingest kept as its metadata
        (what a ``--where`` can select on, and a row's own id to map it back)."""
        query = select(Sample.id, Sample.source, Sample.line, Sample.meta)
        parts = [query.where(Sample.id.in_(chunk)) for chunk in chunks(sorted({int(i) for i in ids}), ID_CHUNK)]
        with self.engine.connect() as conn:
            return {int(i): {"source": src, "line": line, "meta": meta}
                    for part in parts for i, src, line, meta in conn.execute(part)}

    def write_folds(self, stage_id: int, sample_ids: Sequence[int], folds: Sequence[int]) -> None:
        rows = list(zip(repeat(int(stage_id)), np.asarray(sample_ids).tolist(), np.asarray(folds).tolist()))
        with self.writer() as conn:
            bulk_insert(conn, SampleFold.__table__, ("stage_id", "sample_id", "fold"), rows)

    def read_folds(self, stage_id: int) -> dict[int, int]:
        """``{sample_id: fold}`` of an out-of-fold teach or distill stage (empty for an ordinary one)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(SampleFold.sample_id, SampleFold.fold).where(SampleFold.stage_id == stage_id))
            return {int(s): int(f) for s, f in rows}

    def clear_outputs(self, stage_id: int) -> None:
        """Remove a stage's logits and predictions (used when a stage fails half-way), and the final
        figures of its splits, which described them (a Ctrl-C while the model was timed left a failed
        stage reporting test accuracy), and the measures of the model it leaves no folder of (size,
        latency, throughput: `kd report --compare` set them beside standing models); its per-epoch
        history and what it read (sample counts, best epoch) stay."""
        with self.writer() as conn:
            conn.execute(delete(Logit).where(Logit.stage_id == stage_id))
            conn.execute(delete(Prediction).where(Prediction.stage_id == stage_id))
            conn.execute(delete(SampleFold).where(SampleFold.stage_id == stage_id))
            conn.execute(delete(Metric).where(Metric.stage_id == stage_id, Metric.step.is_(None), Metric.split.in_(SPLITS)))
            conn.execute(delete(Metric).where(Metric.stage_id == stage_id, Metric.step.is_(None), Metric.split == "all",
                                              Metric.name.in_(MODEL_MEASURES)))

    # runs and stages -------------------------------------------------------------------------
    def runs(self) -> list[tuple[Run, list[Stage]]]:
        with self.session() as s:
            runs = list(s.scalars(select(Run).order_by(Run.created_at, Run.id)))
            stages = list(s.scalars(select(Stage).order_by(Stage.started_at, Stage.id)))
        uniqid = {r.id: r.uniqid for r in runs}
        by_run: dict[int, list[Stage]] = {}
        for st in stages:
            by_run.setdefault(st.run_id, []).append(self._located(st, uniqid[st.run_id]))
        return [(r, by_run.get(r.id, [])) for r in runs]

    def stages_of(self, run: str) -> list[Stage]:
        with self.session() as s:
            return [self._located(st, run) for st in
                s.scalars(
                    select(Stage)
                    .join(Run, Run.id == Stage.run_id)
                    .where(Run.uniqid == run)
                    .order_by(Stage.started_at, Stage.id)
                )
            ]

    def _located(self, stage: Stage, run: str) -> Stage:
        """``stage`` (detached) with its artifact path where the model lies now: the recorded path is
        absolute, so a store moved or copied with its ``kd-artifacts`` folder (or given another
        ``KD_ARTIFACTS``) finds its models under this store's ``RUN/STAGE`` folder instead. That
        folder wins over a recorded path of another store's (``owns``): a copy of a project folder (store
        and ``kd-artifacts``) read the original's models, and after the original retrained a stage
        (``--overwrite``) served that new model under its own stage's name, logits and metrics. The
        recorded path wins where it is this store's own and still there: a stage retrained with
        KD_ARTIFACTS set, unset or changed since left the replaced model in the folder looked in first.
        Where neither exists, ``stage.artifact_home`` says where kd looked (``missing_model``)."""
        folder = recorded_folder(run, stage)
        if folder is None:
            return stage
        inside = Path(stage.artifact_path).relative_to(folder)
        here = self.artifact_root.joinpath(run, stage.name, inside)
        stage.artifact_home = str(self.artifact_root / run / stage.name)
        owned = self.owns(folder)
        if owned is False and not here.exists():  # moved or copied with its kd-artifacts/STORE, KD_ARTIFACTS naming
            here = self.home_root.joinpath(run, stage.name, inside)  # another folder: its models are here, not there
        if here.exists() and not (owned is not False and Path(stage.artifact_path).exists()):
            stage.artifact_path = str(here.resolve())
        return stage

    def owns(self, folder: Path) -> bool | None:
        """Whether ``folder``, a ``RUN/STAGE`` folder a stage recorded, is this store's: True under its own
        ``kd-artifacts/STORE`` (beside its file; a server store's in any working directory), False under
        another's (a copied store's original's, whose models are not this one's to read or remove), None
        elsewhere (a folder ``KD_ARTIFACTS`` named: whose, a path cannot say)."""
        parts = Path(folder).parts
        if len(parts) < 4 or parts[-4] != "kd-artifacts":
            return None
        if self.engine.dialect.name != "sqlite":
            return parts[-3] == self.home_root.name
        return Path(*parts[:-2]).resolve() == self.home_root.resolve()

    def find_stage(self, run: str, name_or_kind: str, *, succeeded: bool = True, makes: str | None = None,
                   kinds: tuple[str, ...] | None = None) -> Stage:
        """The stage named ``name_or_kind`` in ``run``, else the latest stage of that kind. ``makes``: what
        the refusal of a run without one says makes it (default: the plain command of ``_MAKES``); ``kinds``:
        the stages the refusal lists and guesses from, where only those would do (a --model's teach and
        distill stages, listed as models: a detection or a stored prediction is none)."""
        stages = self.stages_of(run)
        if not stages and not self.run_exists(run):
            raise self.no_run(run)
        matches = [s for s in stages if s.name == name_or_kind] or [
            s for s in stages if s.kind == name_or_kind
        ]
        if succeeded:
            matches = [s for s in matches if s.status == "succeeded"]
        if not matches:
            mine = f"{os.getpid()}:"  # the stage asking (this process's own, still running) is not one to list
            from .runs import process_state  # (runs builds on this module)

            # one whose process is gone (`kill -9`) as `kd runs` says it: not one to wait for
            gone = lambda s: ", process gone" if s.status == "running" and process_state(s) is False else ""  # noqa: E731
            have = ", ".join(f"{s.name} ({s.status}{gone(s)})" for s in stages
                             if not (s.status == "running" and (s.process or "").startswith(mine)) and (kinds is None or s.kind in kinds)) or "none"
            parked = [s for s in stages if s.name.startswith(f"{name_or_kind}~parked-") or
                      (s.kind == name_or_kind and "~parked-" in s.name)]
            # (kd predict and kd export serve a teacher or a student: not a detection, a clean or a pretrain's MLM)
            serves = (f"; until then, `--model {parked[-1].name}` (kd predict, kd export) serves it"
                      if parked and parked[-1].kind in ("teach", "distill") else "")
            waiting = (f"; {parked[-1].name!r} is the one an --overwrite is replacing: it gets its name back if the replacement "
                       f"fails (one whose process is gone is ended by the next kd stage started on its machine){serves}") if parked else ""
            make = _MAKES.get(name_or_kind)  # (`kd labels show` on a run never detected said no more than this)
            if name_or_kind == "teach" and any(s.kind == "pretrain" and s.status == "succeeded" for s in stages):
                make = make.replace("MODEL", "pretrain:{run}")  # (its own pre-trained model, not a MODEL to find)
                # (a caller's own command too: kd labels detect's `kd teach --run R --model MODEL --folds 5`)
                makes = makes and makes.replace("--model MODEL", f"--model pretrain:{shlex.quote(run)}")
            makes = makes or (make and f"`{make.format(run=shlex.quote(run))}` makes one")
            how = f": {makes}" if makes and not parked else ""
            # one still training (not gone, not this process's own): the command that makes one is refused while it runs
            running = [s for s in stages if s.status == "running" and (s.name == name_or_kind or s.kind == name_or_kind)
                       and not gone(s) and not (s.process or "").startswith(mine)]
            if running and not parked:
                how = f": {running[-1].name!r} is running: wait for it to end (`kd runs` shows it), then run this again"
            elif running:  # (the replacement: a distill, a detection or a --store told only what kd predict serves meanwhile)
                how = f"; the replacement {running[-1].name!r} is running: wait for it to end (`kd runs` shows it), then run this again"
            if not parked and make is None:  # a name mistyped or shortened (`--model early-exit` for distill-early-exit)
                names = [s.name for s in stages if s.status == "succeeded" and "~" not in s.name and (kinds is None or s.kind in kinds)]
                # a student's kind (`--model textcnn`): the stage kd distill names after it, not a closer rerun-textcnn
                near = [f"distill-{name_or_kind}"] if f"distill-{name_or_kind}" in names else difflib.get_close_matches(name_or_kind, names, n=1)
                how = how or (f": did you mean {near[0]!r}?" if near else "")
            raise KdError(
                f"run {run!r} has no succeeded {name_or_kind!r} stage ({'models' if kinds else 'stages'}: {have}){waiting}{how}"
            )
        return matches[-1]

    def run_exists(self, run: str) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(select(Run.id).where(Run.uniqid == run)).first() is not None

    def no_run(self, run: str, purpose: str = "") -> KdError:
        """The refusal of a run the store lacks (``purpose``: " to take a teacher from"), naming the runs
        whose names differ from it only in case (`--run qq` where the store has `QQ` said only "no run")."""
        with self.engine.connect() as conn:
            runs = list(conn.execute(select(Run.uniqid)).scalars())
        if not runs:  # (`kd runs` would list none)
            return KdError(f"no run {run!r} in {self.url}{purpose}: it has no runs yet: `kd teach --run R` (or `kd pretrain --run R`) starts one")
        twins = [u for u in runs if u.lower() == run.lower()]
        near = f" (it has {', '.join(map(repr, twins))}: run names are case-sensitive)" if twins else ""
        return KdError(f"no run {run!r} in {self.url}{purpose}{near}: `kd runs` lists the runs")


def recorded_folder(run: str, stage: Stage) -> Path | None:
    """The ``RUN/STAGE`` folder the stage's recorded model path lies in (the last such in the path: what
    follows lies in the stage's folder); None without a recorded path, or one not in such a folder."""
    parts = Path(stage.artifact_path or "").parts
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == run and parts[i + 1] == stage.name:
            return Path(*parts[: i + 2])
    return None


def _lock_tables(conn: Connection, tables: Sequence[str]) -> None:
    if conn.dialect.name == "postgresql" and tables:
        conn.execute(text(f"LOCK TABLE {', '.join(tables)} IN SHARE ROW EXCLUSIVE MODE"))


def _encode_json(row: tuple, positions: list[int]) -> tuple:
    values = list(row)
    for i in positions:
        if values[i] is not None:
            values[i] = json.dumps(values[i], ensure_ascii=False)
    return tuple(values)


OPEN_TRIES = 20  # opening a SQLite store that another process is creating: about 20 s in all


DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306, "mssql": 1433, "oracle": 1521}


def _artifact_root(db_path: Path | None, url, schema: str | None = None) -> Path:
    """``$KD_ARTIFACTS``, else ``_home_root``."""
    env = os.environ.get("KD_ARTIFACTS")
    if env:
        return Path(env).expanduser()  # as --db and KD_DB: a quoted "~/模型 目录" is the home folder's
    return _home_root(db_path, url, schema)


def _home_root(db_path: Path | None, url, schema: str | None = None) -> Path:
    """``kd-artifacts/STORE`` beside the SQLite file (``STORE`` its file name) or in the working
    directory (``STORE`` the server database's ``NAME@HOST``, ``NAME@HOST-PORT`` on a port not the
    server's default, ``~SCHEMA`` after it for a store in a schema other than ``public``): two stores
    in one folder, with runs and stages of the same names, never share a stage's folder."""
    if db_path is not None:
        return db_path.parent / "kd-artifacts" / db_path.name
    query = lambda name: url.query.get(name) if isinstance(url.query.get(name), str) else None  # noqa: E731 (libpq's own keys)
    database = url.database or query("dbname") or url.username or "db"  # (libpq's default database is the user's name)
    host, port = url.host or query("host") or "local", url.port or query("port")  # (?host=/run/postgresql, ?port=5433)
    port = f"-{port}" if port and str(port) != str(DEFAULT_PORTS.get(url.get_backend_name())) else ""  # (two servers, one host)
    schema = f"~{_folder_part(schema)}" if schema and schema != "public" else ""  # (search_path: two stores in one database)
    return Path.cwd() / "kd-artifacts" / f"{_folder_part(database)}@{_folder_part(host)}{_folder_part(port)}{schema}"


def _folder_part(name: str) -> str:
    """``name`` as part of a folder name, one name to one folder: letters (any script's: 评论), digits,
    ``_``, ``.`` and ``-`` as they are, any other character as ``%XX`` per UTF-8 byte (a ``_`` for each
    made the databases 评论 and 商品 of one server share ``__@HOST``, and their stages' folders)."""
    return "".join(c if c.isalnum() or c in "_.-" else quote(c, safe="") for c in name)


def missing_model(stage: Stage) -> KdError:
    """The one-line error for a stage whose model is gone from its recorded path (and from this
    store's ``kd-artifacts/STORE/RUN/STAGE``): where kd looks for it, to move it there."""
    where = moved_store_advice(getattr(stage, "artifact_home", None), stage.artifact_path)
    return KdError(f"the model of stage {stage.name!r} is missing from {stage.artifact_path}{where and ': ' + where}")


def moved_store_advice(home, recorded: str | None) -> str:
    """Where a store looks for a stage's model (``home``, its ``kd-artifacts/STORE/RUN/STAGE``) and to move it there,
    when that is not where the model was recorded (``recorded``); else ``""``. (A --folds teacher's or fold students'
    recorded path is the RUN/STAGE folder itself: no other place to name.)"""
    if not home or not recorded or Path(home).resolve() in (Path(recorded), *Path(recorded).parents):
        return ""
    return f"a store moved or renamed finds its models in {home} (kd-artifacts/STORE beside the store file, or KD_ARTIFACTS): move them there"


# the command that makes a stage of each kind another command reads
_MAKES = {"teach": "kd teach --run {run} --model MODEL", "pretrain": "kd pretrain --run {run}", "detect": "kd labels detect --run {run}"}


def class_of_id(value: str, names: Sequence[str]) -> str | None:
    """The class ``value`` is the id of, where the classes (``names``, in id order) are named and none by a
    number (a label file of the Baidu tool's ids, typed for class names); else ``None``."""
    if not (value.isascii() and value.isdigit()) or int(value) >= len(names) or any(n.isascii() and n.isdigit() for n in names):
        return None
    return names[int(value)]


def class_id_hint(value: str, names: Sequence[str]) -> str:
    """``"; '3' is the id of class 'sports': classes are named ..."`` where ``value`` is a class id
    (``class_of_id``); else empty."""
    named = class_of_id(value, names)
    return "" if named is None else f"; {value!r} is the id of class {named!r}: classes are named by their names, not ids"


def check_where(where: str | None, *, every: str, rereads: str) -> None:
    """Refuse a ``--where`` that is empty (an unset ``$FILTER``: ``every`` says what leaving it out does)
    or draws its rows with ``random()`` (SQLite's ``randomblob`` too): other rows at each read, and
    ``rereads`` says who reads it again."""
    if where is not None and not where.strip():
        raise KdError(f"--where is empty: give an SQL condition on the samples, or leave --where out to {every}")
    if where is not None and re.search(r"\brandom(?:blob)?\s*\(", re.sub(r"'(?:[^']|'')*'", "", where), re.IGNORECASE):
        raise KdError(f"--where {where!r}: random() selects other rows at each read, and {rereads}: "
                      "select a fixed share by id instead, e.g. \"id % 10 < 3\"")


def sources_hint(store: Store, where: str | None, splits: Sequence[str]) -> str:
    """``"; the labeled samples' sources are ..."`` where ``where`` (one that selected no row) names
    ``source``: the values it could have compared with, of the labeled samples of ``splits``; else empty."""
    if not where or "source" not in where.lower():  # (a file's own `source` column is in meta, not here)
        return ""
    held = store.sources(splits=splits)
    if not held:
        return ""
    shown = first_few(f"{src!r} ({n})" for src, n in held.items())
    return f"; the labeled samples' sources are {shown} (the file each came from, or its --source; a file's own columns are in meta)"


def label_id_note(where: str | None, names: list[str], *, by_name: bool = True) -> str | None:
    """A warning where ``where`` compares ``label_id`` (or ``orig_label_id``), a class id, and some class
    is named by a number that is not its id (star ratings 1..5 have ids 0..4, or in the order first
    read): ``label_id = 3`` selected the class of id 3, not the class named '3', without a word. ``by_name``: whether
    to advise --label NAME (kd distill has none)."""
    label = "; --label NAME selects a class by name" if by_name else ""
    if not where or not re.search(r"label_id", where, re.IGNORECASE):
        return None
    # a class's name where its id goes (`label_id = 'pos'`): SQLite compared it with no id and selected nothing
    quoted = re.search(r"\b(?:orig_)?label_id\s*(?:=|!=|<>)\s*'((?:[^']|'')*)'", where, re.IGNORECASE)
    value = quoted and quoted.group(1).replace("''", "'")
    if value is not None and not re.fullmatch(r"\s*[+-]?[0-9]+\s*", value):  # (a number in quotes: read as that id)
        which = f": class {value!r} has id {names.index(value)} (kd classes)" if value in names else " (kd classes lists their ids)"
        return f"--where compares label_id, a class id, with the string {value!r}{which}{label}"
    numbered = numbered_classes(names)
    if not any(int(n) != i for i, n in numbered):
        return None
    return f"--where compares label_id, a class id, not its name: class {class_ids_shown(numbered)} (kd classes){label}"


def numbered_classes(names: Sequence[str]) -> list[tuple[int, str]]:
    """``(id, name)`` of the classes named by a whole number, which a reader may take for their ids."""
    return [(i, n) for i, n in enumerate(names) if re.fullmatch(r"[+-]?[0-9]+", n.strip())]


def class_ids_shown(numbered: Sequence[tuple[int, str]]) -> str:
    """``"'1' has id 0, '0' id 1"``: the first few ``(id, name)`` pairs, and a count of the rest."""
    return first_few(f"{n!r} has id {i}" if k == 0 else f"{n!r} id {i}" for k, (i, n) in enumerate(numbered))


# the marks a Chinese input method types for SQL's quotes, parentheses and operators
FULL_WIDTH = "‘’“”（）＝；，＜＞！＇＂"


def _parenthesized(where: str) -> bool:
    """Whether the SQL fragment ``where`` closes every parenthesis it opens, and none it did not (outside
    its quoted strings and names and its comments): in parentheses, it then cannot escape them."""
    depth, i, n = 0, 0, len(where)
    while i < n:
        c = where[i]
        if c in "'\"`":  # a string or quoted name; a doubled quote inside stays in it
            escapes = c == "'" and where[i - 1 : i] in ("e", "E") and not (where[i - 2 : i - 1].isalnum() or where[i - 2 : i - 1] == "_")
            end = i
            while True:  # (PostgreSQL's E'...' strings take a backslash before a quote as part of them)
                end = where.find(c, end + 1)
                if escapes:
                    while end != -1 and (len(where[:end]) - len(where[:end].rstrip("\\"))) % 2:
                        end = where.find(c, end + 1)
                if end == -1 or where[end + 1 : end + 2] != c:
                    break
                end += 1
            if end == -1:
                return True  # unterminated: the database refuses it
            i = end + 1
            continue
        dollar = re.match(r"\$([A-Za-z_][A-Za-z_0-9]*)?\$", where[i:]) if c == "$" and not (where[i - 1 : i].isalnum() or where[i - 1 : i] == "_") else None
        if dollar:  # PostgreSQL's $$...$$ and $tag$...$tag$ strings
            end = where.find(dollar.group(0), i + len(dollar.group(0)))
            if end == -1:
                return True
            i = end + len(dollar.group(0))
            continue
        if where.startswith("--", i):
            i = n if where.find("\n", i) == -1 else where.find("\n", i)
            continue
        if where.startswith("/*", i):
            end = where.find("*/", i + 2)
            if end == -1 or "/*" in where[i + 2 : end]:
                return False  # would comment out kd's closing parenthesis; nested, where PostgreSQL and SQLite end it apart
            i = end + 2
            continue
        depth += {"(": 1, ")": -1}.get(c, 0)
        if depth < 0:
            return False
        i += 1
    return depth == 0


def _check_server(engine: Engine) -> None:
    """Refuse a PostgreSQL database not in UTF8 (SQL_ASCII, EUC_CN, LATIN1): it cannot hold every text
    kd stores (an emoji, a character outside GB2312), and SQL_ASCII checks nothing, so one file's
    ingest would fail at its first such character, or store bytes the next read cannot decode. And
    one whose URL's ``search_path`` names no schema of the database (a mistyped
    ``?options=-csearch_path%3DNAME``): readers called it an empty database, and creating the store in
    it failed with "no schema has been selected to create in". One connection asks both."""
    if engine.dialect.name != "postgresql":
        return
    with engine.connect() as conn:
        encoding = conn.exec_driver_sql("SHOW server_encoding").scalar_one()
        schema = conn.exec_driver_sql("SELECT current_schema()").scalar_one()
        path = conn.exec_driver_sql("SHOW search_path").scalar_one() if schema is None else None
    if encoding.upper() not in ("UTF8", "UTF-8"):
        engine.dispose()
        raise KdError(f"cannot open the store at {display_url(engine.url)}: the database's encoding is {encoding}; kd stores "
                      "any Unicode text, so it needs a UTF8 database (createdb -E UTF8 -T template0 NAME)")
    if schema is None:
        engine.dispose()
        raise KdError(f"cannot open the store at {display_url(engine.url)}: no schema of its search_path ({path}) exists in the "
                      "database: create it (CREATE SCHEMA NAME) or name one that exists (?options=-csearch_path%3DNAME)")


def _server_schema(engine: Engine) -> str | None:
    """The schema a PostgreSQL store's tables are in (``current_schema()``: the first of its
    ``search_path`` that exists, ``?options=-csearch_path%3DNAME`` or the role's own); ``None`` on
    another backend."""
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as conn:
        return conn.exec_driver_sql("SELECT current_schema()").scalar_one()


def _first_line(exc: BaseException) -> str:
    msg = str(getattr(exc, "orig", exc)) or type(exc).__name__
    return msg.strip().splitlines()[0]


def _in_memory(url: str) -> bool:
    """Whether ``url`` is an in-memory SQLite database (``sqlite://``, ``:memory:``), which every kd
    command would fill and lose when it exits."""
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # (``make_engine`` says what is wrong with it)
        return False
    return parsed.get_backend_name() == "sqlite" and (
        not parsed.database or ":memory:" in parsed.database or parsed.query.get("mode") == "memory")


def _check_sqlite_file(path: Path, *, read_only: bool = False) -> None:
    """A --db that names a folder, or a file that is no SQLite database (a TSV given as --db), is
    refused naming it; SQLite would say "file is not a database" without saying which.

    The file is read through SQLite, never opened and closed by Python: closing any descriptor of a
    file drops every POSIX lock this process holds on it, so a store already open in this process
    (a library user's, a test's) would lose its locks; SQLite keeps its own descriptors open while
    another of its connections holds locks. ``read_only``: the file or its folder cannot be written,
    and the file is read as ``make_engine`` reads it (a plain ``mode=ro`` left a read-only WAL store's
    -wal and -shm files, read-only, beside it)."""
    import sqlite3
    from urllib.parse import quote

    if path.is_dir():
        raise KdError(f"{path}: is a folder, not a store: give a file path for --db")
    if not path.exists():
        return
    if not path.is_file():  # /dev/null read as an empty database; a named pipe hung SQLite's open for ever
        raise KdError(f"{path}: not a regular file (not a kd store): give a file path for --db")
    if not os.access(path, os.R_OK):
        raise KdError(f"{path}: cannot read the store: Permission denied")
    if 0 < path.stat().st_size < 100:  # (shorter than SQLite's header, which SQLite took for an empty database and overwrote)
        raise KdError(f"{path}: not a SQLite database (not a kd store): give another --db")
    try:
        uri = read_only_uri(path) if read_only else f"file:{quote(str(path.resolve()))}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=0)
        try:
            conn.execute("PRAGMA schema_version").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        if "not a database" in str(exc) or "encrypted" in str(exc):  # (an empty file is a new SQLite database)
            raise KdError(f"{path}: not a SQLite database (not a kd store): give another --db") from None
        # locked, busy: a database all the same; SQLite says more when the store is opened
