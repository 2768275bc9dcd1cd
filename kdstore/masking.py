"""Masked-LM corruption (BERT's 80/10/10 rule) as a pure function of id tensors and a generator."""

from __future__ import annotations

import torch

IGNORE = -100


def mask_tokens(
    input_ids: torch.Tensor,
    special: torch.Tensor,
    *,
    mask_id: int,
    vocab_size: int,
    probability: float,
    generator: torch.Generator,
    first_regular_id: int = 0,
    groups: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(corrupted ids, labels)``: each non-special position is chosen with ``probability``; a
    chosen one becomes ``[MASK]`` 80% of the time, a random regular token 10%, itself 10%. Labels
    hold the original id at chosen positions and -100 elsewhere. A row may have none chosen: forcing
    one in each row masked a short text far more than ``probability`` (a word in each text of three
    words: a third of them, every token of a one-word text), while its longer texts got it; only a
    batch with none chosen at all gets one (its smallest draw, with its whole word), so no step is wasted.
    """
    if not 0.0 < probability < 1.0:
        raise ValueError("probability must be in (0, 1)")
    ids = input_ids.clone()
    candidates = ~special
    draw = torch.rand(ids.shape, generator=generator)
    if groups is not None:
        draw = draw.gather(1, groups.clamp(min=0))
    chosen = (draw < probability) & candidates
    if not chosen.any() and candidates.any():  # one choice in the batch: the candidate with the smallest draw (its whole word)
        row, col = divmod(int(torch.where(candidates, draw, torch.full_like(draw, 2.0)).argmin()), ids.shape[1])
        if groups is None:
            chosen[row, col] = True
        else:
            chosen[row] |= (groups[row] == groups[row, col]) & candidates[row]
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    action = torch.rand(ids.shape, generator=generator)
    to_mask = chosen & (action < 0.8)
    to_random = chosen & (action >= 0.8) & (action < 0.9)
    ids[to_mask] = mask_id
    random_ids = torch.randint(first_regular_id, vocab_size, ids.shape, generator=generator)
    ids[to_random] = random_ids[to_random]
    return ids, labels
