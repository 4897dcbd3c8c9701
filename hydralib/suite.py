"""The papermill runner behind `make suite` and `make test`: every notebook, in order, on a profile.

A profile (notebooks/profiles/<name>.yaml) has `common` parameters, given to every notebook, and
per-notebook ones under `notebooks: {<stem>: {...}}`. Overrides from the command line are
`key=value` (every notebook that declares key) or `<stem>.key=value`. A parameter that a notebook
does not declare, or a value of another type than the notebook's default (an int given "abc"), is an
error before anything runs, never silently ignored. Executed copies go to build/<profile>/, with
timings.json (the measured seconds of each notebook, for the next run's estimates) and report.html (every
figure, the claims table, run times, profile and environment on one page); the source notebooks are never
written. --build-dir X puts everything the profile writes under build/ under X instead (run store, claims,
runs, executed notebooks, report); figures stay in the profile's figures_dir unless that is under build/.

While it runs it prints the notebook (i/n), each code cell it starts, the `[runs] ...` lines the notebooks
print, and an estimate of the time left from the last measured run times.

Everything the command line is given is checked before a kernel starts, and before the heavy libraries
(papermill, jupyter_client, torch) are imported: a bad argument is one `error: ...` line and exit status 2
within a second or two.
"""
from __future__ import annotations

import argparse
import ast
import difflib
import json
import math
import os
import re
import sys
import time
import types
from pathlib import Path
from typing import NamedTuple

import yaml


REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
PROFILE_DIR = NOTEBOOK_DIR / "profiles"
BUILD_DIR = REPO_ROOT / "build"
TIMINGS_NAME = "timings.json"
FORWARDED_PREFIXES = ("[runs]",)  # lines of the notebooks' stdout shown while the suite runs


class SuiteFailure(RuntimeError):
    """A notebook failed while the suite ran; str() is the short account the command line prints."""

    def __init__(self, message: str, records: list[dict]):
        super().__init__(message)
        self.records = records


def list_notebooks(notebook_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    """The suite's notebooks in order: files named NN_name.ipynb."""
    return sorted(p for p in notebook_dir.glob("[0-9][0-9]_*.ipynb"))


def load_profile(name: str, profile_dir: Path = PROFILE_DIR) -> dict:
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", str(name)):
        raise ValueError(f"profile {name!r} is not a profile name (letters, digits, _ . -); profiles are the "
                         f"files of {profile_dir}")
    path = profile_dir / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in profile_dir.glob("*.yaml"))
        raise ValueError(f"unknown profile {name!r}; profiles in {profile_dir}: {', '.join(known)}")
    try:
        profile = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except yaml.YAMLError as err:  # a syntax error, or a tag such as !!python/object that safe_load refuses
        raise ValueError(f"{path}: not a valid profile: {_yaml_problem(err)}") from None
    except RecursionError:
        raise ValueError(f"{path}: not a valid profile: lists or mappings nested too deeply") from None
    if not isinstance(profile, dict):
        raise ValueError(f"{path}: holds a YAML {type(profile).__name__}; a profile is a mapping with the keys "
                         "common and notebooks")
    unknown = sorted(map(str, set(profile) - {"common", "notebooks", "only"}))
    if unknown:
        raise ValueError(f"{path}: unknown top-level keys {unknown}; allowed: common, notebooks, only")
    only = profile.get("only")  # a profile made for some notebooks (e.g. 08 alone) runs only those
    if only is not None and (not isinstance(only, list) or not only or not all(isinstance(x, str) for x in only)):
        raise ValueError(f"{path}: only must be a list of notebook names, got only={_short(only)}")
    common, notebooks = profile.get("common") or {}, profile.get("notebooks") or {}
    _check_mapping(path, "common", common)
    _check_mapping(path, "notebooks", notebooks)
    notebooks = {stem: values or {} for stem, values in notebooks.items()}
    for stem, values in notebooks.items():
        _check_mapping(path, f"notebooks.{stem}", values)
    for section in (common, notebooks):
        _numbers_from_exponents(section)
    return {"common": common, "notebooks": notebooks, "only": only}


def _check_mapping(path: Path, where: str, section) -> None:
    if not isinstance(section, dict) or not all(isinstance(k, str) for k in section):
        raise ValueError(f"{path}: {where} must be a mapping of names to values, got {_short(section)}")


def _yaml_problem(err: Exception) -> str:
    """One line from a YAML error: what is wrong and where (line and column, 1-based)."""
    mark = getattr(err, "problem_mark", None)
    what = " ".join(str(getattr(err, "problem", None) or err).split())
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{what}{where}"


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _numbers_from_exponents(values: dict) -> None:
    for key, value in values.items():
        if isinstance(value, dict):
            _numbers_from_exponents(value)
        else:
            values[key] = exponent_as_number(value)


_NO_DEFAULT = object()


def notebook_parameters(notebook: Path) -> dict[str, dict]:
    """{name: {"default": value or _NO_DEFAULT, "type": "int" | ... | None}} of the cell tagged `parameters`.

    The type is the annotation (`steps: int = 3`, as papermill reads it), else that of the literal default.
    Read with json and ast, not papermill, so that checking arguments imports nothing heavy (a test checks
    that papermill reads the same names, defaults and types)."""
    found = {}
    for node in ast.parse(_parameters_source(notebook)).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name, annotation = node.targets[0].id, None
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            name, annotation = node.target.id, node.annotation
            annotation = annotation.value if isinstance(annotation, ast.Constant) else ast.unparse(annotation)
        else:
            continue
        try:
            default = exponent_as_number(ast.literal_eval(node.value))
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            default = _NO_DEFAULT
        kind = annotation or (None if default is _NO_DEFAULT or default is None else type(default).__name__)
        found[name] = {"default": default, "type": kind}
    return found


def _notebook_cells(notebook: Path) -> list[dict]:
    try:
        cells = json.loads(Path(notebook).read_text(encoding="utf-8"))["cells"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{notebook}: not a readable notebook ({type(err).__name__}: {err})") from None
    return [c for c in cells if isinstance(c, dict)]


def _cell_source(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def _parameters_source(notebook: Path) -> str:
    for cell in _notebook_cells(notebook):
        if cell.get("cell_type") == "code" and "parameters" in (cell.get("metadata") or {}).get("tags", []):
            return _cell_source(cell)
    return ""


def declared_parameters(notebook: Path) -> set[str]:
    """Names assigned in the notebook's cell tagged `parameters`."""
    return set(notebook_parameters(notebook))


_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "list": list, "dict": dict, "tuple": list,
          "none": type(None), "nonetype": type(None)}


def _fits(value, kind) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool) or (
            isinstance(value, float) and value.is_integer())
    if kind is str:  # a text default also takes a list of texts: targets="all-linear" or [q_proj, v_proj]
        return isinstance(value, str) or isinstance(value, list) and all(isinstance(v, str) for v in value)
    return isinstance(value, kind)


def checked_value(notebook: str, key: str, value, expected: str | None, default=_NO_DEFAULT):
    """value if it fits the declared type, else ValueError naming notebook, key, value and type. The type is
    an annotation (`int`, `str | list`, `Optional[int]`) or that of the default. A whole float where an int is
    declared becomes an int; an int fits a float; None always fits; a list of texts fits a text."""
    names = re.findall(r"[A-Za-z_]+", expected or "")
    kinds = [_TYPES[n.lower()] for n in names if n.lower() in _TYPES]
    if not kinds or value is None or any(k is type(None) for k in kinds) and value is None:
        return value
    for kind in kinds:
        if _fits(value, kind):
            return int(value) if kind is int and isinstance(value, float) else value
    raise ValueError(f"{notebook}: parameter {key} = {value!r} is {_a(type(value).__name__)}, but the notebook "
                     f"declares {expected}"
                     + ("" if default is _NO_DEFAULT else f" (its default: {key} = {default!r})"))


def _a(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def _numbers_in(value) -> list:
    """The numbers of a value: itself, or the items of a list or the values of a mapping (one level)."""
    items = value if isinstance(value, list) else list(value.values()) if isinstance(value, dict) else [value]
    return [v for v in items if isinstance(v, (int, float)) and not isinstance(v, bool)]


def checked_range(notebook: str, key: str, value, default=_NO_DEFAULT):
    """value if its numbers are finite and, where the notebook's default holds no negative number, none is
    negative (a step count, a seed, a learning rate); else ValueError naming notebook, key and value."""
    numbers = _numbers_in(value)
    if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
        raise ValueError(f"{notebook}: parameter {key} = {value!r} is not a finite number")
    defaults = [] if default is _NO_DEFAULT or default is None else _numbers_in(default)
    if any(v < 0 for v in numbers) and defaults and all(v >= 0 for v in defaults):
        raise ValueError(f"{notebook}: parameter {key} = {value!r} is out of range: it takes numbers >= 0 "
                         f"(its default: {key} = {default!r})")
    return value


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
        try:
            parsed = parse_value(value)
        except yaml.YAMLError as err:
            raise ValueError(f"override {_short(item)}: the value is not valid YAML ({_yaml_problem(err)})") from None
        except RecursionError:
            raise ValueError(f"override {_short(item)}: the value nests lists or mappings too deeply") from None
        stem, dot, name = key.rpartition(".")
        if not name.isidentifier() or dot and not stem:
            raise ValueError(f"override {item!r}: {key!r} is not a parameter name or notebook.name")
        if dot:
            per_notebook.setdefault(stem, {})[name] = parsed
        else:
            common[key] = parsed
    return common, per_notebook


def _moved_under(value, notebook_dir: Path, default_build: Path, build_dir: Path):
    """A path parameter (relative to the notebooks) that lies under the default build folder, moved under
    build_dir (absolute); anything else unchanged."""
    if not isinstance(value, str) or "/" not in value and value not in (".", ".."):
        return value
    path = Path(value).expanduser()
    path = (path if path.is_absolute() else notebook_dir / path).resolve()
    try:
        rel = path.relative_to(default_build.resolve())
    except ValueError:
        return value
    return str(build_dir.resolve() / rel)


def notebook_stem(name: str, stems: list[str], what: str = "--only") -> str:
    """The stem a name given on the command line means: the stem itself, its file name (00_quickstart.ipynb,
    also with a folder) or its number (00); refused with the closest names ("did you mean") otherwise."""
    text = str(name)
    base = text.replace("\\", "/").rsplit("/", 1)[-1].removesuffix(".ipynb")
    if base in stems:
        return base
    numbered = [s for s in stems if s.split("_", 1)[0] == base]
    if len(numbered) == 1:
        return numbered[0]
    close = difflib.get_close_matches(base, stems, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    raise ValueError(f"{what} names notebook {text!r}, which does not exist{hint} (notebooks: {', '.join(stems)})")


def plan_suite(profile_name: str, only: list[str] | None = None, overrides: list[str] = (),
               notebook_dir: Path = NOTEBOOK_DIR, profile_dir: Path = PROFILE_DIR,
               build_dir: Path | None = None, sources: dict | None = None) -> list[tuple[Path, dict]]:
    """[(notebook, parameters)] for the run, with every parameter checked against the notebook: declared, of its
    declared type, finite and, where its default is not negative, not negative. Every notebook's parameters are
    checked, also those of notebooks --only leaves out, so a mistake is never ignored. With build_dir other than
    the default (notebooks/../build), every path parameter under the default build folder, set or left at the
    notebook's default, is moved under build_dir. sources, if given a dict, receives {stem: {key: where}} with
    where "profile", "-p" or "--build-dir" for each parameter set."""
    profile = load_profile(profile_name, profile_dir)
    notebooks = list_notebooks(notebook_dir)
    stems = [nb.stem for nb in notebooks]
    cli_common, named = parse_overrides(list(overrides))
    cli_per_notebook = {}
    for stem, values in named.items():
        cli_per_notebook.setdefault(notebook_stem(stem, stems, "an override"), {}).update(values)
    strangers = sorted(set(profile["notebooks"]) - set(stems))
    if strangers:
        raise ValueError(f"profile {profile_name!r} names notebooks {strangers} that do not exist; "
                         f"notebooks: {', '.join(stems)}")
    chosen = set(stems)
    only = profile["only"] if only is None else only
    if only is not None:
        if not only:
            raise ValueError(f"--only needs at least one notebook name; notebooks: {', '.join(stems)}")
        chosen = {notebook_stem(name, stems) for name in only}
    default_build = notebook_dir.parent / "build"
    move = build_dir is not None and Path(build_dir).resolve() != default_build.resolve()
    plan = []
    declared_by_chosen = set()
    for nb in notebooks:
        declared = notebook_parameters(nb)
        if nb.stem in chosen:
            declared_by_chosen |= set(declared)
        params = dict(profile["common"])
        params.update(profile["notebooks"].get(nb.stem) or {})
        where = dict.fromkeys(params, "profile")
        given = {**{k: v for k, v in cli_common.items() if k in declared}, **cli_per_notebook.get(nb.stem, {})}
        params.update(given)
        where.update(dict.fromkeys(given, "-p"))
        undeclared = sorted(set(params) - set(declared))
        if undeclared:
            raise ValueError(
                f"{nb.name} does not declare parameter(s) {undeclared} (profile {profile_name!r} or an override "
                f"sets them); its parameters cell declares: {', '.join(sorted(declared)) or 'nothing'}")
        for key, value in params.items():
            value = checked_value(nb.name, key, value, declared[key]["type"], declared[key]["default"])
            params[key] = checked_range(nb.name, key, value, declared[key]["default"])
        if move:
            for key, info in declared.items():
                value = params.get(key, info["default"])
                moved = _moved_under(value, notebook_dir, default_build, Path(build_dir))
                if moved is not value:
                    params[key], where[key] = moved, "--build-dir"
        if nb.stem in chosen:
            plan.append((nb, params))
            if sources is not None:
                sources[nb.stem] = where
    strays = sorted(set(cli_common) - declared_by_chosen)
    if strays:
        raise ValueError(f"override(s) {strays} are declared by no notebook in this run")
    if build_dir is not None:
        _check_build_dir(Path(build_dir), profile_name)
    return plan


def _check_build_dir(build_dir: Path, profile_name: str) -> None:
    """Refuse a build folder (or its profile folder) that is a file, or cannot be made, before anything runs."""
    for folder in (build_dir, build_dir / profile_name):
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"--build-dir: {folder} is a file, not a folder")
    existing = next((p for p in [build_dir, *build_dir.parents] if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ValueError(f"--build-dir: {build_dir} cannot be made, {existing} is a file")


# ---------------------------------------------------------------------------------------------------------
# Time estimates


def load_timings(out_dir: Path) -> dict[str, float]:
    path = Path(out_dir) / TIMINGS_NAME
    try:
        data = json.loads(path.read_text())
        return {k: float(v) for k, v in data.items() if isinstance(v, (int, float))}
    except (OSError, ValueError, AttributeError):
        return {}


def save_timing(out_dir: Path, stem: str, seconds: float) -> None:
    timings = load_timings(out_dir)
    timings[stem] = round(seconds, 1)
    path = Path(out_dir) / TIMINGS_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(timings, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


_STATED = r"`{profile}`[^`]{{0,40}}?\b(?:about |under |roughly )?(a|an|\d+(?:\.\d+)?)\s+(minutes?|seconds?|s\b|min\b)"


def stated_seconds(notebook: Path, profile_name: str) -> float | None:
    """The run time a notebook's first markdown cell states for this profile ("`default` about 5 minutes")."""
    try:
        cells = _notebook_cells(notebook)
    except ValueError:  # an estimate only
        return None
    texts = [_cell_source(c) for c in cells if c.get("cell_type") == "markdown"]
    text = next((t for t in texts if "run time" in t.lower()), "")
    match = re.search(_STATED.format(profile=re.escape(profile_name)), text, flags=re.IGNORECASE | re.DOTALL)
    if not match:
        return None
    amount = 1.0 if match.group(1) in ("a", "an") else float(match.group(1))
    return amount * (60.0 if match.group(2).startswith("m") else 1.0)


def expected_seconds(plan, profile_name: str, out_dir: Path) -> dict[str, tuple[float | None, str]]:
    """{stem: (seconds or None, "measured" | "stated" | "unknown")}."""
    timings = load_timings(out_dir)
    expected = {}
    for nb, _ in plan:
        if nb.stem in timings:
            expected[nb.stem] = (timings[nb.stem], "measured")
        else:
            stated = stated_seconds(nb, profile_name)
            expected[nb.stem] = (stated, "stated" if stated is not None else "unknown")
    return expected


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def time_left(expected: list[float | None], current: int, elapsed: float) -> str:
    """An estimate of what is left of the suite: the current notebook's rest, then the later ones."""
    rest = expected[current]
    parts = [] if rest is None else [max(rest - elapsed, 0.0)]
    parts += [e for e in expected[current + 1:] if e is not None]
    unknown = sum(e is None for e in expected[current:])
    if not parts and unknown:
        return "time left unknown"
    text = f"about {format_duration(sum(parts))} left"
    if sum(parts) > 0 and rest is not None and elapsed > rest:
        text = f"about {format_duration(sum(parts))} left (this notebook is past its last time)"
    return text + (f", plus {unknown} notebook(s) never timed" if unknown else "")


# ---------------------------------------------------------------------------------------------------------
# Execution


class _LineForwarder:
    """A file-like sink for the notebooks' stdout: passes on whole lines that start with one of prefixes."""

    def __init__(self, prefixes=FORWARDED_PREFIXES, stream=None):
        self.prefixes, self.stream, self.buffer = tuple(prefixes), stream, ""

    def write(self, text: str) -> int:
        self.buffer += text
        *lines, self.buffer = re.split(r"\r\n|\n|\r", self.buffer)
        for line in lines:
            if line.lstrip().startswith(self.prefixes):
                out = self.stream or sys.stdout
                out.write(line.strip() + "\n")
                out.flush()
        return len(text)

    def flush(self) -> None:
        pass


def _batch_kernel_setup() -> None:
    """Run in each batch kernel before the first cell: tqdm.auto is the text tqdm (no IProgress warning, no
    widgets in executed notebooks)."""
    import tqdm  # lazy: a run's libraries, not needed to check arguments
    import tqdm.std  # lazy: a run's libraries, not needed to check arguments
    auto = types.ModuleType("tqdm.auto")
    auto.tqdm, auto.trange = tqdm.std.tqdm, tqdm.std.trange
    auto.__doc__ = "tqdm.std.tqdm: set by hydralib.suite for batch runs"
    for name in ("tqdm.auto", "tqdm.autonotebook"):
        sys.modules[name] = auto
    tqdm.auto = tqdm.autonotebook = auto


_BATCH_SETUP_LINE = "from hydralib.suite import _batch_kernel_setup as _hs; _hs(); del _hs"


def _kernel_manager_class():
    """AsyncKernelManager, but on IPC sockets (no TCP ports, no 'running over TCP' warning) and without the
    SIGINT that jupyter_client sends to the kernel's process group at shutdown: it races ipykernel restoring
    its idle handler after the last reply and ends a successful run with a KeyboardInterrupt traceback."""
    from jupyter_client.manager import AsyncKernelManager  # lazy: a run's libraries, not needed to check arguments
    from traitlets import CaselessStrEnum  # lazy: a run's libraries, not needed to check arguments

    class SuiteKernelManager(AsyncKernelManager):
        transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc" if os.name == "posix" else "tcp",
                                    config=True)

        async def _async_interrupt_kernel(self):
            if self.shutting_down:  # the kernel is idle: the shutdown request that follows is enough
                return
            await super()._async_interrupt_kernel()

    return SuiteKernelManager


def _register_engine():
    """A papermill engine that calls on_cell(index, count, cell) before each cell."""
    from papermill.engines import NBClientEngine, papermill_engines  # lazy: not needed to check arguments

    class SuiteEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, on_cell=None, **kwargs):
            if on_cell is not None:
                start = nb_man.cell_start

                def cell_start(cell, cell_index=None, **kw):
                    on_cell(cell_index, len(nb_man.nb.cells), cell)
                    return start(cell, cell_index, **kw)
                nb_man.cell_start = cell_start
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    papermill_engines.register("hydralib-suite", SuiteEngine)
    return "hydralib-suite"


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _short_source(cell) -> str:
    lines = [ln.strip() for ln in cell.source.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    text = lines[0] if lines else ""
    return text if len(text) <= 70 else text[:67] + "..."


def failure_message(name: str, error: BaseException, target: Path) -> str:
    """A few lines: notebook, cell, the error's last line, the executed notebook."""
    from papermill.exceptions import PapermillExecutionError  # lazy: a run's libraries, not needed to check arguments
    rel = _display_path(target)
    if isinstance(error, PapermillExecutionError):
        evalue = _ANSI.sub("", str(error.evalue or "")).strip()
        last = [ln for ln in evalue.splitlines() if ln.strip()]
        line = f"{error.ename}: {last[-1]}" if last else str(error.ename)
        src = [ln for ln in (error.source or "").splitlines() if ln.strip()]
        where = f"cell {error.cell_index + 1} (In [{error.exec_count}])" + (f": {src[0].strip()[:70]}" if src else "")
        return f"{name} failed in {where}\n  {line}\n  executed notebook, with the full traceback: {rel}"
    kind = type(error).__name__
    text = _ANSI.sub("", str(error)).strip().splitlines()
    return (f"{name} failed: {kind}" + (f": {text[-1]}" if text else "") +
            f"\n  executed notebook so far: {rel}")


def _display_path(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def run_suite(profile_name: str, only: list[str] | None = None, overrides: list[str] = (),
              build_dir: Path = BUILD_DIR, notebook_dir: Path = NOTEBOOK_DIR, profile_dir: Path = PROFILE_DIR,
              kernel_name: str = "python3", report: bool = True, show_cells: bool = True) -> list[dict]:
    """Execute the plan with papermill, copies into build_dir/<profile>/; returns one record per notebook.
    A notebook that fails stops the suite with SuiteFailure (its message is the short account)."""
    build_dir = Path(build_dir)
    plan = plan_suite(profile_name, only, overrides, notebook_dir, profile_dir, build_dir=build_dir)
    import papermill  # lazy: a run's libraries, not needed to check arguments
    from .report_page import write_report  # lazy: a run's libraries, not needed to check arguments (torch)
    out_dir = build_dir / profile_name
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"--build-dir: cannot create {out_dir} ({err.strerror or err})") from None
    tag = f"[suite:{profile_name}]"
    expected_by_stem = expected_seconds(plan, profile_name, out_dir)
    expected = [expected_by_stem[nb.stem][0] for nb, _ in plan]
    engine = _register_engine()
    km_class = _kernel_manager_class()
    records, failure = [], None
    suite_start = time.perf_counter()
    for i, (nb, params) in enumerate(plan):
        target = out_dir / nb.name
        if target.resolve() == nb.resolve():
            raise ValueError(f"refusing to execute {nb} over itself; choose another build folder")
        print(f"{tag} {i + 1}/{len(plan)} {nb.stem}: expected {format_duration(expected[i])} "
              f"({expected_by_stem[nb.stem][1]}); {time_left(expected, i, 0.0)}", flush=True)
        print(f"{tag}   parameters {json.dumps(params)}", flush=True)
        start = time.perf_counter()

        def on_cell(index, count, cell, i=i, start=start):
            if show_cells and cell.cell_type == "code" and "injected-parameters" not in cell.metadata.get("tags", []):
                elapsed = time.perf_counter() - start
                print(f"{tag}   {nb.stem} cell {index + 1}/{count} at {format_duration(elapsed)}, "
                      f"{time_left(expected, i, elapsed)}: {_short_source(cell)}", flush=True)

        try:
            papermill.execute_notebook(
                str(nb), str(target), parameters=params, cwd=str(nb.parent), kernel_name=kernel_name,
                progress_bar=False, engine_name=engine, on_cell=on_cell, stdout_file=_LineForwarder(),
                kernel_manager_class=km_class, extra_arguments=[f"--IPKernelApp.exec_lines={_BATCH_SETUP_LINE}"])
        except KeyboardInterrupt:
            failure = f"interrupted during {nb.name}; executed notebook so far: {_display_path(target)}"
            records.append({"notebook": nb.name, "seconds": round(time.perf_counter() - start, 1),
                            "output": str(target), "status": "interrupted"})
            break
        except Exception as err:  # noqa: BLE001 - any failure of a notebook ends in the short account
            failure = failure_message(nb.name, err, target)
            records.append({"notebook": nb.name, "seconds": round(time.perf_counter() - start, 1),
                            "output": str(target), "status": "failed", "error": failure})
            break
        seconds = time.perf_counter() - start
        save_timing(out_dir, nb.stem, seconds)
        records.append({"notebook": nb.name, "seconds": round(seconds, 1), "output": str(target), "status": "ok"})
        print(f"{tag} {nb.stem} done in {format_duration(seconds)}", flush=True)
    (out_dir / "suite_report.json").write_text(json.dumps(records, indent=2))
    figures = _plan_dirs(plan, "figures_dir", notebook_dir) or [_figures_dir(profile_name, notebook_dir, profile_dir)]
    claims_dirs = _plan_dirs(plan, "claims_dir", notebook_dir) or [out_dir / "claims"]
    claims = write_claims(claims_dirs, figures[0], profile_name)
    if claims is not None:
        print(f"{tag} claims table: {_display_path(claims)}", flush=True)
    if report:
        try:
            page = write_report(out_dir, profile_name, plan=plan, records=records, figures_dirs=figures,
                                claims_path=claims, profile_path=profile_dir / f"{profile_name}.yaml")
            print(f"{tag} report: {_display_path(page)}", flush=True)
        except Exception as err:  # noqa: BLE001 - the report must not hide the suite's own outcome
            print(f"{tag} the report could not be written: {type(err).__name__}: {err}", file=sys.stderr)
    total = time.perf_counter() - suite_start
    if failure is not None:
        raise SuiteFailure(failure, records)
    print(f"{tag} {len(records)} notebook(s) in {format_duration(total)}", flush=True)
    return records


def _plan_dirs(plan, key: str, notebook_dir: Path) -> list[Path]:
    """The distinct folders the plan's notebooks are given for key, resolved, in plan order."""
    seen = []
    for nb, params in plan:
        if isinstance(params.get(key), str):
            path = Path(params[key]).expanduser()
            path = (path if path.is_absolute() else nb.parent / path).resolve()
            if path not in seen:
                seen.append(path)
    return seen


def _figures_dir(profile_name: str, notebook_dir: Path, profile_dir: Path) -> Path:
    """The profile's figures_dir (relative to the notebooks, as the notebooks read it)."""
    figures = load_profile(profile_name, profile_dir)["common"].get("figures_dir", "../figures")
    return (notebook_dir / figures).resolve()


def write_claims(claims_dirs, figures_dir: Path, profile_name: str | None = None) -> Path | None:
    """Gather the verdicts the notebooks wrote into the claims folders into figures_dir/claims.md (None if
    there are none), tagged with the profile that ran them."""
    from .claims import VERDICT_NAME, claims_table  # lazy: a run's libraries, not needed to check arguments (scipy)
    if isinstance(claims_dirs, (str, Path)):
        claims_dirs = [claims_dirs]
    claims_dirs = [Path(d) for d in claims_dirs if (Path(d) / VERDICT_NAME).exists()]
    if not claims_dirs:
        return None
    figures_dir.mkdir(parents=True, exist_ok=True)
    path = figures_dir / "claims.md"
    path.write_text("# Claims of the paper, checked by the notebooks\n\n"
                    "Written by `make suite` from the verdict cells. Each row is a paired comparison over the\n"
                    "evaluation seeds (a seed fixes data, initialisation and batch order for both sides): the mean\n"
                    "difference, its 95% t interval and its p-value (paired t test). The verdict is decided on the\n"
                    "Benjamini-Hochberg adjusted q over the whole table (the family is stated below): *held* where\n"
                    "q < 0.05 on the claimed side, *not held* on the other side, *inconclusive* otherwise. A\n"
                    "comparison made in several notebooks is one row (the others named). Agreement rows count trials\n"
                    "and carry an exact (Clopper-Pearson) interval; efficiency rows state their unit. Similarities\n"
                    "and NMIs are compared with a chance baseline. The paper's figures are its own, for reference\n"
                    "(hydralib/claims.py says more).\n\n"
                    + (f"Profile: `{profile_name}`.\n\n" if profile_name else "")
                    + claims_table(claims_dirs))
    return path


# ---------------------------------------------------------------------------------------------------------
# Runs and device-hours, for --dry-run: an estimate made without running anything
#
# How many runs a notebook trains is decided by its code cells, not by one parameter. RUN_COUNTERS rebuilds
# each notebook's methods from its parameters with the builders the notebook itself calls (hydralib.methods,
# anatomy.lora_families), and counts distinct runs (two labels with the same spec train once). Limits: a counter
# must follow its notebook when the notebook's run cells change (tests/test_executors.py checks some counts
# derived by hand); notebook 03's two extra methods when the k-means elbow differs from N are not counted (they
# depend on the data); notebook 06 times steps rather than training runs; time outside runs (kernels, clustering,
# t-SNE, figures) is in the notebooks' expected times above, not in the device-hours.

# (model, "cpu" or "gpu") -> (seconds per training step, seconds per run besides its steps: loading, scoring)
STEP_COSTS = {
    ("tiny", "cpu"): (0.15, 5.0),
    ("tiny", "gpu"): (0.03, 15.0),
    ("smollm2-135m", "cpu"): (3.9, 90.0),
    ("smollm2-135m", "gpu"): (0.15, 1200.0),
    ("meta-llama/Llama-2-7b-hf", "gpu"): (0.6, 180.0),
}
COST_BASIS = {
    ("tiny", "cpu"): "measured 2026-12-03 on one thread of a loaded 2-core CPU, the default profile's runs (batch "
                     "32, bf16): HydraLoRA r8 N=8 0.16 s a step, LoRA r32 0.14 s; 3-5 s a run besides",
    ("tiny", "gpu"): "estimate, not measured: a 4-layer model at batch 32 is bound by kernel launches, not FLOPs",
    ("smollm2-135m", "cpu"): "measured 2026-12-03 on a quiet 2-core CPU, two one-thread workers, 4 rows of up to "
                             "about 500 tokens a step, one row at a time, bf16, adapters on every linear layer: LoRA "
                             "r8 3.7 s a step, HydraLoRA r8 N=3 4.2 s, LoRA r32 3.4 s; a run besides (loading, "
                             "scoring about 240 test rows without generating, validation) estimated",
    ("smollm2-135m", "gpu"): "estimate, not measured: 30 layers at batch 16, launch-bound; per run, scoring every "
                             "test split, MMLU's 14,042 rows one at a time, zero- and few-shot, dominates",
    ("meta-llama/Llama-2-7b-hf", "gpu"): "estimate, not measured: 4 x 6.7e9 parameters x 16 x 512 tokens per "
                                         "step at 40% of an H100's bf16 peak; per run, loading 13 GB and scoring",
}
DEVICE_COUNTS = (1, 2, 4, 8)


class RunGroup(NamedTuple):
    """Runs of one notebook that cost alike: `steps` training steps each (0: scoring only) of `model`; parallel:
    through the run store's workers (else one after another in the notebook's kernel)."""
    runs: int
    steps: int
    model: str
    parallel: bool = True


def _identities(methods: dict, seeds, **setting) -> list[str]:
    """One text per run of run_methods(methods, seeds, **setting): equal texts are the same spec."""
    return [json.dumps({"adapter": None if m["adapter"] is None else m["adapter"].to_dict(), "seed": seed,
                        **{k: v for k, v in m.items() if k != "adapter"}, **setting}, sort_keys=True, default=str)
            for m in methods.values() for seed in seeds]


def _runs_00(p):
    return [RunGroup(1, p["steps"], p["model_name"], parallel=False)]  # trained in the kernel, not the store


def _runs_01(p):
    from .heterogeneity import equal_rows_levels  # lazy: loads torch (specs)
    from .methods import full_finetuning, lora, split  # lazy: loads torch (data)
    from .operating_point import load_point, tuned_methods  # lazy: loads torch (methods)
    point = load_point()
    figure2 = tuned_methods({**full_finetuning(), **lora(p["r"])}, p["lora_lr"], p["full_lr"], point)
    design = equal_rows_levels(p["levels"], p["rows_per_component"] or point["figure2"]["rows_per_component"])
    ids = {(o["steps"], i) for o in design.values() for i in _identities(figure2, p["seeds"], **o)}
    table1 = lora(*p["ranks"])
    for shape in p["splits"]:
        n, q = map(int, shape.split("x"))
        table1.update(split(n, q))
        if shape in p["oracle_splits"]:
            table1.update(split(n, q, gate="task"))
    ids |= {(p["steps"], i) for i in _identities(tuned_methods(table1, p["lora_lr"], p["full_lr"], point), p["seeds"],
                                                 n_components=max(p["levels"]), n_train=p["n_train"], steps=p["steps"])}
    steps = sorted({s for s, _ in ids}, reverse=True)
    return [RunGroup(sum(s == t for t, _ in ids), s, "tiny") for s in steps]


def _runs_02(p):
    from .anatomy import lora_families  # lazy: torch and sklearn, not needed to check arguments

    def spec(seed, **selection):
        return json.dumps({"seed": seed, **selection}, sort_keys=True)
    ids = {x for s in p["seeds"] for family in lora_families(s, p["n_tasks"], spec).values() for x in family.values()}
    frozen_a = len(p["seeds"])  # the mixture LoRA with a frozen random A, once a seed
    return [RunGroup(len(ids) + frozen_a, p["steps"], "tiny")]


def _runs_03(p):
    from .methods import full_finetuning, hydra, lora, split  # lazy: loads torch (data)
    from .operating_point import tuned_methods  # lazy: loads torch (methods)
    r, n = p["r"], p["heads"] or p["n_components"]
    configs = {**full_finetuning(), **lora(*p["ranks"]), **split(4, 8), **split(4, 8, gate="task"), **hydra(r, n),
               **hydra(r, n, router_level="sequence"), **hydra(r, n, gate="cluster"), **hydra(r, p["paper_heads"]),
               **hydra(r, n, gate="task")}
    ids = _identities(tuned_methods(configs, p["lora_lr"], p["full_lr"]), p["seeds"])
    sharing = 2 * len(p["seeds"])  # Split n x r' (r' matching Hydra's size) under the oracle and the learned router
    return [RunGroup(len(set(ids)) + sharing, p["steps"], "tiny")]


def _runs_04(p):
    from .methods import hydra, lora, split  # lazy: loads torch (data)
    from .operating_point import tuned_methods  # lazy: loads torch (methods)
    r, seeds, n = p["r"], p["seeds"], p["n_components"]
    configs = lora(r)
    for heads in p["head_counts"]:
        if heads > 1:
            configs.update({**hydra(r, heads), **hydra(r, heads, gate="cluster")})
    ids = _identities(tuned_methods(configs, p["lora_lr"]), seeds)
    sweep = tuned_methods({**hydra(r, n, gate="task"), **hydra(r, n), **hydra(r, n, router_level="sequence"),
                           **lora(32), **split(4, r)}, p["lora_lr"])
    clustered = tuned_methods(hydra(r, n, gate="cluster"), p["lora_lr"])
    for level in p["identifiability_levels"]:
        level_seeds = seeds if level in (1.0, 0.0) else seeds[:p["curve_seeds"]]
        data = {} if level == 1.0 else {"identifiability": level}  # level 1 is the runs of the other notebooks
        ids += _identities(sweep, level_seeds, **data)
        for text in ("prompt", "instruction"):
            ids += _identities(clustered, level_seeds, **data, **({} if text == "prompt" else {"cluster_text": text}))
    return [RunGroup(len(set(ids)), p["steps"], "tiny")]


def _runs_05(p):
    from .methods import hydra, lora, split  # lazy: loads torch (data)
    from .operating_point import tuned_methods  # lazy: loads torch (methods)
    r, n = p["r"], p["n_components"]
    configs = {**hydra(r, n), **lora(r), **hydra(r, n, gate="uniform"), **split(n, r),
               **hydra(r, n, router_init="zeros"), **hydra(r, n, router_level="sequence"), **hydra(r, n, gate="cluster"),
               **hydra(r, n, router_init="clusters"), **hydra(r, n, gate="task"),
               **hydra(r, n, dropout=p["dropout"], head_dropout=True, b_init_std=p["b_init_std"])}
    if p["code_choices_run"]:
        configs.update({**hydra(r, n, router_input="Ax"), **hydra(r, n, top_k=1), **hydra(r, n, top_k=2)})
    if p["dropout_variants"]:
        configs.update({**hydra(r, n, dropout=p["dropout"]),
                        **hydra(r, n, dropout=p["dropout"], implementation="loop")})
    methods = tuned_methods(configs, p["lora_lr"])
    if p["code_choices_run"]:
        methods.update({"balance": {**tuned_methods(hydra(r, n), p["lora_lr"])[next(iter(hydra(r, n)))],
                                    "balance_weight": p["balance_weight"]}})
    return [RunGroup(len(set(_identities(methods, p["seeds"]))), p["steps"], "tiny")]


def _runs_07(p):
    return [RunGroup(3 * len(p["seeds"]), p["steps"], "tiny")]  # three routers of HydraLoRA per seed


def _runs_08(p):
    from .methods import lane_methods  # lazy: loads torch (data)
    # N does not change the count
    methods = lane_methods(p["r"], p["heads"] or 2, p["targets"], p["wide_rank"], roles=p["roles"])
    seeds = len(p["seeds"])
    return [RunGroup(len(methods) * seeds, p["steps"], p["model"]),
            RunGroup(seeds, 0, p["model"], parallel=False)]  # the base model scored in the kernel, once a seed


RUN_COUNTERS = {"00_quickstart": _runs_00, "01_heterogeneity_and_split": _runs_01, "02_anatomy_of_lora": _runs_02,
                "03_hydralora_vs_baselines": _runs_03, "04_intrinsic_components": _runs_04, "05_ablations": _runs_05,
                "06_efficiency": lambda p: [], "07_routing": _runs_07, "08_real_data": _runs_08}


def planned_runs(nb: Path, params: dict) -> list[RunGroup] | None:
    """The runs that a notebook trains with these parameters (its defaults filled in);
    None for a notebook no counter knows."""
    counter = RUN_COUNTERS.get(nb.stem)
    if counter is None:
        return None
    values = {k: v["default"] for k, v in notebook_parameters(nb).items()}
    return counter({**values, **params})


def device_kind(device) -> str:
    return "cpu" if str(device) == "cpu" else "gpu"


def run_estimate(plan, device_counts=DEVICE_COUNTS) -> dict:
    """What a plan's runs cost: {"notebooks": [{"stem", "groups": [RunGroup], "seconds": per group or None}],
    "runs", "scorings" (of a base model only), "device_seconds", "wall_seconds": {k devices: seconds}, "unknown":
    [groups without a cost], "costs": [(model, device kind) used]}. Wall time: notebooks in turn; a notebook's
    parallel runs spread over k devices, ceil(runs / k) rounds (its runs cost alike), the others one by one.
    device_counts: the k to estimate for."""
    estimate = {"notebooks": [], "runs": 0, "scorings": 0, "device_seconds": 0.0,
                "wall_seconds": {k: 0.0 for k in device_counts}, "unknown": [], "costs": []}
    for nb, params in plan:
        groups = planned_runs(nb, params)
        if groups is None:
            estimate["unknown"].append(f"{nb.stem} (no run counter)")
            continue
        kind = device_kind(params.get("device", "cpu"))
        entry = {"stem": nb.stem, "groups": groups, "seconds": []}
        for group in groups:
            estimate["scorings" if group.steps == 0 else "runs"] += group.runs
            model = "tiny" if group.model == "tiny-random" else group.model
            cost = STEP_COSTS.get((model, kind))
            entry["seconds"].append(None if cost is None else group.steps * cost[0] + cost[1])
            if cost is None:
                estimate["unknown"].append(f"{nb.stem}'s {group.runs} of {group.model} on a {kind}")
                continue
            if (model, kind) not in estimate["costs"]:
                estimate["costs"].append((model, kind))
            estimate["device_seconds"] += group.runs * entry["seconds"][-1]
            for k in device_counts:
                rounds = -(-group.runs // k) if group.parallel else group.runs
                estimate["wall_seconds"][k] += rounds * entry["seconds"][-1]
        estimate["notebooks"].append(entry)
    return estimate


def notebook_estimate(stem: str, params: dict, workers: int = 1) -> str:
    """One line for a notebook to print before it trains: its runs (counted from `params`, its parameter values)
    and their expected wall time on `workers` parallel workers, with the cost's basis."""
    estimate = run_estimate([(NOTEBOOK_DIR / f"{stem}.ipynb", params)], device_counts=(workers,))
    entry = estimate["notebooks"][0]
    parts = [(f"{g.runs} run(s) of {g.steps} steps" if g.steps else f"{g.runs} scoring(s) of the base model")
             for g in entry["groups"]]
    if estimate["unknown"]:
        return f"expected: {', '.join(parts)}; no cost is known for {', '.join(estimate['unknown'])}"
    seconds = estimate["wall_seconds"][workers]
    model, kind = estimate["costs"][0]
    return (f"expected: {', '.join(parts)}, about {format_duration(seconds)} on {workers} worker(s) "
            f"({STEP_COSTS[(model, kind)][0]} s a step, {format_duration(STEP_COSTS[(model, kind)][1])} a run "
            f"besides: {COST_BASIS[(model, kind)]})")


def profile_device_hours(profile_name: str, stem: str) -> float:
    """The device-hours the dry run estimates for one notebook on a profile (e.g. 08 on gpu)."""
    return run_estimate(plan_suite(profile_name, only=[stem]))["device_seconds"] / 3600


def write_run_estimate(plan, out) -> dict:
    """The dry run's account of runs: per notebook, the cost per model and its basis, then the total in
    device-hours and in wall time on k devices."""
    estimate = run_estimate(plan)
    out.write("runs, counted from each notebook's parameters (time outside runs is in the expected times above):\n")
    for entry in estimate["notebooks"]:
        parts = [(f"{g.runs} run(s) of {g.steps} steps" if g.steps else f"{g.runs} scoring(s) of the base model")
                 + f" ({g.model}{'' if g.parallel else ', one by one'})" for g in entry["groups"]]
        hours = sum(g.runs * s for g, s in zip(entry["groups"], entry["seconds"]) if s is not None) / 3600
        out.write(f"    {entry['stem']}: " + (f"{', '.join(parts)}; about {hours:.2f} device-h\n" if parts
                                              else "no runs\n"))
    for model, kind in estimate["costs"]:
        step, per_run = STEP_COSTS[(model, kind)]
        out.write(f"    cost of {model} on a {kind}: {step} s a step + {format_duration(per_run)} a run "
                  f"({COST_BASIS[(model, kind)]})\n")
    for what in estimate["unknown"]:
        out.write(f"    no cost known for {what}: left out of the hours\n")
    walls = ", ".join(f"{k}: {format_duration(s)}" for k, s in estimate["wall_seconds"].items())
    out.write(f"{estimate['runs']} run(s) and {estimate['scorings']} scoring(s) of a base model, about "
              f"{estimate['device_seconds'] / 3600:.1f} device-hours; wall time of the runs on k devices, one run "
              f"each at a time: k {walls}\n")
    return estimate


def dry_run(profile_name: str, only=None, overrides=(), build_dir: Path = BUILD_DIR,
            notebook_dir: Path = NOTEBOOK_DIR, profile_dir: Path = PROFILE_DIR, out=None) -> list[tuple[Path, dict]]:
    """Print what a run would execute: each notebook, every parameter it will run with (its own default, or
    where the value comes from: the profile, -p or --build-dir) and its expected time. Runs nothing."""
    out = out or sys.stdout
    sources = {}
    plan = plan_suite(profile_name, only, overrides, notebook_dir, profile_dir, build_dir=Path(build_dir),
                      sources=sources)
    expected = expected_seconds(plan, profile_name, Path(build_dir) / profile_name)
    total, unknown = 0.0, 0
    for i, (nb, params) in enumerate(plan):
        seconds, source = expected[nb.stem]
        total += seconds or 0.0
        unknown += seconds is None
        out.write(f"{i + 1}/{len(plan)} {nb.stem}: expected {format_duration(seconds)} ({source})\n")
        for key, info in notebook_parameters(nb).items():
            value = params.get(key, info["default"])
            shown = "(not a literal: see the notebook)" if value is _NO_DEFAULT else json.dumps(value)
            out.write(f"    {key} = {shown}   # {sources[nb.stem].get(key, 'notebook default')}\n")
    estimate = ("expected time unknown" if unknown == len(plan) else f"expected about {format_duration(total)}"
                + (f" plus {unknown} never timed" if unknown else ""))
    out.write(f"{len(plan)} notebook(s) on profile {profile_name!r}, {estimate}"
              + f"; executed copies would go to {_display_path(Path(build_dir) / profile_name)}\n")
    write_run_estimate(plan, out)
    return plan


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hydralib suite", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="default", help="ci, default, gpu, or any notebooks/profiles/*.yaml")
    parser.add_argument("--only", nargs="*", metavar="NOTEBOOK", help="notebook stems to run, e.g. 00_quickstart")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="[NOTEBOOK.]KEY=VALUE",
                        help="override a parameter (a YAML value), e.g. -p 00_quickstart.steps=20")
    parser.add_argument("--build-dir", type=Path, default=BUILD_DIR,
                        help="where everything the run writes under build/ goes (default: build/)")
    parser.add_argument("--dry-run", action="store_true",
                        help="list the notebooks, their parameters and expected times; run nothing")
    parser.add_argument("--no-report", action="store_true", help="skip build/<profile>/report.html")
    parser.add_argument("--quiet-cells", action="store_true", help="no line per cell, only notebooks and [runs]")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.dry_run:
            dry_run(args.profile, args.only, args.param, args.build_dir, NOTEBOOK_DIR, PROFILE_DIR)
            return 0
        records = run_suite(args.profile, args.only, args.param, args.build_dir, NOTEBOOK_DIR, PROFILE_DIR,
                            report=not args.no_report,
                            show_cells=not args.quiet_cells)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except SuiteFailure as failure:
        print(f"[suite:{args.profile}] FAILED: {failure}", file=sys.stderr)
        return 130 if str(failure).startswith("interrupted") else 1
    for r in records:
        print(f"{r['notebook']:<40} {r['seconds']:>8.1f} s")
    return 0


def report_main(argv: list[str] | None = None) -> int:
    """`python -m hydralib report`: write build/<profile>/report.html again from what a suite run left there."""
    parser = argparse.ArgumentParser(prog="python -m hydralib report", description=report_main.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="default")
    parser.add_argument("--build-dir", type=Path, default=BUILD_DIR)
    args = parser.parse_args(argv)
    try:
        plan = plan_suite(args.profile, build_dir=args.build_dir)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from .report_page import report_records, write_report  # lazy: torch, not needed to check arguments
    out_dir = args.build_dir / args.profile
    ran = {r["notebook"] for r in report_records(out_dir)}
    plan = [(nb, p) for nb, p in plan if nb.name in ran] or plan
    figures = _plan_dirs(plan, "figures_dir", NOTEBOOK_DIR) or [_figures_dir(args.profile, NOTEBOOK_DIR, PROFILE_DIR)]
    claims = figures[0] / "claims.md"
    page = write_report(out_dir, args.profile, plan=plan, figures_dirs=figures,
                        claims_path=claims if claims.exists() else None,
                        profile_path=PROFILE_DIR / f"{args.profile}.yaml")
    print(page)
    return 0
