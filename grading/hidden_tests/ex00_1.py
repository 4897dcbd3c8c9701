"""00.1, the fused HydraLoRA update: my_output = W0 x + s * sum_i g_i B_i A x, without calling the layer.
Hidden inputs: a layer of other sizes (k=10, d=7, r=3, N=3, s=2.5) with a random router and random B heads."""
import torch
from otter.test_files import test_case

from hydralib import AdapterConfig
from hydralib.grading import exercise_run
from hydralib.layers import AdapterLayer

OK_FORMAT = False
name = "00.1"
RULE = ("the task forbids calling the layer (down(x) or its forward, gate, project, loop_update, delta_weight): "
        "write the update out from down's tensors")


def hidden_inputs():
    torch.manual_seed(11)
    layer = AdapterLayer(torch.nn.Linear(10, 7, bias=False), AdapterConfig(method="hydra", r=3, alpha=7.5, heads=3))
    with torch.no_grad():
        layer.lora_B.normal_(0, 0.5)
        layer.router.normal_(0, 1.0)
    x = torch.randn(4, 10, generator=torch.Generator().manual_seed(12))
    with torch.no_grad():
        expected, frozen = layer(x), layer.base(x)
    return layer, x, expected, frozen


def my_output(SUBMITTED):
    layer, x, expected, frozen = hidden_inputs()
    blocked = [(layer, method) for method in ("forward", "gate", "project", "loop_update", "delta_weight")]
    with exercise_run(SUBMITTED.get(name), {"torch": torch, "down": layer, "ex_x": x}, blocked, RULE) as namespace:
        output = namespace.get("my_output")
    assert torch.is_tensor(output), "set my_output to a tensor"
    return output, expected, frozen


@test_case(name="00.1 shape", points=1, hidden=True)
def shape(SUBMITTED):
    output, expected, _ = my_output(SUBMITTED)
    assert tuple(output.shape) == tuple(expected.shape), \
        f"my_output has shape {tuple(output.shape)}: one row per row of ex_x, d columns"


@test_case(name="00.1 values", points=2, hidden=True)
def values(SUBMITTED):
    output, expected, frozen = my_output(SUBMITTED)
    output = output.detach().float()
    assert tuple(output.shape) == tuple(expected.shape), "the shape is wrong (see the shape test)"
    assert not torch.allclose(output, frozen, rtol=1e-4, atol=1e-5), "that is W0 x alone: add the adapter's update"
    assert torch.allclose(output, expected, rtol=1e-4, atol=1e-5), \
        "not the layer's output on the hidden inputs: check the softmax gate, the heads' columns of B and the scaling"
