"""The one module that knows where MuseTalk's weights live and how to load them.

Layout under MUSETALK_MODEL_DIR is upstream's (`download_weights.sh`):

    musetalkV15/unet.pth, musetalkV15/musetalk.json      v1.5 UNet (state dict + diffusers config)
    musetalk/pytorch_model.bin, musetalk/musetalk.json   v1.0 UNet (same architecture)
    sd-vae/config.json + diffusion_pytorch_model.{safetensors,bin}
    whisper/config.json, {model.safetensors,pytorch_model.bin}, preprocessor_config.json   (whisper-tiny)
    face-parse-bisent/79999_iter.pth (+ resnet18-5c106cde.pth)       optional: BiSeNet blend masks

Every file is read with `torch.load(weights_only=True)` (or safetensors), its keys and shapes are
compared with the module its config describes, and any problem is a WeightsError naming the file.
Modules are built on the meta device first, so a 3.4 GB UNet is never randomly initialised only
to be overwritten.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import WeightsError

__all__ = [
    "V15",
    "V10",
    "Layout",
    "UNET_FILES",
    "VAE_CONFIG",
    "VAE_WEIGHTS",
    "WHISPER_WEIGHTS",
    "WHISPER_FILES",
    "ALTERNATIVES",
    "BISENET_FILE",
    "RESNET_FILE",
    "detect_layout",
    "missing_weights",
    "read_config",
    "read_state_dict",
    "build_unet",
    "build_vae",
    "build_whisper_encoder",
    "load_unet",
    "load_vae",
    "load_whisper",
    "check_compatible",
    "check_state_dict",
    "rename_legacy_attention",
    "encoder_state",
    "dtype_for",
    "load_models",
    "verify_weights",
]

V15, V10 = "v1.5", "v1.0"

# (weights, config) relative to the model dir, per UNet version.
UNET_FILES: dict[str, tuple[str, str]] = {
    V15: ("musetalkV15/unet.pth", "musetalkV15/musetalk.json"),
    V10: ("musetalk/pytorch_model.bin", "musetalk/musetalk.json"),
}
VAE_CONFIG = "sd-vae/config.json"
VAE_WEIGHTS = ("sd-vae/diffusion_pytorch_model.safetensors", "sd-vae/diffusion_pytorch_model.bin")  # first wins
WHISPER_CONFIG, WHISPER_PREPROCESSOR = "whisper/config.json", "whisper/preprocessor_config.json"
# Upstream downloads the .bin; a folder saved by current transformers holds only the safetensors.
WHISPER_WEIGHTS = ("whisper/model.safetensors", "whisper/pytorch_model.bin")  # first wins, as for the VAE
WHISPER_FILES = (WHISPER_CONFIG, WHISPER_WEIGHTS[-1], WHISPER_PREPROCESSOR)
# A required file (upstream's name, last) and every file that may stand in for it, preferred first.
ALTERNATIVES: dict[str, tuple[str, ...]] = {VAE_WEIGHTS[-1]: VAE_WEIGHTS, WHISPER_WEIGHTS[-1]: WHISPER_WEIGHTS}
BISENET_FILE = "face-parse-bisent/79999_iter.pth"
RESNET_FILE = "face-parse-bisent/resnet18-5c106cde.pth"  # only upstream's constructor reads it

# What the pipeline's math fixes, whatever the files say (spec §1.2-1.4, §8).
WHISPER_HIDDEN_STATES = 5  # = audio.HIDDEN_STATES: embeddings + 4 layers, whisper-tiny's whole encoder
WHISPER_MEL_BINS = 80
WHISPER_POSITIONS = 1500  # = audio.SEGMENT_FEATURES: 30 s at 50 Hz (kept here: no torch import)
VAE_DOWNSCALE = 8  # 256² face -> 32² latent
_SHOWN = 3  # offending keys quoted per kind in an error message

_LEGACY_ATTENTION = re.compile(r"\.(query|key|value|proj_attn)\.(weight|bias)$")
_ATTENTION_RENAME = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


@dataclass(frozen=True)
class Layout:
    """Which UNet a model dir holds, and the files that version needs."""

    root: Path
    version: str  # V15 | V10
    unet_weights: str
    unet_config: str

    def required(self) -> list[str]:
        return [self.unet_weights, self.unet_config, VAE_CONFIG, VAE_WEIGHTS[-1], *WHISPER_FILES]

    def path(self, rel: str) -> Path:
        return self.root / rel

    def present(self, rel: str) -> str | None:
        """The file there that serves as `rel` (itself or a preferred alternative), or None."""
        return next((alt for alt in ALTERNATIVES.get(rel, (rel,)) if self.path(alt).is_file()), None)

    def vae_weights(self) -> str | None:
        return self.present(VAE_WEIGHTS[-1])

    def whisper_weights(self) -> str | None:
        return self.present(WHISPER_WEIGHTS[-1])

    def bisenet(self) -> Path | None:
        path = self.path(BISENET_FILE)
        return path if path.is_file() else None


def detect_layout(model_dir: Path) -> Layout:
    """v1.5 when `musetalkV15/` exists (upstream downloads both; v1.5 is the current model),
    else v1.0 when `musetalk/` exists, else v1.5 (and everything is missing).

    A half-present v1.5 folder does not fall back to v1.0 behind the user's back: its missing
    files are reported instead.
    """
    root = Path(model_dir)
    version = V10 if not (root / "musetalkV15").is_dir() and (root / "musetalk").is_dir() else V15
    weights, config = UNET_FILES[version]
    return Layout(root, version, weights, config)


def missing_weights(model_dir: Path) -> list[str]:
    """Required files absent under `model_dir`, relative to it, for the layout it holds."""
    layout = detect_layout(model_dir)
    missing = []
    for rel in layout.required():
        if layout.present(rel) is None:
            missing.append(f"{rel} (or {Path(VAE_WEIGHTS[0]).name})" if rel == VAE_WEIGHTS[-1] else rel)
    return missing


# --- reading -------------------------------------------------------------------------------


def read_config(layout: Layout, rel: str) -> dict[str, Any]:
    path = layout.path(rel)
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise WeightsError(f"{rel} is missing under {layout.root}") from e
    except (OSError, ValueError) as e:
        raise WeightsError(f"{rel} under {layout.root} is not a readable JSON config: {e}") from e
    if not isinstance(config, dict):
        raise WeightsError(f"{rel} under {layout.root} is not a JSON object")
    return config


def read_state_dict(layout: Layout, rel: str, *, mmap: bool = False) -> dict[str, Any]:
    """A flat {name: tensor} dict, read without executing any pickled code.

    `mmap` maps the file instead of reading it (for checks that only look at shapes); a loaded
    model never keeps tensors backed by a file someone might rewrite.
    """
    import torch

    path = layout.path(rel)
    if not path.is_file():
        raise WeightsError(f"{rel} is missing under {layout.root}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
            except RuntimeError:
                if not mmap:
                    raise
                state = torch.load(path, map_location="cpu", weights_only=True)  # a pre-zip file: no mmap
    except Exception as e:
        raise WeightsError(f"{rel} under {layout.root} could not be read as a weights-only state dict: {e}") from e
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{rel} under {layout.root} is not a plain state dict of tensors")
    return dict(state)


def check_state_dict(module: Any, state: Mapping[str, Any], rel: str, config_rel: str) -> None:
    """Same keys, same shapes, or a WeightsError that says which and where."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
    if not (missing or unexpected or wrong):
        return
    parts = []
    if wrong:
        shown = ", ".join(f"{k} {list(got[k])} in the file vs {list(expected[k])} from the config"
                          for k in wrong[:_SHOWN])
        parts.append(f"{len(wrong)} tensors have the wrong shape ({shown})")
    if missing:
        parts.append(f"{len(missing)} tensors are missing ({', '.join(missing[:_SHOWN])})")
    if unexpected:
        parts.append(f"{len(unexpected)} tensors are unexpected ({', '.join(unexpected[:_SHOWN])})")
    raise WeightsError(f"{rel} does not match the model described by {config_rel}: " + "; ".join(parts))


def _assign(module: Any, state: Mapping[str, Any], rel: str) -> Any:
    module.load_state_dict(state, strict=True, assign=True)
    left = [name for name, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if left:
        raise WeightsError(f"{rel}: no values for {', '.join(left[:_SHOWN])}")
    return module.eval().requires_grad_(False)


# --- building (meta device: shapes only, no memory, no random init) ----------------------


def build_unet(config: Mapping[str, Any]):
    import torch
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel.from_config(dict(config))


def build_vae(config: Mapping[str, Any]):
    import torch
    from diffusers import AutoencoderKL

    with torch.device("meta"):
        return AutoencoderKL.from_config(dict(config))


def build_whisper_encoder(config: Mapping[str, Any]):
    import torch
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    with torch.device("meta"):
        return WhisperEncoder(WhisperConfig(**{k: v for k, v in config.items() if not k.startswith("_")}))


# --- loading -----------------------------------------------------------------------------


def load_unet(layout: Layout):
    """The MuseTalk UNet, built from the version's musetalk.json and filled from its weights."""
    _check_wrong_version_file(layout)
    config = read_config(layout, layout.unet_config)
    if config.get("_class_name", "UNet2DConditionModel") != "UNet2DConditionModel":
        raise WeightsError(f"{layout.unet_config} describes a {config['_class_name']}, not a UNet2DConditionModel")
    try:
        unet = build_unet(config)
    except Exception as e:
        raise WeightsError(f"{layout.unet_config} is not a valid UNet2DConditionModel config: {e}") from e
    state = read_state_dict(layout, layout.unet_weights)
    check_state_dict(unet, state, layout.unet_weights, layout.unet_config)
    return _assign(unet, state, layout.unet_weights)


def load_vae(layout: Layout):
    """sd-vae-ft-mse's AutoencoderKL; legacy attention names are renamed as diffusers does."""
    config = read_config(layout, VAE_CONFIG)
    rel = layout.vae_weights()
    if rel is None:
        raise WeightsError(f"{VAE_WEIGHTS[-1]} (or .safetensors) is missing under {layout.root}")
    try:
        vae = build_vae(config)
    except Exception as e:
        raise WeightsError(f"{VAE_CONFIG} is not a valid AutoencoderKL config: {e}") from e
    state = rename_legacy_attention(read_state_dict(layout, rel), set(vae.state_dict()))
    check_state_dict(vae, state, rel, VAE_CONFIG)
    return _assign(vae, state, rel)


def rename_legacy_attention(state: dict[str, Any], wanted: set[str]) -> dict[str, Any]:
    """2022 checkpoints name the VAE attention `query/key/value/proj_attn`; diffusers now says
    `to_q/to_k/to_v/to_out.0`. Renamed only where the new name is one the module has."""
    out = {}
    for key, value in state.items():
        match = _LEGACY_ATTENTION.search(key)
        if match:
            new = key[: match.start()] + f".{_ATTENTION_RENAME[match.group(1)]}.{match.group(2)}"
            if new in wanted:
                key = new
                if value.ndim == 4:  # a 1x1 conv in the oldest exports, a linear layer now
                    value = value[:, :, 0, 0]
        out[key] = value
    return out


def load_whisper(layout: Layout):
    """(feature extractor, encoder) of whisper-tiny. Only the encoder's weights are kept."""
    from transformers import WhisperFeatureExtractor

    config = read_config(layout, WHISPER_CONFIG)
    weights = layout.whisper_weights()
    if weights is None:
        raise WeightsError(f"{WHISPER_WEIGHTS[-1]} (or {Path(WHISPER_WEIGHTS[0]).name}) is missing under {layout.root}")
    if not layout.path(WHISPER_PREPROCESSOR).is_file():
        raise WeightsError(f"{WHISPER_PREPROCESSOR} is missing under {layout.root}")
    try:
        extractor = WhisperFeatureExtractor.from_pretrained(str(layout.path("whisper")), local_files_only=True)
    except Exception as e:
        raise WeightsError(f"{WHISPER_PREPROCESSOR} under {layout.root} is not a Whisper feature extractor: {e}") from e
    try:
        encoder = build_whisper_encoder(config)
    except Exception as e:
        raise WeightsError(f"{WHISPER_CONFIG} is not a valid Whisper config: {e}") from e
    state = encoder_state(read_state_dict(layout, weights))
    check_state_dict(encoder, state, weights, WHISPER_CONFIG)
    return extractor, _assign(encoder, state, weights)


def encoder_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """The encoder's tensors out of a whole-model checkpoint (`model.encoder.*` in HF's files)."""
    for prefix in ("model.encoder.", "encoder."):
        picked = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if picked:
            return picked
    return dict(state)


def _check_wrong_version_file(layout: Layout) -> None:
    """A v1.0 file in the v1.5 folder (or the reverse) is a mix-up worth naming."""
    if layout.path(layout.unet_weights).is_file():
        return
    for version, (weights, _) in UNET_FILES.items():
        stray = layout.path(str(Path(layout.unet_weights).parent / Path(weights).name))
        if version != layout.version and stray.is_file():
            raise WeightsError(
                f"{layout.unet_weights} is missing under {layout.root}, but "
                f"{stray.relative_to(layout.root)} is there: that is the {version} file name. "
                f"Put the {version} weights in {Path(weights).parent}/ and the {layout.version} "
                f"weights at {layout.unet_weights}"
            )


def check_compatible(layout: Layout, unet_config: Mapping, vae_config: Mapping, whisper_config: Mapping) -> None:
    """The three models must fit each other the way the pipeline wires them (spec §8)."""
    latent = int(vae_config.get("latent_channels", 4))
    problems = []
    if unet_config.get("in_channels") != 2 * latent:
        problems.append(f"{layout.unet_config}: in_channels {unet_config.get('in_channels')} != "
                        f"2 x the VAE's latent_channels ({2 * latent}: masked + reference latents)")
    if unet_config.get("out_channels") != latent:
        problems.append(f"{layout.unet_config}: out_channels {unet_config.get('out_channels')} != "
                        f"the VAE's latent_channels {latent}")
    d_model = whisper_config.get("d_model")
    if unet_config.get("cross_attention_dim") != d_model:
        problems.append(f"{layout.unet_config}: cross_attention_dim {unet_config.get('cross_attention_dim')} "
                        f"!= whisper d_model {d_model}")
    if int(whisper_config.get("encoder_layers", -1)) + 1 != WHISPER_HIDDEN_STATES:
        problems.append(f"{WHISPER_CONFIG}: encoder_layers {whisper_config.get('encoder_layers')} gives "
                        f"{int(whisper_config.get('encoder_layers', -1)) + 1} hidden states, the UNet was "
                        f"trained on {WHISPER_HIDDEN_STATES} (whisper-tiny)")
    if whisper_config.get("num_mel_bins", WHISPER_MEL_BINS) != WHISPER_MEL_BINS or \
            whisper_config.get("max_source_positions", WHISPER_POSITIONS) != WHISPER_POSITIONS:
        problems.append(f"{WHISPER_CONFIG}: expected {WHISPER_MEL_BINS} mel bins and "
                        f"{WHISPER_POSITIONS} positions (30 s windows)")
    blocks = vae_config.get("block_out_channels", [])
    if 2 ** (len(blocks) - 1) != VAE_DOWNSCALE:
        problems.append(f"{VAE_CONFIG}: {len(blocks)} blocks downscale by {2 ** (len(blocks) - 1)}, "
                        f"the UNet works on 256/{VAE_DOWNSCALE} = 32² latents")
    if problems:
        raise WeightsError("; ".join(problems))


def dtype_for(device: str):
    """fp16 on CUDA (upstream's realtime path), fp32 on the CPU (no fast fp16 kernels there)."""
    import torch

    return torch.float16 if str(device).startswith("cuda") else torch.float32


def load_models(model_dir: Path, device: str):
    """Every model of the engine, checked against each other, on `device` in its dtype."""
    import torch

    from .models import MuseTalkModels

    layout = detect_layout(model_dir)
    missing = missing_weights(model_dir)
    if missing:
        raise WeightsError(f"MuseTalk {layout.version} weights are missing under {layout.root}: " + ", ".join(missing))
    check_compatible(layout, read_config(layout, layout.unet_config), read_config(layout, VAE_CONFIG),
                     read_config(layout, WHISPER_CONFIG))
    dtype = dtype_for(device)
    # nn.Module.to directly: diffusers' override only adds a warning about fp32 modules it has none of.
    unet = torch.nn.Module.to(load_unet(layout), device=device, dtype=dtype)
    vae = torch.nn.Module.to(load_vae(layout), device=device, dtype=dtype)
    extractor, whisper = load_whisper(layout)
    whisper = whisper.to(device=device, dtype=dtype)
    bisenet = None
    if (bisenet_path := layout.bisenet()) is not None:
        from .bisenet import load_bisenet

        # BiSeNet runs once per avatar frame at preparation; fp32 as upstream, whatever the device.
        bisenet = load_bisenet(bisenet_path, device)
    return MuseTalkModels(unet=unet, vae=vae, extractor=extractor, whisper=whisper, version=layout.version,
                          device=str(device), dtype=dtype, bisenet=bisenet)


def verify_weights(model_dir: Path) -> list[str]:
    """Every problem a load would hit, without loading: configs, compatibility, keys and shapes.

    Modules are built on the meta device and state dicts are memory-mapped, so this is cheap
    even for the 3.4 GB UNet. Returns one message per failing file; [] means it will load.
    """
    layout = detect_layout(model_dir)
    problems: list[str] = []

    def attempt(step) -> None:
        try:
            step()
        except WeightsError as e:
            problems.append(e.detail)

    def unet() -> None:
        _check_wrong_version_file(layout)
        check_state_dict(build_unet(read_config(layout, layout.unet_config)),
                         read_state_dict(layout, layout.unet_weights, mmap=True), layout.unet_weights,
                         layout.unet_config)

    def vae() -> None:
        rel = layout.vae_weights() or VAE_WEIGHTS[-1]
        module = build_vae(read_config(layout, VAE_CONFIG))
        state = rename_legacy_attention(read_state_dict(layout, rel, mmap=True), set(module.state_dict()))
        check_state_dict(module, state, rel, VAE_CONFIG)

    def whisper() -> None:
        rel = layout.whisper_weights() or WHISPER_WEIGHTS[-1]
        module = build_whisper_encoder(read_config(layout, WHISPER_CONFIG))
        check_state_dict(module, encoder_state(read_state_dict(layout, rel, mmap=True)), rel, WHISPER_CONFIG)
        if not layout.path(WHISPER_PREPROCESSOR).is_file():
            raise WeightsError(f"{WHISPER_PREPROCESSOR} is missing under {layout.root}")

    def compatible() -> None:
        check_compatible(layout, read_config(layout, layout.unet_config), read_config(layout, VAE_CONFIG),
                         read_config(layout, WHISPER_CONFIG))

    def bisenet() -> None:
        if (bisenet_path := layout.bisenet()) is not None:
            from .bisenet import load_bisenet

            load_bisenet(bisenet_path, "cpu")

    for step in (unet, vae, whisper, compatible, bisenet):
        attempt(step)
    return list(dict.fromkeys(problems))  # a missing config can fail two steps with one message
