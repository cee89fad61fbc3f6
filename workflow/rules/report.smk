# Tables 1-7, Figure 3 and claims.md from the runs that workflow/config/tables.yaml names.
#
#   snakemake --profile workflow/profiles/local results/table4.csv      # pulls only Table 4's runs
#   snakemake --report results/report.html                             # tables + figures with captions
#
# Needs config["scale"], config["results"], config["task_datasets"] (the Snakefile's config layers).
# Each table rule requires exactly the metrics.json files its cells read; figures of Tables 5 and 6
# are outputs of their table rules.
include: "report_common.smk"


rule report_table:
    """results/tableN.csv + .md: published beside ours, from the runs of the table's cells."""
    input: runs=_table_runs, sources=_REPORT_SOURCES
    output: csv=_report_csv("table{n}"), md=f"{_REPORT_RESULTS}/table{{n}}.md"
    wildcard_constraints: n="|".join(_PLAIN_TABLES)
    log: f"{_REPORT_RESULTS}/logs/table{{n}}.log"
    localrule: True
    conda: "../../environment.yml"
    shell: _report_cmd("tables", "--only", "table{wildcards.n}")


rule report_table_efficiency:
    """Table 5 (+ speed / memory bars)."""
    input: runs=lambda w: _runs_of("table5"), sources=_REPORT_SOURCES
    output:
        csv=_report_csv("table5"),
        md=f"{_REPORT_RESULTS}/table5.md",
        figure=_report_png("figures/table5_efficiency.png", "table5_efficiency.rst", "Table 5 speed and memory"),
    log: f"{_REPORT_RESULTS}/logs/table5.log"
    localrule: True
    conda: "../../environment.yml"
    shell: _report_cmd("tables", "--only", "table5")


rule report_table_curves:
    """Table 6 (+ metric vs # fusion layers / tokens / aggregation tokens)."""
    input: runs=lambda w: _runs_of("table6"), sources=_REPORT_SOURCES
    output:
        csv=_report_csv("table6"),
        md=f"{_REPORT_RESULTS}/table6.md",
        figure=_report_png("figures/table6_curves.png", "table6_curves.rst", "Table 6 curves"),
    log: f"{_REPORT_RESULTS}/logs/table6.log"
    localrule: True
    conda: "../../environment.yml"
    shell: _report_cmd("tables", "--only", "table6")


rule report_figures:
    """Figure 3 (kNN accuracy of audio / image / fusion features over pretraining steps) and the
    separation / segmentation / localization examples of deepavfusion (a note image where a run
    wrote no examples.npz)."""
    input: **_figure_runs(), sources=_REPORT_SOURCES
    output:
        figure3=_report_png("figure3.png", "figure3.rst", "Figure 3"),
        separation=_report_png("figures/separation_examples.png", "separation_examples.rst", "separation examples"),
        segmentation=_report_png("figures/segmentation_examples.png", "segmentation_examples.rst", "segmentation examples"),
        localization=_report_png("figures/localization_examples.png", "localization_examples.rst", "localization examples"),
    log: f"{_REPORT_RESULTS}/logs/figures.log"
    localrule: True
    conda: "../../environment.yml"
    shell: _report_cmd("figures")


rule report_claims:
    """claims.md: each claim on the published numbers and on ours (effect, 95 % interval over seeds,
    holds / fails / inconclusive / not measurable), the figure of our effects beside the published ones,
    and per table a figure of ours against the published numbers with the verdicts of its claims."""
    input: runs=_all_report_runs, sources=_REPORT_SOURCES
    output:
        claims=report(f"{_REPORT_RESULTS}/claims.md", caption=str(_REPORT_DIR / "claims.rst"), category="Claims"),
        figure=_report_png("figures/claims_effects.png", "claims_effects.rst", "claims: effects with 95 % intervals"),
        **_table_vs_published_pngs(),
    log: f"{_REPORT_RESULTS}/logs/claims.log"
    localrule: True
    conda: "../../environment.yml"
    shell: _report_cmd("claims")
