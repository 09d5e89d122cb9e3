#!/usr/bin/env bash
# Starts N ipmi_sim BMCs on loopback (127.0.0.1 or ::1) UDP ports BASEPORT..BASEPORT+N-1, each
# with an RMCP+ admin user and a QEMU VM as its power (through our
# chassis_control program). Everything lives under DIR/bmcI; PIDs are written
# there so that stop.sh can end exactly what was started.
#
#   start.sh DIR N BASEPORT
#
# Environment: BMC_USER (admin), BMC_PASSWORD (password), BMC_ADDR (127.0.0.1;
# "::1" for IPv6), BMC_POWER (qemu;
# "none" starts BMCs without a power program: status always off, power
# commands refused — for measuring the protocol alone; "stub": the power is a
# file (chassis_stub), on at start, every command logged in bmcI/stub.log —
# for measuring power commands without VMs), BMC_GUEST (none: the
# VM boots no OS, SeaBIOS only, and ignores ACPI; "acpi": it boots the bench
# guest of hil-tests/guest, which shuts down cleanly on IPMI soft-off — built
# by hil-tests/guest/build.sh). A one-time PXE boot is a network boot through
# iPXE either way. BMC_CONSOLE (on): ipmi_sim's emulator console on TCP
# 127.0.0.1 at the same port number as the BMC's UDP port (number in
# bmcI/console), used by ./console, ./set-sensor, ./press-power-button and
# chassis_control's SEL entries; "none" turns it off. Every BMC has the
# sensors of sensors.sh (SDR repository + readings; names and conversion
# factors in bmcI/sensors for set-sensor).
set -euo pipefail

if [ $# -ne 3 ]; then
    echo "usage: $0 DIR N BASEPORT" >&2
    exit 2
fi
dir=$1; n=$2; base=$3
user=${BMC_USER:-admin}
password=${BMC_PASSWORD:-password}
addr=${BMC_ADDR:-127.0.0.1}
here=$(cd "$(dirname "$0")" && pwd)
guest=${BMC_GUEST:-none}
case "$guest" in
    none) ;;
    acpi)
        # Fail now rather than at the first power on, inside ipmi_sim.
        bash "$here/../guest/qemu-args.sh" >/dev/null || exit 1
        ;;
    *) echo "start.sh: BMC_GUEST must be none or acpi, not '$guest'" >&2; exit 2 ;;
esac

# QEMU and python3 (QMP) only for BMCs whose power is a VM.
tools=(ipmi_sim)
[ "${BMC_POWER:-qemu}" = qemu ] && tools+=(qemu-system-x86_64 python3)
for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null || {
        echo "start.sh: $tool not found; run hil-tests/ipmi/setup.sh first" >&2
        exit 1
    }
done

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

for i in $(seq 0 $((n - 1))); do
    port=$((base + i))
    bmc="$dir/bmc$i"
    mkdir -p "$bmc/state"
    echo "$guest" >"$bmc/guest"
    if [ -f "$bmc/ipmi_sim.pid" ] && kill -0 "$(cat "$bmc/ipmi_sim.pid")" 2>/dev/null; then
        echo "start.sh: bmc$i already running" >&2
        continue
    fi
    console="  console 127.0.0.1 $port"
    echo "$port" >"$bmc/console"
    if [ "${BMC_CONSOLE:-on}" = none ]; then
        console="# no console (BMC_CONSOLE=none)"
        rm -f "$bmc/console"
    elif ss -Hltn "sport = :$port" | grep -q .; then
        echo "start.sh: bmc$i: TCP port $port (its console) is taken" >&2
        exit 1
    fi
    control="  chassis_control \"$here/chassis_control $bmc\""
    case "${BMC_POWER:-qemu}" in
        qemu) ;;
        none) control="# no chassis_control (BMC_POWER=none)" ;;
        stub) control="  chassis_control \"$here/chassis_stub $bmc\"" ;;
        *) echo "start.sh: BMC_POWER must be qemu, none or stub" >&2; exit 2 ;;
    esac
    # A GUID is required for RMCP+; make it unique per BMC.
    guid=$(printf 'a1b2c3d4e5f60718293a4b5c%08x' "$port")
    cat >"$bmc/lan.conf" <<CONF
name "bmc$i"
set_working_mc 0x20
  startlan 1
    addr $addr $port
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid $guid
  endlan
$control
$console
  user 2 true "$user" "$password" admin 10 none md2 md5 straight
CONF
    cat >"$bmc/bmc.emu" <<EMU
mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
sel_enable 0x20 1000 0x0a
EMU
    # The sensors (and their SDRs) are defined anew at every start: drop the
    # repository ipmi_sim persisted, or each restart would add them again.
    rm -f "$bmc"/state/ipmi_sim/*/sdr.*
    bash "$here/sensors.sh" "$bmc/sensors" >>"$bmc/bmc.emu"
    echo "mc_enable 0x20" >>"$bmc/bmc.emu"
    setsid ipmi_sim -c "$bmc/lan.conf" -f "$bmc/bmc.emu" -s "$bmc/state" -n \
        </dev/null >>"$bmc/ipmi_sim.log" 2>&1 &
    echo $! >"$bmc/ipmi_sim.pid"
    echo "$port" >"$bmc/port"
done

# Ready when every BMC's UDP port is bound.
for i in $(seq 0 $((n - 1))); do
    port=$((base + i))
    ok=
    for _ in $(seq 1 100); do
        if ss -Hlun "sport = :$port" | grep -q .; then ok=1; break; fi
        kill -0 "$(cat "$dir/bmc$i/ipmi_sim.pid")" 2>/dev/null || break
        sleep 0.05
    done
    if [ -z "$ok" ]; then
        echo "start.sh: bmc$i did not bind $addr port $port; its log:" >&2
        cat "$dir/bmc$i/ipmi_sim.log" >&2 || true
        exit 1
    fi
done
echo "start.sh: $n BMC(s) on $addr ports $base..$((base + n - 1)) under $dir"
