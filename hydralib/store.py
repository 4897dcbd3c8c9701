"""Runs remembered and run in parallel: the run spec, its key, the run store, and running many specs.

A run is a RunSpec: everything that determines its result, validated and normalised once where it is made.

    RunSpec(model={"name": "tiny", "pretrain_steps": 1000},
            data={"kind": "synthetic", "n_components": 8, "conflict": 1.0, "n_train": 2000, "n_test": 400,
                  "seed": 0, "cluster_features": "tfidf"},     # checked: an unknown key is refused
            adapter=AdapterConfig(...) or None (full fine-tuning),
            train=TrainConfig(steps=300, batch_size=32, lr=1e-3, seed=0, ...),
            eval=EvalConfig(max_new_tokens=16, n_test=400))

The store keys a run by a hash of its spec and of the code its result depends on: hydralib.pipeline and
the modules it imports, followed through their imports, without docstrings or comments (hydralib.code_key).
A run two notebooks need is trained once, re-executing a notebook reuses finished runs, and editing a
figure, a claim, this module or a docstring retrains nothing. An entry is used only if its completion
record exists and every file it lists still has the recorded checksum; anything else is removed and run
again.

With RunStore(root, seed_groups=True), run_many trains the pending runs that differ only in their seeds as one
stacked model (hydralib.seed_groups) and stores each seed as its own run, under the key, in the folder and with
the files its separate run has (its train_seconds is its share of the group's, its tokens_per_s the group's);
seed_group_refusal says which runs train alone and why.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock, Timeout

from . import pipeline
from .bases import load_spec_model
from .code_key import code_fingerprint, dependency_files
from .config import AdapterConfig
from .data.corpus import check_data_spec
from .evaluate import EvalConfig
from .executors import run_parallel, visible_devices, worker_count
from .seed_groups import group_refusal
from .train import CHECKPOINT_NAME, TrainConfig, checkpoint_loads

DONE_NAME = "done.json"
RESULTS_NAME = "results.json"
SPEC_KEYS = ("model", "data", "adapter", "train", "eval")


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines a run's result. Made once (directly, or from a dict with from_dict),
    checked and normalised there, then carried unchanged to the store, the pipeline and train."""

    model: dict
    data: dict
    adapter: AdapterConfig | None
    train: TrainConfig
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self):
        if not isinstance(self.model, dict) or not isinstance(self.model.get("name"), str):
            raise ValueError(f"a run's model must be a dict with a 'name' (str), got model={self.model!r}")
        check_data_spec(self.data)
        if self.adapter is not None and not isinstance(self.adapter, AdapterConfig):
            raise TypeError(f"adapter must be an AdapterConfig or None (full fine-tuning), got {type(self.adapter).__name__}")
        if not isinstance(self.train, TrainConfig):
            raise TypeError(f"train must be a TrainConfig, got {type(self.train).__name__}")
        if isinstance(self.eval, dict):
            object.__setattr__(self, "eval", EvalConfig.from_dict(self.eval))
        if not isinstance(self.eval, EvalConfig):
            raise TypeError(f"eval must be an EvalConfig (or its dict form), got {type(self.eval).__name__}")
        # Runs show no progress bars (they run in worker processes); a display setting is not part of a run.
        object.__setattr__(self, "train", dataclasses.replace(self.train, progress=False))
        for name in ("model", "data"):
            object.__setattr__(self, name, json.loads(json.dumps(getattr(self, name))))  # a private copy

    @classmethod
    def from_dict(cls, spec: dict) -> RunSpec:
        """A RunSpec from {"model", "data", "adapter" (dict or None), "train" (dict), "eval" (dict)}; refuses
        unknown keys."""
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
                "train": self.train.to_dict(), "eval": self.eval.to_dict()}

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


def result_code_files() -> list[Path]:
    """The source files a run's result depends on: the pipeline and what it imports, followed through."""
    return dependency_files(Path(pipeline.__file__))


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The fingerprint of the code a run's result depends on (read once per process)."""
    return code_fingerprint(result_code_files())


class RunStore:
    """Finished runs on disk, keyed by RunSpec.key; every method takes a RunSpec (or its dict form)."""

    def __init__(self, root, read_only: bool | None = None, seed_groups: bool = False):
        """read_only: serve finished runs only, never lock or write (a class's shared store); None: so when the
        folder cannot be written (a read-only mount, or no write permission).
        seed_groups: run_many trains the pending runs that differ only in their seeds together, one stacked model
        per group (run_seed_group), each stored as its own run under the key its separate run has. Off by
        default: in bf16 a grouped run's result agrees with its separate run's to bf16 rounding, not bit for bit
        (in fp32 bit for bit), so turning it on for a store changes what runs trained from then on hold."""
        self.root = Path(root)
        if not self.root.is_dir() and not read_only:
            self.root.mkdir(parents=True, exist_ok=True)
        self.read_only = not os.access(self.root, os.W_OK) if read_only is None else read_only
        self.seed_groups = seed_groups

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
            files = record["files"] if isinstance(record, dict) else None
            if not isinstance(files, dict) or not files or RESULTS_NAME not in files:
                return None  # a completion record of the wrong shape: damaged, run again
            if any(not isinstance(digest, str) or file_sha256(folder / name) != digest
                   for name, digest in files.items()):
                return None
            results = json.loads((folder / RESULTS_NAME).read_text())
            return results if isinstance(results, dict) else None
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
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
        if self.read_only:
            cached = self.get(spec)
            if cached is None:
                raise PermissionError(f"the run store {self.root} is read-only and holds no finished run for this spec "
                                      f"(key {as_spec(spec).key}); train it into a store you can write, e.g. "
                                      "RunStore('my_runs'), or import a results pack there")
            return cached
        with FileLock(str(folder) + ".lock"):
            cached = self.get(spec)
            if cached is not None:
                return cached
            if folder.exists() and not _resumable(folder):  # damaged, or finished once and damaged since
                shutil.rmtree(folder)
            results = pipeline.execute_run(as_spec(spec), folder)
            self._finish(folder, results)
            return results

    def run_seed_group(self, specs: list) -> list[dict]:
        """Results for specs that differ only in their seeds (seed_groups_of puts them in one group), in order:
        the unfinished ones trained together (pipeline.execute_seed_group) and each stored as its own run, as
        run(spec) stores it, so a later run(spec) finds it. A member whose lock another process holds is left
        to it (and waited for, as run waits); a member's partial folder that cannot resume starts over. Each
        member is marked done (done.json, written last) only when its results are written: an interrupted group
        leaves its members' checkpoints (seed_groups.train_seed_group resumes them) and nothing marked done
        that is not."""
        specs = [as_spec(s) for s in specs]
        if len(seed_groups_of(specs)) != 1 or len({s.key for s in specs}) != len(specs):
            raise ValueError("run_seed_group takes distinct specs that differ only in their seeds and may train in "
                             "a seed group (see seed_group_refusal); use run_many to group specs")
        if not self.read_only:
            with contextlib.ExitStack() as held:
                members = []
                for spec in specs:
                    lock = FileLock(str(self.path(spec)) + ".lock")
                    try:
                        lock.acquire(timeout=0)
                    except Timeout:
                        continue  # another process is training it: run() below waits for it
                    held.callback(lock.release)
                    if self.get(spec) is None:
                        members.append(spec)
                folders = [self.path(spec) for spec in members]
                for folder in folders:
                    if folder.exists() and not _resumable(folder):
                        shutil.rmtree(folder)
                if len(members) > 1:
                    results = pipeline.execute_seed_group(members, folders)
                else:
                    results = [pipeline.execute_run(spec, folder) for spec, folder in zip(members, folders)]
                for folder, result in zip(folders, results):
                    self._finish(folder, result)
        return [self.run(spec) for spec in specs]

    def _finish(self, folder: Path, results: dict) -> None:
        (folder / RESULTS_NAME).write_text(json.dumps(results, indent=2))
        (folder / CHECKPOINT_NAME).unlink(missing_ok=True)  # finished runs keep weights, not optimizer state
        files = [p for p in folder.rglob("*") if p.is_file() and p.name != DONE_NAME]
        record = {"files": {str(p.relative_to(folder)): file_sha256(p) for p in files}}
        tmp = folder / (DONE_NAME + ".tmp")
        tmp.write_text(json.dumps(record, indent=2))
        os.replace(tmp, folder / DONE_NAME)


def seed_group_refusal(spec: RunSpec | dict) -> str | None:
    """Why a run trains alone even in a store with seed groups on, or None if it may train in one: the reasons of
    seed_groups.group_refusal (its adapter and training configuration: full fine-tuning, dropout, a task or
    cluster gate, ...), and validation points: such a run stops at k steps to be measured on its validation rows
    (pipeline.train_with_validation), which a group would have to do seed by seed; not done, so it trains alone."""
    spec = as_spec(spec)
    if spec.eval.validation_points:
        return (f"validation_points={spec.eval.validation_points}: a run measured on its validation rows during "
                "training trains alone")
    return group_refusal(spec.adapter, spec.train)


def seed_groups_of(specs: list) -> list[list[RunSpec]]:
    """The specs in groups that may train together: those seed_group_refusal allows that differ only in their
    seeds (train.seed and data.seed) share a group, in order of first appearance; every other spec is a group of
    its own."""
    groups: dict[str, list[RunSpec]] = {}
    for spec in map(as_spec, specs):
        if seed_group_refusal(spec) is None:
            settings = spec.to_dict()
            settings["train"] = {k: v for k, v in settings["train"].items() if k != "seed"}
            settings["data"] = {k: v for k, v in settings["data"].items() if k != "seed"}
            groups.setdefault(json.dumps(settings, sort_keys=True, default=str), []).append(spec)
        else:
            groups[spec.key] = [spec]
    return list(groups.values())


def _resumable(folder: Path) -> bool:
    """A partial run whose checkpoint loads whole can continue; anything else starts over."""
    if (folder / DONE_NAME).exists() or not (folder / CHECKPOINT_NAME).exists():
        return False
    return checkpoint_loads(folder / CHECKPOINT_NAME)


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _train_one(job) -> list[dict]:
    """What a worker does with one job (root, specs): one run, or a seed group, through the store at root."""
    root, specs = job
    return RunStore(root).run_seed_group(specs) if len(specs) > 1 else [RunStore(root).run(specs[0])]


def _prepare_models(specs: list[RunSpec]) -> None:
    """Build each distinct base once here, with all threads, before one-thread workers would each wait for it
    (a tiny base is pretrained and cached on first use)."""
    seen = []
    for spec in specs:
        if spec.model not in seen and spec.model["name"] == "tiny":
            seen.append(spec.model)
            load_spec_model(spec.model)


def run_named(specs: dict[str, list[RunSpec]], store: RunStore, processes: int | str = 2, executor: str = "process",
              address: str | None = None) -> dict[str, list[dict]]:
    """{name: [results]} for {name: [specs]}, all trained together (in parallel) through the store."""
    results = iter(run_many([s for per_name in specs.values() for s in per_name], store, processes=processes,
                            executor=executor, address=address))
    return {name: [next(results) for _ in per_name] for name, per_name in specs.items()}


def run_many(specs: list, store: RunStore, processes: int | str = 2, threads_per_process: int | None = None,
             executor: str = "process", address: str | None = None) -> list[dict]:
    """Results of every spec, in order; unfinished ones trained by hydralib.executors.run_parallel: `processes`
    workers here ("auto": one per visible GPU, 2 one-thread workers on a CPU) or tasks on a Ray cluster
    (executor "ray", the store on a folder every node mounts). With store.seed_groups, the unfinished runs that
    differ only in their seeds train as one job each (RunStore.run_seed_group); the others alone. Prints one
    progress line per finished job ("[runs] run 14/40, 9 from the store"), which the suite shows."""
    specs = [as_spec(s) for s in specs]  # refuse a bad spec before starting anything
    unique = list({s.key: s for s in specs}.values())
    pending = [s for s in unique if store.get(s) is None]
    cached = len(unique) - len(pending)
    started = time.perf_counter()

    def report(_jobs_done: int) -> None:
        done = sum((store.path(s) / DONE_NAME).exists() for s in pending)  # a job may finish a group of runs
        print(f"[runs] run {cached + done}/{len(unique)}, {cached} from the store "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
    if pending:
        print(f"[runs] {len(unique)} runs: {cached} from the store, {len(pending)} to train", flush=True)
        jobs = seed_groups_of(pending) if store.seed_groups else [[s] for s in pending]
        if store.seed_groups:
            _print_seed_groups(jobs)
        if executor == "ray" or len(jobs) > 1 and worker_count(processes, visible_devices()) > 1:
            _prepare_models(pending)
        run_parallel(_train_one, [(str(store.root.resolve()), job) for job in jobs], processes=processes,
                     executor=executor, address=address, threads_per_process=threads_per_process, on_done=report)
        missing = [s.key for s in pending if store.get(s) is None]
        if missing:
            raise RuntimeError(f"{len(missing)} runs trained in workers are missing from {store.root} (e.g. "
                               f"{missing[0]}): with executor ray the store must be on a folder every node mounts "
                               "at the same path")
    return [store.run(s) for s in specs]


def _print_seed_groups(jobs: list[list[RunSpec]]) -> None:
    """One line for the seed groups about to train, and one per reason that leaves runs alone."""
    groups = [len(job) for job in jobs if len(job) > 1]
    alone = [job[0] for job in jobs if len(job) == 1]
    print(f"[runs] seed groups: {sum(groups)} runs in {len(groups)} groups ({', '.join(map(str, groups))} seeds), "
          f"{len(alone)} alone", flush=True)
    reasons: dict[str, int] = {}
    for spec in alone:
        reason = seed_group_refusal(spec) or "no other seed of its method to train"
        reasons[reason] = reasons.get(reason, 0) + 1
    for reason, count in reasons.items():
        print(f"[runs]   {count} alone: {reason}", flush=True)
