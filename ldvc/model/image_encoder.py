"""Frozen CLIP image encoder with deep visual prompt tuning, exactly as ZegCLIP builds it.

Implements ZegCLIP's backbone (public code ZiqinZhou66/ZegCLIP, models/backbone/img_encoder.py,
`VPTCLIPVisionTransformer`, configs/voc12/*: num_tokens 10 / 100, prompt_dim 768, total_d_layer 11),
which LDVC builds on, over any open_clip `VisionTransformer` (`clip_model.visual`). Point by point:

1. Patch embedding (conv1), then the CLS token. ZegCLIP's quirk (`cls_quirk`, default on): its
   forward concatenates `class_embedding` as the CLS token AND adds `pos[0] + class_embedding` as
   the CLS position, so the CLS token carries the class embedding twice:
   cls = 2 * class_embedding + pos[0]. Its released checkpoints were trained with it.
2. Positional embedding of the patches resized bilinearly (align_corners=False) from CLIP's grid
   (ViT-B/16: 14x14) to the token grid (32x32 at 512 px), then ln_pre.
3. Deep VPT: `prompt_tokens` learnable tokens per layer, initialised uniformly in
   +-sqrt(6 / (3 * patch^2 + width)). Before layer 0 and replaced before each of the first
   `prompt_depth` layers, each layer's tokens go through ONE shared learnable projection
   `prompt_proj` (Linear width -> width, kaiming-normal fan_out weight, default bias init), are
   expanded to the batch and THEN dropped out (`prompt_dropout`, ZegCLIP 0.1), so every sample gets
   its own dropout mask (img_encoder.py lines 242 and 289: `prompt_dropout(prompt_proj(p).expand(B,
   -1, -1))`), and are placed between the CLS and the patch tokens: [CLS, prompts, patches]. After
   the last prompted layer the prompts are dropped (ZegCLIP's deep VPT), except with prompt_depth 1
   (ZegCLIP's total_d_layer 0, shallow VPT) where they travel on.
4. With DEEP prompts the last hidden states go through a learnable LayerNorm `prompt_norm` (eps
   1e-6) (forward_deep_prompt, line 312); ZegCLIP's shallow path (lines 250-256) skips it, and so do
   we. Then CLIP's ln_post and projection; the CLS output is the global embedding, the last h*w
   tokens the patch embeddings; both are L2-normalised (ZegCLIP's out_indices=[11] path), (B, D) and
   (B, D, h, w).
5. Learnable: every parameter of this module outside CLIP (prompts, prompt_proj, prompt_norm),
   ZegCLIP's `exclude_key='prompt'`. CLIP itself is frozen in place and kept in eval mode.

Deviations, each with its reason:
- Drop-path: ZegCLIP's configs set drop_path_rate=0.1 and its ResidualAttentionBlock BUILDS a
  DropPath, but its forward never applies it (models/backbone/utils.py), so the faithful rate is
  0. `drop_path` > 0 applies stochastic depth (linear rule 0..rate over the layers, as ZegCLIP's
  Transformer would have) to both residual branches of each block.
- ZegCLIP stores the 32x32 positional embedding resized once at load time and resizes it again
  for other input sizes; we resize from CLIP's native grid directly for any size. Identical at the
  training/evaluation size (512), different only for other window sizes.
- ZegCLIP's LayerNorm subclass computes in float32; under autocast torch's LayerNorm does too.
- Shallow VPT: ZegCLIP builds a `prompt_norm` it never applies there; we do not build it (a trainable
  parameter without a gradient would only upset DDP; the checkpoint importer knows its key).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

PROMPT_NORM_EPS = 1e-6


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


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth per sample (timm's drop_path semantics): (B, N, C) -> same."""
    if rate <= 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask / keep


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
    """images (B, 3, H, W) -> (patch embeddings (B, D, H/p, W/p), global embedding (B, D)), L2-normalised."""

    def __init__(self, visual: nn.Module, prompt_tokens: int = 0, prompt_depth: int = -1, *,
                 prompt_proj: bool = True, prompt_dropout: float = 0.0, prompt_norm: bool = True,
                 drop_path: float = 0.0, cls_quirk: bool = True) -> None:
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
        if not 0.0 <= drop_path < 1.0 or not 0.0 <= prompt_dropout < 1.0:
            raise ValueError(f"drop_path ({drop_path}) and prompt_dropout ({prompt_dropout}) must be in [0, 1)")
        self.visual = visual
        for p in self.visual.parameters():
            p.requires_grad_(False)
        self.visual.eval()
        self.patch_size = tuple(visual.patch_size) if hasattr(visual, "patch_size") else visual.conv1.stride
        self.native_grid = tuple(visual.grid_size)
        self.width = visual.class_embedding.shape[-1]
        self.embed_dim = visual.proj.shape[1]
        self.cls_quirk = cls_quirk
        self.prompt_depth = prompt_depth if prompt_tokens > 0 else 0
        self.prompt_tokens = prompt_tokens if self.prompt_depth > 0 else 0
        # ZegCLIP's linear stochastic-depth rule over the layers (applied only when rate > 0)
        self.drop_path_rates = [drop_path * i / max(layers - 1, 1) for i in range(layers)]
        if self.prompt_tokens:
            bound = math.sqrt(6.0 / (3 * self.patch_size[0] * self.patch_size[1] + self.width))
            self.prompts = nn.Parameter(
                torch.empty(self.prompt_depth, self.prompt_tokens, self.width).uniform_(-bound, bound)
            )  # (depth, n, width): ZegCLIP's prompt_embeddings (layer 0) + deep_prompt_embeddings
            self.prompt_proj = nn.Linear(self.width, self.width) if prompt_proj else nn.Identity()
            if prompt_proj:
                nn.init.kaiming_normal_(self.prompt_proj.weight, a=0, mode="fan_out")
            self.prompt_dropout = nn.Dropout(prompt_dropout)
        else:
            self.register_parameter("prompts", None)
            self.prompt_proj = nn.Identity()
            self.prompt_dropout = nn.Identity()
        # ZegCLIP applies prompt_norm to the last hidden states of its DEEP prompt path only (shallow VPT
        # never calls it); without prompts its backbone is the plain CLIPVisionTransformer, without it.
        use_norm = prompt_norm and self.prompt_tokens > 0 and self.prompt_depth > 1
        self.prompt_norm = nn.LayerNorm(self.width, eps=PROMPT_NORM_EPS) if use_norm else nn.Identity()

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

    def _layer_prompts(self, i: int, batch: int, dtype: torch.dtype) -> torch.Tensor:
        p = self.prompt_proj(self.prompts[i].to(dtype))  # (n, width)
        return self.prompt_dropout(p.unsqueeze(0).expand(batch, -1, -1))  # (B, n, width): a mask per sample

    def _block(self, i: int, block: nn.Module, x: torch.Tensor, batch_first: bool) -> torch.Tensor:
        if not batch_first:
            x = x.transpose(0, 1)
        rate = self.drop_path_rates[i]
        if rate > 0.0 and self.training:
            # open_clip's ResidualAttentionBlock, with stochastic depth on both residual branches
            x = x + drop_path(block.ls_1(block.attention(q_x=block.ln_1(x))), rate, True)
            x = x + drop_path(block.ls_2(block.mlp(block.ln_2(x))), rate, True)
        else:
            x = block(x)
        return x if batch_first else x.transpose(0, 1)

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
        cls_emb = visual.class_embedding.to(x.dtype)
        pos = resize_positional_embedding(visual.positional_embedding, self.native_grid, (h, w)).to(x.dtype)
        if self.cls_quirk:  # ZegCLIP: the CLS position is pos[0] + class_embedding
            pos = torch.cat([pos[:1] + cls_emb, pos[1:]], dim=0)
        x = torch.cat([cls_emb.view(1, 1, -1).expand(B, -1, -1), x], dim=1)  # (B, 1 + h*w, width)
        x = visual.ln_pre(x + pos)
        batch_first = getattr(visual.transformer, "batch_first", True)
        depth = self.prompt_depth
        for i, block in enumerate(visual.transformer.resblocks):
            if i < depth:  # insert (layer 0) or replace the prompts: [CLS, prompts, patches]
                x = torch.cat([x[:, :1], self._layer_prompts(i, B, x.dtype), x[:, -n_patch:]], dim=1)
            elif i == depth and depth > 1:  # deep VPT: prompts end with the last prompted layer
                x = torch.cat([x[:, :1], x[:, -n_patch:]], dim=1)
            x = self._block(i, block, x, batch_first)  # (B, 1 + n + h*w, width)
        x = visual.ln_post(self.prompt_norm(x)) @ visual.proj  # (B, 1 + n + h*w, D)
        global_embedding = F.normalize(x[:, 0], dim=-1)  # (B, D)
        patches = F.normalize(x[:, -n_patch:], dim=-1)  # (B, h*w, D)
        return patches.transpose(1, 2).reshape(B, -1, h, w), global_embedding
