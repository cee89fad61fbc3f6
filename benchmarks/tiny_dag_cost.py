"""CPU-seconds of the tiny DAG, from the jobs that ran: measured per job where it ran, else extrapolated.

    .venv/bin/python benchmarks/tiny_dag_cost.py                 # results/ of this checkout, `all`
    .venv/bin/python benchmarks/tiny_dag_cost.py --results results --cores 2 --out benchmarks/results/tiny_dag_cost.csv

CPU time does not depend on the load of a shared machine (wall time does): each job's metrics.json
gives its own CPU-s (provenance.usage.cpu_s); runs from before 2026-12-02 have only Snakemake's
`benchmark.tsv` (`cpu_time`, an undercount: see job_cpu_s).
The DAG's jobs come from a dry run of `all` (`snakemake -n --forceall`, nothing runs). A job that
ran is counted at its own measurement; one that did not gets the mean of the measured jobs of the
same task, for pretraining scaled by its model's step cost relative to deepavfusion's (one
forward+backward+AdamW step on a 32-clip batch, measured here with one thread), and 0.1 CPU-s for
an alias copy (a Python file copy inside Snakemake). `--cores`: the estimate of an idle machine's
wall time is total / cores (jobs side by side, one thread each), a lower bound: the DAG's critical
path (tuxav -> unimodal MAEs -> AV-MAE -> downstream -> report) must also fit.
"""
from __future__ import annotations

import argparse
import csv
import re
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ALIAS_CPU_S = 0.1
REPORT_CPU_S = 8.0   # one `avfusion report` command (start-up + tables), when not measured
MAKE_TUXAV_CPU_S = 60.0   # `avfusion data make-tuxav --scale tiny`: 56 user + 4 system CPU-s (2026-12-02)
CLASSICAL = ("nmf", "rpca")   # their separation jobs are counted apart from the learned ones


def planned_jobs(results: str, extra: list[str]) -> list[tuple[str, str, str]]:
    """(rule, task, variant) of every job of `all` (dry run, --forceall)."""
    cmd = [str(Path(sys.executable).parent / "snakemake"), "-n", "--forceall", "--profile", "workflow/profiles/local",
           "--config", f"results={results}", *extra, "--", "all"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True).stdout
    jobs = []
    for block in out.split("\n\n"):
        rule = re.search(r"^rule (\w+):", block, re.M)
        if not rule:
            continue
        wc = dict(re.findall(r"(\w+)=([^,\s]+)", (re.search(r"wildcards: (.+)", block) or [None, ""])[1]))
        task = wc.get("task", "pretrain" if rule.group(1) == "pretrain" else "separation"
                      if rule.group(1) == "classical_separation" else rule.group(1))
        jobs.append((rule.group(1), task, wc.get("variant", "")))
    return jobs


def step_costs(variants: list[str]) -> dict[str, float]:
    """CPU-s of one pretraining step (32 clips, one thread) of each variant's tiny model."""
    import torch
    import yaml

    from avfusion.models.registry import build_pretrain_model
    from avfusion.runs import Plan, deep_merge

    torch.set_num_threads(1)
    cfg = deep_merge(yaml.safe_load((REPO / "workflow/config/default.yaml").read_text()),
                     yaml.safe_load((REPO / "workflow/config/scales/tiny.yaml").read_text()))
    plan = Plan(cfg)
    image, audio = torch.randn(32, 3, 64, 64), torch.randn(32, 1, 128, 192)
    costs = {}
    for name in variants:
        if plan.variants.get(name, {}).get("kind") not in ("avmae", "unimodal"):
            continue
        model = build_pretrain_model(dict(plan.model_section(name)))
        opt = torch.optim.AdamW(model.parameters(), 1e-3)

        def step():
            out = model(image, audio)
            opt.zero_grad()
            out["loss"].backward()
            opt.step()
        step()
        t0 = time.process_time()
        for _ in range(3):
            step()
        costs[name] = (time.process_time() - t0) / 3
    return costs


def job_cpu_s(path: Path) -> float | None:
    """A job's CPU-s: metrics.json's provenance.usage.cpu_s (the job process's own getrusage, exact; runs
    since 2026-12-02), else the last `cpu_time` of an older run's benchmark.tsv (psutil samples every 30 s
    after the first 15 s, so it misses up to 30 CPU-s at the end of a job); None for an alias copy."""
    import json

    if path.name == "metrics.json":
        prov = json.loads(path.read_text()).get("provenance", {})
        usage = prov.get("usage") or {}
        return None if prov.get("alias_of") or usage.get("cpu_s") is None else float(usage["cpu_s"])
    rows = list(csv.DictReader(path.open(), delimiter="\t"))
    return float(rows[-1]["cpu_time"]) if rows and rows[-1]["cpu_time"] not in ("", "NA") else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--config", nargs="*", default=[], help="extra --config key=value for the dry run")
    parser.add_argument("--out", default="", help="CSV of every job (measured or estimated CPU-s)")
    args = parser.parse_args(argv)
    runs = REPO / args.results / "runs" / "tiny"
    jobs = planned_jobs(args.results, [*args.config])
    measured, by_task = {}, defaultdict(list)
    for path in sorted(runs.rglob("metrics.json")) + sorted(runs.rglob("benchmark.tsv")):
        cpu = job_cpu_s(path)
        if cpu is None:
            continue
        rel = path.parent.relative_to(runs)
        task, variant = rel.parts[0], "/".join(rel.parts[1:])
        if variant.split("/")[0] in CLASSICAL:
            task = "classical"
        if (task, variant) in measured:   # metrics.json's own figure first
            continue
        measured[(task, variant)] = cpu
        by_task[task].append((variant, cpu))
    names = sorted({v.split("/")[0].split("@")[0] for _, t, v in jobs if t == "pretrain"})
    steps = step_costs(names)
    ref = steps.get("deepavfusion")
    pretrain_ref = [c for v, c in by_task["pretrain"] if v.startswith("deepavfusion")]
    rows, total, n_measured = [], 0.0, 0
    for rule, task, variant in jobs:
        name = variant.split("/")[0].split("@")[0]
        if name in CLASSICAL:
            task = "classical"
        if (task, variant) in measured and rule != "alias_run":
            cpu, how = measured[(task, variant)], "measured"
            n_measured += 1
        elif rule == "alias_run":
            cpu, how = ALIAS_CPU_S, "alias copy"
        elif rule == "make_tuxav":
            cpu, how = MAKE_TUXAV_CPU_S, "measured once (constant)"
        elif rule.startswith("report") or rule == "all":
            cpu, how = (REPORT_CPU_S if rule != "all" else 0.0), "report (assumed)"
        elif task == "pretrain" and pretrain_ref and ref and name in steps:
            cpu, how = statistics.mean(pretrain_ref) * steps[name] / ref, f"deepavfusion x step ratio {steps[name] / ref:.2f}"
        elif by_task.get(task):
            cpu, how = statistics.mean(c for _, c in by_task[task]), f"mean of {len(by_task[task])} measured {task} jobs"
        else:
            cpu, how = float("nan"), "no measurement"
        rows.append({"rule": rule, "task": task, "variant": variant, "cpu_s": round(cpu, 2), "how": how})
        total += cpu
    per_task = defaultdict(lambda: [0, 0.0])
    for row in rows:
        per_task[row["task"] if row["rule"] != "alias_run" else "alias"][0] += 1
        per_task[row["task"] if row["rule"] != "alias_run" else "alias"][1] += row["cpu_s"]
    for task, (count, cpu) in sorted(per_task.items(), key=lambda kv: -kv[1][1]):
        print(f"{task:22s} {count:4d} jobs {cpu:8.0f} CPU-s")
    print(f"total {len(rows)} jobs ({n_measured} measured): {total:.0f} CPU-s = {total / args.cores / 60:.1f} min "
          f"on {args.cores} idle cores (jobs side by side, one thread each)")
    if args.out:
        from avfusion.io import atomic_write_csv

        atomic_write_csv(Path(args.out), rows, ["rule", "task", "variant", "cpu_s", "how"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
