"""First-speech latency and A/V offset as Chromium plays the avatar, over WebRTC and over the WebSocket.

Starts `musetalk-server serve` (service_bench.start_server), preprocesses lp_d11 (512², 25 fps), and
drives the demo page in Debian's chromium (Playwright, headless) once per transport:

- **First-speech latency** (the page's own figure): Chromium's fake microphone plays a loop of
  0.6 s of digital silence, 3 s of vr_audio1.wav and 2.4 s of silence. The page's voice gate (the
  server's, over WebRTC, has the same numbers) opens on the first loud 20 ms chunk and sends a
  200 ms pre-roll ahead of it. The clock starts at the pre-roll's first sample (performance.now()
  when its chunk left the AudioWorklet, less the chunk's 20 ms) and stops when the utterance's
  first speaking frame is painted: over WebRTC the frame whose index is `speech_started`'s (the
  index comes from the RTP timestamp, static/js/webrtc.js), at requestVideoFrameCallback's
  expectedDisplayTime; over the socket when the page draws it on the canvas. Not counted: the
  time Chromium takes to bring a sample from its (fake) device to the worklet.
- **A/V offset as played**: "Speak the file" sends a WAV of 0.5 s of silence then speech (over the
  data channel or the socket, exactly as sent). Its speech onset t_on (the first sample above
  0.01) falls in the utterance's frame g = first + floor(t_on·F), at t_on − g/F into it. Heard:
  an AudioWorklet on what the page plays (the <video>'s stream over WebRTC, the page's own audio
  graph over the socket) finds the first loud sample after silence; its context time becomes a
  performance.now() time through AudioContext.getOutputTimestamp() (when the context says that
  sample leaves for the output device). Seen: frame g's paint time plus that fraction of a frame.
  Offset = seen − heard (the heard onset nearest the seen one, within 300 ms): positive when the
  sound comes first, the sign of ITU-R BT.1359, whose window of detectability is +45 / −125 ms.
  Over WebRTC the tap is a MediaStreamAudioSourceNode on the received stream, which Chromium feeds
  from the same WebRTC audio renderer as the <video>'s own output.

Prints a Markdown table; `--write-docs` also writes it into docs/benchmarks.md.
Usage: python -m bench.webrtc_browser_bench [--utterances 4] [--write-docs]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import tempfile
from pathlib import Path

import numpy as np

from bench.doc_blocks import BENCHMARKS, WRITE_DOCS_HELP, check_block, measured_on, write_block
from bench.service_bench import MEDIA, start_server
from musetalk_client import Client
from musetalk_server.media.audio import decode_audio
from testkit.mediatools import write_wav

log = logging.getLogger("bench.webrtc_browser")
AVATAR_CLIP = "lp_d11.mp4"  # 512², 25 fps
SPEECH = "vr_audio1.wav"
MIC_LEAD_S, MIC_SPEECH_S, MIC_TAIL_S = 0.6, 3.0, 2.4  # the tail leaves the session time to idle between turns
FILE_LEAD_S, FILE_SPEECH_S = 0.5, 2.0
FILE_RATE = 48_000
ONSET_LEVEL = 0.01  # |sample| that counts as speech, in the file and in what the page plays
QUIET_S = 0.3  # this much below it before an onset counts
MATCH_MS = 300  # a heard onset this close to the seen one is its sound
TIMEOUT_MS = 60_000
LAUNCH_FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--autoplay-policy=no-user-gesture-required",
                "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]

# Into the page: what it paints (frame index, time) and the session's events, and a worklet that
# timestamps the first loud sample after quiet in what the page plays.
INSTRUMENT = """async ([level, quietS]) => {
    const page = window.musetalk, session = page.session;
    const ctx = page.audioContext || (page.audioContext = new AudioContext());  // WebRTC's page makes it at the mic
    const log = window.__bench = {painted: new Map(), events: [], onsets: []};
    const update = session.onUpdate;
    session.onUpdate = (stats) => {
        update(stats);
        const drawn = stats.lastDrawn;
        if (!drawn || drawn.index === null || log.painted.has(drawn.index)) return;
        const rtc = stats.presented && stats.presented.at(-1);
        log.painted.set(drawn.index, rtc ? rtc.expectedDisplayTime : performance.now());
    };
    const onEvent = session.onEvent;
    session.onEvent = (m) => { log.events.push({...m, at: performance.now()}); onEvent(m); };
    const worklet = `registerProcessor('onset-tap', class extends AudioWorkletProcessor {
        constructor() { super(); this.quiet = 0; }
        process(inputs) {
            const x = inputs[0] && inputs[0][0];
            if (!x) return true;
            for (let i = 0; i < x.length; i++) {
                if (Math.abs(x[i]) < ${level}) { this.quiet += 1; continue; }
                if (this.quiet >= ${quietS} * sampleRate) this.port.postMessage(currentTime + i / sampleRate);
                this.quiet = 0;
            }
            return true;
        }
    });`;
    await ctx.audioWorklet.addModule(URL.createObjectURL(new Blob([worklet], {type: 'text/javascript'})));
    const tap = new AudioWorkletNode(ctx, 'onset-tap');
    tap.port.onmessage = (e) => {
        const ts = ctx.getOutputTimestamp();
        log.onsets.push(ts.performanceTime + (e.data - ts.contextTime) * 1000);
    };
    const mute = ctx.createGain();
    mute.gain.value = 0;
    tap.connect(mute).connect(ctx.destination);
    if (session.out) session.out.connect(tap);  // the socket: the page's own audio graph
    else ctx.createMediaStreamSource(document.querySelector('#video').srcObject).connect(tap);
}"""

SUMMARY = """() => {
    const log = window.__bench;
    return {painted: [...log.painted.entries()], events: log.events, onsets: log.onsets,
            latencies: window.musetalk.session.stats.latenciesMs, fps: window.musetalk.session.ready.fps};
}"""


def make_inputs(folder: Path) -> tuple[Path, Path, float]:
    """The fake microphone's loop, the file for the A/V offset, and the file's speech onset (s)."""
    speech = decode_audio(MEDIA / SPEECH, rate=FILE_RATE)
    silence = lambda s: np.zeros(int(s * FILE_RATE), np.float32)  # noqa: E731
    mic = write_wav(folder / "mic.wav", np.concatenate(
        [silence(MIC_LEAD_S), speech[:int(MIC_SPEECH_S * FILE_RATE)], silence(MIC_TAIL_S)]), FILE_RATE)
    clip = np.concatenate([silence(FILE_LEAD_S), speech[:int(FILE_SPEECH_S * FILE_RATE)]])
    onset = int(np.argmax(np.abs(clip) >= ONSET_LEVEL)) / FILE_RATE
    return mic, write_wav(folder / "onset.wav", clip, FILE_RATE), onset


def av_offsets(summary: dict, onset_s: float, since: float) -> list[float]:
    """Per file utterance (started after `since`): seen − heard (ms) of its speech onset (see the
    module's docstring)."""
    fps = summary["fps"]
    painted = dict(summary["painted"])
    offsets = []
    for event in (e for e in summary["events"] if e["type"] == "speech_started" and e["at"] > since):
        g = event["frame"] + int(onset_s * fps)
        near = min(painted, key=lambda i: abs(i - g), default=None)
        if near is None or abs(near - g) > 2:
            continue
        seen = painted[near] + (g - near) * 1000 / fps + (onset_s * fps - int(onset_s * fps)) * 1000 / fps
        # The onset heard nearest the one seen: onsets are 0.3 s of quiet apart, and a stray one (the
        # end of the microphone's last turn) may come between the event and the file's speech.
        heard = [t for t in summary["onsets"] if abs(t - seen) < MATCH_MS]
        if heard:
            nearest = min(heard, key=lambda t: abs(t - seen))
            offsets.append(seen - nearest)
            log.info("utterance %s: frame %d, onset frame %d (painted %d), seen %.1f, heard %.1f (onsets after "
                     "the event, ms: %s)", event["utterance"], event["frame"], g, near, seen, nearest,
                     [round(t - event["at"]) for t in summary["onsets"] if t > event["at"]][:4])
    return offsets


def run_transport(browser, url: str, transport: str, utterances: int, onset_file: Path, onset_s: float) -> dict:
    page = browser.new_page()
    page.goto(url + "/")
    page.select_option("#transport", transport)
    page.click("#avatars li[data-avatar-id=bench] strong")
    page.wait_for_function("() => window.musetalk.session?.ready && window.musetalk.session.stats.framesDrawn > 5",
                           timeout=TIMEOUT_MS)
    page.evaluate(INSTRUMENT, [ONSET_LEVEL, QUIET_S])
    # 1. the microphone: the page's first-speech latency, per utterance
    page.click("#mic")
    page.wait_for_function(f"() => window.musetalk.session.stats.latenciesMs.length >= {utterances}",
                           timeout=TIMEOUT_MS * utterances)
    latencies = list(page.evaluate("() => window.musetalk.session.stats.latenciesMs"))[:utterances]
    page.click("#mic")
    page.wait_for_function("() => /^Live, idle/.test(document.querySelector('#live-status').textContent)",
                           timeout=TIMEOUT_MS)
    page.wait_for_timeout(int(QUIET_S * 2000))
    # 2. the file: the A/V offset of its speech onset, per utterance
    page.set_input_files("#audio-file", str(onset_file))
    since = page.evaluate("() => performance.now()")
    ended = page.evaluate("() => window.__bench.events.filter((e) => e.type === 'speech_ended').length")
    for n in range(utterances):
        page.click("#play-file")
        page.wait_for_function(f"() => window.__bench.events.filter((e) => e.type === 'speech_ended').length > {ended + n}",
                               timeout=TIMEOUT_MS)
        page.wait_for_timeout(int(QUIET_S * 2000))
    summary = page.evaluate(SUMMARY)
    stats = page.evaluate("() => window.musetalk.session.stats")
    page.click("#stop")
    page.wait_for_timeout(500)
    page.close()
    return {"transport": transport, "latencies": latencies, "offsets": av_offsets(summary, onset_s, since),
            "fps": stats["fps"], "kbps": stats["bitrateKbps"], "dropped": stats["framesDropped"]}


def fmt(values: list[float]) -> str:
    if not values:
        return "–"
    return f"{statistics.median(values):.0f} ({min(values):.0f} to {max(values):.0f})"


def markdown(rows: list[dict]) -> str:
    lines = ["| transport | first-speech latency, ms: median (min to max) | A/V offset as played, ms: median (min to max) "
             "| within +45 / −125 | frames/s | kbit/s | dropped frames |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        inside = sum(-125 <= o <= 45 for o in r["offsets"])
        lines.append(f"| {r['transport']} | {fmt(r['latencies'])} (n = {len(r['latencies'])}) | {fmt(r['offsets'])} "
                     f"(n = {len(r['offsets'])}) | {inside} of {len(r['offsets'])} | {r['fps']:.1f} | "
                     f"{r['kbps']:.0f} | {r['dropped']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--utterances", type=int, default=4, help="per transport, from the microphone and from the file")
    p.add_argument("--write-docs", action="store_true", help=WRITE_DOCS_HELP)
    p.add_argument("--verbose", action="store_true", help="log each utterance's A/V figures")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if args.write_docs:
        check_block(BENCHMARKS, "webrtc-browser")
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        p.error("Debian's chromium is needed (.ci/debian_packages.sh installs it)")

    with tempfile.TemporaryDirectory() as tmp:
        mic, onset_file, onset_s = make_inputs(Path(tmp))
        proc, url = start_server(Path(tmp) / "results", "lite")
        try:
            with Client(url) as c:
                c.preprocess("bench", MEDIA / AVATAR_CLIP)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=chromium, headless=True,
                                             args=[*LAUNCH_FLAGS, f"--use-file-for-fake-audio-capture={mic}"])
                rows = [run_transport(browser, url, t, args.utterances, onset_file, onset_s)
                        for t in ("webrtc", "websocket")]
                browser.close()
        finally:
            proc.terminate()
            proc.wait(10)
    table = markdown(rows)
    print(table)
    if args.write_docs:
        write_block(BENCHMARKS, "webrtc-browser", f"*Engine lite, lp_d11 (512²) at 25 fps, Debian's Chromium headless "
                                                  f"on loopback, {args.utterances} utterances per transport and measure. "
                                                  f"{measured_on()}.*\n\n{table}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
