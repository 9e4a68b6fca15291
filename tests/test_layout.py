"""The layout's promises: DVC deps that cover every file a stage imports, a config module with
no heavy imports, a library that imports without Prefect, and no import circles."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
LIB = REPO / "gifqa_model"


def _module_file(name: str) -> Path | None:
    """gifqa_model.a.b → its .py file (a package's __init__.py), None outside the library."""
    if name != "gifqa_model" and not name.startswith("gifqa_model."):
        return None
    path = REPO / Path(*name.split("."))
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return None


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imports(tree: ast.AST) -> set[str]:
    """Every gifqa_model module imported anywhere under `tree` (lazy imports included, imports
    only for type checkers left out)."""
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
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
    return {m for m in out if _module_file(m) is not None}


def _closure(modules: set[str]) -> set[Path]:
    """The files of `modules` and of everything they import, transitively, with the package
    __init__ files on the way."""
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        todo += sorted(_imports(ast.parse(_module_file(name).read_text())))
    return {_module_file(m) for m in seen}


def stage_files(stage: str) -> set[Path]:
    """The library files the `stage_<stage>` function of stages.py runs: its own imports, those
    of the stages.py helpers it calls, the module's top-level imports, and all they import."""
    tree = ast.parse((LIB / "stages.py").read_text())
    funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    top = [n for n in tree.body if not isinstance(n, ast.FunctionDef | ast.ClassDef)]
    modules = set().union(*(_imports(n) for n in top))
    todo, done = [f"stage_{stage}"], set()
    while todo:
        fn = todo.pop()
        if fn in done:
            continue
        done.add(fn)
        modules |= _imports(funcs[fn])
        todo += [n.id for n in ast.walk(funcs[fn]) if isinstance(n, ast.Name) and n.id in funcs]
    return _closure(modules) | {LIB / "stages.py"}


def _dvc_stages() -> dict[str, dict]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", sorted(_dvc_stages()))
def test_each_stage_depends_on_every_library_file_it_runs(stage: str) -> None:
    deps = [REPO / d for d in _dvc_stages()[stage]["deps"]]
    missing = sorted(
        str(f.relative_to(REPO)) for f in stage_files(stage)
        if f.stat().st_size and not any(f == d or d in f.parents for d in deps)
    )
    assert not missing, f"dvc.yaml stage {stage} runs {missing} but does not depend on them"


def test_stage_deps_name_folders_not_hand_picked_modules() -> None:
    for name, stage in _dvc_stages().items():
        for dep in stage["deps"]:
            path = REPO / dep
            if dep.startswith("gifqa_model/") and path.suffix == ".py":
                # the top-level modules are the only files named one by one
                assert path.parent == LIB, f"{name} depends on {dep}: name its folder instead"


def _fresh(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def test_config_imports_nothing_heavy() -> None:
    heavy = ["torch", "open_clip", "faiss", "great_expectations", "spacy", "mlflow",
             "transformers", "prefect"]
    proc = _fresh("import sys\nfrom gifqa_model.config import load_params\n"
                  "load_params('params.yaml')\n"
                  f"print([m for m in {heavy!r} if m in sys.modules])")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def _library_modules() -> list[str]:
    return sorted(".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
                  for p in LIB.rglob("*.py"))


def test_library_imports_with_prefect_blocked() -> None:
    code = ("import sys, importlib\n"
            "sys.modules['prefect'] = None  # any `import prefect` now raises ImportError\n"
            f"for name in {_library_modules()!r}:\n"
            "    importlib.import_module(name)\n"
            "print('ok')")
    proc = _fresh(code)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def test_the_library_never_imports_the_orchestration() -> None:
    for path in LIB.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad = [n for n in names if n.split(".")[0] in {"flows", "tasks", "prefect"}]
            assert not bad, f"{path.relative_to(REPO)} imports {bad}"


def test_no_import_circles_at_module_level() -> None:
    """Module-level imports between library modules form no cycle (lazy imports may)."""
    graph: dict[str, set[str]] = {}
    for name in _library_modules():
        tree = ast.parse(_module_file(name).read_text())
        top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom | ast.If)]
        deps = set().union(*(_imports(n) for n in top)) if top else set()
        graph[name] = {d for d in deps if d != name and not name.startswith(d + ".")}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " → ".join([*path, node, nxt]))
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [])
