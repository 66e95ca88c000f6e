#!/bin/sh
# InfluxDB's first start (the influxdb:1.8 image sources /docker-entrypoint-initdb.d/*.sh with $INFLUX_CMD
# bound to the admin user): Grafana's read-only user, with READ on the open and ops databases and nothing
# else. The databases are created here so the grants have something to name; the Smart Zone services set
# their retention policies when they start. Quotes in the password are refused rather than escaped.
set -e
case "$GRAFANA_INFLUX_PASSWORD" in
  ""|*\'*|*\\*) echo "grafana-reader: set GRAFANA_INFLUX_PASSWORD (no quotes or backslashes)" >&2; exit 1 ;;
esac
for db in "${SMARTZONE_OPEN_DATABASE:-smartzone_open}" "${SMARTZONE_OPS_DATABASE:-smartzone_ops}"; do
  case "$db" in *[!a-z0-9_]*|"") echo "grafana-reader: bad database name $db" >&2; exit 1 ;; esac
done
$INFLUX_CMD "CREATE DATABASE \"${SMARTZONE_OPEN_DATABASE:-smartzone_open}\""
$INFLUX_CMD "CREATE DATABASE \"${SMARTZONE_OPS_DATABASE:-smartzone_ops}\""
$INFLUX_CMD "CREATE USER \"grafana\" WITH PASSWORD '$GRAFANA_INFLUX_PASSWORD'"
$INFLUX_CMD "GRANT READ ON \"${SMARTZONE_OPEN_DATABASE:-smartzone_open}\" TO \"grafana\""
$INFLUX_CMD "GRANT READ ON \"${SMARTZONE_OPS_DATABASE:-smartzone_ops}\" TO \"grafana\""
