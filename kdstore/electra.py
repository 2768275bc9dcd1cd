"""Replaced-token detection (ELECTRA, Clark et al. 2020): a pre-training objective that learns from
every position of a text, not only the ~15 % that masked-LM predicts.

A small generator (a masked LM) fills the masked positions with tokens sampled from its own
predictions; the discriminator, the encoder kept afterwards, tells for every token whether it is the
original or a replacement. Both train together on ``generator MLM loss + weight x detection loss``
and share their embeddings. The paper (and HFL's Chinese ELECTRA models) found the discriminator
fine-tunes better than a masked LM of the same compute; on a 2-core CPU's 10 minutes kd measured the
opposite (docs/BENCHMARKS.md), so masked-LM stays ``kd pretrain``'s default and this is an option.

The discriminator is a plain ``BertModel``, so the saved directory loads exactly like a masked-LM
one (``AutoModelForSequenceClassification``), and early exit, the transformer student's layer
initialisation and export all see a BERT.
"""

from __future__ import annotations

import torch



def replace_tokens(input_ids: torch.Tensor, positions: torch.Tensor, sampled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(discriminator input, is_replaced)``.

    ``positions`` are the flat indexes (row by row) of the chosen tokens (``masked_positions`` of the
    masked-LM labels); ``sampled`` holds one generator sample per chosen position, in that order. The
    discriminator sees the original text with the chosen positions overwritten by the samples; a
    sample that happens to equal the original token counts as original, as in the paper.
    """
    if positions.numel() != sampled.numel():  # (sizes only: no wait for the device)
        raise ValueError(f"{sampled.numel()} samples for {positions.numel()} chosen positions")
    disc_input = input_ids.flatten().index_put((positions,), sampled.to(input_ids.dtype)).view_as(input_ids)
    return disc_input, disc_input != input_ids


class ReplacedTokenDetection(torch.nn.Module):
    """Generator + discriminator trained as one module (DistributedDataParallel can wrap it).

    ``forward(corrupted, attention_mask, positions, targets, input_ids, scored)`` returns ``(total
    loss, generator MLM loss, detection loss)``; ``positions`` and ``targets`` are the chosen tokens'
    flat indexes and original ids (``masked_positions``), ``scored`` the flat indexes of the positions
    the discriminator is scored on (non-special, non-padding tokens). All are found on the host, where
    the masking is done: selecting them on the GPU with a boolean mask (and asking whether any were
    chosen) made the host wait for the forward pass at every step.
    """

    def __init__(self, discriminator, generator, *, weight: float = 50.0, first_regular_id: int = 0):
        super().__init__()
        self.discriminator = discriminator  # BertModel
        self.generator = generator  # BertForMaskedLM of the same width
        self.generator.bert.embeddings = self.discriminator.embeddings  # shared token + position embeddings
        self.generator.tie_weights()  # the generator's output layer stays the shared word embeddings
        hidden = discriminator.config.hidden_size
        self.head = torch.nn.Sequential(torch.nn.Linear(hidden, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, 1))
        self.weight = weight
        # ids below this are special tokens ([PAD], [CLS], [MASK]...): never sampled as a replacement (the
        # discriminator would learn to spot a [CLS] mid-text, not a plausible wrong word), as mask_tokens'
        # random replacements are drawn from the regular ids only
        self.first_regular_id = first_regular_id

    def forward(self, corrupted, attention_mask, positions, targets, input_ids, scored):
        gen_hidden = self.generator.bert(input_ids=corrupted, attention_mask=attention_mask).last_hidden_state
        # a batch of special tokens only has nothing to predict or score: zero losses, not NaN (every
        # rank still takes its step, so torchrun's processes stay in step); numel() is a size, no wait
        if positions.numel():
            gen_logits = self.generator.cls(gen_hidden.flatten(0, 1).index_select(0, positions)).float()
            mlm_loss = torch.nn.functional.cross_entropy(gen_logits, targets)
            with torch.no_grad():  # the sample is not differentiated through (the paper's choice)
                allowed = gen_logits.clone()
                allowed[:, : self.first_regular_id] = float("-inf")
                sampled = torch.multinomial(torch.softmax(allowed, dim=-1), 1).squeeze(1)
        else:
            mlm_loss, sampled = self.generator.cls(gen_hidden[:, :1]).sum() * 0.0, targets.new_empty(0)
        disc_input, replaced = replace_tokens(input_ids, positions, sampled)
        hidden = self.discriminator(input_ids=disc_input, attention_mask=attention_mask).last_hidden_state
        if scored.numel():
            logits = self.head(hidden.flatten(0, 1).index_select(0, scored)).squeeze(-1).float()
            rtd_loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, replaced.flatten()[scored].float())
        else:
            rtd_loss = self.head(hidden[:, :1]).sum() * 0.0
        return mlm_loss + self.weight * rtd_loss, mlm_loss, rtd_loss
