"""Structure facts of the code base, measured on the source files with ``ast`` (docs/architecture.md).

- no import cycle among the project's modules (imports inside functions count too: a lazy import
  hides a circle, it does not remove it);
- the folder rules: ``pipeline`` imports nothing of ours, ``evaluators`` and ``train`` import only
  ``pipeline``, ``flows`` may import everything, nothing imports ``flows``; ``data`` is found as files
  (``pipeline.DATA_DIR``), so nothing imports it, and its build scripts (``make_*.py``) import only
  ``pipeline`` and ``evaluators``;
- no flow module takes an engine or judge helper from another flow module (their one home is
  ``pipeline.engines_factory`` and ``evaluators``);
- no module over 300 lines;
- our code is imported as ``prefwork.*`` only (never a bare ``pipeline`` / ``train`` ...), in the
  package, its tests and benchmarks.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("pipeline", "evaluators", "train", "flows", "data")
MAX_LINES = 300
#: folder -> the folders of ours it may import
ALLOWED = {"pipeline": set(), "evaluators": {"pipeline"}, "train": {"pipeline"},
           "data": {"pipeline", "evaluators"},  # its build scripts check what they write with the judges
           "flows": {"pipeline", "evaluators", "train", "flows"}}
#: engine and judge helpers; ``flows.stages``' cached stage functions (``judge_stage`` ...) are the flows' own
HELPER = re.compile(r"^(?!.*_stage$).*(engine|judge)", re.I)


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["prefwork", *parts] if parts[0] != "prefwork" else parts)


def _package_files() -> dict[str, Path]:
    files = {_module_name(p): p for folder in FOLDERS for p in sorted((ROOT / folder).rglob("*.py"))}
    files["prefwork"] = ROOT / "prefwork" / "__init__.py"
    return files


MODULES = _package_files()


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import anywhere in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append(("." * node.level + (node.module or ""), [a.name for a in node.names], node.lineno))
    return found


def _targets(module: str, names: list[str]) -> set[str]:
    """The project modules an import statement loads (``from pkg import mod`` loads ``pkg.mod``)."""
    out = {f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES}
    if module in MODULES and (not names or len(out) < len(names)):
        out.add(module)
    return out


def _graph() -> dict[str, set[str]]:
    return {mod: set().union(*[_targets(m, names) for m, names, _ in _imports(path)] or [set()]) - {mod}
            for mod, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _folder(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "prefwork" and parts[1] in FOLDERS else None


def test_no_import_cycle():
    assert _cycles(_graph()) == []


def test_folder_import_rules():
    bad = []
    for mod, path in MODULES.items():
        mine = _folder(mod)
        if mine is None:
            continue
        for module, _, line in _imports(path):
            theirs = _folder(module)
            if theirs is not None and theirs != mine and (theirs not in ALLOWED[mine] or theirs == "data"):
                bad.append(f"{path.relative_to(ROOT)}:{line} ({mine}) imports {module}")
    assert bad == []


def test_no_flow_module_takes_engine_or_judge_helpers_from_another():
    """Engine and judge helpers have one home outside ``flows``; a flow module that needs one
    imports it from there, never from a sibling flow module."""
    bad = []
    for mod, path in MODULES.items():
        if _folder(mod) != "flows":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and _folder(node.module or "") == "flows":
                for a in node.names:
                    target = f"{node.module}.{a.name}"
                    if target in MODULES:
                        aliases[a.asname or a.name] = target
                    elif HELPER.search(a.name):
                        bad.append(f"{path.relative_to(ROOT)}:{node.lineno} takes {a.name} from {node.module}")
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if _folder(a.name) == "flows" and a.asname:
                        aliases[a.asname] = a.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and HELPER.search(node.attr)):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")
    assert bad == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_at_most_300_lines(module):
    lines = len(MODULES[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{MODULES[module].relative_to(ROOT)} has {lines} lines: split it"


def test_our_code_is_imported_as_prefwork_only():
    files = [*MODULES.values(), *sorted((ROOT / "tests").glob("*.py")), *sorted((ROOT / "bench").glob("*.py"))]
    bad = []
    for path in files:
        for module, _, line in _imports(path):
            top = module.split(".")[0]
            if module.startswith(".") or top in FOLDERS:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert bad == []


def test_the_checks_see_what_they_should():
    """The import reader finds real edges (a check over nothing would pass vacuously)."""
    graph = _graph()
    assert "prefwork.pipeline.engines_factory" in graph["prefwork.flows.loop"]
    assert "prefwork.flows.progress" in graph["prefwork.flows.loop"]  # from prefwork.flows import progress
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert len(MODULES) > 60
