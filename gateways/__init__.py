"""Gateways: the sensor registry of the demo zone, the simulated zone, and (later) the Raspberry Pi
reference gateway configuration and its agent."""
