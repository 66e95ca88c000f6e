#!/bin/sh
# PostgreSQL first start: ChirpStack's database and role, with the extensions its migrations need.
# Runs only when CHIRPSTACK_DB_PASSWORD is set (the "lorawan" profile of docker-compose.yml).
set -eu
if [ -z "${CHIRPSTACK_DB_PASSWORD:-}" ]; then
  echo "CHIRPSTACK_DB_PASSWORD not set: no ChirpStack database"
  exit 0
fi
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v pw="$CHIRPSTACK_DB_PASSWORD" <<'SQL'
CREATE ROLE chirpstack WITH LOGIN PASSWORD :'pw';
CREATE DATABASE chirpstack WITH OWNER chirpstack;
\c chirpstack
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE EXTENSION IF NOT EXISTS hstore;
SQL
