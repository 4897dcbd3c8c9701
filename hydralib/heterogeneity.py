"""Figure 2 at equal rows per component: the gap between full fine-tuning and LoRA as more components are mixed.

    design = equal_rows_levels([1, 2, 4, 8], rows_per_component=600, batch_size=32)
    # {1: {"n_components": 1, "n_train": 600, "steps": 19}, ..., 8: {"n_components": 8, "n_train": 4800, "steps": 150}}
    sweep = run_levels(methods, design, seeds, store)     # {k: {label: [result per seed]}}
    gaps = gap_per_seed(sweep, full, lora)                # {k: [full minus LoRA, per seed]}
    slopes = gap_slopes(gaps)                             # per seed: the gap's least-squares slope on log2 k

Why equal rows: with a fixed number of rows and steps, each of k components gets 1/k of them, so both methods
fall as k rises and a gap measures the budget's dilution as much as the mixing. Here every component gets the same
rows at every level (n_train = rows_per_component x k) and every row is seen once (steps = n_train / batch,
rounded up), so what changes with k is how many components share one adapter. At 8 components and 600 rows a
component the design is the other notebooks' 4,800 rows in 150 steps (the run store trains it once).
"""
from __future__ import annotations

import math

import numpy as np

from .specs import method_specs
from .store import RunStore, run_named


def equal_rows_levels(levels: list[int], rows_per_component: int, batch_size: int = 32) -> dict[int, dict]:
    """{k: {"n_components": k, "n_train": rows_per_component * k, "steps": ceil(n_train / batch_size)}} for each
    level k: the spec options of Figure 2's runs. Refuses levels that are not distinct whole numbers >= 1 and
    sizes below 1."""
    if not levels or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in levels) \
            or len(set(levels)) != len(levels):
        raise ValueError(f"levels must be distinct whole numbers >= 1, got {levels!r}")
    for name, value in (("rows_per_component", rows_per_component), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {name}={value!r}")
    return {k: {"n_components": k, "n_train": rows_per_component * k,
                "steps": math.ceil(rows_per_component * k / batch_size)} for k in levels}


def run_levels(methods: dict[str, dict], design: dict[int, dict], seeds: list[int], store: RunStore,
               processes: int | str = 2, executor: str = "process", address: str | None = None,
               **spec_options) -> dict[int, dict[str, list[dict]]]:
    """{k: {label: [result per seed]}}: every method (as methods.with_lr gives them) at every level of the design,
    all trained together through the store (one pool for every level); spec_options go to every run."""
    specs = {(k, name): runs for k, options in design.items()
             for name, runs in method_specs(methods, seeds, **spec_options, **options).items()}
    results = run_named(specs, store, processes, executor, address)
    return {k: {name: results[k, name] for name in methods} for k in design}


def gap_per_seed(sweep: dict[int, dict[str, list[dict]]], better: str, worse: str,
                 key: str = "exact_match") -> dict[int, list[float]]:
    """{k: [better's score minus worse's, per seed]} at each level: the paired gap a claim compares."""
    return {k: [b[key] - w[key] for b, w in zip(results[better], results[worse], strict=True)]
            for k, results in sweep.items()}


def gap_slopes(gaps: dict[int, list[float]]) -> list[float]:
    """Per seed, the least-squares slope of the gap on log2 of the number of components: the change of the gap per
    doubling of the components, over every level at once. Needs at least two levels and the same seeds at each."""
    levels = sorted(gaps)
    if len(levels) < 2:
        raise ValueError(f"a slope needs at least two levels, got {levels!r}")
    if len({len(gaps[k]) for k in levels}) != 1:
        raise ValueError(f"every level needs the same seeds, got {[len(gaps[k]) for k in levels]} gaps per level")
    x = np.log2(levels)
    return [float(np.polyfit(x, [gaps[k][i] for k in levels], 1)[0]) for i in range(len(gaps[levels[0]]))]
