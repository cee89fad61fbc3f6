# Tables 1-7, Figure 3 and claims.md from the runs that workflow/config/tables.yaml names.
#
#   snakemake --profile workflow/profiles/local results/table4.csv      # pulls only Table 4's runs
#   snakemake --report results/report.html                             # tables + figures with captions
#
# Needs config["scale"], config["results"], config["task_datasets"] (the Snakefile's config layers).
# Each table rule requires exactly the metrics.json files its cells read; figures of Tables 5 and 6
# are outputs of their table rules.
from pathlib import Path as _ReportPath

import yaml as _report_yaml

import json as _report_json
import shlex as _report_shlex

from avfusion.report.published import PUBLISHED_YAML as _PUBLISHED_YAML
from avfusion.report.tables import ScaleContext as _ScaleContext
from avfusion.report.tables import load_tables_config as _load_tables_config
from avfusion.report.tables import required_runs as _required_runs
from avfusion.report.claims import claim_runs as _claim_runs

_REPORT_REPO = _ReportPath(workflow.current_basedir).parents[1]
_REPORT_DIR = _REPORT_REPO / "workflow" / "report"
_TABLES_YAML = _REPORT_REPO / "workflow" / "config" / "tables.yaml"
_REPORT_CFG = _load_tables_config(_TABLES_YAML)
_REPORT_RESULTS = config["results"]
_REPORT_RUNS = _ReportPath(f"{_REPORT_RESULTS}/runs/{config['scale']}")
_REPORT_SEEDS = list(config.get("seeds") or [config.get("seed", 0)])
# one run folder per seed (.../seed<k>) when the scale runs several seeds; figures show the first seed
_REPORT_SEED_DIR = f"/seed{_REPORT_SEEDS[0]}" if len(_REPORT_SEEDS) > 1 else ""
_REPORT_CTX = _ScaleContext(
    scale=config["scale"], task_datasets=config["task_datasets"], seeds=_REPORT_SEEDS,
    kinds={name: spec.get("kind", "") for name, spec in _report_yaml.safe_load(
        (_REPORT_REPO / "workflow" / "config" / "experiments.yaml").read_text())["variants"].items()})
_REPORT_SOURCES = [str(_TABLES_YAML), str(_PUBLISHED_YAML)]
# `avfusion report` as a shell command: a job does not re-parse the workflow (as a `run:` job would)
# (braces doubled: the command is a snakemake shell template)
_REPORT_CMD = " ".join(_report_shlex.quote(a) for a in [
    "python", "-m", "avfusion.cli", "report", "--tables", str(_TABLES_YAML), "--runs", str(_REPORT_RUNS),
    "--out", _REPORT_RESULTS, "--scale", config["scale"],
    "--task-datasets", _report_json.dumps(config["task_datasets"]),
    "--seeds", _report_json.dumps(_REPORT_SEEDS)]).replace("{", "{{").replace("}", "}}")
_FIGURE_TABLES = {tid: t["figure"]["kind"] for tid, t in _REPORT_CFG["tables"].items() if t.get("figure")}
_PLAIN_TABLES = [tid.removeprefix("table") for tid in _REPORT_CFG["tables"] if tid not in _FIGURE_TABLES]


def _table_runs(wildcards):
    return _required_runs(_REPORT_CFG, f"table{wildcards.n}", _REPORT_RUNS, _REPORT_CTX)


def _all_report_runs(wildcards=None):
    runs = {p for tid in _REPORT_CFG["tables"] for p in _required_runs(_REPORT_CFG, tid, _REPORT_RUNS, _REPORT_CTX)}
    runs.update(_claim_runs(_REPORT_CFG.get("claims", []), _REPORT_RUNS, _REPORT_SEEDS))
    return sorted(runs)


def _report_csv(table_id):
    return report(f"{_REPORT_RESULTS}/{table_id}.csv", caption=str(_REPORT_DIR / "table.rst"), category="Tables",
                  labels={"table": table_id.replace("table", "Table "), "file": "csv"})


def _report_png(path, caption, name):
    return report(f"{_REPORT_RESULTS}/{path}", caption=str(_REPORT_DIR / caption), category="Figures", labels={"figure": name})


rule report_table:
    """results/tableN.csv + .md: published beside ours, from the runs of the table's cells."""
    input: runs=_table_runs, sources=_REPORT_SOURCES
    output: csv=_report_csv("table{n}"), md=f"{_REPORT_RESULTS}/table{{n}}.md"
    wildcard_constraints: n="|".join(_PLAIN_TABLES)
    localrule: True
    shell: _REPORT_CMD.replace("report --", "report tables --only table{wildcards.n} --", 1)


rule report_table_efficiency:
    """Table 5 (+ speed / memory bars)."""
    input: runs=lambda w: _required_runs(_REPORT_CFG, "table5", _REPORT_RUNS, _REPORT_CTX), sources=_REPORT_SOURCES
    output:
        csv=_report_csv("table5"),
        md=f"{_REPORT_RESULTS}/table5.md",
        figure=_report_png("figures/table5_efficiency.png", "table5_efficiency.rst", "Table 5 speed and memory"),
    localrule: True
    shell: _REPORT_CMD.replace("report --", "report tables --only table5 --", 1)


rule report_table_curves:
    """Table 6 (+ metric vs # fusion layers / tokens / aggregation tokens)."""
    input: runs=lambda w: _required_runs(_REPORT_CFG, "table6", _REPORT_RUNS, _REPORT_CTX), sources=_REPORT_SOURCES
    output:
        csv=_report_csv("table6"),
        md=f"{_REPORT_RESULTS}/table6.md",
        figure=_report_png("figures/table6_curves.png", "table6_curves.rst", "Table 6 curves"),
    localrule: True
    shell: _REPORT_CMD.replace("report --", "report tables --only table6 --", 1)


rule report_figures:
    """Figure 3 (kNN accuracy of audio / image / fusion features over pretraining steps) and the
    separation / segmentation / localization examples of deepavfusion (a note image where a run
    wrote no examples.npz)."""
    input:
        run=str(_REPORT_RUNS / _REPORT_CFG["figures"]["figure3"]["task"] / (_REPORT_CFG["figures"]["figure3"]["variant"] + _REPORT_SEED_DIR) / "metrics.json"),
        examples=[str(_REPORT_RUNS / task / ("deepavfusion" + _REPORT_SEED_DIR) / "metrics.json") for task in ("separation", "segmentation", "localization")],
        sources=_REPORT_SOURCES,
    output:
        figure3=_report_png("figure3.png", "figure3.rst", "Figure 3"),
        separation=_report_png("figures/separation_examples.png", "separation_examples.rst", "separation examples"),
        segmentation=_report_png("figures/segmentation_examples.png", "segmentation_examples.rst", "segmentation examples"),
        localization=_report_png("figures/localization_examples.png", "localization_examples.rst", "localization examples"),
    localrule: True
    shell: _REPORT_CMD.replace("report --", "report figures --", 1)


rule report_claims:
    """claims.md: each claim on the published numbers and on ours (effect, 95 % interval over seeds,
    holds / fails / inconclusive / not measurable), and the figure of our effects beside the published ones."""
    input: runs=_all_report_runs, sources=_REPORT_SOURCES
    output:
        claims=report(f"{_REPORT_RESULTS}/claims.md", caption=str(_REPORT_DIR / "claims.rst"), category="Claims"),
        figure=_report_png("figures/claims_effects.png", "claims_effects.rst", "claims: effects with 95 % intervals"),
    localrule: True
    shell: _REPORT_CMD.replace("report --", "report claims --", 1)
