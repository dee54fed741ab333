#!/usr/bin/env bash
# Airflow for a laptop, next to the local stack (docs/airflow.md):
#   api-server (UI + REST + execution API)   http://localhost:${VIDNOTES_AIRFLOW_PORT:-8080}
#   scheduler (LocalExecutor), dag-processor, triggerer (runs the SQS asset watcher)
# each started by us as its own process group, with a pid file and a log under
# $AIRFLOW_HOME (default build/airflow): run/<name>.pid, logs/<name>.log.
# (`airflow standalone` would be one command, but it leaves its children running on SIGTERM.)
#
#   scripts/airflow.sh up       start the metadata DB (PostgreSQL, scripts/postgres.sh), migrate it,
#                               start the four, wait until healthy
#   scripts/airflow.sh down     stop what `up` started (process groups, TERM then KILL; then the
#                               database), idempotent
#   scripts/airflow.sh status   each process and the API's health; exit 1 unless all run
#   scripts/airflow.sh env      the environment the processes get (eval it to use the airflow CLI)
#   scripts/airflow.sh logs [-f]
#
# Settings: VIDNOTES_AIRFLOW_HOME, VIDNOTES_AIRFLOW_PORT, VIDNOTES_LOCALSTACK_PORT,
# VIDNOTES_LAMBDA_PORT (where the stack is), VIDNOTES_AIRFLOW_TIMEOUT (wait for health, 120 s),
# VENV (the venv with the `airflow` extra, default .venv), VIDNOTES_AIRFLOW_DB (`postgres`, the
# default: the project's own cluster under build/postgres; `sqlite`: $AIRFLOW_HOME/airflow.db, for a
# quick look without a server; LocalExecutor on SQLite is what Airflow calls a trial setup).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
AF_HOME=${VIDNOTES_AIRFLOW_HOME:-$ROOT/build/airflow}
[[ $AF_HOME = /* ]] || AF_HOME=$ROOT/$AF_HOME
PORT=${VIDNOTES_AIRFLOW_PORT:-8080}
LS_PORT=${VIDNOTES_LOCALSTACK_PORT:-4566}
LAMBDA_PORT=${VIDNOTES_LAMBDA_PORT:-9001}
TIMEOUT=${VIDNOTES_AIRFLOW_TIMEOUT:-120}
VENV_DIR=${VENV:-.venv}
[[ $VENV_DIR = /* ]] || VENV_DIR=$ROOT/$VENV_DIR
AIRFLOW=$VENV_DIR/bin/airflow
RUN=$AF_HOME/run
LOGS=$AF_HOME/logs
API=http://127.0.0.1:$PORT
COMPONENTS=(api-server dag-processor triggerer scheduler)
DB_KIND=${VIDNOTES_AIRFLOW_DB:-postgres}
export VIDNOTES_PG_DIR=${VIDNOTES_PG_DIR:-$AF_HOME/postgres}  # each AIRFLOW_HOME its own cluster
case $DB_KIND in
    postgres) DB_URL=$("$ROOT/scripts/postgres.sh" url) ;;
    sqlite) DB_URL="sqlite:///$AF_HOME/airflow.db" ;;
    *) echo "airflow: ERROR: VIDNOTES_AIRFLOW_DB must be postgres or sqlite, got '$DB_KIND'" >&2; exit 2 ;;
esac

say() { echo "airflow: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# The whole configuration, as environment variables (no airflow.cfg edits): printed by `env`.
airflow_env() {
    cat <<EOF
export AIRFLOW_HOME='$AF_HOME'
export AIRFLOW__CORE__DAGS_FOLDER='$ROOT/dags'
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__EXECUTOR=LocalExecutor
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN='$DB_URL'
export AIRFLOW__CORE__PARALLELISM=4
export AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG=4
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL='$API/execution/'
export AIRFLOW__API__HOST=127.0.0.1
export AIRFLOW__API__PORT=$PORT
export AIRFLOW__API__WORKERS=1
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=admin:admin
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE='$AF_HOME/passwords.json'
export AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES=1
export AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL=30
export AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC=2
export AIRFLOW__LOGGING__BASE_LOG_FOLDER='$AF_HOME/task-logs'
export AIRFLOW_CONN_AWS_VIDNOTES='{"conn_type": "aws", "login": "test", "password": "test", "extra": {"region_name": "us-east-1", "endpoint_url": "http://127.0.0.1:$LS_PORT", "service_config": {"lambda": {"endpoint_url": "http://127.0.0.1:$LAMBDA_PORT"}}}}'
export VIDNOTES_AIRFLOW_QUEUE_URL='http://localhost:$LS_PORT/000000000000/vidnotes-uploads'
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
EOF
}

load_env() { eval "$(airflow_env)"; }

# ---------------------------------------------------------------- processes
# shellcheck source=lib/procs.sh
source "$ROOT/scripts/lib/procs.sh"
# Airflow renames its processes (setproctitle): "airflow api_server -- host:...", "airflow scheduler ..."
af_pattern() { echo "airflow ${1//-/[-_]}"; }

# ---------------------------------------------------------------- commands
cmd_up() {
    local t0=$SECONDS name pid health
    [[ -x $AIRFLOW ]] || die "no airflow in $VENV_DIR (make venv installs the 'airflow' extra)"
    load_env
    mkdir -p "$RUN" "$LOGS"
    if [[ ! -f $AF_HOME/passwords.json ]]; then  # the UI login, made once per AIRFLOW_HOME
        (umask 077 && "$VENV_DIR/bin/python" -c 'import json, secrets; print(json.dumps({"admin": secrets.token_urlsafe(12)}))' \
            >"$AF_HOME/passwords.json")
    fi
    if ! pid_of api-server "$(af_pattern api-server)" >/dev/null; then
        port_busy "$PORT" && die "port $PORT is in use (set VIDNOTES_AIRFLOW_PORT)"
    fi
    [[ $DB_KIND == postgres ]] && "$ROOT/scripts/postgres.sh" up
    say "migrating the metadata database ($DB_KIND: $DB_URL)"
    "$AIRFLOW" db migrate >>"$LOGS/db-migrate.log" 2>&1 || { tail -n 30 "$LOGS/db-migrate.log" >&2; die "airflow db migrate failed"; }
    for name in "${COMPONENTS[@]}"; do
        if pid=$(pid_of "$name" "$(af_pattern "$name")"); then
            say "$name already running (pid $pid)"
        elif [[ $name == api-server ]]; then
            spawn "$name" "$AIRFLOW" api-server --host 127.0.0.1 --port "$PORT" --workers 1
        else
            spawn "$name" "$AIRFLOW" "$name"
        fi
    done
    # healthy = the API answers and reports the scheduler, triggerer and dag-processor alive
    until health=$(curl -sf "$API/api/v2/monitor/health" 2>/dev/null) && healthy "$health"; do
        for name in "${COMPONENTS[@]}"; do
            pid_of "$name" "$(af_pattern "$name")" >/dev/null || { tail -n 30 "$LOGS/$name.log" >&2; cmd_down; die "$name exited during startup"; }
        done
        if ((SECONDS - t0 > TIMEOUT)); then
            echo "${health:-no answer from $API}" >&2
            for name in "${COMPONENTS[@]}"; do say "last lines of $name.log:"; tail -n 15 "$LOGS/$name.log" >&2; done
            cmd_down
            die "not healthy after ${TIMEOUT} s"
        fi
        sleep 1
    done
    say "up in $((SECONDS - t0)) s: UI $API  login admin / $("$VENV_DIR/bin/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["admin"])' "$AF_HOME/passwords.json")"
    say "DAGs from $ROOT/dags; logs in $LOGS (processes) and $AF_HOME/task-logs (tasks)"
}

healthy() {
    "$VENV_DIR/bin/python" -c '
import json, sys
h = json.loads(sys.argv[1])
ok = all((h.get(k) or {}).get("status") == "healthy" for k in ("metadatabase", "scheduler", "triggerer", "dag_processor"))
sys.exit(0 if ok else 1)' "$1"
}

cmd_down() {
    local name
    for name in scheduler triggerer dag-processor api-server; do
        stop "$name" "$(af_pattern "$name")" 30
    done
    [[ $DB_KIND == postgres ]] && "$ROOT/scripts/postgres.sh" down
    return 0
}

cmd_status() {
    local name pid rc=0
    for name in "${COMPONENTS[@]}"; do
        if pid=$(pid_of "$name" "$(af_pattern "$name")"); then
            printf '%-14s running  pid %-8s log %s\n' "$name" "$pid" "$LOGS/$name.log"
        else
            printf '%-14s stopped\n' "$name"
            rc=1
        fi
    done
    if [[ $DB_KIND == postgres ]]; then
        local pg
        pg=$("$ROOT/scripts/postgres.sh" status) || rc=1
        printf '%-14s %s\n' postgres "$pg"
    fi
    if health=$(curl -sf "$API/api/v2/monitor/health" 2>/dev/null); then
        echo "health         $health"
    else
        echo "health         no answer on $API"
        rc=1
    fi
    return $rc
}


case ${1:-} in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) airflow_env ;;
    logs) cmd_logs "${2:-}" ;;
    *) echo "usage: $0 up|down|status|env|logs [-f]" >&2; exit 2 ;;
esac
