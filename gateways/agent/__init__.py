"""The gateway agent: the Raspberry Pi's own path to the central broker (docs/parts/gateway-agent.md).

It relays what the gateway's radios publish on the local broker to the centre over a disk spool (fsynced,
bounded, replayed oldest first), relays the centre's commands down, and reports the gateway's health. It
runs on the Pi with the standard library and paho-mqtt only: it imports no other part of Smart Zone.
"""

__version__ = "1.0"
