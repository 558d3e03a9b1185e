#!/bin/sh
# Start PostgreSQL as the official image's entrypoint does: initdb on an empty volume, then postgres as non-root.
set -eu

# Debian keeps the server programs off PATH (the official image puts them on it).
for d in /usr/lib/postgresql/*/bin; do
    if [ -d "$d" ]; then PATH="$PATH:$d"; fi
done
export PATH
if ! command -v postgres >/dev/null 2>&1 || ! command -v initdb >/dev/null 2>&1; then
    echo "postgres and initdb are not installed on this node: apt-get install postgresql" >&2
    exit 1
fi

PGDATA="${PGDATA:-/var/lib/postgresql/data/pgdata}"
export PGDATA

# PostgreSQL refuses to run as root: own the volume, then re-run this script as the postgres user.
if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA"
    chown -R postgres:postgres "$(dirname "$PGDATA")"
    chmod 700 "$PGDATA"
    if command -v gosu >/dev/null 2>&1; then
        exec gosu postgres sh "$0" "$@"
    fi
    exec setpriv --reuid=postgres --regid=postgres --init-groups sh "$0" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    echo "initialising the database in $PGDATA"
    pwfile="$(mktemp)"
    printf '%s' "$POSTGRES_PASSWORD" >"$pwfile"
    initdb -D "$PGDATA" --username="$POSTGRES_USER" --pwfile="$pwfile" -E UTF8 --locale=C \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    echo "CREATE DATABASE \"$POSTGRES_DB\"" | postgres --single -D "$PGDATA" -c listen_addresses= postgres >/dev/null
fi

# No Unix socket: clients come over TCP, and /var/run/postgresql may be the node's own directory.
postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories= "$@" &
pid=$!
# SIGTERM would be a "smart" shutdown that waits for every client to leave; the official image stops
# PostgreSQL with SIGINT (fast shutdown: roll back open transactions, checkpoint, exit) instead.
trap 'kill -INT "$pid"' TERM INT
status=0
wait "$pid" || status=$?
if kill -0 "$pid" 2>/dev/null; then
    status=0
    wait "$pid" || status=$?
fi
exit "$status"
