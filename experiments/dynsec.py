"""A small client of Mosquitto's dynamic-security plugin, over MQTT (docs/parts/experiments-scheduler.md).

Commands go as JSON to ``$CONTROL/dynamic-security/v1``; the plugin answers on ``.../v1/response`` with one
response per command, matched here by ``correlationData``. An answer carrying ``error`` raises
``DynsecError`` with the broker's message, except where the operation is idempotent on purpose: creating
what exists updates it, deleting what is missing is done.

Each (experiment, gateway) gets a client and a role, both named ``exp-<exp_id>-<gateway>``: the role may
publish under ``gw/<gateway>/experiments/<exp_id>/`` and read ``gw/+/experiments/<exp_id>/#`` (an experiment
on two gateways reads its own traffic on both), nothing else.

The ``Dynsec`` object uses a connected paho client that someone else loops (``loop_start``): its calls block
until the answer or the timeout, so never call them from a paho callback.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = TOPIC + "/response"
ADMIN_TOPICS = "$CONTROL/dynamic-security/#"
_USER = re.compile(r"exp-([0-9]+)-(.+)")


class DynsecError(RuntimeError):
    """The plugin refused a command (its message), or did not answer in time."""


def user_name(exp_id: int, gateway: str) -> str:
    """The broker user (and role) of one experiment on one gateway: ``exp-42-gw-a``."""
    return f"exp-{exp_id}-{gateway}"


def parse_user(name: str) -> tuple[int, str] | None:
    """``exp-42-gw-a`` -> ``(42, "gw-a")``; ``None`` for a client that is not an experiment's."""
    m = _USER.fullmatch(name)
    return (int(m.group(1)), m.group(2)) if m else None


def prefix(exp_id: int, gateway: str) -> str:
    return f"gw/{gateway}/experiments/{exp_id}/"


def role_acls(exp_id: int, gateway: str) -> list[dict[str, Any]]:
    """The role's ACLs: publish only under its own prefix; read its experiment's traffic on any gateway."""
    own = prefix(exp_id, gateway) + "#"
    anywhere = f"gw/+/experiments/{exp_id}/#"
    return [
        {"acltype": "publishClientSend", "topic": own, "allow": True},
        {"acltype": "subscribePattern", "topic": anywhere, "allow": True},
        {"acltype": "publishClientReceive", "topic": anywhere, "allow": True},
    ]


@dataclass
class _Pending:
    done: threading.Event
    response: dict[str, Any] | None = None


class Dynsec:
    """Dynamic-security commands through ``client`` (connected, looped by its owner, allowed to write
    ``$CONTROL/dynamic-security/#``). Call ``attach`` once, and again on each reconnect (``subscribe``)."""

    def __init__(self, client: mqtt.Client, timeout: float = 10.0) -> None:
        self.client = client
        self.timeout = timeout
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        client.message_callback_add(RESPONSE_TOPIC, self._on_response)

    def subscribe(self) -> None:
        """Subscribe to the plugin's answers (from the owner's ``on_connect``)."""
        self.client.subscribe(RESPONSE_TOPIC, qos=1)
        self._subscribed.set()

    def _on_response(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            doc = json.loads(msg.payload)
            responses = doc["responses"]
        except (ValueError, KeyError, TypeError):
            return  # not an answer of the plugin's: nothing waits for it
        for r in responses if isinstance(responses, list) else []:
            cid = r.get("correlationData") if isinstance(r, dict) else None
            with self._lock:
                pending = self._pending.pop(cid, None) if isinstance(cid, str) else None
            if pending is not None:
                pending.response = r
                pending.done.set()

    # -- the raw call --------------------------------------------------------------------------------
    def call(self, command: str, *, ok_errors: tuple[str, ...] = (), **fields: Any) -> dict[str, Any]:
        """Send one command and return its response (``data`` and all); ``DynsecError`` with the broker's
        message on an error not in ``ok_errors``, or when no answer comes within ``timeout``."""
        cid = uuid.uuid4().hex
        pending = _Pending(threading.Event())
        with self._lock:
            self._pending[cid] = pending
        payload = json.dumps({"commands": [{"command": command, **fields, "correlationData": cid}]})
        info = self.client.publish(TOPIC, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            with self._lock:
                self._pending.pop(cid, None)
            raise DynsecError(f"{command}: not sent ({mqtt.error_string(info.rc)})")
        if not pending.done.wait(self.timeout):
            with self._lock:
                self._pending.pop(cid, None)
            raise DynsecError(
                f"{command}: no answer from the dynamic-security plugin in {self.timeout:g} s "
                "(is the plugin loaded, and may this user write $CONTROL/dynamic-security/#?)"
            )
        response = pending.response or {}
        error = response.get("error")
        if error and error not in ok_errors:
            raise DynsecError(f"{command}: {error}")
        return response

    # -- the commands ---------------------------------------------------------------------------------
    def create_role(self, rolename: str, acls: list[dict[str, Any]] | None = None) -> None:
        """Create a role with ``acls``; an existing role gets the missing ones."""
        r = self.call("createRole", rolename=rolename, acls=acls or [], ok_errors=("Role already exists",))
        if r.get("error"):
            for acl in acls or []:
                self.add_role_acl(rolename, **acl)

    def add_role_acl(self, rolename: str, acltype: str, topic: str, allow: bool = True, priority: int = 0) -> None:
        self.call(
            "addRoleACL",
            rolename=rolename,
            acltype=acltype,
            topic=topic,
            allow=allow,
            priority=priority,
            ok_errors=("ACL with this topic already exists",),
        )

    def create_client(self, username: str, password: str, roles: Sequence[str] = ()) -> None:
        """Create a client with ``roles``; an existing one gets this password and the missing roles."""
        r = self.call(
            "createClient",
            username=username,
            password=password,
            roles=[{"rolename": name} for name in roles],
            ok_errors=("Client already exists",),
        )
        if r.get("error"):
            self.set_client_password(username, password)
            have = {x.get("rolename") for x in self.get_client(username).get("roles", [])}
            for name in roles:
                if name not in have:
                    self.add_client_role(username, name)

    def get_client(self, username: str) -> dict[str, Any]:
        return self.call("getClient", username=username).get("data", {}).get("client", {})

    def list_clients(self) -> list[str]:
        data = self.call("listClients", count=-1).get("data", {})
        return [c if isinstance(c, str) else c.get("username", "") for c in data.get("clients", [])]

    def add_client_role(self, username: str, rolename: str) -> None:
        self.call("addClientRole", username=username, rolename=rolename)

    def set_client_password(self, username: str, password: str) -> None:
        self.call("setClientPassword", username=username, password=password)

    def delete_client(self, username: str) -> None:
        """Delete a client (the broker disconnects it); a missing one is fine."""
        self.call("deleteClient", username=username, ok_errors=("Client not found",))

    def delete_role(self, rolename: str) -> None:
        self.call("deleteRole", rolename=rolename, ok_errors=("Role not found",))

    # -- an experiment's user ----------------------------------------------------------------------
    def ensure_experiment_user(self, exp_id: int, gateway: str, password: str) -> str:
        """The client and role of (experiment, gateway), created or brought up to date; returns the user."""
        name = user_name(exp_id, gateway)
        self.create_role(name, role_acls(exp_id, gateway))
        self.create_client(name, password, [name])
        return name

    def remove_experiment_user(self, exp_id: int, gateway: str) -> None:
        """The client (first: it is disconnected) and its role, gone; missing ones are fine."""
        name = user_name(exp_id, gateway)
        self.delete_client(name)
        self.delete_role(name)

    def experiment_users(self) -> set[tuple[int, str]]:
        """Every (experiment, gateway) that has a client on the broker."""
        return {p for p in (parse_user(n) for n in self.list_clients()) if p is not None}
