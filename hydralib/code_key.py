"""The code a result depends on: which hydralib modules a module imports, and a hash of their code.

One import resolver serves the run store's key and tests/test_architecture.py: relative imports
(`from .layers import AdapterLayer`, `from ..checks import check_int`, `from . import methods`) and
absolute ones (`import hydralib.layers`, `from hydralib.data import synthetic`) are read alike, so
no import can hide from either. The hash covers code, not prose: docstrings and comments are
removed (the source is parsed and unparsed), and the Python minor version is part of it, because
unparsing may differ between versions.
"""
from __future__ import annotations

import ast
import hashlib
import sys
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent


def module_name(path: Path, root: Path = PACKAGE_ROOT) -> str:
    """'layers', 'data.synthetic' or 'data.__init__' for a file under the package root."""
    return ".".join(path.resolve().relative_to(root.resolve()).with_suffix("").parts)


def _module_file(parts: list[str], root: Path) -> Path | None:
    """The file of a module named by its parts under root (a module file or a package's __init__.py)."""
    if not parts:
        return root / "__init__.py"
    target = root.joinpath(*parts)
    for candidate in (target.with_suffix(".py"), target / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def _import_targets(node: ast.AST, module_parts: list[str], root: Path) -> list[list[str]]:
    """The module paths (as parts under root) one import statement names, before checking they exist."""
    package = root.name
    if isinstance(node, ast.Import):
        return [alias.name.split(".")[1:] for alias in node.names if alias.name.split(".")[0] == package]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level > 0:
        if node.level > len(module_parts):
            return []
        target = module_parts[:len(module_parts) - node.level] + (node.module.split(".") if node.module else [])
    elif node.module and node.module.split(".")[0] == package:
        target = node.module.split(".")[1:]
    else:
        return []
    submodules = [target + [alias.name] for alias in node.names
                  if _module_file(target + [alias.name], root) is not None]
    whole_is_module = (root.joinpath(*target).with_suffix(".py")).exists() if target else False
    if not submodules or whole_is_module:  # names taken from the module (or the package) itself
        submodules.append(target)
    return submodules


def imported_modules(path: Path, root: Path = PACKAGE_ROOT) -> list[Path]:
    """The package's source files that the module at `path` imports directly (anywhere in it)."""
    path = Path(path).resolve()
    module_parts = list(path.relative_to(root.resolve()).with_suffix("").parts)
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        for parts in _import_targets(node, module_parts, root):
            target = _module_file(parts, root)
            if target is not None and target.resolve() not in found:
                found.append(target.resolve())
    return found


def dependency_files(module: Path, root: Path = PACKAGE_ROOT) -> list[Path]:
    """`module` and every package source file it imports, followed through their own imports."""
    seen, todo = set(), [Path(module).resolve()]
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo += imported_modules(path, root)
    return sorted(seen)


def code_text(path: Path) -> str:
    """A module's code without its docstrings and comments, as Python reads it."""
    return normalised_code(Path(path).read_text())


def normalised_code(source: str) -> str:
    """Python source without its docstrings and comments (parsed and unparsed)."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                node.body = node.body[1:] or [ast.Pass()]
    return ast.unparse(tree)


def code_fingerprint(files: list[Path], root: Path = PACKAGE_ROOT, extra: str = "") -> str:
    """A hash of the code (not the prose) of these package files, with the Python minor version."""
    digest = hashlib.sha256(f"python {sys.version_info.major}.{sys.version_info.minor}\0{extra}\0".encode())
    for path in sorted(Path(f).resolve() for f in files):
        digest.update(str(path.relative_to(root.resolve())).encode() + b"\0" + code_text(path).encode() + b"\0")
    return digest.hexdigest()[:12]
