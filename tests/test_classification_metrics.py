"""Classification metrics agree with scikit-learn and with hand-computed values."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from avfusion.metrics.classification import multilabel_map_auc, top1_accuracy


def test_top1_accuracy_counts_argmax_hits():
    logits = torch.tensor([[0.1, 0.9, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 3.0], [1.0, 0.0, 0.0]])
    assert top1_accuracy(logits, torch.tensor([1, 0, 1, 2])) == 50.0
    assert top1_accuracy(logits, [1, 0, 2, 0]) == 100.0


def test_top1_accuracy_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="expected logits"):
        top1_accuracy(torch.zeros(4, 3), torch.zeros(5))


def test_map_and_auc_match_sklearn_on_seen_classes():
    rng = np.random.default_rng(0)
    targets = (rng.random((60, 7)) < 0.3).astype(np.float32)
    targets[:, 6] = 0  # an unseen class is left out
    scores = targets * 0.5 + rng.random((60, 7))
    got = multilabel_map_auc(scores, targets)
    seen = targets.sum(0) > 0
    assert got["n_classes"] == 6
    assert got["map"] == pytest.approx(100 * skm.average_precision_score(targets[:, seen], scores[:, seen], average="macro"))
    assert got["auc"] == pytest.approx(100 * skm.roc_auc_score(targets[:, seen], scores[:, seen], average="macro"))


def test_perfect_ranking_gives_100_and_reversed_gives_auc_0():
    targets = np.array([[1, 0], [0, 1], [1, 0], [0, 1]])
    assert multilabel_map_auc(targets.astype(float), targets) == \
        {"map": 100.0, "auc": 100.0, "n_classes": 2, "n_auc_skipped": 0}
    assert multilabel_map_auc(1.0 - targets, targets)["auc"] == 0.0


def test_class_positive_everywhere_has_no_auc_and_is_counted():
    targets = np.array([[1, 1], [1, 0], [1, 1], [1, 0]])
    got = multilabel_map_auc(np.array([[0.9, 0.8], [0.1, 0.2], [0.5, 0.9], [0.3, 0.1]]), targets)
    assert got["n_auc_skipped"] == 1 and got["auc"] == 100.0 and got["map"] == 100.0


def test_head_metrics_names_keys_per_head():
    from avfusion.metrics.classification import head_metrics

    logits = {"image": torch.tensor([[1.0, 0.0], [1.0, 0.0]]), "all": torch.tensor([[1.0, 0.0], [0.0, 1.0]])}
    assert head_metrics(logits, torch.tensor([0, 1]), multilabel=False) == {"acc_image": 50.0, "acc_all": 100.0}
    multi = head_metrics({"all": torch.tensor([[2.0, -1.0], [-1.0, 2.0]])}, torch.tensor([[1, 0], [0, 1]]), True)
    assert multi == {"map_all": 100.0, "auc_all": 100.0}
