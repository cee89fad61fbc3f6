"""Snakemake conventions of the DAG: `snakemake --lint` is clean; heavy rules declare resources
(mem_mb, runtime, gpus), so a local GPU run never puts two jobs on one card, and no `benchmark:` (each
job writes its own CPU and wall seconds into metrics.json, provenance.usage: exact and free, where
Snakemake's benchmark thread sampled every job's memory maps every 0.5 s and missed the end of each job);
jobs print their real shell command; `snakemake --report` works on a partial run, missing cells
saying so. Real snakemake runs in a tmp results folder (smoke scale, efficiency jobs: no pretraining)."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml

from test_workflow import REPO, snakemake

SMOKE = yaml.safe_load((REPO / "workflow/config/scales/smoke.yaml").read_text())


def test_snakemake_lint_is_clean():
    out = snakemake("--lint")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Congratulations, your workflow is in a good condition!" in out.stdout + out.stderr


def _jobs(stdout: str) -> list[dict]:
    """rule blocks of a dry run: rule name, benchmark file, resources."""
    jobs = []
    for block in re.split(r"\n(?=\[.*\]\n(?:local)?rule )", stdout):
        m = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        if not m:
            continue
        res = re.search(r"^    resources: (.+)$", block, re.M)
        bench = re.search(r"^    benchmark: (.+)$", block, re.M)
        out = re.search(r"^    output: (.+)$", block, re.M)
        jobs.append({"rule": m.group(1), "output": out.group(1).removesuffix(" (update)") if out else "",
                     "benchmark": bench.group(1) if bench else None,
                     "resources": dict(kv.split("=", 1) for kv in res.group(1).split(", ")) if res else {}})
    return jobs


@pytest.mark.parametrize("local_gpus, gpus", [(1, "1"), (0, "0")])
def test_heavy_rules_declare_resources_and_no_benchmark(tmp_path, local_gpus, gpus):
    out = snakemake("-n", "--cores", "2", "--config", "scale=smoke", f"local_gpus={local_gpus}", f"results={tmp_path}",
                    f"data_dir={tmp_path}/data", "--", f"{tmp_path}/runs/smoke/linprobe/deepavfusion/metrics.json",
                    f"{tmp_path}/runs/smoke/separation/nmf/metrics.json")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Using workflow specific profile profiles/default" in out.stdout + out.stderr  # caps gpus at 1
    jobs = [j for j in _jobs(out.stdout) if j["rule"] in ("pretrain", "downstream", "classical_separation")]
    assert sorted(j["rule"] for j in jobs) == ["classical_separation", "downstream"] + ["pretrain"] * 3
    res = SMOKE["resources"]
    for job in jobs:
        task = {"pretrain": "pretrain", "downstream": "linprobe", "classical_separation": "classical-separation"}[job["rule"]]
        want = {**res["default"], **res.get(task, {})}
        assert job["benchmark"] is None   # provenance.usage of metrics.json instead (see the module doc)
        assert job["resources"]["mem_mb"] == str(int(round(want["mem_gb"] * 1024)))
        assert job["resources"]["runtime"] == str(want["time_min"])
        assert job["resources"]["gpus"] == gpus


@pytest.mark.slow
def test_local_gpu_jobs_run_one_at_a_time_and_the_report_builds_on_a_partial_run(tmp_path):
    """Two efficiency jobs with 2 cores and local_gpus=1 (as on a one-GPU workstation; here they run
    on the CPU): the second starts only after the first finished. Then `snakemake --report` on this
    partial run (2 of 6 Table 5 runs, nothing else) writes report.html, every table saying `missing`."""
    runs = tmp_path / "runs/smoke/efficiency"
    args = ("--cores", "2", "-p", "--config", "scale=smoke", "local_gpus=1", f"results={tmp_path}",
            f"data_dir={tmp_path}/data")
    out = snakemake(*args, "--", f"{runs}/deepavfusion/metrics.json", f"{runs}/dense/metrics.json", timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    log = out.stdout + out.stderr
    events = re.findall(r"^(?:local)?rule (downstream):|^Finished jobid: \d+ \(Rule: (downstream)\)", log, re.M)
    assert [("start" if a else "end") for a, b in events] == ["start", "end", "start", "end"], log[-3000:]
    assert "Shell command: None" not in log
    assert "Shell command: python -m avfusion.jobconfig" in log and " -- --executor debug --task efficiency" in log
    for variant in ("deepavfusion", "dense"):
        usage = json.loads((runs / variant / "metrics.json").read_text())["provenance"]["usage"]
        assert 0 < usage["cpu_s"] <= usage["process_wall_s"] * os.cpu_count()
        assert not (runs / variant / "benchmark.tsv").exists()
        assert yaml.safe_load((runs / variant / "job_config.yaml").read_text())["model"]["preset"] == "deepavfusion-smoke"

    report = snakemake(*args[:1], "1", *args[3:], "--report", f"{tmp_path}/report.html", timeout=600)
    assert report.returncode == 0, report.stderr[-3000:]
    html = (tmp_path / "report.html").read_text()
    assert "table5.csv" in html and "claims.md" in html
    table5 = (tmp_path / "table5.md").read_text()
    assert re.search(r"^\| Early ✓, Factorized ✓ \| [0-9.]+ / 12\.8 \|", table5, re.M)
    assert "| Early ✗, Factorized ✗ | missing / 14.5 |" in table5
    table1 = (tmp_path / "table1.md").read_text()   # no separation run at all: every measured cell is missing
    assert table1.count("missing run") >= 4 * 9 and "| ok |" not in table1
