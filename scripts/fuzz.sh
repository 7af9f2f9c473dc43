#!/usr/bin/env bash
# Builds the libFuzzer targets (clang 14, ASan + UBSan) and runs each for a bounded time.
#   scripts/fuzz.sh [seconds per target] [extra libFuzzer flags...]
# Seconds per target: the argument, else MOE_FUZZ_SECONDS, else 30; MOE_FUZZ_SECONDS_<NAME> (e.g.
# MOE_FUZZ_SECONDS_GGUF=600) sets one target's time. MOE_FUZZ_TARGETS="gguf safetensors" runs only
# those. scripts/test.sh (CI) runs this with 60 s for GGUF and 20 s for each other target.
# New corpus entries go to build/fuzz/corpus/<name> (the committed seeds in fuzz/corpus/<name>
# are only read); crashes are written to build/fuzz/artifacts/. Every target runs; the script
# exits non-zero if any had a finding (crash, sanitizer report, leak, timeout, out of memory).
# Per-target extra flags (e.g. a larger -max_len) come from fuzz/<name>.flags.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-${MOE_FUZZ_SECONDS:-30}}"
shift || true
jobs="${MOE_JOBS:-$(nproc)}"
# Debian's clang-14 package installs clang++-14; plain clang++ only comes with the `clang` package.
cxx="${MOE_FUZZ_CXX:-$(command -v clang++-14 || command -v clang++ || echo clang++)}"

if [ -n "${MOE_FUZZ_TARGETS:-}" ]; then
  read -r -a names <<< "$MOE_FUZZ_TARGETS"
else
  names=()
  for src in fuzz/*_fuzz.cc; do
    names+=("$(basename "$src" _fuzz.cc)")
  done
fi
targets=("${names[@]/%/_fuzz}")
for name in "${names[@]}"; do
  [ -f "fuzz/${name}_fuzz.cc" ] || { echo "fuzz.sh: no target '$name' (fuzz/${name}_fuzz.cc)" >&2; exit 2; }
  var="MOE_FUZZ_SECONDS_${name^^}"
  # libFuzzer reads -max_total_time=0 as "no limit": refuse it rather than fuzz forever.
  [[ "${!var:-$secs}" =~ ^[1-9][0-9]*$ ]] ||
    { echo "fuzz.sh: seconds for $name must be a positive integer, not '${!var:-$secs}'" >&2; exit 2; }
done

# -g1: line tables are enough for the stack traces, and keep the build fast (it runs in CI).
cmake -S . -B build/fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER="$cxx" \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" \
  -DMOE_BUILD_FUZZ=ON -DMOE_BUILD_TESTS=OFF -DMOE_BUILD_BENCH=OFF >/dev/null
# Only the fuzz executables and the libraries they link (fuzz/CMakeLists.txt), not all of moe.
cmake --build build/fuzz -j"$jobs" --target "${targets[@]}"

mkdir -p build/fuzz/artifacts
failed=()
for name in "${names[@]}"; do
  target="${name}_fuzz"
  var="MOE_FUZZ_SECONDS_${name^^}"
  t="${!var:-$secs}"
  corpus="build/fuzz/corpus/$name"
  mkdir -p "$corpus"
  # -timeout: one input running longer than this is a finding (a hang), not a stuck CI job.
  args=(-max_total_time="$t" -max_len=4096 -timeout=30 -rss_limit_mb=2048 -print_final_stats=1 -print_funcs=0
        -artifact_prefix="build/fuzz/artifacts/$name-")
  [ -f "fuzz/$name.dict" ] && args+=(-dict="fuzz/$name.dict")
  # fuzz/<name>.flags: extra libFuzzer flags for one target (later flags win, e.g. -max_len).
  extra=()
  [ -f "fuzz/$name.flags" ] && read -r -a extra < "fuzz/$name.flags"
  args+=("${extra[@]}")
  seeds=()
  [ -d "fuzz/corpus/$name" ] && seeds+=("fuzz/corpus/$name")
  echo "== $target for ${t}s"
  if ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
      "build/fuzz/fuzz/$target" "${args[@]}" "$@" "$corpus" "${seeds[@]}"; then
    echo "== $target: no findings"
  else
    echo "== $target: FINDING (exit $?): the input is in build/fuzz/artifacts/ (libFuzzer's" \
         "'Test unit written to' line above); reproduce with build/fuzz/fuzz/$target <input>" >&2
    failed+=("$name")
  fi
done
echo "fuzz: $((${#names[@]} - ${#failed[@]})) passed, ${#failed[@]} failed"
[ "${#failed[@]}" = 0 ] || { echo "fuzz: findings in ${failed[*]}" >&2; exit 1; }
