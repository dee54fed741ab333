#!/usr/bin/env bash
# The MLflow UI over the training runs' local tracking backend (vidnotes/tracking.py):
# SQLite build/mlflow/mlflow.db, artifacts under build/mlflow/artifacts, served on
# http://127.0.0.1:${VIDNOTES_MLFLOW_PORT:-5000}. Started by us as its own process group, with a
# pid file and a log under build/mlflow (run/mlflow.pid, mlflow.log).
#
#   scripts/mlflow.sh up       start the server, wait until /health answers
#   scripts/mlflow.sh down     stop what `up` started (process group, TERM then KILL), idempotent
#   scripts/mlflow.sh status   exit 1 unless it runs and answers
#
# Settings: VIDNOTES_MLFLOW_DIR (default build/mlflow), VIDNOTES_MLFLOW_PORT (5000),
# VIDNOTES_MLFLOW_TIMEOUT (wait for health, 60 s), VENV (default .venv).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${VIDNOTES_MLFLOW_DIR:-$ROOT/build/mlflow}
[[ $DIR = /* ]] || DIR=$ROOT/$DIR
PORT=${VIDNOTES_MLFLOW_PORT:-5000}
TIMEOUT=${VIDNOTES_MLFLOW_TIMEOUT:-60}
VENV_DIR=${VENV:-.venv}
[[ $VENV_DIR = /* ]] || VENV_DIR=$ROOT/$VENV_DIR
PIDFILE=$DIR/run/mlflow.pid
LOG=$DIR/mlflow.log
URL=http://127.0.0.1:$PORT

say() { echo "mlflow: $*" >&2; }
running() { [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }
healthy() { curl -fsS -m 2 "$URL/health" >/dev/null 2>&1; }

up() {
    if running && healthy; then say "already running: $URL"; return 0; fi
    mkdir -p "$DIR/run" "$DIR/artifacts"
    setsid "$VENV_DIR/bin/mlflow" server --host 127.0.0.1 --port "$PORT" --workers 1 \
        --backend-store-uri "sqlite:///$DIR/mlflow.db" --default-artifact-root "$DIR/artifacts" \
        >"$LOG" 2>&1 < /dev/null &
    echo $! >"$PIDFILE"
    for _ in $(seq "$TIMEOUT"); do
        if healthy; then say "UI on $URL (runs of experiment vidnotes-train; make mlflow-down stops it)"; return 0; fi
        running || break
        sleep 1
    done
    tail -20 "$LOG" >&2
    down
    say "ERROR: the server did not become healthy (log above)"; exit 1
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
