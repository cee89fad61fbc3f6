"""avfusion.audio reproduces the official torchaudio pipeline (spec 1.1) without torchaudio at runtime."""
import math

import pytest
import soundfile
import torch
import torchaudio

from avfusion import audio


def _reference_log_mel(wave: torch.Tensor) -> torch.Tensor:
    """The official transform: MelSpectrogram(16000, n_fft=800, hop=250, n_mels=128) + Log + [..., :-1]."""
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=800, hop_length=250, n_mels=128)
    return torch.log10(mel(wave.unsqueeze(0)) + 1e-7)[..., :-1]  # (1, 128, 192)


def _fixed_waveforms(testdata):
    t = torch.arange(audio.CLIP_SAMPLES) / audio.SAMPLE_RATE
    sine = 0.5 * torch.sin(2 * math.pi * 440.0 * t) + 0.1 * torch.sin(2 * math.pi * 3000.0 * t)
    noise = torch.randn(audio.CLIP_SAMPLES, generator=torch.Generator().manual_seed(0)) * 0.1
    real, rate = soundfile.read(testdata / "deepavfusion/demos/demo1_orig.wav", dtype="float32")
    assert rate == 16000 and real.shape == (48000,)
    return {"sine": sine, "noise": noise, "real_duet": torch.from_numpy(real)}


def test_log_mel_equals_torchaudio_on_fixed_waveforms(testdata):
    # Tolerance: both sides run torch.stft with the same window and the same filterbank arithmetic,
    # so they agree to float32 round-off; log10 maps a relative error e to an absolute 0.43 e, so 1e-5
    # absolute on values in [-7, 4] leaves room only for summation-order noise, nothing systematic.
    for name, wave in _fixed_waveforms(testdata).items():
        ours = audio.log_mel(wave)
        ref = _reference_log_mel(wave)
        assert ours.shape == (1, 128, 192), name
        assert torch.allclose(ours, ref, rtol=0, atol=1e-5), (name, (ours - ref).abs().max())


def test_log_mel_batched_and_shapes():
    waves = torch.randn(3, audio.CLIP_SAMPLES) * 0.1
    batch = audio.log_mel(waves)
    assert batch.shape == (3, 1, 128, 192)
    assert torch.allclose(batch[1], audio.log_mel(waves[1]), atol=1e-6)
    assert audio.mel_power(waves[0]).shape == (128, 193)  # 1 + 48000 / 250 frames before the drop
    with pytest.raises(ValueError, match="48000"):
        audio.log_mel(torch.zeros(47999))


def test_filterbank_equals_torchaudio_htk_unnormalised():
    ref = torchaudio.functional.melscale_fbanks(401, 0.0, 8000.0, 128, 16000, norm=None, mel_scale="htk")
    fb = audio.mel_filterbank()
    assert fb.shape == (401, 128)
    assert torch.allclose(fb, ref, atol=1e-7)


def test_silence_gives_log_eps_everywhere():
    spec = audio.log_mel(torch.zeros(audio.CLIP_SAMPLES))
    assert torch.allclose(spec, torch.full_like(spec, -7.0))
    assert audio.is_silent(torch.zeros(10)) and not audio.is_silent(torch.full((48000,), 0.01))


def test_pad_appends_time_reversed_copies_then_truncates():
    wave = torch.tensor([1.0, 2.0, 3.0])
    assert audio.pad_or_trim(wave, 8).tolist() == [1, 2, 3, 3, 2, 1, 1, 2]
    assert audio.pad_or_trim(torch.arange(10.0), 4).tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="empty"):
        audio.pad_or_trim(torch.zeros(0))


def test_random_gain_within_6_db_then_clamped():
    gen = torch.Generator().manual_seed(1)
    wave = torch.full((100,), 0.1)
    gains = [float(audio.random_gain(wave, generator=gen)[0] / 0.1) for _ in range(200)]
    low, high = 10 ** (-6 / 20), 10 ** (6 / 20)
    assert all(low - 1e-6 <= g <= high + 1e-6 for g in gains)
    assert max(gains) > 1.5 and min(gains) < 0.6  # the whole range is used
    loud = audio.random_gain(torch.full((10,), 0.9), 6.0, 6.0)
    assert torch.equal(loud, torch.ones(10))  # 0.9 * 2 clamps to 1


def test_stft_istft_round_trip():
    wave = torch.randn(2, audio.CLIP_SAMPLES) * 0.1
    spec = audio.stft(wave)
    assert spec.shape == (2, 401, 193) and spec.is_complex()
    assert torch.allclose(audio.istft(spec), wave, atol=1e-5)
    # the mel power is |STFT|^2 projected on the filterbank
    assert torch.allclose(audio.mel_power(wave[0]), audio.mel_filterbank().T @ spec[0].abs() ** 2, rtol=1e-4)


@pytest.mark.parametrize("rate", [44100, 48000, 22050, 8000])
def test_resample_matches_torchaudio_default(rate):
    # Same kernel bit for bit; conv1d summation order differs slightly (float32), hence 1e-4.
    wave = torch.randn(rate, generator=torch.Generator().manual_seed(rate)) * 0.3
    ours = audio.resample(wave, rate)
    ref = torchaudio.functional.resample(wave, rate, 16000)
    assert ours.shape == ref.shape == (16000,)
    assert torch.allclose(ours, ref, atol=1e-4)
