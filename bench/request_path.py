"""Which modules one stream request runs through, and which checks it repeats.

Runs the real app in-process (lite engine, a real clip, a real WAV), warms the avatar into
memory, then traces one `POST /inference/stream/{id}` with sys.setprofile: every project file
whose code runs, and how often each check function is called. Prints a table.

    python -m bench.request_path
"""

from __future__ import annotations

import collections
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from fastapi.testclient import TestClient  # noqa: E402

from musetalk_server.api import create_app  # noqa: E402
from musetalk_server.config import Settings  # noqa: E402
from testkit.media import media  # noqa: E402

PACKAGE = str(ROOT / "service" / "musetalk_server")
# name of a function -> what it checks; whichever of them the tree has is counted
CHECKS = {
    "validate_avatar_id": "avatar id validated",
    "exists": "avatar existence checked",
    "stamp": "avatar existence checked",
    "manifest": "manifest read",
    "_load": "avatar loaded from disk (the cache's engine check)",
    "_stamp_check": "engine stamp file checked by the engine",
}


def main() -> None:
    files: collections.Counter[str] = collections.Counter()
    calls: collections.Counter[str] = collections.Counter()

    active = threading.Event()

    def profile(frame, event, arg):
        if event != "call" or not active.is_set():
            return
        path = frame.f_code.co_filename
        if path.startswith(PACKAGE):
            files[path[len(PACKAGE) + 1:]] += 1
            name = frame.f_code.co_name
            if name in CHECKS:
                calls[f"{CHECKS[name]} ({name})"] += 1

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(_env_file=None, result_dir=Path(tmp), engine="lite")
        # Installed before any thread starts (the event loop's, the pools'), counted only while active.
        threading.setprofile(profile)
        sys.setprofile(profile)
        with TestClient(create_app(settings)) as client:
            with media("vr_face2.mp4").open("rb") as f:
                assert client.post("/avatars/preprocess", data={"avatar_id": "a"},
                                   files={"video_file": ("v.mp4", f)}).status_code == 200
            state = client.app.state.musetalk
            getattr(state, "runtime", state).cache.evict("a")  # a cold avatar, as after a restart
            audio = media("vr_audio1.wav").read_bytes()
            active.set()
            r = client.post("/inference/stream/a", files={"audio_file": ("a.wav", audio)})
            active.clear()
            assert r.status_code == 200
    sys.setprofile(None)
    print(f"| project files run by one stream request | {len(files)} |")
    print("|---|---|")
    for name in sorted(files):
        print(f"| {name} | |")
    print()
    print("| check | times |")
    print("|---|---|")
    for name, n in sorted(calls.items()):
        print(f"| {name} | {n} |")


if __name__ == "__main__":
    main()
