#!/usr/bin/env bash
# Builds the .deb with cargo-deb and checks what it installs.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo deb --version >/dev/null 2>&1; then
  cargo install cargo-deb --locked --quiet
fi
deb=$(cargo deb --quiet 2>/dev/null | tail -n1)
[ -f "$deb" ] || { echo "cargo deb produced no package"; exit 1; }
echo "built $deb"
contents=$(dpkg-deb -c "$deb")
for f in ./usr/bin/rack-agent ./usr/bin/rackctl ./etc/rack-agent/rack-agent.toml \
         ./etc/rack-agent/policy.toml ./lib/systemd/system/rack-agent.service \
         ./usr/share/doc/rack-agent/README.md; do
  if ! grep -qF " $f" <<<"$contents"; then
    # cargo-deb may place units under usr/lib/systemd.
    alt=${f/.\/lib\/systemd/.\/usr\/lib\/systemd}
    grep -qF " $alt" <<<"$contents" || { echo "package lacks $f"; echo "$contents"; exit 1; }
  fi
done
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
dpkg-deb -e "$deb" "$tmp"
grep -q 'adduser --system' "$tmp/postinst" || { echo "postinst does not create the user"; exit 1; }
grep -q '^/etc/rack-agent/rack-agent.toml' "$tmp/conffiles" || { echo "config is not a conffile"; exit 1; }
echo "package contents: ok ($(grep -c . <<<"$contents") entries)"
