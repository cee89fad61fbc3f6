"""The avfusion DAG: data -> unimodal init -> pretrain/<variant> -> <task>/<variant> -> tables.

    snakemake --profile workflow/profiles/local all                         # tiny scale (make tiny)
    snakemake --profile workflow/profiles/local --config scale=smoke -- all
    snakemake --profile slurm --config scale=smoke -- results/table4.csv   # every job a SLURM job
    snakemake -n --configfile my_paths.yaml --config scale=paper -- all    # plan the paper run (dataset roots: README)

Config layers (later wins): workflow/config/default.yaml < workflow/config/scales/<scale>.yaml
< --configfile / --config. Every variant: workflow/config/experiments.yaml. Every job runs through
`python -m avfusion.launch` (submitit: debug | local | slurm) and writes
results/runs/<scale>/<task>/<variant>/metrics.json.
"""
from pathlib import Path

from snakemake.exceptions import WorkflowError

configfile: "workflow/config/default.yaml"
if config.get("scale") not in ("smoke", "tiny", "rehearsal", "paper"):
    raise WorkflowError(f"config error at 'scale': {config.get('scale')!r} is not one of smoke, tiny, rehearsal, paper")
configfile: f"workflow/config/scales/{config['scale']}.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/prepare.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/downstream.smk"
include: "workflow/rules/baselines.smk"
if Path(workflow.basedir, "workflow/rules/report.smk").is_file():
    include: "workflow/rules/report.smk"

REPORT_TARGETS = ([f"{RESULTS}/table{i}.{ext}" for i in range(1, 8) for ext in ("csv", "md")]
                  + [f"{RESULTS}/figure3.png", f"{RESULTS}/claims.md"])


rule all:
    """Every table (CSV + Markdown), Figure 3 and the claims report of the configured scale."""
    input: REPORT_TARGETS
    default_target: True
