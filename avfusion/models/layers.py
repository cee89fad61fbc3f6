"""Transformer building blocks with timm 0.9 parameter names (so MAE/AudioMAE/DeepAVFusion
checkpoints load strictly): Attention, Mlp, DropPath, Block, PatchEmbed, the MAE 2-D sin-cos
table and MAE's weight init. Spec: shared/spec/official-spec.md sections 2.1 and 3.1.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def pair(value) -> tuple[int, int]:
    """`16` -> (16, 16); `(128, 192)` -> (128, 192)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"expected an int or a pair of ints, got {value!r}")
        return int(value[0]), int(value[1])
    return int(value), int(value)


def sincos_pos_table_1d(dim: int, positions: np.ndarray) -> np.ndarray:
    """MAE's 1-D table [sin(p*w_k), cos(p*w_k)], w_k = 10000^(-k/(dim/2)): (M,) -> (M, dim).

    Computed in float32 numpy exactly as MAE's `util/pos_embed.py`, so the tables equal the
    `pos_embed` stored in MAE and DeepAVFusion checkpoints bit for bit."""
    if dim % 2:
        raise ValueError(f"sin-cos table: dim must be even, got {dim}")
    omega = np.arange(dim // 2, dtype=np.float32)
    omega /= dim / 2.0
    omega = 1.0 / 10000 ** omega                                       # (dim/2,)
    out = np.einsum("m,d->md", positions.reshape(-1).astype(np.float32), omega)  # (M, dim/2)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)          # (M, dim)


def sincos_pos_table_2d(dim: int, grid_size) -> torch.Tensor:
    """MAE's 2-D sin-cos table for a (rows, cols) grid, row-major, float32: (rows*cols, dim).

    MAE quirk kept: the meshgrid is built (w, h), so the first dim/2 channels encode the
    column index and the second dim/2 the row index.
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos table: dim must be divisible by 4, got {dim}")
    rows, cols = pair(grid_size)
    col_idx, row_idx = np.meshgrid(np.arange(cols, dtype=np.float32), np.arange(rows, dtype=np.float32))  # (rows, cols)
    emb_col = sincos_pos_table_1d(dim // 2, col_idx)               # (rows*cols, dim/2)
    emb_row = sincos_pos_table_1d(dim // 2, row_idx)               # (rows*cols, dim/2)
    return torch.from_numpy(np.concatenate([emb_col, emb_row], axis=1)).float()  # (rows*cols, dim)


def init_weights_mae(module: nn.Module) -> None:
    """MAE init for one module (use with `model.apply`): xavier_uniform Linear, zero bias, LN (1, 0)."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        if module.weight is not None:
            nn.init.ones_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class DropPath(nn.Module):
    """Stochastic depth per sample (timm `drop_path`): zero a residual branch, rescale the rest."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = x.new_empty(shape).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class Mlp(nn.Module):
    """fc1 -> GELU -> dropout -> fc2 -> dropout (timm names)."""

    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Attention(nn.Module):
    """Multi-head self-attention (timm names `qkv`, `proj`); SDPA with an explicit scale."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide dim={dim}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, num_prefix: int = 0) -> torch.Tensor:
        """x (B, N, C) -> (B, N - num_prefix, C): the first `num_prefix` tokens are keys/values only
        (no query, no output row), for callers that would discard those rows."""
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, H, N, hd)
        q, k, v = qkv.unbind(0)
        q = q[:, :, num_prefix:]                                      # (B, H, N-P, hd)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0,
                                           scale=self.scale)           # (B, H, N-P, hd)
        x = x.transpose(1, 2).reshape(B, N - num_prefix, C)           # (B, N-P, C)
        return self.proj_drop(self.proj(x))


class Block(nn.Module):
    """Pre-LN transformer block (timm 0.9 `Block` names: norm1, attn, norm2, mlp)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0, norm_eps: float = 1e-5):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor, num_prefix: int = 0) -> torch.Tensor:
        """x (B, N, C) -> (B, N - num_prefix, C). With num_prefix > 0 the first tokens only serve as
        keys/values: equal to block(x)[:, num_prefix:] without computing the discarded rows."""
        x = x[:, num_prefix:] + self.drop_path(self.attn(self.norm1(x), num_prefix))  # (B, N-P, C)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x


class PatchEmbed(nn.Module):
    """(B, C, H, W) -> (B, (H/p)*(W/p), D), patches in row-major order (timm `patch_embed.proj`)."""

    def __init__(self, input_size, patch_size, in_chans: int, embed_dim: int):
        super().__init__()
        self.input_size = pair(input_size)
        self.patch_size = pair(patch_size)
        for size, patch in zip(self.input_size, self.patch_size):
            if size % patch:
                raise ValueError(f"input_size {self.input_size} is not divisible by patch_size {self.patch_size}")
        self.grid_size = (self.input_size[0] // self.patch_size[0], self.input_size[1] // self.patch_size[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.in_chans = in_chans
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)                              # (B, D, gh, gw)
        return x.flatten(2).transpose(1, 2)           # (B, gh*gw, D)


def check_input(name: str, x: torch.Tensor, chans: int, size) -> None:
    """Raise ValueError naming `name` unless x is (B, chans, H, W) with (H, W) == size."""
    size = pair(size)
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != chans or tuple(x.shape[2:]) != size:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected a tensor of shape (B, {chans}, {size[0]}, {size[1]}), got {got}")


def xavier_init_patch_embed(patch_embed: PatchEmbed) -> None:
    """MAE: initialise the patch conv like a Linear on its flattened weight (bias keeps the conv default)."""
    w = patch_embed.proj.weight.data
    nn.init.xavier_uniform_(w.view(w.shape[0], -1))  # (D, C*p*p) view of (D, C, p, p)
