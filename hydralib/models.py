"""The tiny model's building blocks: a byte-level tokenizer, the tiny LLaMA config and its random
initialisation, and the cache folder and source fingerprint that cached artefacts are keyed by.

Nothing here trains or loads a checkpoint: the pretrained base and `load_model` live one layer up,
in hydralib.bases (data -> models -> layers/inject -> train -> evaluate -> bases -> runs).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>")
# Hidden 192 (not 256): 0.56x the multiply-adds, so a first `make suite` fits its 60 minutes on 2 cores, and
# the pretrained base learns the primitives better at the same 1000 steps (exact match .86 against .61).
TINY_DEFAULTS = dict(hidden_size=192, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
                     intermediate_size=512, max_position_embeddings=256)


def build_byte_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (one token per UTF-8 byte, plus pad/bos/eos) built locally, no downloads."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    vocab.update({ch: len(SPECIAL_TOKENS) + i for i, ch in enumerate(alphabet)})
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   padding_side="right")


def tiny_config(tokenizer: PreTrainedTokenizerFast, **overrides) -> LlamaConfig:
    values = {"vocab_size": len(tokenizer), **TINY_DEFAULTS, **overrides}
    return LlamaConfig(pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       tie_word_embeddings=False, **values)


def build_tiny(seed: int = 0, **overrides) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A randomly initialised tiny LLaMA (hidden 192, 4 layers by default) and its byte tokenizer."""
    tokenizer = build_byte_tokenizer()
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_config(tokenizer, **overrides))
    model.config.name_or_path = "hydralib/tiny"
    return model, tokenizer


def cache_dir() -> Path:
    """$HYDRALIB_CACHE if set, else ~/.cache/hydralib."""
    env = os.environ.get("HYDRALIB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hydralib"
