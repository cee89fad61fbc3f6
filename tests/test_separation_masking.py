"""Mel mask -> waveform: same numbers as the official torchaudio path; the ideal ratio mask separates real recordings."""
import numpy as np
import pytest
import soundfile as sf
import torch

from avfusion.audio import pad_or_trim, resample
from avfusion.metrics.separation import separation_metrics
from avfusion.spectral_masking import apply_mel_mask, ideal_ratio_mask, mel_mask_to_linear, separate


def load_clip(path, offset_s=0.0):
    wave, rate = sf.read(path, dtype="float32")
    wave = torch.from_numpy(wave.mean(1) if wave.ndim > 1 else wave)
    wave = resample(wave[int(offset_s * rate):], rate)
    return pad_or_trim(wave)  # (48000,)


def test_separate_equals_official_spectrogram_masking():
    aT = pytest.importorskip("torchaudio.transforms")
    gen = torch.Generator().manual_seed(0)
    mix = torch.randn(2, 48000, generator=gen) * 0.1
    logits = torch.randn(2, 1, 128, 192, generator=gen)
    # eval_avsrcsep.py::SpectrogramMasking with torchaudio's transforms
    stft_mix = aT.Spectrogram(n_fft=800, hop_length=250, power=None)(mix)
    fb = aT.MelSpectrogram(sample_rate=16000, n_fft=800, hop_length=250, n_mels=128).mel_scale.fb
    mask = torch.cat((torch.sigmoid(logits[:, 0]), torch.zeros(2, 128, 1)), dim=2)
    reference = aT.InverseSpectrogram(n_fft=800, hop_length=250)(torch.einsum("bmt,fm->bft", mask, fb) * stft_mix)
    ours = separate(mix, logits)
    assert ours.shape == (2, 48000)
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=0)


def test_all_pass_mel_mask_is_one_between_first_and_last_mel_centres():
    lin = mel_mask_to_linear(torch.ones(1, 128, 192))
    assert lin.shape == (1, 401, 193)
    # first centre ~14 Hz (bin 1), last centre ~7829 Hz (bin 391)
    torch.testing.assert_close(lin[0, 1:392, :192], torch.ones(391, 192), atol=1e-5, rtol=0)
    assert lin[0, 0].abs().max() < 1e-6 and 0 < lin[0, 395, 0] < 1
    assert torch.all(lin[0, :, 192] == 0)  # the dropped 193rd frame is masked out, as the official code


def test_ideal_ratio_mask_separates_two_real_recordings(testdata):
    root = testdata / "sonicpi_instruments_cc0"
    choir, tabla = load_clip(root / "ambi_choir.flac"), load_clip(root / "loop_tabla.flac")
    mix = (choir + tabla)[None]  # (1, 48000)
    est_choir = apply_mel_mask(mix, ideal_ratio_mask(choir[None], tabla[None]))
    est_tabla = apply_mel_mask(mix, ideal_ratio_mask(tabla[None], choir[None]))
    refs = torch.stack([choir, tabla])[None]  # (1, 2, 48000)
    ests = torch.stack([est_choir[0], est_tabla[0]])[None]
    got = separation_metrics(refs, ests, mix=mix, backend="mir_eval")
    print("IRM SDR", got["sdr"], "SIR", got["sir"], "SAR", got["sar"], "mixture SDR", got["sdr_mix"])
    assert np.all(got["sdr"] > 10.0)
    assert np.all(got["sdr"] > got["sdr_mix"] + 5.0)


def test_mask_shape_errors_name_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 48000\)"):
        apply_mel_mask(torch.zeros(2, 48000), torch.zeros(3, 128, 192))
