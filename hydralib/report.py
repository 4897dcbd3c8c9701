"""Tables and plots of runs: one row per method, mean ± sd over seeds, per component and overall; the
real-data lane's tables (lane_summary; lane_table of its loss or accuracy columns), loss bars, validation
curves per source and the training-curve trend.

Results are the dicts `hydralib.pipeline.execute_run` returns (exact_match, exact_match_per_component,
test_loss, parameters, train_seconds)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FixedFormatter, FixedLocator, MaxNLocator, NullLocator

from .claims import mean_and_spread, proportion_interval


def summarise(results: list[dict]) -> dict:
    """One method's runs (one per seed) -> means and spreads of what the tables show."""
    if not results:
        raise ValueError("no runs to summarise")
    components = results[0]["components"]
    per_component = {c: mean_and_spread([r["exact_match_per_component"][c] for r in results])
                     for c in components if c in results[0]["exact_match_per_component"]}
    params = results[0]["parameters"]
    return {
        "seeds": len(results),
        "exact_match": mean_and_spread([r["exact_match"] for r in results]),
        "token_accuracy": mean_and_spread([r["test_loss"]["token_accuracy"] for r in results]),
        "per_component": per_component,
        "test_loss": mean_and_spread([r["test_loss"]["loss"] for r in results]),
        "trainable": params["trainable"],
        "paper_params": params["paper"],
        "train_seconds": mean_and_spread([r["train_seconds"] for r in results]),
    }


def method_table(summaries: dict[str, dict], per_component: bool = True) -> str:
    """A markdown table, one row per method (insertion order): exact match, teacher-forced token accuracy and
    loss as mean ± sd, both parameter counts, training seconds, and optionally the EM of each component (means).
    Token accuracy shows progress that exact match of a whole string hides."""
    first = next(iter(summaries.values()))
    components = list(first["per_component"]) if per_component else []
    head = ["method", "seeds", "exact match", "token accuracy", "test loss", "trainable", "paper's count", "train s"]
    head += [_short(c) for c in components]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, s in summaries.items():
        cells = [name, str(s["seeds"]), _pm(s["exact_match"]), _pm(s["token_accuracy"]), _pm(s["test_loss"]),
                 f"{s['trainable']:,}", f"{s['paper_params']:,.0f}", f"{s['train_seconds'][0]:.0f}"]
        cells += [f"{s['per_component'][c][0]:.2f}" if c in s["per_component"] else "-" for c in components]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _pm(value: tuple[float, float]) -> str:
    return f"{value[0]:.3f} ± {value[1]:.3f}"


def _short(name: str) -> str:
    return name if len(name) <= 8 else name[:7] + "."


def plot_methods(summaries: dict[str, dict], title: str, path=None):
    """Exact match per method as bars with their spread over seeds, coloured by family (the first word of the
    name: full, LoRA, Split, Hydra, ...); saved to path if given. Returns the figure."""
    names = list(summaries)
    families = list(dict.fromkeys(name.split()[0] for name in names))
    colors = [plt.get_cmap("tab10")(families.index(name.split()[0]) % 10) for name in names]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(names) + 2), 3.6))
    ax.bar(range(len(names)), [summaries[n]["exact_match"][0] for n in names],
           yerr=[summaries[n]["exact_match"][1] for n in names], capsize=3, color=colors)
    ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
    ax.set(xlabel="method", ylabel="exact match", title=title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def plot_dbscan_eps(sweeps: dict[str, dict], true_count: int, title_points: str = "points", path=None) -> dict:
    """DBSCAN's count of clusters and its share of noise points against eps, one line per sweep in `sweeps`
    ({label: clustering.dbscan_eps_sweep's result}), the true count marked (a log scale where counts run high).
    Returns each sweep plus "closest": the index of the eps whose count is the true one with the least noise, or
    None where no eps finds it."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    marked = {}
    for label, sweep in sweeps.items():
        found = [i for i, n in enumerate(sweep["n_clusters"]) if n == true_count]
        marked[label] = {**sweep, "closest": min(found, key=lambda i: sweep["noise"][i]) if found else None}
        axes[0].plot(sweep["eps"], sweep["n_clusters"], marker="o", label=label)
        axes[1].plot(sweep["eps"], sweep["noise"], marker="o", label=label)
    axes[0].axhline(true_count, color="grey", ls=":", label="true count")
    axes[0].set(xlabel="eps (cosine distance)", ylabel="clusters found", title="DBSCAN's count against eps")
    if max(n for sweep in sweeps.values() for n in sweep["n_clusters"]) > 16:
        ticks = [0, 1, 2, 4, 8, 16, 64, 256]
        axes[0].set_yscale("symlog", linthresh=1)
        axes[0].set_yticks(ticks, [str(t) for t in ticks])
        axes[0].set_ylabel("clusters found (log scale)")
    axes[1].set(xlabel="eps (cosine distance)", ylabel="share of noise points",
                title=f"and the {title_points} it leaves out")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
    return marked



def plot_heterogeneity_gap(levels: list[int], gaps: dict[int, list[float]], rank: int, path=None):
    """The paper's Figure 2 as measured: full fine-tuning's exact match minus LoRA's, per number of conflicting
    components mixed (mean ± sd over seeds, gaps {level: [one per seed]}), on a log axis labelled at the levels
    only (no minor tick labels to crowd them). Saved to path if given; returns the figure."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    means, spreads = zip(*(mean_and_spread(gaps[k]) for k in levels))
    ax.errorbar(levels, means, yerr=spreads, marker="o", capsize=3)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xscale("log")  # before the ticks: setting a scale resets its locators and formatters
    ax.xaxis.set_major_locator(FixedLocator(levels))
    ax.xaxis.set_major_formatter(FixedFormatter([str(k) for k in levels]))
    ax.xaxis.set_minor_locator(NullLocator())
    seeds = len(next(iter(gaps.values())))
    ax.set(xlabel="conflicting components mixed", ylabel=f"exact match: full FT - LoRA r{rank}",
           title=f"Measured Figure 2 ({seeds} seed{'s' if seeds != 1 else ''}, mean ± sd)")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
    return fig


def plot_choosing_n(sweep, elbow: int, best_silhouette: int, dbscan, true_count: int, features: str = "TF-IDF",
                    path=None):
    """Three ways to choose N (clustering.kmeans_sweep's sweep, its elbow and best silhouette, and
    clustering.dbscan_clusters' result), the true count marked as a wide grey band under each choice's red line,
    so that it shows where they coincide; k on integer ticks. Saved to path if given; returns the figure."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), layout="constrained")
    ks = list(sweep.ks)
    defined = [(k, v) for k, v in zip(ks, sweep.silhouette) if v is not None]
    axes[0].plot(ks, sweep.sse, marker="o")
    axes[0].axvline(elbow, color="tab:red", ls="--", label=f"elbow {elbow}")
    axes[0].set(xlabel="k (clusters)", ylabel="SSE", title=f"k-means SSE ({features})")
    axes[1].plot(*zip(*defined), marker="o")
    axes[1].axvline(best_silhouette, color="tab:red", ls="--", label=f"best {best_silhouette}")
    axes[1].set(xlabel="k (clusters)", ylabel="silhouette", title=f"silhouette ({features})")
    for ax in axes[:2]:
        ax.axvline(true_count, color="grey", lw=7, alpha=0.35, zorder=0, label=f"true count {true_count}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[2].plot(dbscan.k_distances)
    axes[2].axhline(dbscan.eps, color="tab:red", ls="--", label=f"eps {dbscan.eps:.3f}")
    axes[2].set(xlabel="points, sorted", ylabel="distance to k-th neighbour",
                title=f"DBSCAN: {dbscan.n_clusters} clusters (true {true_count})")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.suptitle(f"Choosing N on {true_count} conflicting components (grey band: the true count)")
    if path is not None:
        fig.savefig(path)
    return fig


def plot_cluster_trials(trials: dict[str, dict[str, list]], true_count: int, path=None):
    """The paper's Figure 7 as measured (clustering.cluster_trials' trials): the clusters each method found and
    their agreement with the true components (ARI), one dot per trial, spread sideways where trials tie so that a
    method that finds the same count every time shows as a column of dots, not a box collapsed to a line; the
    mean as a black bar. Saved to path if given; returns the figure."""
    names = list(trials)
    n_trials = len(trials[names[0]]["n_clusters"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, key in zip(axes, ("n_clusters", "ari")):
        for i, name in enumerate(names):
            values = np.asarray(trials[name][key], dtype=float)
            # each value's repeats side by side, centred on the method's position
            offsets = np.zeros(len(values))
            for value in np.unique(values):
                same = np.flatnonzero(values == value)
                offsets[same] = (np.arange(len(same)) - (len(same) - 1) / 2) * min(0.05, 0.7 / len(values))
            ax.scatter(i + offsets, values, s=14, alpha=0.7)
            ax.hlines(values.mean(), i - 0.3, i + 0.3, color="black", lw=1.5)
        ax.set_xticks(range(len(names)), names)
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.margins(y=0.15)  # dots on the extremes stay clear of the frame
    axes[0].axhline(true_count, color="grey", ls=":", label="true count")
    axes[0].yaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].legend(fontsize=8)
    axes[0].set(xlabel="method", ylabel="clusters found", title=f"Figure 7: clusters found, {n_trials} trials")
    axes[1].set(xlabel="method", ylabel="adjusted Rand index", title="agreement with the true components")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def plot_score_curves(curves: dict[str, dict[float, list[float]]], xlabel: str, title: str, ylabel: str = "exact match",
                      notes: dict[float, str] | None = None, marks: dict[str, float] | None = None,
                      reverse: bool = False, path=None):
    """Scores against a swept setting, one line per method ({method: {x: [score per seed]}}, mean ± sd over its
    seeds), ticks at the swept values, each tick's label followed by its line of `notes` (e.g. the clustering's
    ARI at that level), dotted vertical lines at `marks` ({label: x}); reverse: x decreasing to the right. Saved to
    path if given; returns the figure."""
    fig, ax = plt.subplots(figsize=(9, 4.4), layout="constrained")
    xs = sorted({x for curve in curves.values() for x in curve})
    for name, curve in curves.items():
        at = sorted(curve)
        means, spreads = zip(*(mean_and_spread(curve[x]) for x in at))
        ax.errorbar(at, means, yerr=spreads, marker="o", capsize=3, label=name)
    for i, (text, x) in enumerate((marks or {}).items()):
        ax.axvline(x, color=f"C{len(curves) + i}", ls=":", lw=1, label=text)
    ax.xaxis.set_major_locator(FixedLocator(xs))
    ax.xaxis.set_major_formatter(FixedFormatter([f"{x:g}" + (f"\n{notes[x]}" if notes and x in notes else "")
                                                 for x in xs]))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.tick_params(axis="x", labelsize=8 if notes else 10)
    if reverse:
        ax.invert_xaxis()
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    if path is not None:
        fig.savefig(path)
    return fig


def crossover_level(levels, better: dict[float, list[float]], worse: dict[float, list[float]]) -> float | None:
    """The first of `levels`, in the order given, where the mean of `better` no longer exceeds the mean of
    `worse` ({level: [score per seed]}), or None where it exceeds it at every level."""
    for level in levels:
        if mean_and_spread(better[level])[0] <= mean_and_spread(worse[level])[0]:
            return level
    return None


NEAR_UNIFORM = 0.05  # a panel whose every mean gate lies within this of 1/N routes every component alike


def plot_usage_by_component(usages: dict[str, np.ndarray], components: list[str], title: str, path=None):
    """Mean gate weight per component and head, one panel per router ({name: array (components, heads)}, e.g. a
    run's routing["usage_by_component"] averaged over layers). A panel within NEAR_UNIFORM of 1/N everywhere says
    so under it: that router sends every component to every head alike (no specialisation), which the shared
    colour scale alone shows as one flat colour. Saved to path if given; returns the figure."""
    names = list(usages)
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.9), squeeze=False, sharey=True,
                             layout="constrained")
    for ax, name in zip(axes[0], names):
        usage = np.asarray(usages[name])
        heads = usage.shape[1]
        image = ax.imshow(usage, vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(heads))
        ax.set_yticks(range(len(components)), components, fontsize=7)
        uniform = np.abs(usage - 1 / heads).max() < NEAR_UNIFORM
        ax.set(title=name, xlabel="head" + (f"\nnear uniform (all ≈ 1/{heads}): no specialisation" if uniform
                                            else ""), ylabel="true component")
    fig.colorbar(image, ax=axes[0].tolist(), label="mean gate weight")
    fig.suptitle(title)
    if path is not None:
        fig.savefig(path)
    return fig

# --- the real-data lane --------------------------------------------------------------------------
# (per-row outcomes in a run's result, the column they fill): 0/1 per test row, pooled over seeds for an interval
ACCURACIES = (("mmlu_correct", "MMLU 0-shot"), ("mmlu_few_shot_correct", "MMLU few-shot"),
              ("gsm8k_correct", "GSM8K exact match"), ("humaneval_correct", "HumanEval pass@1"))
# (share of generations, its column): cut off by the budget, or stopped in a loop (evaluate.StopWhenLooping)
CUT_OFF = (("gsm8k_cut_off", "GSM8K cut off"), ("gsm8k_looping", "GSM8K loops"),
           ("humaneval_cut_off", "HumanEval cut off"), ("humaneval_looping", "HumanEval loops"))


def mean_component_loss(result: dict) -> float:
    """The test loss averaged over components (each source counts once, however long its answers)."""
    per = result["test_loss"]["per_component"]
    return sum(v["loss"] for v in per.values()) / len(per)


def mean_component_token_accuracy(result: dict) -> float:
    """Teacher-forced token accuracy averaged over components (each source counts once)."""
    per = result["test_loss"]["per_component"]
    return sum(v["token_accuracy"] for v in per.values()) / len(per)


def lane_summary(base: list[dict], results: dict[str, list[dict]]) -> dict[str, dict]:
    """{row name: {column: value}} for the base model (scored on each seed's test rows) and each method.

    Losses and token accuracies (per component and their mean over components, each source counting once) are
    (mean, sd over seeds); accuracies are {"share", "lo", "hi", "n"}: the Wilson 95 % interval of the test rows
    of every seed pooled; the shares of generations cut off by the budget and stopped in a loop; for the methods
    trainable parameters and training seconds."""

    def summarise(runs):
        per = runs[0]["test_loss"]["per_component"]
        out = {"mean loss": mean_and_spread([mean_component_loss(r) for r in runs])}
        out.update({f"loss {c}": mean_and_spread([r["test_loss"]["per_component"][c]["loss"] for r in runs])
                    for c in per})
        out["mean token acc."] = mean_and_spread([mean_component_token_accuracy(r) for r in runs])
        out.update({f"token acc. {c}": mean_and_spread([r["test_loss"]["per_component"][c]["token_accuracy"]
                                                        for r in runs]) for c in per})
        for key, label in ACCURACIES:
            if key in runs[0]:
                pooled = [x for r in runs for x in r[key]]
                share, lo, hi = proportion_interval(int(sum(pooled)), len(pooled))
                label = label if key != "mmlu_few_shot_correct" else f"MMLU {runs[0]['mmlu_shots']}-shot"
                out[label] = {"share": share, "lo": lo, "hi": hi, "n": len(pooled)}
        for key, label in CUT_OFF:
            if key in runs[0]:
                out[label] = mean_and_spread([r[key] for r in runs])
        return out
    summary = {"base model": summarise(base)}
    for name, runs in results.items():
        summary[name] = {**summarise(runs), "train seconds": mean_and_spread([r["train_seconds"] for r in runs]),
                         "trainable": runs[0]["parameters"]["trainable"],
                         "paper % of base": 100 * runs[0]["parameters"]["paper"] / runs[0]["parameters"]["base"]}
    return summary


def lane_table(summary: dict[str, dict], columns: list[str] | None = None) -> str:
    """The summary as a markdown table, one row per model: mean ± sd where there are several seeds, an accuracy
    as share [95 % interval] (n rows). columns: which to show (default: every column, in order of appearance)."""
    columns = columns or list(dict.fromkeys(key for row in summary.values() for key in row))

    def cell(value):
        if value is None:
            return ""
        if isinstance(value, dict):
            return f"{value['share']:.3f} [{value['lo']:.2f}, {value['hi']:.2f}] (n={value['n']})"
        if isinstance(value, tuple):
            mean, sd = value
            return f"{mean:.3f} ± {sd:.3f}" if sd else f"{mean:.3f}"
        return f"{value:,}" if isinstance(value, int) else f"{value:.3f}"
    lines = ["| model | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(cell(row.get(c)) for c in columns) + " |" for name, row in summary.items()]
    return "\n".join(lines) + "\n"


def lane_columns(summary: dict[str, dict], kind: str) -> list[str]:
    """The columns of one of the lane's two tables: "loss" (losses and token accuracies, sizes, seconds) or
    "accuracy" (the task scores with their intervals, and the shares of generations cut off or in a loop)."""
    every = list(dict.fromkeys(key for row in summary.values() for key in row))
    scores = [c for c in every if any(isinstance(row.get(c), dict) for row in summary.values())]
    scores += [label for _, label in CUT_OFF if label in every]
    if kind == "accuracy":
        return scores
    if kind == "loss":
        return [c for c in every if c not in scores]
    raise ValueError(f"unknown kind {kind!r}; allowed: 'loss', 'accuracy'")


def accuracy_resolution(summary: dict[str, dict], difference: float = 0.05) -> list[str]:
    """For each accuracy column of a lane_summary: the half-width of a 95 % interval at an accuracy of 0.5 on its
    test rows (the widest it gets), and whether a `difference` between two methods is visible at that size."""
    lines = []
    for label, cell in summary["base model"].items():
        if isinstance(cell, dict):
            _, lo, hi = proportion_interval(cell["n"] // 2, cell["n"])
            half = (hi - lo) / 2
            visible = "visible" if half < difference else "not visible"
            lines.append(f"{label}: {cell['n']} test rows; at an accuracy of 0.5 the 95% interval is ±{half:.3f}, so a "
                         f"difference of {difference * 100:.0f} points is {visible} at this size")
    return lines


def last_validation_change(runs: list[dict]) -> dict[str, float]:
    """Per component, the change of validation loss over a method's last interval (the mean over its runs):
    negative means still falling when training stopped."""
    curves = [r["validation"] for r in runs]
    return {c: float(np.mean([curve[-1]["per_component"][c] - curve[-2]["per_component"][c] for curve in curves]))
            for c in curves[0][-1]["per_component"]}


def plot_validation_curves(results: dict[str, list[dict]], components: list[str], title: str, path=None):
    """Validation loss per component against the training step, one panel per component and one line per
    method (the mean over seeds of each run's result["validation"]); saved to path if given. A rising line
    is overfitting (or a learning rate too high) on that source, whatever the mean training loss does."""
    fig, axes = plt.subplots(1, len(components), figsize=(3.2 * len(components), 3.2), squeeze=False)
    for ax, component in zip(axes[0], components):
        for name, runs in results.items():
            curves = [r["validation"] for r in runs if r.get("validation")]
            if not curves:
                continue
            steps = [point["step"] for point in curves[0]]
            losses = np.mean([[point["per_component"].get(component, np.nan) for point in curve] for curve in curves],
                             axis=0)  # nan: no validation row of this component in a run
            ax.plot(steps, losses, marker="o", markersize=3, label=name)
        ax.set(title=component, xlabel="step", ylabel="validation loss")
    axes[0][0].set_ylabel("validation loss (response tokens)")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def plot_component_losses(summary: dict[str, dict], components: list[str], title: str, path=None):
    """Grouped bars: each model's test loss (a lane_summary row) on each component, with its spread over
    seeds as error bars (none at one seed, where there is no spread, and the axis says so); saved to path if
    given. Returns the figure."""
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    width = 0.8 / len(summary)
    cells = {name: [row.get(f"loss {c}", (np.nan, 0.0)) for c in components] for name, row in summary.items()}
    spread = any(sd > 0 for row in cells.values() for _, sd in row)  # one seed: every sd is 0, no bar to draw
    for i, (name, row) in enumerate(cells.items()):
        means, spreads = zip(*row)  # nan: no test rows of that component
        ax.bar(np.arange(len(components)) + i * width, means, width, yerr=spreads if spread else None, capsize=2,
               label=name)
    ax.set_xticks(np.arange(len(components)) + width * (len(summary) - 1) / 2, components)
    ax.set(xlabel="source (component)", title=title,
           ylabel="test loss (response tokens)\n" + ("bars: ± sd over seeds" if spread else "one seed: no spread"))
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def loss_trend(log: list[dict], window: int = 5) -> dict:
    """A training log's loss as a moving average of `window` steps (fewer when the log is shorter): the
    smoothed steps and losses, the first and last smoothed value, and recent_drop, how much it fell over the
    last quarter of the curve (recent_points points, at least 2 where there are): positive = still falling."""
    if not log:
        raise ValueError("the training log is empty")
    window = min(window, len(log))
    losses = np.convolve([m["loss"] for m in log], np.ones(window) / window, mode="valid")
    steps = [m["step"] for m in log][window - 1:]
    recent = min(len(losses), max(2, len(losses) // 4))
    return {"steps": steps, "losses": losses.tolist(), "first": float(losses[0]), "last": float(losses[-1]),
            "recent_points": recent, "recent_drop": float(losses[-recent] - losses[-1])}
