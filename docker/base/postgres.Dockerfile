# PostgreSQL from Debian bookworm's packages, for the compose stack when no registry is reachable
# (scripts/build-images.sh). It follows the official postgres image where compose relies on it:
# POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB create the role and database on the first start,
# the data lives in /var/lib/postgresql/data (a volume), and pg_isready is on PATH.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
    && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql

ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data \
    LANG=C.UTF-8
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint
USER postgres
EXPOSE 5432
CMD ["sh", "/usr/local/bin/postgres-entrypoint"]
