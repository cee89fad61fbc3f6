"""The rehearsal scale (workflow/config/scales/rehearsal.yaml): the paper scale's config with smoke-size
encoders and reduced steps/batches, over official layouts built here from the real media of
../shared/testdata, through the test SLURM with 2 ranks per job. Table 2 end to end: VGGSound (official
layout) for the AV-MAE and the unimodal MAE pretrainings, AVSBench (official layout with a 71-class
label2idx.json) for S4 (binary) and AVSS (the 71-class head and multi-class mIoU), recipes `code`,
evaluation on `val`, effective batch 8 = 2 per rank x 2 ranks x accumulation 2."""
from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from avfusion.data.layouts import vggmusic
from avfusion.data.layouts.common import clip_filename, metadata_file, read_csv, read_lines, split_clip_key
from avfusion.io import read_json
from slurm_cluster import slurm_cluster  # noqa: F401  (session fixture)
from test_layouts import jpg, media_files, put, write_lines
from test_workflow import snakemake
from test_workflow_slurm import user_checkout

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

OBJECTS = ["guitar", "dog", "man"]
LABEL2IDX = {"background": 1, **{name: i + 2 for i, name in enumerate(OBJECTS)},
             **{f"class_{i:03d}": i + 1 for i in range(len(OBJECTS) + 1, 71)}}   # 71 classes, as AVSBench-AVSS
MUSIC_SOLO_CLASSES = ["accordion", "acoustic guitar", "cello", "clarinet", "erhu", "flute", "saxophone",
                      "trumpet", "tuba", "violin", "xylophone"]   # the 11 instruments of MUSIC solo


def vggsound_clip(root: Path, src: Path, key: str, folder: str) -> Path:
    """One clip of the official VGGSound tree: clips/<folder>/<YTID>_<start>_<start+10>.mp4 (key YTID_start)."""
    ytid, start = split_clip_key(key)
    return put(src, root / "clips" / folder / clip_filename(ytid, start))


def pick(items: list[tuple[str, str]], n_classes: int, per_class: int, keep=lambda key: True) -> dict:
    """{key: class}: the first `per_class` keys that `keep` accepts of each of the first `n_classes`
    classes, in the order of an official list of (YTID_start, class)."""
    chosen: dict[str, str] = {}
    counts: dict[str, int] = {}
    for key, cls in items:
        if keep(key) and counts.get(cls, 0) < per_class and (cls in counts or len(counts) < n_classes):
            counts[cls] = counts.get(cls, 0) + 1
            chosen[key] = cls
    return chosen


def vggsound_tree(root: Path, mp4s: list[Path], n_music: int = 8, n_music_pairs: int = 2,
                  n_instruments: int = 8) -> Path:
    """The official VGGSound tree, as VGGSound, VGGSound-Music and VGGSound-Instruments all read it:
    - 16 clips of 4 classes listed in annotations/vggsound.csv (12 train + 4 test);
    - VGGSound-Music: `n_music` train clips (2 per class) of the shipped vggmusic_train.txt and the
      sources of the first `n_music_pairs` Easy pairs of the shipped vggmusic_eval_ss.csv;
    - VGGSound-Instruments: `n_instruments` clips of the shipped vgginstruments_train.txt, half from
      YouTube ids the parser holds out (every 20th sorted id), from 2 classes on each side.
    The media are the real mp4s of testdata, reused."""
    lines = []
    for i in range(16):
        label = ["playing violin, fiddle", "dog barking", "playing cello", "people sneezing"][i % 4]
        folder = label.replace(" ", "_").replace(",", "_").replace("(", "_").replace(")", "_")
        vggsound_clip(root, mp4s[i % len(mp4s)], f"clip{i:07d}_{i:06d}", folder)
        lines.append(f'clip{i:07d},{i},"{label}",{"train" if i < 12 else "test"}')
    write_lines(root / "annotations" / "vggsound.csv", lines)

    pairs = [p for p in vggmusic.read_eval_pairs(metadata_file("vggmusic_eval_ss.csv"))
             if p["sep_type"] == "Easy"][:n_music_pairs]
    chosen = {p[s]: vggmusic.music_folder(p[c]) for p in pairs for s, c in (("source_1", "class_1"),
                                                                         ("source_2", "class_2"))}
    chosen |= pick(vggmusic.read_class_list(metadata_file("vggmusic_train.txt")), n_music // 2, 2,
                   lambda key: key not in chosen)
    items = vggmusic.read_class_list(metadata_file("vgginstruments_train.txt"))
    held_out = set(sorted({split_clip_key(key)[0] for key, _ in items})[::20])   # the parser's default rule
    for side in (True, False):
        chosen |= pick(items, 2, n_instruments // 4, lambda key: (split_clip_key(key)[0] in held_out) == side)
    for n, (key, cls) in enumerate(sorted(chosen.items())):
        vggsound_clip(root, mp4s[n % len(mp4s)], key, f"playing_{cls}")
    return root


def music_tree(root: Path, mp4s: list[Path], n_videos: int = 260) -> Path:
    """Official MUSIC solo layout (anno/music_solo.csv, clips_360p_segm/<cls>/<yid>.<k>.mp4) with
    `n_videos` solo videos of the 11 classes (one segment each, one real mp4 per class; 11 classes share 9
    mp4s, so a few evaluation pairs hold one clip twice, which BSS Eval must survive). The official rule
    holds out every (N // 130)-th video: 260 videos -> 130 train + 130 evaluation videos; fewer than
    260 would leave no training video."""
    rows = ["yid,cls,url"]
    for i in range(n_videos):
        cls, yid = MUSIC_SOLO_CLASSES[i % len(MUSIC_SOLO_CLASSES)], f"solo{i:07d}"
        rows.append(f"{yid},{cls},https://www.youtube.com/watch?v={yid}")
        media = mp4s[(i % len(MUSIC_SOLO_CLASSES)) % len(mp4s)]   # per class: few pairs of one clip twice
        put(media, root / "clips_360p_segm" / cls.replace(" ", "_") / f"{yid}.0.mp4")
    write_lines(root / "anno" / "music_solo.csv", rows)
    return root


def flickr_tree(root: Path, media: dict, n_test: int = 4, n_train: int = 8) -> Path:
    """Official Flickr-SoundNet layout (frames/<id>.jpg 256 x 256, audio/<id>.wav, Annotations/<id>.xml)
    for the first ids of the shipped flickr_test.csv and flickr_sup_train.txt; two annotator boxes each."""
    ids = ([r[0] for r in read_csv(metadata_file("flickr_test.csv"))][:n_test]
           + read_lines(metadata_file("flickr_sup_train.txt"))[:n_train])
    xml = ("<annotation><filename>{id}.jpg</filename>"
           "<object><bbox><idx>1</idx><xmin>{a}</xmin><ymin>64</ymin><xmax>160</xmax><ymax>192</ymax></bbox></object>"
           "<object><bbox><idx>2</idx><xmin>40</xmin><ymin>{a}</ymin><xmax>180</xmax><ymax>200</ymax></bbox></object>"
           "</annotation>")
    for n, vid in enumerate(ids):
        jpg(media["png"][n % len(media["png"])], root / "frames" / f"{vid}.jpg", size=(256, 256))
        put(media["wav"][n % len(media["wav"])], root / "audio" / f"{vid}.wav")
        write_lines(root / "Annotations" / f"{vid}.xml", [xml.format(id=vid, a=16 + 8 * (n % 4))])
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


def rehearsal_layouts(root: Path, media: dict) -> dict[str, Path]:
    """dataset key of the paper config -> the root of its official layout, built from the real media."""
    vggsound = vggsound_tree(root / "vggsound", media["mp4"])
    avsbench = avsbench_tree(root / "AVSBench", media)
    return {"vggsound": vggsound, "vggsound_music": vggsound, "vggsound_instruments": vggsound,
            "music_solo": music_tree(root / "MUSIC", media["mp4"]),
            "avsbench_s4": avsbench, "avsbench_avss": avsbench,
            "flickr_soundnet": flickr_tree(root / "Flickr-SoundNet", media)}


@dataclass
class Rehearsal:
    root: Path            # a user checkout (Snakefile, workflow/, profiles/) with rehearsal_paths.yaml
    layouts: dict

    def run(self, *targets: str, timeout: int = 1800):
        """The README's cluster command at rehearsal scale: snakemake --profile slurm --configfile ..."""
        t0 = time.perf_counter()
        out = snakemake("--profile", "slurm", "--configfile", "rehearsal_paths.yaml", "--", *targets,
                        cwd=self.root, timeout=timeout)
        return out, time.perf_counter() - t0


@pytest.fixture(scope="session")
def rehearsal(tmp_path_factory, testdata, slurm_cluster) -> Rehearsal:
    """One checkout and one set of official layouts for every rehearsal test of the session: the Table 2
    and Table 4 tests share the prepared manifests and the pretrainings (Snakemake reruns nothing)."""
    tmp = tmp_path_factory.mktemp("rehearsal")
    layouts = rehearsal_layouts(tmp / "layouts", media_files(testdata))
    root = user_checkout(tmp)
    roots = ", ".join(f"{name}: {{root: {path}}}" for name, path in layouts.items())
    (root / "rehearsal_paths.yaml").write_text(f"scale: rehearsal\nslurm_partition: debug\ndatasets: {{{roots}}}\n")
    return Rehearsal(root, layouts)


def test_rehearsal_table2_on_official_layouts_through_slurm_with_two_ranks(rehearsal, slurm_cluster):
    out, wall_s = rehearsal.run("results/table2.csv")
    assert out.returncode == 0, out.stderr[-5000:]
    print(f"rehearsal Table 2 through SLURM (2 ranks per job): {wall_s:.1f} s")
    root = rehearsal.root

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


def run_dataset(run: Path) -> str | None:
    """The dataset a run read, from its own metrics.json: the manifest folder of its config
    (data/<scale>/<dataset>); None for a run without a manifest (efficiency)."""
    config = read_json(run)["config"]
    manifest = (config.get("data") or {}).get("manifest") or config.get("manifest")
    return Path(manifest).name if manifest else None


def assert_cells_name_their_run_and_dataset(root: Path, table: str, expected: dict[str, str] | None = None) -> list[dict]:
    """Every measured cell of results/<table>.csv names its run folder and its dataset, the dataset is the
    one the paper measures that column on (no '(paper: ...)' note), and the run it names read that dataset
    (its own config's manifest); `expected` maps a column label, or else a task, to that dataset."""
    rows = list(csv.DictReader(open(root / "results" / f"{table}.csv")))
    measured = [r for r in rows if r["status"] == "ok"]
    assert measured, rows
    for cell in measured:
        run = root / cell["run"]
        assert run.is_file() and run.parent.parent.name == cell["task"], cell
        assert run.parent.name.split("@")[0] == cell["variant"], cell
        assert cell["scale"] == "rehearsal", cell
        here = run_dataset(run)
        if cell["dataset"] == "(no dataset)":
            assert here is None, cell
        else:
            assert "(paper:" not in cell["dataset"] and here == cell["dataset"], (cell, here)
            if expected:
                assert here == expected.get(cell["column"], expected.get(cell["task"])), (cell, here)
    return measured


def test_rehearsal_table4_through_slurm_every_cell_names_its_run_and_dataset(rehearsal, slurm_cluster):
    """Table 4 of the rehearsal (6 pretraining variants + the 2 unimodal MAEs, then linear probe on
    VGGSound, separation on VGGSound-Music pairs, AVSS segmentation for each; 2 ranks per job), sharing
    the layouts and pretrainings of the Table 2 test; each measured cell's run read the dataset the paper
    measures that column on."""
    out, wall_s = rehearsal.run("results/table4.csv")
    assert out.returncode == 0, out.stderr[-5000:]
    print(f"rehearsal Table 4 through SLURM (2 ranks per job): {wall_s:.1f} s")
    cells = assert_cells_name_their_run_and_dataset(rehearsal.root, "table4", {
        "linprobe": "vggsound", "separation": "vggsound_music", "segmentation": "avsbench_avss"})
    variants = {"deepavfusion", "no_unimodal_init", "token_fusion", "mid_fusion", "late_fusion", "no_fusion"}
    assert {(c["variant"], c["task"]) for c in cells} >= {(v, t) for v in variants
                                                        for t in ("linprobe", "separation", "segmentation")}
    runs = rehearsal.root / "results" / "runs" / "rehearsal"
    for variant in variants:
        prov = read_json(runs / "pretrain" / variant / "metrics.json")["provenance"]
        assert prov["world_size"] == 2 and prov["effective_batch"] == 8, (variant, prov)
    sep = read_json(runs / "separation/deepavfusion/metrics.json")
    assert sep["metrics"]["n_pairs"] == 2 and sep["config"]["recipe"] == "code"   # the 2 official Easy pairs


@pytest.mark.skipif(os.environ.get("AVFUSION_REHEARSAL_ALL") != "1",
                    reason="the whole paper DAG at rehearsal scale: ~120 two-rank SLURM jobs, about an hour on 2 "
                           "cores (README); set AVFUSION_REHEARSAL_ALL=1 to run it")
def test_rehearsal_all_every_table_and_figure_through_slurm(rehearsal, slurm_cluster):
    """`snakemake --profile slurm --configfile rehearsal_paths.yaml -- all`: every table, figure and the
    claims report; every measured cell of Tables 1-7 names its run and the paper's dataset; Table 1's
    MUSIC columns come from MUSIC solo pairs; Table 5's dense row is timed with the official (naive)
    dense computation, ours is the extra row."""
    out, wall_s = rehearsal.run("all", timeout=3 * 3600)
    assert out.returncode == 0, out.stderr[-5000:]
    print(f"rehearsal `all` through SLURM (2 ranks per job): {wall_s:.1f} s")
    results = rehearsal.root / "results"
    for n in range(1, 8):
        assert_cells_name_their_run_and_dataset(rehearsal.root, f"table{n}")
        assert (results / f"table{n}.md").is_file()
        unmeasured = [c for c in csv.DictReader(open(results / f"table{n}.csv"))
                      if c["status"].startswith(("missing", "no "))]   # a run or a dataset the DAG lacks
        assert not unmeasured, unmeasured
    assert (results / "claims.md").is_file() and list((results / "figures").glob("*.png"))
    table1 = list(csv.DictReader(open(results / "table1.csv")))
    music = [c for c in table1 if c["variant"] == "deepavfusion" and c["column"].startswith("MUSIC")
             and c["status"] != "n/a"]
    assert music and all(c["status"] == "ok" and c["dataset"] == "music_solo" for c in music), music
    assert (rehearsal.root / "data" / "rehearsal" / "music_solo" / "pairs.csv").is_file()
    table5 = list(csv.DictReader(open(results / "table5.csv")))
    for cell in (c for c in table5 if c["task"] == "efficiency" and c["status"] == "ok"):
        impl = read_json(rehearsal.root / cell["run"])["config"]["model"].get("fusion", {}).get("dense_impl")
        assert impl == {"dense": "naive", "late_fusion": "naive", "dense_fast": "fast"}.get(cell["variant"], impl), cell
    assert {c["variant"] for c in table5 if c["task"] == "efficiency" and c["status"] == "ok"} >= {
        "dense", "dense_fast", "deepavfusion", "late_fusion"}
