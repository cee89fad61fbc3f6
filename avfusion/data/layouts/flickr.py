"""Flickr-SoundNet sound source localization (official `load_flickr_soundnet`, spec 4.4) -> manifest.

    {root}/frames/{id}.jpg      {root}/audio/{id}.wav      {root}/Annotations/{id}.xml
    test ids: metadata/flickr_test.csv (`id,int`, 250 rows); train ids (supervised transfer):
    metadata/flickr_sup_train.txt (4 750 ids, same folders; `train_list=''` to leave train out)

XML: every `bbox` element that is a grandchild of the root is one box; its first child is skipped and
the next four are xmin, ymin, xmax, ymax, in pixels of the 256 x 256 image the annotators saw
(the official parser computes int(v * 224 / 256)). The official consensus map adds +1 per box,
divides by 2 and clips to 1, whoever drew the box; so each box is written as its own annotator entry
(`[[box1], [box2], ...]`), which gives that same map under the manifest's per-annotator rule
(a Dataset must give a lone box 0.5, as the official code does).

Coordinate frame of `boxes` in the manifest: PIXELS OF THE FRAME FILE `frame`, [x1, y1, x2, y2]
= XML value x (W / 256), y (H / 256) (floats; identical to the XML when the jpg is 256 x 256).
A Dataset reproduces the official map with int(x * S / W) for an S x S map.
frame_time = duration / 2 (the centred 3 s audio window of the official reader) when probed.

    avfusion data prepare flickr_soundnet --root /data/Flickr-SoundNet --out data/flickr
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from .common import (LayoutReport, MediaCheck, finish, metadata_file, progress_for,
                     read_csv, read_lines)

ANNOTATION_SIZE = 256  # the XML coordinates refer to a 256 x 256 image


def parse_annotation(path: Path) -> list[list[list[int]]]:
    """XML -> per child of the root, its boxes [xmin, ymin, xmax, ymax] in 256 x 256 pixels (unvalidated)."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise ValueError(f"{path}: invalid XML: {err}") from None
    annotators = []
    for field in root:
        boxes = []
        for node in field:
            if node.tag != "bbox":
                continue
            values = [child.text for child in list(node)[1:5]]
            try:
                boxes.append([int(float(v)) for v in values])
            except (TypeError, ValueError):
                raise ValueError(f"{path}: bbox values {values} are not numbers") from None
            if len(boxes[-1]) != 4:
                raise ValueError(f"{path}: bbox has {len(boxes[-1])} coordinates, expected 4")
        if boxes:
            annotators.append(boxes)
    return annotators


def box_problem(box: list[int]) -> str | None:
    x1, y1, x2, y2 = box
    if min(box) < 0 or max(box) > ANNOTATION_SIZE:
        return "outside the 256 x 256 image"
    if x2 <= x1 or y2 <= y1:
        return "empty or inverted"
    return None


def metadata_counts(test_list=None, train_list=None) -> dict:
    test = read_csv(metadata_file("flickr_test.csv", test_list))
    return {"test_ids": len(test), "unique_test_ids": len({r[0] for r in test}),
            "train_ids": len(read_lines(metadata_file("flickr_sup_train.txt", train_list)))}


def prepare(root: str | Path, out: str | Path, check_media: bool = True, test_list=None,
            train_list: str | Path | None = None) -> dict:
    """Parse Flickr-SoundNet at `{root}` into `{out}`; train_list=None -> the shipped
    flickr_sup_train.txt, '' -> no train split."""
    root = Path(root).resolve()
    items = [("test", r[0].strip()) for r in read_csv(metadata_file("flickr_test.csv", test_list))]
    if train_list != "":
        items += [("train", i) for i in read_lines(metadata_file("flickr_sup_train.txt", train_list))]
    report, media, rows, seen = LayoutReport(), MediaCheck(check_media), [], set()
    # each box is its own annotator entry; the GT map is sum/2 clipped (a lone box = 0.5, spec 4.4)
    report.details["box_rule"] = "consensus"
    progress = progress_for(len(items), "flickr_soundnet")
    for split, vid in items:
        progress.update()
        if vid in seen:
            report.skip(vid, "duplicate entry")
            continue
        seen.add(vid)
        frame, audio, xml = (root / "frames" / f"{vid}.jpg", root / "audio" / f"{vid}.wav",
                             root / "Annotations" / f"{vid}.xml")
        if not xml.is_file():
            report.skip(str(xml), "missing annotation file")
            continue
        checked = media.frame_and_audio(frame, audio, report)
        if checked is None:
            continue
        size, duration = checked
        try:
            annotators = parse_annotation(xml)
        except ValueError as err:
            report.skip(str(xml), f"unreadable annotation ({str(err).split(': ', 1)[-1][:60]})")
            continue
        sx, sy = size[0] / ANNOTATION_SIZE, size[1] / ANNOTATION_SIZE
        kept = []  # one entry per box: the official map sums +1 per box (see module docstring)
        for box in (b for boxes in annotators for b in boxes):
            problem = box_problem(box)
            if problem:
                report.count("boxes_dropped", problem)
                continue
            kept.append([[box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy]])
        if not kept:
            report.skip(str(xml), "no valid box")
            continue
        rows.append({"clip_id": vid, "split": split, "video": "", "audio": str(audio), "frame": str(frame),
                     "start": 0.0, "end": round(duration, 3) if duration else "", "label": "",
                     "boxes": json.dumps(kept), "frame_time": round(duration / 2, 3) if duration else ""})
        report.keep()
    return finish(out, rows, report, [], desc="flickr_soundnet")
