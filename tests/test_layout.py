"""The package's structure, read from its own source with ``ast`` (nothing imported to build the graph).

* no import cycle among the package's modules, counting imports inside functions;
* no module over 900 lines, unless its docstring says it is a uniform catalogue;
* no private name (``_x``) imported from another module;
* every name in every ``__all__`` exists, and the old module paths still import (with a warning).
"""

from __future__ import annotations

import ast
import importlib
import warnings
from pathlib import Path

import pytest

import meanfield

PACKAGE = Path(meanfield.__file__).parent
MAX_LINES = 900


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, str | None]]:
    """(module imported, name taken from it or None) for every intra-package import, nested ones too."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target != "meanfield" and not target.startswith("meanfield."):
                continue
            for alias in node.names:
                child = f"{target}.{alias.name}"
                found.append((child, None) if child in MODULES else (target, alias.name))
        elif isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names if alias.name in MODULES]
    return found


def _graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        # A module importing its own package's __init__ (``from . import x``) is how Python reaches a
        # sibling, not a dependency of the package on the module: not an edge.
        graph[name] = {target for target, _ in _imports(name, path)
                       if target in MODULES and target != name and not name.startswith(target + ".")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        out.append(sorted(component))
    return out


def test_the_cycle_finder_finds_a_cycle():
    # the check below can fail: a hand-made graph with one cycle and one tail
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_no_module_is_too_long():
    long = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in MODULES.items()}
    offenders = {name: n for name, n in long.items() if n > MAX_LINES
                 and "uniform catalogue" not in (ast.get_docstring(ast.parse(MODULES[name].read_text())) or "")}
    assert offenders == {}


def test_no_private_name_crosses_a_module():
    crossing = [(name, target, taken) for name, path in MODULES.items() for target, taken in _imports(name, path)
                if taken and taken.startswith("_") and not taken.startswith("__") and target != name]
    assert crossing == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_exported_name_exists(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = importlib.import_module(name)
    missing = [item for item in getattr(module, "__all__", ()) if not hasattr(module, item)]
    assert missing == []


def test_old_module_paths_still_import_with_a_warning():
    import sys

    old = "meanfield.fisher"
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match="meanfield.theory.fisher"):
        module = importlib.import_module(old)
    assert module.predict is meanfield.predict
    sys.modules.pop(old, None)
