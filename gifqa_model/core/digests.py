"""Digests: of values (a cache key's params), of files (fitted weights) and of code.

The code half of every key is derived, never listed: `code_files(module)` is the module's
import closure inside the library (function-local imports included, imports only for type
checkers left out) plus the data files that travel with its packages (architecture JSON, the
page). The same closure gives each DVC stage its code deps (`gifqa_model.core.stage_deps`) and
`tests/test_layout.py` its layer check, so the three cannot disagree.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

PACKAGE = Path(__file__).parents[1]  # gifqa_model/
ROOT = PACKAGE.parent  # the folder that holds gifqa_model/


def digest(*parts: Any) -> str:
    """sha256 of the parts as canonical JSON (pydantic models by their fields)."""
    plain = [p.model_dump(mode="json") if hasattr(p, "model_dump") else p for p in parts]
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()


def file_digest(paths: Iterable[Path]) -> str:
    """sha256 of files' names and bytes (e.g. fitted weights)."""
    h = hashlib.sha256()
    for f in paths:
        h.update(Path(f).name.encode())
        h.update(Path(f).read_bytes())
    return h.hexdigest()


def weights_digest(*dirs: Path) -> str:
    """sha256 over the weight files (*.safetensors) of the given directories, by name: equal
    digests mean the same model."""
    h = hashlib.sha256()
    for d in dirs:
        for path in sorted(Path(d).rglob("*.safetensors")):
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def tree_digest(folder: Path) -> str:
    """sha256 of every file under `folder`, by relative path and bytes: a pinned directory
    (the foundation) is the same when this is."""
    h = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        h.update(path.relative_to(folder).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


# --- the import closure -----------------------------------------------------------------


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """gifqa_model.a.b → its .py file (a package's __init__.py); None outside the library."""
    if name != "gifqa_model" and not name.startswith("gifqa_model."):
        return None
    path = root / Path(*name.split("."))
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return None


def _is_type_checking(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Name)
        and node.test.id == "TYPE_CHECKING"
    )


def imported_modules(tree: ast.AST, root: Path = ROOT) -> set[str]:
    """Every library module imported anywhere under `tree` (lazy imports included)."""
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            # `from gifqa_model.data import scene` imports a module too
            out.update(f"{node.module}.{a.name}" for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in out if module_file(m, root) is not None}


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def module_closure(modules: Iterable[str], root: Path = ROOT) -> set[str]:
    """`modules` and everything they import, transitively, with the packages on the way."""
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += _parents(name)
        todo += sorted(imported_modules(ast.parse(module_file(name, root).read_text()), root))
    return seen


def _data_files(package_dir: Path) -> list[Path]:
    """Non-Python files of a package (its own folder and its sub-folders that are not
    packages): what its code reads beside itself."""
    out = []
    for p in sorted(package_dir.rglob("*")):
        if not p.is_file() or p.suffix in {".py", ".pyc"} or "__pycache__" in p.parts:
            continue
        # a file inside a sub-package belongs to that package, not this one
        inner = p.parent
        while inner != package_dir and not (inner / "__init__.py").is_file():
            inner = inner.parent
        if inner == package_dir:
            out.append(p)
    return out


def closure_files(modules: Iterable[str], root: Path = ROOT) -> set[Path]:
    """The files the closure of `modules` runs or reads: its .py files and the data files of
    every package whose modules it holds (the package __init__ files are always there)."""
    names = module_closure(modules, root)
    files = {module_file(m, root) for m in names}
    for f in list(files):
        if f.name == "__init__.py" and f.parent != root / "gifqa_model":
            files.update(_data_files(f.parent))
    return files


_DIGEST_LOCK = threading.Lock()


def code_digest(*modules: str) -> str:
    """sha256 of the files in the closure of `modules` (names like "gifqa_model.index.clip"):
    the code half of a cache key. Editing any file the computation runs or reads changes it.
    Computed once per process; callers on a thread pool (ingest's checks) wait for the first,
    instead of each parsing the closure beside it (on CPython 3.11, `ast.parse` in several
    threads at once can fail: "AST constructor recursion depth mismatch", CPython gh-106905)."""
    with _DIGEST_LOCK:
        return _code_digest(*modules)


@functools.lru_cache(maxsize=128)
def _code_digest(*modules: str) -> str:
    h = hashlib.sha256()
    for f in sorted(closure_files(modules)):
        h.update(str(f.relative_to(ROOT)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()
