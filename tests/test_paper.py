"""paper: the paper's numbers, with its two Split notations mapped to ours."""
import pytest

from hydralib import paper


def test_our_split_4x8_is_table_1s_8_x_4_row_not_its_4_x_8():
    assert paper.table1_split(heads=4, r=8) == (46.94, 0.248) == paper.TABLE1[("split", 8, 4)]
    assert paper.table1_split(heads=8, r=4) == (46.83, 0.248)  # Table 1's "4 x 8": 8 pairs of rank 4
    assert paper.table1_split(heads=3, r=8) is None
    # Table 2's LoRA-Split 4x8 (pairs x rank) is the same configuration as Table 1's "8 x 4" row
    assert paper.TABLE2["LoRA-Split 4x8"][0] == paper.table1_split(heads=4, r=8)[0]


def test_table_1_prints_our_name_beside_each_row():
    rows = {line.split(" | ")[1]: line for line in paper.table1_markdown().splitlines() if line.startswith("| LoRA")}
    assert "| Split 4x8 | 46.94 |" in rows["8 x 4"]
    assert "| Split 8x4 | 46.83 |" in rows["4 x 8"]
    assert "| LoRA r32 | 46.59 |" in rows["32 x 1"]
    assert "Table 1's \"8 x 4\" row" in paper.table1_markdown()


def test_our_label_refuses_an_unknown_scheme():
    with pytest.raises(ValueError, match="scheme must be 'lora' or 'split', got 'hydra'"):
        paper.our_label("hydra", 8, 3)
