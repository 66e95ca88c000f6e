"""``smartzone chirpstack sync``: provision ChirpStack v4 from the sensor registry over its gRPC API.

For the tenant ``chirpstack.tenant_id`` it makes ChirpStack hold what the registry says:

- every registry gateway with an ``eui`` (name = registry id, description = registry name, location, tags);
- every ``lorawan.device_profiles`` entry (region, MAC version, regional parameters, ADR, OTAA, class C,
  uplink interval, and the payload codec: ChirpStack's Cayenne LPP for ``chirpstack_codec: cayenne_lpp``,
  none otherwise, because our own codecs decode the raw ``data``);
- the application ``lorawan.application``;
- every sensor with a ``lorawan`` section as a device of that application, with its root keys from
  ``chirpstack.keys_file`` (never from the registry, never logged).

It is idempotent: each object is read first and written only if a field we own differs (fields and tags
we do not own, such as a gateway's metadata or a device's variables, are kept as ChirpStack has them).
All reads come first and every problem found is reported before the first write; ``dry_run`` stops there.
Devices of the application that the registry no longer has are reported, and deleted only with ``prune``.

Two things about ChirpStack's API this module relies on (checked against ChirpStack's source, and mimicked by
the test's in-process server):

- with a *tenant* API key, ``Get`` of a gateway or device the key cannot see (it does not exist, or it
  belongs to another tenant) answers UNAUTHENTICATED, not NOT_FOUND (the access check runs before the
  look-up). Once a tenant-scoped ``List`` has accepted the token, such answers mean "absent" here; a
  ``Create`` of an object that exists elsewhere then fails with ALREADY_EXISTS, which we report clearly.
- ``Update`` replaces the whole object (and ``GatewayService.Update`` ignores ``tenant_id``), so updates
  start from the object ``Get`` returned; a gateway in another tenant is a conflict, not an update.

Tested by ``tests/gateways/test_chirpstack_sync.py``: a contract test against the chirpstack-api
package's own servicer classes in an in-process gRPC server, not against a running ChirpStack.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import yaml
from chirpstack_api import api, common

from smartzone.errors import ConfigurationError, SmartZoneError
from smartzone.registry import DeviceProfile, Registry, Sensor
from smartzone.settings import ChirpStackSettings

log = logging.getLogger("smartzone.chirpstack")

PAGE = 100  # List page size (ChirpStack returns only total_count for limit 0)
STATS_INTERVAL = 30  # seconds: ChirpStack's default gateway stats interval, which the API does not fill in
NULL_KEY = "0" * 32  # how ChirpStack returns an unset AES key
GATEWAY_TAGS = ("smartzone_id",)
PROFILE_TAGS = ("smartzone_codec", "smartzone_vendor")
DEVICE_TAGS = ("smartzone_id", "category")
KINDS = ("device-profile", "application", "gateway", "device", "device-keys")
_EUI = re.compile(r"[0-9a-f]{16}")
_KEY = re.compile(r"[0-9a-f]{32}")
_HIDDEN = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


class ChirpStackError(SmartZoneError):
    """ChirpStack could not be reached or refused a call for a reason other than the credentials."""

    def __init__(self, message: str, *, method: str = "", code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.method = method
        self.code = code


# -- result ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Change:
    kind: str  # one of KINDS
    name: str  # registry id (gateway, device), profile or application name
    action: str  # create, update, unchanged, unregistered, delete
    fields: tuple[str, ...] = ()  # what differs (field names only: never values, never keys)
    detail: str = ""


@dataclass
class SyncResult:
    tenant_id: str
    dry_run: bool
    changes: list[Change] = field(default_factory=list)

    def names(self, kind: str, action: str) -> list[str]:
        return [c.name for c in self.changes if c.kind == kind and c.action == action]

    def _by_kind(self, action: str) -> dict[str, list[str]]:
        return {k: names for k in KINDS if (names := self.names(k, action))}

    @property
    def created(self) -> dict[str, list[str]]:
        return self._by_kind("create")

    @property
    def updated(self) -> dict[str, list[str]]:
        return self._by_kind("update")

    @property
    def unchanged(self) -> dict[str, list[str]]:
        return self._by_kind("unchanged")

    @property
    def unregistered(self) -> list[str]:
        return [c.name for c in self.changes if c.action == "unregistered"]

    @property
    def deleted(self) -> list[str]:
        return [c.name for c in self.changes if c.action == "delete"]

    def count(self, action: str) -> int:
        return sum(1 for c in self.changes if c.action == action)

    def table(self) -> str:
        lines = [f"{'kind':<16}{'create':>8}{'update':>8}{'unchanged':>11}"]
        for kind in KINDS:
            counts = [len(self.names(kind, a)) for a in ("create", "update", "unchanged")]
            lines.append(f"{kind:<16}{counts[0]:>8}{counts[1]:>8}{counts[2]:>11}")
        for c in self.changes:
            if c.action in ("create", "update", "unregistered", "delete"):
                what = f"  {c.action} {c.kind} {c.name}"
                if c.fields:
                    what += f": {', '.join(c.fields)}"
                if c.detail:
                    what += f" ({c.detail})"
                lines.append(what)
        return "\n".join(lines)

    def summary(self) -> str:
        created, updated, unchanged = self.count("create"), self.count("update"), self.count("unchanged")
        text = (
            f"chirpstack sync, tenant {self.tenant_id}: "
            f"{'would create' if self.dry_run else 'created'} {created}, "
            f"{'would update' if self.dry_run else 'updated'} {updated}, unchanged {unchanged}"
        )
        if self.unregistered:
            text += f", {len(self.unregistered)} devices not in the registry (kept; --prune deletes them)"
        if self.deleted:
            text += f", {'would delete' if self.dry_run else 'deleted'} {len(self.deleted)} unregistered devices"
        if self.dry_run:
            text += "; dry run: nothing written"
        return text


# -- keys file ------------------------------------------------------------------------------------------
def load_keys(
    path: Path | None, devices: dict[str, str], need_app_key: set[str] | frozenset[str] = frozenset()
) -> dict[str, tuple[str, str]]:
    """The root keys of ``devices`` (DevEUI -> sensor id) from the YAML keys file: DevEUI -> (nwk_key, app_key).

    ``app_key`` is "" when the file gives none (ChirpStack stores no AppKey then); it is required for the
    DevEUIs in ``need_app_key`` (LoRaWAN 1.1 devices). Error messages name devices and the file, never a key.
    """
    if not devices:
        return {}
    if path is None:
        raise ConfigurationError(
            "chirpstack.keys_file is not set; it must give the root keys of the LoRaWAN "
            f"devices {', '.join(sorted(devices.values()))}"
        )
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigurationError(f"cannot read the ChirpStack keys file {path}: {exc.strerror}") from None
    if mode & 0o077:
        log.warning("ChirpStack keys file %s can be read by other users (mode %o): chmod 600 it", path, mode & 0o777)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:  # its message quotes the offending line: it may hold a key
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ConfigurationError(f"ChirpStack keys file {path} is not valid YAML{where}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigurationError(
            f"ChirpStack keys file {path}: expected a mapping <dev_eui>: {{nwk_key: <32 hex>, app_key: <32 hex>}}"
        )

    keys: dict[str, tuple[str, str]] = {}
    for dev_eui_raw, entry in raw.items():
        if not isinstance(dev_eui_raw, str):
            raise ConfigurationError(
                f"ChirpStack keys file {path}: DevEUI {dev_eui_raw!r} is not a string: quote it "
                "(YAML reads unquoted digits as a number)"
            )
        dev_eui = dev_eui_raw.strip().lower()
        label = f"{devices[dev_eui]} ({dev_eui})" if dev_eui in devices else dev_eui
        if not _EUI.fullmatch(dev_eui):
            raise ConfigurationError(
                f"ChirpStack keys file {path}: {dev_eui_raw!r} is not a DevEUI (16 hexadecimal digits)"
            )
        if dev_eui in keys:
            raise ConfigurationError(f"ChirpStack keys file {path}: device {label} is given twice")
        if not isinstance(entry, dict):
            raise ConfigurationError(
                f"ChirpStack keys file {path}: device {label}: expected {{nwk_key: <32 hex>, app_key: <32 hex>}}"
            )
        unknown = sorted(str(k) for k in entry if k not in ("nwk_key", "app_key"))
        if unknown:
            raise ConfigurationError(
                f"ChirpStack keys file {path}: device {label}: unknown fields {unknown}; known: nwk_key, app_key"
            )
        values = {}
        for name in ("nwk_key", "app_key"):
            value = entry.get(name)
            if value is None:
                values[name] = ""
                continue
            if not isinstance(value, str):
                raise ConfigurationError(
                    f"ChirpStack keys file {path}: device {label}: {name} must be a quoted "
                    "string of 32 hexadecimal digits"
                )
            value = value.strip().lower()
            if not _KEY.fullmatch(value):
                raise ConfigurationError(
                    f"ChirpStack keys file {path}: device {label}: {name} must be 32 "
                    "hexadecimal digits (a 128-bit AES key)"
                )
            values[name] = value
        if not values["nwk_key"]:
            raise ConfigurationError(
                f"ChirpStack keys file {path}: device {label}: nwk_key is missing (for "
                "LoRaWAN 1.0.x devices it is the AppKey printed on the device)"
            )
        keys[dev_eui] = (values["nwk_key"], values["app_key"])

    missing = sorted(f"{sid} ({eui})" for eui, sid in devices.items() if eui not in keys)
    if missing:
        raise ConfigurationError(
            f"ChirpStack keys file {path} has no keys for the LoRaWAN devices {', '.join(missing)}"
        )
    no_app_key = sorted(f"{devices[e]} ({e})" for e in need_app_key if e in devices and not keys[e][1])
    if no_app_key:
        raise ConfigurationError(
            f"ChirpStack keys file {path}: LoRaWAN 1.1 devices need an app_key as well: {', '.join(no_app_key)}"
        )
    extra = len(set(keys) - set(devices))
    if extra:
        log.info("ChirpStack keys file %s: %d entries for devices the registry does not have (ignored)", path, extra)
    return {eui: keys[eui] for eui in devices}


# -- desired state --------------------------------------------------------------------------------------
def _enum(enum, value: str, what: str, profile: str) -> int:
    try:
        return enum.Value(value)
    except ValueError:
        raise ConfigurationError(
            f"device profile {profile}: unknown {what} {value!r}; ChirpStack knows {', '.join(enum.keys())}"
        ) from None


def desired_profile(p: DeviceProfile, tenant_id: str) -> api.DeviceProfile:
    if not p.adr_algorithm.strip():
        raise ConfigurationError(f"device profile {p.name}: adr_algorithm is empty")
    tags = {"smartzone_codec": p.codec or "none"}
    if p.vendor:
        tags["smartzone_vendor"] = p.vendor
    return api.DeviceProfile(
        tenant_id=tenant_id,
        name=p.name,
        description=p.description,
        region=_enum(common.Region, p.region, "region", p.name),
        mac_version=_enum(common.MacVersion, p.mac_version, "mac_version", p.name),
        reg_params_revision=_enum(
            common.RegParamsRevision, p.regional_parameters_revision, "regional_parameters_revision", p.name
        ),
        adr_algorithm_id=p.adr_algorithm,
        payload_codec_runtime=api.CAYENNE_LPP if p.chirpstack_codec == "cayenne_lpp" else api.NONE,
        supports_otaa=p.supports_otaa,
        supports_class_c=p.supports_class_c,
        uplink_interval=p.uplink_interval,
        tags=tags,
    )


PROFILE_FIELDS = (
    "name",
    "description",
    "region",
    "mac_version",
    "reg_params_revision",
    "adr_algorithm_id",
    "payload_codec_runtime",
    "supports_otaa",
    "supports_class_c",
    "uplink_interval",
)


def _merge_tags(target, desired: dict[str, str], owned: tuple[str, ...]) -> bool:
    """Set our tags on ``target.tags`` (a protobuf map), keep the others; True if anything changed."""
    changed = False
    for key in owned:
        if key in desired:
            if target.tags.get(key) != desired[key]:
                target.tags[key] = desired[key]
                changed = True
        elif key in target.tags:
            del target.tags[key]
            changed = True
    return changed


def _validate_name(value: str, what: str, limit: int = 100) -> str:
    if not value.strip() or len(value) > limit or any(ord(ch) < 32 for ch in value):
        raise ConfigurationError(f"{what} {value!r}: give a non-empty single-line name of at most {limit} characters")
    return value


# -- gRPC -----------------------------------------------------------------------------------------------
class _Client:
    def __init__(self, cfg: ChirpStackSettings) -> None:
        token = cfg.api_token.get_secret_value().strip() if cfg.api_token is not None else ""
        if not token:
            raise ConfigurationError(
                "chirpstack.api_token is not set: create an API key in ChirpStack "
                "(Tenant > API keys) and set SMARTZONE_CHIRPSTACK__API_TOKEN"
            )
        if not cfg.api_url.strip():
            raise ConfigurationError("chirpstack.api_url is empty: give host:port of ChirpStack's gRPC API")
        self.cfg = cfg
        self.url = cfg.api_url.strip()
        self.channel = (
            grpc.secure_channel(self.url, grpc.ssl_channel_credentials())
            if cfg.tls
            else grpc.insecure_channel(self.url)
        )
        self.metadata = (("authorization", f"Bearer {token}"),)
        self.stubs = {
            "GatewayService": api.GatewayServiceStub(self.channel),
            "DeviceProfileService": api.DeviceProfileServiceStub(self.channel),
            "ApplicationService": api.ApplicationServiceStub(self.channel),
            "DeviceService": api.DeviceServiceStub(self.channel),
        }
        self.token_accepted = False  # a tenant-scoped call succeeded: later UNAUTHENTICATED means "cannot see it"

    def close(self) -> None:
        self.channel.close()

    def call(self, service: str, method: str, request, *, what: str = "", absent: bool = False):
        """One unary call with the token and deadline. ``absent``: NOT_FOUND (and, once the token is known
        to be good, UNAUTHENTICATED / PERMISSION_DENIED: see the module docstring) return None."""
        name = f"{service}.{method}"
        try:
            response = getattr(self.stubs[service], method)(request, metadata=self.metadata, timeout=self.cfg.timeout)
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details() or ""
            if absent and (code == grpc.StatusCode.NOT_FOUND or (self.token_accepted and code in _HIDDEN)):
                return None
            raise self._error(name, code, details, what) from None
        self.token_accepted = True
        return response

    def _error(self, name: str, code: grpc.StatusCode, details: str, what: str) -> Exception:
        about = f" for {what}" if what else ""
        said = f": {details}" if details else ""
        if code in _HIDDEN:
            return ConfigurationError(
                f"ChirpStack refused the API token ({code.name} on {name}{about}{said}): chirpstack.api_token "
                f"must be a valid, not read-only API key of tenant {self.cfg.tenant_id} (or an admin key)"
            )
        if code == grpc.StatusCode.UNAVAILABLE:
            return ChirpStackError(
                f"cannot reach ChirpStack's gRPC API at {self.url} ({'TLS' if self.cfg.tls else 'plaintext'}; "
                f"{name}{said}): check chirpstack.api_url (host:port of ChirpStack's API) and chirpstack.tls",
                method=name,
                code=code,
            )
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return ChirpStackError(
                f"ChirpStack at {self.url} did not answer {name}{about} within "
                f"{self.cfg.timeout} s (chirpstack.timeout)",
                method=name,
                code=code,
            )
        if code == grpc.StatusCode.ALREADY_EXISTS:
            return ChirpStackError(
                f"ChirpStack {name}{about} failed: ALREADY_EXISTS{said}: it exists in ChirpStack "
                "where this API key cannot see it (another tenant?)",
                method=name,
                code=code,
            )
        return ChirpStackError(f"ChirpStack {name}{about} failed: {code.name}{said}", method=name, code=code)

    def pages(self, service: str, method: str, make_request: Callable[[int], object]) -> Iterator:
        offset = 0
        while True:
            response = self.call(service, method, make_request(offset))
            yield from response.result
            offset += len(response.result)
            if not response.result or offset >= response.total_count:
                return


# -- sync -----------------------------------------------------------------------------------------------
@dataclass
class _Plan:
    result: SyncResult
    steps: list[Callable[[], None]] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    profile_ids: dict[str, str] = field(default_factory=dict)
    application_id: str | None = None

    def add(self, change: Change, step: Callable[[], None] | None = None) -> None:
        self.result.changes.append(change)
        if step is not None:
            self.steps.append(step)


def sync(cfg: ChirpStackSettings, registry: Registry, *, dry_run: bool = False, prune: bool = False) -> SyncResult:
    """Make ChirpStack's tenant hold the registry's LoRaWAN gateways, profiles, application and devices."""
    tenant_id = cfg.tenant_id.strip()
    if not tenant_id:
        raise ConfigurationError(
            "chirpstack.tenant_id is not set: copy the tenant's id (a UUID) from ChirpStack "
            "(Tenants > <tenant>) into SMARTZONE_CHIRPSTACK__TENANT_ID"
        )
    try:
        uuid.UUID(tenant_id)
    except ValueError:
        raise ConfigurationError(f"chirpstack.tenant_id {tenant_id!r} is not a UUID") from None

    # Everything we can check without ChirpStack, before connecting.
    lw = registry.doc.lorawan
    app_name = _validate_name(lw.application, "lorawan.application")
    profiles = {name: desired_profile(p, tenant_id) for name, p in registry.device_profiles.items()}
    devices = [s for s in registry.sensors.values() if s.lorawan is not None]
    otaa = {
        s.keys[0]: s.id
        for s in devices
        if s.lorawan is not None and registry.device_profiles[s.lorawan.device_profile].supports_otaa
    }
    lorawan_11 = {
        s.keys[0]
        for s in devices
        if s.lorawan is not None and registry.device_profiles[s.lorawan.device_profile].mac_version == "LORAWAN_1_1_0"
    }
    keys = load_keys(cfg.keys_file, otaa, lorawan_11)

    client = _Client(cfg)
    plan = _Plan(SyncResult(tenant_id=tenant_id, dry_run=dry_run))
    try:
        _plan_profiles(client, plan, profiles, tenant_id)  # first: a tenant-scoped List proves the token
        _plan_application(client, plan, app_name, lw.description, tenant_id)
        _plan_gateways(client, plan, registry, tenant_id)
        _plan_devices(client, plan, devices, keys, tenant_id)
        _plan_unregistered(client, plan, {s.keys[0] for s in devices}, prune)
        if plan.conflicts:
            raise ConfigurationError(
                "ChirpStack holds objects the sync cannot take over (nothing was written): " + "; ".join(plan.conflicts)
            )
        if not dry_run:
            for step in plan.steps:
                step()
    finally:
        client.close()
    r = plan.result
    log.info(
        "chirpstack sync: %d created, %d updated, %d unchanged%s",
        r.count("create"),
        r.count("update"),
        r.count("unchanged"),
        " (dry run)" if dry_run else "",
    )
    return r


def _plan_profiles(client: _Client, plan: _Plan, profiles: dict[str, api.DeviceProfile], tenant_id: str) -> None:
    existing: dict[str, list[str]] = {}
    for item in client.pages(
        "DeviceProfileService",
        "List",
        lambda offset: api.ListDeviceProfilesRequest(tenant_id=tenant_id, tenant_only=True, limit=PAGE, offset=offset),
    ):
        existing.setdefault(item.name, []).append(item.id)
    for name, want in profiles.items():
        ids = existing.get(name, [])
        if len(ids) > 1:
            plan.conflicts.append(f"tenant has {len(ids)} device profiles named {name!r} ({', '.join(ids)})")
            continue
        if not ids:

            def create(want=want, name=name) -> None:
                resp = client.call(
                    "DeviceProfileService",
                    "Create",
                    api.CreateDeviceProfileRequest(device_profile=want),
                    what=f"device profile {name}",
                )
                plan.profile_ids[name] = resp.id

            if want.supports_class_c:
                want.class_c_timeout = 5  # ChirpStack's web-interface defaults, for what we do not own
            want.device_status_req_interval = 1
            want.flush_queue_on_activate = True
            plan.add(Change("device-profile", name, "create"), create)
            continue
        have = client.call(
            "DeviceProfileService", "Get", api.GetDeviceProfileRequest(id=ids[0]), what=f"device profile {name}"
        ).device_profile
        plan.profile_ids[name] = have.id
        update = api.DeviceProfile()
        update.CopyFrom(have)
        changed = [f for f in PROFILE_FIELDS if getattr(have, f) != getattr(want, f)]
        for f in changed:
            setattr(update, f, getattr(want, f))
        if _merge_tags(update, dict(want.tags), PROFILE_TAGS):
            changed.append("tags")
        if changed:

            def update_profile(update: api.DeviceProfile = update, name: str = name) -> None:
                client.call(
                    "DeviceProfileService",
                    "Update",
                    api.UpdateDeviceProfileRequest(device_profile=update),
                    what=f"device profile {name}",
                )

            plan.add(Change("device-profile", name, "update", tuple(changed)), update_profile)
        else:
            plan.add(Change("device-profile", name, "unchanged"))


def _plan_application(client: _Client, plan: _Plan, name: str, description: str, tenant_id: str) -> None:
    found = [
        a
        for a in client.pages(
            "ApplicationService",
            "List",
            lambda offset: api.ListApplicationsRequest(tenant_id=tenant_id, search=name, limit=PAGE, offset=offset),
        )
        if a.name == name
    ]
    if len(found) > 1:
        plan.conflicts.append(f"tenant has {len(found)} applications named {name!r} ({', '.join(a.id for a in found)})")
        return
    if not found:

        def create() -> None:
            app = api.Application(name=name, description=description, tenant_id=tenant_id)
            plan.application_id = client.call(
                "ApplicationService",
                "Create",
                api.CreateApplicationRequest(application=app),
                what=f"application {name}",
            ).id

        plan.add(Change("application", name, "create"), create)
        return
    plan.application_id = found[0].id
    if found[0].description == description:
        plan.add(Change("application", name, "unchanged"))
        return
    app = client.call(
        "ApplicationService", "Get", api.GetApplicationRequest(id=found[0].id), what=f"application {name}"
    ).application
    app.description = description
    plan.add(
        Change("application", name, "update", ("description",)),
        lambda: client.call(
            "ApplicationService", "Update", api.UpdateApplicationRequest(application=app), what=f"application {name}"
        ),
    )


def _plan_gateways(client: _Client, plan: _Plan, registry: Registry, tenant_id: str) -> None:
    for eui, g in registry.lora_gateways.items():
        what = f"gateway {g.id} ({eui})"
        tags = {"smartzone_id": g.id}
        have = client.call("GatewayService", "Get", api.GetGatewayRequest(gateway_id=eui), what=what, absent=True)
        if have is None:
            want = api.Gateway(
                gateway_id=eui,
                name=g.id,
                description=g.name,
                tenant_id=tenant_id,
                tags=tags,
                location=common.Location(latitude=g.position.lat, longitude=g.position.lon),
                stats_interval=STATS_INTERVAL,
            )

            def create_gateway(want: api.Gateway = want, what: str = what) -> None:
                client.call("GatewayService", "Create", api.CreateGatewayRequest(gateway=want), what=what)

            plan.add(Change("gateway", g.id, "create", detail=eui), create_gateway)
            continue
        gw = have.gateway
        if gw.tenant_id != tenant_id:
            plan.conflicts.append(
                f"{what} belongs to tenant {gw.tenant_id} in ChirpStack, not {tenant_id} "
                "(an update cannot move it: delete it there first)"
            )
            continue
        update = api.Gateway()
        update.CopyFrom(gw)
        changed = [f for f, want in (("name", g.id), ("description", g.name)) if getattr(gw, f) != want]
        update.name, update.description = g.id, g.name
        if abs(gw.location.latitude - g.position.lat) > 1e-7 or abs(gw.location.longitude - g.position.lon) > 1e-7:
            update.location.latitude, update.location.longitude = g.position.lat, g.position.lon
            changed.append("location")
        if _merge_tags(update, tags, GATEWAY_TAGS):
            changed.append("tags")
        if not update.stats_interval:
            update.stats_interval = STATS_INTERVAL  # older servers do not return it; 0 would be taken literally
        if changed:

            def update_gateway(update: api.Gateway = update, what: str = what) -> None:
                client.call("GatewayService", "Update", api.UpdateGatewayRequest(gateway=update), what=what)

            plan.add(Change("gateway", g.id, "update", tuple(changed), detail=eui), update_gateway)
        else:
            plan.add(Change("gateway", g.id, "unchanged", detail=eui))


def _plan_devices(
    client: _Client, plan: _Plan, devices: list[Sensor], keys: dict[str, tuple[str, str]], tenant_id: str
) -> None:
    foreign_apps: dict[str, str | None] = {}  # application id -> its tenant (None: this key cannot see it)
    for s in devices:
        dev_eui, lw = s.keys[0], s.lorawan
        assert lw is not None, f"sensor {s.id}: not a LoRaWAN device"  # the caller passes LoRaWAN sensors only
        what = f"device {s.id} ({dev_eui})"
        tags = {"smartzone_id": s.id, "category": s.category}

        def build(s=s, dev_eui=dev_eui, lw=lw, tags=tags, have: api.Device | None = None) -> api.Device:
            d = api.Device()
            if have is not None:
                d.CopyFrom(have)
            d.dev_eui, d.name, d.description, d.join_eui = dev_eui, s.id, s.model or s.description, lw.join_eui
            d.application_id = plan.application_id or ""
            d.device_profile_id = plan.profile_ids.get(lw.device_profile, "")
            _merge_tags(d, tags, DEVICE_TAGS)
            return d

        have = client.call("DeviceService", "Get", api.GetDeviceRequest(dev_eui=dev_eui), what=what, absent=True)
        if have is None:

            def create_device(build: Callable[..., api.Device] = build, what: str = what) -> None:
                client.call("DeviceService", "Create", api.CreateDeviceRequest(device=build()), what=what)

            plan.add(Change("device", s.id, "create", detail=dev_eui), create_device)
        else:
            d = have.device
            if d.application_id != plan.application_id:
                if d.application_id not in foreign_apps:
                    app = client.call(
                        "ApplicationService",
                        "Get",
                        api.GetApplicationRequest(id=d.application_id),
                        what=f"application of {what}",
                        absent=True,
                    )
                    foreign_apps[d.application_id] = app.application.tenant_id if app is not None else None
                if foreign_apps[d.application_id] != tenant_id:
                    plan.conflicts.append(
                        f"{what} is registered in ChirpStack in application {d.application_id} "
                        f"of another tenant: delete it there first"
                    )
                    continue
            changed = [
                f
                for f, want in (
                    ("name", s.id),
                    ("description", s.model or s.description),
                    ("application_id", plan.application_id),
                    ("device_profile_id", plan.profile_ids.get(lw.device_profile)),
                    ("join_eui", lw.join_eui),
                )
                if getattr(d, f) != want
            ]
            if any(d.tags.get(k) != tags.get(k) for k in DEVICE_TAGS):
                changed.append("tags")
            if changed:

                def update_device(
                    build: Callable[..., api.Device] = build, d: api.Device = d, what: str = what
                ) -> None:
                    client.call("DeviceService", "Update", api.UpdateDeviceRequest(device=build(have=d)), what=what)

                plan.add(Change("device", s.id, "update", tuple(changed), detail=dev_eui), update_device)
            else:
                plan.add(Change("device", s.id, "unchanged", detail=dev_eui))
        if dev_eui in keys:
            _plan_keys(client, plan, s, dev_eui, keys[dev_eui], exists=have is not None)


def _plan_keys(client: _Client, plan: _Plan, s: Sensor, dev_eui: str, key: tuple[str, str], *, exists: bool) -> None:
    what = f"keys of device {s.id} ({dev_eui})"
    nwk_key, app_key = key
    want = api.DeviceKeys(dev_eui=dev_eui, nwk_key=nwk_key, app_key=app_key)
    have = None
    if exists:
        resp = client.call(
            "DeviceService", "GetKeys", api.GetDeviceKeysRequest(dev_eui=dev_eui), what=what, absent=True
        )
        have = resp.device_keys if resp is not None else None
    if have is None:
        plan.add(
            Change("device-keys", s.id, "create", detail=dev_eui),
            lambda: client.call(
                "DeviceService", "CreateKeys", api.CreateDeviceKeysRequest(device_keys=want), what=what
            ),
        )
        return
    changed = [
        name
        for name, got, wanted in (
            ("nwk_key", have.nwk_key, nwk_key),
            ("app_key", have.app_key or NULL_KEY, app_key or NULL_KEY),
        )
        if got.lower() != wanted
    ]
    if changed:
        plan.add(
            Change("device-keys", s.id, "update", tuple(changed), detail=dev_eui),
            lambda: client.call(
                "DeviceService", "UpdateKeys", api.UpdateDeviceKeysRequest(device_keys=want), what=what
            ),
        )
    else:
        plan.add(Change("device-keys", s.id, "unchanged", detail=dev_eui))


def _plan_unregistered(client: _Client, plan: _Plan, registered: set[str], prune: bool) -> None:
    if plan.application_id is None:  # the application is yet to be created: it has no devices
        return
    app_id = plan.application_id
    for item in client.pages(
        "DeviceService", "List", lambda offset: api.ListDevicesRequest(application_id=app_id, limit=PAGE, offset=offset)
    ):
        if item.dev_eui in registered:
            continue
        label = item.name or item.dev_eui
        if prune:

            def delete_device(dev_eui: str = item.dev_eui) -> None:
                client.call(
                    "DeviceService",
                    "Delete",
                    api.DeleteDeviceRequest(dev_eui=dev_eui),
                    what=f"unregistered device {dev_eui}",
                )

            plan.add(Change("device", label, "delete", detail=item.dev_eui), delete_device)
        else:
            plan.add(Change("device", label, "unregistered", detail=item.dev_eui))
