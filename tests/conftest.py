import csv
import json
import os
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from hydralib.inject import randomize_b  # noqa: F401  (tests import it from here)

from real_fixtures import GSM8K

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def small_llama(seed: int = 0, hidden: int = 64, layers: int = 2) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=97, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64)
    return LlamaForCausalLM(config).eval()


def small_gpt2(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=97, n_embd=64, n_layer=2, n_head=4, n_positions=64)
    return GPT2LMHeadModel(config).eval()


@pytest.fixture
def tokens():
    return torch.randint(0, 97, (3, 12), generator=torch.Generator().manual_seed(0))


@pytest.fixture
def shared_data():
    """The real benchmark files (GSM8K, MMLU): $HYDRALIB_DATA if set, else the repository's data/,
    which a clone carries. Tests using them skip when the folder holds no GSM8K file."""
    path = Path(os.environ.get("HYDRALIB_DATA") or Path(__file__).resolve().parents[1] / "data")
    if not (path / "gsm8k" / "train.jsonl").is_file():
        pytest.skip(f"real data files are absent from {path} (the repository's data/ carries them; "
                    "HYDRALIB_DATA overrides)")
    return path


@pytest.fixture
def small_data(tmp_path, monkeypatch):
    """A data folder with a few GSM8K and MMLU rows in their original formats (no ../shared needed)."""
    for split, rows in (("train", GSM8K[:8]), ("test", GSM8K[8:])):
        folder = tmp_path / "gsm8k"
        folder.mkdir(exist_ok=True)
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for split, n in (("dev", 3), ("val", 5), ("test", 6)):
        folder = tmp_path / "mmlu" / split
        folder.mkdir(parents=True)
        with (folder / f"astronomy_{split}.csv").open("w", newline="") as f:
            csv.writer(f).writerows([[f"{split} question {i}?", "a", "b", "c", "d", "ABCD"[i % 4]] for i in range(n)])
    monkeypatch.setenv("HYDRALIB_DATA", str(tmp_path))
    return tmp_path
