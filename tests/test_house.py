"""The house's ground floor holds: no import circle, every name in one place, short functions, Python defaults
that agree with the YAML. Read from the code itself (its syntax tree), so a new module is checked too."""

from __future__ import annotations

import ast
import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra.utils import get_object
from omegaconf import OmegaConf

from lossbench import names
from lossbench.paths import compose, conf_dir

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("lossbench", "hydra_plugins", "benchmarks")
LONGEST_FUNCTION = 80  # lines, decorators and docstring included


def modules(*packages: str) -> dict[str, Path]:
    """Dotted module name -> file, for every module of ``packages`` (a package's ``__init__`` is the package)."""
    found = {}
    for package in packages:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def import_graph(known: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules of ``known`` it imports anywhere in its file (inside functions too), and its parent
    packages (importing ``a.b`` runs ``a/__init__`` first)."""
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        deps = {parent for parent in _parents(name) if parent in known}
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            else:
                continue
            for target in targets:
                while target and target not in known:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    deps.add(target)
        graph[name] = deps
    return graph


def _parents(name: str) -> Iterator[str]:
    parts = name.split(".")
    for i in range(1, len(parts)):
        yield ".".join(parts[:i])


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan): each is an import circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_circle_through_a_package_init():
    graph = {"p": {"p.a"}, "p.a": {"p", "p.b"}, "p.b": {"p"}, "q": set()}
    assert cycles(graph) == [["p", "p.a", "p.b"]]
    assert cycles({"p": set(), "p.a": {"p"}, "p.b": {"p", "p.a"}}) == []


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_circle(package: str):
    known = modules(*PACKAGES)
    graph = import_graph(known)
    inside = [c for c in cycles(graph) if any(m == package or m.startswith(package + ".") for m in c)]
    assert inside == [], f"import circles (counting imports inside functions and package __init__s): {inside}"


def function_local_imports(path: Path) -> Iterator[tuple[int, str]]:
    lines = path.read_text().splitlines()
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import | ast.ImportFrom):
                    yield inner.lineno, lines[inner.lineno - 1]


def test_every_import_inside_a_function_says_why():
    """An import inside a function keeps a module's start-up light; the comment beside it says what it defers."""
    silent = [
        f"{path.relative_to(REPO)}:{line}: {text.strip()}"
        for path in modules("lossbench", "hydra_plugins").values()
        for line, text in function_local_imports(path)
        if "#" not in text
    ]
    assert silent == [], "function-local imports without a reason:\n" + "\n".join(silent)


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings (module, class, function) or attribute docs."""
    ids = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list):
            for statement in body:
                if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
                    ids.add(id(statement.value))
    return ids


def vocabulary() -> set[str]:
    """Every metric and tag name :mod:`lossbench.names` owns (module-level strings, and those in its tuples). The
    summary's figures by their short names (``selected_epoch``) are the report's words too, and not checked."""
    owned: set[str] = set()
    for name, value in vars(names).items():
        if name.startswith("_") or name in ("annotations", "SUMMARY_FIGURES"):  # the summary's figures by short name
            continue
        values = value if isinstance(value, tuple | dict) else (value,)
        owned |= {v for v in values if isinstance(v, str) and ("/" in v or "." in v or "_" in v)}
    return owned - set(names.SUMMARY_FIGURES)


def test_the_vocabulary_knows_the_names_this_test_looks_for():
    words = vocabulary()
    assert {"val/acc", "train_eval/nll", "sweep_id", "config_hash", "lossbench.kind", "summary/selected_epoch"} <= words


def test_no_metric_or_tag_name_is_written_outside_its_owner():
    words = vocabulary()
    found = []
    for module, path in modules("lossbench", "hydra_plugins").items():
        if module == "lossbench.names":
            continue
        tree = ast.parse(path.read_text())
        skip = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
                if node.value in words:
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}")
    assert found == [], "names written as literals (import them from lossbench.names):\n" + "\n".join(found)


def test_no_function_runs_over_80_lines():
    long = []
    for path in modules(*PACKAGES).values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                length = node.end_lineno - start + 1
                if length > LONGEST_FUNCTION:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {length} lines")
    assert long == [], "\n".join(long)


# ------------------------------------------------------------------------------- defaults vs YAML


def target_nodes(tree, path: str = "") -> Iterator[tuple[str, dict]]:
    """``(dotted path, node)`` of every node with a ``_target_`` in a resolved config tree."""
    if isinstance(tree, dict):
        if "_target_" in tree:
            yield path, tree
        for key, value in tree.items():
            yield from target_nodes(value, f"{path}.{key}" if path else key)


def presets() -> dict[str, list[tuple[str, dict]]]:
    """lossbench class -> ``(option, its node)`` of every ``conf/<group>/<option>.yaml`` that builds it."""
    by_class: dict[str, list[tuple[str, dict]]] = {}
    groups = [d.name for d in conf_dir().iterdir() if d.is_dir() and d.name not in ("hydra", "experiment")]
    for group in groups:
        for path in sorted((conf_dir() / group).glob("*.yaml")):
            tree = OmegaConf.to_container(compose(f"{group}={path.stem}"), resolve=True)
            for where, node in target_nodes(tree.get(group) or {}, group):
                if node["_target_"].startswith("lossbench."):
                    by_class.setdefault(node["_target_"], []).append((f"{group}={path.stem} ({where})", node))
    return by_class


def _same(a, b) -> bool:
    normal = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731
    return normal(a) == normal(b)


def test_class_defaults_are_one_of_the_yaml_presets():
    """A lossbench class built from conf/ (a loss, a model, the data) gives, called with no arguments, exactly what
    one of its YAML options gives: ``FocalLoss()`` is ``loss=focal``, ``CNN()`` is ``model=cnn``. A default of
    None means "derived" (a name from the data set) and is not compared."""
    problems = []
    found = presets()
    assert {"lossbench.losses.FocalLoss", "lossbench.models.CNN", "lossbench.data.ImageData"} <= set(found)
    for target, options in sorted(found.items()):
        parameters = inspect.signature(get_object(target)).parameters.values()
        defaults = {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}
        defaults = {k: v for k, v in defaults.items() if v is not None}
        differences = {
            option: {k: (node[k], v) for k, v in defaults.items() if k in node and not _same(node[k], v)}
            for option, node in options
        }
        if all(differences.values()):
            closest = min(differences.items(), key=lambda item: len(item[1]))
            problems.append(
                f"{target} defaults differ from every option; closest {closest[0]}: (yaml, python) {closest[1]}"
            )
    assert problems == [], "\n".join(problems)
