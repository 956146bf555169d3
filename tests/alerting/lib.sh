# shellcheck shell=bash
# Sourced by tests/alerting/up, down and watchdog: the processes of one DIR.
#
# Each process's pid is in DIR/NAME.pid (NAME: prometheus, alertmanager, watchdog); a pid counts
# only while it still names that process of this DIR (pids are reused).

# Whether process PID runs (a zombie, exited but not yet reaped, does not).
alerting_alive() {
    grep -qs '^State:[[:space:]]*[^Z[:space:]]' "/proc/$1/status"
}

# The command line each NAME of DIR runs with, as /proc shows it (arguments separated by spaces).
alerting_cmdline_mark() {
    local dir=$1 name=$2
    case $name in
        prometheus | alertmanager) echo "--config.file=$dir/$name.yml " ;;
        watchdog) echo "watchdog $dir " ;;
        *) return 1 ;;
    esac
}

# Prints the pid of NAME of DIR, if it runs.
alerting_pid() {
    local dir=$1 name=$2 pid mark
    pid=$(cat "$dir/$name.pid" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    mark=$(alerting_cmdline_mark "$dir" "$name") || return 1
    [[ -r /proc/$pid/cmdline ]] || return 1
    { tr '\0' ' ' <"/proc/$pid/cmdline"; echo; } | grep -qF -- "$mark" || return 1
    echo "$pid"
}

# Stops NAME of DIR, if it runs: SIGTERM, then SIGKILL after TIMEOUT_S seconds (default 30).
alerting_stop() {
    local dir=$1 name=$2 timeout_s=${3:-30} pid deadline
    pid=$(alerting_pid "$dir" "$name") || return 0
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + timeout_s))
    while alerting_alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
    if alerting_alive "$pid"; then
        echo "tests/alerting: $name in $dir did not stop within ${timeout_s}s: killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
}
