"""The real-data lane: mixtures of real sets as run data, their scores, and the paper-scale shape check."""
import csv
import json

import pytest
import yaml

from hydralib import RunStore
from hydralib.real import (LLAMA2_7B, build_real_data, evaluate_base, lane_methods, load_source, missing_sources,
                           real_spec, shape_check)
from hydralib.runs import adapter, run_many

GSM8K = [{"question": f"Tom has {i} apples and buys 2 more. How many now?", "answer": f"{i} + 2 = {i + 2}\n#### {i + 2}"}
         for i in range(12)]


@pytest.fixture
def small_data(tmp_path, monkeypatch):
    """A data folder with a few GSM8K and MMLU rows in their original formats (no ../shared needed)."""
    for split, rows in (("train", GSM8K[:8]), ("test", GSM8K[8:])):
        folder = tmp_path / "gsm8k"
        folder.mkdir(exist_ok=True)
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for split, n in (("dev", 3), ("val", 5), ("test", 6)):
        folder = tmp_path / "mmlu" / split
        folder.mkdir(parents=True)
        with (folder / f"astronomy_{split}.csv").open("w", newline="") as f:
            csv.writer(f).writerows([[f"{split} question {i}?", "a", "b", "c", "d", "ABCD"[i % 4]] for i in range(n)])
    monkeypatch.setenv("HYDRALIB_DATA", str(tmp_path))
    return tmp_path


def spec(**data):
    return {"kind": "real", "sources": ["gsm8k", "mmlu", "humaneval"], "n_train": 4, "n_test": 2, "seed": 0, **data}


def test_mixture_has_one_component_per_source_and_no_shared_rows(small_data):
    data = build_real_data(spec())
    assert data["components"] == ["gsm8k", "mmlu", "humaneval"]
    assert len(data["train"]) == 12 and len(data["test"]) == 6
    for rows in (data["train"], data["test"]):
        assert {(r["source"], r["component_name"], r["component"]) for r in rows} == {
            ("gsm8k", "gsm8k", 0), ("mmlu", "mmlu", 1), ("humaneval", "humaneval", 2)}
    train_prompts = {r["instruction"] for r in data["train"]}
    assert not train_prompts & {r["instruction"] for r in data["test"]}
    assert {r["subcomponent_name"] for r in data["train"] if r["source"] == "mmlu"} == {"astronomy"}
    assert build_real_data(spec()) == data  # deterministic from the seed
    assert build_real_data(spec(seed=1))["train"] != data["train"]


def test_splits_never_overlap(small_data):
    """GSM8K and MMLU have their own splits; HumanEval is cut once into fixed train and test parts."""
    for name in ("gsm8k", "mmlu", "humaneval"):
        train, test = load_source(name)
        assert train and test and not {r["instruction"] for r in train} & {r["instruction"] for r in test}
    train, test = load_source("humaneval")
    assert (len(train), len(test)) == (123, 41)
    assert all(r["instruction"].startswith("test question") for r in load_source("mmlu")[1])


def test_sources_shorter_than_asked_give_what_they_have(small_data):
    data = build_real_data(spec(n_train=100, n_test=100))
    counts = {name: sum(r["source"] == name for r in data["train"]) for name in data["components"]}
    assert counts == {"gsm8k": 8, "mmlu": 8, "humaneval": 100}


def test_test_only_sources_come_after_the_trained_ones(small_data):
    data = build_real_data(spec(sources=["gsm8k", "humaneval"], eval_sources=["mmlu"]))
    assert data["components"] == ["gsm8k", "humaneval", "mmlu"]
    assert {r["source"] for r in data["train"]} == {"gsm8k", "humaneval"}
    assert {r["source"]: r["component"] for r in data["test"]} == {"gsm8k": 0, "humaneval": 1, "mmlu": 2}


def test_one_source_keeps_its_own_components(tmp_path, monkeypatch):
    monkeypatch.setenv("HYDRALIB_DATA", str(tmp_path))
    (tmp_path / "dolly").mkdir()
    records = [{"instruction": f"do {i}", "context": "", "response": f"done {i}", "category": c}
               for i, c in enumerate(["qa", "summary", "brainstorm"] * 8)]
    (tmp_path / "dolly" / "databricks-dolly-15k.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    data = build_real_data({"kind": "real", "sources": ["dolly"], "n_train": 10, "n_test": 5, "seed": 0})
    assert data["components"] == ["brainstorm", "qa", "summary"]
    assert len(data["train"]) == 10 and len(data["test"]) == 5
    assert not {r["instruction"] for r in data["train"]} & {r["instruction"] for r in data["test"]}
    for row in data["train"] + data["test"]:
        assert data["components"][row["component"]] == row["component_name"]


@pytest.mark.parametrize("change, message", [
    ({"sources": []}, "at least one training source"),
    ({"sources": ["gsm8k"], "eval_sources": ["gsm8k"]}, "both trained on and test-only"),
    ({"n_train": 0}, "n_train must be an integer in >= 1, got n_train=0"),
    ({"sources": ["wikipedia"]}, "source must be one of|allowed"),
    ({"sources": "gsm8k"}, r"sources must be a list of source names, got sources='gsm8k'"),
    ({"eval_source": ["mmlu"]}, r"unknown keys \['eval_source'\] in a real-data spec; allowed: kind, sources"),
    ({"n_test": 2.5}, "n_test must be an integer in >= 1, got n_test=2.5"),
])
def test_bad_specs_are_refused_with_the_reason(small_data, change, message):
    with pytest.raises(ValueError, match=message):
        build_real_data(spec(**change))


def test_a_spec_without_row_counts_is_refused(small_data):
    with pytest.raises(ValueError, match="needs n_train"):
        build_real_data({"kind": "real", "sources": ["gsm8k"], "n_test": 2})


def test_a_failed_download_counts_as_missing(tmp_path, monkeypatch):
    import hydralib.data.sources as sources

    def offline(*args, **kwargs):
        raise ConnectionError("no network")
    monkeypatch.setenv("HYDRALIB_DATA", str(tmp_path))
    monkeypatch.setattr(sources, "_download", offline)
    missing = missing_sources(["gsm8k", "humaneval"], download=True)
    assert list(missing) == ["gsm8k"] and "ConnectionError: no network" in missing["gsm8k"]


def test_missing_sets_are_named_with_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("HYDRALIB_DATA", str(tmp_path))
    missing = missing_sources(["gsm8k", "mmlu", "humaneval"])
    assert sorted(missing) == ["gsm8k", "mmlu"]  # HumanEval ships in a PyPI package
    assert str(tmp_path / "gsm8k" / "train.jsonl") in missing["gsm8k"] and "HYDRALIB_DATA" in missing["gsm8k"]


def test_the_real_mixture_on_shared_data(shared_data, monkeypatch):
    monkeypatch.setenv("HYDRALIB_DATA", str(shared_data))
    data = build_real_data(spec(n_train=50, n_test=10, eval_sources=[], seed=3))
    assert len(data["train"]) == 150 and len(data["test"]) == 30
    mmlu = [r for r in data["test"] if r["source"] == "mmlu"]
    assert all(r["answer"] in "ABCD" and len(r["choices"]) == 4 for r in mmlu)
    assert all(r["answer"].lstrip("-").replace(".", "").isdigit() for r in data["test"] if r["source"] == "gsm8k")


def test_a_real_run_is_trained_and_scored_through_the_store(small_data, tmp_path):
    """End to end on a tiny random model: the scores of every source, routes from clusters, routing."""
    small = dict(hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=4,
                 num_key_value_heads=4, max_position_embeddings=512)
    run = {"model": {"name": "tiny-random", **small}, "data": spec(),
           "adapter": adapter("hydra", 4, heads=3, gate="cluster"),
           "train": {"steps": 2, "batch_size": 4, "lr": 1e-3, "seed": 0, "device": "cpu", "max_length": 256,
                     "template": "alpaca"},
           "eval": {"max_new_tokens": 4}}
    (result,) = run_many([run], RunStore(tmp_path / "store"), processes=1)
    assert set(result["test_loss"]["per_component"]) == {"gsm8k", "mmlu", "humaneval"}
    assert result["mmlu_n"] == 2 and 0 <= result["mmlu_accuracy"] <= 1
    assert result["gsm8k_n"] == 2 and len(result["gsm8k_generations"]) == 2 and result["gsm8k_exact_match"] == 0
    assert "pass_at_1" not in result  # running generated code is opt-in
    assert sum(result["clusters"]["train_sizes"]) == 12 and "nmi" in result["routing"]


def test_paper_scale_parameter_counts_match_the_papers_percentages():
    """LLaMA-2-7B on the meta device: Hydra r8 on q_proj and v_proj with 3 heads is 0.124 % of the model in
    the paper's convention, with 10 heads 0.342 % (the paper prints 0.341: it multiplies LoRA's rounded 0.062 %)."""
    for heads, percent in ((3, 0.124), (10, 0.342)):
        check = shape_check(adapter("hydra", 8, heads=heads, targets=["q_proj", "v_proj"]))
        assert check["logits"] == (2, 16, LLAMA2_7B["vocab_size"])
        assert check["base"] == 6_738_415_616
        assert check["paper_percent"] == pytest.approx(percent, abs=5e-4)


def test_every_profile_of_notebook_08_builds_on_the_meta_device():
    """The adapters each profile of 08 would train fit LLaMA-2-7B's shapes (the paper profile's model)."""
    from hydralib.suite import PROFILE_DIR, load_profile, plan_suite
    for profile in sorted(p.stem for p in PROFILE_DIR.glob("*.yaml")):
        (notebook, params), = plan_suite(profile, only=["08_real_data"])
        declared = _parameters_cell(notebook)
        values = {**declared, **params}
        methods = lane_methods(values["r"], values["heads"] or len(values["sources"]), values["targets"], values["lr"])
        for method in methods.values():
            check = shape_check(method["adapter"], length=8)
            assert check["logits"] == (2, 8, LLAMA2_7B["vocab_size"]) and check["trainable"] > 0


def _parameters_cell(notebook) -> dict:
    """The defaults of a notebook's parameters cell, evaluated."""
    cells = json.loads(notebook.read_text())["cells"]
    source = next("".join(c["source"]) for c in cells if "parameters" in c.get("metadata", {}).get("tags", []))
    values = {}
    exec(source, {}, values)
    return values


def test_one_source_with_a_test_only_source(tmp_path, monkeypatch, small_data):
    """The paper's general-domain setting: train on Dolly's categories, test on MMLU too."""
    records = [{"instruction": f"do {i}", "context": "", "response": f"done {i}", "category": c}
               for i, c in enumerate(["qa", "summary"] * 8)]
    (small_data / "dolly").mkdir()
    (small_data / "dolly" / "databricks-dolly-15k.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    data = build_real_data({"kind": "real", "sources": ["dolly"], "eval_sources": ["mmlu"], "n_train": 8,
                            "n_test": 3, "seed": 0})
    assert data["components"] == ["qa", "summary", "mmlu"]
    assert {r["component_name"] for r in data["train"]} == {"qa", "summary"}
    assert [r["component"] for r in data["test"] if r["source"] == "mmlu"] == [2, 2, 2]


def test_the_base_model_is_scored_on_the_runs_test_rows(small_data):
    small = dict(hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=4,
                 num_key_value_heads=4, max_position_embeddings=512)
    spec = real_spec(None, 0, model="tiny-random", model_options=small, sources=["gsm8k", "mmlu"], n_train=4,
                     n_test=3, steps=1, lr=1e-3, max_new_tokens=4)
    scores = evaluate_base(spec)
    assert set(scores["test_loss"]["per_component"]) == {"gsm8k", "mmlu"}
    assert scores["mmlu_n"] == 3 and scores["gsm8k_n"] == 3 and scores["test_loss"]["loss"] > 3


def test_lane_summary_and_table():
    from hydralib.real import lane_summary, lane_table

    def run(gsm8k, mmlu_loss, mmlu, seconds):
        return {"test_loss": {"loss": gsm8k, "per_component": {"gsm8k": {"loss": gsm8k}, "mmlu": {"loss": mmlu_loss}}},
                "mmlu_accuracy": mmlu, "train_seconds": seconds,
                "parameters": {"trainable": 1000, "paper": 500.0, "base": 100000}}
    base = [{k: v for k, v in run(2.0, 4.0, 0.25, 0).items() if k not in ("train_seconds", "parameters")}]
    summary = lane_summary(base, {"LoRA r8": [run(1.0, 2.0, 0.3, 10), run(1.2, 2.0, 0.5, 12)]})
    assert summary["base model"]["mean component loss"] == (3.0, 0.0) and "trainable" not in summary["base model"]
    lora = summary["LoRA r8"]
    assert lora["mean component loss"][0] == pytest.approx(1.55) and lora["loss mmlu"] == (2.0, 0.0)
    assert lora["MMLU accuracy"][0] == pytest.approx(0.4) and lora["paper % of base"] == pytest.approx(0.5)
    table = lane_table(summary)
    assert "| base model | 3.000 |" in table and "| LoRA r8 | 1.550 ± 0.071 |" in table and "1,000" in table


def test_loss_trend_smooths_and_says_whether_the_loss_still_falls():
    from hydralib.real import loss_trend
    falling = loss_trend([{"step": s, "loss": 10.0 - s} for s in range(1, 21)], window=5)
    assert falling["steps"][0] == 5 and len(falling["losses"]) == 16
    assert falling["first"] == pytest.approx(7.0) and falling["last"] == pytest.approx(-8.0)
    assert falling["recent_points"] == 4 and falling["recent_drop"] == pytest.approx(3.0)
    short = loss_trend([{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}])  # ci: two steps
    assert short["losses"] == [1.5] and short["recent_points"] == 1 and short["recent_drop"] == 0.0
    with pytest.raises(ValueError, match="empty"):
        loss_trend([])


def test_component_losses_are_plotted_per_model_and_component(tmp_path):
    from hydralib.real import plot_component_losses
    summary = {"base model": {"loss a": (2.0, 0.0), "loss b": (3.0, 0.0)},
               "LoRA r8": {"loss a": (1.0, 0.1), "loss b": (1.5, 0.2)}}
    fig = plot_component_losses(summary, ["a", "b"], "t", tmp_path / "x.png")
    heights = sorted(round(p.get_height(), 2) for p in fig.axes[0].patches)
    assert heights == [1.0, 1.5, 2.0, 3.0] and (tmp_path / "x.png").stat().st_size > 0
