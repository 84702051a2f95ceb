#!/bin/sh
# One-shot initialisation of the Dagster instance (the `dagster-init` service in docker-compose.yml).
# Safe to run on every start: it upgrades Dagster's Postgres schema and (re)applies the pool limits
# that vidscore relies on, taken from the environment.
#
#   gpu     scoring steps; one slot per step that may hold a GPU (VIDSCORE_GPU_POOL_LIMIT)
#   duckdb  commit steps; always 1, because DuckDB accepts one writer process at a time
set -eu

gpu_limit="${VIDSCORE_GPU_POOL_LIMIT:-1}"
case "$gpu_limit" in
    '' | *[!0-9]*)
        echo "VIDSCORE_GPU_POOL_LIMIT must be a whole number, got '$gpu_limit'" >&2
        exit 2
        ;;
esac

dagster instance migrate
dagster instance concurrency set gpu "$gpu_limit"
dagster instance concurrency set duckdb 1
dagster instance concurrency get --all
