"""HydraLoRA Lab: one adapter layer for LoRA, LoRA-Split and HydraLoRA on any transformers model.

The names below are imported on first use (PEP 562), so `python -m hydralib` checks its arguments without
importing torch or transformers first; `from hydralib import train` works as before."""
import importlib
import sys
import types

_EXPORTS = {
    "AdapterConfig": "config", "evaluate_generation": "evaluate", "evaluate_loss": "evaluate",
    "add_adapters": "inject", "adapter_layers": "inject", "count_parameters": "inject", "mean_gates": "inject",
    "merge_adapters": "inject", "routing": "inject", "unmerge_adapters": "inject",
    "AdapterFileError": "adapter_files", "export_peft": "adapter_files", "import_peft": "adapter_files",
    "load_adapters": "adapter_files", "merge_and_unload": "adapter_files", "save_adapters": "adapter_files",
    "AdapterLayer": "layers", "load_model": "bases", "EvalConfig": "evaluate",
    "RunSpec": "store", "RunStore": "store", "run_many": "store",
    "TrainConfig": "train", "train": "train",
}

__version__ = "0.1.0"
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hydralib' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(list(globals()) + __all__)


class _Package(types.ModuleType):
    """hydralib.train stays the function, as an eager `from .train import train` left it: the import system
    records a loaded submodule as an attribute of its package, and the submodule of the same name is
    loaded on first use now, often by another module (pipeline imports .train)."""

    def __setattr__(self, name, value):
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == name:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
