"""AVSBench (S4 / MS3 / AVSS segmentation) in the official DeepAVFusion layout -> manifest.

    {root}/metadata.csv        header, then vid, uid, s_min, s_sec, a_obj, split, label
                               (label = subset v1s / v1m / v2; a_obj = classes joined by '_')
    {root}/label2idx.json      class name -> index (71 classes with 'background')
    {root}/{label}/{uid}/audio.wav, frames/{k}.jpg, labels_semantic/{k}.png   (labels_rgb unused)

Task selection as the official loaders (spec 4.5): S4 = rows with label 'v1s' and class a_obj
taken whole; MS3 = 'v1m', a_obj split on '_'; AVSS = all rows, a_obj split on '_' with
'off-the-screen' -> 'background'. One manifest row per annotated frame k (each
labels_semantic/{k}.png): frame, mask, audio, frame_time = k + 0.5 s (the frame's centre),
source = '{label}/{uid}' (the video). Splits come from metadata.csv (train / val / test); the official
evaluation uses 'val' (spec 8 item 23). classes.txt lists label2idx's names in index order;
report.json details.label2idx_first_index gives the index of line 0 (the mask-pixel rule
`keep p if p + 1 in the video's classes` is spec 8 item 41 and belongs to the Dataset).

The repo's own split lists (`metadata/avsbench_{train.txt,val.csv,test.csv}`, `{vid}_{k},{class}`,
3 452 / 740 / 740 S4 videos x 5 rows, 23 classes) are not used by the code; `metadata_counts`
reads them.

    avfusion data prepare avsbench_s4 --root /data/AVSBench --out data/avsbench_s4
"""
from __future__ import annotations

from pathlib import Path

from ..manifest import LABEL_SEP
from .common import (LayoutReport, MediaCheck, finish, metadata_file, progress_for, read_csv,
                     read_json)

TASKS = {"s4": "v1s", "ms3": "v1m", "avss": None}
SUBSET_SECONDS = {"v1s": 5.0, "v1m": 5.0, "v2": 10.0}  # AVSBench video lengths (1 annotated frame/s)
METADATA_COLUMNS = ["vid", "uid", "s_min", "s_sec", "a_obj", "split", "label"]


def task_classes(a_obj: str, task: str) -> list[str]:
    if task == "s4":
        return [a_obj]
    names = a_obj.split("_")
    return [n.replace("off-the-screen", "background") for n in names] if task == "avss" else names


def read_metadata(path: Path) -> list[dict]:
    rows = read_csv(path)
    header = [h.strip() for h in rows[0]]
    if header[:7] != METADATA_COLUMNS:
        raise ValueError(f"{path}: header {header}, expected {METADATA_COLUMNS}")
    out = []
    for line_no, row in enumerate(rows[1:], start=2):
        if len(row) < 7:
            raise ValueError(f"{path}: line {line_no}: expected 7 columns, got {row}")
        out.append(dict(zip(METADATA_COLUMNS, (x.strip() for x in row))))
    return out


def metadata_counts(lists: dict | None = None) -> dict:
    """Videos / rows / classes of the repo split lists (`{vid}_{k},{class}`)."""
    lists = lists or {}
    counts = {}
    for split, name in (("train", "avsbench_train.txt"), ("val", "avsbench_val.csv"), ("test", "avsbench_test.csv")):
        rows = read_csv(metadata_file(name, lists.get(split)))
        counts[split] = {"rows": len(rows), "videos": len({r[0].rsplit("_", 1)[0] for r in rows}),
                         "classes": len({r[1] for r in rows})}
    return counts


def annotated_frames(folder: Path) -> tuple[list[int], str | None]:
    """Indices k of labels_semantic/{k}.png, or a reason when the folder has none / odd names."""
    pngs = sorted((folder / "labels_semantic").glob("*.png"))
    if not pngs:
        return [], "no labels_semantic PNGs"
    if not all(p.stem.isdigit() for p in pngs):
        return [], "labels_semantic file names are not frame indices"
    return sorted(int(p.stem) for p in pngs), None


def prepare(root: str | Path, out: str | Path, check_media: bool = True, task: str = "s4") -> dict:
    """Parse AVSBench at `{root}` into `{out}` for `task` in s4 / ms3 / avss."""
    if task not in TASKS:
        raise ValueError(f"task={task!r}; choose from {sorted(TASKS)}")
    root = Path(root).resolve()
    label2idx = read_json(root / "label2idx.json")
    if not isinstance(label2idx, dict) or not all(isinstance(v, int) for v in label2idx.values()):
        raise ValueError(f"{root / 'label2idx.json'}: expected an object class -> integer index")
    classes = sorted(label2idx, key=label2idx.get)
    metadata = read_metadata(root / "metadata.csv")
    report, media, rows = LayoutReport(), MediaCheck(check_media), []
    report.details["label2idx_first_index"] = min(label2idx.values())
    # what the masks are under the official protocol (spec 4.5): AVSS = a class map over label2idx's
    # classes (background included: 71), S4 / MS3 = binary (map > 0). The segmentation job refuses a
    # binary head on a multi-class manifest, naming num_classes.
    report.details["mask_classes"] = len(classes) if task == "avss" else 1
    subset = TASKS[task]
    progress = progress_for(len(metadata), f"avsbench {task}")
    for meta in metadata:
        progress.update()
        if subset is not None and meta["label"] != subset:
            report.count("rows_not_in_task", meta["label"])
            continue
        names = task_classes(meta["a_obj"], task)
        folder = root / meta["label"] / meta["uid"]
        if any(n not in label2idx for n in names):
            report.skip(str(folder), "unknown class")
            continue
        if not folder.is_dir():
            report.skip(str(folder), "missing video folder")
            continue
        ok, duration, reason = media.check(folder / "audio.wav", "audio")
        if not ok:
            report.skip(str(folder / "audio.wav"), reason)
            continue
        frames, reason = annotated_frames(folder)
        if reason:
            report.skip(str(folder), reason)
            continue
        end = round(duration, 3) if duration else SUBSET_SECONDS.get(meta["label"], "")
        for k in frames:
            frame, mask = folder / "frames" / f"{k}.jpg", folder / "labels_semantic" / f"{k}.png"
            ok_f, _, reason_f = media.check(frame, "image")
            if not ok_f:
                report.skip(str(frame), reason_f)
                continue
            ok_m, _, reason_m = media.check(mask, "image")
            if not ok_m:
                report.skip(str(mask), reason_m.replace("image", "mask"))
                continue
            rows.append({"clip_id": f"{meta['uid']}_{k}", "split": meta["split"], "video": "",
                         "audio": str(folder / "audio.wav"), "frame": str(frame), "start": 0.0, "end": end,
                         "label": LABEL_SEP.join(names), "mask": str(mask), "frame_time": k + 0.5,
                         "source": f"{meta['label']}/{meta['uid']}"})
            report.keep()
    return finish(out, rows, report, classes, desc=f"avsbench {task}")
