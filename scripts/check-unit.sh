#!/usr/bin/env bash
# Checks the systemd unit: `systemd-analyze verify` must be clean (against a
# scratch root holding the built binary, so it checks ExecStart= too) and
# `systemd-analyze security --offline=yes` must rate it OK or better (exposure
# below 5.0). Prints the exposure score.
set -euo pipefail
cd "$(dirname "$0")/.."
unit=systemd/rack-agent.service

if ! command -v systemd-analyze >/dev/null; then
  apt-get update -qq && apt-get install -y -qq systemd >/dev/null
fi
cargo build --quiet --bin rack-agent

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/bin" "$root/etc/systemd/system" "$root/usr/lib/systemd" "$root/usr/share/doc/rack-agent"
cp -r /lib/systemd/system "$root/usr/lib/systemd/"
cp target/debug/rack-agent "$root/usr/bin/"
cp README.md "$root/usr/share/doc/rack-agent/"
cp "$unit" "$root/etc/systemd/system/"
out=$(systemd-analyze verify --root="$root" /etc/systemd/system/rack-agent.service 2>&1) || {
  echo "systemd-analyze verify failed:"; echo "$out"; exit 1; }
if [ -n "$out" ]; then
  echo "systemd-analyze verify is not clean:"; echo "$out"; exit 1
fi
echo "systemd-analyze verify: clean"

line=$(systemd-analyze security --offline=yes "$unit" 2>&1 | grep 'Overall exposure level')
echo "$line"
systemd-analyze security --offline=yes --threshold=49 "$unit" >/dev/null 2>&1 || {
  echo "exposure worse than OK (threshold 4.9)"; exit 1; }
case "$line" in
  *" OK "*|*SAFE*|*PERFECT*) ;;
  *) echo "exposure level is not OK or better"; exit 1 ;;
esac
