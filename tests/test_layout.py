"""The house rules of `worker/` (docs/architecture.md), read from the code's own imports:
no import circle; each wing imports only the wings below it; the queue loop and the fleet
never import each other; the operator commands never import the queue loop or the daemon;
discovery never imports the HTTP server. And the shape: at most 8 modules at the top, a
docstring on every package, no module over 300 lines, every logger named after its module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "worker"

# What each wing may import besides itself (top-level modules are wings of their own name).
ALLOWED = {
    "settings": set(),
    "metrics": {"__init__"},
    "logs": {"settings"},
    "config": {"settings"},
    "core": {"settings", "hooks"},  # hooks: the public Park is the outcome's too
    "aws": {"core", "settings", "metrics", "__init__"},
    "targets": {"aws", "core", "settings", "metrics"},
    "hooks": set(),
    "decisions": {"aws", "core", "settings", "metrics", "hooks"},
    "dlq": {"decisions", "targets", "aws", "core", "settings", "metrics"},
    "fleet": {"targets", "aws", "core", "settings", "metrics"},
    "ops": {
        "decisions",
        "fleet",
        "targets",
        "aws",
        "core",
        "settings",
        "metrics",
        "hooks",
        "notify",
    },
    "keeper": {"aws", "core", "settings", "metrics"},
    "notify": {"aws", "core", "settings", "metrics"},
    "daemon": {
        "notify",
        "dlq",
        "decisions",
        "fleet",
        "keeper",
        "targets",
        "aws",
        "core",
        "settings",
        "metrics",
    },
    "console": {"ops", "fleet", "aws", "core", "settings"},
    "emulator": {"daemon", "console", "logs", "settings"},
    "cli": {"*"},
    "__main__": {"cli"},
    "__init__": set(),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 2:
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports(path: Path, known: set[str]) -> set[str]:
    """The `worker` modules a file imports, anywhere in it (functions and TYPE_CHECKING
    blocks included): `from a.b import c` is `a.b.c` when that is a module, else `a.b`."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("worker"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("worker"):
                continue
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in known else node.module)
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports(path, known) - {name} for name, path in found.items()}


def wing(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    return parts[1]


def reach(edges: dict[str, set[str]], start: str) -> set[str]:
    """Every module `start` imports, directly or through others."""
    seen: set[str] = set()
    todo = list(edges.get(start, ()))
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(edges.get(node, ()))
    return seen


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every group of modules that import each other, directly or through others."""
    reached = {node: reach(edges, node) for node in edges}
    groups = {
        tuple(sorted(m for m in reached[node] if node in reached.get(m, set())))
        for node in edges
        if node in reached[node]
    }
    return sorted(list(g) for g in groups)


def crossings(edges: dict[str, set[str]], source: str, target: str) -> list[str]:
    return sorted(
        f"{a} -> {b}"
        for a, targets in edges.items()
        for b in targets
        if wing(a) == source and wing(b) == target
    )


def test_the_circle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_the_import_reader_sees_every_kind_of_import():
    edges = graph()
    assert "worker.dlq.poller" in edges["worker.daemon.health"]  # `from x import Name`
    assert "worker.ops.commands" in edges["worker.cli"]  # an import inside a function


def test_no_import_circle():
    assert circles(graph()) == []


def test_every_wing_imports_only_the_wings_below_it():
    edges = graph()
    wrong = []
    for module, targets in edges.items():
        allowed = ALLOWED[wing(module)]
        if "*" in allowed:
            continue
        wrong += [f"{module} -> {t}" for t in targets if wing(t) not in allowed | {wing(module)}]
    assert wrong == []


@pytest.mark.parametrize(
    ("source", "target"),
    [("dlq", "fleet"), ("fleet", "dlq"), ("ops", "dlq"), ("ops", "daemon")],
)
def test_wings_that_never_meet(source, target):
    assert crossings(graph(), source, target) == []


def test_discovery_does_not_import_the_http_server():
    assert "worker.daemon.http" not in graph()["worker.daemon.discovery"]


def test_the_top_level_holds_at_most_eight_modules():
    top = sorted(p.name for p in ROOT.glob("*.py"))
    assert len(top) <= 8, top


def test_every_package_opens_with_its_docstring():
    packages = [p for p in ROOT.rglob("__init__.py")]
    missing = [str(p) for p in packages if not ast.get_docstring(ast.parse(p.read_text()))]
    assert len(packages) >= 8
    assert missing == []


def test_no_module_is_over_300_lines():
    long = {
        str(p.relative_to(ROOT)): n
        for p in ROOT.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 300
    }
    assert long == {}


def test_every_logger_is_named_after_its_module():
    wrong = []
    for path in sorted(ROOT.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        for name in re.findall(r'get_logger\("([^"]+)"\)', path.read_text()):
            if name != module:
                wrong.append((module, name))
    assert wrong == []
