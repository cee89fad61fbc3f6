"""AudioSet in the official DeepAVFusion layout (spec section 5) -> manifest (multi-label).

    {root}/annotations/class_labels_indices.csv   header, then index, mid, display_name
    {root}/annotations/{unbalanced_train,balanced_train,eval}_segments.csv
                                                  3 header lines, then YTID, start, end, "mid1,mid2,..."
    {root}/clips/{YTID[:2]}/{YTID}_{int(start):06d}_{int(end):06d}.mp4

Rows: clip_id `YTID_SSSSSS`; split 'train' from `train_segments` (official `audioset` and
`audioset-bal` use unbalanced_train; `audioset-bal-orig` uses balanced_train), 'test' from eval.
label = display names joined by '|'; classes.txt = display names in index order (527).
`audioset-bal`'s class resampling is a sampler setting, not a manifest property.
(The official `get_audioset` crashes on `class_resample=`, spec 8 item 25; this parser does not.)

    avfusion data prepare audioset --root /data/audioset --out data/audioset
"""
from __future__ import annotations

from pathlib import Path

from ..manifest import LABEL_SEP
from .common import LayoutReport, MediaCheck, clip_filename, finish, progress_for, read_csv

TRAIN_SEGMENTS = ("unbalanced_train", "balanced_train")


def read_ontology(path: Path) -> tuple[list[str], dict[str, str]]:
    """class_labels_indices.csv -> (display names in index order, mid -> display name)."""
    rows = read_csv(path, skip=1)
    names, mid_to_name = [], {}
    for line_no, row in enumerate(rows, start=2):
        if len(row) != 3 or not row[0].strip().isdigit():
            raise ValueError(f"{path}: line {line_no}: expected index,mid,display_name, got {row}")
        index, mid, name = int(row[0]), row[1].strip(), row[2].strip()
        if index != len(names):
            raise ValueError(f"{path}: line {line_no}: index {index} out of order (expected {len(names)})")
        if name in mid_to_name.values():
            raise ValueError(f"{path}: line {line_no}: duplicate display name {name!r}")
        names.append(name)
        mid_to_name[mid] = name
    return names, mid_to_name


def read_segments(path: Path) -> list[tuple[str, float, float, list[str]]]:
    """*_segments.csv -> [(ytid, start, end, [mid, ...])]."""
    items = []
    for line_no, row in enumerate(read_csv(path, skip=3, skipinitialspace=True), start=4):
        if len(row) < 4:
            raise ValueError(f"{path}: line {line_no}: expected YTID,start,end,labels, got {row}")
        mids = [m.strip().strip('"') for part in row[3:] for m in part.split(",") if m.strip()]
        try:
            items.append((row[0].strip(), float(row[1]), float(row[2]), mids))
        except ValueError:
            raise ValueError(f"{path}: line {line_no}: bad start/end in {row}") from None
    return items


def prepare(root: str | Path, out: str | Path, check_media: bool = True,
            train_segments: str = "unbalanced_train") -> dict:
    """Parse `{root}` into `{out}`; train_segments: 'unbalanced_train' (code default) or 'balanced_train'."""
    if train_segments not in TRAIN_SEGMENTS:
        raise ValueError(f"train_segments={train_segments!r}; choose from {TRAIN_SEGMENTS}")
    root = Path(root).resolve()
    ann = root / "annotations"
    classes, mid_to_name = read_ontology(ann / "class_labels_indices.csv")
    report, media, rows, seen = LayoutReport(), MediaCheck(check_media), [], set()
    for split, part in (("train", train_segments), ("test", "eval")):
        items = read_segments(ann / f"{part}_segments.csv")
        report.details[f"rows_in_{part}_segments"] = len(items)
        progress = progress_for(len(items), f"audioset {part}")
        for ytid, start, end, mids in items:
            progress.update()
            key = f"{ytid}_{int(start):06d}"
            unknown = [m for m in mids if m not in mid_to_name]
            if unknown or not mids:
                report.skip(key, "unknown class" if unknown else "no label")
                continue
            if key in seen:
                report.skip(key, "duplicate entry")
                continue
            seen.add(key)
            path = root / "clips" / ytid[:2] / clip_filename(ytid, int(start), int(end))
            media.add_video_clip(rows, report, path, round(end - start, 3), clip_id=key, split=split,
                                 label=LABEL_SEP.join(mid_to_name[m] for m in mids))
    return finish(out, rows, report, classes, desc="audioset")
