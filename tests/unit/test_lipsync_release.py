"""bench.lipsync_splits --release: another checkout's engine on every split, in its own process."""

from __future__ import annotations

import numpy as np
import pytest

from bench import lipsync_eval as ev
from bench import lipsync_splits
from bench.lipsync_eval import ROOT
from testkit.frame_probe import MeanLevel
from testkit.media import shared


def test_a_folder_without_a_lite_engine_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        lipsync_splits.main(["vr_face1", "--release", str(tmp_path)])
    assert stop.value.code == 2
    assert f"--release: no lite engine under {tmp_path}" in capsys.readouterr().err


def test_the_release_is_read_with_dlib_only(capsys):
    with pytest.raises(SystemExit) as stop:
        lipsync_splits.main(["vr_face1", "--release", str(ROOT), "--detector", "facemesh"])
    assert stop.value.code == 2
    assert "--release reads the renders with dlib" in capsys.readouterr().err


@pytest.mark.slow
def test_the_release_process_renders_what_this_one_renders(tmp_path):
    # This checkout as its own release: the subprocess must render each split exactly as the
    # in-process path does (both without the soundtrack), so the splits, their audio and their
    # order reach the other process intact. A model-free reader stands in for dlib.
    shared("lp_d12.mp4")
    probe = ev.Measure(MeanLevel().apertures, 0.0)
    clip = ev.tuning_clip("lp_d12", probe, keep_frames=True)
    here = lipsync_splits.Rendered(probe, tmp_path / "here")
    there = lipsync_splits.Release(ROOT, tmp_path, reader="testkit.frame_probe:MeanLevel")
    share = lipsync_splits.Variant(spread="share")
    for avatar, drive in ev.tuning_splits(len(clip.filmed)):
        shown = there(clip, avatar, drive, share)
        assert drive.stop - drive.start - 1 <= len(shown) <= drive.stop - drive.start  # the audio's whole frames
        np.testing.assert_array_equal(shown, here(clip, avatar, drive, share))
