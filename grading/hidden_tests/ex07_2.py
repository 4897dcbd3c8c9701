"""07.2, permute_layer(gates, layer, permutation) and my_invariant: one layer's heads renumbered (its new head j is
its old head permutation[j]); the NMI that no renumbering can change is the per-layer one. Hidden inputs: other gate
arrays, layers and permutations, among them gates whose layer-averaged NMI moves from 0 to 1 under a renumbering;
permute_heads, permutation_nmis and strongest_renumbering (the public check's references) blocked."""
import numpy as np
from otter.test_files import test_case

import hydralib
from hydralib.grading import exercise_run
from hydralib.notebook import permutation_nmis, permute_heads, strongest_renumbering

OK_FORMAT = False
name = "07.2"
RULE = ("the task is to renumber the heads yourself: calling permute_heads, permutation_nmis or strongest_renumbering "
        "is not allowed")
# two components, two heads, two layers that separate them under opposite head numbers (tests/test_notebook.py)
OPPOSITE = np.array([[[0.9, 0.1], [0.4, 0.6]], [[0.6, 0.4], [0.1, 0.9]],
                     [[0.1, 0.9], [0.6, 0.4]], [[0.4, 0.6], [0.9, 0.1]]])
CASES = [(np.arange(60.0).reshape(3, 4, 5), 2, [4, 0, 3, 1, 2]), (OPPOSITE, 1, [1, 0]),
         (np.random.default_rng(7).dirichlet(np.ones(3), size=(6, 2)), 0, [2, 0, 1])]


def run(SUBMITTED):
    references = [permute_heads, permutation_nmis, strongest_renumbering]
    inputs = {"np": np, "hydralib": hydralib, **{f.__name__: f for f in references}, "ex_gates": OPPOSITE,
              "ex_components": [0, 0, 1, 1]}
    return exercise_run(SUBMITTED.get(name), inputs, references, RULE)


@test_case(name="07.2 permute_layer", points=1, hidden=True)
def renumbered(SUBMITTED):
    expected = [permute_heads(gates, layer, permutation) for gates, layer, permutation in CASES]
    with run(SUBMITTED) as namespace:
        function = namespace.get("permute_layer")
        assert callable(function), "define permute_layer(gates, layer, permutation)"
        for (gates, layer, permutation), want in zip(CASES, expected):
            given = gates.copy()
            got = np.asarray(function(given, layer, list(permutation)), dtype=float)
            assert got.shape == gates.shape and np.allclose(got, want), \
                (f"wrong on a {gates.shape} array, layer {layer}: only that layer changes, and its new head j is its "
                 "old head permutation[j]")
            assert np.array_equal(given, gates), "return a copy: the given gates must stay as they were"


@test_case(name="07.2 my_invariant", points=1, hidden=True)
def invariant(SUBMITTED):
    with run(SUBMITTED) as namespace:
        got = namespace.get("my_invariant")
    assert got in ("per-layer", "layer-averaged"), 'my_invariant: "per-layer" or "layer-averaged"'
    assert got == "per-layer", "renumber one layer: which NMI compares its heads with those of other layers?"
