#!/usr/bin/env bash
# Stops the sushy-emulator that start.sh started in DIR (by its PID only).
set -euo pipefail
dir="${1:?usage: stop.sh DIR}"
pidfile="$dir/emulator.pid"
[ -f "$pidfile" ] || exit 0
pid="$(cat "$pidfile")"
if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" || true
fi
rm -f "$pidfile"
