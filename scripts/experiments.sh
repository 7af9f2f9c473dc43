#!/usr/bin/env bash
# The experiments of docs/EXPERIMENTS.md: every run trains the tiny model shape on the built-in
# corpus with the same seed, data, batch (16 x 128 tokens) and steps, then `moe report` draws the
# validation-loss curves and prints the tables. Usage: bash scripts/experiments.sh [steps] [out]
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-600}
OUT=${2:-runs/exp}
MOE=build/release/bin/moe
COMMON=(--steps "$STEPS" --eval-every 50 --eval-rows 64 --ckpt-every 0 --seed 1 --quiet)
mkdir -p "$OUT" docs/img

run() {  # name, extra args...
  local name=$1
  shift
  if [[ -f "$OUT/$name/LATEST" ]]; then echo "== $name: done already"; return; fi
  echo "== $name: $*"
  "$MOE" train --out "$OUT/$name" "${COMMON[@]}" "$@" | tail -4
}

# 1. MoE vs dense with the same active parameters vs dense with the same total parameters.
run moe-top2 --preset tiny
run dense-active --preset tiny-dense
run dense-total --preset tiny-dense-total
# 2. Routers at equal active compute (2 x F=128 per token, or its equivalent).
run switch-top1 --preset tiny --top-k 1 --expert-ff 256 --capacity-factor 1.25 --z-loss 0.001
run expert-choice --preset tiny --router expert_choice --top-k 1 --expert-ff 256 --capacity-factor 2 --aux-loss 0
run deepseek-fine --preset tiny --experts 32 --expert-ff 32 --top-k 6 --shared-ff 64 --renorm 0
run aux-free-bias --preset tiny --aux-loss 0 --bias-update-rate 0.001 --score sigmoid

"$MOE" report "$OUT/moe-top2" "$OUT/dense-active" "$OUT/dense-total" \
  --names "MoE E=8 K=2" "dense, same active" "dense, same total" \
  --svg docs/img/moe_vs_dense.svg --title "MoE vs dense (validation loss)"
"$MOE" report "$OUT/moe-top2" "$OUT/switch-top1" "$OUT/expert-choice" "$OUT/deepseek-fine" "$OUT/aux-free-bias" \
  --names "top-2 (aux loss)" "Switch top-1 (cf 1.25)" "expert choice (cf 2)" "DeepSeek shared+fine" "aux-free bias (sigmoid)" \
  --svg docs/img/routers.svg --title "Routers at equal active compute (validation loss)"
"$MOE" eval --model "$OUT/expert-choice" --rows 64 | tail -2
