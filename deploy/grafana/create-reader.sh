#!/bin/sh
# A login role that can only read the analytics tables, for Grafana. The postgres image runs this
# once, when it initialises an empty data volume (docker-entrypoint-initdb.d), before the analytics
# service has created any table: the default privileges give the role SELECT on every table the
# owner creates later (the five tables, their partitions, the rollups). On an existing database,
# run it by hand with the same environment.
set -eu

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v reader="${GRAFANA_DB_USER:-grafana_reader}" \
    -v password="${GRAFANA_DB_PASSWORD:?set GRAFANA_DB_PASSWORD}" \
    -v owner="$POSTGRES_USER" -v database="$POSTGRES_DB" <<'SQL'
CREATE ROLE :"reader" LOGIN PASSWORD :'password';
GRANT CONNECT ON DATABASE :"database" TO :"reader";
GRANT USAGE ON SCHEMA public TO :"reader";
GRANT SELECT ON ALL TABLES IN SCHEMA public TO :"reader";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public GRANT SELECT ON TABLES TO :"reader";
SQL
