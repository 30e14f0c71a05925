"""Weights: upstream layout, both versions, clear errors naming the file, `weights check|download`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from musetalk_server.cli import main
from musetalk_server.engines.musetalk import download
from musetalk_server.engines.musetalk import weights as W
from musetalk_server.errors import WeightsError
from testkit.musetalk_tiny import UNET_TINY, write_model_dir

V15_FILES = ["musetalkV15/unet.pth", "musetalkV15/musetalk.json", "sd-vae/config.json",
             "sd-vae/diffusion_pytorch_model.bin (or diffusion_pytorch_model.safetensors)",
             "whisper/config.json", "whisper/pytorch_model.bin", "whisper/preprocessor_config.json"]


@pytest.fixture(scope="module")
def v10_dir(tmp_path_factory):
    return write_model_dir(tmp_path_factory.mktemp("v10") / "models", version="v1.0")


@pytest.fixture
def models(musetalk_dir, tmp_path) -> Path:
    """A private copy of the tiny v1.5 dir, free to break."""
    return Path(shutil.copytree(musetalk_dir, tmp_path / "models"))


def test_missing_weights_lists_exactly_the_missing_files(models, tmp_path):
    assert W.missing_weights(models) == []
    (models / "musetalkV15" / "unet.pth").unlink()
    (models / "whisper" / "preprocessor_config.json").unlink()
    assert W.missing_weights(models) == ["musetalkV15/unet.pth", "whisper/preprocessor_config.json"]
    assert W.missing_weights(tmp_path / "nothing") == V15_FILES


def test_v10_layout_loads_with_v10_semantics(v10_dir):
    layout = W.detect_layout(v10_dir)
    assert layout.version == "v1.0" and W.missing_weights(v10_dir) == []
    assert layout.unet_weights == "musetalk/pytorch_model.bin"
    models = W.load_models(v10_dir, "cpu")
    assert models.version == "v1.0" and models.dtype == torch.float32 and models.bisenet is None


def test_both_versions_present_picks_v15(models, v10_dir):
    shutil.copytree(v10_dir / "musetalk", models / "musetalk")
    assert W.detect_layout(models).version == "v1.5"
    assert W.load_models(models, "cpu").version == "v1.5"


def test_half_present_v15_does_not_fall_back_to_v10(models, v10_dir):
    shutil.copytree(v10_dir / "musetalk", models / "musetalk")
    (models / "musetalkV15" / "unet.pth").unlink()
    assert W.missing_weights(models) == ["musetalkV15/unet.pth"]
    with pytest.raises(WeightsError, match="musetalkV15/unet.pth"):
        W.load_models(models, "cpu")


def test_missing_file_is_named(models):
    (models / "sd-vae" / "config.json").unlink()
    with pytest.raises(WeightsError, match="sd-vae/config.json"):
        W.load_vae(W.detect_layout(models))
    with pytest.raises(WeightsError, match="sd-vae/config.json"):
        W.load_models(models, "cpu")


def test_a_reshaped_tensor_is_named_with_both_shapes(models):
    path = models / "musetalkV15" / "unet.pth"
    state = torch.load(path, weights_only=True)
    state["conv_in.weight"] = state["conv_in.weight"].reshape(-1, 8, 9)
    torch.save(state, path)
    with pytest.raises(WeightsError) as e:
        W.load_unet(W.detect_layout(models))
    msg = str(e.value)
    assert "musetalkV15/unet.pth" in msg and "musetalkV15/musetalk.json" in msg
    assert "conv_in.weight [16, 8, 9] in the file vs [16, 8, 3, 3] from the config" in msg


def test_a_missing_tensor_is_named(models):
    path = models / "whisper" / "pytorch_model.bin"
    state = torch.load(path, weights_only=True)
    del state["model.encoder.layers.3.fc1.weight"]
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"whisper/pytorch_model.bin .*1 tensors are missing \(layers.3.fc1.weight"):
        W.load_whisper(W.detect_layout(models))


def test_config_of_one_version_with_the_other_weights(models, v10_dir):
    shutil.copy(v10_dir / "musetalk" / "musetalk.json", models / "musetalkV15" / "musetalk.json")
    with pytest.raises(WeightsError, match="musetalkV15/unet.pth does not match the model described by "
                                           "musetalkV15/musetalk.json"):
        W.load_unet(W.detect_layout(models))


def test_v10_weights_in_the_v15_folder_are_called_out(models, v10_dir):
    (models / "musetalkV15" / "unet.pth").unlink()
    shutil.copy(v10_dir / "musetalk" / "pytorch_model.bin", models / "musetalkV15" / "pytorch_model.bin")
    with pytest.raises(WeightsError, match="musetalkV15/pytorch_model.bin is there: that is the v1.0 file name"):
        W.load_unet(W.detect_layout(models))


class Payload:
    """Stands for arbitrary pickled code: weights_only refuses to build it."""


def test_pickled_code_is_refused(models):
    torch.save({"conv_in.weight": Payload()}, models / "musetalkV15" / "unet.pth")
    with pytest.raises(WeightsError, match="musetalkV15/unet.pth .*weights-only"):
        W.load_unet(W.detect_layout(models))


def test_models_that_do_not_fit_each_other(models):
    cfg = models / "musetalkV15" / "musetalk.json"
    cfg.write_text(json.dumps({**UNET_TINY, "cross_attention_dim": 256}))
    with pytest.raises(WeightsError, match="cross_attention_dim 256 != whisper d_model 384"):
        W.load_models(models, "cpu")


def test_legacy_vae_attention_names_and_safetensors(tmp_path):
    bin_dir = write_model_dir(tmp_path / "a", seed=3)
    st_dir = write_model_dir(tmp_path / "b", seed=3, vae_format="safetensors")
    raw = torch.load(bin_dir / "sd-vae" / "diffusion_pytorch_model.bin", weights_only=True)
    assert any(k.endswith(".query.weight") for k in raw)  # written the 2022 way
    a, b = W.load_vae(W.detect_layout(bin_dir)), W.load_vae(W.detect_layout(st_dir))
    assert W.detect_layout(st_dir).vae_weights().endswith(".safetensors")
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=False):
        assert ka == kb and torch.equal(va, vb)


def test_weights_check_cli_exit_codes(models, capsys):
    assert main(["weights", "check", "--model-dir", str(models)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["version"] == "v1.5" and report["blend_mask"] == "landmarks"
    assert report["optional_missing"] == ["face-parse-bisent/79999_iter.pth", "face-parse-bisent/resnet18-5c106cde.pth"]

    (models / "whisper" / "config.json").unlink()
    assert main(["weights", "check", "--model-dir", str(models)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert not report["ok"] and report["missing"] == ["whisper/config.json"]


def test_weights_check_finds_a_bad_shape_without_loading(models):
    path = models / "sd-vae" / "diffusion_pytorch_model.bin"
    state = torch.load(path, weights_only=True)
    state["decoder.conv_out.bias"] = torch.zeros(4)
    torch.save(state, path)
    report = download.check_weights(models)
    assert not report["ok"] and report["missing"] == []
    assert len(report["problems"]) == 1 and "decoder.conv_out.bias [4]" in report["problems"][0]


def test_download_fetches_exactly_the_upstream_files(tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    def fake_download(*, repo_id, filename, local_dir):
        calls.append((repo_id, filename))
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"x")
        return str(target)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    (tmp_path / "whisper").mkdir()
    (tmp_path / "whisper" / "config.json").write_text("{}")  # already there: not fetched again
    got = download.download_weights(tmp_path)
    assert calls == [
        ("TMElyralab/MuseTalk", "musetalkV15/unet.pth"),
        ("TMElyralab/MuseTalk", "musetalkV15/musetalk.json"),
        ("stabilityai/sd-vae-ft-mse", "config.json"),
        ("stabilityai/sd-vae-ft-mse", "diffusion_pytorch_model.bin"),
        ("openai/whisper-tiny", "pytorch_model.bin"),
        ("openai/whisper-tiny", "preprocessor_config.json"),
        ("ManyOtherFunctions/face-parse-bisent", "79999_iter.pth"),
        ("ManyOtherFunctions/face-parse-bisent", "resnet18-5c106cde.pth"),
    ]
    assert "whisper/config.json" not in got and W.missing_weights(tmp_path) == []
    assert (tmp_path / "sd-vae" / "diffusion_pytorch_model.bin").is_file()
    assert (tmp_path / "face-parse-bisent" / "79999_iter.pth").is_file()


def test_download_failure_names_the_file(tmp_path, monkeypatch, capsys):
    import huggingface_hub

    def offline(**kw):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    assert main(["weights", "download", "--model-dir", str(tmp_path)]) == 1
    err = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert "musetalkV15/unet.pth" in err["detail"] and "TMElyralab/MuseTalk" in err["detail"]


def test_auto_takes_musetalk_only_with_weights_and_cuda(musetalk_dir, v10_dir, tmp_path):
    from musetalk_server.engines.registry import resolve_engine_name

    assert resolve_engine_name("auto", model_dir=musetalk_dir, cuda=True) == "musetalk"
    assert resolve_engine_name("auto", model_dir=v10_dir, cuda=True) == "musetalk"
    assert resolve_engine_name("auto", model_dir=musetalk_dir, cuda=False) == "lite"
    assert resolve_engine_name("auto", model_dir=tmp_path, cuda=True) == "lite"


def test_the_full_size_configs_build_upstream_models():
    """Spec §1.2-1.4 on the meta device (no memory): 849,947,844 UNet params, 8 heads everywhere."""
    from testkit.musetalk_tiny import UNET_FULL, VAE_FULL, WHISPER_FULL

    unet, vae, whisper = W.build_unet(UNET_FULL), W.build_vae(VAE_FULL), W.build_whisper_encoder(WHISPER_FULL)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(unet) == 849_947_844
    assert round(count(vae) / 1e6, 1) == 83.7 and round(count(whisper) / 1e6, 1) == 8.2
    blocks = [b for m in unet.modules() for b in getattr(m, "transformer_blocks", [])]
    assert len(blocks) == 16 and {b.attn1.heads for b in blocks} == {8}
    assert {b.attn2.to_k.in_features for b in blocks} == {384}


@pytest.fixture(scope="module")
def whisper_dirs(tmp_path_factory):
    """The same random whisper saved upstream's way (.bin) and current transformers' way (.safetensors)."""
    root = tmp_path_factory.mktemp("whisper-formats")
    return write_model_dir(root / "bin", seed=4), write_model_dir(root / "st", seed=4, whisper_format="safetensors")


def test_whisper_saved_by_current_transformers_gives_the_same_features(whisper_dirs):
    import numpy as np

    from musetalk_server.engines.musetalk.audio import whisper_hidden

    bin_dir, st_dir = whisper_dirs
    assert not (st_dir / "whisper" / "pytorch_model.bin").exists()
    assert (st_dir / "whisper" / "model.safetensors").is_file()
    assert W.missing_weights(st_dir) == [] and download.check_weights(st_dir)["ok"]
    assert W.detect_layout(st_dir).whisper_weights() == "whisper/model.safetensors"
    assert W.detect_layout(bin_dir).whisper_weights() == "whisper/pytorch_model.bin"
    audio = np.random.default_rng(0).normal(0, 0.1, 16000 * 2).astype(np.float32)
    feats = []
    for d in (bin_dir, st_dir):
        extractor, encoder = W.load_whisper(W.detect_layout(d))
        with torch.inference_mode():
            feats.append(whisper_hidden(audio, extractor, encoder, "cpu", torch.float32))
    assert feats[0].shape == (100, 5, 384) and torch.equal(feats[0], feats[1])


def test_whisper_safetensors_wins_over_the_bin_and_is_checked_the_same_way(whisper_dirs, tmp_path):
    _, st_dir = whisper_dirs
    models = Path(shutil.copytree(st_dir, tmp_path / "models"))
    other = write_model_dir(tmp_path / "other", seed=9)  # a different whisper beside it
    shutil.copy(other / "whisper" / "pytorch_model.bin", models / "whisper" / "pytorch_model.bin")
    _, encoder = W.load_whisper(W.detect_layout(models))
    _, want = W.load_whisper(W.detect_layout(st_dir))
    pairs = zip(encoder.state_dict().values(), want.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)

    from safetensors.torch import load_file, save_file

    path = models / "whisper" / "model.safetensors"
    state = load_file(str(path))
    state["model.encoder.conv1.weight"] = state["model.encoder.conv1.weight"][:, :40].contiguous()
    save_file(state, str(path))
    with pytest.raises(WeightsError, match="whisper/model.safetensors does not match the model described by "
                                           "whisper/config.json"):
        W.load_whisper(W.detect_layout(models))
    report = download.check_weights(models)
    assert not report["ok"] and report["missing"] == []
    assert len(report["problems"]) == 1 and "whisper/model.safetensors" in report["problems"][0]
    assert "conv1.weight [384, 40, 3] in the file" in report["problems"][0]

    path.unlink()
    (models / "whisper" / "pytorch_model.bin").unlink()
    assert W.missing_weights(models) == ["whisper/pytorch_model.bin"]
    with pytest.raises(WeightsError, match=r"whisper/pytorch_model.bin \(or model.safetensors\) is missing"):
        W.load_whisper(W.detect_layout(models))


def test_download_takes_a_safetensors_whisper_as_present(tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    def fake_download(*, repo_id, filename, local_dir):
        calls.append(filename)
        (Path(local_dir) / filename).parent.mkdir(parents=True, exist_ok=True)
        (Path(local_dir) / filename).write_bytes(b"x")
        return str(Path(local_dir) / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    (tmp_path / "whisper").mkdir()
    (tmp_path / "whisper" / "model.safetensors").write_bytes(b"x")
    download.download_weights(tmp_path)
    assert "pytorch_model.bin" not in calls and "config.json" in calls
    assert not (tmp_path / "whisper" / "pytorch_model.bin").exists() and W.missing_weights(tmp_path) == []
