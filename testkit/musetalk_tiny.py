"""MuseTalk model dirs for tests and benches: the real classes, random weights, upstream's layout.

`tiny` keeps every structural fact the pipeline depends on (UNet in 8 / out 4 channels with
384-wide cross-attention, a 4-block VAE that maps 256² to 32², a whisper encoder 384 wide with
4 layers so there are 5 hidden states, 80 mel bins, 1500 positions) and shrinks the rest.
`full` is upstream's exact configuration (spec §1.2-1.4), for benches and GPU tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

UNET_FULL = {
    "_class_name": "UNet2DConditionModel",
    "_diffusers_version": "0.6.0.dev0",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 384,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 8,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
UNET_TINY = {
    **UNET_FULL,
    "attention_head_dim": 2,
    "block_out_channels": [16, 32],
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "sample_size": 32,
}
# A v1.0 tiny UNet that differs in shape from the v1.5 one, so a config/weights mix-up shows.
UNET_TINY_V10 = {**UNET_TINY, "block_out_channels": [8, 16], "norm_num_groups": 4}

VAE_FULL = {
    "_class_name": "AutoencoderKL",
    "_diffusers_version": "0.4.2",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 256,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
VAE_TINY = {**VAE_FULL, "block_out_channels": [4, 8, 8, 8], "layers_per_block": 1, "norm_num_groups": 4}

WHISPER_FULL = {
    "architectures": ["WhisperForConditionalGeneration"],
    "model_type": "whisper",
    "d_model": 384,
    "encoder_layers": 4,
    "decoder_layers": 4,
    "encoder_attention_heads": 6,
    "decoder_attention_heads": 6,
    "encoder_ffn_dim": 1536,
    "decoder_ffn_dim": 1536,
    "num_mel_bins": 80,
    "max_source_positions": 1500,
    "max_target_positions": 448,
    "vocab_size": 51865,
    "activation_function": "gelu",
    "pad_token_id": 50257,
    "bos_token_id": 50257,
    "eos_token_id": 50257,
    "decoder_start_token_id": 50258,
}
WHISPER_TINY = {
    **WHISPER_FULL,
    "decoder_layers": 1,
    "encoder_ffn_dim": 64,
    "decoder_ffn_dim": 32,
    "max_target_positions": 16,
    "vocab_size": 8,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "decoder_start_token_id": 1,
}

CONFIGS = {"tiny": (UNET_TINY, VAE_TINY, WHISPER_TINY), "full": (UNET_FULL, VAE_FULL, WHISPER_FULL)}


def build_models(size: str = "tiny", seed: int = 0, unet_config: dict | None = None):
    """(unet, vae, whisper model) randomly initialised, fp32 on the CPU."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    unet_cfg, vae_cfg, whisper_cfg = CONFIGS[size]
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config(unet_config or unet_cfg)
    vae = AutoencoderKL.from_config(vae_cfg)
    whisper = WhisperForConditionalGeneration(WhisperConfig(**whisper_cfg))
    if size == "tiny":
        _liven(unet)
    return unet.eval(), vae.eval(), whisper.eval()


def _liven(unet) -> None:
    # diffusers zero-initialises nothing here, but random conv_out weights are small; scale them
    # so the generated face visibly depends on the audio in the tests.
    with torch.no_grad():
        unet.conv_out.weight.mul_(10)


def write_model_dir(root: Path, *, size: str = "tiny", version: str = "v1.5", seed: int = 0,
                    bisenet: bool = False, vae_format: str = "bin", whisper_format: str = "bin") -> Path:
    """Save random models in upstream's file layout under `root`; returns `root`.

    `whisper_format="safetensors"` saves whisper as current transformers does (`save_pretrained`:
    its own config.json, model.safetensors, no pytorch_model.bin) instead of upstream's download.
    """
    from transformers import WhisperFeatureExtractor

    unet_cfg = (UNET_TINY_V10 if version == "v1.0" and size == "tiny" else CONFIGS[size][0])
    unet, vae, whisper = build_models(size, seed, unet_cfg)
    root = Path(root)
    sub, weights = ("musetalkV15", "unet.pth") if version == "v1.5" else ("musetalk", "pytorch_model.bin")
    (root / sub).mkdir(parents=True, exist_ok=True)
    torch.save(unet.state_dict(), root / sub / weights)
    (root / sub / "musetalk.json").write_text(json.dumps(unet_cfg, indent=2))

    (root / "sd-vae").mkdir(exist_ok=True)
    (root / "sd-vae" / "config.json").write_text(json.dumps(CONFIGS[size][1], indent=2))
    state = _legacy_attention_names(vae.state_dict())  # as the 2022 sd-vae-ft-mse file names them
    if vae_format == "safetensors":
        from safetensors.torch import save_file

        target = root / "sd-vae" / "diffusion_pytorch_model.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(target))
    else:
        torch.save(state, root / "sd-vae" / "diffusion_pytorch_model.bin")

    (root / "whisper").mkdir(exist_ok=True)
    if whisper_format == "safetensors":
        whisper.save_pretrained(str(root / "whisper"), safe_serialization=True)
    else:
        (root / "whisper" / "config.json").write_text(json.dumps(CONFIGS[size][2], indent=2))
        torch.save(whisper.state_dict(), root / "whisper" / "pytorch_model.bin")
    WhisperFeatureExtractor(feature_size=80).save_pretrained(str(root / "whisper"))
    if bisenet:
        write_bisenet(root)
    return root


def write_bisenet(root: Path, seed: int = 0) -> Path:
    """A random BiSeNet state dict at face-parse-bisent/79999_iter.pth (needs the face-parsing module)."""
    from musetalk_server.engines.musetalk.bisenet import BiSeNet

    torch.manual_seed(seed)
    path = Path(root) / "face-parse-bisent" / "79999_iter.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(BiSeNet(n_classes=19).state_dict(), path)
    return path


def _legacy_attention_names(state: dict) -> dict:
    out = {}
    for k, v in state.items():
        if ".attentions." in k:
            for new, old in ((".to_q.", ".query."), (".to_k.", ".key."), (".to_v.", ".value."),
                             (".to_out.0.", ".proj_attn.")):
                k = k.replace(new, old)
        out[k] = v
    return out
