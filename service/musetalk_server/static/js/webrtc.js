// A real-time session over WebRTC (`POST inference/webrtc/{avatar_id}`, docs/webrtc.md): one peer
// connection carries the microphone up (an audio track), the avatar down (a video and an audio
// track, played by a <video> element, which the browser keeps in sync), and a data channel with
// the WebSocket's JSON messages (`end`, `interrupt`, PCM16 as binary) and events.
//
// Which painted frame is which: the server stamps video frame g with pts g (1/fps), so its RTP
// timestamp is origin + g·90000/fps with a random origin. `speech_started` reaches the page just
// before its frame's packets (it is sent before the frame is encoded), so the first frame received
// after the first such event is that event's frame: that fixes the origin, and from then on every
// painted frame's index, and whether it speaks, follows from requestVideoFrameCallback's rtpTimestamp.
import { request } from "./api.js";

const RTP_VIDEO_CLOCK = 90000;
const STATS_EVERY_MS = 500;
const SETTLE_TIMEOUT_MS = 1000; // Stop waits at most this long for an idle frame to show
const PRESENTED_KEPT = 300; // painted frames kept for tests (12 s at 25 fps)

export function emptyRtcStats() {
  return {
    framesReceived: 0, framesDrawn: 0, speakingFramesDrawn: 0, latenciesMs: [], leadInMs: [], fps: 0,
    bitrateKbps: 0, jitterMs: 0, framesDropped: 0, utterance: 0, events: [], lastDrawn: null,
    framesDecoded: 0, audioPacketsReceived: 0, audioBytesReceived: 0, audioJitterMs: 0, presented: [],
  };
}

export class WebRtcSession {
  // `url` is the POST's path relative to the page; `video` the <video> element to play into.
  constructor({ url, video, onUpdate = () => {}, onEvent = () => {} }) {
    Object.assign(this, { url, video, onUpdate, onEvent });
    this.stats = emptyRtcStats();
    this.utterances = new Map(); // utterance -> {first, last}: frame indices, from the events
    this.origin = null; // RTP timestamp of frame 0 (mod 2^32), once known
    this.anchorAfter = null; // performance.now() of the first speech_started, until the origin is fixed
    this.anchorFrame = null;
    this.pendingSince = null; // the open utterance's first sample, until its first frame is painted
    this.utteranceOpen = false;
    this.onDrawn = null;
    this.lastBytes = null;
  }

  // Resolves with the server's `ready` message (on the data channel).
  async open() {
    const pc = new RTCPeerConnection();
    this.pc = pc;
    this.audio = pc.addTransceiver("audio", { direction: "sendrecv" }); // the microphone joins later
    pc.addTransceiver("video", { direction: "recvonly" });
    const channel = pc.createDataChannel("control");
    channel.binaryType = "arraybuffer";
    this.channel = channel;
    const ready = new Promise((resolve, reject) => {
      channel.onmessage = (e) => this.onMessage(JSON.parse(e.data), resolve);
      pc.onconnectionstatechange = () => {
        if (pc.connectionState !== "failed") return;
        reject(new Error("the WebRTC connection failed (no route for its media: see docs/webrtc.md)"));
        this.finish({ type: "closed", code: 1006, reason: "connection failed" });
      };
      channel.onclose = () => this.finish({ type: "closed", code: 1000, reason: "" });
    });
    pc.ontrack = (e) => {
      if (this.video.srcObject !== e.streams[0]) this.video.srcObject = e.streams[0];
    };
    await pc.setLocalDescription(await pc.createOffer());
    await gatheringComplete(pc); // non-trickle: the offer carries every candidate
    const response = await request(this.url, {
      method: "POST", headers: { "Content-Type": "application/sdp" }, body: pc.localDescription.sdp,
    });
    this.resource = resourceUrl(response.headers.get("Location"));
    await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
    // A browser that will not play sound without a fresh gesture still plays it muted: the picture
    // shows, and the page unmutes it at the next click (main.js, audioContext()).
    this.video.play().catch(() => { this.video.muted = true; return this.video.play(); }).catch(() => {});
    this.watchFrames();
    this.timer = setInterval(() => this.readStats(), STATS_EVERY_MS);
    this.ready = await ready;
    this.sampleRate = this.ready.sample_rate;
    return this.ready;
  }

  onMessage(message, resolveReady) {
    const now = performance.now();
    if (message.type === "ready") resolveReady(message);
    if (message.type === "speech_started") {
      this.utterances.set(message.utterance, { first: message.frame, last: Infinity });
      this.stats.utterance = message.utterance;
      if (this.origin === null && this.anchorAfter === null) {
        this.anchorAfter = now;
        this.anchorFrame = message.frame;
      }
    }
    if (message.type === "speech_ended") {
      const u = this.utterances.get(message.utterance);
      if (u) u.last = message.frame;
    }
    this.stats.events.push(message.type);
    this.onEvent(message);
  }

  // The microphone as the audio track (null: none); the server's voice gate cuts utterances.
  setMicrophone(track) {
    return this.audio.sender.replaceTrack(track);
  }

  // The page's own copy of the voice gate feeds this: it only times utterances (the audio goes as
  // the track), so the latency clock starts at the pre-roll's first sample, as on the socket.
  gateSink() {
    return {
      sendPcm: (pcm, capturedAt) => this.markUtterance(capturedAt),
      end: () => { this.utteranceOpen = false; },
    };
  }

  markUtterance(firstSampleAt) {
    if (this.utteranceOpen) return;
    this.utteranceOpen = true;
    this.pendingSince = firstSampleAt;
    this.stats.leadInMs.push(performance.now() - firstSampleAt);
  }

  // PCM16 mono at `ready.sample_rate` on the data channel (a file): as on the socket.
  sendPcm(pcm, firstSampleAt = performance.now()) {
    if (!this.channel || this.channel.readyState !== "open") return;
    this.markUtterance(firstSampleAt);
    this.channel.send(pcm.buffer.byteLength === pcm.byteLength ? pcm.buffer : pcm.slice().buffer);
  }

  end() { this.sendText({ type: "end" }); }

  interrupt() { this.sendText({ type: "interrupt" }); }

  sendText(message) {
    this.utteranceOpen = false;
    if (this.channel && this.channel.readyState === "open") this.channel.send(JSON.stringify(message));
  }

  // Interrupts, waits until an idle frame (mouth shut) is painted, hands it to `onIdle` (the page
  // keeps it on screen: a closed connection's video goes blank), then leaves.
  async stop(onIdle = () => {}) {
    this.interrupt();
    const since = this.stats.framesDrawn;
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, SETTLE_TIMEOUT_MS);
      this.onDrawn = (frame) => {
        if (frame.speaking !== false || this.stats.framesDrawn <= since) return;
        clearTimeout(timer);
        resolve();
      };
    });
    onIdle();
    await this.close();
  }

  // DELETE the resource, then close the connection: closed first, the server would end the session
  // on its own and answer the DELETE 404. `keepalive` lets the DELETE outlive a closing tab.
  close() {
    this.onDrawn = null;
    clearInterval(this.timer);
    const resource = this.resource;
    this.resource = null;
    this.finish({ type: "closed", code: 1000, reason: "" });
    const deleted = resource ? request(resource, { method: "DELETE", keepalive: true }).catch(() => {}) : Promise.resolve();
    return deleted.finally(() => { if (this.pc) this.pc.close(); });
  }

  finish(event) {
    if (this.closed) return;
    this.closed = event;
    clearInterval(this.timer);
    this.onEvent(event);
  }

  // Every painted frame: its index (from its RTP timestamp), whether it speaks, the latency mark.
  watchFrames() {
    const onFrame = (now, meta) => {
      if (this.closed) return;
      this.painted(meta);
      this.video.requestVideoFrameCallback(onFrame);
    };
    this.video.requestVideoFrameCallback(onFrame);
  }

  painted(meta) {
    const s = this.stats;
    if (this.origin === null && this.anchorAfter !== null && meta.receiveTime > this.anchorAfter) {
      this.origin = (meta.rtpTimestamp - this.anchorFrame * this.ticksPerFrame() + 2 ** 32) % 2 ** 32;
    }
    const index = this.indexOf(meta.rtpTimestamp);
    const speaking = index === null ? null : this.speaks(index);
    s.framesDrawn += 1;
    if (speaking) s.speakingFramesDrawn += 1;
    const first = index !== null && [...this.utterances.values()].some((u) => u.first === index);
    if (first && this.pendingSince !== null && speaking) {
      s.latenciesMs.push(meta.expectedDisplayTime - this.pendingSince);
      this.pendingSince = null;
    }
    const frame = { index, speaking, rtp: meta.rtpTimestamp, receiveTime: meta.receiveTime,
                    expectedDisplayTime: meta.expectedDisplayTime, presentedFrames: meta.presentedFrames };
    s.presented.push(frame);
    if (s.presented.length > PRESENTED_KEPT) s.presented.shift();
    s.lastDrawn = { index, speaking };
    this.onUpdate(s);
    if (this.onDrawn) this.onDrawn(frame);
  }

  ticksPerFrame() {
    return RTP_VIDEO_CLOCK / (this.ready ? this.ready.fps : 25);
  }

  indexOf(rtp) {
    if (this.origin === null) return null;
    return Math.round((((rtp - this.origin) + 2 ** 32) % 2 ** 32) / this.ticksPerFrame());
  }

  // Before the origin is known nothing has spoken yet: frames are idle.
  speaks(index) {
    for (const u of this.utterances.values()) if (index >= u.first && index <= u.last) return true;
    return false;
  }

  async readStats() {
    if (!this.pc || this.closed) return;
    const s = this.stats;
    let bytes = 0;
    for (const r of (await this.pc.getStats()).values()) {
      if (r.type !== "inbound-rtp") continue;
      bytes += r.bytesReceived || 0;
      if (r.kind === "video") {
        s.framesReceived = r.framesReceived || 0;
        s.framesDecoded = r.framesDecoded || 0;
        s.fps = r.framesPerSecond || 0;
        s.framesDropped = r.framesDropped || 0;
        s.jitterMs = (r.jitter || 0) * 1000;
      } else if (r.kind === "audio") {
        s.audioPacketsReceived = r.packetsReceived || 0;
        s.audioBytesReceived = r.bytesReceived || 0;
        s.audioJitterMs = (r.jitter || 0) * 1000;
      }
    }
    const now = performance.now();
    if (this.lastBytes) s.bitrateKbps = (bytes - this.lastBytes.bytes) * 8 / (now - this.lastBytes.at);
    this.lastBytes = { bytes, at: now };
    this.onUpdate(s);
  }
}

function gatheringComplete(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") resolve();
    });
  });
}

// The server's Location is a path from its root; behind an ingress path prefix that root is not
// the page's, so it is taken relative to the page, as every other URL here.
function resourceUrl(location) {
  if (!location) return null;
  const path = new URL(location, "http://server/").pathname;
  return path.replace(/^\//, "");
}
