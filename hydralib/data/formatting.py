"""The one formatting path: prompt template, response-only labels, truncation, padding, collation.

Every method and notebook turns rows (instruction, input, output, component) into tensors here.
"""
from __future__ import annotations

import torch

TEMPLATES = {
    # Short rows for byte-level tiny models: "?A abcde=" then the answer.
    "compact": "{instruction} {input}=",
    # Instruction-following format for real data (Alpaca-style, as the paper's training scripts).
    "alpaca": "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n",
    "alpaca_no_input": "### Instruction:\n{instruction}\n\n### Response:\n",
}
IGNORE_INDEX = -100


def format_prompt(row: dict, template: str = "compact") -> str:
    """The prompt text for a row; 'alpaca' drops the input section when the input is empty."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; allowed: {', '.join(TEMPLATES)}")
    if template == "alpaca" and not row.get("input"):
        template = "alpaca_no_input"
    return TEMPLATES[template].format(instruction=row["instruction"], input=row.get("input", ""))


def encode_row(row: dict, tokenizer, template: str = "compact", max_length: int = 128) -> dict:
    """Token ids of bos + prompt + response + eos, with labels only on the response and eos.

    Truncation cuts the prompt from the left first (the end of a prompt is what the answer follows),
    then the response from the right."""
    prompt = tokenizer.encode(format_prompt(row, template), add_special_tokens=False)
    response = tokenizer.encode(row["output"], add_special_tokens=False) + [tokenizer.eos_token_id]
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    room_for_prompt = max(0, max_length - len(bos) - len(response))
    prompt = prompt[len(prompt) - min(len(prompt), room_for_prompt):]
    ids = (bos + prompt + response)[:max_length]
    labels = ([IGNORE_INDEX] * (len(bos) + len(prompt)) + response)[:max_length]
    return {"input_ids": ids, "labels": labels, **routing_fields(row)}


def routing_fields(row: dict) -> dict:
    """component: what a sample is (for per-component scores); route: the head a task or cluster gate
    sends it to (the component unless the row carries another route, e.g. its k-means cluster)."""
    component = int(row.get("component", 0))
    return {"component": component, "route": int(row.get("route", component))}


def encode_prompt(row: dict, tokenizer, template: str = "compact", max_length: int = 128) -> list[int]:
    """bos + prompt, for generation (left-truncated to max_length)."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    prompt = tokenizer.encode(format_prompt(row, template), add_special_tokens=False)
    return bos + prompt[-(max_length - len(bos)):]


def collate(examples: list[dict], pad_token_id: int, padding_side: str = "right") -> dict:
    """Pad encoded rows to the longest: input_ids, attention_mask, labels (pad = -100), component, route."""
    width = max(len(e["input_ids"]) for e in examples)
    ids, mask, labels = [], [], []
    for e in examples:
        n, pad = len(e["input_ids"]), width - len(e["input_ids"])
        row_labels = e.get("labels", [IGNORE_INDEX] * n)
        if padding_side == "right":
            ids.append(e["input_ids"] + [pad_token_id] * pad)
            mask.append([1] * n + [0] * pad)
            labels.append(row_labels + [IGNORE_INDEX] * pad)
        else:
            ids.append([pad_token_id] * pad + e["input_ids"])
            mask.append([0] * pad + [1] * n)
            labels.append([IGNORE_INDEX] * pad + row_labels)
    return {
        "input_ids": torch.tensor(ids, dtype=torch.long),
        "attention_mask": torch.tensor(mask, dtype=torch.long),
        "labels": torch.tensor(labels, dtype=torch.long),
        "component": torch.tensor([e.get("component", 0) for e in examples], dtype=torch.long),
        "route": torch.tensor([e.get("route", e.get("component", 0)) for e in examples], dtype=torch.long),
    }


def length_batches(examples: list[dict], size: int, pad_token_id: int, padding_side: str = "right"):
    """(indices, collated batch) for batches of up to `size` encoded rows, rows of similar length together, so a
    batch pads little; a row's own result does not depend on its batch (padding is masked), so callers put
    results back by index."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    for start in range(0, len(order), size):
        indices = order[start:start + size]
        yield indices, collate([examples[i] for i in indices], pad_token_id, padding_side)


def prompt_mask(batch: dict) -> torch.Tensor:
    """1 on the real tokens before the response: what a sequence-level router may look at."""
    return batch["attention_mask"] * (batch["labels"] == IGNORE_INDEX)
