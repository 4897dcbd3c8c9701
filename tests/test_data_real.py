"""Real sets as run data: mixtures of GSM8K, MMLU, HumanEval and Dolly, one component per source."""
import json

import pytest

from hydralib.data.real import build_real_data, load_source, missing_sources

from real_fixtures import spec


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
    ({"n_train": 0}, "n_train must be an integer >= 1, got n_train=0"),
    ({"sources": ["wikipedia"]}, "source must be one of|allowed"),
    ({"sources": "gsm8k"}, r"sources must be a list of source names, got sources='gsm8k'"),
    ({"eval_source": ["mmlu"]}, r"unknown keys \['eval_source'\] in a real-data spec; allowed: kind, sources"),
    ({"n_test": 2.5}, "n_test must be an integer >= 1, got n_test=2.5"),
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


def test_test_rows_per_source_all_and_a_validation_split_held_out_of_training(small_data):
    data = build_real_data(spec(sources=["gsm8k", "mmlu"], n_train=3, n_val=2, n_test={"gsm8k": 1, "mmlu": "all"}))
    by_source = {s: [r for r in data["test"] if r["source"] == s] for s in ("gsm8k", "mmlu")}
    assert len(by_source["gsm8k"]) == 1 and len(by_source["mmlu"]) == 6  # MMLU's whole test split
    assert len(data["validation"]) == 4 and len(data["train"]) == 6
    assert not {r["instruction"] for r in data["validation"]} & {r["instruction"] for r in data["train"]}
    # without a validation split the training rows are those drawn before (the store's old runs stay valid)
    assert build_real_data(spec(n_val=0))["train"] == build_real_data(spec())["train"]
    for bad, message in (({"gsm8k": 1}, "n_test names sources \\['gsm8k'\\], but the spec has"),
                         ("some", "n_test must be an integer >= 1, got n_test='some'"),
                         ({"gsm8k": 1, "mmlu": 0, "humaneval": 1}, "n_test\\['mmlu'\\] must be an integer >= 1")):
        with pytest.raises(ValueError, match=message):
            build_real_data(spec(n_test=bad))
