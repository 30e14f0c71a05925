"""bench.learned_mapping: the lite engine's learned opening, fitted on other speakers and scored
leaving each speaker out, and the coefficients it ships."""

from __future__ import annotations

import re

import numpy as np
import pytest

from bench import learned_mapping as lm
from musetalk_server.engines.lite.audio_features import MEL_BANDS
from musetalk_server.engines.lite.learned_opening import CONTEXT, LearnedOpening
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
    loud = lm.features(audio.astype(np.float32), 50)
    assert loud.shape == (50, (CONTEXT + 1) * MEL_BANDS)
    # dB under the speech level: 26 dB quieter reads the same, but for bands floored as silence.
    quiet = lm.features((0.05 * audio).astype(np.float32), 50)
    assert np.median(np.abs(quiet - loud)) < 0.1
    # The last block is the frame itself; the block before it is the frame before.
    own = slice(CONTEXT * MEL_BANDS, None)
    np.testing.assert_array_equal(loud[1:, own.start - MEL_BANDS:own.start], loud[:-1, own])


def test_the_ridge_recovers_a_linear_mouth():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 6))
    y = x @ np.array([1.0, -0.5, 0.0, 0.2, 0.0, 2.0]) + 0.01 * rng.standard_normal(400)
    model = lm.Ridge.fit(x, y, ridge=0.1)
    assert np.corrcoef(model.predict(x), y)[0, 1] > 0.999
    # The engine's form drops the offset and folds the standardising into the coefficients.
    opening = model.opening
    assert isinstance(opening, LearnedOpening) and len(opening.coefficients) == 6
    assert np.corrcoef(x @ np.array(opening.coefficients), y)[0, 1] > 0.999


def test_the_coefficients_print_as_the_module_holds_them():
    source = lm.coefficients_source(LearnedOpening((0.5, -1.25e-05, 3.0)), per_line=2)
    assert source == "COEFFICIENTS: tuple[float, ...] = (\n    0.5, -1.25e-05,\n    3.0,\n)"
    namespace: dict = {}
    exec(source, namespace)
    assert namespace["COEFFICIENTS"] == (0.5, -1.25e-05, 3.0)


@pytest.mark.slow
def test_two_speakers_each_scored_by_a_model_of_the_other(capsys):
    shared("vr_face1.mp4")
    shared("lp_d11.mp4")
    assert lm.main(["vr_face1", "lp_d11", "--detector", "facemesh"]) == 0
    out = capsys.readouterr().out
    for clip in ("vr_face1", "lp_d11"):
        line = re.search(rf"^{clip} \(learned from 1 clip of other speakers\): hand-written (-?[\d.]+), "
                         rf"with the learned opening (-?[\d.]+)$", out, re.M)
        assert line, out
        assert all(-1 <= float(v) <= 1 for v in line.groups())
    assert re.search(r"^shared tuning clips: mean r over 12 splits: hand-written", out, re.M), out
