#!/usr/bin/env bash
# make demo: a video through the four Lambda functions of the local stack, driven with the AWS
# CLI exactly as on AWS: upload to the inbox bucket, invoke extract_audio, transcribe (once per
# batch of chunks), summarize, render_pdf, download the PDF. The last line printed is its path.
# Usage: scripts/demo.sh [VIDEO] [OUT_DIR]. Starts the stack if it is not running and stops it
# again afterwards unless KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/.."
VIDEO="${1:-}"
OUT="${2:-build/demo}"
BIN=.venv/bin
S3_URL=http://localhost:${VIDNOTES_LOCALSTACK_PORT:-4566}
LAMBDA_URL=http://localhost:${VIDNOTES_LAMBDA_PORT:-9001}
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1
export PATH="$PWD/$BIN:$PATH"   # the venv's AWS CLI
mkdir -p "$OUT"
say() { echo "demo: $*" >&2; }

if [ -z "$VIDEO" ]; then
  VIDEO="$OUT/sample-talk.mp4"
  say "no VIDEO given: generating a sample talk at $VIDEO"
  python -m vidnotes.sample "$VIDEO" >/dev/null
fi
[ -f "$VIDEO" ] || { say "$VIDEO: no such file"; exit 2; }

started=0
if ! localstack/stack.sh status >/dev/null 2>&1; then
  localstack/stack.sh up
  started=1
fi
cleanup() { if [ "$started" = 1 ] && [ "${KEEP:-0}" != 1 ]; then localstack/stack.sh down; fi; }
trap cleanup EXIT

t0=$(date +%s.%N)
key="uploads/$(basename "$VIDEO")"
aws --endpoint-url "$S3_URL" s3 cp "$VIDEO" "s3://vidnotes-inbox/$key" --only-show-errors

invoke() {  # invoke FUNCTION PAYLOAD -> prints the response payload; fails on a function error
  local fn=$1 payload=$2 resp meta
  resp=$(mktemp "$OUT/.response-XXXXXX.json")
  meta=$(aws --endpoint-url "$LAMBDA_URL" lambda invoke --function-name "$fn" --payload "$payload" "$resp")
  if grep -q FunctionError <<<"$meta"; then
    say "$fn failed: $(python -c 'import json,sys; print(json.load(open(sys.argv[1])).get("errorMessage"))' "$resp")"
    exit 1
  fi
  cat "$resp"
  rm -f "$resp"
}
field() { python -c 'import json,sys; d=json.loads(sys.argv[1]); print(json.dumps(d[sys.argv[2]]) if not isinstance(d[sys.argv[2]], str) else d[sys.argv[2]])' "$1" "$2"; }

payload=$(python -c 'import json,sys; print(json.dumps({"bucket": "vidnotes-inbox", "key": sys.argv[1]}))' "$key")
ext=$(invoke vidnotes-extract-audio "$payload")
job=$(field "$ext" job_id)
say "extract_audio: job $job, $(field "$ext" chunks) chunks, $(field "$ext" duration) s"
pids=()
for batch in $(python -c 'import json,sys; [print(json.dumps(b, separators=(",", ":"))) for b in json.loads(sys.argv[1])["batches"]]' "$ext"); do
  invoke vidnotes-transcribe "{\"job_id\": \"$job\", \"chunks\": $batch}" >/dev/null &  # batches in parallel
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
say "transcribe: ${#pids[@]} invocation(s)"
summ=$(invoke vidnotes-summarize "{\"job_id\": \"$job\"}")
say "summarize: $(field "$summ" summarizer) ($(field "$summ" model))"
pdf=$(field "$(invoke vidnotes-render-pdf "{\"job_id\": \"$job\"}")" pdf_key)
name=$(basename "${VIDEO%.*}")
aws --endpoint-url "$S3_URL" s3 cp "s3://vidnotes-results/$pdf" "$OUT/$name.pdf" --only-show-errors
aws --endpoint-url "$S3_URL" s3 cp "s3://vidnotes-results/jobs/$job/transcript.txt" "$OUT/$name.txt" --only-show-errors
say "done in $(python -c "import sys; print(round($(date +%s.%N) - $t0, 1))") s; transcript: $OUT/$name.txt"
trap - EXIT
cleanup
realpath "$OUT/$name.pdf"
