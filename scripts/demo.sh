#!/usr/bin/env bash
# The main job: a virtual rack on this machine and rack-agent driving it,
# toured with rackctl.
#
#   scripts/demo.sh            the virtual rack: two QEMU machines powered by
#                              ipmi_sim BMCs (IPMI v2.0 / RMCP+) and two systems
#                              of the sushy-tools Redfish emulator (HTTPS)
#   scripts/demo.sh --fake     the daemon's in-memory fake BMCs instead (no peers)
#   ... --once                 stop everything after the tour
#
# Everything listens on 127.0.0.1 and lives under target/demo-rack; Ctrl-C (or
# the end of --once) stops the daemon, the BMCs, the VMs and the emulator.
set -euo pipefail
cd "$(dirname "$0")/.."

once=false
fake=false
for arg in "$@"; do
  case "$arg" in
    --once) once=true ;;
    --fake) fake=true ;;
    *) echo "usage: $0 [--fake] [--once]" >&2; exit 2 ;;
  esac
done

cargo build --quiet --bins
bin=target/debug
rack=$(pwd)/target/demo-rack
rm -rf "$rack"
mkdir -p "$rack/credentials"
chmod 700 "$rack/credentials"
printf 'demo-password\n' > "$rack/credentials/bmc.pass"
chmod 600 "$rack/credentials/bmc.pass"

cleanup() {
  [ -n "${agent:-}" ] && kill "$agent" 2>/dev/null && wait "$agent" 2>/dev/null || true
  [ -n "${watcher:-}" ] && kill "$watcher" 2>/dev/null || true
  [ -d "$rack/ipmi" ] && bash hil-tests/ipmi/stop.sh "$rack/ipmi" >/dev/null 2>&1 || true
  [ -d "$rack/redfish" ] && bash hil-tests/redfish/stop.sh "$rack/redfish" >/dev/null 2>&1 || true
}
trap cleanup EXIT

if $fake; then
  config=config/demo.toml
  mkdir -p target/demo-credentials && cp -p "$rack/credentials/bmc.pass" target/demo-credentials/demo.pass
  rm -rf target/demo-state
  a=demo-01; b=demo-02; r=demo-03
else
  echo "==> installing and starting the bench peers (ipmi_sim + QEMU, sushy-tools)"
  bash hil-tests/ipmi/setup.sh >/dev/null
  bash hil-tests/redfish/setup.sh >/dev/null
  BMC_PASSWORD=demo-password bash hil-tests/ipmi/start.sh "$rack/ipmi" 2 9611 >/dev/null
  bash hil-tests/redfish/start.sh "$rack/redfish" 9643 demo-password >/dev/null
  # Power the first VM on so there is something to reboot.
  ipmitool -I lanplus -C 3 -H 127.0.0.1 -p 9611 -U admin -P demo-password chassis power on >/dev/null
  config=$rack/rack-agent.toml
  cat > "$config" <<CONF
# Written by scripts/demo.sh: the virtual rack on loopback.
listen = "127.0.0.1:50051"
state_dir = "$rack/state"
credentials_dir = "$rack/credentials"

[api]
insecure_plaintext = true   # loopback demo: callers named by metadata

[metrics]
listen = "127.0.0.1:9464"

[sync]
interval = "2s"

[timeouts]
soft_reboot = "10s"
graceful_stop = "10s"
power_confirm = "30s"
confirm_poll = "500ms"

[[servers]]
id = "vm-ipmi-1"
project = "tenant-a"
protocol = "ipmi"
address = "127.0.0.1"
port = 9611
username = "admin"
password_file = "bmc.pass"

[[servers]]
id = "vm-ipmi-2"
project = "tenant-a"
protocol = "ipmi"
address = "127.0.0.1"
port = 9612
username = "admin"
password_file = "bmc.pass"

[[servers]]
id = "rf-3"
project = "tenant-b"
protocol = "redfish"
address = "127.0.0.1"
port = 9643
username = "admin"
password_file = "bmc.pass"
options = { system_id = "27946b59-9e44-4fa7-8e91-f3527a1ef003", ca_file = "$rack/redfish/cert.pem" }

[[servers]]
id = "rf-1"
project = "tenant-b"
protocol = "redfish"
address = "127.0.0.1"
port = 9643
username = "admin"
password_file = "bmc.pass"
options = { system_id = "27946b59-9e44-4fa7-8e91-f3527a1ef001", ca_file = "$rack/redfish/cert.pem" }
CONF
  a=vm-ipmi-1; b=vm-ipmi-2; r=rf-3
fi

"$bin/rack-agent" check-config "$config"
"$bin/rack-agent" --config "$config" run 2> "$rack/agent.log" &
agent=$!
export RACKCTL_ENDPOINT=http://127.0.0.1:50051
for _ in $(seq 100); do
  "$bin/rackctl" servers >/dev/null 2>&1 && break
  kill -0 "$agent" 2>/dev/null || { echo "rack-agent exited:"; cat "$rack/agent.log"; exit 1; }
  sleep 0.2
done
sleep 3   # a sync pass, so the first table shows real power states

"$bin/rackctl" watch > "$rack/watch.log" 2>&1 &
watcher=$!

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
say "$bin/rackctl" servers
say "$bin/rackctl" power "$a" --refresh
say "$bin/rackctl" reboot "$a" --hard --wait
say "$bin/rackctl" start "$b" --wait
say "$bin/rackctl" reinstall "$b" --pxe --wait
if ! $fake; then
  printf '\nThe reinstall as the VM sees it (its serial console):\n'
  for _ in $(seq 40); do
    grep -aq 'iPXE' "$rack/ipmi/bmc1/serial.log" 2>/dev/null && break
    sleep 0.25
  done
  grep -a -m1 -o 'iPXE[^[:cntrl:]]*' "$rack/ipmi/bmc1/serial.log" || echo "(no iPXE banner yet)"
fi
say "$bin/rackctl" stop "$b" --force --wait
say "$bin/rackctl" reboot "$r" --hard --wait
say "$bin/rackctl" servers
say "$bin/rackctl" actions "$b"

sleep 1
kill $watcher 2>/dev/null || true
printf '\n\033[1m$ %s\033[0m (what it printed during the tour)\n' "$bin/rackctl watch"
cat "$rack/watch.log"

if $once; then
  exit 0
fi
echo
echo "rack-agent is running (log: $rack/agent.log, metrics: http://127.0.0.1:9464/metrics)."
echo "Try: $bin/rackctl --help. Ctrl-C stops the daemon and the rack."
wait $agent
