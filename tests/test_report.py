"""Method tables and the paper's numbers: what the notebooks print beside each other."""
import pytest

import hydralib.specs as specs
from hydralib import paper
from hydralib.methods import adapter_config, with_lr
from hydralib.report import (lane_columns, lane_summary, lane_table, loss_trend, plot_component_losses,
                             plot_validation_curves)
from hydralib.report import method_table, summarise


def fake_result(em, loss, seconds=10.0):
    return {"components": ["a", "b"], "exact_match": em, "exact_match_per_component": {"a": em + 0.1, "b": em - 0.1},
            "test_loss": {"loss": loss, "token_accuracy": 0.5 + em / 2}, "train_seconds": seconds,
            "parameters": {"trainable": 1234, "paper": 1000.0}}


def test_summarise_gives_means_and_spreads_over_seeds():
    s = summarise([fake_result(0.5, 1.0), fake_result(0.7, 2.0)])
    assert s["seeds"] == 2 and s["exact_match"][0] == pytest.approx(0.6)
    assert s["exact_match"][1] == pytest.approx(0.1414, abs=1e-3) and s["test_loss"][0] == pytest.approx(1.5)
    assert s["per_component"]["a"][0] == pytest.approx(0.7) and s["trainable"] == 1234
    assert s["token_accuracy"][0] == pytest.approx(0.8)  # beside exact match: progress a whole string hides
    with pytest.raises(ValueError, match="no runs"):
        summarise([])


def test_method_table_has_a_row_per_method_with_both_parameter_counts():
    table = method_table({"LoRA r8": summarise([fake_result(0.5, 1.0)] * 2),
                          "Hydra": summarise([fake_result(0.6, 0.9), fake_result(0.8, 0.7)])})
    lines = table.strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("| method | seeds | exact match | token accuracy")
    assert "| Hydra | 2 | 0.700 ± 0.141 | 0.850 ± 0.071 | 0.800 ± 0.141 | 1,234 | 1,000 |" in table
    assert lines[0].endswith("| a | b |")


def test_the_papers_tables_are_labelled_as_the_papers():
    assert paper.TABLE1[("split", 8, 4)] == (46.94, 0.248)
    assert "The paper's Table 1" in paper.table1_markdown() and "46.94" in paper.table1_markdown()
    assert "The paper's Table 2" in paper.table2_markdown() and "| HydraLoRA r8 | 47.22" in paper.table2_markdown()


def test_run_methods_builds_one_spec_per_method_and_seed(monkeypatch):
    seen = []
    import hydralib.store as store
    monkeypatch.setattr(store, "run_many", lambda specs, store, processes, executor, address: seen.extend(specs) or
                        [{"seed": s.train.seed, "lr": s.train.lr} for s in specs])
    out = specs.run_methods(with_lr({"lora": adapter_config("lora", 8), "full": None}, 1e-3, 3e-4), [0, 1],
                           store=None, n_components=2, steps=5, pretrain_steps=0, n_train=16, n_test=4)
    assert [r["seed"] for r in out["lora"]] == [0, 1] and {r["lr"] for r in out["full"]} == {3e-4}
    assert seen[0].adapter.alpha == 16 and seen[2].adapter is None  # alpha = 2r at equal scale
    with pytest.raises(ValueError, match="method must be one of lora, split, hydra, got method='lorra'"):
        adapter_config("lorra")


def test_plot_methods_draws_a_bar_per_method_coloured_by_family(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    from hydralib.report import plot_methods
    summaries = {name: summarise([fake_result(0.5, 1.0)] * 2) for name in ("LoRA r8", "LoRA r32", "Hydra N=8")}
    fig = plot_methods(summaries, "t", tmp_path / "m.png")
    bars = fig.axes[0].patches
    assert len(bars) == 3 and (tmp_path / "m.png").exists()
    assert bars[0].get_facecolor() == bars[1].get_facecolor() != bars[2].get_facecolor()


def test_lane_summary_and_tables():

    def run(gsm8k, mmlu_loss, mmlu_correct, seconds):
        return {"test_loss": {"loss": gsm8k, "per_component": {"gsm8k": {"loss": gsm8k, "token_accuracy": 0.5},
                                                               "mmlu": {"loss": mmlu_loss, "token_accuracy": 0.7}}},
                "mmlu_correct": mmlu_correct, "gsm8k_cut_off": 0.25, "gsm8k_looping": 0.5, "train_seconds": seconds,
                "parameters": {"trainable": 1000, "paper": 500.0, "base": 100000}}
    base = [{k: v for k, v in run(2.0, 4.0, [0, 1, 0, 0], 0).items() if k not in ("train_seconds", "parameters")}]
    summary = lane_summary(base, {"LoRA r8": [run(1.0, 2.0, [1, 1, 0, 0], 10), run(1.2, 2.0, [1, 1, 1, 0], 12)]})
    assert summary["base model"]["mean loss"] == (3.0, 0.0) and "trainable" not in summary["base model"]
    lora = summary["LoRA r8"]
    assert lora["mean loss"][0] == pytest.approx(1.55) and lora["loss mmlu"] == (2.0, 0.0)
    assert lora["mean token acc."] == (pytest.approx(0.6), 0.0) and lora["paper % of base"] == pytest.approx(0.5)
    mmlu = lora["MMLU 0-shot"]  # 5 of 8 rows over the two seeds, pooled, with Wilson's 95 % interval
    assert mmlu["share"] == 0.625 and mmlu["n"] == 8 and mmlu["lo"] == pytest.approx(0.306, abs=1e-3)
    assert mmlu["hi"] == pytest.approx(0.863, abs=1e-3)
    assert lane_columns(summary, "accuracy") == ["MMLU 0-shot", "GSM8K cut off", "GSM8K loops"]
    assert "MMLU 0-shot" not in lane_columns(summary, "loss") and "mean loss" in lane_columns(summary, "loss")
    table = lane_table(summary, lane_columns(summary, "loss"))
    assert "| base model | 3.000 |" in table and "| LoRA r8 | 1.550 ± 0.071 |" in table and "1,000" in table
    assert "| LoRA r8 | 0.625 [0.31, 0.86] (n=8) | 0.250 | 0.500 |" in lane_table(summary, lane_columns(summary, "accuracy"))
    with pytest.raises(ValueError, match="unknown kind 'losses'; allowed: 'loss', 'accuracy'"):
        lane_columns(summary, "losses")


def test_validation_curves_are_drawn_per_component(tmp_path):
    curve = [{"step": s, "loss": 1.0, "per_component": {"a": 3.0 - s, "b": 1.0 + s}} for s in (0, 2, 4)]
    fig = plot_validation_curves({"LoRA r8": [{"validation": curve}, {"validation": curve}]}, ["a", "b"], "t",
                                 tmp_path / "v.png")
    (line_a,), (line_b,) = (ax.get_lines() for ax in fig.axes)
    assert list(line_a.get_xdata()) == [0, 2, 4] and list(line_b.get_ydata()) == [1.0, 3.0, 5.0]
    assert (tmp_path / "v.png").stat().st_size > 0


def test_loss_trend_smooths_and_says_whether_the_loss_still_falls():
    falling = loss_trend([{"step": s, "loss": 10.0 - s} for s in range(1, 21)], window=5)
    assert falling["steps"][0] == 5 and len(falling["losses"]) == 16
    assert falling["first"] == pytest.approx(7.0) and falling["last"] == pytest.approx(-8.0)
    assert falling["recent_points"] == 4 and falling["recent_drop"] == pytest.approx(3.0)
    short = loss_trend([{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}])  # ci: two steps
    assert short["losses"] == [1.5] and short["recent_points"] == 1 and short["recent_drop"] == 0.0
    with pytest.raises(ValueError, match="empty"):
        loss_trend([])


def test_component_losses_are_plotted_per_model_and_component(tmp_path):
    summary = {"base model": {"loss a": (2.0, 0.0), "loss b": (3.0, 0.0)},
               "LoRA r8": {"loss a": (1.0, 0.1), "loss b": (1.5, 0.2)}}
    fig = plot_component_losses(summary, ["a", "b"], "t", tmp_path / "x.png")
    heights = sorted(round(p.get_height(), 2) for p in fig.axes[0].patches)
    assert heights == [1.0, 1.5, 2.0, 3.0] and (tmp_path / "x.png").stat().st_size > 0


def test_accuracy_resolution_and_the_last_validation_change():
    from hydralib.report import accuracy_resolution, last_validation_change
    summary = {"base model": {"mean loss": (1.0, 0.0), "MMLU 0-shot": {"share": .2, "lo": .1, "hi": .3, "n": 100},
                              "GSM8K exact match": {"share": .1, "lo": 0, "hi": .4, "n": 1600}}}
    mmlu, gsm8k = accuracy_resolution(summary)
    assert mmlu.startswith("MMLU 0-shot: 100 test rows") and "±0.096" in mmlu and mmlu.endswith("not visible at this size")
    assert "±0.024" in gsm8k and gsm8k.endswith("is visible at this size")
    curve = [{"per_component": {"a": 3.0, "b": 1.0}}, {"per_component": {"a": 2.5, "b": 1.5}}]
    assert last_validation_change([{"validation": curve}, {"validation": curve[::-1]}]) == {"a": 0.0, "b": 0.0}
    assert last_validation_change([{"validation": curve}]) == {"a": -0.5, "b": 0.5}


def test_plot_dbscan_eps_draws_count_and_noise_and_finds_the_eps_of_the_true_count(tmp_path):
    import numpy as np
    from hydralib.clustering import dbscan_eps_sweep
    from hydralib.report import plot_dbscan_eps
    # three tight groups of directions (cosine distance within a group ~0, between groups 1)
    rng = np.random.default_rng(0)
    groups = np.repeat(np.eye(3), 20, axis=0) + 0.01 * rng.standard_normal((60, 3))
    sweeps = plot_dbscan_eps({"groups": dbscan_eps_sweep(groups, [1e-7, 0.2, 1.5])}, true_count=3,
                             path=tmp_path / "eps.png")
    assert sweeps["groups"]["n_clusters"] == [0, 3, 1] and sweeps["groups"]["closest"] == 1
    assert (tmp_path / "eps.png").exists()
    assert plot_dbscan_eps({"groups": dbscan_eps_sweep(groups, [1.5])}, true_count=3)["groups"]["closest"] is None


def test_crossover_level_is_the_first_level_where_the_better_mean_stops_exceeding():
    from hydralib.report import crossover_level
    better = {1.0: [0.7, 0.8], 0.67: [0.6, 0.6], 0.33: [0.4], 0.0: [0.5, 0.6]}
    worse = {1.0: [0.5, 0.5], 0.67: [0.55, 0.55], 0.33: [0.4], 0.0: [0.3, 0.3]}
    assert crossover_level([1.0, 0.67, 0.33, 0.0], better, worse) == 0.33  # equal means: no longer above
    assert crossover_level([1.0, 0.0], better, worse) is None
    assert crossover_level([0.0, 0.33], better, worse) == 0.33  # in the order given


def test_the_replications_table_labels_every_number_as_someone_elses_with_its_protocol():
    table = paper.replications_markdown()
    assert "their reported numbers, not ours" in table
    assert "| the paper (Tian et al. 2024) | HydraLoRA r8 | 47.22 | 0 |" in table
    assert "| mtLoRA (ICLR 2026) re-run | HydraLoRA | 42.4 | 5 | W_q, W_v |" in table
    assert "~41.5" in table and "(BBH 36.9)" in table and "45.3" in table
    assert len(table.strip().splitlines()) == 4 + len(paper.REPLICATIONS)
