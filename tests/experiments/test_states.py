"""The experiment state machine, every pair of states: legal moves change the state and log an event, the
others are refused with a clear error and change nothing. The clock is a parameter."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from experiments.db import STATES, Event, Experiment, User, open_store
from experiments.states import FINAL, IllegalTransition, allowed, transition

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

# written out here, apart from the module's table: FIT IoT-LAB's life of an experiment
LEGAL = {
    ("Waiting", "toLaunch"),
    ("Waiting", "Stopped"),
    ("Waiting", "Error"),
    ("toLaunch", "Launching"),
    ("toLaunch", "Stopped"),
    ("toLaunch", "Error"),
    ("Launching", "Running"),
    ("Launching", "Stopped"),
    ("Launching", "Error"),
    ("Running", "Finishing"),
    ("Running", "Error"),
    ("Finishing", "Terminated"),
    ("Finishing", "Stopped"),
    ("Finishing", "Error"),
}


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    s = open_store(f"sqlite:///{tmp_path_factory.mktemp('states') / 'exp.db'}")
    with s.begin() as session:
        session.add(User(name="alice", role="experimenter", created_at=NOW))
    yield s
    s.kw["bind"].dispose()


def _experiment(sessions, state: str) -> int:
    with sessions.begin() as session:
        owner = session.scalars(select(User).where(User.name == "alice")).one()
        exp = Experiment(
            name="probe", description="", owner_id=owner.id, state=state, duration_s=600, parameters={}, created_at=NOW
        )
        session.add(exp)
        session.flush()
        return exp.id


def _events(session, exp_id: int) -> list[Event]:
    return list(session.scalars(select(Event).where(Event.experiment_id == exp_id).order_by(Event.id)))


def test_the_eight_states_of_fit_iot_lab():
    assert STATES == ("Waiting", "toLaunch", "Launching", "Running", "Finishing", "Terminated", "Stopped", "Error")
    assert frozenset({"Terminated", "Stopped", "Error"}) == FINAL


@pytest.mark.parametrize(("from_state", "to_state"), list(itertools.product(STATES, STATES)))
def test_every_pair_of_states(sessions, from_state, to_state):
    exp_id = _experiment(sessions, from_state)
    at = NOW + timedelta(minutes=7)
    assert allowed(from_state, to_state) == ((from_state, to_state) in LEGAL)
    with sessions() as session:
        exp = session.get(Experiment, exp_id)
        assert exp is not None
        if (from_state, to_state) in LEGAL:
            transition(session, exp, to_state, actor="operator:bob", reason="because", now=at)
            session.commit()
        else:
            with pytest.raises(IllegalTransition) as refused:
                transition(session, exp, to_state, actor="operator:bob", reason="because", now=at)
            message = str(refused.value)
            assert f"experiment {exp_id}" in message and f"{from_state}" in message and f"-> {to_state}" in message
            assert "not allowed" in message
            if from_state in FINAL:
                assert "final state" in message
            session.commit()
    with sessions() as session:
        exp = session.get(Experiment, exp_id)
        assert exp is not None
        events = _events(session, exp_id)
        if (from_state, to_state) in LEGAL:
            assert exp.state == to_state
            assert [(e.from_state, e.to_state, e.actor, e.reason) for e in events] == [
                (from_state, to_state, "operator:bob", "because")
            ]
            assert events[0].at.replace(tzinfo=UTC) == at
        else:
            assert exp.state == from_state and events == []


def test_a_whole_life_is_logged_in_order(sessions):
    exp_id = _experiment(sessions, "Waiting")
    path = ["toLaunch", "Launching", "Running", "Finishing", "Terminated"]
    with sessions() as session:
        exp = session.get(Experiment, exp_id)
        assert exp is not None
        for i, state in enumerate(path):
            transition(session, exp, state, actor="scheduler", reason=f"step {i}", now=NOW + timedelta(seconds=i))
        session.commit()
        events = _events(session, exp_id)
    assert [(e.from_state, e.to_state) for e in events] == list(zip(["Waiting", *path[:-1]], path, strict=True))
    assert [e.at.replace(tzinfo=UTC) for e in events] == [NOW + timedelta(seconds=i) for i in range(len(path))]


def test_unknown_state_and_naive_clock_are_refused(sessions):
    exp_id = _experiment(sessions, "Waiting")
    with sessions() as session:
        exp = session.get(Experiment, exp_id)
        assert exp is not None
        with pytest.raises(IllegalTransition, match="unknown state"):
            transition(session, exp, "Paused", actor="x", reason="", now=NOW)
        with pytest.raises(ValueError, match="timezone-aware"):
            transition(session, exp, "toLaunch", actor="x", reason="", now=datetime(2026, 6, 1, 12))
        assert exp.state == "Waiting" and _events(session, exp_id) == []


def test_every_live_state_can_fail_and_every_final_state_is_final():
    for state in STATES:
        exits = {b for b in STATES if allowed(state, b)}
        assert (exits == set()) == (state in FINAL)
        if state not in FINAL:
            assert "Error" in exits
