"""The benchmarks' workloads: registries of a district-sized zone and the messages its gateways publish.

``bench/run.py`` (end to end, through mosquitto and influxd) and ``bench/pipeline_bench.py`` (the pipeline
alone) measure the same messages.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from gateways.simulator import SimulatedZone
from smartzone.registry import Registry

N_SENSORS = 500


def bench_registry(folder: Path) -> Path:
    """500 fixed sensors of every numeric kind behind 5 gateways: a district-sized zone."""
    cats = ["air_quality", "weather", "noise", "traffic", "energy", "pedestrian_flow", "gateway_health"]
    gateways = [{"id": f"bench-gw-{g}", "position": {"lat": 51.21 + g * 0.001, "lon": 4.395}} for g in range(5)]
    sensors = [
        {
            "id": f"bench-{i:04d}",
            "gateway": f"bench-gw-{i % 5}",
            "keys": [f"bench-{i:04d}"],
            "technology": "wifi",
            "category": cats[i % len(cats)],
            "format": "generic_json",
            "position": {"lat": 51.2085 + (i % 25) * 0.0004, "lon": 4.392 + (i // 25) * 0.0004},
        }
        for i in range(N_SENSORS)
    ]
    doc = {
        "zone": {"name": "bench", "city": "Antwerp", "timezone": "Europe/Brussels", "h3_resolution": 10},
        "gateways": gateways,
        "sensors": sensors,
    }
    path = folder / "bench-registry.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def make_messages(registry_path: Path, n: int, shape: str, seed: int):
    zone = SimulatedZone(Registry.load(registry_path), seed=seed)
    # start so that all readings are recent (inside retention, not in the future)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    out, readings = [], 0
    for e in zone.messages(start, rounds=10**9, step=1, shape=shape):
        take = min(len(e.truth), n - readings)
        if take < len(e.truth):
            break
        out.append((e.topic, e.payload, e.truth))
        readings += take
        if readings >= n:
            break
    return out


def lorawan_registry(folder: Path) -> Path:
    """500 LoRaWAN weather nodes (Cayenne LPP, decoded by our codec) and 3 LoRa gateways."""
    gateways = [
        {
            "id": f"bench-lora-gw-{g}",
            "position": {"lat": 51.208 + g * 0.004, "lon": 4.392 + g * 0.003},
            "technologies": ["lora"],
            "eui": f"b827ebfffe00{g:04x}",
        }
        for g in range(3)
    ]
    sensors = [
        {
            "id": f"bench-lora-{i:04d}",
            "keys": [f"70b3d57ed000{i:04x}"],
            "technology": "lora",
            "category": "weather",
            "format": "chirpstack",
            "lorawan": {"device_profile": "bench-lpp"},
            "position": {"lat": 51.2085 + (i % 25) * 0.0004, "lon": 4.392 + (i // 25) * 0.0004},
        }
        for i in range(N_SENSORS)
    ]
    doc = {
        "zone": {"name": "bench", "city": "Antwerp", "timezone": "Europe/Brussels", "h3_resolution": 10},
        "gateways": gateways,
        "sensors": sensors,
        "lorawan": {"device_profiles": [{"name": "bench-lpp", "codec": "cayenne_lpp"}]},
    }
    path = folder / "bench-lorawan-registry.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def lorawan_messages(registry_path: Path, uplinks: int, encoding: str) -> tuple[list, int, int]:
    """(messages, readings, radio receptions) of ``uplinks`` up events; no frame lost nor duplicated."""
    from chirpstack_api.integration import integration_pb2 as pb

    from gateways import lorawan

    lorawan.LOSS_RATE, lorawan.DUPLICATE_RATE = 0.0, 0.0
    zone = SimulatedZone(Registry.load(registry_path), seed=3, lorawan_encoding=encoding)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    out, readings, receptions = [], 0, 0
    for e in zone.messages(start, rounds=uplinks // N_SENSORS + 1, step=1):
        if not e.topic.endswith("/event/up"):
            continue
        out.append((e.topic, e.payload, e.truth))
        readings += len(e.truth)
        ev = pb.UplinkEvent.FromString(e.payload) if encoding == "protobuf" else None
        receptions += len(ev.rx_info) if ev is not None else e.payload.count(b'"gatewayId"')
        if len(out) >= uplinks:
            break
    return out, readings, receptions
