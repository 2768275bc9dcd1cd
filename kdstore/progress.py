"""Rich progress bars for long work: rate and ETA on standard error, so standard output stays clean."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.text import Text
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def _rate(task) -> float | None:
    """Items per second: while the task runs, rich's recent rate, or, where its window (the last 30 s)
    holds no step (a tf-idf fold of 100k texts takes minutes), the mean over the task's time so far
    (rich said "0.0 fold/s" and no ETA); once it is done, the mean over its whole time, so that the
    last line's count, time and rate agree (rich keeps the rate of its last seconds, 4.1 step/s beside
    420 steps in 3:44)."""
    if task.finished and task.finished_time:
        return task.completed / task.finished_time
    speed = task.finished_speed or task.speed
    if not speed and task.completed and task.elapsed:
        return task.completed / task.elapsed
    return speed


class RateColumn(ProgressColumn):
    """Items per second (:func:`_rate`), with the unit a task names in its ``unit`` field; a minute's or an
    hour's where a second's rounds to 0.0."""

    def render(self, task) -> Text:
        speed = _rate(task)
        unit = task.fields.get("unit", "it")
        if speed is None:
            return Text("-", style="progress.data.speed")
        per = next(((speed * n, name) for n, name in ((1, "s"), (60, "min")) if speed * n >= 0.05), (speed * 3600, "h"))
        return Text(f"{per[0]:,.1f} {unit}/{per[1]}", style="progress.data.speed")


class EtaColumn(TimeRemainingColumn):
    """Time remaining: from the rate (:func:`_rate`) and total, or, for work bounded by a clock (a task
    with a ``left_s`` field, the seconds of its budget still to run), that budget when it is sooner or
    when there is no total to estimate from."""

    def render(self, task) -> Text:
        left = task.fields.get("left_s")
        remaining = task.time_remaining if task.total is not None else None
        if remaining is None and task.total is not None and _rate(task):
            remaining = max(task.total - task.completed, 0) / _rate(task)
        if remaining is None and left is None:
            return super().render(task)  # rich's own: "-:--:--", or nothing without a total
        remaining = left if remaining is None else remaining if left is None else min(remaining, left)
        minutes, seconds = divmod(int(max(remaining, 0.0)), 60)
        hours, minutes = divmod(minutes, 60)
        return Text(f"{hours:d}:{minutes:02d}:{seconds:02d}", style="progress.remaining")


_SILENCED = [0]  # how many ``silenced()`` blocks are open
_LIVE: list["LoggedProgress"] = []  # the bars drawing now (at most one: a bar opened inside it is rows of it)


@contextmanager
def silenced() -> Iterator[None]:
    """No progress bars inside the block: work that comes in many small parts, each its own bar
    (``kd predict`` reading stdin drew one finished bar on stderr for every read)."""
    _SILENCED[0] += 1
    try:
        yield
    finally:
        _SILENCED[0] -= 1


def no_progress() -> bool:
    """``KD_NO_PROGRESS`` set to anything but empty, ``0``, ``false`` or ``no`` (or inside
    :func:`silenced`): no progress bars."""
    return bool(_SILENCED[0]) or os.environ.get("KD_NO_PROGRESS", "").strip().lower() not in ("", "0", "false", "no")


def progress(*, extra: str = "", disable: bool = False, redirect_stdout: bool = True) -> Progress:
    """A progress bar: description, bar, done/total, rate, elapsed, ETA and an optional extra field.
    ``redirect_stdout``: rich's (standard output printed above the bar; false where it is a file).
    Opened while another bar draws, its tasks are rows of that one while it is open (``extra`` and
    ``redirect_stdout`` are then the other's)."""
    disable = disable or no_progress()
    if not disable and _LIVE:
        # one display at a time: two drew over each other, and a bar opened inside another that drew nothing
        # hid minutes of work (a training bar standing still while each epoch's dev split was scored)
        return _Rows(_LIVE[-1])
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        EtaColumn(),
    ]
    if extra:
        columns.append(_FieldsColumn(extra))
    console = Console(stderr=True)
    if not console.is_terminal:  # a log file or pipe: at rich's 80 columns a long bar's counts and rate were cut ("150000/150…")
        console.width = max(console.width, NON_TERMINAL_WIDTH)
    return LoggedProgress(
        *columns,
        console=console,
        disable=disable,
        transient=False,
        redirect_stdout=redirect_stdout,
    )


@contextmanager
def working(description: str, *, unit: str = "it", disable: bool = False) -> Iterator[Callable[[int], None]]:
    """A bar for work that counts its items only at the end (a big file parsed in several passes): it
    shows what runs and for how long; the function it yields says how many items were done, for the
    bar's last count and rate."""
    with progress(disable=disable) as bar:
        task = bar.add_task(description, total=None, unit=unit)
        yield lambda n: bar.update(task, total=n, completed=n)


class _FieldsColumn(TextColumn):
    """``TextColumn`` of a task field (``loss {task.fields[loss]}``): empty for a row without it (a bar
    opened inside a training bar)."""

    def render(self, task) -> Text:
        try:
            return super().render(task)
        except KeyError:
            return Text("")


class _Rows:
    """A bar opened while ``outer`` draws: its tasks are rows of ``outer`` until it is closed."""

    disable = False

    def __init__(self, outer: "LoggedProgress"):
        self._outer, self._ids = outer, []

    def __enter__(self) -> "_Rows":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        pass

    def stop(self) -> None:
        for task_id in self._ids:
            try:
                self._outer.remove_task(task_id)
            except KeyError:
                pass
        self._ids.clear()

    @property
    def tasks(self) -> list:
        return [t for t in self._outer.tasks if t.id in self._ids]

    def add_task(self, description: str, **kwargs):
        task_id = self._outer.add_task(description, **kwargs)
        self._ids.append(task_id)
        return task_id

    def update(self, task_id, **kwargs) -> None:
        self._outer.update(task_id, **kwargs)

    def advance(self, task_id, advance: float = 1) -> None:
        self._outer.advance(task_id, advance)


NON_TERMINAL_WIDTH = 200  # the columns of a bar written to a file or pipe: room for every field, none padded
LOG_EVERY_S = 30.0  # a bar written to a file or pipe: one plain line per running task this often


class LoggedProgress(Progress):
    """rich's Progress, plus, where standard error is no terminal (a log file, ``nohup``), a plain
    line per running task every ``LOG_EVERY_S`` seconds: rich draws such a bar only when it ends,
    and an hour of training would show nothing until then."""

    def __init__(self, *columns, **kwargs):
        super().__init__(*columns, **kwargs)
        self._logged_at = time.monotonic()

    def start(self) -> None:
        super().start()
        if not self.disable and self not in _LIVE:
            _LIVE.append(self)

    def stop(self) -> None:
        try:
            super().stop()
        finally:  # (a bar left counted as drawing turned every later one into rows of it)
            if self in _LIVE:
                _LIVE.remove(self)

    def update(self, task_id, **kwargs) -> None:
        super().update(task_id, **kwargs)
        self._log_lines()

    def advance(self, task_id, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._log_lines()

    def _log_lines(self) -> None:
        if self.disable or self.console.is_terminal or time.monotonic() - self._logged_at < LOG_EVERY_S:
            return
        self._logged_at = time.monotonic()
        for task in self.tasks:
            if task.visible and not task.finished:
                parts = [c.render(task).plain for c in self.columns if isinstance(c, ProgressColumn) and not isinstance(c, BarColumn)]
                self.console.print(" ".join(p for p in parts if p), markup=False, highlight=False, soft_wrap=True)
