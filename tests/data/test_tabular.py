"""Diabetes builder: prepares offline from scikit-learn's copy, fixed disjoint split."""

import numpy as np

from jaxdl.data import sources
from jaxdl.data.tabular import load_diabetes_table, split_indices


def test_split_is_fixed_disjoint_and_complete():
    a, b = split_indices(), split_indices()
    np.testing.assert_array_equal(a["train"], b["train"])
    assert len(a["train"]) == 354 and len(a["test"]) == 88
    assert np.array_equal(np.sort(np.concatenate([a["train"], a["test"]])), np.arange(442))


def test_prepares_without_download_and_reads_back_the_table(tmp_path):
    builder = sources.prepare("diabetes", data_dir=str(tmp_path))
    train = sources.load_arrays(builder, "train")
    test = sources.load_arrays(builder, "test")
    x, y = load_diabetes_table()
    rows = split_indices()
    assert train["features"].shape == (354, 10) and train["features"].dtype == np.float32
    np.testing.assert_allclose(train["features"], x[rows["train"]], rtol=1e-6)
    np.testing.assert_allclose(test["target"], y[rows["test"]], rtol=1e-6)
