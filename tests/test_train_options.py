"""Training-step levers of TrainConfig: bf16 autocast on the CPU, padding to a multiple, torch.compile.

Each must train (the loss falls), bf16 must stay close to fp32, padding must not change the loss, and bad
settings must be refused with the option's name. Their cost and benefit: benchmarks/train_throughput.py.
"""
import contextlib
import copy
import importlib
import os
import statistics

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from hydralib import AdapterConfig, add_adapters, load_model
from hydralib.inject import frozen_linear_weights_in
from hydralib.data import make_corpus
from hydralib.train import TrainConfig, _pad_to_multiple, train

SMALL = dict(hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=4,
             num_key_value_heads=4, max_position_embeddings=64)
CORPUS = make_corpus(n_components=2, conflict=1.0, n_train=64, n_test=16, seed=0)


def adapted(adapter=AdapterConfig(method="hydra", r=4, heads=2)):
    model, tokenizer = load_model("tiny-random", **SMALL)
    add_adapters(model, adapter, seed=0)
    return model, tokenizer


def run(model, tokenizer, steps=30, lr=5e-3, **options):
    config = TrainConfig(steps=steps, batch_size=8, lr=lr, progress=False, device="cpu", **options)
    return train(model, tokenizer, CORPUS["train"], config)


def losses(result):
    return [m["loss"] for m in result.metrics]


def test_defaults_are_todays_step():
    config = TrainConfig()
    assert config.compile is False and config.pad_to_multiple == 1 and config.mixed_precision == "auto"


@pytest.mark.parametrize("options, message", [
    ({"pad_to_multiple": 0}, "pad_to_multiple"),
    ({"pad_to_multiple": 2.5}, "pad_to_multiple"),
    ({"compile": "yes"}, "compile"),
    ({"mixed_precision": "bfloat16"}, "mixed_precision"),
    ({"template": "nope"}, "unknown template 'nope'; allowed: 'compact', 'alpaca', 'alpaca_no_input'"),
])
def test_bad_options_are_refused_by_name(options, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**options)


def test_pad_to_multiple_pads_masked_positions_only():
    batch = {"input_ids": torch.ones(2, 5, dtype=torch.long), "attention_mask": torch.ones(2, 5, dtype=torch.long),
             "labels": torch.ones(2, 5, dtype=torch.long), "component": torch.tensor([0, 1]),
             "route": torch.tensor([0, 1])}
    padded = _pad_to_multiple(batch, 8, pad_token_id=7)
    assert padded["input_ids"].shape == (2, 8)
    assert padded["input_ids"][:, 5:].eq(7).all() and padded["attention_mask"][:, 5:].eq(0).all()
    assert padded["labels"][:, 5:].eq(-100).all()
    assert torch.equal(padded["component"], batch["component"])
    assert _pad_to_multiple(batch, 5, 7) is batch and _pad_to_multiple(batch, 1, 7) is batch


def test_padding_to_a_multiple_leaves_the_losses_unchanged():
    base, tokenizer = adapted()
    plain = losses(run(copy.deepcopy(base), tokenizer, steps=5))
    padded = losses(run(copy.deepcopy(base), tokenizer, steps=5, pad_to_multiple=16))
    assert padded == pytest.approx(plain, rel=1e-4, abs=1e-5)


def test_bf16_on_cpu_trains_and_stays_close_to_fp32():
    model, tokenizer = load_model("tiny-random", **SMALL)  # full fine-tuning: every weight under autocast
    fp32 = losses(run(copy.deepcopy(model), tokenizer, steps=20, lr=1e-2))
    bf16 = run(copy.deepcopy(model), tokenizer, steps=20, lr=1e-2, mixed_precision="bf16")
    curve = losses(bf16)
    assert statistics.mean(curve[-4:]) < statistics.mean(curve[:4]) - 0.5  # it learns
    assert curve[0] == pytest.approx(fp32[0], rel=0.02)  # same start, bf16 rounding only
    assert statistics.mean(curve[-4:]) == pytest.approx(statistics.mean(fp32[-4:]), rel=0.1)
    # autocast computes in bf16; the parameters (and the returned model) stay fp32
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())


@pytest.mark.skipif(not os.environ.get("HYDRALIB_TEST_COMPILE"), reason="a cold torch.compile costs minutes on 2 cores; "
                    "set HYDRALIB_TEST_COMPILE=1 to run it")
def test_compiled_step_trains_like_the_eager_step(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    base, tokenizer = adapted()
    eager = losses(run(copy.deepcopy(base), tokenizer, steps=6, pad_to_multiple=32))
    compiled = run(copy.deepcopy(base), tokenizer, steps=6, pad_to_multiple=32, compile=True)
    assert losses(compiled) == pytest.approx(eager, rel=1e-3, abs=1e-4)
    assert not hasattr(compiled.model, "_orig_mod")  # callers get the plain model back


def test_frozen_weights_stored_in_bf16_train_exactly_as_autocast_casts_them(monkeypatch):
    """bf16 training on the CPU stores the frozen linear weights in bf16 for the run: autocast rounds them to bf16
    at every call anyway, so the losses are bit for bit those of casting at every call, and the model comes back
    with its fp32 base weights untouched."""
    base, tokenizer = adapted()
    frozen = {n: p.detach().clone() for n, p in base.named_parameters() if not p.requires_grad}
    seen = []  # the dtype a frozen weight has while the model trains

    def trained(model):
        model.model.layers[0].mlp.up_proj.base.register_forward_pre_hook(lambda m, args: seen.append(m.weight.dtype))
        return model

    stored = run(trained(copy.deepcopy(base)), tokenizer, steps=5, mixed_precision="bf16")
    train_module = importlib.import_module("hydralib.train")
    monkeypatch.setattr(train_module, "frozen_linear_weights_in", lambda model, dtype: contextlib.nullcontext())
    cast_each_call = run(trained(copy.deepcopy(base)), tokenizer, steps=5, mixed_precision="bf16")
    assert seen == [torch.bfloat16] * 5 + [torch.float32] * 5
    assert losses(stored) == losses(cast_each_call)
    after = dict(stored.model.named_parameters())
    assert all(after[n].dtype == torch.float32 and torch.equal(after[n], w) for n, w in frozen.items())


def test_frozen_linear_weights_in_leaves_trained_and_tied_weights_alone():
    model = LlamaForCausalLM(LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True))
    add_adapters(model, AdapterConfig(method="hydra", r=4, heads=2), seed=0)
    q = model.model.layers[0].self_attn.q_proj
    originals = {"q": q.base.weight.data, "head": model.lm_head.weight.data}
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied
    with frozen_linear_weights_in(model, torch.bfloat16):
        assert q.base.weight.dtype == torch.bfloat16
        assert q.lora_A.dtype == torch.float32 and q.router.dtype == torch.float32  # trained: never narrowed
        assert model.lm_head.weight.dtype == torch.float32  # shared with the embedding
        assert torch.equal(q.base.weight.float(), originals["q"].to(torch.bfloat16).float())
    for weight, original in ((q.base.weight, originals["q"]), (model.lm_head.weight, originals["head"])):
        assert weight.dtype == torch.float32 and weight.data_ptr() == original.data_ptr()  # the original storage
