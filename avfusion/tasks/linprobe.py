"""Linear probe: frozen encoder, BatchNorm1d(affine=False) + Linear heads on pooled features (spec 4.1).

    avfusion linprobe --config avfusion/tasks/examples/linprobe.yaml \
        --set init.checkpoint=runs/pretrain/x --out runs/linprobe/x

- encoder: `model: {preset, ...}` built by `avfusion.models.registry.build_encoder`; `init.checkpoint`
  (run folder or file) loads `encoder.*` strictly; '' keeps the random init (a baseline row).
- heads: any subset of [image, audio, fusion]; prediction = mean of the heads' logits ("all");
  CE (single-label) or BCE-with-logits (multi-label) on the averaged logits, as the official code.
- recipe `code` (default): LARS, blr 0.3, wd 0, warmup 10 / 60 epochs (configs/linprobe.yaml);
  recipe `paper`: Adam, lr 1e-4, batch 128, 50 epochs (Appendix A.1; schedule unstated, cosine kept).
- `feature_cache: true` (default): the frozen encoder runs once per clip with the deterministic eval
  transforms and the heads train on the cached pooled features (BN + Linear see exactly what they
  would see from the frozen encoder; the official code instead re-augments every epoch).
  `feature_cache: false` runs encoder + heads every step on train-time augmented clips.
- metrics.json: acc_all, acc_image, acc_audio, acc_fusion (or map_*/auc_* for multi-label) on `data.eval_split`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from ..engine import OptimConfig, train
from ..metrics.classification import chance_accuracy, head_metrics
from ..models.classifier import HEAD_NAMES, AVClassifier, ClassifierHeads, check_heads
from ..models.registry import build_encoder
from .common import (ClassificationDataConfig, JobConfig, add_job_arguments, clip_dataset,
                     job_main, predict, start_job, write_job_metrics)

RECIPES = {
    "code": {"optim": {"optimizer": "lars", "blr": 0.3, "weight_decay": 0.0, "momentum": 0.9,
                       "epochs": 60, "warmup_epochs": 10, "batch_size": 256}},
    "paper": {"optim": {"optimizer": "adam", "lr": 1e-4, "betas": [0.9, 0.999], "weight_decay": 0.0,
                        "epochs": 50, "warmup_epochs": 0, "batch_size": 128}},
}


@dataclass
class Config(JobConfig):
    recipe: str = "code"
    data: ClassificationDataConfig = field(default_factory=ClassificationDataConfig)
    heads: list[str] = field(default_factory=lambda: list(HEAD_NAMES))
    feature_cache: bool = True
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(optimizer="lars", blr=0.3, weight_decay=0.0))

    def validate(self) -> None:
        check_heads(self.heads)
        super().validate()


class FeatureSet(Dataset):
    """Cached pooled features {head: (N, D)} and labels, served as dicts."""

    def __init__(self, features: dict[str, torch.Tensor], labels: torch.Tensor):
        self.features, self.labels = features, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"features": {h: f[i] for h, f in self.features.items()}, "label": self.labels[i]}


@torch.no_grad()
def pooled_features(encoder, dataset, heads, batch_size: int, device, workers: int = 0):
    """Mean-pooled, un-normalised features of every clip (eval transforms) -> ({head: (N, D)}, labels)."""
    from ..metrics.knn import extract_features

    feats, labels = extract_features(encoder, dataset, batch_size, device, workers, normalize=False,
                                     desc=f"features {dataset.split}")
    missing = [h for h in heads if feats.get(h) is None]
    if missing:
        raise ValueError(f"config key 'heads': the encoder gives no tokens for {missing}; drop them from heads")
    return {h: feats[h] for h in heads}, labels


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if labels.ndim == 2:
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.float())
    return torch.nn.functional.cross_entropy(logits, labels)


def run(cfg: Config, out_dir: Path) -> dict:
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    device = start_job(cfg)
    encoder = build_encoder(cfg.model, cfg.init.checkpoint, cfg.data.image_size, freeze=False).to(device)
    make = lambda splits, is_train: clip_dataset(cfg.data, splits, is_train)  # noqa: E731
    eval_set = make(cfg.data.eval_split, False)
    num_classes = len(eval_set.classes)

    if cfg.feature_cache:
        train_feats, train_labels = pooled_features(encoder, make(cfg.data.train_split, False), cfg.heads,
                                                    cfg.data.eval_batch_size, device, cfg.data.workers)
        eval_feats, eval_labels = pooled_features(encoder, eval_set, cfg.heads, cfg.data.eval_batch_size,
                                                  device, cfg.data.workers)
        _check_labels(train_labels, "train")
        _check_labels(eval_labels, "eval")
        model = ClassifierHeads(encoder.embed_dim, num_classes, cfg.heads, input_norm=True)
        train_set = FeatureSet({h: v.cpu() for h, v in train_feats.items()}, train_labels.cpu())
        loss_fn = lambda net, b: (classification_loss(net(b["features"])["all"], b["label"]), {})  # noqa: E731
        eval_loader = DataLoader(FeatureSet({h: v.cpu() for h, v in eval_feats.items()}, eval_labels.cpu()),
                                 batch_size=cfg.data.eval_batch_size)
        forward = lambda net: (lambda b: net(b["features"]))  # noqa: E731
    else:
        model = AVClassifier(encoder, num_classes, cfg.heads, freeze_encoder=True, input_norm=True)
        train_set = make(cfg.data.train_split, True)
        loss_fn = lambda net, b: (classification_loss(net(b["image"], b["audio"])["all"], b["label"]), {})  # noqa: E731
        eval_loader = DataLoader(eval_set, batch_size=cfg.data.eval_batch_size, num_workers=cfg.data.workers)
        forward = lambda net: (lambda b: net(b["image"], b["audio"]))  # noqa: E731

    result = train(model, loss_fn, train_set, cfg.optim, out_dir, seed=cfg.seed, device=str(device),
                   workers=0 if cfg.feature_cache else cfg.data.workers, job_config=cfg, desc="linprobe")
    net = result.model.eval()
    logits, labels = predict(forward(net), eval_loader, device)
    metrics = head_metrics(logits, labels, cfg.data.multilabel)
    if not cfg.data.multilabel:
        metrics["chance_acc_all"] = chance_accuracy(labels)    # trivial floor: the most frequent class
    metrics.update(loss=result.history[-1]["loss"], n_train=len(train_set), n_eval=len(labels))
    return write_job_metrics(out_dir, cfg, metrics, t0)


def _check_labels(labels: torch.Tensor, which: str) -> None:
    if labels.ndim == 1 and (labels < 0).any():
        raise ValueError(f"linprobe: {(labels < 0).sum().item()} {which} clips have no label")


add_arguments = add_job_arguments


def main(args):
    return job_main(args, Config, run, RECIPES)
