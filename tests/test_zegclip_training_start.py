"""What ZegCLIP's TRAINING actually runs, beyond its modules (issue 17, items 2-4): the decoder's
initialisation, mmseg's photometric distortion and resizing, and padding after normalisation.

Library behaviour is checked against the library (torch's TransformerDecoder, OpenCV's colour
conversion and resize, which mmseg's pipeline calls), not against our re-statement of it.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from fixtures.engine import tiny_setup
from torch import nn

from ldvc.config import config_from_dict, deep_merge, load_config
from ldvc.data.augment import resize_pair
from ldvc.data.normalize import normalize
from ldvc.data.photometric import HUE_DELTA, Distortion, apply_distortion, draw_distortion, hsv_to_rgb, rgb_to_hsv
from ldvc.model.build import DECODERS  # importing build registers every decoder


def _decoder_cfg(init: str, type_: str):
    raw = load_config("params.yaml").to_dict()
    raw = deep_merge(raw, {"ablation": {}, "cross_dataset": {},
                           "decoder": {"type": type_, "layers": 3, "heads": 8, "width": 512, "ffn": 2048,
                                       "input_proj": True, "init": init, "route_regions": 4}})
    raw.pop("open_vocab", None)
    return config_from_dict(raw).decoder


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in module.state_dict().items()}


def test_torch_transformer_decoder_deep_copies_its_layer():
    """ZegCLIP's TPN_Decoder is torch's nn.TransformerDecoder (decode_seg.py line 43, built at line 194 from ONE
    TPN_DecoderLayer); torch clones that layer with copy.deepcopy (torch/nn/modules/transformer.py
    `_get_clones`) and re-initialises nothing, so its layers start identical. Checked on torch itself."""
    torch.manual_seed(0)
    dec = nn.TransformerDecoder(nn.TransformerDecoderLayer(d_model=64, nhead=8, dim_feedforward=256), 3)
    first = _state(dec.layers[0])
    for layer in dec.layers[1:]:
        assert all(torch.equal(first[k], v) for k, v in _state(layer).items())


def _assert_torch_linear_default(lin: nn.Linear) -> None:
    """nn.Linear's reset_parameters: kaiming_uniform(a=sqrt(5)) weights = U(+-1/sqrt(fan_in)), biases the same
    bound; a trunc-normal(0.02) init (or a zero bias) would fail these checks at fan_in >= 512."""
    bound = 1.0 / math.sqrt(lin.in_features)
    w, b = lin.weight.detach(), lin.bias.detach()
    assert w.abs().max() <= bound + 1e-7 and w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.03)
    assert b.abs().max() <= bound + 1e-7 and b.abs().max() > 0.5 * bound


@pytest.mark.parametrize("type_", ["zegclip", "lctd"])
def test_decoders_start_as_zegclips_training_starts(type_):
    """ZegCLIP's train.py lines 144-150 (commit 9ba4bb5) call only model.backbone.init_weights() and
    model.text_encoder.init_weights(): ATMSingleHeadSeg.init_weights (decode_seg.py lines 202-207) never runs
    (nor does mmseg 0.24.0's train_segmentor call any init_weights). So the layers keep torch's constructor
    defaults and start identical; only the use_proj Linear gets trunc_normal(0.02) in the head's constructor
    (decode_seg.py lines 170-172). LDVC's decoder uses the same scheme (decoder.init: torch_default)."""
    torch.manual_seed(0)
    dec = DECODERS[type_](512, _decoder_cfg("torch_default", type_))
    layers = list(dec.layers)
    first = _state(layers[0])
    for layer in layers[1:]:
        for key, value in _state(layer).items():  # the zegclip decoder's last layer keeps only q/k
            assert torch.equal(first[key], value), (type_, key)
    # plain Linears (nn.MultiheadAttention's out_proj is a subclass that MHA itself resets to a zero bias)
    linears = [m for m in layers[0].modules() if type(m) is nn.Linear and m.in_features >= 512]
    assert linears
    for lin in linears + [dec.relationship.proj]:
        _assert_torch_linear_default(lin)
    proj = dec.input_proj[0]
    assert proj.weight.std().item() == pytest.approx(0.02, rel=0.05)  # torch's default would be 0.0255
    for m in dec.modules():
        if isinstance(m, nn.LayerNorm):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)


@pytest.mark.parametrize("type_", ["zegclip", "lctd"])
def test_trunc_normal_option_is_atmsingleheadsegs_init_weights(type_):
    """decode_seg.py lines 202-207: every nn.Linear trunc_normal(std 0.02), bias 0; LayerNorm 1 / 0;
    independent layers."""
    torch.manual_seed(0)
    dec = DECODERS[type_](512, _decoder_cfg("trunc_normal", type_))
    for m in dec.modules():
        if type(m) is nn.Linear and m.in_features >= 512:
            assert m.weight.std().item() == pytest.approx(0.02, rel=0.05) and torch.all(m.bias == 0)
    a, b = (_state(layer) for layer in list(dec.layers)[:2])
    assert not all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------------------------- photometric


def _image(seed: int, h: int = 24, w: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _to_torch(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1).float()


def _hue_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = np.abs(a.astype(int) - b.astype(int))
    return np.minimum(d, 180 - d)


def test_hsv_conversions_match_opencvs_8bit_grid():
    """mmseg's saturation/hue steps call mmcv.bgr2hsv / hsv2bgr = cv2.cvtColor on uint8 images (H 0-180)."""
    img = _image(0)
    ours = rgb_to_hsv(_to_torch(img)).permute(1, 2, 0).numpy()
    ref = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    chroma = ref[..., 1] > 8  # hue is ill-conditioned for near-grey pixels
    assert _hue_diff(ours[..., 0], ref[..., 0])[chroma].max() <= 1
    assert np.abs(ours[..., 1:] - ref[..., 1:].astype(float)).max() <= 1
    back = hsv_to_rgb(torch.from_numpy(ref.astype(np.float32)).permute(2, 0, 1)).permute(1, 2, 0).numpy()
    assert np.abs(back - cv2.cvtColor(ref, cv2.COLOR_HSV2RGB).astype(float)).max() <= 2


def _mmseg_reference(img: np.ndarray, d: Distortion) -> np.ndarray:
    """mmseg 0.24.0 PhotoMetricDistortion.__call__ (transforms.py lines 861-960) with fixed draws, through
    OpenCV's conversions: every step float32 * alpha + beta, clip, astype(uint8)."""
    def convert(x, alpha=1.0, beta=0.0):
        return np.clip(x.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    x = img
    if d.brightness is not None:
        x = convert(x, beta=d.brightness)
    if d.contrast_first and d.contrast is not None:
        x = convert(x, alpha=d.contrast)
    if d.saturation is not None:
        hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)
        hsv[..., 1] = convert(hsv[..., 1], alpha=d.saturation)
        x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if d.hue is not None:
        hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = (hsv[..., 0].astype(int) + d.hue) % 180
        x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if not d.contrast_first and d.contrast is not None:
        x = convert(x, alpha=d.contrast)
    return x


@pytest.mark.parametrize("d", [
    Distortion(brightness=-20.5, contrast_first=True, contrast=1.3, saturation=None, hue=None),
    Distortion(brightness=None, contrast_first=False, contrast=0.7, saturation=1.4, hue=None),
    Distortion(brightness=None, contrast_first=True, contrast=None, saturation=0.6, hue=None),
    Distortion(brightness=None, contrast_first=True, contrast=None, saturation=None, hue=17),
    Distortion(brightness=12.0, contrast_first=False, contrast=1.2, saturation=0.8, hue=-18),
])
def test_photometric_steps_match_mmseg_through_opencv(d):
    """Each step against mmseg's semantics computed with OpenCV: within the one-level rounding of the
    float HSV conversion (the deviation named in ldvc/data/photometric.py). A hue step of 17 units is 34
    degrees: mmseg's hue_delta=18 is on OpenCV's 0-180 scale (+-36 degrees)."""
    img = _image(1)
    ours = apply_distortion(_to_torch(img), d).permute(1, 2, 0).numpy()
    ref = _mmseg_reference(img, d).astype(float)
    diff = np.abs(ours - ref)
    assert np.median(diff) <= 1 and np.mean(diff <= 3) > 0.97, (np.median(diff), diff.max())


def test_distortion_draws_follow_mmseg():
    """Each step with probability 0.5 (mmseg: `random.randint(2)`, numpy's random, transforms.py line 7); hue
    deltas are whole OpenCV units drawn by numpy's `random.randint(-18, 18)`, which excludes 18: -18..17;
    contrast before or after the colour steps at random."""
    g = torch.Generator().manual_seed(0)
    draws = [draw_distortion(g) for _ in range(2000)]
    hues = [d.hue for d in draws if d.hue is not None]
    assert 0.45 < len(hues) / len(draws) < 0.55
    assert set(hues) == set(range(-HUE_DELTA, HUE_DELTA))  # -18..17, every value drawn
    for field in ("brightness", "contrast", "saturation"):
        share = sum(getattr(d, field) is not None for d in draws) / len(draws)
        assert 0.45 < share < 0.55, field
    assert 0.45 < sum(d.contrast_first for d in draws) / len(draws) < 0.55
    assert all(-32 <= d.brightness <= 32 for d in draws if d.brightness is not None)


@pytest.mark.parametrize("size", [(10, 13), (61, 80)])  # down- and up-scaling
def test_resize_matches_opencv_bilinear(size):
    """mmseg's Resize -> mmcv.imresize(interpolation='bilinear', backend cv2) = cv2.INTER_LINEAR on the uint8
    image: no antialiasing, 8-bit output (an antialiased shrink differs by tens of levels)."""
    img = _image(2, 40, 53)
    ours, _ = resize_pair(_to_torch(img) / 255.0, None, size)
    ref = cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_LINEAR).astype(float)
    diff = np.abs(ours.permute(1, 2, 0).numpy() * 255.0 - ref)
    assert diff.max() <= 1.0, diff.max()


# ---------------------------------------------------------------------------------------------- padding


def test_normalize_sets_padding_to_zero_after_normalising():
    images = torch.rand(2, 3, 8, 8)
    pad = torch.zeros(2, 8, 8, dtype=torch.bool)
    pad[:, 5:] = True
    out = normalize(images, pad)
    assert torch.all(out[:, :, 5:] == 0)
    torch.testing.assert_close(out[:, :, :5], normalize(images)[:, :, :5])


def test_training_pads_crops_with_the_mean_colour(tmp_path, monkeypatch):
    """ZegCLIP's pipeline is Normalize then Pad(pad_val=0) (configs/_base_/datasets/voc12_20_512x512.py lines
    14-15): the model sees 0 in the padding, i.e. the mean colour, not normalised black. Captured from the
    training step itself with crops smaller than the input (scale 0.5)."""
    from ldvc.train import loop

    cfg, split, root, _, _ = tiny_setup(tmp_path, {"train": {"iters": 1, "augment": {"scale_min": 0.5,
                                                                                      "scale_max": 0.5}},
                                                   "transductive": {"init_iter": 1, "iters": 1}})
    seen: list[torch.Tensor] = []
    real_build = loop.build_model

    def build_and_watch(*args, **kwargs):
        model = real_build(*args, **kwargs)
        model.register_forward_pre_hook(lambda _m, inputs: seen.append(inputs[0].detach().clone()))
        return model

    monkeypatch.setattr(loop, "build_model", build_and_watch)
    loop.train_segmentor(cfg, "inductive", split, root, None, tmp_path / "run")
    images = seen[-1]  # (b, 3, 64, 64): a 32 px crop padded to 64
    assert images.shape[-1] == 64
    assert torch.all(images[:, :, 32:, :] == 0) and torch.all(images[:, :, :, 32:] == 0)
    assert images[:, :, :32, :32].abs().sum() > 0
