"""VGGSound in the official DeepAVFusion layout (spec section 5) -> manifest.

    {root}/annotations/vggsound.csv        no header: YTID, start_s, label, split ('train'/'test')
    {root}/clips/{CLS}/{YTID}_{start:06d}_{start+10:06d}.mp4
                                           CLS = label with ' ', '(', ')', ',' -> '_'

Rows: clip_id `YTID_SSSSSS`, the mp4 (video and audio), start 0, end = probed duration (10 s when
not probed), label = CLS. classes.txt = sorted CLS names of the annotation file; the official code
uses sorted(os.listdir(clips)), which is the same list when every class folder exists.

    avfusion data prepare vggsound --root /data/vggsound --out data/vggsound
"""
from __future__ import annotations

from pathlib import Path

from .common import (LayoutReport, MediaCheck, clip_filename, finish, metadata_file, progress_for,
                     read_csv, split_clip_key, vggsound_folder)

SPLITS = ("train", "test")


def read_annotations(path: Path) -> list[tuple[str, int, str, str]]:
    """vggsound.csv -> [(ytid, start, CLS folder name, split)]; malformed rows raise naming the line."""
    items = []
    for line_no, row in enumerate(read_csv(path), start=1):
        if len(row) != 4:
            raise ValueError(f"{path}: line {line_no}: expected 4 columns YTID,start,label,split, got {row}")
        ytid, start, label, split = (x.strip() for x in row)
        try:
            start_s = int(float(start))
        except ValueError:
            raise ValueError(f"{path}: line {line_no}: start {start!r} is not a number") from None
        items.append((ytid, start_s, vggsound_folder(label), split))
    return items


def metadata_counts(test_list: str | Path | None = None) -> dict:
    """Counts of the repo's VGGSound test list (`metadata/vggsound_test.csv`: YTID_start, CLS)."""
    rows = read_csv(metadata_file("vggsound_test.csv", test_list))
    for row in rows:
        split_clip_key(row[0])
    return {"test_clips": len(rows), "test_classes": len({r[1] for r in rows})}


def prepare(root: str | Path, out: str | Path, check_media: bool = True,
            annotations: str | Path | None = None, splits: tuple[str, ...] = SPLITS) -> dict:
    """Parse `{root}` (layout above) into `{out}`; `annotations` defaults to {root}/annotations/vggsound.csv."""
    root = Path(root).resolve()
    items = read_annotations(Path(annotations) if annotations else root / "annotations" / "vggsound.csv")
    classes = sorted({cls for _, _, cls, _ in items})
    report, media, rows = LayoutReport(), MediaCheck(check_media), []
    report.details["rows_in_annotations"] = len(items)
    progress, seen = progress_for(len(items), "vggsound"), set()
    for ytid, start, cls, split in items:
        progress.update()
        key = f"{ytid}_{start:06d}"
        if split not in splits:
            report.count("rows_not_in_requested_splits", split)
            continue
        if key in seen:
            report.skip(key, "duplicate entry")
            continue
        seen.add(key)
        path = root / "clips" / cls / clip_filename(ytid, start)
        media.add_video_clip(rows, report, path, 10.0, clip_id=key, split=split, label=cls)
    return finish(out, rows, report, classes, desc="vggsound")
