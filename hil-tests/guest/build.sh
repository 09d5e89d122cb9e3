#!/usr/bin/env bash
# Builds the bench guest (see README.md) into hil-tests/.guest/:
#   vmlinuz             Debian's 6.1 cloud kernel, as shipped
#   initramfs.cpio.gz   busybox-static, the kernel's evdev.ko and button.ko,
#                       our /init and power button handler
#   stamp               what was built from what; while it matches, a rerun is
#                       a no-op
# Only Debian packages, fetched with `apt-get download` and unpacked with
# `dpkg-deb -x`: nothing is installed on this machine. Needs apt, dpkg-deb,
# gzip, sha256sum, flock (all on a fresh Debian); root (or sudo) only if the
# package lists must be refreshed.
#
#   build.sh [--force]
#
# Environment: GUEST_KERNEL_PKG (e.g. linux-image-6.1.0-48-cloud-amd64) to
# pin the kernel package instead of following linux-image-cloud-amd64.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=$(cd "$here/.." && pwd)/.guest
force=false
case "${1:-}" in
    "") ;;
    --force) force=true ;;
    *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

mkdir -p "$out"
# Tests, setup scripts and people may run this at once: one build at a time.
exec 9>"$out/.lock"
flock 9

# The stamp names the inputs that are ours; the packages it was built from are
# recorded in it but not looked up again (a rerun must not need the network).
key=$(cat "$here/build.sh" "$here/init" "$here/power-button" | sha256sum | cut -d' ' -f1)
if ! $force && [ -f "$out/stamp" ] && [ -f "$out/vmlinuz" ] && [ -f "$out/initramfs.cpio.gz" ] &&
    grep -qx "inputs $key" "$out/stamp"; then
    echo "build.sh: guest up to date in $out ($(grep '^kernel ' "$out/stamp"))"
    exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# The concrete kernel package: the one the cloud metapackage depends on.
kernel_pkg() {
    apt-cache depends linux-image-cloud-amd64 2>/dev/null |
        sed -n 's/^ *Depends: \(linux-image-6\.1\.[^ ]*-cloud-amd64\)$/\1/p' | head -n1
}

work=$(mktemp -d "$out/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/debs"

download() {
    local pkg
    pkg=${GUEST_KERNEL_PKG:-$(kernel_pkg)}
    [ -n "$pkg" ] || return 1
    # apt's _apt user cannot write into a private dir; root downloads unsandboxed.
    (cd "$work/debs" && apt-get download -q -o APT::Sandbox::User=root busybox-static "$pkg")
}
# A fresh machine may have no (or stale) package lists: refresh only then.
if ! download; then
    echo "build.sh: download failed; refreshing the package lists (apt-get update)" >&2
    $SUDO apt-get update -q
    download || {
        echo "build.sh: cannot download busybox-static and a linux-image-6.1.*-cloud-amd64" >&2
        exit 1
    }
fi

kdeb=$(ls "$work"/debs/linux-image-*.deb)
bdeb=$(ls "$work"/debs/busybox-static_*.deb)
dpkg-deb -x "$kdeb" "$work/kernel"
dpkg-deb -x "$bdeb" "$work/busybox"
kver=$(basename "$(ls -d "$work"/kernel/lib/modules/*)")
busybox=$work/busybox/bin/busybox

# The kernel must have what the guest relies on built in, and the button
# driver where /init loads it from.
config=$work/kernel/boot/config-$kver
for want in CONFIG_BLK_DEV_INITRD=y CONFIG_RD_GZIP=y CONFIG_DEVTMPFS=y CONFIG_SERIAL_8250_CONSOLE=y \
    CONFIG_ACPI=y CONFIG_INPUT=y CONFIG_ACPI_BUTTON=m CONFIG_INPUT_EVDEV=m; do
    grep -qx "$want" "$config" || {
        echo "build.sh: $kver lacks $want, which the guest's /init relies on" >&2
        exit 1
    }
done

root=$work/root
mkdir -p "$root"/{bin,dev,proc,sys,run,var/log,lib/modules,etc/acpi/PWRF}
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
# The modules ship uncompressed in Debian 12 (CONFIG_MODULE_COMPRESS_NONE);
# unpack them anyway should a later kernel compress them.
for m in input/evdev acpi/button; do
    src=$(ls "$work/kernel/lib/modules/$kver/kernel/drivers/$m".ko* 2>/dev/null | head -n1)
    [ -n "$src" ] || { echo "build.sh: $kver has no $m.ko" >&2; exit 1; }
    dst=$root/lib/modules/$(basename "$m").ko
    case "$src" in
        *.ko) cp "$src" "$dst" ;;
        *.ko.xz) "$busybox" xz -dc "$src" >"$dst" ;;
        *.ko.gz) gzip -dc "$src" >"$dst" ;;
        *) echo "build.sh: $src: unknown module compression" >&2; exit 1 ;;
    esac
done
install -m 755 "$here/init" "$root/init"
install -m 755 "$here/power-button" "$root/etc/acpi/PWRF/00000080"

# newc cpio by busybox's own applet (cpio itself is not installed), owned by root.
(cd "$root" && find . | LC_ALL=C sort | "$busybox" cpio -o -H newc -R 0:0 2>/dev/null) |
    gzip -9n >"$work/initramfs.cpio.gz"
cp "$work/kernel/boot/vmlinuz-$kver" "$work/vmlinuz"

mv -f "$work/vmlinuz" "$out/vmlinuz"
mv -f "$work/initramfs.cpio.gz" "$out/initramfs.cpio.gz"
{
    echo "inputs $key"
    echo "kernel $(basename "$kdeb")"
    echo "busybox $(basename "$bdeb")"
    echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ)"
} >"$out/stamp"
echo "build.sh: guest built in $out: vmlinuz ($kver), initramfs.cpio.gz ($(du -k "$out/initramfs.cpio.gz" | cut -f1) KiB)"
