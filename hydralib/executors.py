"""Independent jobs run in parallel: a pool of processes on this machine, or tasks on a Ray cluster.

    results = run_parallel(train_one, items, processes="auto")             # one worker per GPU here
    results = run_parallel(train_one, items, executor="ray", address="auto")  # every GPU of a Ray cluster

`function` is a top-level (picklable) function of one item; the results come back in the items' order.

processes: "auto" is one worker per visible CUDA device, each pinned to its own device (CUDA_VISIBLE_DEVICES
is set in the worker before CUDA starts there, so "cuda" means that worker's GPU), with the machine's cores
shared out among them; on a machine without a GPU it is CPU_PROCESSES workers of one thread each, the
notebooks' setting for a 2-core laptop. A number is that many workers (on GPUs, dealt out over the devices in
turn). One worker runs the items here, in this process. On Ray, a number is the most tasks in flight at once
and "auto" leaves it to the cluster's resources: each task asks for one GPU where the cluster has GPUs, else
for its threads' CPUs.

Ray is an optional extra (`pip install '.[cluster]'`), imported only when executor="ray". Its workers run the
same function as the pool's; what a function writes to disk must go to a folder that every node mounts at the
same path (the run store does: see README, "On a Ray cluster").
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Callable, Iterable

import torch

EXECUTORS = ("process", "ray")
CPU_PROCESSES = 2  # without a GPU, "auto" is what the notebooks always ran: two processes of one thread each


def visible_devices() -> list[str]:
    """The CUDA devices this process may use, as CUDA_VISIBLE_DEVICES names them (indices or UUIDs)."""
    count = torch.cuda.device_count()  # CUDA stops at the first name it cannot use; so does this list
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    names = [n.strip() for n in listed.split(",")] if listed is not None else [str(i) for i in range(count)]
    return names[:count]


def available_cores() -> int:
    """The cores this process may run on (its affinity where the system says, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def worker_count(processes, devices: list[str]) -> int:
    """How many workers `processes` ("auto" or a whole number >= 1) means with these devices."""
    if processes == "auto":
        return len(devices) or CPU_PROCESSES
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ValueError(f"processes must be 'auto' or a whole number >= 1, got {processes!r}")
    return processes


def threads_per_worker(workers: int, devices: list[str], cores: int | None = None) -> int:
    """Torch threads per worker: on GPUs the cores shared out evenly (they feed the device); on a CPU one each,
    as the notebooks always ran (a second thread mostly waits for a busy core)."""
    if not devices:
        return 1
    return max(1, (cores or available_cores()) // workers)


def run_parallel(function: Callable, items: Iterable, *, processes="auto", executor: str = "process",
                 address: str | None = None, threads_per_process: int | None = None,
                 on_done: Callable[[int], None] | None = None) -> list:
    """[function(item) for item in items], run by `executor` ("process" or "ray"); on_done(n) is called after
    each finished item with how many have finished (in the order they finish). address: the Ray cluster's
    (e.g. "auto" on one of its nodes, or "ray://head:10001"); None starts a local Ray on this machine."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if address is not None and executor != "ray":
        raise ValueError(f"address {address!r} is a Ray cluster's; it needs executor='ray', got {executor!r}")
    if threads_per_process is not None and (isinstance(threads_per_process, bool)
                                            or not isinstance(threads_per_process, int) or threads_per_process < 1):
        raise ValueError(f"threads_per_process must be None or a whole number >= 1, got {threads_per_process!r}")
    items = list(items)
    if executor == "ray":
        return _run_on_ray(function, items, processes, address, threads_per_process, on_done)
    devices = visible_devices()
    workers = min(worker_count(processes, devices), len(items))
    if workers <= 1:
        return _run_here(function, items, on_done)
    threads = threads_per_process or threads_per_worker(workers, devices)
    context = get_context("spawn")  # a fork would copy this process's CUDA state and threads
    pinned = context.Queue()
    for i in range(workers):  # one device per worker, dealt in turn when there are more workers than devices
        pinned.put(devices[i % len(devices)] if devices else None)
    results = [None] * len(items)
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_start_worker,
                             initargs=(pinned, threads)) as pool:
        futures = {pool.submit(function, item): i for i, item in enumerate(items)}
        for done, future in enumerate(as_completed(futures), 1):
            results[futures[future]] = future.result()
            if on_done:
                on_done(done)
    return results


def _run_here(function: Callable, items: list, on_done) -> list:
    results = []
    for done, item in enumerate(items, 1):
        results.append(function(item))
        if on_done:
            on_done(done)
    return results


def _start_worker(pinned, threads: int) -> None:
    """A pool worker's first act: take its device (before anything starts CUDA here) and its thread count."""
    device = pinned.get()
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = device
    torch.set_num_threads(threads)


def _call_with_threads(function: Callable, item, threads: int):
    """A Ray task: Ray reuses its worker processes, so the thread count is set for each task."""
    torch.set_num_threads(threads)
    return function(item)


def _ray():
    try:
        import ray  # the optional extra 'cluster', heavy: imported only when executor='ray'
    except ImportError as err:
        raise ImportError("executor 'ray' needs Ray, the optional extra 'cluster': pip install '.[cluster]' "
                          "(from the repository root), or pip install -r requirements-cluster.txt") from err
    return ray


def ray_task_resources(nodes: list[dict], threads_per_process: int | None) -> tuple[dict, int]:
    """(Ray task options, torch threads) for one run on the cluster whose nodes' resources are `nodes` (as
    ray.nodes() gives them, alive ones only): one GPU and the cores the least-provisioned GPU node has per GPU
    where the cluster has GPUs, else threads_per_process CPUs (default 1)."""
    gpu_nodes = [n for n in nodes if n.get("GPU", 0) >= 1]
    if gpu_nodes:
        threads = threads_per_process or max(1, int(min(n.get("CPU", 1) // n["GPU"] for n in gpu_nodes)))
        return {"num_gpus": 1, "num_cpus": threads}, threads
    threads = threads_per_process or 1
    return {"num_cpus": threads}, threads


def _run_on_ray(function: Callable, items: list, processes, address: str | None, threads_per_process, on_done) -> list:
    if processes != "auto":
        worker_count(processes, [])  # the same check as the pool's
    ray = _ray()
    if not ray.is_initialized():  # else the connection this process already has (e.g. a test's local cluster)
        local_cpus = processes if address is None and processes != "auto" else None
        ray.init(address=address, num_cpus=local_cpus, include_dashboard=False)
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    options, threads = ray_task_resources(nodes, threads_per_process)
    task = ray.remote(_call_with_threads).options(**options)
    in_flight_limit = len(items) if processes == "auto" else processes
    results, waiting, next_item, done = [None] * len(items), {}, 0, 0
    while done < len(items):
        while next_item < len(items) and len(waiting) < in_flight_limit:
            waiting[task.remote(function, items[next_item], threads)] = next_item
            next_item += 1
        (ready,), _ = ray.wait(list(waiting), num_returns=1)
        results[waiting.pop(ready)] = ray.get(ready)
        done += 1
        if on_done:
            on_done(done)
    return results
