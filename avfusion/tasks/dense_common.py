"""What the separation, segmentation and localization jobs share: config sections, the encoder
(built from the model registry, `init.checkpoint` loaded strictly from `encoder.*`, optionally
frozen), evaluation loaders and the example dump for the report's figures.

Fine-tuning follows spec 4: AdamW (0.9, 0.999), wd 0.05, layer-wise lr decay 0.75 (encoder
layer ids from `avfusion.optim`, heads at depth + 1), warmup + cosine.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..config import ConfigError
from ..engine import OptimConfig
from ..io import _atomic_write_bytes


def finetune_optim(**overrides) -> OptimConfig:
    """Spec 4 downstream defaults (AdamW 0.9/0.999, wd 0.05, layer decay 0.75, blr 3e-4)."""
    base = dict(optimizer="adamw", blr=3e-4, betas=(0.9, 0.999), weight_decay=0.05, layer_decay=0.75,
                epochs=1, warmup_epochs=0.0, batch_size=8)
    base.update(overrides)
    return OptimConfig(**base)


@dataclass
class InitConfig:
    checkpoint: str = ""          # pretraining run folder or checkpoint file ('' = random encoder)


@dataclass
class DataConfig:
    manifest: str = ""            # folder with manifest.csv (+ pairs.csv for separation)
    train_split: str = "train"
    eval_split: str = "test"      # several splits joined by '+', e.g. "val+test"
    image_size: int = 224
    workers: int = 0
    eval_batch_size: int = 16


def resolve_checkpoint_file(path: str | Path) -> Path:
    """A run folder (-> checkpoints/checkpoint_latest.pth) or a checkpoint file; errors name the path."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoints" / "checkpoint_latest.pth"
    if not path.is_file():
        raise FileNotFoundError(f"config key 'init.checkpoint': checkpoint not found: {path}")
    return path


def build_task_encoder(model_section: dict, init: InitConfig, image_size: int, freeze: bool) -> nn.Module:
    """Registry encoder; `init.checkpoint` loads `encoder.*` strictly; frozen -> no grads."""
    from ..models.checkpoint import load_encoder_from_checkpoint
    from ..models.registry import build_encoder

    encoder = build_encoder(dict(model_section))
    grid = tuple(encoder.image_grid)
    patch = getattr(getattr(encoder, "image", None), "patch_size", None)
    expected = tuple(getattr(getattr(encoder, "image", None), "input_size", (image_size, image_size)))
    if expected != (image_size, image_size):
        raise ConfigError(f"config key 'data.image_size': {image_size} does not match the encoder's image "
                          f"input {list(expected)} (grid {grid}, patch {patch}); set data.image_size={expected[0]}")
    if init.checkpoint:
        path = resolve_checkpoint_file(init.checkpoint)
        load_encoder_from_checkpoint(encoder, str(path))
        print(f"init.checkpoint: loaded encoder.* from {path}")
    if freeze:
        for p in encoder.parameters():
            p.requires_grad_(False)
    return encoder


def run_encoder(encoder: nn.Module, frozen: bool, image: torch.Tensor, audio: torch.Tensor, return_embs: bool):
    """Encoder forward; a frozen encoder runs in eval mode without building a graph."""
    if frozen:
        encoder.eval()
        with torch.no_grad():
            return encoder(image, audio, return_embs=return_embs)
    return encoder(image, audio, return_embs=return_embs)


def eval_dataset(make, eval_split: str):
    """`make(split)` for each '+'-joined split of `eval_split`, concatenated in that order."""
    from torch.utils.data import ConcatDataset

    splits = [s for s in eval_split.split("+") if s]
    if not splits:
        raise ConfigError(f"config key 'data.eval_split': no split in {eval_split!r}")
    sets = [make(split) for split in splits]
    return sets[0] if len(sets) == 1 else ConcatDataset(sets)


def eval_loader(dataset, batch_size: int, workers: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)


def denormalize(image: torch.Tensor) -> np.ndarray:
    """ImageNet-normalised (B,3,S,S) -> uint8 (B,S,S,3) for figures."""
    from ..transforms import IMAGENET_MEAN, IMAGENET_STD

    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    rgb = (image.detach().cpu().float() * std + mean).clamp(0, 1)  # (B, 3, S, S)
    return (rgb.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def write_examples(path: Path, **arrays) -> Path:
    """Atomic `np.savez_compressed` of a few example outputs (for the report's figures)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return _atomic_write_bytes(path, buf.getvalue())


def finish_run(out_dir: Path, cfg, result, metrics: dict, examples: dict | None, t0: float) -> dict:
    """Write a dense task's `examples.npz` (if any) and, last, its `metrics.json` (+ training summary)."""
    import time

    from ..provenance import write_metrics

    if examples:
        write_examples(out_dir / "examples.npz", **examples)
    metrics.update(loss=float(result.history[-1]["loss"]), epochs=result.epochs_done, steps=result.steps)
    write_metrics(out_dir, metrics, cfg=cfg, scale=cfg.scale, seed=cfg.seed,
                  manifest=Path(cfg.data.manifest) / "manifest.csv", wall_s=time.perf_counter() - t0)
    return metrics
