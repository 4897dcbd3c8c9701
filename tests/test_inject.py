"""Saving, loading, merging and counting adapters."""
import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from hydralib import (AdapterConfig, adapter_layers, add_adapters, count_parameters, load_adapters, merge_adapters, routing,
                      save_adapters, unmerge_adapters)
from conftest import randomize_b, small_gpt2, small_llama

HYDRA = AdapterConfig(method="hydra", r=4, heads=3, targets="all-linear")


def test_save_then_load_gives_identical_outputs(tmp_path, tokens):
    model = randomize_b(add_adapters(small_llama(), HYDRA))
    expected = model(tokens).logits
    save_adapters(model, tmp_path / "adapter")
    restored = load_adapters(small_llama(), tmp_path / "adapter")
    torch.testing.assert_close(restored(tokens).logits, expected, rtol=0, atol=0)
    again = load_adapters(add_adapters(small_llama(), HYDRA), tmp_path / "adapter")
    torch.testing.assert_close(again(tokens).logits, expected, rtol=0, atol=0)


def test_save_refuses_to_overwrite(tmp_path):
    model = add_adapters(small_llama(), HYDRA)
    save_adapters(model, tmp_path)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_adapters(model, tmp_path)
    save_adapters(model, tmp_path, overwrite=True)


@pytest.mark.parametrize("other, message", [
    (lambda: small_llama(hidden=32), "another base model: target_shapes"),
    (lambda: small_llama(seed=5), "another base model: weight_fingerprint"),
    (small_gpt2, "another base model: architecture: saved 'LlamaForCausalLM', model has 'GPT2LMHeadModel'"),
    (lambda: add_adapters(small_llama(), AdapterConfig(method="hydra", r=8, heads=3)), "another configuration: r: saved 4"),
    (lambda: add_adapters(small_llama(), AdapterConfig(method="split", r=4, heads=3)), "method: saved 'hydra'"),
])
def test_load_refuses_another_model_or_configuration(tmp_path, other, message):
    save_adapters(add_adapters(small_llama(), HYDRA), tmp_path)
    with pytest.raises(ValueError, match=message):
        load_adapters(other(), tmp_path)


def test_load_of_a_missing_folder_names_the_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_adapters(small_llama(), tmp_path / "nothing")


MERGE_CASES = [
    ("lora", AdapterConfig(method="lora", r=4), None),
    ("hydra-uniform", AdapterConfig(method="hydra", r=4, heads=3, gate="uniform"), None),
    ("hydra-task", AdapterConfig(method="hydra", r=4, heads=3, gate="task"), 2),
    ("hydra-learned-given-vector", AdapterConfig(method="hydra", r=4, heads=3), [0.2, 0.5, 0.3]),
    ("split-task", AdapterConfig(method="split", r=4, heads=3, gate="task"), 1),
    ("split-given-vector", AdapterConfig(method="split", r=4, heads=3), [0.6, 0.1, 0.3]),
]


@pytest.mark.parametrize("name, config, gate", MERGE_CASES, ids=[c[0] for c in MERGE_CASES])
@pytest.mark.parametrize("build", [small_llama, small_gpt2], ids=["llama", "gpt2"])
def test_merge_equals_unmerged_under_a_fixed_gate_and_unmerge_restores(build, name, config, gate, tokens):
    model = randomize_b(add_adapters(build(), config))
    original = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    fixed = None if gate is None or isinstance(gate, int) else gate
    routes = torch.full((tokens.shape[0],), gate) if isinstance(gate, int) else None
    with routing(model, routes=routes, gate=fixed):
        expected = model(tokens).logits
    merge_adapters(model, gate=gate)
    merged = model(tokens).logits  # merged: routing is no longer consulted
    torch.testing.assert_close(merged, expected, atol=1e-5, rtol=1e-5)
    changed = [n for n, p in model.named_parameters() if not p.requires_grad and not torch.equal(p, original[n])]
    assert changed, "merging changed no base weight"
    unmerge_adapters(model)
    for n, p in model.named_parameters():
        if not p.requires_grad:
            torch.testing.assert_close(p, original[n], atol=1e-6, rtol=1e-6)


def test_learned_gate_merges_only_under_a_given_gate():
    model = add_adapters(small_llama(), AdapterConfig(method="hydra", r=4, heads=3))
    with pytest.raises(ValueError, match="cannot be folded"):
        merge_adapters(model)
    with pytest.raises(ValueError, match="3 entries"):
        merge_adapters(model, gate=[0.5, 0.5])


def test_count_parameters_exact_on_a_small_model():
    config = AdapterConfig(method="hydra", r=4, heads=3, targets=["q_proj", "v_proj"])
    count = count_parameters(add_adapters(small_llama(), config))
    # 2 layers x 2 targets, each 64 -> 64: A 4x64, B 64x(3*4), router 3x64
    assert count.adapter == 4 * (4 * 64 + 64 * 12)
    assert count.router == 4 * (3 * 64)
    assert count.trainable == count.adapter + count.router
    assert count.paper == (1 + 3) / 2 * 4 * 4 * (64 + 64)


def llama2_7b_on_meta():
    config = LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096)
    with torch.device("meta"):
        return LlamaForCausalLM(config)


@pytest.mark.parametrize("method, heads, percent", [("lora", 1, 0.062), ("hydra", 3, 0.124), ("hydra", 10, 0.341)])
def test_count_parameters_reproduces_the_papers_percentages_on_llama2_7b(method, heads, percent):
    model = add_adapters(llama2_7b_on_meta(), AdapterConfig(method=method, r=8, heads=heads,
                                                            targets=["q_proj", "v_proj"]))
    count = count_parameters(model)
    assert count.base == 6_738_415_616
    assert round(count.paper_table_percent, 3) == percent
    assert abs(count.paper_percent - percent) < 0.0015  # the unrounded product
    assert count.trainable >= count.paper  # exact count includes routers


def test_full_fine_tuning_counts_every_trainable_weight():
    model = small_llama()
    count = count_parameters(model)
    assert count.trainable == count.base == sum(p.numel() for p in model.parameters())


def test_merge_under_per_layer_mean_gates_equals_routing_each_layer_by_its_mean(tokens):
    from hydralib import adapter_layers, mean_gates
    model = randomize_b(add_adapters(small_llama(), AdapterConfig(method="hydra", r=4, heads=3)))
    gates = mean_gates(model, tokens)
    layers = adapter_layers(model)
    assert set(gates) == set(layers) and all(torch.allclose(g.sum(), torch.tensor(1.0)) for g in gates.values())
    for name, layer in layers.items():
        layer.routing.fixed_gate = gates[name]
    expected = model(tokens).logits
    for layer in layers.values():
        layer.routing.fixed_gate = None
    routed = model(tokens).logits
    merge_adapters(model, gate=gates)
    torch.testing.assert_close(model(tokens).logits, expected, atol=1e-5, rtol=1e-5)
    assert (routed - expected).abs().max() > 1e-6  # the mean gate is an approximation of per-token routing


def test_a_refused_load_leaves_the_model_as_it_was(tmp_path):
    save_adapters(add_adapters(small_llama(), HYDRA), tmp_path)
    other = small_llama(hidden=32)
    with pytest.raises(ValueError, match="another base model"):
        load_adapters(other, tmp_path)
    from hydralib import adapter_layers
    assert not adapter_layers(other) and all(p.requires_grad for p in other.parameters())


def test_nested_routing_keeps_the_outer_gate_and_restores_on_exit(tokens):
    from hydralib import adapter_layers
    model = randomize_b(add_adapters(small_llama(), AdapterConfig(method="hydra", r=4, heads=3, gate="task")))
    layer = next(iter(adapter_layers(model).values()))
    with routing(model, gate=[1.0, 0.0, 0.0]):
        with routing(model, routes=torch.tensor([2, 2, 2])):
            assert layer.routing.fixed_gate is not None and layer.routing.routes is not None
            inner = model(tokens).logits  # the fixed gate takes precedence
        assert layer.routing.routes is None
        outer = model(tokens).logits
    torch.testing.assert_close(inner, outer)
    assert layer.routing.fixed_gate is None


def test_router_statistics_read_balance_entropy_and_usage_from_recorded_gates(tokens):
    from hydralib.inject import router_statistics
    model = add_adapters(small_llama(), AdapterConfig(method="hydra", r=4, heads=4))
    mask = torch.ones_like(tokens)
    with routing(model, gate=torch.full((4,), 0.25), record="detached"):
        model(input_ids=tokens)
        uniform = router_statistics(model, mask)
    with routing(model, gate=2, record="detached"):
        model(input_ids=tokens)
        one_head = router_statistics(model, mask)
    assert uniform["entropy"] == pytest.approx(math.log(4), abs=1e-5)
    assert one_head["entropy"] == pytest.approx(0.0, abs=1e-5) and one_head["balance_loss"].item() == pytest.approx(4.0)
    assert one_head["usage"].tolist() == [0.0, 0.0, 1.0, 0.0]
    with pytest.raises(RuntimeError, match="no recorded gates"):
        router_statistics(add_adapters(small_llama(), AdapterConfig(method="hydra", r=4, heads=4)), mask)


def test_gates_recorded_with_graph_carry_gradients_to_the_router(tokens):
    from hydralib.inject import router_statistics
    model = add_adapters(small_llama(), AdapterConfig(method="hydra", r=4, heads=3))
    with routing(model, record="graph"):
        model(input_ids=tokens)
        router_statistics(model, torch.ones_like(tokens))["balance_loss"].backward()
    assert all(layer.router.grad is not None and layer.router.grad.abs().max() > 0
               for layer in adapter_layers(model).values())


def test_warm_started_routers_send_each_route_to_its_head():
    from hydralib import load_model
    from hydralib.data import make_corpus
    from hydralib.evaluate import gate_profile
    from hydralib.inject import warm_start_routers
    small = dict(hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=4,
                 num_key_value_heads=4, max_position_embeddings=64)
    rows = [{**r, "route": r["component"]} for r in make_corpus(n_components=3, n_train=60, n_test=6, seed=0)["train"]]
    agreement = {}
    for init in ("kaiming", "clusters"):
        model, tokenizer = load_model("tiny-random", **small)
        add_adapters(model, AdapterConfig(method="hydra", r=4, heads=3, router_init=init), seed=0)
        if init == "clusters":
            warm_start_routers(model, tokenizer, rows)
        chosen = gate_profile(model, tokenizer, rows)["gates"].mean(1).argmax(-1)
        agreement[init] = (chosen == torch.tensor([r["route"] for r in rows])).float().mean().item()
    assert agreement["clusters"] > 0.9 > agreement["kaiming"]
    with pytest.raises(ValueError, match="every row needs a 'route' in 0..2"):
        warm_start_routers(model, tokenizer, [{**rows[0], "route": 5}])
    with pytest.raises(ValueError, match="router_init='clusters' applies to a learned gate only"):
        AdapterConfig(method="hydra", gate="uniform", router_init="clusters")
