"""MDAV micro-aggregation and the deterministic discrete Laplace noise: properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datacharter.mdav import mdav
from datacharter.noise import accuracy, discrete_laplace, threshold


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 120), k=st.integers(1, 12), d=st.integers(1, 5), seed=st.integers(0, 2**32 - 1))
def test_mdav_groups_have_between_k_and_2k_minus_1_records(n, k, d, seed):
    x = np.random.default_rng(seed).normal(size=(n, d))
    labels = mdav(x, k)
    if n < k:
        assert (labels == -1).all()
        return
    assert (labels >= 0).all()
    sizes = np.bincount(labels)
    assert sizes.min() >= k
    assert sizes.max() <= max(2 * k - 1, k)
    assert np.array_equal(labels, mdav(x, k))  # deterministic


def test_mdav_puts_similar_profiles_together():
    rng = np.random.default_rng(1)
    offices = rng.normal(10, 0.5, size=(10, 24))
    homes = rng.normal(2, 0.5, size=(10, 24))
    labels = mdav(np.vstack([offices, homes]), 10)
    assert len(set(labels[:10])) == 1 and len(set(labels[10:])) == 1 and labels[0] != labels[10]


def test_noise_is_a_pure_function_of_key_and_label():
    a = discrete_laplace(b"k" * 32, ["x", "y", "z"], 4.0)
    assert np.array_equal(a, discrete_laplace(b"k" * 32, ["x", "y", "z"], 4.0))
    assert a.dtype == np.int64
    other = discrete_laplace(b"q" * 32, [f"l{i}" for i in range(200)], 4.0)
    assert not np.array_equal(other, discrete_laplace(b"k" * 32, [f"l{i}" for i in range(200)], 4.0))


def test_noise_follows_the_discrete_laplace_distribution():
    scale = 4.0
    z = discrete_laplace(b"s" * 32, [f"label-{i}" for i in range(40_000)], scale)
    alpha = math.exp(-1 / scale)
    # P(Z = 0) = (1 - alpha) / (1 + alpha); E|Z| = 2 alpha / (1 - alpha^2)
    assert abs(z.mean()) < 0.1
    assert (z == 0).mean() == pytest.approx((1 - alpha) / (1 + alpha), abs=0.01)
    assert np.abs(z).mean() == pytest.approx(2 * alpha / (1 - alpha**2), rel=0.03)
    # OpenDP's 95 % accuracy bound holds empirically
    assert (np.abs(z) <= accuracy(scale, 0.05)).mean() >= 0.94


@pytest.mark.parametrize("draws", [1, 2])
def test_the_threshold_lets_a_group_of_exactly_k_through_with_probability_at_most_delta(draws):
    scale, k, delta = 4.0, 10, 1e-3
    t = threshold(k, scale, delta, draws)
    n = 200_000
    z = sum(discrete_laplace(bytes([d]) * 32, [f"g{i}" for i in range(n)], scale) for d in range(draws))
    through = ((k + z) >= t).mean()
    assert through <= delta + 3 * math.sqrt(delta / n)
    assert through >= delta / 4  # and the margin is not needlessly wide (utility)
