"""A classical second opinion: out-of-fold probabilities of TF-IDF (character 1-3-grams) + logistic
regression, the model of the B3 peer baseline. Joined to the teacher's probabilities it makes wrong-
label detection more robust, at the cost of seconds on a CPU."""

from __future__ import annotations

import numpy as np

from .folds import stratified_folds


_CACHE: dict[str, np.ndarray] = {}  # the last few results in this process (a benchmark detects 4 ways on one store)


def oof_probs(texts: list[str], labels: np.ndarray, *, num_classes: int, folds: int = 5, seed: int = 0) -> np.ndarray:
    """``(N, num_classes)`` probabilities, each row from a model that did not train on that row.

    The same texts and labels give the same probabilities: a second call in one process (another
    detector over the same store) takes them from a small cache instead of fitting five models again."""
    import hashlib

    labels = np.asarray(labels)
    if labels.shape != (len(texts),):
        raise ValueError(f"labels must be one class id per text ({len(texts)}), got shape {labels.shape}")
    if len(labels) and (labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer)):  # (floats index no column)
        raise ValueError(f"labels must be integer class ids 0..{num_classes - 1}, got dtype {labels.dtype}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must be class ids 0..{num_classes - 1}, found {labels.min()}..{labels.max()}")
    digest = hashlib.sha256("\0".join(texts).encode("utf-8"))
    digest.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    key = f"{digest.hexdigest()}:{num_classes}:{folds}:{seed}"
    if key not in _CACHE:
        if len(_CACHE) >= 4:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = _fit_oof(texts, labels, num_classes=num_classes, folds=folds, seed=seed)
    return _CACHE[key].copy()


def _fit_oof(texts: list[str], labels: np.ndarray, *, num_classes: int, folds: int, seed: int) -> np.ndarray:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from .progress import progress

    labels = np.asarray(labels)
    fold_of = stratified_folds(labels, folds, seed=seed)
    out = np.zeros((len(texts), num_classes), dtype=np.float64)
    # minutes for a few hundred thousand texts: a bar, as for every long step (it showed nothing)
    with progress(disable=len(texts) < 5000) as bar:
        task = bar.add_task("tf-idf folds", total=folds, unit="fold")
        for k in range(folds):
            train, held = fold_of != k, fold_of == k
            fold_texts = [t for t, m in zip(texts, train) if m]
            for min_df in (2, 1):  # 1: no n-gram in two of a tiny fold's texts ("After pruning, no terms remain")
                vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=min_df)
                try:
                    x = vec.fit_transform(fold_texts)
                    break
                except ValueError:
                    if min_df == 1:
                        raise
            clf = LogisticRegression(max_iter=1000).fit(x, labels[train])
            probs = clf.predict_proba(vec.transform([t for t, m in zip(texts, held) if m]))
            out[np.ix_(held, clf.classes_)] = probs
            bar.advance(task)
    return out
