"""The embedded benchmark: reproducible byte for byte, exact masks and boxes, real sounds, fixed pairs."""
import csv
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from avfusion import audio, media
from avfusion.cli import main as cli_main
from avfusion.data.manifest import read_classes, read_manifest
from avfusion.data.tuxav import (ASSET_DIR, CLASS_STAMPS, SCALES, SIZE_RANGE, class_colour_frames, crop_or_loop,
                                 make_sound, make_tuxav, mask_box, pink_noise, read_index, vary_recording)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The machine's 2 cores are shared: one torch thread here, restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _hashes(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("tuxav") / "smoke"
    make_tuxav(out, "smoke", seed=0)
    return out


def test_same_seed_gives_byte_identical_files(smoke, tmp_path):
    # the second run goes through the CLI, the way the DAG calls it
    assert cli_main(["data", "make-tuxav", "--scale", "smoke", "--out", str(tmp_path / "again"), "--seed", "0"]) == 0
    first, second = _hashes(smoke), _hashes(tmp_path / "again")
    assert len(first) > 3 * 48  # frames/audio or video, masks, manifest files
    assert first == second
    make_tuxav(tmp_path / "other", "smoke", seed=1)
    other = _hashes(tmp_path / "other")
    assert other["manifest.csv"] != first["manifest.csv"]


def test_without_distractors_the_same_clips_show_the_whole_sounding_object(smoke, tmp_path):
    """`--no-distractors` keeps every clip's class, split and sounding stamp and its placement (drawn first
    from the clip's seed), and drops only the silent objects: each mask is then the object's whole cut-out,
    a superset of the visible part in the default scene (where distractors may cover it)."""
    solo = tmp_path / "solo"
    assert cli_main(["data", "make-tuxav", "--scale", "smoke", "--out", str(solo), "--no-distractors"]) == 0
    assert json.loads((solo / "tuxav.json").read_text())["distractors"] is False
    assert json.loads((smoke / "tuxav.json").read_text())["distractors"] is True
    keys = ("clip_id", "split", "label", "source")
    rows = {r["clip_id"]: r for r in read_manifest(smoke / "manifest.csv")}
    solo_rows = read_manifest(solo / "manifest.csv")
    assert [tuple(r[k] for k in keys) for r in solo_rows] == [tuple(rows[r["clip_id"]][k] for k in keys)
                                                               for r in solo_rows]
    grown = 0
    for row in solo_rows:
        with_distractors = np.array(Image.open(rows[row["clip_id"]]["mask"])) > 0
        alone = np.array(Image.open(row["mask"])) > 0
        assert (alone | ~with_distractors).all(), row["clip_id"]  # every visible pixel stays
        grown += int(alone.sum() > with_distractors.sum())
    assert grown > 0  # some objects were partly covered by a distractor in the default scene


def test_background_contrast_scales_only_the_background(smoke, tmp_path):
    """`--background-contrast 0.25` (the tiny scale's benchmark) draws the same scenes: same clips, sounds and
    masks, the same object pixels, and backgrounds whose deviations from their mean colour are 1/4 as large."""
    calm = tmp_path / "calm"
    assert cli_main(["data", "make-tuxav", "--scale", "smoke", "--out", str(calm), "--background-contrast", "0.25"]) == 0
    assert json.loads((calm / "tuxav.json").read_text())["background_contrast"] == 0.25
    calm_hashes, hashes = _hashes(calm), _hashes(smoke)
    assert [calm_hashes[k] == hashes[k] for k in hashes if k.startswith(("masks/", "audio/"))] == \
        [True] * sum(k.startswith(("masks/", "audio/")) for k in hashes)
    assert calm_hashes["manifest.csv"] == hashes["manifest.csv"] and calm_hashes["pairs.csv"] == hashes["pairs.csv"]
    ratios = []
    for row in read_manifest(smoke / "manifest.csv"):
        if not row["frame"]:
            continue
        mask = np.array(Image.open(row["mask"])) > 0
        full = np.asarray(Image.open(row["frame"]), dtype=np.float64)
        low = np.asarray(Image.open(str(row["frame"]).replace(str(smoke), str(calm))), dtype=np.float64)
        free = ~mask  # background and distractors: compare the spread of the whole frame outside the object
        ratios.append(low[free].std(axis=0).mean() / full[free].std(axis=0).mean())
        assert np.abs(low[mask] - full[mask]).mean() < 12  # the sounding object: the same pixels (JPEG edges aside)
    assert 0.2 < float(np.median(ratios)) < 0.9  # backgrounds calmer (distractors keep their colours)


def test_stamps_per_class_draws_each_class_from_its_first_stamps(smoke, tmp_path):
    """`--stamps-per-class 1`: every clip of a class sounds (and shows) the class's first stamp; the clips,
    classes, splits and pairs are those of the default benchmark, and the silent distractors still come from
    every other stamp. The default (absent) draws from all of a class's stamps."""
    one = tmp_path / "one"
    assert cli_main(["data", "make-tuxav", "--scale", "smoke", "--out", str(one), "--stamps-per-class", "1"]) == 0
    summary = json.loads((one / "tuxav.json").read_text())
    assert summary["stamps_per_class"] == 1 and json.loads((smoke / "tuxav.json").read_text())["stamps_per_class"] is None
    assert summary["classes"] == {c: CLASS_STAMPS[c][:1] for c in list(CLASS_STAMPS)[:SCALES["smoke"]["classes"]]}
    rows, default_rows = read_manifest(one / "manifest.csv"), read_manifest(smoke / "manifest.csv")
    keys = ("clip_id", "split", "label")
    assert [tuple(r[k] for k in keys) for r in rows] == [tuple(r[k] for k in keys) for r in default_rows]
    assert {r["source"] for r in rows} == {f"tuxpaint:{CLASS_STAMPS[c][0]}" for c in {r["label"] for r in rows}}
    assert len({r["source"] for r in default_rows}) > len({r["source"] for r in rows})  # the default mixes stamps
    assert (one / "pairs.csv").read_bytes() == (smoke / "pairs.csv").read_bytes()


def test_plain_background_is_a_grey_backdrop_behind_the_same_clips(smoke, tmp_path):
    """`--background plain`: the clips, classes and splits of the default benchmark, each object drawn on a
    mid-grey backdrop (128 +- light noise) instead of a random two-colour pattern: the frame's colour outside the
    objects says nothing, so the objects' pixels carry the class (README "Scales", issue 15)."""
    plain = tmp_path / "plain"
    assert cli_main(["data", "make-tuxav", "--scale", "smoke", "--out", str(plain), "--background", "plain"]) == 0
    assert json.loads((plain / "tuxav.json").read_text())["background"] == "plain"
    rows, default_rows = read_manifest(plain / "manifest.csv"), read_manifest(smoke / "manifest.csv")
    keys = ("clip_id", "split", "label")
    assert [tuple(r[k] for k in keys) for r in rows] == [tuple(r[k] for k in keys) for r in default_rows]
    grey_share, grey_corners = {}, 0
    for name, folder_rows in (("plain", rows), ("drawn", default_rows)):
        shares = []
        for row in folder_rows:
            if not row["frame"]:
                continue
            frame = np.asarray(Image.open(row["frame"]), dtype=np.float64)
            corners = np.concatenate([frame[:3, :3].reshape(-1, 3), frame[-3:, -3:].reshape(-1, 3)])
            shares.append(np.mean(np.abs(frame - 128).max(axis=2) < 25))  # pixels of the grey backdrop
            grey_corners += name == "plain" and np.abs(corners - 128).max() < 40
        grey_share[name] = float(np.median(shares))
    assert grey_share["plain"] > 0.3 and grey_share["drawn"] < 0.1, grey_share
    assert grey_corners >= 0.5 * sum(bool(r["frame"]) for r in rows)  # most corners show the backdrop
    with pytest.raises(ValueError, match="background 'flat'"):
        make_tuxav(tmp_path / "bad", "smoke", background="flat")


def test_manifest_splits_classes_and_media(smoke):
    rows = read_manifest(smoke / "manifest.csv")
    classes = read_classes(smoke)
    spec = SCALES["smoke"]
    assert classes == list(CLASS_STAMPS)[:spec["classes"]]
    assert len(rows) == spec["classes"] * spec["clips_per_class"]
    counts = {s: sum(r["split"] == s for r in rows) for s in ("train", "val", "test")}
    assert counts == {"train": 36, "val": 6, "test": 6}
    for split in ("val", "test"):  # every class in every evaluation split
        assert {r["label"] for r in rows if r["split"] == split} == set(classes)
    videos = [r for r in rows if r["video"]]
    assert 1 <= len(videos) < len(rows) // 4
    for r in videos:
        assert r["audio"] == "" and r["frame"] == "" and Path(r["video"]).is_file()
        info = media.probe(r["video"])
        assert info.audio_codec == "aac" and info.video_codec == "h264"
    for r in rows:
        if not r["video"]:
            assert media.probe(r["audio"]).audio_rate == 16000
            assert abs(media.duration(r["audio"]) - 3.0) < 1e-6
    report = json.loads((smoke / "report.json").read_text())
    assert report["kept"] == len(rows) and report["skipped"] == 0


def test_class_colour_frames_show_one_flat_colour_per_class_with_the_clips_own_audio(smoke, tmp_path):
    """The diagnostic copy: every item's image is its class's flat colour (a clip stored as mp4 too), the
    audio, labels and pairs are the source's."""
    from avfusion.data.datasets import AVClipDataset

    out = class_colour_frames(smoke, tmp_path / "class_frames")
    assert (out / "pairs.csv").read_text() == (smoke / "pairs.csv").read_text()
    assert read_classes(out) == read_classes(smoke)
    src, diag = (AVClipDataset(d, "train", train=False, image_size=32) for d in (smoke, out))
    rows = read_manifest(out / "manifest.csv")
    train = [r for r in rows if r["split"] == "train"]
    picks = [i for i, r in enumerate(train) if r["video"]][:1] + list(range(8))  # one mp4 clip and eight others
    colours = {}
    for i in picks:
        item, orig = diag[i], src[i]
        image = item["image"]  # (3, 32, 32), normalised
        assert torch.equal(image, image[:, :1, :1].expand_as(image)), f"clip {train[i]['clip_id']}: not flat"
        colours.setdefault(train[i]["label"], set()).add(tuple(image[:, 0, 0].tolist()))
        assert torch.equal(item["audio"], orig["audio"]) and item["label"] == orig["label"]
    assert all(len(c) == 1 for c in colours.values())          # one colour per class
    assert len({next(iter(c)) for c in colours.values()}) == len(colours) >= 3   # and a different one each


def test_masks_and_boxes_are_exact(smoke):
    size = SCALES["smoke"]["frame_size"]
    for r in read_manifest(smoke / "manifest.csv"):
        mask = np.asarray(Image.open(r["mask"]))
        assert mask.shape == (size, size) and set(np.unique(mask)) == {0, 255}
        boxes = json.loads(r["boxes"])
        assert len(boxes) == 1 and len(boxes[0]) == 1  # one annotator, one box
        assert boxes[0][0] == mask_box(mask > 0)
        frame = media.read_frame(r["frame"] or r["video"], float(r["frame_time"]))
        assert frame.shape == (size, size, 3)
        assert 0.01 < (mask > 0).mean() < 0.6
        x1, y1, x2, y2 = boxes[0][0]
        assert max(x2 - x1, y2 - y1) <= SIZE_RANGE[1] * size + 1  # long side: at most U(SIZE_RANGE)


def test_clip_audio_is_the_sounding_objects_recording(smoke):
    for r in read_manifest(smoke / "manifest.csv")[:12]:
        assert r["source"].split(":", 1)[1] in CLASS_STAMPS[r["label"]]
        wave = media.read_audio(r["audio"] or r["video"], 0.0, 3.0)
        assert not audio.is_silent(wave)
        assert 0.2 < wave.abs().max().item() < 0.8  # peak-normalised, gain U(-12, -3) dB


@pytest.mark.parametrize("stamp", ["blackbird", "pig"])  # 7.9 s (cropped) and 0.56 s (looped)
def test_crop_or_loop_takes_pieces_of_the_recording(stamp):
    index = read_index()
    src = media.read_audio(ASSET_DIR / index[stamp]["audio"]).double()
    out = torch.from_numpy(crop_or_loop(np.random.default_rng(0), src.numpy(), 48000))
    assert out.shape == (48000,)
    # the loudest 0.1 s piece of the output is found in the recording (normalised cross-correlation 1)
    energy = torch.nn.functional.avg_pool1d(out[None, None] ** 2, 1600, stride=400)[0, 0]
    start = int(energy.argmax()) * 400
    piece = out[start:start + 1600]
    looped = torch.cat([src, src])
    ncc = torch.nn.functional.conv1d(looped[None, None], piece[None, None])[0, 0]  # (len - 1599,)
    norms = torch.nn.functional.conv1d(looped[None, None] ** 2, torch.ones(1, 1, 1600).double())[0, 0].sqrt()
    assert (ncc / (norms * piece.norm() + 1e-9)).max().item() > 0.999


def test_takes_vary_rate_and_noise_stays_within_its_snr():
    index = read_index()
    src = media.read_audio(ASSET_DIR / index["cow"]["audio"]).double().numpy()
    lengths = [len(vary_recording(np.random.default_rng(k), src)) / len(src) for k in range(20)]
    assert 1 / 1.25 - 0.01 < min(lengths) and max(lengths) < 1 / 0.8 + 0.01 and max(lengths) - min(lengths) > 0.2
    noise = pink_noise(np.random.default_rng(0), 48000)
    assert abs(np.sqrt(np.mean(noise ** 2)) - 1) < 1e-9
    low, high = np.abs(np.fft.rfft(noise)[100:1000]).mean(), np.abs(np.fft.rfft(noise)[10000:11000]).mean()
    assert low > 2 * high  # 1/f: more energy at low frequencies
    wave = make_sound(np.random.default_rng(1), torch.from_numpy(src).float())
    assert wave.shape == (48000,) and wave.dtype == np.float32 and 0.2 < np.abs(wave).max() < 0.8


def test_pairs_mix_clips_of_different_classes(smoke):
    rows = {r["clip_id"]: r for r in read_manifest(smoke / "manifest.csv")}
    with open(smoke / "pairs.csv", newline="") as fh:
        pairs = list(csv.DictReader(fh))
    assert len(pairs) == 12
    for p in pairs:
        a, b = rows[p["clip_id_1"]], rows[p["clip_id_2"]]
        assert a["split"] == b["split"] == p["split"] and a["label"] != b["label"]
        assert p["sep_type"] in ("easy", "hard")


def test_unknown_scale_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown tuxav scale 'huge'"):
        make_tuxav(tmp_path, "huge")


def test_assets_are_small_and_licensed():
    total = sum(p.stat().st_size for p in ASSET_DIR.rglob("*") if p.is_file())
    assert total < 4_000_000
    assert "GPL-2" in (ASSET_DIR / "COPYRIGHT.debian.txt").read_text()
    assert "tuxpaint-stamps-default" in (ASSET_DIR / "README.md").read_text()


def test_prepare_command_names_unknown_datasets_and_missing_roots(tmp_path, capsys):
    # one line on stderr with exit code 2 (usage) / 3 (data) since issue 19 (were SystemExit / a traceback)
    assert cli_main(["data", "prepare", "vggsnd", "--root", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert re.search("unknown dataset 'vggsnd'; choose from .*vggsound", capsys.readouterr().err)
    assert cli_main(["data", "prepare", "vggsound", "--root", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 3
    assert "dataset root not found" in capsys.readouterr().err
