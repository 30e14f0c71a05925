// A real-time session over `WS inference/realtime/{avatar_id}` (docs/realtime.md).
// Each binary message is one frame: a 24-byte little-endian header `<4sIIIHHI` (magic "MTF1",
// frame index, pts in ms, utterance, flags, reserved, JPEG length), the JPEG, then that frame's
// share of the audio as PCM16 mono. Every frame's audio is scheduled through WebAudio at its pts,
// and its JPEG is drawn when that audio is heard (the audio clock, less the output latency):
// picture and sound stay in sync by construction.

export const HEADER_BYTES = 24;
export const FLAG_SPEAKING = 1;
export const FLAG_LAST = 2;
export const FLAG_UNDERRUN = 4;
const MAGIC = [0x4d, 0x54, 0x46, 0x31]; // "MTF1"
const PLAYBACK_LEAD_S = 0.12; // audio is scheduled this far ahead, to absorb network jitter
const LATE_MARGIN_S = 0.005; // a frame due sooner than this is late: re-anchor the clock
const DRAW_TICK_MS = 5;
const FPS_WINDOW_MS = 1000;
const SETTLE_TIMEOUT_MS = 1000; // Stop waits at most this long for an idle frame to show

export function parseFrame(buffer) {
  const view = new DataView(buffer);
  for (let i = 0; i < MAGIC.length; i++) {
    if (view.getUint8(i) !== MAGIC[i]) throw new Error("not a frame message (bad magic)");
  }
  const jpegLength = view.getUint32(20, true);
  const audioStart = HEADER_BYTES + jpegLength;
  const samples = new Int16Array((buffer.byteLength - audioStart) >> 1);
  for (let i = 0; i < samples.length; i++) samples[i] = view.getInt16(audioStart + 2 * i, true);
  return {
    index: view.getUint32(4, true),
    pts: view.getUint32(8, true),
    utterance: view.getUint32(12, true),
    flags: view.getUint16(16, true),
    jpeg: new Uint8Array(buffer, HEADER_BYTES, jpegLength),
    pcm: samples,
  };
}

export function emptyStats() {
  return {
    framesReceived: 0, framesDrawn: 0, speakingFrames: 0, speakingFramesDrawn: 0, underruns: 0, gaps: 0,
    audioScheduledS: 0, speechAudioScheduledS: 0, latenciesMs: [], fps: 0, utterance: 0, events: [],
    bytesReceived: 0, bitrateKbps: 0, lastDrawn: null, // {index, speaking} of the frame on screen
    jitterMs: 0, // RFC 3550's interarrival jitter, of frames against their pts (as getStats reports it)
    framesDropped: 0, // received but never painted: their time had passed
    leadInMs: [], // per utterance: how long before it was sent its first sample was captured
  };
}

export class RealtimeSession {
  // `onUpdate(stats)` runs after each frame; `onEvent(message)` for each text event.
  constructor({ url, canvas, audioContext, sampleRate, onUpdate = () => {}, onEvent = () => {} }) {
    Object.assign(this, { url, canvas, ctx: audioContext, sampleRate, onUpdate, onEvent });
    this.draw2d = canvas.getContext("2d");
    this.stats = emptyStats();
    this.queue = []; // decoded frames waiting for their time: {when, bitmap, flags}
    this.base = null; // audio-clock time of pts 0
    this.utteranceOpen = false; // audio sent since the last end/interrupt
    this.pendingSince = null; // performance.now() of the open utterance's first sample, until it shows
    this.lastSpoken = 0; // highest utterance number seen speaking
    this.arrivals = []; // [performance.now(), bytes] of the last second's frames
    this.onDrawn = null; // Stop's wait for an idle frame on screen
    this.transit = null; // arrival minus pts of the previous frame, for the jitter
    this.out = audioContext.createGain();
    this.out.connect(audioContext.destination);
  }

  // Resolves with the server's `ready` message.
  open() {
    return new Promise((resolve, reject) => {
      // The rate goes in the URL, so that frame 0's audio is already at it (`ready` echoes it).
      const url = new URL(this.url);
      url.searchParams.set("sample_rate", String(this.sampleRate));
      const ws = new WebSocket(url.toString());
      ws.binaryType = "arraybuffer";
      this.ws = ws;
      ws.onmessage = (e) => {
        if (typeof e.data !== "string") { this.onFrame(e.data); return; }
        const message = JSON.parse(e.data);
        if (message.type === "ready") {
          this.ready = message;
          this.sampleRate = message.sample_rate; // the server's word on what every frame carries
          this.canvas.width = message.width;
          this.canvas.height = message.height;
          resolve(message);
        }
        this.stats.events.push(message.type);
        this.onEvent(message);
      };
      ws.onerror = () => reject(new Error("the real-time socket failed to open"));
      ws.onclose = (e) => {
        this.closed = e;
        clearInterval(this.timer);
        reject(new Error(`the socket closed (${e.code}${e.reason ? ": " + e.reason : ""})`));
        this.onEvent({ type: "closed", code: e.code, reason: e.reason });
      };
      this.timer = setInterval(() => this.drawDue(), DRAW_TICK_MS);
    });
  }

  // PCM16 mono at the configured rate. The first chunk after an end opens a new utterance;
  // `firstSampleAt` (performance.now() time its first sample was captured) starts the latency
  // clock: the microphone's pre-roll was captured before it is sent.
  sendPcm(pcm, firstSampleAt = performance.now()) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    if (!this.utteranceOpen) {
      this.utteranceOpen = true;
      this.pendingSince = firstSampleAt;
      this.stats.leadInMs.push(performance.now() - firstSampleAt); // the pre-roll's age when sent
    }
    this.ws.send(pcm.buffer.byteLength === pcm.byteLength ? pcm.buffer : pcm.slice().buffer);
  }

  // What the microphone's voice gate feeds: on the socket, the session itself.
  gateSink() { return this; }

  end() { this.sendText({ type: "end" }); }

  interrupt() { this.sendText({ type: "interrupt" }); }

  sendText(message) {
    if (message.type === "end" || message.type === "interrupt") this.utteranceOpen = false;
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  // Interrupts, waits until an idle frame (mouth shut) is on screen, then closes: the page is not
  // left on a frame with its mouth open.
  async stop() {
    this.interrupt();
    const since = this.stats.framesReceived;
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, SETTLE_TIMEOUT_MS);
      this.onDrawn = (frame) => {
        if (frame.speaking || frame.received <= since) return;
        clearTimeout(timer);
        resolve();
      };
    });
    this.close();
  }

  close() {
    this.onDrawn = null;
    clearInterval(this.timer);
    if (this.ws) this.ws.close(1000);
    this.out.disconnect();
  }

  onFrame(buffer) {
    const frame = parseFrame(buffer);
    const s = this.stats;
    const now = performance.now();
    s.framesReceived += 1;
    s.utterance = frame.utterance;
    if (frame.flags & FLAG_UNDERRUN) s.underruns += 1;
    const speaking = (frame.flags & FLAG_SPEAKING) !== 0;
    // The utterance's first speaking frame: the latency clock stops when it is painted.
    let firstOf = null;
    if (speaking) {
      s.speakingFrames += 1;
      if (frame.utterance > this.lastSpoken) {
        firstOf = this.pendingSince;
        this.pendingSince = null;
        this.lastSpoken = frame.utterance;
      }
    }
    s.bytesReceived += buffer.byteLength;
    const transit = now - frame.pts;
    if (this.transit !== null) s.jitterMs += (Math.abs(transit - this.transit) - s.jitterMs) / 16;
    this.transit = transit;
    this.arrivals.push([now, buffer.byteLength]);
    while (this.arrivals[0][0] < now - FPS_WINDOW_MS) this.arrivals.shift();
    s.fps = this.arrivals.length * 1000 / FPS_WINDOW_MS;
    s.bitrateKbps = this.arrivals.reduce((sum, [, bytes]) => sum + bytes, 0) * 8 / FPS_WINDOW_MS;
    // Speech audio: frames that carry the utterance's samples (an underrun frame carries zeros).
    const when = this.schedule(frame, speaking && !(frame.flags & FLAG_UNDERRUN));
    const received = s.framesReceived;
    createImageBitmap(new Blob([frame.jpeg], { type: "image/jpeg" })).then((bitmap) => {
      this.queue.push({ when, bitmap, speaking, index: frame.index, received, firstOf });
    });
    this.onUpdate(s);
  }

  // Schedules the frame's audio at its pts on the audio clock; returns when it is due.
  schedule(frame, speech) {
    const ctx = this.ctx;
    let when = this.base === null ? -1 : this.base + frame.pts / 1000;
    if (when < ctx.currentTime + LATE_MARGIN_S) {
      if (this.base !== null) this.stats.gaps += 1; // the audio ran dry: start again a lead ahead
      this.base = ctx.currentTime + PLAYBACK_LEAD_S - frame.pts / 1000;
      when = this.base + frame.pts / 1000;
    }
    if (frame.pcm.length) {
      const buffer = ctx.createBuffer(1, frame.pcm.length, this.sampleRate);
      const channel = buffer.getChannelData(0);
      for (let i = 0; i < frame.pcm.length; i++) channel[i] = frame.pcm[i] / 32768;
      const source = ctx.createBufferSource();
      source.buffer = buffer;
      source.connect(this.out);
      source.start(when);
      const seconds = frame.pcm.length / this.sampleRate;
      this.stats.audioScheduledS += seconds;
      if (speech) this.stats.speechAudioScheduledS += seconds;
    }
    return when;
  }

  // The audio clock's time that is being heard now: currentTime runs ahead of the speaker by the
  // output latency, and a frame drawn at its audio's currentTime shows before it is heard.
  heardTime() {
    const ts = this.ctx.getOutputTimestamp ? this.ctx.getOutputTimestamp() : {};
    if (!ts.performanceTime) return this.ctx.currentTime;
    return ts.contextTime + (performance.now() - ts.performanceTime) / 1000;
  }

  // Draws the latest frame whose sound is being heard; older ones are dropped undrawn.
  drawDue() {
    const now = this.heardTime();
    let due = null;
    let firstOf = null; // a latency mark of a frame dropped undrawn passes to the one painted
    this.queue.sort((a, b) => a.when - b.when);
    while (this.queue.length && this.queue[0].when <= now) {
      if (due) { due.bitmap.close(); this.stats.framesDropped += 1; }
      due = this.queue.shift();
      firstOf = firstOf ?? due.firstOf;
    }
    if (!due) return;
    this.draw2d.drawImage(due.bitmap, 0, 0, this.canvas.width, this.canvas.height);
    due.bitmap.close();
    const s = this.stats;
    s.framesDrawn += 1;
    if (due.speaking) s.speakingFramesDrawn += 1;
    if (firstOf !== null) s.latenciesMs.push(performance.now() - firstOf);
    s.lastDrawn = { index: due.index, speaking: due.speaking };
    this.onUpdate(s);
    if (this.onDrawn) this.onDrawn(due);
  }
}
