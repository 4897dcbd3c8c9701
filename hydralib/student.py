"""Student copies of the notebooks: `make student` (``python -m hydralib.student``).

An exercise in a notebook is a code cell tagged ``solution`` (the instructor's answer) followed by a code
cell tagged ``check`` that asserts on what the student computed and, when it is wrong, fails with a hint,
never with the answer. The solution cell's first comment line states the task, for example::

    # Write fused_update(x, A, Bs, gates): the HydraLoRA update sum_i g_i * B_i A x, without a loop
    def fused_update(x, A, Bs, gates):
        ...

A student copy replaces every solution cell by a stub that keeps that comment line and raises
``NotImplementedError("Exercise: <the task>")``, and drops every code cell's outputs (an executed solution
or check can print the answer). A markdown cell tagged ``solution`` (a worked answer in words) becomes
"*Your answer here.*". Instructor copies are the notebooks themselves.

``write_student_copies`` refuses a notebook whose solution cell is not followed by a ``check`` cell.
"""
from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import nbformat

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
STUDENT_DIR = REPO_ROOT / "build" / "student"
SOLUTION, CHECK, EXERCISE = "solution", "check", "exercise"
DEFAULT_TASK = "write this cell (the exercise is described above)"


def tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def is_solution(cell) -> bool:
    return SOLUTION in tags(cell)


def task_statement(source: str) -> str | None:
    """The first comment line of a cell, without its '#': the task the stub keeps."""
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") and stripped.lstrip("#").strip():
            return stripped.lstrip("#").strip()
    return None


def stub_source(source: str) -> str:
    task = task_statement(source)
    message = f"Exercise: {task or DEFAULT_TASK}"
    header = f"# {task}\n" if task else ""
    return f"{header}raise NotImplementedError({json.dumps(message)})\n"


def solution_body(source: str) -> str:
    """A solution's code without its comment lines: what must not appear in a student copy."""
    return "\n".join(line for line in source.splitlines() if line.strip() and not line.strip().startswith("#"))


def structure_problems(nb, name: str = "notebook") -> list[str]:
    """What is wrong with a notebook's exercises: every solution code cell must be followed, after any further
    solution cells, by a code cell tagged `check`."""
    problems = []
    cells = nb.cells
    for index, cell in enumerate(cells):
        if cell.cell_type != "code" or not is_solution(cell):
            continue
        following = next((c for c in cells[index + 1:] if c.cell_type == "code" and not is_solution(c)), None)
        if following is None or CHECK not in tags(following):
            problems.append(f"{name}, cell {index}: the solution cell is not followed by a code cell tagged "
                            f"'{CHECK}' (task: {task_statement(cell.source) or 'no comment line'})")
        if not solution_body(cell.source):
            problems.append(f"{name}, cell {index}: the solution cell holds no code")
    return problems


def student_copy(nb):
    """A copy of the notebook with solutions replaced by stubs and all code outputs dropped."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        if not is_solution(cell):
            continue
        cell.metadata["tags"] = [EXERCISE if t == SOLUTION else t for t in tags(cell)]
        if cell.cell_type == "code":
            cell.source = stub_source(cell.source)
        else:
            cell.source = "*Your answer here.*"
    return nb


def leaked_solutions(instructor, student) -> list[str]:
    """Solution code of the instructor copy that still appears in the student copy (should be none)."""
    text = "\n".join(c.source for c in student.cells)
    leaks = [c.source for c in student.cells if is_solution(c)]
    for cell in instructor.cells:
        body = solution_body(cell.source) if is_solution(cell) and cell.cell_type == "code" else ""
        if body and body in text:
            leaks.append(body)
    return leaks


def solution_notebooks(notebook_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    """The suite's notebooks that hold at least one solution cell."""
    return [p for p in sorted(notebook_dir.glob("[0-9][0-9]_*.ipynb"))
            if any(is_solution(c) for c in nbformat.read(p, as_version=4).cells)]


def write_student_copies(notebook_dir: Path = NOTEBOOK_DIR, out_dir: Path = STUDENT_DIR) -> list[Path]:
    """Student copies of every suite notebook into out_dir (same file names); returns the paths written.

    Notebooks without exercises are copied with their outputs dropped, so that the folder is a complete
    set. Refuses (ValueError) when a notebook's exercises are malformed or a copy would leak a solution."""
    notebooks = sorted(notebook_dir.glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        raise ValueError(f"no notebooks named NN_name.ipynb in {notebook_dir}")
    copies, problems = [], []
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        problems += structure_problems(nb, path.name)
        copies.append((path, nb, student_copy(nb)))
    for path, nb, student in copies:
        if leaked_solutions(nb, student):
            problems.append(f"{path.name}: the student copy still holds solution code")
    if problems:
        raise ValueError("cannot write student copies:\n  " + "\n  ".join(problems))
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path, _, student in copies:
        target = out_dir / path.name
        nbformat.write(student, target)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hydralib.student", description=__doc__.split("\n")[0])
    parser.add_argument("--notebooks", type=Path, default=NOTEBOOK_DIR, help="folder of the instructor notebooks")
    parser.add_argument("--out", type=Path, default=STUDENT_DIR, help="folder for the student copies")
    args = parser.parse_args(argv)
    try:
        written = write_student_copies(args.notebooks, args.out)
    except ValueError as error:
        print(error)
        return 1
    exercises = sum(sum(is_solution(c) for c in nbformat.read(p, as_version=4).cells)
                    for p in solution_notebooks(args.notebooks))
    print(f"{len(written)} student notebooks in {args.out} ({exercises} solution cells replaced by stubs). "
          f"Hand them out to be opened from a clone's notebooks/ folder (copy them over the instructor copies "
          f"there): their relative paths expect it.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
