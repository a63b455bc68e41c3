"""Relationship descriptor (ZegCLIP), LDVC's "text adapter" (protocol.md, "What LDVC claims").

For each class c and image: q_c = Linear_{2D -> width}([t_c * g ; t_c]), with t_c the class text
embedding and g the image's global (CLS) embedding, both in CLIP's joint space of size D.

Choices: as in ZegCLIP's code, t_c and g are L2-normalised before the product (CLIP's embeddings
live on the unit sphere; the product then carries the image-conditioned cosine terms). The paper's
Linear_{2D->D} and the decoder's input projection D -> width are merged into one Linear 2D -> width
(identical expressive power, one matrix fewer; ZegCLIP does the same).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RelationshipDescriptor(nn.Module):
    """(text embeddings (C, D), global embedding (B, D)) -> class queries (B, C, width)."""

    def __init__(self, embed_dim: int, width: int) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.proj = nn.Linear(2 * embed_dim, width)

    def forward(self, text: torch.Tensor, global_embedding: torch.Tensor) -> torch.Tensor:
        if text.dim() != 2 or global_embedding.dim() != 2 or text.shape[1] != global_embedding.shape[1]:
            raise ValueError(
                f"relationship descriptor: expected text (C, D) and global (B, D) with the same D, got "
                f"{tuple(text.shape)} and {tuple(global_embedding.shape)}"
            )
        t = F.normalize(text, dim=-1).unsqueeze(0)  # (1, C, D)
        g = F.normalize(global_embedding, dim=-1).unsqueeze(1)  # (B, 1, D)
        t = t.to(g.dtype).expand(g.shape[0], -1, -1)  # (B, C, D)
        return self.proj(torch.cat([t * g, t], dim=-1))  # (B, C, width)
