"""The layout's promises: layers that stack, DVC deps derived from what each stage imports, a
config module with no heavy imports, a library that imports without Prefect, no import circles."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from gifqa_model.core.deps import derived_code_deps, read_dvc_yaml, stage_files, stale_code_deps
from gifqa_model.core.digests import closure_files, imported_modules, module_file

REPO = Path(__file__).resolve().parents[1]
LIB = REPO / "gifqa_model"

# the library's layers, bottom to top: a module imports only from its own package or a lower
# layer (function-local imports included); packages on one layer do not import each other
LAYERS: list[set[str]] = [
    {"core"},
    {"data"},
    {"qa"},
    {"index"},
    {"model"},
    {"evaluate"},
    {"train"},
    {"inference"},
    {"registry", "monitor"},
    {"serve", "dashboard"},
    {"stages"},
    {"cli"},
]
RANK = {room: i for i, rooms in enumerate(LAYERS) for room in rooms}


def _room(module: str) -> str:
    """gifqa_model.index.clip → "index"; gifqa_model.stages → "stages"."""
    return module.split(".")[1]


def _library_modules() -> list[str]:
    return sorted(
        ".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        for p in LIB.rglob("*.py")
    )


def test_every_package_has_a_layer() -> None:
    rooms = {_room(m) for m in _library_modules() if m != "gifqa_model"}
    assert rooms <= set(RANK), f"no layer for {sorted(rooms - set(RANK))}: add it to LAYERS"


def test_each_module_imports_only_from_below() -> None:
    wrong = []
    for name in _library_modules():
        if name == "gifqa_model":
            continue
        tree = ast.parse(module_file(name).read_text())
        for dep in sorted(imported_modules(tree)):
            if dep == "gifqa_model" or _room(dep) == _room(name):
                continue
            if RANK[_room(dep)] >= RANK[_room(name)]:
                wrong.append(f"{name} imports {dep}")
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


@pytest.mark.parametrize("stage", sorted(read_dvc_yaml()["stages"]))
def test_each_stage_depends_on_every_library_file_it_runs(stage: str) -> None:
    deps = [REPO / d for d in read_dvc_yaml()["stages"][stage]["deps"]]
    missing = sorted(
        str(f.relative_to(REPO))
        for f in stage_files(stage)
        if f.stat().st_size and not any(f == d or d in f.parents for d in deps)
    )
    assert not missing, f"dvc.yaml stage {stage} runs {missing} but does not depend on them"


def test_dvc_code_deps_are_the_derived_ones() -> None:
    stale = stale_code_deps()
    assert not stale, (
        "dvc.yaml's code deps differ from the stages' import closures; run "
        f"`gifqa dev deps --write`: {stale}"
    )


def test_editing_the_http_app_leaves_evaluation_up_to_date() -> None:
    deps = derived_code_deps("evaluate")
    assert not [d for d in deps if d.startswith("gifqa_model/serve")], deps
    assert any(d.startswith("gifqa_model/inference") for d in deps)


def test_editing_drift_leaves_the_data_and_model_stages_up_to_date() -> None:
    for stage in read_dvc_yaml()["stages"]:
        deps = derived_code_deps(stage)
        assert not [d for d in deps if d.startswith("gifqa_model/monitor")], (stage, deps)


def test_architecture_json_is_in_the_token_cache_key() -> None:
    """The index's cached tokens are keyed by the closure of gifqa_model.index.indexing; the
    architecture configs it reads are in it, so an edited config cannot reuse stale tokens."""
    files = closure_files({"gifqa_model.index.indexing"})
    configs = sorted((LIB / "index" / "clip_configs").glob("*.json"))
    assert configs and set(configs) <= files


def test_code_digest_follows_a_data_file(tmp_path: Path) -> None:
    import shutil

    from gifqa_model.core import digests

    shutil.copytree(LIB, tmp_path / "gifqa_model", ignore=shutil.ignore_patterns("__pycache__"))

    def key() -> str:
        return digests.file_digest(sorted(closure_files({"gifqa_model.index.indexing"}, tmp_path)))

    before = key()
    cfg = sorted((tmp_path / "gifqa_model" / "index" / "clip_configs").glob("*.json"))[0]
    cfg.write_text(cfg.read_text().replace("{", '{"edited": 1, ', 1))
    assert key() != before


def _fresh(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def test_config_imports_nothing_heavy() -> None:
    heavy = [
        "torch",
        "open_clip",
        "faiss",
        "great_expectations",
        "spacy",
        "mlflow",
        "transformers",
        "prefect",
    ]
    proc = _fresh(
        "import sys\nfrom gifqa_model.core.config import load_params\n"
        "load_params('params.yaml')\n"
        f"print([m for m in {heavy!r} if m in sys.modules])"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def test_library_imports_with_prefect_blocked() -> None:
    code = (
        "import sys, importlib\n"
        "sys.modules['prefect'] = None  # any `import prefect` now raises ImportError\n"
        "from gifqa_model.core.gcpause import collector_paused  # as the stages import\n"
        "with collector_paused():\n"
        f"    for name in {_library_modules()!r}:\n"
        "        importlib.import_module(name)\n"
        "print('ok')"
    )
    proc = _fresh(code)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def test_the_library_never_imports_the_orchestration() -> None:
    for path in LIB.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            bad = [n for n in names if n.split(".")[0] in {"flows", "tasks", "prefect"}]
            assert not bad, f"{path.relative_to(REPO)} imports {bad}"


def test_no_import_circles_at_module_level() -> None:
    """Module-level imports between library modules form no cycle (lazy imports may)."""
    graph: dict[str, set[str]] = {}
    for name in _library_modules():
        tree = ast.parse(module_file(name).read_text())
        top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom | ast.If)]
        deps = set().union(*(imported_modules(n) for n in top)) if top else set()
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


def test_no_library_function_is_over_80_lines() -> None:
    long = []
    for path in LIB.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > 80:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, "split these: " + ", ".join(long)


def _tracked_folders() -> set[str]:
    """Every folder git tracks, two levels deep, hidden ones left out."""
    files = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    out = set()
    for f in files:
        parts = Path(f).parts[:-1]
        out.update("/".join(parts[: i + 1]) for i in range(min(len(parts), 2)))
    return {d for d in out if not d.startswith(".")}


def test_the_readme_layout_names_every_folder() -> None:
    text = (REPO / "README.md").read_text()
    block = text[text.index("```\ngifqa_model/") :]
    block = block[: block.index("\n```", 4)]
    named = {w.rstrip("/,") for w in block.split() if w.endswith(("/", "/,"))}
    missing = sorted(d for d in _tracked_folders() if d.split("/")[-1] not in named)
    assert not missing, f"README's layout does not name {missing}"
