"""The student release (`make release`): one folder and one zip with the student notebooks, the library, the
data and the bases, and no solution code, no hidden tests, no instructor docs, no git history.

The release is written once (about half a minute: 28 MB copied and zipped) with a dummy results pack; the
scan that refuses a leaking release is shown to find a solution planted in a copy of it.
"""
import shutil
import zipfile
from pathlib import Path

import nbformat
import pytest

from hydralib.student import (EXERCISE, RELEASE_NAME, REPO_ROOT, SOLUTION, release_leaks, solution_bodies,
                              student_readme, write_release)

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
NOT_SHIPPED = (".git", "tests", "benchmarks", "grading", "build", "figures", "docs/instructors.md",
               "docs/answer_key.md", ".ci")


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    out = tmp_path_factory.mktemp("release")
    pack = out / "class-pack.tar.gz"
    pack.write_bytes(b"a results pack")
    folder, archive = write_release(out, pack=pack)
    return folder, archive


def test_release_writes_one_folder_and_the_same_files_as_one_zip(release):
    folder, archive = release
    assert folder.name == RELEASE_NAME and archive == folder.with_suffix(".zip")
    files = sorted(str(p.relative_to(folder.parent)) for p in folder.rglob("*") if p.is_file())
    with zipfile.ZipFile(archive) as zipped:
        zipped_files = sorted(n for n in zipped.namelist() if not n.endswith("/"))
    assert zipped_files == files


def test_release_holds_what_a_student_needs(release):
    folder, _ = release
    assert sorted(p.name for p in (folder / "notebooks").glob("*.ipynb")) == [p.name for p in NOTEBOOKS]
    for name in ("hydralib/__init__.py", "hydralib/layers.py", "data/bases/tiny-default.safetensors",
                 "data/bases/tiny-ci.json", "data/gsm8k/train.jsonl", "notebooks/profiles/default.yaml",
                 "requirements.txt", "pyproject.toml", "Makefile", "LICENSE", "results/class-pack.tar.gz"):
        assert (folder / name).is_file(), name
    readme = (folder / "README.md").read_text()
    assert "index-url https://download.pytorch.org/whl/cpu" in readme
    assert "store import results/class-pack.tar.gz" in readme and "<!--" not in readme
    assert "No results pack ships" in student_readme(None)


def test_release_holds_no_solution_no_hidden_test_no_instructor_doc_no_history(release):
    folder, _ = release
    for name in NOT_SHIPPED:
        assert not (folder / name).exists(), name
    assert not list(folder.rglob("__pycache__")) and not list(folder.rglob(".ipynb_checkpoints"))
    for path in sorted((folder / "notebooks").glob("*.ipynb")):
        cells = nbformat.read(path, as_version=4).cells
        assert not any(SOLUTION in c.metadata.get("tags", []) for c in cells), path.name
        assert all(not c.get("outputs") for c in cells if c.cell_type == "code"), path.name
    assert sum(EXERCISE in c.metadata.get("tags", []) for p in (folder / "notebooks").glob("*.ipynb")
               for c in nbformat.read(p, as_version=4).cells) == len(solution_bodies())
    assert release_leaks(folder) == []


def test_the_scan_finds_a_solution_planted_in_a_release(release, tmp_path):
    folder, _ = release
    copy = tmp_path / "copy"
    shutil.copytree(folder / "notebooks", copy / "notebooks")
    first, last = solution_bodies()[0], solution_bodies()[-1]
    (copy / "notes.py").write_text("    " + "\n    ".join(first) + "\n")  # a whole solution, indented
    nb = nbformat.read(copy / "notebooks" / NOTEBOOKS[-1].name, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("print(answer)", outputs=[
        nbformat.v4.new_output("stream", name="stdout", text=last[-1] + "\n")]))  # printed in an output
    nbformat.write(nb, copy / "notebooks" / NOTEBOOKS[-1].name)
    leaks = release_leaks(copy)
    assert any(leak.startswith("notes.py: the solution starting") for leak in leaks), leaks
    assert any(leak.startswith(f"notebooks/{NOTEBOOKS[-1].name}: {last[-1]}") for leak in leaks), leaks


def test_the_answer_key_holds_every_solution_and_would_be_found_in_a_release(tmp_path):
    key = (REPO_ROOT / "docs" / "answer_key.md").read_text()
    joined = "\n".join(line.strip() for line in key.splitlines() if line.strip())
    stale = [body[0] for body in solution_bodies() if "\n".join(body) not in joined]
    assert stale == [], f"docs/answer_key.md lacks the current solution cells starting {stale}"
    (tmp_path / "docs").mkdir()
    shutil.copy(REPO_ROOT / "docs" / "answer_key.md", tmp_path / "docs")
    found = [leak for leak in release_leaks(tmp_path) if "the solution starting" in leak]
    assert len(found) == len(solution_bodies())


def test_a_missing_pack_is_refused(tmp_path):
    with pytest.raises(ValueError, match="missing.tar.gz is not a file"):
        write_release(tmp_path, pack=tmp_path / "missing.tar.gz")
    assert not (tmp_path / RELEASE_NAME).exists()
