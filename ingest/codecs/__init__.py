"""LoRaWAN payload codecs: one module per device family, listed in ``CODECS`` and nowhere else.

The contract every codec module keeps:

- ``NAME: str`` -- the key in ``CODECS`` and in a device profile's ``codec``.
- ``PORTS: frozenset[int] | None`` -- the fPorts the codec decodes; ``None`` means any port.
- ``decode(data: bytes, f_port: int) -> list[tuple[str, float | int | bool]]`` -- the frame's
  readings as ``(quantity, value)`` pairs in frame order. The quantity is a key of
  ``smartzone.quantities.QUANTITIES`` (``category.leaf``) whenever the field has a clear quantity,
  and the value is already in that quantity's unit (battery mV become ``gateway_health.battery_voltage``
  in V). A name without a dot is a *native* name: a measurement whose meaning depends on the
  installation (what is wired to an input, which counting line is which); the registry's
  per-sensor ``fields`` map it. Cayenne LPP returns native names only (``<type>_<channel>``, e.g.
  ``temperature_3``, ``accelerometer_5_x``) and exports ``quantity(name) -> str | None``, the default
  vocabulary key of a native name. Fields that are not measurements (status bits, configuration
  acknowledgements, counters of internal events, identities) are skipped; each module's docstring
  lists what it skips and why.
- ``encode(values: dict[str, float | int | bool], f_port: int | None = None) -> bytes`` -- the
  inverse, used by the traffic simulator and the round-trip property tests. It accepts the subset
  of fields its docstring names and is exact for them up to the frame's resolution:
  ``decode(encode(v), port)`` gives ``v`` back, rounded to the field's step. It raises ``ValueError``
  for a field it cannot place or a value the frame cannot hold.

Errors: ``decode`` raises ``smartzone.errors.DecodeError(reason, detail)`` with a stable reason --
``wrong_length`` (the frame is too short or too long for its layout, or empty), ``unknown_channel``
(an unknown LPP type byte, vendor type or channel id), ``unknown_port`` (the fPort is not in
``PORTS``) or ``malformed`` (anything else, e.g. an unsupported protocol version). The detail names
the byte offset and the value.

Codecs are pure functions over ``bytes`` (indexing, ``int.from_bytes``): no I/O, and their tables
are module constants, built once at import.
"""

from __future__ import annotations

from types import ModuleType

from ingest.codecs import bosch_parking, cayenne_lpp, decentlab_dl_pm, elsys, milesight_vs133

CODECS: dict[str, ModuleType] = {
    m.NAME: m for m in (cayenne_lpp, elsys, decentlab_dl_pm, bosch_parking, milesight_vs133)
}
