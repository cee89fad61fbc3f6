"""Report: one figure per table of ours against the published numbers, with the verdicts of the
claims that concern the table (avfusion/report/table_figures.py), from fixture metrics.json files of
every run of every table at smoke scale (tests/test_report_snakemake.py writes them)."""
from __future__ import annotations

import argparse
from pathlib import Path

from avfusion.report import cli as report_cli
from avfusion.report.claims import evaluate_claims
from avfusion.report.published import PUBLISHED_YAML, load_published
from avfusion.report.table_figures import claim_lines, claim_tables
from avfusion.report.tables import build_table, load_tables_config, required_runs
from test_report_snakemake import REPO, TABLES, smoke_context, write_fixture_runs

CFG = load_tables_config(REPO / "workflow/config/tables.yaml")
TABLE_TASKS = {tid: {c["task"] for c in t["columns"].values()} for tid, t in CFG["tables"].items()}
CLAIMS = {c["id"]: c for c in CFG["claims"]}


def test_each_claim_is_shown_with_the_tables_it_concerns():
    assert claim_tables(CLAIMS["t4_early_mid_late_none"], TABLE_TASKS) == {"table4"}
    assert claim_tables(CLAIMS["t6a_deeper_fusion_is_better"], TABLE_TASKS) == {"table6"}
    assert claim_tables(CLAIMS["spec8_04a_table5_baseline_is_no_fusion"], TABLE_TASKS) == {"table4", "table5"}
    # a floor reads runs of a task: every table with a separation column
    assert claim_tables(CLAIMS["floor_separation_beats_mixture"], TABLE_TASKS) == {
        "table1", "table4", "table5", "table6", "table7"}
    assert claim_tables(CLAIMS["fig3_fusion_tokens_most_semantic"], TABLE_TASKS) == set()
    shown = {tid for claim in CFG["claims"] for tid in claim_tables(claim, TABLE_TASKS)}
    assert shown == set(TABLES)   # every table has at least one claim to show


def test_table_figures_are_written_with_the_verdicts_of_claims_md(tmp_path):
    ctx = smoke_context()
    runs = {p for t in TABLES for p in required_runs(CFG, t, Path("results/runs/smoke"), ctx)}
    write_fixture_runs(tmp_path, sorted(runs))
    args = argparse.Namespace(what="claims", tables=REPO / "workflow/config/tables.yaml",
                              runs=tmp_path / "results/runs/smoke", out=tmp_path / "results", scale="smoke",
                              config_dir=None, task_datasets=None, seeds=None, only=None)
    assert report_cli.main(args) == 0
    for table_id in TABLES:
        png = tmp_path / "results/figures" / f"{table_id}_vs_published.png"
        assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 20_000, table_id

    # the verdict drawn for a claim is the one claims.md gives (same results, combined over columns)
    published = load_published(PUBLISHED_YAML)
    ours = {}
    for table_id in CFG["tables"]:
        for cell in build_table(CFG, table_id, tmp_path / "results/runs/smoke", ctx, published):
            if cell["published_id"] and cell["variant"]:
                ours.setdefault(cell["published_id"], cell)
    results = evaluate_claims(CFG["claims"], published, ours, tmp_path / "results/runs/smoke", ctx.seeds)
    claims_md = (tmp_path / "results/claims.md").read_text()
    summary = {}   # claim id -> (published verdict, ours verdict) from claims.md's summary table
    for line in claims_md.splitlines():
        if line.startswith("| [") and "](#" in line:
            cells = [c.strip() for c in line.strip("|").split("|")]
            summary.setdefault(cells[0].split("]")[0].lstrip("["), (cells[1], cells[2]))   # the first table
    drawn = claim_lines(results, "table4", TABLE_TASKS)
    assert len(drawn) >= 6
    for verdict, text in drawn:
        scope, rest = text.split(":", 1)
        claim_id = rest.split()[1].rstrip(":")
        want = summary[claim_id][0 if scope.strip() == "published" else 1]
        assert verdict == want, (claim_id, scope, verdict, want)
    assert ("holds", "published: HOLDS  t4_early_mid_late_none: Early fusion > mid fusion > late fusion > no "
            "fusion (Table 4 rows 1, 4, 5, 6)") in [(v, t.strip()) for v, t in drawn]
