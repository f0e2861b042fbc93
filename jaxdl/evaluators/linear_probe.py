"""Linear probes: how well a logistic regression classifies labels from given features.

A representation is judged by the test accuracy of a linear classifier fitted
on it (here an RBM's hidden-unit probabilities beside the raw pixels, as in
Hinton's practical guide to RBMs, section 16). The classifier is scikit-learn's
`LogisticRegression` (C = 0.1, at most 200 iterations) after standardising each
feature on the training set.

Features: float [N, D] per set (`in_chunks` computes them from a jitted
function of the rows); labels int [N].
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def accuracies(
    features: Mapping[str, tuple[np.ndarray, np.ndarray]], train_labels: np.ndarray, test_labels: np.ndarray
) -> dict[str, float]:
    """Test accuracy of a linear classifier per feature set.

    Args:
      features: name -> (training features [N, D], test features [M, D]).
      train_labels: int [N]; test_labels: int [M].

    Returns:
      "eval/<name>_classifier_accuracy": the fraction of test examples classified correctly.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    metrics = {}
    for name, (x_train, x_test) in features.items():
        classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=200, C=0.1))
        classifier.fit(x_train, train_labels)
        metrics[f"eval/{name}_classifier_accuracy"] = float(classifier.score(x_test, test_labels))
    return metrics


def in_chunks(fn: Callable[[Any, jax.Array], jax.Array], params: Any, x: np.ndarray, chunk: int = 2000) -> np.ndarray:
    """Features `fn(params, rows)` of the rows of x [N, D] (as float32), `chunk` rows at a time on one device;
    the last chunk is padded so that a jitted `fn` compiles once. Returns numpy [N, ...]."""
    out = []
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk].astype(np.float32)
        padded = np.concatenate([part, np.zeros((chunk - len(part), *part.shape[1:]), np.float32)])
        out.append(np.asarray(fn(params, jnp.asarray(padded)))[: len(part)])
    return np.concatenate(out)
