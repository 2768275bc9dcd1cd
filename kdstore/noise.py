"""Wrong-label detection as pure functions of the given labels and out-of-fold probabilities.

The functional core of ``kd labels detect``, cleanlab style: arrays in, arrays out, no I/O, fully
deterministic. ``labels`` are class ids ``0..K-1`` (one per sample); ``pred_probs`` is an ``(N, K)``
matrix of *out-of-fold* probabilities (each row from a model that did not train on that sample).

Detection methods, each a boolean mask:

- ``"cleanlab"``: :func:`cleanlab.filter.find_label_issues` (confident learning, ``filter_by``);
- ``"disagree"``: another class beats the given label by more than ``min_margin``;
- ``"ensemble"`` (alias ``"votes"``): a strict majority of the extra ensemble members
  (``extra_votes``) predict a class other than the given one.

Combination rules (``combine``) turn the masks into the flagged set:

- ``"ranked"`` (default): rank the samples any method flags by ``score`` and keep the top
  ``num_issues`` times ``frac_noise``, where ``num_issues`` is cleanlab's own estimate of how many
  labels are wrong (:func:`estimate_issue_count`, from the confident joint). ``frac_noise`` scales
  that count once: the ``"cleanlab"`` candidates are found with ``frac_noise=1`` under this rule
  (under the other rules it is passed to cleanlab, which scales its own count). The cut comes from the
  probabilities, never from a threshold tuned on known errors. In ``bench/noise_research.py`` it is
  within 0.01 F1 of the best rule on B3 at both noise levels for every model tried (and above the
  cleanlab default), and within 0.03 of the best rule at every model strength of a synthetic sweep,
  where each alternative fell 0.05-0.06 short somewhere;
- ``"union"``: flagged by any method; ``"intersection"``: by all; ``"majority"``: by more than half.

Extra ensemble members (``extra_votes``, e.g. the students' out-of-fold predictions) are either
``(N,)`` predicted class ids (a hard vote, counted as a one-hot row) or ``(N, K)`` probabilities.
All members are averaged, with weight 1 for ``pred_probs`` and ``vote_weight`` for each extra
member, into the ensemble probabilities that give ``score``, ``"disagree"`` and ``suggested``.
Confident learning (``"cleanlab"`` and the ``"ranked"`` count) uses only the probability members
(``pred_probs`` and any ``(N, K)`` extra), since one-hot votes would distort its per-class
confidence thresholds.

With ``calibrate=True`` (default) every probability member is first temperature-scaled to the given
labels (:func:`temperature_scale`, one scalar per member, class ranking unchanged). Confident
learning's thresholds and issue count depend on the confidence scale; after calibration they do
not, so the same rule serves an under-confident linear model and an over-confident transformer.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping, Sequence

import numpy as np

from .errors import KdError
from .metrics import below_room, versus_majority

FRAC_NOISE_FILTERS = ("prune_by_noise_rate", "prune_by_class", "both")  # those cleanlab scales by frac_noise
FILTERS = (
    "prune_by_noise_rate",
    "prune_by_class",
    "both",
    "confident_learning",
    "predicted_neq_given",
    "low_normalized_margin",
    "low_self_confidence",
)
# the filters whose flags cleanlab cuts to labels the model disagrees with (all but the low_* ones): "disagree" holds them all
DISAGREEING_FILTERS = tuple(f for f in FILTERS if not f.startswith("low_"))
QUALITY_METHODS = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")
METHODS = ("cleanlab", "disagree", "ensemble")
METHOD_ALIASES = {"votes": "ensemble"}
COMBINES = ("ranked", "union", "intersection", "majority")
DEFAULT_METHODS = ("cleanlab", "disagree")
DEFAULT_COMBINE = "ranked"
ISSUE_COUNTS = ("mean", "off_diagonal", "off_diagonal_calibrated")
MAX_PLAUSIBLE_FRACTION = 0.3  # a larger flagged share is far more often a weak model than real noise
MAX_CLASS_FRACTION = 0.5  # of one class's labels: a teacher that seldom answers that class, more often than that class mislabeled
LEAST_CLASS_SAMPLES = 5  # (a class of fewer train labels is too small a count to judge a share of)
DEFAULT_ISSUE_COUNT = "mean"
ROW_SUM_TOL = 1e-3


@dataclass(frozen=True)
class Detection:
    """The result of :func:`detect`; every array has one entry per sample and is read-only.

    - ``flagged``: bool, the samples whose given label is judged wrong;
    - ``score``: float in ``[0, 1]``, higher = more likely wrong (``1 -`` cleanlab's label quality
      of the ensemble probabilities), comparable across samples for ranking;
    - ``suggested``: int, the ensemble's most probable class, or the given label where no class is
      more probable than it;
    - ``methods``: str, the names of the methods that flag the sample joined by ``","`` in
      ``METHODS`` order (``""`` when none);
    - ``margin``: float in ``[0, 1]``, ensemble ``p(best) - p(given)`` (0 where the given label is best);
    - ``masks``: ``{method: bool array}`` for every method that ran;
    - ``num_issues``: the estimated number of wrong labels (:func:`estimate_issue_count`; the cut
      ``"ranked"`` uses, before ``frac_noise``);
    - ``combine``: the combination rule that produced ``flagged``;
    - ``temperatures``: the fitted temperature of ``pred_probs`` and of each ``(N, K)`` extra member,
      in that order (empty with ``calibrate=False``).
    """

    flagged: np.ndarray
    score: np.ndarray
    suggested: np.ndarray
    methods: np.ndarray
    margin: np.ndarray
    masks: Mapping[str, np.ndarray]
    num_issues: int
    combine: str
    temperatures: tuple[float, ...] = ()

    def ranked_indices(self) -> np.ndarray:
        """Indices of the flagged samples, highest ``score`` first (ties: lower index first)."""
        idx = np.flatnonzero(self.flagged)
        return idx[np.argsort(-self.score[idx], kind="stable")]


def validate(labels, pred_probs) -> tuple[np.ndarray, np.ndarray]:
    """Check the inputs and return them as ``(int64 labels, float64 pred_probs)``.

    ``pred_probs`` must be ``(N, K)`` with ``K >= 2``, finite, in ``[0, 1]``, rows summing to 1
    (within ``ROW_SUM_TOL``; they are renormalized exactly); ``labels`` must be ``N`` class ids in
    ``0..K-1`` with every class present (confident learning estimates a noise rate per class).
    """
    probs = _as_probs(pred_probs, "pred_probs")
    n, k = probs.shape
    y = np.asarray(labels)
    if y.ndim != 1:
        raise KdError(f"labels must be a 1-D array of class ids, got shape {y.shape}")
    if len(y) != n:
        raise KdError(f"{len(y)} labels but {n} pred_probs rows; they must be one per sample")
    if y.dtype == bool or not np.issubdtype(y.dtype, np.integer):
        raise KdError(f"labels must be integer class ids 0..{k - 1}, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= k:
        raise KdError(
            f"labels must be class ids 0..{k - 1} (pred_probs has {k} columns), found {y.min()}..{y.max()}"
        )
    missing = np.flatnonzero(np.bincount(y, minlength=k) == 0)
    if len(missing):
        raise KdError(
            f"class id(s) {missing.tolist()} have no sample with that given label; every class needs "
            "at least one to estimate its noise rate"
        )
    return y, probs


def cleanlab_issues(
    labels, pred_probs, *, filter_by: str = "prune_by_noise_rate", frac_noise: float = 1.0
) -> np.ndarray:
    """Bool mask of label issues from :func:`cleanlab.filter.find_label_issues` (single process)."""
    from cleanlab.filter import find_label_issues

    y, probs = validate(labels, pred_probs)
    _check_choice("filter_by", filter_by, FILTERS)
    _check_frac_noise(frac_noise, filter_by)
    with warnings.catch_warnings():  # (a class of one sample: said by kd as `single_sample_classes`, by name, not
        # as cleanlab's raw UserWarning naming a column index)
        warnings.filterwarnings("ignore", message="May not flag all label issues in class", category=UserWarning)
        mask = find_label_issues(y, probs, filter_by=filter_by, frac_noise=frac_noise, n_jobs=1)
    return np.asarray(mask, dtype=bool)


def single_sample_classes(labels, *, methods: Sequence[str], filter_by: str) -> np.ndarray:
    """The class ids that have exactly one given label, when the ``"cleanlab"`` method runs with a
    ``filter_by`` that prunes per class (``FRAC_NOISE_FILTERS``): cleanlab leaves such a sample's
    label unjudged (its ``min_examples_per_class``), so only the other methods can flag it."""
    methods = tuple(METHOD_ALIASES.get(m, m) for m in methods)
    if "cleanlab" not in methods or filter_by not in FRAC_NOISE_FILTERS:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.bincount(np.asarray(labels, dtype=np.int64)) == 1)


def quality_scores(labels, pred_probs, *, method: str = "self_confidence") -> np.ndarray:
    """cleanlab's label quality per sample, in ``[0, 1]``; lower = more likely mislabeled
    (``confidence_weighted_entropy``: without cleanlab's 1e-6 clipping, see :func:`_confidence_weighted_entropy`)."""
    from cleanlab.rank import get_label_quality_scores

    y, probs = validate(labels, pred_probs)
    _check_choice("quality method", method, QUALITY_METHODS)
    if method == "confidence_weighted_entropy":
        q = _confidence_weighted_entropy(y, probs)
    else:
        q = get_label_quality_scores(y, probs, method=method)
    return np.clip(np.asarray(q, dtype=np.float64), 0.0, 1.0)


def _confidence_weighted_entropy(y: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """cleanlab's ``confidence_weighted_entropy`` quality, ``log(1 + x) / x`` with ``x`` = normalized
    entropy / ``p(given)``, without cleanlab's clipping of ``p(given)`` and of ``x`` at 1e-6: that
    clipping scores a label the model is sure is wrong (``p(given)`` below 1e-6) or sure is right
    (``x`` below 1e-6) as its opposite. Identical to cleanlab elsewhere; 1 at ``x = 0``, 0 at
    ``p(given) = 0``, decreasing in ``x``."""
    from scipy.special import xlogy

    entropy = -xlogy(probs, probs).sum(axis=1) / np.log(probs.shape[1])
    given = probs[np.arange(len(y)), y]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        x = np.where(given > 0, entropy / given, np.inf)
        q = np.where(x > 0, np.log1p(x) / x, 1.0)
    return np.where(np.isfinite(x), q, 0.0)


def disagreement(labels, pred_probs, *, min_margin: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """``(mask, margin)``: ``margin = p(argmax) - p(given)`` (``>= 0``); ``mask = margin > min_margin``.

    With ``min_margin=0`` the mask is "the argmax is another class" (a tie with the given label is
    not a disagreement).
    """
    y, probs = validate(labels, pred_probs)
    if not (0.0 <= min_margin < 1.0):
        raise KdError(f"min_margin must be in [0, 1), got {min_margin}")
    return _disagree(y, probs, min_margin)


def estimate_issue_count(labels, pred_probs, *, method: str = DEFAULT_ISSUE_COUNT) -> int:
    """How many labels are wrong, from cleanlab's confident joint (:func:`cleanlab.count.num_label_issues`).

    ``"off_diagonal"`` counts only the confidently-counted off-diagonal examples (a lower bound:
    best when the model is weak, too few when it is strong); ``"off_diagonal_calibrated"`` rescales
    the confident joint to the class counts (right for a strong model, counts a weak model's own
    errors as noise); ``"mean"`` (default) is the midpoint, within about 0.03 F1 of the better of the
    two in every regime ``bench/noise_research.py`` measured, where either alone lost up to 0.06.
    """
    from cleanlab.count import num_label_issues

    y, probs = validate(labels, pred_probs)
    _check_choice("issue count", method, ISSUE_COUNTS)
    if method != "mean":
        return int(num_label_issues(y, probs, estimation_method=method))
    low = num_label_issues(y, probs, estimation_method="off_diagonal")
    high = num_label_issues(y, probs, estimation_method="off_diagonal_calibrated")
    return int(np.floor((low + high) / 2 + 0.5))


def temperature_scale(labels, pred_probs) -> tuple[np.ndarray, float]:
    """``(probs, T)``: ``pred_probs`` rescaled as ``softmax(log(p) / T)``, ``T`` fitted to the labels.

    ``T`` minimizes the negative log-likelihood of the given labels (one scalar, so the ranking of
    a sample's classes never changes). Over-confident probabilities (a fine-tuned transformer) get
    ``T > 1``, under-confident ones ``T < 1``; confident learning's per-class thresholds and its
    issue count then no longer depend on the model's confidence scale.
    """
    y, probs = validate(labels, pred_probs)
    return _temperature_fit(y, probs)


def ranked_keep(frac_noise: float, num_issues: int) -> int:
    """How many issues the ranked cut keeps: ``frac_noise * num_issues``, rounded half up (Python's
    ``round`` takes 2.5 to 2, so 0.3 and 0.5 of 5 issues would keep alike). The product is rounded to
    9 decimals first: in binary 0.58 * 25 is 14.4999..., which would keep 14 of 14.5."""
    return int(np.floor(round(frac_noise * num_issues, 9) + 0.5))


def check_options(
    *, methods: Sequence[str], combine: str, filter_by: str, quality_method: str, frac_noise: float,
    issue_count: str = DEFAULT_ISSUE_COUNT, same_members: bool = True,
) -> tuple[str, ...]:
    """``detect``'s choices checked without any data (so a caller can refuse before it starts):
    the methods with aliases resolved. ``same_members``: "disagree" judges the probabilities cleanlab
    sees (``min_margin`` 0; any extra members soft and of equal weight), so its flags hold every one
    of cleanlab's."""
    if isinstance(methods, str):  # one method by name, not its letters
        methods = (methods,)
    methods = tuple(METHOD_ALIASES.get(m, m) for m in methods)
    if not methods:
        raise KdError(f"choose at least one detection method of {', '.join(METHODS)}")
    for m in methods:
        _check_choice("detection method", m, METHODS)
    if len(set(methods)) != len(methods):
        raise KdError(f"detection methods repeat: {', '.join(methods)}")
    _check_choice("combine rule", combine, COMBINES)
    _check_choice("filter_by", filter_by, FILTERS)
    _check_choice("quality method", quality_method, QUALITY_METHODS)
    _check_choice("issue count", issue_count, ISSUE_COUNTS)
    _check_frac_noise(frac_noise, filter_by if "cleanlab" in methods and combine != "ranked" else None)
    if frac_noise < 1.0 and combine != "ranked" and "cleanlab" not in methods:  # (nothing would scale by it)
        raise KdError(f"frac_noise {frac_noise} has no effect with combine {combine!r} without the cleanlab method "
                      "(it scales cleanlab's count; or combine 'ranked', which cuts its own list)")
    if frac_noise < 1.0 and combine == "union" and "disagree" in methods and same_members:  # (cleanlab's flags are disagreements: the
        # union is every disagreement whatever cleanlab keeps)
        raise KdError(f"frac_noise {frac_noise} has no effect with combine 'union' and the disagree method (every label "
                      "cleanlab flags is a disagreement too, and the union keeps them all; or combine 'ranked', which cuts its own list)")
    return methods


def detect(
    labels,
    pred_probs,
    *,
    methods: Sequence[str] = DEFAULT_METHODS,
    combine: str = DEFAULT_COMBINE,
    filter_by: str = "prune_by_noise_rate",
    frac_noise: float = 1.0,
    quality_method: str = "self_confidence",
    min_margin: float = 0.0,
    extra_votes: Sequence[np.ndarray] | None = None,
    vote_weight: float = 1.0,
    calibrate: bool = True,
    issue_count: str = DEFAULT_ISSUE_COUNT,
) -> Detection:
    """Flag wrong labels by combining detection methods; see the module docstring for the rules."""
    y, probs = validate(labels, pred_probs)
    n, k = probs.shape
    if extra_votes is not None and getattr(extra_votes, "ndim", None) is None:
        extra_votes = list(extra_votes)  # (read twice below: a generator once)
    listed = extra_votes if isinstance(extra_votes, list) else []
    hard = any(np.ndim(v) == 1 for v in listed)  # (votes as labels: not what cleanlab sees)
    same = min_margin == 0.0 and not (listed and (hard or vote_weight != 1.0))
    methods = check_options(methods=methods, combine=combine, filter_by=filter_by, quality_method=quality_method,
                            frac_noise=frac_noise, issue_count=issue_count, same_members=same)
    if not (0.0 <= min_margin < 1.0):
        raise KdError(f"min_margin must be in [0, 1), got {min_margin}")
    if not (np.isfinite(vote_weight) and vote_weight > 0):
        raise KdError(f"vote_weight must be a positive number, got {vote_weight}")
    if not isinstance(calibrate, (bool, np.bool_)):  # (calibrate="no" is truthy: it calibrated)
        raise KdError(f"calibrate must be True or False, got {calibrate!r}")
    extras = _members(extra_votes, n, k)
    if "ensemble" in methods and not extras:
        raise KdError("the 'ensemble' method needs extra_votes (other models' predictions)")

    temperatures: list[float] = []
    if calibrate:
        probs, t = _temperature_fit(y, probs)
        temperatures.append(t)
        for j, e in enumerate(extras):
            if e.ndim == 2:
                extras[j], t = _temperature_fit(y, e)
                temperatures.append(t)
    soft = [probs] + [e for e in extras if e.ndim == 2]
    cl_probs = soft[0] if len(soft) == 1 else np.mean(soft, axis=0)
    members = [probs] + [e if e.ndim == 2 else np.eye(k)[e] for e in extras]
    weights = np.array([1.0] + [vote_weight] * len(extras))
    ens = np.tensordot(weights / weights.sum(), np.stack(members), axes=1) if extras else probs

    masks: dict[str, np.ndarray] = {}
    margin = _disagree(y, ens, 0.0)[1]
    for m in methods:
        if m == "cleanlab":
            frac = 1.0 if combine == "ranked" else frac_noise  # "ranked" applies frac_noise to its cut
            masks[m] = cleanlab_issues(y, cl_probs, filter_by=filter_by, frac_noise=frac)
        elif m == "disagree":
            masks[m] = margin > min_margin
        else:  # ensemble
            against = [_disagree(y, e if e.ndim == 2 else np.eye(k)[e], 0.0)[0] for e in extras]
            masks[m] = 2 * np.sum(against, axis=0) > len(extras)

    score = 1.0 - quality_scores(y, ens, method=quality_method)
    num_issues = estimate_issue_count(y, cl_probs, method=issue_count)
    stack = np.stack([masks[m] for m in methods])
    hits = stack.sum(axis=0)
    if combine == "union":
        flagged = hits > 0
    elif combine == "intersection":
        flagged = hits == len(methods)
    elif combine == "majority":
        flagged = 2 * hits > len(methods)
    else:  # ranked
        cand = np.flatnonzero(hits > 0)
        keep = ranked_keep(frac_noise, num_issues)
        top = cand[np.argsort(-score[cand], kind="stable")[:keep]]
        flagged = np.zeros(n, dtype=bool)
        flagged[top] = True

    best = ens.argmax(axis=1)
    suggested = np.where(ens[np.arange(n), y] >= ens[np.arange(n), best], y, best)
    order = [m for m in METHODS if m in masks]
    names = np.array([",".join(m for m in order if masks[m][i]) for i in range(n)], dtype=object)
    frozen = {m: _ro(masks[m]) for m in order}
    return Detection(
        flagged=_ro(flagged),
        score=_ro(score),
        suggested=_ro(suggested.astype(np.int64)),
        methods=_ro(names),
        margin=_ro(margin),
        masks=MappingProxyType(frozen),
        num_issues=num_issues,
        combine=combine,
        temperatures=tuple(temperatures),
    )


def reliability_warnings(
    *, flagged: int, samples: int, accuracy: float | None, majority: float | None,
    max_fraction: float = MAX_PLAUSIBLE_FRACTION, tfidf_member: bool = False, in_sample: bool = False, changes: bool = False,
    done: bool = False,
) -> list[str]:
    """Why a detection should not be trusted, one sentence each (empty when nothing is amiss).

    ``flagged`` of ``samples`` labels are flagged (or about to be changed); ``accuracy`` is how often
    the out-of-fold prediction agrees with the given label and ``majority`` the share of the most
    frequent given label (``None``: unknown, not checked). Probabilities that close less than a
    tenth of the way from always answering the majority class to a perfect score (5 points on a
    balanced binary task, 0.5 on a 95 % majority) flag mostly their own errors; more than ``max_fraction`` of the
    labels flagged is, for a corpus someone labeled with care, the sign of a weak model.
    ``tfidf_member``: the detection had the TF-IDF member already, or cannot take it (a train class of one
    sample): the advice leaves it out;
    ``in_sample``: its probabilities are of a teacher that learned these labels (``--allow-in-sample``);
    ``changes``: ``flagged`` counts the label changes a clean plans (said "would change", not "flagged");
    with ``done``, changes it has made (said "changed", once the clean is done).
    """
    if samples <= 0 or not 0 <= flagged <= samples:
        raise KdError(f"flagged must be in [0, samples] and samples positive, got {flagged} of {samples}")
    if not 0.0 < max_fraction <= 1.0:
        raise KdError(f"max_fraction must be in (0, 1], got {max_fraction}")
    for name, value in (("accuracy", accuracy), ("majority", majority)):
        if value is not None and not 0.0 <= value <= 1.0:
            raise KdError(f"{name} must be in [0, 1], got {value}")
    out = []
    if accuracy is not None and majority is not None and below_room(accuracy, majority):
        out.append(
            f"the teacher's {'in-sample' if in_sample else 'out-of-fold'} predictions agree with {accuracy:.1%} of the given labels, {versus_majority(accuracy, majority)} "
            f"always answering the most frequent class ({majority:.1%}): "
            f"{'most flags are its own errors' if flagged else 'its flags would mostly be its own errors'}; train a "
            "stronger teacher" + ("" if tfidf_member else " (or detect with --tfidf-member)") + " before cleaning"
        )
    if flagged > max_fraction * samples:
        share = f"{flagged / samples:.0%}"
        if share == f"{max_fraction:.0%}":  # (182 of 600 read "(30%) flagged, more than 30%")
            share = f"{flagged / samples:.1%}"
        verb = ("changed" if done else "would change") if changes else "flagged"
        advice = ("review them (`kd labels show`); `kd labels undo` reverts them" if changes and done
                  else "review them (`kd labels show`) or clean with --min-score")
        out.append(f"{flagged} of {samples} train labels ({share}) {verb}, more than {max_fraction:.0%}: "
                   f"far more often a weak teacher than real noise; {advice}")
    return out


def answer_rates(labels, pred_probs) -> np.ndarray:
    """``(K,)``: for each class, the share of its labels that ``pred_probs`` answers as that class (its
    argmax: a model's recall of the class, out of fold where the probabilities are), NaN for a class no
    label holds. Labels need not hold every class, unlike ``validate``'s."""
    probs = _as_probs(pred_probs, "pred_probs")
    n, k = probs.shape
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != n or y.dtype == bool or not np.issubdtype(y.dtype, np.integer) or (n and (y.min() < 0 or y.max() >= k)):
        raise KdError(f"labels must be {n} class ids in 0..{k - 1}, one per pred_probs row; got {y.dtype} of shape {y.shape}")
    held = np.bincount(y, minlength=k)
    hit = np.bincount(y, weights=(probs.argmax(axis=1) == y).astype(np.float64), minlength=k)
    return np.divide(hit, held, out=np.full(k, np.nan), where=held > 0)


def class_warnings(flagged: Mapping[str, int], samples: Mapping[str, int], *, max_fraction: float = MAX_CLASS_FRACTION,
                   least: int = LEAST_CLASS_SAMPLES, balanced: bool = False,
                   members: Sequence[tuple[str, Mapping[str, float], tuple[str, str]]] | None = None) -> list[str]:
    """One sentence for each class whose train labels are flagged more than ``max_fraction`` of the time
    (``flagged[c]`` of ``samples[c]``, classes of at least ``least`` labels): a rare class the teacher learned
    too little of is answered another class out of fold, so the detection flags most of it, its overall
    agreement and flagged share looking fine (a 3 % class is 3 % of the flags). ``balanced``: the teacher
    already trained with ``--class-weight balanced`` (the advice leaves it out).

    ``members``: an ensemble's (``--student-votes``, ``--tfidf-member``), each as ``(who, answered, remedy)``:
    its name ("the teacher", "student 'cnn' of run 'r'"), ``answer_rates`` by class name, and what would
    mend it as ``(what, how)`` ("distill stronger students", a command or ""; members of one ``what`` are
    advised once, their commands together). The sentence names the members that answer the class for at
    most ``1 - max_fraction`` of its labels, not the teacher (which may answer it well while the students never do)."""
    if not 0.0 < max_fraction <= 1.0:
        raise KdError(f"max_fraction must be in (0, 1], got {max_fraction}")
    out = []
    for name, n in samples.items():
        k = int(flagged.get(name, 0))
        if not 0 <= k <= n:
            raise KdError(f"flagged[{name!r}] must be in [0, samples], got {k} of {n}")
        if not (n >= least and k > max_fraction * n):
            continue
        head = f"{k} of the {n} train labels of class {name!r} ({k / n:.0%}) flagged: "
        if not members:
            out.append(head + "the teacher seldom answers that class out of fold (a rare class it learned too little of?), so "
                       "these flags are more likely its errors than wrong labels; review them (`kd labels export`) rather than "
                       "clean them, or train a stronger teacher" + ("" if balanced else " (`kd teach --class-weight balanced`)") + " first")
            continue
        rates = {who: answered.get(name) for who, answered, _ in members}
        if any(r is not None and not 0.0 <= r <= 1.0 for r in rates.values()):
            raise KdError(f"answer rates of class {name!r} must be in [0, 1], got {rates}")
        missing = [(who, remedy) for who, _, remedy in members if rates[who] is not None and rates[who] <= 1.0 - max_fraction]
        shares = ", ".join(f"{who} {rates[who]:.0%}" for who, _, _ in members if rates[who] is not None)
        seen = f" (each member's share of them answered {name!r}: {shares})" if shares else ""
        if missing:
            many = len(missing) > 1
            who = ", ".join(w for w, _ in missing[:-1]) + (" and " if many else "") + missing[-1][0]
            how: dict[str, list[str]] = {}
            for _, (what, command) in missing:
                how.setdefault(what, [])
                if command and command not in how[what]:
                    how[what].append(command)
            remedies = [what + (f" ({'; '.join(commands)})" if commands else "") for what, commands in how.items()]
            out.append(head + f"{who} seldom {'answer' if many else 'answers'} that class out of fold{seen}, so these flags are "
                       "more likely the ensemble's errors than wrong labels; review them (`kd labels export`) rather than clean them"
                       + (f", or {' and '.join(remedies)} first" if remedies else ""))
        else:  # (no member alone misses it: their average does)
            out.append(head + f"the ensemble seldom answers that class out of fold{seen}, so these flags are more likely "
                       "its errors than wrong labels; review them (`kd labels export`) rather than clean them")
    return out


def fold_figures(agree, labels, fold_of) -> dict[str, float]:
    """Each fold's own figures of a ``--folds`` model's out-of-fold answers: ``fold{k}/train_samples``,
    ``fold{k}/oof_accuracy`` (its share of ``agree``, answers equal to their labels) and ``fold{k}/majority_rate``
    (its most frequent label's share), for every fold ``k >= 0`` of ``fold_of`` (-1: a row no fold held out)."""
    agree, labels, fold_of = np.asarray(agree, dtype=bool), np.asarray(labels), np.asarray(fold_of)
    if not len(agree) == len(labels) == len(fold_of):
        raise KdError(f"agree, labels and fold_of must be as long, got {len(agree)}, {len(labels)} and {len(fold_of)}")
    out: dict[str, float] = {}
    for k in np.unique(fold_of[fold_of >= 0]):
        held = fold_of == k
        out.update({f"fold{k}/train_samples": int(held.sum()), f"fold{k}/oof_accuracy": float(agree[held].mean()),
                    f"fold{k}/majority_rate": float(np.bincount(labels[held]).max() / held.sum())})
    return out


def fold_warnings_of(figures: Mapping[str, float], **options) -> list[str]:
    """``fold_warnings`` of a stage's ``fold_figures`` as stored (its other figures left aside)."""
    accuracy = {int(k[len("fold"):-len("/oof_accuracy")]): v for k, v in figures.items() if re.fullmatch(r"fold\d+/oof_accuracy", k)}
    return fold_warnings(accuracy, {k: figures.get(f"fold{k}/majority_rate") for k in accuracy},
                         {k: int(figures.get(f"fold{k}/train_samples", 0)) for k in accuracy}, **options)


def fold_warnings(accuracy: Mapping[int, float], majority: Mapping[int, float], samples: Mapping[int, int], *,
                  least: int = LEAST_CLASS_SAMPLES, consequence: str = "its flags are mostly its own errors") -> list[str]:
    """One sentence for each fold of a ``--folds`` teacher whose out-of-fold predictions agree with its own
    ``samples[k]`` train labels (``accuracy[k]``) hardly more often than always answering their most frequent
    class (``majority[k]``), where some other fold does better: one fold's model that learned nothing (a
    training that stalled) gives a fifth of the labels a guess, its flags drowning the real ones while the
    overall agreement (``reliability_warnings``'s) still looks fair. Folds of fewer than ``least`` labels are
    not judged. ``consequence``: what follows (a detection's flags; for ``kd teach``, its out-of-fold logits)."""
    for k in accuracy:
        for name, value in (("accuracy", accuracy[k]), ("majority", majority.get(k))):
            if value is None or not 0.0 <= value <= 1.0:
                raise KdError(f"{name} of fold {k} must be in [0, 1], got {value}")
    judged = [k for k in sorted(accuracy) if int(samples.get(k, 0)) >= least]
    weak = [k for k in judged if below_room(accuracy[k], majority[k])]
    learned = [k for k in judged if k not in weak]
    fine = [accuracy[k] for k in learned]
    if not weak or not fine:  # (every fold weak: the teacher as a whole is, which reliability_warnings says)
        return []
    others = f"{min(fine):.1%}" if len(fine) == 1 or f"{min(fine):.1%}" == f"{max(fine):.1%}" else f"{min(fine):.1%}-{max(fine):.1%}"
    # ("the other folds" only where they are the folds that learned, more than one: not beside another weak fold or
    # one too small to judge, whose figures are not given, nor of --folds 2's one other fold)
    every_other = len(weak) == 1 and len(learned) > 1 and len(learned) == len(accuracy) - 1
    folds = ("the other folds agree" if every_other else f"fold {learned[0]} agrees" if len(learned) == 1
             else f"folds {', '.join(map(str, learned[:-1]))} and {learned[-1]} agree")
    return [f"fold {k}'s model agrees with {accuracy[k]:.1%} of its {int(samples[k])} train labels out of fold, "
            f"{versus_majority(accuracy[k], majority[k])} always answering their most frequent class ({majority[k]:.1%}), "
            f"while {folds} with {others}: that fold learned next to nothing, and {consequence}" for k in weak]


def _as_probs(pred_probs, what: str) -> np.ndarray:
    try:
        probs = np.asarray(pred_probs)
    except ValueError:  # ragged rows
        raise KdError(f"{what} must be a (samples, classes) matrix with the same number of columns in every row") from None
    if probs.ndim != 2:
        raise KdError(f"{what} must be a 2-D (samples, classes) matrix, got shape {probs.shape}")
    if not (np.issubdtype(probs.dtype, np.floating) or np.issubdtype(probs.dtype, np.integer)):
        raise KdError(f"{what} must be numeric, got dtype {probs.dtype}")
    n, k = probs.shape
    if k < 2:
        raise KdError(f"{what} has {k} column(s); label detection needs at least 2 classes")
    if n == 0:
        raise KdError(f"no samples: {what} has 0 rows")
    probs = probs.astype(np.float64)
    bad = ~np.isfinite(probs).all(axis=1)
    if bad.any():
        raise KdError(
            f"{what} has non-finite values (NaN or inf) in {int(bad.sum())} row(s), "
            f"first row {int(np.argmax(bad))}"
        )
    if probs.min() < 0 or probs.max() > 1:
        raise KdError(
            f"{what} must lie in [0, 1] (found {probs.min():.4g}..{probs.max():.4g}); "
            "pass softmax probabilities, not logits"
        )
    sums = probs.sum(axis=1)
    off = np.abs(sums - 1.0) > ROW_SUM_TOL
    if off.any():
        i = int(np.argmax(off))
        raise KdError(
            f"{what} rows must sum to 1 (±{ROW_SUM_TOL}): {int(off.sum())} row(s) do not, "
            f"first row {i} sums to {sums[i]:.6g}"
        )
    return probs / sums[:, None]


def _temperature_fit(y: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, float]:
    logp = np.log(np.clip(probs, 1e-12, 1.0))
    rows = np.arange(len(y))

    def scaled(beta: float) -> np.ndarray:
        z = logp * beta
        z -= z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    def nll(log_beta: float) -> float:
        return float(-scaled(np.exp(log_beta))[rows, y].mean())

    # The NLL is convex in the inverse temperature beta, so unimodal in log(beta): golden section.
    lo, hi = np.log(1 / 50), np.log(50.0)
    g = (np.sqrt(5.0) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(a), nll(b)
    for _ in range(60):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(b)
    beta = float(np.exp((lo + hi) / 2))
    return np.exp(scaled(beta)), 1.0 / beta


def _disagree(y: np.ndarray, probs: np.ndarray, min_margin: float) -> tuple[np.ndarray, np.ndarray]:
    margin = probs.max(axis=1) - probs[np.arange(len(y)), y]
    margin = np.clip(margin, 0.0, 1.0)
    return margin > min_margin, margin


def _members(extra_votes, n: int, k: int) -> list[np.ndarray]:
    if extra_votes is None:
        return []
    if getattr(extra_votes, "ndim", None) is not None:  # a numpy array or a torch tensor, iterated row by row otherwise
        raise KdError("extra_votes must be a list of arrays (one per model), not a single array")
    out = []
    for j, v in enumerate(extra_votes):
        a = np.asarray(v)
        if a.ndim == 1:
            if len(a) != n:
                raise KdError(f"extra_votes[{j}] has {len(a)} predictions for {n} samples")
            if a.dtype == bool or not np.issubdtype(a.dtype, np.integer):
                raise KdError(f"extra_votes[{j}] must hold integer class ids, got dtype {a.dtype}")
            if len(a) and (a.min() < 0 or a.max() >= k):
                raise KdError(f"extra_votes[{j}] has class ids outside 0..{k - 1}")
            out.append(a.astype(np.int64))
        elif a.ndim == 2:
            if a.shape != (n, k):
                raise KdError(
                    f"extra_votes[{j}] has shape {a.shape}; probabilities must be ({n}, {k})"
                )
            out.append(_as_probs(a, f"extra_votes[{j}]"))
        else:
            raise KdError(
                f"extra_votes[{j}] must be (N,) class ids or (N, K) probabilities, got shape {a.shape}"
            )
    return out


def _check_choice(what: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise KdError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")


def _check_frac_noise(frac_noise: float, filter_by: str | None = None) -> None:
    """``frac_noise`` in (0, 1]; below 1 only with a ``filter_by`` that cleanlab scales by it (the
    others flag as many labels whatever it is, with no more than a warning)."""
    if not (0.0 < frac_noise <= 1.0):
        raise KdError(f"frac_noise must be in (0, 1], got {frac_noise}")
    if frac_noise < 1.0 and filter_by is not None and filter_by not in FRAC_NOISE_FILTERS:
        raise KdError(f"frac_noise {frac_noise} has no effect with filter_by {filter_by} (cleanlab scales only "
                      f"{', '.join(FRAC_NOISE_FILTERS)}; or combine 'ranked', which cuts its own list)")


def _ro(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    a.flags.writeable = False
    return a
