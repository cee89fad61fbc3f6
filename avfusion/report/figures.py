"""Figures of the report (matplotlib Agg, PNG).

    figure3(runs / "pretrain/deepavfusion/knn.csv", out / "figure3.png")      # kNN accuracy vs step
    efficiency_bars(cells_of_table5, out / "figures/table5_efficiency.png")   # speed / memory, ours and paper
    ablation_curves(cells_of_table6, groups, out / "figures/table6_curves.png")
    example_figures(runs, out / "figures")   # separation / segmentation / localization examples.npz, if written
    claims_effects(statistical_rows(results), out / "figures/claims_effects.png")   # ours with 95 % CI vs published
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..io import _atomic_write_bytes  # noqa: E402
from ..runs import seed_folder  # noqa: E402

KNN_COLUMNS = ("acc_audio", "acc_image", "acc_fusion", "acc_all")


def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return _atomic_write_bytes(path, buf.getvalue())


def read_knn_csv(path: Path) -> dict[str, np.ndarray]:
    """knn.csv (epoch,step,acc_audio,acc_image,acc_fusion,acc_all) -> columns as float arrays."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    needed = ("step",) + KNN_COLUMNS
    if not rows:
        raise ValueError(f"{path}: no rows")
    missing = [c for c in needed if c not in rows[0]]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; expected epoch,step,{','.join(KNN_COLUMNS)}")
    return {c: np.array([float(r[c]) for r in rows]) for c in needed}


def figure3(knn_csv: Path, out: Path, title: str = "", readme_curve: dict | None = None) -> Path:
    """Nearest-neighbour accuracy of audio, image, fusion (and all) features over training steps."""
    data = read_knn_csv(knn_csv)
    order = np.argsort(data["step"], kind="stable")
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    for col, style in zip(KNN_COLUMNS, ("-o", "-s", "-^", "--")):
        ax.plot(data["step"][order], data[col][order], style, label=col.replace("acc_", "").capitalize(), ms=4)
    ax.set_xlabel("training step")
    ax.set_ylabel("1-NN accuracy (%)")
    ax.set_title(title or "kNN accuracy vs training step", fontsize=9)
    if readme_curve:
        ax.text(0.02, 0.98, "official README curve at ~62.5k steps (approx.):\n"
                + ", ".join(f"{k} {v:g}%" for k, v in readme_curve.items()),
                transform=ax.transAxes, va="top", fontsize=7, color="gray")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, out)


def efficiency_bars(cells: list[dict], out: Path, columns: list[str]) -> Path:
    """Bars of the efficiency columns (published on the paper's GPU beside ours at this scale)."""
    rows = list(dict.fromkeys(c["row"] for c in cells))
    names = {c["row"]: f"{c['row']}\n[{c['variant'] or 'quoted'}]" for c in cells}
    labels = {c["column_id"]: c["column"] for c in cells}
    fig, axes = plt.subplots(len(columns), 2, figsize=(10, 3.6 * len(columns)), squeeze=False, layout="constrained")
    scale = cells[0]["scale"] if cells else ""
    for i, col in enumerate(columns):
        for j, (key, who) in enumerate((("published", "paper (ViT-B, GPU)"), ("ours", f"ours ({scale})"))):
            ax = axes[i][j]
            values = [next((c[key] for c in cells if c["row"] == r and c["column_id"] == col), None) for r in rows]
            heights = [v if v is not None else 0.0 for v in values]
            bars = ax.bar(range(len(rows)), heights, color=["#999" if v is None else "C%d" % j for v in values])
            for b, v in zip(bars, values):
                ax.annotate("missing" if v is None else f"{v:.3g}", (b.get_x() + b.get_width() / 2, b.get_height()),
                            ha="center", va="bottom", fontsize=7)
            ax.set_xticks(range(len(rows)), [names[r] for r in rows], fontsize=7)
            ax.set_title(f"{labels.get(col, col)}: {who}", fontsize=9)
    return _save(fig, out)


def ablation_curves(cells: list[dict], groups: dict[str, str], out: Path) -> Path:
    """Metric vs # fusion layers / tokens / aggregation tokens: ours and published, one panel per (group, metric)."""
    columns = list(dict.fromkeys(c["column_id"] for c in cells))
    labels = {c["column_id"]: c["column"] for c in cells}
    fig, axes = plt.subplots(len(groups), len(columns), figsize=(4.5 * len(columns), 3.2 * len(groups)),
                             squeeze=False, layout="constrained")
    for i, (group, group_title) in enumerate(groups.items()):
        for j, col in enumerate(columns):
            ax = axes[i][j]
            part = sorted((c for c in cells if c["group"] == group and c["column_id"] == col), key=lambda c: c["x"])
            ours_ax = ax.twinx()  # ours on its own (right) axis: the scales differ from the paper's
            for axis, key, style, color, name in ((ax, "published", "o--", "C0", "paper (left axis)"),
                                                  (ours_ax, "ours", "s-", "C1", "ours (right axis)")):
                points = [(c["x"], c[key]) for c in part if c[key] is not None]
                if points:
                    axis.plot(*zip(*points), style, color=color, label=name, ms=4)
                axis.tick_params(axis="y", labelcolor=color, labelsize=7)
            if not any(c["ours"] is not None for c in part):
                ax.text(0.5, 0.5, "ours: no runs", transform=ax.transAxes, ha="center", color="gray")
            ax.set_xlabel(group_title, fontsize=8)
            ax.set_title(f"({group}) {labels.get(col, col)}", fontsize=9)
            handles = ax.get_legend_handles_labels()[0] + ours_ax.get_legend_handles_labels()[0]
            ax.legend(handles=handles, fontsize=7)
            ax.grid(alpha=0.3)
    return _save(fig, out)


def _image_hwc(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
        image = image.transpose(1, 2, 0)  # (3,S,S) -> (S,S,3)
    if image.max() > 1.5:
        image = image / 255.0
    return np.clip(image, 0, 1)


def _foreground(pred: np.ndarray) -> np.ndarray:
    """(S,S) probability, (1,S,S) binary, or (C,S,S) class scores -> (S,S) map (1 - background for C > 1)."""
    pred = np.asarray(pred, dtype=np.float32)
    if pred.ndim == 3:
        return pred[0] if pred.shape[0] == 1 else 1.0 - pred[0]
    return pred


def separation_examples(npz: Path, out: Path, n: int = 2) -> Path:
    data = np.load(npz)
    mix, sources, masks = data["mix_audio"], data["source_audio"], data["pred_mask"]  # (N,F,T), (N,2,F,T), (N,2,F,T)
    n = min(n, len(mix))
    fig, axes = plt.subplots(n, 5, figsize=(15, 2.6 * n), squeeze=False, layout="constrained")
    for i in range(n):
        panels = [(mix[i], "mixture log-mel", None)] + [(sources[i, s], f"source {s + 1}", None) for s in range(2)] \
            + [(masks[i, s], f"predicted mask {s + 1} (0-1)", (0.0, 1.0)) for s in range(2)]
        for ax, (img, name, limits) in zip(axes[i], panels):
            vmin, vmax = limits or (None, None)
            ax.imshow(img, origin="lower", aspect="auto", cmap="magma", vmin=vmin, vmax=vmax)
            ax.set_title(name, fontsize=8)
            ax.axis("off")
    return _save(fig, out)


def overlay_examples(npz: Path, out: Path, target_key: str, n: int = 4) -> Path:
    """Image, ground truth and prediction overlays (segmentation: 'mask'; localization: 'gt_map')."""
    data = np.load(npz)
    images, targets, preds = data["image"], data[target_key], data["pred"]
    n = min(n, len(images))
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.5 * n), squeeze=False, layout="constrained")
    for i in range(n):
        image = _image_hwc(images[i])
        axes[i][0].imshow(image)
        axes[i][1].imshow(image)
        axes[i][1].imshow(_foreground(targets[i]) if targets[i].ndim == 3 else targets[i], alpha=0.5, cmap="viridis")
        pred = _foreground(preds[i])
        limits = (0.0, 1.0) if pred.min() >= 0 and pred.max() <= 1 else (None, None)  # probabilities on a fixed scale
        axes[i][2].imshow(image)
        axes[i][2].imshow(pred, alpha=0.5, cmap="jet", vmin=limits[0], vmax=limits[1])
        for ax, name in zip(axes[i], ("image", "ground truth", "prediction")):
            ax.set_title(name, fontsize=8)
            ax.axis("off")
    return _save(fig, out)


def note_figure(out: Path, text: str) -> Path:
    """A PNG that says why a figure could not be drawn (so the report shows the gap, not nothing)."""
    fig, ax = plt.subplots(figsize=(6, 1.6), layout="constrained")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=9, wrap=True)
    ax.axis("off")
    return _save(fig, out)


EXAMPLE_TASKS = ("separation", "segmentation", "localization")


def example_figures(runs: Path, out_dir: Path, variant: str = "deepavfusion",
                    seeds: list[int] = (0,)) -> tuple[list[Path], list[str]]:
    """<out_dir>/<task>_examples.png from each task's examples.npz (the first seed's run folder,
    `avfusion.runs.seed_folder`); a note figure where there is none."""
    variant = f"{variant}{seed_folder(seeds[0], list(seeds))}"
    written, notes = [], []
    draw = {"separation": lambda p, o: separation_examples(p, o),
            "segmentation": lambda p, o: overlay_examples(p, o, "mask"),
            "localization": lambda p, o: overlay_examples(p, o, "gt_map")}
    for task in EXAMPLE_TASKS:
        npz, out = runs / task / variant / "examples.npz", out_dir / f"{task}_examples.png"
        try:
            if not npz.exists():
                raise FileNotFoundError(f"{npz} does not exist")
            written.append(draw[task](npz, out))
        except (FileNotFoundError, KeyError, ValueError, IndexError) as err:
            notes.append(f"{task} examples skipped: {err}")
            written.append(note_figure(out, f"{task} examples of {variant}: skipped\n{err}"))
    return written, notes


VERDICT_COLOURS = {"holds": "tab:green", "fails": "tab:red", "inconclusive": "tab:gray"}


def claims_effects(rows: list[dict], out: Path, scale: str = "") -> Path:
    """Forest plot: one line per (claim, column, pair) of ours: our effect (difference of means over
    seeds) with its 95 % interval, coloured by verdict, and the published effect (x). Each line is in
    its own metric's units, so it is scaled by max(|published|, |our interval|) of that line; the
    numbers are in claims.md."""
    rows = [r for r in rows if r.get("effect") is not None]
    if not rows:
        return note_figure(out, "claims: no measured effects (runs missing)")
    height = max(2.5, 0.22 * len(rows) + 1.2)
    fig, ax = plt.subplots(figsize=(8, height), layout="constrained")
    labels = []
    for i, r in enumerate(rows):
        y = len(rows) - 1 - i
        sign = -1.0 if r.get("op", ">") in ("<", "<=") else 1.0     # claimed direction to the right
        pub = r.get("published_effect")
        pts = {k: sign * (v - r["margin"]) for k, v in (("e", r["effect"]), ("lo", r["low"]), ("hi", r["high"]),
                                                          ("pub", pub)) if v is not None}
        scale_ = max([abs(v) for v in pts.values()] + [1e-9])
        colour = VERDICT_COLOURS.get(r["verdict"], "tab:orange")
        if "lo" in pts:
            ax.plot([pts["lo"] / scale_, pts["hi"] / scale_], [y, y], "-", color=colour, lw=2)
        ax.plot([pts["e"] / scale_], [y], "o", color=colour, ms=4)
        if "pub" in pts:
            ax.plot([pts["pub"] / scale_], [y], "x", color="black", ms=5)
        labels.append(f"{r['claim']} {r['column']}: {r['pair']}"[:70])
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(labels[::-1], fontsize=6)
    ax.set_xlim(-1.1, 1.1)
    ax.set_xlabel("effect minus the claimed margin, scaled per line (dot + bar: ours, mean and 95 % CI; x: published)",
                  fontsize=7)
    handles = [plt.Line2D([], [], color=c, lw=2, label=v) for v, c in VERDICT_COLOURS.items()]
    handles.append(plt.Line2D([], [], color="black", marker="x", ls="", label="published"))
    ax.legend(handles=handles, fontsize=7, loc="lower right")
    ax.set_title(f"Claims of ours{f' (scale {scale})' if scale else ''}: effect > 0 is the claimed direction",
                 fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, out)
