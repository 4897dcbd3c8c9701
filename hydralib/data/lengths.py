"""Token lengths of real rows: a training length and a generation budget chosen from the data, and what they cut.

    lengths = measure(rows, tokenizer, "alpaca")               # per row: prompt, response and total tokens
    budget = length_budget(lengths, quantile=0.98)             # max_length, max_new_tokens per generated source
    print(truncation_markdown(truncation_table(lengths, budget)))

A row is bos + prompt + response + eos (as data.formatting.encode_row builds it). max_length is the largest
per-source quantile of the total, taken as a measured length (numpy's method "higher", not an interpolation
between two rows), so fewer than 1 - quantile of any source's rows are longer; those rows are dropped
from training (fitting_rows), never cut into a prompt without its start. The generation budget of a source is
the quantile of its reference answers' length (eos included), for the sources scored by generating (GSM8K,
HumanEval); MMLU is scored on the answer letter's likelihood and needs none.
"""
from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from .formatting import format_prompt

GENERATED_SOURCES = ("gsm8k", "humaneval")
ROUND_TO = 8  # lengths are rounded up to a multiple of 8 tokens


def measure(rows: list[dict], tokenizer, template: str) -> list[dict]:
    """Per row: its source, prompt tokens (bos included), response tokens (eos included) and the total."""
    bos = 1 if tokenizer.bos_token_id is not None else 0
    out = []
    for row in rows:
        prompt = len(tokenizer.encode(format_prompt(row, template), add_special_tokens=False)) + bos
        response = len(tokenizer.encode(row["output"], add_special_tokens=False)) + 1
        out.append({"source": row.get("source", row.get("component_name", "?")), "prompt": prompt,
                    "response": response, "total": prompt + response})
    return out


def _round_up(value: float) -> int:
    return int(math.ceil(value / ROUND_TO) * ROUND_TO)


def _by_source(lengths: list[dict]) -> dict[str, list[dict]]:
    grouped = defaultdict(list)
    for length in lengths:
        grouped[length["source"]].append(length)
    return dict(grouped)


def _quantile(values: list[int], quantile: float) -> float:
    """The measured value at `quantile` (the next one up, never an interpolation below it): fewer than
    1 - quantile of the values are larger. An interpolated quantile can fall between two rows and leave more out
    (HumanEval's 117 rows: 2.6% over an interpolated 98th percentile, 1.7% over this one)."""
    return float(np.quantile(values, quantile, method="higher"))


def length_budget(lengths: list[dict], quantile: float = 0.98) -> dict:
    """{"max_length": int, "max_new_tokens": {source: int}, "quantile": q} from measured lengths."""
    if not 0 < quantile <= 1:
        raise ValueError(f"quantile must be in (0, 1], got quantile={quantile!r}")
    if not lengths:
        raise ValueError("no rows to measure: length_budget needs the lengths of at least one row")
    grouped = _by_source(lengths)
    max_length = max(_round_up(_quantile([x["total"] for x in rows], quantile)) for rows in grouped.values())
    new_tokens = {source: _round_up(_quantile([x["response"] for x in rows], quantile))
                  for source, rows in grouped.items() if source in GENERATED_SOURCES}
    return {"max_length": max_length, "max_new_tokens": new_tokens, "quantile": quantile}


def truncation_table(lengths: list[dict], budget: dict) -> dict[str, dict]:
    """Per source: rows measured, the quantile of the total length, the share of rows longer than max_length
    (dropped from training; a test row loses the start of its prompt), and for generated sources the budget and
    the share of reference answers longer than it (an answer the model would be cut off in)."""
    table = {}
    for source, rows in sorted(_by_source(lengths).items()):
        totals = np.array([x["total"] for x in rows])
        entry = {"rows": len(rows), "total_quantile": _quantile(totals, budget["quantile"]),
                 "max_length": budget["max_length"], "over_max_length": float((totals > budget["max_length"]).mean())}
        if source in budget["max_new_tokens"]:
            limit = budget["max_new_tokens"][source]
            entry.update(max_new_tokens=limit,
                         answers_cut_off=float(np.mean([x["response"] > limit for x in rows])))
        table[source] = entry
    return table


def truncation_markdown(table: dict[str, dict]) -> str:
    lines = ["| source | rows | total tokens (quantile) | max_length | rows longer | new tokens | answers longer |",
             "|---|---|---|---|---|---|---|"]
    for source, e in table.items():
        generated = (f"{e['max_new_tokens']} | {e['answers_cut_off']:.1%}" if "max_new_tokens" in e
                     else "— (scored by likelihood) | —")
        lines.append(f"| {source} | {e['rows']} | {e['total_quantile']:.0f} | {e['max_length']} | "
                     f"{e['over_max_length']:.1%} | {generated} |")
    return "\n".join(lines) + "\n"


def fitting_rows(rows: list[dict], tokenizer, template: str, max_length: int) -> tuple[list[dict], dict[str, int]]:
    """(the rows whose whole text fits in max_length tokens, {source: rows dropped}): a row that does not fit is
    left out of training rather than cut into a different task."""
    kept, dropped = [], defaultdict(int)
    for row, length in zip(rows, measure(rows, tokenizer, template)):
        if length["total"] <= max_length:
            kept.append(row)
        else:
            dropped[length["source"]] += 1
    return kept, dict(dropped)


def lane_lengths(data: dict, tokenizer, template: str = "alpaca", quantile: float = 0.98,
                 max_length: int | None = None, max_new_tokens: int | None = None) -> tuple[dict, dict]:
    """(budget, {"train": table, "test": table}): the training length and the generation budget per source
    chosen from the training rows' lengths (their `quantile`; a number given overrides it), and what that
    budget cuts in the training rows and in the test rows (truncation_table)."""
    train, test = measure(data["train"], tokenizer, template), measure(data["test"], tokenizer, template)
    budget = length_budget(train, quantile)
    if max_length is not None:
        budget["max_length"] = max_length
    if max_new_tokens is not None:
        budget["max_new_tokens"] = {source: max_new_tokens for source in budget["max_new_tokens"]}
    return budget, {"train": truncation_table(train, budget), "test": truncation_table(test, budget)}
