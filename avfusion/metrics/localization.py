"""Sound source localization: consensus IoU (cIoU), cIoU@0.5 and AUC (EZ-VSL / SLAVC convention).

Convention: stoneMo/EZ-VSL `test.py` + `utils.py::Evaluator`, as the DeepAVFusion paper's first
author evaluates Flickr-SoundNet:
- the predicted map (already at the GT resolution, e.g. bilinear, align_corners=True) is min-max
  normalised (left as is when constant) and binarised at its own median: thr = the value at
  sorted index int(H*W*0.5), positive where map >= thr;
- cIoU = sum(P*G) / (sum(G) + sum(P*[G == 0])) with G the consensus map (0 / 0.5 / 1);
- `ciou_ap50` = fraction of images with cIoU >= 0.5 (EZ-VSL's "cIoU" in tables), `ciou_mean`
  = mean cIoU, `auc` = trapezoid area (as sklearn.metrics.auc) of the success rate
  Pr[cIoU >= t] over t = 0, 0.05, ..., 1 (21 points).
Images whose GT map is empty (no annotated source) are skipped and counted.
"""
from __future__ import annotations

import numpy as np

AUC_THRESHOLDS = np.array([0.05 * i for i in range(21)])  # as EZ-VSL finalize_AUC


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def normalize_map(value: np.ndarray) -> np.ndarray:
    """Min-max normalise to [0, 1]; a constant map is returned unchanged (EZ-VSL normalize_img)."""
    vmin, vmax = value.min(), value.max()
    return (value - vmin) / (vmax - vmin) if vmax - vmin != 0 else value


def median_binarize(pred_map: np.ndarray) -> np.ndarray:
    """(H,W) -> 0/1 map: pixels >= the value at sorted index int(H*W*0.5) (top ~50%)."""
    pred_map = normalize_map(_as_numpy(pred_map))
    thr = np.sort(pred_map.ravel())[int(pred_map.shape[0] * pred_map.shape[1] * 0.5)]
    return (pred_map >= thr).astype(np.float64)


def ciou(pred_map, gt_map) -> float:
    """cIoU of one predicted map (H,W) against a consensus GT map (H,W) in {0, 0.5, 1}."""
    pred_map, gt_map = _as_numpy(pred_map), _as_numpy(gt_map)
    if pred_map.shape != gt_map.shape or pred_map.ndim != 2:
        raise ValueError(f"pred_map and gt_map must both be (H, W); got {pred_map.shape} and {gt_map.shape}")
    if gt_map.sum() == 0:
        raise ValueError("gt_map is empty: cIoU is undefined (skip such images and count them)")
    binary = median_binarize(pred_map)
    return float((binary * gt_map).sum() / (gt_map.sum() + (binary * (gt_map == 0)).sum()))


def success_auc(cious) -> float:
    """AUC of Pr[cIoU >= t] over the 21 thresholds t = 0..1 (trapezoid, sklearn.metrics.auc)."""
    cious = np.asarray(cious, dtype=np.float64)
    success = np.array([(cious >= t).mean() for t in AUC_THRESHOLDS])
    return float(np.sum(np.diff(AUC_THRESHOLDS) * (success[1:] + success[:-1]) / 2))


class LocalizationEvaluator:
    """Accumulates per-image cIoU; `summary()` gives fractions in [0, 1] and counts."""

    def __init__(self):
        self.cious: list[float] = []
        self.n_skipped_empty = 0

    def update(self, pred_maps, gt_maps) -> None:
        """pred_maps, gt_maps (B,H,W)."""
        pred_maps, gt_maps = _as_numpy(pred_maps), _as_numpy(gt_maps)
        if pred_maps.shape != gt_maps.shape or pred_maps.ndim != 3:
            raise ValueError(f"expected pred_maps and gt_maps (B,H,W) of one shape; "
                             f"got {pred_maps.shape} and {gt_maps.shape}")
        for pred_map, gt_map in zip(pred_maps, gt_maps):
            if gt_map.sum() == 0:
                self.n_skipped_empty += 1
                continue
            self.cious.append(ciou(pred_map, gt_map))

    def summary(self) -> dict:
        if not self.cious:
            raise ValueError(f"no image with a GT source to score ({self.n_skipped_empty} empty)")
        cious = np.array(self.cious)
        return {"ciou_ap50": float((cious >= 0.5).mean()), "ciou_mean": float(cious.mean()),
                "auc": success_auc(cious), "n_images": len(cious), "n_skipped_empty": self.n_skipped_empty}
