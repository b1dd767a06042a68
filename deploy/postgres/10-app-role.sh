#!/bin/sh
# Run once by the postgres image when it initialises its data directory.
# The image's POSTGRES_USER (a superuser) owns the schema and runs the migrations; the platform
# connects as agentplatform_app, which owns nothing and is neither superuser nor BYPASSRLS,
# so the row-level security policies bind it (see agentplatform/core/rls.py).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v app_password="$APP_DB_PASSWORD" <<'EOSQL'
CREATE ROLE agentplatform_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE
  PASSWORD :'app_password';
CREATE EXTENSION IF NOT EXISTS vector;
EOSQL
