"""Process-wide test settings, and what a missing clip or a skip means here and in CI."""

import os

os.environ.setdefault("GLOG_minloglevel", "2")  # keep mediapipe's C++ logging quiet
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One OpenMP thread for torch: on a small shared CI VM, two spinning threads with one core free
# run the tiny models 3-10x slower than one. The server itself keeps torch's defaults.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest

from testkit.media import MediaMissing, in_ci


def pytest_collection_modifyitems(config, items):
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
