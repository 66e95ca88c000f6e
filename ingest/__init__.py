"""Ingestion: MQTT messages from gateways and network servers -> validated Readings -> InfluxDB."""
