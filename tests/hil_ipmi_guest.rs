//! Hardware-in-the-loop, the bench itself: ipmi_sim BMCs whose VMs boot the
//! ACPI guest (hil-tests/guest), driven with `ipmitool -I lanplus -C 3` — not
//! our driver — and observed on the guest's serial console (its
//! `rack-guest: ...` lines), the QEMU process and the BMC's call log. These
//! pin down what the daemon-level guest tests in `hil_ipmi.rs` build on: a
//! soft-off is a clean shutdown that really powers the VM off.
//!
//! The peers and the guest must be installed (`hil-tests/ipmi/setup.sh`);
//! when they are not, these tests fail and say so.

#[path = "ipmi_bench/mod.rs"]
mod ipmi_bench;

use std::time::Duration;

use ipmi_bench::*;

/// A TCG boot to `rack-guest: ready` takes ~5 s alone; tests run in
/// parallel on two cores.
const BOOT: Duration = Duration::from_secs(120);

fn ipmitool_ok(bench: &Bench, args: &[&str]) -> String {
    let (ok, out) = bench.ipmitool(0, args);
    assert!(ok, "ipmitool {}: {out}", args.join(" "));
    out
}

fn power_status(bench: &Bench) -> String {
    ipmitool_ok(bench, &["chassis", "power", "status"])
}

#[test]
fn ipmitool_soft_off_shuts_the_guest_down_cleanly_and_on_and_reset_boot_it_once_each() {
    let bench = Bench::start_guest(1);
    ipmitool_ok(&bench, &["chassis", "power", "on"]);
    bench.wait_guest_ready(0, 1, BOOT);
    assert_eq!(bench.clean_shutdowns(0), 0, "{}", bench.serial_log(0));

    // Soft-off: the guest's power button handler shuts it down, QEMU exits by
    // itself (the BMC never forces it off) and the BMC reports off.
    ipmitool_ok(&bench, &["chassis", "power", "soft"]);
    wait_until(
        "QEMU to exit after soft-off",
        Duration::from_secs(60),
        || bench.qemu_pid(0).is_none(),
    );
    assert_eq!(
        bench.clean_shutdowns(0),
        1,
        "one clean shutdown on the console:\n{}",
        bench.serial_log(0)
    );
    let status = power_status(&bench);
    assert!(status.contains("Chassis Power is off"), "{status}");
    let calls = bench.calls(0);
    assert!(count(&calls, "set shutdown") >= 1, "{calls}");
    assert_eq!(
        count(&calls, "set power 0"),
        0,
        "QEMU must have exited on its own:\n{calls}"
    );

    // Power on: exactly one more boot.
    ipmitool_ok(&bench, &["chassis", "power", "on"]);
    bench.wait_guest_ready(0, 2, BOOT);
    let pid = bench.qemu_pid(0).expect("QEMU runs after power on");

    // Reset: one more boot, same QEMU process, and no shutdown (a reset is
    // not an OS shutdown).
    ipmitool_ok(&bench, &["chassis", "power", "reset"]);
    bench.wait_guest_ready(0, 3, BOOT);
    assert_eq!(bench.qemu_pid(0), Some(pid), "reset keeps the QEMU process");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(bench.guest_boots(0), 3, "{}", bench.serial_log(0));
    assert_eq!(bench.clean_shutdowns(0), 1, "{}", bench.serial_log(0));
    let status = power_status(&bench);
    assert!(status.contains("Chassis Power is on"), "{status}");
}

#[test]
fn pxe_once_on_a_guest_bench_boots_ipxe_and_the_next_boot_is_the_guest_again() {
    let bench = Bench::start_guest(1);
    ipmitool_ok(&bench, &["chassis", "bootdev", "pxe"]);
    ipmitool_ok(&bench, &["chassis", "power", "on"]);
    wait_until(
        "iPXE on the serial console",
        Duration::from_secs(60),
        || bench.serial_log(0).contains("iPXE"),
    );
    // A network boot, not the guest's kernel.
    let pid = bench.qemu_pid(0).expect("QEMU runs");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(!cmdline.contains("-kernel"), "{cmdline}");
    assert_eq!(bench.guest_boots(0), 0, "{}", bench.serial_log(0));

    ipmitool_ok(&bench, &["chassis", "power", "off"]);
    wait_until("QEMU to exit", Duration::from_secs(10), || {
        bench.qemu_pid(0).is_none()
    });
    ipmitool_ok(&bench, &["chassis", "power", "on"]);
    bench.wait_guest_ready(0, 1, BOOT);
    let boots = std::fs::read_to_string(bench.bmc_dir(0).join("boots.log")).unwrap();
    assert_eq!(
        boots.lines().collect::<Vec<_>>(),
        ["pxe", "default"],
        "boot devices of the two boots"
    );
}
