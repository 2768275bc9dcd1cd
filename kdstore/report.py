"""What ``kd report`` and ``kd runs`` show, gathered from the store as plain dicts."""

from __future__ import annotations

from typing import Any

from .schema import Stage
from .store import Store


def stage_summary(stage: Stage) -> dict[str, Any]:
    duration = None
    if stage.ended_at is not None:
        duration = round((stage.ended_at - stage.started_at).total_seconds(), 3)
    return {
        "name": stage.name,
        "kind": stage.kind,
        "status": stage.status,
        "error": stage.error,
        "started_at": stage.started_at.isoformat(timespec="seconds"),
        "ended_at": stage.ended_at.isoformat(timespec="seconds") if stage.ended_at else None,
        "duration_s": duration,
        "host": stage.host,
        "artifact_path": stage.artifact_path,
        "artifact_sha256": stage.artifact_sha256,
    }


def runs_overview(store: Store) -> list[dict[str, Any]]:
    return [
        {
            "run": run.uniqid,
            "created_at": run.created_at.isoformat(timespec="seconds"),
            "stages": [stage_summary(s) for s in stages],
        }
        for run, stages in store.runs()
    ]


def run_report(store: Store, run: str) -> dict[str, Any]:
    """Every stage of ``run`` with its config, final metrics ``{split: {name: value}}`` and history."""
    stages = store.stages_of(run)
    if not stages and not store.run_exists(run):
        from .errors import KdError

        raise KdError(f"no run {run!r} in {store.url}: `kd runs` lists the runs")
    out = []
    for stage in stages:
        final: dict[str, dict[str, float]] = {}
        history = []
        for m in store.metrics(stage.id, final=False):
            if m.step is None:
                final.setdefault(m.split, {})[m.name] = m.value
            else:
                history.append({"step": m.step, "split": m.split, "name": m.name, "value": m.value})
        out.append({**stage_summary(stage), "config": stage.config, "metrics": final, "history": history})
    return {"run": run, "stages": out}
