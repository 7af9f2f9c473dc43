#!/usr/bin/env bash
# Installs every Debian package moe needs (idempotent: fast when all are there) and builds Release.
#   scripts/setup.sh               packages + Release build (build/release)
#   scripts/setup.sh --with-torch  also python3-torch (only for regenerating goldens / bench/compare_torch.py)
#   scripts/setup.sh --no-build    packages only
set -euo pipefail
cd "$(dirname "$0")/.."

with_torch=0
build=1
for arg in "$@"; do
  case "$arg" in
    --with-torch) with_torch=1 ;;
    --no-build) build=0 ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option '$arg'" >&2; exit 2 ;;
  esac
done

# clang-14 + libclang-rt-14-dev (libFuzzer and the sanitizer runtimes, only a Recommends of clang-14):
# the fuzz targets that scripts/test.sh runs (scripts/fuzz.sh).
packages=(g++ cmake ninja-build ccache pkg-config
          libopenblas-dev libfmt-dev nlohmann-json3-dev libcli11-dev
          libgtest-dev libbenchmark-dev libonig-dev libicu-dev
          clang-14 libclang-rt-14-dev)
[ "$with_torch" = 1 ] && packages+=(python3 python3-torch python3-numpy)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ "$build" = 1 ]; then
  cmake --preset release >/dev/null
  cmake --build build/release -j"$(nproc)"
fi
