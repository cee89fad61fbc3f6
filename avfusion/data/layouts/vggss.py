"""VGG-SS (VGG-Sound Source) localization test set, EZ-VSL / LVS layout -> manifest.

    {root}/frames/{file}.jpg     {root}/audio/{file}.wav        (file = `YTID_SSSSSS`)
    metadata/vggss.json          5 158 entries {file, class, bbox: [[x1, y1, x2, y2], ...]} NORMALISED
    metadata/vggss_test.csv      5 158 ids  (`test_list`: or vggss_heard_test.csv 2 564 /
                                 vggss_unheard_test.csv 2 575)

Corrupt boxes (measured on the shipped vggss.json): 18 of its 5 941 boxes are unusable:
12 carry the sentinel coordinate -2.88e16 (so x2 < x1 or y2 < y1 after clipping to [0, 1]) and
6 have zero width or height (x2 == x1 or y2 == y1). EZ-VSL clips every box to [0, 1]
(LVS clamps at 0), which turns all 18 into empty boxes that add nothing to the GT map. Here each box
is clipped to [0, 1]; a box that is then empty is dropped and counted in
report.json details.boxes_dropped by reason. Two entries (M1P1xla8rg0_000000, MKC9LvRivTM_000030)
have no box left: they are skipped with reason 'no valid box' unless `keep_entries_without_boxes`
(EZ-VSL scores them with an empty GT map, i.e. as failures).

Coordinate frame of `boxes` in the manifest: PIXELS OF THE FRAME FILE `frame`, [x1, y1, x2, y2] =
normalised value x W (x) or x H (y). One annotator: `[[box, box, ...]]` (the GT map is their union).
label = class in the VGGSound folder form ('female speech, woman speaking' ->
'female_speech__woman_speaking').

    avfusion data prepare vggss --root /data/VGG-SS --out data/vggss
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from .common import (LayoutReport, MediaCheck, finish, metadata_file, progress_for,
                     read_json, read_lines, vggsound_folder)


def clip_box(box) -> tuple[list[float] | None, str | None]:
    """Normalised [x1, y1, x2, y2] -> (box clipped to [0, 1], None) or (None, why it is unusable)."""
    if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
        return None, "malformed box"
    clipped = [min(max(float(v), 0.0), 1.0) for v in box]
    x1, y1, x2, y2 = clipped
    if x2 <= x1 or y2 <= y1:
        outside = any(v < 0 or v > 1 for v in box)
        return None, "outside [0, 1] (sentinel coordinate), empty after clipping" if outside else "zero area"
    return clipped, None


def read_boxes(path: Path) -> list[dict]:
    entries = read_json(path)
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a JSON list of entries")
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not {"file", "class", "bbox"} <= set(entry):
            raise ValueError(f"{path}: entry {index}: expected keys file, class, bbox; got {entry!r:.200}")
    return entries


def metadata_counts(boxes_json=None) -> dict:
    """Counts of vggss.json and its corrupt boxes (no media needed)."""
    entries = read_boxes(metadata_file("vggss.json", boxes_json))
    reasons, left_empty = Counter(), 0
    for entry in entries:
        results = [clip_box(b) for b in entry["bbox"]]
        reasons.update(r for _, r in results if r)
        left_empty += all(b is None for b, _ in results)
    return {"entries": len(entries), "boxes": sum(len(e["bbox"]) for e in entries),
            "corrupt_boxes": sum(reasons.values()), "corrupt_by_reason": dict(reasons),
            "entries_without_valid_box": left_empty, "classes": len({e["class"] for e in entries})}


def prepare(root: str | Path, out: str | Path, check_media: bool = True, boxes_json=None,
            test_list=None, keep_entries_without_boxes: bool = False) -> dict:
    """Parse VGG-SS at `{root}` into `{out}` (test split only)."""
    root = Path(root).resolve()
    entries = {e["file"]: e for e in read_boxes(metadata_file("vggss.json", boxes_json))}
    test_ids = read_lines(metadata_file("vggss_test.csv", test_list))
    report, media, rows = LayoutReport(), MediaCheck(check_media), []
    report.details["box_rule"] = "union"  # one annotator: every box is foreground (EZ-VSL bbox2gtmap)
    progress = progress_for(len(test_ids), "vggss")
    for file in test_ids:
        progress.update()
        entry = entries.get(file)
        if entry is None:
            report.skip(file, "no box annotation")
            continue
        boxes = []
        for box in entry["bbox"]:
            clipped, problem = clip_box(box)
            if problem:
                report.count("boxes_dropped", problem)
            else:
                boxes.append(clipped)
        if not boxes and not keep_entries_without_boxes:
            report.skip(file, "no valid box")
            continue
        frame, audio = root / "frames" / f"{file}.jpg", root / "audio" / f"{file}.wav"
        checked = media.frame_and_audio(frame, audio, report)
        if checked is None:
            continue
        size, duration = checked
        width, height = size
        pixel = [[b[0] * width, b[1] * height, b[2] * width, b[3] * height] for b in boxes]
        rows.append({"clip_id": file, "split": "test", "video": "", "audio": str(audio), "frame": str(frame),
                     "start": 0.0, "end": round(duration, 3) if duration else "",
                     "label": vggsound_folder(entry["class"]), "boxes": json.dumps([pixel]),
                     "frame_time": round(duration / 2, 3) if duration else ""})
        report.keep()
    classes = sorted({r["label"] for r in rows})
    return finish(out, rows, report, classes, desc="vggss")
