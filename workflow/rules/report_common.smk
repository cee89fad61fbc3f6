# Setup and functions of workflow/rules/report.smk (kept apart from its rules).
#
# `snakemake --report results/report.html` on a partial run: Snakemake builds the report from the
# DAG's report() outputs, which must all exist. When the command line asks for a report, every
# table, figure and claims.md is first (re)built here from the runs that exist (a missing run is a
# cell marked `missing`, a missing figure a note image), and the report rules then need only the
# runs that exist, so the report shows the state of the run instead of failing.
import subprocess as _report_subprocess
import sys as _report_sys

from pathlib import Path as _ReportPath

import json as _report_json
import shlex as _report_shlex

from avfusion.report.published import PUBLISHED_YAML as _PUBLISHED_YAML
from avfusion.report.tables import ScaleContext as _ScaleContext
from avfusion.report.tables import load_tables_config as _load_tables_config
from avfusion.report.tables import required_runs as _required_runs
from avfusion.report.claims import claim_runs as _claim_runs
from avfusion.runs import scale_seeds as _scale_seeds
from avfusion.runs import seed_folder as _seed_folder
from avfusion.runs import variant_kinds as _variant_kinds

_REPORT_REPO = _ReportPath(workflow.current_basedir).parents[1]
_REPORT_MODE = any(a == "--report" or a.startswith("--report=") for a in _report_sys.argv)
_REPORT_DIR = _REPORT_REPO / "workflow" / "report"
_TABLES_YAML = _REPORT_REPO / "workflow" / "config" / "tables.yaml"
_REPORT_CFG = _load_tables_config(_TABLES_YAML)
_REPORT_RESULTS = config["results"]
_REPORT_RUNS = _ReportPath(f"{_REPORT_RESULTS}/runs/{config['scale']}")
_REPORT_SEEDS = _scale_seeds(config)
# figures show the first seed's run folder (<variant>/seed<k> when the scale runs several seeds)
_REPORT_SEED = _seed_folder(_REPORT_SEEDS[0], _REPORT_SEEDS)   # a folder suffix ("" = one seed)
_REPORT_CTX = _ScaleContext(scale=config["scale"], task_datasets=config["task_datasets"], seeds=_REPORT_SEEDS,
                            kinds=_variant_kinds(config.get("experiments", _REPORT_REPO / "workflow" / "config" / "experiments.yaml")))
_REPORT_SOURCES = [str(_TABLES_YAML), str(_PUBLISHED_YAML)]


def _report_cmd(*what):
    """`avfusion report <what...>` as a shell command, its output to the rule's log: a job does not
    re-parse the workflow (as a `run:` job would). Braces doubled (a snakemake shell template), but
    for the `{wildcards.n}` of the table rule."""
    args = ["python", "-m", "avfusion.cli", "report", *what, "--tables", str(_TABLES_YAML), "--runs", str(_REPORT_RUNS),
            "--out", _REPORT_RESULTS, "--scale", config["scale"],
            "--task-datasets", _report_json.dumps(config["task_datasets"]), "--seeds", _report_json.dumps(_REPORT_SEEDS)]
    command = " ".join(_report_shlex.quote(a) for a in args).replace("{", "{{").replace("}", "}}")
    return command.replace("{{wildcards.n}}", "{wildcards.n}") + " > {log:q} 2>&1"
_FIGURE_TABLES = {tid: t["figure"]["kind"] for tid, t in _REPORT_CFG["tables"].items() if t.get("figure")}
_PLAIN_TABLES = [tid.removeprefix("table") for tid in _REPORT_CFG["tables"] if tid not in _FIGURE_TABLES]


def _existing_in_report_mode(paths):
    """All the runs when jobs run; only those that exist when the command builds a report."""
    return [p for p in paths if _ReportPath(p).exists()] if _REPORT_MODE else list(paths)


def _runs_of(table_id):
    return _existing_in_report_mode(_required_runs(_REPORT_CFG, table_id, _REPORT_RUNS, _REPORT_CTX))


def _table_runs(wildcards):
    return _runs_of(f"table{wildcards.n}")


def _all_report_runs(wildcards=None):
    runs = {p for tid in _REPORT_CFG["tables"] for p in _required_runs(_REPORT_CFG, tid, _REPORT_RUNS, _REPORT_CTX)}
    runs.update(_claim_runs(_REPORT_CFG.get("claims", []), _REPORT_RUNS, _REPORT_SEEDS))
    return _existing_in_report_mode(sorted(runs))


def _figure_runs():
    fig3 = _REPORT_CFG["figures"]["figure3"]
    return {"run": _existing_in_report_mode([f"{_REPORT_RUNS / fig3['task'] / fig3['variant']}{_REPORT_SEED}/metrics.json"]),
            "examples": _existing_in_report_mode([f"{_REPORT_RUNS / task / 'deepavfusion'}{_REPORT_SEED}/metrics.json"
                                                  for task in ("separation", "segmentation", "localization")])}


def _report_csv(table_id):
    return report(f"{_REPORT_RESULTS}/{table_id}.csv", caption=str(_REPORT_DIR / "table.rst"), category="Tables",
                  labels={"table": table_id.replace("table", "Table "), "file": "csv"})


def _report_png(path, caption, name):
    return report(f"{_REPORT_RESULTS}/{path}", caption=str(_REPORT_DIR / caption), category="Figures", labels={"figure": name})





def _table_vs_published_pngs():
    """figures/tableN_vs_published.png of every table (avfusion/report/table_figures.py), as report items."""
    return {f"{tid}_vs_published": _report_png(f"figures/{tid}_vs_published.png", "table_vs_published.rst",
                                               f"{tid.replace('table', 'Table ')} vs published")
            for tid in _REPORT_CFG["tables"]}


if _REPORT_MODE:  # rebuild every report output from the runs that exist (see the top of this file)
    _report_subprocess.run(
        [_report_sys.executable, "-m", "avfusion.cli", "report", "all", "--tables", str(_TABLES_YAML),
         "--runs", str(_REPORT_RUNS), "--out", _REPORT_RESULTS, "--scale", config["scale"],
         "--task-datasets", _report_json.dumps(config["task_datasets"]), "--seeds", _report_json.dumps(_REPORT_SEEDS)],
        check=True)
