"""Audio-visual classifier: linear heads on mean-pooled image / audio / fusion tokens (official `models/classifier.py`).

    heads = ClassifierHeads(embed_dim=D, num_classes=C, heads=("image", "audio", "fusion"), input_norm=True)
    model = AVClassifier(encoder, num_classes=C, freeze_encoder=True, input_norm=True)   # linear probe
    logits = model(image, audio)       # {"image": (B,C), "audio": (B,C), "fusion": (B,C), "all": mean}

- linear probe: `input_norm=True` -> BatchNorm1d(D, affine=False, eps=1e-6) before each head; frozen
  encoder kept in eval mode (spec 4.1).
- fine-tuning: no BN, trainable encoder; `init_head_bias(class_freq)` sets every head's bias to
  log((f + 1e-3) / (1 - f + 1e-3)) (spec 4.2).
Heads: xavier-uniform weights, zero bias. Parameter names match the official AVClassifier
(`image_head`, `image_norm`, ...), so `ClassifierHeads` weights load into an `AVClassifier`.
"""
from __future__ import annotations

import torch
from torch import nn

HEAD_NAMES = ("image", "audio", "fusion")


def check_heads(heads: list[str]) -> None:
    """A job's `heads:` key: distinct names from HEAD_NAMES, at least one (ConfigError otherwise)."""
    from ..config import ConfigError

    bad = [h for h in heads if h not in HEAD_NAMES]
    if bad or not heads or len(set(heads)) != len(heads):
        raise ConfigError(f"config key 'heads': {heads} must be distinct names from {list(HEAD_NAMES)}")


def pool_features(encoder_out) -> dict[str, torch.Tensor]:
    """EncoderOutput (image (B,Nv,D), audio (B,Na,D), fusion (B,F,D)) -> mean over tokens, {name: (B,D)}."""
    return {name: getattr(encoder_out, name).mean(dim=1) if getattr(encoder_out, name).shape[1] > 0 else None
            for name in HEAD_NAMES}


class ClassifierHeads(nn.Module):
    def __init__(self, embed_dim: int, num_classes: int, heads=HEAD_NAMES, input_norm: bool = False):
        super().__init__()
        unknown = [h for h in heads if h not in HEAD_NAMES]
        if unknown or not heads:
            raise ValueError(f"heads: {list(heads)} must be a non-empty subset of {list(HEAD_NAMES)}")
        self.heads = tuple(h for h in HEAD_NAMES if h in heads)
        self.num_classes, self.input_norm = num_classes, input_norm
        for name in self.heads:
            if input_norm:
                setattr(self, f"{name}_norm", nn.BatchNorm1d(embed_dim, affine=False, eps=1e-6))
            head = nn.Linear(embed_dim, num_classes)
            nn.init.xavier_uniform_(head.weight)
            nn.init.zeros_(head.bias)
            setattr(self, f"{name}_head", head)

    def init_head_bias(self, class_freq: torch.Tensor) -> None:
        """bias = log((f + 1e-3) / (1 - f + 1e-3)) from training class frequencies f (C,)."""
        bias = torch.log((class_freq + 1e-3) / (1 - class_freq + 1e-3))
        for name in self.heads:
            getattr(self, f"{name}_head").bias.data.copy_(bias)

    def classify(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{name: (B,D)} -> {name: logits (B,C)} for each head, plus "all" = mean of the heads' logits."""
        logits = {}
        for name in self.heads:
            x = features.get(name)
            if x is None:
                raise ValueError(f"head {name!r}: the encoder gives no {name} tokens; drop it from `heads`")
            if self.input_norm:
                x = getattr(self, f"{name}_norm")(x)
            logits[name] = getattr(self, f"{name}_head")(x)
        logits["all"] = torch.stack([logits[n] for n in self.heads]).mean(0)  # (B, C)
        return logits

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.classify(features)


class AVClassifier(ClassifierHeads):
    """Encoder + heads; with `freeze_encoder` the encoder has no grads and stays in eval mode."""

    def __init__(self, encoder: nn.Module, num_classes: int, heads=HEAD_NAMES, freeze_encoder: bool = False,
                 input_norm: bool = False):
        super().__init__(encoder.embed_dim, num_classes, heads, input_norm)
        self.encoder = encoder
        self.freeze_encoder = freeze_encoder
        if freeze_encoder:
            for p in self.encoder.parameters():
                p.requires_grad = False

    def features(self, image: torch.Tensor, audio: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_encoder):
            return pool_features(self.encoder(image, audio))

    def forward(self, image: torch.Tensor, audio: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.classify(self.features(image, audio))

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.train(False)
        return self
