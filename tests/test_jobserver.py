"""The warm job server (avfusion/jobserver.py, the DAG's `--warm` jobs): a real smoke pretraining run in a
forked child of the server gives the same metrics and log as the same job in its own process, at less CPU
(no imports); a failing job's exit code and error reach the job process; killing the job process stops
its child. Each test has its own server (its own TMPDIR, so its own socket), which exits when idle."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from avfusion.jobserver import socket_path

ROOT = Path(__file__).resolve().parents[1]


def _job(run: Path, cfg: dict, warm: bool, env: dict, wait: bool = True, task: str = "pretrain"):
    log = run.parent / f"{run.name}.log"
    cmd = [sys.executable, "-m", "avfusion.jobconfig", str(run), json.dumps(cfg), *(["--warm"] if warm else []),
           "--log", str(log), "--", "--executor", "debug", "--task", task, "--cpus", "1"]
    fh = open(log, "a")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
    fh.close()
    if wait:
        proc.wait(timeout=600)
    return proc, log


@pytest.fixture
def server_env(tmp_path):
    """An environment with its own TMPDIR: this test's server and socket, nobody else's."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(tmp))
    yield env
    socket_path(env).unlink(missing_ok=True)   # this test's server: no new job reaches it; it exits when idle


def _pretrain_cfg(manifest_dir: Path) -> dict:
    return {"device": "cpu", "data": {"image_size": 64, "manifest": str(manifest_dir)},
            "optim": {"epochs": 2, "batch_size": 8, "warmup_epochs": 0.5}, "knn": {"every": 1, "batch_size": 16},
            "seed": 0, "scale": "smoke", "model": {"preset": "mae-audio-smoke"}}


def test_a_warm_job_gives_the_same_run_as_a_cold_one(tmp_path, tuxav_smoke, server_env):
    cfg = _pretrain_cfg(tuxav_smoke)
    cold, cold_log = _job(tmp_path / "cold", cfg, warm=False, env=server_env)
    first, _ = _job(tmp_path / "warm1", cfg, warm=True, env=server_env)     # starts the server
    warm, warm_log = _job(tmp_path / "warm2", cfg, warm=True, env=server_env)
    assert (cold.returncode, first.returncode, warm.returncode) == (0, 0, 0), warm_log.read_text()[-2000:]
    assert socket_path(server_env).exists(), "no server was started"
    runs = {name: json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("cold", "warm1", "warm2")}
    assert runs["warm1"]["metrics"] == runs["warm2"]["metrics"] == runs["cold"]["metrics"]
    assert runs["cold"]["metrics"]["steps"] == 8
    for name in ("log.csv", "knn.csv"):
        assert (tmp_path / "warm2" / name).read_text() == (tmp_path / "cold" / name).read_text()
    # the job's log gets the job's output in both ways (the launcher's first and last lines)
    for log in (cold_log, warm_log):
        text = log.read_text()
        assert "[launch] avfusion pretrain --config" in text and '"steps": 8' in text
    # the warm child skips the imports (torch, torch._dynamo: ~3 CPU-s here); its pid is not the job process's
    cold_cpu = runs["cold"]["provenance"]["usage"]["cpu_s"]
    warm_cpu = runs["warm2"]["provenance"]["usage"]["cpu_s"]
    assert warm_cpu < cold_cpu - 1.0, (warm_cpu, cold_cpu)


def test_a_failing_warm_job_returns_its_error(tmp_path, server_env):
    cfg = {"device": "cpu", "batch_size": 2, "warmup": 1, "iters": 2, "dtype": "fp8", "seed": 0, "scale": "smoke",
           "model": {"preset": "deepavfusion-smoke"}}
    proc, log = _job(tmp_path / "bad", cfg, warm=True, env=server_env, task="efficiency")
    assert proc.returncode == 1
    assert "error: avfusion efficiency: config key 'dtype'" in log.read_text()
    assert not (tmp_path / "bad" / "metrics.json").exists()


def test_killing_the_job_process_stops_its_warm_child(tmp_path, server_env):
    cfg = {"device": "cpu", "batch_size": 2, "warmup": 1, "iters": 100000, "seed": 0, "scale": "smoke",
           "model": {"preset": "deepavfusion-smoke"}}
    proc, log = _job(tmp_path / "long", cfg, warm=True, env=server_env, wait=False, task="efficiency")
    lock = tmp_path / "long" / "run.lock"
    deadline = time.time() + 120
    while time.time() < deadline and not (lock.is_file() and "pid=" in lock.read_text()):
        time.sleep(0.2)
    child = int(lock.read_text().split("pid=")[1].split()[0])   # the process that runs the job
    assert child != proc.pid
    os.kill(child, 0)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail(f"the warm child {child} kept running after its job process was killed")
