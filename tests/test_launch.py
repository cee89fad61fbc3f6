"""avfusion.launch: debug / local / slurm executors run a real resumable training job; a finished
run is never resubmitted; a requeued SLURM job resumes from its checkpoint with identical results.

The job here is a small real training (least squares by SGD with a checkpoint every epoch) so the
launcher is tested apart from the model code; tests/test_workflow_slurm.py runs the real tasks.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from avfusion.io import atomic_torch_save, read_json
from avfusion.launch import LaunchError, Resources, TaskJob, launch, slurm_state
from avfusion.provenance import write_metrics
from slurm_cluster import slurm_cluster  # noqa: F401  (session fixture)

TESTS = Path(__file__).resolve().parent
TRUE_W = torch.tensor([[1.5], [-2.0], [0.5]])


class ResumableRegression:
    """Fit y = X w by SGD for `epochs` epochs; checkpoint each epoch; resume from checkpoint_latest.pth."""

    def __init__(self, out_dir, epochs=4, sleep_s=0.0, fail=False):
        self.out_dir, self.epochs, self.sleep_s, self.fail = Path(out_dir), epochs, sleep_s, fail

    def __call__(self) -> dict:
        torch.set_num_threads(1)
        if self.fail:
            raise ValueError("deliberate failure in the job")
        ckpt = self.out_dir / "checkpoints" / "checkpoint_latest.pth"
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(256, 3, generator=gen)  # (N, 3)
        y = x @ TRUE_W + 0.01 * torch.randn(256, 1, generator=gen)  # (N, 1)
        w = torch.zeros(3, 1, requires_grad=True)
        opt = torch.optim.SGD([w], lr=0.1, momentum=0.5)
        start = 0
        if ckpt.is_file():
            state = torch.load(ckpt)
            w.data.copy_(state["state_dict"]["w"])
            opt.load_state_dict(state["optimizer"])
            start = state["epoch"] + 1
        with open(self.out_dir / "starts.txt", "a") as fh:
            fh.write(f"{start} {os.environ.get('SLURM_JOB_ID', '-')} {os.getpid()}\n")
        for epoch in range(start, self.epochs):
            order = torch.randperm(256, generator=torch.Generator().manual_seed(100 + epoch))
            for idx in order.view(8, 32):  # 8 minibatches of 32
                loss = ((x[idx] @ w - y[idx]) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            atomic_torch_save({"state_dict": {"w": w.detach()}, "optimizer": opt.state_dict(), "epoch": epoch}, ckpt)
            time.sleep(self.sleep_s)
        final = ((x @ w - y) ** 2).mean().item()
        metrics = {"loss": final, "w0": w[0, 0].item(), "w1": w[1, 0].item(), "w2": w[2, 0].item()}
        write_metrics(self.out_dir, metrics, scale="test", seed=0)
        return dict(metrics, pid=os.getpid(), slurm_job_id=os.environ.get("SLURM_JOB_ID", ""))

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(ResumableRegression(self.out_dir, self.epochs, self.sleep_s))


class RankZeroFails:
    """A 2-rank job whose rank 0 fails at once while rank 1 waits (as a rank waits in a collective)."""

    def __init__(self, wait_s: float):
        self.wait_s = wait_s

    def __call__(self) -> None:
        if os.environ.get("SLURM_PROCID", "0") == "0":
            raise ValueError("deliberate failure on rank 0")
        time.sleep(self.wait_s)


def _starts(out: Path) -> list[list[str]]:
    return [line.split() for line in (out / "starts.txt").read_text().splitlines()]


def _fitted(metrics: dict) -> list[float]:
    return [metrics[k] for k in ("loss", "w0", "w1", "w2")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The uninterrupted run, in-process (debug executor)."""
    out = tmp_path_factory.mktemp("reference")
    return launch(ResumableRegression(out, epochs=6), out, executor="debug")


def test_debug_executor_runs_in_process_and_fits(reference):
    assert reference["pid"] == os.getpid()
    assert reference["loss"] < 2e-4  # noise variance is 1e-4
    assert [reference["w0"], reference["w1"], reference["w2"]] == pytest.approx([1.5, -2.0, 0.5], abs=0.01)


def test_local_executor_runs_a_subprocess_with_identical_result(tmp_path, reference, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    result = launch(ResumableRegression(tmp_path, epochs=6), tmp_path, executor="local",
                    resources=Resources(time_min=5))
    assert result["pid"] != os.getpid()
    assert _fitted(result) == _fitted(reference)
    assert read_json(tmp_path / "submitit" / "launch.json")["executor"] == "local"
    assert any(p.name.endswith("_log.out") for p in (tmp_path / "submitit").iterdir())


def test_finished_run_is_not_resubmitted(tmp_path):
    first = launch(ResumableRegression(tmp_path, epochs=2), tmp_path, executor="debug")
    # slurm executor with no cluster at all: it must not even try to submit
    again = launch(ResumableRegression(tmp_path, epochs=2), tmp_path, executor="slurm")
    assert _fitted(again) == _fitted(first)
    assert len(_starts(tmp_path)) == 1


def test_failed_job_raises_its_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    with pytest.raises(Exception, match="deliberate failure in the job"):
        launch(ResumableRegression(tmp_path, fail=True), tmp_path, executor="local", resources=Resources(time_min=5))
    assert not (tmp_path / "metrics.json").exists()


def test_bad_resources_are_refused_before_submission(tmp_path):
    with pytest.raises(LaunchError, match="'cpus'"):
        launch(ResumableRegression(tmp_path), tmp_path, executor="local", resources=Resources(cpus=0))
    assert not (tmp_path / "submitit").exists()


def test_cli_rejects_unknown_task_and_executor(tmp_path):
    cmd = [sys.executable, "-m", "avfusion.launch", "--out", str(tmp_path)]
    bad_task = subprocess.run(cmd + ["--task", "nosuch"], capture_output=True, text=True)
    assert bad_task.returncode == 2 and "'nosuch' is not an avfusion command" in bad_task.stderr
    bad_exec = subprocess.run(cmd + ["--task", "pretrain", "--executor", "pbs"], capture_output=True, text=True)
    assert bad_exec.returncode == 2 and "invalid choice: 'pbs'" in bad_exec.stderr


def test_task_job_command_and_checkpoint_resubmit_the_same_command(tmp_path):
    job = TaskJob("pretrain", tmp_path / "run", ["a.yaml"], ["optim.epochs=2"])
    assert job.argv() == ["pretrain", "--config", str(Path("a.yaml").resolve()), "--set", "optim.epochs=2",
                          "--out", str((tmp_path / "run").resolve())]
    again = job.checkpoint()
    assert again.function.argv() == job.argv() and again.function is not job


@pytest.mark.slurm
def test_slurm_executor_runs_a_slurm_job(tmp_path, reference, slurm_cluster, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    result = launch(ResumableRegression(tmp_path, epochs=6), tmp_path, executor="slurm",
                    resources=Resources(time_min=5, mem_gb=1), job_name="avf-test-slurm", poll_s=0.5)
    job_id = read_json(tmp_path / "submitit" / "launch.json")["job_id"]
    assert result["slurm_job_id"] == job_id
    assert _fitted(result) == _fitted(reference)
    assert (tmp_path / "submitit" / f"{job_id}_0_log.out").is_file()
    jobs = {j["job_id"]: j for j in slurm_cluster.squeue_all()}
    assert jobs[job_id]["name"] == "avf-test-slurm" and jobs[job_id]["state"] == "COMPLETED"


@pytest.mark.slurm
def test_requeued_slurm_job_resumes_from_checkpoint(tmp_path, slurm_cluster, monkeypatch):
    """`scontrol requeue` mid-training (SIGTERM, then SIGKILL after KillWait): the same SLURM job
    starts again, resumes from checkpoint_latest.pth, and the result equals an uninterrupted run.
    (The USR2 -> checkpoint() path with a real task: tests/test_workflow_slurm.py.)"""
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(launch(
        ResumableRegression(tmp_path, epochs=6, sleep_s=1.5), tmp_path, executor="slurm",
        resources=Resources(time_min=5, mem_gb=1), poll_s=0.5)))
    thread.start()
    ckpt = tmp_path / "checkpoints" / "checkpoint_latest.pth"
    deadline = time.time() + 120
    while not ckpt.is_file() and time.time() < deadline:
        time.sleep(0.2)
    job_id = read_json(tmp_path / "submitit" / "launch.json")["job_id"]
    # the requeued job waits cred_expire (10 s, scripts/slurm/slurm.conf.template) and starts again
    subprocess.run(["scontrol", "requeue", job_id], check=True, timeout=30)
    thread.join(timeout=240)
    assert not thread.is_alive()
    starts = _starts(tmp_path)
    assert len(starts) == 2 and starts[0][0] == "0" and 0 < int(starts[1][0]) < 6
    assert starts[0][1] == starts[1][1] == job_id and starts[0][2] != starts[1][2]  # same job, new process
    uninterrupted = launch(ResumableRegression(tmp_path / "plain", epochs=6), tmp_path / "plain", executor="debug")
    assert _fitted(result) == _fitted(uninterrupted)
    assert slurm_state(job_id) == "COMPLETED"


@pytest.mark.slurm
def test_second_launch_reattaches_to_the_running_slurm_job(tmp_path, slurm_cluster, monkeypatch, capsys):
    """E.g. Snakemake restarted while its SLURM job still runs: the job is waited for, not resubmitted."""
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    results: list[dict] = []
    job = ResumableRegression(tmp_path, epochs=4, sleep_s=1.0)
    first = threading.Thread(target=lambda: results.append(launch(job, tmp_path, executor="slurm",
                                                                  resources=Resources(time_min=5, mem_gb=1), poll_s=0.5)))
    first.start()
    deadline = time.time() + 120
    while not (tmp_path / "starts.txt").is_file() and time.time() < deadline:
        time.sleep(0.2)
    last_id = slurm_cluster.last_job_id()
    second = launch(job, tmp_path, executor="slurm", resources=Resources(time_min=5, mem_gb=1), poll_s=0.5)
    first.join(timeout=120)
    job_id = read_json(tmp_path / "submitit" / "launch.json")["job_id"]
    assert f"re-attaching to SLURM job {job_id}" in capsys.readouterr().out
    assert slurm_cluster.jobs_submitted_after(last_id) == [] and len(_starts(tmp_path)) == 1
    assert _fitted(second) == _fitted(results[0])


@pytest.mark.slurm
def test_a_failing_rank_ends_the_whole_slurm_job(tmp_path, slurm_cluster, monkeypatch):
    """Rank 0 of a 2-rank SLURM job fails: srun ends rank 1 too (--kill-on-bad-exit), the launch fails
    within seconds instead of when the waiting rank reaches the time limit (rehearsal: 20 min lost)."""
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    t0 = time.perf_counter()
    with pytest.raises(Exception, match="deliberate failure on rank 0"):
        launch(RankZeroFails(wait_s=240), tmp_path, executor="slurm", poll_s=0.5, job_name="avf-test-rankfail",
               resources=Resources(time_min=5, mem_gb=1, tasks_per_node=2))
    assert time.perf_counter() - t0 < 120
    job_id = read_json(tmp_path / "submitit" / "launch.json")["job_id"]
    assert {j["job_id"]: j for j in slurm_cluster.squeue_all()}[job_id]["state"] == "FAILED"
