"""The `musetalk` engine: MuseTalk v1.5 (or v1.0) on upstream's weights.

prepare (once per avatar): landmarks -> face box (+10 px below the chin in v1.5) -> 256² crop ->
    [masked | reference] VAE latents, and the blend material (square + blurred jaw mask) per
    frame, all cached in the avatar's engine folder under a version stamp.
render (per request): audio -> whisper windows (segment by segment) -> + PE -> UNet at t = 0 ->
    VAE decode -> uint8 on the device -> paste into the ping-pong background frame.

Decisions on upstream's quirks (spec §9), each also noted where it is implemented:
1. Faceless frames: preprocessing gives them the nearest face's landmarks (avatars/preprocess.py)
   so every frame has a box, a latent and a mask, and indices never shift (fixed).
2. Realtime writes T-1 frames: we yield all T = frame_count(samples, fps) (fixed).
3. y2 clamped with the last frame's height: each box is clipped to its own frame (fixed).
4. Posterior sampling: the posterior mean, so preparing twice gives the same avatar (fixed; models.py).
5. PE at inference but not in training: added, as every upstream entry point does (kept).
6. Double encoding, no -shortest: not ours; media/mp4.py encodes once and muxes (fixed).
7. int(fps) for audio indexing: we index with the float fps the timeline uses, so 29.97 fps
   output stays in sync; identical to upstream at integer rates such as 25 (fixed; audio.py).
8. Blur k = 2*floor(0.025*2s)+1 (offline) vs 2*floor(0.05*2s)+1 (realtime): masks are made once
   per avatar frame, as upstream's realtime avatars are, so the realtime (softer) kernel is kept
   (blend.DEFAULT_BLUR).
9. 2N PNGs and double parsing: each unique frame is parsed and stored once; the cycle is index
   arithmetic (media/frame_timing.pingpong_index) (fixed).
10. get_bbox_range's second detection pass: the range is computed from the same landmarks
   (`prepare`, into engine_info) (fixed).
11. Script defaults: the layout is detected from the model dir, v1.5 first (weights.detect_layout).
Also: upstream v1.5 scripts pin bbox_shift to 0; like its gradio app we honour the avatar's
bbox_shift (default 0, i.e. upstream's behaviour).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import torch

from ...errors import AvatarEngineMismatch, InvalidInput, NoFaceDetected
from ...face.landmarks import MESH_POINTS, to_ibug68
from ...media.frame_timing import frame_count, pingpong_index
from ..base import AvatarFrames, Engine, FrameSession, LoadedAvatar, Renderer
from . import blend
from .audio import TOKENS, SegmentedWindows, encode_segment, positional_encoding
from .batching import DeviceBatcher
from .crop import EXTRA_MARGIN_V15, Box, bbox_shift_range, blend_square, crop_face, crop_square, face_box
from .models import MuseTalkModels, encode_latents, generate
from .weights import V15, load_models

__all__ = ["MuseTalkEngine", "MuseTalkRenderer", "ENGINE_NAME", "ARTIFACT_VERSION"]

ENGINE_NAME = "musetalk"
ARTIFACT_VERSION = 1  # bump when the files below change meaning
STAMP_FILE = "musetalk.json"
LATENTS_FILE = "latents.npy"  # (N, 8, 32, 32) float32
BOXES_FILE = "boxes.npy"  # (N, 4) int32 face boxes x1, y1, x2, y2 (margin included)
SQUARES_FILE = "squares.npy"  # (N, 4) int32 blend squares (may run past the frame)
BATCH_WAIT_FRACTION = 0.25  # of a frame time: how long a device call waits for other streams' frames
MASKS_FILE = "masks.npz"  # N blurred (2s, 2s) uint8 blend masks, "m00000"...


def _mask_key(i: int) -> str:
    return f"m{i:05d}"


class MuseTalkRenderer(Renderer):
    """One prepared avatar, resident: latents on the device, frames and masks on the host."""

    def __init__(self, engine: MuseTalkEngine, frames: list[np.ndarray], latents: torch.Tensor,
                 boxes: np.ndarray, squares: np.ndarray, masks: list[np.ndarray]) -> None:
        self.engine, self.frames, self.latents = engine, frames, latents
        self.boxes, self.squares, self.masks = boxes, squares, masks

    def render(self, audio: np.ndarray, fps: float, cancel: threading.Event | None = None) -> Iterator[np.ndarray]:
        # 1. check inputs
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if not fps > 0:
            raise InvalidInput(f"fps must be positive, got {fps}")
        # Quirk §9.2: upstream's realtime loop stops at T-1 frames; we yield all T.
        n_out, n_src = frame_count(len(audio), fps), len(self.frames)
        # 2. audio windows, encoding each 30 s segment when the first frame needs it
        windows = self.engine.windows(audio, fps)
        # 3. chunks: tokens + PE -> UNet -> decode (one device call shared with other streams) -> paste
        batcher, wait_s = self.engine.batcher, BATCH_WAIT_FRACTION / fps
        with batcher.streaming():
            start = 0
            while start < n_out:
                if cancel is not None and cancel.is_set():
                    return
                frames = range(start, min(start + batcher.chunk(), n_out))
                start = frames.stop
                src = [pingpong_index(i, n_src) for i in frames]
                with torch.inference_mode():
                    tokens = windows(frames)  # (b, 50, 384)
                faces = self.engine.faces(tokens, self.latents[src], wait_s=wait_s)  # (b, 256, 256, 3) uint8 BGR
                for k, face in zip(src, faces, strict=True):
                    if cancel is not None and cancel.is_set():
                        return
                    yield blend.paste_face(self.frames[k], face, self.box(k), self.square(k), self.masks[k])

    def session(self, fps: float) -> FrameSession:
        from .live import MuseTalkSession

        return MuseTalkSession(self, fps)

    def box(self, k: int) -> Box:
        """Face box of avatar frame k (x1, y1, x2, y2), margin included."""
        return _xyxy(self.boxes[k])

    def square(self, k: int) -> Box:
        """Blend square of avatar frame k; `masks[k]` covers it."""
        return _xyxy(self.squares[k])


class MuseTalkEngine(Engine):
    """MuseTalk with models loaded once on the device the caller picked."""

    name: ClassVar[str] = ENGINE_NAME
    artifact_version: ClassVar[int] = ARTIFACT_VERSION

    def __init__(self, *, model_dir: Path | None = None, device: str = "cpu", batch_size: int = 8,
                 models: MuseTalkModels | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if models is None:
            if model_dir is None:
                raise ValueError("MuseTalkEngine needs model_dir or models")
            models = load_models(Path(model_dir), device)
        self.models, self.device, self.dtype = models, models.device, models.dtype
        self.batch_size = batch_size
        self.batcher = DeviceBatcher(self._generate, batch_size)
        width = int(models.unet.config.cross_attention_dim)
        self.pe = positional_encoding(TOKENS, width).to(device=self.device, dtype=self.dtype)  # (50, 384)

    @property
    def version(self) -> str:
        return self.models.version

    @property
    def blend_mask(self) -> str:
        return "bisenet" if self.models.bisenet is not None else "landmarks"

    def describe(self) -> dict[str, Any]:
        return {
            "loaded": True,
            "device": self.device,
            "engine": self.name,
            "version": self.version,
            "dtype": str(self.dtype).removeprefix("torch."),
            "blend_mask": self.blend_mask,
            "batch_size": self.batch_size,
            "artifact_version": self.artifact_version,
        }

    # --- the two model steps, shared by render and the benches -----------------------------

    def windows(self, audio: np.ndarray, fps: float) -> SegmentedWindows:
        m = self.models

        def encode(samples: np.ndarray) -> torch.Tensor:
            with torch.inference_mode():
                return encode_segment(samples, m.extractor, m.whisper, self.device, self.dtype)

        return SegmentedWindows(audio, fps, encode, device=self.device, dtype=self.dtype, width=self.pe.shape[1])

    def faces(self, tokens: torch.Tensor, latents: torch.Tensor, wait_s: float = 0.0) -> np.ndarray:
        """(B, 50, 384) tokens without PE + (B, 8, 32, 32) latents -> (B, 256, 256, 3) uint8 BGR.

        One device call at a time, carrying the frames of every stream that has some due (up to
        `batch_size`, after waiting at most `wait_s` for them): N streams cost one large call
        and one batch's activations, not N small ones (batching.py).
        """
        return self.batcher.faces(tokens, latents, wait_s)

    @property
    def on_device_call(self) -> Callable[[int, float], None] | None:
        """Told (frames, seconds) after each device call: the scheduler's measure of the device."""
        return self.batcher.on_call

    @on_device_call.setter
    def on_device_call(self, report: Callable[[int, float], None] | None) -> None:
        self.batcher.on_call = report

    def _generate(self, tokens: torch.Tensor, latents: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            rgb = generate(self.models.unet, self.models.vae, latents, tokens + self.pe)
            return rgb.flip(-1).cpu().numpy()  # RGB -> BGR on the device, then 1 byte/px to the host

    # --- preparation ---------------------------------------------------------------------

    def prepare(self, avatar: AvatarFrames, bbox_shift: int, out_dir: Path) -> dict[str, Any]:
        # 1. check inputs
        points = np.asarray(avatar.landmarks, dtype=np.float32)
        n = len(avatar.frames)
        if n == 0 or points.shape != (n, MESH_POINTS, 2):
            raise InvalidInput(f"need one (478, 2) landmark set per frame, got {points.shape} for {n} frames")
        # 2. face boxes: upstream geometry on the iBUG-68 points; v1.5 adds 10 px below the chin
        margin = EXTRA_MARGIN_V15 if self.version == V15 else 0
        lm68 = to_ibug68(points)  # (N, 68, 2)
        boxes = np.array([_frame_box(i, lm68[i], points[i], bbox_shift, avatar.frames[i].shape[:2], margin)
                          for i in range(n)], dtype=np.int32)  # (N, 4)
        # 3. latents, a batch of crops at a time
        latents = self._latents(avatar.frames, boxes)  # (N, 8, 32, 32)
        # 4. blend material: square, jaw mask, blur
        squares = np.array([blend_square(_xyxy(b)) for b in boxes], dtype=np.int32)
        masks = [self._mask(avatar.frames[i], points[i], boxes[i], squares[i]) for i in range(n)]
        # 5. write, stamp last
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        np.save(out_dir / LATENTS_FILE, latents)
        np.save(out_dir / BOXES_FILE, boxes)
        np.save(out_dir / SQUARES_FILE, squares)
        named: dict[str, Any] = {_mask_key(i): m for i, m in enumerate(masks)}
        np.savez_compressed(out_dir / MASKS_FILE, **named)
        stamp = {"engine": self.name, "artifact_version": self.artifact_version, "version": self.version,
                 "blend_mask": self.blend_mask, "frames": n, "extra_margin": margin, "bbox_shift": int(bbox_shift)}
        (out_dir / STAMP_FILE).write_text(json.dumps(stamp))
        widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        return {
            "version": self.version,
            "blend_mask": self.blend_mask,
            "extra_margin": margin,
            "latents": "posterior mean",
            "bbox_shift_range": list(bbox_shift_range(lm68)),  # as upstream prints it
            "face_box": {
                "median_xyxy": [int(v) for v in np.median(boxes, axis=0)],
                "width_px": {"min": int(widths.min()), "max": int(widths.max())},
                "height_px": {"min": int(heights.min()), "max": int(heights.max())},
            },
        }

    def _latents(self, frames: Sequence[np.ndarray], boxes: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(frames), self.batch_size):
            idx = range(start, min(start + self.batch_size, len(frames)))
            crops = np.stack([crop_face(frames[i], _xyxy(boxes[i])) for i in idx])  # (B, 256, 256, 3)
            with torch.inference_mode():
                out.append(encode_latents(self.models.vae, crops, self.device, self.dtype).float().cpu().numpy())
        return np.concatenate(out)

    def _mask(self, frame: np.ndarray, points: np.ndarray, box: np.ndarray, square: np.ndarray) -> np.ndarray:
        """The blurred (2s, 2s) uint8 blend mask of one frame."""
        box_t, square_t = _xyxy(box), _xyxy(square)
        if self.models.bisenet is None:
            region = blend.landmark_jaw_mask(points, square_t)  # (2s, 2s)
        else:
            from .bisenet import LOWER_LIP, MOUTH, SKIN, UPPER_LIP, parse

            labels = parse(self.models.bisenet, cv2.cvtColor(crop_square(frame, square_t), cv2.COLOR_BGR2RGB))
            if self.version == V15:
                region = blend.jaw_parse_mask(labels, blend.CHEEK_WIDTH_V15, blend.CHEEK_WIDTH_V15)  # (512, 512)
            else:  # v1.0's `raw` mode: skin, mouth and both lips
                region = np.where(np.isin(labels, (SKIN, MOUTH, UPPER_LIP, LOWER_LIP)), 255, 0).astype(np.uint8)
        return blend.blend_material(frame.shape[:2], box_t, square_t, region)

    # --- loading -------------------------------------------------------------------------

    def open(self, avatar: LoadedAvatar) -> Renderer:
        folder = avatar.engine_dir
        stamp = self._stamp(avatar)
        try:
            latents = np.load(folder / LATENTS_FILE)
            boxes = np.load(folder / BOXES_FILE)
            squares = np.load(folder / SQUARES_FILE)
            with np.load(folder / MASKS_FILE) as z:
                masks = [z[_mask_key(i)] for i in range(len(boxes))]
        except (OSError, ValueError, KeyError) as e:
            raise AvatarEngineMismatch(f"avatar {avatar.avatar_id!r}: musetalk artifacts are unreadable ({e}); "
                                       "preprocess it again with overwrite=true") from e
        n = len(avatar.frames)
        if not (len(latents) == len(boxes) == len(squares) == n == stamp.get("frames")):
            raise AvatarEngineMismatch(f"avatar {avatar.avatar_id!r}: artifacts for {len(latents)} frames, "
                                       f"the avatar has {n}; preprocess it again with overwrite=true")
        lat = torch.from_numpy(latents).to(device=self.device, dtype=self.dtype)  # resident (N, 8, 32, 32)
        return MuseTalkRenderer(self, list(avatar.frames), lat, boxes, squares, masks)

    def _stamp(self, avatar: LoadedAvatar) -> dict[str, Any]:
        try:
            stamp = json.loads((avatar.engine_dir / STAMP_FILE).read_text())
        except (OSError, ValueError) as e:
            raise AvatarEngineMismatch(f"avatar {avatar.avatar_id!r} has no musetalk engine artifacts; "
                                       "preprocess it with the musetalk engine") from e
        # The engine and artifact version were checked on the manifest (avatars/cache.py); the
        # stamp holds what only this engine knows: which MuseTalk the boxes and masks are for.
        if stamp.get("version") != self.version:
            raise AvatarEngineMismatch(
                f"avatar {avatar.avatar_id!r} was prepared for MuseTalk {stamp.get('version')}, this server runs "
                f"{self.version} (different face boxes and masks); preprocess it again with overwrite=true")
        return stamp


def _frame_box(i: int, lm68: np.ndarray, points: np.ndarray, bbox_shift: int, frame_hw: tuple[int, int],
               margin: int) -> Box:
    """Frame i's face box; a frame whose box comes out empty is named in the error."""
    try:
        return face_box(lm68, bbox_shift, frame_hw, extra_margin=margin, points478=points)
    except NoFaceDetected as e:
        raise NoFaceDetected(f"frame {i}: {e.detail}") from e


def _xyxy(row: np.ndarray) -> Box:
    """An (x1, y1, x2, y2) row of a cached int32 array as the plain-int tuple the geometry takes."""
    return tuple(int(v) for v in row)  # type: ignore[return-value]
