"""Evaluation on a GPU without changing a prediction (ldvc/eval/inference.py): windows batched across
images give the same labels and confusion matrix as one window at a time through the model's own
forward; scoring the classes in chunks gives the same labels as all at once; an 847-class
evaluation (ADE20K-847's vocabulary size) stays within bounded memory; the window batches the model
sees keep one shape (no recompilation of a shape-static compiled model per call)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ldvc.config import EvalConfig
from ldvc.data.normalize import normalize
from ldvc.eval.inference import calibrated_labels, infer_labels, window_starts
from ldvc.eval.metrics import ConfusionMatrix

NAMES = ["red", "blue", "striped red", "dotted teal", "green", "yellow", "grey stripes"]


def _model(names: list[str], decoder: str = "lctd") -> torch.nn.Module:
    from ldvc.config import config_from_dict, deep_merge, load_config
    from ldvc.model.build import build_segmentor
    from ldvc.model.clip_loader import create_clip

    cfg = load_config("params.yaml").to_dict()
    cfg = config_from_dict(deep_merge(cfg, {"decoder": {"type": decoder}}), variant=True)
    torch.manual_seed(0)
    return build_segmentor(cfg, create_clip("ldvc-tiny-vit"), names).eval()


def _model64(names: list[str], decoder: str) -> torch.nn.Module:
    """In float64: a random model's class scores lie close together, and float32 sums of another
    batch composition (BLAS blocks by the batch size) would flip near-ties; float64 keeps the
    comparison about the algorithm."""
    return _model(names, decoder).double()


def _images() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    # 1, 2, 2 and 4 windows of 64 px at stride 40, and one image smaller than a window
    return [torch.rand(3, *hw, generator=gen) for hw in ((64, 64), (64, 100), (90, 64), (100, 100), (48, 56))]


def _one_window_at_a_time(model, image, out_size, window, stride, seen, bias) -> torch.Tensor:
    """The reference: each window alone through the model's forward (upsampling inside the decoder)."""
    h, w = image.shape[-2:]
    total, count = None, torch.zeros(1, h, w, dtype=image.dtype)
    for y in window_starts(h, window, stride):
        for x in window_starts(w, window, stride):
            crop = image[:, y:y + window, x:x + window]
            padded = torch.zeros(3, window, window, dtype=image.dtype)
            padded[:, :crop.shape[1], :crop.shape[2]] = crop
            with torch.no_grad():
                sc = model(normalize(padded[None]), None).sigmoid()[0]
            total = torch.zeros(sc.shape[0], h, w, dtype=sc.dtype) if total is None else total
            ch, cw = min(window, h - y), min(window, w - x)
            total[:, y:y + ch, x:x + cw] += sc[:, :ch, :cw]
            count[:, y:y + ch, x:x + cw] += 1
    avg = F.interpolate((total / count)[None], size=out_size, mode="bilinear", align_corners=False)[0]
    return calibrated_labels(avg, seen, bias, inductive=True)


@pytest.mark.parametrize("decoder", ["lctd", "zegclip"])
def test_batched_chunked_evaluation_equals_one_window_at_a_time(decoder: str) -> None:
    model = _model64(NAMES, decoder)
    images = [im.double() for im in _images()]
    sizes = [(im.shape[1] + 7, im.shape[2] - 5) for im in images]  # labels at another size than the input
    seen = [0, 2, 3, 5]
    cfg = EvalConfig(mode="slide", window=64, stride=40, batch_size=3)
    ref = [_one_window_at_a_time(model, im, sz, 64, 40, seen, 0.1) for im, sz in zip(images, sizes)]
    gen = torch.Generator().manual_seed(2)
    gts = [torch.randint(0, len(NAMES), sz, generator=gen) for sz in sizes]
    expected = ConfusionMatrix(len(NAMES))
    for r, gt in zip(ref, gts):
        expected.update(r, gt)
    for chunk in (None, 3, 1):  # all classes at once, chunks of 3 (uneven), one class at a time
        got = infer_labels(model, images, sizes, cfg, 64, seen=seen, seen_bias=0.1, inductive=True,
                           class_chunk=chunk, fixed_batch=chunk == 3)
        cm = ConfusionMatrix(len(NAMES))
        for g, gt in zip(got, gts):
            cm.update(g, gt, check=chunk != 1)
        assert torch.equal(cm.matrix, expected.matrix), chunk
        assert all(torch.equal(g, r) for g, r in zip(got, ref)), chunk


def test_chunks_keep_the_first_maximum_across_chunk_boundaries() -> None:
    """Ties are resolved as torch.argmax does (first class), also when the tie spans two chunks."""
    class Tied(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x, class_ids=None):  # classes 1 and 4 tie everywhere, the rest lower
            logits = torch.full((x.shape[0], 6, *x.shape[-2:]), -3.0)
            logits[:, 1] = logits[:, 4] = 2.0
            return logits

    cfg = EvalConfig(mode="whole", batch_size=2)
    for chunk in (None, 2, 3, 4):
        (lab,) = infer_labels(Tied(), [torch.rand(3, 8, 8)], [(8, 8)], cfg, 8, class_chunk=chunk)
        assert bool((lab == 1).all()), chunk


def test_847_class_evaluation_memory_is_bounded_by_the_chunk() -> None:
    """The scores of an 847-class vocabulary at the image size are built 64 classes at a time: the peak
    memory of one image's evaluation falls with the chunk; the labels are the same."""
    from benchmarks.common import peak_memory_mb

    names = [f"class {i}" for i in range(847)]
    model = _model(names)
    image = torch.rand(3, 64, 200, generator=torch.Generator().manual_seed(3))  # 4 windows
    cfg = EvalConfig(mode="slide", window=64, stride=48, batch_size=4)
    out: dict = {}

    def run(chunk):
        def fn():
            out[chunk] = infer_labels(model, [image], [(128, 400)], cfg, 64, class_chunk=chunk)[0]
        return fn

    with torch.no_grad():
        model.text_encoder(None)  # embeddings cached once, outside the measured calls
    full = peak_memory_mb(run(None), torch.device("cpu"))
    chunked = peak_memory_mb(run(64), torch.device("cpu"))
    # all classes: (847, 64, 200) averaged + (847, 128, 400) resized floats = 208 MiB
    assert full > 150 and chunked < 0.2 * full, (full, chunked)
    assert torch.equal(out[None], out[64])


def test_window_batches_keep_one_shape_so_a_compiled_model_compiles_once() -> None:
    """Images with 1, 2, 2, 4 and 1 windows and a partial last batch: with fixed batches (the default on
    CUDA) the compiled encoder and decoder see one shape each and compile once; without, every new
    batch size is a recompile (what would drive a shape-static compiled FlexAttention to its limit)."""
    for fixed, most in ((True, 1), (False, 2)):
        model = _model(NAMES)
        compiled: list[int] = []

        def counting(gm, example_inputs, compiled=compiled):
            compiled.append(1)
            return gm.forward

        torch._dynamo.reset()
        model.image_encoder = torch.compile(model.image_encoder, backend=counting, dynamic=False)
        model.decoder = torch.compile(model.decoder, backend=counting, dynamic=False)
        cfg = EvalConfig(mode="slide", window=64, stride=40, batch_size=4)
        images = _images()
        infer_labels(model, images[:3], [im.shape[1:] for im in images[:3]], cfg, 64, fixed_batch=fixed)
        infer_labels(model, images[3:], [im.shape[1:] for im in images[3:]], cfg, 64, fixed_batch=fixed)
        whole = EvalConfig(mode="whole", batch_size=4)
        infer_labels(model, images[:3], [im.shape[1:] for im in images[:3]], whole, 64, fixed_batch=fixed)
        torch._dynamo.reset()
        if fixed:
            assert len(compiled) == 2, compiled  # one graph each for the encoder and the decoder
        else:
            assert len(compiled) > 2 * most, compiled
