"""The `lite` engine: lip sync on the CPU from the avatar's own mouth images, no weights.

prepare: measure every avatar frame's mouth (aperture, width) and head pose -> `bank.npz`, with
         the frames where its soundtrack is speech marked if the ranked spread of openness
         predicts its own mouth better (shape.py, own_voice.py);
         decide which mouths speech needs that the frames lack (coverage.py) and say so
         (`engine_info.animation`).
open:    add those to the bank: a few least-open mouths warped shut (for a mouth open in every
         frame, shut by raising the jaw, and part-way), and for a still or a closed-mouth clip,
         its mouth opened by dropping the jaw (synth.py).
render:  audio -> target mouth shape per frame (shape.py) -> best bank entry (bank.py) ->
         its mouth pasted into the ping-pong background frame (compose.py).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ...errors import AvatarEngineMismatch, InvalidInput
from ...face.landmarks import detect_video, interocular
from ...media.frame_timing import SAMPLE_RATE, frame_count, pingpong_index
from ..base import AvatarFrames, Engine, FrameSession, LoadedAvatar, Renderer
from .bank import MIN_VOICED, MouthBank, MouthPicker, build_bank
from .compose import paste_mouth
from .coverage import animation_facts, extended_bank, made_shut_gap, plan_mouths
from .geometry import mouth_aperture
from .own_voice import MIN_OWN_R, NOT_THEIR_VOICE, RANK_MUST_WIN_BY, av_offset, shifted_r
from .shape import SHIPPED, GenericMapping, ShapeStream

__all__ = ["LiteEngine", "LiteRenderer", "generic_shapes", "speaking_bank"]

ENGINE_NAME = "lite"
ARTIFACT_VERSION = 1
BANK_FILE = "bank.npz"


class LiteRenderer(Renderer):
    """Renders one prepared avatar. Stateless between calls, so requests may share it."""

    def __init__(
        self, frames: list[np.ndarray], landmarks: np.ndarray, bank: MouthBank, mapping: GenericMapping = SHIPPED,
    ) -> None:
        self.frames, self.landmarks, self.mapping = frames, landmarks, mapping
        # Mouth sources: the avatar's frames, then the mouths they lack (coverage.py): a few
        # warped shut, so a speaker who never closed their lips on camera can close them in a
        # pause; for a still or a closed-mouth clip, its mouth opened to several openings; for a
        # mouth open in every frame, shut (the jaw raised) and part-way.
        plan = plan_mouths(bank)
        made = plan.synthesise(frames, landmarks)
        self.sources = list(frames) + [f for f, _ in made]
        self.source_points = np.concatenate([landmarks] + [p[None] for _, p in made])
        self.bank = extended_bank(bank, made)
        self.shape_range = plan.shape_range(self.bank)

    def render(
        self, audio: np.ndarray, fps: float, cancel: threading.Event | None = None
    ) -> Iterator[np.ndarray]:
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if fps <= 0:
            raise InvalidInput(f"fps must be positive, got {fps}")
        n_out = frame_count(len(audio), fps)
        n_src = len(self.frames)
        shapes = ShapeStream(audio, fps, n_out, self.shape_range, mapping=self.mapping)
        picker = MouthPicker(self.bank, n_frames=n_src)
        for i, shape in enumerate(shapes):
            if cancel is not None and cancel.is_set():
                return
            b = pingpong_index(i, n_src)
            k = picker.pick(shape, b)
            yield paste_mouth(self.frames[b], self.landmarks[b], self.sources[k], self.source_points[k])

    def session(self, fps: float) -> FrameSession:
        from .live import LiteSession

        return LiteSession(self, fps)


class LiteEngine(Engine):
    """CPU engine that needs no downloaded weights; the embedded default."""

    name: ClassVar[str] = ENGINE_NAME
    artifact_version: ClassVar[int] = ARTIFACT_VERSION

    def __init__(self, mapping: GenericMapping = SHIPPED) -> None:
        # Only the lip-sync eval passes another mapping (its leave-one-clip-out choice).
        self.mapping = mapping

    def describe(self) -> dict[str, Any]:
        return {"loaded": True, "device": "cpu", "engine": self.name, "version": self.artifact_version}

    def prepare(self, avatar: AvatarFrames, bbox_shift: int, out_dir: Path) -> dict[str, Any]:
        landmarks = np.asarray(avatar.landmarks, dtype=np.float32)
        if landmarks.ndim != 3 or len(landmarks) != len(avatar.frames) or len(landmarks) == 0:
            raise InvalidInput(f"need one (478, 2) landmark set per frame, got {landmarks.shape}")
        bank, spread = speaking_bank(landmarks, avatar.audio, avatar.fps, self.mapping)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        bank.save(out_dir / BANK_FILE)
        r = bank.shape_range()
        plan = plan_mouths(bank)
        # A mouth open in every frame is warped shut: read back, the client is told if it did not shut.
        shut_gap = made_shut_gap(list(avatar.frames), landmarks, plan, read_apertures)
        return {
            "mouth_aperture": {"closed": round(r.closed, 4), "open": round(r.open, 4)},
            "mouth_width": {"lo": round(r.width_lo, 4), "hi": round(r.width_hi, 4)},
            "interocular_px": round(float(np.median(interocular(landmarks))), 1),
            "face_box": face_box_stats(landmarks, bbox_shift),
            "openness_spread": spread,
            "animation": animation_facts(bank, plan, shut_gap),
        }

    def open(self, avatar: LoadedAvatar) -> Renderer:
        # The engine and artifact version were checked on the manifest (avatars/cache.py).
        try:
            bank = MouthBank.load(avatar.engine_dir / BANK_FILE)
        except (OSError, ValueError, KeyError) as e:
            raise AvatarEngineMismatch(
                f"avatar {avatar.avatar_id!r} has unreadable lite artifacts ({e}); preprocess it again"
            ) from e
        if len(bank.aperture) != len(avatar.frames):
            raise AvatarEngineMismatch(
                f"avatar {avatar.avatar_id!r}: bank has {len(bank.aperture)} frames, avatar {len(avatar.frames)}"
            )
        # An avatar prepared with a learned speaker model (until issue 26) has a speaker.npz too:
        # it is ignored, and the one mapping serves it like every other.
        return LiteRenderer(list(avatar.frames), np.asarray(avatar.landmarks, np.float32), bank, self.mapping)


def speaking_bank(landmarks: np.ndarray, audio: np.ndarray | None, fps: float,
                  mapping: GenericMapping = SHIPPED) -> tuple[MouthBank, dict[str, Any]]:
    """The bank of these frames, and how voiced openness is spread over the bank for this person.

    Both spreads (shape.py: by share, by rank) predict the frames' own filmed mouth from their own
    soundtrack; the ranked one is kept where it does clearly better (by RANK_MUST_WIN_BY), if the
    soundtrack is evidently their voice (own_voice.MIN_OWN_R). Neither has anything fitted to the
    clip but the bank's quantiles, so the choice is one bit. Measured over 24 splits of the
    ground-truth clips (docs/lite-engine.md), choosing this way beat either spread alone.

    The spreads are compared on what they spread, the hand-written openness: the learned opening
    moves either alike, and its small moves flipped the choice on splits where the two spreads
    score within the margin (docs/lite-engine.md, "A mapping learned across speakers").
    """
    bank = build_bank(landmarks)
    if audio is None:
        return bank, {}
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    mapping = replace(mapping, learned_weight=0.0)
    share_open, share_target = generic_shapes(bank, audio, fps, mapping)
    voiced = share_open > 0
    if int(voiced.sum()) < MIN_VOICED:
        return bank, {"spread": "share", "reason": "too little speech in the soundtrack"}
    ranked = bank.with_voiced(voiced)
    _, rank_target = generic_shapes(ranked, audio, fps, mapping)
    # The same A/V offset for both (the file's own), then r.
    k = av_offset(share_target, bank.aperture)
    r_share, r_rank = (shifted_r(t, bank.aperture, k) or 0.0 for t in (share_target, rank_target))
    facts = {"r_share": round(r_share, 3), "r_rank": round(r_rank, 3), "av_offset_frames": k}
    if r_share < MIN_OWN_R:  # not evidently their voice: nothing is learned from it (own_voice.py)
        return bank, {"spread": "share", "reason": NOT_THEIR_VOICE} | facts
    if r_rank > r_share + RANK_MUST_WIN_BY:
        return ranked, {"spread": "rank"} | facts
    return bank, {"spread": "share"} | facts


def generic_shapes(bank: MouthBank, audio: np.ndarray, fps: float,
             mapping: GenericMapping) -> tuple[np.ndarray, np.ndarray]:
    """(openness, target aperture) of the generic mapping on each of the bank's frames."""
    shapes = list(ShapeStream(audio, fps, len(bank), bank.shape_range(), mapping=mapping))
    return (np.array([s.openness for s in shapes], np.float32), np.array([s.aperture for s in shapes], np.float32))


def read_apertures(frames: list[np.ndarray]) -> np.ndarray:
    """(N,) inner-lip gap the face landmarker reads on each frame, NaN where it finds no face."""
    return mouth_aperture(detect_video(frames)[0])


def face_box_stats(landmarks: np.ndarray, bbox_shift: int) -> dict[str, Any]:
    """Median face box (landmark extent), moved down by `bbox_shift` px as the seed defines it."""
    lo, hi = landmarks.min(axis=1), landmarks.max(axis=1)  # (N, 2) each
    box = np.concatenate([lo, hi], axis=1) + np.array([0, bbox_shift, 0, bbox_shift])
    med = np.median(box, axis=0)
    return {
        "median_xyxy": [round(float(v), 1) for v in med],
        "width_px": {"min": round(float((box[:, 2] - box[:, 0]).min()), 1),
                     "max": round(float((box[:, 2] - box[:, 0]).max()), 1)},
        "bbox_shift": int(bbox_shift),
        "audio_rate": SAMPLE_RATE,
    }
