"""What LoRA, LoRA-Split and HydraLoRA cost: step time, throughput, memory, energy, and merged inference.

Every figure is measured in one interleaved run (one step of every method per round, the order rotated
each round), so machine noise (another job, frequency scaling) hits all methods alike, and is reported
as a ratio to a reference method. Replicates of a training-step measurement are separate processes
(measure_steps_in_processes), so that they vary as separate runs of the benchmark would. Peak memory: on CUDA the allocator's peak over one step; on the CPU,
which keeps no allocator statistics, the bytes a step must hold at its peak: weights, trainable
gradients, AdamW state and the tensors autograd saves for backward (each storage counted once).
Energy: the CPU packages' RAPL counters where Linux exposes them readably, else nothing.
"""
from __future__ import annotations

import contextlib
import copy
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import torch
from torch import nn

from .bases import load_model
from .config import AdapterConfig
from .inject import adapter_layers, add_adapters, count_parameters, find_targets, mean_gates, merge_adapters, routing
from .layers import linear_features
from .train import resolve_device

POWERCAP = Path("/sys/class/powercap")


class TrainStep:
    """One copy of the base with its adapters (None: none, the base frozen) and its AdamW: one training step."""

    def __init__(self, base: nn.Module, config: AdapterConfig | None, device: torch.device, seed: int = 0):
        self.model = copy.deepcopy(base).to(device)
        if config is None:
            self.model.requires_grad_(False)
            self.model.enable_input_require_grads()  # the frozen floor still backpropagates to its input
        else:
            add_adapters(self.model, config, seed=seed)
        self.model.train()
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=1e-4) if self.trainable else None

    def __call__(self, input_ids: torch.Tensor) -> float:
        """Forward, backward and AdamW on a language-modelling loss; returns the loss before the update."""
        loss = self.model(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        if self.optimizer is not None:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return loss.item()

    def resident_bytes(self) -> int:
        """What stays allocated between steps: weights and optimizer state."""
        weights = sum(_nbytes(p) for p in self.model.parameters())
        state = sum(_nbytes(v) for s in (self.optimizer.state.values() if self.optimizer else ())
                    for v in s.values() if torch.is_tensor(v))
        return weights + state

    def cpu_peak_bytes(self, input_ids: torch.Tensor) -> int:
        """Weights + trainable gradients + AdamW exp_avg and exp_avg_sq + tensors saved for backward,
        each storage once (weights the graph saves are not counted twice)."""
        params = list(self.model.parameters())
        seen = {p.untyped_storage().data_ptr() for p in params}
        saved = 0

        def pack(tensor):
            nonlocal saved
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                saved += storage.nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            loss = self.model(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        self.model.zero_grad(set_to_none=True)
        return sum(_nbytes(p) for p in params) + 3 * sum(_nbytes(p) for p in self.trainable) + saved


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def peak_step_memory(step: TrainStep, input_ids: torch.Tensor) -> int:
    """Bytes one training step of this method needs at its peak (see the module docstring)."""
    if input_ids.device.type != "cuda":
        return step.cpu_peak_bytes(input_ids)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()  # every method's copy is resident: count only this one's
    step(input_ids)
    torch.cuda.synchronize()
    return step.resident_bytes() + torch.cuda.max_memory_allocated() - before


# --- energy ------------------------------------------------------------------------------------
@dataclass
class EnergyCounter:
    """The RAPL energy counters of the CPU packages (Linux powercap), in microjoules, wrap-around aware.

    They count the whole package: on a shared machine another job's energy is counted too."""

    files: list[Path]
    ranges: list[int]

    def read(self) -> list[int]:
        return [_read_microjoules(f) for f in self.files]

    def joules(self, start: list[int], end: list[int]) -> float:
        """Energy between two reads; a counter that wrapped past its range is unwrapped once."""
        total = sum(b - a if b >= a else b - a + limit for a, b, limit in zip(start, end, self.ranges))
        return total / 1e6


def _read_microjoules(path: Path) -> int:
    return int(path.read_text().strip())


def energy_counter(device: torch.device | str = "cpu", root: Path = POWERCAP) -> tuple[EnergyCounter | None, str]:
    """(counter, what it measures) when this machine exposes CPU energy readably, else (None, why not)."""
    if torch.device(device).type != "cpu":
        return None, (f"energy on {torch.device(device).type} is not measured: GPU energy needs NVML, and the CPU's "
                      "RAPL counters would leave the accelerator out")
    packages = sorted(p for p in Path(root).glob("intel-rapl:*") if p.name.count(":") == 1)
    if not packages:
        return None, (f"cannot be measured here: no RAPL energy counters under {root} (no Intel/AMD powercap "
                      "driver, or a virtual machine or container that hides them)")
    try:
        files = [p / "energy_uj" for p in packages]
        for f in files:
            _read_microjoules(f)
        ranges = [_read_microjoules(p / "max_energy_range_uj") for p in packages]
    except (OSError, ValueError) as err:
        return None, (f"cannot be measured here: the RAPL counters under {root} are not readable ({err}); "
                      "Linux makes energy_uj readable by root only since 5.10")
    names = ", ".join(p.name for p in packages)
    return EnergyCounter(files, ranges), f"RAPL package counters {names} (the whole CPU, other jobs included)"


# --- interleaved timing ------------------------------------------------------------------------
def time_interleaved(actions: dict[str, Callable[[], object]], rounds: int, warmup: int, device: torch.device,
                     energy: EnergyCounter | None = None) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Run every action once per round, the order rotated each round; ({name: seconds}, {name: joules})
    for the rounds after `warmup` (joules empty without a counter)."""
    if rounds < 1 or warmup < 0:
        raise ValueError(f"need rounds >= 1 and warmup >= 0, got rounds={rounds}, warmup={warmup}")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    names = list(actions)
    seconds = {name: [] for name in names}
    joules = {name: [] for name in names}
    for i in range(warmup + rounds):
        for name in names[i % len(names):] + names[:i % len(names)]:
            sync()
            start_energy = energy.read() if energy else None
            start = time.perf_counter()
            actions[name]()
            sync()
            elapsed = time.perf_counter() - start
            if i >= warmup:
                seconds[name].append(elapsed)
                if energy:
                    joules[name].append(energy.joules(start_energy, energy.read()))
    return seconds, joules


def measure_steps(configs: dict[str, AdapterConfig | None], base: nn.Module, input_ids: torch.Tensor,
                  steps: int = 10, repeats: int = 3, warmup: int = 2, device: str | torch.device = "cpu",
                  energy: EnergyCounter | None = None) -> dict[str, dict]:
    """Training-step cost of every configuration, interleaved: `repeats` blocks of `steps` steps after `warmup`.

    {name: {"step_s": median step, "repeat_step_s": median of each block, "step_times": every step,
            "tokens_per_s", "peak_bytes", "trainable" (exact), "paper" (the paper's convention),
            "joules_per_step" and "repeat_joules" (None without an energy counter)}}"""
    if steps < 1 or repeats < 1:
        raise ValueError(f"need steps >= 1 and repeats >= 1, got steps={steps}, repeats={repeats}")
    device = resolve_device(device)
    input_ids = input_ids.to(device)
    runners = {name: TrainStep(base, config, device) for name, config in configs.items()}
    seconds, joules = time_interleaved({name: (lambda s=s: s(input_ids)) for name, s in runners.items()},
                                       steps * repeats, warmup, device, energy)
    results = {}
    for name, runner in runners.items():
        times, counts = seconds[name], count_parameters(runner.model)
        step_s = statistics.median(times)
        results[name] = {
            "step_s": step_s,
            "repeat_step_s": _block_medians(times, steps),
            "step_times": times,
            "tokens_per_s": input_ids.numel() / step_s,
            "peak_bytes": peak_step_memory(runner, input_ids),
            "trainable": counts.trainable,
            "paper": counts.paper,
            "joules_per_step": statistics.median(joules[name]) if energy else None,
            "repeat_joules": _block_medians(joules[name], steps) if energy else None,
        }
    return results


def measure_steps_in_processes(configs: dict[str, AdapterConfig | None], model: str, input_ids: torch.Tensor,
                               replicates: int = 5, steps: int = 10, warmup: int = 2, device: str = "cpu",
                               threads: int = 1, energy: bool = False) -> dict[str, dict]:
    """measure_steps with every replicate in a process of its own: `replicates` fresh processes, one after the
    other (two at once would time each other), each loading `model` by name (bases.load_model), building every
    method with its AdamW, running `warmup` interleaved rounds and then timing one block of `steps` rounds.

    A replicate is then what running the benchmark again would give (start-up, memory layout, allocator and
    thread-pool state are its own), not a block of one process that shares them with the others. The same keys as
    measure_steps: "repeat_step_s" holds one median step per process, "step_s" the median of every timed step,
    "peak_bytes" the largest of the processes', "repeat_joules" one median per process (with energy, read from
    each process' own RAPL counter); and "pids", the processes' ids."""
    if isinstance(replicates, bool) or not isinstance(replicates, int) or replicates < 1:
        raise ValueError(f"replicates must be a whole number >= 1, got {replicates!r}")
    if steps < 1:
        raise ValueError(f"need steps >= 1, got steps={steps}")
    job = (configs, model, input_ids.cpu(), steps, warmup, str(device), threads, energy)
    blocks = []
    for _ in range(replicates):
        # a pool of one per replicate: a new process each time (Python 3.11's max_tasks_per_child can deadlock);
        # spawn, since a fork would share this process' state
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
            blocks.append(pool.submit(_timing_replicate, job).result())
    pids = [pid for pid, _ in blocks]
    results = {}
    for name, first in blocks[0][1].items():
        runs = [block[name] for _, block in blocks]
        times = [t for run in runs for t in run["step_times"]]
        step_s = statistics.median(times)
        joules = [run["joules_per_step"] for run in runs] if energy else None
        results[name] = {**first, "step_s": step_s, "repeat_step_s": [run["step_s"] for run in runs],
                         "step_times": times, "tokens_per_s": input_ids.numel() / step_s,
                         "peak_bytes": max(run["peak_bytes"] for run in runs),
                         "joules_per_step": statistics.median(joules) if energy else None,
                         "repeat_joules": joules, "pids": pids}
    return results


def _timing_replicate(job) -> tuple[int, dict]:
    """One replicate of measure_steps_in_processes, in its own process: (its pid, measure_steps' results)."""
    configs, model, input_ids, steps, warmup, device, threads, energy = job
    torch.set_num_threads(threads)
    base, _ = load_model(model)
    counter = energy_counter(device)[0] if energy else None
    return os.getpid(), measure_steps(configs, base, input_ids, steps=steps, repeats=1, warmup=warmup, device=device,
                                      energy=counter)


def _block_medians(values: list[float], size: int) -> list[float]:
    return [statistics.median(values[k:k + size]) for k in range(0, len(values), size)]


def ratios(results: dict[str, dict], key: str = "step_s", reference: str = "LoRA r8") -> dict[str, float]:
    """Each method's `key` over the reference method's."""
    _check_reference(results, reference, key)
    return {name: r[key] / results[reference][key] for name, r in results.items() if r.get(key) is not None}


def repeat_speedups(results: dict[str, dict], reference: str = "LoRA r8",
                    key: str = "repeat_step_s") -> dict[str, list[float]]:
    """Per repeat, the reference's step time over each method's (above 1: faster than the reference;
    key="repeat_joules": less energy). Paired within a repeat, so drift between repeats cancels: the
    values a verdict compares."""
    _check_reference(results, reference, key)
    ref = results[reference][key]
    return {name: [a / b for a, b in zip(ref, r[key])] for name, r in results.items()}


def _check_reference(results: dict, reference: str, key: str) -> None:
    if reference not in results:
        raise ValueError(f"reference {reference!r} is not among the measured methods: {', '.join(results)}")
    if results[reference].get(key) is None:
        raise ValueError(f"{key!r} was not measured (None) for {reference!r}")


# --- arithmetic -------------------------------------------------------------------------------
def target_shapes(model: nn.Module, targets="all-linear") -> list[tuple[int, int]]:
    """(in_features, out_features) of every layer an adapter with these targets would wrap."""
    modules = dict(model.named_modules())
    return [linear_features(modules[name]) for name in find_targets(model, targets)]


def lora_flop_share(shapes: list[tuple[int, int]], r: int) -> float:
    """Multiply-adds per token of rank-r LoRAs on these layers, over the layers' own: sum r(in + out) / sum in*out.

    Why adapter size barely moves step time on a large model: 2r/d of a d x d layer (1.6 % at r=32, d=4096)."""
    if not shapes or r < 1:
        raise ValueError(f"need at least one layer shape and r >= 1, got {len(shapes)} shapes, r={r!r}")
    return sum(r * (k + n) for k, n in shapes) / sum(k * n for k, n in shapes)


# --- inference ---------------------------------------------------------------------------------
def measure_forward(models: dict[str, nn.Module], input_ids: torch.Tensor, steps: int = 20, warmup: int = 2,
                    device: str | torch.device = "cpu") -> dict[str, dict]:
    """Latency of one forward pass of the batch (eval mode, no gradients), every model interleaved:
    {name: {"forward_s": median, "times": every pass}}. The models must already be on the device."""
    device = resolve_device(device)
    input_ids = input_ids.to(device)
    for model in models.values():
        model.eval()

    def forward(model):
        with torch.no_grad():
            model(input_ids=input_ids)

    seconds, _ = time_interleaved({name: (lambda m=m: forward(m)) for name, m in models.items()},
                                  steps, warmup, device)
    return {name: {"forward_s": statistics.median(t), "times": t} for name, t in seconds.items()}


def merged_copy(model: nn.Module, gate=None) -> nn.Module:
    """A copy of the model with its adapters folded into the base weights under `gate` (see merge_adapters)."""
    return merge_adapters(copy.deepcopy(model), gate=gate)


@torch.no_grad()
def merge_error(model: nn.Module, input_ids: torch.Tensor, gate="mean") -> dict[str, float]:
    """How far a merged copy's logits are from the routed model's on `input_ids`.

    gate: "mean" merges a learned router under its mean gate over these inputs (the approximation a
    deployment makes); None merges as merge_adapters does by default (LoRA, a uniform gate); a head
    index or a weight vector routes *and* merges under that fixed gate. Only "mean" should differ by
    more than float error. Puts the model in eval mode (dropout would differ between the two passes)."""
    multi_head = any(layer.heads > 1 for layer in adapter_layers(model).values())
    if isinstance(gate, str) and gate != "mean":
        raise ValueError(f"gate must be 'mean', None, a head index or a weight vector, got {gate!r}")
    if gate == "mean" and not multi_head:
        raise ValueError("gate='mean' needs a multi-head adapter (hydra or split); "
                         "a LoRA merges exactly with gate=None")
    model.eval()
    fixed = gate is not None and not isinstance(gate, str)
    with routing(model, gate=gate) if fixed else contextlib.nullcontext():
        routed = model(input_ids=input_ids).logits
    merge_gate = mean_gates(model, input_ids) if gate == "mean" else gate
    merged = merged_copy(model, merge_gate)(input_ids=input_ids).logits
    difference = (merged - routed).abs()
    return {"max_abs_diff": difference.max().item(), "mean_abs_diff": difference.mean().item(),
            "max_abs_logit": routed.abs().max().item()}
