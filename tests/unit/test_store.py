"""The avatar store is atomic: readers see a whole avatar or none, whatever happens to a writer."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from musetalk_server.avatars.store import AvatarStore, validate_avatar_id
from musetalk_server.errors import AvatarExists, AvatarNotFound, InvalidAvatarId

REPO = Path(__file__).resolve().parents[2]


def fill(folder: Path, frames: int = 1) -> None:
    (folder / "manifest.json").write_text(json.dumps({"avatar_id": folder.name, "frames": frames}))


def test_stage_commits_on_success(tmp_path):
    store = AvatarStore(tmp_path)
    with store.stage("a1") as staging:
        fill(staging)
        assert not store.exists("a1")  # invisible until committed
    assert store.exists("a1") and store.ids() == ["a1"]
    assert list((tmp_path / ".staging").iterdir()) == []


def test_stage_leaves_nothing_on_failure(tmp_path):
    store = AvatarStore(tmp_path)
    with pytest.raises(RuntimeError), store.stage("a1") as staging:
        fill(staging)
        raise RuntimeError("boom")
    assert store.ids() == [] and list((tmp_path / ".staging").iterdir()) == []


def test_existing_needs_overwrite_and_overwrite_replaces(tmp_path):
    store = AvatarStore(tmp_path)
    with store.stage("a1") as s:
        fill(s, frames=1)
    with pytest.raises(AvatarExists), store.stage("a1"):
        pass
    with store.stage("a1", overwrite=True) as s:
        fill(s, frames=7)
    assert store.manifest("a1")["frames"] == 7
    assert list((tmp_path / ".trash").iterdir()) == []


def test_delete_and_missing(tmp_path):
    store = AvatarStore(tmp_path)
    with store.stage("a1") as s:
        fill(s)
    store.delete("a1")
    assert store.ids() == [] and not (tmp_path / "a1").exists()
    with pytest.raises(AvatarNotFound):
        store.delete("a1")
    with pytest.raises(AvatarNotFound):
        store.manifest("nope")


@pytest.mark.parametrize("bad", ["../etc", "a/b", "", "x" * 65, "a b", "ü", ".staging", "a.b"])
def test_ids_are_validated(bad):
    with pytest.raises(InvalidAvatarId):
        validate_avatar_id(bad)


WRITER = """
import sys, time
from pathlib import Path
from musetalk_server.avatars.store import AvatarStore
store = AvatarStore(Path(sys.argv[1]))
with store.stage("victim") as staging:
    (staging / "frames").mkdir()
    (staging / "frames" / "000000.png").write_bytes(b"x" * 1000)
    print("staged", flush=True)
    time.sleep(60)
"""


def test_kill_9_mid_write_leaves_no_avatar_and_sweep_clears_debris(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO / "service"))
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout.readline().strip() == "staged"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        proc.kill()
    store = AvatarStore(tmp_path)
    assert store.ids() == [] and not store.exists("victim")
    assert len(list((tmp_path / ".staging").iterdir())) == 1  # the dead writer's folder
    assert store.sweep(older_than_s=3600) == 0  # too fresh to be judged dead ...
    time.sleep(0.01)
    assert store.sweep(older_than_s=0) == 1  # ... unless this process is the only writer
    assert list((tmp_path / ".staging").iterdir()) == []


def test_cache_sees_replacement_and_deletion_by_another_writer(tmp_path):
    import numpy as np

    from fakes import FakeEngine
    from musetalk_server.avatars.cache import AvatarCache
    from musetalk_server.avatars.store import write_frame

    def make(value: int) -> None:
        with store.stage("a1", overwrite=True) as s:
            (s / "frames").mkdir()
            (s / "engine").mkdir()
            (s / "engine" / "fake.json").write_text("{}")
            write_frame(s, 0, np.full((8, 8, 3), value, np.uint8))
            np.save(s / "landmarks.npy", np.zeros((1, 478, 2), np.float32))
            (s / "manifest.json").write_text(json.dumps({"avatar_id": "a1", "frames": 1, "fps": 25.0,
                                                         "engine": "fake", "engine_version": 1}))

    store = AvatarStore(tmp_path)
    cache = AvatarCache(store, FakeEngine(), capacity=2)
    make(10)
    assert cache.get("a1")[0].frames[0][0, 0, 0] == 10
    assert cache.get("a1")[0] is cache.get("a1")[0]  # a hit while nothing changed
    make(20)  # another replica overwrites it
    assert cache.get("a1")[0].frames[0][0, 0, 0] == 20
    store.delete("a1")  # and another deletes it
    with pytest.raises(AvatarNotFound):
        cache.get("a1")
    assert cache.ids() == []


def test_adopt_keeps_a_fresh_avatar_but_not_one_deleted_while_it_opened(tmp_path):
    import numpy as np

    from fakes import FakeEngine
    from musetalk_server.avatars.cache import AvatarCache
    from musetalk_server.avatars.store import write_frame
    from musetalk_server.engines.base import LoadedAvatar

    store = AvatarStore(tmp_path)

    def make(avatar_id: str) -> LoadedAvatar:
        frame = np.full((8, 8, 3), 7, np.uint8)
        manifest = {"avatar_id": avatar_id, "frames": 1, "fps": 25.0, "engine": "fake", "engine_version": 1}
        with store.stage(avatar_id) as s:
            (s / "frames").mkdir()
            (s / "engine").mkdir()
            (s / "engine" / "fake.json").write_text("{}")
            write_frame(s, 0, frame)
            (s / "manifest.json").write_text(json.dumps(manifest))
        return LoadedAvatar(avatar_id, store.path(avatar_id), manifest, [frame], np.zeros((1, 478, 2), np.float32),
                            store.path(avatar_id) / "engine")

    class DeletedWhileOpening(FakeEngine):
        def open(self, avatar):
            renderer = super().open(avatar)
            store.delete(avatar.avatar_id)  # a DELETE request lands meanwhile
            return renderer

    cache = AvatarCache(store, FakeEngine(), capacity=2)
    fresh = make("kept")
    cache.adopt(fresh)
    assert cache.ids() == ["kept"] and cache.get("kept")[0] is fresh  # no read back from disk
    racing = AvatarCache(store, DeletedWhileOpening(), capacity=2)
    racing.adopt(make("gone"))
    assert racing.ids() == [] and not store.exists("gone")
