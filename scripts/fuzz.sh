#!/usr/bin/env bash
# Coverage-guided fuzzing of rack-agent's decoders and loaders with libFuzzer,
# on the stable toolchain: no nightly, no sanitizer, no cargo-fuzz needed.
# The targets are in fuzz/ (README, "Fuzzing").
#
#   scripts/fuzz.sh ci                      build, then every target for FUZZ_SECONDS (default 8) each,
#                                           FUZZ_JOBS (default: the number of cores) at a time
#   scripts/fuzz.sh run [TARGET...] [-- ARGS]   every (or each named) target for FUZZ_SECONDS
#                                           (default 600) each, FUZZ_JOBS (default 1) at a
#                                           time; ARGS go to libFuzzer
#   scripts/fuzz.sh repro TARGET FILE       run one input (a crash artifact) through TARGET
#   scripts/fuzz.sh minimize TARGET FILE    shrink a crashing input
#   scripts/fuzz.sh cmin TARGET             shrink TARGET's working corpus to the inputs that add coverage
#   scripts/fuzz.sh build | list
#
# Builds go to FUZZ_TARGET_DIR (default: target/ of this tree); `ci` builds
# in target/release with only the agent's crates instrumented, reusing the
# dependencies of the release build (scripts/fuzz-rustc.sh). The working
# corpus is fuzz/corpus/TARGET (not committed; `ci` starts from the seeds in
# a temporary one that it deletes). The committed
# seeds (fuzz/seeds, fuzz/regressions, the Redfish fixtures and the shipped
# config files) are read, never written. A crash is saved in
# fuzz/artifacts/TARGET/ and fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=(ipmi_packet ipmi_records ipmi_session redfish_json config policy api_request)
HOST=$(rustc -vV | sed -n 's/^host: //p')
PROFILE=fuzz

# What `cargo fuzz build --sanitizer none` passes, all of it stable: SanitizerCoverage
# edge counters and comparison tracing for libFuzzer, and `cfg(fuzzing)`.
SANCOV="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
BIN_DIR="${CARGO_TARGET_DIR:-target}/$HOST/$PROFILE"

bin_dir() { echo "$BIN_DIR"; }

# libfuzzer-sys compiles libFuzzer (C++): a machine with only gcc gets g++.
need_cxx() {
  command -v c++ >/dev/null 2>&1 && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "==> installing g++ (libFuzzer is C++)"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y --no-install-recommends g++ ||
    { $sudo apt-get update && $sudo apt-get install -y --no-install-recommends g++; }
}

# The build for long runs: every crate instrumented (the parsers of serde_json
# and toml guide the fuzzer too), the `fuzz` profile (optimised, overflow
# checks and debug assertions on). --target keeps the instrumentation off
# build scripts and proc macros.
build() {
  need_cxx
  echo "==> building the fuzz targets ($PROFILE profile, libFuzzer, $HOST)"
  local started=$SECONDS
  RUSTFLAGS="$SANCOV" cargo build -p rack-agent-fuzz --features libfuzzer --bins \
    --target "$HOST" --profile "$PROFILE"
  echo "    built in $((SECONDS - started)) s"
}

# The build for the short run in CI: only the workspace's crates instrumented
# (scripts/fuzz-rustc.sh), in the release profile of target/, so that every
# dependency is the one the .deb and the benchmark smoke run already built.
quick_build() {
  need_cxx
  echo "==> building the fuzz targets (release profile, the agent instrumented)"
  local started=$SECONDS
  FUZZ_RUSTFLAGS="$SANCOV" RUSTC_WORKSPACE_WRAPPER="$PWD/scripts/fuzz-rustc.sh" \
    cargo build -p rack-agent-fuzz --features libfuzzer --bins --release
  BIN_DIR="${CARGO_TARGET_DIR:-target}/release"
  echo "    built in $((SECONDS - started)) s"
}

# The read-only seed directories of a target.
seeds() {
  local t=$1
  for d in "fuzz/seeds/$t" "fuzz/regressions/$t"; do
    [ -d "$d" ] && echo "$d"
  done
  case $t in
    redfish_json) echo tests/fixtures/redfish ;;
    config | policy) echo config ;;
  esac
  return 0
}

dict_args() {
  case $1 in
    redfish_json) echo "-dict=fuzz/dicts/redfish.dict" ;;
    config | policy) echo "-dict=fuzz/dicts/toml.dict" ;;
  esac
}

fuzz_one() {
  local t=$1 secs=$2
  shift 2
  local corpus="${CORPUS_ROOT:-fuzz/corpus}/$t" artifacts="fuzz/artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  local log
  log=$(mktemp)
  local status=0
  # shellcheck disable=SC2046
  "$(bin_dir)/$t" "$corpus" $(seeds "$t") $(dict_args "$t") \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 "$@" >"$log" 2>&1 || status=$?
  local cov runs
  cov=$(sed -n 's/^#[0-9]*[[:space:]]*DONE *\(cov: [0-9]* ft: [0-9]*\).*/\1/p' "$log" | tail -1)
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  if [ "$status" -ne 0 ]; then
    sed -n '/panicked at\|==ERROR\|SUMMARY\|Test unit written/p' "$log" | head -20
    echo "fuzz: $t FAILED after ${runs:-?} runs (libFuzzer exit $status); full log: $log"
    local crash
    crash=$(ls -t "$artifacts"/* 2>/dev/null | head -1 || true)
    if [ -n "$crash" ]; then
      echo "  reproduce: scripts/fuzz.sh repro $t $crash"
      echo "  shrink:    scripts/fuzz.sh minimize $t $crash"
    fi
    return 1
  fi
  echo "fuzz: $t ${secs}s, ${runs:-?} runs, ${cov:-cov ?}, corpus $(find "$corpus" -type f | wc -l) files: ok"
  rm -f "$log"
}

# Each target in turn, FUZZ_JOBS (default 1) at a time.
fuzz_all() {
  local secs=$1
  shift
  local names=() extra=()
  while [ $# -gt 0 ]; do
    if [ "$1" = "--" ]; then
      shift
      extra=("$@")
      break
    fi
    names+=("$1")
    shift
  done
  [ ${#names[@]} -gt 0 ] || names=("${TARGETS[@]}")
  local failed=0 pids=()
  for t in "${names[@]}"; do
    fuzz_one "$t" "$secs" "${extra[@]}" &
    pids+=($!)
    if [ ${#pids[@]} -ge "${FUZZ_JOBS:-1}" ]; then
      wait "${pids[0]}" || failed=1
      pids=("${pids[@]:1}")
    fi
  done
  for p in "${pids[@]}"; do
    wait "$p" || failed=1
  done
  return $failed
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
  list) printf '%s\n' "${TARGETS[@]}" ;;
  build) build ;;
  ci)
    quick_build
    CORPUS_ROOT=$(mktemp -d)
    trap 'rm -rf "$CORPUS_ROOT"' EXIT
    started=$SECONDS
    FUZZ_JOBS=${FUZZ_JOBS:-$(nproc)} fuzz_all "${FUZZ_SECONDS:-8}"
    echo "    fuzzed in $((SECONDS - started)) s"
    ;;
  run)
    [ -n "${FUZZ_TARGET_DIR:-}" ] && export CARGO_TARGET_DIR=$FUZZ_TARGET_DIR
    build
    fuzz_all "${FUZZ_SECONDS:-600}" "$@"
    ;;
  repro)
    [ $# -eq 2 ] || { echo "usage: scripts/fuzz.sh repro TARGET FILE" >&2; exit 2; }
    [ -n "${FUZZ_TARGET_DIR:-}" ] && export CARGO_TARGET_DIR=$FUZZ_TARGET_DIR
    build >/dev/null
    "$(bin_dir)/$1" "$2"
    ;;
  minimize)
    [ $# -eq 2 ] || { echo "usage: scripts/fuzz.sh minimize TARGET FILE" >&2; exit 2; }
    [ -n "${FUZZ_TARGET_DIR:-}" ] && export CARGO_TARGET_DIR=$FUZZ_TARGET_DIR
    build >/dev/null
    mkdir -p "fuzz/artifacts/$1"
    "$(bin_dir)/$1" -minimize_crash=1 -max_total_time=60 \
      -exact_artifact_path="fuzz/artifacts/$1/minimized-$(basename "$2")" "$2"
    echo "minimised: fuzz/artifacts/$1/minimized-$(basename "$2")"
    ;;
  cmin)
    [ $# -eq 1 ] || { echo "usage: scripts/fuzz.sh cmin TARGET" >&2; exit 2; }
    [ -n "${FUZZ_TARGET_DIR:-}" ] && export CARGO_TARGET_DIR=$FUZZ_TARGET_DIR
    build >/dev/null
    merged="fuzz/corpus/$1.cmin"
    rm -rf "$merged" && mkdir -p "$merged"
    "$(bin_dir)/$1" -merge=1 "$merged" "fuzz/corpus/$1"
    rm -rf "fuzz/corpus/$1" && mv "$merged" "fuzz/corpus/$1"
    echo "fuzz/corpus/$1: $(find "fuzz/corpus/$1" -type f | wc -l) files"
    ;;
  *)
    sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
