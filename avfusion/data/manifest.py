"""Manifests: one CSV row per clip (or per mixture pair), a class list, and a skip report.

Every dataset parser and the embedded benchmark write these same files, so every task reads
any dataset the same way:

    <out>/manifest.csv          one row per clip, columns CLIP_COLUMNS (+ task extras)
    <out>/classes.txt           one class name per line; the class index is the line number
    <out>/report.json           rows kept, rows skipped, and why (counts + the first skipped rows)
    <out>/pairs.csv             (separation only) fixed evaluation pairs, columns PAIR_COLUMNS

Path columns (PATH_COLUMNS) hold absolute paths or paths relative to the manifest's folder;
`read_manifest` returns them absolute.
"""
from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..io import atomic_write_csv, atomic_write_json, atomic_write_text

# clip_id: unique; split: train/val/test; video: mp4 with both streams (may be empty);
# audio: audio file (empty -> take the audio of `video`); frame: still image (empty -> read from video);
# start/end: the usable span of the file in seconds; label: class names joined by LABEL_SEP ('' = none).
CLIP_COLUMNS = ["clip_id", "split", "video", "audio", "frame", "start", "end", "label"]
# segmentation adds: mask (PNG path); localization adds: boxes (JSON: list of annotators, each a list
# of [x1, y1, x2, y2] boxes in pixels of `frame`) and frame_time; any task may add frame_time (s).
EXTRA_COLUMNS = ["mask", "boxes", "frame_time", "source"]
PATH_COLUMNS = ("video", "audio", "frame", "mask")
PAIR_COLUMNS = ["pair_id", "split", "clip_id_1", "clip_id_2", "sep_type"]
LABEL_SEP = "|"


@dataclass
class SkipReport:
    """Counts rows kept and skipped, with the reason for every skip (never a silent drop)."""

    kept: int = 0
    reasons: Counter = field(default_factory=Counter)
    examples: list = field(default_factory=list)
    max_examples: int = 1000

    def keep(self, n: int = 1) -> None:
        self.kept += n

    def skip(self, item: str, reason: str) -> None:
        self.reasons[reason] += 1
        if len(self.examples) < self.max_examples:
            self.examples.append({"item": item, "reason": reason})

    @property
    def skipped(self) -> int:
        return sum(self.reasons.values())

    def to_dict(self) -> dict:
        return {"kept": self.kept, "skipped": self.skipped, "reasons": dict(self.reasons),
                "skipped_examples": self.examples}

    def summary(self) -> str:
        reasons = ", ".join(f"{n} {r}" for r, n in self.reasons.most_common()) or "none"
        return f"kept {self.kept}, skipped {self.skipped} ({reasons})"


def write_manifest(out_dir: str | Path, rows: list[dict], report: SkipReport | None = None,
                   classes: list[str] | None = None, name: str = "manifest.csv",
                   columns: list[str] | None = None) -> Path:
    """Write manifest.csv (+ classes.txt, report.json) atomically into `out_dir`."""
    out_dir = Path(out_dir)
    if columns is None:
        extras = [c for c in EXTRA_COLUMNS if any(c in r for r in rows)]
        columns = CLIP_COLUMNS + extras
    path = atomic_write_csv(out_dir / name, ({c: r.get(c, "") for c in columns} for r in rows), columns)
    if classes is not None:
        atomic_write_text(out_dir / "classes.txt", "".join(f"{c}\n" for c in classes))
    if report is not None:
        atomic_write_json(out_dir / "report.json", report.to_dict())
    return path


def read_manifest(path: str | Path, split: str | None = None) -> list[dict]:
    """Rows of a manifest with path columns made absolute; optionally only one split."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    base = path.parent
    for row in rows:
        for col in PATH_COLUMNS:
            value = row.get(col)
            if value:
                p = Path(value)
                row[col] = str(p if p.is_absolute() else (base / p))
    if split is not None:
        rows = [r for r in rows if r.get("split") == split]
    return rows


def read_classes(path: str | Path) -> list[str]:
    path = Path(path)
    if path.is_dir():
        path = path / "classes.txt"
    if not path.is_file():
        raise FileNotFoundError(f"class list not found: {path}")
    return [line.rstrip("\n") for line in path.read_text().splitlines() if line.strip()]


def split_labels(label: str) -> list[str]:
    return [x for x in label.split(LABEL_SEP) if x] if label else []
