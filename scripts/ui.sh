#!/usr/bin/env bash
# The web page for readers (vidnotes ui, docs/web.md) over the local stack: LocalStack's buckets on
# :${VIDNOTES_LOCALSTACK_PORT:-4566} and Airflow's REST API on :${VIDNOTES_AIRFLOW_PORT:-8080}, served on
# http://127.0.0.1:${VIDNOTES_UI_PORT:-7860}. Started as its own process group, with a pid file and a
# log under build/ui (run/ui.pid, ui.log). On AWS run `vidnotes ui` itself with your credentials.
#
#   scripts/ui.sh up       start the page, wait until it answers
#   scripts/ui.sh down     stop what `up` started (process group, TERM then KILL), idempotent
#   scripts/ui.sh status   exit 1 unless it runs and answers
#
# Settings: VIDNOTES_UI_DIR (default build/ui), VIDNOTES_UI_PORT (7860), VIDNOTES_AIRFLOW_HOME (its
# passwords.json; default build/airflow), VENV (default .venv).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${VIDNOTES_UI_DIR:-$ROOT/build/ui}
[[ $DIR = /* ]] || DIR=$ROOT/$DIR
PORT=${VIDNOTES_UI_PORT:-7860}
VENV_DIR=${VENV:-.venv}
[[ $VENV_DIR = /* ]] || VENV_DIR=$ROOT/$VENV_DIR
PIDFILE=$DIR/run/ui.pid
LOG=$DIR/ui.log
URL=http://127.0.0.1:$PORT/

say() { echo "ui: $*" >&2; }
running() { [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }
healthy() { curl -fsS -m 2 "${URL}api/config" >/dev/null 2>&1; }

up() {
    if running && healthy; then say "already running: $URL"; return 0; fi
    mkdir -p "$DIR/run"
    AWS_ENDPOINT_URL=${AWS_ENDPOINT_URL:-http://localhost:${VIDNOTES_LOCALSTACK_PORT:-4566}} \
    AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-test} AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-test} \
    AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1} \
    VIDNOTES_AIRFLOW_URL=${VIDNOTES_AIRFLOW_URL:-http://127.0.0.1:${VIDNOTES_AIRFLOW_PORT:-8080}} \
    VIDNOTES_AIRFLOW_HOME=${VIDNOTES_AIRFLOW_HOME:-$ROOT/build/airflow} \
    setsid "$VENV_DIR/bin/vidnotes" ui --host 127.0.0.1 --port "$PORT" >"$LOG" 2>&1 < /dev/null &
    echo $! >"$PIDFILE"
    for _ in $(seq 30); do
        if healthy; then say "the page is on $URL (make ui-down stops it)"; return 0; fi
        running || break
        sleep 1
    done
    tail -20 "$LOG" >&2
    down
    say "ERROR: the page did not answer (log above)"; exit 1
}

down() {
    if [[ -f $PIDFILE ]]; then
        pid=$(cat "$PIDFILE")
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM -- "-$pid" 2>/dev/null || true
            for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
            kill -KILL -- "-$pid" 2>/dev/null || true
        fi
        rm -f "$PIDFILE"
        say "stopped"
    fi
}

status() {
    if running && healthy; then say "running: $URL (pid $(cat "$PIDFILE"))"; else say "not running"; exit 1; fi
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
