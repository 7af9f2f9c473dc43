#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan) and runs each for a bounded time.
#   scripts/fuzz.sh [seconds per target, default 30] [extra libFuzzer flags...]
# New corpus entries go to build/fuzz/corpus/<name> (the committed seeds in fuzz/corpus/<name>
# are only read); crashes are written to build/fuzz/artifacts/. Exits non-zero on any finding.
# Per-target extra flags (e.g. a larger -max_len) come from fuzz/<name>.flags.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-30}"
shift || true
jobs="${MOE_JOBS:-$(nproc)}"

cmake -S . -B build/fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
  -DMOE_BUILD_FUZZ=ON -DMOE_BUILD_TESTS=OFF -DMOE_BUILD_BENCH=OFF >/dev/null
targets=()
for src in fuzz/*_fuzz.cc; do
  targets+=("$(basename "$src" .cc)")
done
cmake --build build/fuzz -j"$jobs" --target "${targets[@]}"

mkdir -p build/fuzz/artifacts
for target in "${targets[@]}"; do
  name="${target%_fuzz}"
  corpus="build/fuzz/corpus/$name"
  mkdir -p "$corpus"
  args=(-max_total_time="$secs" -max_len=4096 -rss_limit_mb=2048 -print_final_stats=1
        -artifact_prefix="build/fuzz/artifacts/$name-")
  [ -f "fuzz/$name.dict" ] && args+=(-dict="fuzz/$name.dict")
  # fuzz/<name>.flags: extra libFuzzer flags for one target (later flags win, e.g. -max_len).
  [ -f "fuzz/$name.flags" ] && read -r -a extra < "fuzz/$name.flags" && args+=("${extra[@]}")
  seeds=()
  [ -d "fuzz/corpus/$name" ] && seeds+=("fuzz/corpus/$name")
  echo "== $target for ${secs}s"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "build/fuzz/fuzz/$target" "${args[@]}" "$@" "$corpus" "${seeds[@]}"
done
echo "fuzz: no findings"
