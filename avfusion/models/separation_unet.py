"""Visually conditioned U-Net that predicts a mel-grid separation mask (official `models/avsrcsep.py`, spec 4.3).

Audio tokens of five encoder layers, linspace(0, depth-1, 5)[::-1] truncated to int ([11, 8, 5, 2, 0]
for ViT-B: the deepest layer feeds the finest branch, spec item 22), each with its own LayerNorm and
reshaped to the audio grid; the visual condition is LN(last-layer image tokens) mean-pooled and
projected per scale, tiled spatially. Output: mask logits (B, 1, 128, 192) on the mel grid.
Parameter names follow the official decoder (`xv_norm`, `xa_norm`, `cond5..1`, `top`, `lat4..1`,
`up4..1`, `pred`). `width` (default embed_dim) sets the channel width; when it differs from the
encoder width, per-layer Linear maps (`xa_proj`) bring the audio tokens to it.

    unet = AVSrcSepUNet(embed_dim=768)
    logits = unet(enc_out.layers, audio_grid=(8, 12))   # (B, 1, 128, 192)
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class DoubleConv(nn.Module):
    """(Conv3x3 without bias -> BN -> ReLU) x 2."""

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int | None = None):
        super().__init__()
        mid_channels = mid_channels or out_channels
        self.double_conv = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(mid_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.double_conv(x)


class Up(nn.Module):
    """ConvTranspose(k = s = factor, C -> C // factor), concat an optional skip, then DoubleConv."""

    def __init__(self, in_channels: int, out_channels: int, in2_channels: int = 0, factor: int = 2):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, in_channels // factor, kernel_size=factor, stride=factor)
        self.conv = DoubleConv(in_channels // factor + in2_channels, out_channels)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor | None = None) -> torch.Tensor:
        x1 = self.up(x1)
        return self.conv(x1 if x2 is None else torch.cat([x1, x2], dim=1))


def init_decoder_weights(m: nn.Module) -> None:
    """Official decoder init: xavier Linear, kaiming (fan_out) convs, BN/LN (1, 0)."""
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.constant_(m.bias, 0)
    elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if m.bias is not None:
            nn.init.constant_(m.bias, 0)
    elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
        nn.init.constant_(m.weight, 1)
        nn.init.constant_(m.bias, 0)


def separation_layer_ids(depth: int) -> list[int]:
    """Encoder layers feeding the 5 branches, finest first: [11, 8, 5, 2, 0] for depth 12."""
    return [int(i) for i in np.linspace(0, depth - 1, 5, endpoint=True)[::-1].astype(int)]


class AVSrcSepUNet(nn.Module):
    """Mask decoder of spec 4.3 for any encoder depth, width and audio grid."""

    def __init__(self, embed_dim: int, width: int | None = None, out_size: tuple[int, int] = (128, 192)):
        super().__init__()
        width = width or embed_dim
        if width % 16:
            raise ValueError(f"AVSrcSepUNet width must be a multiple of 16, got {width}")
        self.width, self.out_size = width, tuple(out_size)
        self.xv_norm = nn.LayerNorm(embed_dim)
        self.xa_norm = nn.ModuleList([nn.LayerNorm(embed_dim) for _ in range(5)])
        self.xa_proj = (nn.ModuleList([nn.Linear(embed_dim, width) for _ in range(5)])
                        if width != embed_dim else None)
        self.cond5 = nn.Linear(embed_dim, width)
        self.cond4 = nn.Linear(embed_dim, width // 2)
        self.cond3 = nn.Linear(embed_dim, width // 4)
        self.cond2 = nn.Linear(embed_dim, width // 8)
        self.cond1 = nn.Linear(embed_dim, width // 16)
        self.top = DoubleConv(width * 2, width)
        self.lat4 = Up(width, width // 2, factor=2)
        self.lat3 = Up(width, width // 4, factor=4)
        self.lat2 = Up(width, width // 8, factor=8)
        self.lat1 = Up(width, width // 16, factor=16)
        self.up4 = Up(width, width // 2, in2_channels=width)
        self.up3 = Up(width // 2, width // 4, in2_channels=width // 2)
        self.up2 = Up(width // 4, width // 8, in2_channels=width // 4)
        self.up1 = Up(width // 8, width // 16, in2_channels=width // 8)
        self.pred = nn.Conv2d(width // 16, 1, kernel_size=3, padding=1)
        self.apply(init_decoder_weights)

    def forward(self, layers: list, audio_grid: tuple[int, int]) -> torch.Tensor:
        """layers: per encoder layer (img (B,Nv,D), aud (B,Na,D), fus) before the final norms."""
        gh, gw = audio_grid
        bs = layers[0][1].shape[0]
        xa = []
        for i, layer in enumerate(separation_layer_ids(len(layers))):
            tokens = self.xa_norm[i](layers[layer][1])  # (B, gh*gw, D)
            if self.xa_proj is not None:
                tokens = self.xa_proj[i](tokens)  # (B, gh*gw, W)
            xa.append(tokens.view(bs, gh, gw, -1).permute(0, 3, 1, 2))  # (B, W, gh, gw)
        xa1, xa2, xa3, xa4, xa5 = xa  # xa1 from the deepest layer -> finest branch
        xv = self.xv_norm(layers[-1][0]).mean(1)  # (B, D)

        def tiled(cond: nn.Linear, scale: int) -> torch.Tensor:
            return cond(xv)[:, :, None, None].expand(-1, -1, gh * scale, gw * scale)  # (B, C, gh*s, gw*s)

        x = self.top(torch.cat((xa5, tiled(self.cond5, 1)), dim=1))  # (B, W, gh, gw)
        x = self.up4(x, torch.cat((self.lat4(xa4), tiled(self.cond4, 2)), dim=1))  # (B, W/2, 2gh, 2gw)
        x = self.up3(x, torch.cat((self.lat3(xa3), tiled(self.cond3, 4)), dim=1))  # (B, W/4, 4gh, 4gw)
        x = self.up2(x, torch.cat((self.lat2(xa2), tiled(self.cond2, 8)), dim=1))  # (B, W/8, 8gh, 8gw)
        x = self.up1(x, torch.cat((self.lat1(xa1), tiled(self.cond1, 16)), dim=1))  # (B, W/16, 16gh, 16gw)
        logits = self.pred(x)  # (B, 1, 16gh, 16gw)
        if tuple(logits.shape[-2:]) != self.out_size:
            logits = F.interpolate(logits, size=self.out_size, mode="bilinear", align_corners=False)
        return logits  # (B, 1, 128, 192)
