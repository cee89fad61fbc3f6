"""Sound of Pixels (Zhao et al., ECCV 2018; hangzhaomit/Sound-of-Pixels), the Table 1 "SoP" row.

Mix-and-separate with three nets, as in the official code (`models/{vision_net,audio_net,
synthesizer_net}.py`, `arch_frame=resnet18dilated`, `arch_sound=unet7`, `arch_synthesizer=linear`,
`img_pool=maxpool`, `img_activation=sigmoid`, `sound_activation=no`):
  - visual net: a ResNet-like CNN (BasicBlocks, last stage dilated instead of strided) ->
    3x3 conv to K channels -> spatial max-pool -> sigmoid: one K-vector per image;
  - audio net: a U-Net (input BatchNorm, 4x4 stride-2 down convs, bilinear up + 3x3 conv,
    skip concatenation) on the mixture spectrogram -> K feature maps at the input resolution;
  - synthesizer: per time-frequency bin, sum_k scale_k * v_k * a_k(f, t) + bias = mask logit.
Deviations (documented in baselines/README.md): the input is the project's log10-mel
(1, 128, 192) instead of a 256x256 log-frequency STFT, so the U-Net has `num_downs=6`
(128x192 -> 2x3) instead of 7; one frame per clip instead of 3 (the project's datasets give one);
the output is the logit, the separation task applies the sigmoid/BCE and the mel->STFT mapping.

    model = build_pretrain_model({"preset": "sound-of-pixels-tiny"})   # avfusion.models.registry
    logits = model(image, mix_audio)   # (B,3,S,S), (B,1,128,192) -> (B,1,128,192)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from avfusion.config import ConfigError
from avfusion.models.registry import register


@dataclass
class SoPConfig:
    channels: int = 32                      # K, the shared feature size (official num_channels=32)
    visual_widths: tuple[int, ...] = (64, 128, 256, 512)  # ResNet-18 stage widths
    visual_blocks: tuple[int, ...] = (2, 2, 2, 2)         # BasicBlocks per stage (ResNet-18)
    unet_ngf: int = 64                      # U-Net base width (official ngf=64)
    unet_downs: int = 6                     # 128x192 input -> 2x3 at the bottom

    def validate(self, prefix: str = "sop") -> None:
        check_sizes(self.visual_widths, self.visual_blocks, self.unet_downs, prefix)


def check_sizes(widths, blocks, downs: int, prefix: str) -> None:
    """ConfigError naming `<prefix>.<key>` for inconsistent visual stages or U-Net depth."""
    if len(widths) != len(blocks) or not widths:
        raise ConfigError(f"config keys '{prefix}.visual_widths' / '{prefix}.visual_blocks': need the same, "
                          f"non-zero length, got {list(widths)} and {list(blocks)}")
    if min(blocks) < 1:
        raise ConfigError(f"config key '{prefix}.visual_blocks': every stage needs >= 1 block, got {list(blocks)}")
    if downs < 5 or 128 % 2 ** downs or 192 % 2 ** downs:
        raise ConfigError(f"config key '{prefix}.unet_downs': {downs} must be 5 or 6 "
                          "(the 128x192 mel input must be divisible by 2**unet_downs)")


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with BN, identity (or 1x1 projection) shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        x = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(x)) + shortcut)


class VisualNet(nn.Module):
    """Image (B,3,S,S) -> pooled, sigmoid-activated visual feature (B, K)."""

    def __init__(self, cfg: SoPConfig):
        super().__init__()
        w0 = cfg.visual_widths[0]
        self.stem = nn.Sequential(nn.Conv2d(3, w0, 7, 2, 3, bias=False), nn.BatchNorm2d(w0), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(3, 2, 1))
        stages, in_ch = [], w0
        last = len(cfg.visual_widths) - 1
        for i, (width, n_blocks) in enumerate(zip(cfg.visual_widths, cfg.visual_blocks)):
            # resnet18dilated: the last stage keeps the resolution (stride 1, dilation 2)
            stride = 1 if i == 0 or i == last else 2
            dilation = 2 if i == last and i > 0 else 1
            blocks = [BasicBlock(in_ch, width, stride, dilation)]
            blocks += [BasicBlock(width, width, 1, dilation) for _ in range(n_blocks - 1)]
            stages.append(nn.Sequential(*blocks))
            in_ch = width
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Conv2d(in_ch, cfg.channels, 3, padding=1)

    def forward(self, image):
        x = self.fc(self.stages(self.stem(image)))  # (B, K, h, w)
        x = F.adaptive_max_pool2d(x, 1).flatten(1)  # (B, K)
        return torch.sigmoid(x)


class UNetBlock(nn.Module):
    """One U-Net level: down conv -> inner levels -> up conv, with the input concatenated (skip)."""

    def __init__(self, outer_ch: int, inner_ch: int, in_ch: int | None = None, inner: nn.Module | None = None,
                 outermost: bool = False):
        super().__init__()
        in_ch = outer_ch if in_ch is None else in_ch
        inner_out = inner_ch if inner is None else 2 * inner_ch  # the inner level returns [x ; up(x)]
        self.outermost = outermost
        down = [nn.Conv2d(in_ch, inner_ch, 4, 2, 1, bias=False)]
        if not outermost:
            down = [nn.LeakyReLU(0.2, inplace=False)] + down
            if inner is not None:
                down.append(nn.BatchNorm2d(inner_ch))
        up = [nn.ReLU(inplace=False), nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
              nn.Conv2d(inner_out, outer_ch, 3, padding=1, bias=outermost)]
        if not outermost:
            up.append(nn.BatchNorm2d(outer_ch))
        self.model = nn.Sequential(*down, *([inner] if inner is not None else []), *up)

    def forward(self, x):
        return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)


class AudioUNet(nn.Module):
    """Mixture spectrogram (B,1,H,W) -> K feature maps (B,K,H,W); H, W divisible by 2**num_downs."""

    def __init__(self, cfg: SoPConfig):
        super().__init__()
        ngf, downs = cfg.unet_ngf, cfg.unet_downs
        if downs < 5:
            raise ValueError(f"sound-of-pixels: unet_downs must be >= 5, got {downs}")
        block = UNetBlock(ngf * 8, ngf * 8)  # innermost
        for _ in range(downs - 5):
            block = UNetBlock(ngf * 8, ngf * 8, inner=block)
        block = UNetBlock(ngf * 4, ngf * 8, inner=block)
        block = UNetBlock(ngf * 2, ngf * 4, inner=block)
        block = UNetBlock(ngf, ngf * 2, inner=block)
        self.unet = UNetBlock(cfg.channels, ngf, in_ch=1, inner=block, outermost=True)
        self.bn0 = nn.BatchNorm2d(1)
        self.divisor = 2 ** downs

    def forward(self, spec):
        H, W = spec.shape[-2:]
        if H % self.divisor or W % self.divisor:
            raise ValueError(f"sound-of-pixels: spectrogram {H}x{W} not divisible by 2**unet_downs={self.divisor}")
        return self.unet(self.bn0(spec))  # (B, K, H, W)


class Synthesizer(nn.Module):
    """Mask logit per bin: sum_k scale_k * v_k * a_k(f, t) + bias (official InnerProd)."""

    def __init__(self, channels: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, visual, audio_maps):
        B, K, H, W = audio_maps.shape
        weights = (visual * self.scale).view(B, 1, K)  # (B, 1, K)
        logits = torch.bmm(weights, audio_maps.reshape(B, K, H * W))  # (B, 1, H*W)
        return logits.view(B, 1, H, W) + self.bias  # (B, 1, H, W)


class SoundOfPixels(nn.Module):
    """`model(image (B,3,S,S), mix_audio (B,1,128,192)) -> mask logits (B,1,128,192)`."""

    def __init__(self, cfg: SoPConfig | None = None):
        super().__init__()
        self.cfg = cfg or SoPConfig()
        self.net_frame = VisualNet(self.cfg)
        self.net_sound = AudioUNet(self.cfg)
        self.net_synthesizer = Synthesizer(self.cfg.channels)

    def forward(self, image, mix_audio):
        visual = self.net_frame(image)  # (B, K)
        audio_maps = self.net_sound(mix_audio)  # (B, K, 128, 192)
        return self.net_synthesizer(visual, audio_maps)  # (B, 1, 128, 192)


# ---------------------------------------------------------------------------------------------
# registry: family `sound-of-pixels`, presets sound-of-pixels-{paper,tiny,smoke}


@dataclass
class SoundOfPixelsModel:
    """Model dict of the `sound-of-pixels` family (validated like the model package's presets)."""
    family: Literal["sound-of-pixels"] = "sound-of-pixels"
    channels: int = 32
    visual_widths: list[int] = field(default_factory=lambda: [64, 128, 256, 512])
    visual_blocks: list[int] = field(default_factory=lambda: [2, 2, 2, 2])
    unet_ngf: int = 64
    unet_downs: int = 6

    def validate(self) -> None:
        check_sizes(self.visual_widths, self.visual_blocks, self.unet_downs, "model")


def build_sound_of_pixels(cfg: dict) -> SoundOfPixels:
    """Model dict (validated) -> SoundOfPixels."""
    return SoundOfPixels(SoPConfig(channels=cfg["channels"], visual_widths=tuple(cfg["visual_widths"]),
                                   visual_blocks=tuple(cfg["visual_blocks"]), unet_ngf=cfg["unet_ngf"],
                                   unet_downs=cfg["unet_downs"]))


# Sound of Pixels has no pretraining stage and no encoder in the sense of the encoder contract:
# the registry's "pretrain" factory builds the whole separation model, so that `model-summary`
# counts it and the separation task (`method: sound_of_pixels`) can build it from a preset.
register("sound-of-pixels", build_sound_of_pixels, None, config_cls=SoundOfPixelsModel, presets={
    "sound-of-pixels-paper": {},               # ResNet-18 (dilated) + U-Net ngf 64
    "sound-of-pixels-tiny": {"channels": 16, "visual_widths": [16, 32, 64, 128], "visual_blocks": [1, 1, 1, 1],
                             "unet_ngf": 16, "unet_downs": 6},
    "sound-of-pixels-lite": {"channels": 16, "visual_widths": [16, 32, 64, 128], "visual_blocks": [1, 1, 1, 1],
                             "unet_ngf": 16, "unet_downs": 6},   # = tiny (the tiny scale's preset size)
    "sound-of-pixels-smoke": {"channels": 8, "visual_widths": [8, 16], "visual_blocks": [1, 1], "unet_ngf": 8,
                              "unet_downs": 5}})
