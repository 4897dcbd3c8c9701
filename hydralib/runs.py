"""Runs remembered and run in parallel.

A run is a RunSpec: everything that determines its result, validated and normalised once where it is made.

    RunSpec(model={"name": "tiny", "pretrain_steps": 1000},
            data={"kind": "synthetic", "n_components": 8, "conflict": 1.0, "n_train": 2000, "n_test": 400,
                  "seed": 0, "cluster_features": "tfidf"},     # (optional) what a cluster gate clusters
            adapter=AdapterConfig(...) or None (full fine-tuning),
            train=TrainConfig(steps=300, batch_size=32, lr=1e-3, seed=0, ...),
            eval={"max_new_tokens": 16, "n_test": 400})

The store keys a run by a hash of its spec and of the source of the modules its result depends on (the
modules runs.py imports, followed through their imports: data, models, layers, training, evaluation,
clustering; not plotting, tables or claims), so a run two notebooks need is trained once, re-executing
a notebook reuses finished runs, and editing a figure retrains nothing. An entry is used only if its
completion record exists and every file it lists still has the recorded checksum; anything else is
removed and run again.
"""
from __future__ import annotations

import ast
import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import torch
from filelock import FileLock

from .bases import load_model
from .clustering import assign_routes, routing_mutual_information
from .config import AdapterConfig
from .data.corpus import build_data
from .data.lengths import fitting_rows
from .data.real import mmlu_shots
from .evaluate import evaluate_generation, evaluate_loss, evaluate_real
from .inject import add_adapters, count_parameters, warm_start_routers
from .train import CHECKPOINT_NAME, METRICS_NAME, TrainConfig, resolve_mixed_precision, train

DONE_NAME = "done.json"
RESULTS_NAME = "results.json"
SPEC_KEYS = ("model", "data", "adapter", "train", "eval")
PACKAGE_ROOT = Path(__file__).resolve().parent


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines a run's result. Made once (directly, or from a dict with from_dict),
    checked and normalised there, then carried unchanged to the store, execute_run and train."""

    model: dict
    data: dict
    adapter: AdapterConfig | None
    train: TrainConfig
    eval: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.model, dict) or not isinstance(self.model.get("name"), str):
            raise ValueError(f"a run's model must be a dict with a 'name' (str), got model={self.model!r}")
        if not isinstance(self.data, dict) or "kind" not in self.data:
            raise ValueError(f"a run's data must be a dict with a 'kind', got data={self.data!r}")
        if self.adapter is not None and not isinstance(self.adapter, AdapterConfig):
            raise TypeError(f"adapter must be an AdapterConfig or None (full fine-tuning), got {type(self.adapter).__name__}")
        if not isinstance(self.train, TrainConfig):
            raise TypeError(f"train must be a TrainConfig, got {type(self.train).__name__}")
        if not isinstance(self.eval, dict):
            raise ValueError(f"a run's eval must be a dict, got eval={self.eval!r}")
        # Runs show no progress bars (they run in worker processes); a display setting is not part of a run.
        object.__setattr__(self, "train", dataclasses.replace(self.train, progress=False))
        for name in ("model", "data", "eval"):
            object.__setattr__(self, name, json.loads(json.dumps(getattr(self, name))))  # a private copy

    @classmethod
    def from_dict(cls, spec: dict) -> RunSpec:
        """A RunSpec from {"model", "data", "adapter" (dict or None), "train" (dict), "eval"}; refuses unknown keys."""
        if isinstance(spec, RunSpec):
            return spec
        unknown = sorted(set(spec) - set(SPEC_KEYS))
        if unknown:
            raise ValueError(f"unknown run spec keys {unknown}; allowed: {', '.join(SPEC_KEYS)}")
        for key in ("model", "data", "train"):
            if key not in spec:
                raise ValueError(f"run spec needs {key!r}; it has {sorted(spec)}")
        adapter = spec.get("adapter")
        if isinstance(adapter, dict):
            adapter = AdapterConfig.from_dict(adapter)
        train_config = spec["train"] if isinstance(spec["train"], TrainConfig) else TrainConfig(**spec["train"])
        return cls(spec["model"], spec["data"], adapter, train_config, spec.get("eval") or {})

    def to_dict(self) -> dict:
        return {"model": self.model, "data": self.data, "adapter": None if self.adapter is None else self.adapter.to_dict(),
                "train": self.train.to_dict(), "eval": self.eval}

    @functools.cached_property
    def key(self) -> str:
        """The store's key: a hash of the spec and of the code its result depends on (computed once: the store
        asks for it on every lookup)."""
        text = json.dumps({"spec": self.to_dict(), "code": code_version()}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:20]


def as_spec(spec) -> RunSpec:
    return spec if isinstance(spec, RunSpec) else RunSpec.from_dict(spec)


def run_key(spec) -> str:
    return as_spec(spec).key


def dependency_files(module: Path = Path(__file__)) -> list[Path]:
    """The hydralib source files `module` imports, followed through their own imports (itself included)."""
    seen, todo = set(), [module.resolve()]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        package = path.parent
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                base = package
                for _ in range(node.level - 1):
                    base = base.parent
                parts = node.module.split(".") if node.module else []
                target = base.joinpath(*parts)
                candidates = [target.with_suffix(".py"), target / "__init__.py"]
                if not node.module:  # from . import x, y
                    candidates = [base / f"{a.name}.py" for a in node.names] + [base / a.name / "__init__.py" for a in node.names]
                elif (target / "__init__.py").exists():  # from .data import synthetic: the submodules too
                    candidates += [target / f"{a.name}.py" for a in node.names]
                todo += [c.resolve() for c in candidates if c.exists()]
    return sorted(seen)


def code_fingerprint(module: Path = Path(__file__)) -> str:
    """A hash of the source of `module` and of every hydralib module it depends on."""
    root = module.resolve().parent
    digest = hashlib.sha256()
    for path in dependency_files(module):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The fingerprint of the code a run's result depends on (read once per process)."""
    return code_fingerprint()


def route_rows(data: dict, adapter: AdapterConfig | None, features: str, seed: int, template: str) -> tuple[dict, dict]:
    """The data with each row's head ("route") for a task or cluster gate, and what the routing found.

    task: the true component; with fewer heads than components, component c shares head c mod heads
    (an oracle that still mixes components: which ones share a head is fixed, not chosen).
    cluster (and a learned router with router_init "clusters"): the k-means cluster (k = heads) of the row's
    prompt, fitted on the training prompts; test rows go to the nearest centroid, so no labels are used."""
    if adapter is None or (adapter.gate not in ("task", "cluster") and adapter.router_init != "clusters"):
        return data, {}
    held_out = data["test"] + data.get("validation", [])  # validation rows are routed as test rows are
    if adapter.gate == "task":
        def with_route(rows):
            return [{**r, "route": int(r.get("component", 0)) % adapter.heads} for r in rows]
        train_rows, routed = with_route(data["train"]), with_route(held_out)
        info = {}
    else:
        train_rows, routed, clusters = assign_routes(data["train"], held_out, k=adapter.heads, features=features,
                                                     seed=seed, template=template)
        info = {"clusters": clusters}
    n_test = len(data["test"])
    return {**data, "train": train_rows, "test": routed[:n_test], "validation": routed[n_test:]}, info


def load_spec_model(model: dict):
    """(model, tokenizer) for a spec's model entry: {'name': ..., options}; no progress bars in runs."""
    options = dict(model)
    name = options.pop("name")
    if name == "tiny":
        options.setdefault("progress", False)
    return load_model(name, **options)


def execute_run(spec: RunSpec, run_dir: Path) -> dict:
    """Build model and data from the spec, train (resuming a checkpoint in run_dir), evaluate; the results."""
    model, tokenizer = load_spec_model(spec.model)
    if spec.train.device == "cpu" or not torch.cuda.is_available():
        # On a CPU, SDPA's backward costs about 10x its forward at these lengths: eager attention trains the
        # tiny model 1.2-1.8x faster and SmolLM2 1.05-1.13x (benchmarks/train_throughput.py). The same
        # function (equal to 1e-5 in fp32), but in bf16 the two round differently (docs/operating_point.md).
        model.set_attn_implementation("eager")
    if spec.adapter is not None:
        # the initial adapters must not depend on what ran before in the process (e.g. a pretraining)
        add_adapters(model, spec.adapter, seed=spec.train.seed)
    config = spec.train
    data, routes = route_rows(build_data(spec.data), spec.adapter, spec.data.get("cluster_features", "tfidf"),
                              config.seed, config.template)
    dropped = {}
    if spec.data["kind"] == "real":  # a row longer than max_length is left out, not cut into another task
        data["train"], dropped = fitting_rows(data["train"], tokenizer, config.template, config.max_length)
    if spec.adapter is not None and spec.adapter.router_init == "clusters":
        warm_start_routers(model, tokenizer, data["train"], config.template, config.max_length)
    result, validation = train_with_validation(model, tokenizer, data, spec, run_dir)
    test = eval_rows(data, spec)
    routed = spec.adapter is not None and spec.adapter.heads > 1
    with evaluation_precision(spec, result.model):
        scores = score_rows(result.model, tokenizer, test, spec, gates=routed)
    if routed:
        routes = {**routes, "routing": routing_summary(scores.pop("gates"), test, data["components"])}
    count = count_parameters(result.model)
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


def evaluation_precision(spec: RunSpec, model):
    """Autocast for scoring where spec.eval["mixed_precision"] asks for it ("bf16", "fp16", or "auto" as in
    TrainConfig): the real-data lane scores in the precision it trains in, which halves a forward pass on a CPU
    with bf16 units. Otherwise (the synthetic runs) a no-op: full precision."""
    setting = resolve_mixed_precision(spec.eval.get("mixed_precision", "no"), spec.train.device)
    if setting == "no":
        return contextlib.nullcontext()
    device = next(model.parameters()).device
    return torch.autocast(device.type, dtype=torch.bfloat16 if setting == "bf16" else torch.float16)


def validation_steps(steps: int, points: int) -> list[int]:
    """The steps after which validation loss is measured: `points` evenly spaced, the last step included."""
    return sorted({max(1, round(steps * i / points)) for i in range(1, points + 1)})


def train_with_validation(model, tokenizer, data: dict, spec: RunSpec, run_dir: Path):
    """Train as the spec says; with spec.eval["validation_points"] = k > 0 and validation rows, stop at k evenly
    spaced steps (a checkpoint, then resuming, as an interruption would) and measure the loss on the validation
    rows per component, before training too. Returns (TrainResult, [{"step", "loss", "per_component"}])."""
    config, points = spec.train, spec.eval.get("validation_points", 0)
    rows = data.get("validation", [])
    if not points or not rows:
        return train(model, tokenizer, data["train"], config, run_dir, run_record={"spec": spec.to_dict()}), []

    def measure(step: int, model) -> dict:
        with evaluation_precision(spec, model):
            loss = evaluate_loss(model, tokenizer, rows, config.template, config.max_length,
                                 batch_size=spec.eval.get("batch_size", 8))
        return {"step": step, "loss": loss["loss"],
                "per_component": {name: v["loss"] for name, v in loss["per_component"].items()}}

    # the points an interrupted attempt passed cannot be measured again: such a run starts over
    for name in (CHECKPOINT_NAME, METRICS_NAME):
        (run_dir / name).unlink(missing_ok=True)
    # a resume checks that it starts from the same weights as the run did, so each segment starts from them
    # (the checkpoint then restores the trained state)
    initial = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    curve, seconds = [measure(0, model)], 0.0
    for stop in validation_steps(config.steps, points):
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in initial:
                    p.copy_(initial[name])
        result = train(model, tokenizer, data["train"], config, run_dir, run_record={"spec": spec.to_dict()},
                       stop_at=stop)
        seconds += result.seconds
        curve.append(measure(stop, result.model))
        model = result.model
    return dataclasses.replace(result, seconds=seconds), curve


def eval_rows(data: dict, spec: RunSpec) -> list[dict]:
    """The test rows a run is scored on: the first spec.eval["n_test"] (all when absent)."""
    return data["test"][:spec.eval.get("n_test", len(data["test"]))]


def score_rows(model, tokenizer, rows: list[dict], spec: RunSpec, gates: bool = False) -> dict:
    """A model's scores on test rows, as the spec's data kind asks: for real data evaluate.evaluate_real;
    otherwise the loss per component, teacher-forced token accuracy and greedy exact match (with the generations).
    gates: also "gates", each row's routing (evaluate.gate_profile's), recorded in the loss pass."""
    evaluation, template, max_length = spec.eval, spec.train.template, spec.train.max_length
    if spec.data["kind"] == "real":
        shots = mmlu_shots(spec.data.get("download", False)) if evaluation.get("mmlu_shots") else None
        return evaluate_real(model, tokenizer, rows, evaluation, template, max_length, shots, gates=gates)
    loss = evaluate_loss(model, tokenizer, rows, template, max_length, gates=gates)
    profile = loss.pop("gates", None)
    generation = evaluate_generation(model, tokenizer, rows, template, evaluation.get("max_new_tokens", 16),
                                     scorer=evaluation.get("scorer", "exact"))
    return {"test_loss": loss, "exact_match": generation["exact_match"], "token_accuracy": loss["token_accuracy"],
            "exact_match_per_component": generation["per_component"], "generations": generation["generations"],
            **({"gates": profile} if gates else {})}


def routing_summary(profile: dict, rows: list[dict], components: list[str]) -> dict:
    """What routing did on the test rows, from their gate profile (evaluate.gate_profile's {"layers", "gates"}):
    the mean gate per component and layer, and how much the head a row leans on most (its gate averaged over
    layers) tells about its true component (mutual information)."""
    gates = profile["gates"]  # (rows, layers, heads)
    component = torch.tensor([int(r.get("component", 0)) for r in rows])
    usage = {components[c]: gates[component == c].mean(0).tolist() for c in component.unique().tolist()}
    chosen = gates.mean(1).argmax(-1)
    return {"layers": profile["layers"], "usage_by_component": usage,
            **routing_mutual_information(component.tolist(), chosen.tolist())}


class RunStore:
    """Finished runs on disk, keyed by RunSpec.key; every method takes a RunSpec (or its dict form)."""

    def __init__(self, root):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, spec: RunSpec | dict) -> Path:
        return self.root / as_spec(spec).key

    def get(self, spec: RunSpec | dict) -> dict | None:
        """The results of a finished, intact run, or None."""
        folder = self.path(spec)
        done = folder / DONE_NAME
        if not done.exists():
            return None
        try:
            record = json.loads(done.read_text())
            if any(_sha256(folder / name) != digest for name, digest in record["files"].items()):
                return None
            return json.loads((folder / RESULTS_NAME).read_text())
        except (OSError, ValueError, KeyError):
            return None

    def metrics(self, spec: RunSpec | dict) -> list[dict]:
        """The training log of a finished run: one dict per logged step (loss, lr, router statistics...)."""
        path = self.path(spec) / "metrics.jsonl"
        if self.get(spec) is None or not path.exists():
            raise FileNotFoundError(f"no finished run with a training log at {self.path(spec)} (run key "
                                    f"{as_spec(spec).key}); train it first, e.g. with run_many([spec], store)")
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def run(self, spec: RunSpec | dict) -> dict:
        """Results for spec: from the store if finished and intact, else trained now (once, under a lock)."""
        folder = self.path(spec)
        with FileLock(str(folder) + ".lock"):
            cached = self.get(spec)
            if cached is not None:
                return cached
            if folder.exists() and not _resumable(folder):  # damaged, or finished once and damaged since
                shutil.rmtree(folder)
            results = execute_run(as_spec(spec), folder)
            self._finish(folder, results)
            return results

    def _finish(self, folder: Path, results: dict) -> None:
        (folder / RESULTS_NAME).write_text(json.dumps(results, indent=2))
        (folder / "checkpoint.pt").unlink(missing_ok=True)  # finished runs keep weights, not optimizer state
        files = [p for p in folder.rglob("*") if p.is_file() and p.name != DONE_NAME]
        record = {"files": {str(p.relative_to(folder)): _sha256(p) for p in files}}
        tmp = folder / (DONE_NAME + ".tmp")
        tmp.write_text(json.dumps(record, indent=2))
        os.replace(tmp, folder / DONE_NAME)


def _resumable(folder: Path) -> bool:
    """A partial run whose checkpoint loads whole can continue; anything else starts over."""
    if (folder / DONE_NAME).exists() or not (folder / "checkpoint.pt").exists():
        return False
    try:
        torch.load(folder / "checkpoint.pt", weights_only=False)
        return True
    except Exception:
        return False


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _worker(args) -> dict:
    root, spec, threads = args
    torch.set_num_threads(threads)
    return RunStore(root).run(spec)


def _prepare_models(specs: list[RunSpec]) -> None:
    """Build each distinct base once here, with all threads, before one-thread workers would each wait for it
    (a tiny base is pretrained and cached on first use)."""
    seen = []
    for spec in specs:
        if spec.model not in seen and spec.model["name"] == "tiny":
            seen.append(spec.model)
            load_spec_model(spec.model)


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
                   eval={"max_new_tokens": max_new_tokens})


def method_specs(methods: dict[str, dict], seeds: list[int], spec_builder=None, **spec_options) -> dict[str, list[RunSpec]]:
    """{name: [run spec per seed]} for methods {name: {"adapter": AdapterConfig or None, "lr": ..., more train
    options}} (see methods.with_lr), each built by spec_builder(adapter, seed, **options): synthetic_spec
    unless given (real.real_spec for real data)."""
    builder = spec_builder or synthetic_spec
    specs = {}
    for name, method in methods.items():
        options = {**spec_options, **{k: v for k, v in method.items() if k != "adapter"}}
        specs[name] = [builder(method["adapter"], seed, **options) for seed in seeds]
    return specs


def run_methods(methods: dict[str, dict], seeds: list[int], store: RunStore, processes: int = 2,
                spec_builder=None, **spec_options) -> dict[str, list[dict]]:
    """{name: [results per seed]} for the runs of method_specs(methods, seeds, spec_builder, **spec_options),
    trained through the store."""
    return run_named(method_specs(methods, seeds, spec_builder, **spec_options), store, processes)


def run_named(specs: dict[str, list[RunSpec]], store: RunStore, processes: int = 2) -> dict[str, list[dict]]:
    """{name: [results]} for {name: [specs]}, all trained together (in parallel) through the store."""
    results = iter(run_many([s for per_name in specs.values() for s in per_name], store, processes=processes))
    return {name: [next(results) for _ in per_name] for name, per_name in specs.items()}


def run_many(specs: list, store: RunStore, processes: int = 2, threads_per_process: int = 1) -> list[dict]:
    """Results of every spec, in order; unfinished ones trained in `processes` parallel processes. Prints
    one progress line per finished run ("[runs] run 14/40, 9 from the store"), which the suite shows."""
    specs = [as_spec(s) for s in specs]  # refuse a bad spec before starting anything
    unique = list({s.key: s for s in specs}.values())
    pending = [s for s in unique if store.get(s) is None]
    cached = len(unique) - len(pending)
    if pending:
        print(f"[runs] {len(unique)} runs: {cached} from the store, {len(pending)} to train", flush=True)
    started = time.perf_counter()

    def report(done: int) -> None:
        print(f"[runs] run {cached + done}/{len(unique)}, {cached} from the store "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
    if processes > 1 and len(pending) > 1:
        _prepare_models(pending)
        with ProcessPoolExecutor(max_workers=processes, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_worker, (str(store.root), s, threads_per_process)) for s in pending]
            for done, future in enumerate(as_completed(futures), 1):
                future.result()
                report(done)
    else:
        for done, spec in enumerate(pending, 1):
            store.run(spec)
            report(done)
    return [store.run(s) for s in specs]
