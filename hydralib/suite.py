"""The papermill runner behind `make suite` and `make test`: every notebook, in order, on a profile.

A profile (notebooks/profiles/<name>.yaml) has `common` parameters, given to every notebook, and
per-notebook ones under `notebooks: {<stem>: {...}}`. Overrides from the command line are
`key=value` (every notebook that declares key) or `<stem>.key=value`. A parameter that a notebook
does not declare is an error, never silently ignored. Executed copies go to build/<profile>/;
the source notebooks are never written.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
PROFILE_DIR = NOTEBOOK_DIR / "profiles"
BUILD_DIR = REPO_ROOT / "build"


def list_notebooks(notebook_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    """The suite's notebooks in order: files named NN_name.ipynb."""
    return sorted(p for p in notebook_dir.glob("[0-9][0-9]_*.ipynb"))


def load_profile(name: str, profile_dir: Path = PROFILE_DIR) -> dict:
    path = profile_dir / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in profile_dir.glob("*.yaml"))
        raise ValueError(f"unknown profile {name!r}; profiles in {profile_dir}: {', '.join(known)}")
    profile = yaml.safe_load(path.read_text()) or {}
    for section in ("common", "notebooks"):
        _numbers_from_exponents(profile.get(section) or {})
    unknown = sorted(set(profile) - {"common", "notebooks"})
    if unknown:
        raise ValueError(f"{path}: unknown top-level keys {unknown}; allowed: common, notebooks")
    return {"common": profile.get("common") or {}, "notebooks": profile.get("notebooks") or {}}


def _numbers_from_exponents(values: dict) -> None:
    for key, value in values.items():
        if isinstance(value, dict):
            _numbers_from_exponents(value)
        else:
            values[key] = exponent_as_number(value)


def declared_parameters(notebook: Path) -> set[str]:
    """Names assigned in the notebook's cell tagged `parameters`."""
    import papermill
    return set(papermill.inspect_notebook(str(notebook)))


EXPONENT = re.compile(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+")


def exponent_as_number(value):
    """2e-4 as a number: YAML 1.1 reads exponents without a dot as text."""
    return float(value) if isinstance(value, str) and EXPONENT.fullmatch(value.strip()) else value


def parse_value(text: str):
    return exponent_as_number(yaml.safe_load(text))


def parse_overrides(items: list[str]) -> tuple[dict, dict]:
    """`key=value` and `stem.key=value` strings -> (for all, {stem: {...}}); values parsed as YAML."""
    common, per_notebook = {}, {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not of the form key=value or notebook.key=value")
        parsed = parse_value(value)
        stem, dot, name = key.rpartition(".")
        if dot:
            per_notebook.setdefault(stem, {})[name] = parsed
        else:
            common[key] = parsed
    return common, per_notebook


def plan_suite(profile_name: str, only: list[str] | None = None, overrides: list[str] = (),
               notebook_dir: Path = NOTEBOOK_DIR, profile_dir: Path = PROFILE_DIR) -> list[tuple[Path, dict]]:
    """[(notebook, parameters)] for the run, with every parameter checked against the notebook."""
    profile = load_profile(profile_name, profile_dir)
    notebooks = list_notebooks(notebook_dir)
    stems = [nb.stem for nb in notebooks]
    cli_common, cli_per_notebook = parse_overrides(list(overrides))
    for source, names in (("profile", profile["notebooks"]), ("override", cli_per_notebook)):
        strangers = sorted(set(names) - set(stems))
        if strangers:
            raise ValueError(f"{source} names notebooks {strangers} that do not exist; notebooks: {', '.join(stems)}")
    if only:
        missing = sorted(set(only) - set(stems))
        if missing:
            raise ValueError(f"--only names notebooks {missing} that do not exist; notebooks: {', '.join(stems)}")
        notebooks = [nb for nb in notebooks if nb.stem in only]
    plan = []
    declared_by_any = set()
    for nb in notebooks:
        declared = declared_parameters(nb)
        declared_by_any |= declared
        params = dict(profile["common"])
        params.update(profile["notebooks"].get(nb.stem) or {})
        params.update({k: v for k, v in cli_common.items() if k in declared})
        params.update(cli_per_notebook.get(nb.stem, {}))
        undeclared = sorted(set(params) - declared)
        if undeclared:
            raise ValueError(
                f"{nb.name} does not declare parameter(s) {undeclared} (profile {profile_name!r} or an override "
                f"sets them); its parameters cell declares: {', '.join(sorted(declared)) or 'nothing'}")
        plan.append((nb, params))
    strays = sorted(set(cli_common) - declared_by_any)
    if strays:
        raise ValueError(f"override(s) {strays} are declared by no notebook in this run")
    return plan


def run_suite(profile_name: str, only: list[str] | None = None, overrides: list[str] = (),
              build_dir: Path = BUILD_DIR, notebook_dir: Path = NOTEBOOK_DIR, profile_dir: Path = PROFILE_DIR,
              kernel_name: str = "python3") -> list[dict]:
    """Execute the plan with papermill, copies into build_dir/<profile>/; returns one record per notebook."""
    import papermill
    plan = plan_suite(profile_name, only, overrides, notebook_dir, profile_dir)
    out_dir = build_dir / profile_name
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for nb, params in plan:
        target = out_dir / nb.name
        if target.resolve() == nb.resolve():
            raise ValueError(f"refusing to execute {nb} over itself; choose another build folder")
        print(f"[suite:{profile_name}] {nb.name} {json.dumps(params)}", flush=True)
        start = time.perf_counter()
        papermill.execute_notebook(str(nb), str(target), parameters=params, cwd=str(nb.parent),
                                   kernel_name=kernel_name, progress_bar=False)
        seconds = time.perf_counter() - start
        records.append({"notebook": nb.name, "seconds": round(seconds, 1), "output": str(target)})
        print(f"[suite:{profile_name}] {nb.name} done in {seconds:.1f} s", flush=True)
    (out_dir / "suite_report.json").write_text(json.dumps(records, indent=2))
    claims = write_claims(out_dir / "claims", _figures_dir(profile_name, notebook_dir, profile_dir))
    if claims is not None:
        print(f"[suite:{profile_name}] claims table: {claims}", flush=True)
    return records


def _figures_dir(profile_name: str, notebook_dir: Path, profile_dir: Path) -> Path:
    """The profile's figures_dir (relative to the notebooks, as the notebooks read it)."""
    figures = load_profile(profile_name, profile_dir)["common"].get("figures_dir", "../figures")
    return (notebook_dir / figures).resolve()


def write_claims(claims_dir: Path, figures_dir: Path) -> Path | None:
    """Gather the verdicts the notebooks wrote into claims_dir into figures_dir/claims.md (None if there are none)."""
    from .claims import VERDICT_NAME, claims_table
    if not (claims_dir / VERDICT_NAME).exists():
        return None
    figures_dir.mkdir(parents=True, exist_ok=True)
    path = figures_dir / "claims.md"
    path.write_text("# Claims of the paper, checked by the notebooks\n\n"
                    "Written by `make suite` from the verdict cells; each row compares our measured means over\n"
                    "seeds. *held*: the difference exceeds its spread (sd of the difference); *not held*: it is that\n"
                    "far the other way; *inconclusive*: in between. The paper's figures are its own, for reference.\n\n"
                    + claims_table([claims_dir]))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hydralib suite", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="default", help="ci, default, gpu, or any notebooks/profiles/*.yaml")
    parser.add_argument("--only", nargs="*", help="notebook stems to run, e.g. 00_quickstart")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="[NOTEBOOK.]KEY=VALUE")
    parser.add_argument("--build-dir", type=Path, default=BUILD_DIR)
    args = parser.parse_args(argv)
    try:
        records = run_suite(args.profile, args.only, args.param, args.build_dir)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for r in records:
        print(f"{r['notebook']:<40} {r['seconds']:>8.1f} s")
    return 0
