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

Every decided row also carries a two-sided p-value (the paired t test over seeds, scipy's ttest_rel;
Welch's t unpaired; the bootstrap's own where it decides). The interval and verdict a notebook prints
are that row's alone. The table (claims_table) treats its rows as one family: it adjusts their
p-values by Benjamini-Hochberg (scipy's false_discovery_control), so that on average at most 5 % of
the rows it calls held or not held are false discoveries, and decides each verdict on the adjusted
value q: held / not held where q < 0.05 on the claimed / other side, inconclusive otherwise.
tests/test_claims.py runs the table's machinery on simulated tables of equal methods and of true
effects. A comparison recorded by several notebooks (the same runs: equal values per seed, or the
same `comparison` option) is one row of the family, shown once with the other notebooks named.

A 0/1 outcome over trials (two methods' cluster counts agree or not: agreement_claim) gets an exact
binomial (Clopper-Pearson) interval of its share and the exact binomial test against 1/2, a trials
count instead of seeds, and each method's counts beside the true N. Rows in other units (a speed-up,
joules) say their unit (option `unit`) and what their replicates are (option `replicates`).
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
ALPHA = 1 - CONFIDENCE  # the false discovery rate the table's Benjamini-Hochberg adjustment controls
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
ONE_SEED = "inconclusive (1 seed)"
NOT_RUN = "not run"
CLAIM_OPTIONS = ("better_rows", "worse_rows", "test_rows", "method", "sizes", "decided_by", "baseline", "agreement",
                 "unit", "replicates", "comparison")
# Options kept in the record (and shown in the table) as they are given.
RECORDED_OPTIONS = ("unit", "replicates", "comparison")


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


def proportion_interval(successes: int, n: int, confidence: float = CONFIDENCE,
                        method: str = "wilson") -> tuple[float, float, float]:
    """(share, lo, hi): an interval of a share of n 0/1 outcomes (scipy's binomtest): method "wilson" (the
    score interval) or "exact" (Clopper-Pearson, at least the stated coverage)."""
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"a proportion needs 0 <= successes <= n and n >= 1, got {successes} of {n}")
    if method not in ("wilson", "exact"):
        raise ValueError(f"method must be 'wilson' or 'exact', got {method!r}")
    interval = stats.binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method=method)
    return successes / n, float(interval.low), float(interval.high)


def pooled_half_width(outcomes: Sequence[int | bool]) -> float | None:
    """The half-width of the Wilson 95 % interval of the share of 0/1 outcomes pooled (e.g. over seeds): how finely
    they resolve an accuracy; None without outcomes."""
    if not outcomes:
        return None
    _, lo, hi = proportion_interval(sum(map(int, outcomes)), len(outcomes))
    return (hi - lo) / 2


def paired_p_value(better: Sequence[float], worse: Sequence[float]) -> float:
    """Two-sided p-value of the paired t test of better[i] - worse[i] against 0 (scipy's ttest_rel); nan for one
    pair. Differences without spread: 0 when they are all equal and non-zero, 1 when all zero (the limits)."""
    d = np.asarray(better, dtype=float) - np.asarray(worse, dtype=float)
    if d.size < 2:
        return math.nan
    if np.ptp(d) == 0:
        return 1.0 if d[0] == 0 else 0.0
    return float(stats.ttest_rel(better, worse).pvalue)


def welch_p_value(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of Welch's t test (scipy's ttest_ind, unequal variances), with welch_interval's limits."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.var(ddof=1) + b.var(ddof=1) == 0:
        return 1.0 if a.mean() == b.mean() else 0.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


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
    means = _bootstrap_means(diffs, n_resamples, seed)
    tail = (1 - confidence) / 2
    lo, hi = np.quantile(means, [tail, 1 - tail])
    return float(np.mean([d.mean() for d in diffs])), float(lo), float(hi)


def bootstrap_p_value(better_rows, worse_rows, n_resamples: int = BOOTSTRAP_RESAMPLES,
                      seed: int = BOOTSTRAP_SEED) -> float:
    """Two-sided bootstrap p-value of the mean paired difference (the resamples of bootstrap_interval): twice
    the share of resampled means on the far side of zero, at least 1 / n_resamples."""
    means = _bootstrap_means(_row_differences(better_rows, worse_rows), n_resamples, seed)
    if not means.any():
        return 1.0
    far = min(np.mean(means <= 0), np.mean(means >= 0))
    return float(min(1.0, max(2 * far, 1 / n_resamples)))


def _bootstrap_means(diffs: list[np.ndarray], n_resamples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = len(diffs)
    picks = rng.integers(n, size=(n_resamples, n))
    slot_means = np.empty((n_resamples, n))
    for slot in range(n):
        for s, d in enumerate(diffs):
            chosen = np.flatnonzero(picks[:, slot] == s)
            if chosen.size:
                slot_means[chosen, slot] = d[rng.integers(d.size, size=(chosen.size, d.size))].mean(1)
    return slot_means.mean(1)


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
        spread, how, p = (statistics.stdev(d) if len(d) > 1 else 0.0), "paired t", paired_p_value(better, worse)
    elif seeds < 2:
        difference, lo, hi, spread, how, p = mean_a - mean_b, math.nan, math.nan, 0.0, "paired t", math.nan
    else:
        difference, lo, hi = welch_interval(better, worse, confidence)
        spread, how = math.hypot(statistics.stdev(better), statistics.stdev(worse)), "Welch t, unpaired"
        p = welch_p_value(better, worse)
    result = {"ours": difference, "spread": spread, "lo": lo, "hi": hi, "p": p, "confidence": confidence,
              "better_mean": mean_a, "worse_mean": mean_b, "seeds": seeds, "method": how,
              "better_values": [float(v) for v in better], "worse_values": [float(v) for v in worse]}
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
            result.update(lo=b_lo, hi=b_hi, p=bootstrap_p_value(better_rows, worse_rows),
                          method=f"paired bootstrap over seeds and rows ({BOOTSTRAP_RESAMPLES})")
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


def agreement_result(outcomes: Sequence[float], counts: dict[str, list[int]] | None = None, true_n: int | None = None,
                     null: float = 0.5, confidence: float = CONFIDENCE) -> dict:
    """Do two methods agree in more than a share `null` of trials? outcomes: 1 per trial where they agree, else 0.

    The share of agreements with its exact (Clopper-Pearson) interval and the exact two-sided binomial test
    against `null`: held when the interval lies above null, not held below, inconclusive around it (a t
    interval of 0/1 outcomes has no width when they are all equal). counts: {method: its count per trial}, and
    true_n the true number, shown beside them."""
    values = np.asarray(outcomes, dtype=float)
    if values.size == 0 or not np.isin(values, (0.0, 1.0)).all():
        raise ValueError(f"agreement outcomes are a non-empty list of 0/1 per trial, got {list(outcomes)!r}")
    k, n = int(values.sum()), int(values.size)
    share, lo, hi = proportion_interval(k, n, confidence, method="exact")
    result = {"kind": "agreement", "ours": share, "lo": lo, "hi": hi, "confidence": confidence,
              "p": float(stats.binomtest(k, n, null).pvalue), "better_mean": share, "worse_mean": null,
              "agreements": k, "trials": n, "seeds": None, "method": "exact binomial (Clopper-Pearson)",
              "better_values": values.tolist(), "worse_values": []}
    if counts is not None:
        result["counts"] = {name: [int(c) for c in found] for name, found in counts.items()}
    if true_n is not None:
        result["true_n"] = int(true_n)
    result["verdict"] = verdict_of(lo - null, hi - null, n)
    return result


def agreement_claim(text: str, trials: dict[str, dict[str, list]], paper: str = "Fig. 7: both near the true N",
                    true_n: int | None = None, first: str = "elbow", second: str = "dbscan") -> tuple:
    """A "`first` and `second` agree on N" claim for record_verdicts, from clustering.cluster_trials' trials: 1 per
    trial where the two counts are equal; decided by agreement_result (exact binomial against 1/2), with both
    methods' counts and true_n (the true number of components) in its row."""
    for method in (first, second):
        if method not in trials:
            raise ValueError(f"method {method!r} is not in these trials; they ran: {', '.join(trials)}")
    counts = {method: list(trials[method]["n_clusters"]) for method in (first, second)}
    outcomes = [float(a == b) for a, b in zip(counts[first], counts[second])]
    return text, outcomes, [], paper, {"agreement": {"counts": counts, "true_n": true_n}}


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
                   sizes=None, unit: str | None = None, replicates: str | None = None,
                   comparison: str | None = None) -> dict:
    """Add one verdict (from compare, compare_to_baseline, agreement_result or not_decided) to
    folder/verdicts.json, replacing an earlier one for the same claim (which keeps its place).

    decided_by: what decides a claim this profile cannot: a profile name ("gpu") or needs_profile's text with
    its cost; the table says the row has not run there.
    sizes: (better's count, worse's count) as ParameterCount, run "parameters" dicts or ints.
    unit: what the compared values are, where not a score (e.g. "speed-up over LoRA r8's step time, x").
    replicates: what the values are replicates of, where not seeds (e.g. "timing repeats").
    comparison: a name shared by rows that make one comparison in several notebooks (the table keeps one)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / VERDICT_NAME
    records = json.loads(path.read_text()) if path.exists() else []
    entry = {"notebook": notebook, "claim": claim, "paper": paper, **_jsonable(result)}
    if decided_by:
        entry["decided_by"] = decided_by
    if sizes is not None:
        entry["better_size"], entry["worse_size"] = (parameter_size(s) for s in sizes)
    for name, value in (("unit", unit), ("replicates", replicates), ("comparison", comparison)):
        if value is not None:
            entry[name] = str(value)
    same = [i for i, r in enumerate(records) if r["notebook"] == notebook and r["claim"] == claim]
    if same:  # a re-run keeps the claim's place in the table
        records[same[0]] = entry
    else:
        records.append(entry)
    path.write_text(json.dumps(records, indent=2))
    return entry


def adjust_verdicts(records: list[dict], alpha: float = ALPHA) -> list[dict]:
    """The table's rows from recorded verdicts: one row per comparison, its Benjamini-Hochberg adjusted p-value q
    over the family, and the verdict decided on q.

    A record that repeats an earlier one's comparison (the same values on both sides, or the same `comparison`
    name) is dropped, its notebook listed in the first's "also_in". The family: every remaining row with a
    p-value. Each such row gets "q" and a "verdict" on it (held / not held where q < alpha on the claimed /
    other side, else inconclusive; its own unadjusted verdict stays as "unadjusted_verdict"). Rows without a
    p-value (not run here, one seed, records from before p-values) keep their verdict. Returns copies."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got alpha={alpha!r}")
    rows, seen = [], {}
    for record in records:
        key = _comparison_key(record)
        if key is not None and key in seen:
            first = seen[key]
            if record["notebook"] != first["notebook"] and record["notebook"] not in first["also_in"]:
                first["also_in"].append(record["notebook"])
            continue
        row = {**record, "also_in": []}
        if key is not None:
            seen[key] = row
        rows.append(row)
    family = [row for row in rows if _p_of(row) is not None]
    if family:
        adjusted = stats.false_discovery_control([row["p"] for row in family], method="bh")
        for row, q in zip(family, adjusted):
            row["q"], row["unadjusted_verdict"] = float(q), row["verdict"]
            side = row["ours"] - (row["worse_mean"] if row.get("kind") == "agreement" else 0.0)
            row["verdict"] = ("inconclusive" if q >= alpha or side == 0 else "held" if side > 0 else "not held")
    return rows


def claims_table(folders, alpha: float = ALPHA) -> str:
    """A markdown table of every verdict found in the given folders (one row per comparison): the two means, the
    difference with its 95 % interval, its p-value and Benjamini-Hochberg q over the table (adjust_verdicts), the
    seeds or trials, test rows, sizes and the verdict decided on q. A first line states the family."""
    records = []
    for folder in folders:
        path = Path(folder) / VERDICT_NAME
        if path.exists():
            records += json.loads(path.read_text())
    records.sort(key=lambda r: r["notebook"])  # notebook order, whichever notebook ran last; claims keep theirs
    rows = adjust_verdicts(records, alpha)
    family = [r for r in rows if r.get("q") is not None]
    notebooks = sorted({r["notebook"] for r in family} | {n for r in family for n in r["also_in"]})
    header = (f"Benjamini-Hochberg family: the {len(family)} rows with a p-value below "
              f"(notebooks {', '.join(notebooks) or 'none'}); a verdict is held or not held where the adjusted "
              f"q < {alpha:g}, on the claimed or the other side; the intervals and p are each row's own.")
    lines = [header, "",
             "| notebook | claim | the paper | ours: means compared | difference [95% interval] | p | q (BH) "
             "| seeds / trials | test rows | sizes: exact; paper | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {_notebook_cell(r)} | {r['claim']} | {r['paper']} | {_means_cell(r)} | {_difference_cell(r)} | "
              f"{_p_cell(r.get('p'))} | {_p_cell(r.get('q'))} | {_replicates_cell(r)} | {r.get('test_rows') or ''} | "
              f"{_sizes_cell(r)} | {_verdict_cell(r)} |"
              for r in rows]
    return "\n".join(lines) + "\n"


def record_verdicts(folder, notebook: str, claims: list[tuple], decided_by: str | None = None,
                    test_rows: int | None = None) -> list[dict]:
    """Record and print a notebook's verdicts.

    claims: (claim, better values, worse values, the paper's figure[, options]) per claim, values per seed.
    options (a dict, all optional): better_rows / worse_rows (per-row scores per seed, for the bootstrap),
    method ("t" or "bootstrap"), test_rows, sizes ((better's count, worse's count)), decided_by (a profile
    that decides this claim; with empty values the row says so and has no numbers), baseline (True: `worse`
    is a chance baseline per seed, see compare_to_baseline), agreement ({"counts", "true_n"}: `better` is 0/1
    per trial and `worse` empty, see agreement_claim), and unit, replicates, comparison (see record_verdict).
    decided_by and test_rows given here apply to every claim without its own."""
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
        one_sided = options.get("baseline") or "agreement" in options  # no values on the worse side
        if len(better) == 0 or (len(worse) == 0 and not one_sided):
            if not profile:
                raise ValueError(f"claim {claim!r} has no values; say which profile decides it (decided_by)")
            result = not_decided(profile, better, worse)
        elif "agreement" in options:
            result = agreement_result(better, **options["agreement"])
        elif options.get("baseline"):
            result = compare_to_baseline(better, worse)
        else:
            result = compare(better, worse, better_rows=options.get("better_rows"),
                             worse_rows=options.get("worse_rows"), method=options.get("method", "t"), test_rows=rows)
        if rows is not None and "test_rows" not in result and result["verdict"] != NOT_RUN:
            result["test_rows"] = int(rows)
        entry = record_verdict(folder, notebook, claim, result, paper=paper, decided_by=profile,
                               sizes=options.get("sizes"), **{k: options.get(k) for k in RECORDED_OPTIONS})
        p = "" if entry.get("p") is None else f", p = {_p_cell(entry['p'])} before the table's adjustment"
        print(f"{claim}: {_verdict_cell(entry)} ({_means_cell(entry)}, difference {_difference_cell(entry)}, "
              f"{_replicates_cell(entry)}{_rows_note(entry)}{p}){_sizes_note(entry)}")
        entries.append(entry)
    return entries


# --- in plain words -------------------------------------------------------------------------------


def table_verdicts(records: list[dict], alpha: float = ALPHA) -> list[dict]:
    """Each record as the claims table judges it, in the records' order: a copy holding its table row's verdict
    (adjust_verdicts over all `records`: decided on the Benjamini-Hochberg q; with "q" and the row's own
    "unadjusted_verdict" where it has a p-value) and "shown_in", the notebook whose row shows it (its own, or the
    first notebook that made the same comparison). Its numbers stay its own."""
    rows = adjust_verdicts(sorted(records, key=lambda r: r["notebook"]), alpha)
    by_claim = {(r["notebook"], r["claim"]): r for r in rows}
    by_comparison = {key: r for r in rows if (key := _comparison_key(r)) is not None}
    judged = []
    for record in records:
        row = by_claim.get((record["notebook"], record["claim"])) or by_comparison.get(_comparison_key(record))
        if row is None:
            raise ValueError(f"record {record['notebook']}: {record['claim']!r} is not among the records judged")
        table = {key: row[key] for key in ("q", "unadjusted_verdict") if key in row}
        judged.append({**record, **table, "verdict": row["verdict"], "shown_in": row["notebook"]})
    return judged


PLAIN_VERDICTS = {"held": "held", "not held": "not held (the other way round)", "inconclusive": "inconclusive",
                  ONE_SEED: "not decided (1 seed)"}


def verdict_sentence(r: dict) -> str:
    """A verdict in plain words, "<verdict>: <claim>: <what decided it>.", from a recorded verdict or a
    table_verdicts entry: the two means, the difference with its 95 % interval, the seeds (or trials) and test
    rows; where the table's adjustment changed the row's own verdict, both; what would decide a row this
    profile cannot."""
    needs = r.get("decided_by")
    needs = needs if not needs or " " in needs else needs_profile(needs)
    if r["verdict"] == NOT_RUN:
        return f"not run here: {r['claim']}; it needs {needs}."
    lead = f"{PLAIN_VERDICTS.get(r['verdict'], r['verdict'])}: {r['claim']}"
    text = f"{lead}: {_evidence(r)}." if r.get("ours") is not None else f"{lead}."
    if r.get("unadjusted_verdict") not in (None, r["verdict"]):
        text += (f" Its own interval says {r['unadjusted_verdict']}; the claims table, which adjusts the p-values "
                 f"of all its rows, says {r['verdict']} (q = {_p_cell(r.get('q'))}).")
    if needs:
        text += f" To decide it: {needs}."
    if r.get("shown_in") not in (None, r["notebook"]):
        text += f" The claims table shows this comparison once, under {r['shown_in']}."
    return text


def _evidence(r: dict) -> str:
    """What decided a verdict, in words (verdict_sentence)."""
    if r.get("kind") == "agreement":
        return (f"they agree in {r['agreements']} of {r['trials']} trials (the share's exact 95% interval: "
                f"{r['lo']:.2f} to {r['hi']:.2f}, against {r['worse_mean']:g})")
    worse = ("chance " if r.get("baseline") else "") + _number(r.get("worse_mean"), ".3f")
    unit = f" ({r['unit']})" if r.get("unit") else ""
    difference = r.get("ours")
    direction = ("equal" if not difference else
                 f"higher by {difference:.3f}" if difference > 0 else f"lower by {-difference:.3f}")
    if r.get("lo") is None or r.get("hi") is None or math.isnan(r["lo"]) or math.isnan(r["hi"]):
        interval = ", with no interval"  # one seed: None as recorded, nan as compare returns it
    else:
        holds_zero = ", which holds zero" if r["lo"] <= 0 <= r["hi"] else ""
        interval = f" (95% interval {r['lo']:+.3f} to {r['hi']:+.3f}{holds_zero})"
    replicates = "one seed" if r.get("seeds") == 1 and "replicates" not in r else _replicates_cell(r)
    rows = f" and {r['test_rows']} test rows" if r.get("test_rows") else ""
    return (f"{_number(r.get('better_mean'), '.3f')} against {worse}{unit}, {direction}{interval}, over "
            f"{replicates}{rows}")


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


def _comparison_key(r: dict):
    """What makes two records one comparison: a shared `comparison` name, else equal values on both sides. Rows of
    0/1 outcomes over trials (agreement) are never merged by their values: two different clusterings can agree in
    0 of 15 trials alike."""
    if r.get("comparison"):
        return "name", r["comparison"]
    better, worse = r.get("better_values"), r.get("worse_values")
    if not better or r.get("kind") == "agreement":
        return None
    return "values", r.get("kind", "paired"), tuple(round(v, 12) for v in better), tuple(round(v, 12) for v in worse)


def _p_of(r: dict) -> float | None:
    p = r.get("p")
    return None if p is None or (isinstance(p, float) and math.isnan(p)) else p


def _p_cell(p) -> str:
    if p is None:
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _notebook_cell(r: dict) -> str:
    also = r.get("also_in") or []
    return r["notebook"] + (f" (also in {', '.join(also)})" if also else "")


def _replicates_cell(r: dict) -> str:
    if r.get("kind") == "agreement":
        return f"{r['trials']} trials"
    seeds = r.get("seeds")
    return "" if seeds is None else f"{seeds} {r.get('replicates', 'seeds')}"


def _means_cell(r: dict) -> str:
    if r.get("kind") == "agreement":
        counts = "; ".join(f"{name} N {_count_range(found)}" for name, found in r.get("counts", {}).items())
        truth = f"; true N {r['true_n']}" if r.get("true_n") is not None else ""
        return f"agree in {r['agreements']} of {r['trials']} vs {r['worse_mean']:g}" + (f" ({counts}{truth})"
                                                                                        if counts or truth else "")
    if r.get("unit"):
        return f"{_number(r.get('better_mean'), '.3f')} vs {_number(r.get('worse_mean'), '.3f')} ({r['unit']})"
    worse = _number(r.get("worse_mean"), ".3f")
    if r.get("baseline"):
        worse = f"chance {worse}" + (f" (95% of chance below {r['chance_q95']:.3f})" if r.get("chance_q95") is not None
                                     else "")
    return f"{_number(r.get('better_mean'), '.3f')} vs {worse}"


def _count_range(found: list[int]) -> str:
    """The median count over trials, and its range: '8 (7-9)'."""
    low, high, middle = min(found), max(found), statistics.median(found)
    return f"{middle:g}" + (f" ({low}-{high})" if low != high else "")


def _difference_cell(r: dict) -> str:
    if r.get("kind") == "agreement":
        return f"share {r['ours']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}] exact"
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


def needs_profile(profile: str, device_hours: float | None = None) -> str:
    """What a claim this profile cannot decide needs, for decided_by: the command, with its estimated cost."""
    cost = f" (about {device_hours:.2g} device-hours, estimated)" if device_hours is not None else ""
    return f"`make suite PROFILE={profile}`{cost}"


def _verdict_cell(r: dict) -> str:
    """The verdict; a row this profile cannot decide says what would decide it and that it has not run."""
    needs = r.get("decided_by")
    if not needs:
        return r["verdict"]
    needs = needs if " " in needs else needs_profile(needs)  # a bare profile name, as older tables stored it
    return f"not run: needs {needs}" if r["verdict"] == NOT_RUN else f"{r['verdict']}; needs {needs} to decide"


def _rows_note(r: dict) -> str:
    return f", {r['test_rows']} test rows" if r.get("test_rows") else ""


def _sizes_note(r: dict) -> str:
    return f"; sizes {_sizes_cell(r)}" if "better_size" in r else ""
