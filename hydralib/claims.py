"""Verdicts on the paper's claims, from what we measured over seeds, gathered into one table.

A claim "A beats B" is judged on the *paired* difference over seeds: one seed fixes the data, the
initialisation and the batch order for both methods, so A's and B's runs of seed i share everything but
the method, and d_i = A_i - B_i removes what the seed does to both. With n seeds, the 95 % confidence
interval of the mean difference is mean(d) +- t_{0.975, n-1} sd(d) / sqrt(n) (Student's t over seeds).

- *held*: the interval lies entirely above zero (on the claimed side);
- *not held*: entirely below zero;
- *inconclusive*: it contains zero. One seed gives no interval: "inconclusive (1 seed)", never held.

Between equal methods the rule calls a claim held in 2.5 % of cases (one side of a 95 % interval);
tests/test_claims.py checks that on 1000 simulated claims, and that a true difference of two standard
deviations of d is found at 5 seeds (power 0.91 from the noncentral t).

With per-row scores (one 0/1 list per seed over the same test rows for both methods) a paired bootstrap
over seeds and rows (seeds resampled, then rows within each seed) is available beside the t interval
(method="bootstrap" lets it decide; with few seeds the t interval is the safer default).

Similarities and NMIs are compared with a chance baseline (compare_to_baseline), never with another
near-zero number. A claim between methods of different size carries both parameter counts (sizes_text).
The paper's own figure is recorded beside ours, never instead of it.
"""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import stats

VERDICT_NAME = "verdicts.json"
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
ONE_SEED = "inconclusive (1 seed)"
NOT_RUN = "not decided here"
CLAIM_OPTIONS = ("better_rows", "worse_rows", "test_rows", "method", "sizes", "decided_by", "baseline")


def mean_and_spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    if not values:
        raise ValueError("no values to summarise")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(mean, lo, hi): the t confidence interval of the mean of `values` (df = n - 1); (m, nan, nan) for n = 1."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        raise ValueError("no values for an interval")
    mean = float(values.mean())
    if values.size < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size))
    return mean, mean - half, mean + half


def proportion_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(share, lo, hi): the Wilson score interval of a share of n 0/1 outcomes (scipy's binomtest)."""
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"a proportion needs 0 <= successes <= n and n >= 1, got {successes} of {n}")
    interval = stats.binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return successes / n, float(interval.low), float(interval.high)


def welch_interval(a: Sequence[float], b: Sequence[float],
                   confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(mean(a) - mean(b), lo, hi) with Welch's t (unequal variances, Welch-Satterthwaite df): only for
    runs that cannot be paired (different numbers of seeds)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    difference = float(a.mean() - b.mean())
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    if se == 0:
        return difference, difference, difference
    df = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, df) * se)
    return difference, difference - half, difference + half


def bootstrap_interval(better_rows: Sequence[Sequence[float]], worse_rows: Sequence[Sequence[float]],
                       n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                       confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(mean difference, lo, hi): paired bootstrap over seeds and test rows, percentile interval.

    better_rows[i][j], worse_rows[i][j]: the score (e.g. exact match 0/1) of row j under seed i, the same
    rows for both methods. Each resample draws n seeds with replacement and, within each drawn seed, its
    rows with replacement (the same rows for both methods: the pairing is kept at both levels)."""
    diffs = _row_differences(better_rows, worse_rows)
    rng = np.random.default_rng(seed)
    n = len(diffs)
    picks = rng.integers(n, size=(n_resamples, n))
    slot_means = np.empty((n_resamples, n))
    for slot in range(n):
        for s, d in enumerate(diffs):
            chosen = np.flatnonzero(picks[:, slot] == s)
            if chosen.size:
                slot_means[chosen, slot] = d[rng.integers(d.size, size=(chosen.size, d.size))].mean(1)
    means = slot_means.mean(1)
    tail = (1 - confidence) / 2
    lo, hi = np.quantile(means, [tail, 1 - tail])
    return float(np.mean([d.mean() for d in diffs])), float(lo), float(hi)


def verdict_of(lo: float, hi: float, seeds: int) -> str:
    """held / not held / inconclusive from an interval of (claimed better) - (claimed worse)."""
    if seeds < 2 or math.isnan(lo) or math.isnan(hi):
        return ONE_SEED
    if lo > 0:
        return "held"
    if hi < 0:
        return "not held"
    return "inconclusive"


def compare(better: list[float], worse: list[float], better_rows=None, worse_rows=None, method: str = "t",
            test_rows: int | None = None, confidence: float = CONFIDENCE) -> dict:
    """Is `better` above `worse`? Values are per seed, seed i of one against seed i of the other.

    The verdict comes from the 95 % t interval of the paired differences better[i] - worse[i]; with
    per-row scores (better_rows / worse_rows: one list per seed over the same test rows) the paired
    bootstrap over seeds and rows is computed too, and decides when method="bootstrap". Lists of
    different lengths cannot be paired: Welch's interval then (method "Welch t, unpaired")."""
    if method not in ("t", "bootstrap"):
        raise ValueError(f"method must be 't' or 'bootstrap', got {method!r}")
    if len(better) == 0 or len(worse) == 0:
        raise ValueError(f"need values on both sides, got {len(better)} and {len(worse)}")
    mean_a, _ = mean_and_spread(list(better))
    mean_b, _ = mean_and_spread(list(worse))
    seeds = min(len(better), len(worse))
    if len(better) == len(worse):
        d = [a - b for a, b in zip(better, worse)]
        difference, lo, hi = t_interval(d, confidence)
        spread, how = (statistics.stdev(d) if len(d) > 1 else 0.0), "paired t"
    elif seeds < 2:
        difference, lo, hi, spread, how = mean_a - mean_b, math.nan, math.nan, 0.0, "paired t"
    else:
        difference, lo, hi = welch_interval(better, worse, confidence)
        spread, how = math.hypot(statistics.stdev(better), statistics.stdev(worse)), "Welch t, unpaired"
    result = {"ours": difference, "spread": spread, "lo": lo, "hi": hi, "confidence": confidence,
              "better_mean": mean_a, "worse_mean": mean_b, "seeds": seeds, "method": how}
    if (better_rows is None) != (worse_rows is None):
        raise ValueError("give per-row scores for both sides (better_rows and worse_rows) or for neither")
    if better_rows is not None:
        if len(better_rows) != len(better) or len(worse_rows) != len(worse):
            raise ValueError(f"per-row scores need one list per seed: {len(better_rows)} and {len(worse_rows)} "
                             f"lists for {len(better)} and {len(worse)} seeds")
        _, b_lo, b_hi = bootstrap_interval(better_rows, worse_rows, confidence=confidence)
        result.update(bootstrap_lo=b_lo, bootstrap_hi=b_hi)
        test_rows = test_rows if test_rows is not None else len(better_rows[0])
        if method == "bootstrap":
            result.update(lo=b_lo, hi=b_hi, method=f"paired bootstrap over seeds and rows ({BOOTSTRAP_RESAMPLES})")
    elif method == "bootstrap":
        raise ValueError("method='bootstrap' needs per-row scores (better_rows and worse_rows)")
    if test_rows is not None:
        result["test_rows"] = int(test_rows)
    result["verdict"] = verdict_of(result["lo"], result["hi"], seeds)
    return result


def compare_to_baseline(values_per_seed: list[float], baseline_per_seed, confidence: float = CONFIDENCE) -> dict:
    """Is a measured value (a similarity, an NMI) above what chance gives on the same seed?

    baseline_per_seed: one number for every seed, or one entry per seed, each a number (chance's
    expected value), a sequence of chance draws (e.g. permutation_similarity's), or a dict with "mean"
    (and "q95"), as chance_cosine and random_router_nmi return. The verdict is compare's on
    value[i] - chance mean[i]; the mean 95 % quantile of chance is recorded when known."""
    n = len(values_per_seed)
    if isinstance(baseline_per_seed, (int, float)) or isinstance(baseline_per_seed, dict):
        baseline_per_seed = [baseline_per_seed] * n
    if len(baseline_per_seed) != n:
        raise ValueError(f"need one chance baseline per seed: {len(baseline_per_seed)} for {n} values")
    means, q95s = zip(*(_chance(b) for b in baseline_per_seed)) if n else ((), ())
    result = compare(list(values_per_seed), list(means), confidence=confidence)
    result.update(method="paired t vs chance", baseline=True)
    if all(q is not None for q in q95s):
        result["chance_q95"] = statistics.fmean(q95s)
    return result


def not_decided(decided_by: str, better=None, worse=None) -> dict:
    """A claim this profile does not run (or cannot decide): kept in the table, naming the profile that does."""
    result = {"ours": None, "spread": None, "lo": None, "hi": None, "better_mean": None, "worse_mean": None,
              "seeds": 0, "verdict": NOT_RUN, "decided_by": decided_by}
    if better is not None and len(better):
        result["better_mean"] = statistics.fmean(better)
    if worse is not None and len(worse):
        result["worse_mean"] = statistics.fmean(worse)
    return result


# --- sizes ----------------------------------------------------------------------------------------


def parameter_size(count) -> dict:
    """{"exact", "paper", "paper_percent"} from a ParameterCount, a run's "parameters" dict (trainable,
    paper, base) or a dict already in this form."""
    if hasattr(count, "trainable") and hasattr(count, "paper"):
        return {"exact": int(count.trainable), "paper": float(count.paper), "paper_percent": float(count.paper_percent)}
    if isinstance(count, dict):
        if "exact" in count:
            return {"exact": int(count["exact"]), "paper": float(count.get("paper", count["exact"])),
                    "paper_percent": count.get("paper_percent")}
        if "trainable" in count:
            base = count.get("base")
            paper = float(count.get("paper", count["trainable"]))
            return {"exact": int(count["trainable"]), "paper": paper,
                    "paper_percent": 100.0 * paper / base if base else count.get("paper_percent")}
    if isinstance(count, (int, np.integer)):
        return {"exact": int(count), "paper": float(count), "paper_percent": None}
    raise ValueError(f"a parameter count must be a ParameterCount, a run's 'parameters' dict or an int, "
                     f"got {type(count).__name__}")


def size_text(name: str, count) -> str:
    """'Hydra r8 N=8 (exact 614,400; paper 0.124%)': a method with its trainable count, exact (routers
    included) and in the paper's convention ((#A + #B) / 2 LoRAs, no routers) as a share of the base."""
    size = parameter_size(count)
    paper = (f"paper {size['paper_percent']:.3g}%" if size.get("paper_percent") is not None
             else f"paper {size['paper']:,.0f}")
    return f"{name} (exact {size['exact']:,}; {paper})"


def sizes_text(better_name: str, better_count, worse_name: str, worse_count) -> str:
    """'A (exact ...; paper ...) vs B (...)', saying which side is larger when they differ."""
    a, b = parameter_size(better_count)["exact"], parameter_size(worse_count)["exact"]
    relation = ("the same size" if a == b else
                f"{better_name} is the larger, x{a / b:.2f}" if a > b else f"{better_name} is the smaller, x{a / b:.2f}")
    return f"{size_text(better_name, better_count)} vs {size_text(worse_name, worse_count)}: {relation}"


# --- recording ------------------------------------------------------------------------------------


def record_verdict(folder, notebook: str, claim: str, result: dict, paper: str = "", decided_by: str | None = None,
                   sizes=None) -> dict:
    """Add one verdict (from compare, compare_to_baseline or not_decided) to folder/verdicts.json,
    replacing an earlier one for the same claim (which keeps its place).

    decided_by: the profile that decides a claim this one cannot (e.g. "gpu"), shown in the table.
    sizes: (better's count, worse's count) as ParameterCount, run "parameters" dicts or ints."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / VERDICT_NAME
    records = json.loads(path.read_text()) if path.exists() else []
    entry = {"notebook": notebook, "claim": claim, "paper": paper, **_jsonable(result)}
    if decided_by:
        entry["decided_by"] = decided_by
    if sizes is not None:
        entry["better_size"], entry["worse_size"] = (parameter_size(s) for s in sizes)
    same = [i for i, r in enumerate(records) if r["notebook"] == notebook and r["claim"] == claim]
    if same:  # a re-run keeps the claim's place in the table
        records[same[0]] = entry
    else:
        records.append(entry)
    path.write_text(json.dumps(records, indent=2))
    return entry


def claims_table(folders) -> str:
    """A markdown table of every verdict found in the given folders (one row per claim): the two means,
    the paired difference with its 95 % interval, seeds, test rows, sizes and the verdict."""
    rows = []
    for folder in folders:
        path = Path(folder) / VERDICT_NAME
        if path.exists():
            rows += json.loads(path.read_text())
    rows.sort(key=lambda r: r["notebook"])  # notebook order, whichever notebook ran last; claims keep theirs
    lines = ["| notebook | claim | the paper | ours: means compared | difference [95% interval] | seeds | test rows "
             "| sizes: exact; paper | verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['notebook']} | {r['claim']} | {r['paper']} | {_means_cell(r)} | {_difference_cell(r)} | "
              f"{r.get('seeds', '')} | {r.get('test_rows') or ''} | {_sizes_cell(r)} | {_verdict_cell(r)} |"
              for r in rows]
    return "\n".join(lines) + "\n"


def record_verdicts(folder, notebook: str, claims: list[tuple], decided_by: str | None = None,
                    test_rows: int | None = None) -> list[dict]:
    """Record and print a notebook's verdicts.

    claims: (claim, better values, worse values, the paper's figure[, options]) per claim, values per seed.
    options (a dict, all optional): better_rows / worse_rows (per-row scores per seed, for the bootstrap),
    method ("t" or "bootstrap"), test_rows, sizes ((better's count, worse's count)), decided_by (a profile
    that decides this claim; with empty values the row says so and has no numbers), baseline (True: `worse`
    is a chance baseline per seed, see compare_to_baseline). decided_by and test_rows given here apply to
    every claim without its own."""
    entries = []
    for item in claims:
        if len(item) not in (4, 5):
            raise ValueError(f"a claim is (claim, better, worse, paper[, options]), got {len(item)} fields")
        claim, better, worse, paper = item[:4]
        options = dict(item[4]) if len(item) == 5 else {}
        unknown = sorted(set(options) - set(CLAIM_OPTIONS))
        if unknown:
            raise ValueError(f"unknown claim options {unknown}; allowed: {list(CLAIM_OPTIONS)}")
        profile = options.get("decided_by", decided_by)
        rows = options.get("test_rows", test_rows)
        if len(better) == 0 or (len(worse) == 0 and not options.get("baseline")):
            if not profile:
                raise ValueError(f"claim {claim!r} has no values; say which profile decides it (decided_by)")
            result = not_decided(profile, better, worse)
        elif options.get("baseline"):
            result = compare_to_baseline(better, worse)
        else:
            result = compare(better, worse, better_rows=options.get("better_rows"),
                             worse_rows=options.get("worse_rows"), method=options.get("method", "t"), test_rows=rows)
        if rows is not None and "test_rows" not in result and result["verdict"] != NOT_RUN:
            result["test_rows"] = int(rows)
        entry = record_verdict(folder, notebook, claim, result, paper=paper, decided_by=profile,
                               sizes=options.get("sizes"))
        print(f"{claim}: {_verdict_cell(entry)} ({_means_cell(entry)}, difference {_difference_cell(entry)}, "
              f"{entry['seeds']} seeds{_rows_note(entry)}){_sizes_note(entry)}")
        entries.append(entry)
    return entries


# --- helpers --------------------------------------------------------------------------------------


def _row_differences(better_rows, worse_rows) -> list[np.ndarray]:
    if len(better_rows) != len(worse_rows) or not better_rows:
        raise ValueError(f"need per-row scores for the same seeds on both sides, got {len(better_rows)} "
                         f"and {len(worse_rows)} seeds")
    diffs = []
    for i, (a, b) in enumerate(zip(better_rows, worse_rows)):
        a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        if a.shape != b.shape or a.ndim != 1 or a.size == 0:
            raise ValueError(f"seed {i}: per-row scores must be two non-empty lists over the same rows, "
                             f"got shapes {a.shape} and {b.shape}")
        diffs.append(a - b)
    return diffs


def _chance(baseline) -> tuple[float, float | None]:
    if isinstance(baseline, dict):
        return float(baseline["mean"]), baseline.get("q95")
    if isinstance(baseline, (int, float, np.floating, np.integer)):
        return float(baseline), None
    draws = np.asarray(baseline, dtype=float)
    if draws.size == 0:
        raise ValueError("a chance baseline given as draws needs at least one draw")
    return float(draws.mean()), float(np.quantile(draws, 0.95))


def _jsonable(result: dict) -> dict:
    def clean(v):
        if isinstance(v, (np.floating, float)):
            return None if math.isnan(v) else float(v)
        if isinstance(v, np.integer):
            return int(v)
        return v
    return {k: clean(v) for k, v in result.items()}


def _number(v, fmt: str) -> str:
    return "—" if v is None else format(v, fmt)


def _means_cell(r: dict) -> str:
    worse = _number(r.get("worse_mean"), ".3f")
    if r.get("baseline"):
        worse = f"chance {worse}" + (f" (95% of chance below {r['chance_q95']:.3f})" if r.get("chance_q95") is not None
                                     else "")
    return f"{_number(r.get('better_mean'), '.3f')} vs {worse}"


def _difference_cell(r: dict) -> str:
    text = _number(r.get("ours"), "+.3f")
    if r.get("lo") is not None and r.get("hi") is not None:
        text += f" [{r['lo']:+.3f}, {r['hi']:+.3f}]"
    elif "lo" not in r and r.get("spread") is not None:  # a record from before intervals
        text += f" (spread {r['spread']:.3f})"
    return text


def _sizes_cell(r: dict) -> str:
    if "better_size" not in r:
        return ""
    a, b = r["better_size"], r["worse_size"]
    return f"{_size_short(a)} vs {_size_short(b)}"


def _size_short(size: dict) -> str:
    paper = f"{size['paper_percent']:.3g}%" if size.get("paper_percent") is not None else f"{size['paper']:,.0f}"
    return f"{size['exact']:,}; {paper}"


def _verdict_cell(r: dict) -> str:
    return r["verdict"] + (f"; decided by: {r['decided_by']}" if r.get("decided_by") else "")


def _rows_note(r: dict) -> str:
    return f", {r['test_rows']} test rows" if r.get("test_rows") else ""


def _sizes_note(r: dict) -> str:
    return f"; sizes {_sizes_cell(r)}" if "better_size" in r else ""
