"""The full zero-shot segmentor: frozen prompted CLIP encoders + a registered decoder.

Implements the model of LDVC (and, with decoder.type "zegclip", its ZegCLIP baseline) as
protocol.md describes it: image -> prompted CLIP image encoder (patch tokens, global embedding);
class names -> prompted CLIP text encoder (class embeddings, template-ensembled); decoder(patches,
global, text) -> mask logits upsampled to the input size. Images arrive normalised with ImageNet
mean/std (ZegCLIP's choice), done by the data pipeline, not here.

Assembly from a config (`build_segmentor`, `build_model`) lives in ldvc/model/build.py.

`class_ids` chooses which classes' embeddings reach the decoder: inductive training passes the
seen ids (unseen names never reach the model), evaluation passes all (None). Logits follow the
order of `class_ids`; `ldvc.model.losses.to_local_target` maps labels to that order.
"""

from __future__ import annotations

import torch
from torch import nn

from ldvc.model.image_encoder import PromptedImageEncoder
from ldvc.model.text_encoder import PromptedTextEncoder


class Segmentor(nn.Module):
    """images (B, 3, H, W) normalised, class_ids (C',) | None -> logits (B, C' or C_all, H, W)."""

    def __init__(self, image_encoder: PromptedImageEncoder, text_encoder: PromptedTextEncoder,
                 decoder: nn.Module) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.decoder = decoder

    @property
    def class_names(self) -> list[str]:
        return self.text_encoder.class_names

    def forward(self, images: torch.Tensor, class_ids: torch.Tensor | None = None) -> torch.Tensor:
        patches, global_embedding = self.image_encoder(images)  # (B, D, h, w), (B, D)
        text = self.text_encoder(class_ids)  # (C', D), L2-normalised
        return self.decoder(patches, global_embedding, text.to(patches.dtype), out_size=tuple(images.shape[-2:]))

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the learnable tensors (prompts, decoder): a checkpoint without the frozen CLIP."""
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {n: t for n, t in self.state_dict().items() if n in names}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of `trainable_state_dict`; the keys must match exactly."""
        expected = set(self.trainable_state_dict())
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise KeyError(
                f"checkpoint does not match this model (different decoder/prompt settings?): "
                f"missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        self.load_state_dict(state, strict=False)
