"""FLOP counting shared by the benchmarks and the report tables, attention included.

Why not torch.utils.flop_counter.FlopCounterMode alone: it records 0 FLOPs for the CPU fused
attention kernels and for nn.MultiheadAttention's inference fast path (toolchain.md, "Measured
traps": 177.8 instead of 217.3 GFLOP for the prompted ViT-B/16 image encoder at 512 px, 10
visual prompt tokens, every output token projected; the plain ViT-B/16 at 512 px is 214.1; on
torch 2.14.1 even 0 for dense SDPA). `count_flops` therefore counts
- under the MATH scaled-dot-product-attention backend (it decomposes into matrix products that
  the counter sees) with the MultiheadAttention fast path switched off, and
- on the `meta` device by default: parameters, buffers and inputs are replaced by meta tensors of
  the same shapes for the duration of the call, so counting a ViT-B/16 training step costs no
  arithmetic and no memory (the module itself is restored untouched afterwards).
What is counted: matrix products, convolutions and attention, forward and (with backward=True)
backward, 2 FLOPs per multiply-add (torch's convention). Not counted: element-wise work
(softmax, norms, GELU, the loss's element-wise terms, the optimizer): a few percent at most.

The "GFLOPs" that ZegCLIP reports (110.4 VOC / 123.9 COCO-Stuff, protocol.md) come from its
get_flops.py, which uses fvcore's FlopCountAnalysis: ONE multiply-add = ONE FLOP, for the
inference forward of one 512x512 image through the image encoder and the decoder (its configs
load the class text embeddings from a file, so no text encoder runs). Checked arithmetic
(`zegclip_reference_gmacs`, multiply-adds):
    ViT-B/16, 512 px, 1 + 1024 + 10 prompt tokens = 1035, width 768, 12 layers, MLP 3072:
        patch conv 0.604 G + 12 x (12 x 1035 x 768^2 + 2 x 1035^2 x 768) = 107.652 G
        + projection of the 1025 output tokens 0.403 G                    = 108.66 G (encoder)
    decoder (3 layers, width 512, FFN 2048, 1024 tokens, C classes; ZegCLIP's layers have no
    query self-attention): per layer 2 x 1024 x 512^2 (k, v) + C x (2 x 512^2 + 2 x 512 x 2048
    + 2 x 1024 x 512) (q, out, FFN, attention), plus the query projection C x 1024 x 512:
        VOC (C = 20): 1.84 G   -> 110.5 G in total, reported 110.4 (this count 0.1% above)
        COCO-Stuff (100 prompts: 1125 tokens, encoder 119.89 G; C = 171: 3.58 G) -> 123.5 G,
        reported 123.9 (this count 0.35% below; fvcore also counts norms and the upsampling).
    This analytic count leaves out ZegCLIP's shared prompt_proj (a 768 x 768 Linear on each layer's
    prompt tokens: 12 x 10 x 768^2 = 0.07 G VOC, 0.71 G COCO-Stuff, `zegclip_prompt_proj_gmacs`);
    the counted zegclip MODEL (segmentor_flops) includes it but builds only what the mask logits
    use, so it lacks the last decoder layer's value projection, attention-weighted sum, output
    projection and FFN, which ZegCLIP executes and discards (0.33 G VOC, `zegclip_unbuilt_last_layer_gmacs`).
    The counted model's 110.2 (VOC) against the published 110.4 is these two omissions nearly
    cancelling: ZegCLIP executes 110.5 + 0.07 = 110.6 GMACs in this count.
The same total in torch's convention is twice that (the prompted encoder alone: 217.3 GFLOP with 10
prompt tokens and every output token projected; a plain ViT-B/16 at 512 px: 214.1). So a
ZegCLIP-comparable figure is `paper_gflops(count_flops(...))` = FLOPs / 2 / 1e9 of the inference
forward without the text encoder; `segmentor_flops` returns the parts to build it.

Deviations: none in the counted operations; element-wise operations are deliberately left out
(fvcore counts norms and upsampling, about 0.3% of ZegCLIP's total).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "count_flops",
    "flop_breakdown",
    "on_meta",
    "paper_gflops",
    "segmentor_flops",
    "vit_forward_flops",
    "zegclip_prompt_proj_gmacs",
    "zegclip_reference_gmacs",
    "zegclip_unbuilt_last_layer_gmacs",
]


# --------------------------------------------------------------------------------------------
# Counting
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def on_meta(*modules: nn.Module) -> Iterator[None]:
    """Swap every parameter and buffer of `modules` for a meta tensor of the same shape, dtype
    and requires_grad; restore the originals on exit (tied tensors stay tied)."""
    saved: list[tuple[dict, str, Any]] = []
    swapped: dict[int, Any] = {}

    def meta_of(t: torch.Tensor, param: bool) -> torch.Tensor:
        if id(t) not in swapped:
            m = torch.empty_like(t, device="meta")
            swapped[id(t)] = nn.Parameter(m, requires_grad=t.requires_grad) if param else m
        return swapped[id(t)]

    try:
        seen: set[int] = set()
        for root in modules:
            for mod in root.modules():
                if id(mod) in seen:
                    continue
                seen.add(id(mod))
                for table, param in ((mod._parameters, True), (mod._buffers, False)):
                    for name, t in table.items():
                        if t is not None and t.device.type != "meta":
                            saved.append((table, name, t))
                            table[name] = meta_of(t, param)
        yield
    finally:
        for table, name, t in reversed(saved):
            table[name] = t


def _to_meta(x: Any) -> Any:
    if isinstance(x, torch.Tensor) and x.device.type != "meta":
        return torch.empty_like(x, device="meta").requires_grad_(x.requires_grad)
    return x


@contextlib.contextmanager
def _countable_attention() -> Iterator[None]:
    """Math SDPA backend (visible matrix products) and no MultiheadAttention fast path."""
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def _backward(out: Any) -> None:
    """Backward from `out`: a scalar as is, otherwise the sum of every differentiable tensor."""
    tensors = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor) and t.requires_grad]
    if not tensors:
        raise ValueError("count_flops(backward=True): the output has no tensor that requires grad")
    total = tensors[0].sum() if tensors[0].dim() else tensors[0]
    for t in tensors[1:]:
        total = total + t.sum()
    total.backward()


def _run(fn_or_module: Callable[..., Any] | nn.Module, inputs: Sequence[Any], backward: bool, meta: bool,
         modules: Sequence[nn.Module], depth: int | None) -> FlopCounterMode:
    mods = list(modules) + ([fn_or_module] if isinstance(fn_or_module, nn.Module) else [])
    args = tree_map(_to_meta, list(inputs)) if meta else list(inputs)
    counter = FlopCounterMode(display=False, depth=depth)
    # A real backward would leave gradients in the caller's parameters: put the old ones back.
    grads = [(p, p.grad) for m in mods for p in m.parameters()] if backward and not meta else []
    try:
        with contextlib.ExitStack() as stack:
            if meta:
                stack.enter_context(on_meta(*mods))
            stack.enter_context(_countable_attention())
            stack.enter_context(counter)
            out = fn_or_module(*args)
            if backward:
                _backward(out)
    finally:
        for p, g in grads:
            p.grad = g
    return counter


def count_flops(fn_or_module: Callable[..., Any] | nn.Module, *inputs: Any, backward: bool = False,
                meta: bool = True, modules: Sequence[nn.Module] = ()) -> int:
    """FLOPs (2 per multiply-add) of `fn_or_module(*inputs)`, attention included.

    backward=True also counts the backward of the output (a scalar loss, or the sum of the
    differentiable outputs) - only what autograd computes: frozen weights get no gradient.
    meta=True (default) runs on meta tensors: a module passed directly, every module in
    `modules` (those a plain function closes over) and the tensor inputs are put on `meta` for the
    call. meta=False runs for real (for code that reads tensor values, e.g. .item()).
    """
    return int(_run(fn_or_module, inputs, backward, meta, modules, None).get_total_flops())


def flop_breakdown(fn_or_module: Callable[..., Any] | nn.Module, *inputs: Any, meta: bool = True,
                   modules: Sequence[nn.Module] = ()) -> dict[str, int]:
    """Forward FLOPs per module, as `count_flops` counts them: {"total": n, "<Class>.<child>": n, ...}.

    Keys are torch's module paths (the root module's class name, then attribute names). Forward
    only: torch's module tracker attributes backward operations to every module still open in
    the backward pass, so per-module backward counts overlap (measured: the parts of an LDVC step
    summed to 1.35x its total); `segmentor_flops` counts the parts of a backward separately.
    """
    counter = _run(fn_or_module, inputs, False, meta, modules, None)
    out = {"total": int(counter.get_total_flops())}
    for name, ops in counter.get_flop_counts().items():
        if name != "Global":
            out[name] = int(sum(ops.values()))
    return out


def paper_gflops(flops: int | float) -> float:
    """ZegCLIP's "GFLOPs" (fvcore: one multiply-add = one FLOP) from a torch-convention count."""
    return flops / 2 / 1e9


# --------------------------------------------------------------------------------------------
# The segmentor, part by part
# --------------------------------------------------------------------------------------------


def segmentor_flops(model: nn.Module, image_size: int, batch: int = 1, class_ids: torch.Tensor | None = None,
                    backward: bool = False, meta: bool = True,
                    parts: Sequence[str] = ("image_encoder", "text_encoder", "decoder")) -> dict[str, int]:
    """FLOPs of one forward (backward=True: forward + backward) of a Segmentor, by part.

    Returns {"image_encoder", "text_encoder", "decoder", "total"} for `batch` images of
    image_size x image_size and the classes `class_ids` (None: all). Each part is counted on its
    own with inputs of the shapes (and requires_grad) it gets inside the segmentor, and "total" is
    their sum: the backward of the sum of a part's outputs costs what the real upstream gradient
    costs, and the segmentor adds no matrix product between the parts (tests/test_flops.py checks
    this against a count of the whole model). Counting the parts apart also keeps every count on
    the meta device where the part allows it: the text encoder's class-id range check reads
    values (.item()), so it is counted for real, with a warning; on CUDA a whole-model count would
    then run the compiled FlexAttention under the counter. With backward=True the loss is the sum
    of the logits: its backward FLOPs equal the real loss's (element-wise terms are not counted).
    The ZegCLIP-comparable inference figure is paper_gflops(parts["image_encoder"] +
    parts["decoder"]) at batch 1 (see the module docstring).
    Text encoder: backward=True counts what a TRAINING step computes, which is nothing for a text
    encoder without learnable prompts (ZegCLIP's baseline: its class embeddings are computed once and
    cached, ldvc/model/text_encoder.py); backward=False counts its forward over the classes (the
    one-off cost per vocabulary). The encoder's embedding cache is cleared around the count, so a
    count never reads an embedding cached by an earlier one.
    `parts`: count only these (the others are 0; "total" is the sum of the counted ones).
    """
    enc, txt = model.image_encoder, model.text_encoder
    device = _device_of(model)
    images = torch.zeros(batch, 3, image_size, image_size, device=device)
    image = _count_meta_or_real(enc, (images,), backward, meta) if "image_encoder" in parts else 0
    cache = (getattr(txt, "_cache", None), getattr(txt, "_cache_key", None))
    try:
        if hasattr(txt, "_cache"):
            txt._cache, txt._cache_key = None, None
        cached_in_steps = backward and not any(p.requires_grad for p in txt.parameters())
        text = 0 if cached_in_steps or "text_encoder" not in parts else _count_meta_or_real(txt, (class_ids,),
                                                                                             backward, meta)
    finally:
        if hasattr(txt, "_cache"):
            txt._cache, txt._cache_key = cache
    h, w = enc.grid((image_size, image_size))
    D = enc.embed_dim
    C = len(class_ids) if class_ids is not None else len(txt.class_names)
    enc_grad = any(p.requires_grad for p in enc.parameters())  # visual prompts: the decoder's inputs carry grad
    txt_grad = any(p.requires_grad for p in txt.parameters())
    decoder_inputs = (torch.zeros(batch, D, h, w, device=device, requires_grad=enc_grad),  # (B, D, h, w)
                      torch.zeros(batch, D, device=device, requires_grad=enc_grad),  # (B, D)
                      torch.zeros(C, D, device=device, requires_grad=txt_grad),  # (C', D)
                      (image_size, image_size))
    decoder = _count_meta_or_real(model.decoder, decoder_inputs, backward, meta) if "decoder" in parts else 0
    return {"image_encoder": image, "text_encoder": text, "decoder": decoder, "total": image + text + decoder}


def _count_meta_or_real(module: nn.Module, inputs: tuple, backward: bool, meta: bool) -> int:
    if backward and not any(p.requires_grad for p in module.parameters()) and not any(
            isinstance(t, torch.Tensor) and t.requires_grad for t in inputs):
        backward = False  # nothing to differentiate (e.g. a text encoder without prompts)
    try:
        return count_flops(module, *inputs, backward=backward, meta=meta)
    except (RuntimeError, NotImplementedError) as err:
        if not meta or "meta" not in str(err):
            raise
        warnings.warn(f"segmentor_flops: {type(module).__name__} cannot run on meta tensors ({err}); "
                      f"counting it for real", stacklevel=3)
        return count_flops(module, *inputs, backward=backward, meta=False)


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


# --------------------------------------------------------------------------------------------
# Analytic counts (tests and the documented ZegCLIP arithmetic)
# --------------------------------------------------------------------------------------------


def vit_forward_flops(image_size: int | tuple[int, int], patch_size: int, width: int, layers: int,
                      mlp_width: int | None = None, extra_tokens: int = 0, proj_dim: int | None = None,
                      proj_tokens: str = "cls", batch: int = 1, in_chans: int = 3) -> int:
    """FLOPs (2 per multiply-add) of a CLIP ViT image forward: matrix products and attention.

    tokens N = 1 (CLS) + patches + extra_tokens (visual prompts); per layer: qkv 3NC^2, attention
    2N^2C, output projection NC^2, MLP 2NC*mlp_width (multiply-adds). proj_tokens "cls" projects
    the CLS token only (open_clip's visual), "all" every non-prompt token (ldvc's encoder).
    """
    H, W = (image_size, image_size) if isinstance(image_size, int) else image_size
    patches = (H // patch_size) * (W // patch_size)
    n = 1 + patches + extra_tokens
    mlp = 4 * width if mlp_width is None else mlp_width
    conv = patches * width * in_chans * patch_size * patch_size
    per_layer = 3 * n * width * width + 2 * n * n * width + n * width * width + 2 * n * width * mlp
    proj = 0
    if proj_dim:
        if proj_tokens not in ("cls", "all"):
            raise ValueError(f"proj_tokens must be 'cls' or 'all', got {proj_tokens!r}")
        proj = (1 if proj_tokens == "cls" else 1 + patches) * width * proj_dim
    return 2 * batch * (conv + layers * per_layer + proj)


def zegclip_decoder_macs(classes: int, tokens: int = 1024, width: int = 512, ffn: int = 2048, layers: int = 3,
                         embed_dim: int = 512) -> int:
    """Multiply-adds of ZegCLIP's decoder forward (no query self-attention, use_proj off)."""
    query_proj = classes * 2 * embed_dim * width
    per_layer = (2 * tokens * width * width  # k, v projections of the patch tokens
                 + classes * 2 * width * width  # q and output projections
                 + classes * 2 * tokens * width  # q k^T and attention x v
                 + classes * 2 * width * ffn)  # FFN
    return query_proj + layers * per_layer


def zegclip_reference_gmacs(dataset: str) -> dict[str, float]:
    """ZegCLIP's reported GFLOPs re-derived (multiply-adds, 512 px, one image; module docstring)."""
    setups = {"voc": (10, 20, 110.4), "coco_stuff": (100, 171, 123.9)}
    if dataset not in setups:
        raise ValueError(f"no ZegCLIP FLOP figure for {dataset!r}; one of {sorted(setups)}")
    prompts, classes, reported = setups[dataset]
    encoder = vit_forward_flops(512, 16, 768, 12, extra_tokens=prompts, proj_dim=512, proj_tokens="all") / 2
    decoder = zegclip_decoder_macs(classes)
    return {"encoder": encoder / 1e9, "decoder": decoder / 1e9, "total": (encoder + decoder) / 1e9,
            "reported": reported}


def zegclip_prompt_proj_gmacs(prompts: int, width: int = 768, layers: int = 12) -> float:
    """GMACs of ZegCLIP's shared prompt_proj (Linear width -> width) on `prompts` tokens in each of `layers`."""
    return layers * prompts * width * width / 1e9


def zegclip_unbuilt_last_layer_gmacs(classes: int, tokens: int = 1024, width: int = 512, ffn: int = 2048) -> float:
    """GMACs ZegCLIP's last TPN layer executes but its mask logits never use, which the zegclip model
    does not build: the value projection of the patch tokens, the attention-weighted sum, the output
    projection and the FFN of the class queries."""
    return (tokens * width * width + classes * tokens * width + classes * width * width
            + classes * 2 * width * ffn) / 1e9
