"""Seeds of one method trained as one stacked model equal separate runs of the same seeds, in train and in the
run store (each seed stored as its own run), interrupted or not."""
import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import hydralib.pipeline as pipeline
import hydralib.seed_groups as seed_groups
from hydralib import AdapterConfig, add_adapters, adapter_layers, load_model
from hydralib.adapter_files import WEIGHTS_NAME
from hydralib.data import make_corpus
from hydralib.seed_groups import clip_per_seed, train_seed_group
from hydralib.store import RunSpec, RunStore, result_code_files, run_key, run_many, seed_group_refusal, seed_groups_of
from hydralib.train import TrainConfig, load_checkpoint, train

SMALL = dict(hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=4,
             num_key_value_heads=4, max_position_embeddings=64)
CORPUS = make_corpus(n_components=2, conflict=1.0, n_train=64, n_test=16, seed=0)
SEEDS = [0, 1, 2]
HYDRA = AdapterConfig(method="hydra", r=4, heads=3, targets="all-linear")


def seed_models(adapter):
    base, tokenizer = load_model("tiny-random", **SMALL)
    base.set_attn_implementation("eager")
    models = []
    for seed in SEEDS:
        model = copy.deepcopy(base)
        add_adapters(model, adapter, seed=seed)
        models.append(model)
    return models, tokenizer


def configs(**options):
    return [TrainConfig(steps=4, batch_size=8, lr=5e-3, progress=False, device="cpu", seed=seed, **options)
            for seed in SEEDS]


def adapters(model):
    return {f"{name}.{p}": getattr(layer, p).detach().clone() for name, layer in adapter_layers(model).items()
            for p in ("lora_A", "lora_B", "router") if getattr(layer, p) is not None}


def without_timings(metrics):
    return [{k: v for k, v in m.items() if k != "tokens_per_s"} for m in metrics]


def separate_and_grouped(adapter, **options):
    models, tokenizer = seed_models(adapter)
    alone = [train(copy.deepcopy(m), tokenizer, CORPUS["train"], c) for m, c in zip(models, configs(**options))]
    together = train_seed_group(models, tokenizer, CORPUS["train"], configs(**options))
    return alone, together


@pytest.mark.parametrize("adapter", [HYDRA, AdapterConfig(method="lora", r=4, targets="all-linear"),
                                     AdapterConfig(method="split", r=2, heads=3, targets="all-linear")],
                         ids=["hydra", "lora", "split"])
def test_a_grouped_run_equals_separate_runs_bit_for_bit_in_fp32(adapter):
    alone, together = separate_and_grouped(adapter, mixed_precision="no")
    assert len(together) == len(SEEDS)
    for one, grouped in zip(alone, together):
        assert without_timings(grouped.metrics) == without_timings(one.metrics)  # loss, lr, norms, gate statistics
        assert ("gate_entropy" in one.metrics[0]) == (adapter.heads > 1)
        a, b = adapters(one.model), adapters(grouped.model)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    first, second = (adapters(r.model) for r in together[:2])
    assert not torch.equal(first[next(iter(first))], second[next(iter(second))])  # the seeds differ


def test_a_grouped_bf16_run_stays_within_bf16_rounding_of_separate_runs():
    alone, together = separate_and_grouped(HYDRA, mixed_precision="bf16")
    for one, grouped in zip(alone, together):
        for x, y in zip(one.metrics, grouped.metrics):
            assert x["loss"] == pytest.approx(y["loss"], rel=1e-3)
        a, b = adapters(one.model), adapters(grouped.model)
        assert all((a[k] - b[k]).abs().max() <= 1e-3 * a[k].abs().max() for k in a)


def test_groups_that_cannot_stack_are_refused_by_name():
    models, tokenizer = seed_models(HYDRA)
    other = configs()
    other[1] = TrainConfig(steps=4, batch_size=8, lr=1e-3, progress=False, device="cpu", seed=1)
    with pytest.raises(ValueError, match=r"configs\[1\] differs .*lr"):
        train_seed_group(models, tokenizer, CORPUS["train"], other)
    topk, _ = seed_models(AdapterConfig(method="hydra", r=4, heads=3, top_k=1, targets="all-linear"))
    with pytest.raises(ValueError, match="top-k"):
        train_seed_group(topk, tokenizer, CORPUS["train"], configs())
    with torch.no_grad():
        next(p for p in models[2].parameters() if not p.requires_grad).add_(1.0)
    with pytest.raises(ValueError, match=r"models\[2\] has other frozen"):
        train_seed_group(models, tokenizer, CORPUS["train"], configs())


def test_a_tensor_the_seeds_do_not_train_stays_as_it_was():
    """A frozen A (as a freeze-A ablation leaves it) is not trained by the group either: the grouped run still
    equals separate runs, and A is unchanged."""
    models, tokenizer = seed_models(HYDRA)
    for model in models:
        for layer in adapter_layers(model).values():
            layer.lora_A.requires_grad_(False)
    before = [adapters(m) for m in models]
    alone = [train(copy.deepcopy(m), tokenizer, CORPUS["train"], c)
             for m, c in zip(models, configs(mixed_precision="no"))]
    together = train_seed_group(models, tokenizer, CORPUS["train"], configs(mixed_precision="no"))
    for start, one, grouped in zip(before, alone, together):
        a, b = adapters(one.model), adapters(grouped.model)
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert all(torch.equal(b[k], start[k]) for k in b if k.endswith("lora_A"))
        assert not all(torch.equal(b[k], start[k]) for k in b if k.endswith("lora_B"))


# --- seed groups in the run store ----------------------------------------------------------------------------
STORE_SPEC = {
    "model": {"name": "tiny-random", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
              "max_position_embeddings": 64},
    "data": {"kind": "synthetic", "n_components": 2, "n_train": 48, "n_test": 8, "seed": 0},
    "adapter": {"method": "hydra", "r": 4, "heads": 2},
    "train": {"steps": 4, "batch_size": 8, "lr": 5e-3, "device": "cpu", "mixed_precision": "no"},
    "eval": {"max_new_tokens": 8},
}
TIMINGS = ("train_seconds", "tokens_per_s")


def seed_spec(seed, adapter=STORE_SPEC["adapter"], eval=STORE_SPEC["eval"], **train):
    """The spec builders' way: one seed drives the data, the adapter init and the batch order."""
    return RunSpec.from_dict({**STORE_SPEC, "adapter": adapter, "eval": eval,
                              "data": {**STORE_SPEC["data"], "seed": seed},
                              "train": {**STORE_SPEC["train"], "seed": seed, **train}})


def stored(store, spec):
    """What the store holds for a run: results and log without timings, config.json, the adapter tensors."""
    folder = store.path(spec)
    results = {k: v for k, v in store.get(spec).items() if k not in TIMINGS}
    config = json.loads((folder / "config.json").read_text())
    return results, without_timings(store.metrics(spec)), config, load_file(folder / "adapter" / WEIGHTS_NAME)


@pytest.fixture
def executions(monkeypatch):
    """The pipeline's runs and seed groups, as (function, runs) in the order they start."""
    calls = []
    for name in ("execute_run", "execute_seed_group"):
        def counting(specs, run_dirs, real=getattr(pipeline, name), name=name):
            calls.append((name, len(specs) if isinstance(specs, list) else 1))
            return real(specs, run_dirs)
        monkeypatch.setattr(pipeline, name, counting)
    return calls


@pytest.mark.parametrize("precision, adapter", [
    ("no", STORE_SPEC["adapter"]), ("bf16", STORE_SPEC["adapter"]),
    ("no", {**STORE_SPEC["adapter"], "router_init": "clusters"})], ids=["fp32", "bf16", "fp32-router-from-clusters"])
def test_a_grouped_store_run_stores_each_seed_as_its_separate_run_would(tmp_path, executions, precision, adapter):
    """fp32: every stored result field but the timings, the log, and the adapter tensors equal separate runs bit
    for bit (a router warm-started from each seed's own clusters too). bf16 (the CPU default's step): losses
    within 1e-3 relative and adapter tensors within 1e-3 of their largest entry, with the same generations and
    exact match (measured: equal bit for bit at these sizes too; synthetic runs are evaluated in fp32)."""
    specs = [seed_spec(s, adapter=adapter, mixed_precision=precision) for s in SEEDS]
    separate, grouped = RunStore(tmp_path / "separate"), RunStore(tmp_path / "grouped", seed_groups=True)
    run_many(specs, separate, processes=1)
    run_many(specs, grouped, processes=1)
    assert executions == [("execute_run", 1)] * 3 + [("execute_seed_group", 3)]
    for spec in specs:
        assert grouped.path(spec).name == separate.path(spec).name == run_key(spec)
        (alone, alone_log, alone_config, alone_tensors) = stored(separate, spec)
        (together, together_log, together_config, together_tensors) = stored(grouped, spec)
        assert together_config.pop("seed_group") == {"seeds": SEEDS, "run_dirs": [run_key(s) for s in specs]}
        assert together_config == alone_config
        assert alone_tensors.keys() == together_tensors.keys() and "gate_entropy" in alone_log[0]
        if precision == "no":
            assert together == alone and together_log == alone_log
            assert all(torch.equal(alone_tensors[k], together_tensors[k]) for k in alone_tensors)
        else:
            assert together["generations"] == alone["generations"]
            assert together["exact_match"] == alone["exact_match"]
            assert together["test_loss"]["loss"] == pytest.approx(alone["test_loss"]["loss"], rel=1e-3)
            for x, y in zip(alone_log, together_log):
                assert x["loss"] == pytest.approx(y["loss"], rel=1e-3)
            assert all((alone_tensors[k] - together_tensors[k]).abs().max() <= 1e-3 * alone_tensors[k].abs().max()
                       for k in alone_tensors)
    first, second = (stored(grouped, spec)[3] for spec in specs[:2])
    assert not torch.equal(first[next(iter(first))], second[next(iter(second))])  # each seed its own init and data
    assert grouped.run(specs[1]) == grouped.get(specs[1]) and len(executions) == 4  # found by a separate run


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("checkpoint_every, resume_with", [(2, "group"), (2, "separate runs"), (0, "group")])
def test_an_interrupted_group_marks_nothing_done_and_finishes_as_separate_runs(tmp_path, monkeypatch,
                                                                               checkpoint_every, resume_with):
    """Interrupted at step 3: no seed is marked done; with checkpoints every 2 steps each seed's folder holds its
    step-2 checkpoint (train's format: the group, or separate runs, go on from it), without one it starts over;
    either way the finished runs equal uninterrupted separate runs bit for bit."""
    specs = [seed_spec(s, checkpoint_every=checkpoint_every) for s in SEEDS]
    reference = RunStore(tmp_path / "separate")
    run_many(specs, reference, processes=1)
    steps = []

    def interrupted_at_step_3(*args):
        steps.append(1)
        if len(steps) == 3:
            raise Interrupted
        return clip_per_seed(*args)

    monkeypatch.setattr(seed_groups, "clip_per_seed", interrupted_at_step_3)
    with pytest.raises(Interrupted):
        run_many(specs, RunStore(tmp_path / "grouped", seed_groups=True), processes=1)
    monkeypatch.setattr(seed_groups, "clip_per_seed", clip_per_seed)
    store = RunStore(tmp_path / "grouped", seed_groups=resume_with == "group")
    for spec in specs:
        folder = store.path(spec)
        assert store.get(spec) is None and not (folder / "done.json").exists() and not (folder / "adapter").exists()
        assert len((folder / "metrics.jsonl").read_text().splitlines()) == 2
        assert (folder / "checkpoint.pt").exists() == bool(checkpoint_every)
        if checkpoint_every:
            assert load_checkpoint(folder / "checkpoint.pt")["step"] == 2
    run_many(specs, store, processes=1)
    for spec in specs:
        alone, alone_log, _, alone_tensors = stored(reference, spec)
        resumed, resumed_log, _, resumed_tensors = stored(store, spec)
        assert resumed == alone and resumed_log == alone_log and [m["step"] for m in resumed_log] == [1, 2, 3, 4]
        assert all(torch.equal(alone_tensors[k], resumed_tensors[k]) for k in alone_tensors)


def test_only_runs_that_differ_in_their_seeds_and_may_stack_share_a_group(tmp_path):
    cluster = {"method": "hydra", "r": 4, "heads": 2, "gate": "cluster"}
    specs = ([seed_spec(s) for s in SEEDS] + [seed_spec(s, lr=1e-3) for s in SEEDS[:2]]
             + [seed_spec(s, adapter=cluster) for s in SEEDS[:2]] + [seed_spec(s, adapter=None) for s in SEEDS[:2]]
             + [seed_spec(0, eval={"validation_points": 2}), seed_spec(0, steps=6)])
    groups = seed_groups_of(specs)
    assert [[spec.train.seed for spec in group] for group in groups] == [[0, 1, 2], [0, 1], [0], [1], [0], [1],
                                                                          [0], [0]]
    assert [group[0] for group in groups] == [specs[i] for i in (0, 3, 5, 6, 7, 8, 9, 10)]
    assert seed_group_refusal(specs[0]) is None and seed_group_refusal(specs[10]) is None
    assert "gate='cluster' reads each row's head from the batch" in seed_group_refusal(specs[5])
    assert "full fine-tuning" in seed_group_refusal(specs[7])
    assert "validation_points=2" in seed_group_refusal(specs[9])
    with pytest.raises(ValueError, match="differ only in their seeds"):
        RunStore(tmp_path).run_seed_group([specs[0], specs[3]])
    with pytest.raises(ValueError, match="differ only in their seeds"):
        RunStore(tmp_path).run_seed_group(specs[5:7])


def test_the_code_that_trains_a_group_is_part_of_every_run_key():
    """pipeline imports seed_groups, so the key of a run, grouped or not, hashes the code that trains groups."""
    assert Path(seed_groups.__file__).resolve() in result_code_files()
