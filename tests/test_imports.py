"""Import tiers (docs/design.md's module map), read from the source with ``ast``; nothing is imported.

Imports run one way. A module may import modules of its own tier or of the tiers above it, never below:

| tier | modules |
| --- | --- |
| config | config, cost (standard library only) |
| numpy side | color, dicom, imaging/ (read, register, write), metrics, baselines, tasks (no torch, no gradio) |
| layers | layers/ |
| models | models/ |
| diffusion | diffusion |
| pipeline | pipeline, checkpoint |
| training and evaluation | distributed, data, losses, validation, evaluate, folder_fusion, plots, training/, |
| | experiments/, bench, and the package's re-exports |
| command line | cli/ (common, fuse, train, evaluate, tools, main), __main__ |
| app domain | fusion_app/: archive, deadline, figures, models, training, limits, texts, inputs, reports, sessions, |
| | device (no gradio) |
| app interface | fusion_app/views, fusion_app/handlers (gradio: the components and the handlers that raise gr.Error) |
| app entry | app.py (gradio: layout and wiring) |

Imports inside functions count too: a lazy import is still a dependency. The table below is the same one;
every module of the repository's code must be in it, so a new module is placed on purpose.
"""

from __future__ import annotations

import ast
import functools
import importlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

TIERS: list[tuple[str, tuple[str, ...]]] = [
    ("config", ("fusion_core.config", "fusion_core.cost")),
    ("numpy side", ("fusion_core.color", "fusion_core.dicom", "fusion_core.tasks", "fusion_core.imaging",
                    "fusion_core.imaging.read", "fusion_core.imaging.register", "fusion_core.imaging.write",
                    "fusion_core.metrics", "fusion_core.baselines")),
    ("layers", ("fusion_core.layers", "fusion_core.layers.common", "fusion_core.layers.embeddings",
                "fusion_core.layers.dynamic_conv", "fusion_core.layers.gated", "fusion_core.layers.restormer",
                "fusion_core.layers.glsa")),
    ("models", ("fusion_core.models", "fusion_core.models.unet", "fusion_core.models.fusion_head",
                "fusion_core.models.dgd_fusion")),
    ("diffusion", ("fusion_core.diffusion",)),
    ("pipeline", ("fusion_core.pipeline", "fusion_core.checkpoint")),
    # `fusion_core` itself (the public API's re-exports) reaches down to training, so it sits in its tier.
    ("training and evaluation", ("fusion_core.distributed", "fusion_core.data", "fusion_core.losses",
                                 "fusion_core.validation", "fusion_core.evaluate", "fusion_core.folder_fusion",
                                 "fusion_core.plots", "fusion_core.training", "fusion_core.training.provenance",
                                 "fusion_core.training.state", "fusion_core.training.loop",
                                 "fusion_core.training.run", "fusion_core.experiments",
                                 "fusion_core.experiments.ablation", "fusion_core.experiments.comparison",
                                 "fusion_core.bench", "fusion_core")),
    ("command line", ("fusion_core.cli", "fusion_core.cli.common", "fusion_core.cli.fuse", "fusion_core.cli.train",
                      "fusion_core.cli.tools", "fusion_core.cli.evaluate", "fusion_core.cli.main",
                      "fusion_core.__main__")),
    ("app domain", ("fusion_app", "fusion_app.archive", "fusion_app.deadline", "fusion_app.figures",
                    "fusion_app.models", "fusion_app.training", "fusion_app.limits", "fusion_app.texts",
                    "fusion_app.inputs", "fusion_app.reports", "fusion_app.sessions", "fusion_app.device")),
    ("app interface", ("fusion_app.views", "fusion_app.handlers")),
    ("app entry", ("app",)),
]
TIER_OF = {module: index for index, (_, modules) in enumerate(TIERS) for module in modules}
NUMPY_SIDE = TIERS[1][1]
APP_DOMAIN = next(modules for name, modules in TIERS if name == "app domain")
GRADIO_TIERS = ("app interface", "app entry")  # the only tiers that may import gradio
PACKAGES = ("fusion_core", "fusion_app")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, Path]:
    """Every module of the repository's code (the packages and app.py), by dotted name."""
    paths = [ROOT / "app.py"] + [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))]
    return {_module_name(p): p for p in paths}


SOURCES = _sources()


@functools.cache
def _bound_names(package: str) -> frozenset[str]:
    """Names a package's ``__init__.py`` binds at its top level (its re-exports)."""
    path = SOURCES.get(package)
    if path is None or path.name != "__init__.py":
        return frozenset()
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(target.id for target in node.targets if isinstance(target, ast.Name))
    return frozenset(names)


def imports_of(module: str, source: str, known: set[str]) -> set[str]:
    """Dotted names of every module ``source`` imports, relative imports resolved against ``module``.

    As in Python, ``from package import name`` takes what the package's ``__init__.py`` binds first
    (``from fusion_core import train`` is the re-exported function); only a name it does not bind is the
    submodule (``from .layers import common`` -> ``fusion_core.layers.common`` when that is in ``known``).
    Imports anywhere in the file count, also inside functions.
    """
    is_package = module in PACKAGES or SOURCES.get(module, Path()).name == "__init__.py"
    package = module.split(".") if is_package else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            bound = _bound_names(target)
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                found.add(submodule if submodule in known and alias.name not in bound else target)
    return found


@functools.cache
def _imports(module: str) -> frozenset[str]:
    return frozenset(imports_of(module, SOURCES[module].read_text(encoding="utf-8"), set(SOURCES)))


def _internal_imports(module: str) -> set[str]:
    return {name for name in _imports(module) if name.split(".")[0] in (*PACKAGES, "app")}


def _external_roots(module: str) -> set[str]:
    return {name.split(".")[0] for name in _imports(module)} - {*PACKAGES, "app"}


def tier_violations(module: str, imported: set[str]) -> list[str]:
    """One line per import of ``module`` that reaches a tier below its own."""
    own = TIER_OF[module]
    return [f"{module} (tier {TIERS[own][0]}) imports {name} (tier {TIERS[TIER_OF[name]][0]}, below it)"
            for name in sorted(imported) if TIER_OF[name] > own]


def test_every_module_is_placed_in_a_tier():
    assert sorted(set(SOURCES) - set(TIER_OF)) == [], "place the new module in TIERS (and in docs/design.md)"
    assert sorted(set(TIER_OF) - set(SOURCES)) == [], "TIERS names a module that no longer exists"


def test_imports_run_one_way():
    violations = [line for module in sorted(SOURCES) for line in tier_violations(module, _internal_imports(module))]
    assert violations == [], "imports against the tiers:\n" + "\n".join(violations)


def test_the_tier_check_catches_a_layer_importing_the_pipeline():
    # the check itself: a layer that reaches down to the pipeline (relative, as the package writes it) is caught
    imported = imports_of("fusion_core.layers.gated", "from ..pipeline import FusionPipeline\n", set(SOURCES))
    assert imported == {"fusion_core.pipeline"}
    assert tier_violations("fusion_core.layers.gated", imported) == [
        "fusion_core.layers.gated (tier layers) imports fusion_core.pipeline (tier pipeline, below it)"]


def test_relative_imports_resolve_like_python():
    known = set(SOURCES)
    assert imports_of("fusion_core.models.unet", "from ..layers.gated import gate_activity", known) == {
        "fusion_core.layers.gated"}
    assert imports_of("fusion_core", "from . import experiments", known) == {"fusion_core.experiments"}
    assert imports_of("app", "from fusion_core import train", known) == {"fusion_core"}  # the re-export
    assert imports_of("fusion_core.cli.tools", "def f():\n    from ..bench import run\n", known) == {
        "fusion_core.bench"}


def test_only_the_app_interface_and_entry_import_gradio():
    importers = sorted(module for module in SOURCES if "gradio" in _external_roots(module))
    assert [m for m in importers if TIERS[TIER_OF[m]][0] not in GRADIO_TIERS] == []
    assert "app" in importers


@pytest.mark.parametrize("module", APP_DOMAIN)
def test_the_app_domain_never_imports_gradio(module):
    assert "gradio" not in _external_roots(module)


def test_the_app_modules_import_without_cycles():
    app_modules = {m for m in SOURCES if TIERS[TIER_OF[m]][0].startswith("app")}
    graph = {m: _internal_imports(m) & app_modules - {m} for m in app_modules}
    cycles, state = [], {}  # state: 1 while on the current path, 2 when finished

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for imported in sorted(graph[module]):
            if state.get(imported) == 1:
                cycles.append(" -> ".join(path[path.index(imported):] + [module, imported]))
            elif imported not in state:
                visit(imported, path + [module])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert cycles == []


@pytest.mark.parametrize("module", NUMPY_SIDE)
def test_numpy_side_never_imports_torch_or_gradio(module):
    assert _external_roots(module) & {"torch", "gradio", "einops", "safetensors"} == set()


@pytest.mark.parametrize("module", TIERS[0][1])
def test_config_uses_the_standard_library_only(module):
    assert _external_roots(module) - set(sys.stdlib_module_names) - {"__future__"} == set()


@pytest.mark.parametrize("module", [m for m in SOURCES if TIERS[TIER_OF[m]][0].startswith("app")])
def test_the_app_uses_the_public_api_only(module):
    # the app calls only the public API (what fusion_core/__init__.py re-exports), never a submodule
    reached = {name for name in _internal_imports(module) if name.startswith("fusion_core")}
    assert reached <= {"fusion_core"}


def test_the_console_script_is_what_python_dash_m_runs():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    module_name, _, attribute = scripts["dgd-fusion"].partition(":")
    target = getattr(importlib.import_module(module_name), attribute)
    assert callable(target)
    assert importlib.import_module("fusion_core.__main__").main is target
