"""Tokens/s and utilisation of a default-profile training step, today's configuration against the levers.

    python benchmarks/train_throughput.py              # old and new defaults: Hydra r8 N=8, LoRA r32, full FT
    python benchmarks/train_throughput.py --configs all --rounds 5    # + every lever on its own
    python benchmarks/train_throughput.py --profile 5          # + torch.profiler of 5 steps of the new default
    python benchmarks/train_throughput.py --compile-cost       # + first/warm torch.compile cost (subprocesses)
    python benchmarks/train_throughput.py --quality 100        # + loss curves fp32 vs bf16 (LoRA r32)

The step is the notebooks' own: the tiny LLaMA (hidden 192, 4 layers, byte tokenizer; random weights, which
time alike), adapters on all linear layers, batch 32 of the 8-component synthetic mixture (template
"compact", max_length 64), trained through TRAIN_MODULE.train (forward, loss, backward, clipping, AdamW,
scheduler, metrics), on the CPU with one thread per process as the run store's workers use.

Configurations run interleaved: each round trains every configuration for --steps steps on the same batches
(the batch order is a function of the round's seed), the order rotated each round, so machine noise hits them
alike. A configuration's tokens/s is its real (non-pad) tokens over its step time, the first step of each block
left out (setup, compilation); its ratio to the old default is the median over rounds of the per-round ratio,
printed with its spread (lowest and highest round).

"Before" configurations run the library as it was before issue 27 (the `legacy` option: torch's default AdamW,
which updates tensor by tensor on a CPU; frozen weights cast by autocast at every call; the adapter layer's
previous forward), so old and new are measured in the same run. "default" is the old fp32 default (fp32, SDPA
attention, before the levers): every speedup is over it, or over its LoRA r32 / full fine-tuning counterpart.

Utilisation = achieved matmul FLOP/s / the FLOP/s torch.matmul reaches on the model's own shapes in the same
run (same threads, fp32; and bf16 for the bf16 configurations). The model's FLOPs per real token: 2 x in x out
per linear for the forward pass, as much again for the input gradient, and as much again for the weight
gradient where the weight trains (so ~4 x frozen + 6 x trainable parameters), plus attention (4 x T x hidden
per layer forward, x3 for training).

The last line is one JSON object: `speedup` and `utilisation` of the new default (Hydra r8 N=8, bf16, eager
attention, the library's levers; one seed) with their spreads, the same under "lora32" and "full", under
"hydra_5_seeds" and "lora32_5_seeds" for five seeds trained together (hydralib.seed_groups), and per configuration
tokens_per_s, ratio_to_default and utilisation.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from hydralib.config import AdapterConfig
from hydralib.data.formatting import encode_row
from hydralib.data.synthetic import make_corpus
from hydralib.inject import add_adapters
from hydralib.layers import AdapterLayer
from hydralib.models import build_tiny
from hydralib.seed_groups import train_seed_group
from hydralib.train import TrainConfig, batch_indices, train

ADAPTERS = {"hydra": AdapterConfig(method="hydra", r=8, alpha=16, heads=8, targets="all-linear"),
            "lora32": AdapterConfig(method="lora", r=32, alpha=64, targets="all-linear"),
            "full": None}
TRAIN_MODULE = importlib.import_module("hydralib.train")  # the package exports its `train` function under that name
LEVERS = ("adamw", "frozen", "forward")  # what `legacy` can turn back to the library before issue 27
NEW = {"mixed_precision": "bf16", "attention": "eager"}  # the default step now (pipeline.prepare_model on a CPU)

# name: (adapter, threads, TrainConfig options, plus "attention": the model's attention implementation, as
# pipeline.prepare_model sets it, "legacy": levers turned back to the library before issue 27 (LEVERS), and "seed_group":
# k seeds trained as one stacked model by hydralib.seed_groups, each step counting every seed's tokens).
CONFIGS = {
    "default": ("hydra", 1, {"legacy": LEVERS}),
    "bf16_eager_before": ("hydra", 1, {**NEW, "legacy": LEVERS}),
    "bf16_eager": ("hydra", 1, NEW),
    "bf16_eager_5_seeds": ("hydra", 1, {**NEW, "seed_group": 5}),
    "bf16_eager_loop_adamw": ("hydra", 1, {**NEW, "legacy": ("adamw",)}),
    "bf16_eager_cast_frozen": ("hydra", 1, {**NEW, "legacy": ("frozen",)}),
    "bf16_eager_old_forward": ("hydra", 1, {**NEW, "legacy": ("forward",)}),
    "fp32": ("hydra", 1, {}),
    "bf16": ("hydra", 1, {"mixed_precision": "bf16"}),
    "bf16_eager_pad8": ("hydra", 1, {**NEW, "pad_to_multiple": 8}),
    "compile_pad8_bf16": ("hydra", 1, {"compile": True, "pad_to_multiple": 8, "mixed_precision": "bf16"}),
    "threads2": ("hydra", 2, NEW),
    "batch64": ("hydra", 1, {**NEW, "batch_size": 64}),
    "lora32_default": ("lora32", 1, {"legacy": LEVERS}),
    "lora32_bf16_eager_before": ("lora32", 1, {**NEW, "legacy": LEVERS}),
    "lora32_bf16_eager": ("lora32", 1, NEW),
    "lora32_bf16_eager_5_seeds": ("lora32", 1, {**NEW, "seed_group": 5}),
    "full_default": ("full", 1, {"legacy": LEVERS}),
    "full_bf16_eager_before": ("full", 1, {**NEW, "legacy": LEVERS}),
    "full_bf16_eager": ("full", 1, NEW),
}
# the configurations run without --configs; the JSON's headline pairs (new default, old default) per method
STANDARD = ["default", "bf16_eager_before", "bf16_eager", "bf16_eager_5_seeds", "lora32_default", "lora32_bf16_eager",
            "lora32_bf16_eager_5_seeds", "full_default", "full_bf16_eager"]
HEADLINE = {"hydra": ("bf16_eager", "default"), "lora32": ("lora32_bf16_eager", "lora32_default"),
            "full": ("full_bf16_eager", "full_default"), "hydra_5_seeds": ("bf16_eager_5_seeds", "default"),
            "lora32_5_seeds": ("lora32_bf16_eager_5_seeds", "lora32_default")}


def legacy_forward(self, x: torch.Tensor) -> torch.Tensor:
    """AdapterLayer.forward before issue 27 (x cast for each product; a bf16 input widened to float32 first)."""
    result = self.base(x)
    if self.merged:
        return result
    if self.config.implementation == "loop":
        return result + self.loop_update(x.to(self.lora_A.dtype)).to(result.dtype)
    h, logits = self.project(x.to(self.lora_A.dtype))
    if self.heads > 1:
        g = self.gate(x, h, logits)
        if self.config.method == "split":
            z = h * g.repeat_interleave(self.config.r, dim=-1)
        else:
            z = (g.unsqueeze(-1) * h.unsqueeze(-2)).flatten(-2)
    else:
        z = h
    dtype = result.dtype
    out = torch.addmm(result.reshape(-1, self.out_features), z.reshape(-1, z.shape[-1]).to(dtype),
                      self.lora_B.t().to(dtype), alpha=self.config.scaling)
    return out.view(result.shape)


@contextlib.contextmanager
def legacy(levers):
    """The library before issue 27 for the levers named (see LEVERS), restored afterwards."""
    saved = (TRAIN_MODULE.make_optimizer, TRAIN_MODULE.frozen_linear_weights_in, AdapterLayer.forward)
    if "adamw" in levers:
        TRAIN_MODULE.make_optimizer = lambda params, config: torch.optim.AdamW(
            params, lr=config.lr, weight_decay=config.weight_decay)
    if "frozen" in levers:
        TRAIN_MODULE.frozen_linear_weights_in = lambda model, dtype: contextlib.nullcontext()
    if "forward" in levers:
        AdapterLayer.forward = legacy_forward
    try:
        yield
    finally:
        TRAIN_MODULE.make_optimizer, TRAIN_MODULE.frozen_linear_weights_in, AdapterLayer.forward = saved


def build(adapter: str, seed: int = 0):
    model, tokenizer = build_tiny(seed=seed)
    if ADAPTERS[adapter] is not None:
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
    """Train `steps` steps; per step (real tokens, seconds). A list of models (a seed group) trains together,
    seeds seed*k .. seed*k+k-1, and a step counts the tokens of every seed."""
    threads, opts = adapter_threads
    opts = dict(opts)
    group = model if isinstance(model, list) else [model]
    attention = opts.pop("attention", "sdpa")
    for m in group:
        m.set_attn_implementation(attention)
    torch.set_num_threads(threads)
    opts.pop("seed_group", None)
    with legacy(opts.pop("legacy", ())):
        configs = [TrainConfig(steps=steps, progress=False, device="cpu", seed=seed * len(group) + s, lr=1e-3,
                               **{**options, **opts}) for s in range(len(group))]
        if isinstance(model, list):
            results = train_seed_group(group, tokenizer, rows, configs)
        else:
            results = [train(model, tokenizer, rows, configs[0])]
    out = []
    for i, record in enumerate(results[0].metrics):
        tokens = sum(lengths[j] for c in configs
                     for j in batch_indices(len(rows), i * c.batch_size, c.batch_size, c.seed))
        out.append((tokens, tokens / record["tokens_per_s"]))
    return out, [m["loss"] for m in results[0].metrics]


def measure(names, rounds, steps):
    models, tokenizer = {}, None
    for name in names:
        adapter, _, opts = CONFIGS[name]
        if opts.get("seed_group"):  # one base, each seed's own adapters
            base, tokenizer = build_tiny(seed=0)
            models[name] = [add_adapters(copy.deepcopy(base), ADAPTERS[adapter], seed=s)
                            for s in range(opts["seed_group"])]
        else:
            models[name], tokenizer = build(adapter)
    rows, lengths = rows_and_lengths(tokenizer)
    mean_len = {}
    per_round = {n: [] for n in names}
    first_step = {n: [] for n in names}
    peaks = []
    thread_counts = sorted({CONFIGS[n][1] for n in names})
    for rnd in range(rounds):
        peaks.append(machine_peaks(thread_counts))  # the machine's matmul FLOP/s, measured in each round
        for name in names[rnd % len(names):] + names[:rnd % len(names)]:
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
            ids = [j for seed in range(CONFIGS[name][2].get("seed_group", 1))
                   for j in batch_indices(len(rows), s * bs, bs, seed)]
            w = max(lengths[j] for j in ids)
            widths.append(-(-w // mult) * mult)
        mean_len[name] = statistics.mean(widths)
    return models, per_round, first_step, mean_len, statistics.mean(lengths), peaks


def machine_peaks(threads=(1,)) -> dict:
    """torch.matmul FLOP/s on the model's shapes (batch 32 x 24 tokens), fp32 and bf16, at each thread count."""
    m = 32 * 24
    shapes = [(m, 192, 192), (m, 192, 512), (m, 512, 192), (m, 192, 259)]
    return {(dtype, t): matmul_flops(shapes, getattr(torch, {"fp32": "float32", "bf16": "bfloat16"}[dtype]), t, 0.3)
            for dtype in ("fp32", "bf16") for t in threads}


def spread(values) -> list[float]:
    """[lowest, highest] over rounds."""
    return [round(min(values), 3), round(max(values), 3)]


def speedups_text(values) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


MATMUL_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"}
COPY_OPS = {"aten::copy_", "aten::_to_copy"}


def profile_step(steps: int) -> dict:
    """Where a step of the new default goes (torch.profiler, self CPU time of `steps` steps after two warm-up
    steps): matrix products, copies (autocast's casts and explicit .to(), most of them), other elementwise
    and reduction ops, the optimizer (AdamW and everything it calls), autograd's own bookkeeping (backward nodes'
    self time), and what no operator accounts for (Python: the model's modules, hooks, the training loop),
    as shares of the steps' wall time."""
    torch.set_num_threads(1)
    model, tokenizer = build("hydra")
    rows, lengths = rows_and_lengths(tokenizer)
    options = dict(CONFIGS["bf16_eager"][2])
    run_block(model, tokenizer, rows, lengths, (1, options), {}, 2, seed=100)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        record, _ = run_block(model, tokenizer, rows, lengths, (1, options), {}, steps, seed=101)
    wall_us = 1e6 * sum(s for _, s in record)
    totals = {"matmul": 0.0, "copies": 0.0, "elementwise": 0.0, "optimizer": 0.0, "autograd": 0.0}
    calls = {key: 0 for key in totals}
    for event in prof.events():
        ancestor, in_optimizer = event, False
        while ancestor is not None:
            if ancestor.name.startswith("Optimizer."):
                in_optimizer = True
                break
            ancestor = ancestor.cpu_parent
        name = event.name
        if in_optimizer:
            key = "optimizer"
        elif name in MATMUL_OPS:
            key = "matmul"
        elif name in COPY_OPS:
            key = "copies"
        elif name.startswith("aten::"):
            key = "elementwise"
        elif name.startswith("autograd::") or "Backward" in name:
            key = "autograd"
        else:
            continue  # record_function ranges (e.g. the profiler's own), counted by what they call
        totals[key] += event.self_cpu_time_total
        calls[key] += 1
    totals["other (Python, loop)"] = max(0.0, wall_us - sum(totals.values()))
    shares = {key: round(value / wall_us, 3) for key, value in totals.items()}
    print(f"\nprofile of {steps} steps of bf16_eager (ms per step, share of wall time, operator calls per step):")
    for key, value in totals.items():
        print(f"  {key:22s} {value / 1e3 / steps:8.1f} ms  {shares[key]:6.1%}  {calls.get(key, 0) / steps:7.0f}")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    return {"steps": steps, "step_ms": round(wall_us / 1e3 / steps, 1), "shares": shares,
            "calls_per_step": {key: round(n / steps) for key, n in calls.items()}}


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
    parser.add_argument("--configs", default=",".join(STANDARD),
                        help=f"comma-separated, or 'all', from {', '.join(CONFIGS)}")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6, help="steps per configuration per round (first left out)")
    parser.add_argument("--compile-cost", action="store_true")
    parser.add_argument("--quality", type=int, default=0, help="steps of the fp32-vs-bf16 loss comparison (0: skip)")
    parser.add_argument("--profile", type=int, default=0, help="steps of the new default to profile (0: skip)")
    parser.add_argument("--child-compile", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_compile:
        return child_compile(args.child_compile)
    names = list(CONFIGS) if args.configs == "all" else [n.strip() for n in args.configs.split(",") if n.strip()]
    if "default" not in names:
        names.insert(0, "default")
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown:
        parser.error(f"unknown configurations {unknown}; choose from {', '.join(CONFIGS)}")
    torch.manual_seed(0)

    models, per_round, first_step, mean_len, mean_tokens, peaks = measure(names, args.rounds, args.steps)
    peak = {key: statistics.median(p[key] for p in peaks) for key in peaks[0]}
    big = {dt: matmul_flops([(1024, 1024, 1024)], getattr(torch, {"fp32": "float32", "bf16": "bfloat16"}[dt]), 1)
           for dt in ("fp32", "bf16")}
    print("matmul GFLOP/s at model shapes: " + ", ".join(f"{d} {t} thread(s) {v / 1e9:.1f}" for (d, t), v in peak.items())
          + f"; 1024^3 at 1 thread: fp32 {big['fp32'] / 1e9:.1f}, bf16 {big['bf16'] / 1e9:.1f}")

    summary = {}
    print(f"\n{'configuration':26s} {'tokens/s':>9s} {'ratio':>6s} {'spread':>11s} {'GFLOP/s':>8s} {'util':>6s}  "
          "options")
    for name in names:
        adapter, threads, opts = CONFIGS[name]
        tps = statistics.median(per_round[name])
        ratios = [a / b for a, b in zip(per_round[name], per_round["default"])]
        model = models[name][0] if isinstance(models[name], list) else models[name]
        achieved = tps * flops_per_token(model, mean_len[name])
        dtype = "bf16" if opts.get("mixed_precision") == "bf16" else "fp32"
        # per round, over the matmul rate measured in that round
        utils = [t * flops_per_token(model, mean_len[name]) / p[(dtype, threads)]
                 for t, p in zip(per_round[name], peaks)]
        summary[name] = {"adapter": adapter, "threads": threads, "options": opts, "tokens_per_s": round(tps),
                         "ratio_to_default": round(statistics.median(ratios), 3), "ratio_spread": spread(ratios),
                         "achieved_gflops": round(achieved / 1e9, 3), "utilisation": round(statistics.median(utils), 4),
                         "utilisation_spread": spread(utils), "utilisation_vs": f"{dtype} matmul, {threads} thread(s)",
                         "first_step_s": round(first_step[name][0], 2), "mean_padded_length": round(mean_len[name], 1)}
        low, high = summary[name]["ratio_spread"]
        print(f"{name:26s} {tps:9.0f} {statistics.median(ratios):6.2f} {low:5.2f}-{high:<5.2f} {achieved / 1e9:8.2f} "
              f"{statistics.median(utils):6.1%}  {adapter} threads={threads} {opts}")
    headline = {}
    for method, (new, old) in HEADLINE.items():
        if new in names and old in names:
            speedups = [a / b for a, b in zip(per_round[new], per_round[old])]
            headline[method] = {"speedup": round(statistics.median(speedups), 3), "speedup_spread": spread(speedups),
                                "utilisation": summary[new]["utilisation"],
                                "utilisation_spread": summary[new]["utilisation_spread"],
                                "utilisation_before": summary[old]["utilisation"],
                                "tokens_per_s": summary[new]["tokens_per_s"],
                                "tokens_per_s_before": summary[old]["tokens_per_s"], "new": new, "old": old}
            print(f"{method}: speedup {headline[method]['speedup']:.2f} (rounds {speedups_text(speedups)}), "
                  f"utilisation {headline[method]['utilisation']:.1%} "
                  f"(before {headline[method]['utilisation_before']:.1%})")
    extra = {"matmul_gflops": {f"{d}_{t}thread": round(v / 1e9, 2) for (d, t), v in peak.items()},
             "matmul_gflops_1024_1thread": {d: round(v / 1e9, 2) for d, v in big.items()},
             "mean_real_tokens_per_row": round(mean_tokens, 2), "rounds": args.rounds, "steps": args.steps}
    if args.profile:
        extra["profile"] = profile_step(args.profile)
    if args.compile_cost:
        extra["compile_cost"] = compile_cost()
    if args.quality:
        extra["bf16_quality"] = quality(args.quality)
    hydra = headline.get("hydra", {})
    print(json.dumps({"speedup": hydra.get("speedup"), "utilisation": hydra.get("utilisation"), **hydra,
                      **{m: headline[m] for m in HEADLINE if m != "hydra" and m in headline}, "configs": summary,
                      **extra}))


if __name__ == "__main__":
    main()
