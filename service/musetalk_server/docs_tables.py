"""Markdown tables generated from the code, and the writer that keeps them in the docs.

A generated table sits in a document between `<!-- generated:NAME -->` and
`<!-- /generated:NAME -->`; `write_between_markers` replaces what is between them and leaves the
rest of the document as it is. `python scripts/docs_tables.py` writes every table below,
`--check` only says which are stale (the test suite runs it). Benchmark tables reuse the writer.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic.fields import FieldInfo

from .config import Settings
from .errors import documented_errors

__all__ = ["markers", "replace_between_markers", "write_between_markers", "error_table", "settings_table", "TABLES",
           "update_docs"]


def markers(name: str) -> tuple[str, str]:
    """The opening and closing marker of the generated block `name`."""
    return f"<!-- generated:{name} -->", f"<!-- /generated:{name} -->"


def replace_between_markers(text: str, name: str, body: str) -> str:
    """`text` with the part between the markers of `name` replaced by `body`; the markers and the
    rest stay. Exactly one pair, in order, or ValueError: a doubled block would go stale unseen."""
    start, end = markers(name)
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ValueError(f"expected exactly one {start} followed by one {end}")
    head, rest = text.split(start)
    tail = rest.split(end)[1]
    return f"{head}{start}\n{body.strip()}\n{end}{tail}"


def write_between_markers(path: Path, name: str, body: str, *, check: bool = False) -> bool:
    """Put `body` between the markers of `name` in `path`. True when the file was (with `check`:
    would be) changed; with `check` nothing is written."""
    text = path.read_text()
    new = replace_between_markers(text, name, body)
    if new != text and not check:
        path.write_text(new)
    return new != text


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def error_table() -> str:
    """Every error code of the tree (errors.py): status, code and when, by status."""
    rows = sorted(documented_errors(), key=lambda e: e.status)  # stable: the tree's order within a status
    lines = ["| status | code | when |", "|---|---|---|"]
    lines += [f"| {e.status} | `{e.code}` | {_cell(e.when)} |" for e in rows]
    return "\n".join(lines)


def settings_table() -> str:
    """Every setting (config.py): variable, default, allowed values and what it does."""
    lines = ["| variable | default | allowed | what |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        variable = f"MUSETALK_{name.upper()}"
        lines.append(f"| `{variable}` | {_default(field.default)} | {_allowed(field)} | "
                     f"{_cell(field.description or '')} |")
    return "\n".join(lines)


def _default(value: Any) -> str:
    if value is None:
        return "unset"
    if value == "":
        return "empty"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, Path) and not value.is_absolute():
        value = f"./{value}"  # as it is written in the code, relative to the working directory
    return f"`{value}`"


_BOUNDS = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}


def _allowed(field: FieldInfo) -> str:
    annotation = field.annotation
    if get_origin(annotation) is Literal:
        return ", ".join(f"`{v}`" for v in get_args(annotation))
    kinds: list[Any] = [a for a in get_args(annotation) if a is not type(None)] \
        if isinstance(annotation, types.UnionType) else [annotation]
    names: dict[Any, str] = {int: "integer", float: "number", str: "text", Path: "path"}
    kind = names.get(kinds[0], str(kinds[0]))
    bounds = [f"{sign} {getattr(m, attr)}" for m in field.metadata for attr, sign in _BOUNDS.items()
              if getattr(m, attr, None) is not None]
    return " ".join([kind, ", ".join(bounds)]).strip()


# Document (relative to the repository root) -> table name -> what writes it.
TABLES: dict[str, dict[str, Callable[[], str]]] = {
    "docs/errors.md": {"errors": error_table},
    "docs/configuration.md": {"configuration": settings_table},
}


def update_docs(repo: Path, *, check: bool = False) -> list[str]:
    """Write every generated table under `repo`; returns the `path#name` of those that changed
    (with `check`: that are stale, nothing written)."""
    return [f"{doc}#{name}" for doc, tables in TABLES.items() for name, make in tables.items()
            if write_between_markers(repo / doc, name, make(), check=check)]
