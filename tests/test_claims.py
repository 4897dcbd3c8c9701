"""Verdicts: from the paired difference over seeds and its 95 % t interval, checked on known answers."""
import json
import math

import numpy as np
import pytest
from scipy import stats

from hydralib.claims import (adjust_verdicts, agreement_claim, agreement_result, bootstrap_interval, bootstrap_p_value,
                             claims_table, compare, compare_to_baseline, mean_and_spread, record_verdict,
                             needs_profile, pooled_half_width, proportion_interval, record_verdicts, size_text,
                             sizes_text, t_interval, verdict_of)


def test_mean_and_spread():
    assert mean_and_spread([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_and_spread([0.5]) == (0.5, 0.0)
    with pytest.raises(ValueError):
        mean_and_spread([])


@pytest.mark.parametrize("better, worse, verdict", [
    ([0.60, 0.62, 0.61], [0.40, 0.41, 0.42], "held"),
    ([0.50, 0.60, 0.40], [0.45, 0.55, 0.50], "inconclusive"),
    ([0.30, 0.31, 0.32], [0.50, 0.52, 0.51], "not held"),
])
def test_verdict_depends_on_the_interval_of_the_paired_difference(better, worse, verdict):
    result = compare(better, worse)
    assert result["verdict"] == verdict and result["seeds"] == 3 and result["method"] == "paired t"
    assert result["lo"] <= result["ours"] <= result["hi"]


def test_the_interval_is_students_t_over_seeds():
    """A worked example: mean .026, squared deviations summing to .00212, sd sqrt(.00212 / 4) = .023022,
    standard error .023022 / sqrt(5) = .010296, and t_.975 at 4 degrees of freedom 2.7764 (printed t tables):
    half-width .028586. The paired t test's statistic is .026 / .010296 = 2.5253, two-sided p .0649."""
    d = [0.05, 0.02, 0.04, -0.01, 0.03]
    mean, lo, hi = t_interval(d)
    assert mean == pytest.approx(0.026) and lo == pytest.approx(-0.002586, abs=2e-6)
    assert hi == pytest.approx(0.054586, abs=2e-6)
    result = compare([0.5 + x for x in d], [0.5] * 5)
    assert result["lo"] == pytest.approx(lo) and result["p"] == pytest.approx(0.0649, abs=5e-4)
    assert result["verdict"] == "inconclusive"


def test_pairing_removes_what_the_seed_does_to_both_methods():
    """Seed effects much larger than the method's effect: unpaired the difference drowns, paired it is clear."""
    seed_effect = [0.0, 0.3, -0.2, 0.1, 0.25]
    better = [0.5 + s + 0.02 + e for s, e in zip(seed_effect, [0.001, -0.002, 0.0, 0.002, -0.001])]
    worse = [0.5 + s for s in seed_effect]
    assert compare(better, worse)["verdict"] == "held"
    assert compare(better, worse[:4])["method"] == "Welch t, unpaired"
    assert compare(better, worse[:4])["verdict"] == "inconclusive"


def test_one_seed_is_never_held_or_refuted():
    """One seed has no interval: a large difference is still only inconclusive, and says why."""
    assert compare([0.9], [0.1])["verdict"] == "inconclusive (1 seed)"
    assert compare([0.1], [0.9, 0.91])["verdict"] == "inconclusive (1 seed)"
    assert compare([0.9], [0.1])["seeds"] == 1
    assert verdict_of(0.1, 0.2, 1) == "inconclusive (1 seed)"


def test_equal_methods_are_held_in_at_most_5_percent_and_a_two_sd_difference_is_found():
    """1000 simulated claims at 5 seeds, each seed shifting both methods alike (the pairing's point).

    Equal methods: held exactly when the interval lies above 0, probability 2.5 % (one side of 95 %).
    A true difference of 2 sd of the paired difference: the interval's lower end is above 0 with the
    probability that a noncentral t (df 4, noncentrality 2 sqrt 5) exceeds t_.975,4: 0.909."""
    rng = np.random.default_rng(13)
    n_claims, seeds, noise = 1000, 5, 0.02
    sd_difference = noise * math.sqrt(2)

    def held_share(delta):
        seed_effect = rng.normal(0, 0.1, size=(n_claims, seeds))  # shared by both methods of a seed
        better = 0.5 + delta + seed_effect + rng.normal(0, noise, size=(n_claims, seeds))
        worse = 0.5 + seed_effect + rng.normal(0, noise, size=(n_claims, seeds))
        verdicts = [compare(list(b), list(w))["verdict"] for b, w in zip(better, worse)]
        return verdicts.count("held") / n_claims, verdicts.count("not held") / n_claims

    false_held, false_refuted = held_share(0.0)
    assert false_held <= 0.05 and false_refuted <= 0.05
    assert 0.01 <= false_held  # the rule is calibrated, not merely timid (expected 0.025, sd 0.005)
    expected_power = stats.nct.sf(stats.t.ppf(0.975, seeds - 1), seeds - 1, 2 * math.sqrt(seeds))
    assert expected_power == pytest.approx(0.909, abs=0.001)
    power, wrong_side = held_share(2 * sd_difference)
    assert power > 0.85 and wrong_side == 0  # binomial sd of the measured power at 1000 claims: 0.009
    assert abs(power - expected_power) < 0.04
    print(f"false held {false_held:.3f} (expected 0.025), power {power:.3f} (expected {expected_power:.3f})")


def test_paired_bootstrap_over_seeds_and_rows():
    rng = np.random.default_rng(0)
    worse_rows = [rng.random(400) < 0.3 for _ in range(5)]
    better_rows = [w | (rng.random(400) < 0.2) for w in worse_rows]  # better solves what worse does, and more
    mean, lo, hi = bootstrap_interval(better_rows, worse_rows)
    assert 0 < lo < mean < hi and mean == pytest.approx(np.mean([b.mean() - w.mean()
                                                                 for b, w in zip(better_rows, worse_rows)]))
    assert bootstrap_interval(better_rows, worse_rows) == (mean, lo, hi)  # a fixed generator seed
    better = [float(b.mean()) for b in better_rows]
    worse = [float(w.mean()) for w in worse_rows]
    result = compare(better, worse, better_rows=better_rows, worse_rows=worse_rows)
    assert result["test_rows"] == 400 and result["bootstrap_lo"] == pytest.approx(lo)
    assert result["method"] == "paired t" and result["verdict"] == "held"
    boot = compare(better, worse, better_rows=better_rows, worse_rows=worse_rows, method="bootstrap")
    assert boot["lo"] == pytest.approx(lo) and boot["verdict"] == "held" and boot["method"].startswith("paired boot")
    equal = bootstrap_interval(worse_rows, worse_rows)
    assert equal == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="same rows"):
        bootstrap_interval([[1, 0]], [[1, 0, 1]])
    with pytest.raises(ValueError, match="per-row"):
        compare(better, worse, method="bootstrap")


def test_a_value_is_compared_with_its_chance_baseline():
    similarity = [0.012, 0.004, -0.006, 0.010, -0.002]  # near zero, like chance
    result = compare_to_baseline(similarity, 0.0)
    assert result["verdict"] == "inconclusive" and result["baseline"] is True
    draws = [list(np.random.default_rng(s).normal(0, 0.01, 200)) for s in range(5)]
    assert compare_to_baseline([0.31, 0.28, 0.35, 0.30, 0.29], draws)["verdict"] == "held"
    nmi_chance = [{"mean": 0.02, "q95": 0.03}] * 5
    result = compare_to_baseline([0.6, 0.5, 0.7, 0.55, 0.65], nmi_chance)
    assert result["verdict"] == "held" and result["chance_q95"] == pytest.approx(0.03)
    assert result["worse_mean"] == pytest.approx(0.02)
    with pytest.raises(ValueError, match="one chance baseline per seed"):
        compare_to_baseline([0.1, 0.2], [0.0, 0.0, 0.0])


def test_verdicts_are_recorded_once_per_claim_and_tabulated(tmp_path):
    record_verdict(tmp_path, "01_x", "full beats lora", compare([0.6, 0.6], [0.4, 0.4]), paper="Fig. 2 (schematic)")
    record_verdict(tmp_path, "01_x", "full beats lora", compare([0.4, 0.4], [0.6, 0.6]))
    table = claims_table([tmp_path, tmp_path / "missing"])
    assert table.count("full beats lora") == 1 and "not held" in table and "-0.200 [-0.200, -0.200]" in table


def test_record_verdicts_records_and_prints_each_claim(tmp_path, capsys):
    entries = record_verdicts(tmp_path, "03_x", [("a beats b", [0.6, 0.7], [0.2, 0.3], "Table 2"),
                                                 ("b beats a", [0.2, 0.3], [0.6, 0.7], "")])
    assert [e["verdict"] for e in entries] == ["held", "not held"]
    assert "a beats b: held (0.650 vs 0.250" in capsys.readouterr().out
    assert claims_table([tmp_path]).count("| 03_x |") == 2


def test_the_table_shows_interval_seeds_rows_sizes_and_the_deciding_profile(tmp_path, capsys):
    class Count:  # the fields of hydralib.inject.ParameterCount that matter here
        def __init__(self, trainable, paper, base):
            self.trainable, self.paper, self.paper_percent = trainable, paper, 100 * paper / base

    hydra, lora32 = Count(614_400, 4.5 * 102_400, 10_000_000), Count(466_944, 4 * 102_400, 10_000_000)
    record_verdicts(tmp_path, "03_x", [
        ("hydra beats lora r32", [0.52, 0.55, 0.50, 0.53, 0.51], [0.45, 0.47, 0.46, 0.44, 0.48], "Table 2",
         {"sizes": (hydra, lora32), "test_rows": 500}),
        ("on the real set", [], [], "Table 2", {"decided_by": "gpu"}),
        ("similar A", [0.30, 0.31, 0.29], [0.0, 0.0, 0.0], "Fig. 3", {"baseline": True}),
        ("at one seed here", [0.6], [0.4], "", {"decided_by": "gpu"}),
    ])
    out = capsys.readouterr().out
    assert "hydra beats lora r32: held" in out and "500 test rows" in out and "614,400" in out
    lines = claims_table([tmp_path]).splitlines()
    assert lines[0].startswith("Benjamini-Hochberg family: the 2 rows with a p-value below (notebooks 03_x)")
    cells = [c.strip() for c in lines[4].split("|")[1:-1]]
    assert cells[:4] == ["03_x", "hydra beats lora r32", "Table 2", "0.522 vs 0.460"]
    # the larger of the family's two p-values: Benjamini-Hochberg leaves it as it is (q = p * 2 / 2)
    assert cells[4].startswith("+0.062 [+0.0") and cells[5] == cells[6] == "0.006"
    assert cells[7:9] == ["5 seeds", "500"]
    assert cells[9] == "614,400; 4.61% vs 466,944; 4.1%" and cells[10] == "held"
    assert "not run: needs `make suite PROFILE=gpu`" in lines[5] and "| — vs — |" in lines[5]
    assert "chance 0.000" in lines[6] and "| held |" in lines[6]
    assert lines[7].endswith("| inconclusive (1 seed); needs `make suite PROFILE=gpu` to decide |")
    assert "| — | — |" in lines[7]
    assert needs_profile("gpu", 1.43) == "`make suite PROFILE=gpu` (about 1.4 device-hours, estimated)"
    stored = json.loads((tmp_path / "verdicts.json").read_text())
    assert stored[1]["decided_by"] == "gpu" and stored[3]["lo"] is None and stored[3]["p"] is None  # no NaN
    with pytest.raises(ValueError, match="decided_by"):
        record_verdicts(tmp_path, "03_x", [("nothing", [], [], "")])
    with pytest.raises(ValueError, match="unknown claim options"):
        record_verdicts(tmp_path, "03_x", [("typo", [0.1, 0.2], [0.0, 0.1], "", {"size": 1})])


def test_size_texts_name_both_counts_and_the_larger_side():
    run_parameters = {"trainable": 614_400, "paper": 460_800, "base": 10_000_000, "adapter": 600_000, "router": 14_400}
    assert size_text("Hydra r8 N=8", run_parameters) == "Hydra r8 N=8 (exact 614,400; paper 4.61%)"
    text = sizes_text("Hydra r8 N=8", run_parameters, "LoRA r32", 466_944)
    assert text == ("Hydra r8 N=8 (exact 614,400; paper 4.61%) vs LoRA r32 (exact 466,944; paper 466,944): "
                    "Hydra r8 N=8 is the larger, x1.32")
    assert "is the smaller" in sizes_text("a", 10, "b", 20) and "the same size" in sizes_text("a", 10, "b", 10)


def test_a_table_from_older_records_without_intervals_still_renders(tmp_path):
    old = [{"notebook": "01_x", "claim": "old", "paper": "", "ours": 0.1, "spread": 0.05, "verdict": "held",
            "better_mean": 0.5, "worse_mean": 0.4, "seeds": 3}]
    (tmp_path / "verdicts.json").write_text(json.dumps(old))
    assert "+0.100 (spread 0.050)" in claims_table([tmp_path])


def test_a_rerun_notebook_keeps_its_rows_in_place_and_the_table_follows_notebook_order(tmp_path):
    record_verdict(tmp_path, "05_x", "e beats f", compare([0.6, 0.7], [0.2, 0.3]))
    record_verdict(tmp_path, "01_x", "a beats b", compare([0.6, 0.7], [0.2, 0.3]))
    record_verdict(tmp_path, "01_x", "c beats d", compare([0.61, 0.71], [0.2, 0.3]))
    record_verdict(tmp_path, "01_x", "a beats b", compare([0.2, 0.3], [0.6, 0.7]))  # 01 again, after 05
    claims = [line.split(" | ")[1] for line in claims_table([tmp_path]).splitlines()[4:]]
    assert claims == ["a beats b", "c beats d", "e beats f"]
    assert "not held" in claims_table([tmp_path]).splitlines()[4]


# --- the table's family: Benjamini-Hochberg, repeated comparisons, agreement rows, units ----------------


def _simulated_tables(rng, n_tables, n_null, effects, seeds=5, noise=0.02):
    """Tables of claims as the notebooks record them: per row, per-seed scores of two methods sharing each seed's
    effect; `effects` lists the true differences (in sd of the paired difference) of the rows that have one."""
    sd_difference = noise * math.sqrt(2)
    tables = []
    for _ in range(n_tables):
        deltas = [0.0] * n_null + [e * sd_difference for e in effects]
        records = []
        for i, delta in enumerate(deltas):
            seed_effect = rng.normal(0, 0.1, seeds)
            better = 0.5 + delta + seed_effect + rng.normal(0, noise, seeds)
            worse = 0.5 + seed_effect + rng.normal(0, noise, seeds)
            records.append({"notebook": "0x", "claim": str(i), "paper": "", "true": delta != 0,
                            **compare(list(better), list(worse))})
        tables.append(records)
    return tables


def _discoveries(rows, verdict_key="verdict"):
    called = [r for r in rows if r[verdict_key] in ("held", "not held")]
    false = [r for r in called if not r["true"] or r[verdict_key] == "not held"]
    return len(called), len(false), sum(r["true"] and r[verdict_key] == "held" for r in rows)


def test_the_table_keeps_false_discoveries_at_most_5_percent_and_finds_true_effects():
    """400 simulated tables of 40 claims at 5 seeds, 30 between equal methods and 10 with a true difference of
    3 sd of the paired difference. Benjamini-Hochberg bounds the expected share of false discoveries among the
    rows called held or not held by 0.05 x 30/40 = 0.0375; the rows' own 95 % intervals call one or more of the
    30 null rows in most tables (1 - 0.95^30 = 0.79)."""
    rng = np.random.default_rng(23)
    tables = _simulated_tables(rng, 400, 30, [3.0] * 10)
    fdp, fdp_unadjusted, power, any_null_unadjusted = [], [], [], []
    for records in tables:
        rows = adjust_verdicts(records)
        assert len(rows) == 40 and all(r["q"] >= r["p"] for r in rows)
        called, false, found = _discoveries(rows)
        fdp.append(false / called if called else 0.0)
        power.append(found / 10)
        called_u, false_u, _ = _discoveries(rows, "unadjusted_verdict")
        fdp_unadjusted.append(false_u / called_u if called_u else 0.0)
        any_null_unadjusted.append(any(r["unadjusted_verdict"] != "inconclusive" for r in rows if not r["true"]))
    print(f"FDR {np.mean(fdp):.4f} (bound 0.0375), unadjusted {np.mean(fdp_unadjusted):.4f}; "
          f"power {np.mean(power):.3f}")
    assert np.mean(fdp) <= 0.05
    assert np.mean(power) > 0.8  # the true effects are found
    assert np.mean(any_null_unadjusted) > 0.7 and np.mean(fdp_unadjusted) > np.mean(fdp)


def test_a_table_of_equal_methods_only_calls_almost_nothing():
    """With every null true, a false discovery rate is the chance of any call: at most 0.05 over the table."""
    rng = np.random.default_rng(5)
    tables = _simulated_tables(rng, 300, 20, [])
    any_call = [any(r["verdict"] != "inconclusive" for r in adjust_verdicts(records)) for records in tables]
    assert np.mean(any_call) <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / 300)  # 0.05 within its simulation error
    assert np.mean(any_call) > 0.01  # calibrated, not merely timid


def test_a_comparison_repeated_in_notebooks_is_one_row_and_one_member_of_the_family(tmp_path):
    scores_a, scores_b = [0.60, 0.62, 0.61, 0.63], [0.50, 0.49, 0.52, 0.50]
    record_verdicts(tmp_path, "03_x", [("hydra beats lora r8", scores_a, scores_b, "Table 2")])
    record_verdicts(tmp_path, "05_x", [("HydraLoRA beats w/o MoE", scores_a, scores_b, "Fig. 6"),
                                       ("w/o gate is LoRA again", [0.5, 0.6, 0.55, 0.5], [0.4, 0.5, 0.5, 0.45], "",
                                        {"comparison": "lora r8"})])
    record_verdicts(tmp_path, "04_x", [("hydra beats lora (04)", scores_a, scores_b, "Fig. 8"),
                                       ("one LoRA r8 again", [0.51, 0.6, 0.55, 0.5], [0.4, 0.5, 0.5, 0.45], "",
                                        {"comparison": "lora r8"})])
    lines = claims_table([tmp_path]).splitlines()
    assert lines[0].startswith("Benjamini-Hochberg family: the 2 rows with a p-value below (notebooks 03_x, 04_x, "
                               "05_x)")
    body = lines[4:]
    assert len(body) == 2
    assert body[0].startswith("| 03_x (also in 04_x, 05_x) | hydra beats lora r8 |")
    assert body[1].startswith("| 04_x (also in 05_x) | one LoRA r8 again |")


def test_agreement_rows_use_an_exact_binomial_interval_over_trials_and_show_the_counts(tmp_path):
    """All 15 trials agreeing: the Clopper-Pearson lower end is 0.025^(1/15) = 0.7820 and the exact two-sided test
    against 1/2 gives p = 2 / 2^15 = 6.1e-5; 8 of 15 is inconclusive (a t interval of 15 equal outcomes would
    have no width at all)."""
    always = {"elbow": {"n_clusters": [8] * 15}, "dbscan": {"n_clusters": [8] * 15}}
    result = agreement_result([1.0] * 15)
    assert result["lo"] == pytest.approx(0.025 ** (1 / 15), abs=1e-4) and result["hi"] == 1.0
    assert result["p"] == pytest.approx(2 / 2 ** 15) and result["verdict"] == "held"
    assert agreement_result([1.0] * 8 + [0.0] * 7)["verdict"] == "inconclusive"
    never = {"elbow": {"n_clusters": [8, 8, 9] * 5}, "dbscan": {"n_clusters": [1, 1, 3] * 5}}
    record_verdicts(tmp_path, "04_x", [agreement_claim("elbow and DBSCAN agree", always, true_n=8),
                                       agreement_claim("they agree, instruction alone", never, true_n=8)])
    lines = claims_table([tmp_path]).splitlines()
    cells = [c.strip() for c in lines[4].split("|")[1:-1]]
    assert cells[3] == "agree in 15 of 15 vs 0.5 (elbow N 8; dbscan N 8; true N 8)"
    assert cells[4] == "share 1.000 [0.782, 1.000] exact" and cells[7] == "15 trials" and cells[10] == "held"
    cells = [c.strip() for c in lines[5].split("|")[1:-1]]
    assert cells[3] == "agree in 0 of 15 vs 0.5 (elbow N 8 (8-9); dbscan N 1 (1-3); true N 8)"
    assert cells[10] == "not held"
    with pytest.raises(ValueError, match="0/1 per trial"):
        agreement_result([0.5, 1.0])
    with pytest.raises(ValueError, match="'kmeans' is not in these trials"):
        agreement_claim("x", always, first="kmeans")


def test_rows_in_other_units_say_their_unit_and_replicates(tmp_path):
    record_verdicts(tmp_path, "06_x", [("hydra trains faster than lora r32", [1.21, 1.19, 1.22], [1.01, 0.99, 1.0],
                                        "Fig. 5", {"unit": "speed-up over LoRA r8's step time, x",
                                                   "replicates": "processes"})])
    cells = [c.strip() for c in claims_table([tmp_path]).splitlines()[4].split("|")[1:-1]]
    assert cells[3] == "1.207 vs 1.000 (speed-up over LoRA r8's step time, x)" and cells[7] == "3 processes"


def test_the_bootstrap_has_its_own_p_value():
    rng = np.random.default_rng(1)
    worse_rows = [rng.random(200) < 0.3 for _ in range(4)]
    better_rows = [w | (rng.random(200) < 0.2) for w in worse_rows]
    assert bootstrap_p_value(worse_rows, worse_rows) == 1.0
    assert bootstrap_p_value(better_rows, worse_rows) == pytest.approx(1 / 2000)  # no resample at or below 0
    better, worse = [float(b.mean()) for b in better_rows], [float(w.mean()) for w in worse_rows]
    boot = compare(better, worse, better_rows=better_rows, worse_rows=worse_rows, method="bootstrap")
    assert boot["p"] == pytest.approx(1 / 2000)


def test_agreement_rows_with_equal_outcomes_from_different_clusterings_stay_two_rows(tmp_path):
    never = {"elbow": {"n_clusters": [8] * 15}, "dbscan": {"n_clusters": [1] * 15}}
    record_verdicts(tmp_path, "04_x", [agreement_claim("prompt TF-IDF: they agree", never, true_n=8)])
    record_verdicts(tmp_path, "08_y", [agreement_claim("real mixture: they agree", never, true_n=3)])
    table = claims_table([tmp_path])
    assert "prompt TF-IDF: they agree" in table and "real mixture: they agree" in table and "also in" not in table


def test_verdict_sentence_says_a_verdict_and_what_decided_it_in_words():
    from hydralib.claims import agreement_result, compare, compare_to_baseline, not_decided, verdict_sentence
    lower = {"notebook": "01", "claim": "a beats b", **compare([0.1, 0.2, 0.15], [0.5, 0.6, 0.6]), "test_rows": 50}
    assert verdict_sentence(lower) == ("not held (the other way round): a beats b: 0.150 against 0.567, lower by "
                                       "0.417 (95% interval -0.488 to -0.345), over 3 seeds and 50 test rows.")
    chance = {"notebook": "07", "claim": "NMI above chance", **compare_to_baseline([0.3, 0.32], [0.02, 0.03])}
    assert "0.310 against chance 0.025, higher by 0.285" in verdict_sentence(chance)
    one = {"notebook": "08", "claim": "x beats y", **compare([0.4], [0.3]), "decided_by": "gpu"}
    assert verdict_sentence(one) == ("not decided (1 seed): x beats y: 0.400 against 0.300, higher by 0.100, with no "
                                     "interval, over one seed. To decide it: `make suite PROFILE=gpu`.")
    agree = {"notebook": "04", "claim": "they agree", **agreement_result([1.0] * 15)}
    assert verdict_sentence(agree) == ("held: they agree: they agree in 15 of 15 trials (the share's exact 95% "
                                       "interval: 0.78 to 1.00, against 0.5).")
    timing = {"notebook": "06", "claim": "fused is faster", **compare([2.0, 2.1], [1.0, 1.1]), "unit": "x",
              "replicates": "timing blocks"}
    assert "2.050 against 1.050 (x), higher by 1.000" in verdict_sentence(timing)
    assert verdict_sentence(timing).endswith("over 2 timing blocks.")
    assert verdict_sentence({"notebook": "08", "claim": "z", **not_decided("gpu")}) == (
        "not run here: z; it needs `make suite PROFILE=gpu`.")


def test_pooled_half_width_is_the_wilson_interval_of_the_pooled_outcomes():
    # 50 of 100: the Wilson 95% interval is 0.4038 to 0.5962 (a known answer), so the half-width is about 0.0962
    assert pooled_half_width([1] * 50 + [0] * 50) == pytest.approx(0.0962, abs=5e-4)
    _, lo, hi = proportion_interval(7, 40)
    assert pooled_half_width([True] * 7 + [False] * 33) == pytest.approx((hi - lo) / 2)
    assert pooled_half_width([]) is None
