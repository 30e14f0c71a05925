"""Which mouths an avatar's own frames lack for speech, the synthetic ones that stand in, and
what a client is told about it.

Speech needs a shut mouth (every pause) and a spread of openings. A clip of someone talking
films both, or nearly: the shut one can be missing (a news reader who never closes his lips),
and is made by warping a slightly open mouth shut. A photo, or a clip whose mouth stays shut,
films neither opening: they are made by dropping the jaw of its least-open frames to several
openings (synth.open_lips). Both are decided from the bank alone, so an avatar prepared before
this existed gains them when it is opened, and nothing but the bank is stored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .bank import ALREADY_SHUT, OPEN_PERCENTILE, SHUT_LIMIT, MouthBank, build_bank, shut_candidates
from .compose import paste_mouth
from .geometry import mouth_aperture
from .shape import ShapeRange
from .synth import close_lips, open_lips, raise_jaw

__all__ = ["MouthPlan", "animation_facts", "extended_bank", "made_shut_gap", "plan_mouths"]

# The four ground-truth speakers open to 0.13-0.31 inter-ocular units at the bank's 90th
# percentile, the closed-mouth clips (seed_short_test_video, mt_yongen) to 0.018-0.020. Under
# OPEN_ENOUGH the avatar's mouth never opened as speech opens it, and openings are made.
OPEN_ENOUGH = 0.08
OPENINGS = (0.02, 0.04, 0.06, 0.08, 0.10, 0.12)  # the openings made, those above the filmed ones
OPEN_SOURCES = 4  # ... each from the least-open frame of this many stretches of the timeline
# A filmed gap this wide shows the inner mouth (teeth, tongue) well enough to lend it to the
# openings; a narrower one is a slit, and the openings get a dark cavity without teeth.
DONOR_MIN = 0.03
# A mouth open in every frame (a photo taken mid-word: none of its frames is under bank.SHUT_LIMIT,
# so none is warped shut the usual way) is shut by raising the jaw, and narrowed part-way, keeping
# these shares of its gap, with each lip moving up to this far, so that it has narrower openings
# to speak with too; where that is not far enough, the jaw narrows it (narrowed).
WIDE_HALF_GAP = 0.1
NARROWINGS = (0.0, 0.25, 0.5, 0.75)
# Inter-ocular units: a mouth warped shut that the face landmarker still reads this far apart did
# not shut (a tongue or teeth filling a wide mouth, which the rising lip cannot cover). Lips that
# met read 0.00-0.01; smiling shut lips up to 0.035; a tongue left between the lips 0.18-0.32.
STILL_APART = 0.05


@dataclass(frozen=True)
class MouthPlan:
    """The synthetic mouths one bank needs: frames to warp shut, frames to open to `openings`."""

    shut: tuple[int, ...]
    open_from: tuple[int, ...] = ()
    openings: tuple[float, ...] = ()
    donor: int | None = None  # the frame whose filmed inner mouth the openings show
    narrow_from: tuple[int, ...] = ()  # a mouth open in every frame: these, shut and part-way (NARROWINGS)

    def synthesise(self, frames: list[np.ndarray], landmarks: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """(frame, points) of every synthetic mouth, shut ones first."""
        donor = None if self.donor is None else (frames[self.donor], landmarks[self.donor])
        made = [close_lips(frames[k], landmarks[k]) for k in self.shut]
        made += [narrowed(frames[k], landmarks[k], keep) for k in self.narrow_from for keep in NARROWINGS]
        made += [open_lips(frames[k], landmarks[k], a, donor) for k in self.open_from for a in self.openings]
        return made

    def shape_range(self, bank: MouthBank) -> ShapeRange:
        """`bank`'s range; with openings made, openness spans up to the widest of them."""
        r = bank.shape_range()
        if not self.openings:
            return r
        ramp = np.linspace(r.closed, max(self.openings), len(r.curve))
        curve = np.maximum(np.asarray(r.curve), ramp)
        return replace(r, open=float(curve[-1]), curve=tuple(float(v) for v in curve))


def narrowed(frame: np.ndarray, points: np.ndarray, keep: float) -> tuple[np.ndarray, np.ndarray]:
    """A mouth open in every frame, shut (keep 0) or part-way (keeping that share of its gap).

    Shut, the jaw rises (synth.raise_jaw), as it rests in a pause. Part-way, the lips move
    towards each other by up to WIDE_HALF_GAP each (synth.close_lips), as they narrow between
    syllables; a gap wider than that allows narrows by the jaw too. Measured on 18 photos open
    0.11-0.20 (docs/lite-engine.md): shut by the lips, 6 of them did not read shut to FaceMesh;
    part-way by the jaw, dlib's r_env fell from 0.82 to 0.72."""
    if keep == 0.0 or float(mouth_aperture(points)) > 2 * WIDE_HALF_GAP:
        return raise_jaw(frame, points, keep)
    return close_lips(frame, points, keep, WIDE_HALF_GAP)


def plan_mouths(bank: MouthBank) -> MouthPlan:
    """The mouths `bank`'s frames lack: shut ones (bank.shut_candidates) and, if it never opens
    as speech does, openings above its widest from its least-open frames."""
    shut = tuple(shut_candidates(bank))
    stretches = np.array_split(np.arange(len(bank)), min(OPEN_SOURCES, len(bank)))
    least_open = tuple(int(part[np.argmin(bank.aperture[part])]) for part in stretches)
    if float(bank.aperture.min()) >= SHUT_LIMIT:  # open in every frame
        return MouthPlan(shut, narrow_from=least_open)
    widest = float(np.percentile(bank.aperture, OPEN_PERCENTILE))
    if widest >= OPEN_ENOUGH:
        return MouthPlan(shut)
    open_from = least_open
    donor = int(np.argmax(bank.aperture))
    return MouthPlan(shut, open_from, tuple(a for a in OPENINGS if a > widest),
                     donor if bank.aperture[donor] >= DONOR_MIN else None)


def extended_bank(bank: MouthBank, made: list[tuple[np.ndarray, np.ndarray]]) -> MouthBank:
    """`bank` followed by the synthetic mouths' entries."""
    return bank.extended(build_bank(np.stack([p for _, p in made]))) if made else bank


def made_shut_gap(frames: list[np.ndarray], landmarks: np.ndarray, plan: MouthPlan,
                  read: Callable[[list[np.ndarray]], np.ndarray]) -> float | None:
    """The widest inner-lip gap `read` (frames -> their apertures) finds on the mouths warped shut
    for a mouth open in every frame; None where there are none. Preprocess reads them back with
    the face landmarker, so a mouth that did not shut is told so (animation_facts)."""
    if not plan.narrow_from:
        return None
    # As a viewer sees them: pasted back into the frame they were made from (compose.py).
    shut = [paste_mouth(frames[k], landmarks[k], *narrowed(frames[k], landmarks[k], 0.0)) for k in plan.narrow_from]
    return float(np.nan_to_num(read(shut), nan=1.0).max())


def animation_facts(bank: MouthBank, plan: MouthPlan, shut_gap: float | None = None) -> dict[str, Any]:
    """engine_info.animation: how the avatar's mouth is animated, for a client to show.

    `status` is "filmed" (its own mouths serve), "synthesised" (some are made, see `open` and
    `shut`) or "limited", with a `reason` a person can read. `shut_gap`: made_shut_gap, where
    preprocess read the made shut mouths back."""
    opened = "synthesised" if plan.openings else "filmed"
    # A mouth that never shut on camera is always warped shut: from its least-open frames
    # (bank.shut_candidates), or, open in every frame, its least-open frames narrowed.
    shut = "filmed" if float(bank.aperture.min()) <= ALREADY_SHUT else "synthesised"
    facts: dict[str, Any] = {"open": opened, "shut": shut}
    if shut_gap is not None and shut_gap > STILL_APART:
        return {"status": "limited", **facts, "shut": "missing", "reason": (
            f"the mouth is open in every frame (at least {bank.aperture.min():.2f} inter-ocular units) and, warped "
            f"shut, its lips still read {shut_gap:.2f} apart (a tongue or teeth fill it): it may not close in "
            "pauses; use a video where the lips meet at least once")}
    if plan.narrow_from:
        return {"status": "synthesised", **facts, "reason": (
            "the mouth is open in every frame: it is warped shut for pauses and part-way for quieter sounds, "
            "hiding the teeth; a video where the lips meet looks more natural")}
    if plan.openings:
        teeth = "with the teeth it shows" if plan.donor is not None else "a dark mouth, no teeth (none were shown)"
        return {"status": "synthesised", **facts, "teeth": plan.donor is not None, "reason": (
            "the mouth never opens on camera as speech opens it (a still image or a closed-mouth clip): its "
            f"openings are made by dropping the jaw, {teeth}; a video of the person talking looks more natural")}
    return {"status": "synthesised" if shut == "synthesised" else "filmed", **facts}
