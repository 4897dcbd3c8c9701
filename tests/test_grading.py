"""Autograding (`python -m hydralib grade`, hydralib.grading, grading/hidden_tests/): every exercise of every
notebook is graded for a correct, a wrong and a shortcut submission, and their points are asserted.

Four students hand in student copies of the notebooks (hydralib.student) with the exercise cells filled in:
`correct` with the instructor's solution cells (one of them split over two cells, as a student may), `wrong`
with a typical mistake per exercise (and the task comment deleted, so the grader finds the cells by their
check cells), `shortcut` with the call the task forbids or the public check's reference, and `untouched` hands
in the stubs of notebooks 00 to 03 only. Otter runs each student once, locally, in a kernel of this environment
(about 10 s a student on 2 busy cores).
"""
import csv
import shutil

import nbformat
import pytest

from hydralib import grading
from hydralib.grading import (HIDDEN_TESTS, NOT_ATTEMPTED, NOT_HANDED_IN, exercise_run, exercises, feedback_of,
                              hidden_test_problems, possible_points)
from hydralib.student import EXERCISE, NOTEBOOK_DIR, is_solution, student_copy, task_statement

EXERCISES = exercises(NOTEBOOK_DIR)

WRONG = {
    "00.1": "my_output = ex_x @ down.base.weight.T",  # W0 x alone
    "00.2": "my_zero_at_start = {'router'}\nmy_zero_later = {'router'}",  # A's factor B_i missed at the start
    "01.1": "def split_parameters(k, d, n, r, router):\n    return n * (r * k + d * r)",  # the router forgotten
    "02.1": ("def cosine(a, b):\n    u, v = a.flatten().double(), b.flatten().double()\n"
             "    return float(u @ v / (u.norm() ** 2 * v.norm() ** 2))\n\nmy_similarity = cosine(ex_a, ex_b)"),
    "03.1": "my_paper_size = sum(r * k + paper_heads * d * r + paper_heads * k for k, d in ex_shapes)",  # exact
    "04.1": ("def elbow_of(ks, sse):\n    x, y = np.asarray(ks, dtype=float), np.asarray(sse, dtype=float)\n"
             "    chord = y[0] + (y[-1] - y[0]) * (x - x[0]) / (x[-1] - x[0])\n"
             "    return int(np.argmax(np.abs(y - chord)))\n\nmy_elbow = elbow_of(sweep.ks, sweep.sse)"),  # an index
    "05.1": ("my_prediction = 'higher'\n"  # the gate's N heads taken for capacity; the reason is still a sentence
             "my_reason = 'the uniform gate averages N heads, which gives it more capacity than one LoRA'"),
    "05.2": ("(ex_layer(ex_x) ** 2).sum().backward()\nq = ex_layer.config.r\n"  # gradients not zeroed first
             "head_grads = [ex_layer.lora_B.grad[:, i * q:(i + 1) * q].clone() for i in range(ex_layer.heads)]"),
    "06.1": "my_tokens_per_s = {name: batch_size / res['step_s'] for name, res in results.items()}",  # rows only
    "07.1": ("def per_head_components(matrix):\n    shares = np.asarray(matrix, dtype=float)\n"
             "    shares = shares / shares.sum(axis=0, keepdims=True)\n"
             "    logs = np.log(np.where(shares > 0, shares, 1.0))\n"
             "    return float((-(shares * logs).sum(axis=0)).mean())\n\n"  # the entropy, not exp(entropy)
             "my_spread = per_head_components(ex_usage)"),
    "07.2": ("def permute_layer(gates, layer, permutation):\n    renumbered = np.array(gates, dtype=float)\n"
             "    renumbered[:, layer] = renumbered[:, layer][:, np.argsort(permutation)]\n"  # the inverse permutation
             "    return renumbered\n\nmy_invariant = 'per-layer'"),
    "08.1": ("import re\n\ndef final_answer(text):\n    if '####' not in text:\n        return None\n"  # no fallback
             "    found = re.findall(r'-?\\d+(?:,\\d{3})*(?:\\.\\d+)?', text.rsplit('####', 1)[1])\n"
             "    if not found:\n        return None\n"
             "    whole, _, fraction = found[0].replace(',', '').partition('.')\n"
             "    return whole if fraction and set(fraction) == {'0'} else found[0].replace(',', '')"),
}
SHORTCUT = {
    "00.1": "my_output = down(ex_x)",
    "00.2": ("my_zero_at_start = zero_gradients('kaiming', steps=0)\n"
             "my_zero_later = zero_gradients('zeros', steps=3)"),
    "01.1": ("from hydralib.layers import AdapterLayer\n\ndef split_parameters(k, d, n, r, router):\n"
             "    model = torch.nn.ModuleDict({'layer': torch.nn.Linear(k, d)})\n"
             "    gate = 'learned' if router else 'uniform'\n"
             "    config = hydralib.AdapterConfig(method='split', r=r, heads=n, gate=gate)\n"
             "    counts = hydralib.count_parameters(hydralib.add_adapters(model, config))\n"
             "    return counts.adapter + (counts.router if router else 0)"),
    "02.1": ("def cosine(a, b):\n"
             "    return float(anatomy.cosine_matrix(torch.stack([a.flatten(), b.flatten()]).double())[0, 1])\n\n"
             "my_similarity = cosine(ex_a, ex_b)"),
    "03.1": "my_paper_size = hydralib.count_parameters(ex_model).paper",
    "04.1": "elbow_of = clustering.elbow_k\nmy_elbow = elbow_of(sweep.ks, sweep.sse)",
    "05.1": ("my_prediction = 'level' if uniform_gate_gap() < 1e-4 else 'higher'\n"
             "my_reason = 'the small layer the check trains says so, with plain Adam in fp32'"),
    "05.2": ("ex_ref = ex_make_layer()\n(ex_ref(ex_x) ** 2).sum().backward()\n"
             "head_grads = [ex_ref.lora_B.grad[:, i * 2:(i + 1) * 2] for i in range(ex_ref.heads)]"),
    "06.1": "my_tokens_per_s = {name: res['tokens_per_s'] for name, res in results.items()}",
    "07.1": "per_head_components = components_per_head\nmy_spread = per_head_components(ex_usage)",
    "07.2": ("permute_layer = permute_heads\n"  # the check's references: renumbering and answer copied
             "ex_nmis = permutation_nmis(ex_gates, ex_components, *strongest_renumbering(ex_gates, ex_components))\n"
             "my_invariant = [view for view, (b, a) in ex_nmis.items() if np.allclose(b, a)][0]"),
    "08.1": "from hydralib.data.sources import extract_gsm8k_answer as final_answer",
}
POSSIBLE = {e.id: (3 if e.id == "00.1" else 2) for e in EXERCISES}
EXPECTED = {
    "correct": dict(POSSIBLE),
    "wrong": {"00.1": 1, "00.2": 1, "01.1": 1, "02.1": 0, "03.1": 0, "04.1": 0, "05.1": 1, "05.2": 1, "06.1": 1,
              "07.1": 0, "07.2": 1, "08.1": 1},
    "shortcut": {e.id: 0 for e in EXERCISES},
    "untouched": {e.id: 0 for e in EXERCISES},
}


def test_every_exercise_has_its_hidden_tests_and_a_wrong_and_a_shortcut_answer_here():
    assert [e.id for e in EXERCISES] == sorted(WRONG) == sorted(SHORTCUT)
    assert hidden_test_problems(EXERCISES, HIDDEN_TESTS) == []


def submission(path, answers, drop_task_line=False, split=()):
    """The student copy of an instructor notebook with its exercise cells answered (answers: id -> code)."""
    instructor = nbformat.read(path, as_version=4)
    nb = student_copy(instructor)
    solutions = [c for c in instructor.cells if c.cell_type == "code" and is_solution(c)]
    stubs = [i for i, c in enumerate(nb.cells) if EXERCISE in c.metadata.get("tags", []) and c.cell_type == "code"]
    for number, (index, solution) in reversed(list(enumerate(zip(stubs, solutions), 1))):
        exercise_id = f"{path.name[:2]}.{number}"
        code = answers[exercise_id] if answers is not None else solution.source
        if not drop_task_line:
            code = f"# {task_statement(solution.source)}\n{code}" if answers is not None else code
        if exercise_id in split:  # the answer over two cells: the grader reads both
            head, tail = code.split("\n\n", 1)
            nb.cells[index].source = head
            nb.cells.insert(index + 1, nbformat.v4.new_code_cell(tail))
        else:
            nb.cells[index].source = code
    return nb


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("submissions")
    notebooks = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    for student, answers in (("correct", None), ("wrong", WRONG), ("shortcut", SHORTCUT)):
        (folder / student).mkdir()
        for path in notebooks:
            nb = submission(path, answers, drop_task_line=student == "wrong",
                            split={"08.1"} if student == "correct" else ())
            nbformat.write(nb, folder / student / path.name)
    (folder / "untouched").mkdir()
    for path in notebooks[:4]:
        nbformat.write(student_copy(nbformat.read(path, as_version=4)), folder / "untouched" / path.name)
    out = folder / "grades.csv"
    assert grading.main([str(folder), "--out", str(out)]) == 0
    with out.open() as handle:
        return {row["student"]: row for row in csv.DictReader(handle)}


def points(row):
    return {e.id: float(row[f"{e.id} points (of {POSSIBLE[e.id]})"]) for e in EXERCISES}


@pytest.mark.parametrize("student", sorted(EXPECTED))
def test_each_students_points_per_exercise(graded, student):
    row = graded[student]
    assert points(row) == EXPECTED[student], {e.id: row[f"{e.id} feedback"] for e in EXERCISES}
    assert float(row["total"]) == sum(EXPECTED[student].values())
    assert float(row["possible"]) == sum(POSSIBLE.values())


def test_feedback_says_what_is_wrong_and_names_the_rule_a_shortcut_breaks(graded):
    assert all(graded["correct"][f"{e.id} feedback"] == "all tests passed" for e in EXERCISES)
    shortcut = {e.id: graded["shortcut"][f"{e.id} feedback"] for e in EXERCISES}
    assert "forbids calling the layer" in shortcut["00.1"]
    assert all("is not allowed" in text for exercise, text in shortcut.items() if exercise not in ("00.1", "06.1"))
    assert "KeyError" in shortcut["06.1"] and "tokens_per_s" in shortcut["06.1"]  # no such column to copy here
    wrong = {e.id: graded["wrong"][f"{e.id} feedback"] for e in EXERCISES}
    assert "W0 x alone" in wrong["00.1"] and "zero them first" in wrong["05.2"] and "not its index" in wrong["04.1"]
    assert "factor B_i" in wrong["00.2"] and "equal heads" in wrong["05.1"] and "permutation[j]" in wrong["07.2"]
    assert "all tests passed" not in wrong["05.1"] and "05.1 reason" not in wrong["05.1"]  # the reason is a sentence
    assert "Error at line" not in " ".join(wrong.values())  # the hidden test's source stays hidden
    untouched = {e.id: graded["untouched"][f"{e.id} feedback"] for e in EXERCISES}
    assert all(NOT_ATTEMPTED in untouched[e.id] for e in EXERCISES if e.notebook < "04")
    assert all(NOT_HANDED_IN in untouched[e.id] for e in EXERCISES if e.notebook >= "04")


def test_feedback_of_keeps_the_message_and_drops_the_test_source():
    message = ("❌ Test case failed\nError at line 12 in test 04.1:\n      assert abs(got - want) <= 1, hint\n"
               "AssertionError: elbow_of returns 2: return the k, not its index")
    assert feedback_of(message) == "elbow_of returns 2: return the k, not its index"


def test_grading_refuses_a_missing_test_file_and_a_folder_without_notebooks(tmp_path, capsys):
    (tmp_path / "tests").mkdir()
    problems = hidden_test_problems(EXERCISES, tmp_path / "tests")
    assert len(problems) == len(EXERCISES) and "ex00_1.py" in problems[0]
    (tmp_path / "empty").mkdir()
    assert grading.main([str(tmp_path / "empty")]) == 1
    assert "no notebooks (.ipynb) under" in capsys.readouterr().err
    assert grading.main([str(tmp_path / "empty"), "--tests", str(tmp_path / "none")]) == 1
    assert "grading runs from the instructor's repository" in capsys.readouterr().err



def reference(x):
    return x + 1


@pytest.mark.parametrize("code, message", [
    ("y = reference(1)", "calling reference is not allowed"),
    ("try:\n    y = reference(1)\nexcept BaseException:\n    y = 2", "calling reference is not allowed"),  # caught
    ("raise NotImplementedError('Exercise: write y')", NOT_ATTEMPTED),
    (None, NOT_HANDED_IN),
    ("exit(3)", "your code raised SystemExit: 3"),
    ("y = 1 / 0", "your code raised ZeroDivisionError: division by zero"),
    ("while True:\n    pass", "your code ran longer than 0.5 s"),
])
def test_exercise_run_turns_what_the_student_did_into_a_failed_check(code, message):
    with pytest.raises(AssertionError, match=message):
        with exercise_run(code, {"reference": reference}, [reference], "calling reference is not allowed",
                          seconds=0.5) as namespace:
            assert namespace["y"] == 2
    assert reference(1) == 2  # unblocked again


def test_exercise_run_runs_an_answer_on_the_given_inputs_and_leaves_magics_out():
    with exercise_run("%time\ny = x * 3", {"x": 4}, [reference], "not allowed") as namespace:
        assert namespace["y"] == 12


def test_a_hidden_test_file_must_name_its_exercise(tmp_path):
    shutil.copytree(HIDDEN_TESTS, tmp_path / "tests")
    test_file = tmp_path / "tests" / "ex02_1.py"
    test_file.write_text(test_file.read_text().replace('name = "02.1"', 'name = "02.2"'))
    assert possible_points(EXERCISES, HIDDEN_TESTS) == POSSIBLE
    with pytest.raises(ValueError, match="ex02_1.py sets name = '02.2'; it tests exercise '02.1'"):
        possible_points(EXERCISES, tmp_path / "tests")
