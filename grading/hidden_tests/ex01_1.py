"""01.1, split_parameters(k, d, n, r, router): trainable parameters of LoRA-Split n x r on one k -> d layer.
Hidden inputs: layer sizes, n and r the notebook never uses; the reference is count_parameters on that layer."""
import torch
from otter.test_files import test_case

import hydralib
from hydralib.grading import exercise_run

OK_FORMAT = False
name = "01.1"
RULE = "the task is to count the parameters yourself: calling hydralib.count_parameters is not allowed"
CASES = [(10, 6, 3, 2), (7, 9, 5, 1), (64, 32, 2, 16)]  # k, d, n, r


def reference(k, d, n, r, router):
    model = torch.nn.ModuleDict({"layer": torch.nn.Linear(k, d)})
    config = hydralib.AdapterConfig(method="split", r=r, alpha=2 * r, heads=n, gate="learned" if router else "uniform")
    counts = hydralib.count_parameters(hydralib.add_adapters(model, config, seed=0))
    return counts.adapter + (counts.router if router else 0)


def check(SUBMITTED, router):
    expected = {case: reference(*case, router) for case in CASES}
    inputs = {"hydralib": hydralib, "torch": torch}
    with exercise_run(SUBMITTED.get(name), inputs, [hydralib.count_parameters], RULE) as namespace:
        split_parameters = namespace.get("split_parameters")
        assert callable(split_parameters), "define split_parameters(k, d, n, r, router)"
        for (k, d, n, r), want in expected.items():
            got = split_parameters(k, d, n, r, router)
            assert got == want, (f"split_parameters({k}, {d}, {n}, {r}, router={router}) returns {got!r}: "
                                 + ("count the router's weights too" if router else "each LoRA has its own A and B"))


@test_case(name="01.1 without a router", points=1, hidden=True)
def without_router(SUBMITTED):
    check(SUBMITTED, False)


@test_case(name="01.1 with a router", points=1, hidden=True)
def with_router(SUBMITTED):
    check(SUBMITTED, True)
