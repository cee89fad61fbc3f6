"""Waveform -> log-mel exactly as the official code (spec 1.1), in pure torch.

16 kHz mono, 3 s = 48 000 samples; `pad_or_trim` appends time-reversed copies until long enough;
MelSpectrogram(n_fft 800, hop 250, win 800 periodic Hann, center reflect, power 2, 128 HTK mels
over 0-8000 Hz, norm None); log10(x + 1e-7); the last of the 193 frames is dropped -> (1, 128, 192).

    wave = pad_or_trim(read_audio(path, t0, t0 + 3.0))   # (48000,)
    spec = log_mel(wave)                                  # (1, 128, 192)
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch

SAMPLE_RATE = 16000
CLIP_SECONDS = 3.0
CLIP_SAMPLES = int(SAMPLE_RATE * CLIP_SECONDS)  # 48000
N_FFT = int(SAMPLE_RATE * 0.05)  # 800 (50 ms)
HOP = int(SAMPLE_RATE / 64)  # 250 (15.625 ms)
N_MELS = 128
N_FREQS = N_FFT // 2 + 1  # 401
N_FRAMES = CLIP_SAMPLES // HOP  # 192 (193 computed, last dropped)
LOG_EPS = 1e-7
SILENCE_ENERGY = 1e-5  # sum(x^2) below this counts as silent (the separation skip rule, spec 4.3)


def hz_to_mel(freq: float) -> float:
    return 2595.0 * math.log10(1.0 + freq / 700.0)


@lru_cache(maxsize=4)
def _mel_filterbank(n_freqs: int, n_mels: int, sample_rate: int, f_min: float, f_max: float) -> torch.Tensor:
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs)  # (F,)
    m_pts = torch.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2)
    f_pts = 700.0 * (10 ** (m_pts / 2595.0) - 1.0)  # (M+2,) HTK mel -> Hz
    f_diff = f_pts[1:] - f_pts[:-1]  # (M+1,)
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)  # (F, M+2)
    down = -slopes[:, :-2] / f_diff[:-1]  # (F, M)
    up = slopes[:, 2:] / f_diff[1:]  # (F, M)
    return torch.clamp(torch.minimum(down, up), min=0.0)


def mel_filterbank() -> torch.Tensor:
    """Unnormalised HTK triangular filterbank `fb (401, 128)`: mel = power_spec @ fb.

    The separation task maps a mel mask back to linear bins with `M_lin = fb @ M_mel` (spec 4.3).
    """
    return _mel_filterbank(N_FREQS, N_MELS, SAMPLE_RATE, 0.0, SAMPLE_RATE / 2).clone()


@lru_cache(maxsize=2)
def _hann(n: int) -> torch.Tensor:
    return torch.hann_window(n, periodic=True)


def stft(wave: torch.Tensor) -> torch.Tensor:
    """Complex STFT with the MelSpectrogram's parameters: `(..., T) -> (..., 401, 1 + T // 250)`."""
    shape = wave.shape
    flat = wave.reshape(-1, shape[-1])  # (N, T)
    spec = torch.stft(flat, N_FFT, hop_length=HOP, win_length=N_FFT, window=_hann(N_FFT).to(wave.device),
                      center=True, pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
    return spec.reshape(*shape[:-1], *spec.shape[-2:])  # (..., 401, frames)


def istft(spec: torch.Tensor, length: int = CLIP_SAMPLES) -> torch.Tensor:
    """Inverse of `stft` (same window, hop, centring): `(..., 401, frames) -> (..., length)`."""
    shape = spec.shape
    flat = spec.reshape(-1, *shape[-2:])  # (N, 401, frames)
    wave = torch.istft(flat, N_FFT, hop_length=HOP, win_length=N_FFT, window=_hann(N_FFT).to(spec.device),
                       center=True, normalized=False, onesided=True, length=length)
    return wave.reshape(*shape[:-2], length)


def mel_power(wave: torch.Tensor) -> torch.Tensor:
    """Mel power spectrogram of all frames: `(..., T) -> (..., 128, 1 + T // 250)`."""
    spec = stft(wave)
    power = (spec * spec.conj()).real  # (..., 401, frames) |X|^2 (6x cheaper than abs().pow(2))
    if power.device.type == "cpu" and power.dtype == torch.float32 and not power.requires_grad:
        # 128 x 401 with 790 non-zeros, 2.4x faster; one clip or a batch give the same numbers (column by column)
        flat = power.movedim(-2, 0).reshape(N_FREQS, -1)  # (401, batch * frames)
        mel = _mel_filterbank_csr() @ flat  # (128, batch * frames)
        return mel.reshape(N_MELS, *power.shape[:-2], power.shape[-1]).movedim(0, -2)  # (..., 128, frames)
    fb = _mel_filterbank(N_FREQS, N_MELS, SAMPLE_RATE, 0.0, SAMPLE_RATE / 2).to(power)
    return torch.matmul(power.transpose(-1, -2), fb).transpose(-1, -2)  # (..., 128, frames)


def frames_mel_power(frames: torch.Tensor) -> torch.Tensor:
    """Mel power of STFT frames given as samples `(n, 800)` (each already cut and padded as `stft` would):
    `(128, n)`, the same numbers as the matching columns of `mel_power` (same window multiply, real FFT,
    |X|^2 and sparse mel projection, column by column)."""
    n = frames.shape[0]
    # + one dummy frame: the elementwise kernels' scalar tail (< 2 SIMD vectors) falls on it, so every real
    # frame's |X|^2 goes through the vectorised path, as all but the last frame of `mel_power` do (the scalar
    # complex product can differ in the last bit)
    frames = torch.cat([frames, frames[-1:]])
    spec = torch.fft.rfft(frames * _hann(N_FFT), dim=-1)  # (n + 1, 401)
    power = (spec * spec.conj()).real[:n].T  # (401, n)
    return _mel_filterbank_csr() @ power.contiguous()  # (128, n)


@lru_cache(maxsize=1)
def _mel_filterbank_csr() -> torch.Tensor:
    """The (128, 401) mel filterbank as a sparse CSR matrix (each bin feeds at most 2 triangles)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta state"
        return _mel_filterbank(N_FREQS, N_MELS, SAMPLE_RATE, 0.0, SAMPLE_RATE / 2).T.contiguous().to_sparse_csr()


def log_mel(wave: torch.Tensor) -> torch.Tensor:
    """Model input: `(48000,)` or `(B, 48000)` -> `(1, 128, 192)` or `(B, 1, 128, 192)`."""
    if wave.shape[-1] != CLIP_SAMPLES:
        raise ValueError(f"log_mel expects {CLIP_SAMPLES} samples, got shape {tuple(wave.shape)}; use pad_or_trim")
    return log_mel_from_power(mel_power(wave.float()))


def log_mel_from_power(power: torch.Tensor) -> torch.Tensor:
    """`mel_power(wave)` `(..., 128, 193)` -> the model input `(..., 1, 128, 192)` (as log_mel)."""
    spec = torch.log10(power + LOG_EPS)[..., :-1]  # (..., 128, 192): last frame dropped
    return spec.unsqueeze(-3)  # (..., 1, 128, 192)


def pad_or_trim(wave: torch.Tensor, n: int = CLIP_SAMPLES) -> torch.Tensor:
    """Official `Pad`: while shorter than n, append the time-reversed signal so far; then truncate."""
    if wave.shape[-1] == 0:
        raise ValueError("pad_or_trim: empty waveform")
    while wave.shape[-1] < n:
        wave = torch.cat([wave, torch.flip(wave, dims=(-1,))], dim=-1)
    return wave[..., :n]


def random_gain(wave: torch.Tensor, low_db: float = -6.0, high_db: float = 6.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Official `RandomVol`: gain ~ U(low, high) dB, then clamp to [-1, 1] (train only)."""
    return apply_gain(wave, draw_gain_db(low_db, high_db, generator))


def apply_gain(wave: torch.Tensor, gain_db: float) -> torch.Tensor:
    """`random_gain` with its draw given: wave * 10^(gain_db / 20), clamped to [-1, 1]."""
    return torch.clamp(wave * 10.0 ** (gain_db / 20.0), -1.0, 1.0)


def draw_gain_db(low_db: float = -6.0, high_db: float = 6.0, generator: torch.Generator | None = None) -> float:
    """The gain of random_gain in dB: one draw of torch's RNG (or `generator`)."""
    return low_db + (high_db - low_db) * torch.rand((), generator=generator).item()


def is_silent(wave: torch.Tensor, threshold: float = SILENCE_ENERGY) -> bool:
    """True when sum(x^2) < threshold: such a source is skipped and counted by separation (spec 4.3)."""
    return float(wave.double().pow(2).sum()) < threshold


@lru_cache(maxsize=16)
def _sinc_kernel(orig: int, new: int, width: int = 6, rolloff: float = 0.99) -> tuple[torch.Tensor, int]:
    """Hann-windowed sinc kernel of torchaudio.functional.resample's defaults (the official video path)."""
    base = min(orig, new) * rolloff
    half = math.ceil(width * orig / base)
    idx = torch.arange(-half, half + orig, dtype=torch.float64)[None, None] / orig  # (1, 1, K)
    # float32 division then float64 sum: the exact arithmetic of torchaudio's kernel
    t = torch.arange(0, -new, -1)[:, None, None] / new + idx  # (new, 1, K)
    t = (t * base).clamp(-width, width)
    window = torch.cos(t * math.pi / width / 2) ** 2
    t = t * math.pi
    scale = base / orig
    kernel = torch.where(t == 0, torch.tensor(1.0, dtype=torch.float64), torch.sin(t) / t)
    return (kernel * window * scale).float(), half


def resample(wave: torch.Tensor, orig_rate: int, new_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Band-limited sinc resampling `(T,) -> (ceil(T * new / orig),)`, same numbers as torchaudio's default."""
    if orig_rate == new_rate:
        return wave
    g = math.gcd(int(orig_rate), int(new_rate))
    orig, new = int(orig_rate) // g, int(new_rate) // g
    kernel, half = _sinc_kernel(orig, new)
    length = wave.shape[-1]
    x = torch.nn.functional.pad(wave.reshape(1, 1, length).float(), (half, half + orig))  # (1, 1, T + pad)
    y = torch.nn.functional.conv1d(x, kernel, stride=orig)  # (1, new, frames)
    y = y.transpose(1, 2).reshape(-1)  # (frames * new,)
    target = math.ceil(new * length / orig)
    return y[:target]
