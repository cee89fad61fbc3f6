"""DeepAVFusion encoder (official `models/deepavfusion.py`, spec 2.2): two ViT branches whose
fusion layers also run over [fusion tokens ; modality tokens], plus fusion blocks that update the
fusion tokens from the previous layer's image and audio tokens.

    enc = DeepAVFusionEncoder(fusion_arch="factorized", fusion_layers="all")
    out = enc(image (B,3,224,224), audio (B,1,128,192))   # EncoderOutput(image, audio, fusion, layers)
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .fusion import FUSION_BLOCKS
from .layers import check_input, init_weights_mae
from .vit import ViT, gather_tokens, load_unimodal_checkpoint, read_state_dict

FUSION_ARCHS = tuple(FUSION_BLOCKS)


class EncoderOutput(NamedTuple):
    """Final-normed tokens; `layers` = per layer (img, aud, fus) before the final norms, or None."""
    image: torch.Tensor    # (B, Nv, D)
    audio: torch.Tensor    # (B, Na, D)
    fusion: torch.Tensor   # (B, F, D)
    layers: list | None = None


def parse_fusion_layers(layers, depth: int) -> list[int]:
    """'all' | 'none' | int k | 'a-b-c' (0-based) | list of ints -> sorted layer indices."""
    accepted = "'all', 'none', an int k, a string 'a-b-c' or a list of ints (0-based, < depth)"
    if layers == "all":
        return list(range(depth))
    if layers == "none":
        return []
    try:
        if isinstance(layers, bool):
            raise TypeError
        if isinstance(layers, int):
            ids = [layers]
        elif isinstance(layers, str):
            ids = [int(part) for part in layers.split("-")]
        elif isinstance(layers, (list, tuple)):
            ids = [int(part) for part in layers]
        else:
            raise TypeError
    except (TypeError, ValueError):
        raise ValueError(f"fusion_layers: got {layers!r}; accepted: {accepted}") from None
    bad = [i for i in ids if not 0 <= i < depth]
    if bad:
        raise ValueError(f"fusion_layers: layer(s) {bad} out of range for depth {depth}; accepted: {accepted}")
    return sorted(set(ids))


class TwoBranchEncoder(nn.Module):
    """What every audio-visual encoder here shares: an image and an audio ViT branch (`self.image`,
    `self.audio`) whose patch tokens go through `forward_tokens` (the subclass's layers) to an EncoderOutput."""

    def embed(self, image: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch tokens + positions: image (B,3,H,W) -> (B, Nv, D); audio (B,1,F,T) -> (B, Na, D)."""
        check_input("image", image, 3, self.image.input_size)
        check_input("audio", audio, 1, self.audio.input_size)
        if image.shape[0] != audio.shape[0]:
            raise ValueError(f"image and audio: batch sizes differ ({image.shape[0]} vs {audio.shape[0]})")
        return self.image.embed(image), self.audio.embed(audio)

    def forward_tokens(self, x_img: torch.Tensor, x_aud: torch.Tensor, return_embs: bool = False) -> EncoderOutput:
        raise NotImplementedError

    def forward(self, image: torch.Tensor, audio: torch.Tensor, return_embs: bool = False,
                image_ids_keep: torch.Tensor | None = None,
                audio_ids_keep: torch.Tensor | None = None) -> EncoderOutput:
        """image (B,3,H,W), audio (B,1,F,T) -> EncoderOutput; `*_ids_keep` (B, K) keep only those patches."""
        x_img, x_aud = self.embed(image, audio)
        if image_ids_keep is not None:
            x_img = gather_tokens(x_img, image_ids_keep)  # (B, n_v_visible, D)
        if audio_ids_keep is not None:
            x_aud = gather_tokens(x_aud, audio_ids_keep)  # (B, n_a_visible, D)
        return self.forward_tokens(x_img, x_aud, return_embs)


class DeepAVFusionEncoder(TwoBranchEncoder):
    """Image ViT + audio ViT + fusion tokens/blocks; see the module docstring."""

    def __init__(self, embed_dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 image_size=(224, 224), image_patch=16, audio_size=(128, 192), audio_patch=16,
                 fusion_arch: str = "factorized", fusion_layers="all", fusion_tokens=(16, 8, 8),
                 fusion_attn_ratio: float = 0.25, fusion_mlp_ratio: float = 1.0, fusion_num_heads: int = 12,
                 dense_impl: str = "fast", drop_path: float = 0.0, attn_drop: float = 0.0, drop: float = 0.0,
                 image_pretrained: str = "", audio_pretrained: str = ""):
        super().__init__()
        if fusion_arch not in FUSION_BLOCKS:
            raise ValueError(f"fusion_arch: got {fusion_arch!r}, expected one of {list(FUSION_ARCHS)}")
        fusion_tokens = tuple(int(n) for n in fusion_tokens)
        if len(fusion_tokens) != 3 or min(fusion_tokens) < 0 or sum(fusion_tokens) == 0:
            raise ValueError(f"fusion_tokens: expected (n_fusion, n_aggr_image, n_aggr_audio) >= 0 with a "
                             f"positive sum, got {fusion_tokens}")
        if fusion_arch in ("factorized", "factorized_mmi") and min(fusion_tokens) == 0:
            raise ValueError(f"fusion_tokens: the factorized block needs all three counts > 0, got {fusion_tokens}")
        self.embed_dim = embed_dim
        self.depth = depth
        self.fusion_arch = fusion_arch
        branch = dict(embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
                      norm_eps=1e-6, drop_path=drop_path, attn_drop=attn_drop, drop=drop)
        self.image = ViT(input_size=image_size, patch_size=image_patch, in_chans=3, **branch)
        self.audio = ViT(input_size=audio_size, patch_size=audio_patch, in_chans=1, **branch)
        self.image_grid = self.image.grid_size
        self.audio_grid = self.audio.grid_size

        self.fusion_tokens = nn.Parameter(torch.zeros(1, sum(fusion_tokens), embed_dim))
        self.fusion_layers = parse_fusion_layers(fusion_layers, depth)
        block_cls = FUSION_BLOCKS[fusion_arch]
        # None at non-fusion layers keeps the official key indices (fusion_blocks.{layer})
        self.fusion_blocks = nn.ModuleList([
            block_cls(embed_dim, fusion_num_heads, attn_ratio=fusion_attn_ratio, mlp_ratio=fusion_mlp_ratio,
                      qkv_bias=True, drop=drop, attn_drop=attn_drop, drop_path=drop_path,
                      fusion_tokens=fusion_tokens, dense_impl=dense_impl)
            if i in self.fusion_layers else None
            for i in range(depth)])
        self.fusion_norm = nn.LayerNorm(embed_dim)

        nn.init.normal_(self.fusion_tokens, std=0.02)
        self.fusion_blocks.apply(init_weights_mae)
        for name, path in (("image", image_pretrained), ("audio", audio_pretrained)):
            if path:
                load_branch_checkpoint(getattr(self, name), path, name)

    def forward_tokens(self, x_img: torch.Tensor, x_aud: torch.Tensor, return_embs: bool = False) -> EncoderOutput:
        """Run the layer loop on embedded (possibly masked) tokens (B, n_v, D), (B, n_a, D)."""
        B = x_img.shape[0]
        x_fus = self.fusion_tokens.expand(B, -1, -1)                     # (B, F, D)
        n_fus = x_fus.shape[1]
        layers = []
        for blk_img, blk_aud, blk_fus in zip(self.image.blocks, self.audio.blocks, self.fusion_blocks):
            if blk_fus is None:
                x_img, x_aud = blk_img(x_img), blk_aud(x_aud)
            else:
                # = blk(cat)[:, n_fus:]; the fusion positions' queries, proj and MLP are never computed
                new_img = blk_img(torch.cat([x_fus, x_img], dim=1), num_prefix=n_fus)   # (B, n_v, D)
                new_aud = blk_aud(torch.cat([x_fus, x_aud], dim=1), num_prefix=n_fus)   # (B, n_a, D)
                x_fus = blk_fus(x_fus, x_img, x_aud)                     # uses the previous layer's tokens
                x_img, x_aud = new_img, new_aud
            if return_embs:
                layers.append((x_img, x_aud, x_fus))
        return EncoderOutput(self.image.norm(x_img), self.audio.norm(x_aud), self.fusion_norm(x_fus),
                             layers if return_embs else None)


def load_branch_checkpoint(vit: ViT, path, modality: str) -> None:
    """Unimodal init of one branch: MAE/AudioMAE files (no prefix) or our UnimodalMAE runs
    (prefix 'encoder.<modality>.')."""
    state = read_state_dict(path, f"{modality}_pretrained checkpoint")
    prefix = f"encoder.{modality}."
    if not any(k.startswith(prefix) for k in state):
        prefix = ""
    try:
        load_unimodal_checkpoint(vit, state, prefix=prefix)
    except ValueError as err:
        raise ValueError(f"{modality}_pretrained={path}: {err}") from None
