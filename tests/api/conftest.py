"""Servers for the API tests: the real app on real uvicorn, on loopback, with a fake engine."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from fakes import FakeEngine
from helpers import LiveServer, media
from servers import make_server, preprocess


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[LiveServer, FakeEngine, httpx.Client]]:
    """One server per module with the avatar `face2` (vr_face2.mp4) already made."""
    engine = FakeEngine()
    with make_server(tmp_path_factory.mktemp("srv"), engine) as server, httpx.Client(base_url=server.url) as client:
        assert preprocess(client, "face2", media("vr_face2.mp4")).status_code == 200
        yield server, engine, client
