"""Audio-visual mixup with label smoothing, as the official fine-tuning (`eval_finetune.AVMixup`, spec 4.2).

Each sample i is mixed with sample B-1-i (the batch flipped), with its own lambda ~ Beta(alpha, alpha)
applied with probability `prob` (timm `Mixup._params_per_elem`, numpy RNG). Image pixels and
log-mel spectrograms are mixed linearly with the same lambda; targets are smoothed one-hot (or
multi-hot) vectors mixed the same way. No cutmix.

    mixup = AVMixup(alpha=1.0, prob=1.0, label_smoothing=0.1, num_classes=C)
    image, audio, soft_target = mixup(image, audio, label)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def smooth_targets(target: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """Long labels (B,) or multi-hot (B, C) -> (B, C) with on = 1 - s + s/C, off = s/C."""
    off = smoothing / num_classes
    on = 1.0 - smoothing + off
    if target.ndim == 1:
        hot = torch.nn.functional.one_hot(target.long(), num_classes).float()
    else:
        hot = (target > 0.5).float()
    return hot * on + (1.0 - hot) * off


@dataclass
class AVMixup:
    alpha: float = 1.0
    prob: float = 1.0
    label_smoothing: float = 0.1
    num_classes: int = 0

    def lambdas(self, batch: int) -> np.ndarray:
        """Per-element lambda (B,): Beta(alpha, alpha) with probability prob, else 1."""
        if self.alpha <= 0:
            return np.ones(batch, dtype=np.float32)
        lam = np.random.beta(self.alpha, self.alpha, size=batch)
        return np.where(np.random.rand(batch) < self.prob, lam, 1.0).astype(np.float32)

    def __call__(self, image: torch.Tensor, audio: torch.Tensor, target: torch.Tensor):
        """image (B,3,S,S), audio (B,1,F,T), target (B,) or (B,C) -> mixed image, audio, soft target (B,C)."""
        if self.num_classes <= 0:
            raise ValueError("AVMixup.num_classes must be set")
        lam = torch.from_numpy(self.lambdas(image.shape[0])).to(image.device)
        lam_x = lam[:, None, None, None]  # (B,1,1,1)
        image = image * lam_x + image.flip(0) * (1.0 - lam_x)
        audio = audio * lam_x + audio.flip(0) * (1.0 - lam_x)
        y = smooth_targets(target, self.num_classes, self.label_smoothing)  # (B, C)
        y = y * lam[:, None] + y.flip(0) * (1.0 - lam[:, None])
        return image, audio, y
