"""05.1, my_prediction and my_reason: "w/o gate" against LoRA r8, predicted before the runs. Under plain Adam in
fp32 the two train the same model (the check's uniform_gate_gap shows it on a small layer), so the prediction that
follows from the layer is "level"; the reason earns its point for being a sentence written before any run: an
instructor reads it. Running the runs (run_methods) or the check's uniform_gate_gap is blocked."""
from otter.test_files import test_case

import hydralib
from hydralib.grading import exercise_run
from hydralib.notebook import uniform_gate_gap
from hydralib.specs import run_methods

OK_FORMAT = False
name = "05.1"
RULE = ("the task is a prediction made before the runs, from the layer's equation: running the runs or calling the "
        "check's uniform_gate_gap is not allowed")


def answer(SUBMITTED):
    inputs = {"hydralib": hydralib, "run_methods": run_methods, "uniform_gate_gap": uniform_gate_gap}
    with exercise_run(SUBMITTED.get(name), inputs, [run_methods, uniform_gate_gap], RULE) as namespace:
        return namespace.get("my_prediction"), namespace.get("my_reason")


@test_case(name="05.1 prediction", points=1, hidden=True)
def prediction(SUBMITTED):
    predicted, _ = answer(SUBMITTED)
    assert predicted in ("higher", "level", "lower"), 'my_prediction: "higher", "level" or "lower"'
    assert predicted == "level", ("not what the layer gives: with every B_i at zero and g_i = 1/N, compare the heads' "
                                  "gradients and what equal heads weighted 1/N add up to, under Adam")


@test_case(name="05.1 reason", points=1, hidden=True)
def reason(SUBMITTED):
    _, why = answer(SUBMITTED)
    assert isinstance(why, str) and len(why.split()) >= 8, "my_reason: your reason as a sentence (8 words or more)"
