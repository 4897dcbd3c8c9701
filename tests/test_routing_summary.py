"""Routing against the true components per layer, heads matched across layers, and the strength of the gates."""
import math

import numpy as np
import pytest
import torch

from hydralib.clustering import gate_strength, layer_nmi, match_heads, routing_summary

N_COMPONENTS = 4


def routed_gates(n_rows=400, n_layers=2, seed=0):
    """Every layer sends component c to head c, each row with its own strength per layer (top weight 0.3-0.9)."""
    rng = np.random.default_rng(seed)
    components = np.arange(n_rows) % N_COMPONENTS
    top = rng.uniform(0.3, 0.9, size=(n_rows, n_layers))
    gates = np.repeat(((1 - top) / (N_COMPONENTS - 1))[..., None], N_COMPONENTS, axis=-1)
    for layer in range(n_layers):
        gates[np.arange(n_rows), layer, components] = top[:, layer]
    return torch.tensor(gates, dtype=torch.float32), components


def rows_of(components):
    return [{"component": int(c)} for c in components]


def test_permuting_one_layers_heads_changes_the_layer_averaged_nmi_only():
    gates, components = routed_gates()
    names = [f"c{i}" for i in range(N_COMPONENTS)]
    profile = {"layers": ["l0", "l1"], "gates": gates}
    before = routing_summary(profile, rows_of(components), names)
    permuted = gates.clone()
    permuted[:, 1] = gates[:, 1][:, [1, 2, 3, 0]]  # layer 1's head 0 is now called head 3, and so on
    after = routing_summary({**profile, "gates": permuted}, rows_of(components), names)
    assert before["nmi"] == pytest.approx(1.0) and before["nmi_per_layer"] == pytest.approx([1.0, 1.0])
    # averaged over layers, a row goes to head c or c - 1 by whichever layer is stronger for it
    assert after["nmi"] < 0.7
    assert after["nmi_per_layer"] == before["nmi_per_layer"]
    assert after["nmi_layer_mean"] == after["nmi_layer_max"] == pytest.approx(1.0)
    assert after["nmi_matched"] == pytest.approx(1.0)  # the Hungarian matching undoes the permutation
    for key in ("top_gate_mean", "gate_entropy_mean", "majority_head_share"):
        assert after[key] == pytest.approx(before[key])
    assert set(before["usage_by_component"]) == set(names) and before["layers"] == ["l0", "l1"]
    assert before["usage_by_component"]["c2"][1][2] == pytest.approx(float(gates[components == 2, 1, 2].mean()))


def test_match_heads_recovers_a_known_permutation_without_labels():
    gates, _ = routed_gates(n_layers=3, seed=1)
    shuffled = gates.numpy().copy()
    shuffled[:, 2] = shuffled[:, 2][:, [2, 0, 3, 1]]
    assert np.allclose(match_heads(shuffled, reference=0), gates.numpy())
    with pytest.raises(ValueError, match="reference layer must lie in 0..2"):
        match_heads(shuffled, reference=3)


@pytest.mark.parametrize("n_heads", [2, 8])
def test_uniform_gates_have_entropy_log_n_top_gate_one_over_n_and_no_majority(n_heads):
    gates = torch.full((40, 3, n_heads), 1.0 / n_heads)
    strength = gate_strength(gates, np.arange(40) % 4)
    assert strength["gate_entropy_mean"] == pytest.approx(math.log(n_heads))
    assert strength["gate_entropy_uniform"] == pytest.approx(math.log(n_heads))
    assert strength["top_gate_mean"] == pytest.approx(1.0 / n_heads)
    assert strength["majority_head_share"] == 0.0


def test_one_hot_gates_route_at_full_strength():
    components = np.arange(40) % 4
    gates = torch.nn.functional.one_hot(torch.tensor(components), 4).float()[:, None].repeat(1, 2, 1)
    strength = gate_strength(gates, components)
    assert strength == {"top_gate_mean": 1.0, "gate_entropy_mean": 0.0, "gate_entropy_uniform": pytest.approx(math.log(4)),
                        "majority_head_share": 1.0}
    # a near-uniform router that still picks its component's head: NMI 1, strength near the uniform level
    weak = 0.25 + 0.01 * (gates - 0.25)
    assert layer_nmi(weak, components)["nmi_layer_mean"] == pytest.approx(1.0)
    assert gate_strength(weak, components)["top_gate_mean"] < 0.26


def test_random_heads_give_a_majority_share_near_one_over_n():
    rng = np.random.default_rng(3)
    gates = torch.tensor(rng.dirichlet(np.ones(8), size=(4000, 2)))
    share = gate_strength(gates, np.arange(4000) % 8)["majority_head_share"]
    assert 1 / 8 <= share < 0.2  # the majority head is the most used of 8 random ones: a little above 1/8


def test_bad_profiles_are_refused():
    with pytest.raises(ValueError, match="for 3 rows"):
        routing_summary({"layers": [], "gates": torch.zeros(2, 1, 4)}, rows_of([0, 1, 2]), ["a", "b", "c"])
    with pytest.raises(ValueError, match="one component per row"):
        gate_strength(torch.zeros(2, 1, 4), [0])
