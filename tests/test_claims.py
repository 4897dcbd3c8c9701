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
