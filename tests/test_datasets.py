"""Datasets over manifests: interface shapes, deterministic evaluation, exact targets, loud failures."""
import csv
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from avfusion import audio, media
from avfusion.data.datasets import (AVClipDataset, LocalizationDataset, MixtureDataset, SegmentationDataset,
                                    boxes_to_map)
from avfusion.data.manifest import read_classes, read_manifest, write_manifest
from avfusion.data.tuxav import make_tuxav
from avfusion.media import MediaError

S = 64


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The machine's 2 cores are shared: one torch thread here, restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("tuxav") / "smoke"
    make_tuxav(out, "smoke", seed=0)
    return out


def _datasets(root, split, train):
    return {
        "clip": AVClipDataset(root, split, train, S),
        "mixture": MixtureDataset(root, split, train, S),
        "segmentation": SegmentationDataset(root, split, train, S, num_classes=1),
        "localization": LocalizationDataset(root, split, train, S),
    }


def test_items_follow_the_interface(smoke):
    expected = {
        "clip": {"image": (3, S, S), "audio": (1, 128, 192), "label": (), "index": ()},
        "mixture": {"image": (2, 3, S, S), "mix_audio": (1, 128, 192), "mix_wave": (48000,),
                    "source_waves": (2, 48000), "source_audio": (2, 1, 128, 192), "label": (2,),
                    "silent": (2,), "index": ()},
        "segmentation": {"image": (3, S, S), "audio": (1, 128, 192), "mask": (S, S), "index": ()},
        "localization": {"image": (3, S, S), "audio": (1, 128, 192), "gt_map": (S, S), "index": ()},
    }
    for train in (True, False):
        for name, ds in _datasets(smoke, "train" if train else "val", train).items():
            item = ds[1]
            assert {k: tuple(v.shape) for k, v in item.items()} == expected[name], (name, train)
            assert item["index"].item() == 1
    loader = torch.utils.data.DataLoader(AVClipDataset(smoke, "val", False, S), batch_size=4)
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 3, S, S) and batch["label"].dtype == torch.long


def test_evaluation_is_deterministic_for_every_dataset(smoke):
    for name in ("clip", "mixture", "segmentation", "localization"):
        passes = []
        for seed in (0, 1):  # a different global seed must not change evaluation items
            torch.manual_seed(seed)
            ds = _datasets(smoke, "val", False)[name]
            passes.append([ds[i] for i in range(len(ds))])
        for a, b in zip(*passes):
            for key in a:
                assert torch.equal(a[key], b[key]), (name, key)


def test_training_randomness_follows_the_torch_seed(smoke):
    ds = AVClipDataset(smoke, "train", True, S)
    torch.manual_seed(3)
    a = ds[0]
    torch.manual_seed(3)
    b = ds[0]
    torch.manual_seed(4)
    c = ds[0]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["audio"], b["audio"])
    assert not torch.equal(a["image"], c["image"])  # random crop / flip
    assert not torch.equal(a["audio"], c["audio"])  # random gain


def test_clip_labels_and_audio_match_the_files(smoke):
    ds = AVClipDataset(smoke, "val", False, S)
    classes = read_classes(smoke)
    for i, row in enumerate(ds.rows):
        item = ds[i]
        assert classes[item["label"]] == row["label"]
        wave = audio.pad_or_trim(media.read_audio(row["audio"] or row["video"], 0.0, 3.0))
        assert torch.equal(item["audio"], audio.log_mel(wave))  # eval: centred window, no gain
    multi = AVClipDataset(smoke, "val", False, S, multilabel=True)[0]["label"]
    assert multi.dtype == torch.float32 and multi.sum() == 1


def test_mixture_eval_uses_fixed_pairs_and_plain_sum(smoke):
    ds = MixtureDataset(smoke, "test", False, S)
    with open(smoke / "pairs.csv", newline="") as fh:
        pairs = [p for p in csv.DictReader(fh) if p["split"] == "test"]
    assert len(ds) == len(pairs)
    clip = AVClipDataset(smoke, "test", False, S)
    by_id = {r["clip_id"]: i for i, r in enumerate(clip.rows)}
    for k in (0, len(ds) - 1):
        item = ds[k]
        ids = (by_id[pairs[k]["clip_id_1"]], by_id[pairs[k]["clip_id_2"]])
        for s, i in enumerate(ids):
            assert torch.equal(item["source_audio"][s], clip[i]["audio"])
            assert torch.equal(item["image"][s], clip[i]["image"])
        assert torch.equal(item["mix_wave"], item["source_waves"].sum(0))
        assert torch.equal(item["mix_audio"], audio.log_mel(item["mix_wave"]))
        assert item["label"][0] != item["label"][1] and not item["silent"].any()


def test_segmentation_mask_is_the_sounding_object(smoke):
    ds = SegmentationDataset(smoke, "val", False, S, num_classes=1)
    row = ds.rows[0]
    mask = ds[0]["mask"]
    assert mask.dtype == torch.float32 and set(mask.unique().tolist()) <= {0.0, 1.0}
    raw = np.asarray(Image.open(row["mask"])) > 0  # frame 96 -> Resize(64) (+ CenterCrop of a square)
    assert abs(mask.mean().item() - raw.mean()) < 0.02


def test_class_map_masks_keep_only_the_listed_classes(smoke, tmp_path):
    # AVSS semantics: pixel value = class index; classes not in the row's label become background
    rows = read_manifest(smoke / "manifest.csv", "val")[:1]
    frame = media.read_frame(rows[0]["frame"] or rows[0]["video"], 1.5)
    label_map = np.zeros(frame.shape[:2], dtype=np.uint8)
    label_map[:, :30], label_map[:, 30:60] = 1, 2
    Image.fromarray(label_map).save(tmp_path / "map.png")
    classes = ["background", "dog", "cat"]
    rows[0].update(mask=str(tmp_path / "map.png"), label="dog")
    write_manifest(tmp_path, rows, classes=classes)
    ds = SegmentationDataset(tmp_path, "val", False, frame.shape[0], num_classes=3)
    mask = ds[0]["mask"]
    assert mask.dtype == torch.long
    assert set(mask.unique().tolist()) == {0, 1}  # 'cat' (2) is not listed for this clip
    rows[0]["label"] = "dog|cat"
    write_manifest(tmp_path, rows, classes=classes)
    assert set(SegmentationDataset(tmp_path, "val", False, frame.shape[0], 3)[0]["mask"].unique().tolist()) == {0, 1, 2}
    # a 0-based label2idx (AVSBench parser's report): the official p + 1 rule shifts by one (item 41)
    (tmp_path / "report.json").write_text(json.dumps({"details": {"label2idx_first_index": 0}}))
    shifted = SegmentationDataset(tmp_path, "val", False, frame.shape[0], 3)[0]["mask"]
    assert set(shifted.unique().tolist()) == {0, 1} and shifted[:, 30:60].eq(0).all()


def test_boxes_give_consensus_maps():
    single = boxes_to_map([[[0, 0, 4, 4], [2, 2, 6, 6]]], 8, 8)  # one annotator: union
    assert single.sum() == 16 + 16 - 4 and set(np.unique(single)) == {0.0, 1.0}
    two = boxes_to_map([[[0, 0, 4, 4]], [[2, 0, 6, 4]]], 8, 8)  # two annotators: sum / 2
    assert two[0, 0] == 0.5 and two[0, 3] == 1.0 and two[0, 5] == 0.5 and two[5, 5] == 0.0
    assert boxes_to_map([[[0, 0, 2, 2]]] * 3, 4, 4).max() == 1.0  # clipped
    lone = boxes_to_map([[[0, 0, 2, 2]]], 4, 4, rule="consensus")  # Flickr: a lone box is 0.5
    assert lone.max() == 0.5 and lone.sum() == 2.0
    union = boxes_to_map([[[0, 0, 4, 4]], [[2, 0, 6, 4]]], 8, 8, rule="union")
    assert union.max() == 1.0 and union.sum() == 24
    # official Flickr scaling: int(v * 224 / 256), flooring each coordinate
    scaled = boxes_to_map([[[10, 0, 255, 129]]], 224, 224, scale=(224 / 256, 224 / 256))
    rows, cols = np.nonzero(scaled)
    assert (cols.min(), cols.max() + 1, rows.max() + 1) == (int(10 * 224 / 256), int(255 * 224 / 256),
                                                             int(129 * 224 / 256))
    with pytest.raises(ValueError, match="box rule 'max'"):
        boxes_to_map([], 2, 2, rule="max")


def test_localization_keeps_half_values_as_float(smoke, tmp_path):
    rows = read_manifest(smoke / "manifest.csv", "val")[:2]
    for r in rows:
        r["boxes"] = json.dumps([[[0, 0, 96, 48]], [[0, 0, 96, 24]]])  # two annotators
    write_manifest(tmp_path, rows, classes=read_classes(smoke))
    gt = LocalizationDataset(tmp_path, "val", False, 96)[0]["gt_map"]
    assert gt.dtype == torch.float32
    assert set(gt.unique().tolist()) == {0.0, 0.5, 1.0}
    assert gt[:24].eq(1.0).all() and gt[24:48].eq(0.5).all() and gt[48:].eq(0.0).all()
    # the manifest can ask for the Flickr rule: a lone box is then 0.5
    rows[0]["boxes"] = json.dumps([[[0, 0, 96, 48]]])
    write_manifest(tmp_path, rows, classes=read_classes(smoke))
    (tmp_path / "report.json").write_text(json.dumps({"details": {"box_rule": "consensus"}}))
    assert set(LocalizationDataset(tmp_path, "val", False, 96)[0]["gt_map"].unique().tolist()) == {0.0, 0.5}
    assert set(LocalizationDataset(tmp_path, "val", False, 96, box_rule="union")[0]["gt_map"].unique().tolist()) == {0.0, 1.0}


def test_unreadable_clip_raises_naming_the_file(smoke, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(smoke, root)
    ds = AVClipDataset(root, "val", False, S)
    victim = next(i for i, r in enumerate(ds.rows) if r["audio"])
    (root / "audio" / f"{ds.rows[victim]['clip_id']}.wav").unlink()
    with pytest.raises(MediaError, match=f"{ds.rows[victim]['clip_id']}.wav: file not found"):
        ds[victim]
    video = next(i for i, r in enumerate(ds.rows) if r["video"])  # smoke seed 0 has an mp4 in 'val'
    path = root / "videos" / f"{ds.rows[video]['clip_id']}.mp4"
    path.write_bytes(path.read_bytes()[:5000])  # cut mp4: its moov atom (at the end) is gone
    with pytest.raises(MediaError, match=path.name):
        ds[video]


def test_manifest_problems_are_reported_at_construction(smoke, tmp_path):
    rows = read_manifest(smoke / "manifest.csv", "val")
    rows[0]["label"] = "unicorn"
    write_manifest(tmp_path, rows, classes=read_classes(smoke))
    with pytest.raises(ValueError, match=f"{rows[0]['clip_id']}: label 'unicorn'"):
        AVClipDataset(tmp_path, "val", False, S)
    with pytest.raises(ValueError, match="no rows with split 'nope'"):
        AVClipDataset(smoke, "nope", False, S)
    (tmp_path / "pairs.csv").unlink(missing_ok=True)
    rows[0]["label"] = rows[1]["label"]
    write_manifest(tmp_path, rows, classes=read_classes(smoke))
    with pytest.raises(FileNotFoundError, match="pairs.csv"):
        MixtureDataset(tmp_path, "val", False, S)


def test_silent_sources_are_flagged_for_the_separation_skip(smoke, tmp_path):
    root = tmp_path / "silent"
    shutil.copytree(smoke, root)
    ds = MixtureDataset(root, "val", False, S)
    first = ds.rows[ds.pairs[0][0]]
    assert first["audio"], "the first val pair's first clip is stored as a wav"
    import soundfile

    soundfile.write(first["audio"], np.zeros(48000, dtype=np.float32), 16000, subtype="PCM_16")
    item = ds[0]
    assert item["silent"].tolist() == [True, False]
    assert audio.is_silent(item["source_waves"][0])


# ----------------------------------------------------------------------------- image transforms

from avfusion import transforms  # noqa: E402


def test_eval_transform_is_resize_centre_crop_normalize():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)  # short side = int(112 / 0.875): no resize
    out = transforms.eval_image(frame, 112)
    crop = torch.from_numpy(frame[8:120, 8:120]).permute(2, 0, 1).float() / 255
    mean, std = torch.tensor(transforms.IMAGENET_MEAN)[:, None, None], torch.tensor(transforms.IMAGENET_STD)[:, None, None]
    assert out.shape == (3, 112, 112) and torch.allclose(out, (crop - mean) / std, atol=1e-6)
    wide = transforms.eval_image(rng.integers(0, 256, (200, 400, 3), dtype=np.uint8), 64)
    assert wide.shape == (3, 64, 64)


def test_uint8_frames_are_resized_in_uint8_within_one_grey_level_of_a_float_resize():
    """train_image / eval_image crop and resize a uint8 frame in uint8 (as torchvision on a PIL image, the
    official transforms) and convert only the result to float; a float resize of the whole frame gives
    the same crop within one grey level (rounding)."""
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (45, 80, 3), dtype=np.uint8)
    frame = np.asarray(Image.fromarray(base).resize((640, 360), Image.BILINEAR))  # smooth, like a video frame
    std = torch.tensor(transforms.IMAGENET_STD)[:, None, None]
    for seed in range(4):
        fast = transforms.train_image(frame, 112, torch.Generator().manual_seed(seed))
        (ref,) = transforms._train_geometry([(transforms.to_tensor(frame), False)], 112,
                                            torch.Generator().manual_seed(seed))
        assert fast.shape == (3, 112, 112)
        assert ((fast - transforms.normalize(ref)) * std).abs().max() * 255 <= 1.01, seed
    ref = transforms._eval_geometry(transforms.to_tensor(frame), 112, 128, nearest=False)
    assert ((transforms.eval_image(frame, 112) - transforms.normalize(ref)) * std).abs().max() * 255 <= 1.01
    # a float frame still takes the float path, unchanged
    as_float = torch.from_numpy(frame.copy()).float()
    assert transforms.eval_image(as_float / 255, 112).shape == (3, 112, 112)
    # a crop of a channels-last frame is copied channels-last contiguous for torch's vectorised uint8 kernel:
    # the numbers of the generic kernel a strided view gets, on 3 and 4 channels, up- and downscaled
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(0)
    for channels in (3, 4):
        x = torch.from_numpy(rng.integers(0, 256, (256, 455, channels), dtype=np.uint8)).permute(2, 0, 1)
        for _ in range(8):
            top, left, h, w = transforms.random_resized_crop_box(256, 455, generator)
            crop = x[:, top:top + h, left:left + w]
            assert not crop[None].is_contiguous(memory_format=torch.channels_last)
            for size in ((224, 224), (96, 160)):
                generic = F.interpolate(crop[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
                assert torch.equal(transforms.resize(crop, size), generic), (channels, size)


def test_random_resized_crop_respects_scale_and_ratio():
    gen = torch.Generator().manual_seed(0)
    boxes = [transforms.random_resized_crop_box(120, 160, gen) for _ in range(300)]
    areas = [h * w / (120 * 160) for _, _, h, w in boxes]
    ratios = [w / h for _, _, h, w in boxes]
    assert 0.47 < min(areas) and max(areas) <= 1.0 and max(areas) - min(areas) > 0.3
    assert 0.7 < min(ratios) and max(ratios) < 1.4
    assert all(0 <= i <= 120 - h and 0 <= j <= 160 - w for i, j, h, w in boxes)
    again = [transforms.random_resized_crop_box(120, 160, torch.Generator().manual_seed(0)) for _ in range(1)]
    assert again[0] == boxes[0]  # seeded generator -> same crop


def test_joint_transform_keeps_image_and_mask_aligned():
    frame = np.zeros((96, 96, 3), dtype=np.uint8)
    frame[:, 48:, 0] = 255  # right half red
    mask = np.zeros((96, 96), dtype=np.int64)
    mask[:, 48:] = 3  # the same right half as class 3
    flips = set()
    for seed in range(8):
        image, out = transforms.train_image_mask(frame, mask, 32, torch.Generator().manual_seed(seed))
        assert out.dtype == torch.int64 and set(out.unique().tolist()) <= {0, 3}
        red = image[0] * transforms.IMAGENET_STD[0] + transforms.IMAGENET_MEAN[0]  # back to [0, 1]
        agree = ((red > 0.5) == (out == 3)).float().mean()
        assert agree > 0.95, (seed, agree)
        flips.add(bool(out[:, 0].eq(3).all()))  # red on the left -> flipped
    assert flips == {True, False}


def test_empty_span_is_probed_from_the_file(smoke, tmp_path):
    rows = read_manifest(smoke / "manifest.csv", "val")
    for r in rows:
        r["start"], r["end"] = "", ""
    write_manifest(tmp_path, rows, classes=read_classes(smoke))
    probed = AVClipDataset(tmp_path, "val", False, S)
    given = AVClipDataset(smoke, "val", False, S)
    assert torch.equal(probed[0]["audio"], given[0]["audio"])
    assert abs(float(probed.rows[0]["end"]) - 3.0) < 0.07


def test_too_short_audio_is_refused_not_padded(smoke, tmp_path):
    import soundfile

    rows = read_manifest(smoke / "manifest.csv", "val")
    row = next(r for r in rows if r["audio"])
    short = tmp_path / "short.wav"
    soundfile.write(short, np.full(1600, 0.1, dtype=np.float32), 16000)  # 0.1 s
    row["audio"], row["end"] = str(short), "3.0"
    write_manifest(tmp_path, [row], classes=read_classes(smoke))
    with pytest.raises(MediaError, match=r"short\.wav: too short: 0\.100 s of audio"):
        AVClipDataset(tmp_path, "val", False, S)[0]


def test_masks_and_boxes_follow_the_annotated_video_frame(smoke, tmp_path):
    import av

    video = tmp_path / "grey.mp4"  # 12 frames at 4 fps, frame k has grey level 20 + 15 k
    with av.open(str(video), "w") as container:
        stream = container.add_stream("mpeg4", rate=4)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for k in range(12):
            vf = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 20 + 15 * k, dtype=np.uint8), format="rgb24")
            vf.pts = k
            container.mux(stream.encode(vf))
        container.mux(stream.encode())
    row = next(r for r in read_manifest(smoke / "manifest.csv", "val") if r["audio"])
    Image.fromarray(np.full((64, 64), 255, dtype=np.uint8)).save(tmp_path / "full.png")
    row.update(video=str(video), frame="", frame_time="2.0", mask=str(tmp_path / "full.png"),
               boxes=json.dumps([[[0, 0, 64, 64]]]))
    write_manifest(tmp_path, [row], classes=read_classes(smoke))
    level = (20 + 15 * 8) / 255  # the frame at t = 2.0 s
    mean, std = transforms.IMAGENET_MEAN[0], transforms.IMAGENET_STD[0]
    for ds in (SegmentationDataset(tmp_path, "val", True, 32, 1), LocalizationDataset(tmp_path, "val", True, 32)):
        for seed in range(3):
            torch.manual_seed(seed)
            red = ds[0]["image"][0] * std + mean
            assert abs(red.mean().item() - level) < 0.03, (type(ds).__name__, seed, red.mean().item())


def test_decoded_memo_gives_the_same_items_and_decodes_each_clip_once(smoke, monkeypatch):
    """data.cache_decoded (issue 15): every dataset's items with the memo equal those without it, train
    (same RNG draws: gain on the cached mel power, clamped windows from the wave) and eval, and a second
    pass decodes nothing (read_audio / read_frame are not called again)."""
    from avfusion.data import datasets as ds_module
    from avfusion.data.datasets import DECODED

    def items(train):
        torch.manual_seed(11)
        return {name: [ds[i] for i in range(min(6, len(ds)))] for name, ds in _datasets(smoke, "train" if train else "test", train).items()}

    try:
        for train in (True, False):
            DECODED.enable(False)
            raw = items(train)
            DECODED.enable(True)
            first, second = items(train), None
            calls = []
            monkeypatch.setattr(ds_module, "read_audio", lambda *a, **k: calls.append(a) or media.read_audio(*a, **k))
            monkeypatch.setattr(ds_module, "read_frame", lambda *a, **k: calls.append(a) or media.read_frame(*a, **k))
            second = items(train)
            monkeypatch.undo()
            assert calls == [], f"the memo decoded again: {calls[:2]}"
            for name in raw:
                for a, b, c in zip(raw[name], first[name], second[name]):
                    for key in a:
                        # log-mel: the gain applied to the power instead of the wave (float rounding only)
                        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-3 if "audio" in key else 0)
                        assert torch.equal(b[key], c[key])
    finally:
        DECODED.enable(False)


def test_decoded_file_fills_the_memo_so_a_job_decodes_nothing(smoke, tmp_path, monkeypatch):
    """`make-tuxav --decoded` (issue 15): decoded.pt holds every clip's eval decodes; a job with the memo
    on reads them from it (memory-mapped) and gives the same eval items without decoding audio or a still
    frame; a decoded.pt of another manifest.csv is ignored."""
    from avfusion.data import datasets as ds_module
    from avfusion.data.datasets import DECODED, write_decoded

    root = tmp_path / "smoke"
    shutil.copytree(smoke, root)
    DECODED.enable(False)
    raw = [ds[i] for ds in _datasets(root, "test", False).values() for i in range(4)]
    assert write_decoded(root) == root / "decoded.pt"
    calls = []
    monkeypatch.setattr(ds_module, "read_audio", lambda *a, **k: calls.append(a) or media.read_audio(*a, **k))
    try:
        DECODED.enable(True)
        got = [ds[i] for ds in _datasets(root, "test", False).values() for i in range(4)]
        assert calls == []
        for a, b in zip(raw, got):
            for key in a:
                torch.testing.assert_close(b[key], a[key], rtol=0, atol=0)
        DECODED.enable(False)
        # format 1 (one record per tensor, written before 2026-12-02) gives the same memo as format 2
        DECODED.enable(True)
        DECODED.attach(root)
        packed = {key: (value[0].clone(), value[1]) if key[0] == "mel_power" else value.copy() if key[0] == "frame"
                  else value.clone() for key, value in DECODED.items.items()}   # copies: views of the file's map
        DECODED.enable(False)
        data = torch.load(root / "decoded.pt", weights_only=True)
        items = []
        for kind, rest, value in ds_module._decoded_values(data):   # format 1: a tensor of its own per record
            value = (value[0].clone(), torch.tensor(value[1])) if kind == "mel_power" else value.clone()
            items.append((kind, rest, value))
        torch.save({"manifest_sha1": data["manifest_sha1"], "items": items}, root / "decoded.pt.tmp")
        (root / "decoded.pt.tmp").replace(root / "decoded.pt")
        DECODED.enable(True)
        DECODED.attach(root)
        assert packed.keys() == DECODED.items.keys() and len(packed) > 0
        for key, value in packed.items():
            other = DECODED.items[key]
            if key[0] == "mel_power":
                assert torch.equal(value[0], other[0]) and value[1] == other[1]
            else:
                assert (value == other).all() and value.shape == other.shape, key
        DECODED.enable(False)
        (root / "manifest.csv").write_text((root / "manifest.csv").read_text() + "\n")   # another manifest
        DECODED.enable(True)
        _datasets(root, "test", False)["clip"][0]
        assert calls, "a decoded.pt of another manifest.csv must not be used"
    finally:
        DECODED.enable(False)


def test_uint8_training_items_normalise_to_the_float_items(tuxav_smoke):
    """train_image_dtype uint8: a training item's image is the uint8 crop whose `normalize_uint8` is the
    default item's image bit for bit (same sample seed); evaluation items stay float32; the datasets whose
    frame and map share one float crop refuse the option, naming the config key."""
    from torch.utils.data import default_collate

    from avfusion.data.datasets import AVClipDataset, LocalizationDataset, MixtureDataset
    from avfusion.engine import seed_everything
    from avfusion.transforms import normalize_batch_images

    for cls in (AVClipDataset, MixtureDataset):
        floats = cls(tuxav_smoke, "train", train=True, image_size=64)
        bytes_ = cls(tuxav_smoke, "train", train=True, image_size=64, train_image_dtype="uint8")
        def items(dataset):
            out = []
            for i in range(4):
                seed_everything(i)  # the crop, flip, window and gain draws (the engine seeds each sample)
                out.append(dataset[i])
            return out

        items32, items8 = items(floats), items(bytes_)
        assert items8[0]["image"].dtype == torch.uint8 and items32[0]["image"].dtype == torch.float32
        batch32, batch8 = default_collate(items32), normalize_batch_images(default_collate(items8))
        assert set(batch8) == set(batch32)
        for key, value in batch32.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(batch8[key], value), (cls.__name__, key)
        assert cls(tuxav_smoke, "val", train=False, image_size=64,
                   train_image_dtype="uint8")[0]["image"].dtype == torch.float32
    with pytest.raises(ValueError, match="data.train_image_dtype"):
        LocalizationDataset(tuxav_smoke, "train", train=True, image_size=64, train_image_dtype="uint8")
