"""Real sets as run data: a mixture of GSM8K, MMLU, HumanEval and Dolly rows, one component per source.

A real-data run's data spec (see hydralib.runs.build_data):

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

from ..checks import check_choice, check_int
from .sources import load_dolly, load_gsm8k, load_humaneval, load_mmlu, mix_sources

SOURCES = ("gsm8k", "mmlu", "humaneval", "dolly")
DATA_KEYS = ("kind", "sources", "eval_sources", "n_train", "n_test", "seed", "download", "cluster_features")
# Rows of a source cut once into train and test parts: every TEST_EVERY-th row (by position) is a test row.
TEST_EVERY = 4

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
