"""The real-data lane: a mixture of real sets as run data, how a run on it is scored, and the
paper-scale shape check.

A real-data run's data spec (see runs.build_data):

    {"kind": "real", "sources": ["gsm8k", "mmlu", "humaneval"], "eval_sources": [],
     "n_train": 64, "n_test": 16, "seed": 0, "download": False}

Each source is one component of the mixture (its own labels, e.g. the MMLU subject, move to
subcomponent). n_train and n_test are rows per source (fewer when a source has fewer). Training rows
and test rows never overlap: GSM8K trains on its train split and tests on its test split, MMLU trains
on dev + val and tests on test, HumanEval and Dolly are cut once into fixed train and test parts.
eval_sources are tested on only (the paper's general-domain setting: train on Dolly, test on MMLU). A
single source keeps its own components (Dolly's eight categories). download=True lets a loader fetch
a missing set from the hub with `datasets`; tests and CI never do.
"""
from __future__ import annotations

import random

from .checks import check_choice, check_int
from .data.sources import load_dolly, load_gsm8k, load_humaneval, load_mmlu, mix_sources

SOURCES = ("gsm8k", "mmlu", "humaneval", "dolly")
DATA_KEYS = ("kind", "sources", "eval_sources", "n_train", "n_test", "seed", "download", "cluster_features")
# Rows of a source cut once into train and test parts: every TEST_EVERY-th row (by position) is a test row.
TEST_EVERY = 4

# LLaMA-2-7B's architecture (the public config of meta-llama/Llama-2-7b-hf), for the shape check.
LLAMA2_7B = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
             "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 4096,
             "rms_norm_eps": 1e-5}


def load_source(name: str, download: bool = False) -> tuple[list[dict], list[dict]]:
    """(training pool, test pool) of one source; each row gets "source" = name."""
    check_choice("source", name, SOURCES)
    if name == "gsm8k":
        train, test = load_gsm8k("train", download), load_gsm8k("test", download)
    elif name == "mmlu":
        train = load_mmlu("dev", download=download) + load_mmlu("val", download=download)
        test = load_mmlu("test", download=download)
    else:
        rows = load_humaneval() if name == "humaneval" else load_dolly(download=download)
        train = [r for i, r in enumerate(rows) if i % TEST_EVERY != TEST_EVERY - 1]
        test = [r for i, r in enumerate(rows) if i % TEST_EVERY == TEST_EVERY - 1]
    return [{**r, "source": name} for r in train], [{**r, "source": name} for r in test]


def missing_sources(sources, download: bool = False) -> dict[str, str]:
    """{source: why it cannot be loaded here} for the sources that cannot; empty when all can.

    With download=True a missing set is fetched (and kept) here; a failed download (no network, no hub)
    is reported as missing too, whatever error `datasets` raised."""
    missing = {}
    for name in sources:
        try:
            load_source(name, download)
        except FileNotFoundError as e:
            missing[name] = str(e)
        except Exception as e:  # only a download can fail otherwise, with the hub's or the network's error
            if not download:
                raise
            missing[name] = f"downloading it failed: {type(e).__name__}: {e}"
    return missing


def build_real_data(data: dict) -> dict:
    """{'train', 'test', 'components'} for a data spec of kind 'real' (see the module docstring)."""
    unknown = sorted(set(data) - set(DATA_KEYS))
    if unknown:
        raise ValueError(f"unknown keys {unknown} in a real-data spec; allowed: {', '.join(DATA_KEYS)}")
    for key in ("sources", "eval_sources"):
        if isinstance(data.get(key), str):
            raise ValueError(f"{key} must be a list of source names, got {key}={data[key]!r}; "
                             f"e.g. [{data[key]!r}]")
    sources, eval_sources = list(data.get("sources") or []), list(data.get("eval_sources") or [])
    if not sources:
        raise ValueError("a real-data spec needs at least one training source; allowed: " + ", ".join(SOURCES))
    overlap = sorted(set(sources) & set(eval_sources))
    if overlap:
        raise ValueError(f"sources {overlap} are both trained on and test-only (eval_sources); name each once")
    for key in ("n_train", "n_test"):
        if key not in data:
            raise ValueError(f"a real-data spec needs {key} (rows per source); it has {sorted(data)}")
        check_int(key, data[key], 1)
    seed = data.get("seed", 0)
    rng = random.Random(seed)
    train_pools, test_pools = {}, {}
    for name in sources + eval_sources:
        train, test = load_source(name, data.get("download", False))
        if name in sources:
            train_pools[name] = rng.sample(train, min(data["n_train"], len(train)))
        test_pools[name] = rng.sample(test, min(data["n_test"], len(test)))
    if len(sources) == 1:  # one training source: its own labels (e.g. Dolly's categories) are the components
        (name,) = sources
        components = sorted({r["component_name"] for r in train_pools[name] + test_pools[name]})
        renumber = {c: i for i, c in enumerate(components)}
        train = [{**r, "component": renumber[r["component_name"]]} for r in train_pools[name]]
        test = [{**r, "component": renumber[r["component_name"]]} for r in test_pools[name]]
    else:
        components = list(sources)
        train = mix_sources(train_pools, None, seed)
        test = mix_sources({name: test_pools[name] for name in sources}, None, seed)
    for name in eval_sources:  # test-only sources: one component each, numbered after the trained ones
        test += [{**r, "component": len(components), "component_name": name, "subcomponent": r["component"],
                  "subcomponent_name": r["component_name"]} for r in test_pools[name]]
        components.append(name)
    return {"train": train, "test": test, "components": components}


def evaluate_real(model, tokenizer, rows: list[dict], evaluation: dict, template: str, max_length: int) -> dict:
    """Scores of a model on real test rows: test_loss, the response loss overall (per token, so long answers
    weigh most) and per component, as evaluate_loss gives it; MMLU accuracy, zero-shot (the likeliest
    answer letter after the training template), on MMLU rows; GSM8K exact match of the
    final number, generated greedily up to evaluation["max_new_tokens"], on GSM8K rows; HumanEval pass@1
    only when evaluation["execute_code"] is true (it runs the generated code, sandboxed)."""
    from .evaluate import evaluate_loss, generate, humaneval_pass_at_1, is_correct, multiple_choice_accuracy
    batch_size = evaluation.get("batch_size", 8)
    loss = evaluate_loss(model, tokenizer, rows, template, max_length, batch_size=batch_size)
    scores = {"test_loss": loss}
    mmlu = [r for r in rows if r["source"] == "mmlu"]
    if mmlu:
        scores["mmlu_accuracy"] = multiple_choice_accuracy(model, tokenizer, mmlu, template=template)["accuracy"]
        scores["mmlu_n"] = len(mmlu)
    gsm8k = [r for r in rows if r["source"] == "gsm8k"]
    max_new_tokens = evaluation.get("max_new_tokens", 160)
    if gsm8k:
        texts = generate(model, tokenizer, gsm8k, template, max_new_tokens, batch_size, max_length)
        scores["gsm8k_exact_match"] = sum(is_correct(r, t, "gsm8k") for r, t in zip(gsm8k, texts)) / len(gsm8k)
        scores["gsm8k_n"] = len(gsm8k)
        scores["gsm8k_generations"] = texts
    code = [r for r in rows if r["source"] == "humaneval"]
    if code and evaluation.get("execute_code", False):
        texts = generate(model, tokenizer, code, template, max_new_tokens, batch_size, max_length)
        scores["pass_at_1"] = humaneval_pass_at_1(code, texts, allow_execution=True)["pass_at_1"]
        scores["humaneval_n"] = len(code)
    return scores


def shape_check(adapter_spec: dict, architecture: dict = LLAMA2_7B, batch: int = 2, length: int = 16) -> dict:
    """Build a LLaMA model of the given architecture on the meta device (no memory, no download), add the
    adapters, run one forward and backward pass; the logits' shape and the parameter counts.

    This is how the paper-scale profile (LLaMA-2-7B) is checked on a machine that cannot hold it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from .config import AdapterConfig
    from .inject import add_adapters, count_parameters, routing
    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**architecture))
        add_adapters(model, AdapterConfig.from_dict(adapter_spec))
    ids = torch.zeros(batch, length, dtype=torch.long, device="meta")
    with routing(model, task_ids=torch.zeros(batch, dtype=torch.long)):  # head 0, for task and cluster gates
        out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    count = count_parameters(model)
    grads = [p for p in model.parameters() if p.requires_grad]
    if any(p.grad is None for p in grads):
        raise RuntimeError("the backward pass left some trainable parameters without a gradient")
    return {"logits": tuple(out.logits.shape), "base": count.base, "trainable": count.trainable,
            "adapter": count.adapter, "router": count.router, "paper": count.paper,
            "paper_percent": 100 * count.paper / count.base, "trainable_tensors": len(grads)}


def lane_methods(r: int, heads: int, targets, lr: float) -> dict[str, dict]:
    """The lane's methods at equal scale (alpha = 2r), as run_methods takes them: LoRA r; Split heads x r
    with a learned gate; HydraLoRA r with `heads` heads under the official per-token router and under the
    cluster gate."""
    from .runs import adapter

    def method(kind, **options):
        return {"adapter": adapter(kind, r, targets=targets, **options), "lr": lr}
    return {f"LoRA r{r}": method("lora"),
            f"Split {heads}x{r} learned": method("split", heads=heads),
            f"Hydra r{r} N={heads} token router": method("hydra", heads=heads),
            f"Hydra r{r} N={heads} cluster gate": method("hydra", heads=heads, gate="cluster")}


def real_spec(adapter_spec: dict | None, seed: int, *, model: str, sources: list[str], n_train: int, n_test: int,
              steps: int, lr: float, eval_sources: list[str] = (), batch_size: int = 4, max_length: int = 192,
              template: str = "alpaca", device: str = "cpu", download: bool = False, model_options: dict | None = None,
              cluster_features: str = "sentence", max_new_tokens: int = 128, execute_code: bool = False,
              **train_options) -> dict:
    """The run spec of the real-data lane (the counterpart of runs.synthetic_spec): `model` (a built-in
    name, a transformers id or a path) adapted on a mixture of real sets. One seed drives the rows drawn,
    the adapter init and the batch order."""
    return {"model": {"name": model, **(model_options or {})},
            "data": {"kind": "real", "sources": list(sources), "eval_sources": list(eval_sources), "n_train": n_train,
                     "n_test": n_test, "seed": seed, "download": download, "cluster_features": cluster_features},
            "adapter": adapter_spec,
            "train": {"steps": steps, "batch_size": batch_size, "seed": seed, "device": device, "lr": lr,
                      "max_length": max_length, "template": template, **train_options},
            "eval": {"max_new_tokens": max_new_tokens, "execute_code": execute_code}}


def evaluate_base(spec: dict) -> dict:
    """The scores of a spec's model as it is, before any adaptation, on the test rows its runs are scored on."""
    from .efficiency import resolve_device
    from .runs import build_data, eval_rows, load_spec_model, normalise_spec, score_rows
    spec = normalise_spec(spec)
    model, tokenizer = load_spec_model(spec["model"])
    model.to(resolve_device(spec["train"]["device"]))  # where training would put it: a GPU for "auto" if there is one
    return score_rows(model, tokenizer, eval_rows(build_data(spec["data"]), spec), spec)


SCORES = (("mmlu_accuracy", "MMLU accuracy"), ("gsm8k_exact_match", "GSM8K exact match"), ("pass_at_1", "HumanEval pass@1"))


def mean_component_loss(result: dict) -> float:
    """The test loss averaged over components (each source counts once, however long its answers)."""
    per = result["test_loss"]["per_component"]
    return sum(v["loss"] for v in per.values()) / len(per)


def lane_summary(base: list[dict], results: dict[str, list[dict]]) -> dict[str, dict]:
    """{row name: {score: (mean, sd over seeds)}} for the base model (scored on each seed's test rows) and
    each method: the mean of the component losses, the loss per component, the task scores present, and for
    the methods trainable parameters and training seconds."""
    from .claims import mean_and_spread

    def summarise(runs):
        out = {"mean component loss": mean_and_spread([mean_component_loss(r) for r in runs])}
        for component in runs[0]["test_loss"]["per_component"]:
            out[f"loss {component}"] = mean_and_spread([r["test_loss"]["per_component"][component]["loss"]
                                                        for r in runs])
        for key, label in SCORES:
            if key in runs[0]:
                out[label] = mean_and_spread([r[key] for r in runs])
        return out
    summary = {"base model": summarise(base)}
    for name, runs in results.items():
        summary[name] = {**summarise(runs), "train seconds": mean_and_spread([r["train_seconds"] for r in runs]),
                         "trainable": runs[0]["parameters"]["trainable"],
                         "paper % of base": 100 * runs[0]["parameters"]["paper"] / runs[0]["parameters"]["base"]}
    return summary


def lane_table(summary: dict[str, dict]) -> str:
    """The summary as a markdown table: one row per model, mean ± sd where there are several seeds."""
    columns = list(dict.fromkeys(key for row in summary.values() for key in row))

    def cell(value):
        if value is None:
            return ""
        if isinstance(value, tuple):
            mean, sd = value
            return f"{mean:.3f} ± {sd:.3f}" if sd else f"{mean:.3f}"
        return f"{value:,}" if isinstance(value, int) else f"{value:.3f}"
    lines = ["| model | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(cell(row.get(c)) for c in columns) + " |" for name, row in summary.items()]
    return "\n".join(lines) + "\n"


def plot_component_losses(summary: dict[str, dict], components: list[str], title: str, path=None):
    """Grouped bars: each model's test loss (a lane_summary row) on each component, with its spread over
    seeds; saved to path if given. Returns the figure."""
    import matplotlib.pyplot as plt
    import numpy as np
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    width = 0.8 / len(summary)
    for i, (name, row) in enumerate(summary.items()):
        means, spreads = zip(*(row[f"loss {c}"] for c in components))
        ax.bar(np.arange(len(components)) + i * width, means, width, yerr=spreads, capsize=2, label=name)
    ax.set_xticks(np.arange(len(components)) + width * (len(summary) - 1) / 2, components)
    ax.set(ylabel="test loss (response tokens)", title=title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def loss_trend(log: list[dict], window: int = 5) -> dict:
    """A training log's loss as a moving average of `window` steps (fewer when the log is shorter): the
    smoothed steps and losses, the first and last smoothed value, and recent_drop, how much it fell over the
    last quarter of the curve (recent_points points, at least 2 where there are): positive = still falling."""
    import numpy as np
    if not log:
        raise ValueError("the training log is empty")
    window = min(window, len(log))
    losses = np.convolve([m["loss"] for m in log], np.ones(window) / window, mode="valid")
    steps = [m["step"] for m in log][window - 1:]
    recent = min(len(losses), max(2, len(losses) // 4))
    return {"steps": steps, "losses": losses.tolist(), "first": float(losses[0]), "last": float(losses[-1]),
            "recent_points": recent, "recent_drop": float(losses[-recent] - losses[-1])}
