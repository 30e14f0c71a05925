"""BiSeNet face parsing (19 CelebAMask-HQ classes), as MuseTalk uses it for the blend mask.

The network is the face-parsing.PyTorch variant upstream ships: a ResNet-18 context path with
two attention refinement modules, the spatial path replaced by ResNet's 1/8 feature, a feature
fusion module and a 1x1 classifier upsampled to the input size. Module and parameter names
match upstream's `face-parse-bisent/79999_iter.pth`, so that file loads with strict=True.

Upstream's constructor also reads `resnet18-5c106cde.pth` (ImageNet ResNet-18) to initialise
the backbone, and `79999_iter.pth` then overwrites every one of those tensors. Inference needs
only `79999_iter.pth`; the ResNet file is optional and never read here.

The two auxiliary heads (`conv_out16`, `conv_out32`) only served training. Their weights are in
the file, so the modules exist for strict loading, but `forward` does not run them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ...errors import InvalidInput, WeightsError

__all__ = [
    "PARSE_SIZE",
    "N_CLASSES",
    "SKIN",
    "NOSE",
    "MOUTH",
    "UPPER_LIP",
    "LOWER_LIP",
    "BiSeNet",
    "load_bisenet",
    "preprocess",
    "parse",
]

PARSE_SIZE = 512  # upstream resizes every blend square to this before parsing
N_CLASSES = 19
# CelebAMask-HQ label ids (0 background, 2-9 brows/eyes/glasses/ears/earring, 14-18 neck,
# necklace, cloth, hair, hat); the mask needs these five.
SKIN, NOSE, MOUTH, UPPER_LIP, LOWER_LIP = 1, 10, 11, 12, 13

# torchvision's ImageNet normalisation, which the checkpoint was trained with.
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)
_MAX_U8 = 255.0
_SHOWN_KEYS = 5  # offending keys named in a WeightsError


class ConvBnRelu(nn.Module):
    def __init__(self, c_in: int, c_out: int, k: int = 3, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, stride, padding=k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample: nn.Sequential | None = None
        if c_in != c_out or stride != 1:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(shortcut + y)


def _stage(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1))


class ResNet18(nn.Module):
    """The backbone without its classifier; returns the 1/8, 1/16 and 1/32 features."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        self.layer1 = _stage(64, 64, 1)
        self.layer2 = _stage(64, 128, 2)
        self.layer3 = _stage(128, 256, 2)
        self.layer4 = _stage(256, 512, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.layer1(self.maxpool(F.relu(self.bn1(self.conv1(x)))))  # (B, 64, H/4, W/4)
        feat8 = self.layer2(x)  # (B, 128, H/8, W/8)
        feat16 = self.layer3(feat8)  # (B, 256, H/16, W/16)
        return feat8, feat16, self.layer4(feat16)  # last: (B, 512, H/32, W/32)


class AttentionRefinement(nn.Module):
    """A 3x3 conv whose output channels are reweighted by a sigmoid of their global average."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = ConvBnRelu(c_in, c_out)
        self.conv_atten = nn.Conv2d(c_out, c_out, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        return feat * torch.sigmoid(self.bn_atten(self.conv_atten(F.adaptive_avg_pool2d(feat, 1))))


class ContextPath(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.resnet = ResNet18()
        self.arm16 = AttentionRefinement(256, 128)
        self.arm32 = AttentionRefinement(512, 128)
        self.conv_head32 = ConvBnRelu(128, 128)
        self.conv_head16 = ConvBnRelu(128, 128)
        self.conv_avg = ConvBnRelu(512, 128, k=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat8, feat16, feat32 = self.resnet(x)
        # The global context (1x1) broadcasts over the 1/32 map, as a nearest upsample would.
        glob = self.conv_avg(F.adaptive_avg_pool2d(feat32, 1))
        up32 = F.interpolate(self.arm32(feat32) + glob, size=feat16.shape[2:], mode="nearest")
        up32 = self.conv_head32(up32)  # (B, 128, H/16, W/16)
        up16 = F.interpolate(self.arm16(feat16) + up32, size=feat8.shape[2:], mode="nearest")
        return feat8, self.conv_head16(up16)  # both (B, 128, H/8, W/8)


class FeatureFusion(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.convblk = ConvBnRelu(c_in, c_out, k=1)
        self.conv1 = nn.Conv2d(c_out, c_out // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(c_out // 4, c_out, 1, bias=False)

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([spatial, context], dim=1))
        atten = torch.sigmoid(self.conv2(F.relu(self.conv1(F.adaptive_avg_pool2d(feat, 1)))))
        return feat * atten + feat


class OutputHead(nn.Module):
    def __init__(self, c_in: int, c_mid: int, n_classes: int) -> None:
        super().__init__()
        self.conv = ConvBnRelu(c_in, c_mid)
        self.conv_out = nn.Conv2d(c_mid, n_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """(B, 3, H, W) ImageNet-normalised RGB -> (B, 19, H, W) class logits."""

    def __init__(self, n_classes: int = N_CLASSES) -> None:
        super().__init__()
        self.cp = ContextPath()
        self.ffm = FeatureFusion(256, 256)
        self.conv_out = OutputHead(256, 256, n_classes)
        self.conv_out16 = OutputHead(128, 64, n_classes)  # training-only auxiliary heads
        self.conv_out32 = OutputHead(128, 64, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat8, context8 = self.cp(x)
        logits = self.conv_out(self.ffm(feat8, context8))  # (B, 19, H/8, W/8)
        return F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=True)


def load_bisenet(path: Path, device: torch.device | str, dtype: torch.dtype = torch.float32) -> BiSeNet:
    """BiSeNet with the weights of `path` (upstream's 79999_iter.pth), in eval mode on `device`."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: BiSeNet weights not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises pickle, zip and runtime errors alike for a bad file
        raise WeightsError(f"{path}: not a readable torch state dict ({e})") from e
    model = BiSeNet()
    _check_state(path, state, model.state_dict())
    model.load_state_dict(state, strict=False)  # _check_state has done what strict would
    return model.to(device=device, dtype=dtype).eval()


def _check_state(path: Path, state: object, expected: Mapping[str, torch.Tensor]) -> None:
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: expected a flat state dict of tensors")
    # BatchNorm step counters only matter in training; older checkpoints may lack them.
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    problems = [(name, keys) for name, keys in (("missing", missing), ("unexpected", unexpected),
                                                 ("wrong shape", wrong)) if keys]
    if problems:
        detail = "; ".join(f"{len(keys)} {name}: {', '.join(keys[:_SHOWN_KEYS])}" for name, keys in problems)
        raise WeightsError(f"{path}: does not fit BiSeNet ({detail})")


def preprocess(square_rgb: np.ndarray, device: torch.device) -> torch.Tensor:
    """(S, S, 3) uint8 RGB -> (1, 3, 512, 512) float32 ImageNet-normalised, on `device`.

    Upstream's steps exactly: PIL BILINEAR resize of the RGB image (8-bit, PIL's own rounding
    between its two passes, antialiased when shrinking), then torchvision's ToTensor (/255) and
    Normalize ((x - mean) / std). torch's antialiased bilinear came within one grey level of
    PIL, which moved the parse enough to shift the blend mask by up to 10 levels.
    """
    if square_rgb.ndim != 3 or square_rgb.shape[2] != 3 or square_rgb.dtype != np.uint8:
        raise InvalidInput(f"BiSeNet wants an (S, S, 3) uint8 RGB image, got {square_rgb.shape} {square_rgb.dtype}")
    image = Image.fromarray(np.ascontiguousarray(square_rgb))  # mode RGB
    resized = np.array(image.resize((PARSE_SIZE, PARSE_SIZE), Image.Resampling.BILINEAR))  # (512, 512, 3)
    x = torch.from_numpy(resized).to(device).permute(2, 0, 1)[None].contiguous().float() / _MAX_U8
    mean = torch.tensor(_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(_STD, device=device).view(1, 3, 1, 1)
    return (x - mean) / std


def parse(model: BiSeNet, square_rgb: np.ndarray) -> np.ndarray:
    """(512, 512) uint8 class labels for one (S, S, 3) uint8 RGB blend square.

    Runs on the model's own device and dtype; the argmax happens there too, so only the
    labels cross to the host (upstream copies all 19 float maps to the CPU first).
    """
    p = next(model.parameters())
    with torch.inference_mode():
        x = preprocess(square_rgb, p.device)
        logits = model(x.to(p.dtype))  # (1, 19, 512, 512)
        return logits[0].argmax(dim=0).to(torch.uint8).cpu().numpy()
