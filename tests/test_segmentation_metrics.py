"""Segmentation metrics equal hand-computed values in both conventions (incl. empty-GT frames)."""

import pytest
import torch

from avfusion.metrics.segmentation import (AVSBenchSegmentationEvaluator,
                                           DeepAVFusionSegmentationEvaluator, class_areas)


def prob_to_logits(prob):
    prob = torch.as_tensor(prob, dtype=torch.float64)
    return torch.log(prob / (1 - prob)).float()


def binary_iou_batch():
    """Frame A: GT fg = 2x2 block, pred fg = 2x3 block over it; frame B: empty GT, 2 false-positive pixels."""
    gt = torch.zeros(2, 4, 4)
    gt[0, :2, :2] = 1
    pred = torch.zeros(2, 4, 4)
    pred[0, :2, :3] = 1
    pred[1, 3, :2] = 1
    logits = (pred * 20 - 10)[:, None]  # (2, 1, 4, 4)
    return logits, gt


def test_binary_miou_deepavfusion_skips_empty_frame_and_includes_background():
    logits, gt = binary_iou_batch()
    ev = DeepAVFusionSegmentationEvaluator(num_classes=1)
    ev.update(logits, gt)
    out = ev.summary()
    # fg IoU 4/6, bg IoU 10/12 on frame A; frame B is background-only and skipped
    assert out["miou"] == pytest.approx((4 / 6 + 10 / 12) / 2, abs=1e-9)
    assert out["miou_nobg"] == pytest.approx(4 / 6, abs=1e-9)
    assert out["n_frames"] == 1 and out["n_skipped_empty"] == 1
    # hard probabilities: best threshold keeps the 6 predicted pixels: P = 2/3, R = 1
    assert out["fscore"] == pytest.approx(1.3 * (2 / 3) / (0.3 * 2 / 3 + 1), abs=1e-6)


def test_binary_miou_avsbench_counts_empty_frame_as_true_negative_fraction():
    logits, gt = binary_iou_batch()
    ev = AVSBenchSegmentationEvaluator(num_classes=1)
    ev.update(logits, gt)
    out = ev.summary()
    assert out["miou"] == pytest.approx((4 / 6 + 14 / 16) / 2, abs=1e-6)
    assert out["n_frames"] == 2
    assert out["fscore"] == pytest.approx(1.3 * (2 / 3) / (0.3 * 2 / 3 + 1), abs=1e-6)


def fscore_batch():
    gt = torch.tensor([[[1., 1, 0, 0]], [[1., 1, 1, 0]], [[0., 0, 0, 0]]])  # (3, 1, 4)
    prob = torch.tensor([[[0.9, 0.21, 0.62, 0.1]], [[0.9, 0.35, 0.3, 0.1]], [[0.7, 0.2, 0.1, 0.9]]])
    return prob_to_logits(prob)[:, None], gt


def f_beta(p, r):
    return 1.3 * p * r / (0.3 * p + r)


def test_binary_fscore_deepavfusion_is_mean_of_per_frame_maxima():
    logits, gt = fscore_batch()
    ev = DeepAVFusionSegmentationEvaluator(num_classes=1)
    ev.update(logits, gt)
    out = ev.summary()
    # frame 1 is best at thr in (0.62, 0.9] (P=1, R=1/2), frame 2 at (0.1, 0.3] (P=R=1)
    assert out["fscore"] == pytest.approx((f_beta(1, 0.5) + 1.0) / 2, abs=1e-6)
    assert out["n_skipped_empty"] == 1


def test_binary_fscore_avsbench_is_max_of_mean_curve():
    logits, gt = fscore_batch()
    ev = AVSBenchSegmentationEvaluator(num_classes=1)
    ev.update(logits, gt)
    out = ev.summary()
    # best common threshold in (0.1, 0.21]: frame 1 P=2/3 R=1, frame 2 P=R=1
    expected = (f_beta(2 / 3, 1) + 1.0) / 2
    assert out["fscore"] == pytest.approx(expected, abs=1e-6)
    assert out["fscore"] < (f_beta(1, 0.5) + 1.0) / 2  # the DeepAVFusion value is never lower


def semantic_batch():
    gt = torch.tensor([[[0, 1, 1], [0, 2, 2]], [[0, 0, 0], [0, 0, 0]]])
    pred = torch.tensor([[[0, 1, 0], [2, 2, 2]], [[0, 0, 0], [0, 0, 1]]])
    logits = torch.nn.functional.one_hot(pred, 4).permute(0, 3, 1, 2).float() * 5  # (2, 4, 2, 3)
    return logits, gt


def test_semantic_deepavfusion_mean_over_seen_classes_of_foreground_frames():
    logits, gt = semantic_batch()
    ev = DeepAVFusionSegmentationEvaluator(num_classes=4)
    ev.update(logits, gt)
    out = ev.summary()
    assert out["miou"] == pytest.approx((1 / 3 + 1 / 2 + 2 / 3) / 3, abs=1e-6)
    assert out["miou_nobg"] == pytest.approx((1 / 2 + 2 / 3) / 2, abs=1e-6)
    assert out["fscore"] == pytest.approx((f_beta(.5, .5) + f_beta(1, .5) + f_beta(2 / 3, 1)) / 3, abs=1e-6)
    assert out["n_skipped_empty"] == 1


def test_semantic_avsbench_counts_every_frame_and_every_class():
    logits, gt = semantic_batch()
    ev = AVSBenchSegmentationEvaluator(num_classes=4)
    ev.update(logits, gt)
    out = ev.summary()
    iou_pc = [(1 / 3 + 5 / 6) / 2, (1 / 2 + 0) / 2, 2 / 3, 0.0]  # class 3 never seen -> 0
    f_pc = [(f_beta(.5, .5) + f_beta(1, 5 / 6)) / 2, (f_beta(1, .5) + 0) / 2, f_beta(2 / 3, 1), 0.0]
    assert out["miou"] == pytest.approx(sum(iou_pc) / 4, abs=1e-6)
    assert out["miou_nobg"] == pytest.approx(sum(iou_pc[:3]) / 3, abs=1e-6)
    assert out["fscore"] == pytest.approx(sum(f_pc) / 4, abs=1e-6)
    assert out["n_frames"] == 2


def test_class_areas_match_bincount():
    gen = torch.Generator().manual_seed(1)
    pred = torch.randint(1, 8, (16, 16), generator=gen)
    target = torch.randint(1, 8, (16, 16), generator=gen)
    inter, area_pred, area_lab = class_areas(pred, target, 7)
    assert torch.equal(area_pred, torch.bincount(pred.flatten() - 1, minlength=7).double())
    assert torch.equal(area_lab, torch.bincount(target.flatten() - 1, minlength=7).double())
    hits = pred[pred == target] - 1
    assert torch.equal(inter, torch.bincount(hits, minlength=7).double())


def test_only_empty_frames_is_an_error_in_deepavfusion_convention():
    ev = DeepAVFusionSegmentationEvaluator(num_classes=1)
    ev.update(torch.zeros(2, 1, 4, 4), torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="background-only"):
        ev.summary()


def test_shape_mismatch_names_both_shapes():
    ev = AVSBenchSegmentationEvaluator(num_classes=1)
    with pytest.raises(ValueError, match=r"\(2, 1, 4, 4\)"):
        ev.update(torch.zeros(2, 1, 4, 4), torch.zeros(2, 5, 5))
