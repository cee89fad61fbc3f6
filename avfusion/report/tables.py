"""Tables 1-7: published numbers beside ours, from tables.yaml and the runs' metrics.json.

    cfg = load_tables_config("workflow/config/tables.yaml")
    ctx = scale_context(cfg, "tiny")                        # task_datasets + variant kinds of the scale
    cells = build_table(cfg, "table4", Path("results/runs/tiny"), ctx, load_published())
    write_table(cells, cfg["tables"]["table4"], Path("results"), "table4")   # table4.csv, table4.md

A cell's run is <runs>/<task>/<variant>[@<dataset>]/metrics.json ("@<dataset>" only when the
dataset is not the task's default at this scale), one per seed under .../seed<k>/ when the scale
runs several seeds (ScaleContext.seeds); the cell is then the mean over seeds, with std and n.
A missing run or metric is reported as such (empty `ours`, a status), never as zero.

Floor rows (`floor: true` in tables.yaml) put a task's trivial predictor in the table: `columns`
limits them to some columns, `metrics` reads another key of the same run (e.g. `sdr_mix`, the
mixture as estimate), so a floor needs no job of its own.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..config import ConfigError
from ..io import atomic_write_csv, atomic_write_text
from ..runs import RUN_TASKS, SCHEMAS, scale_seeds, seed_folder, task_datasets_key, variant_folder, variant_kinds
from .published import Published

CSV_FIELDS = ["row", "column", "published", "ours", "std", "n", "delta", "seeds", "values", "scale", "dataset",
              "run", "variant", "task", "metric", "status"]
TASKS = RUN_TASKS


@dataclass
class ScaleContext:
    """What the run folder of a cell depends on besides tables.yaml."""
    scale: str
    task_datasets: dict[str, list[str]] = field(default_factory=dict)   # task -> datasets, first = default
    kinds: dict[str, str] = field(default_factory=dict)                 # variant -> experiments.yaml kind
    seeds: list[int] = field(default_factory=lambda: [0])               # > 1 seed: runs under .../seed<k>/


def validate_tables_schema(cfg: dict, path: Path) -> None:
    """workflow/schemas/tables.schema.yaml (as the Snakefile validates the other configs); the error
    names the file and the dotted key."""
    import jsonschema

    schema = yaml.safe_load((SCHEMAS / "tables.schema.yaml").read_text())
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(cfg))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        raise ConfigError(f"{path}: {where}: {error.message}")


def load_tables_config(path: str | Path) -> dict:
    """Read and check tables.yaml; errors name the file and the dotted key."""
    path = Path(path)
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    validate_tables_schema(cfg, path)
    for table_id, table in cfg["tables"].items():
        where = f"{path}: tables.{table_id}"
        for key in ("title", "columns", "rows"):
            if key not in table:
                raise ConfigError(f"{where}: missing '{key}'")
        for col_id, col in table["columns"].items():
            if col.get("task") not in TASKS:
                raise ConfigError(f"{where}.columns.{col_id}.task: {col.get('task')!r} is not one of {list(TASKS)}")
            if "metric" not in col:
                raise ConfigError(f"{where}.columns.{col_id}: missing 'metric'")
            if col.get("dataset") is not None and col["dataset"] not in cfg["datasets"]:
                raise ConfigError(f"{where}.columns.{col_id}.dataset: {col['dataset']!r} is not in datasets "
                                  f"({sorted(cfg['datasets'])})")
        for i, row in enumerate(table["rows"]):
            if "variant" not in row or ("published" not in row):
                raise ConfigError(f"{where}.rows[{i}]: needs 'published' (an id or null) and 'variant' (a name or null)")
            if row["published"] is None and "label" not in row:
                raise ConfigError(f"{where}.rows[{i}]: a row without a published id needs a 'label'")
            for key in ("columns", *row.get("metrics", {})):
                for col_id in (row.get(key, []) if key == "columns" else [key]):
                    if col_id not in table["columns"]:
                        raise ConfigError(f"{where}.rows[{i}]: column {col_id!r} is not a column of the table "
                                          f"({list(table['columns'])})")
    cfg["_path"] = str(path)
    return cfg


def scale_context(cfg: dict, scale: str, config_dir: str | Path | None = None,
                  task_datasets: dict | None = None, seeds: list[int] | None = None) -> ScaleContext:
    """task_datasets and seeds (unless given) from <config_dir>/scales/<scale>.yaml, kinds from
    <config_dir>/experiments.yaml (config_dir defaults to the folder of tables.yaml)."""
    config_dir = Path(config_dir or Path(cfg["_path"]).parent)
    scale_file = config_dir / "scales" / f"{scale}.yaml"
    if task_datasets is None or seeds is None:
        try:
            scale_cfg = yaml.safe_load(scale_file.read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"{scale_file}: no scale config for scale {scale!r} (needed for task_datasets)") from None
        task_datasets = scale_cfg.get("task_datasets", {}) if task_datasets is None else task_datasets
        seeds = scale_seeds(scale_cfg) if seeds is None else seeds
    experiments = config_dir / "experiments.yaml"
    kinds = variant_kinds(experiments) if experiments.exists() else {}
    return ScaleContext(scale, task_datasets, kinds, list(seeds))


def column_dataset(cfg: dict, col: dict, scale: str) -> str | None:
    """The dataset a column is measured on at this scale ('' when the scale has none for it)."""
    if col.get("dataset") is None:
        return None
    return cfg["datasets"][col["dataset"]].get(scale, "")


def run_path(runs: Path, task: str, variant: str, dataset: str | None, ctx: ScaleContext) -> Path:
    """<runs>/<task>/<variant>[@<dataset>]/metrics.json; the default dataset of the task gets no suffix."""
    key = task_datasets_key(task, ctx.kinds.get(variant, ""))
    datasets = ctx.task_datasets.get(key) or ctx.task_datasets.get(task) or []
    return runs / task / variant_folder(variant, dataset, datasets[0] if datasets else None) / "metrics.json"


def seed_runs(path: Path, ctx: ScaleContext) -> list[tuple[int, Path]]:
    """(seed, metrics.json) of each seed of a run: <folder>/seed<k>/metrics.json with several seeds,
    else the folder's own metrics.json."""
    seeds = ctx.seeds or [0]
    return [(seed, Path(f"{path.parent}{seed_folder(seed, seeds)}") / path.name) for seed in seeds]


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof 1; None for fewer than 2 values)."""
    if not values:
        return None, None
    mean = math.fsum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _dataset_text(cfg: dict, col: dict, scale: str) -> str:
    if col.get("dataset") is None:
        return "(no dataset)"
    here, paper = column_dataset(cfg, col, scale), cfg["datasets"][col["dataset"]].get("paper", "")
    return here if scale == "paper" or here == paper else f"{here} (paper: {paper})"


def row_label(row: dict, table: dict, published: Published) -> str:
    label = row.get("label") or published.row_label(*row["published"].split(".", 1))
    group = row.get("group")
    return f"({group}) {label}" if group else label


def column_label(col_id: str, col: dict, table: dict, published: Published) -> str:
    if col.get("label"):
        return col["label"]
    for row in table["rows"]:
        if row["published"]:
            return published.column_label(row["published"].split(".")[0], col_id)
    return col_id


def read_metrics(path: Path) -> dict:
    """The flat metrics of a metrics.json; a clear error for a malformed file."""
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid JSON: {err}") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("metrics"), dict):
        raise ValueError(f"{path}: expected {{'metrics': {{...}}, 'provenance': ...}}")
    return payload["metrics"]


def build_table(cfg: dict, table_id: str, runs: Path, ctx: ScaleContext, published: Published) -> list[dict]:
    """One dict per (row, column) cell with the CSV_FIELDS keys (+ 'published_id', 'row_index')."""
    table = cfg["tables"][table_id]
    cache: dict[Path, dict | None] = {}
    cells = []
    for r, row in enumerate(table["rows"]):
        for col_id, col in table["columns"].items():
            pub_id = f"{row['published']}.{col_id}" if row["published"] else None
            pub_value = published.value(pub_id) if pub_id and pub_id in published else None
            metric = row.get("metrics", {}).get(col_id, col["metric"])
            cell = dict(row=row_label(row, table, published), column=column_label(col_id, col, table, published),
                        published=pub_value, ours=None, std=None, n=0, delta=None, seeds=[], values=[],
                        scale=ctx.scale, dataset=_dataset_text(cfg, col, ctx.scale), run="",
                        variant=row["variant"] or "", task=col["task"], metric=metric, status="",
                        published_id=pub_id or "", row_index=r, column_id=col_id, group=row.get("group", ""),
                        x=row.get("x"), floor=bool(row.get("floor")))
            dataset = column_dataset(cfg, col, ctx.scale)
            if row["variant"] is None:
                cell["status"] = row.get("note", "quoted only")
            elif "columns" in row and col_id not in row["columns"]:
                cell["status"] = "n/a"
            elif dataset == "":
                cell["status"] = f"no {col['dataset']} dataset at scale {ctx.scale}"
            else:
                path = run_path(runs, col["task"], row["variant"], dataset, ctx)
                cell["run"] = str(path) if len(ctx.seeds) <= 1 else str(path.parent / "seed{k}" / path.name)
                present, missing_runs, missing_metric = [], [], []
                for seed, seed_path in seed_runs(path, ctx):
                    if seed_path not in cache:
                        cache[seed_path] = read_metrics(seed_path) if seed_path.exists() else None
                    metrics = cache[seed_path]
                    if metrics is None:
                        missing_runs.append(seed)
                    elif metric not in metrics or metrics[metric] is None:
                        missing_metric.append(seed)
                    else:
                        present.append((seed, float(metrics[metric])))
                cell["seeds"] = [s for s, _ in present]
                cell["values"] = [v for _, v in present]
                cell["n"] = len(present)
                cell["ours"], cell["std"] = mean_std(cell["values"])
                if not present and missing_runs and not missing_metric:
                    cell["status"] = ("not run (give released_checkpoints; target `released`)"
                                      if ctx.kinds.get(row["variant"]) == "released" else "missing run")
                elif not present:
                    cell["status"] = f"missing metric {metric}"
                elif missing_runs or missing_metric:
                    cell["status"] = "; ".join(
                        ([f"missing run seed {', '.join(map(str, missing_runs))}"] if missing_runs else [])
                        + ([f"missing metric {metric} seed {', '.join(map(str, missing_metric))}"] if missing_metric else []))
                else:
                    cell["status"] = "ok"
                if cell["ours"] is not None and isinstance(pub_value, (int, float)) and not isinstance(pub_value, bool):
                    cell["delta"] = cell["ours"] - pub_value
            cells.append(cell)
    return cells


def required_runs(cfg: dict, table_id: str, runs: Path, ctx: ScaleContext) -> list[str]:
    """The metrics.json paths a table's cells read (what its Snakemake rule needs), every seed's."""
    table = cfg["tables"][table_id]
    paths = []
    for row in table["rows"]:
        if row["variant"] is None:
            continue
        if ctx.kinds.get(row["variant"]) == "released":   # made by the `released` target, on request
            continue
        for col_id, col in table["columns"].items():
            if "columns" in row and col_id not in row["columns"]:
                continue
            dataset = column_dataset(cfg, col, ctx.scale)
            if dataset != "":
                path = run_path(runs, col["task"], row["variant"], dataset, ctx)
                paths += [str(p) for _, p in seed_runs(path, ctx)]
    return sorted(set(paths))


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)


def table_rows_csv(cells: list[dict]) -> list[dict]:
    def value(c, k):
        if k in ("published", "ours", "delta", "std"):
            return _fmt(c[k])
        if k == "n":
            return c["n"] if c["n"] else ""
        if k in ("seeds", "values"):
            return ";".join(_fmt(v) if isinstance(v, float) else str(v) for v in c[k])
        return c[k]

    return [{k: value(c, k) for k in CSV_FIELDS} for c in cells]


def table_markdown(cells: list[dict], table: dict, table_id: str) -> str:
    """A wide view (ours / published per cell) followed by the long list of cells."""
    columns = list(dict.fromkeys(c["column"] for c in cells))
    rows = list(dict.fromkeys(c["row"] for c in cells))
    grid = {(c["row"], c["column"]): c for c in cells}

    def short(c):
        ours = "missing" if c["status"] == "missing run" else ("—" if c["ours"] is None else f"{c['ours']:.2f}")
        if c["ours"] is not None and c["n"] > 1:
            ours += f" ± {c['std']:.2f} (n={c['n']})"
        if c["variant"] == "":
            ours = "quoted"
        if c["status"] == "n/a":
            return "·"
        pub = "—" if c["published"] is None else _fmt(c["published"], 2)
        return f"{ours} / {pub}"

    scale = cells[0]["scale"] if cells else ""
    lines = [f"# {table['title']}", "",
             f"Scale `{scale}`. Each cell: ours / published; ours = mean ± sample std (n = seeds) when "
             "several seeds ran. Rows marked *floor* are trivial predictors (· = not applicable). Datasets at this scale: "
             + "; ".join(f"{col} = {ds}" for col, ds in dict.fromkeys((c['column'], c['dataset']) for c in cells)) + ".", "",
             "| row | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    floors = {c["row"] for c in cells if c.get("floor")}
    for row in rows:
        lines.append(f"| {'*floor*: ' if row in floors else ''}{row} | " + " | ".join(short(grid[(row, col)]) for col in columns) + " |")
    lines += ["", "## Cells", "", "| " + " | ".join(CSV_FIELDS) + " |", "|---" * len(CSV_FIELDS) + "|"]
    for rec in table_rows_csv(cells):
        lines.append("| " + " | ".join(str(rec[k]).replace("|", "\\|") for k in CSV_FIELDS) + " |")
    return "\n".join(lines) + "\n"


def write_table(cells: list[dict], table: dict, out_dir: Path, table_id: str) -> tuple[Path, Path]:
    csv_path = atomic_write_csv(Path(out_dir) / f"{table_id}.csv", table_rows_csv(cells), CSV_FIELDS)
    md_path = atomic_write_text(Path(out_dir) / f"{table_id}.md", table_markdown(cells, table, table_id))
    return csv_path, md_path
