"""The lite engine's learned opening: its features, its running moments, and how the shape stream
blends it into the hand-written target."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from musetalk_server.engines.lite.audio_features import MEL_BANDS, WINDOW, frame_features, mel_filters
from musetalk_server.engines.lite.learned_opening import (
    COEFFICIENTS,
    CONTEXT,
    FLOOR_DB,
    LearnedOpening,
    RunningMoments,
    context_features,
)
from musetalk_server.engines.lite.shape import SHIPPED, ShapeRange, ShapeStream, fade
from musetalk_server.media.frame_timing import SAMPLE_RATE

FPS = 25.0
RANGE = ShapeRange(closed=0.0, open=0.3, width_lo=0.9, width_hi=1.1, curve=tuple(np.linspace(0.0, 0.3, 11)))


def test_the_mel_filters_cover_100_to_8000_hz_in_rising_overlapping_bands():
    filters = mel_filters()
    assert filters.shape == (MEL_BANDS, WINDOW // 2 + 1)
    hz = np.arange(WINDOW // 2 + 1) * SAMPLE_RATE / WINDOW
    peaks = hz[filters.argmax(axis=1)]
    assert np.all(np.diff(peaks) > 0) and 100 < peaks[0] < 300 and 6000 < peaks[-1] < 8000
    covered = filters.sum(axis=0) > 0
    assert covered[(hz > 130) & (hz < 7800)].all() and not covered[hz < 90].any() and not covered[hz > 8010].any()
    # Equal width in pitch: the bands widen with frequency.
    widths = (filters > 0).sum(axis=1)
    assert widths[-1] > 5 * widths[0]


def test_context_features_stack_the_earlier_frames_under_the_level_and_floor_silence():
    mel = np.arange(6 * MEL_BANDS, dtype=np.float32).reshape(6, MEL_BANDS) - 100.0
    x = context_features(mel, level_db=-20.0)
    assert x.shape == (6 - CONTEXT, (CONTEXT + 1) * MEL_BANDS)
    own = x[:, CONTEXT * MEL_BANDS:]
    np.testing.assert_array_equal(own, np.maximum(mel[CONTEXT:] + 20.0, -FLOOR_DB))
    np.testing.assert_array_equal(x[1:, :MEL_BANDS * CONTEXT], x[:-1, MEL_BANDS:])  # oldest first
    assert x.min() == -FLOOR_DB


def test_the_running_moments_are_the_mean_and_spread_of_everything_added():
    rng = np.random.default_rng(1)
    values = rng.normal(3.0, 2.0, 500)
    m = RunningMoments()
    assert (m.mean, m.std) == (0.0, 0.0)
    for chunk in np.array_split(values, 7):
        m.add(chunk)
    assert m.count == 500
    assert np.isclose(m.mean, values.mean()) and np.isclose(m.std, values.std())


def test_the_shipped_coefficients_are_fitted():
    assert len(COEFFICIENTS) == (CONTEXT + 1) * MEL_BANDS
    assert np.abs(COEFFICIENTS).max() > 0, "fit them: python -m bench.learned_mapping ... --coefficients"


def _speech(seconds: float, seed: int) -> np.ndarray:
    """Syllables of harmonic sound whose brightness changes from one to the next, with pauses."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    out = np.zeros_like(t)
    for start in np.arange(0.2, seconds - 0.4, 0.35):
        on = (t >= start) & (t < start + 0.22)
        f0, bright = rng.uniform(100, 180), rng.uniform(0.2, 1.0)
        tone = sum(bright ** k * np.sin(2 * np.pi * f0 * (k + 1) * t[on]) for k in range(12))
        out[on] = 0.1 * tone
    return (out + 1e-4 * rng.standard_normal(len(t))).astype(np.float32)


def test_the_learned_opening_moves_voiced_frames_only_and_weight_zero_is_the_hand_written_target():
    audio, n = _speech(4.0, 2), 100
    # A learned opening that reads only the highest band: a bright syllable opens more.
    bright = LearnedOpening(tuple(1.0 if k == (CONTEXT + 1) * MEL_BANDS - 1 else 0.0
                                  for k in range((CONTEXT + 1) * MEL_BANDS)))
    hand = list(ShapeStream(audio, FPS, n, RANGE, mapping=replace(SHIPPED, learned_weight=0.0, learned=bright)))
    blended = list(ShapeStream(audio, FPS, n, RANGE, mapping=replace(SHIPPED, learned=bright)))
    # The openness (and so the pauses, the spread and the width) is the hand-written one's.
    assert [s.openness for s in hand] == [s.openness for s in blended]
    assert [s.width for s in hand] == [s.width for s in blended]
    voiced = np.array([s.openness > 0 for s in hand])
    moved = np.array([b.aperture - h.aperture for h, b in zip(hand, blended, strict=True)])
    assert voiced.sum() > 30 and (~voiced).sum() > 10
    assert (moved[~voiced] == 0).all() and all(s.aperture == RANGE.closed for s, v in zip(blended, voiced, strict=True) if not v)
    assert np.abs(moved[voiced]).max() > 0.01
    # Within the person's openings, and moved up where the frame is brighter than this voice's usual.
    assert all(RANGE.closed <= s.aperture <= RANGE.open for s in blended)
    top = frame_features(audio, FPS, 0, n).mel[:, -1]
    assert np.corrcoef(moved[voiced], top[voiced])[0, 1] > 0.5
    # At most LEARNED_WEIGHT of the person's spread per spread of the prediction (a z of 3 is rare).
    assert np.abs(moved).max() <= SHIPPED.learned_weight * RANGE.spread * 4


def test_the_learned_opening_waits_for_a_second_of_voice():
    """Live, the first voiced frames would give its mean and spread from a handful of values."""
    audio = _speech(0.8, 3)  # about 12 voiced frames
    n = int(0.8 * FPS)
    hand = [s.aperture for s in ShapeStream(audio, FPS, n, RANGE, mapping=replace(SHIPPED, learned_weight=0.0))]
    assert [s.aperture for s in ShapeStream(audio, FPS, n, RANGE)] == hand


def test_the_learned_opening_fades_with_the_sound_as_the_mouth_closes():
    """Over the last FADE_DB above a pause the hand-written opening fades to shut; the learned
    opening's shift fades with it, so it cannot hold open a mouth that is closing."""
    t = np.arange(int(6.0 * SAMPLE_RATE)) / SAMPLE_RATE
    rng = np.random.default_rng(4)
    audio = np.zeros_like(t)
    for start in np.arange(0.2, 5.4, 0.8):  # syllables whose sound dies away over 0.4 s
        on = (t >= start) & (t < start + 0.6)
        f0, bright = rng.uniform(100, 180), rng.uniform(0.2, 1.0)
        envelope = np.minimum(1.0, np.exp(-(t[on] - start - 0.2) / 0.06))
        audio[on] = 0.1 * envelope * sum(bright ** k * np.sin(2 * np.pi * f0 * (k + 1) * t[on]) for k in range(12))
    audio = (audio + 1e-5 * rng.standard_normal(len(t))).astype(np.float32)
    n = int(6.0 * FPS)
    bright = LearnedOpening(tuple(1.0 if k == (CONTEXT + 1) * MEL_BANDS - 1 else 0.0
                                  for k in range((CONTEXT + 1) * MEL_BANDS)))
    hand = list(ShapeStream(audio, FPS, n, RANGE, mapping=replace(SHIPPED, learned_weight=0.0, learned=bright)))
    blended = list(ShapeStream(audio, FPS, n, RANGE, mapping=replace(SHIPPED, learned=bright)))
    moved = np.abs([b.aperture - h.aperture for h, b in zip(hand, blended, strict=True)])
    loudness = frame_features(audio, FPS, 0, n).loudness
    faded = fade(loudness, float(np.percentile(loudness, 95)))
    voiced = np.array([s.openness > 0 for s in hand])
    full, closing = voiced & (faded == 1.0), voiced & (faded > 0) & (faded < 0.25)
    assert full.sum() > 20 and closing.sum() >= 5
    assert moved[full].max() > 0.01
    assert moved[closing].max() < 0.5 * moved[full].max()  # without the fade: as large (0.062 against 0.063)
