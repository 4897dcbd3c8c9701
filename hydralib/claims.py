"""Verdicts on the paper's claims, from what we measured over seeds, gathered into one table.

A claim "A beats B" is *held* when mean(A) - mean(B) exceeds the spread of that difference
(the standard deviations over seeds, combined), *not held* when it is that far the other way,
and *inconclusive* in between. The paper's own figure is recorded beside ours, never instead of it.
"""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

VERDICT_NAME = "verdicts.json"


def mean_and_spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    if not values:
        raise ValueError("no values to summarise")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def compare(better: list[float], worse: list[float]) -> dict:
    """Is `better` above `worse`? The difference of means against the combined spread; with a single
    value on either side there is no spread, so the verdict is inconclusive whatever the difference."""
    mean_a, sd_a = mean_and_spread(better)
    mean_b, sd_b = mean_and_spread(worse)
    difference, spread = mean_a - mean_b, math.hypot(sd_a, sd_b)
    if min(len(better), len(worse)) < 2:  # one seed has no spread to measure a difference against
        verdict = "inconclusive"
    elif difference > spread:
        verdict = "held"
    elif difference < -spread:
        verdict = "not held"
    else:
        verdict = "inconclusive"
    return {"ours": difference, "spread": spread, "verdict": verdict, "better_mean": mean_a, "worse_mean": mean_b,
            "seeds": min(len(better), len(worse))}


def record_verdict(folder, notebook: str, claim: str, result: dict, paper: str = "") -> dict:
    """Add one verdict (from compare) to folder/verdicts.json, replacing an earlier one for the same claim."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / VERDICT_NAME
    records = json.loads(path.read_text()) if path.exists() else []
    entry = {"notebook": notebook, "claim": claim, "paper": paper, **result}
    same = [i for i, r in enumerate(records) if r["notebook"] == notebook and r["claim"] == claim]
    if same:  # a re-run keeps the claim's place in the table
        records[same[0]] = entry
    else:
        records.append(entry)
    path.write_text(json.dumps(records, indent=2))
    return entry


def claims_table(folders) -> str:
    """A markdown table of every verdict found in the given folders (one row per claim)."""
    rows = []
    for folder in folders:
        path = Path(folder) / VERDICT_NAME
        if path.exists():
            rows += json.loads(path.read_text())
    rows.sort(key=lambda r: r["notebook"])  # notebook order, whichever notebook ran last; claims keep theirs
    lines = ["| notebook | claim | the paper | ours: means compared | difference | spread | seeds | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['notebook']} | {r['claim']} | {r['paper']} | {r['better_mean']:.3f} vs {r['worse_mean']:.3f} | "
              f"{r['ours']:+.3f} | {r['spread']:.3f} | {r['seeds']} | {r['verdict']} |" for r in rows]
    return "\n".join(lines) + "\n"


def record_verdicts(folder, notebook: str, claims: list[tuple[str, list[float], list[float], str]]) -> list[dict]:
    """Record and print a notebook's verdicts: claims are (claim, better values, worse values, the paper's figure)."""
    entries = []
    for claim, better, worse, paper in claims:
        entry = record_verdict(folder, notebook, claim, compare(better, worse), paper=paper)
        print(f"{claim}: {entry['verdict']} ({entry['better_mean']:.3f} vs {entry['worse_mean']:.3f}, "
              f"difference {entry['ours']:+.3f}, spread {entry['spread']:.3f}, {entry['seeds']} seeds)")
        entries.append(entry)
    return entries
