#!/usr/bin/env bash
# Boots the bench guest N times (default 5) in a bare QEMU, as the benches do
# (qemu-args.sh), and prints for each boot: QEMU start → "rack-guest: ready"
# on the serial console, and QMP system_powerdown sent → QEMU exited.
#
#   measure.sh [N]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
n=${1:-5}
. "$here/qemu-args.sh"
work=$(mktemp -d)
qemu=
cleanup() {
    [ -n "$qemu" ] && kill "$qemu" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

for i in $(seq 1 "$n"); do
    rm -f "$work/serial.log" "$work/qmp.sock"
    t0=$EPOCHREALTIME
    qemu-system-x86_64 "${GUEST_QEMU_ARGS[@]}" -nodefaults -display none -machine graphics=off \
        -chardev "file,id=s0,path=$work/serial.log" -serial chardev:s0 \
        -qmp "unix:$work/qmp.sock,server=on,wait=off" </dev/null >"$work/qemu.out" 2>&1 &
    qemu=$!
    until grep -q "rack-guest: ready" "$work/serial.log" 2>/dev/null; do
        kill -0 "$qemu" 2>/dev/null || { echo "QEMU exited before ready:"; cat "$work/qemu.out" "$work/serial.log"; exit 1; }
        sleep 0.02
    done
    t1=$EPOCHREALTIME
    t2=$EPOCHREALTIME
    python3 "$here/../ipmi/qmp.py" "$work/qmp.sock" system_powerdown >/dev/null
    wait "$qemu" || true
    t3=$EPOCHREALTIME
    qemu=
    grep -q "rack-guest: power button: clean shutdown" "$work/serial.log" ||
        { echo "no clean shutdown line:"; cat "$work/serial.log"; exit 1; }
    echo "boot $i: ready $(elapsed "$t0" "$t1") s after QEMU start; powerdown -> QEMU exit $(elapsed "$t2" "$t3") s"
done
