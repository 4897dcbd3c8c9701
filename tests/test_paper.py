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


def paper_profile_parameters() -> dict:
    """Notebook 08's parameters under the `paper` profile: the notebook's defaults, then the profile's values."""
    from hydralib.suite import notebook_parameters, plan_suite
    (notebook, planned), = plan_suite("paper", only=["08_real_data"])
    return {**{name: p["default"] for name, p in notebook_parameters(notebook).items()}, **planned}


def protocol_rows(markdown: str) -> dict[str, list[str]]:
    """{setting: [the paper, the official scripts, ours, why]} of a protocol table."""
    rows = [line.strip("|").split(" | ") for line in markdown.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows[1:]}


def test_the_protocol_table_reads_our_column_from_the_parameters_it_is_given():
    params = paper_profile_parameters()
    rows = protocol_rows(paper.protocol_markdown(params))
    assert len(rows) == len(paper.PROTOCOL)
    assert rows["learning rate"][2:] == ["0.0002", "follows the official scripts"]
    assert rows["MMLU shots"][2] == "zero-shot, always; also 5-shot (an extra row, see the next setting)"
    assert rows["MMLU questions scored"][2] == "200 test questions, drawn with the seed"
    changed = protocol_rows(paper.protocol_markdown({**params, "lr": 1e-3, "mmlu_shots": 0, "batch_size": 16,
                                                     "n_test": {"dolly": 200, "mmlu": "all"}, "heads": 4}))
    assert changed["learning rate"][2:] == ["0.001", "set lr: 2e-4 to follow"]
    assert changed["MMLU shots"][2:] == ["zero-shot, always", "follows both"]
    assert changed["MMLU questions scored"][2:] == ["the whole test split (57 subjects)",
                                                    "follows the official scripts"]
    assert changed["heads N"][2:] == ["N=4", "follows the official scripts"]
    assert changed["effective batch"][2] == "16 rows a step"
    # twice the rows a step: half an epoch's steps make the same rows two epochs' worth
    assert changed["epochs / steps"][2].startswith(f"{params['steps']} steps of 16 rows") and "2.00 epochs" in \
        changed["epochs / steps"][2]
    assert changed["epochs / steps"][3] == "set steps to hydralib.paper.one_epoch_steps of the parameters to follow"


def test_every_protocol_row_gives_the_papers_value_with_where_it_says_it_or_says_not_stated():
    places = ("Table", "Figure", "Appendix", "Eq.")
    for row in paper.PROTOCOL:
        cell = row["paper"]
        assert cell.startswith("not stated") or any(place in cell for place in places), row["setting"]
        assert row["official"] and "|" not in cell + row["official"], row["setting"]
    settings = [row["setting"] for row in paper.PROTOCOL]
    for needed in ("base model", "training data", "adapted modules", "rank r", "alpha", "dropout", "heads N",
                   "learning rate", "schedule and warm-up", "epochs / steps", "effective batch", "max length",
                   "precision", "MMLU shots", "MMLU scoring", "router", "balance loss"):
        assert needed in settings


def test_the_protocol_table_refuses_parameters_it_lacks_by_name():
    params = paper_profile_parameters()
    del params["mmlu_shots"], params["lr"]
    with pytest.raises(ValueError, match="missing: lr, mmlu_shots"):
        paper.protocol_markdown(params)


def test_what_the_table_says_the_code_fixes_is_what_the_code_fixes():
    """FIXED_IN_CODE (paper cannot import train, specs or methods) against the code it describes."""
    import dataclasses
    import inspect

    from hydralib.methods import lane_methods
    from hydralib.specs import real_spec
    from hydralib.train import TrainConfig
    fixed, train = paper.FIXED_IN_CODE, TrainConfig()
    for name in ("warmup_ratio", "lr_floor", "weight_decay", "max_grad_norm", "balance_weight"):
        assert getattr(train, name) == fixed[name], name
    assert inspect.signature(real_spec).parameters["template"].default == fixed["template"]
    params = paper_profile_parameters()
    methods = lane_methods(params["r"], params["heads"], params["targets"], params["wide_rank"])
    for config in methods.values():
        assert config.alpha == fixed["alpha_per_rank"] * config.r and config.dropout == fixed["dropout"]
    token = [c for c in methods.values() if c.method == "hydra" and c.gate == "learned"]
    assert token and all(dataclasses.asdict(c)[k] == fixed[k] for c in token
                         for k in ("router_level", "router_input", "router_init"))


def test_the_paper_profile_trains_one_epoch_of_the_dolly_rows_notebook_08_draws(tmp_path, monkeypatch):
    """training_rows counts what hydralib.data.real draws from a file of Dolly's size; the profile's steps are one
    epoch of it."""
    import json

    from hydralib.data.real import build_real_data
    (tmp_path / "dolly").mkdir()
    rows = ({"instruction": f"q{i}", "context": "", "response": "a", "category": "open_qa"}
            for i in range(paper.DOLLY_ROWS))
    (tmp_path / "dolly" / "databricks-dolly-15k.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setenv("HYDRALIB_DATA", str(tmp_path))
    params = paper_profile_parameters()
    data = build_real_data({"kind": "real", "sources": ["dolly"], "n_train": params["n_train"],
                            "n_val": params["n_val"], "n_test": 1, "seed": 0})
    assert len(data["train"]) == paper.training_rows(params) == 11_253
    assert params["steps"] == paper.one_epoch_steps(params) == 1407
    assert paper.training_rows({**params, "sources": ["gsm8k", "mmlu"]}) is None


def test_docs_print_the_protocol_table_of_the_paper_profile():
    from hydralib.suite import REPO_ROOT
    docs = (REPO_ROOT / "docs" / "replications.md").read_text(encoding="utf-8")
    assert paper.protocol_markdown(paper_profile_parameters()) in docs
