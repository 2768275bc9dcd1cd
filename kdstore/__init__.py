"""kd: turn a slow, accurate text classifier into a fast one, and fix wrong labels on the way.

The library does the work; ``commands/`` is a thin click CLI over it. The names below load on first
use, so ``kdstore.serving`` (ONNX serving) imports without SQLAlchemy or torch.
"""

from __future__ import annotations

import importlib

from .errors import KdError

__version__ = "0.1.0"
__all__ = ["KdError", "SampleSet", "Store", "resolve_run_id", "stage_scope"]
_LAZY = {"SampleSet": "store", "Store": "store", "resolve_run_id": "names", "stage_scope": "runs"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'kdstore' has no attribute {name!r}")
