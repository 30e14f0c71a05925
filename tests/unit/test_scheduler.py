"""The device scheduler on its own: admission by measured cost, the queue, priorities, drain."""

from __future__ import annotations

import math
import sys
import threading
import time

import pytest

from musetalk_server.device import scheduler as scheduler_module
from musetalk_server.device.cores_free import CoresFree
from musetalk_server.device.scheduler import (
    FAIR_SHARE_CORES,
    REALTIME_LOAD,
    STARTUP_FACTOR,
    STARTUP_S,
    DeviceScheduler,
)
from musetalk_server.errors import Busy, NotReady

SIZE = (512, 512)


def scheduler(**kw) -> DeviceScheduler:
    args = {"workers": 1, "frame_slots": 1, "unpaced_slots": 1, "queue_timeout_s": 0.2, "max_queue": 4}
    return DeviceScheduler(**{**args, **kw})


def paced(s: DeviceScheduler, fps: float = 25.0):
    return s.admit("paced", fps=fps, frame_size=SIZE, engine="lite", frames=250)


def test_paced_admission_follows_the_measured_cost(monkeypatch):
    monkeypatch.setattr(scheduler_module, "STARTUP_S", 0.0)  # every ticket past its start-up: the steady state
    s = scheduler()
    s.observe("lite", SIZE, 0.010)  # 10 ms a frame: one 25 fps stream claims 0.25 of the worker
    fits = int(REALTIME_LOAD / 0.25)
    tickets = [paced(s) for _ in range(fits)]
    with pytest.raises(Busy) as refused:
        paced(s)
    assert refused.value.status == 429 and refused.value.code == "busy"
    assert refused.value.headers()["Retry-After"] == "10"  # the first ends 250 frames / 25 fps from now
    tickets[0].release()
    tickets.append(paced(s))  # room again
    assert s.streams_capacity("lite", SIZE, 25.0) == fits


def test_a_burst_is_admitted_against_its_start_up_too():
    s = scheduler()
    s.observe("lite", SIZE, 0.005)  # 5 ms a frame: a 25 fps stream claims 0.125, twice that as it starts
    burst = int(REALTIME_LOAD / (0.125 * STARTUP_FACTOR))
    tickets = [paced(s) for _ in range(burst)]
    with pytest.raises(Busy, match="would need"):
        paced(s)
    for t in tickets:  # once they run on their clocks alone, there is room for one more starting
        t.admitted_at -= STARTUP_S
    tickets.append(paced(s))
    assert len(tickets) == burst + 1 < int(REALTIME_LOAD / 0.125)


def test_the_cores_another_process_holds_are_not_admitted_against():
    s = scheduler(workers=2, frame_slots=2, cores_free=lambda: 1.5)
    assert s.capacity() == pytest.approx(1.5 * REALTIME_LOAD)
    full = scheduler(workers=2, frame_slots=2, cores_free=lambda: 0.0)  # others hold both: its fair share
    assert full.capacity() == pytest.approx(FAIR_SHARE_CORES * REALTIME_LOAD)
    assert scheduler(workers=2, frame_slots=2, cores_free=lambda: 8.0).capacity() == pytest.approx(2 * REALTIME_LOAD)


def test_cores_free_counts_this_process_and_the_idle_cores_and_holds_through_a_burst():
    free = CoresFree.available(machine_cores=2, interval_s=0.2)
    assert free is not None  # Linux
    started, cpu = time.monotonic(), time.process_time()
    while time.monotonic() < started + 0.3:  # this process busy: what it got, it can have
        pass
    own = (time.process_time() - cpu) / (time.monotonic() - started)
    busy = free()
    assert 0.9 * own <= busy <= 2.0
    assert [free() for _ in range(50)] == [busy] * 50  # a burst reads the figure from before it


def test_an_empty_device_takes_one_paced_stream_whatever_the_estimate():
    s = scheduler()
    s.observe("lite", SIZE, 1.0)
    with paced(s), pytest.raises(Busy):
        paced(s)


def test_the_cap_holds_even_when_the_estimate_allows_more():
    s = scheduler(max_realtime=1)
    s.observe("lite", SIZE, 0.0001)
    with paced(s), pytest.raises(Busy, match="MUSETALK_MAX_REALTIME_STREAMS"):
        paced(s)


def test_a_late_paced_frame_refuses_new_paced_work():
    s = scheduler()
    s.observe("lite", SIZE, 0.0001)
    with paced(s) as t:
        t.late(0.5)
        with pytest.raises(Busy, match="running late") as refused:
            paced(s)
    # It says to come back when the lateness lapses, not when the open-ended session would end.
    assert refused.value.retry_after_s == math.ceil(scheduler_module.LATE_WINDOW_S)
    assert f"retry in {math.ceil(scheduler_module.LATE_WINDOW_S)} s" in str(refused.value)


def test_frames_measured_from_several_threads_at_once_never_break_a_render(monkeypatch):
    # Real-time sessions report their frames from their own worker threads. With the CPU sample
    # due on every frame, the threads keep resetting and reading the shared sample: one read
    # between another thread's reset and its own count divided by zero pixels, and the session
    # closed with internal_error when a second one ran beside it.
    monkeypatch.setattr(scheduler_module, "CPU_SAMPLE_S", 0.0)
    s = scheduler(workers=2, frame_slots=2)
    errors: list[BaseException] = []

    def frames() -> None:
        try:
            for _ in range(20_000):
                s.observe("lite", SIZE, 0.005)
        except Exception as e:  # any error is the test's failure, reported below
            errors.append(e)

    threads = [threading.Thread(target=frames) for _ in range(4)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    assert s.frame_cost("lite", SIZE) >= 0.005


def test_unpaced_work_queues_then_is_refused_after_the_timeout():
    s = scheduler(queue_timeout_s=0.2)
    held = s.admit("unpaced", fps=25, frame_size=SIZE, engine="lite")
    started = time.monotonic()
    with pytest.raises(Busy, match="waited 0.2 s"):
        s.admit("unpaced", fps=25, frame_size=SIZE, engine="lite")
    assert time.monotonic() - started >= 0.2
    held.release()
    s.admit("unpaced", fps=25, frame_size=SIZE, engine="lite").release()


def test_a_full_queue_refuses_at_once():
    s = scheduler(max_queue=0)
    with s.admit("unpaced", fps=25, frame_size=SIZE, engine="lite"), pytest.raises(Busy, match="already wait"):
        s.admit("unpaced", fps=25, frame_size=SIZE, engine="lite")


def test_queued_unpaced_work_goes_before_queued_preprocessing():
    s = scheduler(queue_timeout_s=5)
    held = s.admit("unpaced", fps=25, frame_size=SIZE, engine="lite")
    order: list[str] = []

    def wait(kind: str) -> None:
        with s.admit(kind, fps=25, frame_size=SIZE, engine="lite"):
            order.append(kind)

    pre = threading.Thread(target=wait, args=("preprocess",))
    pre.start()
    while not s._waiting[2]:
        time.sleep(0.005)
    batch = threading.Thread(target=wait, args=("unpaced",))
    batch.start()
    while not s._waiting[1]:
        time.sleep(0.005)
    held.release()
    pre.join()
    batch.join()
    assert order == ["unpaced", "preprocess"]


def test_a_waiting_paced_frame_goes_before_a_waiting_unpaced_one():
    s = scheduler(frame_slots=1)
    order: list[int] = []
    gate = s.frame_turn(1)
    gate.__enter__()  # the device is busy with a frame

    def frame(priority: int) -> None:
        with s.frame_turn(priority):
            order.append(priority)

    unpaced = threading.Thread(target=frame, args=(1,))
    unpaced.start()
    while not s._frame_waiting[1]:
        time.sleep(0.005)
    live = threading.Thread(target=frame, args=(0,))
    live.start()
    while not s._frame_waiting[0]:
        time.sleep(0.005)
    gate.__exit__(None, None, None)
    unpaced.join()
    live.join()
    assert order == [0, 1]


def test_drain_refuses_new_work_and_revoke_ends_running_work():
    s = scheduler(queue_timeout_s=5)
    running = paced(s)
    frames = running.gated(iter(range(100)))
    assert next(frames) == 0
    s.drain()
    with pytest.raises(NotReady):
        paced(s)
    assert not s.wait_idle(0.05)
    assert s.revoke() == 1
    with pytest.raises(NotReady, match="shutting down"), running:  # its holder releases it as the render ends
        next(frames)
    assert s.wait_idle(0.5) and s.active == 0
