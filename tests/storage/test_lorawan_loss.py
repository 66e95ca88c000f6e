"""Packet loss from frame counters: gaps are losses, a counter going back starts a new session."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage.lorawan import frame_loss


@pytest.mark.parametrize(
    ("counters", "want"),
    [
        ([], (0, 0, 0)),
        ([5], (1, 1, 1)),
        ([5, 6, 7], (3, 3, 1)),
        ([5, 6, 8, 8, 9], (4, 5, 1)),  # 7 lost; 8 delivered twice counts once
        ([100, 101, 103, 0, 1, 2, 4], (7, 9, 2)),  # rejoin after 103: 102 and 3 lost, the drop is no loss
        ([10, 12, 11], (3, 3, 1)),  # a late frame fills its own gap
    ],
)
def test_frame_loss(counters, want):
    assert frame_loss(counters) == want


@given(st.integers(0, 60_000), st.lists(st.booleans(), min_size=1, max_size=300))
def test_lost_is_exactly_the_dropped_frames_between_first_and_last(start, delivered):
    """A device sending start, start+1, ...; ``delivered`` says which frames arrived."""
    counters = [start + i for i, ok in enumerate(delivered) if ok]
    received, expected, sessions = frame_loss(counters)
    if not counters:
        assert (received, expected, sessions) == (0, 0, 0)
        return
    assert received == len(counters) and sessions == 1
    assert expected - received == (counters[-1] - counters[0] + 1) - len(counters)
