"""kdstore.noise: wrong-label detection on a real (small) problem with real cleanlab calls.

The problem: three Gaussian blobs (600 points, 2-D), labels corrupted by cleanlab's own noise
generation (a noise matrix of trace 2.4, i.e. about 20 % of the labels moved to another class),
out-of-fold probabilities from 5-fold cross-validated LogisticRegression. Measured with the default
rule: 110 flagged, precision 1.00, recall 0.93 of the 118 injected flips; the thresholds below keep
a margin.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from cleanlab.benchmarking.noise_generation import generate_noise_matrix_from_trace, generate_noisy_labels
from cleanlab.count import num_label_issues
from cleanlab.filter import find_label_issues
from sklearn.datasets import make_blobs
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.naive_bayes import GaussianNB

from kdstore.errors import KdError
from kdstore.noise import (
    METHODS,
    ranked_keep,
    cleanlab_issues,
    detect,
    disagreement,
    estimate_issue_count,
    quality_scores,
    answer_rates,
    class_warnings,
    fold_warnings,
    reliability_warnings,
    temperature_scale,
    validate,
)

SEED = 0


@pytest.fixture(scope="module")
def problem():
    X, true = make_blobs(n_samples=600, centers=[(0, 0), (6, 0), (3, 5)], cluster_std=1.0, random_state=SEED)
    noise_matrix = generate_noise_matrix_from_trace(
        3, 2.4, py=np.bincount(true) / len(true), valid_noise_matrix=True, seed=SEED
    )
    state = np.random.get_state()  # generate_noisy_labels draws from the global NumPy generator
    try:
        np.random.seed(SEED)
        given = generate_noisy_labels(true, noise_matrix)
    finally:
        np.random.set_state(state)
    cv = StratifiedKFold(5, shuffle=True, random_state=SEED)
    probs = cross_val_predict(LogisticRegression(max_iter=1000), X, given, cv=cv, method="predict_proba")
    votes = cross_val_predict(GaussianNB(), X, given, cv=cv)
    return {"true": true, "given": given, "flip": given != true, "probs": probs, "votes": votes}


def _precision_recall(mask, flip):
    tp = int((mask & flip).sum())
    return tp / max(int(mask.sum()), 1), tp / int(flip.sum())


def test_default_rule_finds_most_injected_flips(problem):
    flip = problem["flip"]
    assert 100 <= flip.sum() <= 140  # the noise really was injected
    det = detect(problem["given"], problem["probs"])
    precision, recall = _precision_recall(np.asarray(det.flagged), flip)
    assert recall >= 0.85, recall
    assert precision >= 0.9, precision
    union = detect(problem["given"], problem["probs"], combine="union")
    precision, recall = _precision_recall(np.asarray(union.flagged), flip)
    assert recall >= 0.95 and precision >= 0.85, (precision, recall)


def test_suggested_is_the_argmax_for_flagged_and_recovers_the_true_label(problem):
    given, probs, true = problem["given"], problem["probs"], problem["true"]
    det = detect(given, probs)
    flagged = np.asarray(det.flagged)
    np.testing.assert_array_equal(det.suggested[flagged], probs.argmax(axis=1)[flagged])
    assert (det.suggested[flagged] != given[flagged]).all()
    hit = flagged & problem["flip"]
    assert (det.suggested[hit] == true[hit]).mean() >= 0.95
    agree = probs.argmax(axis=1) == given
    np.testing.assert_array_equal(det.suggested[agree], given[agree])  # no better label: keep the given one


def test_scores_are_in_unit_interval_and_rank_flagged_first(problem):
    det = detect(problem["given"], problem["probs"])
    flagged = np.asarray(det.flagged)
    assert det.score.dtype == np.float64 and np.isfinite(det.score).all()
    assert det.score.min() >= 0.0 and det.score.max() <= 1.0
    assert det.score[flagged].mean() > det.score[~flagged].mean() + 0.3
    # "ranked" keeps the top of the candidates: no unflagged candidate scores above a flagged sample
    candidates = np.zeros_like(flagged)
    for mask in det.masks.values():
        candidates |= mask
    assert det.score[flagged].min() >= det.score[candidates & ~flagged].max(initial=0.0)
    order = det.ranked_indices()
    assert set(order.tolist()) == set(np.flatnonzero(flagged).tolist())
    assert (np.diff(det.score[order]) <= 0).all()
    assert det.num_issues >= flagged.sum()  # the cut is the estimated count (or all candidates)


def test_detection_is_deterministic_and_read_only(problem):
    a = detect(problem["given"], problem["probs"], extra_votes=[problem["votes"]])
    b = detect(problem["given"], problem["probs"], extra_votes=[problem["votes"]])
    for field in ("flagged", "score", "suggested", "methods", "margin"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.masks.keys() == b.masks.keys() and a.num_issues == b.num_issues and a.temperatures == b.temperatures
    for m in a.masks:
        np.testing.assert_array_equal(a.masks[m], b.masks[m])
    with pytest.raises(ValueError):
        a.flagged[0] = not a.flagged[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.combine = "union"  # type: ignore[misc]
    with pytest.raises(TypeError):
        a.masks["cleanlab"] = a.flagged  # type: ignore[index]


def test_methods_column_matches_the_masks(problem):
    det = detect(problem["given"], problem["probs"], methods=("cleanlab", "disagree", "ensemble"),
                 extra_votes=[problem["votes"]])
    assert list(det.masks) == ["cleanlab", "disagree", "ensemble"]
    for i in range(len(det.flagged)):
        names = det.methods[i].split(",") if det.methods[i] else []
        assert names == [m for m in METHODS if det.masks[m][i]]
        if det.flagged[i]:
            assert names  # a flagged sample always says who flagged it


def test_combine_rules_relate_as_sets(problem):
    given, probs = problem["given"], problem["probs"]
    kw = dict(methods=("cleanlab", "disagree", "ensemble"), extra_votes=[problem["votes"]])
    union = np.asarray(detect(given, probs, combine="union", **kw).flagged)
    inter = np.asarray(detect(given, probs, combine="intersection", **kw).flagged)
    major = detect(given, probs, combine="majority", **kw)
    majority = np.asarray(major.flagged)
    assert (inter <= majority).all() and (majority <= union).all()
    hits = sum(m.astype(int) for m in major.masks.values())
    np.testing.assert_array_equal(majority, hits >= 2)
    two = detect(given, probs, combine="majority")  # two methods: more than half = both
    np.testing.assert_array_equal(two.flagged, detect(given, probs, combine="intersection").flagged)


def test_cleanlab_issues_and_quality_scores_are_cleanlab(problem):
    given, probs = problem["given"], problem["probs"]
    for fb in ("prune_by_noise_rate", "confident_learning"):
        expected = find_label_issues(given, probs, filter_by=fb, n_jobs=1)
        np.testing.assert_array_equal(cleanlab_issues(given, probs, filter_by=fb), expected)
    half = cleanlab_issues(given, probs, frac_noise=0.5)
    assert half.sum() < cleanlab_issues(given, probs).sum()
    sc = quality_scores(given, probs)
    np.testing.assert_allclose(sc, probs[np.arange(len(given)), given])
    for method in ("normalized_margin", "confidence_weighted_entropy"):
        q = quality_scores(given, probs, method=method)
        assert q.min() >= 0.0 and q.max() <= 1.0
    low = num_label_issues(given, probs, estimation_method="off_diagonal")
    high = num_label_issues(given, probs, estimation_method="off_diagonal_calibrated")
    assert estimate_issue_count(given, probs, method="off_diagonal") == low
    assert min(low, high) <= estimate_issue_count(given, probs) <= max(low, high)


def test_confidence_weighted_entropy_ranks_a_sure_wrong_label_above_a_coin_toss():
    """cleanlab clips p(given) and the entropy ratio at 1e-6, so that a label the model is sure is
    wrong scored as nearly right and one it is sure is right as nearly wrong; elsewhere it is cleanlab's."""
    from cleanlab.rank import get_label_quality_scores

    p_given = np.array([0.4, 1e-2, 1e-5, 1e-7, 1e-9, 0.0, 1 - 1e-9, 1e-3])
    probs = np.stack([p_given, 1 - p_given], axis=1)
    given = np.zeros(len(p_given), dtype=int)
    given[-1] = 1  # (both classes given: p(1) = 0.999)
    score = 1 - quality_scores(given, probs, method="confidence_weighted_entropy")
    assert np.all(np.diff(score[:6]) > 0) and score[5] == 1.0  # surer the label is wrong: higher
    assert score[6] < 1e-6 and score[7] < score[0]  # sure it is right: near 0
    usual = slice(0, 3)  # p(given) and the ratio above 1e-6: cleanlab's own figures
    np.testing.assert_allclose(
        score[usual], 1 - get_label_quality_scores(given, probs, method="confidence_weighted_entropy")[usual], rtol=1e-9
    )
    # the ranked cut, cleanlab uncalibrated: the sure flips are kept, not the coin tosses
    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 100)
    p = rng.uniform(0.97, 0.999, 200)
    flips, tosses = np.arange(0, 20, 2), np.arange(21, 60, 2)
    p[flips], p[tosses] = 10 ** rng.uniform(-9, -7, 10), rng.uniform(0.3, 0.49, 20)
    pp = np.zeros((200, 2))
    pp[np.arange(200), y], pp[np.arange(200), 1 - y] = p, 1 - p
    found = detect(y, pp, quality_method="confidence_weighted_entropy", calibrate=False)
    assert found.flagged[flips].all() and found.flagged.sum() == 10


def test_calibration_makes_the_rule_independent_of_confidence_scale(problem):
    given, probs = problem["given"], problem["probs"]
    sharp = probs**4
    sharp /= sharp.sum(axis=1, keepdims=True)
    _, t = temperature_scale(given, probs)
    _, t_sharp = temperature_scale(given, sharp)
    assert t_sharp == pytest.approx(4 * t, rel=1e-3)
    a, b = detect(given, probs), detect(given, sharp)
    np.testing.assert_array_equal(a.flagged, b.flagged)
    assert a.num_issues == b.num_issues
    # without calibration, cleanlab's count moves with the confidence scale
    assert detect(given, sharp, calibrate=False).temperatures == ()


def test_extra_votes_join_the_ensemble(problem):
    given, probs, flip = problem["given"], problem["probs"], problem["flip"]
    det = detect(given, probs, extra_votes=[problem["votes"]])
    precision, recall = _precision_recall(np.asarray(det.flagged), flip)
    assert recall >= 0.85 and precision >= 0.9, (precision, recall)
    soft = detect(given, probs, extra_votes=[np.eye(3)[problem["votes"]] * 0.9 + 0.1 / 3])
    assert len(soft.temperatures) == 2


def test_disagreement_margins_on_a_hand_made_example():
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.4, 0.4, 0.2]])
    labels = np.array([0, 2, 1])
    mask, margin = disagreement(labels, probs)
    np.testing.assert_allclose(margin, [0.0, 0.2, 0.0])
    np.testing.assert_array_equal(mask, [False, True, False])  # a tie with the given label is no disagreement
    mask, _ = disagreement(labels, probs, min_margin=0.25)
    assert not mask.any()


def test_ensemble_is_a_strict_majority_of_extra_members():
    probs = np.array([[0.6, 0.4], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    labels = np.array([0, 0, 1, 1])
    votes = [np.array([1, 0, 1, 1]), np.array([1, 1, 1, 1]), np.array([0, 0, 1, 0])]
    det = detect(labels, probs, methods=("ensemble",), combine="union", extra_votes=votes, calibrate=False)
    np.testing.assert_array_equal(det.masks["ensemble"], [True, False, False, False])
    np.testing.assert_array_equal(det.methods, ["ensemble", "", "", ""])
    old = detect(labels, probs, methods=("votes",), combine="union", extra_votes=votes, calibrate=False)
    np.testing.assert_array_equal(old.masks["ensemble"], det.masks["ensemble"])  # "votes": its old name


def test_frac_noise_scales_the_ranked_cut_once(problem):
    given, probs = problem["given"], problem["probs"]
    for methods in (("cleanlab",), ("cleanlab", "disagree")):
        full = detect(given, probs, methods=methods)
        half = detect(given, probs, methods=methods, frac_noise=0.5)
        keep = ranked_keep(0.5, full.num_issues)
        assert half.num_issues == full.num_issues and 0 < keep < full.flagged.sum()
        assert half.flagged.sum() == keep
        # the same candidates, cut at half the estimated count: the top half of the full ranking
        np.testing.assert_array_equal(half.masks["cleanlab"], full.masks["cleanlab"])
        np.testing.assert_array_equal(half.ranked_indices(), full.ranked_indices()[:keep])
    # half up: 0.5 of 5 keeps 3, 0.3 of 5 keeps 2 (Python's round() would keep 2 and 2)
    assert [ranked_keep(f, 5) for f in (0.1, 0.3, 0.5, 0.7, 0.9, 1.0)] == [1, 2, 3, 4, 5, 5]
    # the other rules pass frac_noise to cleanlab, once
    union = detect(given, probs, methods=("cleanlab",), combine="union", frac_noise=0.5)
    np.testing.assert_array_equal(union.flagged, cleanlab_issues(given, probs, frac_noise=0.5))
    # a filter cleanlab does not scale by frac_noise is refused rather than flagging as many as 1.0 would,
    # except under "ranked", which cuts its own list
    with pytest.raises(KdError, match="no effect with filter_by low_self_confidence"):
        cleanlab_issues(given, probs, filter_by="low_self_confidence", frac_noise=0.5)
    ranked = detect(given, probs, methods=("cleanlab",), filter_by="low_self_confidence", frac_noise=0.5)
    assert ranked.flagged.sum() <= detect(given, probs, methods=("cleanlab",), filter_by="low_self_confidence").flagged.sum()


def test_frac_noise_is_refused_under_union_beside_disagree_whose_flags_hold_cleanlabs(problem):
    """`--combine union --frac-noise 0.2` with the default methods (cleanlab, disagree) flagged exactly
    as many labels as 1.0: cleanlab flags only labels the model's argmax disputes, every one of them a
    disagreement, so the union was every disagreement whatever cleanlab kept."""
    given, probs = problem["given"], problem["probs"]
    for filter_by in ("prune_by_noise_rate", "prune_by_class", "both"):
        union = detect(given, probs, methods=("cleanlab", "disagree"), combine="union", filter_by=filter_by)
        assert not (union.masks["cleanlab"] & ~union.masks["disagree"]).any()
        np.testing.assert_array_equal(union.flagged, union.masks["disagree"])
        with pytest.raises(KdError, match="frac_noise 0.5 has no effect with combine 'union' and the disagree method"):
            detect(given, probs, methods=("cleanlab", "disagree"), combine="union", filter_by=filter_by, frac_noise=0.5)
    # where disagree judges other probabilities than cleanlab's (a margin, hard votes), the union does cut
    margin = detect(given, probs, methods=("cleanlab", "disagree"), combine="union", min_margin=0.3, frac_noise=0.5)
    assert margin.masks["cleanlab"].any()
    # where it does cut: cleanlab alone, the other rules, and "ranked"
    assert detect(given, probs, methods=("cleanlab",), combine="union", frac_noise=0.5).flagged.sum() < union.flagged.sum()
    for combine in ("intersection", "majority", "ranked"):
        half = detect(given, probs, methods=("cleanlab", "disagree"), combine=combine, frac_noise=0.5)
        assert half.flagged.sum() < detect(given, probs, methods=("cleanlab", "disagree"), combine=combine).flagged.sum()


def test_ranked_keep_rounds_an_exact_half_up_whatever_its_binary_product():
    # 0.58 * 25 is 14.4999... in binary: it kept 14 of an exact 14.5
    cases = [(0.58, 25, 15), (0.7, 45, 32), (0.29, 50, 15), (0.35, 90, 32), (0.57, 150, 86)]
    assert [ranked_keep(f, n) for f, n, _ in cases] == [want for _, _, want in cases]
    from fractions import Fraction

    for n in range(0, 120):
        for hundredths in range(1, 101):
            want = int(Fraction(hundredths, 100) * n + Fraction(1, 2))  # floor of the exact value + 1/2
            assert ranked_keep(hundredths / 100, n) == want, (hundredths, n)


@pytest.mark.parametrize(
    "labels, probs, message",
    [
        ([0, 1], [0.5, 0.5], "2-D"),
        ([0, 1], [[1.0], [1.0]], "at least 2 classes"),
        ([0, 1], [[2.0, -1.0], [0.5, 0.5]], "not logits"),
        ([0, 1], [[0.5, 0.4], [0.5, 0.5]], r"rows must sum to 1.*row 0 sums to 0.9"),
        ([0, 1], [[np.nan, 0.5], [0.5, 0.5]], "non-finite"),
        ([0, 1, 1], [[0.5, 0.5], [0.5, 0.5]], "3 labels but 2 pred_probs rows"),
        ([0, 2], [[0.5, 0.5], [0.5, 0.5]], r"class ids 0\.\.1"),
        ([0.0, 1.0], [[0.5, 0.5], [0.5, 0.5]], "integer class ids"),
        ([1, 1], [[0.5, 0.5], [0.5, 0.5]], r"class id\(s\) \[0\] have no sample"),
        ([[0, 1]], [[0.5, 0.5], [0.5, 0.5]], "1-D"),
    ],
)
def test_validation_messages(labels, probs, message):
    with pytest.raises(KdError, match=message):
        validate(np.asarray(labels), np.asarray(probs))
    with pytest.raises(KdError, match=message):
        detect(np.asarray(labels), np.asarray(probs))


def test_a_torch_tensor_or_ragged_rows_get_a_kd_error_and_one_method_may_be_a_str():
    import torch

    labels = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.2, 0.8], [0.6, 0.4]])
    with pytest.raises(KdError, match="list of arrays"):  # was read row by row: "2 predictions for 4 samples"
        detect(labels, probs, extra_votes=torch.tensor(probs))
    with pytest.raises(KdError, match="same number of columns"):
        validate([0, 1], [[0.5, 0.5], [1.0]])
    # methods="cleanlab" was read letter by letter ("unknown detection method 'c'")
    one = detect(labels, probs, methods="disagree", combine="union")
    assert list(one.masks) == ["disagree"]
    assert one.flagged.tolist() == detect(labels, probs, methods=("disagree",), combine="union").flagged.tolist()


def test_validate_returns_normalized_arrays():
    y, p = validate([0, 1], [[0.6, 0.4], [0.2, 0.8001]])
    assert y.dtype == np.int64 and p.dtype == np.float64
    np.testing.assert_allclose(p.sum(axis=1), 1.0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(combine="vote"), "unknown combine rule 'vote'"),
        (dict(methods=("cleanlab", "knn")), "unknown detection method 'knn'"),
        (dict(methods=()), "at least one detection method"),
        (dict(methods=("cleanlab", "cleanlab")), "repeat"),
        (dict(methods=("ensemble",)), "needs extra_votes"),
        (dict(filter_by="best"), "unknown filter_by 'best'"),
        (dict(quality_method="entropy"), "unknown quality method"),
        (dict(issue_count="exact"), "unknown issue count"),
        (dict(frac_noise=0.0), r"frac_noise must be in \(0, 1\]"),
        (dict(combine="union", filter_by="confident_learning", frac_noise=0.3),
         "frac_noise 0.3 has no effect with filter_by confident_learning"),
        (dict(methods=("disagree",), combine="union", frac_noise=0.5),  # it would flag every disagreement
         "frac_noise 0.5 has no effect with combine 'union' without the cleanlab method"),
        (dict(methods=("cleanlab", "disagree"), combine="union", frac_noise=0.5),  # every disagreement, as at 1.0
         "frac_noise 0.5 has no effect with combine 'union' and the disagree method"),
        (dict(min_margin=1.0), r"min_margin must be in \[0, 1\)"),
        (dict(vote_weight=0.0), "vote_weight must be a positive"),
        (dict(calibrate="no"), "calibrate must be True or False, got 'no'"),  # (a truthy string calibrated)
        (dict(extra_votes=[np.array([0, 1])]), "2 predictions for 4 samples"),
        (dict(extra_votes=[np.array([0, 1, 2, 0])]), r"class ids outside 0\.\.1"),
        (dict(extra_votes=[np.array([0.0, 1.0, 0.0, 1.0])]), "integer class ids"),
        (dict(extra_votes=[np.full((4, 3), 1 / 3)]), r"probabilities must be \(4, 2\)"),
        (dict(extra_votes=[np.array([[0.5, 0.6]] * 4)]), r"extra_votes\[0\] rows must sum to 1"),
        (dict(extra_votes=np.array([0, 1, 0, 1])), "list of arrays"),
        (dict(extra_votes=np.full((4, 2), 0.5)), "list of arrays"),  # not 4 one-row members
    ],
)
def test_option_messages(kwargs, message):
    labels = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.2, 0.8], [0.6, 0.4]])
    with pytest.raises(KdError, match=message):
        detect(labels, probs, **kwargs)


def test_fold_warnings_name_a_fold_that_learned_nothing_beside_folds_that_did():
    """A fold agreeing with its labels no better than its majority class, where another fold does better:
    named with its figures and the other folds' range; every fold weak (the teacher's, said elsewhere),
    a fold of fewer than 5 labels, or no weak fold: nothing."""
    samples = {0: 50, 1: 50, 2: 50}
    (only,) = fold_warnings({0: 0.90, 1: 0.52, 2: 0.88}, {0: 0.5, 1: 0.55, 2: 0.5}, samples)
    assert only == ("fold 1's model agrees with 52.0% of its 50 train labels out of fold, less than always answering their most "
                    "frequent class (55.0%), while the other folds agree with 88.0%-90.0%: that fold learned next to nothing, "
                    "and its flags are mostly its own errors")
    assert "while fold 0 agrees with 90.0%:" in fold_warnings({0: 0.9, 1: 0.5}, {0: 0.5, 1: 0.5}, {0: 50, 1: 50})[0]  # (--folds 2)
    assert fold_warnings({0: 0.5, 1: 0.52}, {0: 0.5, 1: 0.55}, {0: 50, 1: 50}) == []  # (every fold weak)
    assert fold_warnings({0: 0.9, 1: 0.5}, {0: 0.5, 1: 0.5}, {0: 50, 1: 4}) == []  # (4 labels: too few to judge)
    assert fold_warnings({0: 0.9, 1: 0.85}, {0: 0.5, 1: 0.5}, {0: 50, 1: 50}) == []
    with pytest.raises(KdError, match="accuracy of fold 1 must be in"):
        fold_warnings({0: 0.9, 1: 1.5}, {0: 0.5, 1: 0.5}, {0: 50, 1: 50})


def test_fold_warnings_of_two_weak_folds_name_the_folds_that_learned():
    """Two weak folds of three: fold 0's warning said "while the other folds agree with 100.0%", the other
    folds being fold 1 (100 %) and fold 2 (72.6 %, itself warned of): the figure is of the folds that learned."""
    first, second = fold_warnings({0: 0.982, 1: 1.0, 2: 0.726}, {0: 0.982, 1: 0.6, 2: 0.726}, {0: 55, 1: 54, 2: 73})
    assert first.startswith("fold 0's model") and "while fold 1 agrees with 100.0%:" in first, first
    assert second.startswith("fold 2's model") and "while fold 1 agrees with 100.0%:" in second, second
    weak_1, weak_3 = fold_warnings({0: 0.9, 1: 0.5, 2: 0.8, 3: 0.5}, dict.fromkeys(range(4), 0.55), dict.fromkeys(range(4), 50))
    assert "while folds 0 and 2 agree with 80.0%-90.0%:" in weak_1 and "while folds 0 and 2 agree" in weak_3, weak_1
    assert "other folds" not in weak_1 + weak_3


def test_fold_warnings_of_one_weak_fold_say_the_other_folds_only_where_all_learned():
    """One weak fold beside a fold too small to judge (its figure not given) or beside one other fold (--folds 2):
    "the other folds agree with 95.0%" took in the unjudged fold's 30 %, and named one fold as several."""
    beside_small, = fold_warnings({0: 0.5, 1: 0.95, 2: 0.3}, dict.fromkeys(range(3), 0.55), {0: 50, 1: 50, 2: 3})
    assert "while fold 1 agrees with 95.0%:" in beside_small, beside_small
    of_two, = fold_warnings({0: 0.5, 1: 0.95}, dict.fromkeys(range(2), 0.55), dict.fromkeys(range(2), 50))
    assert "while fold 1 agrees with 95.0%:" in of_two, of_two
    of_three, = fold_warnings({0: 0.5, 1: 0.95, 2: 0.9}, dict.fromkeys(range(3), 0.55), dict.fromkeys(range(3), 50))
    assert "while the other folds agree with 90.0%-95.0%:" in of_three, of_three


def test_answer_rates_are_each_class_recall_and_nan_for_a_class_no_label_holds():
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.6, 0.4, 0.0], [0.1, 0.9, 0.0]])
    rates = answer_rates(np.array([0, 0, 0, 1]), probs)
    np.testing.assert_allclose(rates[:2], [2 / 3, 1.0])
    assert np.isnan(rates[2])
    with pytest.raises(KdError, match="class ids in 0..2"):
        answer_rates(np.array([0, 0, 3, 1]), probs)


def test_class_warnings_of_an_ensemble_name_the_members_that_miss_the_class():
    """An ensemble's rare class flagged: the members that answer it for at most half its labels are named (not
    "the teacher", which may answer it well), their shared remedy said once with each command; where none
    misses it alone, the ensemble's average is named."""
    samples, flagged = {"ok": 60, "contact": 6}, {"contact": 6}
    members = [("the teacher", {"ok": 1.0, "contact": 0.9}, ("train a stronger teacher", "`kd teach`")),
               ("student 'a'", {"ok": 1.0, "contact": 0.0}, ("distill stronger students", "`A`")),
               ("student 'b'", {"ok": 1.0, "contact": 0.5}, ("distill stronger students", "`B`"))]
    (said,) = class_warnings(flagged, samples, members=members)
    assert said.startswith("6 of the 6 train labels of class 'contact' (100%) flagged: student 'a' and student 'b' seldom answer that "
                           "class out of fold (each member's share of them answered 'contact': the teacher 90%, student 'a' 0%, "
                           "student 'b' 50%)"), said
    assert said.endswith("or distill stronger students (`A`; `B`) first") and "kd teach" not in said, said
    members[1:] = [("student 'a'", {"ok": 1.0, "contact": 0.6}, ("distill stronger students", ""))]
    (average,) = class_warnings(flagged, samples, members=members)
    assert "flagged: the ensemble seldom answers that class out of fold (each member's share" in average, average
    (old,) = class_warnings(flagged, samples, members=[(w, {}, r) for w, _, r in members])  # a store without the figures
    assert "flagged: the ensemble seldom answers that class out of fold, so" in old, old
    with pytest.raises(KdError, match="must be in"):
        class_warnings(flagged, samples, members=[("m", {"contact": 1.5}, ("x", ""))])


def test_class_warnings_name_a_class_mostly_flagged():
    """More than half of a class's labels flagged (a class of 5 labels or more): the teacher's blind spot."""
    samples = {"ok": 60, "ad": 34, "contact": 6, "tiny": 4}
    assert class_warnings({"ok": 30, "ad": 17, "contact": 3, "tiny": 4}, samples) == []  # half is not more than half; 4 too few
    (only,) = class_warnings({"contact": 4}, samples)
    assert only.startswith("4 of the 6 train labels of class 'contact' (67%) flagged")
    assert len(class_warnings({"ok": 31, "contact": 6}, samples)) == 2
    assert class_warnings({"contact": 2}, samples, max_fraction=0.3) != []
    with pytest.raises(KdError, match="must be in"):
        class_warnings({"contact": 7}, samples)


def test_reliability_warnings_name_a_weak_model_and_an_implausible_share(problem):
    y, probs = problem["given"], problem["probs"]
    found = detect(y, probs)
    accuracy = float(np.mean(probs.argmax(1) == y))
    majority = float(np.bincount(y).max() / len(y))
    assert reliability_warnings(flagged=int(found.flagged.sum()), samples=len(y), accuracy=accuracy, majority=majority) == []
    weak = reliability_warnings(flagged=40, samples=100, accuracy=0.56, majority=0.55)
    assert len(weak) == 2
    assert "56.0%" in weak[0] and "55.0%" in weak[0] and "stronger teacher" in weak[0]
    assert weak[1].startswith("40 of 100 train labels (40%) flagged, more than 30%")
    assert "--tfidf-member" in weak[0] and "--tfidf-member" not in reliability_warnings(
        flagged=40, samples=100, accuracy=0.56, majority=0.55, tfidf_member=True)[0]  # not advised when it was used
    assert "teacher's out-of-fold predictions agree" in weak[0] and "teacher's in-sample predictions agree" in reliability_warnings(
        flagged=40, samples=100, accuracy=0.56, majority=0.55, in_sample=True)[0]  # (--allow-in-sample: not called out-of-fold)
    assert reliability_warnings(flagged=30, samples=100, accuracy=None, majority=None) == []  # 30 % is not more than 30 %
    assert len(reliability_warnings(flagged=31, samples=100, accuracy=None, majority=0.5)) == 1  # unknown accuracy: not judged
    # 182 of 600 is 30.3 %: it read "(30%) flagged, more than 30%"
    assert reliability_warnings(flagged=182, samples=600, accuracy=None, majority=None)[0].startswith(
        "182 of 600 train labels (30.3%) flagged, more than 30%")
    # a clean's planned changes (of a --min-score cut) are not the detection's flags: "182 flagged" of 214 flagged
    planned = reliability_warnings(flagged=182, samples=600, accuracy=None, majority=None, changes=True)[0]
    assert planned.startswith("182 of 600 train labels (30.3%) would change, more than 30%") and "flagged" not in planned
    assert reliability_warnings(flagged=5, samples=100, accuracy=0.55, majority=0.50) == []  # a tenth of the way to 100 %: enough
    assert reliability_warnings(flagged=2, samples=100, accuracy=0.99, majority=0.96) == []  # imbalanced: judged on the room left
    assert len(reliability_warnings(flagged=2, samples=100, accuracy=0.962, majority=0.96)) == 1
    none = reliability_warnings(flagged=0, samples=100, accuracy=0.56, majority=0.55)  # (no "most flags" of no flag)
    assert len(none) == 1 and "its flags would mostly be its own errors" in none[0] and "most flags" not in none[0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"flagged": 3, "samples": 0, "accuracy": None, "majority": None}, "samples positive"),
        ({"flagged": 11, "samples": 10, "accuracy": None, "majority": None}, "11 of 10"),
        ({"flagged": 1, "samples": 10, "accuracy": 1.5, "majority": 0.5}, "accuracy must be in"),
        ({"flagged": 1, "samples": 10, "accuracy": 0.5, "majority": 0.5, "max_fraction": 0.0}, "max_fraction"),
    ],
)
def test_reliability_warnings_validate_their_figures(kwargs, message):
    with pytest.raises(KdError, match=message):
        reliability_warnings(**kwargs)


def test_cleanlab_method_is_cleanlab_exactly_without_calibration_only():
    # under-confident binary probabilities: temperature scaling (the CLI's default) moves cleanlab's
    # per-class thresholds, so the calibrated mask may differ; uncalibrated it is find_label_issues exactly
    p1 = np.array([0.51, 0.91, 0.18, 0.9, 0.33, 0.43, 0.79, 0.42, 0.54, 0.07, 0.73, 0.53])
    probs, labels = np.stack([1 - p1, p1], axis=1), np.array([0] * 6 + [1] * 6)
    for fb in ("prune_by_noise_rate", "both", "confident_learning"):
        raw = detect(labels, probs, methods=("cleanlab",), combine="union", filter_by=fb, calibrate=False)
        np.testing.assert_array_equal(raw.flagged, find_label_issues(labels, probs, filter_by=fb))
    calibrated = detect(labels, probs, methods=("cleanlab",), combine="union")
    assert calibrated.temperatures and not np.array_equal(calibrated.flagged, find_label_issues(labels, probs))
    scaled, _ = temperature_scale(labels, probs)
    np.testing.assert_array_equal(calibrated.flagged, find_label_issues(labels, scaled))
