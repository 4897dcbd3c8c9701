"""Train the seeds of one method together: one stacked model, k separate results.

    results = train_seed_group(models, tokenizer, rows, configs)   # models[s]: add_adapters(..., seed=seeds[s])

The seeds of a method share the frozen base, the architecture and the step count, so one step can carry all of
them: every seed's rows go through the frozen base as one batch (seed-major: rows [s*b, (s+1)*b) are seed s's),
and each seed's adapters act on its own rows through matrix products batched over a seed dimension. Each seed
keeps its own batches (a function of its TrainConfig.seed and the step, as in hydralib.train), its own
initialisation (the models come in with their adapters drawn), its own loss normalisation, gradient clipping
and AdamW state (one fused AdamW over the stacked tensors: AdamW is elementwise), and comes back as its own
TrainResult with its own model. On the default profile's shapes (tiny LLaMA, batch 32, Hydra r8 N=8, bf16) 5
stacked seeds train 1.48x the tokens/s of 5 separate hydralib.train runs (benchmarks/seed_groups.py, on a busy
machine); in fp32 the results equal separate hydralib.train runs bit for bit (tests/test_seed_groups.py).

Supported: LoRA, Split and HydraLoRA with heads = 1 or a learned per-token router reading x (no top-k), no
dropout, one process, no gradient accumulation, no compile, no balance loss; no run folder, checkpoint or
stop_at (the run store would store each seed's result as its own run), and no gate statistics in the metrics.
"""
from __future__ import annotations

import contextlib
import copy
import math
import time

import torch
from torch import nn
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from .data.formatting import collate, encode_row
from .inject import adapter_config_of, adapter_layers, frozen_linear_weights_in
from .layers import AdapterLayer
from .train import (TrainConfig, TrainResult, _component_names, _pad_to_multiple, _response_tokens, batch_indices,
                    make_optimizer, resolve_mixed_precision, seed_everything, token_losses)

SEED_FREE = ("seed", "progress", "checkpoint_every")  # what may differ between the seeds' TrainConfigs


class StackedAdapterLayer(nn.Module):
    """k seeds' adapters on one frozen linear layer, stacked over a leading seed dimension; computes what each
    seed's AdapterLayer computes on that seed's rows."""

    def __init__(self, layers: list[AdapterLayer]):
        super().__init__()
        first = layers[0]
        self.base, self.config, self.heads = first.base, first.config, first.heads
        # (k, a*r, in), (k, out, N*r), (k, N, in); a tensor the seeds do not train (e.g. a frozen A) stays frozen
        for name in ("lora_A", "lora_B", "router"):
            tensors = [getattr(layer, name) for layer in layers]
            setattr(self, name, None if tensors[0] is None else nn.Parameter(
                torch.stack([t.detach() for t in tensors]), requires_grad=tensors[0].requires_grad))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        autocast = torch.is_autocast_enabled(x.device.type)
        if autocast:  # one cast of x for both products, as AdapterLayer does
            x = x.to(torch.get_autocast_dtype(x.device.type))
        result = self.base(x)
        seeds = self.lora_A.shape[0]
        xs = x.reshape(seeds, -1, x.shape[-1])  # (k, rows x tokens of one seed, in)
        xs = xs if autocast else xs.to(self.lora_A.dtype)
        if self.router is None:
            h = torch.bmm(xs, self.lora_A.transpose(1, 2))
            z = h
        else:
            both = torch.bmm(xs, torch.cat([self.lora_A, self.router], 1).transpose(1, 2))
            h, logits = both.split([self.lora_A.shape[1], self.heads], dim=-1)
            g = torch.softmax(logits, dim=-1, dtype=torch.float32).to(h.dtype)
            if self.config.method == "split":
                z = h * g.repeat_interleave(self.config.r, dim=-1)
            else:
                z = (g.unsqueeze(-1) * h.unsqueeze(-2)).flatten(-2)
        dtype = result.dtype
        out = torch.baddbmm(result.reshape(seeds, -1, result.shape[-1]), z.to(dtype),
                            self.lora_B.transpose(1, 2).to(dtype), alpha=self.config.scaling)
        return out.view(result.shape)


def check_seed_group(models: list[nn.Module], configs: list[TrainConfig]) -> None:
    """Refuses a group that cannot train as one stacked model, naming what differs or is not supported."""
    if len(models) != len(configs) or not models:
        raise ValueError(f"need one TrainConfig per model, got {len(models)} models and {len(configs)} configs")
    adapter = adapter_config_of(models[0])
    if adapter is None:
        raise ValueError("seed groups train adapters; models[0] has none (full fine-tuning trains alone)")
    if adapter.dropout > 0 or adapter.implementation != "fused" or (adapter.heads > 1 and (
            adapter.gate != "learned" or adapter.router_input != "x" or adapter.router_level != "token"
            or adapter.top_k is not None)):
        raise ValueError("seed groups support LoRA, Split and HydraLoRA with no dropout, the fused implementation, and "
                         f"(heads > 1) a learned per-token router reading x without top-k; got {adapter.to_dict()}")
    if getattr(adapter, "head_dropout", 0):
        raise ValueError("seed groups support no head dropout; got head_dropout="
                         f"{adapter.head_dropout}")
    for name, layer in adapter_layers(models[0]).items():
        other = sorted({n for n, _ in layer.named_parameters(recurse=False)} - {"lora_A", "lora_B", "router"})
        if other:
            raise ValueError(f"{name} has adapter tensors a seed group does not stack: {other} (a router of its own?)")
    first = {k: v for k, v in configs[0].to_dict().items() if k not in SEED_FREE}
    for s, (model, config) in enumerate(zip(models, configs)):
        if adapter_config_of(model) != adapter:
            raise ValueError(f"models[{s}] has another adapter configuration than models[0]: one method per group")
        other = {k: v for k, v in config.to_dict().items() if k not in SEED_FREE}
        changed = sorted(k for k in first if first[k] != other[k])
        if changed:
            raise ValueError(f"configs[{s}] differs from configs[0] in {changed}: only {', '.join(SEED_FREE)} may")
        own = {id(p) for layer in adapter_layers(model).values() for p in layer.parameters(recurse=False)}
        frozen = [(n, p) for n, p in model.named_parameters() if not p.requires_grad and id(p) not in own]
        reference = dict(models[0].named_parameters())
        if any(not torch.equal(p, reference[n]) for n, p in frozen):
            raise ValueError(f"models[{s}] has other frozen (base) weights than models[0]: one base per group")
    config = configs[0]
    if config.grad_accum != 1 or config.compile or config.balance_weight:
        raise ValueError("seed groups train with grad_accum=1, compile=False and balance_weight=0, got "
                         f"{config.grad_accum}, {config.compile}, {config.balance_weight}")
    if resolve_mixed_precision(config.mixed_precision, config.device) == "fp16":
        raise ValueError("seed groups train in fp32 or bf16 (fp16 needs a gradient scaler per seed)")


def stack_seeds(models: list[nn.Module]) -> nn.Module:
    """A copy of models[0] whose adapter layers hold every model's adapters, stacked in the models' order."""
    per_seed = [adapter_layers(model) for model in models]
    stacked = copy.deepcopy(models[0])
    for name in per_seed[0]:
        parent_name, _, child = name.rpartition(".")
        parent = stacked.get_submodule(parent_name) if parent_name else stacked
        setattr(parent, child, StackedAdapterLayer([layers[name] for layers in per_seed]))
    return stacked


@torch.no_grad()
def unstack_seeds(stacked: nn.Module, models: list[nn.Module]) -> None:
    """Copy each seed's trained adapters from the stacked model back into its own model."""
    layers = {name: m for name, m in stacked.named_modules() if isinstance(m, StackedAdapterLayer)}
    for s, model in enumerate(models):
        for name, layer in adapter_layers(model).items():
            group = layers[name]
            layer.lora_A.copy_(group.lora_A[s])
            layer.lora_B.copy_(group.lora_B[s])
            if layer.router is not None:
                layer.router.copy_(group.router[s])


def train_seed_group(models: list[nn.Module], tokenizer, rows: list[dict] | list[list[dict]],
                     configs: list[TrainConfig]) -> list[TrainResult]:
    """Train k adapted models of one method (the same base and adapter configuration, each with its own seed's
    adapters; TrainConfigs equal but for the seed) as one stacked model; one TrainResult per model, in order, each
    with its model trained as hydralib.train would have trained it alone (see the module docstring).

    rows: the training rows, shared, or one list per seed. Metrics per step and seed: loss, lr, grad_norm,
    component_loss, and tokens_per_s of the whole group's step."""
    check_seed_group(models, configs)
    seeds = len(models)
    per_seed_rows = rows if rows and isinstance(rows[0], list) else [rows] * seeds
    if len(per_seed_rows) != seeds or not all(per_seed_rows):
        raise ValueError(f"rows: one non-empty list shared, or one per seed ({seeds}); got {len(per_seed_rows)}")
    config = configs[0]
    precision = resolve_mixed_precision(config.mixed_precision, config.device)
    device = torch.device("cuda" if config.device == "auto" and torch.cuda.is_available() else "cpu")
    seed_everything(config.seed)
    encoded = [[encode_row(r, tokenizer, config.template, config.max_length) for r in seed_rows]
               for seed_rows in per_seed_rows]
    names = [_component_names(seed_rows) for seed_rows in per_seed_rows]
    stacked = stack_seeds(models).to(device)
    trainable = [p for p in stacked.parameters() if p.requires_grad]
    optimizer = make_optimizer(trainable, config)
    scheduler = get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, math.ceil(config.warmup_ratio * config.steps), config.steps, min_lr_rate=config.lr_floor)
    metrics = [[] for _ in range(seeds)]
    frozen_in_bf16 = precision == "bf16" and device.type == "cpu"
    stacked.train()
    started = time.perf_counter()
    with frozen_linear_weights_in(stacked, torch.bfloat16) if frozen_in_bf16 else contextlib.nullcontext():
        for step in range(config.steps):
            tick = time.perf_counter()
            ids = [batch_indices(len(encoded[s]), step * config.batch_size, config.batch_size, configs[s].seed)
                   for s in range(seeds)]
            tokens = [sum(_response_tokens(encoded[s][i]) for i in ids[s]) for s in range(seeds)]
            if min(tokens) == 0:
                raise ValueError(f"step {step + 1}: a seed's batch has no response tokens; max_length="
                                 f"{config.max_length} leaves no room for the answers")
            batch = collate([encoded[s][i] for s in range(seeds) for i in ids[s]], tokenizer.pad_token_id)
            batch = _pad_to_multiple(batch, config.pad_to_multiple, tokenizer.pad_token_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                losses, mask = token_losses(stacked, batch)
            b = config.batch_size
            seed_losses = [losses[s * b:(s + 1) * b].sum() / tokens[s] for s in range(seeds)]
            torch.stack(seed_losses).sum().backward()  # seed s's adapters see only seed s's rows
            grad_norms = clip_per_seed(trainable, seeds, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            seconds = time.perf_counter() - tick
            group_tokens = int(batch["attention_mask"].sum())
            for s in range(seeds):
                loss = losses[s * b:(s + 1) * b].detach()
                mean_loss = loss.sum().item() / tokens[s]
                if not (math.isfinite(mean_loss) and math.isfinite(grad_norms[s])):
                    raise FloatingPointError(f"seed {configs[s].seed}: loss {mean_loss}, gradient norm {grad_norms[s]} "
                                             f"at step {step + 1}: training diverged; try a lower lr (now {config.lr})")
                component = batch["component"][s * b:(s + 1) * b].cpu()
                comp_loss = torch.zeros(len(names[s])).index_add_(0, component, loss.sum(1).float().cpu())
                comp_tokens = torch.zeros(len(names[s])).index_add_(0, component,
                                                                     mask[s * b:(s + 1) * b].sum(1).float().cpu())
                metrics[s].append({"step": step + 1, "loss": mean_loss, "lr": scheduler.get_last_lr()[0],
                                   "tokens_per_s": group_tokens / seconds, "grad_norm": grad_norms[s],
                                   "component_loss": {names[s][c]: (comp_loss[c] / comp_tokens[c]).item()
                                                      for c in range(len(names[s])) if comp_tokens[c] > 0}})
    seconds = time.perf_counter() - started
    unstack_seeds(stacked, models)
    for model in models:
        model.eval()
    return [TrainResult(model, metrics[s], None, seconds) for s, model in enumerate(models)]


def clip_per_seed(parameters: list[torch.Tensor], seeds: int, max_norm: float | None) -> list[float]:
    """torch.nn.utils.clip_grad_norm_ applied to each seed's slice of the stacked gradients (the same arithmetic:
    the norm of the per-tensor norms, clip coefficient max_norm / (norm + 1e-6) clamped to 1); each seed's norm."""
    norms = torch.stack([torch.stack([torch.linalg.vector_norm(p.grad[s]) for p in parameters])
                         for s in range(seeds)])
    total = torch.stack([torch.linalg.vector_norm(norms[s]) for s in range(seeds)])
    if max_norm is not None:
        coefficient = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        for p in parameters:
            p.grad.mul_(coefficient.view(seeds, *([1] * (p.dim() - 1))))
    return total.tolist()
