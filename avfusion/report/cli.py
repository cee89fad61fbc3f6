"""`avfusion report`: tables, figures and the claims report from the runs' metrics.json files.

    avfusion report all --tables workflow/config/tables.yaml --runs results/runs/tiny --out results
    avfusion report tables --only table4 --tables workflow/config/tables.yaml --runs results/runs/tiny --out results

Writes <out>/tableN.csv|md (+ <out>/figures/table5_efficiency.png, table6_curves.png),
<out>/figure3.png, <out>/figures/<task>_examples.png (when the tasks wrote examples.npz) and
<out>/claims.md (+ <out>/figures/claims_effects.png: our effects with their 95 % intervals beside
the published ones, and <out>/figures/tableN_vs_published.png: ours against the published numbers,
table by table, with the verdicts of the claims that concern each table). The scale is the name of the --runs folder unless --scale is given; its
task_datasets and seeds come from <tables folder>/scales/<scale>.yaml (or --task-datasets / --seeds).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..runs import seed_folder
from .claims import evaluate_claims, statistical_rows, write_claims
from .published import PUBLISHED_YAML, load_published
from .tables import ScaleContext, build_table, load_tables_config, scale_context, write_table


def table_figure_path(out: Path, table_id: str, kind: str) -> Path:
    suffix = {"efficiency_bars": "efficiency", "curves": "curves"}[kind]
    return out / "figures" / f"{table_id}_{suffix}.png"


def make_table(cfg: dict, table_id: str, runs: Path, out: Path, ctx: ScaleContext, published=None) -> list[Path]:
    """tableN.csv, tableN.md and the table's figure (if tables.yaml gives one)."""
    published = published or load_published(cfg.get("published", PUBLISHED_YAML))
    if table_id not in cfg["tables"]:
        raise KeyError(f"{cfg['_path']}: no table {table_id!r}; tables are {list(cfg['tables'])}")
    table = cfg["tables"][table_id]
    cells = build_table(cfg, table_id, runs, ctx, published)
    written = list(write_table(cells, table, out, table_id))
    figure = table.get("figure")
    if figure:
        from .figures import ablation_curves, efficiency_bars  # matplotlib only where a figure is drawn

        path = table_figure_path(out, table_id, figure["kind"])
        drawn = [c for c in cells if not c.get("floor")]   # floors are table rows, not curve points
        if figure["kind"] == "efficiency_bars":
            written.append(efficiency_bars(drawn, path, figure["columns"]))
        else:
            written.append(ablation_curves(drawn, table.get("groups", {}), path))
    counts = {}
    for c in cells:
        counts[c["status"]] = counts.get(c["status"], 0) + 1
    print(f"{table_id}: {len(cells)} cells " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())), flush=True)
    return written


def make_figure3(cfg: dict, runs: Path, out: Path, published=None, ctx: ScaleContext | None = None) -> Path | None:
    published = published or load_published(cfg.get("published", PUBLISHED_YAML))
    spec = cfg.get("figures", {}).get("figure3")
    if spec is None:
        return None
    seeds = ctx.seeds if ctx is not None else [0]
    knn = Path(f"{runs / spec['task'] / spec['variant']}{seed_folder(seeds[0], seeds)}") / spec["file"]   # the first seed's curve
    from .figures import figure3, note_figure

    if not knn.exists():
        print(f"figure3: {knn} does not exist (run missing); wrote a note figure", flush=True)
        return note_figure(out / "figure3.png", f"Figure 3: missing run\n{knn} does not exist")

    readme = {name: published.value(f"readme.knn_curve_{name}") for name in ("fusion", "audio", "image")
              if f"readme.knn_curve_{name}" in published}
    return figure3(knn, out / "figure3.png", spec.get("title", ""), readme)


def make_claims(cfg: dict, runs: Path, out: Path, ctx: ScaleContext, published=None) -> Path:
    """claims.md: published cell id -> our cell (first table that cites it), then every claim."""
    published = published or load_published(cfg.get("published", PUBLISHED_YAML))
    ours: dict[str, dict] = {}
    cells_by_table = {}
    for table_id in cfg["tables"]:
        cells_by_table[table_id] = build_table(cfg, table_id, runs, ctx, published)
        for cell in cells_by_table[table_id]:
            if cell["published_id"] and cell["variant"]:
                ours.setdefault(cell["published_id"], cell)
    results = evaluate_claims(cfg.get("claims", []), published, ours, runs, ctx.seeds)
    from .figures import claims_effects
    from .table_figures import table_figures

    claims_effects(statistical_rows(results), out / "figures" / "claims_effects.png", ctx.scale)
    table_figures(cfg, cells_by_table, results, out / "figures", ctx.scale)   # figures/tableN_vs_published.png
    return write_claims(results, out / "claims.md", ctx.scale)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", choices=["tables", "figures", "claims", "all"])
    parser.add_argument("--tables", type=Path, default=Path("workflow/config/tables.yaml"))
    parser.add_argument("--runs", type=Path, required=True, help="results/runs/<scale>")
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--scale", default=None, help="default: the name of the --runs folder")
    parser.add_argument("--config-dir", type=Path, default=None,
                        help="folder with scales/<scale>.yaml and experiments.yaml (default: that of --tables)")
    parser.add_argument("--task-datasets", default=None,
                        help="JSON {task: [datasets]} overriding scales/<scale>.yaml (the DAG passes its config)")
    parser.add_argument("--seeds", default=None, help="JSON [seeds] overriding scales/<scale>.yaml (the DAG passes its config)")
    parser.add_argument("--only", nargs="*", default=None, help="table ids (tables command)")


def main(args: argparse.Namespace) -> int:
    cfg = load_tables_config(args.tables)
    published = load_published(cfg.get("published", PUBLISHED_YAML))
    ctx = scale_context(cfg, args.scale or args.runs.name, args.config_dir,
                        json.loads(args.task_datasets) if args.task_datasets else None,
                        json.loads(args.seeds) if args.seeds else None)
    if args.what in ("tables", "all"):
        for table_id in args.only or list(cfg["tables"]):
            make_table(cfg, table_id, args.runs, args.out, ctx, published)
    if args.what in ("figures", "all"):
        path = make_figure3(cfg, args.runs, args.out, published, ctx)
        if path:
            print(f"wrote {path}")
        from .figures import example_figures

        written, notes = example_figures(args.runs, args.out / "figures", seeds=ctx.seeds)
        for path in written:
            print(f"wrote {path}")
        for note in notes:
            print(note)
    if args.what in ("claims", "all"):
        print(f"wrote {make_claims(cfg, args.runs, args.out, ctx, published)}")
    return 0
