"""Ids in URLs."""

from __future__ import annotations

from urllib.parse import quote

__all__ = ["segment"]


def segment(value: str) -> str:
    """An id as one path segment: `../avatars` or `x?y=1` stays the id it is, which the server
    then refuses (422), instead of becoming another path (a job id of `../avatars/bob` once
    deleted avatar bob)."""
    return quote(str(value), safe="")
