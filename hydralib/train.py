"""One training loop, on accelerate, for every method: adapters or full fine-tuning.

    result = train(model, tokenizer, rows, TrainConfig(steps=300), run_dir="runs/x")

A model with hydralib adapters trains its adapters; a model without trains every weight.
Batches are a pure function of (seed, step), so a run resumed from a checkpoint sees exactly
the batches an uninterrupted run sees, and several processes (accelerate launch / torchrun)
split each global batch between them. The loss is normalised by the response tokens of the
whole global batch, so one process and several give the same gradient.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import pickle
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from filelock import FileLock, Timeout
from safetensors.torch import save_model
from tqdm.auto import tqdm
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from .data.formatting import IGNORE_INDEX, TEMPLATES, collate, encode_row
from .adapter_files import save_adapters
from .inject import adapter_config_of, adapter_layers, batch_logits, frozen_linear_weights_in, router_statistics
from .layers import Router

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.jsonl"


@dataclass
class TrainConfig:
    """How to train. Defaults follow the paper's scripts (lr 2e-4, cosine, 3 % warm-up).

    batch_size is the global batch per optimizer step, summed over processes and accumulation.
    balance_weight: weight of a load-balancing loss on learned routers (see inject.router_statistics);
    0, as in the paper, adds none.
    mixed_precision: "bf16" autocasts matmuls to bfloat16 on the CPU too (accelerate's CPU autocast; pays
    on CPUs with native bf16, e.g. avx512_bf16 / AMX); "auto" picks bf16 on a GPU that supports it only.
    compile: run the training forward/backward through torch.compile (the graph cache persists under
    $TORCHINDUCTOR_CACHE_DIR, so later processes compile faster); pair it with pad_to_multiple, since
    every new batch shape costs a recompile.
    pad_to_multiple: pad each batch's length up to a multiple of this (1: to its longest row); padding
    is masked, so the loss is unchanged.
    lr_floor: where the cosine schedule ends, as a fraction of lr (0: at zero, as the paper's scripts do; a
    floor keeps a short run learning to its last step).
    See benchmarks/train_throughput.py for what each option costs and brings."""

    steps: int = 300
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 2e-4
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    max_length: int = 64
    template: str = "compact"
    seed: int = 0
    mixed_precision: str = "auto"
    device: str = "auto"
    checkpoint_every: int = 0
    balance_weight: float = 0.0
    progress: bool = True
    compile: bool = False
    pad_to_multiple: int = 1
    lr_floor: float = 0.0

    def __post_init__(self):
        for name in ("steps", "batch_size", "grad_accum", "max_length", "seed", "checkpoint_every"):
            value, low = getattr(self, name), 0 if name in ("seed", "checkpoint_every") else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {name}={value!r}")
        for name in ("lr", "warmup_ratio", "weight_decay", "balance_weight", "lr_floor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {name}={value!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got warmup_ratio={self.warmup_ratio!r}")
        if not 0 <= self.lr_floor <= 1:
            raise ValueError(f"lr_floor must be in [0, 1] (a fraction of lr), got lr_floor={self.lr_floor!r}")
        if self.max_grad_norm is not None and not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise ValueError(f"max_grad_norm must be a finite number > 0 or None, got {self.max_grad_norm!r}")
        if self.balance_weight < 0:
            raise ValueError(f"balance_weight must be >= 0, got {self.balance_weight}")
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise ValueError(f"unknown mixed_precision {self.mixed_precision!r}; allowed: auto, no, bf16, fp16")
        if self.template not in TEMPLATES:
            raise ValueError(f"unknown template {self.template!r}; allowed: {', '.join(map(repr, TEMPLATES))}")
        if self.device not in ("auto", "cpu"):
            raise ValueError(f"unknown device {self.device!r}; allowed: 'auto' (the accelerator if any) or 'cpu'")
        if not isinstance(self.compile, bool):
            raise ValueError(f"compile must be True or False, got {self.compile!r}")
        if not isinstance(self.pad_to_multiple, int) or self.pad_to_multiple < 1:
            raise ValueError(f"pad_to_multiple must be an integer >= 1 (1: pad each batch to its longest row), "
                             f"got {self.pad_to_multiple!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class TrainResult:
    model: torch.nn.Module
    metrics: list[dict]
    run_dir: Path | None
    seconds: float


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def batch_indices(n_rows: int, start: int, count: int, seed: int) -> list[int]:
    """Positions start..start+count of an endless stream of per-epoch permutations of range(n_rows)."""
    out = []
    while len(out) < count:
        epoch, offset = divmod(start + len(out), n_rows)
        perm = torch.randperm(n_rows, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
        out += perm[offset:offset + count - len(out)]
    return out


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto': the GPU if there is one, else the CPU; anything else as torch names it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_mixed_precision(setting: str, device: str = "auto") -> str:
    """'auto': bf16 where a GPU supports it, else full precision."""
    if setting != "auto":
        return setting
    gpu = device != "cpu" and torch.cuda.is_available()
    return "bf16" if gpu and torch.cuda.is_bf16_supported() else "no"


def make_optimizer(parameters, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW, fused: one kernel per step for all tensors (torch's default on a CPU updates tensor by tensor,
    about ten operations each)."""
    return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay, fused=True)


def make_scheduler(optimizer, config: TrainConfig):
    """The learning-rate schedule: linear warm-up over config.warmup_ratio of the steps, then cosine down to
    config.lr_floor x lr at the last step."""
    return get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, math.ceil(config.warmup_ratio * config.steps), config.steps, min_lr_rate=config.lr_floor)


def token_losses(model, batch: dict, record: str = "off") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token cross-entropy of the next token and its mask (response tokens only), (batch, T-1); the adapters
    routed as the batch says (inject.batch_logits), recording their gates as `record` asks."""
    logits = batch_logits(model, batch, record=record)
    labels = batch["labels"][:, 1:]
    mask = labels != IGNORE_INDEX
    losses = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                             labels.clamp_min(0).reshape(-1), reduction="none").view(labels.shape)
    return losses * mask, mask


def train(model, tokenizer, rows: list[dict], config: TrainConfig, run_dir=None, resume: bool = True,
          stop_at: int | None = None, run_record: dict | None = None) -> TrainResult:
    """Train `model` on `rows` for config.steps optimizer steps; returns the trained (unwrapped) model.

    run_dir: where config.json, metrics.jsonl, checkpoints and the final weights go (None: nowhere).
    resume:  continue from run_dir's checkpoint if there is one.
    stop_at: stop after this step (as an interruption would), leaving a checkpoint to resume from.
    run_record: extra description (model, data, adapter) written into config.json beside the training config.
    """
    run_dir = Path(run_dir) if run_dir is not None else None
    with training_in(run_dir):
        return _train(model, tokenizer, rows, config, run_dir, resume, stop_at, run_record)


@contextlib.contextmanager
def training_in(run_dir: Path | None):
    """Hold run_dir's training lock for the block (nothing to hold without a run_dir); refuse at once if another
    process holds it."""
    if run_dir is None:
        yield
        return
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(run_dir) + ".train.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise RuntimeError(f"another process is training in {run_dir} (it holds {lock.lock_file}); wait for it, "
                           "or give this training another run_dir") from None
    try:
        yield
    finally:
        lock.release()


def _train(model, tokenizer, rows: list[dict], config: TrainConfig, run_dir, resume: bool, stop_at: int | None,
           run_record: dict | None) -> TrainResult:
    if not rows:
        raise ValueError("no training rows")
    if any(layer.merged for layer in adapter_layers(model).values()):
        raise ValueError("the adapters are merged into the base weights; call unmerge_adapters before training")
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        # accelerate keeps one process-wide state; a new call may ask for another device or precision
        AcceleratorState._reset_state(reset_partial_state=True)
    precision = resolve_mixed_precision(config.mixed_precision, config.device)
    accelerator = Accelerator(mixed_precision=precision, cpu=config.device == "cpu")
    world, rank = accelerator.num_processes, accelerator.process_index
    micro = config.batch_size // (config.grad_accum * world)
    if micro * config.grad_accum * world != config.batch_size:
        raise ValueError(f"batch_size={config.batch_size} must be divisible by grad_accum={config.grad_accum} "
                         f"x processes={world}")
    seed_everything(config.seed)
    has_adapters = bool(adapter_layers(model))
    if not has_adapters:
        model.requires_grad_(True)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(trainable, config)
    scheduler = make_scheduler(optimizer, config)
    adapter_config = adapter_config_of(model)
    routed = has_adapters and adapter_config.has_router
    if config.balance_weight and not routed:
        raise ValueError(f"balance_weight={config.balance_weight} needs a learned router with heads > 1; "
                         f"this model has {adapter_config.to_dict() if has_adapters else 'no adapters'}")
    layers = list(adapter_layers(model).values()) if routed else []
    # a router with a loss of its own, or a balance loss, needs the gates with their graph
    router_losses = routed and any(type(l.router_kind).loss is not Router.loss for l in layers)
    record_gates = "graph" if config.balance_weight or router_losses else "detached"
    names = _component_names(rows)

    encoded = [encode_row(r, tokenizer, config.template, config.max_length) for r in rows]
    fingerprint = inputs_fingerprint(model, encoded) if run_dir is not None else None
    model, optimizer = accelerator.prepare(model, optimizer)
    inner = accelerator.unwrap_model(model, keep_fp32_wrapper=False)  # callers get a plain model back
    step_model = torch.compile(model) if config.compile else model

    start_step, metrics = 0, []
    if run_dir is not None and resume and (run_dir / CHECKPOINT_NAME).exists():
        start_step, metrics = _load_checkpoint(run_dir, inner, optimizer, scheduler, config, fingerprint,
                                               accelerator.is_main_process)
    if run_dir is not None and accelerator.is_main_process:  # after the check: a refused resume changes nothing
        run_dir.mkdir(parents=True, exist_ok=True)
        record = {"train": config.to_dict(), **(run_record or {}),
                  "adapter": adapter_config.to_dict() if has_adapters else None, "processes": world}
        (run_dir / "config.json").write_text(json.dumps(record, indent=2, default=str))
    accelerator.wait_for_everyone()

    with frozen_linear_weights_in(inner, torch.bfloat16) if precision == "bf16" and accelerator.device.type == "cpu" \
            else contextlib.nullcontext():
        model.train()
        last = config.steps if stop_at is None else min(stop_at, config.steps)
        bar = tqdm(range(start_step, last), initial=start_step, total=config.steps, desc="train", mininterval=5.0,
                   disable=not (config.progress and accelerator.is_main_process))
        started = time.perf_counter()
        for step in bar:
            tick = time.perf_counter()
            global_ids = batch_indices(len(encoded), step * config.batch_size, config.batch_size, config.seed)
            global_tokens = sum(_response_tokens(encoded[i]) for i in global_ids)
            if global_tokens == 0:
                raise ValueError(f"step {step + 1}: the batch has no response tokens; max_length={config.max_length} "
                                 "leaves no room for the answers")
            comp_loss = torch.zeros(len(names))
            comp_tokens = torch.zeros(len(names))
            step_loss, step_tokens, gate_stats = 0.0, 0, []
            for m in range(config.grad_accum):
                first = (m * world + rank) * micro
                batch = collate([encoded[i] for i in global_ids[first:first + micro]], tokenizer.pad_token_id)
                batch = _pad_to_multiple(batch, config.pad_to_multiple, tokenizer.pad_token_id)
                batch = {k: v.to(accelerator.device) for k, v in batch.items()}
                with accelerator.autocast():
                    losses, mask = token_losses(step_model, batch, record_gates if routed else "off")
                loss = losses.sum() * world / global_tokens
                if routed:
                    stats = router_statistics(inner, batch["attention_mask"])
                    loss = loss + config.balance_weight * stats["balance_loss"] / config.grad_accum
                    if router_losses:
                        own = [l.router_loss() for l in layers]
                        loss = loss + sum(x for x in own if x is not None) / config.grad_accum
                    gate_stats.append(stats)
                sync = m == config.grad_accum - 1
                with contextlib.nullcontext() if sync or world == 1 else accelerator.no_sync(model):
                    accelerator.backward(loss)
                per_sample = losses.detach().sum(1).float().cpu()
                comp_loss.index_add_(0, batch["component"].cpu(), per_sample)
                comp_tokens.index_add_(0, batch["component"].cpu(), mask.sum(1).float().cpu())
                step_loss += losses.detach().sum().item()
                step_tokens += int(batch["attention_mask"].sum())
            totals = accelerator.reduce(torch.tensor([step_loss, step_tokens], dtype=torch.float64,
                                                     device=accelerator.device), "sum").cpu()
            comp = accelerator.reduce(torch.stack([comp_loss, comp_tokens]).to(accelerator.device), "sum").cpu()
            mean_loss = totals[0].item() / global_tokens
            if not math.isfinite(mean_loss):
                raise FloatingPointError(
                    f"loss is {mean_loss} at step {step + 1}: training diverged. Try a lower lr (now {config.lr}), "
                    f"gradient clipping (max_grad_norm, now {config.max_grad_norm}) or mixed_precision='no'")
            max_norm = config.max_grad_norm if config.max_grad_norm is not None else float("inf")
            grad_norm = float(accelerator.clip_grad_norm_(trainable, max_norm))
            if not math.isfinite(grad_norm):
                raise FloatingPointError(
                    f"gradient norm is {grad_norm} at step {step + 1} (loss {mean_loss:.4g}): an overflow in backward. "
                    f"Try mixed_precision='no' or a lower lr (now {config.lr})")
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            seconds = time.perf_counter() - tick
            record = {"step": step + 1, "loss": mean_loss, "lr": scheduler.get_last_lr()[0],
                      "tokens_per_s": totals[1].item() / seconds, "grad_norm": grad_norm,
                      "component_loss": {names[c]: (comp[0, c] / comp[1, c]).item()
                                         for c in range(len(names)) if comp[1, c] > 0}}
            if gate_stats:  # this process's micro-batches: how the learned routers spread the tokens
                record.update(gate_entropy=sum(s["entropy"] for s in gate_stats) / len(gate_stats),
                              balance_loss=sum(s["balance_loss"].item() for s in gate_stats) / len(gate_stats),
                              head_usage=(sum(s["usage"] for s in gate_stats) / len(gate_stats)).tolist())
            metrics.append(record)
            bar.set_postfix(loss=f"{mean_loss:.4f}")
            if run_dir is not None and accelerator.is_main_process:
                with open(run_dir / METRICS_NAME, "a") as f:
                    f.write(json.dumps(record) + "\n")
                every = config.checkpoint_every
                if (every and (step + 1) % every == 0) or step + 1 == last:
                    _save_checkpoint(run_dir, inner, optimizer, scheduler, step + 1, config, fingerprint)
            accelerator.wait_for_everyone()
        bar.close()
    seconds = time.perf_counter() - started
    if run_dir is not None and accelerator.is_main_process and last == config.steps:
        _save_weights(inner, run_dir)
    model.eval()
    return TrainResult(inner, metrics, run_dir, seconds)


def _pad_to_multiple(batch: dict, multiple: int, pad_token_id: int) -> dict:
    """Right-pad a collated batch to a length that is a multiple of `multiple` (masked: the loss is unchanged)."""
    extra = -batch["input_ids"].shape[1] % multiple
    if extra == 0:
        return batch
    fill = {"input_ids": pad_token_id, "attention_mask": 0, "labels": IGNORE_INDEX}
    return {k: F.pad(v, (0, extra), value=fill[k]) if k in fill else v for k, v in batch.items()}


def _response_tokens(example: dict) -> int:
    return sum(1 for label in example["labels"][1:] if label != IGNORE_INDEX)


def _component_names(rows: list[dict]) -> list[str]:
    size = max(int(r.get("component", 0)) for r in rows) + 1
    names = [str(i) for i in range(size)]
    for r in rows:
        names[int(r.get("component", 0))] = str(r.get("component_name", r.get("component", 0)))
    return names


def _trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


RESUME_IRRELEVANT = ("progress", "checkpoint_every")


def _resume_settings(config: TrainConfig) -> dict:
    return {k: v for k, v in config.to_dict().items() if k not in RESUME_IRRELEVANT}


def inputs_fingerprint(model, encoded: list[dict]) -> dict[str, str]:
    """Hashes of what a run starts from: its encoded training rows and the model's weights before training
    (the base), so a checkpoint is never resumed on other data or another base model."""
    data, base = hashlib.sha256(), hashlib.sha256()
    for example in encoded:
        data.update(json.dumps([example["input_ids"], example["labels"]]).encode())
    for name, tensor in model.state_dict().items():
        base.update(name.encode() + tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return {"data": data.hexdigest()[:16], "base": base.hexdigest()[:16]}


def _save_checkpoint(run_dir: Path, model, optimizer, scheduler, step: int, config: TrainConfig,
                     fingerprint: dict | None) -> None:
    """Everything needed to continue as if never stopped; written whole, then renamed into place. Only
    tensors and plain Python values go in, so load_checkpoint reads it with torch.load(weights_only=True)."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    state = {"step": step, "config": _resume_settings(config), "fingerprint": fingerprint,
             "trainable": _trainable_state(model), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
             "numpy_rng": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)),
                           "position": int(position), "has_gauss": int(has_gauss), "gauss": float(gauss)},
             "python_rng": random.getstate(),
             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
    tmp = run_dir / f"{CHECKPOINT_NAME}.tmp{os.getpid()}"  # a name of this process's own
    torch.save(state, tmp)
    os.replace(tmp, run_dir / CHECKPOINT_NAME)


class CheckpointError(ValueError):
    """A training checkpoint that cannot be used (unreadable, or holding more than tensors and plain values)."""


CHECKPOINT_ENTRIES = ("step", "config", "fingerprint", "trainable", "optimizer", "scheduler", "torch_rng",
                      "numpy_rng", "python_rng", "cuda_rng")


def load_checkpoint(path) -> dict:
    """The state saved in a training checkpoint, read without running any code it holds: torch.load with
    weights_only=True unpickles tensors and plain Python values only, and refuses anything else (a planted
    object whose unpickling would run code). Raises CheckpointError naming the file."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # damaged, or it names a class or function to call: nothing was run
        reason = _unpickler_reason(str(err))
        raise CheckpointError(f"{path} was refused: it holds more than tensors and plain values ({reason}); a "
                              "checkpoint hydralib wrote never does, so it is damaged or was planted, and nothing "
                              "in it was run. Delete it to start the run over") from None
    except Exception as err:  # truncated, not a torch file, a folder, ...
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(err).__name__}: {err}); "
                              "delete it to start the run over") from None
    missing = [k for k in CHECKPOINT_ENTRIES if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"{path} is not a hydralib training checkpoint (missing {missing}); "
                              "delete it to start the run over")
    return state


def _unpickler_reason(message: str) -> str:
    """The line of torch's weights-only refusal that says what was refused, without its general advice."""
    advice = ("Weights only load failed", "Please file an issue", "Check the documentation", "In PyTorch")
    for line in message.splitlines():
        line = line.replace("WeightsUnpickler error:", "").strip()
        if line and not line.startswith(advice):
            return line
    return "refused by torch.load(weights_only=True)"


def checkpoint_loads(path) -> bool:
    """Whether `path` is a checkpoint load_checkpoint accepts (what a run store asks before resuming)."""
    try:
        load_checkpoint(path)
    except CheckpointError:
        return False
    return True


def _load_checkpoint(run_dir: Path, model, optimizer, scheduler, config: TrainConfig, fingerprint: dict | None,
                     main_process: bool = True) -> tuple[int, list[dict]]:
    state = load_checkpoint(run_dir / CHECKPOINT_NAME)
    for what, words in (("data", "other training rows"), ("base", "another base model (or other initial weights)")):
        made = (state.get("fingerprint") or {}).get(what)
        if fingerprint is not None and made is not None and made != fingerprint[what]:
            raise ValueError(f"{run_dir / CHECKPOINT_NAME} was made on {words} (fingerprint {made}, now "
                             f"{fingerprint[what]}); use another run_dir, or resume=False to start over")
    saved, now = state["config"], _resume_settings(config)
    changed = [f"{k}: checkpoint {saved.get(k)!r}, now {now.get(k)!r}" for k in sorted(now) if saved.get(k) != now[k]]
    if changed:
        raise ValueError(f"{run_dir / CHECKPOINT_NAME} belongs to another training configuration "
                         f"({'; '.join(changed)}); use another run_dir, or resume=False to start over")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state["trainable"].items():
            params[name].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    saved_numpy = state["numpy_rng"]
    np.random.set_state((saved_numpy["kind"], saved_numpy["keys"].numpy().astype(np.uint32), saved_numpy["position"],
                         saved_numpy["has_gauss"], saved_numpy["gauss"]))
    random.setstate(state["python_rng"])
    if state["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    step = state["step"]
    metrics = []
    path = run_dir / METRICS_NAME
    if path.exists():  # lines written after the checkpoint belong to work that will be redone
        metrics = [m for m in _read_metrics(path) if m["step"] <= step]
        if main_process:
            path.write_text("".join(json.dumps(m) + "\n" for m in metrics))
    return step, metrics


def _save_weights(model, run_dir: Path) -> None:
    """The trained weights: the adapter folder, or the whole model for full fine-tuning."""
    if adapter_layers(model):
        save_adapters(model, run_dir / "adapter", overwrite=True)
    else:
        save_model(model, str(run_dir / "model.safetensors"))  # handles tied embeddings (shared storage)


def _read_metrics(path: Path) -> list[dict]:
    """The training log; a last line torn by an interruption is dropped, damage elsewhere is refused."""
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    metrics = []
    for number, line in enumerate(lines, 1):
        try:
            metrics.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                break  # written when the process was stopped: that step will be redone
            raise ValueError(f"{path}, line {number}, is not a JSON record ({line[:60]!r}); the log is damaged in "
                             "the middle: delete the run folder to start over") from None
    return metrics
