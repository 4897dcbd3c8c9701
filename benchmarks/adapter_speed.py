"""Training-step cost of LoRA, Split and HydraLoRA, as ratios measured in one interleaved run.

    python benchmarks/adapter_speed.py                    # CPU, 2 threads, tiny LLaMA (vocab 8192)
    python benchmarks/adapter_speed.py --device cuda --model smollm2-135m

One step = forward, backward, AdamW. Methods are interleaved step by step (hydralib.efficiency.measure_steps)
so machine noise hits them alike; each figure is the median of --steps steps after --warmup. Peak memory:
on CUDA the allocator's peak; on the CPU the bytes a step must hold at its peak (see hydralib.efficiency).
The last line is one JSON object with the ratios.
"""
from __future__ import annotations

import argparse
import json

import torch

import hydralib
from hydralib import AdapterConfig
from hydralib.efficiency import measure_steps, ratios
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
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=8192, help="vocabulary of the tiny model")
    parser.add_argument("--r", type=int, default=8)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = build_base(args.model, args.vocab)
    ids = torch.randint(0, base.config.vocab_size, (args.batch, args.seq))
    results = measure_steps(methods(args.r, args.heads), base, ids, steps=args.steps, repeats=1,
                            warmup=args.warmup, device=args.device)
    time_ratio = ratios(results, "step_s", reference="lora")
    memory_ratio = ratios(results, "peak_bytes", reference="lora")

    print(f"model={args.model} device={args.device} threads={args.threads} batch={args.batch}x{args.seq} "
          f"r={args.r} heads={args.heads} steps={args.steps} (median after {args.warmup} warm-up)")
    print(f"{'method':<12}{'trainable':>12}{'step ms':>10}{'tokens/s':>11}{'peak MB':>10}{'vs lora':>9}")
    for name, r in results.items():
        print(f"{name:<12}{r['trainable']:>12,}{1e3 * r['step_s']:>10.1f}{r['tokens_per_s']:>11,.0f}"
              f"{r['peak_bytes'] / 2**20:>10.1f}{time_ratio[name]:>9.3f}")
    result = {
        "hydra_over_lora": round(time_ratio["hydra"], 4),
        "split_over_lora": round(time_ratio["split"], 4),
        "loop_over_hydra": round(time_ratio["hydra_loop"] / time_ratio["hydra"], 4),
        "hydra_over_frozen": round(time_ratio["hydra"] / time_ratio["frozen"], 4),
        "mem_hydra_over_lora": round(memory_ratio["hydra"], 4),
        "mem_loop_over_hydra": round(memory_ratio["hydra_loop"] / memory_ratio["hydra"], 4),
        "lora_step_ms": round(1e3 * results["lora"]["step_s"], 2),
        "device": args.device, "model": args.model,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
