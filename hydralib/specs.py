"""The spec builders: the runs the notebooks name, as RunSpecs (synthetic, real data, one per method and seed).

    specs = method_specs(with_lr(lora(8, 32), {8: 5e-3, 32: 3e-3}), seeds=[0, 1, 2], n_components=8, ...)
    results = run_methods(methods, seeds, store, ...)        # {label: [result per seed]}
"""
from __future__ import annotations

from .config import AdapterConfig
from .evaluate import EvalConfig
from .store import RunSpec, RunStore, run_named
from .train import TrainConfig


def synthetic_spec(adapter: AdapterConfig | None, seed: int, *, n_components: int, steps: int, lr: float,
                   pretrain_steps: int, n_train: int, n_test: int, conflict: float = 1.0, batch_size: int = 32,
                   device: str = "cpu", max_new_tokens: int = 16, data_options: dict | None = None,
                   **train_options) -> RunSpec:
    """The run spec of the notebooks' experiments: the tiny pretrained LLaMA adapted on the synthetic mixture
    (adapter None = full fine-tuning); one seed drives the data, the adapter init and the batch order.
    data_options: more data keys, e.g. a selection (see data.corpus.build_data) or cluster_features."""
    return RunSpec(model={"name": "tiny", "pretrain_steps": pretrain_steps},
                   data={"kind": "synthetic", "n_components": n_components, "conflict": conflict, "n_train": n_train,
                         "n_test": n_test, "seed": seed, **(data_options or {})},
                   adapter=adapter,
                   train=TrainConfig(steps=steps, batch_size=batch_size, seed=seed, device=device, lr=lr,
                                     **train_options),
                   eval=EvalConfig(max_new_tokens=max_new_tokens))


def real_spec(adapter: AdapterConfig | None, seed: int, *, model: str, sources: list[str], n_train: int, n_test: int,
              steps: int, lr: float, eval_sources: list[str] = (), batch_size: int = 4, max_length: int = 192,
              template: str = "alpaca", device: str = "cpu", download: bool = False, model_options: dict | None = None,
              cluster_features: str = "sentence", max_new_tokens: int | dict = 128, execute_code: bool = False,
              generation: bool = True, n_val: int = 0, validation_points: int = 0, mmlu_shots: int = 0, **train_options) -> RunSpec:
    """The run spec of the real-data lane: `model` (a built-in name, a transformers id or a path) adapted on a
    mixture of real sets. One seed drives the rows drawn, the adapter init and the batch order. n_test: rows
    per source, "all", or {source: either}; max_new_tokens: one budget or {source: budget}; n_val validation
    rows per source, scored at validation_points evenly spaced steps; mmlu_shots > 0 adds k-shot MMLU accuracy;
    generation False scores without generating (see EvalConfig)."""
    return RunSpec(model={"name": model, **(model_options or {})},
                   data={"kind": "real", "sources": list(sources), "eval_sources": list(eval_sources),
                         "n_train": n_train, "n_test": n_test, "n_val": n_val, "seed": seed, "download": download,
                         "cluster_features": cluster_features},
                   adapter=adapter,
                   train=TrainConfig(steps=steps, batch_size=batch_size, seed=seed, device=device, lr=lr,
                                     max_length=max_length, template=template, **train_options),
                   eval=EvalConfig(max_new_tokens=max_new_tokens, execute_code=execute_code,
                                   generation=generation, validation_points=validation_points, mmlu_shots=mmlu_shots,
                                   # scored in the precision it trains in (bf16 halves a CPU's forward pass)
                                   mixed_precision=train_options.get("mixed_precision", "auto")))


def method_specs(methods: dict[str, dict], seeds: list[int], spec_builder=None, **spec_options) -> dict[str, list[RunSpec]]:
    """{name: [run spec per seed]} for methods {name: {"adapter": AdapterConfig or None, "lr": ..., more train
    options}} (see methods.with_lr), each built by spec_builder(adapter, seed, **options): synthetic_spec
    unless given (real_spec for real data)."""
    builder = spec_builder or synthetic_spec
    specs = {}
    for name, method in methods.items():
        options = {**spec_options, **{k: v for k, v in method.items() if k != "adapter"}}
        if "data_options" in spec_options and "data_options" in method:  # a method's keys add to the common ones
            options["data_options"] = {**spec_options["data_options"], **method["data_options"]}
        specs[name] = [builder(method["adapter"], seed, **options) for seed in seeds]
    return specs


def run_methods(methods: dict[str, dict], seeds: list[int], store: RunStore, processes: int | str = 2,
                spec_builder=None, executor: str = "process", address: str | None = None,
                **spec_options) -> dict[str, list[dict]]:
    """{name: [results per seed]} for the runs of method_specs(methods, seeds, spec_builder, **spec_options),
    trained through the store (executor, address: see store.run_many)."""
    return run_named(method_specs(methods, seeds, spec_builder, **spec_options), store, processes, executor, address)
