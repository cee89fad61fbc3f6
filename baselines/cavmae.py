"""CAV-MAE (Gong et al., ICLR 2023; YuanGongND/cav-mae `src/models/cav_mae.py`), Table 3 row.

Encoder: an image and an audio ViT branch of `depth - joint_depth` blocks each (timm names, via
`avfusion.models.vit.ViT`), learned modality embeddings, then `joint_depth` shared blocks
("blocks_u") whose attention/MLP weights are shared by three passes with separate LayerNorms:
  - joint pass over the concatenation [audio ; image] with norm1/norm2, final `fusion_norm`;
  - audio-only pass with norm1_a/norm2_a, final `audio.norm` (official `norm_a`);
  - image-only pass with norm1_v/norm2_v, final `image.norm` (official `norm_v`).
Encoder contract (docs/interfaces.md): `image` / `audio` = the modality-specific passes
(what CAV-MAE uses for its contrastive loss and audio-/video-only fine-tuning), `fusion` = the
joint pass, (B, Na+Nv, D) in the official [audio ; image] order (mean-pooled, it is the
official multimodal fine-tuning feature).

Pretraining (official `CAVMAE.forward`, VGGSound recipe `egs/vggsound/run_cavmae_pretrain.sh`):
  - both modalities masked 75 % (unstructured, per sample);
  - one shared decoder over [audio ; image] (visible joint tokens + mask tokens, sin-cos positions,
    decoder modality embeddings), separate prediction heads; MSE on masked patches, norm_pix_loss;
  - contrastive InfoNCE on the mean-pooled modality-specific tokens (of the visible patches),
    L2-normalised, similarity / 0.05, **unidirectional**: for every image (column) the matching
    audio among the batch's audios (log_softmax over dim 0); weight lambda_c = 0.01;
  - loss = (loss_audio + loss_image) + 0.01 * loss_contrastive.

    model = CAVMAE(**cavmae_kwargs)
    out = model(image (B,3,S,S), audio (B,1,128,192))   # {'loss', 'loss_image', 'loss_audio', ...}
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from avfusion.models.encoder import EncoderOutput, load_branch_checkpoint
from avfusion.models.layers import (Attention, Block, DropPath, Mlp, check_input, init_weights_mae,
                                    sincos_pos_table_2d)
from avfusion.models.vit import ViT, gather_tokens, patchify


class JointBlock(nn.Module):
    """CAV-MAE's shared block: one attention + MLP, three LayerNorm pairs (joint, audio, image)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0,
                 attn_drop: float = 0.0, drop: float = 0.0, norm_eps: float = 1e-5):
        super().__init__()
        for suffix in ("", "_a", "_v"):
            setattr(self, f"norm1{suffix}", nn.LayerNorm(dim, eps=norm_eps))
            setattr(self, f"norm2{suffix}", nn.LayerNorm(dim, eps=norm_eps))
        self.attn = Attention(dim, num_heads, qkv_bias=True, attn_drop=attn_drop, proj_drop=drop)
        self.drop_path = DropPath(drop_path)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor, modality: str = "") -> torch.Tensor:
        """modality '' = joint norms, 'a' = audio norms, 'v' = image norms. (B, N, D) -> (B, N, D)."""
        suffix = f"_{modality}" if modality else ""
        x = x + self.drop_path(self.attn(getattr(self, f"norm1{suffix}")(x)))
        return x + self.drop_path(self.mlp(getattr(self, f"norm2{suffix}")(x)))


class CAVMAEEncoder(nn.Module):
    """Two modality-specific ViT stacks + `joint_depth` shared blocks; see the module docstring."""

    def __init__(self, embed_dim: int = 768, depth: int = 12, joint_depth: int = 1, num_heads: int = 12,
                 mlp_ratio: float = 4.0, image_size=(224, 224), image_patch=16, audio_size=(128, 192),
                 audio_patch=16, drop_path: float = 0.0, attn_drop: float = 0.0, drop: float = 0.0,
                 image_pretrained: str = "", audio_pretrained: str = ""):
        super().__init__()
        if not 1 <= joint_depth < depth:
            raise ValueError(f"cav-mae: joint_depth must be in [1, depth-1], got {joint_depth} (depth {depth})")
        self.embed_dim, self.depth, self.joint_depth = embed_dim, depth, joint_depth
        branch = dict(embed_dim=embed_dim, depth=depth - joint_depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
                      norm_eps=1e-5, drop_path=drop_path, attn_drop=attn_drop, drop=drop)
        self.image = ViT(input_size=image_size, patch_size=image_patch, in_chans=3, **branch)
        self.audio = ViT(input_size=audio_size, patch_size=audio_patch, in_chans=1, **branch)
        self.image_grid, self.audio_grid = self.image.grid_size, self.audio.grid_size
        self.modality_image = nn.Parameter(torch.zeros(1, 1, embed_dim))  # official modality_v
        self.modality_audio = nn.Parameter(torch.zeros(1, 1, embed_dim))  # official modality_a
        self.joint_blocks = nn.ModuleList([
            JointBlock(embed_dim, num_heads, mlp_ratio, drop_path, attn_drop, drop) for _ in range(joint_depth)])
        self.fusion_norm = nn.LayerNorm(embed_dim)  # official `norm` of the joint stream
        nn.init.normal_(self.modality_image, std=0.02)
        nn.init.normal_(self.modality_audio, std=0.02)
        self.joint_blocks.apply(init_weights_mae)
        for name, path in (("image", image_pretrained), ("audio", audio_pretrained)):
            if path:
                load_branch_checkpoint(getattr(self, name), path, name)

    def embed(self, image: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch tokens + positions + modality embedding: (B, Nv, D), (B, Na, D)."""
        check_input("image", image, 3, self.image.input_size)
        check_input("audio", audio, 1, self.audio.input_size)
        if image.shape[0] != audio.shape[0]:
            raise ValueError(f"image and audio: batch sizes differ ({image.shape[0]} vs {audio.shape[0]})")
        return self.image.embed(image) + self.modality_image, self.audio.embed(audio) + self.modality_audio

    def forward_tokens(self, x_img: torch.Tensor, x_aud: torch.Tensor, return_embs: bool = False) -> EncoderOutput:
        """Embedded (possibly masked) tokens (B, n_v, D), (B, n_a, D) -> EncoderOutput."""
        layers = []
        empty = x_img.new_zeros(x_img.shape[0], 0, x_img.shape[2])  # (B, 0, D): no fusion tokens yet
        for blk_img, blk_aud in zip(self.image.blocks, self.audio.blocks):
            x_img, x_aud = blk_img(x_img), blk_aud(x_aud)
            if return_embs:
                layers.append((x_img, x_aud, empty))
        x_joint = torch.cat([x_aud, x_img], dim=1)  # (B, n_a + n_v, D), official order [audio ; image]
        for blk in self.joint_blocks:
            # the official loop re-applies each block to the branch input (only the last block counts
            # when joint_depth > 1); here the blocks are chained, identical for the default joint_depth=1
            x_joint, x_aud, x_img = blk(x_joint), blk(x_aud, "a"), blk(x_img, "v")
            if return_embs:
                layers.append((x_img, x_aud, x_joint))
        return EncoderOutput(self.image.norm(x_img), self.audio.norm(x_aud), self.fusion_norm(x_joint),
                             layers if return_embs else None)

    def forward(self, image: torch.Tensor, audio: torch.Tensor, return_embs: bool = False,
                image_ids_keep: torch.Tensor | None = None,
                audio_ids_keep: torch.Tensor | None = None) -> EncoderOutput:
        x_img, x_aud = self.embed(image, audio)
        if image_ids_keep is not None:
            x_img = gather_tokens(x_img, image_ids_keep)  # (B, n_v_visible, D)
        if audio_ids_keep is not None:
            x_aud = gather_tokens(x_aud, audio_ids_keep)  # (B, n_a_visible, D)
        return self.forward_tokens(x_img, x_aud, return_embs)


def random_masking(batch: int, length: int, mask_ratio: float, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MAE per-sample masking -> ids_keep (B, K), mask (B, L) 1 = removed, ids_restore (B, L)."""
    len_keep = int(length * (1 - mask_ratio))
    noise = torch.rand(batch, length, device=device)
    ids_shuffle = torch.argsort(noise, dim=1)  # ascending: small noise is kept
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = torch.ones(batch, length, device=device)
    mask[:, :len_keep] = 0
    return ids_shuffle[:, :len_keep], torch.gather(mask, 1, ids_restore), ids_restore


def contrastive_loss(audio_rep: torch.Tensor, image_rep: torch.Tensor, temperature: float = 0.05,
                     bidirectional: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Official `forward_contrastive`: (B, D), (B, D) -> (InfoNCE, retrieval accuracy)."""
    audio_rep = F.normalize(audio_rep, dim=-1)
    image_rep = F.normalize(image_rep, dim=-1)
    sim = audio_rep @ image_rep.t() / temperature  # (B_audio, B_image)
    target = torch.arange(sim.shape[0], device=sim.device)
    nce = -torch.diag(F.log_softmax(sim, dim=0)).mean()  # each image column picks its audio
    acc = (sim.argmax(dim=0) == target).float().mean()
    if bidirectional:
        nce = (nce - torch.diag(F.log_softmax(sim.t(), dim=0)).mean()) / 2
        acc = (acc + (sim.t().argmax(dim=0) == target).float().mean()) / 2
    return nce, acc


class CAVMAE(nn.Module):
    """CAV-MAE pretraining model: `model(image, audio) -> dict(loss, loss_image, loss_audio, ...)`."""

    def __init__(self, embed_dim: int = 768, depth: int = 12, joint_depth: int = 1, num_heads: int = 12,
                 mlp_ratio: float = 4.0, image_size=(224, 224), image_patch=16, audio_size=(128, 192),
                 audio_patch=16, decoder_dim: int = 512, decoder_depth: int = 8, decoder_heads: int = 16,
                 mask_ratio_image: float = 0.75, mask_ratio_audio: float = 0.75, norm_pix_loss: bool = True,
                 contrastive_weight: float = 0.01, mae_weight: float = 1.0, temperature: float = 0.05,
                 bidirectional: bool = False, image_pretrained: str = "", audio_pretrained: str = "",
                 drop_path: float = 0.0):
        super().__init__()
        self.encoder = CAVMAEEncoder(embed_dim, depth, joint_depth, num_heads, mlp_ratio, image_size, image_patch,
                                     audio_size, audio_patch, drop_path=drop_path,
                                     image_pretrained=image_pretrained, audio_pretrained=audio_pretrained)
        self.mask_ratio_image, self.mask_ratio_audio = mask_ratio_image, mask_ratio_audio
        self.norm_pix_loss, self.temperature, self.bidirectional = norm_pix_loss, temperature, bidirectional
        self.contrastive_weight, self.mae_weight = contrastive_weight, mae_weight
        enc = self.encoder
        n_img, n_aud = enc.image.patch_embed.num_patches, enc.audio.patch_embed.num_patches
        self.decoder_embed = nn.Linear(embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_modality_a = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_modality_v = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        # fixed sin-cos (official tr_pos=False)
        self.decoder_pos_embed_a = nn.Parameter(sincos_pos_table_2d(decoder_dim, enc.audio_grid)[None], requires_grad=False)
        self.decoder_pos_embed_v = nn.Parameter(sincos_pos_table_2d(decoder_dim, enc.image_grid)[None], requires_grad=False)
        self.decoder_blocks = nn.ModuleList([Block(decoder_dim, decoder_heads, mlp_ratio, qkv_bias=True)
                                             for _ in range(decoder_depth)])
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.decoder_pred_a = nn.Linear(decoder_dim, enc.audio.patch_size[0] * enc.audio.patch_size[1] * 1)
        self.decoder_pred_v = nn.Linear(decoder_dim, enc.image.patch_size[0] * enc.image.patch_size[1] * 3)
        self.n_img, self.n_aud = n_img, n_aud
        for p in (self.mask_token, self.decoder_modality_a, self.decoder_modality_v):
            nn.init.normal_(p, std=0.02)
        for module in (self.decoder_embed, self.decoder_blocks, self.decoder_norm, self.decoder_pred_a,
                       self.decoder_pred_v):
            module.apply(init_weights_mae)

    def _unshuffle(self, visible: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Visible decoder tokens (B, K, Dd) + mask tokens -> full sequence in patch order (B, L, Dd)."""
        B, K, Dd = visible.shape
        L = ids_restore.shape[1]
        x = torch.cat([visible, self.mask_token.expand(B, L - K, Dd)], dim=1)  # (B, L, Dd), shuffled order
        return gather_tokens(x, ids_restore)  # (B, L, Dd)

    def forward_decoder(self, joint: torch.Tensor, n_aud_visible: int, restore_a: torch.Tensor,
                        restore_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Joint tokens (B, n_a_vis + n_v_vis, D) -> predictions (B, Na, p*p), (B, Nv, p*p*3)."""
        x = self.decoder_embed(joint)  # (B, n_vis, Dd)
        x_a = self._unshuffle(x[:, :n_aud_visible], restore_a) + self.decoder_pos_embed_a + self.decoder_modality_a
        x_v = self._unshuffle(x[:, n_aud_visible:], restore_v) + self.decoder_pos_embed_v + self.decoder_modality_v
        x = torch.cat([x_a, x_v], dim=1)  # (B, Na + Nv, Dd)
        for blk in self.decoder_blocks:
            x = blk(x)
        x = self.decoder_norm(x)
        return self.decoder_pred_a(x[:, :self.n_aud]), self.decoder_pred_v(x[:, self.n_aud:])

    def reconstruction_loss(self, target_input: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor,
                            patch_size) -> torch.Tensor:
        """MSE over masked patches (MAE `forward_loss`), per-patch normalised target if norm_pix_loss."""
        target = patchify(target_input, patch_size)  # (B, L, p*p*C)
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        loss = ((pred - target) ** 2).mean(dim=-1)  # (B, L)
        return (loss * mask).sum() / mask.sum()

    def forward(self, image: torch.Tensor, audio: torch.Tensor) -> dict:
        enc = self.encoder
        B = image.shape[0]
        x_img, x_aud = enc.embed(image, audio)
        keep_v, mask_v, restore_v = random_masking(B, self.n_img, self.mask_ratio_image, image.device)
        keep_a, mask_a, restore_a = random_masking(B, self.n_aud, self.mask_ratio_audio, image.device)
        out = enc.forward_tokens(gather_tokens(x_img, keep_v), gather_tokens(x_aud, keep_a))
        pred_a, pred_v = self.forward_decoder(out.fusion, keep_a.shape[1], restore_a, restore_v)
        loss_audio = self.reconstruction_loss(audio, pred_a, mask_a, enc.audio.patch_size)
        loss_image = self.reconstruction_loss(image, pred_v, mask_v, enc.image.patch_size)
        loss_c, acc_c = contrastive_loss(out.audio.mean(dim=1), out.image.mean(dim=1), self.temperature,
                                         self.bidirectional)
        loss = self.mae_weight * (loss_audio + loss_image) + self.contrastive_weight * loss_c
        return {"loss": loss, "loss_image": loss_image, "loss_audio": loss_audio,
                "loss_contrastive": loss_c, "contrastive_acc": acc_c}
