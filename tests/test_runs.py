"""The run store: trained once, retrained when anything changes, damaged entries rerun, parallel = serial."""
import pytest

import hydralib.runs as runs
from hydralib.runs import RunStore, run_key, run_many

SPEC = {
    "model": {"name": "tiny-random", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
              "max_position_embeddings": 64},
    "data": {"kind": "synthetic", "n_components": 2, "n_train": 48, "n_test": 8, "seed": 0},
    "adapter": {"method": "hydra", "r": 4, "heads": 2},
    "train": {"steps": 4, "batch_size": 8, "lr": 5e-3},
    "eval": {"max_new_tokens": 8},
}


def with_seed(seed):
    return {**SPEC, "train": {**SPEC["train"], "seed": seed}}


@pytest.fixture
def counted(monkeypatch):
    calls = []
    real = runs.execute_run

    def counting(spec, run_dir):
        calls.append(run_dir.name)
        return real(spec, run_dir)

    monkeypatch.setattr(runs, "execute_run", counting)
    return calls


def test_same_spec_trains_once_and_a_change_trains_again(tmp_path, counted):
    store = RunStore(tmp_path)
    first = store.run(SPEC)
    again = store.run(SPEC)
    assert len(counted) == 1 and first == again
    store.run(with_seed(1))
    store.run({**SPEC, "adapter": {**SPEC["adapter"], "r": 8}})
    assert len(counted) == 3
    assert run_key(SPEC) != run_key(with_seed(1))
    assert run_key(SPEC) == run_key({**SPEC, "train": {**SPEC["train"], "progress": True}})  # display only


@pytest.mark.parametrize("damage", ["truncate_results", "truncate_weights", "drop_done"])
def test_damaged_or_partial_entry_is_rerun_not_used(tmp_path, counted, damage):
    store = RunStore(tmp_path)
    expected = store.run(SPEC)
    folder = store.path(SPEC)
    if damage == "truncate_results":
        text = (folder / "results.json").read_text()
        (folder / "results.json").write_text(text[: len(text) // 2])
    elif damage == "truncate_weights":
        weights = folder / "adapter" / "adapter_model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
    else:
        (folder / "done.json").unlink()
    assert store.get(SPEC) is None
    assert store.run(SPEC)["exact_match"] == expected["exact_match"]
    assert len(counted) == 2 and store.get(SPEC) is not None


def test_a_partial_run_with_a_broken_checkpoint_starts_over(tmp_path):
    store = RunStore(tmp_path)
    folder = store.path(SPEC)
    folder.mkdir(parents=True)
    (folder / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert store.run(SPEC)["final_train_loss"] > 0


def test_parallel_runs_equal_serial_runs(tmp_path):
    specs = [SPEC, with_seed(1)]
    serial = run_many(specs, RunStore(tmp_path / "serial"), processes=1)
    parallel = run_many(specs, RunStore(tmp_path / "parallel"), processes=2, threads_per_process=1)
    for a, b in zip(serial, parallel):
        assert a["final_train_loss"] == pytest.approx(b["final_train_loss"], rel=1e-5)
        assert a["test_loss"]["loss"] == pytest.approx(b["test_loss"]["loss"], rel=1e-5)
        assert a["generations"] == b["generations"]


def test_bad_spec_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match="unknown run spec keys"):
        run_many([{**SPEC, "optimizer": "sgd"}], RunStore(tmp_path))
    with pytest.raises(ValueError, match="unknown data kind"):
        RunStore(tmp_path).run({**SPEC, "data": {"kind": "imagenet"}})


def test_data_selections_give_one_component_or_one_iid_part():
    base = {"kind": "synthetic", "n_components": 3, "conflict": 1.0, "n_train": 90, "n_test": 30, "seed": 0}
    one = runs.build_data({**base, "only_component": 2})
    assert {r["component"] for r in one["train"] + one["test"]} == {2} and len(one["train"]) == 30
    parts = [runs.build_data({**base, "part": i, "parts": 3})["train"] for i in range(3)]
    whole = runs.build_data(base)["train"]
    assert sorted(map(str, sum(parts, []))) == sorted(map(str, whole)) and all(len(p) == 30 for p in parts)
    assert len({r["component"] for r in parts[0]}) == 3  # a random third mixes every component
    with pytest.raises(ValueError, match="only_component=3; allowed: 0..2"):
        runs.build_data({**base, "only_component": 3})
    with pytest.raises(ValueError, match="part=3, parts=3"):
        runs.build_data({**base, "part": 3, "parts": 3})


def test_task_routes_fold_components_onto_fewer_heads():
    data = runs.build_data({"kind": "synthetic", "n_components": 4, "n_train": 40, "n_test": 8, "seed": 0})
    adapter = runs.adapter("split", 4, heads=2, gate="task")
    routed, info = runs.route_rows(data, adapter, "tfidf", 0, "compact")
    assert info == {} and all(r["route"] == r["component"] % 2 for r in routed["train"] + routed["test"])
    assert "route" not in data["train"][0]  # the input rows are not changed


@pytest.mark.parametrize("adapter", [{"method": "hydra", "r": 4, "heads": 2, "gate": "cluster"},
                                     {"method": "hydra", "r": 4, "heads": 2, "router_init": "clusters"}])
def test_cluster_routed_runs_report_their_clusters_and_routing(tmp_path, adapter):
    spec = {**SPEC, "data": {**SPEC["data"], "n_train": 96, "n_test": 16, "conflict": 1.0}, "adapter": adapter}
    results = RunStore(tmp_path).run(spec)
    assert results["clusters"]["train_ari"] == pytest.approx(1.0) and sum(results["clusters"]["test_sizes"]) == 16
    usage = results["routing"]["usage_by_component"]
    assert set(usage) == set(results["components"]) and 0.0 <= results["routing"]["nmi"] <= 1.0
    if adapter.get("gate") == "cluster":  # hard routing by clusters that match the components exactly
        assert results["routing"]["nmi"] == pytest.approx(1.0)
