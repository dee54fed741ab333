#!/usr/bin/env bash
# make demo: notes from a video with the local inference core (transcript in four formats +
# summary). Usage: scripts/demo.sh [VIDEO] [OUT_DIR]. The last line printed is the result path.
set -euo pipefail
VIDEO="${1:-}"
OUT="${2:-build/demo}"
BIN=.venv/bin
mkdir -p "$OUT"
if [ -z "$VIDEO" ]; then
  VIDEO="$OUT/sample-talk.mp4"
  echo "no VIDEO given: generating a sample talk at $VIDEO" >&2
  "$BIN/python" -m vidnotes.sample "$VIDEO" >/dev/null
fi
[ -f "$VIDEO" ] || { echo "demo: $VIDEO: no such file" >&2; exit 2; }
name="$(basename "${VIDEO%.*}")"
"$BIN/vidnotes" transcribe "$VIDEO" --format all --output-dir "$OUT" >/dev/null
"$BIN/vidnotes" summarize "$OUT/$name.json" --json > "$OUT/$name.summary.json"
echo "--- transcript ($OUT/$name.txt)" >&2; cat "$OUT/$name.txt" >&2
echo "--- summary" >&2; "$BIN/python" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["text"]); print("(" + d["summarizer"] + ": " + d["model"] + ")")' "$OUT/$name.summary.json" >&2
realpath "$OUT/$name.summary.json"
