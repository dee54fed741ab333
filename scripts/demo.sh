#!/usr/bin/env bash
# make demo: a video through the local stack, orchestrated by Airflow, driven as on AWS: the upload
# to the inbox bucket (`aws s3 cp`) is all it takes. S3 notifies SQS, Airflow's asset watcher sees
# the message and starts the DAG (no manual trigger), which runs extract_audio, transcribe (fanned
# out over batches of chunks), summarize and render_pdf as Lambda invocations. This script waits
# for that DAG run (REST API) and downloads the notes (PDF, Markdown, JSON, chapters track) and the
# transcript. The last two lines printed are the paths of notes.md and of the PDF.
# Usage: scripts/demo.sh [VIDEO] [OUT_DIR]. SPEAKERS=auto|N labels the speakers, LANGUAGE=auto|xx sets
# the language (both as the upload's metadata, x-amz-meta-vidnotes-speakers/-language). Starts the stack and Airflow if they are not running and
# stops what it started afterwards unless KEEP=1, which also starts the web page (scripts/ui.sh) and prints its URL. VIDNOTES_DEMO_TIMEOUT: seconds to wait for the run.
set -euo pipefail
cd "$(dirname "$0")/.."
VIDEO="${1:-}"
OUT="${2:-build/demo}"
BIN=.venv/bin
S3_URL=http://localhost:${VIDNOTES_LOCALSTACK_PORT:-4566}
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1
export PATH="$PWD/$BIN:$PATH"   # the venv's AWS CLI and Python
mkdir -p "$OUT"
say() { echo "demo: $*" >&2; }

if [ -z "$VIDEO" ]; then
  VIDEO="$OUT/sample-talk.mp4"
  say "no VIDEO given: generating a sample talk at $VIDEO"
  python -m vidnotes.sample "$VIDEO" >/dev/null
fi
[ -f "$VIDEO" ] || { say "$VIDEO: no such file"; exit 2; }

stack_started=0 airflow_started=0
cleanup() {
  if [ "${KEEP:-0}" != 1 ]; then
    if [ "$airflow_started" = 1 ]; then scripts/airflow.sh down || true; fi
    if [ "$stack_started" = 1 ]; then localstack/stack.sh down || true; fi
  fi
}
trap cleanup EXIT
if ! localstack/stack.sh status >/dev/null 2>&1; then
  stack_started=1
  localstack/stack.sh up
fi
if ! scripts/airflow.sh status >/dev/null 2>&1; then
  airflow_started=1
  scripts/airflow.sh up
fi

t0=$(date +%s.%N)
since=$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)
key="uploads/$(basename "$VIDEO")"
# per-upload options travel with the object, as a user sets them on AWS (docs/pipeline.md)
meta=()
[ -n "${SPEAKERS:-}" ] && meta+=("vidnotes-speakers=$SPEAKERS")
[ -n "${LANGUAGE:-}" ] && meta+=("vidnotes-language=$LANGUAGE")
metadata=()
[ ${#meta[@]} -gt 0 ] && metadata=(--metadata "$(IFS=,; echo "${meta[*]}")")
aws --endpoint-url "$S3_URL" s3 cp "$VIDEO" "s3://vidnotes-inbox/$key" --only-show-errors "${metadata[@]}"
say "uploaded s3://vidnotes-inbox/$key: waiting for Airflow (UI http://localhost:${VIDNOTES_AIRFLOW_PORT:-8080})"

if ! result=$(python scripts/airflow_client.py wait-upload "$key" --since "$since" --timeout "${VIDNOTES_DEMO_TIMEOUT:-1800}"); then
  say "the run did not succeed: $result"
  status_key=$(python -c 'import json,sys; print(json.loads(sys.argv[1]).get("status_key") or "")' "$result" 2>/dev/null || true)
  if [ -n "$status_key" ]; then
    say "s3://vidnotes-results/$status_key:"
    aws --endpoint-url "$S3_URL" s3 cp "s3://vidnotes-results/$status_key" - >&2 || true
  fi
  exit 1
fi
job=$(python -c 'import json,sys; print(json.loads(sys.argv[1])["job_id"])' "$result")
run=$(python -c 'import json,sys; print(json.loads(sys.argv[1])["run_id"])' "$result")
say "DAG run $run succeeded: job $job"
name=$(basename "${VIDEO%.*}")
for f in notes.pdf notes.md notes.json chapters.vtt transcript.txt transcript.srt; do
  ext=${f#*.}; stem=${f%%.*}
  case $stem in notes) dest="$OUT/$name.$ext" ;; *) dest="$OUT/$name.$stem.$ext" ;; esac
  aws --endpoint-url "$S3_URL" s3 cp "s3://vidnotes-results/jobs/$job/$f" "$dest" --only-show-errors
done
say "done in $(python -c "import sys; print(round($(date +%s.%N) - $t0, 1))") s from upload to PDF; also in $OUT: $name.json (notes), $name.chapters.vtt, $name.transcript.txt, $name.transcript.srt"
trap - EXIT
cleanup
if [ "${KEEP:-0}" = 1 ]; then  # the stack and Airflow stay: so does the web page, to read the notes in a browser
  scripts/ui.sh up && say "read the notes in a browser: http://127.0.0.1:${VIDNOTES_UI_PORT:-7860}/#/job/$job (make ui-down, make airflow-down, make down stop it all)"
fi
realpath "$OUT/$name.md"
realpath "$OUT/$name.pdf"
