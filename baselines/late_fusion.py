"""Table 4 / Table 3 encoder settings as presets of the DeepAVFusion family (a variant is data).

Late-fusion AV-MAE (Table 3 "Audio-Visual MAE", Table 4 row 5, Table 5 row 1), mid fusion
(row 4), no fusion (row 6) and token fusion (row 3) are the DeepAVFusion encoder + AV-MAE
objective with another `fusion.arch` / `fusion.layers` (spec 2.2; 0-based layer ids):

    late   = dense block at the last layer only       fusion.layers = d-1            (11 at ViT-B)
    mid    = dense blocks at the last 3 layers        fusion.layers = d-3-d-2-d-1    (9-10-11)
    none   = no fusion layer                          fusion.layers = 'none'
    token  = token fusion (MBT-like) at every layer   fusion.arch = token

Presets `{late,mid,no,token}-fusion-{paper,tiny,smoke}` start from `deepavfusion-{vggsound,tiny,smoke}`;
baselines/README.md gives the reasons (mid = 3 layers per Table 6a; dense per §4.4 and Table 5).

    avfusion model-summary --preset late-fusion-paper
    avfusion pretrain --config ... --set model.preset=late-fusion-tiny --out DIR
"""
from __future__ import annotations

from avfusion.config import merge
from avfusion.models.presets import PRESETS, model_config, register_preset

SCALE_BASE = {"paper": "deepavfusion-vggsound", "tiny": "deepavfusion-tiny", "smoke": "deepavfusion-smoke"}


def fusion_settings(depth: int) -> dict[str, dict]:
    """Variant name -> `fusion` overrides for an encoder of `depth` layers."""
    if depth < 3:
        mid_layers = "-".join(str(i) for i in range(depth))  # fewer than 3 layers: every layer
    else:
        mid_layers = f"{depth - 3}-{depth - 2}-{depth - 1}"
    return {
        "late-fusion": {"arch": "dense", "layers": depth - 1},
        "mid-fusion": {"arch": "dense", "layers": mid_layers},
        "no-fusion": {"layers": "none"},
        "token-fusion": {"arch": "token", "layers": "all"},
    }


def register_presets() -> None:
    for scale, base_name in SCALE_BASE.items():
        base = PRESETS[base_name]
        depth = model_config(base_name)["depth"]
        for variant, fusion in fusion_settings(depth).items():
            register_preset(f"{variant}-{scale}", merge(base, {"fusion": fusion}))


register_presets()
