"""MuseTalk v1.5 (and v1.0) on upstream's weights: see engine.py for the pipeline, weights.py
for the files. Heavy modules (torch, diffusers, transformers) load only when the engine does."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine import MuseTalkEngine, MuseTalkRenderer

__all__ = ["MuseTalkEngine", "MuseTalkRenderer"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
