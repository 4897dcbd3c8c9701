"""The anatomy of trained LoRAs: do their A matrices converge while their B matrices differ?

The paper's Observation II (Figure 3) trains one plain LoRA per task on q_proj and v_proj and
embeds the LoRA tensors in 2-D: each flattened A or B of each layer is one point, embedded with
sklearn's TSNE(init="pca", random_state=42), plotted for all tensors, for A only and for B only.
The A points of different tasks fall together, the B points apart, which motivates one shared A
and several B heads.

Beside t-SNE we offer UMAP, an interactive plotly view, and a number for the claim: the mean
pairwise cosine similarity across LoRAs, per layer, of A, of B and of the product B @ A. The
product is needed because A and B are only defined up to an invertible r x r matrix M: (B M^-1)(M A)
is the same update as B A, so two LoRAs may hold the same update in factors that look unrelated,
and the cosine of A or B alone measures the parametrisation as much as what was learned. B @ A,
the d_out x d_in weight delta the LoRA adds (up to the scale alpha/r, which a cosine ignores), is
the same for every M: it is the basis-invariant quantity.

Beware of the initialisation: LoRA starts with a random A and B = 0. LoRAs initialised from one
seed (hydralib.add_adapters(..., seed=s), as hydralib.pipeline does with the training seed) start from
the same A, so a high A similarity after training can be the shared start rather than convergence.

How far A and B moved from their start (run_movement): a run's starting adapter is drawn again from its
spec, as the pipeline drew it (the same base, add_adapters with the training seed), and compared with the
adapter the run saved. B starts at zero, so all of B is movement; A's relative change says how much of the trained
A is still its start (whether A "stays near its initialisation", the reading of Observation II its critics
propose), and the change per entry sets A beside B in the weights' own units, which neither start fixes.

Inputs here are `loras`: {LoRA name: {module name: {"A": tensor, "B": tensor}}}, one entry per
trained LoRA, each made by adapter_tensors.
"""
from __future__ import annotations

import itertools
import math
import re
import statistics
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.lines import Line2D
from safetensors.torch import load_file
from scipy import special, stats
from sklearn.manifold import TSNE
from torch import nn

from .checks import check_choice
from .adapter_files import WEIGHTS_NAME, load_adapters
from .evaluate import gate_profile
from .inject import adapter_layers, movement_from_init
from .pipeline import eval_rows, prepare_model, prepare_run

MATRICES = ("A", "B", "BA")
EMBEDDINGS = ("tsne", "umap")
MARKERS = ("o", "^", "s", "D", "v", "P", "X", "*")
BLOCK_NUMBER = re.compile(r"(?:^|\.)(\d+)(?:\.|$)")  # "layers.3." in a module name
PLOTLY_SYMBOLS = ("circle", "triangle-up", "square", "diamond", "triangle-down", "cross", "x", "star")


# --- reading adapters ----------------------------------------------------------------------------
def adapter_tensors(source: nn.Module | str | Path) -> dict[str, dict[str, torch.Tensor]]:
    """{module name: {"A": lora_A, "B": lora_B}} from a model with adapters, an adapter folder
    (written by save_adapters) or a run folder holding one in adapter/; routers are left out.

    Tensors are CPU copies, exactly as the adapter stores them: for lora A is (r, in) and B (out, r);
    for hydra A is the shared (r, in) and B the heads side by side, (out, heads*r); for split A is
    (heads*r, in) and B (out, heads*r). Layers come in model order (layer 2 before layer 10)."""
    if isinstance(source, nn.Module):
        layers = adapter_layers(source)
        if not layers:
            raise ValueError("this model has no hydralib adapters; call add_adapters or load_adapters first")
        tensors = {name: {"A": layer.lora_A.detach().cpu().clone(), "B": layer.lora_B.detach().cpu().clone()}
                   for name, layer in layers.items()}
    else:
        path = weights_file(Path(source))
        stored = load_file(str(path))
        names = {key.rsplit(".", 1)[0] for key in stored if key.endswith((".lora_A", ".lora_B"))}
        if not names:
            raise ValueError(f"{path} holds no lora_A / lora_B tensors")
        tensors = {name: {"A": stored[f"{name}.lora_A"], "B": stored[f"{name}.lora_B"]} for name in names}
    return {name: tensors[name] for name in sorted(tensors, key=natural_key)}


def weights_file(folder: Path) -> Path:
    """The adapter weights in an adapter folder, or in the adapter/ folder of a training run."""
    for candidate in (folder / WEIGHTS_NAME, folder / "adapter" / WEIGHTS_NAME):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no saved adapter in {folder}: expected {WEIGHTS_NAME} there or in {folder / 'adapter'}")


def natural_key(name: str) -> list:
    """Sort key reading digit runs as numbers, so layers.2 comes before layers.10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def layer_index(name: str) -> int | None:
    """The transformer block a module belongs to: the first number in its name (None if there is none)."""
    match = BLOCK_NUMBER.search(name)
    return int(match.group(1)) if match else None


def short_names(names: list[str]) -> dict[str, str]:
    """{module name: short name}: "model.layers.0.self_attn.q_proj" -> "L0.q_proj"; when two modules
    of a block share their last part (GPT-2's attn.c_proj and mlp.c_proj), the whole path after the
    block number is kept: "L0.attn.c_proj". Names without a block number stay as they are."""
    def short(name: str, whole_path: bool) -> str:
        match = BLOCK_NUMBER.search(name)
        rest = name[match.end():] if match else ""
        if not rest:
            return name
        return f"L{match.group(1)}.{rest if whole_path else rest.rsplit('.', 1)[-1]}"
    brief = {name: short(name, False) for name in names}
    clash = len(set(brief.values())) < len(brief)
    return {name: short(name, True) for name in names} if clash else brief


# --- similarity -----------------------------------------------------------------------------------
def matrix_of(tensors: dict[str, torch.Tensor], matrix: str) -> torch.Tensor:
    """A, B, or "BA": sum_i B_i A_(i) over the heads, in float64. For lora that is B @ A; for split and
    hydra it is the update under equal gate weights times the number of heads (hydra: every B head
    times the shared A), a scale a cosine ignores."""
    check_choice("matrix", matrix, MATRICES)
    a, b = tensors["A"].double(), tensors["B"].double()
    if matrix != "BA":
        return a if matrix == "A" else b
    if b.shape[1] == a.shape[0]:
        return b @ a
    if b.shape[1] % a.shape[0]:
        raise ValueError(f"B {tuple(b.shape)} and A {tuple(a.shape)} do not form an update: "
                         "B's columns must be A's rows (lora, split) or a multiple of them (hydra heads)")
    return b.reshape(b.shape[0], -1, a.shape[0]).sum(1) @ a


def common_layers(loras: dict[str, dict[str, dict[str, torch.Tensor]]], least: int = 1) -> list[str]:
    """The module names every LoRA has, in model order; refuses LoRAs whose layers differ."""
    if not isinstance(loras, dict) or len(loras) < least:
        raise ValueError(f"need a dict {{LoRA name: adapter_tensors(...)}} of at least {least} LoRAs, "
                         f"got {type(loras).__name__} of {len(loras) if isinstance(loras, dict) else '?'}")
    (first_name, first), *others = loras.items()
    for name, layers in others:
        if set(layers) != set(first):
            missing, extra = sorted(set(first) - set(layers)), sorted(set(layers) - set(first))
            raise ValueError(f"LoRA {name!r} has other layers than {first_name!r}: "
                             f"missing {missing[:3]}, extra {extra[:3]}")
    return list(first)


def cosine_matrix(vectors: torch.Tensor) -> torch.Tensor:
    """(n, d) -> (n, n) cosine similarities; nan where a vector is zero (e.g. an untrained B)."""
    norms = vectors.norm(dim=1, keepdim=True)
    unit = vectors / norms.where(norms > 0, torch.tensor(float("nan"), dtype=vectors.dtype))
    return unit @ unit.T


def pairwise_cosine(loras: dict[str, dict[str, dict[str, torch.Tensor]]], matrix: str) -> dict[str, float]:
    """{module name: mean cosine similarity over all pairs of LoRAs} of the flattened A, B or B @ A.

    1 means the LoRAs hold the same tensor (up to a positive scale), about 0 unrelated ones
    (independent random tensors of d entries are at ~1/sqrt(d)). nan where a tensor is all zero,
    as B is before training. The mean over layers is fmean(result.values()) (see similarity_table)."""
    check_choice("matrix", matrix, MATRICES)
    result = {}
    for layer in common_layers(loras, least=2):
        flat = [matrix_of(tensors[layer], matrix).flatten() for tensors in loras.values()]
        shapes = {tuple(f.shape) for f in flat}
        if len(shapes) > 1:
            raise ValueError(f"{layer}: the LoRAs' {matrix} have different sizes {sorted(shapes)}; "
                             "compare LoRAs of one shape (same r, heads and method)")
        cosines = cosine_matrix(torch.stack(flat))
        pairs = torch.triu_indices(len(flat), len(flat), offset=1)
        result[layer] = cosines[pairs[0], pairs[1]].mean().item()
    return result


def similarity_table(loras: dict[str, dict[str, dict[str, torch.Tensor]]]) -> list[dict]:
    """One row per layer, {"layer": short name, "module": full name, "A", "B", "BA": mean pairwise
    cosine}, then a row "mean" over layers: the paper's "A converge, B differ" as numbers."""
    by_matrix = {matrix: pairwise_cosine(loras, matrix) for matrix in MATRICES}
    names = short_names(list(by_matrix["A"]))
    rows = [{"layer": names[layer], "module": layer, **{m: by_matrix[m][layer] for m in MATRICES}}
            for layer in names]
    mean = {m: statistics.fmean(by_matrix[m].values()) for m in MATRICES}
    return rows + [{"layer": "mean", "module": "all layers", **mean}]


def format_table(rows: list[dict]) -> str:
    """similarity_table's rows as aligned text, for print."""
    width = max(len(row["layer"]) for row in rows)
    lines = [f"{'layer':<{width}}  " + "  ".join(f"{m:>6}" for m in MATRICES)]
    lines += [f"{row['layer']:<{width}}  " + "  ".join(f"{row[m]:>6.3f}" for m in MATRICES) for row in rows]
    return "\n".join(lines)


# --- points and embeddings ------------------------------------------------------------------------
def tensor_points(loras: dict[str, dict[str, dict[str, torch.Tensor]]],
                  matrices: tuple[str, ...] = ("A", "B")) -> tuple[np.ndarray, list[dict]]:
    """The paper's points: one row of X per flattened tensor (per LoRA, layer and matrix), and for each
    a meta dict {"lora", "layer" (short name), "layer_index", "module" (e.g. "q_proj"), "name" (full
    module name), "matrix"}. All tensors must flatten to one length, as in the paper (q_proj and
    v_proj of the same width, A (r, d) and B (d, r))."""
    for matrix in matrices:
        check_choice("matrix", matrix, MATRICES)
    layers = common_layers(loras)
    names = short_names(layers)
    rows, meta = [], []
    for lora, tensors in loras.items():
        for layer, matrix in itertools.product(layers, matrices):
            tensor = matrix_of(tensors[layer], matrix)
            rows.append(tensor)
            meta.append({"lora": lora, "layer": names[layer], "layer_index": layer_index(layer),
                         "module": layer.rsplit(".", 1)[-1], "name": layer, "matrix": matrix})
    sizes = {tensor.numel() for tensor in rows}
    if len(sizes) > 1:
        shapes = sorted({f"{m['matrix']} of {m['layer']}: {tuple(t.shape)}" for t, m in zip(rows, meta)})
        raise ValueError(f"tensors flatten to different lengths {sorted(sizes)}, and one embedding needs one "
                         f"length: {'; '.join(shapes[:6])}. Choose matrices or layers of equal size")
    return torch.stack([tensor.flatten() for tensor in rows]).numpy(), meta


def tsne_perplexity(n: int) -> float:
    """The perplexity embed gives t-SNE for n points: sklearn's default 30 where n allows, else (n - 1) / 3 (it
    must stay below n), at least 1. Roughly how many neighbours each point keeps close: t-SNE preserves those
    neighbourhoods, not distances, so gaps between groups say little."""
    if n < 2:
        raise ValueError(f"t-SNE needs at least 2 points, got n={n!r}")
    return max(1.0, min(30.0, (n - 1) / 3))


def embed(X: np.ndarray, method: str = "tsne", seed: int = 42) -> np.ndarray:
    """(n, d) -> (n, 2) coordinates, the same for the same seed.

    tsne: sklearn TSNE(init="pca", random_state=seed), the paper's call. Its perplexity (default 30,
    roughly the number of neighbours each point attends to) must stay below n, so it is
    min(30, (n - 1) / 3), at least 1.
    umap: umap.UMAP(random_state=seed, n_neighbors=min(15, n - 1)); a seed makes UMAP single-threaded,
    and its first call in a process spends ~20 s compiling (numba)."""
    check_choice("method", method, EMBEDDINGS)
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < 3:
        raise ValueError(f"embed needs an (n, d) array of at least 3 points, got shape {X.shape}")
    n = X.shape[0]
    if method == "tsne":
        return TSNE(n_components=2, init="pca", perplexity=tsne_perplexity(n), random_state=seed).fit_transform(X)
    import umap  # heavy: numba compiles for about 20 s on first import, so only a UMAP pays for it
    reducer = umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), random_state=seed, n_jobs=1)
    return reducer.fit_transform(X)


# --- plots ------------------------------------------------------------------------------------------
def plot_embedding(points2d: np.ndarray, meta: list[dict], ax, color_by: str = "lora",
                   marker_by: str | None = "matrix", title: str | None = None):
    """Scatter the embedded tensors on a matplotlib axis: a colour per `color_by` value, a marker per
    `marker_by` value (None: circles), a legend naming both. Returns the axis."""
    points2d = check_points(points2d, meta)
    colors = categories(meta, color_by)
    markers = categories(meta, marker_by) if marker_by is not None else {None: 0}
    if len(markers) > len(MARKERS):
        raise ValueError(f"marker_by={marker_by!r} has {len(markers)} values; at most {len(MARKERS)} markers")
    palette = color_palette(len(colors))
    for color_value, marker_value in itertools.product(colors, markers):
        chosen = [i for i, m in enumerate(meta)
                  if m[color_by] == color_value and (marker_by is None or m[marker_by] == marker_value)]
        if chosen:
            ax.scatter(points2d[chosen, 0], points2d[chosen, 1], color=palette[colors[color_value]],
                       marker=MARKERS[markers[marker_value]], s=40, alpha=0.8, edgecolors="white", linewidths=0.5)
    handles = [Line2D([], [], linestyle="", marker="o", color=palette[i], label=f"{color_by}: {value}")
               for value, i in colors.items()]
    if marker_by is not None:
        handles += [Line2D([], [], linestyle="", marker=MARKERS[i], color="grey", label=f"{marker_by}: {value}")
                    for value, i in markers.items()]
    ax.legend(handles=handles, fontsize="small", loc="best", framealpha=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return ax


def plot_tensor_panels(loras: dict[str, dict[str, dict[str, torch.Tensor]]], method: str = "tsne", seed: int = 42,
                       color_by: str = "lora"):
    """The paper's Figure 3 layout: three panels, all tensors, A only, B only, each embedded on its own.
    Returns the matplotlib figure."""
    figure, axes = plt.subplots(1, 3, figsize=(16, 5))
    for ax, (label, matrices) in zip(axes, [("A and B", ("A", "B")), ("A only", ("A",)), ("B only", ("B",))]):
        X, meta = tensor_points(loras, matrices)
        plot_embedding(embed(X, method, seed), meta, ax, color_by=color_by,
                       marker_by="matrix" if len(matrices) > 1 else "module", title=f"{method}: {label}")
    figure.tight_layout()
    return figure


def plotly_embedding(points2d: np.ndarray, meta: list[dict], title: str = "LoRA tensors"):
    """An interactive scatter: a colour per LoRA, a symbol per matrix, hover text naming the LoRA, the
    layer and the matrix, and (for several matrices) a menu showing all points, A only or B only.
    The menu hides points of one embedding; for separate embeddings per matrix, embed each on its own.
    Saved with fig.write_html(path, include_plotlyjs=True) the file works offline (about 5 MB, most of
    it plotly.js); include_plotlyjs="cdn" makes it small but needs the internet to display."""
    import plotly.graph_objects as go  # optional view: only the interactive figure needs plotly
    points2d = check_points(points2d, meta)
    loras, matrices = categories(meta, "lora"), categories(meta, "matrix")
    palette = [f"rgb{tuple(round(255 * c) for c in rgb[:3])}" for rgb in color_palette(len(loras))]
    figure = go.Figure()
    for (lora, color), (matrix, symbol) in itertools.product(loras.items(), matrices.items()):
        chosen = [i for i, m in enumerate(meta) if m["lora"] == lora and m["matrix"] == matrix]
        if chosen:
            figure.add_trace(go.Scatter(
                x=points2d[chosen, 0], y=points2d[chosen, 1], mode="markers", name=f"{lora} {matrix}",
                legendgroup=str(lora), meta=matrix,
                marker={"color": palette[color], "symbol": PLOTLY_SYMBOLS[symbol % len(PLOTLY_SYMBOLS)], "size": 9},
                text=[hover_text(meta[i]) for i in chosen], hovertemplate="%{text}<extra></extra>"))
    if len(matrices) > 1:
        views = [("all", None)] + [(f"{matrix} only", matrix) for matrix in matrices]
        buttons = [{"label": label, "method": "update",
                    "args": [{"visible": [shown is None or trace.meta == shown for trace in figure.data]}]}
                   for label, shown in views]
        # the menu sits at the top right, above the plot, so it never covers the title on the left
        figure.update_layout(updatemenus=[{"buttons": buttons, "direction": "down", "x": 1, "y": 1.02,
                                           "xanchor": "right", "yanchor": "bottom"}])
    figure.update_layout(title={"text": title, "x": 0.01, "xanchor": "left"}, margin={"t": 80},
                         template="plotly_white", xaxis={"showticklabels": False},
                         yaxis={"showticklabels": False}, legend={"title": {"text": "LoRA, matrix"}})
    return figure


def hover_text(point: dict) -> str:
    return f"LoRA: {point['lora']}<br>layer: {point['layer']}<br>matrix: {point['matrix']}<br>{point['name']}"


# --- helpers ----------------------------------------------------------------------------------------
def categories(meta: list[dict], key: str) -> dict:
    """{value: index} of meta[key] in order of first appearance; refuses an unknown key."""
    if not meta or key not in meta[0]:
        raise ValueError(f"cannot group by {key!r}; allowed: {', '.join(map(repr, meta[0])) if meta else 'no points'}")
    return {value: i for i, value in enumerate(dict.fromkeys(m[key] for m in meta))}


def color_palette(n: int) -> list:
    """n distinct RGBA colours: tab10 up to 10, tab20 up to 20, then a continuous map."""
    name = "tab10" if n <= 10 else "tab20" if n <= 20 else "turbo"
    cmap = matplotlib.colormaps[name]
    return [cmap(i) for i in range(n)] if n <= 20 else [cmap(i / max(1, n - 1)) for i in range(n)]


def check_points(points2d: np.ndarray, meta: list[dict]) -> np.ndarray:
    points2d = np.asarray(points2d)
    if points2d.ndim != 2 or points2d.shape[1] != 2 or len(points2d) != len(meta):
        raise ValueError(f"points2d must have shape (len(meta), 2) = ({len(meta)}, 2), got {points2d.shape}")
    return points2d



def lora_families(seed: int, n_tasks: int, spec) -> dict[str, dict[str, dict]]:
    """The run specs of Figure 3 and its two controls, for one replicate `seed`: {family: {LoRA name: spec}}.

    spec(seed, **selection) builds one run spec (selections: see hydralib.data.corpus.build_data).
    - per task, shared seed: one LoRA per component and one on the mixture, all initialised from `seed`
      (the paper's setting);
    - per task, different seeds: the same per-component LoRAs, each from its own seed (a follow-up argues
      the A similarity is the shared seed's);
    - IID parts: the mixture cut at random into n_tasks parts, one LoRA each (Figure 9): what similarity
      looks like when the LoRAs' data do *not* differ in kind."""
    tasks = range(n_tasks)
    return {
        "per task, shared seed": {**{f"task {j}": spec(seed, only_component=j) for j in tasks}, "mixture": spec(seed)},
        "per task, different seeds": {f"task {j}": spec(1000 * (j + 1) + seed, only_component=j) for j in tasks},
        "IID parts": {f"part {i}": spec(seed, part=i, parts=n_tasks) for i in tasks},
    }


def mean_similarity(loras: dict[str, dict[str, dict[str, torch.Tensor]]]) -> dict[str, float]:
    """{"A", "B", "BA": mean pairwise cosine over LoRAs and layers}: one number per matrix for a family."""
    return {m: statistics.fmean(pairwise_cosine(loras, m).values()) for m in MATRICES}


# --- chance baselines ------------------------------------------------------------------------------
# A similarity claim is compared with what chance gives for tensors of that size, never with another
# near-zero number: two independent random directions in d dimensions have cosine c with
# (c + 1) / 2 ~ Beta((d - 1) / 2, (d - 1) / 2): mean 0, sd 1 / sqrt(d), and E|c| ~ sqrt(2 / (pi d)).


def chance_cosine(d: int, absolute: bool = False, confidence: float = 0.95) -> dict:
    """The cosine similarity of two independent, isotropic random vectors of d entries (exact, not simulated).

    Signed: {"mean": 0, "sd": 1/sqrt(d), "q95": the one-sided 95 % quantile, "interval": the central 95 %}.
    absolute=True: the same for |cos| (mean Gamma(d/2) / (sqrt(pi) Gamma((d+1)/2)) ~ sqrt(2/(pi d)),
    "q95" the 95 % quantile of |cos|). d = 10^4 gives a signed sd of 0.01."""
    d = int(d)
    if d < 2:
        raise ValueError(f"d must be at least 2 (a cosine of 1-entry vectors is always +-1), got {d}")
    half = (d - 1) / 2
    tail = (1 - confidence) / 2
    if absolute:
        mean = float(np.exp(special.gammaln(d / 2) - special.gammaln((d + 1) / 2)) / np.sqrt(np.pi))
        return {"d": d, "absolute": True, "mean": mean, "sd": float(np.sqrt(max(1 / d - mean ** 2, 0.0))),
                "q95": float(2 * stats.beta.ppf(0.5 + confidence / 2, half, half) - 1)}
    return {"d": d, "absolute": False, "mean": 0.0, "sd": float(1 / np.sqrt(d)),
            "q95": float(2 * stats.beta.ppf(confidence, half, half) - 1),
            "interval": (float(2 * stats.beta.ppf(tail, half, half) - 1),
                         float(2 * stats.beta.ppf(1 - tail, half, half) - 1))}


def chance_similarity(loras: dict[str, dict[str, dict[str, torch.Tensor]]], matrix: str) -> dict:
    """Chance for mean_similarity's number (the mean over layers of the mean pairwise cosine of `matrix`)
    had every LoRA's tensors been independent random directions of the same sizes.

    Cosines of different pairs of independent isotropic vectors are uncorrelated, so the statistic has
    mean 0 and sd sqrt(sum over layers of 1 / (pairs d_layer)) / layers; "q95" is its one-sided 95 %
    quantile (normal: many pairs and entries). {"mean", "sd", "q95", "sizes": {layer: d}}."""
    check_choice("matrix", matrix, MATRICES)
    layers = common_layers(loras, least=2)
    n = len(loras)
    pairs = n * (n - 1) // 2
    sizes = {layer: matrix_of(next(iter(loras.values()))[layer], matrix).numel() for layer in layers}
    sd = float(np.sqrt(sum(1 / (pairs * d) for d in sizes.values())) / len(sizes))
    return {"mean": 0.0, "sd": sd, "q95": 1.6448536269514722 * sd, "sizes": sizes}


def permutation_similarity(loras: dict[str, dict[str, dict[str, torch.Tensor]]], n_permutations: int = 100,
                           seed: int = 0, matrices: tuple[str, ...] = MATRICES) -> dict[str, list[float]]:
    """Permutation baseline of mean_similarity: {matrix: [the statistic with every LoRA's tensor, but the
    first's, shuffled entry by entry (independently per LoRA, layer and draw)] for each of n_permutations}.

    Shuffling keeps each tensor's entries (their scale, sign balance and mean) and destroys only their
    arrangement, which is what a similarity claim is about. Give its draws per replicate to
    hydralib.claims.compare_to_baseline as the chance baseline."""
    for matrix in matrices:
        check_choice("matrix", matrix, MATRICES)
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be at least 1, got {n_permutations}")
    rng = np.random.default_rng(seed)
    layers = common_layers(loras, least=2)
    n = len(loras)
    result = {}
    for matrix in matrices:
        per_layer = np.zeros(n_permutations)
        for layer in layers:
            flat = torch.stack([matrix_of(tensors[layer], matrix).flatten() for tensors in loras.values()])
            norms = flat.norm(dim=1, keepdim=True)
            unit = (flat / norms.where(norms > 0, torch.tensor(float("nan"), dtype=flat.dtype))).numpy()
            chunk = max(1, 2_000_000 // unit.shape[1])  # draws at a time: bounded memory for large B @ A
            for start in range(0, n_permutations, chunk):
                draws = min(chunk, n_permutations - start)
                shuffled = [unit[0][None]] + [unit[i][np.stack([rng.permutation(unit.shape[1]) for _ in range(draws)])]
                                              for i in range(1, n)]
                cosines = [(shuffled[i] * shuffled[j]).sum(1) for i in range(n) for j in range(i + 1, n)]
                per_layer[start:start + draws] += np.mean(cosines, axis=0)
        result[matrix] = (per_layer / len(layers)).tolist()
    return result


# --- movement from the initialisation ---------------------------------------------------------------
def run_movement(spec, run_folder) -> dict[str, dict]:
    """How far a finished run's A and B moved from where the run started, per layer.

    The start is drawn again as hydralib.pipeline.prepare_model draws it (the spec's base, then add_adapters with
    spec.train.seed), the end is the adapter the run saved under run_folder/adapter. Per layer: inject.
    movement_from_init's "A" (||A - A0|| / ||A0||), "B" and "B_from_zero", and, relative to the trained tensor,
    "A_of_trained" = ||A - A0|| / ||A|| and "B_of_trained" = ||B - B0|| / ||B|| (1 when B started at zero: all of
    it was learned), and per entry "A_rms" = ||A - A0|| / sqrt(A's entries) and "B_rms" likewise: the change in the
    weights' own units, which neither start fixes (B's relative change is 1 by construction)."""
    model, _ = prepare_model(spec)
    initial = adapter_tensors(model)
    trained = adapter_tensors(run_folder)
    if set(trained) != set(initial):
        raise ValueError(f"{run_folder} holds other adapter layers than its spec builds: missing "
                         f"{sorted(set(initial) - set(trained))[:3]}, extra {sorted(set(trained) - set(initial))[:3]}")
    with torch.no_grad():
        for name, layer in adapter_layers(model).items():
            layer.lora_A.copy_(trained[name]["A"])
            layer.lora_B.copy_(trained[name]["B"])
    moved = movement_from_init(model, initial)
    for name, entry in moved.items():
        for key in ("A", "B"):
            now = trained[name][key].float()
            change = float(torch.linalg.norm(now - initial[name][key].float()))
            size = float(torch.linalg.norm(now))
            entry[f"{key}_of_trained"] = change / size if size > 0 else 0.0
            entry[f"{key}_rms"] = change / math.sqrt(now.numel())
    return moved


def mean_movement(moved: dict[str, dict]) -> dict[str, float]:
    """run_movement's numbers averaged over layers: {"A", "B", "A_of_trained", "B_of_trained", "A_rms", "B_rms"}."""
    if not moved:
        raise ValueError("no layers to average: give run_movement's result")
    return {key: statistics.fmean(entry[key] for entry in moved.values())
            for key in ("A", "B", "A_of_trained", "B_of_trained", "A_rms", "B_rms")}


# --- routing of a finished run ----------------------------------------------------------------------
def run_gate_profile(spec, run_folder) -> dict:
    """How a finished routed run routes its test rows, measured again from its saved adapter: the spec's model
    with the adapter under run_folder/adapter, its test rows (routed as the pipeline routes them), and
    evaluate.gate_profile of them. Returns {"layers": module names, "gates": (rows, layers, heads) array,
    "components": each row's true component}: the gates the run's routing summary was computed from."""
    if spec.adapter is None or spec.adapter.heads < 2:
        raise ValueError(f"a gate profile needs a run with heads > 1, got adapter {spec.adapter!r}")
    model, tokenizer, data, _, _ = prepare_run(spec)
    load_adapters(model, Path(run_folder) / "adapter")
    rows = eval_rows(data, spec)
    profile = gate_profile(model, tokenizer, rows, spec.train.template, spec.train.max_length)
    return {"layers": profile["layers"], "gates": profile["gates"].numpy(),
            "components": [int(row.get("component", 0)) for row in rows]}
