# Process helpers shared by localstack/stack.sh and scripts/airflow.sh (sourced, not run).
# The caller defines RUN (pid files), LOGS (log files) and say().

# pid_of NAME PATTERN: the pid in run/NAME.pid if that process is alive and its command line
# matches PATTERN (an extended regex), so a stale pid file never makes us signal an unrelated process.
pid_of() {
    local f=$RUN/$1.pid pid
    [[ -f $f ]] || return 1
    pid=$(<"$f")
    [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qE -- "$2" || return 1
    echo "$pid"
}

# group_alive PGID: any non-zombie process left in that process group?
group_alive() {
    ps -e -o pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ {found = 1} END {exit !found}'
}

# spawn NAME CMD...: start CMD as the leader of a new session/process group, log to logs/NAME.log.
spawn() {
    local name=$1
    shift
    mkdir -p "$RUN" "$LOGS"
    echo "=== $(date -u +%FT%TZ) $*" >>"$LOGS/$name.log"
    rm -f "$RUN/$name.pid"
    # The pid file gets the pid of the process that execs CMD: setsid forks when its caller leads
    # a process group (a shell with job control), and then $! would name a parent that is gone.
    setsid bash -c 'echo $$ >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' "$RUN/$name.pid" "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
    local i
    for i in $(seq 100); do
        [[ -s $RUN/$name.pid ]] && return 0
        sleep 0.05
    done
    echo "spawn: $name did not start" >&2
    return 1
}

descendants() {
    local c
    for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do
        echo "$c"
        descendants "$c"
    done
}

alive() { ps -o stat= -p "$1" 2>/dev/null | grep -qv '^Z'; }

# stop NAME PATTERN GRACE: TERM the process group, KILL it after GRACE seconds; then the
# descendants that live in other groups (the runtime an aws-lambda-rie starts, a LocalExecutor
# task), if any are left.
stop() {
    local name=$1 pattern=$2 grace=$3 pid i kids k left
    if ! pid=$(pid_of "$name" "$pattern"); then
        rm -f "$RUN/$name.pid"
        return 0
    fi
    say "stopping $name (pid $pid)"
    kids=$(descendants "$pid")
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
        group_alive "$pid" || break
        sleep 0.1
    done
    if group_alive "$pid"; then
        say "$name did not stop in ${grace} s: SIGKILL"
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true   # our own child when `up` fails half way
    for ((i = 0; i < 50; i++)); do
        left=
        for k in $kids; do alive "$k" && left+=" $k"; done
        [[ -z $left ]] && break
        ((i == 0)) && kill -TERM $left 2>/dev/null
        sleep 0.1
    done
    if [[ -n $left ]]; then
        say "$name left processes behind:$left: SIGKILL"
        kill -KILL $left 2>/dev/null || true
    fi
    rm -f "$RUN/$name.pid"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# cmd_logs [-f]: the last lines of every log in $LOGS (-f follows them). Needs die().
cmd_logs() {
    shopt -s nullglob
    local logs=("$LOGS"/*.log)
    ((${#logs[@]})) || die "no logs in $LOGS"
    if [[ ${1:-} == -f ]]; then
        exec tail -n 20 -F "${logs[@]}"
    fi
    tail -n 40 "${logs[@]}"
}
