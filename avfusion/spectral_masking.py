"""Mel-grid mask -> separated waveform (official `eval_avsrcsep.py::SpectrogramMasking`, spec 4.3).

1. complex STFT of the mixture waveform (n_fft 800, hop 250, Hann, centred) -> (401, 193);
2. the mel mask (128, 192) gets a zero column for the dropped 193rd frame;
3. linear-frequency mask M_lin[f, t] = sum_m fb[f, m] * M_mel[m, t] with the unnormalised HTK
   filterbank of the model's MelSpectrogram (adjacent triangles sum to 1: an interpolation);
4. inverse STFT of M_lin * STFT(mix) with the mixture phase -> 48 000 samples.
Every step is differentiable, so a waveform loss can train through it.

    est = separate(mix_wave (B, 48000), mask_logits (B, 1, 128, 192))   # (B, 48000)
"""
from __future__ import annotations

import torch

from .audio import CLIP_SAMPLES, mel_filterbank, mel_power, stft, istft

MEL_EPS = 1e-10


def mel_mask_to_linear(mel_mask: torch.Tensor) -> torch.Tensor:
    """(B, 128, T_mel) with T_mel = 192 (a zero last frame is appended) or 193 -> (B, 401, 193)."""
    if mel_mask.shape[-1] == 192:
        pad = torch.zeros(*mel_mask.shape[:-1], 1, dtype=mel_mask.dtype, device=mel_mask.device)
        mel_mask = torch.cat((mel_mask, pad), dim=-1)  # (B, 128, 193)
    fb = mel_filterbank().to(mel_mask)  # (401, 128)
    return torch.einsum("bmt,fm->bft", mel_mask, fb)  # (B, 401, 193)


def apply_mel_mask(mix_wave: torch.Tensor, mel_mask: torch.Tensor, length: int = CLIP_SAMPLES) -> torch.Tensor:
    """mix_wave (B, T), mel_mask (B, 1, 128, T_mel) or (B, 128, T_mel) in [0, 1] -> waveform (B, length)."""
    if mel_mask.ndim == 4:
        mel_mask = mel_mask[:, 0]  # (B, 128, T_mel)
    if mix_wave.ndim != 2 or mel_mask.ndim != 3 or mix_wave.shape[0] != mel_mask.shape[0]:
        raise ValueError(f"expected mix_wave (B, T) and mel_mask (B, [1,] 128, T_mel); "
                         f"got {tuple(mix_wave.shape)} and {tuple(mel_mask.shape)}")
    spec_mix = stft(mix_wave.float())  # (B, 401, 193) complex
    mask_lin = mel_mask_to_linear(mel_mask.float())  # (B, 401, 193)
    if mask_lin.shape[-1] != spec_mix.shape[-1]:
        raise ValueError(f"mask has {mask_lin.shape[-1]} frames, the mixture STFT {spec_mix.shape[-1]}")
    return istft(mask_lin * spec_mix, length=length)  # (B, length)


def separate(mix_wave: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """Official path: sigmoid(logits) as the mel mask, applied to the mixture -> (B, 48000)."""
    return apply_mel_mask(mix_wave, torch.sigmoid(mask_logits))


def ideal_ratio_mask(source_wave: torch.Tensor, other_wave: torch.Tensor) -> torch.Tensor:
    """Oracle mel-domain ratio mask S/(S+O) of mel power spectra: (B, T) x2 -> (B, 1, 128, 192)."""
    src, other = mel_power(source_wave.float()), mel_power(other_wave.float())  # (B, 128, 193)
    return (src / (src + other + MEL_EPS))[:, None, :, :-1]  # (B, 1, 128, 192)
