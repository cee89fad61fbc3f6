"""Load an encoder from a pretraining checkpoint (ours or the released DeepAVFusion ones).

    encoder = build_encoder(model_config("deepavfusion-vggsound"))
    load_encoder_from_checkpoint(encoder, "checkpoints/checkpoint_latest.pth")
"""
from __future__ import annotations

from torch import nn

from .vit import read_state_dict


def load_encoder_from_checkpoint(encoder: nn.Module, path_or_dict, prefix: str = "encoder.") -> dict:
    """Take `state_dict` (else `model`), keep keys under `prefix` (stripped), load strictly.

    Raises ValueError listing missing/unexpected keys and shape mismatches. Returns the loaded dict.
    """
    state = read_state_dict(path_or_dict, "encoder checkpoint")
    state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    where = path_or_dict if not isinstance(path_or_dict, dict) else "<dict>"
    if not state:
        raise ValueError(f"encoder checkpoint {where}: no keys start with {prefix!r}")
    own = encoder.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad = [f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
           if k in state and state[k].shape != v.shape]
    if missing or unexpected or bad:
        raise ValueError(f"encoder checkpoint {where} does not match the encoder: "
                         f"missing {missing[:10]} ({len(missing)}), unexpected {unexpected[:10]} "
                         f"({len(unexpected)}), shape mismatches {bad[:10]}")
    encoder.load_state_dict(state, strict=True)
    return state
