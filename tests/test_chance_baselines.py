"""Chance baselines with known answers: the cosine of random vectors, a permutation baseline for the LoRA
similarities, and the NMI of a random router."""
import math
import statistics

import numpy as np
import pytest
import torch
from sklearn.metrics import normalized_mutual_info_score

from hydralib.anatomy import (chance_cosine, chance_similarity, mean_similarity, pairwise_cosine,
                              permutation_similarity)
from hydralib.claims import compare_to_baseline
from hydralib.clustering import permuted_router_nmi, random_router_nmi


def random_cosines(d, n=4000, seed=0):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    return (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)


def test_chance_cosine_is_exact_for_small_and_large_sizes():
    assert chance_cosine(2, absolute=True)["mean"] == pytest.approx(2 / math.pi)  # E|cos theta|, theta uniform
    for d in (10_000, 100_000):
        assert chance_cosine(d, absolute=True)["mean"] == pytest.approx(math.sqrt(2 / (math.pi * d)), rel=1e-3)
        assert chance_cosine(d)["sd"] == pytest.approx(1 / math.sqrt(d))
        assert chance_cosine(d)["mean"] == 0.0
    assert chance_cosine(10_000)["q95"] == pytest.approx(1.645e-2, rel=0.01)  # ~0 +- 0.01 at d = 10^4
    with pytest.raises(ValueError, match="at least 2"):
        chance_cosine(1)


@pytest.mark.parametrize("d", [3, 50, 1000])
def test_chance_cosine_matches_simulated_random_vectors(d):
    c = random_cosines(d)
    signed, absolute = chance_cosine(d), chance_cosine(d, absolute=True)
    assert np.mean(c) == pytest.approx(0, abs=4 * signed["sd"] / math.sqrt(len(c)))
    assert np.std(c) == pytest.approx(signed["sd"], rel=0.05)
    assert np.mean(np.abs(c)) == pytest.approx(absolute["mean"], rel=0.04)
    assert np.mean(c > signed["q95"]) == pytest.approx(0.05, abs=0.012)
    assert np.mean(np.abs(c) > absolute["q95"]) == pytest.approx(0.05, abs=0.012)
    lo, hi = signed["interval"]
    assert np.mean((c < lo) | (c > hi)) == pytest.approx(0.05, abs=0.012)


def random_family(seed, n=3, layers=2, shape_a=(4, 64), shape_b=(64, 4), shared_a=None):
    g = torch.Generator().manual_seed(seed)
    return {f"lora{i}": {f"layers.{l}.q_proj": {"A": shared_a if shared_a is not None else torch.randn(shape_a, generator=g),
                                                "B": torch.randn(shape_b, generator=g)}
                         for l in range(layers)} for i in range(n)}


def test_chance_similarity_and_the_permutation_baseline_agree_on_random_lora_families():
    """Independent random tensors: mean_similarity over 300 families spreads as chance_similarity says, and
    the permutation draws of one family have the same spread."""
    measured = [statistics.fmean(pairwise_cosine(random_family(s), "A").values()) for s in range(300)]
    chance = chance_similarity(random_family(0), "A")
    assert chance["sizes"] == {"layers.0.q_proj": 256, "layers.1.q_proj": 256}
    assert chance["sd"] == pytest.approx(math.sqrt(2 / (3 * 256)) / 2)
    assert statistics.fmean(measured) == pytest.approx(0, abs=4 * chance["sd"] / math.sqrt(300))
    assert statistics.stdev(measured) == pytest.approx(chance["sd"], rel=0.15)
    draws = permutation_similarity(random_family(0), n_permutations=300, seed=1, matrices=("A",))
    assert len(draws["A"]) == 300 and statistics.stdev(draws["A"]) == pytest.approx(chance["sd"], rel=0.15)
    few = permutation_similarity(random_family(0), n_permutations=5, seed=1)
    assert set(few) == {"A", "B", "BA"} and few == permutation_similarity(random_family(0), n_permutations=5, seed=1)


def test_a_shared_a_is_far_above_its_permutation_baseline_and_independent_ones_are_not():
    shared = torch.randn(4, 64, generator=torch.Generator().manual_seed(99))
    same_a = [mean_similarity(random_family(s, shared_a=shared))["A"] for s in range(5)]
    baselines = [permutation_similarity(random_family(s, shared_a=shared), 50, seed=s, matrices=("A",))["A"]
                 for s in range(5)]
    assert same_a == pytest.approx([1.0] * 5) and max(max(b) for b in baselines) < 0.3
    assert compare_to_baseline(same_a, baselines)["verdict"] == "held"
    # independent A per LoRA (different seeds): a "claim" at chance is held about as often as chance allows
    held = 0
    for replicate in range(40):
        seeds = range(10 * replicate, 10 * replicate + 5)
        values = [statistics.fmean(pairwise_cosine(random_family(s), "A").values()) for s in seeds]
        chance = [chance_similarity(random_family(s), "A") for s in seeds]
        held += compare_to_baseline(values, chance)["verdict"] == "held"
    assert held <= 5  # expected 1 (2.5 % of 40)


def test_perfect_routing_is_far_above_a_random_router_and_a_random_one_is_within_its_band():
    components = np.repeat(np.arange(8), 64)  # 512 rows, 8 balanced components
    chance = random_router_nmi(components, n_heads=8, n_draws=200, seed=0)
    # finite rows give chance a positive NMI: MI ~ (K-1)(N-1)/(2 rows) nats over entropies of ln 8
    assert chance["mean"] == pytest.approx(49 / (2 * 512) / math.log(8), rel=0.25)
    assert 0 < chance["mean"] < chance["q95"] < 0.05 and len(chance["draws"]) == 200
    assert normalized_mutual_info_score(components, components) == 1.0 > 10 * chance["q95"]
    rng = np.random.default_rng(123)
    fresh = [normalized_mutual_info_score(components, rng.integers(8, size=components.size)) for _ in range(400)]
    assert np.mean(np.array(fresh) <= chance["q95"]) == pytest.approx(0.95, abs=0.04)
    assert random_router_nmi(components, 8, n_draws=20, seed=3) == random_router_nmi(components, 8, n_draws=20, seed=3)
    with pytest.raises(ValueError, match="n_heads"):
        random_router_nmi(components, 0)


def test_the_permuted_router_keeps_head_usage_and_an_nmi_claim_is_judged_against_it():
    components = np.repeat(np.arange(4), 100)
    good = np.where(np.random.default_rng(0).random(400) < 0.8, components, 0)  # mostly the right head
    chance = permuted_router_nmi(components, good, n_draws=100)
    measured = normalized_mutual_info_score(components, good)
    assert chance["q95"] < 0.05 < measured
    nmis = [measured, measured - 0.02, measured + 0.01]
    assert compare_to_baseline(nmis, [chance] * 3)["verdict"] == "held"
    with pytest.raises(ValueError, match="one chosen head per component"):
        permuted_router_nmi(components, good[:10])
