"""AV-MAE pretraining model (official `models/avmae.py`, spec 3.1) and a unimodal MAE that shares
its masking, decoder and loss code (the MAE / AudioMAE rows and the tiny scale's unimodal init).

    model = AVMAE(DeepAVFusionEncoder(...))
    out = model(image, audio)      # dict(loss, loss_image, loss_audio, pred_*, mask_*)

State-dict keys follow the released checkpoints: `encoder.*`, `{image,audio}_decoder_embed`,
`_decoder_blocks.{i}`, `_decoder_norm`, `_decoder_pred`, `_decoder_mask_token`, `_decoder_pos_embed`.
"""
from __future__ import annotations

import torch
from torch import nn

from .encoder import EncoderOutput
from .layers import Block, check_input, init_weights_mae, sincos_pos_table_2d
from .vit import ViT, gather_tokens, patchify


def random_masking(batch: int, length: int, mask_ratio: float, device,
                   seeds: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MAE per-sample uniform masking: keep int(length*(1-mask_ratio)) patches.

    `seeds` (B,) int64: each sample's noise from its own generator (engine.SampleSeeded), so a sample's
    mask does not depend on the batch or the rank it is in; None = torch's global RNG (MAE).
    Returns ids_keep (B, K), mask (B, L) with 1 = masked (in the original order), ids_restore (B, L)."""
    if seeds is None:
        noise = torch.rand(batch, length, device=device)             # (B, L)
    else:
        noise = torch.stack([torch.rand(length, generator=torch.Generator().manual_seed(int(s)))
                             for s in seeds.tolist()]).to(device)    # (B, L)
    ids_shuffle = torch.argsort(noise, dim=1)                        # small noise = keep
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    len_keep = int(length * (1 - mask_ratio))
    mask = torch.ones(batch, length, device=device)
    mask[:, :len_keep] = 0
    return ids_shuffle[:, :len_keep], torch.gather(mask, 1, ids_restore), ids_restore


def masked_patch_loss(target: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor, norm_pix_loss: bool) -> torch.Tensor:
    """MSE over patch values, averaged over masked patches. target/pred (B, L, P), mask (B, L)."""
    if norm_pix_loss:   # per-patch standardisation, unbiased variance (torch.var default), as MAE
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    loss = ((pred - target) ** 2).mean(dim=-1)                       # (B, L)
    return (loss * mask).sum() / mask.sum()


class _MaskedDecoders(nn.Module):
    """Per-modality MAE decoders registered under flat official names `{modality}_decoder_*`."""

    def add_decoder(self, modality: str, encoder_dim: int, grid_size, patch_values: int,
                    dim: int, depth: int, num_heads: int, mlp_ratio: float) -> None:
        num_patches = grid_size[0] * grid_size[1]
        setattr(self, f"{modality}_decoder_embed", nn.Linear(encoder_dim, dim))
        setattr(self, f"{modality}_decoder_mask_token", nn.Parameter(torch.zeros(1, 1, dim)))
        # the official "fixed" sin-cos table is a trainable Parameter (spec 3.1 [BUG], kept)
        setattr(self, f"{modality}_decoder_pos_embed", nn.Parameter(torch.zeros(1, num_patches, dim)))
        setattr(self, f"{modality}_decoder_blocks", nn.ModuleList([
            Block(dim, num_heads, mlp_ratio, qkv_bias=True, norm_eps=1e-5) for _ in range(depth)]))
        setattr(self, f"{modality}_decoder_norm", nn.LayerNorm(dim))
        setattr(self, f"{modality}_decoder_pred", nn.Linear(dim, patch_values))
        getattr(self, f"{modality}_decoder_pos_embed").data.copy_(sincos_pos_table_2d(dim, grid_size).unsqueeze(0))
        nn.init.normal_(getattr(self, f"{modality}_decoder_mask_token"), std=0.02)
        for name in ("embed", "blocks", "norm", "pred"):
            getattr(self, f"{modality}_decoder_{name}").apply(init_weights_mae)

    def decode(self, modality: str, x_vis: torch.Tensor, x_fus: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """x_vis (B, K, D) visible tokens, x_fus (B, F, D) extra tokens (F may be 0), ids_restore (B, L)
        -> predictions (B, L, patch_values) for every patch."""
        embed = getattr(self, f"{modality}_decoder_embed")
        mask_token = getattr(self, f"{modality}_decoder_mask_token")
        pos_embed = getattr(self, f"{modality}_decoder_pos_embed")
        B, K = x_vis.shape[:2]
        L, n_fus = ids_restore.shape[1], x_fus.shape[1]
        x, x_fus = embed(x_vis), embed(x_fus)                         # (B, K, d), (B, F, d)
        x = torch.cat([x, mask_token.expand(B, L - K, -1)], dim=1)    # (B, L, d) in shuffled order
        x = gather_tokens(x, ids_restore) + pos_embed                 # (B, L, d) unshuffled, + positions
        x = torch.cat([x_fus, x], dim=1)                              # (B, F+L, d); fusion tokens get no position
        for blk in getattr(self, f"{modality}_decoder_blocks"):
            x = blk(x)
        x = x[:, n_fus:]                                              # (B, L, d)
        return getattr(self, f"{modality}_decoder_pred")(getattr(self, f"{modality}_decoder_norm")(x))


class AVMAE(_MaskedDecoders):
    """Masks both modalities independently, encodes the visible tokens with fusion, decodes each
    modality from [embedded fusion tokens ; visible + mask tokens + positions]; L = L_img + L_aud."""

    def __init__(self, encoder: nn.Module, decoder_dim: int = 512, decoder_depth: int = 8,
                 decoder_num_heads: int = 16, decoder_mlp_ratio: float = 4.0,
                 image_mask_ratio: float = 0.75, audio_mask_ratio: float = 0.8,
                 image_norm_loss: bool = True, audio_norm_loss: bool = True):
        super().__init__()
        self.encoder = encoder
        self.image_mask_ratio, self.audio_mask_ratio = image_mask_ratio, audio_mask_ratio
        self.image_norm_loss, self.audio_norm_loss = image_norm_loss, audio_norm_loss
        dec = dict(dim=decoder_dim, depth=decoder_depth, num_heads=decoder_num_heads, mlp_ratio=decoder_mlp_ratio)
        for modality in ("audio", "image"):   # official state_dict order: audio decoder first
            vit = getattr(encoder, modality)
            values = vit.patch_size[0] * vit.patch_size[1] * vit.in_chans
            self.add_decoder(modality, encoder.embed_dim, vit.grid_size, values, **dec)

    def forward(self, image: torch.Tensor, audio: torch.Tensor, sample_seed: torch.Tensor | None = None) -> dict:
        """image (B,3,H,W), audio (B,1,128,192) -> dict(loss, loss_image, loss_audio,
        pred_image (B, Lv, 768), pred_audio (B, La, 256), mask_image (B, Lv), mask_audio (B, La)).
        sample_seed (B,): per-sample mask noise (see random_masking); None = the global RNG."""
        B = image.shape[0]
        x_img, x_aud = self.encoder.embed(image, audio)               # (B, Lv, D), (B, La, D)
        seeds_img = seeds_aud = None
        if sample_seed is not None:
            seeds_img, seeds_aud = 2 * sample_seed, 2 * sample_seed + 1
        keep_img, mask_img, restore_img = random_masking(B, x_img.shape[1], self.image_mask_ratio, image.device,
                                                         seeds_img)
        keep_aud, mask_aud, restore_aud = random_masking(B, x_aud.shape[1], self.audio_mask_ratio, audio.device,
                                                         seeds_aud)
        out = self.encoder.forward_tokens(gather_tokens(x_img, keep_img), gather_tokens(x_aud, keep_aud))

        pred_img = self.decode("image", out.image, out.fusion, restore_img)
        pred_aud = self.decode("audio", out.audio, out.fusion, restore_aud)
        loss_img = masked_patch_loss(patchify(image, self.encoder.image.patch_size), pred_img, mask_img,
                                     self.image_norm_loss)
        loss_aud = masked_patch_loss(patchify(audio, self.encoder.audio.patch_size), pred_aud, mask_aud,
                                     self.audio_norm_loss)
        return dict(loss=loss_img + loss_aud, loss_image=loss_img, loss_audio=loss_aud,
                    pred_image=pred_img, pred_audio=pred_aud, mask_image=mask_img, mask_audio=mask_aud)


class UnimodalEncoder(nn.Module):
    """One ViT branch behind the encoder contract. It takes (image, audio) and ignores the other
    modality (which may be None); that modality's tokens and the fusion tokens come back as
    empty (B, 0, D) tensors, and its grid is (0, 0). Downstream heads skip empty token sets."""

    def __init__(self, modality: str, vit: ViT):
        super().__init__()
        if modality not in ("image", "audio"):
            raise ValueError(f"modality: got {modality!r}, expected 'image' or 'audio'")
        self.modality = modality
        setattr(self, modality, vit)   # keys `image.*` / `audio.*`, as a DeepAVFusion branch
        self.embed_dim, self.depth = vit.embed_dim, vit.depth
        self.image_grid = vit.grid_size if modality == "image" else (0, 0)
        self.audio_grid = vit.grid_size if modality == "audio" else (0, 0)

    @property
    def vit(self) -> ViT:
        return getattr(self, self.modality)

    def embed(self, image, audio) -> torch.Tensor:
        x = image if self.modality == "image" else audio
        check_input(self.modality, x, self.vit.in_chans, self.vit.input_size)
        return self.vit.embed(x)                                      # (B, N, D)

    def forward_tokens(self, x: torch.Tensor, return_embs: bool = False) -> EncoderOutput:
        empty = x.new_zeros(x.shape[0], 0, x.shape[2])                # (B, 0, D)
        layers = []
        for blk in self.vit.blocks:
            x = blk(x)
            if return_embs:
                layers.append((x, empty, empty) if self.modality == "image" else (empty, x, empty))
        x = self.vit.norm(x)
        img, aud = (x, empty) if self.modality == "image" else (empty, x)
        return EncoderOutput(img, aud, empty, layers if return_embs else None)

    def forward(self, image, audio, return_embs: bool = False) -> EncoderOutput:
        return self.forward_tokens(self.embed(image, audio), return_embs)


class UnimodalMAE(_MaskedDecoders):
    """Image-only (MAE) or audio-only (AudioMAE-style, plain decoder) masked autoencoder.

    Keys `encoder.<modality>.*` + `<modality>_decoder_*`; `load_unimodal_checkpoint(vit, ckpt,
    prefix='encoder.<modality>.')` loads its encoder into a DeepAVFusion branch."""

    def __init__(self, encoder: UnimodalEncoder, decoder_dim: int = 512, decoder_depth: int = 8,
                 decoder_num_heads: int = 16, decoder_mlp_ratio: float = 4.0, mask_ratio: float = 0.75,
                 norm_pix_loss: bool = True):
        super().__init__()
        self.encoder = encoder
        self.modality = encoder.modality
        self.mask_ratio, self.norm_pix_loss = mask_ratio, norm_pix_loss
        vit = encoder.vit
        self.add_decoder(self.modality, vit.embed_dim, vit.grid_size,
                         vit.patch_size[0] * vit.patch_size[1] * vit.in_chans,
                         decoder_dim, decoder_depth, decoder_num_heads, decoder_mlp_ratio)

    def forward(self, image, audio, sample_seed: torch.Tensor | None = None) -> dict:
        """(image, audio), one of them unused -> dict(loss, loss_<m>, pred_<m>, mask_<m>)."""
        m = self.modality
        x_in = image if m == "image" else audio
        x = self.encoder.embed(image, audio)                          # (B, L, D)
        keep, mask, restore = random_masking(x.shape[0], x.shape[1], self.mask_ratio, x.device, sample_seed)
        out = self.encoder.forward_tokens(gather_tokens(x, keep))
        tokens = out.image if m == "image" else out.audio             # (B, K, D)
        pred = self.decode(m, tokens, out.fusion, restore)            # fusion is (B, 0, D)
        loss = masked_patch_loss(patchify(x_in, self.encoder.vit.patch_size), pred, mask, self.norm_pix_loss)
        return {"loss": loss, f"loss_{m}": loss, f"pred_{m}": pred, f"mask_{m}": mask}
