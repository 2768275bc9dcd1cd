"""Small student models that read the teacher's token ids: TextCNN, BiGRU and BiLSTM.

Every student takes ``(input_ids, attention_mask)`` and returns ``(batch, classes)`` logits, and is
rebuilt from its ``StudentConfig`` alone, which is stored beside its weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .errors import KdError

KINDS = ("textcnn", "bigru", "bilstm")


@dataclass(frozen=True)
class StudentConfig:
    kind: str
    vocab_size: int
    num_classes: int
    pad_id: int = 0
    embed_dim: int = 128
    kernel_sizes: tuple[int, ...] = (2, 3, 4)
    num_filters: int = 128
    hidden: int = 128
    dropout: float = 0.3

    def validate(self, *, max_len: int) -> None:
        if self.kind not in KINDS:
            raise KdError(f"unknown student {self.kind!r}: choose from {', '.join(KINDS)}")
        if self.kind == "textcnn" and max(self.kernel_sizes) > max_len:
            raise KdError(
                f"kernel width {max(self.kernel_sizes)} is wider than --max-len {max_len}"
            )
        if min(self.embed_dim, self.hidden, self.num_filters) < 1 or not 0 <= self.dropout < 1:
            raise KdError("student sizes must be positive and --dropout in [0, 1)")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["kernel_sizes"] = list(self.kernel_sizes)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "StudentConfig":
        return cls(**{**d, "kernel_sizes": tuple(d.get("kernel_sizes", (2, 3, 4)))})


class TextCNN(nn.Module):
    """Kim (2014): parallel convolutions of several widths, max-over-time pooling, one linear layer."""

    def __init__(self, cfg: StudentConfig):
        super().__init__()
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed_dim, padding_idx=cfg.pad_id)
        self.convs = nn.ModuleList(nn.Conv1d(cfg.embed_dim, cfg.num_filters, k) for k in cfg.kernel_sizes)
        self.dropout = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.num_filters * len(cfg.kernel_sizes), cfg.num_classes)
        self.min_len = max(cfg.kernel_sizes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids).transpose(1, 2)  # (B, E, L)
        pooled = []
        for conv in self.convs:
            h = torch.relu(conv(x))  # (B, F, L - k + 1)
            k = conv.kernel_size[0]
            valid = attention_mask[:, k - 1 :].unsqueeze(1).bool()  # window ends on a real token
            valid = valid | (attention_mask.sum(1) < k).view(-1, 1, 1)  # too-short rows: keep all
            pooled.append(h.masked_fill(~valid, float("-inf")).max(dim=2).values)
        return self.out(self.dropout(torch.cat(pooled, dim=1)))


class BiRNN(nn.Module):
    """Tang et al. (2019): one bidirectional GRU/LSTM layer, final states of both directions, MLP."""

    def __init__(self, cfg: StudentConfig):
        super().__init__()
        rnn = nn.GRU if cfg.kind == "bigru" else nn.LSTM
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed_dim, padding_idx=cfg.pad_id)
        self.rnn = rnn(cfg.embed_dim, cfg.hidden, batch_first=True, bidirectional=True)
        self.mlp = nn.Sequential(
            nn.Dropout(cfg.dropout), nn.Linear(2 * cfg.hidden, cfg.hidden), nn.ReLU(),
            nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, cfg.num_classes),
        )
        self.min_len = 1

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        lengths = attention_mask.sum(1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(
            self.embed(input_ids), lengths, batch_first=True, enforce_sorted=False
        )
        _, state = self.rnn(packed)
        h = state[0] if isinstance(state, tuple) else state  # (2, B, H)
        return self.mlp(torch.cat([h[0], h[1]], dim=1))


def build_student(cfg: StudentConfig) -> nn.Module:
    if cfg.kind == "textcnn":
        return TextCNN(cfg)
    if cfg.kind in ("bigru", "bilstm"):
        return BiRNN(cfg)
    raise KdError(f"unknown student {cfg.kind!r}: choose from {', '.join(KINDS)}")


def flops_per_sample(cfg: StudentConfig, length: int) -> int:
    """Multiply-adds × 2 of one forward pass over ``length`` tokens (embedding lookups are free)."""
    if cfg.kind == "textcnn":
        convs = sum(2 * cfg.embed_dim * cfg.num_filters * k * max(1, length - k + 1) for k in cfg.kernel_sizes)
        return convs + 2 * cfg.num_filters * len(cfg.kernel_sizes) * cfg.num_classes
    gates = 3 if cfg.kind == "bigru" else 4
    recurrent = 2 * gates * 2 * (cfg.embed_dim * cfg.hidden + cfg.hidden * cfg.hidden) * length
    return recurrent + 2 * (2 * cfg.hidden * cfg.hidden + cfg.hidden * cfg.num_classes)


def init_embeddings(model: nn.Module, weights: torch.Tensor) -> None:
    """Copy a teacher's token-embedding matrix into a student's embedding table (same shape)."""
    table = model.embed.weight
    if tuple(weights.shape) != tuple(table.shape):
        raise KdError(
            f"teacher embeddings are {tuple(weights.shape)}, the student's table {tuple(table.shape)}: "
            f"use --embed-dim {weights.shape[1]} with --init-embeddings teacher"
        )
    with torch.no_grad():
        table.copy_(weights)
