"""STIDE: n-gram database and mismatch rates on hand-made traces."""

import numpy as np
import pytest

from jaxdl.baselines.stide import Stide, ngrams


def test_ngrams_slide_and_pad_short_traces():
    np.testing.assert_array_equal(ngrams(np.array([1, 2, 3, 4]), 3), [[1, 2, 3], [2, 3, 4]])
    np.testing.assert_array_equal(ngrams(np.array([1, 2]), 3), [[1, 2, -1]])


def test_mismatch_rate_counts_unseen_windows():
    stide = Stide(n=3).fit([np.array([1, 2, 3, 4, 5]), np.array([9, 9, 9])])
    # [1,2,3] [2,3,4] seen; [3,4,9] [4,9,9] unseen; [9,9,9] seen -> 2 of 5 windows unseen
    scores = stide.score([np.array([1, 2, 3, 4, 9, 9, 9]), np.array([3, 4, 5]), np.array([7, 7, 7, 7])])
    np.testing.assert_allclose(scores, [2 / 5, 0.0, 1.0])


def test_windows_are_compared_whole_not_elementwise():
    stide = Stide(n=2).fit([np.array([1, 2]), np.array([3, 4])])
    np.testing.assert_allclose(stide.score([np.array([1, 4]), np.array([3, 4])]), [1.0, 0.0])


def test_score_before_fit_is_refused():
    with pytest.raises(RuntimeError, match="before fit"):
        Stide().score([np.array([1, 2, 3])])
