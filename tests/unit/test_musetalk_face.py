"""MuseTalk face geometry, BiSeNet, blend mask and paste-back (engines/musetalk: crop, bisenet, blend)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from musetalk_server.engines.musetalk import bisenet, blend, crop
from musetalk_server.errors import InvalidInput, NoFaceDetected, WeightsError
from testkit.media import media

VR_FACE2 = media("vr_face2.mp4")  # shipped in examples/media


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


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_parse_on_cuda_agrees_with_cpu(weights_file):
    square = np.random.default_rng(3).integers(0, 256, (390, 390, 3), dtype=np.uint8)
    cpu = bisenet.parse(bisenet.load_bisenet(weights_file, "cpu"), square)
    gpu32 = bisenet.parse(bisenet.load_bisenet(weights_file, torch.device("cuda")), square)
    gpu16 = bisenet.parse(bisenet.load_bisenet(weights_file, torch.device("cuda"), torch.float16), square)
    assert (gpu32 == cpu).mean() > 0.99
    assert gpu16.shape == (512, 512) and gpu16.max() < bisenet.N_CLASSES  # random weights: no closer bound


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


@pytest.mark.parametrize("side", [390, 700])
def test_parse_input_is_upstreams_pil_bilinear_to_tensor_normalize(side):
    """Bit for bit what upstream feeds BiSeNet: PIL BILINEAR to 512, ToTensor (/255), Normalize."""
    from PIL import Image

    img = np.random.default_rng(side + 1).integers(0, 256, (side, side, 3), dtype=np.uint8)
    resized = np.array(Image.fromarray(img).resize((512, 512), Image.BILINEAR))
    want = torch.from_numpy(resized).permute(2, 0, 1).contiguous().float().div(255)  # ToTensor
    mean, std = torch.as_tensor(bisenet._MEAN), torch.as_tensor(bisenet._STD)
    want = want.sub(mean[:, None, None]).div(std[:, None, None])  # Normalize
    got = bisenet.preprocess(img, torch.device("cpu"))
    assert got.shape == (1, 3, 512, 512) and got.dtype == torch.float32
    assert torch.equal(got[0], want)


# ---------------------------------------------------------------------------------------------
# jaw mask


def test_jaw_kernel_is_upstreams_tapered_cone():
    k = blend._JAW_KERNEL
    widths = k.sum(axis=1)
    assert k.shape == (33, 33)
    assert list(widths[:10]) == [0] * 10
    assert list(widths[10:21]) == list(range(1, 22, 2))
    assert list(widths[21:]) == [21] * 12
    rows, cols = np.nonzero(k)
    assert all(c_lo + c_hi == 32 for c_lo, c_hi in ((cols[rows == r].min(), cols[rows == r].max()) for r in set(rows)))


def synthetic_labels() -> np.ndarray:
    """A face: a skin ellipse (bottom row 450), a nose, lips and an open mouth."""
    labels = np.zeros((512, 512), np.uint8)
    cv2.ellipse(labels, (256, 270), (200, 180), 0, 0, 360, bisenet.SKIN, -1)
    labels[230:300, 236:276] = bisenet.NOSE
    labels[340:360, 206:306] = bisenet.UPPER_LIP
    labels[360:366, 206:306] = bisenet.MOUTH
    labels[366:386, 206:306] = bisenet.LOWER_LIP
    return labels


def test_jaw_mask_nose_out_lips_in():
    labels = synthetic_labels()
    mask = blend.jaw_parse_mask(labels)
    assert set(np.unique(mask)) <= {0, 255}
    assert (mask[labels == bisenet.NOSE] == 0).all()
    for cls in (bisenet.UPPER_LIP, bisenet.MOUTH, bisenet.LOWER_LIP):
        assert (mask[labels == cls] == 255).all()
    assert mask[420, 256] == 255 and mask[100, 10] == 0


def test_jaw_mask_grows_the_chin_down_and_narrows_the_cheeks():
    labels = synthetic_labels()
    mask = blend.jaw_parse_mask(labels)
    # central band: the chin line moves 6 px down (the cone's tip), not 7
    assert labels[450, 256] == bisenet.SKIN and labels[451, 256] == 0
    assert mask[456, 256] == 255 and mask[457, 256] == 0
    # cheek band (x <= 256 - 90): ~34 px of erosion outweigh the dilation's 10 px of width
    row = 270
    skin_left = np.nonzero(labels[row] == bisenet.SKIN)[0].min()
    mask_left = np.nonzero(mask[row])[0].min()
    assert 20 <= mask_left - skin_left <= 30
    # wider cheek widths widen the central band that is spared the narrowing
    assert blend.jaw_parse_mask(labels, 120, 120).sum() > mask.sum()
    with pytest.raises(InvalidInput):
        blend.jaw_parse_mask(labels[:256])


# ---------------------------------------------------------------------------------------------
# blend material and paste, synthetic


def test_blend_material_cuts_to_the_lower_box_and_blurs_by_path():
    frame_hw = (480, 640)
    box = (100, 50, 300, 310)
    square = crop.blend_square(box)  # (5, -15, 395, 375), side 390
    region = np.full((390, 390), 255, np.uint8)
    for blur, k in (("realtime", 39), ("offline", 19)):  # int(0.1 * 390 // 2 * 2) + 1, int(0.05 * ...)
        expected = np.zeros((390, 390), np.uint8)
        expected[195:325, 95:295] = 255  # rows >= s, inside the box (box y2 - y0 = 325)
        expected = cv2.GaussianBlur(expected, (k, k), 0)
        assert np.array_equal(blend.blend_material(frame_hw, box, square, region, blur), expected), blur
    assert blend.DEFAULT_BLUR == "realtime"
    # the 512 parse mask is accepted and resized to the square
    assert blend.blend_material(frame_hw, box, square, np.full((512, 512), 255, np.uint8)).shape == (390, 390)
    with pytest.raises(InvalidInput):
        blend.blend_material(frame_hw, box, square, region[:100])
    with pytest.raises(InvalidInput):
        blend.blend_material(frame_hw, (100, 50, 700, 310), square, region)


def blocky_labels(seed: int) -> np.ndarray:
    """A random (512, 512) label map of 16-px blocks: every class, plenty of edges."""
    coarse = np.random.default_rng(seed).integers(0, bisenet.N_CLASSES, (32, 32), dtype=np.uint8)
    return cv2.resize(coarse, (512, 512), interpolation=cv2.INTER_NEAREST)


@pytest.mark.parametrize("side", [390, 512, 700])
def test_square_mask_is_pils_bicubic_resize(side):
    from PIL import Image

    mask512 = blend.jaw_parse_mask(blocky_labels(side))
    want = np.array(Image.fromarray(mask512).resize((side, side), Image.BICUBIC))
    got = blend.square_mask(mask512, (10, 20, 10 + side, 20 + side))
    assert got.dtype == np.uint8 and np.array_equal(got, want)


def upstream_blend_mask(mask512: np.ndarray, box: crop.Box, square: crop.Box, span: float) -> np.ndarray:
    """Upstream's `face_seg` + `get_image_prepare_material` mask steps, in PIL as it writes them (spec §3.6)."""
    from PIL import Image

    x, y, x1, y1 = box
    xs, ys, xe, _ = square
    side = xe - xs
    parsed = Image.fromarray(mask512).resize((side, side))  # PIL's default filter for mode L
    small = parsed.crop((x - xs, y - ys, x1 - xs, y1 - ys))
    in_box = Image.new("L", (side, side), 0)
    in_box.paste(small, (x - xs, y - ys, x1 - xs, y1 - ys))
    top = int(side * 0.5)
    lower = Image.new("L", (side, side), 0)
    lower.paste(in_box.crop((0, top, side, side)), (0, top))
    k = int(span * side // 2 * 2) + 1
    return cv2.GaussianBlur(np.array(lower), (k, k), 0)


@pytest.mark.parametrize("box", [(100, 50, 300, 310), (100, 40, 520, 500)])  # squares of 390 and 690
def test_blend_mask_equals_upstreams_on_the_same_parse(box):
    frame_hw = (720, 1280)
    square = crop.blend_square(box)
    mask512 = blend.jaw_parse_mask(blocky_labels(sum(box)))
    for blur, span in blend.BLUR_SPAN.items():
        got = blend.blend_material(frame_hw, box, square, mask512, blur)
        assert np.array_equal(got, upstream_blend_mask(mask512, box, square, span)), blur


def test_paste_rounds_like_pil():
    # rows: every mask value; columns: pairs (face value, frame value)
    face_v, orig_v = np.meshgrid(np.arange(0, 256, 3), np.arange(0, 256, 5), indexing="ij")
    cols = face_v.size
    mask = np.repeat(np.arange(256, dtype=np.uint8)[:, None], cols, axis=1)
    face = np.repeat(np.broadcast_to(face_v.ravel(), (256, cols))[..., None], 3, axis=2).astype(np.uint8)
    frame = np.repeat(np.broadcast_to(orig_v.ravel(), (256, cols))[..., None], 3, axis=2).astype(np.uint8)
    whole = (0, 0, cols, 256)  # box = square = frame, so the face needs no resize
    out = blend.paste_face(frame, face, whole, whole, mask)
    m = mask.astype(np.float64)
    expect = np.floor((face[..., 0] * m + frame[..., 0] * (255 - m)) / 255 + 0.5).astype(np.uint8)
    assert np.array_equal(out[..., 0], expect)
    assert np.array_equal(out[0], frame[0]) and np.array_equal(out[255], face[255])  # m = 0 and 255 exact
    assert np.array_equal(blend.paste_face(frame, face, whole, whole, np.zeros_like(mask)), frame)


# ---------------------------------------------------------------------------------------------
# blend material and paste on a real frame with real FaceMesh points


def mask_in_frame(mask: np.ndarray, square, frame_hw) -> np.ndarray:
    """The square's mask placed in frame coordinates, cut at the frame edges."""
    h, w = frame_hw
    full = np.zeros((h, w), np.uint8)
    x0, y0, x1, y1 = square
    fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    full[fy0:fy1, fx0:fx1] = mask[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0]
    return full


@pytest.fixture(scope="module")
def real_face():
    from musetalk_server.face.landmarks import detect_video, to_ibug68

    cap = cv2.VideoCapture(str(VR_FACE2))
    ok, frame = cap.read()
    cap.release()
    assert ok
    pts, found = detect_video([frame])
    assert found[0]
    return frame, pts[0], to_ibug68(pts[0])


def test_real_frame_box_and_landmark_mask(real_face):
    frame, pts, lm68 = real_face
    box = crop.face_box(lm68, 0, frame.shape[:2], points478=pts)
    x1, y1, x2, y2 = box
    assert 0 <= x1 < x2 <= frame.shape[1] and 0 <= y1 < y2 <= frame.shape[0]
    assert y2 == int(lm68[:, 1].max()) + crop.EXTRA_MARGIN_V15
    square = crop.blend_square(box)
    region = blend.landmark_jaw_mask(pts, square)
    side = square[2] - square[0]
    assert region.shape == (side, side) and region.dtype == np.uint8

    def at(vertex):
        x, y = np.round(pts[vertex] - square[:2]).astype(int)
        return region[y, x]

    assert at(13) == 255 and at(14) == 255  # inner lips (mouth)
    assert at(17) == 255 and at(200) == 255  # lower lip, chin
    assert at(4) == 0  # nose tip
    assert at(234) == 0 and at(454) == 0  # cheek edges at ear level: narrowed away


def test_real_frame_paste(real_face):
    frame, pts, lm68 = real_face
    box = crop.face_box(lm68, 0, frame.shape[:2], points478=pts)
    square = crop.blend_square(box)
    region = blend.landmark_jaw_mask(pts, square)
    mask = blend.blend_material(frame.shape[:2], box, square, region)
    s = (square[2] - square[0]) // 2
    k = int(blend.BLUR_SPAN["realtime"] * 2 * s // 2 * 2) + 1
    # only rows from the box centre down are kept; the blur spills at most k // 2 rows above
    assert square[1] + s == (box[1] + box[3]) // 2
    assert mask[: s - k // 2].max() == 0 and mask[s:].max() == 255

    face = cv2.flip(crop.crop_face(frame, box), 1)  # a visibly different lower face
    out = blend.paste_face(frame, face, box, square, mask)
    assert out.shape == frame.shape and out is not frame
    full = mask_in_frame(mask, square, frame.shape[:2])
    untouched = full == 0
    assert np.array_equal(out[untouched], frame[untouched])
    x1, y1, x2, y2 = box
    pasted = cv2.resize(face, (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
    inside = np.zeros_like(untouched)
    inside[y1:y2, x1:x2] = True
    solid = inside & (full == 255)
    assert solid.sum() > 1000
    face_full = np.zeros_like(frame)
    face_full[y1:y2, x1:x2] = pasted
    assert np.array_equal(out[solid], face_full[solid])
    # where the mask is partial, every pixel moved toward the face (1 level of rounding slack)
    soft = inside & (full > 0)
    d_out = np.abs(out[soft].astype(int) - face_full[soft])
    d_src = np.abs(frame[soft].astype(int) - face_full[soft])
    assert (d_out <= d_src + 1).all() and (d_out < d_src).mean() > 0.5


@pytest.mark.parametrize("corner", ["top_left", "bottom_right"])
def test_square_running_off_the_frame(real_face, corner):
    frame = real_face[0]
    h, w = frame.shape[:2]
    box = (0, 0, 120, 150) if corner == "top_left" else (w - 130, h - 160, w, h)
    square = crop.blend_square(box)
    assert square[0] < 0 or square[2] > w
    side = square[2] - square[0]
    mask = blend.blend_material(frame.shape[:2], box, square, np.full((side, side), 255, np.uint8))
    face = np.full((256, 256, 3), 255, np.uint8)
    out = blend.paste_face(frame, face, box, square, mask)
    x1, y1, x2, y2 = box
    outside = np.ones((h, w), bool)
    outside[y1:y2, x1:x2] = False
    assert np.array_equal(out[outside], frame[outside])
    k = int(blend.BLUR_SPAN["realtime"] * side // 2 * 2) + 1
    top = (y1 + y2) // 2 - k // 2  # above the centre row and its blur spill: untouched
    assert np.array_equal(out[:top], frame[:top])
    deep = (y2 - k // 2 - 1, (x1 + x2) // 2)  # a blur radius in from the box edges: all face
    assert mask[deep[0] - square[1], deep[1] - square[0]] == 255
    assert (out[deep] == 255).all()
