"""The lite engine's lip-sync bar on real ground-truth clips (bench/lipsync_eval.py, issues 5 and 13).

Each clip: an avatar from its first half (frames and soundtrack, from which the engine chooses
its spread of openness), driven by the audio of its second half, measured against the mouth that was
filmed. The thresholds are the issues' per-clip bars, not loosened; issue 5's r_gt floor and
"beats the envelope" are kept for these two clips, where they hold.

- lp_d11 (a child talking, 512x512, 9 s) meets every bar with margin. It has only 3 silent
  frames, so a second clip guards the pauses:
- vr_face2 (a news reader, 844x844, 5 s; 23 silent frames) guards the shut mouth in pauses: the
  speaker never shuts his lips on camera, and the engine must still shut them.

docs/lite-engine.md has the full table, the median bar and the other two clips.
Speed is the benchmarks' business (bench/service_bench.py), not a timed test's.
"""

from __future__ import annotations

import pytest

from testkit.media import shared

CLIPS = ("lp_d11", "vr_face2")
R_GT_FLOOR = 0.3  # issue 5's per-clip floor, kept


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """{clip: ClipResult} for every clip in CLIPS, and the bars."""
    from bench import lipsync_eval
    from musetalk_server.engines.lite import LiteEngine

    engine, work = LiteEngine(), tmp_path_factory.mktemp("lipsync")
    out = {}
    for clip in CLIPS:
        shared(f"{clip}.mp4")
        out[clip] = lipsync_eval.evaluate_clip(engine, clip, work / "out", work, generic=True)
    return out, lipsync_eval.BARS


@pytest.mark.parametrize("clip", CLIPS)
def test_mouth_follows_the_speech(results, clip):
    rows, bars = results
    r, (lo, hi) = rows[clip], bars["lag"]
    assert r.r_env >= bars["r_env"], r
    assert lo <= r.lag <= hi, r


@pytest.mark.parametrize("clip", CLIPS)
def test_mouth_matches_the_filmed_mouth_better_than_the_envelope_does(results, clip):
    rows, bars = results
    r = rows[clip]
    assert r.r_gt >= R_GT_FLOOR, r
    assert r.r_gt >= r.env_gt - bars["r_gt_margin"], r  # issue 13's per-clip bar
    assert r.r_gt > r.env_gt, r  # stricter, and it holds on these two


def test_what_the_soundtrack_teaches_is_weighed_and_never_costs(results):
    """Each avatar weighs, on its own soundtrack, the spread of openness (by share, or by rank
    where that follows its own mouth clearly better), and the render is never worse than with the
    soundtrack withheld. The news reader's ranked spread wins by less than RANK_MUST_WIN_BY, a
    coin flip, so he keeps the spread by share, as the child does."""
    from musetalk_server.engines.lite.own_voice import RANK_MUST_WIN_BY

    rows, _ = results
    for r in rows.values():
        chosen, rs = r.spread.split(" (", 1)  # "share (0.314→0.327, A/V offset -4)"
        r_share, r_rank = (float(v) for v in rs.split(",")[0].split("→"))
        assert chosen == ("rank" if r_rank > r_share + RANK_MUST_WIN_BY else "share"), r
        assert r.r_gt >= r.r_gt_generic, r
    assert rows["lp_d11"].spread.startswith("share"), rows["lp_d11"]
    assert rows["vr_face2"].spread.startswith("share"), rows["vr_face2"]


@pytest.mark.parametrize("clip", CLIPS)
def test_mouth_is_shut_in_silence(results, clip):
    rows, bars = results
    r = rows[clip]
    assert r.silent_frames > 0 and r.closed_in_silence >= bars["closed_in_silence"], r


@pytest.mark.parametrize("clip", CLIPS)
def test_nothing_changes_outside_the_lower_face(results, clip):
    rows, bars = results
    assert rows[clip].psnr_outside >= bars["psnr_outside"], rows[clip]
