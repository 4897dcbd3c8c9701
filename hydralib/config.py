"""AdapterConfig: every method and ablation of the suite is a setting of this one record."""
from __future__ import annotations

import dataclasses
import math
import re
import re._constants as re_constants
import re._parser as re_parser
from dataclasses import dataclass

from .checks import check_choice

METHODS = ("lora", "split", "hydra")
# Gates without parameters; a learned gate is a router with tensors of its own, and its kinds are the names
# hydralib.layers registers (register_router): "learned" is the softmax router of the paper and official code.
FIXED_GATES = ("uniform", "task", "cluster")
LEARNED_GATES: list[str] = ["learned"]
ROUTER_INPUTS = ("x", "Ax")
ROUTER_LEVELS = ("token", "sequence")
ROUTER_INITS = ("kaiming", "zeros", "clusters")
IMPLEMENTATIONS = ("fused", "loop")
# Fields added after configs were first saved and used to key runs: at these defaults they stay out of to_dict,
# so an earlier config keeps its dict, its run keys and its saved adapter files.
LATER_DEFAULTS = {"freeze_a": False, "b_init_std": 0.0, "head_dropout": False}


@dataclass
class AdapterConfig:
    """What to attach to a frozen model.

    method:  "lora" (1 A, 1 B), "split" (n A, n B, n = heads) or "hydra" (1 A, N B, N = heads).
    r:       rank of every A block and every B head (HydraLoRA does not divide r among heads).
    alpha:   scaling numerator; the update is multiplied by alpha / r.
    heads:   number of B heads (hydra) or LoRA pairs (split); 1 for lora. Default: 1 for lora, 4 otherwise.
    targets: module-name suffixes (a list), one full-match regex (a string: bounded in length and shape, see
             _checked_targets), or "all-linear" (every nn.Linear / Conv1D but the LM head).
    gate:    "learned" (softmax router, no bias; or another router registered with
             hydralib.layers.register_router), "uniform" (1/N each, the paper's "w/o gate"),
             "task" (one-hot oracle from a per-sample component id given with the batch),
             "cluster" (one-hot from the sample's k-means cluster of its prompt, fitted on the training
             prompts, nearest centroid at inference: no labels needed; see hydralib.clustering).
    top_k:   keep only the k largest router logits (renormalised); None = dense, as in the paper.
    dropout: dropout on the adapter input, applied once (not once per head).
    router_input: "x" (the official code: router reads the layer input) or "Ax" (the paper's Eq.).
    router_level: "token" (the official code: a gate per token) or "sequence" (one gate per sample, from
             the mean of the prompt's states at that layer, held for all its tokens and during generation).
    router_init: "kaiming" (the official code), "zeros" (an ablation: heads never separate) or "clusters"
             (kaiming, then pointed at k-means clusters of the prompts by inject.warm_start_routers, which
             hydralib.pipeline calls: a learned router warm-started from the intrinsic components).
    implementation: "fused" (default, no Python loop over heads) or "loop" (the official
             per-head algorithm, A recomputed and dropout drawn per head; a reference).
    freeze_a: keep A at its random initialisation and train only B (and the router): the control of
             Zhu et al. (ICML 2024), who find a random untrained A does nearly as well.
    b_init_std: 0 (LoRA's and HydraLoRA's zero B: the adapters change nothing at step 0, and zero B heads
             under a uniform gate get identical updates) or the standard deviation of a normal draw of every
             B entry, each head its own (R-LoRA's multi-head random initialisation; the adapters then change
             the model from step 0).
    head_dropout: draw the dropout mask once per head instead of once for all heads (R-LoRA's multi-head
             dropout, and what the official loop does); needs dropout > 0, heads > 1 and the router on x. The
             fused path then computes A drop_i(x) for each head i.
    """

    method: str = "hydra"
    r: int = 8
    alpha: float = 16.0
    heads: int | None = None
    targets: list[str] | str = "all-linear"
    gate: str = "learned"
    top_k: int | None = None
    dropout: float = 0.0
    router_input: str = "x"
    router_level: str = "token"
    router_init: str = "kaiming"
    implementation: str = "fused"
    freeze_a: bool = False
    b_init_std: float = 0.0
    head_dropout: bool = False

    def __post_init__(self):
        check_choice("method", self.method, METHODS)
        check_choice("gate", self.gate, (*LEARNED_GATES, *FIXED_GATES))
        check_choice("router_input", self.router_input, ROUTER_INPUTS)
        check_choice("router_level", self.router_level, ROUTER_LEVELS)
        check_choice("router_init", self.router_init, ROUTER_INITS)
        check_choice("implementation", self.implementation, IMPLEMENTATIONS)
        if self.heads is None:
            self.heads = 1 if self.method == "lora" else 4
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise ValueError(f"r must be an integer >= 1, got r={self.r!r}")
        if isinstance(self.heads, bool) or not isinstance(self.heads, int) or self.heads < 1:
            raise ValueError(f"heads must be an integer >= 1, got heads={self.heads!r}")
        if self.method == "lora" and self.heads != 1:
            raise ValueError(
                f"method='lora' has exactly one head, got heads={self.heads}; "
                "use method='hydra' (1 A, N B) or method='split' (N A, N B) for several")
        if self.top_k is not None:
            if not self.learned_gate:
                raise ValueError(f"top_k applies to a learned gate ({', '.join(LEARNED_GATES)}) only, got gate={self.gate!r}")
            if not isinstance(self.top_k, int) or not 1 <= self.top_k <= self.heads:
                raise ValueError(f"top_k must be an integer in 1..heads={self.heads}, got top_k={self.top_k!r}")
        if self.router_init != "kaiming" and not self.learned_gate:
            raise ValueError(f"router_init={self.router_init!r} applies to a learned gate only, got gate={self.gate!r}")
        if self.router_level == "sequence" and not self.learned_gate:
            raise ValueError(f"router_level='sequence' applies to a learned gate only, got gate={self.gate!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got dropout={self.dropout!r}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not math.isfinite(self.alpha) \
                or self.alpha <= 0:
            raise ValueError(f"alpha must be a finite number > 0, got alpha={self.alpha!r}")
        self.targets = _checked_targets(self.targets)
        for name in ("freeze_a", "head_dropout"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {name}={getattr(self, name)!r}")
        if isinstance(self.b_init_std, bool) or not isinstance(self.b_init_std, (int, float)) \
                or not math.isfinite(self.b_init_std) or self.b_init_std < 0:
            raise ValueError(f"b_init_std must be a finite number >= 0 (0: B starts at zero), got b_init_std={self.b_init_std!r}")
        if self.head_dropout and (self.dropout == 0 or self.heads < 2 or self.router_input != "x"):
            raise ValueError(f"head_dropout draws a dropout mask per head: it needs dropout > 0, heads > 1 and "
                             f"router_input='x', got dropout={self.dropout!r}, heads={self.heads}, "
                             f"router_input={self.router_input!r}")

    @property
    def scaling(self) -> float:
        return self.alpha / self.r

    @property
    def learned_gate(self) -> bool:
        """The gate is a router with parameters of its own (a registered router kind)."""
        return self.gate in LEARNED_GATES

    @property
    def has_router(self) -> bool:
        """Each layer carries router tensors: a learned gate over more than one head (the one place that says it)."""
        return self.learned_gate and self.heads > 1

    @property
    def num_a(self) -> int:
        """How many rank-r A blocks: n for split, 1 for lora and hydra."""
        return self.heads if self.method == "split" else 1

    def to_dict(self) -> dict:
        """Every field, but those of LATER_DEFAULTS at their default (from_dict restores them)."""
        return {name: value for name, value in dataclasses.asdict(self).items()
                if not (name in LATER_DEFAULTS and value == LATER_DEFAULTS[name])}

    @classmethod
    def from_dict(cls, values: dict) -> "AdapterConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown AdapterConfig fields {unknown}; allowed: {sorted(known)}")
        return cls(**values)


MAX_TARGET_NAMES = 10_000  # suffixes in a targets list (an import of every linear layer of a large model fits)
MAX_TARGET_LENGTH = 200  # characters in a suffix or a pattern
MAX_PATTERN_REPEATS = 3  # quantifiers with no small upper bound in a targets pattern
_MODULE_SUFFIX = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")


def _checked_targets(targets):
    """targets as a list of module-name suffixes, a bounded regex or "all-linear"; refused otherwise.

    A pattern is matched against every module name (re.fullmatch, with backtracking), so it is limited to a
    shape whose matching time stays small: at most MAX_TARGET_LENGTH characters, no quantifier applied to a
    group that holds another quantifier or an alternation (the shape of catastrophic patterns such as
    "(.*.*)*Z"), no backreferences or lookarounds, and at most MAX_PATTERN_REPEATS open-ended quantifiers."""
    if isinstance(targets, tuple):
        targets = list(targets)
    if isinstance(targets, list) and targets and all(isinstance(t, str) for t in targets):
        if len(targets) > MAX_TARGET_NAMES:
            raise ValueError(f"targets lists {len(targets)} module names; at most {MAX_TARGET_NAMES} are allowed")
        for name in targets:
            if len(name) > MAX_TARGET_LENGTH or not _MODULE_SUFFIX.fullmatch(name):
                raise ValueError(
                    f"targets entry {name[:60]!r} is not a module-name suffix (letters, digits and _ in dot-separated "
                    f"parts, at most {MAX_TARGET_LENGTH} characters, e.g. 'q_proj' or 'self_attn.v_proj'); "
                    "give a pattern as one string instead of a list")
        return targets
    if isinstance(targets, str):
        if targets != "all-linear":
            _check_pattern(targets)
        return targets
    raise ValueError(
        f"targets must be a non-empty list of module-name suffixes, a regex string or 'all-linear', "
        f"got targets={targets!r}")


def _check_pattern(pattern: str) -> None:
    if len(pattern) > MAX_TARGET_LENGTH:
        raise ValueError(f"targets pattern is {len(pattern)} characters long; at most {MAX_TARGET_LENGTH} are allowed")
    try:
        parsed = re_parser.parse(pattern)
    except re.error as err:
        raise ValueError(f"targets pattern {pattern!r} is not a valid regular expression: {err}") from None
    repeats = _pattern_repeats(pattern, parsed, inside_repeat=False)
    if repeats > MAX_PATTERN_REPEATS:
        raise ValueError(f"targets pattern {pattern!r} has {repeats} open-ended quantifiers (*, +, {{n,}}); at most "
                         f"{MAX_PATTERN_REPEATS} are allowed, so that matching module names stays fast")


_UNBOUNDED_ABOVE = 16  # a {m,n} with n above this counts as open-ended
_REFUSED_NODES = {re_constants.GROUPREF: "a backreference", re_constants.GROUPREF_EXISTS: "a conditional group",
                  re_constants.ASSERT: "a lookahead or lookbehind",
                  re_constants.ASSERT_NOT: "a lookahead or lookbehind"}


def _pattern_repeats(pattern: str, parsed, inside_repeat: bool) -> int:
    """How many open-ended quantifiers the parsed pattern holds; refuses the shapes _checked_targets names."""
    count = 0
    for op, value in parsed:
        if op in _REFUSED_NODES:
            raise ValueError(f"targets pattern {pattern!r} uses {_REFUSED_NODES[op]}, which a targets pattern may not")
        if op in (re_constants.MAX_REPEAT, re_constants.MIN_REPEAT, re_constants.POSSESSIVE_REPEAT):
            low, high, body = value
            if inside_repeat and high > 1:
                raise ValueError(f"targets pattern {pattern!r} repeats a group that holds a quantifier: such nested "
                                 "quantifiers can take exponential time to match; write it without the nesting")
            count += high is re_constants.MAXREPEAT or high > _UNBOUNDED_ABOVE
            count += _pattern_repeats(pattern, body, inside_repeat=inside_repeat or high > 1)
        elif op == re_constants.BRANCH:
            if inside_repeat:
                raise ValueError(f"targets pattern {pattern!r} repeats an alternation (a|b)*: overlapping branches "
                                 "can take exponential time to match; write it without repeating the alternation")
            count += sum(_pattern_repeats(pattern, branch, inside_repeat) for branch in value[1])
        elif op in (re_constants.SUBPATTERN, re_constants.ATOMIC_GROUP):
            count += _pattern_repeats(pattern, value[-1], inside_repeat)
    return count

