"""Seeds of one method trained as one stacked model equal separate runs of the same seeds."""
import copy

import pytest
import torch

from hydralib import AdapterConfig, add_adapters, adapter_layers, load_model
from hydralib.data import make_corpus
from hydralib.seed_groups import train_seed_group
from hydralib.train import TrainConfig, train

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
        assert [m["loss"] for m in grouped.metrics] == [m["loss"] for m in one.metrics]
        assert [m["grad_norm"] for m in grouped.metrics] == [m["grad_norm"] for m in one.metrics]
        assert grouped.metrics[-1]["component_loss"] == one.metrics[-1]["component_loss"]
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
