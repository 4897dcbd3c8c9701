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

Each seed can write its own run folder (run_dirs) as hydralib.train writes a run_dir: its log, checkpoints in
train's format (a group resumes from its seeds' checkpoints, and a separate run from a grouped one's), its
adapter files; with stop_at it stops as an interruption would. The run store (RunStore(..., seed_groups=True))
trains the pending runs of a method that differ only in their seeds this way, through
hydralib.pipeline.execute_seed_group, and stores each seed's result as its own run.

Supported: one process, and what group_refusal allows (LoRA, Split and HydraLoRA with heads = 1 or a learned
per-token router reading x without top-k; no dropout, gradient accumulation, compile or balance loss; fp32 or
bf16). In bf16 the stacked products round differently from separate runs: results agree to bf16 rounding, not
bit for bit (tests/test_seed_groups.py states by how much).
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from pathlib import Path

import torch
from torch import nn

from .config import AdapterConfig
from .data.formatting import collate, encode_row
from .inject import adapter_config_of, adapter_layers, frozen_linear_weights_in, router_statistics
from .layers import AdapterLayer
from .train import (CHECKPOINT_NAME, METRICS_NAME, TrainConfig, TrainResult, _component_names, _load_checkpoint,
                    _pad_to_multiple, _response_tokens, _save_checkpoint, _save_weights, batch_indices,
                    inputs_fingerprint, load_checkpoint, make_optimizer, make_scheduler, resolve_device,
                    resolve_mixed_precision, seed_everything, token_losses, training_in)

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
        self.record = False  # keep the last gates in `recorded`, (k, rows x tokens of one seed, heads), detached
        self.recorded = None

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
            if self.record:
                self.recorded = g.detach()
            if self.config.method == "split":
                z = h * g.repeat_interleave(self.config.r, dim=-1)
            else:
                z = (g.unsqueeze(-1) * h.unsqueeze(-2)).flatten(-2)
        dtype = result.dtype
        out = torch.baddbmm(result.reshape(seeds, -1, result.shape[-1]), z.to(dtype),
                            self.lora_B.transpose(1, 2).to(dtype), alpha=self.config.scaling)
        return out.view(result.shape)


def group_refusal(adapter: AdapterConfig | None, config: TrainConfig) -> str | None:
    """Why a run of this adapter and training configuration cannot train in a seed group, or None if it can.

    Refused: full fine-tuning (no adapters to stack); dropout (and so head dropout) and the loop implementation;
    with heads > 1, any gate but a learned per-token router reading x without top-k: a task or cluster gate takes
    each row's head from the batch (inject.batch_routing), which the stacked layer does not read, and a uniform
    gate, a sequence-level router, a router on Ax, top-k or a registered router are not stacked; gradient
    accumulation, compile, a balance loss (its graph runs through every seed's gates), and fp16 (a gradient scaler
    per seed)."""
    if adapter is None:
        return "full fine-tuning trains every weight: no adapters to stack"
    if adapter.dropout > 0 or adapter.implementation != "fused":
        return (f"dropout={adapter.dropout}, implementation={adapter.implementation!r}: a seed group stacks the fused "
                "implementation without dropout")
    if adapter.heads > 1 and adapter.gate in ("task", "cluster"):
        return f"gate={adapter.gate!r} reads each row's head from the batch, which a seed group does not route"
    if adapter.heads > 1 and (adapter.gate != "learned" or adapter.router_input != "x"
                              or adapter.router_level != "token" or adapter.top_k is not None):
        return (f"gate={adapter.gate!r}, router_input={adapter.router_input!r}, router_level="
                f"{adapter.router_level!r}, top_k={adapter.top_k}: with heads > 1 a seed group stacks a learned "
                "per-token router reading x, without top-k")
    if config.grad_accum != 1 or config.compile or config.balance_weight:
        return (f"grad_accum={config.grad_accum}, compile={config.compile}, balance_weight={config.balance_weight}: "
                "a seed group trains with grad_accum=1, compile=False and balance_weight=0")
    if resolve_mixed_precision(config.mixed_precision, config.device) == "fp16":
        return "mixed_precision fp16: a seed group trains in fp32 or bf16 (fp16 needs a gradient scaler per seed)"
    return None


def check_seed_group(models: list[nn.Module], configs: list[TrainConfig]) -> None:
    """Refuses a group that cannot train as one stacked model, naming what differs or is not supported."""
    if len(models) != len(configs) or not models:
        raise ValueError(f"need one TrainConfig per model, got {len(models)} models and {len(configs)} configs")
    adapter = adapter_config_of(models[0])
    refusal = group_refusal(adapter, configs[0])
    if refusal is not None:
        raise ValueError(f"cannot train as a seed group: {refusal}")
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
                     configs: list[TrainConfig], run_dirs: list | None = None, resume: bool = True,
                     stop_at: int | None = None, run_records: list[dict] | None = None) -> list[TrainResult]:
    """Train k adapted models of one method (the same base and adapter configuration, each with its own seed's
    adapters; TrainConfigs equal but for the seed) as one stacked model; one TrainResult per model, in order, each
    with its model trained as hydralib.train would have trained it alone (see the module docstring), on the device
    hydralib.train would use.

    rows: the training rows, shared, or one list per seed. Metrics per step and seed: loss, lr, grad_norm,
    component_loss and, with a learned router, gate_entropy, balance_loss and head_usage, as hydralib.train logs
    them; tokens_per_s is the whole group's (all seeds' tokens over the step's seconds), and a TrainResult's
    seconds are the seed's share of the group's time (the group's over k).

    run_dirs: one folder per seed, each written as hydralib.train writes its run_dir (config.json, with the group
    recorded under "seed_group"; metrics.jsonl; a checkpoint every checkpoint_every steps and at the last step;
    the adapter folder when finished), held against other trainings as train holds it.
    resume: continue from the seeds' checkpoints when every seed has one, at the same step; when only some have
    one, or at different steps, every seed starts over (its checkpoint and log removed). A seed's checkpoint is
    the one a separate hydralib.train run writes: either can resume the other's.
    stop_at: stop after this step (as an interruption would), leaving a checkpoint per seed.
    run_records: extra description per seed for its config.json, as train's run_record."""
    check_seed_group(models, configs)
    seeds = len(models)
    per_seed_rows = rows if rows and isinstance(rows[0], list) else [rows] * seeds
    if len(per_seed_rows) != seeds or not all(per_seed_rows):
        raise ValueError(f"rows: one non-empty list shared, or one per seed ({seeds}); got {len(per_seed_rows)}")
    if run_dirs is not None and len(run_dirs) != seeds or run_records is not None and len(run_records) != seeds:
        raise ValueError(f"run_dirs and run_records: one per seed ({seeds}), got {run_dirs!r} and {run_records!r}")
    if run_dirs is None:
        return _train_group(models, tokenizer, per_seed_rows, configs, None, resume, stop_at, run_records)
    run_dirs = [Path(d) for d in run_dirs]
    with contextlib.ExitStack() as held:
        for run_dir in run_dirs:
            held.enter_context(training_in(run_dir))
        return _train_group(models, tokenizer, per_seed_rows, configs, run_dirs, resume, stop_at, run_records)


def _train_group(models, tokenizer, per_seed_rows, configs, run_dirs, resume, stop_at, run_records):
    seeds, config = len(models), configs[0]
    precision = resolve_mixed_precision(config.mixed_precision, config.device)
    device = resolve_device(config.device)
    seed_everything(config.seed)
    encoded = [[encode_row(r, tokenizer, config.template, config.max_length) for r in seed_rows]
               for seed_rows in per_seed_rows]
    names = [_component_names(seed_rows) for seed_rows in per_seed_rows]
    for model in models:
        model.to(device)
    fingerprints = [inputs_fingerprint(m, e) for m, e in zip(models, encoded)] if run_dirs else None
    start_step, metrics, optimizer_states, scheduler_state = 0, [[] for _ in range(seeds)], None, None
    if run_dirs and resume:
        start_step, metrics, optimizer_states, scheduler_state = _resume_seeds(models, configs, run_dirs,
                                                                               fingerprints)
    stacked = stack_seeds(models).to(device)
    trainable = [p for p in stacked.parameters() if p.requires_grad]
    optimizer = make_optimizer(trainable, config)
    scheduler = make_scheduler(optimizer, config)
    if optimizer_states is not None:
        optimizer.load_state_dict(stacked_optimizer_state(optimizer_states))
        scheduler.load_state_dict(scheduler_state)
    if run_dirs:
        for s, run_dir in enumerate(run_dirs):
            run_dir.mkdir(parents=True, exist_ok=True)
            record = {"train": configs[s].to_dict(), **(run_records[s] if run_records else {}),
                      "adapter": adapter_config_of(models[s]).to_dict(), "processes": 1,
                      "seed_group": {"seeds": [c.seed for c in configs], "run_dirs": [d.name for d in run_dirs]}}
            (run_dir / "config.json").write_text(json.dumps(record, indent=2, default=str))
    layers = {name: m for name, m in stacked.named_modules() if isinstance(m, StackedAdapterLayer)}
    per_seed_layers = [adapter_layers(model) for model in models]
    routed = adapter_config_of(models[0]).has_router
    for layer in layers.values():
        layer.record = routed  # as hydralib.train records the gates of a learned router, for its statistics
    frozen_in_bf16 = precision == "bf16" and device.type == "cpu"
    last = config.steps if stop_at is None else min(stop_at, config.steps)
    b = config.batch_size
    stacked.train()
    started = time.perf_counter()
    with frozen_linear_weights_in(stacked, torch.bfloat16) if frozen_in_bf16 else contextlib.nullcontext():
        for step in range(start_step, last):
            tick = time.perf_counter()
            ids = [batch_indices(len(encoded[s]), step * b, b, configs[s].seed) for s in range(seeds)]
            tokens = [sum(_response_tokens(encoded[s][i]) for i in ids[s]) for s in range(seeds)]
            if min(tokens) == 0:
                raise ValueError(f"step {step + 1}: a seed's batch has no response tokens; max_length="
                                 f"{config.max_length} leaves no room for the answers")
            # each seed's rows padded as its separate batch would be: the loss sums run over the same shapes
            widths = [_padded_width(max(len(encoded[s][i]["input_ids"]) for i in ids[s]), config.pad_to_multiple)
                      for s in range(seeds)]
            batch = collate([encoded[s][i] for s in range(seeds) for i in ids[s]], tokenizer.pad_token_id)
            batch = _pad_to_multiple(batch, config.pad_to_multiple, tokenizer.pad_token_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                losses, mask = token_losses(stacked, batch)
            own = [(slice(s * b, (s + 1) * b), slice(0, widths[s] - 1)) for s in range(seeds)]
            seed_losses = [losses[own[s]].sum() / tokens[s] for s in range(seeds)]
            torch.stack(seed_losses).sum().backward()  # seed s's adapters see only seed s's rows
            grad_norms = clip_per_seed(trainable, seeds, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            seconds = time.perf_counter() - tick
            group_tokens = int(batch["attention_mask"].sum())
            for s in range(seeds):
                loss = losses[own[s]].detach()
                mean_loss = loss.sum().item() / tokens[s]
                if not (math.isfinite(mean_loss) and math.isfinite(grad_norms[s])):
                    raise FloatingPointError(f"seed {configs[s].seed}: loss {mean_loss}, gradient norm {grad_norms[s]} "
                                             f"at step {step + 1}: training diverged; try a lower lr (now {config.lr})")
                component = batch["component"][own[s][0]].cpu()
                comp_loss = torch.zeros(len(names[s])).index_add_(0, component, loss.sum(1).float().cpu())
                comp_tokens = torch.zeros(len(names[s])).index_add_(0, component, mask[own[s]].sum(1).float().cpu())
                record = {"step": step + 1, "loss": mean_loss, "lr": scheduler.get_last_lr()[0],
                          "tokens_per_s": group_tokens / seconds, "grad_norm": grad_norms[s],
                          "component_loss": {names[s][c]: (comp_loss[c] / comp_tokens[c]).item()
                                             for c in range(len(names[s])) if comp_tokens[c] > 0}}
                if routed:
                    record.update(_gate_statistics(layers, per_seed_layers[s], models[s], s,
                                                   batch["attention_mask"][own[s][0], :widths[s]]))
                metrics[s].append(record)
                if run_dirs:
                    with open(run_dirs[s] / METRICS_NAME, "a") as f:
                        f.write(json.dumps(record) + "\n")
            if run_dirs:
                due = [s for s in range(seeds) if step + 1 == last or (
                    configs[s].checkpoint_every and (step + 1) % configs[s].checkpoint_every == 0)]
                if due:
                    unstack_seeds(stacked, models)
                for s in due:
                    _save_checkpoint(run_dirs[s], models[s], seed_optimizer(models[s], optimizer, s, config),
                                     scheduler, step + 1, configs[s], fingerprints[s])
    seconds = time.perf_counter() - started
    unstack_seeds(stacked, models)
    for s, model in enumerate(models):
        if run_dirs and last == config.steps:
            _save_weights(model, run_dirs[s])
        model.eval()
    return [TrainResult(model, metrics[s], run_dirs[s] if run_dirs else None, seconds / seeds)
            for s, model in enumerate(models)]


def _padded_width(longest: int, multiple: int) -> int:
    """The length hydralib.train's batch of rows whose longest has `longest` tokens is padded to."""
    return longest + (-longest % multiple)


def _gate_statistics(layers: dict, seed_layers: dict, model: nn.Module, s: int, attention_mask) -> dict:
    """Seed s's gate statistics of the last step, as hydralib.train logs them (inject.router_statistics of its
    recorded gates, read from the stacked layers' gates for the seed's rows)."""
    rows, width = attention_mask.shape
    for name, layer in seed_layers.items():
        gates = layers[name].recorded[s]
        layer.routing.recorded = gates.view(rows, -1, gates.shape[-1])[:, :width]
    stats = router_statistics(model, attention_mask)
    for layer in seed_layers.values():
        layer.routing.recorded = None
    return {"gate_entropy": stats["entropy"], "balance_loss": stats["balance_loss"].item(),
            "head_usage": stats["usage"].tolist()}


def _resume_seeds(models, configs, run_dirs, fingerprints):
    """(start step, each seed's metrics, each seed's optimizer state, the scheduler state) from the seeds'
    checkpoints, loaded into the models; (0, empty metrics, None, None) when they cannot resume together (the
    checkpoints and logs of such a start over are removed)."""
    paths = [run_dir / CHECKPOINT_NAME for run_dir in run_dirs]
    steps = [load_checkpoint(path)["step"] if path.exists() else None for path in paths]
    if None in steps or len(set(steps)) > 1:
        for run_dir in run_dirs:
            (run_dir / CHECKPOINT_NAME).unlink(missing_ok=True)
            (run_dir / METRICS_NAME).unlink(missing_ok=True)
        return 0, [[] for _ in models], None, None
    metrics, optimizer_states = [], []
    for model, config, run_dir, fingerprint in zip(models, configs, run_dirs, fingerprints):
        optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], config)
        scheduler = make_scheduler(optimizer, config)
        step, seed_metrics = _load_checkpoint(run_dir, model, optimizer, scheduler, config, fingerprint)
        metrics.append(seed_metrics)
        optimizer_states.append(optimizer.state_dict())
    return steps[0], metrics, optimizer_states, scheduler.state_dict()


def seed_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer, s: int, config: TrainConfig):
    """Seed s's AdamW, over its own model's trainable tensors, holding its slice of the stacked optimizer's state:
    the optimizer a separate hydralib.train run of the seed would hold (what its checkpoint stores)."""
    own = make_optimizer([p for p in model.parameters() if p.requires_grad], config)
    state = optimizer.state_dict()
    stacked = [p for group in optimizer.param_groups for p in group["params"]]
    own.load_state_dict({"param_groups": state["param_groups"], "state": {
        i: {name: value[s] if value.shape == stacked[i].shape else value for name, value in entry.items()}
        for i, entry in state["state"].items()}})
    return own


def stacked_optimizer_state(states: list[dict]) -> dict:
    """The stacked optimizer's state_dict from each seed's (seed_optimizer's inverse): per-tensor moments stacked
    over seeds, the step counts (equal: the seeds stopped at one step) taken once."""
    first = states[0]
    return {"param_groups": first["param_groups"], "state": {
        i: {name: torch.stack([st["state"][i][name] for st in states]) if value.dim() else value
            for name, value in entry.items()}
        for i, entry in first["state"].items()}}


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
