"""Tokens/s and utilisation of a default-profile training step, today's configuration against the levers.

    python benchmarks/train_throughput.py                      # all levers, Hydra r8 N=8 + LoRA r32
    python benchmarks/train_throughput.py --configs default,bf16 --rounds 5
    python benchmarks/train_throughput.py --compile-cost       # + first/warm torch.compile cost (subprocesses)
    python benchmarks/train_throughput.py --quality 100        # + loss curves fp32 vs bf16 (LoRA r32)

The step is the notebooks' own: the tiny LLaMA (hidden 192, 4 layers, byte tokenizer; random weights, which
time alike), adapters on all linear layers, batch 32 of the 8-component synthetic mixture (template
"compact", max_length 64), trained through hydralib.train.train (forward, loss, backward, clipping, AdamW,
scheduler, metrics), on the CPU with one thread per process as the run store's workers use.

Configurations run interleaved: each round trains every configuration for --steps steps on the same batches
(the batch order is a function of the round's seed), so machine noise hits them alike. A configuration's
tokens/s is its real (non-pad) tokens over its step time, the first step of each block left out (setup,
compilation); its ratio to today's default is the median over rounds of the per-round ratio.

Utilisation = achieved matmul FLOP/s / the FLOP/s torch.matmul reaches on the model's own shapes in the same
run (same threads, fp32; and bf16 for the bf16 configurations). The model's FLOPs per real token: 2 x in x out
per linear for the forward pass, as much again for the input gradient, and as much again for the weight
gradient where the weight trains (so ~4 x frozen + 6 x trainable parameters), plus attention (4 x T x hidden
per layer forward, x3 for training).

The last line is one JSON object: tokens_per_s, ratio_to_default and utilisation per configuration.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from hydralib.config import AdapterConfig
from hydralib.data.formatting import encode_row
from hydralib.data.synthetic import make_corpus
from hydralib.inject import add_adapters
from hydralib.models import build_tiny
from hydralib.train import TrainConfig, batch_indices, train

ADAPTERS = {"hydra": AdapterConfig(method="hydra", r=8, alpha=16, heads=8, targets="all-linear"),
            "lora32": AdapterConfig(method="lora", r=32, alpha=64, targets="all-linear")}

# name: (adapter, threads, TrainConfig options, plus "attention": the model's attention implementation, as
# pipeline.prepare_model sets it, and "frozen_bf16": the frozen linear weights stored in bf16, so that autocast need
# not cast them at every call; not in the library yet). "default" is the default profile's step before the
# levers (fp32, SDPA attention).
CONFIGS = {
    "default": ("hydra", 1, {}),
    "bf16": ("hydra", 1, {"mixed_precision": "bf16"}),
    "eager": ("hydra", 1, {"attention": "eager"}),
    "bf16_eager": ("hydra", 1, {"mixed_precision": "bf16", "attention": "eager"}),
    "bf16_eager_pad8": ("hydra", 1, {"mixed_precision": "bf16", "attention": "eager", "pad_to_multiple": 8}),
    "bf16_eager_frozen_bf16": ("hydra", 1, {"mixed_precision": "bf16", "attention": "eager", "frozen_bf16": True}),
    "pad8": ("hydra", 1, {"pad_to_multiple": 8}),
    "compile_pad8": ("hydra", 1, {"compile": True, "pad_to_multiple": 8}),
    "compile_pad8_bf16": ("hydra", 1, {"compile": True, "pad_to_multiple": 8, "mixed_precision": "bf16"}),
    "compile_dynamic": ("hydra", 1, {"compile": True}),
    "threads2": ("hydra", 2, {}),
    "batch16": ("hydra", 1, {"batch_size": 16}),
    "batch64": ("hydra", 1, {"batch_size": 64}),
    "lora32_default": ("lora32", 1, {}),
    "lora32_bf16": ("lora32", 1, {"mixed_precision": "bf16"}),
    "lora32_bf16_eager": ("lora32", 1, {"mixed_precision": "bf16", "attention": "eager"}),
    "lora32_bf16_eager_frozen_bf16": ("lora32", 1, {"mixed_precision": "bf16", "attention": "eager",
                                                    "frozen_bf16": True}),
    "lora32_compile_pad8": ("lora32", 1, {"compile": True, "pad_to_multiple": 8}),
}


def build(adapter: str, seed: int = 0):
    model, tokenizer = build_tiny(seed=seed)
    add_adapters(model, ADAPTERS[adapter], seed=seed)
    return model, tokenizer


def rows_and_lengths(tokenizer, n_train: int = 2000):
    rows = make_corpus(n_components=8, n_train=n_train, n_test=10, seed=0)["train"]
    lengths = [len(encode_row(r, tokenizer, "compact", 64)["input_ids"]) for r in rows]
    return rows, lengths


def flops_per_token(model, seq_len: float) -> float:
    """Matmul FLOPs of one training step per real token (see the module docstring)."""
    total = 0.0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            w = module.weight
            total += (6 if w.requires_grad else 4) * w.numel()
    for name, p in model.named_parameters():  # adapter matrices are parameters, not nn.Linear weights
        if p.requires_grad and ("lora_" in name or "router" in name):
            total += 6 * p.numel()
    cfg = model.config
    total += 3 * 4 * seq_len * cfg.hidden_size * cfg.num_hidden_layers
    return total


def matmul_flops(shapes, dtype, threads: int, seconds: float = 0.4) -> float:
    """FLOP/s of torch.matmul over the model's shapes (m, k, n), pooled: total FLOPs / total time."""
    torch.set_num_threads(threads)
    flops = elapsed = 0.0
    for m, k, n in shapes:
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        torch.matmul(a, b)
        count, tick = 0, time.perf_counter()
        while time.perf_counter() - tick < seconds / len(shapes):
            torch.matmul(a, b)
            count += 1
        elapsed += time.perf_counter() - tick
        flops += 2 * m * k * n * count
    return flops / elapsed


def run_block(model, tokenizer, rows, lengths, adapter_threads, options, steps, seed):
    """Train `steps` steps; per step (real tokens, seconds)."""
    threads, opts = adapter_threads
    opts = dict(opts)
    model.set_attn_implementation(opts.pop("attention", "sdpa"))
    if opts.pop("frozen_bf16", False):
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and not module.weight.requires_grad:
                module.weight.data = module.weight.data.to(torch.bfloat16)
    torch.set_num_threads(threads)
    config = TrainConfig(steps=steps, progress=False, device="cpu", seed=seed, lr=1e-3, **{**options, **opts})
    result = train(model, tokenizer, rows, config)
    out = []
    for i, record in enumerate(result.metrics):
        ids = batch_indices(len(rows), i * config.batch_size, config.batch_size, seed)
        tokens = sum(lengths[j] for j in ids)
        out.append((tokens, tokens / record["tokens_per_s"]))
    return out, [m["loss"] for m in result.metrics]


def measure(names, rounds, steps, threads_default):
    models, tokenizer = {}, None
    for name in names:
        adapter = CONFIGS[name][0]
        models[name], tokenizer = build(adapter)
    rows, lengths = rows_and_lengths(tokenizer)
    mean_len = {}
    per_round = {n: [] for n in names}
    first_step = {n: [] for n in names}
    peaks = []
    for rnd in range(rounds):
        peaks.append(machine_peaks())  # the machine's matmul FLOP/s, measured between the steps of each round
        for name in names:
            adapter, threads, opts = CONFIGS[name]
            record, _ = run_block(models[name], tokenizer, rows, lengths, (threads, opts), {}, steps, seed=rnd)
            first_step[name].append(record[0][1])
            kept = record[1:]
            tokens, seconds = sum(t for t, _ in kept), sum(s for _, s in kept)
            per_round[name].append(tokens / seconds)
            print(f"round {rnd} {name:22s} {tokens / seconds:9.0f} tokens/s  first step {record[0][1]:.2f} s",
                  flush=True)
    # padded length the step computes on, for the attention FLOPs
    for name in names:
        bs = CONFIGS[name][2].get("batch_size", 32)
        mult = CONFIGS[name][2].get("pad_to_multiple", 1)
        widths = []
        for s in range(steps):
            ids = batch_indices(len(rows), s * bs, bs, 0)
            w = max(lengths[j] for j in ids)
            widths.append(-(-w // mult) * mult)
        mean_len[name] = statistics.mean(widths)
    peak = {key: statistics.median(p[key] for p in peaks) for key in peaks[0]}
    return models, per_round, first_step, mean_len, statistics.mean(lengths), peak


def machine_peaks() -> dict:
    """torch.matmul FLOP/s on the model's shapes (batch 32 x 24 tokens), fp32 and bf16, 1 and 2 threads."""
    m = 32 * 24
    shapes = [(m, 192, 192), (m, 192, 512), (m, 512, 192), (m, 192, 259)]
    return {(dtype, t): matmul_flops(shapes, getattr(torch, {"fp32": "float32", "bf16": "bfloat16"}[dtype]), t, 0.3)
            for dtype in ("fp32", "bf16") for t in (1, 2)}


def compile_cost(steps: int = 4) -> dict:
    """First-step seconds of a compiled training run in fresh processes: cold cache, then warm cache."""
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        for label in ("cold", "warm"):
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
            tick = time.perf_counter()
            proc = subprocess.run([sys.executable, __file__, "--child-compile", str(steps)], env=env,
                                  capture_output=True, text=True)
            wall = time.perf_counter() - tick
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr[-3000:])
            child = json.loads(proc.stdout.strip().splitlines()[-1])
            out[label] = {**child, "process_wall_s": round(wall, 1)}
            print(f"compile {label}: {out[label]}", flush=True)
    return out


def child_compile(steps: int) -> None:
    torch.set_num_threads(1)
    model, tokenizer = build("hydra")
    rows, lengths = rows_and_lengths(tokenizer)
    record, _ = run_block(model, tokenizer, rows, lengths, (1, {"compile": True, "pad_to_multiple": 8}), {},
                          steps, seed=0)
    seconds = [s for _, s in record]
    print(json.dumps({"first_step_s": round(seconds[0], 2), "later_step_s": round(statistics.median(seconds[1:]), 4),
                      "steps": steps}))


def quality(steps: int) -> dict:
    """Loss curves of LoRA r32 (and Hydra r8 N=8) trained fp32 and bf16 from the same start, same batches."""
    torch.set_num_threads(1)
    out = {}
    for adapter in ("lora32",):
        base, tokenizer = build(adapter)
        rows, _ = rows_and_lengths(tokenizer)
        curves = {}
        for precision in ("no", "bf16"):
            model = copy.deepcopy(base)
            cfg = TrainConfig(steps=steps, progress=False, device="cpu", seed=0, lr=3e-3, mixed_precision=precision)
            curves[precision] = [m["loss"] for m in train(model, tokenizer, rows, cfg).metrics]
        window = max(1, steps // 10)
        summary = {p: {"first": round(statistics.mean(c[:window]), 4), "last": round(statistics.mean(c[-window:]), 4)}
                   for p, c in curves.items()}
        diff = max(abs(a - b) for a, b in zip(curves["no"], curves["bf16"]))
        out[adapter] = {**summary, "max_abs_diff": round(diff, 4),
                        "every_10": {p: [round(x, 3) for x in c[::10]] for p, c in curves.items()}}
        print(f"quality {adapter}: {out[adapter]}", flush=True)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, from {', '.join(CONFIGS)}")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6, help="steps per configuration per round (first left out)")
    parser.add_argument("--compile-cost", action="store_true")
    parser.add_argument("--quality", type=int, default=0, help="steps of the fp32-vs-bf16 loss comparison (0: skip)")
    parser.add_argument("--child-compile", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_compile:
        return child_compile(args.child_compile)
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    if "default" not in names:
        names.insert(0, "default")
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown:
        parser.error(f"unknown configurations {unknown}; choose from {', '.join(CONFIGS)}")
    torch.manual_seed(0)

    models, per_round, first_step, mean_len, mean_tokens, peak = measure(names, args.rounds, args.steps, 1)
    big = {dt: matmul_flops([(1024, 1024, 1024)], getattr(torch, {"fp32": "float32", "bf16": "bfloat16"}[dt]), 1)
           for dt in ("fp32", "bf16")}
    print("matmul GFLOP/s at model shapes: " + ", ".join(f"{d} {t} thread(s) {v / 1e9:.1f}" for (d, t), v in peak.items())
          + f"; 1024^3 at 1 thread: fp32 {big['fp32'] / 1e9:.1f}, bf16 {big['bf16'] / 1e9:.1f}")

    summary = {}
    print(f"\n{'configuration':22s} {'tokens/s':>9s} {'ratio':>6s} {'GFLOP/s':>8s} {'util':>6s}  options")
    for name in names:
        adapter, threads, opts = CONFIGS[name]
        tps = statistics.median(per_round[name])
        ratio = statistics.median(a / b for a, b in zip(per_round[name], per_round["default"]))
        achieved = tps * flops_per_token(models[name], mean_len[name])
        dtype = "bf16" if opts.get("mixed_precision") == "bf16" else "fp32"
        util = achieved / peak[(dtype, threads)]
        summary[name] = {"adapter": adapter, "threads": threads, "options": opts, "tokens_per_s": round(tps),
                         "ratio_to_default": round(ratio, 3), "achieved_gflops": round(achieved / 1e9, 3),
                         "utilisation": round(util, 4), "utilisation_vs": f"{dtype} matmul, {threads} thread(s)",
                         "first_step_s": round(first_step[name][0], 2), "mean_padded_length": round(mean_len[name], 1)}
        print(f"{name:22s} {tps:9.0f} {ratio:6.2f} {achieved / 1e9:8.2f} {util:6.1%}  {adapter} threads={threads} {opts}")
    extra = {"matmul_gflops": {f"{d}_{t}thread": round(v / 1e9, 2) for (d, t), v in peak.items()},
             "matmul_gflops_1024_1thread": {d: round(v / 1e9, 2) for d, v in big.items()},
             "mean_real_tokens_per_row": round(mean_tokens, 2), "rounds": args.rounds, "steps": args.steps}
    if args.compile_cost:
        extra["compile_cost"] = compile_cost()
    if args.quality:
        extra["bf16_quality"] = quality(args.quality)
    print(json.dumps({"configs": summary, **extra}))


if __name__ == "__main__":
    main()
