"""What every notebook does before its story starts, in one call, and small helpers the notebooks share: the
per-seed readers of results, a method claim, the verdicts in plain words, and the small computations that the
exercises' checks set against a student's answer.

    figures_dir, store = setup(figures_dir, store_dir)          # threads=1: torch trains on one thread

A notebook opened in JupyterLab and the same notebook run by `make suite` differ only in their
parameters: the lab's defaults read and write the `default` profile's run store (so the lab reuses the
runs of `make suite`) and put figures under build/lab/ (so an interactive run never touches the
tracked figures/); the suite's profiles point figures_dir at figures/.
"""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from .claims import VERDICT_NAME, table_verdicts, verdict_sentence
from .clustering import layer_nmi, routing_mutual_information
from .config import AdapterConfig
from .layers import AdapterLayer
from .store import RunStore

FIGURE_DPI = 120
# One torch thread per kernel: on a busy 2-core machine 60 training steps took 10.8 s on 1 thread and 53.5 s on
# 2 (issue 26), as a second thread mostly waits for a core another process holds. Runs in worker processes set
# their own threads (runs.run_many); notebook 06 times its own thread count.
DEFAULT_THREADS = 1


def setup(figures_dir, store_dir=None, threads: int = DEFAULT_THREADS) -> tuple[Path, RunStore | None]:
    """Create the figures folder, open the run store and set torch's threads (`threads`; 0 leaves them as
    they are); say where this run reads and writes and on how many threads it computes."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ValueError(f"threads must be a whole number >= 0 (0 leaves torch's threads as they are), "
                         f"got {threads!r}")
    if threads:
        torch.set_num_threads(threads)
    figures = Path(figures_dir)
    figures.mkdir(parents=True, exist_ok=True)
    store = RunStore(store_dir) if store_dir is not None else None
    plt.rcParams["savefig.dpi"] = FIGURE_DPI
    plt.rcParams["savefig.bbox"] = "tight"  # long titles and tick labels are not cut off
    where = f"figures -> {figures.resolve()}"
    if store is not None:
        where += f"; runs <- {store.root.resolve()}"
    where += f"; torch threads: {torch.get_num_threads()}" + (" (left as they were)" if not threads else "")
    print(where)
    return figures, store


def scores(results: dict[str, list[dict]], name: str, key="exact_match") -> list[float]:
    """One method's score per seed, in seed order: what a paired verdict compares. key: a field of a run's
    result, or a function of it (e.g. report.mean_component_loss)."""
    if name not in results:
        raise KeyError(f"no results for {name!r}; there are: {', '.join(results)}")
    return [key(run) if callable(key) else run[key] for run in results[name]]


def nmis(results: dict[str, list[dict]], name: str, key: str = "nmi_layer_mean") -> list[float]:
    """A routing statistic of a method on the test rows, per seed (clustering.routing_summary's keys). Default:
    the NMI between the chosen head and the true component in each layer, averaged over layers (each layer's
    router starts on its own, so its heads are not the heads of another layer: averaging gates over layers
    first, "nmi", mixes unrelated heads). Also "nmi_layer_max", "nmi_matched", "top_gate_mean",
    "gate_entropy_mean", "majority_head_share"."""
    runs = results[name]
    if "routing" not in runs[0]:
        raise ValueError(f"{name!r} has no routing summary (it needs heads > 1)")
    if key not in runs[0]["routing"]:
        raise KeyError(f"no routing statistic {key!r}; there are: {', '.join(runs[0]['routing'])}")
    return [run["routing"][key] for run in runs]


def sizes(results: dict[str, list[dict]], better: str, worse: str) -> tuple[dict, dict]:
    """The parameter counts of two methods (exact and the paper's convention), for a claim between them."""
    return results[better][0]["parameters"], results[worse][0]["parameters"]


def method_claim(text: str, results: dict[str, list[dict]], better: str, worse: str, paper: str,
                 test_rows: int | None = None, value="exact_match", decided_by: str | None = None,
                 comparison: str | bool | None = None) -> tuple:
    """One "better beats worse" claim for claims.record_verdicts: both methods' scores per seed, the paper's
    figure, and the options every such claim carries (its test rows and both parameter counts).

    value: the score, as `scores` takes it (a result field or a function of a run's result; default: exact
    match). decided_by: the profile that decides the claim where these runs cannot (e.g. one seed); with it, a
    claim on a method that did not run here keeps its row, without values. comparison: the name under which
    another notebook making the same comparison is recognised (the claims table shows it once): True names it
    by its two methods, "better vs worse"; a string names it as given (e.g. the methods another notebook ran
    under other labels)."""
    if not (comparison is None or isinstance(comparison, bool) or (isinstance(comparison, str) and comparison)):
        raise ValueError(f"comparison must be True (named by the two methods), a non-empty name or None, "
                         f"got {comparison!r}")
    options = {"decided_by": decided_by} if decided_by else {}
    if comparison:
        options["comparison"] = f"{better} vs {worse}" if comparison is True else comparison
    if decided_by and (better not in results or worse not in results):
        return text, [], [], paper, options
    better_scores, worse_scores = scores(results, better, value), scores(results, worse, value)
    options["sizes"] = sizes(results, better, worse)
    if test_rows is not None:
        options["test_rows"] = test_rows
    return text, better_scores, worse_scores, paper, options


def plain_verdicts(claims_dir, notebook: str, entries: list[dict] | None = None) -> list[str]:
    """Print a notebook's verdicts as plain sentences (claims.verdict_sentence), each as the claims table of
    claims_dir judges it (claims.table_verdicts), and return them.

    entries: the verdicts this run recorded (record_verdicts' return); without them, the last ones recorded for
    `notebook` in claims_dir, introduced as "from the last run" (a notebook's first cell shows them before
    anything runs), or a line saying there are none yet."""
    path = Path(claims_dir) / VERDICT_NAME
    records = json.loads(path.read_text()) if path.exists() else []
    if entries is None:
        entries = [r for r in records if r["notebook"] == notebook]
        if not entries:
            print(f"No verdict of {notebook} is recorded in {Path(claims_dir).resolve()} yet: the verdict cell at "
                  "the end prints this run's.")
            return []
        print(f"From the last run ({path.resolve()}); the verdict cell at the end prints this run's:")
    missing = [e["claim"] for e in entries if not any(r["notebook"] == e["notebook"] and r["claim"] == e["claim"]
                                                      for r in records)]
    if missing:
        raise ValueError(f"verdicts not recorded in {path}: {missing}; record them there first (record_verdicts)")
    judged = {(r["notebook"], r["claim"]): r for r in table_verdicts(records)}
    sentences = [verdict_sentence(judged[e["notebook"], e["claim"]]) for e in entries]
    for sentence in sentences:
        print(textwrap.fill(sentence, width=116, initial_indent="- ", subsequent_indent="  "))
    return sentences


# --- what the exercises set against the student's answer -------------------------------------------------------
GRADIENT_TENSORS = {"A": "lora_A", "B": "lora_B", "router": "router"}
ROUNDING = 1e-6  # a gradient below this share of the layer's largest is zero up to float rounding


def zero_gradients(router_init: str = "kaiming", steps: int = 0, seed: int = 0) -> set[str]:
    """Which tensors of a small HydraLoRA layer ("A", "B", "router") get a zero gradient: the layer (16 -> 12,
    r = 2, N = 4 heads, every B at zero, the router initialised by router_init: "kaiming" or "zeros") trains
    `steps` plain Adam steps on a fixed regression, then one more backward is taken. Zero: below ROUNDING of the
    layer's largest gradient (exactly 0 where the algebra gives 0 at the start; after steps, float rounding)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a whole number >= 0, got {steps!r}")
    x, target = _regression(seed)
    layer = AdapterLayer(torch.nn.Linear(16, 12).requires_grad_(False),
                         AdapterConfig(method="hydra", r=2, alpha=4, heads=4, router_init=router_init))
    _fit(layer, x, target, steps)
    sizes = {name: getattr(layer, tensor).grad.abs().max().item() for name, tensor in GRADIENT_TENSORS.items()}
    return {name for name, size in sizes.items() if size <= ROUNDING * max(sizes.values())}


def uniform_gate_gap(steps: int = 5, seed: int = 0) -> float:
    """The largest output difference between HydraLoRA under a uniform gate (the paper's "w/o gate": 16 -> 12,
    r = 2, N = 4 heads) and one LoRA of the same rank started from the same A, after `steps` plain Adam steps in
    fp32 without clipping, side by side on the same regression: zero up to float rounding, since zero B heads
    under a uniform gate get equal gradients and Adam does not see their 1/N scale."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a whole number >= 1, got {steps!r}")
    x, target = _regression(seed)
    base = torch.nn.Linear(16, 12).requires_grad_(False)
    heads = AdapterLayer(base, AdapterConfig(method="hydra", r=2, alpha=4, heads=4, gate="uniform"))
    single = AdapterLayer(base, AdapterConfig(method="lora", r=2, alpha=4))
    with torch.no_grad():
        single.lora_A.copy_(heads.lora_A)
    for layer in (heads, single):
        _fit(layer, x, target, steps)
    with torch.no_grad():
        return float((heads(x) - single(x)).abs().max())


def _regression(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """8 inputs of 16 and their 12 targets for the small layers above; torch's global seed set too (their init)."""
    torch.manual_seed(seed)
    data = torch.Generator().manual_seed(seed)
    return torch.randn(8, 16, generator=data), torch.randn(8, 12, generator=data)


def _fit(layer, x, target, steps: int) -> None:
    """`steps` plain Adam steps of the layer's trainable tensors on the squared error, then one more backward: the
    gradients after the last step stay on the tensors."""
    optimizer = torch.optim.Adam([p for p in layer.parameters() if p.requires_grad], lr=1e-2)
    for step in range(steps + 1):
        optimizer.zero_grad()
        ((layer(x) - target) ** 2).mean().backward()
        if step < steps:
            optimizer.step()


def permute_heads(gates, layer: int, permutation) -> np.ndarray:
    """A copy of gates (rows, layers, heads) with one layer's heads renumbered: that layer's new head j is its old
    head permutation[j]; every other layer as it was."""
    gates = np.array(gates, dtype=float)
    if gates.ndim != 3:
        raise ValueError(f"gates must be a (rows, layers, heads) array, got shape {gates.shape}")
    if not 0 <= layer < gates.shape[1]:
        raise ValueError(f"layer must lie in 0..{gates.shape[1] - 1}, got layer={layer!r}")
    if sorted(permutation) != list(range(gates.shape[2])):
        raise ValueError(f"permutation must order the heads 0..{gates.shape[2] - 1} anew, got {list(permutation)}")
    gates[:, layer] = gates[:, layer][:, list(permutation)]
    return gates


def permutation_nmis(gates, components, layer: int, permutation) -> dict[str, tuple]:
    """The two NMIs of routing before and after permute_heads(gates, layer, permutation): "layer-averaged" (the
    component against the largest gate averaged over layers: (before, after)) and "per-layer" (against each
    layer's own largest gate: (the list before, the list after))."""
    permuted = permute_heads(gates, layer, permutation)
    averaged = [routing_mutual_information(components, g.mean(1).argmax(-1))["nmi"] for g in (np.asarray(gates),
                                                                                               permuted)]
    per_layer = [layer_nmi(g, components)["nmi_per_layer"] for g in (gates, permuted)]
    return {"layer-averaged": tuple(averaged), "per-layer": tuple(per_layer)}


def strongest_renumbering(gates, components) -> tuple[int, list[int]]:
    """The layer, and the cyclic shift of its heads, whose renumbering (permute_heads) moves the layer-averaged NMI
    (permutation_nmis) the most: the clearest look at how much that NMI hangs on head numbers. Ties: the first."""
    gates = np.asarray(gates, dtype=float)

    def averaged(g):
        return routing_mutual_information(components, g.mean(1).argmax(-1))["nmi"]

    start = averaged(gates)
    heads = gates.shape[2]
    renumberings = [(layer, [int(h) for h in np.roll(np.arange(heads), shift)])
                    for layer in range(gates.shape[1]) for shift in range(1, heads)]
    return max(renumberings, key=lambda renumbering: abs(averaged(permute_heads(gates, *renumbering)) - start))
