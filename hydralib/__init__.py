"""HydraLoRA Lab: one adapter layer for LoRA, LoRA-Split and HydraLoRA on any transformers model."""
from .config import AdapterConfig
from .evaluate import evaluate_generation, evaluate_loss
from .inject import (add_adapters, adapter_layers, count_parameters, mean_gates, merge_adapters, routing,
                     unmerge_adapters)
from .adapter_files import (AdapterFileError, export_peft, import_peft, load_adapters, merge_and_unload,
                            save_adapters)
from .layers import AdapterLayer
from .bases import load_model
from .evaluate import EvalConfig
from .store import RunSpec, RunStore, run_many
from .train import TrainConfig, train

__version__ = "0.1.0"
__all__ = ["AdapterConfig", "AdapterFileError", "AdapterLayer", "EvalConfig", "RunSpec", "RunStore", "TrainConfig", "add_adapters",
           "adapter_layers", "count_parameters", "evaluate_generation", "evaluate_loss", "export_peft", "import_peft",
           "load_adapters", "load_model", "mean_gates", "merge_adapters", "merge_and_unload", "routing", "run_many",
           "save_adapters", "train", "unmerge_adapters"]
