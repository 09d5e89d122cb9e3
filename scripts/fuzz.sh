#!/usr/bin/env bash
# Coverage-guided fuzzing of rack-agent's decoders and loaders with libFuzzer,
# on the stable toolchain: no nightly, no sanitizer, no cargo-fuzz needed.
# The targets are in fuzz/ (README, "Fuzzing").
#
#   scripts/fuzz.sh ci                      build, then every target for FUZZ_SECONDS (default 8) each
#   scripts/fuzz.sh run [TARGET...] [-- ARGS]   every (or each named) target for FUZZ_SECONDS
#                                           (default 600) each; ARGS go to libFuzzer
#   scripts/fuzz.sh repro TARGET FILE       run one input (a crash artifact) through TARGET
#   scripts/fuzz.sh minimize TARGET FILE    shrink a crashing input
#   scripts/fuzz.sh cmin TARGET             shrink TARGET's working corpus to the inputs that add coverage
#   scripts/fuzz.sh build | list
#
# Builds go to FUZZ_TARGET_DIR (default: target/ of this tree; `ci` keeps a
# cache in /var/tmp/rack-agent-fuzz-target so that a second run rebuilds only
# the agent). The working corpus is fuzz/corpus/TARGET (not committed; `ci`
# starts from the seeds in a temporary one that it deletes). The committed
# seeds (fuzz/seeds, fuzz/regressions, the Redfish fixtures and the shipped
# config files) are read, never written. A crash is saved in
# fuzz/artifacts/TARGET/ and fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=(ipmi_packet ipmi_session redfish_json config policy api_request)
HOST=$(rustc -vV | sed -n 's/^host: //p')
PROFILE=fuzz

# What `cargo fuzz build --sanitizer none` passes, all of it stable: SanitizerCoverage
# edge counters and comparison tracing for libFuzzer, and `cfg(fuzzing)`.
# Overflow checks and debug assertions come from the `fuzz` profile.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"

bin_dir() { echo "${CARGO_TARGET_DIR:-target}/$HOST/$PROFILE"; }

build() {
  # --target keeps the instrumentation off build scripts and proc macros.
  echo "==> building the fuzz targets ($PROFILE profile, libFuzzer, $HOST)"
  local started=$SECONDS
  cargo build -p rack-agent-fuzz --features libfuzzer --bins --target "$HOST" --profile "$PROFILE"
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
  local failed=0
  for t in "${names[@]}"; do
    fuzz_one "$t" "$secs" "${extra[@]}" || failed=1
  done
  return $failed
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
  list) printf '%s\n' "${TARGETS[@]}" ;;
  build) build ;;
  ci)
    export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-/var/tmp/rack-agent-fuzz-target}
    build
    CORPUS_ROOT=$(mktemp -d)
    trap 'rm -rf "$CORPUS_ROOT"' EXIT
    started=$SECONDS
    fuzz_all "${FUZZ_SECONDS:-8}"
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
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
