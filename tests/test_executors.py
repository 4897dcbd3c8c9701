"""Parallel running (hydralib.executors): the process pool pins one worker per device and shares out the cores;
on a CPU-only machine processes "auto" is the notebooks' two one-thread workers; tiny-model runs trained as Ray
tasks on a local 2-CPU cluster equal the process pool's, bit for bit (skipped where Ray, the optional extra
'cluster', is not installed)."""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import hydralib
from hydralib import executors
from hydralib.executors import ray_task_resources, run_parallel, threads_per_worker, worker_count

MODEL = {"name": "tiny-random", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
         "max_position_embeddings": 64}
DATA = {"kind": "synthetic", "n_components": 2, "n_train": 48, "n_test": 8, "seed": 0}
SPECS = [  # a few steps each: what matters is that both executors compute the same thing
    {"model": MODEL, "data": DATA, "adapter": {"method": "hydra", "r": 4, "heads": 2},
     "train": {"steps": 4, "batch_size": 8, "lr": 5e-3, "seed": 0}, "eval": {"max_new_tokens": 8}},
    {"model": MODEL, "data": {**DATA, "seed": 1}, "adapter": {"method": "hydra", "r": 4, "heads": 2},
     "train": {"steps": 4, "batch_size": 8, "lr": 5e-3, "seed": 1}, "eval": {"max_new_tokens": 8}},
    {"model": MODEL, "data": DATA, "adapter": {"method": "lora", "r": 4},
     "train": {"steps": 4, "batch_size": 8, "lr": 5e-3, "seed": 0}, "eval": {"max_new_tokens": 8}},
]
TIMED = ("train_seconds", "tokens_per_s")  # measured durations: the only fields two equal runs may differ in


def train_one(job):
    """One run through the store, in whichever worker the executor chose; (worker pid, results)."""
    from hydralib.store import RunStore
    root, spec = job
    return os.getpid(), RunStore(root).run(spec)


def report_pinning(folder):
    """Waits until two workers have checked in (so each of two items is taken by its own worker); then what
    this worker was given: its pid, CUDA_VISIBLE_DEVICES and torch threads."""
    folder = Path(folder)
    (folder / str(os.getpid())).touch()
    deadline = time.monotonic() + 120
    while len(list(folder.iterdir())) < 2:
        if time.monotonic() > deadline:
            raise TimeoutError("the second worker never started")
        time.sleep(0.05)
    return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES"), torch.get_num_threads()


def test_auto_is_one_worker_per_device_and_the_notebooks_two_on_a_cpu():
    assert worker_count("auto", []) == 2 and threads_per_worker(2, []) == 1  # as the notebooks always ran
    assert worker_count("auto", ["0", "1", "2", "3"]) == 4 and threads_per_worker(4, ["0"] * 4, cores=16) == 4
    assert threads_per_worker(8, ["0"] * 8, cores=4) == 1
    assert worker_count(3, ["0"]) == 3
    for bad in (0, -1, "many", 1.5, True):
        with pytest.raises(ValueError, match=f"processes must be 'auto' or a whole number >= 1, got {bad!r}"):
            worker_count(bad, [])


def test_bad_settings_are_refused_by_name():
    with pytest.raises(ValueError, match="executor must be one of process, ray, got 'dask'"):
        run_parallel(abs, [1], executor="dask")
    with pytest.raises(ValueError, match="address 'ray://head:10001' is a Ray cluster's"):
        run_parallel(abs, [1], address="ray://head:10001")
    with pytest.raises(ValueError, match="threads_per_process must be None or a whole number >= 1, got 0"):
        run_parallel(abs, [1], threads_per_process=0)


def test_each_pool_worker_is_pinned_to_its_own_device_with_its_share_of_the_cores(tmp_path, monkeypatch):
    monkeypatch.setattr(executors, "visible_devices", lambda: ["3", "5"])
    monkeypatch.setattr(executors, "available_cores", lambda: 6)
    folder = tmp_path / "checked_in"
    folder.mkdir()
    seen = run_parallel(report_pinning, [str(folder)] * 2, processes="auto")
    assert sorted(device for _, device, _ in seen) == ["3", "5"]
    assert len({pid for pid, _, _ in seen} | {os.getpid()}) == 3 and all(threads == 3 for *_, threads in seen)


def test_without_a_gpu_auto_runs_two_unpinned_one_thread_workers(tmp_path, monkeypatch):
    monkeypatch.setattr(executors, "visible_devices", lambda: [])
    folder = tmp_path / "checked_in"
    folder.mkdir()
    done = []
    seen = run_parallel(report_pinning, [str(folder)] * 2, processes="auto", on_done=done.append)
    assert [device for _, device, _ in seen] == [os.environ.get("CUDA_VISIBLE_DEVICES")] * 2  # left as it was
    assert [threads for *_, threads in seen] == [1, 1] and done == [1, 2]
    assert len({pid for pid, _, _ in seen} | {os.getpid()}) == 3


def test_ray_tasks_ask_for_one_gpu_each_on_gpus_and_for_their_threads_on_cpus():
    gpu_nodes = [{"CPU": 16.0, "GPU": 8.0}, {"CPU": 8.0, "GPU": 2.0}, {"CPU": 4.0}]
    assert ray_task_resources(gpu_nodes, None) == ({"num_gpus": 1, "num_cpus": 2}, 2)  # the leaner GPU node's share
    assert ray_task_resources([{"CPU": 2.0}], None) == ({"num_cpus": 1}, 1)
    assert ray_task_resources([{"CPU": 8.0}], 4) == ({"num_cpus": 4}, 4)


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install '.[cluster]' for the cluster test")
    # the workers import this file's train_one by name, and this checkout's hydralib
    path = [str(Path(__file__).parent), str(Path(hydralib.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in path if p)}})
    yield ray
    ray.shutdown()


def _weights(store: Path, results: dict) -> dict:
    """A finished run's adapter tensors. (Not the file's bytes: safetensors writes its header's metadata keys in
    a hash map's order, which differs from process to process.)"""
    return load_file(store / results["key"] / "adapter" / "adapter_model.safetensors")


def _untimed(results: dict) -> dict:
    return {key: value for key, value in results.items() if key not in TIMED}


def test_runs_on_a_local_ray_cluster_equal_the_process_pools_bit_for_bit(tmp_path, local_ray):
    pool_store, ray_store = (tmp_path / "pool").resolve(), (tmp_path / "ray").resolve()
    pooled = run_parallel(train_one, [(str(pool_store), s) for s in SPECS], processes=2)
    done = []
    on_ray = run_parallel(train_one, [(str(ray_store), s) for s in SPECS], executor="ray", processes=2,
                          on_done=done.append)
    assert done == [1, 2, 3]
    assert os.getpid() not in {pid for pid, _ in pooled + on_ray}  # both trained in workers, not here
    for (_, a), (_, b), spec in zip(pooled, on_ray, SPECS):
        assert a["final_train_loss"] > 0 and a["test_loss"]["loss"] > 0
        assert _untimed(a) == _untimed(b), spec["adapter"]  # every loss, score and generation: equal floats
        weights = _weights(pool_store, a), _weights(ray_store, b)
        assert len(weights[0]) > 0 and weights[0].keys() == weights[1].keys()
        for name, tensor in weights[0].items():  # bit for bit: the same bytes in every tensor
            assert torch.equal(tensor.view(torch.uint8), weights[1][name].view(torch.uint8)), name
        logs = [[{k: v for k, v in json.loads(line).items() if k not in TIMED}
                 for line in (store / r["key"] / "metrics.jsonl").read_text().splitlines()]
                for store, r in ((pool_store, a), (ray_store, b))]
        assert logs[0] == logs[1] and len(logs[0]) == 4
    assert len({r["key"] for _, r in on_ray}) == 3


# --- suite --dry-run: how many runs a profile trains, and what they cost ---------------------------------------

def _counted(plan) -> dict:
    from hydralib.suite import planned_runs
    return {nb.stem: [(g.runs, g.steps) for g in planned_runs(nb, params)] for nb, params in plan}


def test_the_dry_run_counts_each_notebooks_distinct_runs():
    from hydralib.suite import plan_suite
    counted = _counted(plan_suite("default"))
    # derived by hand from the notebooks' run cells, 5 seeds each:
    assert counted["01_heterogeneity_and_split"] == [(25, 150), (10, 75), (10, 38), (10, 19)]  # Figure 2 at 600
    #   rows a component, each seen once: 1, 2, 4, 8 components in 19, 38, 75, 150 steps x (full, LoRA r8) = 40;
    #   Table 1 at 8: LoRA r8, r32, Split 4x8 learned and oracle = 20, less LoRA r8 at 8, already in Figure 2
    assert counted["02_anatomy_of_lora"] == [(55, 100)]  # (3 per task + mixture + 3 other seeds + 3 IID parts
    #   + the mixture LoRA with a frozen random A) x 5
    assert counted["03_hydralora_vs_baselines"] == [(60, 150)]  # full, LoRA r8, r32, Split 4x8 x 2 gates, Hydra
    #   N=8 per token, per sequence, cluster gate, oracle, Hydra N=3, Split 8x5 x 2 gates (sharing A): 12 x 5
    assert counted["04_intrinsic_components"] == [(127, 150)]  # LoRA r8 + N=2, 8 x 2 gates = 25; the sweep's 7
    #   methods at identifiability 1 less Figure 8's two = 25; 0.67 and 0.33 on 3 seeds = 42; 0 on 5 = 35
    assert counted["05_ablations"] == [(50, 150)]  # 4 paper + 1 code choice + R-LoRA + 5 routings, less the token
    #   router twice (paper row and routing row): 10 x 5
    assert counted["07_routing"] == [(15, 150)]
    assert counted["08_real_data"] == [(4, 16), (1, 0)]  # LoRA, Split, Hydra x 2 gates on 1 seed; the base scored
    assert counted["06_efficiency"] == [] and counted["00_quickstart"] == [(1, 60)]
    more = _counted(plan_suite("default", ["05_ablations"], ["05_ablations.code_choices_run=true",
                                                             "05_ablations.dropout_variants=true"]))
    assert more["05_ablations"] == [(80, 150)]  # + router on Ax, top-1, top-2, balance loss, 2 dropout rows: 16 x 5
    fewer = _counted(plan_suite("default", ["05_ablations"], ["05_ablations.dropout_variants=true", "seeds=[0, 1]"]))
    assert fewer["05_ablations"] == [(24, 150)]  # 12 x 2 seeds: the overrides are what is counted
    real = _counted(plan_suite("real-cpu"))  # a profile of one notebook: 08 alone
    assert real == {"08_real_data": [(20, 128), (5, 0)]}  # LoRA r8, Hydra x 2 gates, LoRA r32 on 5 seeds; 5 bases


def test_a_notebook_prints_its_runs_and_their_expected_time_on_its_workers(monkeypatch):
    from hydralib import suite
    from hydralib.suite import RunGroup
    monkeypatch.setattr(suite, "notebook_parameters", lambda nb: {})
    monkeypatch.setattr(suite, "RUN_COUNTERS", {"08_x": lambda p: [RunGroup(5, 10, "tiny"),
                                                                   RunGroup(2, 0, "tiny", parallel=False)]})
    monkeypatch.setattr(suite, "STEP_COSTS", {("tiny", "cpu"): (1.0, 5.0)})
    monkeypatch.setattr(suite, "COST_BASIS", {("tiny", "cpu"): "a test's"})
    line = suite.notebook_estimate("08_x", {"device": "cpu"}, workers=2)
    # 3 rounds of 2 parallel runs at 15 s, then 2 scorings of 5 s one after the other
    assert line.startswith("expected: 5 run(s) of 10 steps, 2 scoring(s) of the base model, about 55 s on 2 worker")
    assert "(1.0 s a step, 5 s a run besides: a test's)" in line
    monkeypatch.setattr(suite, "STEP_COSTS", {})
    assert "no cost is known" in suite.notebook_estimate("08_x", {"device": "cpu"}, workers=2)


def test_device_hours_and_wall_time_on_k_devices(monkeypatch):
    import io
    from hydralib import suite
    from hydralib.suite import RunGroup
    monkeypatch.setattr(suite, "notebook_parameters", lambda nb: {})
    monkeypatch.setattr(suite, "RUN_COUNTERS", {
        "01_x": lambda p: [RunGroup(3, 10, "tiny"), RunGroup(2, 0, "tiny", parallel=False)],
        "02_y": lambda p: [RunGroup(4, 10, "a-model-without-a-cost")]})
    monkeypatch.setattr(suite, "STEP_COSTS", {("tiny", "gpu"): (1.0, 5.0)})
    monkeypatch.setattr(suite, "COST_BASIS", {("tiny", "gpu"): "a test's"})
    out = io.StringIO()
    estimate = suite.write_run_estimate([(Path("01_x.ipynb"), {"device": "auto"}),
                                         (Path("02_y.ipynb"), {"device": "auto"})], out)
    # a run 10 x 1 s + 5 s = 15 s; a scoring 5 s, in the kernel one after the other
    assert estimate["device_seconds"] == 3 * 15 + 2 * 5 and (estimate["runs"], estimate["scorings"]) == (7, 2)
    assert estimate["wall_seconds"] == {1: 55, 2: 2 * 15 + 10, 4: 15 + 10, 8: 15 + 10}
    text = out.getvalue()
    assert "no cost known for 02_y's 4 of a-model-without-a-cost on a gpu: left out of the hours" in text
    assert "cost of tiny on a gpu: 1.0 s a step + 5 s a run (a test's)" in text


def test_a_dry_run_on_gpus_prints_runs_device_hours_and_wall_times(capsys):
    from hydralib import suite
    assert suite.main(["--profile", "default", "--dry-run", "-p", "device=auto", "-p", "08_real_data.seeds=[0, 1]"]) == 0
    out = capsys.readouterr().out
    assert "08_real_data: 8 run(s) of 16 steps (smollm2-135m), 2 scoring(s) of the base model" in out
    assert "cost of smollm2-135m on a gpu: " in out and "(estimate, not measured" in out
    total = out.strip().splitlines()[-1]
    hours = re.search(r"(\d+) run\(s\) and 2 scoring\(s\) of a base model, about ([\d.]+) device-hours", total)
    assert hours and int(hours.group(1)) == 1 + 55 + 55 + 60 + 127 + 50 + 15 + 8 and float(hours.group(2)) > 0, total
    walls = dict(re.findall(r"(\d): ([\d.]+ (?:h|min))", total))
    assert set(walls) == {"1", "2", "4", "8"}, total
