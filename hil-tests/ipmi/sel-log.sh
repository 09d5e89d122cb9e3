#!/usr/bin/env bash
# Adds system event records to a bench BMC's SEL through its console, in the
# order asked: each request is appended to DIR/bmcI/sel.queue and a drainer
# holding DIR/bmcI/sel.lock sends what is queued, oldest first. ipmi_sim stamps
# each record with its SEL clock.
#   sel-log.sh [--wait] DIR/bmcI SENSOR_TYPE SENSOR_NUMBER OFFSET [deassert]
# Without --wait it returns at once (chassis_control: ipmi_sim serves its
# console only after chassis_control has returned). With --wait it returns
# once the record is in the SEL. Sensor numbers used by the bench (no SDR:
# ipmitool shows them as #0xNN): 0x40 Power Unit (type 0x09), 0x41 Button /
# Switch (0x14), 0x42 System Boot Initiated (0x1d).
set -uo pipefail
wait=
[ "${1:-}" = --wait ] && { wait=1; shift; }
bmc=$1; type=$2; num=$3; offset=$4
dir=0x6f                               # sensor-specific, assertion
[ "${5:-}" = deassert ] && dir=0xef
[ -f "$bmc/console" ] || exit 0        # no console: nothing is logged
here=$(cd "$(dirname "$0")" && pwd)
# Generator 0x20 (the BMC), event message revision 0x04; event data 2 and 3 unspecified.
echo "sel_add 0x20 0x02 0 0 0 0 0x20 0x00 0x04 $type $num $dir $offset 0xff 0xff" >>"$bmc/sel.queue"

drain() {
    local done total
    done=$(cat "$bmc/sel.done" 2>/dev/null || echo 0)
    total=$(wc -l <"$bmc/sel.queue")
    [ "$total" -gt "$done" ] || return 0
    mapfile -t cmds < <(sed -n "$((done + 1)),${total}p" "$bmc/sel.queue")
    "$here/console" "$bmc" "${cmds[@]}"
    echo "$total" >"$bmc/sel.done"
}
if [ -n "$wait" ]; then
    ( flock 9; drain ) 9>"$bmc/sel.lock"
else
    ( flock 9; sleep 0.05; drain ) 9>"$bmc/sel.lock" </dev/null >>"$bmc/sel.log" 2>&1 &
fi
exit 0
