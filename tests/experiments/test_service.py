"""The experiments service on SQLite and PostgreSQL: booking (overlap, availability, radios, aliases),
cancel and extend in each state, listing and who may read what. The clock is a parameter."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from experiments import artifacts, service
from experiments.db import open_store
from experiments.errors import Conflict, Forbidden, Invalid, NotFound
from experiments.service import Alias, NewExperiment
from experiments.states import transition
from smartzone.registry import Registry
from smartzone.settings import Settings
from tests.conftest import REGISTRY
from tests.experiments.world import NOW, SCRIPT, make_users, module_sql_url, reset, set_gateway

__all__ = ["module_sql_url"]  # the fixture

REG = Registry.load(REGISTRY)
LIMITS = Settings(data_dir="unused").experiments.model_copy(update={"max_duration_s": 3600})
H = timedelta(hours=1)


@pytest.fixture(scope="module")
def store(module_sql_url, tmp_path_factory):
    sessions = open_store(module_sql_url)
    settings = Settings(data_dir=tmp_path_factory.mktemp("data"))
    users = make_users(sessions)
    art, _ = artifacts.store(sessions, settings, "probe.py", SCRIPT, NOW)
    try:
        yield sessions, users, art.sha256
    finally:
        sessions.kw["bind"].dispose()


@pytest.fixture
def world(store):
    reset(store[0], REG)
    return store


def _new(sha: str, gateways=("gw-volkstraat",), radio="ble", start=NOW + H, duration=600, **kw) -> NewExperiment:
    gws = gateways if isinstance(gateways, Alias) else list(gateways)
    return NewExperiment(
        name="rtt probe", gateways=gws, radio=radio, start=start, duration_s=duration, artifact=sha, **kw
    )


def _book(world, who="alice", **kw):
    sessions, users, sha = world
    return service.create(sessions, REG, LIMITS, getattr(users, who), _new(sha, **kw), NOW)


def _move(sessions, exp_id: int, *states: str) -> None:
    from experiments.db import Experiment

    with sessions.begin() as session:
        exp = session.get(Experiment, exp_id)
        for s in states:
            transition(session, exp, s, "scheduler", "test", NOW)


def test_create_books_the_gateways_and_logs_the_submission(world):
    v = _book(world, gateways=("gw-volkstraat", "gw-sint-andries"), parameters={"interval_ms": 100})
    assert v.state == "Waiting" and v.owner == "alice"
    assert (v.start, v.deadline, v.duration_s) == (NOW + H, NOW + H + timedelta(seconds=600), 600)
    assert [(r.gateway, r.radio, r.phase) for r in v.resources] == [
        ("gw-volkstraat", "ble", None),
        ("gw-sint-andries", "ble", None),
    ]
    assert v.parameters == {"interval_ms": 100}
    assert [(e.actor, e.from_state, e.to_state) for e in v.events] == [("alice", None, "Waiting")]


def test_as_soon_as_possible_starts_now(world):
    v = _book(world, start=None)
    assert v.start == NOW and v.deadline == NOW + timedelta(seconds=600)


def test_an_overlap_on_the_same_gateway_and_radio_is_refused_naming_the_experiment(world):
    first = _book(world)
    with pytest.raises(Conflict) as err:
        _book(world, who="bob", start=NOW + H + timedelta(seconds=599))
    assert err.value.experiment == first.id and f"experiment {first.id}" in str(err.value)
    assert "gw-volkstraat (ble)" in str(err.value)
    # [start, deadline) is half-open: the next one may start at the deadline; another radio is free
    _book(world, who="bob", start=NOW + H + timedelta(seconds=600))
    _book(world, who="bob", radio="wifi")
    _book(world, who="bob", start=NOW + H - timedelta(seconds=600))  # ends exactly at the start
    with pytest.raises(Conflict):
        _book(world, who="bob", start=NOW + H - timedelta(seconds=599))
    # a final experiment holds nothing
    sessions, users, _ = world
    service.cancel(sessions, users.alice, first.id, NOW)
    assert _book(world, who="bob", start=NOW + H + timedelta(seconds=10), duration=500).state == "Waiting"


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"online": False}, "gateway gw-volkstraat is offline"),
        ({"selftest_failed": 2, "selftest_detail": "hci0 down"}, "last self-test failed (2 checks): hci0 down"),
        ({"online": None}, "gateway gw-volkstraat was never heard"),
    ],
)
def test_an_unavailable_gateway_is_refused_with_the_reason(world, values, reason):
    set_gateway(world[0], "gw-volkstraat", **values)
    with pytest.raises(Conflict, match=re.escape(reason)):
        _book(world)
    _book(world, gateways=("gw-sint-andries",))  # the others are handed out


def test_a_gateway_without_a_row_was_never_heard(world):
    from experiments.db import Gateway

    with world[0].begin() as session:
        session.delete(session.get(Gateway, "gw-nationalestraat"))
    with pytest.raises(Conflict, match="never heard"):
        _book(world, gateways=("gw-nationalestraat",))


@pytest.mark.parametrize(
    ("kw", "field", "message"),
    [
        ({"gateways": ("gw-nowhere",)}, "gateways", "gw-nowhere"),
        ({"gateways": ("gw-egmont",)}, "radio", "gw-egmont has no ble radio for experiments (it has: wifi)"),
        ({"radio": "lora"}, "radio", "radio 'lora'"),
        # the LoRaWAN service gateways: their concentrator is never handed out
        ({"gateways": ("gw-sint-andries",), "radio": "lora-experimental"}, "radio", "no lora-experimental"),
        ({"gateways": ("gw-kmska-roof",), "radio": "lora-experimental"}, "radio", "not an experiment gateway"),
        ({"duration": 3601}, "duration", "over the maximum of 3600 s"),
        ({"duration": 0}, "duration", "positive"),
        ({"start": NOW - H}, "start", "in the past"),
        ({"radio": None}, "radio", "give the radio"),
    ],
)
def test_invalid_requests_say_what_is_wrong(world, kw, field, message):
    with pytest.raises(Invalid) as err:
        _book(world, **kw)
    assert err.value.field == field and message in str(err.value)


def test_an_unknown_artifact_is_refused(world):
    sessions, users, _ = world
    with pytest.raises(Invalid, match="unknown; upload it first"):
        service.create(sessions, REG, LIMITS, users.alice, _new("0" * 64), NOW)


def test_the_declared_experimental_lora_radio_is_handed_out(world):
    v = _book(world, radio="lora-experimental")
    assert [(r.gateway, r.radio) for r in v.resources] == [("gw-volkstraat", "lora-experimental")]


def test_an_alias_picks_free_available_gateways_of_the_zone(world):
    v = _book(world, gateways=Alias(count=2, radio="ble", zone="sint-andries"))
    assert sorted(v.gateways) == ["gw-nationalestraat", "gw-sint-andries"]
    # both taken now: a third in that zone cannot be found; the conflict names the holder
    with pytest.raises(Conflict, match=f"taken by experiment {v.id}"):
        _book(world, who="bob", gateways=Alias(count=1, radio="ble", zone="sint-andries"))
    # the zone "zuid" has one BLE gateway; it is offline
    set_gateway(world[0], "gw-volkstraat", online=False)
    with pytest.raises(Conflict, match="gw-volkstraat is offline"):
        _book(world, who="bob", gateways=Alias(count=1, radio="ble", zone="zuid"))
    with pytest.raises(Invalid, match="only 1 gateway"):
        _book(world, who="bob", gateways=Alias(count=2, radio="ble", zone="zuid"))
    with pytest.raises(Invalid, match="not an area"):
        _book(world, who="bob", gateways=Alias(count=1, radio="ble", zone="mars"))


@pytest.mark.parametrize(
    ("path", "after"),
    [
        ((), "Stopped"),
        (("toLaunch",), "Stopped"),
        (("toLaunch", "Launching"), "Stopped"),
        (("toLaunch", "Launching", "Running"), "Finishing"),
    ],
)
def test_cancel_before_running_stops_and_while_running_finishes(world, path, after):
    sessions, users, _ = world
    v = _book(world)
    _move(sessions, v.id, *path)
    done = service.cancel(sessions, users.alice, v.id, NOW + timedelta(seconds=5))
    assert done.state == after
    assert (done.events[-1].actor, done.events[-1].to_state, done.events[-1].reason) == (
        "alice",
        after,
        "cancelled by alice",
    )
    assert (done.ended_at is not None) == (after == "Stopped")


@pytest.mark.parametrize("path", [("toLaunch", "Launching", "Running", "Finishing"), ("Stopped",), ("Error",)])
def test_cancel_of_a_finishing_or_final_experiment_is_a_conflict(world, path):
    sessions, users, _ = world
    v = _book(world)
    _move(sessions, v.id, *path)
    with pytest.raises(Conflict, match=f"experiment {v.id}"):
        service.cancel(sessions, users.alice, v.id, NOW)
    assert service.get(sessions, users.alice, v.id).state == path[-1]


@pytest.mark.parametrize("path", [(), ("toLaunch",), ("toLaunch", "Launching", "Running")])
def test_extend_moves_the_deadline_unless_it_would_overlap(world, path):
    sessions, users, _ = world
    v = _book(world)
    _move(sessions, v.id, *path)
    later = _book(world, who="bob", start=v.deadline + timedelta(seconds=300))
    longer = service.extend(sessions, LIMITS, users.alice, v.id, 300, NOW)
    assert longer.deadline == v.deadline + timedelta(seconds=300) and longer.duration_s == 900
    with pytest.raises(Conflict) as err:
        service.extend(sessions, LIMITS, users.alice, v.id, 1, NOW)
    assert err.value.experiment == later.id
    assert service.get(sessions, users.alice, v.id).deadline == longer.deadline  # unchanged by the refusal
    with pytest.raises(Invalid, match="over the maximum"):
        service.extend(sessions, LIMITS, users.bob, later.id, 3600, NOW)


@pytest.mark.parametrize("path", [("Stopped",), ("toLaunch", "Launching", "Running", "Finishing", "Terminated")])
def test_extend_of_a_final_experiment_is_a_conflict(world, path):
    sessions, users, _ = world
    v = _book(world)
    _move(sessions, v.id, *path)
    with pytest.raises(Conflict, match="can no longer be extended"):
        service.extend(sessions, LIMITS, users.alice, v.id, 60, NOW)


def test_reads_belong_to_the_owner_and_operators(world):
    sessions, users, _ = world
    a = _book(world)
    b = _book(world, who="bob", gateways=("gw-sint-andries",))
    _move(sessions, b.id, "Stopped")
    assert service.get(sessions, users.alice, a.id).id == a.id
    assert service.get(sessions, users.ops, a.id).id == a.id
    with pytest.raises(Forbidden):
        service.get(sessions, users.bob, a.id)
    with pytest.raises(Forbidden):
        service.cancel(sessions, users.bob, a.id, NOW)
    with pytest.raises(Forbidden):
        service.extend(sessions, LIMITS, users.bob, a.id, 60, NOW)
    with pytest.raises(NotFound):
        service.get(sessions, users.ops, 999)

    ids = lambda u, **f: [v.id for v in service.list_experiments(sessions, u, **f)]  # noqa: E731
    assert ids(users.alice) == [a.id] and ids(users.bob) == [b.id]
    assert ids(users.ops) == [b.id, a.id]
    assert ids(users.ops, state="Stopped") == [b.id]
    assert ids(users.ops, owner="alice") == [a.id]
    assert ids(users.ops, gateway="gw-sint-andries") == [b.id]
    assert ids(users.alice, owner="alice") == [a.id]
    with pytest.raises(Forbidden):
        ids(users.alice, owner="bob")
    with pytest.raises(Invalid, match="state 'Sleeping'"):
        ids(users.ops, state="Sleeping")
