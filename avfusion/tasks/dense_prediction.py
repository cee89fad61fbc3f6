"""What the dense-prediction jobs (separation, segmentation, localization) share beyond the job
contract of `common.py`: the fine-tuning optimiser, a frozen-or-not encoder forward, and the
example dump for the report's figures.

Fine-tuning follows spec 4: AdamW (0.9, 0.999), wd 0.05, layer-wise lr decay 0.75 (encoder
layer ids from `avfusion.optim`, heads at depth + 1), warmup + cosine.
"""
from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..engine import OptimConfig
from ..io import _atomic_write_bytes
from ..models.registry import build_encoder
from .common import JobConfig, TrainEvalDataConfig, start_job, write_job_metrics


def finetune_optim(**overrides) -> OptimConfig:
    """Spec 4 downstream defaults (AdamW 0.9/0.999, wd 0.05, layer decay 0.75, blr 3e-4)."""
    base = dict(optimizer="adamw", blr=3e-4, betas=(0.9, 0.999), weight_decay=0.05, layer_decay=0.75,
                epochs=1, warmup_epochs=0.0, batch_size=8)
    base.update(overrides)
    return OptimConfig(**base)


@dataclass
class DensePredictionConfig(JobConfig):
    """The keys every dense-prediction job has, after the job header."""
    freeze_encoder: bool = False
    n_examples: int = 4                  # examples.npz: this many eval items for the report's figures
    data: TrainEvalDataConfig = field(default_factory=TrainEvalDataConfig)
    optim: OptimConfig = field(default_factory=finetune_optim)


def start_dense_job(cfg: DensePredictionConfig) -> tuple[float, torch.device, nn.Module]:
    """The start of a dense-prediction job: (start time, device from `start_job`, the task encoder:
    `model` + `init.checkpoint`, `data.image_size` checked, frozen with `freeze_encoder`)."""
    t0 = time.perf_counter()
    device = start_job(cfg)
    return t0, device, build_encoder(cfg.model, cfg.init.checkpoint, cfg.data.image_size, cfg.freeze_encoder)


def run_encoder(encoder: nn.Module, frozen: bool, image: torch.Tensor, audio: torch.Tensor, return_embs: bool):
    """Encoder forward; a frozen encoder runs in eval mode without building a graph."""
    if frozen:
        encoder.eval()
        with torch.no_grad():
            return encoder(image, audio, return_embs=return_embs)
    return encoder(image, audio, return_embs=return_embs)


def eval_loader(dataset, batch_size: int, workers: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)


def denormalize(image: torch.Tensor) -> np.ndarray:
    """ImageNet-normalised (B,3,S,S) -> uint8 (B,S,S,3) for figures."""
    from ..transforms import IMAGENET_MEAN, IMAGENET_STD

    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    rgb = (image.detach().cpu().float() * std + mean).clamp(0, 1)  # (B, 3, S, S)
    return (rgb.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def stack_examples(examples: dict[str, list], n: int) -> dict[str, np.ndarray]:
    """{name: [batch tensors (B, ...)]} -> {name: the first `n` items (n, ...)} (names with no batch dropped)."""
    return {k: torch.cat(v)[:n].numpy() for k, v in examples.items() if v}


def write_examples(path: Path, **arrays) -> Path:
    """Atomic `np.savez_compressed` of a few example outputs (for the report's figures)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return _atomic_write_bytes(path, buf.getvalue())


def finish_run(out_dir: Path, cfg: DensePredictionConfig, result, metrics: dict, examples: dict | None,
               t0: float) -> dict:
    """Write `examples.npz` (if any) and, last, `metrics.json` (+ the training summary)."""
    if examples:
        write_examples(out_dir / "examples.npz", **examples)
    metrics.update(loss=float(result.history[-1]["loss"]), epochs=result.epochs_done, steps=result.steps)
    return write_job_metrics(out_dir, cfg, metrics, t0)
