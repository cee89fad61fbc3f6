"""AVSBench-AVSS is multi-class end to end: the parser records the masks' class count (report.json
details.mask_classes: label2idx's classes, background included; 1 = binary for S4), the dataset returns
class indices (not `mask > 0`), the job builds a `num_classes`-way head and reports the multi-class
mIoU, and a binary head on the multi-class manifest is refused, naming the key. Real frames, masks and
audio from ../shared/testdata in the official AVSBench layout."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from avfusion.cli import main as cli_main
from avfusion.data.datasets import SegmentationDataset
from avfusion.data.layouts import prepare
from test_layouts import jpg, media, put  # noqa: F401  (media: module fixture over the real test media)

LABEL2IDX = {"background": 1, "guitar": 2, "dog": 3, "man": 4}   # pixel p = class line p (first index 1)


@pytest.fixture(scope="module")
def avsbench(tmp_path_factory, media) -> Path:
    """A 6-video AVSBench tree: v1s (S4) and v2 (AVSS) videos whose semantic masks hold the class pixel
    value of their object (guitar 1, dog 2, man 3) where the real image is bright, else 0."""
    root = tmp_path_factory.mktemp("avsbench") / "AVSBench"
    rows = ["vid,uid,s_min,s_sec,a_obj,split,label"]
    videos = [("v1", "guitar", "train", "v1s"), ("v2", "dog", "train", "v2"), ("v3", "man", "train", "v2"),
              ("v4", "guitar", "val", "v1s"), ("v5", "dog", "val", "v2"), ("v6", "man", "val", "v2")]
    wav, png = media["wav"], media["png"]
    for i, (vid, obj, split, label) in enumerate(videos):
        rows.append(f"{vid},{vid}-uid,0,0,{obj},{split},{label}")
        folder = root / label / f"{vid}-uid"
        pixel = LABEL2IDX[obj] - 1
        for k in range(2):
            src = png[(i + k) % len(png)]
            jpg(src, folder / "frames" / f"{k}.jpg")
            mask = Image.open(src).convert("L").point(lambda v, p=pixel: p if v > 128 else 0)
            (folder / "labels_semantic").mkdir(parents=True, exist_ok=True)
            mask.save(folder / "labels_semantic" / f"{k}.png")
        put(wav[i % len(wav)], folder / "audio.wav")
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    (root / "label2idx.json").write_text(json.dumps(LABEL2IDX))
    return root


def test_avss_manifest_records_its_class_count_and_the_dataset_returns_class_indices(avsbench, tmp_path):
    s4 = prepare("avsbench_s4", avsbench, tmp_path / "s4")
    avss = prepare("avsbench_avss", avsbench, tmp_path / "avss")
    assert s4["details"]["mask_classes"] == 1 and avss["details"]["mask_classes"] == len(LABEL2IDX) == 4
    assert avss["kept"] == 12 and s4["kept"] == 4
    dataset = SegmentationDataset(tmp_path / "avss", "val", False, 64, num_classes=4)
    values = set()
    for i in range(len(dataset)):
        mask = dataset[i]["mask"]
        assert mask.dtype == torch.long and mask.shape == (64, 64)
        values |= set(np.unique(mask.numpy()).tolist())
    assert values == {0, 1, 2, 3}  # background and the three objects' class indices, not `mask > 0`


SMOKE = ["model.preset=deepavfusion-smoke", "data.image_size=64", "optim.batch_size=4", "optim.epochs=1",
         "decoder_min_width=16", "device=cpu", "data.eval_batch_size=4", "data.eval_split=val"]


def test_avss_job_builds_the_multiclass_head_and_refuses_a_binary_one(avsbench, tmp_path, capsys):
    prepare("avsbench_avss", avsbench, tmp_path / "avss")
    base = ["segmentation", *sum((["--set", s] for s in SMOKE + [f"data.manifest={tmp_path / 'avss'}"]), [])]
    assert cli_main(base + ["--set", "num_classes=4", "--out", str(tmp_path / "run")]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]
    state = torch.load(tmp_path / "run" / "checkpoints" / "checkpoint_latest.pth", weights_only=False)["state_dict"]
    head = [v for k, v in state.items() if k.startswith("decoder.") and v.ndim == 4][-1]
    assert head.shape[0] == 4                          # the last conv of the decoder: one map per class
    assert metrics["num_classes"] == 4 and metrics["n_frames"] == 6
    assert 0.0 <= metrics["miou"] <= 100.0 and 0.0 <= metrics["miou_nobg"] <= 100.0
    capsys.readouterr()
    assert cli_main(base + ["--out", str(tmp_path / "binary")]) == 1  # a config error (avfusion.cli exit codes)
    assert "config key 'num_classes': 1 is a binary head" in capsys.readouterr().err
    assert not (tmp_path / "binary" / "metrics.json").exists()
