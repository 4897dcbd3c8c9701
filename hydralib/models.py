"""load_model(name) -> (model, tokenizer), with nothing fetched from a hub for the built-in names.

`tiny`: a LLaMA-architecture model built from a config with a byte-level tokenizer made here.
"""
from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>")
TINY_DEFAULTS = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
                     intermediate_size=688, max_position_embeddings=256)


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
    """A randomly initialised tiny LLaMA (hidden 256, 4 layers by default) and its byte tokenizer."""
    tokenizer = build_byte_tokenizer()
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_config(tokenizer, **overrides))
    model.config.name_or_path = "hydralib/tiny"
    return model, tokenizer


def load_model(name: str, seed: int = 0, **overrides):
    """(model, tokenizer) for a built-in name ('tiny') or any transformers id or local path."""
    if name == "tiny":
        return build_tiny(seed=seed, **overrides)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(name)
    return AutoModelForCausalLM.from_pretrained(name, **overrides), tokenizer
