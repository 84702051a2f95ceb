#!/bin/sh
# One-shot initialisation of the Dagster instance (the `dagster-init` service in docker-compose.yml).
# Safe to run on every start: it upgrades Dagster's Postgres schema and (re)applies the limit of the
# one pool vidscore uses, taken from the environment.
#
#   gpu  scoring steps; one slot per step that may hold a GPU (VIDSCORE_GPU_POOL_LIMIT)
#
# Nothing else needs a slot: every step publishes its table partitions atomically (see
# VIDSCORE_TABLES in .env.example), so no step waits for another's write lock. An instance set up
# by an earlier vidscore may still list the limit of a pool no step uses any more; it is harmless,
# and can be deleted in the UI (Deployment > Concurrency).
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
dagster instance concurrency get --all
