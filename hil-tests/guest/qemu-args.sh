#!/usr/bin/env bash
# The QEMU arguments that boot the bench guest (hil-tests/guest/README.md):
# kernel, initramfs, command line, memory, accelerator. The one definition for
# every bench that boots it (IPMI: hil-tests/ipmi/chassis_control; Redfish
# simulator).
#
#   executed:  qemu-args.sh         prints the arguments, one per line
#   sourced:   . qemu-args.sh       sets the bash array GUEST_QEMU_ARGS
#
# Fails (exit/return 1, reason on stderr) when the guest is not built: run
# hil-tests/guest/build.sh (hil-tests/ipmi/setup.sh runs it).
#
# The caller adds the rest of the machine: a serial port for ttyS0 (e.g.
# -nodefaults -machine graphics=off -chardev file,id=s0,path=LOG -serial chardev:s0),
# QMP if it wants one, and no -boot/-nic for a guest boot. Environment:
# GUEST_DIR (default hil-tests/.guest) to boot a guest built elsewhere.

guest_qemu_args() {
    local here dir
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
    dir=${GUEST_DIR:-$here/../.guest}
    if [ ! -f "$dir/vmlinuz" ] || [ ! -f "$dir/initramfs.cpio.gz" ] || [ ! -f "$dir/stamp" ]; then
        echo "qemu-args.sh: the bench guest is not built in $dir; run hil-tests/guest/build.sh" >&2
        return 1
    fi
    dir=$(cd "$dir" && pwd)
    GUEST_QEMU_ARGS=(
        # TCG, not KVM: under this machine's nested KVM the kernel hangs early.
        -accel tcg
        # 128 MiB: the kernel unpacks itself and the initramfs in RAM.
        -m 128
        -kernel "$dir/vmlinuz"
        -initrd "$dir/initramfs.cpio.gz"
        # quiet: only warnings from the kernel, so the rack-guest lines stand
        # alone on the console; edd=off skips the BIOS disk probe (no disks).
        -append "console=ttyS0 quiet edd=off"
    )
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    guest_qemu_args || exit 1
    printf '%s\n' "${GUEST_QEMU_ARGS[@]}"
else
    guest_qemu_args
fi
