"""Rich progress bars for long work: rate and ETA on standard error, so standard output stays clean."""

from __future__ import annotations

import os

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


class RateColumn(ProgressColumn):
    """Items per second, with the unit a task names in its ``unit`` field."""

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        unit = task.fields.get("unit", "it")
        return Text("-" if speed is None else f"{speed:,.1f} {unit}/s", style="progress.data.speed")


def progress(*, extra: str = "", disable: bool = False) -> Progress:
    """A progress bar: description, bar, done/total, rate, elapsed, ETA and an optional extra field."""
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    ]
    if extra:
        columns.append(TextColumn(extra))
    return Progress(
        *columns,
        console=Console(stderr=True),
        disable=disable or bool(os.environ.get("KD_NO_PROGRESS")),
        transient=False,
    )
