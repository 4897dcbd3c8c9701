"""The named methods the suite compares: each label and its adapter configuration written once.

    methods = {**full_finetuning(), **lora(8, 32), **split(4, 8), **hydra(8, 8, gate="cluster")}
    # {"full fine-tuning": None, "LoRA r8": AdapterConfig(...), ..., "Hydra r8 N=8 cluster gate": ...}

Every adapter is at equal scale across ranks, alpha = 2r, unless alpha is given (the paper fixes
alpha = 32, which makes a larger rank a smaller step). None stands for full fine-tuning. Notebooks,
hydralib.efficiency, benchmarks/ and the real-data lane take their variants from here, so adding an
ablation is one setting of AdapterConfig and, if it deserves a name, one line here.
"""
from __future__ import annotations

import inspect

from .checks import check_choice
from .config import AdapterConfig
from .data.corpus import CLUSTER_TEXTS
from .data.synthetic import make_corpus

FULL_FINETUNING = "full fine-tuning"
# What a cluster gate clusters (the data spec's cluster_text), in the words of its label.
CLUSTER_TEXT_WORDS = {"prompt": "whole prompt", "instruction": "instruction"}
# Data keys that synthetic_spec writes only when asked, at their defaults: with_data leaves a key at its default out
# of the data spec, so that the run is the one every notebook that never names the key runs (the store shares it).
UNWRITTEN_DEFAULTS = {"identifiability": inspect.signature(make_corpus).parameters["identifiability"].default,
                      "cluster_text": CLUSTER_TEXTS[0]}


def adapter_config(method: str = "lora", r: int = 8, heads: int | None = None, alpha: float | None = None,
                   targets="all-linear", **options) -> AdapterConfig:
    """An AdapterConfig at equal scale across ranks (alpha = 2r unless given); a bad setting is refused here."""
    return AdapterConfig(method=method, r=r, heads=heads, alpha=float(2 * r if alpha is None else alpha),
                         targets=targets, **options)


def gate_label(config: AdapterConfig) -> str:
    """How a multi-head method routes, in the words of the tables: token router, sequence router,
    cluster gate, oracle, uniform gate (w/o gate), with top-k and warm starts said."""
    if config.learned_gate:
        kind = "" if config.gate == "learned" else f"{config.gate} "  # a registered router says its name
        label = f"{kind}{config.router_level} router" if config.method == "hydra" else kind + "learned"
        if config.top_k is not None:
            label += f" top-{config.top_k}"
        if config.router_init != "kaiming":
            label += f" ({config.router_init} init)"
        return label
    return {"uniform": "uniform gate", "task": "oracle", "cluster": "cluster gate"}[config.gate]


def setting_label(config: AdapterConfig) -> str:
    """The settings a configuration changes from the defaults the table names assume, in words, each after a
    comma: ', router on Ax', ', dropout 0.05 per head', ', loop', ', frozen A', ', random B (std 0.001)';
    '' when it changes none (so the names of the default methods stay as they are)."""
    parts = []
    if config.router_input != "x":
        parts.append(f"router on {config.router_input}")
    if config.dropout > 0:
        parts.append(f"dropout {config.dropout:g}" + (" per head" if config.head_dropout else ""))
    if config.implementation != "fused":
        parts.append(config.implementation)
    if config.freeze_a:
        parts.append("frozen A")
    if config.b_init_std > 0:
        parts.append(f"random B (std {config.b_init_std:g})")
    return "".join(f", {part}" for part in parts)


def label(config: AdapterConfig | None) -> str:
    """The table name of a configuration: 'LoRA r8', 'Split 4x8 learned', 'Hydra r8 N=8 token router', with any
    setting it changes said after a comma ('Hydra r8 N=8 token router, dropout 0.05 per head')."""
    if config is None:
        return FULL_FINETUNING
    if config.method == "lora":
        name = f"LoRA r{config.r}"
    elif config.method == "split":
        name = f"Split {config.heads}x{config.r} {gate_label(config)}"
    else:
        name = f"Hydra r{config.r} N={config.heads} {gate_label(config)}"
    return name + setting_label(config)


def full_finetuning() -> dict[str, None]:
    return {FULL_FINETUNING: None}


def lora(*ranks: int, **options) -> dict[str, AdapterConfig]:
    """{'LoRA r8': ..., 'LoRA r32': ...} for the given ranks."""
    configs = [adapter_config("lora", r, **options) for r in ranks]
    return {label(c): c for c in configs}


def split(n: int, r: int, gate: str = "learned", **options) -> dict[str, AdapterConfig]:
    """LoRA-Split n x r: n pairs (A_i, B_i) of rank r under a gate ('learned' is MoLoRA, 'task' the oracle)."""
    config = adapter_config("split", r, heads=n, gate=gate, **options)
    return {label(config): config}


def hydra(r: int, n: int, gate: str = "learned", **options) -> dict[str, AdapterConfig]:
    """HydraLoRA: one shared A of rank r, n heads B_i of rank r each, under a gate (learned: the official
    per-token router; options such as router_level='sequence', top_k, router_init)."""
    config = adapter_config("hydra", r, heads=n, gate=gate, **options)
    return {label(config): config}


def with_lr(configs: dict[str, AdapterConfig | None], adapter_lr: float | dict[int, float],
            full_lr: float | None = None, **train_options) -> dict[str, dict]:
    """The methods as hydralib.specs.run_methods takes them: {label: {"adapter": config, "lr": ..., ...}},
    full fine-tuning at full_lr (it moves every weight, so it takes a smaller step). adapter_lr is one rate
    for every adapter or {rank: rate}, e.g. {8: 5e-3, 32: 3e-3}: the sweep (benchmarks/lr_sweep.py) finds
    rank-8 adapters learning best at a larger step than rank 32."""
    out = {}
    for name, config in configs.items():
        if config is None and full_lr is None:
            raise ValueError(f"{name!r} is full fine-tuning: give full_lr")
        out[name] = {"adapter": config, "lr": full_lr if config is None else _rate(adapter_lr, config.r, name),
                     **train_options}
    return out


def with_data(methods: dict[str, dict], **data) -> dict[str, dict]:
    """The methods as with_lr returns them, their runs' data specs given more keys, merged into each method's own
    data_options (which specs.synthetic_spec adds to the data spec): with_data(methods, identifiability=0.5).
    A key at its default (UNWRITTEN_DEFAULTS) is left out, so that identifiability=1.0 gives the very runs of the
    notebooks that never name it."""
    out = {}
    for name, method in methods.items():
        merged = {**method.get("data_options", {}), **data}
        written = {k: v for k, v in merged.items() if k not in UNWRITTEN_DEFAULTS or UNWRITTEN_DEFAULTS[k] != v}
        out[name] = {k: v for k, v in method.items() if k != "data_options"}
        if written:
            out[name]["data_options"] = written
    return out


def clustering_on(methods: dict[str, dict], text: str) -> dict[str, dict]:
    """Cluster-gated methods (as with_lr returns them) set to cluster `text`, the data spec's cluster_text:
    "prompt" (instruction and input, the default) or "instruction" (the instruction alone), each labelled with it:
    'Hydra r8 N=8 cluster gate (whole prompt)', 'Hydra r8 N=8 cluster gate (instruction)'. A method that
    clusters nothing (no cluster gate, no router started from clusters) is refused."""
    if text not in CLUSTER_TEXT_WORDS:
        raise ValueError(f"unknown cluster text {text!r}; allowed: {', '.join(CLUSTER_TEXT_WORDS)}")
    unclustered = [name for name, method in methods.items() if method.get("adapter") is None
                   or (method["adapter"].gate != "cluster" and method["adapter"].router_init != "clusters")]
    if unclustered:
        raise ValueError(f"{unclustered} cluster nothing: only a cluster gate (or a router started from clusters) "
                         f"clusters a text")
    return {f"{name} ({CLUSTER_TEXT_WORDS[text]})": method
            for name, method in with_data(methods, cluster_text=text).items()}


def with_rate_of_rank(configs: dict[str, AdapterConfig], adapter_lr: float | dict[int, float], rank: int,
                      **train_options) -> dict[str, dict]:
    """Methods as with_lr gives them, every adapter at the rate adapter_lr gives rank `rank`, whatever its own rank:
    for a rank the sweep did not tune (e.g. Split 8x5 at rank 8's rate). Say so wherever it is used."""
    return with_lr(configs, _rate(adapter_lr, rank, f"rank {rank}"), **train_options)


def with_balance_loss(methods: dict[str, dict], weight: float) -> dict[str, dict]:
    """Methods as with_lr gives them, trained with a load-balancing loss of this weight (a training option, not an
    adapter setting), each named so: 'Hydra r8 N=8 token router, balance loss 0.1'."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
        raise ValueError(f"a balance loss weight must be a number > 0, got {weight!r}")
    return {f"{name}, balance loss {weight:g}": {**method, "balance_weight": weight} for name, method in methods.items()}


def _rate(adapter_lr: float | dict[int, float], r: int, name: str) -> float:
    if not isinstance(adapter_lr, dict):
        return adapter_lr
    bad = [rank for rank in adapter_lr if not str(rank).isdigit()]
    if bad:
        raise ValueError(f"adapter_lr's keys are ranks (whole numbers), got {bad!r}")
    rates = {int(rank): rate for rank, rate in adapter_lr.items()}  # papermill passes a dict's keys as text
    if r not in rates:
        raise ValueError(f"{name!r} has rank {r}, for which adapter_lr gives no rate; it has ranks {sorted(rates)}")
    return rates[r]


def figure5_methods(r: int = 8, hydra_heads: int = 3) -> dict[str, AdapterConfig | None]:
    """What the paper's Figure 5 compares for cost: the frozen model (None, the floor every method pays),
    LoRA r, 2r and 4r, Split 4 x r and HydraLoRA r with hydra_heads heads (learned gates). HydraLoRA r8 with
    3 heads carries (1 + 3) / 2 = 2 rank-8 LoRAs in the paper's convention: LoRA r16's size."""
    return {"frozen": None, **lora(r, 2 * r, 4 * r), **split(4, r), **hydra(r, hydra_heads)}


def implementation_sweep(r: int, head_counts: list[int]) -> dict[str, AdapterConfig]:
    """HydraLoRA with each number of heads, fused (ours) and looped per head (the official algorithm):
    {'fused N=2': ..., 'loop N=2': ...}."""
    if not head_counts or any(not isinstance(n, int) or n < 1 for n in head_counts):
        raise ValueError(f"head_counts must be a non-empty list of integers >= 1, got {head_counts!r}")
    return {f"{impl} N={n}": adapter_config("hydra", r, heads=n, implementation=impl)
            for impl in ("fused", "loop") for n in head_counts}


LANE_ROLES = ("lora", "split", "token", "cluster")


def lane_methods(r: int, heads: int, targets="all-linear", wide_rank: int = 0,
                 roles=LANE_ROLES) -> dict[str, AdapterConfig]:
    """The real-data lane's methods, those of `roles` (all by default): "lora" LoRA r; "split" Split heads x r
    with a learned gate; "token" and "cluster" HydraLoRA r with `heads` heads under the official per-token router
    and under the cluster gate; with wide_rank > 0, LoRA of that rank too (the paper's larger baseline, r32).
    lane_roles names each one's role."""
    for role in roles:
        check_choice("role", role, LANE_ROLES)
    configs = _lane_configs(r, heads, targets, wide_rank)
    return {label(config): config for role, config in configs.items() if role in roles or role == "wide"}


def lane_roles(r: int, heads: int, targets="all-linear", wide_rank: int = 32) -> dict[str, str]:
    """{role: label} of the lane's methods, roles "lora", "split", "token", "cluster" and "wide" (LoRA of
    wide_rank, whether or not it runs), so that a claim names a method by its role, never by its place in a dict."""
    return {role: label(config) for role, config in _lane_configs(r, heads, targets, wide_rank).items()}


def _lane_configs(r: int, heads: int, targets, wide_rank: int) -> dict[str, AdapterConfig]:
    if wide_rank and wide_rank <= r:
        raise ValueError(f"wide_rank must be 0 (none) or larger than r={r}, got wide_rank={wide_rank!r}")
    configs = {"lora": adapter_config("lora", r, targets=targets),
               "split": adapter_config("split", r, heads=heads, targets=targets),
               "token": adapter_config("hydra", r, heads=heads, targets=targets),
               "cluster": adapter_config("hydra", r, heads=heads, gate="cluster", targets=targets)}
    if wide_rank:
        configs["wide"] = adapter_config("lora", wide_rank, targets=targets)
    return configs


def figure6_roles(r: int, n: int) -> dict[str, str]:
    """The paper's Figure 6 ablations (hydralib.paper.FIGURE6's names, the paper's at its r8) and the label of our
    method that plays each at rank r and n heads: HydraLoRA is Hydra r N=n with the official token router; w/o MoE
    one LoRA r; w/o gate the same heads under a uniform gate; w/o Hydra n full LoRA pairs under a learned router
    (Split n x r)."""
    return {"HydraLoRA": label(adapter_config("hydra", r, heads=n)),
            "w/o MoE (= LoRA r8)": label(adapter_config("lora", r)),
            "w/o Hydra (Split)": label(adapter_config("split", r, heads=n)),
            "w/o gate (uniform)": label(adapter_config("hydra", r, heads=n, gate="uniform"))}


def split_rank_matching_hydra(r: int, n: int, layer_shapes: list[tuple[int, int]]) -> int:
    """The rank r' at which Split n x r' (n pairs A_i, B_i) holds as many adapter weights as Hydra r with n heads
    (one A, n B) on layers of these (in, out) shapes, rounded to the nearest whole rank: Hydra holds
    sum r (k + n d), Split sum n r' (k + d). Routers are the same n x k per layer for both and left out."""
    if not layer_shapes or any(len(s) != 2 or min(s) < 1 for s in layer_shapes):
        raise ValueError(f"layer_shapes must be a non-empty list of (in, out) sizes >= 1, got {layer_shapes!r}")
    if r < 1 or n < 1:
        raise ValueError(f"r and n must be >= 1, got r={r!r}, n={n!r}")
    hydra_weights = sum(r * (k + n * d) for k, d in layer_shapes)
    per_rank = sum(n * (k + d) for k, d in layer_shapes)
    return max(1, round(hydra_weights / per_rank))
