#!/usr/bin/env bash
# The vidnotes local stack:
#   LocalStack Community in host mode (S3, SQS, STS, IAM)   http://localhost:${VIDNOTES_LOCALSTACK_PORT:-4566}
#   the Lambda gateway (localstack/gateway.py) in front of
#   one Lambda Runtime Interface Emulator per function slot  http://localhost:${VIDNOTES_LAMBDA_PORT:-9001}
#
# VIDNOTES_PROFILE (make up PROFILE=...) picks how the functions run:
#   process (default)  aws-lambda-rie processes on the host; no Docker
#   docker             the functions' container images (`make images`), one container per slot,
#                      on a Docker engine (scripts/docker.sh), behind the same gateway; and
#                      LocalStack's own Lambda service runs the functions too (zip packages in
#                      the runtime image vidnotes-lambda-runtime:3.11, pulled from a local
#                      registry on 127.0.0.1:${VIDNOTES_REGISTRY_PORT:-5005}, with
#                      localstack/lambda_init.py as the container init):
#                      `aws --endpoint-url http://localhost:4566 lambda invoke ...` runs them
#
#   localstack/stack.sh up        set up if needed, start everything, wait until healthy
#   localstack/stack.sh down      stop everything it started (by pid, process groups), idempotent
#   localstack/stack.sh status    each process and its health
#   localstack/stack.sh logs [-f] the logs (build/stack/logs/*.log); -f follows them
#   localstack/stack.sh env       exports for a shell: eval "$(localstack/stack.sh env)"
#
# Pid files: build/stack/run/*.pid; logs: build/stack/logs/<name>.log. See docs/local-stack.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STACK=${VIDNOTES_STACK_DIR:-$ROOT/build/stack}
BIN=${VIDNOTES_STACK_BIN:-$ROOT/build/stack/bin}
RUN=$STACK/run
LOGS=$STACK/logs
STATE=$STACK/state
MAIN_VENV=${VENV:-.venv}
[[ $MAIN_VENV = /* ]] || MAIN_VENV=$ROOT/$MAIN_VENV
LS_VENV=$ROOT/.venv-localstack
LS_PORT=${VIDNOTES_LOCALSTACK_PORT:-4566}
LAMBDA_PORT=${VIDNOTES_LAMBDA_PORT:-9001}
FN_BASE_PORT=${VIDNOTES_FUNCTION_BASE_PORT:-9101}
REGION=${VIDNOTES_REGION:-us-east-1}
FUNCTIONS=${VIDNOTES_FUNCTIONS_CONFIG:-$ROOT/functions/functions.json}
MODELS=${VIDNOTES_MODELS_DIR:-$ROOT/models}
TIMEOUT=${VIDNOTES_STACK_TIMEOUT:-90}
SERVICES=${VIDNOTES_LOCALSTACK_SERVICES:-s3,sqs,sts,iam}
PROFILE=${VIDNOTES_PROFILE:-process}
REGISTRY_PORT=${VIDNOTES_REGISTRY_PORT:-5005}
RUNTIME_IMAGE=vidnotes-lambda-runtime:3.11
LS_URL=http://127.0.0.1:$LS_PORT
GW_URL=http://127.0.0.1:$LAMBDA_PORT
INIT_SCRIPT=$ROOT/localstack/init/ready.d/10-resources.sh

say() { echo "stack: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- processes
# shellcheck source=../scripts/lib/procs.sh
source "$ROOT/scripts/lib/procs.sh"

log_tail() {
    say "last lines of $1:"
    tail -n "${2:-30}" "$1" >&2 || true
}

# ---------------------------------------------------------------- LocalStack
start_localstack() {
    local pid fsroot=$STACK/localstack
    if pid=$(pid_of localstack localstack.runtime.main); then
        say "localstack already running (pid $pid)"
        return 0
    fi
    port_busy "$LS_PORT" && die "port $LS_PORT is in use by another process (set VIDNOTES_LOCALSTACK_PORT)"
    # Host mode reads init hooks from $FILESYSTEM_ROOT/etc/localstack/init/<stage>.d
    # (localstack/config.py Directories.for_host): point that at localstack/init.
    mkdir -p "$fsroot/etc/localstack"
    if [[ -d $fsroot/etc/localstack/init && ! -L $fsroot/etc/localstack/init ]]; then
        rm -rf "$fsroot/etc/localstack/init"
    fi
    ln -sfn "$ROOT/localstack/init" "$fsroot/etc/localstack/init"
    local services=$SERVICES
    [[ $PROFILE == docker ]] && services+=",lambda,logs"
    say "starting LocalStack on $LS_URL (services $services)"
    (
        cd "$STACK"   # not the repo root, where ./localstack (this directory) sits on sys.path
        [[ $PROFILE == docker ]] && localstack_lambda_env "$fsroot"
        # GATEWAY_LISTEN's host part is ignored: LocalStack listens on every interface (which is
        # how the docker profile's containers reach it on the bridge).
        export GATEWAY_LISTEN=127.0.0.1:$LS_PORT OVERRIDE_IN_DOCKER=0 FILESYSTEM_ROOT=$fsroot \
            SERVICES=$services LOCALSTACK_HOST=localhost:$LS_PORT SQS_ENDPOINT_STRATEGY=off \
            DNS_ADDRESS=0 SKIP_SSL_CERT_DOWNLOAD=1 DISABLE_EVENTS=1 PERSISTENCE=0 \
            AWS_DEFAULT_REGION=$REGION VIDNOTES_REGION=$REGION VIDNOTES_LOCALSTACK_PORT=$LS_PORT
        spawn localstack "$LS_VENV/bin/python" -m localstack.runtime.main
    )
}

wait_localstack() {
    local t0=$SECONDS ready pid
    until curl -sf "$LS_URL/_localstack/health" >/dev/null 2>&1; do
        pid_of localstack localstack.runtime.main >/dev/null || {
            log_tail "$LOGS/localstack.log"
            die "LocalStack exited during startup"
        }
        if ((SECONDS - t0 > TIMEOUT)); then
            log_tail "$LOGS/localstack.log"
            die "LocalStack not healthy after ${TIMEOUT} s ($LS_URL/_localstack/health)"
        fi
        sleep 0.2
    done
    # The ready.d hooks run after the health endpoint answers; wait for that stage to finish.
    until ready=$(curl -sf "$LS_URL/_localstack/init/ready") && [[ $(init_state "$ready") != RUNNING ]]; do
        if ((SECONDS - t0 > TIMEOUT)); then
            log_tail "$LOGS/localstack.log"
            die "LocalStack init hooks not finished after ${TIMEOUT} s"
        fi
        sleep 0.2
    done
    say "LocalStack ready after $((SECONDS - t0)) s"
    if [[ $(init_state "$ready") != SUCCESSFUL ]]; then
        say "the ready.d hook did not report success ($ready); running $INIT_SCRIPT directly"
        VIDNOTES_LOCALSTACK_PORT=$LS_PORT VIDNOTES_REGION=$REGION "$INIT_SCRIPT" \
            || die "creating the resources failed"
    fi
}

# init_state JSON: RUNNING until the ready stage completed, then the state of 10-resources.sh
# (SUCCESSFUL, ERROR, or MISSING when LocalStack did not find the hook).
init_state() {
    "$MAIN_VENV/bin/python" -c '
import json, sys
doc = json.loads(sys.argv[1])
if not doc.get("completed"):
    print("RUNNING")
else:
    states = [s["state"] for s in doc.get("scripts", []) if s["name"] == "10-resources.sh"]
    print(states[0] if states else "MISSING")
' "$1"
}

aws_local() {
    AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=$REGION \
        env -u AWS_PROFILE -u AWS_SESSION_TOKEN aws --endpoint-url "$LS_URL" "$@"
}

sync_models() {
    if [[ -d $MODELS ]]; then
        say "syncing $MODELS -> s3://vidnotes-models/store/"
        aws_local s3 sync --only-show-errors "$MODELS/" s3://vidnotes-models/store/
    else
        say "no model store at $MODELS (make models builds it): s3://vidnotes-models/store/ stays empty"
    fi
}

# ---------------------------------------------------------------- Lambda gateway
start_gateway() {
    local pid
    if pid=$(pid_of gateway localstack/gateway.py); then
        say "lambda gateway already running (pid $pid)"
        return 0
    fi
    port_busy "$LAMBDA_PORT" && die "port $LAMBDA_PORT is in use by another process (set VIDNOTES_LAMBDA_PORT)"
    # Like LocalStack (no persistence), a fresh stack forgets UpdateFunctionConfiguration changes.
    rm -rf "$STATE"
    mkdir -p "$STATE"
    local runner=(--runner process)
    [[ $PROFILE == docker ]] && runner=(--runner docker --container-endpoint-url "http://$BRIDGE_IP:$LS_PORT")
    say "starting the lambda gateway on $GW_URL (functions from $FUNCTIONS, ${runner[1]} runner, ports from $FN_BASE_PORT)"
    spawn gateway "$MAIN_VENV/bin/python" "$ROOT/localstack/gateway.py" \
        --config "$FUNCTIONS" --root "$ROOT" --port "$LAMBDA_PORT" --base-port "$FN_BASE_PORT" \
        --endpoint-url "$LS_URL" --region "$REGION" --state-dir "$STATE" --log-dir "$LOGS" \
        --run-dir "$RUN" --rie "$BIN/aws-lambda-rie" --python "$MAIN_VENV/bin/python" "${runner[@]}"
}

# ---------------------------------------------------------------- docker profile
prepare_docker() {
    local name missing=()
    "$ROOT/scripts/docker.sh" up
    for name in $(function_images) $RUNTIME_IMAGE; do
        docker image inspect "$name" >/dev/null 2>&1 || missing+=("$name")
    done
    ((${#missing[@]} == 0)) || die "no image ${missing[*]}: build them first (make images)"
    # The host's address on the default bridge (IPAM has no Gateway when dockerd picked the subnet).
    BRIDGE_IP=$(docker network inspect bridge --format '{{range .IPAM.Config}}{{.Gateway}}{{end}}')
    if [[ -z $BRIDGE_IP ]]; then
        local dev
        dev=$(docker network inspect bridge --format '{{index .Options "com.docker.network.bridge.name"}}')
        BRIDGE_IP=$(ip -4 -o addr show "${dev:-docker0}" | awk '{sub(/\/.*/, "", $4); print $4; exit}')
    fi
    [[ -n $BRIDGE_IP ]] || die "no address of the docker bridge network"
    say "docker profile: functions from images; containers reach LocalStack at $BRIDGE_IP:$LS_PORT"
}

function_images() {  # the image of each function in functions.json
    "$MAIN_VENV/bin/python" -c '
import json, sys
doc = json.load(open(sys.argv[1]))
print("\n".join(spec.get("image", f"{name}:latest") for name, spec in doc["functions"].items()))
' "$FUNCTIONS"
}

remove_containers() {  # what a killed gateway or LocalStack left behind
    command -v docker >/dev/null && docker info >/dev/null 2>&1 || return 0
    local ids
    ids=$( (docker ps -aq --filter "label=vidnotes.stack=$RUN"
            docker ps -aq --filter "name=^$(ls_container_prefix)-lambda-") | sort -u)
    [[ -z $ids ]] && return 0
    say "removing containers of this stack: $(echo $ids)"
    # shellcheck disable=SC2086
    docker rm --force $ids >/dev/null
}

ls_container_prefix() {  # LocalStack's MAIN_CONTAINER_NAME: its function containers are <it>-lambda-*
    echo "vidnotes-ls-$(echo -n "$RUN" | sha256sum | cut -c1-8)"
}

# LocalStack's Lambda service (docs/images.md): the runtime image from the local registry, our init
# (LocalStack's own is downloaded from GitHub), containers that call back on the bridge.
localstack_lambda_env() {
    local fsroot=$1 version init
    version=$("$LS_VENV/bin/python" -c 'from localstack.services.lambda_.packages import LAMBDA_RUNTIME_VERSION as v; print(v)')
    # The installer's marker (skips the download); LocalStack copies this x86_64/ tree into every
    # container, then LAMBDA_INIT_BIN_PATH over /var/rapid/init.
    init=$fsroot/var/lib/localstack/lib/lambda-runtime/$version/x86_64/var/rapid/init
    mkdir -p "$(dirname "$init")" "$STACK/localstack/tmp"
    install -m 0755 "$ROOT/localstack/lambda_init.py" "$init"
    export LAMBDA_INIT_BIN_PATH=$init \
        LAMBDA_RUNTIME_IMAGE_MAPPING="{\"python3.11\": \"127.0.0.1:$REGISTRY_PORT/$RUNTIME_IMAGE\"}" \
        HOSTNAME_FROM_LAMBDA=$BRIDGE_IP MAIN_CONTAINER_NAME=$(ls_container_prefix) \
        LAMBDA_RUNTIME_ENVIRONMENT_TIMEOUT=60 TMPDIR=$STACK/localstack/tmp
}

start_registry() {
    local pid dir=$STACK/registry i
    if pid=$(pid_of registry docker-registry); then
        say "registry already running (pid $pid)"
    else
        port_busy "$REGISTRY_PORT" && die "port $REGISTRY_PORT is in use by another process (set VIDNOTES_REGISTRY_PORT)"
        command -v docker-registry >/dev/null || die "no docker-registry (scripts/docker.sh up installs it)"
        mkdir -p "$dir/data"
        printf '%s\n' 'version: 0.1' 'log: {level: warn}' \
            "storage: {filesystem: {rootdirectory: $dir/data}, delete: {enabled: true}}" \
            "http: {addr: \"127.0.0.1:$REGISTRY_PORT\"}" >"$dir/config.yml"
        spawn registry docker-registry serve "$dir/config.yml"
        for ((i = 0; i < 100; i++)); do
            curl -sf "http://127.0.0.1:$REGISTRY_PORT/v2/" >/dev/null && break
            pid_of registry docker-registry >/dev/null || { log_tail "$LOGS/registry.log"; die "the registry exited"; }
            sleep 0.1
        done
    fi
    local t0=$SECONDS
    docker tag "$RUNTIME_IMAGE" "127.0.0.1:$REGISTRY_PORT/$RUNTIME_IMAGE"
    docker push "127.0.0.1:$REGISTRY_PORT/$RUNTIME_IMAGE" >"$LOGS/registry-push.log" 2>&1 \
        || { log_tail "$LOGS/registry-push.log"; die "pushing $RUNTIME_IMAGE to the local registry failed"; }
    docker rmi "127.0.0.1:$REGISTRY_PORT/$RUNTIME_IMAGE" >/dev/null 2>&1 || true
    say "registry 127.0.0.1:$REGISTRY_PORT has $RUNTIME_IMAGE ($((SECONDS - t0)) s)"
}

deploy_localstack_functions() {  # the four functions as zip packages into LocalStack's Lambda
    local t0=$SECONDS
    say "creating the functions in LocalStack's Lambda (infra/deploy.py --package zip)"
    AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test env -u AWS_PROFILE -u AWS_SESSION_TOKEN \
        "$MAIN_VENV/bin/python" "$ROOT/infra/deploy.py" deploy --endpoint-url "$LS_URL" --region "$REGION" \
        --only iam,functions --package zip >>"$LOGS/deploy.log" 2>&1 \
        || { log_tail "$LOGS/deploy.log"; die "creating the functions in LocalStack failed (log $LOGS/deploy.log)"; }
    say "LocalStack's Lambda has the functions ($((SECONDS - t0)) s)"
}

wait_gateway() {
    local t0=$SECONDS health
    until health=$(curl -sf "$GW_URL/health" 2>/dev/null); do
        pid_of gateway localstack/gateway.py >/dev/null || {
            log_tail "$LOGS/gateway.log"
            die "the lambda gateway exited during startup"
        }
        if ((SECONDS - t0 > TIMEOUT)); then
            log_tail "$LOGS/gateway.log"
            die "the lambda gateway did not answer $GW_URL/health in ${TIMEOUT} s"
        fi
        sleep 0.1
    done
    if [[ $health != '{"status": "ok"'* ]]; then
        echo "$health" | "$MAIN_VENV/bin/python" -m json.tool >&2 || echo "$health" >&2
        log_tail "$LOGS/gateway.log"
        die "some functions failed to start (above)"
    fi
    "$MAIN_VENV/bin/python" - "$health" <<'EOF'
import json, sys
h = json.loads(sys.argv[1])
for name, f in h["functions"].items():
    ports = ", ".join(str(i["port"]) for i in f["instances"])
    extra = f" ({f['reason']})" if f["state"] != "Active" else ""
    print(f"stack:   {name:24s} {f['state']:8s} rie ports {ports}{extra}", file=sys.stderr)
EOF
}

# ---------------------------------------------------------------- commands
cmd_up() {
    local t0=$SECONDS
    "$ROOT/localstack/setup.sh"
    [[ -f $FUNCTIONS ]] || die "no functions config at $FUNCTIONS"
    [[ $PROFILE == process || $PROFILE == docker ]] || die "unknown profile $PROFILE (process, docker)"
    mkdir -p "$RUN" "$LOGS"
    if [[ -f $RUN/profile && $(<"$RUN/profile") != "$PROFILE" ]] && pid_of gateway localstack/gateway.py >/dev/null; then
        die "the stack runs with profile $(<"$RUN/profile"): \`make down\` first"
    fi
    [[ $PROFILE == docker ]] && prepare_docker
    echo "$PROFILE" >"$RUN/profile"
    local lambda_steps=true
    [[ $PROFILE == docker ]] && lambda_steps=deploy_localstack_functions
    if ! ( ([[ $PROFILE != docker ]] || start_registry) && start_localstack && wait_localstack && sync_models \
        && $lambda_steps && start_gateway && wait_gateway); then
        say "up failed: stopping what runs"
        cmd_down
        exit 1
    fi
    say "up in $((SECONDS - t0)) s ($PROFILE profile): S3/SQS $LS_URL, Lambda $GW_URL, logs $LOGS"
}

cmd_down() {
    local f name
    stop gateway localstack/gateway.py 20
    # RIE processes the gateway could not stop (it was killed): their pid files remain.
    for f in "$RUN"/rie-*.pid; do
        [[ -e $f ]] || continue
        name=$(basename "$f" .pid)
        stop "$name" 'aws-lambda-rie|docker run' 5
    done
    stop localstack localstack.runtime.main 30   # it removes its function containers itself
    remove_containers
    stop registry docker-registry 10
    rm -f "$RUN/profile"
}

cmd_status() {
    local name pattern pid rc=0
    for name in localstack gateway; do
        pattern=localstack.runtime.main
        [[ $name == gateway ]] && pattern=localstack/gateway.py
        if pid=$(pid_of "$name" "$pattern"); then
            printf '%-12s running  pid %-8s log %s\n' "$name" "$pid" "$LOGS/$name.log"
        else
            printf '%-12s stopped\n' "$name"
            rc=1
        fi
    done
    if curl -sf "$LS_URL/_localstack/health" -o "$RUN/.ls-health" 2>/dev/null; then
        "$MAIN_VENV/bin/python" - "$RUN/.ls-health" "$SERVICES" <<'EOF'
import json, sys
h = json.load(open(sys.argv[1]))
svc = {s: h["services"].get(s, "?") for s in sys.argv[2].split(",")}
print(f"localstack   {h.get('edition', '')} {h.get('version', '')}: " +
      ", ".join(f"{k} {v}" for k, v in svc.items()))
EOF
        rm -f "$RUN/.ls-health"
    else
        echo "localstack   health: no answer on $LS_URL"
    fi
    if curl -sf "$GW_URL/health" -o "$RUN/.gw-health" 2>/dev/null; then
        "$MAIN_VENV/bin/python" - "$RUN/.gw-health" <<'EOF'
import json, sys
h = json.load(open(sys.argv[1]))
print(f"gateway      health: {h['status']}")
for name, f in h["functions"].items():
    inst = "; ".join(f"port {i['port']} pid {i['pid']} {'alive' if i['alive'] else 'DEAD'}"
                     f"{' busy' if i['busy'] else ''} invocations {i['invocations']}"
                     for i in f["instances"])
    reason = f" ({f['reason']})" if f.get("reason") else ""
    print(f"  {name:24s} {f['state']:8s} {inst}{reason}")
EOF
        rm -f "$RUN/.gw-health"
    else
        echo "gateway      health: no answer on $GW_URL"
    fi
    return $rc
}


cmd_env() {
    cat <<EOF
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=$REGION
export AWS_ENDPOINT_URL=http://localhost:$LS_PORT AWS_ENDPOINT_URL_LAMBDA=http://localhost:$LAMBDA_PORT
EOF
}

case ${1:-} in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    logs) cmd_logs "${2:-}" ;;
    env) cmd_env ;;
    *) echo "usage: $0 up|down|status|logs [-f]|env" >&2; exit 2 ;;
esac
