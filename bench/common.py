"""What every benchmark script shares: where the shared data is, and the machine and commit it ran on."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import re
import statistics
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def shared_dir() -> Path:
    """``../shared`` beside the checkout, or ``$KD_SHARED``."""
    env = os.environ.get("KD_SHARED")
    return Path(env) if env else ROOT.parent / "shared"


def report_stop(exc: BaseException) -> str:
    """Say on standard error why a table stopped and return the one-line form: a time limit's
    interrupt in one line; any other error whole, with its traceback (a kd command's output, a
    CUDA error: on a lent GPU there is no second look, and the temporary store goes with the run)."""
    import sys
    import traceback

    text = str(exc).strip()
    line = f"stopped: {type(exc).__name__}: {(text.splitlines() or [''])[0]}"
    # a kd command's refusal is on a later line ("kd pretrain ... failed:" / "Error: ..."): the one line says it
    # (lent.sh's summary and a partial JSON show this line alone)
    said = [l.removeprefix("Error: ").strip() for l in text.splitlines()[1:] if l.startswith("Error: ")]
    if said:
        line += f" {said[0]}"
    progress_line(line)
    interrupted = isinstance(exc, KeyboardInterrupt) or "KeyboardInterrupt" in text or text.endswith("Aborted!")
    if not interrupted:
        print(text, file=sys.stderr)
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
        sys.stderr.flush()
    return line


def progress_line(message: str) -> None:
    """One line on standard error as soon as a figure exists, so a run cut off by a time limit (a lent
    GPU's command limit) still leaves every figure it measured in its log."""
    import sys
    import time

    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


RECIPE_OPTIONS = {  # the teacher's recipe: the user's call (the B1 target says so), so a run stays judged
    "minutes": (float, "pre-training minutes"),
    "layers": (int, "teacher layers"),
    "hidden": (int, "teacher hidden size"),
    "pretrain_batch_size": (int, "masked-LM batch size (kd pretrain --batch-size)"),
    "pretrain_lr": (float, "masked-LM peak learning rate (kd pretrain --lr)"),
    "objective": (str, "pre-training objective, mlm or electra (kd pretrain --objective)"),
    "teacher_epochs": (int, "teacher fine-tuning epochs"),
    "teacher_lr": (float, "teacher fine-tuning learning rate"),
    "teacher_layer_decay": (float, "teacher layer-wise learning-rate decay (kd teach --layer-decay)"),
}


def recipe_words(cfg: dict) -> str:
    """The pre-training and fine-tuning recipe in a few words, for the tables' teacher line."""
    words = f"{cfg['minutes']} min {'ELECTRA' if cfg.get('objective') == 'electra' else 'MLM'}"
    if cfg.get("layer_decay", 1.0) != 1.0:
        words += f", layer decay {cfg['layer_decay']}"
    return words


RECIPE_KEYS = {"teacher_epochs": "epochs", "teacher_lr": "lr", "teacher_layer_decay": "layer_decay"}  # option -> key of the scripts' config dicts


def add_recipe_options(parser) -> None:
    """One ``--option`` per entry of ``RECIPE_OPTIONS`` (``--minutes``, ``--objective``, ...)."""
    for name, (kind, text) in RECIPE_OPTIONS.items():
        parser.add_argument("--" + name.replace("_", "-"), type=kind, help=f"override the {text}")


def apply_recipe(cfg: dict, args) -> dict:
    """``cfg`` with every recipe option given on the command line."""
    out = dict(cfg)
    for name in RECIPE_OPTIONS:
        value = getattr(args, name, None)
        if value is not None:
            out[RECIPE_KEYS.get(name, name)] = value
    return out


def meets(value: float, target: float, *, at_most: bool = False) -> bool:
    """``value >= target`` (``<=`` with ``at_most``), a tie counting as met: a mean of accuracies equal
    to the target (88.00 % from 0.8795, 0.8805 and 0.88) or a loss of exactly 0.5 pt (10 of 2,000
    texts) comes out of floating point an ulp either side of it, which must not decide a verdict."""
    if math.isclose(value, target, rel_tol=1e-9, abs_tol=1e-12):
        return True
    return value <= target if at_most else value >= target


def shown(value: float, fmt: str, target: float, *, at_most: bool = False) -> str:
    """``format(value, fmt)``, with more decimals where ``fmt``'s rounding would put the figure on the
    other side of ``target`` than its verdict (a gap of 74.7 % is not shown as "75%" beside "not met",
    nor an F1 of 0.7496 as "0.750"). ``target`` is in the units of ``value`` (``%`` formats: a fraction)."""
    m = re.fullmatch(r"(.*\.)(\d+)([f%])", fmt)
    text = format(value, fmt)
    if m is None or not math.isfinite(value):
        return text
    ok = meets(value, target, at_most=at_most)
    for digits in range(int(m.group(2)), int(m.group(2)) + 9):
        text = format(value, f"{m.group(1)}{digits}{m.group(3)}")
        number = float(text.replace(",", "").rstrip("%")) / (100 if m.group(3) == "%" else 1)
        if meets(number, target, at_most=at_most) == ok:
            break
    return text


def spread(values: list[float]) -> dict:
    """A timing's figures over its rounds: the median, with the min and max."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def commit_words(info: dict) -> str:
    """The commit a table names, and whether the tree it ran from differed from it; a merged
    result's (``info["parts"]``, see :func:`merged_source`) each run's, with the seeds it gave."""
    if info.get("parts"):
        return "; ".join(f"seed {', '.join(map(str, p.get('seeds', [])))} at "
                         + commit_words({"commit": p.get("commit"), "kdstore_dirty": p.get("dirty")}) for p in info["parts"])
    return f"`{info.get('commit')}`" + (" (with uncommitted changes)" if info.get("kdstore_dirty") else "")


def command_words(command) -> str:
    """The command a table names, in backticks; a merged result's commands (a list), each."""
    return "; ".join(f"`{c}`" for c in command) if isinstance(command, list) else f"`{command}`"


def merged_source(data: dict) -> tuple[dict, object]:
    """The machine and command a table's footer names from a ``--json`` result: for one merged from
    runs apart (``parts``), every run's commit and command, not the first run's alone."""
    if not data.get("parts"):
        return data["machine"], data.get("command", "?")
    return {**data["machine"], "parts": data["parts"]}, [p.get("command") or "?" for p in data["parts"]]


QUALITY_SEEDS = 3  # the issues' quality targets are means over 3 seeds


def too_few_seeds(seeds) -> str | None:
    """Why quality figures over ``seeds`` (a list, or ``--seeds``' "1,2") are not judged, or None."""
    n = len({str(s).strip() for s in (seeds if isinstance(seeds, (list, tuple)) else str(seeds).split(",")) if str(s).strip()})  # distinct
    return None if n >= QUALITY_SEEDS else f"{n} seed{'' if n == 1 else 's'}; the targets are means over {QUALITY_SEEDS}"


def off_protocol(args, shrinking: tuple[str, ...]) -> str | None:
    """Why a run's targets are not judged, or None: ``--quick``, any of the ``shrinking`` options
    (attribute names) given, or fewer than 3 ``--seeds``. The teacher's recipe (``RECIPE_OPTIONS``)
    is the user's call, as the B1 target says, so changing it keeps a run judged."""
    changed = [f"--{name.replace('_', '-')}" for name in shrinking if getattr(args, name, None) is not None]
    if args.quick:
        changed.insert(0, "--quick")
    reasons = [f"not the protocol: {' '.join(changed)}"] if changed else []
    if getattr(args, "seeds", None) is not None and too_few_seeds(args.seeds):
        reasons.append(too_few_seeds(args.seeds))
    return "; ".join(reasons) or None


def add_work_option(parser) -> None:
    """``--work DIR``: keep the run's stores and models (to inspect them, or fine-tune them again)."""
    parser.add_argument("--work", type=Path, help="keep the stores and models here, a new or empty folder (default: a temporary one)")


@contextlib.contextmanager
def work_dir(keep: Path | None, prefix: str):
    """The folder a run's stores and models live in: ``keep`` when given (created, and refused unless
    empty: a store ingested twice would hold every text twice), else a temporary folder removed after."""
    if keep is None:
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            yield Path(tmp)
        return
    keep = keep.resolve()  # the stores record artifact paths: absolute, so they resolve from anywhere
    keep.mkdir(parents=True, exist_ok=True)
    if any(keep.iterdir()):
        raise SystemExit(f"--work {keep}: not empty; give a new folder")
    yield keep


def store_artifacts_beside_stores() -> None:
    """Each store's models in ``kd-artifacts/STORE`` beside its file (in the work folder), not in one
    shared ``KD_ARTIFACTS``: a bench's stores (B1 and B2, one per noise level) have runs and stages of
    the same names, and kd refuses a stage whose folder holds another store's files."""
    os.environ.pop("KD_ARTIFACTS", None)


class Partial:
    """The figures of a run as they come, written to ``path`` (``--json``) after each one with
    ``"partial": true``, so a run stopped by a time limit or killed still leaves them."""

    def __init__(self, path, fields: dict):
        self.path, self.data = path, dict(fields)

    def save(self, **fields) -> None:
        import json

        self.data.update(fields)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(self.path.suffix + ".tmp")
            tmp.write_text(json.dumps({**self.data, "partial": True}, indent=2))
            tmp.replace(self.path)


def _sh(*cmd: str) -> str:
    try:
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def _commit() -> dict:
    """``{commit, kdstore_dirty}``: ``$KD_COMMIT`` where set (``bench/lent.sh --stamp``: a lent device's
    copy of the tree may hold a stale ``.git``, whose HEAD named the commit before the stamped one),
    else git's HEAD and whether kdstore/, migrations/, commands/ or bench/ (the figures' own
    arithmetic) differ from it."""
    stamped = os.environ.get("KD_COMMIT")
    if stamped:
        return {"commit": stamped.removesuffix("+changes"), "kdstore_dirty": stamped.endswith("+changes")}
    return {"commit": _sh("git", "rev-parse", "--short", "HEAD") or "unknown",
            "kdstore_dirty": bool(_sh("git", "status", "--porcelain", "--untracked-files=no", "--", "kdstore", "migrations", "commands", "bench"))}


def machine_info() -> dict:
    """CPU model, cores, memory, GPU (when torch sees one), library versions and the git commit."""
    import sqlite3

    import numpy
    import sqlalchemy

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / (1 << 20):.0f} GiB"
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "memory": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "sqlalchemy": sqlalchemy.__version__,
        "sqlite": sqlite3.sqlite_version,
        "numpy": numpy.__version__,
        **_commit(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def seed_parts(data: dict) -> list[dict]:
    """The runs a table's figures come from: ``[{seeds, commit, machine, command}]`` (one unless merged)."""
    if data.get("parts"):
        return list(data["parts"])
    machine = data.get("machine", {})
    return [{"seeds": list(data.get("seeds", [])), "commit": machine.get("commit"), "dirty": bool(machine.get("kdstore_dirty")),
             "command": data.get("command"), "machine": ", ".join(str(machine[k]) for k in ("cpu", "gpu") if machine.get(k))}]


def check_mergeable(a: dict, b: dict, keys: tuple[str, ...], what: str) -> None:
    """Refuse to merge two seed runs of ``what`` that differ in anything but their seeds."""
    for key in keys:
        if a.get(key) != b.get(key):
            raise ValueError(f"cannot merge {what} runs: {key} differs ({a.get(key)!r} vs {b.get(key)!r})")
    both = sorted(set(map(int, a.get("seeds", []))) & set(map(int, b.get("seeds", []))))
    if both:
        raise ValueError(f"cannot merge {what} runs: seed(s) {', '.join(map(str, both))} are in both")
