"""Real sets as run data: a mixture of GSM8K, MMLU, HumanEval and Dolly rows, one component per source.

A real-data run's data spec (see hydralib.data.corpus.build_data):

    {"kind": "real", "sources": ["gsm8k", "mmlu", "humaneval"], "eval_sources": [],
     "n_train": 64, "n_test": 16, "n_val": 0, "seed": 0, "download": False}

Each source is one component of the mixture (its own labels, e.g. the MMLU subject, move to
subcomponent). n_train and n_test are rows per source (fewer when a source has fewer); n_test may be
"all" (the whole test split) or a dict {source: count or "all"} naming every source. n_val rows per
training source are held out of its training pool for validation curves (data["validation"]), never
trained on. Training rows, validation rows and test rows never overlap: GSM8K trains on its train split and tests on its test split, MMLU trains
on dev + val and tests on test, HumanEval and Dolly are cut once into fixed train and test parts.
eval_sources are tested on only (the paper's general-domain setting: train on Dolly, test on MMLU). A
single source keeps its own components (Dolly's eight categories). download=True lets a loader fetch
a missing set from the hub with `datasets`; tests and CI never do.
"""
from __future__ import annotations

import random
from collections import defaultdict

from ..checks import check_choice, check_int
from .sources import load_dolly, load_gsm8k, load_humaneval, load_mmlu, mix_sources

SOURCES = ("gsm8k", "mmlu", "humaneval", "dolly")
DATA_KEYS = ("kind", "sources", "eval_sources", "n_train", "n_test", "n_val", "seed", "download",
             "cluster_features", "cluster_text")
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


def mmlu_shots(download: bool = False) -> dict[str, list[dict]]:
    """subject -> MMLU's dev rows of that subject (five each), the solved examples of a few-shot prompt."""
    shots = defaultdict(list)
    for row in load_mmlu("dev", download=download):
        shots[row["subject"]].append(row)
    return dict(shots)


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
    check_int("n_train", data["n_train"], 1)
    n_val = data.get("n_val", 0)
    check_int("n_val", n_val, 0)
    n_test = test_counts(data["n_test"], sources + eval_sources)
    seed = data.get("seed", 0)
    rng = random.Random(seed)
    train_pools, val_pools, test_pools = {}, {}, {}
    for name in sources + eval_sources:
        train, test = load_source(name, data.get("download", False))
        if name in sources:
            drawn = rng.sample(train, min(data["n_train"] + n_val, len(train)))
            val_pools[name], train_pools[name] = drawn[:min(n_val, len(drawn) - 1)], drawn[min(n_val, len(drawn) - 1):]
        test_pools[name] = rng.sample(test, len(test) if n_test[name] == "all" else min(n_test[name], len(test)))
    if len(sources) == 1:  # one training source: its own labels (e.g. Dolly's categories) are the components
        (name,) = sources
        components = sorted({r["component_name"] for r in train_pools[name] + val_pools[name] + test_pools[name]})
        renumber = {c: i for i, c in enumerate(components)}
        train = [{**r, "component": renumber[r["component_name"]]} for r in train_pools[name]]
        validation = [{**r, "component": renumber[r["component_name"]]} for r in val_pools[name]]
        test = [{**r, "component": renumber[r["component_name"]]} for r in test_pools[name]]
    else:
        components = list(sources)
        train = mix_sources(train_pools, None, seed)
        validation = mix_sources(val_pools, None, seed) if n_val else []
        test = mix_sources({name: test_pools[name] for name in sources}, None, seed)
    for name in eval_sources:  # test-only sources: one component each, numbered after the trained ones
        test += [{**r, "component": len(components), "component_name": name, "subcomponent": r["component"],
                  "subcomponent_name": r["component_name"]} for r in test_pools[name]]
        components.append(name)
    return {"train": train, "validation": validation, "test": test, "components": components}


def test_counts(n_test, sources: list[str]) -> dict:
    """{source: count or "all"} from a spec's n_test: one count (or "all") for every source, or a dict naming
    each source once."""
    def checked(key, value):
        if value != "all":
            check_int(key, value, 1)
        return value
    if isinstance(n_test, dict):
        if set(n_test) != set(sources):
            raise ValueError(f"n_test names sources {sorted(n_test)}, but the spec has {sorted(sources)}; "
                             "name each source once, or give one count for all")
        return {name: checked(f"n_test[{name!r}]", n_test[name]) for name in sources}
    return {name: checked("n_test", n_test) for name in sources}
