"""A Pipecat bot whose face is a MuseTalk avatar, shown in the browser by Pipecat's own WebRTC
transport (SmallWebRTC, peer to peer, no media server).

    make serve                                   # MuseTalk Server on :8000, with an avatar "anchor"
    pip install -e clients/python -e "integrations/pipecat[example]"
    python examples/pipecat_bot.py --url http://127.0.0.1:8000 --avatar anchor
    # open http://127.0.0.1:7860/, press Connect, then Speak

The pipeline is [TTS, MuseTalkVideoService, transport.output()]. The TTS here is a stand-in that
answers every TTSSpeakFrame with a WAV file (no cloud keys needed); the page's Speak button queues
one, as an LLM's reply would. With a real TTS, put it where WavSpeaker is (see
integrations/pipecat/README.md); with a whole voice agent, transport.input(), speech-to-text, the
LLM and its context aggregators go before it as in any Pipecat bot.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from aiohttp import web
from loguru import logger
from musetalk_pipecat import MuseTalkVideoService, WavSpeaker
from pipecat.frames.frames import TTSSpeakFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.transports.base_transport import TransportParams
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport
from pipecat.workers.runner import WorkerRunner

from musetalk_client import Client

SPEECH = Path(__file__).parent / "media" / "speech_5s.wav"
AUDIO_OUT_RATE = 24_000  # the pipeline's output rate: the session opens at it, the TTS is resampled to it
# aiortc encodes the video on the CPU, one encoder per browser: at much more than 512² a busy core
# falls behind 25 fps, and Pipecat's video track queues every frame it has not sent, so the picture
# lags further and further behind. The service decodes the avatar's frames at a half or a quarter
# of their size (the JPEG decoder's own scaling, nearly free) until they fit.
MAX_VIDEO_SIDE = 512

PAGE = """<!doctype html>
<meta charset="utf-8"><title>MuseTalk in a Pipecat bot</title>
<style>body{font:15px system-ui;margin:2em} video{width:512px;background:#222;display:block;margin:1em 0}</style>
<h1>MuseTalk in a Pipecat bot</h1>
<button id="connect">Connect</button> <button id="speak" disabled>Speak</button> <span id="state"></span>
<video id="avatar" autoplay playsinline></video>
<script>
const video = document.getElementById("avatar"), state = document.getElementById("state");
let pcId = null;
document.getElementById("connect").onclick = async (e) => {
  e.target.disabled = true;
  const pc = new RTCPeerConnection(), stream = new MediaStream();
  // Pipecat's transport answers on transceiver 0 with audio and 1 with video; nothing is sent from here.
  pc.addTransceiver("audio", {direction: "sendrecv"});
  pc.addTransceiver("video", {direction: "sendrecv"});
  pc.ontrack = (ev) => { stream.addTrack(ev.track); video.srcObject = stream; };
  pc.onconnectionstatechange = () => { state.textContent = pc.connectionState; };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((done) => {   // no trickle: the offer goes with all its candidates
    if (pc.iceGatheringState === "complete") return done();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && done();
  });
  const answer = await (await fetch("/api/offer", {method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({sdp: pc.localDescription.sdp, type: pc.localDescription.type})})).json();
  pcId = answer.pc_id;
  await pc.setRemoteDescription(answer);
  document.getElementById("speak").disabled = false;
  window.bot = {pc, video};
};
document.getElementById("speak").onclick = () => fetch("/api/say", {method: "POST", body: pcId});
</script>
"""


def video_format(url: str, avatar_id: str, api_key: str | None) -> tuple[int, int, int]:
    """(width, height, fps) of the video the browser gets: the avatar's, halved until it fits
    MAX_VIDEO_SIDE."""
    with Client(url, api_key=api_key) as client:
        info = client.avatar(avatar_id)["info"]
    width, height = info["width"], info["height"]
    while max(width, height) > MAX_VIDEO_SIDE:
        width, height = (width + 1) // 2, (height + 1) // 2  # the JPEG decoder's rounding
    return width, height, round(info["fps"])


class BotServer:
    """The page, and one bot per browser that connects."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.width, self.height, self.fps = video_format(args.url, args.avatar, args.api_key)
        self.runner = WorkerRunner(handle_sigint=False)
        self.bots: dict[str, PipelineWorker] = {}

    async def page(self, _: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def offer(self, request: web.Request) -> web.Response:
        body = await request.json()
        connection = SmallWebRTCConnection()
        await connection.initialize(sdp=body["sdp"], type=body["type"])
        worker = self.bot(connection)
        self.bots[connection.pc_id] = worker
        await self.runner.add_workers(worker)
        return web.json_response(connection.get_answer())

    async def say(self, request: web.Request) -> web.Response:
        worker = self.bots.get(await request.text())
        if worker is None:
            raise web.HTTPNotFound(text="no such bot")
        await worker.queue_frame(TTSSpeakFrame("a reply"))  # what an LLM's answer would send the TTS
        return web.Response(status=204)

    def bot(self, connection: SmallWebRTCConnection) -> PipelineWorker:
        transport = SmallWebRTCTransport(webrtc_connection=connection, params=TransportParams(
            audio_out_enabled=True, video_out_enabled=True,
            # Not "live": the service's pictures ride the audio queue (sync_with_audio), and the
            # transport shows the latest one at the avatar's frame rate.
            video_out_is_live=False, video_out_width=self.width, video_out_height=self.height,
            video_out_framerate=self.fps))
        tts = WavSpeaker(self.args.wav, seconds=self.args.seconds)
        avatar = MuseTalkVideoService(base_url=self.args.url, avatar_id=self.args.avatar, api_key=self.args.api_key,
                                      audio_passthrough_on_error=True, video_size=(self.width, self.height))
        worker = PipelineWorker(Pipeline([tts, avatar, transport.output()]),
                                params=PipelineParams(audio_out_sample_rate=AUDIO_OUT_RATE, enable_metrics=True))

        @transport.event_handler("on_client_disconnected")
        async def on_client_disconnected(transport: SmallWebRTCTransport, client: object) -> None:
            self.bots.pop(connection.pc_id, None)
            await worker.cancel()

        return worker


async def main(args: argparse.Namespace) -> None:
    bots = BotServer(args)
    app = web.Application()
    app.add_routes([web.get("/", bots.page), web.post("/api/offer", bots.offer), web.post("/api/say", bots.say)])
    site_runner = web.AppRunner(app)
    await site_runner.setup()
    await web.TCPSite(site_runner, args.host, args.port).start()
    logger.info(f"open http://{args.host}:{args.port}/ (avatar {args.avatar}, video {bots.width}x{bots.height})")
    try:
        await bots.runner.run(auto_end=False)
    finally:
        await site_runner.cleanup()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="MuseTalk Server")
    parser.add_argument("--avatar", default="anchor", help="a preprocessed avatar on it")
    parser.add_argument("--api-key", default=None, help="the server's MUSETALK_API_KEY, if set")
    parser.add_argument("--wav", type=Path, default=SPEECH, help="what the stand-in TTS says (16-bit WAV)")
    parser.add_argument("--seconds", type=float, default=None, help="say only the WAV's first seconds")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
