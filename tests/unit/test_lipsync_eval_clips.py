"""bench.lipsync_eval reads any talking clip by path the way it reads a shared clip by name."""

from pathlib import Path

import numpy as np
import pytest

from bench import lipsync_eval as ev
from musetalk_server.media.frame_timing import SAMPLE_RATE
from testkit.mediatools import write_offset_av


def test_a_clip_by_name_is_the_shared_file():
    assert ev.clip_path("vr_face1") == ev.MEDIA / "vr_face1.mp4"
    assert ev.clip_path(Path("/elsewhere/talk.mov")) == Path("/elsewhere/talk.mov")


def test_load_clip_takes_a_path_and_puts_its_sound_under_frame_0(tmp_path):
    # The picture starts 0.4 s after the sound, as a camera file may: the 1.0 s burst must land
    # 0.6 s into the soundtrack, as the service's preprocess puts it.
    path = write_offset_av(tmp_path / "talk.mp4", video_start=0.4, audio_start=0.0, burst_at=1.0)
    frames, audio = ev.load_clip(path)
    assert len(frames) == 50 and frames[0].shape == (64, 64, 3)
    assert len(audio) == round(len(frames) / ev.FPS * SAMPLE_RATE)
    onset = np.flatnonzero(np.abs(audio) > 0.05)[0] / SAMPLE_RATE
    assert onset == pytest.approx(0.6, abs=0.02)
