"""Sound source localization head (paper appendix A.2): cosine similarity of the global audio
representation (mean-pooled audio tokens) with every visual token, as a map on the image grid,
upsampled bilinearly (align_corners=True, as EZ-VSL) to the image size. A learnable scale and bias
turn the similarity into per-pixel logits for BCE against the consensus map (0 / 0.5 / 1).

    head = CosineLocalizationHead()
    logits = head(enc_out.image, enc_out.audio, image_grid=(14, 14), out_size=(224, 224))  # (B, S, S)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CosineLocalizationHead(nn.Module):
    """`embed_dim` > 0 adds Linear projections of the visual and audio tokens before the cosine
    (as EZ-VSL's projection heads); 0 compares the encoder's tokens directly."""

    def __init__(self, embed_dim: int = 0, init_scale: float = 10.0, init_bias: float = 0.0):
        super().__init__()
        self.image_proj = nn.Linear(embed_dim, embed_dim) if embed_dim else nn.Identity()
        self.audio_proj = nn.Linear(embed_dim, embed_dim) if embed_dim else nn.Identity()
        self.logit_scale = nn.Parameter(torch.tensor(float(init_scale)))
        self.logit_bias = nn.Parameter(torch.tensor(float(init_bias)))

    @staticmethod
    def similarity(image_tokens: torch.Tensor, audio_tokens: torch.Tensor,
                   image_grid: tuple[int, int]) -> torch.Tensor:
        """image (B,Nv,D), audio (B,Na,D) -> cosine map (B, gh, gw) in [-1, 1]."""
        gh, gw = image_grid
        audio_global = F.normalize(audio_tokens.mean(1), dim=-1)  # (B, D)
        visual = F.normalize(image_tokens, dim=-1)  # (B, Nv, D)
        cos = torch.einsum("bnd,bd->bn", visual, audio_global)  # (B, Nv)
        return cos.view(-1, gh, gw)  # (B, gh, gw)

    def forward(self, image_tokens: torch.Tensor, audio_tokens: torch.Tensor,
                image_grid: tuple[int, int], out_size: tuple[int, int]) -> torch.Tensor:
        image_tokens, audio_tokens = self.image_proj(image_tokens), self.audio_proj(audio_tokens)
        cos = self.similarity(image_tokens, audio_tokens, image_grid)[:, None]  # (B, 1, gh, gw)
        cos = F.interpolate(cos, size=tuple(out_size), mode="bilinear", align_corners=True)  # (B, 1, S, S)
        return (self.logit_scale * cos + self.logit_bias)[:, 0]  # (B, S, S) logits


def localization_loss(logits: torch.Tensor, gt_map: torch.Tensor) -> torch.Tensor:
    """Per-pixel BCE with logits against the soft consensus map (B, S, S) in {0, 0.5, 1}."""
    return F.binary_cross_entropy_with_logits(logits, gt_map.float())
