#!/usr/bin/env python3
"""Training tokens/s of the configurations of scripts/experiments.sh, measured apart from the long
runs (those share the machine with whatever else runs). Each configuration trains a few steps in a
temporary folder; the configurations take turns for several rounds so that a disturbance hits all
of them alike, and the median over rounds of each run's median step rate is reported.

    python3 scripts/train_throughput.py [--moe build/release/bin/moe] [--steps 30] [--rounds 3]
        [--threads 2] [--only name,name] [--bf16]
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile

CONFIGS = [
    ("moe-top2", ["--preset", "tiny"]),
    ("dense-active", ["--preset", "tiny-dense"]),
    ("dense-total", ["--preset", "tiny-dense-total"]),
    ("switch-top1", ["--preset", "tiny", "--top-k", "1", "--expert-ff", "256", "--capacity-factor", "1.25",
                     "--z-loss", "0.001"]),
    ("expert-choice", ["--preset", "tiny", "--router", "expert_choice", "--top-k", "1", "--expert-ff", "256",
                       "--capacity-factor", "2", "--aux-loss", "0"]),
    ("deepseek-fine", ["--preset", "tiny", "--experts", "32", "--expert-ff", "32", "--top-k", "6", "--shared-ff", "64",
                       "--renorm", "0"]),
    ("aux-free-bias", ["--preset", "tiny", "--aux-loss", "0", "--bias-update-rate", "0.001", "--score", "sigmoid"]),
]


def rate(moe, steps, threads, flags):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "run")
        subprocess.run([moe, "train", "--out", out, "--steps", str(steps), "--eval-every", "0", "--eval-rows", "1",
                        "--ckpt-every", "0", "--threads", str(threads), "--corpus-samples", "2000", "--quiet"] + flags,
                       check=True, stdout=subprocess.DEVNULL)
        latest = open(os.path.join(out, "LATEST")).read().strip()
        hist = json.load(open(os.path.join(out, latest, "trainer_state.json")))["history"]
    return statistics.median(h["tokens_per_s"] for h in hist[len(hist) // 4:])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--moe", default="build/release/bin/moe")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="")
    ap.add_argument("--bf16", action="store_true", help="also each configuration with --bf16")
    args = ap.parse_args()
    configs = [c for c in CONFIGS if not args.only or c[0] in args.only.split(",")]
    if args.bf16:
        configs += [(n + " --bf16", f + ["--bf16"]) for n, f in configs]
    rates = {n: [] for n, _ in configs}
    for r in range(args.rounds):
        for name, flags in configs:
            rates[name].append(rate(args.moe, args.steps, args.threads, flags))
            print(f"round {r + 1}: {name:24s} {rates[name][-1]:9.0f} tokens/s", flush=True)
    print(f"\n| run | tokens/s ({args.threads} threads, median of {args.rounds} rounds) |\n|---|---|")
    for name, _ in configs:
        print(f"| {name} | {statistics.median(rates[name]):.0f} |")


if __name__ == "__main__":
    main()
