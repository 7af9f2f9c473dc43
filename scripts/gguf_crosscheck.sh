#!/usr/bin/env bash
# Cross-checks moe's GGUF writer and reader against two independent readers (developer check; not
# part of the tests, which read the committed fixtures without Python or Node):
#   1. the C++ tests write their round-trip files (MOE_GGUF_DUMP_DIR),
#   2. scripts/gguf_reference.py (standard-library Python, written from the spec) parses them and
#      re-serialises them byte for byte; it also re-checks the committed Python fixtures,
#   3. Hugging Face's @huggingface/gguf (npm, pinned in scripts/gguf_check/package.json) parses the
#      same files and must read the same keys, values, tensors, offsets and data start.
#   scripts/gguf_crosscheck.sh [build dir, default build/release]
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build/release}"
cmake --build "$build" --target io_test >/dev/null
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
MOE_GGUF_DUMP_DIR="$out" "$build/tests/io/io_test" --gtest_filter='GgufTest.RoundTrips*' >/dev/null
files=("$out"/*.gguf "$PWD"/tests/data/gguf/*.gguf)
python3 scripts/gguf_reference.py check "${files[@]}" | grep -E '^[^ ]|re-serialised|MISMATCH'
if [ ! -d scripts/gguf_check/node_modules ]; then
  (cd scripts/gguf_check && npm ci --silent)
fi
python3 scripts/gguf_reference.py summary "${files[@]}" | (cd scripts/gguf_check && node check.mjs)
echo "gguf cross-check: ok"
