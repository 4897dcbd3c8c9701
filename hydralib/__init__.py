"""HydraLoRA Lab: one adapter layer for LoRA, LoRA-Split and HydraLoRA on any transformers model."""
from .config import AdapterConfig
from .inject import (add_adapters, adapter_layers, count_parameters, load_adapters, merge_adapters, routing,
                     save_adapters, unmerge_adapters)
from .layers import AdapterLayer
from .models import load_model

__version__ = "0.1.0"
__all__ = ["AdapterConfig", "AdapterLayer", "add_adapters", "adapter_layers", "count_parameters",
           "load_adapters", "load_model", "merge_adapters", "routing", "save_adapters", "unmerge_adapters"]
