"""The project's import graph, read from the source (no module is imported): for the architecture
test and ``python -m tweetpulse.imports`` (cycles, role edges, imports inside functions).

The design it checks (README, "How the code is laid out"): roles depend on the core (``tweetpulse``),
not on each other, except the edges in :data:`ROLE_EDGES`; no import cycles, counting imports inside
functions; an import inside a function only for an optional heavy dependency, with a one-line reason
(a comment on its line or the line above; it covers the imports right below it, with no blank line
between).
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIRS = {  # as pyproject's package-dir: roles live at the repository root
    "tweetpulse": "tweetpulse",
    "tweetpulse.producers": "producers",
    "tweetpulse.processors": "processors",
    "tweetpulse.training": "training",
    "tweetpulse.dashboard": "dashboard",
    "tweetpulse.retraining": "retraining",
    "tweetpulse.bench": "bench",
}
CORE = "tweetpulse"
# Role -> the roles it may import. training scores with the serving classifier (the gates score what
# serves); retraining runs training; the bench drives workers and producers; the CLI registers all.
ROLE_EDGES: dict[str, set[str]] = {
    "producers": set(),
    "processors": set(),
    "dashboard": set(),
    "training": {"processors"},
    "retraining": {"training", "processors"},
    "bench": {"processors", "producers", "training"},
}


@dataclass
class Module:
    name: str
    path: Path
    top: set[str] = field(default_factory=set)  # project modules imported at module level
    deferred: list[tuple[int, str, bool]] = field(default_factory=list)  # (line, module, has reason)


def role_of(module: str) -> str:
    """The role a project module belongs to (``core`` for tweetpulse's own modules)."""
    parts = module.split(".")
    if len(parts) > 1 and f"tweetpulse.{parts[1]}" in PACKAGE_DIRS:
        return parts[1]
    return "core"


def modules() -> dict[str, Module]:
    found = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in sorted((ROOT / folder).glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            found[name] = Module(name, path)
    for module in found.values():
        _read(module, found)
    return found


def _read(module: Module, known: dict[str, Module]) -> None:
    source = module.path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    inside = {id(n) for f in functions for n in ast.walk(f) if n is not f}
    imports = sorted(
        (n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)), key=lambda n: n.lineno
    )
    reasoned_until = 0  # the last line of the latest deferred import with a reason
    for node in imports:
        targets = _targets(node, module, known)
        if id(node) in inside:
            # a reason covers the imports right below it too (one block, no blank line between)
            reason = _has_reason(lines, node.lineno) or reasoned_until == node.lineno - 1
            reasoned_until = (node.end_lineno or node.lineno) if reason else 0
            base = targets[0] if targets else _external(node)
            module.deferred.append((node.lineno, base, reason))
        elif not _type_checking_only(tree, node):
            module.top.update(t for t in targets if t != module.name)


def _targets(node: ast.Import | ast.ImportFrom, module: Module, known: dict[str, Module]) -> list[str]:
    """The project modules an import statement loads."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module.name if module.path.stem == "__init__" else module.name.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{base}" if base else package
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
    return sorted({n for n in names if n in known})


def _external(node: ast.Import | ast.ImportFrom) -> str:
    return node.names[0].name if isinstance(node, ast.Import) else (node.module or "")


def _has_reason(lines: list[str], lineno: int) -> bool:
    here, above = lines[lineno - 1], lines[lineno - 2].strip() if lineno > 1 else ""
    return "#" in here or above.startswith("#")


def _type_checking_only(tree: ast.Module, node: ast.stmt) -> bool:
    for block in ast.walk(tree):
        guarded = isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        if guarded and any(node is child for stmt in block.body for child in ast.walk(stmt)):
            return True
    return False


def edges(module: Module, found: dict[str, Module]) -> set[str]:
    """Every project module `module` imports, at module level or inside a function: an import moved
    into a function to step around a cycle still closes it."""
    return module.top | {t for _, t, _ in module.deferred if t in found and t != module.name}


def cycles(found: dict[str, Module]) -> list[list[str]]:
    """Import cycles: strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(name: str) -> None:
        index[name] = low[name] = len(index)
        stack.append(name)
        on_stack.add(name)
        for target in edges(found[name], found):
            if target not in index:
                visit(target)
                low[name] = min(low[name], low[target])
            elif target in on_stack:
                low[name] = min(low[name], index[target])
        if low[name] == index[name]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == name:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for name in sorted(found):
        if name not in index:
            visit(name)
    return components


def role_violations(found: dict[str, Module]) -> list[str]:
    """Imports (at module level or inside functions) from one role into another the design does not
    allow; the CLI modules register every role and are exempt."""
    bad = []
    for module in found.values():
        role = role_of(module.name)
        if module.name == "tweetpulse.cli":
            continue
        allowed = {"core"} if role == "core" else ROLE_EDGES[role] | {role, "core"}
        bad += [f"{module.name} -> {t}" for t in sorted(edges(module, found)) if role_of(t) not in allowed]
    return bad


def main() -> int:
    found = modules()
    deferred = [(m.name, line, t, reason) for m in found.values() for line, t, reason in m.deferred]
    print(f"modules: {len(found)}")
    print(f"import cycles: {len(cycles(found))}")
    for component in cycles(found):
        print("  " + " <-> ".join(component))
    violations = role_violations(found)
    print(f"role edges outside the design: {len(violations)}")
    for violation in violations:
        print("  " + violation)
    print(
        f"imports inside functions: {len(deferred)} ({sum(1 for d in deferred if not d[3])} without a reason)"
    )
    for name, line, target, reason in deferred:
        if not reason:
            print(f"  {name}:{line} {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
