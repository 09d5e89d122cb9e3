#!/usr/bin/env bash
# The whole test suite, bench tests included: installs what the tests need on a
# fresh Debian machine (the bench peers, via hil-tests/*/setup.sh), checks
# formatting, lints, the systemd unit and the .deb, then runs every test (the
# test runner's summary line is the last thing printed).
set -euo pipefail
cd "$(dirname "$0")/.."

# Rust components the checks need (present on most toolchains already).
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi

# The bench peers (ipmi_sim, QEMU, ipmitool, sushy-tools...), each installed by
# its own idempotent script.
for setup in hil-tests/*/setup.sh; do
  [ -f "$setup" ] || continue
  echo "==> $setup"
  bash "$setup"
done

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings
cargo clippy --all-targets --features kill-points -- -D warnings
# The workspace's other members: the many-BMC simulator (bmc-sim/) and the
# fuzz targets (fuzz/, with their libFuzzer entry points).
cargo clippy -p bmc-sim --all-targets -- -D warnings
cargo clippy -p rack-agent-fuzz --all-targets --features libfuzzer -- -D warnings

echo "==> systemd unit (verify, security)"
bash scripts/check-unit.sh
echo "==> .deb package"
bash scripts/package.sh

# A short coverage-guided run of every fuzz target (libFuzzer, stable
# toolchain): 8 s each, two at a time on two cores, after a build that reuses
# the release dependencies `cargo deb` just built (1 min 45 s in all, measured
# on the 2-core CI machine). A crash fails the run.
# The long run is by hand (README, "Fuzzing"). Seeds and regression inputs
# also run as plain tests below (fuzz/tests/replay.rs).
echo "==> fuzz (short run)"
bash scripts/fuzz.sh ci

# Every test of the workspace (the agent, bmc-sim, fuzz) in one run, so the
# runner's summary line is the last thing printed. The crash tests
# (tests/crash_points.rs, tests/hil_ipmi_crash.rs) need the agent's kill-point
# hook, which only a build with this feature has; without it they fail and
# say so.
echo "==> tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --features rack-agent/kill-points --no-fail-fast --failure-output final
else
  cargo test --workspace --features rack-agent/kill-points --no-fail-fast
fi
