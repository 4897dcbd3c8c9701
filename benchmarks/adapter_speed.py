"""Training-step cost of LoRA, Split and HydraLoRA, as ratios measured in one interleaved run.

    python benchmarks/adapter_speed.py                    # CPU, 1 pinned thread, tiny LLaMA (vocab 8192)
    python benchmarks/adapter_speed.py --threads 2 --cpus 0,1 --rounds 15
    python benchmarks/adapter_speed.py --device cuda --model smollm2-135m

One step = forward, backward, AdamW. Methods are interleaved step by step (hydralib.efficiency.measure_steps)
so machine noise hits them alike, in --rounds rounds of --steps steps after --warmup. Threads are pinned: a
fixed number of intra-op threads, one inter-op thread, and with --cpus the process bound to those cores. Each
ratio to LoRA r8 is computed within a round (paired, so drift between rounds cancels); the figure is the median
over rounds, printed beside its spread (lowest and highest round). Peak memory: on CUDA the allocator's peak; on
the CPU the bytes a step must hold at its peak (see hydralib.efficiency). The last line is one JSON object with
the ratios and their spreads.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics

import torch

import hydralib
from hydralib import AdapterConfig
from hydralib.efficiency import measure_steps, ratios, repeat_speedups
from hydralib.methods import adapter_config


def build_base(name: str, vocab: int):
    if name == "tiny":
        model, _ = hydralib.load_model("tiny-random", vocab_size=vocab, max_position_embeddings=512)
    else:
        model, _ = hydralib.load_model(name)
    return model


def methods(r: int, heads: int) -> dict[str, AdapterConfig | None]:
    return {
        "frozen": None,
        "lora": adapter_config("lora", r),
        "split": adapter_config("split", r, heads=heads),
        "hydra": adapter_config("hydra", r, heads=heads),
        "hydra_loop": adapter_config("hydra", r, heads=heads, implementation="loop"),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="tiny", help="tiny, smollm2-135m, or a transformers id/path")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (pinned)")
    parser.add_argument("--cpus", default="", help="comma-separated cores to bind the process to (default: any)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=8192, help="vocabulary of the tiny model")
    parser.add_argument("--r", type=int, default=8)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4, help="steps per method per round")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    base = build_base(args.model, args.vocab)
    ids = torch.randint(0, base.config.vocab_size, (args.batch, args.seq))
    results = measure_steps(methods(args.r, args.heads), base, ids, steps=args.steps, repeats=args.rounds,
                            warmup=args.warmup, device=args.device)
    # per round, each method's step over LoRA's (above 1: slower than LoRA r8)
    per_round = {name: [1 / s for s in speedups] for name, speedups in repeat_speedups(results, "lora").items()}
    time_ratio = {name: statistics.median(values) for name, values in per_round.items()}
    spread = {name: [round(min(values), 3), round(max(values), 3)] for name, values in per_round.items()}
    loop_over_hydra = [a / b for a, b in zip(per_round["hydra_loop"], per_round["hydra"])]
    memory_ratio = ratios(results, "peak_bytes", reference="lora")

    print(f"model={args.model} device={args.device} threads={args.threads} (pinned, cpus={args.cpus or 'any'}) "
          f"batch={args.batch}x{args.seq} r={args.r} heads={args.heads} {args.rounds} rounds x {args.steps} steps "
          f"(after {args.warmup} warm-up)")
    print(f"{'method':<12}{'trainable':>12}{'step ms':>10}{'tokens/s':>11}{'peak MB':>10}{'vs lora':>9}"
          "  spread over rounds")
    for name, r in results.items():
        print(f"{name:<12}{r['trainable']:>12,}{1e3 * r['step_s']:>10.1f}{r['tokens_per_s']:>11,.0f}"
              f"{r['peak_bytes'] / 2**20:>10.1f}{time_ratio[name]:>9.3f}  {spread[name][0]:.3f}-{spread[name][1]:.3f}")
    result = {
        "hydra_over_lora": round(time_ratio["hydra"], 4),
        "hydra_over_lora_spread": spread["hydra"],
        "split_over_lora": round(time_ratio["split"], 4),
        "split_over_lora_spread": spread["split"],
        "loop_over_hydra": round(statistics.median(loop_over_hydra), 4),
        "loop_over_hydra_spread": [round(min(loop_over_hydra), 3), round(max(loop_over_hydra), 3)],
        "hydra_over_frozen": round(time_ratio["hydra"] / time_ratio["frozen"], 4),
        "rounds": args.rounds, "threads": args.threads,
        "mem_hydra_over_lora": round(memory_ratio["hydra"], 4),
        "mem_loop_over_hydra": round(memory_ratio["hydra_loop"] / memory_ratio["hydra"], 4),
        "lora_step_ms": round(1e3 * results["lora"]["step_s"], 2),
        "device": args.device, "model": args.model,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
