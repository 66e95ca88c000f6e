"""``smartzone gateway render``: the Raspberry Pi reference gateway's files, for every gateway of the demo
registry (issue 15, section 1).

Each file is read by the tool that reads it where that tool exists here: the local ``mosquitto.conf`` starts
Debian's Mosquitto 2.0.11 (its listener port and persistence folder moved into the test's folder, nothing
else) and a client round-trips through it; the systemd units pass ``systemd-analyze verify`` (systemd 252, in a
fake root where each ExecStart* program is a stub, since the Pi's programs are not installed here);
``install.sh`` passes ``bash -n`` and ShellCheck, and runs twice with stub system commands under a folder (the
second run changes nothing); the JSON, TOML and YAML files parse and hold the keys their
programs read. The files agree with each other and with the central side: ids, the forwarder's UDP port, the
region's topic prefix, the central ACL of the gateway's user, the ingest routes. Not run here: lora_pkt_fwd,
the ChirpStack Gateway Bridge, zigbee2mqtt, Theengs Gateway, cloud-init, and what install.sh asks of apt, git and
pip (no Pi).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from cli import broker, services
from cli.main import main
from gateways import render as rd
from smartzone.errors import ConfigurationError
from smartzone.registry import PLACEHOLDER_EUIS, Registry
from smartzone.settings import DEFAULT_IGNORE, DEFAULT_ROUTES
from tests.conftest import REGISTRY, wait_for

REG = Registry.load(REGISTRY)
GATEWAYS = [g.id for g in REG.doc.gateways]
PREFIX = rd.region_topic_prefix()
SECRET = "s3cret-for-the-test"


def _render(folder: Path, gateway_id: str, ca: Path | None = None) -> rd.Rendered:
    return rd.render(REG, gateway_id, folder, f"{SECRET}-{gateway_id}", ca)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rendered")
    ca = root / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    out = {}
    for gid in GATEWAYS:
        done = _render(root / gid, gid, ca)
        assert all("agent" in w for w in done.warnings), done.warnings  # only: the agent's code not here yet
        out[gid] = root / gid
    return out


def _levels_overlap(a: list[str], b: list[str]) -> bool:
    if not a or not b:
        return a == b or (a[:1] == ["#"]) or (b[:1] == ["#"])
    if a[0] == "#" or b[0] == "#":
        return True
    return (a[0] == b[0] or "+" in (a[0], b[0])) and _levels_overlap(a[1:], b[1:])


def overlap(f1: str, f2: str) -> bool:
    """Some topic matches both filters."""
    return _levels_overlap(f1.split("/"), f2.split("/"))


def covers(pattern: str, filt: str) -> bool:
    """Every topic matching ``filt`` matches ``pattern`` (an ACL rule over a subscription or publish filter)."""
    p, f = pattern.split("/"), filt.split("/")
    for i, level in enumerate(p):
        if level == "#":
            return True
        if i >= len(f) or f[i] == "#" or (level != "+" and level != f[i]):
            return False
    return len(f) == len(p)


def central_topic(gateway_id: str, local: str) -> str:
    """The contract's mapping: eu868/gateway/... keeps its topic, the rest goes under gw/<id>/."""
    return local if local.startswith(f"{PREFIX}/gateway/") else f"gw/{gateway_id}/{local}"


# -- each file, parsed by what reads it ---------------------------------------------------------------------
@pytest.mark.parametrize("gid", GATEWAYS)
def test_structured_files_parse_with_the_keys_their_programs_read(rendered, gid):
    gw, folder = REG.gateways[gid], rendered[gid]
    pi = gw.pi
    assert pi is not None
    agent = tomllib.loads((folder / "agent.toml").read_text())
    assert agent["gateway_id"] == gid
    assert {"local", "central", "spool", "health", "selftest"} <= set(agent)
    assert agent["local"] == {"host": "127.0.0.1", "port": 1883, "relay": rd.relay_filters(gw, PREFIX)}
    assert agent["central"] == {
        "host": pi.central.host,
        "port": pi.central.port,
        "ca_file": "/etc/smartzone-gateway/ca.crt",
        "username": gid,
        "password_file": "/etc/smartzone-gateway/central.password",
        "keepalive": 30,
    }
    assert agent["spool"]["max_bytes"] > 0 and agent["health"]["interval"] == 30
    assert (folder / "ca.crt").read_text().startswith("-----BEGIN CERTIFICATE-----")

    if gw.eui is None:
        assert "lora_eui" not in agent and not (folder / "global_conf.json").exists()
        assert not (folder / "chirpstack-gateway-bridge.toml").exists()
    else:
        assert pi.concentrator is not None
        assert agent["lora_eui"] == gw.eui.upper() and len(agent["lora_eui"]) == 16
        conf = json.loads((folder / "global_conf.json").read_text())
        sx, gwc = conf["SX130x_conf"], conf["gateway_conf"]
        assert gwc["gateway_ID"] == gw.eui.upper() and gwc["gateway_ID"].lower() not in PLACEHOLDER_EUIS
        assert (gwc["server_address"], gwc["serv_port_up"], gwc["serv_port_down"]) == ("localhost", 1700, 1700)
        assert sx["com_type"] == "SPI" and sx["com_path"] == pi.concentrator.spi_device
        radio = {n: sx[f"radio_{n}"]["freq"] for n in (0, 1)}
        multi = sorted(radio[sx[f"chan_multiSF_{i}"]["radio"]] + sx[f"chan_multiSF_{i}"]["if"] for i in range(8))
        assert multi == [867_100_000 + 200_000 * i for i in range(5)] + [868_100_000, 868_300_000, 868_500_000]
        std = sx["chan_Lora_std"]
        assert (radio[std["radio"]] + std["if"], std["bandwidth"], std["spread_factor"]) == (868_300_000, 250_000, 7)
        assert agent["selftest"]["gpio_chip"] == ("gpiochip4" if pi.hardware == "raspberry-pi-5" else "gpiochip0")
        assert agent["selftest"]["reset_gpio"] == 17 and agent["selftest"]["forwarder_port"] == 1700

        bridge = tomllib.loads((folder / "chirpstack-gateway-bridge.toml").read_text())
        assert bridge["backend"]["type"] == "semtech_udp"
        assert bridge["backend"]["semtech_udp"]["udp_bind"] == "127.0.0.1:1700"
        assert bridge["integration"]["marshaler"] == "protobuf"
        m = bridge["integration"]["mqtt"]
        assert m["event_topic_template"] == f"{PREFIX}/gateway/{{{{ .GatewayID }}}}/event/{{{{ .EventType }}}}"
        assert m["state_topic_template"] == f"{PREFIX}/gateway/{{{{ .GatewayID }}}}/state/{{{{ .StateType }}}}"
        assert m["command_topic_template"] == f"{PREFIX}/gateway/{{{{ .GatewayID }}}}/command/#"
        assert m["state_retained"] is True and m["auth"]["type"] == "generic"
        assert m["auth"]["generic"]["servers"] == ["tcp://127.0.0.1:1883"]  # the LOCAL broker

    if pi.zigbee is None:
        assert not (folder / "zigbee2mqtt").exists()
    else:
        z2m = yaml.safe_load((folder / "zigbee2mqtt" / "configuration.yaml").read_text())
        assert z2m["serial"] == {"port": pi.zigbee.serial, "adapter": pi.zigbee.adapter}
        assert z2m["mqtt"]["server"] == "mqtt://127.0.0.1:1883" and z2m["mqtt"]["base_topic"] == "zigbee2mqtt"
        assert z2m["advanced"]["network_key"] == "GENERATE"
        assert z2m["frontend"]["enabled"] is False and z2m["availability"]["enabled"] is True
        assert agent["selftest"]["zigbee2mqtt_base_topic"] == z2m["mqtt"]["base_topic"]
        assert f"{z2m['mqtt']['base_topic']}/#" in agent["local"]["relay"]

    if pi.radios.ble is None:
        assert not (folder / "theengs-gateway.json").exists()
    else:
        theengs = json.loads((folder / "theengs-gateway.json").read_text())
        # Theengs Gateway reads its file as a whole: every key of its DEFAULT_CONFIG is there
        upstream = {"host", "port", "user", "pass", "ble_scan_time", "ble_time_between_scans", "publish_topic"}
        upstream |= {"lwt_topic", "subscribe_topic", "presence_topic", "presence", "publish_all", "log_level"}
        upstream |= {"discovery", "general_presence", "discovery_topic", "discovery_device_name", "adapter"}
        upstream |= {"discovery_filter", "scanning_mode", "time_sync", "time_format", "publish_advdata", "ble"}
        upstream |= {"bindkeys", "enable_tls", "tls_insecure", "ca_certs", "enable_websocket", "identities"}
        upstream |= {"tracker_timeout", "whitelist", "blacklist", "ignore_wblist", "enable_multi_gtw_sync"}
        assert upstream | {"trackersync_topic"} <= set(theengs)
        assert (theengs["host"], theengs["port"]) == ("127.0.0.1", 1883)
        assert theengs["publish_topic"] == f"home/{gid}/BTtoMQTT" and theengs["adapter"] == pi.radios.ble
        assert agent["selftest"]["hci"] == pi.radios.ble


@pytest.mark.parametrize("gid", GATEWAYS)
def test_every_file_says_it_is_generated(rendered, gid):
    for path in sorted(p for p in rendered[gid].rglob("*") if p.is_file()):
        name = path.relative_to(rendered[gid]).as_posix()
        if name in ("central.password", "ca.crt") or name.startswith("agent/"):
            continue
        text = path.read_text()
        if name.endswith(".json"):
            assert json.loads(text)[rd.GENERATED_KEY].startswith("Generated by `smartzone gateway render"), name
        else:
            assert f"Generated by `smartzone gateway render {gid}`" in "\n".join(text.splitlines()[:3]), name


@pytest.mark.parametrize("gid", GATEWAYS)
def test_the_local_mosquitto_starts_with_the_rendered_conf_and_a_client_round_trips(rendered, gid, tmp_path):
    text = (rendered[gid] / "mosquitto.conf").read_text()
    assert "listener 1883 127.0.0.1" in text and "persistence true" in text
    assert "connection " not in text and "address " not in text  # no bridge: the agent is the link
    port = services.free_port()
    conf = text.replace("listener 1883 127.0.0.1", f"listener {port} 127.0.0.1")
    conf = conf.replace("persistence_location /var/lib/mosquitto/", f"persistence_location {tmp_path}/")
    if os.geteuid() == 0:
        conf += "user root\n"  # as root it would drop to "mosquitto", which cannot enter pytest's 0700 folders
    (tmp_path / "mosquitto.conf").write_text(conf)
    svc = services.Service(
        "mosquitto", "127.0.0.1", port, tmp_path, [services.which("mosquitto"), "-c", str(tmp_path / "mosquitto.conf")]
    )
    svc.start()
    try:
        got: list[bytes] = []
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{gid}-probe")
        c.on_message = lambda client, userdata, m: got.append(m.payload)
        c.connect("127.0.0.1", port)  # anonymous, on loopback: as zigbee2mqtt, Theengs and the bridge do
        c.loop_start()
        subscribed: list[int] = []
        c.on_subscribe = lambda client, userdata, mid, rcs, props: subscribed.append(mid)
        _, mid = c.subscribe("zigbee2mqtt/#", qos=1)
        assert wait_for(lambda: mid in subscribed, timeout=5)
        c.publish("zigbee2mqtt/probe", b"ping", qos=1)
        assert wait_for(lambda: got == [b"ping"], timeout=5)
        c.loop_stop()
        c.disconnect()
    finally:
        svc.stop()


def test_units_pass_systemd_analyze_verify(rendered, tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("no systemd-analyze here")
    root = tmp_path / "root"
    units_dir = root / "etc" / "systemd" / "system"
    units_dir.mkdir(parents=True)
    (root / "usr" / "lib" / "systemd").mkdir(parents=True)
    (root / "usr" / "lib" / "systemd" / "system").symlink_to("/usr/lib/systemd/system")  # targets, mosquitto
    names = set()
    for gid in GATEWAYS:
        for unit in sorted((rendered[gid] / "systemd").glob("*.service")):
            names.add(unit.name)
            shutil.copy(unit, units_dir / unit.name)  # the same file for every gateway but for names
            for key, value in _unit_items(unit.read_text()):
                if key.startswith("Exec"):
                    program = root / value.lstrip("-@+!:").split()[0].lstrip("/")
                    program.parent.mkdir(parents=True, exist_ok=True)
                    program.write_text("#!/bin/sh\n")
                    program.chmod(0o755)
            sections = _unit_sections(unit.read_text())
            assert {"Unit", "Service", "Install"} <= set(sections), unit
            assert sections["Install"]["WantedBy"] == "multi-user.target"
            # the agent is root to run experiments as their own user; every other service is the gateway's user
            user = "root" if unit.name == "smartzone-gateway-agent.service" else "smartzone-gw"
            assert sections["Service"]["User"] == user and sections["Service"]["Restart"] == "always"
        units = [str(units_dir / n) for n in sorted(names)]
        run = subprocess.run([analyze, f"--root={root}", "verify", *units], capture_output=True, text=True)
        problems = [line for line in run.stderr.splitlines() if any(n in line for n in names)]
        assert run.returncode == 0 and problems == [], run.stderr
    # the check sees mistakes: a misspelt key and a missing program are reported
    bad = units_dir / "smartzone-typo.service"
    bad.write_text("[Service]\nExecStart=/usr/bin/nowhere\nRestrt=always\n")
    run = subprocess.run([analyze, f"--root={root}", "verify", str(bad)], capture_output=True, text=True)
    assert "Unknown key" in run.stderr and "not executable" in run.stderr


def _unit_items(text: str) -> list[tuple[str, str]]:
    return [
        tuple(line.split("=", 1))  # type: ignore[misc]
        for line in text.splitlines()
        if "=" in line and not line.startswith(("#", ";"))
    ]


def _unit_sections(text: str) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("["):
            current = out.setdefault(line.strip("[]"), {})
        elif "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            current[k] = v
    return out


@pytest.mark.parametrize("gid", GATEWAYS)
def test_install_sh_is_valid_bash_and_clean_for_shellcheck(rendered, gid):
    script = rendered[gid] / "install.sh"
    text = script.read_text()
    assert text.startswith("#!/bin/bash\n") and "\nset -eu\n" in text
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    # idempotent by construction: files are copied only when they differ, units restarted only then
    assert 'cmp -s "$1" "$2"' in text and 'if [ -n "$CHANGED" ]' in text
    for unit in rd.services(REG.gateways[gid]):
        assert unit in text and (rendered[gid] / "systemd" / unit).is_file()
    if shutil.which("shellcheck") is None:
        pytest.skip("no shellcheck here (apt-get install shellcheck)")
    run = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout


@pytest.mark.parametrize("gid", GATEWAYS)
def test_user_data_is_cloud_config_that_carries_the_files_and_runs_install_sh(rendered, gid):
    folder = rendered[gid]
    text = (folder / "user-data").read_text()
    assert text.startswith("#cloud-config\n")
    doc = yaml.safe_load(text)
    assert doc["hostname"] == gid
    carried = {f["path"].removeprefix("/opt/smartzone-gateway/rendered/"): f for f in doc["write_files"]}
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {"user-data"}
    assert set(carried) == on_disk
    for name, f in carried.items():
        assert base64.b64decode(f["content"]) == (folder / name).read_bytes(), name
        assert int(f["permissions"], 8) == stat.S_IMODE((folder / name).stat().st_mode), name
    assert doc["runcmd"] == [["bash", "/opt/smartzone-gateway/rendered/install.sh"]]


# -- the files agree with each other and with the central side ---------------------------------------------
@pytest.mark.parametrize("gid", GATEWAYS)
def test_topics_agree_with_the_region_the_central_acl_and_the_ingest_routes(rendered, gid):
    gw = REG.gateways[gid]
    agent = tomllib.loads((rendered[gid] / "agent.toml").read_text())
    # the central ACL of this gateway's user, as `smartzone broker users` writes it
    region = tomllib.loads(rd.REGION_FILE.read_text())["regions"][0]
    assert region["gateway"]["backend"]["mqtt"]["topic_prefix"] == PREFIX == "eu868"
    user = next(u for u in broker.users(REG, region_prefix=PREFIX) if u.name == agent["central"]["username"])
    assert user.name == gid
    for local in agent["local"]["relay"]:
        central = central_topic(gid, local)
        assert any(covers(rule, central) for rule in user.write), (local, central, user.write)
        if not local.startswith(f"{PREFIX}/gateway/"):
            # a reading's topic reaches an ingest route, or a consumer the worker knowingly leaves it to
            routed = [r.filter for r in DEFAULT_ROUTES if overlap(r.filter, central)]
            ignored = [f for f in DEFAULT_IGNORE if covers(f, central)]
            assert routed or ignored, (local, central)
    # what comes back down: its orders, and for a LoRa gateway its concentrator's commands
    assert any(covers(rule, f"gw/{gid}/experiments/desired") for rule in user.read)
    assert all(covers(f"gw/{gid}/#", r) or r.startswith(f"{PREFIX}/gateway/{gw.eui}/") for r in user.read)
    if gw.eui is not None:
        assert gw.eui == agent["lora_eui"].lower()
        bridge = tomllib.loads((rendered[gid] / "chirpstack-gateway-bridge.toml").read_text())["integration"]["mqtt"]
        # the bridge publishes (GatewayID = the EUI, lower-case) what the agent relays and the ACL allows
        for template, kind in (("event_topic_template", "event"), ("state_topic_template", "state")):
            topic = bridge[template].replace("{{ .GatewayID }}", gw.eui).split("{{")[0] + "x"
            assert any(mqtt.topic_matches_sub(f, topic) for f in agent["local"]["relay"]), topic
            assert any(mqtt.topic_matches_sub(w, topic) for w in user.write), topic
            assert topic.startswith(f"{PREFIX}/gateway/{gw.eui}/{kind}/")
        command = bridge["command_topic_template"].replace("{{ .GatewayID }}", gw.eui)
        assert command in user.read and command.startswith(f"{PREFIX}/")
        conf = json.loads((rendered[gid] / "global_conf.json").read_text())
        assert conf["gateway_conf"]["serv_port_up"] == int(bridge_port(rendered[gid])) == 1700
    if gw.pi and gw.pi.radios.ble:
        theengs = json.loads((rendered[gid] / "theengs-gateway.json").read_text())
        reading = central_topic(gid, theengs["publish_topic"] + "/A4C138000001")
        assert any(r.decoder == "ble_gateway" and mqtt.topic_matches_sub(r.filter, reading) for r in DEFAULT_ROUTES)
    if gw.pi and gw.pi.zigbee:
        reading = central_topic(gid, "zigbee2mqtt/0x00158d0001a2b3c4")
        assert any(r.decoder == "zigbee2mqtt" and mqtt.topic_matches_sub(r.filter, reading) for r in DEFAULT_ROUTES)


def bridge_port(folder: Path) -> str:
    bridge = tomllib.loads((folder / "chirpstack-gateway-bridge.toml").read_text())
    return bridge["backend"]["semtech_udp"]["udp_bind"].rsplit(":", 1)[1]


# -- experiments: their user, their folder, the firewall rule ------------------------------------------------
def nft_verdict(ruleset: str, uid: str, oif: str, proto: str, dport: int) -> str:
    """What the rendered ``output`` chain does with a packet: the first rule whose every match holds gives the
    verdict, else the chain's policy. Understands the matches experiments.nft uses (and fails on any other),
    since nft itself is not installed here and would need CAP_NET_ADMIN in the machine's network namespace."""
    chain = ruleset.split("chain output {", 1)[1].split("}", 1)[0]
    lines = [ln.strip() for ln in chain.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    policy = lines[0].split("policy ", 1)[1].rstrip(";")
    assert lines[0].startswith("type filter hook output priority filter;"), lines[0]
    for rule in lines[1:]:
        words = rule.split(" comment ", 1)[0].split()
        i, ok = 0, True
        while i < len(words):
            w = words[i : i + 2]
            if w == ["meta", "skuid"]:
                ok &= words[i + 2].strip('"') == uid
                i += 3
            elif w[0] == "oifname":
                ok &= words[i + 1].strip('"') == oif
                i += 2
            elif w[0] in ("tcp", "udp") and w[1] == "dport":
                ok &= proto == w[0] and int(words[i + 2]) == dport
                i += 3
            elif w == ["meta", "l4proto"]:
                ok &= words[i + 2] == proto
                i += 3
            elif w[0] == "counter":
                i += 1
            elif w[0] in ("accept", "reject", "drop"):
                if ok:
                    return w[0]
                break
            else:
                raise AssertionError(f"experiments.nft: {words[i]!r} in {rule!r} is not understood by this test")
    return policy


@pytest.mark.parametrize("gid", GATEWAYS)
def test_experiments_user_folder_and_firewall_agree(rendered, gid):
    from gateways.agent import config as agent_config

    folder = rendered[gid]
    cfg = agent_config.parse(tomllib.loads((folder / "agent.toml").read_text()))
    x = cfg.experiments
    assert (x.user, str(x.state_dir), x.kill_grace) == (rd.EXPERIMENTS_USER, rd.EXPERIMENTS_STATE, 10.0)
    assert (x.mqtt_host, x.mqtt_port) == (cfg.central.host, cfg.central.port)  # the centre, over TLS
    assert cfg.selftest.interval == 6 * 3600
    assert not any("experiments" in f for f in cfg.local.relay)  # experiments never publish through this broker
    nft = (folder / "experiments.nft").read_text()
    assert nft.startswith("#!/usr/sbin/nft -f\n# Generated by") and "@" not in nft  # every placeholder filled
    assert "table inet smartzone_experiments\ndelete table inet smartzone_experiments\n" in nft  # reloadable
    listener = next(ln for ln in (folder / "mosquitto.conf").read_text().splitlines() if ln.startswith("listener"))
    port = int(listener.split()[1])
    assert listener.split()[2] == "127.0.0.1"
    user = rd.EXPERIMENTS_USER
    assert nft_verdict(nft, user, "lo", "tcp", port) == "reject"  # the local broker
    assert nft_verdict(nft, user, "lo", "udp", rd.FORWARDER_PORT) == "reject"  # the Gateway Bridge
    assert nft_verdict(nft, user, "lo", "tcp", 8086) == "reject"  # any other local service
    assert nft_verdict(nft, user, "lo", "udp", 53) == "accept"  # a local DNS stub
    assert nft_verdict(nft, user, "eth0", "tcp", cfg.central.port) == "accept"  # the centre
    assert nft_verdict(nft, user, "wlan0", "udp", 5683) == "accept"  # its own protocol, off the Pi
    for other in ("smartzone-gw", "root", "mosquitto"):  # the gateway's own software is untouched
        assert nft_verdict(nft, other, "lo", "tcp", port) == "accept"
    unit = (folder / "systemd/smartzone-gateway-agent.service").read_text()
    service = _unit_sections(unit)["Service"]
    assert service["ExecStartPre"] == "/usr/sbin/nft -f /etc/smartzone-gateway/experiments.nft"
    assert service["User"] == "root" and service["KillMode"] == "process"  # experiments outlive an agent restart
    assert rd.EXPERIMENTS_STATE in service["ReadWritePaths"].split()
    install = (folder / "install.sh").read_text()
    assert f"EXP_USER=${{SMARTZONE_EXPERIMENTS_USER:-{user}}}" in install
    assert 'useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$EXP_USER"' in install
    assert 'install -d -m 0711 -o root -g root "$EXP_STATE"' in install
    assert 'put "$HERE/experiments.nft" "$ETC/experiments.nft" 644 root' in install
    # the test's reading of the chain can fail: the same rules for another user let everything through
    assert nft_verdict(nft.replace(user, "someone-else"), user, "lo", "tcp", port) == "accept"


# -- determinism, secrecy, the command ----------------------------------------------------------------------
def test_rendering_twice_gives_identical_files(tmp_path):
    for gid in GATEWAYS:
        _render(tmp_path / "one" / gid, gid)
        _render(tmp_path / "two" / gid, gid)
        _render(tmp_path / "two" / gid, gid)  # over its own output, too
    one = {p.relative_to(tmp_path / "one"): p.read_bytes() for p in (tmp_path / "one").rglob("*") if p.is_file()}
    two = {p.relative_to(tmp_path / "two"): p.read_bytes() for p in (tmp_path / "two").rglob("*") if p.is_file()}
    assert one == two and len(one) > 6 * 5


def test_secrets_are_only_in_0600_files(rendered):
    for gid in GATEWAYS:
        secret = f"{SECRET}-{gid}"
        for path in (p for p in rendered[gid].rglob("*") if p.is_file()):
            mode = stat.S_IMODE(path.stat().st_mode)
            assert mode & 0o002 == 0, path  # nothing world-writable
            holds = secret in path.read_text(errors="replace")
            if path.name in rd.SECRET_FILES:
                assert mode == 0o600, path
            else:
                assert not holds, path
        assert (rendered[gid] / "central.password").read_text() == secret + "\n"
        assert stat.S_IMODE((rendered[gid] / "install.sh").stat().st_mode) == 0o755


def test_the_command_renders_from_the_broker_secrets_and_never_into_the_repository(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SMARTZONE_REGISTRY", str(REGISTRY))
    with pytest.raises(SystemExit):
        main(["gateway", "render", "gw-volkstraat"])  # --out is required: no default folder in the repository
    assert main(["gateway", "render", "gw-volkstraat", "--out", "pi"]) == 2  # no password yet
    assert "smartzone broker users" in capsys.readouterr().err
    assert main(["broker", "users", "--out", "broker"]) == 0
    assert main(["gateway", "render", "gw-volkstraat", "--out", "pi", "--secrets", ".env"]) == 0
    password = broker.read_secrets(tmp_path / ".env")[broker.env_name("gw-volkstraat")]
    assert (tmp_path / "pi" / "central.password").read_text() == password + "\n"
    assert "install.sh" in capsys.readouterr().out
    assert main(["gateway", "render", "gw-nowhere", "--out", "x"]) == 2
    assert not (tmp_path / "x").exists()


def test_a_gateway_without_a_pi_section_is_not_rendered(tmp_path):
    text = REGISTRY.read_text()
    start = text.index("  - {id: gw-egmont")
    end = text.index("\n  - {id:", start + 1)
    entry = text[start:end]
    plain = entry.split(",\n     pi:")[0] + "}"
    path = tmp_path / "registry.yaml"
    path.write_text(text.replace(entry, plain))
    reg = Registry.load(path)
    with pytest.raises(ConfigurationError, match="no pi section"):
        rd.render(reg, "gw-egmont", tmp_path / "out", "pw")


# -- the registry's Pi section: line-numbered errors --------------------------------------------------------
def _broken(tmp_path: Path, old: str, new: str) -> tuple[Path, int]:
    text = REGISTRY.read_text()
    assert old in text
    line = text[: text.index(old)].count("\n") + 1
    path = tmp_path / "registry.yaml"
    path.write_text(text.replace(old, new, 1))
    return path, line


@pytest.mark.parametrize(
    ("old", "new", "says"),
    [
        ("concentrator: {model: rak2287,", "concentrator: {model: rak7248,", "rak2287"),
        (
            "hardware: raspberry-pi-4, central: {host: mqtt.smartzone.example, port: 8883}",
            "hardware: raspberry-pi-3, central: {host: mqtt.smartzone.example, port: 8883}",
            "raspberry-pi-4",
        ),
        ('eui: "b827ebfffe6a0c01"', 'eui: "aa555a0000000000"', "placeholder"),
        ('eui: "b827ebfffe6a0c02"', 'eui: "0101010101010101"', "placeholder"),
        ("reset_gpio: 17, gpio_chip: gpiochip4}", "reset_gpio: 17, gpio_chip: gpiochip0}", "gpiochip4"),
        (
            "zigbee: {adapter: zstack, serial: /dev/ttyUSB0}, radios: {wifi: wlan0}",
            "zigbee: {adapter: ezsp, serial: /dev/ttyUSB0}, radios: {wifi: wlan0}",
            "zstack",
        ),
    ],
)
def test_registry_errors_name_the_line(tmp_path, old, new, says):
    path, line = _broken(tmp_path, old, new)
    with pytest.raises(ConfigurationError) as err:
        Registry.load(path)
    message = str(err.value)
    assert says in message
    numbers = [int(part.split(":")[0]) for part in message.split("line ")[1:]]
    # the error points at the line of the broken value, or for a rule across fields at the section holding them
    # (between its gateway's entry and the value)
    entry = REGISTRY.read_text()[: REGISTRY.read_text().index(old)].rfind("\n  - {id:")
    entry_line = REGISTRY.read_text()[: entry + 1].count("\n") + 1
    assert len(numbers) == 1 and entry_line <= numbers[0] <= line, message


def test_a_lora_gateway_needs_its_concentrator_and_a_zigbee_gateway_its_adapter(tmp_path):
    path, _ = _broken(
        tmp_path, ",\n          concentrator: {model: rak5146, spi_device: /dev/spidev0.0, reset_gpio: 17}}}", "}}"
    )
    with pytest.raises(ConfigurationError, match=r"needs both eui and pi\.concentrator"):
        Registry.load(path)
    path, _ = _broken(
        tmp_path, "zigbee: {adapter: zstack, serial: /dev/ttyUSB0}, radios: {wifi: wlan0}", "radios: {wifi: wlan0}"
    )
    with pytest.raises(ConfigurationError, match=r"needs pi\.zigbee"):
        Registry.load(path)


def test_zboss_renders_with_a_warning(tmp_path):
    path, _ = _broken(
        tmp_path,
        "zigbee: {adapter: zstack, serial: /dev/ttyUSB0}, radios: {wifi: wlan0}",
        "zigbee: {adapter: zboss, serial: /dev/ttyACM0}, radios: {wifi: wlan0}",
    )
    reg = Registry.load(path)
    done = rd.render(reg, "gw-kloosterstraat", tmp_path / "out", "pw")
    assert any("zboss" in w and "experimental" in w for w in done.warnings)
    z2m = (tmp_path / "out" / "zigbee2mqtt" / "configuration.yaml").read_text()
    assert "experimental" in z2m and yaml.safe_load(z2m)["serial"] == {"port": "/dev/ttyACM0", "adapter": "zboss"}


# -- install.sh, run twice under a folder with stub commands --------------------------------------------------
STUBS = {
    "apt-get": "exit 0",
    "dpkg-query": 'printf "install ok installed"',
    "systemctl": 'echo "$*" >> "$SYSTEMCTL_LOG"',
    "useradd": "exit 1",  # the user exists (root stands for it): never called
    "usermod": "exit 0",
    "gpg": "exit 1",
    "git": "exit 1",  # the software is there already: never fetched
    "make": "exit 1",
    "npx": "exit 1",
    "chirpstack-gateway-bridge": "exit 0",
}


def _tree(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        p.relative_to(root).as_posix(): (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_install_sh_run_twice_changes_nothing_the_second_time(tmp_path):
    """The script itself, on this machine: every system command it calls (apt-get, systemctl, useradd, git, ...)
    is a stub on PATH, and it installs under a folder (SMARTZONE_GATEWAY_ROOT) as root (standing for its user)."""
    if os.geteuid() != 0:
        pytest.skip("install.sh runs as root")
    folder, root, bin_dir = tmp_path / "rendered", tmp_path / "root", tmp_path / "bin"
    _render(folder, "gw-volkstraat")  # every service: forwarder, bridge, zigbee2mqtt, Theengs, agent
    bin_dir.mkdir()
    for name, body in STUBS.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    for program in ("opt/smartzone-gateway/venv/bin/python", "opt/sx1302_hal/bin/lora_pkt_fwd"):
        (root / program).parent.mkdir(parents=True, exist_ok=True)
        (root / program).write_text("#!/bin/sh\nexit 0\n")
        (root / program).chmod(0o755)
    (root / "opt/zigbee2mqtt").mkdir(parents=True)
    (root / "opt/zigbee2mqtt/index.js").write_text("")
    log = tmp_path / "systemctl.log"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SMARTZONE_GATEWAY_ROOT": str(root),
        "SMARTZONE_GATEWAY_USER": "root",
        "SMARTZONE_EXPERIMENTS_USER": "nobody",  # an existing user, as the gateway's is on a second run
        "SYSTEMCTL_LOG": str(log),
    }

    def run() -> tuple[str, list[str]]:
        log.write_text("")
        done = subprocess.run(["bash", str(folder / "install.sh")], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout, log.read_text().splitlines()

    out, calls = run()
    first = _tree(root)
    assert "daemon-reload" in calls and "restart smartzone-gateway-agent.service" in calls
    assert first["etc/smartzone-gateway/central.password"] == ((folder / "central.password").read_bytes(), 0o600)
    assert first["etc/mosquitto/mosquitto.conf"][0] == (folder / "mosquitto.conf").read_bytes()
    assert first["etc/smartzone-gateway/experiments.nft"] == ((folder / "experiments.nft").read_bytes(), 0o644)
    assert stat.S_IMODE((root / rd.EXPERIMENTS_STATE.lstrip("/")).stat().st_mode) == 0o711
    for unit in rd.services(REG.gateways["gw-volkstraat"]):
        assert first[f"etc/systemd/system/{unit}"][0] == (folder / "systemd" / unit).read_bytes()
    # zigbee2mqtt writes its network key into its own copy: a later run leaves that copy alone
    z2m = root / "var/lib/smartzone-gateway/zigbee2mqtt/configuration.yaml"
    z2m.write_text(z2m.read_text().replace("network_key: GENERATE", "network_key: [1, 2, 3]"))
    first = _tree(root)

    out, calls = run()
    assert "changed: nothing" in out
    assert _tree(root) == first  # the same files, bytes and modes
    assert not [c for c in calls if c.startswith(("restart", "daemon-reload"))], calls

    rd.render(REG, "gw-volkstraat", folder, "rotated-password")  # a re-render after `broker users --rotate`
    out, calls = run()
    assert "central.password" in out and "restart smartzone-gateway-agent.service" in calls
    assert (root / "etc/smartzone-gateway/central.password").read_text() == "rotated-password\n"
    assert "network_key: [1, 2, 3]" in z2m.read_text()
