"""Runs remembered and run in parallel.

A run is a spec, a plain dict that says everything that determines its result:

    {"model": {"name": "tiny", "pretrain_steps": 1000},
     "data": {"kind": "synthetic", "n_components": 8, "conflict": 1.0, "n_train": 2000, "n_test": 400, "seed": 0,
              "cluster_features": "tfidf"},          # (optional) what a cluster gate clusters
     "adapter": {"method": "hydra", "r": 8, ...} or None (full fine-tuning),
     "train": {"steps": 300, "batch_size": 32, "lr": 1e-3, "seed": 0, ...},
     "eval": {"max_new_tokens": 16, "n_test": 400}}

The store keys a run by a hash of its spec and of hydralib's source, so a run two notebooks need
is trained once and re-executing a notebook reuses finished runs. An entry is used only if its
completion record exists and every file it lists still has the recorded checksum; anything else is
removed and run again.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch
from filelock import FileLock

from .config import AdapterConfig
from .models import source_fingerprint
from .train import TrainConfig, train

DONE_NAME = "done.json"
RESULTS_NAME = "results.json"
SPEC_KEYS = ("model", "data", "adapter", "train", "eval")


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """A hash of every hydralib source file (read once per process): a library change retrains what it could affect."""
    root = Path(__file__).resolve().parent
    return source_fingerprint(*(str(p.relative_to(root)) for p in sorted(root.rglob("*.py"))))


def normalise_spec(spec: dict) -> dict:
    """Fill defaults (AdapterConfig, TrainConfig) so that equal runs hash equally; refuse unknown keys."""
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise ValueError(f"unknown run spec keys {unknown}; allowed: {', '.join(SPEC_KEYS)}")
    for key in ("model", "data", "train"):
        if key not in spec:
            raise ValueError(f"run spec needs {key!r}; it has {sorted(spec)}")
    adapter = spec.get("adapter")
    return {
        "model": dict(spec["model"]),
        "data": dict(spec["data"]),
        "adapter": None if adapter is None else AdapterConfig.from_dict(dict(adapter)).to_dict(),
        "train": TrainConfig(**{**spec["train"], "progress": False}).to_dict(),
        "eval": dict(spec.get("eval") or {}),
    }


def run_key(spec: dict) -> str:
    text = json.dumps({"spec": normalise_spec(spec), "code": code_version()}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


DATA_SELECTIONS = ("only_component", "part", "parts")


def build_data(data: dict) -> dict:
    """{'train', 'test', 'components'} for a data spec; kinds: 'synthetic', 'primitives', 'real' (see
    hydralib.real: a mixture of real sets).

    Selections for per-task and control LoRAs: only_component=c keeps component c's rows (train and test);
    part=i of parts=n keeps the i-th of n random, equal parts of the training rows (an IID split)."""
    from .data.synthetic import make_corpus, make_primitive_corpus
    from .real import build_real_data
    options = {k: v for k, v in data.items() if k not in ("kind", "cluster_features", *DATA_SELECTIONS)}
    builders = {"synthetic": make_corpus, "primitives": make_primitive_corpus,
                "real": lambda **spec: build_real_data(spec)}
    if data.get("kind") not in builders:
        raise ValueError(f"unknown data kind {data.get('kind')!r}; allowed: {', '.join(builders)}")
    corpus = builders[data["kind"]](**options)
    if "only_component" in data:
        c = data["only_component"]
        if not 0 <= c < len(corpus["components"]):
            raise ValueError(f"only_component={c!r}; allowed: 0..{len(corpus['components']) - 1}")
        corpus = {**corpus, "train": [r for r in corpus["train"] if r["component"] == c],
                  "test": [r for r in corpus["test"] if r["component"] == c]}
    if "part" in data or "parts" in data:
        part, parts = data.get("part"), data.get("parts")
        if not (isinstance(parts, int) and parts >= 1 and isinstance(part, int) and 0 <= part < parts):
            raise ValueError(f"an IID split needs part in 0..parts-1 and parts >= 1, got part={part!r}, parts={parts!r}")
        order = torch.randperm(len(corpus["train"]), generator=torch.Generator().manual_seed(data.get("seed", 0)))
        corpus = {**corpus, "train": [corpus["train"][i] for i in order[part::parts].tolist()]}
    return corpus


def route_rows(data: dict, adapter: dict | None, features: str, seed: int, template: str) -> tuple[dict, dict]:
    """The data with each row's head for a task or cluster gate, and what the routing found.

    task: the true component; with fewer heads than components, component c shares head c mod heads
    (an oracle that still mixes components: which ones share a head is fixed, not chosen).
    cluster (and a learned router with router_init "clusters"): the k-means cluster (k = heads) of the row's
    prompt, fitted on the training prompts; test rows go to the nearest centroid, so no labels are used."""
    if adapter is None or (adapter["gate"] not in ("task", "cluster") and adapter["router_init"] != "clusters"):
        return data, {}
    heads = adapter["heads"]
    if adapter["gate"] == "task":
        def with_route(rows):
            return [{**r, "route": int(r.get("component", 0)) % heads} for r in rows]
        return {**data, "train": with_route(data["train"]), "test": with_route(data["test"])}, {}
    from .clustering import assign_routes
    train, test, info = assign_routes(data["train"], data["test"], k=heads, features=features, seed=seed,
                                      template=template)
    return {**data, "train": train, "test": test}, {"clusters": info}


def load_spec_model(model: dict):
    """(model, tokenizer) for a spec's model entry: {'name': ..., options}; no progress bars in runs."""
    from .bases import load_model
    options = dict(model)
    name = options.pop("name")
    if name == "tiny":
        options.setdefault("progress", False)
    return load_model(name, **options)


def execute_run(spec: dict, run_dir: Path) -> dict:
    """Build model and data from the spec, train (resuming a checkpoint in run_dir), evaluate; the results."""
    from .inject import add_adapters, count_parameters, warm_start_routers
    spec = normalise_spec(spec)
    model, tokenizer = load_spec_model(spec["model"])
    if spec["adapter"] is not None:
        # the initial adapters must not depend on what ran before in the process (e.g. a pretraining)
        add_adapters(model, AdapterConfig.from_dict(spec["adapter"]), seed=spec["train"]["seed"])
    config = TrainConfig(**spec["train"])
    data, routes = route_rows(build_data(spec["data"]), spec["adapter"], spec["data"].get("cluster_features", "tfidf"),
                              config.seed, config.template)
    if spec["adapter"] is not None and spec["adapter"]["router_init"] == "clusters":
        warm_start_routers(model, tokenizer, data["train"], config.template, config.max_length)
    result = train(model, tokenizer, data["train"], config, run_dir, run_record={"spec": spec})
    test = eval_rows(data, spec)
    scores = score_rows(result.model, tokenizer, test, spec)
    count = count_parameters(result.model)
    if spec["adapter"] is not None and spec["adapter"]["heads"] > 1:
        routes = {**routes, "routing": routing_summary(result.model, tokenizer, test, data["components"],
                                                        config.template, config.max_length)}
    return {
        "key": run_dir.name,
        "components": data["components"],
        "train_seconds": result.seconds,
        "final_train_loss": result.metrics[-1]["loss"] if result.metrics else None,
        "tokens_per_s": sum(m["tokens_per_s"] for m in result.metrics) / max(1, len(result.metrics)),
        "parameters": {"trainable": count.trainable, "adapter": count.adapter, "router": count.router,
                       "paper": count.paper, "base": count.base},
        **scores,
        **routes,
    }


def eval_rows(data: dict, spec: dict) -> list[dict]:
    """The test rows a run is scored on: the first spec["eval"]["n_test"] (all when absent)."""
    return data["test"][:spec["eval"].get("n_test", len(data["test"]))]


def score_rows(model, tokenizer, rows: list[dict], spec: dict) -> dict:
    """A model's scores on test rows, as the (normalised) spec's data kind asks: for real data
    real.evaluate_real; otherwise the loss per component and greedy exact match (with the generations)."""
    from .evaluate import evaluate_generation, evaluate_loss
    from .real import evaluate_real
    evaluation, template, max_length = spec["eval"], spec["train"]["template"], spec["train"]["max_length"]
    if spec["data"]["kind"] == "real":
        return evaluate_real(model, tokenizer, rows, evaluation, template, max_length)
    loss = evaluate_loss(model, tokenizer, rows, template, max_length)
    generation = evaluate_generation(model, tokenizer, rows, template, evaluation.get("max_new_tokens", 16),
                                     scorer=evaluation.get("scorer", "exact"))
    return {"test_loss": loss, "exact_match": generation["exact_match"],
            "exact_match_per_component": generation["per_component"], "generations": generation["generations"]}


def routing_summary(model, tokenizer, rows: list[dict], components: list[str], template: str,
                    max_length: int) -> dict:
    """What routing did on the test rows: the mean gate per component and layer, and how much the head a
    row leans on most (its gate averaged over layers) tells about its true component (mutual information)."""
    from .clustering import routing_mutual_information
    from .evaluate import gate_profile
    profile = gate_profile(model, tokenizer, rows, template, max_length)
    gates = profile["gates"]  # (rows, layers, heads)
    component = torch.tensor([int(r.get("component", 0)) for r in rows])
    usage = {components[c]: gates[component == c].mean(0).tolist() for c in component.unique().tolist()}
    chosen = gates.mean(1).argmax(-1)
    return {"layers": profile["layers"], "usage_by_component": usage,
            **routing_mutual_information(component.tolist(), chosen.tolist())}


class RunStore:
    """Finished runs on disk, keyed by run_key(spec)."""

    def __init__(self, root):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, spec: dict) -> Path:
        return self.root / run_key(spec)

    def get(self, spec: dict) -> dict | None:
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

    def metrics(self, spec: dict) -> list[dict]:
        """The training log of a finished run: one dict per logged step (loss, lr, router statistics...)."""
        path = self.path(spec) / "metrics.jsonl"
        if self.get(spec) is None or not path.exists():
            raise FileNotFoundError(f"no finished run with a training log at {self.path(spec)} (run key "
                                    f"{run_key(spec)}); train it first, e.g. with run_many([spec], store)")
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def run(self, spec: dict) -> dict:
        """Results for spec: from the store if finished and intact, else trained now (once, under a lock)."""
        folder = self.path(spec)
        with FileLock(str(folder) + ".lock"):
            cached = self.get(spec)
            if cached is not None:
                return cached
            if folder.exists() and not _resumable(folder):  # damaged, or finished once and damaged since
                shutil.rmtree(folder)
            results = execute_run(spec, folder)
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


def _prepare_models(specs: list[dict]) -> None:
    """Build each distinct base once here, with all threads, before one-thread workers would each wait for it
    (a tiny base is pretrained and cached on first use)."""
    seen = []
    for spec in specs:
        model = normalise_spec(spec)["model"]
        if model not in seen and model["name"] == "tiny":
            seen.append(model)
            load_spec_model(model)


def adapter(method: str = "lora", r: int = 8, heads: int | None = None, alpha: float | None = None,
            targets="all-linear", **options) -> dict:
    """An adapter spec at equal scale across ranks: alpha = 2r unless given (the paper fixes alpha = 32)."""
    spec = {"method": method, "r": r, "alpha": 2 * r if alpha is None else alpha, "targets": targets, **options}
    if heads is not None:
        spec["heads"] = heads
    return AdapterConfig.from_dict(spec).to_dict()  # refuse a bad setting here, with its name


def synthetic_spec(adapter_spec: dict | None, seed: int, *, n_components: int, steps: int, lr: float,
                   pretrain_steps: int, n_train: int, n_test: int, conflict: float = 1.0, batch_size: int = 32,
                   device: str = "cpu", max_new_tokens: int = 16, data_options: dict | None = None,
                   **train_options) -> dict:
    """The run spec of the notebooks' experiments: the tiny pretrained LLaMA adapted on the synthetic mixture
    (adapter_spec None = full fine-tuning); one seed drives the data, the adapter init and the batch order.
    data_options: more data keys, e.g. a selection (see build_data) or cluster_features."""
    return {"model": {"name": "tiny", "pretrain_steps": pretrain_steps},
            "data": {"kind": "synthetic", "n_components": n_components, "conflict": conflict, "n_train": n_train,
                     "n_test": n_test, "seed": seed, **(data_options or {})},
            "adapter": adapter_spec,
            "train": {"steps": steps, "batch_size": batch_size, "seed": seed, "device": device, "lr": lr,
                      **train_options},
            "eval": {"max_new_tokens": max_new_tokens}}


def method_specs(methods: dict[str, dict], seeds: list[int], spec_builder=None, **spec_options) -> dict[str, list[dict]]:
    """{name: [run spec per seed]} for methods {name: {"adapter": adapter spec or None, "lr": ..., more train
    options}}, each built by spec_builder(adapter, seed, **options): synthetic_spec unless given (real.real_spec
    for real data)."""
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


def run_named(specs: dict[str, list[dict]], store: RunStore, processes: int = 2) -> dict[str, list[dict]]:
    """{name: [results]} for {name: [specs]}, all trained together (in parallel) through the store."""
    results = iter(run_many([s for per_name in specs.values() for s in per_name], store, processes=processes))
    return {name: [next(results) for _ in per_name] for name, per_name in specs.items()}


def run_many(specs: list[dict], store: RunStore, processes: int = 2, threads_per_process: int = 1) -> list[dict]:
    """Results of every spec, in order; unfinished ones trained in `processes` parallel processes."""
    for spec in specs:
        normalise_spec(spec)  # refuse a bad spec before starting anything
    pending = [s for s in specs if store.get(s) is None]
    if processes > 1 and len(pending) > 1:
        _prepare_models(pending)
        with ProcessPoolExecutor(max_workers=processes, mp_context=get_context("spawn")) as pool:
            list(pool.map(_worker, [(str(store.root), s, threads_per_process) for s in pending]))
    return [store.run(s) for s in specs]
