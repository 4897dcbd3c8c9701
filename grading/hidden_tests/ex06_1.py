"""06.1, my_tokens_per_s: {method: tokens per second of its training step} from step_s and the batch shape.
Hidden inputs: other methods, step times and batch shape; results without the tokens_per_s column."""
import torch
from otter.test_files import test_case

import hydralib
from hydralib.grading import exercise_run

OK_FORMAT = False
name = "06.1"
BATCH_SIZE, SEQ_LEN = 3, 17
STEP_S = {"LoRA r4": 0.25, "Hydra r4 N=5 token router": 0.4, "Full FT": 1.3}


def run(SUBMITTED):
    results = {method: {"step_s": step, "peak_bytes": 1_000_000, "paper": 100.0} for method, step in STEP_S.items()}
    batch = torch.randint(0, 50, (BATCH_SIZE, SEQ_LEN), generator=torch.Generator().manual_seed(41))
    inputs = {"torch": torch, "hydralib": hydralib, "results": results, "batch_size": BATCH_SIZE,
              "seq_len": SEQ_LEN, "batch": batch}
    with exercise_run(SUBMITTED.get(name), inputs) as namespace:
        got = namespace.get("my_tokens_per_s")
    assert isinstance(got, dict), "set my_tokens_per_s to a dict"
    return got


@test_case(name="06.1 methods", points=1, hidden=True)
def methods(SUBMITTED):
    assert set(run(SUBMITTED)) == set(STEP_S), "one entry per method: use the keys of results"


@test_case(name="06.1 tokens per second", points=1, hidden=True)
def values(SUBMITTED):
    got = run(SUBMITTED)
    for method, step in STEP_S.items():
        assert method in got and abs(got[method] / (BATCH_SIZE * SEQ_LEN / step) - 1) < 1e-6, \
            f"wrong for {method!r}: the tokens of one batch (rows times tokens per row) over the step time"
