"""The house's layers: `llm_dit`'s rooms import only rooms below them, nothing imports in a circle,
`llm_dit` never imports gradio, and `ui/`'s building blocks never import a tab.

Every import counts, also those inside functions: a lazy import is still a dependency.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# lowest first; the package's own modules (cli, bench, ...) sit above every room
ROOMS = ["serving", "core", "conditioning", "runtime", "pipelines", "studies"]


def _imports(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, absolute module) for every import in `path`, a module of `package` (dotted)."""
    parts = package.split(".")
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts[: len(parts) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            out.append((node.lineno, module))
            # `from . import blend` imports a module too
            out += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return out


def _modules(top: str):
    for path in sorted((ROOT / top).rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        package = name if rel.name == "__init__" else ".".join(rel.parts[:-1])
        yield name, path, _imports(path, package)


def _room(module: str) -> int:
    """A module's room as its rank in ROOMS (the package root and entry points: above all)."""
    parts = module.split(".")
    return ROOMS.index(parts[1]) if len(parts) > 1 and parts[1] in ROOMS else len(ROOMS)


def test_rooms_import_only_rooms_below():
    upward = []
    for name, path, imports in _modules("llm_dit"):
        for line, target in imports:
            if not target.startswith("llm_dit") or target in ("llm_dit", "llm_dit.__version__"):
                continue
            if _room(target) > _room(name):
                upward.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not upward, "imports from a lower room into a higher one:\n" + "\n".join(upward)


def test_every_module_sits_in_a_room():
    loose = [n for n, _, _ in _modules("llm_dit")
             if n.count(".") == 1 and n.split(".")[1] not in ROOMS + ["cli", "bench", "bench_memory", "gpu_proof", "__main__"]]
    assert not loose, f"modules outside the rooms (give each a room, and a line in README's Layout): {loose}"


def test_no_import_circles():
    graph = {}
    for name, _, imports in [*_modules("llm_dit"), *_modules("ui")]:
        graph[name] = {t for _, t in imports}
    known = set(graph)
    graph = {n: {t for t in ts if t in known and t != n} for n, ts in graph.items()}
    # a package's __init__ importing its own modules is how packages work, not a circle
    graph = {n: {t for t in ts if not t.startswith(n + ".")} for n, ts in graph.items()}
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import circles:\n" + "\n".join(cycles)


def test_llm_dit_never_imports_gradio():
    found = [f"{p.relative_to(ROOT)}:{line}" for _, p, imports in _modules("llm_dit")
             for line, t in imports if t.split(".")[0] in ("gradio", "ui")]
    assert not found, f"llm_dit must not know gradio or ui: {found}"


def test_ui_building_blocks_never_import_a_tab():
    found = [f"{p.relative_to(ROOT)}:{line} imports {t}" for name, p, imports in _modules("ui")
             if not name.startswith("ui.tabs") and name != "ui"
             for line, t in imports if t.startswith("ui.tabs")]
    assert not found, "a shared building block imports a tab:\n" + "\n".join(found)
