"""One figure per table: ours beside the published number, cell by cell, with the verdicts of the
claims that concern the table (on the published numbers and on ours).

    paths = table_figures(cfg, cells_by_table, claim_results, out / "figures", scale)
    # -> figures/table1_vs_published.png ... table7_vs_published.png

A claim concerns table N when its id starts with `tN` (t4_..., t6a_...), when one of its values is a
published cell of table N (`T4.r1.linear`, `T6a.l12.sep_sdr`), or when it reads a run of a task that
one of table N's columns measures (`run:separation/deepavfusion:sdr`: the floors). Each panel is one
column: per row a grey bar (published) and a blue bar (ours: the mean over seeds, a black line for
+-1 std); a floor row (chance, mixture, prior ...) is hatched; a missing run is written "missing".
"""
from __future__ import annotations

import re
import textwrap
from pathlib import Path

from .claims import ClaimResult, combined_verdict
from .figures import VERDICT_COLOURS, _save, plt

FIGURE_NAME = "{table_id}_vs_published.png"


def _refs(claim: dict) -> list[str]:
    out = []
    for spec in list(claim.get("values", {}).values()) + list(claim.get("ours", {}).values()):
        out += list(spec.values()) if isinstance(spec, dict) else [spec]
    return [str(r) for r in out]


def claim_tables(claim: dict, table_tasks: dict[str, set[str]]) -> set[str]:
    """Table ids (`table4`) a claim concerns; `table_tasks` = table id -> tasks of its columns."""
    tables = set()
    m = re.match(r"t(\d)", claim["id"])
    if m:
        tables.add(f"table{m.group(1)}")
    for ref in _refs(claim):
        m = re.match(r"T(\d)", ref)
        if m:
            tables.add(f"table{m.group(1)}")
        elif ref.startswith("run:"):
            task = ref.split(":", 2)[1].split("/", 1)[0]
            tables |= {tid for tid, tasks in table_tasks.items() if task in tasks}
    return tables


def claim_lines(results: list[ClaimResult], table_id: str, table_tasks: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(verdict, text) per claim of the table and scope, the verdict combined over its columns."""
    groups: dict[tuple[str, str], list[ClaimResult]] = {}
    for r in results:
        if table_id in claim_tables(r.claim, table_tasks):
            groups.setdefault((r.claim["id"], r.scope), []).append(r)
    lines = []
    for (claim_id, scope), parts in groups.items():
        verdict = combined_verdict(parts)
        statement = parts[0].claim["statement"].replace(" on {column}", "").replace("{column}", "metric")
        lines.append((verdict, f"{scope:>9}: {verdict.upper()}  {claim_id}: {statement}"))
    return lines


def _verdict_colour(verdict: str) -> str:
    if verdict.startswith("not measurable"):
        return "tab:orange"
    return VERDICT_COLOURS.get(verdict, "tab:orange")


def table_vs_published(cells: list[dict], title: str, lines: list[tuple[str, str]], out: Path,
                       scale: str = "", max_lines: int = 24) -> Path:
    """Panels (one per column) of published vs ours per row, and the claim verdicts below."""
    columns = list(dict.fromkeys(c["column"] for c in cells))
    rows = list(dict.fromkeys(c["row"] for c in cells))
    ncols = min(3, len(columns))
    nrows = -(-len(columns) // ncols)
    panel_h = 0.28 * len(rows) + 0.9
    text_h = 0.17 * (min(len(lines), max_lines) + 2)
    fig = plt.figure(figsize=(4.2 * ncols + 2.2, panel_h * nrows + text_h + 0.6))
    grid = fig.add_gridspec(nrows + 1, ncols, height_ratios=[panel_h] * nrows + [text_h])
    by_key = {(c["row"], c["column"]): c for c in cells}
    for k, column in enumerate(columns):
        ax = fig.add_subplot(grid[k // ncols, k % ncols])
        for i, row in enumerate(rows):
            y = len(rows) - 1 - i
            cell = by_key.get((row, column), {})
            pub, ours = cell.get("published"), cell.get("ours")
            if isinstance(pub, (int, float)) and not isinstance(pub, bool):
                ax.barh(y + 0.2, pub, height=0.38, color="0.75")
            if ours is not None:
                ax.barh(y - 0.2, ours, height=0.38, color="tab:blue", hatch="//" if cell.get("floor") else None,
                        edgecolor="white" if cell.get("floor") else None)
                if cell.get("std"):
                    ax.plot([ours - cell["std"], ours + cell["std"]], [y - 0.2, y - 0.2], color="black", lw=1)
            elif cell.get("variant") and cell.get("status") not in ("n/a",):
                label = " not run" if cell.get("status", "").startswith("not run") else " missing"
                ax.text(0, y - 0.2, label, va="center", fontsize=6, color="tab:red")
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([r[:38] for r in rows[::-1]] if k % ncols == 0 else [], fontsize=6)
        ax.set_title(column, fontsize=8)
        ax.tick_params(axis="x", labelsize=6)
        ax.axvline(0, color="black", lw=0.5)
        ax.grid(axis="x", alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color="0.75", label="published"),
               plt.Rectangle((0, 0), 1, 1, color="tab:blue", label=f"ours{f' ({scale})' if scale else ''}, mean +- std"),
               plt.Rectangle((0, 0), 1, 1, facecolor="tab:blue", hatch="//", edgecolor="white", label="floor (ours)")]
    fig.legend(handles=handles, loc="upper right", fontsize=7, ncols=3)
    fig.suptitle(title, fontsize=10, x=0.02, ha="left")
    ax = fig.add_subplot(grid[nrows, :])
    ax.axis("off")
    shown = lines[:max_lines]
    if not shown:
        ax.text(0, 1, "claims: none concerns this table", fontsize=7, va="top", family="monospace")
    for j, (verdict, text) in enumerate(shown):
        ax.text(0, 1 - j / max(len(shown) + 1, 2), textwrap.shorten(text, 170), fontsize=6.5, va="top",
                family="monospace", color=_verdict_colour(verdict), transform=ax.transAxes)
    if len(lines) > max_lines:
        ax.text(0, 0, f"... {len(lines) - max_lines} more claims in claims.md", fontsize=6.5, va="top",
                transform=ax.transAxes)
    return _save(fig, out)


def table_figures(cfg: dict, cells_by_table: dict[str, list[dict]], results: list[ClaimResult], out_dir: Path,
                  scale: str = "") -> list[Path]:
    table_tasks = {tid: {c["task"] for c in t["columns"].values()} for tid, t in cfg["tables"].items()}
    paths = []
    for table_id, table in cfg["tables"].items():
        lines = claim_lines(results, table_id, table_tasks)
        paths.append(table_vs_published(cells_by_table[table_id], table["title"], lines,
                                        Path(out_dir) / FIGURE_NAME.format(table_id=table_id), scale))
    return paths
