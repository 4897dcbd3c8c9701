"""Attaching adapters to a model, routing them, merging and counting them (files: hydralib.adapter_files)."""
from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import AdapterConfig
from .data.formatting import collate, encode_row, prompt_mask
from .layers import ADAPTABLE_TYPES, ADAPTER_TENSORS, RECORD_MODES, AdapterLayer, linear_features


def adapter_layers(model: nn.Module) -> dict[str, AdapterLayer]:
    """Every adapter layer of the model, by module name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, AdapterLayer)}


def linear_module_names(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, ADAPTABLE_TYPES)]


def find_targets(model: nn.Module, targets) -> list[str]:
    """Names of the modules `targets` selects; refuses targets that select nothing or a non-linear module."""
    modules = dict(model.named_modules())
    if targets == "all-linear":
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        names = [n for n in linear_module_names(model) if modules[n] is not head]
        if not names:
            raise ValueError("targets='all-linear' found no nn.Linear or Conv1D layer (other than the LM head)")
        return names
    if isinstance(targets, str):
        pattern = re.compile(targets)
        selectors = {targets: lambda name: pattern.fullmatch(name) is not None}
    else:
        selectors = {t: (lambda name, t=t: name == t or name.endswith("." + t)) for t in targets}
    chosen = []
    for target, matches in selectors.items():
        hits = [n for n in modules if n and matches(n)]
        if not hits:
            raise ValueError(f"target {target!r} matches no module. {_describe_linear_modules(model)}")
        not_linear = [n for n in hits if not isinstance(modules[n], ADAPTABLE_TYPES)]
        if not_linear:
            raise ValueError(
                f"target {target!r} matches {not_linear[0]!r} ({type(modules[not_linear[0]]).__name__}), "
                f"which is not a linear layer. {_describe_linear_modules(model)}")
        chosen += [n for n in hits if n not in chosen]
    return chosen


def _describe_linear_modules(model: nn.Module) -> str:
    names = linear_module_names(model)
    patterns = list(dict.fromkeys(re.sub(r"\.\d+\.", ".*.", n) for n in names))
    return f"The model's linear modules ({len(names)}) are: {', '.join(patterns)}"


def add_adapters(model: nn.Module, config: AdapterConfig, seed: int | None = None) -> nn.Module:
    """Freeze every base parameter and wrap each target in an AdapterLayer; returns the same model.

    seed: draw the initial A and router weights from this seed (without touching the global random
    state), so they do not depend on what ran before; None draws from the global state."""
    if adapter_layers(model):
        raise ValueError("this model already has adapters; load_adapters or build a fresh model")
    names = find_targets(model, config.targets)
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        for name in names:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, AdapterLayer(getattr(parent, child), config))
    return model


@contextlib.contextmanager
def frozen_linear_weights_in(model: nn.Module, dtype: torch.dtype):
    """Store the frozen weights (and biases) of the model's linear layers in `dtype` for the block, and put the
    originals back, bit for bit, when it ends. Under autocast to `dtype` a linear product casts a weight that does
    not train at every call (autocast caches the casts of trained weights only): stored in `dtype`, nothing is
    cast, and the product is the same, since autocast rounds the weight to `dtype` as `.to(dtype)` does. A weight
    that a non-linear module shares (a tied embedding) keeps its dtype: its other uses would change."""
    shared = {id(p) for m in model.modules() if not isinstance(m, ADAPTABLE_TYPES) for p in m.parameters(recurse=False)}
    originals = []
    for module in model.modules():
        if isinstance(module, ADAPTABLE_TYPES):
            for p in module.parameters(recurse=False):
                if not p.requires_grad and p.is_floating_point() and p.dtype != dtype and id(p) not in shared:
                    originals.append((p, p.data))
                    p.data = p.data.to(dtype)
    try:
        yield model
    finally:
        for p, data in originals:
            p.data = data


def adapter_config_of(model: nn.Module) -> AdapterConfig | None:
    """The AdapterConfig the model's adapter layers were built with (read from the layers), None without adapters."""
    layer = next(iter(adapter_layers(model).values()), None)
    return None if layer is None else layer.config


def get_adapter_config(model: nn.Module) -> AdapterConfig:
    config = adapter_config_of(model)
    if config is None:
        raise ValueError("this model has no hydralib adapters; call add_adapters(model, config) first")
    return config


@contextlib.contextmanager
def routing(model: nn.Module, routes=None, gate=None, prompt_mask=None, hold: bool = False, record: str = "off"):
    """Route every adapter layer from outside for the duration of the block (see layers.RoutingState).

    routes:      (batch,) each sample's head (its component or k-means cluster), for gate='task' or 'cluster'.
    gate:        fixed gate weights, (heads,) for all samples or (batch, heads) per sample; overrides
                 the configured gate (a head index i is accepted too, meaning one-hot on head i).
    prompt_mask: (batch, tokens), 1 on prompt tokens: what a sequence-level router pools.
    hold:        a sequence-level router keeps the gate of its first call (the prompt) for later calls
                 (the generated tokens); released when the block ends.
    record:      "detached" keeps each layer's last gate in `layer.routing.recorded` (for routing analyses);
                 "graph" keeps it attached to the autograd graph (for a training loss on the gates).
    """
    layers = list(adapter_layers(model).values())
    if not layers:
        raise ValueError("this model has no hydralib adapters to route")
    heads = layers[0].heads
    if record not in RECORD_MODES:
        raise ValueError(f"record must be one of {', '.join(RECORD_MODES)}, got record={record!r}")
    if routes is not None:
        routes = torch.as_tensor(routes, dtype=torch.long).flatten()
    if isinstance(gate, int):
        if not 0 <= gate < heads:
            raise ValueError(f"gate index must lie in 0..{heads - 1}, got {gate}")
        gate = torch.nn.functional.one_hot(torch.tensor(gate), heads).float()
    elif gate is not None:
        gate = torch.as_tensor(gate, dtype=torch.float32)
        if gate.shape[-1] != heads or gate.dim() > 2:
            raise ValueError(f"gate must have shape (heads,) or (batch, heads) with heads={heads}, got {tuple(gate.shape)}")
    # Only what this block gives is set, so an inner block (e.g. evaluation's) keeps an outer one's gate.
    given = {"routes": routes, "fixed_gate": gate, "prompt_mask": prompt_mask,
             "hold": hold or None, "record": None if record == "off" else record}
    given = {name: value for name, value in given.items() if value is not None}
    names = (*given, "held")
    saved = [tuple(getattr(layer.routing, n) for n in names) for layer in layers]
    try:
        for layer in layers:
            for name, value in given.items():
                setattr(layer.routing, name, value)
            layer.routing.held = None
        yield model
    finally:
        for layer, previous in zip(layers, saved):
            for name, value in zip(names, previous):
                setattr(layer.routing, name, value)


def batch_routing(model: nn.Module, batch: dict, hold: bool = False, record: str = "off"):
    """The one path by which a batch (data.formatting.collate's) tells the adapters how to route it, for the block:
    its "route" ids (each sample's component or cluster) for a task or cluster gate, its prompt mask (and hold,
    for generation) for a sequence-level router, and nothing the adapters do not need; record as in routing."""
    config = adapter_config_of(model)
    given = {"record": record} if record != "off" else {}
    if config is not None and config.gate in ("task", "cluster"):
        given["routes"] = batch["route"]
    elif config is not None and config.router_level == "sequence":
        given.update(prompt_mask=prompt_mask(batch), hold=hold)
    return routing(model, **given) if given else contextlib.nullcontext()


# Model families whose logits are the LM head applied to the last hidden state, nothing more (no soft-capping or
# scaling): for them batch_logits applies the head to the asked positions only.
PLAIN_HEAD_MODELS = ("llama", "mistral", "qwen2")


def batch_logits(model: nn.Module, batch: dict, positions: torch.Tensor | None = None,
                 record: str = "off") -> torch.Tensor:
    """The model's logits on a collated batch, its adapters routed as the batch says (batch_routing): (batch,
    tokens, vocabulary); with `positions`, a (batch, tokens - 1) mask, only the logits predicting the next token
    at those positions, in row order. Where the model is a plain decoder plus a linear head, the head (a 576 x
    49,152 product for SmolLM2) then runs on those positions only: an MMLU row has 2 response tokens out of ~80."""
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with batch_routing(model, batch, record=record):
        if positions is None:
            return model(**inputs).logits
        head = model.get_output_embeddings()
        if getattr(model.config, "model_type", None) in PLAIN_HEAD_MODELS and type(head) is torch.nn.Linear:
            return head(model.get_decoder()(**inputs).last_hidden_state[:, :-1][positions])
        return model(**inputs).logits[:, :-1][positions]


# --- merging ------------------------------------------------------------------------------------
def merge_gates(model: nn.Module, gate=None) -> dict[str, torch.Tensor]:
    """Each adapter layer's fixed gate vector (heads,) for merging or exporting under `gate` (see
    merge_adapters), every layer checked before any is used: refuses a missing, unknown, misshapen or
    non-finite gate, naming the layer."""
    layers = adapter_layers(model)
    get_adapter_config(model)
    if isinstance(gate, dict):
        missing, unknown = sorted(set(layers) - set(gate)), sorted(set(gate) - set(layers))
        if missing:
            raise ValueError(f"gate dict has no entry for adapter layers {missing[:3]} ({len(missing)} in all)")
        if unknown:
            raise ValueError(f"gate dict names modules that have no adapter: {unknown[:3]} ({len(unknown)} in all)")
    gates = {}
    for name, layer in layers.items():
        given = gate[name] if isinstance(gate, dict) else gate
        try:
            g = layer.resolve_merge_gate(given)
        except ValueError as err:
            raise ValueError(f"{name}: {err}" if isinstance(gate, dict) else str(err)) from None
        except (TypeError, RuntimeError) as err:
            raise ValueError(f"{name}: gate must be a head index, a vector of {layer.heads} weights or "
                             f"{{layer name: either}}, got {gate!r:.80} ({err})") from None
        if not g.is_meta and not torch.isfinite(g).all():
            raise ValueError(f"{name}: gate has non-finite weights {g.tolist()}")
        gates[name] = g
    return gates


def merge_adapters(model: nn.Module, gate=None) -> nn.Module:
    """Fold the adapters into the base weights, so inference costs what the base model costs.

    Exact for lora, for a uniform gate, and for split/hydra under a fixed gate: `gate` is a head
    index (e.g. a task id), a weight vector of length heads, or {layer name: either} (see mean_gates). A learned router routes every token
    by its input, so it merges only under a gate you give (e.g. the mean gate over a data set);
    the merged model then differs from the routed one by exactly that approximation.

    All-or-nothing: every gate and every layer's update is computed and checked (finite, no layer merged
    already) before any base weight changes; a failure while adding undoes the layers already merged.
    """
    gates = merge_gates(model, gate)
    layers = adapter_layers(model)
    merged = [name for name, layer in layers.items() if layer.merged]
    if merged:
        raise RuntimeError(f"adapters are already merged ({merged[0]}, {len(merged)} layers); call unmerge_adapters first")
    with torch.no_grad():
        deltas = {name: layer.delta_weight(gates[name]) for name, layer in layers.items()}
        for name, delta in deltas.items():
            if not delta.is_meta and not torch.isfinite(delta).all():
                raise ValueError(f"{name}: the merged update has non-finite values (NaN or inf in the adapter "
                                 "weights or the gate); nothing was merged")
        done = []
        try:
            for name, layer in layers.items():
                layer._add_to_base(deltas[name])
                layer.merged_delta = deltas[name]
                done.append(layer)
        except BaseException:
            for layer in done:
                layer.unmerge()
            raise
    return model


def recorded_gates(layer: AdapterLayer, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A layer's last recorded gate as (batch, positions, heads) float, and each position's weight (batch,
    positions): the masked tokens for a per-token router, one position per sample for a per-sample or fixed gate.
    The one place that reads gates recorded by `routing(model, record=...)`."""
    g = layer.routing.recorded
    if g is None:
        raise RuntimeError("no recorded gates: run the model inside `with hydralib.routing(model, record='detached'):`")
    batch = attention_mask.shape[0]
    g = g.float().expand(batch, 1, -1) if g.dim() == 1 else g.float().reshape(batch, -1, layer.heads)
    weights = attention_mask.to(g.device).float() if g.shape[1] > 1 else torch.ones(batch, 1, device=g.device)
    return g, weights


def prompt_gates(model: nn.Module, prompts: torch.Tensor) -> torch.Tensor:
    """(batch, layers, heads): each row's gate recorded by the last forward (see recorded_gates), averaged over its
    prompt tokens (`prompts`, 1 on them), at every adapter layer in order."""
    per_layer = []
    for layer in adapter_layers(model).values():
        g, weights = recorded_gates(layer, prompts)
        per_layer.append(((g * weights.unsqueeze(-1)).sum(1) / weights.sum(1, keepdim=True)).cpu())
    return torch.stack(per_layer, 1)


@torch.no_grad()
def mean_gates(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> dict:
    """Each adapter layer's gate averaged over the real (non-padding) tokens of a batch: {layer name: (heads,)}.
    The gate to merge a learned router under, at the cost of its per-token choices."""
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    with routing(model, prompt_mask=attention_mask, record="detached"):
        model(input_ids=input_ids, attention_mask=attention_mask)
        out = {}
        for name, layer in adapter_layers(model).items():
            g, weights = recorded_gates(layer, attention_mask)
            out[name] = ((g * weights.unsqueeze(-1)).sum((0, 1)) / weights.sum()).cpu()
            layer.routing.recorded = None
    return out


@torch.no_grad()
def warm_start_routers(model: nn.Module, tokenizer, rows: list[dict], template: str = "compact",
                       max_length: int = 64, batch_size: int = 32, sharpness: float = 4.0) -> nn.Module:
    """Point every learned router at the rows' routes (e.g. k-means clusters): router row c becomes the mean
    router input over the prompt tokens of route c's rows, minus the mean over routes, scaled so that the
    logits of those means spread with standard deviation `sharpness`. Training then starts from routing
    by cluster and may move away from it."""
    layers = {name: layer for name, layer in adapter_layers(model).items() if layer.router is not None}
    if not layers:
        raise ValueError("this model has no learned routers to warm-start (gate='learned' with heads > 1)")
    heads = next(iter(layers.values())).heads
    routes = sorted({int(r.get("route", -1)) for r in rows})
    if routes[0] < 0 or routes[-1] >= heads:
        raise ValueError(f"every row needs a 'route' in 0..{heads - 1} (e.g. from clustering.assign_routes), got {routes}")
    sums = {name: torch.zeros(heads, layer.router.shape[1], dtype=torch.float64) for name, layer in layers.items()}
    counts = torch.zeros(heads, dtype=torch.float64)
    pooled: dict[str, torch.Tensor] = {}

    def capture(name):
        def hook(layer, args):
            x = args[0].to(layer.lora_A.dtype)
            source = x if layer.config.router_input == "x" else x @ layer.lora_A.T
            pooled[name] = source
        return hook

    handles = [layer.register_forward_pre_hook(capture(name)) for name, layer in layers.items()]
    device = next(model.parameters()).device
    try:
        for start in range(0, len(rows), batch_size):
            batch = collate([encode_row(r, tokenizer, template, max_length) for r in rows[start:start + batch_size]],
                            tokenizer.pad_token_id)
            mask = prompt_mask(batch).to(device).double()
            batch_logits(model, {k: v.to(device) for k, v in batch.items()})
            one_hot = F.one_hot(batch["route"], heads).double()
            counts += one_hot.sum(0)
            for name in layers:
                means = (pooled[name].double() * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
                sums[name] += one_hot.T.to(device) @ means
    finally:
        for handle in handles:
            handle.remove()
    for name, layer in layers.items():
        centroids = sums[name] / counts.clamp_min(1).unsqueeze(-1)
        weight = centroids - centroids[counts > 0].mean(0)
        spread = (centroids @ weight.T).std().clamp_min(1e-12)
        layer.router.copy_((weight * sharpness / spread).to(layer.router.dtype))
    return model


def router_statistics(model: nn.Module, attention_mask: torch.Tensor) -> dict:
    """What the gates recorded by the last forward (inside `routing(model, record=...)`) did, over real tokens:

    balance_loss: the Switch Transformer load-balancing loss N * sum_i f_i P_i (f_i: share of tokens whose
                  largest gate is head i, P_i: mean gate of head i), averaged over layers; 1 when balanced,
                  N when one head takes all; differentiable if the gates were recorded with record="graph".
    entropy:      mean gate entropy in nats (0: one head per token, log N: uniform).
    usage:        (heads,) mean gate per head, averaged over layers."""
    losses, entropies, usages = [], [], []
    for layer in adapter_layers(model).values():
        g, weights = recorded_gates(layer, attention_mask)
        weights = weights.unsqueeze(-1) / weights.sum()
        mean_gate = (g * weights).sum((0, 1))
        top_share = (F.one_hot(g.detach().argmax(-1), layer.heads).float() * weights).sum((0, 1))
        losses.append(layer.heads * (top_share * mean_gate).sum())
        entropies.append(-(g.detach() * g.detach().clamp_min(1e-12).log()).sum(-1, keepdim=True).mul(weights).sum())
        usages.append(mean_gate.detach())
    return {"balance_loss": torch.stack(losses).mean(), "entropy": torch.stack(entropies).mean().item(),
            "usage": torch.stack(usages).mean(0).cpu()}


@torch.no_grad()
def randomize_b(model: nn.Module, seed: int = 1, scale: float = 0.1) -> nn.Module:
    """Give every B a random value: B starts at zero, so an untrained adapter changes nothing, and merging,
    saving or comparing updates shows nothing until B moves."""
    generator = torch.Generator().manual_seed(seed)
    for layer in adapter_layers(model).values():
        layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=generator) * scale)
    return model


def movement_from_init(model: nn.Module, initial: dict[str, dict[str, torch.Tensor]]) -> dict[str, dict]:
    """How far each layer's A and B moved from their initial values, for Observation II and its critics.

    initial: {layer name: {"A": tensor, "B": tensor}} as anatomy.adapter_tensors returns it, taken before
    training (or of a fresh add_adapters(base, config, seed=the run's seed), which draws the same start).
    Returns {layer: {"A": ||A - A0|| / ||A0||, "B": ..., "B_from_zero": bool}} (Frobenius norms): B's change
    is relative too where B0 is not zero (b_init_std > 0); where B started at zero (LoRA's init) no relative
    change exists and "B" is ||B|| itself, with "B_from_zero" True saying so."""
    layers = adapter_layers(model)
    if not layers:
        raise ValueError("this model has no hydralib adapters; call add_adapters or load_adapters first")
    if set(initial) != set(layers):
        raise ValueError(f"initial tensors must cover the model's adapter layers exactly; missing "
                         f"{sorted(set(layers) - set(initial))[:3]}, extra {sorted(set(initial) - set(layers))[:3]}")
    moved = {}
    for name, layer in layers.items():
        entry = {}
        for key, now in (("A", layer.lora_A), ("B", layer.lora_B)):
            start = initial[name][key].to(device=now.device, dtype=torch.float32)
            now = now.detach().float()
            if start.shape != now.shape:
                raise ValueError(f"{name}: initial {key} has shape {tuple(start.shape)}, the adapter {tuple(now.shape)}")
            change, size = float(torch.linalg.norm(now - start)), float(torch.linalg.norm(start))
            entry[key] = change / size if size > 0 else change
            if key == "B":
                entry["B_from_zero"] = size == 0
        moved[name] = entry
    return moved


def unmerge_adapters(model: nn.Module) -> nn.Module:
    """Subtract what merge_adapters added, restoring the base weights to within float error."""
    for layer in adapter_layers(model).values():
        layer.unmerge()
    return model


# --- counting -----------------------------------------------------------------------------------
@dataclass
class ParameterCount:
    """Exact counts and the paper's convention.

    The paper's percentages exclude routers and count (#A + #B) / 2 times the size of one rank-r
    LoRA on the same targets (so Hydra r=8 with 3 heads is 2 x 0.062 % = 0.124 % on LLaMA-2-7B).
    Its tables multiply the LoRA percentage after rounding it to 3 decimals (5.5 x 0.062 = 0.341,
    where the unrounded product is 0.342): `paper_table_percent` does the same."""

    base: int
    trainable: int
    adapter: int
    router: int
    one_lora: int
    lora_multiple: float

    @property
    def paper(self) -> float:
        return self.lora_multiple * self.one_lora

    @property
    def trainable_percent(self) -> float:
        return 100.0 * self.trainable / self.base

    @property
    def paper_percent(self) -> float:
        return 100.0 * self.paper / self.base

    @property
    def paper_table_percent(self) -> float:
        return self.lora_multiple * round(100.0 * self.one_lora / self.base, 3)

    def __str__(self) -> str:
        return (f"trainable {self.trainable:,} ({self.trainable_percent:.3f} % of {self.base:,} base; "
                f"adapters {self.adapter:,} + routers {self.router:,}); "
                f"paper's convention {self.paper:,.0f} ({self.paper_percent:.3f} %)")


def count_parameters(model: nn.Module) -> ParameterCount:
    """Trainable parameters exactly (routers included) and in the paper's convention.

    Without adapters (full fine-tuning) every trainable weight counts as adapter, and the
    paper's convention is the same number."""
    layers, config = adapter_layers(model), adapter_config_of(model)
    adapter_ids = {id(p) for l in layers.values() for p in l.adapter_tensors().values()}
    base = sum(p.numel() for p in model.parameters() if id(p) not in adapter_ids)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if not layers:
        return ParameterCount(base, trainable, trainable, 0, trainable, 1.0)
    adapter = sum(l.lora_A.numel() + l.lora_B.numel() for l in layers.values())
    router = sum(p.numel() for l in layers.values() for name, p in l.adapter_tensors().items()
                 if name not in ADAPTER_TENSORS)
    one_lora = sum(config.r * sum(linear_features(l.base)) for l in layers.values())
    return ParameterCount(base, trainable, adapter, router, one_lora, (config.num_a + config.heads) / 2)
