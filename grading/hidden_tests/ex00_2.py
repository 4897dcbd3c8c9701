"""00.2, my_zero_at_start and my_zero_later: which of A, B and the router get no gradient, (1) at the first step from
a Kaiming router with every B at zero, (2) after some steps from a zero router. The answers are sets of names; the
check's zero_gradients (which trains a small layer to find them) is blocked: the task is to read them off the
chain rule. The expected sets are derived in the notebook's exercise text (B_i = 0; equal heads under g_i = 1/N)."""
from otter.test_files import test_case

import hydralib
from hydralib.grading import exercise_run
from hydralib.notebook import zero_gradients

OK_FORMAT = False
name = "00.2"
RULE = ("the task is to read the zero gradients off the chain rule: calling zero_gradients, which trains a layer to "
        "find them, is not allowed")
NAMES = {"A", "B", "router"}


def answer(SUBMITTED, variable):
    inputs = {"hydralib": hydralib, "zero_gradients": zero_gradients}
    with exercise_run(SUBMITTED.get(name), inputs, [zero_gradients], RULE) as namespace:
        got = namespace.get(variable)
    assert isinstance(got, (set, frozenset, list, tuple)) and set(got) <= NAMES, \
        f'{variable}: a set of names from {{"A", "B", "router"}}'
    return set(got)


@test_case(name="00.2 at the first step", points=1, hidden=True)
def at_start(SUBMITTED):
    assert answer(SUBMITTED, "my_zero_at_start") == zero_gradients("kaiming", steps=0), \
        "my_zero_at_start: with every B_i at zero, which of the four formulas keep a factor B_i (u_i holds one)?"


@test_case(name="00.2 from a zero router", points=1, hidden=True)
def later(SUBMITTED):
    assert answer(SUBMITTED, "my_zero_later") == zero_gradients("zeros", steps=3, seed=1), \
        ("my_zero_later: from R = 0 the heads stay equal; what is u_j - sum_i g_i u_i then, and A's gradient once B "
         "moved?")
