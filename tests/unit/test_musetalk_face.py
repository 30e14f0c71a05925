"""MuseTalk face geometry, BiSeNet, blend mask and paste-back (engines/musetalk: crop, bisenet, blend)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from musetalk_server.engines.musetalk import bisenet, crop
from musetalk_server.errors import InvalidInput, NoFaceDetected, WeightsError

# ---------------------------------------------------------------------------------------------
# crop


def make_lm68(x_lo=100.0, x_hi=300.0, y29=200.0, y_bot=330.0, y28=185.0, y30=215.0) -> np.ndarray:
    """68 points: x spread over [x_lo, x_hi], y between the bridge and the chin, exact extremes."""
    lm = np.zeros((68, 2), dtype=np.float32)
    lm[:, 0] = np.linspace(x_lo, x_hi, 68)
    lm[:, 1] = (y29 + y_bot) / 2
    lm[8, 1] = y_bot  # chin
    lm[28, 1], lm[29, 1], lm[30, 1] = y28, y29, y30
    return lm


FRAME_HW = (480, 640)


def test_face_box_symmetric_about_lm29_with_margin():
    # top = 2 * 200 - 330 = 70; bottom = chin + 10
    assert crop.face_box(make_lm68(), 0, FRAME_HW) == (100, 70, 300, 340)
    assert crop.face_box(make_lm68(), 0, FRAME_HW, extra_margin=0) == (100, 70, 300, 330)


@pytest.mark.parametrize("shift", [5, -7])
def test_bbox_shift_moves_top_twice_and_centre_once(shift):
    x1, y1, x2, y2 = crop.face_box(make_lm68(), shift, FRAME_HW, extra_margin=0)
    base = crop.face_box(make_lm68(), 0, FRAME_HW, extra_margin=0)
    assert y1 - base[1] == 2 * shift
    assert y2 == base[3]
    assert (y1 + y2) / 2 - (base[1] + base[3]) / 2 == shift
    assert (x1, x2) == (base[0], base[2])


def test_margin_is_clamped_at_the_frame_bottom():
    assert crop.face_box(make_lm68(), 0, (335, 640))[3] == 335
    # landmarks below the frame are clipped too, as is x beyond the right edge
    assert crop.face_box(make_lm68(x_hi=700.9, y_bot=500.0), 0, FRAME_HW)[2:] == (640, 480)


def test_landmarks_are_truncated_not_rounded():
    lm = make_lm68(x_lo=100.9, x_hi=300.9, y29=200.9, y_bot=330.99)
    # int(200.9) = 200, int(330.99) = 330 -> top 70, as with the integer landmarks
    assert crop.face_box(lm, 0, FRAME_HW) == (100, 70, 300, 340)
    # truncation goes toward zero: -0.7 becomes 0, which is a valid x1 (no fallback)
    assert crop.face_box(make_lm68(x_lo=-0.7), 0, FRAME_HW)[0] == 0


def test_top_is_clamped_at_zero():
    # 2 * 100 - 330 < 0
    assert crop.face_box(make_lm68(y29=100.0, y28=90.0, y30=110.0), 0, FRAME_HW)[1] == 0


def test_fallbacks_for_an_unusable_landmark_box():
    # x1 < 0: clipped, the rest of the landmark geometry kept
    assert crop.face_box(make_lm68(x_lo=-20.0), 0, FRAME_HW) == (0, 70, 300, 340)
    # an empty box (bbox_shift pushes the top below the chin): the full mesh's extent
    pts = np.array([[150.5, 60.2], [250.7, 80.0], [200.0, 310.9]], dtype=np.float32)
    assert crop.face_box(make_lm68(), 200, FRAME_HW, points478=pts) == (150, 60, 250, 320)
    with pytest.raises(NoFaceDetected):
        crop.face_box(make_lm68(), 200, FRAME_HW)
    with pytest.raises(NoFaceDetected):
        crop.face_box(np.full((68, 2), np.nan, np.float32), 0, FRAME_HW)


def test_bbox_shift_range_is_the_mean_bridge_spans():
    a = make_lm68(y28=185.0, y29=200.0, y30=215.0)  # -15 / +15
    b = make_lm68(y28=190.0, y29=200.0, y30=212.0)  # -12 / +10
    none = np.full((68, 2), np.nan, np.float32)
    assert crop.bbox_shift_range(np.stack([a, b, none])) == (-13, 12)  # int(13.5), int(12.5)
    with pytest.raises(NoFaceDetected):
        crop.bbox_shift_range(none[None])


def test_crop_face_squashes_the_box_with_lanczos():
    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    box = (100, 50, 300, 310)  # 200 x 260: not square, squashed
    face = crop.crop_face(frame, box)
    assert face.shape == (crop.FACE_SIZE, crop.FACE_SIZE, 3) and face.dtype == np.uint8
    expected = cv2.resize(frame[50:310, 100:300], (256, 256), interpolation=cv2.INTER_LANCZOS4)
    assert np.array_equal(face, expected)
    with pytest.raises(InvalidInput):
        crop.crop_face(frame, (10, 10, 10, 20))


def test_blend_square_worked_example():
    # w 200, h 260 -> centre (200, 180), s = int((260 // 2) * 1.5) = 195, side 390
    assert crop.blend_square((100, 50, 300, 310)) == (5, -15, 395, 375)
    # odd sizes: integer centre and floor of the half side
    assert crop.blend_square((0, 0, 101, 51)) == (50 - 75, 25 - 75, 50 + 75, 25 + 75)


def test_crop_square_pads_black_outside_the_frame():
    frame = np.full((100, 100, 3), 7, np.uint8)
    sq = crop.crop_square(frame, (-10, -20, 50, 40))
    assert sq.shape == (60, 60, 3)
    assert (sq[:20] == 0).all() and (sq[:, :10] == 0).all() and (sq[20:, 10:] == 7).all()


# ---------------------------------------------------------------------------------------------
# bisenet

KNOWN_KEYS = {
    "cp.resnet.conv1.weight": (64, 3, 7, 7),
    "cp.resnet.bn1.running_var": (64,),
    "cp.resnet.layer1.0.conv1.weight": (64, 64, 3, 3),
    "cp.resnet.layer2.0.downsample.0.weight": (128, 64, 1, 1),
    "cp.resnet.layer4.1.bn2.weight": (512,),
    "cp.arm16.conv.conv.weight": (128, 256, 3, 3),
    "cp.arm32.conv_atten.weight": (128, 128, 1, 1),
    "cp.arm32.bn_atten.running_mean": (128,),
    "cp.conv_head32.conv.weight": (128, 128, 3, 3),
    "cp.conv_avg.conv.weight": (128, 512, 1, 1),
    "ffm.convblk.conv.weight": (256, 256, 1, 1),
    "ffm.conv1.weight": (64, 256, 1, 1),
    "ffm.conv2.weight": (256, 64, 1, 1),
    "conv_out.conv.conv.weight": (256, 256, 3, 3),
    "conv_out.conv_out.weight": (19, 256, 1, 1),
    "conv_out16.conv_out.weight": (19, 64, 1, 1),
    "conv_out32.conv.bn.num_batches_tracked": (),
}


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = bisenet.BiSeNet()
    path = tmp_path_factory.mktemp("bisenet") / "79999_iter.pth"
    torch.save(model.state_dict(), path)
    return path


def test_bisenet_names_match_the_upstream_checkpoint():
    state = bisenet.BiSeNet().state_dict()
    # 36 convs + 31 batch norms x 5 tensors: the count of upstream's 79999_iter.pth
    assert len(state) == 191
    for key, shape in KNOWN_KEYS.items():
        assert tuple(state[key].shape) == shape, key
    assert not any(k.startswith("sp.") or ".fc." in k for k in state)
    bisenet.BiSeNet().load_state_dict(state, strict=True)


def test_bisenet_output_matches_input_size():
    with torch.inference_mode():
        out = bisenet.BiSeNet().eval()(torch.zeros(1, 3, 64, 96))
    assert out.shape == (1, 19, 64, 96)


def test_load_bisenet_roundtrip(weights_file):
    model = bisenet.load_bisenet(weights_file, "cpu")
    saved = torch.load(weights_file, weights_only=True)
    assert not model.training
    assert torch.equal(model.state_dict()["ffm.conv1.weight"], saved["ffm.conv1.weight"])
    half = bisenet.load_bisenet(weights_file, torch.device("cpu"), dtype=torch.float16)
    assert next(half.parameters()).dtype == torch.float16


def _broken(tmp_path: Path, weights_file: Path, edit) -> Path:
    state = torch.load(weights_file, weights_only=True)
    edit(state)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    return path


def test_load_bisenet_names_the_file_and_the_offending_keys(tmp_path, weights_file):
    def wrong_shape(s):
        s["conv_out.conv_out.weight"] = torch.zeros(18, 256, 1, 1)

    def missing(s):
        del s["cp.arm16.conv_atten.weight"]

    def unexpected(s):
        s["sp.conv1.conv.weight"] = torch.zeros(64, 3, 7, 7)

    for edit, key in ((wrong_shape, "conv_out.conv_out.weight"), (missing, "cp.arm16.conv_atten.weight"),
                      (unexpected, "sp.conv1.conv.weight")):
        path = _broken(tmp_path, weights_file, edit)
        with pytest.raises(WeightsError) as err:
            bisenet.load_bisenet(path, "cpu")
        assert str(path) in err.value.detail and key in err.value.detail


def test_load_bisenet_rejects_absent_and_foreign_files(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        bisenet.load_bisenet(tmp_path / "absent.pth", "cpu")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="junk.pth"):
        bisenet.load_bisenet(junk, "cpu")
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(WeightsError, match="list.pth"):
        bisenet.load_bisenet(listed, "cpu")


def test_load_bisenet_tolerates_missing_batchnorm_counters(tmp_path, weights_file):
    def drop(s):
        for k in [k for k in s if k.endswith("num_batches_tracked")]:
            del s[k]

    bisenet.load_bisenet(_broken(tmp_path, weights_file, drop), "cpu")


def test_parse_gives_512_labels(weights_file):
    model = bisenet.load_bisenet(weights_file, "cpu")
    square = np.random.default_rng(1).integers(0, 256, (390, 390, 3), dtype=np.uint8)
    labels = bisenet.parse(model, square)
    assert labels.shape == (bisenet.PARSE_SIZE, bisenet.PARSE_SIZE) and labels.dtype == np.uint8
    assert labels.max() < bisenet.N_CLASSES
    with pytest.raises(InvalidInput):
        bisenet.parse(model, square[..., 0])


@pytest.mark.parametrize("side", [390, 700])
def test_parse_resize_matches_pil_bilinear(side):
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(side)
    img = cv2.GaussianBlur(rng.integers(0, 256, (side, side, 3), dtype=np.uint8), (5, 5), 0)
    pil = np.asarray(Image.fromarray(img).resize((512, 512), Image.BILINEAR)).astype(int)
    x = bisenet.preprocess(img, torch.device("cpu"))
    mean, std = np.array(bisenet._MEAN), np.array(bisenet._STD)
    ours = np.rint((x[0].permute(1, 2, 0).numpy() * std + mean) * 255).astype(int)
    assert x.shape == (1, 3, 512, 512)
    assert np.abs(ours - pil).max() <= 1  # PIL rounds between its two passes
