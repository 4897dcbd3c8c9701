"""Method tables and the paper's numbers: what the notebooks print beside each other."""
import pytest

import hydralib.runs as runs
from hydralib import paper
from hydralib.report import method_table, summarise


def fake_result(em, loss, seconds=10.0):
    return {"components": ["a", "b"], "exact_match": em, "exact_match_per_component": {"a": em + 0.1, "b": em - 0.1},
            "test_loss": {"loss": loss}, "train_seconds": seconds,
            "parameters": {"trainable": 1234, "paper": 1000.0}}


def test_summarise_gives_means_and_spreads_over_seeds():
    s = summarise([fake_result(0.5, 1.0), fake_result(0.7, 2.0)])
    assert s["seeds"] == 2 and s["exact_match"][0] == pytest.approx(0.6)
    assert s["exact_match"][1] == pytest.approx(0.1414, abs=1e-3) and s["test_loss"][0] == pytest.approx(1.5)
    assert s["per_component"]["a"][0] == pytest.approx(0.7) and s["trainable"] == 1234
    with pytest.raises(ValueError, match="no runs"):
        summarise([])


def test_method_table_has_a_row_per_method_with_both_parameter_counts():
    table = method_table({"LoRA r8": summarise([fake_result(0.5, 1.0)] * 2),
                          "Hydra": summarise([fake_result(0.6, 0.9), fake_result(0.8, 0.7)])})
    lines = table.strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("| method | seeds | exact match")
    assert "| Hydra | 2 | 0.700 ± 0.141 | 0.800 ± 0.141 | 1,234 | 1,000 |" in table
    assert lines[0].endswith("| a | b |")


def test_the_papers_tables_are_labelled_as_the_papers():
    assert paper.TABLE1[("split", 8, 4)] == (46.94, 0.248)
    assert "The paper's Table 1" in paper.table1_markdown() and "46.94" in paper.table1_markdown()
    assert "The paper's Table 2" in paper.table2_markdown() and "| HydraLoRA r8 | 47.22" in paper.table2_markdown()


def test_run_methods_builds_one_spec_per_method_and_seed(monkeypatch):
    seen = []
    monkeypatch.setattr(runs, "run_many", lambda specs, store, processes: seen.extend(specs) or
                        [{"seed": s["train"]["seed"], "lr": s["train"]["lr"]} for s in specs])
    out = runs.run_methods({"lora": {"adapter": runs.adapter("lora", 8), "lr": 1e-3},
                            "full": {"adapter": None, "lr": 3e-4}}, [0, 1], store=None, n_components=2, steps=5,
                           pretrain_steps=0, n_train=16, n_test=4)
    assert [r["seed"] for r in out["lora"]] == [0, 1] and {r["lr"] for r in out["full"]} == {3e-4}
    assert seen[0]["adapter"]["alpha"] == 16 and seen[2]["adapter"] is None  # alpha = 2r at equal scale
    with pytest.raises(ValueError, match="unknown method 'lorra'"):
        runs.adapter("lorra")


def test_plot_methods_draws_a_bar_per_method_coloured_by_family(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    from hydralib.report import plot_methods
    summaries = {name: summarise([fake_result(0.5, 1.0)] * 2) for name in ("LoRA r8", "LoRA r32", "Hydra N=8")}
    fig = plot_methods(summaries, "t", tmp_path / "m.png")
    bars = fig.axes[0].patches
    assert len(bars) == 3 and (tmp_path / "m.png").exists()
    assert bars[0].get_facecolor() == bars[1].get_facecolor() != bars[2].get_facecolor()
