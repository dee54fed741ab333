#!/usr/bin/env bash
# Installs what the local stack runs, idempotently (a stamp per piece; re-runs take ~0.1 s):
#   1. uv (pinned) into the main venv (.venv/bin/uv), with the main venv's pip;
#   2. .venv-localstack: LocalStack Community (localstack-core) on Python 3.13, created with uv.
#      It has its own venv because localstack-core needs Python >= 3.12 and its boto pins clash
#      with Airflow's;
#   3. build/stack/bin/aws-lambda-rie: the AWS Lambda Runtime Interface Emulator, taken from the
#      aws-sam-cli wheel (pinned version and wheel sha256; GitHub, where it is released, is
#      unreachable here);
#   4. awslambdaric in the main venv (the `lambda` extra), which the RIE runs the handlers with.
# Everything comes from the package registry (pip / uv), nothing from GitHub or Docker.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MAIN_VENV=${VENV:-.venv}
[[ $MAIN_VENV = /* ]] || MAIN_VENV=$ROOT/$MAIN_VENV
LS_VENV=$ROOT/.venv-localstack
BIN=${VIDNOTES_STACK_BIN:-$ROOT/build/stack/bin}   # shared by every stack dir (tests use their own)
PY313=${VIDNOTES_PYTHON313:-/root/.pyenv/versions/3.13.0/bin/python3.13}

UV_VERSION=0.13.9
LOCALSTACK_SPEC='localstack-core[runtime]==2026.3.0'
EXCLUDE_NEWER=2026-03-31          # resolves every LocalStack dependency as of that day
SAM_CLI_VERSION=1.170.0
SAM_CLI_WHEEL_SHA256=24ebaf5ecba38dc1758089968cb89ab61e124b84e92a344fc7a2771a47f4d0bf
RIE_MEMBER=samcli/local/rapid/aws-lambda-rie-x86_64

say() { echo "setup: $*" >&2; }

[[ -x $MAIN_VENV/bin/python ]] || { say "no main venv at $MAIN_VENV (run: make venv)"; exit 1; }
command -v aws >/dev/null || { say "the AWS CLI (aws) is not on PATH"; exit 1; }

# 1. uv
if [[ "$("$MAIN_VENV/bin/uv" --version 2>/dev/null)" != "uv $UV_VERSION"* ]]; then
    say "installing uv==$UV_VERSION into $MAIN_VENV"
    "$MAIN_VENV/bin/python" -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"
fi
UV=$MAIN_VENV/bin/uv

# 2. LocalStack
ls_stamp=$LS_VENV/.vidnotes-installed
ls_want="$LOCALSTACK_SPEC exclude-newer=$EXCLUDE_NEWER python=$PY313"
if [[ "$(cat "$ls_stamp" 2>/dev/null)" != "$ls_want" ]]; then
    [[ -x $PY313 ]] || { say "LocalStack needs Python 3.13: $PY313 not found (set VIDNOTES_PYTHON313)"; exit 1; }
    say "creating $LS_VENV ($LOCALSTACK_SPEC, packages as of $EXCLUDE_NEWER)"
    rm -rf "$LS_VENV"
    "$UV" venv -q -p "$PY313" "$LS_VENV"
    "$UV" pip install -q --python "$LS_VENV/bin/python" --exclude-newer "$EXCLUDE_NEWER" "$LOCALSTACK_SPEC"
    # Verify it imports and is the version asked for before stamping.
    "$LS_VENV/bin/python" - "$LOCALSTACK_SPEC" <<'EOF'
import sys
from importlib.metadata import version
import localstack.runtime.main  # noqa: F401  (what stack.sh runs)
want = sys.argv[1].split("==")[1]
got = version("localstack-core")
assert got == want, f"localstack-core {got} installed, {want} wanted"
EOF
    "$UV" pip freeze -q --python "$LS_VENV/bin/python" > "$LS_VENV/requirements.lock"
    echo "$ls_want" > "$ls_stamp"
fi

# 3. The Lambda RIE
rie=$BIN/aws-lambda-rie
rie_stamp=$rie.version
rie_want="aws-sam-cli==$SAM_CLI_VERSION $RIE_MEMBER"
if [[ "$(cat "$rie_stamp" 2>/dev/null)" != "$rie_want" || ! -x $rie ]]; then
    say "extracting aws-lambda-rie from aws-sam-cli==$SAM_CLI_VERSION"
    mkdir -p "$BIN"
    dl=$(mktemp -d)
    trap 'rm -rf "$dl"' EXIT
    "$MAIN_VENV/bin/python" -m pip download -q --disable-pip-version-check --no-deps \
        "aws-sam-cli==$SAM_CLI_VERSION" -d "$dl"
    "$MAIN_VENV/bin/python" - "$dl" "$SAM_CLI_WHEEL_SHA256" "$RIE_MEMBER" "$rie" <<'EOF'
import hashlib, os, sys, zipfile
from pathlib import Path
dl, sha, member, dest = sys.argv[1:]
(wheel,) = Path(dl).glob("aws_sam_cli-*.whl")
got = hashlib.sha256(wheel.read_bytes()).hexdigest()
if got != sha:
    sys.exit(f"setup: {wheel.name} sha256 {got} != pinned {sha}")
tmp = dest + ".tmp"
with zipfile.ZipFile(wheel) as z, open(tmp, "wb") as out:
    out.write(z.read(member))
os.chmod(tmp, 0o755)
os.replace(tmp, dest)
EOF
    rm -rf "$dl"
    trap - EXIT
    echo "$rie_want" > "$rie_stamp"
fi

# 4. awslambdaric in the main venv (normally there already: `make venv` installs the lambda extra)
if ! "$MAIN_VENV/bin/python" -c 'import awslambdaric' 2>/dev/null; then
    say "installing the lambda extra into $MAIN_VENV"
    "$MAIN_VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT[lambda]"
fi
