"""A classical second opinion: out-of-fold probabilities of TF-IDF (character 1-3-grams) + logistic
regression, the model of the B3 peer baseline. Joined to the teacher's probabilities it makes wrong-
label detection more robust, at the cost of seconds on a CPU."""

from __future__ import annotations

import numpy as np

from .folds import stratified_folds


def oof_probs(texts: list[str], labels: np.ndarray, *, num_classes: int, folds: int = 5, seed: int = 0) -> np.ndarray:
    """``(N, num_classes)`` probabilities, each row from a model that did not train on that row."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    labels = np.asarray(labels)
    fold_of = stratified_folds(labels, folds, seed=seed)
    out = np.zeros((len(texts), num_classes), dtype=np.float64)
    for k in range(folds):
        train, held = fold_of != k, fold_of == k
        vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=2)
        x = vec.fit_transform([t for t, m in zip(texts, train) if m])
        clf = LogisticRegression(max_iter=1000).fit(x, labels[train])
        probs = clf.predict_proba(vec.transform([t for t, m in zip(texts, held) if m]))
        out[np.ix_(held, clf.classes_)] = probs
    return out
