"""Training-step cost of LoRA, Split and HydraLoRA, as ratios measured in one interleaved run.

    python benchmarks/adapter_speed.py                    # CPU, 2 threads, tiny LLaMA (vocab 8192)
    python benchmarks/adapter_speed.py --device cuda --model smollm2-135m

One step = forward, backward, AdamW. Methods are interleaved step by step so machine noise
hits them alike; each figure is the median of --steps steps after --warmup. Peak memory: on CUDA
the allocator's peak; on the CPU (no allocator statistics) the bytes a step must hold at its peak:
weights, trainable gradients, AdamW state and the tensors autograd saves for backward (storages
counted once). The last line is one JSON object with the ratios.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch

import hydralib
from hydralib import AdapterConfig, add_adapters


def build_base(name: str, vocab: int):
    if name == "tiny":
        model, _ = hydralib.load_model("tiny-random", vocab_size=vocab, max_position_embeddings=512)
    else:
        model, _ = hydralib.load_model(name)
    return model


def methods(r: int, heads: int) -> dict[str, AdapterConfig | None]:
    return {
        "frozen": None,
        "lora": AdapterConfig(method="lora", r=r, alpha=2 * r),
        "split": AdapterConfig(method="split", r=r, alpha=2 * r, heads=heads),
        "hydra": AdapterConfig(method="hydra", r=r, alpha=2 * r, heads=heads),
        "hydra_loop": AdapterConfig(method="hydra", r=r, alpha=2 * r, heads=heads, implementation="loop"),
    }


class Runner:
    """One model copy, its optimizer and its step."""

    def __init__(self, base, config, device):
        self.model = copy.deepcopy(base).to(device)
        if config is None:
            self.model.requires_grad_(False)
            self.model.enable_input_require_grads()  # the frozen floor still backpropagates to its input
        else:
            add_adapters(self.model, config)
        self.model.train()
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=1e-4) if trainable else None
        self.trainable = sum(p.numel() for p in trainable)

    def step(self, ids):
        loss = self.model(input_ids=ids, labels=ids).loss
        loss.backward()
        if self.optimizer is not None:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return loss

    def cpu_peak_bytes(self, ids) -> int:
        """Weights + trainable grads + AdamW state + tensors saved for backward, each storage once."""
        seen, saved = set(), 0
        params = list(self.model.parameters())
        for p in params:
            seen.add(p.untyped_storage().data_ptr())

        def pack(t):
            nonlocal saved
            storage = t.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                saved += storage.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = self.model(input_ids=ids, labels=ids).loss
        loss.backward()
        self.model.zero_grad(set_to_none=True)
        weights = sum(p.numel() * p.element_size() for p in params)
        trainable = sum(p.numel() * p.element_size() for p in params if p.requires_grad)
        return weights + 3 * trainable + saved  # grads + AdamW exp_avg and exp_avg_sq


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
    device = torch.device(args.device)
    base = build_base(args.model, args.vocab)
    vocab = base.config.vocab_size
    runners = {name: Runner(base, config, device) for name, config in methods(args.r, args.heads).items()}
    del base
    ids = torch.randint(0, vocab, (args.batch, args.seq), device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    times = {name: [] for name in runners}
    peaks = {name: 0 for name in runners}
    for i in range(args.warmup + args.steps):
        for name, runner in runners.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            sync()
            start = time.perf_counter()
            runner.step(ids)
            sync()
            if i >= args.warmup:
                times[name].append(time.perf_counter() - start)
                if device.type == "cuda":
                    peaks[name] = max(peaks[name], torch.cuda.max_memory_allocated())
    if device.type != "cuda":
        peaks = {name: runner.cpu_peak_bytes(ids) for name, runner in runners.items()}

    median = {name: statistics.median(t) for name, t in times.items()}
    tokens = args.batch * args.seq
    print(f"model={args.model} device={args.device} threads={args.threads} batch={args.batch}x{args.seq} "
          f"r={args.r} heads={args.heads} steps={args.steps} (median after {args.warmup} warm-up)")
    print(f"{'method':<12}{'trainable':>12}{'step ms':>10}{'tokens/s':>11}{'peak MB':>10}{'vs lora':>9}")
    for name, runner in runners.items():
        print(f"{name:<12}{runner.trainable:>12,}{1e3 * median[name]:>10.1f}{tokens / median[name]:>11,.0f}"
              f"{peaks[name] / 2**20:>10.1f}{median[name] / median['lora']:>9.3f}")
    result = {
        "hydra_over_lora": round(median["hydra"] / median["lora"], 4),
        "split_over_lora": round(median["split"] / median["lora"], 4),
        "loop_over_hydra": round(median["hydra_loop"] / median["hydra"], 4),
        "hydra_over_frozen": round(median["hydra"] / median["frozen"], 4),
        "mem_hydra_over_lora": round(peaks["hydra"] / peaks["lora"], 4),
        "mem_loop_over_hydra": round(peaks["hydra_loop"] / peaks["hydra"], 4),
        "lora_step_ms": round(1e3 * median["lora"], 2),
        "device": args.device, "model": args.model,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
