"""Whether an avatar video's soundtrack is the person's own voice, and the file's A/V offset.

The spread choice (engine.speaking_bank) reads the avatar's filmed mouth against its own
soundtrack. That reading means something only when the sound is this person speaking, and only
once the file's own offset between picture and sound (a camera's or an editor's) is taken out:
otherwise whatever lines up best with the file's offset wins, and every render would inherit it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MAX_OFFSET", "MIN_OWN_R", "NOT_THEIR_VOICE", "RANK_MUST_WIN_BY", "av_offset", "paired", "shifted_r"]

# Every speaker's jaw follows the loudness of their own speech (shut in pauses, open on vowels),
# so the generic mapping, with nothing fitted to the clip, follows the filmed mouth from it: r
# 0.30-0.57 on the eight half-clip avatars of the ground-truth clips. Someone else's voice mostly
# gives r near 0 (lp_d11's half with a Chinese voice-over: -0.11). Under MIN_OWN_R nothing is
# learned from the soundtrack (a voice-over, music, a dub).
MIN_OWN_R = 0.2
# The ranked spread replaces the default (by share) only when it follows the filmed mouth better
# by this much: two spreads a few thousandths apart on a few seconds of soundtrack are a coin
# flip, and rendered, a flip moves a split's r by up to 0.1 either way (docs/lite-engine.md).
RANK_MUST_WIN_BY = 0.02
NOT_THEIR_VOICE = "the soundtrack does not follow this mouth (not the person's own voice?)"
MAX_OFFSET = 4  # frames: the most the avatar video's sound may lead or trail its picture
_EPS = 1e-9


def av_offset(predicted: np.ndarray, filmed: np.ndarray, max_offset: int = MAX_OFFSET) -> int:
    """Frames by which the filmed mouth trails the sound (negative: leads it): the shift that best
    lines the generic mapping's prediction up with it. Ties go to the smaller shift."""
    best, best_r = 0, -2.0
    for k in sorted(range(-max_offset, max_offset + 1), key=abs):
        r = shifted_r(predicted, filmed, k)
        if r is not None and r > best_r + 1e-9:
            best, best_r = k, r
    return best


def paired(sound: np.ndarray, mouth: np.ndarray, lag: int) -> tuple[np.ndarray, np.ndarray]:
    """sound[t] beside mouth[t + lag], for every t where both exist (lag > 0: the mouth follows
    the sound). Anything per frame can stand for the sound: its envelope, its features, a target."""
    n = min(len(sound), len(mouth))
    lo = max(-lag, 0)
    hi = max(n - max(lag, 0), lo)
    return sound[lo:hi], mouth[lo + lag:hi + lag]


def shifted_r(predicted: np.ndarray, filmed: np.ndarray, offset: int) -> float | None:
    """r of the prediction against the mouth `offset` frames later; None with under 3 frames left."""
    a, b = paired(predicted, filmed, offset)
    if len(a) < 3:
        return None
    if np.std(a) < _EPS or np.std(b) < _EPS:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])
