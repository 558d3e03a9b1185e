#!/bin/sh
# The postgres image's entrypoint for the process runtime: initdb on an empty PGDATA, then postgres as non-root.
# Written for pocketkube after the official image's documented behaviour (POSTGRES_PASSWORD, POSTGRES_USER,
# POSTGRES_DB, POSTGRES_HOST_AUTH_METHOD, POSTGRES_INITDB_ARGS, PGDATA).
set -eu

# Debian keeps the server programs off PATH (the official image puts them on it).
for d in /usr/lib/postgresql/*/bin; do
    if [ -d "$d" ]; then PATH="$PATH:$d"; fi
done
export PATH

# `postgres -c x=y` and `-c x=y` both mean the server; anything else is run as given, as the image does.
if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
    set -- postgres "$@"
fi
if [ "$1" != postgres ]; then
    exec "$@"
fi
shift

PGDATA="${PGDATA:-/var/lib/postgresql/data}"
export PGDATA
POSTGRES_USER="${POSTGRES_USER:-postgres}"
POSTGRES_DB="${POSTGRES_DB:-$POSTGRES_USER}"

# PostgreSQL refuses to run as root: own PGDATA, then run this script again as the postgres user.
if [ "$(id -u)" = 0 ]; then
    if ! id postgres >/dev/null 2>&1; then
        echo "error: the host has no 'postgres' user; install PostgreSQL (apt-get install postgresql)" >&2
        exit 1
    fi
    # Containers here share the host's filesystem: without a volume at PGDATA (or its parent) the data would
    # land in the host's /var/lib/postgresql, shared by every such pod. Keep it private and ephemeral instead,
    # as a container's own filesystem would be.
    if ! mountpoint -q "$PGDATA" 2>/dev/null && ! mountpoint -q "$(dirname "$PGDATA")" 2>/dev/null; then
        scratch="$(mktemp -d /tmp/pocketkube-pgdata.XXXXXX)"
        chown postgres:postgres "$scratch"
        PGDATA="$scratch/data"
        export PGDATA
        echo "no volume is mounted at PGDATA: using $PGDATA, which goes with this container"
    fi
    mkdir -p "$PGDATA"
    chown postgres:postgres "$PGDATA"
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups sh "$0" postgres "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    auth="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
    if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$auth" != trust ]; then
        cat >&2 <<'MSG'
Error: Database is uninitialized and superuser password is not specified.
       You must specify POSTGRES_PASSWORD to a non-empty value for the
       superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run".
MSG
        exit 1
    fi
    pwfile="$(mktemp)"
    printf '%s' "${POSTGRES_PASSWORD:-}" >"$pwfile"
    # shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS is a list of words, as in the image
    initdb -D "$PGDATA" --username="$POSTGRES_USER" --pwfile="$pwfile" ${POSTGRES_INITDB_ARGS:-} >/dev/null
    rm -f "$pwfile"
    echo "host all all all $auth" >>"$PGDATA/pg_hba.conf"
    if [ "$POSTGRES_DB" != postgres ]; then
        echo "CREATE DATABASE \"$POSTGRES_DB\"" |
            postgres --single -D "$PGDATA" -c listen_addresses= -c unix_socket_directories= postgres >/dev/null
    fi
    echo "PostgreSQL init process complete; ready for start up."
fi

# No Unix socket by default: /var/run/postgresql is the host's directory, shared by every pod.
postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories= "$@" &
pid=$!
# The image stops PostgreSQL with SIGINT (fast shutdown) where the kubelet sends SIGTERM (a smart shutdown
# that waits for every client).
trap 'kill -INT "$pid"' TERM INT
status=0
wait "$pid" || status=$?
if kill -0 "$pid" 2>/dev/null; then
    status=0
    wait "$pid" || status=$?
fi
exit "$status"
