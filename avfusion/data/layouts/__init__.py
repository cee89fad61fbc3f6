"""Parsers of the official dataset layouts (spec section 5) -> manifest folders.

    from avfusion.data.layouts import prepare
    prepare("vggsound", "/data/vggsound", "data/vggsound")              # check_media=True probes files
    prepare("vggss", "/data/VGG-SS", "data/vggss", check_media=False)   # existence checks only

Each writes `{out}/manifest.csv`, `classes.txt`, `report.json` (kept, skipped by reason, details)
and, for separation datasets, `pairs.csv` (avfusion.data.manifest). Dataset keys: see PARSERS;
options are keyword arguments of each module's `prepare` (documented there). The metadata files of
the official repo that the parsers need ship gzipped in `layouts/metadata/` (Apache-2.0).
CLI: `avfusion data prepare DATASET --root DIR --out DIR`. Counts of the shipped metadata alone:
`METADATA_COUNTS["vggss"]()` -> {"entries": 5158, "corrupt_boxes": 18, ...}.
"""
from __future__ import annotations

import inspect
from functools import partial
from pathlib import Path

from ...io import atomic_write_json
from . import audioset, avsbench, flickr, music, vggmusic, vgginstruments, vggsound, vggss

# dataset key -> prepare(root, out, check_media=True, **options) -> report dict
PARSERS = {
    "vggsound": vggsound.prepare,
    "audioset": audioset.prepare,
    "audioset_bal_orig": partial(audioset.prepare, train_segments="balanced_train"),
    "vggsound_music": vggmusic.prepare,
    "vggsound_instruments": vgginstruments.prepare,
    "music": partial(music.prepare, version="music"),
    "music_solo": partial(music.prepare, version="solo"),
    "music_solo21": partial(music.prepare, version="solo21"),
    "music_duet": music.prepare_duet,
    "avsbench_s4": partial(avsbench.prepare, task="s4"),
    "avsbench_ms3": partial(avsbench.prepare, task="ms3"),
    "avsbench_avss": partial(avsbench.prepare, task="avss"),
    "flickr_soundnet": flickr.prepare,
    "vggss": vggss.prepare,
}
# official dataset keys of the DeepAVFusion code that name the same parser
ALIASES = {"flickr_soundnet_5k": "flickr_soundnet", "audioset-bal": "audioset",
           "audioset-bal-orig": "audioset_bal_orig", "vgginstruments": "vggsound_instruments",
           "vggmusic": "vggsound_music"}
DATASETS = sorted(PARSERS) + sorted(ALIASES)  # every key `prepare` accepts
# metadata-only counts (no media, no root): dataset -> function(**metadata paths) -> dict
METADATA_COUNTS = {
    "vggsound": vggsound.metadata_counts, "vggsound_music": vggmusic.metadata_counts,
    "vggsound_instruments": vgginstruments.metadata_counts, "music_duet": music.duet_metadata_counts,
    "avsbench": avsbench.metadata_counts, "flickr_soundnet": flickr.metadata_counts,
    "vggss": vggss.metadata_counts,
}


def parser_options(dataset: str) -> list[str]:
    """Keyword options the dataset's parser accepts besides root, out, check_media."""
    fn = PARSERS[ALIASES.get(dataset, dataset)]
    fixed = set(fn.keywords) if isinstance(fn, partial) else set()
    target = fn.func if isinstance(fn, partial) else fn
    return [p for p in inspect.signature(target).parameters
            if p not in ("root", "out", "check_media") and p not in fixed]


def prepare(dataset: str, root: str | Path, out: str | Path, check_media: bool = True, **options) -> dict:
    """Parse `root` (official layout of `dataset`) into the manifest folder `out`; -> report dict."""
    key = ALIASES.get(dataset, dataset)
    if key not in PARSERS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {', '.join(sorted(PARSERS))}")
    unknown = sorted(set(options) - set(parser_options(key)))
    if unknown:
        raise ValueError(f"{dataset}: unknown option(s) {unknown}; accepted: {parser_options(key)}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{dataset}: dataset root not found: {root}")
    report = PARSERS[key](root, out, check_media=check_media, **options)
    # say how the media were checked: a manifest built without opening the files says so
    report["media_checks"] = ("decoded: streams, finite audio as long as its header, covering the 3 s window, "
                              "a video frame" if check_media else
                              "off (--no-media-check): files were only checked to exist")
    atomic_write_json(Path(out) / "report.json", report)
    return report
