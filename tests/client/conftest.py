"""A lite server on loopback with a small avatar, shared by the client's real-time tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from helpers import LiveServer, media
from musetalk_client import Client
from musetalk_server.api import create_app
from musetalk_server.config import Settings
from testkit.mediatools import first_frames, write_video


@dataclass(frozen=True)
class AvatarServer:
    url: str
    avatar: str
    fps: int


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Iterator[AvatarServer]:
    fps, avatar = 25, "d11"
    tmp = tmp_path_factory.mktemp("client-rt")
    clip = write_video(first_frames(media("lp_d11.mp4"), 10), tmp / "d11.mp4", "libx264", fps)
    with LiveServer(create_app(Settings(_env_file=None, result_dir=tmp / "results", engine="lite"))) as srv:
        with Client(srv.url) as c:
            c.preprocess(avatar, clip)
        yield AvatarServer(srv.url, avatar, fps)
