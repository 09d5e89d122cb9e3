#!/usr/bin/env bash
# The main job: start rack-agent on a demo rack and drive it with rackctl.
#
# Until the bench lands (hil-tests/), the rack is the daemon's FAKE in-memory
# BMCs (config/demo.toml, [fake_bmc]); nothing real is powered. The daemon keeps
# running until Ctrl-C; pass --once to stop it after the tour.
set -euo pipefail
cd "$(dirname "$0")/.."

once=false
[ "${1:-}" = "--once" ] && once=true

cargo build --quiet --bins
bin=target/debug
mkdir -p target/demo-credentials
printf 'demo-password\n' > target/demo-credentials/demo.pass
chmod 600 target/demo-credentials/demo.pass
rm -rf target/demo-state

"$bin/rack-agent" check-config config/demo.toml
"$bin/rack-agent" --config config/demo.toml run 2> target/demo-agent.log &
agent=$!
trap 'kill $agent 2>/dev/null; wait $agent 2>/dev/null || true' EXIT

export RACKCTL_ENDPOINT=http://127.0.0.1:50051
for _ in $(seq 50); do
  "$bin/rackctl" servers >/dev/null 2>&1 && break
  sleep 0.2
done

# Follow the rack's changes while the tour runs.
"$bin/rackctl" watch --count 12 > target/demo-watch.log 2>&1 &
watcher=$!

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
say "$bin/rackctl" servers
say "$bin/rackctl" power demo-01 --refresh
say "$bin/rackctl" reboot demo-01 --hard --wait
say "$bin/rackctl" stop demo-02 --wait
say "$bin/rackctl" reinstall demo-03 --pxe --wait
say "$bin/rackctl" servers
say "$bin/rackctl" actions demo-01
sleep 1
kill $watcher 2>/dev/null || true
printf '\n\033[1m$ %s\033[0m (what it printed during the tour)\n' "$bin/rackctl watch"
cat target/demo-watch.log

if $once; then
  exit 0
fi
echo
echo "rack-agent is running (log: target/demo-agent.log). Try: $bin/rackctl --help. Ctrl-C stops it."
wait $agent
