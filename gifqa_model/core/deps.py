"""Each DVC stage's code deps, derived from what the stage runs.

A stage's code is the import closure (core/digests.py) of its `stage_<name>` function in
gifqa_model/stages.py: the modules that function and the stages.py helpers it calls import,
plus the module's top-level imports, plus the data files their packages read. dvc.yaml lists
exactly that (a folder where the closure holds all of it, else the files), so editing the HTTP
app leaves evaluation up to date and editing drift leaves the data stages up to date.
`gifqa dev deps --write` rewrites dvc.yaml's code deps; a test fails when they differ.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import yaml

from gifqa_model.core.digests import ROOT, closure_files, imported_modules
from gifqa_model.core.gcpause import collector_paused

LIB = ROOT / "gifqa_model"
STAGES_MODULE = LIB / "stages.py"
DVC_YAML = "dvc.yaml"
CODE_PREFIX = "gifqa_model/"


def stage_modules(stage: str, root: Path = ROOT) -> set[str]:
    """The library modules `stage_<stage>` imports: its own imports, those of the stages.py
    helpers it calls, and the module's top-level imports."""
    tree = ast.parse((root / "gifqa_model" / "stages.py").read_text())
    funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    top = [n for n in tree.body if not isinstance(n, ast.FunctionDef | ast.ClassDef)]
    modules: set[str] = set()
    for node in top:
        modules |= imported_modules(node, root)
    todo, done = [f"stage_{stage}"], set()
    while todo:
        fn = todo.pop()
        if fn in done:
            continue
        done.add(fn)
        modules |= imported_modules(funcs[fn], root)
        todo += [n.id for n in ast.walk(funcs[fn]) if isinstance(n, ast.Name) and n.id in funcs]
    return modules


def import_stage(stage: str) -> None:
    """Import `stage_<stage>`'s modules (and so the libraries they import) with the cyclic
    collector paused: a process about to run the stage, or to fork processes that will."""
    with collector_paused():
        for module in sorted(stage_modules(stage)):
            importlib.import_module(module)


def stage_files(stage: str, root: Path = ROOT) -> set[Path]:
    """Every library file the stage runs or reads (stages.py itself by the file: its other
    functions' imports are not this stage's)."""
    return closure_files(stage_modules(stage, root), root) | {root / "gifqa_model" / "stages.py"}


def _package_files(folder: Path) -> set[Path]:
    return {
        p
        for p in folder.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


def compress(files: set[Path], root: Path = ROOT) -> list[str]:
    """The files as DVC deps: a folder when the set holds every file under it (and the folder
    is a sub-package of gifqa_model), else the files one by one; relative, sorted."""
    out: list[str] = []
    lib = root / "gifqa_model"

    def walk(folder: Path) -> None:
        for child in sorted(folder.iterdir()):
            if child.name == "__pycache__":
                continue
            if child.is_dir():
                inside = _package_files(child)
                if inside and inside <= files:
                    out.append(str(child.relative_to(root)))
                elif inside & files:
                    walk(child)
            elif child in files and child.stat().st_size:
                out.append(str(child.relative_to(root)))

    walk(lib)
    return out


def derived_code_deps(stage: str, root: Path = ROOT) -> list[str]:
    return compress(stage_files(stage, root), root)


def read_dvc_yaml(root: Path = ROOT) -> dict:
    return yaml.safe_load((root / DVC_YAML).read_text())


def stale_code_deps(root: Path = ROOT) -> dict[str, tuple[list[str], list[str]]]:
    """Stages whose listed code deps differ from the derived ones: stage → (listed, derived)."""
    out = {}
    for name, stage in read_dvc_yaml(root)["stages"].items():
        listed = [d for d in stage["deps"] if d.startswith(CODE_PREFIX)]
        derived = derived_code_deps(name, root)
        if listed != derived:
            out[name] = (listed, derived)
    return out


def write_code_deps(root: Path = ROOT) -> list[str]:
    """Rewrite dvc.yaml's code deps to the derived ones (data deps and the header comment
    kept); returns the stages that changed."""
    path = root / DVC_YAML
    text = path.read_text()
    header = "".join(
        line
        for line in text.splitlines(keepends=True)
        if line.startswith("#") and text.index(line) < text.index("stages:")
    )
    spec = yaml.safe_load(text)
    changed = []
    for name, stage in spec["stages"].items():
        data = [d for d in stage["deps"] if not d.startswith(CODE_PREFIX)]
        deps = data + derived_code_deps(name, root)
        if deps != stage["deps"]:
            changed.append(name)
        stage["deps"] = deps
    path.write_text(header + yaml.safe_dump(spec, sort_keys=False, width=100))
    return changed
