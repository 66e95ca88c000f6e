"""The experiment state machine, FIT IoT-LAB's states: pure rules plus one function that applies them.

``Waiting -> toLaunch -> Launching -> Running -> Finishing -> Terminated``; an experiment not yet running
may be cancelled (``Stopped``) or fail (``Error``, e.g. not running within 5 minutes of its start); a
running one is cancelled through ``Finishing -> Stopped``. ``Terminated``, ``Stopped`` and ``Error`` are
final. Every change writes an ``events`` row (time, actor, from, to, reason); the clock is a parameter.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from experiments.db import STATES, Event, Experiment

FINAL = frozenset({"Terminated", "Stopped", "Error"})

ALLOWED: dict[str, frozenset[str]] = {
    "Waiting": frozenset({"toLaunch", "Stopped", "Error"}),
    "toLaunch": frozenset({"Launching", "Stopped", "Error"}),
    "Launching": frozenset({"Running", "Stopped", "Error"}),
    "Running": frozenset({"Finishing", "Error"}),
    "Finishing": frozenset({"Terminated", "Stopped", "Error"}),
    "Terminated": frozenset(),
    "Stopped": frozenset(),
    "Error": frozenset(),
}
assert set(ALLOWED) == set(STATES)  # the table covers every state


class IllegalTransition(ValueError):
    """A state change the machine does not allow; the experiment is left as it was."""


def allowed(from_state: str, to_state: str) -> bool:
    if from_state not in ALLOWED or to_state not in ALLOWED:
        raise IllegalTransition(f"unknown state: {from_state if from_state not in ALLOWED else to_state!r}")
    return to_state in ALLOWED[from_state]


def transition(
    session: Session, experiment: Experiment, to_state: str, actor: str, reason: str, now: datetime
) -> Event:
    """Move ``experiment`` to ``to_state`` and log it; ``IllegalTransition`` if the rules refuse it.

    Adds to ``session`` without committing: the caller's transaction holds the change and its event.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    from_state = experiment.state
    if not allowed(from_state, to_state):
        final = " (a final state)" if from_state in FINAL else ""
        choices = ", ".join(sorted(ALLOWED[from_state])) or "none"
        raise IllegalTransition(
            f"experiment {experiment.id}: {from_state}{final} -> {to_state} is not allowed (allowed: {choices})"
        )
    experiment.state = to_state
    ev = Event(
        experiment_id=experiment.id, at=now, actor=actor, from_state=from_state, to_state=to_state, reason=reason
    )
    session.add(ev)
    return ev
