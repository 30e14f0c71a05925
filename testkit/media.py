"""Test media by name: the clips this repository ships, and the large evaluation clips beside it.

The repository ships one face clip and the speech clips the quick start and the core tests need
(examples/media, with their sources in its NOTICE), byte for byte the files of ../shared/media
they come from, so tests keep asking for them by their shared names. Every other clip lives only
in ../shared/media, which sits beside this project's CI but not beside a fresh clone: asking for
one that is not there raises MediaMissing, which tests turn into a skip (and CI into a failure,
tests/conftest.py).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["BUNDLED", "BUNDLED_AS", "REPO", "SHARED", "MediaMissing", "in_ci", "media", "shared"]

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "examples" / "media"
SHARED = REPO.parent / "shared" / "media"
# Shared name -> the identical copy in examples/media.
BUNDLED_AS = {
    "vr_face2.mp4": "face.mp4",  # news speaker, 844x844, 25 fps, 5 s
    "mt_eng.wav": "speech.wav",  # English speech, 60 s
    "vr_audio1.wav": "speech_5s.wav",  # English speech, 5.016 s
}


class MediaMissing(FileNotFoundError):
    """A clip that only ../shared/media holds, asked for where there is no ../shared."""


def in_ci() -> bool:
    """CI sets CI=true (GitHub Actions, GitLab and most others do); there ../shared must exist."""
    return os.environ.get("CI", "").lower() == "true"


def media(name: str) -> Path:
    """The path of clip `name`: the bundled copy when the repository ships it, else ../shared/media."""
    if name in BUNDLED_AS:
        return BUNDLED / BUNDLED_AS[name]
    return shared(name)


def shared(name: str) -> Path:
    """Clip `name` in ../shared/media itself, for code that reads that folder by clip name
    (bench/lipsync_eval.py's clips), even when the repository ships a copy."""
    path = SHARED / name
    if not path.is_file():
        raise MediaMissing(f"the evaluation clip {name} is only in ../shared/media, and there is none at {SHARED}")
    return path
