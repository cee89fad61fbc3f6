"""Model presets as data, validated by dataclasses (avfusion.config); the rule for "k of 12 fusion layers".

A model dict is keyed by `family`; every knob can be overridden (avfusion.models.registry):

    cfg = model_config("deepavfusion-tiny", {"fusion": {"arch": "dense", "layers": "2-3"}})
    cfg = model_config("deepavfusion-smoke", ["fusion.dense_impl=naive", "image.mask_ratio=0.5"])

Here: the `deepavfusion` (AV-MAE + DeepAVFusion encoder) and `mae` (unimodal MAE) families' schemas
and presets, the Table 4 / Table 3 ablation presets (late / mid / no / token fusion), and
`fusion_layers(k_of_12, depth)`. Baselines with their own code (CAV-MAE, Sound of Pixels) register
their family and presets beside their definition with `registry.register`. This module imports
nothing from the registry (the registry reads these tables).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Literal, Union

from ..config import ConfigError, merge, to_dict


@dataclass
class BranchSpec:
    """One modality: input (H, W), patch size, unimodal init checkpoint, MAE masking and loss."""
    input_size: tuple[int, int] = (224, 224)
    patch_size: int = 16
    pretrained: str = ""          # MAE/AudioMAE file or a UnimodalMAE run's checkpoint; '' = random init
    mask_ratio: float = 0.75
    norm_loss: bool = True        # norm-pix loss


@dataclass
class FusionSpec:
    arch: Literal["factorized", "factorized_mmi", "dense", "dense_mmi", "token"] = "factorized"
    layers: Union[int, str, list[int]] = "all"     # 'all' | 'none' | k | 'a-b-c' (0-based)
    num_fusion_tkns: int = 16
    num_aggr_image_tkns: int = 8
    num_aggr_audio_tkns: int = 8
    attn_ratio: float = 0.25
    mlp_ratio: float = 1.0
    num_heads: int = 12
    dense_impl: Literal["naive", "fast"] = "fast"


@dataclass
class DecoderSpec:
    embed_dim: int = 512
    depth: int = 8
    num_heads: int = 16
    mlp_ratio: float = 4.0


def _check_heads(key: str, dim: int, heads: int) -> None:
    if heads <= 0 or dim % heads:
        raise ConfigError(f"config key '{key}': {heads} heads must divide the width {dim}")


def _check_branch(name: str, branch: BranchSpec) -> None:
    if any(s % branch.patch_size for s in branch.input_size):
        raise ConfigError(f"config key '{name}.input_size': {list(branch.input_size)} is not divisible by "
                          f"{name}.patch_size={branch.patch_size}")
    if not 0.0 <= branch.mask_ratio < 1.0:
        raise ConfigError(f"config key '{name}.mask_ratio': {branch.mask_ratio} must be in [0, 1)")


@dataclass
class ViTModel:
    """What every ViT-backbone family shares: width, depth, heads, both branch specs, the MAE
    decoder, regularisation. A family subclass sets `family` (keeping its place first) and adds its
    own fields after these."""
    family: str = ""
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    image: BranchSpec = field(default_factory=lambda: BranchSpec((224, 224), 16, "", 0.75, True))
    audio: BranchSpec = field(default_factory=lambda: BranchSpec((128, 192), 16, "", 0.8, True))
    decoder: DecoderSpec = field(default_factory=DecoderSpec)
    drop_path: float = 0.0
    attn_drop: float = 0.0
    drop: float = 0.0

    def validate(self) -> None:
        _check_heads("num_heads", self.embed_dim, self.num_heads)
        _check_heads("decoder.num_heads", self.decoder.embed_dim, self.decoder.num_heads)


@dataclass
class DeepAVFusionModel(ViTModel):
    """AV-MAE with the DeepAVFusion encoder (ViT branches of width `embed_dim`, depth `depth`)."""
    family: Literal["deepavfusion"] = "deepavfusion"
    fusion: FusionSpec = field(default_factory=FusionSpec)

    def validate(self) -> None:
        super().validate()
        _check_heads("fusion.num_heads", self.embed_dim, self.fusion.num_heads)
        _check_branch("image", self.image)
        _check_branch("audio", self.audio)


@dataclass
class UnimodalMAEModel(ViTModel):
    """Image-only or audio-only MAE; only the `modality` branch spec is used."""
    family: Literal["mae"] = "mae"
    modality: Literal["image", "audio"] = "image"

    def validate(self) -> None:
        super().validate()
        _check_branch(self.modality, getattr(self, self.modality))


# ---------------------------------------------------------------------------------------------
# presets: name -> partial model dict (missing keys take the dataclass defaults = paper ViT-B)

# every preset is a full dict: a partial nested section would otherwise take the class defaults
# (e.g. audio.mask_ratio would fall back to BranchSpec's 0.75 instead of 0.8)
_PAPER_AV = to_dict(DeepAVFusionModel())
_PAPER_MAE = {k: v for k, v in _PAPER_AV.items() if k != "fusion"}
_TINY_BACKBONE = {"embed_dim": 192, "depth": 4, "num_heads": 3, "image": {"input_size": [112, 112]},
                  "decoder": {"embed_dim": 128, "depth": 2, "num_heads": 4}}
# lite: the tiny scale's model (issue 15): tiny's depth 4 (Table 4's fusion stages stay 4 models) at width 64
# and 64x64 images; ~4x cheaper per step than tiny-192, so the hour buys ~4x the steps
_LITE_BACKBONE = {"embed_dim": 64, "depth": 4, "num_heads": 2, "image": {"input_size": [64, 64]},
                  "decoder": {"embed_dim": 64, "depth": 1, "num_heads": 2}}
_SMOKE_BACKBONE = {"embed_dim": 64, "depth": 2, "num_heads": 2, "image": {"input_size": [64, 64]},
                   "decoder": {"embed_dim": 64, "depth": 1, "num_heads": 2}}
_TINY_FUSION = {"fusion": {"num_heads": 3, "attn_ratio": 0.25, "mlp_ratio": 1.0,
                           "num_fusion_tkns": 16, "num_aggr_image_tkns": 8, "num_aggr_audio_tkns": 8}}
_LITE_FUSION = {"fusion": {"num_heads": 2, "attn_ratio": 0.25, "mlp_ratio": 1.0,
                           "num_fusion_tkns": 16, "num_aggr_image_tkns": 8, "num_aggr_audio_tkns": 8}}
_SMOKE_FUSION = {"fusion": {"num_heads": 2, "attn_ratio": 0.25, "mlp_ratio": 1.0,
                            "num_fusion_tkns": 4, "num_aggr_image_tkns": 2, "num_aggr_audio_tkns": 2}}


def _mae(modality: str, *layers: dict) -> dict:
    out = merge(_PAPER_MAE, {"family": "mae", "modality": modality})
    for layer in layers:
        out = merge(out, layer)
    return out


PRESETS: dict[str, dict] = {
    # released VGGSound-200ep model (paper base config): 320,563,712 parameters
    "deepavfusion-vggsound": merge(_PAPER_AV, {"fusion": {"attn_ratio": 0.25, "mlp_ratio": 1.0}}),
    # released AudioSet-200ep model: 378,997,760 parameters
    "deepavfusion-audioset": merge(_PAPER_AV, {"fusion": {"attn_ratio": 1.0, "mlp_ratio": 4.0}}),
    "deepavfusion-tiny": merge(merge(_PAPER_AV, _TINY_BACKBONE), _TINY_FUSION),
    "deepavfusion-smoke": merge(merge(_PAPER_AV, _SMOKE_BACKBONE), _SMOKE_FUSION),
    "deepavfusion-lite": merge(merge(_PAPER_AV, _LITE_BACKBONE), _LITE_FUSION),
    # unimodal MAEs (paper: ViT-B with the MAE decoder 512-d, 8 blocks, 16 heads; the audio one
    # uses the same plain decoder, not AudioMAE's local-window decoder)
    "mae-image-paper": _mae("image"),
    "mae-audio-paper": _mae("audio"),
    "mae-image-tiny": _mae("image", _TINY_BACKBONE),
    "mae-audio-tiny": _mae("audio", _TINY_BACKBONE),
    "mae-image-smoke": _mae("image", _SMOKE_BACKBONE),
    "mae-audio-smoke": _mae("audio", _SMOKE_BACKBONE),
    "mae-image-lite": _mae("image", _LITE_BACKBONE),
    "mae-audio-lite": _mae("audio", _LITE_BACKBONE),
}
PRESETS["deepavfusion-paper"] = PRESETS["deepavfusion-vggsound"]


def fusion_layers(k_of_12: int, depth: int) -> Union[int, str]:
    """The paper's "k of 12 fusion layers" at encoder depth `depth`: the last min(k, depth) layers
    (0-based `fusion.layers`: 'none', one int, 'a-b-c', or 'all' when every layer fuses).

    Spec 2.2 reads Table 6a's # = 12 / 9 / 6 / 3 / 1 / 0 as "the last k layers", and Table 4's mid
    (Table 6a "3") and late (Table 6a "1") rows as layers 9-10-11 and 11 of 12. At depth 12 this is
    exactly that; at depth 4 (tiny) 12, 9, 6 -> all, 3 -> 1-2-3, 1 -> 3, so Table 4's four fusion
    settings (all / last 3 / last 1 / none) stay four different models; at depth 2 (smoke) 3 -> all.

        fusion_layers(3, 12) == "9-10-11";  fusion_layers(1, 12) == 11;  fusion_layers(3, 4) == "1-2-3"
    """
    if k_of_12 < 0 or depth < 1:
        raise ValueError(f"fusion_layers: k_of_12={k_of_12}, depth={depth}: need k >= 0 and depth >= 1")
    n = min(k_of_12, depth)
    if n == 0:
        return "none"
    if n == depth:
        return "all"
    if n == 1:
        return depth - 1
    return "-".join(str(i) for i in range(depth - n, depth))


# Table 4 / Table 3 ablations: the DeepAVFusion encoder + AV-MAE objective with another fusion
# setting (baselines/README.md gives the table rows): late = dense block at the last layer (k = 1),
# mid = dense blocks at the last 3 (k = 3; the text says "layers 9-12", Table 6a says 3: spec 8.5),
# no fusion, token fusion (MBT-like) at every layer. Presets `{late,mid,no,token}-fusion-{paper,tiny,smoke}`.
_ABLATION_BASE = {"paper": "deepavfusion-vggsound", "tiny": "deepavfusion-tiny", "smoke": "deepavfusion-smoke",
                  "lite": "deepavfusion-lite"}


def _ablation_fusion(depth: int) -> dict[str, dict]:
    return {"late-fusion": {"arch": "dense", "layers": fusion_layers(1, depth)},
            "mid-fusion": {"arch": "dense", "layers": fusion_layers(3, depth)},
            "no-fusion": {"layers": "none"},
            "token-fusion": {"arch": "token", "layers": "all"}}


for _scale, _base in _ABLATION_BASE.items():
    for _name, _fusion in _ablation_fusion(PRESETS[_base]["depth"]).items():
        PRESETS[f"{_name}-{_scale}"] = merge(PRESETS[_base], {"fusion": _fusion})


def register_preset(name: str, model_dict: dict) -> None:
    """Add a preset to the table (`registry.register(..., presets=...)` calls this for a family)."""
    if "family" not in model_dict:
        raise ValueError(f"preset {name!r}: the model dict needs a 'family' key")
    PRESETS[name] = copy.deepcopy(model_dict)
