"""A run folder's checkpoint: where it is, how a config key names one, loading it, the RNG states it
saves, and the rule that a checkpoint resumes only with the config it was made with.

    path = resolve_checkpoint("results/runs/tiny/pretrain/deepavfusion", key="init.checkpoint")
    ckpt = load_checkpoint(path)     # {state_dict, optimizer, scaler, epoch, step, rng, sampler, config, config_hash}

Written by `avfusion.engine.train` after every epoch (docs/interfaces.md gives the keys).
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import ConfigError, config_differences, numbers_hash


def checkpoint_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints" / "checkpoint_latest.pth"


def resolve_checkpoint(path: str | Path, key: str | None = None) -> Path:
    """A run folder (-> its checkpoints/checkpoint_latest.pth) or a checkpoint file; the error names
    the path and, given `key`, the config key it came from."""
    path = Path(path)
    if path.is_dir():
        path = checkpoint_path(path)
    if not path.is_file():
        where = f"config key '{key}': " if key else ""
        raise FileNotFoundError(f"{where}checkpoint not found: {path}")
    return path


def load_checkpoint(path: str | Path) -> dict:
    return torch.load(resolve_checkpoint(path), map_location="cpu", weights_only=False)


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def check_resume_config(ckpt: dict, run_config: Any, ckpt_file: Path) -> None:
    """Refuse to resume a checkpoint made with a config whose numbers differ from `run_config`'s."""
    saved_hash = ckpt.get("config_hash")
    if saved_hash is not None and saved_hash == numbers_hash(run_config):
        return
    if ckpt.get("config") is None:
        return  # a checkpoint of an older version without its config: nothing to compare
    differences = config_differences(ckpt["config"], run_config)
    if differences:
        raise ConfigError(f"{ckpt_file}: this run folder's checkpoint was made with another config; "
                          f"differing keys: {', '.join(differences)}. Use the checkpoint's values to "
                          f"resume, or --fresh to start afresh (the old run is moved aside)")
