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


HEAVY = ("torch", "tensorflow", "tf_keras", "onnx")


def test_the_raspberry_pi_runtime_and_the_configs_need_no_torch() -> None:
    """``tinyprune.config`` imports neither torch nor TensorFlow anywhere; ``tinyprune.runtime``
    not at module level (its optional PyTorch/ONNX Runtime benchmark rows import them inside a
    function, guarded; tests/tinyprune/runtime/test_lean_runtime.py runs it with torch hidden).
    """
    path = ROOT / "tinyprune" / "config.py"
    raw = _imports(ast.parse(path.read_text()), "tinyprune.config", False)
    assert not [m for m in raw if m.split(".")[0] in HEAVY]
    bad = []
    for path in sorted((ROOT / "tinyprune" / "runtime").glob("*.py")):
        top = [n for n in ast.parse(path.read_text()).body if not isinstance(n, ast.FunctionDef)]
        mod = _module_name(path)
        raw = _imports(ast.Module(body=top, type_ignores=[]), mod, path.name == "__init__.py")
        bad += [f"{mod} imports {m}" for m in raw if m.split(".")[0] in HEAVY]
    assert bad == []


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


def test_the_app_and_export_functions_share_the_cli_defaults() -> None:
    """The functions the commands call default to the same config values as the flags."""
    import inspect

    from firmware_export.options import DEFAULT_TARGET
    from firmware_export.pipeline import export as export_fn
    from tinyprune.app.evaluate import eval_run
    from tinyprune.config import EvalConfig

    export, evaluate = _argparse_defaults("export"), _argparse_defaults("eval")
    assert export["target"] == DEFAULT_TARGET
    assert inspect.signature(export_fn).parameters["target"].default == DEFAULT_TARGET
    params = inspect.signature(eval_run).parameters
    for f in dataclasses.fields(EvalConfig):
        assert evaluate[f.name] == params[f.name].default == f.default, f.name


#: Flags whose default cli.py writes itself: the demo (run_demo takes every value from the CLI)
#: and two of the Raspberry Pi runtime's, which tinyprune.runtime defines again (InferRequest's
#: method/threads/top_k, bench_runtime's min_s); those belong in a torch- and numpy-free config
#: of the runtime's own. The list only shrinks.
LITERAL_DEFAULTS = {
    "_add_demo": {"--out", "--target", "--epochs"},
    "_add_runtime_commands": {"--method", "--threads", "--top-k", "--format", "--seconds"},
}


def test_cli_writes_no_default_of_its_own_beyond_the_known_ones() -> None:
    """A literal default in an ``add_argument`` is a second definition of one that a config
    dataclass (or the function the command calls) holds."""
    tree = ast.parse((ROOT / "tinyprune" / "cli.py").read_text())
    found: dict[str, set[str]] = {}
    for fn in tree.body:
        if not isinstance(fn, ast.FunctionDef):
            continue
        calls = [c for c in ast.walk(fn) if isinstance(c, ast.Call)]
        for call in calls:
            if getattr(call.func, "attr", "") != "add_argument":
                continue
            for kw in call.keywords:
                literal = isinstance(kw.value, ast.Constant) and kw.value.value is not None
                if kw.arg == "default" and literal and isinstance(call.args[0], ast.Constant):
                    found.setdefault(fn.name, set()).add(str(call.args[0].value))
    assert found == LITERAL_DEFAULTS


def test_tests_mirror_the_packages() -> None:
    """``tests/tinyprune/<pkg>/`` for every subpackage and no test folder without one."""
    packages = {p.parent.name for p in (ROOT / "tinyprune").glob("*/__init__.py")}
    folders = {
        p.name
        for p in (ROOT / "tests" / "tinyprune").iterdir()
        if p.is_dir() and any(p.glob("test_*.py"))
    }
    assert folders == packages
    assert any((ROOT / "tests" / "firmware_export").glob("test_*.py"))
