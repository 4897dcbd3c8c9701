"""A small learning-rate sweep per method family at the default profile's operating point, through the run store.

    python benchmarks/lr_sweep.py                                   # the grid below, seed 0
    python benchmarks/lr_sweep.py --grid '[["LoRA r32", 5e-3]]' --store build/lr_sweep
    python benchmarks/lr_sweep.py --grid '[["full", 1e-3]]' --pretrain-steps 3000   # a longer-pretrained base

Each run is the notebooks' own (specs.synthetic_spec): the shipped tiny base, the 8-component shared-cue mixture
(words of 3-4 letters),
150 steps of 32 rows over 4800 fresh rows, bf16 autocast, a cosine schedule ending at 10 % of lr, scored on
500 test rows. One line of JSON per run (exact match, token accuracy, losses, training seconds); the last line
is the best lr per family. docs/operating_point.md records what it printed for the default profile.
"""
from __future__ import annotations

import argparse
import json
import time

from hydralib.methods import full_finetuning, hydra, lora, split
from hydralib.specs import synthetic_spec
from hydralib.store import RunStore, run_many

FAMILIES = {"full": full_finetuning(), "LoRA r32": lora(32), "LoRA r16": lora(16), "LoRA r8": lora(8),
            "Split 4x8": split(4, 8), "Split 8x4": split(8, 4), "Split 2x16": split(2, 16), "Hydra token": hydra(8, 8)}
GRID = [["full", 5e-4], ["full", 1e-3], ["full", 2e-3], ["full", 3e-3],
        ["LoRA r32", 1e-3], ["LoRA r32", 3e-3], ["LoRA r32", 4e-3], ["LoRA r32", 5e-3],
        ["LoRA r16", 3e-3], ["LoRA r16", 5e-3],
        ["LoRA r8", 3e-3], ["LoRA r8", 5e-3], ["LoRA r8", 7e-3], ["LoRA r8", 1e-2],
        ["Split 4x8", 3e-3], ["Split 4x8", 5e-3], ["Split 8x4", 3e-3], ["Split 8x4", 5e-3], ["Split 8x4", 7e-3],
        ["Split 2x16", 3e-3], ["Split 2x16", 5e-3],
        ["Hydra token", 1e-3], ["Hydra token", 3e-3], ["Hydra token", 5e-3], ["Hydra token", 7e-3],
        ["Hydra token", 1e-2]]
OPERATING_POINT = dict(n_components=8, steps=150, pretrain_steps=1000, n_train=4800, n_test=500, lr_floor=0.1,
                       mixed_precision="bf16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", type=json.loads, default=GRID, help="JSON list of [family, lr]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--store", default="build/lr_sweep")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--pretrain-steps", type=int, default=OPERATING_POINT["pretrain_steps"],
                        help="the tiny base's pretraining steps (other than 1000 or 300: pretrained once, then cached)")
    args = parser.parse_args()
    unknown = sorted({family for family, _ in args.grid} - set(FAMILIES))
    if unknown:
        parser.error(f"unknown families {unknown}; allowed: {', '.join(FAMILIES)}")
    point = {**OPERATING_POINT, "pretrain_steps": args.pretrain_steps}
    specs = [(family, lr, synthetic_spec(next(iter(FAMILIES[family].values())), args.seed, lr=lr, **point))
             for family, lr in args.grid]
    start = time.perf_counter()
    results = run_many([spec for *_, spec in specs], RunStore(args.store), processes=args.processes)
    best = {}
    for (family, lr, _), r in zip(specs, results):
        row = {"family": family, "lr": lr, "pretrain_steps": args.pretrain_steps, "exact_match": round(r["exact_match"], 3),
               "token_accuracy": round(r["token_accuracy"], 3), "test_loss": round(r["test_loss"]["loss"], 3),
               "final_train_loss": round(r["final_train_loss"], 3), "train_s": round(r["train_seconds"], 1)}
        print(json.dumps(row))
        if family not in best or row["exact_match"] > best[family]["exact_match"]:
            best[family] = row
    print(json.dumps({"seconds": round(time.perf_counter() - start),
                      "best_lr": {family: row["lr"] for family, row in best.items()}}))


if __name__ == "__main__":
    main()
