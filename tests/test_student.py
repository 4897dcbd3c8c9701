"""Student copies (`make student`): solutions become NotImplementedError stubs, checks fail with their hint.

A small notebook with one exercise is executed twice with nbclient: the instructor copy passes every cell;
the student copy fails exactly at the exercise (its stub, then its check with the hint, not the answer) and
nowhere else. Every notebook in notebooks/ with solution cells is then checked statically.
"""
import nbformat
import pytest
from nbclient import NotebookClient

from hydralib.student import (CHECK, EXERCISE, SOLUTION, leaked_solutions, solution_notebooks, structure_problems,
                              student_copy, write_student_copies)
from hydralib.suite import NOTEBOOK_DIR

TASK = "Write sum_squares(n): the sum of k**2 for k = 1..n"
HINT = "hint: sum_squares(4) adds 1 + 4 + 9 + 16; check where your range starts and ends"


def exercise_notebook():
    cell, md = nbformat.v4.new_code_cell, nbformat.v4.new_markdown_cell
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        md("# A notebook with one exercise"),
        cell("values = [1, 2, 3]"),
        md("## Exercise\n\nWrite `sum_squares(n)`."),
        cell(f"# {TASK}\ndef sum_squares(n):\n    return sum(k * k for k in range(1, n + 1))",
             metadata={"tags": [SOLUTION]}),
        cell("assert 'sum_squares' in globals(), 'hint: run your exercise cell above; it defines sum_squares(n)'\n"
             f"assert sum_squares(4) == 30 and sum_squares(1) == 1, {HINT!r}\nprint('correct')",
             metadata={"tags": [CHECK]}),
        cell("print(sum(values))"),  # independent of the exercise: must run in the student copy too
    ]
    return nb


def execute(nb, folder):
    nb = nbformat.from_dict(nb)
    NotebookClient(nb, timeout=60, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(folder)}}).execute()
    return nb


def errors(nb):
    return {i: o for i, c in enumerate(nb.cells) if c.cell_type == "code"
            for o in c.outputs if o.output_type == "error"}


def test_instructor_copy_passes_and_student_copy_fails_only_at_the_exercise_with_its_hint(tmp_path):
    instructor = exercise_notebook()
    assert structure_problems(instructor) == []
    ran = execute(instructor, tmp_path)
    assert errors(ran) == {}
    assert "correct" in ran.cells[4].outputs[0]["text"]

    student = student_copy(instructor)
    assert student.cells[3].source == f'# {TASK}\nraise NotImplementedError("Exercise: {TASK}")\n'
    assert student.cells[3].metadata["tags"] == [EXERCISE]
    assert leaked_solutions(instructor, student) == [] and "sum(k * k" not in nbformat.writes(student)
    ran = execute(student, tmp_path)
    failed = errors(ran)
    assert sorted(failed) == [3, 4], failed  # the stub and its check, nothing else
    assert failed[3].ename == "NotImplementedError" and failed[3].evalue == f"Exercise: {TASK}"
    assert failed[4].ename == "AssertionError" and failed[4].evalue.startswith("hint:")
    assert "30" not in failed[4].evalue  # a hint, not the answer
    assert ran.cells[5].outputs[0]["text"].strip() == "6"


def test_a_solution_without_a_check_is_refused(tmp_path):
    nb = exercise_notebook()
    nb.cells[4].metadata["tags"] = []
    problems = structure_problems(nb, "x.ipynb")
    assert len(problems) == 1 and "tagged 'check'" in problems[0] and TASK in problems[0]
    (tmp_path / "nbs").mkdir()
    nbformat.write(nb, tmp_path / "nbs" / "00_x.ipynb")
    with pytest.raises(ValueError, match="tagged 'check'"):
        write_student_copies(tmp_path / "nbs", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_write_student_copies_writes_every_notebook(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    nbformat.write(exercise_notebook(), nbs / "00_exercise.ipynb")
    plain = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1", outputs=[
        nbformat.v4.new_output("stream", name="stdout", text="an old output\n")])])
    nbformat.write(plain, nbs / "01_plain.ipynb")
    written = write_student_copies(nbs, tmp_path / "out")
    assert [p.name for p in written] == ["00_exercise.ipynb", "01_plain.ipynb"]
    copy = nbformat.read(written[0], as_version=4)
    assert "NotImplementedError" in copy.cells[3].source and "range(1, n + 1)" not in nbformat.writes(copy)
    assert nbformat.read(written[1], as_version=4).cells[0].outputs == []


REAL = solution_notebooks(NOTEBOOK_DIR)


@pytest.mark.skipif(not REAL, reason="no notebook in notebooks/ has solution cells yet")
@pytest.mark.parametrize("path", REAL, ids=[p.stem for p in REAL])
def test_real_notebook_exercises_are_well_formed(path):
    instructor = nbformat.read(path, as_version=4)
    assert structure_problems(instructor, path.name) == []
    student = student_copy(instructor)
    assert leaked_solutions(instructor, student) == []
    stubs = [c for c in student.cells if EXERCISE in c.metadata.get("tags", [])]
    assert stubs and all("raise NotImplementedError(\"Exercise: " in c.source for c in stubs if c.cell_type == "code")
    assert all(SOLUTION not in c.metadata.get("tags", []) for c in student.cells)
