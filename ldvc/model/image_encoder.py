"""Frozen CLIP image encoder with deep visual prompt tuning (VPT-deep) and input-size adaptation.

Implements the image side of LDVC's vision-language prompt tuning and ZegCLIP's backbone
(protocol.md, "ZegCLIP settings"): any open_clip `VisionTransformer` (`clip_model.visual`) with
- its positional embedding bilinearly resized from the native grid to the token grid of the input
  (ViT-B/16: 14x14 -> 32x32 at 512 px), as ZegCLIP does (align_corners=False);
- `prompt_tokens` learnable tokens appended after the CLS and patch tokens in each of the first
  `prompt_depth` layers (-1 = all) and replaced at each of those layers (VPT-deep). Beyond
  `prompt_depth` the last prompts' outputs simply travel on through the remaining layers;
- outputs: the patch tokens after ln_post and the visual projection, (B, D, h, w), and the
  projected CLS embedding (B, D) - the same two outputs ZegCLIP's VPT backbone returns.

Choices that are ours:
- Prompts are initialised uniformly in +-sqrt(6 / (3 * patch^2 + width)) (VPT's Xavier-style init).
- No drop-path or prompt dropout: open_clip's blocks have no drop-path (ZegCLIP's own ViT used 0.1),
  and CLIP stays in eval mode even when the segmentor trains, so CLIP's dropout never fires.
- Every CLIP parameter is frozen (requires_grad=False) in place: the caller's `clip_model` is frozen.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def resize_positional_embedding(
    pos: torch.Tensor, native_grid: tuple[int, int], grid: tuple[int, int]
) -> torch.Tensor:
    """(1 + gh*gw, C) CLS + patch positions -> (1 + h*w, C), patch part resized bilinearly."""
    if tuple(native_grid) == tuple(grid):
        return pos
    cls_pos, patch_pos = pos[:1], pos[1:]
    gh, gw = native_grid
    patch_pos = patch_pos.reshape(1, gh, gw, -1).permute(0, 3, 1, 2)  # (1, C, gh, gw)
    patch_pos = F.interpolate(patch_pos, size=grid, mode="bilinear", align_corners=False)
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1)  # (h*w, C)
    return torch.cat([cls_pos, patch_pos], dim=0)


def _check_visual(visual: nn.Module) -> None:
    needed = ("conv1", "class_embedding", "positional_embedding", "ln_pre", "transformer", "ln_post", "proj")
    missing = [name for name in needed if not hasattr(visual, name)]
    if missing:
        raise TypeError(
            f"PromptedImageEncoder needs an open_clip VisionTransformer (clip_model.visual); "
            f"{type(visual).__name__} lacks {missing} (ResNet/timm towers are not supported)"
        )
    if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok":
        raise TypeError("PromptedImageEncoder supports CLS-token pooling only (no attentional/avg pool)")
    if getattr(visual, "final_ln_after_pool", False):
        raise TypeError("PromptedImageEncoder needs ln_post applied to every token (final_ln_after_pool off)")
    if visual.proj is None:
        raise TypeError("PromptedImageEncoder needs the visual projection (visual.proj is None)")


class PromptedImageEncoder(nn.Module):
    """images (B, 3, H, W) -> (patch tokens (B, D, H/p, W/p), global embedding (B, D))."""

    def __init__(self, visual: nn.Module, prompt_tokens: int = 0, prompt_depth: int = -1) -> None:
        super().__init__()
        _check_visual(visual)
        layers = len(visual.transformer.resblocks)
        if prompt_tokens < 0:
            raise ValueError(f"visual prompt tokens must be >= 0, got {prompt_tokens}")
        if prompt_depth == -1:
            prompt_depth = layers
        if not 0 <= prompt_depth <= layers:
            raise ValueError(
                f"visual prompt depth {prompt_depth} is outside 0..{layers} (the encoder's layers); "
                f"use -1 for all layers"
            )
        self.visual = visual
        for p in self.visual.parameters():
            p.requires_grad_(False)
        self.visual.eval()
        self.patch_size = tuple(visual.patch_size) if hasattr(visual, "patch_size") else visual.conv1.stride
        self.native_grid = tuple(visual.grid_size)
        self.width = visual.class_embedding.shape[-1]
        self.embed_dim = visual.proj.shape[1]
        self.prompt_depth = prompt_depth if prompt_tokens > 0 else 0
        self.prompt_tokens = prompt_tokens if self.prompt_depth > 0 else 0
        if self.prompt_tokens:
            bound = math.sqrt(6.0 / (3 * self.patch_size[0] * self.patch_size[1] + self.width))
            self.prompts = nn.Parameter(
                torch.empty(self.prompt_depth, self.prompt_tokens, self.width).uniform_(-bound, bound)
            )  # (depth, n, width)
        else:
            self.register_parameter("prompts", None)

    def train(self, mode: bool = True) -> PromptedImageEncoder:
        super().train(mode)
        self.visual.eval()  # frozen CLIP: no dropout / patch dropout, whatever the segmentor does
        return self

    def grid(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """Token grid (h, w) for an input of `image_size` (H, W); errors if not a patch multiple."""
        H, W = image_size
        ph, pw = self.patch_size
        if H % ph or W % pw:
            raise ValueError(
                f"input size {H}x{W} is not a multiple of the CLIP patch size {ph}x{pw}; "
                f"resize or crop the images (data.image_size / eval.window) to a multiple of {ph}"
            )
        return H // ph, W // pw

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        visual = self.visual
        B = images.shape[0]
        h, w = self.grid(tuple(images.shape[-2:]))
        n_patch = h * w
        dtype = visual.conv1.weight.dtype
        x = visual.conv1(images.to(dtype))  # (B, width, h, w)
        x = x.flatten(2).transpose(1, 2)  # (B, h*w, width)
        cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(B, -1, -1)
        x = torch.cat([cls, x], dim=1)  # (B, 1 + h*w, width)
        x = x + resize_positional_embedding(visual.positional_embedding, self.native_grid, (h, w)).to(x.dtype)
        x = visual.ln_pre(x)
        batch_first = getattr(visual.transformer, "batch_first", True)
        for i, block in enumerate(visual.transformer.resblocks):
            if i < self.prompt_depth:
                prompts = self.prompts[i].to(x.dtype).unsqueeze(0).expand(B, -1, -1)  # (B, n, width)
                # Layer 0 appends the prompts; later prompted layers replace the previous ones.
                x = torch.cat([x[:, : 1 + n_patch], prompts], dim=1)  # (B, 1 + h*w + n, width)
            if batch_first:
                x = block(x)
            else:
                x = block(x.transpose(0, 1)).transpose(0, 1)
        x = visual.ln_post(x[:, : 1 + n_patch]) @ visual.proj  # (B, 1 + h*w, D); prompts dropped
        global_embedding = x[:, 0]  # (B, D)
        patches = x[:, 1:].transpose(1, 2).reshape(B, -1, h, w)  # (B, D, h, w)
        return patches, global_embedding
