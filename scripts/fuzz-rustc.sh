#!/usr/bin/env bash
# RUSTC_WORKSPACE_WRAPPER for `scripts/fuzz.sh ci`: cargo calls it for the
# workspace's own crates only, so the libFuzzer instrumentation (and overflow
# checks, debug assertions) go on the agent and the fuzz targets while every
# dependency is the plain release build that CI has already made (the .deb,
# the benchmark smoke run). Build scripts run on the host without libFuzzer:
# they are left alone. Optimisation level 1: the agent builds in less than
# half the time of level 3, and a short run needs no more speed.
# (Cargo does not see the flags added here: after changing them, touch
# src/lib.rs and fuzz/src/lib.rs.)
rustc=$1
shift
for arg in "$@"; do
  case $arg in
    build_script_*) exec "$rustc" "$@" ;;
  esac
done
# shellcheck disable=SC2086
exec "$rustc" "$@" $FUZZ_RUSTFLAGS -Copt-level=1 -Cdebug-assertions=on -Coverflow-checks=on
