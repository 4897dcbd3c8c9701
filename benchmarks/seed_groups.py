"""Does training k seeds of one method as one stacked model pay at the default shapes? A prototype, measured.

    python benchmarks/seed_groups.py                    # Hydra r8 N=8, 5 seeds, bf16 + eager (the default step)
    python benchmarks/seed_groups.py --precision no     # fp32

The prototype stacks the seeds' adapters along a seed dimension: every row of every seed goes through the frozen
base as one batch (k x 32 rows), and each seed's adapters act on its own rows through batched matrix products
(bmm / baddbmm over the seed dimension); each seed keeps its own data order, initialisation (the one
add_adapters(seed=s) draws), loss normalisation, gradient clipping and AdamW state (one fused AdamW over the
stacked tensors: AdamW is elementwise). It is measured against the same code with one seed, run k times, so only
the stacking differs; and against hydralib.train's own step, interleaved over rounds, one pinned thread. It also
reports how far a stacked run's losses are from separate runs of the same seeds (same code, k = 1).

The last line is one JSON object: grouped_over_separate (tokens/s ratio, median over rounds, and its spread).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from hydralib.config import AdapterConfig
from hydralib.data.formatting import IGNORE_INDEX, collate, encode_row
from hydralib.data.synthetic import make_corpus
from hydralib.inject import add_adapters, adapter_layers
from hydralib.models import build_tiny
from hydralib.train import TrainConfig, batch_indices, train

ADAPTER = AdapterConfig(method="hydra", r=8, alpha=16, heads=8, targets="all-linear")


class StackedHydra(nn.Module):
    """k seeds' Hydra adapters (token router reading x, no dropout) on one frozen linear layer; the input's rows
    are seed-major: rows [s*b, (s+1)*b) belong to seed s."""

    def __init__(self, layers):
        super().__init__()
        self.base = layers[0].base
        self.r, self.heads, self.scaling = layers[0].config.r, layers[0].heads, layers[0].config.scaling
        self.A = nn.Parameter(torch.stack([l.lora_A.detach() for l in layers]))        # (k, r, in)
        self.router = nn.Parameter(torch.stack([l.router.detach() for l in layers]))   # (k, heads, in)
        self.B = nn.Parameter(torch.stack([l.lora_B.detach() for l in layers]))        # (k, out, heads*r)

    def forward(self, x):
        autocast = torch.is_autocast_enabled(x.device.type)
        if autocast:
            x = x.to(torch.get_autocast_dtype(x.device.type))
        result = self.base(x)
        k = self.A.shape[0]
        xs = x.reshape(k, -1, x.shape[-1])
        both = torch.bmm(xs if autocast else xs.to(self.A.dtype), torch.cat([self.A, self.router], 1).transpose(1, 2))
        h, logits = both.split([self.r, self.heads], dim=-1)
        g = torch.softmax(logits, dim=-1, dtype=torch.float32).to(h.dtype)
        z = (g.unsqueeze(-1) * h.unsqueeze(-2)).flatten(-2)
        out = torch.baddbmm(result.reshape(k, -1, result.shape[-1]), z.to(result.dtype),
                            self.B.transpose(1, 2).to(result.dtype), alpha=self.scaling)
        return out.view(result.shape)


def stacked_model(seeds):
    """The base with every target's adapters stacked over `seeds` (each seed's as add_adapters(seed=s) draws)."""
    base, tokenizer = build_tiny(seed=0)
    per_seed = []
    for seed in seeds:
        model = copy.deepcopy(base)
        add_adapters(model, ADAPTER, seed=seed)
        per_seed.append(adapter_layers(model))
    add_adapters(base, ADAPTER, seed=seeds[0])  # freezes the base and finds the targets
    for name in per_seed[0]:
        parent_name, _, child = name.rpartition(".")
        parent = base.get_submodule(parent_name)
        setattr(parent, child, StackedHydra([layers[name] for layers in per_seed]))
    base.set_attn_implementation("eager")
    return base, tokenizer


class GroupedTrainer:
    """The training step of k stacked seeds: one forward/backward over all rows, per-seed loss, clip and AdamW."""

    def __init__(self, model, tokenizer, encoded, seeds, precision, lr=5e-3, batch=32, max_norm=1.0, steps=150):
        self.model, self.tokenizer, self.encoded, self.seeds = model, tokenizer, encoded, seeds
        self.precision, self.batch, self.max_norm = precision, batch, max_norm
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=lr, weight_decay=0.0, fused=True)
        self.step_index = 0

    def step(self) -> tuple[int, list[float]]:
        k, b = len(self.seeds), self.batch
        ids = [i for seed in self.seeds for i in batch_indices(len(self.encoded), self.step_index * b, b, seed)]
        data = collate([self.encoded[i] for i in ids], self.tokenizer.pad_token_id)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            logits = self.model(input_ids=data["input_ids"], attention_mask=data["attention_mask"]).logits
        labels = data["labels"][:, 1:]
        mask = labels != IGNORE_INDEX
        losses = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels.clamp_min(0).reshape(-1),
                                 reduction="none").view(labels.shape) * mask
        per_seed = losses.view(k, b, -1).sum((1, 2)) / mask.view(k, b, -1).sum((1, 2))
        per_seed.sum().backward()  # seed s's parameters see only seed s's rows: the gradients stay separate
        norms = torch.stack([p.grad.reshape(k, -1).pow(2).sum(1) for p in self.params]).sum(0).sqrt()
        coef = (self.max_norm / (norms + 1e-6)).clamp(max=1.0)
        for p in self.params:
            p.grad.mul_(coef.view(k, *([1] * (p.dim() - 1))))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step_index += 1
        return int(data["attention_mask"].sum()), per_seed.detach().tolist()


def timed_steps(trainer, steps) -> tuple[int, float]:
    """(real tokens, seconds) of `steps` steps, after one left out."""
    trainer.step()
    tokens, tick = 0, time.perf_counter()
    for _ in range(steps):
        tokens += trainer.step()[0]
    return tokens, time.perf_counter() - tick


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="grouped steps per round (separate: as many per seed)")
    parser.add_argument("--precision", default="bf16", choices=["bf16", "no"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    seeds = list(range(args.seeds))
    _, tokenizer = build_tiny(seed=0)
    rows = make_corpus(n_components=8, n_train=2000, n_test=10, seed=0)["train"]
    encoded = [encode_row(r, tokenizer, "compact", 64) for r in rows]

    grouped = GroupedTrainer(*stacked_model(seeds), encoded, seeds, args.precision)
    separate = [GroupedTrainer(*stacked_model([s]), encoded, [s], args.precision) for s in seeds]
    library = copy.deepcopy(build_tiny(seed=0)[0])
    add_adapters(library, ADAPTER, seed=0)
    library.set_attn_implementation("eager")
    config = TrainConfig(steps=args.steps * args.seeds + 1, progress=False, device="cpu", lr=5e-3,
                         mixed_precision=args.precision)
    rates = {"grouped": [], "separate": [], "library": []}
    lengths = [len(e["input_ids"]) for e in encoded]
    for rnd in range(args.rounds):
        order = ["grouped", "separate", "library"]
        for name in order[rnd % 3:] + order[:rnd % 3]:
            if name == "grouped":
                tokens, seconds = timed_steps(grouped, args.steps)
            elif name == "separate":  # the same code one seed at a time, `steps` steps each
                tokens, seconds = map(sum, zip(*(timed_steps(trainer, args.steps) for trainer in separate)))
            else:  # hydralib.train's step, as many steps as the seeds' together
                kept = train(library, tokenizer, rows, config).metrics[1:]
                per_step = [sum(lengths[j] for j in batch_indices(len(rows), (m["step"] - 1) * 32, 32, 0))
                            for m in kept]
                tokens, seconds = sum(per_step), sum(t / m["tokens_per_s"] for t, m in zip(per_step, kept))
            rates[name].append(tokens / seconds)
        print(f"round {rnd}: " + ", ".join(f"{n} {v[-1]:.0f}" for n, v in rates.items() if len(v) > rnd), flush=True)
    over_separate = [a / b for a, b in zip(rates["grouped"], rates["separate"])]
    over_library = [a / b for a, b in zip(rates["grouped"], rates["library"])]

    # how far stacked losses are from separate runs of the same seeds (same code, fresh starts)
    check = GroupedTrainer(*stacked_model(seeds[:2]), encoded, seeds[:2], args.precision)
    alone = [GroupedTrainer(*stacked_model([s]), encoded, [s], args.precision) for s in seeds[:2]]
    together = [check.step()[1] for _ in range(3)]
    apart = [[trainer.step()[1][0] for trainer in alone] for _ in range(3)]
    loss_diff = max(abs(a - b) for x, y in zip(together, apart) for a, b in zip(x, y))
    result = {"grouped_over_separate": round(statistics.median(over_separate), 3),
              "grouped_over_separate_spread": [round(min(over_separate), 3), round(max(over_separate), 3)],
              "grouped_over_library_step": round(statistics.median(over_library), 3),
              "grouped_over_library_step_spread": [round(min(over_library), 3), round(max(over_library), 3)],
              "tokens_per_s": {n: round(statistics.median(v)) for n, v in rates.items()},
              "max_loss_diff_grouped_vs_separate_3_steps": loss_diff,
              "seeds": args.seeds, "precision": args.precision, "rounds": args.rounds, "steps": args.steps}
    print(f"grouped over separate (same code): {result['grouped_over_separate']} {result['grouped_over_separate_spread']}; "
          f"over hydralib.train's step: {result['grouped_over_library_step']} {result['grouped_over_library_step_spread']}; "
          f"largest loss difference, 2 seeds x 3 steps: {loss_diff:.3g}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
