"""The `lite` engine: CPU lip sync from the avatar's own mouth images, no downloaded weights."""

from .engine import LiteEngine, LiteRenderer

__all__ = ["LiteEngine", "LiteRenderer"]
