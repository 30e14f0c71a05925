"""bench.learned_mapping: a ridge mapping learned from other speakers, scored leaving each speaker out."""

from __future__ import annotations

import re

import numpy as np
import pytest

from bench import learned_mapping as lm
from testkit.media import shared


def test_one_speaker_is_refused(capsys):
    with pytest.raises(SystemExit) as stop:
        lm.main(["vr_face1", "vr_face2", "--speaker", "vr_face1,vr_face2"])
    assert stop.value.code == 2
    assert "needs clips of at least two speakers" in capsys.readouterr().err


def test_a_speaker_group_names_only_given_clips(capsys):
    with pytest.raises(SystemExit) as stop:
        lm.main(["vr_face1", "lp_d11", "--speaker", "lp_d11,lp_d12"])
    assert stop.value.code == 2
    assert "--speaker names clips not given: lp_d12" in capsys.readouterr().err


def test_clips_of_one_person_are_one_speaker():
    speaker = lm.speakers_of(["a.mp4", "b.mp4", "c"], [["a.mp4", "b.mp4"]])
    assert speaker == {"a.mp4": "a.mp4", "b.mp4": "a.mp4", "c": "c"}


def test_features_ignore_the_recording_level_and_stack_the_neighbours():
    rng = np.random.default_rng(3)
    t = np.arange(16000 * 2) / 16000
    # Bursts of a harmonic tone in noise: speech-like loudness changes over the frames.
    audio = (np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 3 * t) > 0) + 0.01 * rng.standard_normal(len(t)))
    features = lm.Features(mels=8, context=2)
    loud = features(audio.astype(np.float32), 50)
    assert loud.shape == (50, 8 * 5)
    np.testing.assert_allclose(features((0.05 * audio).astype(np.float32), 50), loud, atol=0.02)
    # The middle block is the frame itself; the block before it is the frame before.
    np.testing.assert_array_equal(loud[1:, 8:16], loud[:-1, 16:24])


def test_the_ridge_recovers_a_linear_mouth():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 6))
    y = x @ np.array([1.0, -0.5, 0.0, 0.2, 0.0, 2.0]) + 0.01 * rng.standard_normal(400)
    model = lm.Ridge.fit(x, y, ridge=0.1)
    assert np.corrcoef(model.predict(x), y)[0, 1] > 0.999


@pytest.mark.slow
def test_two_speakers_each_scored_by_a_model_of_the_other(capsys):
    shared("vr_face1.mp4")
    shared("lp_d11.mp4")
    assert lm.main(["vr_face1", "lp_d11", "--detector", "facemesh", "--mels", "8", "--context", "1"]) == 0
    out = capsys.readouterr().out
    for clip in ("vr_face1", "lp_d11"):
        line = re.search(rf"^{clip} \(learned from 1 clips of other speakers\): hand-written (-?[\d.]+), "
                         rf"learned (-?[\d.]+)$", out, re.M)
        assert line, out
        assert all(-1 <= float(v) <= 1 for v in line.groups())
    assert re.search(r"^shared tuning clips: mean r over 12 splits: hand-written", out, re.M), out
