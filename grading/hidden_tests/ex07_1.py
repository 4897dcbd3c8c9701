"""07.1, per_head_components(matrix): mean over heads of exp(entropy of the head's normalised column); my_spread.
Hidden inputs: other usage matrices (zeros, one head, unnormalised counts); components_per_head (the public
check's reference) blocked."""
import numpy as np
from otter.test_files import test_case

import hydralib
from hydralib.clustering import components_per_head
from hydralib.grading import exercise_run

OK_FORMAT = False
name = "07.1"
RULE = "the task is to compute the spread yourself: calling components_per_head is not allowed"
MATRICES = [np.array([[3.0, 0.0, 1.0], [1.0, 0.0, 1.0], [0.0, 5.0, 1.0], [0.0, 0.0, 1.0]]),
            np.array([[0.2], [0.3], [0.5]]), np.array([[9.0, 1.0], [1.0, 9.0]])]
USAGE = np.array([[0.5, 0.1, 0.0, 0.2], [0.3, 0.1, 0.6, 0.2], [0.2, 0.8, 0.4, 0.6]])


def run(SUBMITTED):
    inputs = {"np": np, "hydralib": hydralib, "components_per_head": components_per_head, "ex_usage": USAGE}
    return exercise_run(SUBMITTED.get(name), inputs, [components_per_head], RULE)


@test_case(name="07.1 per_head_components", points=1, hidden=True)
def spread_values(SUBMITTED):
    expected = [components_per_head(m) for m in MATRICES]
    with run(SUBMITTED) as namespace:
        function = namespace.get("per_head_components")
        assert callable(function), "define per_head_components(matrix)"
        for matrix, want in zip(MATRICES, expected):
            got = function(matrix.copy())
            assert got is not None and np.isfinite(got), "nan or inf where a head has zero shares: 0 ln 0 counts as 0"
            assert abs(got - want) < 1e-6, \
                f"wrong on a {matrix.shape[0]} x {matrix.shape[1]} matrix: normalise columns, average exp(H)"


@test_case(name="07.1 my_spread", points=1, hidden=True)
def my_spread(SUBMITTED):
    want = components_per_head(USAGE)
    with run(SUBMITTED) as namespace:
        got = namespace.get("my_spread")
    assert got is not None and abs(got - want) < 1e-6, \
        "my_spread is not the spread of ex_usage: set my_spread = per_head_components(ex_usage)"
