"""The OpenAPI schema against the service's real answers: every route, every status it declares.

Each declared (route, status) is provoked over real HTTP, and the real body is validated against
the schema declared for it (jsonschema, with the document's components). The set provoked must
equal the set declared, so a status added to a route without a test, or a test for an
undeclared status, fails here.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import httpx
import jsonschema
import pytest

from fakes import FakeEngine
from helpers import media
from musetalk_server.avatars.layout import AVATAR_ID_PATTERN, MANIFEST, frame_path
from musetalk_server.media.jpeg import jpeg_part
from servers import make_server
from testkit.mediatools import parse_mjpeg, write_still
from testkit.webrtc_peer import offer_sdp

KEY = "schema-secret"
# Statuses only cluster mode can answer (it needs a Kubernetes API; tests/operator cover it).
CLUSTER_ONLY = {("post", "/avatars/preprocess", 504)}
# Statuses that need a full device or a full disk, so this module's one server cannot answer
# them; their exact bodies are checked where they are provoked: 429 for paced streams and queued
# batches in tests/api/test_capacity.py, 507 for preprocess, batch and a spooled upload in
# tests/api/test_faults.py.
PROVOKED_ELSEWHERE = {(m, p, s) for m, p in (("post", "/avatars/preprocess"), ("post", "/inference/stream/{avatar_id}"),
                                             ("post", "/inference/batch/{avatar_id}")) for s in (429, 507)} | {
    # A full device, and a session with its viewers: tests/api/test_webrtc_errors.py.
    ("post", "/inference/webrtc/{avatar_id}", 429), ("post", "/inference/webrtc/sessions/{session_id}", 429)}


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """A keyed server with small limits, the avatar `face` made from a still, and the spec."""
    d = tmp_path_factory.mktemp("schema")
    still = d / "face.png"
    write_still(media("vr_face2.mp4"), still)
    text = d / "notes.mp4"
    text.write_text("not media\n")
    engine = FakeEngine(live=True)  # WebRTC sessions render live
    with make_server(d, engine, api_key=KEY, max_upload_mb=1, max_video_seconds=3,
                     max_audio_seconds=6) as server, \
            httpx.Client(base_url=server.url, headers={"X-API-Key": KEY}, timeout=60) as client:
        spec = client.get("/openapi.json").json()
        files = {"still": still, "text": text}
        assert _preprocess(client, "face", still).status_code == 200
        yield server, engine, client, spec, files


def _preprocess(client, avatar_id, path, **data):
    with path.open("rb") as f:
        return client.post("/avatars/preprocess", data={"avatar_id": avatar_id, **data},
                           files={"video_file": (path.name, f)})


def _audio(client, path, audio):
    with audio.open("rb") as f:
        return client.post(path, files={"audio_file": (audio.name, f)})


@contextlib.contextmanager
def _engine_loading(server):
    """The state between start and a loaded engine (seconds for musetalk): the engine is None."""
    rt = server.server.config.app.state.musetalk.runtime
    saved = rt.engine, rt._rendering, rt.avatars.engine
    rt.engine, rt._rendering, rt.avatars.engine = None, None, None
    try:
        yield
    finally:
        rt.engine, rt._rendering, rt.avatars.engine = saved


def _mismatched(server, client, files) -> str:
    """An avatar whose engine artifacts are not this engine's (as if made by another engine)."""
    rt = server.server.config.app.state.musetalk.runtime
    if not rt.store.exists("other"):
        assert _preprocess(client, "other", files["still"]).status_code == 200
        (rt.store.path("other") / "engine" / "fake.json").unlink()
    rt.cache.evict("other")
    return "other"


def _render_cases(kind: str) -> dict[int, Callable]:
    path = f"/inference/{kind}"

    def failing(server, engine, client, files):
        engine.fail_at = 0
        try:
            return _audio(client, f"{path}/face", media("vr_audio1.wav"))
        finally:
            engine.fail_at = None

    def loading(server, engine, client, files):
        with _engine_loading(server):
            return _audio(client, f"{path}/face", media("vr_audio1.wav"))

    return {
        200: lambda s, e, c, f: _audio(c, f"{path}/face", media("vr_audio1.wav")),
        401: lambda s, e, c, f: httpx.post(f"{s.url}{path}/face", files={"audio_file": ("a.wav", b"x")}),
        404: lambda s, e, c, f: _audio(c, f"{path}/nobody", media("vr_audio1.wav")),
        409: lambda s, e, c, f: _audio(c, f"{path}/{_mismatched(s, c, f)}", media("vr_audio1.wav")),
        413: lambda s, e, c, f: _audio(c, f"{path}/face", media("st_RD_Radio31_000.wav")),  # 8 s > 6 s
        415: lambda s, e, c, f: _audio(c, f"{path}/face", f["text"]),
        422: lambda s, e, c, f: c.post(f"{path}/face"),  # no audio_file
        500: failing,
        503: loading,
    }


def _preprocess_cases() -> dict[int, Callable]:
    def failing(server, engine, client, files):
        def prepare(*args, **kw):
            raise RuntimeError("a model failure")

        engine.prepare = prepare
        try:
            return _preprocess(client, "broken", files["still"])
        finally:
            del engine.prepare

    def loading(server, engine, client, files):
        with _engine_loading(server):
            return _preprocess(client, "later", files["still"])

    return {
        200: lambda s, e, c, f: _preprocess(c, "fresh", f["still"], overwrite="true"),
        401: lambda s, e, c, f: httpx.post(f"{s.url}/avatars/preprocess", data={"avatar_id": "x"}),
        409: lambda s, e, c, f: _preprocess(c, "face", f["still"], bbox_shift="7"),  # the same one is a retry: 200
        413: lambda s, e, c, f: _preprocess(c, "long", media("vr_face2.mp4")),  # 5 s > 3 s
        415: lambda s, e, c, f: _preprocess(c, "text", f["text"]),
        422: lambda s, e, c, f: _preprocess(c, "bad.id", f["still"]),
        500: failing,
        503: loading,
    }


def _with_id(method: str, suffix: str = "") -> dict[int, Callable]:
    def call(client, avatar_id, **kw):
        return client.request(method, f"/avatars/{avatar_id}{suffix}", **kw)

    def made_for_deletion(server, engine, client, files):
        assert _preprocess(client, "gone", files["still"], overwrite="true").status_code == 200
        return call(client, "gone")

    def damaged(server, engine, client, files):
        """An avatar whose manifest (show) or first frame (preview) cannot be read back."""
        assert _preprocess(client, "damaged", files["still"], overwrite="true").status_code == 200
        folder = server.server.config.app.state.musetalk.runtime.store.path("damaged")
        if suffix:
            frame_path(folder, 0).write_bytes(b"half a PNG")
        else:
            (folder / MANIFEST).write_text("{not json")
        return call(client, "damaged")

    cases = {
        200: made_for_deletion if method == "DELETE" else (lambda s, e, c, f: call(c, "face")),
        401: lambda s, e, c, f: httpx.request(method, f"{s.url}/avatars/face{suffix}"),
        404: lambda s, e, c, f: call(c, "nobody"),
        422: lambda s, e, c, f: call(c, "bad.id"),
    }
    if method == "GET":
        cases[500] = damaged
    return cases


def _ready_cases() -> dict[int, Callable]:
    def loading(server, engine, client, files):
        with _engine_loading(server):
            return client.get("/health/ready")

    return {200: lambda s, e, c, f: c.get("/health/ready"), 503: loading}


def _job(client, *, done: bool = False) -> str:
    """A job id, submitted with async=true; with `done`, waited for until it finishes."""
    r = _audio(client, "/inference/batch/face?async=true", media("vr_audio1.wav"))
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    while done and client.get(f"/jobs/{job_id}").json()["state"] in ("queued", "running"):
        time.sleep(0.05)
    return job_id


def _job_cases(method: str, suffix: str = "") -> dict[int, Callable]:
    def call(client, job_id):
        return client.request(method, f"/jobs/{job_id}{suffix}")

    def unfinished(server, engine, client, files):
        engine.delay_s = 0.05  # 5 s of audio at 25 fps: 6 s of rendering
        try:
            job_id = _job(client)
            try:
                return call(client, job_id)
            finally:
                client.delete(f"/jobs/{job_id}")
        finally:
            engine.delay_s = 0.0

    cases = {
        200: lambda s, e, c, f: call(c, _job(c, done=True)),
        401: lambda s, e, c, f: httpx.request(method, f"{s.url}/jobs/x{suffix}"),
        404: lambda s, e, c, f: call(c, "no-such-job"),
        422: lambda s, e, c, f: call(c, "bad.id"),
    }
    if suffix == "/result":
        cases[409] = unfinished
    return cases


def _sdp(client, path, body=None, content_type="application/sdp", **kw):
    return client.post(path, content=offer_sdp() if body is None else body,
                       headers={"Content-Type": content_type, **kw.pop("headers", {})}, **kw)


def _webrtc_session(client) -> str:
    """A live session's resource (a WebRTC-fed one, whose peer never connects)."""
    r = _sdp(client, "/inference/webrtc/face")
    assert r.status_code == 201, r.text
    return r.headers["location"]


def _in_session(client, call):
    """`call(session resource)` on a live session, ended afterwards."""
    session = _webrtc_session(client)
    try:
        return call(session)
    finally:
        client.delete(session)


def _webrtc_cases() -> dict[tuple[str, str], dict[int, Callable]]:
    create = "/inference/webrtc/face"

    def loading(server, engine, client, files):
        with _engine_loading(server):
            return _sdp(client, create)

    def corrupt(server, engine, client, files):
        assert _preprocess(client, "torn", files["still"], overwrite="true").status_code == 200
        folder = server.server.config.app.state.musetalk.runtime.store.path("torn")
        (folder / MANIFEST).write_text("{not json")
        server.server.config.app.state.musetalk.runtime.cache.evict("torn")
        return _sdp(client, "/inference/webrtc/torn")

    def created(server, engine, client, files):
        r = _sdp(client, create)
        client.delete(r.headers["location"])
        return r

    def viewer(server, engine, client, files):
        session = _webrtc_session(client)
        r = _sdp(client, session, offer_sdp(feeder=False))
        client.delete(session)
        return r

    def left(server, engine, client, files):
        session = _webrtc_session(client)
        viewer = _sdp(client, session, offer_sdp(feeder=False)).headers["location"]
        try:
            return client.delete(viewer)
        finally:
            client.delete(session)

    unknown = "/inference/webrtc/sessions/no-such-session"
    return {
        ("post", "/inference/webrtc/{avatar_id}"): {
            201: created,
            401: lambda s, e, c, f: _sdp(httpx, f"{s.url}{create}"),
            404: lambda s, e, c, f: _sdp(c, "/inference/webrtc/nobody"),
            409: lambda s, e, c, f: _sdp(c, f"/inference/webrtc/{_mismatched(s, c, f)}"),
            415: lambda s, e, c, f: _sdp(c, create, "v=0\r\n", content_type="text/plain"),
            422: lambda s, e, c, f: _sdp(c, create, "hello"),
            500: corrupt,
            503: loading,
        },
        ("post", "/inference/webrtc/sessions/{session_id}"): {
            201: viewer,
            401: lambda s, e, c, f: _sdp(httpx, f"{s.url}{unknown}", offer_sdp(feeder=False)),
            404: lambda s, e, c, f: _sdp(c, unknown, offer_sdp(feeder=False)),
            415: lambda s, e, c, f: _in_session(c, lambda at: _sdp(c, at, "v=0\r\n", content_type="text/plain")),
            422: lambda s, e, c, f: _in_session(c, lambda at: _sdp(c, at, offer_sdp(feeder=True).replace(
                "a=recvonly", "a=inactive"))),  # its video receives nothing
        },
        ("delete", "/inference/webrtc/sessions/{session_id}"): {
            200: lambda s, e, c, f: c.delete(_webrtc_session(c)),
            401: lambda s, e, c, f: httpx.delete(f"{s.url}{unknown}"),
            404: lambda s, e, c, f: c.delete(unknown),
            422: lambda s, e, c, f: c.delete("/inference/webrtc/sessions/bad.id"),
        },
        ("delete", "/inference/webrtc/sessions/{session_id}/viewers/{viewer_id}"): {
            200: left,
            401: lambda s, e, c, f: httpx.delete(f"{s.url}{unknown}/viewers/x"),
            404: lambda s, e, c, f: c.delete(f"{unknown}/viewers/x"),
            422: lambda s, e, c, f: c.delete(f"{unknown}/viewers/bad.id"),
        },
    }


CASES: dict[tuple[str, str], dict[int, Callable]] = {
    ("get", "/health"): {200: lambda s, e, c, f: httpx.get(f"{s.url}/health")},
    ("get", "/health/live"): {200: lambda s, e, c, f: httpx.get(f"{s.url}/health/live")},
    ("get", "/health/ready"): _ready_cases(),
    ("get", "/metrics"): {200: lambda s, e, c, f: httpx.get(f"{s.url}/metrics")},
    ("post", "/avatars/preprocess"): _preprocess_cases(),
    ("get", "/avatars"): {200: lambda s, e, c, f: c.get("/avatars"),
                          401: lambda s, e, c, f: httpx.get(f"{s.url}/avatars")},
    ("get", "/avatars/{avatar_id}"): _with_id("GET"),
    ("delete", "/avatars/{avatar_id}"): _with_id("DELETE"),
    ("get", "/avatars/{avatar_id}/preview.jpg"): _with_id("GET", "/preview.jpg"),
    ("post", "/inference/stream/{avatar_id}"): _render_cases("stream"),
    ("post", "/inference/batch/{avatar_id}"): _render_cases("batch") | {
        202: lambda s, e, c, f: _audio(c, "/inference/batch/face?async=true", media("vr_audio1.wav"))},
    ("get", "/jobs/{job_id}"): _job_cases("GET"),
    ("get", "/jobs/{job_id}/result"): _job_cases("GET", "/result"),
    ("delete", "/jobs/{job_id}"): _job_cases("DELETE"),
    **_webrtc_cases(),
}
ALL = [(m, p, status) for (m, p), by_status in CASES.items() for status in by_status]


def declared(spec) -> set[tuple[str, str, int]]:
    return {(m, p, int(s)) for p, ops in spec["paths"].items() for m, op in ops.items() for s in op["responses"]}


def test_every_declared_status_has_a_case(api):
    *_, spec, _ = api
    assert declared(spec) - CLUSTER_ONLY - PROVOKED_ELSEWHERE == set(ALL)


def test_no_list_shaped_validation_error_is_documented(api):
    *_, spec, _ = api
    assert not {"HTTPValidationError", "ValidationError"} & set(spec["components"]["schemas"])
    error = spec["components"]["schemas"]["ErrorBody"]
    assert error["required"] == ["detail", "code"] and set(error["properties"]) == {"detail", "code"}
    assert "/inference/realtime/{avatar_id}" in spec["info"]["description"]


@pytest.mark.parametrize(("method", "path", "status"), ALL, ids=[f"{m} {p} {s}" for m, p, s in ALL])
def test_real_answer_matches_the_schema(api, method, path, status):
    server, engine, client, spec, files = api
    r = CASES[(method, path)][status](server, engine, client, files)
    assert r.status_code == status, r.text[:300]
    content = spec["paths"][path][method]["responses"][str(status)]["content"]
    media_type = r.headers["content-type"]
    if media_type.startswith("application/json"):
        schema = content["application/json"]["schema"]
        jsonschema.validate(r.json(), {**schema, "components": spec["components"]})
    else:  # binary or text answers: the declared media type is the one sent
        declared_types = [t.split(";")[0] for t in content]
        assert media_type.split(";")[0] in declared_types, (media_type, list(content))
        if media_type.startswith("multipart/"):
            assert media_type in content  # the boundary too
    if status >= 400:  # the one error body, with a code the route declares for this status (validated above)
        schema = content["application/json"]["schema"]
        assert schema["$ref"] == "#/components/schemas/ErrorBody" and r.json()["code"] in schema["properties"]["code"]["enum"]


def test_path_parameters_carry_the_patterns_the_service_checks(api):
    *_, spec, _ = api
    for path, ops in spec["paths"].items():
        for op in ops.values():
            for param in op.get("parameters", []):
                if param["name"] == "avatar_id":
                    assert param["schema"]["pattern"] == AVATAR_ID_PATTERN.pattern, path
                elif param["in"] == "path":  # job ids: secrets.token_urlsafe's alphabet
                    assert param["schema"]["pattern"] == r"^[A-Za-z0-9_-]{1,64}$", path
    form = spec["components"]["schemas"]["Body_preprocess_avatars_preprocess_post"]["properties"]
    assert form["avatar_id"]["pattern"] == AVATAR_ID_PATTERN.pattern


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("OPTIONS", "/avatars/face", "DELETE, GET"),
    ("PUT", "/avatars/face", "DELETE, GET"),
    ("OPTIONS", "/jobs/some-job", "DELETE, GET"),
    ("PATCH", "/jobs/some-job/result", "GET"),
    ("GET", "/avatars/preprocess", "POST"),
    ("DELETE", "/avatars/preprocess", "POST"),
    ("GET", "/inference/batch/face", "POST"),
    ("POST", "/health", "GET"),
])
def test_405_names_every_method_of_the_path(api, method, path, allow):
    *_, client, spec, _ = api
    r = client.request(method, path)
    assert (r.status_code, r.json()["code"]) == (405, "method_not_allowed")
    assert r.headers["allow"] == allow
    documented = spec["paths"].get(path.replace("face", "{avatar_id}").replace("some-job", "{job_id}"), {})
    assert allow == ", ".join(sorted(m.upper() for m in documented))


def test_a_malformed_multipart_body_is_invalid_input(api):
    *_, client, _, _ = api
    r = client.post("/inference/batch/face", content=b"--x\r\nnot a part\r\n",
                    headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 422 and r.json()["code"] == "invalid_input"


def test_frame_timestamps_are_whole_milliseconds():
    def stamp(index: int, fps: float) -> str:
        head = jpeg_part(b"", index, index * 1000.0 / fps).split(b"\r\n\r\n")[0].decode()
        return next(line.split(": ")[1] for line in head.split("\r\n") if line.startswith("X-Timestamp-Ms"))

    # Rounded down, as the real-time protocol's pts_ms: one clock for every output.
    assert [stamp(i, 30.0) for i in range(4)] == ["0", "33", "66", "100"]
    assert [stamp(i, 16.0) for i in (1, 3)] == ["62", "187"]


def test_a_stream_gives_whole_millisecond_timestamps(api):
    *_, client, _, _ = api
    r = _audio(client, "/inference/stream/face", media("vr_audio1.wav"))
    fps = float(r.headers["x-frame-rate"])
    parts, closed = parse_mjpeg(r.content)
    assert closed and len(parts) == int(r.headers["x-frame-count"])
    assert [p.headers["X-Timestamp-Ms"] for p in parts] == [str(int(i * 1000 // fps)) for i in range(len(parts))]
