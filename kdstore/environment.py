"""What a training stage ran with (software versions, commit, device), recorded in its config so
that a figure can be rerun."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from .errors import KdError


def environment(device: str | None = None) -> dict[str, Any]:
    """What a training stage ran with, recorded in its config (``environment``) so that a figure can
    be rerun: kd's version and, run from a git checkout, its commit (``-dirty`` with uncommitted
    changes to tracked files); the Python, torch, transformers and numpy versions (and cleanlab's and
    jieba's, where installed); the device
    ``--device`` resolved to (``auto`` names none) and torch's CPU threads (which move the results
    by float rounding only); under torchrun, its number of processes (``processes``, ``WORLD_SIZE``:
    pretrain's masks and the float rounding of the averaged gradients depend on it)."""
    from . import __version__

    env: dict[str, Any] = {"kd": __version__, "python": platform.python_version()}
    root = Path(__file__).resolve().parent.parent
    if (root / ".git").exists():
        try:
            git = lambda *a: subprocess.run(["git", "-C", str(root), *a], capture_output=True, text=True, timeout=10)  # noqa: E731
            head = git("rev-parse", "HEAD")
            if head.returncode == 0 and head.stdout.strip():
                dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
                env["commit"] = head.stdout.strip() + ("-dirty" if dirty else "")
        except (OSError, subprocess.SubprocessError):  # no git here: the version alone
            pass
    for module in ("torch", "transformers", "numpy"):
        mod = sys.modules.get(module)
        if mod is None:
            try:
                mod = __import__(module)
            except ImportError:
                continue
        env[module] = getattr(mod, "__version__", None)
    for package in ("cleanlab", "jieba"):  # (a detection's scores and --augment pos's words: read, not imported)
        try:
            env[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    torch = sys.modules.get("torch")
    if torch is not None:
        if device is not None:
            from .torchutil import pick_device

            try:
                env["device"] = str(pick_device(device))
            except KdError:  # (the stage itself says why, in one line)
                env["device"] = device
            if env["device"].startswith("cuda") and torch.cuda.is_available():  # (--device cuda with no GPU: asking its name was a traceback)
                env["gpu"] = torch.cuda.get_device_name(0)
        env["torch_threads"] = torch.get_num_threads()
    from .distributed import Dist

    world = Dist.from_env().world
    if world > 1:  # (one process, the default, adds nothing)
        env["processes"] = world
    return env
