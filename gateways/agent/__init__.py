"""The gateway agent that runs on the Raspberry Pi: standard library and paho-mqtt only."""
