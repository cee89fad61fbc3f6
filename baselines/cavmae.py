"""CAV-MAE (Gong et al., ICLR 2023; YuanGongND/cav-mae `src/models/cav_mae.py`), Table 3 row.

Encoder: an image and an audio ViT branch of `depth - joint_depth` blocks each (timm names, via
`avfusion.models.vit.ViT`), learned modality embeddings, then `joint_depth` shared blocks
("blocks_u", here `fusion_blocks.{layer}`) whose attention/MLP weights serve three passes, each
with its own LayerNorms:
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

    model = build_pretrain_model({"preset": "cav-mae-tiny"})   # avfusion.models.registry
    out = model(image (B,3,S,S), audio (B,1,128,192))   # {'loss', 'loss_image', 'loss_audio', ...}
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from avfusion.config import ConfigError, merge
from avfusion.models.avmae import masked_patch_loss, random_masking
from avfusion.models.encoder import EncoderOutput, TwoBranchEncoder, load_branch_checkpoint
from avfusion.models.layers import (Attention, Block, DropPath, Mlp, init_weights_mae,
                                    sincos_pos_table_2d)
from avfusion.models.presets import PRESETS, BranchSpec, ViTModel
from avfusion.models.registry import register
from avfusion.models.vit import ViT, gather_tokens, patchify, read_state_dict


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


class CAVMAEEncoder(TwoBranchEncoder):
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
        # joint block j sits at layer depth - joint_depth + j; None below keeps the keys at their layer
        # index (`fusion_blocks.{layer}`, as DeepAVFusion's), so layer-wise lr decay sees the right depth
        self.fusion_blocks = nn.ModuleList(
            [None] * (depth - joint_depth)
            + [JointBlock(embed_dim, num_heads, mlp_ratio, drop_path, attn_drop, drop) for _ in range(joint_depth)])
        self.fusion_norm = nn.LayerNorm(embed_dim)  # official `norm` of the joint stream
        nn.init.normal_(self.modality_image, std=0.02)
        nn.init.normal_(self.modality_audio, std=0.02)
        self.fusion_blocks.apply(init_weights_mae)
        for name, path in (("image", image_pretrained), ("audio", audio_pretrained)):
            if path:
                load_unimodal_init(self, path, name)

    def load_unimodal(self, path, modality: str) -> None:
        """Unimodal init hook of the pretrain job (docs/interfaces.md): see `load_unimodal_init`."""
        load_unimodal_init(self, path, modality)

    @property
    def joint_blocks(self) -> list[JointBlock]:
        return list(self.fusion_blocks)[self.depth - self.joint_depth:]

    def embed(self, image: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch tokens + positions + modality embedding: (B, Nv, D), (B, Na, D)."""
        x_img, x_aud = super().embed(image, audio)
        return x_img + self.modality_image, x_aud + self.modality_audio

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


def load_unimodal_init(enc: CAVMAEEncoder, path, modality: str) -> None:
    """Unimodal init of one CAV-MAE side from a `depth`-block MAE/AudioMAE or UnimodalMAE checkpoint.

    Blocks 0..n-1 and the patch embedding / final norm go to the branch (n = depth - joint_depth,
    strict, via the model package's loader); blocks n.. initialise the joint blocks: the image
    checkpoint gives the shared attention/MLP and the joint and image norms, the audio checkpoint the
    audio norms (official CAV-MAE initialises all of it from the ImageNet MAE, "ori_mae_11").
    """
    state = read_state_dict(path, f"{modality}_pretrained checkpoint")
    prefix = f"encoder.{modality}." if any(k.startswith(f"encoder.{modality}.") for k in state) else ""
    state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    n_branch = len(getattr(enc, modality).blocks)
    branch_state, joint_state = {}, {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "blocks" and int(parts[1]) >= n_branch:
            joint_state[(int(parts[1]) - n_branch, ".".join(parts[2:]))] = value
        else:
            branch_state[key] = value
    load_branch_checkpoint(getattr(enc, modality), branch_state, modality)
    extra = sorted({i + n_branch for i, _ in joint_state if i >= len(enc.joint_blocks)})
    if extra:
        raise ValueError(f"{modality}_pretrained={path}: blocks {extra} beyond depth {enc.depth}")
    copied = set()
    for (j, name), value in joint_state.items():
        module, _, param = name.partition(".")  # 'norm1', 'weight' / 'attn', 'qkv.weight'
        if module in ("norm1", "norm2"):
            targets = [f"{module}_a"] if modality == "audio" else [module, f"{module}_v"]
        else:
            targets = [module] if modality == "image" else []
        for target in targets:
            own = enc.joint_blocks[j].get_parameter(f"{target}.{param}")
            if own.shape != value.shape:
                raise ValueError(f"{modality}_pretrained={path}: blocks.{j + n_branch}.{name} has shape "
                                 f"{tuple(value.shape)}, joint block {j} {target}.{param} {tuple(own.shape)}")
            own.data.copy_(value)
            copied.add((j, f"{target}.{param}"))
    for j, blk in enumerate(enc.joint_blocks):
        wanted = [n for n, _ in blk.named_parameters() if n.startswith(("norm1_a", "norm2_a")) == (modality == "audio")]
        missing = [n for n in wanted if (j, n) not in copied]
        if missing:
            raise ValueError(f"{modality}_pretrained={path}: nothing for joint block {j} {missing[:4]} "
                             f"(the checkpoint needs {enc.depth} blocks)")


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

    def __init__(self, encoder: CAVMAEEncoder, decoder_dim: int = 512, decoder_depth: int = 8,
                 decoder_num_heads: int = 16, decoder_mlp_ratio: float = 4.0, image_mask_ratio: float = 0.75,
                 audio_mask_ratio: float = 0.75, norm_pix_loss: bool = True, contrastive_weight: float = 0.01,
                 mae_weight: float = 1.0, temperature: float = 0.05, bidirectional: bool = False):
        super().__init__()
        self.encoder = encoder
        self.image_mask_ratio, self.audio_mask_ratio = image_mask_ratio, audio_mask_ratio
        self.norm_pix_loss, self.temperature, self.bidirectional = norm_pix_loss, temperature, bidirectional
        self.contrastive_weight, self.mae_weight = contrastive_weight, mae_weight
        enc = self.encoder
        n_img, n_aud = enc.image.patch_embed.num_patches, enc.audio.patch_embed.num_patches
        self.decoder_embed = nn.Linear(enc.embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_modality_a = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_modality_v = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        # fixed sin-cos (official tr_pos=False)
        self.decoder_pos_embed_a = nn.Parameter(sincos_pos_table_2d(decoder_dim, enc.audio_grid)[None], requires_grad=False)
        self.decoder_pos_embed_v = nn.Parameter(sincos_pos_table_2d(decoder_dim, enc.image_grid)[None], requires_grad=False)
        self.decoder_blocks = nn.ModuleList([Block(decoder_dim, decoder_num_heads, decoder_mlp_ratio, qkv_bias=True)
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

    def forward(self, image: torch.Tensor, audio: torch.Tensor) -> dict:
        enc = self.encoder
        B = image.shape[0]
        x_img, x_aud = enc.embed(image, audio)
        keep_v, mask_v, restore_v = random_masking(B, self.n_img, self.image_mask_ratio, image.device)
        keep_a, mask_a, restore_a = random_masking(B, self.n_aud, self.audio_mask_ratio, image.device)
        out = enc.forward_tokens(gather_tokens(x_img, keep_v), gather_tokens(x_aud, keep_a))
        pred_a, pred_v = self.forward_decoder(out.fusion, keep_a.shape[1], restore_a, restore_v)
        loss_audio = masked_patch_loss(patchify(audio, enc.audio.patch_size), pred_a, mask_a, self.norm_pix_loss)
        loss_image = masked_patch_loss(patchify(image, enc.image.patch_size), pred_v, mask_v, self.norm_pix_loss)
        loss_c, acc_c = contrastive_loss(out.audio.mean(dim=1), out.image.mean(dim=1), self.temperature,
                                         self.bidirectional)
        loss = self.mae_weight * (loss_audio + loss_image) + self.contrastive_weight * loss_c
        return {"loss": loss, "loss_image": loss_image, "loss_audio": loss_audio,
                "loss_contrastive": loss_c, "contrastive_acc": acc_c}


# ---------------------------------------------------------------------------------------------
# registry: family `cav-mae`, presets cav-mae-{paper,tiny,smoke} (the scales' backbones of mae-image-*)


@dataclass
class CAVMAEModel(ViTModel):
    """CAV-MAE model dict (validated like the model package's presets): the shared ViT fields and
    CAV-MAE's own (joint blocks, contrastive loss); its audio masking default is 0.75."""
    family: Literal["cav-mae"] = "cav-mae"
    depth: int = 12                 # modality-specific blocks + joint blocks (official 11 + 1)
    audio: BranchSpec = field(default_factory=lambda: BranchSpec((128, 192), 16, "", 0.75, True))
    joint_depth: int = 1
    contrastive_weight: float = 0.01
    temperature: float = 0.05
    bidirectional: bool = False

    def validate(self) -> None:
        if not 1 <= self.joint_depth < self.depth:
            raise ConfigError(f"config key 'model.joint_depth': {self.joint_depth} must be in [1, depth-1={self.depth - 1}]")
        if self.temperature <= 0:
            raise ConfigError(f"config key 'model.temperature': must be > 0, got {self.temperature}")
        for key, dim, heads in (("num_heads", self.embed_dim, self.num_heads),
                                ("decoder.num_heads", self.decoder.embed_dim, self.decoder.num_heads)):
            if heads <= 0 or dim % heads:
                raise ConfigError(f"config key 'model.{key}': {heads} heads must divide the width {dim}")
        for name in ("image", "audio"):
            branch = getattr(self, name)
            if any(size % branch.patch_size for size in branch.input_size):
                raise ConfigError(f"config key 'model.{name}.input_size': {list(branch.input_size)} is not "
                                  f"divisible by {name}.patch_size={branch.patch_size}")


def build_encoder(cfg: dict) -> CAVMAEEncoder:
    return CAVMAEEncoder(
        embed_dim=cfg["embed_dim"], depth=cfg["depth"], joint_depth=cfg["joint_depth"], num_heads=cfg["num_heads"],
        mlp_ratio=cfg["mlp_ratio"], image_size=tuple(cfg["image"]["input_size"]), image_patch=cfg["image"]["patch_size"],
        audio_size=tuple(cfg["audio"]["input_size"]), audio_patch=cfg["audio"]["patch_size"],
        drop_path=cfg["drop_path"], attn_drop=cfg["attn_drop"], drop=cfg["drop"],
        image_pretrained=cfg["image"]["pretrained"], audio_pretrained=cfg["audio"]["pretrained"])


def build_pretrain(cfg: dict) -> CAVMAE:
    dec = cfg["decoder"]
    if cfg["image"]["norm_loss"] != cfg["audio"]["norm_loss"]:
        raise ConfigError("config keys 'model.image.norm_loss' / 'model.audio.norm_loss': CAV-MAE has one "
                          "norm_pix_loss switch; set both the same")
    return CAVMAE(build_encoder(cfg), decoder_dim=dec["embed_dim"], decoder_depth=dec["depth"],
                  decoder_num_heads=dec["num_heads"], decoder_mlp_ratio=dec["mlp_ratio"],
                  image_mask_ratio=cfg["image"]["mask_ratio"], audio_mask_ratio=cfg["audio"]["mask_ratio"],
                  norm_pix_loss=cfg["image"]["norm_loss"], contrastive_weight=cfg["contrastive_weight"],
                  temperature=cfg["temperature"], bidirectional=cfg["bidirectional"])


def _scale_backbone(scale: str) -> dict:
    """The backbone of the model package's `mae-image-<scale>` preset, without family/modality."""
    base = {k: v for k, v in PRESETS[f"mae-image-{scale}"].items() if k not in ("family", "modality")}
    return merge(base, {"family": "cav-mae", "audio": {"mask_ratio": 0.75}})


register("cav-mae", build_pretrain, build_encoder, config_cls=CAVMAEModel, presets={
    "cav-mae-paper": {},                       # ViT-B: 11 + 1 blocks, decoder 512 x 8
    "cav-mae-tiny": _scale_backbone("tiny"),
    "cav-mae-smoke": _scale_backbone("smoke"),
    "cav-mae-lite": _scale_backbone("lite")})
