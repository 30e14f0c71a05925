// The HTTP side of the page: the API key, requests with it, and a clear message per error code.
// Every URL is relative to the page, so a path prefix in front of the service changes nothing.

const KEY_STORAGE = "musetalk.apiKey";

export function apiKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

export function setApiKey(value) {
  if (value) localStorage.setItem(KEY_STORAGE, value);
  else localStorage.removeItem(KEY_STORAGE);
}

function keyHeaders() {
  const key = apiKey();
  return key ? { "X-API-Key": key } : {};
}

// The error codes of docs/errors.md, in words for a person at the page.
const MESSAGES = {
  unauthorized: "The server needs an API key: enter it at the top right.",
  avatar_not_found: "That avatar does not exist (any more): create it first.",
  avatar_exists: "An avatar with this id exists already: tick “overwrite” to replace it.",
  avatar_engine_mismatch: "This avatar was made by another engine: create it again with “overwrite”.",
  too_large: "The file is too large or too long for this server's limits.",
  unsupported_media: "The file is not media the server can decode (or it holds nothing).",
  no_face_detected: "No face was found in the video.",
  invalid_avatar_id: "The id may only hold letters, digits, “_” and “-” (at most 64).",
  invalid_input: "A field is missing or malformed.",
  internal_error: "The server failed; its log has the details.",
  weights_error: "The server's model weights are missing or broken.",
  not_ready: "The server is still loading its engine: try again in a moment.",
  preprocess_timeout: "Preprocessing is taking long; it carries on: refresh the list later.",
  method_not_allowed: "The server does not allow this request.",
};

export class ApiError extends Error {
  constructor(status, code, detail) {
    super(`${MESSAGES[code] || "The request failed."} (${status} ${code}: ${detail})`);
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

function errorFrom(status, text) {
  try {
    const body = JSON.parse(text);
    if (body && body.code) return new ApiError(status, body.code, body.detail);
  } catch (_) { /* not the JSON error body: a proxy's page, say */ }
  return new ApiError(status, "http_error", text.slice(0, 200) || `HTTP ${status}`);
}

export async function request(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...keyHeaders(), ...(options.headers || {}) } });
  if (!response.ok) throw errorFrom(response.status, await response.text());
  return response;
}

export async function getJson(path) {
  return (await request(path)).json();
}

// An upload through XHR, because fetch reports no upload progress. `onProgress(fraction)` runs
// while the body goes up; once it is all sent, `onProcessing()` (the server is preprocessing).
export function upload(path, form, { onProgress, onProcessing } = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    for (const [name, value] of Object.entries(keyHeaders())) xhr.setRequestHeader(name, value);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable && onProgress) onProgress(e.loaded / e.total); };
    xhr.upload.onload = () => { if (onProcessing) onProcessing(); };
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) resolve(JSON.parse(xhr.responseText));
      else reject(errorFrom(xhr.status, xhr.responseText));
    };
    xhr.onerror = () => reject(new ApiError(0, "network_error", "the connection failed"));
    xhr.send(form);
  });
}

// The real-time socket's URL: ws(s) beside the page, the key as a query parameter because a
// browser's WebSocket cannot send headers.
export function socketUrl(path) {
  const url = new URL(path, document.baseURI);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const key = apiKey();
  if (key) url.searchParams.set("key", key);
  return url.toString();
}
