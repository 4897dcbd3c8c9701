"""Tables of runs: one row per method, mean ± sd over seeds, per component and overall.

Results are the dicts `hydralib.runs.execute_run` returns (exact_match, exact_match_per_component,
test_loss, parameters, train_seconds)."""
from __future__ import annotations

from .claims import mean_and_spread


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
        "per_component": per_component,
        "test_loss": mean_and_spread([r["test_loss"]["loss"] for r in results]),
        "trainable": params["trainable"],
        "paper_params": params["paper"],
        "train_seconds": mean_and_spread([r["train_seconds"] for r in results]),
    }


def method_table(summaries: dict[str, dict], per_component: bool = True) -> str:
    """A markdown table, one row per method (insertion order): EM and loss as mean ± sd, both parameter
    counts, training seconds, and optionally the EM of each component (means)."""
    first = next(iter(summaries.values()))
    components = list(first["per_component"]) if per_component else []
    head = ["method", "seeds", "exact match", "test loss", "trainable", "paper's count", "train s"]
    head += [_short(c) for c in components]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, s in summaries.items():
        cells = [name, str(s["seeds"]), _pm(s["exact_match"]), _pm(s["test_loss"]),
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
    import matplotlib.pyplot as plt
    names = list(summaries)
    families = list(dict.fromkeys(name.split()[0] for name in names))
    colors = [plt.get_cmap("tab10")(families.index(name.split()[0]) % 10) for name in names]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(names) + 2), 3.6))
    ax.bar(range(len(names)), [summaries[n]["exact_match"][0] for n in names],
           yerr=[summaries[n]["exact_match"][1] for n in names], capsize=3, color=colors)
    ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
    ax.set(ylabel="exact match", title=title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
