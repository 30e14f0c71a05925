// The demo page: avatars (list, create, delete), a live session (microphone or file), an MP4.
import { apiKey, getJson, request, setApiKey, socketUrl, upload } from "./api.js";
import { decodeFile, sendPaced, startMicrophone, VoiceGate } from "./capture.js";
import { RealtimeSession } from "./live.js";
import { WebRtcSession } from "./webrtc.js";

const SAMPLE_RATE = 16000; // the socket session's audio rate (`?sample_rate=`), and the mic gate's
const IDLE_CLOSE = 4408; // the socket's close after MUSETALK_REALTIME_IDLE_TIMEOUT_S without a word
const $ = (id) => document.getElementById(id);

const page = {
  selected: null, // avatar id
  session: null,
  audioContext: null,
  mic: null,
  file: null, // the file being sent, in words
  fileRun: 0, // bumped to cancel a file being sent
  speaking: false, // between the session's speech_started and speech_ended
  stopped: false, // Stop was pressed, or the session closed
  lastSession: null, // the session Stop ended, for tests and curious people
};
window.musetalk = page; // for tests and curious people: page.session.stats

function say(element, text, isError = false) {
  element.textContent = text;
  element.classList.toggle("error", isError);
}

// ---- avatars

async function thumbnail(avatarId) {
  // Through fetch, so the API key travels as a header; the <img> shows a blob URL.
  const response = await request(`avatars/${encodeURIComponent(avatarId)}/preview.jpg`);
  return URL.createObjectURL(await response.blob());
}

function describe(info) {
  const [w, h] = info.size || [];
  return `${info.frames} frames · ${info.fps} fps · ${w}×${h} · bbox_shift ${info.bbox_shift} · ${info.engine}`;
}

async function refreshAvatars() {
  const list = $("avatars");
  try {
    const { avatars } = await getJson("avatars");
    list.replaceChildren();
    for (const avatar of avatars) list.append(avatarItem(avatar));
    say($("avatars-status"), avatars.length ? "" : "No avatars yet: create one below.");
    if (page.selected && !avatars.some((a) => a.avatar_id === page.selected)) select(null);
  } catch (e) {
    say($("avatars-status"), e.message, true);
  }
}

function avatarItem(avatar) {
  const item = document.createElement("li");
  item.dataset.avatarId = avatar.avatar_id;
  item.classList.toggle("selected", avatar.avatar_id === page.selected);
  const img = document.createElement("img");
  img.alt = `${avatar.avatar_id}, first frame`;
  thumbnail(avatar.avatar_id).then((url) => { img.src = url; }, () => { img.alt = "no preview"; });
  const text = document.createElement("div");
  text.innerHTML = "<strong></strong><div class=info></div>";
  text.querySelector("strong").textContent = avatar.avatar_id;
  text.querySelector(".info").textContent = avatar.info ? describe(avatar.info) : "";
  const remove = document.createElement("button");
  remove.textContent = "Delete";
  remove.className = "delete";
  remove.onclick = async (e) => {
    e.stopPropagation();
    if (!confirm(`Delete avatar ${avatar.avatar_id}?`)) return;
    try {
      await request(`avatars/${encodeURIComponent(avatar.avatar_id)}`, { method: "DELETE" });
    } catch (err) {
      say($("avatars-status"), err.message, true);
    }
    refreshAvatars();
  };
  item.append(img, text, remove);
  item.onclick = () => select(avatar.avatar_id);
  return item;
}

// Picking an avatar opens its live session at once, so the idle avatar shows before anyone speaks.
function select(avatarId) {
  if (avatarId && avatarId === page.selected && page.session) return; // already live
  dropSession();
  page.selected = avatarId;
  page.stopped = false;
  for (const li of $("avatars").children) li.classList.toggle("selected", li.dataset.avatarId === avatarId);
  $("live-avatar").textContent = avatarId ? `· ${avatarId}` : "";
  for (const id of ["mic", "play-file", "download"]) $(id).disabled = !avatarId;
  $("screen-hint").hidden = Boolean(avatarId);
  showStatus();
  if (avatarId) ensureSession().catch((e) => say($("live-status"), e.message, true));
}

async function createAvatar(event) {
  event.preventDefault();
  const form = new FormData(event.target);
  form.set("overwrite", event.target.overwrite.checked ? "true" : "false");
  const progress = $("create-progress");
  const status = $("create-status");
  progress.hidden = false;
  progress.max = 1;
  progress.value = 0;
  say(status, "Uploading…");
  $("create").disabled = true;
  try {
    const result = await upload("avatars/preprocess", form, {
      onProgress: (f) => { progress.value = f; say(status, `Uploading… ${Math.round(f * 100)} %`); },
      onProcessing: () => { progress.removeAttribute("value"); say(status, "Processing the video… (finding the face in every frame)"); },
    });
    // The lite engine says when it had to make mouths the video lacks, or cannot animate a face well.
    const animation = (result.info.engine_info || {}).animation || {};
    const note = animation.reason ? ` ${animation.status === "limited" ? "Warning" : "Note"}: ${animation.reason}.` : "";
    say(status, `Avatar ${result.avatar_id} is ready: ${describe(result.info)}.${note}`, animation.status === "limited");
    page.selected = result.avatar_id;
    await refreshAvatars();
    select(result.avatar_id);
  } catch (e) {
    say(status, e.message, true);
  } finally {
    progress.hidden = true;
    $("create").disabled = false;
  }
}

// ---- live

function audioContext() {
  // Browsers only let a user gesture start sound: resumed on every click that needs it.
  if (!page.audioContext) page.audioContext = new AudioContext();
  page.audioContext.resume();
  $("video").muted = false; // muted only if autoplay refused its sound (webrtc.js)
  return page.audioContext;
}

function showFigures(stats) {
  const latency = stats.latenciesMs.at(-1);
  $("fig-latency").textContent = latency === undefined ? "–" : `${Math.round(latency)} ms`;
  $("fig-fps").textContent = stats.fps.toFixed(1);
  $("fig-bitrate").textContent = `${Math.round(stats.bitrateKbps)} kbit/s`;
  $("fig-jitter").textContent = `${stats.jitterMs.toFixed(1)} ms`;
  $("fig-dropped").textContent = String(stats.framesDropped);
  // The socket's own: the server's underrun flag, and its audio clock re-anchored (WebRTC's jitter
  // buffer hides both).
  $("fig-underruns").textContent = "underruns" in stats ? String(stats.underruns) : "–";
  $("fig-gaps").textContent = "gaps" in stats ? String(stats.gaps) : "–";
  $("fig-utterance").textContent = String(stats.utterance);
}

// The socket's frames are painted on the canvas; WebRTC's play in the <video>. A stopped WebRTC
// session leaves its last (idle) frame on the canvas, since its video element goes blank.
function showScreen(element) {
  $("screen").hidden = element !== $("screen");
  $("video").hidden = element !== $("video");
}

function keepLastVideoFrame() {
  const video = $("video");
  const canvas = $("screen");
  if (!video.videoWidth) return;
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  showScreen(canvas);
}

function newSession(onEvent) {
  const avatar = encodeURIComponent(page.selected);
  if ($("transport").value === "webrtc") {
    showScreen($("video"));
    return new WebRtcSession({ url: `inference/webrtc/${avatar}`, video: $("video"), onUpdate: showFigures, onEvent });
  }
  showScreen($("screen"));
  return new RealtimeSession({
    url: socketUrl(`inference/realtime/${avatar}`), canvas: $("screen"), audioContext: audioContext(),
    sampleRate: SAMPLE_RATE, onUpdate: showFigures, onEvent,
  });
}

// The status line says what the page is doing now, from its state: never a stale "Speaking".
function liveStatus() {
  const session = page.session;
  if (!page.selected) return "Pick an avatar on the left (or create one) to go live.";
  if (!session) return page.stopped ? "Stopped. Talk or speak a file to go live again." : "";
  if (!session.ready) return "Connecting…";
  const speaking = page.speaking ? " The avatar is speaking." : "";
  if (page.mic) return `Listening: speak, the avatar follows.${speaking}`;
  if (page.file) return `Speaking ${page.file}…`;
  if (page.speaking) return "Speaking…";
  const { width, height, fps } = session.ready;
  return `Live, idle: ${width}×${height} at ${fps} fps. Talk or speak a file.`;
}

function showStatus() {
  say($("live-status"), liveStatus());
}

function onSessionEvent(session, m) {
  if (page.session !== session) return; // a session the page has already let go
  if (m.type === "speech_started") page.speaking = true;
  if (m.type === "speech_ended") page.speaking = false;
  if (m.type === "error" && m.code === "timeout") return; // said below, with the close
  if (m.type === "error") { say($("live-status"), `${m.code}: ${m.detail}`, true); return; }
  if (m.type === "closed") {
    stopInputs();
    page.session = null;
    page.stopped = true;
    setLive(false);
    if (m.code === IDLE_CLOSE) {
      say($("live-status"), "The session closed after a long silence: talk or speak a file to go live again.");
      return;
    }
    if (m.code !== 1000) {
      say($("live-status"), `The session closed (${m.code}${m.reason ? ": " + m.reason : ""}).`, true);
      return;
    }
  }
  if (["ready", "speech_started", "speech_ended", "closed"].includes(m.type)) showStatus();
}

async function ensureSession() {
  if (page.session && !page.session.closed) return page.session.opened;
  const session = newSession((m) => onSessionEvent(session, m));
  page.session = session;
  page.speaking = false;
  showStatus();
  session.opened = session.open().then(() => { setLive(true); return session; });
  return session.opened;
}

function setLive(on) {
  $("interrupt").disabled = !on;
  $("stop").disabled = !on;
}

function stopInputs() {
  page.fileRun += 1;
  page.file = null;
  if (page.mic) page.mic.stop();
  if (page.mic && page.session && page.session.setMicrophone) page.session.setMicrophone(null);
  page.mic = null;
  $("mic").textContent = "Talk (microphone)";
}

// Another avatar, or the avatar gone: let the session go at once.
function dropSession() {
  stopInputs();
  if (page.session) page.session.close();
  page.session = null;
  page.speaking = false;
  setLive(false);
}

// Stop: the avatar goes back to idle (mouth shut) on screen, then the session closes.
async function stopSession() {
  const session = page.session;
  page.lastSession = session;
  stopInputs();
  page.session = null;
  page.speaking = false;
  page.stopped = true;
  setLive(false);
  showStatus();
  if (!session) return;
  await session.stop(keepLastVideoFrame); // the socket's session paints on the canvas anyway
}

function interrupt() {
  page.fileRun += 1;
  page.file = null;
  page.speaking = false;
  if (page.session) page.session.interrupt();
  showStatus();
}

async function toggleMic() {
  audioContext();
  if (page.mic) {
    stopInputs();
    if (page.session) page.session.end();
    showStatus();
    return;
  }
  try {
    const session = await ensureSession();
    // Over WebRTC the microphone is the audio track (the server gates it) and this gate only times
    // utterances; over the socket this gate decides what is sent.
    const gate = new VoiceGate(session.gateSink());
    page.mic = await startMicrophone(audioContext(), SAMPLE_RATE, (pcm, at) => gate.push(pcm, at));
    if (session.setMicrophone) await session.setMicrophone(page.mic.track);
    $("mic").textContent = "Stop talking";
    showStatus();
  } catch (e) {
    say($("live-status"), e.message, true);
  }
}

async function playFile() {
  audioContext();
  const file = $("audio-file").files[0];
  if (!file) { say($("live-status"), "Choose an audio file first.", true); return; }
  try {
    const session = await ensureSession();
    const rate = session.sampleRate; // the session's word (`ready`): 16 kHz on the socket, 48 over WebRTC
    const pcm = await decodeFile(audioContext(), file, rate);
    const run = ++page.fileRun;
    page.file = `${file.name} (${(pcm.length / rate).toFixed(1)} s)`;
    showStatus();
    await sendPaced(session, pcm, rate, { cancelled: () => run !== page.fileRun });
    if (run === page.fileRun) { page.file = null; showStatus(); }
  } catch (e) {
    say($("live-status"), e.message, true);
  }
}

async function downloadMp4() {
  const file = $("audio-file").files[0];
  if (!file) { say($("live-status"), "Choose an audio file for the MP4 first.", true); return; }
  const form = new FormData();
  form.append("audio_file", file);
  say($("live-status"), "Rendering the MP4…");
  try {
    const response = await request(`inference/batch/${encodeURIComponent(page.selected)}`, { method: "POST", body: form });
    const link = $("download-link");
    if (link.href) URL.revokeObjectURL(link.href);
    link.href = URL.createObjectURL(await response.blob());
    link.download = `${page.selected}.mp4`;
    link.textContent = `${page.selected}.mp4 (${response.headers.get("X-Frame-Count")} frames)`;
    link.hidden = false;
    link.click();
    say($("live-status"), "The MP4 is ready.");
  } catch (e) {
    say($("live-status"), e.message, true);
  }
}

function init() {
  const key = $("api-key");
  key.value = apiKey();
  key.onchange = () => { setApiKey(key.value.trim()); refreshAvatars(); };
  $("create-form").onsubmit = createAvatar;
  $("mic").onclick = toggleMic;
  $("play-file").onclick = playFile;
  $("interrupt").onclick = interrupt;
  $("stop").onclick = stopSession;
  $("download").onclick = downloadMp4;
  // Another transport: the live session starts again over it.
  $("transport").onchange = () => { const avatar = page.selected; page.selected = null; select(avatar); };
  refreshAvatars();
  showStatus();
  // A closed tab ends the session now, not when the server's idle timeout notices.
  window.addEventListener("pagehide", dropSession);
}

init();
