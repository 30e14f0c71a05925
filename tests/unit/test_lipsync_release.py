"""bench.lipsync_splits --release: another checkout's engine on every split, in its own process."""

from __future__ import annotations

import re

import pytest

from bench import lipsync_splits
from bench.lipsync_eval import ROOT
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
def test_this_checkout_as_its_own_release_scores_the_same_on_every_split(capsys):
    # Without the soundtrack on both sides, the subprocess renders exactly what the in-process
    # path does: so the splits, their audio and their order reach the other process intact.
    pytest.importorskip("dlib", reason="the eval extra (dlib) reads the renders")
    shared("lp_d12.mp4")
    assert lipsync_splits.main(["lp_d12", "--release", str(ROOT), "--spread", "share"]) == 0
    out = capsys.readouterr().out
    clip = re.search(r"lp_d12 \(\d+ frames, offset None\): this checkout (\S+), release (\S+),", out)
    assert clip is not None, out
    assert clip.group(1) == clip.group(2)
    assert "better/same/worse by 0.02: 0/6/0, worst +0.000" in out
