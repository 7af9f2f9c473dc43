#!/usr/bin/env bash
# Builds moe and passes every test: Release (all labels), then the unit tests under ASan+UBSan, then
# each libFuzzer target for a bounded time from its committed seeds (a finding fails).
#   MOE_SKIP_ASAN=1  skip the sanitizer unit tests     MOE_SKIP_FUZZ=1  skip the fuzz targets
#   MOE_FUZZ_SECONDS seconds per fuzz target (default 20; GGUF gets 3x: MOE_FUZZ_SECONDS_GGUF)
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
if [ "${MOE_SKIP_FUZZ:-0}" != 1 ]; then
  # The parsers of untrusted files, GGUF longest: about 2 minutes of fuzzing after a ~1.5 minute build.
  secs="${MOE_FUZZ_SECONDS:-20}"
  MOE_FUZZ_SECONDS_GGUF="${MOE_FUZZ_SECONDS_GGUF:-$((3 * secs))}" bash scripts/fuzz.sh "$secs"
fi
