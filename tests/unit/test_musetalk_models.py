"""Latent layout and decode: [masked | reference], lower half -1, posterior mean, 0.18215 (spec §3.5, §4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musetalk_server.engines.musetalk import models as M
from musetalk_server.engines.musetalk.weights import detect_layout, load_unet, load_vae


@pytest.fixture(scope="module")
def tiny(musetalk_dir):
    layout = detect_layout(musetalk_dir)
    return load_unet(layout), load_vae(layout)


def faces(n: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, M.FACE_SIZE, M.FACE_SIZE, 3), dtype=np.uint8)


class Spy:
    """Records what the wrapped VAE is asked to encode."""

    def __init__(self, vae) -> None:
        self.vae, self.config, self.seen = vae, vae.config, []

    def encode(self, x):
        self.seen.append(x.clone())
        return self.vae.encode(x)


def test_faces_to_tensor_is_rgb_in_minus_one_to_one():
    bgr = np.zeros((1, 256, 256, 3), np.uint8)
    bgr[..., 2] = 255  # red in BGR
    x = M.faces_to_tensor(bgr, "cpu", torch.float32)
    assert x.shape == (1, 3, 256, 256)
    assert torch.all(x[0, 0] == 1) and torch.all(x[0, 1:] == -1)


def test_latents_are_masked_then_reference_at_0_18215(tiny):
    _, vae = tiny
    assert M.latent_scale(vae) == pytest.approx(0.18215)
    crops = faces()
    spy = Spy(vae)
    with torch.inference_mode():
        lat = M.encode_latents(spy, crops, "cpu", torch.float32)
        x = M.faces_to_tensor(crops, "cpu", torch.float32)
        masked_in = spy.seen[0][:2]
        ref_in = spy.seen[0][2:]
        assert lat.shape == (2, 8, 32, 32)
        # what went into the encoder: the masked copy is the crop with rows 128..255 at exactly -1
        assert torch.all(masked_in[:, :, M.MASK_ROW:] == -1)
        assert torch.equal(masked_in[:, :, :M.MASK_ROW], x[:, :, :M.MASK_ROW]) and torch.equal(ref_in, x)
        # channels 0-3 masked, 4-7 reference, each the posterior mean x 0.18215
        want_masked = vae.encode(M.masked_faces(x)).latent_dist.mean * 0.18215
        want_ref = vae.encode(x).latent_dist.mean * 0.18215
    assert torch.allclose(lat[:, :4], want_masked, atol=1e-5)
    assert torch.allclose(lat[:, 4:], want_ref, atol=1e-5)


def test_latents_are_deterministic(tiny):
    _, vae = tiny
    with torch.inference_mode():
        a = M.encode_latents(vae, faces(), "cpu", torch.float32)
        b = M.encode_latents(vae, faces(), "cpu", torch.float32)
    assert torch.equal(a, b)  # the posterior mean: no sampling noise


def test_generate_and_decode_shapes(tiny):
    unet, vae = tiny
    with torch.inference_mode():
        lat = M.encode_latents(vae, faces(3), "cpu", torch.float32)
        out = M.generate(unet, vae, lat, torch.randn(3, 50, 384))
        dec = M.decode_faces(vae, lat[:, 4:])
    assert out.shape == dec.shape == (3, 256, 256, 3) and out.dtype == dec.dtype == torch.uint8


def test_decode_divides_by_the_scale(tiny):
    _, vae = tiny
    lat = torch.randn(1, 4, 32, 32)
    with torch.inference_mode():
        want = vae.decode(lat / 0.18215).sample
        want = ((want / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
        assert torch.equal(M.decode_faces(vae, lat), want)


class UNetSpy:
    """Records the UNet call, then runs the real one."""

    def __init__(self, unet) -> None:
        self.unet, self.calls = unet, []

    def __call__(self, latents, t, encoder_hidden_states):
        self.calls.append((latents.clone(), t.clone(), encoder_hidden_states.clone()))
        return self.unet(latents, t, encoder_hidden_states=encoder_hidden_states)


def test_generate_is_one_unet_pass_at_t0_then_the_decode_of_its_output(tiny):
    unet, vae = tiny
    spy = UNetSpy(unet)
    with torch.inference_mode():
        lat = M.encode_latents(vae, faces(3), "cpu", torch.float32)
        tokens = torch.randn(3, 50, 384)
        out = M.generate(spy, vae, lat, tokens)
        [(seen_lat, t, seen_tokens)] = spy.calls  # exactly one pass: no scheduler loop
        assert t.dtype == torch.long and t.shape == (3,) and torch.all(t == 0)
        assert torch.equal(seen_lat, lat) and torch.equal(seen_tokens, tokens)
        want = M.decode_faces(vae, unet(lat, t, encoder_hidden_states=tokens).sample)
    assert torch.equal(out, want)


def test_face_tensor_is_contiguous_nchw():
    x = M.faces_to_tensor(faces(), "cpu", torch.float32)
    assert x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)
    assert M.masked_faces(x).is_contiguous()


def test_masked_latents_match_a_float64_contiguous_reference(tiny):
    """Parity with upstream's contiguous input: a channels-last tensor sent the VAE through torch's
    CPU channels-last GroupNorm, which put the masked half ~3e-4 off (the reference half ~1e-6)."""
    import copy

    _, vae = tiny
    vae64 = copy.deepcopy(vae).double()
    crops = faces(seed=5)
    with torch.inference_mode():
        lat = M.encode_latents(vae, crops, "cpu", torch.float32).double()
        x64 = torch.from_numpy(crops[..., ::-1].copy()).permute(0, 3, 1, 2).contiguous().double() / 255 * 2 - 1
        want_masked = vae64.encode(M.masked_faces(x64)).latent_dist.mean * M.LATENT_SCALE
        want_ref = vae64.encode(x64).latent_dist.mean * M.LATENT_SCALE
    assert (lat[:, :4] - want_masked).abs().max() < 2e-6
    assert (lat[:, 4:] - want_ref).abs().max() < 2e-6
