"""Preprocess keeps the frames from the first face to the last, and its soundtrack with them."""

from __future__ import annotations

import numpy as np
import pytest

from musetalk_server.avatars.preprocess import faceless_ends_cut, fill_missing
from musetalk_server.errors import NoFaceDetected
from musetalk_server.media.video import VideoClip


def clip_of(n: int, start_s: float = 0.3) -> VideoClip:
    frames = [np.full((8, 8, 3), i, np.uint8) for i in range(n)]
    return VideoClip(frames, 25.0, 25.0, n, n / 25.0, start_s=start_s)


def test_the_ends_without_a_face_are_cut_and_the_soundtrack_follows():
    found = np.array([False] * 5 + [True, False, True, True, True, True] + [False] * 3)
    points = np.arange(14, dtype=np.float32)[:, None, None] * np.ones((1, 478, 2), np.float32)
    clip, kept_points, kept_found, cut = faceless_ends_cut(clip_of(14), points, found)
    assert cut == {"start": 5, "end": 3} and len(clip.frames) == len(kept_points) == len(kept_found) == 6
    assert int(clip.frames[0][0, 0, 0]) == 5 and kept_found.tolist() == [True, False, True, True, True, True]
    # Frame k is shown at start_s + k / fps: the kept first frame's instant is where the audio starts.
    assert clip.start_s == pytest.approx(0.3 + 5 / 25)
    # What was kept is 6 frames long, in time and in source frames, not the 14 filmed.
    assert clip.duration_s == pytest.approx(6 / 25) and clip.source_frames == 6
    # A gap inside stays, and shows its nearest frame with a face (the earlier one, on a tie).
    shown, missing = fill_missing(kept_points, kept_found)
    assert missing == [1] and shown.tolist() == [0, 0, 2, 3, 4, 5]


def test_a_clip_with_a_face_everywhere_is_left_as_it_is():
    clip = clip_of(6)
    found = np.ones(6, bool)
    points = np.zeros((6, 478, 2), np.float32)
    assert faceless_ends_cut(clip, points, found)[0] is clip


def test_no_face_at_all_and_too_many_gaps_inside_say_so():
    nowhere = np.zeros(4, bool)
    clip = clip_of(4)
    kept, points, found, cut = faceless_ends_cut(clip, np.zeros((4, 478, 2), np.float32), nowhere)
    assert kept is clip and cut == {"start": 0, "end": 0}
    with pytest.raises(NoFaceDetected, match="no face detected in frame 0"):
        fill_missing(points, found)
    found = np.array([True, False, False, False, True, True, True, True, True, True])
    with pytest.raises(NoFaceDetected, match=r"3 of 10, counted from the first frame with a face to the last\); "
                                             r"the face must be visible in at least 80 % of them"):
        fill_missing(np.zeros((10, 478, 2), np.float32), found)
