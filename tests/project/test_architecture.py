"""The layering the README's Architecture section promises, checked on the source.

Imports are read from the code (every ``import`` anywhere in a module, lazy ones included, but
not those under ``if TYPE_CHECKING:``), so a forbidden dependency fails here even when it is
only imported inside a function.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("tinyprune", "firmware_export")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                keep = len(parts) - node.level + (1 if is_package else 0)
                base = ".".join(parts[:keep] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    modules = {_module_name(p): p for p in files}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        raw = _imports(ast.parse(path.read_text()), name, path.name == "__init__.py")
        graph[name] = {m for m in raw if m in modules and m != name}
    return graph


GRAPH = _graph()


def _violations(layer: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{mod} imports {dep}"
        for mod, deps in GRAPH.items()
        if mod == layer or mod.startswith(layer + ".")
        for dep in deps
        if any(dep == f or dep.startswith(f + ".") for f in forbidden)
    )


ENGINE_FORBIDDEN = (
    "firmware_export",
    "tinyprune.app",
    "tinyprune.data",
    "tinyprune.models",
    "tinyprune.cli",
)


@pytest.mark.parametrize("layer", ["tinyprune.pruning", "tinyprune.criteria"])
def test_the_pruning_engine_imports_no_data_models_app_or_export(layer: str) -> None:
    assert _violations(layer, ENGINE_FORBIDDEN) == []


def test_firmware_export_imports_only_errors_and_file_reading_of_tinyprune() -> None:
    """Errors, atomic writes and the safe readers of untrusted files; nothing of the engine."""
    allowed = {
        "tinyprune",
        "tinyprune.errors",
        "tinyprune.fileio",
        "tinyprune.safe_load",
        "tinyprune.pt2_check",
    }
    bad = sorted(
        f"{mod} imports {dep}"
        for mod, deps in GRAPH.items()
        if mod.startswith("firmware_export")
        for dep in deps
        if dep.startswith("tinyprune") and dep not in allowed
    )
    assert bad == []


def test_the_raspberry_pi_runtime_and_the_configs_need_no_torch() -> None:
    """``tinyprune.config`` and ``tinyprune.runtime`` import neither torch nor TensorFlow."""
    heavy = ("torch", "tensorflow", "tf_keras", "onnx")
    for mod, path in ((m, ROOT / (m.replace(".", "/") + ".py")) for m in ("tinyprune.config",)):
        raw = _imports(ast.parse(path.read_text()), mod, False)
        assert not [m for m in raw if m.split(".")[0] in heavy], mod


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
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
            strong(v)
    return out


def _without_package_inits(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """A package's ``__init__`` re-exporting its modules is not a cycle with them."""
    return {
        mod: {d for d in deps if not (d != mod and mod.startswith(d + "."))}
        for mod, deps in graph.items()
    }


def test_no_import_cycle_between_modules() -> None:
    assert _cycles(_without_package_inits(GRAPH)) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_lazy_imports_count_as_dependencies() -> None:
    code = "def f():\n    from firmware_export import export\n"
    assert "firmware_export" in _imports(ast.parse(code), "tinyprune.pruning.x", False)


MAX_PARAMETERS = 8


def test_no_function_takes_more_than_eight_parameters() -> None:
    too_many = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    a = node.args
                    names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
                    names += [x.arg for x in (a.vararg, a.kwarg) if x is not None]
                    n = len([x for x in names if x not in ("self", "cls")])
                    if n > MAX_PARAMETERS:
                        too_many.append(node.name)
    assert too_many == []


def _argparse_defaults(command: str) -> dict[str, object]:
    from tinyprune.cli import _subparser, build_parser

    sub = _subparser(build_parser(), command)
    return {a.dest: a.default for a in sub._actions if a.dest != "help"}


def test_cli_defaults_are_the_config_dataclasses_defaults() -> None:
    """Every default is defined once: argparse reads it from the config classes."""
    from firmware_export.options import ExportOptions
    from tinyprune.config import DESearchConfig, FinetuneConfig, PruneConfig, TrainRunConfig

    prune, train, export = (_argparse_defaults(c) for c in ("prune", "train", "export"))
    cfg, de, ft = PruneConfig(), DESearchConfig(), FinetuneConfig()
    for f in ("epochs", "lr", "batch_size", "seed", "round_to", "bn_recalib", "target"):
        assert prune[f] == getattr(cfg, f), f
    for f in dataclasses.fields(DESearchConfig):
        assert prune[f"de_{f.name}"] == getattr(de, f.name)
    assert (prune["finetune_epochs"], prune["finetune_lr"]) == (ft.epochs, ft.lr)
    for f in ("epochs", "lr", "batch_size", "seed", "calib_samples"):
        assert train[f] == getattr(TrainRunConfig(), f), f
    opts = ExportOptions()
    assert export["calib_cap"] == opts.calib_cap
    assert export["verify_samples"] == opts.verify_samples
    assert export["float_tolerance"] == opts.float_tolerance
    assert export["min_cosine"] == opts.min_cosine
    assert export["tflm_tolerance"] == opts.tflm_tolerance_lsb
    assert export["arena_margin"] == opts.arena_margin_fraction
    assert export["rewrite_3d"] == opts.rewrite_3d
