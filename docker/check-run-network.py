"""Refuse to start the daemon unless the run network (VIDSCORE_RUN_NETWORK) is this stack's own.

docker-compose.yml derives the run network's name from COMPOSE_PROJECT_NAME, while compose names
the network it creates after the project name, which `-p` can set to something else. Run
containers on another stack's network would reach that stack's Postgres, so a mismatch stops the
daemon with one clear line instead. Runs in the dagster-daemon service, before `dagster-daemon run`.
"""

import os
import socket
import sys

import docker


def main() -> int:
    wanted = os.environ.get("VIDSCORE_RUN_NETWORK", "")
    client = docker.from_env()
    try:
        # A container's hostname is its short id unless compose sets one (it does not here).
        own = client.containers.get(socket.gethostname()).attrs["NetworkSettings"]["Networks"]
    finally:
        client.close()
    if wanted not in own:
        print(
            f"error: VIDSCORE_RUN_NETWORK is {wanted!r}, but this stack's network is "
            f"{', '.join(sorted(own)) or 'none'}: set COMPOSE_PROJECT_NAME in docker/.env to the stack's "
            "name and do not override it with `-p`",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
