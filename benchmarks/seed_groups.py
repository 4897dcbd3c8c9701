"""Does training k seeds of one method together pay at the default shapes? hydralib.seed_groups, measured.

    python benchmarks/seed_groups.py                    # Hydra r8 N=8, 5 seeds, bf16 + eager (the default step)
    python benchmarks/seed_groups.py --precision no --method lora32

Per round, interleaved (the order rotated each round), one pinned thread: the k seeds trained as one stacked model
(hydralib.seed_groups.train_seed_group: every seed's 32 rows through the frozen base as one batch, adapters
batched over a seed dimension) against the same k seeds trained one after another by hydralib.train, for --steps
steps each (the first step of each block left out). Tokens/s counts real (non-pad) tokens. Then, from fresh
starts, the largest difference between a stacked run's losses and separate runs' (0: bit for bit).

The last line is one JSON object: grouped_over_separate (median over rounds of the per-round tokens/s ratio) and
its spread (lowest, highest round).
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics

import torch

from hydralib.config import AdapterConfig
from hydralib.data.formatting import encode_row
from hydralib.data.synthetic import make_corpus
from hydralib.inject import add_adapters
from hydralib.models import build_tiny
from hydralib.seed_groups import train_seed_group
from hydralib.train import TrainConfig, batch_indices, train

ADAPTERS = {"hydra": AdapterConfig(method="hydra", r=8, alpha=16, heads=8, targets="all-linear"),
            "lora32": AdapterConfig(method="lora", r=32, alpha=64, targets="all-linear")}


def seed_models(adapter, seeds):
    base, tokenizer = build_tiny(seed=0)
    base.set_attn_implementation("eager")  # as pipeline.prepare_model on a CPU
    models = []
    for seed in seeds:
        model = copy.deepcopy(base)
        add_adapters(model, adapter, seed=seed)
        models.append(model)
    return models, tokenizer


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per seed per round (after one left out)")
    parser.add_argument("--precision", default="bf16", choices=["bf16", "no"])
    parser.add_argument("--method", default="hydra", choices=list(ADAPTERS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    seeds = list(range(args.seeds))
    models, tokenizer = seed_models(ADAPTERS[args.method], seeds)
    rows = make_corpus(n_components=8, n_train=2000, n_test=10, seed=0)["train"]
    lengths = [len(encode_row(r, tokenizer, "compact", 64)["input_ids"]) for r in rows]

    def configs(steps, group=seeds):
        return [TrainConfig(steps=steps, progress=False, device="cpu", lr=5e-3, seed=s,
                            mixed_precision=args.precision) for s in group]

    def tokens(step, seed):
        return sum(lengths[j] for j in batch_indices(len(rows), step * 32, 32, seed))

    rates = {"grouped": [], "separate": []}
    for rnd in range(args.rounds):
        for name in (["grouped", "separate"] if rnd % 2 == 0 else ["separate", "grouped"]):
            if name == "grouped":
                metrics = train_seed_group(models, tokenizer, rows, configs(args.steps + 1))[0].metrics[1:]
                real = [sum(tokens(m["step"] - 1, s) for s in seeds) for m in metrics]
            else:
                metrics, real = [], []
                for model, config in zip(models, configs(args.steps + 1)):
                    kept = train(model, tokenizer, rows, config).metrics[1:]
                    metrics += kept
                    real += [tokens(m["step"] - 1, config.seed) for m in kept]
            # metrics' tokens_per_s count the step's tokens; seconds = real tokens / that rate
            rates[name].append(sum(real) / sum(t / m["tokens_per_s"] for t, m in zip(real, metrics)))
        print(f"round {rnd}: grouped {rates['grouped'][-1]:.0f} tokens/s, separate {rates['separate'][-1]:.0f}",
              flush=True)
    ratios = [a / b for a, b in zip(rates["grouped"], rates["separate"])]

    fresh, _ = seed_models(ADAPTERS[args.method], seeds[:2])
    alone = [train(copy.deepcopy(m), tokenizer, rows, c).metrics for m, c in zip(fresh, configs(3, seeds[:2]))]
    together = [r.metrics for r in train_seed_group(fresh, tokenizer, rows, configs(3, seeds[:2]))]
    loss_diff = max(abs(a["loss"] - b["loss"]) for x, y in zip(alone, together) for a, b in zip(x, y))
    result = {"grouped_over_separate": round(statistics.median(ratios), 3),
              "grouped_over_separate_spread": [round(min(ratios), 3), round(max(ratios), 3)],
              "tokens_per_s": {n: round(statistics.median(v)) for n, v in rates.items()},
              "max_loss_diff_2_seeds_3_steps": loss_diff, "method": args.method, "seeds": args.seeds,
              "precision": args.precision, "rounds": args.rounds, "steps": args.steps}
    print(f"grouped over separate: {result['grouped_over_separate']:.2f} (rounds "
          f"{', '.join(f'{r:.2f}' for r in ratios)}); largest loss difference from separate runs: {loss_diff:.3g}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
