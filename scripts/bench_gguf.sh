#!/usr/bin/env bash
# The GGUF benchmark of BENCHMARKS.md: the three random-weight shapes of issue 5 (vocab 32000,
# D=1024, 8 layers) and a DeepSeek-V2-Lite-like one (MLA) written by our GGUF writer as F32, Q8_0,
# Q4_0 and Q4_K_M, each run from its file (mapped) by `moe bench model`, then one markdown table of
# prefill and decode against the same-run limits (MOE_BENCH_SHAPES / MOE_BENCH_TYPES pick a subset).
#   scripts/bench_gguf.sh [out_dir, default build/bench-gguf] [extra `moe bench model` flags...]
# The .gguf files go to $TMPDIR (default /tmp) and are reused by later runs (delete them to write
# new ones); writing all sixteen takes a few minutes and ~20 GB of disk.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-build/bench-gguf}"
shift || true
moe=build/release/bin/moe
[ -x "$moe" ] || { echo "build first: cmake --preset release && cmake --build build/release" >&2; exit 1; }
mkdir -p "$out"
read -r -a shapes <<< "${MOE_BENCH_SHAPES:-mixtral-like olmoe-like qwen2-moe-like deepseek-like}"
read -r -a types <<< "${MOE_BENCH_TYPES:-F32 Q8_0 Q4_0 Q4_K_M}"
for shape in "${shapes[@]}"; do
  for type in "${types[@]}"; do
    echo "== $shape $type"
    "$moe" bench model --shape "$shape" --type "$type" --reps "${MOE_BENCH_REPS:-3}" \
      --json "$out/$shape-$type.json" "$@" | grep -E "^(  rep|prefill|decode|memory)"
  done
done
python3 - "$out" "${shapes[@]}" -- "${types[@]}" <<'EOF'
import json, sys
out = sys.argv[1]
args = sys.argv[2:]
shapes, types = args[:args.index("--")], args[args.index("--") + 1:]
print("\n| shape | type | weights GB | prefill tok/s | prefill % sgemm | decode tok/s | MB/token | decode % roofline | % weights' pages | steady | resident GB |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for s in shapes:
    for t in types:
        j = json.load(open(f"{out}/{s}-{t}.json"))
        print(f"| {s} | {t} | {j['weight_bytes'] / 1e9:.2f} | {j['prefill_tok_s']:.0f} | "
              f"{100 * j['prefill_frac_sgemm']:.0f}% | {j['decode_tok_s']:.1f} | "
              f"{j['decode_bytes_per_token'] / 1e6:.0f} | {100 * j['decode_frac_roofline']:.0f}% | "
              f"{100 * j['decode_frac_weights_bandwidth']:.0f}% | {j['steady_runs']} | "
              f"{j['resident_bytes_after_runs'] / 1e9:.2f} |")
EOF
