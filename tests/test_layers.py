"""The fused adapter layer against the official per-head loop, and the router's behaviour."""
import copy

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from hydralib import AdapterConfig, AdapterLayer, add_adapters, adapter_layers, routing
from hydralib.config import LEARNED_GATES
from hydralib.layers import ROUTERS, Router, register_router
from conftest import randomize_b, small_llama

GATE_SETTINGS = [
    dict(gate="learned"),
    dict(gate="learned", top_k=2),
    dict(gate="learned", router_input="Ax"),
    dict(gate="learned", router_level="sequence"),
    dict(gate="learned", router_level="sequence", router_input="Ax", top_k=1),
    dict(gate="uniform"),
    dict(gate="task"),
]


def make_pair(base, **settings):
    """A fused layer and a loop layer with identical (non-zero) weights."""
    fused = AdapterLayer(base, AdapterConfig(dropout=0.0, **settings))
    with torch.no_grad():
        fused.lora_B.normal_(0, 0.5)
    loop = copy.deepcopy(fused)
    loop.config = AdapterConfig(dropout=0.0, implementation="loop", **settings)
    return fused, loop


def run(layer, x, routes):
    x = x.clone().requires_grad_(True)
    with routing_if(layer, routes):
        y = layer(x)
    (y * torch.linspace(-1, 1, y.shape[-1])).sum().backward()
    grads = {n: p.grad.clone() for n, p in layer.named_parameters() if p.requires_grad}
    return y.detach(), x.grad, grads


def routing_if(layer, routes):
    wrapper = nn.Module()
    wrapper.layer = layer
    return routing(wrapper, routes=routes)


@pytest.mark.parametrize("base_type", ["linear", "conv1d"])
@pytest.mark.parametrize("method", ["hydra", "split"])
@pytest.mark.parametrize("settings", GATE_SETTINGS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_fused_equals_per_head_loop(method, settings, base_type):
    torch.manual_seed(0)
    base = nn.Linear(24, 20) if base_type == "linear" else Conv1D(20, 24)
    base.requires_grad_(False)
    fused, loop = make_pair(base, method=method, r=3, heads=4, **settings)
    x = torch.randn(2, 5, 24)
    routes = torch.tensor([3, 1])
    y_fused, gx_fused, g_fused = run(fused, x, routes)
    y_loop, gx_loop, g_loop = run(loop, x, routes)
    assert (y_fused - base(x)).abs().max() > 1e-2  # the update is not trivially zero
    torch.testing.assert_close(y_fused, y_loop, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gx_fused, gx_loop, atol=1e-5, rtol=1e-5)
    assert g_fused.keys() == g_loop.keys()
    for name in g_fused:
        assert g_fused[name].abs().max() > 0 or name == "router"
        scale = max(1.0, g_loop[name].abs().max().item())  # float error grows with the gradient's size
        torch.testing.assert_close(g_fused[name], g_loop[name], atol=1e-5 * scale, rtol=1e-5)


def test_top_k_keeps_k_heads_per_token():
    torch.manual_seed(0)
    layer = AdapterLayer(nn.Linear(16, 16), AdapterConfig(heads=4, top_k=2))
    gate = layer.gate(torch.randn(3, 7, 16), None)
    assert ((gate > 0).sum(-1) == 2).all()
    torch.testing.assert_close(gate.sum(-1), torch.ones(3, 7))


def test_task_gate_uses_only_the_samples_head():
    torch.manual_seed(0)
    fused, _ = make_pair(nn.Linear(8, 8), method="hydra", r=2, heads=3, gate="task")
    x = torch.randn(2, 4, 8)
    with routing_if(fused, torch.tensor([0, 2])):
        y = fused(x)
    h = x @ fused.lora_A.T
    s = fused.config.scaling
    torch.testing.assert_close(y[0], fused.base(x[0]) + s * h[0] @ fused.lora_B[:, 0:2].T)
    torch.testing.assert_close(y[1], fused.base(x[1]) + s * h[1] @ fused.lora_B[:, 4:6].T)


def test_sequence_router_pools_the_prompt_and_holds_its_gate_while_generating():
    torch.manual_seed(0)
    layer = AdapterLayer(nn.Linear(8, 8), AdapterConfig(heads=3, router_level="sequence"))
    x = torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]])
    wrapper = nn.Module()
    wrapper.layer = layer
    with routing(wrapper, prompt_mask=mask):
        g = layer.gate(x, None)
    expected = torch.softmax(torch.stack([x[0, :3].mean(0), x[1, :2].mean(0)]) @ layer.router.T, -1)
    torch.testing.assert_close(g, expected.unsqueeze(1))  # one gate per sample, from the prompt only
    x_changed = x.clone()
    x_changed[:, 3:] = 100.0  # the response tokens must not move the gate
    with routing(wrapper, prompt_mask=mask):
        torch.testing.assert_close(layer.gate(x_changed, None), g)
    with routing(wrapper, prompt_mask=mask, hold=True):
        first = layer.gate(x, None)
        later = layer.gate(torch.randn(2, 1, 8), None)  # a generated token reuses the prompt's gate
        torch.testing.assert_close(first, later)
    assert layer.routing.held is None and layer.routing.prompt_mask is None  # released after the block


def test_task_gate_without_ids_says_how_to_give_them():
    layer = AdapterLayer(nn.Linear(8, 8), AdapterConfig(heads=2, gate="task"))
    with pytest.raises(RuntimeError, match="hydralib.routing"):
        layer(torch.randn(1, 3, 8))


def test_router_and_a_start_non_zero_and_b_at_zero():
    layer = AdapterLayer(nn.Linear(32, 32), AdapterConfig(heads=4, dropout=0.5))
    assert layer.router.std() > 0.01 and (layer.router != 0).float().mean() > 0.99
    assert layer.lora_A.std() > 0.01 and layer.lora_B.abs().max() == 0


def two_component_batches(steps, batch=8, length=16, seed=0):
    """Two distinct components: tokens from disjoint vocab ranges with different rules."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        half = batch // 2
        a = torch.randint(10, 40, (half, 1), generator=g).repeat(1, length)          # repeat one token
        b = (torch.randint(50, 60, (half, 1), generator=g) + torch.arange(length)) % 97  # count upwards
        yield torch.cat([a, b])


def train_hydra(router_init, steps=40):
    model = add_adapters(small_llama(), AdapterConfig(method="hydra", r=4, heads=2, targets=["q_proj", "v_proj"],
                                                      router_init=router_init))
    model.train()
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for ids in two_component_batches(steps):
        loss = model(ids, labels=ids).loss
        loss.backward()
        optim.step()
        optim.zero_grad()
    return model


def head_difference(model):
    """Per layer: |B_0 - B_1| / |B_0|."""
    out = []
    for layer in adapter_layers(model).values():
        b0, b1 = layer.lora_B[:, :4], layer.lora_B[:, 4:]
        out.append(((b0 - b1).norm() / b0.norm()).item())
    return out


def test_hydra_heads_separate_with_kaiming_router_and_not_with_a_zero_one():
    separated = head_difference(train_hydra("kaiming"))
    assert min(separated) > 0.2, separated
    stuck = head_difference(train_hydra("zeros"))
    assert max(stuck) < 1e-5, stuck  # identical heads: the lesson of the non-zero router init


@pytest.mark.parametrize("bad, message", [
    (dict(r=0), "r must be"),
    (dict(heads=0), "heads must be"),
    (dict(method="moe"), "method must be one of lora, split, hydra, got method='moe'"),
    (dict(gate="softmax"), "gate must be one of .*got gate='softmax'"),
    (dict(heads=4, top_k=5), "top_k must be"),
    (dict(method="lora", heads=3), "exactly one head"),
    (dict(router_input="h"), "router_input must be one of x, Ax"),
    (dict(dropout=1.5), "dropout must be"),
    (dict(router_level="sample"), "router_level must be one of token, sequence"),
    (dict(gate="uniform", router_level="sequence"), "applies to a learned gate only"),
])
def test_bad_config_is_refused_with_a_clear_message(bad, message):
    with pytest.raises(ValueError, match=message):
        AdapterConfig(**bad)


def test_unknown_target_lists_the_models_linear_modules():
    with pytest.raises(ValueError) as err:
        add_adapters(small_llama(), AdapterConfig(targets=["q_prj"]))
    text = str(err.value)
    assert "'q_prj' matches no module" in text
    assert "model.layers.*.self_attn.q_proj" in text and "model.layers.*.mlp.down_proj" in text


def test_target_on_a_non_linear_module_is_refused():
    with pytest.raises(ValueError, match="not a linear layer"):
        add_adapters(small_llama(), AdapterConfig(targets=["self_attn"]))


def test_target_forms_select_the_expected_modules():
    all_linear = adapter_layers(add_adapters(small_llama(), AdapterConfig(targets="all-linear")))
    assert len(all_linear) == 2 * 7 and not any("lm_head" in n for n in all_linear)
    regex = adapter_layers(add_adapters(small_llama(), AdapterConfig(targets=r".*\.(q|v)_proj")))
    suffix = adapter_layers(add_adapters(small_llama(), AdapterConfig(targets=["q_proj", "v_proj"])))
    assert sorted(regex) == sorted(suffix) and len(suffix) == 4


def test_add_adapters_freezes_the_base():
    model = randomize_b(add_adapters(small_llama(), AdapterConfig()))
    trainable = {n.rsplit(".", 1)[-1] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"lora_A", "lora_B", "router"}


def test_seeded_adapters_do_not_depend_on_or_touch_the_global_random_state():
    first = add_adapters(small_llama(), AdapterConfig(), seed=3)
    base = small_llama()
    torch.randn(1000)  # e.g. a pretraining ran in between
    state = torch.get_rng_state()
    second = add_adapters(base, AdapterConfig(), seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    for (name, a), (_, b) in zip(adapter_layers(first).items(), adapter_layers(second).items()):
        assert torch.equal(a.lora_A, b.lora_A) and torch.equal(a.router, b.router), name


def test_without_a_gate_every_head_gets_the_same_gradient_and_trains_one_lora():
    """The paper's "w/o gate": zero B heads under a uniform gate receive identical gradients, stay identical,
    and so train exactly the update of one LoRA of rank r (Adam does not see the 1/N scale of the gradient)."""
    torch.manual_seed(0)
    base = nn.Linear(12, 10).requires_grad_(False)  # frozen, as add_adapters leaves it
    heads = AdapterLayer(base, AdapterConfig(method="hydra", r=4, alpha=8, heads=3, gate="uniform"))
    single = AdapterLayer(base, AdapterConfig(method="lora", r=4, alpha=8))
    with torch.no_grad():
        single.lora_A.copy_(heads.lora_A)
    x, target = torch.randn(6, 12), torch.randn(6, 10)
    optimizers = [torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-2, eps=1e-12)
                  for m in (heads, single)]
    for step in range(5):
        for model, optimizer in zip((heads, single), optimizers):
            optimizer.zero_grad()
            ((model(x) - target) ** 2).mean().backward()
            if model is heads:
                blocks = heads.lora_B.grad.split(4, dim=1)
                assert all(torch.equal(blocks[0], b) for b in blocks[1:])  # the same gradient for every head
            optimizer.step()
    torch.testing.assert_close(heads(x), single(x), atol=1e-5, rtol=1e-5)


class TemperatureRouter(Router):
    """A router defined here, outside the library: a softmax router with a learned temperature (a tensor of
    its own) and a loss of its own (a z-loss on the gates), to show that a new router is a change to the
    layer's declaration alone: training, saving, loading, counting and merging need nothing more."""

    def shapes(self, config, in_features):
        return {**super().shapes(config, in_features), "router_temperature": (1,)}

    @torch.no_grad()
    def initialise(self, layer):
        super().initialise(layer)
        layer.router_temperature.fill_(1.0)

    def logits(self, layer, source):
        return super().logits(layer, source) / layer.router_temperature.abs().clamp_min(0.05)

    def loss(self, layer, gates):
        return 0.1 * (gates ** 2).sum(-1).mean()


@pytest.fixture
def temperature_router():
    register_router("temperature", TemperatureRouter())
    yield
    ROUTERS.pop("temperature")
    LEARNED_GATES.remove("temperature")


def test_a_router_defined_outside_the_library_trains_saves_loads_and_merges(tmp_path, temperature_router):
    from hydralib import TrainConfig, count_parameters, load_adapters, merge_adapters, save_adapters, train
    from hydralib.bases import load_model
    from hydralib.data.synthetic import make_corpus

    config = AdapterConfig(method="hydra", r=4, heads=2, gate="temperature", targets=["q_proj", "v_proj"])
    options = dict(hidden_size=64, num_hidden_layers=2, intermediate_size=128, max_position_embeddings=64)
    model, tokenizer = load_model("tiny-random", **options)
    add_adapters(model, config, seed=0)
    layer = next(iter(adapter_layers(model).values()))
    assert set(layer.adapter_tensors()) == {"lora_A", "lora_B", "router", "router_temperature"}
    assert count_parameters(model).router == sum(l.router.numel() + 1 for l in adapter_layers(model).values())

    rows = make_corpus(n_components=2, n_train=32, n_test=4, seed=0)["train"]
    result = train(model, tokenizer, rows, TrainConfig(steps=3, batch_size=8, lr=5e-2, progress=False))
    temperatures = [l.router_temperature.item() for l in adapter_layers(model).values()]
    assert all(t != 1.0 for t in temperatures)  # its own tensor trained
    assert result.metrics[-1]["loss"] > 0

    save_adapters(model, tmp_path / "adapter")
    fresh, _ = load_model("tiny-random", **options)
    load_adapters(fresh, tmp_path / "adapter")
    ids = torch.randint(3, 200, (2, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(fresh(input_ids=ids).logits, model(input_ids=ids).logits)
        with routing(model, gate=torch.tensor([0.25, 0.75])):
            gated = model(input_ids=ids).logits
        merge_adapters(model, gate=[0.25, 0.75])
        torch.testing.assert_close(model(input_ids=ids).logits, gated, atol=1e-5, rtol=1e-5)


def test_the_router_loss_is_trained_on_and_a_router_without_one_records_no_graph(temperature_router):
    layer = AdapterLayer(nn.Linear(8, 8), AdapterConfig(method="hydra", r=2, heads=2, gate="temperature"))
    x = torch.randn(3, 5, 8)
    layer.routing.record = "graph"
    layer(x)
    loss = layer.router_loss()
    loss.backward()
    assert layer.router.grad is not None and layer.router.grad.abs().sum() > 0
    plain = AdapterLayer(nn.Linear(8, 8), AdapterConfig(method="hydra", r=2, heads=2))
    plain.routing.record = "graph"
    plain(x)
    assert plain.router_loss() is None


@pytest.mark.parametrize("input_dtype", [torch.float32, torch.bfloat16])
def test_fused_layer_under_bf16_autocast_stays_within_bf16_rounding_of_the_fp32_loop(input_dtype):
    """Under autocast the fused layer casts x once for both products (a bf16 input is not widened first); its
    output and gradients stay within bf16 rounding of the fp32 per-head loop."""
    torch.manual_seed(0)
    base = nn.Linear(48, 40).requires_grad_(False)
    fused, loop = make_pair(base, method="hydra", r=4, heads=4, gate="learned")
    x = torch.randn(3, 7, 48)
    y_loop, gx_loop, g_loop = run(loop, x, None)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, gx, g = run(fused, x.to(input_dtype), None)
    assert y.dtype == torch.bfloat16 and gx.dtype == input_dtype
    scale = y_loop.abs().max()
    assert (y.float() - y_loop).abs().max() < 0.03 * scale
    assert (gx.float() - gx_loop).abs().max() < 0.03 * gx_loop.abs().max()
    for name in g_loop:
        assert g[name].dtype == torch.float32  # the adapters train in fp32
        assert (g[name] - g_loop[name]).abs().max() < 0.05 * g_loop[name].abs().max(), name
