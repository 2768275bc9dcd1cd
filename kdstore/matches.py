"""Intermediate matches, one by one (TextBrewer's ``intermediate_matches``): which loss, which student
layer against which teacher layer, at what weight. ``kd distill --match KIND:S:T[:WEIGHT]`` gives one;
this module parses and checks them (strings and depths in, ``Match`` values or a one-line ``KdError``
out). The losses themselves are in ``losses``; ``distill.IntermediateMatcher`` applies them.

Layers are counted from 0, as ``--layer-map`` counts the teacher's; ``emb`` is the embedding output
(the hidden-state losses only: an embedding has no attention).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

from .errors import KdError

# the losses a match may use: those of one student layer against one teacher layer (FSP spans the
# layers between two mapped ones and MiniLM's relations are the last layer's: they keep their options)
MATCH_KINDS = ("hidden_mse", "hidden_cos", "pkd", "attention_kl", "attention_mse", "nst")
HIDDEN_KINDS = frozenset({"hidden_mse", "hidden_cos", "pkd", "nst"})  # read hidden states: `emb` allowed
PROJECTED_KINDS = frozenset({"hidden_mse", "hidden_cos", "pkd"})  # compare vectors: a projection where widths differ
EMBEDDINGS = -1  # a layer number: the embedding output
EXAMPLE = "e.g. hidden_mse:2:8 or attention_kl:1:5:0.5"


@dataclass(frozen=True)
class Match:
    kind: str
    student: int  # a student layer (0-based), or EMBEDDINGS
    teacher: int  # a teacher layer (0-based), or EMBEDDINGS
    weight: float = 1.0

    @property
    def spelled(self) -> str:
        """As ``--match`` takes it (and the stage's config records it): ``hidden_mse:emb:3:0.5``."""
        side = lambda layer: "emb" if layer == EMBEDDINGS else str(layer)  # noqa: E731
        weight = f"{self.weight:g}"  # (six digits: the shortest exact spelling where they lose some of it)
        weight = weight if float(weight) == self.weight else repr(float(self.weight))
        return f"{self.kind}:{side(self.student)}:{side(self.teacher)}:{weight}"

    @property
    def projected(self) -> bool:
        return self.kind in PROJECTED_KINDS


def parse_match(text: str) -> Match:
    """``KIND:S:T[:WEIGHT]`` as a ``Match`` (weight 1 when left out); a one-line KdError naming what is wrong."""
    parts = [p.strip() for p in str(text).split(":")]
    if len(parts) not in (3, 4):
        raise KdError(f"--match {text!r}: give KIND:STUDENT_LAYER:TEACHER_LAYER[:WEIGHT], {EXAMPLE}")
    kind = parts[0].lower().replace("-", "_")
    if kind not in MATCH_KINDS:
        raise KdError(f"--match {text!r}: unknown loss {parts[0]!r}: choose from {', '.join(MATCH_KINDS)}")
    layers = []
    emb = " (or emb)" if kind in HIDDEN_KINDS else ""  # (an attention match refuses emb: not offered)
    for side, value in (("student", parts[1]), ("teacher", parts[2])):
        if value.lower() == "emb":
            if kind not in HIDDEN_KINDS:
                raise KdError(f"--match {text!r}: {kind} compares attentions, and the embeddings have none: give a {side} layer (0, 1, ...)")
            layers.append(EMBEDDINGS)
            continue
        try:
            layer = int(value)
        except ValueError:
            raise KdError(f"--match {text!r}: the {side} layer must be a number counted from 0{emb}, got {value!r}") from None
        if layer < 0:
            raise KdError(f"--match {text!r}: the {side} layer must be counted from 0{emb}, got {layer}")
        layers.append(layer)
    weight = 1.0
    if len(parts) == 4:
        try:
            weight = float(parts[3])
        except ValueError:
            raise KdError(f"--match {text!r}: the weight must be a number, got {parts[3]!r}") from None
        if not (math.isfinite(weight) and weight > 0):
            raise KdError(f"--match {text!r}: the weight must be a finite number above 0 (a match of weight 0 teaches nothing: leave it "
                          f"out), got {parts[3]}")
    return Match(kind, layers[0], layers[1], weight)


def parse_matches(texts: Iterable[str]) -> tuple[Match, ...]:
    """Every ``--match``, in order; the same loss on the same pair of layers given twice is refused (their
    weights would add up unseen: give the one weight)."""
    matches = tuple(parse_match(t) for t in texts)
    seen: dict[tuple[str, int, int], Match] = {}
    for m in matches:
        key = (m.kind, m.student, m.teacher)
        if key in seen:
            raise KdError(f"--match {m.spelled} and --match {seen[key].spelled}: the same loss on the same layers twice: give it once, "
                          "with the weight you want")
        seen[key] = m
    return matches


def check_matches(matches: Sequence[Match], *, student_layers: int, teacher_layers: int) -> None:
    """Each match's layers exist in a student of ``student_layers`` and a teacher of ``teacher_layers``."""
    for m in matches:
        for side, layer, depth in (("student", m.student, student_layers), ("teacher", m.teacher, teacher_layers)):
            if layer >= depth:
                # (TextBrewer's hidden-state indices count the embedding output as 0: its last layer is `depth`)
                shifted = (f" (TextBrewer's hidden layer {layer}, counted from the embeddings as 0, is {layer - 1} here; its 0 is emb)"
                           if m.kind in HIDDEN_KINDS and layer == depth else "")
                emb = " (or emb)" if m.kind in HIDDEN_KINDS else ""  # (an attention match refuses emb)
                raise KdError(f"--match {m.spelled}: the {side} has no layer {layer}{shifted}: its layers are 0 to {depth - 1}{emb}")


def hidden_index(layer: int) -> int:
    """A layer's place in Hugging Face's ``hidden_states`` (the embedding output first)."""
    return layer + 1
