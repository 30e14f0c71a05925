"""The tensor math between a 256² face crop and a generated 256² face (spec §3.5, §4).

Pure torch: the modules come in as arguments, already on their device and dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .crop import FACE_SIZE

__all__ = [
    "FACE_SIZE",
    "MASK_ROW",
    "LATENT_SCALE",
    "TIMESTEP",
    "MuseTalkModels",
    "faces_to_tensor",
    "masked_faces",
    "encode_latents",
    "decode_faces",
    "generate",
]

MASK_ROW = FACE_SIZE // 2  # rows from here down are blanked in the masked copy (the mouth half)
LATENT_SCALE = 0.18215  # SD-1.x VAE latent scale; sd-vae-ft-mse's config leaves diffusers' default
TIMESTEP = 0  # one UNet pass at t = 0 predicts the clean latent: no scheduler, no noise


@dataclass
class MuseTalkModels:
    """Everything the engine runs, loaded once, on one device in one dtype."""

    unet: Any  # diffusers UNet2DConditionModel
    vae: Any  # diffusers AutoencoderKL
    extractor: Any  # transformers WhisperFeatureExtractor (CPU, numpy)
    whisper: Any  # transformers WhisperEncoder
    version: str  # "v1.5" | "v1.0"
    device: str
    dtype: torch.dtype
    bisenet: Any = None  # BiSeNet face parser, or None: landmark masks


def latent_scale(vae: Any) -> float:
    return float(getattr(vae.config, "scaling_factor", LATENT_SCALE) or LATENT_SCALE)


def faces_to_tensor(faces_bgr: np.ndarray, device: str, dtype: torch.dtype) -> torch.Tensor:
    """(B, 256, 256, 3) uint8 BGR -> (B, 3, 256, 256) RGB in [-1, 1], contiguous NCHW.

    The permuted view alone would be channels-last in memory, and every op after it (the mask's
    clone, the VAE) keeps that format. On the CPU torch's channels-last GroupNorm is much less
    accurate: the masked half's latents then drift ~3e-4 from upstream's, about 3 LSB once
    decoded. Upstream's tensor is contiguous, so this one is made so.
    """
    x = torch.from_numpy(np.ascontiguousarray(faces_bgr[..., ::-1])).to(device)
    x = x.permute(0, 3, 1, 2).contiguous().to(torch.float32) / 255.0
    return (x * 2.0 - 1.0).to(dtype)


def masked_faces(x: torch.Tensor) -> torch.Tensor:
    """The lower half set to -1: upstream multiplies the [0, 1] image by a 0/1 row mask, then
    normalises, so the blanked rows are exactly -1 (black)."""
    masked = x.clone()
    masked[:, :, MASK_ROW:, :] = -1.0
    return masked


def encode_latents(vae: Any, faces_bgr: np.ndarray, device: str, dtype: torch.dtype) -> torch.Tensor:
    """(B, 256, 256, 3) uint8 BGR crops -> (B, 8, 32, 32) = [masked 4 | reference 4] x 0.18215.

    Quirk §9.4: upstream takes `latent_dist.sample()`, so every preparation differs. We take the
    posterior mean (training's `.mode()`): avatars are deterministic and the noise was never part
    of what the UNet learned to expect.
    """
    x = faces_to_tensor(faces_bgr, device, dtype)  # (B, 3, 256, 256)
    both = torch.cat([masked_faces(x), x], dim=0)  # (2B, 3, 256, 256): one encoder call
    lat = vae.encode(both).latent_dist.mean * latent_scale(vae)  # (2B, 4, 32, 32)
    masked, reference = lat.chunk(2, dim=0)
    return torch.cat([masked, reference], dim=1)  # (B, 8, 32, 32), channel order [masked, reference]


def decode_faces(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    """(B, 4, 32, 32) -> (B, 256, 256, 3) uint8 RGB, still on the device (1 byte/px to copy back)."""
    img = vae.decode(latents / latent_scale(vae)).sample  # (B, 3, 256, 256) in about [-1, 1]
    img = (img.float() / 2 + 0.5).clamp(0, 1) * 255
    return img.round().to(torch.uint8).permute(0, 2, 3, 1)


def generate(unet: Any, vae: Any, latents: torch.Tensor, audio_tokens: torch.Tensor) -> torch.Tensor:
    """(B, 8, 32, 32) avatar latents + (B, 50, 384) audio tokens (PE added) -> (B, 256, 256, 3) uint8 RGB."""
    t = torch.full((latents.shape[0],), TIMESTEP, dtype=torch.long, device=latents.device)
    pred = unet(latents, t, encoder_hidden_states=audio_tokens).sample  # (B, 4, 32, 32)
    return decode_faces(vae, pred.to(vae.dtype))
