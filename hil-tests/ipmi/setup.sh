#!/usr/bin/env bash
# Installs the IPMI bench peers on a Debian machine (idempotent):
#   ipmi_sim (openipmi), ipmitool, ipmipower (freeipmi-tools, for the benchmark),
#   QEMU and the iPXE ROMs it loads for a network boot, iproute2 (ss: start.sh
#   checks that a console port is free); then builds the bench
#   guest the VMs boot with BMC_GUEST=acpi (hil-tests/guest/build.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

pkgs=(openipmi ipmitool freeipmi-tools qemu-system-x86 ipxe-qemu python3 iproute2)
need=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -eq 0 ]; then
    echo "setup.sh: bench peers already installed"
else
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    # A fresh machine has no package lists; an install with stale ones can fail.
    if ! $SUDO apt-get install -y --no-install-recommends "${need[@]}"; then
        $SUDO apt-get update
        $SUDO apt-get install -y --no-install-recommends "${need[@]}"
    fi
    echo "setup.sh: installed ${need[*]}"
fi

# Idempotent: a no-op once built.
bash "$here/../guest/build.sh"
