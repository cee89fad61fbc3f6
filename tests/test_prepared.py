"""`avfusion data cache`: the prepared form gives the raw path's audio window and frame (under the
documented keyframe rule), names and counts unreadable clips, and resumes after kill -9.

Clips: the real CLIPSep frames and audio of testdata, re-encoded as the official pipeline does
(H.264, a keyframe every 16 frames, 25 fps) with AAC at 44.1 kHz stereo (so the audio goes through
the resampler), 4 s each."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import av
import numpy as np
import pytest
import torch

from avfusion.data.datasets import AVClipDataset
from avfusion.data.manifest import write_manifest
from avfusion.data.prepared import PreparedMedia, cache_manifest
from avfusion.media import read_audio, read_frame

SOURCES = ["clipsep_mixtures/vggsound/3-23kti2LQUdw/av.mp4", "clipsep_mixtures/vggsound/e-xe7opvK-LJg/av.mp4",
           "clipsep_mixtures/vggsound/v-hvCj8Dk0Su4/av.mp4"]
FPS, SECONDS, SIZE, SHORT = 25, 4.0, (320, 240), 128


def _reencode(src, dst, seed: int) -> None:
    """The source's real frames (shifted 2 px per frame) and audio as H.264 GOP 16 + AAC 44.1 kHz."""
    with av.open(str(src)) as c:
        pictures = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    with av.open(str(src)) as c:
        mono = np.concatenate([f.to_ndarray().mean(axis=0) for f in c.decode(audio=0)])
        rate = c.streams.audio[0].rate
    width, height = SIZE
    with av.open(str(dst), "w") as c:
        v = c.add_stream("libx264", rate=FPS, options={"preset": "veryfast", "g": "16", "keyint_min": "16",
                                                        "sc_threshold": "0", "bf": "2"})
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        a = c.add_stream("aac", rate=44100, layout="stereo")
        for j in range(int(SECONDS * FPS)):
            pic = pictures[min(j // FPS, len(pictures) - 1)]
            big = np.tile(pic, (2, 2, 1))[:height, :]  # (448, 448) -> cut to (240, 448)
            img = np.ascontiguousarray(np.roll(big, 2 * j + seed, axis=1)[:, :width])
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = j
            c.mux(v.encode(frame))
        c.mux(v.encode())
        n = int(SECONDS * 44100)
        wave = np.interp(np.arange(n) / 44100 % (len(mono) / rate), np.arange(len(mono)) / rate, mono)
        stereo = np.stack([wave, wave]).astype(np.float32)
        for i in range(0, n, 1024):
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(stereo[:, i:i + 1024]), format="fltp",
                                            layout="stereo")
            af.sample_rate, af.pts = 44100, i
            c.mux(a.encode(af))
        c.mux(a.encode())


@pytest.fixture(scope="module")
def clips(tmp_path_factory, testdata):
    folder = tmp_path_factory.mktemp("gop16")
    paths = []
    for i, rel in enumerate(SOURCES):
        path = folder / f"clip{i}.mp4"
        _reencode(testdata / rel, path, seed=i)
        paths.append(path)
    return paths


def _manifest(folder, videos, corrupt=None):
    rows = [{"clip_id": f"c{i:02d}", "split": "train", "video": str(p), "label": ["a", "b"][i % 2]}
            for i, p in enumerate(videos)]
    if corrupt is not None:
        rows.insert(1, {"clip_id": "broken", "split": "train", "video": str(corrupt), "label": "a"})
    write_manifest(folder, rows, classes=["a", "b"])
    return rows


def test_prepared_and_raw_give_the_same_audio_window_and_frame(tmp_path, clips):
    src, out = tmp_path / "raw", tmp_path / "prepared"
    _manifest(src, clips)
    report = cache_manifest(src, out, short_side=SHORT, clips_per_shard=2)
    assert (report["prepared"], report["unreadable"], report["shards"]) == (3, 0, 2)
    prepared = PreparedMedia(out)
    for i, path in enumerate(clips):
        for t0 in (0.0, 0.37, 0.5 + 0.25 * i, 1.0):  # windows off and on the 1/16000 grid
            raw = read_audio(path, t0, t0 + 3.0)
            fast = prepared.audio(f"c{i:02d}", t0, t0 + 3.0)
            assert fast.shape == raw.shape == (48000,)
            assert torch.allclose(fast, raw, atol=1e-6), (i, t0, (fast - raw).abs().max())
        for t in (0.0, 0.3, 0.64, 0.65, 1.9, 2.55, 3.96):
            raw = read_frame(path, t, rule="keyframe", short_side=SHORT)
            fast = prepared.frame(f"c{i:02d}", t)
            assert fast.shape == raw.shape == (SHORT, SHORT * 4 // 3, 3)
            assert np.abs(fast.astype(int) - raw).mean() < 4.0, (i, t)  # JPEG q90 of the same frame
            assert prepared.frame_time(f"c{i:02d}", t) == pytest.approx(16 * int(t * FPS // 16) / FPS)
            other = read_frame(path, max(t - 16 / FPS, 0) if t >= 16 / FPS else t + 16 / FPS,
                               rule="keyframe", short_side=SHORT)
            assert np.abs(fast.astype(int) - other).mean() > 4 * np.abs(fast.astype(int) - raw).mean()

    # the JPEG decoded straight into an RGBX array: Image.open's pixels; the transforms give the same numbers
    from avfusion import transforms

    for i in range(3):
        shard, entry = prepared.entry(f"c{i:02d}")
        for k in range(len(entry["frame_times"])):
            fast = prepared.frame(f"c{i:02d}", entry["frame_times"][k], rgbx=True)
            assert fast.base.shape[2] == 4 and transforms._rgbx(fast) is not None
            plain = prepared._image(shard, entry, f"f{k:04d}.jpg")  # np.array(Image.open(...))
            assert np.array_equal(fast, plain)
            for seed in range(4):
                image = [transforms.train_image(f, 112, torch.Generator().manual_seed(seed)) for f in (fast, plain)]
                assert torch.equal(*image)
            assert torch.equal(transforms.eval_image(fast, 112), transforms.eval_image(plain, 112))

    # the Dataset reads the prepared folder by itself and gives the raw keyframe-rule items, the window's
    # start on the hop grid (the prepared rule, PreparedMedia.snap): the raw Dataset is given the same rule
    for train in (False, True):
        torch.manual_seed(3)
        a = [AVClipDataset(out, "train", train=train, image_size=112)[k] for k in range(3)]
        torch.manual_seed(3)
        raw_set = AVClipDataset(src, "train", train=train, image_size=112, frame_rule="keyframe",
                                decode_short_side=SHORT)
        unsnapped = raw_set.window
        raw_set.window = lambda row: (lambda t0, t1, c: (prepared.snap(row["clip_id"], t0),
                                                         prepared.snap(row["clip_id"], t0) + 3.0, c))(*unsnapped(row))
        b = [raw_set[k] for k in range(3)]
        for x, y in zip(a, b):
            if train:  # the gain on the power: float rounding apart (largest near the 1e-7 floor)
                assert torch.allclose(x["audio"], y["audio"], atol=1e-2)
                assert (x["audio"] - y["audio"]).abs().mean() < 1e-4
            else:
                assert torch.equal(x["audio"], y["audio"])
            assert (x["image"] - y["image"]).abs().mean() < 0.05
            assert x["label"] == y["label"]
    assert AVClipDataset(out, "train", False, 112).media == "prepared"
    assert AVClipDataset(out, "train", False, 112, media="raw").media == "raw"  # paths stay absolute


def test_the_prepared_window_starts_on_the_hop_grid_and_its_log_mel_is_the_raw_one(tmp_path, clips):
    """The prepared form's audio rule: a window inside the audio starts on the 250-sample hop grid of the
    clip's 16 kHz audio (the nearest grid point, <= 7.8 ms from the raw start), and its log-mel, sliced from
    the clip's stored mel power with the edge frames computed from the window's ends, is `log_mel` of the
    raw path's samples for that window bit for bit; with the train gain, the frames the official clamp can
    reach are computed from the clamped wave and the others are g^2 P (float rounding apart)."""
    from avfusion.audio import HOP, apply_gain, log_mel

    src, out = tmp_path / "raw", tmp_path / "prepared"
    _manifest(src, clips)
    cache_manifest(src, out, short_side=SHORT, clips_per_shard=3)
    prepared = PreparedMedia(out)
    generator = torch.Generator().manual_seed(0)
    for i, path in enumerate(clips):
        clip_id = f"c{i:02d}"
        start = prepared.entry(clip_id)[1]["audio_start"]
        for t0 in [0.0, 0.5 + 0.25 * i, 0.99] + (torch.rand(4, generator=generator) * 0.99).tolist():
            snapped = prepared.snap(clip_id, t0)
            assert abs(snapped - t0) <= HOP / 2 / 16000 + 1e-9
            assert round((snapped - start) * 16000) % HOP == 0
            wave = read_audio(path, snapped, snapped + 3.0)  # the raw path's samples of the snapped window
            assert torch.equal(prepared.log_mel(clip_id, snapped, snapped + 3.0), log_mel(wave))
            peak = float(wave.abs().max())
            for gain_db in (-6.0, 2.5, 20 * np.log10(1.5 / peak)):  # the last one clips (|g x| > 1)
                fast = prepared.log_mel(clip_id, snapped, snapped + 3.0, gain_db)
                raw = log_mel(apply_gain(wave, gain_db))
                assert (fast - raw).abs().max() < 1e-2 and (fast - raw).abs().mean() < 1e-4, (i, t0, gain_db)
            naive = log_mel(wave * 1.5 / peak)  # the gain without the clamp: the clipped frames differ
            assert (naive - raw).abs().max() > 0.05 > (fast - raw).abs().max()
            loud = 20 * np.log10(1000 / peak)  # the clamp reaches every frame: the window's own STFT, exactly
            assert torch.equal(prepared.log_mel(clip_id, snapped, snapped + 3.0, loud), log_mel(apply_gain(wave, loud)))
        # a window the raw path pads (past the audio's end) is not moved, and is computed from the wave
        assert prepared.snap(clip_id, 1.5) == 1.5 and prepared.log_mel(clip_id, 1.5, 4.5) is None
    # format 3 stores the edge frames' mel power per window; without it (format 2) they are computed: the same bits
    from avfusion.data.prepared import hop_grid_start

    for i, path in enumerate(clips):
        clip_id = f"c{i:02d}"
        entry = prepared.entry(clip_id)[1]
        assert entry["edge_windows"] == (entry["audio_samples"] - 48000) // HOP + 1 > 1
        members = entry["members"]
        start = entry["audio_start"]
        for q in (0, 1, entry["edge_windows"] // 2, entry["edge_windows"] - 1):
            t0 = start + q * HOP / 16000
            assert hop_grid_start(q * HOP, entry["audio_samples"]) == q * HOP and prepared.snap(clip_id, t0) == t0
            stored = [prepared.log_mel(clip_id, t0, t0 + 3.0, g) for g in (None, -3.0)]
            edge = members.pop("edge.f32")
            try:
                computed = [prepared.log_mel(clip_id, t0, t0 + 3.0, g) for g in (None, -3.0)]
            finally:
                members["edge.f32"] = edge
            assert all(torch.equal(a, b) for a, b in zip(stored, computed)), (i, q)
        assert hop_grid_start(entry["audio_samples"] - 48000 + 1, entry["audio_samples"]) is None


def test_raw_frames_are_the_decoders_pixels_and_give_the_jpeg_folders_items_otherwise(tmp_path, clips):
    """`frame_format="raw"` keeps the kept frames as uint8 arrays: the raw path's pixels under the keyframe
    rule exactly (these clips have a keyframe every 16 frames), the same audio and log-mel as the JPEG
    folder, and image items within JPEG's few grey levels of the JPEG folder's."""
    src = tmp_path / "raw"
    _manifest(src, clips)
    cache_manifest(src, tmp_path / "jpeg", short_side=SHORT, clips_per_shard=3)
    cache_manifest(src, tmp_path / "rgb", short_side=SHORT, clips_per_shard=3, frame_format="raw")
    rgb, jpeg = PreparedMedia(tmp_path / "rgb"), PreparedMedia(tmp_path / "jpeg")
    for i, path in enumerate(clips):
        for t in (0.0, 0.64, 1.9, 3.96):
            frame = rgb.frame(f"c{i:02d}", t)
            assert np.array_equal(frame, read_frame(path, t, rule="keyframe", short_side=SHORT))
            assert frame.flags.writeable and np.abs(frame.astype(int) - jpeg.frame(f"c{i:02d}", t)).mean() < 4.0
    frame_bytes = {name: sum(size for _, entry in media.clips.values() for member, (_, size) in entry["members"].items()
                             if member.startswith("f")) for name, media in (("rgb", rgb), ("jpeg", jpeg))}
    assert frame_bytes["rgb"] == 3 * 7 * SHORT * (SHORT * 4 // 3) * 3 > 5 * frame_bytes["jpeg"]  # 7 kept frames a clip
    for train in (False, True):
        items = []
        for name in ("rgb", "jpeg"):
            torch.manual_seed(5)
            items.append([AVClipDataset(tmp_path / name, "train", train=train, image_size=112)[k] for k in range(3)])
        for x, y in zip(*items):
            assert torch.equal(x["audio"], y["audio"]) and (x["image"] - y["image"]).abs().mean() < 0.05
    with pytest.raises(ValueError, match="frame format"):
        cache_manifest(src, tmp_path / "other", frame_format="png")


def test_a_corrupt_clip_is_counted_and_named_while_the_others_are_prepared(tmp_path, clips, capsys):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(clips[0].read_bytes()[:20000])  # moov at the end: the cut file cannot open
    src, out = tmp_path / "raw", tmp_path / "prepared"
    _manifest(src, clips, corrupt=corrupt)
    from avfusion.cli import main

    assert main(["data", "cache", "--manifest", str(src), "--out", str(out), "--short-side", str(SHORT),
                 "--clips-per-shard", "2", "--workers", "2"]) == 0
    printed = capsys.readouterr().out
    assert "prepared 3 of 4 clips, unreadable 1" in printed and "unreadable: broken" in printed
    report = PreparedMedia(out).folder / "report.json"
    import json

    data = json.loads(report.read_text())
    assert data["unreadable"] == 1 and data["prepared"] == 3
    assert data["unreadable_clips"][0]["clip_id"] == "broken"
    assert "corrupt.mp4" in data["unreadable_clips"][0]["file"] and "corrupt.mp4" in data["unreadable_clips"][0]["reason"]
    ds = AVClipDataset(out, "train", train=False, image_size=64)
    assert [r["clip_id"] for r in ds.rows] == ["c00", "c01", "c02"]
    assert all(ds[k]["image"].shape == (3, 64, 64) for k in range(3))


def test_prepare_resumes_after_kill_9_without_redoing_finished_shards(tmp_path, clips):
    src, out = tmp_path / "raw", tmp_path / "prepared"
    _manifest(src, clips * 4)  # 12 clips, one per shard
    cmd = [sys.executable, "-m", "avfusion.cli", "data", "cache", "--manifest", str(src), "--out", str(out),
           "--short-side", str(SHORT), "--clips-per-shard", "1"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    folder = out / "prepared"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(folder.glob("shard-*.json"))) < 2 and proc.poll() is None:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = sorted(folder.glob("shard-*.json"))
    assert 2 <= len(done) < 12, f"the kill should land mid-run ({len(done)} shards done)"
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.glob("shard-*")}
    report = cache_manifest(src, out, short_side=SHORT, clips_per_shard=1)
    assert report["resumed_shards"] == len(done) and report["prepared_shards"] == 12 - len(done)
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.glob("shard-*")}
    assert all(after[name] == stamp for name, stamp in before.items() if name.replace(".tar", ".json") in
               {d.name for d in done})  # finished shards untouched
    assert len(after) == 24 and not list(folder.glob(".*tmp"))
    ds = AVClipDataset(out, "train", train=False, image_size=64)
    assert len(ds) == 12 and ds[11]["audio"].shape == (1, 128, 192)


def test_a_second_run_on_the_same_folder_is_refused_while_one_writes_it(tmp_path, clips):
    import fcntl

    src, out = tmp_path / "raw", tmp_path / "prepared"
    _manifest(src, clips[:1])
    (out / "prepared").mkdir(parents=True)
    with open(out / "prepared" / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(ValueError, match="another `avfusion data cache` is writing"):
            cache_manifest(src, out, short_side=SHORT)
    assert cache_manifest(src, out, short_side=SHORT)["prepared"] == 1
    with pytest.raises(ValueError, match="other settings"):
        cache_manifest(src, out, short_side=SHORT + 32)


def test_task_configs_pass_frame_rule_short_side_and_media_to_the_datasets(tmp_path, clips):
    """`data.frame_rule`, `data.decode_short_side` and `data.media` of a job config reach every Dataset the
    task builds (validated by the config dataclass: a bad value names its key)."""
    from avfusion.config import ConfigError, load_config
    from avfusion.tasks import linprobe, pretrain, separation
    from avfusion.tasks.common import clip_dataset, media_options

    src, out = tmp_path / "raw", tmp_path / "prepared"
    _manifest(src, clips)
    base = {"model": {"preset": "deepavfusion-smoke"}, "data": {"manifest": str(src), "image_size": 112}}
    cfg = load_config(linprobe.Config, base=base, overrides=["data.frame_rule=keyframe", "data.decode_short_side=128"])
    ds = clip_dataset(cfg.data, "train", train=False)
    assert (ds.media, ds.frame_rule, ds.decode_short_side) == ("raw", "keyframe", 128)
    row = ds.rows[1]
    t0, t1, centre = ds.window(row)
    assert np.array_equal(ds.frame(row, t0, t1, centre), read_frame(clips[1], centre, rule="keyframe", short_side=128))
    default = clip_dataset(load_config(linprobe.Config, base=base).data, "train", train=False)
    assert (default.frame_rule, default.decode_short_side) == ("nearest", None)
    assert np.array_equal(default.frame(row, t0, t1, centre), read_frame(clips[1], centre))
    # the other tasks' sections accept the same keys
    for module in (pretrain, separation):
        sub = load_config(module.Config, base=base, overrides=["data.frame_rule=keyframe", "data.media=raw",
                                                               "data.train_image_dtype=uint8"])
        assert media_options(sub.data) == {"media": "raw", "frame_rule": "keyframe", "decode_short_side": None,
                                           "train_image_dtype": "uint8"}
    with pytest.raises(ConfigError, match=r"data\.train_image_dtype"):
        load_config(pretrain.Config, base=base, overrides=["data.train_image_dtype=float16"])
    with pytest.raises(ConfigError, match=r"data\.frame_rule"):
        load_config(linprobe.Config, base=base, overrides=["data.frame_rule=random"])
    with pytest.raises(ConfigError, match=r"data\.decode_short_side.*below data\.image_size 112"):
        load_config(linprobe.Config, base=base, overrides=["data.decode_short_side=64"])
    with pytest.raises(ConfigError, match=r"data\.media"):
        load_config(linprobe.Config, base=base, overrides=["data.media=jpeg"])
    # media: prepared on a raw folder says what to run; auto finds the shards of a cache folder
    with pytest.raises(FileNotFoundError, match="avfusion data cache"):
        clip_dataset(load_config(linprobe.Config, base=base, overrides=["data.media=prepared"]).data, "train", False)
    cache_manifest(src, out, short_side=128, clips_per_shard=2)
    cached = load_config(linprobe.Config, base=dict(base, data={"manifest": str(out), "image_size": 112}))
    assert clip_dataset(cached.data, "train", train=False).media == "prepared"
