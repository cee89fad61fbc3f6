"""Classification metrics of the linear probe, fine-tuning and the kNN probe, in percent.

- `top1_accuracy`: timm `accuracy(output, target, topk=(1,))` (official `eval_linprobe.py`).
- `multilabel_map_auc`: official `util/misc.calc_multi_class_stats`: per-class average precision
  and ROC AUC (scikit-learn definitions) over the classes that have at least one positive in the
  evaluation set, averaged, x100. A seen class that is positive in every sample has no AUC
  (sklearn raises); it is left out of the AUC mean and counted in `n_auc_skipped`.
"""
from __future__ import annotations

import numpy as np
import torch


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def top1_accuracy(logits, labels) -> float:
    """Top-1 accuracy (%) of `logits (N, C)` against integer `labels (N,)`; ties go to the lower class."""
    logits, labels = _numpy(logits), _numpy(labels)
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"top1_accuracy: expected logits (N, C) and labels (N,), got {logits.shape} and {labels.shape}")
    if len(labels) == 0:
        raise ValueError("top1_accuracy: no samples")
    return float(np.mean(logits.argmax(axis=1) == labels) * 100.0)


def multilabel_map_auc(scores, targets) -> dict:
    """{'map', 'auc'} in % over classes seen in `targets (N, C)` (multi-hot), plus counts."""
    from sklearn import metrics as skm  # imported here: the Snakefile imports task modules to check configs

    scores, targets = _numpy(scores).astype(np.float64), _numpy(targets)
    if scores.shape != targets.shape or scores.ndim != 2:
        raise ValueError(f"multilabel_map_auc: scores {scores.shape} and targets {targets.shape} must both be (N, C)")
    targets = (targets > 0.5).astype(np.int64)
    seen = np.flatnonzero(targets.sum(0) > 0)
    if len(seen) == 0:
        raise ValueError("multilabel_map_auc: no class has a positive sample")
    aps, aucs = [], []
    for c in seen:
        aps.append(skm.average_precision_score(targets[:, c], scores[:, c]))
        if targets[:, c].min() == 0:
            aucs.append(skm.roc_auc_score(targets[:, c], scores[:, c]))
    return {"map": float(np.mean(aps) * 100.0),
            "auc": float(np.mean(aucs) * 100.0) if aucs else float("nan"),
            "n_classes": int(len(seen)), "n_auc_skipped": int(len(seen) - len(aucs))}


def chance_accuracy(labels) -> float:
    """Top-1 accuracy (%) of the best constant prediction on these labels (the most frequent class):
    the trivial floor of a single-label classifier (100 / C for balanced classes)."""
    labels = torch.as_tensor(labels).long().flatten()
    if labels.numel() == 0:
        raise ValueError("chance_accuracy: no labels")
    return 100.0 * float(torch.bincount(labels).max()) / labels.numel()


def head_metrics(logits: dict, labels, multilabel: bool) -> dict:
    """{head: logits (N, C)} -> flat task metrics: acc_<head> (single-label) or map_<head>, auc_<head>."""
    out = {}
    for head, head_logits in logits.items():
        if multilabel:
            probs = torch.as_tensor(head_logits).float().sigmoid()
            stats = multilabel_map_auc(probs, labels)
            out[f"map_{head}"], out[f"auc_{head}"] = stats["map"], stats["auc"]
        else:
            out[f"acc_{head}"] = top1_accuracy(head_logits, labels)
    return out
