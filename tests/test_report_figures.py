"""Every figure helper of hydralib.report, drawn on small inputs: no two texts overlap (titles, axis labels, tick
labels, legends, notes, measured as drawn) and every panel names both its axes; and the defects issue 26 found."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402
from matplotlib.colorbar import Colorbar  # noqa: E402
from matplotlib.container import ErrorbarContainer  # noqa: E402

from hydralib import report  # noqa: E402
from hydralib.clustering import dbscan_clusters, dbscan_eps_sweep, kmeans_sweep  # noqa: E402

RNG = np.random.default_rng(0)
POINTS = np.repeat(np.eye(4) * 5, 15, axis=0) + 0.3 * RNG.standard_normal((60, 4))  # 4 groups


def _drawn_texts(fig) -> list:
    """Every visible, non-empty text of the figure, with tick labels only where their tick is in view."""
    fig.canvas.draw()
    texts = [t for t in fig.texts if t.get_visible() and t.get_text().strip()]
    if fig._suptitle is not None:
        texts.append(fig._suptitle)
    for ax in fig.axes:
        texts += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label]
        for axis, low_high in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            low, high = sorted(low_high)
            for minor in (False, True):
                ticks = axis.get_minor_ticks() if minor else axis.get_major_ticks()
                locations = axis.get_minorticklocs() if minor else axis.get_majorticklocs()
                texts += [tick.label1 for tick, at in zip(ticks, locations) if low - 1e-9 <= at <= high + 1e-9]
        legend = ax.get_legend()
        if legend is not None:
            texts += legend.get_texts()
    return list({id(t): t for t in texts if t.get_visible() and t.get_text().strip()}.values())


def overlapping_texts(fig) -> list[tuple[str, str]]:
    renderer = fig.canvas.get_renderer()
    boxes = [(t.get_text(), t.get_window_extent(renderer).expanded(0.98, 0.9)) for t in _drawn_texts(fig)]
    return [(a, b) for i, (a, box_a) in enumerate(boxes) for b, box_b in boxes[i + 1:] if box_a.overlaps(box_b)]


def unlabelled_axes(fig) -> list[str]:
    colorbars = {id(ax) for ax in fig.axes if isinstance(getattr(ax, "_colorbar", None), Colorbar)}
    return [f"panel {i} ({ax.get_title()!r}): xlabel {ax.get_xlabel()!r}, ylabel {ax.get_ylabel()!r}"
            for i, ax in enumerate(fig.axes) if id(ax) not in colorbars
            and not (ax.get_xlabel().strip() and ax.get_ylabel().strip())]


def summary(em):
    return {"seeds": 2, "exact_match": (em, 0.05), "token_accuracy": (0.5, 0.01), "per_component": {},
            "test_loss": (1.0, 0.1), "trainable": 10, "paper_params": 8.0, "train_seconds": (1.0, 0.0)}


def validation_run(shift):
    return {"validation": [{"step": s, "loss": 1.0, "per_component": {"gsm8k": 2 - s / 10 + shift, "mmlu": 1 + s / 20}}
                           for s in (0, 4, 8)]}


def trials():
    return {"elbow": {"n_clusters": [4] * 15, "ari": [0.9] * 14 + [0.7]},
            "silhouette": {"n_clusters": [4] * 10 + [3] * 5, "ari": list(np.linspace(0.5, 0.9, 15))},
            "dbscan": {"n_clusters": [4] * 15, "ari": [1.0] * 15}}


def choosing_n():
    sweep = kmeans_sweep(POINTS, list(range(1, 9)))
    return report.plot_choosing_n(sweep, 4, 4, dbscan_clusters(POINTS), true_count=4)


LANE = {"base model": {"loss gsm8k": (2.0, 0.0), "loss mmlu": (3.0, 0.0)},
        "LoRA r8": {"loss gsm8k": (1.0, 0.0), "loss mmlu": (1.5, 0.0)}}
FIGURES = {
    "plot_methods": lambda: report.plot_methods({n: summary(0.5) for n in ("full fine-tuning", "LoRA r8", "LoRA r32",
                                                                           "Split 4x8", "HydraLoRA N=8")}, "methods"),
    "plot_dbscan_eps": lambda: report.plot_dbscan_eps(
        {"prompts": dbscan_eps_sweep(POINTS, [0.01, 0.05, 0.2, 0.5])}, true_count=4) and plt.gcf(),
    "plot_heterogeneity_gap": lambda: report.plot_heterogeneity_gap([1, 8], {1: [0.0, 0.02], 8: [0.2, 0.3]}, 8),
    "plot_choosing_n": choosing_n,
    "plot_cluster_trials": lambda: report.plot_cluster_trials(trials(), 4),
    "plot_usage_by_component": lambda: report.plot_usage_by_component(
        {"learned router": np.full((4, 4), 0.25), "cluster gate": np.eye(4)}, ["copy", "reverse", "upper", "sort"],
        "Mean gate per component and head"),
    "plot_validation_curves": lambda: report.plot_validation_curves(
        {"LoRA r8": [validation_run(0)], "HydraLoRA": [validation_run(0.1)]}, ["gsm8k", "mmlu"], "validation"),
    "plot_score_curves": lambda: report.plot_score_curves(
        {"Hydra r8 N=8 oracle": {1.0: [0.7, 0.72], 0.0: [0.6, 0.62]},
         "Hydra r8 N=8 cluster gate (instruction)": {1.0: [0.7, 0.71], 0.67: [0.5], 0.33: [0.4], 0.0: [0.3, 0.35]},
         "LoRA r32": {1.0: [0.5, 0.52], 0.0: [0.45, 0.5]}}, "identifiability", "when does clustering help?",
        notes={level: f"ARI instruction {ari:.2f}\nARI prompt {ari:.2f}"
               for level, ari in ((1.0, 1.0), (0.67, 0.55), (0.33, 0.21), (0.0, -0.03))}, reverse=True),
    "plot_component_losses": lambda: report.plot_component_losses(LANE, ["gsm8k", "mmlu"], "SmolLM2: 16 steps, 1 seed"),
}


def test_every_figure_helper_is_checked():
    helpers = {name for name in dir(report) if name.startswith("plot_") and callable(getattr(report, name))}
    assert helpers == set(FIGURES), f"figure helpers without a layout check: {sorted(helpers - set(FIGURES))}"


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_no_text_overlaps_and_every_axis_is_labelled(name):
    fig = FIGURES[name]()
    try:
        assert overlapping_texts(fig) == [], f"{name}: overlapping texts"
        assert unlabelled_axes(fig) == [], f"{name}: axes without a label"
    finally:
        plt.close("all")


def test_the_overlap_check_finds_crowded_log_ticks_and_a_title_under_the_suptitle():
    # what issue 26 saw: a log axis given its ticks before its scale keeps minor labels that crowd "8"
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.errorbar([1, 8], [0.0, 0.2])
    ax.minorticks_off()
    ax.set(xscale="log", xticks=[1, 8], xticklabels=["1", "8"])
    assert overlapping_texts(fig)
    fig, axes = plt.subplots(1, 2)
    axes[0].set_title("a panel title")
    fig.suptitle("an overall title", y=0.89)
    assert any("an overall title" in pair for pair in overlapping_texts(fig))
    assert unlabelled_axes(fig)
    plt.close("all")


def test_choosing_n_shows_the_true_count_where_a_choice_meets_it_on_integer_k_ticks():
    fig = choosing_n()
    for ax in fig.axes[:2]:
        true_line = next(line for line in ax.get_lines() if line.get_label().startswith("true count"))
        chosen = next(line for line in ax.get_lines() if line.get_color() == "tab:red")
        assert true_line.get_xdata()[0] == chosen.get_xdata()[0] == 4  # they coincide here...
        assert true_line.get_linewidth() > 2 * chosen.get_linewidth()  # ...and the grey band shows around the red
        assert all(float(t).is_integer() for t in ax.get_xticks())
    plt.close("all")


def test_cluster_trials_show_one_dot_per_trial_even_when_every_trial_agrees():
    fig = report.plot_cluster_trials(trials(), 4)
    counts = [c for c in fig.axes[0].collections if isinstance(c, PathCollection)]
    assert [len(c.get_offsets()) for c in counts] == [15, 15, 15]
    elbow = np.asarray(counts[0].get_offsets())
    assert set(elbow[:, 1]) == {4} and len(set(np.round(elbow[:, 0], 6))) == 15  # side by side, not one line
    plt.close("all")


def test_a_near_uniform_router_is_said_to_be_so():
    fig = report.plot_usage_by_component({"learned router": np.full((4, 4), 0.25) + 0.01 * np.eye(4),
                                          "cluster gate": np.eye(4)}, ["a", "b", "c", "d"], "usage")
    assert "near uniform (all ≈ 1/4)" in fig.axes[0].get_xlabel() and "near uniform" not in fig.axes[1].get_xlabel()
    plt.close("all")


def test_component_losses_draw_error_bars_only_where_seeds_give_a_spread():
    one_seed = report.plot_component_losses(LANE, ["gsm8k", "mmlu"], "1 seed")
    def error_bars(fig):
        return [c for c in fig.axes[0].containers if isinstance(c, ErrorbarContainer)]
    assert error_bars(one_seed) == [] and "one seed: no spread" in one_seed.axes[0].get_ylabel()
    spread = {name: {k: (m, 0.1) for k, (m, _) in row.items()} for name, row in LANE.items()}
    seeds = report.plot_component_losses(spread, ["gsm8k", "mmlu"], "3 seeds")
    assert len(error_bars(seeds)) == 2 and "± sd over seeds" in seeds.axes[0].get_ylabel()
    plt.close("all")


def test_score_curves_draw_each_method_at_its_levels_with_the_notes_under_the_ticks():
    fig = report.plot_score_curves({"a": {1.0: [0.5, 0.7], 0.0: [0.2, 0.2]}, "b": {1.0: [0.4], 0.5: [0.3], 0.0: [0.1]}},
                                   "identifiability", "t", notes={0.5: "ARI 0.40"}, marks={"elbow": 0.5}, reverse=True)
    ax = fig.axes[0]
    lines = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert [list(c.lines[0].get_xdata()) for c in lines] == [[0.0, 1.0], [0.0, 0.5, 1.0]]
    assert list(lines[0].lines[0].get_ydata()) == pytest.approx([0.2, 0.6])
    fig.canvas.draw()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "0.5\nARI 0.40", "1"]
    assert ax.xaxis_inverted()
    assert "elbow" in [t.get_text() for t in ax.get_legend().get_texts()]
    plt.close("all")
