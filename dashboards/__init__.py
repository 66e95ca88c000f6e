"""Grafana dashboards as code and their provisioning (built by the dashboards issue)."""
