"""Fréchet distance: closed forms, identical sets, the classifier's penultimate features."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from jaxdl.evaluators import fid
from jaxdl.models.mlp import MLP
from tests.conftest import assert_close


def _spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T + 0.1 * np.eye(d)


def test_identical_sets_score_zero():
    features = np.random.default_rng(0).normal(size=(500, 16))
    assert fid.fid_from_features(features, features) == pytest.approx(0.0, abs=1e-6)


def test_shifted_gaussians_equal_the_closed_form():
    # Same covariance: d^2 = ||mu1 - mu2||^2 exactly.
    rng = np.random.default_rng(1)
    sigma = _spd(rng, 6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    assert fid.frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(np.sum((mu1 - mu2) ** 2), rel=1e-6)
    # Diagonal covariances: d^2 = ||dmu||^2 + sum (sqrt(s1) - sqrt(s2))^2.
    s1, s2 = rng.uniform(0.5, 2.0, 6), rng.uniform(0.5, 2.0, 6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    assert fid.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-6)
    # One dimension: (m1 - m2)^2 + (s1 - s2)^2 for standard deviations s.
    assert fid.frechet_distance([0.0], [[4.0]], [3.0], [[1.0]]) == pytest.approx(9.0 + 1.0)


def test_general_covariances_match_scipy_sqrtm():
    # d^2 = ||dmu||^2 + Tr S1 + Tr S2 - 2 Tr (S1 S2)^{1/2}, the root by scipy's Schur method.
    rng = np.random.default_rng(2)
    s1, s2 = _spd(rng, 5), _spd(rng, 5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(np.real(scipy.linalg.sqrtm(s1 @ s2)))
    assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_singular_covariances_stay_exact():
    # A feature that is constant in both sets (a dead unit) adds nothing.
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(1000, 3)), rng.normal(size=(1000, 3)) + 0.5
    dead = np.zeros((1000, 1))
    assert fid.fid_from_features(np.hstack([a, dead]), np.hstack([b, dead])) == pytest.approx(fid.fid_from_features(a, b), rel=1e-9)


def test_sampled_shifted_gaussians_approach_the_closed_form():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(20000, 4))
    b = rng.normal(size=(20000, 4)) * 2.0 + np.array([1.0, 0.0, 0.0, 0.0])
    # ||dmu||^2 + 4 * (2 - 1)^2
    assert fid.fid_from_features(a, b) == pytest.approx(1.0 + 4.0, rel=0.03)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="Shapes disagree"):
        fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="N >= 2"):
        fid.gaussian_statistics(np.zeros((1, 3)))


def test_penultimate_features_are_the_output_layer_input():
    model = MLP(hidden_dims=(7, 5), num_outputs=3)
    x = jax.random.uniform(jax.random.key(0), (4, 2, 3, 1))
    variables = model.init(jax.random.key(1), x, train=False)
    features, logits = fid.penultimate(model, lambda: model.apply(variables, x, train=False))
    assert features.shape == (4, 5)
    out = variables["params"]["output"]
    assert_close(features @ out["kernel"] + out["bias"], logits, atol=1e-5)
    hidden = jnp.maximum(x.reshape(4, -1) @ variables["params"]["Dense_0"]["kernel"] + variables["params"]["Dense_0"]["bias"], 0)
    hidden = jnp.maximum(hidden @ variables["params"]["Dense_1"]["kernel"] + variables["params"]["Dense_1"]["bias"], 0)
    assert_close(features, hidden, atol=1e-5)
