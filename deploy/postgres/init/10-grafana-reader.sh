#!/bin/sh
# Runs once, when the Postgres volume is first initialised: a read-only login for Grafana.
# pg_read_all_data (Postgres 14+) covers the tables the migrations create later.
set -eu
psql -v ON_ERROR_STOP=1 -v password="$GRAFANA_DB_PASSWORD" \
    --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
CREATE ROLE grafana_reader LOGIN PASSWORD :'password';
GRANT pg_read_all_data TO grafana_reader;
SQL
