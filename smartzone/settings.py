"""Settings: environment variables over ``smartzone.toml`` over defaults.

Every field is documented in ``smartzone.example.toml`` (a test checks that file covers them all).
Build settings with ``get_settings()`` and pass them in; nothing is read at import time.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from smartzone.errors import ConfigurationError
from smartzone.names import check_identifier, parse_duration

EXAMPLE_SECRET = "changethis"  # noqa: S105 - the value we refuse, not a secret

# The files the package ships (one wheel, its packages side by side): defaults are found beside the installed
# code, in a checkout and in site-packages alike, never relative to the current directory. A path given in
# smartzone.toml or the environment replaces them (a relative one is read from the current directory).
SHIPPED = Path(__file__).resolve().parent.parent
DEMO_REGISTRY = SHIPPED / "gateways" / "registry" / "antwerp.yaml"
SHIPPED_CHARTER = SHIPPED / "datacharter" / "charter.yaml"


def _mqtt_name(v: str) -> str:
    if any(c in v for c in "/+#") or any(ord(c) < 32 for c in v):
        raise ValueError(f"{v!r} may not contain '/', '+', '#' or control characters")
    return v


class PeerSettings(BaseModel):
    """Another ingest worker of this worker's share group, whose session this worker may take out of the
    group when it dies (``mqtt.peers``). On a broker that binds the client id to the username (one user
    per worker), that needs the peer's credentials: the password from a file or the environment."""

    client_id: str
    username: str | None = None  # default: the client id (use_username_as_clientid)
    password: SecretStr | None = None
    password_file: Path | None = None

    @field_validator("client_id")
    @classmethod
    def _name(cls, v: str) -> str:
        return _mqtt_name(v)

    def credentials(self) -> tuple[str, str | None] | None:
        """(username, password) to log in as this peer; None: connect without credentials."""
        if self.password_file is not None:
            try:
                secret: str | None = self.password_file.read_text().strip()
            except OSError as exc:
                raise ConfigurationError(f"mqtt.peers {self.client_id}: cannot read password_file: {exc}") from exc
        else:
            secret = self.password.get_secret_value() if self.password else None
        if secret is None and self.username is None:
            return None
        return self.username or self.client_id, secret


class MqttSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    tls: bool = False
    ca_file: Path | None = None
    client_id: str = "smartzone-ingest-1"
    share_group: str = "ingest"
    keepalive: int = Field(default=30, ge=5, le=3600)
    receive_maximum: int = Field(default=10_000, ge=1, le=65535)
    peers: list[PeerSettings] = Field(default_factory=list)
    failover_after: int = Field(default=2, ge=0, le=3600)

    @field_validator("share_group", "client_id")
    @classmethod
    def _mqtt_name(cls, v: str) -> str:
        return _mqtt_name(v)

    @model_validator(mode="after")
    def _peers_are_others(self) -> MqttSettings:
        if any(p.client_id == self.client_id for p in self.peers):
            raise ValueError(f"mqtt.peers names this worker's own client id {self.client_id!r}")
        if self.peers and not self.share_group:
            raise ValueError("mqtt.peers needs a share_group (the workers share the load)")
        return self


class InfluxSettings(BaseModel):
    url: str = "http://127.0.0.1:8086"
    username: str | None = None
    password: SecretStr | None = None
    raw_database: str = "smartzone_raw"
    ops_database: str = "smartzone_ops"
    pseudonymous_database: str = "smartzone_pseudonymous"
    experiments_database: str = "smartzone_experiments"  # experiments' metrics and events: never read by the charter
    ops_retention: str = "90d"
    experiments_retention: str = "90d"
    timeout: float = Field(default=10.0, gt=0)
    gzip: bool = True

    @field_validator("raw_database", "ops_database", "pseudonymous_database", "experiments_database")
    @classmethod
    def _identifier(cls, v: str) -> str:
        return check_identifier(v)

    @field_validator("ops_retention", "experiments_retention")
    @classmethod
    def _duration(cls, v: str) -> str:
        parse_duration(v)
        return v


class Route(BaseModel):
    filter: str
    decoder: str


DEFAULT_ROUTES = [
    Route(filter="gw/+/zigbee2mqtt/#", decoder="zigbee2mqtt"),
    Route(filter="gw/+/tele/+/SENSOR", decoder="tasmota"),
    Route(filter="gw/+/+/+/BTtoMQTT/+", decoder="ble_gateway"),
    Route(filter="gw/+/senml/#", decoder="senml"),
    Route(filter="gw/+/+/sensor/+/state", decoder="esphome"),
    Route(filter="gw/+/+/binary_sensor/+/state", decoder="esphome"),
    Route(filter="gw/+/json/#", decoder="generic_json"),
    Route(filter="gw/+/sightings/#", decoder="sightings"),
    Route(filter="gw/+/health", decoder="gateway_agent"),  # the gateway agent's heartbeat and status
    Route(filter="gw/+/status", decoder="gateway_agent"),
    Route(filter="gw/+/selftest", decoder="gateway_agent"),
    # protocol experiments (ingest/decoders/experiments.py): into the experiments database only
    Route(filter="gw/+/experiments/+/metrics", decoder="experiments"),
    Route(filter="gw/+/experiments/reported", decoder="experiments"),
    Route(filter="smartzone/experiments/events", decoder="experiments"),
    Route(filter="application/+/device/+/event/+", decoder="chirpstack"),
]
# Subscribed besides the routes: a message here that no route matches is a ``no_route`` dead letter.
DEFAULT_WATCH = ["gw/#", "application/#"]
# Watched topics that are not readings and belong to someone else: acknowledged and dropped, not dead letters.
DEFAULT_IGNORE = [
    "gw/+/experiments/#",  # an experiment's own traffic and the desired documents (metrics, reported: routed)
    "application/+/device/+/command/#",  # downlinks queued for ChirpStack
    "gw/+/tele/+/STATE",  # Tasmota's telemetry other than SENSOR, its last will, results and commands
    "gw/+/tele/+/LWT",
    "gw/+/tele/+/INFO1",
    "gw/+/tele/+/INFO2",
    "gw/+/tele/+/INFO3",
    "gw/+/stat/#",
    "gw/+/cmnd/#",
    "gw/+/+/+/LWT",  # Theengs Gateway / OpenMQTTGateway: last will and system status
    "gw/+/+/+/SYStoMQTT",
    "gw/+/+/status",  # ESPHome: availability and debug log of a node
    "gw/+/+/debug",
]


class IngestSettings(BaseModel):
    routes: list[Route] = Field(default_factory=lambda: list(DEFAULT_ROUTES))
    batch_size: int = Field(default=5_000, ge=1)
    flush_interval: float = Field(default=0.2, gt=0)
    max_payload_bytes: int = Field(default=65_536, ge=64)
    max_future: float = Field(default=300.0, ge=0)
    max_buffer_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    spool_after: float = Field(default=10.0, ge=0)
    probe_interval: float = Field(default=1.0, gt=0)
    probe_timeout: float = Field(default=2.0, gt=0)
    metrics_interval: float = Field(default=5.0, gt=0)
    watch: list[str] = Field(default_factory=lambda: list(DEFAULT_WATCH))
    ignore: list[str] = Field(default_factory=lambda: list(DEFAULT_IGNORE))
    no_route_keep_bytes: int = Field(default=4096, ge=0)
    no_route_per_hour: int = Field(default=60, ge=0)


class ChirpStackSettings(BaseModel):
    """ChirpStack v4's gRPC API, for ``smartzone chirpstack sync`` (the worker needs none of it)."""

    api_url: str = "127.0.0.1:8080"  # host:port of ChirpStack's gRPC API (its [api] bind)
    api_token: SecretStr | None = None  # an API key made in ChirpStack's web interface (tenant or admin)
    tls: bool = False
    tenant_id: str = ""  # the tenant (UUID) the zone's gateways, profiles and application belong to
    keys_file: Path | None = None  # YAML: <dev_eui>: {nwk_key: <32 hex>, app_key: <32 hex>}; never in the repo
    timeout: float = Field(default=10.0, gt=0)


class CharterSettings(BaseModel):
    """The data charter and its job (``smartzone charter ...``)."""

    path: Path = SHIPPED_CHARTER  # default: the charter the package ships
    open_database: str = "smartzone_open"  # the only database the open-data API reads
    open_retention: str = "INF"
    every: str = "1m"  # how often ``smartzone charter run`` (and ``smartzone up``) runs the job
    settle: str = "2m"  # a time bin is published this long after it ends (stragglers in flight)
    late_window: str = "2d"  # closed windows this recent are re-processed when late raw data arrives
    noise_key_file: Path | None = None  # default: <data_dir>/charter/noise.key (created on first use, 0600)
    # a window whose coverage (share of the expected readings that arrived) is below this is flagged low
    coverage_threshold: float = Field(default=0.8, ge=0, le=1)

    @field_validator("open_database")
    @classmethod
    def _identifier(cls, v: str) -> str:
        return check_identifier(v)

    @field_validator("open_retention", "every", "settle", "late_window")
    @classmethod
    def _duration(cls, v: str) -> str:
        parse_duration(v)
        return v


class ApiSettings(BaseModel):
    """The open-data API (``smartzone api``). It reads the open database and the registry, nothing else."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    # the public URL (https://data.example.org) of links and DCAT; required outside development, where the
    # default is http://<host>:<port>; never taken from a request's Host or X-Forwarded-* headers
    base_url: str = ""
    # reverse proxies (addresses or networks) whose X-Forwarded-For/-Proto are believed; none by default
    trusted_proxies: list[str] = Field(default_factory=list)
    cors_origins: list[str] = Field(default_factory=lambda: ["*"])  # browser clients allowed to read
    rate_limit: float = Field(default=20.0, gt=0)  # requests per second per client (token bucket), sustained
    rate_burst: int = Field(default=100, ge=1)  # requests a client may send at once
    page_size: int = Field(default=10_000, ge=1)  # observations per page unless ``limit`` says otherwise
    max_page_size: int = Field(default=1_000_000, ge=1)  # the largest ``limit`` (CSV and Parquet stream it)
    max_range_days: int = Field(default=366, ge=1)  # the longest ``from``-``to`` window of one request
    max_cells: int = Field(default=500, ge=1)  # the most cells a request may name (``cells`` or a ``bbox``)
    max_query_bytes: int = Field(default=4096, ge=256)  # longer query strings are refused (414)
    workers: int = Field(default=1, ge=1, le=64)  # uvicorn worker processes
    cache_bytes: int = Field(default=64 * 2**20, ge=0)  # memory for responses that can no longer change: closed windows
    publisher_url: str = "https://www.antwerpen.be"  # DCAT publisher homepage

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, v: list[str]) -> list[str]:
        for proxy in v:
            try:
                ipaddress.ip_network(proxy.strip(), strict=False)
            except ValueError:
                raise ValueError(
                    f"api.trusted_proxies: {proxy!r} is not an IP address or network (10.0.0.5, 172.16.0.0/12)"
                ) from None
        return [p.strip() for p in v]


class GrafanaSettings(BaseModel):
    """Where ``smartzone dashboards push`` provisions the dashboards, and how Grafana reaches InfluxDB."""

    url: str = "http://127.0.0.1:3000"
    token: SecretStr | None = None  # a Grafana service-account token with the Editor or Admin role
    influx_url: str = ""  # InfluxDB as Grafana's server reaches it; default: influx.url
    influx_username: str | None = None  # a read-only InfluxDB user for the open and ops databases
    influx_password: SecretStr | None = None
    verify_tls: bool = True


class StorageSettings(BaseModel):
    sql_url: str = ""  # default: sqlite:///<data_dir>/smartzone.db


class ExperimentSettings(BaseModel):
    """Protocol experiments on gateways (docs/parts/experiments.md)."""

    # the key of the HMACs that derive each (experiment, gateway)'s broker password and upload token, so nothing
    # secret is stored and a restarted scheduler republishes the same credentials; default: a random key kept in
    # <data_dir>/experiments/secret (0600), shared by the API and the scheduler through the data volume
    secret: SecretStr | None = None
    broker_username: str = "smartzone-experiments"  # the scheduler's broker user (and dynamic-security admin)
    broker_password: SecretStr | None = None  # default: mqtt.password (development: one broker user for all)
    artifact_max_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    results_max_bytes: int = Field(default=200 * 1024 * 1024, gt=0)
    max_duration_s: int = Field(default=7 * 24 * 3600, gt=0)
    launch_lead_s: float = Field(default=60.0, ge=0)  # desired state goes out this long before the start
    start_grace_s: float = Field(default=300.0, gt=0)  # not Running this long after the start: Error
    finish_grace_s: float = Field(default=120.0, gt=0)  # after the deadline: wait this long for final reports
    tick_s: float = Field(default=1.0, gt=0)  # the scheduler's period


class SimulatorSettings(BaseModel):
    seed: int = 42
    rate: float = Field(default=50.0, ge=0)
    duration: float = Field(default=0.0, ge=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SMARTZONE_", env_nested_delimiter="__", extra="forbid", toml_file="smartzone.toml"
    )

    environment: str = "development"
    data_dir: Path = Path(".smartzone")
    registry: Path = DEMO_REGISTRY  # default: the demo zone's registry the package ships
    log_level: str = "INFO"
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    influx: InfluxSettings = Field(default_factory=InfluxSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    simulator: SimulatorSettings = Field(default_factory=SimulatorSettings)
    chirpstack: ChirpStackSettings = Field(default_factory=ChirpStackSettings)
    charter: CharterSettings = Field(default_factory=CharterSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    grafana: GrafanaSettings = Field(default_factory=GrafanaSettings)
    experiments: ExperimentSettings = Field(default_factory=ExperimentSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = os.environ.get("SMARTZONE_CONFIG", "smartzone.toml")
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=toml))

    @model_validator(mode="after")
    def _check_secrets(self) -> Settings:
        if self.environment != "development":
            for name, secret in (
                ("mqtt.password", self.mqtt.password),
                ("influx.password", self.influx.password),
                ("chirpstack.api_token", self.chirpstack.api_token),
                ("experiments.secret", self.experiments.secret),
                ("experiments.broker_password", self.experiments.broker_password),
                *((f"mqtt.peers {p.client_id} password", p.password) for p in self.mqtt.peers),
            ):
                if secret is not None and secret.get_secret_value() == EXAMPLE_SECRET:
                    raise ValueError(f"{name} is the example value {EXAMPLE_SECRET!r}: set a real secret")
        return self

    def public_base_url(self) -> str:
        """The URL the API's links are built on: ``api.base_url``; in development, by default,
        ``http://<api.host>:<api.port>``. Outside development it must be set (a ConfigurationError)."""
        api = self.api
        if api.base_url:
            parts = urlsplit(api.base_url)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
                raise ConfigurationError(
                    f"api.base_url {api.base_url!r}: give the API's public http(s) URL, e.g. https://data.example.org"
                )
            return api.base_url.rstrip("/")
        if self.environment != "development":
            raise ConfigurationError(
                f"api.base_url is required when environment is {self.environment!r}: set the API's public URL "
                "(SMARTZONE_API__BASE_URL=https://data.example.org); links are never built from a request's Host"
            )
        host = "localhost" if api.host in ("0.0.0.0", "::", "") else api.host  # noqa: S104 - compared, not bound
        return f"http://[{host}]:{api.port}" if ":" in host else f"http://{host}:{api.port}"

    @property
    def sql_url(self) -> str:
        return self.storage.sql_url or f"sqlite:///{self.data_dir / 'smartzone.db'}"


def get_settings(**overrides: Any) -> Settings:
    """Build settings from the environment and the TOML file; a bad value is a ConfigurationError."""
    try:
        return Settings(**overrides)
    except ValueError as exc:
        raise ConfigurationError(f"invalid settings: {exc}") from exc
