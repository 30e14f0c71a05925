"""The lite engine's mouth pieces on their own: shutting and opening lips by warping, which
mouths an avatar lacks, and shut mouths in pauses."""

from __future__ import annotations

import numpy as np

from musetalk_server.engines.lite.audio_features import MEL_BANDS, FrameFeatures
from musetalk_server.engines.lite.bank import MouthBank, shut_candidates
from musetalk_server.engines.lite.coverage import OPEN_ENOUGH, WIDE_HALF_GAP, animation_facts, narrowed, plan_mouths
from musetalk_server.engines.lite.geometry import mouth_aperture
from musetalk_server.engines.lite.live import lookahead_s
from musetalk_server.engines.lite.shape import FADE_DB, SHIPPED, SILENCE_DB, ShapeRange, ShapeStream, openness
from musetalk_server.engines.lite.synth import close_lips, open_lips, raise_jaw
from musetalk_server.face.landmarks import LIPS_INNER_LOWER, LIPS_INNER_UPPER
from musetalk_server.media.frame_timing import SAMPLE_RATE

FPS = 25.0
CHIN = 152


def open_mouth_face(gap: float = 12.0) -> tuple[np.ndarray, np.ndarray]:
    """A textured 256x256 frame and the landmarks the warp reads: eyes, nose, chin, lips `gap` px apart."""
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)
    pts = np.zeros((478, 2), np.float32)
    pts[33], pts[263], pts[4], pts[152] = (78, 90), (178, 90), (128, 130), (128, 230)
    pts[61], pts[291] = (98, 170), (158, 170)
    xs = np.linspace(98, 158, len(LIPS_INNER_UPPER))
    bulge = np.sin(np.linspace(0, np.pi, len(xs))) * gap / 2
    pts[list(LIPS_INNER_UPPER)] = np.stack([xs, 170 - bulge], 1)
    pts[list(LIPS_INNER_LOWER)] = np.stack([xs[::-1], 170 + bulge[::-1]], 1)
    return frame, pts


def test_close_lips_shuts_the_gap_and_leaves_the_upper_face_alone():
    frame, pts = open_mouth_face()
    assert mouth_aperture(pts) > 0.1
    out, moved = close_lips(frame, pts)
    assert mouth_aperture(moved) < 0.01
    assert np.array_equal(out[:120], frame[:120]), "eyes and forehead must not move"
    assert not np.array_equal(out[160:180], frame[160:180]), "the lips must move"
    assert np.allclose(moved[[33, 263, 4]], pts[[33, 263, 4]])


def test_open_lips_drops_the_lower_lip_into_a_dark_gap_and_leaves_the_upper_face_alone():
    frame, pts = open_mouth_face(gap=0.0)
    frame[150:250] = 200  # a plain pale lower face, so the cavity's darkness is plain to see
    pts[CHIN] = (128, 215)
    out, moved = open_lips(frame, pts, 0.12)
    assert abs(mouth_aperture(moved) - 0.12) < 0.005
    assert np.array_equal(out[:160], frame[:160]), "the upper lip, nose and eyes must not move"
    assert np.allclose(moved[[33, 263, 4, 13]], pts[[33, 263, 4, 13]])
    assert moved[CHIN, 1] > pts[CHIN, 1] + 5, "the chin drops with the jaw"
    gap = out[172:180, 120:137].astype(int)
    assert gap.mean() < 80, "between the lips: the dark inner mouth"
    assert gap.mean() > 5, "shaded from the lips' colour, not black"


def test_open_lips_shows_teeth_only_from_a_mouth_that_showed_them():
    frame, pts = open_mouth_face(gap=0.0)
    frame[150:250] = 200
    donor, donor_pts = open_mouth_face(gap=12.0)
    donor[160:185, 90:170] = (250, 250, 250)  # white teeth in the donor's open mouth
    dark, _ = open_lips(frame, pts, 0.12)
    teeth, _ = open_lips(frame, pts, 0.12, donor=(donor, donor_pts))
    under_lip = (slice(171, 174), slice(122, 134))  # just under the (unmoved) upper lip's middle
    assert dark[under_lip].mean() < 80 and teeth[under_lip].mean() > 200


def test_a_mouth_that_never_opens_gets_openings_and_says_so():
    def bank(aperture: np.ndarray) -> MouthBank:
        n = len(aperture)
        return MouthBank(aperture=aperture.astype(np.float32), width=np.full(n, 0.5, np.float32),
                         pose=np.zeros((n, 2), np.float32))

    talking = bank(np.linspace(0.0, 0.2, 50))
    assert plan_mouths(talking).openings == () and animation_facts(talking, plan_mouths(talking))["status"] == "filmed"
    still = bank(np.array([0.005]))
    plan = plan_mouths(still)
    assert plan.open_from == (0,) and len(plan.openings) >= 4 and max(plan.openings) > OPEN_ENOUGH
    assert plan.donor is None, "no teeth were shown, none are lent"
    facts = animation_facts(still, plan)
    assert facts["status"] == "synthesised" and facts["open"] == "synthesised" and not facts["teeth"]
    curve = plan.shape_range(still).curve
    assert curve[0] <= 0.005 and curve[-1] == max(plan.openings), "openness spans the made openings"
    mid_word = bank(np.full(20, 0.15))  # open in every frame: warped shut and part-way
    plan = plan_mouths(mid_word)
    assert plan.narrow_from == (0, 5, 10, 15) and plan.shut == () and plan.openings == ()
    facts = animation_facts(mid_word, plan)
    assert facts["status"] == "synthesised" and facts["shut"] == "synthesised", facts
    agape = bank(np.full(20, 0.25))  # open wide: its jaw is raised (synth.raise_jaw)
    plan = plan_mouths(agape)
    assert plan.narrow_from == (0, 5, 10, 15)
    assert animation_facts(agape, plan, shut_gap=0.01)["status"] == "synthesised"
    # Read back after the warp with its lips still apart (a tongue between them): told so.
    facts = animation_facts(agape, plan, shut_gap=0.2)
    assert facts["status"] == "limited" and facts["shut"] == "missing" and "pauses" in facts["reason"]


def test_raise_jaw_shuts_a_wide_mouth_from_below_and_leaves_the_upper_lip_alone():
    frame, pts = open_mouth_face(gap=30.0)
    frame[185:256] = 200  # a plain pale lower face under the lower lip (rows 155-185 at the middle)
    frame[157:184, 115:142] = 20  # the open mouth's dark interior
    shut, moved = raise_jaw(frame, pts)
    assert mouth_aperture(moved) < 0.01
    assert np.array_equal(shut[:150], frame[:150]), "the upper lip, nose and eyes must not move"
    assert np.allclose(moved[list(LIPS_INNER_UPPER)], pts[list(LIPS_INNER_UPPER)]), "the upper lip stays"
    assert np.allclose(moved[CHIN], pts[CHIN]), "the jaw outline stays, so the paste covers the old chin"
    assert shut[158:170, 120:137].mean() > 150, "the rising lower face covers the interior"
    half, half_moved = raise_jaw(frame, pts, keep=0.5)
    assert abs(mouth_aperture(half_moved) - mouth_aperture(pts) / 2) < 0.01
    assert half[158:164, 120:137].mean() < 60, "part-way, the interior still shows under the upper lip"


def test_a_mouth_open_in_every_frame_shuts_by_the_jaw_and_narrows_by_the_lips():
    frame, pts = open_mouth_face(gap=15.0)  # 0.15 inter-ocular units
    for keep, made_by in ((0.0, raise_jaw(frame, pts)), (0.5, close_lips(frame, pts, 0.5, WIDE_HALF_GAP))):
        out, moved = narrowed(frame, pts, keep)
        assert np.array_equal(out, made_by[0]) and np.array_equal(moved, made_by[1]), keep
    wide_frame, wide = open_mouth_face(gap=30.0)  # 0.3: too wide for the lips, the jaw narrows it too
    assert np.array_equal(narrowed(wide_frame, wide, 0.5)[0], raise_jaw(wide_frame, wide, 0.5)[0])


def test_close_lips_can_leave_part_of_the_gap():
    frame, pts = open_mouth_face(gap=12.0)
    half_open = mouth_aperture(close_lips(frame, pts, keep=0.5)[1])
    assert abs(half_open - mouth_aperture(pts) / 2) < 0.01


def test_shut_candidates_skip_shut_and_wide_open_frames():
    aperture = np.array([0.05, 0.3, 0.0, 0.3, 0.08, 0.3], np.float32)
    bank = MouthBank(aperture=aperture, width=np.full(6, 0.5, np.float32), pose=np.zeros((6, 2), np.float32))
    assert shut_candidates(bank, count=3) == [0, 4]  # frame 2 is already shut


def test_lips_close_as_the_sound_dies_away_and_are_shut_in_a_pause():
    """Openness falls with the sound through the FADE_DB above the pause threshold instead of being
    cut to 0 at it; at and under the threshold it is exactly 0; above the fade it is the ramp."""
    level, under = -20.0, np.array([0, 6, 12, 15, 18, 21, 23, 24, 30], np.float32)  # dB under the level
    n = len(under)
    feat = FrameFeatures(loudness=level - under, centroid=np.full(n, 1200, np.float32), f2_share=np.zeros(n, np.float32),
                         mel=np.zeros((n, MEL_BANDS), np.float32))
    opened = openness(feat, level)
    ramp = 1 - under / SHIPPED.range_db  # an open vowel: the vowel term is 1
    fading = under > SILENCE_DB - FADE_DB
    assert np.allclose(opened[~fading], ramp[~fading])
    assert np.allclose(opened[fading], ramp[fading] * np.clip((SILENCE_DB - under[fading]) / FADE_DB, 0, 1), atol=1e-6)
    assert (opened[under >= SILENCE_DB] == 0).all()
    per_db = -np.diff(opened) / np.diff(under)
    assert np.all(per_db[:-1] > 0) and per_db.max() < 0.1, "no step down to shut (a cut at the threshold is 0.4 in 1 dB)"


def test_a_live_frame_reads_92_ms_past_its_end_at_25_fps():
    """Two frames of smoothing and half the 64 ms window, the spectrum on each frame's midpoint."""
    assert abs(lookahead_s(25.0) - 0.092) < 1e-9


def test_mouth_is_shut_before_during_and_after_silence_around_a_burst_of_voice():
    t = np.arange(int(3 * SAMPLE_RATE)) / SAMPLE_RATE
    voice = 0.3 * np.sin(2 * np.pi * 700 * t) * ((t > 1.0) & (t < 2.0))  # a vowel-like tone from 1 s to 2 s
    rng = ShapeRange(closed=0.0, open=0.2, width_lo=0.5, width_hi=0.6, curve=tuple(np.linspace(0, 0.2, 11)))
    shapes = list(ShapeStream(voice.astype(np.float32), FPS, int(3 * FPS), rng))
    opened = np.array([s.openness for s in shapes])
    assert len(shapes) == 75
    assert (opened[:24] == 0).all() and (opened[52:] == 0).all(), "silence must be shut, anticipation included"
    assert opened[28:47].min() > 0.5, "a steady loud vowel opens the mouth"
    assert all(s.aperture == 0.0 for s in shapes[:24])


def test_the_soft_region_drawn_at_half_size_matches_the_full_size_one(monkeypatch):
    """The paste's soft region is drawn and blurred at half size (compose._soft_region) to save
    time: on a real face, pasted from another frame of the same clip, it must stay close to the
    per cent of the full-size region: measured on lp_d12, 0.1 % of the pixels differ by more than
    3 levels and none by more than 10."""
    from helpers import media
    from musetalk_server.engines.lite import compose
    from musetalk_server.face.landmarks import detect_video
    from musetalk_server.media.video import read_video

    frames = read_video(media("lp_d12.mp4"), FPS).frames[:40]
    points, found = detect_video(frames)
    assert found.all()
    for b, k in ((0, 10), (5, 30), (20, 39)):
        half = compose.paste_mouth(frames[b], points[b], frames[k], points[k])
        monkeypatch.setattr(compose, "_MASK_STEP", 1)
        full = compose.paste_mouth(frames[b], points[b], frames[k], points[k])
        monkeypatch.setattr(compose, "_MASK_STEP", 2)
        diff = np.abs(half.astype(int) - full.astype(int))
        assert diff.max() <= 20 and np.percentile(diff, 99.9) <= 4, (b, k, diff.max())
        assert (diff > 0).any(), "the half-size path ran (feather is wide enough at 512²)"


def test_no_shirt_is_carried_onto_the_chin(monkeypatch):
    """lp_d12 frame 48's mouth on frame 42 (his head turned between them): under the source's
    chin lies his green shirt, where the background shows the chin. Before compose._drop_foreign
    a green smudge covered the chin; now what lies outside the source's face outline and differs
    from the background stays the background's."""
    import cv2

    from helpers import media
    from musetalk_server.engines.lite import compose
    from musetalk_server.engines.lite.geometry import apply_affine
    from musetalk_server.face.landmarks import JAW, detect_video
    from musetalk_server.media.video import read_video

    frames = read_video(media("lp_d12.mp4"), FPS).frames[:49]
    points, found = detect_video(frames)
    assert found[[42, 48]].all()
    bg, src = 42, 48
    jaw = apply_affine(compose.mouth_transform(points[src], points[bg]), points[src])[list(JAW)]
    outside = np.ones(frames[bg].shape[:2], np.uint8)
    cv2.fillPoly(outside, [np.round(jaw).astype(np.int32)], 0)

    def foreign_pixels() -> int:
        out = compose.paste_mouth(frames[bg], points[bg], frames[src], points[src])
        changed = np.abs(out.astype(int) - frames[bg].astype(int)).sum(axis=2) > 90
        return int((changed & outside.astype(bool)).sum())

    now = foreign_pixels()
    monkeypatch.setattr(compose, "_drop_foreign", lambda mask, *a: mask)
    before = foreign_pixels()
    assert before > 200 and now < before / 10, (before, now)


def _bank(aperture: np.ndarray, voiced: np.ndarray | None = None) -> MouthBank:
    n = len(aperture)
    return MouthBank(aperture=aperture.astype(np.float32), width=np.full(n, 0.5, np.float32),
                     pose=np.zeros((n, 2), np.float32), voiced=voiced)


def test_the_ranked_spread_reads_the_curve_from_speaking_frames_and_survives_a_reload(tmp_path):
    # 40 frames of pause (shut) and 60 of speech (0.10-0.16): by share the curve spans both; with
    # the speaking frames marked it spans the speech, and a pause still asks for the shut mouth.
    aperture = np.r_[np.zeros(40), np.linspace(0.10, 0.16, 60)]
    voiced = np.r_[np.zeros(40, bool), np.ones(60, bool)]
    share, ranked = _bank(aperture).shape_range(), _bank(aperture, voiced).shape_range()
    assert not share.by_rank and ranked.by_rank
    assert share.curve[4] == 0.0 and ranked.curve[0] == 0.0
    assert ranked.curve[1] > 0.10 and np.all(np.diff(ranked.curve) >= 0)
    _bank(aperture, voiced).save(tmp_path / "bank.npz")
    again = MouthBank.load(tmp_path / "bank.npz")
    assert np.array_equal(again.voiced, voiced) and again.shape_range() == ranked
    _bank(aperture).save(tmp_path / "old.npz")  # a bank without the mark: the spread by share
    assert MouthBank.load(tmp_path / "old.npz").voiced is None
    # Mouths warped shut join as not speaking, so the curve does not move.
    assert _bank(aperture, voiced).extended(_bank(np.zeros(3))).shape_range().curve == ranked.curve


def test_ranked_spread_opens_and_closes_a_voice_that_never_pauses():
    """Speech without a pause (lp_d12's second half, a man talking on and on) by share asks only
    for the top of the range; by rank the openings spread over it, and still follow its loudness."""
    from helpers import media
    from musetalk_server.media.audio import decode_audio

    audio = decode_audio(media("lp_d12.mp4"))
    audio = audio[len(audio) // 2:]
    n = int(len(audio) / SAMPLE_RATE * FPS)
    curve = tuple(np.linspace(0.0, 0.2, 11))
    spans, opened = [], []
    for by_rank in (False, True):
        rng = ShapeRange(closed=0.0, open=0.2, width_lo=0.5, width_hi=0.6, curve=curve, by_rank=by_rank)
        o = np.array([s.openness for s in ShapeStream(audio, FPS, n, rng)])
        spans.append(np.percentile(o[o > 0], [10, 90]))
        opened.append(o)
    assert (opened[0] > 0).mean() > 0.9, "he talks without a pause"
    (share_lo, share_hi), (rank_lo, rank_hi) = spans
    assert share_lo > 0.5 and rank_lo < 0.35, spans  # by share even his quietest syllables open wide
    assert rank_hi - rank_lo > 1.5 * (share_hi - share_lo), spans
    assert np.corrcoef(opened[0], opened[1])[0, 1] > 0.8, "the same speech, spread wider"
    assert np.array_equal(opened[0] == 0, opened[1] == 0), "pauses stay pauses"
