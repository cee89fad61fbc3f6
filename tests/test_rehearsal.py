"""The rehearsal scale (workflow/config/scales/rehearsal.yaml): the paper scale's config with smoke-size
encoders and reduced steps/batches, over official layouts built here from the real media of
../shared/testdata, through the test SLURM with 2 ranks per job. Table 2 end to end: VGGSound (official
layout) for the AV-MAE and the unimodal MAE pretrainings, AVSBench (official layout with a 71-class
label2idx.json) for S4 (binary) and AVSS (the 71-class head and multi-class mIoU), recipes `code`,
evaluation on `val`, effective batch 8 = 2 per rank x 2 ranks x accumulation 2."""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest
from PIL import Image

from avfusion.io import read_json
from slurm_cluster import slurm_cluster  # noqa: F401  (session fixture)
from test_layouts import jpg, media, put, write_lines  # noqa: F401  (media: real test media)
from test_workflow import snakemake
from test_workflow_slurm import user_checkout

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

OBJECTS = ["guitar", "dog", "man"]
LABEL2IDX = {"background": 1, **{name: i + 2 for i, name in enumerate(OBJECTS)},
             **{f"class_{i:03d}": i + 1 for i in range(len(OBJECTS) + 1, 71)}}   # 71 classes, as AVSBench-AVSS


def vggsound_tree(root: Path, mp4s: list[Path]) -> Path:
    """16 clips of 4 classes (the real mp4s, reused), 12 train + 4 test, official VGGSound layout."""
    lines = []
    for i in range(16):
        label = ["playing violin, fiddle", "dog barking", "playing cello", "people sneezing"][i % 4]
        folder = label.replace(" ", "_").replace(",", "_").replace("(", "_").replace(")", "_")
        ytid = f"clip{i:07d}"
        put(mp4s[i % len(mp4s)], root / "clips" / folder / f"{ytid}_{i:06d}_{i + 10:06d}.mp4")
        lines.append(f'{ytid},{i},"{label}",{"train" if i < 12 else "test"}')
    write_lines(root / "annotations" / "vggsound.csv", lines)
    return root


def avsbench_tree(root: Path, media: dict) -> Path:
    """8 videos (v1s S4 and v2 AVSS; train / val), 2 annotated frames each, semantic masks holding the
    object's class pixel (label2idx - 1) where the real image is bright."""
    rows = ["vid,uid,s_min,s_sec,a_obj,split,label"]
    for i in range(8):
        obj, subset = OBJECTS[i % 3], ("v1s" if i < 4 else "v2")
        split = "val" if i in (3, 7) else "train"
        rows.append(f"v{i},v{i}-uid,0,0,{obj},{split},{subset}")
        folder = root / subset / f"v{i}-uid"
        for k in range(2):
            src = media["png"][(i + k) % len(media["png"])]
            jpg(src, folder / "frames" / f"{k}.jpg")
            mask = Image.open(src).convert("L").point(lambda v, p=LABEL2IDX[obj] - 1: p if v > 128 else 0)
            (folder / "labels_semantic").mkdir(parents=True, exist_ok=True)
            mask.save(folder / "labels_semantic" / f"{k}.png")
        put(media["wav"][i % len(media["wav"])], folder / "audio.wav")
    write_lines(root / "metadata.csv", rows)
    (root / "label2idx.json").write_text(json.dumps(LABEL2IDX))
    return root


def test_rehearsal_table2_on_official_layouts_through_slurm_with_two_ranks(tmp_path, slurm_cluster, media):
    layouts = tmp_path / "layouts"
    vggsound = vggsound_tree(layouts / "vggsound", media["mp4"])
    avsbench = avsbench_tree(layouts / "AVSBench", media)
    root = user_checkout(tmp_path)
    (root / "rehearsal_paths.yaml").write_text(
        "scale: rehearsal\nslurm_partition: debug\n"
        f"datasets: {{vggsound: {{root: {vggsound}}}, avsbench_s4: {{root: {avsbench}}}, "
        f"avsbench_avss: {{root: {avsbench}}}}}\n")
    t0 = time.perf_counter()
    out = snakemake("--profile", "slurm", "--configfile", "rehearsal_paths.yaml", "--", "results/table2.csv",
                    cwd=root, timeout=1200)
    wall_s = time.perf_counter() - t0
    assert out.returncode == 0, out.stderr[-5000:]
    print(f"rehearsal Table 2 through SLURM (2 ranks per job): {wall_s:.1f} s")

    runs = root / "results" / "runs" / "rehearsal"
    squeue = {j["job_id"]: j for j in slurm_cluster.squeue_all()}
    for run in ["pretrain/mae_image", "pretrain/mae_audio", "pretrain/deepavfusion", "segmentation/deepavfusion",
                "segmentation/deepavfusion@avsbench_s4"]:
        folder = runs / run
        record = read_json(folder / "submitit" / "launch.json")
        assert record["executor"] == "slurm" and squeue[record["job_id"]]["state"] == "COMPLETED"
        for rank in (0, 1):
            assert f"[launch] rank {rank} of 2" in (folder / "submitit" / f"{record['job_id']}_{rank}_log.out").read_text()
        prov = read_json(folder / "metrics.json")["provenance"]
        assert prov["scale"] == "rehearsal" and prov["world_size"] == 2
        assert prov["effective_batch"] == 8 and prov["accum_iter"] == 2
    avss = read_json(runs / "segmentation/deepavfusion/metrics.json")
    s4 = read_json(runs / "segmentation/deepavfusion@avsbench_s4/metrics.json")
    assert avss["metrics"]["num_classes"] == 71 and avss["config"]["recipe"] == "code"
    assert avss["config"]["data"]["eval_split"] == "val" and avss["config"]["oversample"] == 5
    assert s4["metrics"]["num_classes"] == 1 and s4["config"]["oversample"] == 10
    assert avss["metrics"]["n_frames"] == 4 and s4["metrics"]["n_frames"] == 2   # the val videos' frames
    rows = list(csv.DictReader(open(root / "results" / "table2.csv")))
    ours = [r for r in rows if r["variant"] == "deepavfusion" and r["status"] == "ok"]
    assert {r["dataset"] for r in ours} == {"avsbench_s4", "avsbench_avss"}, rows
