"""Verdicts: held only when the difference exceeds the spread over seeds."""
import pytest

from hydralib.claims import claims_table, compare, mean_and_spread, record_verdict


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
def test_verdict_depends_on_difference_against_spread(better, worse, verdict):
    result = compare(better, worse)
    assert result["verdict"] == verdict and result["seeds"] == 3


def test_verdicts_are_recorded_once_per_claim_and_tabulated(tmp_path):
    record_verdict(tmp_path, "01_x", "full beats lora", compare([0.6, 0.6], [0.4, 0.4]), paper="Fig. 2 (schematic)")
    record_verdict(tmp_path, "01_x", "full beats lora", compare([0.4, 0.4], [0.6, 0.6]))
    table = claims_table([tmp_path, tmp_path / "missing"])
    assert table.count("full beats lora") == 1 and "not held" in table and "-0.200" in table


def test_record_verdicts_records_and_prints_each_claim(tmp_path, capsys):
    from hydralib.claims import record_verdicts
    entries = record_verdicts(tmp_path, "03_x", [("a beats b", [0.6, 0.7], [0.2, 0.3], "Table 2"),
                                                 ("b beats a", [0.2, 0.3], [0.6, 0.7], "")])
    assert [e["verdict"] for e in entries] == ["held", "not held"]
    assert "a beats b: held (0.650 vs 0.250" in capsys.readouterr().out
    assert claims_table([tmp_path]).count("| 03_x |") == 2


def test_one_seed_is_never_held_or_refuted():
    """One seed has no spread: a large difference is still only inconclusive."""
    assert compare([0.9], [0.1])["verdict"] == "inconclusive"
    assert compare([0.1], [0.9, 0.91])["verdict"] == "inconclusive"
    assert compare([0.9], [0.1])["seeds"] == 1


def test_a_rerun_notebook_keeps_its_rows_in_place_and_the_table_follows_notebook_order(tmp_path):
    record_verdict(tmp_path, "05_x", "e beats f", compare([0.6, 0.7], [0.2, 0.3]))
    record_verdict(tmp_path, "01_x", "a beats b", compare([0.6, 0.7], [0.2, 0.3]))
    record_verdict(tmp_path, "01_x", "c beats d", compare([0.6, 0.7], [0.2, 0.3]))
    record_verdict(tmp_path, "01_x", "a beats b", compare([0.2, 0.3], [0.6, 0.7]))  # 01 again, after 05
    claims = [line.split(" | ")[1] for line in claims_table([tmp_path]).splitlines()[2:]]
    assert claims == ["a beats b", "c beats d", "e beats f"]
    assert "not held" in claims_table([tmp_path]).splitlines()[2]
