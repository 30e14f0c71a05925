"""Process-wide test settings."""

import os

os.environ.setdefault("GLOG_minloglevel", "2")  # keep mediapipe's C++ logging quiet
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One OpenMP thread for torch: on a small shared CI VM, two spinning threads with one core free
# run the tiny models 3-10x slower than one. The server itself keeps torch's defaults.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest


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


@pytest.fixture(scope="session")
def musetalk_dir(tmp_path_factory):
    """Tiny random MuseTalk v1.5 weights in upstream's layout, made once per session (read-only)."""
    from musetalk_tiny import write_model_dir

    return write_model_dir(tmp_path_factory.mktemp("musetalk-models") / "models")
