"""Model presets as data, validated by dataclasses (avfusion.config).

A model dict is keyed by `family`; every knob can be overridden:

    cfg = model_config("deepavfusion-tiny", {"fusion": {"arch": "dense", "layers": "2-3"}})
    cfg = model_config("deepavfusion-smoke", ["fusion.dense_impl=naive", "image.mask_ratio=0.5"])

Families here: `deepavfusion` (AV-MAE + DeepAVFusion encoder) and `mae` (unimodal MAE); baselines
add theirs with `register_preset` and `registry.register`.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Literal, Union

from ..config import ConfigError, from_dict, merge, parse_overrides, to_dict


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
class DeepAVFusionModel:
    """AV-MAE with the DeepAVFusion encoder (ViT branches of width `embed_dim`, depth `depth`)."""
    family: Literal["deepavfusion"] = "deepavfusion"
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    image: BranchSpec = field(default_factory=lambda: BranchSpec((224, 224), 16, "", 0.75, True))
    audio: BranchSpec = field(default_factory=lambda: BranchSpec((128, 192), 16, "", 0.8, True))
    fusion: FusionSpec = field(default_factory=FusionSpec)
    decoder: DecoderSpec = field(default_factory=DecoderSpec)
    drop_path: float = 0.0
    attn_drop: float = 0.0
    drop: float = 0.0

    def validate(self) -> None:
        _check_heads("num_heads", self.embed_dim, self.num_heads)
        _check_heads("fusion.num_heads", self.embed_dim, self.fusion.num_heads)
        _check_heads("decoder.num_heads", self.decoder.embed_dim, self.decoder.num_heads)
        _check_branch("image", self.image)
        _check_branch("audio", self.audio)


@dataclass
class UnimodalMAEModel:
    """Image-only or audio-only MAE; only the `modality` branch spec is used."""
    family: Literal["mae"] = "mae"
    modality: Literal["image", "audio"] = "image"
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
        _check_branch(self.modality, getattr(self, self.modality))


# ---------------------------------------------------------------------------------------------
# presets: name -> partial model dict (missing keys take the dataclass defaults = paper ViT-B)

# every preset is a full dict: a partial nested section would otherwise take the class defaults
# (e.g. audio.mask_ratio would fall back to BranchSpec's 0.75 instead of 0.8)
_PAPER_AV = to_dict(DeepAVFusionModel())
_PAPER_MAE = {k: v for k, v in _PAPER_AV.items() if k != "fusion"}
_TINY_BACKBONE = {"embed_dim": 192, "depth": 4, "num_heads": 3, "image": {"input_size": [112, 112]},
                  "decoder": {"embed_dim": 128, "depth": 2, "num_heads": 4}}
_SMOKE_BACKBONE = {"embed_dim": 64, "depth": 2, "num_heads": 2, "image": {"input_size": [64, 64]},
                   "decoder": {"embed_dim": 64, "depth": 1, "num_heads": 2}}
_TINY_FUSION = {"fusion": {"num_heads": 3, "attn_ratio": 0.25, "mlp_ratio": 1.0,
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
    # unimodal MAEs (paper: ViT-B with the MAE decoder 512-d, 8 blocks, 16 heads; the audio one
    # uses the same plain decoder, not AudioMAE's local-window decoder)
    "mae-image-paper": _mae("image"),
    "mae-audio-paper": _mae("audio"),
    "mae-image-tiny": _mae("image", _TINY_BACKBONE),
    "mae-audio-tiny": _mae("audio", _TINY_BACKBONE),
    "mae-image-smoke": _mae("image", _SMOKE_BACKBONE),
    "mae-audio-smoke": _mae("audio", _SMOKE_BACKBONE),
}
PRESETS["deepavfusion-paper"] = PRESETS["deepavfusion-vggsound"]

# family -> dataclass that validates its model dicts (baselines add theirs via register_family_config)
FAMILY_CONFIGS: dict[str, type] = {"deepavfusion": DeepAVFusionModel, "mae": UnimodalMAEModel}


def register_preset(name: str, model_dict: dict) -> None:
    """Add a preset (baselines call this when their module is imported)."""
    if "family" not in model_dict:
        raise ValueError(f"preset {name!r}: the model dict needs a 'family' key")
    PRESETS[name] = copy.deepcopy(model_dict)


def register_family_config(family: str, config_cls: type) -> None:
    FAMILY_CONFIGS[family] = config_cls


def validate_model_dict(model_dict: dict) -> dict:
    """Check a full model dict against its family's dataclass; return it normalised (defaults filled)."""
    family = model_dict.get("family")
    if family is None:
        raise ConfigError(f"model config: missing key 'family' (known families: {sorted(FAMILY_CONFIGS)})")
    if family not in FAMILY_CONFIGS:
        from .registry import family_entry   # may import a baseline module that registers it
        family_entry(family)
    config_cls = FAMILY_CONFIGS.get(family)
    if config_cls is None:      # a registered family without a schema: passed through as given
        return copy.deepcopy(model_dict)
    return to_dict(from_dict(config_cls, model_dict, prefix="model"))


def model_config(preset: str, overrides=None) -> dict:
    """Preset dict + overrides (nested dict or ['key.path=value', ...]) -> validated model dict."""
    if preset not in PRESETS:
        from .registry import import_baseline_modules
        import_baseline_modules()
    if preset not in PRESETS:
        raise ConfigError(f"config key 'model.preset': unknown preset {preset!r}; known: {sorted(PRESETS)}")
    if isinstance(overrides, (list, tuple)):
        overrides = parse_overrides(list(overrides))
    data = merge(copy.deepcopy(PRESETS[preset]), overrides or {})
    return validate_model_dict(data)


def resolve_model_section(section: dict) -> dict:
    """A job's `model:` section `{preset: NAME, ...overrides}` (or a full dict with `family`)."""
    section = dict(section)
    preset = section.pop("preset", None)
    if preset:
        return model_config(preset, section)
    return validate_model_dict(section)
