"""MAE-style ViT branch (no CLS token, frozen 2-D sin-cos positions), patchify/unpatchify and
the import of MAE / AudioMAE checkpoints into a branch. Spec: official-spec.md 2.1, 3.1.

    vit = ViT(input_size=(128, 192), patch_size=16, in_chans=1)   # audio: 8 x 12 tokens
    load_unimodal_checkpoint(vit, "mae_pretrain_vit_base.pth")
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .layers import Block, PatchEmbed, init_weights_mae, pair, sincos_pos_table_2d, xavier_init_patch_embed


class ViT(nn.Module):
    """Patch embedding + fixed sin-cos positions + `depth` pre-LN blocks + final `norm`."""

    def __init__(self, input_size=224, patch_size=16, in_chans: int = 3, embed_dim: int = 768,
                 depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0, norm_eps: float = 1e-6,
                 drop_path: float = 0.0, attn_drop: float = 0.0, drop: float = 0.0):
        super().__init__()
        self.embed_dim = embed_dim
        self.depth = depth
        self.patch_embed = PatchEmbed(input_size, patch_size, in_chans, embed_dim)
        self.grid_size = self.patch_embed.grid_size
        self.patch_size = self.patch_embed.patch_size
        self.input_size = self.patch_embed.input_size
        self.in_chans = in_chans
        # frozen, but a Parameter so that it sits in the state_dict as in the released checkpoints
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches, embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, drop=drop, attn_drop=attn_drop,
                  drop_path=drop_path, norm_eps=norm_eps)
            for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        self.pos_embed.data.copy_(self.sincos_table())
        xavier_init_patch_embed(self.patch_embed)
        self.apply(init_weights_mae)

    def sincos_table(self) -> torch.Tensor:
        return sincos_pos_table_2d(self.embed_dim, self.grid_size).unsqueeze(0)  # (1, gh*gw, D)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> patch tokens plus positions (B, gh*gw, D)."""
        return self.patch_embed(x) + self.pos_embed

    def forward(self, x: torch.Tensor, ids_keep: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W) -> normalised tokens (B, N, D); `ids_keep` (B, N_vis) keeps only those patches."""
        x = self.embed(x)                                             # (B, gh*gw, D)
        if ids_keep is not None:
            x = gather_tokens(x, ids_keep)                            # (B, N_vis, D)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


def gather_tokens(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """x (B, N, D), ids (B, K) -> x[b, ids[b]] (B, K, D)."""
    return torch.gather(x, 1, ids.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def patchify(x: torch.Tensor, patch_size) -> torch.Tensor:
    """(B, C, H, W) -> (B, gh*gw, ph*pw*C); row-major patches (audio: rows = frequency)."""
    B, C, H, W = x.shape
    ph, pw = pair(patch_size)
    gh, gw = H // ph, W // pw
    x = x.reshape(B, C, gh, ph, gw, pw)
    x = torch.einsum("nchpwq->nhwpqc", x)                             # (B, gh, gw, ph, pw, C)
    return x.reshape(B, gh * gw, ph * pw * C)


def unpatchify(x: torch.Tensor, patch_size, grid_size, in_chans: int) -> torch.Tensor:
    """Inverse of `patchify`: (B, gh*gw, ph*pw*C) -> (B, C, gh*ph, gw*pw)."""
    B = x.shape[0]
    ph, pw = pair(patch_size)
    gh, gw = pair(grid_size)
    x = x.reshape(B, gh, gw, ph, pw, in_chans)
    x = torch.einsum("nhwpqc->nchpwq", x)                             # (B, C, gh, ph, gw, pw)
    return x.reshape(B, in_chans, gh * ph, gw * pw)


def read_state_dict(path_or_dict, what: str = "checkpoint") -> dict:
    """A checkpoint file or dict -> its weights: `state_dict` if present, else `model`, else itself."""
    if isinstance(path_or_dict, (str, Path)):
        path = Path(path_or_dict)
        if not path.is_file():
            raise FileNotFoundError(f"{what} not found: {path}")
        # our own checkpoints also hold rng/config entries, so full unpickling is needed (local files only)
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        source = str(path)
    else:
        ckpt, source = path_or_dict, "<dict>"
    if not isinstance(ckpt, dict):
        raise ValueError(f"{what} {source}: expected a dict, got {type(ckpt).__name__}")
    if "state_dict" in ckpt:
        ckpt = ckpt["state_dict"]
    elif "model" in ckpt:
        ckpt = ckpt["model"]
    if not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise ValueError(f"{what} {source}: no state dict found (keys {sorted(ckpt)[:8]})")
    return ckpt


def load_unimodal_checkpoint(vit: ViT, path_or_dict, prefix: str = "") -> None:
    """Load MAE/AudioMAE-style weights into a branch (official `ViT.load_checkpoint`).

    Takes `state_dict` else `model`; keeps keys under `prefix` (stripped); drops `decoder*`,
    `mask_token*` and `cls_token`; replaces `pos_embed` with the branch's own sin-cos table;
    loads strictly. Our UnimodalMAE checkpoints use prefix 'encoder.image.' / 'encoder.audio.'.
    """
    state = read_state_dict(path_or_dict, "unimodal checkpoint")
    state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    state = {k: v for k, v in state.items()
             if not k.startswith(("decoder", "mask_token")) and k != "cls_token"}
    if not state:
        raise ValueError(f"unimodal checkpoint: no keys under prefix {prefix!r}")
    state["pos_embed"] = vit.sincos_table().to(vit.pos_embed.dtype)
    own = vit.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f"unimodal checkpoint does not match the ViT (prefix {prefix!r}): "
                         f"missing keys {missing[:10]}{' ...' if len(missing) > 10 else ''} ({len(missing)}), "
                         f"unexpected keys {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''} "
                         f"({len(unexpected)})")
    bad = [f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items() if v.shape != own[k].shape]
    if bad:
        raise ValueError(f"unimodal checkpoint shape mismatch: {bad[:10]}")
    vit.load_state_dict(state, strict=True)
