"""``smartzone chirpstack sync``: a contract test against the chirpstack-api package's servicer classes.

This is NOT a test against a running ChirpStack (none can run here). An in-process ``grpc.server`` serves
subclasses of the package's own ``GatewayServiceServicer``, ``DeviceProfileServiceServicer``,
``ApplicationServiceServicer`` and ``DeviceServiceServicer``, registered with its ``add_*_to_server``
functions, so the requests and responses are the real v4 protobuf messages on a real gRPC channel. The
servicers keep state in dicts the way ChirpStack does (UUIDs for profiles and applications, NOT_FOUND and
ALREADY_EXISTS, ``List`` answering list items with ``total_count`` and honouring limit/offset, ``Update``
replacing the whole object, ``GatewayService.Update`` ignoring ``tenant_id``, unset AES keys read back as
zeros), check the ``authorization`` metadata of every call, and record every request. With
``tenant_key=True`` they also mimic ChirpStack's answer to a tenant API key for an object it cannot see:
UNAUTHENTICATED rather than NOT_FOUND.
"""

from __future__ import annotations

import hashlib
import re
import threading
import uuid
from concurrent import futures
from pathlib import Path

import grpc
import pytest
import yaml
from chirpstack_api import api, common
from google.protobuf import empty_pb2

from cli.main import main
from gateways import chirpstack
from gateways.chirpstack import ChirpStackError, sync
from smartzone.errors import ConfigurationError
from smartzone.registry import Registry
from smartzone.settings import ChirpStackSettings

REGISTRY = Path(__file__).resolve().parents[2] / "gateways" / "registry" / "antwerp.yaml"
TOKEN = "test-api-key-0123456789"
TENANT = "52f14cd4-c6f1-4fbd-8f87-4025e1d49242"
OTHER_TENANT = "0f3a1c64-9b1e-4c58-a7e1-3d1a4c0e7b55"
# What the demo registry asks for (it grows: the tests derive their expectations from it).
_DEMO = Registry.load(REGISTRY)
LORA_DEVICES = {s.keys[0]: s.id for s in _DEMO.sensors.values() if s.lorawan is not None}  # DevEUI -> sensor id
LORA_GATEWAYS = {eui: g.id for eui, g in _DEMO.lora_gateways.items()}
PROFILES = tuple(_DEMO.device_profiles)
TOTAL = len(PROFILES) + 1 + len(LORA_GATEWAYS) + 2 * len(LORA_DEVICES)  # objects a first run creates
WRITES = ("Create", "Update", "Delete", "CreateKeys", "UpdateKeys", "DeleteKeys")
_EUI = re.compile(r"[0-9a-f]{16}")
_KEY = re.compile(r"[0-9a-f]{32}")


# -- the in-process ChirpStack ----------------------------------------------------------------------------
class FakeChirpStack:
    """State and request log shared by the servicers."""

    def __init__(self, *, token: str = TOKEN, tenant_id: str = TENANT, tenant_key: bool = False) -> None:
        self.token = token
        self.tenant_id = tenant_id
        self.tenant_key = tenant_key
        self.lock = threading.Lock()
        self.calls: list[tuple[str, object]] = []
        self.gateways: dict[str, api.Gateway] = {}
        self.profiles: dict[str, api.DeviceProfile] = {}
        self.applications: dict[str, api.Application] = {}
        self.devices: dict[str, api.Device] = {}
        self.keys: dict[str, api.DeviceKeys] = {}

    def enter(self, context, method: str, request) -> None:
        copy = type(request)()
        copy.CopyFrom(request)
        with self.lock:
            self.calls.append((method, copy))
        if dict(context.invocation_metadata()).get("authorization") != f"Bearer {self.token}":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "")  # ChirpStack gives no detail either

    def hidden(self, context, what: str) -> None:
        """An object the key cannot see: a tenant key hears UNAUTHENTICATED, an admin key NOT_FOUND."""
        if self.tenant_key:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "")
        context.abort(grpc.StatusCode.NOT_FOUND, f"Object does not exist (id: {what})")

    # test helpers
    def writes(self) -> list[tuple[str, object]]:
        return [(m, r) for m, r in self.calls if m.split(".")[1] in WRITES]

    def requests(self, method: str) -> list:
        return [r for m, r in self.calls if m == method]

    def profile_by_name(self, name: str) -> api.DeviceProfile:
        (p,) = [p for p in self.profiles.values() if p.name == name and p.tenant_id == self.tenant_id]
        return p


def _page(items: list, request) -> list:
    return items[request.offset : request.offset + request.limit]


def _eui(context, value: str) -> str:
    if not _EUI.fullmatch(value):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid EUI64: {value!r}")
    return value


def _uuid(context, value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid UUID: {value!r}")


class GatewayServicer(api.GatewayServiceServicer):
    def __init__(self, cs: FakeChirpStack) -> None:
        self.cs = cs

    def Create(self, request, context):
        self.cs.enter(context, "GatewayService.Create", request)
        gw = request.gateway
        _eui(context, gw.gateway_id)
        _uuid(context, gw.tenant_id)
        if gw.gateway_id in self.cs.gateways:
            context.abort(grpc.StatusCode.ALREADY_EXISTS, f"Object already exists (id: {gw.gateway_id})")
        stored = api.Gateway()
        stored.CopyFrom(gw)
        self.cs.gateways[gw.gateway_id] = stored
        return empty_pb2.Empty()

    def Get(self, request, context):
        self.cs.enter(context, "GatewayService.Get", request)
        gw = self.cs.gateways.get(_eui(context, request.gateway_id))
        if gw is None or (self.cs.tenant_key and gw.tenant_id != self.cs.tenant_id):
            self.cs.hidden(context, request.gateway_id)
        return api.GetGatewayResponse(gateway=gw)

    def Update(self, request, context):
        self.cs.enter(context, "GatewayService.Update", request)
        old = self.cs.gateways.get(_eui(context, request.gateway.gateway_id))
        if old is None:
            self.cs.hidden(context, request.gateway.gateway_id)
        new = api.Gateway()
        new.CopyFrom(request.gateway)
        new.tenant_id = old.tenant_id  # ChirpStack's update does not move a gateway to another tenant
        self.cs.gateways[new.gateway_id] = new
        return empty_pb2.Empty()


class DeviceProfileServicer(api.DeviceProfileServiceServicer):
    def __init__(self, cs: FakeChirpStack) -> None:
        self.cs = cs

    def Create(self, request, context):
        self.cs.enter(context, "DeviceProfileService.Create", request)
        dp = api.DeviceProfile()
        dp.CopyFrom(request.device_profile)
        _uuid(context, dp.tenant_id)
        dp.id = str(uuid.uuid4())
        self.cs.profiles[dp.id] = dp
        return api.CreateDeviceProfileResponse(id=dp.id)

    def Get(self, request, context):
        self.cs.enter(context, "DeviceProfileService.Get", request)
        dp = self.cs.profiles.get(_uuid(context, request.id))
        if dp is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Object does not exist (id: {request.id})")
        return api.GetDeviceProfileResponse(device_profile=dp)

    def Update(self, request, context):
        self.cs.enter(context, "DeviceProfileService.Update", request)
        old = self.cs.profiles.get(_uuid(context, request.device_profile.id))
        if old is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "Object does not exist")
        new = api.DeviceProfile()
        new.CopyFrom(request.device_profile)
        new.tenant_id = old.tenant_id
        self.cs.profiles[new.id] = new
        return empty_pb2.Empty()

    def List(self, request, context):
        self.cs.enter(context, "DeviceProfileService.List", request)
        tenant = _uuid(context, request.tenant_id)
        if tenant != self.cs.tenant_id:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "")
        items = [
            p
            for p in self.cs.profiles.values()
            if (p.tenant_id == tenant or (not p.tenant_id and not request.tenant_only))
            and request.search.lower() in p.name.lower()
        ]
        items.sort(key=lambda p: p.name)
        return api.ListDeviceProfilesResponse(
            total_count=len(items),
            result=[
                api.DeviceProfileListItem(
                    id=p.id,
                    name=p.name,
                    region=p.region,
                    mac_version=p.mac_version,
                    reg_params_revision=p.reg_params_revision,
                    supports_otaa=p.supports_otaa,
                    supports_class_c=p.supports_class_c,
                )
                for p in _page(items, request)
            ],
        )


class ApplicationServicer(api.ApplicationServiceServicer):
    def __init__(self, cs: FakeChirpStack) -> None:
        self.cs = cs

    def Create(self, request, context):
        self.cs.enter(context, "ApplicationService.Create", request)
        app = api.Application()
        app.CopyFrom(request.application)
        _uuid(context, app.tenant_id)
        app.id = str(uuid.uuid4())
        self.cs.applications[app.id] = app
        return api.CreateApplicationResponse(id=app.id)

    def Get(self, request, context):
        self.cs.enter(context, "ApplicationService.Get", request)
        app = self.cs.applications.get(_uuid(context, request.id))
        if app is None or (self.cs.tenant_key and app.tenant_id != self.cs.tenant_id):
            self.cs.hidden(context, request.id)
        return api.GetApplicationResponse(application=app)

    def Update(self, request, context):
        self.cs.enter(context, "ApplicationService.Update", request)
        old = self.cs.applications.get(_uuid(context, request.application.id))
        if old is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "Object does not exist")
        new = api.Application()
        new.CopyFrom(request.application)
        new.tenant_id = old.tenant_id
        self.cs.applications[new.id] = new
        return empty_pb2.Empty()

    def List(self, request, context):
        self.cs.enter(context, "ApplicationService.List", request)
        tenant = _uuid(context, request.tenant_id)
        if tenant != self.cs.tenant_id:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "")
        items = sorted(
            (
                a
                for a in self.cs.applications.values()
                if a.tenant_id == tenant and request.search.lower() in a.name.lower()
            ),
            key=lambda a: a.name,
        )
        return api.ListApplicationsResponse(
            total_count=len(items),
            result=[
                api.ApplicationListItem(id=a.id, name=a.name, description=a.description) for a in _page(items, request)
            ],
        )


class DeviceServicer(api.DeviceServiceServicer):
    def __init__(self, cs: FakeChirpStack) -> None:
        self.cs = cs

    def _visible(self, context, dev_eui: str) -> api.Device:
        d = self.cs.devices.get(_eui(context, dev_eui))
        if d is None or (self.cs.tenant_key and self.cs.applications[d.application_id].tenant_id != self.cs.tenant_id):
            self.cs.hidden(context, dev_eui)
        return d

    def _check_refs(self, context, d: api.Device) -> None:
        _eui(context, d.dev_eui)
        _eui(context, d.join_eui)
        if _uuid(context, d.application_id) not in self.cs.applications:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Object does not exist (id: {d.application_id})")
        if _uuid(context, d.device_profile_id) not in self.cs.profiles:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Object does not exist (id: {d.device_profile_id})")

    def Create(self, request, context):
        self.cs.enter(context, "DeviceService.Create", request)
        self._check_refs(context, request.device)
        if request.device.dev_eui in self.cs.devices:
            context.abort(grpc.StatusCode.ALREADY_EXISTS, f"Object already exists (id: {request.device.dev_eui})")
        d = api.Device()
        d.CopyFrom(request.device)
        self.cs.devices[d.dev_eui] = d
        return empty_pb2.Empty()

    def Get(self, request, context):
        self.cs.enter(context, "DeviceService.Get", request)
        return api.GetDeviceResponse(device=self._visible(context, request.dev_eui))

    def Update(self, request, context):
        self.cs.enter(context, "DeviceService.Update", request)
        self._visible(context, request.device.dev_eui)
        self._check_refs(context, request.device)
        d = api.Device()
        d.CopyFrom(request.device)
        self.cs.devices[d.dev_eui] = d
        return empty_pb2.Empty()

    def Delete(self, request, context):
        self.cs.enter(context, "DeviceService.Delete", request)
        self._visible(context, request.dev_eui)
        del self.cs.devices[request.dev_eui]
        self.cs.keys.pop(request.dev_eui, None)
        return empty_pb2.Empty()

    def List(self, request, context):
        self.cs.enter(context, "DeviceService.List", request)
        app_id = _uuid(context, request.application_id)
        items = sorted((d for d in self.cs.devices.values() if d.application_id == app_id), key=lambda d: d.name)
        return api.ListDevicesResponse(
            total_count=len(items),
            result=[
                api.DeviceListItem(
                    dev_eui=d.dev_eui,
                    name=d.name,
                    description=d.description,
                    device_profile_id=d.device_profile_id,
                    tags=d.tags,
                )
                for d in _page(items, request)
            ],
        )

    def _keys(self, context, dk: api.DeviceKeys) -> api.DeviceKeys:
        if not _KEY.fullmatch(dk.nwk_key) or (dk.app_key and not _KEY.fullmatch(dk.app_key)):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "invalid AES128 key")
        return api.DeviceKeys(dev_eui=dk.dev_eui, nwk_key=dk.nwk_key, app_key=dk.app_key or "0" * 32)

    def CreateKeys(self, request, context):
        self.cs.enter(context, "DeviceService.CreateKeys", request)
        self._visible(context, request.device_keys.dev_eui)
        if request.device_keys.dev_eui in self.cs.keys:
            context.abort(grpc.StatusCode.ALREADY_EXISTS, "Object already exists")
        self.cs.keys[request.device_keys.dev_eui] = self._keys(context, request.device_keys)
        return empty_pb2.Empty()

    def GetKeys(self, request, context):
        self.cs.enter(context, "DeviceService.GetKeys", request)
        self._visible(context, request.dev_eui)
        if request.dev_eui not in self.cs.keys:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Object does not exist (id: {request.dev_eui})")
        return api.GetDeviceKeysResponse(device_keys=self.cs.keys[request.dev_eui])

    def UpdateKeys(self, request, context):
        self.cs.enter(context, "DeviceService.UpdateKeys", request)
        self._visible(context, request.device_keys.dev_eui)
        if request.device_keys.dev_eui not in self.cs.keys:
            context.abort(grpc.StatusCode.NOT_FOUND, "Object does not exist")
        self.cs.keys[request.device_keys.dev_eui] = self._keys(context, request.device_keys)
        return empty_pb2.Empty()


def _serve(cs: FakeChirpStack):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    api.add_GatewayServiceServicer_to_server(GatewayServicer(cs), server)
    api.add_DeviceProfileServiceServicer_to_server(DeviceProfileServicer(cs), server)
    api.add_ApplicationServiceServicer_to_server(ApplicationServicer(cs), server)
    api.add_DeviceServiceServicer_to_server(DeviceServicer(cs), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


# -- fixtures -------------------------------------------------------------------------------------------
def _key(dev_eui: str, salt: str = "") -> str:
    return hashlib.sha256(f"{salt}{dev_eui}".encode()).hexdigest()[:32]


@pytest.fixture
def keys_file(tmp_path) -> Path:
    path = tmp_path / "chirpstack-keys.yaml"
    path.write_text(yaml.safe_dump({eui: {"nwk_key": _key(eui)} for eui in LORA_DEVICES}), encoding="utf-8")
    path.chmod(0o600)
    return path


@pytest.fixture
def cs() -> FakeChirpStack:
    return FakeChirpStack()


@pytest.fixture
def server(cs):
    srv, port = _serve(cs)
    yield port
    srv.stop(grace=None)


@pytest.fixture
def cfg(server, keys_file) -> ChirpStackSettings:
    return ChirpStackSettings(
        api_url=f"127.0.0.1:{server}", api_token=TOKEN, tenant_id=TENANT, keys_file=keys_file, timeout=5
    )


@pytest.fixture
def registry() -> Registry:
    return Registry.load(REGISTRY)


def _with(cfg: ChirpStackSettings, changes: dict) -> ChirpStackSettings:
    """The settings with some values changed, validated (a token becomes a SecretStr) as from the environment."""
    return ChirpStackSettings(**{**cfg.model_dump(), **changes})


def _edited_registry(tmp_path: Path, edit) -> Registry:
    doc = yaml.safe_load(REGISTRY.read_text(encoding="utf-8"))
    edit(doc)
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return Registry.load(path)


def _sensor(doc: dict, sensor_id: str) -> dict:
    (s,) = [s for s in doc["sensors"] if s["id"] == sensor_id]
    return s


# -- tests ----------------------------------------------------------------------------------------------
def test_first_run_creates_everything(cs, cfg, registry, monkeypatch):
    monkeypatch.setattr(chirpstack, "PAGE", 2)  # page through List answers
    # A global (vendor repository) profile with one of our names must not be taken for ours.
    cs.profiles["8d2b7f7e-1c4f-4d6f-9e0e-5b6a8f1d2c3b"] = api.DeviceProfile(
        id="8d2b7f7e-1c4f-4d6f-9e0e-5b6a8f1d2c3b", name="cayenne-lpp-weather", region=1
    )

    result = sync(cfg, registry)

    methods = sorted(m for m, _ in cs.writes())
    assert methods == sorted(
        ["ApplicationService.Create"]
        + ["DeviceProfileService.Create"] * len(PROFILES)
        + ["GatewayService.Create"] * len(LORA_GATEWAYS)
        + ["DeviceService.Create", "DeviceService.CreateKeys"] * len(LORA_DEVICES)
    )
    assert all(r.tenant_only for r in cs.requests("DeviceProfileService.List"))

    gateways = {r.gateway.gateway_id: r.gateway for r in cs.requests("GatewayService.Create")}
    assert {eui: g.name for eui, g in gateways.items()} == LORA_GATEWAYS
    roof = gateways["0016c001ff10a235"]
    assert roof.description == "KMSKA roof (LoRaWAN, full-zone coverage)"
    assert roof.tenant_id == TENANT and dict(roof.tags) == {"smartzone_id": "gw-kmska-roof"}
    assert (roof.location.latitude, roof.location.longitude) == (51.20870, 4.39430)
    assert roof.stats_interval == 30

    profiles = {r.device_profile.name: r.device_profile for r in cs.requests("DeviceProfileService.Create")}
    assert set(profiles) == set(PROFILES)
    weather, tracker = profiles["cayenne-lpp-weather"], profiles["cayenne-lpp-tracker"]
    assert weather.payload_codec_runtime == api.CAYENNE_LPP
    assert [n for n, p in profiles.items() if p.payload_codec_runtime != api.NONE] == ["cayenne-lpp-weather"]
    assert dict(tracker.tags) == {"smartzone_codec": "cayenne_lpp", "smartzone_vendor": "generic"}
    assert dict(weather.tags)["smartzone_codec"] == "none"
    for name, p in profiles.items():
        want = registry.device_profiles[name]
        assert p.tenant_id == TENANT and p.description == want.description
        assert common.Region.Name(p.region) == want.region == "EU868"
        assert common.MacVersion.Name(p.mac_version) == want.mac_version == "LORAWAN_1_0_3"
        assert common.RegParamsRevision.Name(p.reg_params_revision) == want.regional_parameters_revision
        assert p.adr_algorithm_id == "default" and p.supports_otaa
        assert (p.supports_class_c, p.uplink_interval) == (want.supports_class_c, want.uplink_interval)
        assert dict(p.tags)["smartzone_codec"] == (want.codec or "none")
    assert (weather.uplink_interval, tracker.uplink_interval) == (600, 300)

    (app_req,) = cs.requests("ApplicationService.Create")
    assert app_req.application.name == "smart-zone" and app_req.application.tenant_id == TENANT
    (app_id,) = cs.applications

    devices = {r.device.dev_eui: r.device for r in cs.requests("DeviceService.Create")}
    assert {e: d.name for e, d in devices.items()} == LORA_DEVICES
    school = devices["a81758fffe0312ab"]
    assert school.join_eui == "a81758fffe000001" and school.application_id == app_id
    assert cs.profiles[school.device_profile_id].name == "elsys-ers-co2"
    assert cs.profiles[school.device_profile_id].tenant_id == TENANT
    assert school.description == "Elsys ERS CO2 (classroom)"
    assert dict(school.tags) == {"smartzone_id": "aq-lora-school-volkstraat", "category": "air_quality"}
    assert cs.profiles[devices["70b3d57ed0051b01"].device_profile_id].name == "cayenne-lpp-weather"
    assert devices["70b3d57ed0051a01"].join_eui == "0000000000000000"

    keys = {r.device_keys.dev_eui: r.device_keys for r in cs.requests("DeviceService.CreateKeys")}
    assert {e: k.nwk_key for e, k in keys.items()} == {e: _key(e) for e in LORA_DEVICES}
    assert all(k.app_key == "" for k in keys.values())  # LoRaWAN 1.0.x: the AppKey is the nwk_key

    assert result.created == {
        "device-profile": list(PROFILES),
        "application": ["smart-zone"],
        "gateway": list(LORA_GATEWAYS.values()),
        "device": list(LORA_DEVICES.values()),
        "device-keys": list(LORA_DEVICES.values()),
    }
    assert result.updated == {} and result.unchanged == {} and result.unregistered == []
    assert f"created {TOTAL}, updated 0, unchanged 0" in result.summary()


def test_second_run_only_reads(cs, cfg, registry):
    sync(cfg, registry)
    cs.calls.clear()
    result = sync(cfg, registry)
    assert cs.writes() == []
    assert {m.split(".")[1] for m, _ in cs.calls} <= {"List", "Get", "GetKeys"}
    assert result.created == {} and result.updated == {}
    assert result.unchanged == {
        "device-profile": list(PROFILES),
        "application": ["smart-zone"],
        "gateway": list(LORA_GATEWAYS.values()),
        "device": list(LORA_DEVICES.values()),
        "device-keys": list(LORA_DEVICES.values()),
    }
    assert f"created 0, updated 0, unchanged {TOTAL}" in result.summary()


def test_tenant_api_key_hears_unauthenticated_for_unknown_objects(cfg, registry, keys_file):
    """ChirpStack answers a tenant key's Get of an unknown gateway or device with UNAUTHENTICATED."""
    cs = FakeChirpStack(tenant_key=True)
    srv, port = _serve(cs)
    try:
        cfg = _with(cfg, {"api_url": f"127.0.0.1:{port}"})
        first = sync(cfg, registry)
        assert len(cs.requests("GatewayService.Create")) == len(LORA_GATEWAYS)
        assert len(cs.requests("DeviceService.Create")) == len(LORA_DEVICES)
        assert sum(len(v) for v in first.created.values()) == TOTAL
        cs.calls.clear()
        assert sync(cfg, registry).created == {} and cs.writes() == []
    finally:
        srv.stop(grace=None)


def test_changed_device_is_one_update_keeping_what_we_do_not_own(cs, cfg, registry, tmp_path):
    sync(cfg, registry)
    cs.devices["70b3d57ed0051b01"].variables["site"] = "groenplaats"  # set by an operator in ChirpStack
    cs.devices["70b3d57ed0051b01"].tags["owner"] = "city"
    cs.calls.clear()

    def edit(doc):
        s = _sensor(doc, "wx-lora-groenplaats")
        s["lorawan"]["device_profile"] = "cayenne-lpp-tracker"
        s["model"] = "LPP weather node (Smart Zone decodes)"

    result = sync(cfg, _edited_registry(tmp_path, edit))
    writes = cs.writes()
    assert [m for m, _ in writes] == ["DeviceService.Update"]
    d = writes[0][1].device
    assert d.dev_eui == "70b3d57ed0051b01" and d.description == "LPP weather node (Smart Zone decodes)"
    assert d.device_profile_id == cs.profile_by_name("cayenne-lpp-tracker").id
    assert dict(d.variables) == {"site": "groenplaats"}
    assert dict(d.tags) == {"smartzone_id": "wx-lora-groenplaats", "category": "weather", "owner": "city"}
    assert result.updated == {"device": ["wx-lora-groenplaats"]}
    (change,) = [c for c in result.changes if c.action == "update"]
    assert change.fields == ("description", "device_profile_id")


def test_changed_key_is_one_update_keys(cs, cfg, registry, keys_file):
    sync(cfg, registry)
    cs.calls.clear()
    keys = yaml.safe_load(keys_file.read_text())
    keys["a81758fffe0312ac"]["nwk_key"] = _key("a81758fffe0312ac", salt="rotated").upper()  # case does not matter
    keys_file.write_text(yaml.safe_dump(keys))
    result = sync(cfg, registry)
    writes = cs.writes()
    assert [m for m, _ in writes] == ["DeviceService.UpdateKeys"]
    assert writes[0][1].device_keys.dev_eui == "a81758fffe0312ac"
    assert writes[0][1].device_keys.nwk_key == _key("a81758fffe0312ac", salt="rotated")
    assert result.updated == {"device-keys": ["aq-lora-library-kloosterstraat"]}
    assert _key("a81758fffe0312ac", salt="rotated") not in result.table() + result.summary()


def test_changed_gateway_and_profile_are_updates(cs, cfg, registry, tmp_path):
    sync(cfg, registry)
    cs.gateways["b827ebfffe6a0c02"].metadata["serial"] = "RAK-42"
    cs.calls.clear()

    def edit(doc):
        (g,) = [g for g in doc["gateways"] if g["id"] == "gw-sint-andries"]
        g["name"] = "Sint-Andriesplaats (church tower)"
        (p,) = [p for p in doc["lorawan"]["device_profiles"] if p["name"] == "elsys-ers-co2"]
        p["uplink_interval"] = 900

    result = sync(cfg, _edited_registry(tmp_path, edit))
    assert sorted(m for m, _ in cs.writes()) == ["DeviceProfileService.Update", "GatewayService.Update"]
    (gw,) = cs.requests("GatewayService.Update")
    assert gw.gateway.description == "Sint-Andriesplaats (church tower)" and gw.gateway.name == "gw-sint-andries"
    assert dict(gw.gateway.metadata) == {"serial": "RAK-42"} and gw.gateway.stats_interval == 30
    (dp,) = cs.requests("DeviceProfileService.Update")
    assert dp.device_profile.uplink_interval == 900 and dp.device_profile.device_status_req_interval == 1
    assert result.updated == {"device-profile": ["elsys-ers-co2"], "gateway": ["gw-sint-andries"]}


def test_wrong_token_is_a_configuration_error(cs, cfg, registry):
    bad = _with(cfg, {"api_token": "not-the-key"})
    with pytest.raises(ConfigurationError, match="refused the API token"):
        sync(bad, registry)
    assert cs.calls and cs.writes() == []


def test_missing_keys_fail_before_any_request(cs, cfg, registry, keys_file):
    keys = yaml.safe_load(keys_file.read_text())
    del keys["a81758fffe0312ab"], keys["70b3d57ed0051b01"]
    keys_file.write_text(yaml.safe_dump(keys))
    with pytest.raises(ConfigurationError) as err:
        sync(cfg, registry)
    assert "aq-lora-school-volkstraat (a81758fffe0312ab)" in str(err.value)
    assert "wx-lora-groenplaats (70b3d57ed0051b01)" in str(err.value)
    assert str(keys_file) in str(err.value)
    assert cs.calls == []  # not even a read: nothing was written


@pytest.mark.parametrize(
    "entry, problem",
    [
        ({"nwk_key": "00112233445566778899aabbccddeeXX"}, "nwk_key must be 32 hexadecimal digits"),
        ({"nwk_key": "0011223344"}, "nwk_key must be 32 hexadecimal digits"),
        ({"nwk_key": 123456}, "must be a quoted string"),
        ({"app_key": "00112233445566778899aabbccddeeff"}, "nwk_key is missing"),
        ({"nwk_key": "00112233445566778899aabbccddeeff", "appkey": "x"}, "unknown fields"),
    ],
)
def test_bad_keys_are_named_without_their_value(cs, cfg, registry, keys_file, entry, problem):
    keys = yaml.safe_load(keys_file.read_text())
    keys["70b3d57ed0051a01"] = entry
    keys_file.write_text(yaml.safe_dump(keys))
    with pytest.raises(ConfigurationError) as err:
        sync(cfg, registry)
    message = str(err.value)
    assert problem in message and "aq-lora-tracker-1 (70b3d57ed0051a01)" in message and str(keys_file) in message
    assert "00112233445566778899aabbccddee" not in message and "0011223344" not in message
    assert cs.calls == []


def test_dry_run_writes_nothing(cs, cfg, registry):
    result = sync(cfg, registry, dry_run=True)
    assert cs.writes() == [] and cs.calls
    assert sum(len(v) for v in result.created.values()) == TOTAL
    assert f"would create {TOTAL}," in result.summary() and "dry run: nothing written" in result.summary()


def test_unregistered_devices_are_reported_and_deleted_only_with_prune(cs, cfg, registry):
    sync(cfg, registry)
    (app_id,) = cs.applications
    profile_id = cs.profile_by_name("elsys-ers-co2").id
    cs.devices["a81758fffe0399ff"] = api.Device(
        dev_eui="a81758fffe0399ff",
        name="old-sensor",
        application_id=app_id,
        device_profile_id=profile_id,
        join_eui="0000000000000000",
    )
    cs.calls.clear()
    result = sync(cfg, registry)
    assert cs.writes() == [] and result.unregistered == ["old-sensor"]
    assert "not in the registry" in result.summary() and "old-sensor" in result.table()

    result = sync(cfg, registry, prune=True)
    assert [(m, r.dev_eui) for m, r in cs.writes()] == [("DeviceService.Delete", "a81758fffe0399ff")]
    assert result.deleted == ["old-sensor"] and "a81758fffe0399ff" not in cs.devices


def test_gateway_of_another_tenant_is_a_conflict_before_any_write(cs, cfg, registry):
    cs.gateways["0016c001ff10a235"] = api.Gateway(gateway_id="0016c001ff10a235", name="roof", tenant_id=OTHER_TENANT)
    with pytest.raises(ConfigurationError, match=f"belongs to tenant {OTHER_TENANT}"):
        sync(cfg, registry)
    assert cs.writes() == []


def test_missing_tenant_or_token_is_a_configuration_error(cfg, registry):
    with pytest.raises(ConfigurationError, match="tenant_id is not set"):
        sync(_with(cfg, {"tenant_id": ""}), registry)
    with pytest.raises(ConfigurationError, match="api_token is not set"):
        sync(_with(cfg, {"api_token": None}), registry)


def test_unreachable_chirpstack_names_the_address(cfg, registry):
    srv, port = _serve(FakeChirpStack())
    srv.stop(grace=None)  # a port nobody listens on any more
    with pytest.raises(ChirpStackError, match=f"cannot reach ChirpStack's gRPC API at 127.0.0.1:{port}") as err:
        sync(_with(cfg, {"api_url": f"127.0.0.1:{port}", "timeout": 2}), registry)
    assert err.value.code == grpc.StatusCode.UNAVAILABLE


def test_cli_sync(cs, server, keys_file, monkeypatch, capsys):
    monkeypatch.setenv("SMARTZONE_REGISTRY", str(REGISTRY))
    monkeypatch.setenv("SMARTZONE_CHIRPSTACK__API_URL", f"127.0.0.1:{server}")
    monkeypatch.setenv("SMARTZONE_CHIRPSTACK__API_TOKEN", TOKEN)
    monkeypatch.setenv("SMARTZONE_CHIRPSTACK__TENANT_ID", TENANT)
    monkeypatch.setenv("SMARTZONE_CHIRPSTACK__KEYS_FILE", str(keys_file))

    assert main(["chirpstack", "sync", "--dry-run"]) == 0
    assert f"would create {TOTAL}," in capsys.readouterr().out and cs.writes() == []

    assert main(["chirpstack", "sync"]) == 0
    out = capsys.readouterr().out
    assert f"created {TOTAL}, updated 0, unchanged 0" in out
    assert re.search(rf"^device-keys\s+{len(LORA_DEVICES)}\s+0\s+0$", out, re.MULTILINE)
    assert all(_key(e) not in out for e in LORA_DEVICES)

    assert main(["chirpstack", "sync"]) == 0
    assert f"created 0, updated 0, unchanged {TOTAL}" in capsys.readouterr().out

    monkeypatch.setenv("SMARTZONE_CHIRPSTACK__API_TOKEN", "wrong")
    assert main(["chirpstack", "sync"]) == 2
    assert "refused the API token" in capsys.readouterr().err
