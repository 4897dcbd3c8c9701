"""Evaluation: loss and perplexity per component, greedy generation with exact match and token
accuracy, multiple-choice log-likelihood (MMLU), and sandboxed HumanEval pass@1 (opt-in)."""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import torch

from .data.formatting import (IGNORE_INDEX, collate, encode_prompt, encode_row, format_prompt, prompt_mask,
                              routing_fields)
from .data.sources import extract_gsm8k_answer
from .inject import adapter_layers, batch_routing, recorded_gates, routing

MMLU_LETTERS = ("A", "B", "C", "D")


def _batches(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _name_of(row: dict) -> str:
    return str(row.get("component_name", row.get("component", 0)))


def _summaries(values: dict[str, list[float]]) -> dict[str, float]:
    return {name: sum(v) / len(v) for name, v in sorted(values.items())}


@torch.no_grad()
def evaluate_loss(model, tokenizer, rows: list[dict], template: str = "compact", max_length: int = 64,
                  batch_size: int = 32) -> dict:
    """Response-token loss, perplexity and teacher-forced token accuracy, overall and per component."""
    model.eval()
    device = next(model.parameters()).device
    sums, hits, counts = defaultdict(float), defaultdict(float), defaultdict(int)
    for chunk in _batches(rows, batch_size):
        batch = collate([encode_row(r, tokenizer, template, max_length) for r in chunk], tokenizer.pad_token_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        with batch_routing(model, batch["route"], prompt_mask(batch)):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        labels = batch["labels"][:, 1:]
        mask = labels != IGNORE_INDEX
        losses = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), labels.clamp_min(0),
                                                   reduction="none") * mask
        correct = (logits.argmax(-1) == labels) & mask
        for row, loss, hit, n in zip(chunk, losses.sum(1), correct.sum(1), mask.sum(1)):
            for key in ("all", _name_of(row)):
                sums[key] += loss.item()
                hits[key] += hit.item()
                counts[key] += n.item()
    per = {k: {"loss": sums[k] / counts[k], "perplexity": math.exp(sums[k] / counts[k]),
               "token_accuracy": hits[k] / counts[k]} for k in counts if counts[k]}
    overall = per.pop("all")
    return {**overall, "per_component": dict(sorted(per.items()))}


@torch.no_grad()
def gate_profile(model, tokenizer, rows: list[dict], template: str = "compact", max_length: int = 64,
                 batch_size: int = 32) -> dict:
    """How the adapters route each row: its gate averaged over its prompt tokens, per layer.

    Returns {"layers": module names, "gates": (rows, layers, heads) float tensor}; for any gate (learned per
    token or per sequence, task, cluster, uniform), so routings can be compared on the same footing."""
    model.eval()
    device = next(model.parameters()).device
    layers = list(adapter_layers(model).values())
    if not layers:
        raise ValueError("this model has no hydralib adapters, so nothing routes")
    out = []
    for chunk in _batches(rows, batch_size):
        batch = collate([encode_row(r, tokenizer, template, max_length) for r in chunk], tokenizer.pad_token_id)
        mask = prompt_mask(batch).float()
        with batch_routing(model, batch["route"], mask), routing(model, record=True):
            model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
            per_layer = []
            for layer in layers:
                g, weights = recorded_gates(layer, mask)
                per_layer.append(((g * weights.unsqueeze(-1)).sum(1) / weights.sum(1, keepdim=True)).cpu())
        out.append(torch.stack(per_layer, 1))
    return {"layers": list(adapter_layers(model)), "gates": torch.cat(out)}


@torch.no_grad()
def generate(model, tokenizer, rows: list[dict], template: str = "compact", max_new_tokens: int = 16,
             batch_size: int = 32, max_length: int = 128) -> list[str]:
    """Greedy continuations of each row's prompt, cut at the end-of-sequence token."""
    model.eval()
    device = next(model.parameters()).device
    outputs = []
    for chunk in _batches(rows, batch_size):
        prompts = [{"input_ids": encode_prompt(r, tokenizer, template, max_length), **routing_fields(r)}
                   for r in chunk]
        batch = collate(prompts, tokenizer.pad_token_id, padding_side="left")
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        with batch_routing(model, batch["route"], mask, hold=True):
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id)
        for seq in out[:, ids.shape[1]:].tolist():
            if tokenizer.eos_token_id in seq:
                seq = seq[:seq.index(tokenizer.eos_token_id)]
            outputs.append(tokenizer.decode(seq, skip_special_tokens=True))
    return outputs


def is_correct(row: dict, generated: str, scorer: str = "exact") -> bool:
    """'exact': the generation equals the target (stripped); 'gsm8k': the final numbers agree."""
    if scorer == "exact":
        return generated.strip() == row["output"].strip()
    if scorer == "gsm8k":
        return extract_gsm8k_answer(generated) == row.get("answer", extract_gsm8k_answer(row["output"]))
    raise ValueError(f"unknown scorer {scorer!r}; allowed: 'exact', 'gsm8k'")


def exact_match(rows: list[dict], generations: list[str], scorer: str = "exact") -> dict:
    """Fraction correct, overall and per component."""
    if len(rows) != len(generations):
        raise ValueError(f"{len(rows)} rows but {len(generations)} generations")
    per = defaultdict(list)
    for row, text in zip(rows, generations):
        per[_name_of(row)].append(float(is_correct(row, text, scorer)))
    every = [x for v in per.values() for x in v]
    return {"exact_match": sum(every) / len(every), "per_component": _summaries(per)}


def evaluate_generation(model, tokenizer, rows: list[dict], template: str = "compact", max_new_tokens: int = 16,
                        batch_size: int = 32, scorer: str = "exact") -> dict:
    """Generate greedily and score: exact match overall and per component, plus the generations."""
    generations = generate(model, tokenizer, rows, template, max_new_tokens, batch_size)
    return {**exact_match(rows, generations, scorer), "generations": generations}


def mmlu_prompt(row: dict, shots: list[dict] = ()) -> str:
    """The usual MMLU prompt: optional solved examples, then the question and 'Answer:'."""
    subject = row.get("subject", "").replace("_", " ")
    head = f"The following are multiple choice questions (with answers) about {subject}.\n\n" if subject else ""
    body = "".join(f"{s['instruction']}\nAnswer: {s['answer']}\n\n" for s in shots)
    return head + body + f"{row['instruction']}\nAnswer:"


@torch.no_grad()
def multiple_choice_accuracy(model, tokenizer, rows: list[dict], shots: dict[str, list[dict]] | None = None,
                             k_shot: int = 0, template: str | None = None) -> dict:
    """MMLU-style scoring: the letter among A-D whose token is likeliest after the prompt.

    shots: subject -> solved dev rows (the first k_shot are used as examples). template: None for the
    usual MMLU prompt ("... Answer:", then " A"); a training template's name to ask the way an adapter
    was trained (its prompt, then the bare letter), which then takes no shots."""
    if template is not None and k_shot:
        raise ValueError(f"k_shot={k_shot} needs template=None: a training template's prompt holds one question")
    model.eval()
    device = next(model.parameters()).device
    space = "" if template is not None else " "
    encoded = [tokenizer.encode(space + letter, add_special_tokens=False) for letter in MMLU_LETTERS]
    prefix = encoded[0][:-1]  # e.g. a space token for byte-level tokenizers, fed as part of the prompt
    if any(e[:-1] != prefix for e in encoded):
        raise ValueError(f"the tokenizer encodes the answer letters inconsistently: {encoded}")
    letter_ids = [e[-1] for e in encoded]
    per = defaultdict(list)
    for row in rows:
        examples = (shots or {}).get(row.get("subject"), [])[:k_shot]
        prompt = mmlu_prompt(row, examples) if template is None else format_prompt(row, template)
        ids = tokenizer.encode(prompt, add_special_tokens=False) + prefix
        if tokenizer.bos_token_id is not None:
            ids = [tokenizer.bos_token_id] + ids
        with batch_routing(model, torch.tensor([routing_fields(row)["route"]]), torch.ones(1, len(ids))):
            logits = model(input_ids=torch.tensor([ids], device=device)).logits[0, -1]
        choice = MMLU_LETTERS[int(logits[letter_ids].argmax())]
        per[row.get("subject", _name_of(row))].append(float(choice == row["answer"]))
    every = [x for v in per.values() for x in v]
    return {"accuracy": sum(every) / len(every), "per_subject": _summaries(per)}


def humaneval_pass_at_1(problems: list[dict], completions: list[str], allow_execution: bool = False,
                        timeout: float = 5.0) -> dict:
    """Fraction of problems whose completion passes its tests (one sample each: pass@1).

    Runs model-written code, so it refuses unless allow_execution=True; each program then runs in its
    own Python process and session (isolated mode, an empty temporary working folder, 2 GiB of memory,
    10 MiB files), and it and everything it started are killed after `timeout` seconds. This limits
    accidents, it is not a security boundary: run untrusted models' code in a container."""
    if not allow_execution:
        raise PermissionError("humaneval_pass_at_1 executes generated code; pass allow_execution=True to opt in")
    if len(problems) != len(completions):
        raise ValueError(f"{len(problems)} problems but {len(completions)} completions")
    results = {}
    for problem, completion in zip(problems, completions):
        program = (problem["prompt"] + completion + "\n\n" + problem["test"] + "\n\n"
                   + f"check({problem['entry_point']})\n")
        results[problem["task_id"]] = _run_sandboxed(program, timeout)
    return {"pass_at_1": sum(results.values()) / len(results), "passed": results}


def _limit_resources() -> None:
    """In the child, before exec: cap memory, CPU time and file sizes."""
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
    resource.setrlimit(resource.RLIMIT_CPU, (30, 30))
    resource.setrlimit(resource.RLIMIT_FSIZE, (10 << 20, 10 << 20))


def _run_sandboxed(program: str, timeout: float) -> bool:
    """Run in a new session (so a timeout kills every process it started), in an empty folder, with limits."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "program.py"
        path.write_text(program)
        process = subprocess.Popen([sys.executable, "-I", str(path)], cwd=folder, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                                   preexec_fn=_limit_resources)
        try:
            return process.wait(timeout=timeout) == 0
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return False
