// Audio into the real-time socket: the microphone (AudioWorklet, ScriptProcessor where there is
// none) or a file (decodeAudioData), both as PCM16 mono at the rate announced in the session's
// config, in 20 ms chunks.

export const CHUNK_S = 0.02;
const SCRIPT_PROCESSOR_BLOCK = 2048;
// A simple voice gate for the microphone: utterances start on speech and end after a pause.
const GATE_OPEN_RMS = 0.02; // about -34 dBFS
const GATE_CLOSE_RMS = 0.01;
const GATE_HANG_S = 0.6; // this much quiet ends the utterance
const GATE_PREROLL_S = 0.2; // sent ahead of the first loud chunk, so onsets are not clipped

export function toPcm16(floats) {
  const pcm = new Int16Array(floats.length);
  for (let i = 0; i < floats.length; i++) {
    const v = Math.max(-1, Math.min(1, floats[i]));
    pcm[i] = v < 0 ? v * 32768 : v * 32767;
  }
  return pcm;
}

function rms(pcm) {
  let sum = 0;
  for (let i = 0; i < pcm.length; i++) sum += (pcm[i] / 32768) ** 2;
  return Math.sqrt(sum / Math.max(1, pcm.length));
}

// Streaming linear-interpolation resampler into fixed 20 ms PCM16 chunks.
export class ChunkEncoder {
  constructor(inRate, outRate, onChunk) {
    Object.assign(this, { step: inRate / outRate, onChunk });
    this.chunk = new Float32Array(Math.round(outRate * CHUNK_S));
    this.filled = 0;
    this.pos = 0; // position of the next output sample in input samples, relative to `prev`
    this.prev = 0; // the last input sample of the previous block
  }

  push(block) {
    const at = (i) => (i < 0 ? this.prev : block[i]);
    while (this.pos < block.length - 1) {
      const i = Math.floor(this.pos);
      const frac = this.pos - i;
      this.chunk[this.filled++] = at(i) * (1 - frac) + at(i + 1) * frac;
      if (this.filled === this.chunk.length) {
        this.onChunk(toPcm16(this.chunk));
        this.filled = 0;
      }
      this.pos += this.step;
    }
    this.pos -= block.length;
    this.prev = block[block.length - 1];
  }
}

// Decides per chunk: send it, hold it (pre-roll), or close the utterance with `end`. Each chunk
// keeps the time its first sample was captured, so the utterance's latency clock starts at the
// pre-roll's first sample, not at the loud chunk that opened the gate.
export class VoiceGate {
  constructor(session) {
    this.session = session;
    this.open = false;
    this.quietS = 0;
    this.preroll = [];
  }

  push(pcm, capturedAt) {
    const level = rms(pcm);
    if (!this.open) {
      this.preroll.push([pcm, capturedAt]);
      if (this.preroll.length > GATE_PREROLL_S / CHUNK_S) this.preroll.shift();
      if (level < GATE_OPEN_RMS) return;
      this.open = true;
      this.quietS = 0;
      for (const [held, at] of this.preroll) this.session.sendPcm(held, at);
      this.preroll = [];
      return;
    }
    this.session.sendPcm(pcm, capturedAt);
    this.quietS = level < GATE_CLOSE_RMS ? this.quietS + CHUNK_S : 0;
    if (this.quietS >= GATE_HANG_S) {
      this.open = false;
      this.session.end();
    }
  }
}

// Starts the microphone into `onChunk(pcm16, capturedAt)`, `capturedAt` the performance.now() time
// of the chunk's first sample (one chunk before it was complete); resolves with {track, stop()}
// (the track for a peer connection to send).
export async function startMicrophone(ctx, outRate, onChunk) {
  const media = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true },
  });
  const source = ctx.createMediaStreamSource(media);
  const encoder = new ChunkEncoder(ctx.sampleRate, outRate, (pcm) => onChunk(pcm, performance.now() - CHUNK_S * 1000));
  const mute = ctx.createGain(); // processing nodes only run when connected to the output
  mute.gain.value = 0;
  mute.connect(ctx.destination);
  let node;
  if (ctx.audioWorklet) {
    await ctx.audioWorklet.addModule(new URL("capture-worklet.js", import.meta.url));
    node = new AudioWorkletNode(ctx, "pcm-capture", { numberOfInputs: 1, numberOfOutputs: 1, channelCount: 1 });
    node.port.onmessage = (e) => encoder.push(e.data);
  } else {
    node = ctx.createScriptProcessor(SCRIPT_PROCESSOR_BLOCK, 1, 1);
    node.onaudioprocess = (e) => encoder.push(e.inputBuffer.getChannelData(0));
  }
  source.connect(node);
  node.connect(mute);
  return {
    track: media.getAudioTracks()[0],
    stop() {
      source.disconnect();
      node.disconnect();
      mute.disconnect();
      for (const track of media.getTracks()) track.stop();
    },
  };
}

// Any file the browser decodes, as PCM16 mono at `outRate`.
export async function decodeFile(ctx, file, outRate) {
  const decoded = await ctx.decodeAudioData(await file.arrayBuffer());
  const offline = new OfflineAudioContext(1, Math.ceil(decoded.duration * outRate), outRate);
  const source = offline.createBufferSource();
  source.buffer = decoded;
  source.connect(offline.destination); // the offline context down-mixes and resamples
  source.start();
  return toPcm16((await offline.startRendering()).getChannelData(0));
}

// Sends `pcm` in 20 ms chunks at real time (as a microphone would), then `end`.
export async function sendPaced(session, pcm, outRate, { cancelled = () => false } = {}) {
  const size = Math.round(outRate * CHUNK_S);
  const start = performance.now();
  for (let offset = 0, n = 0; offset < pcm.length && !cancelled(); offset += size, n++) {
    session.sendPcm(pcm.subarray(offset, offset + size));
    // Against the start, not the previous chunk: timer slack does not accumulate.
    const wait = start + (n + 1) * CHUNK_S * 1000 - performance.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
  }
  if (!cancelled()) session.end();
}
