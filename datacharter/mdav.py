"""MDAV micro-aggregation (Domingo-Ferrer & Mateo-Sanz, IEEE TKDE 2002; Domingo-Ferrer & Torra 2005).

Partitions n records into groups of at least k (and fewer than 2k) records that are close to each
other, so each group's centroid can be published in place of its members: a "typical profile" that
no single record can be recovered from. Deterministic: ties go to the lower index, so the same
records in the same order always give the same groups.

The classic algorithm: while at least 3k records remain, take the record r farthest from the
centroid of the remaining ones and the record s farthest from r; each forms a group with its k-1
nearest remaining records. With 2k..3k-1 left, one more group around the farthest record; the rest
(k..2k-1) is the last group. Fewer than k records in all: no group can be formed.
"""

from __future__ import annotations

import numpy as np


def mdav(x: np.ndarray, k: int) -> np.ndarray:
    """Group labels (0..g-1) for the rows of ``x`` (n x d, finite); -1 for all when n < k."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    labels = np.full(n, -1, dtype=np.int64)
    if k < 1:
        raise ValueError("k must be at least 1")
    if n < k:
        return labels
    remaining = np.arange(n)
    group = 0

    def take_around(i: int) -> None:
        nonlocal remaining, group
        d = ((x[remaining] - x[i]) ** 2).sum(axis=1)
        nearest = remaining[np.argsort(d, kind="stable")[:k]]  # includes i itself (distance 0)
        labels[nearest] = group
        group += 1
        remaining = remaining[labels[remaining] < 0]

    def farthest_from(point: np.ndarray) -> int:
        d = ((x[remaining] - point) ** 2).sum(axis=1)
        return int(remaining[int(np.argmax(d))])

    while len(remaining) >= 3 * k:
        r = farthest_from(x[remaining].mean(axis=0))
        s = farthest_from(x[r])
        take_around(r)
        if labels[s] < 0:
            take_around(s)
    if len(remaining) >= 2 * k:
        take_around(farthest_from(x[remaining].mean(axis=0)))
    if len(remaining):
        labels[remaining] = group
    return labels
