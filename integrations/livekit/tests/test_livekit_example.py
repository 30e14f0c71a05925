"""examples/livekit_agent.py: it imports, and its avatar half starts against a real server with the
example's own AgentSession (its TTS sets the session's rate). Running the agent needs a LiveKit
server and real STT/LLM/TTS, which this machine cannot reach."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from livekit.agents import AgentServer
from offline_room import OfflineRoom

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "livekit_agent.py"
# LiveKit Inference's model objects want keys when built (not when imported); these never leave here.
DUMMY_KEYS = {"LIVEKIT_API_KEY": "offline-test-key", "LIVEKIT_API_SECRET": "offline-test-secret-at-least-32-bytes"}


def load_example():
    spec = importlib.util.spec_from_file_location("livekit_agent_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_the_example_imports_and_its_avatar_follows_the_agent_tts(musetalk_server, monkeypatch):
    for name, value in DUMMY_KEYS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MUSETALK_URL", musetalk_server.url)
    monkeypatch.setenv("MUSETALK_AVATAR", musetalk_server.avatar_id)
    example = load_example()
    assert isinstance(example.server, AgentServer)

    session = example.agent_session()
    assert session.options.interruption["resume_false_interruption"] is False
    face = example.avatar()
    await face.start(session, OfflineRoom())
    try:
        await face.wait_for_join(timeout=5.0)
        assert session.tts is not None
        assert face.generator is not None and face.generator.sample_rate == session.tts.sample_rate
        assert session.output.audio is face.audio_output
    finally:
        await face.aclose()
