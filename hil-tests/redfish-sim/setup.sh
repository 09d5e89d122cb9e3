#!/usr/bin/env bash
# Installs what rfsim needs on a Debian machine (idempotent): QEMU (and the
# iPXE ROMs a network boot loads), Python 3 (standard library only), openssl
# for the bench certificate, curl for the readiness check; and the ACPI bench
# guest (hil-tests/guest/build.sh) when that is present.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)

pkgs=(qemu-system-x86 ipxe-qemu python3 openssl curl ca-certificates)
need=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -eq 0 ]; then
    echo "setup.sh: rfsim's peers already installed"
else
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    if ! $SUDO apt-get install -y --no-install-recommends "${need[@]}"; then
        $SUDO apt-get update
        $SUDO apt-get install -y --no-install-recommends "${need[@]}"
    fi
    echo "setup.sh: installed ${need[*]}"
fi

# The ACPI guest (--guest acpi) is built from Debian packages by its own
# idempotent script.
if [ -x "$here/../guest/build.sh" ]; then
    "$here/../guest/build.sh"
fi
