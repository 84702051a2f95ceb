# Python 3.11 on Debian bookworm, from Debian's own packages: the base of both vidscore images when
# no registry is reachable (scripts/build-images.sh). With a registry, python:3.11-slim-bookworm does
# the same job (the default PYTHON_IMAGE of docker/Dockerfile).
#
#   podman build -f docker/base/python.Dockerfile --build-arg BASE_IMAGE=vidscore-debian:bookworm \
#       -t vidscore-python:3.11-bookworm docker/base
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

# python-is-python3: docker/Dockerfile calls `python`, as in the official Python images.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates python3 python3-venv python-is-python3 \
    && rm -rf /var/lib/apt/lists/*

ENV LANG=C.UTF-8
CMD ["python3"]
