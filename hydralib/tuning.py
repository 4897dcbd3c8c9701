"""The sweep that chooses the operating point on validation rows of tuning seeds (benchmarks/lr_sweep.py runs it).

The protocol (issue 23, item 6):
- tuning seeds: TUNING_SEEDS (100-102); an evaluation seed (0-4, the seeds the notebooks claim on) is refused.
- validation rows: a tuning seed's run trains on its own corpus' training rows and is scored on that corpus'
  held-out rows (make_corpus' second split: the training distribution, words never in its training rows). No
  tuning run reads an evaluation seed's rows; held_out_overlap counts the (instruction, input) pairs that the
  tuning seeds' validation rows share by chance with the evaluation seeds' test rows (both are drawn from the
  same words).
- criterion: the mean validation exact match over the tuning seeds, the score the claims compare; the mean
  validation loss is shown beside it and breaks an exact tie. Steps are not tuned: the budget sets them.

Stages, each through the run store (a stopped sweep resumes: finished runs are read back, a partial one resumes
from its checkpoint):
1. rates: every family of the grid at each of its rates, at the main operating point (MAIN_POINT: 8 components,
   4,800 rows seen once in 150 steps). LoRA rN decides rank N's rate, full fine-tuning the full rate; any other
   family whose best rate differs from its rank's keeps its own (the point's rates.methods).
2. word_length: full fine-tuning and LoRA r32, at the rates of stage 1, at each longest word length; chosen: the
   longest (the hardest task) whose means reach DESIGN's targets (WORD_TARGETS), else the shortest. A length
   other than the one stage 1 ran at asks for stage 1 again at that length (the sweep says so).
3. figure2: full fine-tuning and LoRA r8 on 1 component at each number of rows per component (every row seen
   once: heterogeneity.equal_rows_levels); chosen: the most rows at which full fine-tuning stays below
   FIGURE2_CEILING, so that the gap at 1 component is measured below the ceiling.
"""
from __future__ import annotations

import datetime
import statistics
from pathlib import Path

from .data.synthetic import make_corpus
from .executors import visible_devices, worker_count
from .heterogeneity import equal_rows_levels
from .methods import FULL_FINETUNING, full_finetuning, hydra, lora, split
from .operating_point import (DEFAULT_WORD_LENGTH, EVALUATION_SEEDS, FIGURE2_CEILING, TUNING_SEEDS, check_point,
                              tuned_methods)
from .specs import synthetic_spec
from .store import RunStore, code_version, run_many
from .suite import COST_BASIS, STEP_COSTS, format_duration

STAGES = ("rates", "word_length", "figure2")
# The notebooks' default operating point (notebooks 01, 03-05, 07): the runs stage 1 tunes for.
MAIN_POINT = dict(n_components=8, steps=150, pretrain_steps=1000, n_train=4800, n_test=500, lr_floor=0.1,
                  mixed_precision="bf16", device="cpu")
FAMILIES = {**full_finetuning(), **lora(8, 16, 32), **hydra(8, 8), **hydra(8, 8, router_level="sequence"),
            **hydra(8, 8, gate="cluster"), **split(4, 8), **hydra(8, 3)}
_LORA8, _LORA32 = next(iter(lora(8))), next(iter(lora(32)))


def _rates_around(config) -> list[float]:
    """Three rates around the one the sweep before issue 23 chose for this kind of method (docs/operating_point.md):
    full fine-tuning 1e-3, rank 32 3e-3, smaller ranks 5e-3."""
    if config is None:
        return [5e-4, 1e-3, 2e-3]
    return [2e-3, 3e-3, 5e-3] if config.r >= 32 else [3e-3, 5e-3, 7e-3]


RATE_GRID = {name: _rates_around(config) for name, config in FAMILIES.items()}
WORD_LENGTHS = [4, 5]
WORD_TARGETS = {FULL_FINETUNING: 0.50, _LORA32: 0.30}  # DESIGN section 3: a healthy operating point
ROWS_PER_COMPONENT = [600, 300, 150]
CRITERION = "the highest mean validation exact match over the tuning seeds (ties: the lower validation loss)"


def check_tuning_seeds(seeds) -> list[int]:
    """The seeds to tune on, refused when empty or when one is an evaluation seed (EVALUATION_SEEDS)."""
    seeds = list(seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ValueError(f"tuning seeds must be a non-empty list of whole numbers >= 0, got {seeds!r}")
    shared = sorted(set(seeds) & set(EVALUATION_SEEDS))
    if shared:
        raise ValueError(f"seeds {shared} are evaluation seeds {list(EVALUATION_SEEDS)}, which the notebooks claim on; "
                         f"tune on others, e.g. {list(TUNING_SEEDS)}")
    return seeds


def check_grid(grid: dict) -> dict[str, list[float]]:
    """A rate grid {family label: [rates]}, refused with the allowed labels when a family is unknown, or a rate is
    not a number > 0."""
    unknown = sorted(set(grid) - set(FAMILIES))
    if unknown:
        raise ValueError(f"unknown families {unknown}; allowed: {', '.join(FAMILIES)}")
    bad = {family: rates for family, rates in grid.items()
           if not rates or any(isinstance(r, bool) or not isinstance(r, (int, float)) or not r > 0 for r in rates)}
    if bad:
        raise ValueError(f"each family needs a non-empty list of rates > 0, got {bad!r}")
    return grid


def _trial(stage: str, family: str, value, seed: int, method: dict, point: dict, data: dict) -> dict:
    options = {**point, **{k: v for k, v in method.items() if k != "adapter"}}
    data = {**options.pop("data_options", {}), **data}
    return {"stage": stage, "family": family, "value": value, "seed": seed,
            "spec": synthetic_spec(method["adapter"], seed, **options, **({"data_options": data} if data else {}))}


def word_data(length: int) -> dict:
    """The data keys of a longest word length: none at the corpus' default (the runs every notebook shares)."""
    return {} if length == DEFAULT_WORD_LENGTH else {"max_word_length": length}


def rate_trials(grid: dict[str, list[float]], seeds: list[int], point: dict, word_length: int) -> list[dict]:
    """Stage 1: every family of the grid at each rate and seed, at `point` (spec options, MAIN_POINT's keys)."""
    return [_trial("rates", family, lr, seed, {"adapter": FAMILIES[family], "lr": lr}, point, word_data(word_length))
            for family, rates in check_grid(grid).items() for lr in rates for seed in seeds]


def word_length_trials(lengths: list[int], seeds: list[int], point: dict, operating_point: dict) -> list[dict]:
    """Stage 2: full fine-tuning and LoRA r32 at the operating point's rates, at each longest word length."""
    methods = tuned_methods({name: FAMILIES[name] for name in WORD_TARGETS}, point=operating_point)
    return [_trial("word_length", family, length, seed, method, point, word_data(length))
            for family, method in methods.items() for length in lengths for seed in seeds]


def figure2_trials(rows_grid: list[int], seeds: list[int], point: dict, operating_point: dict,
                   word_length: int) -> list[dict]:
    """Stage 3: full fine-tuning and LoRA r8 on 1 component, at the operating point's rates, at each number of rows
    per component, each row seen once."""
    methods = tuned_methods({name: FAMILIES[name] for name in (FULL_FINETUNING, _LORA8)}, point=operating_point)
    batch = point.get("batch_size", 32)
    return [_trial("figure2", family, rows, seed, method,
                   {**point, **equal_rows_levels([1], rows, batch)[1]}, word_data(word_length))
            for family, method in methods.items() for rows in rows_grid for seed in seeds]


def expected_cost(trials: list[dict], store: RunStore, processes) -> dict:
    """What the trials cost before they run: {"runs" (distinct), "in_store", "seconds" (the rest on the workers,
    from suite.STEP_COSTS), "line" (a sentence with the basis)}."""
    unique = list({t["spec"].key: t["spec"] for t in trials}.values())
    pending = [s for s in unique if store.get(s) is None]
    step, per_run = STEP_COSTS["tiny", "cpu"]
    workers = worker_count(processes, visible_devices())
    seconds = sum(s.train.steps * step + per_run for s in pending) / workers
    line = (f"{len(unique)} runs, {len(unique) - len(pending)} already in the store: about {format_duration(seconds)} "
            f"on {workers} worker(s) ({step} s a step, {per_run:.0f} s a run besides: {COST_BASIS['tiny', 'cpu']})")
    return {"runs": len(unique), "in_store": len(unique) - len(pending), "seconds": seconds, "line": line}


def run_trials(trials: list[dict], store: RunStore, processes=2) -> list[dict]:
    """The trials with their validation scores ("exact_match", "loss": on the tuning seed's held-out rows), trained
    through the store."""
    results = run_many([t["spec"] for t in trials], store, processes=processes)
    return [{**t, "exact_match": r["exact_match"], "loss": r["test_loss"]["loss"]} for t, r in zip(trials, results)]


def summarise_trials(trials: list[dict]) -> list[dict]:
    """One row per (family, value), in the trials' order: mean and sd of the validation exact match over seeds, the
    mean validation loss, the seeds."""
    groups: dict[tuple, list[dict]] = {}
    for t in trials:
        groups.setdefault((t["family"], t["value"]), []).append(t)
    rows = []
    for (family, value), group in groups.items():
        scores = [t["exact_match"] for t in group]
        rows.append({"family": family, "value": value, "exact_match": statistics.fmean(scores),
                     "sd": statistics.stdev(scores) if len(scores) > 1 else 0.0,
                     "loss": statistics.fmean(t["loss"] for t in group), "seeds": [t["seed"] for t in group]})
    return rows


def best_values(summary: list[dict]) -> dict[str, float]:
    """{family: the value with the highest mean validation exact match (ties: the lower loss)}."""
    best: dict[str, dict] = {}
    for row in summary:
        current = best.get(row["family"])
        if current is None or (row["exact_match"], -row["loss"]) > (current["exact_match"], -current["loss"]):
            best[row["family"]] = row
    return {family: row["value"] for family, row in best.items()}


def beyond_edges(grid: dict[str, list[float]], summary: list[dict]) -> dict[str, list[float]]:
    """The families whose best rate in summary is their grid's smallest or largest, each with its grid and one rate
    more beyond that edge (x 2/3 below, x 1.5 above, to one significant digit), so that the sweep can try it and a
    chosen rate has a tried rate on both sides; {} when no family's best is at an edge."""
    best = best_values(summary)
    wider = {}
    for family, rates in grid.items():
        if family not in best or len(rates) < 2:
            continue
        if best[family] == min(rates):
            wider[family] = sorted({*rates, float(f"{best[family] * 2 / 3:.0e}")})
        elif best[family] == max(rates):
            wider[family] = sorted({*rates, float(f"{best[family] * 1.5:.0e}")})
    return wider


def choose_rates(summary: list[dict], previous: dict) -> dict:
    """The point's rates section from stage 1: full fine-tuning's and each LoRA rank's best rate; any other family
    its own best where it differs from its rank's rate (a rank no LoRA of the grid decided keeps its previous rate).
    Families not in the grid keep their previous own rates."""
    best = best_values(summary)
    ranks = dict(previous["ranks"])
    ranks.update({str(FAMILIES[f].r): lr for f, lr in best.items() if FAMILIES[f] is not None
                  and FAMILIES[f].method == "lora"})
    methods = {f: lr for f, lr in previous["methods"].items() if f not in best}
    for family, lr in best.items():
        config = FAMILIES[family]
        if config is not None and config.method != "lora" and lr != ranks.get(str(config.r)):
            methods[family] = lr
    return {FULL_FINETUNING: best.get(FULL_FINETUNING, previous[FULL_FINETUNING]), "ranks": ranks, "methods": methods}


def choose_word_length(summary: list[dict], targets: dict[str, float] = WORD_TARGETS) -> int:
    """The longest word length at which every target method's mean validation exact match reaches its target;
    the shortest length when none does."""
    lengths = sorted({row["value"] for row in summary})
    means = {(row["family"], row["value"]): row["exact_match"] for row in summary}
    meeting = [n for n in lengths if all(means.get((f, n), -1) >= goal for f, goal in targets.items())]
    return max(meeting) if meeting else min(lengths)


def choose_rows(summary: list[dict], ceiling: float = FIGURE2_CEILING) -> int:
    """The most rows per component at which full fine-tuning's mean validation exact match on 1 component stays
    below the ceiling; the fewest rows when none does."""
    full = {row["value"]: row["exact_match"] for row in summary if row["family"] == FULL_FINETUNING}
    if not full:
        raise ValueError("choosing Figure 2's rows needs full fine-tuning's trials")
    below = [rows for rows, score in full.items() if score < ceiling]
    return max(below) if below else min(full)


def provenance(seeds: list[int], criterion: str, command: str, **more) -> dict:
    """A section's provenance: chosen on validation rows of these tuning seeds, by this criterion and command."""
    return {"split": "validation", "seeds": list(seeds), "criterion": criterion,
            "date": datetime.date.today().isoformat(), "command": command, "code": code_version(), **more}


def updated_point(point: dict, decisions: dict, records: dict) -> dict:
    """The point with the sections of `decisions` ({"rates": ..., "data": ..., "figure2": ...}) replaced and
    their provenance `records`; checked."""
    new = {**point, **decisions, "provenance": {**point["provenance"], **records}}
    check_point(new)
    return new


def held_out_overlap(tuning_seeds: list[int], evaluation_seeds: list[int], n_components: int, n_train: int,
                     n_test: int, **corpus) -> dict:
    """How many validation rows of the tuning seeds share their (instruction, input) pair with a test row of an
    evaluation seed, and how many share it with an evaluation seed's training row: {"validation_rows",
    "in_evaluation_test", "in_evaluation_train"}."""
    def pairs(seeds, split):
        return {(r["instruction"], r["input"]) for s in seeds for r in
                make_corpus(n_components=n_components, n_train=n_train, n_test=n_test, seed=s, **corpus)[split]}
    validation = [(r["instruction"], r["input"]) for s in tuning_seeds for r in
                  make_corpus(n_components=n_components, n_train=n_train, n_test=n_test, seed=s, **corpus)["test"]]
    test, train = pairs(evaluation_seeds, "test"), pairs(evaluation_seeds, "train")
    return {"validation_rows": len(validation), "in_evaluation_test": sum(p in test for p in validation),
            "in_evaluation_train": sum(p in train for p in validation)}


def _rate(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def decision_table(summary: list[dict], chosen: dict, what: str) -> str:
    """A markdown table of a stage: family, value (`what`), mean validation exact match ± sd (seeds), mean
    validation loss, and which value was chosen (in bold; "at the grid's edge" where it is the smallest or the
    largest of three or more tried: a value beyond it might do better)."""
    tried: dict[str, list] = {}
    for row in summary:
        tried.setdefault(row["family"], []).append(row["value"])
    lines = [f"| family | {what} | validation exact match (mean ± sd) | seeds | validation loss | chosen |",
             "|---|---|---|---|---|---|"]
    for row in summary:
        values = tried[row["family"]]
        edge = len(values) >= 3 and row["value"] in (min(values), max(values))
        mark = ("**yes**" + (", at the grid's edge" if edge else "")) if chosen.get(row["family"]) == row["value"] else ""
        lines.append(f"| {row['family']} | {_rate(row['value'])} | {row['exact_match']:.3f} ± {row['sd']:.3f} | "
                     f"{len(row['seeds'])} | {row['loss']:.3f} | {mark} |")
    return "\n".join(lines)


DOC_BEGIN, DOC_END = "<!-- lr_sweep: begin -->", "<!-- lr_sweep: end -->"


def write_doc_section(path, text: str) -> None:
    """Put `text` between the sweep's markers in the markdown file at path (appended with the markers when it has
    none), leaving the rest of the file as it is."""
    path = Path(path)
    doc = path.read_text() if path.exists() else ""
    block = f"{DOC_BEGIN}\n{text.strip()}\n{DOC_END}"
    if DOC_BEGIN in doc and DOC_END in doc:
        head, rest = doc.split(DOC_BEGIN, 1)
        doc = head + block + rest.split(DOC_END, 1)[1]
    else:
        doc = doc.rstrip("\n") + ("\n\n" if doc else "") + block + "\n"
    path.write_text(doc)
