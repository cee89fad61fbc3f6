"""MUSIC (solo / duet) -> manifest + pairs.csv, and the MUSIC-Duet localization boxes.

Separation layout (official `get_music`, spec section 5):
    {root}/anno/music_solo.csv                   header, then yid, cls, _   (version 'solo', 'music')
    {root}/anno/music21_solo.csv                 same                      (version 'solo21')
    {root}/anno/music21_duet.csv                 same                      (version 'music' adds duets)
    {root}/{clips_dir}/{cls}/{yid}.*.mp4         segments of each video; cls = class with ' ' -> '_'
clips_dir is 'clips_360p_segm' in the code and 'clips' in DATASETS.md (spec 5 [DIFF]).

Splits, per spec 8 item 15: `eval_rule='code'` holds out every (N_solo // 130)-th sorted solo video
for evaluation and every (N_duet // 85)-th duet (neither trained nor evaluated: counted as skips);
`eval_rule='paper'` holds out 90 solo videos (every (N_solo // 90)-th, first 90), as in the paper's
358 / 90 split. The code pairs at random even at evaluation; here the test split gets fixed
pairs (one per test clip, partner from another class and video, `seed`).

Duet localization (`music_duet`, metadata of the official repo, no loader there):
    music_duet.json       [{file, class_src1, bbox_src1, class_src2, bbox_src2}], boxes are
                          NORMALISED [x, y, w, h] (x + w <= 1 for all 2 040 boxes; read as xyxy,
                          1 012 of them would have x2 < x1)
    music_duet_test.csv   1 020 `file` ids;  music_duet_train.txt  `file,cls1,cls2` (48 348 rows)
Frames/audio are found through `frame_template` / `audio_template` (our assumption, no official
layout). Boxes are written in PIXELS of that frame as [x1, y1, x2, y2] = [x*W, y*H, (x+w)*W, (y+h)*H],
one annotator holding [box of source 1, box of source 2] in the order of `label` (cls1|cls2).

    avfusion data prepare music --root /data/MUSIC --out data/music
    avfusion data prepare music_duet --root /data/MUSIC --out data/music_duet
"""
from __future__ import annotations

import json
from pathlib import Path

from ..manifest import LABEL_SEP
from .common import (LayoutReport, MediaCheck, finish, fixed_pairs, image_size, metadata_file,
                     progress_for, read_csv, read_json, read_lines)

VERSIONS = {"solo": ["music_solo.csv"], "solo21": ["music21_solo.csv"],
            "music": ["music_solo.csv", "music21_duet.csv"]}
EVAL_RULES = ("code", "paper")


def read_anno(path: Path, kind: str) -> list[tuple[str, str, str]]:
    """anno csv (header skipped) -> [(yid, cls folder, kind)]."""
    items = []
    for line_no, row in enumerate(read_csv(path, skip=1), start=2):
        if len(row) < 2:
            raise ValueError(f"{path}: line {line_no}: expected yid,cls,..., got {row}")
        items.append((row[0].strip(), row[1].strip().replace(" ", "_"), kind))
    return items


def held_out_videos(solo: list[str], duet: list[str], eval_rule: str) -> tuple[set, set]:
    """(eval solo ids, held-out duet ids) of sorted video-id lists, per `eval_rule`."""
    if eval_rule == "code":
        eval_ids = set(solo[::max(1, len(solo) // 130)]) if solo else set()
    else:
        eval_ids = set(solo[::max(1, len(solo) // 90)][:90]) if solo else set()
    duet_ids = set(duet[::max(1, len(duet) // 85)]) if duet else set()
    return eval_ids, duet_ids


def prepare(root: str | Path, out: str | Path, check_media: bool = True, version: str = "solo",
            clips_dir: str = "clips_360p_segm", eval_rule: str = "code", seed: int = 0) -> dict:
    """Parse MUSIC at `{root}` into `{out}` (separation manifest + fixed test pairs)."""
    if version not in VERSIONS:
        raise ValueError(f"version={version!r}; choose from {sorted(VERSIONS)}")
    if eval_rule not in EVAL_RULES:
        raise ValueError(f"eval_rule={eval_rule!r}; choose from {EVAL_RULES}")
    root = Path(root).resolve()
    items = []
    for name in VERSIONS[version]:
        items += read_anno(root / "anno" / name, "duet" if "duet" in name else "solo")
    classes = sorted({cls for _, cls, _ in items})
    report, media = LayoutReport(), MediaCheck(check_media)
    segments = {}  # yid -> (cls, kind, [mp4 paths])
    for yid, cls, kind in items:
        files = sorted((root / clips_dir / cls).glob(f"{yid}.*.mp4"))
        if not files:
            report.skip(f"{clips_dir}/{cls}/{yid}.*.mp4", "missing video file")
            continue
        segments[yid] = (cls, kind, files)
    solo = sorted(y for y, (_, k, _) in segments.items() if k == "solo")
    duet = sorted(y for y, (_, k, _) in segments.items() if k == "duet")
    eval_ids, duet_ids = held_out_videos(solo, duet, eval_rule)
    report.details.update(solo_videos=len(solo), duet_videos=len(duet), eval_videos=len(eval_ids),
                          eval_rule=eval_rule)
    rows = []
    progress = progress_for(sum(len(f) for _, _, f in segments.values()), f"music {version}")
    for yid in sorted(segments):
        cls, kind, files = segments[yid]
        for path in files:
            progress.update()
            if yid in duet_ids:
                report.skip(str(path), "held-out duet (code rule: neither trained nor evaluated)")
                continue
            split = "test" if yid in eval_ids else "train"
            media.add_video_clip(rows, report, path, "", clip_id=path.stem, split=split, label=cls, source=yid)
    pairs = fixed_pairs([r for r in rows if r["split"] == "test"], seed=seed)
    return finish(out, rows, report, classes, pairs, desc=f"music {version}")


# ----------------------------------------------------------------------------- duet localization

def xywh_to_pixel_xyxy(box: list[float], width: int, height: int) -> list[float]:
    """Normalised [x, y, w, h] -> pixel [x1, y1, x2, y2] in a width x height frame."""
    x, y, w, h = box
    return [x * width, y * height, (x + w) * width, (y + h) * height]


def box_problem(box) -> str | None:
    if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
        return "malformed box"
    x, y, w, h = box
    if min(box) < 0 or w <= 0 or h <= 0 or x + w > 1 + 1e-6 or y + h > 1 + 1e-6:
        return "corrupt box (outside [0, 1] or empty)"
    return None


def read_duet_json(path: Path) -> dict[str, dict]:
    entries = read_json(path)
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a JSON list of entries")
    keys = {"file", "class_src1", "bbox_src1", "class_src2", "bbox_src2"}
    out = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) != keys:
            raise ValueError(f"{path}: entry {index}: expected keys {sorted(keys)}, got {entry!r:.200}")
        out[entry["file"]] = entry
    return out


def duet_metadata_counts(boxes_json=None, test_list=None, train_list=None) -> dict:
    entries = read_duet_json(metadata_file("music_duet.json", boxes_json))
    boxes = [e[k] for e in entries.values() for k in ("bbox_src1", "bbox_src2")]
    return {"entries": len(entries), "boxes": len(boxes),
            "boxes_valid_as_xywh": sum(box_problem(b) is None for b in boxes),
            "boxes_inverted_if_read_as_xyxy": sum(b[2] < b[0] or b[3] < b[1] for b in boxes),
            "test_ids": len(read_lines(metadata_file("music_duet_test.csv", test_list))),
            "train_rows": len(read_csv(metadata_file("music_duet_train.txt", train_list)))}


def prepare_duet(root: str | Path, out: str | Path, check_media: bool = True, boxes_json=None,
                 test_list=None, train_list=None, frame_template: str = "duet/frames/{file}.jpg",
                 audio_template: str = "duet/audio/{file}.wav") -> dict:
    """MUSIC-Duet localization manifest: test rows with pixel boxes, train rows without boxes."""
    root = Path(root).resolve()
    entries = read_duet_json(metadata_file("music_duet.json", boxes_json))
    test_ids = read_lines(metadata_file("music_duet_test.csv", test_list))
    train = [(r[0].strip(), [r[1].strip(), r[2].strip()])
             for r in read_csv(metadata_file("music_duet_train.txt", train_list))]
    report, media, rows = LayoutReport(), MediaCheck(check_media), []
    test = [(f, [entries[f]["class_src1"], entries[f]["class_src2"]] if f in entries else None) for f in test_ids]
    progress = progress_for(len(test) + len(train), "music_duet")
    for split, items in (("test", test), ("train", train)):
        for file, labels in items:
            progress.update()
            if labels is None:
                report.skip(file, "no box annotation")
                continue
            frame, audio = root / frame_template.format(file=file), root / audio_template.format(file=file)
            ok_f, size, reason_f = media.check(frame, "image")
            ok_a, duration, reason_a = media.check(audio, "audio")
            if not (ok_f and ok_a):
                report.skip(str(frame if not ok_f else audio), reason_f or reason_a)
                continue
            row = {"clip_id": file, "split": split, "video": "", "audio": str(audio), "frame": str(frame),
                   "start": 0.0, "end": round(duration, 3) if duration else "", "label": LABEL_SEP.join(labels)}
            if split == "test":
                entry = entries[file]
                problems = [box_problem(entry[k]) for k in ("bbox_src1", "bbox_src2")]
                if any(problems):
                    report.skip(file, next(p for p in problems if p))
                    continue
                size = size or image_size(frame)[0]
                if size is None:
                    report.skip(str(frame), "unreadable image")
                    continue
                row["boxes"] = json.dumps([[xywh_to_pixel_xyxy(entry[k], *size) for k in ("bbox_src1", "bbox_src2")]])
            rows.append(row)
            report.keep()
    classes = sorted({c for _, labels in train for c in labels} | {c for _, labels in test if labels for c in labels})
    return finish(out, rows, report, classes, desc="music_duet")
