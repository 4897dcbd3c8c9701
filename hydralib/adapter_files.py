"""Adapter files: saving and loading hydralib adapters, merging them away, and PEFT's LoRA folders.

A saved adapter is a folder holding two files:

    adapter_model.safetensors   every adapter tensor, named "<module>.lora_A", ".lora_B", ".router"
    adapter_config.json         format_version, the AdapterConfig, the base model's identity (architecture,
                                target shapes, a fingerprint of its weights), each tensor's shape and dtype,
                                the sha256 of the weights file, and the sha256 of every other entry of
                                this record ("config_sha256"), so an edited config is refused like edited
                                weights (checksums catch damage and edits, they do not authenticate)

Loading is all-or-nothing: everything (JSON, format version, configuration, checksums, every tensor's name,
shape, dtype and finiteness, the base model's identity) is checked before the model is touched, and on any error the
model is left exactly as it was. Every malformed file is refused with an AdapterFileError (a ValueError)
that names the file and what is wrong with it. Saving checks everything before it writes, then writes both
files under temporary names and renames them, so an interrupted save leaves no half-written file.

PEFT interoperation: `export_peft` writes PEFT LoRA folders (adapter_config.json + adapter_model.safetensors,
loadable with `PeftModel.from_pretrained(base, folder)`): a method="lora" adapter as it is, a Split or Hydra
adapter folded under a fixed gate into one LoRA, or one LoRA per head. `import_peft` attaches a PEFT LoRA
folder as a method="lora" hydralib adapter. `merge_and_unload` folds the adapters into the base weights and
removes them, leaving a plain transformers model that `save_pretrained` / `from_pretrained` round-trip.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save
from torch import nn
from transformers.pytorch_utils import Conv1D

from .config import AdapterConfig
from .inject import adapter_layers, add_adapters, find_targets, get_adapter_config, merge_adapters, merge_gates
from .layers import ADAPTABLE_TYPES, AdapterLayer, linear_features

WEIGHTS_NAME = "adapter_model.safetensors"
CONFIG_NAME = "adapter_config.json"
PEFT_BIN_NAME = "adapter_model.bin"
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)  # 1: written before the weights checksum, 2: before the config checksum
RECORD_CHECKSUM_KEY = "config_sha256"


class AdapterFileError(ValueError):
    """A saved adapter file that cannot be used: `path` is the file, `problem` what is wrong with it."""

    def __init__(self, path, problem: str):
        self.path, self.problem = Path(path), problem
        super().__init__(f"{path}: {problem}")


# --- identity -------------------------------------------------------------------------------------
def base_model_identity(model: nn.Module, names: list[str] | None = None) -> dict:
    """What a saved adapter needs its base to be: architecture, target shapes and a weight fingerprint.

    names: the target modules (default: the model's adapter layers); they need not be wrapped yet."""
    names = list(adapter_layers(model)) if names is None else names
    hf_config = getattr(model, "config", None)
    fingerprint, shapes = hashlib.sha256(), {}
    for name in names:
        module = model.get_submodule(name)
        if isinstance(module, AdapterLayer):
            if module.merged:
                raise RuntimeError("cannot identify the base while adapters are merged; call unmerge_adapters first")
            module = module.base
        shapes[name] = list(linear_features(module))
        weight = module.weight
        if fingerprint is None or weight.is_meta:
            fingerprint = None
            continue
        # bfloat16 of a fixed sample, so fp32 and bf16 copies of one checkpoint agree.
        sample = weight.detach().flatten()[:: max(1, weight.numel() // 4096)][:4096]
        fingerprint.update(name.encode())
        fingerprint.update(sample.to(torch.bfloat16).view(torch.int16).cpu().numpy().tobytes())
    return {
        "architecture": type(model).__name__,
        "model_type": getattr(hf_config, "model_type", None),
        "name_or_path": getattr(hf_config, "_name_or_path", None) or getattr(hf_config, "name_or_path", None),
        "target_shapes": shapes,
        "weight_fingerprint": None if fingerprint is None else fingerprint.hexdigest()[:16],
    }


def _differences(saved: dict, current: dict) -> list[str]:
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            only_saved, only_here = sorted(set(a) - set(b)), sorted(set(b) - set(a))
            changed = [k for k in set(a) & set(b) if a[k] != b[k]]
            out.append(f"{key}: saved-only {only_saved[:3]}, model-only {only_here[:3]}, "
                       f"different {[(k, a[k], b[k]) for k in sorted(changed)[:3]]}")
        else:
            out.append(f"{key}: saved {a!r}, model has {b!r}")
    return out


# --- reading files, refusing malformed ones -------------------------------------------------------
def _read_json(path: Path) -> dict:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise AdapterFileError(path, f"is not UTF-8 text ({err.reason} at byte {err.start}); is it a JSON file?") from None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        raise AdapterFileError(path, f"is not valid JSON ({err.msg} at line {err.lineno} column {err.colno}); "
                                     "the file is truncated or was edited by hand") from None
    except RecursionError:
        raise AdapterFileError(path, "nests JSON lists or objects too deeply to read; it was not written by "
                                     "hydralib or PEFT") from None
    except ValueError as err:  # an integer longer than Python converts (sys.get_int_max_str_digits)
        raise AdapterFileError(path, f"holds a value JSON cannot be read into ({err})") from None
    if not isinstance(record, dict):
        raise AdapterFileError(path, f"holds a JSON {type(record).__name__}, not the expected object")
    return record


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", dict: "an object", list: "a list",
               bool: "true or false", type(None): "null"}


def _field(record: dict, key: str, types: tuple, path: Path, where: str = ""):
    """record[key], refused with the file's name when it is missing or of another type (bool is not int)."""
    if key not in record:
        raise AdapterFileError(path, f"has no {where}{key!r} entry")
    value = record[key]
    if isinstance(value, bool) and bool not in types or not isinstance(value, types):
        wanted = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)
        raise AdapterFileError(path, f"{where}{key!r} must be {wanted}, got {type(value).__name__} {_short(value)}")
    return value


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _int_list(value, length: int | None, path: Path, where: str) -> list[int]:
    if (not isinstance(value, list) or (length is not None and len(value) != length)
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)):
        wanted = f"{length} " if length is not None else ""
        raise AdapterFileError(path, f"{where} must be a list of {wanted}non-negative integers, got {_short(value)}")
    return value


def _read_safetensors(path: Path, data: bytes) -> dict[str, torch.Tensor]:
    try:
        return safetensors_load(data)
    except Exception as err:  # safetensors raises its own SafetensorError, or others on a damaged header
        raise AdapterFileError(path, f"is not a readable safetensors file ({type(err).__name__}: {err}); "
                                     "it is truncated or corrupted") from None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def record_checksum(record: dict) -> str:
    """The sha256 of every entry of an adapter_config.json record but the checksum itself (canonical JSON)."""
    rest = {k: v for k, v in record.items() if k != RECORD_CHECKSUM_KEY}
    return _sha256(json.dumps(rest, sort_keys=True, separators=(",", ":")).encode())


def _nonfinite(tensors: dict[str, torch.Tensor]) -> tuple[str, int] | None:
    """(name, count) of the first tensor holding NaN or Inf values, or None."""
    for key in sorted(tensors):
        bad = int((~torch.isfinite(tensors[key])).sum()) if tensors[key].dtype.is_floating_point else 0
        if bad:
            return key, bad
    return None


def _parse_record(record: dict, path: Path) -> dict:
    """A hydralib adapter_config.json, every entry checked; refused with the file's name otherwise."""
    if "peft_type" in record and "format_version" not in record:
        raise AdapterFileError(path, "is a PEFT adapter config, not a hydralib one; attach it with "
                                     "hydralib.import_peft(model, folder)")
    version = _field(record, "format_version", (int,), path)
    if version not in READABLE_VERSIONS:
        newer = version > FORMAT_VERSION
        raise AdapterFileError(path, f"has format version {version}; this hydralib reads versions "
                                     f"{', '.join(map(str, READABLE_VERSIONS))}"
                                     + ("; it was written by a newer hydralib: upgrade" if newer else ""))
    if version >= 3:
        recorded = _field(record, RECORD_CHECKSUM_KEY, (str,), path)
        if recorded != record_checksum(record):
            raise AdapterFileError(path, f"does not match its own checksum ({RECORD_CHECKSUM_KEY!r} {_short(recorded)}"
                                         f", the entries hash to {record_checksum(record)[:12]}...): it was edited "
                                         "or damaged after saving")
    values = _field(record, "adapter_config", (dict,), path)
    try:
        config = AdapterConfig.from_dict(values)
    except (ValueError, TypeError) as err:
        raise AdapterFileError(path, f"'adapter_config' is not a valid AdapterConfig: {err}") from None
    identity = dict(_field(record, "base_model", (dict,), path))
    where = "'base_model' entry "
    _field(identity, "architecture", (str,), path, where)
    _field(identity, "model_type", (str, type(None)), path, where)
    identity.setdefault("name_or_path", None)
    _field(identity, "weight_fingerprint", (str, type(None)), path, where)
    targets = _field(identity, "target_shapes", (dict,), path, where)
    if not targets:
        raise AdapterFileError(path, "'base_model' entry 'target_shapes' is empty: the adapter adapts no module")
    for name, shape in targets.items():
        _int_list(shape, 2, path, f"target_shapes[{name!r}]")
    shapes = _field(record, "tensor_shapes", (dict,), path)
    for name, shape in shapes.items():
        _int_list(shape, None, path, f"tensor_shapes[{name!r}]")
    out = {"version": version, "config": config, "identity": identity, "tensor_shapes": shapes,
           "tensor_dtypes": None, "sha256": None}
    if version >= 2:
        out["tensor_dtypes"] = _field(record, "tensor_dtypes", (dict,), path)
        sha = _field(record, "weights_sha256", (str,), path)
        if not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise AdapterFileError(path, f"'weights_sha256' must be 64 lower-case hex digits, got {_short(sha)}")
        out["sha256"] = sha
    return out


def _expected_shapes(config: AdapterConfig, target_shapes: dict) -> dict[str, tuple]:
    """The shape of every tensor an adapter of this configuration has on targets of these (in, out) shapes."""
    return {f"{name}.{key}": shape for name, (k, d) in target_shapes.items()
            for key, shape in AdapterLayer.parameter_shapes(config, k, d).items()}


def _adapter_tensors(model: nn.Module) -> dict[str, nn.Parameter]:
    """{"<module>.<tensor>": parameter} of every adapter layer, router tensors included."""
    return {f"{name}.{key}": tensor for name, layer in adapter_layers(model).items()
            for key, tensor in layer.adapter_tensors().items()}


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# --- attaching and detaching, undone on failure ---------------------------------------------------
def _unwrap(model: nn.Module) -> None:
    """Put every AdapterLayer's base layer back in its place."""
    for name, layer in adapter_layers(model).items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, layer.base)


def _attach(model: nn.Module, config: AdapterConfig, tensors: dict[str, torch.Tensor]) -> nn.Module:
    """Wrap the targets (unless the model has these adapters already) and copy `tensors` in; any failure
    restores the model exactly (modules, values, requires_grad)."""
    had_adapters = bool(adapter_layers(model))
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    snapshot = {}
    try:
        if had_adapters:
            snapshot = {key: tensor.detach().clone() for key, tensor in _adapter_tensors(model).items()}
        else:
            add_adapters(model, config, seed=0)  # values are overwritten; seed leaves the global RNG alone
        params = _adapter_tensors(model)
        if set(params) != set(tensors):
            raise ValueError(f"internal: tensors {sorted(set(tensors) ^ set(params))[:3]} do not match the adapters")
        with torch.no_grad():
            for key, param in params.items():
                param.copy_(tensors[key])
    except BaseException:
        with torch.no_grad():
            if had_adapters:
                layers = adapter_layers(model)
                for key, value in snapshot.items():
                    name, _, attr = key.rpartition(".")
                    getattr(layers[name], attr).copy_(value)
            else:
                _unwrap(model)
                for name, p in model.named_parameters():
                    p.requires_grad_(flags.get(name, p.requires_grad))
        raise
    return model


# --- saving and loading ---------------------------------------------------------------------------
def _write_files(folder: Path, files: dict[str, bytes], overwrite: bool) -> None:
    """Write each file under a temporary name in `folder`, then rename them into place in order: an
    interrupted write leaves no partial file (the last file named, the config, makes the folder valid)."""
    existing = [folder / name for name in files if (folder / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} exists; pass overwrite=True to replace it, or choose another folder")
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder} is a file, not a folder")
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    temps = {}
    try:
        for name, data in files.items():
            handle, temp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
            temps[name] = temp
            with os.fdopen(handle, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        for name, temp in temps.items():
            os.replace(temp, folder / name)
    except BaseException:
        for temp in temps.values():
            Path(temp).unlink(missing_ok=True)
        if created and not any(folder.iterdir()):
            folder.rmdir()
        raise


def save_adapters(model: nn.Module, path, overwrite: bool = False) -> Path:
    """Write the adapter weights (safetensors) and their config, base identity and checksum (JSON) into
    folder `path`. Everything is checked before anything is written (adapters present, not merged, the
    folder free unless overwrite=True); both files are written under temporary names and then renamed."""
    config = get_adapter_config(model)
    layers = adapter_layers(model)
    merged = [name for name, layer in layers.items() if layer.merged]
    if merged:
        raise RuntimeError(f"cannot save while adapters are merged into the base weights ({merged[0]}, "
                           f"{len(merged)} layers); call unmerge_adapters first, or merge_and_unload(model) "
                           "and save_pretrained to save a plain merged model")
    path = Path(path)
    existing = [p for p in (path / WEIGHTS_NAME, path / CONFIG_NAME) if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} exists; pass overwrite=True to replace it, or choose another folder")
    identity = base_model_identity(model)
    tensors = {key: tensor.detach().cpu().contiguous().clone() for key, tensor in _adapter_tensors(model).items()}
    nonfinite = _nonfinite(tensors)
    if nonfinite is not None:
        raise ValueError(f"cannot save: adapter tensor {nonfinite[0]!r} holds {nonfinite[1]} NaN or Inf values "
                         "(training diverged, or the weights were set by hand); nothing was written")
    weights = safetensors_save(tensors, metadata={"format": "pt", "hydralib_format_version": str(FORMAT_VERSION)})
    record = {
        "format_version": FORMAT_VERSION,
        "adapter_config": config.to_dict(),
        "base_model": identity,
        "tensor_shapes": {k: list(v.shape) for k, v in tensors.items()},
        "tensor_dtypes": {k: _dtype_name(v.dtype) for k, v in tensors.items()},
        "weights_file": WEIGHTS_NAME,
        "weights_sha256": _sha256(weights),
    }
    record[RECORD_CHECKSUM_KEY] = record_checksum(record)
    _write_files(path, {WEIGHTS_NAME: weights, CONFIG_NAME: json.dumps(record, indent=2).encode()}, overwrite)
    return path


def read_adapter_folder(path) -> dict:
    """Read and check a saved adapter folder without touching any model: the parsed record ("config",
    "identity", ...) and its "tensors". Refuses every malformed or altered file with an AdapterFileError."""
    path = Path(path)
    config_path, weights_path = path / CONFIG_NAME, path / WEIGHTS_NAME
    if not config_path.is_file() or not weights_path.is_file():
        raise FileNotFoundError(f"no saved adapter in {path}: expected {CONFIG_NAME} and {WEIGHTS_NAME}")
    saved = _parse_record(_read_json(config_path), config_path)
    data = weights_path.read_bytes()
    if saved["sha256"] is not None and _sha256(data) != saved["sha256"]:
        raise AdapterFileError(weights_path, f"does not match the checksum recorded in {CONFIG_NAME} (sha256 "
                                             f"{_sha256(data)[:12]}..., recorded {saved['sha256'][:12]}...): the "
                                             "weights were changed or damaged after saving, or come from another save")
    tensors = _read_safetensors(weights_path, data)
    expected = _expected_shapes(saved["config"], saved["identity"]["target_shapes"])
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise AdapterFileError(weights_path, f"does not fit the configuration in {CONFIG_NAME}: missing tensors "
                                             f"{missing[:5]}, unexpected tensors {unexpected[:5]}")
    for key, tensor in tensors.items():
        if tuple(tensor.shape) != expected[key]:
            raise AdapterFileError(weights_path, f"tensor {key!r} has shape {tuple(tensor.shape)}; the configuration "
                                                 f"in {CONFIG_NAME} needs {expected[key]}")
        if not tensor.dtype.is_floating_point:
            raise AdapterFileError(weights_path, f"tensor {key!r} has dtype {_dtype_name(tensor.dtype)}, "
                                                 "not a floating-point type")
        recorded = saved["tensor_shapes"].get(key)
        if recorded is not None and tuple(recorded) != tuple(tensor.shape):
            raise AdapterFileError(config_path, f"records shape {tuple(recorded)} for {key!r}, the weights file "
                                                f"holds {tuple(tensor.shape)}")
        if saved["tensor_dtypes"] is not None and saved["tensor_dtypes"].get(key) != _dtype_name(tensor.dtype):
            raise AdapterFileError(config_path, f"records dtype {saved['tensor_dtypes'].get(key)!r} for {key!r}, "
                                                f"the weights file holds {_dtype_name(tensor.dtype)}")
    nonfinite = _nonfinite(tensors)
    if nonfinite is not None:
        raise AdapterFileError(weights_path, f"tensor {nonfinite[0]!r} holds {nonfinite[1]} NaN or Inf values; "
                                             "adapter weights must be finite")
    saved["tensors"] = tensors
    return saved


def load_adapters(model: nn.Module, path, check_weights: bool = True) -> nn.Module:
    """Load adapters saved by save_adapters into `model` (a bare base, or one with the same adapters).

    All-or-nothing: reads and checks both files (JSON, format version, checksum, every tensor's name,
    shape and dtype), the configuration and the base model's identity before it changes the model, and
    restores the model if anything fails after. Refuses, naming what differs, a file made for another
    architecture, other target shapes, other base weights (unless check_weights=False) or another adapter
    configuration; a malformed or altered file raises AdapterFileError naming the file."""
    path = Path(path)
    saved = read_adapter_folder(path)
    saved_config, saved_identity = saved["config"], dict(saved["identity"])
    names = list(saved_identity["target_shapes"])
    layers = adapter_layers(model)
    if layers:
        diffs = _differences(saved_config.to_dict(), get_adapter_config(model).to_dict())
        if diffs:
            raise ValueError(f"adapter in {path} was saved with another configuration: {'; '.join(diffs)}")
    modules = dict(model.named_modules())
    missing_targets = [n for n in names if not isinstance(modules.get(n), (*ADAPTABLE_TYPES, AdapterLayer))]
    identity = base_model_identity(model, [n for n in names if n not in missing_targets])
    if missing_targets:
        identity["target_shapes"].update({n: None for n in missing_targets})
    if not check_weights or saved_identity["weight_fingerprint"] is None or identity["weight_fingerprint"] is None:
        saved_identity.pop("weight_fingerprint")
        identity.pop("weight_fingerprint")
    keys = ("architecture", "model_type", "target_shapes", "weight_fingerprint")
    diffs = _differences({k: saved_identity[k] for k in keys if k in saved_identity},
                         {k: identity[k] for k in keys if k in identity})
    if diffs:
        raise ValueError(f"adapter in {path} was made for another base model: {'; '.join(diffs)}")
    chosen = list(layers) if layers else find_targets(model, saved_config.targets)
    if sorted(chosen) != sorted(names):
        raise ValueError(f"adapter in {path} was made for another base model: its targets select "
                         f"{len(chosen)} modules here, the adapter has {len(names)} (here only: "
                         f"{sorted(set(chosen) - set(names))[:3]}, saved only: {sorted(set(names) - set(chosen))[:3]})")
    return _attach(model, saved_config, saved["tensors"])


# --- merging away ---------------------------------------------------------------------------------
def merge_and_unload(model: nn.Module, gate=None) -> nn.Module:
    """Fold the adapters into the base weights (under `gate`, as merge_adapters) and put each base layer
    back in its adapter's place: a plain transformers model whose save_pretrained / from_pretrained
    round-trip is exact. Returns the same model object. A model merged already is unloaded as it is.
    Base parameters stay frozen (requires_grad False), as add_adapters left them."""
    layers = adapter_layers(model)
    get_adapter_config(model)
    merged = [layer.merged for layer in layers.values()]
    if any(merged):
        if not all(merged):
            raise RuntimeError("some adapter layers are merged and some not; call unmerge_adapters first")
        if gate is not None:
            raise ValueError("the adapters are merged already (under the gate given then); call unmerge_adapters "
                             "to merge under another gate, or merge_and_unload(model) without one")
    else:
        merge_adapters(model, gate=gate)
    _unwrap(model)
    return model


# --- PEFT -----------------------------------------------------------------------------------------
def _peft_lora_factors(layer: AdapterLayer, gate: torch.Tensor | None, head: int | None):
    """(A, B) of one PEFT LoRA equal to the layer under a fixed gate, or to one of its heads alone (gate 1)."""
    r, heads = layer.config.r, layer.heads
    a, b = layer.lora_A.detach(), layer.lora_B.detach()
    if head is not None:
        a_head = a[head * r:(head + 1) * r] if layer.config.method == "split" else a
        return a_head, b[:, head * r:(head + 1) * r]
    if layer.config.method == "lora":
        return a, b
    g = gate.to(device=b.device, dtype=b.dtype)
    if layer.config.method == "split":  # rank heads*r: the A's stacked, each B scaled by its gate
        return a, b * g.repeat_interleave(r)[None, :]
    return a, (b.view(b.shape[0], heads, r) * g[None, :, None]).sum(1)  # hydra: sum_i g_i B_i, rank r


def _peft_config_bytes(model: nn.Module, config: AdapterConfig, rank: int, names: list[str], conv1d: bool) -> bytes:
    import peft  # heavy (imports accelerate and more): only exporting needs it
    from peft import LoraConfig  # as above
    hf_config = getattr(model, "config", None)
    lora = LoraConfig(r=rank, lora_alpha=config.scaling * rank, lora_dropout=config.dropout, target_modules=names,
                      fan_in_fan_out=conv1d, bias="none", task_type="CAUSAL_LM", inference_mode=True,
                      base_model_name_or_path=getattr(hf_config, "_name_or_path", None) or None)
    record = lora.to_dict()
    record = {k: sorted(v) if isinstance(v, set) else v for k, v in record.items()}
    record["peft_version"] = peft.__version__
    return json.dumps(record, indent=2, sort_keys=True).encode()


def export_peft(model: nn.Module, folder, gate=None, one_head_per_adapter: bool = False,
                overwrite: bool = False) -> Path:
    """Write the adapters as PEFT LoRA folders that `PeftModel.from_pretrained(base, folder)` loads.

    method="lora": one LoRA of rank r, as it is.
    split / hydra under a fixed gate (a head index, a vector of heads weights, or {layer: either} such as
        mean_gates gives; None only for a uniform gate): one LoRA equal to the adapter under that gate.
        Hydra (shared A) folds to rank r with B = sum_i g_i B_i; Split to rank heads*r with the A's stacked
        and each B_i scaled by g_i.
    one_head_per_adapter=True: one rank-r LoRA per head, in subfolders head_0 ... head_{N-1} of `folder`
        (load one with PeftModel.from_pretrained(base, folder / "head_0"), add others with
        peft_model.load_adapter(folder / "head_1", adapter_name="head_1")); each is its head with gate 1.
    Routers are not exported (PEFT's LoRA has none). Returns `folder`."""
    config = get_adapter_config(model)
    layers = adapter_layers(model)
    kinds = {type(layer.base) for layer in layers.values()}
    if len(kinds) > 1:
        raise ValueError(f"PEFT's fan_in_fan_out is one setting per adapter, but the adapted layers mix "
                         f"{sorted(k.__name__ for k in kinds)}; export separate adapters per layer type")
    conv1d = issubclass(next(iter(kinds)), Conv1D)
    names = list(layers)
    folder = Path(folder)
    if one_head_per_adapter:
        if gate is not None:
            raise ValueError("one_head_per_adapter exports every head with gate 1; do not pass a gate with it")
        exports = {folder / f"head_{i}": {n: _peft_lora_factors(l, None, i) for n, l in layers.items()}
                   for i in range(config.heads)}
    else:
        gates = merge_gates(model, gate)
        exports = {folder: {n: _peft_lora_factors(l, gates[n], None) for n, l in layers.items()}}
    files = {}
    for target, factors in exports.items():
        rank = next(iter(factors.values()))[0].shape[0]
        tensors = {}
        for name, (a, b) in factors.items():
            tensors[f"base_model.model.{name}.lora_A.weight"] = a.cpu().contiguous().clone()
            tensors[f"base_model.model.{name}.lora_B.weight"] = b.cpu().contiguous().clone()
        files[target] = {WEIGHTS_NAME: safetensors_save(tensors, metadata={"format": "pt"}),
                         CONFIG_NAME: _peft_config_bytes(model, config, rank, names, conv1d)}
    taken = [target / name for target in files for name in (WEIGHTS_NAME, CONFIG_NAME) if (target / name).exists()]
    if taken and not overwrite:
        raise FileExistsError(f"{taken[0]} exists; pass overwrite=True to replace it, or choose another folder")
    for target, contents in files.items():
        _write_files(target, contents, overwrite)
    return folder


# PEFT LoRA settings hydralib's LoRA cannot represent, with the values that mean "not used".
_PEFT_UNSUPPORTED = {"use_dora": (False, None), "bias": ("none", None), "lora_bias": (False, None),
                     "rank_pattern": ({}, None), "alpha_pattern": ({}, None), "modules_to_save": (None, []),
                     "layer_replication": (None,), "trainable_token_indices": (None,), "use_qalora": (False, None),
                     "target_parameters": (None, []), "alora_invocation_tokens": (None,), "use_bdlora": (None, False)}
_PEFT_KEY = re.compile(r"base_model\.model\.(.+)\.lora_([AB])\.weight")


def import_peft(model: nn.Module, folder) -> nn.Module:
    """Attach a PEFT LoRA folder (adapter_config.json + adapter_model.safetensors or .bin) to `model` as an
    equivalent method="lora" hydralib adapter (targets: the modules it adapts, by full name). All-or-nothing:
    the folder is read and checked against the model before the model changes. Refuses settings without a
    hydralib equivalent (DoRA, LoRA biases, per-module ranks, modules_to_save, ...), naming them."""
    folder = Path(folder)
    config_path = folder / CONFIG_NAME
    weights_path = next((p for p in (folder / WEIGHTS_NAME, folder / PEFT_BIN_NAME) if p.is_file()), None)
    if not config_path.is_file() or weights_path is None:
        raise FileNotFoundError(f"no PEFT adapter in {folder}: expected {CONFIG_NAME} and {WEIGHTS_NAME} "
                                f"(or {PEFT_BIN_NAME})")
    if adapter_layers(model):
        raise ValueError("this model has hydralib adapters already; import_peft attaches to a bare base model")
    record = _read_json(config_path)
    if "format_version" in record and "peft_type" not in record:
        raise AdapterFileError(config_path, "is a hydralib adapter config, not a PEFT one; use hydralib.load_adapters")
    peft_type = _field(record, "peft_type", (str,), config_path)
    if peft_type != "LORA":
        raise AdapterFileError(config_path, f"peft_type is {peft_type!r}; only LoRA adapters (\"LORA\") can be imported")
    r = _field(record, "r", (int,), config_path)
    lora_alpha = _field(record, "lora_alpha", (int, float), config_path)
    dropout = record.get("lora_dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise AdapterFileError(config_path, f"'lora_dropout' must be a number in [0, 1), got {_short(dropout)}")
    if r < 1 or not math.isfinite(lora_alpha) or lora_alpha <= 0:
        raise AdapterFileError(config_path, f"needs r >= 1 and a finite lora_alpha > 0, got r={r}, lora_alpha={lora_alpha}")
    unsupported = [f"{k}={record[k]!r}" for k, fine in _PEFT_UNSUPPORTED.items() if k in record and record[k] not in fine]
    if unsupported:
        raise AdapterFileError(config_path, f"uses {', '.join(unsupported)}, which hydralib's LoRA cannot represent")
    rslora = record.get("use_rslora", False)
    # hydralib scales by alpha / r; rsLoRA by lora_alpha / sqrt(r)
    alpha = float(lora_alpha) * math.sqrt(r) if rslora else float(lora_alpha)
    if weights_path.suffix == ".bin":
        try:
            tensors = torch.load(weights_path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise AdapterFileError(weights_path, f"is not a readable PyTorch file ({type(err).__name__}: {err})") from None
        if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
            raise AdapterFileError(weights_path, "does not hold a dict of tensors")
    else:
        tensors = _read_safetensors(weights_path, weights_path.read_bytes())
    factors: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        match = _PEFT_KEY.fullmatch(key)
        if match is None:
            raise AdapterFileError(weights_path, f"holds {key!r}, which is not a LoRA A or B of a linear layer "
                                                 "(embedding LoRA, DoRA magnitudes, saved modules are not supported)")
        factors.setdefault(match.group(1), {})[match.group(2)] = value
    if not factors:
        raise AdapterFileError(weights_path, "holds no LoRA tensors")
    modules = dict(model.named_modules())
    ours = {}
    for name in sorted(factors):
        pair = factors[name]
        if set(pair) != {"A", "B"}:
            raise AdapterFileError(weights_path, f"has lora_{''.join(sorted(set('AB') - set(pair)))} missing for {name!r}")
        module = modules.get(name)
        if not isinstance(module, ADAPTABLE_TYPES):
            found = "no such module" if module is None else type(module).__name__
            raise ValueError(f"PEFT adapter in {folder} adapts {name!r}, which this model does not have as a linear "
                             f"layer ({found}): it was made for another model")
        k, d = linear_features(module)
        a, b = pair["A"], pair["B"]
        if tuple(a.shape) != (r, k) or tuple(b.shape) != (d, r):
            raise ValueError(f"PEFT adapter in {folder} does not fit {name!r} (in {k}, out {d}, r {r}): lora_A "
                             f"{tuple(a.shape)}, lora_B {tuple(b.shape)}; it was made for another model")
        if not a.dtype.is_floating_point or not b.dtype.is_floating_point:
            raise AdapterFileError(weights_path, f"{name!r} has non-floating-point LoRA tensors")
        ours[f"{name}.lora_A"], ours[f"{name}.lora_B"] = a, b
    nonfinite = _nonfinite(ours)
    if nonfinite is not None:
        raise AdapterFileError(weights_path, f"LoRA tensor {nonfinite[0]!r} holds {nonfinite[1]} NaN or Inf values; "
                                             "adapter weights must be finite")
    names = sorted(factors)
    config = AdapterConfig(method="lora", r=r, alpha=alpha, targets=names, dropout=float(dropout))
    if sorted(find_targets(model, names)) != names:
        raise ValueError(f"the module names of the PEFT adapter in {folder} also select other modules of this model")
    return _attach(model, config, ours)
