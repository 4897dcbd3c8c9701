"""05.2, head_grads: the N blocks of ex_layer.lora_B.grad after one backward of (ex_layer(ex_x) ** 2).sum().
Hidden inputs: a layer of other sizes (9 -> 6, r = 3, N = 3), the cell run once and twice (gradients add up);
ex_make_layer, which the public check builds its reference with, fails when called."""
import copy

import torch
from otter.test_files import test_case

import hydralib
from hydralib.grading import exercise_run
from hydralib.layers import AdapterLayer

OK_FORMAT = False
name = "05.2"
RULE = "the task asks for ex_layer's own gradients: building a fresh layer with ex_make_layer is not allowed"


def ex_make_layer():  # the hidden stand-in for the notebook's function: calling it is the shortcut
    raise RuntimeError("not used")


def hidden_layer():
    torch.manual_seed(31)
    return AdapterLayer(torch.nn.Linear(9, 6), hydralib.AdapterConfig(method="hydra", r=3, alpha=6, heads=3,
                                                                     gate="uniform"))


def check(SUBMITTED, runs):
    layer, x = hidden_layer(), torch.randn(4, 9, generator=torch.Generator().manual_seed(32))
    fresh = copy.deepcopy(layer)
    (fresh(x) ** 2).sum().backward()
    expected = [fresh.lora_B.grad[:, i * 3:(i + 1) * 3] for i in range(3)]
    inputs = {"torch": torch, "hydralib": hydralib, "AdapterLayer": AdapterLayer, "ex_layer": layer, "ex_x": x,
              "ex_make_layer": ex_make_layer}
    code = SUBMITTED.get(name)
    for _ in range(runs - 1):  # the cell run before: what it leaves in ex_layer stays
        with exercise_run(code, inputs, [ex_make_layer], RULE):
            pass
    with exercise_run(code, inputs, [ex_make_layer], RULE) as namespace:
        grads = namespace.get("head_grads")
    assert grads is not None and len(grads) == 3, "head_grads: a list with one gradient block per head (N blocks)"
    assert all(tuple(g.shape) == (6, 3) for g in grads), "cut lora_B.grad by columns: head i is columns i*r:(i+1)*r"
    assert all(torch.allclose(g, e, atol=1e-6) for g, e in zip(grads, expected)), \
        ("not the gradients of one backward" + (": gradients add up over runs, zero them first" if runs > 1 else ""))


@test_case(name="05.2 one run", points=1, hidden=True)
def one_run(SUBMITTED):
    check(SUBMITTED, 1)


@test_case(name="05.2 run twice", points=1, hidden=True)
def run_twice(SUBMITTED):
    check(SUBMITTED, 2)
