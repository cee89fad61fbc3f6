"""The smoke slice of the DAG on a real single-node SLURM (scripts/slurm/start.sh): a table produced
with `snakemake --profile slurm`, every heavy job a SLURM job; and a real pretraining job that is
preempted mid-training, requeued by submitit's checkpoint(), resumed from checkpoint_latest.pth,
and finishes with exactly the metrics of an uninterrupted run.
"""
from __future__ import annotations

import csv
import shlex
import shutil
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


def readme_cluster_command() -> list[str]:
    """The README's cluster command (section "Running on a cluster"), as a user would type it."""
    text = (REPO / "README.md").read_text().split("## Running on a cluster")[1]
    line = next(ln for ln in text.splitlines() if ln.startswith("snakemake --profile slurm"))
    assert "--configfile my_cluster.yaml" in line, line
    return shlex.split(line)


def user_checkout(tmp_path: Path) -> Path:
    """The workflow files of a checkout (Snakefile, workflow/, profiles/, the `slurm` link), so that the
    README's relative paths (results/table2.csv) land in tmp_path; the package is the venv's install."""
    root = tmp_path / "checkout"
    root.mkdir()
    for name in ("Snakefile", "environment.yml"):   # (rules name environment.yml as their conda env)
        shutil.copy2(REPO / name, root / name)
    for name in ("workflow", "profiles"):            # profiles/default: the workflow profile
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, root / name, symlinks=True)
    (root / "slurm").symlink_to("workflow/profiles/slurm")
    return root


def test_readme_cluster_command_with_a_user_configfile_submits_every_job_to_slurm(tmp_path, slurm_cluster,
                                                                                 smoke_data):
    """The README's command verbatim, with the user's own --configfile (scale smoke here): every heavy job
    went through sbatch (a SLURM job id in squeue, submitit's log of that id in the run folder)."""
    root = user_checkout(tmp_path)
    (root / "my_cluster.yaml").write_text(f"scale: smoke\nslurm_partition: debug\ndata_dir: {smoke_data}\n")
    command = readme_cluster_command()
    results = root / "results"
    t0 = time.perf_counter()
    out = snakemake(*command[1:], cwd=root, timeout=600)
    wall_s = time.perf_counter() - t0
    assert out.returncode == 0, out.stderr[-4000:]
    print(f"README cluster command, smoke table2 through SLURM: {wall_s:.1f} s")

    target = results / "table2.csv"
    rows = list(csv.DictReader(open(target)))
    ours = [r for r in rows if "deepavfusion" in str(r.values())]
    assert ours, rows
    squeue = {j["job_id"]: j for j in slurm_cluster.squeue_all()}
    last_id = slurm_cluster.last_job_id()
    runs = ["pretrain/mae_image", "pretrain/mae_audio", "pretrain/deepavfusion", "segmentation/deepavfusion"]
    for run in runs:
        folder = results / "runs" / "smoke" / run
        record = read_json(folder / "submitit" / "launch.json")
        assert record["executor"] == "slurm"
        assert f"to slurm as job {record['job_id']};" in (folder / "launch.log").read_text()
        job = squeue[record["job_id"]]
        assert job["state"] == "COMPLETED" and job["name"].startswith("avf-smoke-")
        assert (folder / "submitit" / f"{record['job_id']}_0_log.out").is_file()
        assert read_json(folder / "metrics.json")["provenance"]["scale"] == "smoke"
    seg = read_json(results / "runs/smoke/segmentation/deepavfusion/metrics.json")["metrics"]
    assert 0.0 <= seg["miou"] <= 100.0 and seg["n_frames"] == 6

    # nothing is submitted twice: a second run (outputs up to date) runs no job and submits nothing;
    # a --config on top of the user's --configfile keeps the slurm executor too
    again = snakemake(*command[1:-2], "--rerun-triggers", "mtime", "--config", "seed=0", "--", command[-1], cwd=root)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    assert slurm_cluster.jobs_submitted_after(last_id) == []


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
    last_id = slurm_cluster.last_job_id()
    out = snakemake("--profile", "slurm", "--config", "scale=smoke", "slurm_partition=gpu_nosuch",
                    f"results={tmp_path}", "--", f"{tmp_path}/runs/smoke/pretrain/mae_image/metrics.json")
    assert out.returncode == 1
    assert "config error at 'slurm_partition': SLURM partition 'gpu_nosuch' does not exist" in out.stderr
    assert "['debug']" in out.stderr  # what the cluster has
    assert slurm_cluster.jobs_submitted_after(last_id) == [] and not (tmp_path / "runs").exists()


def test_two_rank_pretraining_on_slurm_equals_one_rank_on_the_combined_batch(tmp_path, slurm_cluster, smoke_data):
    """A SLURM job of 2 tasks (`--tasks-per-node 2`: one task per rank, as one per GPU at paper scale) runs
    2 gloo ranks set up from submitit's JobEnvironment; with per-sample seeded randomness
    (optim.sample_seeded_rng) it trains exactly like 1 process on the combined batch (4 x 2 = 8)."""
    data = smoke_data / "smoke" / "tuxav"
    config = tmp_path / "pretrain.yaml"
    config.write_text(
        "scale: smoke\ndevice: cpu\nmodel: {preset: deepavfusion-smoke}\n"
        f"data: {{manifest: {data}, image_size: 64}}\n"
        "optim: {epochs: 2, batch_size: 4, warmup_epochs: 1, sample_seeded_rng: true}\n"
        "knn: {every: 1, batch_size: 16}\n")

    def launch(out: Path, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "avfusion.launch", "--task", "pretrain", "--config", str(config),
                               "--out", str(out), "--time-min", "10", "--mem-gb", "2", *args],
                              capture_output=True, text=True, timeout=600)

    two = launch(tmp_path / "two_ranks", "--executor", "slurm", "--tasks-per-node", "2")
    one = launch(tmp_path / "one_rank", "--executor", "debug", "--set", "optim.batch_size=8")
    assert two.returncode == 0 and one.returncode == 0, two.stderr[-3000:] + one.stderr[-3000:]

    folder = tmp_path / "two_ranks" / "submitit"
    job_id = read_json(folder / "launch.json")["job_id"]
    assert slurm_state(job_id) == "COMPLETED"
    for rank in (0, 1):  # one SLURM task per rank, each told its rank by submitit's job environment
        log = (folder / f"{job_id}_{rank}_log.out").read_text()
        assert f"[launch] rank {rank} of 2 (local rank {rank}, master " in log
    two_m, one_m = read_json(tmp_path / "two_ranks/metrics.json"), read_json(tmp_path / "one_rank/metrics.json")
    assert two_m["provenance"]["world_size"] == 2 and one_m["provenance"]["world_size"] == 1
    assert two_m["provenance"]["effective_batch"] == one_m["provenance"]["effective_batch"] == 8
    assert two_m["provenance"]["lr"] == one_m["provenance"]["lr"]
    assert two_m["metrics"]["steps"] == one_m["metrics"]["steps"] > 2
    print(f"2 ranks x 4 vs 1 rank x 8: loss {two_m['metrics']['loss']:.6f} vs {one_m['metrics']['loss']:.6f}, "
          f"knn_acc_all {two_m['metrics'].get('knn_acc_all')} vs {one_m['metrics'].get('knn_acc_all')}")
    for key, value in one_m["metrics"].items():
        assert two_m["metrics"][key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    two_sd = torch.load(tmp_path / "two_ranks/checkpoints/checkpoint_latest.pth", weights_only=False)["state_dict"]
    one_sd = torch.load(tmp_path / "one_rank/checkpoints/checkpoint_latest.pth", weights_only=False)["state_dict"]
    for name, value in one_sd.items():
        torch.testing.assert_close(two_sd[name], value, rtol=1e-4, atol=1e-5)
    print("max |2-rank - 1-rank| over parameters:", max((two_sd[n] - v).abs().max().item() for n, v in one_sd.items()))
