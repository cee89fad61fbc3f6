"""metrics.json's provenance.usage: the CPU seconds (user + sys, the process and its waited-for children)
and wall seconds of the whole job process, start-up and imports included, so a DAG's CPU is the sum
over its jobs. Checked on a real job (the smoke efficiency task through avfusion.launch, as a DAG job
runs it) against what the kernel reports for the finished subprocess."""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from avfusion.provenance import process_start_time, process_usage

ROOT = Path(__file__).resolve().parents[1]


def test_a_real_job_records_its_own_cpu_and_wall(tmp_path):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    out = subprocess.run([sys.executable, "-m", "avfusion.launch", "--executor", "debug", "--task", "efficiency",
                          "--config", str(ROOT / "avfusion/tasks/examples/efficiency.yaml"), "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    wall = time.time() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert out.returncode == 0, out.stderr[-2000:]
    prov = json.loads((tmp_path / "metrics.json").read_text())["provenance"]
    usage = prov["usage"]
    child_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # the job's own figure: real work (importing torch alone is > 0.3 CPU-s), user + sys, and no more
    # than its wall time on every core of the machine
    assert usage["cpu_s"] > 0.3
    assert abs(usage["cpu_user_s"] + usage["cpu_sys_s"] - usage["cpu_s"]) < 0.01
    assert usage["cpu_s"] <= usage["process_wall_s"] * os.cpu_count()
    # measured from the process's start (imports included), so it covers the task's own wall time and
    # fits in what this test saw from outside
    assert prov["wall_s"] <= usage["process_wall_s"] <= wall + 0.5
    # the kernel's account of the whole subprocess: the job's figure is all of it but the exit
    # (writing metrics.json is the last thing the job does; unloading torch costs well under 2 CPU-s)
    assert usage["cpu_s"] <= child_cpu + 0.05
    assert child_cpu - usage["cpu_s"] < 2.0
    assert 0 < usage["max_rss_mb"] < 4096


def test_usage_of_this_process_counts_cpu_just_spent():
    start = process_start_time()
    assert start is not None and start <= time.time()
    first = process_usage()
    t = time.process_time()
    while time.process_time() - t < 0.3:  # burn 0.3 CPU-s
        pass
    second = process_usage()
    assert 0.25 <= second["cpu_s"] - first["cpu_s"] <= 0.3 * os.cpu_count() + 0.1
    assert second["process_wall_s"] >= first["process_wall_s"] + 0.25
