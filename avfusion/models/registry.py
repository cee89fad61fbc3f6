"""Model registry: every family and every preset, one `register`, one way to resolve and build.

    model = build_pretrain_model({"preset": "deepavfusion-tiny", "fusion": {"arch": "dense"}})
    encoder = build_encoder(model_config("deepavfusion-vggsound"))
    encoder = build_encoder({"preset": "late-fusion-smoke"}, "runs/pretrain/x", image_size=64)   # a task's call

A family registers once, beside its definition (timm's habit), with its presets:

    register("cav-mae", pretrain_factory, encoder_factory, config_cls=CAVMAEModel,
             presets={"cav-mae-tiny": {"family": "cav-mae", ...}})

The built-in families (`deepavfusion`, `mae`) register at the end of this module with the presets of
`avfusion.models.presets` (the ablations included); baseline families register from
`baselines/<module>.py`, imported by name (BASELINE_MODULES) the first time one of their families or
an unknown preset is asked for. Imports go one way: registry -> presets; baselines -> registry.
"""
from __future__ import annotations

import copy
import importlib
from typing import Callable, NamedTuple

from torch import nn

from ..checkpoints import resolve_checkpoint
from ..config import ConfigError, from_dict, merge, parse_overrides, to_dict
from .avmae import AVMAE, UnimodalEncoder, UnimodalMAE
from .checkpoint import load_encoder_from_checkpoint
from .encoder import DeepAVFusionEncoder, load_branch_checkpoint
from .presets import PRESETS, DeepAVFusionModel, UnimodalMAEModel, register_preset
from .vit import ViT

# family -> module that registers it (imported when the family or an unknown preset is asked for)
BASELINE_MODULES = {
    "cav-mae": "baselines.cavmae",
    "sound-of-pixels": "baselines.sound_of_pixels",
}


class Family(NamedTuple):
    pretrain: Callable[[dict], nn.Module] | None
    encoder: Callable[[dict], nn.Module] | None
    config_cls: type | None = None


FAMILIES: dict[str, Family] = {}


def register(family: str, pretrain_factory: Callable[[dict], nn.Module] | None,
             encoder_factory: Callable[[dict], nn.Module] | None, config_cls: type | None = None,
             presets: dict[str, dict] | None = None) -> None:
    """Register a model family and its presets. Factories take the validated model dict; `config_cls`
    (a dataclass) validates model dicts of this family (unknown key / wrong type -> ConfigError);
    `presets` maps preset names to model dicts (their `family` defaults to this one)."""
    FAMILIES[family] = Family(pretrain_factory, encoder_factory, config_cls)
    for name, model_dict in (presets or {}).items():
        register_preset(name, {"family": family, **model_dict})


def _import_module(path: str) -> bool:
    """Import `path`; False only if that module itself does not exist (a broken one raises)."""
    try:
        importlib.import_module(path)
    except ModuleNotFoundError as err:
        if err.name and (path == err.name or path.startswith(err.name + ".")):
            return False
        raise
    return True


def import_baseline_modules() -> None:
    """Import every known baseline module so that its presets and families are registered."""
    for path in BASELINE_MODULES.values():
        _import_module(path)


def family_entry(family: str) -> Family:
    if family not in FAMILIES and family in BASELINE_MODULES:
        _import_module(BASELINE_MODULES[family])
    if family not in FAMILIES:
        raise ConfigError(f"config key 'model.family': unknown family {family!r}; known: "
                          f"{sorted(set(FAMILIES) | set(BASELINE_MODULES))}")
    return FAMILIES[family]


def validate_model_dict(model_dict: dict) -> dict:
    """Check a full model dict against its family's dataclass; return it normalised (defaults filled)."""
    family = model_dict.get("family")
    if family is None:
        raise ConfigError(f"model config: missing key 'family' (known families: {sorted(FAMILIES)})")
    config_cls = family_entry(family).config_cls
    if config_cls is None:      # a registered family without a schema: passed through as given
        return copy.deepcopy(model_dict)
    return to_dict(from_dict(config_cls, model_dict, prefix="model"))


def model_config(preset: str, overrides=None) -> dict:
    """Preset dict + overrides (nested dict or ['key.path=value', ...]) -> validated model dict."""
    if preset not in PRESETS:
        import_baseline_modules()
    if preset not in PRESETS:
        raise ConfigError(f"config key 'model.preset': unknown preset {preset!r}; known: {sorted(PRESETS)}")
    if isinstance(overrides, (list, tuple)):
        overrides = parse_overrides(list(overrides))
    data = merge(copy.deepcopy(PRESETS[preset]), overrides or {})
    return validate_model_dict(data)


def resolve(model_section: dict) -> dict:
    """A job's `model:` section `{preset: NAME, ...overrides}` (or a full dict with `family`) ->
    validated model dict."""
    section = dict(model_section)
    preset = section.pop("preset", None)
    if preset:
        return model_config(preset, section)
    return validate_model_dict(section)


def _build(model_dict: dict, part: str, what: str) -> nn.Module:
    cfg = resolve(model_dict)
    factory = getattr(family_entry(cfg["family"]), part)
    if factory is None:
        raise ConfigError(f"model family {cfg['family']!r} has no {what}")
    return factory(cfg)


def build_pretrain_model(model_dict: dict) -> nn.Module:
    """The family's pretraining model (e.g. AVMAE) of a model dict or `{preset: NAME, ...}` section."""
    return _build(model_dict, "pretrain", "pretraining model")


def build_encoder(model_dict: dict, checkpoint: str = "", image_size: int | None = None,
                  freeze: bool = False) -> nn.Module:
    """The family's encoder (the encoder contract of docs/interfaces.md) of a model dict or a job's
    `model:` section; every task builds its encoder with this one call:

        encoder = build_encoder(cfg.model, cfg.init.checkpoint, cfg.data.image_size, freeze=False)

    `checkpoint` (a run folder or file, the job's `init.checkpoint`) loads `encoder.*` strictly
    ('' = random init); `image_size`, when given, must be the encoder's image input (the job's
    `data.image_size`); `freeze` turns off every gradient."""
    encoder = _build(model_dict, "encoder", "encoder")
    if image_size is not None:
        image_branch = getattr(encoder, "image", None)
        expected = tuple(getattr(image_branch, "input_size", (image_size, image_size)))
        if expected != (image_size, image_size):
            grid, patch = tuple(encoder.image_grid), getattr(image_branch, "patch_size", None)
            raise ConfigError(f"config key 'data.image_size': {image_size} does not match the encoder's image "
                              f"input {list(expected)} (grid {grid}, patch {patch}); set data.image_size={expected[0]}")
    if checkpoint:
        path = resolve_checkpoint(checkpoint, key="init.checkpoint")
        load_encoder_from_checkpoint(encoder, str(path))
        print(f"init.checkpoint: loaded encoder.* from {path}")
    if freeze:
        encoder.requires_grad_(False)
    return encoder


# ---------------------------------------------------------------------------------------------
# built-in families


def deepavfusion_encoder(cfg: dict) -> DeepAVFusionEncoder:
    fusion = cfg["fusion"]
    return DeepAVFusionEncoder(
        embed_dim=cfg["embed_dim"], depth=cfg["depth"], num_heads=cfg["num_heads"], mlp_ratio=cfg["mlp_ratio"],
        image_size=tuple(cfg["image"]["input_size"]), image_patch=cfg["image"]["patch_size"],
        audio_size=tuple(cfg["audio"]["input_size"]), audio_patch=cfg["audio"]["patch_size"],
        fusion_arch=fusion["arch"], fusion_layers=fusion["layers"],
        fusion_tokens=(fusion["num_fusion_tkns"], fusion["num_aggr_image_tkns"], fusion["num_aggr_audio_tkns"]),
        fusion_attn_ratio=fusion["attn_ratio"], fusion_mlp_ratio=fusion["mlp_ratio"],
        fusion_num_heads=fusion["num_heads"], dense_impl=fusion["dense_impl"],
        drop_path=cfg["drop_path"], attn_drop=cfg["attn_drop"], drop=cfg["drop"],
        image_pretrained=cfg["image"]["pretrained"], audio_pretrained=cfg["audio"]["pretrained"])


def deepavfusion_pretrain(cfg: dict) -> AVMAE:
    dec = cfg["decoder"]
    return AVMAE(deepavfusion_encoder(cfg), decoder_dim=dec["embed_dim"], decoder_depth=dec["depth"],
                 decoder_num_heads=dec["num_heads"], decoder_mlp_ratio=dec["mlp_ratio"],
                 image_mask_ratio=cfg["image"]["mask_ratio"], audio_mask_ratio=cfg["audio"]["mask_ratio"],
                 image_norm_loss=cfg["image"]["norm_loss"], audio_norm_loss=cfg["audio"]["norm_loss"])


def unimodal_encoder(cfg: dict) -> UnimodalEncoder:
    modality = cfg["modality"]
    branch = cfg[modality]
    vit = ViT(input_size=tuple(branch["input_size"]), patch_size=branch["patch_size"],
              in_chans=3 if modality == "image" else 1, embed_dim=cfg["embed_dim"], depth=cfg["depth"],
              num_heads=cfg["num_heads"], mlp_ratio=cfg["mlp_ratio"], norm_eps=1e-6,
              drop_path=cfg["drop_path"], attn_drop=cfg["attn_drop"], drop=cfg["drop"])
    if branch["pretrained"]:
        load_branch_checkpoint(vit, branch["pretrained"], modality)
    return UnimodalEncoder(modality, vit)


def unimodal_pretrain(cfg: dict) -> UnimodalMAE:
    dec = cfg["decoder"]
    branch = cfg[cfg["modality"]]
    return UnimodalMAE(unimodal_encoder(cfg), decoder_dim=dec["embed_dim"], decoder_depth=dec["depth"],
                       decoder_num_heads=dec["num_heads"], decoder_mlp_ratio=dec["mlp_ratio"],
                       mask_ratio=branch["mask_ratio"], norm_pix_loss=branch["norm_loss"])


# (their presets are already in PRESETS: avfusion/models/presets.py)
register("deepavfusion", deepavfusion_pretrain, deepavfusion_encoder, DeepAVFusionModel)
register("mae", unimodal_pretrain, unimodal_encoder, UnimodalMAEModel)
