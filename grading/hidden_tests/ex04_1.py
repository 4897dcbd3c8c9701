"""04.1, elbow_of(ks, sse): the k farthest from the chord through the first and last points; my_elbow.
Hidden inputs: curves whose ks are spaced by 2 and start at 3 (an index is not a k there); clustering.elbow_k
(the public check's reference) blocked."""
from types import SimpleNamespace

import numpy as np
from otter.test_files import test_case

import hydralib
from hydralib import clustering
from hydralib.grading import exercise_run

OK_FORMAT = False
name = "04.1"
RULE = "the task is to find the elbow yourself: calling clustering.elbow_k is not allowed"
CURVES = [(list(range(3, 19, 2)), [120, 60, 35, 26, 21, 18, 16.5, 15.5]),
          (list(range(2, 14, 2)), [90, 70, 30, 24, 20, 18])]
SWEEP = SimpleNamespace(ks=list(range(4, 13)), sse=[400, 210, 120, 100, 90, 84, 80, 77, 75])


def run(SUBMITTED):
    inputs = {"np": np, "hydralib": hydralib, "clustering": clustering, "sweep": SWEEP}
    return exercise_run(SUBMITTED.get(name), inputs, [clustering.elbow_k], RULE)


@test_case(name="04.1 elbow_of", points=1, hidden=True)
def elbow_values(SUBMITTED):
    expected = [clustering.elbow_k(ks, sse) for ks, sse in CURVES]
    with run(SUBMITTED) as namespace:
        elbow_of = namespace.get("elbow_of")
        assert callable(elbow_of), "define elbow_of(ks, sse)"
        for (ks, sse), want in zip(CURVES, expected):
            got = elbow_of(list(ks), list(sse))
            assert got is not None and abs(got - want) <= 1, \
                f"elbow_of returns {got!r} for a curve with ks {ks[0]}, {ks[1]}, ...: return the k, not its index"


@test_case(name="04.1 my_elbow", points=1, hidden=True)
def my_elbow(SUBMITTED):
    want = clustering.elbow_k(SWEEP.ks, SWEEP.sse)
    with run(SUBMITTED) as namespace:
        got = namespace.get("my_elbow")
    assert got is not None and abs(got - want) <= 1, \
        "my_elbow is not the sweep's elbow: set my_elbow = elbow_of(sweep.ks, sweep.sse)"
