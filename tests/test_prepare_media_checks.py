"""`avfusion data prepare` checks the media as training reads them: a wav holding NaN samples, a
wav cut short (its header still says 3 s), and an mp4 whose audio stops after 0.32 s of a longer
video are each skipped, named and counted in report.json, so they never reach training; a
manifest built with the checks off says so, and reading such a clip then fails naming it.
All media are real files from shared/testdata, rewritten with soundfile / PyAV.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile
import torch

from avfusion.data.datasets import AVClipDataset, LocalizationDataset
from avfusion.data.layouts import prepare
from avfusion.data.manifest import read_manifest
from avfusion.engine import OptimConfig, train
from avfusion.media import MediaError

VGGSS_IDS = ["UyCw7pCgYg8_000055", "zpWuikVorYg_000032", "gEvCUcZ6w88_000030"]


def nan_wav(src: Path, dst: Path) -> Path:
    """The real 3 s wav as float32 with 100 samples set to NaN (a float wav can hold them)."""
    data, rate = soundfile.read(str(src), dtype="float32")
    data[16000:16100] = np.nan
    dst.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(dst), data, rate, subtype="FLOAT")
    return dst


def cut_wav(src: Path, dst: Path, n_bytes: int = 60000) -> Path:
    """The real wav cut to its first bytes: 1.87 s left, its header still declares 3 s."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes()[:n_bytes])
    return dst


def short_audio_mp4(src: Path, dst: Path, audio_s: float = 0.32) -> Path:
    """Re-mux a real mp4 (packets copied, nothing re-encoded), keeping the whole video but only
    the audio packets that start before `audio_s`."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        v_in, a_in = inp.streams.video[0], inp.streams.audio[0]
        v_out, a_out = out.add_stream_from_template(v_in), out.add_stream_from_template(a_in)
        for packet in inp.demux(v_in, a_in):
            if packet.dts is None:
                continue
            if packet.stream is a_in:
                if float(packet.pts * a_in.time_base) >= audio_s:
                    continue
                packet.stream = a_out
            else:
                packet.stream = v_out
            out.mux(packet)
    return dst


@pytest.fixture()
def vggss_tree(tmp_path, testdata):
    demos = testdata / "deepavfusion" / "demos"
    wavs, pngs = sorted(demos.glob("demo*_orig.wav")), sorted(demos.glob("demo*_orig.png"))
    root = tmp_path / "VGGSS"
    for n, clip in enumerate(VGGSS_IDS):
        (root / "frames").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(pngs[n], root / "frames" / f"{clip}.jpg")
    shutil.copyfile(wavs[0], (root / "audio").mkdir(parents=True) or root / "audio" / f"{VGGSS_IDS[0]}.wav")
    nan_wav(wavs[1], root / "audio" / f"{VGGSS_IDS[1]}.wav")
    cut_wav(wavs[2], root / "audio" / f"{VGGSS_IDS[2]}.wav")
    test_list = tmp_path / "test.csv"
    test_list.write_text("".join(f"{c}\n" for c in VGGSS_IDS))
    return root, test_list


def test_nan_and_truncated_wavs_are_skipped_named_and_counted(tmp_path, vggss_tree):
    root, test_list = vggss_tree
    out = tmp_path / "out"
    report = prepare("vggss", root, out, test_list=test_list)
    assert [r["clip_id"] for r in read_manifest(out / "manifest.csv")] == [VGGSS_IDS[0]]
    assert report["kept"] == 1 and report["skipped"] == 2
    assert report["reasons"] == {"non-finite audio samples (NaN/inf)": 1, "truncated or corrupt audio": 1}
    named = {Path(e["item"]).name: e["reason"] for e in report["skipped_examples"]}
    assert named == {f"{VGGSS_IDS[1]}.wav": "non-finite audio samples (NaN/inf)",
                     f"{VGGSS_IDS[2]}.wav": "truncated or corrupt audio"}
    assert report["media_checks"].startswith("decoded")
    assert json.loads((out / "report.json").read_text()) == report

    # with the checks off the report says so, and training's reader names each bad clip
    quick = prepare("vggss", root, tmp_path / "quick", test_list=test_list, check_media=False)
    assert quick["kept"] == 3 and quick["media_checks"].startswith("off")
    data = LocalizationDataset(tmp_path / "quick", "test", train=False, image_size=64)
    assert data[0]["audio"].isfinite().all()
    with pytest.raises(MediaError, match=rf"1[0-9][0-9] non-finite \(NaN/inf\) audio samples .*clip {VGGSS_IDS[1]}"):
        data[1]
    with pytest.raises(MediaError, match=r"truncated or corrupt: the header declares 3\.000 s of audio, "
                                         r"the file holds 1\.874 s"):
        data[2]


def test_mp4_whose_audio_is_shorter_than_the_window_is_skipped(tmp_path, testdata):
    mp4s = sorted((testdata / "clipsep_mixtures").glob("*/*/av.mp4"))
    root = tmp_path / "vggsound"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "vggsound.csv").write_text('aaaaaaaaaaa,30,"dog barking",train\n'
                                                       'bbbbbbbbbbb,0,"dog barking",train\n')
    clips = root / "clips" / "dog_barking"
    clips.mkdir(parents=True)
    shutil.copyfile(mp4s[0], clips / "aaaaaaaaaaa_000030_000040.mp4")
    short = short_audio_mp4(mp4s[1], clips / "bbbbbbbbbbb_000000_000010.mp4")
    with av.open(str(short)) as c:   # what the file is: ~0.32 s of audio beside seconds of video
        audio_s = float(c.streams.audio[0].duration * c.streams.audio[0].time_base)
        assert audio_s < 0.4 and c.duration / 1e6 >= 3.0

    report = prepare("vggsound", root, tmp_path / "out")
    assert [r["clip_id"] for r in read_manifest(tmp_path / "out" / "manifest.csv")] == ["aaaaaaaaaaa_000030"]
    assert report["reasons"] == {"audio shorter than the 3 s window": 1}
    assert Path(report["skipped_examples"][0]["item"]).name == short.name

    quick = prepare("vggsound", root, tmp_path / "quick", check_media=False)
    assert quick["kept"] == 2
    data = AVClipDataset(tmp_path / "quick", "train", train=True, image_size=64)
    with pytest.raises(MediaError, match=rf"{short.name}: (too short|no audio in)"):
        data[1]


def test_nonfinite_loss_names_the_clips_whose_inputs_are_not_finite(tmp_path):
    class Clips(torch.utils.data.Dataset):
        rows = [{"clip_id": f"clip{i}"} for i in range(8)]

        def __len__(self):
            return 8

        def __getitem__(self, i):
            audio = torch.full((4,), float("nan")) if i == 5 else torch.ones(4)
            return {"audio": audio, "index": torch.tensor(i)}

    model = torch.nn.Linear(4, 1)
    with pytest.raises(FloatingPointError, match=r"loss is nan .* non-finite input audio in clip\(s\) clip5$"):
        train(model, lambda m, b: (m(b["audio"]).mean(), {}), Clips(), OptimConfig(batch_size=8),
              tmp_path, device="cpu")
