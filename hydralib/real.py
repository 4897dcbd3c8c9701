"""The real-data lane (notebook 08): its run spec, the base model's scores, and the paper-scale shape check.

Loading and mixing the sets lives in hydralib.data.real, scoring in hydralib.evaluate.evaluate_real, the
lane's methods in hydralib.methods.lane_methods, its tables and plots in hydralib.report.
"""
from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from .config import AdapterConfig
from .data.corpus import build_data
from .data.lengths import length_budget, measure, truncation_table
from .efficiency import resolve_device
from .inject import add_adapters, count_parameters, routing
from .runs import RunSpec, eval_rows, evaluation_precision, load_spec_model, score_rows
from .train import TrainConfig

# LLaMA-2-7B's architecture (the public config of meta-llama/Llama-2-7b-hf), for the shape check.
LLAMA2_7B = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
             "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 4096,
             "rms_norm_eps": 1e-5}


def real_spec(adapter: AdapterConfig | None, seed: int, *, model: str, sources: list[str], n_train: int, n_test: int,
              steps: int, lr: float, eval_sources: list[str] = (), batch_size: int = 4, max_length: int = 192,
              template: str = "alpaca", device: str = "cpu", download: bool = False, model_options: dict | None = None,
              cluster_features: str = "sentence", max_new_tokens: int | dict = 128, execute_code: bool = False,
              n_val: int = 0, validation_points: int = 0, mmlu_shots: int = 0, **train_options) -> RunSpec:
    """The run spec of the real-data lane (the counterpart of runs.synthetic_spec): `model` (a built-in
    name, a transformers id or a path) adapted on a mixture of real sets. One seed drives the rows drawn,
    the adapter init and the batch order. n_test: rows per source, "all", or {source: either};
    max_new_tokens: one budget or {source: budget}; n_val validation rows per source, scored at
    validation_points evenly spaced steps; mmlu_shots > 0 adds k-shot MMLU accuracy."""
    return RunSpec(model={"name": model, **(model_options or {})},
                   data={"kind": "real", "sources": list(sources), "eval_sources": list(eval_sources),
                         "n_train": n_train, "n_test": n_test, "n_val": n_val, "seed": seed, "download": download,
                         "cluster_features": cluster_features},
                   adapter=adapter,
                   train=TrainConfig(steps=steps, batch_size=batch_size, seed=seed, device=device, lr=lr,
                                     max_length=max_length, template=template, **train_options),
                   eval={"max_new_tokens": max_new_tokens, "execute_code": execute_code,
                         "validation_points": validation_points, "mmlu_shots": mmlu_shots,
                         # scored in the precision it trains in (bf16 halves a CPU's forward pass)
                         "mixed_precision": train_options.get("mixed_precision", "auto")})


def lane_tokenizer(model: str, model_options: dict | None = None):
    """The tokenizer of the lane's model (a built-in name, a transformers id or a path)."""
    return load_spec_model({"name": model, **(model_options or {})})[1]


def lane_lengths(data: dict, tokenizer, template: str = "alpaca", quantile: float = 0.98,
                 max_length: int | None = None, max_new_tokens: int | None = None) -> tuple[dict, dict]:
    """(budget, {"train": table, "test": table}): the training length and the generation budget per source
    chosen from the training rows' lengths (their `quantile`; a number given overrides it), and what that
    budget cuts in the training rows and in the test rows (data.lengths.truncation_table)."""
    train, test = measure(data["train"], tokenizer, template), measure(data["test"], tokenizer, template)
    budget = length_budget(train, quantile)
    if max_length is not None:
        budget["max_length"] = max_length
    if max_new_tokens is not None:
        budget["max_new_tokens"] = {source: max_new_tokens for source in budget["max_new_tokens"]}
    return budget, {"train": truncation_table(train, budget), "test": truncation_table(test, budget)}


def evaluate_base(spec: RunSpec) -> dict:
    """The scores of a spec's model as it is, before any adaptation, on the test rows its runs are scored on."""
    model, tokenizer = load_spec_model(spec.model)
    model.to(resolve_device(spec.train.device))  # where training would put it: a GPU for "auto" if there is one
    with evaluation_precision(spec, model):  # in the precision the runs are scored in
        return score_rows(model, tokenizer, eval_rows(build_data(spec.data), spec), spec)


def shape_check(adapter: AdapterConfig, architecture: dict = LLAMA2_7B, batch: int = 2, length: int = 16) -> dict:
    """Build a LLaMA model of the given architecture on the meta device (no memory, no download), add the
    adapters, run one forward and backward pass; the logits' shape and the parameter counts.

    This is how the paper-scale profile (LLaMA-2-7B) is checked on a machine that cannot hold it."""
    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**architecture))
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
