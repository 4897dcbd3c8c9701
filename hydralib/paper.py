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


# The protocol of the headline (Dolly-15k -> MMLU), setting by setting: the paper, its official scripts, ours.
#
# "the paper": what its text, tables and figures state, as the project transcribed them (Tables 1-2, Figures 3 and 8,
# Appendix B); "not stated" where they say nothing. "the official scripts": github.com/Clin0212/HydraLoRA at commit
# afb693bc1238 (HydraLoRA/fine-tuning.sh, its 4-GPU twin fine-tuning_dp.sh, build_dataset.py, the vendored
# peft/peft/tuners/lora.py, and the README's evaluation with OpenCompass, whose configs/datasets/mmlu/mmlu_ppl_ac766d.py
# is 5-shot until the README's ZeroRetriever makes it zero-shot), with the maintainer's answers in its issues: #7 and
# #26 (targets gate/up/down_proj; Table 2's MMLU is zero-shot, as its title says), #13 (rank 8 for BBH), #17 (k-means
# only picks N), #31 (the balance loss is a constant zero). "ours": read from the parameters notebook 08 runs with
# (protocol_markdown's argument), and for what the notebook has no parameter for, from FIXED_IN_CODE.

DOLLY_ROWS = 15_011  # databricks-dolly-15k's rows
DOLLY_CATEGORIES = 8
# hydralib.data.real cuts Dolly once: every 4th row is a test row, the other 3 of every 4 the training pool
DOLLY_TRAINING_POOL = DOLLY_ROWS - DOLLY_ROWS // 4

# What notebook 08 has no parameter for, as the code fixes it. paper sits below train, methods and specs (it imports
# none of them), so these are written here and tests/test_paper.py checks each against hydralib.train.TrainConfig's
# defaults, hydralib.specs.real_spec's template and the adapters hydralib.methods.lane_methods builds.
FIXED_IN_CODE = {"alpha_per_rank": 2, "dropout": 0.0, "template": "alpaca", "optimizer": "AdamW",
                 "weight_decay": 0.0, "max_grad_norm": 1.0, "warmup_ratio": 0.03, "lr_floor": 0.0,
                 "balance_weight": 0.0, "router_level": "token", "router_input": "x", "router_init": "kaiming"}

# The parameters of notebook 08 that protocol_markdown reads (its names there).
PROTOCOL_PARAMETERS = ("model", "model_options", "sources", "eval_sources", "n_train", "n_val", "n_test", "seeds",
                       "steps", "batch_size", "grad_accum", "length_quantile", "max_length", "lr", "r", "heads",
                       "wide_rank", "targets", "mmlu_shots", "mixed_precision")

PAPER_MODEL = "meta-llama/Llama-2-7b-hf"
OFFICIAL_TARGETS = ("gate_proj", "up_proj", "down_proj")
OFFICIAL_LR = 2e-4
OFFICIAL_BATCH = 8
OFFICIAL_MAX_LENGTH = 1024
OFFICIAL_HEADS = 4


def training_rows(params: dict) -> int | None:
    """Rows a run of notebook 08 trains on when its only source is Dolly (before rows longer than max_length are
    left out): n_train drawn from the training pool, less the n_val validation rows; None for other sources."""
    if list(params["sources"]) != ["dolly"]:
        return None
    return min(params["n_train"] + params["n_val"], DOLLY_TRAINING_POOL) - params["n_val"]


def one_epoch_steps(params: dict) -> int | None:
    """Optimizer steps of one pass over training_rows(params) at params["batch_size"] rows a step (the last one
    partial); None where training_rows is."""
    rows = training_rows(params)
    return None if rows is None else -(-rows // params["batch_size"])


def _mmlu_count(params):
    n_test = params["n_test"]
    return n_test.get("mmlu") if isinstance(n_test, dict) else n_test


def _mmlu_test(params):
    if "mmlu" not in list(params["sources"]) + list(params["eval_sources"]):
        return "no MMLU in this run", False
    count = _mmlu_count(params)
    if count == "all":
        return "the whole test split (57 subjects)", True
    return f"{count} test questions, drawn with the seed", False


def _mmlu_test_why(params):
    count = _mmlu_count(params)
    if count == "all":
        return "follows the official scripts"
    if not isinstance(count, int):
        return "no MMLU in this run"
    # the widest 95% interval of an accuracy measured on `count` questions (at 50%), normal approximation
    half_width = 1.96 * (0.25 / count) ** 0.5
    return (f"a sample, to save device time: at {count} questions a 95% interval is up to +-{100 * half_width:.1f} "
            "points, wider than the paper's gaps; n_test: {dolly: 200, mmlu: all} follows")


def _mmlu_shots(params):
    k = params["mmlu_shots"]
    extra = f"; also {k}-shot (an extra row, see the next setting)" if k else ""
    return "zero-shot, always" + extra, True


def _mmlu_shots_why(params):
    if not params["mmlu_shots"]:
        return "follows both"
    return (f"the zero-shot row is the one set beside the paper's; {params['mmlu_shots']}-shot is extra (mtLoRA's "
            "re-run, 42.4, was 5-shot), never shown as the paper's protocol")


def _mmlu_scoring(params):
    return ("zero-shot: the likeliest answer letter after the training template (question and options as its "
            "instruction), read from the test-loss pass; k-shot: the usual MMLU prompt (subject line, k dev "
            "examples, 'Answer:') and the likeliest letter"), False


def _targets(params):
    targets = params["targets"]
    text = targets if isinstance(targets, str) else ", ".join(targets)
    return text, not isinstance(targets, str) and set(targets) == set(OFFICIAL_TARGETS)


def _rank(params):
    wide = f"; LoRA r{params['wide_rank']} beside it" if params["wide_rank"] else ""
    return f"r={params['r']}{wide}", params["r"] == 8


def _alpha(params):
    per = FIXED_IN_CODE["alpha_per_rank"]
    ranks = [params["r"]] + ([params["wide_rank"]] if params["wide_rank"] else [])
    return ", ".join(f"{per * r:g} at r{r}" for r in ranks) + f" (alpha = {per}r: scale {per:g} at every rank)", False


def _dropout(params):
    dropout = FIXED_IN_CODE["dropout"]
    return ("none" if dropout == 0 else f"{dropout:g}"), False


def _heads(params):
    heads = params["heads"]
    if heads:
        return f"N={heads}", heads == OFFICIAL_HEADS
    return "one per training component (heads 0)", False


def _lr(params):
    return f"{params['lr']:g}", params["lr"] == OFFICIAL_LR


def _schedule(params):
    f = FIXED_IN_CODE
    text = (f"cosine to {f['lr_floor']:g} x lr, linear warm-up over {f['warmup_ratio']:g} of the steps, weight decay "
            f"{f['weight_decay']:g}")
    return text, f["lr_floor"] == 0 and f["warmup_ratio"] == 0.03 and f["weight_decay"] == 0


def _optimizer(params):
    f = FIXED_IN_CODE
    return f"{f['optimizer']}, gradient norm clipped at {f['max_grad_norm']:g}", f["max_grad_norm"] == 1.0


def _epochs(params):
    steps, batch, rows = params["steps"], params["batch_size"], training_rows(params)
    text = f"{steps} steps of {batch} rows ({steps * batch:,} rows)"
    if rows is None:
        return text, False
    return (f"{text}: {steps * batch / rows:.2f} epochs of the {rows:,} training rows (fewer, by the rows longer than "
            "max_length)"), steps == one_epoch_steps(params)


def _batch(params):
    batch, accumulation = params["batch_size"], params["grad_accum"]
    micro = f" ({accumulation} micro-batches of {batch // accumulation})" if accumulation > 1 else ""
    return f"{batch} rows a step{micro}", batch == OFFICIAL_BATCH


def _max_length(params):
    length = params["max_length"]
    if length is None:
        return (f"chosen from the data (the {params['length_quantile']:g} quantile of the training rows' lengths); "
                "longer rows left out of training, counted"), False
    return f"{length} tokens; longer rows left out of training, counted", False


def _max_length_why(params):
    cut = ("rows longer are left out and counted (notebook 08, section 2), not cut: a cut row trains an answer with "
           "its end missing")
    if params["max_length"] == OFFICIAL_MAX_LENGTH:
        return "the same length; " + cut
    return f"set max_length: {OFFICIAL_MAX_LENGTH} to follow the length; " + cut


def _template(params):
    return f"the {FIXED_IN_CODE['template']} template (### Instruction, ### Input, ### Response)", False


def _precision(params):
    dtype = (params["model_options"] or {}).get("dtype", "the checkpoint's")
    mode = params["mixed_precision"]
    words = "bf16 on a GPU that has it" if mode == "auto" else mode
    return f"weights {dtype}; mixed precision {mode} ({words})", dtype == "bfloat16" and mode in ("auto", "bf16")


def _router(params):
    f = FIXED_IN_CODE
    return (f"per-{f['router_level']} softmax router on {f['router_input']}, {f['router_init']} init (the lane's "
            "token-router method); beside it our cluster gate (k-means on the prompts, k = N)"), \
        (f["router_level"], f["router_input"], f["router_init"]) == ("token", "x", "kaiming")


def _balance(params):
    weight = FIXED_IN_CODE["balance_weight"]
    return ("none (balance_weight 0)" if weight == 0 else f"balance_weight {weight:g}"), weight == 0


def _model(params):
    return params["model"], params["model"] == PAPER_MODEL


def _data(params):
    sources, rows = params["sources"], training_rows(params)
    text = f"trained on {', '.join(sources)}; tested on its test rows and {', '.join(params['eval_sources']) or '-'}"
    if rows is not None:
        text += (f"; {rows:,} training rows: the 3 of every 4 Dolly rows that are not test rows, less {params['n_val']}"
                 " validation rows")
    return text, False


def _seeds(params):
    return f"seeds {', '.join(map(str, params['seeds']))}", False


PROTOCOL = [
    {"setting": "base model", "paper": "LLaMA-2-7B (Tables 1-2)",
     "official": "a LLaMA checkpoint (path_to_llama_model: left to the user)", "ours": _model, "follows": "the paper",
     "why": "set model: meta-llama/Llama-2-7b-hf to follow"},
    {"setting": "training data", "paper": "Dolly-15k (Table 1; how it was split: not stated)",
     "official": "every .json file of dataset_dir (the repository's sample: a summarisation set whose train.json "
                 "equals test.json); Dolly-15k is linked from issue #1",
     "ours": _data,
     "why": "a quarter of Dolly is held out (hydralib.data.real: every 4th row) so that each category's test loss "
            "and the routing of unseen prompts can be scored"},
    {"setting": "MMLU questions scored", "paper": "MMLU (Table 2; how many questions: not stated)",
     "official": "OpenCompass mmlu_ppl_ac766d: the test split of all 57 subjects", "ours": _mmlu_test,
     "why": _mmlu_test_why},
    {"setting": "MMLU shots", "paper": "zero-shot (Table 2's title; the maintainer in issues #16, #26)",
     "official": "zero-shot: the README swaps mmlu_ppl_ac766d's 5 fixed dev examples for ZeroRetriever",
     "ours": _mmlu_shots, "why": _mmlu_shots_why},
    {"setting": "MMLU scoring", "paper": "not stated",
     "official": "OpenCompass perplexity of each completion: 'The following are multiple choice questions (with "
                 "answers) about <subject>.', the question, options A-D, 'Answer: <letter>'; the likeliest wins",
     "ours": _mmlu_scoring,
     "why": "zero-shot asks the way the adapters were trained; notebook 08 has no parameter for the prompt. The "
            "prompts of the four options differ in the letter only, so ranking them by the letter's probability "
            "ranks them as their perplexities do"},
    {"setting": "adapted modules", "paper": "not stated (its % params fit r8 on q_proj and v_proj; Figure 3 analyses "
                                            "q_proj and v_proj)",
     "official": "gate_proj, up_proj, down_proj (issues #7, #26)", "ours": _targets,
     "why": "set targets: [gate_proj, up_proj, down_proj] to follow the official scripts"},
    {"setting": "rank r", "paper": "8 (Tables 1-2; LoRA r16 and r32 as baselines)",
     "official": "4 in the scripts; 8 for BBH (issue #13)", "ours": _rank, "follows": "the paper",
     "why": "set r: 8 to follow the paper"},
    {"setting": "alpha", "paper": "not stated", "official": "32 at every rank (scale alpha / r: 8 at r4, 4 at r8)",
     "ours": _alpha,
     "why": "one scale at every rank (hydralib.methods.adapter_config), so that r8 and r32 compare at one lr (with "
            "alpha 32, r32 takes a step 4 times smaller than r8); at r8 our scale is half the official's. Notebook 08 "
            "has no alpha parameter"},
    {"setting": "dropout", "paper": "not stated",
     "official": "0.05 on the adapter input, drawn afresh for each B head (called inside the heads' loop)",
     "ours": _dropout,
     "why": "hydralib.methods.lane_methods sets none and notebook 08 has no dropout parameter (AdapterConfig has "
            "dropout and head_dropout, the official per-head mask)"},
    {"setting": "heads N", "paper": "from k-means on TF-IDF vectors, the SSE curve's elbow (Appendix B); Table 2's "
                                    "HydraLoRA: 3 B on average; Figure 8: MMLU best at k=4",
     "official": "lora_b_nums=4 ('Developer-specific, k-means, or DBSCAN'; k-means only picks N, issue #17)",
     "ours": _heads,
     "why": "one head per Dolly category (8), so that the cluster gate's k-means (k = N) is scored against the "
            "categories; heads: 4 follows the official script"},
    {"setting": "learning rate", "paper": "not stated", "official": "2e-4", "ours": _lr,
     "why": "set lr: 2e-4 to follow"},
    {"setting": "schedule and warm-up", "paper": "not stated",
     "official": "cosine to 0, linear warm-up over 0.03 of the steps, weight decay 0", "ours": _schedule,
     "why": "hydralib.train.TrainConfig's defaults (notebook 08 has no parameter for them) differ"},
    {"setting": "optimizer", "paper": "not stated",
     "official": "the transformers Trainer's AdamW, gradient norm clipped at 1", "ours": _optimizer,
     "why": "hydralib.train.TrainConfig's max_grad_norm differs"},
    {"setting": "epochs / steps", "paper": "not stated", "official": "1 epoch", "ours": _epochs,
     "why": "set steps to hydralib.paper.one_epoch_steps of the parameters to follow"},
    {"setting": "effective batch", "paper": "not stated",
     "official": "8: 1 row a device x 8 accumulated (fine-tuning.sh, one GPU); 32 with fine-tuning_dp.sh's 4 GPUs",
     "ours": _batch, "why": "set batch_size: 8 to follow the one-GPU script"},
    {"setting": "max length", "paper": "not stated",
     "official": "1024 tokens; longer rows cut at 1024", "ours": _max_length, "why": _max_length_why},
    {"setting": "prompt format", "paper": "not stated",
     "official": "instruction, a newline and the context, then the end-of-sequence token; the response and that "
                 "token again (build_dataset.py)",
     "ours": _template,
     "why": "notebook 08 trains every source in one template and has no parameter for it"},
    {"setting": "precision", "paper": "not stated", "official": "bf16 (weights bfloat16, --bf16)", "ours": _precision,
     "why": "set model_options: {dtype: bfloat16} and mixed_precision: auto to follow"},
    {"setting": "router", "paper": "a trainable softmax router over the B heads (its Eq. reads Ax)",
     "official": "per-token softmax router on the layer input x, a linear layer without bias, kaiming init",
     "ours": _router, "why": "hydralib.methods.lane_methods' token router differs from the official code's"},
    {"setting": "balance loss", "paper": "not stated",
     "official": "none in effect: the layer returns a constant zero (issue #31)", "ours": _balance,
     "why": "hydralib.train.TrainConfig's balance_weight differs"},
    {"setting": "seeds", "paper": "not stated (Figure 3: seed 42)", "official": "41, one run", "ours": _seeds,
     "why": "a seed drives our own data draw and initialisation: the number 41 would not reproduce the official run"},
]


def protocol_markdown(profile_params: dict) -> str:
    """The protocol of Dolly-15k -> MMLU side by side: the paper's, its official scripts', and ours read from
    `profile_params` (notebook 08's parameter values, at least the names of PROTOCOL_PARAMETERS; missing ones are
    refused by name), with why ours differs where it does ("follows ..." where it does not)."""
    missing = [name for name in PROTOCOL_PARAMETERS if name not in profile_params]
    if missing:
        raise ValueError(f"protocol_markdown needs notebook 08's parameters {', '.join(PROTOCOL_PARAMETERS)}; "
                         f"missing: {', '.join(missing)}")
    lines = [f"The protocol of Dolly-15k -> MMLU: the paper ({SOURCE}), its official scripts "
             "(github.com/Clin0212/HydraLoRA) and this run's parameters", "",
             "| setting | the paper | the official scripts | ours | where ours differs, why |", "|---|---|---|---|---|"]
    for row in PROTOCOL:
        ours, follows = row["ours"](profile_params)
        if callable(row["why"]):
            why = row["why"](profile_params)
        else:
            why = f"follows {row.get('follows', 'the official scripts')}" if follows else row["why"]
        lines.append(f"| {row['setting']} | {row['paper']} | {row['official']} | {ours} | {why} |")
    return "\n".join(lines) + "\n"
