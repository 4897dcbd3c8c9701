"""build_data(spec): a run's rows from its data spec, whatever their kind (synthetic, primitives, real)."""
from __future__ import annotations

import inspect

import torch

from .real import DATA_KEYS as REAL_DATA_KEYS, build_real_data
from .synthetic import make_corpus, make_primitive_corpus

DATA_SELECTIONS = ("only_component", "part", "parts")
# Keys that say how a run uses its rows, not which rows there are.
USE_KEYS = ("kind", "cluster_features", "cluster_text")
# What a cluster gate clusters (clustering.assign_routes' part): the whole prompt, or the instruction alone.
CLUSTER_TEXTS = ("prompt", "instruction")
BUILDERS = {"synthetic": make_corpus, "primitives": make_primitive_corpus, "real": lambda **spec: build_real_data(spec)}


def data_keys(kind: str) -> list[str]:
    """The keys a data spec of this kind may hold: its builder's settings, the selections and the use keys."""
    if kind not in BUILDERS:
        raise ValueError(f"unknown data kind {kind!r}; allowed: {', '.join(BUILDERS)}")
    settings = REAL_DATA_KEYS if kind == "real" else inspect.signature(BUILDERS[kind]).parameters
    return list(dict.fromkeys([*USE_KEYS, *settings, *DATA_SELECTIONS]))


def check_data_spec(data) -> None:
    """Refuse a data spec that is not a dict with a known kind, or that holds a key its kind does not read
    (naming the allowed keys): a misspelt setting must not be keyed and silently ignored."""
    if not isinstance(data, dict) or "kind" not in data:
        raise ValueError(f"a run's data must be a dict with a 'kind', got data={data!r}")
    allowed = data_keys(data["kind"])
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ValueError(f"unknown keys {unknown} in a {data['kind']!r} data spec; allowed: {', '.join(allowed)}")


def build_data(data: dict) -> dict:
    """{'train', 'test', 'components'} for a data spec; kinds: 'synthetic', 'primitives', 'real' (see
    hydralib.data.real: a mixture of real sets).

    Selections for per-task and control LoRAs: only_component=c keeps component c's rows (train and test);
    part=i of parts=n keeps the i-th of n random, equal parts of the training rows (an IID split).
    Keys that say how a run uses the rows (USE_KEYS: cluster_features, cluster_text) are not passed to the
    builder; the synthetic kind's other keys are make_corpus' arguments (e.g. identifiability)."""
    if data.get("kind") not in BUILDERS:
        raise ValueError(f"unknown data kind {data.get('kind')!r}; allowed: {', '.join(BUILDERS)}")
    if data.get("cluster_text", "prompt") not in CLUSTER_TEXTS:
        raise ValueError(f"unknown cluster_text {data['cluster_text']!r}; allowed: {', '.join(CLUSTER_TEXTS)}")
    options = {k: v for k, v in data.items() if k not in (*USE_KEYS, *DATA_SELECTIONS)}
    corpus = BUILDERS[data["kind"]](**options)
    if "only_component" in data:
        c = data["only_component"]
        if not 0 <= c < len(corpus["components"]):
            raise ValueError(f"only_component={c!r}; allowed: 0..{len(corpus['components']) - 1}")
        corpus = {**corpus, "train": [r for r in corpus["train"] if r["component"] == c],
                  "test": [r for r in corpus["test"] if r["component"] == c]}
    if "part" in data or "parts" in data:
        part, parts = data.get("part"), data.get("parts")
        if not (isinstance(parts, int) and parts >= 1 and isinstance(part, int) and 0 <= part < parts):
            raise ValueError(f"an IID split needs part in 0..parts-1 and parts >= 1, got part={part!r}, parts={parts!r}")
        order = torch.randperm(len(corpus["train"]), generator=torch.Generator().manual_seed(data.get("seed", 0)))
        corpus = {**corpus, "train": [corpus["train"][i] for i in order[part::parts].tolist()]}
    return corpus
