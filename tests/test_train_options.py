"""Training-step levers of TrainConfig: bf16 autocast on the CPU, padding to a multiple, torch.compile.

Each must train (the loss falls), bf16 must stay close to fp32, padding must not change the loss, and bad
settings must be refused with the option's name. Their cost and benefit: benchmarks/train_throughput.py.
"""
import copy
import os
import statistics

import pytest
import torch

from hydralib import AdapterConfig, add_adapters, load_model
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
