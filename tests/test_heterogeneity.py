"""Figure 2's design: equal rows per component at every level, every row seen once, and the gap's trend."""
import math

import pytest

from hydralib import heterogeneity
from hydralib.heterogeneity import equal_rows_levels, gap_per_seed, gap_slopes, run_levels
from hydralib.methods import FULL_FINETUNING, full_finetuning, lora, with_lr


def test_every_component_gets_the_same_rows_and_every_row_is_seen_once():
    design = equal_rows_levels([1, 2, 4, 8], rows_per_component=600, batch_size=32)
    assert design == {1: {"n_components": 1, "n_train": 600, "steps": 19},
                      2: {"n_components": 2, "n_train": 1200, "steps": 38},
                      4: {"n_components": 4, "n_train": 2400, "steps": 75},
                      8: {"n_components": 8, "n_train": 4800, "steps": 150}}  # the other notebooks' runs at 8
    assert all(o["steps"] * 32 >= o["n_train"] > (o["steps"] - 1) * 32 for o in design.values())


@pytest.mark.parametrize("levels, rows", [([], 600), ([1, 1], 600), ([0, 2], 600), ([True, 2], 600), ([1, 2], 0)])
def test_a_bad_design_is_refused(levels, rows):
    with pytest.raises(ValueError, match="levels|rows_per_component"):
        equal_rows_levels(levels, rows)


def _sweep(scores: dict) -> dict:
    return {k: {name: [{"exact_match": v} for v in values] for name, values in by_name.items()}
            for k, by_name in scores.items()}


def test_gaps_are_paired_per_seed_and_their_slope_is_per_doubling():
    sweep = _sweep({1: {"full": [0.8, 0.7], "lora": [0.8, 0.7]}, 8: {"full": [0.6, 0.5], "lora": [0.3, 0.35]}})
    gaps = gap_per_seed(sweep, "full", "lora")
    assert gaps == {1: [0.0, 0.0], 8: pytest.approx([0.3, 0.15])}
    linear = {1: [0.0, 0.1], 2: [0.05, 0.1], 4: [0.1, 0.1], 8: [0.15, 0.1]}  # +0.05 a doubling, and flat
    assert gap_slopes(linear) == pytest.approx([0.05, 0.0])
    assert gap_slopes({1: [0.0], 8: [0.3]}) == pytest.approx([0.1])  # three doublings
    with pytest.raises(ValueError, match="two levels"):
        gap_slopes({8: [0.1, 0.2]})
    with pytest.raises(ValueError, match="same seeds"):
        gap_slopes({1: [0.1, 0.2], 8: [0.1]})


def test_every_level_runs_in_one_call_with_its_own_rows_and_steps(monkeypatch, tmp_path):
    calls = []

    def fake_run_named(specs, store, processes, executor, address):
        calls.append(specs)
        return {key: [{"exact_match": spec.data["n_train"] + spec.train.seed} for spec in runs]
                for key, runs in specs.items()}
    monkeypatch.setattr(heterogeneity, "run_named", fake_run_named)
    methods = with_lr({**full_finetuning(), **lora(8)}, 5e-3, 1e-3)
    design = equal_rows_levels([1, 4], 64)
    sweep = run_levels(methods, design, [0, 1], store=None, pretrain_steps=300, n_test=8)
    assert len(calls) == 1  # one pool for every level
    for (k, name), runs in calls[0].items():
        assert [(s.data["n_components"], s.data["n_train"], s.train.steps, s.train.seed) for s in runs] == \
               [(k, 64 * k, math.ceil(64 * k / 32), seed) for seed in (0, 1)]
        assert runs[0].train.lr == methods[name]["lr"]
    assert sweep[4][FULL_FINETUNING] == [{"exact_match": 256}, {"exact_match": 257}]
    assert list(sweep) == [1, 4] and list(sweep[1]) == list(methods)
