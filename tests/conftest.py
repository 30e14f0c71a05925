"""Process-wide test settings, and what a missing clip or a skip means here and in CI."""

import os

os.environ.setdefault("GLOG_minloglevel", "2")  # keep mediapipe's C++ logging quiet
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One OpenMP thread for torch: on a small shared CI VM, two spinning threads with one core free
# run the tiny models 3-10x slower than one. The server itself keeps torch's defaults.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest

from testkit.media import MediaMissing, in_ci

# The `slow` tier, by measurement (`pytest --durations=0`): every test whose run took over 4.5 s
# on the 2-core VM with other suites running beside it (load average 8-9), and the folders that
# start a browser, a real control plane or score lip sync on long clips. `make test-quick` leaves
# them out. Kept here in one list rather than as marks in the test files, so that re-measuring is
# one edit; a name that no longer matches a test fails the run (`_check_slow_names`).
SLOW_FOLDERS = ("tests/browser/", "tests/k8s_real/", "tests/quality/", "tests/client/test_client_install.py",
                "tests/api/test_render_entry.py", "tests/api/test_webrtc_media.py",
                "tests/api/test_webrtc_turn.py")
SLOW_TESTS = frozenset({
    "tests/api/test_async_jobs.py::test_202_then_progress_then_the_mp4",
    "tests/api/test_behaviour.py::test_client_disconnect_stops_generation_within_a_second",
    "tests/api/test_behaviour.py::test_failure_after_first_byte_ends_with_an_error_part",
    "tests/api/test_behaviour.py::test_failure_before_first_byte_is_a_500_without_trace",
    "tests/api/test_behaviour.py::test_health_answers_during_a_long_preprocess_and_a_stream",
    "tests/api/test_behaviour.py::test_odd_timelines_and_faces",
    "tests/api/test_behaviour.py::test_realtime_paces_frames_at_the_frame_rate",
    "tests/api/test_behaviour.py::test_stream_is_incremental_and_ttff_does_not_grow_with_audio",
    "tests/api/test_capacity.py::test_a_full_device_refuses_the_next_paced_stream_at_once",
    "tests/api/test_capacity.py::test_a_live_stream_stays_on_time_while_a_batch_runs",
    "tests/api/test_capacity.py::test_a_queued_batch_gets_busy_after_the_queue_timeout",
    "tests/api/test_contract.py::test_a_new_avatar_stays_loaded_and_leaves_on_delete",
    "tests/api/test_contract.py::test_batch_is_h264_aac_matching_the_audio",
    "tests/api/test_contract.py::test_batch_leaves_no_temporary_files",
    "tests/api/test_contract.py::test_existing_avatar_409_then_overwrite",
    "tests/api/test_contract.py::test_list_show_delete",
    "tests/api/test_contract.py::test_too_long_audio_is_413",
    "tests/api/test_faults.py::test_a_corrupt_avatar_answers_500_avatar_corrupt_alone",
    "tests/api/test_faults.py::test_an_upload_cut_off_mid_way_leaves_no_file",
    "tests/api/test_faults.py::test_full_disk_during_batch_answers_507_and_keeps_nothing",
    "tests/api/test_faults.py::test_full_disk_during_preprocess_answers_507_and_keeps_nothing",
    "tests/api/test_faults.py::test_kill_9_mid_request_leaves_debris_the_restart_sweeps",
    "tests/api/test_fps.py::test_an_avatar_made_at_25_fps_streams_at_25_under_a_30_fps_server",
    "tests/api/test_determinism.py::test_an_async_job_and_a_stream_give_the_batch_frames",
    "tests/api/test_determinism.py::test_the_same_batch_rendered_several_times_at_once_decodes_to_the_same_frames",
    "tests/api/test_fuzz.py::test_fuzzing_with_every_check_finds_nothing",
    "tests/api/test_fuzz.py::test_the_fuzzer_reports_what_the_schema_does_not_say",
    "tests/api/test_hostile_media.py::test_of_several_faces_the_largest_is_the_avatar",
    "tests/api/test_lite_service.py::test_batch_mp4_with_the_lite_engine",
    "tests/api/test_lite_service.py::test_stream_changes_the_mouth_and_nothing_far_from_it",
    "tests/api/test_musetalk_realtime.py::test_a_musetalk_session_speaks_one_utterance_and_idles",
    "tests/api/test_musetalk_service.py::test_a_lite_avatar_on_a_musetalk_server_is_409",
    "tests/api/test_musetalk_service.py::test_batch_mp4_has_every_frame_and_the_audio",
    "tests/api/test_musetalk_service.py::test_cli_preprocess_and_render_with_musetalk",
    "tests/api/test_musetalk_service.py::test_raw_frames_change_only_inside_the_blend_mask",
    "tests/api/test_musetalk_service.py::test_stream_yields_floor_seconds_x_fps_decodable_frames",
    "tests/api/test_realtime.py::test_a_10s_burst_at_48khz_plays_whole_and_conserves",
    "tests/api/test_retries.py::test_a_retry_after_a_client_timeout_gets_the_avatar_without_recomputing",
    "tests/api/test_retries.py::test_the_seed_client_retry_pattern_on_a_real_clip",
    "tests/api/test_shutdown.py::test_sigterm_drains_ends_the_stream_with_its_error_part_and_exits_within_the_grace",
    "tests/operator/test_cluster_mode.py::test_an_avatar_applied_with_kubectl_is_served",
    "tests/operator/test_cluster_mode.py::test_an_upload_becomes_a_resource_and_every_replica_serves_it",
    "tests/operator/test_cluster_mode.py::test_the_jobs_real_entry_point_builds_an_avatar_the_service_serves",
    "tests/operator/test_main.py::test_healthz_fails_while_the_api_server_is_unreachable",
    "tests/unit/test_cli.py::test_preprocess_then_render",
    "tests/unit/test_musetalk_batching.py::test_the_comparison_would_see_cross_talk",
    "tests/unit/test_musetalk_batching.py::test_two_streams_share_device_calls_and_each_gets_its_own_frames",
    "tests/unit/test_musetalk_live.py::test_real_time_features_stay_within_the_measured_bound",
    "tests/unit/test_packaging.py::test_the_client_wheel_holds_the_client_only",
    "tests/unit/test_packaging.py::test_the_server_wheel_holds_the_server_and_the_operator_only",
})


def _is_slow(nodeid: str) -> bool:
    return nodeid.startswith(SLOW_FOLDERS) or nodeid.split("[")[0] in SLOW_TESTS


def _check_slow_names(items) -> None:
    """Every SLOW_TESTS name in a collected file must still name a test (a renamed test would
    otherwise slip into the quick tier unnoticed)."""
    collected = {item.nodeid.split("[")[0] for item in items}
    files = {name.split("::")[0] for name in collected}
    stale = sorted(name for name in SLOW_TESTS if name.split("::")[0] in files and name not in collected)
    if stale:
        raise pytest.UsageError(f"tests/conftest.py SLOW_TESTS names tests that do not exist: {', '.join(stale)}")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Mark the slow tier before `-m "not slow"` deselects, then skip `gpu` tests without CUDA."""
    _check_slow_names(items)
    for item in items:
        if _is_slow(item.nodeid):
            item.add_marker(pytest.mark.slow)
    _skip_gpu_without_cuda(items)


def _skip_gpu_without_cuda(items) -> None:
    """`gpu` tests need CUDA; without it they are skipped, never failed (CI has no GPU)."""
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (torch.cuda.is_available() is false)")
    for item in gpu_items:
        item.add_marker(skip)


def _missing_media(error: MediaMissing):
    """A clip only ../shared/media holds: skipped on a fresh clone, a failure in CI (which has ../shared)."""
    if in_ci():
        pytest.fail(f"CI=true, where ../shared must sit beside the clone: {error}", pytrace=False)
    pytest.skip(str(error))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    try:
        return (yield)
    except MediaMissing as error:
        _missing_media(error)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    try:
        return (yield)
    except MediaMissing as error:
        _missing_media(error)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI nothing is skipped but the CUDA tests: any other skip is reported as a failure."""
    report = yield
    if in_ci() and report.skipped and not hasattr(report, "wasxfail") and "gpu" not in item.keywords:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (CI=true runs everything): {reason}"
    return report


@pytest.fixture(scope="session")
def musetalk_dir(tmp_path_factory):
    """Tiny random MuseTalk v1.5 weights in upstream's layout, made once per session (read-only)."""
    from testkit.musetalk_tiny import write_model_dir

    return write_model_dir(tmp_path_factory.mktemp("musetalk-models") / "models")
