"""Audio-conditioned segmentation decoder (official `models/avsegm.py::AVSegmSimple`, spec 4.5).

Image tokens of four encoder layers, linspace(0, depth-1, 4) truncated ([0, 3, 7, 11] for ViT-B;
the shallowest goes to the coarsest "top", spec item 22), each LayerNormed and reshaped to the image
grid; the last layer's audio tokens give a global audio vector per scale (Linear -> LN -> mean),
tiled spatially. Three up-convolution blocks, then Conv3x3 -> bilinear x2 -> Conv3x3 -> logits
(B, C, S, S) with C = 1 (binary, BCE) or the number of classes (CE). Parameter names follow the
official decoder (`normv`, `proja`, `norma`, `top`, `lat`, `up`, `predictor`). `width` (default
embed_dim) and `min_width` (official 128) set the channels: layer dims max(min_width, width / s).

    dec = AVSegmDecoder(embed_dim=768, num_classes=1)
    logits = dec(enc_out.layers, image_grid=(14, 14), out_size=(224, 224))   # (B, 1, 224, 224)
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .separation_unet import DoubleConv, Up, init_decoder_weights

SCALES = (1, 2, 4, 8)


def segmentation_layer_ids(depth: int) -> list[int]:
    """Encoder layers feeding the 4 scales, coarsest first: [0, 3, 7, 11] for depth 12."""
    return [int(i) for i in np.linspace(0, depth - 1, len(SCALES), endpoint=True).astype(int)]


class Interpolate(nn.Module):
    def __init__(self, scale_factor: float, mode: str = "bilinear"):
        super().__init__()
        self.scale_factor, self.mode = scale_factor, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.scale_factor, mode=self.mode, align_corners=False)


class AVSegmDecoder(nn.Module):
    """AVSegmSimple's decoder for any encoder depth, width and image grid."""

    def __init__(self, embed_dim: int, num_classes: int = 1, width: int | None = None, min_width: int = 128):
        super().__init__()
        width = width or embed_dim
        if width % 8:
            raise ValueError(f"AVSegmDecoder width must be a multiple of 8, got {width}")
        self.num_classes = num_classes
        dims = [max(min_width, width // s) for s in SCALES]
        self.layer_dims = dims
        self.normv = nn.ModuleList([nn.LayerNorm(embed_dim) for _ in SCALES])
        self.projv = (nn.ModuleList([nn.Linear(embed_dim, width) for _ in SCALES])
                      if width != embed_dim else None)
        self.proja = nn.ModuleList([nn.Linear(embed_dim, dims[d]) for d in range(len(SCALES))])
        self.norma = nn.ModuleList([nn.LayerNorm(dims[d]) for d in range(len(SCALES))])
        self.top = DoubleConv(width + dims[0], width)
        self.lat = nn.ModuleList([Up(width, dims[d], factor=SCALES[d]) for d in range(1, len(SCALES))])
        up_in = [width] + dims[1:-1]
        self.up = nn.ModuleList([Up(up_in[d], dims[d + 1], in2_channels=dims[d + 1] * 2)
                                 for d in range(len(SCALES) - 1)])
        self.predictor = nn.Sequential(
            nn.Conv2d(dims[-1], min_width, kernel_size=3, padding=1),
            Interpolate(scale_factor=2, mode="bilinear"),
            nn.Conv2d(min_width, num_classes, kernel_size=3, padding=1),
        )
        self.apply(init_decoder_weights)

    def forward(self, layers: list, image_grid: tuple[int, int], out_size: tuple[int, int]) -> torch.Tensor:
        """layers: per encoder layer (img (B,Nv,D), aud (B,Na,D), fus) before the final norms."""
        gh, gw = image_grid
        bs = layers[0][0].shape[0]
        xv_list = []
        for d, layer in enumerate(segmentation_layer_ids(len(layers))):
            tokens = self.normv[d](layers[layer][0])  # (B, gh*gw, D)
            if self.projv is not None:
                tokens = self.projv[d](tokens)  # (B, gh*gw, W)
            xv_list.append(tokens.view(bs, gh, gw, -1).permute(0, 3, 1, 2))  # (B, W, gh, gw)
        aud = layers[-1][1]  # (B, Na, D)
        xa_list = [norm(proj(aud)).mean(dim=1) for norm, proj in zip(self.norma, self.proja)]  # (B, dim_d)

        xa_top = xa_list[0][:, :, None, None].expand(-1, -1, gh, gw)  # (B, dim0, gh, gw)
        x = self.top(torch.cat((xv_list[0], xa_top), dim=1))  # (B, W, gh, gw)
        for lat, up, xv, xa in zip(self.lat, self.up, xv_list[1:], xa_list[1:]):
            xv = lat(xv)  # (B, dim_d, gh*s, gw*s)
            xa = xa[:, :, None, None].expand(-1, -1, *xv.shape[2:])  # (B, dim_d, gh*s, gw*s)
            x = up(x, torch.cat((xv, xa), dim=1))  # (B, dim_d, gh*s, gw*s)
        logits = self.predictor(x)  # (B, C, 16gh, 16gw)
        if tuple(logits.shape[-2:]) != tuple(out_size):
            logits = F.interpolate(logits, size=tuple(out_size), mode="bilinear", align_corners=False)
        return logits  # (B, C, S, S)
