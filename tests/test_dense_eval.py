"""Dense multi-clip evaluation (avfusion/data/dense_eval.py) on real media: window starts, frames, clip averaging."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from avfusion import audio as audio_lib
from avfusion import transforms
from avfusion.data.dense_eval import DenseClipDataset, dense_starts, predict_dense
from avfusion.data.manifest import write_manifest
from avfusion.media import MediaError, read_audio, read_frame
from avfusion.models.classifier import AVClassifier
from avfusion.models.registry import build_encoder

SONICPI = "sonicpi_instruments_cc0"
VIDEO = "clipsep_mixtures/vggsound/3-23kti2LQUdw/av.mp4"  # 4.08 s AAC 16 kHz, 3 frames at t = 0, 1, 2 s
STILL = "deepavfusion/demos/demo1_orig.png"


@pytest.fixture()
def manifest(testdata, tmp_path):
    """Real files of 10.67 s, 9.97 s, 3.53 s and 1.57 s (FLAC 44.1 kHz) with a still frame, and a real video."""
    still = str(testdata / STILL)
    rows = [{"clip_id": name, "split": "test", "audio": str(testdata / SONICPI / f"{name}.flac"), "frame": still,
             "label": label} for name, label in [("loop_tabla", "drums"), ("guit_em9", "guitar"),
                                                 ("guit_harmonics", "guitar"), ("ambi_choir", "choir")]]
    rows.append({"clip_id": "vggsound_video", "split": "test", "video": str(testdata / VIDEO), "label": "choir"})
    write_manifest(tmp_path, rows, classes=["choir", "drums", "guitar"])
    return tmp_path


def test_dense_starts_rule():
    # 10 s of a 20 s span, centred at 5 s: starts 5, 6, 7, ..., 12 (clip 3 s, 8 clips)
    starts, short_span, short_clip = dense_starts(0.0, 20.0, 8, 10.0)
    assert starts.tolist() == pytest.approx([5, 6, 7, 8, 9, 10, 11, 12]) and not short_span and not short_clip
    starts, short_span, short_clip = dense_starts(2.0, 4.0, 3, 10.0)     # 2 s: shorter than one clip
    assert starts.tolist() == [2.0, 2.0, 2.0] and short_span and short_clip
    assert dense_starts(0.0, 3.0, 4, 10.0)[0].tolist() == [0.0] * 4      # one 3 s clip: windows coincide


def test_window_starts_on_real_files_and_short_file_rule(manifest):
    ds = DenseClipDataset(manifest, "test", image_size=64, n_clips=10, span_s=10.0)
    by_id = {r["clip_id"]: ds.starts(r) for r in ds.rows}
    # loop_tabla: 10.673991 s -> a centred 10 s span from 0.336995 s, starts every 7/9 s
    starts, short_span, short_clip = by_id["loop_tabla"]
    assert starts.tolist() == pytest.approx([0.336995, 1.114773, 1.892551, 2.670329, 3.448106, 4.225884,
                                             5.003662, 5.781440, 6.559217, 7.336995], abs=1e-6)
    assert (short_span, short_clip) == (False, False)
    # guit_em9: 9.972063 s < 10 s -> the windows spread over the whole file, last ends at its end
    starts, short_span, short_clip = by_id["guit_em9"]
    assert starts[0] == 0.0 and starts[-1] == pytest.approx(6.972063, abs=1e-6) and short_span and not short_clip
    # ambi_choir: 1.571542 s < one clip -> 10 copies of the padded single window at 0
    starts, short_span, short_clip = by_id["ambi_choir"]
    assert starts.tolist() == [0.0] * 10 and short_span and short_clip
    index = [r["clip_id"] for r in ds.rows].index("ambi_choir")
    item = ds[index]
    assert item["window_id"].tolist() == [0] * 10 and item["short_clip"].item() == 1
    wave = read_audio(ds.rows[index]["audio"], 0.0, 3.0)
    assert wave.numel() == pytest.approx(1.571542 * 16000, abs=2)     # real audio shorter than the clip ...
    expected = audio_lib.log_mel(audio_lib.pad_or_trim(wave))          # ... padded by the time-reversal rule
    for k in range(10):
        torch.testing.assert_close(item["audio"][k], expected)


def test_too_little_audio_is_an_error_naming_the_file(testdata, tmp_path):
    # a span declared over the last 0.12 s of a real 1.57 s file: the short-clip window [1.45, 4.45] holds
    # 0.12 s of audio, below MIN_AUDIO_S: refused (never padded 25x into a clip)
    path = testdata / SONICPI / "ambi_choir.flac"
    write_manifest(tmp_path, [{"clip_id": "c", "split": "test", "audio": str(path), "frame": str(testdata / STILL),
                               "start": "1.45", "end": "1.55", "label": "choir"}], classes=["choir"])
    ds = DenseClipDataset(tmp_path, "test", image_size=64, n_clips=4, span_s=10.0)
    with pytest.raises(MediaError, match="ambi_choir.flac: too short"):
        ds[0]


def test_each_window_has_its_own_audio_and_frame(manifest, testdata):
    ds = DenseClipDataset(manifest, "test", image_size=64, n_clips=3, span_s=10.0)
    index = [r["clip_id"] for r in ds.rows].index("vggsound_video")
    item = ds[index]
    assert item["starts"].tolist() == pytest.approx([0.0, 0.54, 1.08])    # 4.08 s video
    assert item["image"].shape == (3, 3, 64, 64) and item["audio"].shape == (3, 1, 128, 192)
    for k, s in enumerate(item["starts"].tolist()):
        wave = audio_lib.pad_or_trim(read_audio(testdata / VIDEO, s, s + 3.0))
        torch.testing.assert_close(item["audio"][k], audio_lib.log_mel(wave))
        frame = read_frame(testdata / VIDEO, s + 1.5)                       # the frame nearest the window centre
        torch.testing.assert_close(item["image"][k], transforms.eval_image(frame, 64))
    assert not torch.equal(item["audio"][0], item["audio"][2])
    assert not torch.equal(item["image"][0], item["image"][2])              # centres 1.5 s and 2.58 s: frames 1 and 2


def test_clip_average_equals_mean_of_separately_computed_clip_logits(manifest, testdata):
    torch.set_num_threads(1)
    n = 4
    ds = DenseClipDataset(manifest, "test", image_size=64, n_clips=n, span_s=10.0)
    model = AVClassifier(build_encoder({"preset": "deepavfusion-smoke"}), num_classes=3).eval()
    loader = DataLoader(ds, batch_size=2)
    logits, labels, counts = predict_dense(lambda im, au: model(im, au), loader, torch.device("cpu"))
    assert labels.tolist() == [1, 2, 2, 0, 0]
    assert counts == {"videos": 5, "clips": 20, "windows_forwarded": 4 * 4 + 1, "short_span": 4, "short_clip": 1}
    still = transforms.eval_image(read_frame(testdata / STILL), 64)
    clip_logits = {}
    with torch.no_grad():
        for v, row in enumerate(ds.rows[:4]):                               # the audio files with a still frame
            starts, _, _ = ds.starts(row)
            per_clip = []
            for s in starts:
                spec = audio_lib.log_mel(audio_lib.pad_or_trim(read_audio(row["audio"], float(s), float(s) + 3.0)))
                per_clip.append(model(still[None], spec[None]))
            for head in ("image", "audio", "fusion", "all"):
                expected = torch.cat([p[head] for p in per_clip]).mean(0)   # (C,)
                torch.testing.assert_close(logits[head][v], expected, atol=1e-5, rtol=1e-5)
            clip_logits[row["clip_id"]] = torch.cat([p["audio"] for p in per_clip])  # (n, C)
    # the 4 windows of the tabla loop differ, so the average is not any single clip's logits
    tabla = clip_logits["loop_tabla"]
    assert (tabla - tabla.mean(0)).abs().max() > 1e-4


def test_gain_quirk_is_one_reproducible_gain_per_video(manifest):
    plain = DenseClipDataset(manifest, "test", image_size=64, n_clips=3, span_s=10.0)
    quirk = DenseClipDataset(manifest, "test", image_size=64, n_clips=3, span_s=10.0, gain_db=2.0, gain_seed=7)
    a, b, again = plain[0], quirk[0], quirk[0]
    torch.testing.assert_close(b["audio"], again["audio"])                  # deterministic
    mel_plain = 10.0 ** a["audio"].double() - 1e-7                          # mel power (log10(mel + 1e-7))
    mel_gain = 10.0 ** b["audio"].double() - 1e-7
    loud = mel_plain > 1e-3                                                   # well above the epsilon
    ratio_db = 10 * torch.log10(mel_gain[loud] / mel_plain[loud])           # power ratio = gain^2
    assert ratio_db.std().item() < 1e-3 and 0.0 < abs(ratio_db.mean().item()) <= 2.0
