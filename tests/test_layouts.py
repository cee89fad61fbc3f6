"""Dataset layout parsers: the real official metadata parses with its published counts, and small
official-layout trees built from real media give the right manifests and counted skips."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import av
import pytest
from PIL import Image

from avfusion.data.layouts import (DATASETS, METADATA_COUNTS, PARSERS, avsbench, flickr, music,
                                   prepare, vggmusic, vgginstruments, vggsound, vggss)
from avfusion.data.manifest import read_classes, read_manifest


# ----------------------------------------------------------------------------- helpers

@pytest.fixture(scope="module")
def media(testdata: Path) -> dict:
    return media_files(testdata)


def media_files(testdata: Path) -> dict:
    """The real test media by kind (mp4 with audio, wav, png) and the official metadata folder."""
    demos = testdata / "deepavfusion" / "demos"
    return {"mp4": sorted((testdata / "clipsep_mixtures").glob("*/*/av.mp4")),  # 4.08 s, video + audio
            "wav": sorted(demos.glob("demo*_orig.wav")),                        # 3 s, 16 kHz
            "png": sorted(demos.glob("demo*_orig.png")),
            "meta": testdata / "deepavfusion" / "metadata"}


def put(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


def truncated(src: Path, dst: Path) -> Path:
    """A real file cut to a third: the 'corrupt media' case."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 3])
    return dst


def video_only(src: Path, dst: Path) -> Path:
    """Re-mux only the video stream of a real mp4 (an mp4 without audio)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    return dst


def jpg(src_png: Path, dst: Path, size: tuple[int, int] | None = None) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    img = Image.open(src_png).convert("RGB")
    (img.resize(size) if size else img).save(dst, quality=90)
    return dst


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    """Rows written with csv quoting, as the official files quote 'violin,_fiddle'."""
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return path


def reasons(report: dict) -> dict:
    """Skip reasons without the decoder's exception name ('unreadable media (InvalidDataError)')."""
    return {k.split(" (")[0]: v for k, v in report["reasons"].items()}


def report_of(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def pairs_of(out: Path) -> list[dict]:
    with open(out / "pairs.csv", newline="") as fh:
        return list(csv.DictReader(fh))


# ----------------------------------------------------------------------------- metadata only

def test_vggss_json_has_5158_entries_and_18_corrupt_boxes(media):
    counts = vggss.metadata_counts(media["meta"] / "vggss.json")
    assert counts["entries"] == 5158 and counts["boxes"] == 5941 and counts["classes"] == 221
    assert counts["corrupt_boxes"] == 18
    assert counts["corrupt_by_reason"] == {"outside [0, 1] (sentinel coordinate), empty after clipping": 12,
                                           "zero area": 6}
    assert counts["entries_without_valid_box"] == 2
    assert vggss.metadata_counts() == counts  # the shipped gzipped copy is the same file


def test_vggss_clip_box_rules():
    assert vggss.clip_box([0.1, 0.2, 0.5, 0.9]) == ([0.1, 0.2, 0.5, 0.9], None)
    assert vggss.clip_box([0.3, 0.2, 1.2, 0.9]) == ([0.3, 0.2, 1.0, 0.9], None)  # clipped, kept
    assert vggss.clip_box([0.38, 0.86, 0.70, -2.88e16])[1].startswith("outside")
    assert vggss.clip_box([0.0, 0.53, 0.0, 0.99]) == (None, "zero area")


def test_vggmusic_eval_pairs_counts_and_comma_classes(media):
    counts = vggmusic.metadata_counts(media["meta"] / "vggmusic_train.txt", media["meta"] / "vggmusic_eval_ss.csv")
    assert counts["eval_pairs"] == 1201 and counts["easy"] == 910 and counts["hard"] == 291
    assert counts["pairs_with_comma_class"] == 109
    assert counts["train_clips"] == 38704 and counts["train_classes"] == 49
    assert counts["eval_clips"] == 1201
    assert counts["eval_classes_unknown_to_train"] == []  # bug 28 fixed: comma names map to train folders
    assert vggmusic.music_folder("violin,_fiddle") == vggmusic.music_folder("violin") == "violin__fiddle"
    assert vggmusic.music_folder("steel_guitar,_slide_guitar") == "steel_guitar__slide_guitar"


def test_vgginstruments_has_37_classes_and_446_test_ids(media):
    counts = vgginstruments.metadata_counts()
    assert counts == {"train_clips": 33934, "train_classes": 37, "three_field_lines": 1979, "test_ids": 446}


def test_music_duet_boxes_are_xywh(media):
    counts = music.duet_metadata_counts(media["meta"] / "music_duet.json")
    assert counts["entries"] == 1020 and counts["boxes"] == 2040 and counts["test_ids"] == 1020
    assert counts["boxes_valid_as_xywh"] == 2040  # x + w <= 1 and y + h <= 1 everywhere
    assert counts["boxes_inverted_if_read_as_xyxy"] == 1027
    assert music.xywh_to_pixel_xyxy([0.25, 0.5, 0.5, 0.25], 200, 100) == [50.0, 50.0, 150.0, 75.0]


def test_avsbench_repo_split_lists_3452_740_740_videos(media):
    counts = avsbench.metadata_counts({"train": media["meta"] / "avsbench_train.txt",
                                       "val": media["meta"] / "avsbench_val.csv",
                                       "test": media["meta"] / "avsbench_test.csv"})
    assert [counts[s]["videos"] for s in ("train", "val", "test")] == [3452, 740, 740]
    assert [counts[s]["rows"] for s in ("train", "val", "test")] == [17260, 3700, 3700]
    assert {counts[s]["classes"] for s in counts} == {23}


def test_every_shipped_metadata_file_parses_without_media():
    counts = {name: fn() for name, fn in METADATA_COUNTS.items()}
    assert counts["vggss"]["entries"] == 5158 and counts["vggsound_music"]["eval_pairs"] == 1201
    assert counts["avsbench"]["val"]["videos"] == 740 and counts["music_duet"]["entries"] == 1020


def test_flickr_and_vggsound_lists(media):
    assert flickr.metadata_counts() == {"test_ids": 250, "unique_test_ids": 250, "train_ids": 4750}
    assert vggsound.metadata_counts(media["meta"] / "vggsound_test.csv") == {"test_clips": 15446, "test_classes": 309}


# ----------------------------------------------------------------------------- end to end

def test_vggsound_tree_manifest_and_counted_skips(tmp_path, media):
    root, mp4 = tmp_path / "vggsound", media["mp4"]
    write_lines(root / "annotations" / "vggsound.csv", [
        'aaaaaaaaaaa,30,"playing violin, fiddle",train',
        'bbbbbbbbbbb,0,"dog barking",train',
        'ccccccccccc,12,"dog barking",test',
        'ddddddddddd,5,"cat (growling)",test',     # missing file
        'eeeeeeeeeee,40,"dog barking",train',      # corrupt (truncated) mp4
        'fffffffffff,50,"dog barking",test',       # mp4 without audio
        'bbbbbbbbbbb,0,"dog barking",train',       # duplicate row
    ])
    clips = root / "clips"
    put(mp4[0], clips / "playing_violin__fiddle" / "aaaaaaaaaaa_000030_000040.mp4")
    put(mp4[1], clips / "dog_barking" / "bbbbbbbbbbb_000000_000010.mp4")
    put(mp4[2], clips / "dog_barking" / "ccccccccccc_000012_000022.mp4")
    truncated(mp4[3], clips / "dog_barking" / "eeeeeeeeeee_000040_000050.mp4")
    video_only(mp4[4], clips / "dog_barking" / "fffffffffff_000050_000060.mp4")

    out = tmp_path / "out"
    report = prepare("vggsound", root, out)
    rows = read_manifest(out / "manifest.csv")
    assert [(r["clip_id"], r["split"], r["label"]) for r in rows] == [
        ("aaaaaaaaaaa_000030", "train", "playing_violin__fiddle"),
        ("bbbbbbbbbbb_000000", "train", "dog_barking"),
        ("ccccccccccc_000012", "test", "dog_barking")]
    assert all(Path(r["video"]).is_absolute() and Path(r["video"]).is_file() for r in rows)
    assert float(rows[0]["end"]) == pytest.approx(4.08, abs=0.01)  # probed duration of the real clip
    assert read_classes(out) == ["cat__growling_", "dog_barking", "playing_violin__fiddle"]
    assert report["kept"] == 3 and report["skipped"] == 4
    assert reasons(report) == {"missing video file": 1, "unreadable media": 1,
                                 "no audio stream": 1, "duplicate entry": 1}
    assert report_of(out) == report

    # without probing, the truncated and the video-only files pass (existence only)
    quick = prepare("vggsound", root, tmp_path / "quick", check_media=False)
    assert quick["kept"] == 5 and quick["reasons"] == {"missing video file": 1, "duplicate entry": 1}


def test_audioset_tree_multilabel(tmp_path, media):
    root = tmp_path / "audioset"
    ann = root / "annotations"
    write_lines(ann / "class_labels_indices.csv", ["index,mid,display_name", '0,/m/09x0r,"Speech"',
                                                   '1,/m/0jbk,"Animal"', '2,/m/04rlf,"Music"'])
    header = ["# Segments csv created Sun Mar  5 10:54:31 2017", "# num_ytids=2, num_segs=2, num_unique_labels=3",
              "# YTID, start_seconds, end_seconds, positive_labels"]
    write_lines(ann / "unbalanced_train_segments.csv", header + [
        '-0RWZT-miFs, 420.000, 430.000, "/m/09x0r,/m/04rlf"', 'zzzzzzzzzzz, 30.000, 40.000, "/m/xxxxx"'])
    write_lines(ann / "eval_segments.csv", header + ['--4gqARaEJE, 0.000, 10.000, "/m/0jbk"',
                                                     '--BfvyPmVMo, 20.000, 30.000, "/m/0jbk"'])
    put(media["mp4"][0], root / "clips" / "-0" / "-0RWZT-miFs_000420_000430.mp4")
    put(media["mp4"][1], root / "clips" / "--" / "--4gqARaEJE_000000_000010.mp4")

    report = prepare("audioset", root, tmp_path / "out")
    rows = read_manifest(tmp_path / "out" / "manifest.csv")
    assert [(r["clip_id"], r["split"], r["label"]) for r in rows] == [
        ("-0RWZT-miFs_000420", "train", "Speech|Music"), ("--4gqARaEJE_000000", "test", "Animal")]
    assert read_classes(tmp_path / "out") == ["Speech", "Animal", "Music"]
    assert report["reasons"] == {"unknown class": 1, "missing video file": 1}


def test_vggmusic_tree_pairs_with_comma_classes(tmp_path, media):
    meta, mp4 = media["meta"], media["mp4"]
    eval_rows = list(csv.reader(open(meta / "vggmusic_eval_ss.csv")))
    comma = next(r for r in eval_rows[1:] if r[2] == "violin,_fiddle" and "," not in r[3])
    plain = next(r for r in eval_rows[1:] if "," not in r[2] + r[3] and r[0] not in comma[:2] and r[1] not in comma[:2])
    pairs_csv = write_csv(tmp_path / "eval.csv", [eval_rows[0], comma, plain])
    train_rows = list(csv.reader(open(meta / "vggmusic_train.txt")))
    needed = {vggmusic.music_folder(c) for c in (comma[2], comma[3], plain[2], plain[3])}
    train = [next(r for r in train_rows if vggmusic.music_folder(r[1]) == cls) for cls in sorted(needed)]
    train_txt = write_lines(tmp_path / "train.txt", [",".join(r) for r in train])
    violin = next(r for r in train if r[1] == "violin")

    root = tmp_path / "vggsound"
    files = [(comma[0], comma[2]), (comma[1], comma[3]), (plain[0], plain[2]), (violin[0], violin[1])]
    for (key, cls), src in zip(files, mp4):
        ytid, start = key[:11], int(key[-6:])
        put(src, root / "clips" / f"playing_{vggmusic.music_folder(cls)}" / f"{ytid}_{start:06d}_{start + 10:06d}.mp4")
    # plain[1] and the other train clips have no file: counted skips; plain's pair is skipped

    out = tmp_path / "out"
    report = prepare("vggsound_music", root, out, train_list=train_txt, eval_pairs=pairs_csv)
    rows = {r["clip_id"]: r for r in read_manifest(out / "manifest.csv")}
    assert rows[comma[0]]["label"] == "violin__fiddle" and "playing_violin__fiddle" in rows[comma[0]]["video"]
    assert rows[violin[0]]["split"] == "train" and rows[violin[0]]["label"] == "violin__fiddle"
    assert sorted(rows) == sorted({comma[0], comma[1], plain[0], violin[0]})
    assert report["kept"] == 4 and report["reasons"] == {"missing video file": 1 + len(train) - 1}
    assert report["details"]["pairs_skipped"] == {"source clip skipped": 1}
    assert pairs_of(out) == [{"pair_id": "00000", "split": "test", "clip_id_1": comma[0],
                              "clip_id_2": comma[1], "sep_type": comma[4]}]
    assert read_classes(out) == sorted(needed)

    # the official naming keeps the comma: the violin pair no longer resolves (spec 8 item 28)
    official = prepare("vggsound_music", root, tmp_path / "official", train_list=train_txt,
                       eval_pairs=pairs_csv, official_eval_names=True)
    assert official["details"]["pairs_skipped"] == {"source clip skipped": 2}


def test_vgginstruments_holdout_and_fixed_pairs(tmp_path, media):
    lines = ["aaaaaaaaaaa_000010,violin,_fiddle", "bbbbbbbbbbb_000020,cello", "ccccccccccc_000000,flute",
             "ddddddddddd_000030,cello", "eeeeeeeeeee_000000,piano"]
    train_txt = write_lines(tmp_path / "train.txt", lines)
    root = tmp_path / "vggsound"
    for line, src in zip(lines[:4], media["mp4"]):
        key, cls = line.split(",", 1)
        put(src, root / "clips" / f"playing_{vggmusic.music_folder(cls)}" / f"{key[:11]}_{int(key[-6:]):06d}_{int(key[-6:]) + 10:06d}.mp4")
    out = tmp_path / "out"
    report = prepare("vggsound_instruments", root, out, train_list=train_txt, holdout_every=2)
    rows = read_manifest(out / "manifest.csv")
    assert {r["clip_id"]: r["split"] for r in rows} == {  # every 2nd sorted YouTube id held out
        "aaaaaaaaaaa_000010": "test", "bbbbbbbbbbb_000020": "train",
        "ccccccccccc_000000": "test", "ddddddddddd_000030": "train"}
    assert report["reasons"] == {"missing video file": 1}
    pairs = pairs_of(out)
    assert {(p["clip_id_1"], p["clip_id_2"]) for p in pairs} == {
        ("aaaaaaaaaaa_000010", "ccccccccccc_000000"), ("ccccccccccc_000000", "aaaaaaaaaaa_000010")}
    assert prepare("vggsound_instruments", root, tmp_path / "again", train_list=train_txt,
                   holdout_every=2) == report and pairs_of(tmp_path / "again") == pairs  # deterministic
    with pytest.raises(ValueError, match="exclude_classes"):
        prepare("vggsound_instruments", root, out, train_list=train_txt, exclude_classes=("tuba",))


def test_music_solo_tree_eval_rule(tmp_path, media):
    root = tmp_path / "MUSIC"
    write_lines(root / "anno" / "music_solo.csv", ["yid,cls,url", "vid00000001,acoustic guitar,x",
                                                   "vid00000002,violin,x", "vid00000003,violin,x",
                                                   "vid00000004,cello,x"])
    clips = root / "clips_360p_segm"
    put(media["mp4"][0], clips / "acoustic_guitar" / "vid00000001.0.mp4")
    put(media["mp4"][1], clips / "acoustic_guitar" / "vid00000001.1.mp4")
    put(media["mp4"][2], clips / "violin" / "vid00000002.0.mp4")
    truncated(media["mp4"][3], clips / "violin" / "vid00000003.0.mp4")
    report = prepare("music_solo", root, tmp_path / "out")
    rows = read_manifest(tmp_path / "out" / "manifest.csv")
    # 3 videos with files -> every (3 // 130 -> 1)st: all are evaluation videos under the code rule
    assert {r["clip_id"]: (r["split"], r["label"], r["source"]) for r in rows} == {
        "vid00000001.0": ("test", "acoustic_guitar", "vid00000001"),
        "vid00000001.1": ("test", "acoustic_guitar", "vid00000001"),
        "vid00000002.0": ("test", "violin", "vid00000002")}
    assert reasons(report) == {"missing video file": 1, "unreadable media": 1}
    pairs = pairs_of(tmp_path / "out")
    assert len(pairs) == 3 and all({p["clip_id_1"][:11], p["clip_id_2"][:11]} == {"vid00000001", "vid00000002"}
                                   for p in pairs)
    assert music.held_out_videos([f"v{i:03d}" for i in range(448)], [], "paper")[0].__len__() == 90
    assert len(music.held_out_videos([f"v{i:03d}" for i in range(448)], [], "code")[0]) == 150  # spec 8 item 15


def test_avsbench_tree_s4_and_avss(tmp_path, media):
    root = tmp_path / "AVSBench"
    write_lines(root / "metadata.csv", ["vid,uid,s_min,s_sec,a_obj,split,label",
                                        "v1,v1-uid,0,0,guitar,train,v1s", "v2,v2-uid,0,0,dog,val,v1s",
                                        "v3,v3-uid,0,0,man_off-the-screen,test,v2", "v4,v4-uid,0,0,tuba,val,v1s",
                                        "v5,v5-uid,0,0,dog,test,v1s"])
    (root / "label2idx.json").write_text(json.dumps({"background": 1, "guitar": 2, "dog": 3, "man": 4}))
    wav, png = media["wav"], media["png"]
    for folder, frames, audio in (("v1s/v1-uid", [0], wav[0]), ("v1s/v2-uid", [0, 1, 2], wav[1]),
                                  ("v2/v3-uid", [0, 1], wav[2]), ("v1s/v5-uid", [0], None)):
        for k in frames:
            jpg(png[k % len(png)], root / folder / "frames" / f"{k}.jpg")
            mask = Image.open(png[k % len(png)]).convert("L").point(lambda v: 1 if v > 128 else 0)
            (root / folder / "labels_semantic").mkdir(parents=True, exist_ok=True)
            mask.save(root / folder / "labels_semantic" / f"{k}.png")
        if audio:
            put(audio, root / folder / "audio.wav")
    (root / "v1s/v2-uid/frames/2.jpg").unlink()                       # missing frame
    truncated(png[0], root / "v1s/v2-uid/labels_semantic/1.png")       # corrupt mask

    out = tmp_path / "s4"
    report = prepare("avsbench_s4", root, out)
    rows = read_manifest(out / "manifest.csv")
    assert [(r["clip_id"], r["split"], r["label"], r["frame_time"]) for r in rows] == [
        ("v1-uid_0", "train", "guitar", "0.5"), ("v2-uid_0", "val", "dog", "0.5")]
    assert rows[0]["mask"].endswith("v1s/v1-uid/labels_semantic/0.png") and rows[0]["audio"].endswith("audio.wav")
    assert float(rows[0]["end"]) == pytest.approx(3.0)
    assert reasons(report) == {"missing image file": 1, "unreadable mask": 1,
                                 "unknown class": 1, "missing audio file": 1}
    assert report["details"]["rows_not_in_task"] == {"v2": 1}
    assert read_classes(out) == ["background", "guitar", "dog", "man"]
    assert report["details"]["label2idx_first_index"] == 1

    avss = prepare("avsbench_avss", root, tmp_path / "avss")
    labels = {r["clip_id"]: r["label"] for r in read_manifest(tmp_path / "avss" / "manifest.csv")}
    assert labels["v3-uid_1"] == "man|background"  # 'off-the-screen' -> 'background'
    assert avss["kept"] == 4


def test_flickr_tree_boxes_in_frame_pixels(tmp_path, media):
    root = tmp_path / "Flickr"
    ids = ["10000130166", "10007936344", "10008553263"]
    test_csv = write_lines(tmp_path / "test.csv", [f"{i},0" for i in ids])
    train_txt = write_lines(tmp_path / "train.txt", ["10000255784"])
    xml = ("<annotation><filename>{id}.jpg</filename>"
           "<object><bbox><idx>1</idx><xmin>32</xmin><ymin>64</ymin><xmax>128</xmax><ymax>192</ymax></bbox></object>"
           "<object><bbox><idx>2</idx><xmin>40</xmin><ymin>60</ymin><xmax>140</xmax><ymax>200</ymax></bbox></object>"
           "<object><bbox><idx>3</idx><xmin>50</xmin><ymin>50</ymin><xmax>20</xmax><ymax>100</ymax></bbox></object>"
           "</annotation>")
    for n, vid in enumerate(ids + ["10000255784"]):
        jpg(media["png"][n % 4], root / "frames" / f"{vid}.jpg", size=(512, 384) if n == 0 else (256, 256))
        write_lines(root / "Annotations" / f"{vid}.xml", [xml.format(id=vid)])
        if n != 2:
            put(media["wav"][n % 4], root / "audio" / f"{vid}.wav")
    out = tmp_path / "out"
    report = prepare("flickr_soundnet_5k", root, out, test_list=test_csv, train_list=train_txt)
    rows = {r["clip_id"]: r for r in read_manifest(out / "manifest.csv")}
    assert sorted(rows) == ["10000130166", "10000255784", "10007936344"]
    # frame 512 x 384: x * 2, y * 1.5; the inverted third box is dropped and counted
    assert json.loads(rows["10000130166"]["boxes"]) == [[[64.0, 96.0, 256.0, 288.0]], [[80.0, 90.0, 280.0, 300.0]]]
    assert json.loads(rows["10007936344"]["boxes"]) == [[[32.0, 64.0, 128.0, 192.0]], [[40.0, 60.0, 140.0, 200.0]]]
    assert rows["10000255784"]["split"] == "train" and rows["10000130166"]["split"] == "test"
    assert float(rows["10000130166"]["frame_time"]) == pytest.approx(1.5)
    assert report["reasons"] == {"missing audio file": 1}
    assert report["details"]["boxes_dropped"] == {"empty or inverted": 3}
    # the manifest tells the Dataset to build Flickr's consensus map: one box alone = 0.5, two = 1
    assert report["details"]["box_rule"] == "consensus"
    from avfusion.data.datasets import LocalizationDataset

    gt = LocalizationDataset(out, "test", train=False, image_size=224)[1]["gt_map"]
    assert sorted(set(gt.unique().tolist())) == [0.0, 0.5, 1.0]


def test_vggss_tree_boxes_and_corrupt_entries(tmp_path, media):
    root = tmp_path / "VGGSS"
    entries = {e["file"]: e for e in json.loads((media["meta"] / "vggss.json").read_text())}
    ids = ["UyCw7pCgYg8_000055", "M1P1xla8rg0_000000", "zpWuikVorYg_000032", "gEvCUcZ6w88_000030"]
    test_csv = write_lines(tmp_path / "test.csv", ids)
    for n, file in enumerate(ids[:3]):
        jpg(media["png"][n], root / "frames" / f"{file}.jpg", size=(320, 240))
        put(media["wav"][n], root / "audio" / f"{file}.wav")
    truncated(media["png"][3], root / "frames" / f"{ids[3]}.jpg")
    put(media["wav"][3], root / "audio" / f"{ids[3]}.wav")

    out = tmp_path / "out"
    report = prepare("vggss", root, out, test_list=test_csv)
    rows = {r["clip_id"]: r for r in read_manifest(out / "manifest.csv")}
    assert sorted(rows) == ["UyCw7pCgYg8_000055", "zpWuikVorYg_000032"]
    x1, y1, x2, y2 = entries["zpWuikVorYg_000032"]["bbox"][0]
    assert json.loads(rows["zpWuikVorYg_000032"]["boxes"]) == [[[x1 * 320, y1 * 240, x2 * 320, y2 * 240]]]
    assert len(json.loads(rows["UyCw7pCgYg8_000055"]["boxes"])[0]) == 2  # 3 boxes, 1 zero-area dropped
    assert rows["zpWuikVorYg_000032"]["label"] == "elk_bugling"
    assert reasons(report) == {"no valid box": 1, "unreadable image": 1}
    assert report["details"]["boxes_dropped"] == {"zero area": 2}

    kept = prepare("vggss", root, tmp_path / "keep", test_list=test_csv, keep_entries_without_boxes=True)
    empty = {r["clip_id"]: r for r in read_manifest(tmp_path / "keep" / "manifest.csv")}["M1P1xla8rg0_000000"]
    assert json.loads(empty["boxes"]) == [[]] and kept["kept"] == 3


def test_music_duet_tree_xywh_to_pixels(tmp_path, media):
    root = tmp_path / "MUSIC"
    entries = json.loads((media["meta"] / "music_duet.json").read_text())[:2]
    test_csv = write_lines(tmp_path / "test.csv", [e["file"] for e in entries])
    train_txt = write_lines(tmp_path / "train.txt", ["K_U5-GbPgi0_098_02961,cello,acoustic_guitar"])
    for n, file in enumerate([e["file"] for e in entries] + ["K_U5-GbPgi0_098_02961"]):
        jpg(media["png"][n], root / "duet" / "frames" / f"{file}.jpg", size=(400, 300))
        if n != 1:
            put(media["wav"][n], root / "duet" / "audio" / f"{file}.wav")
    report = prepare("music_duet", root, tmp_path / "out", test_list=test_csv, train_list=train_txt)
    rows = read_manifest(tmp_path / "out" / "manifest.csv")
    assert [(r["clip_id"], r["split"]) for r in rows] == [(entries[0]["file"], "test"), ("K_U5-GbPgi0_098_02961", "train")]
    x, y, w, h = entries[0]["bbox_src1"]
    box1 = json.loads(rows[0]["boxes"])[0][0]
    assert box1 == pytest.approx([x * 400, y * 300, (x + w) * 400, (y + h) * 300])
    assert rows[0]["label"] == f"{entries[0]['class_src1']}|{entries[0]['class_src2']}" and rows[1]["boxes"] == ""
    assert report["reasons"] == {"missing audio file": 1}


def test_prepare_rejects_unknown_dataset_option_and_root(tmp_path):
    assert set(PARSERS) <= set(DATASETS) and "flickr_soundnet_5k" in DATASETS
    with pytest.raises(ValueError, match="unknown dataset 'kinetics'"):
        prepare("kinetics", tmp_path, tmp_path / "out")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['eval_rule'\]"):
        prepare("vggss", tmp_path, tmp_path / "out", eval_rule="paper")
    with pytest.raises(FileNotFoundError, match="dataset root not found"):
        prepare("vggsound", tmp_path / "nope", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="metadata file not found"):
        prepare("vggss", tmp_path, tmp_path / "out", boxes_json=tmp_path / "missing.json")


def test_vggmusic_paper_train_source_reads_vggsound_csv(tmp_path, media):
    root = tmp_path / "vggsound"
    write_lines(root / "annotations" / "vggsound.csv", [
        'aaaaaaaaaaa,30,"playing cello",train', 'bbbbbbbbbbb,0,"dog barking",train',
        'ccccccccccc,10,"playing violin, fiddle",train', 'ddddddddddd,20,"playing cello",test'])
    put(media["mp4"][0], root / "clips" / "playing_cello" / "aaaaaaaaaaa_000030_000040.mp4")
    put(media["mp4"][1], root / "clips" / "playing_violin__fiddle" / "ccccccccccc_000010_000020.mp4")
    put(media["mp4"][2], root / "clips" / "playing_cello" / "ddddddddddd_000020_000030.mp4")
    pairs_csv = write_csv(tmp_path / "eval.csv", [["source_1", "source_2", "class_1", "class_2", "sep_type"],
                                                  ["ddddddddddd_000020", "ccccccccccc_000010", "cello", "violin,_fiddle", "Easy"]])
    report = prepare("vggsound_music", root, tmp_path / "out", eval_pairs=pairs_csv, train_source="vggsound_csv")
    rows = {r["clip_id"]: r["split"] for r in read_manifest(tmp_path / "out" / "manifest.csv")}
    # 'dog barking' is not a music class; the test-split cello row only enters through the pairs;
    # the violin clip is both a train row and an evaluation source: kept once, as test
    assert rows == {"aaaaaaaaaaa_000030": "train", "ccccccccccc_000010": "test", "ddddddddddd_000020": "test"}
    assert report["reasons"] == {"train clip is also an evaluation clip": 1}
    assert len(read_classes(tmp_path / "out")) == 49 and len(pairs_of(tmp_path / "out")) == 1


def test_music_duets_held_out_by_the_code_rule(tmp_path, media):
    root = tmp_path / "MUSIC"
    write_lines(root / "anno" / "music_solo.csv", ["yid,cls,url", "solo0000001,cello,x", "solo0000002,flute,x"])
    write_lines(root / "anno" / "music21_duet.csv", ["yid,cls,url", "duet0000001,cello flute,x"])
    for n, (cls, yid) in enumerate([("cello", "solo0000001"), ("flute", "solo0000002"), ("cello_flute", "duet0000001")]):
        put(media["mp4"][n], root / "clips_360p_segm" / cls / f"{yid}.0.mp4")
    report = prepare("music", root, tmp_path / "out", check_media=False)
    assert {r["clip_id"] for r in read_manifest(tmp_path / "out" / "manifest.csv")} == {"solo0000001.0", "solo0000002.0"}
    assert report["reasons"] == {"held-out duet (code rule: neither trained nor evaluated)": 1}
    assert report["details"]["duet_videos"] == 1
