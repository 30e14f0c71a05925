"""The client's audio rate: `Client.realtime(sample_rate=)` travels in the URL, so every frame is
at it from frame 0; `configure` is answered with `config_applied`, and each frame says its rate.
Against a real lite server on loopback, and (for the refusal) a stand-in for an older server."""

from __future__ import annotations

import contextlib
import json
import threading

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve

from musetalk_client import Client, ClientError, RealtimeFrame

RECV_S = 5.0


def frames_until(rt, done) -> list[RealtimeFrame | dict]:
    items: list[RealtimeFrame | dict] = []
    while not done(items):
        items.append(rt.receive(timeout=RECV_S))
    return items


def count_frames(n: int):
    return lambda items: sum(isinstance(i, RealtimeFrame) for i in items) >= n


def test_the_rate_in_the_url_holds_from_frame_0(server):
    with Client(server.url) as c, c.realtime(server.avatar, sample_rate=48000) as rt:
        assert rt.ready["sample_rate"] == rt.sample_rate == 48000
        frames = [i for i in frames_until(rt, count_frames(3)) if isinstance(i, RealtimeFrame)]
    assert frames[0].header.index == 0
    assert all(f.sample_rate == 48000 and len(f.audio) == 2 * 48000 // server.fps for f in frames)
    assert rt.config_applied is None


def test_configure_is_acknowledged_and_frames_carry_their_rate(server):
    with Client(server.url) as c, c.realtime(server.avatar) as rt:
        assert rt.sample_rate == 16000
        frames_until(rt, count_frames(2))
        rt.configure(22050)
        items = frames_until(rt, lambda items: rt.config_applied is not None)
        first = rt.config_applied["frame"]
        items += frames_until(rt, lambda items: any(isinstance(i, RealtimeFrame) and i.header.index >= first + 2
                                                    for i in items))
    assert rt.config_applied == {"type": "config_applied", "sample_rate": 22050, "frame": first}
    assert rt.sample_rate == 22050 and rt.config_applied in items  # the event is also handed to the caller
    frames = [i for i in items if isinstance(i, RealtimeFrame)]
    assert any(f.header.index >= first for f in frames)
    for f in frames:
        rate = 22050 if f.header.index >= first else 16000
        assert (f.sample_rate, len(f.audio)) == (rate, 2 * rate // server.fps), f.header.index


def test_a_bad_rate_is_the_servers_4400(server):
    with Client(server.url) as c, pytest.raises(ClientError) as e:
        c.realtime(server.avatar, sample_rate=96000)
    assert (e.value.status, e.value.code) == (4400, "invalid_input")
    assert "sample_rate query parameter" in e.value.detail


def test_a_server_that_ignores_the_rate_is_refused_not_misread():
    """A server from before the query parameter answers `ready` at 16000: the client says so
    instead of reading 16 kHz frames as 48 kHz ones."""
    def old_server(ws: ServerConnection) -> None:
        ws.send(json.dumps({"type": "ready", "fps": 25.0, "width": 8, "height": 8, "sample_rate": 16000,
                            "header_bytes": 24}))
        with contextlib.suppress(ConnectionClosed, TimeoutError):  # until the client closes
            ws.recv(timeout=RECV_S)

    with serve(old_server, "127.0.0.1", 0) as srv:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        port = srv.socket.getsockname()[1]
        with Client(f"http://127.0.0.1:{port}") as c, pytest.raises(ClientError) as e:
            c.realtime("any", sample_rate=48000)
        srv.shutdown()
    assert (e.value.status, e.value.code) == (0, "protocol") and "ready says 16000" in e.value.detail
