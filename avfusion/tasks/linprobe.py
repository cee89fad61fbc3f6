"""Linear probe: frozen encoder, BatchNorm1d(affine=False) + Linear heads on pooled features (spec 4.1).

    avfusion linprobe --config workflow/config/scales/smoke.yaml --set init.checkpoint=runs/pretrain/x --out DIR

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
from typing import Any, Literal

import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from .. import distributed as dist_utils
from ..engine import OptimConfig, resolve_device, seed_everything, train
from ..metrics.classification import chance_accuracy, head_metrics
from ..models.classifier import HEAD_NAMES, AVClassifier, ClassifierHeads
from .common import add_job_arguments, job_main
from .pretrain import validate_model_section

RECIPES = {
    "code": {"optim": {"optimizer": "lars", "blr": 0.3, "weight_decay": 0.0, "momentum": 0.9,
                       "epochs": 60, "warmup_epochs": 10, "batch_size": 256}},
    "paper": {"optim": {"optimizer": "adam", "lr": 1e-4, "betas": [0.9, 0.999], "weight_decay": 0.0,
                        "epochs": 50, "warmup_epochs": 0, "batch_size": 128}},
}


@dataclass
class DataConfig:
    manifest: str = ""
    train_split: str = "train"     # 'a+b' joins splits
    eval_split: str = "test"
    image_size: int = 224
    eval_batch_size: int = 64
    workers: int = 0
    multilabel: bool = False


@dataclass
class InitConfig:
    checkpoint: str = ""           # pretraining run folder or checkpoint file; '' = random encoder


@dataclass
class Config:
    recipe: str = "code"
    seed: int = 0
    scale: str = "smoke"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    model: dict[str, Any] = field(default_factory=dict)   # {preset: NAME, ...overrides}
    init: InitConfig = field(default_factory=InitConfig)
    data: DataConfig = field(default_factory=DataConfig)
    heads: list[str] = field(default_factory=lambda: list(HEAD_NAMES))
    feature_cache: bool = True
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(optimizer="lars", blr=0.3, weight_decay=0.0))

    def validate(self) -> None:
        from ..config import ConfigError

        bad = [h for h in self.heads if h not in HEAD_NAMES]
        if bad or not self.heads or len(set(self.heads)) != len(self.heads):
            raise ConfigError(f"config key 'heads': {self.heads} must be distinct names from {list(HEAD_NAMES)}")
        validate_model_section(self.model)


def build_encoder_from_config(model: dict, checkpoint: str) -> torch.nn.Module:
    """registry encoder + strict `encoder.*` load from a run folder / file ('' = random init)."""
    from ..models.checkpoint import load_encoder_from_checkpoint
    from ..models.registry import build_encoder
    from .pretrain import resolve_checkpoint_file

    encoder = build_encoder(dict(model))
    if checkpoint:
        load_encoder_from_checkpoint(encoder, str(resolve_checkpoint_file(checkpoint)))
        print(f"init.checkpoint: loaded encoder.* from {checkpoint}")
    return encoder


def clip_dataset(data: DataConfig, splits: str, train: bool):
    """AVClipDataset of one split, or of several joined by '+' ('val+test'), with `.classes`, `.rows`."""
    from ..data.datasets import AVClipDataset

    parts = [AVClipDataset(data.manifest, split, train=train, image_size=data.image_size,
                           multilabel=data.multilabel) for split in splits.split("+")]
    if len(parts) == 1:
        return parts[0]
    merged = ConcatDataset(parts)
    merged.classes, merged.split = parts[0].classes, splits
    merged.rows = [row for part in parts for row in part.rows]
    merged.label_index, merged.label_multihot = parts[0].label_index, parts[0].label_multihot
    return merged


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
    from .knn_probe import extract_features

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


@torch.no_grad()
def predict(forward, loader, device) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Run `forward(batch) -> {head: logits}` over `loader` -> ({head: (N, C)}, labels) on CPU."""
    logits: dict[str, list] = {}
    labels = []
    for batch in loader:
        batch = {k: ({h: t.to(device) for h, t in v.items()} if isinstance(v, dict) else v.to(device))
                 for k, v in batch.items()}
        for head, value in forward(batch).items():
            logits.setdefault(head, []).append(value.float().cpu())
        labels.append(batch["label"].cpu())
    return {h: torch.cat(v) for h, v in logits.items()}, torch.cat(labels)


def run(cfg: Config, out_dir: Path) -> dict:
    from ..provenance import write_metrics

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    dist_utils.init_distributed(device.type)                 # no-op unless WORLD_SIZE > 1
    encoder = build_encoder_from_config(cfg.model, cfg.init.checkpoint).to(device)
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
    if dist_utils.is_main_process():
        write_metrics(out_dir, metrics, cfg=cfg, scale=cfg.scale, seed=cfg.seed,
                      manifest=Path(cfg.data.manifest) / "manifest.csv", wall_s=time.perf_counter() - t0)
    return metrics


def _check_labels(labels: torch.Tensor, which: str) -> None:
    if labels.ndim == 1 and (labels < 0).any():
        raise ValueError(f"linprobe: {(labels < 0).sum().item()} {which} clips have no label")


def add_arguments(parser):
    add_job_arguments(parser)


def main(args):
    return job_main(args, Config, run, RECIPES)
