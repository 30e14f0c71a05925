"""The MJPEG reader on bytes laid out as the server sends them, cut at every possible place."""

from __future__ import annotations

import json

import pytest

from musetalk_client import ClientError
from musetalk_client.mjpeg import mjpeg_parts

JPEGS = [b"\xff\xd8first\xff\xd9", b"\xff\xd8second, longer\r\n\r\nwith a blank line\xff\xd9"]


def part(index: int, body: bytes, **extra: str) -> bytes:
    headers = {"Content-Type": "image/jpeg", "Content-Length": str(len(body)), "X-Frame-Index": str(index),
               "X-Timestamp-Ms": f"{index * 40}", **extra}
    head = "--frame\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode("latin-1") + b"\r\n" + body + b"\r\n"


STREAM = part(0, JPEGS[0]) + part(1, JPEGS[1]) + b"--frame--\r\n"


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_parts_survive_any_chunking(cut: int) -> None:
    parts = list(mjpeg_parts(iter([STREAM[:cut], STREAM[cut:]])))
    assert [(p.index, p.timestamp_ms, p.jpeg) for p in parts] == [(0, 0.0, JPEGS[0]), (1, 40.0, JPEGS[1])]


def test_byte_by_byte() -> None:
    assert [p.jpeg for p in mjpeg_parts(STREAM[i:i + 1] for i in range(len(STREAM)))] == JPEGS


def test_an_error_part_raises_the_servers_code_and_detail() -> None:
    error = json.dumps({"code": "internal_error", "detail": "render failed at frame 1"}).encode()
    chunks = iter([part(0, JPEGS[0]) + part(1, error, **{"X-Stream-Error": "true"})])
    parts = mjpeg_parts(chunks)
    assert next(parts).jpeg == JPEGS[0]
    with pytest.raises(ClientError) as caught:
        next(parts)
    assert (caught.value.status, caught.value.code, caught.value.detail) == (500, "internal_error",
                                                                             "render failed at frame 1")


def test_an_error_part_keeps_the_status_it_would_have_had() -> None:
    error = json.dumps({"code": "not_ready", "detail": "the server is shutting down"}).encode()
    chunks = iter([part(0, error, **{"X-Stream-Error": "true", "X-Stream-Error-Status": "503"})])
    with pytest.raises(ClientError) as caught:
        next(mjpeg_parts(chunks))
    assert (caught.value.status, caught.value.code) == (503, "not_ready")


def test_a_stream_cut_short_ends_without_a_partial_part() -> None:
    assert [p.index for p in mjpeg_parts(iter([STREAM[: len(part(0, JPEGS[0])) + 30]]))] == [0]
