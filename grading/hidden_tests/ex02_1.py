"""02.1, cosine(a, b) of two flattened tensors, and my_similarity = cosine(ex_a, ex_b).
Hidden inputs: tensors of other shapes and scales; anatomy.cosine_matrix (the public check's reference) blocked."""
import torch
from otter.test_files import test_case

import hydralib
from hydralib import anatomy
from hydralib.grading import exercise_run

OK_FORMAT = False
name = "02.1"
RULE = "the task is to write the cosine yourself: calling anatomy.cosine_matrix is not allowed"


def tensors():
    generator = torch.Generator().manual_seed(21)
    a, b = torch.randn(3, 5, generator=generator), torch.randn(3, 5, generator=generator)
    return a * 7, b * 0.01 + a * 0.002


def reference(a, b):
    return float(torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))


def run(SUBMITTED):
    ex_a, ex_b = tensors()
    inputs = {"torch": torch, "hydralib": hydralib, "anatomy": anatomy, "ex_a": ex_a, "ex_b": ex_b}
    return exercise_run(SUBMITTED.get(name), inputs, [anatomy.cosine_matrix], RULE), ex_a, ex_b


@test_case(name="02.1 cosine", points=1, hidden=True)
def cosine_values(SUBMITTED):
    run_block, ex_a, ex_b = run(SUBMITTED)
    pairs = [(ex_a, ex_b), (ex_a, -2 * ex_a), (ex_b[0], ex_b[2]), (ex_a.T, ex_b.T.contiguous())]
    expected = [reference(a, b) for a, b in pairs]
    with run_block as namespace:
        cosine = namespace.get("cosine")
        assert callable(cosine), "define cosine(a, b)"
        for (a, b), want in zip(pairs, expected):
            got = float(cosine(a, b))
            assert abs(got - want) < 1e-5, \
                f"cosine of two {tuple(a.shape)} tensors is {got:.6f}: dot product over the product of the norms"


@test_case(name="02.1 my_similarity", points=1, hidden=True)
def similarity(SUBMITTED):
    run_block, ex_a, ex_b = run(SUBMITTED)
    want = reference(ex_a, ex_b)
    with run_block as namespace:
        got = namespace.get("my_similarity")
    assert got is not None and abs(float(got) - want) < 1e-5, \
        "my_similarity is not the cosine of ex_a and ex_b: set my_similarity = cosine(ex_a, ex_b)"
