"""The commands kd's messages advise, built from what a stage recorded, so that one copied from a
message runs as it stands (a bare ``kd teach --run R`` is refused: ``--model`` is required, and
``--overwrite`` where the run has a teacher)."""
from __future__ import annotations

import shlex
from typing import Any


def reteach_command(run: str, config: dict[str, Any] | None, *, folds: int | None = None, listed: str | None = None,
                    next_seed: bool = False) -> str:
    """The ``kd teach`` that retrains run ``run``'s teacher (``config``: its stage's) as it was trained:
    its ``--model`` (a folder by its absolute path) and ``--folds`` (``folds``: another number, such as the 5 a detection needs), with
    ``--overwrite``; its other options are the ones ``kd report`` lists (``listed``: where they are listed, said in
    ``kd report`` itself, which told its reader to run the command they were running); ``next_seed``: with the
    ``--seed`` after its own (a training that learned nothing, tried again)."""
    config = config or {}
    k = config.get("folds") if folds is None else folds
    model = str(config.get("model") or "MODEL")
    if config.get("model_sha256") and config.get("model_path") and not model.startswith(("pretrain:", "teach:")):
        model = str(config["model_path"])  # a folder as typed (`../m`, `~/m`): its absolute path, right from any folder
    seed = f" --seed {int(config.get('seed') or 0) + 1}" if next_seed else ""
    return (f"`kd teach --run {shlex.quote(run)} --model {shlex.quote(model)}"
            f"{f' --folds {k}' if k else ''}{seed} --overwrite` (with the other options {listed or f'`kd report --run {shlex.quote(run)}` lists'} for it)")
