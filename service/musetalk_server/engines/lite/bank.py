"""The mouth bank: the avatar's own mouth appearances, indexed by shape and head pose.

Built once at preprocess from the avatar's landmarks; the pixels stay in the avatar's frames.
At render time `MouthPicker` chooses, per output frame, the bank frame whose mouth best matches
the target shape, preferring frames whose head pose matches the background frame (so the pasted
mouth sits right) and sticking with its last choice unless another is clearly better (so the
mouth does not flicker between near-equal candidates).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...face.landmarks import interocular
from .geometry import mouth_aperture, mouth_width
from .shape import MouthShape, ShapeRange

__all__ = ["MouthBank", "MouthPicker", "build_bank", "shut_candidates"]

OPEN_PERCENTILE = 90.0  # the widest target is this percentile of the bank's apertures
CURVE_PERCENTILES = np.linspace(0.0, OPEN_PERCENTILE, 11)  # openness 0, 0.1, ... 1 -> these
# Where the avatar's preprocess chose the ranked spread (engine.speaking_bank), the curve is read
# from the frames where its own soundtrack is speech, when there are at least this many (a second
# at 25 fps): the openings this person makes while talking, not those of the pauses in between.
MIN_VOICED = 25
SHUT_MARGIN = 0.012  # inter-ocular units above the bank's most closed mouth that still read as shut
SHUT_PENALTY = 6.0  # in silence, a mouth that is not shut costs this much extra
# Inter-ocular units: the aperture error that costs 1. It is tight because a speaker who talks
# without pauses asks for openings within a narrow band of their range, and a looser match lets
# the pose and stickiness terms choose within that band instead of the audio: on lp_d12 (a
# turning head, continuous speech) 0.01 kept r(asked, shown) at 0.86; 0.005 gives 0.97, while
# the other ground-truth clips stay at 0.996-1.000 and the mean pose mismatch grows 0.036 -> 0.047.
APERTURE_TOL = 0.005
WIDTH_TOL = 0.04
POSE_TOL = 0.03  # inter-ocular units of nose offset (yaw / pitch proxy) that costs 1
WIDTH_WEIGHT = 0.3
POSE_WEIGHT = 0.5
STICKY_COST = 0.6  # a new choice must beat the current one by this much
PAUSE_STICKY_COST = 3.0  # ... and by this much more in a pause, where any change shows as a twitch
NEIGHBOUR_BONUS = 0.3  # moving to the next frame of the source keeps real motion
SHUT_SOURCES = 8  # at most this many mouths are warped shut, one per stretch of the timeline
SHUT_LIMIT = 0.1  # inter-ocular units: only mouths opened less than this are warped shut
ALREADY_SHUT = 0.01  # a mouth this closed needs no warp


@dataclass(frozen=True)
class MouthBank:
    aperture: np.ndarray  # (N,) float32, inter-ocular units
    width: np.ndarray  # (N,)
    pose: np.ndarray  # (N, 2) nose offset from the eyes' midpoint, inter-ocular units
    # (N,) bool: the avatar's soundtrack is speech on this frame (False for mouths warped shut).
    # Only set where preprocess chose the ranked spread; None: the spread by share, as before.
    voiced: np.ndarray | None = None

    def shape_range(self) -> ShapeRange:
        """Openness 0 is the most closed mouth. Above it, the quantiles of all the frames' openings,
        or, with the ranked spread, of this person's openings while speaking."""
        by_rank = self.voiced is not None and int(self.voiced.sum()) >= MIN_VOICED
        curve = np.percentile(self.aperture[self.voiced] if by_rank else self.aperture, CURVE_PERCENTILES)
        curve[0] = self.aperture.min()  # a pause still asks for the most closed mouth there is
        curve = np.maximum.accumulate(curve)
        return ShapeRange(
            closed=float(curve[0]),
            open=float(curve[-1]),
            width_lo=float(np.percentile(self.width, 10)),
            width_hi=float(np.percentile(self.width, 90)),
            curve=tuple(float(v) for v in curve),
            by_rank=by_rank,
        )

    def __len__(self) -> int:
        return len(self.aperture)

    def extended(self, other: MouthBank) -> MouthBank:
        """This bank followed by `other`'s entries (synthetic mouths appended after the frames)."""
        voiced = None if self.voiced is None else np.concatenate([self.voiced, np.zeros(len(other), bool)])
        return MouthBank(
            aperture=np.concatenate([self.aperture, other.aperture]),
            width=np.concatenate([self.width, other.width]),
            pose=np.concatenate([self.pose, other.pose]),
            voiced=voiced,
        )

    def with_voiced(self, voiced: np.ndarray) -> MouthBank:
        return MouthBank(self.aperture, self.width, self.pose, np.asarray(voiced, bool).reshape(len(self)))

    def save(self, path: Path) -> None:
        if self.voiced is None:
            np.savez(path, aperture=self.aperture, width=self.width, pose=self.pose)
        else:
            np.savez(path, aperture=self.aperture, width=self.width, pose=self.pose, voiced=self.voiced)

    @classmethod
    def load(cls, path: Path) -> MouthBank:
        with np.load(path) as z:
            voiced = z["voiced"].astype(bool) if "voiced" in z.files else None
            return cls(aperture=z["aperture"], width=z["width"], pose=z["pose"], voiced=voiced)


def head_pose(points: np.ndarray) -> np.ndarray:
    """(N, 2) nose-tip offset from the eye midpoint over inter-ocular distance: turns and nods."""
    eyes = (points[:, 33] + points[:, 263]) / 2
    return ((points[:, 4] - eyes) / interocular(points)[:, None]).astype(np.float32)


def build_bank(landmarks: np.ndarray) -> MouthBank:
    """Shape and pose of every avatar frame, from (N, 478, 2) landmarks."""
    return MouthBank(
        aperture=mouth_aperture(landmarks).astype(np.float32),
        width=mouth_width(landmarks).astype(np.float32),
        pose=head_pose(landmarks),
    )


def shut_candidates(bank: MouthBank, count: int = SHUT_SOURCES) -> list[int]:
    """Frames worth warping shut: the most closed one of each of `count` stretches of the timeline.

    Spreading them over time spreads them over the head poses the avatar goes through, so a
    shut mouth exists near every background pose. Frames already shut, or opened too wide to
    close without squashing the teeth, are left out.
    """
    picks = []
    for part in np.array_split(np.arange(len(bank)), min(count, len(bank))):
        k = int(part[np.argmin(bank.aperture[part])])
        if ALREADY_SHUT < bank.aperture[k] < SHUT_LIMIT:
            picks.append(k)
    return picks


class MouthPicker:
    """Chooses a bank frame per output frame; one instance per render (it remembers the last pick)."""

    def __init__(self, bank: MouthBank, n_frames: int | None = None) -> None:
        self.bank = bank
        self.n_frames = len(bank) if n_frames is None else n_frames  # entries past this are synthetic
        self.last: int | None = None

    def costs(self, shape: MouthShape, background: int) -> np.ndarray:
        b = self.bank
        c = ((b.aperture - shape.aperture) / APERTURE_TOL) ** 2
        c += WIDTH_WEIGHT * ((b.width - shape.width) / WIDTH_TOL) ** 2
        pose_err = np.linalg.norm(b.pose - b.pose[background], axis=1) / POSE_TOL
        c += POSE_WEIGHT * pose_err**2
        if shape.openness == 0.0:
            c += SHUT_PENALTY * (b.aperture > b.aperture.min() + SHUT_MARGIN)
        return c

    def pick(self, shape: MouthShape, background: int) -> int:
        c = self.costs(shape, background)
        if self.last is not None:
            nxt = self.last + 1
            if nxt < self.n_frames:
                c[nxt] -= NEIGHBOUR_BONUS
            c[self.last] -= STICKY_COST + (PAUSE_STICKY_COST if shape.openness == 0.0 else 0.0)
        k = int(np.argmin(c))
        self.last = k
        return k
