"""Errors over real HTTP on loopback: the server's body becomes ClientError's status, code and detail."""

from __future__ import annotations

import asyncio
import json

import pytest
from loopback import CannedServer

from musetalk_client import Client, ClientError, open_realtime

JSON = "application/json"


def error(status: int, code: str, detail: str):
    return status, JSON, json.dumps({"code": code, "detail": detail}).encode()


def test_an_error_body_is_raised_with_its_code(tmp_path) -> None:
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"RIFF")
    replies = {"/avatars": error(401, "unauthorized", "missing or wrong X-API-Key"),
               "/inference/batch/ghost": error(404, "avatar_not_found", "avatar 'ghost' does not exist")}
    with CannedServer(replies) as server, Client(server.url) as client:
        with pytest.raises(ClientError) as caught:
            client.avatars()
        assert (caught.value.status, caught.value.code) == (401, "unauthorized")
        with pytest.raises(ClientError) as caught:
            client.batch("ghost", audio, tmp_path / "out.mp4")
        assert (caught.value.status, caught.value.code, caught.value.detail) == (
            404, "avatar_not_found", "avatar 'ghost' does not exist")
        assert not (tmp_path / "out.mp4").exists()  # nothing written for a refusal


def test_ids_stay_one_path_segment(tmp_path) -> None:
    """A job or avatar id from a user cannot reach another route: `../avatars/victim` as a job id
    once deleted that avatar (httpx resolves the dots)."""
    replies = {"/jobs/..%2Favatars%2Fvictim": error(422, "invalid_input", "not a job id"),
               "/avatars/a%20b%3Fc": error(422, "invalid_avatar_id", "not an avatar id"),
               "/avatars/gone": (200, JSON, b'{"message": "Avatar deleted", "avatar_id": "gone"}')}
    with CannedServer(replies) as server, Client(server.url) as client:
        with pytest.raises(ClientError) as caught:
            client.cancel_job("../avatars/victim")
        assert caught.value.code == "invalid_input"
        with pytest.raises(ClientError) as caught:
            client.avatar("a b?c")
        assert caught.value.code == "invalid_avatar_id"
        assert client.delete_avatar("gone") == {"message": "Avatar deleted", "avatar_id": "gone"}
    assert [(m, p) for m, p, _ in server.requests] == [
        ("DELETE", "/jobs/..%2Favatars%2Fvictim"), ("GET", "/avatars/a%20b%3Fc"), ("DELETE", "/avatars/gone")]


def test_a_429_says_when_to_come_back() -> None:
    busy = (*error(429, "busy", "no capacity; retry in 7 s"), {"Retry-After": "7"})
    with CannedServer({"/avatars": busy}) as server, Client(server.url) as client, \
            pytest.raises(ClientError) as caught:
        client.avatars()
    assert (caught.value.status, caught.value.code, caught.value.retry_after) == (429, "busy", 7.0)


def test_an_mp4_is_saved_into_a_folder_made_for_it(tmp_path) -> None:
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"RIFF")
    with CannedServer({"/inference/batch/a": (200, "video/mp4", b"mp4 bytes")}) as server, \
            Client(server.url) as client:
        out = client.batch("a", audio, tmp_path / "new" / "folder" / "a.mp4")
    assert out.read_bytes() == b"mp4 bytes"


def test_a_body_that_is_not_json_is_an_http_error() -> None:
    with (CannedServer({"/health": (502, "text/html", b"<h1>Bad Gateway</h1>")}) as server, Client(server.url) as client,
          pytest.raises(ClientError) as caught):
        client.health()
    assert (caught.value.status, caught.value.code, caught.value.detail) == (502, "http_error", "<h1>Bad Gateway</h1>")


def test_success_bodies_and_the_api_key() -> None:
    with CannedServer({"/health": (200, JSON, b'{"status": "ok"}')}) as server, Client(server.url, api_key="k") as client:
        assert client.health() == {"status": "ok"}
    [(method, path, headers)] = server.requests
    assert (method, path, headers["X-API-Key"]) == ("GET", "/health", "k")


def test_a_stream_over_http(tmp_path) -> None:
    from test_mjpeg import JPEGS, STREAM

    audio = tmp_path / "a.wav"
    audio.write_bytes(b"RIFF")
    replies = {"/inference/stream/anchor": (200, "multipart/x-mixed-replace; boundary=frame", STREAM)}
    with CannedServer(replies) as server, Client(server.url) as client:
        assert [p.jpeg for p in client.stream("anchor", audio, realtime=True)] == JPEGS
    [(method, path, headers)] = server.requests
    assert (method, path) == ("POST", "/inference/stream/anchor?realtime=true")
    assert headers["Content-Type"].startswith("multipart/form-data")


@pytest.mark.parametrize("opener", ["sync", "async"])
def test_an_http_status_on_the_realtime_upgrade_is_a_client_error(opener: str) -> None:
    """A proxy, or a server refusing before the upgrade, answers the WebSocket handshake with HTTP."""
    replies = {"/inference/realtime/anchor": (*error(429, "busy", "too many sessions"), {"Retry-After": "3"})}
    with CannedServer(replies) as server, pytest.raises(ClientError) as caught:
        if opener == "sync":
            with Client(server.url) as client:
                client.realtime("anchor")
        else:
            asyncio.run(open_realtime(server.url, "anchor"))
    assert (caught.value.status, caught.value.code, caught.value.detail) == (429, "busy", "too many sessions")
    assert caught.value.retry_after == 3.0  # one parser for both: the upgrade's 429 once lost it
