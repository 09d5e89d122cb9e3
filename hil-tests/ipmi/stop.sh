#!/usr/bin/env bash
# Stops everything start.sh started under DIR, by PID: every ipmi_sim and every
# QEMU its chassis_control started (killing ipmi_sim leaves QEMU running).
#   stop.sh DIR
set -uo pipefail
dir=${1:?usage: stop.sh DIR}

is_ours() { # PID NAME: the PID is alive and runs NAME (not a recycled PID)
    kill -0 "$1" 2>/dev/null && grep -q "$2" "/proc/$1/cmdline" 2>/dev/null
}

pids=()
for bmc in "$dir"/bmc*; do
    [ -d "$bmc" ] || continue
    if [ -f "$bmc/ipmi_sim.pid" ]; then
        pid=$(cat "$bmc/ipmi_sim.pid")
        is_ours "$pid" ipmi_sim && kill -TERM "$pid" && pids+=("$pid")
        rm -f "$bmc/ipmi_sim.pid"
    fi
    for pid in $(cat "$bmc/qemu.pids" 2>/dev/null); do
        is_ours "$pid" qemu-system && kill -TERM "$pid" && pids+=("$pid")
    done
    rm -f "$bmc/qemu.pid" "$bmc/qemu.pids"
done
for pid in "${pids[@]}"; do
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
done
exit 0
