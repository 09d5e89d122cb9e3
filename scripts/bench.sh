#!/usr/bin/env bash
# rack-agent's benchmarks next to the reference tools, in one run (README,
# "Benchmarks"). Builds the release binaries and the bench, installs the IPMI
# reference tools if missing, runs examples/bench, and stops everything the
# run started — also on Ctrl-C, on failure, or if the bench itself is killed.
#
#   scripts/bench.sh [--smoke | --large] [--json] [--rounds N] [--only ipmi,inventory,redfish,api,scale]
#
#   (default)  IPMI and Redfish sweeps at N = 32 and 256, the API under load,
#              scale at 1,000 servers / 100,000 recorded actions; ~10 minutes
#   --large    scale at the issue's sizes: 10,000 servers, 1,000,000 actions
#   --smoke    tiny sizes, < 1 minute after the build: every contender must
#              run (exit 1 if one fails; a missed target never fails the run)
#   --json     the report as JSON on stdout (progress goes to stderr)
#   --json-file FILE   the JSON report written to FILE as well as the table
#
# BENCH_KEEP=1 keeps the run directory (logs, databases) for a look after.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

# The IPMI contenders: ipmi_sim, FreeIPMI's ipmipower, ipmitool (the full HIL
# setup in hil-tests/ipmi/setup.sh installs these too, plus QEMU, which the
# bench's BMCs do not need).
need=()
command -v ipmi_sim >/dev/null || need+=(openipmi)
command -v ipmipower >/dev/null || need+=(freeipmi-tools)
command -v ipmitool >/dev/null || need+=(ipmitool)
if [ ${#need[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y --no-install-recommends "${need[@]}" ||
        { $SUDO apt-get update && $SUDO apt-get install -y --no-install-recommends "${need[@]}"; }
fi

echo "bench: building (release)" >&2
cargo build --release --quiet --bin rack-agent --bin rackctl --example bench
cargo build --release --quiet -p bmc-sim   # the scale section's many-BMC simulator

mkdir -p target/bench-runs
run=$(mktemp -d "$repo/target/bench-runs/run.XXXXXX")
bench="$repo/target/release/examples/bench"
cleanup() {
    "$bench" cleanup "$run" || true
    if [ -z "${BENCH_KEEP:-}" ]; then rm -rf "$run"; else echo "bench: kept $run" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$bench" run --run-dir "$run" --repo "$repo" \
    --agent "$repo/target/release/rack-agent" --rackctl "$repo/target/release/rackctl" \
    --bmc-sim "$repo/target/release/bmc-sim" "$@"
