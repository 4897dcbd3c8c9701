"""Autograding of the notebooks' exercises with Otter-Grader: `make grade SUBMISSIONS=folder`
(``python -m hydralib grade folder``).

An exercise is a solution cell of an instructor notebook (see hydralib.student); its id is the notebook's number
and its place there, "00.1". Its hidden tests are an Otter exception-based test file, grading/hidden_tests/
ex00_1.py, in the instructor's repository only (the student release leaves grading/ out): test cases with
points that run the student's code on inputs the notebook never shows, with the functions the public check
compares with (or the layer the task says not to call) made to fail when called.

Otter grades a submission by executing it in a Jupyter kernel and then running the tests on its globals.
Executing a student's notebooks would train their models (minutes to a quarter of an hour each), so grading
reads each exercise's code instead, the exercise cell and any code cells the student added between it and
its check cell, and hands Otter one small script per student that only holds that code as text
(``SUBMITTED = {"00.1": "...", ...}``). Each test case then runs the code in a fresh namespace of hidden
inputs (`exercise_run`), so one exercise's crash costs only that exercise. Otter runs locally
(``otter.api.grade_submission``: no Docker), offline, in a kernel of this environment.

Submissions: a folder with one folder per student (its name is the student's id) holding that student's
notebooks; a notebook directly in the folder is a student of its own, named by the file. A notebook's
exercises are found by their task line (the stub's first comment), else, when the student deleted it, as the
code cell before the n-th check cell of the notebook its file name starts with (NN_).
"""
from __future__ import annotations

import argparse
import csv
import re
import signal
import sys
import tempfile
import threading
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import nbformat

from .student import CHECK, NOTEBOOK_DIR, REPO_ROOT, is_solution, tags, task_statement

HIDDEN_TESTS = REPO_ROOT / "grading" / "hidden_tests"
TIME_LIMIT_S = 60  # per test case: a student's endless loop costs a minute, not the whole class's grading
NOT_ATTEMPTED = "not attempted: the exercise cell still raises NotImplementedError"
NOT_HANDED_IN = "not handed in: none of this student's notebooks holds this exercise"


@dataclass(frozen=True)
class Exercise:
    id: str        # "00.1": the notebook's number, then the exercise's place in it
    notebook: str  # "00_quickstart.ipynb"
    task: str      # the solution cell's first comment line, which the student's stub keeps

    @property
    def test_name(self) -> str:
        return "ex" + self.id.replace(".", "_") + ".py"


def exercises(notebook_dir: Path = NOTEBOOK_DIR) -> list[Exercise]:
    """Every code exercise of the instructor notebooks, in order."""
    found = []
    for path in sorted(Path(notebook_dir).glob("[0-9][0-9]_*.ipynb")):
        solutions = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code" and is_solution(c)]
        found += [Exercise(f"{path.name[:2]}.{i}", path.name, task_statement(c.source) or "")
                  for i, c in enumerate(solutions, 1)]
    return found


def hidden_test_problems(all_exercises: list[Exercise], tests_dir: Path) -> list[str]:
    """What keeps grading from starting: an exercise without its hidden test file, or a test file of no exercise."""
    if not Path(tests_dir).is_dir():
        return [f"no hidden tests at {tests_dir}: grading runs from the instructor's repository (the student "
                "release does not hold them)"]
    wanted = {e.test_name: e for e in all_exercises}
    have = {p.name for p in Path(tests_dir).glob("ex*.py")}
    return ([f"exercise {e.id} ({e.notebook}: {e.task}) has no hidden test file {tests_dir / name}"
             for name, e in wanted.items() if name not in have] +
            [f"{tests_dir / name} tests no exercise of the notebooks (exercise ids: {', '.join(sorted(wanted))})"
             for name in sorted(have - set(wanted))])


def submitted_code(nb, path_name: str, all_exercises: list[Exercise]) -> dict[str, str]:
    """{exercise id: the code the student wrote} for the exercises found in one submitted notebook."""
    cells = nb.cells
    checks = [i for i, c in enumerate(cells) if c.cell_type == "code" and CHECK in tags(c)]
    by_task = {task_statement(c.source): i for i, c in enumerate(cells)
               if c.cell_type == "code" and CHECK not in tags(c)}
    prefix = re.search(r"(?:^|[^0-9])(\d\d)_", path_name)
    found = {}
    for exercise in all_exercises:
        start = by_task.get(exercise.task)
        if start is None and prefix and exercise.notebook.startswith(prefix.group(1) + "_"):
            place = int(exercise.id.split(".")[1]) - 1  # the n-th check cell follows the n-th exercise
            before = [i for i in range(checks[place]) if cells[i].cell_type == "code"] if place < len(checks) else []
            start = before[-1] if before else None
        if start is None:
            continue
        end = next((i for i in checks if i > start), len(cells))
        found[exercise.id] = "\n".join(c.source for c in cells[start:end] if c.cell_type == "code")
    return found


def collect(submissions: Path, all_exercises: list[Exercise]) -> dict[str, dict[str, str]]:
    """{student id: {exercise id: code}} for every notebook under submissions (checkpoint copies aside)."""
    submissions = Path(submissions)
    if not submissions.is_dir():
        raise ValueError(f"submissions folder {submissions} does not exist")
    students: dict[str, dict[str, str]] = {}
    paths = sorted(p for p in submissions.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    if not paths:
        raise ValueError(f"no notebooks (.ipynb) under {submissions}: give a folder with one folder per student")
    for path in paths:
        parts = path.relative_to(submissions).parts
        student = parts[0] if len(parts) > 1 else path.stem
        try:
            nb = nbformat.read(path, as_version=4)
        except Exception as error:  # a corrupt upload costs its exercises, not the class's grading
            print(f"{path}: not a readable notebook ({type(error).__name__}: {error}); its exercises score 0")
            students.setdefault(student, {})
            continue
        students.setdefault(student, {}).update(submitted_code(nb, path.name, all_exercises))
    return students


def feedback_of(message: str) -> str:
    """The student-facing part of an Otter failure message: the exception, not the hidden test's source line."""
    lines = message.splitlines()
    start = next((i + 1 for i, line in enumerate(lines) if line.startswith("Error at line")), 0)
    rest = [line for line in lines[start:] if not line.startswith("  ")]
    text = " ".join(rest).strip()
    return re.sub(r"^AssertionError: ", "", text)


def otter_autograder(tests_dir: Path, folder: Path) -> Path:
    """Otter's autograder zip for the hidden tests (no requirements: grading runs in this environment)."""
    from otter.generate import main as otter_generate  # otter: an instructor's tool, heavy to import

    output = folder / "autograder.zip"
    otter_generate(tests_dir=str(tests_dir), output_path=str(output), no_config=True, no_requirements=True,
                   no_environment=True)
    return output


def possible_points(all_exercises: list[Exercise], tests_dir: Path) -> dict[str, float]:
    """{exercise id: its points}, read from the hidden test files; refuses a file whose name is not its exercise's."""
    from otter.test_files import ExceptionTestFile  # otter: imported when grading

    points = {}
    for exercise in all_exercises:
        test_file = ExceptionTestFile.from_file(str(Path(tests_dir) / exercise.test_name))
        if test_file.name != exercise.id:
            raise ValueError(f"{exercise.test_name} sets name = {test_file.name!r}; it tests exercise {exercise.id!r}")
        points[exercise.id] = test_file.possible
    return points


def grade_student(code: dict[str, str], autograder: Path, folder: Path, possible: dict[str, float]) -> dict:
    """{exercise id: (points, possible, feedback)} for one student's code. A submission that stops Otter itself
    (its code killed the kernel) scores 0 everywhere, with the error as feedback."""
    from otter.api import grade_submission  # otter: imported when grading

    folder.mkdir(parents=True)
    script = folder / "submission.py"
    script.write_text(f"SUBMITTED = {code!r}\n", encoding="utf-8")
    try:
        results = grade_submission(str(script), str(autograder), quiet=True).results
        stopped = "Otter returned no result (the student's code stopped the kernel before the tests ended)"
    except Exception as error:  # the kernel died: nothing of this student's was graded
        results, stopped = {}, f"{type(error).__name__}: {error}"
    scores = {}
    for exercise_id, points in possible.items():
        test_file = results.get(exercise_id)
        if test_file is None:
            scores[exercise_id] = (0, points, f"grading stopped, regrade by hand: {stopped}")
            continue
        failed = [f"{r.test_case.name}: {feedback_of(r.message)}" for r in test_file.test_case_results if not r.passed]
        scores[exercise_id] = (test_file.score, test_file.possible, "; ".join(failed) or "all tests passed")
    return scores


def grade(submissions: Path, out_csv: Path, tests_dir: Path = HIDDEN_TESTS,
          notebook_dir: Path = NOTEBOOK_DIR) -> list[dict]:
    """Grade every student under submissions; write out_csv (one row per student: total, and points and feedback
    per exercise) and return its rows."""
    all_exercises = exercises(notebook_dir)
    problems = hidden_test_problems(all_exercises, Path(tests_dir))
    if problems:
        raise ValueError("cannot grade:\n  " + "\n  ".join(problems))
    possible = possible_points(all_exercises, Path(tests_dir))
    students = collect(Path(submissions), all_exercises)
    rows = []
    with tempfile.TemporaryDirectory(prefix="hydralib-grade-") as scratch:
        autograder = otter_autograder(Path(tests_dir), Path(scratch))
        for number, (student, code) in enumerate(sorted(students.items())):
            print(f"grading {student} ({len(code)} of {len(all_exercises)} exercises handed in)", flush=True)
            scores = grade_student(code, autograder, Path(scratch) / f"student-{number}", possible)
            row = {"student": student, "total": sum(s[0] for s in scores.values()),
                   "possible": sum(s[1] for s in scores.values())}
            for exercise in all_exercises:
                points, of, feedback = scores[exercise.id]
                row[f"{exercise.id} points (of {of:g})"] = points
                row[f"{exercise.id} feedback"] = feedback
            rows.append(row)
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with out_csv.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


# --- used by the hidden tests, inside Otter's kernel ---------------------------------------------------------
class ForbiddenCall(BaseException):
    """Raised by a function the task forbids; a BaseException, so that `except Exception` in student code
    does not hide it."""


@contextmanager
def time_limit(seconds: float):
    """Stop the block after `seconds` (POSIX main thread; elsewhere, no limit)."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise TimeoutError(f"your code ran longer than {seconds:g} s on these inputs")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextmanager
def exercise_run(code: str | None, inputs: dict, forbidden=(), rule: str = "", seconds: float = TIME_LIMIT_S):
    """Run a student's exercise code in a fresh namespace holding `inputs`, and yield the namespace; the test's
    checks go inside the block. While it runs, each of `forbidden` fails when called: a function (wherever
    hydralib's modules or the inputs hold it) or an (object, attribute) pair such as (layer, "forward"). A
    forbidden call fails the test with `rule`, even if the student's code caught it; so does an untouched stub,
    a missing exercise and any other error of the student's code (with its message)."""
    if code is None:
        raise AssertionError(NOT_HANDED_IN)
    calls = []

    def blocker(*args, **kwargs):
        calls.append(1)
        raise ForbiddenCall(rule)

    namespace = dict(inputs)
    with ExitStack() as patches:
        for item in forbidden:
            if isinstance(item, tuple):
                patches.enter_context(mock.patch.object(item[0], item[1], blocker))
                continue
            for module in [m for name, m in list(sys.modules.items()) if name.split(".")[0] == "hydralib"]:
                for attribute, value in list(vars(module).items()):
                    if value is item:
                        patches.enter_context(mock.patch.object(module, attribute, blocker))
            namespace.update({key: blocker for key, value in inputs.items() if value is item})
        # Magics and shell lines (%time, !pip) need IPython, which the namespace is not: left out.
        python = "\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!")))
        try:
            with time_limit(seconds):
                exec(compile(python, "<your exercise cell>", "exec"), namespace)
                yield namespace
        except ForbiddenCall:
            raise AssertionError(rule) from None
        except NotImplementedError as error:
            if str(error).startswith("Exercise:"):
                raise AssertionError(NOT_ATTEMPTED) from None
            raise AssertionError(f"your code raised NotImplementedError: {error}") from None
        except AssertionError:
            if calls:
                raise AssertionError(rule) from None
            raise
        except (Exception, SystemExit) as error:  # exit() in a cell must not end the grading of the others
            if calls:
                raise AssertionError(rule) from None
            raise AssertionError(f"your code raised {type(error).__name__}: {error} (on the grader's inputs)") from None
        if calls:
            raise AssertionError(rule)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hydralib grade", description=__doc__.split("\n")[0])
    parser.add_argument("submissions", type=Path, help="folder of submitted notebooks, one folder per student")
    parser.add_argument("--out", type=Path, default=None, help="the CSV to write (default: SUBMISSIONS/grades.csv)")
    parser.add_argument("--tests", type=Path, default=HIDDEN_TESTS, help="folder of the hidden Otter test files")
    parser.add_argument("--notebooks", type=Path, default=NOTEBOOK_DIR, help="folder of the instructor notebooks")
    args = parser.parse_args(argv)
    out = args.out or args.submissions / "grades.csv"
    try:
        rows = grade(args.submissions, out, args.tests, args.notebooks)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 1
    for row in rows:
        print(f"{row['student']}: {row['total']:g} of {row['possible']:g}")
    print(f"{len(rows)} students graded: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
