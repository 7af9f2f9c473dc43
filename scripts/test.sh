#!/usr/bin/env bash
# Builds moe and passes every test: Release (all labels), then the unit tests under ASan+UBSan.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
jobs="$(nproc)"
ctest --test-dir build/release --output-on-failure -j"$jobs"
if [ "${MOE_SKIP_ASAN:-0}" != 1 ]; then
  cmake --preset asan >/dev/null
  # Only the unit-test binaries: that is all the sanitizer run executes.
  cmake --build build/asan -j"$jobs" --target moe_unit_tests
  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir build/asan --output-on-failure -j"$jobs" -L unit
fi
