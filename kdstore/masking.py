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
    hold the original id at chosen positions and -100 elsewhere. At least one position per row is
    chosen when the row has any regular token, so no row is wasted.
    """
    if not 0.0 < probability < 1.0:
        raise ValueError("probability must be in (0, 1)")
    ids = input_ids.clone()
    candidates = ~special
    draw = torch.rand(ids.shape, generator=generator)
    if groups is not None:
        draw = draw.gather(1, groups.clamp(min=0))
    chosen = (draw < probability) & candidates
    # guarantee one choice per row: the candidate with the smallest draw (its whole word)
    forced = torch.where(candidates, draw, torch.full_like(draw, 2.0)).argmin(dim=1)
    has_candidate = candidates.any(dim=1)
    rows = torch.arange(ids.shape[0])[has_candidate]
    if groups is None:
        chosen[rows, forced[has_candidate]] = True
    else:
        word = groups[rows, forced[has_candidate]].unsqueeze(1)
        chosen[rows] |= (groups[rows] == word) & candidates[rows]
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    action = torch.rand(ids.shape, generator=generator)
    to_mask = chosen & (action < 0.8)
    to_random = chosen & (action >= 0.8) & (action < 0.9)
    ids[to_mask] = mask_id
    random_ids = torch.randint(first_regular_id, vocab_size, ids.shape, generator=generator)
    ids[to_random] = random_ids[to_random]
    return ids, labels
