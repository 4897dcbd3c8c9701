"""Does training k seeds of one method together pay at the default shapes? hydralib.seed_groups, measured.

    python benchmarks/seed_groups.py                    # Hydra r8 N=8, 5 seeds, bf16 + eager (the default step)
    python benchmarks/seed_groups.py --precision no --method lora32
    python benchmarks/seed_groups.py --store            # 5 seeds through the run store, grouped against separate
    python benchmarks/seed_groups.py --store --model tiny-random --run-steps 3 --n-train 64 --n-test 4 --rounds 1

Per round, interleaved (the order rotated each round), one pinned thread: the k seeds trained as one stacked model
(hydralib.seed_groups.train_seed_group: every seed's 32 rows through the frozen base as one batch, adapters
batched over a seed dimension) against the same k seeds trained one after another by hydralib.train, for --steps
steps each (the first step of each block left out). Tokens/s counts real (non-pad) tokens. Then, from fresh
starts, the largest difference between a stacked run's losses and separate runs' (0: bit for bit).

The last line is one JSON object: grouped_over_separate (median over rounds of the per-round tokens/s ratio) and
its spread (lowest, highest round).

--store times what a notebook waits for: run_many of k synthetic specs (seeds 0..k-1, --run-steps steps each,
built by hydralib.specs.synthetic_spec) into an empty store, with RunStore(seed_groups=True) (one group) and
without (k runs one after another), one worker on one thread, evaluation included; per round, interleaved, each
into a fresh store. Its last line: store_grouped_over_separate (median over rounds of separate wall seconds over
grouped), its spread, the same for the training seconds alone (train_grouped_over_separate), and how far the
grouped results are from the separate ones in the first round (largest final-train-loss difference; whether the
generations are the same).
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from hydralib.bases import load_spec_model
from hydralib.config import AdapterConfig
from hydralib.data.formatting import encode_row
from hydralib.data.synthetic import make_corpus
from hydralib.inject import add_adapters
from hydralib.models import build_tiny
from hydralib.seed_groups import train_seed_group
from hydralib.specs import synthetic_spec
from hydralib.store import RunSpec, RunStore, run_many
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
    store = parser.add_argument_group("--store: whole runs through the run store")
    store.add_argument("--store", action="store_true", help="time run_many grouped against separate")
    store.add_argument("--model", default="tiny", choices=["tiny", "tiny-random"])
    store.add_argument("--pretrain-steps", type=int, default=1000, help="the tiny base's (as the default profile)")
    store.add_argument("--run-steps", type=int, default=60, help="training steps of each run")
    store.add_argument("--n-train", type=int, default=2000)
    store.add_argument("--n-test", type=int, default=100)
    store.add_argument("--max-new-tokens", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    if args.store:
        store_benchmark(args)
    else:
        step_benchmark(args)


def step_benchmark(args):
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


def store_benchmark(args):
    model = {"name": "tiny", "pretrain_steps": args.pretrain_steps} if args.model == "tiny" else {"name": "tiny-random"}
    specs = [synthetic_spec(ADAPTERS[args.method], seed, n_components=8, steps=args.run_steps, lr=5e-3,
                            pretrain_steps=args.pretrain_steps, n_train=args.n_train, n_test=args.n_test,
                            max_new_tokens=args.max_new_tokens, mixed_precision=args.precision)
             for seed in range(args.seeds)]
    specs = [RunSpec(model, s.data, s.adapter, s.train, s.eval) for s in specs]
    load_spec_model(model)  # a tiny base is pretrained (and cached) once, before anything is timed
    wall, train_seconds, first = {"grouped": [], "separate": []}, {"grouped": [], "separate": []}, {}
    with tempfile.TemporaryDirectory() as root:
        for rnd in range(args.rounds):
            for name in (["grouped", "separate"] if rnd % 2 == 0 else ["separate", "grouped"]):
                store = RunStore(Path(root) / f"{name}{rnd}", seed_groups=name == "grouped")
                started = time.perf_counter()
                results = run_many(specs, store, processes=1)
                wall[name].append(time.perf_counter() - started)
                train_seconds[name].append(sum(r["train_seconds"] for r in results))
                first.setdefault(name, results)
            print(f"round {rnd}: grouped {wall['grouped'][-1]:.1f} s ({train_seconds['grouped'][-1]:.1f} s training), "
                  f"separate {wall['separate'][-1]:.1f} s ({train_seconds['separate'][-1]:.1f} s)", flush=True)
    ratios = [b / a for a, b in zip(wall["grouped"], wall["separate"])]
    train_ratios = [b / a for a, b in zip(train_seconds["grouped"], train_seconds["separate"])]
    loss_diff = max(abs(a["final_train_loss"] - b["final_train_loss"]) for a, b in zip(*first.values()))
    result = {"store_grouped_over_separate": round(statistics.median(ratios), 3),
              "store_grouped_over_separate_spread": [round(min(ratios), 3), round(max(ratios), 3)],
              "train_grouped_over_separate": round(statistics.median(train_ratios), 3),
              "train_grouped_over_separate_spread": [round(min(train_ratios), 3), round(max(train_ratios), 3)],
              "wall_seconds": {n: round(statistics.median(v), 1) for n, v in wall.items()},
              "max_final_loss_diff": loss_diff,
              "same_generations": all(a["generations"] == b["generations"] for a, b in zip(*first.values())),
              "method": args.method, "seeds": args.seeds, "precision": args.precision, "model": args.model,
              "run_steps": args.run_steps, "n_train": args.n_train, "n_test": args.n_test, "rounds": args.rounds}
    print(f"store, grouped over separate: {result['store_grouped_over_separate']:.2f} of the wall time "
          f"(rounds {', '.join(f'{r:.2f}' for r in ratios)}), {result['train_grouped_over_separate']:.2f} of the "
          f"training time; largest final-loss difference {loss_diff:.3g}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
