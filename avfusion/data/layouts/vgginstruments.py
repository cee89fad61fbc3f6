"""VGGSound-Instruments (separation, Table 1) -> manifest + pairs.csv.

Media: the VGGSound clip tree, `{root}/clips/playing_{CLS}/{YTID}_{start:06d}_{start+10:06d}.mp4`.
Metadata (official repo, shipped; override by path):
    vgginstruments_train.txt   `YTID_SSSSSS,cls`, 33 934 rows, 37 classes; 'violin,_fiddle' and
                               'steel_guitar,_slide_guitar' are unquoted, so those lines have 3 fields
    vgginstruments_test.csv    `sample0000` ... `sample0499` (446 ids with gaps)

The official code has no loader for this dataset (spec 8 item 30) and the test ids name no file of
any published layout, so they cannot be resolved; the report counts them. The evaluation split is
built deterministically instead: every `holdout_every`-th YouTube id (sorted) is held out (no video
in both splits) and `n_pairs` fixed pairs of clips from different classes are drawn with `seed`.

Classes: the file has 37, the paper says 36 (spec 8 item 15); the extra class is not identifiable,
so the default keeps all 37 and `exclude_classes=('name',)` gives a 36-class variant.

    avfusion data prepare vggsound_instruments --root /data/vggsound --out data/vggsound_instruments
"""
from __future__ import annotations

from pathlib import Path

from .common import (LayoutReport, MediaCheck, clip_filename, finish, fixed_pairs, metadata_file,
                     progress_for, read_lines, split_clip_key)
from .vggmusic import read_class_list


def metadata_counts(train_list=None, test_list=None) -> dict:
    train = read_class_list(metadata_file("vgginstruments_train.txt", train_list))
    test = read_lines(metadata_file("vgginstruments_test.csv", test_list))
    return {"train_clips": len(train), "train_classes": len({c for _, c in train}),
            "three_field_lines": sum(1 for _, c in train if c in ("violin__fiddle", "steel_guitar__slide_guitar")),
            "test_ids": len(test)}


def prepare(root: str | Path, out: str | Path, check_media: bool = True, train_list=None,
            test_list=None, exclude_classes: tuple[str, ...] = (), holdout_every: int = 20,
            n_pairs: int = 500, seed: int = 0) -> dict:
    """Parse the VGGSound clip tree at `{root}` into `{out}`."""
    if holdout_every < 2:
        raise ValueError(f"holdout_every={holdout_every}: must be >= 2")
    root = Path(root).resolve()
    items = read_class_list(metadata_file("vgginstruments_train.txt", train_list))
    all_classes = sorted({c for _, c in items})
    unknown = sorted(set(exclude_classes) - set(all_classes))
    if unknown:
        raise ValueError(f"exclude_classes: {unknown} not among the classes {all_classes}")
    classes = [c for c in all_classes if c not in exclude_classes]
    videos = sorted({split_clip_key(key)[0] for key, _ in items})
    held_out = set(videos[::holdout_every])

    report, media, rows, seen = LayoutReport(), MediaCheck(check_media), [], set()
    report.details["official_test_ids_unresolvable"] = len(read_lines(
        metadata_file("vgginstruments_test.csv", test_list)))
    report.details["test_construction"] = (f"every {holdout_every}th sorted YouTube id held out; "
                                           f"{n_pairs} fixed pairs, seed {seed}")
    progress = progress_for(len(items), "vggsound_instruments")
    for key, cls in items:
        progress.update()
        ytid, start = split_clip_key(key)
        if cls not in classes:
            report.skip(key, "excluded class")
            continue
        if key in seen:
            report.skip(key, "duplicate entry")
            continue
        seen.add(key)
        path = root / "clips" / f"playing_{cls}" / clip_filename(ytid, start)
        media.add_video_clip(rows, report, path, 10.0, clip_id=key, split="test" if ytid in held_out else "train",
                             label=cls, source=ytid)
    pairs = fixed_pairs([r for r in rows if r["split"] == "test"], seed=seed)[:n_pairs]
    return finish(out, rows, report, classes, pairs, desc="vggsound_instruments")
