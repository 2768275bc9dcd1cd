"""What a masked LM's loss is measured against: the loss of a model that knows no context.

Predicting every masked token by its frequency in the texts costs the entropy of the token
distribution; a masked LM at or above that has learned nothing a character count does not know. A
post-LN BERT pushed too hard collapses to exactly that (a 6 x 384 model at --lr 5e-4 and batch 256
on an H200 ended at 6.65 nats against 6.58 for frequencies alone), and a teacher fine-tuned from it
answers one class for every text. The bar is a cautious one: BERT's masking leaves 10 % of the chosen
tokens as they were, so a model that copies those and knows no context ends a little below it; only
a model that learned nothing, or lost it, stays above. Pure functions: counts and losses in, figures
and verdicts out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

MARGIN = 0.5  # nats below the frequency loss that count as having learned context (3,000 steps reach 1.5-2)
# texts seen (steps x batch) after which a loss no better than frequencies is a failed run, not a young
# one: on a CPU, 1,000 steps of 16 texts left healthy small models 0.07 nats below the bar (ELECTRA's
# generator too), where 350 steps of 256 on a GPU were 0.7 below it
NO_CONTEXT_TEXTS = 200_000


def frequency_loss(counts: Iterable[int]) -> float:
    """The cross entropy, in nats, of predicting each token by its share of ``counts`` (the entropy
    of that distribution): the masked-LM loss of a model that knows no context."""
    counts = [int(c) for c in counts]
    if any(c < 0 for c in counts):
        raise ValueError("counts must not be negative")
    total = sum(counts)
    if total == 0:
        raise ValueError("counts must hold at least one token")
    return -sum(c / total * math.log(c / total) for c in counts if c)


def collapsed(losses: list[float], baseline: float, *, margin: float = MARGIN) -> bool:
    """True when a run's windowed losses went ``margin`` below ``baseline`` and the latest is back at
    it or above: the model learned context and lost it (diverged), and more steps will not bring it back."""
    if not losses or margin <= 0:
        raise ValueError("losses must be non-empty and margin positive")
    return len(losses) >= 2 and min(losses[:-1]) <= baseline - margin and losses[-1] >= baseline


def learned_nothing(loss: float, baseline: float, *, texts_seen: int, min_texts: int | None = None) -> bool:
    """True when a finished run that saw at least ``min_texts`` texts (``NO_CONTEXT_TEXTS`` when None,
    read at the call) ends no better than ``baseline``."""
    return texts_seen >= (NO_CONTEXT_TEXTS if min_texts is None else min_texts) and loss >= baseline


def measured_loss(objective: str) -> str:
    """The loss held against the frequency bar, as messages name it: with ELECTRA, its generator's (a
    masked LM over the same vocabulary, its output layer the shared embeddings; the discriminator saved
    has no masked-LM loss of its own)."""
    return "generator's masked-LM loss (ELECTRA)" if objective == "electra" else "masked-LM loss"
