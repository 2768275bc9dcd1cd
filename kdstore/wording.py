"""How kd's one-line messages list things: the first few, and how many more there are."""
from __future__ import annotations

from typing import Iterable


def first_few(items: Iterable[str], *, shown: int = 5) -> str:
    """``"'a', 'b' and 3 more"``: the first ``shown`` of ``items`` joined by commas, and a count of the
    rest (", ..." said nothing of 40 news topics' 35 left out)."""
    items = list(items)
    rest = len(items) - shown
    return ", ".join(items[:shown]) + (f" and {rest} more" if rest > 0 else "")
