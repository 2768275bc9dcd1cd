"""kd: turn a slow, accurate text classifier into a fast one, and fix wrong labels on the way.

The library does the work; ``commands/`` is a thin click CLI over it.
"""

from .errors import KdError
from .runs import resolve_run_id, stage_scope
from .store import SampleSet, Store

__all__ = ["KdError", "SampleSet", "Store", "resolve_run_id", "stage_scope"]
__version__ = "0.1.0"
