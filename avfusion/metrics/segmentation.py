"""Audio-visual segmentation metrics in the two conventions that published numbers use.

Both evaluators take logits `(B, C, H, W)` (C = 1: binary/S4 with sigmoid; C > 1: semantic/AVSS
with softmax-argmax, class 0 = background) and targets `(B, H, W)` (0/1 float or class ids).
`summary()` returns fractions in [0, 1].

- `DeepAVFusionSegmentationEvaluator` = DeepAVFusion `eval_avsegm.py::AVSegmEvaluator`:
  frames whose GT has no foreground are SKIPPED (counted); per frame, per-class areas via
  `torch.histc` on classes 1..C (pred+1, target+1; binary: C' = 2 = {bg, fg}); IoU_c counted
  where union_c > 0; `miou` = mean over seen classes of sum IoU_c / #frames with c in pred u GT,
  background INCLUDED; `miou_nobg` drops the first seen class (background); binary `fscore` =
  per frame max over 256 thresholds linspace(0, 1-1e-10) of F(beta^2=0.3), then mean over frames;
  semantic `fscore` = per-class hard F averaged like IoU.
- `AVSBenchSegmentationEvaluator` = OpenNLPLab/AVSBench: binary (S4/MS3, `utility.py`): EVERY
  frame counts in mIoU, an empty-GT frame scores TN/all pixels; F = max over 255 thresholds of
  the mean F-curve over non-empty frames (NaN -> 0). AVSBench's `test.py` averages that max per
  test batch; here the curve is pooled over all frames, equal to AVSBench with one test batch.
  Semantic (AVSS, `compute_color_metrics.py`): every frame counts; per-class IoU/F summed over
  frames / #frames with the class in pred u GT; NaN -> 0; mean over ALL classes;
  `miou_nobg` drops the LAST class, as AVSBench's `test.py` does.
"""
from __future__ import annotations

import torch

BETA2 = 0.3


def _binary_fscore_curve(prob: torch.Tensor, gt: torch.Tensor, n_thresholds: int, eps: float,
                         nan_to_zero: bool) -> torch.Tensor:
    """prob, gt (H,W) -> F_beta (n_thresholds,) for thresholds linspace(0, 1-1e-10) on prob >= thr."""
    thresholds = torch.linspace(0, 1 - 1e-10, n_thresholds)  # float32, as both codebases
    above = prob.reshape(1, -1) >= thresholds[:, None]  # (K, H*W)
    fg = gt.reshape(1, -1) > 0
    tp = (above & fg).sum(1).double()
    precision = tp / (above.sum(1).double() + eps)
    recall = tp / (fg.sum().double() + eps)
    if nan_to_zero:  # AVSBench: no eps in the F denominator, NaN -> 0
        f = (1 + BETA2) * precision * recall / (BETA2 * precision + recall)
        return torch.nan_to_num(f, nan=0.0)
    return (1 + BETA2) * precision * recall / (BETA2 * precision + recall + eps)


def class_areas(pred: torch.Tensor, target: torch.Tensor, nclass: int) -> tuple[torch.Tensor, ...]:
    """pred, target (H,W) with classes 1..nclass (0 = ignored) -> inter, pred, label areas (nclass,)."""
    intersection = pred * (pred == target)  # (H, W), 0 where wrong
    area_inter = torch.histc(intersection.float(), bins=nclass, min=1, max=nclass)
    area_pred = torch.histc(pred.float(), bins=nclass, min=1, max=nclass)
    area_lab = torch.histc(target.float(), bins=nclass, min=1, max=nclass)
    return area_inter.double(), area_pred.double(), area_lab.double()


def _hard_prediction(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """logits (B,C,H,W) -> classes 1..C' (B,H,W) and the fg probability (B,H,W) for C = 1."""
    logits = logits.detach().float().cpu()
    if logits.shape[1] == 1:
        prob = torch.sigmoid(logits[:, 0])  # (B, H, W)
        return (prob > 0.5).long() + 1, prob
    return logits.argmax(1) + 1, None


def _check(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.ndim != 4 or target.ndim != 3 or logits.shape[0] != target.shape[0] \
            or logits.shape[2:] != target.shape[1:]:
        raise ValueError(f"expected logits (B,C,H,W) and target (B,H,W) of the same B,H,W; "
                         f"got {tuple(logits.shape)} and {tuple(target.shape)}")


class DeepAVFusionSegmentationEvaluator:
    """DeepAVFusion's AVSegmEvaluator (background-only frames skipped, miou includes background)."""

    def __init__(self, num_classes: int, n_thresholds: int = 256, eps: float = 1e-10):
        self.num_classes, self.n_thresholds, self.eps = num_classes, n_thresholds, eps
        self.nclass = 2 if num_classes == 1 else num_classes
        self.iou_sum = torch.zeros(self.nclass, dtype=torch.float64)
        self.fscore_sum = torch.zeros(self.nclass, dtype=torch.float64)
        self.cls_count = torch.zeros(self.nclass, dtype=torch.float64)
        self.binary_fscores: list[float] = []
        self.n_frames = 0
        self.n_skipped_empty = 0

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        _check(logits, target)
        pred, prob = _hard_prediction(logits)
        target = target.detach().cpu().long() + 1  # (B, H, W) classes 1..C'
        for b in range(target.shape[0]):
            if (target[b] > 1).sum() == 0:  # background-only frame: skipped
                self.n_skipped_empty += 1
                continue
            inter, area_pred, area_lab = class_areas(pred[b], target[b], self.nclass)
            union = area_pred + area_lab - inter
            self.iou_sum += inter / (self.eps + union)
            self.cls_count += (union > 0).double()
            if prob is not None:
                curve = _binary_fscore_curve(prob[b], target[b] - 1, self.n_thresholds, self.eps, False)
                self.binary_fscores.append(float(curve.max()))
            else:
                precision = inter / (self.eps + area_pred)
                recall = inter / (self.eps + area_lab)
                self.fscore_sum += (1 + BETA2) * precision * recall / (BETA2 * precision + recall + self.eps)
            self.n_frames += 1

    def summary(self) -> dict:
        if self.n_frames == 0:
            raise ValueError(f"no frame with foreground to score ({self.n_skipped_empty} background-only)")
        seen = torch.nonzero(self.cls_count).squeeze(1)
        miou_per_cls = self.iou_sum[seen] / self.cls_count[seen]
        if self.num_classes == 1:
            fscore = sum(self.binary_fscores) / len(self.binary_fscores)
        else:
            fscore = float((self.fscore_sum[seen] / self.cls_count[seen]).mean())
        return {"miou": float(miou_per_cls.mean()), "miou_nobg": float(miou_per_cls[1:].mean()),
                "fscore": fscore, "n_frames": self.n_frames, "n_skipped_empty": self.n_skipped_empty}


class AVSBenchSegmentationEvaluator:
    """AVSBench's metrics (every frame in mIoU; empty-GT IoU = TN/all; F = max of mean curve)."""

    def __init__(self, num_classes: int, n_thresholds: int = 255):
        self.num_classes, self.n_thresholds = num_classes, n_thresholds
        self.frame_ious: list[float] = []
        self.fscore_curve_sum = torch.zeros(n_thresholds, dtype=torch.float64)
        self.n_fscore_frames = 0
        self.iou_sum = torch.zeros(num_classes, dtype=torch.float64)
        self.fscore_sum = torch.zeros(num_classes, dtype=torch.float64)
        self.cls_count = torch.zeros(num_classes, dtype=torch.float64)
        self.n_frames = 0

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        _check(logits, target)
        pred, prob = _hard_prediction(logits)
        target = target.detach().cpu()
        self.n_frames += target.shape[0]
        if prob is not None:
            self._update_binary(pred - 1, prob, (target > 0).long())
        else:
            self._update_semantic(pred, target.long() + 1)

    def _update_binary(self, pred: torch.Tensor, prob: torch.Tensor, gt: torch.Tensor) -> None:
        num_pixels = gt.shape[-1] * gt.shape[-2]
        for p, q, g in zip(pred, prob, gt):  # (H, W) each
            if g.sum() == 0:  # empty GT: IoU = true negatives / all pixels (utility.py::mask_iou)
                self.frame_ious.append(float(((1 - g) * (1 - p)).sum()) / (num_pixels + 1e-7))
                continue
            inter, union = float((p * g).sum()), float(torch.maximum(p, g).sum())
            self.frame_ious.append(inter / (union + 1e-7))
            self.fscore_curve_sum += _binary_fscore_curve(q, g, self.n_thresholds, 1e-20, True)
            self.n_fscore_frames += 1

    def _update_semantic(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        pred = pred * (target > 0)  # ignore label -1 (target 0)
        for p, t in zip(pred, target):
            inter, area_pred, area_lab = class_areas(p, t, self.num_classes)
            union = area_pred + area_lab - inter
            self.iou_sum += inter / (2.220446049250313e-16 + union)
            self.cls_count += (union > 0).double()
            precision, recall = inter / area_pred, inter / area_lab
            fscore = (1 + BETA2) * precision * recall / (BETA2 * precision + recall)
            self.fscore_sum += torch.nan_to_num(fscore, nan=0.0)

    def summary(self) -> dict:
        if self.n_frames == 0:
            raise ValueError("no frame to score")
        if self.num_classes == 1:
            fscore = (float((self.fscore_curve_sum / self.n_fscore_frames).max())
                      if self.n_fscore_frames else 0.0)
            return {"miou": sum(self.frame_ious) / len(self.frame_ious), "fscore": fscore,
                    "n_frames": self.n_frames}
        miou_pc = torch.nan_to_num(self.iou_sum / self.cls_count, nan=0.0)
        fscore_pc = torch.nan_to_num(self.fscore_sum / self.cls_count, nan=0.0)
        return {"miou": float(miou_pc.mean()), "miou_nobg": float(miou_pc[:-1].mean()),
                "fscore": float(fscore_pc.mean()), "n_frames": self.n_frames}
