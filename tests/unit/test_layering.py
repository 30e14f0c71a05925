"""The module graph: no import circle, no import upward through the layers, a top of the package
that holds only entry and cross-cutting modules, the CLI's commands never reach into the HTTP
layer, and the avatar layout the operator shares is standard library alone."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from helpers import REPO

PACKAGE = REPO / "service" / "musetalk_server"


def module_name(path: Path, root: Path = PACKAGE.parent) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path = PACKAGE.parent) -> set[str]:
    """Project modules a module imports, at module level or inside its functions (a lazy import
    still ties the two together); type-only imports under TYPE_CHECKING do not count."""
    name, tree = module_name(path, root), ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    type_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                 and "TYPE_CHECKING" in ast.unparse(block.test) for n in ast.walk(block)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base.startswith("musetalk_server"):
                found.add(base)
                found.update(f"{base}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("musetalk_server"))
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}


def test_no_import_circle() -> None:
    edges, state, cycles = graph(), {}, []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                cycles.append([*stack[stack.index(nxt):], nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    sys.setrecursionlimit(10_000)
    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    # A package importing its own submodules in __init__ is not a circle of meaning.
    real = [c for c in cycles if not all(m.startswith(c[0] + ".") or m == c[0] for m in c[1:])]
    assert not real, f"import circles: {real}"


# The layers, lowest first: a module may import its own layer and those below, never one above.
# Every top-level module and package of musetalk_server sits in exactly one.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"musetalk_server", "errors", "config"}),  # the error tree, the settings, the version
    frozenset({"media", "face", "disk", "device", "metrics"}),  # codecs, faces, scratch disk, the device
    frozenset({"engines"}),  # audio + avatar -> frames; never knows the avatar format or HTTP
    frozenset({"avatars"}),  # the on-disk format, the store, preprocessing
    frozenset({"render"}),  # the render use cases: the one entry, sinks, async jobs, real-time core
    frozenset({"webrtc"}),  # WebRTC over the real-time core: offers, the per-session encoders, the transport
    frozenset({"runtime"}),  # the composition root
    frozenset({"api", "cli", "serve", "__main__", "docs_tables"}),  # the entries, and the docs tables made from the contract
)
# The top of the package: entries and cross-cutting modules only; the rest lives in a folder.
TOP_MODULES = {"__init__", "__main__", "cli", "config", "docs_tables", "errors", "metrics", "runtime", "serve"}


def layer_of(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else parts[0]
    found = [i for i, layer in enumerate(LAYERS) if top in layer]
    assert len(found) == 1, f"{module}: its top-level name {top!r} is in {len(found)} layers, not one"
    return found[0]


def test_no_import_goes_up_a_layer() -> None:
    upward = sorted(f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
                    for a, targets in graph().items() for b in targets if layer_of(b) > layer_of(a))
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_the_layer_check_catches_an_upward_import(tmp_path) -> None:
    engine = tmp_path / "musetalk_server" / "engines" / "peek.py"
    engine.parent.mkdir(parents=True)
    engine.write_text("from ..avatars.layout import ENGINE_DIR\n")  # the import engines/base.py once had
    imported = imports_of(engine, root=tmp_path)
    assert "musetalk_server.avatars.layout" in imported
    assert layer_of("musetalk_server.avatars.layout") > layer_of("musetalk_server.engines.peek")


def test_the_top_of_the_package_holds_only_entries_and_cross_cutting_modules() -> None:
    loose = {p.stem for p in PACKAGE.glob("*.py")} - TOP_MODULES
    assert not loose, f"modules at the top of the package that belong in a folder: {sorted(loose)}"


def test_the_cli_imports_nothing_from_the_http_layer() -> None:
    cli = PACKAGE / "cli.py"
    imported = {n.module for n in ast.walk(ast.parse(cli.read_text())) if isinstance(n, ast.ImportFrom) and n.module}
    assert not {m for m in imported if m == "api" or m.startswith("api.")}


def test_the_layout_is_standard_library_alone() -> None:
    layout = PACKAGE / "avatars" / "layout.py"
    third_party = set()
    for node in ast.walk(ast.parse(layout.read_text())):
        if isinstance(node, ast.Import):
            third_party |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            third_party.add(node.module.split(".")[0])
    assert third_party <= set(sys.stdlib_module_names) | {"__future__"}
