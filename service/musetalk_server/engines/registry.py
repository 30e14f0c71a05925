"""Engine selection. The caller (app factory or CLI) decides the device and hands it in."""

from __future__ import annotations

from pathlib import Path

from .base import Engine

__all__ = ["ENGINES", "resolve_engine_name", "create_engine"]

ENGINES = ("lite", "musetalk")


def resolve_engine_name(requested: str, *, model_dir: Path, cuda: bool) -> str:
    """`auto` takes musetalk only when its weights are all there and a GPU is present, else lite."""
    if requested != "auto":
        return requested
    if not cuda:
        return "lite"
    from .musetalk.weights import missing_weights

    return "musetalk" if not missing_weights(model_dir) else "lite"


def create_engine(name: str, *, model_dir: Path, device: str, batch_size: int) -> Engine:
    """Build and load an engine. A weight file that is missing or does not fit fails the load
    with a WeightsError naming it."""
    if name == "lite":
        from .lite import LiteEngine

        return LiteEngine()
    if name == "musetalk":
        from .musetalk import MuseTalkEngine

        return MuseTalkEngine(model_dir=model_dir, device=device, batch_size=batch_size)
    raise ValueError(f"unknown engine {name!r}; expected one of {ENGINES}")
