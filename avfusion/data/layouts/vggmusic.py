"""VGGSound-Music (separation / classification over 49 music classes) -> manifest + pairs.csv.

Media: the VGGSound clip tree, `{root}/clips/playing_{CLS}/{YTID}_{start:06d}_{start+10:06d}.mp4`.
Metadata (official repo, shipped in avfusion/data/layouts/metadata/, override by path):
    vggmusic_train.txt      `YTID_SSSSSS,cls` (38 704 rows, 49 classes)
    vggmusic_eval_ss.csv    header source_1,source_2,class_1,class_2,sep_type: 1 201 fixed pairs,
                            910 Easy (different classes) + 291 Hard (same class)

Class names are mapped to the VGGSound folder names used on the training side:
'violin' and 'violin,_fiddle' -> 'violin__fiddle', 'steel_guitar' and 'steel_guitar,_slide_guitar'
-> 'steel_guitar__slide_guitar'. The official eval path keeps the comma ('playing_violin,_fiddle'),
so 109 of the 1 201 pairs point at folders that do not exist and were silently replaced by random
clips (spec 8 item 28); `official_eval_names=True` reproduces that naming (the pairs are then
counted as skipped, not replaced).

Train list: the code reads `vggmusic_train.txt` (38 704 clips); the paper says 40 908 (spec 8 item 15).
`train_source='vggsound_csv'` takes instead every 'train' row of {root}/annotations/vggsound.csv
whose class is one of the 49 (our reading of the paper's number; unverified).

    avfusion data prepare vggsound_music --root /data/vggsound --out data/vggsound_music
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from .common import (LayoutReport, MediaCheck, clip_filename, finish, metadata_file, progress_for,
                     read_csv, split_clip_key, vggsound_folder)

# the official get_vggsound_music's replace() on the training list
TRAIN_NAME_TO_FOLDER = {"violin": "violin__fiddle", "steel_guitar": "steel_guitar__slide_guitar"}
TRAIN_SOURCES = ("file", "vggsound_csv")


def music_folder(cls: str) -> str:
    """Class name of the lists -> folder name without 'playing_' (fixes spec 8 item 28)."""
    cls = cls.strip()
    return TRAIN_NAME_TO_FOLDER.get(cls, vggsound_folder(cls))


def read_class_list(path: Path) -> list[tuple[str, str]]:
    """`YTID_SSSSSS,cls` lines -> [(key, folder)]; an unquoted comma in cls ('violin,_fiddle')
    splits the line into 3 fields, which are re-joined."""
    items = []
    for line_no, row in enumerate(read_csv(path), start=1):
        if len(row) < 2:
            raise ValueError(f"{path}: line {line_no}: expected 'YTID_start,class', got {row}")
        try:
            split_clip_key(row[0])
        except ValueError as err:
            raise ValueError(f"{path}: line {line_no}: {err}") from None
        items.append((row[0].strip(), music_folder(",".join(row[1:]))))
    return items


def read_eval_pairs(path: Path) -> list[dict]:
    rows = read_csv(path)
    header = [h.strip() for h in rows[0]]
    expected = ["source_1", "source_2", "class_1", "class_2", "sep_type"]
    if header != expected:
        raise ValueError(f"{path}: header {header}, expected {expected}")
    pairs = []
    for line_no, row in enumerate(rows[1:], start=2):
        if len(row) != 5:
            raise ValueError(f"{path}: line {line_no}: expected 5 columns, got {row}")
        pairs.append(dict(zip(expected, (x.strip() for x in row))))
    return pairs


def metadata_counts(train_list=None, eval_pairs=None) -> dict:
    """Counts from the metadata alone (no media)."""
    train = read_class_list(metadata_file("vggmusic_train.txt", train_list))
    pairs = read_eval_pairs(metadata_file("vggmusic_eval_ss.csv", eval_pairs))
    sep = Counter(p["sep_type"] for p in pairs)
    comma = sum(1 for p in pairs if "," in p["class_1"] or "," in p["class_2"])
    eval_classes = {music_folder(p[c]) for p in pairs for c in ("class_1", "class_2")}
    return {"train_clips": len(train), "train_classes": len({c for _, c in train}),
            "eval_pairs": len(pairs), "easy": sep["Easy"], "hard": sep["Hard"],
            "pairs_with_comma_class": comma,
            "eval_clips": len({p[s] for p in pairs for s in ("source_1", "source_2")}),
            "eval_classes_unknown_to_train": sorted(eval_classes - {c for _, c in train})}


def _train_from_vggsound_csv(root: Path, classes: set[str]) -> list[tuple[str, str]]:
    from .vggsound import read_annotations

    items = read_annotations(root / "annotations" / "vggsound.csv")
    return [(f"{ytid}_{start:06d}", cls[len("playing_"):]) for ytid, start, cls, split in items
            if split == "train" and cls.startswith("playing_") and cls[len("playing_"):] in classes]


def prepare(root: str | Path, out: str | Path, check_media: bool = True, train_list=None,
            eval_pairs=None, train_source: str = "file", official_eval_names: bool = False) -> dict:
    """Parse the VGGSound clip tree at `{root}` into `{out}` (manifest + the fixed pairs)."""
    if train_source not in TRAIN_SOURCES:
        raise ValueError(f"train_source={train_source!r}; choose from {TRAIN_SOURCES}")
    root = Path(root).resolve()
    train = read_class_list(metadata_file("vggmusic_train.txt", train_list))
    classes = sorted({c for _, c in train})
    if train_source == "vggsound_csv":
        train = _train_from_vggsound_csv(root, set(classes))
    pairs_meta = read_eval_pairs(metadata_file("vggmusic_eval_ss.csv", eval_pairs))
    eval_name = (lambda c: c.strip()) if official_eval_names else music_folder

    test_items = {}
    for p in pairs_meta:
        for src, cls in (("source_1", "class_1"), ("source_2", "class_2")):
            test_items[p[src]] = eval_name(p[cls])
    report, media, rows, kept = LayoutReport(), MediaCheck(check_media), [], set()
    progress = progress_for(len(train) + len(test_items), "vggsound_music")
    for split, items in (("test", sorted(test_items.items())), ("train", train)):
        for key, cls in items:
            progress.update()
            if split == "train" and key in test_items:
                report.skip(key, "train clip is also an evaluation clip")
                continue
            if key in kept:
                report.skip(key, "duplicate entry")
                continue
            if cls not in classes:
                report.skip(key, "unknown class")
                continue
            ytid, start = split_clip_key(key)
            path = root / "clips" / f"playing_{cls}" / clip_filename(ytid, start)
            if media.add_video_clip(rows, report, path, 10.0, clip_id=key, split=split, label=cls):
                kept.add(key)

    pairs = []
    for index, p in enumerate(pairs_meta):  # pair_id = row index in vggmusic_eval_ss.csv
        missing = [p[s] for s in ("source_1", "source_2") if p[s] not in kept]
        if missing:
            report.count("pairs_skipped", "source clip skipped")
            continue
        pairs.append({"pair_id": f"{index:05d}", "split": "test", "clip_id_1": p["source_1"],
                      "clip_id_2": p["source_2"], "sep_type": p["sep_type"]})
    report.details["pairs_in_metadata"] = len(pairs_meta)
    return finish(out, rows, report, classes, pairs, desc="vggsound_music")
