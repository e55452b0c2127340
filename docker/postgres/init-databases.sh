#!/bin/bash
# Runs once, on the first start of the postgres service with an empty data volume
# (/docker-entrypoint-initdb.d/ of the official image): one role and one database for Airflow's
# metadata and one for MLflow's tracking store and model registry, so neither can touch the
# other's tables. Passwords come from the environment (.env), never from this file.
# A volume initialised earlier is left alone: to re-run, remove the volume
# (docker compose down -v deletes ALL data).
set -euo pipefail

for var in AIRFLOW_DB_PASSWORD MLFLOW_DB_PASSWORD; do
    if [ -z "${!var:-}" ]; then
        echo "init-databases.sh: $var is empty; set it in .env (see .env.example)" >&2
        exit 1
    fi
done

create() {
    local role="$1" password="$2"
    # psql variables (:'pw', :"role") quote the values: a password may hold any character.
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
        -v role="$role" -v pw="$password" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'pw';
CREATE DATABASE :"role" OWNER :"role" ENCODING 'UTF8';
REVOKE ALL ON DATABASE :"role" FROM PUBLIC;
SQL
}

create airflow "$AIRFLOW_DB_PASSWORD"
create mlflow "$MLFLOW_DB_PASSWORD"
echo "init-databases.sh: created databases airflow and mlflow"
