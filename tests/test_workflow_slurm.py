"""The smoke slice of the DAG on a real single-node SLURM (scripts/slurm/start.sh): a table produced
with `snakemake --profile slurm`, every heavy job a SLURM job; and a real pretraining job that is
preempted mid-training, requeued by submitit's checkpoint(), resumed from checkpoint_latest.pth,
and finishes with exactly the metrics of an uninterrupted run.
"""
from __future__ import annotations

import csv
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from avfusion.io import read_json
from avfusion.launch import slurm_state
from slurm_cluster import slurm_cluster  # noqa: F401  (session fixture)
from test_workflow import snakemake

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture(scope="module")
def smoke_data(tmp_path_factory) -> Path:
    """data_dir with the smoke tuxav manifest (data/smoke/tuxav), made once for this module."""
    data = tmp_path_factory.mktemp("data")
    subprocess.run([sys.executable, "-m", "avfusion.cli", "data", "make-tuxav", "--scale", "smoke",
                    "--out", str(data / "smoke" / "tuxav")], check=True, capture_output=True, timeout=300)
    return data


def test_smoke_table_through_the_slurm_profile(tmp_path, slurm_cluster, smoke_data):
    results, data = tmp_path / "results", smoke_data
    target = f"{results}/table2.csv"
    t0 = time.perf_counter()
    out = snakemake("--profile", "slurm", "--config", "scale=smoke", f"results={results}", f"data_dir={data}",
                    "--", target, timeout=600)
    wall_s = time.perf_counter() - t0
    assert out.returncode == 0, out.stderr[-4000:]
    print(f"smoke table2 through SLURM: {wall_s:.1f} s")

    rows = list(csv.DictReader(open(target)))
    ours = [r for r in rows if "deepavfusion" in str(r.values())]
    assert ours, rows
    squeue = {j["job_id"]: j for j in slurm_cluster.squeue_all()}
    runs = ["pretrain/mae_image", "pretrain/mae_audio", "pretrain/deepavfusion", "segmentation/deepavfusion"]
    for run in runs:
        folder = results / "runs" / "smoke" / run
        record = read_json(folder / "submitit" / "launch.json")
        assert record["executor"] == "slurm"
        job = squeue[record["job_id"]]
        assert job["state"] == "COMPLETED" and job["name"].startswith("avf-smoke-")
        assert (folder / "submitit" / f"{record['job_id']}_0_log.out").is_file()
        assert read_json(folder / "metrics.json")["provenance"]["scale"] == "smoke"
    seg = read_json(results / "runs/smoke/segmentation/deepavfusion/metrics.json")["metrics"]
    assert 0.0 <= seg["miou"] <= 100.0 and seg["n_frames"] == 6

    # nothing is submitted twice: a second run (outputs up to date) runs no job and submits nothing
    again = snakemake("--profile", "slurm", "--rerun-triggers", "mtime", "--config", "scale=smoke",
                      f"results={results}", f"data_dir={data}", "--", target)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    assert len(slurm_cluster.squeue_all()) == len(squeue)


def test_preempted_pretraining_resumes_with_identical_metrics(tmp_path, slurm_cluster, smoke_data):
    data = smoke_data / "smoke" / "tuxav"
    config = tmp_path / "pretrain.yaml"
    config.write_text(
        "scale: smoke\ndevice: cpu\nmodel: {preset: deepavfusion-smoke}\n"
        f"data: {{manifest: {data}, image_size: 64}}\n"
        "optim: {epochs: 4, batch_size: 8, warmup_epochs: 1}\nknn: {every: 2, batch_size: 16}\n")

    def launch(executor: str, out: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "avfusion.launch", "--executor", executor, "--task", "pretrain",
                               "--config", str(config), "--out", str(out), "--time-min", "10", "--mem-gb", "1"],
                              capture_output=True, text=True, timeout=400)

    result: dict = {}
    out = tmp_path / "preempted"
    thread = threading.Thread(target=lambda: result.update(proc=launch("slurm", out)))
    thread.start()
    ckpt = out / "checkpoints" / "checkpoint_latest.pth"
    deadline = time.time() + 240
    while not (ckpt.is_file() and torch.load(ckpt, weights_only=False)["epoch"] >= 0) and time.time() < deadline:
        time.sleep(0.1)
    job_id = read_json(out / "submitit" / "launch.json")["job_id"]
    epoch_at_signal = torch.load(ckpt, weights_only=False)["epoch"]
    assert epoch_at_signal < 3, "the job finished before it could be preempted"
    # what SLURM does before a time limit / on preemption: USR2 -> submitit calls TaskJob.checkpoint()
    # and requeues the job, which starts again after cred_expire (10 s, scripts/slurm/slurm.conf.template)
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=30)
    reference = launch("debug", tmp_path / "uninterrupted")  # meanwhile, in this process's child
    thread.join(timeout=400)
    proc = result["proc"]
    assert proc.returncode == 0 and reference.returncode == 0, proc.stderr[-3000:] + reference.stderr[-3000:]

    err = (out / "submitit" / f"{job_id}_0_log.err").read_text()
    assert "checkpoint(): requeueing pretrain" in (out / "submitit" / f"{job_id}_0_log.out").read_text()
    assert "Requeued" in err or "requeue" in err.lower()
    epochs = list(csv.DictReader(open(out / "epochs.csv")))
    assert [int(r["epoch"]) for r in epochs] == list(range(4))  # every epoch once, none repeated
    resumed = read_json(out / "metrics.json")["metrics"]
    plain = read_json(tmp_path / "uninterrupted" / "metrics.json")["metrics"]
    assert resumed == plain
    assert slurm_state(job_id) == "COMPLETED"


def test_unknown_partition_is_refused_before_any_submission(tmp_path, slurm_cluster):
    before = len(slurm_cluster.squeue_all())
    out = snakemake("--profile", "slurm", "--config", "scale=smoke", "slurm_partition=gpu_nosuch",
                    f"results={tmp_path}", "--", f"{tmp_path}/runs/smoke/pretrain/mae_image/metrics.json")
    assert out.returncode == 1
    assert "config error at 'slurm_partition': SLURM partition 'gpu_nosuch' does not exist" in out.stderr
    assert "['debug']" in out.stderr  # what the cluster has
    assert len(slurm_cluster.squeue_all()) == before and not (tmp_path / "runs").exists()
