"""`musetalk-server weights download | check`: upstream's files from their public hubs.

Sources (spec §1.1): the UNet from TMElyralab/MuseTalk, the VAE from stabilityai/sd-vae-ft-mse,
whisper-tiny from openai/whisper-tiny, and BiSeNet from the ManyOtherFunctions/face-parse-bisent
mirror of upstream's Google Drive file (the ResNet-18 file beside it is only read by upstream's
constructor; it is fetched so the folder matches upstream's, and never loaded here).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NamedTuple

from ...errors import WeightsError
from .weights import BISENET_FILE, RESNET_FILE, detect_layout, missing_weights, verify_weights

__all__ = ["HubFile", "FILES", "download_weights", "check_weights"]

log = logging.getLogger(__name__)


class HubFile(NamedTuple):
    repo_id: str
    filename: str  # path inside the hub repo
    folder: str  # folder under the model dir that mirrors the repo root

    @property
    def dest(self) -> str:
        return f"{self.folder}/{self.filename}" if self.folder else self.filename


FILES: tuple[HubFile, ...] = (
    HubFile("TMElyralab/MuseTalk", "musetalkV15/unet.pth", ""),
    HubFile("TMElyralab/MuseTalk", "musetalkV15/musetalk.json", ""),
    HubFile("stabilityai/sd-vae-ft-mse", "config.json", "sd-vae"),
    HubFile("stabilityai/sd-vae-ft-mse", "diffusion_pytorch_model.bin", "sd-vae"),
    HubFile("openai/whisper-tiny", "config.json", "whisper"),
    HubFile("openai/whisper-tiny", "pytorch_model.bin", "whisper"),
    HubFile("openai/whisper-tiny", "preprocessor_config.json", "whisper"),
    HubFile("ManyOtherFunctions/face-parse-bisent", "79999_iter.pth", "face-parse-bisent"),
    HubFile("ManyOtherFunctions/face-parse-bisent", "resnet18-5c106cde.pth", "face-parse-bisent"),
)
OPTIONAL = (BISENET_FILE, RESNET_FILE)


def download_weights(model_dir: Path) -> list[str]:
    """Fetch every file in FILES that is not there yet. Returns the ones downloaded.

    A file counts as there when the loader would accept what stands in its place (a
    `model.safetensors` for whisper's `pytorch_model.bin`), so the two never disagree.
    """
    from huggingface_hub import hf_hub_download

    model_dir = Path(model_dir)
    layout = detect_layout(model_dir)
    fetched = []
    for f in FILES:
        if layout.present(f.dest) is not None:
            continue
        log.info("downloading %s from %s", f.dest, f.repo_id)
        try:
            hf_hub_download(repo_id=f.repo_id, filename=f.filename, local_dir=str(model_dir / f.folder))
        except Exception as e:
            raise WeightsError(
                f"could not download {f.filename} from {f.repo_id} into {model_dir / f.dest}: {e}") from e
        fetched.append(f.dest)
    return fetched


def check_weights(model_dir: Path) -> dict[str, Any]:
    """What `weights check` prints: ok, the layout found, what is missing and what would fail."""
    model_dir = Path(model_dir)
    layout = detect_layout(model_dir)
    missing = missing_weights(model_dir)
    problems = [] if missing else verify_weights(model_dir)
    return {
        "ok": not missing and not problems,
        "model_dir": str(model_dir),
        "version": layout.version,
        "missing": missing,
        "problems": problems,
        "blend_mask": "bisenet" if layout.bisenet() is not None else "landmarks",
        "optional_missing": [rel for rel in OPTIONAL if not (model_dir / rel).is_file()],
    }
