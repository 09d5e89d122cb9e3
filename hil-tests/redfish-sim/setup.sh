#!/usr/bin/env bash
# Installs what rfsim needs on a Debian machine (idempotent): QEMU (and the
# iPXE ROMs a network boot loads), Python 3 (standard library only), openssl
# for the bench certificate, curl for the readiness check.
set -euo pipefail

pkgs=(qemu-system-x86 ipxe-qemu python3 openssl curl ca-certificates)
need=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -eq 0 ]; then
    echo "setup.sh: rfsim's peers already installed"
    exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y --no-install-recommends "${need[@]}"; then
    $SUDO apt-get update
    $SUDO apt-get install -y --no-install-recommends "${need[@]}"
fi
echo "setup.sh: installed ${need[*]}"
