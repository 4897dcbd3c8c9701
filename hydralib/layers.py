"""The one adapter layer: LoRA, LoRA-Split and HydraLoRA are settings of it.

    y = W0 x + s * sum_i g_i B_i A_(i) drop(x),   s = alpha / r

All heads are computed with two matrix products and no Python loop:

    h = A drop(x)                                   (..., a*r), a = 1 (lora, hydra) or N (split)
    z = gate-weighted copies of h                   (..., N*r)
    y = W0 x + s * z @ [B_1 | ... | B_N].T

`loop_update` follows the official per-head algorithm (A recomputed and dropout drawn
once per head) and is kept as the reference the fused path must equal.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

from .config import LEARNED_GATES, AdapterConfig

ADAPTABLE_TYPES = (nn.Linear, Conv1D)
RECORD_MODES = ("off", "detached", "graph")
# The tensors every adapter layer has; a router adds its own (Router.shapes).
ADAPTER_TENSORS = ("lora_A", "lora_B")


class Router:
    """A learned gate: the tensors it adds to a layer (names and shapes, declared once here), their initial
    values, the logits it computes and an optional loss of its own. Saving, loading, counting, merging and
    training ask the layer (AdapterLayer.parameter_shapes, router_loss) and never name a router's tensors.

    A new router is a subclass registered under a gate name, register_router("my_gate", MyRouter()); then
    AdapterConfig(gate="my_gate") builds it (tests/test_layers.py defines one)."""

    def shapes(self, config: AdapterConfig, in_features: int) -> dict[str, tuple[int, ...]]:
        """The softmax router of the paper and the official code: W_r, (heads, in) on x or (heads, a*r) on Ax."""
        return {"router": (config.heads, in_features if config.router_input == "x" else config.num_a * config.r)}

    @torch.no_grad()
    def initialise(self, layer: "AdapterLayer") -> None:
        """Kaiming-uniform, as the official code (never zeros by default: zero B's and a uniform gate give
        every head the same gradient); router_init "zeros" is the ablation."""
        if layer.config.router_init in ("kaiming", "clusters"):
            nn.init.kaiming_uniform_(layer.router, a=math.sqrt(5))
        else:
            nn.init.zeros_(layer.router)

    def logits(self, layer: "AdapterLayer", source: torch.Tensor) -> torch.Tensor:
        return F.linear(source, layer.router)

    def loss(self, layer: "AdapterLayer", gates: torch.Tensor) -> torch.Tensor | None:
        """A training loss on this layer's gates (recorded with the graph), or None: the paper's router has none."""
        return None


ROUTERS: dict[str, Router] = {"learned": Router()}


def register_router(gate: str, router: Router) -> None:
    """Make `gate` a learned gate computed by `router` (AdapterConfig accepts it from then on)."""
    if not isinstance(router, Router):
        raise TypeError(f"a router must be a hydralib.layers.Router, got {type(router).__name__}")
    if gate in ROUTERS and type(ROUTERS[gate]) is not type(router):
        raise ValueError(f"gate {gate!r} is registered already; registered: {', '.join(ROUTERS)}")
    ROUTERS[gate] = router
    if gate not in LEARNED_GATES:
        LEARNED_GATES.append(gate)


@dataclass
class RoutingState:
    """What a layer is told from outside for a forward pass (see inject.routing), and what it keeps.

    routes:      (batch,) each sample's head, for a task or cluster gate.
    fixed_gate:  gate weights, (heads,) or (batch, heads), overriding the configured gate.
    prompt_mask: (batch, tokens), 1 on prompt tokens: what a sequence-level router pools.
    hold:        a sequence-level router keeps its first gate (the prompt's) in `held` for later calls
                 (the generated tokens).
    record:      "off"; "detached" keeps the last gate in `recorded` (routing analyses); "graph" keeps it
                 attached to the autograd graph (a training loss on the gates).
    """

    routes: torch.Tensor | None = None
    fixed_gate: torch.Tensor | None = None
    prompt_mask: torch.Tensor | None = None
    hold: bool = False
    record: str = "off"
    held: torch.Tensor | None = None
    recorded: torch.Tensor | None = None


def linear_features(module: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of an nn.Linear or a transformers Conv1D (weight stored in x out)."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, Conv1D):
        return module.weight.shape[0], module.weight.shape[1]
    raise TypeError(f"cannot adapt {type(module).__name__}; adaptable types: nn.Linear, transformers Conv1D")


class AdapterLayer(nn.Module):
    """A frozen linear layer plus a LoRA / Split / Hydra update, as set by an AdapterConfig."""

    def __init__(self, base: nn.Module, config: AdapterConfig):
        super().__init__()
        self.base = base
        self.config = config
        self.in_features, self.out_features = linear_features(base)
        # Half-precision bases keep float32 adapters (as PEFT does): AdamW loses small updates in bf16.
        dtype = torch.float32 if base.weight.dtype in (torch.float16, torch.bfloat16) else base.weight.dtype
        factory = {"device": base.weight.device, "dtype": dtype}
        self.router_kind = ROUTERS[config.gate] if config.has_router else None
        self.router = None  # the softmax router's W_r; a router may name other tensors (Router.shapes)
        for name, shape in self.parameter_shapes(config, self.in_features, self.out_features).items():
            setattr(self, name, nn.Parameter(torch.empty(shape, **factory)))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)
        if config.b_init_std > 0:  # R-LoRA: every head its own random start
            nn.init.normal_(self.lora_B, std=config.b_init_std)
        self.lora_A.requires_grad_(not config.freeze_a)
        if self.router_kind is not None:
            self.router_kind.initialise(self)
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.routing = RoutingState()
        self.merged_delta: torch.Tensor | None = None

    @staticmethod
    def parameter_shapes(config: AdapterConfig, in_features: int, out_features: int) -> dict[str, tuple[int, ...]]:
        """{tensor name: shape} of one adapted layer: A (a*r, in), B (out, heads*r) and its router's tensors.
        The one declaration that creating, saving, loading and counting adapters read."""
        shapes = {"lora_A": (config.num_a * config.r, in_features), "lora_B": (out_features, config.heads * config.r)}
        if config.has_router:
            shapes.update(ROUTERS[config.gate].shapes(config, in_features))
        return shapes

    def adapter_tensors(self) -> dict[str, nn.Parameter]:
        """{tensor name: parameter} of this layer's adapter, router included, as parameter_shapes names them."""
        return {name: getattr(self, name) for name in self.parameter_shapes(self.config, self.in_features,
                                                                           self.out_features)}

    def router_loss(self) -> torch.Tensor | None:
        """The router's own training loss on the gates recorded by the last forward (with the graph), or None."""
        if self.router_kind is None or self.routing.recorded is None:
            return None
        return self.router_kind.loss(self, self.routing.recorded)

    @property
    def heads(self) -> int:
        return self.config.heads

    @property
    def merged(self) -> bool:
        return self.merged_delta is not None

    # --- gate -------------------------------------------------------------------------------
    def gate(self, x: torch.Tensor, h: torch.Tensor | None, logits: torch.Tensor | None = None) -> torch.Tensor:
        """Gate weights, shaped to broadcast against (..., heads): per token for a learned router,
        per sample for task ids or a per-sample fixed gate. `logits`: router logits if already computed."""
        heads, dtype, state = self.heads, x.dtype if h is None else h.dtype, self.routing
        if state.fixed_gate is not None:
            weights = state.fixed_gate.to(device=x.device, dtype=dtype)
            g = weights if weights.dim() == 1 else _per_sample(weights, x.dim())
        elif self.config.gate == "uniform":
            g = torch.full((heads,), 1.0 / heads, device=x.device, dtype=dtype)
        elif self.config.gate in ("task", "cluster"):
            if state.routes is None:
                raise RuntimeError(
                    f"gate={self.config.gate!r} needs the head of every sample (its component or cluster): run the "
                    "model inside `with hydralib.routing(model, routes=ids):` (ids: LongTensor of shape (batch,))")
            ids = state.routes  # checked before moving: on the meta device (shape checks) there are no values
            if ids.min() < 0 or ids.max() >= heads:
                raise ValueError(f"routes (task or cluster heads) must lie in 0..{heads - 1}, got {ids.unique().tolist()}")
            g = _per_sample(F.one_hot(ids.to(x.device), heads).to(dtype), x.dim())
        elif state.held is not None:
            g = state.held
        else:
            source = x if self.config.router_input == "x" else h
            if self.config.router_level == "sequence":
                logits = self.router_kind.logits(self, self.pool_prompt(source)).unsqueeze(1)
            elif logits is None:
                logits = self.router_kind.logits(self, source)
            if self.config.top_k is not None and self.config.top_k < heads:
                keep = torch.zeros_like(logits, dtype=torch.bool)
                keep.scatter_(-1, logits.topk(self.config.top_k, dim=-1).indices, True)  # exactly k, ties too
                logits = logits.masked_fill(~keep, float("-inf"))
            g = torch.softmax(logits, dim=-1, dtype=torch.float32).to(dtype)
            if state.hold and self.config.router_level == "sequence":
                state.held = g  # generation: the prompt's gate holds for every new token
        if state.record != "off":
            state.recorded = g if state.record == "graph" else g.detach()
        return g

    def pool_prompt(self, states: torch.Tensor) -> torch.Tensor:
        """(batch, T, features) -> (batch, features): the mean over prompt tokens (all tokens if no mask)."""
        if states.dim() != 3:
            raise ValueError(f"router_level='sequence' needs (batch, tokens, features) inputs, got {tuple(states.shape)}")
        if self.routing.prompt_mask is None:
            if states.shape[1] == 1:
                raise RuntimeError(
                    "a sequence-level router got one token and no prompt gate to hold: generate through "
                    "hydralib.evaluate.generate, or inside `with hydralib.routing(model, prompt_mask=..., hold=True):`")
            return states.mean(1)
        mask = self.routing.prompt_mask.to(device=states.device, dtype=states.dtype)
        if mask.shape != states.shape[:2]:
            raise ValueError(f"prompt_mask has shape {tuple(mask.shape)}, the layer input {tuple(states.shape[:2])}")
        return (states * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)

    # --- forward ----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        device = x.device.type  # a device without autocast (the meta device of shape checks) is never narrowed
        autocast = torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device) and \
            self.config.implementation == "fused"
        # Under autocast, one cast of x for both products (autocast would cast it for each, and x.to(float32)
        # would first widen a bf16 input only for autocast to narrow it again); the gate still reads x as given.
        narrow = x.to(torch.get_autocast_dtype(device)) if autocast and not self.merged else x
        result = self.base(narrow)
        if self.merged:
            return result
        if self.config.implementation == "loop":
            return result + self.loop_update(x.to(self.lora_A.dtype)).to(result.dtype)
        h, logits = self.project(narrow if autocast else x.to(self.lora_A.dtype))
        if self.heads > 1:
            g = self.gate(x, h, logits)
            per_head = self.config.method == "split" or (self.config.head_dropout and self.training)
            if per_head:  # h holds a block of r per head
                z = h * g.repeat_interleave(self.config.r, dim=-1)
            else:
                z = (g.unsqueeze(-1) * h.unsqueeze(-2)).flatten(-2)
        else:
            z = h
        # One fused multiply-add: a separate scale and sum would each pass over the full-width output.
        dtype = result.dtype
        out = torch.addmm(result.reshape(-1, self.out_features), z.reshape(-1, z.shape[-1]).to(dtype),
                          self.lora_B.t().to(dtype), alpha=self.config.scaling)
        return out.view(result.shape)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A drop(x), and the router logits when the router reads x: without dropout both come from
        one matrix product, so backward adds one gradient into x instead of two."""
        if self.config.head_dropout and self.training:
            return self.project_per_head(x), None
        if type(self.router_kind) is not Router or self.config.router_input != "x" or \
                self.config.router_level != "token":  # only the softmax router's logits fuse with A
            return F.linear(self.dropout(x), self.lora_A), None
        if isinstance(self.dropout, nn.Identity):
            both = F.linear(x, torch.cat([self.lora_A, self.router]))
            return both.split([self.lora_A.shape[0], self.heads], dim=-1)
        return F.linear(self.dropout(x), self.lora_A), F.linear(x, self.router)

    def project_per_head(self, x: torch.Tensor) -> torch.Tensor:
        """(..., heads*r): head i's block is A_(i) drop_i(x), a dropout mask drawn for each head (head_dropout)."""
        r, heads = self.config.r, self.heads
        dropped = self.dropout(x.unsqueeze(-2).expand(*x.shape[:-1], heads, x.shape[-1]))  # (..., heads, in)
        if self.config.method == "split":
            blocks = torch.einsum("...hi,hri->...hr", dropped, self.lora_A.view(heads, r, -1))
        else:
            blocks = F.linear(dropped, self.lora_A)
        return blocks.flatten(-2)

    def loop_update(self, x: torch.Tensor) -> torch.Tensor:
        """The official algorithm: one pass per head, A drop(x) recomputed (fresh dropout) each time,
        each head's full-width output weighted and summed."""
        r, s = self.config.r, self.config.scaling
        h_router = F.linear(self.dropout(x), self.lora_A) if self.config.router_input == "Ax" else None
        g = self.gate(x, h_router) if self.heads > 1 else None
        update = 0
        for i in range(self.heads):
            a = self.lora_A[i * r:(i + 1) * r] if self.config.method == "split" else self.lora_A
            head = F.linear(F.linear(self.dropout(x), a), self.lora_B[:, i * r:(i + 1) * r])
            weight = 1.0 if g is None else g[..., i:i + 1]
            update = update + weight * head * s
        return update

    # --- merging ----------------------------------------------------------------------------
    def resolve_merge_gate(self, gate) -> torch.Tensor:
        """A fixed gate vector (heads,) for merging; refuses to invent one for a learned or task gate."""
        heads = self.heads
        if heads == 1:
            return torch.ones(1)
        if gate is None:
            if self.config.gate == "uniform":
                return torch.full((heads,), 1.0 / heads)
            raise ValueError(
                f"gate={self.config.gate!r} routes each {'token' if self.config.gate == 'learned' else 'sample'} "
                "differently and cannot be folded into the weights as it is; pass merge_adapters(model, gate=...) "
                f"with a head index in 0..{heads - 1} or a weight vector of length {heads} (e.g. the mean gate)")
        if isinstance(gate, int):
            if not 0 <= gate < heads:
                raise ValueError(f"gate index must lie in 0..{heads - 1}, got {gate}")
            return F.one_hot(torch.tensor(gate), heads).float()
        weights = torch.as_tensor(gate, dtype=torch.float32).flatten()
        if weights.numel() != heads:
            raise ValueError(f"gate vector must have {heads} entries (one per head), got {weights.numel()}")
        return weights

    def delta_weight(self, gate: torch.Tensor) -> torch.Tensor:
        """s * sum_i g_i B_i A_(i) as an (out, in) matrix."""
        r, heads, k = self.config.r, self.heads, self.in_features
        g = gate.to(device=self.lora_A.device, dtype=self.lora_A.dtype)
        if self.config.method == "split":
            gated_a = self.lora_A * g.repeat_interleave(r)[:, None]
        else:
            gated_a = (g[:, None, None] * self.lora_A[None]).reshape(heads * r, k)
        return (self.lora_B @ gated_a) * self.config.scaling

    @torch.no_grad()
    def merge(self, gate=None) -> None:
        if self.merged:
            raise RuntimeError("adapters are already merged; call unmerge_adapters first")
        delta = self.delta_weight(self.resolve_merge_gate(gate))
        self._add_to_base(delta)
        self.merged_delta = delta

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self._add_to_base(-self.merged_delta)
            self.merged_delta = None

    def _add_to_base(self, delta: torch.Tensor) -> None:
        weight = self.base.weight
        weight.add_((delta.T if isinstance(self.base, Conv1D) else delta).to(weight.dtype))

    def extra_repr(self) -> str:
        c = self.config
        return (f"method={c.method}, r={c.r}, heads={c.heads}, gate={c.gate}, in={self.in_features}, "
                f"out={self.out_features}, scaling={c.scaling:g}")


def _per_sample(weights: torch.Tensor, x_dim: int) -> torch.Tensor:
    """(batch, heads) -> (batch, 1, ..., heads) so one gate holds for all tokens of a sample."""
    return weights.reshape(weights.shape[0], *([1] * (x_dim - 2)), weights.shape[-1])
