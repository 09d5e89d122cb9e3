#!/usr/bin/env bash
# Stops what start.sh started in DIR, by PID only: the simulator (which stops
# its VMs on SIGTERM), then any QEMU listed in DIR/qemu.pids that still runs.
#   stop.sh DIR
set -uo pipefail
dir="${1:?usage: stop.sh DIR}"
[ -d "$dir" ] || exit 0
dir="$(cd "$dir" && pwd)"

# PID NEEDLE: alive, not a zombie, and its command line mentions NEEDLE (so a
# recycled PID is never signalled).
ours() {
    local stat
    kill -0 "$1" 2>/dev/null || return 1
    read -r stat 2>/dev/null < "/proc/$1/stat" || return 1
    [[ ${stat#*) } != Z* ]] || return 1
    tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$2"
}

stop_pid() { # PID NEEDLE WAIT_TENTHS
    ours "$1" "$2" || return 0
    kill -TERM "$1" 2>/dev/null
    for _ in $(seq 1 "$3"); do ours "$1" "$2" || return 0; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null
    for _ in $(seq 1 20); do ours "$1" "$2" || return 0; sleep 0.1; done
}

if [ -f "$dir/rfsim.pid" ]; then
    stop_pid "$(cat "$dir/rfsim.pid")" "rfsim.py" 150
    rm -f "$dir/rfsim.pid"
fi
if [ -f "$dir/qemu.pids" ]; then
    while read -r pid; do
        [ -n "$pid" ] && stop_pid "$pid" "$dir/" 30
    done < "$dir/qemu.pids"
    rm -f "$dir/qemu.pids"
fi
exit 0
