"""The papermill runner: profiles, overrides, undeclared parameters refused, sources never written."""
import json
import os
import re
import subprocess
import sys

import nbformat
import pytest

from hydralib.suite import PROFILE_DIR, REPO_ROOT, list_notebooks, notebook_parameters, plan_suite, run_suite


@pytest.fixture
def suite_dirs(tmp_path):
    notebooks = tmp_path / "notebooks"
    profiles = notebooks / "profiles"
    profiles.mkdir(parents=True)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("profile = 'default'\nsteps = 1", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("print('steps', steps, profile)")]
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    nbformat.write(nb, notebooks / "00_first.ipynb")
    nbformat.write(nb, notebooks / "01_second.ipynb")
    (profiles / "quick.yaml").write_text("common:\n  profile: quick\nnotebooks:\n  01_second:\n    steps: 5\n")
    (profiles / "typo.yaml").write_text("common:\n  profile: quick\n  stpes: 3\n")
    return notebooks, profiles, tmp_path / "build"


def test_plan_merges_profile_and_overrides(suite_dirs):
    notebooks, profiles, _ = suite_dirs
    plan = plan_suite("quick", overrides=["00_first.steps=7"], notebook_dir=notebooks, profile_dir=profiles)
    assert [(nb.name, params) for nb, params in plan] == [
        ("00_first.ipynb", {"profile": "quick", "steps": 7}), ("01_second.ipynb", {"profile": "quick", "steps": 5})]
    plan = plan_suite("quick", overrides=["steps=2"], notebook_dir=notebooks, profile_dir=profiles)
    assert [params["steps"] for _, params in plan] == [2, 2]


@pytest.mark.parametrize("profile, overrides, message", [
    ("typo", [], r"00_first.ipynb does not declare parameter\(s\) \['stpes'\]"),
    ("quick", ["00_first.lr=0.1"], r"does not declare parameter\(s\) \['lr'\]"),
    ("quick", ["lr=0.1"], r"override\(s\) \['lr'\] are declared by no notebook"),
    ("quick", ["99_none.steps=1"], "an override names notebook '99_none', which does not exist"),
    ("quick", ["steps"], "not of the form key=value"),
    ("nope", [], "unknown profile 'nope'; profiles in .*: quick, typo"),
])
def test_bad_parameters_are_errors_not_warnings(suite_dirs, profile, overrides, message):
    notebooks, profiles, _ = suite_dirs
    with pytest.raises(ValueError, match=message):
        plan_suite(profile, overrides=overrides, notebook_dir=notebooks, profile_dir=profiles)


def test_run_writes_executed_copies_to_the_build_folder_only(suite_dirs):
    notebooks, profiles, build = suite_dirs
    before = {p.name: p.read_bytes() for p in notebooks.glob("*.ipynb")}
    records = run_suite("quick", only=["01_second"], notebook_dir=notebooks, profile_dir=profiles, build_dir=build)
    assert [r["notebook"] for r in records] == ["01_second.ipynb"]
    executed = nbformat.read(build / "quick" / "01_second.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    assert "steps 5 quick" in printed
    assert {p.name: p.read_bytes() for p in notebooks.glob("*.ipynb")} == before
    assert json.loads((build / "quick" / "suite_report.json").read_text())[0]["notebook"] == "01_second.ipynb"


@pytest.mark.parametrize("profile", ["ci", "default", "gpu"])
def test_the_projects_profiles_fit_its_notebooks(profile):
    plan = plan_suite(profile)
    assert [nb.name for nb, _ in plan] == [nb.name for nb in list_notebooks()]
    assert all(params["profile"] == profile for _, params in plan)
    assert (PROFILE_DIR / f"{profile}.yaml").exists()


def test_committed_notebooks_have_no_outputs():
    for path in list_notebooks():
        nb = nbformat.read(path, as_version=4)
        assert not any(c.get("outputs") or c.get("execution_count") for c in nb.cells if c.cell_type == "code"), path
        assert sum("parameters" in c.metadata.get("tags", []) for c in nb.cells) == 1, path


def test_exponents_are_numbers_in_overrides_and_profiles(suite_dirs):
    notebooks, profiles, _ = suite_dirs
    nb = nbformat.read(notebooks / "00_first.ipynb", as_version=4)
    nb.cells[0].source += "\nlr = 0.1"
    nbformat.write(nb, notebooks / "00_first.ipynb")
    (profiles / "lr.yaml").write_text("common:\n  profile: lr\nnotebooks:\n  00_first:\n    lr: 2e-4\n")
    plan = plan_suite("lr", overrides=["00_first.steps=1e3"], notebook_dir=notebooks, profile_dir=profiles)
    assert plan[0][1] == {"profile": "lr", "lr": 2e-4, "steps": 1000}
    assert isinstance(plan[0][1]["steps"], int)  # a whole float where the notebook declares an int
    assert plan[1][1] == {"profile": "lr"}


@pytest.mark.parametrize("profile_text, overrides, message", [
    ("", ["00_first.steps=abc"], r"00_first.ipynb: parameter steps = 'abc' is a str, but the notebook declares int"),
    ("", ["00_first.profile=1"], r"parameter profile = 1 is an int, but the notebook declares str"),
    ("", ["steps=2.5"], r"parameter steps = 2.5 is a float, but the notebook declares int \(its default: steps = 1\)"),
    ("", ["00_first.profile=[1, 2]"], r"parameter profile = \[1, 2\] is a list, but the notebook declares str"),
    ("notebooks:\n  01_second:\n    steps: many\n", [], r"01_second.ipynb: parameter steps = 'many' is a str"),
])
def test_values_of_the_wrong_type_are_refused_before_anything_runs(suite_dirs, profile_text, overrides, message):
    notebooks, profiles, build = suite_dirs
    (profiles / "t.yaml").write_text(profile_text)
    with pytest.raises(ValueError, match=message):
        run_suite("t", overrides=overrides, notebook_dir=notebooks, profile_dir=profiles, build_dir=build)
    assert not (build / "t").exists()


def test_types_come_from_annotations_and_defaults(tmp_path):
    from hydralib.suite import checked_value, notebook_parameters
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("a: int = 1\nb = 0.5\nc = 'x'\nd = None\ne = [1]\nf = True\ng = {}",
                                          metadata={"tags": ["parameters"]})]
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    nbformat.write(nb, tmp_path / "00_t.ipynb")
    types = {k: v["type"] for k, v in notebook_parameters(tmp_path / "00_t.ipynb").items()}
    assert types == {"a": "int", "b": "float", "c": "str", "d": None, "e": "list", "f": "bool", "g": "dict"}
    assert checked_value("n", "b", 2, "float") == 2 and checked_value("n", "d", "any", None) == "any"
    assert checked_value("n", "c", ["q", "v"], "str") == ["q", "v"]  # targets: "all-linear" or a list
    assert checked_value("n", "a", None, "int") is None and checked_value("n", "a", 3, "str | int") == 3
    for value, kind in ((True, "int"), ("1", "float"), (1, "bool"), ({}, "list")):
        with pytest.raises(ValueError, match="but the notebook declares"):
            checked_value("n", "k", value, kind)


def test_only_with_no_names_is_an_error_that_lists_the_notebooks(suite_dirs):
    notebooks, profiles, _ = suite_dirs
    with pytest.raises(ValueError, match="--only needs at least one notebook name; notebooks: 00_first, 01_second"):
        plan_suite("quick", only=[], notebook_dir=notebooks, profile_dir=profiles)


def test_a_profile_made_for_one_notebook_runs_it_alone_unless_only_names_others(suite_dirs):
    notebooks, profiles, _ = suite_dirs
    (profiles / "second.yaml").write_text("only: [01_second]\ncommon:\n  profile: second\n")
    assert [nb.stem for nb, _ in plan_suite("second", notebook_dir=notebooks, profile_dir=profiles)] == ["01_second"]
    chosen = plan_suite("second", only=["00_first"], notebook_dir=notebooks, profile_dir=profiles)
    assert [nb.stem for nb, _ in chosen] == ["00_first"]
    (profiles / "bad.yaml").write_text("only: 01_second\n")
    with pytest.raises(ValueError, match="only must be a list of notebook names, got only='01_second'"):
        plan_suite("bad", notebook_dir=notebooks, profile_dir=profiles)


def test_a_suite_run_gathers_the_notebooks_verdicts_into_claims_md(tmp_path):
    notebooks = tmp_path / "notebooks"
    (notebooks / "profiles").mkdir(parents=True)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("claims_dir = 'x'\nfigures_dir = 'y'", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("from hydralib.claims import compare, record_verdict\n"
                                          "record_verdict(claims_dir, '00_v', 'a beats b', compare([0.6, 0.7], [0.2, 0.3]))")]
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    nbformat.write(nb, notebooks / "00_v.ipynb")
    (notebooks / "profiles" / "p.yaml").write_text(
        "common:\n  figures_dir: ../figs\nnotebooks:\n  00_v:\n    claims_dir: ../build/p/claims\n")
    run_suite("p", notebook_dir=notebooks, profile_dir=notebooks / "profiles", build_dir=tmp_path / "build")
    table = (tmp_path / "figs" / "claims.md").read_text()
    assert "| 00_v | a beats b |" in table and "0.650 vs 0.250" in table and "| held |" in table
    assert "decided on the\nBenjamini-Hochberg adjusted q" in table  # the rule claims_table applies


@pytest.mark.parametrize("notebook", list_notebooks(), ids=lambda p: p.stem)
def test_papermill_reads_every_assignment_of_the_parameters_cell(notebook):
    """papermill silently skips a line it cannot parse (e.g. '=' in a comment): that parameter would never be set."""
    import ast

    import papermill
    cell = next(c for c in nbformat.read(notebook, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
    body = ast.parse(cell.source).body
    assigned = {t.id for node in body if isinstance(node, ast.Assign) for t in node.targets}
    assigned |= {node.target.id for node in body if isinstance(node, ast.AnnAssign)}  # n_test: "Union[...]" = ...
    inspected = papermill.inspect_notebook(str(notebook))
    assert set(inspected) == assigned
    # the suite reads the cell with ast (fast); it must agree with what papermill injects against
    ours = notebook_parameters(notebook)
    for name, info in inspected.items():
        annotated = None if info["inferred_type_name"] in (None, "None") else info["inferred_type_name"]
        assert ours[name]["default"] == ast.literal_eval(info["default"]), name
        assert ours[name]["type"] == annotated or annotated is None and ours[name]["type"] == \
            type(ours[name]["default"]).__name__, name


KERNEL = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


def _tiny_suite(tmp_path, failing=False):
    """Two notebooks that use a store, claims and figures folder under ../build/p, as the real profiles do."""
    notebooks = tmp_path / "notebooks"
    (notebooks / "profiles").mkdir(parents=True)
    params = "store_dir = '../build/runs'\nclaims_dir = '../build/claims'\nfigures_dir = '../figures'\nsteps = 1"
    work = ("import base64, os, pathlib\nfrom tqdm.auto import tqdm\nfor _ in tqdm(range(2)): pass\n"
            "pathlib.Path(store_dir).mkdir(parents=True, exist_ok=True)\n"
            "pathlib.Path(store_dir, 'run.txt').write_text('stored')\n"
            "print('[runs] run 1/2, 0 from the store')\nprint('not forwarded')\n"
            "pathlib.Path(figures_dir).mkdir(parents=True, exist_ok=True)\n"
            f"pathlib.Path(figures_dir, 'fig_' + str(steps) + '.png').write_bytes(base64.b64decode('{PNG}'))\n"
            "from hydralib.claims import compare, record_verdict\n"
            "record_verdict(claims_dir, '00_a', 'a beats b', compare([0.6, 0.7], [0.2, 0.3]))")
    for stem, extra in (("00_a", "print('fine')"), ("01_b", "x = 1\nraise ValueError('boom: bad input')" if failing
                                                     else "print('[runs] run 2/2, 1 from the store')")):
        nb = nbformat.v4.new_notebook(metadata=KERNEL)
        nb.cells = [nbformat.v4.new_markdown_cell("**Run time**: `p` about 3 seconds."),
                    nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]}),
                    nbformat.v4.new_code_cell(work), nbformat.v4.new_code_cell(extra)]
        nbformat.write(nb, notebooks / f"{stem}.ipynb")
    (notebooks / "profiles" / "p.yaml").write_text(
        "common:\n  store_dir: ../build/p/run_store\n  claims_dir: ../build/p/claims\n  figures_dir: ../build/p/figures\n"
        "notebooks:\n  01_b:\n    steps: 2\n")
    return notebooks


def test_a_suite_run_shows_progress_moves_with_build_dir_and_writes_timings_claims_and_report(tmp_path, capfd,
                                                                                                monkeypatch):
    import hydralib.suite as suite
    notebooks = _tiny_suite(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    records = suite.run_suite("p", notebook_dir=notebooks, profile_dir=notebooks / "profiles", build_dir=elsewhere)
    out, err = capfd.readouterr()
    assert [r["status"] for r in records] == ["ok", "ok"]
    # progress: notebook i/n with an estimate, each code cell, the [runs] lines and nothing else of stdout
    assert "[suite:p] 1/2 00_a: expected 3 s (stated)" in out and "[suite:p] 2/2 01_b" in out
    assert "00_a cell 4/5 at " in out and "left: import base64, os, pathlib" in out  # 3: papermill's parameters
    assert "[runs] run 1/2, 0 from the store" in out and "[runs] run 2/2, 1 from the store" in out
    assert "not forwarded" not in out
    for noise in ("Traceback", "KeyboardInterrupt", "IProgress", "running over TCP"):
        assert noise not in out + err, noise
    # everything under build/ moved under --build-dir; nothing written to the default build folder
    assert not (tmp_path / "build").exists()
    assert (elsewhere / "p" / "run_store" / "run.txt").exists() and (elsewhere / "p" / "00_a.ipynb").exists()
    assert "| 00_a | a beats b |" in (elsewhere / "p" / "figures" / "claims.md").read_text()
    timings = json.loads((elsewhere / "p" / "timings.json").read_text())
    assert set(timings) == {"00_a", "01_b"} and all(v > 0 for v in timings.values())
    page = (elsewhere / "p" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "a beats b" in page and "html/00_a.html" in page
    assert (elsewhere / "p" / "html" / "01_b.html").exists()
    # the next dry run lists the parameters and estimates from the measured times; it runs nothing
    monkeypatch.setattr(suite, "NOTEBOOK_DIR", notebooks)
    monkeypatch.setattr(suite, "PROFILE_DIR", notebooks / "profiles")
    (elsewhere / "p" / "00_a.ipynb").unlink()
    assert suite.main(["--profile", "p", "--dry-run", "--build-dir", str(elsewhere)]) == 0
    out, _ = capfd.readouterr()
    assert f"1/2 00_a: expected {timings['00_a']:.0f} s (measured)" in out
    assert f"store_dir = \"{elsewhere / 'p' / 'run_store'}\"" in out and "steps = 2" in out
    assert not (elsewhere / "p" / "00_a.ipynb").exists()


def test_a_failing_notebook_ends_in_a_short_account_and_a_nonzero_exit(tmp_path, capfd, monkeypatch):
    import hydralib.suite as suite
    notebooks = _tiny_suite(tmp_path, failing=True)
    monkeypatch.setattr(suite, "NOTEBOOK_DIR", notebooks)
    monkeypatch.setattr(suite, "PROFILE_DIR", notebooks / "profiles")
    code = suite.main(["--profile", "p", "--build-dir", str(tmp_path / "b")])
    out, err = capfd.readouterr()
    assert code == 1
    assert "[suite:p] FAILED: 01_b.ipynb failed in cell 5 (In [4]): x = 1" in err
    assert "ValueError: boom: bad input" in err and "01_b.ipynb" in err.splitlines()[-1]
    assert "PapermillExecutionError" not in out + err and "Traceback" not in out + err
    assert len([ln for ln in err.splitlines() if ln.strip()]) <= 4
    assert (tmp_path / "b" / "p" / "report.html").exists()  # the report says which notebook failed
    assert "boom" in (tmp_path / "b" / "p" / "report.html").read_text()



def test_a_lab_run_uses_the_default_profiles_parameters_so_it_reuses_make_suites_runs():
    """Opened in JupyterLab, a notebook runs with its declared defaults; they equal the default profile's values
    (run store, base model, sizes), so the run specs, and hence the store keys, are those `make suite` made.
    figures_dir alone differs, on purpose: the lab writes build/lab/figures and never the tracked figures/."""
    for notebook, params in plan_suite("default"):
        declared = {name: p["default"] for name, p in notebook_parameters(notebook).items()}
        differing = {key: (declared.get(key), value) for key, value in params.items()
                     if key != "figures_dir" and declared.get(key) != value}
        assert not differing, f"{notebook.name}: (notebook default, default profile) differ: {differing}"
        assert declared["figures_dir"] == "../build/lab/figures", notebook.name


# --- the command line: hostile arguments end in one error line, exit 2, before anything heavy is imported ---
@pytest.mark.parametrize("profile_text, argv, message", [
    ("common:\n  steps: [1,\n", [], r"t.yaml: not a valid profile: .* at line 3, column 1$"),
    ("common:\n  steps: !!python/object/apply:os.system ['touch pwned']\n", [],
     r"t.yaml: not a valid profile: could not determine a constructor for the tag .*python/object/apply:os.system"),
    ("- a list\n", [], r"t.yaml: holds a YAML list; a profile is a mapping"),
    ("common: [1]\n", [], r"t.yaml: common must be a mapping of names to values, got \[1\]"),
    ("", ["-p", "00_first.steps=[1,"], r"override '00_first.steps=\[1,': the value is not valid YAML \(expected"),
    ("", ["-p", "steps=" + "[" * 5000], r"override .*: the value (nests .* too deeply|is not valid YAML)"),
    ("", ["-p", "00_first.steps=!!python/name:os.system"], r"override .*: the value is not valid YAML"),
    ("", ["--only", "00_first", "-p", "01_second.steps=abc"],
     r"01_second.ipynb: parameter steps = 'abc' is a str, but the notebook declares int"),
    ("", ["--only", "00_first", "-p", "01_second.stpes=1"],
     r"01_second.ipynb does not declare parameter\(s\) \['stpes'\]"),
    ("", ["-p", "00_first.steps=-3"], r"00_first.ipynb: parameter steps = -3 is out of range: it takes numbers >= 0"),
    ("", ["-p", "00_first.steps=1e999"], r"parameter steps = inf is a float, but the notebook declares int"),
    ("", ["--only", "00_frist"], r"--only names notebook '00_frist', which does not exist; did you mean 00_first\?"),
    ("", ["--profile", "../t"], r"profile '../t' is not a profile name"),
    ("", ["--build-dir", "FILE"], r"--build-dir: .*FILE is a file, not a folder"),
])
def test_hostile_command_lines_get_one_error_line_and_exit_2_before_a_kernel_starts(
        suite_dirs, monkeypatch, capsys, profile_text, argv, message):
    import hydralib.suite as suite
    notebooks, profiles, build = suite_dirs
    (profiles / "t.yaml").write_text(profile_text)
    (build.parent / "FILE").write_text("not a folder")
    monkeypatch.setattr(suite, "NOTEBOOK_DIR", notebooks)
    monkeypatch.setattr(suite, "PROFILE_DIR", profiles)
    monkeypatch.chdir(build.parent)
    monkeypatch.setattr(suite, "_register_engine", lambda: pytest.fail("a kernel was about to start"))
    rc = suite.main(["--profile", "t", "--build-dir", str(build), *argv])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert re.search(message, err.strip()), err
    assert not (build.parent / "pwned").exists() and not (build / "t").exists()


def test_notebooks_are_named_by_stem_file_name_or_number_and_dry_run_shows_effective_parameters(suite_dirs, capsys):
    from hydralib.suite import dry_run
    notebooks, profiles, build = suite_dirs
    for only in (["01"], ["01_second.ipynb"], ["notebooks/01_second.ipynb"], ["01_second"]):
        plan = plan_suite("quick", only=only, notebook_dir=notebooks, profile_dir=profiles)
        assert [nb.stem for nb, _ in plan] == ["01_second"]
    plan = plan_suite("quick", overrides=["01.steps=9"], notebook_dir=notebooks, profile_dir=profiles)
    assert plan[1][1]["steps"] == 9
    nb = nbformat.read(notebooks / "00_first.ipynb", as_version=4)
    nb.cells[0].source += "\nseeds = [0, 1, 2]"
    nbformat.write(nb, notebooks / "00_first.ipynb")
    dry_run("quick", overrides=["00_first.steps=4"], notebook_dir=notebooks, profile_dir=profiles, build_dir=build)
    printed = capsys.readouterr().out
    assert 'profile = "quick"   # profile' in printed
    assert "steps = 4   # -p" in printed and "steps = 5   # profile" in printed
    assert "seeds = [0, 1, 2]   # notebook default" in printed


def test_a_bad_argument_imports_nothing_heavy():
    """Refusing an argument must not wait for torch, transformers or papermill (15-25 s on a busy machine)."""
    code = ("import sys, hydralib.__main__ as m\nrc = m.main(['suite', '--only', 'nope'])\n"
            "heavy = sorted({k.split('.')[0] for k in sys.modules} & {'torch', 'transformers', 'papermill', "
            "'nbformat', 'jupyter_client', 'numpy', 'matplotlib'})\nprint(rc, heavy)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert done.stdout.strip() == "2 []", done.stdout + done.stderr
    assert done.stderr.startswith("error: --only names notebook 'nope', which does not exist")


def test_lazy_exports_keep_train_the_function_whichever_module_loads_first():
    code = ("import hydralib.pipeline, hydralib\nfrom hydralib import train, TrainConfig\n"
            "import sys\nprint(callable(train), type(train).__name__, 'torch' in sys.modules, "
            "sys.modules['hydralib.train'].train is train is hydralib.train)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert done.stdout.split() == ["True", "function", "True", "True"], done.stdout + done.stderr
