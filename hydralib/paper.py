"""The paper's reported numbers (Tian et al., HydraLoRA, NeurIPS 2024, LLaMA-2-7B), for display beside ours.

Transcribed from its Tables 1 and 2 and Figure 6; never a result of this library. Every table
that shows them says "the paper's"."""
from __future__ import annotations

SOURCE = "Tian et al. 2024 (arXiv 2404.19245), LLaMA-2-7B"

# Table 1: Dolly-15k -> MMLU; (scheme, r, n) -> (MMLU accuracy %, % params). Table 1 writes LoRA-Split as
# "r x n" (rank x number of pairs), Table 2 as "n x r" (its "LoRA-Split 4x8" is 4 pairs of rank 8): see SPLIT_NOTATION.
TABLE1 = {
    ("lora", 8, 1): (43.22, 0.062),
    ("lora", 16, 1): (45.45, 0.124),
    ("lora", 32, 1): (46.59, 0.248),
    ("split", 16, 2): (46.82, 0.248),
    ("split", 8, 4): (46.94, 0.248),
    ("split", 4, 8): (46.83, 0.248),
}

# Table 2 (single domain): method -> (MMLU, Medical, Law, GSM8K, % params)
TABLE2_COLUMNS = ("MMLU", "Medical", "Law", "GSM8K", "% params")
TABLE2 = {
    "LLaMA-2-7B (base)": (38.88, 35.98, 33.51, 10.38, None),
    "Full fine-tuning": (49.91, 46.78, 46.08, 25.70, 100.0),
    "LoRA r8": (43.22, 41.59, 37.85, 18.24, 0.062),
    "LoRA r16": (45.45, 43.10, 39.64, 20.32, 0.124),
    "LoRA r32": (46.59, 44.32, 40.81, 20.67, 0.248),
    "LoRA-Split 4x8": (46.94, 45.28, 41.35, 21.92, 0.248),
    "HydraLoRA r8": (47.22, 45.71, 42.18, 22.27, 0.124),
}

# Figure 6 (ablations): variant -> (MMLU, Medical, Law)
FIGURE6 = {
    "HydraLoRA": (47.22, 45.71, 42.18),
    "w/o MoE (= LoRA r8)": (43.22, 41.59, 37.85),
    "w/o Hydra (Split)": (46.94, 45.28, 41.35),
    "w/o gate (uniform)": (42.81, 40.92, 37.12),
}

# Figure 5 (LLaMA-2-7B fine-tuned on GSM8K, 4x A40, CodeCarbon), as its text states it
FIGURE5 = {
    "source": "Tian et al. 2024 (arXiv 2404.19245), Figure 5: LLaMA-2-7B, GSM8K fine-tuning",
    "hydra_speedup_over_lora_r32": 1.96,
    "hydra_energy_saving_over_lora_r32": 0.496,
    "split_over_lora_r32": "above 1",
    "hydra_over_lora_r16": "about 1",
}


SPLIT_NOTATION = ("The paper writes LoRA-Split as r x n (rank x number of LoRA pairs) in Table 1 and as n x r in "
                  "Table 2 (its \"LoRA-Split 4x8\" is 4 pairs of rank 8); we write n x r (pairs x rank) everywhere, so "
                  "our Split 4x8 is Table 2's LoRA-Split 4x8 and Table 1's \"8 x 4\" row.")


def our_label(scheme: str, r: int, n: int) -> str:
    """Our name of a Table 1 row (scheme, r, n): 'LoRA r8', or 'Split nxr' (pairs x rank, Table 2's order)."""
    if scheme not in ("lora", "split"):
        raise ValueError(f"scheme must be 'lora' or 'split', got {scheme!r}")
    return f"LoRA r{r}" if scheme == "lora" else f"Split {n}x{r}"


def table1_split(heads: int, r: int) -> tuple[float, float] | None:
    """Table 1's (MMLU %, % params) for our Split heads x r (heads pairs of rank r: Table 1's "r x heads" row);
    None where Table 1 has no such row."""
    return TABLE1.get(("split", r, heads))


def table1_markdown() -> str:
    lines = [f"The paper's Table 1 ({SOURCE}; Dolly-15k -> MMLU). {SPLIT_NOTATION}", "",
             "| scheme | r x n (Table 1's order) | ours (pairs x rank) | MMLU (paper) | % params (paper) |",
             "|---|---|---|---|---|"]
    for (scheme, r, n), (mmlu, percent) in TABLE1.items():
        name = "LoRA" if scheme == "lora" else "LoRA-Split"
        lines.append(f"| {name} | {r} x {n} | {our_label(scheme, r, n)} | {mmlu:.2f} | {percent:.3f} |")
    return "\n".join(lines) + "\n"


def table2_markdown() -> str:
    lines = [f"The paper's Table 2 ({SOURCE})", "", "| method (paper) | " + " | ".join(TABLE2_COLUMNS) + " |",
             "|---" * (len(TABLE2_COLUMNS) + 1) + "|"]
    for method, values in TABLE2.items():
        cells = ["-" if v is None else f"{v:g}" for v in values]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# Others' replications of the headline (Dolly-15k -> MMLU, LLaMA-2-7B), as they reported them: never ours. Each
# with its shots, adapted modules and harness as far as the report says ("not stated" where it does not), so a
# reader sees how much of the spread is protocol. Sources: the paper; mtLoRA (ICLR 2026); users of the official
# repository (its GitHub issues #10, #17, #26, #35, #38, as summarised in the project's design notes).
REPLICATIONS = [
    {"who": "the paper (Tian et al. 2024)", "method": "HydraLoRA r8", "mmlu": 47.22, "shots": "0",
     "targets": "FFN (gate/up/down_proj)", "harness": "not stated", "base_mmlu": 38.88},
    {"who": "mtLoRA (ICLR 2026) re-run", "method": "HydraLoRA", "mmlu": 42.4, "shots": "5",
     "targets": "W_q, W_v", "harness": "not stated", "base_mmlu": None},
    {"who": "mtLoRA (ICLR 2026) re-run, Flan-v2 -> BBH", "method": "HydraLoRA", "mmlu": None, "bbh": 36.9,
     "shots": "not stated", "targets": "W_q, W_v", "harness": "not stated", "base_mmlu": None},
    {"who": "official-code users (issues)", "method": "HydraLoRA", "mmlu": 40.12, "shots": "not stated",
     "targets": "FFN (official scripts)", "harness": "not stated", "base_mmlu": None},
    {"who": "official-code users (issues)", "method": "HydraLoRA", "mmlu": 41.5, "shots": "not stated", "approximate": True,
     "targets": "FFN (official scripts)", "harness": "not stated", "base_mmlu": None},
    {"who": "official-code users (issues)", "method": "LoRA r8", "mmlu": 42.0, "shots": "not stated", "approximate": True,
     "targets": "FFN (official scripts)", "harness": "not stated", "base_mmlu": None},
    {"who": "official-code users (issues)", "method": "LoRA r16", "mmlu": 43.0, "shots": "not stated", "approximate": True,
     "targets": "FFN (official scripts)", "harness": "not stated", "base_mmlu": None},
    {"who": "one official-code user (issues)", "method": "LLaMA-2-7B base", "mmlu": 38.89, "shots": "0",
     "targets": "-", "harness": "not stated", "base_mmlu": 38.89, "note": "the paper's text cites 45.3 for this base"},
]


def replications_markdown() -> str:
    """The paper's headline beside others' replications (their numbers, not ours), with their protocols."""
    lines = ["Others' replications of Dolly-15k -> MMLU on LLaMA-2-7B (their reported numbers, not ours; "
             "'~' approximate)", "",
             "| who | method | MMLU | shots | adapted modules | harness | base model's MMLU | note |",
             "|---|---|---|---|---|---|---|---|"]
    for row in REPLICATIONS:
        score = "-" if row.get("mmlu") is None else ("~" if row.get("approximate") else "") + f"{row['mmlu']:g}"
        if row.get("bbh") is not None:
            score += f" (BBH {row['bbh']:g})"
        base = "-" if row["base_mmlu"] is None else f"{row['base_mmlu']:g}"
        lines.append(f"| {row['who']} | {row['method']} | {score} | {row['shots']} | {row['targets']} | "
                     f"{row['harness']} | {base} | {row.get('note', '')} |")
    return "\n".join(lines) + "\n"
