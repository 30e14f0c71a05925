"""Lip sync through a real-time session scores like the batch path (issue 9), on the lite engine.

The session's own state machine and frame session are driven on a simulated clock: the audio
arrives in 20 ms chunks at real time (chunk k at 20k ms) and frame g is decided at its time, as
the WebSocket's clock does (with its second look at an idle frame when it is due), so what each
frame could see of the audio is exactly what it sees live, without waiting for it. Both runs are
measured with bench/lipsync_eval.py's FaceMesh measures: r_env (best lag) and closed_in_silence must agree within 0.05.
"""

from __future__ import annotations

import numpy as np
import pytest

from musetalk_server.media.frame_timing import SAMPLE_RATE
from musetalk_server.render.realtime.timeline import IDLE, SPEECH, Timeline
from testkit.media import shared

FPS = 25.0
CHUNK_S = 0.02
CLIPS = ("vr_face2", "lp_d11")
TOLERANCE = 0.05


def live_frames(renderer, audio: np.ndarray) -> tuple[list[np.ndarray], int]:
    """The speaking frames of one utterance fed in real-time 20 ms chunks, and how many underran."""
    frames = renderer.session(FPS)
    t = Timeline(fps=FPS, backgrounds=len(renderer.frames), lookahead_s=frames.lookahead_s, max_buffer_s=60,
                 max_utterance_s=600)
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    chunk = int(CHUNK_S * SAMPLE_RATE) * 2
    chunks = [pcm[i:i + chunk] for i in range(0, len(pcm), chunk)]
    start = 0.1  # the first chunk arrives 100 ms into the session, off the frame grid
    sent, out, under = 0, [], 0
    def arrive(until: float) -> None:
        nonlocal sent
        while sent < len(chunks) and start + sent * CHUNK_S <= until:
            t.add_audio(chunks[sent], start + sent * CHUNK_S)
            sent += 1
            if sent == len(chunks):
                t.end()

    while True:
        due = t.index / FPS
        arrive(due - frames.render_s)
        plan = t.plan()
        arrive(due)
        if plan.kind == IDLE and t.starts_now():  # as the session's clock does at the frame's time
            plan = t.replan(plan)
        if plan.kind == SPEECH:
            out.append(frames.speech_frame(plan.utterance, plan.speech_index, plan.background, plan.speech_audio,
                                           plan.final))
        elif plan.kind != IDLE:
            under += 1
        if plan.events_after:
            return out, under


@pytest.fixture(scope="module")
def scores(tmp_path_factory):
    from bench import lipsync_eval as ev
    from musetalk_server.engines.lite import LiteEngine

    engine, work = LiteEngine(), tmp_path_factory.mktemp("rt-lipsync")
    out = {}
    for clip in CLIPS:
        frames, audio = ev.load_clip(shared(f"{clip}.mp4").stem)
        first, _, drive, own = ev.halves(frames, audio)
        avatar = ev.build_avatar(engine, first, work, clip, own)  # with its soundtrack, as preprocess does
        renderer = engine.open(avatar)
        batch = [f.copy() for f in renderer.render(drive, FPS)]
        live, under = live_frames(renderer, drive)
        out[clip] = (measure(ev, batch, drive), measure(ev, live[:len(batch)], drive), under, len(live), len(batch))
    return out


def measure(ev, frames: list[np.ndarray], audio: np.ndarray) -> dict[str, float]:
    points, _ = ev.detect_video(frames)
    aperture = np.nan_to_num(ev.aperture_of(points), nan=0.0)
    env = ev.envelope(audio, len(frames))
    silent = ev.silent_mask(env)
    closed = aperture < ev.CLOSED_APERTURE
    return {"r_env": ev.lagged_r(aperture, env)[0],
            "closed_in_silence": float(closed[silent].mean()) if silent.any() else 1.0}


@pytest.mark.parametrize("clip", CLIPS)
def test_real_time_session_scores_like_batch(scores, clip):
    batch, live, under, n_live, n_batch = scores[clip]
    assert under == 0 and n_live in (n_batch, n_batch + 1), (under, n_live, n_batch)
    for key in ("r_env", "closed_in_silence"):
        assert abs(live[key] - batch[key]) <= TOLERANCE, (key, live, batch)
