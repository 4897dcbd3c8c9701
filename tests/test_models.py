"""The tiny model's building blocks: byte tokenizer, config, random build, cache folder, source fingerprint."""
import ast
from pathlib import Path

import torch

from hydralib import models
from hydralib.models import TINY_DEFAULTS, build_byte_tokenizer, build_tiny, cache_dir, tiny_config


def test_tokenizer_round_trips_any_bytes_one_token_per_byte():
    tokenizer = build_byte_tokenizer()
    assert len(tokenizer) == 3 + 256
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    for text in ["copy: abc", "Ünïcödé ✓ 漢字", "  two  spaces\nand a newline\t", ""]:
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert len(ids) == len(text.encode("utf-8"))
        assert all(i >= 3 for i in ids)
        assert tokenizer.decode(ids) == text
    assert tokenizer.padding_side == "right"


def test_build_tiny_has_the_known_shapes_and_parameter_count():
    model, tokenizer = build_tiny()
    config = model.config
    shape = (config.hidden_size, config.num_hidden_layers, config.intermediate_size, config.vocab_size)
    assert shape == (192, 4, 512, 259)
    assert not config.tie_word_embeddings
    h, i, v, layers = 192, 512, 259, 4
    per_layer = 4 * h * h + 3 * h * i + 2 * h  # q, k, v, o; gate, up, down; two RMSNorms
    assert sum(p.numel() for p in model.parameters()) == 2 * v * h + layers * per_layer + h == 1_870_656
    logits = model(input_ids=torch.tensor([tokenizer.encode("copy: ab", add_special_tokens=False)])).logits
    assert logits.shape == (1, 8, 259)


def test_build_tiny_overrides_and_seed():
    small, _ = build_tiny(hidden_size=64, num_hidden_layers=2, intermediate_size=128)
    assert sum(p.numel() for p in small.parameters()) == 2 * 259 * 64 + 2 * (4 * 64 * 64 + 3 * 64 * 128 + 2 * 64) + 64
    size = dict(hidden_size=32, num_hidden_layers=1, intermediate_size=64)
    a, b, c = (build_tiny(seed=s, **size)[0] for s in (0, 0, 1))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.model.embed_tokens.weight, c.model.embed_tokens.weight)
    assert tiny_config(build_byte_tokenizer()).hidden_size == TINY_DEFAULTS["hidden_size"]


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("HYDRALIB_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path
    monkeypatch.delenv("HYDRALIB_CACHE")
    assert cache_dir() == Path.home() / ".cache" / "hydralib"


def test_models_imports_nothing_above_it():
    """models.py is the layer under training and the bases: it imports no hydralib module."""
    tree = ast.parse(Path(models.__file__).read_text())
    relative = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level > 0]
    absolute = [a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names]
    assert relative == [] and not any(name.startswith("hydralib") for name in absolute)
