"""03.1, my_paper_size: Hydra r with paper_heads heads in the paper's convention, from ex_shapes.
Hidden inputs: other layer shapes, r and N; count_parameters (the public check's reference) blocked."""
import torch
from otter.test_files import test_case

import hydralib
from hydralib.grading import exercise_run

OK_FORMAT = False
name = "03.1"
RULE = "the task is to count in the paper's convention yourself: calling hydralib.count_parameters is not allowed"
# r, N, (k, d) of each layer; the k and the d do not sum alike, so an exact count differs from the convention
SETTINGS = {"first": (4, 5, [(12, 20), (20, 12), (12, 30)]), "second": (2, 3, [(9, 30), (30, 16)])}


def check(SUBMITTED, setting):
    r, heads, shapes = SETTINGS[setting]
    model = torch.nn.ModuleDict({f"layer{i}": torch.nn.Linear(k, d) for i, (k, d) in enumerate(shapes)})
    hydralib.add_adapters(model, hydralib.AdapterConfig(method="hydra", r=r, alpha=2 * r, heads=heads), seed=0)
    counts = hydralib.count_parameters(model)
    inputs = {"hydralib": hydralib, "torch": torch, "r": r, "paper_heads": heads, "ex_shapes": shapes,
              "ex_model": model}
    with exercise_run(SUBMITTED.get(name), inputs, [hydralib.count_parameters], RULE) as namespace:
        got = namespace.get("my_paper_size")
    assert got is not None, "set my_paper_size"
    if abs(got - counts.paper) > 0.5:
        if abs(got - (counts.adapter + counts.router)) < 0.5 or abs(got - counts.adapter) < 0.5:
            raise AssertionError("that is the exact count of the weights; the convention counts (#A + #B) / 2 LoRAs")
        raise AssertionError("one rank-r LoRA is r (k + d) summed over the layers, times (#A + #B) / 2, no router")


@test_case(name="03.1 first hidden model", points=1, hidden=True)
def first(SUBMITTED):
    check(SUBMITTED, "first")


@test_case(name="03.1 second hidden model", points=1, hidden=True)
def second(SUBMITTED):
    check(SUBMITTED, "second")
