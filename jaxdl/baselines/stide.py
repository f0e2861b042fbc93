"""STIDE: sequence time-delay embedding, the classical system-call anomaly detector.

Forrest, Hofmeyr, Somayaji & Longstaff 1996, "A sense of self for Unix
processes" (IEEE S&P); Warrender, Forrest & Pearlmutter 1999, "Detecting
intrusions using system calls: alternative data models" (IEEE S&P), who named
it STIDE. The normal profile is the set of every length-n window (n-gram) of
the training traces; a trace's anomaly score is the fraction of its n-grams
that are not in the profile (its mismatch rate, in [0, 1]). A trace shorter
than n is one n-gram, padded with a value that is never a call.

Window length n = 6 is the one Forrest et al. and Warrender et al. settled on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

_PAD = -1  # fills traces shorter than n; never a system-call number


def ngrams(trace: np.ndarray, n: int) -> np.ndarray:
    """The trace's length-n windows as rows: int64 [max(L - n + 1, 1), n]."""
    trace = np.asarray(trace, np.int64)
    if len(trace) < n:
        trace = np.concatenate([trace, np.full(n - len(trace), _PAD)])
    return np.lib.stride_tricks.sliding_window_view(trace, n)


def _keys(windows: np.ndarray) -> np.ndarray:
    """One void-typed key per row, so rows can be looked up as set members with numpy."""
    windows = np.ascontiguousarray(windows)
    return windows.view(np.dtype((np.void, windows.dtype.itemsize * windows.shape[1]))).ravel()


class Stide:
    """A database of normal n-grams; scores traces by their mismatch rate.

    Args:
      n: window length (6 in the literature).

    Raises:
      ValueError: n < 1.
    """

    def __init__(self, n: int = 6):
        if n < 1:
            raise ValueError(f"STIDE window length n={n} must be at least 1.")
        self.n = n
        self.database: np.ndarray | None = None

    def fit(self, traces: Iterable[np.ndarray]) -> Stide:
        """Stores every n-gram of the (normal) training traces."""
        self.database = np.unique(np.concatenate([_keys(ngrams(t, self.n)) for t in traces]))
        return self

    def score(self, traces: Sequence[np.ndarray]) -> np.ndarray:
        """float64 [K]: for each trace, the fraction of its n-grams absent from the database.

        Raises:
          RuntimeError: called before `fit`.
        """
        if self.database is None:
            raise RuntimeError("Stide.score called before fit.")
        windows = [ngrams(t, self.n) for t in traces]
        owner = np.repeat(np.arange(len(windows)), [len(w) for w in windows])
        unseen = ~np.isin(_keys(np.concatenate(windows)), self.database)  # one sorted lookup for every window
        return np.bincount(owner, weights=unseen, minlength=len(windows)) / np.bincount(owner, minlength=len(windows))
