"""Observation II and its critics: how far A and B move from their start, a frozen random A (only B trains), and
R-LoRA's random B heads and per-head dropout; defaults leave every earlier config as it was."""
import copy

import pytest
import torch
from torch import nn

from hydralib import AdapterConfig, AdapterLayer, add_adapters, adapter_layers, load_model
from hydralib.anatomy import adapter_tensors
from hydralib.data import make_corpus
from hydralib.inject import count_parameters, movement_from_init
from hydralib.train import TrainConfig, train

SMALL = dict(hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=4,
             num_key_value_heads=4, max_position_embeddings=64)
CORPUS = make_corpus(n_components=2, conflict=1.0, n_train=64, n_test=16, seed=0)
# AdapterConfig().to_dict() before the fields of this file existed (what saved adapters and run keys hold)
EARLIER_DEFAULT_DICT = {"method": "hydra", "r": 8, "alpha": 16.0, "heads": 4, "targets": "all-linear",
                        "gate": "learned", "top_k": None, "dropout": 0.0, "router_input": "x",
                        "router_level": "token", "router_init": "kaiming", "implementation": "fused"}


def trained(adapter: AdapterConfig, steps: int = 4):
    model, tokenizer = load_model("tiny-random", **SMALL)
    add_adapters(model, adapter, seed=0)
    start = adapter_tensors(model)
    config = TrainConfig(steps=steps, batch_size=8, lr=5e-3, progress=False)
    return train(model, tokenizer, CORPUS["train"], config).model, start


def test_defaults_keep_every_earlier_config_dict_and_thus_its_keys_and_files():
    assert AdapterConfig().to_dict() == EARLIER_DEFAULT_DICT
    assert AdapterConfig.from_dict(EARLIER_DEFAULT_DICT).to_dict() == EARLIER_DEFAULT_DICT
    lora = {**EARLIER_DEFAULT_DICT, "method": "lora", "heads": 1, "dropout": 0.05}
    assert AdapterConfig.from_dict(lora).to_dict() == lora
    changed = AdapterConfig(freeze_a=True, b_init_std=0.01, dropout=0.1, head_dropout=True)
    assert {k: v for k, v in changed.to_dict().items() if k not in EARLIER_DEFAULT_DICT} == {
        "freeze_a": True, "b_init_std": 0.01, "head_dropout": True}
    assert AdapterConfig.from_dict(changed.to_dict()) == changed


def test_default_adapters_start_with_a_trainable_a_and_zero_b():
    model, _ = load_model("tiny-random", **SMALL)
    add_adapters(model, AdapterConfig(method="hydra", r=4, heads=3), seed=0)
    for layer in adapter_layers(model).values():
        assert layer.lora_A.requires_grad and layer.lora_B.requires_grad and not layer.lora_B.any()


def test_a_frozen_a_stays_bit_equal_while_b_trains():
    model, start = trained(AdapterConfig(method="lora", r=4, freeze_a=True))
    layers = adapter_layers(model)
    assert all(torch.equal(layer.lora_A, start[name]["A"]) for name, layer in layers.items())
    assert all(layer.lora_B.abs().max() > 0 for layer in layers.values())
    moved = movement_from_init(model, start)
    assert all(m["A"] == 0.0 and m["B"] > 0 and m["B_from_zero"] for m in moved.values())
    assert count_parameters(model).trainable == sum(layer.lora_B.numel() for layer in layers.values())


def test_movement_is_the_relative_frobenius_change_and_the_norm_of_b_from_zero():
    model, start = trained(AdapterConfig(method="lora", r=4))
    moved = movement_from_init(model, start)
    name, layer = next(iter(adapter_layers(model).items()))
    a0 = start[name]["A"]
    assert moved[name]["A"] == pytest.approx(float((layer.lora_A.detach() - a0).norm() / a0.norm()), rel=1e-6)
    assert moved[name]["B"] == pytest.approx(float(layer.lora_B.detach().norm()), rel=1e-6) and moved[name]["B_from_zero"]
    assert all(0 < m["A"] for m in moved.values())
    # a known answer: A doubled, B from a non-zero start to twice it: relative change 1 for both
    with torch.no_grad():
        layer.lora_A.copy_(2 * a0)
        layer.lora_B.fill_(2.0)
    start[name]["B"] = torch.ones_like(start[name]["B"])
    assert movement_from_init(model, start)[name] == {"A": pytest.approx(1.0), "B": pytest.approx(1.0),
                                                      "B_from_zero": False}
    with pytest.raises(ValueError, match="cover the model's adapter layers"):
        movement_from_init(model, {name: start[name]})


def test_random_b_heads_differ_at_step_0_and_zero_heads_do_not():
    base = nn.Linear(16, 12)
    torch.manual_seed(0)
    random_heads = AdapterLayer(base, AdapterConfig(method="hydra", r=2, heads=3, b_init_std=0.02))
    heads = random_heads.lora_B.detach().view(12, 3, 2)
    assert (heads[:, 0] - heads[:, 1]).abs().max() > 1e-3 and (heads[:, 1] - heads[:, 2]).abs().max() > 1e-3
    assert heads.std().item() == pytest.approx(0.02, rel=0.3)
    zero_heads = AdapterLayer(base, AdapterConfig(method="hydra", r=2, heads=3))
    assert not zero_heads.lora_B.any()
    x = torch.randn(4, 16)
    assert (random_heads(x) - base(x)).abs().max() > 0  # a random B changes the model from step 0


def test_per_head_dropout_draws_one_mask_per_head_and_is_off_in_evaluation():
    torch.manual_seed(0)
    layer = AdapterLayer(nn.Linear(16, 12), AdapterConfig(method="hydra", r=2, heads=3, dropout=0.5, head_dropout=True,
                                                          gate="uniform"))
    x = torch.randn(5, 16)
    h = layer.project(x)[0].view(5, 3, 2)
    assert (h[:, 0] - h[:, 1]).abs().max() > 1e-3  # each head saw another mask
    layer.eval()
    one_mask = copy.deepcopy(layer)
    one_mask.config = AdapterConfig(method="hydra", r=2, heads=3, dropout=0.5, gate="uniform")
    with torch.no_grad():
        layer.lora_B.normal_()
        one_mask.lora_B.copy_(layer.lora_B)
    torch.testing.assert_close(layer(x), one_mask(x))  # no dropout at evaluation: the two settings agree
    split = AdapterLayer(nn.Linear(16, 12), AdapterConfig(method="split", r=2, heads=3, dropout=0.5,
                                                          head_dropout=True))
    split.lora_B.data.normal_()
    assert split(x).shape == (5, 12)


@pytest.mark.parametrize("bad, message", [
    (dict(freeze_a=1), "freeze_a must be True or False"),
    (dict(b_init_std=-0.1), "b_init_std must be a finite number >= 0"),
    (dict(b_init_std=float("nan")), "b_init_std must be"),
    (dict(head_dropout=True), "needs dropout > 0"),
    (dict(head_dropout=True, dropout=0.1, router_input="Ax"), "router_input='x'"),
    (dict(method="lora", head_dropout=True, dropout=0.1), "heads > 1"),
])
def test_bad_settings_are_refused_by_name(bad, message):
    with pytest.raises(ValueError, match=message):
        AdapterConfig(**bad)
