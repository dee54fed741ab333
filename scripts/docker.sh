#!/usr/bin/env bash
# The Docker engine vidnotes builds and runs its images with.
#
#   scripts/docker.sh up       use the engine that answers on DOCKER_HOST / the default socket, or
#                              install Debian's docker.io (apt-get) and start dockerd ourselves;
#                              Debian's docker-registry too (the stack's local registry)
#   scripts/docker.sh down     stop the dockerd that `up` started (never one it found running);
#                              containers of the project are removed first
#   scripts/docker.sh status   which engine, and whether the project started it
#
# The engine we start: pid file build/docker/run/dockerd.pid, log build/docker/logs/dockerd.log,
# default socket /var/run/docker.sock and data root /var/lib/docker (so images survive a restart).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUN=${VIDNOTES_DOCKER_RUN:-$ROOT/build/docker/run}
LOGS=${VIDNOTES_DOCKER_LOGS:-$ROOT/build/docker/logs}
TIMEOUT=${VIDNOTES_DOCKER_TIMEOUT:-60}

say() { echo "docker: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# shellcheck source=lib/procs.sh
source "$ROOT/scripts/lib/procs.sh"

engine_up() { docker info --format '{{.ServerVersion}}' >/dev/null 2>&1; }

install_packages() {  # what is missing of: the engine, iptables (its networking), a registry
    local missing=()
    engine_up || command -v dockerd >/dev/null || missing+=(docker.io)
    command -v iptables >/dev/null || missing+=(iptables)
    command -v docker-registry >/dev/null || missing+=(docker-registry)
    ((${#missing[@]})) || return 0
    local sudo=""
    [[ $(id -u) -ne 0 ]] && sudo=sudo
    say "installing Debian's ${missing[*]} (apt-get)"
    $sudo apt-get update -qq
    # Where /usr/sbin/policy-rc.d forbids it (container machines), the packaged services do not
    # start and dockerd and the registry run as ours; where a packaged dockerd does start, `up`
    # finds it running and uses it, and `down` leaves it alone.
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

cmd_up() {
    local pid t0=$SECONDS
    install_packages
    if pid=$(pid_of dockerd dockerd); then
        engine_up && { say "dockerd running (pid $pid, started by vidnotes)"; return 0; }
    elif engine_up; then
        say "using the running engine ($(docker info --format '{{.ServerVersion}}' 2>/dev/null)," \
            "not started by vidnotes: \`make down\` leaves it alone)"
        return 0
    fi
    [[ $(id -u) -eq 0 ]] || die "starting dockerd needs root; start the engine yourself"
    say "starting dockerd (log $LOGS/dockerd.log)"
    spawn dockerd dockerd --pidfile "$RUN/dockerd.daemon.pid"
    until engine_up; do
        pid_of dockerd dockerd >/dev/null || { tail -n 20 "$LOGS/dockerd.log" >&2; die "dockerd exited"; }
        ((SECONDS - t0 > TIMEOUT)) && { tail -n 20 "$LOGS/dockerd.log" >&2; die "dockerd not ready in ${TIMEOUT} s"; }
        sleep 0.5
    done
    say "dockerd $(docker info --format '{{.ServerVersion}}') ready in $((SECONDS - t0)) s"
}

cmd_down() {
    pid_of dockerd dockerd >/dev/null || { rm -f "$RUN/dockerd.pid"; return 0; }
    local ids
    ids=$(docker ps -aq --filter label=vidnotes.stack 2>/dev/null || true)
    if [[ -n $ids ]]; then
        say "removing the stack's containers"
        # shellcheck disable=SC2086
        docker rm -f $ids >/dev/null 2>&1 || true
    fi
    stop dockerd dockerd 30
}

cmd_status() {
    local pid
    if pid=$(pid_of dockerd dockerd); then
        echo "dockerd      running  pid $pid (started by vidnotes), log $LOGS/dockerd.log"
    elif engine_up; then
        echo "dockerd      running (not started by vidnotes)"
    else
        echo "dockerd      stopped"
        return 1
    fi
    docker info --format 'engine       {{.ServerVersion}}, storage {{.Driver}}, {{.Images}} images, {{.ContainersRunning}} containers running'
}

case ${1:-} in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
