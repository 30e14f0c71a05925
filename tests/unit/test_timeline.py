import pytest

from musetalk_server.media.frame_timing import SAMPLE_RATE, frame_count, pingpong_index


@pytest.mark.parametrize(
    ("seconds", "fps", "frames"),
    [(2.0, 25, 50), (1.999, 25, 49), (0.039, 25, 0), (0.04, 25, 1), (5.016, 25, 125), (1.0, 29.97, 29)],
)
def test_frame_count_is_floor_of_seconds_times_fps(seconds, fps, frames):
    assert frame_count(round(seconds * SAMPLE_RATE), fps) == frames


def test_pingpong_runs_forward_then_back_with_doubled_ends():
    assert [pingpong_index(i, 3) for i in range(8)] == [0, 1, 2, 2, 1, 0, 0, 1]


def test_pingpong_single_frame_and_bad_length():
    assert {pingpong_index(i, 1) for i in range(5)} == {0}
    with pytest.raises(ValueError):
        pingpong_index(0, 0)
