"""avfusion.launch polls squeue with a back-off: doubling while queued, at least 30 s once running,
while the job's result file (a local stat) is still looked at every poll_s, so a finished job is
noticed at once. With 16 jobs in flight the old fixed 2 s poll made about 8 squeue calls a second."""
from __future__ import annotations

import time

import pytest

import avfusion.launch as launch_mod
from avfusion.launch import Resources, launch, next_squeue_interval
from slurm_cluster import slurm_cluster  # noqa: F401  (session fixture)
from test_launch import TESTS, ResumableRegression, _fitted


def test_interval_doubles_while_pending_and_is_at_least_30_s_once_running():
    seq, interval = [], launch_mod.SQUEUE_FIRST_S / 2
    for _ in range(8):
        interval = next_squeue_interval(interval, "PENDING")
        seq.append(interval)
    assert seq == [5, 10, 20, 40, 80, 120, 120, 120]
    assert next_squeue_interval(5, "RUNNING") == 30
    assert next_squeue_interval(40, "RUNNING") == 80
    assert next_squeue_interval(120, "RUNNING") == 120
    assert next_squeue_interval(2.5, "COMPLETING") == 30
    # a job that runs for an hour is asked about at most 1 + 30 + 29 + ... times: count them
    t, interval, calls = 0.0, launch_mod.SQUEUE_FIRST_S / 2, 0
    while t < 3600:
        calls += 1
        interval = next_squeue_interval(interval, "RUNNING")
        assert interval >= 30
        t += interval
    assert calls <= 32


@pytest.mark.slurm
def test_a_running_slurm_job_is_asked_about_rarely_and_its_end_is_noticed_at_once(
        tmp_path, slurm_cluster, monkeypatch):
    """A real SLURM job that runs about 8 s: squeue is called at most 3 times (not 16 at 0.5 s),
    and the launcher returns within a few seconds of the job's end (the result file)."""
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    calls: list[tuple[float, str]] = []
    real = launch_mod.slurm_state

    def counted(job_id):
        state = real(job_id)
        calls.append((time.time(), state))
        return state

    monkeypatch.setattr(launch_mod, "slurm_state", counted)
    t0 = time.time()
    result = launch(ResumableRegression(tmp_path, epochs=6, sleep_s=1.3), tmp_path, executor="slurm",
                    resources=Resources(time_min=5, mem_gb=1), poll_s=0.5)
    elapsed = time.time() - t0
    done = (tmp_path / "metrics.json").stat().st_mtime
    assert len(result) and _fitted(result)[0] < 1e-3
    waited = [s for t, s in calls if t < done]   # calls while the job ran (then the short end check)
    assert 1 <= len(waited) <= 3, calls
    assert done - t0 > 7
    assert elapsed < 60 and time.time() - done < 25, (elapsed, calls)
