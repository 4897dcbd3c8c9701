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

`make release` (``python -m hydralib.student --release [--pack FILE]``) writes what a class gets: one folder,
``build/release/hydralora-lab-student/``, and the same as ``build/release/hydralora-lab-student.zip``. It holds
the student copies, the library and its install files, the data and the shipped bases, a short README for
students (docs/student_readme.md) and, with ``--pack``, a results pack in ``results/``; no git history, no tests,
no hidden grading tests (grading/), no instructor docs (docs/instructors.md, docs/answer_key.md). The folder is
scanned for every solution cell's code before the archive is written.
"""
from __future__ import annotations

import argparse
import copy
import json
import shutil
from pathlib import Path

import nbformat

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
STUDENT_DIR = REPO_ROOT / "build" / "student"
RELEASE_DIR = REPO_ROOT / "build" / "release"
RELEASE_NAME = "hydralora-lab-student"
# What a student gets besides the notebooks: the library and what installs it, the data, the bases, the profiles.
RELEASE_FILES = ("LICENSE", "CITATION.cff", "Makefile", "pyproject.toml", "requirements.txt",
                 "requirements-nodeps.txt", "environment.yml", "docs/architecture.md")
RELEASE_TREES = ("hydralib", "data", "notebooks/profiles")
RELEASE_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints", ".gitkeep")
STUDENT_README = REPO_ROOT / "docs" / "student_readme.md"
PACK_MARKER = "<!-- results pack -->"
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


def solution_bodies(notebook_dir: Path = NOTEBOOK_DIR) -> list[list[str]]:
    """Every solution cell's code lines (a markdown solution's lines), stripped, one list per cell."""
    bodies = []
    for path in sorted(notebook_dir.glob("[0-9][0-9]_*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if is_solution(cell):
                body = solution_body(cell.source) if cell.cell_type == "code" else cell.source
                bodies.append([line.strip() for line in body.splitlines() if line.strip()])
    return bodies


def shared_lines(repo: Path = REPO_ROOT) -> set[str]:
    """Lines the instructor's repository holds outside solution cells (the library, the other notebook cells):
    `return None` or a line the library shares with an answer is no leak on its own."""
    lines = {line.strip() for path in (repo / "hydralib").rglob("*.py") for line in path.read_text().splitlines()}
    for path in sorted((repo / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        lines |= {line.strip() for cell in nbformat.read(path, as_version=4).cells if not is_solution(cell)
                  for line in cell.source.splitlines()}
    return lines


def output_texts(value) -> list[str]:
    """Every string inside a cell output (stream text, every mime type's data, a traceback's lines)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    return [text for item in value for text in output_texts(item)] if isinstance(value, list) else []


def release_text(path: Path) -> str | None:
    """A release file's text as a reader sees it (a notebook's cell sources and outputs), or None for binary files."""
    if path.suffix == ".ipynb":
        cells = nbformat.read(path, as_version=4).cells
        return "\n".join([c.source for c in cells] + [t for c in cells for t in output_texts(c.get("outputs", []))])
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None


def release_leaks(folder: Path, repo: Path = REPO_ROOT) -> list[str]:
    """Solution code found in a text file under folder: a whole solution cell (its code lines in order, whatever
    the indentation), or any of its lines that the repository holds nowhere outside solution cells."""
    bodies = solution_bodies(repo / "notebooks")
    distinct = {line for body in bodies for line in body} - shared_lines(repo)
    leaks = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        text = release_text(path)
        if text is None:
            continue
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        joined = "\n".join(lines)
        name = path.relative_to(folder)
        leaks += [f"{name}: the solution starting {body[0]!r}" for body in bodies if "\n".join(body) in joined]
        leaks += [f"{name}: {line}" for line in lines if line in distinct]
    return leaks


def student_readme(pack_name: str | None) -> str:
    text = STUDENT_README.read_text(encoding="utf-8")
    if PACK_MARKER not in text:
        raise ValueError(f"{STUDENT_README} lacks the line {PACK_MARKER!r} where the results pack is described")
    results = (f"A results pack ships in `results/{pack_name}`: import it once, before opening notebook 03, with\n\n"
               f"    .venv/bin/python -m hydralib store import results/{pack_name}\n\n"
               "and the notebooks read the class's runs instead of training them again." if pack_name else
               "No results pack ships with this copy: a notebook trains what it needs the first time (its first "
               "cell says how long) and keeps the runs for the next time.")
    return text.replace(PACK_MARKER, results)


def write_release(out_root: Path = RELEASE_DIR, pack: Path | None = None, repo: Path = REPO_ROOT) -> tuple[Path, Path]:
    """The student release: out_root/hydralora-lab-student/ and out_root/hydralora-lab-student.zip (replaced if
    there). pack: a results pack file (python -m hydralib store export) to ship in results/. Refuses (ValueError)
    a missing pack and a folder that would hold solution code, and then writes no archive."""
    if pack is not None and not Path(pack).is_file():
        raise ValueError(f"results pack {pack} is not a file: give the archive `python -m hydralib store export` wrote")
    folder = Path(out_root) / RELEASE_NAME
    if folder.exists():
        shutil.rmtree(folder)
    archive = folder.with_suffix(".zip")
    archive.unlink(missing_ok=True)
    write_student_copies(repo / "notebooks", folder / "notebooks")
    for tree in RELEASE_TREES:
        shutil.copytree(repo / tree, folder / tree, ignore=RELEASE_IGNORED)
    for name in RELEASE_FILES:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / name, folder / name)
    if pack is not None:
        (folder / "results").mkdir()
        shutil.copy2(pack, folder / "results" / Path(pack).name)
    (folder / "README.md").write_text(student_readme(Path(pack).name if pack else None), encoding="utf-8")
    leaks = release_leaks(folder, repo)
    if leaks:
        raise ValueError("the release holds solution code; no archive written:\n  " + "\n  ".join(leaks))
    shutil.make_archive(str(folder), "zip", root_dir=folder.parent, base_dir=folder.name)
    return folder, archive


def size_text(path: Path) -> str:
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
    return f"{size / 1e6:.1f} MB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hydralib.student", description=__doc__.split("\n")[0])
    parser.add_argument("--notebooks", type=Path, default=NOTEBOOK_DIR,
                        help="folder of the instructor notebooks (student copies; --release reads notebooks/)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"folder for the student copies (default {STUDENT_DIR}; with --release {RELEASE_DIR})")
    parser.add_argument("--release", action="store_true",
                        help="write the student release (a folder and a .zip) instead of the notebooks alone")
    parser.add_argument("--pack", type=Path, default=None,
                        help="with --release: a results pack (python -m hydralib store export) to ship in results/")
    args = parser.parse_args(argv)
    if args.pack is not None and not args.release:
        parser.error("--pack goes with --release")
    if args.release:
        try:
            folder, archive = write_release(args.out or RELEASE_DIR, args.pack)
        except ValueError as error:
            print(error)
            return 1
        print(f"student release: {folder} ({size_text(folder)}) and {archive} ({size_text(archive)}); "
              f"no solution code found in it. Hand out the archive.")
        return 0
    args.out = args.out or STUDENT_DIR
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
