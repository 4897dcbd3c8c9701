"""The pipeline: a run spec in, its result out (build the model and the data, train, evaluate, score).

This module and what it imports are the only code a run's result depends on, so they are the only
code the run store's key hashes (hydralib.store): editing a plot, a table, a claim, the store or the
spec builders retrains nothing.
"""
from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import torch

from .bases import load_spec_model
from .clustering import route_rows, routing_summary
from .data.corpus import build_data
from .data.lengths import fitting_rows
from .data.real import mmlu_shots
from .evaluate import evaluate_generation, evaluate_loss, evaluate_real
from .inject import add_adapters, count_parameters, warm_start_routers
from .seed_groups import train_seed_group
from .train import CHECKPOINT_NAME, METRICS_NAME, resolve_device, resolve_mixed_precision, train


def execute_run(spec, run_dir: Path) -> dict:
    """Build model and data from the spec (a store.RunSpec), train (resuming a checkpoint in run_dir),
    evaluate; the results."""
    model, tokenizer, data, routes, dropped = prepare_run(spec)
    result, validation = train_with_validation(model, tokenizer, data, spec, run_dir)
    return run_results(spec, run_dir, tokenizer, data, routes, dropped, result, validation)


def execute_seed_group(specs: list, run_dirs: list[Path]) -> list[dict]:
    """The results of specs that differ only in their seeds (store.seed_group_refusal allows each), each built
    as execute_run builds it (its own data and initialisation), trained together as one stacked model
    (seed_groups.train_seed_group, each seed writing its run_dir as train does), and scored as execute_run
    scores it; one result per spec, in order."""
    prepared = [prepare_run(spec) for spec in specs]
    trained = train_seed_group([p[0] for p in prepared], prepared[0][1], [p[2]["train"] for p in prepared],
                               [spec.train for spec in specs], run_dirs,
                               run_records=[{"spec": spec.to_dict()} for spec in specs])
    return [run_results(spec, run_dir, tokenizer, data, routes, dropped, result, [])
            for spec, run_dir, (_, tokenizer, data, routes, dropped), result
            in zip(specs, run_dirs, prepared, trained)]


def prepare_run(spec) -> tuple:
    """(model, tokenizer, data, routes, dropped): the spec's model with its adapters, its data with each row's
    route (route_rows), what the routing found, and the real-data rows left out for their length."""
    model, tokenizer = prepare_model(spec)
    config = spec.train
    data, routes = route_rows(build_data(spec.data), spec.adapter, spec.data.get("cluster_features", "tfidf"),
                              config.seed, config.template, spec.data.get("cluster_text", "prompt"))
    dropped = {}
    if spec.data["kind"] == "real":  # a row longer than max_length is left out, not cut into another task
        data["train"], dropped = fitting_rows(data["train"], tokenizer, config.template, config.max_length)
    if spec.adapter is not None and spec.adapter.router_init == "clusters":
        warm_start_routers(model, tokenizer, data["train"], config.template, config.max_length)
    return model, tokenizer, data, routes, dropped


def run_results(spec, run_dir: Path, tokenizer, data: dict, routes: dict, dropped: dict, result,
                validation: list[dict]) -> dict:
    """A trained run's results: its model scored on the test rows, with what training and routing recorded."""
    count = count_parameters(result.model)
    test = eval_rows(data, spec)
    routed = spec.adapter is not None and spec.adapter.heads > 1
    with evaluation_precision(spec, result.model):
        scores = score_rows(result.model, tokenizer, test, spec, gates=routed)
    if routed:
        routes = {**routes, "routing": routing_summary(scores.pop("gates"), test, data["components"])}
    return {
        "key": run_dir.name,
        "components": data["components"],
        "train_seconds": result.seconds,
        "final_train_loss": result.metrics[-1]["loss"] if result.metrics else None,
        "tokens_per_s": sum(m["tokens_per_s"] for m in result.metrics) / max(1, len(result.metrics)),
        "attention": result.model.config._attn_implementation,
        "parameters": {"trainable": count.trainable, "adapter": count.adapter, "router": count.router,
                       "paper": count.paper, "base": count.base},
        **({"dropped_train_rows": dropped, "train_rows": len(data["train"])} if spec.data["kind"] == "real" else {}),
        **({"validation": validation} if validation else {}),
        **scores,
        **routes,
    }


def prepare_model(spec):
    """(model, tokenizer): the spec's base, with eager attention on a CPU and the spec's adapters added."""
    model, tokenizer = load_spec_model(spec.model)
    if spec.train.device == "cpu" or not torch.cuda.is_available():
        # On a CPU, SDPA's backward costs about 10x its forward at these lengths: eager attention trains the
        # tiny model 1.2-1.8x faster and SmolLM2 1.05-1.13x (benchmarks/train_throughput.py). The same
        # function (equal to 1e-5 in fp32), but in bf16 the two round differently (docs/operating_point.md).
        model.set_attn_implementation("eager")
    if spec.adapter is not None:
        # the initial adapters must not depend on what ran before in the process (e.g. a pretraining)
        add_adapters(model, spec.adapter, seed=spec.train.seed)
    return model, tokenizer


def evaluation_precision(spec, model):
    """Autocast for scoring where spec.eval.mixed_precision asks for it ("bf16", "fp16", or "auto" as in
    TrainConfig): the real-data lane scores in the precision it trains in, which halves a forward pass on a CPU
    with bf16 units. Otherwise (the synthetic runs) a no-op: full precision."""
    setting = resolve_mixed_precision(spec.eval.mixed_precision, spec.train.device)
    if setting == "no":
        return contextlib.nullcontext()
    device = next(model.parameters()).device
    return torch.autocast(device.type, dtype=torch.bfloat16 if setting == "bf16" else torch.float16)


def validation_steps(steps: int, points: int) -> list[int]:
    """The steps after which validation loss is measured: `points` evenly spaced, the last step included."""
    return sorted({max(1, round(steps * i / points)) for i in range(1, points + 1)})


def train_with_validation(model, tokenizer, data: dict, spec, run_dir: Path):
    """Train as the spec says; with spec.eval.validation_points = k > 0 and validation rows, stop at k evenly
    spaced steps (a checkpoint, then resuming, as an interruption would) and measure the loss on the validation
    rows per component, before training too. Returns (TrainResult, [{"step", "loss", "per_component"}])."""
    config, rows = spec.train, data.get("validation", [])
    points = spec.eval.validation_points if rows else 0
    stops = validation_steps(config.steps, points) if points else [config.steps]

    def measure(step: int, model) -> dict:
        with evaluation_precision(spec, model):
            loss = evaluate_loss(model, tokenizer, rows, config.template, config.max_length,
                                 batch_size=spec.eval.batch_size)
        return {"step": step, "loss": loss["loss"],
                "per_component": {name: v["loss"] for name, v in loss["per_component"].items()}}

    if points:  # the points an interrupted attempt passed cannot be measured again: such a run starts over
        for name in (CHECKPOINT_NAME, METRICS_NAME):
            (run_dir / name).unlink(missing_ok=True)
    # a resume checks that it starts from the same weights as the run did, so each segment starts from them
    # (the checkpoint then restores the trained state)
    initial = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad} if points else {}
    curve, seconds = [measure(0, model)] if points else [], 0.0
    for stop in stops:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in initial:
                    p.copy_(initial[name])
        result = train(model, tokenizer, data["train"], config, run_dir, run_record={"spec": spec.to_dict()},
                       stop_at=stop)
        seconds += result.seconds
        model = result.model
        if points:
            curve.append(measure(stop, model))
    return dataclasses.replace(result, seconds=seconds), curve


def eval_rows(data: dict, spec) -> list[dict]:
    """The test rows a run is scored on: the first spec.eval.n_test (all when None)."""
    return data["test"][:spec.eval.n_test]


def score_rows(model, tokenizer, rows: list[dict], spec, gates: bool = False) -> dict:
    """A model's scores on test rows, as the spec's data kind asks: for real data evaluate.evaluate_real;
    otherwise the loss per component, teacher-forced token accuracy and greedy exact match (with the generations).
    gates: also "gates", each row's routing (evaluate.gate_profile's), recorded in the loss pass."""
    evaluation, template, max_length = spec.eval, spec.train.template, spec.train.max_length
    if spec.data["kind"] == "real":
        shots = mmlu_shots(spec.data.get("download", False)) if evaluation.mmlu_shots else None
        return evaluate_real(model, tokenizer, rows, evaluation, template, max_length, shots, gates=gates)
    loss = evaluate_loss(model, tokenizer, rows, template, max_length, gates=gates)
    profile = loss.pop("gates", None)
    generation = evaluate_generation(model, tokenizer, rows, template, evaluation.max_new_tokens,
                                     scorer=evaluation.scorer)
    return {"test_loss": loss, "exact_match": generation["exact_match"], "token_accuracy": loss["token_accuracy"],
            "exact_match_per_component": generation["per_component"], "generations": generation["generations"],
            **({"gates": profile} if gates else {})}


def evaluate_base(spec) -> dict:
    """The scores of a spec's model as it is, before any adaptation, on the test rows its runs are scored on."""
    model, tokenizer = load_spec_model(spec.model)
    model.to(resolve_device(spec.train.device))  # where training would put it: a GPU for "auto" if there is one
    with evaluation_precision(spec, model):  # in the precision the runs are scored in
        return score_rows(model, tokenizer, eval_rows(build_data(spec.data), spec), spec)
