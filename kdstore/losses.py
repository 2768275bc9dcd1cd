"""Distillation losses as pure functions of logits (no state, no I/O).

Conventions: ``student`` and ``teacher`` are ``(batch, classes)`` raw logits; ``labels`` holds class
ids with -1 where a sample has no gold label (unlabeled or augmented samples).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .metrics import _class_ids

SOFT_LOSSES = ("kl", "soft_ce", "mse")
TEMPERATURE_SCHEDULES = ("constant", "flsw", "cwsm")
MIN_TEMPERATURE = 0.1  # floor of a per-sample temperature, and of --temperature
MAX_TEMPERATURE = 100.0  # past it float32 loses KL x T^2 (at 1e5 the mean loss came out at -70)
MAX_TEMPERATURE_GAMMA = 100.0  # flsw's (1 - cosine) ** gamma reaches 2 ** gamma: inf in float32 past 2 ** 128, and NaN temperatures


def temperature_refusal(name: str, t: float | None) -> str | None:
    """Why option ``name``'s temperature ``t`` is refused (``None``: it is not): outside
    [MIN_TEMPERATURE, MAX_TEMPERATURE] float32 loses the soft loss (1e30 read as a diverged training,
    1e-30 as a loss of 0 that taught nothing)."""
    if t is None or MIN_TEMPERATURE <= t <= MAX_TEMPERATURE:
        return None
    return (f"{name} must be between {MIN_TEMPERATURE:g} and {MAX_TEMPERATURE:g}, got {t:g}: past them the soft loss "
            "(T\u00b2 times the KL of the softened outputs) is lost to float32 rounding; 1 to 20 is usual")


def _column(temperature: float | torch.Tensor, scale: float | None) -> tuple[float | torch.Tensor, float]:
    """``(divisor, factor)``: one temperature (a number) or one per sample (a ``(B,)`` tensor, as a
    float32 column), and the loss factor: ``scale``, else ``T²`` of the one temperature, else the
    square of the per-sample temperatures' mean (one number for the batch, see ``kl_soft``)."""
    if isinstance(temperature, torch.Tensor):
        t = temperature.detach().float().reshape(-1, 1)
        return t, float(scale) if scale is not None else float(t.mean()) ** 2
    if not temperature > 0 or math.isinf(temperature):  # 0 gives NaN, a negative one turns the targets around
        raise ValueError(f"temperature must be a positive number, got {temperature}")
    return temperature, float(scale) if scale is not None else temperature * temperature


def kl_soft(student: torch.Tensor, teacher: torch.Tensor, *, temperature: float | torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Per-sample KL(teacher_T || student_T) × T² (Hinton et al.), so gradients keep their scale.

    ``temperature``: one number, or a ``(B,)`` tensor of per-sample temperatures (``sample_temperatures``).
    The factor is one number for the whole batch (``scale``, default ``T²`` of the scheduled
    temperature): a sample given a lower temperature then gets the larger gradient (about ``1/T``),
    which is what a per-sample temperature is for; a per-sample ``T²`` would turn that around.
    A per-sample temperature makes the loss float32."""
    t, factor = _column(temperature, scale)
    log_p_s = F.log_softmax(student / t, dim=-1)
    log_p_t = F.log_softmax(teacher / t, dim=-1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=-1) * factor


def soft_cross_entropy(student: torch.Tensor, teacher: torch.Tensor, *, temperature: float | torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Per-sample cross entropy of the student against the teacher's softened distribution, × T²
    (``temperature`` and ``scale`` as in ``kl_soft``)."""
    t, factor = _column(temperature, scale)
    p_t = F.softmax(teacher / t, dim=-1)
    return -(p_t * F.log_softmax(student / t, dim=-1)).sum(dim=-1) * factor


def probability_shift(teacher: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Teacher logits with, for each labeled sample the teacher gets wrong, its top logit and the gold
    class's logit swapped (Wen et al. 2019, TextBrewer's ``probability_shift``): the soft target then
    names the gold class and keeps the teacher's shape. Rows with label -1 or a right teacher are unchanged."""
    top = teacher.argmax(dim=-1, keepdim=True)
    gold = labels.clamp(min=0).unsqueeze(-1)
    wrong = ((labels >= 0) & (top.squeeze(-1) != labels)).unsqueeze(-1)
    cols = torch.arange(teacher.shape[-1], device=teacher.device).unsqueeze(0)
    out = torch.where(wrong & (cols == gold), teacher.gather(-1, top), teacher)
    return torch.where(wrong & (cols == top), teacher.gather(-1, gold), out)


@torch.no_grad()
def temperature_weights(student: torch.Tensor, teacher: torch.Tensor, *, kind: str, gamma: float = 2.0) -> torch.Tensor:
    """The per-sample weights ``w`` (float32, ``(B,)``) behind ``sample_temperatures``:

    - ``flsw``: ``(1 - cos(student, teacher)) ** gamma``, large where the student's logits point away
      from the teacher's. Both are centred (each less its mean) first: a logit vector means the same
      shifted by a constant, and a teacher's targets are stored as raw logits (one teacher) or as
      log-probabilities (several teachers, a ``--folds`` teacher's pool), even in one batch;
      TextBrewer's cosine of raw logits gave each a different temperature. (Not the log-probabilities
      themselves: their long negative tail of unlikely classes ruled the cosine, a student opposite a
      10-class teacher scored 0.89 and every temperature stayed within 0.01 of the base);
    - ``cwsm``: ``1 / (max student probability + 1e-3)``, large where the student is unsure;
    - ``constant``: zeros.
    """
    if kind not in TEMPERATURE_SCHEDULES:
        raise ValueError(f"unknown temperature schedule {kind!r}: choose from {', '.join(TEMPERATURE_SCHEDULES)}")
    s = student.detach().float()
    if kind == "constant":
        return s.new_zeros(s.shape[0])
    if kind == "flsw":
        t = teacher.detach().float()
        s, t = s - s.mean(dim=-1, keepdim=True), t - t.mean(dim=-1, keepdim=True)
        cos = (s / (s.norm(dim=-1, keepdim=True) + 1e-4) * (t / (t.norm(dim=-1, keepdim=True) + 1e-4))).sum(dim=-1)
        return (1.0 - cos).clamp(min=0.0) ** gamma
    return 1.0 / (torch.softmax(s, dim=-1).max(dim=-1).values + 1e-3)


@torch.no_grad()
def sample_temperatures(
    student: torch.Tensor, teacher: torch.Tensor, *, base: float, kind: str, beta: float = 1.0, gamma: float = 2.0,
    mean_weight: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-sample temperatures ``(B,)`` around ``base`` (Wen et al. 2019, arXiv:1911.07471; TextBrewer's
    ``flsw`` and ``cwsm`` temperature schedulers), from logits, without gradients.

    Each sample's weight ``w`` (``temperature_weights``) gives it the temperature
    ``base + beta * (mean(w) - w)``, floored at ``MIN_TEMPERATURE``: samples with a larger ``w`` than
    the batch's mean learn from sharper targets. ``mean_weight``: the mean over the whole batch when
    this call sees only part of it (one rank's share under torchrun); default: the mean of these rows.
    """
    w = temperature_weights(student, teacher, kind=kind, gamma=gamma)
    return temperatures_from_weights(w, base=base, beta=beta, mean_weight=mean_weight)


def temperatures_from_weights(
    weights: torch.Tensor, *, base: float, beta: float = 1.0, mean_weight: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """``base + beta * (mean_weight - w)`` per sample, floored at ``MIN_TEMPERATURE`` (``mean_weight``
    defaults to the mean of ``weights``): ``sample_temperatures`` from weights already computed."""
    m = weights.mean() if mean_weight is None else mean_weight
    return (base + beta * (m - weights)).clamp(min=MIN_TEMPERATURE)


def logit_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared error on logits (Tang et al. 2019, who sum over classes; the mean is
    TextBrewer's), the teacher's centred per sample: a softmax ignores a per-sample shift, and the
    stored targets differ by one (a fold model's raw logits, the folds' averaged log-probabilities, a
    mix of teachers), which the student would otherwise be taught as signal."""
    teacher = teacher - teacher.mean(dim=-1, keepdim=True)
    return ((student - teacher) ** 2).mean(dim=-1)


def soft_loss(student: torch.Tensor, teacher: torch.Tensor, *, kind: str, temperature: float | torch.Tensor,
              scale: float | None = None) -> torch.Tensor:
    # (shapes only, no values read: a (1, K) teacher broadcast over the batch without a word)
    if student.ndim != 2 or teacher.shape != student.shape:
        raise ValueError(f"student and teacher logits must both be (batch, classes), got {tuple(student.shape)} and {tuple(teacher.shape)}")
    if isinstance(temperature, torch.Tensor) and temperature.shape != student.shape[:1]:
        raise ValueError(f"per-sample temperatures must be ({student.shape[0]},), one a row, got {tuple(temperature.shape)}")
    if kind == "kl":
        return kl_soft(student, teacher, temperature=temperature, scale=scale)
    if kind == "soft_ce":
        return soft_cross_entropy(student, teacher, temperature=temperature, scale=scale)
    if kind == "mse":
        return logit_mse(student, teacher)
    raise ValueError(f"unknown soft loss {kind!r}: choose from {', '.join(SOFT_LOSSES)}")


CLASS_WEIGHTS = ("none", "balanced")


def balanced_class_weights(labels, num_classes: int) -> torch.Tensor:
    """``n / (C x n_c)`` for each class ``c`` of the labeled rows (label >= 0), as scikit-learn's
    "balanced": a rare class's rows weigh more, and over the rows the weights average 1, so the loss
    keeps its scale. ``C`` counts the classes present; a class with no row gets weight 0 (it adds nothing)."""
    ids = _class_ids("labels", labels.cpu() if isinstance(labels, torch.Tensor) else labels)  # (a float 0.9 was class 0)
    if ids.ndim != 1:
        raise ValueError(f"labels must be a 1-D array of class ids, got shape {ids.shape}")
    labels = torch.as_tensor(ids, dtype=torch.long)
    labels = labels[labels >= 0]
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    if labels.numel() and int(labels.max()) >= num_classes:
        raise ValueError(f"labels must be below num_classes {num_classes}, got {int(labels.max())}")
    counts = torch.bincount(labels, minlength=num_classes).double()
    present = int((counts > 0).sum())
    weights = torch.zeros(num_classes, dtype=torch.double)
    if present:
        weights[counts > 0] = labels.numel() / (present * counts[counts > 0])
    return weights.float()


def weighted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross entropy, the batch's mean of each row's loss times its class's weight (``None``: plain).
    A mean over the rows, not over their weights as torch's ``weight=`` divides by: a batch's loss then
    stays comparable between batches and is a mean each torchrun rank's share weighs by its rows."""
    per_row = F.cross_entropy(logits.float(), labels, reduction="none")
    if class_weights is not None:
        per_row = per_row * class_weights.to(per_row.device)[labels]
    return per_row.mean()


def distillation_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    labels: torch.Tensor,
    *,
    alpha: float,
    temperature: float | torch.Tensor,
    kind: str = "kl",
    scale: float | None = None,
    hard_weight: float | None = None,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Batch mean of ``alpha * soft + (1 - alpha) * hard`` for labeled samples and ``soft`` alone for
    unlabeled ones (label -1): a sample without a gold label learns from the teacher only.
    ``hard_weight``: the hard loss's own weight in place of ``1 - alpha`` (TextBrewer's separate
    hard-label weight), so that the two weights may follow schedules of their own; ``alpha`` then
    weighs every sample's soft loss, an unlabeled one's too (``alpha * soft``), as TextBrewer's KD weight
    does, and may pass 1 as it may.
    ``temperature`` and ``scale``: as in ``kl_soft``. ``class_weights``: each labeled row's hard loss
    times its class's weight (``balanced_class_weights``; the soft loss is the teacher's, unweighted).
    """
    if hard_weight is None and not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if hard_weight is not None and not (0.0 <= alpha < math.inf):  # (untied: TextBrewer's kd_loss_weight, past 1 too)
        raise ValueError(f"alpha must be a non-negative number, got {alpha}")
    if hard_weight is not None and hard_weight < 0:
        raise ValueError(f"hard_weight must be non-negative, got {hard_weight}")
    if labels.shape != student.shape[:1]:  # (a (B, 1) column spread the per-row losses into a (B, B) table)
        raise ValueError(f"labels must be ({student.shape[0]},), one class id (or -1) a row, got {tuple(labels.shape)}")
    soft = soft_loss(student, teacher, kind=kind, temperature=temperature, scale=scale)
    labeled = labels >= 0
    # every row scored with its label (class 0 standing in for none) and the unlabeled rows' losses
    # set to 0: asking whether any row is labeled, or selecting the rows, made a GPU wait for the host
    gold = torch.where(labeled, labels, 0)
    hard = F.cross_entropy(student, gold, reduction="none")
    if class_weights is not None:
        hard = hard * class_weights.to(hard.device)[gold]
    hard = torch.where(labeled, hard.to(soft.dtype), 0.0)
    if hard_weight is None:  # tied: a sample without a gold label gives its whole weight to the teacher
        per_sample = torch.where(labeled, alpha * soft + (1.0 - alpha) * hard, soft)
    else:
        per_sample = alpha * soft + hard_weight * hard  # (hard is 0 where unlabeled)
    return per_sample.mean()



# intermediate-layer matching (transformer students) -------------------------------------------
def _token_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``(B, L)`` per-token values over the real tokens (``mask`` 1)."""
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp(min=1.0)


def hidden_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error of ``(B, L, D)`` hidden states over real tokens (project the student first
    when the widths differ, as TinyBERT does)."""
    return _token_mean(((student - teacher) ** 2).mean(dim=-1), mask)


def hidden_cosine(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``1 - cos`` between the student's and the teacher's ``(B, L, D)`` hidden states per token,
    averaged over real tokens (TextBrewer's ``cos`` match): the direction of each state, not its scale."""
    return _token_mean(1.0 - F.cosine_similarity(student, teacher, dim=-1, eps=1e-8), mask)


def patient_kd(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Patient KD (Sun et al. 2019): squared distance between the L2-normalised ``(B, D)`` [CLS]
    vectors of a student layer and its teacher layer, averaged over the batch."""
    s = F.normalize(student, dim=-1, eps=1e-8)
    t = F.normalize(teacher, dim=-1, eps=1e-8)
    return ((s - t) ** 2).sum(dim=-1).mean()


def attention_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Squared error between head-averaged attention distributions ``(B, H, L, L)`` over real
    (query, key) pairs (TextBrewer's ``attention_mse`` on probabilities; head counts may differ)."""
    return _pair_mse(student.mean(dim=1), teacher.mean(dim=1), mask)


def _pair_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error of two ``(B, L, L)`` token-pair matrices over the pairs of real tokens."""
    m = mask.to(student.dtype)
    pairs = m[:, :, None] * m[:, None, :]
    return (((student - teacher) ** 2) * pairs).sum() / pairs.sum().clamp(min=1.0)


def fsp(student_in: torch.Tensor, student_out: torch.Tensor, teacher_in: torch.Tensor, teacher_out: torch.Tensor,
        mask: torch.Tensor) -> torch.Tensor:
    """Flow of solution procedure (Yim et al. 2017, as TextBrewer's ``fsp``): the ``(D, D)`` matrix
    ``x_in^T x_out / L`` of the states entering and leaving a stretch of layers, over real tokens, for
    the student (projected to the teacher's width) and for the teacher stretch it stands for; the mean
    squared error between the two matrices."""
    m = mask.to(student_in.dtype)[:, :, None]
    lengths = m.sum(dim=1, keepdim=True).clamp(min=1.0)  # (B, 1, 1)

    def gram(x_in, x_out):
        return (x_in * m).transpose(1, 2) @ (x_out * m) / lengths

    g_s, g_t = gram(student_in, student_out), gram(teacher_in, teacher_out)
    return ((g_s - g_t) ** 2).mean()


def neuron_selectivity(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Neuron selectivity transfer (Huang & Wang 2017; TextBrewer's ``nst``/``mmd`` with one layer on
    each side): the ``(L, L)`` token-similarity matrix ``x x^T / D`` of a student layer against its
    teacher layer's, squared error over real token pairs. Widths may differ: no projection."""
    gram_s = student @ student.transpose(1, 2) / student.shape[-1]
    gram_t = teacher @ teacher.transpose(1, 2) / teacher.shape[-1]
    return _pair_mse(gram_s, gram_t, mask)


def _row_kl(p_teacher: torch.Tensor, log_q_student: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(p||q) per query row of ``(B, L, L)`` distributions, averaged over real query tokens."""
    p = p_teacher.clamp(min=1e-12)
    kl = (p * (p.log() - log_q_student)).sum(dim=-1)
    return _token_mean(kl, mask)


def attention_kl(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL between head-averaged attention distributions ``(B, H, L, L)``; head counts may differ."""
    s = student.mean(dim=1).clamp(min=1e-12)
    return _row_kl(teacher.mean(dim=1), s.log(), mask)


def _log_relations(queries: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor, heads: int) -> torch.Tensor:
    """``log softmax(q k^T / sqrt(d))`` of ``(B, L, D)`` vectors split into ``heads`` relation heads,
    over the real key tokens: ``(B, heads, L, L)``."""
    b, l, d = queries.shape
    if d % heads:
        raise ValueError(f"width {d} is not divisible by {heads} relation heads")
    # float32 whatever the network's precision: -1e9 fits no half type, and the KL of two softmaxes
    # over a sequence is where half precision loses most
    qh = queries.float().view(b, l, heads, d // heads).transpose(1, 2)  # (B, R, L, d)
    kh = keys.float().view(b, l, heads, d // heads).transpose(1, 2)
    scores = qh @ kh.transpose(-1, -2) / math.sqrt(d // heads)
    keep = mask[:, None, None, :].bool()
    return torch.log_softmax(scores.masked_fill(~keep, -1e9), dim=-1)  # finite: no NaN gradients


def _relations_kl(log_s: torch.Tensor, log_t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    kl = (log_t.exp() * (log_t - log_s)).sum(dim=-1)  # (B, R, L)
    return _token_mean(kl.mean(dim=1), mask)


def relation_kl(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, *, heads: int) -> torch.Tensor:
    """MiniLM's self-attention relation transfer on ``(B, L, D)`` vectors (e.g. the values of the
    last layer): each side is split into ``heads`` relation heads, ``softmax(x x^T / sqrt(d))`` is
    taken over real key tokens, and KL(teacher || student) is averaged over heads and real queries.
    Widths may differ; each must be divisible by ``heads``.
    """
    return _relations_kl(_log_relations(student, student, mask, heads), _log_relations(teacher, teacher, mask, heads), mask)


def query_key_relation_kl(
    student_q: torch.Tensor, student_k: torch.Tensor, teacher_q: torch.Tensor, teacher_k: torch.Tensor, mask: torch.Tensor, *, heads: int
) -> torch.Tensor:
    """MiniLM's attention-distribution transfer: KL between ``softmax(q k^T / sqrt(d))`` of the
    teacher's and the student's queries and keys (last layer), both split into ``heads`` relation
    heads, so the two head counts and widths may differ; averaged over heads and real queries."""
    return _relations_kl(_log_relations(student_q, student_k, mask, heads), _log_relations(teacher_q, teacher_k, mask, heads), mask)
