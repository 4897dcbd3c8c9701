"""The operating point's tuned settings, in one file that the notebooks, the dry run and the sweep read.

    methods = tuned_methods({**full_finetuning(), **lora(8, 32)})   # {label: {"adapter", "lr"}} at the tuned rates
    rows = load_point()["figure2"]["rows_per_component"]

hydralib/operating_point.json holds the learning rates (full fine-tuning, one per adapter rank, and one per
method where the sweep found that method's best rate differs from its rank's), the synthetic words' longest
length, Figure 2's rows per component, and for each of these sections its provenance: the split it was chosen
on ("validation": the held-out rows of the tuning seeds' own corpora; "test": an evaluation seed's test rows,
the practice issue 23 retires; "none": set by hand), the seeds, the criterion, the date and the command.
benchmarks/lr_sweep.py writes it (hydralib.tuning); nothing else does.

Settings are tuned on TUNING_SEEDS and claims are made on EVALUATION_SEEDS: check_evaluation_seeds refuses
seeds to claim on whose held-out rows chose a section of the point, and names the sections chosen on the test rows
of the seeds a notebook claims on. Steps are not tuned: the budget sets them (every
training row seen once within the default suite's hour).
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path

from .config import AdapterConfig
from .data.synthetic import make_corpus
from .methods import FULL_FINETUNING, with_lr

TUNING_SEEDS = (100, 101, 102)
EVALUATION_SEEDS = (0, 1, 2, 3, 4)
POINT_FILE = Path(__file__).with_name("operating_point.json")
SECTIONS = ("rates", "data", "figure2")
SPLITS = ("validation", "test", "none")
# Figure 2's 1-component runs must stay below this exact match for full fine-tuning: at the ceiling both methods
# learn everything, the gap there is 0 by construction, and a "growing gap" would measure the ceiling.
FIGURE2_CEILING = 0.9
DEFAULT_WORD_LENGTH = inspect.signature(make_corpus).parameters["max_word_length"].default


def load_point(path=POINT_FILE) -> dict:
    """The operating point of a JSON file (default: the shipped one), checked (see check_point)."""
    try:
        point = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read an operating point from {path}: {err}") from None
    check_point(point, str(path))
    return point


def check_point(point, where: str = "the operating point") -> None:
    """Refuse a point without every section, with a rate that is not a number > 0, a rank that is not a whole
    number, a word length outside 3..12, rows per component below 1, or a provenance whose split is unknown."""
    if not isinstance(point, dict) or any(section not in point for section in (*SECTIONS, "provenance")):
        raise ValueError(f"{where} must be a dict with the sections {', '.join((*SECTIONS, 'provenance'))}")
    rates = point["rates"]
    if not isinstance(rates, dict) or set(rates) != {FULL_FINETUNING, "ranks", "methods"}:
        raise ValueError(f"{where}: rates must hold {FULL_FINETUNING!r}, 'ranks' and 'methods', got {rates!r}")
    named = {FULL_FINETUNING: rates[FULL_FINETUNING], **{f"rank {r}": v for r, v in rates["ranks"].items()},
             **rates["methods"]}
    bad = {name: rate for name, rate in named.items()
           if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0}
    if bad:
        raise ValueError(f"{where}: learning rates must be numbers > 0, got {bad!r}")
    if any(not str(rank).isdigit() for rank in rates["ranks"]):
        raise ValueError(f"{where}: rates' ranks must be whole numbers, got {sorted(rates['ranks'])!r}")
    length = point["data"].get("max_word_length")
    if isinstance(length, bool) or not isinstance(length, int) or not 3 <= length <= 12:
        raise ValueError(f"{where}: data.max_word_length must be a whole number in 3..12, got {length!r}")
    rows = point["figure2"].get("rows_per_component")
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise ValueError(f"{where}: figure2.rows_per_component must be a whole number >= 1, got {rows!r}")
    for section in SECTIONS:
        record = point["provenance"].get(section)
        if not isinstance(record, dict) or record.get("split") not in SPLITS or \
                not all(isinstance(s, int) for s in record.get("seeds", [None])):
            raise ValueError(f"{where}: provenance.{section} needs a split in {', '.join(SPLITS)} and a list of "
                             f"seeds, got {record!r}")


def tuned_methods(configs: dict[str, AdapterConfig | None], adapter_lr: float | dict | None = None,
                  full_lr: float | None = None, point: dict | None = None, **train_options) -> dict[str, dict]:
    """The methods as specs.run_methods takes them ({label: {"adapter", "lr", ...}}, as methods.with_lr gives),
    at the point's rates: a method the sweep tuned on its own (rates.methods, by label) at its rate, any other
    adapter at its rank's, full fine-tuning at the full rate. adapter_lr / full_lr, where given, replace the
    point's (a profile at another operating point, e.g. gpu's 600 steps): then every adapter takes its rank's
    rate from adapter_lr, as with_lr does."""
    point = point or load_point()
    rates = point["rates"]
    full = rates[FULL_FINETUNING] if full_lr is None else full_lr
    if adapter_lr is not None:
        return with_lr(configs, adapter_lr, full, **train_options)
    ranks = rank_rates(point)
    out = {}
    for name, config in configs.items():
        own = rates["methods"].get(name)
        out.update(with_lr({name: config}, ranks if own is None else own, full, **train_options))
    return out


def rank_rates(point: dict | None = None) -> dict[int, float]:
    """The point's adapter rates by rank, {rank: rate}, as methods.with_lr and with_rate_of_rank take them."""
    return {int(rank): rate for rank, rate in (point or load_point())["rates"]["ranks"].items()}


def tuning_seeds(point: dict | None = None, split: str = "validation") -> set[int]:
    """The seeds whose `split` rows chose any section of the point."""
    point = point or load_point()
    return {seed for section in SECTIONS if point["provenance"][section]["split"] == split
            for seed in point["provenance"][section].get("seeds", [])}


def check_evaluation_seeds(seeds, point: dict | None = None) -> str:
    """Refuse seeds to claim on whose held-out rows chose a section of the point (a claim on them measures the
    choice, not the method); the line a notebook prints about the rest: which sections were chosen on the test
    rows of some of these seeds (the practice issue 23 retires), or that none was."""
    point = point or load_point()
    tuned = sorted(set(seeds) & tuning_seeds(point))
    if tuned:
        raise ValueError(f"seeds {tuned} are seeds the operating point was tuned on (hydralib/operating_point.json's "
                         f"provenance); claim on others, e.g. {list(EVALUATION_SEEDS)}")
    on_test = {section: sorted(set(seeds) & set(point["provenance"][section].get("seeds", [])))
               for section in SECTIONS if point["provenance"][section]["split"] == "test"}
    on_test = {section: shared for section, shared in on_test.items() if shared}
    if not on_test:
        return "no setting of the operating point was chosen on these seeds"
    chosen = "; ".join(f"{section} on the test rows of seed(s) {', '.join(map(str, shared))}"
                       for section, shared in on_test.items())
    return (f"caution: some settings were chosen on these seeds' test rows ({chosen}); "
            f"benchmarks/lr_sweep.py re-chooses them on validation rows of the tuning seeds {list(TUNING_SEEDS)}")


def data_options(point: dict | None = None) -> dict:
    """The data keys the point adds to a synthetic run: none where its word length is the corpus' default (so
    runs stay the ones every notebook shares), else {"max_word_length": n}."""
    length = (point or load_point())["data"]["max_word_length"]
    return {} if length == DEFAULT_WORD_LENGTH else {"max_word_length": length}


def provenance_note(point: dict | None = None) -> str:
    """One line per section: what it holds, on which split and seeds it was chosen, and by what criterion."""
    point = point or load_point()
    lines = []
    for section in SECTIONS:
        record = point["provenance"][section]
        seeds = ", ".join(map(str, record.get("seeds", []))) or "no seeds"
        lines.append(f"{section}: chosen on {record['split']} rows ({seeds}; {record.get('date', 'no date')}): "
                     f"{record.get('criterion', '')}")
    return "\n".join(lines)


def write_point(point: dict, path=POINT_FILE) -> None:
    """Write a point (checked first) as the sweep leaves it: indented JSON, sections in their order."""
    check_point(point, str(path))
    Path(path).write_text(json.dumps(point, indent=2) + "\n")
