"""Calibrated, deterministic noise for counts of people.

Calibration and accounting come from OpenDP: the charter's budget ``epsilon_per_day`` and contribution
bound ``L`` (bins a subject may count in per day) give the scale of the discrete Laplace mechanism
whose privacy loss over a subject's L bins (L1 sensitivity L) is exactly the budget.
``opendp.measurements.make_laplace`` checks that claim; the same scale gives the accuracy bound.

The draws are ours, for one reason: a release must be reproducible. Re-running the charter job on
the same input must write the same points, or an attacker who sees two releases of one bin averages
the noise away. So each group's noise is derived from a keyed hash (HMAC-SHA256 with a secret noise
key that never leaves the data folder) of the charter version, the group and a digest of its input.
Same input: same noise. Different input (late data): fresh noise, and the re-release is a new use of
the budget, recorded by the audit. The sample is the difference of two geometric variables, which is
exactly the discrete Laplace distribution (integers only: no floating-point attack on the draw).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import math
import os
import secrets
from functools import lru_cache
from pathlib import Path

import numpy as np

KEY_BYTES = 32


@lru_cache(maxsize=64)
def laplace_scale(epsilon_per_day: float, max_bins: int, levels: int = 1) -> float:
    """The discrete Laplace scale whose loss over a subject's day is the daily budget: the subject counts in
    at most ``max_bins`` groups at the finest level, and a group that is not published passes its rows to
    the next level, where they are noised again: up to ``max_bins * levels`` unit contributions."""
    import opendp.prelude as dp

    dp.enable_features("contrib")
    scale = max_bins * levels / epsilon_per_day
    spent = spent_epsilon(scale, max_bins * levels)
    if spent > epsilon_per_day * (1 + 1e-9):
        raise ValueError(f"noise scale {scale} spends epsilon {spent} > budget {epsilon_per_day}")
    return scale


def spent_epsilon(scale: float, contributions: int) -> float:
    """Privacy loss (OpenDP's accounting) of ``contributions`` unit contributions noised at ``scale``."""
    import opendp.prelude as dp

    dp.enable_features("contrib")
    meas = dp.m.make_laplace(dp.vector_domain(dp.atom_domain(T=int)), dp.l1_distance(T=int), scale=scale)
    return float(meas.map(contributions))


def accuracy(scale: float, alpha: float = 0.05) -> float:
    """|noise| stays below this with probability 1 - alpha (OpenDP)."""
    import opendp.prelude as dp

    return float(dp.discrete_laplacian_scale_to_accuracy(scale, alpha))


@lru_cache(maxsize=64)
def threshold(k: int, scale: float, delta: float, draws: int = 1) -> float:
    """The threshold a group's noised count (the sum of ``draws`` independent draws added to its true
    count) must clear. A group of k - 1 subjects is never published (the true count is checked too), and a
    group of exactly k clears the threshold with probability at most ``delta``: so whether a group is
    published does not tell a group of k from one of k - 1, except with probability delta."""
    alpha = math.exp(-1.0 / scale)
    width = math.ceil(scale * (math.log(1 / delta) + 10) * draws) + 1
    z = np.arange(-width, width + 1)
    one = (1 - alpha) / (1 + alpha) * alpha ** np.abs(z)  # P(Z = z)
    pmf = one
    for _ in range(draws - 1):
        pmf = np.convolve(pmf, one)
    support = np.arange(len(pmf)) - (len(pmf) - 1) // 2
    tail = np.cumsum(pmf[::-1])[::-1]  # P(S >= support[i])
    m = int(support[np.argmax(tail <= delta)])
    return float(k + m)


def load_key(path: Path) -> bytes:
    """The secret noise key, created on first use (mode 0600)."""
    try:
        key = path.read_bytes()
        if len(key) == KEY_BYTES:
            return key
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(KEY_BYTES))
        f.flush()
        os.fsync(f.fileno())
    with contextlib.suppress(FileExistsError):
        os.link(tmp, path)  # the first writer wins; a concurrent one reads the winner's key
    tmp.unlink(missing_ok=True)
    return path.read_bytes()


def discrete_laplace(key: bytes, labels: list[str], scale: float) -> np.ndarray:
    """One integer draw per label, a pure function of (key, label)."""
    alpha = math.exp(-1.0 / scale)
    log_alpha = math.log(alpha)
    u = np.empty((len(labels), 2), dtype=np.float64)
    for i, label in enumerate(labels):
        d = hmac.new(key, label.encode(), hashlib.sha256).digest()
        a = int.from_bytes(d[:8], "big") >> 11  # 53 random bits
        b = int.from_bytes(d[8:16], "big") >> 11
        u[i, 0] = (a + 1) / 2.0**53  # in (0, 1]
        u[i, 1] = (b + 1) / 2.0**53
    g = np.floor(np.log(u) / log_alpha)
    return (g[:, 0] - g[:, 1]).astype(np.int64)
