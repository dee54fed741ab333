#!/usr/bin/env bash
# PostgreSQL for Airflow's metadata database: a cluster of the project's own under build/, from
# Debian's `postgresql` binaries, started and stopped here; no system service or system cluster
# is touched. It listens on a Unix socket in its own directory only (no TCP port to collide with).
#
#   scripts/postgres.sh up       initdb on first use, start, create the database; idempotent
#   scripts/postgres.sh down     stop it (fast shutdown), idempotent
#   scripts/postgres.sh status   exit 0 if it accepts connections
#   scripts/postgres.sh url      the SQLAlchemy URL of the database (what Airflow is given)
#   scripts/postgres.sh dir      where the cluster lives (see below)
#   scripts/postgres.sh destroy  stop it and delete the cluster (tests; `make clean`)
#
# Settings: VIDNOTES_PG_DIR (default build/postgres; scripts/airflow.sh uses $AIRFLOW_HOME/postgres: data/, run/ (the socket), postgres.log),
# VIDNOTES_PG_DB (airflow). As root (a container, CI) the server runs as Debian's `postgres`
# user, since PostgreSQL refuses to run as root; the cluster is then owned by that user, and when
# that user cannot reach VIDNOTES_PG_DIR (a checkout under a 0700 directory such as mktemp -d's)
# it lives in ${TMPDIR:-/tmp}/vidnotes-postgres-<hash of VIDNOTES_PG_DIR> instead (`dir` prints it).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_DIR=${VIDNOTES_PG_DIR:-$ROOT/build/postgres}
[[ $PG_DIR = /* ]] || PG_DIR=$ROOT/$PG_DIR
DB=${VIDNOTES_PG_DB:-airflow}
ROLE=vidnotes

say() { echo "postgres: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

bindir() {  # the newest server Debian installed (pg_ctl is not on PATH there), else PATH's
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if [[ -n $d && -x $d/pg_ctl ]]; then echo "$d"; return; fi
    command -v pg_ctl >/dev/null && { dirname "$(command -v pg_ctl)"; return; }
    die "no PostgreSQL server binaries (Debian: apt-get install postgresql; make system-deps does)"
}
BIN=$(bindir)

# where the cluster lives: $PG_DIR, unless the server's user cannot reach it
CLUSTER=$PG_DIR
if [[ $(id -u) -eq 0 ]]; then
    mkdir -p "$PG_DIR"
    if ! runuser -u postgres -- test -x "$PG_DIR" 2>/dev/null; then
        CLUSTER=${TMPDIR:-/tmp}/vidnotes-postgres-$(echo -n "$PG_DIR" | sha256sum | cut -c1-12)
    fi
fi
DATA=$CLUSTER/data
SOCK=$CLUSTER/run
LOG=$CLUSTER/postgres.log

as_owner() {  # run a server program as the cluster's owner
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

url() { echo "postgresql+psycopg2://$ROLE@/$DB?host=$SOCK"; }

ready() { "$BIN/pg_isready" -q -h "$SOCK" -d postgres -U "$ROLE" 2>/dev/null; }

cmd_up() {
    local t0=$SECONDS
    mkdir -p "$PG_DIR" "$CLUSTER"
    [[ $CLUSTER == "$PG_DIR" ]] || echo "$CLUSTER" >"$PG_DIR/cluster-location"
    if [[ $(id -u) -eq 0 ]]; then
        getent passwd postgres >/dev/null || die "running as root needs Debian's postgres user (apt-get install postgresql)"
        mkdir -p "$SOCK" && chown postgres: "$CLUSTER" "$SOCK" && chmod 700 "$CLUSTER"
    else
        mkdir -p "$SOCK"
    fi
    if [[ ! -f $DATA/PG_VERSION ]]; then
        say "creating a cluster in $DATA ($("$BIN/postgres" --version))"
        as_owner "$BIN/initdb" -D "$DATA" -U "$ROLE" --auth=trust -E UTF8 --locale=C.UTF-8 >"$PG_DIR/initdb.log" 2>&1 ||
            { tail -n 20 "$PG_DIR/initdb.log" >&2; die "initdb failed"; }
    fi
    if ! ready; then
        # listen on the socket in $SOCK only; synchronous_commit off: a crash of the machine can lose
        # the last fraction of a second of task-state changes (never consistency), and no task
        # waits for a disk flush. fsync stays on.
        as_owner "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 \
            -o "-c listen_addresses='' -k $SOCK -c synchronous_commit=off -c max_connections=100" start >/dev/null ||
            { tail -n 20 "$LOG" >&2; die "the server did not start (log: $LOG)"; }
    fi
    if ! "$BIN/psql" -h "$SOCK" -U "$ROLE" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'" | grep -q 1; then
        "$BIN/createdb" -h "$SOCK" -U "$ROLE" "$DB"
    fi
    say "up in $((SECONDS - t0)) s: database $DB on socket $SOCK (log $LOG)"
}

cmd_down() {
    [[ -f $DATA/postmaster.pid ]] || return 0
    say "stopping the server in $DATA"
    as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null 2>&1 || true
}

cmd_destroy() {
    cmd_down
    [[ -d $DATA ]] && say "deleting the cluster in $CLUSTER"
    rm -rf "$DATA" "$SOCK" "$LOG" "$PG_DIR/cluster-location"
    [[ $CLUSTER == "$PG_DIR" ]] || rmdir "$CLUSTER" 2>/dev/null || true
}

case ${1:-} in
    up) cmd_up ;;
    down) cmd_down ;;
    destroy) cmd_destroy ;;
    dir) echo "$CLUSTER" ;;
    status) if ready; then echo "running: $(url)"; else echo "stopped"; exit 1; fi ;;
    url) url ;;
    *) echo "usage: $0 up|down|status|url|dir|destroy" >&2; exit 2 ;;
esac
