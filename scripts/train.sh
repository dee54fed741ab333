#!/usr/bin/env bash
# make train: the train_and_redeploy DAG (airflow dags test) against the local stack:
# dataset -> fine-tune -> evaluate -> export/gate/publish -> redeploy + smoke. The store the
# functions read (s3://vidnotes-models/store) is then copied back to models/, so the next
# `make up` / `make demo` serves the new version. Starts the stack if it is not running and
# stops it again afterwards unless KEEP=1. STEPS=N overrides the training steps, CONFIG=file.yaml
# gives a training config (train/config.example.yaml). The run is tracked in MLflow (build/mlflow,
# `make mlflow`).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
export PATH="$PWD/$BIN:$PATH" AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1
S3_URL=http://localhost:${VIDNOTES_LOCALSTACK_PORT:-4566}
say() { echo "train: $*" >&2; }

started=0
if ! localstack/stack.sh status >/dev/null 2>&1; then
  localstack/stack.sh up
  started=1
fi
# the metadata database `airflow dags test` needs: the project's PostgreSQL cluster (as scripts/airflow.sh)
pg_started=0
if [ "${VIDNOTES_AIRFLOW_DB:-postgres}" = postgres ]; then
  export VIDNOTES_PG_DIR=${VIDNOTES_PG_DIR:-$PWD/build/airflow/postgres}
  if ! scripts/postgres.sh status >/dev/null 2>&1; then scripts/postgres.sh up; pg_started=1; fi
fi
cleanup() {
  if [ "${KEEP:-0}" != 1 ]; then
    if [ "$started" = 1 ]; then localstack/stack.sh down; fi
    if [ "$pg_started" = 1 ]; then scripts/postgres.sh down; fi
  fi
}
trap cleanup EXIT

eval "$(scripts/airflow.sh env)"
mkdir -p build/train
airflow db migrate > build/train/db-migrate.log 2>&1 || { tail -30 build/train/db-migrate.log >&2; say "airflow db migrate failed (log above)"; exit 1; }
run_dir="build/train/run-$(date +%Y%m%d-%H%M%S)"
# STEPS=N overrides the steps; CONFIG=file.yaml is the training config (default: the built-in recipe)
conf=$(python -c 'import json,sys; c = {"run_dir": sys.argv[1]}; c |= {"steps": int(sys.argv[2])} if sys.argv[2] else {}; c |= {"config": sys.argv[3]} if sys.argv[3] else {}; print(json.dumps(c))' "$run_dir" "${STEPS:-}" "${CONFIG:+$(realpath "$CONFIG")}")
say "airflow dags test train_and_redeploy (run dir $run_dir)"
airflow dags test train_and_redeploy -c "$conf" > "build/train/dag-$(basename "$run_dir").log" 2>&1 || {
  tail -40 "build/train/dag-$(basename "$run_dir").log" >&2; say "the DAG run failed (log above)"; exit 1; }
grep -E "test WER|regression WER|loss .* over|gate|published|MLflow run|Marking run" "build/train/dag-$(basename "$run_dir").log" | sed 's/^/  /' >&2 || true
aws --endpoint-url "$S3_URL" s3 sync s3://vidnotes-models/store/ models/ --only-show-errors
say "models/ now serves whisper/$(cat models/whisper/CURRENT); train.log and metrics.json in $run_dir"
