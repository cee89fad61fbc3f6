"""cIoU, cIoU@0.5 and AUC equal hand-computed values (EZ-VSL convention)."""
import numpy as np
import pytest
import torch
from sklearn.metrics import auc as sklearn_auc

from avfusion.metrics.localization import LocalizationEvaluator, ciou, median_binarize, success_auc

PRED = np.arange(16, dtype=np.float64).reshape(4, 4)  # median threshold keeps rows 2-3


def gt_maps():
    gt1 = np.zeros((4, 4)); gt1[2:, :2] = 1; gt1[1, :2] = 0.5  # consensus 1 and 0.5
    gt2 = np.zeros((4, 4)); gt2[2:, :] = 1
    gt3 = np.zeros((4, 4)); gt3[0, :] = 0.5
    gt4 = np.zeros((4, 4))  # no annotated source
    return np.stack([gt1, gt2, gt3, gt4])


def test_median_threshold_keeps_top_half_and_ties():
    assert median_binarize(PRED).sum() == 8 and median_binarize(PRED)[2:].all()
    assert median_binarize(np.full((4, 4), 3.0)).sum() == 16  # constant map: every pixel ties


def test_ciou_with_consensus_weights():
    gt = gt_maps()
    # 4 hits of weight 1; sum(G) = 4 + 2*0.5; 4 predicted pixels where G == 0
    assert ciou(PRED, gt[0]) == pytest.approx(4 / (5 + 4))
    assert ciou(PRED * 3 + 7, gt[0]) == pytest.approx(4 / 9)  # min-max normalised first
    assert ciou(PRED, gt[1]) == pytest.approx(1.0)
    assert ciou(PRED, gt[2]) == 0.0
    assert ciou(np.full((4, 4), 3.0), gt[0]) == pytest.approx(5 / (5 + 10))
    with pytest.raises(ValueError, match="empty"):
        ciou(PRED, gt[3])


def test_evaluator_ap50_mean_auc_and_empty_skip():
    ev = LocalizationEvaluator()
    ev.update(torch.from_numpy(np.stack([PRED] * 4)), torch.from_numpy(gt_maps()))
    out = ev.summary()
    assert out["n_images"] == 3 and out["n_skipped_empty"] == 1
    assert out["ciou_ap50"] == pytest.approx(1 / 3)
    assert out["ciou_mean"] == pytest.approx((4 / 9 + 1 + 0) / 3)
    # success rate: 1 at t=0, 2/3 for t=0.05..0.40, 1/3 for t=0.45..1.0
    expected_auc = 0.05 * ((1 + 2 / 3) / 2 + 7 * 2 / 3 + (2 / 3 + 1 / 3) / 2 + 11 / 3)
    assert out["auc"] == pytest.approx(expected_auc)


def test_auc_equals_sklearn():
    cious = np.random.default_rng(0).uniform(size=50)
    thr = [0.05 * i for i in range(21)]
    rate = [np.sum(cious >= t) / len(cious) for t in thr]
    assert success_auc(cious) == pytest.approx(sklearn_auc(thr, rate), abs=1e-12)
