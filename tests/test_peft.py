"""method='lora' equals PEFT's LoraConfig LoRA carrying the same A and B."""
import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model

from hydralib import AdapterConfig, add_adapters, adapter_layers
from conftest import randomize_b, small_gpt2, small_llama

CASES = {
    "llama": (small_llama, ["q_proj", "v_proj", "down_proj"], False),
    "gpt2-conv1d": (small_gpt2, ["c_attn", "c_fc"], True),
}


@pytest.mark.parametrize("case", CASES)
def test_lora_matches_peft_outputs_and_gradients(case, tokens):
    build, targets, conv1d = CASES[case]
    base = build()
    base_logits = base(tokens).logits.detach()
    ours = randomize_b(add_adapters(copy.deepcopy(base), AdapterConfig(method="lora", r=4, alpha=8, targets=targets)))
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets,
                                                 fan_in_fan_out=conv1d))
    layers = adapter_layers(ours)
    peft_layers = {n.removeprefix("base_model.model."): m for n, m in peft_model.named_modules()
                   if hasattr(m, "lora_A") and "default" in getattr(m, "lora_A", {})}
    assert sorted(layers) == sorted(peft_layers) and layers
    with torch.no_grad():
        for name, layer in layers.items():
            peft_layers[name].lora_A["default"].weight.copy_(layer.lora_A)
            peft_layers[name].lora_B["default"].weight.copy_(layer.lora_B)

    logits = ours(tokens).logits
    peft_logits = peft_model(tokens).logits
    assert (logits - base_logits).abs().max() > 1e-3  # the adapters do change the outputs
    torch.testing.assert_close(logits, peft_logits, atol=1e-5, rtol=1e-5)
    weights = torch.linspace(-1, 1, logits.shape[-1])
    (logits * weights).sum().backward()
    (peft_logits * weights).sum().backward()
    for name, layer in layers.items():
        torch.testing.assert_close(layer.lora_A.grad, peft_layers[name].lora_A["default"].weight.grad,
                                   atol=1e-5, rtol=1e-5, msg=f"{name} A grad")
        torch.testing.assert_close(layer.lora_B.grad, peft_layers[name].lora_B["default"].weight.grad,
                                   atol=1e-5, rtol=1e-5, msg=f"{name} B grad")
        assert layer.lora_A.grad.abs().max() > 0
